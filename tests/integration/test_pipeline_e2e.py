"""The whole pipeline on generated data: every layer and the contract's promises.

One small landing zone (with the generator's default defects) goes through bronze, silver
and gold once per test session (the ``reference_lake`` fixture); the tests then check what
analysts and operators rely on. (Re-runs: tests/integration/test_idempotence.py.)
"""

from __future__ import annotations

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline_lib.config import PipelineConfig
from pipeline_lib.io.delta import read_table, table_path

pytestmark = pytest.mark.slow

GOLD_CONTRACT = {
    "dim_date": ["date_key", "date", "year", "quarter", "month", "day_of_week", "is_weekend"],
    "dim_customer": [
        "customer_sk",
        "customer_id",
        "email_hash",
        "country",
        "city",
        "valid_from",
        "valid_to",
        "is_current",
    ],
    "dim_product": [
        "product_sk",
        "product_id",
        "sku",
        "name",
        "brand",
        "category_l1",
        "category_l2",
        "category_l3",
        "list_price",
        "is_active",
        "valid_from",
        "valid_to",
        "is_current",
    ],
    "fact_order_lines": [
        "order_id",
        "line_no",
        "order_date_key",
        "customer_id",
        "customer_sk",
        "product_id",
        "product_sk",
        "quantity",
        "unit_price",
        "discount_amount",
        "net_amount_base",
        "order_status",
        "channel",
    ],
    "fact_orders": [
        "order_id",
        "customer_id",
        "order_ts",
        "order_date_key",
        "order_status",
        "channel",
        "ship_country",
        "item_count",
        "net_amount_base",
        "shipping_fee_base",
    ],
    "fact_sessions": [
        "session_id",
        "anonymous_id",
        "customer_id",
        "start_ts",
        "end_ts",
        "duration_s",
        "events",
        "product_views",
        "add_to_carts",
        "purchases",
        "converted",
    ],
    "customer_segments": [
        "customer_id",
        "as_of_date",
        "recency_days",
        "frequency",
        "monetary",
        "r_score",
        "f_score",
        "m_score",
        "segment",
    ],
    "product_popularity": [
        "product_id",
        "as_of_date",
        "window_days",
        "views",
        "add_to_carts",
        "purchases",
        "units",
        "revenue",
        "view_to_cart_rate",
        "cart_to_purchase_rate",
        "rank_in_category",
        "rank_overall",
    ],
    "recommendations": ["customer_id", "as_of_date", "rank", "product_id", "score", "source"],
    "product_affinity": [
        "product_id",
        "other_product_id",
        "kind",
        "as_of_date",
        "support",
        "confidence",
        "lift",
    ],
    "recommendation_metrics": [
        "as_of_date",
        "method",
        "k",
        "precision_at_k",
        "recall_at_k",
        "ndcg_at_k",
        "coverage",
    ],
}
NON_REVENUE = ("cancelled", "returned")


@pytest.fixture(scope="module")
def pipeline(reference_lake):
    """The session's reference lake: generated data through every job once (tests/conftest.py)."""
    return reference_lake, None


def gold(spark: SparkSession, config: PipelineConfig, table: str) -> DataFrame:
    return read_table(spark, table_path(config.paths.lake, "gold", table))


def silver(spark: SparkSession, config: PipelineConfig, table: str) -> DataFrame:
    return read_table(spark, table_path(config.paths.lake, "silver", table))


def test_every_gold_table_keeps_the_contract(spark, pipeline):
    config, _ = pipeline
    for table, columns in GOLD_CONTRACT.items():
        frame = gold(spark, config, table)
        missing = [c for c in columns if c not in frame.columns]
        assert not missing, f"gold.{table} lacks {missing}"
        assert frame.count() > 0, f"gold.{table} is empty"


def test_revenue_in_gold_equals_revenue_computed_from_silver(spark, pipeline):
    config, _ = pipeline
    revenue_orders = silver(spark, config, "orders").where(~F.col("order_status").isin(*NON_REVENUE))
    expected = (
        silver(spark, config, "order_items")
        .join(revenue_orders.select("order_id"), on="order_id", how="inner")
        .agg(F.sum("net_amount_base"))
        .first()[0]
    )
    lines = gold(spark, config, "fact_order_lines")
    actual = lines.where(~F.col("order_status").isin(*NON_REVENUE)).agg(F.sum("net_amount_base")).first()[0]
    orders_total = (
        gold(spark, config, "fact_orders")
        .where(~F.col("order_status").isin(*NON_REVENUE))
        .agg(F.sum("net_amount_base"))
        .first()[0]
    )
    assert expected is not None and expected > 0
    assert actual == expected
    assert orders_total == expected


def test_every_order_line_reaches_the_fact_even_with_unknown_product(spark, pipeline):
    config, _ = pipeline
    silver_lines = silver(spark, config, "order_items").select("order_id", "line_no")
    fact_lines = gold(spark, config, "fact_order_lines")
    assert fact_lines.select("order_id", "line_no").exceptAll(silver_lines).count() == 0
    assert silver_lines.exceptAll(fact_lines.select("order_id", "line_no")).count() == 0
    assert fact_lines.where(F.col("product_sk").isNull() | F.col("customer_sk").isNull()).count() == 0


def test_no_personal_data_in_gold(spark, pipeline):
    config, _ = pipeline
    customers = silver(spark, config, "customers")
    secrets = set()
    for column in ("email", "first_name", "last_name", "phone"):
        secrets |= {r[0] for r in customers.select(column).where(F.length(column) > 3).distinct().collect()}
    assert secrets
    for table in GOLD_CONTRACT:
        frame = gold(spark, config, table)
        text_columns = [f.name for f in frame.schema.fields if isinstance(f.dataType, T.StringType)]
        if not text_columns:
            continue
        values = frame.select(F.explode(F.array(*[F.col(c) for c in text_columns])).alias("v")).distinct()
        leaked = values.where(F.col("v").isin(list(secrets))).limit(5).collect()
        assert not leaked, f"gold.{table} holds personal data: {leaked}"
