"""Tests of the synthetic landing-zone generator (no Spark: files are read back with pandas/json)."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import itertools
import json
import re
import zoneinfo
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ecom_generator import DEFECT_KINDS, SOURCES, GenerationReport, generate_landing, shop_size
from ecom_generator import core as core_module
from ecom_generator import customers as customers_module
from ecom_generator._strings import TS_NAIVE, TS_OFFSET, TS_UTC, format_timestamps

START = dt.date(2026, 3, 27)  # the run crosses the switch to summer time on 2026-03-29
DAYS = 5
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")

ORDER_COLUMNS = [
    "order_id", "customer_id", "order_status", "order_ts", "updated_at", "currency", "channel",
    "ship_country", "ship_city", "payment_type", "shipping_fee",
]  # fmt: skip
ITEM_COLUMNS = ["order_id", "line_no", "product_id", "quantity", "unit_price", "discount_amount"]
CUSTOMER_COLUMNS = [
    "customer_id", "email", "first_name", "last_name", "phone", "country", "city", "postal_code",
    "signup_ts", "updated_at", "marketing_opt_in",
]  # fmt: skip
FX_COLUMNS = ["rate_date", "currency", "rate_to_base"]
INVENTORY_COLUMNS = [
    "product_id", "location_id", "snapshot_ts", "on_hand", "available", "committed", "incoming",
    "lead_time_days",
]  # fmt: skip
STATUSES = {"created", "paid", "shipped", "delivered", "cancelled", "returned"}
STATUS_RANK = {"created": 0, "paid": 1, "shipped": 2, "delivered": 3, "returned": 4, "cancelled": 4}
CHANNELS = {"web", "app", "marketplace", "store"}
EVENT_TYPES = {
    "page_view", "product_view", "search", "add_to_cart", "remove_from_cart", "begin_checkout", "purchase",
}  # fmt: skip
CLICK_FIELDS = {
    "event_id", "event_ts", "event_type", "anonymous_id", "customer_id", "session_id", "product_id",
    "order_id", "quantity", "price", "page_url", "referrer", "search_query", "utm", "device",
}  # fmt: skip
ISO_WITH_OFFSET = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?(Z|[+-]\d{2}:\d{2})$")
ISO_NAIVE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
DECIMAL = re.compile(r"^-?\d+\.\d{2}$")


@dataclass(frozen=True)
class Landing:
    """A generated landing zone read back into memory."""

    report: GenerationReport
    csv: dict[str, list[tuple[str, pd.DataFrame]]]
    clicks: list[tuple[str, str]]
    catalogue: list[tuple[str, list[dict[str, Any]]]]

    def frame(self, source: str) -> pd.DataFrame:
        """All deliveries of a CSV source with an ``ingest_date`` column, in delivery order."""
        frames = [frame.assign(ingest_date=date) for date, frame in self.csv[source]]
        return pd.concat(frames, ignore_index=True)

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        """Every parseable click event with its delivery date."""
        parsed = []
        for date, line in self.clicks:
            try:
                parsed.append((date, json.loads(line)))
            except json.JSONDecodeError:
                continue
        return parsed


def _delivery_date(path: Path) -> str:
    return path.parent.name.removeprefix("ingest_date=")


def _read_landing(report: GenerationReport) -> Landing:
    root = report.landing
    csv: dict[str, list[tuple[str, pd.DataFrame]]] = {}
    for source in ("orders", "order_items", "customers", "fx_rates", "inventory"):
        csv[source] = [
            (_delivery_date(path), pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""]))
            for path in sorted((root / source).glob("ingest_date=*/*.csv"))
            if path.stat().st_size > 0
        ]
    clicks = []
    for path in sorted((root / "clicks").glob("ingest_date=*/*")):
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as handle:
            clicks.extend((_delivery_date(path), line.rstrip("\n")) for line in handle)
    catalogue = [
        (_delivery_date(path), [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()])
        for path in sorted((root / "catalogue").glob("ingest_date=*/*.jsonl"))
    ]
    return Landing(report=report, csv=csv, clicks=clicks, catalogue=catalogue)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Landing:
    """A defect-free run (5 days, about 4,000 events)."""
    landing = tmp_path_factory.mktemp("clean")
    report = generate_landing(landing, start=START, days=DAYS, scale=0.004, seed=7, defect_rate=0.0)
    return _read_landing(report)


@pytest.fixture(scope="module")
def defective(tmp_path_factory: pytest.TempPathFactory) -> Landing:
    """A run with a 2 % defect rate (5 days, about 5,000 events)."""
    landing = tmp_path_factory.mktemp("defective")
    report = generate_landing(landing, start=START, days=DAYS, scale=0.005, seed=11, defect_rate=0.02)
    return _read_landing(report)


def _parse_ts(text: str) -> dt.datetime:
    """An ISO-8601 timestamp as an aware datetime (naive ones in Europe/Berlin)."""
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=BERLIN)


def _file_digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


# --- layout -------------------------------------------------------------------------------------


def test_layout_has_one_named_file_per_source_and_day(clean: Landing) -> None:
    root = clean.report.landing
    dates = [(START + dt.timedelta(days=offset)) for offset in range(DAYS)]
    for source in SOURCES:
        folders = sorted(path.name for path in (root / source).iterdir())
        assert folders == [f"ingest_date={day.isoformat()}" for day in dates]
    for day in dates:
        stamp = day.strftime("%Y%m%d")
        folder = f"ingest_date={day.isoformat()}"
        for source in ("orders", "order_items", "customers", "fx_rates"):
            assert [p.name for p in (root / source / folder).iterdir()] == [f"{source}_{stamp}.csv"]
        assert [p.name for p in (root / "catalogue" / folder).iterdir()] == [f"catalogue_{stamp}.jsonl"]
        assert [p.name for p in (root / "clicks" / folder).iterdir()] in (
            [f"clicks_{stamp}.jsonl.gz"],
            [f"clicks_{stamp}.jsonl"],
        )
    click_files = sorted(p.name for p in (root / "clicks").rglob("clicks_*"))
    assert sum(name.endswith(".gz") for name in click_files) == DAYS - 1  # one plain .jsonl day in five
    on_disk = sorted(path for path in root.rglob("*") if path.is_file())
    assert sorted(clean.report.files) == on_disk


def test_report_counts_rows_written(clean: Landing) -> None:
    counted = {source: sum(len(frame) for _, frame in frames) for source, frames in clean.csv.items()}
    counted["clicks"] = len(clean.clicks)
    counted["catalogue"] = sum(len(rows) for _, rows in clean.catalogue)
    assert clean.report.rows_by_source == counted
    assert clean.report.seconds > 0


# --- contract on clean data --------------------------------------------------------------------------


def test_orders_meet_the_contract(clean: Landing) -> None:
    for _, frame in clean.csv["orders"]:
        assert list(frame.columns) == ORDER_COLUMNS
    orders = clean.frame("orders")
    assert len(orders) > 0
    assert orders["order_id"].notna().all()
    assert set(orders["order_status"]) <= STATUSES
    assert set(orders["channel"]) <= CHANNELS
    assert orders["currency"].str.fullmatch(r"[A-Z]{3}").all()
    assert orders["ship_country"].str.fullmatch(r"[A-Z]{2}").all()
    assert orders["ship_city"].notna().all()
    assert orders["shipping_fee"].str.fullmatch(DECIMAL.pattern).all()
    assert (orders["shipping_fee"].astype(float) >= 0).all()
    assert orders["customer_id"].dropna().str.fullmatch(r"C\d{7}").all()
    for column in ("order_ts", "updated_at"):
        assert orders[column].str.fullmatch(ISO_WITH_OFFSET.pattern).all()
    order_ts = orders["order_ts"].map(_parse_ts)
    updated_at = orders["updated_at"].map(_parse_ts)
    assert (updated_at >= order_ts).all()


def test_order_items_meet_the_contract(clean: Landing) -> None:
    for _, frame in clean.csv["order_items"]:
        assert list(frame.columns) == ITEM_COLUMNS
    items = clean.frame("order_items")
    quantity = items["quantity"].astype(int)
    unit_price = items["unit_price"].astype(float)
    discount = items["discount_amount"].astype(float)
    assert (quantity > 0).all()
    assert (items["line_no"].astype(int) >= 1).all()
    assert (unit_price > 0).all()
    assert ((discount >= 0) & (discount <= quantity * unit_price)).all()
    assert items["unit_price"].str.fullmatch(DECIMAL.pattern).all()
    listed = {row["product_id"] for _, snapshot in clean.catalogue for row in snapshot}
    assert set(items["product_id"]) <= listed
    assert not items.duplicated(["ingest_date", "order_id", "line_no"]).any()


def test_customers_meet_the_contract(clean: Landing) -> None:
    for _, frame in clean.csv["customers"]:
        assert list(frame.columns) == CUSTOMER_COLUMNS
    customers = clean.frame("customers")
    assert customers["customer_id"].str.fullmatch(r"C\d{7}").all()
    assert customers["email"].str.fullmatch(r"[A-Za-z0-9._]+@[a-z0-9.-]+\.[a-z]+").all()
    assert customers["country"].str.fullmatch(r"[A-Z]{2}").all()
    assert customers[["first_name", "last_name", "phone", "city", "postal_code"]].notna().all().all()
    assert set(customers["marketing_opt_in"]) <= {"true", "false"}
    signup = customers["signup_ts"].map(_parse_ts)
    updated = customers["updated_at"].map(_parse_ts)
    assert (updated >= signup).all()
    assert not customers.duplicated(["ingest_date", "customer_id"]).any()


def test_clicks_meet_the_contract(clean: Landing) -> None:
    events = clean.events()
    assert len(events) == len(clean.clicks)  # every line parses
    for _, event in events:
        assert set(event) <= CLICK_FIELDS
        assert ISO_WITH_OFFSET.match(event["event_ts"])
        assert event["event_type"] in EVENT_TYPES
        assert event["anonymous_id"]
        assert set(event["device"]) <= {"type", "os", "browser"} and "type" in event["device"]
        if "utm" in event:
            assert set(event["utm"]) == {"source", "medium", "campaign"}
        if event["event_type"] in {"product_view", "add_to_cart", "remove_from_cart", "purchase"}:
            assert re.fullmatch(r"P\d{6}", event["product_id"])
        if event["event_type"] in {"add_to_cart", "remove_from_cart", "purchase"}:
            assert isinstance(event["quantity"], int) and event["quantity"] > 0
            assert isinstance(event["price"], float | int) and event["price"] > 0
        if event["event_type"] == "search":
            assert event["search_query"]
    event_ids = [event["event_id"] for _, event in events]
    assert len(set(event_ids)) == len(event_ids)


def test_clicks_arrive_on_their_day(clean: Landing) -> None:
    for date, event in clean.events():
        local_day = _parse_ts(event["event_ts"]).astimezone(BERLIN).date()
        # Sessions that start just before midnight may run into the next day, never earlier.
        assert local_day - dt.date.fromisoformat(date) in (dt.timedelta(0), dt.timedelta(days=1))


def test_catalogue_snapshots_are_full_and_well_formed(clean: Landing) -> None:
    snapshots = {}
    for date, rows in clean.catalogue:
        ids = [row["product_id"] for row in rows]
        assert len(ids) == len(set(ids)), f"duplicate product in the {date} snapshot"
        for row in rows:
            assert isinstance(row["category_path"], list) and len(row["category_path"]) == 3
            assert all(isinstance(level, str) and level for level in row["category_path"])
            assert row["price"] > 0 and row["currency"] == "EUR"
            assert isinstance(row["is_active"], bool) and isinstance(row["attributes"], dict)
            assert row["sku"] and row["name"] and row["brand"]
            _parse_ts(row["updated_at"])
        snapshots[date] = {row["product_id"]: row for row in rows}
    dates = sorted(snapshots)
    changes = 0
    for before, after in itertools.pairwise(dates):
        old, new = snapshots[before], snapshots[after]
        changes += len(set(new) ^ set(old))
        changed = [pid for pid in set(new) & set(old) if new[pid] != old[pid]]
        changes += len(changed)
        for pid in changed:
            assert _parse_ts(new[pid]["updated_at"]) > _parse_ts(old[pid]["updated_at"])
    assert changes > 0, "the catalogue never changed"


def test_fx_rates_cover_the_base_currency_every_day(clean: Landing) -> None:
    for date, frame in clean.csv["fx_rates"]:
        assert list(frame.columns) == FX_COLUMNS
        assert (frame["rate_date"] == date).all()
        assert frame["currency"].str.fullmatch(r"[A-Z]{3}").all()
        assert frame.loc[frame["currency"] == "EUR", "rate_to_base"].tolist() == ["1.000000"]
        assert (frame["rate_to_base"].astype(float) > 0).all()
    first = clean.csv["fx_rates"][0][1]
    orders = clean.frame("orders")
    assert set(orders["currency"]) <= set(first["currency"])


def test_other_base_currency_expresses_rates_in_it(tmp_path: Path) -> None:
    generate_landing(tmp_path, start=START, days=1, scale=0.001, seed=1, defect_rate=0, base_currency="USD")
    rates = pd.read_csv(next(tmp_path.glob("fx_rates/*/*.csv")), dtype={"rate_to_base": float})
    by_currency = dict(zip(rates["currency"], rates["rate_to_base"], strict=True))
    assert by_currency["USD"] == 1.0
    assert by_currency["EUR"] > 1.0


# --- determinism ---------------------------------------------------------------------------------


def test_same_arguments_give_identical_bytes(tmp_path: Path) -> None:
    arguments = {"start": START, "days": 3, "scale": 0.002, "seed": 5, "defect_rate": 0.05}
    generate_landing(tmp_path / "first", **arguments)
    generate_landing(tmp_path / "second", **arguments)
    first = _file_digests(tmp_path / "first")
    assert first == _file_digests(tmp_path / "second")
    generate_landing(tmp_path / "first", **arguments)  # re-run into an existing landing zone
    assert _file_digests(tmp_path / "first") == first


def test_another_seed_gives_other_data(tmp_path: Path) -> None:
    arguments = {"start": START, "days": 2, "scale": 0.002, "defect_rate": 0.0}
    generate_landing(tmp_path / "a", seed=1, **arguments)
    generate_landing(tmp_path / "b", seed=2, **arguments)
    first, second = _file_digests(tmp_path / "a"), _file_digests(tmp_path / "b")
    assert first.keys() == second.keys()
    assert all(first[name] != second[name] for name in first if "clicks" in name or "orders" in name)


def test_rerun_removes_files_an_earlier_run_left_behind(tmp_path: Path) -> None:
    generate_landing(tmp_path, start=START, days=4, scale=0.002, seed=3, defect_rate=0.05)
    report = generate_landing(tmp_path, start=START, days=4, scale=0.002, seed=3, defect_rate=0.0)
    assert sorted(report.files) == sorted(path for path in tmp_path.rglob("*") if path.is_file())
    assert not any(path.stat().st_size == 0 for path in report.files)


# --- referential patterns ------------------------------------------------------------------------------


def test_purchase_events_match_their_orders(clean: Landing) -> None:
    orders = clean.frame("orders")
    first_delivery = orders.drop_duplicates("order_id").set_index("order_id")
    items = clean.frame("order_items")
    first_items = items[items["ingest_date"] == items["order_id"].map(first_delivery["ingest_date"])]
    purchases: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for _, event in clean.events():
        if event["event_type"] == "purchase":
            purchases[event["order_id"]].append(event)
    assert purchases, "no purchase events"
    for order_id, events in purchases.items():
        assert order_id in first_delivery.index
        order = first_delivery.loc[order_id]
        assert order["channel"] in {"web", "app"}
        customers = {event.get("customer_id") for event in events}
        expected_customer = None if pd.isna(order["customer_id"]) else order["customer_id"]
        assert customers == {expected_customer}
        lines = first_items[first_items["order_id"] == order_id].sort_values("line_no")
        bought = [(event["product_id"], event["quantity"], f"{event['price']:.2f}") for event in events]
        sold = zip(lines["product_id"], lines["quantity"].astype(int), lines["unit_price"], strict=True)
        assert sorted(bought) == sorted(sold)
    web_orders = first_delivery[first_delivery["channel"].isin(["web", "app"])]
    assert set(web_orders.index) == set(purchases)


def test_every_delivery_sends_all_lines_of_its_orders(clean: Landing) -> None:
    orders = clean.frame("orders")
    items = clean.frame("order_items")
    order_keys = set(zip(orders["ingest_date"], orders["order_id"], strict=True))
    item_keys = set(zip(items["ingest_date"], items["order_id"], strict=True))
    assert order_keys == item_keys
    lines = items.groupby("order_id")
    for order_id, group in lines:
        per_delivery = [tuple(g.sort_values("line_no")["line_no"]) for _, g in group.groupby("ingest_date")]
        assert len(set(per_delivery)) == 1, f"order {order_id} re-sent a different set of lines"
        first_line_no = per_delivery[0]
        assert first_line_no == tuple(str(n) for n in range(1, len(first_line_no) + 1))
    resent = orders["order_id"].duplicated()
    assert resent.any(), "no order changed status in a later delivery"


def test_order_statuses_progress_legally_with_growing_updated_at(clean: Landing) -> None:
    orders = clean.frame("orders")
    for order_id, history in orders.groupby("order_id", sort=False):
        assert not history["ingest_date"].duplicated().any(), f"{order_id} twice in one delivery"
        statuses = list(history["order_status"])
        ranks = [STATUS_RANK[status] for status in statuses]
        assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks), f"{order_id}: {statuses}"
        if "cancelled" in statuses:
            assert statuses[-1] == "cancelled"
            assert set(statuses[:-1]) <= {"created", "paid"}
        if "returned" in statuses:
            assert statuses[-1] == "returned"
        updated = [_parse_ts(text) for text in history["updated_at"]]
        assert updated == sorted(updated) and len(set(updated)) == len(updated)
        assert len(set(history["order_ts"])) == 1
    final = orders.drop_duplicates("order_id", keep="last")["order_status"]
    assert {"delivered", "shipped"} <= set(final)


def test_customers_deliver_new_and_changed_customers_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(customers_module, "MOVE_SHARE", 0.05)
    monkeypatch.setattr(customers_module, "EMAIL_CHANGE_SHARE", 0.03)
    report = generate_landing(tmp_path, start=START, days=4, scale=0.003, seed=9, defect_rate=0.0)
    customers = _read_landing(report).frame("customers")
    seen: dict[str, pd.Series] = {}
    moves = email_changes = 0
    for _, row in customers.iterrows():
        previous = seen.get(row["customer_id"])
        if previous is not None:
            assert _parse_ts(row["updated_at"]) > _parse_ts(previous["updated_at"])
            columns = ("email", "city", "postal_code", "marketing_opt_in")
            changed = [column for column in columns if row[column] != previous[column]]
            assert changed, f"{row['customer_id']} re-sent without a change"
            moves += "postal_code" in changed
            email_changes += "email" in changed
        seen[row["customer_id"]] = row
    assert moves > 0 and email_changes > 0


def test_orders_reference_known_customers_when_clean(clean: Landing) -> None:
    customers = clean.frame("customers")
    first_seen = customers.groupby("customer_id")["ingest_date"].min()
    orders = clean.frame("orders").dropna(subset=["customer_id"]).drop_duplicates("order_id")
    known_by = orders["customer_id"].map(first_seen)
    assert known_by.notna().all()
    assert (known_by <= orders["ingest_date"]).all()


def test_big_days_are_simulated_in_batches_of_hours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core_module, "BATCH_EVENTS", 300)
    monkeypatch.setattr(core_module, "RENDER_CHUNK_EVENTS", 100)
    report = generate_landing(tmp_path, start=START, days=2, scale=0.003, seed=5, defect_rate=0.0)
    landing = _read_landing(report)
    dated = landing.events()
    events = [event for _, event in dated]
    assert len(events) == len(landing.clicks) > 2_000
    assert len({event["event_id"] for event in events}) == len(events)
    assert len({event["session_id"] for event in events if "session_id" in event}) > 300
    orders = landing.frame("orders")
    purchased = {event["order_id"] for event in events if event["event_type"] == "purchase"}
    assert purchased <= set(orders["order_id"])
    assert not orders.duplicated(["ingest_date", "order_id"]).any()
    # Batches follow each other in time: each file is nearly sorted by event time.
    for date in {day for day, _ in dated}:
        times = [_parse_ts(event["event_ts"]) for day, event in dated if day == date]
        inversions = sum(later < earlier for earlier, later in itertools.pairwise(times))
        assert inversions < len(times) / 20


# --- realism ---------------------------------------------------------------------------------------------


def test_sessions_logins_guests_and_channels(clean: Landing) -> None:
    events = [event for _, event in clean.events()]
    without_session = sum("session_id" not in event for event in events)
    assert 0.005 < without_session / len(events) < 0.15
    by_anonymous: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in sorted(events, key=lambda event: _parse_ts(event["event_ts"])):
        by_anonymous[event["anonymous_id"]].append(event)
    logins = 0
    for history in by_anonymous.values():
        flags = ["customer_id" in event for event in history]
        logins += any(not flags[i] and flags[i + 1] for i in range(len(flags) - 1))
    assert logins > 0, "nobody logged in mid-session"
    orders = clean.frame("orders").drop_duplicates("order_id")
    assert orders["customer_id"].isna().any(), "no guest checkout"
    assert set(orders["channel"]) == CHANNELS
    assert orders["currency"].nunique() >= 3
    assert any("utm" in event for event in events) and any("utm" not in event for event in events)
    assert {event["device"]["type"] for event in events} >= {"desktop", "mobile"}


def test_traffic_follows_the_daily_curve(clean: Landing) -> None:
    hours = Counter(_parse_ts(event["event_ts"]).astimezone(BERLIN).hour for _, event in clean.events())
    night = sum(hours[h] for h in (2, 3, 4))
    evening = sum(hours[h] for h in (19, 20, 21))
    assert evening > 4 * night


def test_customers_differ_in_activity(tmp_path: Path) -> None:
    report = generate_landing(tmp_path, start=START, days=7, scale=0.01, seed=4, defect_rate=0.0)
    orders = _read_landing(report).frame("orders").drop_duplicates("order_id")
    per_customer = orders["customer_id"].dropna().value_counts()
    assert per_customer.max() >= 4 * per_customer.median()
    assert (per_customer == 1).sum() >= len(per_customer) / 5


# --- tastes ----------------------------------------------------------------------------------------------


def test_registered_customers_look_mostly_within_their_favourite_categories(clean: Landing) -> None:
    category = {row["product_id"]: row["category_path"][1] for _, rows in clean.catalogue for row in rows}
    views: dict[str, list[str]] = defaultdict(list)
    for _, event in clean.events():
        if event["event_type"] == "product_view" and event.get("customer_id"):
            views[event["customer_id"]].append(category[event["product_id"]])
    shares = [
        sum(n for _, n in Counter(seen).most_common(2)) / len(seen)
        for seen in views.values()
        if len(seen) >= 8
    ]
    # Drawn from overall popularity alone, the two most viewed sub-categories hold about a third.
    assert len(shares) >= 10
    assert sum(shares) / len(shares) > 0.6


def _taste_shop(days: int = 5) -> tuple[Any, Any]:
    from ecom_generator.catalogue import build_catalogue
    from ecom_generator.seasonality import build_calendar
    from ecom_generator.tastes import build_tastes

    rng = np.random.default_rng(3)
    calendar = build_calendar(START, days, rng)
    catalogue = build_catalogue(rng, calendar, 400)
    return catalogue, build_tastes(rng, catalogue, 50)


def test_tastes_draw_favourite_categories_staples_and_bundles_from_sellable_products() -> None:
    from ecom_generator.tastes import LEAF_LEVEL2, TASTE_SHARE

    catalogue, tastes = _taste_shop()
    sellable = np.flatnonzero(np.arange(catalogue.size) % 5 != 0)  # a fifth is not sellable today
    events = 40_000
    rng = np.random.default_rng(9)
    overall = rng.choice(sellable, size=events)
    customer = np.where(np.arange(events) % 2 == 0, np.arange(events) % 50, -1)

    drawn = tastes.personalise(rng, catalogue, sellable, product=overall, customer=customer)

    assert np.isin(drawn, sellable).all()
    anonymous = customer < 0
    assert (drawn[anonymous] == overall[anonymous]).all()  # without previous events: no bundle
    level2 = LEAF_LEVEL2[catalogue.leaf[drawn]]
    known = np.flatnonzero(~anonymous)
    in_taste = (level2[known] == tastes.favourite[customer[known], 0]) | (
        level2[known] == tastes.favourite[customer[known], 1]
    )
    assert in_taste.mean() > TASTE_SHARE
    repeat = (tastes.staples[:, 0] >= 0).nonzero()[0]
    assert 0 < len(repeat) < 25

    # Anonymous pairs of events: the first keeps its product, the second may be its bundle partner.
    previous = np.where(np.arange(events) % 2 == 1, np.arange(events) - 1, -1)
    nobody = np.full(events, -1)
    followed = tastes.personalise(
        rng, catalogue, sellable, product=overall, customer=nobody, previous=previous
    )
    partner = tastes.partner[overall[np.maximum(previous, 0)]]
    can_follow = (previous >= 0) & (partner >= 0) & np.isin(partner, sellable)
    assert (followed[~can_follow] == overall[~can_follow]).all()
    assert 0.45 < (followed[can_follow] == partner[can_follow]).mean() < 0.55
    assert (tastes.partner[tastes.partner[tastes.partner >= 0]] == np.flatnonzero(tastes.partner >= 0)).all()


def test_tastes_drift_slowly() -> None:
    catalogue, tastes = _taste_shop()
    before = tastes.favourite.copy()
    for day in range(20):
        tastes.drift(np.random.default_rng(day), catalogue)
    changed = (tastes.favourite != before).any(axis=1).mean()
    assert 0 < changed < 0.4


# --- defects ---------------------------------------------------------------------------------------------


def test_clean_run_reports_no_defects(clean: Landing) -> None:
    assert clean.report.defects == dict.fromkeys(DEFECT_KINDS, 0)
    assert not any(path.stat().st_size == 0 for path in clean.report.files)
    orders = clean.frame("orders")
    assert not orders["order_ts"].str.fullmatch(ISO_NAIVE.pattern).any()


def _observed_defects(landing: Landing) -> Counter[str]:
    """Count each defect kind from the files alone."""
    observed: Counter[str] = Counter()
    events = []
    for date, line in landing.clicks:
        try:
            events.append((date, json.loads(line)))
        except json.JSONDecodeError:
            observed["malformed_json"] += 1
    listed = {row["product_id"] for _, snapshot in landing.catalogue for row in snapshot}
    files_of: dict[str, list[str]] = defaultdict(list)
    for date, event in events:
        files_of[event["event_id"]].append(date)
        if "ab_test" in event:
            observed["extra_field"] += 1
        if event["event_type"] == "add_to_cart":
            if isinstance(event["quantity"], str) or isinstance(event["price"], str):
                observed["wrong_type"] += 1
            elif event["quantity"] <= 0:
                observed["non_positive_quantity"] += 1
        if event["event_type"] == "product_view" and event["product_id"] not in listed:
            observed["unknown_product"] += 1
    for dates in files_of.values():
        if len(dates) == 2:
            observed["duplicate_event" if dates[0] == dates[1] else "late_duplicate_event"] += 1
    for date, event in events:
        if len(files_of[event["event_id"]]) == 1:
            lateness = dt.date.fromisoformat(date) - _parse_ts(event["event_ts"]).astimezone(BERLIN).date()
            observed["late_event"] += lateness >= dt.timedelta(days=1)

    orders = landing.frame("orders")
    observed["naive_timestamp"] += int(orders["order_ts"].str.fullmatch(ISO_NAIVE.pattern).sum())
    bad_ts = ~orders["order_ts"].str.fullmatch(ISO_NAIVE.pattern + "|" + ISO_WITH_OFFSET.pattern)
    observed["wrong_type"] += int((bad_ts | ~orders["shipping_fee"].str.fullmatch(DECIMAL.pattern)).sum())
    items = landing.frame("order_items")
    numeric = (
        items["quantity"].str.fullmatch(r"-?\d+")
        & items["unit_price"].str.fullmatch(DECIMAL.pattern)
        & items["discount_amount"].str.fullmatch(DECIMAL.pattern)
    )
    observed["wrong_type"] += int((~numeric).sum())
    lines = items[numeric].drop_duplicates(["order_id", "line_no"])
    observed["non_positive_quantity"] += int((lines["quantity"].astype(int) <= 0).sum())
    all_lines = items.drop_duplicates(["order_id", "line_no"])
    observed["unknown_product"] += int((~all_lines["product_id"].isin(listed)).sum())
    customers = landing.frame("customers")
    observed["wrong_type"] += int(
        (~customers["signup_ts"].str.fullmatch(ISO_WITH_OFFSET.pattern)).sum()
        + (~customers["marketing_opt_in"].isin(["true", "false"])).sum()
    )
    first_in_crm = customers.groupby("customer_id")["ingest_date"].min()
    first_orders = orders.dropna(subset=["customer_id"]).drop_duplicates("order_id")
    crm_day = first_orders["customer_id"].map(first_in_crm)
    observed["customer_not_in_crm"] += int((crm_day.isna() | (crm_day > first_orders["ingest_date"])).sum())
    contract = {"orders": ORDER_COLUMNS, "order_items": ITEM_COLUMNS, "customers": CUSTOMER_COLUMNS}
    for source, expected in contract.items():
        observed["extra_column"] += sum(list(frame.columns) != expected for _, frame in landing.csv[source])
    observed["empty_file"] += sum(path.stat().st_size == 0 for path in landing.report.files)
    _observe_inventory_defects(landing, listed, observed)
    return observed


def _observe_inventory_defects(landing: Landing, listed: set[str], observed: Counter[str]) -> None:
    """The defects of the stock snapshots, from the files alone."""
    snapshots = landing.frame("inventory")
    whole = r"-?\d+"
    numeric = snapshots["on_hand"].str.fullmatch(whole) & snapshots["available"].str.fullmatch(whole)
    observed["wrong_type"] += int((~numeric).sum())
    observed["negative_stock"] += int((numeric & (snapshots["available"].str.startswith("-"))).sum())
    observed["unknown_product"] += int((~snapshots["product_id"].isin(listed)).sum())
    observed["duplicate_row"] += int(snapshots.duplicated().sum())  # ingest_date included: one file
    observed["naive_timestamp"] += int(snapshots["snapshot_ts"].str.fullmatch(ISO_NAIVE.pattern).sum())
    local_day = snapshots["snapshot_ts"].map(
        lambda text: _parse_ts(text).astimezone(BERLIN).date().isoformat()
    )
    observed["late_snapshot"] += int((local_day < snapshots["ingest_date"]).sum())


def test_defect_counts_match_the_files(defective: Landing) -> None:
    observed = _observed_defects(defective)
    reported = defective.report.defects
    assert set(reported) == set(DEFECT_KINDS)
    for kind in DEFECT_KINDS:
        assert observed[kind] == reported[kind], kind
    assert reported["empty_file"] == 1 and reported["extra_column"] == 1


def test_defect_rates_are_near_the_requested_rate(defective: Landing) -> None:
    reported = defective.report.defects
    events = defective.report.rows_by_source["clicks"]
    for kind in ("malformed_json", "duplicate_event", "extra_field"):
        assert 0.5 * 0.02 * events < reported[kind] < 1.5 * 0.02 * events, kind
    for kind in ("late_event", "late_duplicate_event"):  # only events of the first days can be late
        assert 0.1 * 0.02 * events < reported[kind] < 1.5 * 0.02 * events, kind
    for kind in ("wrong_type", "unknown_product", "non_positive_quantity", "naive_timestamp"):
        assert reported[kind] > 0, kind


def test_clean_run_files_show_no_defects(clean: Landing) -> None:
    observed = _observed_defects(clean)
    assert {kind: count for kind, count in observed.items() if count} == {}


# --- sizes, helpers, arguments ---------------------------------------------------------------------------


def test_scale_sets_population_sizes() -> None:
    size = shop_size(1.0, days=30, defect_rate=0.003)
    assert (size.target_events, size.customers, size.products) == (1_000_000, 20_000, 2_000)
    assert shop_size(10.0, days=30, defect_rate=0).target_events == 10_000_000
    tiny = shop_size(0.001, days=3, defect_rate=0)
    assert tiny.target_events == 1_000 and tiny.customers >= 60 and tiny.products >= 40


def test_tiny_scale_writes_a_few_hundred_events(tmp_path: Path) -> None:
    report = generate_landing(tmp_path, start=START, days=3, scale=0.001, seed=2)
    assert 500 < report.rows_by_source["clicks"] < 1_600
    assert report.rows_by_source["orders"] > 0


def test_timestamps_render_like_python_datetime() -> None:
    instants = np.array(
        [
            int(dt.datetime(2026, 3, 29, 0, 59, 59, tzinfo=dt.UTC).timestamp() * 1000),
            int(dt.datetime(2026, 3, 29, 1, 0, 0, tzinfo=dt.UTC).timestamp() * 1000),
            int(dt.datetime(2026, 10, 25, 0, 59, 59, 123000, tzinfo=dt.UTC).timestamp() * 1000),
            int(dt.datetime(2026, 10, 25, 1, 0, 0, tzinfo=dt.UTC).timestamp() * 1000),
            int(dt.datetime(1999, 12, 31, 23, 30, tzinfo=dt.UTC).timestamp() * 1000),
        ]
    )
    rendered = format_timestamps(instants, TS_OFFSET, millis=True).to_pylist()
    expected = [
        dt.datetime.fromtimestamp(ms / 1000, tz=BERLIN).isoformat(timespec="milliseconds") for ms in instants
    ]
    assert rendered == expected
    assert format_timestamps(instants[:1], TS_UTC, millis=False).to_pylist() == ["2026-03-29T00:59:59Z"]
    assert format_timestamps(instants[:1], TS_NAIVE, millis=False).to_pylist() == ["2026-03-29T01:59:59"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"days": 0}, "days must be an integer >= 1"),
        ({"scale": 0}, "scale must be a finite number > 0"),
        ({"scale": -1.5}, "scale must be a finite number > 0"),
        ({"scale": 1_000}, "scale must be <= 100"),
        ({"start": "2026-03-01"}, "start must be a datetime.date"),
        ({"defect_rate": 1.0}, r"defect_rate must be in \[0, 1\)"),
        ({"defect_rate": -0.01}, r"defect_rate must be in \[0, 1\)"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"base_currency": "XYZ"}, "base_currency must be one of"),
    ],
)
def test_bad_arguments_are_rejected(tmp_path: Path, arguments: dict[str, Any], message: str) -> None:
    call: dict[str, Any] = {"start": START, "days": 2, "scale": 0.001, "seed": 1, **arguments}
    with pytest.raises(ValueError, match=message):
        generate_landing(tmp_path, **call)
    assert not any(tmp_path.iterdir())


# --- stock snapshots ------------------------------------------------------------------------------------


def test_inventory_snapshots_meet_the_contract(clean: Landing) -> None:
    snapshots = clean.frame("inventory")
    for _, frame in clean.csv["inventory"]:
        assert list(frame.columns) == INVENTORY_COLUMNS
    assert snapshots["product_id"].str.fullmatch(r"P\d{6}").all()
    assert set(snapshots["location_id"]) == {"WH-CENTRAL", "WH-WEST"}
    assert snapshots["snapshot_ts"].str.fullmatch(ISO_WITH_OFFSET.pattern).all()
    for column in ("on_hand", "available", "committed", "incoming"):
        assert snapshots[column].str.fullmatch(r"\d+").all(), column
    assert (snapshots["available"].astype(int) <= snapshots["on_hand"].astype(int)).all()
    lead = snapshots["lead_time_days"].dropna().astype(int)
    assert lead.between(2, 12).all() and snapshots["lead_time_days"].isna().any()
    # one snapshot per product and warehouse a day, taken on the delivery's own (local) day
    local_day = snapshots["snapshot_ts"].map(
        lambda text: _parse_ts(text).astimezone(BERLIN).date().isoformat()
    )
    assert (local_day == snapshots["ingest_date"]).all()
    assert not snapshots.duplicated(["product_id", "location_id", "snapshot_ts"]).any()
    listed = {date: {row["product_id"] for row in rows} for date, rows in clean.catalogue}
    for date, frame in clean.csv["inventory"]:
        for _, products in frame.groupby("location_id")["product_id"]:
            assert set(products) == listed[date], date  # a warehouse's snapshot is whole, or missing


def test_stock_goes_down_with_the_orders_and_out_of_stock_products_sell_nothing(tmp_path: Path) -> None:
    report = generate_landing(tmp_path, start=START, days=12, scale=0.01, seed=3, defect_rate=0.0)
    landing = _read_landing(report)
    snapshots = landing.frame("inventory")
    for column in ("on_hand", "available", "incoming"):
        snapshots[column] = snapshots[column].astype(int)
    stock = snapshots.groupby(["product_id", "ingest_date"])[["available", "on_hand", "incoming"]].sum()
    items = landing.frame("order_items")
    orders = landing.frame("orders").drop_duplicates("order_id")
    created = orders.set_index("order_id")["order_ts"].map(lambda t: _parse_ts(t).astimezone(BERLIN).date())
    items = items.drop_duplicates(["order_id", "line_no"])
    items["day"] = items["order_id"].map(created).map(lambda d: d.isoformat())
    sold = (
        items.assign(quantity=items["quantity"].astype(int)).groupby(["product_id", "day"])["quantity"].sum()
    )
    active = {(row["product_id"], date): row["is_active"] for date, rows in landing.catalogue for row in rows}
    out_days = [key for key, is_active in active.items() if not is_active]
    assert out_days, "no product ran out of stock"
    for product, date in out_days:
        if (product, date) in stock.index:  # both warehouses' snapshots may be missing that day
            assert stock.loc[(product, date), "available"] == 0, (product, date)
            assert stock.loc[(product, date), "incoming"] > 0, (product, date)  # replenishment on its way
        assert sold.get((product, date), 0) == 0, (product, date)  # zero sales while out
    # From one snapshot of a warehouse to the next day's, stock never grows without a receipt
    # (the pending replenishment unchanged), and it falls on days the product sold.
    per_warehouse = snapshots.set_index(["product_id", "location_id", "ingest_date"]).sort_index()
    falls = 0
    for (product, location, date), row in per_warehouse.iterrows():
        following = (dt.date.fromisoformat(date) + dt.timedelta(days=1)).isoformat()
        if (product, location, following) not in per_warehouse.index:
            continue
        after = per_warehouse.loc[(product, location, following)]
        if after["incoming"] == row["incoming"]:
            assert after["on_hand"] <= row["on_hand"], (product, location, date)
            falls += int(after["on_hand"] < row["on_hand"])
    assert falls > 10
    assert (snapshots["incoming"] > 0).any(), "no replenishment was ever ordered"


def test_a_missing_warehouse_snapshot_leaves_the_day_without_rows(tmp_path: Path) -> None:
    report = generate_landing(tmp_path, start=START, days=30, scale=0.002, seed=9, defect_rate=0.0)
    snapshots = _read_landing(report).frame("inventory")
    per_day = snapshots.groupby("ingest_date")["location_id"].nunique()
    assert per_day.iloc[0] == 2  # never on the first day
    assert (per_day < 2).any(), "no warehouse snapshot was ever lost in 30 days"


def test_without_inventory_the_other_sources_are_byte_identical(tmp_path: Path) -> None:
    arguments = {"start": START, "days": 3, "scale": 0.002, "seed": 5, "defect_rate": 0.05}
    generate_landing(tmp_path / "with", **arguments)
    report = generate_landing(tmp_path / "without", inventory=False, **arguments)
    with_stock = _file_digests(tmp_path / "with")
    assert {k: v for k, v in with_stock.items() if not k.startswith("inventory")} == _file_digests(
        tmp_path / "without"
    )
    assert report.rows_by_source["inventory"] == 0
