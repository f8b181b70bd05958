"""Rows deleted from the shop's PostgreSQL database reach bronze, silver and gold (docs/postgres.md).

The session's generated shop (``postgres_shop``: loaded into a real server; this module
changes its own copy) is built through bronze, silver and the gold dimensions and facts from
the database. Then a customer, an order (with its lines) and one line of another order are
deleted in the database and everything runs again: bronze holds one tombstone per deleted key
with the window's lineage, silver has the order and lines removed and the customer's history
closed, gold follows. A run with nothing new commits nothing, and
a key snapshot that lacks most keys (the wrong table) is refused with nothing written.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.framework import JobFailedError
from jobs.graph import JOB_GRAPH
from jobs.runner import JobOutcome, run_jobs
from pipeline_lib.bronze.database import is_deletion
from pipeline_lib.config import PipelineConfig, load_config
from pipeline_lib.io.delta import read_table, table_path, table_version
from pipeline_lib.ops.schemas import RUNS_TABLE
from tests.pg_server import PostgresServer, PostgresShop

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
EXTRACTED = ("orders", "order_items", "customers")
BRONZE = tuple(f"bronze.{s}" for s in (*EXTRACTED, "catalogue", "fx_rates"))
SILVER = tuple(f"silver.{t}" for t in ("fx_rates", "customers", "products", "orders", "order_items"))
GOLD = tuple(f"gold.{t}" for t in ("dim_customer", "dim_product", "fact_order_lines", "fact_orders"))
JOBS = (*BRONZE, *SILVER, *GOLD)


@dataclass(frozen=True)
class Shop:
    server: PostgresServer
    config: PipelineConfig
    customer: str  # deleted
    order: str  # deleted with its lines
    line: tuple[str, int]  # one line deleted from an order that stays
    lines_of_order: tuple[int, ...]  # the deleted order's line numbers


def run(spark: SparkSession, config: PipelineConfig, names: tuple[str, ...] = JOBS) -> list[JobOutcome]:
    """Run ``names``; a failed job raises :class:`~jobs.framework.JobFailedError`."""
    specs = [spec for spec in JOB_GRAPH if spec.qualified_name in names]
    return run_jobs(spark, config, specs, [None])


def run_ok(spark: SparkSession, config: PipelineConfig, names: tuple[str, ...] = JOBS) -> None:
    outcomes = run(spark, config, names)
    assert {o.status for o in outcomes} <= {"succeeded", "skipped"}, outcomes


def table(spark: SparkSession, config: PipelineConfig, layer: str, name: str) -> DataFrame:
    return read_table(spark, table_path(config.paths.lake, layer, name))


def last_details(spark: SparkSession, config: PipelineConfig, job: str) -> dict:
    runs = (
        table(spark, config, "ops", RUNS_TABLE).where(F.col("job") == job).orderBy(F.col("started_at").desc())
    )
    return json.loads(runs.first().details)


@pytest.fixture(scope="module")
def shop(
    spark: SparkSession, postgres_shop: PostgresShop, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Shop]:
    root = tmp_path_factory.mktemp("deletes")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ECOM")}
    server = postgres_shop.database("shop_deletes")
    os.environ["ECOM_SOURCE_DB_PASSWORD"] = server.password
    try:
        config = load_config(
            "local",
            conf_dir=REPO / "conf",
            environ={
                **environ,
                "ECOM_SOURCE_DB": server.url(),
                "ECOM__SOURCES__ORDERS__PARTITIONS": "2",
                "ECOM__SOURCES__SAFETY_LAG_SECONDS": "1",
            },
        ).with_paths(landing=str(postgres_shop.landing), lake=str(root / "lake"))
        run_ok(spark, config)
        with server.connect(autocommit=True) as connection:
            # a customer with orders, an order with lines (not that customer's), one line of a third
            customer = connection.execute(
                "SELECT min(customer_id) FROM customers c WHERE EXISTS "
                "(SELECT 1 FROM orders o WHERE o.customer_id = c.customer_id)"
            ).fetchone()[0]
            order = connection.execute(
                "SELECT min(o.order_id) FROM orders o JOIN order_items i USING (order_id) "
                "WHERE o.customer_id IS DISTINCT FROM %s",
                (customer,),
            ).fetchone()[0]
            lines = tuple(
                r[0]
                for r in connection.execute(
                    "SELECT line_no FROM order_items WHERE order_id = %s", (order,)
                ).fetchall()
            )
            line = connection.execute(
                "SELECT order_id, max(line_no) FROM order_items WHERE order_id <> %s GROUP BY order_id "
                "HAVING count(*) > 1 ORDER BY order_id LIMIT 1",
                (order,),
            ).fetchone()
            connection.execute("DELETE FROM customers WHERE customer_id = %s", (customer,))
            connection.execute("DELETE FROM order_items WHERE order_id = %s", (order,))
            connection.execute("DELETE FROM orders WHERE order_id = %s", (order,))
            connection.execute("DELETE FROM order_items WHERE order_id = %s AND line_no = %s", line)
        time.sleep(1.5)  # past the safety lag
        run_ok(spark, config)
        yield Shop(server, config, customer, order, (line[0], int(line[1])), lines)
    finally:
        os.environ.pop("ECOM_SOURCE_DB_PASSWORD", None)


def test_bronze_holds_one_tombstone_per_deleted_key_with_the_window_lineage(shop, spark):
    server = shop.server
    location = f"postgresql://{server.host}:{server.port}/{server.database}"
    expected = {
        "customers": {(shop.customer,)},
        "orders": {(shop.order,)},
        "order_items": {(shop.order, str(n)) for n in shop.lines_of_order}
        | {(shop.line[0], str(shop.line[1]))},
    }
    keys = {"customers": ["customer_id"], "orders": ["order_id"], "order_items": ["order_id", "line_no"]}
    for source in EXTRACTED:
        tombstones = table(spark, shop.config, "bronze", source).where(is_deletion()).collect()
        assert {tuple(r[k] for k in keys[source]) for r in tombstones} == expected[source], source
        details = last_details(spark, shop.config, f"bronze.{source}")
        upper = details["window"]["upper"]
        assert details["window"]["deleted"] == len(expected[source])
        for row in tombstones:
            assert row._source_file.startswith(f"{location}/public.{source}?window=")
            assert row._source_file.endswith(f"..{upper}")
            assert json.loads(row._rescued_data) == {"_op": "delete", "deleted_at": upper}
            if source != "order_items":
                assert row.updated_at == upper


def test_silver_removes_the_order_and_lines_and_closes_the_customer(shop, spark):
    orders = table(spark, shop.config, "silver", "orders")
    assert orders.where(F.col("order_id") == shop.order).count() == 0
    items = table(spark, shop.config, "silver", "order_items")
    assert items.where(F.col("order_id") == shop.order).count() == 0
    assert items.where((F.col("order_id") == shop.line[0]) & (F.col("line_no") == shop.line[1])).count() == 0
    assert items.where(F.col("order_id") == shop.line[0]).count() >= 1  # its other lines stay
    versions = table(spark, shop.config, "silver", "customers").where(F.col("customer_id") == shop.customer)
    assert versions.count() >= 1 and versions.where("is_current").count() == 0
    upper = last_details(spark, shop.config, "bronze.customers")["window"]["upper"]
    closed = versions.orderBy(F.col("valid_from").desc()).first()
    assert closed.valid_to is not None
    assert closed.valid_to.strftime("%Y-%m-%dT%H:%M:%S") == upper[:19]


def test_silver_counts_the_deletions_and_reconciles(shop, spark):
    for job, count in (
        ("silver.orders", 1),
        ("silver.order_items", len(shop.lines_of_order) + 1),
        ("silver.customers", 1),
    ):
        details = last_details(spark, shop.config, job)
        assert details["deletions"] == count and details["reconciled"], (job, details)
    assert last_details(spark, shop.config, "silver.orders")["orders_deleted"] == 1
    assert (
        last_details(spark, shop.config, "silver.order_items")["lines_deleted"]
        == len(shop.lines_of_order) + 1
    )


def test_gold_drops_the_deleted_order_and_line_and_the_customer_has_no_current_version(shop, spark):
    facts = table(spark, shop.config, "gold", "fact_orders")
    assert facts.where(F.col("order_id") == shop.order).count() == 0
    lines = table(spark, shop.config, "gold", "fact_order_lines")
    assert lines.where(F.col("order_id") == shop.order).count() == 0
    assert lines.where((F.col("order_id") == shop.line[0]) & (F.col("line_no") == shop.line[1])).count() == 0
    silver_lines = table(spark, shop.config, "silver", "order_items").where(F.col("order_id") == shop.line[0])
    assert lines.where(F.col("order_id") == shop.line[0]).count() == silver_lines.count()
    dim = table(spark, shop.config, "gold", "dim_customer").where(F.col("customer_id") == shop.customer)
    assert dim.count() >= 1 and dim.where("is_current").count() == 0
    # the customer's orders stay, with the version valid when they were placed
    assert facts.where(F.col("customer_id") == shop.customer).count() >= 1


def test_a_run_with_nothing_new_commits_nothing_and_repeats_no_tombstone(shop, spark):
    lake = shop.config.paths.lake
    names = (*SILVER, *GOLD)
    before = {n: table_version(spark, table_path(lake, *n.split("."))) for n in (*BRONZE, *names)}
    time.sleep(1.5)
    run_ok(spark, shop.config)
    after = {n: table_version(spark, table_path(lake, *n.split("."))) for n in (*BRONZE, *names)}
    assert after == before
    for source in EXTRACTED:
        details = last_details(spark, shop.config, f"bronze.{source}")
        assert details["window"] is None or details["window"]["deleted"] == 0


def test_a_key_snapshot_lacking_most_keys_is_refused_with_nothing_written(shop, spark):
    lake = shop.config.paths.lake
    before = {s: table_version(spark, table_path(lake, "bronze", s)) for s in EXTRACTED}
    with shop.server.connect(autocommit=True) as connection:
        connection.execute("CREATE TABLE customers_saved AS TABLE customers")
        connection.execute("DELETE FROM customers")
    try:
        time.sleep(1.5)
        with pytest.raises(JobFailedError) as caught:
            run(spark, shop.config, ("bronze.customers",))
        message = str(caught.value)
        assert message.startswith(
            "bronze.customers: TooManyDeletionsError: public.customers: the key snapshot lacks"
        )
        assert "sources.max_delete_fraction" in message and "nothing written" in message
        assert "\n" not in message and shop.server.password not in message
        assert {s: table_version(spark, table_path(lake, "bronze", s)) for s in EXTRACTED} == before
    finally:
        with shop.server.connect(autocommit=True) as connection:
            connection.execute("INSERT INTO customers SELECT * FROM customers_saved")
            connection.execute("DROP TABLE customers_saved")
