"""The pipeline on a real Spark standalone cluster, submitted with ``spark-submit.sh``.

A master and one worker (from the installed pyspark, on 127.0.0.1 and ports the OS hands
out, tests/cluster.py) serve the module. The test submits every job, kills the executor JVM
while a task of silver.orders runs, and compares the silver and gold tables with the
session's locally built reference lake: one cluster run (4-7 min on two cores) proves that
the jobs scale out unchanged and that losing an executor changes no result.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession

from pipeline_lib.config import PipelineConfig
from pipeline_lib.delta_io import read_table, table_path
from tests.cluster import StandaloneCluster, die_with_parent, wait_for
from tests.support import REPO, cli_environment

pytestmark = pytest.mark.slow

SUBMIT_TIMEOUT_S = 1800  # as tests/support.py CLI_TIMEOUT_S: a busy 2-core machine is slow
GOLD_TABLES = (
    "dim_date",
    "dim_customer",
    "dim_product",
    "fact_order_lines",
    "fact_orders",
    "fact_sessions",
    "customer_segments",
    "product_popularity",
)
SILVER_TABLES = ("orders", "order_items", "customers", "products", "clicks", "fx_rates")
# The one column whose values legitimately differ between two runs over the same landing
# zone: silver rows keep the lineage of the bronze row they came from, and `_run_id` names
# the run that ingested it (the reference lake was built under another run id). The other
# lineage columns (`_source_file`, `_ingest_date`) are compared. Gold has no such column:
# every gold column is compared.
RUN_DEPENDENT_COLUMNS = ("_run_id",)

# Executor log lines (INFO, in <work>/<app>/<executor>/stderr) around each task.
TASK_STARTED = re.compile(r"Running task \S+ in stage \S+ \(TID (\d+)\)")
TASK_ENDED = re.compile(r"Finished task \S+ in stage \S+ \(TID (\d+)\)")
# The kill waits for this job to start, so that it hits the middle of the run, not bronze alone.
KILL_AFTER_JOB = "silver.orders"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneCluster]:
    """One master and one worker (2 cores, 2 GiB for executors) for the module's submissions."""
    with StandaloneCluster(tmp_path_factory.mktemp("standalone"), cores=2, memory="2g") as running:
        yield running


@dataclass
class Submission:
    """A finished ``spark-submit.sh`` run: exit status, console output, and the application it ran."""

    returncode: int
    output: str
    app: dict[str, Any]

    @property
    def app_id(self) -> str:
        return str(self.app.get("id"))

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


def submit(
    cluster: StandaloneCluster,
    *pipeline_args: str,
    scratch: Path,
    on_output_line: Callable[[str], None] | None = None,
) -> Submission:
    """Run ``./spark-submit.sh --master <the cluster> -- <pipeline_args>``; wait for it to end.

    Args:
        cluster: The running cluster.
        pipeline_args: The ``ecom-pipeline`` command line.
        scratch: The driver's scratch folder.
        on_output_line: Called with each line of output (the jobs' progress lines among them)
            as it comes, on a reader thread.

    Returns:
        The run, with the application the master lists as finished since the call began
        (empty when the run failed before registering one).
    """
    known_apps = {app["id"] for app in (cluster.master_state() or {}).get("completedapps", [])}
    command = [
        str(REPO / "spark-submit.sh"),
        *("--master", cluster.master_url),
        # One executor of 1 GiB with the worker's 2 cores; the driver (client mode) on
        # 127.0.0.1, where the executor reaches it.
        *("--executor-memory", "1g"),
        *("--conf", "spark.cores.max=2"),
        *("--conf", "spark.driver.host=127.0.0.1"),
        *("--conf", "spark.driver.bindAddress=127.0.0.1"),
        *("--conf", f"spark.local.dir={scratch}"),
        "--",
        *pipeline_args,
    ]
    scratch.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    # ECOM__SPARK__MASTER of cli_environment() is ignored under spark-submit (pipeline_lib/session.py):
    # --master decides. Its other small settings (2 shuffle partitions, no driver UI) apply,
    # but not interpreted evaluation: here the expressions are compiled, as in production, and
    # the tables must still equal the reference lake's (built without code generation).
    environment = cli_environment(SPARK_LOCAL_IP="127.0.0.1")
    del environment["ECOM__SPARK__CONF__spark.sql.codegen.factoryMode"]
    # One stream: spark-submit forwards the Python driver's stderr (progress, errors) to its stdout.
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )

    def read_output() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if on_output_line is not None:
                on_output_line(line)

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    try:
        process.wait(timeout=SUBMIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    finally:
        reader.join(timeout=30)

    def new_apps() -> list[dict[str, Any]]:
        finished = (cluster.master_state() or {}).get("completedapps", [])
        return [app for app in finished if app["id"] not in known_apps]

    apps = (
        new_apps() if process.returncode else wait_for("the master to list the run", new_apps, timeout_s=60)
    )
    assert len(apps) <= 1, f"expected one new application on the master, found {apps}"
    return Submission(process.returncode, "".join(lines), apps[0] if apps else {})


def assert_same_rows(actual: DataFrame, expected: DataFrame, name: str, ignore: tuple[str, ...] = ()) -> None:
    """Equal as multisets of rows, with the same column names and types (minus ``ignore``)."""
    actual = actual.drop(*ignore)
    expected = expected.drop(*ignore)
    assert actual.schema.simpleString() == expected.schema.simpleString(), f"{name}: schemas differ"
    expected_rows = expected.count()
    assert expected_rows > 0, f"{name}: the reference table is empty, nothing to compare"
    assert actual.count() == expected_rows, f"{name}: row counts differ"
    missing = expected.exceptAll(actual).count()
    extra = actual.exceptAll(expected).count()
    assert (missing, extra) == (0, 0), f"{name}: {missing} reference rows missing, {extra} rows extra"


def assert_same_tables(
    spark: SparkSession, lake: Path, reference: PipelineConfig, layer: str, tables: tuple[str, ...]
) -> None:
    for table in tables:
        assert_same_rows(
            read_table(spark, table_path(str(lake), layer, table)),
            read_table(spark, table_path(reference.paths.lake, layer, table)),
            f"{layer}.{table}",
            ignore=RUN_DEPENDENT_COLUMNS if layer != "gold" else (),
        )


@dataclass
class ExecutorKiller:
    """Once job ``after`` has started, SIGKILLs the executor JVM while one of its tasks runs.

    The kill lands mid-task: the executor's own log (its ``stderr`` in the worker's folder
    for it, which is also its working directory) shows a task started and not finished.
    """

    cluster: StandaloneCluster
    after: str
    started: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    killed: dict[str, object] = field(default_factory=dict)

    def on_output_line(self, line: str) -> None:
        if f"{self.after}: started" in line:
            self.started.set()

    def run(self) -> None:
        """Poll until a task is in flight after ``after`` started, kill, and record what was killed."""
        while not self.started.wait(0.1):
            if self.finished.is_set():
                return
        while not self.finished.is_set():
            for pid in self.cluster.executor_pids():
                executor_dir = Path(os.readlink(f"/proc/{pid}/cwd"))
                log = (executor_dir / "stderr").read_text(errors="replace")
                in_flight = set(TASK_STARTED.findall(log)) - set(TASK_ENDED.findall(log))
                if in_flight:
                    os.kill(pid, signal.SIGKILL)
                    self.killed = {
                        "pid": pid,
                        "app_id": executor_dir.parent.name,
                        "executor_id": executor_dir.name,
                        "tasks_in_flight": sorted(in_flight, key=int),
                    }
                    return
            time.sleep(0.02)


def test_the_pipeline_on_a_cluster_that_loses_its_executor_mid_job_builds_the_local_tables(
    spark: SparkSession, reference_lake: PipelineConfig, cluster: StandaloneCluster, tmp_path: Path
) -> None:
    """Every job through spark-submit.sh, the executor JVM SIGKILLed during silver.orders.

    One run proves both: the jobs scale out unchanged (they ran on the cluster's executors)
    and losing an executor mid-job changes no silver or gold row.
    """
    lake = tmp_path / "lake"
    killer = ExecutorKiller(cluster, after=KILL_AFTER_JOB)

    with ThreadPoolExecutor(max_workers=1) as pool:
        watching = pool.submit(killer.run)
        try:
            run = submit(
                cluster,
                *("run", "--layer", "all", "--landing", reference_lake.paths.landing, "--lake", str(lake)),
                scratch=tmp_path / "driver",
                on_output_line=killer.on_output_line,
            )
        finally:
            killer.finished.set()
        watching.result()

    assert run.returncode == 0, f"spark-submit.sh exited {run.returncode} after the kill:\n{run.tail()}"
    assert "gold.product_popularity: done" in run.output
    # It ran on the cluster: the master lists it as finished, and its executors ran tasks.
    assert run.app["state"] == "FINISHED", run.app
    executor_logs = [d / "stderr" for d in cluster.executor_dirs(run.app_id)]
    assert any(TASK_ENDED.search(log.read_text(errors="replace")) for log in executor_logs)
    assert killer.killed, f"no task of the executor was seen running after {KILL_AFTER_JOB} started"
    assert killer.killed["app_id"] == run.app_id
    lost = killer.killed["executor_id"]
    # The driver lost the running task(s) with the executor, and the worker started a new one.
    assert f"ExecutorLostFailure (executor {lost} exited" in run.output, run.tail()
    executors = [d.name for d in cluster.executor_dirs(run.app_id)]
    assert lost in executors and len(executors) >= 2, f"no replacement executor: {executors}"
    # ... after the worker saw the killed JVM exit (SIGKILL: 128 + 9) and told the master.
    executor = f"{run.app_id}/{lost}"
    assert f"Executor {executor} finished with state EXITED message Command exited with code 137" in (
        cluster.log_text("worker")
    )
    assert f"Removing executor {executor} because it is EXITED" in cluster.log_text("master")
    assert_same_tables(spark, lake, reference_lake, "silver", SILVER_TABLES)
    assert_same_tables(spark, lake, reference_lake, "gold", GOLD_TABLES)
