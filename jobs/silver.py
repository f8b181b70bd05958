"""Silver jobs: typed, validated, de-duplicated tables with history, from bronze.

Each job is a recipe: read the bronze rows appended since the last run (change data feed
and a watermark), clean them, check the quality rules, write quarantine and metrics,
merge into ``<lake>/silver/<table>``, and save the watermark last. With no new bronze
rows a job writes nothing. ``--full-refresh`` re-reads all bronze and overwrites the
silver table (quarantine stays idempotent). Every job reconciles its counts: bronze rows
read = written + quarantined + duplicates removed + superseded/unchanged, recorded in
``JobResult.details``; a mismatch fails the job. See docs/silver.md.

Submit: ``./spark-submit.sh -- run --layer silver [--job orders]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.framework import JobContext, JobResult, job
from pipeline_lib.delta_io import (
    read_table,
    replace_groups,
    table_exists,
    table_version,
    upsert,
    write_table,
)
from pipeline_lib.frames import local_frame
from pipeline_lib.history import FROM_INCOMING, IS_CURRENT, VALID_TO, build_scd2_history
from pipeline_lib.privacy import hmac_key
from pipeline_lib.quality import enforce_thresholds, quality_metrics, split_by_quality, with_rule_results
from pipeline_lib.quality_io import measured_once, write_quality_metrics, write_quarantine
from pipeline_lib.schemas import INGEST_DATE, SILVER_SCHEMAS, SOURCE_FILE
from pipeline_lib.transforms.customers import (
    PII_COLUMNS,
    clean_customers,
    to_silver_customers,
    with_email_hash,
)
from pipeline_lib.transforms.fx import clean_fx_rates, dedupe_fx_rates, to_silver_fx_rates, with_fx_rate
from pipeline_lib.transforms.orders import (
    SUPERSEDED,
    clean_order_items,
    clean_orders,
    dedupe_order_items,
    dedupe_orders,
    order_versions,
    to_silver_order_items,
    to_silver_orders,
    with_line_amounts,
    with_order_version,
    with_shipping_fee_base,
    with_superseded_flag,
)
from pipeline_lib.transforms.products import (
    clean_products,
    dedupe_products,
    to_silver_products,
    with_delisted_products,
)
from pipeline_lib.watermarks import (
    CDF_PROPERTIES,
    last_processed_version,
    read_appended_rows,
    save_processed_version,
)


def _newest_delivery_first() -> list[Any]:
    return [F.col(INGEST_DATE).desc(), F.col(SOURCE_FILE).desc()]


@dataclass
class _Batch:
    rows: DataFrame
    source_path: str
    latest_version: int
    read: int  # the number of rows: counted once, they are reconciled at the end


@job("silver", "fx_rates")
def fx_rates(ctx: JobContext) -> JobResult:
    """Reference rates: one per date and currency, the latest delivery's."""
    batch = _new_bronze_rows(ctx, "fx_rates", "fx_rates")
    if batch is None:
        return _nothing_to_do()
    valid, quarantined = _check_quality(ctx, "fx_rates", batch.rows.transform(clean_fx_rates))
    rates = valid.transform(dedupe_fx_rates).transform(to_silver_fx_rates).localCheckpoint()
    written = rates.count()
    path = ctx.path("silver", "fx_rates")
    if ctx.full_refresh:
        write_table(rates, path, mode="overwrite", properties=CDF_PROPERTIES, overwrite_schema=True)
    else:
        upsert(
            rates,
            path,
            keys=["rate_date", "currency"],
            properties=CDF_PROPERTIES,
            update_condition=f"s.{INGEST_DATE} >= t.{INGEST_DATE}",
        )
    counts = {"duplicates_removed": valid.count() - written}
    return _finish(ctx, "fx_rates", batch, path, written=written, quarantined=quarantined, counts=counts)


@job("silver", "customers")
def customers(ctx: JobContext) -> JobResult:
    """Customers as SCD type 2; personal data in clear only here, and out of column statistics."""
    batch = _new_bronze_rows(ctx, "customers", "customers")
    if batch is None:
        return _nothing_to_do()
    key = hmac_key(
        ctx.config.privacy.hmac_key_env, allow_insecure_default=ctx.config.privacy.allow_insecure_default_key
    )
    cleaned = batch.rows.transform(
        clean_customers, source_timezone=ctx.config.pipeline.source_timezone
    ).transform(with_email_hash, key=key)
    valid, quarantined = _check_quality(ctx, "customers", cleaned)
    path = ctx.path("silver", "customers")
    incoming = _as_versions(valid, to_silver_customers)
    properties = {**CDF_PROPERTIES, "delta.dataSkippingStatsColumns": ",".join(_stats_columns("customers"))}
    counts, written = _merge_history(
        ctx,
        incoming,
        path,
        table="customers",
        keys=["customer_id"],
        tracked=ctx.config.history.customers_tracked,
        properties=properties,
    )
    return _finish(ctx, "customers", batch, path, written=written, quarantined=quarantined, counts=counts)


@job("silver", "products")
def products(ctx: JobContext) -> JobResult:
    """Products as SCD type 2 from full catalogue snapshots; a missing product is delisted."""
    batch = _new_bronze_rows(ctx, "catalogue", "products")
    if batch is None:
        return _nothing_to_do()
    cleaned = batch.rows.transform(clean_products, source_timezone=ctx.config.pipeline.source_timezone)
    valid, quarantined = _check_quality(ctx, "products", cleaned)
    snapshot_rows = valid.transform(dedupe_products).localCheckpoint()
    duplicates = valid.count() - snapshot_rows.count()
    path = ctx.path("silver", "products")
    current = _existing(ctx, path, "products").where(F.col(IS_CURRENT))
    with_delistings = snapshot_rows.transform(with_delisted_products, current=current)
    incoming = _as_versions(with_delistings, to_silver_products)
    counts, written = _merge_history(
        ctx,
        incoming,
        path,
        table="products",
        keys=["product_id"],
        tracked=(*ctx.config.history.products_tracked, "is_delisted"),
        properties=CDF_PROPERTIES,
    )
    counts["duplicates_removed"] += duplicates
    return _finish(ctx, "products", batch, path, written=written, quarantined=quarantined, counts=counts)


@job("silver", "orders")
def orders(ctx: JobContext) -> JobResult:
    """Orders, current state: the greatest updated_at wins, valued at the order date's rate."""
    batch = _new_bronze_rows(ctx, "orders", "orders")
    if batch is None:
        return _nothing_to_do()
    rates = _existing(ctx, ctx.path("silver", "fx_rates"), "fx_rates", full=True)
    cleaned = batch.rows.transform(
        clean_orders, source_timezone=ctx.config.pipeline.source_timezone
    ).transform(with_fx_rate, rates=rates, base_currency=ctx.config.pipeline.base_currency)
    valid, quarantined = _check_quality(ctx, "orders", cleaned)
    latest = valid.transform(dedupe_orders).localCheckpoint()
    valid_rows = valid.count()
    duplicates = valid_rows - latest.count()
    path = ctx.path("silver", "orders")
    if not ctx.full_refresh and table_exists(ctx.spark, path):
        recorded = read_table(ctx.spark, path).select("order_id", F.col("updated_at").alias("__recorded"))
        newer = latest.join(recorded, on="order_id", how="left").where(
            F.col("__recorded").isNull() | (F.col("updated_at") > F.col("__recorded"))
        )
        latest = newer.drop("__recorded").localCheckpoint()
    silver_orders = latest.transform(with_shipping_fee_base).transform(to_silver_orders)
    written = silver_orders.count()
    if ctx.full_refresh:
        write_table(silver_orders, path, mode="overwrite", properties=CDF_PROPERTIES, overwrite_schema=True)
    elif written:
        upsert(
            silver_orders,
            path,
            keys=["order_id"],
            properties=CDF_PROPERTIES,
            update_condition="s.updated_at > t.updated_at",
        )
    counts = {"duplicates_removed": duplicates, "superseded": valid_rows - duplicates - written}
    return _finish(ctx, "orders", batch, path, written=written, quarantined=quarantined, counts=counts)


@job("silver", "order_items")
def order_items(ctx: JobContext) -> JobResult:
    """Order lines of each order's latest version, with net amounts in order and base currency."""
    batch = _new_bronze_rows(ctx, "order_items", "order_items")
    if batch is None:
        return _nothing_to_do()
    spark = ctx.spark
    orders_path, path = ctx.path("silver", "orders"), ctx.path("silver", "order_items")
    current_orders = _existing(ctx, orders_path, "orders", full=True)
    delivered = _orders_delivered_with(ctx, batch.rows)
    cleaned = batch.rows.transform(clean_order_items).transform(
        with_order_version, delivered=delivered, current_orders=current_orders
    )
    references = {
        "orders": current_orders,
        "products": _existing(ctx, ctx.path("silver", "products"), "products", full=True),
    }
    valid, quarantined = _check_quality(ctx, "order_items", cleaned, references=references)
    recorded = (
        read_table(spark, path).groupBy("order_id").agg(F.max("order_updated_at").alias("recorded_version"))
        if table_exists(spark, path) and not ctx.full_refresh
        else local_frame(spark, [], "order_id string, recorded_version timestamp")
    )
    flagged = valid.transform(with_superseded_flag, recorded_versions=recorded).localCheckpoint()
    superseded = flagged.where(F.col(SUPERSEDED)).count()
    winning = flagged.where(~F.col(SUPERSEDED))
    lines = (
        winning.transform(dedupe_order_items).transform(with_line_amounts).transform(to_silver_order_items)
    ).localCheckpoint()
    written = lines.count()
    if ctx.full_refresh:
        write_table(lines, path, mode="overwrite", properties=CDF_PROPERTIES, overwrite_schema=True)
    elif written:
        replace_groups(lines, path, row_keys=["order_id", "line_no"], properties=CDF_PROPERTIES)
    counts = {"duplicates_removed": winning.count() - written, "superseded": superseded}
    return _finish(ctx, "order_items", batch, path, written=written, quarantined=quarantined, counts=counts)


# --- shared steps (I/O and bookkeeping; the logic lives in pipeline_lib) -----------------


def _consumer(table: str) -> str:
    return f"silver.{table}"


def _new_bronze_rows(ctx: JobContext, source: str, table: str) -> _Batch | None:
    """The bronze rows appended since this job's watermark (all of them on a full refresh)."""
    path = ctx.path("bronze", source)
    if not table_exists(ctx.spark, path):
        ctx.progress(f"silver.{table}: no bronze table at {path}; nothing to do")
        return None
    after = (
        None
        if ctx.full_refresh
        else last_processed_version(ctx.spark, ctx.config.paths.lake, _consumer(table), f"bronze.{source}")
    )
    rows, latest = read_appended_rows(ctx.spark, path, after)
    read = 0 if latest is None else rows.count()
    if not read:
        return None
    return _Batch(rows=rows, source_path=path, latest_version=latest, read=read)


def _check_quality(
    ctx: JobContext, table: str, rows: DataFrame, *, references: Mapping[str, DataFrame] | None = None
) -> tuple[DataFrame, int]:
    """Check the rules, write quarantine and metrics, enforce thresholds; return the valid rows."""
    rules = ctx.config.quality.rules_for(table)
    checked = with_rule_results(rows, rules, references=references).localCheckpoint()
    metrics = measured_once(quality_metrics(checked, rules, table=table, run_id=ctx.run_id))
    write_quality_metrics(metrics, ctx.config.paths.lake)
    valid, quarantined = split_by_quality(checked)
    write_quarantine(quarantined, ctx.config.paths.lake, table, run_id=ctx.run_id)
    enforce_thresholds(metrics, rules, default_threshold=ctx.config.quality.fail_threshold)
    return valid, quarantined.count()


def _existing(ctx: JobContext, path: str, table: str, *, full: bool = False) -> DataFrame:
    """A silver table as recorded.

    On a full refresh it is empty, unless ``full``: set it for another table, which the same
    run has already rebuilt (fx rates for orders, orders and products for order lines).
    """
    if table_exists(ctx.spark, path) and (full or not ctx.full_refresh):
        return read_table(ctx.spark, path)
    return local_frame(ctx.spark, [], SILVER_SCHEMAS[table])


def _orders_delivered_with(ctx: JobContext, items: DataFrame) -> DataFrame:
    """Order versions in the bronze order deliveries of the same ingest dates as ``items``."""
    orders_path = ctx.path("bronze", "orders")
    if not table_exists(ctx.spark, orders_path):
        return local_frame(
            ctx.spark, [], f"order_id string, {INGEST_DATE} date, delivered_updated_at timestamp"
        )
    dates = [row[0] for row in items.select(INGEST_DATE).distinct().collect()]  # bounded: deliveries
    bronze_orders = read_table(ctx.spark, orders_path).where(F.col(INGEST_DATE).isin(dates))
    return bronze_orders.transform(
        clean_orders, source_timezone=ctx.config.pipeline.source_timezone
    ).transform(order_versions)


def _as_versions(rows: DataFrame, to_contract: Any) -> DataFrame:
    """Contract columns of new SCD2 versions (``valid_to``/``is_current`` are left to the history)."""
    placeholders = {VALID_TO: F.lit(None).cast("timestamp"), IS_CURRENT: F.lit(None).cast("boolean")}
    return to_contract(rows.withColumns(placeholders)).drop(VALID_TO, IS_CURRENT)


def _merge_history(
    ctx: JobContext,
    incoming: DataFrame,
    path: str,
    *,
    table: str,
    keys: Sequence[str],
    tracked: Sequence[str],
    properties: dict[str, str],
) -> tuple[dict[str, int], int]:
    """Rebuild the SCD2 history of the keys in ``incoming`` and replace them in the table."""
    existing = _existing(ctx, path, table)
    incoming = incoming.localCheckpoint()
    history = build_scd2_history(
        existing, incoming, keys=keys, tracked=tracked, prefer=_newest_delivery_first()
    ).localCheckpoint()
    # Rows from bronze carry their rule flags (an array, maybe empty); generated delisted rows carry null.
    # Each count is one query: rows received and their distinct version starts (a group by
    # counts nulls as a value, as distinct() does), then new and delisted versions.
    received, distinct_starts = (
        incoming.where(F.col("_dq_flags").isNotNull())
        .groupBy(*keys, "valid_from")
        .count()
        .agg(F.coalesce(F.sum("count"), F.lit(0)), F.count(F.lit(1)))
        .first()
    )
    delisted = F.col("is_delisted") if "is_delisted" in history.columns else F.lit(False)
    new_versions, delisted_versions = history.agg(
        F.count_if(F.col(FROM_INCOMING)), F.count_if(F.col(FROM_INCOMING) & delisted)
    ).first()
    rows = history.drop(FROM_INCOMING)
    if ctx.full_refresh or not table_exists(ctx.spark, path):
        write_table(rows, path, mode="overwrite", properties=properties, overwrite_schema=ctx.full_refresh)
    elif _differs(rows, existing.join(rows.select(*keys).distinct(), on=list(keys), how="left_semi")):
        affected = rows.select(*keys).distinct()
        replace_groups(rows, path, row_keys=[*keys, "valid_from"], scope=affected, properties=properties)
    from_bronze_versions = new_versions - delisted_versions
    counts = {
        "duplicates_removed": received - distinct_starts,
        "unchanged": distinct_starts - from_bronze_versions,
        "new_versions": from_bronze_versions,
        "delisted_versions": delisted_versions,
    }
    return counts, from_bronze_versions


def _differs(rows: DataFrame, recorded: DataFrame) -> bool:
    """True when ``rows`` and ``recorded`` (same columns) differ as multisets: skip no-op MERGEs."""
    columns = rows.columns
    return not (
        rows.exceptAll(recorded.select(*columns)).isEmpty()
        and recorded.select(*columns).exceptAll(rows).isEmpty()
    )


def _stats_columns(table: str) -> list[str]:
    """Columns of a silver table that Delta may keep min/max statistics of: none with personal data."""
    excluded = {*PII_COLUMNS, "postal_code", "city"}
    # Delta keeps statistics of atomic types only (no booleans, arrays or structs).
    kept = (T.StringType, T.DateType, T.TimestampType, T.DecimalType, T.IntegerType, T.LongType)
    return [f.name for f in SILVER_SCHEMAS[table] if f.name not in excluded and isinstance(f.dataType, kept)]


def _nothing_to_do() -> JobResult:
    return JobResult(details={"skipped": "no new bronze rows"})


def _finish(
    ctx: JobContext,
    table: str,
    batch: _Batch,
    path: str,
    *,
    written: int,
    quarantined: int,
    counts: dict[str, int],
) -> JobResult:
    """Reconcile, save the watermark (last), and report."""
    read = batch.read
    accounted = (
        written
        + quarantined
        + sum(v for k, v in counts.items() if k != "delisted_versions" and k != "new_versions")
    )
    details: dict[str, Any] = {
        "bronze_rows_read": read,
        "written": written,
        "quarantined": quarantined,
        **counts,
        "reconciled": read == accounted,
        "bronze_version": batch.latest_version,
    }
    if read != accounted:
        raise RuntimeError(f"silver.{table}: reconciliation failed: {details}")
    source_name = batch.source_path.rstrip("/").rsplit("/", 1)[-1]
    save_processed_version(
        ctx.spark,
        ctx.config.paths.lake,
        _consumer(table),
        f"bronze.{source_name}",
        batch.latest_version,
        ctx.run_id,
    )
    versions = {
        p: v for p in (path, ctx.path("quarantine", table)) if (v := table_version(ctx.spark, p)) is not None
    }
    return JobResult(
        rows_read=read,
        rows_written=written,
        rows_quarantined=quarantined,
        delta_versions=versions,
        details=details,
    )
