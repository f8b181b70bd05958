"""``ecom-pipeline stream`` against a real broker: SIGTERM, SIGKILL, and the one-hour interest table.

The stream runs as a subprocess (the command an operator starts), on the session's broker
(tests/conftest.py) with a one-second trigger; the test reads the Delta tables it writes with
the test session's Spark. No mocks. docs/kafka.md, "Continuous mode", describes what is proven.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs.framework import run_job
from jobs.graph import select_jobs
from pipeline_lib.bronze.kafka import KAFKA_OFFSET, KAFKA_PARTITION
from pipeline_lib.config import PipelineConfig, load_config
from pipeline_lib.io.delta import read_table
from pipeline_lib.io.kafka import checkpoint_path, produce_lines
from pipeline_lib.ops.context import JobContext, new_run_id
from tools.kafka_broker import Broker

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
WINDOW_MIN, SLIDE_MIN, LATENESS_MIN = 60, 5, 10
TYPES = ("product_view", "add_to_cart", "purchase", "page_view")
COUNTED = {"product_view": "views", "add_to_cart": "add_to_carts", "purchase": "purchases"}


class Stream:
    """``ecom-pipeline stream`` in a process group of its own (the JVM is its child)."""

    def __init__(self, broker: Broker, root: Path, topic: str) -> None:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("ECOM")}
        environ["ECOM_CLICKS_KAFKA"] = broker.bootstrap_servers
        environ["PYTHONPATH"] = os.pathsep.join([str(REPO), environ.get("PYTHONPATH", "")])
        (root / "landing").mkdir(parents=True, exist_ok=True)
        self.stderr_path = root / "stream.stderr"
        command = [
            sys.executable,
            "-m",
            "jobs",
            "stream",
            "--lake",
            str(root / "lake"),
            "--landing",
            str(root / "landing"),
            "--set",
            f"sources.clicks.topic={topic}",
            "--set",
            "sources.clicks.stream_trigger_seconds=1",
        ]
        with self.stderr_path.open("w") as stderr:
            self.process = subprocess.Popen(
                command,
                cwd=REPO,
                env=environ,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                start_new_session=True,
            )

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def kill_group(self) -> None:
        """SIGKILL to the command and its JVM at once, as a machine that lost power; wait until gone."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        raise AssertionError("the stream's JVM outlived SIGKILL")


@pytest.fixture
def streams() -> Iterator[list[Stream]]:
    started: list[Stream] = []
    yield started
    for stream in started:  # a failed test leaves no process behind
        if stream.process.poll() is None:
            stream.kill_group()


def kafka_config(broker: Broker, root: Path, topic: str) -> PipelineConfig:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ECOM")}
    environ["ECOM_CLICKS_KAFKA"] = broker.bootstrap_servers
    overrides = {
        "paths.landing": str(root / "landing"),
        "paths.lake": str(root / "lake"),
        "sources.clicks.topic": topic,
    }
    return load_config("local", conf_dir=REPO / "conf", environ=environ, overrides=overrides)


def click(event_id: str, ts: dt.datetime, event_type: str, product_id: str | None) -> dict[str, object]:
    event: dict[str, object] = {
        "event_id": event_id,
        "event_ts": ts.isoformat(),
        "event_type": event_type,
        "anonymous_id": f"A{hash(event_id) % 5}",
    }
    if product_id is not None:
        event["product_id"] = product_id
    return event


def send(broker: Broker, topic: str, values: list[bytes]) -> None:
    produce_lines(broker.bootstrap_servers, topic, [(b"k%d" % (i % 3), v) for i, v in enumerate(values)])


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str, stream: Stream) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stream.process.poll() is not None:
            code = stream.process.returncode
            raise AssertionError(f"the stream exited ({code}):\n{stream.stderr()[-3000:]}")
        try:
            if condition():
                return
        except Exception:  # the table is not there yet
            pass
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what}; stream's stderr:\n{stream.stderr()[-3000:]}")


def expected_interest(events: list[dict[str, object]]) -> dict[tuple[str, int], tuple[int, int, int]]:
    """The table computed independently: each distinct counted event in every window holding it."""
    counts: dict[tuple[str, int], Counter[str]] = {}
    seen: set[object] = set()
    for event in events:
        if event["event_id"] in seen or event["event_type"] not in COUNTED or "product_id" not in event:
            continue
        seen.add(event["event_id"])
        epoch = int(dt.datetime.fromisoformat(str(event["event_ts"])).timestamp())
        last_start = epoch - epoch % (SLIDE_MIN * 60)
        for k in range(WINDOW_MIN // SLIDE_MIN):
            start = last_start - k * SLIDE_MIN * 60
            key = (str(event["product_id"]), start)
            counts.setdefault(key, Counter())[COUNTED[str(event["event_type"])]] += 1
    return {key: (c["views"], c["add_to_carts"], c["purchases"]) for key, c in counts.items()}


def interest_table(spark: SparkSession, lake: Path) -> dict[tuple[str, int], tuple[int, int, int]]:
    rows = read_table(spark, f"{lake}/gold/product_interest_hourly").select(
        "product_id",
        F.col("window_start").cast("long").alias("start"),
        (F.col("window_end").cast("long") - F.col("window_start").cast("long")).alias("length"),
        "views",
        "add_to_carts",
        "purchases",
    )
    table = {}
    for row in rows.collect():
        assert row.length == WINDOW_MIN * 60
        table[(row.product_id, row.start)] = (row.views, row.add_to_carts, row.purchases)
    return table


def test_stream_lands_every_event_once_refreshes_the_interest_table_and_stops_on_sigterm(
    spark, broker, tmp_path, streams
):
    topic = "stream-term"
    stream = Stream(broker, tmp_path, topic)
    streams.append(stream)
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    base = now - dt.timedelta(minutes=40)
    first = [
        click(f"E{i:03d}", base + dt.timedelta(minutes=i % 25), TYPES[i % 4], f"P{i % 3}") for i in range(60)
    ]
    first += [click("E900", base, "product_view", None)]  # no product: counted nowhere
    retries = first[:5]  # the tracker's retries: same event_id, counted once
    values = [json.dumps(e).encode() for e in [*first, *retries]] + [b"GET /p/1 HTTP/1.1"]
    send(broker, topic, values)
    bronze_path = tmp_path / "lake" / "bronze" / "clicks"
    wait_for(
        lambda: read_table(spark, str(bronze_path)).count() == len(values),
        timeout=120,
        what="the first events in bronze",
        stream=stream,
    )
    wait_for(
        lambda: interest_table(spark, tmp_path / "lake") == expected_interest(first),
        timeout=60,
        what="the first events in gold.product_interest_hourly",
        stream=stream,
    )

    # Next micro-batches: the watermark is now the newest event_ts less the lateness bound.
    newest = base + dt.timedelta(minutes=24)
    second = [
        click("E100", newest - dt.timedelta(minutes=LATENESS_MIN - 3), "add_to_cart", "P1"),  # late, in bound
        click("E101", newest - dt.timedelta(hours=3), "purchase", "P2"),  # beyond the bound: dropped
        click("E102", newest + dt.timedelta(minutes=1), "purchase", "P0"),
    ]
    send(broker, topic, [json.dumps(e).encode() for e in second])
    values += [json.dumps(e).encode() for e in second]
    counted = [*first, second[0], second[2]]
    wait_for(
        lambda: interest_table(spark, tmp_path / "lake") == expected_interest(counted),
        timeout=60,
        what="the second events in gold.product_interest_hourly",
        stream=stream,
    )

    stream.process.send_signal(signal.SIGTERM)
    stdout, _ = stream.process.communicate(timeout=120)
    log = stream.stderr()
    assert stream.process.returncode == 0, log[-3000:]
    assert "stream stopped after" in stdout
    assert "stopping at the end of the running micro-batch" in log
    assert "bronze.clicks: batch 0: " in log and " lag " in log and " events/s" in log
    assert "gold.product_interest_hourly: batch " in log and "late events dropped" in log

    bronze = read_table(spark, str(bronze_path))
    assert bronze.count() == len(values)
    assert bronze.select(KAFKA_PARTITION, KAFKA_OFFSET).distinct().count() == len(values)
    silver = read_table(spark, f"{tmp_path}/lake/silver/clicks")
    delivered = {str(e["event_id"]) for e in [*first, *second] if "product_id" in e}
    silver_ids = [r.event_id for r in silver.select("event_id").collect()]
    assert delivered <= set(silver_ids)  # the late one too: silver keeps what gold's window drops
    assert len(silver_ids) == len(set(silver_ids))
    assert interest_table(spark, tmp_path / "lake") == expected_interest(counted)


def test_a_killed_stream_loses_and_doubles_nothing_when_a_scheduled_run_resumes(
    spark, broker, tmp_path, streams
):
    topic = "stream-kill"
    stream = Stream(broker, tmp_path, topic)
    streams.append(stream)
    now = dt.datetime.now(dt.UTC)
    values = [json.dumps(click(f"K{i:05d}", now, "product_view", f"P{i % 7}")).encode() for i in range(1500)]
    lake = tmp_path / "lake"
    bronze_path = lake / "bronze" / "clicks"
    send(broker, topic, values[:100])
    wait_for(
        lambda: read_table(spark, str(bronze_path)).count() > 0,
        timeout=120,
        what="a first micro-batch in bronze",
        stream=stream,
    )

    def produce_continuously() -> None:
        for start in range(100, len(values), 25):
            send(broker, topic, values[start : start + 25])
            time.sleep(0.05)

    producer = threading.Thread(target=produce_continuously)
    producer.start()
    checkpoint = Path(checkpoint_path(str(lake), "bronze", "clicks"))

    def batch_in_flight() -> bool:  # its offsets logged, its commit not yet
        logged = {p.name for p in (checkpoint / "offsets").iterdir() if p.name.isdigit()}
        committed = {p.name for p in (checkpoint / "commits").iterdir() if p.name.isdigit()}
        return bool(logged - committed) and int(max(logged, key=int)) >= 2

    wait_for(batch_in_flight, timeout=60, what="a bronze micro-batch in flight", stream=stream)
    stream.kill_group()
    producer.join(60)

    config = kafka_config(broker, tmp_path, topic)  # the scheduled run, on the stream's checkpoint
    resumed = run_job(select_jobs("bronze", "clicks")[0], JobContext(spark, config, new_run_id()))

    bronze = read_table(spark, str(bronze_path))
    assert bronze.count() == len(values), resumed.details
    assert bronze.select(KAFKA_PARTITION, KAFKA_OFFSET).distinct().count() == len(values)
    assert bronze.select("event_id").distinct().count() == len(values)
