"""How ``scale`` maps to the size of the synthetic shop.

``scale`` fixes the whole run's volume, independent of ``days``: about ``scale x 1,000,000``
click events in all, spread over the days by the traffic calendar. Populations scale
linearly with a floor so that tiny test runs still have a shop worth querying.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Click events per unit of scale over the whole run.
EVENTS_PER_SCALE = 1_000_000
#: Customers (ever registered, including those who signed up long before the run).
CUSTOMERS_PER_SCALE = 20_000
#: Products in the catalogue's lifetime (listed at the start or launched during the run).
PRODUCTS_PER_SCALE = 2_000
#: Anonymous visitors (cookies/devices that never log in).
VISITORS_PER_SCALE = 60_000
#: Mean click events of one session; calibrated on the funnel model in ``clicks.py``.
MEAN_EVENTS_PER_SESSION = 4.96


@dataclass(frozen=True)
class ShopSize:
    """Sizes of the simulated populations for one run.

    Attributes:
        target_events: Click events to generate over the run (before defects).
        customers: Registered customers (pre-existing plus signing up during the run).
        new_customer_share: Share of ``customers`` who sign up during the run.
        products: Products ever listed during the run.
        visitors: Anonymous visitors who never log in.
        ghost_customers: Spare customers for the ``customer_not_in_crm`` defect.
    """

    target_events: int
    customers: int
    new_customer_share: float
    products: int
    visitors: int
    ghost_customers: int


def shop_size(scale: float, days: int, defect_rate: float) -> ShopSize:
    """Population sizes for ``scale`` (1.0 = about one million click events in all).

    Args:
        scale: Volume multiplier, > 0.
        days: Delivery days of the run (sets the share of customers who sign up in the run).
        defect_rate: Defect probability (sets the spare pool of CRM-less customers).

    Returns:
        The sizes.
    """
    target_events = max(1, round(EVENTS_PER_SCALE * scale))
    expected_orders = 0.016 * target_events
    return ShopSize(
        target_events=target_events,
        customers=max(60, round(CUSTOMERS_PER_SCALE * scale)),
        new_customer_share=min(0.5, max(0.05, days / 120)),
        products=max(40, round(PRODUCTS_PER_SCALE * scale)),
        visitors=max(150, round(VISITORS_PER_SCALE * scale)),
        ghost_customers=math.ceil(expected_orders * defect_rate * 3) + 5 if defect_rate > 0 else 0,
    )
