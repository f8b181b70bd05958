"""Gold tables computed as of a date: one partition per as-of date, replaced only when it changes.

The steps the as-of jobs (``jobs.gold_aggregates``, ``jobs.gold_recommendations``) are made of:
read silver pinned at its current versions, resolve the as-of date (``--as-of``, else the
latest order date bounded by the latest delivery), fingerprint the inputs (silver versions,
``--as-of``, settings, code), skip when the table's latest commit wrote that very fingerprint,
else build the rows and replace the ``as_of_date`` partition (Delta ``replaceWhere``) unless it
already holds them. See ``docs/segments_and_popularity.md``.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import importlib
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline_lib.bronze.schemas import INGEST_DATE
from pipeline_lib.io.delta import (
    latest_user_metadata,
    read_partition,
    read_table,
    table_exists,
    table_version,
    write_table,
)
from pipeline_lib.io.frames import count_and_compare
from pipeline_lib.ops.context import JobContext, JobResult
from pipeline_lib.ops.watermarks import CDF_PROPERTIES

AS_OF_COLUMN = "as_of_date"
INPUTS_KEY = "aggregate_inputs"  # in the userMetadata of each write: the inputs' fingerprint
# The code an aggregate's rows depend on: a change to it changes the fingerprint.
_CODE_MODULES = (
    "jobs.gold_aggregates",
    "pipeline_lib.gold.as_of",
    "pipeline_lib.gold.facts",
    "pipeline_lib.gold.popularity",
    "pipeline_lib.gold.schemas",
    "pipeline_lib.gold.segments",
    "pipeline_lib.silver.schemas",
)


class MissingInputError(RuntimeError):
    """A silver table the aggregate needs is missing, or no as-of date can be derived."""


def read_silver(ctx: JobContext, tables: Sequence[str]) -> tuple[dict[str, DataFrame], dict[str, int]]:
    """The silver ``tables`` as of their current versions, and those versions.

    Each table is read at the version listed, so the versions name exactly what was read.

    Raises:
        MissingInputError: A table does not exist (the silver layer has not run).
    """
    versions = {}
    for table in tables:
        path = ctx.path("silver", table)
        version = table_version(ctx.spark, path)
        if version is None:
            raise MissingInputError(f"no Delta table silver.{table} at {path}: run the silver layer first")
        versions[table] = version
    frames = {t: read_table(ctx.spark, ctx.path("silver", t), version=v) for t, v in versions.items()}
    return frames, versions


@functools.cache
def _code_digest(modules: tuple[str, ...] = _CODE_MODULES) -> str:
    sources = (inspect.getsource(importlib.import_module(name)) for name in modules)
    return hashlib.sha256("\0".join(sources).encode()).hexdigest()


def inputs_fingerprint(
    versions: Mapping[str, int],
    as_of: dt.date | None,
    settings: Mapping[str, Any],
    *,
    code_modules: Sequence[str] = _CODE_MODULES,
) -> str:
    """A digest of everything an as-of partition is computed from.

    The input versions read, the ``--as-of`` asked (None: the latest order date, itself a
    function of silver.orders), the job's settings and the source of the code that computes
    the rows (``code_modules``, by default :data:`_CODE_MODULES`).
    """
    document = {
        "silver": dict(versions),
        "as_of": None if as_of is None else as_of.isoformat(),
        "settings": settings,
        "code": _code_digest(tuple(code_modules)),
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


def published_from(ctx: JobContext, path: str, fingerprint: str) -> dict[str, Any] | None:
    """The latest commit's record if it wrote these very inputs' partition, else None.

    Any later commit (another as-of date, an erasure, maintenance) makes it None: the job
    then recomputes and compares, as without the record.
    """
    if ctx.full_refresh:
        return None
    raw = latest_user_metadata(ctx.spark, path)
    try:
        record = json.loads(raw) if raw else None
    except ValueError:
        return None
    if isinstance(record, dict) and record.get(INPUTS_KEY) == fingerprint:
        return record
    return None


def collect_order_stats(orders: DataFrame) -> tuple[dt.date | None, int]:
    """The default as-of date and the number of rows of silver.orders (one aggregate row).

    The default is the latest ``order_date``, but never after the latest delivery of the orders
    (``_ingest_date``): an order dated in the future cannot move the as-of date past the data.
    Plain maxima and a count: Delta answers them from the log's file statistics, without
    reading the table (its metadata-only aggregates do not apply around an expression).
    """
    row = orders.agg(
        F.max("order_date").alias("latest_order"),
        F.max(INGEST_DATE).alias("latest_delivery"),
        F.count(F.lit(1)).alias("rows"),
    ).first()
    if row is None:
        return None, 0
    dates = [day for day in (row["latest_order"], row["latest_delivery"]) if day is not None]
    return (min(dates) if dates else None), int(row["rows"])  # as least(): a null is skipped


def resolve_as_of(ctx: JobContext, orders: DataFrame) -> tuple[dt.date, int]:
    """``ctx.as_of``, else the latest order date of silver.orders bounded by its latest delivery;
    and the orders' row count.

    Raises:
        MissingInputError: No as-of date was given and silver.orders has no dated order.
    """
    if ctx.as_of is not None:
        return ctx.as_of, orders.count()  # from the log's statistics, as above
    latest, rows = collect_order_stats(orders)
    if latest is None:
        raise MissingInputError("no --as-of given and silver.orders holds no order date to default to")
    return latest, rows


def _as_of_predicate(as_of: dt.date) -> str:
    return f"{AS_OF_COLUMN} = DATE'{as_of.isoformat()}'"


def compare_with_partition(rows: DataFrame, path: str, as_of: dt.date) -> tuple[int, bool]:
    """How many ``rows`` there are, and whether the table's ``as_of`` partition holds exactly
    them (as a multiset: duplicates count).

    When the partition holds data files, one query counts and compares
    (:func:`pipeline_lib.io.frames.count_and_compare`). When it holds none (a new as-of date:
    a daily run), the Delta log says so without a query and only the count runs: the rows
    are new, unless there are none. A missing table, or one without a column of ``rows``,
    counts as changed.
    """
    spark = rows.sparkSession
    if not table_exists(spark, path):
        return rows.count(), False
    stored = read_partition(spark, path, _as_of_predicate(as_of))
    if stored is None:
        count = rows.count()
        return count, count == 0
    if any(column not in stored.columns for column in rows.columns):
        return rows.count(), False
    return count_and_compare(rows, stored)


def replace_as_of_partition(rows: DataFrame, path: str, as_of: dt.date, *, user_metadata: str) -> None:
    """Replace the ``as_of`` partition of the table at ``path`` with ``rows`` (one commit).

    Creates the table (partitioned by ``as_of_date``, change data feed on) when missing.
    Delta checks that every written row matches the ``replaceWhere`` predicate.
    """
    if not table_exists(rows.sparkSession, path):
        write_table(
            rows,
            path,
            mode="overwrite",
            partition_by=[AS_OF_COLUMN],
            properties=CDF_PROPERTIES,
            user_metadata=user_metadata,
        )
        return
    write_table(
        rows,
        path,
        mode="overwrite",
        partition_by=[AS_OF_COLUMN],
        replace_where=_as_of_predicate(as_of),
        user_metadata=user_metadata,
    )


def publish_as_of(
    ctx: JobContext,
    table: str,
    orders: DataFrame,
    build: Callable[[dt.date], DataFrame],
    fingerprint: str,
) -> JobResult:
    """Write one as-of partition of ``<lake>/gold/<table>`` unless it already holds its rows.

    Skips the computation when the table's latest commit wrote the same inputs (see
    :func:`published_from`), unless the run is forced (``ctx.force``); else builds the rows
    with ``build(as_of)`` and compares them with the stored partition.
    """
    path = ctx.path("gold", table)
    done = None if ctx.force else published_from(ctx, path, fingerprint)
    if done is not None:
        ctx.progress(
            f"gold.{table}: as of {done['as_of_date']}: {done['partition_rows']} rows, inputs unchanged "
            "since they were written; nothing computed"
        )
        return JobResult(
            rows_read=int(done["rows_read"]),
            rows_written=0,
            delta_versions={path: table_version(ctx.spark, path)},  # type: ignore[dict-item]
            details={
                "as_of_date": done["as_of_date"],
                "partition": "unchanged",
                "partition_rows": int(done["partition_rows"]),
                "inputs": "unchanged since the partition was written",
            },
        )
    as_of, rows_read = resolve_as_of(ctx, orders)
    rows = build(as_of).persist()
    try:
        if ctx.full_refresh:
            count, unchanged = rows.count(), False
        else:
            count, unchanged = compare_with_partition(rows, path, as_of)
        if unchanged:
            ctx.progress(f"gold.{table}: as of {as_of}: {count} rows, unchanged; nothing written")
            written, outcome = 0, "unchanged"
        else:
            record = {
                INPUTS_KEY: fingerprint,
                "as_of_date": as_of.isoformat(),
                "partition_rows": count,
                "rows_read": rows_read,
            }
            replace_as_of_partition(rows, path, as_of, user_metadata=json.dumps(record, sort_keys=True))
            ctx.progress(f"gold.{table}: as of {as_of}: {count} rows written")
            written, outcome = count, "replaced"
    finally:
        rows.unpersist()
    version = table_version(ctx.spark, path)
    return JobResult(
        rows_read=rows_read,
        rows_written=written,
        delta_versions={} if version is None else {path: version},
        details={"as_of_date": as_of.isoformat(), "partition": outcome, "partition_rows": count},
    )
