"""Unit tests of pipeline_lib.gold.recommendations: interactions, ALS, the fallbacks, the metrics."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest
from chispa import assert_df_equality
from pyspark.ml.evaluation import RankingEvaluator
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline_lib.config import AlsSettings, InteractionWeights
from pipeline_lib.gold.recommendations import (
    RecommendationArgumentError,
    RecommendationInputs,
    blend_recommendations,
    co_purchase_recommendations,
    customer_product_interactions,
    customer_profiles,
    dense_index,
    evaluate_recommendations,
    model_recommendations,
    popularity_recommendations,
    rank_popular_products,
    ranking_metrics,
    recommendations,
    select_products_as_of,
    with_interaction_weight,
)
from pipeline_lib.gold.schemas import (
    RECOMMENDATION_METRICS_SCHEMA,
    RECOMMENDATION_METRICS_TABLE_SCHEMA,
    RECOMMENDATIONS_SCHEMA,
    RECOMMENDATIONS_TABLE_SCHEMA,
)
from pipeline_lib.silver.schemas import BASE_MONEY

AS_OF = dt.date(2024, 1, 31)
D = dt.date
WEIGHTS = InteractionWeights(view=1.0, add_to_cart=3.0, purchase=5.0)
# Four factors for two planted tastes: regularised enough not to memorise each customer's three products.
SMALL_ALS = AlsSettings(rank=4, reg_param=1.0, alpha=10.0, max_iter=8, seed=7, blocks=1)

CLICKS_SCHEMA = (
    "event_id string, customer_id string, session_id string, event_type string, event_date date, "
    "product_id string"
)
ORDERS_SCHEMA = (
    "order_id string, customer_id string, order_status string, order_ts timestamp, order_date date, "
    "ship_country string"
)
ITEMS_SCHEMA = T.StructType(
    [
        T.StructField("order_id", T.StringType()),
        T.StructField("line_no", T.IntegerType()),
        T.StructField("product_id", T.StringType()),
        T.StructField("quantity", T.IntegerType()),
        T.StructField("net_amount_base", BASE_MONEY),
    ]
)
PRODUCTS_SCHEMA = (
    "product_id string, category_l1 string, is_active boolean, is_delisted boolean, valid_from timestamp"
)
CUSTOMERS_SCHEMA = "customer_id string, country string, valid_from timestamp"
INTERACTIONS_SCHEMA = T.StructType(
    [
        T.StructField("customer_id", T.StringType()),
        T.StructField("product_id", T.StringType()),
        T.StructField("strength", T.DecimalType(28, 6)),
        T.StructField("events", T.LongType()),
        T.StructField("purchases", T.LongType()),
    ]
)
PAIRS_SCHEMA = "product_id string, other_product_id string, confidence double, lift double"
PAIRS_KEY = "customer_id string, product_id string"
CANDIDATES_SCHEMA = (
    "customer_id string, product_id string, score double, source string, reason string, source_rank int"
)


def utc(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=dt.UTC)


def interactions_of(spark: SparkSession, rows: list[tuple[str, str, float]]) -> DataFrame:
    return spark.createDataFrame(
        [(c, p, Decimal(str(s)).quantize(Decimal("0.000001")), 1, 0) for c, p, s in rows], INTERACTIONS_SCHEMA
    )


def pairs_of(spark: SparkSession, rows: list[tuple[str, str]]) -> DataFrame:
    return spark.createDataFrame(rows, PAIRS_KEY)


def sellable_of(spark: SparkSession, products: list[str], category: str | None = None) -> DataFrame:
    return spark.createDataFrame([(p, category) for p in products], "product_id string, category_l1 string")


def lists(frame: DataFrame) -> dict[str, list[str]]:
    """customer -> products in rank order (``source_rank`` or ``rank``)."""
    rank = "rank" if "rank" in frame.columns else "source_rank"
    found: dict[str, list[tuple[int, str]]] = {}
    for row in frame.collect():
        found.setdefault(row["customer_id"], []).append((row[rank], row["product_id"]))
    return {customer: [p for _, p in sorted(ranked)] for customer, ranked in found.items()}


# --- contracts -------------------------------------------------------------------------------


def test_table_schemas_are_the_contracts_plus_their_extra_columns() -> None:
    assert RECOMMENDATIONS_SCHEMA.fieldNames() == [
        "customer_id", "as_of_date", "rank", "product_id", "score", "source",
    ]  # fmt: skip
    assert RECOMMENDATIONS_TABLE_SCHEMA.fieldNames() == [*RECOMMENDATIONS_SCHEMA.fieldNames(), "reason"]
    assert RECOMMENDATION_METRICS_SCHEMA.fieldNames() == [
        "as_of_date", "method", "k", "precision_at_k", "recall_at_k", "ndcg_at_k", "coverage",
    ]  # fmt: skip
    assert RECOMMENDATION_METRICS_TABLE_SCHEMA.fieldNames()[:7] == RECOMMENDATION_METRICS_SCHEMA.fieldNames()


# --- interactions ----------------------------------------------------------------------------


def test_an_interaction_weighs_its_kind_halved_every_half_life(spark: SparkSession) -> None:
    source = spark.createDataFrame(
        [
            ("product_view", AS_OF),
            ("add_to_cart", AS_OF - dt.timedelta(days=30)),
            ("purchase", AS_OF - dt.timedelta(days=60)),
            ("remove_from_cart", AS_OF),  # no weight configured: null, left out later
            ("product_view", None),
        ],
        "kind string, event_date date",
    )

    actual = source.transform(with_interaction_weight, as_of=AS_OF, weights=WEIGHTS, half_life_days=30.0)

    weights = [row["weight"] for row in actual.collect()]
    assert weights == [Decimal("1.000000"), Decimal("1.500000"), Decimal("1.250000"), None, None]


def test_interactions_are_logged_in_views_carts_and_revenue_order_lines_of_the_window(
    spark: SparkSession,
) -> None:
    clicks = spark.createDataFrame(
        [
            ("e1", "C1", "S1", "product_view", AS_OF, "P1"),
            ("e2", "C1", "S1", "add_to_cart", AS_OF, "P1"),
            ("e3", None, "S2", "product_view", AS_OF, "P1"),  # anonymous
            ("e4", "C1", "S1", "purchase", AS_OF, "P2"),  # the tracker's purchases are not used
            ("e5", "C1", "S3", "product_view", D(2023, 11, 2), "P3"),  # 90 days before: out of the window
            ("e6", "C1", "S1", "product_view", D(2024, 2, 1), "P1"),  # after the as-of date
            ("e7", "C2", "S4", "page_view", AS_OF, "P1"),
        ],
        CLICKS_SCHEMA,
    )
    orders = spark.createDataFrame(
        [
            ("O1", "C1", "delivered", utc(2024, 1, 31, 9), AS_OF, "DE"),
            ("O2", "C1", "cancelled", utc(2024, 1, 31, 9), AS_OF, "DE"),
            ("O3", None, "paid", utc(2024, 1, 31, 9), AS_OF, "DE"),
        ],
        ORDERS_SCHEMA,
    )
    items = spark.createDataFrame(
        [
            ("O1", 1, "P2", 1, None),
            ("O2", 1, "P4", 1, None),
            ("O3", 1, "P5", 1, None),
            ("O1", 2, None, 1, None),
        ],
        ITEMS_SCHEMA,
    )
    inputs = RecommendationInputs(clicks, orders, items, products=clicks.limit(0), customers=clicks.limit(0))

    actual = customer_product_interactions(
        inputs, as_of=AS_OF, window_days=90, weights=WEIGHTS, half_life_days=30
    )

    assert {
        (r["customer_id"], r["product_id"], r["strength"], r["events"], r["purchases"])
        for r in actual.collect()
    } == {
        ("C1", "P1", Decimal("4.000000"), 2, 0),
        ("C1", "P2", Decimal("5.000000"), 1, 1),
    }


def test_the_dense_index_numbers_sorted_distinct_ids_from_zero(spark: SparkSession) -> None:
    source = spark.createDataFrame([("C3",), ("C1",), (None,), ("C3",), ("C2",)], "customer_id string")

    actual = dense_index(source, column="customer_id", index="user")

    expected = spark.createDataFrame([("C1", 0), ("C2", 1), ("C3", 2)], "customer_id string, user int")
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_products_as_of_take_the_version_valid_then_and_only_sellable_ones_count(spark: SparkSession) -> None:
    products = spark.createDataFrame(
        [
            ("P1", "Toys", True, False, utc(2024, 1, 1)),
            ("P1", "Toys", True, True, utc(2024, 1, 20)),  # delisted on the 20th
            ("P2", "Toys", True, False, utc(2024, 1, 1)),
            ("P2", "Toys", False, False, utc(2024, 2, 5)),  # inactive after the as-of date: still sellable
            ("P3", "Books", True, False, utc(2024, 2, 1)),  # listed after the as-of date: no row
            ("P4", "Books", None, False, utc(2024, 1, 1)),  # unknown activity: not sellable
        ],
        PRODUCTS_SCHEMA,
    )

    actual = select_products_as_of(products, as_of=AS_OF)

    expected = spark.createDataFrame(
        [("P1", "Toys", False), ("P2", "Toys", True), ("P4", "Books", False)],
        "product_id string, category_l1 string, is_sellable boolean",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


# --- the model -------------------------------------------------------------------------------


def planted_interactions(spark: SparkSession) -> DataFrame:
    """Two groups of eight customers: A only ever touch outdoor products, B only kitchen products.

    Each customer touches three of their group's six products, and everybody touches one
    best-seller (P-HIT), which links the two groups.
    """
    rows = []
    for group, prefix in (("A", "OUT"), ("B", "KIT")):
        for i in range(8):
            for j in (i % 6, (i + 1) % 6, (i + 3) % 6):
                rows.append((f"{group}{i}", f"{prefix}{j}", 2.0 + j % 2))
            rows.append((f"{group}{i}", "P-HIT", 1.0))
    return interactions_of(spark, rows)


def test_the_model_recovers_a_planted_pattern_of_tastes(spark: SparkSession) -> None:
    interactions = planted_interactions(spark)
    products = [f"OUT{j}" for j in range(6)] + [f"KIT{j}" for j in range(6)] + ["P-HIT"]
    seen = interactions.select("customer_id", "product_id")

    actual = lists(
        model_recommendations(
            interactions,
            sellable=sellable_of(spark, products),
            exclusions=seen,
            top_n=3,
            min_interactions=3,
            params=SMALL_ALS,
        )
    )

    assert sorted(actual) == sorted([f"A{i}" for i in range(8)] + [f"B{i}" for i in range(8)])
    for customer, recommended in actual.items():
        taste = "OUT" if customer.startswith("A") else "KIT"
        assert len(recommended) == 3
        assert all(p.startswith(taste) for p in recommended), (customer, recommended)


def test_the_model_is_deterministic_for_the_same_inputs_and_seed(spark: SparkSession) -> None:
    interactions = planted_interactions(spark)
    sellable = sellable_of(spark, [f"OUT{j}" for j in range(6)] + [f"KIT{j}" for j in range(6)])

    def run() -> DataFrame:
        return model_recommendations(
            interactions,
            sellable=sellable,
            exclusions=interactions.select("customer_id", "product_id"),
            top_n=4,
            min_interactions=1,
            params=SMALL_ALS,
        )

    assert_df_equality(run(), run(), ignore_row_order=True)


def test_the_model_never_offers_what_was_ordered_or_is_not_sellable_and_skips_thin_customers(
    spark: SparkSession,
) -> None:
    interactions = interactions_of(
        spark,
        [
            ("C1", "P1", 5.0),
            ("C1", "P2", 1.0),
            ("C1", "P3", 1.0),
            ("C2", "P1", 1.0),
            ("C2", "P4", 1.0),
            ("C2", "P5", 1.0),
            ("C3", "P1", 1.0),  # one product only: not scored
        ],
    )

    actual = model_recommendations(
        interactions,
        sellable=sellable_of(spark, ["P1", "P2", "P3", "P4"]),  # P5 is not sellable
        exclusions=pairs_of(spark, [("C1", "P4"), ("C2", "P2")]),
        top_n=10,
        min_interactions=3,
        params=SMALL_ALS,
    )

    offered = lists(actual)
    assert set(offered) == {"C1", "C2"}
    assert sorted(offered["C1"]) == ["P1", "P2", "P3"]
    assert sorted(offered["C2"]) == ["P1", "P3", "P4"]
    assert {r["source"] for r in actual.collect()} == {"model"}


def test_without_interactions_the_model_recommends_nothing(spark: SparkSession) -> None:
    actual = model_recommendations(
        interactions_of(spark, []),
        sellable=sellable_of(spark, ["P1"]),
        exclusions=pairs_of(spark, []),
        top_n=10,
        min_interactions=1,
        params=SMALL_ALS,
    )

    assert actual.isEmpty()
    assert actual.columns == ["customer_id", "product_id", "score", "source", "reason", "source_rank"]


@pytest.mark.parametrize(("top_n", "min_interactions"), [(0, 1), (10, 0)])
def test_the_model_refuses_unusable_settings(spark: SparkSession, top_n: int, min_interactions: int) -> None:
    with pytest.raises(RecommendationArgumentError, match="at least 1"):
        model_recommendations(
            interactions_of(spark, []),
            sellable=sellable_of(spark, []),
            exclusions=pairs_of(spark, []),
            top_n=top_n,
            min_interactions=min_interactions,
            params=SMALL_ALS,
        )


# --- co-purchase, popularity and the blend ----------------------------------------------------


def test_co_purchase_ranks_by_the_best_confidence_and_names_its_anchor(spark: SparkSession) -> None:
    bought = pairs_of(spark, [("C1", "P1"), ("C1", "P2"), ("C2", "P9")])
    pairs = spark.createDataFrame(
        [
            ("P1", "P3", 0.5, 2.0),
            ("P2", "P3", 0.7, 1.5),  # P3 goes best with P2
            ("P1", "P4", 0.6, 3.0),
            ("P1", "P2", 0.9, 4.0),  # already ordered
            ("P2", "P5", 0.8, 2.0),  # not sellable
        ],
        PAIRS_SCHEMA,
    )

    actual = co_purchase_recommendations(
        bought,
        pairs=pairs,
        sellable=sellable_of(spark, ["P1", "P2", "P3", "P4"]),
        exclusions=bought,
        top_n=10,
    )

    expected = spark.createDataFrame(
        [
            ("C1", "P3", 0.7, "co_purchase", "often bought together with P2", 1),
            ("C1", "P4", 0.6, "co_purchase", "often bought together with P1", 2),
        ],
        CANDIDATES_SCHEMA,
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_popularity_fills_from_the_favourite_category_then_the_country_then_the_shop(
    spark: SparkSession,
) -> None:
    orders = spark.createDataFrame(
        [
            ("O1", "X", "paid", utc(2024, 1, 30), D(2024, 1, 30), "DE"),
            ("O2", "X", "paid", utc(2024, 1, 30), D(2024, 1, 30), "DE"),
            ("O3", "X", "paid", utc(2024, 1, 30), D(2024, 1, 30), "FR"),
            ("O4", "X", "returned", utc(2024, 1, 30), D(2024, 1, 30), "FR"),
            ("O5", "X", "paid", utc(2023, 12, 1), D(2023, 12, 1), "FR"),  # before the window
        ],
        ORDERS_SCHEMA,
    )
    items = spark.createDataFrame(
        [
            ("O1", 1, "T1", 1, None),
            ("O2", 1, "T1", 1, None),
            ("O2", 2, "B1", 1, None),
            ("O3", 1, "B2", 1, None),
            ("O3", 2, "T2", 1, None),
            ("O4", 1, "B3", 1, None),
            ("O5", 1, "B3", 1, None),
        ],
        ITEMS_SCHEMA,
    )
    sellable = spark.createDataFrame(
        [("T1", "Toys"), ("T2", "Toys"), ("B1", "Books"), ("B2", "Books"), ("B3", "Books")],
        "product_id string, category_l1 string",
    )
    popular = rank_popular_products(
        orders, order_items=items, sellable=sellable, as_of=AS_OF, window_days=30, depth=5
    )
    profiles = spark.createDataFrame(
        [("C1", "FR", "Books"), ("C2", "DE", None), ("C3", None, None)],
        "customer_id string, country string, favourite_category string",
    )

    actual = popularity_recommendations(
        profiles, popular=popular, exclusions=pairs_of(spark, [("C1", "B2")]), top_n=4, window_days=30
    )

    assert lists(actual) == {
        "C1": ["B1", "T2", "T1", "B3"],  # Books (B2 ordered), then FR, then the shop
        "C2": ["T1", "B1", "B2", "T2"],  # DE, then the shop (B1 and T1 already in)
        "C3": ["T1", "B1", "B2", "T2"],  # the shop: T1 in 2 of 3 orders, then 1 each by id
    }
    reasons = {(r["customer_id"], r["product_id"]): r["reason"] for r in actual.collect()}
    assert reasons[("C1", "B1")] == "popular in Books, your favourite category over the last 30 days"
    assert reasons[("C1", "T2")] == "popular in your country (FR) over the last 30 days"
    assert reasons[("C2", "B2")] == "popular in the shop over the last 30 days"
    scores = {(r["customer_id"], r["product_id"]): r["score"] for r in actual.collect()}
    assert scores[("C3", "T1")] == round(2 / 3, 6)


def test_popularity_lists_equal_the_whole_rankings_walked_in_order(spark: SparkSession) -> None:
    """Each customer reads only the first ranks of each tier: the lists are those of the whole rankings.

    Deep, overlapping rankings and customers with up to 15 exclusions, against a reference
    that walks every tier's whole ranking in order, skips the excluded and the already
    listed products, and stops at ``top_n``.
    """
    generator = random.Random(11)
    products = [f"P{n:02d}" for n in range(40)]
    scopes = {1: ["Toys", "Books"], 2: ["FR", "DE"], 3: [None]}
    popular_rows = []
    for tier, names in scopes.items():
        for scope in names:
            ranked = generator.sample(products, 25 if tier < 3 else 40)
            popular_rows += [(tier, scope, p, round(1 / (r + 1), 6), r + 1) for r, p in enumerate(ranked)]
    profiles_rows = []
    exclusion_rows = []
    for n in range(30):
        customer = f"C{n:02d}"
        category = generator.choice(["Toys", "Books", None])
        country = generator.choice(["FR", "DE", None])
        profiles_rows.append((customer, country, category))
        # 0, 2, 8 or 15 products drawn at random: some among a tier's first ranks, some deep.
        exclusion_rows += [(customer, p) for p in generator.sample(products, generator.choice([0, 2, 8, 15]))]
    popular = spark.createDataFrame(
        popular_rows, "tier int, scope string, product_id string, share double, popularity_rank int"
    )
    profiles = spark.createDataFrame(
        profiles_rows, "customer_id string, country string, favourite_category string"
    )
    top_n = 4

    actual = popularity_recommendations(
        profiles, popular=popular, exclusions=pairs_of(spark, exclusion_rows), top_n=top_n, window_days=30
    )

    excluded: dict[str, set[str]] = {}
    for customer, product in exclusion_rows:
        excluded.setdefault(customer, set()).add(product)
    expected = {}
    for customer, country, category in profiles_rows:
        walk = [
            row
            for tier, scope in ((1, category), (2, country))
            for row in popular_rows
            if row[:2] == (tier, scope)
        ]
        walk += [row for row in popular_rows if row[0] == 3]
        listed: list[tuple[str, int, float]] = []
        for tier, _, product, share, _ in walk:
            if product not in excluded.get(customer, set()) and product not in {p for p, _, _ in listed}:
                listed.append((product, tier, share))
        expected[customer] = listed[:top_n]
    tiers = {
        "popular in Toys": 1,
        "popular in Books": 1,
        "popular in your country": 2,
        "popular in the shop": 3,
    }
    found: dict[str, list[tuple[int, str, int, float]]] = {}
    for row in actual.collect():
        tier = next(t for prefix, t in tiers.items() if row["reason"].startswith(prefix))
        found.setdefault(row["customer_id"], []).append(
            (row["source_rank"], row["product_id"], tier, row["score"])
        )
    assert {c: [(p, t, s) for _, p, t, s in sorted(rows)] for c, rows in found.items()} == expected
    assert max(len(excluded.get(c, ())) for c in expected) == 15


def test_profiles_take_the_crm_country_else_the_latest_ship_to_and_the_strongest_category(
    spark: SparkSession,
) -> None:
    population = spark.createDataFrame([("C1",), ("C2",), ("C3",)], "customer_id string")
    customers = spark.createDataFrame(
        [("C1", "AT", utc(2024, 1, 1)), ("C1", "DE", utc(2024, 2, 2)), ("C2", "FR", utc(2024, 3, 1))],
        CUSTOMERS_SCHEMA,
    )
    orders = spark.createDataFrame(
        [
            ("O1", "C2", "paid", utc(2024, 1, 5), D(2024, 1, 5), "SE"),
            ("O2", "C2", "paid", utc(2024, 1, 9), D(2024, 1, 9), "PL"),
        ],
        ORDERS_SCHEMA,
    )
    interactions = interactions_of(
        spark, [("C1", "T1", 1.0), ("C1", "B1", 2.0), ("C2", "T1", 1.0), ("C2", "B1", 1.0)]
    )
    products_as_of = spark.createDataFrame(
        [("T1", "Toys"), ("B1", "Books")], "product_id string, category_l1 string"
    )

    actual = customer_profiles(
        population,
        customers=customers,
        orders=orders,
        interactions=interactions,
        products_as_of=products_as_of,
        as_of=AS_OF,
    )

    expected = spark.createDataFrame(
        [("C1", "AT", "Books"), ("C2", "PL", "Books"), ("C3", None, None)],
        "customer_id string, country string, favourite_category string",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_the_blend_takes_each_product_once_from_the_first_source_and_fills_to_top_n(
    spark: SparkSession,
) -> None:
    model = spark.createDataFrame(
        [("C1", "P1", 0.9, "model", "m", 1), ("C1", "P2", 0.8, "model", "m", 2)], CANDIDATES_SCHEMA
    )
    popularity = spark.createDataFrame(
        [
            ("C1", "P2", 0.5, "popularity", "p", 1),
            ("C1", "P3", 0.4, "popularity", "p", 2),
            ("C1", "P4", 0.3, "popularity", "p", 3),
            ("C2", "P1", 0.5, "popularity", "p", 1),
        ],
        CANDIDATES_SCHEMA,
    )

    actual = blend_recommendations(model, popularity, top_n=3)

    assert lists(actual) == {"C1": ["P1", "P2", "P3"], "C2": ["P1"]}
    assert {(r["product_id"], r["source"]) for r in actual.where(F.col("customer_id") == "C1").collect()} == {
        ("P1", "model"),
        ("P2", "model"),
        ("P3", "popularity"),
    }
    with pytest.raises(RecommendationArgumentError, match="at least one source"):
        blend_recommendations(top_n=3)


# --- evaluation ------------------------------------------------------------------------------


def test_ranking_metrics_equal_sparks_ranking_evaluator(spark: SparkSession) -> None:
    ranked = spark.createDataFrame(
        [
            ("U1", "P1", 1), ("U1", "P2", 2), ("U1", "P3", 3),
            ("U2", "P4", 1), ("U2", "P1", 2),
            ("U3", "P5", 1),
        ],
        "customer_id string, product_id string, rank int",
    )  # fmt: skip
    relevant = pairs_of(
        spark, [("U1", "P2"), ("U1", "P9"), ("U2", "P4"), ("U2", "P1"), ("U3", "P7"), ("U4", "P1")]
    )
    users = spark.createDataFrame([("U1",), ("U2",), ("U3",), ("U4",)], "customer_id string")  # U4: no list
    k = 3

    actual = ranking_metrics(ranked, relevant=relevant, users=users, k=k).first()

    number = {f"P{i}": float(i) for i in range(10)}
    predicted = {"U1": ["P1", "P2", "P3"], "U2": ["P4", "P1"], "U3": ["P5"], "U4": []}
    labels = {"U1": ["P2", "P9"], "U2": ["P4", "P1"], "U3": ["P7"], "U4": ["P1"]}
    frame = spark.createDataFrame(
        [([number[p] for p in predicted[u]], [number[p] for p in labels[u]]) for u in predicted],
        "prediction array<double>, label array<double>",
    )
    for metric, column in (
        ("precisionAtK", "precision_at_k"),
        ("recallAtK", "recall_at_k"),
        ("ndcgAtK", "ndcg_at_k"),
    ):
        expected = RankingEvaluator(metricName=metric, k=k).evaluate(frame)
        assert actual[column] == pytest.approx(expected, abs=1e-6), metric
    assert actual["users"] == 4


def shop_inputs(spark: SparkSession) -> RecommendationInputs:
    """A tiny shop: outdoor fans and kitchen fans, a best-seller, and buys after the training cut."""
    clicks, orders, items = [], [], []
    day = D(2024, 1, 20)
    for group, prefix in (("A", "OUT"), ("B", "KIT")):
        for i in range(6):
            customer = f"{group}{i}"
            for j in (i % 4, (i + 1) % 4):
                clicks.append(
                    (f"v-{customer}-{j}", customer, f"S-{customer}", "product_view", day, f"{prefix}{j}")
                )
            order = f"O-{customer}"
            orders.append((order, customer, "delivered", utc(2024, 1, 20, 10), day, "DE"))
            items.append((order, 1, f"{prefix}{(i + 2) % 4}", 1, None))
            items.append((order, 2, "HIT", 1, None))
            later = f"L-{customer}"  # after the training cut: what the evaluation checks
            orders.append((later, customer, "paid", utc(2024, 1, 30, 10), D(2024, 1, 30), "DE"))
            items.append((later, 1, f"{prefix}{(i + 3) % 4}", 1, None))
    products = [
        (f"{p}{j}", c, True, False, utc(2023, 1, 1))
        for p, c in (("OUT", "Outdoor"), ("KIT", "Kitchen"))
        for j in range(4)
    ]
    products.append(("HIT", "Gadgets", True, False, utc(2023, 1, 1)))
    customers = [(f"{g}{i}", "DE", utc(2023, 1, 1)) for g in "AB" for i in range(6)]
    customers.append(("NEW", "DE", utc(2024, 1, 31)))
    clicks.append(("v-new", "NEW", "S-new", "page_view", AS_OF, None))  # a login, nothing else
    return RecommendationInputs(
        clicks=spark.createDataFrame(clicks, CLICKS_SCHEMA),
        orders=spark.createDataFrame(orders, ORDERS_SCHEMA),
        order_items=spark.createDataFrame(items, ITEMS_SCHEMA),
        products=spark.createDataFrame(products, PRODUCTS_SCHEMA),
        customers=spark.createDataFrame(customers, CUSTOMERS_SCHEMA),
    )


SETTINGS = {
    "top_n": 3,
    "window_days": 30,
    "weights": WEIGHTS,
    "half_life_days": 30.0,
    "min_interactions": 2,
    "allow_repeat_purchases": False,
    "popularity_window_days": 30,
    "affinity_top_k": 5,
    "affinity_min_pairs": 1,
    "affinity_max_basket_products": 10,
    "als": SMALL_ALS,
}


def test_every_customer_with_an_order_or_a_login_gets_a_list_of_new_sellable_products(
    spark: SparkSession,
) -> None:
    inputs = shop_inputs(spark)

    actual = recommendations(inputs, as_of=AS_OF, **SETTINGS)

    assert actual.schema.fieldNames() == RECOMMENDATIONS_TABLE_SCHEMA.fieldNames()
    offered = lists(actual)
    assert set(offered) == {f"{g}{i}" for g in "AB" for i in range(6)} | {"NEW"}
    assert all(len(products) == 3 for products in offered.values())
    ordered = {
        (r["customer_id"], r["product_id"])
        for r in inputs.orders.join(inputs.order_items, "order_id").collect()
    }
    assert not [(c, p) for c, products in offered.items() for p in products if (c, p) in ordered]
    sources = {r["customer_id"]: r["source"] for r in actual.where(F.col("rank") == 1).collect()}
    assert sources["A0"] == "model" and sources["NEW"] == "popularity"
    assert {r["as_of_date"] for r in actual.collect()} == {AS_OF}


def test_the_evaluation_reports_three_methods_trained_before_the_holdout(spark: SparkSession) -> None:
    inputs = shop_inputs(spark)

    actual = evaluate_recommendations(inputs, as_of=AS_OF, holdout_days=7, **SETTINGS)

    rows = {r["method"]: r for r in actual.collect()}
    assert set(rows) == {"model", "co_purchase", "popularity"}
    for row in rows.values():
        assert row["as_of_date"] == AS_OF and row["train_end_date"] == D(2024, 1, 24) and row["k"] == 3
        assert row["test_users"] == 12  # NEW bought nothing; everyone else bought on the 30th
        assert 0 <= row["precision_at_k"] <= 1 and 0 <= row["recall_at_k"] <= 1 and 0 < row["coverage"] <= 1
    assert rows["model"]["users_scored"] == 12
    with pytest.raises(RecommendationArgumentError, match="holdout_days"):
        evaluate_recommendations(inputs, as_of=AS_OF, holdout_days=0, **SETTINGS)


def test_a_date_nobody_bought_after_the_cut_has_null_measures_and_no_user(spark: SparkSession) -> None:
    inputs = shop_inputs(spark)  # purchases on the 20th and the 30th only

    actual = evaluate_recommendations(inputs, as_of=D(2024, 1, 29), holdout_days=1, **SETTINGS)

    assert [(f.name, f.dataType) for f in actual.schema] == [
        (f.name, f.dataType) for f in RECOMMENDATION_METRICS_TABLE_SCHEMA
    ]
    rows = sorted(actual.collect(), key=lambda row: row["method"])
    assert [r["method"] for r in rows] == ["co_purchase", "model", "popularity"]
    for row in rows:
        assert (row["as_of_date"], row["train_end_date"], row["k"]) == (D(2024, 1, 29), D(2024, 1, 28), 3)
        assert (row["test_users"], row["users_scored"]) == (0, 0)
        assert [row[m] for m in ("precision_at_k", "recall_at_k", "ndcg_at_k", "coverage")] == [None] * 4


def test_a_lake_younger_than_the_holdout_has_no_test_user(spark: SparkSession) -> None:
    inputs = shop_inputs(spark)  # nothing before the 20th: nobody had a list at the cut

    actual = evaluate_recommendations(inputs, as_of=D(2024, 1, 30), holdout_days=20, **SETTINGS)

    rows = actual.collect()
    assert len(rows) == 3 and {(r["test_users"], r["users_scored"], r["ndcg_at_k"]) for r in rows} == {
        (0, 0, None)
    }
