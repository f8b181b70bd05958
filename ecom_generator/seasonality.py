"""Calendar and seasonality: delivery days in the source time zone, day and hour weights.

The shop runs in Europe/Berlin. A delivery ``ingest_date=D`` holds the business of the
local day ``D``. Traffic follows a weekly pattern (Sunday evening peaks, quieter mid-week),
a few retail events (Black Friday, Cyber Monday, pre-Christmas, January sales) and a daily
curve that is low at night and peaks between 19:00 and 22:00 (later and flatter at weekends).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from ecom_generator._strings import berlin_offset_ms

#: Relative traffic by weekday, Monday first.
WEEKDAY_WEIGHT = np.array([0.98, 0.95, 0.94, 0.97, 0.99, 1.02, 1.15])

#: Relative traffic by local hour on weekdays and at weekends.
HOURLY_WEEKDAY = np.array(
    [
        0.30,
        0.17,
        0.10,
        0.07,
        0.07,
        0.11,
        0.28,
        0.55,
        0.78,
        0.90,
        0.97,
        1.02,
        1.10,
        1.04,
        0.98,
        0.98,
        1.04,
        1.14,
        1.28,
        1.48,
        1.62,
        1.58,
        1.22,
        0.72,
    ]
)
HOURLY_WEEKEND = np.array(
    [
        0.42,
        0.26,
        0.15,
        0.09,
        0.07,
        0.08,
        0.14,
        0.28,
        0.52,
        0.80,
        1.02,
        1.15,
        1.22,
        1.20,
        1.14,
        1.10,
        1.10,
        1.15,
        1.24,
        1.40,
        1.55,
        1.50,
        1.18,
        0.78,
    ]
)
#: Store opening hours profile (the ``store`` channel only sells 09:00-20:00).
HOURLY_STORE = np.array(
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0.6, 0.9, 1.0, 1.2, 1.1, 1.0, 1.0, 1.1, 1.3, 1.4, 1.0, 0, 0, 0, 0]
)


def event_multiplier(day: dt.date) -> float:
    """Retail-calendar multiplier of one day's traffic (1.0 on an ordinary day)."""
    november_last = dt.date(day.year, 11, 30)
    black_friday = november_last - dt.timedelta(days=(november_last.weekday() - 4) % 7)
    if day == black_friday:
        return 2.4
    if black_friday - dt.timedelta(days=4) <= day < black_friday:
        return 1.3
    if day == black_friday + dt.timedelta(days=3):  # Cyber Monday
        return 1.8
    if day.month == 12 and 1 <= day.day <= 20:
        return 1.25
    if day.month == 12 and 24 <= day.day <= 26:
        return 0.6
    if day.month == 1 and day.day == 1:
        return 0.7
    if day.month == 1 and 2 <= day.day <= 10:
        return 1.15  # January sales
    return 1.0


@dataclass(frozen=True)
class DeliveryCalendar:
    """The run's days: dates, local-midnight instants and relative traffic.

    Attributes:
        dates: The delivery dates (local days), in order.
        midnight_utc_ms: UTC instant of each local midnight, plus the one after the last day.
        weights: Share of the run's traffic per day (sums to 1).
    """

    dates: tuple[dt.date, ...]
    midnight_utc_ms: np.ndarray
    weights: np.ndarray

    @property
    def days(self) -> int:
        """Number of delivery days."""
        return len(self.dates)

    def is_weekend(self, day_index: int) -> bool:
        """Whether the local day is a Saturday or Sunday."""
        return self.dates[day_index].weekday() >= 5

    def hourly(self, day_index: int) -> np.ndarray:
        """Relative traffic by local hour of a day (weekday or weekend curve)."""
        return HOURLY_WEEKEND if self.is_weekend(day_index) else HOURLY_WEEKDAY

    def start_ms(self, day_index: int) -> int:
        """UTC instant of the day's local midnight (any index from -inf to days)."""
        return int(_local_midnight_utc_ms(self.dates[0] + dt.timedelta(days=day_index)))

    def end_ms(self, day_index: int) -> int:
        """UTC instant of the next local midnight."""
        return self.start_ms(day_index + 1)


def _local_midnight_utc_ms(day: dt.date) -> int:
    naive_ms = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)
    # Midnight is never inside a DST switch (those happen at 02:00/03:00 local), so the offset
    # valid one hour before local midnight is the offset at local midnight.
    offset = int(berlin_offset_ms(np.array([naive_ms - 3_600_000]))[0])
    return naive_ms - offset


def build_calendar(start: dt.date, days: int, rng: np.random.Generator) -> DeliveryCalendar:
    """Dates, midnights and traffic weights (weekday x retail events x 6 % day-to-day noise)."""
    dates = tuple(start + dt.timedelta(days=offset) for offset in range(days))
    midnights = np.array(
        [_local_midnight_utc_ms(start + dt.timedelta(days=offset)) for offset in range(days + 1)],
        dtype=np.int64,
    )
    raw = np.array([WEEKDAY_WEIGHT[day.weekday()] * event_multiplier(day) for day in dates])
    raw = raw * rng.lognormal(0.0, 0.06, size=days)
    return DeliveryCalendar(dates=dates, midnight_utc_ms=midnights, weights=raw / raw.sum())


def sample_local_ms(rng: np.random.Generator, size: int, hourly: np.ndarray) -> np.ndarray:
    """Milliseconds after local midnight, following an hourly profile (uniform inside the hour)."""
    if size == 0:
        return np.zeros(0, dtype=np.int64)
    probabilities = hourly / hourly.sum()
    hours = rng.choice(24, size=size, p=probabilities)
    return hours * 3_600_000 + rng.integers(0, 3_600_000, size=size)


def hour_windows(hourly: np.ndarray, parts: int) -> list[np.ndarray]:
    """Split the day into at most ``parts`` runs of consecutive hours with about equal traffic.

    Returns:
        One boolean mask over the 24 hours per window, in time order; together they cover the day.
    """
    total = hourly.sum()
    middle = (np.cumsum(hourly) - hourly / 2) / total
    window = np.minimum((middle * parts).astype(np.int64), parts - 1)
    return [window == index for index in np.unique(window)]
