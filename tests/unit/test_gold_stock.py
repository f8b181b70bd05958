"""Unit tests of pipeline_lib.gold.stock and the inventory silver transforms, hand-computed.

The scenario of :func:`test_stock_signals_hand_computed` (long window 7 days, short 3, as of
2024-01-10, window 01-04..01-10), product P1 at warehouses A and B:

    day    A avail  B avail  units  day is
    01-04     10       5       2    in stock
    01-05      8       5       3    in stock
    01-06      0       0       0    out of stock (snapshots say 0, nothing sold)
    01-07      0       0       0    out of stock
    01-08      -       -       0    unknown (no snapshot, nothing sold): neither in nor out
    01-09      -       -       4    in stock (no snapshot, but a sale proves stock)
    01-10      6       0       1    in stock; A: incoming 20, lead 5; B: incoming 0, no lead

In-stock days 4, units 10: 2.5 a day (the out and unknown days do not pull it down).
"""

from __future__ import annotations

import datetime as dt
import math
from statistics import NormalDist

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession

from jobs.gold_stock import service_level_z
from pipeline_lib.bronze.schemas import LANDING_SOURCES
from pipeline_lib.gold.schemas import FACT_INVENTORY_DAILY_SCHEMA
from pipeline_lib.gold.stock import build_fact_inventory_daily, daily_units_sold, stock_signals
from pipeline_lib.silver.common import KEPT, VERSION_OUTCOME
from pipeline_lib.silver.inventory import clean_inventory, rank_inventory
from pipeline_lib.silver.schemas import SILVER_SCHEMAS

D = dt.date
AS_OF = D(2024, 1, 10)
Z = NormalDist().inv_cdf(0.95)
DAILY_COLUMNS = ("product_id", "location_id", "date", "on_hand", "available", "incoming", "lead_time_days")


def utc(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=dt.UTC)


def daily_frame(spark: SparkSession, rows: list[tuple]) -> object:
    """fact_inventory_daily rows from (product, location, date, on_hand, available, incoming, lead)."""
    full = [
        (p, loc, int(d.strftime("%Y%m%d")), d, oh, av, 0, inc, lead, av is not None and av > 0, None, 1)
        for p, loc, d, oh, av, inc, lead in rows
    ]
    return spark.createDataFrame(full, FACT_INVENTORY_DAILY_SCHEMA)


def units_frame(spark: SparkSession, rows: list[tuple[str, dt.date, int]]) -> object:
    return spark.createDataFrame(rows, "product_id string, date date, units long")


def signals(
    spark: SparkSession, daily_rows: list[tuple], unit_rows: list[tuple], **overrides: object
) -> dict:
    settings = {
        "as_of": AS_OF,
        "short_window_days": 3,
        "long_window_days": 7,
        "z": Z,
        "default_lead_time_days": 7,
        "review_period_days": 7,
    }
    settings.update(overrides)
    actual = daily_frame(spark, daily_rows).transform(
        stock_signals, units_sold=units_frame(spark, unit_rows), **settings
    )
    return {row["product_id"]: row.asDict() for row in actual.collect()}


P1_DAILY = [
    ("P1", "A", D(2024, 1, 4), 10, 10, 0, 5),
    ("P1", "B", D(2024, 1, 4), 5, 5, 0, None),
    ("P1", "A", D(2024, 1, 5), 8, 8, 0, 5),
    ("P1", "B", D(2024, 1, 5), 5, 5, 0, None),
    ("P1", "A", D(2024, 1, 6), 0, 0, 20, 5),
    ("P1", "B", D(2024, 1, 6), 0, 0, 0, None),
    ("P1", "A", D(2024, 1, 7), 0, 0, 20, 5),
    ("P1", "B", D(2024, 1, 7), 0, 0, 0, None),
    ("P1", "A", D(2024, 1, 10), 6, 6, 20, 5),
    ("P1", "B", D(2024, 1, 10), 0, 0, 0, None),
]
P1_UNITS = [
    ("P1", D(2024, 1, 4), 2),
    ("P1", D(2024, 1, 5), 3),
    ("P1", D(2024, 1, 9), 4),
    ("P1", D(2024, 1, 10), 1),
    ("P1", D(2024, 1, 2), 50),  # before the window: ignored
]


def test_stock_signals_hand_computed(spark: SparkSession) -> None:
    actual = signals(spark, P1_DAILY, P1_UNITS)["P1"]
    sigma = math.sqrt(5 / 3)  # units 2, 3, 4, 1 on the in-stock days: mean 2.5, squares 5, n - 1 = 3
    safety = Z * sigma * math.sqrt(5)
    assert actual["as_of_date"] == AS_OF
    assert (actual["available"], actual["on_hand"], actual["incoming"]) == (6, 6, 20)
    assert (actual["inventory_position"], actual["locations"], actual["last_snapshot_date"]) == (26, 2, AS_OF)
    assert (actual["in_stock_days_28d"], actual["days_out_of_stock_28d"], actual["days_unknown_28d"]) == (
        4,
        2,
        1,
    )
    assert actual["units_sold_28d"] == 10
    assert actual["avg_daily_units_28d"] == pytest.approx(2.5)
    assert (actual["in_stock_days_7d"], actual["avg_daily_units_7d"]) == (
        2,
        pytest.approx(2.5),
    )  # 01-09, 01-10
    assert actual["sigma_daily_units_28d"] == pytest.approx(sigma)
    assert actual["lead_time_days"] == 5  # B delivers none: A's
    assert actual["safety_stock"] == pytest.approx(safety)
    assert actual["reorder_point"] == pytest.approx(2.5 * 5 + safety)  # 17.25: the position 26 is above
    assert (actual["reorder_now"], actual["suggested_quantity"]) == (False, 0)
    assert actual["days_of_cover"] == pytest.approx(6 / 2.5)
    assert actual["lost_sales_units_28d"] == pytest.approx(2 * 2.5)


def test_low_stock_asks_for_a_reorder_up_to_lead_time_and_review_period(spark: SparkSession) -> None:
    daily = [("P2", "A", D(2024, 1, day), 3, 3, 0, 0) for day in range(4, 11)]  # lead 0: not a lead time
    units = [("P2", D(2024, 1, day), 1) for day in range(4, 11)]
    actual = signals(spark, daily, units)["P2"]
    # d = 1, sigma = 0, L = 7 (the default), R = 7: reorder point 7 >= position 3; up to 14.
    assert (actual["avg_daily_units_28d"], actual["sigma_daily_units_28d"]) == (1.0, 0.0)
    assert (actual["lead_time_days"], actual["safety_stock"], actual["reorder_point"]) == (7, 0.0, 7.0)
    assert (actual["reorder_now"], actual["suggested_quantity"]) == (True, 11)
    assert actual["days_of_cover"] == pytest.approx(3.0)
    no_review = signals(spark, daily, units, review_period_days=0)["P2"]
    assert (no_review["reorder_now"], no_review["suggested_quantity"]) == (True, 4)  # 7 - 3


def test_a_product_out_all_window_has_unknown_demand_and_no_signal(spark: SparkSession) -> None:
    daily = [("P4", "A", D(2024, 1, day), 0, 0, 30, 4) for day in range(4, 11)]
    old = [("P5", "A", D(2024, 1, 2), 9, 9, 0, 4)]  # last snapshot before the window: no row
    actual = signals(spark, daily + old, [])
    assert set(actual) == {"P4"}
    p4 = actual["P4"]
    assert (p4["days_out_of_stock_28d"], p4["in_stock_days_28d"], p4["days_unknown_28d"]) == (7, 0, 0)
    assert p4["avg_daily_units_28d"] is None and p4["days_of_cover"] is None
    assert p4["reorder_point"] is None and p4["lost_sales_units_28d"] is None
    assert (p4["reorder_now"], p4["suggested_quantity"]) == (False, 0)


def test_stock_signals_refuse_bad_windows(spark: SparkSession) -> None:
    with pytest.raises(ValueError, match="short <= long"):
        signals(spark, P1_DAILY, P1_UNITS, short_window_days=8)
    with pytest.raises(ValueError, match="lead time must be positive"):
        signals(spark, P1_DAILY, P1_UNITS, default_lead_time_days=0)


def test_service_level_z_is_the_normal_quantile() -> None:
    assert service_level_z(0.95) == pytest.approx(1.6448536)
    assert service_level_z(0.5) == pytest.approx(0.0)


def _silver_inventory(spark: SparkSession, rows: list[tuple]) -> object:
    """silver.inventory rows from (product, location, snapshot_ts, available, ingest_date)."""
    schema = SILVER_SCHEMAS["inventory"]
    full = [
        (p, loc, ts, ts.astimezone(dt.UTC).date(), av, av, 0, 5, 3, "f.csv", ingest, "r", [])
        for p, loc, ts, av, ingest in rows
    ]
    return spark.createDataFrame(full, schema)


def test_fact_inventory_daily_keeps_the_closing_snapshot_and_no_row_for_a_missing_day(
    spark: SparkSession,
) -> None:
    source = _silver_inventory(
        spark,
        [
            ("P1", "A", utc(2024, 1, 4, 8), 4, D(2024, 1, 4)),
            ("P1", "A", utc(2024, 1, 4, 22), 0, D(2024, 1, 4)),  # the closing snapshot: sold out
            ("P1", "A", utc(2024, 1, 4, 12), 7, D(2024, 1, 6)),  # a late snapshot, earlier in the day
            ("P1", "A", utc(2024, 1, 6, 22), 9, D(2024, 1, 7)),  # 01-05 has no snapshot at all
            ("P1", "B", utc(2024, 1, 4, 22), None, D(2024, 1, 4)),  # available unknown: not in stock
        ],
    )
    actual = source.transform(build_fact_inventory_daily).select(
        "product_id", "location_id", "date_key", "available", "in_stock", "snapshot_ts", "snapshots"
    )
    expected = spark.createDataFrame(
        [
            ("P1", "A", 20240104, 0, False, utc(2024, 1, 4, 22), 3),
            ("P1", "A", 20240106, 9, True, utc(2024, 1, 6, 22), 1),
            ("P1", "B", 20240104, None, False, utc(2024, 1, 4, 22), 1),
        ],
        "product_id string, location_id string, date_key int, available int, in_stock boolean, "
        "snapshot_ts timestamp, snapshots int",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_daily_units_sold_counts_demand_not_cancellations(spark: SparkSession) -> None:
    orders = spark.createDataFrame(
        [
            ("o1", "paid", D(2024, 1, 5)),
            ("o2", "cancelled", D(2024, 1, 5)),  # withdrawn: no demand
            ("o3", "returned", D(2024, 1, 5)),  # still demand
            ("o4", "PAID", D(2024, 1, 1)),  # before the range
            ("o5", None, D(2024, 1, 6)),  # unknown status: left out
            ("o6", "shipped", D(2024, 1, 6)),
        ],
        "order_id string, order_status string, order_date date",
    )
    items = spark.createDataFrame(
        [
            ("o1", "P1", 2),
            ("o2", "P1", 5),
            ("o3", "P1", 1),
            ("o4", "P1", 9),
            ("o5", "P1", 9),
            ("o6", "P1", 0),  # not a positive quantity
            ("o6", None, 3),  # no product
            ("o6", "P2", 4),
        ],
        "order_id string, product_id string, quantity int",
    )
    actual = orders.transform(daily_units_sold, order_items=items, from_date=D(2024, 1, 4), to_date=AS_OF)
    expected = units_frame(spark, [("P1", D(2024, 1, 5), 3), ("P2", D(2024, 1, 6), 4)])
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def _bronze_inventory(spark: SparkSession, rows: list[tuple]) -> object:
    schema = LANDING_SOURCES["inventory"].bronze_schema
    full = [
        (*row, None, None, f"file:/{ingest}.csv", ingest, utc(2024, 1, 9), "run") for *row, ingest in rows
    ]
    return spark.createDataFrame(full, schema)


def test_clean_inventory_types_counts_and_snapshot_dates(spark: SparkSession) -> None:
    source = _bronze_inventory(
        spark,
        [
            (" P1 ", "A", "2024-01-04T00:30:00+01:00", "3.0", "2", "0", " ", "", D(2024, 1, 4)),
            ("P1", "A", "2024-01-04T12:00:00", "2.5", "n/a", "-1", "7", "1e1", D(2024, 1, 4)),
        ],
    )
    actual = source.transform(clean_inventory, source_timezone="Europe/Berlin").select(
        "product_id", "snapshot_ts", "snapshot_date", "on_hand", "available", "committed", "incoming",
        "lead_time_days",
    )  # fmt: skip
    expected = spark.createDataFrame(
        [
            ("P1", utc(2024, 1, 3, 23, 30), D(2024, 1, 3), 3, 2, 0, None, None),  # UTC date of 00:30 +01:00
            ("P1", utc(2024, 1, 4, 11), D(2024, 1, 4), None, None, -1, 7, 10),  # naive: Berlin time
        ],
        "product_id string, snapshot_ts timestamp, snapshot_date date, on_hand int, available int, "
        "committed int, incoming int, lead_time_days int",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_rank_inventory_latest_delivery_wins_then_content_hash(spark: SparkSession) -> None:
    ts = "2024-01-04T22:00:00Z"
    source = _bronze_inventory(
        spark,
        [
            ("P1", "A", ts, "5", "5", "0", "0", "3", D(2024, 1, 4)),
            ("P1", "A", ts, "5", "5", "0", "0", "3", D(2024, 1, 4)),  # a copy
            ("P1", "A", ts, "4", "4", "0", "0", "3", D(2024, 1, 5)),  # a correction, later delivery
            ("P1", "B", ts, "1", "1", "0", "0", "3", D(2024, 1, 4)),
            ("P1", "B", ts, "2", "2", "0", "0", "3", D(2024, 1, 4)),  # same delivery, other counts
        ],
    )
    ranked = source.transform(clean_inventory, source_timezone="UTC").transform(rank_inventory)
    outcomes = sorted((r["location_id"], r["on_hand"], r[VERSION_OUTCOME]) for r in ranked.collect())
    kept_b = [on_hand for location, on_hand, outcome in outcomes if location == "B" and outcome == KEPT]
    assert [o for o in outcomes if o[0] == "A"] == [
        ("A", 4, "kept"),
        ("A", 5, "superseded"),
        ("A", 5, "superseded"),
    ]
    assert len(kept_b) == 1
    assert sorted(o[2] for o in outcomes if o[0] == "B") == ["conflict", "kept"]
