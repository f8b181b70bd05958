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

from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline_lib.bronze.schemas import INGEST_DATE, SOURCE_FILE
from pipeline_lib.io.delta import read_table, replace_groups, table_exists
from pipeline_lib.io.frames import local_frame
from pipeline_lib.io.quality import resolve_quarantined
from pipeline_lib.ops.context import JobContext, JobResult
from pipeline_lib.ops.watermarks import CDF_PROPERTIES
from pipeline_lib.privacy.pii import hmac_key
from pipeline_lib.silver.common import (
    CONFLICT,
    DUPLICATE,
    KEPT,
    SUPERSEDED,
    VERSION_OUTCOME,
    clean_string,
    count_outcomes,
)
from pipeline_lib.silver.customers import clean_customers, to_silver_customers, with_email_hash
from pipeline_lib.silver.deletions import DELETED_AT, clean_deletions, deleted_rows, without_deleted
from pipeline_lib.silver.fx import clean_fx_rates, dedupe_fx_rates, to_silver_fx_rates, with_fx_rate
from pipeline_lib.silver.history import IS_CURRENT
from pipeline_lib.silver.orders import (
    IS_SUPERSEDED,
    clean_order_items,
    clean_orders,
    compare_with_recorded,
    order_version_key,
    rank_order_items,
    rank_orders,
    to_silver_order_items,
    to_silver_orders,
    with_line_amounts,
    with_order_version,
    with_shipping_fee_base,
    with_superseded_flag,
)
from pipeline_lib.silver.products import (
    clean_products,
    rank_products,
    to_silver_products,
    with_delisted_products,
)
from pipeline_lib.silver.steps import (
    SilverBatch,
    as_versions,
    bronze_deletions,
    check_quality,
    finish,
    lines_still_awaiting_orders,
    merge_history,
    new_bronze_rows,
    nothing_to_do,
    orders_delivered_with,
    recorded_table,
    replace_silver_groups,
    report_conflicts,
    split_deletions,
    stats_columns,
    with_lines_awaiting_orders,
    write_silver,
)

# Bronze read from the shop's database holds tombstones of deleted rows (docs/postgres.md).
CUSTOMER_KEYS = ["customer_id"]
ORDER_KEYS = ["order_id"]
LINE_KEYS = ["order_id", "line_no"]


def fx_rates(ctx: JobContext) -> JobResult:
    """Reference rates: one per date and currency, the latest delivery's."""
    batch = new_bronze_rows(ctx, "fx_rates", "fx_rates")
    if batch is None:
        return nothing_to_do()
    valid, quarantined = check_quality(ctx, "fx_rates", batch.rows.transform(clean_fx_rates))
    rates = valid.transform(dedupe_fx_rates).transform(to_silver_fx_rates).localCheckpoint()
    written = rates.count()
    path = ctx.path("silver", "fx_rates")
    update_when = f"s.{INGEST_DATE} >= t.{INGEST_DATE}"
    write_silver(
        ctx, rates, path, keys=["rate_date", "currency"], update_condition=update_when, state=batch.state
    )
    counts = {"duplicates_removed": valid.count() - written}
    return finish(ctx, "fx_rates", batch, path, written=written, quarantined=quarantined, counts=counts)


def customers(ctx: JobContext) -> JobResult:
    """Customers as SCD type 2; personal data in clear only here, and out of column statistics."""
    batch = new_bronze_rows(ctx, "customers", "customers")
    if batch is None:
        return nothing_to_do()
    batch, tombstones = split_deletions(batch)
    deletions, deletions_read = _customer_deletions(ctx, batch, tombstones)
    privacy = ctx.config.privacy
    key = hmac_key(privacy.hmac_key_env, allow_insecure_default=privacy.allow_insecure_default_key)
    cleaned = batch.rows.transform(
        clean_customers, source_timezone=ctx.config.pipeline.source_timezone
    ).transform(with_email_hash, key=key)
    valid, quarantined = check_quality(ctx, "customers", cleaned)
    path = ctx.path("silver", "customers")
    properties = {**CDF_PROPERTIES, "delta.dataSkippingStatsColumns": ",".join(stats_columns("customers"))}
    counts, info, written = merge_history(
        ctx,
        as_versions(valid, to_silver_customers),
        path,
        table="customers",
        keys=["customer_id"],
        tracked=ctx.config.history.customers_tracked,
        properties=properties,
        state=batch.state,
        deletions=deletions,
    )
    if deletions is not None:
        counts["deletions"] = deletions_read
    return finish(
        ctx, "customers", batch, path, written=written, quarantined=quarantined, counts=counts, info=info
    )


def _customer_deletions(
    ctx: JobContext, batch: SilverBatch, tombstones: DataFrame
) -> tuple[DataFrame | None, int]:
    """The deletions to apply to the customers of this batch, and the tombstones it read.

    None when the source is landing files and the batch holds no tombstone (nothing changes
    then). Otherwise every tombstone bronze holds of the batch's customers: rebuilding a
    customer's history re-applies its earlier deletions too.
    """
    read = tombstones.count()
    if not read and not ctx.config.sources.is_database("customers"):
        return None, 0
    affected = (
        batch.rows.select(clean_string("customer_id").alias("customer_id"))
        .unionByName(tombstones.select(clean_string("customer_id").alias("customer_id")))
        .distinct()
    )
    deletions = (
        bronze_deletions(ctx, "customers")
        .transform(clean_deletions, keys=CUSTOMER_KEYS)
        .join(affected, on=CUSTOMER_KEYS, how="left_semi")
        .select(*CUSTOMER_KEYS, DELETED_AT, INGEST_DATE)
        .distinct()
        .localCheckpoint()
    )
    if read:
        ctx.progress(f"silver.customers: {read} customers deleted at the source close their current version")
    return deletions, read


def products(ctx: JobContext) -> JobResult:
    """Products as SCD type 2 from full catalogue snapshots; a missing product is delisted."""
    batch = new_bronze_rows(ctx, "catalogue", "products")
    if batch is None:
        return nothing_to_do()
    cleaned = batch.rows.transform(clean_products, source_timezone=ctx.config.pipeline.source_timezone)
    valid, quarantined = check_quality(ctx, "products", cleaned)
    ranked = valid.transform(rank_products).localCheckpoint()
    outcomes = count_outcomes(ranked)
    snapshot_rows = ranked.where(F.col(VERSION_OUTCOME) == KEPT).drop(VERSION_OUTCOME)
    path = ctx.path("silver", "products")
    current = recorded_table(ctx, path, "products").where(F.col(IS_CURRENT))
    counts, info, written = merge_history(
        ctx,
        as_versions(snapshot_rows.transform(with_delisted_products, current=current), to_silver_products),
        path,
        table="products",
        keys=["product_id"],
        tracked=(*ctx.config.history.products_tracked, "is_delisted"),
        properties=CDF_PROPERTIES,
        state=batch.state,
    )
    # A snapshot's older rows of a product are superseded; its copies and ties, as for customers.
    counts["duplicates_removed"] += outcomes[DUPLICATE]
    counts["conflicts"] += outcomes[CONFLICT]
    counts["superseded"] = outcomes[SUPERSEDED]
    return finish(
        ctx, "products", batch, path, written=written, quarantined=quarantined, counts=counts, info=info
    )


def orders(ctx: JobContext) -> JobResult:
    """Orders, current state: the tie rule picks the version, valued at the order date's rate."""
    batch = new_bronze_rows(ctx, "orders", "orders")
    if batch is None:
        return nothing_to_do()
    batch, tombstones = split_deletions(batch)
    rates = recorded_table(ctx, ctx.path("silver", "fx_rates"), "fx_rates", full=True)
    cleaned = batch.rows.transform(
        clean_orders, source_timezone=ctx.config.pipeline.source_timezone
    ).transform(with_fx_rate, rates=rates, base_currency=ctx.config.pipeline.base_currency)
    valid, quarantined = check_quality(ctx, "orders", cleaned)
    ranked = valid.transform(rank_orders).localCheckpoint()
    outcomes = count_outcomes(ranked)
    latest = ranked.where(F.col(VERSION_OUTCOME) == KEPT).drop(VERSION_OUTCOME)
    path = ctx.path("silver", "orders")
    against_silver = {"redelivered": 0, "conflicts_lost": 0, "conflicts_won": 0, "older": 0}
    if not ctx.full_refresh and table_exists(ctx.spark, path):
        # The tie rule against the recorded row too, so an incremental run keeps what a rebuild keeps.
        recorded = read_table(ctx.spark, path).select("order_id", order_version_key().alias("__recorded"))
        compared = (
            latest.join(recorded, on="order_id", how="left")
            .withColumn("__key", order_version_key())
            .withColumn("__newer", F.col("__recorded").isNull() | (F.col("__key") > F.col("__recorded")))
            .localCheckpoint()
        )
        against_silver = compare_with_recorded(compared)
        latest = compared.where(F.col("__newer")).drop("__recorded", "__key", "__newer")
    silver_orders = latest.transform(with_shipping_fee_base).transform(to_silver_orders)
    deleted = {"deletions": 0, "deleted_in_batch": 0, "removed": 0}
    if tombstones.isEmpty():
        written = silver_orders.count()
        if ctx.full_refresh or written:
            update_when = "s.updated_at >= t.updated_at"
            write_silver(
                ctx, silver_orders, path, keys=ORDER_KEYS, update_condition=update_when, state=batch.state
            )
    else:
        deletions = tombstones.transform(clean_deletions, keys=ORDER_KEYS).localCheckpoint()
        written, deleted = _apply_order_deletions(
            ctx, silver_orders, deletions, path, state=batch.state, tombstones=tombstones.count()
        )
    conflicts = outcomes[CONFLICT] + against_silver["conflicts_lost"]
    report_conflicts(
        ctx,
        "orders",
        conflicts + against_silver["conflicts_won"],
        "one order_id, the same updated_at, other content",
        rule="status further along",
    )
    counts = {
        "duplicates_removed": outcomes[DUPLICATE] + against_silver["redelivered"],
        "conflicts": conflicts,
        "superseded": outcomes[SUPERSEDED] + against_silver["older"] + deleted["deleted_in_batch"],
    }
    if deleted["deletions"]:
        counts["deletions"] = deleted["deletions"]
    info = {"conflicts_replacing_silver": against_silver["conflicts_won"]}
    if deleted["deletions"]:
        info["orders_deleted"] = deleted["removed"]
    return finish(
        ctx, "orders", batch, path, written=written, quarantined=quarantined, counts=counts, info=info
    )


@dataclass(frozen=True)
class _DeletionSplit:
    """A batch and its table split by the deletions that apply to them (greatest time wins)."""

    surviving: DataFrame  # the batch's rows no later deletion removes (checkpointed)
    written: int  # rows of ``surviving``
    deleted_in_batch: int  # batch rows a later deletion removed
    recorded: DataFrame  # the table as recorded
    gone: DataFrame  # recorded rows a later deletion removes (checkpointed)


def _split_by_deletions(
    ctx: JobContext,
    batch_rows: DataFrame,
    deletions: DataFrame,
    path: str,
    *,
    table: str,
    keys: Sequence[str],
    version: str,
) -> _DeletionSplit:
    """The steps the order and line deletions share: which batch rows survive, which recorded go."""
    surviving = batch_rows.transform(without_deleted, deletions=deletions, keys=keys, version=version)
    surviving = surviving.localCheckpoint()
    written = surviving.count()
    recorded = recorded_table(ctx, path, table)
    gone = recorded.transform(deleted_rows, deletions=deletions, keys=keys, version=version).localCheckpoint()
    return _DeletionSplit(surviving, written, batch_rows.count() - written, recorded, gone)


def _apply_order_deletions(
    ctx: JobContext,
    silver_orders: DataFrame,
    deletions: DataFrame,
    path: str,
    *,
    state: str | None,
    tombstones: int,
) -> tuple[int, dict[str, int]]:
    """Write the batch's orders and remove the deleted ones from silver, in ONE commit.

    The greatest time wins: a deletion removes the recorded order and the batch's version of
    it when they are older; an order inserted again after it stays. Returns the orders
    written and ``deletions`` (tombstones read), ``deleted_in_batch`` (batch
    versions a later deletion removed: superseded), ``removed`` (orders leaving silver).
    """
    split = _split_by_deletions(
        ctx, silver_orders, deletions, path, table="orders", keys=ORDER_KEYS, version="updated_at"
    )
    surviving, written, deleted_in_batch = split.surviving, split.written, split.deleted_in_batch
    gone = split.gone.select(*ORDER_KEYS).join(surviving.select(*ORDER_KEYS), on=ORDER_KEYS, how="left_anti")
    removed = gone.count() + (deleted_in_batch if ctx.full_refresh else 0)
    if ctx.full_refresh:
        write_silver(ctx, surviving, path, keys=ORDER_KEYS, update_condition="true", state=state)
    elif written or removed:
        scope = surviving.select(*ORDER_KEYS).unionByName(gone).distinct()
        replace_groups(
            surviving, path, row_keys=ORDER_KEYS, scope=scope, properties=CDF_PROPERTIES, user_metadata=state
        )
    ctx.progress(f"silver.orders: {tombstones} deletions at the source, {removed} orders leave silver")
    return written, {"deletions": tombstones, "deleted_in_batch": deleted_in_batch, "removed": removed}


def order_items(ctx: JobContext) -> JobResult:
    """Order lines of each order's latest version, with net amounts in order and base currency.

    Lines quarantined because their order was unknown are checked again once it has arrived
    (``retried`` in the run's details), and leave the quarantine when they pass.
    """
    spark = ctx.spark
    path = ctx.path("silver", "order_items")
    current_orders = recorded_table(ctx, ctx.path("silver", "orders"), "orders", full=True)
    new_rows = new_bronze_rows(ctx, "order_items", "order_items")
    tombstones = None
    if new_rows is not None:
        new_rows, tombstones = split_deletions(new_rows)
    batch = with_lines_awaiting_orders(ctx, new_rows, current_orders)
    if batch is None:
        return nothing_to_do()
    cleaned = batch.rows.transform(clean_order_items).transform(
        with_order_version, delivered=orders_delivered_with(ctx, batch.rows), current_orders=current_orders
    )
    references = {
        "orders": current_orders,
        "products": recorded_table(ctx, ctx.path("silver", "products"), "products", full=True),
    }
    valid, quarantined = check_quality(
        ctx, "order_items", cleaned, references=references, unmeasured_files=batch.retried_files
    )
    recorded = (
        read_table(spark, path).groupBy("order_id").agg(F.max("order_updated_at").alias("recorded_version"))
        if table_exists(spark, path) and not ctx.full_refresh
        else local_frame(spark, [], "order_id string, recorded_version timestamp")
    )
    flagged = valid.transform(with_superseded_flag, recorded_versions=recorded).localCheckpoint()
    ranked = flagged.where(~F.col(IS_SUPERSEDED)).transform(rank_order_items).localCheckpoint()
    outcomes = count_outcomes(ranked)
    superseded = flagged.where(F.col(IS_SUPERSEDED)).count() + outcomes[SUPERSEDED]
    winning = ranked.where(F.col(VERSION_OUTCOME) == KEPT).drop(VERSION_OUTCOME)
    lines = winning.transform(with_line_amounts).transform(to_silver_order_items).localCheckpoint()
    deleted = {"deletions": 0, "deleted_in_batch": 0, "removed": 0}
    if tombstones is None or tombstones.isEmpty():
        written = lines.count()
        if ctx.full_refresh or written:
            replace_silver_groups(ctx, lines, path, row_keys=LINE_KEYS, state=batch.state)
    else:
        deletions = tombstones.transform(clean_deletions, keys=LINE_KEYS).localCheckpoint()
        written, deleted = _apply_line_deletions(
            ctx, lines, deletions, path, state=batch.state, tombstones=tombstones.count()
        )
    retried_rows = valid.where(F.col(SOURCE_FILE).isin(list(batch.retried_files)))
    readmitted = (
        resolve_quarantined(retried_rows, ctx.lake, "order_items", run_id=ctx.run_id) if batch.retried else 0
    )
    report_conflicts(ctx, "order_items", outcomes[CONFLICT], "one line of one order version, other content")
    waiting = lines_still_awaiting_orders(ctx)
    if waiting:
        ctx.progress(
            f"silver.order_items: {waiting} quarantined lines wait for their order (rule order_known); "
            "each run checks them again, and admits them once the order is in silver.orders"
        )
    counts = {
        "duplicates_removed": outcomes[DUPLICATE],
        "conflicts": outcomes[CONFLICT],
        "superseded": superseded + deleted["deleted_in_batch"],
    }
    if deleted["deletions"]:
        counts["deletions"] = deleted["deletions"]
    info = {"retried_from_quarantine": batch.retried, "readmitted": readmitted, "awaiting_order": waiting}
    if deleted["deletions"]:
        info["lines_deleted"] = deleted["removed"]
    return finish(
        ctx, "order_items", batch, path, written=written, quarantined=quarantined, counts=counts, info=info
    )


def _apply_line_deletions(
    ctx: JobContext, lines: DataFrame, deletions: DataFrame, path: str, *, state: str | None, tombstones: int
) -> tuple[int, dict[str, int]]:
    """Write the batch's lines and remove the deleted lines from silver, in ONE commit.

    A line deleted after the order version it belongs to leaves silver (a batch line of a
    later order version stays). The orders of the batch's lines are replaced whole, as
    without deletions; an order with deleted lines only keeps its other recorded lines.
    Returns the lines written and ``deletions``, ``deleted_in_batch``, ``removed`` as
    :func:`_apply_order_deletions`.
    """
    split = _split_by_deletions(
        ctx, lines, deletions, path, table="order_items", keys=LINE_KEYS, version="order_updated_at"
    )
    surviving, written, deleted_in_batch = split.surviving, split.written, split.deleted_in_batch
    recorded, gone = split.recorded, split.gone
    batch_orders = surviving.select("order_id").distinct()
    touched = gone.select("order_id").distinct().join(batch_orders, on="order_id", how="left_anti")
    kept = recorded.join(touched, on="order_id", how="left_semi").join(
        gone.select(*LINE_KEYS), on=LINE_KEYS, how="left_anti"
    )
    removed = gone.join(surviving.select(*LINE_KEYS), on=LINE_KEYS, how="left_anti").count()
    removed += deleted_in_batch if ctx.full_refresh else 0
    if ctx.full_refresh:
        replace_silver_groups(ctx, surviving, path, row_keys=LINE_KEYS, state=state)
    elif written or removed:
        rows = surviving.unionByName(kept.select(*surviving.columns))
        scope = batch_orders.unionByName(touched).distinct()
        replace_groups(
            rows, path, row_keys=LINE_KEYS, scope=scope, properties=CDF_PROPERTIES, user_metadata=state
        )
    ctx.progress(f"silver.order_items: {tombstones} deletions at the source, {removed} lines leave silver")
    return written, {"deletions": tombstones, "deleted_in_batch": deleted_in_batch, "removed": removed}
