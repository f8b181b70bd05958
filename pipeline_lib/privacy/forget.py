"""The right to erasure, the steps: find a customer, scrub every table, verify, drop the history.

The pure parts (what identifies a customer, how each table is scrubbed) are in
:mod:`pipeline_lib.privacy.erasure`; the raw-file searches in :mod:`pipeline_lib.io.lake_files`.
The command ``ecom-pipeline forget-customer`` (``jobs.erasure``) chains these steps with the
gold jobs that recompute what depends on the customer. ``consumers`` maps every incremental
consumer (a silver or gold job) to the tables it reads: the erasure must not pull files from
under a consumer that has not read them, and moves caught-up consumers past its own commits.
Design and limits: ``docs/erasure.md``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline_lib.config import PipelineConfig
from pipeline_lib.io.delta import (
    OPS_TABLE_PROPERTIES,
    MergeBuilder,
    merge,
    purge_deleted_rows,
    read_changes,
    read_table,
    table_exists,
    table_path,
    table_properties,
    table_version,
    update_rows,
    vacuum,
    write_table,
)
from pipeline_lib.io.frames import local_frame
from pipeline_lib.io.lake_files import (
    landing_files_matching,
    log_files_matching,
    read_data_files,
    unreferenced_files,
)
from pipeline_lib.ops.schemas import ERASURES_SCHEMA, ERASURES_TABLE, EXPORTS_TABLE
from pipeline_lib.ops.watermarks import processed_versions, save_watermarks
from pipeline_lib.privacy.erasure import STATS_PREFIX_CHARS, CustomerIdentifiers, ScrubPlan, plan_scrub
from pipeline_lib.privacy.pii import hmac_key

Consumers = Mapping[str, Sequence[str]]  # consumer job -> the ``layer.table`` sources it reads
Progress = Callable[[str], None]

ERASURE_LOCK = "ops.forget_customer"
STATUS_DONE = "done"
STATUS_PENDING = "pending_vacuum"
STATUS_NOT_FOUND = "not_found"
# Gold jobs that recompute what depends on a customer, in run order.
RECOMPUTE_JOBS = ("gold.dim_customer", "gold.fact_order_lines", "gold.fact_orders", "gold.fact_sessions")
SEGMENTS_JOB = "gold.customer_segments"
SEGMENTS_TABLE = "gold.customer_segments"
AUDIENCES_TABLE = "gold.campaign_audiences"
# Tables whose rows name the customer's devices (anonymous_id) next to their customer_id.
DEVICE_SOURCES = ("bronze.clicks", "silver.clicks", "quarantine.clicks", "gold.fact_sessions")
# Tables that hold the customer's contact details in clear.
CONTACT_SOURCES = ("bronze.customers", "quarantine.customers", "silver.customers")
HASH_SOURCES = ("silver.customers", "gold.dim_customer")


class ErasureRefusedError(RuntimeError):
    """The erasure cannot run safely now; the message says what to do first."""


class ErasureVerificationError(RuntimeError):
    """After the scrub, a table still holds the customer (a bug: the erasure is not done)."""


@dataclass
class ErasureReport:
    """What an erasure did, for the operator (never holds the customer id in clear)."""

    erasure_id: str
    customer_key: str
    keep_history: bool
    found: bool = False
    deleted: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)
    recomputed: list[str] = field(default_factory=list)
    history_only: list[str] = field(default_factory=list)
    vacuumed: list[str] = field(default_factory=list)
    pending_vacuum: dict[str, str] = field(default_factory=dict)
    landing_files: list[str] = field(default_factory=list)
    exported_files: list[str] = field(default_factory=list)
    log_mentions: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def status(self) -> str:
        """``done``, ``pending_vacuum`` or ``not_found``."""
        if not self.found:
            return STATUS_NOT_FOUND
        return STATUS_PENDING if self.pending_vacuum else STATUS_DONE

    @property
    def tables(self) -> list[str]:
        """Every table the erasure touched (scrubbed, recomputed, or holding the customer in history)."""
        return sorted(
            {*self.deleted, *self.updated, *self.history_only, *self.vacuumed, *self.pending_vacuum}
        )

    def summary(self) -> str:
        """A few lines for the operator."""
        head = f"forget-customer: erasure {self.erasure_id}, customer key {self.customer_key[:16]}"
        if not self.found:
            return (
                f"{head}: customer not found in any table of the lake; nothing changed ({self.seconds:.1f}s)"
            )
        lines = [f"{head}: {self.status} in {self.seconds:.1f}s"]
        lines.append(f"  rows deleted: {format_counts(self.deleted)}")
        lines.append(f"  rows updated: {format_counts(self.updated)}")
        lines.append(f"  recomputed: {', '.join(self.recomputed) or 'nothing'}")
        if self.history_only:
            lines.append(f"  only in older versions: {', '.join(self.history_only)}")
        if self.vacuumed:
            lines.append(
                f"  vacuumed with 0 h retention: {', '.join(self.vacuumed)}; their versions before "
                "this erasure are gone (no time travel to them any more)"
            )
        if self.keep_history and self.pending_vacuum:
            kept = ", ".join(sorted(self.pending_vacuum))
            lines.append(
                f"  history kept (--keep-history): older versions of {kept} "
                "still hold the customer (time travel works) until the next `ecom-pipeline maintain`"
            )
        elif self.pending_vacuum:
            for table, reason in sorted(self.pending_vacuum.items()):
                lines.append(f"  NOT vacuumed yet: {table}: {reason}")
            lines.append(
                "  older versions of those tables still hold the customer until `ecom-pipeline maintain`"
            )
        lines.append(
            "  verified: no current row of any table holds the customer"
            + ("" if self.pending_vacuum else ", and no data file outside the current versions remains")
        )
        if self.log_mentions:
            files = sum(len(names) for names in self.log_mentions.values())
            lines.append(
                f"  _delta_log (metadata, not data): {files} files of versions before this erasure in "
                f"{', '.join(sorted(self.log_mentions))} still hold the first {STATS_PREFIX_CHARS} "
                "characters of an identifier as min/max statistics; Delta's log cleanup deletes them after "
                "delta.logRetentionDuration (30 days by default), see docs/erasure.md"
            )
        if self.exported_files:
            lines.append(
                f"  audience exports (files outside the lake, not changed): {len(self.exported_files)} "
                "files written by `export-audience` may hold the customer (ops.audience_exports names who "
                "wrote them): delete them and ask their recipients (CRM, ad platforms) to erase the customer"
            )
        if self.landing_files:
            lines.append(
                f"  landing zone (outside the lake, not changed): {len(self.landing_files)} delivery files "
                "still mention the customer; erase them at the source and in the landing zone"
            )
        return "\n".join(lines)


def customer_key(config: PipelineConfig, customer_id: str) -> str:
    """HMAC-SHA-256 (hex) of the customer id with the project's key: how ``ops/erasures`` names it."""
    key = hmac_key(
        config.privacy.hmac_key_env, allow_insecure_default=config.privacy.allow_insecure_default_key
    )
    return hmac.new(key, customer_id.encode("utf-8"), hashlib.sha256).hexdigest()


def collect_identifiers(spark: SparkSession, tables: dict[str, str], customer_id: str) -> CustomerIdentifiers:
    """The customer's e-mails, phones, e-mail hashes and devices, from every table that has them.

    Collects to the driver: one customer's values only (a few rows).
    """

    def values(sources: Sequence[str], column: str, key: str = "customer_id") -> tuple[str, ...]:
        found: set[str] = set()
        for name in sources:
            if name not in tables:
                continue
            rows = read_table(spark, tables[name])
            if column not in rows.columns or key not in rows.columns:
                continue
            picked = (
                rows.where(F.trim(F.col(key)) == customer_id)
                .select(F.trim(F.col(column)).alias("value"))
                .where(F.col("value").isNotNull() & (F.col("value") != ""))
                .distinct()
                .collect()
            )
            found.update(row["value"] for row in picked)
        return tuple(sorted(found))

    return CustomerIdentifiers(
        customer_id,
        emails=values(CONTACT_SOURCES, "email"),
        phones=values(CONTACT_SOURCES, "phone"),
        email_hashes=values(HASH_SOURCES, "email_hash"),
        devices=values(DEVICE_SOURCES, "anonymous_id"),
    )


def scrub(spark: SparkSession, path: str, plan: ScrubPlan, needles: DataFrame) -> tuple[int, int]:
    """Run the plan as ONE MERGE of the table with the needles; the rows deleted and updated.

    A MERGE, not DELETE/UPDATE with literal conditions: Delta records a command's
    conditions in ``_delta_log`` (``commitInfo``), and these only name the needles' columns.
    """

    def clauses(builder: MergeBuilder) -> MergeBuilder:
        if plan.delete_when is not None:
            builder = builder.whenMatchedDelete(condition=plan.delete_when)
        if plan.update_when is not None and plan.assignments:
            builder = builder.whenMatchedUpdate(condition=plan.update_when, set=dict(plan.assignments))
        return builder

    counts = merge(F.broadcast(needles), path, on=plan.affected_when, clauses=clauses)
    return counts.deleted, counts.updated


def purge_deletion_vectors(spark: SparkSession, path: str) -> None:
    """Rewrite the files of a table with deletion vectors, so deleted rows leave the current files.

    With deletion vectors a MERGE only marks rows deleted: the old file, still in use,
    keeps them. Tables of this project do not enable them; this guards the ones that do.
    """
    if str(table_properties(spark, path).get("delta.enableDeletionVectors", "false")).lower() == "true":
        purge_deleted_rows(spark, path)


def affected_rows(rows: DataFrame, plan: ScrubPlan, needles: DataFrame) -> DataFrame:
    """The rows of a table (or of its older files) that hold the customer."""
    return rows.crossJoin(F.broadcast(needles)).where(plan.affected_when)


def count_affected(
    spark: SparkSession, tables: dict[str, str], plans: dict[str, ScrubPlan], needles: DataFrame
) -> dict[str, int]:
    """Rows of each table's current version that hold the customer (tables with none left out)."""
    counts = {}
    for name, path in tables.items():
        count = affected_rows(read_table(spark, path), plans[name], needles).count()
        if count:
            counts[name] = count
    return counts


def latest_segments_date_of_customer(
    spark: SparkSession, tables: dict[str, str], plans: dict[str, ScrubPlan], needles: DataFrame
) -> dt.date | None:
    """The latest as-of date of customer_segments, if the customer is in that partition."""
    if SEGMENTS_TABLE not in tables:
        return None
    segments = read_table(spark, tables[SEGMENTS_TABLE])
    latest = segments.agg(F.max("as_of_date")).first()[0]  # type: ignore[index]
    if latest is None:
        return None
    in_latest = affected_rows(
        segments.where(F.col("as_of_date") == F.lit(latest)), plans[SEGMENTS_TABLE], needles
    )
    return None if in_latest.isEmpty() else latest


def collect_export_mentions(
    spark: SparkSession, tables: dict[str, str], plans: dict[str, ScrubPlan], needles: DataFrame
) -> list[str]:
    """Files written by ``export-audience`` from an audience (campaign, as-of date) whose treatment
    group held the customer: they are outside the lake, so the erasure can only name them.

    Collects one row per such export (bounded by the exports made).
    """
    exports_name = f"ops.{EXPORTS_TABLE}"
    if AUDIENCES_TABLE not in tables or exports_name not in tables:
        return []
    audiences = affected_rows(read_table(spark, tables[AUDIENCES_TABLE]), plans[AUDIENCES_TABLE], needles)
    held = audiences.where(F.col("group") == "treatment").select("campaign", "as_of_date").distinct()
    exports = read_table(spark, tables[exports_name]).join(
        held, on=["campaign", "as_of_date"], how="left_semi"
    )
    return sorted({row["destination"] for row in exports.select("destination").collect()})


@dataclass(frozen=True)
class Watermark:
    consumer: str
    source: str
    version: int


def collect_watermarks(spark: SparkSession, lake: str, consumers: Consumers) -> list[Watermark]:
    """Every consumer's current (consumer, source, version): from its data commits and the
    log (:func:`pipeline_lib.ops.watermarks.processed_versions`; bounded: jobs x sources)."""
    marks = []
    for consumer, sources in consumers.items():
        for source, version in processed_versions(spark, lake, consumer, list(sources)).items():
            if version is not None:
                marks.append(Watermark(consumer, source, version))
    return marks


def has_changes(spark: SparkSession, path: str, after: int, up_to: int) -> bool:
    """True when versions ``after+1..up_to`` of the table changed any row (change data feed)."""
    if after >= up_to:
        return False
    return not read_changes(spark, path, after=after, latest=up_to).isEmpty()


def refuse_if_lagging(
    spark: SparkSession,
    tables: dict[str, str],
    watermarks: Sequence[Watermark],
    before: dict[str, int | None],
    *,
    scrubbed: dict[str, int],
    exempt: Sequence[str],
) -> None:
    """Refuse when a consumer has not read the latest changes of a table the erasure rewrites.

    Its next incremental read would start before the erasure, in files the erasure rewrites
    (bringing the customer back) and that the vacuum then deletes (failing the read). The
    gold jobs the erasure runs itself are exempt: they catch up before the vacuum.
    """
    for mark in watermarks:
        latest = before.get(mark.source)
        if mark.source not in scrubbed or mark.consumer in exempt or latest is None:
            continue
        if has_changes(spark, tables[mark.source], mark.version, latest):
            raise ErasureRefusedError(
                f"forget-customer refused: {mark.consumer} has not processed {mark.source} "
                f"versions {mark.version + 1}..{latest} yet; run `ecom-pipeline run --layer all` first, "
                "then erase"
            )


def fast_forward_watermarks(
    spark: SparkSession,
    lake: str,
    tables: dict[str, str],
    watermarks: Sequence[Watermark],
    before: dict[str, int | None],
    *,
    changed: set[str],
    ran: Sequence[str],
    run_id: str,
) -> None:
    """Move caught-up consumers of the changed tables past the erasure's commits.

    The erasure's commits only delete and update rows (no new rows): a consumer that had
    read everything before them has nothing to read in them, and must not try once the
    vacuum has deleted their change files. The jobs the erasure ran moved their own.
    """
    moved = [
        (mark.consumer, mark.source, version)
        for mark in watermarks
        if mark.source in changed
        and mark.consumer not in ran
        and mark.source in tables
        and mark.version == before[mark.source]
        and (version := table_version(spark, tables[mark.source])) is not None
    ]
    save_watermarks(spark, lake, moved, run_id)


def history_mentions(spark: SparkSession, path: str, name: str, needles: DataFrame) -> bool:
    """True when a data file of an older version (or change data) of the table holds the customer."""
    files = unreferenced_files(spark, path)
    if not files:
        return False
    older = read_data_files(spark, files)
    return any(not affected_rows(rows, plan_scrub(name, rows.schema), needles).isEmpty() for rows in older)


def vacuum_blockers(
    spark: SparkSession, lake: str, tables: dict[str, str], consumers: Consumers
) -> dict[str, str]:
    """Tables a zero-retention VACUUM must not touch yet: a consumer has unread changes in them.

    VACUUM deletes the change-data files of every version, so a consumer that has not read
    them would fail; such a table waits for the pipeline to run (then ``maintain``).
    """
    blockers = {}
    for mark in collect_watermarks(spark, lake, consumers):
        if mark.source not in tables or mark.source in blockers:
            continue
        latest = _version(spark, tables[mark.source])
        if latest is not None and has_changes(spark, tables[mark.source], mark.version, latest):
            blockers[mark.source] = (
                f"{mark.consumer} has not processed its latest changes; run the pipeline, then "
                "`ecom-pipeline maintain`"
            )
    return blockers


def drop_history(
    spark: SparkSession,
    lake: str,
    tables: dict[str, str],
    consumers: Consumers,
    progress: Progress = print,
    *,
    run_id: str,
) -> list[str]:
    """Drop every older version of the tables: VACUUM with zero retention, then verify.

    Delta's retention check is switched off for these VACUUM commands only, and restored.
    Afterwards no data file outside the current version may remain. Consumers that had
    read everything move past the VACUUM's own commits (they change no row).

    Returns:
        The tables done (sorted names).

    Raises:
        ErasureVerificationError: A data file outside the current version survived.
    """
    before = {name: _version(spark, path) for name, path in tables.items()}
    for name, path in sorted(tables.items()):
        vacuum(spark, path, retention_hours=0.0, allow_unsafe=True)
        progress(f"forget-customer: {name}: vacuumed with 0 h retention")
    left = {name: files for name, path in tables.items() if (files := unreferenced_files(spark, path))}
    if left:
        raise ErasureVerificationError(f"files of older versions survived VACUUM: {left}")
    fast_forward_watermarks(
        spark,
        lake,
        tables,
        collect_watermarks(spark, lake, consumers),
        before,
        changed=set(tables),
        ran=(),
        run_id=run_id,
    )
    return sorted(tables)


def record_erasure(spark: SparkSession, lake: str, report: ErasureReport, requested_at: dt.datetime) -> None:
    """Append the erasure to ``<lake>/ops/erasures`` (customer key only, never the id)."""
    now = dt.datetime.now(dt.UTC)
    row = (
        report.erasure_id,
        report.customer_key,
        requested_at,
        now,
        report.keep_history,
        report.status,
        report.tables if report.status != STATUS_NOT_FOUND else [],
        sum(report.deleted.values()),
        sum(report.updated.values()),
        now if report.status == STATUS_DONE else None,
    )
    write_table(
        local_frame(spark, [row], ERASURES_SCHEMA),
        table_path(lake, "ops", ERASURES_TABLE),
        properties=OPS_TABLE_PROPERTIES,
    )


def finish_pending_erasures(
    spark: SparkSession, lake: str, consumers: Consumers, progress: Progress = print
) -> dict[str, str]:
    """VACUUM (zero retention) the tables of erasures recorded as pending, and mark them done.

    Called by ``ecom-pipeline maintain``. A table whose change data a consumer has not read
    yet is left for the next ``maintain``, and its erasure stays pending.

    Returns:
        ``{erasure_id: outcome}`` for every pending erasure.
    """
    path = table_path(lake, "ops", ERASURES_TABLE)
    if not table_exists(spark, path):
        return {}
    pending = (
        read_table(spark, path)
        .where(F.col("status") == STATUS_PENDING)
        .select("erasure_id", "tables")
        .collect()
    )
    if not pending:
        return {}
    names = sorted({name for row in pending for name in row["tables"]})
    tables = {}
    for name in names:
        layer, table = name.split(".", 1)
        candidate = table_path(lake, layer, table)
        if table_exists(spark, candidate):
            tables[name] = candidate
    blocked = vacuum_blockers(spark, lake, tables, consumers)
    run_id = "maintain:" + ",".join(sorted(row["erasure_id"] for row in pending))
    drop_history(
        spark, lake, {n: p for n, p in tables.items() if n not in blocked}, consumers, progress, run_id=run_id
    )
    outcomes = {}
    finished = []
    for row in pending:
        waiting = sorted(set(row["tables"]) & set(blocked))
        if waiting:
            outcomes[row["erasure_id"]] = f"still pending: {', '.join(waiting)} ({blocked[waiting[0]]})"
        else:
            outcomes[row["erasure_id"]] = "done: its tables were vacuumed with 0 h retention"
            finished.append(row["erasure_id"])
        progress(f"maintain: erasure {row['erasure_id']}: {outcomes[row['erasure_id']]}")
    if finished:
        update_rows(
            spark,
            path,
            F.col("erasure_id").isin(*finished),
            {"status": F.lit(STATUS_DONE), "vacuumed_at": F.current_timestamp()},
        )
    return outcomes


def _version(spark: SparkSession, path: str) -> int | None:
    return table_version(spark, path)


def format_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items())) or "none"


def collect_log_mentions(
    spark: SparkSession, tables: dict[str, str], touched: Sequence[str], identifiers: CustomerIdentifiers
) -> dict[str, list[str]]:
    """Per touched table, the ``_delta_log`` files holding a statistics prefix of an identifier."""
    return log_files_matching(spark, tables, touched, identifiers.stats_regex)


def collect_landing_mentions(
    spark: SparkSession, landing: str, identifiers: CustomerIdentifiers
) -> list[str]:
    """Delivery files of the landing zone that mention the customer (file names only)."""
    return landing_files_matching(spark, landing, identifiers.text_regex)
