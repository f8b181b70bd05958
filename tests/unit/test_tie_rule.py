"""The tie rule: which version of a key wins depends on the delivered rows and their deliveries
only, never on runs, file names, file order or partitioning (docs/silver.md, RELIABILITY.md)."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from pipeline_lib.silver.clicks import CLICK_CONTENT, rank_clicks
from pipeline_lib.silver.common import (
    CONFLICT,
    DUPLICATE,
    KEPT,
    SUPERSEDED,
    VERSION_OUTCOME,
    count_outcomes,
    keep_latest,
    rank_versions,
)
from pipeline_lib.silver.orders import order_version_key, rank_orders

DAY1, DAY2 = dt.date(2024, 1, 2), dt.date(2024, 1, 3)
ROWS = "id string, version int, payload string, _ingest_date date, _source_file string, _run_id string"


def _ranked(spark, rows, **kwargs):
    frame = spark.createDataFrame(rows, ROWS)
    arguments = {"keys": ["id"], "version": ["version"], "content": ["id", "version", "payload"], **kwargs}
    return {
        (r["id"], r["version"], r["payload"], r["_source_file"]): r[VERSION_OUTCOME]
        for r in rank_versions(frame, **arguments).collect()
    }


def test_rank_versions_names_the_kept_row_copies_conflicts_and_older_versions(spark):
    source = [
        ("a", 2, "x", DAY1, "f1", "run-1"),
        ("a", 2, "x", DAY1, "f2", "run-2"),  # the same content in another file and run: a copy
        ("a", 2, "y", DAY1, "f3", "run-3"),  # the same version, other content: a conflict
        ("a", 1, "z", DAY1, "f4", "run-4"),  # older
        ("b", None, "w", DAY1, "f5", "run-5"),  # a null version loses to any version, but is alone
        (None, 1, "n", DAY1, "f6", "run-6"),  # a null key is kept as it is
    ]
    actual = _ranked(spark, source)
    winner_payload = [k[2] for k, v in actual.items() if k[0] == "a" and v == KEPT]
    assert len(winner_payload) == 1
    loser = "y" if winner_payload == ["x"] else "x"
    copies = [v for k, v in actual.items() if k[0] == "a" and k[2] == winner_payload[0] and v != KEPT]
    assert copies == ([DUPLICATE] if winner_payload == ["x"] else [])
    assert {v for k, v in actual.items() if k[0] == "a" and k[2] == loser} == {CONFLICT}
    assert actual[("a", 1, "z", "f4")] == SUPERSEDED
    assert actual[("b", None, "w", "f5")] == KEPT and actual[(None, 1, "n", "f6")] == KEPT


def test_a_tie_goes_to_the_tie_break_before_the_content(spark):
    source = [("a", 2, "x", DAY1, "f1", "r1"), ("a", 2, "y", DAY2, "f0", "r2")]
    actual = _ranked(spark, source, tie_break=[F.col("_ingest_date").desc()])
    assert actual[("a", 2, "y", "f0")] == KEPT and actual[("a", 2, "x", "f1")] == CONFLICT


def test_count_outcomes_counts_every_row_once(spark):
    frame = spark.createDataFrame(
        [("a", 2, "x", DAY1, "f", "r"), ("a", 2, "x", DAY1, "g", "s"), ("a", 1, "x", DAY1, "h", "t")], ROWS
    )
    ranked = rank_versions(frame, keys=["id"], version=["version"], content=["id", "version", "payload"])
    assert count_outcomes(ranked) == {KEPT: 1, DUPLICATE: 1, CONFLICT: 0, SUPERSEDED: 1}


_row = st.tuples(
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from([1, 2]),
    st.sampled_from(["x", "y", "z"]),
    st.sampled_from([DAY1, DAY2]),
)


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(rows=st.lists(_row, min_size=1, max_size=12), seed=st.integers(0, 10_000))
def test_the_winners_depend_on_rows_and_deliveries_only(spark, rows, seed):
    """Any order of rows, any file names and run ids, any partition count: the same winners."""
    shuffle = random.Random(seed)

    def winners(order, partitions):
        frame = spark.createDataFrame(
            [(*r[:4], f"file-{shuffle.random()}", f"run-{shuffle.random()}") for r in order], ROWS
        ).repartition(partitions)
        kept = keep_latest(
            frame,
            keys=["id"],
            version=["version"],
            tie_break=[F.col("_ingest_date").desc()],
            content=["id", "version", "payload"],
        )
        return sorted(tuple(r) for r in kept.select("id", "version", "payload", "_ingest_date").collect())

    reordered = list(rows)
    shuffle.shuffle(reordered)
    assert winners(rows, 1) == winners(reordered, 1 + seed % 4)


ORDERS = (
    "order_id string, customer_id string, order_status string, order_ts timestamp, updated_at timestamp, "
    "currency string, channel string, ship_country string, ship_city string, payment_type string, "
    "shipping_fee decimal(20,4), _ingest_date date, _source_file string, _run_id string"
)


def _order(status, day, file, updated=dt.datetime(2024, 1, 2, 10)):
    placed = dt.datetime(2024, 1, 2, 9)
    return (
        "o1",
        "c1",
        status,
        placed,
        updated,
        "EUR",
        "web",
        "DE",
        "B",
        "card",
        None,
        day,
        file,
        f"run-{file}",
    )


@pytest.mark.parametrize("first", ["paid", "cancelled"])
def test_two_states_of_an_order_in_the_same_second_the_one_further_along_wins(spark, first):
    second = "cancelled" if first == "paid" else "paid"
    frame = spark.createDataFrame([_order(first, DAY1, "a.csv"), _order(second, DAY1, "b.csv")], ORDERS)
    outcome = {r["order_status"]: r[VERSION_OUTCOME] for r in rank_orders(frame).collect()}
    assert outcome == {"cancelled": KEPT, "paid": CONFLICT}


def test_a_later_delivery_wins_a_tie_whatever_the_status(spark):
    frame = spark.createDataFrame([_order("cancelled", DAY1, "a.csv"), _order("paid", DAY2, "b.csv")], ORDERS)
    outcome = {r["order_status"]: r[VERSION_OUTCOME] for r in rank_orders(frame).collect()}
    assert outcome == {"paid": KEPT, "cancelled": CONFLICT}


def test_the_order_version_key_sorts_as_the_tie_rule(spark):
    rows = [_order("paid", DAY1, "a"), _order("cancelled", DAY1, "b"), _order("created", DAY2, "c"),
            _order("delivered", DAY1, "d", updated=dt.datetime(2024, 1, 2, 11))]  # fmt: skip
    frame = spark.createDataFrame(rows, ORDERS).select("order_status", order_version_key().alias("key"))
    ordered = [r["order_status"] for r in frame.orderBy(F.col("key").desc()).collect()]
    kept = [r["order_status"] for r in rank_orders(spark.createDataFrame(rows, ORDERS)).collect()
            if r[VERSION_OUTCOME] == KEPT]  # fmt: skip
    assert ordered == ["delivered", "created", "cancelled", "paid"] and kept == ["delivered"]


CLICKS = "event_id string, event_ts timestamp, event_type string, _ingest_date date, _source_file string"


def test_the_first_delivered_copy_of_a_click_wins_and_a_different_copy_is_a_conflict(spark):
    ts = dt.datetime(2024, 1, 2, 10)
    rows = [("e1", ts, "page_view", DAY2, "a"), ("e1", ts, "page_view", DAY1, "z"),
            ("e1", ts, "add_to_cart", DAY1, "b")]  # fmt: skip
    frame = spark.createDataFrame(rows, CLICKS)
    # rank_clicks hashes the whole click content; the content columns not given here are null
    frame = frame.withColumns({c: F.lit(None) for c in CLICK_CONTENT if c not in frame.columns})
    outcomes = sorted(
        (r["event_type"], str(r["_ingest_date"]), r[VERSION_OUTCOME]) for r in rank_clicks(frame).collect()
    )
    kept = [o for o in outcomes if o[2] == KEPT]
    assert len(kept) == 1 and kept[0][1] == str(DAY1)
    assert {o[2] for o in outcomes if o[1] == str(DAY2)} == {
        DUPLICATE if kept[0][0] == "page_view" else CONFLICT
    }
