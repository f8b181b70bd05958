"""Silver clickstream: bronze click events to one typed, sessionized, stitched row per event.

Pure ``DataFrame -> DataFrame`` steps, chained by ``jobs/silver_clicks.py`` with
``.transform``; see ``docs/clickstream.md`` for the design. In run order:

1. :func:`clean_clicks` types and conforms the bronze strings (UTC ``event_ts``, trimmed
   strings, blank to null, utm/device JSON flattened) and keeps the bronze row in a
   ``_bronze`` struct plus ``_unparsed_fields`` for the quality rules.
2. (quality engine: :mod:`pipeline_lib.quality.rules` splits valid from quarantined rows.)
3. :func:`dedupe_clicks` keeps one row per ``event_id`` within the batch;
   :func:`filter_unseen_clicks` drops the events silver already holds (late re-sends).
4. :func:`select_click_context` picks the silver events of the batch's devices near the
   new events; :func:`plan_click_changes` re-sessionizes (:func:`sessionize_clicks`) and
   re-stitches (:func:`stitch_customers`) new and context events together and returns the
   rows to insert and the silver rows whose session or customer changed.
5. :func:`to_silver_clicks` is the contract ``select``.

Grain of silver ``clicks``: one row per ``event_id``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pyspark.sql import Column, DataFrame, Window, WindowSpec
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline_lib.bronze.schemas import INGEST_DATE, LANDING_SOURCES, RUN_ID, SOURCE_FILE
from pipeline_lib.silver.common import (
    KEPT,
    VERSION_OUTCOME,
    content_columns,
    parse_decimal,
    parse_whole_number,
    rank_versions,
)
from pipeline_lib.silver.schemas import DQ_FLAGS, FAILED_RULES, MONEY, SILVER_SCHEMAS

__all__ = [
    "CLICK_CONTENT",
    "CLICK_MUTABLE_COLUMNS",
    "DEFAULT_CONTEXT_HOURS",
    "EVENT_TYPES",
    "IS_CUSTOMER_STITCHED",
    "IS_NEW",
    "SILVER_CLICKS_SCHEMA",
    "UNPARSED_FIELDS",
    "clean_clicks",
    "dedupe_clicks",
    "filter_unseen_clicks",
    "plan_click_changes",
    "rank_clicks",
    "select_click_context",
    "sessionize_clicks",
    "stitch_customers",
    "to_silver_clicks",
]

EVENT_TYPES = (
    "page_view",
    "product_view",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "begin_checkout",
    "purchase",
)
# True when customer_id was not delivered on the event but taken from the device's next login.
IS_CUSTOMER_STITCHED = "is_customer_stitched"
# Names of delivered, non-blank fields whose value could not be parsed (event_ts, quantity, ...).
UNPARSED_FIELDS = "_unparsed_fields"
# Marks the rows of the current batch in plan_click_changes (false: a silver context row).
IS_NEW = "_is_new"
# The delivered bronze row, as pipeline_lib.io.quality.BRONZE_RECORD expects it for quarantine.
BRONZE_RECORD = "_bronze"
# How far around a device's new events silver events are re-sessionized and re-stitched.
DEFAULT_CONTEXT_HOURS = 48
# The silver columns that plan_click_changes may rewrite on an existing event.
CLICK_MUTABLE_COLUMNS = ("customer_id", IS_CUSTOMER_STITCHED, "session_id", "is_session_derived")

_UTM_FIELDS = ("source", "medium", "campaign")
_DEVICE_FIELDS = ("type", "os", "browser")
_MICROS_PER_DAY = 86_400_000_000
_MICROS_PER_MINUTE = 60_000_000
# An ISO-8601 time followed by a zone: Z, +hh, +hhmm, +hh:mm, or a region id (Europe/Berlin).
_ZONED_TS = r"\d{2}:\d{2}(:\d{2}(\.\d+)?)?\s*([Zz]|[+-]\d{2}(:?\d{2})?|\[?[A-Za-z]+/[A-Za-z_]+\]?|UTC|GMT)$"
_EVENT_ORDER = ("event_ts", "event_id")
# clean_clicks' columns holding a delivered field parsed once (dropped by its last projection).
_PARSED = {name: f"__parsed_{name}" for name in ("event_ts", "quantity", "price", "utm", "device")}


SILVER_CLICKS_SCHEMA = SILVER_SCHEMAS["clicks"]
# What a click event says: its typed fields as delivered, no lineage or rule flags.
CLICK_CONTENT = tuple(
    content_columns(SILVER_CLICKS_SCHEMA.fieldNames(), exclude=(INGEST_DATE, DQ_FLAGS, IS_CUSTOMER_STITCHED))
)


# ------------------------------------------------------------------ column helpers (private)
def _clean_string(column: Column) -> Column:
    """Trimmed text, or null when null, empty or only white space."""
    trimmed = F.trim(column)
    return F.when(trimmed != "", trimmed)


def _parse_utc_timestamp(text: Column, *, source_timezone: str) -> Column:
    """An ISO-8601 string as a UTC instant; a naive one is wall-clock time in ``source_timezone``.

    Null when null or not a timestamp. Independent of ``spark.sql.session.timeZone``.
    """
    trimmed = _clean_string(text)
    zoned = trimmed.try_cast(T.TimestampType())  # the offset in the text fixes the instant
    wall = trimmed.try_cast(T.TimestampNTZType())
    naive = F.make_timestamp(
        F.year(wall),
        F.month(wall),
        F.dayofmonth(wall),
        F.hour(wall),
        F.minute(wall),
        F.date_part(F.lit("SECOND"), wall),  # seconds with their fraction
        F.lit(source_timezone),
    )
    return F.when(trimmed.rlike(_ZONED_TS), zoned).otherwise(naive)


def _utc_date(ts: Column) -> Column:
    """The UTC calendar date of a timestamp, whatever the session time zone."""
    return F.date_from_unix_date(F.floor(F.unix_micros(ts) / _MICROS_PER_DAY).cast(T.IntegerType()))


def _parse_object(text: Column, fields: tuple[str, ...]) -> Column:
    """The named fields of a JSON object text as a struct of strings, in one parse.

    A field that is itself an object or array comes back as its JSON text; a text that is
    not valid JSON leaves its raw text in ``_corrupt``; null for null.
    """
    schema = T.StructType(
        [*(T.StructField(f, T.StringType()) for f in fields), T.StructField("_corrupt", T.StringType())]
    )
    return F.from_json(text, schema, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt"})


def _is_json_object(text: Column, parsed: Column) -> Column:
    """True for the text of a JSON object (valid JSON starting with ``{``), false for other text
    (an array, a scalar, not JSON), null for null. ``parsed`` is :func:`_parse_object`'s result."""
    return F.ltrim(text).startswith("{") & parsed["_corrupt"].isNull()


def _is_json_structure(value: Column) -> Column:
    """True for a field value that is an object or an array (its JSON text), not a value."""
    trimmed = F.ltrim(value)
    return trimmed.startswith("{") | trimmed.startswith("[")


def _object_field(parsed: Column, field: str) -> Column:
    """One field of a parsed object, trimmed; null when absent or blank, and when it is itself
    an object or array (not a value: ``_unparsed_fields`` names it)."""
    value = parsed[field]
    return F.when(~F.coalesce(_is_json_structure(value), F.lit(False)), _clean_string(value))


def _unparsed(field: str, delivered: Column, parsed_ok: Column) -> Column:
    return F.when(_clean_string(delivered).isNotNull() & ~F.coalesce(parsed_ok, F.lit(False)), F.lit(field))


def _derived_session_id(anonymous_id: Column, session_start: Column) -> Column:
    """SHA-256 (hex) of the device id and the session's first event time in epoch microseconds."""
    return F.sha2(F.concat_ws("|", anonymous_id, F.unix_micros(session_start).cast(T.StringType())), 256)


def _conform(field: T.StructField) -> Column:
    """The column ``field.name`` cast to the field's type.

    An array read back from Delta allows null elements; ANSI casts refuse to narrow that to
    the contract's ``containsNull=False``, so nulls are dropped first (``_dq_flags`` has none).
    """
    column = F.col(field.name)
    if isinstance(field.dataType, T.ArrayType) and not field.dataType.containsNull:
        column = F.array_compact(column)
    return column.cast(field.dataType).alias(field.name)


def _device_window() -> WindowSpec:
    return Window.partitionBy("anonymous_id").orderBy(*_EVENT_ORDER)


# ------------------------------------------------------------------ transformations
def clean_clicks(bronze_clicks: DataFrame, *, source_timezone: str) -> DataFrame:
    """Type and conform bronze click events, keeping the delivered row for quality checks.

    Args:
        bronze_clicks: Bronze ``clicks`` rows: every contract field as a string (``utm`` and
            ``device`` as JSON object text), ``_rescued_data``, ``_corrupt_record`` and the
            lineage columns ``_source_file``, ``_ingest_date``, ``_ingested_at``, ``_run_id``.
        source_timezone: Time zone of a naive ``event_ts`` (one without offset), e.g.
            ``Europe/Berlin``.

    Returns:
        One row per bronze row (same grain), with the silver columns typed as
        :data:`SILVER_CLICKS_SCHEMA`: ``event_ts`` (UTC), ``event_date`` (its UTC date),
        ``event_type`` lower-cased, strings trimmed with blank as null, ``quantity`` int,
        ``price`` decimal(20,4) (never rounded), ``utm_*`` and ``device_*`` from the JSON objects,
        ``is_session_derived`` (true when no ``session_id`` was delivered; the id itself is
        set by :func:`sessionize_clicks`), ``is_customer_stitched`` false, ``_dq_flags``
        empty. Also ``_unparsed_fields`` (names of delivered values that did not parse:
        ``event_ts``, ``quantity``, ``price``, ``utm``, ``device``, and ``utm.<field>`` or
        ``device.<field>`` for a field that is an object or array instead of a value) and
        ``_bronze`` (the bronze row as delivered, ``_corrupt_record`` and ``_rescued_data``
        included: for the rules and for quarantine). A value that does not parse becomes null;
        nothing is dropped here.
    """
    delivered = [*LANDING_SOURCES["clicks"].bronze_schema.fieldNames()]
    missing = [c for c in delivered if c not in bronze_clicks.columns]
    if missing:
        raise ValueError(
            f"clean_clicks: missing bronze columns {missing}; found {sorted(bronze_clicks.columns)}"
        )
    raw = {name: F.col(name) for name in delivered}
    # Each parse once per row, in a projection of its own: referenced several times below
    # (the typed value, the fields of an object, _unparsed_fields), an expression inlined into
    # one projection was evaluated at every reference (Spark's CollapseProject keeps a
    # projection apart when merging it would repeat a costly expression): the two JSON
    # objects were parsed 8 times per row, and cleaning cost 5 times these parses.
    parsed = bronze_clicks.select(
        *[F.col(c) for c in bronze_clicks.columns],
        _parse_utc_timestamp(raw["event_ts"], source_timezone=source_timezone).alias(_PARSED["event_ts"]),
        parse_whole_number(raw["quantity"]).alias(_PARSED["quantity"]),
        parse_decimal(raw["price"], MONEY).alias(_PARSED["price"]),
        _parse_object(raw["utm"], _UTM_FIELDS).alias(_PARSED["utm"]),
        _parse_object(raw["device"], _DEVICE_FIELDS).alias(_PARSED["device"]),
    )
    event_ts, quantity, price = (F.col(_PARSED[name]) for name in ("event_ts", "quantity", "price"))
    session_id = _clean_string(raw["session_id"])
    objects = {obj: F.col(_PARSED[obj]) for obj in ("utm", "device")}
    unparsed = F.array_compact(
        F.array(
            _unparsed("event_ts", raw["event_ts"], event_ts.isNotNull()),
            _unparsed("quantity", raw["quantity"], quantity.isNotNull()),
            _unparsed("price", raw["price"], price.isNotNull()),
            _unparsed("utm", raw["utm"], _is_json_object(raw["utm"], objects["utm"])),
            _unparsed("device", raw["device"], _is_json_object(raw["device"], objects["device"])),
            *[
                F.when(_is_json_structure(objects[obj][f]), F.lit(f"{obj}.{f}"))
                for obj, fields in (("utm", _UTM_FIELDS), ("device", _DEVICE_FIELDS))
                for f in fields
            ],
        )
    )
    typed = {
        "event_id": _clean_string(raw["event_id"]),
        "event_ts": event_ts,
        "event_date": _utc_date(event_ts),
        "event_type": F.lower(_clean_string(raw["event_type"])),
        "anonymous_id": _clean_string(raw["anonymous_id"]),
        "customer_id": _clean_string(raw["customer_id"]),
        IS_CUSTOMER_STITCHED: F.lit(False),
        "session_id": session_id,
        "is_session_derived": session_id.isNull(),
        "product_id": _clean_string(raw["product_id"]),
        "order_id": _clean_string(raw["order_id"]),
        "quantity": quantity,
        "price": price,
        "page_url": _clean_string(raw["page_url"]),
        "referrer": _clean_string(raw["referrer"]),
        "search_query": _clean_string(raw["search_query"]),
        **{f"utm_{f}": _object_field(objects["utm"], f) for f in _UTM_FIELDS},
        **{f"device_{f}": _object_field(objects["device"], f) for f in _DEVICE_FIELDS},
        SOURCE_FILE: raw[SOURCE_FILE],
        INGEST_DATE: raw[INGEST_DATE],
        RUN_ID: raw[RUN_ID],
        DQ_FLAGS: F.array(),
    }
    return parsed.select(
        *[typed[f.name].cast(f.dataType).alias(f.name) for f in SILVER_CLICKS_SCHEMA.fields],
        unparsed.cast(T.ArrayType(T.StringType(), False)).alias(UNPARSED_FIELDS),
        F.struct(*[raw[c] for c in delivered]).alias(BRONZE_RECORD),
    )


def rank_clicks(clicks: DataFrame) -> DataFrame:
    """:func:`~pipeline_lib.silver.common.rank_versions` of click events by ``event_id``.

    The first delivered copy of a re-sent event wins: the earliest ``_ingest_date``, then the
    earliest ``event_ts`` (nulls last), then the SHA-256 of the event's content (the typed
    delivered fields, no lineage), so the choice depends on the data and its deliveries only,
    not on file names, runs or partitioning. A copy with the winner's content is a
    ``duplicate``; with other content, a ``conflict``.

    Args:
        clicks: Rows with ``event_id``, ``event_ts``, ``_ingest_date`` and the content columns.

    Returns:
        ``clicks`` plus ``_version_outcome``; rows with a null ``event_id`` (which the quality
        rules quarantine) are ``kept`` as they are.
    """
    return rank_versions(
        clicks,
        keys=["event_id"],
        version=[],
        tie_break=[F.col(INGEST_DATE).asc_nulls_last(), F.col("event_ts").asc_nulls_last()],
        content=CLICK_CONTENT,
    )


def dedupe_clicks(clicks: DataFrame) -> DataFrame:
    """Keep one row per ``event_id``: the winner of :func:`rank_clicks`. Idempotent."""
    return rank_clicks(clicks).where(F.col(VERSION_OUTCOME) == KEPT).drop(VERSION_OUTCOME)


def filter_unseen_clicks(clicks: DataFrame, *, seen: DataFrame, broadcast: bool = True) -> DataFrame:
    """Drop the events whose ``event_id`` is already in ``seen`` (silver): late re-sends.

    Args:
        clicks: Rows with ``event_id``.
        seen: Any frame with ``event_id`` (typically the silver table).
        broadcast: Look the batch's ids up while scanning ``seen`` (the batch's ids are
            broadcast), then anti-join the few found; False: one sort-merge anti-join, which
            shuffles every id of ``seen``. The caller chooses by the batch's size
            (``pipeline.broadcast_max_rows``).

    Returns:
        The rows of ``clicks`` whose ``event_id`` is not in ``seen``; a null ``event_id`` is
        never in ``seen`` and is kept. Same columns and grain.

    ``seen`` grows every day and ``clicks`` is one delivery: with ``broadcast`` the work on
    ``seen`` is one scan of its ``event_id`` column, not a shuffle of it.
    """
    known = seen.select("event_id").where(F.col("event_id").isNotNull())
    if broadcast:  # only the batch's ids that silver holds: few, so broadcast them back too
        ids = clicks.select("event_id").where(F.col("event_id").isNotNull())
        known = F.broadcast(known.join(F.broadcast(ids), on="event_id", how="left_semi"))
    return clicks.join(known, on="event_id", how="left_anti")


def select_click_context(
    silver_clicks: DataFrame, *, new_clicks: DataFrame, context_hours: int = DEFAULT_CONTEXT_HOURS
) -> DataFrame:
    """The silver events of the new events' devices, within ``context_hours`` of them.

    For each ``anonymous_id`` in ``new_clicks``, the silver events of that device from
    ``context_hours`` before its earliest new event to ``context_hours`` after its latest:
    the events whose session or stitched customer a new event can change (see
    ``docs/clickstream.md`` for the bound).

    Args:
        silver_clicks: Silver ``clicks`` rows (:data:`SILVER_CLICKS_SCHEMA`).
        new_clicks: The batch's new events (``anonymous_id``, ``event_ts``).
        context_hours: The bound around the new events, in hours (>= 1).

    Returns:
        Rows of ``silver_clicks`` (same columns), at most one per silver event.

    Raises:
        ValueError: ``context_hours`` is below 1.
    """
    if context_hours < 1:
        raise ValueError(f"context_hours must be at least 1, got {context_hours}")
    margin = F.expr(f"INTERVAL {int(context_hours)} HOURS")
    spans = (
        new_clicks.where(F.col("anonymous_id").isNotNull() & F.col("event_ts").isNotNull())
        .groupBy(F.col("anonymous_id").alias("__anonymous_id"))
        .agg((F.min("event_ts") - margin).alias("__from"), (F.max("event_ts") + margin).alias("__to"))
    )
    near_new = (
        (silver_clicks["anonymous_id"] == spans["__anonymous_id"])
        & (silver_clicks["event_ts"] >= spans["__from"])
        & (silver_clicks["event_ts"] <= spans["__to"])
    )
    return silver_clicks.join(F.broadcast(spans), on=near_new, how="left_semi")


def sessionize_clicks(clicks: DataFrame, *, session_gap_minutes: int) -> DataFrame:
    """Derive ``session_id`` by inactivity for the events that came without one.

    Among the rows with ``is_session_derived`` true, per ``anonymous_id`` in ``event_ts``
    order (ties by ``event_id``), a session starts at a device's first event and whenever
    the time since the previous such event exceeds ``session_gap_minutes`` (a gap of
    exactly the limit stays in the session). The id is the SHA-256 of the device id and the
    session's first event time, so sessionizing again, or with more events of other
    sessions, gives the same ids. Delivered session ids are kept; the gap is measured
    between derived-session events only.

    Args:
        clicks: Rows with ``anonymous_id``, ``event_ts``, ``event_id``, ``session_id`` and
            ``is_session_derived``.
        session_gap_minutes: The inactivity gap that closes a session (>= 1).

    Returns:
        The same rows and columns, ``session_id`` set on derived-session rows; null there
        when ``anonymous_id`` or ``event_ts`` is null (such rows cannot be placed).

    Raises:
        ValueError: ``session_gap_minutes`` is below 1.
    """
    if session_gap_minutes < 1:
        raise ValueError(f"session_gap_minutes must be at least 1, got {session_gap_minutes}")
    placeable = (
        F.col("is_session_derived") & F.col("anonymous_id").isNotNull() & F.col("event_ts").isNotNull()
    )
    derived = clicks.where(placeable)
    kept = clicks.where(~F.coalesce(placeable, F.lit(False)))
    gap_micros = session_gap_minutes * _MICROS_PER_MINUTE
    previous_ts = F.lag("event_ts").over(_device_window())
    starts_session = previous_ts.isNull() | (
        F.unix_micros(F.col("event_ts")) - F.unix_micros(previous_ts) > F.lit(gap_micros)
    )
    up_to_here = _device_window().rowsBetween(Window.unboundedPreceding, Window.currentRow)
    session_start = F.last(F.when(F.col("__starts"), F.col("event_ts")), ignorenulls=True).over(up_to_here)
    sessionized = (
        derived.withColumn("__starts", starts_session)
        .withColumn("session_id", _derived_session_id(F.col("anonymous_id"), session_start))
        .drop("__starts")
    )
    unplaced = kept.withColumn(
        "session_id", F.when(~F.coalesce(F.col("is_session_derived"), F.lit(False)), F.col("session_id"))
    )
    return sessionized.unionByName(unplaced)


def stitch_customers(clicks: DataFrame) -> DataFrame:
    """Attribute a device's anonymous events to the customer of its next login.

    A *login* is an event with a delivered ``customer_id`` (``is_customer_stitched``
    false). Every other event of the same ``anonymous_id`` gets the ``customer_id`` of the
    next login in ``event_ts`` order (ties by ``event_id``) and ``is_customer_stitched``
    true; on a shared device each anonymous stretch goes to whoever logged in after it.
    Events after a device's last login stay anonymous (null, false): a log-out on a
    shared device must not hand the next visitor's browsing to the previous customer.
    Idempotent: earlier stitched values are recomputed, never taken as logins.

    Args:
        clicks: Rows with ``anonymous_id``, ``event_ts``, ``event_id``, ``customer_id`` and
            ``is_customer_stitched``.

    Returns:
        The same rows and columns with ``customer_id`` and ``is_customer_stitched`` set.
        Rows with a null ``anonymous_id`` or ``event_ts`` keep only a delivered customer.
    """
    is_login = F.col("customer_id").isNotNull() & ~F.coalesce(F.col(IS_CUSTOMER_STITCHED), F.lit(False))
    from_here_on = _device_window().rowsBetween(Window.currentRow, Window.unboundedFollowing)
    next_login = F.first(F.when(F.col("__login"), F.col("customer_id")), ignorenulls=True).over(from_here_on)
    placeable = F.col("anonymous_id").isNotNull() & F.col("event_ts").isNotNull()
    stitched = F.when(placeable, next_login)
    return (
        clicks.withColumn("__login", is_login)
        .withColumn("__next_login", stitched)
        .withColumns(
            {
                "customer_id": F.when(F.col("__login"), F.col("customer_id")).otherwise(
                    F.col("__next_login")
                ),
                IS_CUSTOMER_STITCHED: ~F.col("__login") & F.col("__next_login").isNotNull(),
            }
        )
        .drop("__login", "__next_login")
    )


def plan_click_changes(new_clicks: DataFrame, *, context: DataFrame, session_gap_minutes: int) -> DataFrame:
    """Sessionize and stitch new events together with their silver context; list the changes.

    ``new_clicks`` (events not in silver yet) and ``context`` (their silver neighbours, from
    :func:`select_click_context`) are sessionized and stitched as one set. A silver row
    takes its recomputed values only when a new event caused the change: its recomputed
    session holds a new event (a late event joined, extended or bridged sessions), or its
    next login is a new event (a login stitched earlier anonymous events). Any other
    difference comes from cutting the context at its bound and is ignored.

    Args:
        new_clicks: Cleaned, valid, deduplicated new events (:data:`SILVER_CLICKS_SCHEMA`).
        context: Silver rows of the same devices (:data:`SILVER_CLICKS_SCHEMA`); may be empty.
        session_gap_minutes: As for :func:`sessionize_clicks`.

    Returns:
        :data:`SILVER_CLICKS_SCHEMA` plus ``_is_new``: every new event (``_is_new`` true, to
        insert) and the silver rows whose ``customer_id``, ``is_customer_stitched``,
        ``session_id`` or ``is_session_derived`` changed (``_is_new`` false, to update).
        One row per ``event_id``.
    """
    columns = SILVER_CLICKS_SCHEMA.fieldNames()
    previous = {f"__old_{c}": F.col(c) for c in CLICK_MUTABLE_COLUMNS}
    combined = (
        context.select(*columns)
        .withColumn(IS_NEW, F.lit(False))
        .unionByName(new_clicks.select(*columns).withColumn(IS_NEW, F.lit(True)))
        .withColumns(previous)
        .transform(sessionize_clicks, session_gap_minutes=session_gap_minutes)
        .transform(_with_change_causes)
        .transform(stitch_customers)
    )
    is_new = F.col(IS_NEW)
    take_session = is_new | F.col("__session_has_new")
    take_customer = is_new | F.col("__next_login_is_new")
    kept = {
        "session_id": F.when(take_session, F.col("session_id")).otherwise(F.col("__old_session_id")),
        "customer_id": F.when(take_customer, F.col("customer_id")).otherwise(F.col("__old_customer_id")),
        IS_CUSTOMER_STITCHED: F.when(take_customer, F.col(IS_CUSTOMER_STITCHED)).otherwise(
            F.col(f"__old_{IS_CUSTOMER_STITCHED}")
        ),
    }
    changed = F.lit(False)
    for column in CLICK_MUTABLE_COLUMNS:
        changed = changed | ~F.col(column).eqNullSafe(F.col(f"__old_{column}"))
    return (
        combined.withColumns(kept)
        .where(is_new | changed)
        .select(*[_conform(f) for f in SILVER_CLICKS_SCHEMA.fields], F.col(IS_NEW))
    )


def _with_change_causes(clicks: DataFrame) -> DataFrame:
    """Mark whether a row's (recomputed) session holds a new event, and whether its next login is new."""
    whole_session = Window.partitionBy("anonymous_id", "session_id").rowsBetween(
        Window.unboundedPreceding, Window.unboundedFollowing
    )
    from_here_on = _device_window().rowsBetween(Window.currentRow, Window.unboundedFollowing)
    is_login = F.col("customer_id").isNotNull() & ~F.coalesce(F.col(IS_CUSTOMER_STITCHED), F.lit(False))
    session_has_new = F.when(
        F.col("is_session_derived") & F.col("session_id").isNotNull(),
        F.max(F.col(IS_NEW).cast(T.IntegerType())).over(whole_session) == 1,
    )
    return clicks.withColumns(
        {
            "__session_has_new": F.coalesce(session_has_new, F.lit(False)),
            "__next_login_is_new": F.coalesce(
                F.first(F.when(is_login, F.col(IS_NEW)), ignorenulls=True).over(from_here_on), F.lit(False)
            ),
        }
    )


def to_silver_clicks(clicks: DataFrame) -> DataFrame:
    """Select and cast the columns of the silver ``clicks`` contract (:data:`SILVER_CLICKS_SCHEMA`).

    Args:
        clicks: Rows holding every column of the contract (extra columns are dropped).

    Returns:
        Exactly the contract's columns, in its order and types. Same grain.
    """
    return clicks.select(*[_conform(f) for f in SILVER_CLICKS_SCHEMA.fields])


class ReconciliationError(RuntimeError):
    """Bronze rows read do not equal silver rows inserted + quarantined + duplicates removed."""


def count_checked(checked: DataFrame) -> dict[str, int]:
    """Bronze rows read, quarantined and valid, in one pass."""
    is_quarantined = (F.size(FAILED_RULES) > 0).cast("long")
    row = checked.agg(F.count(F.lit(1)).alias("rows"), F.sum(is_quarantined).alias("bad")).first()
    rows, bad = int(row["rows"]), int(row["bad"] or 0)  # type: ignore[index]
    return {"bronze_rows": rows, "quarantined": bad, "valid": rows - bad}


def count_planned(planned: DataFrame) -> dict[str, int]:
    """New events to insert and silver events to update, in one pass."""
    is_new = F.col(IS_NEW).cast("long")
    row = planned.agg(F.count(F.lit(1)).alias("rows"), F.sum(is_new).alias("new")).first()
    rows, new = int(row["rows"]), int(row["new"] or 0)  # type: ignore[index]
    return {"new_events": new, "context_updates": rows - new}


def click_context(new_clicks: DataFrame, silver: DataFrame | None) -> DataFrame:
    """The silver events near the new ones; the date filter lets Delta skip other partitions."""
    if silver is None:
        return new_clicks.limit(0)
    span = event_date_span(new_clicks)
    if span is None:
        return silver.limit(0)
    margin = dt.timedelta(days=-(-DEFAULT_CONTEXT_HOURS // 24) + 1)  # whole days, rounded up, plus one
    nearby = silver.where(F.col("event_date").between(span[0] - margin, span[1] + margin))
    return nearby.transform(select_click_context, new_clicks=new_clicks, context_hours=DEFAULT_CONTEXT_HOURS)


def event_date_span(clicks: DataFrame) -> tuple[dt.date, dt.date] | None:
    """First and last ``event_date`` of the batch (collects one row), None when empty."""
    row = clicks.agg(F.min("event_date").alias("first"), F.max("event_date").alias("last")).first()
    if row is None or row["first"] is None:
        return None
    return row["first"], row["last"]


def merge_target_condition(planned: DataFrame) -> str | None:
    """The silver partitions a plan touches, as a condition on the MERGE's target ``t``.

    The plan's rows (:func:`plan_click_changes`) are new events and silver events of the
    same devices near them: the span of their ``event_date`` (plus the null date, should a
    rule set let one through) holds every row the MERGE updates. With it, Delta reads those
    partitions only, not the whole table; None (no bound) when no row has a date.
    Collects one row.
    """
    span = event_date_span(planned)
    if span is None:
        return None
    first, last = (day.isoformat() for day in span)
    return f"t.`event_date` IS NULL OR t.`event_date` BETWEEN DATE'{first}' AND DATE'{last}'"


def reconcile_clicks(counts: dict[str, int], written: dict[str, int]) -> dict[str, Any]:
    """Check ``bronze rows = inserted + quarantined + duplicates removed``; the run's details.

    Raises:
        ReconciliationError: The counts do not add up (a bug, never bad data).
    """
    inserted, updated = written.get("inserted", 0), written.get("updated", 0)
    # A copy of an event_id with other content than the kept one lost a tie: a conflict, not a copy.
    duplicates_in_batch = counts["valid"] - counts["unique_in_batch"] - counts["conflicts_in_batch"]
    already_in_silver = counts["unique_in_batch"] - counts["new_events"]
    details: dict[str, Any] = {
        **counts,
        "inserted": inserted,
        "updated": updated,
        "duplicates_in_batch": duplicates_in_batch,
        "duplicates_already_in_silver": already_in_silver,
        "duplicates_removed": duplicates_in_batch + already_in_silver,
        "conflicts": counts["conflicts_in_batch"],
    }
    accounted = inserted + counts["quarantined"] + details["duplicates_removed"] + details["conflicts"]
    details["reconciled"] = counts["bronze_rows"] == accounted and updated == counts["context_updates"]
    if not details["reconciled"]:
        raise ReconciliationError(
            f"clicks do not reconcile: {counts['bronze_rows']} bronze rows, but {inserted} inserted + "
            f"{counts['quarantined']} quarantined + {details['duplicates_removed']} duplicates = {accounted} "
            f"({updated} silver rows updated for {counts['context_updates']} planned)"
        )
    return details
