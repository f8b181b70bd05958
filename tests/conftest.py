"""Shared fixtures: one Delta-enabled SparkSession for the whole test session."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from pipeline_lib.config import PipelineConfig, load_config
from pipeline_lib.session import KafkaJarsMissingError, build_spark_session, kafka_jars
from tests.hostile import HostileBuild, run_over_hostile_landing
from tests.pg_server import PostgresShop, running_postgres
from tests.support import TEST_JVM_OPTIONS, generate_reference_landing
from tools.kafka_broker import Broker

REPO = Path(__file__).resolve().parents[1]

# Small settings for small data: a shuffle over 8 partitions of 20 rows only costs time.
TEST_SPARK_CONF = {
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.databricks.delta.snapshotPartitions": "1",
    "spark.sql.sources.parallelPartitionDiscovery.parallelism": "2",
    "spark.databricks.delta.optimizeWrite.enabled": "false",
    "spark.sql.adaptive.enabled": "false",
    # Tiny queries: compiling whole-stage code costs more than it saves (reference lake build
    # measured at 173 s without it, 183-191 s with it).
    "spark.sql.codegen.wholeStage": "false",
    # ... nor does compiling any expression: interpreted evaluation (Spark's own test switch)
    # built the reference lake in 190 s instead of 233 s. The cluster test keeps code
    # generation on (tests/integration/test_cluster.py), so both paths give the same tables.
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
    # Join tiny tables by a shuffle in the query's own Spark job instead of broadcasting them
    # (a Spark job each): the reference landing's full run 6 % and its next day 9 % faster
    # (bench/results/MEASUREMENTS.md, 2026-12-07). The cluster test keeps Spark's default.
    "spark.sql.autoBroadcastJoinThreshold": "-1",
    # One JVM serves every test of a worker for 20 minutes; the recommendation jobs' broadcasts
    # ran out of a 2 GB heap late in the suite (see also release_caches_after_each_module).
    "spark.driver.memory": "4g",
    "spark.driver.extraJavaOptions": TEST_JVM_OPTIONS,  # C1 only (tests/support.py)
}


@pytest.fixture(scope="session")
def base_config() -> PipelineConfig:
    """The checked-in local config, read without any ECOM_* variable of the caller's shell."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ECOM")}
    return load_config("local", conf_dir=REPO / "conf", environ=environ)


@pytest.fixture(scope="module", autouse=True)
def release_caches_after_each_module() -> Iterator[None]:
    """Forget the module's cached tables and Delta logs once it is done.

    A job process reads a few tables and exits; the test session lives on through hundreds of
    throwaway lakes, and Delta keeps every table's log and snapshot it has read in a cache on
    the driver heap. Nothing here starts Spark: a module that never used it pays nothing.
    """
    yield
    session = SparkSession.getActiveSession()
    if session is not None:
        session.catalog.clearCache()
        session._jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()  # type: ignore[union-attr]


def kafka_connector_cached() -> bool:
    """Whether ``make setup`` cached Spark's Kafka connector."""
    try:
        kafka_jars()
    except KafkaJarsMissingError:
        return False
    return True


@pytest.fixture(scope="session")
def spark(base_config: PipelineConfig) -> Iterator[SparkSession]:
    """A local[2] Delta-enabled session shared by every test."""
    settings = base_config.spark
    session = build_spark_session(
        type(settings)(
            master="local[2]",
            app_name="ecom-tests",
            jars_dir=settings.jars_dir,
            log_level="ERROR",
            conf={**settings.conf, **TEST_SPARK_CONF},
        ),
        # Spark's Kafka connector (tests/integration/test_kafka_clicks.py reads a real topic), when
        # `make setup` cached it: one session serves every module of a worker.
        kafka=kafka_connector_cached(),
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A real Kafka broker (KRaft, one node, a free port) shared by the session's Kafka tests."""
    from tools.kafka_broker import start_broker

    with start_broker(tmp_path_factory.mktemp("kafka")) as running:
        yield running


@pytest.fixture
def config(base_config: PipelineConfig, tmp_path: Path) -> PipelineConfig:
    """The local config pointed at a fresh landing zone and lake under ``tmp_path``."""
    (tmp_path / "landing").mkdir()
    return base_config.with_paths(landing=str(tmp_path / "landing"), lake=str(tmp_path / "lake"))


@pytest.fixture(scope="session")
def reference_landing(
    base_config: PipelineConfig, tmp_path_factory: pytest.TempPathFactory
) -> PipelineConfig:
    """The reference landing zone, generated once (seeded) and shared by the session.

    Its config also names the reference lake's folder, which only :func:`reference_lake`
    builds: a test that needs the deliveries alone (the crash test) starts without waiting.
    """
    root = _reference_root(tmp_path_factory)
    config = base_config.with_paths(landing=str(root / "landing"), lake=str(root / "lake"))
    with _shared_lock(root):
        generated = root / "landing.generated"
        if not generated.exists():
            shutil.rmtree(root, ignore_errors=True)  # a generation interrupted by a killed worker
            generate_reference_landing(config.paths.landing)
            generated.touch()
    return config


@pytest.fixture(scope="session")
def reference_lake(
    spark: SparkSession, reference_landing: PipelineConfig, tmp_path_factory: pytest.TempPathFactory
) -> PipelineConfig:
    """A lake built once by every job from the reference landing zone, shared by the session.

    Tests that compare a whole lake (end to end, notebooks, cluster, crashes, determinism) read
    it; a test that changes a lake copies it first. Under pytest-xdist the worker processes
    share one build: the first to need it builds it under a file lock, the others wait and
    read it (each build costs minutes of both cores).
    """
    root = _reference_root(tmp_path_factory)
    with _shared_lock(root):
        built = root / "built"
        if not built.exists():
            shutil.rmtree(reference_landing.paths.lake, ignore_errors=True)  # an interrupted build
            _build_reference_lake(spark, reference_landing)
            built.touch()
    return reference_landing


@pytest.fixture(scope="session")
def hostile_build(tmp_path_factory: pytest.TempPathFactory) -> HostileBuild:
    """One command-line run over the hostile deliveries (tests/hostile.py), shared by the session.

    ``test_hostile_input.py`` and ``test_privacy_and_paths.py`` read it; under pytest-xdist
    the first worker to need it runs it under a file lock, the other reads what it saved.
    """
    root = _shared_root(tmp_path_factory, "hostile")
    saved = root.parent / "hostile.pickle"
    with _shared_lock(root):
        if not saved.exists():
            shutil.rmtree(root, ignore_errors=True)  # a run interrupted by a killed worker
            saved.write_bytes(pickle.dumps(run_over_hostile_landing(root)))
    return pickle.loads(saved.read_bytes())


# The generated shop of the PostgreSQL tests: small, no injected defects (every delivered row
# fits the typed tables), deliveries of 2026-03-02 to 2026-03-05.
POSTGRES_SHOP_OPTIONS = ("--start", "2026-03-02", "--days", "4", "--scale", "0.01", "--seed", "23")


@pytest.fixture(scope="session")
def postgres_shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresShop]:
    """One server and one generated shop (``generate --to-postgres``) for the PostgreSQL tests.

    Each module takes its own copy (:meth:`PostgresShop.database`): the tests update and delete
    rows. The password is in ``ECOM_SOURCE_DB_PASSWORD`` only while the shop loads.
    """
    from jobs.cli import main

    landing = tmp_path_factory.mktemp("postgres_shop") / "landing"
    with running_postgres() as server:
        os.environ["ECOM_SOURCE_DB_PASSWORD"] = server.password
        try:
            generated = main(
                [
                    "generate",
                    "--landing",
                    str(landing),
                    *POSTGRES_SHOP_OPTIONS,
                    "--defect-rate",
                    "0",
                    "--to-postgres",
                    server.url(),
                ]
            )
        finally:
            os.environ.pop("ECOM_SOURCE_DB_PASSWORD", None)
        assert generated == 0
        yield PostgresShop(server, landing)


def _shared_root(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return tmp_path_factory.getbasetemp().parent / name  # common to the workers
    return tmp_path_factory.getbasetemp() / name


def _reference_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _shared_root(tmp_path_factory, "reference")


@contextlib.contextmanager
def _shared_lock(root: Path) -> Iterator[None]:
    """Held by one process at a time; released when the file closes, or the process dies."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _build_reference_lake(spark: SparkSession, config: PipelineConfig) -> None:
    from jobs.graph import select_jobs
    from jobs.runner import run_jobs

    run_jobs(spark, config, select_jobs("all"), [None])


# The longest test modules, longest first (pytest --durations, 2026-11-25). `make test` runs
# modules whole per worker (--dist loadfile) in collection order (--no-loadscope-reorder:
# xdist would otherwise put the modules with the most tests first), the first two at once: a
# long module left for last runs alone on one worker while the other idles (the crash
# module, 10 tests and ~24 min, did). So the crash module starts at once; the second does not
# need the reference lake, so its worker is busy while the first builds that lake. Modules
# not listed follow, in their usual order.
LONGEST_MODULES_FIRST = (
    "test_crash_safety.py",
    "test_gold_jobs.py",
    "test_erasure.py",
    "test_cluster.py",
    "test_privacy_and_paths.py",
    "test_notebooks.py",
    "test_idempotence.py",
    "test_backfill.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run :data:`LONGEST_MODULES_FIRST` first (a stable sort: tests keep their order within a module)."""
    rank = {name: position for position, name in enumerate(LONGEST_MODULES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
