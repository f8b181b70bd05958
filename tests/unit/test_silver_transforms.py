"""Pure silver transformations and column helpers."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from chispa import assert_df_equality
from pyspark.sql import types as T

from pipeline_lib.silver.common import (
    clean_string,
    parse_boolean,
    parse_decimal,
    parse_timestamp,
)
from pipeline_lib.silver.fx import with_fx_rate
from pipeline_lib.silver.orders import with_line_amounts, with_superseded_flag
from pipeline_lib.silver.products import with_delisted_products
from pipeline_lib.silver.schemas import RATE


def test_clean_string_trims_and_blanks_to_null(spark):
    source = spark.createDataFrame(
        [("  a b ", "a b"), ("   ", None), (None, None), ("", None)], "raw string, expected string"
    )
    actual = source.select(clean_string("raw").alias("actual"), "expected").collect()
    assert [r["actual"] for r in actual] == [r["expected"] for r in actual]


def test_parse_timestamp_offset_naive_and_garbage_to_utc(spark):
    source = spark.createDataFrame(
        [
            ("2024-03-01T10:00:00+02:00", "2024-03-01 08:00:00"),
            ("2024-03-01T10:00:00Z", "2024-03-01 10:00:00"),
            ("2024-07-01 10:00:00", "2024-07-01 08:00:00"),  # naive, Berlin summer time
            ("2024-01-01T10:00:00.5", "2024-01-01 09:00:00.5"),  # naive, winter time, fraction kept
            ("not a time", None),
            (None, None),
        ],
        "raw string, expected string",
    )
    actual = source.select(
        parse_timestamp("raw", source_timezone="Europe/Berlin").cast("string").alias("actual"), "expected"
    ).collect()
    assert [r["actual"] for r in actual] == [r["expected"] for r in actual]


def test_parse_decimal_and_boolean_with_try_cast_semantics(spark):
    source = spark.createDataFrame(
        [("12.345", "TRUE"), ("1,5", "maybe"), (" ", None), ("12.34", "f"), ("1e2", "1"), ("NaN", "no")],
        "amount string, flag string",
    )
    money = T.DecimalType(18, 2)
    actual = [
        tuple(r)
        for r in source.select(
            parse_decimal("amount", money), parse_decimal("amount", money, exact=False), parse_boolean("flag")
        ).collect()
    ]
    # Money is never rounded: 12.345 does not fit two decimals and does not parse; a rate is rounded.
    assert actual == [
        (None, Decimal("12.35"), True),
        (None, None, None),
        (None, None, None),
        (Decimal("12.34"), Decimal("12.34"), False),
        (Decimal("100.00"), Decimal("100.00"), True),
        (None, None, False),
    ]


RATES = T.StructType(
    [
        T.StructField("rate_date", T.DateType()),
        T.StructField("currency", T.StringType()),
        T.StructField("rate_to_base", RATE),
    ]
)


def test_with_fx_rate_as_of_base_currency_and_missing(spark):
    rates = spark.createDataFrame(
        [(dt.date(2024, 1, 1), "USD", Decimal("0.9")), (dt.date(2024, 1, 3), "USD", Decimal("0.8"))], RATES
    )
    source = spark.createDataFrame(
        [
            ("same_day", "USD", dt.date(2024, 1, 3)),
            ("fallback", "USD", dt.date(2024, 1, 2)),
            ("before_first", "USD", dt.date(2023, 12, 31)),
            ("base", "EUR", dt.date(2024, 1, 2)),
            ("unknown", "JPY", dt.date(2024, 1, 2)),
            ("null_date", "USD", None),
        ],
        "id string, currency string, order_date date",
    )
    actual = with_fx_rate(source, rates=rates, base_currency="EUR")
    expected = spark.createDataFrame(
        [
            ("same_day", "USD", dt.date(2024, 1, 3), Decimal("0.8")),
            ("fallback", "USD", dt.date(2024, 1, 2), Decimal("0.9")),
            ("before_first", "USD", dt.date(2023, 12, 31), None),
            ("base", "EUR", dt.date(2024, 1, 2), Decimal("1")),
            ("unknown", "JPY", dt.date(2024, 1, 2), None),
            ("null_date", "USD", None, None),
        ],
        T.StructType([*source.schema.fields, T.StructField("fx_rate_to_base", RATE)]),
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_with_line_amounts(spark):
    source = spark.createDataFrame(
        [(2, Decimal("3.50"), Decimal("1.00"), Decimal("0.9")), (1, None, Decimal("0"), Decimal("1"))],
        "quantity int, unit_price decimal(18,2), discount_amount decimal(18,2), "
        "fx_rate_to_base decimal(18,8)",
    )
    actual = [(r["net_amount"], r["net_amount_base"]) for r in with_line_amounts(source).collect()]
    assert actual == [(Decimal("6.00"), Decimal("5.400000")), (None, None)]


def test_with_superseded_flag_keeps_only_the_newest_order_version(spark):
    t = dt.datetime
    source = spark.createDataFrame(
        [
            ("o1", 1, t(2024, 1, 1), None),  # older than the batch's newer o1 version
            ("o1", 1, t(2024, 1, 2), None),
            ("o2", 1, t(2024, 1, 1), t(2024, 1, 5)),  # silver order is newer
            ("o3", 1, t(2024, 1, 1), None),  # silver lines are newer
            ("o4", 1, None, None),
        ],
        "order_id string, line_no int, order_updated_at timestamp, current_order_updated_at timestamp",
    )
    recorded = spark.createDataFrame([("o3", t(2024, 1, 3))], "order_id string, recorded_version timestamp")
    actual = sorted(
        (r["order_id"], r["order_updated_at"], r["_is_superseded"])
        for r in with_superseded_flag(source, recorded_versions=recorded).collect()
        if r["order_id"] != "o4"
    )
    assert actual == [
        ("o1", t(2024, 1, 1), True),
        ("o1", t(2024, 1, 2), False),
        ("o2", t(2024, 1, 1), True),
        ("o3", t(2024, 1, 1), True),
    ]


PRODUCT_ATTRS = (
    "sku string, name string, brand string, category_path array<string>, category_l1 string, "
    "category_l2 string, "
    "category_l3 string, price decimal(18,2), currency string, is_active boolean, attributes string"
)


def test_with_delisted_products_closes_missing_and_relists(spark):
    t = dt.datetime
    attrs = ("s", "n", "b", ["A"], "A", None, None, Decimal("1.00"), "EUR", True, None)
    snapshot = (
        f"product_id string, {PRODUCT_ATTRS}, updated_at timestamp, valid_from timestamp, "
        "is_delisted boolean, "
        "_source_file string, _ingest_date date, _run_id string, snapshot_ts timestamp"
    )
    day2, day3 = dt.date(2024, 1, 2), dt.date(2024, 1, 3)
    source = spark.createDataFrame(
        [
            ("p1", *attrs, t(2024, 1, 1), t(2024, 1, 1), False, "f2", day2, "r", t(2024, 1, 2)),
            ("p1", *attrs, t(2024, 1, 1), t(2024, 1, 1), False, "f3", day3, "r", t(2024, 1, 3)),
            ("p2", *attrs, t(2024, 1, 1), t(2024, 1, 1), False, "f2", day2, "r", t(2024, 1, 2)),
        ],
        snapshot,
    )
    current = spark.createDataFrame(
        [
            ("p1", *attrs, True, t(2024, 1, 1, 12), t(2024, 1, 1, 12)),  # delisted, comes back on day 2
            ("p3", *attrs, False, t(2023, 12, 1), t(2023, 12, 1)),  # missing from both snapshots
        ],
        f"product_id string, {PRODUCT_ATTRS}, is_delisted boolean, valid_from timestamp, "
        "updated_at timestamp",
    )
    actual = sorted(
        (r["product_id"], r["_ingest_date"], r["is_delisted"], r["valid_from"])
        for r in with_delisted_products(source, current=current).collect()
    )
    assert actual == [
        (
            "p1",
            day2,
            False,
            t(2024, 1, 2),
        ),  # relisted at the snapshot (updated_at is older than the delisting)
        ("p1", day3, False, t(2024, 1, 1)),
        ("p2", day2, False, t(2024, 1, 1)),
        ("p2", day3, True, t(2024, 1, 3)),  # missing from day 3
        ("p3", day2, True, t(2024, 1, 2)),  # missing from day 2; day 3 adds nothing
    ]
