"""Unit tests of the silver clickstream transforms (pipeline_lib/silver/clicks.py)."""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from chispa import assert_df_equality
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline_lib.bronze.schemas import LANDING_SOURCES
from pipeline_lib.config import QualityRule, load_config
from pipeline_lib.io import quality as quality_io
from pipeline_lib.quality.rules import split_by_quality, with_rule_results
from pipeline_lib.silver.clicks import (
    BRONZE_RECORD,
    IS_CUSTOMER_STITCHED,
    IS_NEW,
    SILVER_CLICKS_SCHEMA,
    UNPARSED_FIELDS,
    clean_clicks,
    dedupe_clicks,
    filter_unseen_clicks,
    merge_target_condition,
    plan_click_changes,
    select_click_context,
    sessionize_clicks,
    stitch_customers,
    to_silver_clicks,
)
from pipeline_lib.silver.schemas import FAILED_RULES, SILVER_SCHEMAS

REPO = Path(__file__).resolve().parents[2]
UTC = dt.UTC
BRONZE_SCHEMA = LANDING_SOURCES["clicks"].bronze_schema
T0 = dt.datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
GAP = 30

# The clicks rules this table asks for in conf/quality.yaml (a test-only copy, loaded through
# the real config loader so that the YAML handed to the quality owner is known to validate).
CLICK_RULES_YAML = """\
quality:
  rules:
    clicks:
      - name: parseable_record
        expr: "_bronze._corrupt_record IS NULL"
        action: fail
        threshold: 0.2
        description: The line was a JSON object; many broken lines in one file stop the run.
      - name: event_id_present
        expr: "event_id IS NOT NULL"
        description: The event key; silver holds one row per event_id.
      - name: event_ts_valid
        expr: "event_ts IS NOT NULL"
        description: event_ts is present and parses as ISO-8601 (missing or bad offsets included).
      - name: event_type_accepted
        expr: >-
          event_type IN ('page_view', 'product_view', 'search', 'add_to_cart',
          'remove_from_cart', 'begin_checkout', 'purchase')
        description: One of the contract's event types (compared lower-cased).
      - name: anonymous_id_present
        expr: "anonymous_id IS NOT NULL"
        description: The device id that sessions and stitching hang on.
      - name: quantity_is_whole_number
        expr: "NOT array_contains(_unparsed_fields, 'quantity')"
        description: A delivered quantity parses as a whole number.
      - name: quantity_positive
        expr: "quantity > 0"
        null_passes: true
        description: A quantity, when present, is above zero.
      - name: price_is_number
        expr: "NOT array_contains(_unparsed_fields, 'price')"
        description: A delivered price parses as a decimal.
      - name: price_not_negative
        expr: "price >= 0"
        null_passes: true
        description: A price, when present, is not negative.
      - name: tracking_json_parses
        expr: "NOT arrays_overlap(_unparsed_fields, array('utm', 'device'))"
        action: flag
        description: utm and device are JSON objects; a broken one only loses the utm_*/device_* columns.
      - name: product_event_has_product
        expr: >-
          event_type NOT IN ('product_view', 'add_to_cart', 'remove_from_cart')
          OR product_id IS NOT NULL
        action: flag
        null_passes: true
        description: Product events name their product.
      - name: purchase_has_order
        expr: "event_type <> 'purchase' OR order_id IS NOT NULL"
        action: flag
        null_passes: true
        description: A purchase event names its order.
"""


def load_click_rules(folder: Path) -> tuple[QualityRule, ...]:
    """The rules of CLICK_RULES_YAML, read by load_config from a copy of conf/ in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("base.yaml", "local.yaml"):
        shutil.copy(REPO / "conf" / name, folder / name)
    (folder / "quality.yaml").write_text(CLICK_RULES_YAML, encoding="utf-8")
    return load_config("local", conf_dir=folder, environ={}).quality.rules_for("clicks")


@pytest.fixture(scope="module")
def click_rules(tmp_path_factory: pytest.TempPathFactory) -> tuple[QualityRule, ...]:
    return load_click_rules(tmp_path_factory.mktemp("conf"))


def bronze(spark: SparkSession, *records: dict[str, object]) -> DataFrame:
    """Bronze click rows: every field a string; lineage filled with defaults unless given."""
    defaults = {
        "event_type": "page_view",
        "anonymous_id": "a1",
        "_source_file": "clicks/ingest_date=2024-03-01/part-0.jsonl",
        "_ingest_date": dt.date(2024, 3, 1),
        "_ingested_at": dt.datetime(2024, 3, 1, 12, tzinfo=UTC),
        "_run_id": "run-1",
    }
    rows = [tuple({**defaults, **r}.get(f.name) for f in BRONZE_SCHEMA.fields) for r in records]
    return spark.createDataFrame(rows, BRONZE_SCHEMA)


def silver(spark: SparkSession, *records: dict[str, object]) -> DataFrame:
    """Silver click rows (SILVER_CLICKS_SCHEMA) with defaults for what a test does not set."""
    defaults: dict[str, object] = {
        "event_type": "page_view",
        "anonymous_id": "a1",
        "is_session_derived": True,
        IS_CUSTOMER_STITCHED: False,
        "_dq_flags": [],
        "_ingest_date": dt.date(2024, 3, 1),
        "_source_file": "f1",
    }
    rows = []
    for record in records:
        row = {**defaults, **record}
        if row.get("event_ts") is not None and "event_date" not in record:
            row["event_date"] = row["event_ts"].astimezone(UTC).date()
        rows.append(tuple(row.get(f.name) for f in SILVER_CLICKS_SCHEMA.fields))
    return spark.createDataFrame(rows, SILVER_CLICKS_SCHEMA)


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def session_hash(anonymous_id: str, start: dt.datetime) -> str:
    micros = (start - dt.datetime(1970, 1, 1, tzinfo=UTC)) // dt.timedelta(microseconds=1)
    return hashlib.sha256(f"{anonymous_id}|{micros}".encode()).hexdigest()


def frame(spark: SparkSession, rows: list[tuple], ddl: str) -> DataFrame:
    return spark.createDataFrame(rows, ddl)


# ------------------------------------------------------------------ clean_clicks
def test_clean_clicks_converts_offset_timestamps_to_utc(spark):
    source = bronze(
        spark,
        {"event_id": "e1", "event_ts": "2024-03-01T10:00:00+01:00"},
        {"event_id": "e2", "event_ts": "2024-03-01T10:00:00Z"},
        {"event_id": "e3", "event_ts": " 2024-03-01T10:00:00.250-0530 "},
        {"event_id": "e4", "event_ts": None},
        {"event_id": "e5", "event_ts": "2024-07-01T10:00:00 America/New_York"},
    )
    actual = source.transform(clean_clicks, source_timezone="Europe/Berlin").select("event_id", "event_ts")
    expected = frame(
        spark,
        [
            ("e1", dt.datetime(2024, 3, 1, 9, tzinfo=UTC)),
            ("e2", dt.datetime(2024, 3, 1, 10, tzinfo=UTC)),
            ("e3", dt.datetime(2024, 3, 1, 15, 30, 0, 250000, tzinfo=UTC)),
            ("e4", None),
            ("e5", dt.datetime(2024, 7, 1, 14, tzinfo=UTC)),
        ],
        "event_id string, event_ts timestamp",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_clean_clicks_reads_naive_timestamps_in_the_source_timezone(spark):
    source = bronze(
        spark,
        {"event_id": "winter", "event_ts": "2024-03-01T10:00:00"},
        {"event_id": "summer", "event_ts": "2024-07-01 10:00:00.5"},
        {"event_id": "dst_gap", "event_ts": "2024-03-31T02:30:00"},  # does not exist in Berlin
    )
    actual = source.transform(clean_clicks, source_timezone="Europe/Berlin").select("event_id", "event_ts")
    expected = frame(
        spark,
        [
            ("winter", dt.datetime(2024, 3, 1, 9, tzinfo=UTC)),
            ("summer", dt.datetime(2024, 7, 1, 8, 0, 0, 500000, tzinfo=UTC)),
            ("dst_gap", dt.datetime(2024, 3, 31, 1, 30, tzinfo=UTC)),  # shifted forward, as java.time does
        ],
        "event_id string, event_ts timestamp",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_clean_clicks_nulls_bad_timestamps_and_lists_them_as_unparsed(spark):
    source = bronze(
        spark,
        {"event_id": "e1", "event_ts": "not a time"},
        {"event_id": "e2", "event_ts": "2024-13-01T10:00:00Z"},
        {"event_id": "e3", "event_ts": "   "},
    )
    actual = source.transform(clean_clicks, source_timezone="UTC").select(
        "event_id", "event_ts", UNPARSED_FIELDS
    )
    expected = frame(
        spark,
        [("e1", None, ["event_ts"]), ("e2", None, ["event_ts"]), ("e3", None, [])],
        f"event_id string, event_ts timestamp, {UNPARSED_FIELDS} array<string>",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_clean_clicks_event_date_is_the_utc_date(spark):
    source = bronze(
        spark,
        {"event_id": "e1", "event_ts": "2024-03-01T00:30:00+02:00"},  # 2024-02-29 22:30 UTC
        {"event_id": "e2", "event_ts": "2024-03-01T23:59:59.999999Z"},
        {"event_id": "e3", "event_ts": None},
    )
    actual = source.transform(clean_clicks, source_timezone="UTC").select("event_id", "event_date")
    expected = frame(
        spark,
        [("e1", dt.date(2024, 2, 29)), ("e2", dt.date(2024, 3, 1)), ("e3", None)],
        "event_id string, event_date date",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_clean_clicks_trims_strings_and_turns_blanks_into_nulls(spark):
    source = bronze(
        spark,
        {
            "event_id": " e1 ",
            "event_type": " Add_To_Cart ",
            "anonymous_id": "a1",
            "customer_id": "  ",
            "page_url": "",
            "search_query": " shoes ",
        },
        {
            "event_id": "e2",
            "event_type": None,
            "anonymous_id": None,
            "customer_id": None,
            "page_url": None,
            "search_query": None,
        },
    )
    actual = source.transform(clean_clicks, source_timezone="UTC").select(
        "event_id", "event_type", "anonymous_id", "customer_id", "page_url", "search_query"
    )
    expected = frame(
        spark,
        [("e1", "add_to_cart", "a1", None, None, "shoes"), ("e2", None, None, None, None, None)],
        "event_id string, event_type string, anonymous_id string, customer_id string, page_url string, "
        "search_query string",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_clean_clicks_types_quantity_and_price(spark):
    source = bronze(
        spark,
        {"event_id": "e1", "quantity": "2", "price": "19.99"},
        {"event_id": "e2", "quantity": "3.0", "price": "1e2"},
        {"event_id": "e3", "quantity": "2.5", "price": "cheap"},
        {"event_id": "e4", "quantity": None, "price": None},
    )
    actual = source.transform(clean_clicks, source_timezone="UTC").select(
        "event_id", "quantity", "price", UNPARSED_FIELDS
    )
    expected = frame(
        spark,
        [
            ("e1", 2, Decimal("19.99"), []),
            ("e2", 3, Decimal("100.00"), []),
            ("e3", None, None, ["quantity", "price"]),
            ("e4", None, None, []),
        ],
        f"event_id string, quantity int, price decimal(20,4), {UNPARSED_FIELDS} array<string>",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_clean_clicks_flattens_utm_and_device_json(spark):
    source = bronze(
        spark,
        {
            "event_id": "e1",
            "utm": '{"source": "google", "medium": "cpc", "campaign": "spring"}',
            "device": '{"type": "mobile", "os": "iOS", "browser": "Safari", "extra": 1}',
        },
        {"event_id": "e2", "utm": '{"source": 42, "medium": " "}', "device": "{}"},
        {"event_id": "e3", "utm": "{not json", "device": '["mobile"]'},
        {"event_id": "e4", "utm": None, "device": None},
    )
    actual = source.transform(clean_clicks, source_timezone="UTC").select(
        "event_id",
        "utm_source",
        "utm_medium",
        "utm_campaign",
        "device_type",
        "device_os",
        "device_browser",
        UNPARSED_FIELDS,
    )
    expected = frame(
        spark,
        [
            ("e1", "google", "cpc", "spring", "mobile", "iOS", "Safari", []),
            ("e2", "42", None, None, None, None, None, []),
            ("e3", None, None, None, None, None, None, ["utm", "device"]),
            ("e4", None, None, None, None, None, None, []),
        ],
        "event_id string, utm_source string, utm_medium string, utm_campaign string, device_type string, "
        f"device_os string, device_browser string, {UNPARSED_FIELDS} array<string>",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_clean_clicks_marks_events_without_session_for_derivation(spark):
    source = bronze(
        spark,
        {"event_id": "e1", "session_id": "s-9"},
        {"event_id": "e2", "session_id": " "},
        {"event_id": "e3", "session_id": None},
    )
    actual = source.transform(clean_clicks, source_timezone="UTC").select(
        "event_id", "session_id", "is_session_derived", IS_CUSTOMER_STITCHED
    )
    expected = frame(
        spark,
        [("e1", "s-9", False, False), ("e2", None, True, False), ("e3", None, True, False)],
        f"event_id string, session_id string, is_session_derived boolean, {IS_CUSTOMER_STITCHED} boolean",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_clean_clicks_keeps_the_delivered_row_for_quarantine(spark):
    source = bronze(
        spark,
        {"event_id": "e1", "event_ts": "yesterday", "quantity": " x ", "_rescued_data": '{"colour":"red"}'},
        {"_corrupt_record": "{truncated", "event_type": None, "anonymous_id": None},
    )
    actual = source.transform(clean_clicks, source_timezone="UTC").select(f"{BRONZE_RECORD}.*")
    assert_df_equality(actual, source, ignore_row_order=True, ignore_nullable=True)


def test_clean_clicks_rejects_a_frame_without_the_bronze_columns(spark):
    source = bronze(spark, {"event_id": "e1"}).drop("utm", "_source_file")
    with pytest.raises(ValueError, match=r"missing bronze columns \['utm', '_source_file'\]"):
        clean_clicks(source, source_timezone="UTC")


def test_click_rules_quarantine_bad_events_and_flag_bad_tracking_json(spark, click_rules):
    source = bronze(
        spark,
        {"event_id": "ok", "event_ts": "2024-03-01T10:00:00Z", "quantity": "1", "device": "{bad"},
        {"event_id": "bad_type", "event_ts": "2024-03-01T10:00:00Z", "event_type": "hover"},
        {"event_id": "bad_qty", "event_ts": "2024-03-01T10:00:00Z", "quantity": "0", "price": "-1"},
        {"event_id": None, "event_ts": "nope", "anonymous_id": " "},
        {"_corrupt_record": "{oops", "event_type": None, "anonymous_id": None},
    )
    checked = with_rule_results(source.transform(clean_clicks, source_timezone="UTC"), click_rules)
    valid, quarantined = split_by_quality(checked)
    actual = quarantined.select(
        F.col(f"{BRONZE_RECORD}._corrupt_record").alias("corrupt"), "event_id", FAILED_RULES
    )
    expected = frame(
        spark,
        [
            (None, "bad_type", ["event_type_accepted"]),
            (None, "bad_qty", ["quantity_positive", "price_not_negative"]),
            (None, None, ["event_id_present", "event_ts_valid", "anonymous_id_present"]),
            (
                "{oops",
                None,
                [
                    "parseable_record",
                    "event_id_present",
                    "event_ts_valid",
                    "event_type_accepted",
                    "anonymous_id_present",
                ],
            ),
        ],
        f"corrupt string, event_id string, {FAILED_RULES} array<string>",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)
    assert [(r.event_id, r._dq_flags) for r in valid.collect()] == [("ok", ["tracking_json_parses"])]


# ------------------------------------------------------------------ dedupe
def test_dedupe_clicks_keeps_the_earliest_delivery_of_a_resent_event(spark):
    source = silver(
        spark,
        {"event_id": "e1", "event_ts": at(0), "_ingest_date": dt.date(2024, 3, 3), "_source_file": "a"},
        {"event_id": "e1", "event_ts": at(0), "_ingest_date": dt.date(2024, 3, 1), "_source_file": "z"},
        {"event_id": "e2", "event_ts": at(5), "_ingest_date": dt.date(2024, 3, 2), "_source_file": "b"},
        {"event_id": None, "event_ts": at(9), "_source_file": "n1"},
        {"event_id": None, "event_ts": at(9), "_source_file": "n2"},
    )
    actual = source.transform(dedupe_clicks).select("event_id", "_source_file")
    expected = frame(
        spark, [("e1", "z"), ("e2", "b"), (None, "n1"), (None, "n2")], "event_id string, _source_file string"
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_dedupe_clicks_keeps_the_first_delivered_copy_then_the_earliest_and_never_asks_the_file(spark):
    day1, day2 = dt.date(2024, 3, 5), dt.date(2024, 3, 6)
    rows = [
        {
            "event_id": "e1",
            "event_ts": at(0),
            "_ingest_date": day2,
            "_source_file": "a",
            "page_url": "/resent",
        },
        {
            "event_id": "e1",
            "event_ts": at(0),
            "_ingest_date": day1,
            "_source_file": "b",
            "page_url": "/first",
        },
        {
            "event_id": "e2",
            "event_ts": at(3),
            "_ingest_date": day1,
            "_source_file": "a",
            "page_url": "/later",
        },
        {
            "event_id": "e2",
            "event_ts": at(1),
            "_ingest_date": day1,
            "_source_file": "a",
            "page_url": "/earlier",
        },
        {
            "event_id": "e2",
            "event_ts": None,
            "_ingest_date": day1,
            "_source_file": "a",
            "page_url": "/no-time",
        },
        {"event_id": "e3", "event_ts": at(0), "_ingest_date": day1, "_source_file": "x", "page_url": "/one"},
        {"event_id": "e3", "event_ts": at(0), "_ingest_date": day1, "_source_file": "y", "page_url": "/two"},
    ]
    kept = source_kept = silver(spark, *rows).transform(dedupe_clicks).select("event_id", "page_url")
    assert {r["event_id"]: r["page_url"] for r in kept.collect() if r["event_id"] != "e3"} == {
        "e1": "/first",
        "e2": "/earlier",
    }
    # A tie in delivery and time (e3) goes to the content: swapping the file names changes nothing.
    swapped = [
        {**r, "_source_file": {"x": "y", "y": "x"}.get(r["_source_file"], r["_source_file"])} for r in rows
    ]
    again = silver(spark, *swapped).transform(dedupe_clicks).select("event_id", "page_url")
    assert_df_equality(source_kept, again, ignore_row_order=True, ignore_nullable=True)


def test_filter_unseen_clicks_drops_a_late_resend_already_in_silver(spark):
    source = silver(
        spark,
        {"event_id": "e1", "event_ts": at(0), "_ingest_date": dt.date(2024, 3, 5)},
        {"event_id": "e9", "event_ts": at(1), "_ingest_date": dt.date(2024, 3, 5)},
        {"event_id": None, "event_ts": at(2)},
    )
    seen = frame(spark, [("e1",), (None,), ("e7",)], "event_id string")
    expected = frame(spark, [("e9",), (None,)], "event_id string")
    for broadcast in (True, False):
        actual = source.transform(filter_unseen_clicks, seen=seen, broadcast=broadcast).select("event_id")
        assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_filter_unseen_clicks_scans_silver_without_shuffling_it(spark):
    """The batch's ids are broadcast to the scan of silver: silver's ids are never shuffled."""
    source = silver(spark, {"event_id": "e1", "event_ts": at(0), "_ingest_date": dt.date(2024, 3, 5)})
    seen = frame(spark, [("e1",), ("e2",)], "event_id string")
    plan = source.transform(filter_unseen_clicks, seen=seen)._jdf.queryExecution().executedPlan().toString()
    assert "BroadcastHashJoin [event_id" in plan and "LeftSemi" in plan
    assert "SortMergeJoin" not in plan
    shuffled = source.transform(filter_unseen_clicks, seen=seen, broadcast=False)
    assert "SortMergeJoin" in shuffled._jdf.queryExecution().executedPlan().toString()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["e1", "e2", "e3", None]),
            st.integers(0, 3),
            st.sampled_from(["a", "b"]),
            st.integers(0, 90),
        ),
        max_size=12,
    )
)
def test_dedupe_clicks_is_idempotent_and_leaves_one_row_per_event(spark, copies):
    source = silver(
        spark,
        *[
            {
                "event_id": eid,
                "_ingest_date": dt.date(2024, 3, 1 + day),
                "_source_file": file,
                "event_ts": at(minute),
            }
            for eid, day, file, minute in copies
        ],
    )
    once = source.transform(dedupe_clicks)
    twice = once.transform(dedupe_clicks)
    assert_df_equality(twice, once, ignore_row_order=True, ignore_nullable=True)
    ids = [r.event_id for r in once.collect() if r.event_id is not None]
    assert sorted(ids) == sorted({eid for eid, *_ in copies if eid is not None})


# ------------------------------------------------------------------ sessionize
def sessions_of(clicks: DataFrame) -> DataFrame:
    return clicks.select("event_id", "session_id")


def test_sessionize_keeps_an_event_exactly_at_the_gap_in_the_session(spark):
    source = silver(spark, {"event_id": "e1", "event_ts": at(0)}, {"event_id": "e2", "event_ts": at(GAP)})
    actual = sessions_of(source.transform(sessionize_clicks, session_gap_minutes=GAP))
    s1 = session_hash("a1", at(0))
    expected = frame(spark, [("e1", s1), ("e2", s1)], "event_id string, session_id string")
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_sessionize_starts_a_new_session_just_over_the_gap(spark):
    source = silver(
        spark,
        {"event_id": "e1", "event_ts": at(0)},
        {"event_id": "e2", "event_ts": at(GAP) + dt.timedelta(microseconds=1)},
        {"event_id": "e3", "event_ts": at(GAP + 10)},
    )
    actual = sessions_of(source.transform(sessionize_clicks, session_gap_minutes=GAP))
    s1, s2 = session_hash("a1", at(0)), session_hash("a1", at(GAP) + dt.timedelta(microseconds=1))
    expected = frame(spark, [("e1", s1), ("e2", s2), ("e3", s2)], "event_id string, session_id string")
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_sessionize_continues_a_session_across_midnight(spark):
    before = dt.datetime(2024, 3, 1, 23, 50, tzinfo=UTC)
    source = silver(
        spark,
        {"event_id": "e1", "event_ts": before},
        {"event_id": "e2", "event_ts": before + dt.timedelta(minutes=20)},
        {"event_id": "e3", "event_ts": before + dt.timedelta(minutes=45)},
    )
    actual = sessions_of(source.transform(sessionize_clicks, session_gap_minutes=GAP))
    s1 = session_hash("a1", before)
    expected = frame(spark, [("e1", s1), ("e2", s1), ("e3", s1)], "event_id string, session_id string")
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_sessionize_separates_two_devices_with_interleaved_events(spark):
    source = silver(
        spark,
        {"event_id": "a-1", "anonymous_id": "a1", "event_ts": at(0)},
        {"event_id": "b-1", "anonymous_id": "b2", "event_ts": at(10)},
        {"event_id": "a-2", "anonymous_id": "a1", "event_ts": at(20)},
        {"event_id": "b-2", "anonymous_id": "b2", "event_ts": at(45)},  # 35 min after b-1
    )
    actual = sessions_of(source.transform(sessionize_clicks, session_gap_minutes=GAP))
    a, b1, b2 = session_hash("a1", at(0)), session_hash("b2", at(10)), session_hash("b2", at(45))
    expected = frame(
        spark, [("a-1", a), ("a-2", a), ("b-1", b1), ("b-2", b2)], "event_id string, session_id string"
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_sessionize_keeps_delivered_sessions_and_skips_unplaceable_rows(spark):
    source = silver(
        spark,
        {"event_id": "e1", "event_ts": at(0), "session_id": "app-1", "is_session_derived": False},
        {"event_id": "e2", "event_ts": at(100)},
        {"event_id": "e3", "event_ts": None, "session_id": "stale"},
        {"event_id": "e4", "event_ts": at(5), "anonymous_id": None},
    )
    actual = sessions_of(source.transform(sessionize_clicks, session_gap_minutes=GAP))
    expected = frame(
        spark,
        [("e1", "app-1"), ("e2", session_hash("a1", at(100))), ("e3", None), ("e4", None)],
        "event_id string, session_id string",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_sessionize_rejects_a_gap_below_one_minute(spark):
    source = silver(spark, {"event_id": "e1", "event_ts": at(0)})
    with pytest.raises(ValueError, match="session_gap_minutes must be at least 1, got 0"):
        sessionize_clicks(source, session_gap_minutes=0)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["a1", "b2"]), st.integers(0, 240)), min_size=1, max_size=12))
def test_sessionizing_twice_gives_the_same_ids(spark, events):
    source = silver(
        spark,
        *[
            {"event_id": f"e{i}", "anonymous_id": anon, "event_ts": at(m)}
            for i, (anon, m) in enumerate(events)
        ],
    )
    once = source.transform(sessionize_clicks, session_gap_minutes=GAP)
    twice = once.transform(sessionize_clicks, session_gap_minutes=GAP)
    assert_df_equality(twice, once, ignore_row_order=True, ignore_nullable=True)


# ------------------------------------------------------------------ stitch
def customers_of(clicks: DataFrame) -> DataFrame:
    return clicks.select("event_id", "customer_id", IS_CUSTOMER_STITCHED)


CUSTOMERS_DDL = f"event_id string, customer_id string, {IS_CUSTOMER_STITCHED} boolean"


def test_stitch_customers_attributes_the_session_before_a_login(spark):
    source = silver(
        spark,
        {"event_id": "e1", "event_ts": at(0)},
        {"event_id": "e2", "event_ts": at(5)},
        {"event_id": "e3", "event_ts": at(10), "customer_id": "c1"},  # login mid-session
        {"event_id": "e4", "event_ts": at(15), "customer_id": "c1"},
    )
    actual = customers_of(source.transform(stitch_customers))
    expected = frame(
        spark,
        [("e1", "c1", True), ("e2", "c1", True), ("e3", "c1", False), ("e4", "c1", False)],
        CUSTOMERS_DDL,
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_stitch_customers_attributes_an_earlier_anonymous_session(spark):
    source = silver(
        spark,
        {"event_id": "day1", "event_ts": at(-24 * 60)},
        {"event_id": "day2", "event_ts": at(0), "customer_id": "c1"},
        {"event_id": "other", "anonymous_id": "b2", "event_ts": at(-60)},
    )
    actual = customers_of(source.transform(stitch_customers))
    expected = frame(
        spark, [("day1", "c1", True), ("day2", "c1", False), ("other", None, False)], CUSTOMERS_DDL
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_stitch_customers_leaves_a_guest_who_never_logs_in_anonymous(spark):
    source = silver(
        spark,
        {"event_id": "g1", "anonymous_id": "guest", "event_ts": at(0)},
        {"event_id": "g2", "anonymous_id": "guest", "event_ts": at(3)},
        {"event_id": "n1", "anonymous_id": None, "event_ts": at(4), "customer_id": "c7"},
    )
    actual = customers_of(source.transform(stitch_customers))
    expected = frame(spark, [("g1", None, False), ("g2", None, False), ("n1", "c7", False)], CUSTOMERS_DDL)
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_stitch_customers_gives_a_shared_device_to_the_next_login(spark):
    source = silver(
        spark,
        {"event_id": "e1", "event_ts": at(0)},
        {"event_id": "e2", "event_ts": at(10), "customer_id": "c1"},
        {"event_id": "e3", "event_ts": at(20)},
        {"event_id": "e4", "event_ts": at(30), "customer_id": "c2"},
        {"event_id": "e5", "event_ts": at(40)},  # after the last login: nobody
    )
    actual = customers_of(source.transform(stitch_customers))
    expected = frame(
        spark,
        [
            ("e1", "c1", True),
            ("e2", "c1", False),
            ("e3", "c2", True),
            ("e4", "c2", False),
            ("e5", None, False),
        ],
        CUSTOMERS_DDL,
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_stitch_customers_recomputes_earlier_stitched_values(spark):
    source = silver(
        spark,
        {"event_id": "e1", "event_ts": at(0), "customer_id": "c1", IS_CUSTOMER_STITCHED: True},
        {"event_id": "e2", "event_ts": at(5), "customer_id": "c2"},  # a login that arrived late
        {"event_id": "e3", "event_ts": at(10), "customer_id": "c1"},
    )
    actual = customers_of(source.transform(stitch_customers))
    expected = frame(spark, [("e1", "c2", True), ("e2", "c2", False), ("e3", "c1", False)], CUSTOMERS_DDL)
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


# ------------------------------------------------------------------ context and change plan
def test_select_click_context_takes_the_devices_silver_events_near_new_ones(spark):
    silver_clicks = silver(
        spark,
        {"event_id": "near", "event_ts": at(-47 * 60)},
        {"event_id": "edge", "event_ts": at(48 * 60)},
        {"event_id": "far", "event_ts": at(-49 * 60)},
        {"event_id": "other_device", "anonymous_id": "b2", "event_ts": at(0)},
    )
    new_clicks = silver(spark, {"event_id": "n1", "event_ts": at(0)}, {"event_id": "n2", "event_ts": None})
    actual = select_click_context(silver_clicks, new_clicks=new_clicks, context_hours=48).select("event_id")
    expected = frame(spark, [("near",), ("edge",)], "event_id string")
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_select_click_context_rejects_a_bound_below_one_hour(spark):
    frame_ = silver(spark, {"event_id": "e1", "event_ts": at(0)})
    with pytest.raises(ValueError, match="context_hours must be at least 1"):
        select_click_context(frame_, new_clicks=frame_, context_hours=0)


def changes_of(planned: DataFrame) -> DataFrame:
    return planned.select("event_id", "session_id", "customer_id", IS_CUSTOMER_STITCHED, IS_NEW)


CHANGES_DDL = (
    f"event_id string, session_id string, customer_id string, {IS_CUSTOMER_STITCHED} boolean, "
    f"{IS_NEW} boolean"
)


def test_plan_click_changes_merges_sessions_bridged_by_a_late_event(spark):
    first, second = session_hash("a1", at(0)), session_hash("a1", at(50))
    context = silver(
        spark,
        {"event_id": "s1", "event_ts": at(0), "session_id": first},
        {"event_id": "s2", "event_ts": at(50), "session_id": second},
        {"event_id": "s3", "event_ts": at(60), "session_id": second},
    )
    late = silver(spark, {"event_id": "late", "event_ts": at(25)})  # within 30 min of both
    actual = changes_of(plan_click_changes(late, context=context, session_gap_minutes=GAP))
    expected = frame(
        spark,
        [
            ("late", first, None, False, True),
            ("s2", first, None, False, False),
            ("s3", first, None, False, False),
        ],
        CHANGES_DDL,
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_plan_click_changes_stitches_silver_events_before_a_new_login(spark):
    s1 = session_hash("a1", at(0))
    context = silver(
        spark,
        {"event_id": "s1", "event_ts": at(0), "session_id": s1},
        {"event_id": "s2", "event_ts": at(5), "session_id": s1},
        {
            "event_id": "x1",
            "anonymous_id": "b2",
            "event_ts": at(0),
            "session_id": "app",
            "is_session_derived": False,
        },
    )
    login = silver(spark, {"event_id": "login", "event_ts": at(10), "customer_id": "c1"})
    actual = changes_of(plan_click_changes(login, context=context, session_gap_minutes=GAP))
    expected = frame(
        spark,
        [("login", s1, "c1", False, True), ("s1", s1, "c1", True, False), ("s2", s1, "c1", True, False)],
        CHANGES_DDL,
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_plan_click_changes_leaves_silver_rows_at_the_context_edge_alone(spark):
    # The context was cut: 'edge' was stitched to a login beyond the bound, and its session
    # started before the bound. Neither may be rewritten by a new event that does not touch them.
    context = silver(
        spark,
        {
            "event_id": "edge",
            "event_ts": at(0),
            "session_id": "started-earlier",
            "customer_id": "c9",
            IS_CUSTOMER_STITCHED: True,
        },
    )
    new = silver(spark, {"event_id": "n1", "event_ts": at(120)})
    actual = changes_of(plan_click_changes(new, context=context, session_gap_minutes=GAP))
    expected = frame(spark, [("n1", session_hash("a1", at(120)), None, False, True)], CHANGES_DDL)
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.slow  # a dozen window stages per example: seconds each, so kept out of the fast loop
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a1", "b2"]),
            st.integers(0, 300),
            st.sampled_from([None, None, None, "c1", "c2"]),
            st.booleans(),
        ),
        min_size=1,
        max_size=10,
    )
)
def test_plan_click_changes_gives_the_same_silver_as_processing_everything_at_once(spark, events):
    # Each event: device, minute, delivered customer (a login) or None, and whether it comes late.
    rows = [
        {"event_id": f"e{i}", "anonymous_id": anon, "event_ts": at(minute), "customer_id": customer}
        for i, (anon, minute, customer, _) in enumerate(events)
    ]
    late_ids = [f"e{i}" for i, (*_, late) in enumerate(events) if late]
    everything = silver(spark, *rows)
    first = everything.where(~F.col("event_id").isin(late_ids))
    second = everything.where(F.col("event_id").isin(late_ids))

    def process(clicks: DataFrame) -> DataFrame:
        return clicks.transform(sessionize_clicks, session_gap_minutes=GAP).transform(stitch_customers)

    silver_after_first = process(first)
    planned = plan_click_changes(second, context=silver_after_first, session_gap_minutes=GAP).drop(IS_NEW)
    merged = silver_after_first.join(planned.select("event_id"), on="event_id", how="left_anti").unionByName(
        planned
    )
    expected = to_silver_clicks(process(everything))
    assert_df_equality(to_silver_clicks(merged), expected, ignore_row_order=True, ignore_nullable=True)


def test_the_merge_reads_the_partitions_from_the_plans_first_to_last_event_date(spark):
    planned = silver(
        spark,
        {"event_id": "e1", "event_ts": at(0)},
        {"event_id": "e2", "event_ts": at(3 * 24 * 60)},
        {"event_id": "e3", "event_ts": at(60)},
    )
    undated = planned.withColumn("event_date", F.lit(None).cast("date"))

    assert merge_target_condition(planned) == (
        "t.`event_date` IS NULL OR t.`event_date` BETWEEN DATE'2024-03-01' AND DATE'2024-03-04'"
    )
    assert merge_target_condition(planned.limit(0)) is None
    assert merge_target_condition(undated) is None


def test_to_silver_clicks_fixes_the_contract(spark):
    source = silver(spark, {"event_id": "e1", "event_ts": at(0)}).withColumn("_extra", F.lit(1))
    actual = to_silver_clicks(source)
    assert actual.schema == SILVER_CLICKS_SCHEMA
    assert actual.columns == SILVER_SCHEMAS["clicks"].fieldNames()
    assert IS_CUSTOMER_STITCHED in actual.columns


def test_clicks_keep_the_bronze_row_where_quarantine_looks_for_it():
    assert BRONZE_RECORD == quality_io.BRONZE_RECORD
