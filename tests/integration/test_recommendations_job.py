"""The recommendation jobs on a copy of the reference lake: tables, metrics, idempotence, the CLI.

The reference lake (tests/conftest.py) was built by every job of the graph, the three
recommendation jobs included, from six generated days. The module copies it once, runs the
three jobs again (nothing may change), evaluates the model against popularity on the
generated data, and asks ``ecom-pipeline recommend`` for a list. The erasure of a customer's
lists is checked with the other tables in tests/integration/test_erasure.py.
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass

import pytest
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from jobs.framework import run_job
from jobs.graph import select_jobs
from jobs.recommend import NoRecommendationsError, print_recommendations
from pipeline_lib.config import PipelineConfig
from pipeline_lib.gold.recommendations import (
    RecommendationInputs,
    evaluate_recommendations,
    list_population,
    ordered_products,
    select_products_as_of,
)
from pipeline_lib.io.delta import read_table, table_path, table_version
from pipeline_lib.ops.context import JobContext, JobResult, new_run_id
from tests.support import run_cli

pytestmark = pytest.mark.slow

TABLES = ("product_affinity", "recommendations", "recommendation_metrics")


@dataclass(frozen=True)
class Shop:
    config: PipelineConfig
    as_of: dt.date
    versions_before: dict[str, int | None]
    versions_after: dict[str, int | None]
    again: dict[str, JobResult]


def versions(spark: SparkSession, config: PipelineConfig) -> dict[str, int | None]:
    return {t: table_version(spark, table_path(config.paths.lake, "gold", t)) for t in TABLES}


@pytest.fixture(scope="module")
def shop(spark, reference_lake, tmp_path_factory) -> Shop:
    """A copy of the reference lake; the three jobs run again as of the date they used."""
    root = tmp_path_factory.mktemp("recommendations")
    shutil.copytree(reference_lake.paths.lake, root / "lake")
    config = reference_lake.with_paths(lake=str(root / "lake"))
    recommendations = read_table(spark, table_path(config.paths.lake, "gold", "recommendations"))
    as_of = recommendations.agg(F.max("as_of_date")).first()[0]
    before = versions(spark, config)
    # An explicit --as-of is another fingerprint: each job recomputes and compares.
    ctx = JobContext(spark=spark, config=config, run_id=new_run_id(), as_of=as_of)
    again = {t: run_job(select_jobs("gold", t)[0], ctx) for t in TABLES}
    return Shop(config, as_of, before, versions(spark, config), again)


def gold(spark: SparkSession, shop: Shop, table: str) -> DataFrame:
    return read_table(spark, table_path(shop.config.paths.lake, "gold", table))


def silver(spark: SparkSession, shop: Shop, table: str) -> DataFrame:
    return read_table(spark, table_path(shop.config.paths.lake, "silver", table))


def test_running_the_jobs_again_recomputes_the_same_rows_and_commits_nothing(shop):
    assert shop.versions_after == shop.versions_before
    assert {t: r.details["partition"] for t, r in shop.again.items()} == dict.fromkeys(TABLES, "unchanged")
    assert {t: r.rows_written for t, r in shop.again.items()} == dict.fromkeys(TABLES, 0)


def test_every_customer_with_an_order_or_a_login_gets_a_list_of_new_sellable_products(spark, shop):
    top_n = shop.config.recommendations.top_n
    rows = gold(spark, shop, "recommendations")
    assert [r["as_of_date"] for r in rows.select("as_of_date").distinct().collect()] == [shop.as_of]
    population = list_population(
        silver(spark, shop, "clicks"), orders=silver(spark, shop, "orders"), as_of=shop.as_of
    )
    assert rows.select("customer_id").distinct().exceptAll(population).isEmpty()
    assert population.exceptAll(rows.select("customer_id").distinct()).isEmpty()
    shape = rows.groupBy("customer_id").agg(
        F.count(F.lit(1)).alias("n"), F.min("rank").alias("first"), F.max("rank").alias("last"),
        F.countDistinct("product_id").alias("products"),
    )  # fmt: skip
    assert shape.where(
        (F.col("n") > top_n)
        | (F.col("first") != 1)
        | (F.col("last") != F.col("n"))
        | (F.col("products") != F.col("n"))
    ).isEmpty()
    ordered = ordered_products(
        silver(spark, shop, "orders"), order_items=silver(spark, shop, "order_items"), as_of=shop.as_of
    )
    assert rows.join(ordered, on=["customer_id", "product_id"], how="inner").isEmpty()
    sellable = select_products_as_of(silver(spark, shop, "products"), as_of=shop.as_of).where("is_sellable")
    assert rows.join(sellable, on="product_id", how="left_anti").isEmpty()
    sources = {r["source"]: r["count"] for r in rows.groupBy("source").count().collect()}
    assert set(sources) <= {"model", "co_purchase", "popularity"} and sources.get("model", 0) > 0
    assert rows.where(F.col("reason").isNull() | F.col("score").isNull()).isEmpty()


def test_affinity_pairs_are_consistent_and_back_the_co_purchase_lines(spark, shop):
    settings = shop.config.recommendations
    pairs = gold(spark, shop, "product_affinity")
    assert {r["kind"] for r in pairs.select("kind").distinct().collect()} <= {
        "bought_together",
        "viewed_together",
    }
    assert pairs.where(
        (F.col("pair_count") < settings.affinity_min_pairs)
        | (F.col("rank") > settings.affinity_top_k)
        | ~F.col("support").between(0, 1)
        | ~F.col("confidence").between(0, 1)
        | (F.col("lift") <= 0)
        | (F.col("product_id") == F.col("other_product_id"))
    ).isEmpty()
    ranks = Window.partitionBy("product_id", "kind").orderBy("rank")
    assert pairs.withColumn("n", F.row_number().over(ranks)).where(F.col("n") != F.col("rank")).isEmpty()
    # Every pair is counted from both ends: (a, b) and (b, a) have one count.
    mirrored = pairs.select(
        F.col("other_product_id").alias("product_id"), F.col("product_id").alias("other_product_id"), "kind",
        F.col("pair_count").alias("mirror_count"),
    )  # fmt: skip
    joined = pairs.join(mirrored, on=["product_id", "other_product_id", "kind"], how="inner")
    assert joined.where(F.col("pair_count") != F.col("mirror_count")).isEmpty()
    anchors = (
        gold(spark, shop, "recommendations")
        .where(F.col("source") == "co_purchase")
        .select(
            F.regexp_extract("reason", r"with (\S+)$", 1).alias("product_id"),
            F.col("product_id").alias("other"),
        )
    )
    bought = pairs.where(F.col("kind") == "bought_together").select(
        "product_id", F.col("other_product_id").alias("other")
    )
    assert anchors.join(bought, on=["product_id", "other"], how="left_anti").isEmpty()


def test_the_metrics_compare_three_methods_on_each_as_of_date(spark, shop):
    rows = {r["method"]: r for r in gold(spark, shop, "recommendation_metrics").collect()}
    assert set(rows) == {"model", "co_purchase", "popularity"}
    holdout = shop.config.recommendations.holdout_days
    for row in rows.values():
        assert row["as_of_date"] == shop.as_of and row["k"] == shop.config.recommendations.top_n
        assert row["train_end_date"] == shop.as_of - dt.timedelta(days=holdout)
        for measure in ("precision_at_k", "recall_at_k", "ndcg_at_k", "coverage"):
            assert row[measure] is None or 0 <= row[measure] <= 1
    metrics = shop.again["recommendation_metrics"].details["metrics"]
    assert set(metrics) == {"model", "co_purchase", "popularity"}


def test_on_generated_data_the_model_beats_popularity(spark, shop):
    """Six generated days: trained on the first four, tested on the purchases of the last two."""
    inputs = RecommendationInputs(
        clicks=silver(spark, shop, "clicks"),
        orders=silver(spark, shop, "orders"),
        order_items=silver(spark, shop, "order_items"),
        products=silver(spark, shop, "products"),
        customers=silver(spark, shop, "customers"),
    )
    settings = shop.config.recommendations
    metrics = evaluate_recommendations(
        inputs,
        as_of=shop.as_of,
        holdout_days=2,
        top_n=settings.top_n,
        window_days=settings.window_days,
        weights=settings.weights,
        half_life_days=settings.recency_half_life_days,
        min_interactions=settings.min_interactions,
        allow_repeat_purchases=settings.allow_repeat_purchases,
        popularity_window_days=settings.popularity_window_days,
        affinity_top_k=settings.affinity_top_k,
        affinity_min_pairs=settings.affinity_min_pairs,
        affinity_max_basket_products=settings.affinity_max_basket_products,
        als=settings.als,
    )
    rows = {r["method"]: r for r in metrics.collect()}
    assert rows["model"]["test_users"] >= 5
    assert rows["model"]["users_scored"] > 0
    assert rows["model"]["ndcg_at_k"] > rows["popularity"]["ndcg_at_k"]


def test_recommend_prints_a_customers_list_with_reasons(spark, shop):
    rows = gold(spark, shop, "recommendations")
    customer = rows.where(F.col("source") == "model").agg(F.min("customer_id")).first()[0]
    expected = rows.where(F.col("customer_id") == customer).count()

    completed = run_cli("recommend", "--customer-id", customer, "--lake", shop.config.paths.lake)

    lines = completed.stdout.splitlines()
    assert lines[0] == f"recommendations for {customer} as of {shop.as_of} ({expected} products)"
    assert [line.split(".")[0].strip() for line in lines[1::2]] == [str(n) for n in range(1, expected + 1)]
    assert "personal model" in completed.stdout
    assert completed.returncode == 0


def test_recommend_says_in_one_line_when_a_customer_has_no_list(spark, shop):
    printed: list[str] = []
    with pytest.raises(NoRecommendationsError, match="has no recommendations as of"):
        print_recommendations(spark, shop.config.paths.lake, "C9999999", write=printed.append)
    with pytest.raises(NoRecommendationsError, match=r"no table gold\.recommendations"):
        print_recommendations(spark, shop.config.paths.lake + "-missing", "C0000001", write=printed.append)
    assert printed == []
