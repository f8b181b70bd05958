"""Gold actions as of a date: ``product_affinity``, ``recommendations`` and ``recommendation_metrics``.

Each job computes ONE as-of date (``--as-of``, else the latest order date of silver.orders)
from the silver tables of the configured window and replaces that date's partition of its
table as the gold aggregates do (:mod:`pipeline_lib.gold.as_of`: the inputs' fingerprint in
the commit's ``userMetadata``, nothing recomputed when it matches, nothing written when the
partition would come out the same). See ``docs/recommendations.md``.

    ecom-pipeline run --layer gold --job recommendations --as-of 2026-03-30
    ecom-pipeline run --layer gold --job recommendation_metrics
    ecom-pipeline recommend --customer-id C0000042
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from pyspark.sql import DataFrame, Row
from pyspark.sql import functions as F

from pipeline_lib.config import RecommendationsConfig
from pipeline_lib.gold.affinity import product_affinity
from pipeline_lib.gold.as_of import AS_OF_COLUMN, inputs_fingerprint, publish_as_of, read_silver
from pipeline_lib.gold.recommendations import (
    RecommendationInputs,
    evaluate_recommendations,
    metrics_line,
    recommendations,
)
from pipeline_lib.io.delta import read_table, table_exists
from pipeline_lib.ops.context import JobContext, JobResult

# The code the three tables' rows depend on: a change to it changes the fingerprint.
CODE_MODULES = (
    "jobs.gold_recommendations",
    "pipeline_lib.gold.affinity",
    "pipeline_lib.gold.as_of",
    "pipeline_lib.gold.facts",
    "pipeline_lib.gold.recommendations",
    "pipeline_lib.gold.schemas",
    "pipeline_lib.gold.segments",
    "pipeline_lib.silver.schemas",
)
_SILVER = ("orders", "order_items", "clicks", "products", "customers")
_REPORTED = ("precision_at_k", "recall_at_k", "ndcg_at_k", "coverage", "users_scored")


def _read_inputs(ctx: JobContext) -> tuple[RecommendationInputs, dict[str, int]]:
    silver, versions = read_silver(ctx, _SILVER)
    return RecommendationInputs(**{table: silver[table] for table in _SILVER}), versions


def _model_settings(settings: RecommendationsConfig) -> dict[str, Any]:
    """The keyword values :func:`recommendations` and :func:`evaluate_recommendations` share."""
    return {
        "top_n": settings.top_n,
        "window_days": settings.window_days,
        "weights": settings.weights,
        "half_life_days": settings.recency_half_life_days,
        "min_interactions": settings.min_interactions,
        "allow_repeat_purchases": settings.allow_repeat_purchases,
        "popularity_window_days": settings.popularity_window_days,
        "affinity_top_k": settings.affinity_top_k,
        "affinity_min_pairs": settings.affinity_min_pairs,
        "affinity_max_basket_products": settings.affinity_max_basket_products,
        "als": settings.als,
    }


# --- Jobs ------------------------------------------------------------------------------------


def build_product_affinity(ctx: JobContext) -> JobResult:
    """Pairs of products bought together (same order) and viewed together (same session) as of a date."""
    silver, versions = read_silver(ctx, ("orders", "order_items", "clicks"))
    settings = ctx.config.recommendations
    chosen = {
        "window_days": settings.window_days,
        "top_k": settings.affinity_top_k,
        "min_pairs": settings.affinity_min_pairs,
        "max_basket_products": settings.affinity_max_basket_products,
    }

    def build(as_of: dt.date) -> DataFrame:
        return product_affinity(
            silver["clicks"],
            orders=silver["orders"],
            order_items=silver["order_items"],
            as_of=as_of,
            **chosen,
        )

    fingerprint = inputs_fingerprint(versions, ctx.as_of, chosen, code_modules=CODE_MODULES)
    return publish_as_of(ctx, "product_affinity", silver["orders"], build, fingerprint)


def build_recommendations(ctx: JobContext) -> JobResult:
    """The top products per customer as of a date: ALS, co-purchase, then the popularity fallback."""
    inputs, versions = _read_inputs(ctx)
    chosen = _model_settings(ctx.config.recommendations)

    def build(as_of: dt.date) -> DataFrame:
        return recommendations(inputs, as_of=as_of, **chosen)

    settings = dataclasses.asdict(ctx.config.recommendations)
    settings.pop("holdout_days")  # the evaluation's only
    fingerprint = inputs_fingerprint(versions, ctx.as_of, settings, code_modules=CODE_MODULES)
    return publish_as_of(ctx, "recommendations", inputs.orders, build, fingerprint)


def build_recommendation_metrics(ctx: JobContext) -> JobResult:
    """Precision, recall, NDCG at k and coverage of the model, co-purchase and popularity, as of a date.

    The run's progress line and its record's details report the metrics.
    """
    inputs, versions = _read_inputs(ctx)
    settings = ctx.config.recommendations
    chosen = _model_settings(settings)

    def build(as_of: dt.date) -> DataFrame:
        return evaluate_recommendations(inputs, as_of=as_of, holdout_days=settings.holdout_days, **chosen)

    fingerprint = inputs_fingerprint(
        versions, ctx.as_of, dataclasses.asdict(settings), code_modules=CODE_MODULES
    )
    result = publish_as_of(ctx, "recommendation_metrics", inputs.orders, build, fingerprint)
    as_of = dt.date.fromisoformat(result.details["as_of_date"])
    rows = collect_metrics(ctx, as_of)
    ctx.progress(f"gold.recommendation_metrics: {metrics_line(as_of, rows)}")
    result.details["metrics"] = {row["method"]: {name: row[name] for name in _REPORTED} for row in rows}
    return result


def collect_metrics(ctx: JobContext, as_of: dt.date) -> list[Row]:
    """The metrics rows of one as-of date: one per method (bounded), ordered by method."""
    path = ctx.path("gold", "recommendation_metrics")
    if not table_exists(ctx.spark, path):
        return []
    metrics = read_table(ctx.spark, path).where(F.col(AS_OF_COLUMN) == F.lit(as_of))
    return metrics.orderBy("method").collect()
