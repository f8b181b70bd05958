"""The pipeline on a Spark standalone cluster, over reordered deliveries, losing its executor.

One run proves three guarantees (RELIABILITY.md): the jobs scale out unchanged, losing an
executor mid-job changes no result, and the tables do not depend on file order or Spark
settings (determinism).

- A master and one worker (from the installed pyspark, on 127.0.0.1 and ports the OS hands
  out, tests/cluster.py) serve the module; ``spark-submit.sh`` submits every job.
- The deliveries are the reference landing zone copied with every file renamed so that the
  listing order within each delivery is reversed (bronze lists ``(ingest_date, path)``, so
  the files reach bronze in another order), and with five deliveries (orders, order lines,
  customers, clicks, catalogue) each split into two files holding the same rows, the second
  half under the lexically first name (the gzip delivery is split into plain JSON Lines).
- The run uses 7 shuffle partitions, adaptive execution, compiled expressions and broadcast
  joins, where the reference lake was built in-process with 2 partitions, adaptive execution
  off, interpreted expressions and no broadcast joins; its executor JVM is SIGKILLed while a
  task of silver.orders runs.

Gold must be identical to the session's reference lake by content; silver, quarantine and
bronze too once each ``_source_file`` is mapped back to the reference file it came from.
(Until 2026-11-26 the cluster run and the determinism run were two whole-pipeline runs over
the same data, ~5 min each on the shared two cores; one run now checks both.)
"""

from __future__ import annotations

import gzip
import itertools
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
from pyspark.sql import functions as F

from pipeline_lib.bronze.schemas import LANDING_SOURCES, SOURCE_FILE
from pipeline_lib.config import PipelineConfig
from pipeline_lib.io.landing import list_delivery_files
from tests.cluster import StandaloneCluster, die_with_parent, wait_for
from tests.lake_compare import compare_lakes, lake_tables
from tests.support import REPO, cli_environment

pytestmark = pytest.mark.slow

SUBMIT_TIMEOUT_S = 1800  # as tests/support.py CLI_TIMEOUT_S: a busy 2-core machine is slow

# Deliveries split into two files with the same rows: (source, ingest_date).
SPLIT = {("orders", "2026-03-02"), ("customers", "2026-03-01"), ("clicks", "2026-03-03")}
SPLIT |= {("catalogue", "2026-03-05"), ("order_items", "2026-03-05")}
# Spark settings other than the reference build's (2 partitions, adaptive execution off).
OTHER_SETTINGS = {"SPARK.SQL.SHUFFLE.PARTITIONS": "7", "SPARK.SQL.ADAPTIVE.ENABLED": "true"}
# Only in the copy's file names: the hash of a row's source file (docs/quality.md).
FILE_NAME_DEPENDENT = {"quarantine": ["_row_key"]}


def copy_landing_reordered(reference: Path, target: Path) -> dict[tuple[str, str, str], tuple[str, int]]:
    """Copy ``reference`` to ``target``, files renamed in reverse order, :data:`SPLIT` deliveries split.

    Returns:
        ``(source, delivery folder, new name) -> (reference name, part)`` for every file
        written; part 1 is the second half of a split file, 0 anything else.
    """
    origin = {}
    for folder in sorted(p for p in reference.glob("*/ingest_date=*") if p.is_dir()):
        source, delivery = folder.parent.name, folder.name
        names = sorted(p.name for p in folder.iterdir() if p.is_file())
        (target / source / delivery).mkdir(parents=True)
        for index, name in enumerate(names):
            prefix = chr(ord("z") - index)  # the first file gets the last name
            data = (folder / name).read_bytes()
            if (source, delivery.removeprefix("ingest_date=")) in SPLIT:
                first, second = split_delivery(name, data)
                plain = name.removesuffix(".gz")
                parts = {f"{prefix}2_{plain}": (first, 0), f"{prefix}1_{plain}": (second, 1)}
            else:
                parts = {f"{prefix}_{name}": (data, 0)}
            for new_name, (content, part) in parts.items():
                (target / source / delivery / new_name).write_bytes(content)
                origin[(source, delivery, new_name)] = (name, part)
    return origin


def split_delivery(name: str, data: bytes) -> tuple[bytes, bytes]:
    """Two files with the rows of ``data``: the first and second half (a CSV keeps its header)."""
    text = (gzip.decompress(data) if name.endswith(".gz") else data).decode("utf-8", errors="surrogateescape")
    # Bronze reads both formats line by line (CSV without multiLine), so any line ends a record.
    lines = re.findall(r"[^\n]*\n|[^\n]+$", text)
    header, body = ([lines[0]], lines[1:]) if name.endswith(".csv") else ([], lines)
    middle = len(body) // 2
    assert 0 < middle < len(body), f"{name}: too few rows to split"

    def encode(part: list[str]) -> bytes:
        return "".join(header + part).encode("utf-8", errors="surrogateescape")

    return encode(body[:middle]), encode(body[middle:])


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
    # but not interpreted evaluation nor joins without broadcasts: here the expressions are
    # compiled and small tables broadcast, as in production, and the tables must still equal
    # the reference lake's (built without code generation and without broadcast joins).
    environment = cli_environment(
        SPARK_LOCAL_IP="127.0.0.1", **{f"ECOM__SPARK__CONF__{k}": v for k, v in OTHER_SETTINGS.items()}
    )
    del environment["ECOM__SPARK__CONF__spark.sql.codegen.factoryMode"]
    del environment["ECOM__SPARK__CONF__spark.sql.autoBroadcastJoinThreshold"]
    if os.environ.get("ECOM_HMAC_KEY"):  # the reference hashed e-mails with the caller's key
        environment["ECOM_HMAC_KEY"] = os.environ["ECOM_HMAC_KEY"]
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


@dataclass(frozen=True)
class ClusterBuild:
    """The reordered copy of the deliveries, the lake the cluster built from it, and what happened."""

    landing: str
    lake: str
    origin: dict[str, str]  # copied file's full path -> the reference file's full path
    part: dict[str, int]  # copied file's full path -> 0 (whole file or first half) or 1 (second half)
    run: Submission
    killed: dict[str, object]  # the executor killed mid-task (empty when no task was seen running)


@pytest.fixture(scope="module")
def cluster_build(
    spark: SparkSession,
    reference_lake: PipelineConfig,
    cluster: StandaloneCluster,
    tmp_path_factory: pytest.TempPathFactory,
) -> ClusterBuild:
    """Every job through spark-submit.sh over the reordered copy, the executor killed in silver.orders."""
    root = tmp_path_factory.mktemp("on_cluster")
    landing, lake = root / "landing", root / "lake"
    origin_by_name = copy_landing_reordered(Path(reference_lake.paths.landing), landing)
    killer = ExecutorKiller(cluster, after=KILL_AFTER_JOB)
    with ThreadPoolExecutor(max_workers=1) as pool:
        watching = pool.submit(killer.run)
        try:
            run = submit(
                cluster,
                *("run", "--layer", "all", "--landing", str(landing), "--lake", str(lake)),
                scratch=root / "driver",
                on_output_line=killer.on_output_line,
            )
        finally:
            killer.finished.set()
        watching.result()
    # Full paths as the pipeline writes them in _source_file, copy -> reference.
    origin, part = {}, {}
    for source in LANDING_SOURCES:
        reference = {
            (Path(f.path).parent.name, Path(f.path).name): f.path
            for f in list_delivery_files(spark, reference_lake.paths.landing, source).files
        }
        for copied in list_delivery_files(spark, str(landing), source).files:
            delivery, name = Path(copied.path).parent.name, Path(copied.path).name
            reference_name, part[copied.path] = origin_by_name[(source, delivery, name)]
            origin[copied.path] = reference[(delivery, reference_name)]
    return ClusterBuild(str(landing), str(lake), origin, part, run, killer.killed)


def test_the_run_on_the_cluster_lost_its_executor_mid_job_and_finished(
    cluster: StandaloneCluster, cluster_build: ClusterBuild
) -> None:
    run, killed = cluster_build.run, cluster_build.killed
    assert run.returncode == 0, f"spark-submit.sh exited {run.returncode} after the kill:\n{run.tail()}"
    assert "gold.product_popularity: done" in run.output
    # It ran on the cluster: the master lists it as finished, and its executors ran tasks.
    assert run.app["state"] == "FINISHED", run.app
    executor_logs = [d / "stderr" for d in cluster.executor_dirs(run.app_id)]
    assert any(TASK_ENDED.search(log.read_text(errors="replace")) for log in executor_logs)
    assert killed, f"no task of the executor was seen running after {KILL_AFTER_JOB} started"
    assert killed["app_id"] == run.app_id
    lost = killed["executor_id"]
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


def test_the_copy_lists_the_same_rows_in_other_files_and_another_order(spark, reference_lake, cluster_build):
    reordered = 0
    for source in LANDING_SOURCES:
        copied = list_delivery_files(spark, cluster_build.landing, source).files
        reference = list_delivery_files(spark, reference_lake.paths.landing, source).files
        assert len(copied) == len(reference) + sum(s == source for s, _ in SPLIT)
        assert {cluster_build.origin[f.path] for f in copied} == {f.path for f in reference}
        # The order in which bronze meets the rows: reference file, then half.
        order = [(cluster_build.origin[f.path], cluster_build.part[f.path]) for f in copied]
        reordered += sum(a > b for a, b in itertools.pairwise(order))
    assert reordered >= len(SPLIT) + 1, "the copy's listing order should differ from the reference's"


def test_gold_is_identical_to_the_reference(spark, reference_lake, cluster_build):
    assert cluster_build.run.returncode == 0, cluster_build.run.tail()
    assert lake_tables(cluster_build.lake, "gold") == lake_tables(reference_lake.paths.lake, "gold")
    comparisons = compare_lakes(
        spark, cluster_build.lake, reference_lake.paths.lake, layers=("gold",), ops_tables=()
    )
    assert len(comparisons) == len(lake_tables(reference_lake.paths.lake, "gold"))
    unequal = [c.describe() for c in comparisons if not c.equal]
    assert not unequal, "\n".join(unequal)


def test_silver_quarantine_and_bronze_are_identical_up_to_file_names(spark, reference_lake, cluster_build):
    assert cluster_build.run.returncode == 0, cluster_build.run.tail()
    layers = ("bronze", "silver", "quarantine")
    for layer in layers:
        assert lake_tables(cluster_build.lake, layer) == lake_tables(reference_lake.paths.lake, layer)
    to_reference = _file_mapping(cluster_build.origin)
    comparisons = compare_lakes(
        spark,
        cluster_build.lake,
        reference_lake.paths.lake,
        layers=layers,
        ops_tables=(),
        exclude=FILE_NAME_DEPENDENT,
        normalize=dict.fromkeys(layers, to_reference),
    )
    assert len(comparisons) >= 6 + 6 + 2
    unequal = [c.describe() for c in comparisons if not c.equal]
    assert not unequal, "\n".join(unequal)


def _file_mapping(origin: dict[str, str]) -> Callable[[DataFrame], DataFrame]:
    mapping = F.create_map(*[F.lit(v) for pair in origin.items() for v in pair])

    def to_reference(frame: DataFrame) -> DataFrame:
        if SOURCE_FILE not in frame.columns:
            return frame
        # A file name missing from the mapping stays as it is, and shows as a difference.
        return frame.withColumn(SOURCE_FILE, F.coalesce(mapping[F.col(SOURCE_FILE)], F.col(SOURCE_FILE)))

    return to_reference
