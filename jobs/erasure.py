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
import secrets
import time
from collections.abc import Iterator

from pyspark.sql import DataFrame, SparkSession

from jobs.framework import run_job
from jobs.graph import JOB_GRAPH
from pipeline_lib.config import PipelineConfig
from pipeline_lib.io.delta import read_table, table_version
from pipeline_lib.io.frames import local_frame
from pipeline_lib.io.lake_files import lake_tables
from pipeline_lib.ops.context import JobContext, new_run_id
from pipeline_lib.ops.locks import job_lock
from pipeline_lib.ops.schemas import ERASURES_TABLE, WATERMARKS_TABLE
from pipeline_lib.privacy import forget
from pipeline_lib.privacy.erasure import CUSTOMER_TABLES, NEEDLES_SCHEMA, ScrubPlan, plan_scrub
from pipeline_lib.privacy.forget import (
    ERASURE_LOCK,
    RECOMPUTE_JOBS,
    SEGMENTS_JOB,
    ErasureReport,
    ErasureVerificationError,
    Progress,
    collect_export_mentions,
    collect_identifiers,
    collect_landing_mentions,
    collect_log_mentions,
    collect_watermarks,
    count_affected,
    customer_key,
    drop_history,
    fast_forward_watermarks,
    format_counts,
    history_mentions,
    latest_segments_date_of_customer,
    purge_deletion_vectors,
    record_erasure,
    refuse_if_lagging,
    scrub,
    vacuum_blockers,
)


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
        tables = lake_tables(spark, lake, exclude=[f"ops.{ERASURES_TABLE}"])
        identifiers = collect_identifiers(spark, tables, customer_id)
        # One random salt for every table (a device gets one pseudonym), never stored.
        needles = local_frame(spark, [identifiers.needles_row(secrets.token_hex(32))], NEEDLES_SCHEMA)
        plans = {name: plan_scrub(name, read_table(spark, path).schema) for name, path in tables.items()}
        found = count_affected(spark, tables, plans, needles)
        history = [
            name
            for name in tables
            if name not in found and history_mentions(spark, tables[name], name, needles)
        ]
        progress(
            f"forget-customer: {sum(found.values())} rows in {len(found)} tables"
            + (f", older versions of {len(history)} more" if history else "")
        )
        report.found = bool(found or history)
        report.exported_files = collect_export_mentions(spark, tables, plans, needles)
        if report.found:
            _erase(spark, config, tables, plans, needles, found, history, report, progress)
            report.log_mentions = collect_log_mentions(spark, tables, report.tables, identifiers)
        record_erasure(spark, lake, report, requested_at)
        report.landing_files = collect_landing_mentions(spark, config.paths.landing, identifiers)
    report.seconds = time.monotonic() - clock
    return report


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
    before = {name: table_version(spark, path) for name, path in tables.items()}
    consumers = _consumers()
    watermarks = collect_watermarks(spark, lake, consumers)
    recompute = [job for job in RECOMPUTE_JOBS if job in tables]
    refuse_if_lagging(spark, tables, watermarks, before, scrubbed=found, exempt=recompute)
    segments_as_of = latest_segments_date_of_customer(spark, tables, plans, needles)

    # Activity tables first, the customer tables (where identifiers are found) last.
    for name in sorted(found, key=lambda n: (n in CUSTOMER_TABLES, n)):
        deleted, updated = scrub(spark, tables[name], plans[name], needles)
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
        purge_deletion_vectors(spark, tables[name])
    changed = {name for name in tables if table_version(spark, tables[name]) != before[name]}
    fast_forward_watermarks(
        spark, lake, tables, watermarks, before, changed=changed, ran=recompute, run_id=report.erasure_id
    )
    remaining = count_affected(spark, {n: tables[n] for n in sorted(changed)}, plans, needles)
    if remaining:
        raise ErasureVerificationError(
            f"after the scrub, rows still hold the customer: {format_counts(remaining)}; nothing was vacuumed"
        )
    report.history_only = sorted(history)
    bookkeeping = {f"ops.{WATERMARKS_TABLE}", "ops.pipeline_runs"}
    to_vacuum = sorted({*found, *(changed - bookkeeping), *history})
    if report.keep_history:
        report.pending_vacuum = dict.fromkeys(to_vacuum, "--keep-history")
        return
    blocked = vacuum_blockers(spark, lake, {n: tables[n] for n in to_vacuum}, consumers)
    report.pending_vacuum = blocked
    kept = {n: tables[n] for n in to_vacuum if n not in blocked}
    report.vacuumed = drop_history(spark, lake, kept, consumers, progress, run_id=report.erasure_id)


def finish_pending_erasures(spark: SparkSession, lake: str, progress: Progress = print) -> dict[str, str]:
    """VACUUM the tables of erasures recorded as pending (``ecom-pipeline maintain``); see
    :func:`pipeline_lib.privacy.forget.finish_pending_erasures`."""
    return forget.finish_pending_erasures(spark, lake, _consumers(), progress)


def _consumers() -> dict[str, tuple[str, ...]]:
    """Every incremental consumer of the job graph and the tables it reads."""
    consumers = {}
    for spec in JOB_GRAPH:
        sources = tuple(name for name in spec.inputs if not name.startswith("landing."))
        if spec.layer != "bronze" and sources:
            consumers[spec.qualified_name] = sources
    return consumers


@contextlib.contextmanager
def _pipeline_locked(spark: SparkSession, lake: str, run_id: str) -> Iterator[None]:
    """Hold the erasure lock and the locks of every bronze and silver job for the block."""
    names = [ERASURE_LOCK, *(s.qualified_name for s in JOB_GRAPH if s.layer in ("bronze", "silver"))]
    with contextlib.ExitStack() as stack:
        for name in names:
            stack.enter_context(job_lock(spark, lake, name, run_id))
        yield
