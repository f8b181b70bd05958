"""Gold ``product_popularity``: views, carts, purchases and revenue per product over trailing windows.

Grain: one row per product per window (``window_days``) as of a date, for the products
with any activity in that window. A window of ``w`` days ending at the as-of date covers
the dates ``as_of - (w - 1)`` to ``as_of``, both inclusive (a 7-day window as of the 7th
covers the 1st to the 7th).

* ``views`` and ``add_to_carts`` count ``product_view`` and ``add_to_cart`` click events
  (silver clicks are deduplicated by ``event_id``) by their UTC ``event_date``;
* ``purchases``, ``units`` and ``revenue`` come from orders, not from the tracker's
  ``purchase`` events: distinct revenue orders (see :mod:`pipeline_lib.gold.segments`)
  dated in the window with a line of the product, the quantity of those lines, and their
  ``net_amount_base``;
* ranks order products by revenue desc, units desc, views desc, then ``product_id`` asc:
  a total order, so ranks are ``row_number``: 1..n without gaps or ties;
* ``category_l1`` is the one of the product version valid at the end of the as-of date.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline_lib.gold.schemas import PRODUCT_POPULARITY_SCHEMA, conform_to
from pipeline_lib.gold.segments import filter_revenue_orders, join_revenue_order_lines
from pipeline_lib.silver.schemas import BASE_MONEY

PRODUCT_VIEW = "product_view"
ADD_TO_CART = "add_to_cart"

# The table: the contract's columns, then the product's top-level category.
PRODUCT_POPULARITY_TABLE_SCHEMA = T.StructType(
    [*PRODUCT_POPULARITY_SCHEMA.fields, T.StructField("category_l1", T.StringType(), True)]
)


class PopularityWindowError(ValueError):
    """The windows given to the popularity transform are unusable."""


# ---------------------------------------------------------------------------------------
# Column helpers (Column -> Column)
# ---------------------------------------------------------------------------------------
def safe_rate(numerator: str | Column, denominator: str | Column) -> Column:
    """``numerator / denominator`` as a double; null when the denominator is 0 or null."""
    numerator = F.col(numerator) if isinstance(numerator, str) else numerator
    denominator = F.col(denominator) if isinstance(denominator, str) else denominator
    return F.when(denominator != 0, numerator.cast(T.DoubleType()) / denominator).otherwise(F.lit(None))


def popularity_order() -> list[Column]:
    """Ranking order: revenue desc, units desc, views desc, product_id asc (a total order)."""
    return [
        F.col("revenue").desc_nulls_last(),
        F.col("units").desc_nulls_last(),
        F.col("views").desc_nulls_last(),
        F.col("product_id").asc_nulls_last(),
    ]


# ---------------------------------------------------------------------------------------
# DataFrame transformations (DataFrame -> DataFrame)
# ---------------------------------------------------------------------------------------
def _check_windows(windows_days: Sequence[int]) -> tuple[int, ...]:
    windows = tuple(sorted(set(windows_days)))
    if not windows or windows[0] < 1:
        raise PopularityWindowError(
            f"windows must be a non-empty list of positive day counts, got {list(windows_days)}"
        )
    return windows


def explode_into_windows(
    activity: DataFrame, *, date_column: str, as_of: dt.date, windows_days: Sequence[int]
) -> DataFrame:
    """Repeat each dated row once per window that contains its date.

    Args:
        activity: Any rows with a date column.
        date_column: The date that places a row in time.
        as_of: Last day of every window.
        windows_days: Window lengths in days.

    Returns:
        The columns of ``activity`` plus ``window_days`` (int): one row per (row, window)
        with ``as_of - (window_days - 1) <= date <= as_of``. Rows with a null date are dropped.

    Raises:
        PopularityWindowError: No window, or a window below one day.
    """
    windows = _check_windows(windows_days)
    days_before = F.datediff(F.lit(as_of), F.col(date_column))
    return (
        activity.where(days_before.between(0, windows[-1] - 1))
        .withColumn("window_days", F.explode(F.array(*[F.lit(w).cast(T.IntegerType()) for w in windows])))
        .where(days_before < F.col("window_days"))
    )


def aggregate_click_activity(clicks: DataFrame, *, as_of: dt.date, windows_days: Sequence[int]) -> DataFrame:
    """Views and add-to-carts per product and window.

    Args:
        clicks: silver.clicks; requires ``event_date``, ``event_type``, ``product_id``.

    Returns:
        One row per (``product_id``, ``window_days``) with at least one view or cart event:
        ``views``, ``add_to_carts`` (longs). Events without a product or date are ignored.
    """
    product_events = clicks.where(
        F.col("product_id").isNotNull() & F.col("event_type").isin(PRODUCT_VIEW, ADD_TO_CART)
    ).select("product_id", "event_date", "event_type")
    return (
        product_events.transform(
            explode_into_windows, date_column="event_date", as_of=as_of, windows_days=windows_days
        )
        .groupBy("product_id", "window_days")
        .agg(
            F.count_if(F.col("event_type") == PRODUCT_VIEW).alias("views"),
            F.count_if(F.col("event_type") == ADD_TO_CART).alias("add_to_carts"),
        )
    )


def aggregate_sales(
    orders: DataFrame, *, order_items: DataFrame, as_of: dt.date, windows_days: Sequence[int]
) -> DataFrame:
    """Purchases, units and revenue per product and window, from revenue orders.

    Args:
        orders: silver.orders; requires ``order_id``, ``customer_id``, ``order_status``, ``order_date``.
        order_items: silver.order_items; requires ``order_id``, ``line_no``, ``product_id``,
            ``quantity``, ``net_amount_base``.

    Returns:
        One row per (``product_id``, ``window_days``) sold in the window: ``purchases``
        (distinct revenue orders, guests included), ``units`` (sum of quantity), ``revenue``
        (sum of ``net_amount_base``; lines without an amount add nothing, 0 if none has one).
        Lines without a product are ignored.
    """
    first_day = as_of - dt.timedelta(days=_check_windows(windows_days)[-1] - 1)
    lines = (
        orders.transform(filter_revenue_orders, as_of=as_of, from_date=first_day)
        .transform(join_revenue_order_lines, order_items=order_items)
        .where(F.col("product_id").isNotNull())
    )
    return (
        lines.transform(
            explode_into_windows, date_column="order_date", as_of=as_of, windows_days=windows_days
        )
        .groupBy("product_id", "window_days")
        .agg(
            F.countDistinct("order_id").alias("purchases"),
            F.coalesce(F.sum("quantity"), F.lit(0)).cast(T.LongType()).alias("units"),
            F.coalesce(F.sum("net_amount_base"), F.lit(0).cast(BASE_MONEY)).alias("revenue"),
        )
    )


def select_category_as_of(products: DataFrame, *, as_of: dt.date) -> DataFrame:
    """The ``category_l1`` of each product as of the end of a date.

    The version taken is the latest one that started on or before ``as_of`` (the version
    valid at the end of that day, or the last one before the product was delisted); a
    product whose first version starts after ``as_of`` takes its earliest version. Dates
    of ``valid_from`` are read in the session time zone (UTC in this project).

    Args:
        products: silver.products (SCD type 2); requires ``product_id``, ``category_l1``, ``valid_from``.

    Returns:
        One row per ``product_id``: ``product_id``, ``category_l1`` (null when the version has none).
    """
    started = F.to_date(F.col("valid_from")) <= F.lit(as_of)
    preference = Window.partitionBy("product_id").orderBy(
        F.when(started, F.col("valid_from")).desc_nulls_last(),
        F.col("valid_from").asc_nulls_last(),
        F.col("category_l1").asc_nulls_last(),
    )
    return (
        products.where(F.col("product_id").isNotNull())
        .withColumn("_preference", F.row_number().over(preference))
        .where(F.col("_preference") == 1)
        .select("product_id", "category_l1")
    )


def with_popularity_ranks(popularity: DataFrame) -> DataFrame:
    """Add ``rank_in_category`` and ``rank_overall`` (row numbers, 1 = most popular).

    Ranked within each ``window_days`` (and ``category_l1``; products without a category
    rank among themselves) by revenue desc, units desc, views desc, product_id asc.

    Args:
        popularity: Requires ``product_id``, ``window_days``, ``category_l1``, ``revenue``,
            ``units``, ``views``; one row per product and window.
    """
    in_category = Window.partitionBy("window_days", "category_l1").orderBy(*popularity_order())
    overall = Window.partitionBy("window_days").orderBy(*popularity_order())
    return popularity.withColumns(
        {
            "rank_in_category": F.row_number().over(in_category),
            "rank_overall": F.row_number().over(overall),
        }
    )


def clean_product_popularity(popularity: DataFrame) -> DataFrame:
    """Select and cast the columns of :data:`PRODUCT_POPULARITY_TABLE_SCHEMA`, in its order."""
    return conform_to(popularity, PRODUCT_POPULARITY_TABLE_SCHEMA)


def product_popularity(
    clicks: DataFrame,
    *,
    orders: DataFrame,
    order_items: DataFrame,
    products: DataFrame,
    as_of: dt.date,
    windows_days: Sequence[int],
) -> DataFrame:
    """The gold ``product_popularity`` rows of one as-of date.

    Args:
        clicks: silver.clicks (``event_date``, ``event_type``, ``product_id``).
        orders: silver.orders (``order_id``, ``customer_id``, ``order_status``, ``order_date``).
        order_items: silver.order_items (``order_id``, ``line_no``, ``product_id``, ``quantity``,
            ``net_amount_base``).
        products: silver.products (``product_id``, ``category_l1``, ``valid_from``).
        as_of: Last day of every window; later events and orders are ignored.
        windows_days: Window lengths (``pipeline.popularity_windows_days``, e.g. 7 and 30).

    Returns:
        One row per product and window with a view, an add-to-cart or a revenue order in
        the window: ``product_id, as_of_date, window_days, views, add_to_carts, purchases,
        units, revenue, view_to_cart_rate, cart_to_purchase_rate, rank_in_category,
        rank_overall, category_l1``. Counts and revenue are 0 (never null) when there
        is no such activity; a rate is null when its denominator is 0.

    Raises:
        PopularityWindowError: No window, or a window below one day.
    """
    clicks_per_window = aggregate_click_activity(clicks, as_of=as_of, windows_days=windows_days)
    sales_per_window = aggregate_sales(
        orders, order_items=order_items, as_of=as_of, windows_days=windows_days
    )
    categories = select_category_as_of(products, as_of=as_of)
    zero = F.lit(0).cast(T.LongType())
    return (
        clicks_per_window.join(sales_per_window, on=["product_id", "window_days"], how="full_outer")
        .withColumns(
            {
                "views": F.coalesce("views", zero),
                "add_to_carts": F.coalesce("add_to_carts", zero),
                "purchases": F.coalesce("purchases", zero),
                "units": F.coalesce("units", zero),
                "revenue": F.coalesce("revenue", F.lit(0).cast(BASE_MONEY)),
            }
        )
        .withColumns(
            {
                "view_to_cart_rate": safe_rate("add_to_carts", "views"),
                "cart_to_purchase_rate": safe_rate("purchases", "add_to_carts"),
                "as_of_date": F.lit(as_of),
            }
        )
        .join(categories, on="product_id", how="left")
        .transform(with_popularity_ranks)
        .transform(clean_product_popularity)
    )
