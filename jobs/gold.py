"""Gold jobs: the star schema (dimensions first, then facts).

Each job is a short recipe: read the silver (and gold dimension) tables at their latest
version, transform with :mod:`pipeline_lib.gold`, write ``<lake>/gold/<table>`` (created
with the change data feed on). Run them with::

    ecom-pipeline run --layer gold                       # all, in this module's order
    ecom-pipeline run --layer gold --job fact_orders
    ecom-pipeline run --layer gold --full-refresh        # rebuild from silver

Incremental design (``docs/gold.md``): each job records per source table the Delta
version it processed (:mod:`pipeline_lib.ops.watermarks`). A job whose sources have not moved
commits nothing. Dimensions are rebuilt whole (they are small) and merged by surrogate
key only when the content differs. Facts are recomputed for the keys that changed
upstream (orders, order lines, sessions, and the orders of customers or products whose
dimension rows changed) and merged by key; rows of those keys that no longer exist
upstream (a line removed from an order) are deleted in the same MERGE.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import reduce

from delta.tables import DeltaTable
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.framework import JobContext, JobResult
from pipeline_lib.gold.dimensions import build_dim_customer, build_dim_date, build_dim_product
from pipeline_lib.gold.facts import build_fact_order_lines, build_fact_orders
from pipeline_lib.gold.sessions import build_fact_sessions
from pipeline_lib.io.delta import (
    MergeCounts,
    assert_unique_keys,
    commit_metadata,
    read_table,
    replace_groups,
    table_exists,
    table_version,
    write_table,
)
from pipeline_lib.ops.watermarks import (
    CDF_PROPERTIES,
    consumed_metadata,
    processed_versions,
    record_consumption,
)

_CHANGE_TYPES = ("insert", "update_preimage", "update_postimage", "delete")


# --- I/O helpers (bounded metadata and writes) ----------------------------------------------


def _source_path(ctx: JobContext, source: str) -> str:
    layer, table = source.split(".")
    return ctx.path(layer, table)


def _latest_versions(ctx: JobContext, sources: Sequence[str]) -> dict[str, int]:
    """The current version of each ``layer.table`` source; every source must exist."""
    versions = {}
    for source in sources:
        version = table_version(ctx.spark, _source_path(ctx, source))
        if version is None:
            raise FileNotFoundError(
                f"no Delta table {source} at {_source_path(ctx, source)}: run its job first"
            )
        versions[source] = version
    return versions


def _processed_versions(ctx: JobContext, consumer: str, sources: Sequence[str]) -> dict[str, int | None]:
    """The last version of each source this consumer processed (None if never)."""
    return processed_versions(ctx.spark, ctx.config.paths.lake, consumer, sources)


def _state(ctx: JobContext, consumer: str, versions: dict[str, int]) -> str:
    """What the job's commit records it consumed: the versions of every source read."""
    return consumed_metadata(consumer, versions, ctx.run_id)


def _save_versions(
    ctx: JobContext, consumer: str, versions: dict[str, int], done: dict[str, int | None]
) -> None:
    """Record the versions processed: in the job's own commit when it wrote (nothing more to
    do), else one append to the log for the sources that moved."""
    if any(done.get(source) != version for source, version in versions.items()):
        record_consumption(ctx.spark, ctx.config.paths.lake, consumer, versions, ctx.run_id)


def _read(ctx: JobContext, source: str, versions: dict[str, int]) -> DataFrame:
    """A source as of the version this run processes, so the watermark matches what was read."""
    return read_table(ctx.spark, _source_path(ctx, source), version=versions[source])


def _changed_rows(ctx: JobContext, source: str, after: int | None, latest: int) -> DataFrame:
    """Every row image (insert, update pre/post, delete) of versions ``after+1..latest``.

    With no watermark yet (``after`` None) every row of the table counts as changed.
    """
    if after is None:
        return _read(ctx, source, {source: latest})
    if after >= latest:
        return _read(ctx, source, {source: latest}).limit(0)
    return (
        ctx.spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", after + 1)
        .option("endingVersion", latest)
        .load(_source_path(ctx, source))
        .where(F.col("_change_type").isin(*_CHANGE_TYPES))
    )


def _result(ctx: JobContext, path: str, counts: MergeCounts, *, mode: str) -> JobResult:
    """What the job's own commit did: Delta's counts of that write, not of the table's latest commit."""
    version = table_version(ctx.spark, path)
    return JobResult(
        rows_read=counts.source_rows,
        rows_written=counts.written,
        delta_versions={} if version is None else {path: version},
        details={
            "mode": mode,
            "inserted": counts.inserted,
            "updated": counts.updated,
            "deleted": counts.deleted,
        },
    )


def _skipped(reason: str) -> JobResult:
    return JobResult(details={"mode": "skipped", "reason": reason})


def _overwrite(ctx: JobContext, table: DataFrame, path: str, *, state: str) -> JobResult:
    table = table.localCheckpoint()  # counted and written: compute it once
    rows = table.count()
    write_table(
        table, path, mode="overwrite", overwrite_schema=True, properties=CDF_PROPERTIES, user_metadata=state
    )
    return _result(ctx, path, MergeCounts(inserted=rows, source_rows=rows), mode="full")


def _sync_table(
    ctx: JobContext, built: DataFrame, path: str, *, keys: Sequence[str], state: str
) -> JobResult:
    """Make a small table equal to ``built``, committing only if the content differs.

    Full refresh or a missing table: overwrite. Otherwise one MERGE by ``keys`` updates the
    changed rows, inserts the new ones and deletes the vanished ones, so the table's change
    feed lists exactly the rows that changed.
    """
    built = built.localCheckpoint()  # checked, compared and merged: compute it once
    assert_unique_keys(built, keys, what=f"sync of {path}")
    if ctx.full_refresh or not table_exists(ctx.spark, path):
        return _overwrite(ctx, built, path, state=state)
    existing = read_table(ctx.spark, path).select(*built.columns)
    if built.exceptAll(existing).unionByName(existing.exceptAll(built)).isEmpty():
        return _skipped("content unchanged")
    on = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    changed = " OR ".join(f"NOT (t.`{c}` <=> s.`{c}`)" for c in built.columns if c not in keys)
    with commit_metadata(ctx.spark, state):
        metrics = (
            DeltaTable.forPath(ctx.spark, path)
            .alias("t")
            .merge(built.alias("s"), on)
            .whenMatchedUpdateAll(condition=changed or None)
            .whenNotMatchedInsertAll()
            .whenNotMatchedBySourceDelete()
            .execute()
        )
    return _result(ctx, path, MergeCounts.of_merge(metrics, source_rows=built.count()), mode="merge")


def _replace_keys(
    ctx: JobContext, rebuilt: DataFrame, path: str, *, keys: Sequence[str], scope: DataFrame, state: str
) -> JobResult:
    """Replace the rows of the ``scope`` keys with ``rebuilt`` (see :func:`replace_groups`)."""
    counts = replace_groups(rebuilt, path, row_keys=keys, scope=scope, user_metadata=state)
    if counts is None:
        return _skipped("no rows in the changed scope")
    return _result(ctx, path, counts, mode="incremental")


def _is_up_to_date(ctx: JobContext, path: str, versions: dict[str, int], done: dict[str, int | None]) -> bool:
    return (
        not ctx.full_refresh
        and table_exists(ctx.spark, path)
        and all(done[source] == version for source, version in versions.items())
    )


def _needs_full_build(ctx: JobContext, path: str, done: dict[str, int | None]) -> bool:
    return ctx.full_refresh or not table_exists(ctx.spark, path) or any(v is None for v in done.values())


def _distinct_union(frames: Sequence[DataFrame]) -> DataFrame:
    return reduce(DataFrame.unionByName, frames).distinct()


def _changed_order_ids(
    ctx: JobContext,
    versions: dict[str, int],
    done: dict[str, int | None],
    *,
    orders: DataFrame,
    order_items: DataFrame,
) -> DataFrame:
    """order_ids whose fact rows may differ: changed orders or lines, and orders of changed
    customers or products (their dimension rows, hence their point-in-time keys, moved)."""

    def changes(source: str) -> DataFrame:
        return _changed_rows(ctx, source, done[source], versions[source])

    ids = [changes(s).select("order_id") for s in ("silver.orders", "silver.order_items")]
    if "gold.dim_customer" in versions:
        customers = changes("gold.dim_customer").select("customer_id").where(F.col("customer_id").isNotNull())
        ids.append(orders.join(customers, on="customer_id", how="left_semi").select("order_id"))
    if "gold.dim_product" in versions:
        products = changes("gold.dim_product").select("product_id").where(F.col("product_id").isNotNull())
        ids.append(order_items.join(products, on="product_id", how="left_semi").select("order_id"))
    return _distinct_union(ids).where(F.col("order_id").isNotNull())


def _only(frame: DataFrame, scope: DataFrame) -> DataFrame:
    return frame.join(scope, on=scope.columns, how="left_semi")


# --- Dimensions ------------------------------------------------------------------------------


def _dimension_job(
    ctx: JobContext, table: str, *, key: str, sources: Sequence[str], build: Callable[..., DataFrame]
) -> JobResult:
    """Rebuild a dimension from its sources (read in ``sources`` order) and sync it by ``key``."""
    consumer, path = f"gold.{table}", ctx.path("gold", table)
    versions = _latest_versions(ctx, sources)
    done = _processed_versions(ctx, consumer, sources)
    if _is_up_to_date(ctx, path, versions, done):
        return _skipped("sources unchanged")
    built = build(*(_read(ctx, s, versions) for s in sources))
    result = _sync_table(ctx, built, path, keys=[key], state=_state(ctx, consumer, versions))
    _save_versions(ctx, consumer, versions, done)
    return result


def dim_date(ctx: JobContext) -> JobResult:
    """Calendar days of every year with orders or click events."""

    def build(orders: DataFrame, clicks: DataFrame) -> DataFrame:
        dates = orders.select(F.col("order_date").alias("date")).unionByName(
            clicks.select(F.col("event_date").alias("date"))
        )
        return dates.transform(build_dim_date, date_column="date")

    return _dimension_job(
        ctx, "dim_date", key="date_key", sources=("silver.orders", "silver.clicks"), build=build
    )


def dim_customer(ctx: JobContext) -> JobResult:
    """Customer versions (SCD2) without personal data, plus unknown and inferred members."""

    def build(customers: DataFrame, orders: DataFrame) -> DataFrame:
        return customers.transform(build_dim_customer, orders=orders)

    return _dimension_job(
        ctx, "dim_customer", key="customer_sk", sources=("silver.customers", "silver.orders"), build=build
    )


def dim_product(ctx: JobContext) -> JobResult:
    """Product versions (SCD2), plus unknown and inferred members."""

    def build(products: DataFrame, order_items: DataFrame) -> DataFrame:
        return products.transform(build_dim_product, order_items=order_items)

    return _dimension_job(
        ctx, "dim_product", key="product_sk", sources=("silver.products", "silver.order_items"), build=build
    )


# --- Facts -----------------------------------------------------------------------------------


def fact_order_lines(ctx: JobContext) -> JobResult:
    """Order lines (current state) with point-in-time customer and product keys."""
    consumer, path = "gold.fact_order_lines", ctx.path("gold", "fact_order_lines")
    sources = ("silver.orders", "silver.order_items", "gold.dim_customer", "gold.dim_product")
    versions, done = _latest_versions(ctx, sources), _processed_versions(ctx, consumer, sources)
    if _is_up_to_date(ctx, path, versions, done):
        return _skipped("sources unchanged")
    orders, order_items, customers, products = (_read(ctx, s, versions) for s in sources)
    if _needs_full_build(ctx, path, done):
        lines = order_items.transform(
            build_fact_order_lines, orders=orders, dim_customer=customers, dim_product=products
        )
        result = _overwrite(ctx, lines, path, state=_state(ctx, consumer, versions))
    else:
        changed = _changed_order_ids(ctx, versions, done, orders=orders, order_items=order_items)
        lines = _only(order_items, changed).transform(
            build_fact_order_lines,
            orders=_only(orders, changed),
            dim_customer=customers,
            dim_product=products,
        )
        result = _replace_keys(
            ctx,
            lines,
            path,
            keys=["order_id", "line_no"],
            scope=changed,
            state=_state(ctx, consumer, versions),
        )
    _save_versions(ctx, consumer, versions, done)
    return result


def fact_orders(ctx: JobContext) -> JobResult:
    """Orders (current state) with line totals in the base currency and the revenue flag."""
    consumer, path = "gold.fact_orders", ctx.path("gold", "fact_orders")
    sources = ("silver.orders", "silver.order_items", "gold.dim_customer")
    versions, done = _latest_versions(ctx, sources), _processed_versions(ctx, consumer, sources)
    if _is_up_to_date(ctx, path, versions, done):
        return _skipped("sources unchanged")
    orders, order_items, customers = (_read(ctx, s, versions) for s in sources)
    if _needs_full_build(ctx, path, done):
        facts = orders.transform(build_fact_orders, order_items=order_items, dim_customer=customers)
        result = _overwrite(ctx, facts, path, state=_state(ctx, consumer, versions))
    else:
        changed = _changed_order_ids(ctx, versions, done, orders=orders, order_items=order_items)
        facts = _only(orders, changed).transform(
            build_fact_orders, order_items=_only(order_items, changed), dim_customer=customers
        )
        result = _replace_keys(
            ctx, facts, path, keys=["order_id"], scope=changed, state=_state(ctx, consumer, versions)
        )
    _save_versions(ctx, consumer, versions, done)
    return result


def fact_sessions(ctx: JobContext) -> JobResult:
    """Visits: one row per click session, with funnel counts and conversion."""
    consumer, path = "gold.fact_sessions", ctx.path("gold", "fact_sessions")
    sources = ("silver.clicks",)
    versions, done = _latest_versions(ctx, sources), _processed_versions(ctx, consumer, sources)
    if _is_up_to_date(ctx, path, versions, done):
        return _skipped("sources unchanged")
    clicks = _read(ctx, "silver.clicks", versions)
    if _needs_full_build(ctx, path, done):
        result = _overwrite(
            ctx, clicks.transform(build_fact_sessions), path, state=_state(ctx, consumer, versions)
        )
    else:
        changes = _changed_rows(ctx, "silver.clicks", done["silver.clicks"], versions["silver.clicks"])
        changed = changes.select("session_id").where(F.col("session_id").isNotNull()).distinct()
        sessions = _only(clicks, changed).transform(build_fact_sessions)
        result = _replace_keys(
            ctx, sessions, path, keys=["session_id"], scope=changed, state=_state(ctx, consumer, versions)
        )
    _save_versions(ctx, consumer, versions, done)
    return result
