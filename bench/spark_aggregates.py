"""The Spark side of the peer comparison, warm: the two gold aggregates, each run twice in one session.

``python -m bench.spark_aggregates --lake L --landing D --as-of DATE [--set K=V ...]``: one
Spark session; each of :data:`AGGREGATE_JOBS` runs forced (as ``run --force`` does: computed
again and compared with its partition, nothing written when it is equal) once to warm the
session (code generation, the JIT, Delta's log cache of the silver tables), then once more.
The last line printed is JSON: the second run's seconds per job, from its run record (kept
in memory, not appended to the lake). The DuckDB side (:mod:`bench.peer_duckdb`) is timed
warm in its process as well: read, compute and write, after the imports.

Why not the full run's records: there the runner sets the two jobs beside others (at scale 5,
``silver.clicks``), whose share of the two cores their records count. Why not a process per
job: its first job pays the JVM's warm-up (15-20 s for a job that takes 3-4 s warm).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Sequence

AGGREGATE_JOBS = ("gold.customer_segments", "gold.product_popularity")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.spark_aggregates", description=__doc__)
    parser.add_argument("--lake", required=True)
    parser.add_argument("--landing", required=True)
    parser.add_argument("--as-of", required=True, type=dt.date.fromisoformat)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args(argv)

    from jobs.cli import load_cli_config
    from jobs.framework import run_job
    from jobs.graph import JOB_GRAPH
    from pipeline_lib.ops.context import JobContext, new_run_id
    from pipeline_lib.ops.runs import RunRecord
    from pipeline_lib.session import build_spark_session

    config = load_cli_config(argparse.Namespace(env=None, conf_dir=None, **vars(args)))
    specs = [spec for spec in JOB_GRAPH if spec.qualified_name in AGGREGATE_JOBS]
    spark = build_spark_session(config.spark)
    seconds: dict[str, float] = {}
    for spec in specs:
        for attempt in ("warm-up", "timed"):
            records: list[RunRecord] = []
            run_id = new_run_id()
            context = JobContext(spark=spark, config=config, run_id=run_id, as_of=args.as_of, force=True)
            run_job(spec, context, records=records)
            took = (records[0].ended_at - records[0].started_at).total_seconds()
            print(f"{spec.qualified_name}: {attempt} {took:.2f}s", flush=True)
        seconds[spec.qualified_name] = round(took, 2)
    print(json.dumps(seconds, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
