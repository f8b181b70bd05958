"""Customers: a registered population with latent activity, churn and CRM deliveries.

Each customer has a latent activity rate drawn from a heavy-tailed log-normal (sigma 1,
capped at 10 times the median: a few very active customers, a long tail of occasional
ones), a value factor (propensity to put things in the cart), 1-3 devices, and a lifetime
after which they churn (35 % short-lived, mean 60 days; the rest mean 540 days).
Customers who signed up before the run arrive in the first CRM delivery (the initial
load); later deliveries hold new sign-ups and changed customers only: about 0.12 % a day
move (new city and postal code), 0.08 % change e-mail and 0.2 % flip their marketing
opt-in. A small share of e-mails is typed with capitals (``Anna.Mueller@web.de``), as
real sign-up forms let through.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ecom_generator import _vocab
from ecom_generator._strings import (
    TS_OFFSET,
    format_timestamps,
    padded_ids,
    pick,
    scatter,
)
from ecom_generator.seasonality import HOURLY_WEEKDAY, DeliveryCalendar, sample_local_ms

MOVE_SHARE = 0.0012
EMAIL_CHANGE_SHARE = 0.0008
OPT_IN_CHANGE_SHARE = 0.002
OPT_IN_SHARE = 0.42
CAPITALISED_EMAIL_SHARE = 0.04
NEVER = -(10**6)

_COUNTRY_CODES = [country.code for country in _vocab.COUNTRIES]
CITY_COUNTRY = np.array([i for i, country in enumerate(_vocab.COUNTRIES) for _ in country.cities])
_CITIES: tuple[_vocab.City, ...] = tuple(city for country in _vocab.COUNTRIES for city in country.cities)
CITY_START = np.cumsum([0] + [len(country.cities) for country in _vocab.COUNTRIES])


def _flatten(pools: list[tuple[str, ...]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    values = [value for pool in pools for value in pool]
    starts = np.cumsum([0] + [len(pool) for pool in pools])[:-1]
    sizes = np.array([len(pool) for pool in pools])
    return values, starts, sizes


_FIRST, _FIRST_START, _FIRST_SIZE = _flatten([country.first_names for country in _vocab.COUNTRIES])
_LAST, _LAST_START, _LAST_SIZE = _flatten([country.last_names for country in _vocab.COUNTRIES])
_DOMAIN, _DOMAIN_START, _DOMAIN_SIZE = _flatten([country.email_domains for country in _vocab.COUNTRIES])
_FIRST_ASCII = [_vocab.ascii_slug(name) for name in _FIRST]
_LAST_ASCII = [_vocab.ascii_slug(name) for name in _LAST]


def country_codes(country: np.ndarray) -> pa.Array:
    """ISO-3166 alpha-2 codes of country indices."""
    return pick(_COUNTRY_CODES, country)


def city_names(city: np.ndarray) -> pa.Array:
    """City names of global city indices."""
    return pick([city.name for city in _CITIES], city)


def sample_countries(rng: np.random.Generator, size: int) -> np.ndarray:
    """Country indices by the shop's country mix."""
    weights = np.array([country.weight for country in _vocab.COUNTRIES])
    return rng.choice(len(weights), size=size, p=weights / weights.sum())


def sample_cities(rng: np.random.Generator, country: np.ndarray) -> np.ndarray:
    """A city of each country (bigger cities first in the vocabulary, so more likely)."""
    counts = CITY_START[1:] - CITY_START[:-1]
    rank = np.floor(counts[country] * rng.random(len(country)) ** 1.6).astype(np.int64)
    return CITY_START[country] + rank


def other_cities(rng: np.random.Generator, city: np.ndarray) -> np.ndarray:
    """Another city of the same country for each city (customers who move)."""
    country = CITY_COUNTRY[city]
    counts = CITY_START[country + 1] - CITY_START[country]
    rank = city - CITY_START[country]
    step = 1 + (rng.integers(0, 1 << 30, size=len(city)) % np.maximum(counts - 1, 1))
    return CITY_START[country] + (rank + step) % counts


def postal_codes(city: np.ndarray, seed: np.ndarray) -> pa.Array:
    """A plausible postal code inside each city, derived from a per-address seed."""
    seed = np.asarray(seed, dtype=np.int64)
    low = np.array([c.low for c in _CITIES])[city]
    high = np.array([c.high for c in _CITIES])[city]
    number = low + seed % np.maximum(1, high - low + 1)
    letters = list("ABCDEFGHJKLMNPRSTUVWXYZ")
    letter1 = pick(letters, (seed >> 20) % len(letters))
    letter2 = pick(letters, (seed >> 26) % len(letters))
    kinds = np.array([f"{c.postal_kind}{c.width}" for c in _CITIES])[city]
    parts = []
    for kind in np.unique(kinds):
        rows = np.flatnonzero(kinds == kind)
        take = pa.array(rows)
        digits = pa.array(number[rows]).cast(pa.string())
        if kind.startswith("num"):
            text = pc.utf8_lpad(digits, int(kind[3:]), "0")
        elif kind.startswith("nl"):
            text = pc.binary_join_element_wise(
                digits, pc.binary_join_element_wise(letter1.take(take), letter2.take(take), ""), " "
            )
        elif kind.startswith("gb"):
            outward = pick([c.outward for c in _CITIES], city[rows])
            inward = pc.binary_join_element_wise(
                pa.array((seed[rows] >> 32) % 10).cast(pa.string()),
                letter1.take(take),
                letter2.take(take),
                "",
            )
            text = pc.binary_join_element_wise(outward, inward, " ")
        else:
            padded = pc.utf8_lpad(digits, 5, "0")
            cut = 3 if kind.startswith("se") else 2
            separator = " " if kind.startswith("se") else "-"
            text = pc.binary_join_element_wise(
                pc.utf8_slice_codeunits(padded, 0, cut), pc.utf8_slice_codeunits(padded, cut, 5), separator
            )
        parts.append((rows, text))
    return scatter(len(city), parts, pa.string())


@dataclass
class Customers:
    """The registered customers and their current CRM state (one row per customer).

    Attributes:
        country, city: Current address (indices into the vocabulary).
        activity: Latent session rate weight (heavy-tailed).
        value: Multiplier of the chance to put products in the cart.
        devices: Number of devices (anonymous ids) the customer uses, 1-3.
        signup_day, signup_ms: Registration (day index, negative before the run; UTC ms).
        churn_day: Day from which the customer no longer visits.
        crm_day: Day of the first CRM delivery of the customer (``NEVER``: not delivered).
        is_ghost: Spare customers reserved for the ``customer_not_in_crm`` defect.
    """

    country: np.ndarray
    city: np.ndarray
    postal_seed: np.ndarray
    first: np.ndarray
    last: np.ndarray
    email_seed: np.ndarray
    phone_seed: np.ndarray
    opt_in: np.ndarray
    activity: np.ndarray
    value: np.ndarray
    devices: np.ndarray
    signup_day: np.ndarray
    signup_ms: np.ndarray
    updated_ms: np.ndarray
    churn_day: np.ndarray
    crm_day: np.ndarray
    is_ghost: np.ndarray

    @property
    def size(self) -> int:
        """Customers including the spare (ghost) pool."""
        return len(self.country)

    def ids(self, rows: np.ndarray) -> pa.Array:
        """``customer_id`` strings (``C0000001``...) of customer indices."""
        return padded_ids("C", np.asarray(rows) + 1, 7)

    def active_weights(self, day_index: int) -> np.ndarray:
        """Session weight of every customer on a day (0 before sign-up, after churn, for ghosts)."""
        active = (self.signup_day <= day_index) & (self.churn_day > day_index) & ~self.is_ghost
        return np.where(active, self.activity, 0.0)

    def take_ghosts(
        self, rng: np.random.Generator, order_ms: np.ndarray, day_index: int, days: int
    ) -> np.ndarray:
        """Turn spare customers into new sign-ups whose CRM record arrives late or never.

        Args:
            rng: Random stream of the day.
            order_ms: Order time of each order that gets such a customer.
            day_index: The day of the orders.
            days: Days in the run.

        Returns:
            Customer indices, one per order (fewer when the spare pool runs dry).
        """
        free = np.flatnonzero(self.is_ghost & (self.crm_day == NEVER) & (self.signup_day > days))
        rows = free[: len(order_ms)]
        count = len(rows)
        self.signup_day[rows] = day_index
        self.signup_ms[rows] = order_ms[:count] - rng.integers(60_000, 900_000, size=count)
        self.updated_ms[rows] = self.signup_ms[rows]
        late = rng.random(count) < 0.5
        self.crm_day[rows] = np.where(late, day_index + rng.integers(1, 4, size=count), NEVER + 1)
        return rows

    def advance(self, rng: np.random.Generator, calendar: DeliveryCalendar, day_index: int) -> np.ndarray:
        """Apply one day of moves, e-mail changes and opt-in changes to delivered customers.

        Returns:
            Indices of the customers changed on the day.
        """
        delivered = (self.crm_day >= 0) & (self.crm_day < day_index)
        draw = rng.random((3, self.size))
        moves = delivered & (draw[0] < MOVE_SHARE)
        new_email = delivered & (draw[1] < EMAIL_CHANGE_SHARE)
        flips = delivered & (draw[2] < OPT_IN_CHANGE_SHARE)
        moved = np.flatnonzero(moves)
        self.city[moved] = other_cities(rng, self.city[moved])
        self.postal_seed[moved] = rng.integers(0, 2**40, size=len(moved))
        self._change_emails(rng, np.flatnonzero(new_email))
        self.opt_in[flips] = ~self.opt_in[flips]
        changed = np.flatnonzero(moves | new_email | flips)
        self.updated_ms[changed] = calendar.start_ms(day_index) + sample_local_ms(
            rng, len(changed), HOURLY_WEEKDAY
        )
        return changed

    def _change_emails(self, rng: np.random.Generator, rows: np.ndarray) -> None:
        """Give customers a new e-mail address (re-drawn until it differs from the old one)."""
        previous = self.emails(rows)
        for _ in range(20):
            if len(rows) == 0:
                return
            self.email_seed[rows] += 1 + rng.integers(0, 1000, size=len(rows))
            same = pc.equal(self.emails(rows), previous).to_numpy(zero_copy_only=False)
            rows, previous = rows[same], previous.filter(pa.array(same))

    def delivery_rows(self, day_index: int, changed: np.ndarray) -> np.ndarray:
        """Customers in the day's CRM delivery: first deliveries plus changed customers, sorted."""
        first = np.flatnonzero(self.crm_day == day_index)
        return np.union1d(first, changed)

    def emails(self, rows: np.ndarray) -> pa.Array:
        """Current e-mail address of customers."""
        seed = self.email_seed[rows]
        country = self.country[rows]
        first = pick(_FIRST_ASCII, self.first[rows])
        last = pick(_LAST_ASCII, self.last[rows])
        capitalised = (seed >> 12) % 1000 < CAPITALISED_EMAIL_SHARE * 1000
        first = pc.if_else(pa.array(capitalised), pc.utf8_capitalize(first), first)
        last = pc.if_else(pa.array(capitalised), pc.utf8_capitalize(last), last)
        pattern = seed % 4
        initial = pc.utf8_slice_codeunits(first, 0, 1)
        local = pc.if_else(
            pa.array(pattern == 0),
            pc.binary_join_element_wise(first, last, "."),
            pc.if_else(
                pa.array(pattern == 1),
                pc.binary_join_element_wise(first, last, ""),
                pc.if_else(
                    pa.array(pattern == 2),
                    pc.binary_join_element_wise(initial, last, "."),
                    pc.binary_join_element_wise(first, last, "_"),
                ),
            ),
        )
        suffix_kind = (seed >> 2) % 3
        suffix = np.where(suffix_kind == 1, (seed >> 4) % 100, 1955 + (seed >> 4) % 52)
        local = pc.if_else(
            pa.array(suffix_kind == 0),
            local,
            pc.binary_join_element_wise(local, pa.array(suffix).cast(pa.string()), ""),
        )
        domain = pick(_DOMAIN, _DOMAIN_START[country] + (seed >> 8) % _DOMAIN_SIZE[country])
        return pc.binary_join_element_wise(local, domain, "@")

    def phones(self, rows: np.ndarray) -> pa.Array:
        """Phone numbers in international format."""
        seed = self.phone_seed[rows]
        prefix = pick([country.phone_prefix for country in _vocab.COUNTRIES], self.country[rows])
        area = pa.array(150 + seed % 30).cast(pa.string())
        number = pc.utf8_lpad(pa.array((seed >> 8) % 10_000_000).cast(pa.string()), 7, "0")
        return pc.binary_join_element_wise(prefix, area, number, " ")

    def table(self, rows: np.ndarray) -> dict[str, pa.Array]:
        """The CRM columns of customers, in contract order (timestamps still as text)."""
        return {
            "customer_id": self.ids(rows),
            "email": self.emails(rows),
            "first_name": pick(_FIRST, self.first[rows]),
            "last_name": pick(_LAST, self.last[rows]),
            "phone": self.phones(rows),
            "country": country_codes(self.country[rows]),
            "city": city_names(self.city[rows]),
            "postal_code": postal_codes(self.city[rows], self.postal_seed[rows]),
            "signup_ts": format_timestamps(self.signup_ms[rows], TS_OFFSET, millis=False),
            "updated_at": format_timestamps(self.updated_ms[rows], TS_OFFSET, millis=False),
            "marketing_opt_in": pa.array(self.opt_in[rows]),
        }


def build_customers(
    rng: np.random.Generator,
    calendar: DeliveryCalendar,
    customers: int,
    new_share: float,
    ghosts: int,
) -> Customers:
    """Create the customer population of a run.

    Args:
        rng: Random stream of the customers.
        calendar: The run's days.
        customers: Registered customers (before, or signing up during, the run).
        new_share: Share of them who sign up during the run.
        ghosts: Spare customers for the ``customer_not_in_crm`` defect (not visiting on their own).

    Returns:
        The population before the first day.
    """
    total = customers + ghosts
    country = sample_countries(rng, total)
    city = sample_cities(rng, country)
    first = _FIRST_START[country] + rng.integers(0, 1 << 30, size=total) % _FIRST_SIZE[country]
    last = _LAST_START[country] + rng.integers(0, 1 << 30, size=total) % _LAST_SIZE[country]
    is_new = rng.random(total) < new_share
    run_day = rng.choice(calendar.days, size=total, p=calendar.weights)
    past_day = -rng.integers(1, 3 * 365, size=total)
    signup_day = np.where(is_new, run_day, past_day)
    first_midnight = calendar.start_ms(0)
    midnight = np.where(
        is_new, calendar.midnight_utc_ms[run_day], first_midnight + signup_day.astype(np.int64) * 86_400_000
    )
    signup_ms = midnight + sample_local_ms(rng, total, HOURLY_WEEKDAY)
    edited = (~is_new) & (rng.random(total) < 0.4)
    updated_ms = np.where(
        edited,
        signup_ms + (rng.random(total) * (first_midnight - signup_ms)).astype(np.int64),
        signup_ms,
    )
    short_lived = rng.random(total) < 0.35
    lifetime = rng.exponential(np.where(short_lived, 60.0, 540.0))
    is_ghost = np.zeros(total, dtype=bool)
    is_ghost[customers:] = True
    crm_day = np.where(is_new, signup_day, 0)
    crm_day[is_ghost] = NEVER
    signup_day[is_ghost] = calendar.days + 10**6
    return Customers(
        country=country,
        city=city,
        postal_seed=rng.integers(0, 2**40, size=total),
        first=first,
        last=last,
        email_seed=rng.integers(0, 2**40, size=total),
        phone_seed=rng.integers(0, 2**40, size=total),
        opt_in=rng.random(total) < OPT_IN_SHARE,
        activity=np.minimum(rng.lognormal(0.0, 1.0, size=total), 10.0),
        value=rng.lognormal(0.0, 0.45, size=total),
        devices=1 + rng.binomial(2, 0.3, size=total),
        signup_day=signup_day,
        signup_ms=signup_ms,
        updated_ms=updated_ms,
        churn_day=signup_day + lifetime,
        crm_day=crm_day,
        is_ghost=is_ghost,
    )


def render_customers(
    customers: Customers, rows: np.ndarray, *, wrong_type: np.ndarray, rng: np.random.Generator
) -> pa.Table:
    """The ``customers`` delivery rows, with ``wrong_type`` rows made unparseable.

    A wrong-type row has ``signup_ts`` ``"31/02/2026"`` or ``marketing_opt_in`` ``"yes"``.
    """
    columns = customers.table(rows)
    bad_signup = wrong_type & (rng.random(len(rows)) < 0.5)
    bad_opt_in = wrong_type & ~bad_signup
    columns["signup_ts"] = pc.if_else(pa.array(bad_signup), pa.scalar("31/02/2026"), columns["signup_ts"])
    if bad_opt_in.any():
        columns["marketing_opt_in"] = pc.if_else(
            pa.array(bad_opt_in), pa.scalar("yes"), columns["marketing_opt_in"].cast(pa.string())
        )
    return pa.table(columns)
