"""Gold jobs: the star schema (dimensions first, then facts).

Each job is a short recipe: read the silver (and gold dimension) tables at their latest
version, transform with :mod:`pipeline_lib.gold`, write ``<lake>/gold/<table>`` (created
with the change data feed on). Run them with::

    ecom-pipeline run --layer gold                       # all, in this module's order
    ecom-pipeline run --layer gold --job fact_orders
    ecom-pipeline run --layer gold --full-refresh        # rebuild from silver

Incremental design (``docs/gold.md``): each job records per source table the Delta
version it processed (:mod:`pipeline_lib.watermarks`). A job whose sources have not moved
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

from jobs.framework import JobContext, JobResult, job
from pipeline_lib.delta_io import (
    assert_unique_keys,
    latest_commit,
    read_table,
    replace_groups,
    table_exists,
    table_version,
    write_table,
)
from pipeline_lib.gold.dimensions import build_dim_customer, build_dim_date, build_dim_product
from pipeline_lib.gold.facts import build_fact_order_lines, build_fact_orders
from pipeline_lib.gold.sessions import build_fact_sessions
from pipeline_lib.watermarks import CDF_PROPERTIES, read_watermarks, save_processed_versions

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
    """The last version of each source this consumer processed (None if never); one bounded read."""
    current = read_watermarks(ctx.spark, ctx.config.paths.lake)
    if current is None:
        return dict.fromkeys(sources)
    rows = (
        current.where((F.col("consumer") == consumer) & F.col("source").isin(*sources))
        .select("source", "version")
        .collect()  # one row per source of this job
    )
    found = {row["source"]: int(row["version"]) for row in rows}
    return {source: found.get(source) for source in sources}


def _save_versions(
    ctx: JobContext, consumer: str, versions: dict[str, int], done: dict[str, int | None]
) -> None:
    """Record the versions processed, in one append, for the sources that moved."""
    moved = {source: version for source, version in versions.items() if done.get(source) != version}
    if moved:
        save_processed_versions(ctx.spark, ctx.config.paths.lake, consumer, moved, ctx.run_id)


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


def _collect_commit_metrics(ctx: JobContext, path: str) -> tuple[int, int, int]:
    """(version, source rows, target rows written) of the table's last commit (its commit file)."""
    last = latest_commit(ctx.spark, path)
    if last is None:
        raise FileNotFoundError(f"no Delta table at {path} after writing it")
    raw = last.info.get("operationMetrics") or {}
    metrics = {k: int(v) for k, v in raw.items() if str(v).isdigit()}
    if "numOutputRows" in metrics and "numTargetRowsInserted" not in metrics:  # WRITE
        return last.version, metrics["numOutputRows"], metrics["numOutputRows"]
    written = sum(
        metrics.get(k, 0) for k in ("numTargetRowsInserted", "numTargetRowsUpdated", "numTargetRowsDeleted")
    )
    return last.version, metrics.get("numSourceRows", 0), written


def _result(ctx: JobContext, path: str, *, mode: str) -> JobResult:
    version, rows_read, rows_written = _collect_commit_metrics(ctx, path)
    return JobResult(
        rows_read=rows_read, rows_written=rows_written, delta_versions={path: version}, details={"mode": mode}
    )


def _skipped(reason: str) -> JobResult:
    return JobResult(details={"mode": "skipped", "reason": reason})


def _overwrite(ctx: JobContext, table: DataFrame, path: str) -> JobResult:
    write_table(table, path, mode="overwrite", overwrite_schema=True, properties=CDF_PROPERTIES)
    return _result(ctx, path, mode="full")


def _sync_table(ctx: JobContext, built: DataFrame, path: str, *, keys: Sequence[str]) -> JobResult:
    """Make a small table equal to ``built``, committing only if the content differs.

    Full refresh or a missing table: overwrite. Otherwise one MERGE by ``keys`` updates the
    changed rows, inserts the new ones and deletes the vanished ones, so the table's change
    feed lists exactly the rows that changed.
    """
    built = built.localCheckpoint()  # checked, compared and merged: compute it once
    assert_unique_keys(built, keys, what=f"sync of {path}")
    if ctx.full_refresh or not table_exists(ctx.spark, path):
        return _overwrite(ctx, built, path)
    existing = read_table(ctx.spark, path).select(*built.columns)
    if built.exceptAll(existing).unionByName(existing.exceptAll(built)).isEmpty():
        return _skipped("content unchanged")
    on = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    changed = " OR ".join(f"NOT (t.`{c}` <=> s.`{c}`)" for c in built.columns if c not in keys)
    (
        DeltaTable.forPath(ctx.spark, path)
        .alias("t")
        .merge(built.alias("s"), on)
        .whenMatchedUpdateAll(condition=changed or None)
        .whenNotMatchedInsertAll()
        .whenNotMatchedBySourceDelete()
        .execute()
    )
    return _result(ctx, path, mode="merge")


def _replace_keys(
    ctx: JobContext, rebuilt: DataFrame, path: str, *, keys: Sequence[str], scope: DataFrame
) -> JobResult:
    """Replace the rows of the ``scope`` keys with ``rebuilt`` (see :func:`replace_groups`)."""
    if not replace_groups(rebuilt, path, row_keys=keys, scope=scope):
        return _skipped("no rows in the changed scope")
    return _result(ctx, path, mode="incremental")


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
    result = _sync_table(ctx, built, path, keys=[key])
    _save_versions(ctx, consumer, versions, done)
    return result


@job("gold", "dim_date")
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


@job("gold", "dim_customer")
def dim_customer(ctx: JobContext) -> JobResult:
    """Customer versions (SCD2) without personal data, plus unknown and inferred members."""

    def build(customers: DataFrame, orders: DataFrame) -> DataFrame:
        return customers.transform(build_dim_customer, orders=orders)

    return _dimension_job(
        ctx, "dim_customer", key="customer_sk", sources=("silver.customers", "silver.orders"), build=build
    )


@job("gold", "dim_product")
def dim_product(ctx: JobContext) -> JobResult:
    """Product versions (SCD2), plus unknown and inferred members."""

    def build(products: DataFrame, order_items: DataFrame) -> DataFrame:
        return products.transform(build_dim_product, order_items=order_items)

    return _dimension_job(
        ctx, "dim_product", key="product_sk", sources=("silver.products", "silver.order_items"), build=build
    )


# --- Facts -----------------------------------------------------------------------------------


@job("gold", "fact_order_lines")
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
        result = _overwrite(ctx, lines, path)
    else:
        changed = _changed_order_ids(ctx, versions, done, orders=orders, order_items=order_items)
        lines = _only(order_items, changed).transform(
            build_fact_order_lines,
            orders=_only(orders, changed),
            dim_customer=customers,
            dim_product=products,
        )
        result = _replace_keys(ctx, lines, path, keys=["order_id", "line_no"], scope=changed)
    _save_versions(ctx, consumer, versions, done)
    return result


@job("gold", "fact_orders")
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
        result = _overwrite(ctx, facts, path)
    else:
        changed = _changed_order_ids(ctx, versions, done, orders=orders, order_items=order_items)
        facts = _only(orders, changed).transform(
            build_fact_orders, order_items=_only(order_items, changed), dim_customer=customers
        )
        result = _replace_keys(ctx, facts, path, keys=["order_id"], scope=changed)
    _save_versions(ctx, consumer, versions, done)
    return result


@job("gold", "fact_sessions")
def fact_sessions(ctx: JobContext) -> JobResult:
    """Visits: one row per click session, with funnel counts and conversion."""
    consumer, path = "gold.fact_sessions", ctx.path("gold", "fact_sessions")
    sources = ("silver.clicks",)
    versions, done = _latest_versions(ctx, sources), _processed_versions(ctx, consumer, sources)
    if _is_up_to_date(ctx, path, versions, done):
        return _skipped("sources unchanged")
    clicks = _read(ctx, "silver.clicks", versions)
    if _needs_full_build(ctx, path, done):
        result = _overwrite(ctx, clicks.transform(build_fact_sessions), path)
    else:
        changes = _changed_rows(ctx, "silver.clicks", done["silver.clicks"], versions["silver.clicks"])
        changed = changes.select("session_id").where(F.col("session_id").isNotNull()).distinct()
        sessions = _only(clicks, changed).transform(build_fact_sessions)
        result = _replace_keys(ctx, sessions, path, keys=["session_id"], scope=changed)
    _save_versions(ctx, consumer, versions, done)
    return result
