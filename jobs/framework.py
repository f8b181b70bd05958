"""How one job runs (its context and result are in :mod:`pipeline_lib.ops.context`).

A job is a function ``(ctx: JobContext) -> JobResult`` declared in :mod:`jobs.graph`.
:func:`run_job` times it, holds its lock, prints progress on stderr, and appends a run
record to ``<lake>/ops/pipeline_runs`` whether it succeeds or fails; :mod:`jobs.runner`
decides which jobs run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import traceback

from jobs.graph import JobSpec
from pipeline_lib.ops.context import JobContext, JobResult
from pipeline_lib.ops.locks import JobLockedError, job_lock
from pipeline_lib.ops.retry import Retry, retry_on_conflict
from pipeline_lib.ops.runs import RunRecord, record_runs

# How often a job runs at most when Delta refuses a commit for a concurrent writer's change
# (another tool's MERGE, an OPTIMIZE), or when a lost executor took a local checkpoint of the
# job with it: every job is idempotent, so running it again is safe.
JOB_CONFLICT_ATTEMPTS = 3


class JobFailedError(RuntimeError):
    """A job failed; the message is the one-line reason shown to the operator."""


def run_job(spec: JobSpec, ctx: JobContext, *, records: list[RunRecord] | None = None) -> JobResult:
    """Run one job, report progress, and record the run whatever happens.

    A job refused by Delta for a concurrent writer's commit, or whose local checkpoint was lost
    with an executor (see :mod:`pipeline_lib.ops.retry`), runs again, up to
    :data:`JOB_CONFLICT_ATTEMPTS` times in all, under the same lock; each retry is a progress
    line and an entry of ``conflict_retries`` in the run record's details.

    Args:
        records: Where to put the run record, for the caller to append with the others of
            its run (:func:`pipeline_lib.ops.runs.record_runs`); None appends it now.

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
            func = spec.load()
            result = retry_on_conflict(
                lambda: func(ctx),
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
    if records is not None:
        records.append(record)
    else:
        save_run_records(ctx, [record])
    if error is not None:
        ctx.progress(f"{spec.qualified_name}: FAILED after {seconds:.1f}s: {message}")
        raise JobFailedError(f"{spec.qualified_name}: {message}") from error
    ctx.progress(
        f"{spec.qualified_name}: done in {seconds:.1f}s: {outcome.rows_read} rows in, "
        f"{outcome.rows_written} written, {outcome.rows_quarantined} quarantined"
    )
    return outcome


def save_run_records(ctx: JobContext, records: list[RunRecord]) -> None:
    """Append run records in one commit (:func:`pipeline_lib.ops.runs.record_runs`)."""
    record_runs(ctx.spark, ctx.config.paths.lake, records, progress=ctx.progress)


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
