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

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline_lib.io.delta import (
    create_empty_table,
    insert_or_update,
    read_table,
    table_exists,
    table_version,
    write_table,
)
from pipeline_lib.io.quality import bronze_record_of_failures_only
from pipeline_lib.ops.context import JobContext, JobResult
from pipeline_lib.ops.watermarks import (
    CDF_PROPERTIES,
    consumed_metadata,
    last_processed_version,
    read_appended_rows,
    record_consumption,
)
from pipeline_lib.quality.rules import split_by_quality, with_rule_results
from pipeline_lib.silver.clicks import (
    CLICK_MUTABLE_COLUMNS,
    IS_NEW,
    SILVER_CLICKS_SCHEMA,
    clean_clicks,
    click_context,
    count_checked,
    count_planned,
    filter_unseen_clicks,
    merge_target_condition,
    plan_click_changes,
    rank_clicks,
    reconcile_clicks,
    to_silver_clicks,
)
from pipeline_lib.silver.common import CONFLICT, KEPT, VERSION_OUTCOME, count_outcomes
from pipeline_lib.silver.steps import write_quality_results

TABLE = "clicks"
CONSUMER = "silver.clicks"
SOURCE = "bronze.clicks"


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
    new_clicks: DataFrame | None = None
    planned: DataFrame | None = None
    try:
        write_quality_results(ctx, TABLE, checked)
        valid, _ = split_by_quality(checked)
        # Counted, then read again to plan the changes: deduplicate once (a shuffle of the batch).
        # Only the silver columns go on: the delivered row (``_bronze``) was for the rules and
        # quarantine, and shuffling and caching it doubled the bytes of both.
        ranked = valid.select(*SILVER_CLICKS_SCHEMA.fieldNames()).transform(rank_clicks).persist()
        outcomes = count_outcomes(ranked)  # fills the cache: the anti-join reads the batch twice
        batch = ranked.where(F.col(VERSION_OUTCOME) == KEPT).drop(VERSION_OUTCOME)
        # Read three times (its date span, the silver context, the plan): the anti-join with
        # silver's event_ids runs once. (Without silver the batch is already cached.)
        new_clicks = (
            batch
            if silver is None
            else batch.transform(
                filter_unseen_clicks, seen=silver, broadcast=outcomes[KEPT] <= settings.broadcast_max_rows
            ).persist()
        )
        planned = new_clicks.transform(
            plan_click_changes,
            context=click_context(new_clicks, silver),
            session_gap_minutes=settings.session_gap_minutes,
        ).persist()
        counts = {
            **count_checked(checked),
            "unique_in_batch": outcomes[KEPT],
            "conflicts_in_batch": outcomes[CONFLICT],
            **count_planned(planned),
        }
        state = consumed_metadata(CONSUMER, {SOURCE: latest}, ctx.run_id)
        written = (
            _write_silver(planned, silver_path, replace=full, user_metadata=state)
            if counts["new_events"] or silver is None
            else {}
        )
    finally:
        for cached in (checked, ranked, new_clicks, planned):
            if cached is not None:
                cached.unpersist()

    details = reconcile_clicks(counts, written)
    record_consumption(spark, lake, CONSUMER, {SOURCE: latest}, ctx.run_id)  # in the silver commit if any
    silver_now = table_version(spark, silver_path)
    return JobResult(
        rows_read=counts["bronze_rows"],
        rows_written=details["inserted"] + details["updated"],
        rows_quarantined=counts["quarantined"],
        delta_versions={} if silver_now is None else {silver_path: silver_now},
        details={**details, "bronze_versions": [done, latest]},
    )


def _write_silver(planned: DataFrame, path: str, *, replace: bool, user_metadata: str) -> dict[str, int]:
    """Insert the new events and update the changed silver ones in ONE commit; Delta's counts.

    With ``replace`` (full refresh) or no table yet, the new events become the whole table.
    Otherwise the MERGE reads only the ``event_date`` partitions the plan touches: every new
    event was checked against the whole table before (:func:`filter_unseen_clicks`).
    """
    spark = planned.sparkSession
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
    counts = insert_or_update(
        planned,
        path,
        keys=["event_id"],
        is_new=IS_NEW,
        insert_columns=SILVER_CLICKS_SCHEMA.fieldNames(),
        update_columns=CLICK_MUTABLE_COLUMNS,
        target_condition=merge_target_condition(planned),
        user_metadata=user_metadata,
    )
    return {"inserted": counts.inserted, "updated": counts.updated}
