"""Gold campaign jobs: ``campaign_audiences`` and ``campaign_results`` (docs/campaigns_and_stock.md).

Both are as-of aggregates like ``customer_segments`` (one ``as_of_date`` partition per run,
written only when its rows differ, :func:`pipeline_lib.gold.as_of.publish_as_of`) over the
campaigns of ``conf/campaigns.yaml``. Segments come from the same function as
``gold.customer_segments`` (:func:`pipeline_lib.gold.segments.customer_segments`) applied
to the same silver tables, so an audience never depends on which as-of dates of that table
happen to be published.

    ecom-pipeline run --layer gold --job campaign_audiences --as-of 2026-03-03
    ecom-pipeline run --layer gold --job campaign_results
    ecom-pipeline export-audience winback_email --as-of 2026-03-03 --out winback.csv
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Mapping, Sequence
from statistics import NormalDist
from typing import Any

from pyspark.sql import DataFrame

from pipeline_lib.config import Campaign
from pipeline_lib.gold.as_of import inputs_fingerprint, publish_as_of, read_silver
from pipeline_lib.gold.campaigns import campaign_audiences, campaign_results, consenting_customers
from pipeline_lib.gold.schemas import CAMPAIGN_AUDIENCES_SCHEMA, CAMPAIGN_RESULTS_SCHEMA
from pipeline_lib.gold.segments import customer_segments
from pipeline_lib.io.frames import local_frame
from pipeline_lib.ops.context import JobContext, JobResult

# The code the campaign tables' rows depend on (their inputs fingerprint changes with it).
_CAMPAIGN_CODE = (
    "jobs.gold_campaigns",
    "pipeline_lib.gold.as_of",
    "pipeline_lib.gold.campaigns",
    "pipeline_lib.gold.facts",
    "pipeline_lib.gold.schemas",
    "pipeline_lib.gold.segments",
    "pipeline_lib.silver.schemas",
)


def _settings(ctx: JobContext) -> dict[str, Any]:
    return {
        "campaigns": dataclasses.asdict(ctx.config.campaigns),
        "score_buckets": ctx.config.segments.score_buckets,
        "mapping": [(rule.segment, rule.when) for rule in ctx.config.segments.mapping],
    }


def _segments_as_of(ctx: JobContext, silver: Mapping[str, DataFrame], as_of: dt.date) -> DataFrame:
    """customer_segments' rows as of ``as_of``, computed as the customer_segments job does."""
    return customer_segments(
        silver["orders"],
        order_items=silver["order_items"],
        as_of=as_of,
        score_buckets=ctx.config.segments.score_buckets,
        mapping=[(rule.segment, rule.when) for rule in ctx.config.segments.mapping],
    )


def build_campaign_audiences(ctx: JobContext) -> JobResult:
    """Members of each campaign as of a date: targeted segment, current consent, stable group."""
    silver, versions = read_silver(ctx, ("orders", "order_items", "customers"))
    campaigns = ctx.config.campaigns.resolved()

    def build(as_of: dt.date) -> DataFrame:
        if not campaigns:  # nothing to target: no segments to compute
            return local_frame(ctx.spark, [], CAMPAIGN_AUDIENCES_SCHEMA)
        return _segments_as_of(ctx, silver, as_of).transform(
            campaign_audiences,
            consenting=consenting_customers(silver["customers"]),  # consent now, not at the segment's date
            campaigns=campaigns,
            as_of=as_of,
        )

    fingerprint = inputs_fingerprint(versions, ctx.as_of, _settings(ctx), code_modules=_CAMPAIGN_CODE)
    return publish_as_of(ctx, "campaign_audiences", silver["orders"], build, fingerprint)


def launch_audiences(
    ctx: JobContext, silver: Mapping[str, DataFrame], campaigns: Sequence[Campaign]
) -> DataFrame:
    """The audience each campaign started with, rebuilt: segments as of the day before its start,
    consent as it stood at the start (00:00 UTC), the same stable groups."""
    frames = []
    for start in sorted({c.start_date for c in campaigns}):
        starting = [c for c in campaigns if c.start_date == start]
        launched = dt.datetime.combine(start, dt.time(), tzinfo=dt.UTC)
        day_before = start - dt.timedelta(days=1)
        frames.append(
            _segments_as_of(ctx, silver, day_before).transform(
                campaign_audiences,
                consenting=consenting_customers(silver["customers"], at=launched),
                campaigns=starting,
                as_of=day_before,
            )
        )
    if not frames:
        return local_frame(ctx.spark, [], CAMPAIGN_AUDIENCES_SCHEMA)
    return functools.reduce(DataFrame.unionByName, frames)


def confidence_z(confidence_level: float) -> float:
    """The two-sided standard normal quantile of a confidence level (0.95 -> 1.960)."""
    return NormalDist().inv_cdf(1 - (1 - confidence_level) / 2)


def build_campaign_results(ctx: JobContext) -> JobResult:
    """Buyers, orders and revenue per campaign group after the start, with the uplift and its interval."""
    silver, versions = read_silver(ctx, ("orders", "order_items", "customers"))
    campaigns = ctx.config.campaigns.resolved()
    confidence = ctx.config.campaigns.confidence_level

    def build(as_of: dt.date) -> DataFrame:
        started = [c for c in campaigns if c.start_date <= as_of]
        if not started:  # nothing to measure yet: no audience to rebuild, no order to read
            return local_frame(ctx.spark, [], CAMPAIGN_RESULTS_SCHEMA)
        return launch_audiences(ctx, silver, started).transform(
            campaign_results,
            orders=silver["orders"],
            order_items=silver["order_items"],
            campaigns=started,
            as_of=as_of,
            z=confidence_z(confidence),
            confidence_level=confidence,
        )

    fingerprint = inputs_fingerprint(versions, ctx.as_of, _settings(ctx), code_modules=_CAMPAIGN_CODE)
    return publish_as_of(ctx, "campaign_results", silver["orders"], build, fingerprint)
