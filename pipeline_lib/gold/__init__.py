"""Gold layer: the star schema and the contracts analysts rely on.

Public API of the star schema (pure transformations, ``DataFrame -> DataFrame``, and
the column functions they are built from); see ``docs/gold.md``.
"""

from __future__ import annotations

from pipeline_lib.gold.dimensions import (
    UNKNOWN_SK,
    build_dim_customer,
    build_dim_date,
    build_dim_product,
    date_key,
    member_sk,
    surrogate_key,
    version_sk,
)
from pipeline_lib.gold.facts import (
    NON_REVENUE_STATUSES,
    build_fact_order_lines,
    build_fact_orders,
    is_revenue_status,
    with_point_in_time_sk,
)
from pipeline_lib.gold.schemas import GOLD_SCHEMAS, conform_to
from pipeline_lib.gold.sessions import FUNNEL_STEPS, build_fact_sessions, funnel_step_no

__all__ = [
    "FUNNEL_STEPS",
    "GOLD_SCHEMAS",
    "NON_REVENUE_STATUSES",
    "UNKNOWN_SK",
    "build_dim_customer",
    "build_dim_date",
    "build_dim_product",
    "build_fact_order_lines",
    "build_fact_orders",
    "build_fact_sessions",
    "conform_to",
    "date_key",
    "funnel_step_no",
    "is_revenue_status",
    "member_sk",
    "surrogate_key",
    "version_sk",
    "with_point_in_time_sk",
]
