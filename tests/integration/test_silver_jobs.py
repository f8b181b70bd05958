"""Silver jobs end to end on literal bronze tables: two deliveries, then a re-run.

One lake is built per module (the jobs are slow on a shared machine); each test asserts on
one aspect of the resulting tables.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import glob
import hashlib
import hmac
import json
import warnings

import pytest
from pyspark.sql import functions as F

from jobs.silver import customers, fx_rates, order_items, orders, products
from pipeline_lib.bronze.schemas import LANDING_SOURCES
from pipeline_lib.config import QualityRule
from pipeline_lib.io.delta import read_table, table_path, table_version, write_table
from pipeline_lib.io.quality import write_quarantine
from pipeline_lib.ops.context import JobContext
from pipeline_lib.ops.watermarks import CDF_PROPERTIES, last_processed_version
from pipeline_lib.privacy.pii import INSECURE_DEFAULT_KEY
from pipeline_lib.quality.rules import QualityThresholdError, split_by_quality, with_rule_results

pytestmark = pytest.mark.slow

JOBS = (fx_rates, customers, products, orders, order_items)
SILVER = ("fx_rates", "customers", "products", "orders", "order_items")
DAY1, DAY2 = dt.date(2024, 1, 2), dt.date(2024, 1, 3)


def bronze(spark, lake, source, day, rows, corrupt=()):
    """Append literal rows (dicts of delivered fields) as one bronze delivery."""
    fields = LANDING_SOURCES[source].fields
    records = [
        (
            *[row.get(f) for f in fields],
            None,
            None,
            f"{source}/ingest_date={day}/part.csv",
            day,
            dt.datetime.combine(day, dt.time(6)),
            f"bronze-{day}",
        )
        for row in rows
    ]
    records += [
        (
            *[None] * len(fields),
            None,
            text,
            f"{source}/ingest_date={day}/part.csv",
            day,
            dt.datetime.combine(day, dt.time(6)),
            f"bronze-{day}",
        )
        for text in corrupt
    ]
    frame = spark.createDataFrame(records, LANDING_SOURCES[source].bronze_schema)
    write_table(
        frame, table_path(lake, "bronze", source), partition_by=["_ingest_date"], properties=CDF_PROPERTIES
    )


def run_all(spark, config, run_id):
    ctx = JobContext(spark=spark, config=config, run_id=run_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {job.__name__: job(ctx) for job in JOBS}


def order(oid, status, updated, currency="EUR", ts="2024-01-02T10:00:00+01:00", fee="5.00", **extra):
    return {
        "order_id": oid,
        "customer_id": "c1",
        "order_status": status,
        "order_ts": ts,
        "updated_at": updated,
        "currency": currency,
        "channel": "web",
        "ship_country": "DE",
        "ship_city": "Berlin",
        "payment_type": "card",
        "shipping_fee": fee,
        **extra,
    }


def line(oid, no, qty="1", price="10.00", discount="0", product="p1"):
    return {
        "order_id": oid,
        "line_no": no,
        "product_id": product,
        "quantity": qty,
        "unit_price": price,
        "discount_amount": discount,
    }


def customer(cid, updated, city="Berlin", email="Anna@Example.com"):
    return {
        "customer_id": cid,
        "email": email,
        "first_name": "Anna",
        "last_name": "Muster",
        "phone": "+49 1",
        "country": "de",
        "city": city,
        "postal_code": "10115",
        "signup_ts": "2023-12-01T00:00:00Z",
        "updated_at": updated,
        "marketing_opt_in": "true",
    }


def product(pid, price="10.00", path='["A","B","C"]', updated="2024-01-01T00:00:00Z"):
    return {
        "product_id": pid,
        "sku": f"sku-{pid}",
        "name": pid,
        "brand": "b",
        "category_path": path,
        "price": price,
        "currency": "EUR",
        "is_active": "true",
        "updated_at": updated,
        "attributes": "{}",
    }


@pytest.fixture(scope="module")
def lake(spark, base_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("silver")
    config = base_config.with_paths(landing=str(root / "landing"), lake=str(root / "lake"))
    lake = config.paths.lake
    bronze(
        spark,
        lake,
        "fx_rates",
        DAY1,
        [
            {"rate_date": "2024-01-01", "currency": "USD", "rate_to_base": "0.9"},
            {"rate_date": "2024-01-01", "currency": "GBP", "rate_to_base": "1.15"},
            {"rate_date": "2024-01-01", "currency": "xxx", "rate_to_base": "-1"},
        ],
    )
    bronze(
        spark,
        lake,
        "orders",
        DAY1,
        [
            order("o1", "paid", "2024-01-02T10:00:00+01:00", currency="USD"),
            order("o1", "created", "2024-01-02T09:00:00+01:00", currency="USD"),  # older duplicate
            order("o2", "paid", "2024-01-03 08:00:00", ts="2024-01-03 08:00:00"),  # naive: Europe/Berlin
            order("o3", "paid", "2024-01-02T10:00:00Z", currency="JPY"),  # no rate
            order("o4", "lost", "2024-01-02T10:00:00Z"),  # unknown status
            # two days after its delivery: the latest plausible date (quality.plausible_time)
            order("o5", "paid", "2024-01-04T10:00:00Z", currency="gbp", ts="2024-01-04T10:00:00Z"),
        ],
    )
    bronze(
        spark,
        lake,
        "order_items",
        DAY1,
        [
            line("o1", "1"),
            line("o1", "2", qty="2", price="3.50", discount="1"),
            line("o2", "1", product="p999"),
            line("o2", "2", qty="0"),
            line("o3", "1"),
            line("o9", "1"),
        ],
    )
    bronze(
        spark,
        lake,
        "customers",
        DAY1,
        [
            customer("c1", "2024-01-02T00:00:00Z"),
            customer("c2", "2024-01-02T00:00:00Z", email="not-an-email"),
            customer(None, "2024-01-02T00:00:00Z"),
        ],
    )
    bronze(spark, lake, "catalogue", DAY1, [product("p1"), product("p2"), product("p3", path='["A","B"]')])
    first = run_all(spark, config, "run-1")

    bronze(
        spark,
        lake,
        "orders",
        DAY2,
        [
            order("o1", "shipped", "2024-01-03T10:00:00Z", currency="USD"),
            order("o2", "created", "2024-01-01T08:00:00Z", ts="2024-01-03 08:00:00"),  # late, older version
        ],
    )
    bronze(spark, lake, "order_items", DAY2, [line("o1", "1", qty="3"), line("o2", "1", qty="7")])
    bronze(
        spark,
        lake,
        "customers",
        DAY2,
        [
            customer("c1", "2024-01-03T00:00:00Z", city="Munich"),
            customer("c2", "2024-01-03T00:00:00Z", email="not-an-email"),  # no change
            customer("c1", "2024-01-01T12:00:00Z", city="Hamburg"),  # late update, older than current
        ],
    )
    bronze(
        spark,
        lake,
        "catalogue",
        DAY2,
        [
            product("p1", price="12.00", updated="2024-01-02T12:00:00Z"),
            product("p3", path='["A","B"]'),
        ],
    )  # p2 is missing: delisted
    second = run_all(spark, config, "run-2")
    versions = {
        t: table_version(spark, table_path(lake, layer, t))
        for layer in ("silver", "quarantine")
        for t in SILVER
    }
    third = run_all(spark, config, "run-3")
    versions_after = {
        t: table_version(spark, table_path(lake, layer, t))
        for layer in ("silver", "quarantine")
        for t in SILVER
    }
    return {
        "config": config,
        "lake": lake,
        "results": [first, second, third],
        "versions": (versions, versions_after),
    }


def silver(spark, lake, name):
    return read_table(spark, table_path(lake, "silver", name))


def test_orders_keep_greatest_updated_at_and_value_at_as_of_rate(spark, lake):
    rows = {
        r["order_id"]: r
        for r in silver(spark, lake["lake"], "orders")
        .select(
            "order_id",
            "order_status",
            "currency",
            "fx_rate_to_base",
            "shipping_fee_base",
            F.col("updated_at").cast("string").alias("updated"),
            F.col("order_date").cast("string").alias("d"),
        )
        .collect()
    }
    assert sorted(rows) == ["o1", "o2", "o5"]
    assert (rows["o1"]["order_status"], rows["o1"]["updated"]) == ("shipped", "2024-01-03 10:00:00")
    assert float(rows["o1"]["fx_rate_to_base"]) == 0.9 and float(rows["o1"]["shipping_fee_base"]) == 4.5
    # the late, older o2 version did not overwrite; naive time read in Europe/Berlin
    assert (rows["o2"]["order_status"], rows["o2"]["updated"]) == ("paid", "2024-01-03 07:00:00")
    assert float(rows["o2"]["fx_rate_to_base"]) == 1.0  # base currency, no rate row
    assert (rows["o5"]["currency"], float(rows["o5"]["fx_rate_to_base"])) == ("GBP", 1.15)  # earlier rate


def test_quarantine_holds_bronze_rows_with_failed_rules_once(spark, lake):
    quarantined = read_table(spark, table_path(lake["lake"], "quarantine", "orders"))
    actual = sorted((r["order_id"], tuple(r["_failed_rules"])) for r in quarantined.collect())
    assert actual == [("o3", ("fx_rate_available",)), ("o4", ("order_status_accepted",))]
    assert dict(quarantined.dtypes)["shipping_fee"] == "string"  # as delivered
    fx = read_table(spark, table_path(lake["lake"], "quarantine", "fx_rates")).collect()
    assert [(r["currency"], r["rate_to_base"], r["_failed_rules"]) for r in fx] == [
        ("xxx", "-1", ["rate_positive"])
    ]


def test_order_lines_are_those_of_the_latest_version(spark, lake):
    rows = {(r["order_id"], r["line_no"]): r for r in silver(spark, lake["lake"], "order_items").collect()}
    assert sorted(rows) == [
        ("o1", 1),
        ("o2", 1),
    ]  # o1 line 2 gone with the new version; o2 line 2 quarantined
    assert rows[("o1", 1)]["quantity"] == 3 and float(rows[("o1", 1)]["net_amount_base"]) == 27.0
    assert rows[("o2", 1)]["quantity"] == 1  # the late line of an older o2 version was superseded
    assert rows[("o2", 1)]["_dq_flags"] == ["product_known"]  # unknown product kept, flagged
    quarantined = read_table(spark, table_path(lake["lake"], "quarantine", "order_items")).collect()
    assert sorted((r["order_id"], r["line_no"], tuple(r["_failed_rules"])) for r in quarantined) == [
        ("o2", "2", ("quantity_positive",)),
        ("o3", "1", ("order_known",)),
        ("o9", "1", ("order_known",)),
    ]


def test_customers_history_with_change_no_change_and_late_update(spark, lake):
    history = silver(spark, lake["lake"], "customers").select(
        "customer_id",
        "city",
        "email",
        "email_hash",
        "is_current",
        "_dq_flags",
        F.col("valid_from").cast("string").alias("vf"),
        F.col("valid_to").cast("string").alias("vt"),
    )
    c1 = sorted(
        (r["vf"], r["vt"], r["city"], r["is_current"]) for r in history.where("customer_id = 'c1'").collect()
    )
    assert c1 == [
        ("2024-01-01 12:00:00", "2024-01-02 00:00:00", "Hamburg", False),
        ("2024-01-02 00:00:00", "2024-01-03 00:00:00", "Berlin", False),
        ("2024-01-03 00:00:00", None, "Munich", True),
    ]
    c2 = history.where("customer_id = 'c2'").collect()
    assert [(r["is_current"], r["_dq_flags"]) for r in c2] == [(True, ["email_pattern"])]
    expected_hash = hmac.new(INSECURE_DEFAULT_KEY, b"anna@example.com", hashlib.sha256).hexdigest()
    assert {r["email_hash"] for r in history.where("customer_id = 'c1'").collect()} == {expected_hash}


def test_customer_pii_is_kept_out_of_delta_statistics(lake):
    stats = []
    for log in glob.glob(f"{table_path(lake['lake'], 'silver', 'customers')}/_delta_log/*.json"):
        for entry in map(json.loads, open(log, encoding="utf-8")):
            if "add" in entry and entry["add"].get("stats"):
                stats.append(entry["add"]["stats"])
    assert stats and all("example.com" not in s.lower() and "Muster" not in s for s in stats)
    assert "customer_id" in stats[0]


def test_products_delisting_and_versions(spark, lake):
    rows = silver(spark, lake["lake"], "products").select(
        "product_id",
        "price",
        "is_delisted",
        "is_current",
        "_dq_flags",
        "category_l3",
        F.col("valid_from").cast("string").alias("vf"),
    )
    p1 = sorted(
        (r["vf"], float(r["price"]), r["is_current"]) for r in rows.where("product_id = 'p1'").collect()
    )
    assert p1 == [("2024-01-01 00:00:00", 10.0, False), ("2024-01-02 12:00:00", 12.0, True)]
    p2 = sorted(
        (r["vf"], r["is_delisted"], r["is_current"]) for r in rows.where("product_id = 'p2'").collect()
    )
    assert p2 == [("2024-01-01 00:00:00", False, False), ("2024-01-03 00:00:00", True, True)]
    p3 = rows.where("product_id = 'p3'").collect()
    assert [(r["_dq_flags"], r["category_l3"]) for r in p3] == [(["category_three_levels"], None)]


def test_reconciliation_counts(lake):
    first, second, _ = lake["results"]
    assert first["orders"].details | {"bronze_version": 0} == {
        "bronze_rows_read": 6,
        "written": 3,
        "quarantined": 2,
        "duplicates_removed": 0,
        "conflicts": 0,
        "superseded": 1,  # o1's older state in the same delivery: an older version, not a copy
        "conflicts_replacing_silver": 0,
        "reconciled": True,
        "bronze_version": 0,
    }
    assert (
        second["orders"].rows_read,
        second["orders"].rows_written,
        second["orders"].details["superseded"],
    ) == (2, 1, 1)
    items = second["order_items"].details
    assert (items["bronze_rows_read"], items["written"], items["superseded"]) == (2, 1, 1)
    assert first["order_items"].rows_quarantined == 3
    for results in (first, second):
        assert all(r.details["reconciled"] for r in results.values() if "reconciled" in r.details)


def test_rerun_commits_nothing(spark, lake):
    before, after = lake["versions"]
    assert before == after
    assert all(r.details == {"skipped": "no new bronze rows"} for r in lake["results"][2].values())
    assert last_processed_version(spark, lake["lake"], "silver.orders", "bronze.orders") == 1


def test_parse_errors_above_threshold_fail_the_run(spark, config):
    lake = config.paths.lake
    bronze(spark, lake, "orders", DAY1, [order("o1", "paid", "2024-01-02T10:00:00Z")], corrupt=["o2,broken"])
    judged = dataclasses.replace(config, quality=dataclasses.replace(config.quality, threshold_min_rows=2))
    ctx = JobContext(spark=spark, config=judged, run_id="run-x")
    with pytest.raises(
        QualityThresholdError, match=r"orders_parse_error.*50\.0%.*orders/ingest_date=2024-01-02"
    ):
        orders(ctx)
    assert last_processed_version(spark, lake, "silver.orders", "bronze.orders") is None
    assert table_version(spark, table_path(lake, "silver", "orders")) is None


def test_a_share_of_too_few_rows_is_not_judged_the_broken_rows_are_quarantined(spark, config):
    """Three order rows, two broken: under quality.threshold_min_rows, nothing stops the run."""
    lake = config.paths.lake
    good = order("o1", "paid", "2024-01-02T10:00:00Z")
    bronze(spark, lake, "orders", DAY1, [good], corrupt=["o2,broken", "o3,broken"])
    result = orders(JobContext(spark=spark, config=config, run_id="run-y"))
    assert (result.rows_written, result.rows_quarantined) == (1, 2)
    assert [r["order_id"] for r in read_table(spark, table_path(lake, "silver", "orders")).collect()] == [
        "o1"
    ]


def test_quarantine_write_is_idempotent_and_keeps_identical_rows(spark, tmp_path):
    schema = (
        "id string, qty string, _source_file string, _ingest_date date, "
        "_ingested_at timestamp, _run_id string"
    )
    day = dt.date(2024, 1, 2)
    rows = [("a", "0", "f1", day, dt.datetime(2024, 1, 2), "r1")] * 2 + [
        ("b", "5", "f1", day, dt.datetime(2024, 1, 2), "r1")
    ]
    source = spark.createDataFrame(rows, schema)
    _, quarantined = split_by_quality(
        with_rule_results(source, [QualityRule(name="qty_positive", expr="qty > 0")])
    )
    lake = str(tmp_path / "lake")
    path = write_quarantine(quarantined, lake, "things", run_id="run-1")
    write_quarantine(quarantined, lake, "things", run_id="run-2")  # the same bronze rows, re-processed
    actual = read_table(spark, path).collect()
    assert sorted((r["id"], r["_failed_rules"], r["_quarantine_run_id"]) for r in actual) == [
        ("a", ["qty_positive"], "run-1"),
        ("a", ["qty_positive"], "run-1"),
    ]
