"""Reference exchange rates: cleaning, de-duplication and the as-of rate lookup."""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from pipeline_lib.bronze.schemas import INGEST_DATE
from pipeline_lib.silver.common import keep_latest, parse_date, parse_decimal, upper_code
from pipeline_lib.silver.schemas import RATE, SILVER_SCHEMAS

__all__ = ["clean_fx_rates", "dedupe_fx_rates", "to_silver_fx_rates", "with_fx_rate"]

BRONZE = "_bronze"


def clean_fx_rates(bronze: DataFrame) -> DataFrame:
    """Type the bronze rates.

    Args:
        bronze: Bronze ``fx_rates`` rows (all strings plus lineage).

    Returns:
        One row per bronze row: ``rate_date`` (date), ``currency`` (upper case),
        ``rate_to_base`` (decimal(18,8), rounded half up to 8 decimals), lineage, and
        ``_bronze`` (the bronze row as delivered). Values that do not parse are null.
    """
    return bronze.select(
        parse_date("rate_date").alias("rate_date"),
        upper_code("currency").alias("currency"),
        parse_decimal("rate_to_base", RATE, exact=False).alias("rate_to_base"),
        "_source_file",
        "_ingest_date",
        "_run_id",
        F.struct(*[F.col(c) for c in bronze.columns]).alias(BRONZE),
    )


def dedupe_fx_rates(rates: DataFrame) -> DataFrame:
    """One rate per ``(rate_date, currency)``: the latest delivery's (a correction wins); two
    rates in one delivery: the content hash decides (the quality rules quarantine the second)."""
    return keep_latest(
        rates,
        keys=["rate_date", "currency"],
        version=[INGEST_DATE],
        content=["rate_date", "currency", "rate_to_base"],
    )


def to_silver_fx_rates(rates: DataFrame) -> DataFrame:
    """The silver ``fx_rates`` contract (``SILVER_SCHEMAS['fx_rates']``)."""
    return rates.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in SILVER_SCHEMAS["fx_rates"]])


def with_fx_rate(
    rows: DataFrame,
    *,
    rates: DataFrame,
    base_currency: str,
    date_col: str = "order_date",
    currency_col: str = "currency",
    rate_col: str = "fx_rate_to_base",
) -> DataFrame:
    """Add the as-of rate: the rate of ``date_col`` for the currency, or the latest earlier one.

    The base currency always gets 1, with or without a rate row. A row with no rate on or
    before its date (or a null date or currency) gets null, never 0: a quality rule
    quarantines it.

    Implemented as one sort of rates and rows together per currency (a rate sorts before a
    row of the same date), then the last non-null rate so far: no range join.

    Args:
        rows: Any frame holding ``date_col`` (date) and ``currency_col``.
        rates: Silver rates: ``rate_date``, ``currency``, ``rate_to_base`` (unique per date
            and currency).
        base_currency: The ISO code whose rate is 1.

    Returns:
        ``rows`` with ``rate_col`` (decimal(18,8)) added; same grain.
    """
    rate_events = rates.select(
        F.col("currency").alias("__fx_currency"),
        F.col("rate_date").alias("__fx_date"),
        F.lit(0).alias("__fx_kind"),
        F.col("rate_to_base").cast(RATE).alias("__fx_rate"),
    )
    row_events = rows.withColumns(
        {
            "__fx_currency": F.col(currency_col),
            "__fx_date": F.col(date_col),
            "__fx_kind": F.lit(1),
            "__fx_rate": F.lit(None).cast(RATE),
        }
    )
    as_of = (
        Window.partitionBy("__fx_currency")
        .orderBy(F.col("__fx_date").asc(), F.col("__fx_kind").asc())
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    latest_rate = F.last("__fx_rate", ignorenulls=True).over(as_of)
    rate = (
        F.when(F.col(currency_col) == F.lit(base_currency), F.lit(1).cast(RATE))
        .when(F.col(date_col).isNotNull(), latest_rate)
        .otherwise(F.lit(None).cast(RATE))
    )
    return (
        row_events.unionByName(rate_events, allowMissingColumns=True)
        .withColumn(rate_col, rate)
        .where(F.col("__fx_kind") == 1)
        .drop("__fx_currency", "__fx_date", "__fx_kind", "__fx_rate")
    )
