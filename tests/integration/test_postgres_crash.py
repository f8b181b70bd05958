"""SIGKILL during an extract from the shop's PostgreSQL database, then a re-run (docs/postgres.md).

The session's generated shop (``postgres_shop``; this module changes its own copy) is extracted
by ``ecom-pipeline run --layer bronze`` subprocesses with ``ECOM_SOURCE_DB`` set, each killed
(``ECOM_CRASH_AT``, :mod:`tests.faults`: SIGKILL to the driver's JVM and to itself) at the next
point of :data:`CRASH_POINTS`:

1. just after ``bronze.orders`` committed its window (no run record, its lock held);
2. then rows change in the database: an order bronze already holds, a customer it does not
   hold yet, and a new customer;
3. ``bronze.order_items`` has read its window, its append is not committed (``bronze.orders``
   re-extracted the changed order before it);
4. ``bronze.customers`` committed, the run's records not written.

A last ``run --layer bronze`` and ``run --layer silver`` without a crash finish the lake. It
must equal, by content, a lake built without a crash from the same (changed) database, except
for what a later window legitimately adds: bronze keeps the changed order's earlier version,
read before the change (every version stays in bronze). Silver is equal whole, and holds the
changes made between the killed run and the re-run.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.graph import select_jobs
from jobs.runner import run_jobs
from pipeline_lib.config import load_config
from pipeline_lib.io.delta import read_table, table_path
from tests.faults import CRASH_ENV
from tests.lake_compare import compare_frames, compare_lakes
from tests.pg_server import PostgresServer, PostgresShop
from tests.support import cli_environment, run_cli

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
EXTRACTED = ("orders", "order_items", "customers")
# (ECOM_CRASH_AT, what the killed run leaves behind), in the jobs' run order.
CRASH_POINTS = (
    ("delta.after_commit.bronze.orders", "orders committed with their window, no run record"),
    ("delta.before_commit.bronze.order_items", "order lines read, their append not committed"),
    ("delta.after_commit.bronze.customers", "the three extracts committed, no run record"),
)
KILLED = -signal.SIGKILL
# Lineage of an extracted row that names its window: the windows of two lakes differ.
WINDOW_LINEAGE = ("_source_file", "_ingest_date")
NEW_CITY = "Crashville"
NEW_CUSTOMER = "C9999999"


@dataclass(frozen=True)
class Run:
    crash_at: str | None
    returncode: int
    stderr: str


@dataclass(frozen=True)
class CrashedExtract:
    server: PostgresServer
    crashed: str  # the lake of the killed runs and their re-run
    clean: str  # the lake built once, without a crash, from the same database
    killed: list[Run]
    final: list[Run]
    order: str  # changed in the database after bronze held it
    old_order: dict[str, Any]  # that order's row before the change
    customer: str  # changed before bronze held it


def run_pipeline(
    env: dict[str, str], landing: Path, lake: str, layer: str, crash_at: str | None = None
) -> Run:
    extra = {CRASH_ENV: crash_at} if crash_at else {}
    completed = run_cli(
        "run",
        "--layer",
        layer,
        "--landing",
        str(landing),
        "--lake",
        lake,
        env={**env, **extra},
        check=False,
        module="tests.faults",
    )
    return Run(crash_at, completed.returncode, completed.stderr)


def change_rows(server: PostgresServer) -> tuple[str, dict[str, Any], str]:
    """An order shipped, a customer moved and a customer added, stamped now (as the source does)."""
    with server.connect(autocommit=True) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT * FROM orders WHERE order_status = 'paid' ORDER BY order_id LIMIT 1")
        assert cursor.description is not None
        names = [c.name for c in cursor.description]
        old_order = dict(zip(names, cursor.fetchone() or (), strict=True))
        order = old_order["order_id"]
        cursor.execute(
            "UPDATE orders SET order_status = 'shipped', updated_at = now() WHERE order_id = %s", (order,)
        )
        cursor.execute("SELECT min(customer_id) FROM customers")
        customer = (cursor.fetchone() or (None,))[0]
        cursor.execute(
            "UPDATE customers SET city = %s, updated_at = now() WHERE customer_id = %s", (NEW_CITY, customer)
        )
        cursor.execute(
            "INSERT INTO customers (customer_id, email, first_name, last_name, phone, country, city, "
            "postal_code, signup_ts, updated_at, marketing_opt_in) SELECT %s, 'crash@example.com', "
            "first_name, last_name, phone, country, city, postal_code, now(), now(), marketing_opt_in "
            "FROM customers WHERE customer_id = %s",
            (NEW_CUSTOMER, customer),
        )
    return order, old_order, customer


@pytest.fixture(scope="module")
def crashed_extract(
    spark: SparkSession, postgres_shop: PostgresShop, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CrashedExtract]:
    root = tmp_path_factory.mktemp("postgres_crash")
    crashed, clean = str(root / "crashed"), str(root / "clean")
    server = postgres_shop.database("shop_crash")
    settings = {
        "ECOM_SOURCE_DB": server.url(),
        "ECOM__SOURCES__ORDERS__PARTITIONS": "2",
        "ECOM__SOURCES__SAFETY_LAG_SECONDS": "1",  # the test's own changes are read a second later
    }
    # One job at a time, so that each kill stops the one job named by its point.
    env = cli_environment(
        **settings, ECOM_SOURCE_DB_PASSWORD=server.password, ECOM__PIPELINE__MAX_PARALLEL_JOBS="1"
    )
    landing = postgres_shop.landing
    killed = [run_pipeline(env, landing, crashed, "bronze", CRASH_POINTS[0][0])]
    order, old_order, customer = change_rows(server)
    time.sleep(1.5)  # past the safety lag
    killed += [run_pipeline(env, landing, crashed, "bronze", point) for point, _ in CRASH_POINTS[1:]]
    final = [run_pipeline(env, landing, crashed, layer) for layer in ("bronze", "silver")]

    environ = {k: v for k, v in os.environ.items() if not k.startswith("ECOM")}
    config = load_config("local", conf_dir=REPO / "conf", environ={**environ, **settings}).with_paths(
        landing=str(landing), lake=clean
    )
    os.environ["ECOM_SOURCE_DB_PASSWORD"] = server.password
    try:
        outcomes = run_jobs(spark, config, [*select_jobs("bronze"), *select_jobs("silver")], [None])
        assert {o.status for o in outcomes} == {"succeeded"}, outcomes
        yield CrashedExtract(server, crashed, clean, killed, final, order, old_order, customer)
    finally:
        os.environ.pop("ECOM_SOURCE_DB_PASSWORD", None)


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.splitlines()[-lines:])


def test_every_run_was_killed_at_its_point_and_the_re_runs_succeeded(crashed_extract):
    assert [run.crash_at for run in crashed_extract.killed] == [point for point, _ in CRASH_POINTS]
    for run in crashed_extract.killed:
        assert run.returncode == KILLED, f"{run.crash_at}: exited {run.returncode}:\n{_tail(run.stderr)}"
        assert re.search(
            rf"{CRASH_ENV}: killing process \d+ \(Spark JVM \d+\) at {re.escape(run.crash_at)}$",
            run.stderr,
            re.MULTILINE,
        ), _tail(run.stderr)
    for run in crashed_extract.final:
        assert run.returncode == 0, _tail(run.stderr, 30)
    for run in (*crashed_extract.killed, *crashed_extract.final):
        assert crashed_extract.server.password not in run.stderr


def _is_old_order(crashed_extract: CrashedExtract) -> F.Column:
    old = crashed_extract.old_order
    return (F.col("order_id") == old["order_id"]) & (F.col("order_status") == old["order_status"])


def test_the_lake_after_the_kills_equals_a_lake_built_without_them(spark, crashed_extract):
    exclude = {f"{layer}.{source}": WINDOW_LINEAGE for layer in ("bronze", "silver") for source in EXTRACTED}

    def without_the_old_order(orders: DataFrame) -> DataFrame:
        return orders.where(~_is_old_order(crashed_extract))

    comparisons = compare_lakes(
        spark,
        crashed_extract.crashed,
        crashed_extract.clean,
        layers=("bronze", "silver", "quarantine"),
        ops_tables=(),
        exclude=exclude,
        normalize={"bronze.orders": without_the_old_order},
    )
    unequal = [c.describe() for c in comparisons if not c.equal]
    assert not unequal, "\n".join(unequal)
    assert {c.name for c in comparisons} >= {
        f"{layer}.{s}" for layer in ("bronze", "silver") for s in EXTRACTED
    }


def test_bronze_keeps_the_order_read_before_the_change_once(spark, crashed_extract):
    def orders(lake: str) -> DataFrame:
        return read_table(spark, table_path(lake, "bronze", "orders")).drop(
            *WINDOW_LINEAGE, "_run_id", "_ingested_at"
        )

    crashed, clean = orders(crashed_extract.crashed), orders(crashed_extract.clean)
    extra = crashed.exceptAll(clean).collect()
    assert [(r.order_id, r.order_status) for r in extra] == [
        (crashed_extract.order, crashed_extract.old_order["order_status"])
    ]
    assert clean.exceptAll(crashed).count() == 0
    assert compare_frames(crashed.where(~_is_old_order(crashed_extract)), clean, name="bronze.orders").equal


def test_rows_changed_between_the_killed_run_and_the_re_run_reach_silver(spark, crashed_extract):
    lake = crashed_extract.crashed
    orders = read_table(spark, table_path(lake, "silver", "orders"))
    [order] = orders.where(F.col("order_id") == crashed_extract.order).collect()
    assert order.order_status == "shipped"
    customers = read_table(spark, table_path(lake, "silver", "customers")).where("is_current")
    [customer] = customers.where(F.col("customer_id") == crashed_extract.customer).collect()
    assert customer.city == NEW_CITY
    assert customers.where(F.col("customer_id") == NEW_CUSTOMER).count() == 1
