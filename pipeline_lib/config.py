"""Typed, layered, validated configuration.

Layers, lowest first:

1. ``conf/base.yaml`` and ``conf/quality.yaml`` (the quality rules, kept apart for reading);
2. ``conf/<env>.yaml`` (``local`` by default, or ``cluster``, or your own);
3. environment variables: ``ECOM_LANDING`` and ``ECOM_LAKE`` for the two roots, and
   ``ECOM__<SECTION>__<KEY>=value`` for any other key (value parsed as YAML), e.g.
   ``ECOM__PIPELINE__BASE_CURRENCY=USD`` or ``ECOM__SPARK__CONF__SPARK.SQL.SHUFFLE.PARTITIONS=4``;
4. command-line flags (``--landing``, ``--lake``, ``--set section.key=value``).

Every key is checked on load: an unknown key or a value of the wrong type raises
:class:`ConfigError` naming the key and the layer (file, variable or flag) it came from.
Jobs receive the frozen :class:`PipelineConfig`; transformations receive plain values.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

ENV_PREFIX = "ECOM__"
ROOT_ENV_VARS = {"ECOM_LANDING": ("paths", "landing"), "ECOM_LAKE": ("paths", "lake")}
ROW_RULE_KINDS = ("row", "unique", "reference", "time_window")
RULE_ACTIONS = ("flag", "quarantine", "fail")
_CURRENCY = re.compile(r"[A-Z]{3}")  # fullmatch


class ConfigError(ValueError):
    """A configuration key is unknown, missing or has a bad value; the message names it and its layer."""


@dataclass(frozen=True)
class PathsConfig:
    landing: str
    lake: str


@dataclass(frozen=True)
class SparkConfig:
    master: str = "local[*]"
    app_name: str = "ecom-lakehouse"
    jars_dir: str | None = None
    log_level: str = "WARN"
    conf: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PipelineSettings:
    base_currency: str = "EUR"
    source_timezone: str = "Europe/Berlin"
    session_gap_minutes: int = 30
    popularity_windows_days: tuple[int, ...] = (7, 30)
    max_file_bytes: int = 2 * 1024**3
    max_parallel_jobs: int = 2


@dataclass(frozen=True)
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

    name: str
    kind: str = "row"
    expr: str | None = None
    columns: tuple[str, ...] = ()
    ref_table: str | None = None
    ref_columns: tuple[str, ...] = ()
    action: str = "quarantine"
    threshold: float | None = None
    null_passes: bool = False
    description: str = ""


@dataclass(frozen=True)
class PlausibleTime:
    """The window of plausible business dates (``time_window`` rules; docs/quality.md).

    A date before ``earliest`` (an ERP's ``1900-01-01`` for "no date", a clock reset) or more
    than ``max_days_after_delivery`` days after the date of the delivery that brought it (a
    ``9999-12-31`` placeholder, a device clock in 2099) is not a date the shop lived.
    """

    earliest: str = "2000-01-01"
    max_days_after_delivery: int = 2


@dataclass(frozen=True)
class QualityConfig:
    fail_threshold: float = 0.05
    threshold_min_rows: int = 20
    plausible_time: PlausibleTime = field(default_factory=PlausibleTime)
    rules: Mapping[str, tuple[QualityRule, ...]] = field(default_factory=dict)

    def rules_for(self, table: str) -> tuple[QualityRule, ...]:
        """The rules declared for one silver table, in declaration order (empty if none)."""
        return self.rules.get(table, ())


@dataclass(frozen=True)
class HistoryConfig:
    customers_tracked: tuple[str, ...] = ()
    products_tracked: tuple[str, ...] = ()


@dataclass(frozen=True)
class SegmentRule:
    segment: str
    when: str


@dataclass(frozen=True)
class SegmentsConfig:
    score_buckets: int = 5
    mapping: tuple[SegmentRule, ...] = ()


@dataclass(frozen=True)
class PrivacyConfig:
    hmac_key_env: str = "ECOM_HMAC_KEY"
    allow_insecure_default_key: bool = True


@dataclass(frozen=True)
class MaintenanceConfig:
    vacuum_retention_hours: int = 168
    allow_unsafe_retention: bool = False


@dataclass(frozen=True)
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

    def fingerprint(self) -> str:
        """A short SHA-256 of the effective config, recorded with every run."""
        payload = json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def rules_fingerprint(self) -> str:
        """A short SHA-256 of the settings that decide what the tables hold: all but where the
        lake and landing are (``paths``) and how Spark runs (``spark``). A job whose inputs and
        these settings have not changed has nothing to do (:mod:`jobs.runner`)."""
        settings = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("paths", "spark", "env")}
        payload = json.dumps(settings, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def with_paths(self, *, landing: str | None = None, lake: str | None = None) -> PipelineConfig:
        """A copy with other landing or lake roots (used by tests and tools)."""
        paths = PathsConfig(
            landing=_resolve_root(landing) if landing else self.paths.landing,
            lake=_resolve_root(lake) if lake else self.paths.lake,
        )
        return dataclasses.replace(self, paths=paths)


SECTIONS: dict[str, type] = {
    "paths": PathsConfig,
    "spark": SparkConfig,
    "pipeline": PipelineSettings,
    "quality": QualityConfig,
    "history": HistoryConfig,
    "segments": SegmentsConfig,
    "privacy": PrivacyConfig,
    "maintenance": MaintenanceConfig,
}


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
    origins: dict[str, str] = {}
    base = folder / "base.yaml"
    if not base.is_file():
        raise ConfigError(f"configuration file {base} not found (set ECOM_CONF_DIR to the conf/ folder)")
    _merge(merged, origins, _read_yaml(base), str(base))
    quality = folder / "quality.yaml"
    if quality.is_file():
        _merge(merged, origins, _read_yaml(quality), str(quality))
    env_file = folder / f"{env}.yaml"
    if not env_file.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml") if p.stem not in ("base", "quality"))
        raise ConfigError(f"unknown environment {env!r}: {env_file} not found (known: {', '.join(known)})")
    _merge(merged, origins, _read_yaml(env_file), str(env_file))
    _merge(merged, origins, _env_layer(environ), "environment")
    for dotted, value in (overrides or {}).items():
        _merge(merged, origins, _nest(dotted.split("."), value), f"command line ({dotted})")
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


def _env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for var, (section, key) in ROOT_ENV_VARS.items():
        if environ.get(var):
            layer.setdefault(section, {})[key] = environ[var]
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
        if len(parts) < 2 or not all(parts):
            raise ConfigError(f"environment variable {var}: expected ECOM__<SECTION>__<KEY>")
        _deep_set(layer, parts, yaml.safe_load(raw) if raw.strip() else None)
    return layer


def _nest(parts: list[str], value: Any) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    _deep_set(nested, parts, value)
    return nested


def _deep_set(target: dict[str, Any], parts: list[str], value: Any) -> None:
    # spark.conf keys contain dots themselves: everything after 'spark.conf.' is one key.
    if len(parts) > 2 and parts[0] == "spark" and parts[1] == "conf":
        parts = [*parts[:2], ".".join(parts[2:])]
    node = target
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _merge(
    target: dict[str, Any], origins: dict[str, str], layer: Mapping[str, Any], origin: str, prefix: str = ""
) -> None:
    for key, value in layer.items():
        dotted = f"{prefix}{key}"
        # Mappings merge key by key, except the free-form ones whose keys are data.
        if isinstance(value, dict) and isinstance(target.get(key), dict) and dotted != "quality.rules":
            _merge(target[key], origins, value, origin, prefix=f"{dotted}.")
        else:
            target[key] = value
        origins[dotted] = origin


def _origin(origins: dict[str, str], dotted: str) -> str:
    while dotted:
        if dotted in origins:
            return origins[dotted]
        dotted = dotted.rpartition(".")[0]
    return "defaults"


def _build(env: str, merged: dict[str, Any], origins: dict[str, str]) -> PipelineConfig:
    unknown = sorted(set(merged) - set(SECTIONS) - {"env"})
    if unknown:
        key = unknown[0]
        raise ConfigError(
            f"unknown section {key!r} in {_origin(origins, key)} (known: {', '.join(SECTIONS)})"
        )
    sections = {
        name: _build_section(name, cls, merged.get(name) or {}, origins) for name, cls in SECTIONS.items()
    }
    config = PipelineConfig(env=env, **sections)
    _validate(config, origins)
    return config


def _build_section(name: str, cls: type, values: Any, origins: dict[str, str]) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{name}: must be a mapping, in {_origin(origins, name)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in values:
        if key not in fields:
            raise ConfigError(
                f"unknown key '{name}.{key}' in {_origin(origins, f'{name}.{key}')} "
                f"(known: {', '.join(fields)})"
            )
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{name}.{key}"
        kwargs[key] = _coerce(dotted, fields[key].type, value, origins)
    missing = [
        f.name
        for f in fields.values()
        if f.name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(
            f"missing key '{name}.{missing[0]}' (set it in conf/base.yaml or an environment file)"
        )
    return cls(**kwargs)


def _coerce(dotted: str, annotation: Any, value: Any, origins: dict[str, str]) -> Any:
    where = _origin(origins, dotted)

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"bad value for '{dotted}' in {where}: expected {expected}, got {value!r}")

    kind = str(annotation)
    if kind in ("str", "str | None"):
        if value is None and kind == "str | None":
            return None
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise bad("a string")
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad("an integer")
    if kind in ("float", "float | None"):
        if value is None and kind == "float | None":
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise bad("a number")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise bad("true or false")
    if kind == "tuple[int, ...]":
        if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return tuple(value)
        raise bad("a list of integers")
    if kind == "tuple[str, ...]":
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise bad("a list of strings")
    if kind == "Mapping[str, str]":
        if isinstance(value, dict):
            return {str(k): _scalar_str(v) for k, v in value.items()}
        raise bad("a mapping")
    if kind == "Mapping[str, tuple[QualityRule, ...]]":
        if not isinstance(value, dict):
            raise bad("a mapping of table name to a list of rules")
        return {
            table: tuple(_rule(f"{dotted}.{table}[{i}]", r, where) for i, r in enumerate(rules or []))
            for table, rules in value.items()
        }
    if kind == "PlausibleTime":
        return _record(dotted, PlausibleTime, value, where)
    if kind == "tuple[SegmentRule, ...]":
        if not isinstance(value, list):
            raise bad("a list of {segment, when}")
        return tuple(_record(f"{dotted}[{i}]", SegmentRule, r, where) for i, r in enumerate(value))
    raise bad(kind)  # pragma: no cover - a field type this loader does not know yet


def _scalar_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _record(dotted: str, cls: type, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise ConfigError(f"bad value for '{dotted}' in {where}: expected a mapping, got {value!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in value:
        if key not in fields:
            raise ConfigError(f"unknown key '{dotted}.{key}' in {where} (known: {', '.join(fields)})")
    local_origins = {f"{dotted}.{k}": where for k in value}
    kwargs = {k: _coerce(f"{dotted}.{k}", fields[k].type, v, local_origins) for k, v in value.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"'{dotted}' in {where}: {err}") from err


def _rule(dotted: str, value: Any, where: str) -> QualityRule:
    rule: QualityRule = _record(dotted, QualityRule, value, where)
    if rule.kind not in ROW_RULE_KINDS:
        raise ConfigError(f"bad value for '{dotted}.kind' in {where}: expected one of {ROW_RULE_KINDS}")
    if rule.action not in RULE_ACTIONS:
        raise ConfigError(f"bad value for '{dotted}.action' in {where}: expected one of {RULE_ACTIONS}")
    if rule.kind == "row" and not rule.expr:
        raise ConfigError(f"'{dotted}' in {where}: a row rule needs 'expr'")
    if rule.kind in ("unique", "reference", "time_window") and not rule.columns:
        raise ConfigError(f"'{dotted}' in {where}: a {rule.kind} rule needs 'columns'")
    if rule.kind == "reference" and not (rule.ref_table and len(rule.ref_columns) == len(rule.columns)):
        raise ConfigError(
            f"'{dotted}' in {where}: a reference rule needs 'ref_table' and matching 'ref_columns'"
        )
    if rule.threshold is not None and not 0 <= rule.threshold <= 1:
        raise ConfigError(f"bad value for '{dotted}.threshold' in {where}: expected a share in [0, 1]")
    return rule


def _validate(config: PipelineConfig, origins: dict[str, str]) -> None:
    def fail(dotted: str, message: str) -> ConfigError:
        return ConfigError(f"bad value for '{dotted}' in {_origin(origins, dotted)}: {message}")

    for key in ("landing", "lake"):
        if not getattr(config.paths, key).strip():
            raise fail(f"paths.{key}", "must not be empty")
    if not _CURRENCY.fullmatch(config.pipeline.base_currency):
        raise fail(
            "pipeline.base_currency",
            f"expected an ISO-4217 code such as EUR, got {config.pipeline.base_currency!r}",
        )
    try:
        ZoneInfo(config.pipeline.source_timezone)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise fail(
            "pipeline.source_timezone", f"unknown time zone {config.pipeline.source_timezone!r}"
        ) from err
    if not 1 <= config.pipeline.max_parallel_jobs <= 64:
        raise fail("pipeline.max_parallel_jobs", "expected between 1 and 64 jobs at once")
    if not 1 <= config.pipeline.session_gap_minutes <= 24 * 60:
        raise fail("pipeline.session_gap_minutes", "expected minutes between 1 and 1440")
    if not config.pipeline.popularity_windows_days or min(config.pipeline.popularity_windows_days) < 1:
        raise fail("pipeline.popularity_windows_days", "expected a non-empty list of positive day counts")
    if not 0 <= config.quality.fail_threshold <= 1:
        raise fail("quality.fail_threshold", "expected a share in [0, 1]")
    if config.quality.threshold_min_rows < 1:
        raise fail("quality.threshold_min_rows", "expected at least 1 row")
    try:
        dt.date.fromisoformat(config.quality.plausible_time.earliest)
    except ValueError as err:
        raise fail("quality.plausible_time.earliest", "expected a date YYYY-MM-DD") from err
    if config.quality.plausible_time.max_days_after_delivery < 0:
        raise fail("quality.plausible_time.max_days_after_delivery", "must not be negative")
    if not 2 <= config.segments.score_buckets <= 10:
        raise fail("segments.score_buckets", "expected between 2 and 10 buckets")
    if config.maintenance.vacuum_retention_hours < 0:
        raise fail("maintenance.vacuum_retention_hours", "must not be negative")
    paths = PathsConfig(landing=_resolve_root(config.paths.landing), lake=_resolve_root(config.paths.lake))
    object.__setattr__(config, "paths", paths)


def _resolve_root(root: str) -> str:
    """Absolute local path for a local root; URIs (s3a://, abfss://, file:/...) stay as given."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", root):
        return root.rstrip("/")
    return str(Path(root).expanduser().resolve())
