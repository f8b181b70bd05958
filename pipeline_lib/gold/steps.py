"""The steps every keyed gold job takes: pin its inputs, skip, rebuild whole or by key, report.

A gold fact or dimension job (:mod:`jobs.gold`, :mod:`jobs.gold_stock`) pins the Delta
versions of its sources (:class:`pipeline_lib.ops.watermarks.PinnedInputs`), is skipped when
none moved, rebuilds the whole table the first time (or on ``--full-refresh``) and otherwise
replaces the rows of the keys that changed; every write carries the pinned versions in its
commit. These functions are those steps, shared so that each job stays a short recipe.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame

from pipeline_lib.io.delta import MergeCounts, replace_groups, table_exists, table_version, write_table
from pipeline_lib.ops.context import JobContext, JobResult
from pipeline_lib.ops.watermarks import CDF_PROPERTIES, PinnedInputs

__all__ = [
    "is_up_to_date",
    "job_result",
    "needs_full_build",
    "overwrite",
    "pin_inputs",
    "replace_keys",
    "skipped",
]


def pin_inputs(ctx: JobContext, table: str, sources: Sequence[str]) -> PinnedInputs:
    """The Delta versions of ``sources`` the job ``gold.<table>`` reads in this run."""
    return PinnedInputs.pin(ctx.spark, ctx.lake, f"gold.{table}", sources, ctx.run_id)


def is_up_to_date(ctx: JobContext, path: str, inputs: PinnedInputs) -> bool:
    """The table exists and no source moved since the versions its last commit recorded."""
    return not ctx.full_refresh and table_exists(ctx.spark, path) and inputs.unchanged


def needs_full_build(ctx: JobContext, path: str, inputs: PinnedInputs) -> bool:
    """A full refresh, a missing table or a first run: rebuild the whole table."""
    return ctx.full_refresh or not table_exists(ctx.spark, path) or inputs.first_time


def job_result(ctx: JobContext, path: str, counts: MergeCounts | None, *, mode: str) -> JobResult:
    """What the job's own commit did: Delta's counts of that write, not of the table's latest commit."""
    if counts is None:
        return JobResult(details={"mode": "skipped", "reason": "content unchanged"})
    version = table_version(ctx.spark, path)
    return JobResult(
        rows_read=counts.source_rows,
        rows_written=counts.written,
        delta_versions={} if version is None else {path: version},
        details={
            "mode": mode,
            "inserted": counts.inserted,
            "updated": counts.updated,
            "deleted": counts.deleted,
        },
    )


def skipped(reason: str) -> JobResult:
    """The result of a job that had nothing to write, with the reason."""
    return JobResult(details={"mode": "skipped", "reason": reason})


def overwrite(ctx: JobContext, table: DataFrame, path: str, inputs: PinnedInputs) -> JobResult:
    """``table`` becomes the whole table, in one commit that records ``inputs``."""
    table = table.localCheckpoint()  # counted and written: compute it once
    rows = table.count()
    write_table(
        table,
        path,
        mode="overwrite",
        overwrite_schema=True,
        properties=CDF_PROPERTIES,
        user_metadata=inputs.state,
    )
    return job_result(ctx, path, MergeCounts(inserted=rows, source_rows=rows), mode="full")


def replace_keys(
    ctx: JobContext,
    rebuilt: DataFrame,
    path: str,
    *,
    keys: Sequence[str],
    scope: DataFrame,
    inputs: PinnedInputs,
) -> JobResult:
    """Replace the rows of the ``scope`` keys with ``rebuilt`` (see :func:`replace_groups`)."""
    counts = replace_groups(rebuilt, path, row_keys=keys, scope=scope, user_metadata=inputs.state)
    if counts is None:
        return skipped("no rows in the changed scope")
    return job_result(ctx, path, counts, mode="incremental")
