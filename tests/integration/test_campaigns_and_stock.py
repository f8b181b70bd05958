"""Campaigns and stock on a lake the real pipeline built: tables, re-runs, exports, the erasure.

The session's reference lake (tests/conftest.py: generated deliveries, the inventory source
included, through every job, as of the latest order date) is copied once for the module, so
re-runs, exports and the erasure's steps change only the copy. Tests run in file order: the
erasure, which deletes a customer's audience rows, is last.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import stat
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.export import export_audience
from jobs.gold_campaigns import launch_audiences
from jobs.graph import JOB_GRAPH
from jobs.runner import SKIPPED, run_jobs
from pipeline_lib.config import PipelineConfig
from pipeline_lib.gold.campaigns import EXPORT_COLUMNS, TREATMENT
from pipeline_lib.gold.schemas import GOLD_SCHEMAS
from pipeline_lib.io.delta import read_table, table_path, table_version
from pipeline_lib.io.exports import ExportError
from pipeline_lib.io.frames import local_frame
from pipeline_lib.io.lake_files import lake_tables
from pipeline_lib.ops.context import JobContext
from pipeline_lib.ops.schemas import ERASURES_TABLE, EXPORTS_TABLE
from pipeline_lib.privacy.erasure import CUSTOMER_TABLES, NEEDLES_SCHEMA, plan_scrub
from pipeline_lib.privacy.forget import (
    AUDIENCES_TABLE,
    ErasureReport,
    collect_export_mentions,
    collect_identifiers,
    scrub,
)
from pipeline_lib.privacy.pii import PII_COLUMNS

pytestmark = pytest.mark.slow

NEW_GOLD = ("campaign_audiences", "campaign_results", "fact_inventory_daily", "stock_signals")
NEW_JOBS = [
    spec
    for spec in JOB_GRAPH
    if spec.qualified_name
    in {"bronze.inventory", "silver.inventory", *(f"gold.{table}" for table in NEW_GOLD)}
]
NEW_TABLES = ("silver.inventory", "quarantine.inventory", *(f"gold.{table}" for table in NEW_GOLD))


@pytest.fixture(scope="module")
def lake(reference_lake: PipelineConfig, tmp_path_factory: pytest.TempPathFactory) -> PipelineConfig:
    root = tmp_path_factory.mktemp("actions")
    shutil.copytree(reference_lake.paths.lake, root / "lake")
    return reference_lake.with_paths(lake=str(root / "lake"))


def gold(spark: SparkSession, config: PipelineConfig, table: str) -> DataFrame:
    return read_table(spark, table_path(config.paths.lake, "gold", table))


def as_of(spark: SparkSession, config: PipelineConfig) -> dt.date:
    """The lake's as-of date: the one of its customer segments (every aggregate shares it)."""
    return gold(spark, config, "customer_segments").agg(F.max("as_of_date")).first()[0]


def versions(config: PipelineConfig, spark: SparkSession) -> dict[str, int | None]:
    return {
        name: table_version(spark, table_path(config.paths.lake, *name.split("."))) for name in NEW_TABLES
    }


def test_the_new_tables_are_built_to_their_contracts(spark: SparkSession, lake: PipelineConfig) -> None:
    for table in NEW_GOLD:
        actual = gold(spark, lake, table)
        assert actual.columns == GOLD_SCHEMAS[table].fieldNames(), table
        assert not set(PII_COLUMNS) & set(actual.columns), table
        assert not actual.isEmpty(), table
    snapshots = read_table(spark, table_path(lake.paths.lake, "silver", "inventory"))
    assert snapshots.groupBy("product_id", "location_id", "snapshot_ts").count().where("count > 1").isEmpty()
    runs = read_table(spark, table_path(lake.paths.lake, "ops", "pipeline_runs"))
    details = runs.where(F.col("job") == "silver.inventory").select("details").first()["details"]
    assert '"reconciled": true' in details


def test_a_day_without_a_snapshot_has_no_row(spark: SparkSession, lake: PipelineConfig) -> None:
    snapshots = read_table(spark, table_path(lake.paths.lake, "silver", "inventory"))
    days = snapshots.select("product_id", "location_id", F.col("snapshot_date").alias("date")).distinct()
    daily = gold(spark, lake, "fact_inventory_daily")
    assert daily.count() == days.count()
    assert daily.select("product_id", "location_id", "date").exceptAll(days).isEmpty()
    assert daily.where(F.col("in_stock") != (F.col("available") > 0)).isEmpty()


def test_stock_signals_add_up(spark: SparkSession, lake: PipelineConfig) -> None:
    date = as_of(spark, lake)
    signals = gold(spark, lake, "stock_signals").where(F.col("as_of_date") == F.lit(date))
    window = lake.stock.long_window_days
    days = F.col("in_stock_days_28d") + F.col("days_out_of_stock_28d") + F.col("days_unknown_28d")
    assert signals.where(days != window).isEmpty()
    assert signals.where(F.col("reorder_now") & (F.col("suggested_quantity") <= 0)).isEmpty()
    assert signals.where(~F.col("reorder_now") & (F.col("suggested_quantity") != 0)).isEmpty()
    average = F.col("units_sold_28d") / F.col("in_stock_days_28d")
    assert signals.where(F.abs(F.col("avg_daily_units_28d") - average) > 1e-9).isEmpty()
    assert not signals.where(F.col("days_out_of_stock_28d") > 0).isEmpty(), "no product ran out"
    flagged = signals.where(F.col("reorder_now")).count()
    print(f"stock_signals as of {date}: {signals.count()} products, {flagged} to reorder")


def test_audiences_hold_consenting_customers_of_the_targeted_segments(
    spark: SparkSession, lake: PipelineConfig
) -> None:
    date = as_of(spark, lake)
    audiences = gold(spark, lake, "campaign_audiences").where(F.col("as_of_date") == F.lit(date))
    customers = read_table(spark, table_path(lake.paths.lake, "silver", "customers"))
    consenting = customers.where(F.col("is_current") & F.col("marketing_opt_in")).select("customer_id")
    assert audiences.join(consenting, on="customer_id", how="left_anti").isEmpty()
    segments = gold(spark, lake, "customer_segments").where(F.col("as_of_date") == F.lit(date))
    published = segments.select("customer_id", F.col("segment").alias("published"))
    assert audiences.join(published, on="customer_id").where(F.col("segment") != F.col("published")).isEmpty()
    campaigns = {c.name: c for c in lake.campaigns.resolved()}
    for row in audiences.select("campaign", "customer_id", "group", "segment").collect():
        campaign = campaigns[row["campaign"]]
        draw = (
            int(hashlib.sha256(f"{campaign.name}|{row['customer_id']}".encode()).hexdigest()[:13], 16)
            / 16**13
        )
        assert row["group"] == ("control" if draw < campaign.control_share else TREATMENT)
        assert not campaign.segments or row["segment"] in campaign.segments
    sizes = {r["campaign"]: r["count"] for r in audiences.groupBy("campaign").count().collect()}
    print(f"campaign_audiences as of {date}: {sizes}")


def test_results_measure_each_launch_audience(spark: SparkSession, lake: PipelineConfig) -> None:
    date = as_of(spark, lake)
    results = gold(spark, lake, "campaign_results").where(F.col("as_of_date") == F.lit(date))
    started = [c for c in lake.campaigns.resolved() if c.start_date <= date]
    assert {(r["campaign"], r["group"]) for r in results.collect()} == {
        (c.name, group) for c in started for group in (TREATMENT, "control")
    }
    silver = {
        t: read_table(spark, table_path(lake.paths.lake, "silver", t))
        for t in ("orders", "order_items", "customers")
    }
    launched = launch_audiences(JobContext(spark=spark, config=lake, run_id="check"), silver, started)
    expected = {
        (r["campaign"], r["group"]): r["count"]
        for r in launched.groupBy("campaign", "group").count().collect()
    }
    for row in results.collect():
        assert row["customers"] == expected.get((row["campaign"], row["group"]), 0)
        assert row["buyers"] <= row["customers"] and row["orders"] >= row["buyers"]
        assert (
            row["days_measured"] == (row["end_date"] - row["start_date"]).days + 1 and row["end_date"] <= date
        )


def test_running_the_new_jobs_again_changes_nothing(spark: SparkSession, lake: PipelineConfig) -> None:
    before = versions(lake, spark)
    forced = run_jobs(spark, lake, NEW_JOBS, [None], force=True)
    assert versions(lake, spark) == before
    idle = run_jobs(spark, lake, NEW_JOBS, [None])
    assert [o.status for o in idle] == [SKIPPED] * len(NEW_JOBS), idle
    assert len(forced) == len(NEW_JOBS)


def _largest_treatment(spark: SparkSession, config: PipelineConfig, channel: str | None = None) -> str:
    audiences = gold(spark, config, "campaign_audiences").where(F.col("group") == TREATMENT)
    if channel:
        audiences = audiences.where(F.col("channel") == channel)
    return audiences.groupBy("campaign").count().orderBy(F.desc("count"), "campaign").first()["campaign"]


def _treatment(spark: SparkSession, config: PipelineConfig, campaign: str, date: dt.date) -> set[str]:
    rows = gold(spark, config, "campaign_audiences").where(
        (F.col("campaign") == campaign) & (F.col("as_of_date") == F.lit(date)) & (F.col("group") == TREATMENT)
    )
    return {r["customer_id"] for r in rows.select("customer_id").collect()}


def test_export_audience_writes_the_treatment_group_and_logs_who_exported_it(
    spark: SparkSession, lake: PipelineConfig, tmp_path: Path
) -> None:
    date, campaign = as_of(spark, lake), _largest_treatment(spark, lake)
    out = tmp_path / "audience.csv"
    lines: list[str] = []
    record = export_audience(spark, lake, campaign, as_of=date, destination=str(out), progress=lines.append)
    exported = pd.read_csv(out, dtype=str)
    assert list(exported.columns) == list(EXPORT_COLUMNS)
    assert set(exported["customer_id"]) == _treatment(spark, lake, campaign, date)
    assert record.rows == len(exported) and not record.with_contact
    assert f"treatment members of campaign {campaign} as of {date} without contact details" in lines[0]
    with pytest.raises(ExportError, match="no audience of"):
        export_audience(spark, lake, campaign, as_of=date - dt.timedelta(days=400), destination=str(out))


def test_export_with_contact_hashes_normalised_emails_like_ad_platforms(
    spark: SparkSession, lake: PipelineConfig, tmp_path: Path
) -> None:
    date = as_of(spark, lake)
    customers = read_table(spark, table_path(lake.paths.lake, "silver", "customers")).where("is_current")
    emails = {r["customer_id"]: r["email"] for r in customers.select("customer_id", "email").collect()}
    for channel, columns in (("email", ["email", "email_sha256"]), ("ads", ["email_sha256"])):
        campaign = _largest_treatment(spark, lake, channel)
        out = tmp_path / f"{channel}.parquet"
        record = export_audience(
            spark,
            lake,
            campaign,
            as_of=date,
            destination=str(out),
            with_contact=True,
            progress=lambda _: None,
        )
        exported = pd.read_parquet(out)
        assert list(exported.columns) == [*EXPORT_COLUMNS, *columns]
        assert set(exported["customer_id"]) == _treatment(spark, lake, campaign, date)
        assert record.rows == len(exported) and record.with_contact
        for row in exported.itertuples():
            expected = hashlib.sha256(emails[row.customer_id].strip().lower().encode()).hexdigest()
            assert row.email_sha256 == expected
            if channel == "email":
                assert row.email == emails[row.customer_id].strip().lower()
        assert stat.S_IMODE(os.stat(out).st_mode) == 0o600  # personal data: the owner's only
    log = read_table(spark, table_path(lake.paths.lake, "ops", EXPORTS_TABLE))
    assert log.where("with_contact").count() == 2 and log.where("NOT with_contact").count() == 1


def test_the_erasure_deletes_audience_rows_and_names_the_exports(
    spark: SparkSession, lake: PipelineConfig
) -> None:
    """The erasure's steps on the new tables. The whole ``forget-customer`` over every table of
    the reference lake, this one included, is tests/integration/test_erasure.py's (42 s more here)."""
    first = read_table(spark, table_path(lake.paths.lake, "ops", EXPORTS_TABLE)).collect()[0]
    customer_id = sorted(_treatment(spark, lake, first["campaign"], first["as_of_date"]))[0]
    member_rows = gold(spark, lake, "campaign_audiences").where(F.col("customer_id") == customer_id).count()
    tables = lake_tables(spark, lake.paths.lake, exclude=[f"ops.{ERASURES_TABLE}"])
    needles = local_frame(
        spark, [collect_identifiers(spark, tables, customer_id).needles_row("salt")], NEEDLES_SCHEMA
    )
    plans = {AUDIENCES_TABLE: plan_scrub(AUDIENCES_TABLE, GOLD_SCHEMAS["campaign_audiences"])}
    assert AUDIENCES_TABLE in CUSTOMER_TABLES
    assert first["destination"] in collect_export_mentions(spark, tables, plans, needles)
    assert scrub(spark, tables[AUDIENCES_TABLE], plans[AUDIENCES_TABLE], needles) == (member_rows, 0)
    assert gold(spark, lake, "campaign_audiences").where(F.col("customer_id") == customer_id).isEmpty()
    assert collect_export_mentions(spark, tables, plans, needles) == []
    report = ErasureReport(
        "e1", "k" * 64, keep_history=True, found=True, exported_files=[first["destination"]]
    )
    assert "audience exports (files outside the lake, not changed): 1 files" in report.summary()
