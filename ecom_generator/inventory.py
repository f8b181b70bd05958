"""Stock: daily snapshots per product and warehouse that follow the generated orders.

Two warehouses hold every listed product: ``WH-WEST`` ships the orders to France, Great
Britain, the Netherlands and the United States, ``WH-CENTRAL`` all others. Each day:

1. a replenishment whose lead time has passed arrives (``incoming`` becomes ``on_hand``);
2. a product the catalogue takes out of stock (``is_active`` false, so the day's orders and
   clicks cannot buy it) has sold out: what was left is written off and ``on_hand`` and
   ``available`` are 0 until the product comes back, which it does when its replenishment
   arrives (early if need be). While it is out it sells nothing: zero sales, not zero demand;
3. backorders (``committed``: units sold when the shelf was empty) are served first, then
   the day's order lines (created that day, known products, positive quantities) take their
   units from the warehouse of their shipping country;
4. a reorder-point policy orders a replenishment when ``on_hand + incoming - committed``
   falls to the expected demand over the lead time plus two days and a safety margin; it
   arrives ``lead_time_days`` later (2-12 days, fixed per product and warehouse; one in ten
   has none delivered).

The snapshot of each warehouse is taken at 23:00 local time (with the Europe/Berlin offset)
and delivered the same day. ``available`` is ``on_hand`` less a damaged unit now and then.
Realism, even with ``defect_rate=0``: 3 % of the warehouse snapshots of a day (never the
first day) are never delivered, so a day without a snapshot is unknown, not zero stock.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ecom_generator import _vocab
from ecom_generator._strings import TS_NAIVE, TS_OFFSET, format_timestamps, padded_ids, pick
from ecom_generator.catalogue import UNKNOWN_PRODUCT_BASE, Catalogue

LOCATIONS: tuple[str, ...] = ("WH-CENTRAL", "WH-WEST")
WEST_COUNTRIES = ("FR", "GB", "NL", "US")
#: Expected share of units each warehouse ships (by the customers' country mix).
LOCATION_SHARE = np.array([0.65, 0.35])
LEAD_TIME_DAYS = (2, 12)
EMPTY_LEAD_TIME_SHARE = 0.1
MISSING_SNAPSHOT_SHARE = 0.03
DAMAGED_SHARE = 0.03
#: Units on lines per click event (about 1.6 % of events become an order line of ~1.2 units,
#: plus a third more offline orders): the first demand estimate, before sales correct it.
UNITS_PER_EVENT = 0.025
#: Days of demand a replenishment covers, and the smoothing of the demand estimate.
ORDER_COVER_DAYS = 21
DEMAND_SMOOTHING = 0.2
SNAPSHOT_HOURS_BEFORE_MIDNIGHT = 1  # snapshots at 23:00 local time (23:07 at the second warehouse)
COLUMNS = (
    "product_id", "location_id", "snapshot_ts", "on_hand", "available", "committed", "incoming",
    "lead_time_days",
)  # fmt: skip
_COUNT_COLUMNS = ("on_hand", "available", "committed", "incoming", "lead_time_days")
_WHOLE_NUMBER = r"^-?\d+$"
_WEST = np.array([country.code in WEST_COUNTRIES for country in _vocab.COUNTRIES])


def location_of_country(ship_country: np.ndarray) -> np.ndarray:
    """The warehouse index (into :data:`LOCATIONS`) that ships to each country index."""
    return _WEST[ship_country].astype(np.int64)


@dataclass
class Inventory:
    """Stock state of every product (rows) at every warehouse (columns) through the run."""

    on_hand: np.ndarray
    committed: np.ndarray
    incoming: np.ndarray
    arrival_day: np.ndarray  # day a pending replenishment arrives; -1 when none is on order
    lead_time: np.ndarray
    lead_time_delivered: np.ndarray  # False: the source leaves lead_time_days empty
    demand: np.ndarray  # smoothed units per day
    was_active: np.ndarray  # per product: active (in stock) the day before

    def advance(self, day_index: int, units: np.ndarray, active: np.ndarray) -> None:
        """Apply one day: receipts, sell-outs, backorders, the day's units and new replenishments.

        Args:
            day_index: The day.
            units: ``(products, locations)`` units ordered that day.
            active: Per product, whether it is listed and in stock (sellable) that day.
        """
        sellable = active[:, None]
        # A replenishment is received when due, but not while the product is out: its return
        # to stock is the catalogue's to decide, and it comes back with what arrived.
        comes_back = (active & ~self.was_active)[:, None]
        due = (self.arrival_day >= 0) & (self.arrival_day <= day_index) & sellable
        arrived = due | (comes_back & (self.arrival_day >= 0))
        self.on_hand = np.where(arrived, self.on_hand + self.incoming, self.on_hand)
        self.incoming = np.where(arrived, 0, self.incoming)
        self.arrival_day = np.where(arrived, -1, self.arrival_day)
        back_empty = comes_back & (self.on_hand <= 0)
        self.on_hand = np.where(back_empty, self._order_quantity(), self.on_hand)
        # Out of stock: sold out, the rest written off; a replenishment is on its way.
        out = ~sellable
        self.on_hand = np.where(out, 0, self.on_hand)
        self.committed = np.where(out, 0, self.committed)
        reorder_out = out & (self.arrival_day < 0)
        self._order(reorder_out, day_index)
        served = np.minimum(self.on_hand, self.committed)
        self.on_hand -= served
        self.committed -= served
        self.on_hand -= units
        self.committed += np.maximum(-self.on_hand, 0)
        self.on_hand = np.maximum(self.on_hand, 0)
        self.demand = np.where(
            sellable, (1 - DEMAND_SMOOTHING) * self.demand + DEMAND_SMOOTHING * units, self.demand
        )
        cover = self.demand * (self.lead_time + 2)
        reorder_point = cover + 1.65 * np.sqrt(cover)
        position = self.on_hand + self.incoming - self.committed
        self._order(sellable & (self.arrival_day < 0) & (position <= reorder_point), day_index)
        self.was_active = active.copy()

    def _order_quantity(self) -> np.ndarray:
        return np.maximum(np.ceil(self.demand * ORDER_COVER_DAYS), 5).astype(np.int64)

    def _order(self, mask: np.ndarray, day_index: int) -> None:
        self.incoming = np.where(mask, self._order_quantity(), self.incoming)
        self.arrival_day = np.where(mask, day_index + self.lead_time, self.arrival_day)


def build_inventory(
    rng: np.random.Generator, catalogue: Catalogue, *, target_events: int, days: int
) -> Inventory:
    """The opening stock of every product at every warehouse (10-30 days of expected demand).

    Args:
        rng: Random stream of the inventory.
        catalogue: The run's catalogue (popularity decides the expected demand).
        target_events: Click events of the run (the shop's volume).
        days: Days of the run.
    """
    share = catalogue.popularity / catalogue.popularity.sum()
    demand = share[:, None] * (UNITS_PER_EVENT * target_events / days) * LOCATION_SHARE[None, :]
    shape = demand.shape
    opening = np.ceil(demand * rng.uniform(10, 30, size=shape)).astype(np.int64) + rng.integers(
        3, 10, size=shape
    )
    return Inventory(
        on_hand=opening,
        committed=np.zeros(shape, dtype=np.int64),
        incoming=np.zeros(shape, dtype=np.int64),
        arrival_day=np.full(shape, -1, dtype=np.int64),
        lead_time=rng.integers(LEAD_TIME_DAYS[0], LEAD_TIME_DAYS[1] + 1, size=shape),
        lead_time_delivered=rng.random(shape) >= EMPTY_LEAD_TIME_SHARE,
        demand=demand,
        was_active=np.ones(catalogue.size, dtype=bool),
    )


def units_by_location(
    products: np.ndarray, quantities: np.ndarray, ship_country: np.ndarray, size: int
) -> np.ndarray:
    """``(size, locations)`` units of order lines (unknown products, non-positive quantities skipped)."""
    units = np.zeros((size, len(LOCATIONS)), dtype=np.int64)
    valid = (products >= 0) & (products < min(size, UNKNOWN_PRODUCT_BASE - 1)) & (quantities > 0)
    np.add.at(units, (products[valid], location_of_country(ship_country[valid])), quantities[valid])
    return units


@dataclass(frozen=True)
class InventoryDefects:
    """Per snapshot row, the defect it carries (masks from ``draw_defects``, never overlapping)."""

    wrong_type: np.ndarray
    negative_stock: np.ndarray
    unknown_product: np.ndarray
    duplicate_row: np.ndarray
    naive_timestamp: np.ndarray
    late_snapshot: np.ndarray


def snapshot_rows(
    rng: np.random.Generator, listed: np.ndarray, *, first_day: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The (product, location) pairs of the day's delivered snapshots: every listed product at
    every warehouse whose snapshot of the day was not lost (never on the first day)."""
    delivered = rng.random(len(LOCATIONS)) >= (0.0 if first_day else MISSING_SNAPSHOT_SHARE)
    products = np.flatnonzero(listed)
    product = np.repeat(products, len(LOCATIONS))
    location = np.tile(np.arange(len(LOCATIONS)), len(products))
    keep = delivered[location]
    return product[keep], location[keep]


def render_snapshots(
    inventory: Inventory,
    product: np.ndarray,
    location: np.ndarray,
    snapshot_ms: np.ndarray,
    *,
    defects: InventoryDefects,
    rng: np.random.Generator,
) -> pa.Table:
    """The snapshot rows (all columns text, in contract order) with their defects applied.

    Duplicated rows follow their original; late rows are included here and moved to a later
    delivery by the caller.
    """
    size = len(product)
    on_hand = inventory.on_hand[product, location]
    damaged = (on_hand >= 2) & (rng.random(size) < DAMAGED_SHARE)
    values = {
        "on_hand": on_hand,
        "available": on_hand - damaged,
        "committed": inventory.committed[product, location],
        "incoming": inventory.incoming[product, location],
    }
    text = {name: pa.array(column, pa.int64()).cast(pa.string()) for name, column in values.items()}
    lead = pa.array(inventory.lead_time[product, location], pa.int64()).cast(pa.string())
    text["lead_time_days"] = pc.if_else(
        pa.array(inventory.lead_time_delivered[product, location]), lead, pa.scalar(None, pa.string())
    )
    wrong_on_hand = defects.wrong_type & (rng.random(size) < 0.5)
    text["on_hand"] = pc.if_else(pa.array(wrong_on_hand), pa.scalar("n/a"), text["on_hand"])
    text["available"] = pc.if_else(
        pa.array(defects.wrong_type & ~wrong_on_hand), pa.scalar("12.5"), text["available"]
    )
    text["available"] = pc.if_else(pa.array(defects.negative_stock), pa.scalar("-3"), text["available"])
    unknown = UNKNOWN_PRODUCT_BASE + rng.integers(0, 99_999, size=size)
    product_number = np.where(defects.unknown_product, unknown, product + 1)
    mode = np.where(defects.naive_timestamp, TS_NAIVE, TS_OFFSET)
    table = pa.table(
        {
            "product_id": padded_ids("P", product_number, 6),
            "location_id": pick(list(LOCATIONS), location),
            "snapshot_ts": format_timestamps(snapshot_ms, mode, millis=False),
            **{name: text[name] for name in _COUNT_COLUMNS},
        }
    )
    copies = np.where(defects.duplicate_row, 2, 1)
    return table.take(pa.array(np.repeat(np.arange(size), copies)))


def as_delivered(table: pa.Table) -> pa.Table:
    """Count columns that hold whole numbers only are written as numbers (unquoted)."""
    columns = {}
    for name in table.column_names:
        column = table.column(name)
        if (
            name in _COUNT_COLUMNS
            and pc.all(
                pc.or_kleene(pc.is_null(column), pc.match_substring_regex(column, _WHOLE_NUMBER))
            ).as_py()
            is not False
        ):
            column = column.cast(pa.int64())
        columns[name] = column
    return pa.table(columns)
