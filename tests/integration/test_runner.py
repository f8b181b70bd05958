"""The runner over the job graph: idle jobs skipped before Spark, optional sources, contained failures.

One small shop that delivers orders, order lines, customers and its catalogue, and never
clicks or exchange rates (every order is in the base currency), built in-process. Then:
a second run with nothing new, which must not need Spark at all; then a broken orders
delivery, which must stop only what depends on silver.orders.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
import threading
import warnings
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs.framework import JobFailedError
from jobs.graph import JOB_GRAPH, GraphError, JobSpec, downstream_of, select_jobs, topological_order
from jobs.runner import JOB_TAG_PREFIX, SKIPPED, SUCCEEDED, _LazySession, run_jobs
from pipeline_lib.config import PipelineConfig
from pipeline_lib.io.delta import read_table, table_path
from pipeline_lib.io.storage import delta_version

pytestmark = pytest.mark.slow

DAY1, DAY2 = dt.date(2026, 3, 2), dt.date(2026, 3, 3)
ORDERS_HEADER = (
    "order_id,customer_id,order_status,order_ts,updated_at,currency,channel,ship_country,ship_city,"
    "payment_type,shipping_fee"
)
CUSTOMERS_HEADER = (
    "customer_id,email,first_name,last_name,phone,country,city,postal_code,signup_ts,updated_at,"
    "marketing_opt_in"
)


def _order(oid: str, day: dt.date, status: str = "paid") -> str:
    ts = f"{day}T10:00:00Z"
    return f"{oid},c{oid[-1]},{status},{ts},{ts},EUR,web,DE,Berlin,card,4.99"


def _deliver(landing: Path, source: str, day: dt.date, name: str, lines: list[str]) -> None:
    folder = landing / source / f"ingest_date={day}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _shop_without_clicks(landing: Path) -> None:
    orders = [_order(f"o{n}", DAY1) for n in range(1, 6)]
    lines = [f"o{n},1,p{n % 2},1,10.00,0" for n in range(1, 6)]
    customers = [
        f"c{n},c{n}@example.com,A,B,+49,de,Berlin,10115,2025-01-01T00:00:00Z,2026-03-01T00:00:00Z,true"
        for n in range(1, 6)
    ]
    catalogue = [
        json.dumps(
            {
                "product_id": f"p{n}",
                "sku": f"s{n}",
                "name": "x",
                "brand": "b",
                "category_path": ["A", "B", "C"],
                "price": "10",
                "currency": "EUR",
                "is_active": True,
                "updated_at": "2026-03-01T00:00:00Z",
            }
        )
        for n in range(2)
    ]
    _deliver(landing, "orders", DAY1, "orders.csv", [ORDERS_HEADER, *orders])
    _deliver(
        landing,
        "order_items",
        DAY1,
        "lines.csv",
        ["order_id,line_no,product_id,quantity,unit_price,discount_amount", *lines],
    )
    _deliver(landing, "customers", DAY1, "crm.csv", [CUSTOMERS_HEADER, *customers])
    _deliver(landing, "catalogue", DAY1, "catalogue.jsonl", catalogue)


def _versions(lake: str) -> dict[str, int | None]:
    return {
        f"{layer}.{table.name}": delta_version(str(table))
        for layer in ("bronze", "silver", "quarantine", "gold")
        if (Path(lake) / layer).is_dir()
        for table in sorted((Path(lake) / layer).iterdir())
    }


def _run(session, config, layer="all", dates=(None,)):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_jobs(session, config, select_jobs(layer), list(dates))


@pytest.fixture(scope="module")
def shop(spark: SparkSession, base_config: PipelineConfig, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("runner")
    config = base_config.with_paths(landing=str(root / "landing"), lake=str(root / "lake"))
    _shop_without_clicks(Path(config.paths.landing))
    first = _run(spark, config)
    before = _versions(config.paths.lake)

    def no_spark() -> SparkSession:
        raise AssertionError("the idle run asked for a Spark session")

    again = _run(no_spark, config)
    after = _versions(config.paths.lake)
    yield {"config": config, "first": first, "again": again, "before": before, "after": after}
    shutil.rmtree(root, ignore_errors=True)


def test_a_shop_without_clicks_or_rates_gets_every_gold_table(spark, shop):
    config = shop["config"]
    assert {o.status for o in shop["first"]} == {SUCCEEDED}
    gold = {spec.name for spec in JOB_GRAPH if spec.layer == "gold"}
    assert {t.split(".")[1] for t in shop["before"] if t.startswith("gold.")} == gold
    lake = config.paths.lake
    assert read_table(spark, table_path(lake, "gold", "fact_sessions")).count() == 0  # empty, not missing
    assert read_table(spark, table_path(lake, "silver", "clicks")).count() == 0
    assert read_table(spark, table_path(lake, "gold", "fact_orders")).count() == 5
    popularity = read_table(spark, table_path(lake, "gold", "product_popularity"))
    assert (
        popularity.where(F.col("purchases") > 0).count() > 0
        and popularity.agg(F.sum("views")).first()[0] == 0
    )


def test_a_run_with_nothing_new_skips_every_job_without_spark_and_commits_nothing(shop):
    assert [o.status for o in shop["again"]] == [SKIPPED] * len(JOB_GRAPH)
    assert shop["after"] == shop["before"]


def test_a_new_delivery_runs_only_the_jobs_that_read_what_changed(spark, shop):
    config = shop["config"]
    _deliver(Path(config.paths.landing), "customers", DAY2, "crm.csv", [
        CUSTOMERS_HEADER,
        "c1,c1@example.com,A,B,+49,de,Hamburg,20095,2025-01-01T00:00:00Z,2026-03-02T00:00:00Z,true",
    ])  # fmt: skip
    outcomes = {o.job: o.status for o in _run(spark, config)}
    ran = {job for job, status in outcomes.items() if status == SUCCEEDED}
    assert {"bronze.customers", "silver.customers", "gold.dim_customer"} <= ran
    assert outcomes["bronze.orders"] == outcomes["silver.orders"] == outcomes["silver.clicks"] == SKIPPED
    assert outcomes["gold.fact_sessions"] == outcomes["gold.dim_product"] == SKIPPED


def test_a_failed_job_stops_only_what_depends_on_it(spark, shop):
    config = shop["config"]
    broken = [_order(f"b{n}", DAY2) for n in range(5)] + [f"x{n},broken" for n in range(20)]
    _deliver(Path(config.paths.landing), "orders", DAY2, "broken.csv", [ORDERS_HEADER, *broken])
    with pytest.raises(JobFailedError) as failure:
        _run(spark, config)
    lines = str(failure.value).splitlines()
    assert lines[0].startswith("silver.orders: QualityThresholdError: rule 'orders_parse_error'")
    blocked = sorted(downstream_of(["silver.orders"]))
    assert [line.split(":")[0] for line in lines[1:]] == [
        s.qualified_name for s in JOB_GRAPH if s.qualified_name in blocked
    ]
    assert all("blocked: silver.orders failed" in line for line in lines[1:])
    runs = read_table(spark, table_path(config.paths.lake, "ops", "pipeline_runs"))
    last = runs.where(F.col("run_id") == runs.agg(F.max("run_id")).first()[0])
    statuses = {r["job"]: r["status"] for r in last.collect()}
    assert statuses["silver.orders"] == "failed" and statuses["bronze.orders"] == "succeeded"
    assert not set(blocked) & set(statuses)  # a blocked job did not run


def test_a_jobs_setting_no_session_can_take_fails_that_job_only(spark, shop):
    config = shop["config"]
    bad = {"gold.dim_date": {"spark.driver.memory": "8g"}}
    tuned = dataclasses.replace(config, spark=dataclasses.replace(config.spark, job_conf=bad))
    dimensions = [s for s in JOB_GRAPH if s.qualified_name in ("gold.dim_date", "gold.dim_product")]
    with warnings.catch_warnings(), pytest.raises(JobFailedError) as failure:
        warnings.simplefilter("ignore")
        run_jobs(spark, tuned, dimensions, [None], force=True)
    assert str(failure.value) == (
        "spark.job_conf.gold.dim_date: spark.driver.memory is not a Spark SQL setting a session "
        "can change; set it for every job in spark.conf"
    )
    runs = read_table(spark, table_path(config.paths.lake, "ops", "pipeline_runs"))
    last = runs.where(F.col("run_id") == runs.agg(F.max("run_id")).first()[0])
    assert {r["job"]: r["status"] for r in last.collect()} == {"gold.dim_product": "succeeded"}

    unknown = dataclasses.replace(config, spark=dataclasses.replace(config.spark, job_conf={"dim_date": {}}))

    def no_spark() -> SparkSession:
        raise AssertionError("a refused config asked for a Spark session")

    with pytest.raises(ValueError, match=r"unknown jobs \['dim_date'\]"):
        run_jobs(no_spark, unknown, dimensions, [None])


@pytest.mark.parametrize("declared", [JOB_GRAPH, tuple(reversed(JOB_GRAPH))], ids=["as declared", "reversed"])
def test_the_graph_orders_every_job_after_the_writers_of_its_inputs(declared):
    ordered = topological_order(declared)
    assert sorted(s.qualified_name for s in ordered) == sorted(s.qualified_name for s in JOB_GRAPH)
    position = {spec.qualified_name: i for i, spec in enumerate(ordered)}
    writers = {table: spec.qualified_name for spec in JOB_GRAPH for table in spec.outputs}
    for spec in ordered:
        for table in spec.inputs:
            if table in writers and writers[table] != spec.qualified_name:
                assert position[writers[table]] < position[spec.qualified_name], (spec.qualified_name, table)


def test_bad_graphs_and_selections_are_refused():
    with pytest.raises(GraphError, match="cycle"):
        topological_order([JobSpec("silver", "a", "m:f", ("silver.b",), ("silver.a",), ""),
                           JobSpec("silver", "b", "m:f", ("silver.a",), ("silver.b",), "")])  # fmt: skip
    with pytest.raises(GraphError, match="unknown job"):
        select_jobs("silver", "nope")


def test_the_spark_jobs_of_each_job_carry_its_name_as_a_tag_also_side_by_side(spark):
    session = _LazySession(spark)
    seen: dict[str, set[str]] = {}

    def run(job: str) -> None:
        job_session = session.for_job(job)
        job_session.range(3).collect()
        seen[job] = job_session.getTags()

    threads = [threading.Thread(target=run, args=(job,)) for job in ("gold.fact_orders", "silver.orders")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {
        "gold.fact_orders": {f"{JOB_TAG_PREFIX}gold.fact_orders"},
        "silver.orders": {f"{JOB_TAG_PREFIX}silver.orders"},
    }
    assert spark.getTags() == set()  # the base session, and this thread, carry none
