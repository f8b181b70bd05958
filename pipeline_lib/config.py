"""Typed, layered, validated configuration.

Layers, lowest first:

1. ``conf/base.yaml``, ``conf/quality.yaml`` (the quality rules) and ``conf/campaigns.yaml`` (the
   marketing campaigns), the last two kept apart for reading;
2. ``conf/<env>.yaml`` (``local`` by default, or ``cluster``, or your own);
3. environment variables, each a name a shell can ``export``:

   - ``ECOM_LANDING`` and ``ECOM_LAKE`` for the two roots;
   - ``ECOM__<SECTION>__<KEY>=value`` for one key, the value parsed as YAML, e.g.
     ``ECOM__PIPELINE__BASE_CURRENCY=USD``;
   - ``ECOM__<SECTION>=<YAML mapping>`` (or ``ECOM__<SECTION>__<KEY>=<YAML mapping>`` for a key
     that holds a mapping), merged into it key by key with the keys written as in the files:
     the way to set a key a variable's name cannot hold, such as Spark's dotted, camel-case
     ones: ``ECOM__SPARK__CONF='{spark.sql.shuffle.partitions: 4}'``;
   - the older dotted form ``ECOM__SPARK__CONF__SPARK.SQL.SHUFFLE.PARTITIONS=4`` still works
     where something puts it in the environment (``env``, ``docker run -e``), though a shell
     cannot ``export`` it.

   A more specific variable wins over a less specific one, whatever the environment's order;
4. command-line flags (``--landing``, ``--lake``, ``--set section.key=value``).

Every key is checked on load by the pydantic dataclasses below (types, ranges, enumerations,
time zones, currency codes): an unknown key or a bad value raises :class:`ConfigError` naming
the dotted key and the layer (file, variable or flag) it came from. The layering itself is
ours, because the errors need to know which layer set each key.
Jobs receive the frozen :class:`PipelineConfig`; transformations receive plain values.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

ENV_PREFIX = "ECOM__"
ROOT_ENV_VARS = {
    "ECOM_LANDING": ("paths", "landing"),
    "ECOM_LAKE": ("paths", "lake"),
    "ECOM_PUBLISH_DB": ("publish", "url"),
}
# postgresql://user@host:port/db: orders, order_items and customers are read from it (jdbc).
SOURCE_DB_ENV = "ECOM_SOURCE_DB"
PUBLISH_DB_ENV = "ECOM_PUBLISH_DB"
# The sources that may be read from the shop's database instead of landing files.
DATABASE_SOURCES = ("orders", "order_items", "customers")
SourceKind = Literal["files", "jdbc"]
# host:port[,host:port]: bronze.clicks reads the Kafka topic sources.clicks.topic (docs/kafka.md).
CLICKS_KAFKA_ENV = "ECOM_CLICKS_KAFKA"
ClicksKind = Literal["files", "kafka"]
KafkaStartingOffsets = Literal["earliest", "latest"]
RuleKind = Literal["row", "unique", "reference", "time_window"]
RuleAction = Literal["flag", "quarantine", "fail"]
SparkLogLevel = Literal["ALL", "DEBUG", "ERROR", "FATAL", "INFO", "OFF", "TRACE", "WARN"]
CampaignChannel = Literal["email", "sms", "ads"]
ROW_RULE_KINDS: tuple[str, ...] = get_args(RuleKind)
RULE_ACTIONS: tuple[str, ...] = get_args(RuleAction)
CAMPAIGN_CHANNELS: tuple[str, ...] = get_args(CampaignChannel)
# Files merged after base.yaml, in this order, when present: rules and campaigns are data.
DATA_FILES = ("quality.yaml", "campaigns.yaml")

# Every record refuses keys it does not know; strings also take numbers (``app_name: 2024``).
# Integers and booleans are strict (``"20"`` is not 20, ``1`` is not true), as before pydantic.
# A constrained field's ``description`` is the phrase its error shows after "expected".
_RECORD = ConfigDict(extra="forbid", coerce_numbers_to_str=True)
Share = Annotated[float, Field(strict=True, ge=0, le=1)]


class ConfigError(ValueError):
    """A configuration key is unknown, missing or has a bad value; the message names it and its layer."""


def _resolve_root(root: str) -> str:
    """Absolute local path for a local root; URIs (s3a://, abfss://, file:/...) stay as given."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", root):
        return root.rstrip("/")
    return str(Path(root).expanduser().resolve())


def _spark_values(value: Any) -> Any:
    # Spark takes every setting as text; YAML reads `4` and `true` as a number and a boolean.
    if not isinstance(value, dict):
        return value
    return {
        str(key): ("true" if item else "false") if isinstance(item, bool) else item
        for key, item in value.items()
    }


def _job_spark_values(value: Any) -> Any:
    # spark.job_conf: {job: {setting: value}}, each job's values as text like spark.conf's.
    if not isinstance(value, dict):
        return value
    return {str(job): _spark_values(settings) for job, settings in value.items()}


def _rules_lists(value: Any) -> Any:
    # `orders:` with nothing under it is a table without rules.
    if not isinstance(value, dict):
        return value
    return {table: [] if rules is None else rules for table, rules in value.items()}


def _upper(value: Any) -> Any:
    # Spark takes log levels in any case.
    return value.upper() if isinstance(value, str) else value


def _date_text(value: Any) -> Any:
    # An unquoted 2000-01-01 is a date to YAML.
    return value.isoformat() if isinstance(value, dt.date) else value


@dataclass(frozen=True, config=_RECORD)
class PathsConfig:
    """The landing and lake roots: absolute local paths, or URIs kept as given."""

    landing: str
    lake: str

    @field_validator("landing", "lake")
    @classmethod
    def _absolute(cls, root: str) -> str:
        if not root.strip():
            raise ValueError("must not be empty")
        return _resolve_root(root)


@dataclass(frozen=True, config=_RECORD)
class SparkConfig:
    master: str = "local[*]"
    app_name: str = "ecom-lakehouse"
    jars_dir: str | None = None
    # Local mode: the driver JVM maps the class archive `make setup` dumps (docs/engine.md).
    class_archive: StrictBool = True
    log_level: Annotated[SparkLogLevel, BeforeValidator(_upper)] = "WARN"
    conf: Annotated[Mapping[str, str], BeforeValidator(_spark_values)] = Field(default_factory=dict)
    # Spark SQL settings of one job's session only, e.g. {"silver.products": {...}} (docs/engine.md).
    job_conf: Annotated[Mapping[str, Mapping[str, str]], BeforeValidator(_job_spark_values)] = Field(
        default_factory=dict
    )


@dataclass(frozen=True, config=_RECORD)
class PipelineSettings:
    base_currency: str = Field(
        default="EUR", pattern=r"^[A-Z]{3}$", description="an ISO-4217 code such as EUR"
    )
    source_timezone: str = "Europe/Berlin"
    session_gap_minutes: StrictInt = Field(
        default=30, ge=1, le=24 * 60, description="minutes between 1 and 1440"
    )
    popularity_windows_days: tuple[Annotated[StrictInt, Field(ge=1)], ...] = Field(
        default=(7, 30), min_length=1, description="a non-empty list of positive day counts"
    )
    max_file_bytes: StrictInt = Field(default=2 * 1024**3, ge=1, description="a positive number of bytes")
    max_parallel_jobs: StrictInt = Field(default=2, ge=1, le=64, description="between 1 and 64 jobs at once")
    broadcast_max_rows: StrictInt = Field(default=2_000_000, ge=0, description="a number of rows, 0 or more")

    @field_validator("source_timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown time zone {zone!r}") from err
        return zone


@dataclass(frozen=True, config=_RECORD)
class QualityRule:
    """One data-quality rule of a silver table.

    ``kind`` is ``row`` (``expr`` is a Spark SQL boolean, true when the row passes; a null
    result counts as a pass only when ``null_passes``), ``unique`` (``columns`` form a key
    within the delivery), ``reference`` (``columns`` must exist in ``ref_table``'s
    ``ref_columns``) or ``time_window`` (each of ``columns``, a timestamp or date, lies in the
    plausible window of ``quality.plausible_time``; null passes). ``action`` is ``flag``
    (keep the row, list the rule on it), ``quarantine`` (move the row to quarantine) or
    ``fail`` (quarantine, and fail the run when the failing share of a delivery exceeds
    ``threshold``).
    """

    name: str = Field(min_length=1, description="a rule name")
    kind: RuleKind = "row"
    expr: str | None = None
    columns: tuple[str, ...] = ()
    ref_table: str | None = None
    ref_columns: tuple[str, ...] = ()
    action: RuleAction = "quarantine"
    threshold: Share | None = Field(default=None, description="a share in [0, 1]")
    null_passes: StrictBool = False
    description: str = ""

    @model_validator(mode="after")
    def _complete(self) -> QualityRule:
        if self.kind == "row" and not self.expr:
            raise ValueError("a row rule needs 'expr'")
        if self.kind != "row" and not self.columns:
            raise ValueError(f"a {self.kind} rule needs 'columns'")
        if self.kind == "reference" and not (self.ref_table and len(self.ref_columns) == len(self.columns)):
            raise ValueError("a reference rule needs 'ref_table' and matching 'ref_columns'")
        return self


@dataclass(frozen=True, config=_RECORD)
class PlausibleTime:
    """The window of plausible business dates (``time_window`` rules; docs/quality.md).

    A date before ``earliest`` (an ERP's ``1900-01-01`` for "no date", a clock reset) or more
    than ``max_days_after_delivery`` days after the date of the delivery that brought it (a
    ``9999-12-31`` placeholder, a device clock in 2099) is not a date the shop lived.
    """

    earliest: Annotated[str, BeforeValidator(_date_text)] = "2000-01-01"
    max_days_after_delivery: StrictInt = Field(default=2, ge=0, description="a number of days, not negative")

    @field_validator("earliest")
    @classmethod
    def _iso_date(cls, text: str) -> str:
        try:
            return dt.date.fromisoformat(text).isoformat()
        except ValueError as err:
            raise ValueError(f"expected a date YYYY-MM-DD, got {text!r}") from err


@dataclass(frozen=True, config=_RECORD)
class QualityConfig:
    fail_threshold: Share = Field(default=0.05, description="a share in [0, 1]")
    threshold_min_rows: StrictInt = Field(default=20, ge=1, description="at least 1 row")
    plausible_time: PlausibleTime = Field(default_factory=PlausibleTime)
    rules: Annotated[Mapping[str, tuple[QualityRule, ...]], BeforeValidator(_rules_lists)] = Field(
        default_factory=dict
    )

    def rules_for(self, table: str) -> tuple[QualityRule, ...]:
        """The rules declared for one silver table, in declaration order (empty if none)."""
        return self.rules.get(table, ())


@dataclass(frozen=True, config=_RECORD)
class HistoryConfig:
    customers_tracked: tuple[str, ...] = ()
    products_tracked: tuple[str, ...] = ()


@dataclass(frozen=True, config=_RECORD)
class SegmentRule:
    segment: str
    when: str


@dataclass(frozen=True, config=_RECORD)
class SegmentsConfig:
    score_buckets: StrictInt = Field(default=5, ge=2, le=10, description="between 2 and 10 buckets")
    mapping: tuple[SegmentRule, ...] = ()


OpenShare = Annotated[float, Field(strict=True, gt=0, lt=1, description="a share strictly between 0 and 1")]


@dataclass(frozen=True, config=_RECORD)
class Campaign:
    """One marketing campaign (``conf/campaigns.yaml``; docs/campaigns_and_stock.md).

    A customer is targeted when their segment is one of ``segments`` (if given) and the
    ``rfm`` SQL condition over ``r``, ``f``, ``m`` and the other ``customer_segments``
    columns holds (if given); at least one of the two is required. ``control_share`` and
    ``measurement_days`` default to the section's values (:meth:`CampaignsConfig.resolved`).
    """

    # Used in file names and SQL literals.
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="1-64 letters, digits, - or _")]
    channel: CampaignChannel
    start_date: dt.date
    segments: tuple[Annotated[str, Field(pattern=r"\S", description="a segment name")], ...] = ()
    rfm: str | None = None
    control_share: OpenShare | None = None
    measurement_days: StrictInt | None = Field(default=None, ge=1, description="at least 1 day")
    description: str = ""

    @model_validator(mode="after")
    def _targets(self) -> Campaign:
        if not self.segments and not (self.rfm or "").strip():
            raise ValueError("a campaign needs 'segments', an 'rfm' condition, or both")
        return self


@dataclass(frozen=True, config=_RECORD)
class CampaignsConfig:
    control_share: OpenShare = 0.1
    measurement_days: StrictInt = Field(default=14, ge=1, description="at least 1 day")
    confidence_level: float = Field(
        default=0.95, strict=True, gt=0.5, lt=1, description="a level strictly between 0.5 and 1, e.g. 0.95"
    )
    definitions: tuple[Campaign, ...] = ()

    @field_validator("definitions")
    @classmethod
    def _unique_names(cls, definitions: tuple[Campaign, ...]) -> tuple[Campaign, ...]:
        names = [c.name for c in definitions]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"campaign names must be unique, {repeated} repeat")
        return definitions

    def resolved(self) -> tuple[Campaign, ...]:
        """The campaigns with the section's defaults filled in (never a None share or window)."""
        return tuple(
            dataclasses.replace(
                campaign,
                control_share=(
                    self.control_share if campaign.control_share is None else campaign.control_share
                ),
                measurement_days=(
                    self.measurement_days if campaign.measurement_days is None else campaign.measurement_days
                ),
            )
            for campaign in self.definitions
        )

    def named(self, name: str) -> Campaign:
        """The resolved campaign called ``name``.

        Raises:
            ConfigError: No campaign has that name.
        """
        for campaign in self.resolved():
            if campaign.name == name:
                return campaign
        known = ", ".join(c.name for c in self.definitions) or "none"
        raise ConfigError(f"unknown campaign {name!r} (configured: {known}; see conf/campaigns.yaml)")


@dataclass(frozen=True, config=_RECORD)
class StockConfig:
    """Settings of ``gold.stock_signals`` (docs/campaigns_and_stock.md, "Stock signals")."""

    # Cycle service level: the chance a replenishment cycle has no stock-out.
    service_level: float = Field(
        default=0.95, strict=True, ge=0.5, lt=1, description="a level in [0.5, 1), e.g. 0.95"
    )
    short_window_days: StrictInt = Field(default=7, ge=1, description="at least 1 day")  # avg_daily_units_7d
    # avg_daily_units_28d, days_out_of_stock_28d, demand variability
    long_window_days: StrictInt = Field(default=28, ge=1, le=366, description="between 1 and 366 days")
    # When the inventory source leaves lead_time_days empty.
    default_lead_time_days: StrictInt = Field(default=7, ge=1, description="at least 1 day")
    # Days between two ordering decisions (the order-up-to level covers them).
    review_period_days: StrictInt = Field(default=7, ge=0, description="a number of days, not negative")

    @model_validator(mode="after")
    def _windows(self) -> StockConfig:
        if self.short_window_days > self.long_window_days:
            raise ValueError("expected short_window_days <= long_window_days")
        return self


@dataclass(frozen=True, config=_RECORD)
class PrivacyConfig:
    hmac_key_env: str = Field(
        default="ECOM_HMAC_KEY",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="an environment variable's name",
    )
    allow_insecure_default_key: StrictBool = True


@dataclass(frozen=True, config=_RECORD)
class MaintenanceConfig:
    vacuum_retention_hours: StrictInt = Field(
        default=168, ge=0, description="a number of hours, not negative"
    )
    allow_unsafe_retention: StrictBool = False


# --- The shop's database in, gold out (issue 22, docs/postgres.md) ---------------------------
_SQL_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


@dataclasses.dataclass(frozen=True)
class DatabaseUrl:
    """A ``postgresql://user@host:port/db[?params]`` URL, parsed; it never holds a password."""

    user: str | None
    host: str
    port: int
    database: str
    query: str = ""

    def __str__(self) -> str:
        """The URL as given (without a password), for messages and lineage."""
        user = f"{self.user}@" if self.user else ""
        query = f"?{self.query}" if self.query else ""
        return f"postgresql://{user}{self.host}:{self.port}/{self.database}{query}"

    @property
    def location(self) -> str:
        """``postgresql://host:port/db``: where the data lives, without user or parameters."""
        return f"postgresql://{self.host}:{self.port}/{self.database}"


class DatabaseUrlError(ValueError):
    """A database URL that is not ``postgresql://user@host:port/db``, or that holds a password."""


def parse_database_url(text: str) -> DatabaseUrl:
    """Parse ``postgresql://user@host:port/db[?params]`` (``postgres://`` too).

    Raises:
        DatabaseUrlError: Another scheme, no host or database, a bad port, or a password in
            the URL (the message then never repeats the URL).
    """
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(text.strip())
    if parts.password is not None:
        raise DatabaseUrlError(
            "the URL holds a password: leave it out and set it in the environment "
            f"({SOURCE_DB_ENV}_PASSWORD or {PUBLISH_DB_ENV}_PASSWORD, PGPASSWORD) or in ~/.pgpass"
        )
    if parts.scheme not in ("postgresql", "postgres"):
        raise DatabaseUrlError(f"{text!r} is not a postgresql://user@host:port/db URL")
    try:
        port = parts.port or 5432
    except ValueError as err:
        raise DatabaseUrlError(f"{text!r}: the port is not a number") from err
    database = unquote(parts.path.lstrip("/"))
    if not parts.hostname or not database or "/" in database:
        raise DatabaseUrlError(f"{text!r}: expected postgresql://user@host:port/database")
    user = unquote(parts.username) if parts.username else None
    return DatabaseUrl(user=user, host=parts.hostname, port=port, database=database, query=parts.query)


def _database_url(text: str | None) -> str | None:
    if text is not None:
        parse_database_url(text)  # DatabaseUrlError is a ValueError: pydantic reports it
    return text


@dataclass(frozen=True, config=_RECORD)
class SourceTable:
    """Where one source is read from: landing ``files`` or a database table (``jdbc``)."""

    kind: SourceKind = "files"
    table: str | None = Field(
        default=None,
        pattern=rf"^{_SQL_NAME}(\.{_SQL_NAME})?$",
        description="[schema.]table of plain SQL names",
    )
    fetch_size: StrictInt = Field(default=10_000, ge=1, description="at least 1 row")
    partitions: StrictInt = Field(default=4, ge=1, le=64, description="between 1 and 64 parallel reads")


# --- Clicks from a Kafka topic (issue 23, docs/kafka.md) -------------------------------------
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$")
_KAFKA_TOPIC = r"^[A-Za-z0-9._-]{1,249}$"
# Options of Spark's Kafka source that bronze.clicks sets itself, from the keys above.
_OWNED_KAFKA_OPTIONS = frozenset(
    {
        "kafka.bootstrap.servers",
        "subscribe",
        "subscribepattern",
        "assign",
        "startingoffsets",
        "endingoffsets",
        "failondataloss",
        "maxoffsetspertrigger",
        "kafka.group.id",
        "kafka.key.deserializer",
        "kafka.value.deserializer",
        "kafka.enable.auto.commit",
        "kafka.auto.offset.reset",
    }
)
# An option whose name says it holds a secret: refused as a config key (the environment only).
_SECRET_OPTION = re.compile(r"(?i)password|secret|jaas|token|credential|\.key$")


def parse_bootstrap_servers(text: str) -> tuple[str, ...]:
    """``host:port[,host:port]`` as a tuple of ``host:port``.

    Raises:
        ValueError: An entry is not ``host:port`` with a port from 1 to 65535.
    """
    servers = tuple(part.strip() for part in text.split(","))
    for server in servers:
        match = _HOST_PORT.fullmatch(server)
        if match is None or not 1 <= int(match.group(2)) <= 65535:
            raise ValueError(f"expected host:port[,host:port], got {text!r} ({server!r} is not host:port)")
    return servers


def _kafka_options(options: Any) -> Any:
    options = _spark_values(options)
    if not isinstance(options, dict):
        return options
    for key in options:
        name = str(key)
        if not name.startswith("kafka."):
            raise ValueError(f"{name!r}: only Kafka client settings (kafka.<setting>) go here")
        if name.lower() in _OWNED_KAFKA_OPTIONS:
            raise ValueError(f"{name!r} is set by the pipeline from the keys of sources.clicks")
        if _SECRET_OPTION.search(name):
            raise ValueError(
                f"{name!r} holds a secret, never a config key: set sources.clicks.sasl_username and the "
                f"password in the environment ({CLICKS_KAFKA_ENV}_PASSWORD, or the variable "
                "sources.clicks.password_env names); see docs/kafka.md"
            )
    return options


@dataclass(frozen=True, config=_RECORD)
class ClicksSource:
    """Where ``bronze.clicks`` reads click events: landing ``files`` or a ``kafka`` topic.

    ``ECOM_CLICKS_KAFKA=host:port[,host:port]`` sets ``bootstrap_servers`` and ``kind: kafka``.
    Security settings are plain Kafka client keys in ``options`` (``kafka.security.protocol``,
    ``kafka.sasl.mechanism``, ``kafka.ssl.truststore.location``...); the password is read from
    the environment variable ``password_env`` only and never logged or recorded.
    """

    kind: ClicksKind = "files"
    bootstrap_servers: str | None = None
    topic: str = Field(default="clicks", pattern=_KAFKA_TOPIC, description="a Kafka topic name")
    starting_offsets: KafkaStartingOffsets = "earliest"
    max_offsets_per_trigger: StrictInt | None = Field(
        default=None, ge=1, description="a positive number of offsets, or null"
    )
    sasl_username: str | None = None
    password_env: str = Field(
        default=f"{CLICKS_KAFKA_ENV}_PASSWORD",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="an environment variable's name",
    )
    options: Annotated[Mapping[str, str], BeforeValidator(_kafka_options)] = Field(default_factory=dict)
    # `ecom-pipeline stream` (docs/kafka.md, "Continuous mode"): a micro-batch every N seconds, and
    # gold.product_interest_hourly's sliding windows and lateness bound.
    stream_trigger_seconds: StrictInt = Field(default=5, ge=1, le=3600, description="seconds, 1 to 3600")
    interest_window_minutes: StrictInt = Field(default=60, ge=1, description="minutes, at least 1")
    interest_slide_minutes: StrictInt = Field(default=5, ge=1, description="minutes, at least 1")
    interest_lateness_minutes: StrictInt = Field(default=10, ge=0, description="minutes, not negative")

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, text: str | None) -> str | None:
        if text is not None:
            return ",".join(parse_bootstrap_servers(text))
        return text

    @model_validator(mode="after")
    def _servers_for_kafka(self) -> ClicksSource:
        if self.kind == "kafka" and not self.bootstrap_servers:
            raise ValueError(
                f"clicks read from kafka need its brokers: set {CLICKS_KAFKA_ENV}=host:port "
                "or sources.clicks.bootstrap_servers"
            )
        if self.interest_slide_minutes > self.interest_window_minutes:
            raise ValueError(
                f"interest_slide_minutes ({self.interest_slide_minutes}) cannot exceed "
                f"interest_window_minutes ({self.interest_window_minutes})"
            )
        sasl = str(self.options.get("kafka.security.protocol", "")).upper().startswith("SASL_")
        if sasl and "kafka.sasl.mechanism" not in self.options:
            raise ValueError("kafka.security.protocol SASL_* needs kafka.sasl.mechanism in options")
        return self


@dataclass(frozen=True, config=_RECORD)
class SourcesConfig:
    """The shop's database, for the sources of :data:`DATABASE_SOURCES` whose kind is ``jdbc``.

    ``ECOM_SOURCE_DB`` sets ``url`` and every such source's kind to ``jdbc``.
    """

    url: Annotated[str | None, AfterValidator(_database_url)] = None
    overlap_seconds: StrictInt = Field(default=3600, ge=0, description="seconds, not negative")
    safety_lag_seconds: StrictInt = Field(default=60, ge=0, description="seconds, not negative")
    # An extract that would delete more than this share of the live keys is refused (1.0: off).
    max_delete_fraction: float = Field(
        default=0.5, strict=True, gt=0, le=1, description="a share of the live keys, in (0, 1]"
    )
    orders: SourceTable = Field(default_factory=SourceTable)
    order_items: SourceTable = Field(default_factory=SourceTable)
    customers: SourceTable = Field(default_factory=SourceTable)
    clicks: ClicksSource = Field(default_factory=ClicksSource)

    @model_validator(mode="after")
    def _url_for_jdbc(self) -> SourcesConfig:
        jdbc = [name for name in DATABASE_SOURCES if getattr(self, name).kind == "jdbc"]
        if jdbc and not self.url:
            raise ValueError(
                f"{', '.join(jdbc)} read with jdbc need a database: set {SOURCE_DB_ENV} or sources.url"
            )
        return self

    def of(self, source: str) -> SourceTable | None:
        """The settings of ``source``; None for a source always read from files."""
        return getattr(self, source) if source in DATABASE_SOURCES else None

    def is_database(self, source: str) -> bool:
        """True when bronze reads ``source`` from the database."""
        settings = self.of(source)
        return settings is not None and settings.kind == "jdbc"

    def is_kafka(self, source: str) -> bool:
        """True when bronze reads ``source`` from a Kafka topic (clicks only)."""
        return source == "clicks" and self.clicks.kind == "kafka"

    def table_of(self, source: str) -> str:
        """The ``[schema.]table`` ``source`` is read from (its own name by default)."""
        settings = self.of(source)
        return (settings.table if settings is not None else None) or source


@dataclass(frozen=True, config=_RECORD)
class PublishConfig:
    """Where ``ecom-pipeline publish`` copies the gold tables (docs/postgres.md)."""

    url: Annotated[str | None, AfterValidator(_database_url)] = None
    schema: str = Field(default="gold", pattern=rf"^{_SQL_NAME}$", description="a plain SQL name")
    batch_size: StrictInt = Field(default=5000, ge=1, description="at least 1 row")
    partitions: StrictInt = Field(default=2, ge=1, le=64, description="between 1 and 64 connections")


# Keys of the recommendation jobs (docs/recommendations.md).
_AtLeastOne = Annotated[StrictInt, Field(ge=1, description="an integer of at least 1")]
_Weight = Annotated[float, Field(strict=True, ge=0, description="a weight, not negative")]
_Positive = Annotated[float, Field(strict=True, gt=0, description="a positive number")]


@dataclass(frozen=True, config=_RECORD)
class InteractionWeights:
    """Implicit-feedback weight of one interaction of each kind (docs/recommendations.md)."""

    view: _Weight = 1.0
    add_to_cart: _Weight = 3.0
    purchase: _Weight = 5.0  # one revenue order line

    @model_validator(mode="after")
    def _some_weight(self) -> InteractionWeights:
        if not (self.view or self.add_to_cart or self.purchase):
            raise ValueError("at least one kind of interaction needs a weight above 0")
        return self


@dataclass(frozen=True, config=_RECORD)
class AlsSettings:
    """Parameters of ``pyspark.ml.recommendation.ALS`` (implicit preferences).

    The defaults suit the generated shop's size (hundreds of customers and products): a
    small rank and few iterations train in seconds; a bigger shop raises them in its env file.
    """

    rank: _AtLeastOne = 8
    reg_param: _Weight = 0.1
    alpha: _Positive = 1.0
    max_iter: _AtLeastOne = 5
    seed: StrictInt = Field(default=42, ge=0, description="a seed, not negative")
    # One block of users and one of items: the result is then the same whatever Spark's
    # partitioning (two blocks sum a user's items in the order their blocks arrive).
    blocks: _AtLeastOne = 1


@dataclass(frozen=True, config=_RECORD)
class RecommendationsConfig:
    """The recommendation jobs' settings (docs/recommendations.md)."""

    top_n: StrictInt = Field(default=10, ge=1, le=1000, description="between 1 and 1000 products")
    window_days: _AtLeastOne = 90
    weights: InteractionWeights = Field(default_factory=InteractionWeights)
    recency_half_life_days: _Positive = 30.0
    min_interactions: _AtLeastOne = 3
    allow_repeat_purchases: StrictBool = False
    holdout_days: _AtLeastOne = 7
    popularity_window_days: _AtLeastOne = 30
    affinity_top_k: _AtLeastOne = 10
    affinity_min_pairs: _AtLeastOne = 2
    affinity_max_basket_products: StrictInt = Field(default=50, ge=2, description="at least 2 products")
    als: AlsSettings = Field(default_factory=AlsSettings)


@dataclass(frozen=True, config=_RECORD)
class PipelineConfig:
    """The whole effective configuration of one process."""

    env: str
    paths: PathsConfig
    spark: SparkConfig
    pipeline: PipelineSettings
    quality: QualityConfig
    history: HistoryConfig
    segments: SegmentsConfig
    privacy: PrivacyConfig
    maintenance: MaintenanceConfig
    recommendations: RecommendationsConfig
    campaigns: CampaignsConfig = Field(default_factory=CampaignsConfig)
    stock: StockConfig = Field(default_factory=StockConfig)
    sources: SourcesConfig = Field(default_factory=SourcesConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)

    def fingerprint(self) -> str:
        """A short SHA-256 of the effective config, recorded with every run."""
        payload = json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def rules_fingerprint(self, sections: Iterable[str] | None = None) -> str:
        """A short SHA-256 of the settings that decide what the tables hold: all but where the
        lake and landing are (``paths``) and how Spark runs (``spark``). A job whose inputs and
        these settings have not changed has nothing to do (:mod:`jobs.runner`).

        Args:
            sections: Of :data:`JOB_SPECIFIC_SECTIONS`, the ones to include (the sections the
                job reads, ``JobSpec.settings``); None includes them all.

        Raises:
            ValueError: ``sections`` names a section that is not job-specific.
        """
        ignored = {"paths", "spark", "env", "publish"}  # publish: where gold goes, not what it holds
        if sections is not None:
            unknown = sorted(set(sections) - set(JOB_SPECIFIC_SECTIONS))
            if unknown:
                raise ValueError(
                    f"not job-specific config sections: {unknown}; known: {JOB_SPECIFIC_SECTIONS}"
                )
            ignored |= set(JOB_SPECIFIC_SECTIONS) - set(sections)
        settings = {k: v for k, v in dataclasses.asdict(self).items() if k not in ignored}
        payload = json.dumps(settings, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def with_paths(self, *, landing: str | None = None, lake: str | None = None) -> PipelineConfig:
        """A copy with other landing or lake roots (used by tests and tools)."""
        paths = PathsConfig(landing=landing or self.paths.landing, lake=lake or self.paths.lake)
        return dataclasses.replace(self, paths=paths)


# Sections only the jobs that declare them read (``JobSpec.settings`` in :mod:`jobs.graph`;
# tests/unit/test_job_settings.py checks the declarations against the jobs' code): a job's
# idle check fingerprints every other section plus its own of these, so editing a campaign
# or a stock setting runs the jobs that read it, not bronze, silver and the rest of gold.
JOB_SPECIFIC_SECTIONS = ("segments", "campaigns", "stock", "recommendations")

SECTIONS: dict[str, type] = {
    "paths": PathsConfig,
    "spark": SparkConfig,
    "pipeline": PipelineSettings,
    "quality": QualityConfig,
    "history": HistoryConfig,
    "segments": SegmentsConfig,
    "privacy": PrivacyConfig,
    "maintenance": MaintenanceConfig,
    "campaigns": CampaignsConfig,
    "stock": StockConfig,
    "sources": SourcesConfig,
    "publish": PublishConfig,
    "recommendations": RecommendationsConfig,
}
_CONFIG = TypeAdapter(PipelineConfig)


@dataclasses.dataclass(frozen=True)
class _Origin:
    """Where a key's value came from: a file, the environment or the command line."""

    layer: str
    variable: str | None = None  # the environment variable that set it

    def note(self) -> str:
        return f" (set by {self.variable})" if self.variable else ""


_DEFAULTS = _Origin("defaults")


def default_conf_dir() -> Path:
    """``$ECOM_CONF_DIR``, else the ``conf/`` beside the installed packages, else ``./conf``."""
    if os.environ.get("ECOM_CONF_DIR"):
        return Path(os.environ["ECOM_CONF_DIR"])
    beside_package = Path(__file__).resolve().parents[1] / "conf"
    return beside_package if beside_package.is_dir() else Path.cwd() / "conf"


def load_config(
    env: str | None = None,
    *,
    conf_dir: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> PipelineConfig:
    """Load, layer and validate the configuration.

    Args:
        env: Environment name (``conf/<env>.yaml``); default ``$ECOM_ENV`` or ``local``.
        conf_dir: Folder of the YAML files; default :func:`default_conf_dir`.
        overrides: Command-line values as dotted keys, e.g. ``{"paths.lake": "/tmp/lake"}``.
        environ: The environment to read (default ``os.environ``).

    Returns:
        The frozen, validated config, with landing and lake made absolute (local paths).

    Raises:
        ConfigError: A file is missing or malformed, or a key is unknown or badly typed.
    """
    environ = os.environ if environ is None else environ
    env = env or environ.get("ECOM_ENV") or "local"
    if not re.fullmatch(r"[A-Za-z0-9_-]+", env):
        raise ConfigError(f"environment name {env!r} is not a plain name (letters, digits, - and _)")
    folder = Path(conf_dir) if conf_dir else default_conf_dir()
    merged: dict[str, Any] = {}
    origins: dict[str, _Origin] = {}
    base = folder / "base.yaml"
    if not base.is_file():
        raise ConfigError(f"configuration file {base} not found (set ECOM_CONF_DIR to the conf/ folder)")
    _merge(merged, origins, _read_yaml(base), _Origin(str(base)))
    for name in DATA_FILES:
        data_file = folder / name
        if data_file.is_file():
            _merge(merged, origins, _read_yaml(data_file), _Origin(str(data_file)))
    env_file = folder / f"{env}.yaml"
    if not env_file.is_file():
        data_stems = {Path(name).stem for name in DATA_FILES}
        known = sorted(p.stem for p in folder.glob("*.yaml") if p.stem not in {"base", *data_stems})
        raise ConfigError(f"unknown environment {env!r}: {env_file} not found (known: {', '.join(known)})")
    _merge(merged, origins, _read_yaml(env_file), _Origin(str(env_file)))
    for variable, layer in _env_layers(environ):
        _merge(merged, origins, layer, _Origin("environment", variable))
    for dotted, value in (overrides or {}).items():
        _merge(merged, origins, _nest(dotted.split("."), value), _Origin(f"command line ({dotted})"))
    return _build(env, merged, origins)


def parse_assignment(text: str) -> tuple[str, Any]:
    """Parse ``section.key=value`` from ``--set`` into a dotted key and a YAML-typed value."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
    return key.strip(), yaml.safe_load(raw) if raw.strip() else None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def _env_layers(environ: Mapping[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """Each configuring variable and the keys it sets, in the order they apply: the two roots,
    then the ``ECOM__`` variables from the least specific (a section's mapping) to the most."""
    layers: list[tuple[str, dict[str, Any]]] = [
        (var, {section: {key: environ[var]}})
        for var, (section, key) in ROOT_ENV_VARS.items()
        if environ.get(var)
    ]
    if environ.get(SOURCE_DB_ENV):  # the shop's database: orders, order_items, customers from it
        jdbc: dict[str, Any] = {name: {"kind": "jdbc"} for name in DATABASE_SOURCES}
        layers.append((SOURCE_DB_ENV, {"sources": {"url": environ[SOURCE_DB_ENV], **jdbc}}))
    if environ.get(CLICKS_KAFKA_ENV):  # the click tracker's Kafka topic: clicks from it
        kafka = {"kind": "kafka", "bootstrap_servers": environ[CLICKS_KAFKA_ENV]}
        layers.append((CLICKS_KAFKA_ENV, {"sources": {"clicks": kafka}}))
    scoped: list[tuple[int, str, dict[str, Any]]] = []
    for var, raw in environ.items():
        if not var.startswith(ENV_PREFIX):
            continue
        raw_parts = var[len(ENV_PREFIX) :].split("__")
        parts = [p.lower() for p in raw_parts]
        if parts[:2] == ["spark", "conf"] and len(raw_parts) > 2:
            # Spark keys are case-sensitive (snapshotPartitions): a tail written with lower-case
            # letters is kept exactly; an all-upper one is lower-cased.
            tail = "__".join(raw_parts[2:])
            parts = [*parts[:2], tail if tail != tail.upper() else tail.lower()]
        value = _env_value(var, raw)
        if not all(parts) or (len(parts) == 1 and not isinstance(value, dict)):
            raise ConfigError(
                f"environment variable {var}: expected ECOM__<SECTION>__<KEY>=<value>, "
                "or ECOM__<SECTION>=<a YAML mapping of its keys>"
            )
        scoped.append((len(parts), var, _nest(parts, value)))
    layers += [(var, layer) for _, var, layer in sorted(scoped, key=lambda item: item[:2])]
    return layers


def _env_value(var: str, raw: str) -> Any:
    try:
        return yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        # The problem only, not the text: a value may be a secret in the wrong place.
        problem = getattr(err, "problem", None) or "unreadable"
        raise ConfigError(f"environment variable {var}: its value is not valid YAML ({problem})") from err


def _nest(parts: list[str], value: Any) -> dict[str, Any]:
    # spark.conf keys contain dots themselves: everything after 'spark.conf.' is one key.
    if len(parts) > 2 and parts[0] == "spark" and parts[1] == "conf":
        parts = [*parts[:2], ".".join(parts[2:])]
    nested: dict[str, Any] = {}
    node = nested
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def _merge(
    target: dict[str, Any],
    origins: dict[str, _Origin],
    layer: Mapping[str, Any],
    origin: _Origin,
    prefix: str = "",
) -> None:
    for key, value in layer.items():
        dotted = f"{prefix}{key}"
        # Mappings merge key by key, except the free-form ones whose keys are data.
        if isinstance(value, dict) and isinstance(target.get(key), dict) and dotted != "quality.rules":
            _merge(target[key], origins, value, origin, prefix=f"{dotted}.")
        else:
            target[key] = value
        origins[dotted] = origin


def _origin(origins: dict[str, _Origin], dotted: str) -> _Origin:
    """The layer that set ``dotted``, or the nearest enclosing key it set wholesale."""
    while dotted:
        if dotted in origins:
            return origins[dotted]
        # up one level: from a list's item to the list, from a key to its mapping
        dotted = (
            dotted[: dotted.rindex("[")]
            if dotted.endswith("]") and "[" in dotted
            else dotted.rpartition(".")[0]
        )
    return _DEFAULTS


def _build(env: str, merged: dict[str, Any], origins: dict[str, _Origin]) -> PipelineConfig:
    # A section left empty in YAML (`spark:`) takes its defaults; `env` is the chosen one.
    data = {**merged, **{name: {} for name in SECTIONS if merged.get(name) is None}, "env": env}
    try:
        return _CONFIG.validate_python(data)
    except ValidationError as err:
        problems = [_problem(detail, origins) for detail in err.errors(include_url=False)]
        raise ConfigError("\n".join(problems)) from None


# Pydantic's error types, as the phrase after "expected" (other types use the field's description).
_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "dict_type": "a mapping",
    "dataclass_type": "a mapping",
    "tuple_type": "a list",
}


def _problem(detail: ErrorDetails, origins: dict[str, _Origin]) -> str:
    """One line for one validation error: the dotted key, its layer, what was expected."""
    loc = detail["loc"]
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    origin = _origin(origins, key)
    where = f"in {origin.layer}"
    kind = detail["type"]
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        record = _schema_at(loc[:-1])[2]
        fields = dataclasses.fields(record) if dataclasses.is_dataclass(record) else ()
        known = [f.name for f in fields if f.name != "env"]
        what = "section" if len(loc) == 1 else "key"
        return f"unknown {what} '{key}' {where} (known: {', '.join(known)}){origin.note()}"
    if kind == "missing":
        return f"missing key '{key}' (set it in conf/base.yaml or an environment file)"
    field, on_field, _ = _schema_at(loc)
    if kind == "value_error":
        message = str(detail.get("ctx", {}).get("error", detail["msg"]))
        if not on_field:  # a whole record, e.g. a rule without the keys its kind needs
            return f"'{key}' {where}: {message}{origin.note()}"
        return f"bad value for '{key}' {where}: {message}{origin.note()}"
    if kind == "literal_error":
        expected = f"one of {detail.get('ctx', {}).get('expected')}"
    else:
        expected = _EXPECTED.get(kind) or (field and field.description) or detail["msg"]
    return f"bad value for '{key}' {where}: expected {expected}, got {detail['input']!r}{origin.note()}"


def _schema_at(loc: tuple[int | str, ...]) -> tuple[FieldInfo | None, bool, Any]:
    """Where a validation error's location leads: the last field on the way (a list's or a
    mapping's field for their items), whether the location ends on that field, and the type there."""
    node: Any = PipelineConfig
    field: FieldInfo | None = None
    on_field = False
    for part in loc:
        node = _bare(node)
        fields: dict[str, FieldInfo] | None = getattr(node, "__pydantic_fields__", None)
        if fields is not None and isinstance(part, str) and part in fields:
            field, on_field, node = fields[part], True, fields[part].annotation
        elif get_origin(node) in (tuple, Mapping, dict):
            on_field, node = False, get_args(node)[0 if get_origin(node) is tuple else 1]
        else:
            return None, False, None
    return field, on_field, _bare(node)


def _bare(annotation: Any) -> Any:
    """``X`` from ``Annotated[X, ...]`` and ``X | None``."""
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
        elif type(None) in get_args(annotation):
            annotation = next(a for a in get_args(annotation) if a is not type(None))
        else:
            return annotation
