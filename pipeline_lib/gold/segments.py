"""Gold ``customer_segments``: recency, frequency and monetary (RFM) scores and a segment per customer.

Grain: one row per customer with at least one revenue order up to and including the as-of
date. Everything is computed from the silver order state as it stands, restricted to
orders dated on or before the as-of date, so the same inputs and as-of date always give
the same table, whatever day the job runs (no ``current_date()`` anywhere).

Definitions (see ``docs/segments_and_popularity.md``):

* a *revenue order* has a known ``order_date`` and a current status that is neither
  ``cancelled`` nor ``returned``, in any case (a null status is not revenue: it is not
  known to be sold);
* its revenue is the sum of its current lines' ``net_amount_base``
  (``quantity * unit_price - discount_amount`` at the order date's rate);
* a score is ``1 + floor(buckets * worse / customers)`` where ``worse`` is the number of
  customers strictly worse on that measure: quintiles for 5 buckets, 5 best, and equal
  values always share a score.

Revenue status comes from :func:`pipeline_lib.gold.facts.is_revenue_status` (the one
definition the facts use too); :func:`filter_revenue_orders` and
:func:`join_revenue_order_lines` are shared with :mod:`pipeline_lib.gold.popularity`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline_lib.gold.facts import is_revenue_status
from pipeline_lib.gold.schemas import CUSTOMER_SEGMENTS_SCHEMA, conform_to
from pipeline_lib.silver.schemas import BASE_MONEY

# The table: the contract's columns, then the first and last revenue order dates.
CUSTOMER_SEGMENTS_TABLE_SCHEMA = T.StructType(
    [
        *CUSTOMER_SEGMENTS_SCHEMA.fields,
        T.StructField("first_order_date", T.DateType(), True),
        T.StructField("last_order_date", T.DateType(), True),
    ]
)


class SegmentConfigError(ValueError):
    """The score buckets or the segment mapping given to a transform are unusable."""


# ---------------------------------------------------------------------------------------
# Column helpers (Column -> Column)
# ---------------------------------------------------------------------------------------
def quantile_score(value: str | Column, *, buckets: int, higher_is_better: bool = True) -> Column:
    """Score ``1..buckets`` (``buckets`` best) of a value among all rows of the DataFrame.

    ``score = 1 + floor(buckets * worse / n)`` where ``worse`` is the number of rows
    strictly worse than this one (``rank() - 1`` ordered from worst to best) and ``n`` the
    number of rows. Without ties this is exactly ``ntile(buckets)`` when ``n`` is a multiple
    of ``buckets``; equal values always get the same score (they have the same ``worse``),
    so a heavily tied value keeps its bucket and the next value may skip one. The result
    depends only on the values, never on row order or on another column.

    A null value counts as the worst value (it sorts first).

    The window spans the whole DataFrame (one partition): fine for one row per customer,
    not meant for event-sized data.

    Args:
        value: The measure to score.
        buckets: Number of buckets (5 for quintiles); at least 1.
        higher_is_better: False for a measure where smaller is better (recency in days).

    Raises:
        SegmentConfigError: ``buckets`` is below 1.
    """
    if buckets < 1:
        raise SegmentConfigError(f"score buckets must be at least 1, got {buckets}")
    value = F.col(value) if isinstance(value, str) else value
    worst_first = value.asc_nulls_first() if higher_is_better else value.desc_nulls_first()
    ranked = Window.orderBy(worst_first).rowsBetween(Window.unboundedPreceding, Window.currentRow)
    everything = Window.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    worse = F.rank().over(ranked) - 1
    rows = F.count(F.lit(1)).over(everything)
    # Both operands are integers far below 2**53: the quotient is exact or correctly rounded
    # and never rounds across an integer, so floor() puts every cut-off exactly.
    return (F.lit(1) + F.floor(worse * F.lit(buckets) / rows)).cast(T.IntegerType())


def segment_from_mapping(mapping: Sequence[tuple[str, str]]) -> Column:
    """The segment of the first ``(segment, condition)`` pair whose SQL condition holds.

    Conditions are Spark SQL booleans over the row's columns (the transform provides
    ``r``, ``f`` and ``m``, the three scores). There is no hidden default: a row that no
    condition matches gets a null segment, so the mapping ends with an explicit ``true``.

    Args:
        mapping: Ordered pairs ``(segment name, SQL condition)``; first match wins.

    Raises:
        SegmentConfigError: The mapping is empty, or a segment or condition is blank.
        pyspark.errors.ParseException: A condition is not valid SQL.
    """
    if not mapping:
        raise SegmentConfigError("the segment mapping is empty: give at least one (segment, condition) pair")
    chosen: Column | None = None
    for position, (segment, condition) in enumerate(mapping):
        if not segment or not str(condition).strip():
            raise SegmentConfigError(f"segment mapping entry {position} needs a segment and a condition")
        matches = F.expr(condition)  # a null result does not match, as in SQL CASE WHEN
        chosen = F.when(matches, F.lit(segment)) if chosen is None else chosen.when(matches, F.lit(segment))
    assert chosen is not None  # the mapping is not empty
    return chosen


# ---------------------------------------------------------------------------------------
# DataFrame transformations (DataFrame -> DataFrame)
# ---------------------------------------------------------------------------------------
def filter_revenue_orders(
    orders: DataFrame, *, as_of: dt.date, from_date: dt.date | None = None
) -> DataFrame:
    """Keep the revenue orders dated in ``[from_date, as_of]`` (both inclusive).

    Args:
        orders: silver.orders; requires ``order_id``, ``order_status``, ``order_date``.
        as_of: Last order date kept; later orders are ignored.
        from_date: First order date kept; None for no lower bound.

    Returns:
        The same columns, fewer rows: orders whose status is not cancelled, returned or
        null and whose ``order_date`` is not null and within the range. Guests (null
        ``customer_id``) are kept; callers that need customers filter them.
    """
    in_range = F.col("order_date") <= F.lit(as_of)
    if from_date is not None:
        in_range = in_range & (F.col("order_date") >= F.lit(from_date))
    return orders.where(is_revenue_status("order_status") & F.col("order_date").isNotNull() & in_range)


def join_revenue_order_lines(revenue_orders: DataFrame, *, order_items: DataFrame) -> DataFrame:
    """The current lines of revenue orders, with the order's customer and date.

    Args:
        revenue_orders: Output of :func:`filter_revenue_orders`; requires ``order_id``,
            ``customer_id``, ``order_date``.
        order_items: silver.order_items; requires ``order_id``, ``line_no``, ``product_id``,
            ``quantity``, ``net_amount_base``.

    Returns:
        One row per line (inner join: an order without lines has no row, a line without
        its order is dropped): ``order_id``, ``line_no``, ``customer_id``, ``order_date``,
        ``product_id``, ``quantity``, ``net_amount_base`` (null when silver had no rate).
    """
    lines = order_items.select("order_id", "line_no", "product_id", "quantity", "net_amount_base")
    return revenue_orders.select("order_id", "customer_id", "order_date").join(
        lines, on="order_id", how="inner"
    )


def aggregate_customer_rfm(orders: DataFrame, *, order_items: DataFrame, as_of: dt.date) -> DataFrame:
    """Recency, frequency and monetary value per customer as of a date.

    Args:
        orders: silver.orders; requires ``order_id``, ``customer_id``, ``order_status``,
            ``order_date``. Order ids are unique (silver is current state).
        order_items: silver.order_items; requires ``order_id``, ``net_amount_base``.
        as_of: Orders dated after it are ignored.

    Returns:
        One row per customer with a revenue order on or before ``as_of`` (guests excluded):
        ``customer_id``, ``recency_days`` (``as_of`` minus the last revenue order date),
        ``frequency`` (distinct revenue orders), ``monetary`` (their revenue; a line without
        an amount adds nothing, an order without lines adds 0), ``first_order_date``,
        ``last_order_date``.
    """
    customer_orders = (
        orders.transform(filter_revenue_orders, as_of=as_of)
        .where(F.col("customer_id").isNotNull())
        .select("order_id", "customer_id", "order_date")
    )
    order_revenue = order_items.groupBy("order_id").agg(F.sum("net_amount_base").alias("order_revenue"))
    return (
        customer_orders.join(order_revenue, on="order_id", how="left")
        .groupBy("customer_id")
        .agg(
            F.countDistinct("order_id").alias("frequency"),
            F.coalesce(F.sum("order_revenue"), F.lit(0).cast(BASE_MONEY)).alias("monetary"),
            F.min("order_date").alias("first_order_date"),
            F.max("order_date").alias("last_order_date"),
        )
        .withColumn("recency_days", F.datediff(F.lit(as_of), F.col("last_order_date")))
    )


def with_rfm_scores(customers: DataFrame, *, score_buckets: int) -> DataFrame:
    """Add ``r_score``, ``f_score``, ``m_score`` (``1..score_buckets``, highest best).

    Recency scores best when fewest days; frequency and monetary when highest. Equal
    values share a score (see :func:`quantile_score`).

    Args:
        customers: Requires ``recency_days``, ``frequency``, ``monetary``; one row per customer
            (the scores are relative to every row of the DataFrame).
        score_buckets: Number of buckets, 5 for quintiles.

    Raises:
        SegmentConfigError: ``score_buckets`` is below 1.
    """
    return customers.withColumns(
        {
            "r_score": quantile_score("recency_days", buckets=score_buckets, higher_is_better=False),
            "f_score": quantile_score("frequency", buckets=score_buckets),
            "m_score": quantile_score("monetary", buckets=score_buckets),
        }
    )


def with_segment(customers: DataFrame, *, mapping: Sequence[tuple[str, str]]) -> DataFrame:
    """Add ``segment``: the first ``(segment, condition)`` of ``mapping`` that holds.

    Conditions see ``r``, ``f``, ``m`` (the scores) and every column of ``customers``.
    Null when no condition holds (no hidden default).

    Args:
        customers: Requires ``r_score``, ``f_score``, ``m_score``.
        mapping: Ordered ``(segment, SQL condition)`` pairs, e.g. ``("Champions", "r >= 4 AND f >= 4")``.

    Raises:
        SegmentConfigError: The mapping is empty or has a blank entry.
    """
    segment = segment_from_mapping(mapping)
    scored = customers.withColumns({"r": F.col("r_score"), "f": F.col("f_score"), "m": F.col("m_score")})
    return scored.withColumn("segment", segment).drop("r", "f", "m")


def clean_customer_segments(customers: DataFrame) -> DataFrame:
    """Select and cast the columns of :data:`CUSTOMER_SEGMENTS_TABLE_SCHEMA`, in its order."""
    return conform_to(customers, CUSTOMER_SEGMENTS_TABLE_SCHEMA)


def customer_segments(
    orders: DataFrame,
    *,
    order_items: DataFrame,
    as_of: dt.date,
    score_buckets: int,
    mapping: Sequence[tuple[str, str]],
) -> DataFrame:
    """The gold ``customer_segments`` rows of one as-of date.

    Args:
        orders: silver.orders (``order_id``, ``customer_id``, ``order_status``, ``order_date``).
        order_items: silver.order_items (``order_id``, ``net_amount_base``).
        as_of: The as-of date; orders dated after it are ignored.
        score_buckets: Buckets per score (``segments.score_buckets``, 5 = quintiles).
        mapping: Ordered ``(segment, SQL condition over r, f, m)`` pairs (``segments.mapping``).

    Returns:
        One row per customer with at least one revenue order up to ``as_of``:
        ``customer_id, as_of_date, recency_days, frequency, monetary, r_score, f_score,
        m_score, segment, first_order_date, last_order_date``. Empty when there is none.

    Raises:
        SegmentConfigError: ``score_buckets`` below 1, or an empty or blank mapping.
    """
    return (
        orders.transform(aggregate_customer_rfm, order_items=order_items, as_of=as_of)
        .transform(with_rfm_scores, score_buckets=score_buckets)
        .transform(with_segment, mapping=mapping)
        .withColumn("as_of_date", F.lit(as_of))
        .transform(clean_customer_segments)
    )
