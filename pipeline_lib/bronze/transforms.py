"""Bronze transformations: delivered records to the bronze contract, with lineage.

Pure functions, DataFrame in, DataFrame out. Reading the files is done by
:mod:`pipeline_lib.io.landing`; writing by the bronze jobs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

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

REPLACEMENT_CHAR = "\ufffd"  # what the UTF-8 decoder puts where a byte sequence was invalid
NUL_CHAR = "\u0000"
_RAW_LINE = "__raw_line"


def rescued_fields(extra_columns: Sequence[str]) -> Column:
    """JSON text of the non-null values of ``extra_columns``, or null when there are none.

    Fields outside the contract are never dropped silently: bronze keeps them here.
    """
    if not extra_columns:
        return F.lit(None).cast(T.StringType())
    as_map = F.map_filter(
        F.create_map(*[part for name in extra_columns for part in (F.lit(name), F.col(f"`{name}`"))]),
        lambda _key, value: value.isNotNull(),
    )
    return F.when(F.size(as_map) > 0, F.to_json(as_map))


def align_csv_to_contract(
    delivered: DataFrame, *, source: LandingSource, keep: Sequence[str] = ()
) -> DataFrame:
    """Map a CSV delivery read with its own header onto the source's contract.

    Args:
        delivered: String columns named by the file's header, plus ``_corrupt_record``.
        source: The landing source whose contract fields to keep.

        keep: Columns passed through as they are (a row's file, for lineage).

    Returns:
        The contract fields (null where the file lacks a column), ``_rescued_data`` with
        the file's extra columns as JSON text, ``_corrupt_record`` and ``keep``. One row per
        data row.
    """
    present = set(delivered.columns)
    extras = [
        c for c in delivered.columns if c not in source.fields and c != CORRUPT_RECORD and c not in keep
    ]
    contract = [
        (F.col(f"`{name}`") if name in present else F.lit(None)).cast(T.StringType()).alias(name)
        for name in source.fields
    ]
    corrupt = F.col(CORRUPT_RECORD) if CORRUPT_RECORD in present else F.lit(None).cast(T.StringType())
    return delivered.select(
        *contract, rescued_fields(extras).alias(RESCUED_DATA), corrupt.alias(CORRUPT_RECORD), *keep
    )


def parse_json_lines(
    lines: DataFrame, *, source: LandingSource, keep: Sequence[str] = (), keep_blank: bool = False
) -> DataFrame:
    """Parse JSON Lines text into the source's contract, keeping what does not fit.

    Args:
        lines: One row per line, the text in column ``value``. Blank lines are dropped
            (JSON Lines allows them; they hold no record).
        source: The landing source whose contract fields to parse.
        keep: Columns of ``lines`` passed through as they are (a row's file, for lineage).
        keep_blank: Keep blank values as corrupt records instead of dropping them: a Kafka
            message is one record, and an empty one is a malformed message, not a blank line.
            Any value that parses to no record at all is then kept in ``_corrupt_record`` too.

    Returns:
        Every contract field as a string (a nested object or array as its JSON text),
        ``_rescued_data`` (JSON text of the top-level fields outside the contract, or
        null), ``_corrupt_record`` (the raw line when it is not a JSON object) and ``keep``.
    """
    schema = T.StructType([*source.delivered_schema.fields, T.StructField(CORRUPT_RECORD, T.StringType())])
    options = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT_RECORD}
    known = F.array(*[F.lit(name) for name in source.fields])
    everything = F.from_json("value", "map<string,string>")
    extras = F.map_filter(everything, lambda key, _value: ~F.array_contains(known, key))
    kept = lines if keep_blank else lines.where(F.trim(F.col("value")) != "")
    parsed = kept.select(
        F.from_json("value", schema, options).alias("record"),
        F.when(F.size(extras) > 0, F.to_json(extras)).alias(RESCUED_DATA),
        F.col("value").alias(_RAW_LINE),
        *keep,
    )
    corrupt = F.col(f"record.{CORRUPT_RECORD}")
    if keep_blank:
        corrupt = F.coalesce(corrupt, F.when(F.col("record").isNull(), F.col(_RAW_LINE)))
    return parsed.select(
        *[F.col(f"record.{name}").alias(name) for name in source.fields],
        RESCUED_DATA,
        corrupt.alias(CORRUPT_RECORD),
        *keep,
    )


def with_lineage(
    records: DataFrame, *, source_file: str, ingest_date: dt.date, ingested_at: dt.datetime, run_id: str
) -> DataFrame:
    """Add the lineage columns ``_source_file``, ``_ingest_date``, ``_ingested_at`` and ``_run_id``."""
    return records.select(
        "*",
        F.lit(source_file).alias(SOURCE_FILE),
        F.lit(ingest_date).cast(T.DateType()).alias(INGEST_DATE),
    ).transform(with_run_lineage, ingested_at=ingested_at, run_id=run_id)


def with_run_lineage(records: DataFrame, *, ingested_at: dt.datetime, run_id: str) -> DataFrame:
    """Add ``_ingested_at`` and ``_run_id`` to rows that already name their file and delivery."""
    return records.select(
        "*", F.lit(ingested_at).cast(T.TimestampType()).alias(INGESTED_AT), F.lit(run_id).alias(RUN_ID)
    )


def conform_to_bronze(records: DataFrame, *, source: LandingSource) -> DataFrame:
    """Select and cast the bronze contract (the final step of every bronze transform)."""
    return records.select(
        *[F.col(f.name).cast(f.dataType).alias(f.name) for f in source.bronze_schema.fields]
    )


def file_stats(bronze_rows: DataFrame, *, source: LandingSource) -> DataFrame:
    """Per delivered file: rows, corrupt rows, rows with rescued fields, rows with invalid UTF-8 or NUL.

    Args:
        bronze_rows: Rows of a bronze table (the contract fields and lineage columns).

    Returns:
        One row per ``_source_file``: ``rows``, ``corrupt_rows``, ``rescued_rows``,
        ``invalid_utf8_rows``, ``nul_rows``.
    """
    text = F.concat_ws("\u0001", *[F.coalesce(F.col(c), F.lit("")) for c in (*source.fields, CORRUPT_RECORD)])
    return bronze_rows.groupBy(SOURCE_FILE).agg(
        F.count(F.lit(1)).alias("rows"),
        F.count(CORRUPT_RECORD).alias("corrupt_rows"),
        F.count(RESCUED_DATA).alias("rescued_rows"),
        F.sum(F.when(F.instr(text, REPLACEMENT_CHAR) > 0, 1).otherwise(0)).alias("invalid_utf8_rows"),
        F.sum(F.when(F.instr(text, NUL_CHAR) > 0, 1).otherwise(0)).alias("nul_rows"),
    )
