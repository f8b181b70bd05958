"""What every job shares: its context, its result, the registry and the runner.

A job is a function ``(ctx: JobContext) -> JobResult`` registered with :func:`job`. The
runner times it, prints progress on stderr, and appends a run record to
``<lake>/ops/pipeline_runs`` whether it succeeds or fails.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import SparkSession

from pipeline_lib.config import PipelineConfig
from pipeline_lib.delta_io import table_path
from pipeline_lib.locks import JobLockedError, job_lock
from pipeline_lib.retry import Retry, retry_on_conflict
from pipeline_lib.runs import RunRecord, record_run

LAYER_ORDER = ("bronze", "silver", "gold")
# Modules whose import registers jobs, in run order; a module not written yet is skipped.
JOB_MODULES = ("jobs.bronze", "jobs.silver", "jobs.silver_clicks", "jobs.gold", "jobs.gold_aggregates")
# How often a job runs at most when Delta refuses a commit for a concurrent writer's change
# (another tool's MERGE, an OPTIMIZE): every job is idempotent, so running it again is safe.
JOB_CONFLICT_ATTEMPTS = 3


class JobFailedError(RuntimeError):
    """A job failed; the message is the one-line reason shown to the operator."""


@dataclass(frozen=True)
class JobContext:
    """What a job gets: the session, the config, and this run's identity and options."""

    spark: SparkSession
    config: PipelineConfig
    run_id: str
    as_of: dt.date | None = None
    full_refresh: bool = False

    def path(self, layer: str, table: str) -> str:
        """``<lake>/<layer>/<table>``."""
        return table_path(self.config.paths.lake, layer, table)

    def progress(self, message: str) -> None:
        """One line of progress on stderr."""
        print(f"[{dt.datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


@dataclass
class JobResult:
    """What a job reports: row counts, the Delta versions it wrote, and free-form details."""

    rows_read: int = 0
    rows_written: int = 0
    rows_quarantined: int = 0
    delta_versions: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


JobFunction = Callable[[JobContext], JobResult]


@dataclass(frozen=True)
class JobSpec:
    layer: str
    name: str
    func: JobFunction
    description: str

    @property
    def qualified_name(self) -> str:
        return f"{self.layer}.{self.name}"


_REGISTRY: dict[str, JobSpec] = {}


def job(layer: str, name: str) -> Callable[[JobFunction], JobFunction]:
    """Register a job function under ``<layer>.<name>``; registration order is run order."""
    if layer not in LAYER_ORDER:
        raise ValueError(f"unknown layer {layer!r}; expected one of {LAYER_ORDER}")

    def register(func: JobFunction) -> JobFunction:
        doc = (func.__doc__ or "").strip().splitlines()
        _REGISTRY[f"{layer}.{name}"] = JobSpec(layer, name, func, doc[0] if doc else "")
        return func

    return register


def registered_jobs() -> list[JobSpec]:
    """Every job, bronze first, then silver, then gold, each layer in registration order."""
    _load_job_modules()
    # sorted() is stable: within a layer, registration order stays.
    return sorted(_REGISTRY.values(), key=lambda spec: LAYER_ORDER.index(spec.layer))


def select_jobs(layer: str, name: str | None = None) -> list[JobSpec]:
    """The jobs for ``--layer`` (``all`` or one layer) and optional ``--job``.

    Raises:
        JobFailedError: The layer or the job name is unknown.
    """
    specs = registered_jobs()
    if layer != "all":
        if layer not in LAYER_ORDER:
            raise JobFailedError(f"unknown layer {layer!r}; expected bronze, silver, gold or all")
        specs = [s for s in specs if s.layer == layer]
    if name:
        chosen = [s for s in specs if name in (s.name, s.qualified_name)]
        if not chosen:
            known = ", ".join(s.qualified_name for s in specs)
            raise JobFailedError(f"unknown job {name!r} for layer {layer}; known: {known}")
        specs = chosen
    return specs


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus a random suffix."""
    return f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def run_job(spec: JobSpec, ctx: JobContext) -> JobResult:
    """Run one job, report progress, and record the run whatever happens.

    A job refused by Delta for a concurrent writer's commit (see :mod:`pipeline_lib.retry`)
    runs again, up to :data:`JOB_CONFLICT_ATTEMPTS` times in all, under the same lock; each
    retry is a progress line and an entry of ``conflict_retries`` in the run record's details.

    Raises:
        JobFailedError: The job raised (or stayed refused by a concurrent writer); the run
            record holds the error and traceback.
    """
    started = dt.datetime.now(dt.UTC)
    clock = time.monotonic()
    ctx.progress(f"{spec.qualified_name}: started (run {ctx.run_id})")
    result: JobResult | None = None
    error: BaseException | None = None
    retries: list[Retry] = []
    try:
        with job_lock(ctx.spark, ctx.config.paths.lake, spec.qualified_name, ctx.run_id):
            result = retry_on_conflict(
                lambda: spec.func(ctx),
                what=spec.qualified_name,
                attempts=JOB_CONFLICT_ATTEMPTS,
                progress=ctx.progress,
                on_retry=retries.append,
            )
    except JobLockedError as exc:
        # Refused before it started: not a run of this job, so no run record.
        raise JobFailedError(str(exc)) from exc
    except Exception as exc:  # every failure is recorded, then re-raised below
        error = exc
    seconds = time.monotonic() - clock
    outcome = result or JobResult()
    message = None if error is None else one_line(error)
    details = dict(outcome.details)
    if retries:
        details["conflict_retries"] = [dataclasses.asdict(r) for r in retries]
    if error is not None:
        details["traceback"] = "".join(traceback.format_exception(error))[-4000:]
    record = RunRecord(
        run_id=ctx.run_id,
        job=spec.qualified_name,
        layer=spec.layer,
        as_of_date=ctx.as_of,
        started_at=started,
        ended_at=dt.datetime.now(dt.UTC),
        status="failed" if error else "succeeded",
        rows_read=outcome.rows_read,
        rows_written=outcome.rows_written,
        rows_quarantined=outcome.rows_quarantined,
        delta_versions=outcome.delta_versions,
        config_hash=ctx.config.fingerprint(),
        error=message,
        details=details,
    )
    # A blind append, refused only while another writer creates the runs table: retry it.
    retry_on_conflict(
        lambda: record_run(ctx.spark, ctx.config.paths.lake, record),
        what=f"{spec.qualified_name}: run record",
        progress=ctx.progress,
    )
    if error is not None:
        ctx.progress(f"{spec.qualified_name}: FAILED after {seconds:.1f}s: {message}")
        raise JobFailedError(f"{spec.qualified_name}: {message}") from error
    ctx.progress(
        f"{spec.qualified_name}: done in {seconds:.1f}s: {outcome.rows_read} rows in, "
        f"{outcome.rows_written} written, {outcome.rows_quarantined} quarantined"
    )
    return outcome


def one_line(error: BaseException) -> str:
    """The first meaningful line of an error, for the operator.

    A JVM error that PySpark passes on raw (``Py4JJavaError``: "An error occurred while
    calling o123.save.") says nothing by itself; its innermost Java cause does (e.g.
    ``java.io.EOFException: Unexpected end of input stream``), so that is the line shown.
    """
    return f"{type(error).__name__}: {reason_of(error)}"[:500]


def reason_of(error: BaseException) -> str:
    """The first line of what went wrong: the innermost Java cause of a raw JVM error, else the message."""
    text = _java_root_cause(error) or str(error).strip() or type(error).__name__
    return text.splitlines()[0].strip()


def _java_root_cause(error: BaseException) -> str | None:
    java = getattr(error, "java_exception", None)  # set on py4j's Py4JJavaError
    if java is None:
        return None
    try:
        cause = java
        for _ in range(50):  # a cause chain is short; never loop on a cyclic one
            deeper = cause.getCause()
            if deeper is None:
                break
            cause = deeper
        return str(cause.toString()).strip() or None
    except Exception:  # the gateway is gone: fall back to the Python message
        return None


def _load_job_modules() -> None:
    import importlib

    for module in JOB_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
