"""Unit tests of gold fact_sessions: one row per visit, funnel, conversion, first/last rules."""

from __future__ import annotations

import datetime as dt
from typing import Any

import chispa
from pyspark.sql import DataFrame, SparkSession

from pipeline_lib.gold.schemas import FACT_SESSIONS_SCHEMA
from pipeline_lib.gold.sessions import build_fact_sessions, funnel_step_no, session_dates
from pipeline_lib.silver.schemas import SILVER_SCHEMAS


def utc(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=dt.UTC)


def rows_of(spark: SparkSession, schema: Any, rows: list[dict[str, Any]]) -> DataFrame:
    """A literal DataFrame of ``schema``: the named columns of each row, the rest null."""
    return spark.createDataFrame([tuple(row.get(f.name) for f in schema.fields) for row in rows], schema)


def click(
    event_id: str, session_id: str | None, event_ts: dt.datetime, event_type: str, **extra: Any
) -> dict[str, Any]:
    """A silver.clicks row of device A1, dated by its UTC day."""
    return {
        "event_id": event_id,
        "session_id": session_id,
        "event_ts": event_ts,
        "event_date": event_ts.date(),
        "event_type": event_type,
        "anonymous_id": "A1",
        "is_session_derived": False,
        **extra,
    }


def clicks_of(spark: SparkSession, rows: list[dict[str, Any]]) -> DataFrame:
    return rows_of(spark, SILVER_SCHEMAS["clicks"], rows)


def test_funnel_step_no(spark: SparkSession) -> None:
    source = spark.createDataFrame(
        [
            ("page_view", 1),
            ("search", 2),
            ("product_view", 2),
            ("add_to_cart", 3),
            ("begin_checkout", 4),
            ("purchase", 5),
            ("remove_from_cart", 1),
            (None, 1),
        ],
        "event_type string, expected int",
    )
    actual = source.withColumn("actual", funnel_step_no("event_type"))
    chispa.assert_column_equality(actual, "actual", "expected")


def test_session_crossing_midnight_is_one_session_dated_by_its_start(spark: SparkSession) -> None:
    source = clicks_of(
        spark,
        [
            click("e1", "S1", utc(2024, 12, 31, 23, 50), "page_view", page_url="/home"),
            click("e2", "S1", utc(2025, 1, 1, 0, 10, 30), "product_view", page_url="/p/1"),
        ],
    )
    actual = build_fact_sessions(source).select(
        "session_id", "start_ts", "end_ts", "duration_s", "session_date_key", "events", "landing_page"
    )
    expected = spark.createDataFrame(
        [("S1", utc(2024, 12, 31, 23, 50), utc(2025, 1, 1, 0, 10, 30), 1230, 20241231, 2, "/home")],
        "session_id string, start_ts timestamp, end_ts timestamp, duration_s bigint, session_date_key int, "
        "events bigint, landing_page string",
    )
    chispa.assert_df_equality(actual, expected, ignore_nullable=True)


def test_converted_session_counts_the_funnel(spark: SparkSession) -> None:
    source = clicks_of(
        spark,
        [
            click("e1", "S2", utc(2024, 5, 4, 10, 0), "page_view", page_url="/home", device_type="mobile"),
            click(
                "e2",
                "S2",
                utc(2024, 5, 4, 10, 1),
                "search",
                utm_source="newsletter",
                utm_medium="email",
                utm_campaign="spring",
            ),
            click("e3", "S2", utc(2024, 5, 4, 10, 2), "product_view", customer_id="C1", utm_source="google"),
            click("e4", "S2", utc(2024, 5, 4, 10, 3), "add_to_cart", customer_id="C1", product_id="P1"),
            click("e5", "S2", utc(2024, 5, 4, 10, 4), "begin_checkout", customer_id="C1"),
            # one purchase event per bought product: still one order
            click("e6", "S2", utc(2024, 5, 4, 10, 5), "purchase", customer_id="C1", order_id="O1"),
            click("e7", "S2", utc(2024, 5, 4, 10, 5), "purchase", customer_id="C1", order_id="O1"),
            click(
                "e8", "S2", utc(2024, 5, 4, 10, 6, 59), "page_view", customer_id=None, is_session_derived=True
            ),
        ],
    )
    actual = build_fact_sessions(source)
    expected = rows_of(
        spark,
        FACT_SESSIONS_SCHEMA,
        [
            {
                "session_id": "S2",
                "anonymous_id": "A1",
                "customer_id": "C1",  # the last known one, though the last event has none
                "start_ts": utc(2024, 5, 4, 10, 0),
                "end_ts": utc(2024, 5, 4, 10, 6, 59),
                "duration_s": 419,
                "session_date_key": 20240504,
                "events": 8,
                "page_views": 2,
                "product_views": 1,
                "searches": 1,
                "add_to_carts": 1,
                "checkouts": 1,
                "purchases": 1,
                "converted": True,
                "funnel_step": "purchase",
                "funnel_step_no": 5,
                "landing_page": "/home",
                "utm_source": "newsletter",  # the first event with a source, with its medium and campaign
                "utm_medium": "email",
                "utm_campaign": "spring",
                "device_type": "mobile",
                "is_session_derived": True,
            }
        ],
    )
    chispa.assert_df_equality(actual, expected, ignore_nullable=True)


def test_session_without_purchase_and_events_without_session(spark: SparkSession) -> None:
    source = clicks_of(
        spark,
        [
            click("e1", "S3", utc(2024, 5, 4, 12, 0), "remove_from_cart"),
            click("e2", "S3", utc(2024, 5, 4, 12, 0, 1), "product_view"),
            click("e3", None, utc(2024, 5, 4, 12, 0, 2), "purchase", order_id="O9"),  # never in silver
        ],
    )
    actual = build_fact_sessions(source).select(
        "session_id", "customer_id", "purchases", "converted", "funnel_step", "funnel_step_no", "utm_source"
    )
    expected = spark.createDataFrame(
        [("S3", None, 0, False, "product_view", 2, None)],
        "session_id string, customer_id string, purchases bigint, converted boolean, funnel_step string, "
        "funnel_step_no int, utm_source string",
    )
    chispa.assert_df_equality(actual, expected, ignore_nullable=True)


def test_events_at_the_same_time_are_ordered_by_event_id(spark: SparkSession) -> None:
    same_time = utc(2024, 5, 4, 13, 0)
    source = clicks_of(
        spark,
        [
            click("e-b", "S4", same_time, "page_view", page_url="/b", customer_id="C-b"),
            click("e-a", "S4", same_time, "page_view", page_url="/a", customer_id="C-a"),
        ],
    )
    actual = build_fact_sessions(source).select("landing_page", "customer_id", "duration_s")
    expected = spark.createDataFrame(
        [("/a", "C-b", 0)], "landing_page string, customer_id string, duration_s bigint"
    )
    chispa.assert_df_equality(actual, expected, ignore_nullable=True)


def test_session_dates_are_every_day_holding_an_event_of_a_changed_session(spark: SparkSession) -> None:
    clicks = clicks_of(
        spark,
        [
            click("e1", "S1", utc(2024, 3, 1, 23, 50), "page_view"),  # S1 runs past midnight
            click("e2", "S1", utc(2024, 3, 2, 0, 5), "page_view"),
            click("e3", "S2", utc(2024, 3, 5, 9, 0), "page_view"),  # S2 did not change
            click("e4", "S3", utc(2024, 3, 2, 9, 0), "page_view"),
            {**click("e5", "S3", utc(2024, 3, 7, 9, 0), "page_view"), "event_date": None},
        ],
    )
    changed = spark.createDataFrame([("S1",), ("S3",)], "session_id string")

    dates = {row["event_date"] for row in session_dates(clicks, changed).collect()}

    assert dates == {dt.date(2024, 3, 1), dt.date(2024, 3, 2), None}
