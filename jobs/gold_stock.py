"""Gold stock jobs: ``fact_inventory_daily`` and ``stock_signals`` (docs/campaigns_and_stock.md).

``fact_inventory_daily`` is a fact like ``fact_sessions``: rebuilt whole the first time (or
on ``--full-refresh``), then only for the ``(product, location, day)`` keys whose snapshots
changed in silver.inventory since the version it last processed (the change data feed),
replaced by key; the versions it read travel in its commit. ``stock_signals`` is an as-of
aggregate like ``customer_segments``: one ``as_of_date`` partition per run, written only
when its rows differ (:func:`pipeline_lib.gold.as_of.publish_as_of`). Without an inventory
source neither job has anything to read, and the runner skips both.

    ecom-pipeline run --layer gold --job fact_inventory_daily
    ecom-pipeline run --layer gold --job stock_signals --as-of 2026-03-28
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from statistics import NormalDist

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline_lib.gold.as_of import MissingInputError, inputs_fingerprint, publish_as_of, read_silver
from pipeline_lib.gold.facts import of_keys
from pipeline_lib.gold.steps import (
    is_up_to_date,
    needs_full_build,
    overwrite,
    pin_inputs,
    replace_keys,
    skipped,
)
from pipeline_lib.gold.stock import build_fact_inventory_daily, daily_units_sold, stock_signals
from pipeline_lib.io.delta import read_table, table_version
from pipeline_lib.ops.context import JobContext, JobResult

# The code stock_signals' rows depend on (its inputs fingerprint changes with it).
_STOCK_CODE = (
    "jobs.gold_stock",
    "pipeline_lib.gold.as_of",
    "pipeline_lib.gold.schemas",
    "pipeline_lib.gold.stock",
    "pipeline_lib.silver.schemas",
)


def fact_inventory_daily(ctx: JobContext) -> JobResult:
    """Closing stock per product, location and day that has a snapshot (a missing day is no row)."""
    sources = ("silver.inventory",)
    path, inputs = ctx.path("gold", "fact_inventory_daily"), pin_inputs(ctx, "fact_inventory_daily", sources)
    if is_up_to_date(ctx, path, inputs):
        return skipped("sources unchanged")
    inventory = inputs.read("silver.inventory")
    if needs_full_build(ctx, path, inputs):
        result = overwrite(ctx, inventory.transform(build_fact_inventory_daily), path, inputs)
    else:
        days = (
            inputs.changes("silver.inventory")
            .select("product_id", "location_id", "snapshot_date")
            .where(F.col("product_id").isNotNull() & F.col("location_id").isNotNull())
            .distinct()
            .localCheckpoint()
        )
        rebuilt = of_keys(inventory, days).transform(build_fact_inventory_daily)
        scope = days.withColumnRenamed("snapshot_date", "date")
        result = replace_keys(
            ctx, rebuilt, path, keys=["product_id", "location_id", "date"], scope=scope, inputs=inputs
        )
    inputs.record()
    return result


def service_level_z(service_level: float) -> float:
    """The standard normal quantile of a cycle service level (0.95 -> 1.645)."""
    return NormalDist().inv_cdf(service_level)


def build_stock_signals(ctx: JobContext) -> JobResult:
    """Stock, demand over in-stock days, cover, lost sales and a reorder point per product as of a date.

    The default as-of date is the other aggregates' (the latest order date, bounded by the
    latest delivery), so one run's aggregates describe the same day.
    """
    silver, versions = read_silver(ctx, ("orders", "order_items"))
    daily_path = ctx.path("gold", "fact_inventory_daily")
    daily_version = table_version(ctx.spark, daily_path)
    if daily_version is None:
        raise MissingInputError(f"no Delta table gold.fact_inventory_daily at {daily_path}: run it first")
    daily = read_table(ctx.spark, daily_path, version=daily_version)
    stock = ctx.config.stock
    z = service_level_z(stock.service_level)

    def build(as_of: dt.date) -> DataFrame:
        first = as_of - dt.timedelta(days=stock.long_window_days - 1)
        units = silver["orders"].transform(
            daily_units_sold, order_items=silver["order_items"], from_date=first, to_date=as_of
        )
        return daily.transform(
            stock_signals,
            units_sold=units,
            as_of=as_of,
            short_window_days=stock.short_window_days,
            long_window_days=stock.long_window_days,
            z=z,
            default_lead_time_days=stock.default_lead_time_days,
            review_period_days=stock.review_period_days,
        )

    fingerprint = inputs_fingerprint(
        {**versions, "gold.fact_inventory_daily": daily_version},
        ctx.as_of,
        dataclasses.asdict(stock),
        code_modules=_STOCK_CODE,
    )
    return publish_as_of(ctx, "stock_signals", silver["orders"], build, fingerprint)
