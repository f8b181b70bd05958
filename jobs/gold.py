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

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline_lib.gold.dimensions import build_dim_customer, build_dim_date, build_dim_product
from pipeline_lib.gold.facts import build_fact_order_lines, build_fact_orders, changed_order_ids, of_keys
from pipeline_lib.gold.sessions import build_fact_sessions, session_dates
from pipeline_lib.gold.steps import (
    is_up_to_date,
    job_result,
    needs_full_build,
    overwrite,
    pin_inputs,
    replace_keys,
    skipped,
)
from pipeline_lib.io.delta import assert_unique_keys, sync_table, table_exists
from pipeline_lib.ops.context import JobContext, JobResult
from pipeline_lib.ops.watermarks import PinnedInputs

# --- Dimensions ------------------------------------------------------------------------------


def _dimension_job(
    ctx: JobContext, table: str, *, key: str, sources: Sequence[str], build: Callable[..., DataFrame]
) -> JobResult:
    """Rebuild a dimension from its sources (read in ``sources`` order) and sync it by ``key``.

    Full refresh or a missing table: overwrite. Otherwise one MERGE changes the rows that
    differ, and nothing is committed when none do.
    """
    path, inputs = ctx.path("gold", table), pin_inputs(ctx, table, sources)
    if is_up_to_date(ctx, path, inputs):
        return skipped("sources unchanged")
    built = build(*(inputs.read(s) for s in sources)).localCheckpoint()  # compared and merged: once
    if ctx.full_refresh or not table_exists(ctx.spark, path):
        assert_unique_keys(built, [key], what=f"gold.{table}")
        result = overwrite(ctx, built, path, inputs)
    else:
        result = job_result(
            ctx, path, sync_table(built, path, keys=[key], user_metadata=inputs.state), mode="merge"
        )
    inputs.record()
    return result


def dim_date(ctx: JobContext) -> JobResult:
    """Calendar days of every year with orders or click events."""

    def build(orders: DataFrame, clicks: DataFrame) -> DataFrame:
        # Each table's first and last date alone: Delta answers a MIN / MAX over one table
        # from its log (no scan); over the union of both tables' dates it scans every row.
        bounds = [
            table.agg(F.min(column).alias("first"), F.max(column).alias("last"))
            for table, column in ((orders, "order_date"), (clicks, "event_date"))
        ]
        dates = bounds[0].unionByName(bounds[1]).select(F.explode(F.array("first", "last")).alias("date"))
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


def _changed_orders(inputs: PinnedInputs, orders: DataFrame, order_items: DataFrame) -> DataFrame:
    dims = {
        "customer_changes": "gold.dim_customer",
        "product_changes": "gold.dim_product",
    }
    # Read three times (the orders, their lines, the keys to replace): computed once, not three
    # times over four change feeds.
    return changed_order_ids(
        inputs.changes("silver.orders"),
        inputs.changes("silver.order_items"),
        orders=orders,
        order_items=order_items,
        **{name: inputs.changes(source) for name, source in dims.items() if source in inputs.versions},
    ).localCheckpoint()


def fact_order_lines(ctx: JobContext) -> JobResult:
    """Order lines (current state) with point-in-time customer and product keys."""
    sources = ("silver.orders", "silver.order_items", "gold.dim_customer", "gold.dim_product")
    path, inputs = ctx.path("gold", "fact_order_lines"), pin_inputs(ctx, "fact_order_lines", sources)
    if is_up_to_date(ctx, path, inputs):
        return skipped("sources unchanged")
    orders, order_items, customers, products = (inputs.read(s) for s in sources)
    if needs_full_build(ctx, path, inputs):
        lines = order_items.transform(
            build_fact_order_lines, orders=orders, dim_customer=customers, dim_product=products
        )
        result = overwrite(ctx, lines, path, inputs)
    else:
        changed = _changed_orders(inputs, orders, order_items)
        lines = of_keys(order_items, changed).transform(
            build_fact_order_lines,
            orders=of_keys(orders, changed),
            dim_customer=customers,
            dim_product=products,
        )
        result = replace_keys(ctx, lines, path, keys=["order_id", "line_no"], scope=changed, inputs=inputs)
    inputs.record()
    return result


def fact_orders(ctx: JobContext) -> JobResult:
    """Orders (current state) with line totals in the base currency and the revenue flag."""
    sources = ("silver.orders", "silver.order_items", "gold.dim_customer")
    path, inputs = ctx.path("gold", "fact_orders"), pin_inputs(ctx, "fact_orders", sources)
    if is_up_to_date(ctx, path, inputs):
        return skipped("sources unchanged")
    orders, order_items, customers = (inputs.read(s) for s in sources)
    if needs_full_build(ctx, path, inputs):
        facts = orders.transform(build_fact_orders, order_items=order_items, dim_customer=customers)
        result = overwrite(ctx, facts, path, inputs)
    else:
        changed = _changed_orders(inputs, orders, order_items)
        facts = of_keys(orders, changed).transform(
            build_fact_orders, order_items=of_keys(order_items, changed), dim_customer=customers
        )
        result = replace_keys(ctx, facts, path, keys=["order_id"], scope=changed, inputs=inputs)
    inputs.record()
    return result


def fact_sessions(ctx: JobContext) -> JobResult:
    """Visits: one row per click session, with funnel counts and conversion."""
    path, inputs = ctx.path("gold", "fact_sessions"), pin_inputs(ctx, "fact_sessions", ("silver.clicks",))
    if is_up_to_date(ctx, path, inputs):
        return skipped("sources unchanged")
    clicks = inputs.read("silver.clicks")
    if needs_full_build(ctx, path, inputs):
        result = overwrite(ctx, clicks.transform(build_fact_sessions), path, inputs)
    else:
        changes = inputs.changes("silver.clicks").select("session_id").where(F.col("session_id").isNotNull())
        changed = changes.distinct().localCheckpoint()  # read three times: dates, events, keys to replace
        if changed.count() <= ctx.config.pipeline.broadcast_max_rows:
            # A day's sessions, looked up in scans of silver.clicks and of the fact table: sent to
            # each task instead of shuffling both whole tables to meet them.
            changed = F.broadcast(changed)
        # The whole rows of the changed sessions' days only (Delta skips the other partitions).
        dates = [row["event_date"] for row in session_dates(clicks, changed).collect()]  # one row per day
        in_dates = F.col("event_date").isin([d for d in dates if d is not None])
        near = clicks.where(in_dates | F.col("event_date").isNull() if None in dates else in_dates)
        sessions = of_keys(near, changed).transform(build_fact_sessions)
        result = replace_keys(ctx, sessions, path, keys=["session_id"], scope=changed, inputs=inputs)
    inputs.record()
    return result
