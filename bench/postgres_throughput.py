"""Rows per second through PostgreSQL: the extract into bronze, and the publish of gold.

    flock /tmp/spark.lock python -m bench.postgres_throughput --scale 1 --workdir /tmp/ecom-pg-bench

Generates ``--days`` of deliveries from 2026-03-01 at ``--scale`` (no injected defects: every
delivered row fits the typed tables), starts the test server (``tests/pg_server.py``: a real
PostgreSQL from the system binaries, durability off, a free port), and times, each as one
``ecom-pipeline`` process (``python -m jobs``, one job at a time):

1. the load: the generator's ``--to-postgres`` step (:func:`ecom_generator.postgres.load_into_postgres`,
   day by day, one transaction per day), in-process;
2. the extract: ``run --layer bronze`` with ``ECOM_SOURCE_DB`` set; ``bronze.orders``,
   ``bronze.order_items`` and ``bronze.customers`` are timed by their run records (rows read,
   seconds from ``started_at`` to ``ended_at``: the job, not the JVM's start);
3. the publish: ``publish --to URL`` after ``run --layer all`` on the same lake; rows of every
   gold table published and the seconds of the ``publish.postgres`` run record (and of the
   whole command).

Prints one JSON line and writes it to ``<workdir>/postgres_throughput.json``; results are
noted in ``bench/results/MEASUREMENTS.md``. The password of the test server goes to the
subprocesses in their environment only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pyspark.sql import functions as F

from ecom_generator import generate_landing
from ecom_generator.postgres import load_into_postgres
from pipeline_lib.config import load_config
from pipeline_lib.io.delta import read_table, table_path
from pipeline_lib.ops.schemas import RUNS_TABLE
from pipeline_lib.session import build_spark_session
from tests.pg_server import running_postgres

EXTRACTED = ("orders", "order_items", "customers")
PUBLISH_JOB = "publish.postgres"


def ecom_pipeline(*args: str, env: dict[str, str]) -> float:
    """Run ``ecom-pipeline <args>`` in a fresh process; its wall seconds (fails on a non-zero exit)."""
    started = time.monotonic()
    completed = subprocess.run([sys.executable, "-m", "jobs", *args], env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if completed.returncode != 0:
        tail = "\n".join(completed.stderr.splitlines()[-20:])
        raise SystemExit(f"`ecom-pipeline {' '.join(args)}` exited {completed.returncode}:\n{tail}")
    return seconds


def first_run_records(lake: Path, jobs: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The first run record of each of ``jobs``: rows read and written, seconds, details."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ECOM")}
    config = load_config("local", environ=environ, overrides={"paths.lake": str(lake)})
    spark = build_spark_session(config.spark, app_name="postgres-throughput records")
    runs = read_table(spark, table_path(str(lake), "ops", RUNS_TABLE)).where(F.col("job").isin(*jobs))
    first: dict[str, dict[str, Any]] = {}
    for row in runs.orderBy("started_at").collect():  # a few rows: one per job and run
        first.setdefault(
            row.job,
            {
                "rows_read": row.rows_read,
                "rows_written": row.rows_written,
                "seconds": (row.ended_at - row.started_at).total_seconds(),
                "details": json.loads(row.details) if row.details else {},
            },
        )
    return first


def note(message: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ecom-pg-bench"))
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    landing, lake = args.workdir / "landing", args.workdir / "lake"
    started = time.monotonic()
    generate_landing(
        landing, start=dt.date(2026, 3, 1), days=args.days, scale=args.scale, seed=args.seed, defect_rate=0.0
    )
    generate_s = time.monotonic() - started
    note(f"generated in {generate_s:.1f} s")
    with running_postgres() as server:
        with server.connect() as connection:
            loaded = load_into_postgres(landing, connection)
        note(f"loaded {loaded.rows} in {loaded.seconds:.1f} s")
        environ = {k: v for k, v in os.environ.items() if not k.startswith("ECOM")}
        env = {
            **environ,
            "ECOM_SOURCE_DB": server.url(),
            "ECOM_SOURCE_DB_PASSWORD": server.password,
            "ECOM_PUBLISH_DB_PASSWORD": server.password,
            "ECOM__PIPELINE__MAX_PARALLEL_JOBS": "1",  # one job at a time: each record its own
        }
        paths = ["--landing", str(landing), "--lake", str(lake)]
        bronze_s = ecom_pipeline("run", "--layer", "bronze", *paths, env=env)
        note(f"run --layer bronze: {bronze_s:.1f} s")
        all_s = ecom_pipeline("run", "--layer", "all", *paths, env=env)
        note(f"run --layer all: {all_s:.1f} s")
        publish_s = ecom_pipeline("publish", "--to", server.url(), "--lake", str(lake), env=env)
        note(f"publish: {publish_s:.1f} s")
    records = first_run_records(lake, (*(f"bronze.{s}" for s in EXTRACTED), PUBLISH_JOB))
    extract = {s: records[f"bronze.{s}"] for s in EXTRACTED}
    published = records[PUBLISH_JOB]
    figures = {
        "scale": args.scale,
        "days": args.days,
        "seed": args.seed,
        "generate_s": round(generate_s, 1),
        "load_s": round(loaded.seconds, 1),
        "load_rows": loaded.rows,
        "load_rows_per_s": round(sum(loaded.rows.values()) / loaded.seconds),
        "bronze_run_s": round(bronze_s, 1),
        "extract": {
            source: {
                "rows": extract[source]["rows_read"],
                "seconds": round(extract[source]["seconds"], 1),
                "rows_per_s": round(extract[source]["rows_read"] / extract[source]["seconds"]),
                "partitions": extract[source]["details"].get("partitions"),
            }
            for source in EXTRACTED
        },
        "run_all_s": round(all_s, 1),
        "publish": {
            "rows": published["rows_written"],
            "seconds": round(published["seconds"], 1),
            "rows_per_s": round(published["rows_written"] / published["seconds"]),
            "command_s": round(publish_s, 1),
            "tables": published["details"].get("tables"),
        },
        "cores": os.cpu_count(),
    }
    line = json.dumps(figures)
    (args.workdir / "postgres_throughput.json").write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
