"""Concurrent writers: Delta's commit conflicts are retried or refused cleanly; nothing is lost or doubled.

Delta commits optimistically: of two transactions that overlap, the second to commit is
refused (``ConcurrentAppendException``, ``ConcurrentDeleteReadException``...) when the first
changed what it read, and the refused one left nothing in the table. The races here are
made real, not simulated: the loser's MERGE source sleeps in the JVM (``java_method`` on
``Thread.sleep``, no Python worker involved) inside its transaction, and the winner commits
during that sleep, once the loser has passed the point where it fixed its snapshot. Each
test asserts that a conflict did happen, then that the final table is exactly what an
undisturbed run gives.

- ``run_job`` re-runs a job refused by a concurrent commit (every job is idempotent) and
  records each retry in the run record's details;
- OPTIMIZE during a MERGE-ing silver job: the job loses, is retried, and the table equals
  that of an undisturbed run;
- two writers MERGE-ing into one table: the loser retries (``pipeline_lib.ops.retry``) and both
  writers' rows are there once;
- two blind appends do not conflict at all (Delta only checks what a transaction read,
  and an append reads nothing), and both land;
- the same job started twice (two processes): the second is refused by the job lock with a
  one-line reason, and leaves no trace.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from chispa import assert_df_equality
from delta.exceptions.base import ConcurrentAppendException, ConcurrentDeleteReadException
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

import pipeline_lib.io.delta as delta_io
from jobs.framework import JOB_CONFLICT_ATTEMPTS, JobFailedError, run_job
from jobs.graph import JobSpec, select_jobs
from pipeline_lib.bronze.schemas import LANDING_SOURCES
from pipeline_lib.config import PipelineConfig
from pipeline_lib.io.delta import read_table, table_path, upsert, write_table
from pipeline_lib.io.quality import read_quality_metrics
from pipeline_lib.ops.context import JobContext, JobResult, new_run_id
from pipeline_lib.ops.locks import JobLockedError, job_lock
from pipeline_lib.ops.retry import (
    ConflictRetriesExhaustedError,
    Retry,
    is_delta_conflict,
    retry_on_conflict,
)
from pipeline_lib.ops.schemas import METRICS_TABLE, RUNS_TABLE
from pipeline_lib.ops.watermarks import CDF_PROPERTIES
from tests.support import run_cli

SLEEP_MS = 5000  # how long the loser's MERGE source sleeps inside its transaction
APPEND_MESSAGE = "[DELTA_CONCURRENT_APPEND.WITHOUT_HINT] ConcurrentAppendException: Files were added"


# --- the retry helper on its own (no Spark) --------------------------------------------------


def test_retry_runs_the_action_again_after_a_conflict_and_reports_each_retry():
    calls: list[int] = []

    def action() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConcurrentAppendException(message=APPEND_MESSAGE)
        return "merged"

    lines: list[str] = []
    retries: list[Retry] = []
    waits: list[float] = []
    result = retry_on_conflict(
        action,
        what="silver.orders",
        attempts=4,
        progress=lines.append,
        on_retry=retries.append,
        sleep=waits.append,
    )

    assert result == "merged"
    assert len(calls) == 3
    assert [r.attempt for r in retries] == [1, 2]
    assert retries[0].error.startswith("ConcurrentAppendException: [DELTA_CONCURRENT_APPEND")
    assert 0.25 <= waits[0] < 0.75 and 0.5 <= waits[1] < 1.5  # exponential, jittered
    assert re.fullmatch(
        r"silver\.orders: attempt 1 of 4 refused by a concurrent Delta writer "
        r"\(ConcurrentAppendException: .*\); retrying in \d+\.\ds",
        lines[0],
    )


def test_retry_gives_up_after_the_last_attempt_with_a_one_line_reason():
    def always_refused() -> None:
        raise ConcurrentDeleteReadException(message="This transaction attempted to read files deleted")

    waits: list[float] = []
    with pytest.raises(ConflictRetriesExhaustedError) as caught:
        retry_on_conflict(always_refused, what="gold.fact_orders", attempts=3, sleep=waits.append)

    assert str(caught.value) == (
        "gold.fact_orders: still refused by a concurrent Delta writer after 3 attempts (last: "
        "ConcurrentDeleteReadException: This transaction attempted to read files deleted); "
        "run it again when the other writer is done"
    )
    assert isinstance(caught.value.__cause__, ConcurrentDeleteReadException)
    assert len(waits) == 2


def test_other_errors_are_raised_at_once():
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("bad delivery")

    with pytest.raises(ValueError, match="bad delivery"):
        retry_on_conflict(broken, what="x", sleep=lambda _s: None)
    assert calls == [1]


def test_a_conflict_wrapped_in_another_error_is_recognised():
    try:
        try:
            raise RuntimeError("io.delta.exceptions.ConcurrentAppendException: Files were added")
        except RuntimeError as inner:
            raise RuntimeError("the job failed") from inner
    except RuntimeError as outer:
        assert is_delta_conflict(outer)
    assert not is_delta_conflict(RuntimeError("Concurrent shoppers in the data"))
    with pytest.raises(ValueError, match="at least 1"):
        retry_on_conflict(lambda: None, what="x", attempts=0)


# --- helpers for real races ------------------------------------------------------------------


def sleeping_source(source: DataFrame, key: str, key_value: str, milliseconds: int) -> DataFrame:
    """``source`` unchanged, but evaluating the row ``key == key_value`` sleeps in the JVM.

    ``java_method`` is nondeterministic, so Spark neither folds nor drops it, and a MERGE
    materializes such a source inside its transaction: the sleep happens after the MERGE
    fixed the snapshot it read, and before it commits.
    """
    nap = F.expr(f"java_method('java.lang.Thread', 'sleep', {int(milliseconds)}L)")
    asleep = F.when(F.col(key) == key_value, nap)
    return source.where(F.coalesce(asleep, F.lit("awake")) != F.lit("never"))


@contextmanager
def signal_after_key_check(thread_name: str, merge: str) -> Iterator[threading.Event]:
    """An event set when ``thread_name`` has checked the keys of ``merge`` (just before its MERGE).

    Args:
        merge: The ``what`` that ``delta_io.upsert`` passes, ``"upsert into <path>"``.
    """
    checked = threading.Event()
    real = delta_io.assert_unique_keys

    def check_then_signal(df: DataFrame, keys, *, what: str) -> None:  # type: ignore[no-untyped-def]
        real(df, keys, what=what)
        if threading.current_thread().name == thread_name and what == merge:
            checked.set()

    delta_io.assert_unique_keys = check_then_signal  # type: ignore[assignment]
    try:
        yield checked
    finally:
        delta_io.assert_unique_keys = real


def in_thread(name: str, target: Callable[[], object]) -> tuple[threading.Thread, dict[str, object]]:
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = target()
        except BaseException as error:  # handed to the test thread
            outcome["error"] = error

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread, outcome


# --- run_job retries a job refused by a concurrent commit -----------------------------------


@pytest.mark.slow
def test_run_job_retries_a_job_refused_by_a_concurrent_commit_and_records_it(spark, config):
    attempts: list[int] = []

    def refused_once(ctx: JobContext) -> JobResult:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConcurrentAppendException(message=APPEND_MESSAGE)
        return JobResult(rows_read=2, rows_written=2)

    ctx = JobContext(spark=spark, config=config, run_id=new_run_id())
    result = run_job(JobSpec("silver", "flaky", refused_once, (), (), ""), ctx)

    assert result.rows_written == 2 and len(attempts) == 2
    record = read_table(spark, table_path(config.paths.lake, "ops", RUNS_TABLE)).collect()
    assert [(r["job"], r["status"]) for r in record] == [("silver.flaky", "succeeded")]
    retries = json.loads(record[0]["details"])["conflict_retries"]
    assert [r["attempt"] for r in retries] == [1]
    assert retries[0]["error"].startswith("ConcurrentAppendException")


@pytest.mark.slow
def test_run_job_gives_up_after_bounded_attempts_and_records_the_failure(spark, config):
    def always_refused(ctx: JobContext) -> JobResult:
        raise ConcurrentAppendException(message=APPEND_MESSAGE)

    ctx = JobContext(spark=spark, config=config, run_id=new_run_id())
    with pytest.raises(
        JobFailedError, match=r"^silver\.stuck: ConflictRetriesExhaustedError: silver\.stuck: still"
    ):
        run_job(JobSpec("silver", "stuck", always_refused, (), (), ""), ctx)

    record = read_table(spark, table_path(config.paths.lake, "ops", RUNS_TABLE)).first()
    assert record["status"] == "failed"
    assert f"after {JOB_CONFLICT_ATTEMPTS} attempts" in record["error"]
    assert len(json.loads(record["details"])["conflict_retries"]) == JOB_CONFLICT_ATTEMPTS - 1


# --- OPTIMIZE while a job MERGEs into the same table -----------------------------------------

DAY1, DAY2 = dt.date(2024, 1, 2), dt.date(2024, 1, 3)


def _bronze(
    spark: SparkSession, lake: str, source: str, day: dt.date, rows: list[dict[str, str]], part: int = 0
) -> None:
    fields = LANDING_SOURCES[source].fields
    records = [
        (
            *[row.get(f) for f in fields],
            None,
            None,
            f"file:/landing/{source}/ingest_date={day}/{source}-{part}.csv",
            day,
            dt.datetime.combine(day, dt.time(6)),
            f"bronze-{day}",
        )
        for row in rows
    ]
    write_table(
        spark.createDataFrame(records, LANDING_SOURCES[source].bronze_schema),
        table_path(lake, "bronze", source),
        partition_by=["_ingest_date"],
        properties=CDF_PROPERTIES,
    )


def _order(order_id: str, status: str, updated: str) -> dict[str, str]:
    return {
        "order_id": order_id,
        "customer_id": "c1",
        "order_status": status,
        "order_ts": "2024-01-02T10:00:00Z",
        "updated_at": updated,
        "currency": "EUR",
        "channel": "web",
        "ship_country": "DE",
        "ship_city": "Berlin",
        "payment_type": "card",
        "shipping_fee": "4.99",
    }


@pytest.fixture(scope="module")
def orders_lake(spark: SparkSession, base_config: PipelineConfig, tmp_path_factory) -> PipelineConfig:
    """A lake whose silver.orders holds day 1 in three files, with day 2 waiting in bronze."""
    root = tmp_path_factory.mktemp("orders_lake")
    config = base_config.with_paths(landing=str(root / "landing"), lake=str(root / "lake"))
    lake = config.paths.lake
    _bronze(
        spark, lake, "fx_rates", DAY1, [{"rate_date": "2024-01-01", "currency": "USD", "rate_to_base": "0.9"}]
    )
    run_job(select_jobs("silver", "fx_rates")[0], JobContext(spark=spark, config=config, run_id="fx"))
    for part in range(3):  # three deliveries, three MERGEs: three small files to compact
        rows = [_order(f"o{i}", "paid", "2024-01-02T10:00:00Z") for i in (2 * part, 2 * part + 1)]
        _bronze(spark, lake, "orders", DAY1, rows, part=part)
        run_job(
            select_jobs("silver", "orders")[0], JobContext(spark=spark, config=config, run_id=f"day-1-{part}")
        )
    day2 = [_order(f"o{i}", "shipped", "2024-01-03T10:00:00Z") for i in range(3)]
    day2 += [_order(f"n{i}", "paid", "2024-01-03T09:00:00Z") for i in range(3)]
    day2.append(_order("o0", "paid", "2024-01-02T09:00:00Z"))  # an older version: superseded
    day2.append({**_order("bad", "paid", "2024-01-03T09:00:00Z"), "order_status": "lost"})  # quarantined
    _bronze(spark, lake, "orders", DAY2, day2)
    return config


def _copy_lake(config: PipelineConfig, target: Path) -> PipelineConfig:
    shutil.copytree(config.paths.lake, target / "lake")
    return config.with_paths(landing=str(target / "landing"), lake=str(target / "lake"))


@pytest.mark.slow
def test_optimize_during_a_merging_job_makes_the_job_retry_and_loses_nothing(
    spark: SparkSession, orders_lake: PipelineConfig, tmp_path: Path, monkeypatch
):
    undisturbed = _copy_lake(orders_lake, tmp_path / "undisturbed")
    raced = _copy_lake(orders_lake, tmp_path / "raced")
    orders_spec = select_jobs("silver", "orders")
    run_job(orders_spec[0], JobContext(spark=spark, config=undisturbed, run_id="day-2"))

    target = table_path(raced.paths.lake, "silver", "orders")
    real_upsert = upsert

    def upsert_that_sleeps(source: DataFrame, path: str, **options) -> None:  # type: ignore[no-untyped-def]
        if path == target:
            source = sleeping_source(source, "order_id", "n0", SLEEP_MS)
        real_upsert(source, path, **options)

    monkeypatch.setattr("pipeline_lib.silver.steps.upsert", upsert_that_sleeps)
    ctx = JobContext(spark=spark, config=raced, run_id="day-2")
    with signal_after_key_check("job", f"upsert into {target}") as merging:
        job, outcome = in_thread("job", lambda: run_job(orders_spec[0], ctx))
        assert merging.wait(timeout=600), "the job never reached its MERGE"
        # What `maintain` does per table, with the retry it needs (see the report to the lead).
        optimize_retries: list[Retry] = []
        optimized = retry_on_conflict(
            lambda: DeltaTable.forPath(spark, target).optimize().executeCompaction(),
            what="OPTIMIZE silver.orders",
            on_retry=optimize_retries.append,
        )
        job.join(timeout=900)

    assert "error" not in outcome, outcome.get("error")
    assert optimized.select("metrics.numFilesRemoved").first()[0] >= 2
    record = (
        read_table(spark, table_path(raced.paths.lake, "ops", RUNS_TABLE))
        .where((F.col("run_id") == "day-2") & (F.col("job") == "silver.orders"))
        .collect()
    )
    assert len(record) == 1 and record[0]["status"] == "succeeded"
    job_retries = json.loads(record[0]["details"]).get("conflict_retries", [])
    # The race is real: one side was refused by the other's commit (normally the job, whose
    # MERGE sleeps in its transaction while OPTIMIZE commits), and retried.
    assert len(job_retries) + len(optimize_retries) >= 1
    assert all("Concurrent" in r["error"] for r in job_retries), job_retries
    operations = [r["operation"] for r in DeltaTable.forPath(spark, target).history().collect()]
    assert "OPTIMIZE" in operations and "MERGE" in operations
    # Nothing lost, nothing doubled: the table and the quarantine are those of the undisturbed run.
    for layer in ("silver", "quarantine"):
        for table in ("orders", "fx_rates"):
            expected_path = table_path(undisturbed.paths.lake, layer, table)
            if not DeltaTable.isDeltaTable(spark, expected_path):
                continue
            actual = read_table(spark, table_path(raced.paths.lake, layer, table)).drop("_quarantined_at")
            expected = read_table(spark, expected_path).drop("_quarantined_at")
            assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)
    actual_orders = read_table(spark, target)
    assert actual_orders.count() == actual_orders.select("order_id").distinct().count() == 9


@pytest.mark.slow
def test_a_retried_job_counts_its_quality_metrics_once(
    spark: SparkSession, orders_lake: PipelineConfig, tmp_path: Path, monkeypatch
):
    config = _copy_lake(orders_lake, tmp_path)
    merges: list[int] = []

    def upsert_refused_once(source: DataFrame, path: str, **options) -> None:  # type: ignore[no-untyped-def]
        merges.append(1)
        if len(merges) == 1:  # the MERGE lost to a concurrent writer: it committed nothing
            raise ConcurrentAppendException(message=APPEND_MESSAGE)
        upsert(source, path, **options)

    monkeypatch.setattr("pipeline_lib.silver.steps.upsert", upsert_refused_once)
    run_job(select_jobs("silver", "orders")[0], JobContext(spark=spark, config=config, run_id="day-2"))

    assert len(merges) == 2
    # Both attempts measured: the log holds both, the current measures count each delivery once.
    log = read_table(spark, table_path(config.paths.lake, "ops", METRICS_TABLE)).where(
        F.col("run_id") == "day-2"
    )
    metrics = read_quality_metrics(spark, config.paths.lake).where(F.col("run_id") == "day-2")
    assert metrics.count() > 0 and log.count() == 2 * metrics.count()
    assert metrics.count() == metrics.select("table", "delivery", "rule").distinct().count()
    quarantine = read_table(spark, table_path(config.paths.lake, "quarantine", "orders"))
    assert quarantine.where(F.col("order_id") == "bad").count() == 1


# --- two writers MERGE into one table --------------------------------------------------------


@pytest.mark.slow
def test_two_writers_merging_into_one_table_keep_every_row_once(spark: SparkSession, tmp_path: Path):
    path = str(tmp_path / "customers")
    upsert(
        spark.createDataFrame([(f"c{i}", 0) for i in range(4)], "customer_id string, visits int"),
        path,
        keys=["customer_id"],
    )
    first = spark.createDataFrame(
        [("c0", 1), ("c1", 1), ("a1", 1), ("a2", 1)], "customer_id string, visits int"
    )
    second = spark.createDataFrame([("c2", 2), ("b1", 2)], "customer_id string, visits int")
    retries: list[Retry] = []

    def first_writer() -> None:
        retry_on_conflict(
            lambda: upsert(sleeping_source(first, "customer_id", "a1", SLEEP_MS), path, keys=["customer_id"]),
            what="writer one",
            on_retry=retries.append,
        )

    with signal_after_key_check("writer-one", f"upsert into {path}") as merging:
        thread, outcome = in_thread("writer-one", first_writer)
        assert merging.wait(timeout=600)
        # Commits while writer one sleeps in its MERGE (so writer one is the one refused,
        # unless this machine is slow enough for writer one to commit first).
        retry_on_conflict(
            lambda: upsert(second, path, keys=["customer_id"]), what="writer two", on_retry=retries.append
        )
        thread.join(timeout=900)

    assert "error" not in outcome, outcome.get("error")
    assert len(retries) >= 1 and all("Concurrent" in r.error for r in retries), retries
    actual = sorted((r["customer_id"], r["visits"]) for r in read_table(spark, path).collect())
    assert actual == [("a1", 1), ("a2", 1), ("b1", 2), ("c0", 1), ("c1", 1), ("c2", 2), ("c3", 0)]


@pytest.mark.slow
def test_two_blind_appends_do_not_conflict_and_both_land(spark: SparkSession, tmp_path: Path):
    path = str(tmp_path / "runs")
    write_table(spark.createDataFrame([("seed", 0)], "run_id string, n int"), path)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def append(name: str) -> None:
        rows = spark.createDataFrame([(name, i) for i in range(50)], "run_id string, n int")
        barrier.wait()
        try:
            write_table(rows, path, mode="append")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=append, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)

    assert errors == []
    counts = {r["run_id"]: r["count"] for r in read_table(spark, path).groupBy("run_id").count().collect()}
    assert counts == {"seed": 1, "a": 50, "b": 50}


# --- the same job twice: refused by its lock ---------------------------------------------------


@pytest.mark.slow
def test_the_same_job_started_twice_is_refused_by_its_lock(spark: SparkSession, config: PipelineConfig):
    landing = Path(config.paths.landing) / "orders" / "ingest_date=2024-01-02"
    landing.mkdir(parents=True)
    (landing / "orders.csv").write_text("order_id,customer_id\no1,c1\n")
    lake = config.paths.lake

    with job_lock(spark, lake, "bronze.orders", "the-first-run"):
        second = run_cli(
            "run",
            "--layer",
            "bronze",
            "--job",
            "orders",
            "--landing",
            config.paths.landing,
            "--lake",
            lake,
            check=False,
        )

    assert second.returncode == 1
    since = _lock_started(second.stderr)
    assert second.stderr.strip().splitlines()[-1] == (
        "ecom-pipeline: error: bronze.orders is already running "
        f"(run the-first-run on {socket.gethostname()}, pid {os.getpid()}, since {since}); "
        f"if that process is gone, delete {lake}/ops/_locks/bronze.orders.lock"
    )
    assert not (Path(lake) / "bronze" / "orders").exists()
    assert not (Path(lake) / "ops" / RUNS_TABLE).exists()  # refused before it started: no run record


def _lock_started(stderr: str) -> str:
    match = re.search(r"since (\S+)\);", stderr)
    assert match, stderr
    return match.group(1)


def _most_simultaneous_holders(spark: SparkSession, lake: str, trial: int) -> int:
    """Two threads take one job lock at the same moment; how many held it at once."""
    barrier = threading.Barrier(2)
    holding: list[str] = []
    counter = threading.Lock()
    most = 0

    def take(name: str) -> None:
        nonlocal most
        barrier.wait()
        try:
            with job_lock(spark, lake, "gold.fact_orders", f"{name}-{trial}"):
                with counter:
                    holding.append(name)
                    most = max(most, len(holding))
                time.sleep(0.5)
                with counter:
                    holding.remove(name)
        except JobLockedError:
            pass

    threads = [threading.Thread(target=take, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return most


@pytest.mark.slow
def test_two_threads_taking_one_job_lock_at_the_same_moment_never_both_hold_it(spark, config):
    overlaps = sum(_most_simultaneous_holders(spark, config.paths.lake, trial) > 1 for trial in range(20))
    assert overlaps == 0, f"both threads held the lock at once in {overlaps} of 20 trials"
