"""The steps every silver job is made of: read new bronze rows, check quality, write, reconcile.

A silver job (``jobs.silver``) chains them: :func:`new_bronze_rows` (the rows appended
since the job's last run, or all of them on a full refresh), :func:`check_quality` (rules,
quarantine, metrics, thresholds), the layer's pure transformations, a write
(:func:`write_silver` or :func:`merge_history` for SCD2 tables), then :func:`finish`, which
reconciles the counts (rows read = written + quarantined + duplicates + conflicts +
superseded/unchanged) and records what was consumed. Order lines add the retry of lines
quarantined while their order was unknown (:func:`with_lines_awaiting_orders`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline_lib.bronze.database import is_deletion
from pipeline_lib.bronze.schemas import INGEST_DATE, LANDING_SOURCES, RESCUED_DATA, SOURCE_FILE
from pipeline_lib.io.delta import (
    create_empty_table,
    read_table,
    replace_groups,
    table_exists,
    table_version,
    upsert,
    write_table,
)
from pipeline_lib.io.frames import local_frame, same_rows
from pipeline_lib.io.quality import (
    measured_once,
    open_quarantine,
    resolve_all_but,
    write_quality_metrics,
    write_quarantine,
)
from pipeline_lib.ops.context import JobContext, JobResult
from pipeline_lib.ops.watermarks import (
    CDF_PROPERTIES,
    consumed_metadata,
    last_processed_version,
    read_appended_rows,
    record_consumption,
)
from pipeline_lib.privacy.pii import PII_COLUMNS
from pipeline_lib.quality.rules import (
    enforce_thresholds,
    outside_plausible_time,
    quality_metrics,
    split_by_quality,
    with_rule_results,
)
from pipeline_lib.silver.deletions import IS_DELETION, deletion_versions
from pipeline_lib.silver.history import (
    FROM_INCOMING,
    IS_CURRENT,
    VALID_TO,
    build_scd2_history,
    history_counts,
)
from pipeline_lib.silver.orders import clean_orders, lines_awaiting_orders, order_versions
from pipeline_lib.silver.schemas import FAILED_RULES, SILVER_SCHEMAS

# The rule that quarantines a line whose order is not (yet) in silver.orders (conf/quality.yaml).
ORDER_KNOWN_RULE = "order_known"


@dataclass
class SilverBatch:
    """The bronze rows a silver job reads in this run, and what they are."""

    rows: DataFrame
    source_path: str
    latest_version: int | None  # None: no new bronze rows (only quarantined rows retried)
    read: int  # the number of new bronze rows: counted once, they are reconciled at the end
    retried: int = 0  # quarantined rows checked again (lines whose order has arrived)
    retried_files: tuple[str, ...] = ()  # their delivery files
    consumer: str = ""  # the job, silver.<table>
    run_id: str = ""

    @property
    def source(self) -> str:
        """The bronze table read, ``bronze.<source>``."""
        return f"bronze.{self.source_path.rstrip('/').rsplit('/', 1)[-1]}"

    @property
    def consumed(self) -> dict[str, int]:
        return {} if self.latest_version is None else {self.source: self.latest_version}

    @property
    def state(self) -> str | None:
        """What the silver commit records it consumed (None: no new bronze rows were read)."""
        return consumed_metadata(self.consumer, self.consumed, self.run_id) if self.consumed else None


def with_lines_awaiting_orders(
    ctx: JobContext, batch: SilverBatch | None, orders: DataFrame
) -> SilverBatch | None:
    """``batch`` plus the quarantined lines whose order has arrived since (none on a full refresh,
    which reads every bronze row again)."""
    quarantined = (
        None if ctx.full_refresh else open_quarantine(ctx.spark, ctx.config.paths.lake, "order_items")
    )
    if quarantined is None:
        return batch
    bronze_columns = LANDING_SOURCES["order_items"].bronze_schema.fieldNames()
    retried = (
        quarantined.transform(lines_awaiting_orders, orders=orders, rule=ORDER_KNOWN_RULE)
        .select(*bronze_columns)
        .localCheckpoint()
    )
    files = tuple(sorted(r[0] for r in retried.select(SOURCE_FILE).distinct().collect()))  # bounded
    if not files:
        return batch
    count = retried.count()
    ctx.progress(f"silver.order_items: {count} quarantined lines have their order now; checking them again")
    if batch is None:
        path = ctx.path("bronze", "order_items")
        return SilverBatch(
            rows=retried, source_path=path, latest_version=None, read=0, retried=count, retried_files=files
        )
    rows = batch.rows.select(*bronze_columns).unionByName(retried)
    return dataclasses.replace(batch, rows=rows, retried=count, retried_files=files)


def lines_still_awaiting_orders(ctx: JobContext) -> int:
    """Open quarantined lines that failed only for their unknown order (one count)."""
    quarantined = open_quarantine(ctx.spark, ctx.config.paths.lake, "order_items")
    if quarantined is None:
        return 0
    return quarantined.where(F.col(FAILED_RULES) == F.array(F.lit(ORDER_KNOWN_RULE))).count()


def consumer_of(table: str) -> str:
    return f"silver.{table}"


def new_bronze_rows(ctx: JobContext, source: str, table: str) -> SilverBatch | None:
    """The bronze rows appended since this job's watermark (all of them on a full refresh)."""
    path = ctx.path("bronze", source)
    if not table_exists(ctx.spark, path):
        created = create_empty_table(
            ctx.spark, ctx.path("silver", table), SILVER_SCHEMAS[table], properties=CDF_PROPERTIES
        )
        ctx.progress(
            f"silver.{table}: {source} has not delivered anything yet (no bronze.{source}); "
            + ("silver." + table + " created empty" if created else "nothing to do")
        )
        return None
    after = (
        None
        if ctx.full_refresh
        else last_processed_version(ctx.spark, ctx.config.paths.lake, consumer_of(table), f"bronze.{source}")
    )
    rows, latest = read_appended_rows(ctx.spark, path, after)
    read = 0 if latest is None else rows.count()
    if not read:
        return None
    return SilverBatch(
        rows=rows,
        source_path=path,
        latest_version=latest,
        read=read,
        consumer=consumer_of(table),
        run_id=ctx.run_id,
    )


def split_deletions(batch: SilverBatch) -> tuple[SilverBatch, DataFrame]:
    """The batch without its tombstones (rows deleted at the source), and the tombstones.

    Only an extract from the shop's database writes tombstones (docs/postgres.md, "Deletes");
    they are counted among the rows read (``batch.read``) and never checked against the
    quality rules.
    """
    tombstone = F.col(RESCUED_DATA).isNotNull() & is_deletion()
    return dataclasses.replace(batch, rows=batch.rows.where(~tombstone)), batch.rows.where(tombstone)


def bronze_deletions(ctx: JobContext, source: str) -> DataFrame:
    """Every tombstone bronze ``source`` holds (re-applied when a key's history is rebuilt)."""
    path = ctx.path("bronze", source)
    schema = LANDING_SOURCES[source].bronze_schema
    if not table_exists(ctx.spark, path):
        return local_frame(ctx.spark, [], schema)
    rows = read_table(ctx.spark, path)
    return rows.where(F.col(RESCUED_DATA).isNotNull() & is_deletion()).select(*schema.fieldNames())


def check_quality(
    ctx: JobContext,
    table: str,
    rows: DataFrame,
    *,
    references: Mapping[str, DataFrame] | None = None,
    unmeasured_files: Sequence[str] = (),
) -> tuple[DataFrame, int]:
    """Check the rules, write quarantine and metrics, enforce thresholds; return the valid rows.

    Rows of ``unmeasured_files`` (quarantined rows checked again) are not measured again: their
    delivery's metrics stay those of its first check. A full refresh marks resolved the
    quarantined rows that no longer fail.
    """
    rules = ctx.config.quality.rules_for(table)
    checked = with_rule_results(
        rows, rules, references=references, plausible_time=ctx.config.quality.plausible_time
    ).localCheckpoint()
    measured = (
        checked.where(~F.col(SOURCE_FILE).isin(list(unmeasured_files))) if unmeasured_files else checked
    )
    quarantined = write_quality_results(ctx, table, checked, measured=measured)
    valid, _ = split_by_quality(checked)
    return valid, quarantined.count()


def write_quality_results(
    ctx: JobContext, table: str, checked: DataFrame, *, measured: DataFrame | None = None
) -> DataFrame:
    """Append the rule metrics of ``measured`` (default ``checked``), quarantine the bad rows of
    ``checked``, then stop on a breached ``fail`` rule; the quarantined rows.

    The stop comes before anything reaches silver and before the watermark moves, so the
    same bronze rows are read again after the fix (quarantine does not take them twice). A
    full refresh checked every bronze row again: the rows that pass now leave quarantine.
    """
    rules = ctx.config.quality.rules_for(table)
    metrics = measured_once(
        quality_metrics(checked if measured is None else measured, rules, table=table, run_id=ctx.run_id)
    )
    write_quality_metrics(metrics, ctx.lake)
    _, quarantined = split_by_quality(checked)
    write_quarantine(quarantined, ctx.lake, table, run_id=ctx.run_id)
    if ctx.full_refresh:
        resolve_all_but(quarantined, ctx.lake, table, run_id=ctx.run_id)
    enforce_thresholds(
        metrics,
        rules,
        default_threshold=ctx.config.quality.fail_threshold,
        min_rows=ctx.config.quality.threshold_min_rows,
    )
    return quarantined


def recorded_table(ctx: JobContext, path: str, table: str, *, full: bool = False) -> DataFrame:
    """A silver table as recorded.

    On a full refresh it is empty, unless ``full``: set it for another table, which the same
    run has already rebuilt (fx rates for orders, orders and products for order lines).
    """
    if table_exists(ctx.spark, path) and (full or not ctx.full_refresh):
        return read_table(ctx.spark, path)
    return local_frame(ctx.spark, [], SILVER_SCHEMAS[table])


def orders_delivered_with(ctx: JobContext, items: DataFrame) -> DataFrame:
    """Order versions in the bronze order deliveries of the same ingest dates as ``items``."""
    orders_path = ctx.path("bronze", "orders")
    if not table_exists(ctx.spark, orders_path):
        return local_frame(
            ctx.spark, [], f"order_id string, {INGEST_DATE} date, delivered_updated_at timestamp"
        )
    dates = [row[0] for row in items.select(INGEST_DATE).distinct().collect()]  # bounded: deliveries
    bronze_orders = read_table(ctx.spark, orders_path).where(F.col(INGEST_DATE).isin(dates))
    cleaned = bronze_orders.transform(clean_orders, source_timezone=ctx.config.pipeline.source_timezone)
    # A placeholder updated_at (9999-12-31) is no version: lines delivered with it must not
    # outrank every later version of their order (silver.orders quarantines that row too).
    plausible = ~outside_plausible_time(cleaned, ["updated_at"], ctx.config.quality.plausible_time)
    return cleaned.where(plausible).transform(order_versions)


def as_versions(rows: DataFrame, to_contract: Any) -> DataFrame:
    """Contract columns of new SCD2 versions (``valid_to``/``is_current`` are left to the history)."""
    placeholders = {VALID_TO: F.lit(None).cast("timestamp"), IS_CURRENT: F.lit(None).cast("boolean")}
    return to_contract(rows.withColumns(placeholders)).drop(VALID_TO, IS_CURRENT)


def merge_history(
    ctx: JobContext,
    incoming: DataFrame,
    path: str,
    *,
    table: str,
    keys: Sequence[str],
    tracked: Sequence[str],
    properties: dict[str, str],
    state: str | None,
    deletions: DataFrame | None = None,
) -> tuple[dict[str, int], dict[str, int], int]:
    """Rebuild the SCD2 history of the keys in ``incoming`` and replace them in the table.

    Args:
        deletions: Cleaned deletions (:func:`~pipeline_lib.silver.deletions.clean_deletions`)
            of the keys to rebuild, all of them (a rebuild re-applies earlier ones): each closes
            the version before it; their keys are rebuilt too. None: no deletions (files).

    Returns:
        The fates of the bronze rows that made no new version (duplicates, conflicts lost,
        unchanged), other figures (new and delisted versions), and the versions written.
    """
    existing = recorded_table(ctx, path, table)
    incoming = incoming.localCheckpoint()
    if deletions is None:
        history = build_scd2_history(
            existing, incoming, keys=keys, tracked=tracked, prefer=[F.col(INGEST_DATE).desc_nulls_last()]
        ).localCheckpoint()
        versions = history
    else:
        # A deletion is an observation of the key: tracked as a state of its own, it closes the
        # version before it (valid_to) and starts a run that a later insert ends; then dropped.
        deleted = deletion_versions(deletions, like=incoming, keys=keys)
        history = build_scd2_history(
            existing.withColumn(IS_DELETION, F.lit(False)),
            incoming.withColumn(IS_DELETION, F.lit(False)).unionByName(deleted),
            keys=keys,
            tracked=[*tracked, IS_DELETION],
            prefer=[F.col(INGEST_DATE).desc_nulls_last()],
        ).localCheckpoint()
        versions = history.where(~F.col(IS_DELETION)).drop(IS_DELETION)
    received, distinct_contents, distinct_starts, new_versions, delisted_versions = history_counts(
        incoming, versions, keys=keys
    )
    rows = versions.drop(FROM_INCOMING)
    if ctx.full_refresh or not table_exists(ctx.spark, path):
        write_table(
            rows,
            path,
            mode="overwrite",
            properties=properties,
            overwrite_schema=ctx.full_refresh,
            user_metadata=state,
        )
    elif not same_rows(rows, existing.join(history.select(*keys).distinct(), on=list(keys), how="left_semi")):
        affected = history.select(*keys).distinct()
        replace_groups(
            rows,
            path,
            row_keys=[*keys, "valid_from"],
            scope=affected,
            properties=properties,
            user_metadata=state,
        )
    from_bronze_versions = new_versions - delisted_versions
    conflicts = distinct_contents - distinct_starts
    report_conflicts(ctx, table, conflicts, "one key, the same updated_at, other content")
    counts = {
        "duplicates_removed": received - distinct_contents,
        "conflicts": conflicts,
        "unchanged": distinct_starts - from_bronze_versions,
    }
    info = {"new_versions": from_bronze_versions, "delisted_versions": delisted_versions}
    return counts, info, from_bronze_versions


def stats_columns(table: str) -> list[str]:
    """Columns of a silver table that Delta may keep min/max statistics of: none with personal data."""
    excluded = {*PII_COLUMNS, "city"}  # a city with a birth date or a name can point at a person
    # Delta keeps statistics of atomic types only (no booleans, arrays or structs).
    kept = (T.StringType, T.DateType, T.TimestampType, T.DecimalType, T.IntegerType, T.LongType)
    return [f.name for f in SILVER_SCHEMAS[table] if f.name not in excluded and isinstance(f.dataType, kept)]


def nothing_to_do() -> JobResult:
    return JobResult(details={"skipped": "no new bronze rows"})


def finish(
    ctx: JobContext,
    table: str,
    batch: SilverBatch,
    path: str,
    *,
    written: int,
    quarantined: int,
    counts: dict[str, int],
    info: dict[str, Any] | None = None,
) -> JobResult:
    """Reconcile, save the watermark (last), and report.

    ``counts`` are the fates of the bronze rows read that were neither written nor
    quarantined (duplicates, conflicts lost, superseded, unchanged): they must add up with
    ``written`` and ``quarantined`` to the rows read. ``info`` holds other figures of the run.
    """
    read = batch.read + batch.retried
    accounted = written + quarantined + sum(counts.values())
    details: dict[str, Any] = {
        "bronze_rows_read": batch.read,
        "written": written,
        "quarantined": quarantined,
        **counts,
        **(info or {}),
        "reconciled": read == accounted,
        "bronze_version": batch.latest_version,
    }
    if read != accounted:
        raise RuntimeError(f"silver.{table}: reconciliation failed: {details}")
    # The silver commit carries it; when nothing was written, the log takes it.
    record_consumption(ctx.spark, ctx.config.paths.lake, consumer_of(table), batch.consumed, ctx.run_id)
    versions = {
        p: v for p in (path, ctx.path("quarantine", table)) if (v := table_version(ctx.spark, p)) is not None
    }
    return JobResult(
        rows_read=read,
        rows_written=written,
        rows_quarantined=quarantined,
        delta_versions=versions,
        details=details,
    )


def rebuild_silver(rows: DataFrame, path: str, *, state: str | None) -> None:
    """A full refresh: ``rows`` become the whole table, in one commit, schema included."""
    write_table(
        rows,
        path,
        mode="overwrite",
        properties=CDF_PROPERTIES,
        overwrite_schema=True,
        user_metadata=state,
    )


def write_silver(
    ctx: JobContext,
    rows: DataFrame,
    path: str,
    *,
    keys: Sequence[str],
    update_condition: str,
    state: str | None,
) -> None:
    """Overwrite the table on a full refresh, else upsert ``rows`` by ``keys``: a match is
    updated when ``update_condition`` holds (e.g. the row is newer)."""
    if ctx.full_refresh:
        rebuild_silver(rows, path, state=state)
    else:
        upsert(
            rows,
            path,
            keys=keys,
            properties=CDF_PROPERTIES,
            update_condition=update_condition,
            user_metadata=state,
        )


def replace_silver_groups(
    ctx: JobContext, rows: DataFrame, path: str, *, row_keys: Sequence[str], state: str | None
) -> None:
    """Overwrite the table on a full refresh, else replace the groups of ``rows``' first key."""
    if ctx.full_refresh:
        rebuild_silver(rows, path, state=state)
    else:
        replace_groups(rows, path, row_keys=row_keys, properties=CDF_PROPERTIES, user_metadata=state)


def report_conflicts(
    ctx: JobContext, table: str, conflicts: int, what: str, rule: str = "content hash"
) -> None:
    """A progress line when the tie rule had to choose between rows that differ."""
    if conflicts:
        ctx.progress(
            f"silver.{table}: {conflicts} conflicts ({what}) resolved by the tie rule: latest delivery, "
            f"then {rule} (docs/silver.md)"
        )
