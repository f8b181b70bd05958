"""``ecom-pipeline forget-customer``: erase one customer from every layer of the lake.

    ecom-pipeline forget-customer --customer-id C0000042 [--keep-history] [--lake DIR]

A recipe (design and limits: ``docs/erasure.md``; the scrub rules: :mod:`pipeline_lib.privacy.erasure`):

1. take the erasure lock and the locks of every bronze and silver job, so no pipeline run
   writes while the erasure does;
2. find the customer's identifiers (id, every e-mail, phone and e-mail hash, their devices)
   and count, table by table, the rows that hold them; a customer found nowhere is
   reported "not found" and nothing is written;
3. refuse when a consumer has not processed the latest changes of a table to scrub (its
   next incremental read would cross files the erasure rewrites): run the pipeline first;
4. scrub every table with ONE Delta MERGE of the table with a one-row DataFrame of the
   identifiers (so the conditions Delta logs name no identifier): activity tables first,
   the customer tables (where the identifiers are found) last, so an interrupted erasure
   is finished by running it again;
5. recompute what depends on the customer with the gold jobs themselves (``dim_customer``,
   the facts, and the latest as-of date of ``customer_segments``), then move the
   incremental watermarks of the other consumers past the erasure's own commits;
6. check that no current row of any table holds the customer any more;
7. VACUUM the touched tables with zero retention (older versions are gone afterwards) and
   check that no data file outside the current versions remains; with ``--keep-history``
   record the erasure as pending in ``<lake>/ops/erasures`` instead, for ``maintain``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import secrets
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from delta.tables import DeltaTable
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.framework import JobContext, new_run_id, run_job
from jobs.graph import JOB_GRAPH
from pipeline_lib.config import PipelineConfig
from pipeline_lib.io.delta import (
    LAYERS,
    OPS_TABLE_PROPERTIES,
    hadoop_file_system,
    read_table,
    table_exists,
    table_path,
    table_version,
    write_table,
)
from pipeline_lib.io.frames import local_frame
from pipeline_lib.ops.locks import job_lock
from pipeline_lib.ops.watermarks import WATERMARKS_TABLE, processed_versions, save_watermarks
from pipeline_lib.privacy.erasure import (
    CUSTOMER_TABLES,
    NEEDLES_SCHEMA,
    STATS_PREFIX_CHARS,
    CustomerIdentifiers,
    ScrubPlan,
    plan_scrub,
)
from pipeline_lib.privacy.pii import hmac_key

ERASURES_TABLE = "erasures"
ERASURE_LOCK = "ops.forget_customer"
STATUS_DONE = "done"
STATUS_PENDING = "pending_vacuum"
STATUS_NOT_FOUND = "not_found"
RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"
# Gold jobs that recompute what depends on a customer, in run order.
RECOMPUTE_JOBS = ("gold.dim_customer", "gold.fact_order_lines", "gold.fact_orders", "gold.fact_sessions")
SEGMENTS_JOB = "gold.customer_segments"
SEGMENTS_TABLE = "gold.customer_segments"
# Tables whose rows name the customer's devices (anonymous_id) next to their customer_id.
_DEVICE_SOURCES = ("bronze.clicks", "silver.clicks", "quarantine.clicks", "gold.fact_sessions")
# Tables that hold the customer's contact details in clear.
_CONTACT_SOURCES = ("bronze.customers", "quarantine.customers", "silver.customers")
_HASH_SOURCES = ("silver.customers", "gold.dim_customer")
_LANDING_GLOB = "*/ingest_date=*/*"

ERASURES_SCHEMA = T.StructType(
    [
        T.StructField("erasure_id", T.StringType(), False),
        T.StructField("customer_key", T.StringType(), False),  # HMAC-SHA-256 of the id, never the id
        T.StructField("requested_at", T.TimestampType(), False),
        T.StructField("finished_at", T.TimestampType(), False),
        T.StructField("keep_history", T.BooleanType(), False),
        T.StructField("status", T.StringType(), False),  # done, pending_vacuum, not_found
        T.StructField("tables", T.ArrayType(T.StringType(), False), False),  # to vacuum / vacuumed
        T.StructField("rows_deleted", T.LongType(), False),
        T.StructField("rows_updated", T.LongType(), False),
        T.StructField("vacuumed_at", T.TimestampType(), True),
    ]
)

Progress = Callable[[str], None]


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
        lines.append(f"  rows deleted: {_counts(self.deleted)}")
        lines.append(f"  rows updated: {_counts(self.updated)}")
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
        if self.landing_files:
            lines.append(
                f"  landing zone (outside the lake, not changed): {len(self.landing_files)} delivery files "
                "still mention the customer; erase them at the source and in the landing zone"
            )
        return "\n".join(lines)


def forget_customer(
    spark: SparkSession,
    config: PipelineConfig,
    customer_id: str,
    *,
    keep_history: bool = False,
    progress: Progress = print,
) -> ErasureReport:
    """Erase one customer's personal data and identifiers from every table of the lake.

    Args:
        spark: The session.
        config: The pipeline config (lake and landing roots, the e-mail hash key).
        customer_id: The id to erase (surrounding blanks are ignored).
        keep_history: Do not vacuum now: record the erasure as pending for ``maintain``.
        progress: Receives one line per step.

    Returns:
        The report; ``found`` is False (and nothing was written but the audit row) when no
        table holds the customer.

    Raises:
        ValueError: ``customer_id`` is blank.
        ErasureRefusedError: A consumer has unprocessed changes of a table to scrub.
        ErasureVerificationError: A table still holds the customer after the scrub.
    """
    customer_id = customer_id.strip()
    if not customer_id:
        raise ValueError("--customer-id must not be blank")
    clock = time.monotonic()
    lake = config.paths.lake
    report = ErasureReport(
        erasure_id=new_run_id(), customer_key=customer_key(config, customer_id), keep_history=keep_history
    )
    requested_at = dt.datetime.now(dt.UTC)
    with _pipeline_locked(spark, lake, report.erasure_id):
        tables = lake_tables(spark, lake)
        identifiers = collect_identifiers(spark, tables, customer_id)
        # One random salt for every table (a device gets one pseudonym), never stored.
        needles = local_frame(spark, [identifiers.needles_row(secrets.token_hex(32))], NEEDLES_SCHEMA)
        plans = {name: plan_scrub(name, read_table(spark, path).schema) for name, path in tables.items()}
        found = _count_affected(spark, tables, plans, needles)
        history = [
            name
            for name in tables
            if name not in found and _history_mentions(spark, tables[name], name, needles)
        ]
        progress(
            f"forget-customer: {sum(found.values())} rows in {len(found)} tables"
            + (f", older versions of {len(history)} more" if history else "")
        )
        report.found = bool(found or history)
        if report.found:
            _erase(spark, config, tables, plans, needles, found, history, report, progress)
            report.log_mentions = _collect_log_mentions(spark, tables, report.tables, identifiers)
        _record(spark, lake, report, requested_at)
        report.landing_files = _collect_landing_mentions(spark, config.paths.landing, identifiers)
    report.seconds = time.monotonic() - clock
    return report


def customer_key(config: PipelineConfig, customer_id: str) -> str:
    """HMAC-SHA-256 (hex) of the customer id with the project's key: how ``ops/erasures`` names it."""
    key = hmac_key(
        config.privacy.hmac_key_env, allow_insecure_default=config.privacy.allow_insecure_default_key
    )
    return hmac.new(key, customer_id.encode("utf-8"), hashlib.sha256).hexdigest()


def lake_tables(spark: SparkSession, lake: str) -> dict[str, str]:
    """Every Delta table of the lake as ``{layer.table: path}``, except ``ops.erasures`` (sorted).

    Lists with Hadoop's file system, so it works on object stores too.
    """
    found = {}
    for layer in LAYERS:
        root, fs = hadoop_file_system(spark, f"{lake.rstrip('/')}/{layer}")
        if not fs.exists(root):
            continue
        for status in fs.listStatus(root):
            name = status.getPath().getName()
            if (
                not status.isDirectory()
                or name.startswith(("_", "."))
                or (layer, name) == ("ops", ERASURES_TABLE)
            ):
                continue
            path = table_path(lake, layer, name)
            if table_exists(spark, path):
                found[f"{layer}.{name}"] = path
    return dict(sorted(found.items()))


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
        emails=values(_CONTACT_SOURCES, "email"),
        phones=values(_CONTACT_SOURCES, "phone"),
        email_hashes=values(_HASH_SOURCES, "email_hash"),
        devices=values(_DEVICE_SOURCES, "anonymous_id"),
    )


# --- the erasure itself ----------------------------------------------------------------------


def _erase(
    spark: SparkSession,
    config: PipelineConfig,
    tables: dict[str, str],
    plans: dict[str, ScrubPlan],
    needles: DataFrame,
    found: dict[str, int],
    history: list[str],
    report: ErasureReport,
    progress: Progress,
) -> None:
    lake = config.paths.lake
    before = {name: _version(spark, path) for name, path in tables.items()}
    watermarks = _collect_watermarks(spark, lake)
    recompute = [job for job in RECOMPUTE_JOBS if job in tables]
    _refuse_if_lagging(spark, tables, watermarks, before, scrubbed=found, exempt=recompute)
    segments_as_of = _latest_segments_date_of_customer(spark, tables, plans, needles)

    # Activity tables first, the customer tables (where identifiers are found) last.
    for name in sorted(found, key=lambda n: (n in CUSTOMER_TABLES, n)):
        deleted, updated = _apply(spark, tables[name], plans[name], needles)
        if deleted:
            report.deleted[name] = deleted
        if updated:
            report.updated[name] = updated
        progress(f"forget-customer: {name}: {deleted} rows deleted, {updated} updated")

    ctx = JobContext(spark=spark, config=config, run_id=report.erasure_id)
    specs = {spec.qualified_name: spec for spec in JOB_GRAPH}
    for job in recompute:
        run_job(specs[job], ctx)
        report.recomputed.append(job)
    if segments_as_of is not None and SEGMENTS_JOB in specs:
        run_job(
            specs[SEGMENTS_JOB],
            JobContext(spark=spark, config=config, run_id=report.erasure_id, as_of=segments_as_of),
        )
        report.recomputed.append(f"{SEGMENTS_JOB} (as of {segments_as_of.isoformat()})")

    for name in found:
        _purge_deletion_vectors(spark, tables[name])
    changed = {name for name in tables if _version(spark, tables[name]) != before[name]}
    _fast_forward_watermarks(
        spark, lake, tables, watermarks, before, changed=changed, ran=recompute, run_id=report.erasure_id
    )
    remaining = _count_affected(spark, {n: tables[n] for n in sorted(changed)}, plans, needles)
    if remaining:
        raise ErasureVerificationError(
            f"after the scrub, rows still hold the customer: {_counts(remaining)}; nothing was vacuumed"
        )
    report.history_only = sorted(history)
    bookkeeping = {f"ops.{WATERMARKS_TABLE}", "ops.pipeline_runs"}
    to_vacuum = sorted({*found, *(changed - bookkeeping), *history})
    if report.keep_history:
        report.pending_vacuum = dict.fromkeys(to_vacuum, "--keep-history")
        return
    blocked = _vacuum_blockers(spark, lake, {n: tables[n] for n in to_vacuum})
    report.pending_vacuum = blocked
    report.vacuumed = drop_history(
        spark, lake, {n: tables[n] for n in to_vacuum if n not in blocked}, progress, run_id=report.erasure_id
    )


def _apply(spark: SparkSession, path: str, plan: ScrubPlan, needles: DataFrame) -> tuple[int, int]:
    """Run the plan as ONE MERGE of the table with the needles; the rows deleted and updated.

    A MERGE, not DELETE/UPDATE with literal conditions: Delta records a command's
    conditions in ``_delta_log`` (``commitInfo``), and these only name the needles' columns.
    """
    merge = (
        DeltaTable.forPath(spark, path).alias("t").merge(F.broadcast(needles).alias("s"), plan.affected_when)
    )
    if plan.delete_when is not None:
        merge = merge.whenMatchedDelete(condition=plan.delete_when)
    if plan.update_when is not None and plan.assignments:
        merge = merge.whenMatchedUpdate(condition=plan.update_when, set=dict(plan.assignments))
    metrics = merge.execute().first()
    if metrics is None:
        return 0, 0
    return int(metrics["num_deleted_rows"]), int(metrics["num_updated_rows"])


def _purge_deletion_vectors(spark: SparkSession, path: str) -> None:
    """Rewrite the files of a table with deletion vectors, so deleted rows leave the current files.

    With deletion vectors a MERGE only marks rows deleted: the old file, still in use,
    keeps them. Tables of this project do not enable them; this guards the ones that do.
    """
    properties = DeltaTable.forPath(spark, path).detail().first()["properties"] or {}  # type: ignore[index]
    if str(properties.get("delta.enableDeletionVectors", "false")).lower() == "true":
        spark.sql(f"REORG TABLE delta.`{path}` APPLY (PURGE)")


def _affected_rows(rows: DataFrame, plan: ScrubPlan, needles: DataFrame) -> DataFrame:
    """The rows of a table (or of its older files) that hold the customer."""
    return rows.crossJoin(F.broadcast(needles)).where(plan.affected_when)


def _count_affected(
    spark: SparkSession, tables: dict[str, str], plans: dict[str, ScrubPlan], needles: DataFrame
) -> dict[str, int]:
    """Rows of each table's current version that hold the customer (tables with none left out)."""
    counts = {}
    for name, path in tables.items():
        count = _affected_rows(read_table(spark, path), plans[name], needles).count()
        if count:
            counts[name] = count
    return counts


def _latest_segments_date_of_customer(
    spark: SparkSession, tables: dict[str, str], plans: dict[str, ScrubPlan], needles: DataFrame
) -> dt.date | None:
    """The latest as-of date of customer_segments, if the customer is in that partition."""
    if SEGMENTS_TABLE not in tables:
        return None
    segments = read_table(spark, tables[SEGMENTS_TABLE])
    latest = segments.agg(F.max("as_of_date")).first()[0]  # type: ignore[index]
    if latest is None:
        return None
    in_latest = _affected_rows(
        segments.where(F.col("as_of_date") == F.lit(latest)), plans[SEGMENTS_TABLE], needles
    )
    return None if in_latest.isEmpty() else latest


# --- watermarks: incremental consumers must not cross the erasure's commits ----------------


@dataclass(frozen=True)
class _Watermark:
    consumer: str
    source: str
    version: int


def _collect_watermarks(spark: SparkSession, lake: str) -> list[_Watermark]:
    """Every consumer's current (consumer, source, version): from its data commits and the
    log (:func:`pipeline_lib.ops.watermarks.processed_versions`; bounded: jobs x sources)."""
    marks = []
    for spec in JOB_GRAPH:
        sources = [name for name in spec.inputs if not name.startswith("landing.")]
        if spec.layer == "bronze" or not sources:
            continue
        for source, version in processed_versions(spark, lake, spec.qualified_name, sources).items():
            if version is not None:
                marks.append(_Watermark(spec.qualified_name, source, version))
    return marks


def _has_changes(spark: SparkSession, path: str, after: int, up_to: int) -> bool:
    """True when versions ``after+1..up_to`` of the table changed any row (change data feed)."""
    if after >= up_to:
        return False
    changes = (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", after + 1)
        .option("endingVersion", up_to)
        .load(path)
    )
    return not changes.isEmpty()


def _refuse_if_lagging(
    spark: SparkSession,
    tables: dict[str, str],
    watermarks: Sequence[_Watermark],
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
        if _has_changes(spark, tables[mark.source], mark.version, latest):
            raise ErasureRefusedError(
                f"forget-customer refused: {mark.consumer} has not processed {mark.source} "
                f"versions {mark.version + 1}..{latest} yet; run `ecom-pipeline run --layer all` first, "
                "then erase"
            )


def _fast_forward_watermarks(
    spark: SparkSession,
    lake: str,
    tables: dict[str, str],
    watermarks: Sequence[_Watermark],
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
        (mark.consumer, mark.source, _version(spark, tables[mark.source]))
        for mark in watermarks
        if mark.source in changed
        and mark.consumer not in ran
        and mark.source in tables
        and mark.version == before[mark.source]
    ]
    save_watermarks(spark, lake, moved, run_id)


# --- history: older versions, vacuum and verification --------------------------------------


def _normalized(uri: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlparse(uri).path).replace("//", "/")


def _collect_unreferenced_files(spark: SparkSession, path: str) -> list[str]:
    """Data files under the table that its current version does not use: older versions and
    change-data files, which VACUUM deletes (lists file names only)."""
    root, fs = hadoop_file_system(spark, path)
    live = {_normalized(uri) for uri in read_table(spark, path).inputFiles()}
    files = fs.listFiles(root, True)
    unreferenced = []
    while files.hasNext():
        uri = files.next().getPath().toString()
        if uri.endswith(".parquet") and "/_delta_log/" not in uri and _normalized(uri) not in live:
            unreferenced.append(uri)
    return sorted(unreferenced)


def _history_mentions(spark: SparkSession, path: str, name: str, needles: DataFrame) -> bool:
    """True when a data file of an older version (or change data) of the table holds the customer."""
    files = _collect_unreferenced_files(spark, path)
    if not files:
        return False
    try:
        older = [spark.read.option("mergeSchema", "true").parquet(*files)]
    except AnalysisException:  # the schema changed incompatibly over time: file by file
        older = [spark.read.parquet(file) for file in files]
    return any(not _affected_rows(rows, plan_scrub(name, rows.schema), needles).isEmpty() for rows in older)


def _vacuum_blockers(spark: SparkSession, lake: str, tables: dict[str, str]) -> dict[str, str]:
    """Tables a zero-retention VACUUM must not touch yet: a consumer has unread changes in them.

    VACUUM deletes the change-data files of every version, so a consumer that has not read
    them would fail; such a table waits for the pipeline to run (then ``maintain``).
    """
    blockers = {}
    for mark in _collect_watermarks(spark, lake):
        if mark.source not in tables or mark.source in blockers:
            continue
        latest = _version(spark, tables[mark.source])
        if latest is not None and _has_changes(spark, tables[mark.source], mark.version, latest):
            blockers[mark.source] = (
                f"{mark.consumer} has not processed its latest changes; run the pipeline, then "
                "`ecom-pipeline maintain`"
            )
    return blockers


def drop_history(
    spark: SparkSession, lake: str, tables: dict[str, str], progress: Progress = print, *, run_id: str
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
    previous = spark.conf.get(RETENTION_CHECK, None)
    spark.conf.set(RETENTION_CHECK, "false")
    try:
        for name, path in sorted(tables.items()):
            DeltaTable.forPath(spark, path).vacuum(0.0)
            progress(f"forget-customer: {name}: vacuumed with 0 h retention")
    finally:
        if previous is None:
            spark.conf.unset(RETENTION_CHECK)
        else:
            spark.conf.set(RETENTION_CHECK, previous)
    left = {
        name: files for name, path in tables.items() if (files := _collect_unreferenced_files(spark, path))
    }
    if left:
        raise ErasureVerificationError(f"files of older versions survived VACUUM: {left}")
    _fast_forward_watermarks(
        spark,
        lake,
        tables,
        _collect_watermarks(spark, lake),
        before,
        changed=set(tables),
        ran=(),
        run_id=run_id,
    )
    return sorted(tables)


# --- audit record and maintain --------------------------------------------------------------


def _record(spark: SparkSession, lake: str, report: ErasureReport, requested_at: dt.datetime) -> None:
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


def finish_pending_erasures(spark: SparkSession, lake: str, progress: Progress = print) -> dict[str, str]:
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
    blocked = _vacuum_blockers(spark, lake, tables)
    run_id = "maintain:" + ",".join(sorted(row["erasure_id"] for row in pending))
    drop_history(spark, lake, {n: p for n, p in tables.items() if n not in blocked}, progress, run_id=run_id)
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
        DeltaTable.forPath(spark, path).update(
            F.col("erasure_id").isin(*finished),
            {"status": F.lit(STATUS_DONE), "vacuumed_at": F.current_timestamp()},
        )
    return outcomes


# --- small helpers --------------------------------------------------------------------------


def _version(spark: SparkSession, path: str) -> int | None:
    return table_version(spark, path)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items())) or "none"


@contextlib.contextmanager
def _pipeline_locked(spark: SparkSession, lake: str, run_id: str) -> Iterator[None]:
    """Hold the erasure lock and the locks of every bronze and silver job for the block."""
    names = [ERASURE_LOCK, *(s.qualified_name for s in JOB_GRAPH if s.layer in ("bronze", "silver"))]
    with contextlib.ExitStack() as stack:
        for name in names:
            stack.enter_context(job_lock(spark, lake, name, run_id))
        yield


def _collect_log_mentions(
    spark: SparkSession, tables: dict[str, str], touched: Sequence[str], identifiers: CustomerIdentifiers
) -> dict[str, list[str]]:
    """Per touched table, the ``_delta_log`` files whose text holds a statistics prefix of an identifier.

    Commit (``.json``) and checksum (``.crc``) files are read as text, checkpoints as rows
    turned to JSON, all tables at once. Collects file names only.
    """
    owner = {}
    for name in touched:
        if name in tables:
            log, fs = hadoop_file_system(spark, f"{tables[name]}/_delta_log")
            for status in fs.listStatus(log):
                owner[status.getPath().toString()] = name
    texts = [f for f in owner if f.endswith((".json", ".crc"))]
    checkpoints = [f for f in owner if ".checkpoint" in f and f.endswith(".parquet")]
    frames = [spark.read.text(texts)] if texts else []
    if checkpoints:
        frames.append(spark.read.parquet(*checkpoints).select(F.to_json(F.struct("*")).alias("value")))
    hits = {
        _normalized(row["file"])
        for frame in frames
        for row in frame.where(F.col("value").rlike(identifiers.stats_regex))
        .select(F.input_file_name().alias("file"))
        .distinct()
        .collect()
    }
    found: dict[str, list[str]] = {}
    for file, name in owner.items():
        if _normalized(file) in hits:
            found.setdefault(name, []).append(file.rsplit("/", 1)[-1])
    return {name: sorted(files) for name, files in sorted(found.items())}


def _collect_landing_mentions(
    spark: SparkSession, landing: str, identifiers: CustomerIdentifiers
) -> list[str]:
    """Delivery files of the landing zone that mention the customer (read only; file names collected)."""
    root, fs = hadoop_file_system(spark, landing)
    if not fs.exists(root):
        return []
    try:
        lines = spark.read.text(f"{landing.rstrip('/')}/{_LANDING_GLOB}")
    except AnalysisException:  # no delivery file at all
        return []
    hits = (
        lines.where(F.col("value").rlike(identifiers.text_regex))
        .select(F.input_file_name().alias("file"))
        .distinct()
        .collect()
    )
    return sorted(row["file"] for row in hits)
