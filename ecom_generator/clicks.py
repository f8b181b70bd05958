"""Click-stream sessions that walk the purchase funnel, and their JSON Lines rendering.

A session belongs to a registered customer (30 % logged in from the first event, 12 %
logging in mid-session, at the latest at checkout) or to an anonymous visitor (58 %). It
lands on the home page, a search or a product page, browses a geometric number of pages
(mean 3.6), and may add products it viewed to the cart (more likely for high-value
customers), remove one again, begin checkout and purchase. A purchase emits one
``purchase`` event per order line, all carrying the order's ``order_id``. Gaps between
events are log-normal (median 25 s). Web sessions carry the Europe/Berlin offset in
``event_ts``, app sessions UTC (``Z``). Some sessions (8 % on web, 1 % in the app) come
from an old tracker version without ``session_id``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ecom_generator import _vocab
from ecom_generator._strings import (
    TS_OFFSET,
    TS_UTC,
    decimal_text,
    format_timestamps,
    hash_keys,
    padded_ids,
    pick,
    scatter,
    unit_interval,
    uuid_strings,
    with_nulls,
)
from ecom_generator.catalogue import Catalogue, sample_products
from ecom_generator.customers import Customers, sample_countries
from ecom_generator.fx import CURRENCIES
from ecom_generator.seasonality import DeliveryCalendar, sample_local_ms
from ecom_generator.tastes import Tastes

EVENT_TYPES: tuple[str, ...] = (
    "page_view",
    "product_view",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "begin_checkout",
    "purchase",
)
PAGE_VIEW, PRODUCT_VIEW, SEARCH, ADD_TO_CART, REMOVE_FROM_CART, BEGIN_CHECKOUT, PURCHASE = range(7)
WEB, APP = 0, 1

LOGGED_IN_SHARE = 0.30
LOGIN_MID_SESSION_SHARE = 0.12
MISSING_SESSION_ID = (0.08, 0.01)  # web, app
BROWSE_STOP = 0.28
CART_RATE_CUSTOMER = 0.24  # times the customer's value factor
CART_RATE_ANONYMOUS = 0.06
CHECKOUT_RATE = (0.42, 0.55)  # anonymous, customer
PURCHASE_RATE = (0.62, 0.78)

_SALT_DEVICE = 0x51A7
_SALT_VISITOR = 0x7151
_SALT_SESSION = 0x5E55
_SALT_EVENT = 0xE7E7

COUNTRY_CURRENCY = np.array([CURRENCIES.index(country.currency) for country in _vocab.COUNTRIES])
_PROFILE_CUMULATIVE = np.cumsum([profile.weight for profile in _vocab.DEVICE_PROFILES])
_PROFILE_CUMULATIVE = _PROFILE_CUMULATIVE / _PROFILE_CUMULATIVE[-1]
_PROFILE_PLATFORM = np.array([WEB if p.platform == "web" else APP for p in _vocab.DEVICE_PROFILES])
_DEVICE_OBJECTS = [
    "{"
    + ",".join(
        f'"{key}":"{value}"'
        for key, value in (("type", p.type), ("os", p.os), ("browser", p.browser))
        if value
    )
    + "}"
    for p in _vocab.DEVICE_PROFILES
]
_DEVICE_JSON = [',"device":' + device for device in _DEVICE_OBJECTS]
_EVENT_TYPE_JSON = [f'"event_type":"{name}"' for name in EVENT_TYPES]
_EXTRA_FIELD_JSON = ',"ab_test":{"name":"checkout_v2","variant":"B"}'
_HOSTS = ["https://www.shop.example", "app://shop"]


@dataclass(frozen=True)
class Visitors:
    """Anonymous visitors (cookies) who never log in: a country and a visit weight each."""

    country: np.ndarray
    cumulative_weight: np.ndarray


def build_visitors(rng: np.random.Generator, size: int) -> Visitors:
    """Create the anonymous visitor pool (log-normal visit weights: many one-off visitors)."""
    return Visitors(
        country=sample_countries(rng, size),
        cumulative_weight=np.cumsum(rng.lognormal(0.0, 1.0, size=size)),
    )


def _weighted(rng: np.random.Generator, cumulative: np.ndarray, size: int) -> np.ndarray:
    return np.minimum(
        np.searchsorted(cumulative, rng.random(size) * cumulative[-1], side="right"), len(cumulative) - 1
    )


def _traffic_json(calendar: DeliveryCalendar, day_index: int) -> tuple[list[str | None], list[str | None]]:
    """The ``,"utm":{...}`` JSON fragment and the referrer of every traffic source on a day."""
    date = calendar.dates[day_index]
    iso = date.isocalendar()
    season = ("winter", "spring", "summer", "autumn")[(date.month % 12) // 3]
    names = {
        "week": f"{iso.year}w{iso.week:02d}",
        "season": season,
        "year": str(date.year),
        "quarter": f"{date.year}q{(date.month - 1) // 3 + 1}",
    }
    utm: list[str | None] = []
    for source in _vocab.TRAFFIC_SOURCES:
        if source.source is None:
            utm.append(None)
            continue
        campaign = (source.campaign or "").format(**names)
        utm.append(
            f',"utm":{{"source":"{source.source}","medium":"{source.medium}","campaign":"{campaign}"}}'
        )
    return utm, [source.referrer for source in _vocab.TRAFFIC_SOURCES]


@dataclass
class DayClicks:
    """One day's sessions and events, before ids of orders and defects are attached.

    Session arrays have one row per session; event arrays one row per event, grouped by
    session in funnel order. ``product`` is -1, ``quantity`` 0 and ``price_cents`` -1 where
    the event has none.
    """

    day_index: int
    batch: int
    session_customer: np.ndarray
    session_country: np.ndarray
    session_currency: np.ndarray
    session_platform: np.ndarray
    session_profile: np.ndarray
    session_traffic: np.ndarray
    session_anonymous_key: np.ndarray
    session_has_id: np.ndarray
    session_purchase: np.ndarray
    session_login_pos: np.ndarray
    event_session: np.ndarray
    event_pos: np.ndarray
    event_type: np.ndarray
    event_ms: np.ndarray
    product: np.ndarray
    quantity: np.ndarray
    price_cents: np.ndarray
    ghost_sessions: int

    @property
    def events(self) -> int:
        """Events of the day."""
        return len(self.event_type)

    def purchase_lines(self) -> np.ndarray:
        """Indices of the ``purchase`` events (one per order line), grouped by session."""
        return np.flatnonzero(self.event_type == PURCHASE)


def simulate_clicks(
    rng: np.random.Generator,
    *,
    calendar: DeliveryCalendar,
    day_index: int,
    target_events: float,
    mean_events_per_session: float,
    catalogue: Catalogue,
    customers: Customers,
    visitors: Visitors,
    eur_per_unit: np.ndarray,
    ghost_rate: float,
    hours: np.ndarray | None = None,
    batch: int = 0,
    tastes: Tastes | None = None,
    taste_rng: np.random.Generator | None = None,
) -> DayClicks:
    """Simulate one day of sessions walking the funnel.

    Args:
        rng: Random stream of the day's clicks.
        calendar: The run's days.
        day_index: The day to simulate.
        target_events: Expected events of the day.
        mean_events_per_session: Calibrated mean session length (sets the number of sessions).
        catalogue: Catalogue state of the day (sellable products and prices).
        customers: Customer population (activity, churn, devices).
        visitors: Anonymous visitor pool.
        eur_per_unit: The day's EUR value of one unit of each currency.
        ghost_rate: Share of purchasing customer sessions re-assigned to a brand-new customer
            whose CRM record arrives late or never (the ``customer_not_in_crm`` defect).
        hours: Local hours (a mask over 0-23) the sessions start in; all hours by default.
            Big days are simulated in several batches of hours to bound memory.
        batch: Number of the batch within the day (part of the id salts).
        tastes: Customers' tastes and bundles; None draws every product from overall popularity.
        taste_rng: The tastes' own random stream of the batch (with ``tastes``).

    Returns:
        The day's sessions and events.
    """
    sessions = int(rng.poisson(target_events / mean_events_per_session))
    weights = customers.active_weights(day_index)
    customer_cumulative = np.cumsum(weights)
    kind_draw = rng.random(sessions)
    has_customers = len(customer_cumulative) > 0 and customer_cumulative[-1] > 0
    known = (kind_draw < LOGGED_IN_SHARE + LOGIN_MID_SESSION_SHARE) & has_customers
    logs_in_late = known & (kind_draw >= LOGGED_IN_SHARE)
    customer = np.full(sessions, -1, dtype=np.int64)
    if has_customers:
        customer[known] = _weighted(rng, customer_cumulative, int(known.sum()))
    visitor = np.where(known, -1, _weighted(rng, visitors.cumulative_weight, sessions))

    hourly = calendar.hourly(day_index) * (1.0 if hours is None else hours)
    start_ms = calendar.start_ms(day_index) + sample_local_ms(rng, sessions, hourly)
    signs_up_today = known & (customers.signup_day[np.maximum(customer, 0)] == day_index)
    start_ms = np.where(
        signs_up_today, np.maximum(start_ms, customers.signup_ms[np.maximum(customer, 0)] + 60_000), start_ms
    )

    # The funnel: browse, cart, remove, checkout, purchase.
    sellable = catalogue.sellable(day_index)
    if len(sellable) == 0:
        sellable = np.arange(catalogue.size)
    browse = np.minimum(rng.geometric(BROWSE_STOP, size=sessions), 40)
    value = np.where(known, customers.value[np.maximum(customer, 0)], 1.0)
    cart_rate = np.where(known, np.clip(CART_RATE_CUSTOMER * value, 0.02, 0.6), CART_RATE_ANONYMOUS)
    has_cart = rng.random(sessions) < cart_rate
    cart = np.where(has_cart, np.minimum(np.minimum(rng.geometric(0.55, size=sessions), 5), browse), 0)
    remove = ((cart >= 2) & (rng.random(sessions) < 0.2)).astype(np.int64)
    checkout = has_cart & (rng.random(sessions) < np.where(known, CHECKOUT_RATE[1], CHECKOUT_RATE[0]))
    purchase = checkout & (rng.random(sessions) < np.where(known, PURCHASE_RATE[1], PURCHASE_RATE[0]))
    lines = np.where(purchase, cart - remove, 0)
    events_per_session = 1 + browse + cart + remove + checkout + lines

    # A purchasing customer session may belong to a brand-new customer missing from the CRM.
    ghost_sessions = 0
    if ghost_rate > 0:
        candidates = np.flatnonzero(purchase & known & (rng.random(sessions) < ghost_rate))
        ghosts = customers.take_ghosts(rng, start_ms[candidates], day_index, calendar.days)
        customer[candidates[: len(ghosts)]] = ghosts
        logs_in_late[candidates[: len(ghosts)]] = False
        ghost_sessions = len(ghosts)

    safe_customer = np.maximum(customer, 0)
    device_slot = rng.integers(0, 3, size=sessions) % customers.devices[safe_customer]
    anonymous_key = np.where(
        known,
        hash_keys(_SALT_DEVICE, safe_customer, device_slot),
        hash_keys(_SALT_VISITOR, np.maximum(visitor, 0)),
    )
    profile = np.searchsorted(_PROFILE_CUMULATIVE, unit_interval(hash_keys(3, anonymous_key)), side="right")
    profile = np.minimum(profile, len(_PROFILE_CUMULATIVE) - 1)
    platform = _PROFILE_PLATFORM[profile]
    country = np.where(known, customers.country[safe_customer], visitors.country[np.maximum(visitor, 0)])
    traffic_weights = np.array([source.weight for source in _vocab.TRAFFIC_SOURCES])
    traffic = rng.choice(len(traffic_weights), size=sessions, p=traffic_weights / traffic_weights.sum())
    has_id = rng.random(sessions) >= np.where(platform == WEB, MISSING_SESSION_ID[0], MISSING_SESSION_ID[1])

    checkout_pos = 1 + browse + cart + remove
    login_any = 1 + np.floor(rng.random(sessions) * np.maximum(events_per_session - 1, 1)).astype(np.int64)
    login_checkout = 1 + np.floor(rng.random(sessions) * checkout_pos).astype(np.int64)
    login_pos = np.where(
        known,
        np.where(logs_in_late, np.where(purchase, np.minimum(login_checkout, checkout_pos), login_any), 0),
        events_per_session,
    )

    # Events: one row per event, grouped by session, in funnel order.
    total = int(events_per_session.sum())
    session_of = np.repeat(np.arange(sessions), events_per_session)
    first = np.zeros(sessions, dtype=np.int64)
    np.cumsum(events_per_session[:-1], out=first[1:])
    pos = np.arange(total) - first[session_of]
    browse_end = (1 + browse)[session_of]
    cart_end = browse_end + cart[session_of]
    remove_end = cart_end + remove[session_of]
    checkout_end = remove_end + checkout[session_of]

    landing = rng.choice(3, size=total, p=[0.5, 0.2, 0.3])
    browsing = rng.choice(3, size=total, p=[0.12, 0.2, 0.68])
    cart_source = (pos >= 1) & (pos - 1 < cart[session_of])
    event_type = np.select(
        [pos == 0, pos < browse_end, pos < cart_end, pos < remove_end, pos < checkout_end],
        [
            np.array([PAGE_VIEW, SEARCH, PRODUCT_VIEW])[landing],
            np.where(cart_source, PRODUCT_VIEW, np.array([PAGE_VIEW, SEARCH, PRODUCT_VIEW])[browsing]),
            ADD_TO_CART,
            REMOVE_FROM_CART,
            BEGIN_CHECKOUT,
        ],
        PURCHASE,
    )
    product = sample_products(rng, catalogue, sellable, total)
    if tastes is not None and taste_rng is not None:
        product = tastes.personalise(
            taste_rng,
            catalogue,
            sellable,
            product=product,
            customer=customer[session_of],
            previous=np.where(pos > 0, np.arange(total) - 1, -1),
        )
    quantity = np.zeros(total, dtype=np.int64)
    in_cart = event_type == ADD_TO_CART
    # Cart item j is the product viewed at position 1 + j; removals take the last items back;
    # purchase line j buys cart item j.
    cart_item = np.where(in_cart, pos - browse_end, 0)
    product = np.where(in_cart, product[first[session_of] + 1 + cart_item], product)
    quantity[in_cart] = rng.choice([1, 2, 3], size=int(in_cart.sum()), p=[0.82, 0.13, 0.05])
    removed = event_type == REMOVE_FROM_CART
    bought = event_type == PURCHASE
    source_index = np.select(
        [removed, bought],
        [
            first[session_of] + browse_end + cart[session_of] - 1 - (pos - cart_end),
            first[session_of] + browse_end + (pos - checkout_end),
        ],
        np.arange(total),
    )
    product = np.where(removed | bought, product[source_index], product)
    quantity = np.where(removed | bought, quantity[source_index], quantity)
    with_product = np.isin(event_type, [PRODUCT_VIEW, ADD_TO_CART, REMOVE_FROM_CART, PURCHASE]) | (
        (event_type == PAGE_VIEW) & (pos > 0)
    )
    product = np.where(with_product | (event_type == SEARCH), product, -1)
    currency = COUNTRY_CURRENCY[country]
    local_price = np.round(
        catalogue.price_cents[np.maximum(product, 0)] / eur_per_unit[currency[session_of]]
    ).astype(np.int64)
    price_cents = np.where(in_cart | removed | bought, local_price, -1)

    gaps = np.minimum(rng.lognormal(np.log(25_000.0), 0.9, size=total), 1_200_000).astype(np.int64) + 800
    first_purchase = bought & (pos == checkout_end)
    gaps = np.where(first_purchase, rng.integers(30_000, 180_000, size=total), gaps)
    gaps = np.where(bought & ~first_purchase, 1, gaps)
    gaps[pos == 0] = 0
    elapsed = np.cumsum(gaps)
    event_ms = start_ms[session_of] + elapsed - elapsed[first[session_of]]

    return DayClicks(
        day_index=day_index,
        batch=batch,
        session_customer=customer,
        session_country=country,
        session_currency=currency,
        session_platform=platform,
        session_profile=profile,
        session_traffic=traffic,
        session_anonymous_key=anonymous_key,
        session_has_id=has_id,
        session_purchase=purchase,
        session_login_pos=login_pos,
        event_session=session_of,
        event_pos=pos,
        event_type=event_type,
        event_ms=event_ms,
        product=product,
        quantity=quantity,
        price_cents=price_cents,
        ghost_sessions=ghost_sessions,
    )


@dataclass(frozen=True)
class ClickDefects:
    """Per-event content defects of a day (masks and values over all the day's events).

    Attributes:
        wrong_type: ``add_to_cart`` events whose ``quantity`` is ``"two"`` (where
            ``wrong_quantity``) or whose ``price`` is ``"abc"``.
        wrong_quantity: Which field the wrong-type defect hits.
        non_positive_quantity: ``add_to_cart`` events with ``quantity`` 0 or -1 (``bad_quantity``).
        unknown_product: ``product_view`` events of a product id no catalogue knows.
        extra_field: Events with an undocumented ``ab_test`` object.
    """

    wrong_type: np.ndarray
    wrong_quantity: np.ndarray
    non_positive_quantity: np.ndarray
    bad_quantity: np.ndarray
    unknown_product: np.ndarray
    unknown_number: np.ndarray
    extra_field: np.ndarray

    @staticmethod
    def none(size: int) -> ClickDefects:
        """No defects at all."""
        empty = np.zeros(size, dtype=bool)
        zeros = np.zeros(size, dtype=np.int64)
        return ClickDefects(empty, empty, empty, zeros, empty, zeros, empty)


class ClickRenderer:
    """Renders any subset of a day's events as JSON objects (so big days go out in chunks)."""

    def __init__(
        self,
        clicks: DayClicks,
        *,
        catalogue: Catalogue,
        calendar: DeliveryCalendar,
        seed: int,
        order_number_of_session: np.ndarray,
        defects: ClickDefects,
    ) -> None:
        """Prepare the day's id salts and defect-adjusted values.

        Args:
            clicks: The day's sessions and events.
            catalogue: The catalogue (category URLs and search terms of products).
            calendar: The run's days.
            seed: The run's seed (ids are hashes of it).
            order_number_of_session: Order number per session (-1 for sessions without purchase).
            defects: Content defects to inject.
        """
        self.clicks = clicks
        self.catalogue = catalogue
        self.defects = defects
        self.order_number_of_session = order_number_of_session
        day = clicks.day_index
        batch = np.array([clicks.batch])
        self.session_salt = int(hash_keys(seed ^ _SALT_SESSION, np.array([day]), batch)[0])
        self.event_salt = int(hash_keys(seed ^ _SALT_EVENT, np.array([day]), batch)[0])
        self.product_number = np.where(defects.unknown_product, defects.unknown_number, clicks.product + 1)
        self.quantity = np.where(defects.non_positive_quantity, defects.bad_quantity, clicks.quantity)
        self.utm_json, self.referrers = _traffic_json(calendar, day)

    def _product_ids(self, rows: np.ndarray) -> pa.Array:
        return padded_ids("P", self.product_number[rows], 6)

    def page_urls(self, rows: np.ndarray) -> pa.Array:
        """``page_url`` of the given events."""
        clicks = self.clicks
        event_type = clicks.event_type[rows]
        pos = clicks.event_pos[rows]
        product = clicks.product[rows]
        groups = [
            ((event_type == PAGE_VIEW) & (pos == 0), None),
            ((event_type == PAGE_VIEW) & (pos > 0), "category"),
            (np.isin(event_type, [PRODUCT_VIEW, ADD_TO_CART]), "product"),
            (event_type == SEARCH, "search"),
            (event_type == REMOVE_FROM_CART, "/cart"),
            (event_type == BEGIN_CHECKOUT, "/checkout"),
            (event_type == PURCHASE, "/checkout/confirmation"),
        ]
        parts = []
        for mask, kind in groups:
            subset = np.flatnonzero(mask)
            if kind is None:
                values = pa.array(["/"] * len(subset), pa.string())
            elif kind == "category":
                values = self.catalogue.category_urls.take(pa.array(product[subset]))
            elif kind == "product":
                values = pc.binary_join_element_wise("/p/", self._product_ids(rows[subset]), "")
            elif kind == "search":
                terms = self.catalogue.search_terms.take(pa.array(product[subset]))
                values = pc.binary_join_element_wise("/search?q=", pc.replace_substring(terms, " ", "+"), "")
            else:
                values = pa.array([kind] * len(subset), pa.string())
            parts.append((subset, values))
        paths = scatter(len(rows), parts, pa.string())
        return pc.binary_join_element_wise(
            pick(_HOSTS, self.clicks.session_platform[clicks.event_session[rows]]), paths, ""
        )

    def render(self, rows: np.ndarray) -> pa.Array:
        """JSON objects (no newline) of the events at ``rows``, in that order."""
        clicks = self.clicks
        defects = self.defects
        rows = np.asarray(rows, dtype=np.int64)
        size = len(rows)
        session = clicks.event_session[rows]
        event_type = clicks.event_type[rows]
        pos = clicks.event_pos[rows]
        platform = clicks.session_platform[session]

        event_id = uuid_strings(hash_keys(self.event_salt, rows))
        event_ts = format_timestamps(
            clicks.event_ms[rows], np.where(platform == WEB, TS_OFFSET, TS_UTC), millis=True
        )
        # Session-level ids are rendered once per session of the chunk, then spread to its events.
        sessions, session_row = np.unique(session, return_inverse=True)
        spread = pa.array(session_row)
        anonymous_id = uuid_strings(clicks.session_anonymous_key[sessions]).take(spread)
        session_id = uuid_strings(hash_keys(self.session_salt, sessions)).take(spread)
        customer = clicks.session_customer[session]
        logged_in = (pos >= clicks.session_login_pos[session]) & (customer >= 0)
        shows_product = np.isin(event_type, [PRODUCT_VIEW, ADD_TO_CART, REMOVE_FROM_CART, PURCHASE])
        order_number = self.order_number_of_session[session]
        price_cents = clicks.price_cents[rows]
        has_amount = price_cents >= 0
        quantity_text = pa.array(self.quantity[rows]).cast(pa.string())
        price_text = decimal_text(np.maximum(price_cents, 0))
        wrong = defects.wrong_type[rows]
        wrong_quantity = wrong & defects.wrong_quantity[rows]
        quantity_text = pc.if_else(pa.array(wrong_quantity), pa.scalar('"two"'), quantity_text)
        price_text = pc.if_else(pa.array(wrong & ~wrong_quantity), pa.scalar('"abc"'), price_text)
        page_url = self.page_urls(rows)
        traffic = clicks.session_traffic[session]
        previous_url = self.page_urls(np.maximum(rows - 1, 0))
        referrer = pc.if_else(pa.array(pos == 0), pick(self.referrers, traffic), previous_url)
        search_terms = self.catalogue.search_terms.take(pa.array(np.maximum(clicks.product[rows], 0)))

        def optional(key: str, values: pa.Array, present: np.ndarray, *, quoted: bool = True) -> pa.Array:
            quote = '"' if quoted else ""
            return pc.binary_join_element_wise(f',"{key}":{quote}', with_nulls(values, present), quote, "")

        pieces = [
            '{"event_id":"',
            event_id,
            '","event_ts":"',
            event_ts,
            '",',
            pick(_EVENT_TYPE_JSON, event_type),
            ',"anonymous_id":"',
            anonymous_id,
            '"',
            optional("customer_id", padded_ids("C", np.maximum(customer, 0) + 1, 7), logged_in),
            optional("session_id", session_id, clicks.session_has_id[session]),
            optional("product_id", self._product_ids(rows), shows_product),
            optional(
                "order_id",
                padded_ids("O", np.maximum(order_number, 0), 9),
                (event_type == PURCHASE) & (order_number >= 0),
            ),
            optional("quantity", quantity_text, has_amount, quoted=False),
            optional("price", price_text, has_amount, quoted=False),
            ',"page_url":"',
            page_url,
            '"',
            optional("referrer", referrer, platform == WEB),
            optional("search_query", search_terms, event_type == SEARCH),
            pick(self.utm_json, traffic),
            pick(_DEVICE_JSON, clicks.session_profile[session]),
            with_nulls(pick([_EXTRA_FIELD_JSON], np.zeros(size, dtype=np.int64)), defects.extra_field[rows]),
            "}",
        ]
        return pc.binary_join_element_wise(*pieces, "", null_handling="skip")
