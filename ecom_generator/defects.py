"""Defect injection: which rows get which defect, and the row-level edits that need no schema.

Every kind is drawn independently for each eligible row with probability ``defect_rate``;
when a row draws several kinds it keeps the first in ``DEFECT_KINDS`` order, so each
reported count is exactly what a reader of the files can find. With ``defect_rate == 0``
nothing is drawn and the data is clean.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: Every defect kind the generator can inject, in priority order.
DEFECT_KINDS: tuple[str, ...] = (
    "malformed_json",
    "duplicate_event",
    "late_duplicate_event",
    "late_event",
    "wrong_type",
    "non_positive_quantity",
    "unknown_product",
    "extra_field",
    "naive_timestamp",
    "customer_not_in_crm",
    "extra_column",
    "empty_file",
    "negative_stock",
    "duplicate_row",
    "late_snapshot",
)

#: Days a late event or a late duplicate arrives after its own delivery.
LATE_DAYS = (2, 4)


class DefectLedger(Counter[str]):
    """Counts of injected defects by kind (all kinds present, zero when none)."""

    def as_dict(self) -> dict[str, int]:
        """The counts in ``DEFECT_KINDS`` order."""
        return {kind: int(self[kind]) for kind in DEFECT_KINDS}


def draw_defects(
    rng: np.random.Generator, rate: float, size: int, eligible: dict[str, np.ndarray | bool]
) -> dict[str, np.ndarray]:
    """Pick the rows of each defect kind.

    Args:
        rng: Random stream for defects.
        rate: Probability per eligible row and kind.
        size: Number of rows.
        eligible: Per kind, which rows may carry it (a mask, or ``True`` for all rows).

    Returns:
        Per kind, a boolean mask; the masks never overlap.
    """
    taken = np.zeros(size, dtype=bool)
    picked: dict[str, np.ndarray] = {}
    for kind, allowed in eligible.items():
        if rate <= 0:
            picked[kind] = np.zeros(size, dtype=bool)
            continue
        hit = np.asarray(allowed, dtype=bool) & (rng.random(size) < rate) & ~taken
        taken |= hit
        picked[kind] = hit
    return picked


def replace_rows(values: pa.Array, rows: np.ndarray, replacement: pa.Array) -> pa.Array:
    """``values`` with ``values[rows]`` replaced by ``replacement`` (same length as ``rows``)."""
    if len(rows) == 0:
        return values
    positions = np.arange(len(values))
    positions[rows] = len(values) + np.arange(len(rows))
    return pa.concat_arrays([values, replacement.cast(values.type)]).take(pa.array(positions))


def truncate_lines(lines: pa.Array, rows: np.ndarray, rng: np.random.Generator) -> pa.Array:
    """Cut the given JSON lines short (a strict prefix of a JSON object never parses)."""
    if len(rows) == 0:
        return lines
    cuts = np.array([17, 48, 91])[rng.integers(0, 3, size=len(rows))]
    pieces = []
    order = []
    for cut in np.unique(cuts):
        chosen = rows[cuts == cut]
        pieces.append(pc.utf8_slice_codeunits(lines.take(pa.array(chosen)), 0, int(cut)))
        order.append(chosen)
    chosen_rows = np.concatenate(order)
    return replace_rows(lines, chosen_rows, pa.concat_arrays(pieces))
