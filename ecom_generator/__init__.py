"""Synthetic source generator: a landing zone of an e-commerce shop, with realistic defects.

Pure numpy/pyarrow (no Spark). The public API is :func:`generate_landing` and its
:class:`GenerationReport`; ``DEFECT_KINDS`` and ``SOURCES`` name what it reports. See
``docs/generator.md`` for the model, the defect kinds and the measured speed.

Example:
    >>> import datetime as dt
    >>> report = generate_landing("/tmp/landing", start=dt.date(2026, 3, 1), days=7, scale=0.01, seed=42)
    >>> sorted(report.rows_by_source)
    ['catalogue', 'clicks', 'customers', 'fx_rates', 'inventory', 'order_items', 'orders']
"""

from __future__ import annotations

from ecom_generator.core import SOURCES, GenerationReport, generate_landing
from ecom_generator.defects import DEFECT_KINDS
from ecom_generator.scale import ShopSize, shop_size

__all__ = ["DEFECT_KINDS", "SOURCES", "GenerationReport", "ShopSize", "generate_landing", "shop_size"]
