"""Column helpers (``Column -> Column``) shared by the silver transformations, plus the
one generic row-selection transform, :func:`keep_latest`.

Every parser has *try-cast* semantics: a value that does not parse becomes null (never an
error, never a default), so a quality rule can compare the typed value with the raw text
and quarantine the row. Spark's ANSI mode is on, so plain casts would raise instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

__all__ = [
    "clean_string",
    "keep_latest",
    "lower_code",
    "parse_boolean",
    "parse_date",
    "parse_decimal",
    "parse_int",
    "parse_timestamp",
    "row_fingerprint",
    "upper_code",
    "utc_date",
]

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


def parse_decimal(column: Column | str, data_type: T.DecimalType) -> Column:
    """A decimal text (dot as separator) as ``data_type``; null when it does not parse or overflows."""
    return clean_string(column).try_cast(data_type)


def parse_int(column: Column | str) -> Column:
    """An integer text as ``int``; null for ``2.5``, ``abc`` or an overflow."""
    return clean_string(column).try_cast(T.IntegerType())


def parse_boolean(column: Column | str) -> Column:
    """``true``/``false`` (also ``t``/``f``, ``yes``/``no``, ``1``/``0``, any case) as boolean; else null."""
    return F.lower(clean_string(column)).try_cast(T.BooleanType())


def row_fingerprint(columns: Sequence[str]) -> Column:
    """SHA-256 (hex) of the JSON of ``columns``: a deterministic tie-breaker and row identity."""
    return F.sha2(F.to_json(F.struct(*[F.col(c) for c in columns])), 256)


def keep_latest(rows: DataFrame, *, keys: Sequence[str], order_by: Sequence[Column]) -> DataFrame:
    """Keep one row per key: the first by ``order_by`` (newest first, e.g. ``F.col("updated_at").desc()``).

    Ties left by ``order_by`` are broken by the row's content fingerprint, so the same input
    always keeps the same row whatever its partitioning.

    Args:
        rows: Any frame holding ``keys``.
        keys: The key columns; null keys form one group per distinct null pattern.
        order_by: Sort expressions, newest first; nulls sort as Spark orders them.

    Returns:
        The same columns, one row per key.
    """
    content = [c for c in rows.columns]
    window = Window.partitionBy(*keys).orderBy(*order_by, row_fingerprint(content).desc())
    return rows.withColumn("__rank", F.row_number().over(window)).where(F.col("__rank") == 1).drop("__rank")
