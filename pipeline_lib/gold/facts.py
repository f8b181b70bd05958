"""Gold order facts: fact_order_lines and fact_orders (current state of each order).

Dimension keys are resolved *point in time*: an order points at the version of its
customer, and each line at the version of its product, that was valid when the order was
placed (``valid_from <= order_ts < coalesce(valid_to, infinity)``). An order placed before
the first known version takes the first version; one placed after the last version was
closed takes the last. An id the dimension does not know yet takes its inferred member's
key, a null id the unknown member (``-1``): no fact row is ever dropped for a missing
dimension row.

Revenue (the contract): ``quantity * unit_price - discount_amount`` converted at the order
date's rate (silver's ``net_amount_base``), summed over the lines of orders whose current
status is not ``cancelled`` or ``returned`` (``is_revenue``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from pipeline_lib.gold.dimensions import CUSTOMER_ENTITY, PRODUCT_ENTITY, date_key, member_sk
from pipeline_lib.gold.schemas import FACT_ORDER_LINES_SCHEMA, FACT_ORDERS_SCHEMA, conform_to
from pipeline_lib.silver.schemas import BASE_MONEY

NON_REVENUE_STATUSES = ("cancelled", "returned")

_ORDER_COLUMNS = ("order_id", "customer_id", "order_ts", "order_date", "order_status", "channel", "currency")


# --- Column functions ------------------------------------------------------------------------


def is_revenue_status(status: str | Column) -> Column:
    """True unless the order status is ``cancelled`` or ``returned`` (any case); false for null."""
    column = F.col(status) if isinstance(status, str) else status
    return F.coalesce(~F.lower(column).isin(*NON_REVENUE_STATUSES), F.lit(False))


# --- DataFrame transformations ---------------------------------------------------------------


def with_point_in_time_sk(
    facts: DataFrame,
    *,
    versions: DataFrame,
    natural_key: str,
    event_ts: str,
    sk: str,
    grain: Sequence[str],
    entity: str,
) -> DataFrame:
    """Add the surrogate key of the dimension version valid at each fact's time.

    Picks, among the versions of the fact's ``natural_key``, the one with the latest
    ``valid_from <= event_ts`` (the version valid then, or the last one if it was closed
    before); if every version starts later (or ``event_ts`` is null), the first version.
    No version: the inferred member's key (:func:`~pipeline_lib.gold.dimensions.member_sk`),
    ``-1`` for a null id. Row count and columns of ``facts`` are kept.

    Args:
        facts: Requires ``natural_key``, ``event_ts`` and ``grain`` (unique per row).
        versions: The dimension (gold dim_customer/dim_product): requires ``natural_key``,
            ``valid_from`` and ``sk``; rows with a null ``natural_key`` are ignored.
        natural_key: E.g. ``customer_id``.
        event_ts: The fact's timestamp, e.g. ``order_ts``.
        sk: The key column to add, e.g. ``customer_sk``.
        grain: The columns identifying one fact row.
        entity: ``customer`` or ``product``: the entity name hashed into inferred keys.

    Returns:
        ``facts`` plus ``sk`` (never null).
    """
    candidates = versions.where(F.col(natural_key).isNotNull()).select(
        F.col(natural_key).alias("_pit_key"),
        F.col("valid_from").alias("_pit_from"),
        F.col(sk).alias("_pit_sk"),
    )
    started = F.coalesce(F.col("_pit_from") <= F.col(event_ts), F.lit(False))
    preference = Window.partitionBy(*grain).orderBy(
        started.desc(),
        F.when(started, F.col("_pit_from")).desc_nulls_last(),  # latest version started by then
        F.col("_pit_from").asc_nulls_last(),  # else the first version
        F.col("_pit_sk").asc_nulls_last(),
    )
    return (
        facts.join(candidates, on=F.col(natural_key) == F.col("_pit_key"), how="left")
        .withColumn("_pit_rank", F.row_number().over(preference))
        .where(F.col("_pit_rank") == 1)
        .withColumn(sk, F.coalesce(F.col("_pit_sk"), member_sk(entity, natural_key)))
        .drop("_pit_key", "_pit_from", "_pit_sk", "_pit_rank")
    )


def build_fact_order_lines(
    order_items: DataFrame, *, orders: DataFrame, dim_customer: DataFrame, dim_product: DataFrame
) -> DataFrame:
    """fact_order_lines: each current line of each order, with its order's attributes and keys.

    Args:
        order_items: silver.order_items (current lines). Requires ``order_id``, ``line_no``,
            ``product_id``, ``quantity``, ``unit_price``, ``discount_amount``, ``net_amount``,
            ``net_amount_base``.
        orders: silver.orders (current state). Requires ``order_id``, ``customer_id``,
            ``order_ts``, ``order_date``, ``order_status``, ``channel``, ``currency``,
            ``fx_rate_to_base``. A line whose order is not in ``orders`` (e.g. the order was
            quarantined) is left out until its order arrives.
        dim_customer: gold dim_customer (``customer_id``, ``valid_from``, ``customer_sk``).
        dim_product: gold dim_product (``product_id``, ``valid_from``, ``product_sk``).

    Returns:
        :data:`FACT_ORDER_LINES_SCHEMA`, one row per (order_id, line_no); keys never null
        (see :func:`with_point_in_time_sk`); ``is_revenue`` from the order's current status.
    """
    order_heads = orders.select(*_ORDER_COLUMNS, "fx_rate_to_base").transform(
        with_point_in_time_sk,
        versions=dim_customer,
        natural_key="customer_id",
        event_ts="order_ts",
        sk="customer_sk",
        grain=["order_id"],
        entity=CUSTOMER_ENTITY,
    )
    lines = (
        order_items.select(
            "order_id",
            "line_no",
            "product_id",
            "quantity",
            "unit_price",
            "discount_amount",
            "net_amount",
            "net_amount_base",
        )
        .join(order_heads, on="order_id", how="inner")
        .transform(
            with_point_in_time_sk,
            versions=dim_product,
            natural_key="product_id",
            event_ts="order_ts",
            sk="product_sk",
            grain=["order_id", "line_no"],
            entity=PRODUCT_ENTITY,
        )
        .withColumn("order_date_key", date_key("order_date"))
        .withColumn("is_revenue", is_revenue_status("order_status"))
    )
    return conform_to(lines, FACT_ORDER_LINES_SCHEMA)


def build_fact_orders(orders: DataFrame, *, order_items: DataFrame, dim_customer: DataFrame) -> DataFrame:
    """fact_orders: each order's current state with the totals of its current lines.

    ``item_count`` is the sum of the lines' quantities, ``line_count`` the number of lines,
    ``net_amount_base`` the sum of the lines' ``net_amount_base`` (SQL ``SUM``: a line
    without a converted amount adds nothing; all lines without one give null). An order
    without lines in silver has ``0`` for all three.

    Args:
        orders: silver.orders. Requires ``order_id``, ``customer_id``, ``order_ts``,
            ``order_date``, ``updated_at``, ``order_status``, ``channel``, ``ship_country``,
            ``ship_city``, ``payment_type``, ``currency``, ``shipping_fee_base``.
        order_items: silver.order_items. Requires ``order_id``, ``quantity``, ``net_amount_base``.
        dim_customer: gold dim_customer (``customer_id``, ``valid_from``, ``customer_sk``).

    Returns:
        :data:`FACT_ORDERS_SCHEMA`, one row per order_id; ``customer_sk`` never null.
    """
    totals = order_items.groupBy("order_id").agg(
        F.count(F.lit(1)).alias("line_count"),
        F.sum("quantity").alias("item_count"),
        F.sum("net_amount_base").alias("net_amount_base"),
    )
    has_no_lines = F.col("line_count").isNull()
    facts = (
        orders.select(
            *_ORDER_COLUMNS, "updated_at", "ship_country", "ship_city", "payment_type", "shipping_fee_base"
        )
        .join(totals, on="order_id", how="left")
        .withColumn(
            "net_amount_base",
            F.when(has_no_lines, F.lit(0).cast(BASE_MONEY)).otherwise(F.col("net_amount_base")),
        )
        .withColumn("item_count", F.when(has_no_lines, F.lit(0)).otherwise(F.col("item_count")))
        .withColumn("line_count", F.coalesce("line_count", F.lit(0)))
        .transform(
            with_point_in_time_sk,
            versions=dim_customer,
            natural_key="customer_id",
            event_ts="order_ts",
            sk="customer_sk",
            grain=["order_id"],
            entity=CUSTOMER_ENTITY,
        )
        .withColumn("order_date_key", date_key("order_date"))
        .withColumn("is_revenue", is_revenue_status("order_status"))
    )
    return conform_to(facts, FACT_ORDERS_SCHEMA)


def changed_order_ids(
    order_changes: DataFrame,
    line_changes: DataFrame,
    *,
    orders: DataFrame,
    order_items: DataFrame,
    customer_changes: DataFrame | None = None,
    product_changes: DataFrame | None = None,
) -> DataFrame:
    """The ``order_id`` of every order whose fact rows may differ after these changes.

    Changed orders and lines, and the orders of customers or products whose dimension rows
    changed (their point-in-time surrogate keys may have moved). Each ``*_changes`` frame
    holds row images of a change feed (or every row, on a first build).
    """
    ids = [order_changes.select("order_id"), line_changes.select("order_id")]
    if customer_changes is not None:
        customers = customer_changes.select("customer_id").where(F.col("customer_id").isNotNull())
        ids.append(orders.join(customers, on="customer_id", how="left_semi").select("order_id"))
    if product_changes is not None:
        products = product_changes.select("product_id").where(F.col("product_id").isNotNull())
        ids.append(order_items.join(products, on="product_id", how="left_semi").select("order_id"))
    return reduce(DataFrame.unionByName, ids).distinct().where(F.col("order_id").isNotNull())


def of_keys(frame: DataFrame, keys: DataFrame) -> DataFrame:
    """The rows of ``frame`` whose values of ``keys``' columns are among ``keys``' rows."""
    return frame.join(keys, on=keys.columns, how="left_semi")
