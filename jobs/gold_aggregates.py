"""Gold aggregates as of a date: ``customer_segments`` (RFM) and ``product_popularity``.

Each run computes ONE as-of date (``--as-of``, else the latest order date in
silver.orders) from the silver tables and replaces exactly that date's partition of
``<lake>/gold/<table>`` (partitioned by ``as_of_date``, Delta ``replaceWhere``); the other
as-of dates stay. When the partition already holds the same rows, nothing is written, so
a re-run commits nothing. Each write records its inputs' fingerprint (the silver versions
read, ``--as-of``, the settings and the code) in the commit's ``userMetadata``; a run whose
fingerprint is the table's latest commit's skips the computation too. ``--full-refresh``
rewrites the partition unconditionally (the content is the same: every run recomputes the
as-of date from silver). See ``docs/segments_and_popularity.md``.

    ecom-pipeline run --layer gold --job customer_segments --as-of 2026-03-07
    ecom-pipeline run --layer gold --job product_popularity
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame

from pipeline_lib.gold.as_of import inputs_fingerprint, publish_as_of, read_silver
from pipeline_lib.gold.popularity import product_popularity
from pipeline_lib.gold.segments import customer_segments
from pipeline_lib.ops.context import JobContext, JobResult

# --- Jobs ------------------------------------------------------------------------------------


def build_customer_segments(ctx: JobContext) -> JobResult:
    """RFM scores and segment per customer as of a date (rows_read: silver.orders rows)."""
    silver, versions = read_silver(ctx, ("orders", "order_items"))
    score_buckets = ctx.config.segments.score_buckets
    mapping = [(rule.segment, rule.when) for rule in ctx.config.segments.mapping]
    settings = {"score_buckets": score_buckets, "mapping": mapping}

    def build(as_of: dt.date) -> DataFrame:
        return customer_segments(
            silver["orders"],
            order_items=silver["order_items"],
            as_of=as_of,
            score_buckets=score_buckets,
            mapping=mapping,
        )

    fingerprint = inputs_fingerprint(versions, ctx.as_of, settings)
    return publish_as_of(ctx, "customer_segments", silver["orders"], build, fingerprint)


def build_product_popularity(ctx: JobContext) -> JobResult:
    """Views, carts, purchases, revenue and ranks per product and window as of a date."""
    silver, versions = read_silver(ctx, ("orders", "order_items", "clicks", "products"))
    windows_days = ctx.config.pipeline.popularity_windows_days

    def build(as_of: dt.date) -> DataFrame:
        return product_popularity(
            silver["clicks"],
            orders=silver["orders"],
            order_items=silver["order_items"],
            products=silver["products"],
            as_of=as_of,
            windows_days=windows_days,
        )

    fingerprint = inputs_fingerprint(versions, ctx.as_of, {"windows_days": windows_days})
    return publish_as_of(ctx, "product_popularity", silver["orders"], build, fingerprint)
