"""Operator-facing behaviour: job locks, run records, status, maintain, and CLI exit codes."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from jobs.framework import JobFailedError, run_job
from jobs.graph import JobSpec
from jobs.operations import UnsafeRetentionError, maintain, print_status
from pipeline_lib.io.delta import read_table, table_path, write_table
from pipeline_lib.ops.context import JobContext, JobResult, new_run_id
from pipeline_lib.ops.locks import JobLockedError, job_lock
from pipeline_lib.ops.schemas import RUNS_TABLE

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_second_holder_of_a_job_lock_is_refused(spark, config):
    lake = config.paths.lake
    with job_lock(spark, lake, "silver.orders", "run-1"):
        with pytest.raises(JobLockedError, match=r"silver.orders is already running \(run run-1"):
            with job_lock(spark, lake, "silver.orders", "run-2"):
                pass
        with job_lock(spark, lake, "silver.clicks", "run-2"):  # another job is not blocked
            pass
    with job_lock(spark, lake, "silver.orders", "run-3"):  # released after the block
        pass


def test_lock_of_a_dead_process_is_taken_over(spark, config, capsys):
    lock = Path(config.paths.lake) / "ops" / "_locks" / "gold.fact_orders.lock"
    lock.parent.mkdir(parents=True)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    import socket

    lock.write_text(
        json.dumps(
            {
                "run_id": "old",
                "host": socket.gethostname(),
                "pid": int(dead.stdout),
                "started_at": "2026-11-25T00:00:00+00:00",
            }
        )
    )
    with job_lock(spark, config.paths.lake, "gold.fact_orders", "new"):
        assert json.loads(lock.read_text())["run_id"] == "new"
    assert "taking over the stale lock" in capsys.readouterr().err
    assert not lock.exists()


def test_every_run_is_recorded_failed_ones_with_their_error(spark, config):
    def succeed(ctx):
        return JobResult(rows_read=3, rows_written=2, rows_quarantined=1, delta_versions={"x": 4})

    def explode(ctx):
        raise ValueError("bad delivery\nsecond line")

    ctx = JobContext(spark=spark, config=config, run_id=new_run_id())
    run_job(JobSpec("silver", "good", succeed, (), (), ""), ctx)
    with pytest.raises(JobFailedError, match=r"^silver.bad: ValueError: bad delivery$"):
        run_job(JobSpec("silver", "bad", explode, (), (), ""), ctx)

    runs = {
        r["job"]: r for r in read_table(spark, table_path(config.paths.lake, "ops", RUNS_TABLE)).collect()
    }
    assert runs["silver.good"]["status"] == "succeeded"
    assert (runs["silver.good"]["rows_read"], runs["silver.good"]["rows_written"]) == (3, 2)
    assert runs["silver.good"]["delta_versions"] == {"x": 4}
    assert runs["silver.good"]["config_hash"] == config.fingerprint()
    assert runs["silver.bad"]["status"] == "failed"
    assert runs["silver.bad"]["error"] == "ValueError: bad delivery"
    assert "Traceback" in json.loads(runs["silver.bad"]["details"])["traceback"]


def test_status_prints_latest_run_per_job(spark, config, capsys):
    ctx = JobContext(spark=spark, config=config, run_id=new_run_id())
    run_job(JobSpec("gold", "dim_date", lambda c: JobResult(rows_written=7), (), (), ""), ctx)
    write_table(spark.range(3), table_path(config.paths.lake, "gold", "dim_date"))

    print_status(spark, config.paths.lake)

    out = capsys.readouterr().out
    assert "gold.dim_date" in out and "succeeded" in out
    assert "gold freshness" in out and "version     0" in out


def test_maintain_refuses_unsafe_retention(spark, config):
    unsafe = dataclasses.replace(config.maintenance, vacuum_retention_hours=1)
    with pytest.raises(UnsafeRetentionError, match=r"below the safe 168 h"):
        maintain(spark, config.paths.lake, unsafe)


def test_maintain_compacts_small_files_and_keeps_content(spark, config):
    path = table_path(config.paths.lake, "silver", "fx_rates")
    for day in range(4):
        write_table(spark.range(day * 10, day * 10 + 10).withColumn("day", F.lit(day)), path)
    before = sorted(r["id"] for r in read_table(spark, path).collect())
    files_before = len(read_table(spark, path).inputFiles())
    assert files_before >= 4

    done = maintain(spark, config.paths.lake, config.maintenance, progress=lambda _m: None)

    assert f"optimized ({files_before} files compacted)" in done["silver.fx_rates"]
    assert sorted(r["id"] for r in read_table(spark, path).collect()) == before
    assert len(spark.read.format("delta").load(path).inputFiles()) == 1


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "jobs", *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=300
    )


def test_cli_failure_is_one_line_and_non_zero(tmp_path):
    result = run_cli("run", "--layer", "silver", "--job", "nope", "--lake", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("ecom-pipeline: error: unknown job 'nope'")

    result = run_cli("run", "--set", "pipeline.session_gap_minutes=never", "--lake", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "ecom-pipeline: error: bad value for 'pipeline.session_gap_minutes' in command line "
        "(pipeline.session_gap_minutes): expected an integer, got 'never'"
    )
