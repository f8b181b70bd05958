"""Same input, same answer: hand-made deliveries shaped like real exports, through every layer.

One small shop, delivered on two days, with what real exports do that the generator does not:

- ten orders written twice in the same second with different statuses (a tie);
- ERP placeholders (``9999-12-31``, ``1900-01-01``) and a tracker clock in 2099;
- RFC 4180 CSV: quoted line breaks, doubled quotes, a header in other case with spaces,
  and a quote that never closes;
- order lines delivered a day before their order;
- numbers that do not parse (``2.5``, ``NaN``, ``12,50``, ``Infinity``, five decimals), money
  with three decimals, a nested object inside ``utm``.

Lake A is built day by day (``--as-of``), the second day with Delta's auto-compaction on (it
commits after the jobs' own commits); lake B is built in one run from a copy of the same
deliveries with every file renamed, its rows reversed and split in two, and another shuffle
partition count. Every test reads these two lakes.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import warnings
from decimal import Decimal
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.graph import select_jobs
from jobs.runner import run_jobs
from pipeline_lib.config import PipelineConfig
from pipeline_lib.io.delta import read_table, table_path
from pipeline_lib.ops.schemas import INGEST_LOG_TABLE, RUNS_TABLE
from tests.lake_compare import compare_lakes

pytestmark = pytest.mark.slow

D1, D2 = dt.date(2026, 3, 2), dt.date(2026, 3, 3)
ORDERS_HEADER = (
    "order_id,customer_id,order_status,order_ts,updated_at,currency,channel,ship_country,ship_city,"
    "payment_type,shipping_fee"
)
ITEMS_HEADER = "order_id,line_no,product_id,quantity,unit_price,discount_amount"
# Other case and spaces around the names, as a hand-edited export has them.
CUSTOMERS_HEADER = (
    "Customer_ID ,EMAIL,first_name,last_name,phone,Country,city,postal_code,signup_ts,updated_at,"
    "marketing_opt_in"
)
TIE_ORDERS = [f"t{n:02d}" for n in range(1, 11)]
TIE_TIME = "2026-03-02T10:00:00Z"


def _order(oid: str, status: str, *, ts: str = "2026-03-02T09:00:00Z", updated: str = TIE_TIME,
           city: str = "Berlin", customer: str = "c1") -> str:  # fmt: skip
    return f"{oid},{customer},{status},{ts},{updated},EUR,web,DE,{city},card,4.99"


def _line(oid: str, no: str, qty: str = "1", price: str = "10.00", product: str = "p1") -> str:
    return f"{oid},{no},{product},{qty},{price},0"


def _click(event_id: str, ts: str, **extra: object) -> str:
    event = {
        "event_id": event_id,
        "event_ts": ts,
        "event_type": "product_view",
        "anonymous_id": "a1",
        "customer_id": "c1",
        "session_id": "s1",
        "product_id": "p1",
        **extra,
    }
    return json.dumps(event)


def _product(pid: str) -> str:
    return json.dumps(
        {
            "product_id": pid,
            "sku": f"SKU-{pid}",
            "name": f"Phone {pid}",
            "brand": "Acme",
            "category_path": ["Electronics", "Phones", "Smartphones"],
            "price": "199.90",
            "currency": "EUR",
            "is_active": True,
            "updated_at": "2026-03-01T00:00:00Z",
            "attributes": {"colour": "black"},
        }
    )


def _deliveries() -> dict[tuple[str, dt.date, str], str]:
    """``(source, day, file name) -> content`` of the hand-made shop."""
    ties = []
    for n, oid in enumerate(TIE_ORDERS):  # the two states in both orders within the file
        states = ("paid", "cancelled") if n % 2 else ("cancelled", "paid")
        ties += [_order(oid, states[0]), _order(oid, states[1])]
    orders_d1 = [
        *ties,
        _order("z1", "paid", ts="9999-12-31T00:00:00Z"),  # an ERP's "no date" as the order date
        _order("f1", "paid", updated="9999-12-31T23:59:59Z"),  # ... and as the change time
        _order("m1", "paid", city='"Unter den Linden 1\nHinterhaus"'),  # a multi-line address
        _order("m2", "paid", city='"Café ""Zur Post"", Mitte"'),  # doubled quotes and a comma
    ]
    items_d1 = [
        *[_line(oid, "1") for oid in TIE_ORDERS],
        _line("m1", "1", qty="2.0"),  # a whole number written as a decimal: 2
        _line("m1", "2", qty="2.5"),
        _line("m1", "3", qty="NaN"),
        _line("m2", "1", price='"12,50"'),  # a decimal comma, quoted as a real export quotes it
        _line("m2", "2", price="Infinity"),
        _line("m2", "3", price="12.505"),  # three decimals: kept, never rounded
        _line("m2", "4", price="1.23456"),  # more decimals than money keeps: does not parse
        _line("f1", "1"),
        _line("w1", "1"),  # order w1 arrives a day later
        _line("w1", "2", product="p2"),
    ]
    customers_d1 = [
        'c1,anna@example.com,Anna,Muster,+49 1,de,"Berlin\nMitte",10115,2025-01-01T00:00:00Z,'
        "2026-03-01T00:00:00Z,true",
        "c2,bob@example.com,Bob,Beispiel,+49 2,de,Hamburg,20095,1900-01-01T00:00:00Z,"
        "2026-03-01T00:00:00Z,false",
        "c3,cleo@example.com,Cleo,Test,+49 3,de,Bonn,53111,2025-01-01T00:00:00Z,9999-12-31T00:00:00Z,true",
    ]
    clicks_d1 = [
        _click("e1", "2026-03-02T08:00:00Z"),
        _click("e2", "2026-03-02T08:01:00Z", event_type="add_to_cart", quantity=1),
        _click("e8", "2026-03-02T08:02:00Z", utm={"source": {"id": 7}, "medium": "cpc"}),
        _click("e9", "2099-01-01T00:00:00Z"),  # a device clock far ahead
    ]
    orders_d2 = [
        _order("f1", "cancelled", updated="2026-03-03T09:00:00Z"),  # the real change of f1
        _order("w1", "paid", ts="2026-03-02T18:00:00Z", updated="2026-03-03T08:00:00Z"),
    ]
    return {
        ("fx_rates", D1, "rates.csv"): "rate_date,currency,rate_to_base\n2026-03-01,USD,0.9\n",
        ("catalogue", D1, "catalogue.jsonl"): "\n".join([_product("p1"), _product("p2")]) + "\n",
        ("customers", D1, "crm.csv"): "\n".join([CUSTOMERS_HEADER, *customers_d1]) + "\n",
        ("orders", D1, "orders.csv"): "\n".join([ORDERS_HEADER, *orders_d1]) + "\n",
        ("order_items", D1, "lines.csv"): "\n".join([ITEMS_HEADER, *items_d1]) + "\n",
        ("clicks", D1, "events.jsonl"): "\n".join(clicks_d1) + "\n",
        ("catalogue", D2, "catalogue.jsonl"): "\n".join([_product("p1"), _product("p2")]) + "\n",
        ("orders", D2, "orders.csv"): "\n".join([ORDERS_HEADER, *orders_d2]) + "\n",
        ("order_items", D2, "lines.csv"): "\n".join([ITEMS_HEADER, _line("f1", "1")]) + "\n",
        # A quote that never closes: the row after it still reads as its own row.
        ("orders", D2, "broken.csv"): "\n".join(
            [
                ORDERS_HEADER,
                'u1,c1,paid,"2026-03-03T09:00:00Z',
                _order("u2", "paid", updated="2026-03-03T09:00:00Z"),
            ]
        )
        + "\n",
        ("clicks", D2, "events.jsonl"): _click("e3", "2026-03-03T08:00:00Z") + "\n",
    }


def _write(landing: Path, source: str, day: dt.date, name: str, content: str) -> None:
    folder = landing / source / f"ingest_date={day}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(content, encoding="utf-8")


def _reordered(content: str, name: str) -> list[tuple[str, str]]:
    """The same records in other files: rows reversed, a CSV split in two with its header."""
    if name.endswith(".jsonl"):
        lines = content.strip("\n").split("\n")
        return [(f"zz-{name}", "\n".join(reversed(lines)) + "\n")]
    header, _, body = content.partition("\n")
    records = _csv_records(body)
    records.reverse()
    half = len(records) // 2
    parts = [records[:half], records[half:]] if half else [records]
    return [(f"part-{i}-{name}", "\n".join([header, *part]) + "\n") for i, part in enumerate(parts) if part]


def _csv_records(body: str) -> list[str]:
    """Split CSV text into records, keeping a quoted line break inside its record."""
    records, current, quotes = [], [], 0
    for line in body.strip("\n").split("\n"):
        current.append(line)
        quotes += line.count('"')
        if quotes % 2 == 0:
            records.append("\n".join(current))
            current, quotes = [], 0
    if current:
        records.append("\n".join(current))
    return records


def _build(spark: SparkSession, config: PipelineConfig, dates: list[dt.date | None]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_jobs(spark, config, select_jobs("all"), dates)


@pytest.fixture(scope="module")
def lakes(
    spark: SparkSession, base_config: PipelineConfig, tmp_path_factory
) -> tuple[PipelineConfig, PipelineConfig]:
    root = tmp_path_factory.mktemp("integrity")
    a = base_config.with_paths(landing=str(root / "landing_a"), lake=str(root / "lake_a"))
    b = base_config.with_paths(landing=str(root / "landing_b"), lake=str(root / "lake_b"))
    for (source, day, name), content in _deliveries().items():
        _write(Path(a.paths.landing), source, day, name, content)
        for other_name, other in _reordered(content, name):
            _write(Path(b.paths.landing), source, day, other_name, other)

    _build(spark, a, [D1])  # then D2 below: the daily schedule
    spark.conf.set("spark.databricks.delta.autoCompact.enabled", "true")
    spark.conf.set("spark.databricks.delta.autoCompact.minNumFiles", "2")
    try:
        _build(spark, a, [D2])
    finally:
        spark.conf.set("spark.databricks.delta.autoCompact.enabled", "false")
        spark.conf.unset("spark.databricks.delta.autoCompact.minNumFiles")
    spark.conf.set("spark.sql.shuffle.partitions", "5")
    try:
        _build(spark, b, [None, D2])  # every delivery at once; then the as-of of lake A's last day
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", "2")
    yield a, b
    shutil.rmtree(root, ignore_errors=True)


def _table(spark: SparkSession, config: PipelineConfig, layer: str, table: str) -> DataFrame:
    return read_table(spark, table_path(config.paths.lake, layer, table))


def _runs(spark: SparkSession, config: PipelineConfig, job: str) -> list[dict]:
    rows = _table(spark, config, "ops", RUNS_TABLE).where(F.col("job") == job).orderBy("started_at").collect()
    return [{**r.asDict(), "details": json.loads(r["details"])} for r in rows]


def _failed_rules(spark, config, table: str, key: str, value: str) -> list[list[str]]:
    rows = _table(spark, config, "quarantine", table).where(F.trim(F.col(key)) == value).collect()
    return sorted(sorted(r["_failed_rules"]) for r in rows)


# --- 1. ties ----------------------------------------------------------------------------------


def test_a_tie_is_won_by_the_status_further_along_whatever_the_order_in_the_file(spark, lakes):
    for config in lakes:
        statuses = {
            r["order_id"]: r["order_status"]
            for r in _table(spark, config, "silver", "orders")
            .where(F.col("order_id").isin(TIE_ORDERS))
            .collect()
        }
        assert statuses == dict.fromkeys(TIE_ORDERS, "cancelled")


def test_ties_are_counted_as_conflicts_not_as_duplicates(spark, lakes):
    a, _ = lakes
    first = _runs(spark, a, "silver.orders")[0]["details"]
    assert (first["conflicts"], first["duplicates_removed"]) == (10, 0)
    assert first["reconciled"]


def test_two_builds_from_reordered_split_deliveries_give_the_same_silver_gold_and_open_quarantine(
    spark, lakes
):
    a, b = lakes
    only_latest = {
        "gold.customer_segments": lambda df: df.where(F.col("as_of_date") == D2),
        "gold.product_popularity": lambda df: df.where(F.col("as_of_date") == D2),
        "gold.product_affinity": lambda df: df.where(F.col("as_of_date") == D2),
        "gold.recommendations": lambda df: df.where(F.col("as_of_date") == D2),
        "gold.recommendation_metrics": lambda df: df.where(F.col("as_of_date") == D2),
        "gold.campaign_audiences": lambda df: df.where(F.col("as_of_date") == D2),
        "gold.campaign_results": lambda df: df.where(F.col("as_of_date") == D2),
        "gold.stock_signals": lambda df: df.where(F.col("as_of_date") == D2),
        "quarantine": lambda df: df.where(F.col("_resolved_at").isNull()),
    }
    comparisons = compare_lakes(
        spark,
        a.paths.lake,
        b.paths.lake,
        layers=("silver", "quarantine", "gold"),
        ops_tables=(),
        # file names differ by design (lake B's files were renamed and split)
        exclude={"silver": ["_source_file"], "quarantine": ["_source_file", "_row_key", "_resolved_at"]},
        normalize=only_latest,
    )
    unequal = [c.describe() for c in comparisons if not c.equal]
    assert len(comparisons) >= 6 + 3 + 8
    assert not unequal, "\n".join(unequal)


# --- 2. implausible time ------------------------------------------------------------------------


def test_placeholder_dates_are_quarantined_under_named_rules(spark, lakes):
    a, _ = lakes
    assert _failed_rules(spark, a, "orders", "order_id", "z1") == [["order_ts_plausible"]]
    assert _failed_rules(spark, a, "orders", "order_id", "f1") == [["updated_at_plausible"]]
    assert _failed_rules(spark, a, "customers", "customer_id", "c3") == [["updated_at_plausible"]]
    assert _failed_rules(spark, a, "clicks", "event_id", "e9") == [["event_ts_plausible"]]
    c2 = _table(spark, a, "silver", "customers").where(F.col("customer_id") == "c2").first()
    assert "signup_ts_plausible" in c2["_dq_flags"]  # kept, flagged: a customer is not lost for it


def test_an_order_with_a_placeholder_change_time_still_takes_its_real_change(spark, lakes):
    a, _ = lakes
    f1 = _table(spark, a, "gold", "fact_orders").where(F.col("order_id") == "f1").first()
    assert f1["order_status"] == "cancelled"


def test_placeholders_move_neither_the_as_of_date_nor_the_calendar(spark, lakes):
    _, b = lakes
    for config in lakes:
        calendar = _table(spark, config, "gold", "dim_date")
        years = calendar.agg(F.min("year"), F.max("year"), F.count("*")).first()
        assert tuple(years) == (2026, 2026, 365)  # the year of the real orders and events only
    # Lake B's first run had no --as-of: the default is the latest real order date, not 9999-12-31.
    segments = _table(spark, b, "gold", "customer_segments")
    as_of = sorted(r[0] for r in segments.select("as_of_date").distinct().collect())
    assert as_of == [D1, D2]
    assert all(0 <= r["recency_days"] <= 1 for r in segments.where(F.col("as_of_date") == D1).collect())


# --- 3. RFC 4180 CSV ----------------------------------------------------------------------------


def test_quoted_line_breaks_doubled_quotes_and_odd_header_names_read_as_delivered(spark, lakes):
    a, _ = lakes
    cities = {
        r["order_id"]: r["ship_city"]
        for r in _table(spark, a, "silver", "orders").where(F.col("order_id").isin("m1", "m2")).collect()
    }
    assert cities == {"m1": "Unter den Linden 1\nHinterhaus", "m2": 'Café "Zur Post", Mitte'}
    c1 = _table(spark, a, "silver", "customers").where(F.col("customer_id") == "c1").first()
    assert (c1["city"], c1["country"]) == ("Berlin\nMitte", "DE")
    log = {
        Path(r["file"]).name + str(r["ingest_date"]): r
        for r in _table(spark, a, "ops", INGEST_LOG_TABLE).collect()
    }
    assert log[f"crm.csv{D1}"]["rows"] == 3 and log[f"orders.csv{D1}"]["rows"] == 24
    assert any("ignoring case and spaces" in p for p in log[f"crm.csv{D1}"]["problems"])


def test_a_quote_that_never_closes_costs_its_row_only(spark, lakes):
    a, _ = lakes
    entry = next(
        r for r in _table(spark, a, "ops", INGEST_LOG_TABLE).collect() if r["file"].endswith("broken.csv")
    )
    assert (entry["rows"], entry["corrupt_rows"]) == (2, 1)
    assert any("never closed" in p for p in entry["problems"])
    assert _table(spark, a, "silver", "orders").where(F.col("order_id") == "u2").count() == 1


# --- 4. honest counts ---------------------------------------------------------------------------


def test_run_records_count_what_the_jobs_own_commits_wrote(spark, lakes):
    """The second day ran with auto-compaction, which commits after the jobs' own commits."""
    a, _ = lakes
    for job, table in (("gold.fact_orders", "fact_orders"), ("gold.fact_order_lines", "fact_order_lines")):
        first, second = _runs(spark, a, job)
        path = table_path(a.paths.lake, "gold", table)
        changes = (
            spark.read.format("delta")
            .option("readChangeFeed", "true")
            .option("startingVersion", first["delta_versions"][path] + 1)
            .option("endingVersion", second["delta_versions"][path])
            .load(path)
            .where(F.col("_change_type") != "update_preimage")
            .count()
        )
        assert second["rows_written"] == changes > 0, (job, second)


def test_lines_that_waited_for_their_order_are_admitted_and_leave_the_quarantine(spark, lakes):
    a, _ = lakes
    lines = _table(spark, a, "silver", "order_items").where(F.col("order_id") == "w1")
    assert sorted(r["line_no"] for r in lines.collect()) == [1, 2]
    waiting = _table(spark, a, "quarantine", "order_items").where(F.col("order_id") == "w1").collect()
    second_run = _runs(spark, a, "silver.order_items")[1]
    assert len(waiting) == 2 and {r["_resolved_by"] for r in waiting} == {second_run["run_id"]}
    # w1's two lines, and f1's line: its order's first row was quarantined (a placeholder date)
    assert (second_run["details"]["retried_from_quarantine"], second_run["details"]["readmitted"]) == (3, 3)
    assert second_run["details"]["reconciled"]
    facts = _table(spark, a, "gold", "fact_order_lines").where(F.col("order_id") == "w1").count()
    assert facts == 2
    f1 = _table(spark, a, "silver", "order_items").where(F.col("order_id") == "f1").collect()
    assert [r["order_updated_at"] for r in f1] == [dt.datetime(2026, 3, 3, 9)]  # the real version


# --- 5. reasons ---------------------------------------------------------------------------------


def test_values_that_do_not_parse_fail_a_parse_rule_naming_the_column(spark, lakes):
    a, _ = lakes
    quarantined = {
        (r["order_id"], r["line_no"]): sorted(r["_failed_rules"])
        for r in _table(spark, a, "quarantine", "order_items")
        .where(F.col("order_id").isin("m1", "m2"))
        .collect()
    }
    assert quarantined == {
        ("m1", "2"): ["quantity_parses"],
        ("m1", "3"): ["quantity_parses"],
        ("m2", "1"): ["unit_price_parses"],
        ("m2", "2"): ["unit_price_parses"],
        ("m2", "4"): ["unit_price_parses"],
    }


def test_money_keeps_the_delivered_precision_and_whole_decimals_are_quantities(spark, lakes):
    a, _ = lakes
    lines = {
        (r["order_id"], r["line_no"]): r
        for r in _table(spark, a, "silver", "order_items").where(F.col("order_id").isin("m1", "m2")).collect()
    }
    assert set(lines) == {("m1", 1), ("m2", 3)}
    assert lines[("m1", 1)]["quantity"] == 2
    assert lines[("m2", 3)]["unit_price"] == Decimal("12.505")


def test_an_object_where_a_tracking_value_belongs_is_flagged_not_kept_as_text(spark, lakes):
    a, _ = lakes
    e8 = _table(spark, a, "silver", "clicks").where(F.col("event_id") == "e8").first()
    assert e8["utm_source"] is None and e8["utm_medium"] == "cpc"
    assert "tracking_fields_are_values" in e8["_dq_flags"]
