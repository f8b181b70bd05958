"""Gold aggregates as of a date: ``customer_segments`` (RFM) and ``product_popularity``.

Each run computes ONE as-of date (``--as-of``, else the latest order date in
silver.orders) from the silver tables and replaces exactly that date's partition of
``<lake>/gold/<table>`` (partitioned by ``as_of_date``, Delta ``replaceWhere``); the other
as-of dates stay. When the partition already holds the same rows, nothing is written, so
a re-run commits nothing. ``--full-refresh`` rewrites the partition unconditionally (the
content is the same: every run recomputes the as-of date from silver). See
``docs/segments_and_popularity.md``.

    ecom-pipeline run --layer gold --job customer_segments --as-of 2026-03-07
    ecom-pipeline run --layer gold --job product_popularity
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.framework import JobContext, JobResult, job
from pipeline_lib.delta_io import read_table, table_exists, table_version, write_table
from pipeline_lib.gold.popularity import product_popularity
from pipeline_lib.gold.segments import customer_segments
from pipeline_lib.watermarks import CDF_PROPERTIES

AS_OF_COLUMN = "as_of_date"


class MissingInputError(RuntimeError):
    """A silver table the aggregate needs is missing, or no as-of date can be derived."""


# --- I/O helpers (reads, bounded metadata, writes) -------------------------------------------


def read_silver(ctx: JobContext, table: str) -> DataFrame:
    """The current version of ``<lake>/silver/<table>``.

    Raises:
        MissingInputError: The table does not exist (the silver layer has not run).
    """
    path = ctx.path("silver", table)
    if not table_exists(ctx.spark, path):
        raise MissingInputError(f"no Delta table silver.{table} at {path}: run the silver layer first")
    return read_table(ctx.spark, path)


def collect_order_stats(orders: DataFrame) -> tuple[dt.date | None, int]:
    """The latest ``order_date`` and the number of rows of silver.orders (one aggregate row)."""
    row = orders.agg(F.max("order_date").alias("latest"), F.count(F.lit(1)).alias("rows")).first()
    return (None, 0) if row is None else (row["latest"], int(row["rows"]))


def resolve_as_of(ctx: JobContext, orders: DataFrame) -> tuple[dt.date, int]:
    """``ctx.as_of``, else the latest order date of silver.orders; and the orders' row count.

    Raises:
        MissingInputError: No as-of date was given and silver.orders has no dated order.
    """
    latest, rows = collect_order_stats(orders)
    if ctx.as_of is not None:
        return ctx.as_of, rows
    if latest is None:
        raise MissingInputError("no --as-of given and silver.orders holds no order date to default to")
    return latest, rows


def _as_of_predicate(as_of: dt.date) -> str:
    return f"{AS_OF_COLUMN} = DATE'{as_of.isoformat()}'"


def partition_is_unchanged(rows: DataFrame, path: str, as_of: dt.date) -> bool:
    """True when the table's ``as_of`` partition holds exactly ``rows`` (as a multiset).

    Compares with ``exceptAll`` both ways (one Spark job) on that one partition, so duplicates
    count. A table without one of the columns of ``rows`` counts as changed.
    """
    spark = rows.sparkSession
    if not table_exists(spark, path):
        return False
    stored = read_table(spark, path).where(F.expr(_as_of_predicate(as_of)))
    if any(column not in stored.columns for column in rows.columns):
        return False
    stored = stored.select(*rows.columns)
    differences = rows.exceptAll(stored).unionByName(stored.exceptAll(rows))
    return differences.isEmpty()


def replace_as_of_partition(rows: DataFrame, path: str, as_of: dt.date) -> None:
    """Replace the ``as_of`` partition of the table at ``path`` with ``rows`` (one commit).

    Creates the table (partitioned by ``as_of_date``, change data feed on) when missing.
    Delta checks that every written row matches the ``replaceWhere`` predicate.
    """
    if not table_exists(rows.sparkSession, path):
        write_table(rows, path, mode="overwrite", partition_by=[AS_OF_COLUMN], properties=CDF_PROPERTIES)
        return
    (
        rows.write.format("delta")
        .mode("overwrite")
        .partitionBy(AS_OF_COLUMN)
        .option("replaceWhere", _as_of_predicate(as_of))
        .save(path)
    )


def publish_as_of(ctx: JobContext, rows: DataFrame, table: str, as_of: dt.date, rows_read: int) -> JobResult:
    """Write one as-of partition of ``<lake>/gold/<table>`` unless it already holds ``rows``."""
    path = ctx.path("gold", table)
    rows = rows.persist()
    try:
        count = rows.count()
        if not ctx.full_refresh and partition_is_unchanged(rows, path, as_of):
            ctx.progress(f"gold.{table}: as of {as_of}: {count} rows, unchanged; nothing written")
            written, outcome = 0, "unchanged"
        else:
            replace_as_of_partition(rows, path, as_of)
            ctx.progress(f"gold.{table}: as of {as_of}: {count} rows written")
            written, outcome = count, "replaced"
    finally:
        rows.unpersist()
    version = table_version(ctx.spark, path)
    return JobResult(
        rows_read=rows_read,
        rows_written=written,
        delta_versions={} if version is None else {path: version},
        details={"as_of_date": as_of.isoformat(), "partition": outcome, "partition_rows": count},
    )


# --- Jobs ------------------------------------------------------------------------------------


@job("gold", "customer_segments")
def build_customer_segments(ctx: JobContext) -> JobResult:
    """RFM scores and segment per customer as of a date (rows_read: silver.orders rows)."""
    orders = read_silver(ctx, "orders")
    order_items = read_silver(ctx, "order_items")
    as_of, rows_read = resolve_as_of(ctx, orders)
    segments_config = ctx.config.segments
    segments = customer_segments(
        orders,
        order_items=order_items,
        as_of=as_of,
        score_buckets=segments_config.score_buckets,
        mapping=[(rule.segment, rule.when) for rule in segments_config.mapping],
    )
    return publish_as_of(ctx, segments, "customer_segments", as_of, rows_read)


@job("gold", "product_popularity")
def build_product_popularity(ctx: JobContext) -> JobResult:
    """Views, carts, purchases, revenue and ranks per product and window as of a date."""
    orders = read_silver(ctx, "orders")
    order_items = read_silver(ctx, "order_items")
    clicks = read_silver(ctx, "clicks")
    products = read_silver(ctx, "products")
    as_of, rows_read = resolve_as_of(ctx, orders)
    popularity = product_popularity(
        clicks,
        orders=orders,
        order_items=order_items,
        products=products,
        as_of=as_of,
        windows_days=ctx.config.pipeline.popularity_windows_days,
    )
    return publish_as_of(ctx, popularity, "product_popularity", as_of, rows_read)
