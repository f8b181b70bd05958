"""Right to erasure (``ecom-pipeline forget-customer``) on a copy of the reference lake.

The customer's clear values are collected first; after the erasure EVERY data file of every
table (current, older versions, change data) is read with pyarrow, and the ``_delta_log``
too, and none of those values may appear. One erased copy is shared by the module; the
``--keep-history`` path gets its own copy.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.erasure import forget_customer
from jobs.framework import run_job
from jobs.graph import select_jobs
from jobs.operations import maintain
from jobs.runner import run_jobs
from pipeline_lib.config import PipelineConfig
from pipeline_lib.io.delta import read_table, table_path, table_version
from pipeline_lib.ops.context import JobContext, new_run_id
from pipeline_lib.ops.schemas import ERASURES_TABLE
from pipeline_lib.privacy.erasure import STATS_PREFIX_CHARS
from pipeline_lib.privacy.forget import customer_key
from tests.support import run_cli

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Customer:
    """The erased customer's clear values, collected from the lake before the erasure."""

    customer_id: str
    emails: tuple[str, ...]
    phones: tuple[str, ...]
    email_hashes: tuple[str, ...]
    devices: tuple[str, ...]
    sessions: tuple[str, ...]  # delivered session ids of their devices
    names: tuple[tuple[str, str], ...]  # (first_name, last_name) of each version
    postal_codes: tuple[str, ...]
    quarantined: bool

    def needles(self) -> dict[str, str]:
        """Values that must not appear in any file, by what they are: their first 32 characters,
        since Delta's statistics keep no more of a string."""
        found = {"customer_id": self.customer_id}
        found.update({f"email {e}": e for e in self.emails})
        found.update({f"phone {p}": p for p in self.phones})
        found.update({f"email_hash {h}": h for h in self.email_hashes})
        found.update({f"device {d}": d for d in self.devices})
        found.update({f"session {s}": s for s in self.sessions})
        return {what: value.lower()[:STATS_PREFIX_CHARS] for what, value in found.items()}


# --- reading every file of the lake -------------------------------------------------------------


def _texts(value: Any) -> Iterator[str]:
    """Every string inside a pyarrow-decoded value (nested lists, dicts, tuples)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _texts(key)
            yield from _texts(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _texts(item)


def data_files(lake: Path) -> list[Path]:
    """Every Parquet data file of every table: current, older versions and change data."""
    return sorted(p for p in lake.rglob("*.parquet") if "_delta_log" not in p.parts)


def file_text(path: Path) -> str:
    """All strings of one Parquet file, lower-cased, one per line."""
    rows = pq.ParquetFile(path).read().to_pylist()
    return "\n".join(_texts(rows)).lower()


def log_files(lake: Path) -> list[Path]:
    """Every file of every table's ``_delta_log`` (commits, checksums, checkpoints, markers)."""
    return sorted(
        p
        for log in lake.rglob("_delta_log")
        for p in log.rglob("*")
        if p.is_file() and not p.name.startswith(".")  # not Hadoop's own .crc checksums
    )


def _without_stats(value: Any) -> Any:
    """A decoded log action without its min/max statistics (``stats``, ``stats_parsed``, any depth)."""
    if isinstance(value, dict):
        return {k: _without_stats(v) for k, v in value.items() if not k.startswith("stats")}
    if isinstance(value, list):
        return [_without_stats(v) for v in value]
    return value


def log_text(lake: Path, *, stats: bool = True) -> dict[Path, str]:
    """The text of every ``_delta_log`` file, lower-cased; optionally without the statistics."""
    texts = {}
    for path in log_files(lake):
        if path.suffix == ".parquet":
            rows: Any = pq.ParquetFile(path).read().to_pylist()
        else:
            raw = path.read_text(errors="replace")
            try:
                rows = [json.loads(line) for line in raw.splitlines() if line.strip()]
            except json.JSONDecodeError:
                rows = [raw]
        texts[path] = "\n".join(_texts(rows if stats else _without_stats(rows))).lower()
    return texts


def log_versions(lake: Path) -> dict[Path, int]:
    """The latest committed version of every table, by its ``_delta_log`` folder."""
    return {
        log: max(int(p.name.split(".")[0]) for p in log.glob("*.json") if p.name.split(".")[0].isdigit())
        for log in lake.rglob("_delta_log")
    }


def files_holding(texts: dict[Path, str], needles: dict[str, str]) -> dict[str, list[str]]:
    """Which files hold which needle (empty when none does)."""
    found: dict[str, list[str]] = {}
    for path, text in texts.items():
        for what, needle in needles.items():
            if needle.lower() in text:
                found.setdefault(what, []).append(str(path))
    return found


def assert_nothing_left(lake: Path, customer: Customer, *, min_files: int = 20) -> None:
    texts = {path: file_text(path) for path in data_files(lake)}
    assert len(texts) > min_files, "the lake should have many data files"
    assert files_holding(texts, customer.needles()) == {}


# --- choosing the customer ----------------------------------------------------------------------


def _distinct(frame: DataFrame, column: str) -> tuple[str, ...]:
    return tuple(sorted({r[0] for r in frame.select(column).distinct().collect() if r[0]}))


def choose_customer(spark: SparkSession, lake: str) -> Customer:
    """A customer with orders and clicks, preferring one with quarantined rows; their clear values."""

    def silver(table: str) -> DataFrame:
        return read_table(spark, table_path(lake, "silver", table))

    def quarantine(table: str) -> DataFrame:
        return read_table(spark, table_path(lake, "quarantine", table))

    with_orders = silver("orders").select("customer_id").where(F.col("customer_id").isNotNull()).distinct()
    with_clicks = silver("clicks").select("customer_id").distinct()
    quarantined = (
        quarantine("orders")
        .select(F.trim("customer_id").alias("customer_id"))
        .unionByName(quarantine("clicks").select(F.trim("customer_id").alias("customer_id")))
        .distinct()
        .withColumn("in_quarantine", F.lit(True))
    )
    candidates = (
        silver("customers")
        .select("customer_id")
        .distinct()
        .join(with_orders, "customer_id", "inner")
        .join(with_clicks, "customer_id", "inner")
        .join(quarantined, "customer_id", "left")
        .orderBy(F.col("in_quarantine").desc_nulls_last(), "customer_id")
        .first()
    )
    assert candidates is not None, "the reference lake should have a customer with orders and clicks"
    customer_id = candidates["customer_id"]
    versions = silver("customers").where(F.col("customer_id") == customer_id)
    bronze_versions = read_table(spark, table_path(lake, "bronze", "customers")).where(
        F.trim("customer_id") == customer_id
    )
    devices = silver("clicks").where(F.col("customer_id") == customer_id)
    device_ids = _distinct(devices, "anonymous_id")
    device_events = silver("clicks").where(F.col("anonymous_id").isin(*device_ids))
    return Customer(
        customer_id=customer_id,
        emails=tuple(sorted({*_distinct(versions, "email"), *_distinct(bronze_versions, "email")})),
        phones=_distinct(versions, "phone"),
        email_hashes=_distinct(versions, "email_hash"),
        devices=device_ids,
        sessions=_distinct(device_events.where(~F.col("is_session_derived")), "session_id"),
        names=tuple(sorted({(r["first_name"], r["last_name"]) for r in versions.collect()})),
        postal_codes=_distinct(versions, "postal_code"),
        quarantined=bool(candidates["in_quarantine"]),
    )


def copy_lake(reference: PipelineConfig, target: Path) -> PipelineConfig:
    shutil.copytree(reference.paths.lake, target / "lake")
    return reference.with_paths(lake=str(target / "lake"))


def gold(spark: SparkSession, config: PipelineConfig, table: str) -> DataFrame:
    return read_table(spark, table_path(config.paths.lake, "gold", table))


def revenue(spark: SparkSession, config: PipelineConfig) -> tuple[Decimal, Decimal, int]:
    """Revenue of fact_orders and fact_order_lines, and the number of orders."""
    orders = gold(spark, config, "fact_orders")
    lines = gold(spark, config, "fact_order_lines")
    return (
        orders.where("is_revenue").agg(F.sum("net_amount_base")).first()[0],
        lines.where("is_revenue").agg(F.sum("net_amount_base")).first()[0],
        orders.count(),
    )


# --- the shared erased copy -----------------------------------------------------------------


@dataclass(frozen=True)
class Erased:
    reference: PipelineConfig
    config: PipelineConfig
    customer: Customer
    stdout: str
    versions_before: dict[str, int]
    logs_before: dict[Path, int]


@pytest.fixture(scope="module")
def erased(spark, reference_lake, tmp_path_factory) -> Erased:
    """A copy of the reference lake, erased once through the real command line."""
    config = copy_lake(reference_lake, tmp_path_factory.mktemp("erased"))
    customer = choose_customer(spark, config.paths.lake)
    versions = {
        f"{layer}.{table}": table_version(spark, table_path(config.paths.lake, layer, table))
        for layer, table in (("silver", "customers"), ("bronze", "clicks"), ("gold", "fact_orders"))
    }
    logs_before = log_versions(Path(config.paths.lake))
    completed = run_cli(
        "forget-customer",
        "--customer-id",
        customer.customer_id,
        "--lake",
        config.paths.lake,
        "--landing",
        config.paths.landing,
    )
    return Erased(reference_lake, config, customer, completed.stdout, versions, logs_before)


def test_the_customer_was_worth_erasing(erased):
    customer = erased.customer
    assert customer.emails and customer.phones and customer.email_hashes and customer.devices
    assert "rows deleted:" in erased.stdout and "silver.customers" in erased.stdout
    assert "vacuumed with 0 h retention" in erased.stdout
    assert "time travel" in erased.stdout
    assert customer.customer_id not in erased.stdout  # the report names a key, never the id


def test_no_data_file_of_any_table_holds_the_customer(erased):
    assert_nothing_left(Path(erased.config.paths.lake), erased.customer)


def test_no_row_anywhere_has_the_customers_name_or_postal_code(spark, erased):
    lake = Path(erased.config.paths.lake)
    hits = []
    for path in data_files(lake):
        table = pq.ParquetFile(path).read()
        columns = set(table.column_names)
        if {"first_name", "last_name"} <= columns:
            for row in table.select(["first_name", "last_name"]).to_pylist():
                if (row["first_name"], row["last_name"]) in erased.customer.names:
                    hits.append(str(path))
        if "postal_code" in columns and {"first_name"} <= columns:
            for row in table.select(["first_name", "postal_code"]).to_pylist():
                pairs = {
                    (first, code)
                    for first, _ in erased.customer.names
                    for code in erased.customer.postal_codes
                }
                if (row["first_name"], row["postal_code"]) in pairs:
                    hits.append(str(path))
    assert hits == []


def test_the_delta_log_names_the_customer_only_in_statistics_of_older_commits(erased):
    """The erasure's own commits hold no identifier; older commits may, as min/max statistics
    (a documented limit: Delta's log cleanup removes them after delta.logRetentionDuration)."""
    lake = Path(erased.config.paths.lake)
    needles = erased.customer.needles()
    assert files_holding(log_text(lake, stats=False), needles) == {}
    in_stats = files_holding(log_text(lake), needles)
    for paths in in_stats.values():
        for path in map(Path, paths):
            log = next(parent for parent in path.parents if parent.name == "_delta_log")
            version = path.name.split(".")[0]
            assert version.isdigit(), f"{path} is not a commit, checksum or checkpoint file"
            assert int(version) <= erased.logs_before[log], f"{path} was written by the erasure"
    assert ("_delta_log (metadata, not data)" in erased.stdout) == bool(in_stats)


def test_older_versions_are_gone(spark, erased):
    path = table_path(erased.config.paths.lake, "silver", "customers")
    with pytest.raises(Exception, match=r"(?i)not found|does not exist|FileNotFound|vacuum"):
        read_table(spark, path, version=erased.versions_before["silver.customers"]).collect()


def test_other_customers_are_untouched(spark, erased):
    customer = erased.customer
    by_id = F.col("customer_id") == customer.customer_id
    by_raw_id = F.trim("customer_id") == customer.customer_id
    on_device = F.col("anonymous_id").isin(*customer.devices)
    deleted = (
        ("bronze", "customers", by_raw_id),
        ("silver", "customers", by_id),
        ("gold", "dim_customer", by_id),
    )
    scrubbed = (
        ("bronze", "orders", by_raw_id),
        ("silver", "orders", by_id),
        ("gold", "fact_orders", by_id),
        ("silver", "clicks", on_device),
        ("gold", "fact_sessions", on_device),
    )
    for (layer, table, theirs), rows_kept in [*((t, False) for t in deleted), *((t, True) for t in scrubbed)]:
        before = read_table(spark, table_path(erased.reference.paths.lake, layer, table))
        after = read_table(spark, table_path(erased.config.paths.lake, layer, table))
        others = before.where(~F.coalesce(theirs, F.lit(False)))
        theirs_count = before.count() - others.count()
        assert theirs_count > 0, f"{layer}.{table}: the customer should have rows"
        assert others.exceptAll(after).isEmpty(), f"{layer}.{table}: rows of others changed"
        assert after.exceptAll(others).count() == (theirs_count if rows_kept else 0), f"{layer}.{table}"


def test_orders_stay_anonymous_and_revenue_is_unchanged(spark, erased):
    customer = erased.customer
    before_orders = read_table(spark, table_path(erased.reference.paths.lake, "silver", "orders"))
    theirs = [
        r["order_id"] for r in before_orders.where(F.col("customer_id") == customer.customer_id).collect()
    ]
    facts = gold(spark, erased.config, "fact_orders").where(F.col("order_id").isin(*theirs)).collect()
    assert len(facts) == len(theirs) > 0
    assert {(r["customer_id"], r["customer_sk"], r["ship_city"]) for r in facts} == {(None, -1, None)}
    assert revenue(spark, erased.config) == revenue(spark, erased.reference)
    sessions = gold(spark, erased.config, "fact_sessions")
    assert sessions.where(F.col("anonymous_id").startswith("erased-")).count() > 0
    before_sessions = gold(spark, erased.reference, "fact_sessions")
    assert sessions.count() == before_sessions.count()
    assert sessions.agg(F.sum("events")).first()[0] == before_sessions.agg(F.sum("events")).first()[0]


def test_segments_no_longer_list_the_customer(spark, erased):
    before = gold(spark, erased.reference, "customer_segments")
    after = gold(spark, erased.config, "customer_segments")
    assert before.where(F.col("customer_id") == erased.customer.customer_id).count() > 0
    assert after.where(F.col("customer_id") == erased.customer.customer_id).isEmpty()
    latest = before.agg(F.max("as_of_date")).first()[0]
    assert (
        after.where(F.col("as_of_date") == latest).count()
        == before.where(F.col("as_of_date") == latest).count() - 1
    )


def test_recommendations_no_longer_list_the_customer(spark, erased):
    before = gold(spark, erased.reference, "recommendations")
    after = gold(spark, erased.config, "recommendations")
    theirs = F.col("customer_id") == erased.customer.customer_id
    assert before.where(theirs).count() > 0
    assert after.where(theirs).isEmpty()
    assert after.count() == before.count() - before.where(theirs).count()  # the others' lists stay


def test_the_audit_row_names_a_key_not_the_customer(spark, erased):
    rows = read_table(spark, table_path(erased.config.paths.lake, "ops", ERASURES_TABLE)).collect()
    done = [r for r in rows if r["status"] == "done"]
    assert len(done) == 1
    assert done[0]["customer_key"] == customer_key(erased.config, erased.customer.customer_id)
    assert "silver.customers" in done[0]["tables"] and done[0]["vacuumed_at"] is not None
    assert erased.customer.customer_id not in json.dumps([r.asDict() for r in rows], default=str)


def test_erasing_again_finds_nothing_and_changes_nothing(spark, erased):
    lake = Path(erased.config.paths.lake)
    before = log_versions(lake)
    again = forget_customer(spark, erased.config, erased.customer.customer_id, progress=lambda _m: None)
    assert not again.found and again.status == "not_found"
    assert "customer not found in any table of the lake; nothing changed" in again.summary()
    after = log_versions(lake)
    erasures = lake / "ops" / ERASURES_TABLE / "_delta_log"
    assert after[erasures] == before[erasures] + 1  # the audit row
    assert {log: v for log, v in after.items() if log != erasures} == {
        log: v for log, v in before.items() if log != erasures
    }
    with pytest.raises(ValueError, match="must not be blank"):
        forget_customer(spark, erased.config, "  ")


def test_a_following_run_keeps_the_customer_erased(spark, erased):
    config = erased.config
    lake = config.paths.lake
    tables = [f"{layer}.{t}" for layer in ("bronze", "silver", "gold") for t in _tables(Path(lake) / layer)]
    counts = {t: read_table(spark, table_path(lake, *t.split("."))).count() for t in tables}
    run_jobs(spark, config, select_jobs("all"), [None])  # what `ecom-pipeline run --layer all` runs
    assert {t: read_table(spark, table_path(lake, *t.split("."))).count() for t in tables} == counts
    assert_nothing_left(Path(lake), erased.customer)
    assert revenue(spark, config) == revenue(spark, erased.reference)


def _tables(layer: Path) -> list[str]:
    return sorted(p.name for p in layer.iterdir() if (p / "_delta_log").is_dir())


# --- --keep-history ----------------------------------------------------------------------------


def customers_only_lake(spark: SparkSession, reference: PipelineConfig, target: Path) -> PipelineConfig:
    """A lake of the reference's customer deliveries alone: bronze and silver customers.

    Enough for --keep-history (the scrub and vacuum work per table, the same for 2 tables as for
    30), at a tenth of the cost of erasing a copy of the whole reference lake a second time.
    """
    shutil.copytree(Path(reference.paths.landing) / "customers", target / "landing" / "customers")
    config = reference.with_paths(landing=str(target / "landing"), lake=str(target / "lake"))
    ctx = JobContext(spark=spark, config=config, run_id=new_run_id())
    for layer in ("bronze", "silver"):
        run_job(select_jobs(layer, "customers")[0], ctx)
    return config


def test_keep_history_defers_the_vacuum_to_maintain(spark, erased, tmp_path):
    config = customers_only_lake(spark, erased.reference, tmp_path)
    customer = erased.customer
    path = table_path(config.paths.lake, "silver", "customers")
    version_before = table_version(spark, path)

    report = forget_customer(spark, config, customer.customer_id, keep_history=True, progress=lambda _m: None)

    assert report.status == "pending_vacuum" and not report.vacuumed
    assert read_table(spark, path).where(F.col("customer_id") == customer.customer_id).isEmpty()
    older = read_table(spark, path, version=version_before)
    assert older.where(F.col("customer_id") == customer.customer_id).count() > 0  # time travel still works
    erasures = read_table(spark, table_path(config.paths.lake, "ops", ERASURES_TABLE)).collect()
    assert [(r["status"], r["vacuumed_at"]) for r in erasures] == [("pending_vacuum", None)]

    outcome = maintain(spark, config.paths.lake, config.maintenance, progress=lambda _m: None)

    assert outcome[f"erasure {report.erasure_id}"].startswith("done")
    erasures = read_table(spark, table_path(config.paths.lake, "ops", ERASURES_TABLE)).collect()
    assert [r["status"] for r in erasures] == ["done"]
    assert erasures[0]["vacuumed_at"] > dt.datetime(2000, 1, 1)
    assert_nothing_left(Path(config.paths.lake), customer, min_files=2)
