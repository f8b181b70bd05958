"""Privacy and paths: no personal data or key material where it must not be, no write outside the lake.

The session's command-line run over the hostile deliveries (:mod:`tests.hostile`:
``ecom-pipeline run --layer all``, then ``status``, over generated deliveries plus one mutated
copy per kind of damage and a customers file with a malformed row, with a distinctive
``ECOM_HMAC_KEY``, in an empty working directory and with ``HOME`` pointing at an empty
folder; ``test_hostile_input.py`` proves that it did not crash) is scanned. Then:

- every gold table (each value read through Delta, *and* every Parquet file under ``gold/``,
  older versions included, *and* the Delta logs with their column statistics), every ops
  table (run records with their errors and tracebacks, the file log, metrics), and
  everything the commands printed (progress, Spark's log) hold no e-mail, phone number,
  first or last name delivered in the customers files, and neither the HMAC key nor its
  HMAC pads (what a query plan would show of it);
- a job that fails on customer rows records an error and a traceback without them;
- the configuration has no place for a secret: a key in YAML, in an ``ECOM__`` variable or
  on the command line is refused, without echoing it, and the effective config, its repr
  and its fingerprint never hold the key;
- no configuration makes a job write outside the lake: ``table_path`` refuses every name that
  would leave it (property test), the run created nothing outside the lake (the working
  directory and ``HOME`` stay empty, the landing zone unchanged, the lake holds only
  ``<layer>/<table>`` folders), and Spark's warehouse is not in the working directory.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import posixpath
import re
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs.framework import JobFailedError, run_job
from jobs.graph import select_jobs
from pipeline_lib.bronze.schemas import LANDING_SOURCES
from pipeline_lib.config import ConfigError, load_config
from pipeline_lib.io.delta import LAYERS, read_table, table_path
from pipeline_lib.ops.context import JobContext, new_run_id
from pipeline_lib.ops.schemas import RUNS_TABLE
from tests.hostile import HMAC_KEY, snapshot
from tests.support import REPO

GOLD_TABLES = (
    "dim_date",
    "dim_customer",
    "dim_product",
    "fact_order_lines",
    "fact_orders",
    "fact_sessions",
    "customer_segments",
    "product_popularity",
    "product_affinity",
    "recommendations",
    "recommendation_metrics",
    "campaign_audiences",
    "campaign_results",
    "fact_inventory_daily",
    "stock_signals",
)
PII_FIELDS = ("email", "first_name", "last_name", "phone")
MIN_PII_LENGTH = 4  # shorter values ("Li", "Ng") are too common as substrings to mean a leak


# --- what must not appear ------------------------------------------------------------------


def hmac_pads(key: bytes) -> list[str]:
    """Hex of the two padded keys that enter a Spark plan (pipeline_lib.privacy.pii): key material."""
    block = hashlib.sha256(key).digest() if len(key) > 64 else key
    block = block.ljust(64, b"\x00")
    return [bytes(b ^ pad for b in block).hex() for pad in (0x36, 0x5C)]


def delivered_personal_data(landing: Path) -> dict[str, set[str]]:
    """Every e-mail, phone, first and last name in the generated customers files (>= 4 characters)."""
    found: dict[str, set[str]] = {name: set() for name in PII_FIELDS}
    for path in sorted(landing.glob("customers/ingest_date=*/customers_*.csv")):
        for row in csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))):
            for name in PII_FIELDS:
                value = (row.get(name) or "").strip()
                if len(value) >= MIN_PII_LENGTH:
                    found[name].add(value)
    return found


def public_words(landing: Path) -> set[str]:
    """Words of the deliveries that are not personal (catalogue, clicks, cities, countries).

    A first name that is also a brand or a city ("Florence", "Paris") found in gold is no leak.
    """
    text = []
    for path in landing.glob("catalogue/ingest_date=*/catalogue_*"):
        text.append(path.read_text(encoding="utf-8", errors="replace"))
    for path in landing.glob("customers/ingest_date=*/customers_*.csv"):
        for row in csv.DictReader(io.StringIO(path.read_text(encoding="utf-8", errors="replace"))):
            text.append(" ".join(row.get(c) or "" for c in ("city", "country")))
    for path in landing.glob("orders/ingest_date=*/orders_*.csv"):
        for row in csv.DictReader(io.StringIO(path.read_text(encoding="utf-8", errors="replace"))):
            text.append(row.get("ship_city") or "")
    return set(re.findall(r"\w+", " ".join(text)))


class Needles:
    """Personal data and key material to look for in text."""

    def __init__(self, personal: dict[str, set[str]], allowed_words: set[str], key: str) -> None:
        exact = {v for name in ("email", "phone") for v in personal[name]}
        names = {v for name in ("first_name", "last_name") for v in personal[name] if v not in allowed_words}
        self.secrets = [key, *hmac_pads(key.encode())]
        self.exact = sorted(exact)
        self.names = re.compile(
            r"\b(" + "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)) + r")\b"
        )
        self.count = len(exact) + len(names)

    def leaks(self, text: str) -> list[str]:
        """The needles found in ``text`` (empty when clean)."""
        lowered = text.lower()
        found = [s for s in self.secrets if s.lower() in lowered]
        found += [v for v in self.exact if v in text]
        found += sorted(set(self.names.findall(text)))
        return found


# --- the command-line run --------------------------------------------------------------------


@pytest.fixture(scope="module")
def needles(hostile_build) -> Needles:
    personal = delivered_personal_data(hostile_build.landing)
    assert all(len(values) >= 20 for values in personal.values()), {k: len(v) for k, v in personal.items()}
    return Needles(personal, public_words(hostile_build.landing), HMAC_KEY)


def _row_texts(spark: SparkSession, path: str) -> Iterator[str]:
    frame = read_table(spark, path)
    for row in frame.select(F.to_json(F.struct(*frame.columns)).alias("j")).toLocalIterator():
        yield row["j"]


def _parquet_texts(folder: Path) -> Iterator[str]:
    for path in sorted(folder.rglob("*.parquet")):
        table = pq.ParquetFile(path).read()  # the file alone: no partition columns from its path
        for column in table.columns:
            for value in column.to_pylist():
                if value is not None:
                    yield (
                        value
                        if isinstance(value, str)
                        else json.dumps(value, default=str, ensure_ascii=False)
                    )


def _log_texts(folder: Path) -> Iterator[str]:
    for path in sorted(folder.rglob("_delta_log/*.json")):
        yield path.read_text(encoding="utf-8")


def _assert_clean(needles: Needles, texts: Iterable[str], where: str) -> int:
    scanned = 0
    for text in texts:
        scanned += 1
        leaks = needles.leaks(text)
        assert not leaks, f"{where}: {leaks[:5]} in {text[:300]!r}"
    return scanned


@pytest.mark.slow
def test_no_personal_data_or_key_in_any_gold_table_file_or_log(spark, hostile_build, needles: Needles):
    gold = hostile_build.lake / "gold"
    assert sorted(p.name for p in gold.iterdir()) == sorted(GOLD_TABLES)
    for table in GOLD_TABLES:
        assert _assert_clean(needles, _row_texts(spark, str(gold / table)), f"gold.{table}") > 0, table
    assert _assert_clean(needles, _parquet_texts(gold), "gold Parquet files") > 0
    assert _assert_clean(needles, _log_texts(gold), "gold Delta logs (with column statistics)") > 0


@pytest.mark.slow
def test_personal_data_reached_silver_so_the_scan_can_see_it(spark, hostile_build, needles: Needles):
    # The scan is only worth something if it finds personal data where it is expected.
    customers = read_table(spark, str(hostile_build.lake / "silver" / "customers"))
    texts = [
        r["j"]
        for r in customers.select(
            F.to_json(F.struct("email", "first_name", "last_name")).alias("j")
        ).collect()
    ]
    assert sum(bool(needles.leaks(t)) for t in texts) >= len(texts) // 2


@pytest.mark.slow
def test_no_personal_data_or_key_in_run_records_ops_tables_or_command_output(
    spark, hostile_build, needles: Needles
):
    ops = hostile_build.lake / "ops"
    runs = read_table(spark, str(ops / RUNS_TABLE))
    assert runs.where(F.col("status") != "succeeded").count() == 0
    assert runs.count() >= 20
    for table in sorted(p.name for p in ops.iterdir() if (p / "_delta_log").is_dir()):
        _assert_clean(needles, _row_texts(spark, str(ops / table)), f"ops.{table}")
    _assert_clean(needles, _parquet_texts(ops), "ops Parquet files")
    _assert_clean(needles, _log_texts(ops), "ops Delta logs")
    output = hostile_build.output
    assert "silver.customers: done" in output and "gold freshness" in output  # the output was captured
    _assert_clean(needles, output.splitlines(), "command output (progress and Spark's log)")


@pytest.mark.slow
def test_a_job_failing_on_customer_rows_records_no_personal_data(spark, base_config, tmp_path, capfd):
    landing = tmp_path / "landing"
    folder = landing / "customers" / "ingest_date=2026-03-01"
    folder.mkdir(parents=True)
    header = ",".join(LANDING_SOURCES["customers"].fields)
    rows = [
        'C1,"wilhelmina.quarz@example.org,Wilhelmina,Quarzbrunner,+49 170 5550123,DE,Köln,50667,,,true',
        'C2,"ottilie.zaunkoenig@example.net,Ottilie,Zaunkönig,+49 171 5550456,DE,Bonn,53111,,,false',
        "C3,valid.person@example.com,Valid,Person,+49 172 5550789,DE,Bonn,53111,,2026-03-01T10:00:00Z,true",
    ]
    (folder / "customers.csv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    config = base_config.with_paths(landing=str(landing), lake=str(tmp_path / "lake"))
    # Three rows are under the default threshold_min_rows: judge them, so that the job fails.
    config = dataclasses.replace(config, quality=dataclasses.replace(config.quality, threshold_min_rows=1))
    ctx = JobContext(spark=spark, config=config, run_id=new_run_id())
    run_job(select_jobs("bronze", "customers")[0], ctx)

    with warnings.catch_warnings(), pytest.raises(JobFailedError, match="customers_parse_error") as failure:
        warnings.simplefilter("ignore")
        run_job(select_jobs("silver", "customers")[0], ctx)

    record = (
        read_table(spark, table_path(config.paths.lake, "ops", RUNS_TABLE))
        .where(F.col("status") == "failed")
        .first()
    )
    personal = {
        "email": {"wilhelmina.quarz@example.org", "ottilie.zaunkoenig@example.net"},
        "first_name": {"Wilhelmina", "Ottilie"},
        "last_name": {"Quarzbrunner", "Zaunkönig"},
        "phone": {"+49 170 5550123", "+49 171 5550456"},
    }
    needles = Needles(personal, set(), HMAC_KEY)
    details = json.loads(record["details"])
    assert "Traceback" in details["traceback"]
    for where, text in (
        ("error", record["error"]),
        ("traceback", details["traceback"]),
        ("raised message", str(failure.value)),
        ("printed output", "".join(capfd.readouterr())),
    ):
        assert not needles.leaks(text), f"{where}: {needles.leaks(text)}"


@pytest.mark.slow
def test_a_customers_file_without_header_leaks_no_personal_data_into_the_file_log(
    spark, base_config, tmp_path, capfd
):
    # Without a header, the CSV reader takes the first customer's values for column names.
    folder = tmp_path / "landing" / "customers" / "ingest_date=2026-03-01"
    folder.mkdir(parents=True)
    first = "C9,greta.vogelsang@example.org,Greta,Vogelsangova,+49 176 5550999,DE,Köln,50667,,,true"
    second = "C8,hugo.weidenfeller@example.org,Hugo,Weidenfeller,+49 176 5550888,DE,Bonn,53111,,,false"
    (folder / "customers.csv").write_text(f"{first}\n{second}\n", encoding="utf-8")
    config = base_config.with_paths(landing=str(tmp_path / "landing"), lake=str(tmp_path / "lake"))

    run_job(
        select_jobs("bronze", "customers")[0], JobContext(spark=spark, config=config, run_id=new_run_id())
    )

    needles = Needles(
        {
            "email": {"greta.vogelsang@example.org", "hugo.weidenfeller@example.org"},
            "first_name": {"Greta"},
            "last_name": {"Vogelsangova", "Weidenfeller"},
            "phone": {"+49 176 5550999", "+49 176 5550888"},
        },
        set(),
        HMAC_KEY,
    )
    log = read_table(spark, table_path(config.paths.lake, "ops", "ingested_files"))
    (entry,) = log.collect()
    assert entry["status"] == "ingested" and entry["problems"], entry  # the file is reported...
    _assert_clean(
        needles, _row_texts(spark, table_path(config.paths.lake, "ops", "ingested_files")), "file log"
    )
    _assert_clean(needles, _row_texts(spark, table_path(config.paths.lake, "ops", RUNS_TABLE)), "run record")
    _assert_clean(needles, "".join(capfd.readouterr()).splitlines(), "printed output")  # ...without its data


# --- secrets come from the environment only ----------------------------------------------------


def _conf_dir(tmp_path: Path, extra_yaml: str = "") -> Path:
    folder = tmp_path / "conf"
    folder.mkdir(exist_ok=True)
    for name in ("base.yaml", "quality.yaml", "local.yaml", "cluster.yaml"):
        (folder / name).write_text((REPO / "conf" / name).read_text(encoding="utf-8"), encoding="utf-8")
    if extra_yaml:
        (folder / "local.yaml").write_text(
            (REPO / "conf" / "local.yaml").read_text(encoding="utf-8") + extra_yaml, encoding="utf-8"
        )
    return folder


def test_a_key_in_a_config_file_is_refused_without_echoing_it(tmp_path):
    folder = _conf_dir(tmp_path, f"\nprivacy:\n  hmac_key: {HMAC_KEY}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'privacy\.hmac_key' in .*local\.yaml") as refused:
        load_config("local", conf_dir=folder, environ={})
    assert HMAC_KEY not in str(refused.value)


@pytest.mark.parametrize(
    ("environ", "overrides", "origin"),
    [
        ({"ECOM__PRIVACY__HMAC_KEY": HMAC_KEY}, {}, "environment"),
        ({}, {"privacy.hmac_key": HMAC_KEY}, "command line"),
        ({"ECOM__PRIVACY__SECRET": HMAC_KEY}, {}, "environment"),
    ],
)
def test_a_key_in_a_variable_or_flag_for_the_config_is_refused_without_echoing_it(
    tmp_path, environ, overrides, origin
):
    with pytest.raises(ConfigError, match=rf"unknown key 'privacy\.\w+' in {origin}") as refused:
        load_config("local", conf_dir=_conf_dir(tmp_path), environ=environ, overrides=overrides)
    assert HMAC_KEY not in str(refused.value)


def _fields(instance: object, prefix: str = "") -> Iterator[str]:
    for f in dataclasses.fields(instance):  # type: ignore[arg-type]
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value):
            yield from _fields(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}"


def test_the_effective_config_holds_no_secret(tmp_path):
    config = load_config("local", conf_dir=_conf_dir(tmp_path), environ={"ECOM_HMAC_KEY": HMAC_KEY})
    dumps = (repr(config), json.dumps(dataclasses.asdict(config), default=str), config.fingerprint())
    assert all(HMAC_KEY not in dump for dump in dumps)
    secret_like = [f for f in _fields(config) if re.search(r"key|secret|password|token|credential", f)]
    # The names of the variables holding secrets, and a switch; never a value.
    assert secret_like == [
        "privacy.hmac_key_env",
        "privacy.allow_insecure_default_key",
        "sources.clicks.password_env",
    ]
    assert (config.privacy.hmac_key_env, config.privacy.allow_insecure_default_key) == ("ECOM_HMAC_KEY", True)
    other = load_config("local", conf_dir=_conf_dir(tmp_path), environ={"ECOM_HMAC_KEY": "another key"})
    assert other.fingerprint() == config.fingerprint()  # the key is not part of the config at all


# --- no configuration makes a job write outside the lake -------------------------------------

# Pieces of hostile names: separators, parent references, globs, NUL, look-alike slashes.
NAME_PIECES = [*"abcz09_-./\\~ :*?[]{}$%\x00\n", "..", "../", "é", "Ä", "\uff0f", "\u2024", "%2e%2e%2f"]
HOSTILE_NAMES = st.lists(st.sampled_from(NAME_PIECES), max_size=8).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(lake="/data/lake", layer="gold", table="orders\n")  # `$` in a regex also matches before "\n"
@example(lake="/data/lake", layer="gold", table="../../etc")
@given(
    lake=st.sampled_from(["/data/lake", "/data/lake/", "s3a://shop-lake", "file:/tmp/lake", "relative/lake"]),
    layer=st.one_of(st.sampled_from(LAYERS), HOSTILE_NAMES),
    table=st.one_of(st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True), HOSTILE_NAMES),
)
def test_table_path_never_leaves_the_lake(lake: str, layer: str, table: str):
    try:
        path = table_path(lake, layer, table)
    except ValueError as refused:
        assert "layer" in str(refused) or "table name" in str(refused)
        return
    root = lake.rstrip("/")
    assert path == f"{root}/{layer}/{table}"
    assert layer in LAYERS and re.fullmatch(r"[a-z][a-z0-9_]*", table)
    assert posixpath.normpath(path).startswith(posixpath.normpath(root) + "/")
    assert posixpath.normpath(path).count("/") == posixpath.normpath(root).count("/") + 2


@pytest.mark.slow
def test_the_run_wrote_nothing_outside_the_lake(hostile_build):
    assert list(hostile_build.cwd.iterdir()) == [], "the working directory stays empty (no spark-warehouse)"
    assert list(hostile_build.home.iterdir()) == [], "HOME stays empty"
    assert snapshot(hostile_build.landing) == hostile_build.landing_before, "the landing zone is read-only"
    # conf: the test's copy of conf/ (tests/hostile.py), which the run only reads
    assert sorted(p.name for p in hostile_build.root.iterdir()) == ["conf", "cwd", "home", "lake", "landing"]
    lake: Path = hostile_build.lake
    assert {p.name for p in lake.iterdir()} <= set(LAYERS)
    for layer in lake.iterdir():
        for entry in layer.iterdir():
            assert entry.is_dir() and re.fullmatch(r"[a-z_][a-z0-9_]*", entry.name), entry


def test_spark_warehouse_is_not_in_the_working_directory(spark):
    warehouse = spark.conf.get("spark.sql.warehouse.dir").removeprefix("file:")
    cwd = os.getcwd()
    assert not (warehouse == cwd or warehouse.startswith(cwd.rstrip("/") + "/")), warehouse
