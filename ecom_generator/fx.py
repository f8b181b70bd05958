"""Daily reference exchange rates: a random walk per currency, with occasional missing days."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ecom_generator._strings import decimal_array

#: Currencies of the shop and the EUR value of one unit at the start of the walk.
START_RATE_EUR: dict[str, float] = {
    "EUR": 1.0,
    "USD": 0.92,
    "GBP": 1.17,
    "SEK": 0.087,
    "PLN": 0.232,
    "CHF": 1.05,
}
CURRENCIES: tuple[str, ...] = tuple(START_RATE_EUR)
#: Daily volatility of the log rate.
DAILY_VOLATILITY = 0.004
#: Chance that a non-base currency has no published rate on a day (never on the first day).
MISSING_RATE_SHARE = 0.03
#: Decimal places of ``rate_to_base``.
RATE_SCALE = 6


@dataclass(frozen=True)
class FxRates:
    """The run's true daily rates and which of them were published.

    Attributes:
        eur_per_unit: ``(days, currencies)`` EUR value of one unit of each currency.
        published: ``(days, currencies)`` whether the rate appears in that day's delivery.
        base_currency: The currency every published rate is expressed in.
    """

    eur_per_unit: np.ndarray
    published: np.ndarray
    base_currency: str

    def currency_index(self, code: str) -> int:
        """Column of ``code`` in the rate matrices."""
        return CURRENCIES.index(code)

    def to_base(self, day_index: int) -> np.ndarray:
        """Value of one unit of each currency in the base currency on a day."""
        row = self.eur_per_unit[day_index]
        return row / row[self.currency_index(self.base_currency)]

    def table(self, day_index: int, rate_date: str) -> pa.Table:
        """The ``fx_rates`` delivery of a day: ``rate_date, currency, rate_to_base``."""
        shown = np.flatnonzero(self.published[day_index])
        rates = np.round(self.to_base(day_index)[shown] * 10**RATE_SCALE).astype(np.int64)
        return pa.table(
            {
                "rate_date": pa.array([rate_date] * len(shown), pa.string()),
                "currency": pa.array([CURRENCIES[i] for i in shown], pa.string()),
                "rate_to_base": decimal_array(rates, scale=RATE_SCALE),
            }
        )


def simulate_fx(rng: np.random.Generator, days: int, base_currency: str) -> FxRates:
    """Random-walk rates for ``days`` days, expressed against ``base_currency``.

    Args:
        rng: Random stream for the rates.
        days: Number of days.
        base_currency: One of ``CURRENCIES``.

    Returns:
        The rates and the publication mask (the base currency is always published at 1).

    Raises:
        ValueError: If ``base_currency`` is not one of the shop's currencies.
    """
    if base_currency not in CURRENCIES:
        raise ValueError(f"base_currency must be one of {', '.join(CURRENCIES)}, got {base_currency!r}")
    start = np.array([START_RATE_EUR[code] for code in CURRENCIES])
    steps = rng.normal(0.0, DAILY_VOLATILITY, size=(days, len(CURRENCIES)))
    steps[0] = 0.0
    steps[:, CURRENCIES.index("EUR")] = 0.0
    eur_per_unit = start * np.exp(np.cumsum(steps, axis=0))
    published = rng.random((days, len(CURRENCIES))) >= MISSING_RATE_SHARE
    published[0] = True
    published[:, CURRENCIES.index(base_currency)] = True
    return FxRates(eur_per_unit=eur_per_unit, published=published, base_currency=base_currency)
