"""Silver job ``silver.clicks``: new bronze click events into ``<lake>/silver/clicks``.

A short recipe; the logic lives in :mod:`pipeline_lib.silver.clicks` and
:mod:`pipeline_lib.quality.rules` (design: ``docs/clickstream.md``):

1. read the bronze rows appended since the last run (change data feed, watermark
   ``silver.clicks`` / ``bronze.clicks``); stop, writing nothing, when there are none;
2. clean, check the ``quality.rules.clicks`` rules, write metrics and quarantine, stop on a
   breached ``fail`` rule;
3. deduplicate by ``event_id`` (within the batch, and against silver);
4. re-sessionize and re-stitch the new events with their silver context;
5. one MERGE into silver: insert the new events, update the silver events whose session
   or stitched customer changed;
6. check the reconciliation ``bronze rows = inserted + quarantined + duplicates removed``,
   then save the watermark, last.

    ecom-pipeline run --layer silver --job clicks
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.framework import JobContext, JobResult
from pipeline_lib.config import QualityRule
from pipeline_lib.io.delta import (
    commit_metadata,
    create_empty_table,
    read_table,
    table_exists,
    table_version,
    write_table,
)
from pipeline_lib.io.quality import (
    bronze_record_of_failures_only,
    measured_once,
    resolve_all_but,
    write_quality_metrics,
    write_quarantine,
)
from pipeline_lib.ops.watermarks import (
    CDF_PROPERTIES,
    consumed_metadata,
    last_processed_version,
    read_appended_rows,
    record_consumption,
)
from pipeline_lib.quality.rules import (
    enforce_thresholds,
    quality_metrics,
    split_by_quality,
    with_rule_results,
)
from pipeline_lib.silver.clicks import (
    CLICK_MUTABLE_COLUMNS,
    DEFAULT_CONTEXT_HOURS,
    IS_NEW,
    SILVER_CLICKS_SCHEMA,
    clean_clicks,
    filter_unseen_clicks,
    plan_click_changes,
    rank_clicks,
    select_click_context,
    to_silver_clicks,
)
from pipeline_lib.silver.common import CONFLICT, KEPT, VERSION_OUTCOME, count_outcomes
from pipeline_lib.silver.schemas import FAILED_RULES

TABLE = "clicks"
CONSUMER = "silver.clicks"
SOURCE = "bronze.clicks"


class ReconciliationError(RuntimeError):
    """Bronze rows read do not equal silver rows inserted + quarantined + duplicates removed."""


def silver_clicks(ctx: JobContext) -> JobResult:
    """Click events: typed, deduplicated, sessionized and stitched; one row per event_id."""
    spark, lake, settings = ctx.spark, ctx.config.paths.lake, ctx.config.pipeline
    bronze_path, silver_path = ctx.path("bronze", TABLE), ctx.path("silver", TABLE)
    rules = ctx.config.quality.rules_for(TABLE)
    if not rules:
        raise ValueError("no quality rules for clicks: set quality.rules.clicks (see docs/clickstream.md)")
    full = ctx.full_refresh  # rebuild silver from all of bronze
    latest = table_version(spark, bronze_path)
    if latest is None:  # the tracker has not delivered: silver.clicks is empty, not missing
        created = create_empty_table(
            spark, silver_path, SILVER_CLICKS_SCHEMA, partition_by=["event_date"], properties=CDF_PROPERTIES
        )
        ctx.progress(
            f"{CONSUMER}: clicks have not been delivered yet (no bronze.clicks); "
            + ("silver.clicks created empty" if created else "nothing to do")
        )
        return JobResult(details={"skipped": "no bronze.clicks"})
    done = None if full else last_processed_version(spark, lake, CONSUMER, SOURCE)
    if latest is not None and done is not None and done >= latest:
        ctx.progress(f"{CONSUMER}: bronze.clicks unchanged since version {done}; nothing to do")
        return JobResult(details={"skipped": "no new bronze commits", "bronze_version": done})
    bronze_rows, latest = read_appended_rows(spark, bronze_path, done)
    silver_version = None if full else table_version(spark, silver_path)
    # Pinned to one version, so that every computation of the plan sees the same silver.
    silver = None if silver_version is None else read_table(spark, silver_path, version=silver_version)

    cleaned = bronze_rows.transform(clean_clicks, source_timezone=settings.source_timezone)
    checked = (
        with_rule_results(cleaned, rules, plausible_time=ctx.config.quality.plausible_time)
        .transform(bronze_record_of_failures_only)
        .persist()
    )
    ranked: DataFrame | None = None
    planned: DataFrame | None = None
    try:
        _write_quality(ctx, checked, rules)
        valid, _ = split_by_quality(checked)
        # Counted, then read again to plan the changes: deduplicate once (a shuffle of the batch).
        # Only the silver columns go on: the delivered row (``_bronze``) was for the rules and
        # quarantine, and shuffling and caching it doubled the bytes of both.
        ranked = valid.select(*SILVER_CLICKS_SCHEMA.fieldNames()).transform(rank_clicks).persist()
        batch = ranked.where(F.col(VERSION_OUTCOME) == KEPT).drop(VERSION_OUTCOME)
        new_clicks = batch if silver is None else batch.transform(filter_unseen_clicks, seen=silver)
        planned = new_clicks.transform(
            plan_click_changes,
            context=_context_of(new_clicks, silver),
            session_gap_minutes=settings.session_gap_minutes,
        ).persist()
        outcomes = count_outcomes(ranked)
        counts = {
            **_count_checked(checked),
            "unique_in_batch": outcomes[KEPT],
            "conflicts_in_batch": outcomes[CONFLICT],
            **_count_planned(planned),
        }
        state = consumed_metadata(CONSUMER, {SOURCE: latest}, ctx.run_id)
        written = (
            _write_silver(planned, silver_path, replace=full, user_metadata=state)
            if counts["new_events"] or silver is None
            else {}
        )
    finally:
        for cached in (checked, ranked, planned):
            if cached is not None:
                cached.unpersist()

    details = _reconcile(counts, written)
    record_consumption(spark, lake, CONSUMER, {SOURCE: latest}, ctx.run_id)  # in the silver commit if any
    silver_now = table_version(spark, silver_path)
    return JobResult(
        rows_read=counts["bronze_rows"],
        rows_written=details["inserted"] + details["updated"],
        rows_quarantined=counts["quarantined"],
        delta_versions={} if silver_now is None else {silver_path: silver_now},
        details={**details, "bronze_versions": [done, latest]},
    )


def _write_quality(ctx: JobContext, checked: DataFrame, rules: Sequence[QualityRule]) -> None:
    """Append the rule metrics and quarantine the bad rows; then stop on a breached ``fail`` rule.

    The stop comes before anything reaches silver and before the watermark moves, so the
    same bronze rows are read again after the fix (quarantine does not take them twice).
    """
    metrics = measured_once(quality_metrics(checked, rules, table=TABLE, run_id=ctx.run_id))
    write_quality_metrics(metrics, ctx.config.paths.lake)
    _, quarantined = split_by_quality(checked)
    write_quarantine(quarantined, ctx.config.paths.lake, TABLE, run_id=ctx.run_id)
    if ctx.full_refresh:  # every bronze row was checked again: the rows that pass now leave quarantine
        resolve_all_but(quarantined, ctx.config.paths.lake, TABLE, run_id=ctx.run_id)
    enforce_thresholds(
        metrics,
        rules,
        default_threshold=ctx.config.quality.fail_threshold,
        min_rows=ctx.config.quality.threshold_min_rows,
    )


def _count_checked(checked: DataFrame) -> dict[str, int]:
    """Bronze rows read, quarantined and valid, in one pass."""
    is_quarantined = (F.size(FAILED_RULES) > 0).cast("long")
    row = checked.agg(F.count(F.lit(1)).alias("rows"), F.sum(is_quarantined).alias("bad")).first()
    rows, bad = int(row["rows"]), int(row["bad"] or 0)  # type: ignore[index]
    return {"bronze_rows": rows, "quarantined": bad, "valid": rows - bad}


def _count_planned(planned: DataFrame) -> dict[str, int]:
    """New events to insert and silver events to update, in one pass."""
    is_new = F.col(IS_NEW).cast("long")
    row = planned.agg(F.count(F.lit(1)).alias("rows"), F.sum(is_new).alias("new")).first()
    rows, new = int(row["rows"]), int(row["new"] or 0)  # type: ignore[index]
    return {"new_events": new, "context_updates": rows - new}


def _context_of(new_clicks: DataFrame, silver: DataFrame | None) -> DataFrame:
    """The silver events near the new ones; the date filter lets Delta skip other partitions."""
    if silver is None:
        return new_clicks.limit(0)
    span = _collect_event_date_span(new_clicks)
    if span is None:
        return silver.limit(0)
    margin = dt.timedelta(days=-(-DEFAULT_CONTEXT_HOURS // 24) + 1)  # whole days, rounded up, plus one
    nearby = silver.where(F.col("event_date").between(span[0] - margin, span[1] + margin))
    return nearby.transform(select_click_context, new_clicks=new_clicks, context_hours=DEFAULT_CONTEXT_HOURS)


def _collect_event_date_span(clicks: DataFrame) -> tuple[dt.date, dt.date] | None:
    """First and last ``event_date`` of the batch (collects one row), None when empty."""
    row = clicks.agg(F.min("event_date").alias("first"), F.max("event_date").alias("last")).first()
    if row is None or row["first"] is None:
        return None
    return row["first"], row["last"]


def _write_silver(planned: DataFrame, path: str, *, replace: bool, user_metadata: str) -> dict[str, int]:
    """Insert the new events and update the changed silver ones in ONE commit; Delta's counts.

    With ``replace`` (full refresh) or no table yet, the new events become the whole table.
    """
    spark: SparkSession = planned.sparkSession
    if replace or not table_exists(spark, path):
        rows = planned.where(F.col(IS_NEW)).transform(to_silver_clicks)
        write_table(
            rows,
            path,
            mode="overwrite",
            partition_by=["event_date"],
            properties=CDF_PROPERTIES,
            overwrite_schema=replace,
            user_metadata=user_metadata,
        )
        return {"inserted": read_table(spark, path).count(), "updated": 0}
    columns = SILVER_CLICKS_SCHEMA.fieldNames()
    mutable = {c: f"s.`{c}`" for c in CLICK_MUTABLE_COLUMNS}
    with commit_metadata(spark, user_metadata):
        outcome = (
            DeltaTable.forPath(spark, path)
            .alias("t")
            .merge(planned.alias("s"), "t.event_id = s.event_id")
            .whenMatchedUpdate(condition=f"NOT s.{IS_NEW}", set=mutable)
            .whenNotMatchedInsert(condition=f"s.{IS_NEW}", values={c: f"s.`{c}`" for c in columns})
            .execute()
            .first()
        )
    return {"inserted": int(outcome["num_inserted_rows"]), "updated": int(outcome["num_updated_rows"])}


def _reconcile(counts: dict[str, int], written: dict[str, int]) -> dict[str, Any]:
    """Check ``bronze rows = inserted + quarantined + duplicates removed``; the run's details.

    Raises:
        ReconciliationError: The counts do not add up (a bug, never bad data).
    """
    inserted, updated = written.get("inserted", 0), written.get("updated", 0)
    # A copy of an event_id with other content than the kept one lost a tie: a conflict, not a copy.
    duplicates_in_batch = counts["valid"] - counts["unique_in_batch"] - counts["conflicts_in_batch"]
    already_in_silver = counts["unique_in_batch"] - counts["new_events"]
    details: dict[str, Any] = {
        **counts,
        "inserted": inserted,
        "updated": updated,
        "duplicates_in_batch": duplicates_in_batch,
        "duplicates_already_in_silver": already_in_silver,
        "duplicates_removed": duplicates_in_batch + already_in_silver,
        "conflicts": counts["conflicts_in_batch"],
    }
    accounted = inserted + counts["quarantined"] + details["duplicates_removed"] + details["conflicts"]
    details["reconciled"] = counts["bronze_rows"] == accounted and updated == counts["context_updates"]
    if not details["reconciled"]:
        raise ReconciliationError(
            f"clicks do not reconcile: {counts['bronze_rows']} bronze rows, but {inserted} inserted + "
            f"{counts['quarantined']} quarantined + {details['duplicates_removed']} duplicates = {accounted} "
            f"({updated} silver rows updated for {counts['context_updates']} planned)"
        )
    return details
