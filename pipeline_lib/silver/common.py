"""Column helpers (``Column -> Column``) shared by the silver transformations, plus the
the generic row-selection transforms, :func:`rank_versions` and :func:`keep_latest`, which
apply the tie rule (docs/silver.md, "Which version wins").

Every parser has *try-cast* semantics: a value that does not parse becomes null (never an
error, never a default), so a quality rule can compare the typed value with the raw text
and quarantine the row. Spark's ANSI mode is on, so plain casts would raise instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline_lib.bronze.schemas import INGESTED_AT, RUN_ID, SOURCE_FILE

__all__ = [
    "CONFLICT",
    "DUPLICATE",
    "KEPT",
    "OUTCOMES",
    "RUN_LINEAGE",
    "SUPERSEDED",
    "VERSION_OUTCOME",
    "clean_string",
    "content_columns",
    "count_outcomes",
    "keep_latest",
    "lower_code",
    "parse_boolean",
    "parse_date",
    "parse_decimal",
    "parse_timestamp",
    "parse_whole_number",
    "rank_versions",
    "row_fingerprint",
    "upper_code",
    "utc_date",
]

# Lineage that differs between two ingestions of the same delivered rows (another run, another
# file name, the same delivery split into two files): never a row's content, never a tie-break.
RUN_LINEAGE = (SOURCE_FILE, INGESTED_AT, RUN_ID)
# What rank_versions says of each row.
VERSION_OUTCOME = "_version_outcome"
KEPT, DUPLICATE, CONFLICT, SUPERSEDED = "kept", "duplicate", "conflict", "superseded"
OUTCOMES = (KEPT, DUPLICATE, CONFLICT, SUPERSEDED)

# An ISO-8601 value that carries its own offset: Z, +hh, +hhmm or +hh:mm at the end.
# An offset follows a time of day; a date alone ("2026-03-01") ends in "-01" but has none.
_HAS_OFFSET = r"(?i)[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?\s*(z|[+-][0-9]{2}(:?[0-9]{2})?)$"


def _col(column: Column | str) -> Column:
    return F.col(column) if isinstance(column, str) else column


def clean_string(column: Column | str) -> Column:
    """Trimmed text; an empty or blank value becomes null.

    >>> df.select(clean_string("city"))  # "  Berlin " -> "Berlin", "  " -> null
    """
    trimmed = F.trim(_col(column))
    return F.when(trimmed == "", F.lit(None).cast("string")).otherwise(trimmed)


def upper_code(column: Column | str) -> Column:
    """A code in upper case (currency, country), trimmed; blank becomes null."""
    return F.upper(clean_string(column))


def lower_code(column: Column | str) -> Column:
    """A code in lower case (status, channel), trimmed; blank becomes null."""
    return F.lower(clean_string(column))


def parse_timestamp(column: Column | str, *, source_timezone: str) -> Column:
    """An ISO-8601 text as a UTC instant (``timestamp``), null when it does not parse.

    A value with an offset (``Z``, ``+02:00``, ``+0200``) is read at that offset; a naive
    value is wall-clock time in ``source_timezone`` (a time in the spring-forward gap moves
    forward, as ``java.time`` does). The result does not depend on the session time zone.
    """
    text = clean_string(column)
    with_offset = text.try_cast(T.TimestampType())
    naive = text.try_cast(T.TimestampNTZType())
    naive_in_zone = F.make_timestamp(
        F.year(naive),
        F.month(naive),
        F.dayofmonth(naive),
        F.hour(naive),
        F.minute(naive),
        F.date_part(F.lit("SECOND"), naive),
        F.lit(source_timezone),
    )
    return F.when(text.rlike(_HAS_OFFSET), with_offset).otherwise(naive_in_zone)


def utc_date(timestamp: Column | str) -> Column:
    """The UTC calendar date of an instant, whatever the session time zone."""
    return F.date_from_unix_date(F.floor(F.unix_seconds(_col(timestamp)) / 86400).cast("int"))


def parse_date(column: Column | str) -> Column:
    """A ``yyyy-MM-dd`` text as a date; null when it does not parse."""
    return clean_string(column).try_cast(T.DateType())


def parse_decimal(column: Column | str, data_type: T.DecimalType, *, exact: bool = True) -> Column:
    """A decimal text (dot as separator, an exponent allowed) as ``data_type``; null when it does
    not parse (``12,50``, ``NaN``, ``Infinity``) or overflows.

    With ``exact`` (money), a value with more decimals than the type keeps is null too, never
    rounded: ``12.505`` in ``decimal(20,4)`` stays 12.5050, ``12.50505`` does not parse. Without
    it (exchange rates), the value is rounded half up to the type's scale.
    """
    text = clean_string(column)
    if not exact:
        return text.try_cast(data_type)
    wide = text.try_cast(T.DecimalType(38, 18))
    typed = wide.try_cast(data_type)
    return F.when(typed == wide, typed)


def parse_whole_number(column: Column | str) -> Column:
    """A whole number as ``int``: ``"2"``, ``"2.0"`` or ``"1e0"``; null for ``2.5``, ``NaN``,
    junk and values outside the int range."""
    number = clean_string(column).try_cast(T.DecimalType(38, 6))
    return F.when(number == F.floor(number), number.try_cast(T.IntegerType()))


def parse_boolean(column: Column | str) -> Column:
    """``true``/``false`` (also ``t``/``f``, ``yes``/``no``, ``1``/``0``, any case) as boolean; else null."""
    return F.lower(clean_string(column)).try_cast(T.BooleanType())


def row_fingerprint(columns: Sequence[str | Column]) -> Column:
    """SHA-256 (hex) of the JSON of ``columns``: a deterministic tie-breaker and row identity.

    Give it content only: a column that differs between two ingestions of the same delivered
    row (:data:`RUN_LINEAGE`) would make the fingerprint, and every choice made with it,
    depend on the run.
    """
    return F.sha2(F.to_json(F.struct(*[_col(c) for c in columns])), 256)


def content_columns(columns: Sequence[str], *, exclude: Sequence[str] = ()) -> list[str]:
    """``columns`` without :data:`RUN_LINEAGE`, helper columns (``__*``) and ``exclude``, in order."""
    dropped = {*RUN_LINEAGE, *exclude}
    return [c for c in columns if c not in dropped and not c.startswith("__")]


def rank_versions(
    rows: DataFrame,
    *,
    keys: Sequence[str],
    version: Sequence[str],
    tie_break: Sequence[Column] = (),
    content: Sequence[str | Column],
) -> DataFrame:
    """Decide, per key, which row wins, and why each other row lost (``_version_outcome``).

    The winner is the row with the greatest ``version`` (e.g. ``updated_at``); among rows of
    that version, the first by ``tie_break`` (e.g. the latest delivery first); then the
    greatest SHA-256 of ``content``. Nothing else decides: not the run, the file name, the
    order of files or partitions, so the same rows always give the same winner.

    Args:
        rows: Any frame holding ``keys`` and ``version``.
        keys: The key columns; rows with a null key are each kept as they are.
        version: Columns that make a row newer, compared in order (greatest wins; nulls lose).
        tie_break: Sort expressions among rows of the winner's version, first wins.
        content: What a row says (no lineage that differs per run, see :func:`content_columns`).

    Returns:
        ``rows`` plus ``_version_outcome``: ``kept`` (one row per key), ``duplicate`` (the
        winner's version with the winner's content: a copy), ``conflict`` (the winner's
        version with other content: the tie rule decided) or ``superseded`` (an older
        version). Same grain.
    """
    order = [F.col(c).desc_nulls_last() for c in version]
    window = Window.partitionBy(*keys).orderBy(*order, *tie_break, F.col("__content").desc())
    winner = (
        Window.partitionBy(*keys)
        .orderBy(*order, *tie_break, F.col("__content").desc())
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    same_version = F.lit(True)
    for column in version:
        same_version = same_version & F.col(column).eqNullSafe(F.first(column).over(winner))
    outcome = (
        F.when(F.col("__rank") == 1, F.lit(KEPT))
        .when(~same_version, F.lit(SUPERSEDED))
        .when(F.col("__content") == F.first("__content").over(winner), F.lit(DUPLICATE))
        .otherwise(F.lit(CONFLICT))
    )
    null_key = F.lit(False)
    for key in keys:
        null_key = null_key | F.col(key).isNull()
    return (
        rows.withColumn("__content", row_fingerprint(content))
        .withColumn("__rank", F.when(null_key, F.lit(1)).otherwise(F.row_number().over(window)))
        .withColumn(VERSION_OUTCOME, F.when(null_key, F.lit(KEPT)).otherwise(outcome))
        .drop("__content", "__rank")
    )


def keep_latest(
    rows: DataFrame,
    *,
    keys: Sequence[str],
    version: Sequence[str],
    tie_break: Sequence[Column] = (),
    content: Sequence[str | Column],
) -> DataFrame:
    """Keep one row per key: the winner of :func:`rank_versions` (same arguments).

    Returns:
        The same columns, one row per key (rows with a null key are all kept).
    """
    ranked = rank_versions(rows, keys=keys, version=version, tie_break=tie_break, content=content)
    return ranked.where(F.col(VERSION_OUTCOME) == KEPT).drop(VERSION_OUTCOME)


def count_outcomes(ranked: DataFrame) -> dict[str, int]:
    """Rows per ``_version_outcome`` of :func:`rank_versions` (collects one small aggregate row)."""
    row = ranked.agg(*[F.count_if(F.col(VERSION_OUTCOME) == name).alias(name) for name in OUTCOMES]).first()
    return {name: int(row[name] or 0) for name in OUTCOMES} if row else dict.fromkeys(OUTCOMES, 0)
