"""Analyst queries on the gold and ops tables: the logic behind ``notebooks/``.

Every function is a pure ``DataFrame -> DataFrame`` transformation (no I/O, no session)
whose result is small (one row per day, channel, segment, rule...), so a notebook can hand
it to ``Lake.to_pandas`` and chart it. Amounts come out as ``double`` in the base
currency: they are aggregates meant for charts and tables, rounded only for display.

Revenue follows the contract: ``net_amount_base`` of orders whose current status is not
``cancelled`` or ``returned``, read from gold's ``is_revenue`` column (or, for a table
without it, derived from ``order_status`` by the same rule the gold jobs use).

    from pipeline_lib.analysis import queries as A
    orders = spark.table("gold.fact_orders")
    lake.to_pandas(orders.transform(A.daily_sales))
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import cast

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline_lib.gold.facts import is_revenue_status
from pipeline_lib.gold.sessions import FUNNEL_STEPS
from pipeline_lib.io.delta import require_columns
from pipeline_lib.io.frames import local_frame

__all__ = [
    "COVER_BUCKETS",
    "FRESHNESS_COLUMNS",
    "NOT_SEGMENTED",
    "UNCATEGORISED",
    "AnalyticsArgumentError",
    "audience_sizes",
    "campaign_uplift",
    "category_ranking",
    "cover_distribution",
    "current_products",
    "customer_recommendations",
    "daily_conversion",
    "daily_sales",
    "date_from_key",
    "failed_runs",
    "ingest_file_summary",
    "ingest_problems",
    "job_run_summary",
    "latest_value",
    "most_recommended_products",
    "popularity_snapshot",
    "products_at_risk",
    "quality_failure_rates",
    "quarantine_by_rule",
    "recommendation_coverage",
    "recommendation_metrics_trend",
    "recommendation_source_mix",
    "rfm_grid",
    "run_history",
    "safe_ratio",
    "sales_by",
    "score_distribution",
    "segment_migration",
    "segment_summary",
    "segment_trend",
    "session_funnel",
    "stock_headline",
    "stock_status_by_day",
    "top_products",
    "with_product_attributes",
    "with_revenue_flag",
    "with_share",
]

IS_REVENUE = "is_revenue"
# Label of "no segment on that date" in a migration: the customer had no revenue order yet
# (on the earlier date) or is no longer scored (on the later one).
NOT_SEGMENTED = "(not segmented)"
UNCATEGORISED = "(uncategorised)"
# The column that says how recent each gold table's data is.
FRESHNESS_COLUMNS: dict[str, str] = {
    "dim_date": "date",
    "dim_customer": "valid_from",
    "dim_product": "valid_from",
    "fact_order_lines": "order_ts",
    "fact_orders": "order_ts",
    "fact_sessions": "end_ts",
    "customer_segments": "as_of_date",
    "product_popularity": "as_of_date",
    "campaign_audiences": "as_of_date",
    "campaign_results": "as_of_date",
    "fact_inventory_daily": "date",
    "stock_signals": "as_of_date",
    "product_affinity": "as_of_date",
    "recommendations": "as_of_date",
    "recommendation_metrics": "as_of_date",
}


class AnalyticsArgumentError(ValueError):
    """An analytics query was asked for something it cannot answer (bad dates, bad level)."""


# --- Column helpers (Column -> Column) -------------------------------------------------------


def date_from_key(key: str | Column) -> Column:
    """The date of a ``yyyymmdd`` integer date key; null for a null or malformed key."""
    column = F.col(key) if isinstance(key, str) else key
    return F.try_to_date(column.cast(T.StringType()), "yyyyMMdd")


def safe_ratio(numerator: str | Column, denominator: str | Column) -> Column:
    """``numerator / denominator`` as a double; null when the denominator is 0 or null."""
    top = F.col(numerator) if isinstance(numerator, str) else numerator
    bottom = F.col(denominator) if isinstance(denominator, str) else denominator
    return F.when(bottom != 0, top.cast(T.DoubleType()) / bottom.cast(T.DoubleType())).otherwise(
        F.lit(None).cast(T.DoubleType())
    )


def _money(column: str | Column) -> Column:
    """A base-currency sum as a double for charts; 0 instead of null."""
    value = F.col(column) if isinstance(column, str) else column
    return F.coalesce(value.cast(T.DoubleType()), F.lit(0.0))


def _seconds_between(start: str, end: str) -> Column:
    return F.unix_timestamp(F.col(end)) - F.unix_timestamp(F.col(start))


# --- Shared transforms -----------------------------------------------------------------------


def with_revenue_flag(orders: DataFrame) -> DataFrame:
    """Make sure ``is_revenue`` is there: kept if present, else derived from ``order_status``.

    Args:
        orders: gold.fact_orders or gold.fact_order_lines; requires ``is_revenue`` or
            ``order_status``.

    Returns:
        ``orders`` with ``is_revenue`` (boolean; a null flag or status counts as not revenue).
        Same grain.
    """
    if IS_REVENUE in orders.columns:
        return orders.withColumn(IS_REVENUE, F.coalesce(F.col(IS_REVENUE), F.lit(False)))
    require_columns(orders, ["order_status"], what="with_revenue_flag")
    return orders.withColumn(IS_REVENUE, is_revenue_status("order_status"))


def with_share(summary: DataFrame, *, value: str, share: str) -> DataFrame:
    """Add ``share``: each row's ``value`` over the total of ``value`` (meant for small results).

    Args:
        summary: An aggregate with a numeric ``value`` column.
        value: The column to take shares of.
        share: The name of the column added (double; null when the total is 0 or null).

    Returns:
        ``summary`` with ``share``. Same grain.
    """
    everything = Window.partitionBy().rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    return summary.withColumn(share, safe_ratio(F.col(value), F.sum(value).over(everything)))


def latest_value(table: DataFrame, *, column: str) -> DataFrame:
    """The greatest value of ``column`` (an as-of date, an event time), as one row.

    Args:
        table: Any table with ``column``.
        column: A date or timestamp column.

    Returns:
        One row: ``rows`` (count of the table) and ``latest`` (the greatest value, as a
        timestamp; null for an empty table).
    """
    require_columns(table, [column], what="latest_value")
    return table.agg(
        F.count(F.lit(1)).alias("rows"),
        F.max(F.col(column).cast(T.TimestampType())).alias("latest"),
    )


# --- Sales ---------------------------------------------------------------------------------


def sales_by(orders: DataFrame, *, by: Sequence[str]) -> DataFrame:
    """Orders, revenue and average order value per group.

    Args:
        orders: gold.fact_orders; requires ``order_id``, ``net_amount_base``, ``item_count``,
            the ``by`` columns, and ``is_revenue`` or ``order_status``.
        by: Grouping columns (e.g. ``["channel"]``); empty for one row of totals. A null group
            value is kept as its own group.

    Returns:
        One row per group: the ``by`` columns, ``orders`` (all orders), ``revenue_orders``
        (orders counted as revenue), ``cancelled_or_returned`` (the others), ``revenue``
        (double, base currency; 0 without revenue orders), ``items`` (units of revenue
        orders), ``aov`` (revenue / revenue_orders; null without revenue orders),
        ``revenue_share`` (of the total over all groups).
    """
    require_columns(orders, ["order_id", "net_amount_base", "item_count", *by], what="sales_by")
    flagged = orders.transform(with_revenue_flag)
    is_revenue = F.col(IS_REVENUE)
    summary = flagged.groupBy(*by).agg(
        F.countDistinct("order_id").alias("orders"),
        F.countDistinct(F.when(is_revenue, F.col("order_id"))).alias("revenue_orders"),
        _money(F.sum(F.when(is_revenue, F.col("net_amount_base")))).alias("revenue"),
        F.coalesce(F.sum(F.when(is_revenue, F.col("item_count"))), F.lit(0))
        .cast(T.LongType())
        .alias("items"),
    )
    return (
        summary.withColumn("cancelled_or_returned", F.col("orders") - F.col("revenue_orders"))
        .withColumn("aov", safe_ratio("revenue", "revenue_orders"))
        .transform(with_share, value="revenue", share="revenue_share")
        .select(
            *by,
            "orders",
            "revenue_orders",
            "cancelled_or_returned",
            "revenue",
            "items",
            "aov",
            "revenue_share",
        )
    )


def daily_sales(orders: DataFrame, *, by: Sequence[str] = ()) -> DataFrame:
    """:func:`sales_by` per order date (from ``order_date_key``), optionally split further.

    Args:
        orders: gold.fact_orders; as :func:`sales_by`, plus ``order_date_key``.
        by: Further grouping columns (e.g. ``["channel"]``).

    Returns:
        One row per ``order_date`` (and ``by`` group) with an order, ordered by date; the
        columns of :func:`sales_by` (``revenue_share`` is of the whole period). Days without
        orders have no row. Orders with a null date key form a null-date row.
    """
    require_columns(orders, ["order_date_key"], what="daily_sales")
    return (
        orders.withColumn("order_date", date_from_key("order_date_key"))
        .transform(sales_by, by=["order_date", *by])
        .orderBy(F.col("order_date").asc_nulls_last(), *by)
    )


# --- Customer segments ---------------------------------------------------------------------


def _segments_on(segments: DataFrame, as_of: dt.date) -> DataFrame:
    return segments.where(F.col("as_of_date") == F.lit(as_of))


def segment_summary(segments: DataFrame, *, as_of: dt.date) -> DataFrame:
    """Size, revenue and typical RFM values of each segment on one as-of date.

    Args:
        segments: gold.customer_segments; requires ``as_of_date``, ``customer_id``,
            ``segment``, ``recency_days``, ``frequency``, ``monetary``.
        as_of: The as-of date to describe.

    Returns:
        One row per segment present on ``as_of``, largest first: ``segment``, ``customers``,
        ``customer_share``, ``revenue`` (sum of ``monetary``, double), ``revenue_share``,
        ``avg_recency_days``, ``avg_frequency``, ``avg_monetary``. Empty if the date has no rows.
    """
    require_columns(
        segments,
        ["as_of_date", "customer_id", "segment", "recency_days", "frequency", "monetary"],
        what="segment_summary",
    )
    return (
        _segments_on(segments, as_of)
        .groupBy("segment")
        .agg(
            F.countDistinct("customer_id").alias("customers"),
            _money(F.sum("monetary")).alias("revenue"),
            F.avg("recency_days").cast(T.DoubleType()).alias("avg_recency_days"),
            F.avg("frequency").cast(T.DoubleType()).alias("avg_frequency"),
            F.avg("monetary").cast(T.DoubleType()).alias("avg_monetary"),
        )
        .transform(with_share, value="customers", share="customer_share")
        .transform(with_share, value="revenue", share="revenue_share")
        .select(
            "segment",
            "customers",
            "customer_share",
            "revenue",
            "revenue_share",
            "avg_recency_days",
            "avg_frequency",
            "avg_monetary",
        )
        .orderBy(F.desc("customers"), F.asc("segment"))
    )


def segment_trend(segments: DataFrame) -> DataFrame:
    """Customers per segment on every as-of date.

    Args:
        segments: gold.customer_segments; requires ``as_of_date``, ``customer_id``, ``segment``.

    Returns:
        One row per (``as_of_date``, ``segment``) with customers: ``customers``, ordered by date.
    """
    require_columns(segments, ["as_of_date", "customer_id", "segment"], what="segment_trend")
    return (
        segments.groupBy("as_of_date", "segment")
        .agg(F.countDistinct("customer_id").alias("customers"))
        .orderBy("as_of_date", "segment")
    )


def rfm_grid(segments: DataFrame, *, as_of: dt.date) -> DataFrame:
    """Customers per (recency score, frequency score) cell on one as-of date.

    Args:
        segments: gold.customer_segments; requires ``as_of_date``, ``customer_id``,
            ``r_score``, ``f_score``, ``monetary``.
        as_of: The as-of date.

    Returns:
        One row per occupied (``r_score``, ``f_score``) cell: ``customers`` and
        ``avg_monetary`` (double). Null scores form their own cells.
    """
    require_columns(
        segments, ["as_of_date", "customer_id", "r_score", "f_score", "monetary"], what="rfm_grid"
    )
    return (
        _segments_on(segments, as_of)
        .groupBy("r_score", "f_score")
        .agg(
            F.countDistinct("customer_id").alias("customers"),
            F.avg("monetary").cast(T.DoubleType()).alias("avg_monetary"),
        )
        .orderBy("r_score", "f_score")
    )


def score_distribution(segments: DataFrame, *, as_of: dt.date) -> DataFrame:
    """How many customers have each value of each RFM score on one as-of date.

    Args:
        segments: gold.customer_segments; requires ``as_of_date``, ``customer_id``,
            ``r_score``, ``f_score``, ``m_score``.
        as_of: The as-of date.

    Returns:
        One row per (``score``: ``r_score``/``f_score``/``m_score``, ``value``) present:
        ``customers``. A null score is kept as a null ``value``.
    """
    scores = ["r_score", "f_score", "m_score"]
    require_columns(segments, ["as_of_date", "customer_id", *scores], what="score_distribution")
    return (
        _segments_on(segments, as_of)
        .select("customer_id", *[F.col(s).cast(T.IntegerType()).alias(s) for s in scores])
        .unpivot("customer_id", cast("list[Column | str]", scores), "score", "value")
        .groupBy("score", "value")
        .agg(F.countDistinct("customer_id").alias("customers"))
        .orderBy("score", "value")
    )


def segment_migration(segments: DataFrame, *, from_date: dt.date, to_date: dt.date) -> DataFrame:
    """How customers moved between segments from one as-of date to a later one.

    A customer scored on only one of the two dates moves from or to :data:`NOT_SEGMENTED`.

    Args:
        segments: gold.customer_segments; requires ``as_of_date``, ``customer_id``, ``segment``.
        from_date: The earlier as-of date.
        to_date: The later as-of date.

    Returns:
        One row per (``from_segment``, ``to_segment``) pair with customers: ``customers``,
        ``share_of_from`` (of the customers in ``from_segment``), ``stayed`` (same segment).

    Raises:
        AnalyticsArgumentError: ``from_date`` is not before ``to_date``.
    """
    if from_date >= to_date:
        raise AnalyticsArgumentError(
            f"segment_migration needs from_date < to_date, got {from_date} >= {to_date}"
        )
    require_columns(segments, ["as_of_date", "customer_id", "segment"], what="segment_migration")

    def on(date: dt.date, name: str) -> DataFrame:
        return (
            _segments_on(segments, date)
            .where(F.col("customer_id").isNotNull())
            .select("customer_id", F.col("segment").alias(name))
        )

    moved = on(from_date, "from_segment").join(on(to_date, "to_segment"), on="customer_id", how="full_outer")
    per_from = Window.partitionBy("from_segment").rowsBetween(
        Window.unboundedPreceding, Window.unboundedFollowing
    )
    return (
        moved.select(
            "customer_id",
            F.coalesce("from_segment", F.lit(NOT_SEGMENTED)).alias("from_segment"),
            F.coalesce("to_segment", F.lit(NOT_SEGMENTED)).alias("to_segment"),
        )
        .groupBy("from_segment", "to_segment")
        .agg(F.count(F.lit(1)).alias("customers"))
        .withColumn("share_of_from", safe_ratio(F.col("customers"), F.sum("customers").over(per_from)))
        .withColumn("stayed", F.col("from_segment") == F.col("to_segment"))
        .orderBy("from_segment", F.desc("customers"), "to_segment")
    )


# --- Recommendations -----------------------------------------------------------------------


def recommendation_metrics_trend(metrics: DataFrame) -> DataFrame:
    """The evaluation of each method over the as-of dates, with the model's gain over popularity.

    Args:
        metrics: gold.recommendation_metrics (``as_of_date``, ``method``, ``k``,
            ``precision_at_k``, ``recall_at_k``, ``ndcg_at_k``, ``coverage``, ``test_users``).

    Returns:
        One row per as-of date and method, ordered by date then method: the columns above
        plus ``ndcg_vs_popularity`` (the method's NDCG over popularity's on that date, minus
        1; null when popularity's is 0 or missing).
    """
    require_columns(
        metrics,
        ["as_of_date", "method", "k", "precision_at_k", "recall_at_k", "ndcg_at_k", "coverage", "test_users"],
        what="recommendation_metrics_trend",
    )
    baseline = metrics.where(F.col("method") == "popularity").select(
        "as_of_date", F.col("ndcg_at_k").alias("_baseline")
    )
    return (
        metrics.join(baseline, on="as_of_date", how="left")
        .select(
            "as_of_date",
            "method",
            "k",
            "precision_at_k",
            "recall_at_k",
            "ndcg_at_k",
            "coverage",
            "test_users",
            (safe_ratio("ndcg_at_k", "_baseline") - F.lit(1.0)).alias("ndcg_vs_popularity"),
        )
        .orderBy("as_of_date", "method")
    )


def _recommendations_on(recommendations: DataFrame, as_of: dt.date) -> DataFrame:
    require_columns(
        recommendations,
        ["customer_id", "as_of_date", "rank", "product_id", "score", "source"],
        what="recommendations",
    )
    return recommendations.where(F.col("as_of_date") == F.lit(as_of))


def customer_recommendations(
    recommendations: DataFrame, *, products: DataFrame, customer_id: str, as_of: dt.date
) -> DataFrame:
    """One customer's list of one as-of date, with the products' names.

    Args:
        recommendations: gold.recommendations.
        products: The output of :func:`current_products`.
        customer_id: The customer.
        as_of: The as-of date.

    Returns:
        Their rows ordered by ``rank``: ``rank``, ``product_id``, ``name``, ``brand``,
        ``category_l1``, ``score``, ``source``, ``reason`` (null when the table has none).
        Empty when the customer has no list that day.
    """
    reason = F.col("reason") if "reason" in recommendations.columns else F.lit(None).cast(T.StringType())
    return (
        _recommendations_on(recommendations, as_of)
        .where(F.col("customer_id") == F.lit(customer_id))
        .withColumn("reason", reason)
        .transform(with_product_attributes, products=products)
        .select("rank", "product_id", "name", "brand", "category_l1", "score", "source", "reason")
        .orderBy("rank")
    )


def recommendation_source_mix(recommendations: DataFrame, *, as_of: dt.date) -> DataFrame:
    """Where the lines of one as-of date came from.

    Returns:
        One row per ``source``: ``lines``, ``customers`` (with at least one line from it),
        ``first_lines`` (customers whose first product came from it), ``share_of_lines``.
    """
    rows = _recommendations_on(recommendations, as_of)
    return (
        rows.groupBy("source")
        .agg(
            F.count(F.lit(1)).alias("lines"),
            F.countDistinct("customer_id").alias("customers"),
            F.count_if(F.col("rank") == 1).alias("first_lines"),
        )
        .transform(with_share, value="lines", share="share_of_lines")
        .orderBy(F.desc("lines"), "source")
    )


def recommendation_coverage(recommendations: DataFrame, *, products: DataFrame, as_of: dt.date) -> DataFrame:
    """How much of the sellable catalogue the lists of one as-of date show.

    Args:
        recommendations: gold.recommendations.
        products: gold.dim_product (``product_id``, ``is_current``, ``is_active``, ``is_delisted``).
        as_of: The as-of date.

    Returns:
        One row: ``customers``, ``lines``, ``products_recommended`` (distinct),
        ``sellable_products`` (current versions active and not delisted), ``coverage``
        (``products_recommended / sellable_products``, null without sellable products).
    """
    require_columns(
        products, ["product_id", "is_current", "is_active", "is_delisted"], what="recommendation_coverage"
    )
    sellable = products.where(
        F.col("is_current") & F.col("is_active") & ~F.coalesce(F.col("is_delisted"), F.lit(False))
    ).agg(F.countDistinct("product_id").alias("sellable_products"))
    return (
        _recommendations_on(recommendations, as_of)
        .agg(
            F.countDistinct("customer_id").alias("customers"),
            F.count(F.lit(1)).alias("lines"),
            F.countDistinct("product_id").alias("products_recommended"),
        )
        .crossJoin(sellable)
        .withColumn("coverage", safe_ratio("products_recommended", "sellable_products"))
    )


def most_recommended_products(
    recommendations: DataFrame, *, products: DataFrame, as_of: dt.date, n: int = 10
) -> DataFrame:
    """The products in the most lists of one as-of date (how concentrated the lists are).

    Args:
        recommendations: gold.recommendations.
        products: The output of :func:`current_products`.
        as_of: The as-of date.
        n: How many products.

    Returns:
        Up to ``n`` rows by ``lists`` desc, then ``product_id``: ``product_id``, ``name``,
        ``category_l1``, ``lists`` (customers whose list has it), ``share_of_customers``.

    Raises:
        AnalyticsArgumentError: ``n`` is below 1.
    """
    if n < 1:
        raise AnalyticsArgumentError(f"most_recommended_products needs n >= 1, got {n}")
    rows = _recommendations_on(recommendations, as_of)
    customers = rows.agg(F.countDistinct("customer_id").alias("_customers"))
    return (
        rows.groupBy("product_id")
        .agg(F.countDistinct("customer_id").alias("lists"))
        .crossJoin(customers)
        .withColumn("share_of_customers", safe_ratio("lists", "_customers"))
        .orderBy(F.desc("lists"), "product_id")
        .limit(n)
        .transform(with_product_attributes, products=products)
        .select("product_id", "name", "category_l1", "lists", "share_of_customers")
        .orderBy(F.desc("lists"), "product_id")
    )


# --- Products ------------------------------------------------------------------------------


def current_products(products: DataFrame) -> DataFrame:
    """The latest version of each product, for labels.

    Args:
        products: gold.dim_product; requires ``product_id``, ``name``, ``brand``,
            ``category_l1``, ``valid_from``.

    Returns:
        One row per non-null ``product_id``: ``product_id``, ``name``, ``brand``,
        ``category_l1`` of its version with the latest ``valid_from`` (ties: current first).
    """
    require_columns(
        products, ["product_id", "name", "brand", "category_l1", "valid_from"], what="current_products"
    )
    current_first = F.col("is_current").desc_nulls_last() if "is_current" in products.columns else F.lit(0)
    latest = Window.partitionBy("product_id").orderBy(F.col("valid_from").desc_nulls_last(), current_first)
    return (
        products.where(F.col("product_id").isNotNull())
        .withColumn("_version", F.row_number().over(latest))
        .where(F.col("_version") == 1)
        .select("product_id", "name", "brand", "category_l1")
    )


def with_product_attributes(popularity: DataFrame, *, products: DataFrame) -> DataFrame:
    """Add the product's ``name``, ``brand`` and (if missing) ``category_l1``.

    Args:
        popularity: Any frame with ``product_id`` (e.g. gold.product_popularity).
        products: The output of :func:`current_products` (one row per product).

    Returns:
        ``popularity`` with the attributes it lacked; null for products unknown to
        ``products``. Same grain.
    """
    require_columns(popularity, ["product_id"], what="with_product_attributes")
    wanted = [c for c in ("name", "brand", "category_l1") if c not in popularity.columns]
    return popularity.join(products.select("product_id", *wanted), on="product_id", how="left")


def popularity_snapshot(popularity: DataFrame, *, as_of: dt.date, window_days: int) -> DataFrame:
    """The product_popularity rows of one as-of date and window.

    Args:
        popularity: gold.product_popularity; requires ``as_of_date`` and ``window_days``.
        as_of: The as-of date.
        window_days: The window length (one of ``pipeline.popularity_windows_days``).

    Returns:
        The matching rows, unchanged (one per active product).
    """
    require_columns(popularity, ["as_of_date", "window_days"], what="popularity_snapshot")
    return popularity.where((F.col("as_of_date") == F.lit(as_of)) & (F.col("window_days") == window_days))


def top_products(
    popularity: DataFrame, *, products: DataFrame, as_of: dt.date, window_days: int, n: int = 10
) -> DataFrame:
    """The ``n`` best-ranked products of one as-of date and window, with their names.

    Args:
        popularity: gold.product_popularity (the contract's columns).
        products: The output of :func:`current_products`.
        as_of: The as-of date.
        window_days: The window.
        n: How many products (the ``rank_overall`` cut-off).

    Returns:
        Up to ``n`` rows ordered by ``rank_overall``: ``rank_overall``, ``product_id``,
        ``name``, ``brand``, ``category_l1``, ``views``, ``add_to_carts``, ``purchases``,
        ``units``, ``revenue`` (double), ``view_to_cart_rate``, ``cart_to_purchase_rate``,
        ``rank_in_category``.

    Raises:
        AnalyticsArgumentError: ``n`` is below 1.
    """
    if n < 1:
        raise AnalyticsArgumentError(f"top_products needs n >= 1, got {n}")
    return (
        popularity.transform(popularity_snapshot, as_of=as_of, window_days=window_days)
        .where(F.col("rank_overall") <= n)
        .transform(with_product_attributes, products=products)
        .select(
            "rank_overall",
            "product_id",
            "name",
            "brand",
            F.coalesce("category_l1", F.lit(UNCATEGORISED)).alias("category_l1"),
            "views",
            "add_to_carts",
            "purchases",
            "units",
            _money("revenue").alias("revenue"),
            "view_to_cart_rate",
            "cart_to_purchase_rate",
            "rank_in_category",
        )
        .orderBy("rank_overall")
    )


def category_ranking(popularity: DataFrame, *, as_of: dt.date, window_days: int) -> DataFrame:
    """Categories (``category_l1``) of one as-of date and window ranked by revenue.

    Args:
        popularity: gold.product_popularity with ``category_l1`` (the table has it; else
            add it with :func:`with_product_attributes`), ``views``, ``add_to_carts``,
            ``purchases``, ``units``, ``revenue``.
        as_of: The as-of date.
        window_days: The window.

    Returns:
        One row per category (null as :data:`UNCATEGORISED`): ``rank`` (1 = most revenue;
        ties by units, then name), ``category_l1``, ``products``, ``views``, ``add_to_carts``,
        ``purchases``, ``units``, ``revenue`` (double), ``view_to_cart_rate``,
        ``cart_to_purchase_rate`` (of the summed counts; null when the base is 0).
    """
    counts = ["views", "add_to_carts", "purchases", "units"]
    require_columns(popularity, ["product_id", "category_l1", *counts, "revenue"], what="category_ranking")
    ranking = Window.orderBy(F.desc("revenue"), F.desc("units"), F.asc("category_l1"))
    return (
        popularity.transform(popularity_snapshot, as_of=as_of, window_days=window_days)
        .withColumn("category_l1", F.coalesce("category_l1", F.lit(UNCATEGORISED)))
        .groupBy("category_l1")
        .agg(
            F.countDistinct("product_id").alias("products"),
            *[F.coalesce(F.sum(c), F.lit(0)).cast(T.LongType()).alias(c) for c in counts],
            _money(F.sum("revenue")).alias("revenue"),
        )
        .withColumn("view_to_cart_rate", safe_ratio("add_to_carts", "views"))
        .withColumn("cart_to_purchase_rate", safe_ratio("purchases", "add_to_carts"))
        .withColumn("rank", F.row_number().over(ranking))
        .select(
            "rank",
            "category_l1",
            "products",
            *counts,
            "revenue",
            "view_to_cart_rate",
            "cart_to_purchase_rate",
        )
        .orderBy("rank")
    )


def session_funnel(sessions: DataFrame) -> DataFrame:
    """How many sessions reached each funnel step (page view .. purchase).

    Args:
        sessions: gold.fact_sessions; requires ``funnel_step_no`` (1..5, the furthest step
            reached; a null counts as step 1).

    Returns:
        Five rows, one per step of :data:`~pipeline_lib.gold.sessions.FUNNEL_STEPS`:
        ``step_no``, ``step``, ``sessions`` (reaching at least that step),
        ``rate_from_previous`` and ``rate_from_start`` (null when the base is 0).
    """
    require_columns(sessions, ["funnel_step_no"], what="session_funnel")
    reached = F.coalesce(F.col("funnel_step_no"), F.lit(1))
    counts = sessions.agg(
        *[
            F.coalesce(F.sum((reached >= number).cast(T.LongType())), F.lit(0)).alias(f"step_{number}")
            for number in range(1, len(FUNNEL_STEPS) + 1)
        ]
    )
    steps = F.array(
        *[
            F.struct(
                F.lit(number).alias("step_no"),
                F.lit(step).alias("step"),
                F.col(f"step_{number}").alias("sessions"),
                safe_ratio(F.col(f"step_{number}"), F.col(f"step_{max(number - 1, 1)}")).alias(
                    "rate_from_previous"
                ),
                safe_ratio(F.col(f"step_{number}"), F.col("step_1")).alias("rate_from_start"),
            )
            for number, step in enumerate(FUNNEL_STEPS, start=1)
        ]
    )
    return counts.select(F.explode(steps).alias("s")).select("s.*").orderBy("step_no")


def daily_conversion(sessions: DataFrame) -> DataFrame:
    """Sessions, converted sessions and conversion rate per day.

    Args:
        sessions: gold.fact_sessions; requires ``session_date_key`` and ``converted``.

    Returns:
        One row per ``session_date`` (null key: a null date), ordered: ``sessions``,
        ``converted_sessions`` (a null ``converted`` counts as not converted),
        ``conversion_rate``.
    """
    require_columns(sessions, ["session_date_key", "converted"], what="daily_conversion")
    return (
        sessions.withColumn("session_date", date_from_key("session_date_key"))
        .groupBy("session_date")
        .agg(
            F.count(F.lit(1)).alias("sessions"),
            F.sum(F.coalesce(F.col("converted"), F.lit(False)).cast(T.LongType())).alias(
                "converted_sessions"
            ),
        )
        .withColumn("conversion_rate", safe_ratio("converted_sessions", "sessions"))
        .orderBy(F.col("session_date").asc_nulls_last())
    )


# --- Data quality and operations ------------------------------------------------------------


def quarantine_by_rule(quarantined: DataFrame, *, table: str) -> DataFrame:
    """Quarantined rows per ingest date and failed rule of one quarantine table.

    A row that failed two rules counts once for each.

    Args:
        quarantined: ``quarantine.<table>``; requires ``_failed_rules`` (array of rule names)
            and ``_ingest_date``.
        table: The silver table the quarantine belongs to (a label).

    Returns:
        One row per (``ingest_date``, ``rule``): ``table``, ``ingest_date``, ``rule``, ``rows``.
        A row with no rule listed counts under a null ``rule``.
    """
    require_columns(quarantined, ["_failed_rules", "_ingest_date"], what="quarantine_by_rule")
    return (
        quarantined.select(
            F.col("_ingest_date").cast(T.DateType()).alias("ingest_date"),
            F.explode_outer("_failed_rules").alias("rule"),
        )
        .groupBy("ingest_date", "rule")
        .agg(F.count(F.lit(1)).alias("rows"))
        .select(F.lit(table).alias("table"), "ingest_date", "rule", "rows")
    )


def quality_failure_rates(metrics: DataFrame) -> DataFrame:
    """Rows checked and failed per table, rule and action over all measurements.

    Args:
        metrics: ops.quality_metrics; requires ``table``, ``rule``, ``action``,
            ``rows_checked``, ``rows_failed``.

    Returns:
        One row per (``table``, ``rule``, ``action``), worst first: ``rows_checked``,
        ``rows_failed``, ``failure_rate`` (null when nothing was checked).
    """
    require_columns(
        metrics, ["table", "rule", "action", "rows_checked", "rows_failed"], what="quality_failure_rates"
    )
    return (
        metrics.groupBy("table", "rule", "action")
        .agg(
            F.coalesce(F.sum("rows_checked"), F.lit(0)).cast(T.LongType()).alias("rows_checked"),
            F.coalesce(F.sum("rows_failed"), F.lit(0)).cast(T.LongType()).alias("rows_failed"),
        )
        .withColumn("failure_rate", safe_ratio("rows_failed", "rows_checked"))
        .orderBy(F.desc_nulls_last("failure_rate"), "table", "rule")
    )


def run_history(runs: DataFrame) -> DataFrame:
    """One line per pipeline run (a ``run_id`` groups the jobs of one command).

    Args:
        runs: ops.pipeline_runs; requires ``run_id``, ``job``, ``status``, ``started_at``,
            ``ended_at``, ``rows_written``, ``rows_quarantined``.

    Returns:
        One row per ``run_id``, oldest first: ``started_at``, ``ended_at``, ``duration_s``
        (first start to last end), ``jobs``, ``failed_jobs``, ``rows_written``,
        ``rows_quarantined``, ``status`` (``failed`` if any job failed, else ``succeeded``).
    """
    require_columns(
        runs,
        ["run_id", "job", "status", "started_at", "ended_at", "rows_written", "rows_quarantined"],
        what="run_history",
    )
    return (
        runs.groupBy("run_id")
        .agg(
            F.min("started_at").alias("started_at"),
            F.max("ended_at").alias("ended_at"),
            F.count(F.lit(1)).alias("jobs"),
            F.sum((F.col("status") != "succeeded").cast(T.LongType())).alias("failed_jobs"),
            F.coalesce(F.sum("rows_written"), F.lit(0)).cast(T.LongType()).alias("rows_written"),
            F.coalesce(F.sum("rows_quarantined"), F.lit(0)).cast(T.LongType()).alias("rows_quarantined"),
        )
        .withColumn("duration_s", _seconds_between("started_at", "ended_at"))
        .withColumn("status", F.when(F.col("failed_jobs") > 0, "failed").otherwise("succeeded"))
        .select(
            "run_id",
            "started_at",
            "ended_at",
            "duration_s",
            "jobs",
            "failed_jobs",
            "rows_written",
            "rows_quarantined",
            "status",
        )
        .orderBy("started_at", "run_id")
    )


def job_run_summary(runs: DataFrame) -> DataFrame:
    """Per job: how often it ran and failed, how long it takes, and its last outcome.

    Args:
        runs: ops.pipeline_runs; requires ``job``, ``layer``, ``status``, ``started_at``, ``ended_at``.

    Returns:
        One row per ``job``, in layer then job order: ``layer``, ``runs``, ``failures``,
        ``avg_duration_s``, ``max_duration_s``, ``last_started_at``, ``last_status``,
        ``last_success_at`` (end of its latest succeeded run; null if none).
    """
    require_columns(runs, ["job", "layer", "status", "started_at", "ended_at"], what="job_run_summary")
    duration = _seconds_between("started_at", "ended_at")
    succeeded = F.col("status") == "succeeded"
    return (
        runs.groupBy("layer", "job")
        .agg(
            F.count(F.lit(1)).alias("runs"),
            F.sum((~succeeded).cast(T.LongType())).alias("failures"),
            F.avg(duration).cast(T.DoubleType()).alias("avg_duration_s"),
            F.max(duration).alias("max_duration_s"),
            F.max("started_at").alias("last_started_at"),
            F.max_by("status", "started_at").alias("last_status"),
            F.max(F.when(succeeded, F.col("ended_at"))).alias("last_success_at"),
        )
        .orderBy("layer", "job")
    )


def failed_runs(runs: DataFrame) -> DataFrame:
    """The failed job runs, latest first, with the first line of their error.

    Args:
        runs: ops.pipeline_runs; requires ``run_id``, ``job``, ``status``, ``started_at``, ``error``.

    Returns:
        One row per failed job run: ``started_at``, ``run_id``, ``job``, ``error`` (first line).
    """
    require_columns(runs, ["run_id", "job", "status", "started_at", "error"], what="failed_runs")
    return (
        runs.where(F.col("status") != "succeeded")
        .select(
            "started_at",
            "run_id",
            "job",
            F.substring_index(F.coalesce(F.col("error"), F.lit("")), "\n", 1).alias("error"),
        )
        .orderBy(F.desc("started_at"), "job")
    )


def ingest_file_summary(ingested_files: DataFrame) -> DataFrame:
    """Delivered files per source and ingest status, with their row counts.

    Args:
        ingested_files: ops.ingested_files; requires ``source``, ``status``, ``file``, ``rows``,
            ``corrupt_rows``, ``rescued_rows``, ``problems``.

    Returns:
        One row per (``source``, ``status``: ingested/empty/failed): ``files``,
        ``files_with_problems``, ``rows``, ``corrupt_rows``, ``rescued_rows``.
    """
    require_columns(
        ingested_files,
        ["source", "status", "file", "rows", "corrupt_rows", "rescued_rows", "problems"],
        what="ingest_file_summary",
    )
    return (
        ingested_files.groupBy("source", "status")
        .agg(
            F.countDistinct("file").alias("files"),
            F.countDistinct(F.when(F.size("problems") > 0, F.col("file"))).alias("files_with_problems"),
            *[
                F.coalesce(F.sum(c), F.lit(0)).cast(T.LongType()).alias(c)
                for c in ("rows", "corrupt_rows", "rescued_rows")
            ],
        )
        .orderBy("source", "status")
    )


def ingest_problems(ingested_files: DataFrame) -> DataFrame:
    """Each problem recorded for a delivered file, latest deliveries first.

    Args:
        ingested_files: ops.ingested_files; requires ``source``, ``file``, ``ingest_date``,
            ``status``, ``problems``.

    Returns:
        One row per file and problem (files without problems have no row): ``source``,
        ``ingest_date``, ``file``, ``status``, ``problem``.
    """
    require_columns(
        ingested_files, ["source", "file", "ingest_date", "status", "problems"], what="ingest_problems"
    )
    return ingested_files.select(
        "source", "ingest_date", "file", "status", F.explode("problems").alias("problem")
    ).orderBy(F.desc("ingest_date"), "source", "file", "problem")


# --- Campaigns and stock ---------------------------------------------------------------------


def audience_sizes(audiences: DataFrame, *, as_of: dt.date) -> DataFrame:
    """Members per campaign, channel, segment and group on one as-of date.

    Args:
        audiences: gold.campaign_audiences.
        as_of: The as-of date.

    Returns:
        ``campaign``, ``channel``, ``segment``, ``treatment``, ``control``, ``members``
        (counts), one row per campaign and segment, by campaign then largest segment first.
    """
    require_columns(
        audiences, ["campaign", "channel", "segment", "group", "as_of_date"], what="audience_sizes"
    )
    return (
        audiences.where(F.col("as_of_date") == F.lit(as_of))
        .groupBy("campaign", "channel", "segment")
        .agg(
            F.count_if(F.col("group") == "treatment").alias("treatment"),
            F.count_if(F.col("group") == "control").alias("control"),
            F.count(F.lit(1)).alias("members"),
        )
        .orderBy("campaign", F.desc("members"), "segment")
    )


def campaign_uplift(results: DataFrame, *, as_of: dt.date) -> DataFrame:
    """One row per campaign: both groups' conversion and the uplift with its interval.

    Args:
        results: gold.campaign_results.
        as_of: The as-of date of the results.

    Returns:
        ``campaign``, ``channel``, ``start_date``, ``days_measured``, ``treatment_customers``,
        ``control_customers``, ``treatment_conversion``, ``control_conversion``,
        ``conversion_uplift`` with ``ci_low``/``ci_high``, ``revenue_uplift_per_customer``,
        ``is_significant``; by campaign.
    """
    require_columns(results, ["campaign", "group", "as_of_date", "conversion_uplift"], what="campaign_uplift")
    on_date = results.where(F.col("as_of_date") == F.lit(as_of))
    control = on_date.where(F.col("group") == "control").select(
        "campaign",
        F.col("customers").alias("control_customers"),
        F.col("conversion_rate").alias("control_conversion"),
    )
    return (
        on_date.where(F.col("group") == "treatment")
        .join(control, on="campaign", how="left")
        .select(
            "campaign",
            "channel",
            "start_date",
            "days_measured",
            F.col("customers").alias("treatment_customers"),
            "control_customers",
            F.col("conversion_rate").alias("treatment_conversion"),
            "control_conversion",
            "conversion_uplift",
            F.col("conversion_uplift_ci_low").alias("ci_low"),
            F.col("conversion_uplift_ci_high").alias("ci_high"),
            "revenue_uplift_per_customer",
            "is_significant",
        )
        .orderBy("campaign")
    )


def products_at_risk(
    signals: DataFrame, *, products: DataFrame | None = None, as_of: dt.date, n: int = 15
) -> DataFrame:
    """The products that need stock soonest on one as-of date.

    A product is at risk when ``reorder_now`` or when its days of cover are shorter than its
    lead time; the fewest days of cover come first.

    Args:
        signals: gold.stock_signals.
        products: Optional :func:`current_products` for names.
        as_of: The as-of date.
        n: How many rows at most.

    Returns:
        ``product_id`` (``name`` with ``products``), ``available``, ``avg_daily_units_28d``,
        ``days_of_cover``, ``lead_time_days``, ``days_out_of_stock_28d``,
        ``lost_sales_units_28d``, ``reorder_point``, ``suggested_quantity``.
    """
    require_columns(
        signals, ["product_id", "as_of_date", "reorder_now", "days_of_cover"], what="products_at_risk"
    )
    at_risk = F.col("reorder_now") | F.coalesce(
        F.col("days_of_cover") < F.col("lead_time_days"), F.lit(False)
    )
    rows = signals.where((F.col("as_of_date") == F.lit(as_of)) & at_risk)
    label = []
    if products is not None:
        rows = rows.join(products.select("product_id", "name"), on="product_id", how="left")
        label = ["name"]
    return (
        rows.select(
            "product_id",
            *label,
            "available",
            "avg_daily_units_28d",
            "days_of_cover",
            "lead_time_days",
            "days_out_of_stock_28d",
            "lost_sales_units_28d",
            "reorder_point",
            "suggested_quantity",
        )
        .orderBy(F.col("days_of_cover").asc_nulls_first(), "product_id")
        .limit(n)
    )


def stock_headline(signals: DataFrame, *, as_of: dt.date) -> DataFrame:
    """One row: ``products`` with stock signals on ``as_of``, how many to ``reorder_now``, how many
    are ``out_of_stock_now`` (nothing available), and their ``lost_sales_units_28d`` (a double, 0
    when unknown)."""
    require_columns(
        signals, ["as_of_date", "reorder_now", "available", "lost_sales_units_28d"], what="stock_headline"
    )
    return signals.where(F.col("as_of_date") == F.lit(as_of)).agg(
        F.count(F.lit(1)).alias("products"),
        F.count_if(F.col("reorder_now")).alias("reorder_now"),
        F.count_if(F.col("available") <= 0).alias("out_of_stock_now"),
        F.coalesce(F.sum("lost_sales_units_28d"), F.lit(0.0)).alias("lost_sales_units_28d"),
    )


# Upper bounds (days, exclusive) of the days-of-cover buckets; the last bucket is open.
COVER_BUCKETS = (3, 7, 14, 28, 56)


def cover_distribution(signals: DataFrame, *, as_of: dt.date) -> DataFrame:
    """Products per days-of-cover bucket on one as-of date.

    Returns:
        ``bucket_no`` (0 first), ``bucket`` (``0-3``, ``3-7``, ..., ``56+``, and ``no demand``
        for products whose demand is unknown or zero), ``products``; every bucket, in order.
    """
    require_columns(signals, ["as_of_date", "days_of_cover"], what="cover_distribution")
    bounds = (0, *COVER_BUCKETS)
    labels = [f"{low}-{high}" for low, high in zip(bounds, COVER_BUCKETS, strict=False)]
    labels += [f"{COVER_BUCKETS[-1]}+", "no demand"]
    cover = F.col("days_of_cover")
    bucket = F.when(cover.isNull(), F.lit(len(labels) - 1))
    for position, high in enumerate(COVER_BUCKETS):
        bucket = bucket.when(cover < high, F.lit(position))
    bucket = bucket.otherwise(F.lit(len(COVER_BUCKETS)))
    counts = (
        signals.where(F.col("as_of_date") == F.lit(as_of))
        .groupBy(bucket.alias("bucket_no"))
        .agg(F.count(F.lit(1)).alias("products"))
    )
    every = local_frame(signals.sparkSession, list(enumerate(labels)), "bucket_no int, bucket string")
    return (
        every.join(counts, on="bucket_no", how="left")
        .select("bucket_no", "bucket", F.coalesce(F.col("products"), F.lit(0)).alias("products"))
        .orderBy("bucket_no")
    )


def stock_status_by_day(daily: DataFrame) -> DataFrame:
    """Products in and out of stock per day, from the daily closing stock.

    A product is in stock on a day when one of its locations closed with ``available > 0``.

    Returns:
        ``date``, ``products`` (with a snapshot that day), ``out_of_stock``, ``out_of_stock_share``.
    """
    require_columns(daily, ["product_id", "date", "in_stock"], what="stock_status_by_day")
    per_product = daily.groupBy("date", "product_id").agg(F.max("in_stock").alias("in_stock"))
    return (
        per_product.groupBy("date")
        .agg(F.count(F.lit(1)).alias("products"), F.count_if(~F.col("in_stock")).alias("out_of_stock"))
        .withColumn("out_of_stock_share", safe_ratio("out_of_stock", "products"))
        .orderBy("date")
    )
