"""Unit tests of pipeline_lib.gold.affinity: products bought together and viewed together."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from pipeline_lib.gold.affinity import (
    AffinityArgumentError,
    order_baskets,
    product_affinity,
    product_pairs,
    session_baskets,
    top_pairs_per_product,
)
from pipeline_lib.gold.schemas import PRODUCT_AFFINITY_SCHEMA, PRODUCT_AFFINITY_TABLE_SCHEMA
from pipeline_lib.silver.schemas import BASE_MONEY

AS_OF = dt.date(2024, 1, 31)
D = dt.date
BASKETS_SCHEMA = "basket_id string, product_id string"
ORDERS_SCHEMA = "order_id string, customer_id string, order_status string, order_date date"
ITEMS_SCHEMA = T.StructType(
    [
        T.StructField("order_id", T.StringType()),
        T.StructField("line_no", T.IntegerType()),
        T.StructField("product_id", T.StringType()),
        T.StructField("quantity", T.IntegerType()),
        T.StructField("net_amount_base", BASE_MONEY),
    ]
)
CLICKS_SCHEMA = "session_id string, event_type string, event_date date, product_id string"


def baskets(spark: SparkSession, content: dict[str, str]) -> DataFrame:
    """``{"b1": "AB"}``: basket b1 holds products A and B."""
    return spark.createDataFrame(
        [(basket, product) for basket, products in content.items() for product in products], BASKETS_SCHEMA
    )


def measures(frame: DataFrame) -> dict[tuple[str, str], tuple]:
    return {
        (r["product_id"], r["other_product_id"]): (r["pair_count"], r["support"], r["confidence"], r["lift"])
        for r in frame.collect()
    }


def test_the_table_schema_is_the_contract_plus_the_count_and_rank() -> None:
    assert PRODUCT_AFFINITY_SCHEMA.fieldNames() == [
        "product_id", "other_product_id", "kind", "as_of_date", "support", "confidence", "lift",
    ]  # fmt: skip
    assert PRODUCT_AFFINITY_TABLE_SCHEMA.fieldNames() == [
        *PRODUCT_AFFINITY_SCHEMA.fieldNames(),
        "pair_count",
        "rank",
    ]


def test_support_confidence_and_lift_of_every_ordered_pair(spark: SparkSession) -> None:
    source = baskets(spark, {"b1": "AB", "b2": "AB", "b3": "AC", "b4": "B"})

    actual = product_pairs(source, kind="bought_together", min_pairs=1, max_basket_products=10)

    assert measures(actual) == {
        # 4 baskets; A in 3, B in 3, C in 1
        ("A", "B"): (2, 0.5, 2 / 3, 2 * 4 / (3 * 3)),
        ("B", "A"): (2, 0.5, 2 / 3, 2 * 4 / (3 * 3)),
        ("A", "C"): (1, 0.25, 1 / 3, 1 * 4 / (3 * 1)),
        ("C", "A"): (1, 0.25, 1.0, 1 * 4 / (1 * 3)),
    }
    assert {r["kind"] for r in actual.collect()} == {"bought_together"}


def test_rare_pairs_and_oversized_baskets_are_left_out(spark: SparkSession) -> None:
    source = baskets(spark, {"b1": "AB", "b2": "AB", "b3": "AC", "bot": "ABCDEF"})

    actual = product_pairs(source, kind="viewed_together", min_pairs=2, max_basket_products=5)

    assert measures(actual) == {
        ("A", "B"): (2, 2 / 3, 2 / 3, 2 * 3 / (3 * 2)),
        ("B", "A"): (2, 2 / 3, 1.0, 2 * 3 / (2 * 3)),
    }


@pytest.mark.parametrize(
    ("arguments", "message"),
    [({"min_pairs": 0}, "min_pairs"), ({"max_basket_products": 1}, "max_basket_products")],
)
def test_unusable_pair_settings_are_refused(spark: SparkSession, arguments: dict, message: str) -> None:
    settings = {"kind": "bought_together", "min_pairs": 1, "max_basket_products": 10, **arguments}
    with pytest.raises(AffinityArgumentError, match=message):
        product_pairs(baskets(spark, {}), **settings)


def test_top_k_ranks_by_lift_then_confidence_then_count_then_id(spark: SparkSession) -> None:
    pairs = spark.createDataFrame(
        [
            ("A", "B", "k", 2, 0.1, 0.5, 2.0),
            ("A", "C", "k", 3, 0.1, 0.6, 2.0),
            ("A", "D", "k", 5, 0.1, 0.6, 2.0),
            ("A", "E", "k", 5, 0.1, 0.6, 2.0),
            ("A", "F", "k", 9, 0.1, 0.9, 1.0),
        ],
        "product_id string, other_product_id string, kind string, pair_count long, support double, "
        "confidence double, lift double",
    )

    actual = top_pairs_per_product(pairs, top_k=3)

    assert sorted((r["rank"], r["other_product_id"]) for r in actual.collect()) == [
        (1, "D"),
        (2, "E"),
        (3, "C"),
    ]
    with pytest.raises(AffinityArgumentError, match="top_k"):
        top_pairs_per_product(pairs, top_k=0)


def test_baskets_are_revenue_orders_and_viewing_sessions_of_the_window(spark: SparkSession) -> None:
    orders = spark.createDataFrame(
        [
            ("O1", "C1", "paid", AS_OF),
            ("O2", None, "delivered", D(2024, 1, 2)),  # a guest's order counts
            ("O3", "C1", "cancelled", AS_OF),
            ("O4", "C1", "paid", D(2024, 1, 1)),  # before a 30-day window
        ],
        ORDERS_SCHEMA,
    )
    items = spark.createDataFrame(
        [
            ("O1", 1, "A", 1, None),
            ("O1", 2, "A", 2, None),
            ("O1", 3, None, 1, None),
            ("O2", 1, "B", 1, None),
            ("O3", 1, "C", 1, None),
            ("O4", 1, "D", 1, None),
        ],
        ITEMS_SCHEMA,
    )
    clicks = spark.createDataFrame(
        [
            ("S1", "product_view", AS_OF, "A"),
            ("S1", "add_to_cart", AS_OF, "B"),
            ("S1", "product_view", AS_OF, "A"),
            ("S2", "product_view", D(2024, 2, 1), "C"),  # after the as-of date
            (None, "product_view", AS_OF, "D"),
        ],
        CLICKS_SCHEMA,
    )

    bought = order_baskets(orders, order_items=items, as_of=AS_OF, window_days=30)
    viewed = session_baskets(clicks, as_of=AS_OF, window_days=30)

    assert sorted(tuple(r) for r in bought.collect()) == [("O1", "A"), ("O2", "B")]
    assert sorted(tuple(r) for r in viewed.collect()) == [("S1", "A")]


def test_product_affinity_publishes_both_kinds_as_of_the_date(spark: SparkSession) -> None:
    orders = spark.createDataFrame(
        [(f"O{i}", "C1", "paid", AS_OF) for i in range(3)],
        ORDERS_SCHEMA,
    )
    items = spark.createDataFrame(
        [(f"O{i}", line, product, 1, None) for i in range(3) for line, product in ((1, "A"), (2, "B"))],
        ITEMS_SCHEMA,
    )
    clicks = spark.createDataFrame(
        [(f"S{i}", "product_view", AS_OF, product) for i in range(2) for product in ("A", "C")],
        CLICKS_SCHEMA,
    )

    actual = product_affinity(
        clicks, orders=orders, order_items=items, as_of=AS_OF, window_days=7, top_k=5, min_pairs=2,
        max_basket_products=10,
    )  # fmt: skip

    assert actual.schema.fieldNames() == PRODUCT_AFFINITY_TABLE_SCHEMA.fieldNames()
    assert sorted(
        (r["kind"], r["product_id"], r["other_product_id"], r["pair_count"], r["lift"], r["rank"])
        for r in actual.collect()
    ) == [
        ("bought_together", "A", "B", 3, 1.0, 1),
        ("bought_together", "B", "A", 3, 1.0, 1),
        ("viewed_together", "A", "C", 2, 1.0, 1),
        ("viewed_together", "C", "A", 2, 1.0, 1),
    ]
    assert {r["as_of_date"] for r in actual.collect()} == {AS_OF}
