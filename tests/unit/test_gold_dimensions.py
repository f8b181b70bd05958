"""Unit tests of the gold dimensions: dim_date, dim_customer, dim_product and their keys."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import chispa
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline_lib.gold.dimensions import (
    UNKNOWN_SK,
    build_dim_customer,
    build_dim_date,
    build_dim_product,
    date_key,
    member_sk,
    surrogate_key,
)
from pipeline_lib.gold.schemas import (
    DIM_CUSTOMER_SCHEMA,
    DIM_DATE_SCHEMA,
    DIM_PRODUCT_SCHEMA,
    GOLD_SCHEMAS,
)
from pipeline_lib.privacy.pii import PII_COLUMNS
from pipeline_lib.silver.schemas import SILVER_SCHEMAS

UTC = dt.UTC
MEMBER_FROM = dt.datetime(1900, 1, 1, tzinfo=UTC)

# Pinned keys: the scheme must never change silently, or every fact would point elsewhere.
C1_FIRST_SK = 732446947205591654  # customer C1, first version (= its inferred-member key)
C1_2024_03_01_SK = 139856757987756082  # customer C1, version valid from 2024-03-01T12:00Z
C3_MEMBER_SK = 267213617383391843  # customer C3, inferred
P1_FIRST_SK = 211310331602921364  # product P1, first version
P1_2024_02_01_SK = 891570327534638798  # product P1, version valid from 2024-02-01T00:00Z


def utc(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=UTC)


def silver_df(spark: SparkSession, table: str, rows: list[dict[str, Any]]) -> DataFrame:
    """A literal silver table: the named columns of each row, the rest null."""
    schema = SILVER_SCHEMAS[table]
    return spark.createDataFrame([tuple(row.get(f.name) for f in schema.fields) for row in rows], schema)


def test_date_key_is_yyyymmdd(spark: SparkSession) -> None:
    source = spark.createDataFrame(
        [(dt.date(2024, 2, 29), 20240229), (dt.date(1999, 12, 31), 19991231), (None, None)],
        "date date, expected int",
    )
    actual = source.withColumn("actual", date_key("date"))
    chispa.assert_column_equality(actual, "actual", "expected")


def test_surrogate_key_is_pinned_positive_and_tells_null_from_empty(spark: SparkSession) -> None:
    source = spark.createDataFrame(
        [("C1", C1_FIRST_SK), ("C3", C3_MEMBER_SK), (None, UNKNOWN_SK)], "customer_id string, expected bigint"
    )
    actual = source.withColumn("actual", member_sk("customer", "customer_id"))
    chispa.assert_column_equality(actual, "actual", "expected")
    keys = spark.range(1).select(
        surrogate_key(F.lit("a"), F.lit(None)).alias("with_null"),
        surrogate_key(F.lit("a"), F.lit("")).alias("empty"),
    )
    assert keys.where((F.col("with_null") == F.col("empty")) | (F.col("with_null") < 0)).isEmpty()


def test_dim_date_covers_whole_years_of_the_data(spark: SparkSession) -> None:
    source = spark.createDataFrame([(dt.date(2024, 2, 29),), (dt.date(2023, 12, 31),), (None,)], "date date")
    actual = build_dim_date(source).agg(
        F.min("date").alias("first"), F.max("date").alias("last"), F.count("*").alias("days")
    )
    expected = spark.createDataFrame(
        [(dt.date(2023, 1, 1), dt.date(2024, 12, 31), 365 + 366)], "first date, last date, days bigint"
    )
    chispa.assert_df_equality(actual, expected, ignore_nullable=True)


def test_dim_date_edge_days(spark: SparkSession) -> None:
    source = spark.createDataFrame([(dt.date(2024, 3, 1),), (dt.date(2023, 6, 1),)], "date date")
    edges = [dt.date(2023, 12, 31), dt.date(2024, 1, 1), dt.date(2024, 2, 29), dt.date(2024, 3, 2)]
    actual = build_dim_date(source).where(F.col("date").isin(edges))
    expected = spark.createDataFrame(
        [
            # a Sunday that ends the year: ISO week 52 of 2023
            (
                20231231,
                dt.date(2023, 12, 31),
                2023,
                4,
                12,
                "December",
                31,
                365,
                7,
                "Sunday",
                52,
                True,
                "2023-12",
            ),
            # new year, a Monday: ISO week 1
            (20240101, dt.date(2024, 1, 1), 2024, 1, 1, "January", 1, 1, 1, "Monday", 1, False, "2024-01"),
            # leap day, a Thursday
            (
                20240229,
                dt.date(2024, 2, 29),
                2024,
                1,
                2,
                "February",
                29,
                60,
                4,
                "Thursday",
                9,
                False,
                "2024-02",
            ),
            # a Saturday
            (20240302, dt.date(2024, 3, 2), 2024, 1, 3, "March", 2, 62, 6, "Saturday", 9, True, "2024-03"),
        ],
        DIM_DATE_SCHEMA,
    )
    chispa.assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_dim_date_of_no_dates_is_empty(spark: SparkSession) -> None:
    source = spark.createDataFrame([(None,)], "date date")
    actual = build_dim_date(source)
    assert [(f.name, f.dataType) for f in actual.schema] == [(f.name, f.dataType) for f in DIM_DATE_SCHEMA]
    assert actual.isEmpty()


def test_dim_customer_versions_unknown_and_inferred_members(spark: SparkSession) -> None:
    pii = {
        "email": "ann@example.com",
        "first_name": "Ann",
        "last_name": "Lee",
        "phone": "+49 1",
        "postal_code": "10115",
    }
    customers = silver_df(
        spark,
        "customers",
        [
            {
                **pii,
                "customer_id": "C1",
                "email_hash": "h1",
                "country": "DE",
                "city": "Berlin",
                "marketing_opt_in": True,
                "valid_from": utc(2024, 1, 1),
                "valid_to": utc(2024, 3, 1, 12),
                "is_current": False,
            },
            {
                **pii,
                "customer_id": "C1",
                "email_hash": "h1",
                "country": "FR",
                "city": "Paris",
                "marketing_opt_in": None,
                "valid_from": utc(2024, 3, 1, 12),
                "valid_to": None,
                "is_current": True,
            },
        ],
    )
    orders = silver_df(
        spark,
        "orders",
        [
            {"order_id": "O1", "customer_id": "C1"},
            {"order_id": "O2", "customer_id": "C3"},
            {"order_id": "O3", "customer_id": "C3"},
            {"order_id": "O4", "customer_id": None},
        ],
    )
    actual = build_dim_customer(customers, orders=orders)
    expected = spark.createDataFrame(
        [
            (
                C1_FIRST_SK,
                "C1",
                "h1",
                "DE",
                "Berlin",
                None,
                True,
                utc(2024, 1, 1),
                utc(2024, 3, 1, 12),
                False,
                False,
            ),
            (C1_2024_03_01_SK, "C1", "h1", "FR", "Paris", None, None, utc(2024, 3, 1, 12), None, True, False),
            (C3_MEMBER_SK, "C3", None, None, None, None, None, MEMBER_FROM, None, True, True),
            (UNKNOWN_SK, None, None, None, None, None, None, MEMBER_FROM, None, True, False),
        ],
        DIM_CUSTOMER_SCHEMA,
    )
    chispa.assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_inferred_customer_keeps_its_key_when_the_crm_delivers_it(spark: SparkSession) -> None:
    orders = silver_df(spark, "orders", [{"order_id": "O2", "customer_id": "C3"}])
    customers = silver_df(
        spark,
        "customers",
        [{"customer_id": "C3", "country": "IT", "valid_from": utc(2024, 5, 1), "is_current": True}],
    )
    actual = build_dim_customer(customers, orders=orders).where(F.col("customer_id") == "C3")
    expected = spark.createDataFrame(
        [(C3_MEMBER_SK, "C3", None, "IT", None, None, None, utc(2024, 5, 1), None, True, False)],
        DIM_CUSTOMER_SCHEMA,
    )
    chispa.assert_df_equality(actual, expected, ignore_nullable=True)


def test_no_gold_table_has_personal_data() -> None:
    leaked = {
        table: sorted(set(PII_COLUMNS) & set(schema.fieldNames())) for table, schema in GOLD_SCHEMAS.items()
    }
    assert {table: cols for table, cols in leaked.items() if cols} == {}
    assert set(GOLD_SCHEMAS) == {
        "dim_date",
        "dim_customer",
        "dim_product",
        "fact_order_lines",
        "fact_orders",
        "fact_sessions",
        "customer_segments",
        "product_popularity",
        "campaign_audiences",
        "campaign_results",
        "fact_inventory_daily",
        "stock_signals",
        "recommendations",
        "product_affinity",
        "recommendation_metrics",
        "product_interest_hourly",
    }


def test_dim_product_price_change_unknown_and_inferred_members(spark: SparkSession) -> None:
    catalogue = {
        "product_id": "P1",
        "sku": "SKU-1",
        "name": "Phone",
        "brand": "Acme",
        "category_l1": "Electronics",
        "category_l2": "Phones",
        "category_l3": None,
        "currency": "EUR",
        "is_active": True,
        "is_delisted": False,
    }
    products = silver_df(
        spark,
        "products",
        [
            {
                **catalogue,
                "price": Decimal("10.00"),
                "valid_from": utc(2024, 1, 1),
                "valid_to": utc(2024, 2, 1),
                "is_current": False,
            },
            {
                **catalogue,
                "price": Decimal("12.50"),
                "valid_from": utc(2024, 2, 1),
                "valid_to": None,
                "is_current": True,
            },
        ],
    )
    order_items = silver_df(
        spark,
        "order_items",
        [
            {"order_id": "O1", "line_no": 1, "product_id": "P1"},
            {"order_id": "O1", "line_no": 2, "product_id": "P9"},
            {"order_id": "O2", "line_no": 1, "product_id": None},
        ],
    )
    actual = build_dim_product(products, order_items=order_items)
    phone = ("P1", "SKU-1", "Phone", "Acme", "Electronics", "Phones", None)
    nothing = (None,) * 6
    expected = spark.createDataFrame(
        [
            (
                P1_FIRST_SK,
                *phone,
                Decimal("10.00"),
                "EUR",
                True,
                False,
                utc(2024, 1, 1),
                utc(2024, 2, 1),
                False,
                False,
            ),
            (
                P1_2024_02_01_SK,
                *phone,
                Decimal("12.50"),
                "EUR",
                True,
                False,
                utc(2024, 2, 1),
                None,
                True,
                False,
            ),
            (
                member_sk_value(spark, "product", "P9"),
                "P9",
                *nothing,
                None,
                None,
                None,
                None,
                MEMBER_FROM,
                None,
                True,
                True,
            ),
            (UNKNOWN_SK, None, *nothing, None, None, None, None, MEMBER_FROM, None, True, False),
        ],
        DIM_PRODUCT_SCHEMA,
    )
    chispa.assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_dim_product_keys_are_unique_with_duplicate_order_references(spark: SparkSession) -> None:
    products = silver_df(
        spark, "products", [{"product_id": "P1", "valid_from": utc(2024, 1, 1), "is_current": True}]
    )
    order_items = silver_df(
        spark, "order_items", [{"order_id": f"O{i}", "line_no": 1, "product_id": "P7"} for i in range(3)]
    )
    actual = build_dim_product(products, order_items=order_items)
    assert actual.groupBy("product_sk").count().where(F.col("count") > 1).isEmpty()
    assert actual.count() == 3  # P1, inferred P7 once, unknown


def member_sk_value(spark: SparkSession, entity: str, natural_key: str) -> int:
    row = spark.range(1).select(member_sk(entity, F.lit(natural_key))).first()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("table", ["customers", "products"])
def test_dimension_of_empty_history_holds_only_the_unknown_member(spark: SparkSession, table: str) -> None:
    history = silver_df(spark, table, [])
    if table == "customers":
        actual = build_dim_customer(history, orders=silver_df(spark, "orders", []))
        key = "customer_sk"
    else:
        actual = build_dim_product(history, order_items=silver_df(spark, "order_items", []))
        key = "product_sk"
    expected = spark.createDataFrame([(UNKNOWN_SK,)], T.StructType([T.StructField(key, T.LongType())]))
    chispa.assert_df_equality(actual.select(key), expected, ignore_nullable=True)
