"""The day-by-day driver that writes a whole synthetic landing zone."""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from ecom_generator.catalogue import UNKNOWN_PRODUCT_BASE, build_catalogue
from ecom_generator.clicks import (
    ADD_TO_CART,
    PRODUCT_VIEW,
    ClickDefects,
    ClickRenderer,
    DayClicks,
    build_visitors,
    simulate_clicks,
)
from ecom_generator.customers import build_customers, render_customers
from ecom_generator.defects import LATE_DAYS, DefectLedger, draw_defects, truncate_lines
from ecom_generator.fx import simulate_fx
from ecom_generator.inventory import (
    SNAPSHOT_HOURS_BEFORE_MIDNIGHT,
    InventoryDefects,
    as_delivered,
    build_inventory,
    render_snapshots,
    snapshot_rows,
    units_by_location,
)
from ecom_generator.orders import (
    OFFLINE_PER_ONLINE_ORDER,
    OrderBook,
    concat_orders,
    offline_orders,
    online_orders,
    render_items,
    render_orders,
)
from ecom_generator.scale import MEAN_EVENTS_PER_SESSION, shop_size
from ecom_generator.seasonality import build_calendar, hour_windows
from ecom_generator.tastes import build_tastes
from ecom_generator.writers import JsonLinesWriter, delivery_dir, write_csv, write_empty

SOURCES: tuple[str, ...] = (
    "orders",
    "order_items",
    "customers",
    "clicks",
    "catalogue",
    "fx_rates",
    "inventory",
)
#: Events rendered per chunk (bounds memory on big days).
RENDER_CHUNK_EVENTS = 50_000
#: Largest supported scale: customer ids have 7 digits, product ids 6 (900000+ are the unknown ones).
MAX_SCALE = 100
#: Days with more events are simulated in batches of consecutive hours (bounds memory).
BATCH_EVENTS = 400_000
#: Every ``PLAIN_CLICKS_EVERY``-th day (the 4th, 8th, ...) the tracker delivers uncompressed ``.jsonl``.
PLAIN_CLICKS_EVERY = 4
_OWN_FILE = re.compile(r"^(_\d+)?\.(csv|jsonl|jsonl\.gz)$")


@dataclass(frozen=True)
class GenerationReport:
    """What a generator run wrote.

    Attributes:
        landing: The landing-zone root.
        files: Every file written, in writing order.
        rows_by_source: Data rows written per source (defective and duplicate rows included).
        defects: Injected defect counts by kind (see ``DEFECT_KINDS``).
        seconds: Wall-clock duration of the run.
    """

    landing: Path
    files: tuple[Path, ...]
    rows_by_source: dict[str, int]
    defects: dict[str, int]
    seconds: float


class _Streams:
    """Independent, reproducible random streams per purpose and day (PCG64)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def rng(self, purpose: str, day: int = -1, batch: int = 0) -> np.random.Generator:
        key = zlib.crc32(purpose.encode("ascii"))
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, key, day + 1, batch])))


def _validate(start: dt.date, days: int, scale: float, seed: int, defect_rate: float) -> None:
    if not isinstance(start, dt.date) or isinstance(start, dt.datetime):
        raise ValueError(f"start must be a datetime.date, got {start!r}")
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValueError(f"days must be an integer >= 1, got {days!r}")
    if not isinstance(scale, int | float) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    if scale > MAX_SCALE:
        raise ValueError(f"scale must be <= {MAX_SCALE} (ids have fixed widths), got {scale!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if not isinstance(defect_rate, int | float) or not 0 <= defect_rate < 1:
        raise ValueError(f"defect_rate must be in [0, 1), got {defect_rate!r}")


def _remove_stale(folder: Path, prefix: str, keep: set[Path]) -> None:
    """Delete files of an earlier generator run in a delivery folder that this run did not write."""
    for path in folder.iterdir():
        if (
            path.is_file()
            and path.name.startswith(prefix)
            and _OWN_FILE.match(path.name[len(prefix) :])
            and path not in keep
        ):
            path.unlink()


@dataclass
class _Day:
    """Names of one delivery day."""

    index: int
    date_text: str
    stamp: str


class _Run:
    """State of one generator run: the simulated shop, the order book and what was written."""

    def __init__(
        self,
        root: Path,
        *,
        start: dt.date,
        days: int,
        scale: float,
        seed: int,
        defect_rate: float,
        base_currency: str,
        inventory: bool = True,
    ) -> None:
        self.root = root
        self.days = days
        self.seed = seed
        self.defect_rate = defect_rate
        self.size = shop_size(scale, days, defect_rate)
        self.streams = _Streams(seed)
        self.calendar = build_calendar(start, days, self.streams.rng("calendar"))
        self.fx = simulate_fx(self.streams.rng("fx"), days, base_currency)
        self.catalogue = build_catalogue(self.streams.rng("catalogue"), self.calendar, self.size.products)
        self.customers = build_customers(
            self.streams.rng("customers"),
            self.calendar,
            self.size.customers,
            self.size.new_customer_share,
            self.size.ghost_customers,
        )
        self.tastes = build_tastes(self.streams.rng("tastes"), self.catalogue, self.customers.size)
        self.visitors = build_visitors(self.streams.rng("visitors"), self.size.visitors)
        # Its own streams: the other sources' bytes do not depend on whether stock is generated.
        self.inventory = (
            build_inventory(
                self.streams.rng("inventory"),
                self.catalogue,
                target_events=self.size.target_events,
                days=days,
            )
            if inventory
            else None
        )
        self.late_snapshots: dict[int, list[pa.Table]] = defaultdict(list)
        self.book = OrderBook()
        self.ledger = DefectLedger()
        self.rows: Counter[str] = Counter(dict.fromkeys(SOURCES, 0))
        self.files: list[Path] = []
        self.late_lines: dict[int, list[pa.Array]] = defaultdict(list)
        run_rng = self.streams.rng("run-defects")
        self.extra_column_day = int(run_rng.integers(0, days)) if defect_rate > 0 else -1
        self.empty_file_day = int(run_rng.integers(1, days)) if defect_rate > 0 and days >= 3 else -1
        self.empty_file_source = str(run_rng.choice(["orders", "order_items", "customers", "clicks"]))

    def path(self, source: str, day: _Day, suffix: str) -> Path:
        """``<root>/<source>/ingest_date=<date>/<source>_<yyyymmdd><suffix>`` (folder created)."""
        return delivery_dir(self.root, source, day.date_text) / f"{source}_{day.stamp}{suffix}"

    def count(self, masks: dict[str, np.ndarray]) -> None:
        """Add drawn defects to the ledger."""
        for kind, mask in masks.items():
            self.ledger[kind] += int(mask.sum())

    def run_day(self, day: _Day) -> str:
        """Simulate and write one delivery day; returns a progress line."""
        defect_rng = self.streams.rng("defects", day.index)
        orders_before = self.book.size
        self.catalogue.advance(self.streams.rng("catalogue", day.index), self.calendar, day.index)
        changed = self.customers.advance(self.streams.rng("customers", day.index), self.calendar, day.index)
        self.tastes.drift(self.streams.rng("taste-drift", day.index), self.catalogue)
        hourly = self.calendar.hourly(day.index)
        day_events = self.size.target_events * self.calendar.weights[day.index]
        compress = (day.index + 1) % PLAIN_CLICKS_EVERY != 0
        clicks_path = self.path("clicks", day, ".jsonl.gz" if compress else ".jsonl")
        events = 0
        with JsonLinesWriter(clicks_path, compress=compress) as writer:
            windows = hour_windows(hourly, max(1, math.ceil(day_events / BATCH_EVENTS)))
            for batch, hours in enumerate(windows):
                clicks = simulate_clicks(
                    self.streams.rng("clicks", day.index, batch),
                    calendar=self.calendar,
                    day_index=day.index,
                    target_events=day_events * hourly[hours].sum() / hourly.sum(),
                    mean_events_per_session=MEAN_EVENTS_PER_SESSION,
                    catalogue=self.catalogue,
                    customers=self.customers,
                    visitors=self.visitors,
                    eur_per_unit=self.fx.eur_per_unit[day.index],
                    ghost_rate=self.defect_rate,
                    hours=hours,
                    batch=batch,
                    tastes=self.tastes,
                    taste_rng=self.streams.rng("tastes", day.index, batch),
                )
                order_of_session = self.create_orders(day, batch, clicks, hours, defect_rng)
                self.write_clicks(writer, day, clicks, order_of_session, defect_rng)
                events += clicks.events
            if self.late_lines.get(day.index):
                writer.write(pa.concat_arrays(self.late_lines.pop(day.index)))
        self.rows["clicks"] += writer.rows
        written = [clicks_path, *self.write_orders(day, defect_rng)]
        written.append(self.write_customers(day, changed, defect_rng))
        written += self.write_reference(day)
        if self.inventory is not None:
            written.append(self.write_inventory(day, orders_before))
        if day.index == self.empty_file_day:
            extension = ".jsonl" if self.empty_file_source == "clicks" else ".csv"
            empty = self.path(self.empty_file_source, day, f"_2{extension}")
            write_empty(empty)
            written.append(empty)
            self.ledger["empty_file"] += 1
        for source in SOURCES:
            folder = delivery_dir(self.root, source, day.date_text)
            _remove_stale(folder, f"{source}_{day.stamp}", set(written))
        self.files.extend(written)
        return (
            f"{day.date_text} ({day.index + 1}/{self.days}): {events:,} click events, "
            f"{self.book.size:,} orders so far, {int(self.catalogue.listed(day.index).sum()):,} products"
        )

    def create_orders(
        self,
        day: _Day,
        batch: int,
        clicks: DayClicks,
        hours: np.ndarray,
        defect_rng: np.random.Generator,
    ) -> np.ndarray:
        """Book the batch's web/app and marketplace/store orders; returns the order number per session."""
        order_rng = self.streams.rng("orders", day.index, batch)
        eur_per_unit = self.fx.eur_per_unit[day.index]
        online = online_orders(order_rng, clicks, self.customers, eur_per_unit)
        offline, offline_ghosts = offline_orders(
            order_rng,
            count=int(order_rng.poisson(len(online.order_ms) * OFFLINE_PER_ONLINE_ORDER)),
            calendar=self.calendar,
            day_index=day.index,
            catalogue=self.catalogue,
            sellable=self.catalogue.sellable(day.index),
            customers=self.customers,
            eur_per_unit=eur_per_unit,
            ghost_rate=self.defect_rate,
            hours=hours,
            tastes=self.tastes,
            taste_rng=self.streams.rng("taste-orders", day.index, batch),
        )
        self.ledger["customer_not_in_crm"] += clicks.ghost_sessions + offline_ghosts
        first_line = self.book.lines["product"].size
        numbers = self.book.add(order_rng, concat_orders(online, offline))
        # Line defects belong to the source system's data: every re-send of the order repeats them.
        products = self.book.lines["product"].values[first_line:]
        quantities = self.book.lines["quantity"].values[first_line:]
        kinds: dict[str, np.ndarray | bool] = {"non_positive_quantity": True, "unknown_product": True}
        masks = draw_defects(defect_rng, self.defect_rate, len(products), kinds)
        unknown = masks["unknown_product"]
        products[unknown] = UNKNOWN_PRODUCT_BASE - 1 + defect_rng.integers(0, 99_999, size=int(unknown.sum()))
        bad_quantity = masks["non_positive_quantity"]
        quantities[bad_quantity] = defect_rng.integers(-1, 1, size=int(bad_quantity.sum()))
        self.count(masks)
        order_of_session = np.full(len(clicks.session_customer), -1, dtype=np.int64)
        order_of_session[online.session] = numbers[: len(online.order_ms)]
        return order_of_session

    def write_clicks(
        self,
        writer: JsonLinesWriter,
        day: _Day,
        clicks: DayClicks,
        order_of_session: np.ndarray,
        defect_rng: np.random.Generator,
    ) -> None:
        """Write a batch of click events in time order; late events and late copies wait for their day."""
        events = clicks.events
        can_be_late = day.index + LATE_DAYS[0] <= self.days - 1
        is_cart = clicks.event_type == ADD_TO_CART
        masks = draw_defects(
            defect_rng,
            self.defect_rate,
            events,
            {
                "malformed_json": True,
                "duplicate_event": True,
                "late_duplicate_event": can_be_late,
                "late_event": can_be_late,
                "wrong_type": is_cart,
                "non_positive_quantity": is_cart,
                "unknown_product": clicks.event_type == PRODUCT_VIEW,
                "extra_field": True,
            },
        )
        self.count(masks)
        content_defects = ClickDefects(
            wrong_type=masks["wrong_type"],
            wrong_quantity=defect_rng.random(events) < 0.5,
            non_positive_quantity=masks["non_positive_quantity"],
            bad_quantity=defect_rng.integers(-1, 1, size=events),
            unknown_product=masks["unknown_product"],
            unknown_number=UNKNOWN_PRODUCT_BASE + defect_rng.integers(0, 99_999, size=events),
            extra_field=masks["extra_field"],
        )
        arrives_on = np.minimum(
            day.index + defect_rng.integers(LATE_DAYS[0], LATE_DAYS[1] + 1, size=events), self.days - 1
        )
        renderer = ClickRenderer(
            clicks,
            catalogue=self.catalogue,
            calendar=self.calendar,
            seed=self.seed,
            order_number_of_session=order_of_session,
            defects=content_defects,
        )
        in_time_order = np.argsort(clicks.event_ms, kind="stable")
        for chunk in np.array_split(in_time_order, max(1, math.ceil(events / RENDER_CHUNK_EVENTS))):
            lines = renderer.render(chunk)
            lines = truncate_lines(lines, np.flatnonzero(masks["malformed_json"][chunk]), defect_rng)
            late = masks["late_event"][chunk]
            copies = np.where(late, 0, np.where(masks["duplicate_event"][chunk], 2, 1))
            writer.write(lines.take(pa.array(np.repeat(np.arange(len(chunk)), copies))))
            delayed = np.flatnonzero(late | masks["late_duplicate_event"][chunk])
            target_day = arrives_on[chunk[delayed]]
            for target in np.unique(target_day):
                self.late_lines[int(target)].append(lines.take(pa.array(delayed[target_day == target])))

    def write_orders(self, day: _Day, defect_rng: np.random.Generator) -> list[Path]:
        """Write the orders created or changed on the day, and all lines of those orders."""
        due = self.book.take_due(self.calendar.end_ms(day.index))
        order_masks = draw_defects(
            defect_rng, self.defect_rate, len(due.orders), {"naive_timestamp": True, "wrong_type": True}
        )
        with_coupon_column = day.index == self.extra_column_day
        orders = render_orders(
            self.book,
            due,
            naive=order_masks["naive_timestamp"],
            wrong_type=order_masks["wrong_type"],
            with_coupon_column=with_coupon_column,
            rng=defect_rng,
        )
        self.ledger["extra_column"] += int(with_coupon_column)
        line_count = int(self.book.orders["line_count"].values[due.orders].sum())
        item_masks = draw_defects(defect_rng, self.defect_rate, line_count, {"wrong_type": True})
        items = render_items(self.book, due.orders, wrong_type=item_masks["wrong_type"], rng=defect_rng)
        self.count(order_masks)
        self.count(item_masks)
        paths = []
        for source, table in (("orders", orders), ("order_items", items)):
            path = self.path(source, day, ".csv")
            self.rows[source] += write_csv(path, table)
            paths.append(path)
        return paths

    def write_customers(self, day: _Day, changed: np.ndarray, defect_rng: np.random.Generator) -> Path:
        """Write the day's CRM delivery: first deliveries of customers and changed customers."""
        rows = self.customers.delivery_rows(day.index, changed)
        masks = draw_defects(defect_rng, self.defect_rate, len(rows), {"wrong_type": True})
        table = render_customers(self.customers, rows, wrong_type=masks["wrong_type"], rng=defect_rng)
        self.count(masks)
        path = self.path("customers", day, ".csv")
        self.rows["customers"] += write_csv(path, table)
        return path

    def write_inventory(self, day: _Day, orders_before: int) -> Path:
        """Move the stock by the day's new order lines and write the day's snapshots.

        Late snapshot rows wait for a later delivery; rows that arrive late today are appended.
        """
        assert self.inventory is not None
        positions = np.arange(orders_before, self.book.size)
        lines = self.book.line_rows(positions)
        line_counts = self.book.orders["line_count"].values[positions]
        units = units_by_location(
            self.book.lines["product"].values[lines],
            self.book.lines["quantity"].values[lines],
            np.repeat(self.book.orders["ship_country"].values[positions], line_counts),
            self.catalogue.size,
        )
        listed = self.catalogue.listed(day.index)
        self.inventory.advance(day.index, units, listed & self.catalogue.is_active)
        rng = self.streams.rng("inventory", day.index)
        product, location = snapshot_rows(rng, listed, first_day=day.index == 0)
        # 23:00 local: an hour before the next local midnight, also on 23- and 25-hour days.
        closing = self.calendar.end_ms(day.index) - SNAPSHOT_HOURS_BEFORE_MIDNIGHT * 3_600_000
        snapshot_ms = closing + location * 7 * 60_000
        masks = draw_defects(
            rng,
            self.defect_rate,
            len(product),
            {
                "wrong_type": True,
                "negative_stock": True,
                "unknown_product": True,
                "duplicate_row": True,
                "naive_timestamp": True,
                "late_snapshot": day.index + 1 <= self.days - 1,
            },
        )
        self.count(masks)
        table = render_snapshots(
            self.inventory, product, location, snapshot_ms, defects=InventoryDefects(**masks), rng=rng
        )
        copies = np.where(masks["duplicate_row"], 2, 1)
        late = np.repeat(masks["late_snapshot"], copies)
        arrives = np.repeat(
            np.minimum(day.index + rng.integers(1, 3, size=len(product)), self.days - 1), copies
        )
        for target in np.unique(arrives[late]):
            self.late_snapshots[int(target)].append(table.filter(pa.array(late & (arrives == target))))
        delivered = pa.concat_tables([table.filter(pa.array(~late)), *self.late_snapshots.pop(day.index, [])])
        path = self.path("inventory", day, ".csv")
        self.rows["inventory"] += write_csv(path, as_delivered(delivered))
        return path

    def write_reference(self, day: _Day) -> list[Path]:
        """Write the catalogue snapshot and the reference rates of the day."""
        catalogue_path = self.path("catalogue", day, ".jsonl")
        with JsonLinesWriter(catalogue_path, compress=False) as writer:
            writer.write(self.catalogue.snapshot_lines(day.index))
        self.rows["catalogue"] += writer.rows
        fx_path = self.path("fx_rates", day, ".csv")
        self.rows["fx_rates"] += write_csv(fx_path, self.fx.table(day.index, day.date_text))
        return [catalogue_path, fx_path]


def generate_landing(
    landing: str | os.PathLike[str],
    *,
    start: dt.date,
    days: int,
    scale: float,
    seed: int,
    defect_rate: float = 0.003,
    base_currency: str = "EUR",
    progress: Callable[[str], None] | None = None,
    inventory: bool = True,
) -> GenerationReport:
    """Write ``days`` daily deliveries of every source into a landing zone.

    The output is ``<landing>/<source>/ingest_date=YYYY-MM-DD/<source>_YYYYMMDD.<ext>`` for
    orders, order_items, customers, fx_rates, inventory (CSV), clicks (JSON Lines, gzip on most
    days) and catalogue (JSON Lines, a full snapshot each day). Identical arguments give identical
    bytes; re-running into an existing landing zone overwrites the same files (and removes
    files of this generator's naming that the run did not write).

    Args:
        landing: Landing-zone root (created if missing).
        start: First delivery date (a local day in Europe/Berlin).
        days: Number of daily deliveries, >= 1.
        scale: Volume; 1.0 is about one million click events over the whole run.
        seed: Seed of every random stream, >= 0.
        defect_rate: Probability of each defect kind per eligible row, in [0, 1); 0 gives clean data.
        base_currency: Currency of ``fx_rates.rate_to_base`` (EUR, USD, GBP, SEK, PLN or CHF).
        progress: Called with one line of text per finished day.
        inventory: Also write the stock snapshots (``inventory``); False for a shop without
            them. The other sources' bytes are the same either way.

    Returns:
        The files written, row counts per source, defect counts and the duration.

    Raises:
        ValueError: On a ``start`` that is not a date, days < 1, scale <= 0 or > 100, seed < 0,
            defect_rate outside [0, 1) or an unknown base currency.
    """
    _validate(start, days, scale, seed, defect_rate)
    began = time.perf_counter()
    run = _Run(
        Path(landing),
        start=start,
        days=days,
        scale=scale,
        seed=seed,
        defect_rate=defect_rate,
        base_currency=base_currency,
        inventory=inventory,
    )
    for index, date in enumerate(run.calendar.dates):
        message = run.run_day(_Day(index=index, date_text=date.isoformat(), stamp=date.strftime("%Y%m%d")))
        if progress is not None:
            progress(f"{message} ({time.perf_counter() - began:.1f}s)")
    return GenerationReport(
        landing=run.root,
        files=tuple(run.files),
        rows_by_source=dict(run.rows),
        defects=run.ledger.as_dict(),
        seconds=time.perf_counter() - began,
    )
