"""The silver.clicks job against real Delta tables: two deliveries, then a run with nothing new."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs.silver_clicks import silver_clicks
from pipeline_lib.bronze.schemas import LANDING_SOURCES
from pipeline_lib.config import PipelineConfig, QualityConfig
from pipeline_lib.io.delta import read_table, table_path, table_version, write_table
from pipeline_lib.ops.context import JobContext
from pipeline_lib.ops.schemas import WATERMARKS_TABLE
from pipeline_lib.ops.watermarks import CDF_PROPERTIES
from pipeline_lib.silver.clicks import IS_CUSTOMER_STITCHED, ReconciliationError, reconcile_clicks
from pipeline_lib.silver.schemas import FAILED_RULES
from tests.unit.test_clicks import load_click_rules, session_hash

pytestmark = pytest.mark.slow

UTC = dt.UTC
BRONZE_SCHEMA = LANDING_SOURCES["clicks"].bronze_schema
DAY1, DAY3 = dt.date(2024, 3, 1), dt.date(2024, 3, 3)
SILVER_COLUMNS = ["event_id", "event_ts", "anonymous_id", "customer_id", IS_CUSTOMER_STITCHED, "session_id",
                  "is_session_derived", "_source_file"]  # fmt: skip
SILVER_DDL = (
    f"event_id string, event_ts timestamp, anonymous_id string, customer_id string, {IS_CUSTOMER_STITCHED} "
    "boolean, session_id string, is_session_derived boolean, _source_file string"
)
F1 = "clicks/ingest_date=2024-03-01/part-0.jsonl"
F3 = "clicks/ingest_date=2024-03-03/part-0.jsonl"


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(UTC)


def deliver(
    spark: SparkSession, lake: str, ingest_date: dt.date, file: str, *events: dict[str, object]
) -> None:
    """Append one delivery of click lines to bronze, as the bronze job would (one commit)."""
    lineage = {
        "_source_file": f"clicks/ingest_date={ingest_date}/{file}",
        "_ingest_date": ingest_date,
        "_ingested_at": dt.datetime.combine(ingest_date, dt.time(6), tzinfo=UTC),
        "_run_id": f"bronze-{ingest_date}",
    }
    rows = [tuple({**lineage, **event}.get(f.name) for f in BRONZE_SCHEMA.fields) for event in events]
    write_table(
        spark.createDataFrame(rows, BRONZE_SCHEMA),
        table_path(lake, "bronze", "clicks"),
        partition_by=["_ingest_date"],
        properties=CDF_PROPERTIES,
    )


def click(event_id: str, event_ts: str, anonymous_id: str, event_type: str = "page_view", **more: object):
    return {"event_id": event_id, "event_ts": event_ts, "anonymous_id": anonymous_id,
            "event_type": event_type, **more}  # fmt: skip


@pytest.fixture
def clicks_config(config: PipelineConfig, tmp_path: Path) -> PipelineConfig:
    rules = {"clicks": load_click_rules(tmp_path / "conf")}
    return dataclasses.replace(config, quality=QualityConfig(fail_threshold=0.05, rules=rules))


def test_silver_clicks_job_dedupes_sessionizes_stitches_and_then_commits_nothing(spark, clicks_config):
    lake = clicks_config.paths.lake
    silver_path, quarantine_path = (
        table_path(lake, "silver", "clicks"),
        table_path(lake, "quarantine", "clicks"),
    )

    def run(run_id: str, *, full_refresh: bool = False):
        ctx = JobContext(spark=spark, config=clicks_config, run_id=run_id, full_refresh=full_refresh)
        return silver_clicks(ctx)

    # Delivery 1: device a1 browses anonymously (two sessions: 10:00-10:10 and 11:00), sends
    # one event twice; b2 is logged in with an app session; one bad type, one broken line.
    deliver(
        spark, lake, DAY1, "part-0.jsonl",
        click("a1-1", "2024-03-01T10:00:00Z", "a1", utm='{"source": "google"}', device='{"type": "mobile"}'),
        click("a1-2", "2024-03-01T11:10:00+01:00", "a1", "product_view", product_id="p1"),
        click("a1-2", "2024-03-01T11:10:00+01:00", "a1", "product_view", product_id="p1"),
        click("a1-3", "2024-03-01T11:00:00Z", "a1", "search", search_query="shoes"),
        click("b2-1", "2024-03-01T10:05:00Z", "b2", "add_to_cart", session_id="app-7", customer_id="c2",
              product_id="p2", quantity="1", price="9.99"),
        click("bad-1", "2024-03-01T10:06:00Z", "b2", "hover"),
        {"_corrupt_record": '{"event_id": "cut-of'},
    )  # fmt: skip
    first = run("run-1")

    morning = session_hash("a1", ts("2024-03-01T10:00:00Z"))
    eleven = session_hash("a1", ts("2024-03-01T11:00:00Z"))
    assert first.details["reconciled"] is True
    assert (first.rows_read, first.rows_written, first.rows_quarantined) == (7, 4, 2)
    assert first.details["duplicates_removed"] == 1
    actual = read_table(spark, silver_path).select(*SILVER_COLUMNS)
    expected = spark.createDataFrame(
        [
            ("a1-1", ts("2024-03-01T10:00:00Z"), "a1", None, False, morning, True, F1),
            ("a1-2", ts("2024-03-01T10:10:00Z"), "a1", None, False, morning, True, F1),
            ("a1-3", ts("2024-03-01T11:00:00Z"), "a1", None, False, eleven, True, F1),
            ("b2-1", ts("2024-03-01T10:05:00Z"), "b2", "c2", False, "app-7", False, F1),
        ],
        SILVER_DDL,
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)
    payload = read_table(spark, silver_path).where(F.col("event_id").isin("a1-1", "b2-1"))
    assert sorted(payload.select("event_id", "event_date", "quantity", "price", "utm_source", "device_type")
                  .collect()) == [
        ("a1-1", DAY1, None, None, "google", "mobile"),
        ("b2-1", DAY1, 1, Decimal("9.99"), None, None),
    ]  # fmt: skip
    quarantine = read_table(spark, quarantine_path).select("event_id", "_corrupt_record", FAILED_RULES)
    assert sorted(quarantine.collect(), key=lambda r: r.event_id or "") == [
        (None, '{"event_id": "cut-of', ["parseable_record", "event_id_present", "event_ts_valid",
                                        "event_type_accepted", "anonymous_id_present"]),
        ("bad-1", None, ["event_type_accepted"]),
    ]  # fmt: skip

    # Delivery 2, two days later: a1-2 re-sent; a late 10:35 event that bridges a1's two
    # sessions; a1 logs in as c1 the next day (naive time, Berlin); a guest who never logs in.
    deliver(
        spark, lake, DAY3, "part-0.jsonl",
        click("a1-2", "2024-03-01T11:10:00+01:00", "a1", "product_view", product_id="p1"),
        click("a1-late", "2024-03-01T10:35:00Z", "a1", "product_view", product_id="p3"),
        click("a1-login", "2024-03-02 09:00:00", "a1", customer_id="c1"),
        click("g-1", "2024-03-02T12:00:00Z", "g9"),
    )  # fmt: skip
    second = run("run-2")

    login_session = session_hash("a1", ts("2024-03-02T08:00:00Z"))
    guest_session = session_hash("g9", ts("2024-03-02T12:00:00Z"))
    assert second.details["reconciled"] is True
    assert (second.rows_read, second.rows_quarantined) == (4, 0)
    assert (second.details["inserted"], second.details["updated"]) == (3, 3)
    assert second.details["duplicates_already_in_silver"] == 1
    actual = read_table(spark, silver_path).select(*SILVER_COLUMNS)
    expected = spark.createDataFrame(
        [
            ("a1-1", ts("2024-03-01T10:00:00Z"), "a1", "c1", True, morning, True, F1),
            ("a1-2", ts("2024-03-01T10:10:00Z"), "a1", "c1", True, morning, True, F1),
            ("a1-late", ts("2024-03-01T10:35:00Z"), "a1", "c1", True, morning, True, F3),
            ("a1-3", ts("2024-03-01T11:00:00Z"), "a1", "c1", True, morning, True, F1),
            ("a1-login", ts("2024-03-02T08:00:00Z"), "a1", "c1", False, login_session, True, F3),
            ("b2-1", ts("2024-03-01T10:05:00Z"), "b2", "c2", False, "app-7", False, F1),
            ("g-1", ts("2024-03-02T12:00:00Z"), "g9", None, False, guest_session, True, F3),
        ],
        SILVER_DDL,
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)

    # Third run, no new bronze commit: nothing is written anywhere.
    versions = {
        p: table_version(spark, p)
        for p in (silver_path, quarantine_path, table_path(lake, "ops", WATERMARKS_TABLE))
    }
    third = run("run-3")
    assert third.details["skipped"] == "no new bronze commits"
    assert {p: table_version(spark, p) for p in versions} == versions

    # A full refresh rebuilds silver from all of bronze at once: the same table, and the
    # rows already quarantined are not quarantined twice.
    rebuilt = run("run-4", full_refresh=True)
    rebuilt_counts = (rebuilt.rows_read, rebuilt.details["inserted"], rebuilt.details["duplicates_removed"])
    assert rebuilt_counts == (11, 7, 2)
    assert_df_equality(
        read_table(spark, silver_path).select(*SILVER_COLUMNS),
        expected,
        ignore_row_order=True,
        ignore_nullable=True,
    )
    assert read_table(spark, quarantine_path).count() == 2


def test_a_resend_stamped_days_later_is_still_found_in_silver(spark, clicks_config):
    # A hand-made delivery: the tracker's retry of e-1 carries the time it was re-sent, nine
    # days after the event, so it falls in another event_date partition than the silver row.
    # The run's MERGE reads only the partitions of its own plan (2024-03-10); the anti-join
    # with every silver event_id before it must still drop the copy.
    lake = clicks_config.paths.lake
    deliver(spark, lake, DAY1, "part-0.jsonl", click("e-1", "2024-03-01T10:00:00Z", "a1"))
    silver_clicks(JobContext(spark=spark, config=clicks_config, run_id="run-1"))
    day10 = dt.date(2024, 3, 10)
    deliver(
        spark, lake, day10, "part-0.jsonl",
        click("e-1", "2024-03-10T08:00:00Z", "a1"),
        click("e-2", "2024-03-10T08:05:00Z", "a1"),
    )  # fmt: skip

    second = silver_clicks(JobContext(spark=spark, config=clicks_config, run_id="run-2"))

    assert second.details["reconciled"] is True
    assert (second.details["inserted"], second.details["duplicates_already_in_silver"]) == (1, 1)
    silver = read_table(spark, table_path(lake, "silver", "clicks"))
    stamped = F.date_format("event_ts", "yyyy-MM-dd HH:mm")  # in the session's zone, UTC
    assert sorted(silver.select("event_id", stamped, "event_date").collect()) == [
        ("e-1", "2024-03-01 10:00", DAY1),
        ("e-2", "2024-03-10 08:05", day10),
    ]


def test_reconciliation_that_does_not_add_up_fails_the_run():
    counts = {"bronze_rows": 10, "quarantined": 2, "valid": 8, "unique_in_batch": 7, "conflicts_in_batch": 0,
              "new_events": 6, "context_updates": 0}  # fmt: skip
    with pytest.raises(ReconciliationError, match="10 bronze rows, but 5 inserted \\+ 2 quarantined \\+ 2"):
        reconcile_clicks(counts, {"inserted": 5, "updated": 0})
