"""End-to-end latency of ``ecom-pipeline stream``: an event produced -> visible in the one-hour table.

    flock /tmp/spark.lock python -m bench.kafka_latency --rounds 12 --workdir /tmp/kafka-latency

Starts the test broker (``tools/kafka_broker.py``, a free port, 3 partitions) and
``ecom-pipeline stream`` as a subprocess (its default trigger, ``sources.clicks.stream_trigger_seconds``,
unless ``--trigger``). Each round sends one probe event (a ``product_view`` of a product of its
own, ``event_ts`` now) with ``--filler`` ordinary events beside it, notes when the broker
acknowledged it, and polls ``gold.product_interest_hourly`` with the ``deltalake`` reader (no
Spark in this process) until the probe's product is there. Rounds start at random offsets of the
trigger. Prints one JSON line: median and p95 of the latency, over the rounds; results are noted
in ``bench/results/MEASUREMENTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from deltalake import DeltaTable

from pipeline_lib.io.kafka import produce_lines
from tools.kafka_broker import start_broker

REPO = Path(__file__).resolve().parents[1]
TOPIC = "clicks"


def _event(event_id: str, product_id: str) -> bytes:
    now = dt.datetime.now(dt.UTC).isoformat()
    return json.dumps(
        {
            "event_id": event_id,
            "event_ts": now,
            "event_type": "product_view",
            "anonymous_id": f"A{event_id[-1]}",
            "product_id": product_id,
        }
    ).encode()


def _visible(table: Path, product_id: str) -> bool:
    try:
        rows = DeltaTable(str(table)).to_pyarrow_table(columns=["product_id"]).column("product_id")
    except Exception:  # not created yet, or a commit in progress
        return False
    return product_id in set(rows.to_pylist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--filler", type=int, default=50, help="ordinary events sent with each probe")
    parser.add_argument("--trigger", type=int, default=None, help="seconds between micro-batches")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for one probe")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ecom-kafka-latency"))
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    (args.workdir / "landing").mkdir(parents=True)
    lake = args.workdir / "lake"
    table = lake / "gold" / "product_interest_hourly"
    with start_broker(args.workdir / "kafka") as broker:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("ECOM")}
        environ["ECOM_CLICKS_KAFKA"] = broker.bootstrap_servers
        environ["PYTHONPATH"] = os.pathsep.join([str(REPO), environ.get("PYTHONPATH", "")])
        command = [sys.executable, "-m", "jobs", "stream", "--lake", str(lake)]
        command += ["--landing", str(args.workdir / "landing")]
        if args.trigger is not None:
            command += ["--set", f"sources.clicks.stream_trigger_seconds={args.trigger}"]
        with (args.workdir / "stream.stderr").open("w") as stderr:
            stream = subprocess.Popen(
                command,
                cwd=REPO,
                env=environ,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        try:
            # Warm-up: the JVM's start and the first batches are not the steady state measured.
            produce_lines(broker.bootstrap_servers, TOPIC, [(b"w", _event("W0", "P-warm"))])
            deadline = time.monotonic() + 300
            while not _visible(table, "P-warm"):
                if time.monotonic() > deadline or stream.poll() is not None:
                    raise SystemExit(f"the stream did not start; see {args.workdir / 'stream.stderr'}")
                time.sleep(0.5)
            latencies: list[float] = []
            rng = random.Random(7)
            for round_no in range(args.rounds):
                time.sleep(rng.uniform(0, 5))
                probe = f"P-probe-{round_no}"
                messages = [(b"p", _event(f"R{round_no}", probe))]
                messages += [
                    (b"f%d" % i, _event(f"F{round_no}-{i}", f"P{i % 20}")) for i in range(args.filler)
                ]
                produce_lines(broker.bootstrap_servers, TOPIC, messages)  # returns once acknowledged
                produced = time.monotonic()
                while not _visible(table, probe):
                    if time.monotonic() - produced > args.timeout:
                        raise SystemExit(f"probe {probe} not visible after {args.timeout:.0f} s")
                    time.sleep(0.1)
                latencies.append(time.monotonic() - produced)
        finally:
            stream.send_signal(signal.SIGTERM)
            stream.wait(180)
    ordered = sorted(latencies)
    print(
        json.dumps(
            {
                "rounds": len(ordered),
                "trigger_s": args.trigger or "config default",
                "median_s": round(statistics.median(ordered), 1),
                "p95_s": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
                "min_s": round(ordered[0], 1),
                "max_s": round(ordered[-1], 1),
                "stream_exit": stream.returncode,
                "cores": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
