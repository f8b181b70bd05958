"""Unit tests of pipeline_lib.gold.popularity: product activity per trailing window as of a date."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from chispa import assert_column_equality, assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from pipeline_lib.gold.popularity import (
    PRODUCT_POPULARITY_TABLE_SCHEMA,
    PopularityWindowError,
    product_popularity,
    safe_rate,
    select_category_as_of,
)
from pipeline_lib.gold.schemas import PRODUCT_POPULARITY_SCHEMA
from pipeline_lib.silver.schemas import BASE_MONEY

AS_OF = dt.date(2024, 1, 31)
D = dt.date

CLICKS_SCHEMA = T.StructType(
    [
        T.StructField("event_id", T.StringType()),
        T.StructField("event_date", T.DateType()),
        T.StructField("event_type", T.StringType()),
        T.StructField("product_id", T.StringType()),
    ]
)
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
PRODUCTS_SCHEMA = T.StructType(
    [
        T.StructField("product_id", T.StringType()),
        T.StructField("category_l1", T.StringType()),
        T.StructField("valid_from", T.TimestampType()),
    ]
)
RANKS_SCHEMA = "product_id string, category_l1 string, rank_in_category int, rank_overall int"


def utc(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=dt.UTC)


def money(text: str) -> Decimal:
    return Decimal(text).quantize(Decimal("0.000001"))


def popularity_of(
    spark: SparkSession,
    *,
    clicks: list[tuple] = (),  # type: ignore[assignment]
    orders: list[tuple] = (),  # type: ignore[assignment]
    items: list[tuple] = (),  # type: ignore[assignment]
    products: list[tuple] = (),  # type: ignore[assignment]
    windows: tuple[int, ...] = (7,),
) -> DataFrame:
    return product_popularity(
        spark.createDataFrame(list(clicks), CLICKS_SCHEMA),
        orders=spark.createDataFrame(list(orders), ORDERS_SCHEMA),
        order_items=spark.createDataFrame(list(items), ITEMS_SCHEMA),
        products=spark.createDataFrame(list(products), PRODUCTS_SCHEMA),
        as_of=AS_OF,
        windows_days=windows,
    )


def test_table_schema_is_the_contract_plus_category() -> None:
    contract = [f.name for f in PRODUCT_POPULARITY_SCHEMA.fields]
    assert PRODUCT_POPULARITY_TABLE_SCHEMA.fieldNames() == [*contract, "category_l1"]


def test_seven_and_thirty_day_windows(spark: SparkSession) -> None:
    clicks = [
        ("e1", D(2024, 1, 31), "product_view", "p1"),  # the as-of date: both windows
        ("e2", D(2024, 1, 25), "product_view", "p1"),  # first day of the 7-day window
        ("e3", D(2024, 1, 24), "product_view", "p1"),  # one day before it: 30 only
        ("e4", D(2024, 1, 2), "add_to_cart", "p1"),  # first day of the 30-day window
        ("e5", D(2024, 1, 1), "product_view", "p1"),  # before both windows
        ("e6", D(2024, 2, 1), "product_view", "p1"),  # after the as-of date
        ("e7", D(2024, 1, 31), "product_view", None),  # no product
        ("e8", None, "product_view", "p1"),  # no date
        ("e9", D(2024, 1, 31), "page_view", "p1"),  # not a counted event
    ]
    orders = [
        ("o1", "c1", "paid", D(2024, 1, 21)),  # 30 only
        ("o2", "c1", "delivered", D(2024, 1, 31)),  # both; two lines of p1 = one purchase
        ("o3", "c2", "cancelled", D(2024, 1, 30)),  # not revenue
        ("o4", None, "shipped", D(2024, 1, 28)),  # a guest order counts
        ("o5", "c2", "paid", D(2024, 2, 1)),  # after the as-of date
    ]
    items = [
        ("o1", 1, "p1", 2, money("20")),
        ("o2", 1, "p1", 1, money("10")),
        ("o2", 2, "p1", 1, money("5")),
        ("o3", 1, "p1", 5, money("50")),
        ("o4", 1, "p1", 1, money("8")),
        ("o5", 1, "p1", 1, money("99")),
    ]
    products = [("p1", "Books", utc(2023, 12, 1))]
    actual = popularity_of(
        spark, clicks=clicks, orders=orders, items=items, products=products, windows=(30, 7)
    )
    expected = spark.createDataFrame(
        [
            ("p1", AS_OF, 7, 2, 0, 2, 3, money("23"), 0.0, None, 1, 1, "Books"),
            ("p1", AS_OF, 30, 3, 1, 3, 5, money("43"), 1 / 3, 3.0, 1, 1, "Books"),
        ],
        PRODUCT_POPULARITY_TABLE_SCHEMA,
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_rates_are_null_when_their_denominator_is_zero(spark: SparkSession) -> None:
    clicks = [("e1", AS_OF, "add_to_cart", "p2")]  # a cart without a view
    orders = [("o1", "c1", "paid", AS_OF)]
    items = [("o1", 1, "p3", 1, money("4"))]  # a sale without views or carts
    actual = popularity_of(spark, clicks=clicks, orders=orders, items=items).select(
        "product_id", "view_to_cart_rate", "cart_to_purchase_rate"
    )
    expected = spark.createDataFrame(
        [("p2", None, 0.0), ("p3", None, None)],
        "product_id string, view_to_cart_rate double, cart_to_purchase_rate double",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_safe_rate_column(spark: SparkSession) -> None:
    source = spark.createDataFrame(
        [(1, 4, 0.25), (3, 0, None), (2, None, None), (None, 2, None)],
        "numerator long, denominator long, expected double",
    ).withColumn("rate", safe_rate("numerator", "denominator"))
    assert_column_equality(source, "rate", "expected")


def test_product_with_views_but_no_sales(spark: SparkSession) -> None:
    clicks = [("e1", AS_OF, "product_view", "p1"), ("e2", D(2024, 1, 30), "product_view", "p1")]
    products = [("p1", "Toys", utc(2024, 1, 1))]
    actual = popularity_of(spark, clicks=clicks, products=products)
    expected = spark.createDataFrame(
        [("p1", AS_OF, 7, 2, 0, 0, 0, money("0"), 0.0, None, 1, 1, "Toys")], PRODUCT_POPULARITY_TABLE_SCHEMA
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_products_without_activity_in_the_window_have_no_row(spark: SparkSession) -> None:
    clicks = [("e1", D(2024, 1, 20), "product_view", "p1"), ("e2", AS_OF, "remove_from_cart", "p2")]
    orders = [("o1", "c1", "returned", AS_OF)]
    items = [("o1", 1, "p3", 1, money("4"))]
    products = [("p4", "Toys", utc(2024, 1, 1))]
    actual = popularity_of(spark, clicks=clicks, orders=orders, items=items, products=products)
    assert actual.collect() == []


def test_rank_ties_are_broken_deterministically(spark: SparkSession) -> None:
    clicks = [
        ("e1", AS_OF, "product_view", "pB"),
        ("e2", AS_OF, "product_view", "pA"),
        ("e3", AS_OF, "product_view", "pD"),
        ("e4", AS_OF, "product_view", "pD"),
        ("e5", AS_OF, "product_view", "pD"),
        ("e6", AS_OF, "product_view", "pE"),
    ]
    orders = [("o1", "c1", "paid", AS_OF), ("o2", "c2", "paid", AS_OF)]
    items = [
        ("o1", 1, "pA", 1, money("10")),  # pA and pB tie on revenue, units and views: product_id decides
        ("o2", 1, "pB", 1, money("10")),
        ("o1", 2, "pC", 2, money("10")),  # same revenue, more units: first
        ("o2", 2, "pD", 1, money("10")),  # same revenue and units, more views: before pA and pB
    ]
    products = [
        ("pA", "Books", utc(2024, 1, 1)),
        ("pB", "Books", utc(2024, 1, 1)),
        ("pC", "Toys", utc(2024, 1, 1)),
        ("pD", "Toys", utc(2024, 1, 1)),
    ]  # pE is unknown to the catalogue: no category, ranked among the uncategorised
    actual = popularity_of(spark, clicks=clicks, orders=orders, items=items, products=products).select(
        "product_id", "category_l1", "rank_in_category", "rank_overall"
    )
    expected = spark.createDataFrame(
        [
            ("pC", "Toys", 1, 1),
            ("pD", "Toys", 2, 2),
            ("pA", "Books", 1, 3),
            ("pB", "Books", 2, 4),
            ("pE", None, 1, 5),
        ],
        RANKS_SCHEMA,
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_category_of_the_version_valid_at_the_as_of_date(spark: SparkSession) -> None:
    source = spark.createDataFrame(
        [
            ("p1", "Books", utc(2024, 1, 1)),
            ("p1", "Media", utc(2024, 2, 10)),  # a later re-categorisation is not seen
            ("p2", "Games", utc(2023, 12, 1)),
            ("p2", "Toys", utc(2024, 1, 31, 23, 0)),  # starts on the as-of date: taken
            ("p3", "Garden", utc(2024, 2, 5)),  # listed after the as-of date: its earliest version
            ("p3", "Outdoor", utc(2024, 3, 5)),
            ("p4", None, utc(2024, 1, 1)),  # no category
            (None, "Books", utc(2024, 1, 1)),  # no product
        ],
        PRODUCTS_SCHEMA,
    )
    actual = select_category_as_of(source, as_of=AS_OF)
    expected = spark.createDataFrame(
        [("p1", "Books"), ("p2", "Toys"), ("p3", "Garden"), ("p4", None)],
        "product_id string, category_l1 string",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.parametrize("windows", [(), (7, 0)])
def test_bad_windows_are_refused(spark: SparkSession, windows: tuple[int, ...]) -> None:
    with pytest.raises(PopularityWindowError, match="non-empty list of positive day counts"):
        popularity_of(spark, windows=windows)
