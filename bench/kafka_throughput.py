"""Bronze throughput from Kafka: a generated shop's clicks sent to a topic, then one bronze.clicks run.

    flock /tmp/spark.lock python -m bench.kafka_throughput --scale 1 --workdir /tmp/kafka-bench

Generates ``--days`` of deliveries at ``--scale`` (about scale x 1,000,000 click events), starts
the test broker (``tools/kafka_broker.py``, a free port, 3 partitions), sends every click line
with the producer of ``generate --to-kafka``, then times one ``bronze.clicks`` run from the topic
in a warm session (the JVM start is not counted). Prints one JSON line; results are noted in
``bench/results/MEASUREMENTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import time
from pathlib import Path

from ecom_generator import generate_landing
from ecom_generator.kafka import click_messages
from jobs.framework import run_job
from jobs.graph import select_jobs
from pipeline_lib.config import load_config
from pipeline_lib.io.kafka import produce_lines
from pipeline_lib.ops.context import JobContext, new_run_id
from pipeline_lib.session import build_spark_session
from tools.kafka_broker import start_broker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ecom-kafka-bench"))
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    landing = args.workdir / "landing"
    generate_landing(landing, start=dt.date(2026, 3, 1), days=args.days, scale=args.scale, seed=args.seed)
    with start_broker(args.workdir / "kafka") as broker:
        started = time.monotonic()
        sent = produce_lines(broker.bootstrap_servers, "clicks", click_messages(landing))
        produce_s = time.monotonic() - started
        environ = {k: v for k, v in os.environ.items() if not k.startswith("ECOM")}
        environ["ECOM_CLICKS_KAFKA"] = broker.bootstrap_servers
        overrides = {"paths.landing": str(landing), "paths.lake": str(args.workdir / "lake")}
        config = load_config("local", environ=environ, overrides=overrides)
        spark = build_spark_session(config.spark, kafka=True)
        spark.range(1).count()  # the JVM's start is not the source's cost
        started = time.monotonic()
        result = run_job(select_jobs("bronze", "clicks")[0], JobContext(spark, config, new_run_id()))
        bronze_s = time.monotonic() - started
    print(
        json.dumps(
            {
                "scale": args.scale,
                "events": sent,
                "produce_s": round(produce_s, 1),
                "produce_events_per_s": round(sent / produce_s),
                "bronze_s": round(bronze_s, 1),
                "bronze_events_per_s": round(result.rows_read / bronze_s),
                "corrupt_rows": result.details["corrupt_rows"],
                "master": spark.sparkContext.master,
                "cores": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
