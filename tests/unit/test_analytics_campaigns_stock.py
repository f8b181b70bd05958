"""The notebook queries on the campaign and stock tables (pipeline_lib.analysis.queries), on literal rows."""

from __future__ import annotations

import datetime as dt

from chispa import assert_df_equality
from pyspark.sql import SparkSession

from pipeline_lib.analysis import queries as A

D = dt.date
AS_OF = D(2026, 3, 6)


def test_audience_sizes_count_groups_per_segment(spark: SparkSession) -> None:
    audiences = spark.createDataFrame(
        [
            ("winback", AS_OF, "c1", "Lost", "treatment", "email"),
            ("winback", AS_OF, "c2", "Lost", "control", "email"),
            ("winback", AS_OF, "c3", "At risk", "treatment", "email"),
            ("winback", D(2026, 3, 5), "c4", "Lost", "treatment", "email"),  # another date
        ],
        "campaign string, as_of_date date, customer_id string, segment string, group string, channel string",
    )
    actual = audiences.transform(A.audience_sizes, as_of=AS_OF)
    expected = spark.createDataFrame(
        [("winback", "email", "Lost", 1, 1, 2), ("winback", "email", "At risk", 1, 0, 1)],
        "campaign string, channel string, segment string, treatment long, control long, members long",
    )
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_campaign_uplift_puts_both_groups_on_one_row(spark: SparkSession) -> None:
    columns = (
        "campaign string, as_of_date date, group string, channel string, start_date date, days_measured int, "
        "customers long, conversion_rate double, conversion_uplift double, conversion_uplift_ci_low double, "
        "conversion_uplift_ci_high double, revenue_uplift_per_customer double, is_significant boolean"
    )
    results = spark.createDataFrame(
        [
            ("w", AS_OF, "treatment", "email", D(2026, 3, 4), 3, 90, 0.2, 0.1, 0.02, 0.18, 4.0, True),
            ("w", AS_OF, "control", "email", D(2026, 3, 4), 3, 10, 0.1, None, None, None, None, None),
        ],
        columns,
    )
    row = results.transform(A.campaign_uplift, as_of=AS_OF).first().asDict()
    assert (row["treatment_customers"], row["control_customers"]) == (90, 10)
    assert (row["treatment_conversion"], row["control_conversion"], row["ci_low"], row["ci_high"]) == (
        0.2,
        0.1,
        0.02,
        0.18,
    )


SIGNALS = (
    "product_id string, as_of_date date, available long, avg_daily_units_28d double, days_of_cover double, "
    "lead_time_days int, days_out_of_stock_28d int, lost_sales_units_28d double, reorder_point double, "
    "reorder_now boolean, suggested_quantity long"
)


def test_products_at_risk_and_the_cover_distribution(spark: SparkSession) -> None:
    signals = spark.createDataFrame(
        [
            ("P1", AS_OF, 2, 1.0, 2.0, 5, 0, 0.0, 6.0, True, 10),  # reorder now
            ("P2", AS_OF, 30, 1.0, 30.0, 5, 0, 0.0, 6.0, False, 0),
            ("P3", AS_OF, 4, 1.0, 4.0, 7, 2, 2.0, 8.0, False, 0),  # cover shorter than lead time
            ("P4", AS_OF, 0, None, None, 7, 28, None, None, False, 0),  # demand unknown
            ("P5", D(2026, 3, 1), 0, 9.0, 0.0, 7, 0, 0.0, 70.0, True, 90),  # another date
        ],
        SIGNALS,
    )
    products = spark.createDataFrame([("P1", "Phone")], "product_id string, name string")
    risk = signals.transform(A.products_at_risk, products=products, as_of=AS_OF).collect()
    assert [(r["product_id"], r["name"]) for r in risk] == [("P1", "Phone"), ("P3", None)]
    buckets = signals.transform(A.cover_distribution, as_of=AS_OF).collect()
    assert [(r["bucket"], r["products"]) for r in buckets] == [
        ("0-3", 1),
        ("3-7", 1),
        ("7-14", 0),
        ("14-28", 0),
        ("28-56", 1),
        ("56+", 0),
        ("no demand", 1),
    ]
    headline = signals.transform(A.stock_headline, as_of=AS_OF).first().asDict()
    assert headline == {"products": 4, "reorder_now": 1, "out_of_stock_now": 1, "lost_sales_units_28d": 2.0}


def test_stock_status_by_day_counts_a_product_out_when_no_location_has_stock(spark: SparkSession) -> None:
    daily = spark.createDataFrame(
        [
            ("P1", "A", AS_OF, False),
            ("P1", "B", AS_OF, True),
            ("P2", "A", AS_OF, False),
        ],
        "product_id string, location_id string, date date, in_stock boolean",
    )
    row = daily.transform(A.stock_status_by_day).first()
    assert (row["products"], row["out_of_stock"], row["out_of_stock_share"]) == (2, 1, 0.5)
