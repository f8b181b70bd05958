"""Unit tests of pipeline_lib.analysis.queries: the queries behind the analyst notebooks."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from chispa import assert_column_equality, assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline_lib.analysis import queries as A
from pipeline_lib.io.delta import MissingColumnsError
from pipeline_lib.silver.schemas import BASE_MONEY

D1 = dt.date(2026, 3, 1)
D2 = dt.date(2026, 3, 2)
T1 = dt.datetime(2026, 3, 1, 10, 0, 0)


def _schema(*fields: tuple[str, T.DataType]) -> T.StructType:
    return T.StructType([T.StructField(name, data_type, True) for name, data_type in fields])


ORDERS = _schema(
    ("order_id", T.StringType()),
    ("order_date_key", T.IntegerType()),
    ("channel", T.StringType()),
    ("order_status", T.StringType()),
    ("item_count", T.LongType()),
    ("net_amount_base", BASE_MONEY),
)
SEGMENTS = _schema(
    ("customer_id", T.StringType()),
    ("as_of_date", T.DateType()),
    ("recency_days", T.IntegerType()),
    ("frequency", T.LongType()),
    ("monetary", BASE_MONEY),
    ("r_score", T.IntegerType()),
    ("f_score", T.IntegerType()),
    ("m_score", T.IntegerType()),
    ("segment", T.StringType()),
)
POPULARITY = _schema(
    ("product_id", T.StringType()),
    ("as_of_date", T.DateType()),
    ("window_days", T.IntegerType()),
    ("views", T.LongType()),
    ("add_to_carts", T.LongType()),
    ("purchases", T.LongType()),
    ("units", T.LongType()),
    ("revenue", BASE_MONEY),
    ("view_to_cart_rate", T.DoubleType()),
    ("cart_to_purchase_rate", T.DoubleType()),
    ("rank_in_category", T.IntegerType()),
    ("rank_overall", T.IntegerType()),
    ("category_l1", T.StringType()),
)
PRODUCTS = _schema(
    ("product_id", T.StringType()),
    ("name", T.StringType()),
    ("brand", T.StringType()),
    ("category_l1", T.StringType()),
    ("valid_from", T.TimestampType()),
    ("is_current", T.BooleanType()),
)
RUNS = _schema(
    ("run_id", T.StringType()),
    ("job", T.StringType()),
    ("layer", T.StringType()),
    ("status", T.StringType()),
    ("started_at", T.TimestampType()),
    ("ended_at", T.TimestampType()),
    ("rows_written", T.LongType()),
    ("rows_quarantined", T.LongType()),
    ("error", T.StringType()),
)
INGESTED = _schema(
    ("source", T.StringType()),
    ("file", T.StringType()),
    ("ingest_date", T.DateType()),
    ("status", T.StringType()),
    ("rows", T.LongType()),
    ("corrupt_rows", T.LongType()),
    ("rescued_rows", T.LongType()),
    ("problems", T.ArrayType(T.StringType())),
)


def _money(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _at(minutes: int) -> dt.datetime:
    return T1 + dt.timedelta(minutes=minutes)


# --- Column helpers --------------------------------------------------------------------------


def test_date_from_key_reads_yyyymmdd_and_nulls_bad_keys(spark: SparkSession) -> None:
    source = spark.createDataFrame(
        [(20260301, D1), (None, None), (20260230, None), (1, None)],
        _schema(("key", T.IntegerType()), ("expected", T.DateType())),
    )

    actual = source.withColumn("actual", A.date_from_key("key"))

    assert_column_equality(actual, "actual", "expected")


def test_safe_ratio_is_null_for_a_zero_or_null_denominator(spark: SparkSession) -> None:
    source = spark.createDataFrame(
        [(1, 4, 0.25), (1, 0, None), (None, 2, None), (3, None, None)],
        _schema(("top", T.IntegerType()), ("bottom", T.IntegerType()), ("expected", T.DoubleType())),
    )

    actual = source.withColumn("actual", A.safe_ratio("top", "bottom"))

    assert_column_equality(actual, "actual", "expected")


# --- Sales ---------------------------------------------------------------------------------


def test_with_revenue_flag_derives_the_flag_from_status_when_the_column_is_missing(
    spark: SparkSession,
) -> None:
    source = spark.createDataFrame(
        [("paid", True), ("cancelled", False), ("RETURNED", False), (None, False)],
        _schema(("order_status", T.StringType()), ("expected", T.BooleanType())),
    )

    actual = source.transform(A.with_revenue_flag)

    assert_column_equality(actual, "is_revenue", "expected")


def test_with_revenue_flag_keeps_gold_is_revenue_over_the_status(spark: SparkSession) -> None:
    source = spark.createDataFrame(
        [("cancelled", True, True), ("paid", None, False)],
        _schema(
            ("order_status", T.StringType()), ("is_revenue", T.BooleanType()), ("expected", T.BooleanType())
        ),
    )

    actual = source.transform(A.with_revenue_flag)

    assert_column_equality(actual, "is_revenue", "expected")


def test_sales_by_channel_counts_revenue_of_revenue_orders_only(spark: SparkSession) -> None:
    source = spark.createDataFrame(
        [
            ("o1", 20260301, "web", "paid", 2, _money("30.00")),
            ("o2", 20260301, "web", "delivered", 1, _money("10.00")),
            ("o3", 20260301, "web", "cancelled", 5, _money("100.00")),
            ("o4", 20260302, "app", "returned", 1, _money("60.00")),
            ("o5", 20260302, None, "paid", 3, _money("60.00")),
        ],
        ORDERS,
    )

    actual = source.transform(A.sales_by, by=["channel"])

    expected = spark.createDataFrame(
        [
            ("web", 3, 2, 1, 40.0, 3, 20.0, 0.4),
            ("app", 1, 0, 1, 0.0, 0, None, 0.0),
            (None, 1, 1, 0, 60.0, 3, 60.0, 0.6),
        ],
        "channel string, orders long, revenue_orders long, cancelled_or_returned long, revenue double, "
        "items long, aov double, revenue_share double",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_daily_sales_groups_by_the_date_of_the_order_date_key(spark: SparkSession) -> None:
    source = spark.createDataFrame(
        [
            ("o1", 20260301, "web", "paid", 1, _money("10.00")),
            ("o2", 20260302, "web", "paid", 1, _money("30.00")),
            ("o3", None, "web", "paid", 1, None),
        ],
        ORDERS,
    )

    actual = source.transform(A.daily_sales).select("order_date", "orders", "revenue", "aov")

    expected = spark.createDataFrame(
        [(D1, 1, 10.0, 10.0), (D2, 1, 30.0, 30.0), (None, 1, 0.0, 0.0)],
        "order_date date, orders long, revenue double, aov double",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_sales_by_names_the_missing_columns(spark: SparkSession) -> None:
    source = spark.createDataFrame([("o1",)], "order_id string")

    with pytest.raises(MissingColumnsError, match="sales_by: missing columns"):
        source.transform(A.sales_by, by=["channel"])


# --- Customer segments ---------------------------------------------------------------------


def _segments(spark: SparkSession) -> object:
    return spark.createDataFrame(
        [
            ("c1", D1, 3, 2, _money("50.00"), 5, 4, 4, "Champions"),
            ("c2", D1, 40, 1, _money("10.00"), 1, 1, 1, "Lost"),
            ("c3", D1, 10, 1, _money("40.00"), 4, 1, 3, "New"),
            ("c1", D2, 1, 3, _money("80.00"), 5, 5, 5, "Champions"),
            ("c3", D2, 11, 1, _money("40.00"), 3, 2, 3, "Potential loyalists"),
            ("c4", D2, 0, 1, _money("20.00"), 5, 1, 2, "New"),
        ],
        SEGMENTS,
    )


def test_segment_summary_gives_size_and_revenue_shares_of_one_date(spark: SparkSession) -> None:
    source = _segments(spark)

    actual = source.transform(A.segment_summary, as_of=D1).select(
        "segment", "customers", "customer_share", "revenue", "revenue_share"
    )

    expected = spark.createDataFrame(
        [("Champions", 1, 1 / 3, 50.0, 0.5), ("Lost", 1, 1 / 3, 10.0, 0.1), ("New", 1, 1 / 3, 40.0, 0.4)],
        "segment string, customers long, customer_share double, revenue double, revenue_share double",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_segment_trend_counts_customers_per_date_and_segment(spark: SparkSession) -> None:
    source = _segments(spark)

    actual = source.transform(A.segment_trend).where(F.col("segment").isin("New", "Champions"))

    expected = spark.createDataFrame(
        [(D1, "Champions", 1), (D1, "New", 1), (D2, "Champions", 1), (D2, "New", 1)],
        "as_of_date date, segment string, customers long",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_segment_migration_counts_moves_including_customers_new_or_gone(spark: SparkSession) -> None:
    source = _segments(spark)

    actual = source.transform(A.segment_migration, from_date=D1, to_date=D2)

    expected = spark.createDataFrame(
        [
            ("Champions", "Champions", 1, 1.0, True),
            ("Lost", A.NOT_SEGMENTED, 1, 1.0, False),
            ("New", "Potential loyalists", 1, 1.0, False),
            (A.NOT_SEGMENTED, "New", 1, 1.0, False),
        ],
        "from_segment string, to_segment string, customers long, share_of_from double, stayed boolean",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_segment_migration_refuses_dates_out_of_order(spark: SparkSession) -> None:
    source = _segments(spark)

    with pytest.raises(A.AnalyticsArgumentError, match="from_date < to_date"):
        source.transform(A.segment_migration, from_date=D2, to_date=D2)


def test_score_distribution_counts_customers_per_score_value(spark: SparkSession) -> None:
    source = (
        _segments(spark)
        .where(F.col("as_of_date") == D1)
        .unionByName(spark.createDataFrame([("c9", D1, None, None, None, None, None, None, None)], SEGMENTS))
    )

    actual = source.transform(A.score_distribution, as_of=D1).where(F.col("score") == "f_score")

    expected = spark.createDataFrame(
        [("f_score", 4, 1), ("f_score", 1, 2), ("f_score", None, 1)],
        "score string, value int, customers long",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


# --- Products ------------------------------------------------------------------------------


def _popularity(spark: SparkSession) -> object:
    return spark.createDataFrame(
        [
            ("p1", D2, 7, 10, 4, 2, 3, _money("90.00"), 0.4, 0.5, 1, 1, "Books"),
            ("p2", D2, 7, 20, 1, 1, 1, _money("30.00"), 0.05, 1.0, 2, 2, "Books"),
            ("p3", D2, 7, 5, 0, 0, 0, _money("0.00"), 0.0, None, 1, 3, None),
            ("p1", D2, 30, 99, 9, 9, 9, _money("999.00"), 0.1, 1.0, 1, 1, "Books"),
            ("p1", D1, 7, 1, 1, 1, 1, _money("1.00"), 1.0, 1.0, 1, 1, "Books"),
        ],
        POPULARITY,
    )


def test_category_ranking_sums_one_snapshot_and_labels_missing_categories(spark: SparkSession) -> None:
    source = _popularity(spark)

    actual = source.transform(A.category_ranking, as_of=D2, window_days=7)

    expected = spark.createDataFrame(
        [
            (1, "Books", 2, 30, 5, 3, 4, 120.0, 5 / 30, 0.6),
            (2, A.UNCATEGORISED, 1, 5, 0, 0, 0, 0.0, 0.0, None),
        ],
        "rank int, category_l1 string, products long, views long, add_to_carts long, purchases long, "
        "units long, revenue double, view_to_cart_rate double, cart_to_purchase_rate double",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_top_products_keeps_the_best_ranked_with_latest_names(spark: SparkSession) -> None:
    products = spark.createDataFrame(
        [
            ("p1", "Old name", "B", "Books", _at(0), False),
            ("p1", "Novel", "B", "Books", _at(60), True),
            (None, "Unknown", None, None, _at(0), True),
        ],
        PRODUCTS,
    ).transform(A.current_products)

    actual = (
        _popularity(spark)
        .transform(A.top_products, products=products, as_of=D2, window_days=7, n=2)
        .select("rank_overall", "product_id", "name", "category_l1", "revenue")
    )

    expected = spark.createDataFrame(
        [(1, "p1", "Novel", "Books", 90.0), (2, "p2", None, "Books", 30.0)],
        "rank_overall int, product_id string, name string, category_l1 string, revenue double",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_top_products_refuses_n_below_one(spark: SparkSession) -> None:
    products = spark.createDataFrame([], PRODUCTS)

    with pytest.raises(A.AnalyticsArgumentError, match="n >= 1"):
        _popularity(spark).transform(A.top_products, products=products, as_of=D2, window_days=7, n=0)


def test_session_funnel_counts_sessions_reaching_each_step(spark: SparkSession) -> None:
    source = spark.createDataFrame([(1,), (2,), (3,), (5,), (None,)], "funnel_step_no int")

    actual = source.transform(A.session_funnel)

    expected = spark.createDataFrame(
        [
            (1, "page_view", 5, 1.0, 1.0),
            (2, "product_view", 3, 0.6, 0.6),
            (3, "add_to_cart", 2, 2 / 3, 0.4),
            (4, "begin_checkout", 1, 0.5, 0.2),
            (5, "purchase", 1, 1.0, 0.2),
        ],
        "step_no int, step string, sessions long, rate_from_previous double, rate_from_start double",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_session_funnel_of_no_sessions_has_zero_counts_and_null_rates(spark: SparkSession) -> None:
    source = spark.createDataFrame([], "funnel_step_no int")

    actual = source.transform(A.session_funnel).select("sessions", "rate_from_start").distinct()

    expected = spark.createDataFrame([(0, None)], "sessions long, rate_from_start double")
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_daily_conversion_treats_a_null_converted_as_not_converted(spark: SparkSession) -> None:
    source = spark.createDataFrame(
        [(20260301, True), (20260301, None), (20260301, False), (20260302, False)],
        "session_date_key int, converted boolean",
    )

    actual = source.transform(A.daily_conversion)

    expected = spark.createDataFrame(
        [(D1, 3, 1, 1 / 3), (D2, 1, 0, 0.0)],
        "session_date date, sessions long, converted_sessions long, conversion_rate double",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


# --- Quality and operations ------------------------------------------------------------------


def test_quarantine_by_rule_counts_a_row_once_per_failed_rule(spark: SparkSession) -> None:
    source = spark.createDataFrame(
        [(["bad_qty", "bad_price"], D1), (["bad_qty"], D1), ([], D2)],
        "_failed_rules array<string>, _ingest_date date",
    )

    actual = source.transform(A.quarantine_by_rule, table="order_items")

    expected = spark.createDataFrame(
        [
            ("order_items", D1, "bad_qty", 2),
            ("order_items", D1, "bad_price", 1),
            ("order_items", D2, None, 1),
        ],
        "table string, ingest_date date, rule string, rows long",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_quality_failure_rates_sum_runs_and_null_rate_when_nothing_checked(spark: SparkSession) -> None:
    source = spark.createDataFrame(
        [
            ("orders", "valid_status", "quarantine", 10, 1),
            ("orders", "valid_status", "quarantine", 10, 3),
            ("clicks", "known_type", "flag", 0, 0),
        ],
        "table string, rule string, action string, rows_checked long, rows_failed long",
    )

    actual = source.transform(A.quality_failure_rates)

    expected = spark.createDataFrame(
        [("orders", "valid_status", "quarantine", 20, 4, 0.2), ("clicks", "known_type", "flag", 0, 0, None)],
        "table string, rule string, action string, rows_checked long, rows_failed long, failure_rate double",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def _runs(spark: SparkSession) -> object:
    return spark.createDataFrame(
        [
            ("r1", "bronze.orders", "bronze", "succeeded", _at(0), _at(1), 10, 0, None),
            ("r1", "silver.orders", "silver", "failed", _at(1), _at(3), 0, 0, "boom\ntraceback"),
            ("r2", "bronze.orders", "bronze", "succeeded", _at(10), _at(10), 0, None, None),
            ("r2", "silver.orders", "silver", "succeeded", _at(10), _at(12), 8, 2, None),
        ],
        RUNS,
    )


def test_run_history_marks_a_run_failed_when_any_job_failed(spark: SparkSession) -> None:
    actual = _runs(spark).transform(A.run_history).drop("started_at", "ended_at")

    expected = spark.createDataFrame(
        [("r1", 180, 2, 1, 10, 0, "failed"), ("r2", 120, 2, 0, 8, 2, "succeeded")],
        "run_id string, duration_s long, jobs long, failed_jobs long, rows_written long, "
        "rows_quarantined long, status string",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_job_run_summary_reports_the_latest_outcome_per_job(spark: SparkSession) -> None:
    actual = (
        _runs(spark)
        .transform(A.job_run_summary)
        .select("job", "runs", "failures", "last_status", "last_success_at", "max_duration_s")
    )

    expected = spark.createDataFrame(
        [
            ("bronze.orders", 2, 0, "succeeded", _at(10), 60),
            ("silver.orders", 2, 1, "succeeded", _at(12), 120),
        ],
        "job string, runs long, failures long, last_status string, last_success_at timestamp, "
        "max_duration_s long",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_failed_runs_keeps_the_first_line_of_the_error(spark: SparkSession) -> None:
    actual = _runs(spark).transform(A.failed_runs).select("run_id", "job", "error")

    expected = spark.createDataFrame(
        [("r1", "silver.orders", "boom")], "run_id string, job string, error string"
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def _ingested(spark: SparkSession) -> object:
    return spark.createDataFrame(
        [
            ("orders", "f1", D1, "ingested", 10, 1, 0, ["1 rows did not parse"]),
            ("orders", "f2", D2, "empty", 0, 0, 0, ["no records", "second problem"]),
            ("orders", "f3", D2, "ingested", 5, 0, 0, []),
            ("clicks", "f4", D2, "failed", 0, 0, None, ["unreadable: bad gzip"]),
        ],
        INGESTED,
    )


def test_ingest_problems_lists_one_row_per_problem(spark: SparkSession) -> None:
    actual = _ingested(spark).transform(A.ingest_problems).select("file", "status", "problem")

    expected = spark.createDataFrame(
        [
            ("f1", "ingested", "1 rows did not parse"),
            ("f2", "empty", "no records"),
            ("f2", "empty", "second problem"),
            ("f4", "failed", "unreadable: bad gzip"),
        ],
        "file string, status string, problem string",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_ingest_file_summary_counts_files_and_rows_per_source_and_status(spark: SparkSession) -> None:
    actual = _ingested(spark).transform(A.ingest_file_summary)

    expected = spark.createDataFrame(
        [
            ("clicks", "failed", 1, 1, 0, 0, 0),
            ("orders", "empty", 1, 1, 0, 0, 0),
            ("orders", "ingested", 2, 1, 15, 1, 0),
        ],
        "source string, status string, files long, files_with_problems long, rows long, "
        "corrupt_rows long, rescued_rows long",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_latest_value_of_an_empty_table_is_null(spark: SparkSession) -> None:
    source = spark.createDataFrame([], "as_of_date date")

    actual = source.transform(A.latest_value, column="as_of_date")

    expected = spark.createDataFrame([(0, None)], "rows long, latest timestamp")
    assert_df_equality(actual, expected, ignore_nullable=True)
