"""The runner: which jobs of the graph run, in what order, and what a failure stops.

For each as-of date (one run id each, oldest first), every selected job of
:data:`jobs.graph.JOB_GRAPH`, in graph order, is one of:

- **skipped**, before any Spark work, when nothing it reads has changed since its last
  success: the Delta versions of its input tables (read from their ``_delta_log``), the
  files delivered for its landing source (up to ``--as-of``; a Kafka topic's end offsets,
  docs/kafka.md), the settings that decide what
  the tables hold (not paths or Spark's), and for the gold aggregates the as-of date, all
  equal the state it saved then (``<lake>/ops/_state/<job>.json``,
  :mod:`pipeline_lib.io.storage`). A skipped job starts no Spark job and commits nothing;
- **blocked**, when a job it depends on (through its inputs) failed in this run;
- **run**: :func:`jobs.framework.run_job` (lock, conflict retries, run record); on success
  the state of what it read is saved.

Jobs run as soon as the jobs writing what they read have ended, up to
``pipeline.max_parallel_jobs`` at once (independent branches of the graph side by side: a
job spends much of its time on the driver, planning and committing, while the cores idle).

The Spark session is started when the first job has to run, so a run with nothing new
costs a few file listings. A failed job stops only the jobs downstream of it; the run ends
with :class:`~jobs.framework.JobFailedError` listing every failed and blocked job, one per
line. Why the state is a small file beside the lake and not a Delta commit: it only says
"nothing changed since"; losing it, or a crash before it is written, costs one run of a job
that then finds nothing new (every job is idempotent and keeps its own incremental state
in the lake), never a wrong or missing row. See docs/engine.md.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from typing import Any

from pyspark.sql import SparkSession

from jobs.framework import JobFailedError, run_job, save_run_records
from jobs.graph import LANDING, JobSpec, check_job_conf, upstream_jobs
from pipeline_lib.config import PipelineConfig
from pipeline_lib.io.kafka import topic_end_offsets
from pipeline_lib.io.postgres import DatabaseError, database_now, source_database
from pipeline_lib.io.storage import (
    UnreadableRootError,
    delta_version,
    landing_digest,
    read_state,
    write_state,
)
from pipeline_lib.ops.context import JobContext, new_run_id, progress
from pipeline_lib.ops.runs import RunRecord

SUCCEEDED, FAILED, SKIPPED, BLOCKED = "succeeded", "failed", "skipped", "blocked"
# The Spark job tag of every Spark job a pipeline job starts (``spark.job.tags`` in the event
# log and the UI; ``SparkSession.interruptTag`` cancels them): the benchmark attributes Spark
# jobs to pipeline jobs by it, which start times cannot do for jobs running side by side.
JOB_TAG_PREFIX = "ecom-job="
# The same name as a local property of the job's thread: Spark copies a thread's local
# properties to the threads that run a query's broadcasts and subqueries, and RDD jobs (ALS's
# training) carry them too; the session's tag reaches neither.
JOB_PROPERTY = "ecom.job"


@dataclass(frozen=True)
class JobOutcome:
    """What became of one job in one run."""

    job: str
    status: str  # succeeded, failed, skipped, blocked
    reason: str = ""


SessionSource = SparkSession | Callable[[], SparkSession]


def run_jobs(
    spark: SessionSource,
    config: PipelineConfig,
    specs: Sequence[JobSpec],
    dates: Sequence[dt.date | None],
    *,
    full_refresh: bool = False,
    force: bool = False,
) -> list[JobOutcome]:
    """Run ``specs`` (graph order) once per as-of date, oldest first; skip idle jobs.

    Args:
        spark: The session, or a function that builds it (called once, when a job first
            has to run).
        full_refresh: Rebuild the selected tables from scratch (on the first date only: a
            backfill builds on it); implies ``force``.
        force: Run the jobs even when nothing they read has changed.

    Returns:
        Every job's outcome, date after date.

    Raises:
        JobFailedError: A job failed: the message has one line per failed or blocked job.
            A backfill stops after the first date with a failure.
    """
    check_job_conf(config.spark.job_conf)
    session = _LazySession(spark)
    outcomes: list[JobOutcome] = []
    for position, as_of in enumerate(dates):
        run_id = new_run_id()
        where = f"landing {config.paths.landing}, lake {config.paths.lake}"
        count = f" ({position + 1}/{len(dates)})" if len(dates) > 1 else ""
        header = f"run {run_id}" + (f" as of {as_of}{count}" if as_of is not None else "")
        progress(f"{header}: {len(specs)} jobs, {where}")
        refresh = full_refresh and position == 0
        day = _run_day(session, config, specs, as_of, run_id, full_refresh=refresh, force=force or refresh)
        outcomes += day
        problems = [o for o in day if o.status in (FAILED, BLOCKED)]
        skipped = sum(o.status == SKIPPED for o in day)
        ran = sum(o.status == SUCCEEDED for o in day)
        progress(f"{header}: {ran} ran, {skipped} skipped (nothing new), {len(problems)} failed or blocked")
        if problems:
            raise JobFailedError(
                "\n".join(o.reason if o.status == FAILED else f"{o.job}: {o.reason}" for o in problems)
            )
    return outcomes


def _run_day(
    session: _LazySession,
    config: PipelineConfig,
    specs: Sequence[JobSpec],
    as_of: dt.date | None,
    run_id: str,
    *,
    full_refresh: bool,
    force: bool,
) -> list[JobOutcome]:
    """Run one as-of date's jobs; their run records are appended together at the end.

    A job starts once every selected job that writes what it reads has ended, up to
    ``pipeline.max_parallel_jobs`` at a time, each in its own Spark session (its own
    settings, one Spark context). A job after a failed or blocked one is blocked.
    """
    selected = {spec.qualified_name: spec for spec in specs}
    waits_for = {
        name: [up for up in upstream_jobs(spec, specs) if up in selected] for name, spec in selected.items()
    }
    outcomes: dict[str, JobOutcome] = {}
    records: list[RunRecord] = []
    pending = list(specs)
    parallel = max(1, config.pipeline.max_parallel_jobs)
    clock = source_clock(config, specs)
    try:
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="job") as pool:
            running: dict[Future[JobOutcome], str] = {}
            while pending or running:
                for spec in list(pending):
                    name = spec.qualified_name
                    if len(running) >= parallel or any(up not in outcomes for up in waits_for[name]):
                        continue
                    pending.remove(spec)
                    failed = _failed_upstream(name, waits_for, outcomes)
                    if failed:
                        reason = f"blocked: {', '.join(failed)} failed"
                        progress(f"{name}: {reason}")
                        outcomes[name] = JobOutcome(name, BLOCKED, reason)
                        continue
                    job = partial(
                        _run_one, session, config, spec, as_of, run_id, records, full_refresh, force, clock
                    )
                    running[pool.submit(job)] = name
                if running:
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        outcomes[running.pop(future)] = future.result()
    finally:
        if records:  # one bookkeeping commit per run, failed runs included
            save_run_records(JobContext(spark=session.get(), config=config, run_id=run_id), records)
    return [outcomes[spec.qualified_name] for spec in specs]


def source_clock(config: PipelineConfig, specs: Sequence[JobSpec]) -> dt.datetime | None:
    """The shop database's clock, read once for a run that extracts from it, so that every
    extract of the run (``orders``, ``order_items``, ``customers``) ends its window at the same
    instant (docs/postgres.md, "The window").

    Returns:
        The clock; None when no selected job extracts from the database, or when the database
        cannot be reached now (each extract then reads the clock itself, and fails with its own
        message naming its table).
    """
    if not any(spec.layer == "bronze" and config.sources.is_database(spec.name) for spec in specs):
        return None
    try:
        return database_now(source_database(config.sources), application="ecom-pipeline run")
    except DatabaseError:
        return None


def _failed_upstream(
    name: str, waits_for: dict[str, list[str]], outcomes: dict[str, JobOutcome]
) -> list[str]:
    """The failed jobs ``name`` depends on, directly or through blocked ones, in graph order."""
    failed: list[str] = []
    for up in waits_for[name]:
        if outcomes[up].status == FAILED:
            failed.append(up)
        elif outcomes[up].status == BLOCKED:
            failed += _failed_upstream(up, waits_for, outcomes)
    return list(dict.fromkeys(failed))


def _run_one(
    session: _LazySession,
    config: PipelineConfig,
    spec: JobSpec,
    as_of: dt.date | None,
    run_id: str,
    records: list[RunRecord],
    full_refresh: bool,
    force: bool,
    clock: dt.datetime | None,
) -> JobOutcome:
    name = spec.qualified_name
    inputs = observe_inputs(spec, config, as_of)
    if not force and inputs is not None:
        idle = _idle_since(spec, config.paths.lake, inputs)
        if idle is not None:
            progress(f"{name}: skipped, nothing it reads changed since run {idle}")
            return JobOutcome(name, SKIPPED, f"inputs unchanged since run {idle}")
    try:
        spark = session.for_job(name, settings=config.spark.job_conf.get(name, {}))
    except ValueError as err:  # a setting of spark.job_conf no session can take: this job fails
        return JobOutcome(name, FAILED, str(err))  # names the job
    ctx = JobContext(
        spark=spark,
        config=config,
        run_id=run_id,
        as_of=as_of,
        full_refresh=full_refresh,
        force=force,
        source_clock=clock,
    )
    try:
        run_job(spec, ctx, records=records)
    except JobFailedError as err:
        return JobOutcome(name, FAILED, str(err))  # names the job: "<job>: <reason>"
    if inputs is not None:
        write_state(config.paths.lake, name, {"job": name, "run_id": run_id, "inputs": inputs})
    return JobOutcome(name, SUCCEEDED)


def observe_inputs(spec: JobSpec, config: PipelineConfig, as_of: dt.date | None) -> dict[str, Any] | None:
    """What ``spec`` would read, as cheap facts: each input's Delta version or landing digest,
    the fingerprint of the configuration it reads (every section but the job-specific ones it
    does not declare), and the as-of date for a job that uses it.

    Returns:
        The facts, or None when one of them cannot be read without Spark (then the job runs).
    """
    facts: dict[str, Any] = {"config": config.rules_fingerprint(spec.settings)}
    if spec.uses_as_of:
        facts["as_of"] = None if as_of is None else as_of.isoformat()
    try:
        for name in spec.inputs:
            layer, _, table = name.partition(".")
            if layer == LANDING and config.sources.is_database(table):
                return None  # the shop's database: only an extract can tell what changed
            if layer == LANDING and config.sources.is_kafka(table):
                # A Kafka topic: its end offsets, asked of the brokers (None: the job runs). A run
                # that succeeded read at least up to the offsets observed before it started.
                offsets = topic_end_offsets(config.sources.clicks)
                if offsets is None:
                    return None
                facts[name] = {"topic": config.sources.clicks.topic, "end_offsets": offsets}
                continue
            if layer == LANDING:
                facts[name] = landing_digest(config.paths.landing, table, as_of)
            else:
                facts[name] = delta_version(f"{config.paths.lake.rstrip('/')}/{layer}/{table}")
    except UnreadableRootError:
        return None
    return facts


def _idle_since(spec: JobSpec, lake: str, inputs: dict[str, Any]) -> str | None:
    """The run id of the job's last success when nothing it reads changed since, else None.

    Its main output must still be there too (a table deleted by hand is built again), unless
    it never had anything to read.
    """
    state = read_state(lake, spec.qualified_name)
    if state is None or state.get("inputs") != inputs:
        return None
    layer, _, table = spec.outputs[0].partition(".")
    nothing_to_read = all(value is None for key, value in inputs.items() if key not in ("config", "as_of"))
    try:
        present = delta_version(f"{lake.rstrip('/')}/{layer}/{table}") is not None
    except UnreadableRootError:
        return None
    return str(state.get("run_id")) if present or nothing_to_read else None


class _LazySession:
    """The Spark session, built on first use; and a session of its own for each job."""

    def __init__(self, source: SessionSource) -> None:
        self._source = source
        self._session: SparkSession | None = source if isinstance(source, SparkSession) else None
        self._lock = threading.Lock()

    def get(self) -> SparkSession:
        with self._lock:
            if self._session is None:
                self._session = self._source()  # type: ignore[operator]
            return self._session

    def for_job(self, job: str, *, settings: Mapping[str, str] | None = None) -> SparkSession:
        """A session sharing the Spark context and the base session's settings, but not later
        changes: jobs running side by side set session settings (a MERGE's commit metadata)
        that must not reach each other's commits.

        ``settings`` (``spark.job_conf.<job>``) are this job's own SQL settings on top.
        The Spark jobs the calling thread starts in it carry the tag ``ecom-job=<job>``
        (:data:`JOB_TAG_PREFIX`) and the local property ``ecom.job`` (:data:`JOB_PROPERTY`,
        also on the jobs Spark starts on its own threads for them); the job runs in that thread.

        Raises:
            ValueError: A setting of ``settings`` cannot differ between sessions (a static
                or core Spark setting: it belongs in ``spark.conf``).
        """
        base = self.get()
        session = base.newSession()
        for key, value in base.conf.getAll.items():
            if base.conf.isModifiable(key) and session.conf.get(key, None) != value:
                session.conf.set(key, value)
        for key, value in (settings or {}).items():
            if not session.conf.isModifiable(key):
                raise ValueError(
                    f"spark.job_conf.{job}: {key} is not a Spark SQL setting a session can change; "
                    "set it for every job in spark.conf"
                )
            session.conf.set(key, value)
        session.addTag(f"{JOB_TAG_PREFIX}{job}")
        base.sparkContext.setLocalProperty(JOB_PROPERTY, job)  # this thread's: set for each job it runs
        return session
