"""Unit tests of pipeline_lib.gold.campaigns: consent, stable groups, results and a planted uplift."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import math
from decimal import Decimal

import numpy as np
import pytest
from chispa import assert_column_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.gold_campaigns import confidence_z
from pipeline_lib.config import Campaign
from pipeline_lib.gold.campaigns import (
    CONTROL,
    TREATMENT,
    assignment_draw,
    campaign_audiences,
    campaign_results,
    consenting_customers,
    experiment_group,
    launch_window,
)
from pipeline_lib.gold.schemas import CAMPAIGN_AUDIENCES_SCHEMA, CAMPAIGN_RESULTS_SCHEMA
from pipeline_lib.silver.schemas import SILVER_SCHEMAS

D = dt.date
Z95 = confidence_z(0.95)
WINBACK = Campaign("winback", "email", D(2024, 1, 10), segments=("At risk", "Lost"), control_share=0.5,
                   measurement_days=7)  # fmt: skip
SECOND_ORDER = Campaign("second_order", "ads", D(2024, 1, 10), rfm="frequency <= 1 AND recency_days <= 30",
                        control_share=0.2, measurement_days=7)  # fmt: skip


def utc(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=dt.UTC)


def python_draw(campaign: str, customer_id: str) -> float:
    return int(hashlib.sha256(f"{campaign}|{customer_id}".encode()).hexdigest()[:13], 16) / 16**13


def python_group(campaign: Campaign, customer_id: str) -> str:
    return CONTROL if python_draw(campaign.name, customer_id) < campaign.control_share else TREATMENT


def test_assignment_draw_is_sha256_of_campaign_and_customer(spark: SparkSession) -> None:
    ids = ["C0000001", "C0000042", "c-ü-7", None]
    expected = [None if i is None else python_draw("winback", i) for i in ids]
    source = spark.createDataFrame(
        list(zip(ids, expected, strict=True)), "customer_id string, expected double"
    )
    actual = source.withColumn("actual", assignment_draw(F.lit("winback"), "customer_id"))
    assert_column_equality(actual, "actual", "expected")


def test_groups_follow_the_control_share_and_never_change(spark: SparkSession) -> None:
    customers = spark.range(4000).select(F.format_string("C%07d", "id").alias("customer_id"))
    groups = customers.withColumn(
        "group", experiment_group(F.lit("winback"), "customer_id", 0.1)
    ).localCheckpoint()
    share = groups.where(F.col("group") == CONTROL).count() / 4000
    assert 0.085 < share < 0.115
    # The same customer lands in the same group in a smaller population, on any run.
    few = groups.limit(50).select("customer_id")
    again = few.withColumn("again", experiment_group(F.lit("winback"), "customer_id", 0.1))
    joined = again.join(groups, on="customer_id").collect()
    assert all(row["again"] == row["group"] for row in joined) and len(joined) == 50
    assert {row["group"] for row in joined} <= {TREATMENT, CONTROL}


def segments_frame(spark: SparkSession, rows: list[tuple[str, str, int, int]]) -> DataFrame:
    """customer_segments rows from (customer_id, segment, recency_days, frequency)."""
    return spark.createDataFrame(
        [(c, segment, recency, frequency, Decimal("10"), 3, 2, 2) for c, segment, recency, frequency in rows],
        "customer_id string, segment string, recency_days int, frequency long, monetary decimal(22,6), "
        "r_score int, f_score int, m_score int",
    )


def customers_frame(spark: SparkSession, versions: list[tuple]) -> DataFrame:
    """silver.customers versions from (customer_id, marketing_opt_in, valid_from, valid_to)."""
    schema = SILVER_SCHEMAS["customers"]
    rows = []
    for customer_id, opt_in, valid_from, valid_to in versions:
        values = {
            "customer_id": customer_id,
            "email": f"{customer_id}@example.com",
            "country": "DE",
            "marketing_opt_in": opt_in,
            "valid_from": valid_from,
            "valid_to": valid_to,
            "is_current": valid_to is None,
            "_dq_flags": [],
        }
        rows.append(tuple(values.get(f.name) for f in schema.fields))
    return spark.createDataFrame(rows, schema)


SEGMENTS = [
    ("c1", "At risk", 40, 3),
    ("c2", "At risk", 40, 3),  # opted in at the segment's date, opted out since
    ("c3", "Lost", 90, 1),  # opted out at the segment's date, opted in since
    ("c4", "Champions", 2, 9),  # not a win-back target
    ("c5", "At risk", 50, 2),  # erased: no CRM version any more
    ("c6", "Lost", 80, 1),  # consent unknown (null)
    ("c7", "New", 5, 1),  # a recent first-time buyer
]
VERSIONS = [
    ("c1", True, utc(2023, 1, 1), None),
    ("c2", True, utc(2023, 1, 1), utc(2024, 1, 9, 12)),
    ("c2", False, utc(2024, 1, 9, 12), None),
    ("c3", False, utc(2023, 1, 1), utc(2024, 1, 9, 12)),
    ("c3", True, utc(2024, 1, 9, 12), None),
    ("c4", True, utc(2023, 1, 1), None),
    ("c6", None, utc(2023, 1, 1), None),
    ("c7", True, utc(2023, 1, 1), None),
]


def test_audiences_use_current_consent_and_leave_out_the_erased(spark: SparkSession) -> None:
    segments = segments_frame(spark, SEGMENTS)
    consenting = consenting_customers(customers_frame(spark, VERSIONS))
    actual = segments.transform(
        campaign_audiences, consenting=consenting, campaigns=[WINBACK, SECOND_ORDER], as_of=D(2024, 1, 9)
    )
    assert actual.schema.fieldNames() == CAMPAIGN_AUDIENCES_SCHEMA.fieldNames()
    rows = {(r["campaign"], r["customer_id"]): r for r in actual.collect()}
    # c2 opted out after the segment's date: out; c3 opted in since: in; c5 erased, c6 unknown: out.
    assert set(rows) == {("winback", "c1"), ("winback", "c3"), ("second_order", "c7")}
    for (campaign, customer_id), row in rows.items():
        chosen = WINBACK if campaign == "winback" else SECOND_ORDER
        assert row["group"] == python_group(chosen, customer_id)
        assert (row["channel"], row["as_of_date"], row["country"]) == (chosen.channel, D(2024, 1, 9), "DE")
    assert rows[("winback", "c3")]["segment"] == "Lost"
    # The consent that stood at a point in time (the launch audience) is the version valid then.
    at_start = consenting_customers(customers_frame(spark, VERSIONS), at=utc(2024, 1, 9))
    assert sorted(r["customer_id"] for r in at_start.collect()) == ["c1", "c2", "c4", "c7"]


def test_a_customer_keeps_the_group_across_as_of_dates(spark: SparkSession) -> None:
    consenting = consenting_customers(customers_frame(spark, VERSIONS))
    campaign = dataclasses.replace(WINBACK, segments=("At risk", "Lost", "Champions", "New"))
    first = segments_frame(spark, SEGMENTS).transform(
        campaign_audiences, consenting=consenting, campaigns=[campaign], as_of=D(2024, 1, 9)
    )
    later = segments_frame(spark, [("c1", "Lost", 70, 3), ("c7", "Champions", 1, 5)]).transform(
        campaign_audiences, consenting=consenting, campaigns=[campaign], as_of=D(2024, 2, 9)
    )
    before = {r["customer_id"]: r["group"] for r in first.collect()}
    after = {r["customer_id"]: r["group"] for r in later.collect()}
    assert set(after) == {"c1", "c7"} and all(after[c] == before[c] for c in after)


def test_launch_window_is_cut_at_the_as_of_date() -> None:
    assert launch_window(WINBACK, as_of=D(2024, 1, 9)) is None
    assert launch_window(WINBACK, as_of=D(2024, 1, 12)) == (D(2024, 1, 12), 3)
    assert launch_window(WINBACK, as_of=D(2024, 3, 1)) == (D(2024, 1, 16), 7)


def audience(spark: SparkSession, members: list[tuple[str, str, str]]) -> DataFrame:
    return spark.createDataFrame(members, "campaign string, customer_id string, group string")


def orders_frames(spark: SparkSession, orders: list[tuple]) -> tuple[DataFrame, DataFrame]:
    """silver.orders and one line per order from (order_id, customer_id, status, date, revenue)."""
    order_rows = spark.createDataFrame(
        [(o, c, status, day) for o, c, status, day, _ in orders],
        "order_id string, customer_id string, order_status string, order_date date",
    )
    lines = spark.createDataFrame(
        [(o, 1, Decimal(str(revenue))) for o, _, _, _, revenue in orders],
        T_LINES,
    )
    return order_rows, lines


T_LINES = "order_id string, line_no int, net_amount_base decimal(22,6)"


def results(spark: SparkSession, members: DataFrame, orders: list[tuple], campaigns, as_of) -> dict:
    order_rows, lines = orders_frames(spark, orders)
    actual = members.transform(
        campaign_results,
        orders=order_rows,
        order_items=lines,
        campaigns=campaigns,
        as_of=as_of,
        z=Z95,
        confidence_level=0.95,
    )
    assert actual.schema.fieldNames() == CAMPAIGN_RESULTS_SCHEMA.fieldNames()
    return {(r["campaign"], r["group"]): r.asDict() for r in actual.collect()}


def test_results_hand_computed(spark: SparkSession) -> None:
    members = audience(
        spark,
        [("winback", t, TREATMENT) for t in ("t1", "t2", "t3", "t4")]
        + [("winback", k, CONTROL) for k in ("k1", "k2")],
    )
    orders = [
        ("o1", "t1", "paid", D(2024, 1, 11), 10),
        ("o2", "t1", "delivered", D(2024, 1, 12), 20),
        ("o3", "t2", "cancelled", D(2024, 1, 12), 30),  # not revenue
        ("o4", "t3", "paid", D(2024, 1, 17), 40),  # after the 7 days
        ("o5", "t3", "paid", D(2024, 1, 9), 40),  # before the start
        ("o6", "k1", "shipped", D(2024, 1, 15), 5),
        ("o7", "x9", "paid", D(2024, 1, 11), 99),  # not a member
    ]
    not_started = dataclasses.replace(WINBACK, name="later", start_date=D(2024, 2, 1))
    empty = dataclasses.replace(WINBACK, name="nobody")
    actual = results(spark, members, orders, [WINBACK, not_started, empty], D(2024, 1, 20))
    assert set(actual) == {
        ("winback", TREATMENT),
        ("winback", CONTROL),
        ("nobody", TREATMENT),
        ("nobody", CONTROL),
    }
    treatment, control = actual[("winback", TREATMENT)], actual[("winback", CONTROL)]
    assert (treatment["start_date"], treatment["end_date"], treatment["days_measured"]) == (
        D(2024, 1, 10),
        D(2024, 1, 16),
        7,
    )
    assert (treatment["customers"], treatment["buyers"], treatment["orders"]) == (4, 1, 2)
    assert treatment["revenue"] == Decimal("30.000000")
    assert (control["customers"], control["buyers"], control["orders"], control["revenue"]) == (
        2,
        1,
        1,
        Decimal("5.000000"),
    )
    assert (treatment["conversion_rate"], control["conversion_rate"]) == (0.25, 0.5)
    se = math.sqrt(0.25 * 0.75 / 4 + 0.5 * 0.5 / 2)
    assert treatment["conversion_uplift"] == pytest.approx(-0.25)
    assert treatment["conversion_uplift_ci_low"] == pytest.approx(-0.25 - Z95 * se)
    assert treatment["conversion_uplift_ci_high"] == pytest.approx(-0.25 + Z95 * se)
    # revenue per customer: treatment (30, 0, 0, 0) mean 7.5 variance 225; control (5, 0) 2.5 and 12.5
    revenue_se = math.sqrt(225 / 4 + 12.5 / 2)
    assert treatment["revenue_uplift_per_customer"] == pytest.approx(5.0)
    assert treatment["revenue_uplift_ci_low"] == pytest.approx(5.0 - Z95 * revenue_se)
    assert treatment["revenue_uplift_ci_high"] == pytest.approx(5.0 + Z95 * revenue_se)
    assert (treatment["is_significant"], treatment["confidence_level"]) == (False, 0.95)
    assert control["conversion_uplift"] is None and control["is_significant"] is None
    nobody = actual[("nobody", TREATMENT)]
    assert (
        nobody["customers"],
        nobody["buyers"],
        nobody["conversion_rate"],
        nobody["conversion_uplift"],
    ) == (
        0,
        0,
        None,
        None,
    )


def test_a_planted_uplift_is_recovered_within_its_interval(spark: SparkSession) -> None:
    """4,000 members, half held out; treatment buys with 30 %, control with 20 %: uplift 0.10."""
    rng = np.random.default_rng(2024)
    campaign = dataclasses.replace(WINBACK, control_share=0.5)
    ids = [f"C{n:07d}" for n in range(4000)]
    groups = [python_group(campaign, i) for i in ids]
    chance = np.where(np.array(groups) == TREATMENT, 0.30, 0.20)
    buys = rng.random(len(ids)) < chance
    orders = [
        (f"O{n}", i, "paid", D(2024, 1, 10) + dt.timedelta(days=int(n % 7)), 50)
        for n, (i, bought) in enumerate(zip(ids, buys, strict=True))
        if bought
    ]
    members = audience(spark, [("winback", i, g) for i, g in zip(ids, groups, strict=True)])
    actual = results(spark, members, orders, [campaign], D(2024, 1, 31))[("winback", TREATMENT)]
    n_t = sum(g == TREATMENT for g in groups)
    n_c = len(ids) - n_t
    p_t = sum(b for b, g in zip(buys, groups, strict=True) if g == TREATMENT) / n_t
    p_c = sum(b for b, g in zip(buys, groups, strict=True) if g == CONTROL) / n_c
    se = math.sqrt(p_t * (1 - p_t) / n_t + p_c * (1 - p_c) / n_c)
    assert actual["conversion_uplift"] == pytest.approx(p_t - p_c)
    assert actual["conversion_uplift_ci_low"] == pytest.approx(p_t - p_c - Z95 * se)
    low, high = actual["conversion_uplift_ci_low"], actual["conversion_uplift_ci_high"]
    assert low < 0.10 < high, (low, high)  # the planted effect is inside the interval
    assert low > 0 and actual["is_significant"]  # and the interval excludes no effect
    assert actual["revenue_uplift_ci_low"] < 0.10 * 50 < actual["revenue_uplift_ci_high"]
    print(f"planted uplift 0.100: recovered {p_t - p_c:.4f}, 95 % interval [{low:.4f}, {high:.4f}]")
