"""Bronze from the shop's database: the extract window, and table rows as bronze rows (pure).

A bronze job whose source is a PostgreSQL table (``sources.<name>.kind: jdbc``) reads the
rows changed in a **window** of ``updated_at`` (``order_items``: their order's), see
docs/postgres.md:

- the upper bound is fixed once, at the start of the run, from the database's clock less
  ``sources.safety_lag_seconds`` (and, for a run ``--as-of DATE``, no later than the end of
  that day in ``pipeline.source_timezone``); every parallel read uses the same bounds;
- the lower bound is the previous extract's upper bound less ``sources.overlap_seconds``, so
  a transaction that stamped ``updated_at`` before the previous upper bound but committed
  after that extract read is still found; unbounded on the first extract.

Rows read twice (the overlap) are dropped here against what bronze holds
(:func:`without_known_rows`). The window of an extract is recorded in the bronze commit that appends its rows
(:func:`extract_record`) and in every row's ``_source_file`` (:func:`source_uri`).

**Deletions** (docs/postgres.md, "Deletes"): each run also reads the table's whole key set
(a key snapshot) and compares it with the keys bronze holds as live (:func:`live_keys`: the
latest extracted row of the key is not a deletion). A key bronze holds but the table no
longer does gets a **tombstone** (:func:`to_tombstones`): its key, ``updated_at`` = the
window's upper bound (orders, customers), every other field null, and ``_rescued_data`` =
``{"_op": "delete", "deleted_at": <upper>}`` (:func:`is_deletion`, :func:`deleted_at`); it is
appended in the same commit as the window's rows. :func:`deletion_guard` refuses an extract
that would delete more than ``sources.max_delete_fraction`` of the live keys.

Reading the database and the bronze table is :mod:`pipeline_lib.io.postgres`'s and
:mod:`pipeline_lib.io.delta`'s job; these functions take DataFrames and values.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline_lib.bronze.schemas import (
    CORRUPT_RECORD,
    INGEST_DATE,
    INGESTED_AT,
    RESCUED_DATA,
    RUN_ID,
    SOURCE_FILE,
    LandingSource,
)

__all__ = [
    "DELETE_OP",
    "EXTRACT_KEY",
    "ORDER_UPDATED_AT",
    "ExtractWindow",
    "TooManyDeletionsError",
    "deleted_at",
    "deleted_keys",
    "deletion_guard",
    "extract_record",
    "format_instant",
    "is_deletion",
    "live_keys",
    "next_window",
    "parse_extract_record",
    "parse_instant",
    "source_prefix",
    "source_uri",
    "to_bronze_rows",
    "to_tombstones",
    "upper_in_uri",
    "window_details",
    "window_upper",
    "without_known_rows",
]

# The key of the window's record in the bronze commit's userMetadata.
EXTRACT_KEY = "ecom_extract"
# order_items rows are read with their order's updated_at (the window's column): kept in
# _rescued_data, it tells a line of one order version from the same line of another.
ORDER_UPDATED_AT = "order_updated_at"
_ISO_UTC = "%Y-%m-%dT%H:%M:%S.%fZ"
# How a timestamp of the database becomes bronze text: ISO-8601, with its offset for an
# instant (timestamptz), without one for wall time (timestamp), as silver parses either.
_SPARK_INSTANT = "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"
_SPARK_WALL_TIME = "yyyy-MM-dd'T'HH:mm:ss.SSSSSS"
_CONTENT = "__content"
# A tombstone's mark in _rescued_data: {"_op": "delete", "deleted_at": "<upper, ISO-8601 UTC>"}.
DELETE_OP = "delete"
_LATEST = "__latest"


class TooManyDeletionsError(RuntimeError):
    """An extract would delete more of the live keys than ``sources.max_delete_fraction``."""


@dataclass(frozen=True)
class ExtractWindow:
    """Rows with ``lower <= updated_at < upper`` (aware UTC datetimes; ``lower`` None: no bound)."""

    lower: dt.datetime | None
    upper: dt.datetime

    @property
    def ingest_date(self) -> dt.date:
        """The bronze partition of the extract: the UTC date of the window's last instant."""
        return (self.upper - dt.timedelta(microseconds=1)).astimezone(dt.UTC).date()

    @property
    def label(self) -> str:
        """``<lower>..<upper>`` in ISO-8601 UTC, lower empty when unbounded."""
        lower = "" if self.lower is None else format_instant(self.lower)
        return f"{lower}..{format_instant(self.upper)}"


def format_instant(instant: dt.datetime) -> str:
    """An aware datetime as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC, fixed width: sorts as text)."""
    if instant.tzinfo is None:
        raise ValueError(f"a naive datetime is no instant: {instant!r}")
    return instant.astimezone(dt.UTC).strftime(_ISO_UTC)


def parse_instant(text: str) -> dt.datetime:
    """The inverse of :func:`format_instant`.

    Raises:
        ValueError: ``text`` is not ``YYYY-MM-DDTHH:MM:SS.ffffffZ``.
    """
    return dt.datetime.strptime(text, _ISO_UTC).replace(tzinfo=dt.UTC)


def window_upper(
    now: dt.datetime, *, safety_lag_seconds: int, as_of: dt.date | None, timezone: str
) -> dt.datetime:
    """The upper bound of a window opened at ``now`` (the database's clock).

    ``now`` less the safety lag, and for a run as of a date no later than the start of the
    next day in ``timezone`` (the shop's day: the same deliveries a landing zone would hold).
    """
    upper = now.astimezone(dt.UTC) - dt.timedelta(seconds=safety_lag_seconds)
    if as_of is not None:
        day_end = dt.datetime.combine(as_of + dt.timedelta(days=1), dt.time(), tzinfo=ZoneInfo(timezone))
        upper = min(upper, day_end.astimezone(dt.UTC))
    return upper


def next_window(
    previous_upper: dt.datetime | None,
    *,
    now: dt.datetime,
    overlap_seconds: int,
    safety_lag_seconds: int,
    as_of: dt.date | None,
    timezone: str,
) -> ExtractWindow | None:
    """The window of this run, or None when it would not move past the previous one.

    Args:
        previous_upper: The upper bound of the last extract committed to bronze (None: first).
        now: The database's clock at the start of the run.

    Returns:
        ``[previous_upper - overlap, upper)``, or ``[-inf, upper)`` on the first extract; None
        when ``upper`` is not after ``previous_upper`` (a run as of an earlier day, a clock
        that went back): an extract never moves backwards.
    """
    upper = window_upper(now, safety_lag_seconds=safety_lag_seconds, as_of=as_of, timezone=timezone)
    if previous_upper is None:
        return ExtractWindow(None, upper)
    if upper <= previous_upper:
        return None
    return ExtractWindow(previous_upper - dt.timedelta(seconds=overlap_seconds), upper)


def source_uri(location: str, table: str, window: ExtractWindow) -> str:
    """The lineage of an extract's rows, in place of a file:
    ``postgresql://host:port/db/<schema.table>?window=<lower>..<upper>``."""
    return f"{source_prefix(location, table)}{window.label}"


def source_prefix(location: str, table: str) -> str:
    """What every ``_source_file`` of one source table starts with (before the window)."""
    return f"{location}/{table}?window="


def extract_record(
    *, source: str, table: str, location: str, window: ExtractWindow, rows: int, run_id: str
) -> str:
    """The ``userMetadata`` of the bronze commit of an extract: its window travels with its rows."""
    record = {
        "source": source,
        "table": table,
        "database": location,
        "lower": None if window.lower is None else format_instant(window.lower),
        "upper": format_instant(window.upper),
        "rows": rows,
        "run_id": run_id,
    }
    return json.dumps({EXTRACT_KEY: record}, sort_keys=True)


def parse_extract_record(
    user_metadata: object, *, source: str, table: str, location: str
) -> dt.datetime | None:
    """The upper bound recorded by an extract of this very table, else None (another commit)."""
    if not isinstance(user_metadata, str):
        return None
    try:
        record = json.loads(user_metadata).get(EXTRACT_KEY)
    except (ValueError, AttributeError):
        return None
    if not isinstance(record, Mapping):
        return None
    if (record.get("source"), record.get("table"), record.get("database")) != (source, table, location):
        return None
    try:
        return parse_instant(str(record["upper"]))
    except (KeyError, ValueError):
        return None


def upper_in_uri(uri: str | Column) -> Column:
    """The window's upper bound, as text, in a ``_source_file`` of :func:`source_uri`."""
    return F.substring_index(F.col(uri) if isinstance(uri, str) else uri, "..", -1)


def _as_text(column: str, data_type: T.DataType) -> Column:
    value = F.col(column)
    if isinstance(data_type, T.TimestampType):
        return F.date_format(value, _SPARK_INSTANT)
    if isinstance(data_type, T.TimestampNTZType):
        return F.date_format(value, _SPARK_WALL_TIME)
    return value.cast(T.StringType())


def to_bronze_rows(
    rows: DataFrame,
    *,
    source: LandingSource,
    uri: str,
    window: ExtractWindow,
    ingested_at: dt.datetime,
    run_id: str,
    extra: Sequence[str] = (),
) -> DataFrame:
    """Typed rows of a source table as bronze rows: every contract field as text.

    Args:
        rows: The table's contract columns, as the JDBC source types them, and ``extra``.
        source: The landing contract of the source (field order and names).
        uri: The rows' lineage (:func:`source_uri`), in ``_source_file``.
        window: The extract's window; its :attr:`~ExtractWindow.ingest_date` is ``_ingest_date``.
        extra: Other columns read with the rows (the order's ``updated_at`` of a line): kept as
            JSON text in ``_rescued_data``, as bronze keeps a file's extra columns.

    Returns:
        The bronze contract (:attr:`~pipeline_lib.bronze.schemas.LandingSource.bronze_schema`):
        an instant as ISO-8601 with its offset (UTC), wall time without one, a decimal in full
        (``4.9500``), a boolean ``true``/``false``; ``_corrupt_record`` null. One row per
        table row.
    """
    types = {f.name: f.dataType for f in rows.schema.fields}
    fields = [_as_text(name, types[name]).alias(name) for name in source.fields]
    if extra:
        pairs = [part for name in extra for part in (F.lit(name), _as_text(name, types[name]))]
        rescued = F.to_json(F.create_map(*pairs))
    else:
        rescued = F.lit(None).cast(T.StringType())
    return _as_bronze(
        rows, fields, rescued, source=source, uri=uri, window=window, ingested_at=ingested_at, run_id=run_id
    )


def _as_bronze(
    rows: DataFrame,
    fields: Sequence[Column],
    rescued: Column,
    *,
    source: LandingSource,
    uri: str,
    window: ExtractWindow,
    ingested_at: dt.datetime,
    run_id: str,
) -> DataFrame:
    """``fields`` and ``_rescued_data`` of ``rows`` with the window's lineage, in the bronze contract."""
    return rows.select(
        *fields,
        rescued.alias(RESCUED_DATA),
        F.lit(None).cast(T.StringType()).alias(CORRUPT_RECORD),
        F.lit(uri).alias(SOURCE_FILE),
        F.lit(window.ingest_date).cast(T.DateType()).alias(INGEST_DATE),
        F.lit(ingested_at).cast(T.TimestampType()).alias(INGESTED_AT),
        F.lit(run_id).alias(RUN_ID),
    ).transform(_conform, source=source)


def _conform(rows: DataFrame, *, source: LandingSource) -> DataFrame:
    return rows.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in source.bronze_schema.fields])


def _content(source: LandingSource) -> Column:
    """What a row says: its contract fields and rescued fields (not lineage, not the run)."""
    return F.sha2(F.to_json(F.struct(*[F.col(c) for c in (*source.fields, RESCUED_DATA)])), 256)


def without_known_rows(rows: DataFrame, known: DataFrame, *, source: LandingSource) -> DataFrame:
    """``rows`` but those bronze already holds with the same content (read again by the overlap).

    Args:
        rows: Bronze rows of this extract (:func:`to_bronze_rows`).
        known: Bronze rows of earlier extracts of the same table that may hold them (those of
            the window's dates).

    Returns:
        ``rows`` whose content (contract fields and ``_rescued_data``: for orders and customers
        ``updated_at`` is part of it, for order lines their order's) no earlier extract
        appended. Same columns.
    """
    seen = known.select(_content(source).alias(_CONTENT)).distinct()
    return rows.withColumn(_CONTENT, _content(source)).join(seen, on=_CONTENT, how="left_anti").drop(_CONTENT)


def window_details(window: ExtractWindow, **counts: Any) -> dict[str, Any]:
    """The window as a run record shows it: bounds in ISO-8601 UTC, and the counts given."""
    return {
        "lower": None if window.lower is None else format_instant(window.lower),
        "upper": format_instant(window.upper),
        **counts,
    }


# --- Deletions: a key snapshot compared with bronze's live keys ---------------------------------


def is_deletion(rescued: str | Column = RESCUED_DATA) -> Column:
    """True for a tombstone row (``_rescued_data`` holds ``"_op": "delete"``), else false (never null)."""
    column = F.col(rescued) if isinstance(rescued, str) else rescued
    return F.coalesce(F.get_json_object(column, "$._op") == F.lit(DELETE_OP), F.lit(False))


def deleted_at(rescued: str | Column = RESCUED_DATA) -> Column:
    """A tombstone's deletion time as text (ISO-8601 UTC, :func:`format_instant`); null otherwise."""
    column = F.col(rescued) if isinstance(rescued, str) else rescued
    return F.when(is_deletion(column), F.get_json_object(column, "$.deleted_at"))


def live_keys(known: DataFrame, *, keys: Sequence[str]) -> DataFrame:
    """The keys whose latest extracted row is not a tombstone.

    Args:
        known: Bronze rows of earlier extracts of one source table (all of them: a key may
            have been extracted once, long ago), with ``keys``, ``_source_file`` and
            ``_rescued_data``.

    Returns:
        One row per live key (``keys`` only). The latest row of a key is the one of the latest
        window (upper bound of its ``_source_file``); within a window a tombstone comes after
        the row it deletes. Rows with a null key part are ignored.
    """
    latest = F.max(F.struct(upper_in_uri(SOURCE_FILE).alias("upper"), is_deletion().alias("deleted")))
    has_key = F.lit(True)
    for key in keys:
        has_key = has_key & F.col(key).isNotNull()
    return (
        known.where(has_key)
        .groupBy(*keys)
        .agg(latest.alias(_LATEST))
        .where(~F.col(f"{_LATEST}.deleted"))
        .select(*keys)
    )


def deleted_keys(live: DataFrame, snapshot: DataFrame, *, keys: Sequence[str]) -> DataFrame:
    """The live keys the source table no longer holds (``left_anti`` of ``live`` by ``snapshot``).

    Args:
        live: :func:`live_keys` (keys as bronze text).
        snapshot: Every key of the source table now, as the JDBC source types them (cast to
            text here, as :func:`to_bronze_rows` does).

    Returns:
        ``keys`` of ``live`` absent from ``snapshot``. Same grain as ``live``.
    """
    current = snapshot.select(*[_as_text(k, snapshot.schema[k].dataType).alias(k) for k in keys])
    return live.join(current, on=list(keys), how="left_anti")


def deletion_guard(*, deleted: int, live: int, max_fraction: float, table: str) -> None:
    """Refuse an extract that would delete more than ``max_fraction`` of the live keys.

    An empty or mostly empty key snapshot is far more often a wrong table, a permission or a
    truncate-and-reload in progress than a real purge. ``max_fraction`` 1.0 turns it off.

    Raises:
        TooManyDeletionsError: ``deleted > max_fraction * live``; nothing has been written.
    """
    if deleted and deleted > max_fraction * live:
        raise TooManyDeletionsError(
            f"{table}: the key snapshot lacks {deleted} of the {live} keys bronze holds "
            f"({deleted / live:.0%} > sources.max_delete_fraction {max_fraction:g}); nothing written. "
            "Check the table and its permissions; if the rows were really deleted, raise "
            "sources.max_delete_fraction for one run"
        )


def to_tombstones(
    deleted: DataFrame,
    *,
    source: LandingSource,
    keys: Sequence[str],
    uri: str,
    window: ExtractWindow,
    ingested_at: dt.datetime,
    run_id: str,
) -> DataFrame:
    """Bronze tombstone rows of deleted keys, in the bronze contract.

    Args:
        deleted: :func:`deleted_keys` (``keys`` as text).

    Returns:
        One row per key: ``keys``, ``updated_at`` = the window's upper bound (ISO-8601 UTC)
        when the contract has it, every other field null, ``_rescued_data`` =
        ``{"_op": "delete", "deleted_at": <upper>}``, lineage as the window's rows.
    """
    upper = format_instant(window.upper)
    mark = json.dumps({"_op": DELETE_OP, "deleted_at": upper}, sort_keys=True)

    def field(name: str) -> Column:
        if name in keys:
            return F.col(name)
        if name == "updated_at":
            return F.lit(upper)
        return F.lit(None).cast(T.StringType())

    fields = [field(name).alias(name) for name in source.fields]
    return _as_bronze(
        deleted,
        fields,
        F.lit(mark),
        source=source,
        uri=uri,
        window=window,
        ingested_at=ingested_at,
        run_id=run_id,
    )
