"""Orders: creation from purchasing sessions and offline channels, life cycle and deliveries.

Web and app orders come from sessions that reached ``purchase`` (same customer, same
products, quantities and prices as the purchase events). Marketplace and store orders have
no clicks; together they are about a quarter of all orders. Guest checkouts have no
``customer_id``.

Each order gets its whole life cycle when it is created:

- ``created`` at ``order_ts``; card, PayPal, Klarna, voucher and cash orders are ``paid``
  seconds later, bank transfers within 6-72 h (15 % never pay and are ``cancelled`` after a
  week), cash-on-delivery orders skip ``paid``;
- 3.5 % are ``cancelled`` by the customer before shipping;
- ``shipped`` after a log-normal handling time (median 18 h), ``delivered`` 20-110 h later
  (two more days to the US and Great Britain);
- 7 % are ``returned`` 2-14 days after delivery (2 % in stores);
- store orders are ``paid`` and ``delivered`` at the till.

A delivery (``ingest_date=D``) holds every order created on ``D`` and every order whose
status changed on ``D``, in its state at the end of ``D`` (changes on the same day collapse),
with ``updated_at`` the time of the last change; all lines of such an order are re-sent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ecom_generator import _vocab
from ecom_generator._strings import (
    TS_NAIVE,
    TS_OFFSET,
    decimal_array,
    decimal_text,
    format_timestamps,
    padded_ids,
    pick,
    with_nulls,
)
from ecom_generator.catalogue import Catalogue, sample_products
from ecom_generator.clicks import APP, COUNTRY_CURRENCY, DayClicks
from ecom_generator.customers import (
    CITY_COUNTRY,
    CITY_START,
    Customers,
    city_names,
    country_codes,
    sample_cities,
    sample_countries,
)
from ecom_generator.fx import CURRENCIES
from ecom_generator.seasonality import HOURLY_STORE, HOURLY_WEEKDAY, DeliveryCalendar, sample_local_ms
from ecom_generator.tastes import Tastes

STATUSES: tuple[str, ...] = ("created", "paid", "shipped", "delivered", "cancelled", "returned")
CREATED, PAID, SHIPPED, DELIVERED, CANCELLED, RETURNED = range(6)
CHANNELS: tuple[str, ...] = ("web", "app", "marketplace", "store")
WEB, APP_CHANNEL, MARKETPLACE, STORE = range(4)
FIRST_ORDER_NUMBER = 5_000_001
#: Offline (marketplace + store) orders per web/app order.
OFFLINE_PER_ONLINE_ORDER = 1 / 3
STORE_SHARE_OF_OFFLINE = 0.4
COUPON_SHARE = 0.12
FREE_SHIPPING_FROM_EUR_CENTS = 4_900
SHIPPING_FEE_EUR_CENTS = 495
FAR_SHIPPING_FEE_EUR_CENTS = 995
GIFT_SHARE = 0.04

_HOUR = 3_600_000
_DAY = 24 * _HOUR
_NONE = np.iinfo(np.int64).max
_PAYMENT = {name: index for index, name in enumerate(_vocab.PAYMENT_TYPES)}
_FAR_COUNTRIES = np.array([country.code in ("US", "GB") for country in _vocab.COUNTRIES])
_STORE_COUNTRIES = np.array([country.code in _vocab.STORE_COUNTRIES for country in _vocab.COUNTRIES])


@dataclass(frozen=True)
class NewOrders:
    """Orders created on one day (before they get numbers); lines grouped by order.

    ``customer`` is -1 for guest checkouts; ``session`` is the click session of web/app
    orders and -1 for marketplace/store orders.
    """

    customer: np.ndarray
    order_ms: np.ndarray
    channel: np.ndarray
    currency: np.ndarray
    ship_country: np.ndarray
    ship_city: np.ndarray
    payment: np.ndarray
    fee_cents: np.ndarray
    session: np.ndarray
    line_order: np.ndarray
    line_product: np.ndarray
    line_quantity: np.ndarray
    line_unit_cents: np.ndarray
    line_discount_cents: np.ndarray


def _payments(rng: np.random.Generator, channel: np.ndarray) -> np.ndarray:
    payment = np.zeros(len(channel), dtype=np.int64)
    for index, name in enumerate(CHANNELS):
        rows = np.flatnonzero(channel == index)
        weights = np.array(_vocab.PAYMENT_WEIGHTS[name])
        payment[rows] = rng.choice(len(weights), size=len(rows), p=weights / weights.sum())
    return payment


def _finish(
    rng: np.random.Generator,
    *,
    customers: Customers,
    eur_per_unit: np.ndarray,
    customer: np.ndarray,
    order_ms: np.ndarray,
    channel: np.ndarray,
    country: np.ndarray,
    session: np.ndarray,
    line_order: np.ndarray,
    line_product: np.ndarray,
    line_quantity: np.ndarray,
    line_unit_cents: np.ndarray,
) -> NewOrders:
    """Add shipping address, payment, coupons and shipping fee to freshly drawn orders."""
    count = len(order_ms)
    known = customer >= 0
    home_city = customers.city[np.maximum(customer, 0)]
    gift = rng.random(count) < GIFT_SHARE
    ship_city = np.where(known & ~gift, home_city, sample_cities(rng, country))
    store = channel == STORE
    store_city = CITY_START[country] + rng.integers(0, 3, size=count)
    ship_city = np.where(store, store_city, ship_city)
    ship_country = CITY_COUNTRY[ship_city]
    currency = COUNTRY_CURRENCY[country]
    coupon = (channel <= APP_CHANNEL) & (rng.random(count) < COUPON_SHARE)
    percent = rng.choice([5, 10, 15, 20], size=count)
    gross = line_quantity * line_unit_cents
    line_discount = np.where(coupon[line_order], np.round(gross * percent[line_order] / 100), 0).astype(
        np.int64
    )
    net_local = np.bincount(line_order, weights=gross - line_discount, minlength=count)
    net_eur = net_local * eur_per_unit[currency]
    fee_eur = np.where(_FAR_COUNTRIES[ship_country], FAR_SHIPPING_FEE_EUR_CENTS, SHIPPING_FEE_EUR_CENTS)
    fee = np.where(
        store | (net_eur >= FREE_SHIPPING_FROM_EUR_CENTS), 0, np.round(fee_eur / eur_per_unit[currency])
    ).astype(np.int64)
    return NewOrders(
        customer=customer,
        order_ms=order_ms,
        channel=channel,
        currency=currency,
        ship_country=ship_country,
        ship_city=ship_city,
        payment=_payments(rng, channel),
        fee_cents=fee,
        session=session,
        line_order=line_order,
        line_product=line_product,
        line_quantity=line_quantity,
        line_unit_cents=line_unit_cents,
        line_discount_cents=line_discount,
    )


def online_orders(
    rng: np.random.Generator, clicks: DayClicks, customers: Customers, eur_per_unit: np.ndarray
) -> NewOrders:
    """The orders of the day's purchasing sessions (one line per ``purchase`` event)."""
    sessions = np.flatnonzero(clicks.session_purchase)
    lines = clicks.purchase_lines()
    line_order = np.searchsorted(sessions, clicks.event_session[lines])
    first_line = np.searchsorted(line_order, np.arange(len(sessions)))
    order_ms = clicks.event_ms[lines[first_line]] if len(lines) else np.zeros(0, dtype=np.int64)
    return _finish(
        rng,
        customers=customers,
        eur_per_unit=eur_per_unit,
        customer=clicks.session_customer[sessions],
        order_ms=(order_ms // 1000) * 1000,
        channel=np.where(clicks.session_platform[sessions] == APP, APP_CHANNEL, WEB),
        country=clicks.session_country[sessions],
        session=sessions,
        line_order=line_order,
        line_product=clicks.product[lines],
        line_quantity=clicks.quantity[lines],
        line_unit_cents=clicks.price_cents[lines],
    )


def offline_orders(
    rng: np.random.Generator,
    *,
    count: int,
    calendar: DeliveryCalendar,
    day_index: int,
    catalogue: Catalogue,
    sellable: np.ndarray,
    customers: Customers,
    eur_per_unit: np.ndarray,
    ghost_rate: float,
    hours: np.ndarray | None = None,
    tastes: Tastes | None = None,
    taste_rng: np.random.Generator | None = None,
) -> tuple[NewOrders, int]:
    """Marketplace and store orders of a day (stores are closed on Sundays).

    ``hours`` (a mask over the local hours) limits the orders to a batch of the day. With
    ``tastes`` (and their own random stream ``taste_rng``), registered customers' lines
    follow their tastes as their clicks do.

    Returns:
        The orders and how many of them were given a customer missing from the CRM.
    """
    window = 1.0 if hours is None else hours
    marketplace_hours = HOURLY_WEEKDAY * window
    store_hours = HOURLY_STORE * window
    store_open = calendar.dates[day_index].weekday() != 6 and store_hours.sum() > 0
    store = (rng.random(count) < STORE_SHARE_OF_OFFLINE) & store_open
    channel = np.where(store, STORE, MARKETPLACE)
    weights = customers.active_weights(day_index)
    store_weights = np.where(_STORE_COUNTRIES[customers.country], weights, 0.0)
    known = rng.random(count) < np.where(store, 0.8, 0.7)
    customer = np.full(count, -1, dtype=np.int64)
    for is_store, pool in ((False, weights), (True, store_weights)):
        rows = np.flatnonzero(known & (store == is_store))
        cumulative = np.cumsum(pool)
        if len(rows) and cumulative[-1] > 0:
            draws = np.searchsorted(cumulative, rng.random(len(rows)) * cumulative[-1], side="right")
            customer[rows] = np.minimum(draws, len(cumulative) - 1)
    local_ms = np.where(
        store,
        sample_local_ms(rng, count, store_hours if store_open else HOURLY_STORE),
        sample_local_ms(rng, count, marketplace_hours),
    )
    order_ms = ((calendar.start_ms(day_index) + local_ms) // 1000) * 1000
    signs_up_today = (customer >= 0) & (customers.signup_day[np.maximum(customer, 0)] == day_index)
    earliest = ((customers.signup_ms[np.maximum(customer, 0)] + 60_000) // 1000 + 1) * 1000
    order_ms = np.where(signs_up_today, np.maximum(order_ms, earliest), order_ms)
    ghosts = 0
    if ghost_rate > 0:
        candidates = np.flatnonzero((customer >= 0) & (rng.random(count) < ghost_rate))
        taken = customers.take_ghosts(rng, order_ms[candidates], day_index, calendar.days)
        customer[candidates[: len(taken)]] = taken
        ghosts = len(taken)
    guest_country = np.where(
        store,
        np.flatnonzero(_STORE_COUNTRIES)[rng.integers(0, int(_STORE_COUNTRIES.sum()), size=count)],
        sample_countries(rng, count),
    )
    country = np.where(customer >= 0, customers.country[np.maximum(customer, 0)], guest_country)
    lines_per_order = np.minimum(rng.geometric(0.55, size=count), 6)
    line_order = np.repeat(np.arange(count), lines_per_order)
    product = sample_products(rng, catalogue, sellable, len(line_order))
    if tastes is not None and taste_rng is not None:
        product = tastes.personalise(
            taste_rng, catalogue, sellable, product=product, customer=customer[line_order]
        )
    quantity = rng.choice([1, 2, 3], size=len(line_order), p=[0.85, 0.11, 0.04])
    currency = COUNTRY_CURRENCY[country]
    unit = np.round(catalogue.price_cents[product] / eur_per_unit[currency[line_order]]).astype(np.int64)
    orders = _finish(
        rng,
        customers=customers,
        eur_per_unit=eur_per_unit,
        customer=customer,
        order_ms=order_ms,
        channel=channel,
        country=country,
        session=np.full(count, -1, dtype=np.int64),
        line_order=line_order,
        line_product=product,
        line_quantity=quantity,
        line_unit_cents=unit,
    )
    return orders, ghosts


def _lifecycle(rng: np.random.Generator, orders: NewOrders) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every status change of new orders: (order position, time, status), unsorted."""
    count = len(orders.order_ms)
    t0 = orders.order_ms
    payment = orders.payment
    store = orders.channel == STORE
    immediate = np.isin(payment, [_PAYMENT[name] for name in ("card", "paypal", "klarna", "voucher", "cash")])
    deferred = payment == _PAYMENT["bank_transfer"]
    cash_on_delivery = payment == _PAYMENT["cash_on_delivery"]
    pays_transfer = deferred & (rng.random(count) < 0.85)
    paid = np.select(
        [immediate, pays_transfer],
        [t0 + rng.integers(5_000, 180_000, size=count), t0 + rng.integers(6 * _HOUR, 72 * _HOUR, size=count)],
        _NONE,
    )
    unpaid = deferred & ~pays_transfer
    changes_mind = ~store & ~unpaid & (rng.random(count) < 0.035)
    cancel_base = np.where(paid != _NONE, paid, t0)
    cancelled = np.select(
        [unpaid, changes_mind],
        [
            t0 + 7 * _DAY + rng.integers(0, 12 * _HOUR, size=count),
            cancel_base + rng.integers(_HOUR // 2, 20 * _HOUR, size=count),
        ],
        _NONE,
    )
    ships = ~store & ~unpaid & ~changes_mind & ((paid != _NONE) | cash_on_delivery)
    handling = np.clip(rng.lognormal(np.log(18 * _HOUR), 0.6, size=count), 2 * _HOUR, 96 * _HOUR).astype(
        np.int64
    )
    shipped = np.where(ships, np.where(cash_on_delivery, t0, paid) + handling, _NONE)
    transit = rng.integers(20 * _HOUR, 110 * _HOUR, size=count) + np.where(
        _FAR_COUNTRIES[orders.ship_country], 48 * _HOUR, 0
    )
    delivered = np.select(
        [ships, store], [shipped + transit, paid + rng.integers(30_000, 300_000, size=count)], _NONE
    )
    returns = (delivered != _NONE) & (rng.random(count) < np.where(store, 0.02, 0.07))
    returned = np.where(returns, delivered + rng.integers(2 * _DAY, 14 * _DAY, size=count), _NONE)
    times = np.stack([t0, paid, shipped, delivered, cancelled, returned])
    statuses = np.array([CREATED, PAID, SHIPPED, DELIVERED, CANCELLED, RETURNED])[:, None].repeat(
        count, axis=1
    )
    positions = np.arange(count)[None, :].repeat(6, axis=0)
    valid = times != _NONE
    return positions[valid], times[valid], statuses[valid]


class _Column:
    """A numpy column that grows by doubling (amortised O(1) appends)."""

    def __init__(self, dtype: type) -> None:
        self._data: np.ndarray = np.empty(1024, dtype=dtype)
        self.size = 0

    def extend(self, values: np.ndarray) -> None:
        needed = self.size + len(values)
        if needed > len(self._data):
            grown = np.empty(max(needed, 2 * len(self._data)), dtype=self._data.dtype)
            grown[: self.size] = self._data[: self.size]
            self._data = grown
        self._data[self.size : needed] = values
        self.size = needed

    @property
    def values(self) -> np.ndarray:
        return self._data[: self.size]


_ORDER_COLUMNS = (
    "number",
    "customer",
    "order_ms",
    "channel",
    "currency",
    "ship_country",
    "ship_city",
    "payment",
    "fee_cents",
    "line_start",
    "line_count",
)
_LINE_COLUMNS = ("product", "quantity", "unit_cents", "discount_cents", "line_no")


@dataclass(frozen=True)
class DueOrders:
    """Orders of one delivery: global order positions with their status and ``updated_at``."""

    orders: np.ndarray
    status: np.ndarray
    updated_ms: np.ndarray


class OrderBook:
    """Every order of the run, its lines and its not-yet-delivered status changes."""

    def __init__(self) -> None:
        self.orders = {name: _Column(np.int64) for name in _ORDER_COLUMNS}
        self.lines = {name: _Column(np.int64) for name in _LINE_COLUMNS}
        self._pending_order = np.zeros(0, dtype=np.int64)
        self._pending_ms = np.zeros(0, dtype=np.int64)
        self._pending_status = np.zeros(0, dtype=np.int64)

    @property
    def size(self) -> int:
        """Orders created so far."""
        return self.orders["number"].size

    def add(self, rng: np.random.Generator, new: NewOrders) -> np.ndarray:
        """Number and store a day's new orders, ordered by ``order_ts``, with their life cycle.

        Args:
            rng: Random stream of the day's orders.
            new: The day's new orders (lines grouped by order).

        Returns:
            The order number given to each order of ``new`` (in its original order).
        """
        count = len(new.order_ms)
        order = np.argsort(new.order_ms, kind="stable")
        rank = np.empty(count, dtype=np.int64)
        rank[order] = np.arange(count)
        first_number = FIRST_ORDER_NUMBER + self.size
        numbers = first_number + rank
        line_rank = rank[new.line_order]
        line_order = np.argsort(line_rank, kind="stable")
        sorted_rank = line_rank[line_order]
        line_count = np.bincount(sorted_rank, minlength=count)
        line_start_local = np.zeros(count, dtype=np.int64)
        np.cumsum(line_count[:-1], out=line_start_local[1:])
        line_no = np.arange(len(sorted_rank)) - line_start_local[sorted_rank] + 1
        base_line = self.lines["product"].size
        base_order = self.size
        columns = {
            "number": numbers[order],
            "customer": new.customer[order],
            "order_ms": new.order_ms[order],
            "channel": new.channel[order],
            "currency": new.currency[order],
            "ship_country": new.ship_country[order],
            "ship_city": new.ship_city[order],
            "payment": new.payment[order],
            "fee_cents": new.fee_cents[order],
            "line_start": base_line + line_start_local,
            "line_count": line_count,
        }
        for name, values in columns.items():
            self.orders[name].extend(values)
        for name, values in {
            "product": new.line_product[line_order],
            "quantity": new.line_quantity[line_order],
            "unit_cents": new.line_unit_cents[line_order],
            "discount_cents": new.line_discount_cents[line_order],
            "line_no": line_no,
        }.items():
            self.lines[name].extend(values)
        positions, times, statuses = _lifecycle(rng, new)
        self._pending_order = np.concatenate([self._pending_order, base_order + rank[positions]])
        self._pending_ms = np.concatenate([self._pending_ms, times])
        self._pending_status = np.concatenate([self._pending_status, statuses])
        return numbers

    def take_due(self, end_ms: int) -> DueOrders:
        """Remove and return the status changes delivered by a day ending at ``end_ms``.

        New orders are always in their creation day's delivery, even when bought just after
        midnight; later changes are delivered on the day they happen.
        """
        due = (self._pending_ms < end_ms) | (self._pending_status == CREATED)
        order, times, status = self._pending_order[due], self._pending_ms[due], self._pending_status[due]
        keep = ~due
        self._pending_order = self._pending_order[keep]
        self._pending_ms = self._pending_ms[keep]
        self._pending_status = self._pending_status[keep]
        ranking = np.lexsort((times, order))
        order, times, status = order[ranking], times[ranking], status[ranking]
        last = np.ones(len(order), dtype=bool)
        last[:-1] = order[1:] != order[:-1]
        return DueOrders(orders=order[last], status=status[last], updated_ms=times[last])

    def line_rows(self, orders: np.ndarray) -> np.ndarray:
        """Global line positions of all lines of the given orders, grouped by order."""
        start = self.orders["line_start"].values[orders]
        count = self.orders["line_count"].values[orders]
        offsets = np.repeat(start - np.concatenate([[0], np.cumsum(count)[:-1]]), count)
        return offsets + np.arange(int(count.sum()))

    def line_order_numbers(self, orders: np.ndarray) -> np.ndarray:
        """Order number of every line returned by :meth:`line_rows` for ``orders``."""
        count = self.orders["line_count"].values[orders]
        return np.repeat(self.orders["number"].values[orders], count)


def concat_orders(first: NewOrders, second: NewOrders) -> NewOrders:
    """The orders of ``first`` followed by those of ``second``."""
    shifted = second.line_order + len(first.order_ms)
    return NewOrders(
        **{
            name: np.concatenate(
                [getattr(first, name), shifted if name == "line_order" else getattr(second, name)]
            )
            for name in NewOrders.__dataclass_fields__
        }
    )


def render_orders(
    book: OrderBook,
    due: DueOrders,
    *,
    naive: np.ndarray,
    wrong_type: np.ndarray,
    with_coupon_column: bool,
    rng: np.random.Generator,
) -> pa.Table:
    """The ``orders`` delivery rows of due orders, with row defects applied.

    Args:
        book: All orders.
        due: The orders of the delivery with status and ``updated_at``.
        naive: Rows whose timestamps lose their offset (``naive_timestamp``).
        wrong_type: Rows with an unparseable ``shipping_fee`` or ``order_ts`` (``wrong_type``).
        with_coupon_column: Add the undocumented ``coupon_code`` column (``extra_column``).
        rng: Random stream for defect values.

    Returns:
        The table in contract column order.
    """
    orders = due.orders
    size = len(orders)
    value = {name: book.orders[name].values[orders] for name in _ORDER_COLUMNS}
    mode = np.where(naive, TS_NAIVE, TS_OFFSET)
    wrong_fee = wrong_type & (rng.random(size) < 0.5)
    wrong_ts = wrong_type & ~wrong_fee
    order_ts = format_timestamps(value["order_ms"], mode, millis=False)
    order_ts = pc.if_else(pa.array(wrong_ts), pa.scalar("31.02.2026 25:61"), order_ts)
    fee: pa.Array = decimal_array(value["fee_cents"], precision=12)
    if wrong_fee.any():
        fee = pc.if_else(pa.array(wrong_fee), pa.scalar("abc"), decimal_text(value["fee_cents"]))
    customer = value["customer"]
    columns: dict[str, pa.Array] = {
        "order_id": padded_ids("O", value["number"], 9),
        "customer_id": with_nulls(padded_ids("C", np.maximum(customer, 0) + 1, 7), customer >= 0),
        "order_status": pick(list(STATUSES), due.status),
        "order_ts": order_ts,
        "updated_at": format_timestamps(due.updated_ms, mode, millis=False),
        "currency": pick(list(CURRENCIES), value["currency"]),
        "channel": pick(list(CHANNELS), value["channel"]),
        "ship_country": country_codes(value["ship_country"]),
        "ship_city": city_names(value["ship_city"]),
        "payment_type": pick(list(_vocab.PAYMENT_TYPES), value["payment"]),
        "shipping_fee": fee,
    }
    if with_coupon_column:
        codes = pick(["SPRING10", "WELCOME5", "VIP20", "FREESHIP"], rng.integers(0, 4, size=size))
        columns["coupon_code"] = with_nulls(codes, rng.random(size) < 0.15)
    return pa.table(columns)


def render_items(
    book: OrderBook, orders: np.ndarray, *, wrong_type: np.ndarray, rng: np.random.Generator
) -> pa.Table:
    """The ``order_items`` delivery rows: every line of the given orders.

    Args:
        book: All orders.
        orders: Order positions of the delivery (as in :class:`DueOrders`).
        wrong_type: Per line, whether one of ``quantity``, ``unit_price`` or ``discount_amount``
            is unparseable text (``"two"``, ``"abc"``, ``"n/a"``).
        rng: Random stream for defect values.

    Returns:
        The table in contract column order.
    """
    rows = book.line_rows(orders)
    line = {name: book.lines[name].values[rows] for name in _LINE_COLUMNS}
    target = np.where(wrong_type, rng.integers(0, 3, size=len(rows)), -1)
    quantity: pa.Array = pa.array(line["quantity"], pa.int64())
    unit: pa.Array = decimal_array(line["unit_cents"], precision=12)
    discount: pa.Array = decimal_array(line["discount_cents"], precision=12)
    if (target == 0).any():
        quantity = pc.if_else(pa.array(target == 0), pa.scalar("two"), quantity.cast(pa.string()))
    if (target == 1).any():
        unit = pc.if_else(pa.array(target == 1), pa.scalar("abc"), decimal_text(line["unit_cents"]))
    if (target == 2).any():
        discount = pc.if_else(pa.array(target == 2), pa.scalar("n/a"), decimal_text(line["discount_cents"]))
    return pa.table(
        {
            "order_id": padded_ids("O", book.line_order_numbers(orders), 9),
            "line_no": pa.array(line["line_no"], pa.int64()),
            "product_id": padded_ids("P", line["product"] + 1, 6),
            "quantity": quantity,
            "unit_price": unit,
            "discount_amount": discount,
        }
    )
