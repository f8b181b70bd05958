"""Operator commands: ``status`` (latest runs, freshness) and ``maintain`` (OPTIMIZE, VACUUM)."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

from pipeline_lib.config import MaintenanceConfig
from pipeline_lib.io.delta import (
    latest_commit,
    optimize,
    read_table,
    register_lake_tables,
    table_exists,
    table_path,
    vacuum,
)
from pipeline_lib.ops.schemas import RUNS_TABLE

SAFE_RETENTION_HOURS = 168
# Columns that queries filter or join on, per table: OPTIMIZE clusters files by them.
ZORDER_BY = {
    "silver.clicks": ["anonymous_id"],
    "gold.fact_order_lines": ["product_sk"],
    "gold.fact_sessions": ["customer_id"],
    "gold.recommendations": ["customer_id"],  # `ecom-pipeline recommend` looks one customer up
}


class UnsafeRetentionError(ValueError):
    """A VACUUM retention below Delta's safe minimum was asked for without allowing it."""


def print_status(spark: SparkSession, lake: str) -> None:
    """Print the latest run of each job and how fresh each gold table is."""
    runs_path = table_path(lake, "ops", RUNS_TABLE)
    if not table_exists(spark, runs_path):
        print(f"no runs recorded in {runs_path} yet")
        return
    latest = Window.partitionBy("job").orderBy(F.desc("started_at"), F.desc("run_id"))
    (
        read_table(spark, runs_path)
        .withColumn("n", F.row_number().over(latest))
        .where(F.col("n") == 1)
        .select(
            "job",
            "status",
            "as_of_date",
            "started_at",
            F.round(F.col("ended_at").cast("double") - F.col("started_at").cast("double"), 1).alias(
                "seconds"
            ),
            "rows_read",
            "rows_written",
            "rows_quarantined",
            F.substring("error", 1, 80).alias("error"),
        )
        .orderBy("job")
        .show(200, truncate=False)
    )
    now = dt.datetime.now(dt.UTC)
    print("gold freshness (last commit, UTC):")
    for name in register_lake_tables(spark, lake, layers=("gold",)):
        layer, table = name.split(".")
        last = latest_commit(spark, table_path(lake, layer, table))
        if last is None:
            continue
        committed = dt.datetime.fromtimestamp(int(last.info.get("timestamp", 0)) / 1000, dt.UTC)
        print(
            f"  {name:32} version {last.version:>5}  {committed:%Y-%m-%d %H:%M:%S}  "
            f"({(now - committed).total_seconds() / 3600:.1f} h ago)"
        )


def maintain(
    spark: SparkSession, lake: str, settings: MaintenanceConfig, *, progress=print
) -> dict[str, str]:
    """OPTIMIZE (with Z-order where queries gain) and VACUUM every table of the lake.

    Then finishes the erasures recorded as pending by ``forget-customer --keep-history``:
    their tables are vacuumed with zero retention (:func:`jobs.erasure.finish_pending_erasures`).

    Raises:
        UnsafeRetentionError: ``vacuum_retention_hours`` is below 168 h and
            ``allow_unsafe_retention`` is false: a shorter retention can delete files
            that a running reader or a time-travel query still needs.
    """
    hours = settings.vacuum_retention_hours
    if hours < SAFE_RETENTION_HOURS and not settings.allow_unsafe_retention:
        raise UnsafeRetentionError(
            f"maintenance.vacuum_retention_hours = {hours} is below the safe {SAFE_RETENTION_HOURS} h; "
            "set maintenance.allow_unsafe_retention: true to accept that older versions and "
            "running readers may break"
        )
    done = {}
    for name in register_lake_tables(spark, lake):
        layer, table = name.split(".")
        path = table_path(lake, layer, table)
        removed = optimize(spark, path, zorder_by=ZORDER_BY.get(name, ()))
        vacuum(spark, path, retention_hours=hours, allow_unsafe=hours < SAFE_RETENTION_HOURS)
        done[name] = f"optimized ({removed} files compacted), vacuumed at {hours} h"
        progress(f"maintain: {name}: {done[name]}")
    # Erasures run with --keep-history left older versions holding the customer: drop them now.
    from jobs.erasure import finish_pending_erasures

    for erasure_id, outcome in finish_pending_erasures(spark, lake, progress=progress).items():
        done[f"erasure {erasure_id}"] = outcome
    return done
