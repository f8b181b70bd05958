"""SCD type 2 rebuild: examples and property-based invariants."""

from __future__ import annotations

import datetime as dt
from itertools import pairwise

from chispa import assert_df_equality
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pyspark.sql import types as T

from pipeline_lib.silver.history import build_scd2_history

HISTORY = T.StructType(
    [
        T.StructField("id", T.StringType(), True),
        T.StructField("city", T.StringType(), True),
        T.StructField("note", T.StringType(), True),  # untracked
        T.StructField("updated_at", T.TimestampType(), True),
        T.StructField("valid_from", T.TimestampType(), True),
        T.StructField("valid_to", T.TimestampType(), True),
        T.StructField("is_current", T.BooleanType(), True),
    ]
)
INCOMING = T.StructType(HISTORY.fields[:5])
OUT = T.StructType([*HISTORY.fields, T.StructField("_from_incoming", T.BooleanType(), True)])


def ts(day: int) -> dt.datetime:
    return dt.datetime(2024, 1, day)


def _build(spark, existing_rows, incoming_rows):
    existing = spark.createDataFrame(existing_rows, HISTORY)
    incoming = spark.createDataFrame([(i, c, n, ts(d), ts(d)) for i, c, n, d in incoming_rows], INCOMING)
    return build_scd2_history(existing, incoming, keys=["id"], tracked=["city"])


def test_change_closes_current_and_opens_new_version(spark):
    actual = _build(spark, [("a", "Berlin", "x", ts(1), ts(1), None, True)], [("a", "Paris", "y", 5)])
    expected = spark.createDataFrame(
        [
            ("a", "Berlin", "x", ts(1), ts(1), ts(5), False, False),
            ("a", "Paris", "y", ts(5), ts(5), None, True, True),
        ],
        OUT,
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_no_change_creates_no_version_and_untouched_keys_are_not_returned(spark):
    existing = [("a", "Berlin", "x", ts(1), ts(1), None, True), ("b", "Rome", None, ts(1), ts(1), None, True)]
    actual = _build(spark, existing, [("a", "Berlin", "other note", 7), ("a", None, None, 8)])
    expected = spark.createDataFrame(
        [
            # the no-change row at day 7 only confirms the version: its updated_at moves to day 7
            ("a", "Berlin", "x", ts(7), ts(1), ts(8), False, False),
            ("a", None, None, ts(8), ts(8), None, True, True),
        ],
        OUT,
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_late_update_lands_between_versions(spark):
    existing = [
        ("a", "Berlin", None, ts(1), ts(1), ts(10), False),
        ("a", "Rome", None, ts(10), ts(10), None, True),
    ]
    actual = _build(spark, existing, [("a", "Paris", None, 5)])
    expected = spark.createDataFrame(
        [
            ("a", "Berlin", None, ts(1), ts(1), ts(5), False, False),
            ("a", "Paris", None, ts(5), ts(5), ts(10), False, True),
            ("a", "Rome", None, ts(10), ts(10), None, True, False),
        ],
        OUT,
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_late_update_never_displaces_a_later_confirmation(spark):
    # X seen on day 1 and confirmed on day 12 (one version); Y arrives late, seen on day 9.
    existing = [("a", "X", None, ts(12), ts(1), None, True)]
    actual = _build(spark, existing, [("a", "Y", None, 9)]).orderBy("valid_from")
    assert [(r["city"], r["valid_from"], r["valid_to"], r["is_current"]) for r in actual.collect()] == [
        ("X", ts(1), ts(9), False),
        ("Y", ts(9), ts(12), False),
        ("X", ts(12), None, True),
    ]


def test_redelivered_version_keeps_the_recorded_one(spark):
    existing = [("a", "Berlin", "first", ts(1), ts(1), None, True)]
    actual = _build(spark, existing, [("a", "Berlin", "first", 1)])
    expected = spark.createDataFrame([("a", "Berlin", "first", ts(1), ts(1), None, True, False)], OUT)
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_a_conflict_at_the_same_start_is_won_by_the_same_row_whichever_came_first(spark):
    """Two contents for one key and valid_from: the tie rule decides, not the arrival order."""
    berlin, munich = ("a", "Berlin", "first"), ("a", "Munich", "again")
    winners = set()
    for recorded, arriving in ((berlin, munich), (munich, berlin)):
        existing = [(*recorded, ts(1), ts(1), None, True)]
        rows = _build(spark, existing, [(*arriving, 1)]).collect()
        assert len(rows) == 1 and rows[0]["is_current"]
        winners.add(rows[0]["city"])
    assert len(winners) == 1


# --- properties -----------------------------------------------------------------------

events = st.lists(
    st.tuples(st.sampled_from(["a", "b"]), st.integers(1, 12), st.sampled_from(["X", "Y", None])),
    min_size=1,
    max_size=7,
    unique_by=lambda e: (e[0], e[1]),
)


def _apply_in_batches(spark, batches):
    history = spark.createDataFrame([], HISTORY)
    for batch in batches:
        if not batch:
            continue
        incoming = spark.createDataFrame([(k, c, None, ts(d), ts(d)) for k, d, c in batch], INCOMING)
        rebuilt = build_scd2_history(history, incoming, keys=["id"], tracked=["city"]).drop("_from_incoming")
        untouched = history.join(rebuilt.select("id").distinct(), on="id", how="left_anti")
        history = spark.createDataFrame(untouched.unionByName(rebuilt).collect(), HISTORY)
    return sorted((tuple(r) for r in history.collect()), key=lambda r: (r[0], r[4]))


@settings(
    max_examples=8,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # shrinking Spark examples takes minutes
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(events=events, split=st.integers(0, 7), data=st.data())
def test_history_invariants_hold_in_any_delivery_order(spark, events, split, data):
    shuffled = data.draw(st.permutations(events))
    history = _apply_in_batches(spark, [shuffled[:split], shuffled[split:]])
    by_key: dict[str, list[tuple]] = {}
    for row in history:
        by_key.setdefault(row[0], []).append(row)
    for key, versions in by_key.items():
        # exactly one current version, the last; versions never overlap and leave no gap
        assert [r[6] for r in versions] == [False] * (len(versions) - 1) + [True]
        assert all(a[5] == b[4] for a, b in pairwise(versions))
        assert versions[-1][5] is None
        # consecutive versions differ; the current one holds the latest event's state
        assert all(a[1] != b[1] for a, b in pairwise(versions))
        latest = max((e for e in events if e[0] == key), key=lambda e: e[1])
        assert (versions[-1][1], versions[-1][3]) == (latest[2], ts(latest[1]))
        # the first version starts at the earliest event
        assert versions[0][4] == ts(min(e[1] for e in events if e[0] == key))


def test_history_returns_nothing_when_incoming_is_empty(spark):
    existing = spark.createDataFrame([("a", "Berlin", None, ts(1), ts(1), None, True)], HISTORY)
    incoming = spark.createDataFrame([], INCOMING)
    actual = build_scd2_history(existing, incoming, keys=["id"], tracked=["city"])
    assert actual.count() == 0
