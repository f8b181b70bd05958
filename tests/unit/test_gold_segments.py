"""Unit tests of pipeline_lib.gold.segments: RFM per customer as of a date, scores and segments."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from chispa import assert_column_equality, assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from pipeline_lib.gold.schemas import CUSTOMER_SEGMENTS_SCHEMA
from pipeline_lib.gold.segments import (
    CUSTOMER_SEGMENTS_TABLE_SCHEMA,
    SegmentConfigError,
    customer_segments,
    quantile_score,
    with_rfm_scores,
    with_segment,
)
from pipeline_lib.silver.schemas import BASE_MONEY

AS_OF = dt.date(2024, 1, 31)
D = dt.date
# The checked-in default of conf/base.yaml, copied so these tests do not move with the config.
MAPPING = [
    ("Champions", "r >= 4 AND f >= 4 AND m >= 4"),
    ("Loyal", "r >= 3 AND f >= 4"),
    ("Can't lose", "r <= 2 AND f >= 4 AND m >= 4"),
    ("At risk", "r <= 2 AND f >= 3"),
    ("New", "r >= 4 AND f <= 1"),
    ("Potential loyalists", "r >= 3 AND f >= 2"),
    ("Hibernating", "r = 2"),
    ("Lost", "true"),
]

ORDERS_SCHEMA = T.StructType(
    [
        T.StructField("order_id", T.StringType()),
        T.StructField("customer_id", T.StringType()),
        T.StructField("order_status", T.StringType()),
        T.StructField("order_date", T.DateType()),
    ]
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
RFM_SCHEMA = T.StructType(
    [
        T.StructField("customer_id", T.StringType()),
        T.StructField("recency_days", T.IntegerType()),
        T.StructField("frequency", T.LongType()),
        T.StructField("monetary", BASE_MONEY),
    ]
)
SCORED_SCHEMA = T.StructType(
    [
        *RFM_SCHEMA.fields,
        T.StructField("r_score", T.IntegerType()),
        T.StructField("f_score", T.IntegerType()),
        T.StructField("m_score", T.IntegerType()),
    ]
)


def money(text: str) -> Decimal:
    return Decimal(text).quantize(Decimal("0.000001"))


def segments_of(spark: SparkSession, orders: list[tuple], items: list[tuple], as_of: dt.date = AS_OF):
    return customer_segments(
        spark.createDataFrame(orders, ORDERS_SCHEMA),
        order_items=spark.createDataFrame(items, ITEMS_SCHEMA),
        as_of=as_of,
        score_buckets=5,
        mapping=MAPPING,
    )


def test_table_schema_is_the_contract_plus_order_dates() -> None:
    contract = [f.name for f in CUSTOMER_SEGMENTS_SCHEMA.fields]
    assert CUSTOMER_SEGMENTS_TABLE_SCHEMA.fieldNames() == [*contract, "first_order_date", "last_order_date"]


def test_customer_with_a_single_order(spark: SparkSession) -> None:
    orders = [
        ("o1", "c1", "delivered", D(2024, 1, 10)),  # c1's only order, two lines
        ("o2", "c2", "paid", D(2024, 1, 5)),
        ("o3", "c2", "shipped", D(2024, 1, 30)),
        ("o4", None, "paid", D(2024, 1, 30)),  # guest: no customer row
    ]
    items = [
        ("o1", 1, "p1", 2, money("20")),
        ("o1", 2, "p2", 1, money("10")),
        ("o2", 1, "p1", 1, money("15")),
        ("o3", 1, "p3", 1, money("25")),
        ("o3", 2, "p4", 1, None),  # no amount (no fx rate in silver): adds nothing
        ("o4", 1, "p1", 9, money("999")),
    ]
    actual = segments_of(spark, orders, items)
    # 2 customers: the worse one scores 1, the better 1 + floor(5 * 1 / 2) = 3.
    expected = spark.createDataFrame(
        [
            ("c1", AS_OF, 21, 1, money("30"), 1, 1, 1, "Lost", D(2024, 1, 10), D(2024, 1, 10)),
            ("c2", AS_OF, 1, 2, money("40"), 3, 3, 3, "Potential loyalists", D(2024, 1, 5), D(2024, 1, 30)),
        ],
        CUSTOMER_SEGMENTS_TABLE_SCHEMA,
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_order_cancelled_after_delivery_is_excluded(spark: SparkSession) -> None:
    orders = [
        ("o1", "c1", "cancelled", D(2024, 1, 2)),  # delivered first, cancelled later: current state wins
        ("o2", "c1", "delivered", D(2024, 1, 20)),
        ("o3", "c1", "returned", D(2024, 1, 25)),
        ("o4", "c2", "cancelled", D(2024, 1, 3)),  # c2 has no revenue order: no row
        ("o5", "c3", None, D(2024, 1, 3)),  # unknown status: not revenue
    ]
    items = [
        ("o1", 1, "p1", 1, money("100")),
        ("o2", 1, "p1", 1, money("7.5")),
        ("o3", 1, "p1", 1, money("50")),
        ("o4", 1, "p1", 1, money("10")),
        ("o5", 1, "p1", 1, money("10")),
    ]
    actual = segments_of(spark, orders, items)
    expected = spark.createDataFrame(
        [("c1", AS_OF, 11, 1, money("7.5"), 1, 1, 1, "Lost", D(2024, 1, 20), D(2024, 1, 20))],
        CUSTOMER_SEGMENTS_TABLE_SCHEMA,
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_orders_after_as_of_are_ignored(spark: SparkSession) -> None:
    orders = [
        ("o1", "c1", "paid", D(2024, 1, 31)),  # on the as-of date: counted, recency 0
        ("o2", "c1", "paid", D(2024, 2, 1)),  # the day after: ignored
        ("o3", "c2", "paid", D(2024, 2, 15)),  # c2 only ordered later: no row
        ("o4", "c1", "paid", None),  # no date: cannot be placed in time
    ]
    items = [
        ("o1", 1, "p1", 1, money("5")),
        ("o2", 1, "p1", 1, money("500")),
        ("o3", 1, "p1", 1, money("10")),
        ("o4", 1, "p1", 1, money("10")),
    ]
    actual = segments_of(spark, orders, items)
    expected = spark.createDataFrame(
        [("c1", AS_OF, 0, 1, money("5"), 1, 1, 1, "Lost", AS_OF, AS_OF)], CUSTOMER_SEGMENTS_TABLE_SCHEMA
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_order_without_lines_counts_in_frequency_with_zero_revenue(spark: SparkSession) -> None:
    orders = [("o1", "c1", "paid", D(2024, 1, 30)), ("o2", "c1", "paid", D(2024, 1, 31))]
    items = [("o1", 1, "p1", 1, money("12.345678"))]
    actual = segments_of(spark, orders, items).select("customer_id", "frequency", "monetary")
    expected = spark.createDataFrame(
        [("c1", 2, money("12.345678"))], "customer_id string, frequency long, monetary decimal(22,6)"
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_quintiles_on_ten_customers(spark: SparkSession) -> None:
    # Distinct values: 2 customers per quintile; recency scores best when smallest.
    rows = [(f"c{i:02d}", 100 - i, i, money(str(i * 10))) for i in range(1, 11)]
    source = spark.createDataFrame(rows, RFM_SCHEMA)
    actual = with_rfm_scores(source, score_buckets=5)
    scores = [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    expected = spark.createDataFrame(
        [(*row, score, score, score) for row, score in zip(rows, scores, strict=True)], SCORED_SCHEMA
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_ties_in_rfm_share_a_score_whatever_the_customer_id(spark: SparkSession) -> None:
    # frequency: six customers tied at 1 all score 1 (0 worse); 2 has 6 worse -> 1 + floor(30 / 10) = 4;
    # 3 has 8 worse -> 5; 5 has 9 worse -> 5. Ties never split by customer_id.
    frequency = {
        "c10": 1,
        "c01": 1,
        "c05": 1,
        "c03": 1,
        "c07": 1,
        "c02": 1,
        "c09": 2,
        "c04": 2,
        "c08": 3,
        "c06": 5,
    }
    f_score = {1: 1, 2: 4, 3: 5, 5: 5}
    # recency: all tied -> everybody 1 (nobody is strictly worse than anybody).
    # monetary: pairs tied -> scores 1, 2, 3, 4, 5 per pair.
    monetary = {
        "c10": 1,
        "c01": 1,
        "c05": 2,
        "c03": 2,
        "c07": 3,
        "c02": 3,
        "c09": 4,
        "c04": 4,
        "c08": 5,
        "c06": 5,
    }
    rows = [(c, 7, f, money(str(monetary[c]))) for c, f in frequency.items()]
    source = spark.createDataFrame(rows, RFM_SCHEMA)
    actual = with_rfm_scores(source, score_buckets=5)
    expected = spark.createDataFrame(
        [(c, 7, f, money(str(monetary[c])), 1, f_score[f], monetary[c]) for c, f in frequency.items()],
        SCORED_SCHEMA,
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_quantile_score_ranks_a_null_value_worst(spark: SparkSession) -> None:
    # 5 rows, worse = number strictly worse: null 0, 1 -> 1, 2 -> 2, 3 and 3 -> 3 each;
    # score = 1 + floor(5 * worse / 5).
    source = spark.createDataFrame(
        [(None, 1), (1, 2), (2, 3), (3, 4), (3, 4)], "value int, expected_score int"
    ).withColumn("score", quantile_score("value", buckets=5))
    assert_column_equality(source, "score", "expected_score")


def test_quantile_score_lower_is_better(spark: SparkSession) -> None:
    source = spark.createDataFrame([(0, 2), (10, 1), (None, 1)], "value int, expected_score int").withColumn(
        "score", quantile_score("value", buckets=2, higher_is_better=False)
    )
    # 3 rows: null and 10 are worst (10 has 1 worse: null) -> 1 + floor(2 * 1 / 3) = 1; 0 has 2 worse -> 2.
    assert_column_equality(source, "score", "expected_score")


def test_segment_mapping_first_match_wins(spark: SparkSession) -> None:
    scores = T.StructType(
        [
            T.StructField("customer_id", T.StringType()),
            T.StructField("r_score", T.IntegerType()),
            T.StructField("f_score", T.IntegerType()),
            T.StructField("m_score", T.IntegerType()),
        ]
    )
    source = spark.createDataFrame(
        [
            ("c1", 5, 5, 5),  # Champions and Loyal both hold: the first listed wins
            ("c2", 3, 5, 1),  # Loyal
            ("c3", 1, 5, 5),  # Can't lose before At risk
            ("c4", 2, 3, 1),  # At risk before Hibernating
            ("c5", 5, 1, 1),  # New
            ("c6", 2, 1, 1),  # Hibernating
            ("c7", 1, 1, 1),  # only the explicit catch-all
            ("c8", None, None, None),  # no score: only `true` holds
        ],
        scores,
    )
    actual = with_segment(source, mapping=MAPPING)
    expected = spark.createDataFrame(
        [
            ("c1", 5, 5, 5, "Champions"),
            ("c2", 3, 5, 1, "Loyal"),
            ("c3", 1, 5, 5, "Can't lose"),
            ("c4", 2, 3, 1, "At risk"),
            ("c5", 5, 1, 1, "New"),
            ("c6", 2, 1, 1, "Hibernating"),
            ("c7", 1, 1, 1, "Lost"),
            ("c8", None, None, None, "Lost"),
        ],
        T.StructType([*scores.fields, T.StructField("segment", T.StringType())]),
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_segment_mapping_without_catch_all_leaves_null(spark: SparkSession) -> None:
    source = spark.createDataFrame(
        [("c1", 5, 5, 5), ("c2", 1, 1, 1)], "customer_id string, r_score int, f_score int, m_score int"
    )
    actual = with_segment(source, mapping=[("Top", "r = 5")]).select("customer_id", "segment")
    expected = spark.createDataFrame([("c1", "Top"), ("c2", None)], "customer_id string, segment string")
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_empty_mapping_is_refused(spark: SparkSession) -> None:
    source = spark.createDataFrame(
        [("c1", 5, 5, 5)], "customer_id string, r_score int, f_score int, m_score int"
    )
    with pytest.raises(SegmentConfigError, match="mapping is empty"):
        with_segment(source, mapping=[])


def test_blank_condition_is_refused(spark: SparkSession) -> None:
    source = spark.createDataFrame(
        [("c1", 5, 5, 5)], "customer_id string, r_score int, f_score int, m_score int"
    )
    with pytest.raises(SegmentConfigError, match="entry 1 needs a segment and a condition"):
        with_segment(source, mapping=[("Top", "r = 5"), ("Rest", " ")])


def test_zero_buckets_are_refused(spark: SparkSession) -> None:
    source = spark.createDataFrame([("c1", 1, 1, money("1"))], RFM_SCHEMA)
    with pytest.raises(SegmentConfigError, match="at least 1, got 0"):
        with_rfm_scores(source, score_buckets=0)
