"""Unit tests of the gold order facts: point-in-time keys, members, revenue flag, totals."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import chispa
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline_lib.gold.dimensions import UNKNOWN_SK, member_sk
from pipeline_lib.gold.facts import build_fact_order_lines, build_fact_orders, is_revenue_status
from pipeline_lib.gold.schemas import (
    DIM_CUSTOMER_SCHEMA,
    DIM_PRODUCT_SCHEMA,
    FACT_ORDER_LINES_SCHEMA,
    FACT_ORDERS_SCHEMA,
)
from pipeline_lib.silver.schemas import SILVER_SCHEMAS

MEMBER_FROM = dt.datetime(1900, 1, 1, tzinfo=dt.UTC)


def utc(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=dt.UTC)


def rows_of(spark: SparkSession, schema: Any, rows: list[dict[str, Any]]) -> DataFrame:
    """A literal DataFrame of ``schema``: the named columns of each row, the rest null."""
    return spark.createDataFrame([tuple(row.get(f.name) for f in schema.fields) for row in rows], schema)


def order(order_id: str, customer_id: str | None, order_ts: dt.datetime, **extra: Any) -> dict[str, Any]:
    """A silver.orders row in EUR (rate 1), delivered via the web, unless ``extra`` says otherwise."""
    return {
        "order_id": order_id,
        "customer_id": customer_id,
        "order_ts": order_ts,
        "order_date": order_ts.date(),
        "updated_at": order_ts,
        "order_status": "delivered",
        "currency": "EUR",
        "channel": "web",
        "ship_country": "DE",
        "ship_city": "Berlin",
        "payment_type": "card",
        "shipping_fee": Decimal("0.00"),
        "fx_rate_to_base": Decimal("1"),
        "shipping_fee_base": Decimal("0"),
        **extra,
    }


def line(
    order_id: str,
    line_no: int,
    product_id: str | None,
    quantity: int,
    unit_price: str,
    discount: str = "0",
    rate: str = "1",
) -> dict[str, Any]:
    """A silver.order_items row; net amounts computed as silver does (to 2 and 6 decimals)."""
    net = quantity * Decimal(unit_price) - Decimal(discount)
    return {
        "order_id": order_id,
        "line_no": line_no,
        "product_id": product_id,
        "quantity": quantity,
        "unit_price": Decimal(unit_price),
        "discount_amount": Decimal(discount),
        "net_amount": net,
        "net_amount_base": (net * Decimal(rate)).quantize(Decimal("0.000001")),
    }


@pytest.fixture(scope="module")
def dim_customer(spark: SparkSession) -> DataFrame:
    """C1 moved on 2024-03-01 (101 -> 102); C2 has one version; C9 is inferred; -1 unknown."""
    return rows_of(
        spark,
        DIM_CUSTOMER_SCHEMA,
        [
            {
                "customer_sk": 101,
                "customer_id": "C1",
                "country": "DE",
                "valid_from": utc(2024, 1, 1),
                "valid_to": utc(2024, 3, 1),
                "is_current": False,
                "is_inferred": False,
            },
            {
                "customer_sk": 102,
                "customer_id": "C1",
                "country": "FR",
                "valid_from": utc(2024, 3, 1),
                "is_current": True,
                "is_inferred": False,
            },
            {
                "customer_sk": 201,
                "customer_id": "C2",
                "valid_from": utc(2024, 1, 1),
                "is_current": True,
                "is_inferred": False,
            },
            {
                "customer_sk": 909,
                "customer_id": "C9",
                "valid_from": MEMBER_FROM,
                "is_current": True,
                "is_inferred": True,
            },
            {
                "customer_sk": UNKNOWN_SK,
                "customer_id": None,
                "valid_from": MEMBER_FROM,
                "is_current": True,
                "is_inferred": False,
            },
        ],
    )


@pytest.fixture(scope="module")
def dim_product(spark: SparkSession) -> DataFrame:
    """P1 changed price on 2024-02-01 (11 at 10.00 -> 12 at 12.00); P9 is inferred; -1 unknown."""
    return rows_of(
        spark,
        DIM_PRODUCT_SCHEMA,
        [
            {
                "product_sk": 11,
                "product_id": "P1",
                "list_price": Decimal("10.00"),
                "valid_from": utc(2024, 1, 1),
                "valid_to": utc(2024, 2, 1),
                "is_current": False,
                "is_inferred": False,
            },
            {
                "product_sk": 12,
                "product_id": "P1",
                "list_price": Decimal("12.00"),
                "valid_from": utc(2024, 2, 1),
                "is_current": True,
                "is_inferred": False,
            },
            {
                "product_sk": 99,
                "product_id": "P9",
                "valid_from": MEMBER_FROM,
                "is_current": True,
                "is_inferred": True,
            },
            {
                "product_sk": UNKNOWN_SK,
                "product_id": None,
                "valid_from": MEMBER_FROM,
                "is_current": True,
                "is_inferred": False,
            },
        ],
    )


def fact_lines(
    spark: SparkSession, orders: list[dict[str, Any]], lines: list[dict[str, Any]], **dims: DataFrame
) -> DataFrame:
    return rows_of(spark, SILVER_SCHEMAS["order_items"], lines).transform(
        build_fact_order_lines, orders=rows_of(spark, SILVER_SCHEMAS["orders"], orders), **dims
    )


def fact_orders(
    spark: SparkSession, orders: list[dict[str, Any]], lines: list[dict[str, Any]], dim_customer: DataFrame
) -> DataFrame:
    return rows_of(spark, SILVER_SCHEMAS["orders"], orders).transform(
        build_fact_orders,
        order_items=rows_of(spark, SILVER_SCHEMAS["order_items"], lines),
        dim_customer=dim_customer,
    )


def test_is_revenue_status(spark: SparkSession) -> None:
    source = spark.createDataFrame(
        [("delivered", True), ("created", True), ("cancelled", False), ("RETURNED", False), (None, False)],
        "status string, expected boolean",
    )
    actual = source.withColumn("actual", is_revenue_status("status"))
    chispa.assert_column_equality(actual, "actual", "expected")


def test_price_change_between_two_orders_picks_the_product_version_of_each_order(
    spark: SparkSession, dim_customer: DataFrame, dim_product: DataFrame
) -> None:
    orders = [
        order("O1", "C2", utc(2024, 1, 15, 10)),
        order("O2", "C2", utc(2024, 2, 10, 9)),
        order("O3", "C2", utc(2024, 2, 1)),
    ]  # O3: exactly when the new price starts
    lines = [
        line("O1", 1, "P1", 2, "10.00"),
        line("O2", 1, "P1", 1, "12.00", "2.00"),
        line("O3", 1, "P1", 1, "12.00"),
    ]
    actual = fact_lines(spark, orders, lines, dim_customer=dim_customer, dim_product=dim_product).select(
        "order_id", "product_id", "product_sk", "unit_price", "net_amount_base"
    )
    expected = spark.createDataFrame(
        [
            ("O1", "P1", 11, Decimal("10.00"), Decimal("20.000000")),
            ("O2", "P1", 12, Decimal("12.00"), Decimal("10.000000")),
            ("O3", "P1", 12, Decimal("12.00"), Decimal("12.000000")),
        ],
        "order_id string, product_id string, product_sk bigint, unit_price decimal(20,4), "
        "net_amount_base decimal(22,6)",
    )
    chispa.assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_order_before_the_first_version_takes_the_first_version(
    spark: SparkSession, dim_customer: DataFrame, dim_product: DataFrame
) -> None:
    orders = [order("O0", "C1", utc(2023, 12, 24, 18))]
    actual = fact_lines(
        spark, orders, [line("O0", 1, "P1", 1, "9.00")], dim_customer=dim_customer, dim_product=dim_product
    ).select("order_id", "customer_sk", "product_sk")
    expected = spark.createDataFrame(
        [("O0", 101, 11)], "order_id string, customer_sk bigint, product_sk bigint"
    )
    chispa.assert_df_equality(actual, expected, ignore_nullable=True)


def test_customer_key_follows_the_customer_version_at_order_time(
    spark: SparkSession, dim_customer: DataFrame
) -> None:
    orders = [order("O1", "C1", utc(2024, 2, 29, 23, 59)), order("O2", "C1", utc(2024, 3, 5))]
    actual = fact_orders(spark, orders, [], dim_customer).select("order_id", "customer_sk")
    expected = spark.createDataFrame([("O1", 101), ("O2", 102)], "order_id string, customer_sk bigint")
    chispa.assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_order_cancelled_after_delivery_is_not_revenue(
    spark: SparkSession, dim_customer: DataFrame, dim_product: DataFrame
) -> None:
    # silver holds the current state only: O1 was delivered, then cancelled.
    orders = [
        order("O1", "C2", utc(2024, 1, 5), order_status="cancelled"),
        order("O2", "C2", utc(2024, 1, 6)),
        order("O3", "C2", utc(2024, 1, 7), order_status="returned"),
        order("O4", "C2", utc(2024, 1, 8), order_status=None),
    ]
    lines = [line(o, 1, "P1", 1, "10.00") for o in ("O1", "O2", "O3", "O4")]
    actual_lines = fact_lines(spark, orders, lines, dim_customer=dim_customer, dim_product=dim_product)
    actual_orders = fact_orders(spark, orders, lines, dim_customer)
    expected = spark.createDataFrame(
        [
            ("O1", "cancelled", False),
            ("O2", "delivered", True),
            ("O3", "returned", False),
            ("O4", None, False),
        ],
        "order_id string, order_status string, is_revenue boolean",
    )
    for actual in (actual_lines, actual_orders):
        chispa.assert_df_equality(
            actual.select("order_id", "order_status", "is_revenue"),
            expected,
            ignore_row_order=True,
            ignore_nullable=True,
        )


def test_customer_with_a_single_order_in_another_currency(
    spark: SparkSession, dim_customer: DataFrame
) -> None:
    usd = {
        "currency": "USD",
        "fx_rate_to_base": Decimal("0.90000000"),
        "shipping_fee": Decimal("4.99"),
        "shipping_fee_base": Decimal("4.491000"),
        "channel": "app",
        "ship_country": "US",
        "ship_city": "Austin",
        "order_status": "shipped",
    }
    orders = [order("O7", "C2", utc(2024, 6, 30, 22, 15), **usd)]
    lines = [line("O7", 1, "P1", 2, "10.00", rate="0.9"), line("O7", 2, "P2", 3, "5.00", "1.50", rate="0.9")]
    actual = fact_orders(spark, orders, lines, dim_customer)
    expected = rows_of(
        spark,
        FACT_ORDERS_SCHEMA,
        [
            {
                "order_id": "O7",
                "customer_id": "C2",
                "customer_sk": 201,
                "order_ts": utc(2024, 6, 30, 22, 15),
                "order_date_key": 20240630,
                "updated_at": utc(2024, 6, 30, 22, 15),
                "order_status": "shipped",
                "channel": "app",
                "ship_country": "US",
                "ship_city": "Austin",
                "payment_type": "card",
                "currency": "USD",
                "line_count": 2,
                "item_count": 5,
                "net_amount_base": Decimal("30.150000"),  # 20.00*0.9 + 13.50*0.9
                "shipping_fee_base": Decimal("4.491000"),
                "is_revenue": True,
            }
        ],
    )
    chispa.assert_df_equality(actual, expected, ignore_nullable=True)


def test_order_line_carries_its_order_and_keys(
    spark: SparkSession, dim_customer: DataFrame, dim_product: DataFrame
) -> None:
    orders = [order("O8", "C1", utc(2024, 3, 31, 23, 30), currency="USD", fx_rate_to_base=Decimal("0.9"))]
    actual = fact_lines(
        spark,
        orders,
        [line("O8", 3, "P1", 3, "5.00", "1.50", rate="0.9")],
        dim_customer=dim_customer,
        dim_product=dim_product,
    )
    expected = rows_of(
        spark,
        FACT_ORDER_LINES_SCHEMA,
        [
            {
                "order_id": "O8",
                "line_no": 3,
                "order_ts": utc(2024, 3, 31, 23, 30),
                "order_date_key": 20240331,
                "customer_id": "C1",
                "customer_sk": 102,
                "product_id": "P1",
                "product_sk": 12,
                "quantity": 3,
                "unit_price": Decimal("5.00"),
                "discount_amount": Decimal("1.50"),
                "net_amount": Decimal("13.50"),
                "net_amount_base": Decimal("12.150000"),
                "fx_rate_to_base": Decimal("0.9"),
                "currency": "USD",
                "order_status": "delivered",
                "channel": "web",
                "is_revenue": True,
            }
        ],
    )
    chispa.assert_df_equality(actual, expected, ignore_nullable=True)


def test_unknown_customer_and_product_map_to_unknown_and_inferred_members(
    spark: SparkSession, dim_customer: DataFrame, dim_product: DataFrame
) -> None:
    orders = [order("G1", None, utc(2024, 4, 1)), order("O9", "C9", utc(2024, 4, 2))]  # G1: guest checkout
    lines = [line("G1", 1, None, 1, "1.00"), line("O9", 1, "P9", 1, "1.00")]
    actual = fact_lines(spark, orders, lines, dim_customer=dim_customer, dim_product=dim_product).select(
        "order_id", "customer_id", "customer_sk", "product_id", "product_sk"
    )
    expected = spark.createDataFrame(
        [("G1", None, UNKNOWN_SK, None, UNKNOWN_SK), ("O9", "C9", 909, "P9", 99)],
        "order_id string, customer_id string, customer_sk bigint, product_id string, product_sk bigint",
    )
    chispa.assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_ids_the_dimensions_do_not_know_yet_get_their_inferred_member_key(
    spark: SparkSession, dim_customer: DataFrame, dim_product: DataFrame
) -> None:
    orders = [order("O5", "C-new", utc(2024, 4, 3))]
    actual = fact_lines(
        spark, orders, [line("O5", 1, "P-new", 1, "1.00")], dim_customer=dim_customer, dim_product=dim_product
    ).select("customer_sk", "product_sk")
    expected = spark.range(1).select(
        member_sk("customer", F.lit("C-new")).alias("customer_sk"),
        member_sk("product", F.lit("P-new")).alias("product_sk"),
    )
    chispa.assert_df_equality(actual, expected, ignore_nullable=True)
    assert actual.where((F.col("customer_sk") <= 0) | (F.col("product_sk") <= 0)).isEmpty()


def test_order_without_lines_has_zero_totals_and_line_without_order_waits(
    spark: SparkSession, dim_customer: DataFrame, dim_product: DataFrame
) -> None:
    orders = [order("O6", "C2", utc(2024, 5, 1))]
    lines = [line("O-missing", 1, "P1", 1, "10.00")]  # its order was quarantined upstream
    actual_orders = fact_orders(spark, orders, lines, dim_customer).select(
        "order_id", "line_count", "item_count", "net_amount_base"
    )
    expected_orders = spark.createDataFrame(
        [("O6", 0, 0, Decimal("0"))],
        "order_id string, line_count bigint, item_count bigint, net_amount_base decimal(22,6)",
    )
    chispa.assert_df_equality(actual_orders, expected_orders, ignore_nullable=True)
    assert fact_lines(spark, orders, lines, dim_customer=dim_customer, dim_product=dim_product).isEmpty()
