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

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.framework import JobContext, JobResult
from pipeline_lib.bronze.schemas import INGEST_DATE, LANDING_SOURCES, SOURCE_FILE
from pipeline_lib.io.delta import (
    create_empty_table,
    read_table,
    replace_groups,
    table_exists,
    table_version,
    upsert,
    write_table,
)
from pipeline_lib.io.frames import local_frame
from pipeline_lib.io.quality import (
    measured_once,
    open_quarantine,
    resolve_all_but,
    resolve_quarantined,
    write_quality_metrics,
    write_quarantine,
)
from pipeline_lib.ops.watermarks import (
    CDF_PROPERTIES,
    consumed_metadata,
    last_processed_version,
    read_appended_rows,
    record_consumption,
)
from pipeline_lib.privacy.pii import hmac_key
from pipeline_lib.quality.rules import (
    enforce_thresholds,
    outside_plausible_time,
    quality_metrics,
    split_by_quality,
    with_rule_results,
)
from pipeline_lib.silver.common import (
    CONFLICT,
    DUPLICATE,
    KEPT,
    SUPERSEDED,
    VERSION_OUTCOME,
    count_outcomes,
    row_fingerprint,
)
from pipeline_lib.silver.customers import (
    PII_COLUMNS,
    clean_customers,
    to_silver_customers,
    with_email_hash,
)
from pipeline_lib.silver.fx import clean_fx_rates, dedupe_fx_rates, to_silver_fx_rates, with_fx_rate
from pipeline_lib.silver.history import (
    FROM_INCOMING,
    IS_CURRENT,
    VALID_FROM,
    VALID_TO,
    build_scd2_history,
    version_content,
)
from pipeline_lib.silver.orders import (
    IS_SUPERSEDED,
    clean_order_items,
    clean_orders,
    lines_awaiting_orders,
    order_version_key,
    order_versions,
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
from pipeline_lib.silver.schemas import DQ_FLAGS, FAILED_RULES, SILVER_SCHEMAS

# The rule that quarantines a line whose order is not (yet) in silver.orders (conf/quality.yaml).
ORDER_KNOWN_RULE = "order_known"


@dataclass
class _Batch:
    rows: DataFrame
    source_path: str
    latest_version: int | None  # None: no new bronze rows (only quarantined rows retried)
    read: int  # the number of new bronze rows: counted once, they are reconciled at the end
    retried: int = 0  # quarantined rows checked again (lines whose order has arrived)
    retried_files: tuple[str, ...] = ()  # their delivery files
    consumer: str = ""  # the job, silver.<table>
    run_id: str = ""

    @property
    def source(self) -> str:
        """The bronze table read, ``bronze.<source>``."""
        return f"bronze.{self.source_path.rstrip('/').rsplit('/', 1)[-1]}"

    @property
    def consumed(self) -> dict[str, int]:
        return {} if self.latest_version is None else {self.source: self.latest_version}

    @property
    def state(self) -> str | None:
        """What the silver commit records it consumed (None: no new bronze rows were read)."""
        return consumed_metadata(self.consumer, self.consumed, self.run_id) if self.consumed else None


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
        write_table(
            rates,
            path,
            mode="overwrite",
            properties=CDF_PROPERTIES,
            overwrite_schema=True,
            user_metadata=batch.state,
        )
    else:
        upsert(
            rates,
            path,
            keys=["rate_date", "currency"],
            properties=CDF_PROPERTIES,
            update_condition=f"s.{INGEST_DATE} >= t.{INGEST_DATE}",
            user_metadata=batch.state,
        )
    counts = {"duplicates_removed": valid.count() - written}
    return _finish(ctx, "fx_rates", batch, path, written=written, quarantined=quarantined, counts=counts)


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
    counts, info, written = _merge_history(
        ctx,
        incoming,
        path,
        table="customers",
        keys=["customer_id"],
        tracked=ctx.config.history.customers_tracked,
        properties=properties,
        state=batch.state,
    )
    return _finish(
        ctx, "customers", batch, path, written=written, quarantined=quarantined, counts=counts, info=info
    )


def products(ctx: JobContext) -> JobResult:
    """Products as SCD type 2 from full catalogue snapshots; a missing product is delisted."""
    batch = _new_bronze_rows(ctx, "catalogue", "products")
    if batch is None:
        return _nothing_to_do()
    cleaned = batch.rows.transform(clean_products, source_timezone=ctx.config.pipeline.source_timezone)
    valid, quarantined = _check_quality(ctx, "products", cleaned)
    ranked = valid.transform(rank_products).localCheckpoint()
    outcomes = count_outcomes(ranked)
    snapshot_rows = ranked.where(F.col(VERSION_OUTCOME) == KEPT).drop(VERSION_OUTCOME)
    path = ctx.path("silver", "products")
    current = _existing(ctx, path, "products").where(F.col(IS_CURRENT))
    with_delistings = snapshot_rows.transform(with_delisted_products, current=current)
    incoming = _as_versions(with_delistings, to_silver_products)
    counts, info, written = _merge_history(
        ctx,
        incoming,
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
    return _finish(
        ctx, "products", batch, path, written=written, quarantined=quarantined, counts=counts, info=info
    )


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
        against_silver = _compare_with_recorded(compared)
        latest = compared.where(F.col("__newer")).drop("__recorded", "__key", "__newer")
    silver_orders = latest.transform(with_shipping_fee_base).transform(to_silver_orders)
    written = silver_orders.count()
    if ctx.full_refresh:
        write_table(
            silver_orders,
            path,
            mode="overwrite",
            properties=CDF_PROPERTIES,
            overwrite_schema=True,
            user_metadata=batch.state,
        )
    elif written:
        upsert(
            silver_orders,
            path,
            keys=["order_id"],
            properties=CDF_PROPERTIES,
            update_condition="s.updated_at >= t.updated_at",
            user_metadata=batch.state,
        )
    conflicts = outcomes[CONFLICT] + against_silver["conflicts_lost"]
    if conflicts or against_silver["conflicts_won"]:
        ctx.progress(
            f"silver.orders: {conflicts + against_silver['conflicts_won']} conflicts (one order_id, the same "
            "updated_at, other content) resolved by the tie rule: latest delivery, then status further "
            "along (docs/silver.md)"
        )
    counts = {
        "duplicates_removed": outcomes[DUPLICATE] + against_silver["redelivered"],
        "conflicts": conflicts,
        "superseded": outcomes[SUPERSEDED] + against_silver["older"],
    }
    return _finish(
        ctx,
        "orders",
        batch,
        path,
        written=written,
        quarantined=quarantined,
        counts=counts,
        info={"conflicts_replacing_silver": against_silver["conflicts_won"]},
    )


def _compare_with_recorded(compared: DataFrame) -> dict[str, int]:
    """How the batch's winners compare with silver's rows (one aggregate row)."""
    same_time = F.col("__key.updated_at") == F.col("__recorded.updated_at")
    same_content = F.col("__key.content") == F.col("__recorded.content")
    row = compared.agg(
        F.count_if(~F.col("__newer") & same_time & same_content).alias("redelivered"),
        F.count_if(~F.col("__newer") & same_time & ~same_content).alias("conflicts_lost"),
        F.count_if(F.col("__newer") & same_time & ~same_content).alias("conflicts_won"),
        F.count_if(~F.col("__newer") & ~same_time).alias("older"),
    ).first()
    return {name: int(row[name] or 0) for name in ("redelivered", "conflicts_lost", "conflicts_won", "older")}


def order_items(ctx: JobContext) -> JobResult:
    """Order lines of each order's latest version, with net amounts in order and base currency.

    Lines quarantined because their order was unknown are checked again once it has arrived
    (``retried`` in the run's details), and leave the quarantine when they pass.
    """
    spark = ctx.spark
    orders_path, path = ctx.path("silver", "orders"), ctx.path("silver", "order_items")
    current_orders = _existing(ctx, orders_path, "orders", full=True)
    batch = _with_lines_awaiting_orders(
        ctx, _new_bronze_rows(ctx, "order_items", "order_items"), current_orders
    )
    if batch is None:
        return _nothing_to_do()
    delivered = _orders_delivered_with(ctx, batch.rows)
    cleaned = batch.rows.transform(clean_order_items).transform(
        with_order_version, delivered=delivered, current_orders=current_orders
    )
    references = {
        "orders": current_orders,
        "products": _existing(ctx, ctx.path("silver", "products"), "products", full=True),
    }
    valid, quarantined = _check_quality(
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
    written = lines.count()
    if ctx.full_refresh:
        write_table(
            lines,
            path,
            mode="overwrite",
            properties=CDF_PROPERTIES,
            overwrite_schema=True,
            user_metadata=batch.state,
        )
    elif written:
        replace_groups(
            lines,
            path,
            row_keys=["order_id", "line_no"],
            properties=CDF_PROPERTIES,
            user_metadata=batch.state,
        )
    readmitted = (
        resolve_quarantined(
            valid.where(F.col(SOURCE_FILE).isin(list(batch.retried_files))),
            ctx.config.paths.lake,
            "order_items",
            run_id=ctx.run_id,
        )
        if batch.retried
        else 0
    )
    if outcomes[CONFLICT]:
        ctx.progress(
            f"silver.order_items: {outcomes[CONFLICT]} conflicts (one line of one order version, other "
            "content) resolved by the tie rule: latest delivery, then content hash (docs/silver.md)"
        )
    waiting = _lines_still_awaiting_orders(ctx)
    if waiting:
        ctx.progress(
            f"silver.order_items: {waiting} quarantined lines wait for their order (rule order_known); "
            "each run checks them again, and admits them once the order is in silver.orders"
        )
    counts = {
        "duplicates_removed": outcomes[DUPLICATE],
        "conflicts": outcomes[CONFLICT],
        "superseded": superseded,
    }
    info = {"retried_from_quarantine": batch.retried, "readmitted": readmitted, "awaiting_order": waiting}
    return _finish(
        ctx, "order_items", batch, path, written=written, quarantined=quarantined, counts=counts, info=info
    )


def _with_lines_awaiting_orders(ctx: JobContext, batch: _Batch | None, orders: DataFrame) -> _Batch | None:
    """``batch`` plus the quarantined lines whose order has arrived since (none on a full refresh,
    which reads every bronze row again)."""
    quarantined = (
        None if ctx.full_refresh else open_quarantine(ctx.spark, ctx.config.paths.lake, "order_items")
    )
    if quarantined is None:
        return batch
    bronze_columns = LANDING_SOURCES["order_items"].bronze_schema.fieldNames()
    retried = (
        quarantined.transform(lines_awaiting_orders, orders=orders, rule=ORDER_KNOWN_RULE)
        .select(*bronze_columns)
        .localCheckpoint()
    )
    files = tuple(sorted(r[0] for r in retried.select(SOURCE_FILE).distinct().collect()))  # bounded
    if not files:
        return batch
    count = retried.count()
    ctx.progress(f"silver.order_items: {count} quarantined lines have their order now; checking them again")
    if batch is None:
        path = ctx.path("bronze", "order_items")
        return _Batch(
            rows=retried, source_path=path, latest_version=None, read=0, retried=count, retried_files=files
        )
    rows = batch.rows.select(*bronze_columns).unionByName(retried)
    return dataclasses.replace(batch, rows=rows, retried=count, retried_files=files)


def _lines_still_awaiting_orders(ctx: JobContext) -> int:
    """Open quarantined lines that failed only for their unknown order (one count)."""
    quarantined = open_quarantine(ctx.spark, ctx.config.paths.lake, "order_items")
    if quarantined is None:
        return 0
    return quarantined.where(F.col(FAILED_RULES) == F.array(F.lit(ORDER_KNOWN_RULE))).count()


# --- shared steps (I/O and bookkeeping; the logic lives in pipeline_lib) -----------------


def _consumer(table: str) -> str:
    return f"silver.{table}"


def _new_bronze_rows(ctx: JobContext, source: str, table: str) -> _Batch | None:
    """The bronze rows appended since this job's watermark (all of them on a full refresh)."""
    path = ctx.path("bronze", source)
    if not table_exists(ctx.spark, path):
        created = create_empty_table(
            ctx.spark, ctx.path("silver", table), SILVER_SCHEMAS[table], properties=CDF_PROPERTIES
        )
        ctx.progress(
            f"silver.{table}: {source} has not delivered anything yet (no bronze.{source}); "
            + ("silver." + table + " created empty" if created else "nothing to do")
        )
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
    return _Batch(
        rows=rows,
        source_path=path,
        latest_version=latest,
        read=read,
        consumer=_consumer(table),
        run_id=ctx.run_id,
    )


def _check_quality(
    ctx: JobContext,
    table: str,
    rows: DataFrame,
    *,
    references: Mapping[str, DataFrame] | None = None,
    unmeasured_files: Sequence[str] = (),
) -> tuple[DataFrame, int]:
    """Check the rules, write quarantine and metrics, enforce thresholds; return the valid rows.

    Rows of ``unmeasured_files`` (quarantined rows checked again) are not measured again: their
    delivery's metrics stay those of its first check. A full refresh marks resolved the
    quarantined rows that no longer fail.
    """
    rules = ctx.config.quality.rules_for(table)
    checked = with_rule_results(
        rows, rules, references=references, plausible_time=ctx.config.quality.plausible_time
    ).localCheckpoint()
    measured = (
        checked.where(~F.col(SOURCE_FILE).isin(list(unmeasured_files))) if unmeasured_files else checked
    )
    metrics = measured_once(quality_metrics(measured, rules, table=table, run_id=ctx.run_id))
    write_quality_metrics(metrics, ctx.config.paths.lake)
    valid, quarantined = split_by_quality(checked)
    write_quarantine(quarantined, ctx.config.paths.lake, table, run_id=ctx.run_id)
    if ctx.full_refresh:
        resolve_all_but(quarantined, ctx.config.paths.lake, table, run_id=ctx.run_id)
    enforce_thresholds(
        metrics,
        rules,
        default_threshold=ctx.config.quality.fail_threshold,
        min_rows=ctx.config.quality.threshold_min_rows,
    )
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
    cleaned = bronze_orders.transform(clean_orders, source_timezone=ctx.config.pipeline.source_timezone)
    # A placeholder updated_at (9999-12-31) is no version: lines delivered with it must not
    # outrank every later version of their order (silver.orders quarantines that row too).
    plausible = ~outside_plausible_time(cleaned, ["updated_at"], ctx.config.quality.plausible_time)
    return cleaned.where(plausible).transform(order_versions)


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
    state: str | None,
) -> tuple[dict[str, int], dict[str, int], int]:
    """Rebuild the SCD2 history of the keys in ``incoming`` and replace them in the table.

    Returns:
        The fates of the bronze rows that made no new version (duplicates, conflicts lost,
        unchanged), other figures (new and delisted versions), and the versions written.
    """
    existing = _existing(ctx, path, table)
    incoming = incoming.localCheckpoint()
    history = build_scd2_history(
        existing, incoming, keys=keys, tracked=tracked, prefer=[F.col(INGEST_DATE).desc_nulls_last()]
    ).localCheckpoint()
    # Rows from bronze carry their rule flags (an array, maybe empty); generated delisted rows carry null.
    # Each count is one query: rows received per version start, and their distinct contents
    # (a copy is a duplicate; another content with the same start, a conflict), then new and
    # delisted versions.
    content = row_fingerprint(version_content(incoming.columns))
    received, distinct_contents, distinct_starts = (
        incoming.where(F.col(DQ_FLAGS).isNotNull())
        .groupBy(*keys, VALID_FROM)
        .agg(F.count(F.lit(1)).alias("rows"), F.count_distinct(content).alias("contents"))
        .agg(F.coalesce(F.sum("rows"), F.lit(0)), F.coalesce(F.sum("contents"), F.lit(0)), F.count(F.lit(1)))
        .first()
    )
    delisted = F.col("is_delisted") if "is_delisted" in history.columns else F.lit(False)
    new_versions, delisted_versions = history.agg(
        F.count_if(F.col(FROM_INCOMING)), F.count_if(F.col(FROM_INCOMING) & delisted)
    ).first()
    rows = history.drop(FROM_INCOMING)
    if ctx.full_refresh or not table_exists(ctx.spark, path):
        write_table(
            rows,
            path,
            mode="overwrite",
            properties=properties,
            overwrite_schema=ctx.full_refresh,
            user_metadata=state,
        )
    elif _differs(rows, existing.join(rows.select(*keys).distinct(), on=list(keys), how="left_semi")):
        affected = rows.select(*keys).distinct()
        replace_groups(
            rows,
            path,
            row_keys=[*keys, "valid_from"],
            scope=affected,
            properties=properties,
            user_metadata=state,
        )
    from_bronze_versions = new_versions - delisted_versions
    conflicts = distinct_contents - distinct_starts
    if conflicts:
        ctx.progress(
            f"silver.{table}: {conflicts} conflicts (one key, the same updated_at, other content) resolved "
            "by the tie rule: latest delivery, then content hash (docs/silver.md)"
        )
    counts = {
        "duplicates_removed": received - distinct_contents,
        "conflicts": conflicts,
        "unchanged": distinct_starts - from_bronze_versions,
    }
    info = {"new_versions": from_bronze_versions, "delisted_versions": delisted_versions}
    return counts, info, from_bronze_versions


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
    info: dict[str, Any] | None = None,
) -> JobResult:
    """Reconcile, save the watermark (last), and report.

    ``counts`` are the fates of the bronze rows read that were neither written nor
    quarantined (duplicates, conflicts lost, superseded, unchanged): they must add up with
    ``written`` and ``quarantined`` to the rows read. ``info`` holds other figures of the run.
    """
    read = batch.read + batch.retried
    accounted = written + quarantined + sum(counts.values())
    details: dict[str, Any] = {
        "bronze_rows_read": batch.read,
        "written": written,
        "quarantined": quarantined,
        **counts,
        **(info or {}),
        "reconciled": read == accounted,
        "bronze_version": batch.latest_version,
    }
    if read != accounted:
        raise RuntimeError(f"silver.{table}: reconciliation failed: {details}")
    # The silver commit carries it; when nothing was written, the log takes it.
    record_consumption(ctx.spark, ctx.config.paths.lake, _consumer(table), batch.consumed, ctx.run_id)
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
