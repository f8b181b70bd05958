"""Vectorized rendering: ids, decimals, ISO-8601 timestamps and JSON fragments.

Strings are built as fixed-width ``uint8`` matrices with numpy and handed to pyarrow as
buffers, or joined element-wise with ``pyarrow.compute``; nothing loops in Python per row.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_ZERO = ord("0")
_MS_PER_DAY = 86_400_000

#: Timestamp rendering modes (per row).
TS_OFFSET = 0  # Europe/Berlin wall time with its offset, e.g. ``2026-03-01T10:15:00+01:00``
TS_UTC = 1  # UTC with ``Z``
TS_NAIVE = 2  # Europe/Berlin wall time without offset (the contract's naive source time zone)

_SUFFIXES = pa.array(["+01:00", "+02:00", "Z", ""])


def splitmix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a fast, well-mixed 64-bit hash of each element."""
    z = values.astype(np.uint64, copy=True)
    z += np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hash_keys(salt: int, *parts: np.ndarray | int) -> np.ndarray:
    """Hash a salt and integer columns (broadcast together) into one uint64 per row."""
    arrays = [np.asarray(part).astype(np.uint64) for part in parts]
    shape = np.broadcast_shapes(*(a.shape for a in arrays)) if arrays else ()
    state = splitmix64(np.full(shape, salt & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64))
    for array in arrays:
        state = splitmix64(state ^ array)
    return state


def unit_interval(keys: np.ndarray) -> np.ndarray:
    """Map uint64 hashes to floats uniform in [0, 1)."""
    return (keys >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _matrix_to_strings(matrix: np.ndarray) -> pa.StringArray:
    """Fixed-width ASCII rows (an ``(n, w)`` uint8 matrix) to a pyarrow string array."""
    rows, width = matrix.shape
    offsets = np.arange(0, rows * width + 1, width, dtype=np.int32)
    data = np.ascontiguousarray(matrix, dtype=np.uint8)
    return pa.StringArray.from_buffers(rows, pa.py_buffer(offsets), pa.py_buffer(data))


def _put_digits(matrix: np.ndarray, column: int, values: np.ndarray, width: int) -> None:
    for position in range(width):
        power = 10 ** (width - 1 - position)
        matrix[:, column + position] = _ZERO + (values // power) % 10


def padded_ids(prefix: str, numbers: np.ndarray, width: int) -> pa.StringArray:
    """``prefix`` followed by each number zero-padded to ``width`` digits, e.g. ``C00000042``."""
    numbers = np.asarray(numbers, dtype=np.int64)
    head = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    matrix = np.empty((len(numbers), len(head) + width), dtype=np.uint8)
    matrix[:, : len(head)] = head
    _put_digits(matrix, len(head), numbers, width)
    return _matrix_to_strings(matrix)


_HEX_PAIRS = np.array(
    [(_HEX[value >> 4], _HEX[value & 0x0F]) for value in range(256)], dtype=np.uint8
).reshape(256, 2)


def uuid_strings(keys: np.ndarray) -> pa.StringArray:
    """Version-4-shaped UUID strings derived deterministically from uint64 keys."""
    keys = np.asarray(keys, dtype=np.uint64)
    high = splitmix64(keys)
    low = splitmix64(high ^ np.uint64(0xD1B54A32D192ED03))
    raw = np.stack([high, low], axis=1).view(np.uint8).reshape(len(keys), 16)
    chars = _HEX_PAIRS[raw].reshape(len(keys), 32)
    chars[:, 12] = ord("4")
    chars[:, 16] = _HEX[8 + (raw[:, 8] >> 4 & 3)]
    matrix = np.empty((len(keys), 36), dtype=np.uint8)
    matrix[:, [8, 13, 18, 23]] = ord("-")
    matrix[:, 0:8] = chars[:, 0:8]
    matrix[:, 9:13] = chars[:, 8:12]
    matrix[:, 14:18] = chars[:, 12:16]
    matrix[:, 19:23] = chars[:, 16:20]
    matrix[:, 24:36] = chars[:, 20:32]
    return _matrix_to_strings(matrix)


def decimal_text(units: np.ndarray, scale: int = 2) -> pa.StringArray:
    """Fixed-point numbers as text (``1234`` with scale 2 -> ``"12.34"``), for JSON and CSV."""
    units = np.asarray(units, dtype=np.int64)
    magnitude = np.abs(units)
    whole = pa.array(magnitude // 10**scale).cast(pa.string())
    fraction = pc.utf8_lpad(pa.array(magnitude % 10**scale).cast(pa.string()), scale, "0")
    text = pc.binary_join_element_wise(whole, fraction, ".")
    return pc.if_else(pa.array(units < 0), pc.binary_join_element_wise("-", text, ""), text)


def decimal_array(units: np.ndarray, scale: int = 2, precision: int = 18) -> pa.Decimal128Array:
    """Fixed-point numbers as an exact pyarrow ``decimal128(precision, scale)`` array."""
    units = np.asarray(units, dtype=np.int64)
    words = np.empty(len(units) * 2, dtype=np.int64)
    words[0::2] = units
    words[1::2] = np.where(units < 0, -1, 0)
    return pa.Array.from_buffers(pa.decimal128(precision, scale), len(units), [None, pa.py_buffer(words)])


def _last_sunday_utc_ms(year: int, month: int) -> int:
    """01:00 UTC on the last Sunday of ``month``: when EU summer time starts or ends."""
    next_month = dt.date(year + (month == 12), month % 12 + 1, 1)
    last_day = next_month - dt.timedelta(days=1)
    last_sunday = last_day - dt.timedelta(days=(last_day.weekday() + 1) % 7)
    moment = dt.datetime(last_sunday.year, last_sunday.month, last_sunday.day, 1, tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def berlin_offset_ms(utc_ms: np.ndarray) -> np.ndarray:
    """UTC offset of Europe/Berlin (CET/CEST, EU rules) at each UTC instant, in milliseconds."""
    utc_ms = np.asarray(utc_ms, dtype=np.int64)
    if len(utc_ms) == 0:
        return np.zeros(0, dtype=np.int64)
    first = dt.datetime.fromtimestamp(int(utc_ms.min()) / 1000, tz=dt.UTC).year
    last = dt.datetime.fromtimestamp(int(utc_ms.max()) / 1000, tz=dt.UTC).year
    transitions = np.array(
        [_last_sunday_utc_ms(year, month) for year in range(first, last + 1) for month in (3, 10)],
        dtype=np.int64,
    )
    in_summer = np.searchsorted(transitions, utc_ms, side="right") % 2 == 1
    return np.where(in_summer, 7_200_000, 3_600_000).astype(np.int64)


def _civil_from_days(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Proleptic Gregorian (year, month, day) of days since 1970-01-01 (H. Hinnant's algorithm)."""
    z = days + 719_468
    era = np.floor_divide(z, 146_097)
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    year = yoe + era * 400 + (month <= 2)
    return year, month, day


def format_timestamps(utc_ms: np.ndarray, mode: np.ndarray | int, *, millis: bool) -> pa.StringArray:
    """Render UTC instants as ISO-8601 text, per row in one of the ``TS_*`` modes.

    Args:
        utc_ms: Milliseconds since the epoch (UTC).
        mode: ``TS_OFFSET``, ``TS_UTC`` or ``TS_NAIVE``, for all rows or per row.
        millis: Whether to print milliseconds (``.123``).

    Returns:
        One string per instant, e.g. ``2026-03-29T03:00:00.000+02:00`` or ``2026-03-01T09:15:00Z``.
    """
    utc_ms = np.asarray(utc_ms, dtype=np.int64)
    modes = np.broadcast_to(np.asarray(mode, dtype=np.int8), utc_ms.shape)
    offset = berlin_offset_ms(utc_ms)
    local = utc_ms + np.where(modes == TS_UTC, 0, offset)
    days = np.floor_divide(local, _MS_PER_DAY)
    of_day = local - days * _MS_PER_DAY
    year, month, day = _civil_from_days(days)
    width = 23 if millis else 19
    matrix = np.empty((len(utc_ms), width), dtype=np.uint8)
    _put_digits(matrix, 0, year, 4)
    matrix[:, 4] = ord("-")
    _put_digits(matrix, 5, month, 2)
    matrix[:, 7] = ord("-")
    _put_digits(matrix, 8, day, 2)
    matrix[:, 10] = ord("T")
    _put_digits(matrix, 11, of_day // 3_600_000, 2)
    matrix[:, 13] = ord(":")
    _put_digits(matrix, 14, (of_day // 60_000) % 60, 2)
    matrix[:, 16] = ord(":")
    _put_digits(matrix, 17, (of_day // 1000) % 60, 2)
    if millis:
        matrix[:, 19] = ord(".")
        _put_digits(matrix, 20, of_day % 1000, 3)
    text = _matrix_to_strings(matrix)
    suffix_index = np.where(modes == TS_UTC, 2, np.where(modes == TS_NAIVE, 3, offset // 3_600_000 - 1))
    suffixes = _SUFFIXES.take(pa.array(suffix_index.astype(np.int32)))
    return pc.binary_join_element_wise(text, suffixes, "")


def json_escape(values: pa.Array) -> pa.Array:
    """Escape backslashes and double quotes so free text can sit inside a JSON string."""
    escaped = pc.replace_substring(values, "\\", "\\\\")
    return pc.replace_substring(escaped, '"', '\\"')


def json_string_field(key: str, values: pa.Array) -> pa.Array:
    """``"key":"value"`` per row, null where the value is null (so the key is left out)."""
    return pc.binary_join_element_wise(f'"{key}":"', values, '"', "")


def json_raw_field(key: str, values: pa.Array) -> pa.Array:
    """``"key":value`` per row for numbers, booleans, objects or arrays already rendered as JSON."""
    return pc.binary_join_element_wise(f'"{key}":', values, "")


def json_objects(fields: list[pa.Array]) -> pa.Array:
    """Join rendered ``"key":value`` fragments into one JSON object per row; null fragments are skipped."""
    body = pc.binary_join_element_wise(*fields, ",", null_handling="skip")
    return pc.binary_join_element_wise("{", body, "}", "")


def with_nulls(values: pa.Array, keep: np.ndarray) -> pa.Array:
    """Null out the rows where ``keep`` is false."""
    return pc.if_else(pa.array(keep), values, pa.scalar(None, values.type))


def scatter(length: int, parts: list[tuple[np.ndarray, pa.Array]], value_type: pa.DataType) -> pa.Array:
    """Assemble one array from values computed for disjoint row subsets; other rows are null.

    Args:
        length: Rows in the result.
        parts: ``(row_indices, values)`` pairs; the index sets must not overlap.
        value_type: Arrow type of the result.

    Returns:
        An array of ``length`` rows.
    """
    positions = np.full(length, -1, dtype=np.int64)
    arrays: list[pa.Array] = []
    start = 0
    for rows, values in parts:
        positions[rows] = np.arange(start, start + len(rows))
        arrays.append(values.cast(value_type))
        start += len(rows)
    missing = positions < 0
    positions[missing] = start
    arrays.append(pa.nulls(1, value_type))
    combined = pa.concat_arrays(arrays)
    return combined.take(pa.array(positions))


def pick(values: pa.Array | list[str], indices: np.ndarray) -> pa.Array:
    """``values[indices]`` for a small vocabulary of strings."""
    vocabulary = values if isinstance(values, pa.Array) else pa.array(values, pa.string())
    return vocabulary.take(pa.array(np.asarray(indices, dtype=np.int64)))
