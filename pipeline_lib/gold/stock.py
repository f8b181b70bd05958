"""Gold stock: the daily closing stock (``fact_inventory_daily``) and ``stock_signals``.

Pure transformations (no I/O); the formulas and their sources are in
``docs/campaigns_and_stock.md``. Two rules run through everything:

* **A missing snapshot is unknown, not zero.** ``fact_inventory_daily`` has a row only for
  a day with a snapshot; a day of a product with no snapshot and no sale counts neither as
  in stock nor as out of stock (``days_unknown_28d``).
* **Zero sales is not zero demand.** Demand is averaged over *in-stock* days only: a day is
  in stock when the closing snapshot of some location shows ``available > 0``, or when the
  product sold (a sale proves stock); it is *out of stock* when it has a snapshot, every
  location's closing ``available`` is 0, and nothing sold. Out-of-stock days say nothing
  about demand, so they never pull the average down; they cost the estimated lost sales.

Every statistic is computed from exact integer sums (units, squares of units, day counts),
so the result does not depend on how Spark partitions or orders the rows.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from pipeline_lib.gold.dimensions import date_key
from pipeline_lib.gold.schemas import FACT_INVENTORY_DAILY_SCHEMA, STOCK_SIGNALS_SCHEMA, conform_to

__all__ = [
    "DEMAND_EXCLUDED_STATUSES",
    "build_fact_inventory_daily",
    "daily_units_sold",
    "stock_signals",
]

# Orders whose lines are not demand: the customer withdrew before anything shipped.
DEMAND_EXCLUDED_STATUSES = ("cancelled",)
_KEY = ("product_id", "location_id")


def build_fact_inventory_daily(inventory: DataFrame) -> DataFrame:
    """The closing stock of each product, location and UTC day that has a snapshot.

    Args:
        inventory: silver.inventory; requires ``product_id``, ``location_id``, ``snapshot_ts``,
            ``snapshot_date``, ``on_hand``, ``available``, ``committed``, ``incoming``,
            ``lead_time_days``. Rows with a null key or time are ignored (silver has none).

    Returns:
        One row per ``(product_id, location_id, date)`` with at least one snapshot (schema
        :data:`FACT_INVENTORY_DAILY_SCHEMA`): the counts of the day's last snapshot,
        ``in_stock`` (its ``available`` > 0; false when ``available`` is null), the closing
        ``snapshot_ts`` and how many ``snapshots`` the day had. A day without a snapshot has
        no row: it is unknown, never zero stock.
    """
    day = Window.partitionBy(*_KEY, "snapshot_date")
    latest_first = day.orderBy(F.col("snapshot_ts").desc())
    whole_day = day.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    keyed = F.col("product_id").isNotNull() & F.col("location_id").isNotNull()
    return (
        inventory.where(keyed & F.col("snapshot_ts").isNotNull())
        .withColumns(
            {
                "__rank": F.row_number().over(latest_first),
                "snapshots": F.count(F.lit(1)).over(whole_day),
            }
        )
        .where(F.col("__rank") == 1)
        .withColumns(
            {
                "date": F.col("snapshot_date"),
                "date_key": date_key("snapshot_date"),
                "in_stock": F.coalesce(F.col("available") > 0, F.lit(False)),
            }
        )
        .transform(conform_to, FACT_INVENTORY_DAILY_SCHEMA)
    )


def daily_units_sold(
    orders: DataFrame, *, order_items: DataFrame, from_date: dt.date, to_date: dt.date
) -> DataFrame:
    """Units ordered per product and order date in ``[from_date, to_date]``: the demand.

    Args:
        orders: silver.orders; requires ``order_id``, ``order_status``, ``order_date``.
        order_items: silver.order_items; requires ``order_id``, ``product_id``, ``quantity``.

    Returns:
        ``product_id``, ``date``, ``units`` (long): the quantities of the lines of orders
        whose current status is known and not ``cancelled`` (a returned order was still
        demand), lines with a product and a positive quantity. Days without units have no row.
    """
    in_range = F.col("order_date").between(F.lit(from_date), F.lit(to_date))
    status = F.lower(F.col("order_status"))
    demand_orders = orders.where(
        in_range & status.isNotNull() & ~status.isin(*DEMAND_EXCLUDED_STATUSES)
    ).select("order_id", F.col("order_date").alias("date"))
    lines = order_items.where(F.col("product_id").isNotNull() & (F.col("quantity") > 0)).select(
        "order_id", "product_id", "quantity"
    )
    return (
        demand_orders.join(lines, on="order_id", how="inner")
        .groupBy("product_id", "date")
        .agg(F.sum("quantity").cast("long").alias("units"))
    )


def _ratio(numerator: Column, denominator: Column) -> Column:
    """``numerator / denominator`` as a double; null when the denominator is 0 or null."""
    return F.when(denominator > 0, numerator.cast("double") / denominator.cast("double"))


def _sample_stddev(count: Column, total: Column, squares: Column) -> Column:
    """Sample standard deviation from exact sums: ``sqrt((n * sum(x^2) - sum(x)^2) / (n (n - 1)))``."""
    n = count.cast("double")
    variance = (n * squares.cast("double") - total.cast("double") * total.cast("double")) / (n * (n - 1))
    return F.when(count >= 2, F.sqrt(F.greatest(variance, F.lit(0.0))))


def stock_signals(
    daily: DataFrame,
    *,
    units_sold: DataFrame,
    as_of: dt.date,
    short_window_days: int,
    long_window_days: int,
    z: float,
    default_lead_time_days: int,
    review_period_days: int,
) -> DataFrame:
    """One row per product with a snapshot in the long window: stock, demand, cover, reorder.

    Args:
        daily: gold.fact_inventory_daily (``product_id``, ``location_id``, ``date``,
            ``on_hand``, ``available``, ``incoming``, ``lead_time_days``, ``in_stock``).
        units_sold: :func:`daily_units_sold` (``product_id``, ``date``, ``units``) covering the
            long window; other dates are ignored.
        as_of: The last day counted; the long window is ``[as_of - long + 1, as_of]``.
        short_window_days: Days of ``avg_daily_units_7d`` (``stock.short_window_days``).
        long_window_days: Days of the other windowed columns (``stock.long_window_days``).
        z: The standard normal quantile of the service level (1.645 for 95 %).
        default_lead_time_days: Lead time of a product whose snapshots give none (> 0).
        review_period_days: Days between two ordering decisions (>= 0).

    Returns:
        Schema :data:`STOCK_SIGNALS_SCHEMA`, one row per product with at least one snapshot
        in the long window. Stock (``available``, ``on_hand``, ``incoming``) is the sum over
        locations of each location's latest snapshot in the window. With ``d`` the average
        units per in-stock day of the long window, ``sigma`` their sample standard deviation
        (0 with fewer than two in-stock days) and ``L`` the lead time (the greatest positive
        ``lead_time_days`` of those snapshots, else the default):
        ``safety_stock = z * sigma * sqrt(L)``, ``reorder_point = d * L + safety_stock``,
        ``reorder_now`` when ``d > 0`` and ``available + incoming <= reorder_point``, and
        then ``suggested_quantity = ceil(d * (L + R) + z * sigma * sqrt(L + R) - (available +
        incoming))`` (0 otherwise). ``days_of_cover = available / d``;
        ``lost_sales_units_28d = days_out_of_stock_28d * d``. Averages, cover, reorder point
        and lost sales are null when the window has no in-stock day (demand unknown).

    Raises:
        ValueError: A window is not positive, the short one is longer than the long one, or
            the lead time default is not positive.
    """
    if not 1 <= short_window_days <= long_window_days:
        raise ValueError(
            f"windows must satisfy 1 <= short <= long, got {short_window_days} and {long_window_days}"
        )
    if default_lead_time_days < 1 or review_period_days < 0:
        raise ValueError("the default lead time must be positive and the review period not negative")
    first_long = as_of - dt.timedelta(days=long_window_days - 1)
    first_short = as_of - dt.timedelta(days=short_window_days - 1)
    in_window = daily.where(F.col("date").between(F.lit(first_long), F.lit(as_of)))
    current = _current_stock(in_window)
    days = _product_days(in_window, current.select("product_id"), units_sold, first_long, as_of)
    in_short = F.col("date") >= F.lit(first_short)
    sold = F.col("units")
    per_product = days.groupBy("product_id").agg(
        F.count_if(F.col("is_in_stock")).alias("in_stock_days_28d"),
        F.count_if(F.col("is_in_stock") & in_short).alias("in_stock_days_7d"),
        F.count_if(F.col("is_out_of_stock")).alias("days_out_of_stock_28d"),
        F.count_if(F.col("is_unknown")).alias("days_unknown_28d"),
        F.sum(sold).alias("units_sold_28d"),
        F.sum(F.when(in_short, sold).otherwise(F.lit(0))).alias("__units_7d"),
        F.sum(F.when(F.col("is_in_stock"), sold * sold).otherwise(F.lit(0))).alias("__squares"),
    )
    demand = F.col("avg_daily_units_28d")
    sigma = F.coalesce(F.col("sigma_daily_units_28d"), F.lit(0.0))
    lead = F.col("lead_time_days").cast("double")
    position = F.col("inventory_position")
    order_up_to = demand * (lead + review_period_days) + F.lit(z) * sigma * F.sqrt(lead + review_period_days)
    return (
        current.join(per_product, on="product_id", how="inner")
        .withColumns(
            {
                "avg_daily_units_28d": _ratio(F.col("units_sold_28d"), F.col("in_stock_days_28d")),
                "avg_daily_units_7d": _ratio(F.col("__units_7d"), F.col("in_stock_days_7d")),
                "sigma_daily_units_28d": _sample_stddev(
                    F.col("in_stock_days_28d"), F.col("units_sold_28d"), F.col("__squares")
                ),
                "lead_time_days": F.coalesce(F.col("lead_time_days"), F.lit(default_lead_time_days)),
                "inventory_position": F.col("available") + F.col("incoming"),
                "as_of_date": F.lit(as_of),
            }
        )
        .withColumn("safety_stock", F.when(demand.isNotNull(), F.lit(z) * sigma * F.sqrt(lead)))
        .withColumn("reorder_point", demand * lead + F.col("safety_stock"))
        .withColumns(
            {
                "days_of_cover": F.when(demand > 0, F.col("available") / demand),
                "lost_sales_units_28d": F.col("days_out_of_stock_28d") * demand,
                "reorder_now": F.coalesce((demand > 0) & (position <= F.col("reorder_point")), F.lit(False)),
            }
        )
        .withColumn(
            "suggested_quantity",
            F.when(F.col("reorder_now"), F.greatest(F.ceil(order_up_to - position), F.lit(0))).otherwise(
                F.lit(0)
            ),
        )
        .transform(conform_to, STOCK_SIGNALS_SCHEMA)
    )


def _current_stock(in_window: DataFrame) -> DataFrame:
    """Per product: the sum over locations of each location's latest snapshot in the window."""
    latest_first = Window.partitionBy(*_KEY).orderBy(F.col("date").desc())
    positive_lead = F.when(F.col("lead_time_days") > 0, F.col("lead_time_days"))
    return (
        in_window.withColumn("__rank", F.row_number().over(latest_first))
        .where(F.col("__rank") == 1)
        .groupBy("product_id")
        .agg(
            F.coalesce(F.sum("available"), F.lit(0)).cast("long").alias("available"),
            F.coalesce(F.sum("on_hand"), F.lit(0)).cast("long").alias("on_hand"),
            F.coalesce(F.sum("incoming"), F.lit(0)).cast("long").alias("incoming"),
            F.count(F.lit(1)).cast("int").alias("locations"),
            F.max("date").alias("last_snapshot_date"),
            F.max(positive_lead).alias("lead_time_days"),
        )
    )


def _product_days(
    in_window: DataFrame, products: DataFrame, units_sold: DataFrame, first: dt.date, last: dt.date
) -> DataFrame:
    """Every product and day of the window, with its units and whether it was in, out or unknown."""
    reported = in_window.groupBy("product_id", "date").agg(F.max("in_stock").alias("__any_in_stock"))
    calendar = products.withColumn(
        "date", F.explode(F.sequence(F.lit(first), F.lit(last), F.expr("INTERVAL 1 DAY")))
    )
    sales = units_sold.where(F.col("date").between(F.lit(first), F.lit(last)))
    any_in_stock = F.col("__any_in_stock")
    sold = F.col("units") > 0
    return (
        calendar.join(reported, on=["product_id", "date"], how="left")
        .join(sales, on=["product_id", "date"], how="left")
        .withColumn("units", F.coalesce(F.col("units"), F.lit(0)).cast("long"))
        .withColumns(
            {
                "is_in_stock": F.coalesce(any_in_stock, F.lit(False)) | sold,
                "is_out_of_stock": F.coalesce(~any_in_stock, F.lit(False)) & ~sold,
                "is_unknown": any_in_stock.isNull() & ~sold,
            }
        )
    )
