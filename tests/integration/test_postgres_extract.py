"""Bronze from the shop's PostgreSQL database (``ECOM_SOURCE_DB``), against a real server.

A small generated shop (no injected defects) is loaded into the server day by day
(``ecom-pipeline generate --to-postgres``: the tables end in the shop's current state; the
session's ``postgres_shop`` fixture, of which this module changes its own copy). Bronze and
silver are built twice, from the landing files and from the database; silver's current rows
are the same. Then: a second extract with nothing new commits nothing; an order updated
since reaches silver with its new status; a row committed late with an ``updated_at``
before the last extract's upper bound (inside the overlap) is not lost.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.graph import JOB_GRAPH
from jobs.runner import run_jobs
from pipeline_lib.config import PipelineConfig, load_config
from pipeline_lib.io.delta import read_table, table_path, table_version
from pipeline_lib.ops.schemas import RUNS_TABLE
from pipeline_lib.silver.schemas import SILVER_LINEAGE_FIELDS
from tests.pg_server import PostgresServer, PostgresShop

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
JOBS = (
    "bronze.orders",
    "bronze.order_items",
    "bronze.customers",
    "bronze.catalogue",
    "bronze.fx_rates",
    "silver.fx_rates",
    "silver.customers",
    "silver.products",
    "silver.orders",
    "silver.order_items",
)
EXTRACTED = ("orders", "order_items", "customers")
LINEAGE = [f.name for f in SILVER_LINEAGE_FIELDS]


@dataclass(frozen=True)
class Shop:
    server: PostgresServer
    files: PipelineConfig  # bronze from landing files
    database: PipelineConfig  # bronze orders, order_items, customers from the server


def run(spark: SparkSession, config: PipelineConfig, names: tuple[str, ...] = JOBS) -> None:
    specs = [spec for spec in JOB_GRAPH if spec.qualified_name in names]
    outcomes = run_jobs(spark, config, specs, [None])
    assert {o.status for o in outcomes} <= {"succeeded", "skipped"}, outcomes


@pytest.fixture(scope="module")
def shop(
    spark: SparkSession, postgres_shop: PostgresShop, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Shop]:
    root = tmp_path_factory.mktemp("extract")
    landing = postgres_shop.landing
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ECOM")}
    server = postgres_shop.database("shop_extract")
    os.environ["ECOM_SOURCE_DB_PASSWORD"] = server.password
    try:
        files = load_config("local", conf_dir=REPO / "conf", environ=environ).with_paths(
            landing=str(landing), lake=str(root / "lake_files")
        )
        database = load_config(
            "local",
            conf_dir=REPO / "conf",
            environ={
                **environ,
                "ECOM_SOURCE_DB": server.url(),
                "ECOM__SOURCES__ORDERS__PARTITIONS": "3",
                "ECOM__SOURCES__SAFETY_LAG_SECONDS": "1",  # the test's own writes are read a second later
            },
        ).with_paths(landing=str(landing), lake=str(root / "lake_db"))
        run(spark, files)
        run(spark, database)
        yield Shop(server, files, database)
    finally:
        os.environ.pop("ECOM_SOURCE_DB_PASSWORD", None)


def current(spark: SparkSession, config: PipelineConfig, table: str) -> DataFrame:
    rows = read_table(spark, table_path(config.paths.lake, "silver", table))
    if "is_current" in rows.columns:
        rows = rows.where("is_current").drop("valid_from", "valid_to", "is_current")
    return rows.drop(*LINEAGE)


@pytest.mark.parametrize("table", EXTRACTED)
def test_silver_from_the_database_equals_silver_from_the_files(shop, spark, table):
    from_files = current(spark, shop.files, table)
    from_database = current(spark, shop.database, table)
    assert from_database.count() > 0
    assert from_files.exceptAll(from_database).count() == 0
    assert from_database.exceptAll(from_files).count() == 0


def test_the_window_is_in_the_lineage_and_the_run_record(shop, spark):
    lake = shop.database.paths.lake
    bronze = read_table(spark, table_path(lake, "bronze", "orders"))
    prefix = (
        f"postgresql://{shop.server.host}:{shop.server.port}/{shop.server.database}/public.orders?window="
    )
    assert bronze.where(~F.col("_source_file").startswith(prefix)).count() == 0
    runs = read_table(spark, table_path(lake, "ops", RUNS_TABLE)).where("job = 'bronze.orders'").collect()
    window = json.loads(runs[0].details)["window"]
    assert window["lower"] is None and window["rows"] == bronze.count() and window["upper"] < "2099"
    assert shop.server.password not in repr(runs)


def test_a_second_extract_with_nothing_new_commits_nothing(shop, spark):
    lake = shop.database.paths.lake
    before = {s: table_version(spark, table_path(lake, "bronze", s)) for s in EXTRACTED}
    run(spark, shop.database, tuple(f"bronze.{s}" for s in EXTRACTED))
    assert {s: table_version(spark, table_path(lake, "bronze", s)) for s in EXTRACTED} == before


def test_an_update_and_a_late_commit_inside_the_overlap_reach_silver(shop, spark):
    lake = shop.database.paths.lake
    runs = read_table(spark, table_path(lake, "ops", RUNS_TABLE)).where("job = 'bronze.orders'")
    last_upper = max(json.loads(r.details)["window"]["upper"] or "" for r in runs.collect() if r.details)
    late = dt.datetime.fromisoformat(last_upper.replace("Z", "+00:00")) - dt.timedelta(minutes=5)
    with shop.server.connect(autocommit=True) as connection:
        updated, late_id = connection.execute(
            "SELECT min(order_id), max(order_id) FROM orders WHERE order_status = 'paid'"
        ).fetchone()
        connection.execute(
            "UPDATE orders SET order_status = 'shipped', updated_at = now() WHERE order_id = %s", (updated,)
        )
        # committed only now, stamped before the last extract's upper bound
        connection.execute(
            "UPDATE orders SET order_status = 'cancelled', updated_at = %s WHERE order_id = %s",
            (late, late_id),
        )
    time.sleep(1.5)  # past the safety lag
    run(spark, shop.database, ("bronze.orders", "silver.orders"))

    statuses = dict(
        current(spark, shop.database, "orders")
        .where(F.col("order_id").isin(updated, late_id))
        .select("order_id", "order_status")
        .collect()
    )
    assert statuses == {updated: "shipped", late_id: "cancelled"}


def test_the_extracts_of_one_run_share_one_upper_bound(shop, spark):
    """The runner reads the database's clock once per run: every extract's window ends there."""
    lake = shop.database.paths.lake
    runs = read_table(spark, table_path(lake, "ops", RUNS_TABLE)).where(
        F.col("job").isin(*(f"bronze.{s}" for s in EXTRACTED))
    )
    uppers: dict[str, set[str]] = {}
    for record in runs.collect():
        window = json.loads(record.details)["window"]
        if window is not None:
            uppers.setdefault(record.run_id, set()).add(window["upper"])
    first_run = min(uppers)  # the fixture's: the three extracts, in one run
    assert len(runs.where(F.col("run_id") == first_run).collect()) == len(EXTRACTED)
    assert all(len(bounds) == 1 for bounds in uppers.values()), uppers
