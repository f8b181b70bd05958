"""The gold jobs end to end on literal silver Delta tables: build, incremental change, re-run, full refresh.

One scenario, run once per module (its phases are what the tests look at):

1. initial build of every gold table from silver;
2. silver changes the way the silver jobs change it (MERGE, DELETE, append): an order is
   returned and loses a line, a new order arrives, a late customer version moves an
   existing order to it, an inferred customer and an inferred product get their real
   records, a session gets a late event and a new session starts; then the incremental run;
3. a re-run with nothing new;
4. a full refresh.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import chispa
import pytest
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.framework import run_job
from jobs.graph import select_jobs
from pipeline_lib.config import PipelineConfig
from pipeline_lib.gold.schemas import GOLD_SCHEMAS
from pipeline_lib.io.delta import read_table, table_path, table_version, upsert, write_table
from pipeline_lib.ops.context import JobContext, JobResult, new_run_id
from pipeline_lib.ops.watermarks import CDF_PROPERTIES
from pipeline_lib.privacy.pii import PII_COLUMNS
from pipeline_lib.silver.schemas import SILVER_SCHEMAS

pytestmark = pytest.mark.slow

GOLD_JOBS = ("dim_date", "dim_customer", "dim_product", "fact_order_lines", "fact_orders", "fact_sessions")
MEMBER_FROM = dt.datetime(1900, 1, 1, tzinfo=dt.UTC)


def utc(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=dt.UTC)


def silver_rows(spark: SparkSession, table: str, rows: list[dict[str, Any]]) -> DataFrame:
    schema = SILVER_SCHEMAS[table]
    return spark.createDataFrame([tuple(row.get(f.name) for f in schema.fields) for row in rows], schema)


def order(
    order_id: str, customer_id: str | None, order_ts: dt.datetime, status: str, **extra: Any
) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "customer_id": customer_id,
        "order_status": status,
        "order_ts": order_ts,
        "order_date": order_ts.date(),
        "updated_at": order_ts,
        "currency": "EUR",
        "channel": "web",
        "ship_country": "DE",
        "fx_rate_to_base": Decimal("1"),
        "shipping_fee": Decimal("4.90"),
        "shipping_fee_base": Decimal("4.90"),
        **extra,
    }


def line(
    order_id: str, line_no: int, product_id: str, qty: int, price: str, discount: str = "0", rate: str = "1"
) -> dict[str, Any]:
    net = qty * Decimal(price) - Decimal(discount)
    return {
        "order_id": order_id,
        "line_no": line_no,
        "product_id": product_id,
        "quantity": qty,
        "unit_price": Decimal(price),
        "discount_amount": Decimal(discount),
        "net_amount": net,
        "net_amount_base": net * Decimal(rate),
    }


def customer(
    customer_id: str, valid_from: dt.datetime, valid_to: dt.datetime | None, city: str
) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "email": f"{customer_id.lower()}@example.com",
        "email_hash": f"hash-{customer_id}",
        "first_name": "First",
        "last_name": "Last",
        "phone": "+49 30 1234",
        "postal_code": "10115",
        "country": "DE",
        "city": city,
        "marketing_opt_in": True,
        "valid_from": valid_from,
        "valid_to": valid_to,
        "is_current": valid_to is None,
    }


def product(
    product_id: str, valid_from: dt.datetime, valid_to: dt.datetime | None, price: str
) -> dict[str, Any]:
    return {
        "product_id": product_id,
        "sku": f"SKU-{product_id}",
        "name": f"Product {product_id}",
        "category_l1": "Home",
        "price": Decimal(price),
        "currency": "EUR",
        "is_active": True,
        "is_delisted": False,
        "valid_from": valid_from,
        "valid_to": valid_to,
        "is_current": valid_to is None,
    }


def click(
    event_id: str, session_id: str, event_ts: dt.datetime, event_type: str, **extra: Any
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "session_id": session_id,
        "event_ts": event_ts,
        "event_date": event_ts.date(),
        "event_type": event_type,
        "anonymous_id": f"A-{session_id}",
        **extra,
    }


INITIAL_SILVER = {
    "customers": [
        customer("C1", utc(2024, 1, 1), utc(2024, 3, 1), "Berlin"),
        customer("C1", utc(2024, 3, 1), None, "Munich"),
        customer("C2", utc(2024, 1, 1), None, "Paris"),
    ],
    "products": [
        product("P1", utc(2024, 1, 1), utc(2024, 2, 1), "10.00"),
        product("P1", utc(2024, 2, 1), None, "12.00"),  # price change between O1 and O2
        product("P2", utc(2024, 1, 1), None, "5.00"),
    ],
    "orders": [
        order("O1", "C1", utc(2024, 1, 15, 10), "delivered"),
        order("O2", "C1", utc(2024, 3, 5, 9), "cancelled"),
        order(
            "O3",
            None,
            utc(2024, 2, 10, 8),
            "shipped",
            currency="USD",
            fx_rate_to_base=Decimal("0.9"),
            shipping_fee=Decimal("10.00"),
            shipping_fee_base=Decimal("9.00"),
        ),
        order("O4", "C9", utc(2024, 3, 6, 12), "delivered"),  # C9 unknown to the CRM yet
    ],
    "order_items": [
        line("O1", 1, "P1", 2, "10.00"),
        line("O1", 2, "P2", 1, "5.00", "0.50"),
        line("O2", 1, "P1", 1, "12.00"),
        line("O3", 1, "P1", 1, "12.00", "1.00", rate="0.9"),
        line("O4", 1, "P7", 3, "2.00"),  # P7 unknown to the catalogue yet
    ],
    "clicks": [
        click("e1", "S1", utc(2024, 12, 31, 23, 50), "page_view", page_url="/home"),
        click("e2", "S1", utc(2025, 1, 1, 0, 10), "product_view", product_id="P1"),  # crosses midnight
        click("e3", "S2", utc(2024, 1, 15, 9, 50), "page_view", customer_id="C1"),
        click("e4", "S2", utc(2024, 1, 15, 10), "purchase", customer_id="C1", order_id="O1"),
    ],
}


@dataclass
class Scenario:
    config: PipelineConfig
    built: dict[str, int]  # gold table -> version after each phase
    incremental: dict[str, int]
    rerun: dict[str, int]
    refreshed: dict[str, int]
    rerun_results: dict[str, JobResult]

    def gold(self, spark: SparkSession, table: str, phase: dict[str, int]) -> DataFrame:
        return read_table(spark, table_path(self.config.paths.lake, "gold", table), version=phase[table])

    def silver(self, spark: SparkSession, table: str) -> DataFrame:
        return read_table(spark, table_path(self.config.paths.lake, "silver", table))


def run_gold(
    spark: SparkSession, config: PipelineConfig, *, full_refresh: bool = False
) -> dict[str, JobResult]:
    ctx = JobContext(spark=spark, config=config, run_id=new_run_id(), full_refresh=full_refresh)
    return {name: run_job(select_jobs("gold", name)[0], ctx) for name in GOLD_JOBS}


def gold_versions(spark: SparkSession, config: PipelineConfig) -> dict[str, int]:
    lake = config.paths.lake
    return {name: table_version(spark, table_path(lake, "gold", name)) or 0 for name in GOLD_JOBS}


def change_silver(spark: SparkSession, lake: str) -> None:
    """Change silver the way its jobs do: MERGE by key, DELETE removed lines, append events."""

    def path(table: str) -> str:
        return table_path(lake, "silver", table)

    def rows(table: str, data: list[dict[str, Any]]) -> DataFrame:
        return silver_rows(spark, table, data)

    upsert(
        rows(
            "orders",
            [
                order("O1", "C1", utc(2024, 1, 15, 10), "returned", updated_at=utc(2024, 2, 1)),
                order("O5", "C2", utc(2024, 3, 7, 10), "delivered"),
            ],
        ),
        path("orders"),
        keys=["order_id"],
    )
    DeltaTable.forPath(spark, path("order_items")).delete("order_id = 'O1' AND line_no = 2")
    write_table(rows("order_items", [line("O5", 1, "P2", 2, "5.00")]), path("order_items"))
    upsert(
        rows(
            "customers",
            [
                customer("C1", utc(2024, 3, 1), utc(2024, 3, 4), "Munich"),  # closed by a late version...
                customer("C1", utc(2024, 3, 4), None, "Hamburg"),  # ...that O2 (2024-03-05) now falls into
                customer("C9", utc(2024, 3, 10), None, "Rome"),  # after O4: O4 keeps its first version
            ],
        ),
        path("customers"),
        keys=["customer_id", "valid_from"],
    )
    upsert(
        rows("products", [product("P7", utc(2024, 1, 1), None, "2.00")]),
        path("products"),
        keys=["product_id", "valid_from"],
    )
    write_table(
        rows(
            "clicks",
            [
                click("e5", "S2", utc(2024, 1, 15, 10, 20), "page_view"),  # late event of S2
                click("e6", "S3", utc(2024, 3, 7, 9, 55), "page_view", customer_id="C2"),
            ],
        ),
        path("clicks"),
    )


@pytest.fixture(scope="module")
def scenario(
    spark: SparkSession, base_config: PipelineConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scenario]:
    root: Path = tmp_path_factory.mktemp("gold")
    (root / "landing").mkdir()
    config = base_config.with_paths(landing=str(root / "landing"), lake=str(root / "lake"))
    lake = config.paths.lake
    for table, data in INITIAL_SILVER.items():
        write_table(
            silver_rows(spark, table, data), table_path(lake, "silver", table), properties=CDF_PROPERTIES
        )

    run_gold(spark, config)
    built = gold_versions(spark, config)
    change_silver(spark, lake)
    run_gold(spark, config)
    incremental = gold_versions(spark, config)
    rerun_results = run_gold(spark, config)
    rerun = gold_versions(spark, config)
    run_gold(spark, config, full_refresh=True)
    refreshed = gold_versions(spark, config)
    yield Scenario(config, built, incremental, rerun, refreshed, rerun_results)


LINE_KEYS = (
    "order_id string, line_no int, customer_id string, customer_from timestamp, customer_inferred boolean, "
    "product_id string, product_from timestamp, product_inferred boolean, is_revenue boolean, "
    "net_amount_base decimal(22,6)"
)


def lines_with_versions(scenario: Scenario, spark: SparkSession, phase: dict[str, int]) -> DataFrame:
    """Each fact line with the valid_from and inferred flag of the dimension rows its keys point at."""
    customers = scenario.gold(spark, "dim_customer", phase).select(
        "customer_sk",
        F.col("valid_from").alias("customer_from"),
        F.col("is_inferred").alias("customer_inferred"),
    )
    products = scenario.gold(spark, "dim_product", phase).select(
        "product_sk",
        F.col("valid_from").alias("product_from"),
        F.col("is_inferred").alias("product_inferred"),
    )
    return (
        scenario.gold(spark, "fact_order_lines", phase)
        .join(customers, on="customer_sk", how="left")
        .join(products, on="product_sk", how="left")
        .select(
            "order_id",
            "line_no",
            "customer_id",
            "customer_from",
            "customer_inferred",
            "product_id",
            "product_from",
            "product_inferred",
            "is_revenue",
            "net_amount_base",
        )
    )


def test_initial_build_points_lines_at_the_versions_valid_at_order_time(
    scenario: Scenario, spark: SparkSession
) -> None:
    actual = lines_with_versions(scenario, spark, scenario.built)
    expected = spark.createDataFrame(
        [
            ("O1", 1, "C1", utc(2024, 1, 1), False, "P1", utc(2024, 1, 1), False, True, Decimal("20")),
            ("O1", 2, "C1", utc(2024, 1, 1), False, "P2", utc(2024, 1, 1), False, True, Decimal("4.5")),
            ("O2", 1, "C1", utc(2024, 3, 1), False, "P1", utc(2024, 2, 1), False, False, Decimal("12")),
            ("O3", 1, None, MEMBER_FROM, False, "P1", utc(2024, 2, 1), False, True, Decimal("9.9")),
            ("O4", 1, "C9", MEMBER_FROM, True, "P7", MEMBER_FROM, True, True, Decimal("6")),
        ],
        LINE_KEYS,
    )
    chispa.assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_incremental_run_applies_every_silver_change(scenario: Scenario, spark: SparkSession) -> None:
    actual = lines_with_versions(scenario, spark, scenario.incremental)
    expected = spark.createDataFrame(
        [
            (
                "O1",
                1,
                "C1",
                utc(2024, 1, 1),
                False,
                "P1",
                utc(2024, 1, 1),
                False,
                False,
                Decimal("20"),
            ),  # returned
            (
                "O2",
                1,
                "C1",
                utc(2024, 3, 4),
                False,
                "P1",
                utc(2024, 2, 1),
                False,
                False,
                Decimal("12"),
            ),  # late version
            ("O3", 1, None, MEMBER_FROM, False, "P1", utc(2024, 2, 1), False, True, Decimal("9.9")),
            (
                "O4",
                1,
                "C9",
                utc(2024, 3, 10),
                False,
                "P7",
                utc(2024, 1, 1),
                False,
                True,
                Decimal("6"),
            ),  # now known
            ("O5", 1, "C2", utc(2024, 1, 1), False, "P2", utc(2024, 1, 1), False, True, Decimal("10")),  # new
        ],
        LINE_KEYS,
    )
    chispa.assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_inferred_members_keep_their_keys_when_the_real_records_arrive(
    scenario: Scenario, spark: SparkSession
) -> None:
    def o4_keys(phase: dict[str, int]) -> DataFrame:
        return (
            scenario.gold(spark, "fact_order_lines", phase)
            .where("order_id = 'O4'")
            .select("customer_sk", "product_sk")
        )

    chispa.assert_df_equality(o4_keys(scenario.incremental), o4_keys(scenario.built))


def test_fact_orders_after_the_incremental_run(scenario: Scenario, spark: SparkSession) -> None:
    actual = scenario.gold(spark, "fact_orders", scenario.incremental).select(
        "order_id",
        "customer_id",
        "order_status",
        "line_count",
        "item_count",
        "net_amount_base",
        "shipping_fee_base",
        "is_revenue",
    )
    expected = spark.createDataFrame(
        [
            ("O1", "C1", "returned", 1, 2, Decimal("20"), Decimal("4.9"), False),
            ("O2", "C1", "cancelled", 1, 1, Decimal("12"), Decimal("4.9"), False),
            ("O3", None, "shipped", 1, 1, Decimal("9.9"), Decimal("9"), True),
            ("O4", "C9", "delivered", 1, 3, Decimal("6"), Decimal("4.9"), True),
            ("O5", "C2", "delivered", 1, 2, Decimal("10"), Decimal("4.9"), True),
        ],
        "order_id string, customer_id string, order_status string, line_count bigint, item_count bigint, "
        "net_amount_base decimal(22,6), shipping_fee_base decimal(22,6), is_revenue boolean",
    )
    chispa.assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.parametrize("phase", ["built", "incremental"])
def test_revenue_reconciles_with_silver(scenario: Scenario, spark: SparkSession, phase: str) -> None:
    # The silver tables are only read at their state of that phase: 'built' means before the change.
    silver_version = 0 if phase == "built" else None
    lake = scenario.config.paths.lake
    orders = read_table(spark, table_path(lake, "silver", "orders"), version=silver_version)
    items = read_table(spark, table_path(lake, "silver", "order_items"), version=silver_version)
    expected = (
        items.join(orders, on="order_id", how="inner")
        .where(~F.col("order_status").isin("cancelled", "returned"))
        .agg(
            F.sum(
                (F.col("quantity") * F.col("unit_price") - F.col("discount_amount"))
                * F.col("fx_rate_to_base")
            )
            .cast("decimal(22,6)")
            .alias("revenue")
        )
    )
    actual = (
        scenario.gold(spark, "fact_order_lines", getattr(scenario, phase))
        .where("is_revenue")
        .agg(F.sum("net_amount_base").cast("decimal(22,6)").alias("revenue"))
    )
    chispa.assert_df_equality(actual, expected, ignore_nullable=True)
    assert actual.first()[0] == (Decimal("40.4") if phase == "built" else Decimal("25.9"))  # type: ignore[index]


def test_sessions_after_the_incremental_run(scenario: Scenario, spark: SparkSession) -> None:
    actual = scenario.gold(spark, "fact_sessions", scenario.incremental).select(
        "session_id", "customer_id", "start_ts", "end_ts", "events", "converted", "session_date_key"
    )
    expected = spark.createDataFrame(
        [
            ("S1", None, utc(2024, 12, 31, 23, 50), utc(2025, 1, 1, 0, 10), 2, False, 20241231),
            ("S2", "C1", utc(2024, 1, 15, 9, 50), utc(2024, 1, 15, 10, 20), 3, True, 20240115),
            ("S3", "C2", utc(2024, 3, 7, 9, 55), utc(2024, 3, 7, 9, 55), 1, False, 20240307),
        ],
        "session_id string, customer_id string, start_ts timestamp, end_ts timestamp, events bigint, "
        "converted boolean, session_date_key int",
    )
    chispa.assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_dim_date_covers_the_years_of_orders_and_events(scenario: Scenario, spark: SparkSession) -> None:
    actual = scenario.gold(spark, "dim_date", scenario.incremental).agg(
        F.min("date_key").alias("first"), F.max("date_key").alias("last"), F.count("*").alias("days")
    )
    expected = spark.createDataFrame([(20240101, 20251231, 366 + 365)], "first int, last int, days bigint")
    chispa.assert_df_equality(actual, expected, ignore_nullable=True)


def test_rerun_with_nothing_new_commits_nothing(scenario: Scenario) -> None:
    assert scenario.rerun == scenario.incremental
    assert {name: result.details.get("mode") for name, result in scenario.rerun_results.items()} == {
        name: "skipped" for name in GOLD_JOBS
    }


@pytest.mark.parametrize("table", GOLD_JOBS)
def test_full_refresh_gives_the_tables_of_the_incremental_runs(
    scenario: Scenario, spark: SparkSession, table: str
) -> None:
    assert scenario.refreshed[table] > scenario.rerun[table]  # it did rewrite
    actual = scenario.gold(spark, table, scenario.refreshed)
    expected = scenario.gold(spark, table, scenario.incremental)
    chispa.assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_gold_tables_match_their_contracts_and_hold_no_personal_data(
    scenario: Scenario, spark: SparkSession
) -> None:
    for table in GOLD_JOBS:
        actual = scenario.gold(spark, table, scenario.refreshed)
        assert actual.columns == GOLD_SCHEMAS[table].fieldNames(), table
        assert not set(PII_COLUMNS) & set(actual.columns), table
        emails = actual.where(
            F.exists(
                F.array(*[F.col(c).cast("string") for c in actual.columns]),
                lambda v: v.contains("@example.com"),
            )
        )
        assert emails.isEmpty(), table
