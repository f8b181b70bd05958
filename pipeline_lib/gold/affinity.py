"""Gold ``product_affinity``: pairs of products bought together and viewed together, as of a date.

Grain: one row per ordered pair of products (``product_id``, ``other_product_id``), kind and
as-of date, for the ``top_k`` other products of each product and kind. A *basket* is

* for ``bought_together``: a revenue order (see :mod:`pipeline_lib.gold.segments`) dated in
  the window, holding the distinct products of its current lines (guest orders included);
* for ``viewed_together``: a click session with ``product_view`` events dated in the window,
  holding the distinct products viewed.

Over the ``N`` baskets of a kind that hold between 1 and ``max_basket_products`` distinct
products (bigger ones, such as a bot's session, are left out of the pairs and of ``N``):

* ``pair_count`` = baskets holding both products, ``count(a)`` = baskets holding ``a``;
* ``support`` = ``pair_count / N``; ``confidence`` = ``pair_count / count(a)`` (the share of
  ``a``'s baskets that also hold ``b``); ``lift`` = ``confidence / (count(b) / N)`` (above 1:
  together more often than chance);
* pairs seen in fewer than ``min_pairs`` baskets are left out (one shared basket says little);
* ``rank`` orders the other products of a product by lift desc, confidence desc,
  ``pair_count`` desc, then ``other_product_id`` asc: a total order, 1..``top_k``.

Plain Spark SQL (a self-join per basket): every pair is counted exactly, which FP-growth
would only do above a minimum support, and the counts are integers, so the measures are the
same on every run whatever the partitioning.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline_lib.gold.schemas import PRODUCT_AFFINITY_TABLE_SCHEMA, conform_to
from pipeline_lib.gold.segments import filter_revenue_orders

BOUGHT_TOGETHER = "bought_together"
VIEWED_TOGETHER = "viewed_together"
AFFINITY_KINDS = (BOUGHT_TOGETHER, VIEWED_TOGETHER)
PRODUCT_VIEW = "product_view"


class AffinityArgumentError(ValueError):
    """A window, a top-k or a basket bound given to the affinity transforms is unusable."""


def window_start(as_of: dt.date, window_days: int) -> dt.date:
    """The first day of the window of ``window_days`` days ending at ``as_of`` (both inclusive).

    Raises:
        AffinityArgumentError: ``window_days`` is below 1.
    """
    if window_days < 1:
        raise AffinityArgumentError(f"a window needs at least 1 day, got {window_days}")
    return as_of - dt.timedelta(days=window_days - 1)


# ---------------------------------------------------------------------------------------
# DataFrame transformations (DataFrame -> DataFrame)
# ---------------------------------------------------------------------------------------
def order_baskets(
    orders: DataFrame, *, order_items: DataFrame, as_of: dt.date, window_days: int
) -> DataFrame:
    """The distinct products of each revenue order dated in the window.

    Args:
        orders: silver.orders; requires ``order_id``, ``order_status``, ``order_date``.
        order_items: silver.order_items; requires ``order_id``, ``product_id``.
        as_of: Last day of the window.
        window_days: Days in the window.

    Returns:
        One row per (``basket_id`` = ``order_id``, ``product_id``); lines without a product
        are ignored.
    """
    revenue_orders = orders.transform(
        filter_revenue_orders, as_of=as_of, from_date=window_start(as_of, window_days)
    ).select("order_id")
    return (
        revenue_orders.join(order_items.select("order_id", "product_id"), on="order_id", how="inner")
        .where(F.col("product_id").isNotNull())
        .select(F.col("order_id").alias("basket_id"), "product_id")
        .distinct()
    )


def session_baskets(clicks: DataFrame, *, as_of: dt.date, window_days: int) -> DataFrame:
    """The distinct products viewed in each click session, by views dated in the window.

    Args:
        clicks: silver.clicks; requires ``session_id``, ``event_type``, ``event_date``, ``product_id``.

    Returns:
        One row per (``basket_id`` = ``session_id``, ``product_id``); events without a
        session or a product are ignored.
    """
    first_day = window_start(as_of, window_days)
    return (
        clicks.where(
            (F.col("event_type") == PRODUCT_VIEW)
            & F.col("session_id").isNotNull()
            & F.col("product_id").isNotNull()
            & F.col("event_date").between(F.lit(first_day), F.lit(as_of))
        )
        .select(F.col("session_id").alias("basket_id"), "product_id")
        .distinct()
    )


def product_pairs(baskets: DataFrame, *, kind: str, min_pairs: int, max_basket_products: int) -> DataFrame:
    """Support, confidence and lift of every ordered pair of products sharing baskets.

    Args:
        baskets: One row per (``basket_id``, ``product_id``), distinct.
        kind: The value of the ``kind`` column (``bought_together``, ``viewed_together``).
        min_pairs: Pairs in fewer baskets are left out.
        max_basket_products: Baskets with more distinct products are left out entirely.

    Returns:
        One row per ordered pair ``(product_id, other_product_id)`` (both directions, never a
        product with itself) in at least ``min_pairs`` baskets: ``product_id``,
        ``other_product_id``, ``kind``, ``pair_count``, ``support``, ``confidence``, ``lift``.
        Empty when there is no basket.

    Raises:
        AffinityArgumentError: ``min_pairs`` below 1 or ``max_basket_products`` below 2.
    """
    if min_pairs < 1:
        raise AffinityArgumentError(f"min_pairs must be at least 1, got {min_pairs}")
    if max_basket_products < 2:
        raise AffinityArgumentError(f"max_basket_products must be at least 2, got {max_basket_products}")
    sized = baskets.withColumn("_products", F.count(F.lit(1)).over(Window.partitionBy("basket_id")))
    kept = sized.where(F.col("_products") <= max_basket_products).select("basket_id", "product_id")
    total = kept.agg(F.countDistinct("basket_id").alias("_baskets"))
    per_product = kept.groupBy("product_id").agg(F.count(F.lit(1)).alias("_count"))
    left, right = kept.alias("a"), kept.alias("b")
    pairs = (
        left.join(
            right,
            on=(F.col("a.basket_id") == F.col("b.basket_id"))
            & (F.col("a.product_id") != F.col("b.product_id")),
            how="inner",
        )
        .groupBy(F.col("a.product_id").alias("product_id"), F.col("b.product_id").alias("other_product_id"))
        .agg(F.count(F.lit(1)).alias("pair_count"))
        .where(F.col("pair_count") >= min_pairs)
    )
    count_a = per_product.select("product_id", F.col("_count").alias("_count_a"))
    count_b = per_product.select(
        F.col("product_id").alias("other_product_id"), F.col("_count").alias("_count_b")
    )
    pair_count = F.col("pair_count").cast(T.DoubleType())
    return (
        pairs.join(count_a, on="product_id", how="inner")
        .join(count_b, on="other_product_id", how="inner")
        .crossJoin(F.broadcast(total))
        .select(
            "product_id",
            "other_product_id",
            F.lit(kind).alias("kind"),
            "pair_count",
            (pair_count / F.col("_baskets")).alias("support"),
            (pair_count / F.col("_count_a")).alias("confidence"),
            # Integers multiplied before the one division: the same double on every run.
            (
                (F.col("pair_count") * F.col("_baskets")).cast(T.DoubleType())
                / (F.col("_count_a") * F.col("_count_b"))
            ).alias("lift"),
        )
    )


def top_pairs_per_product(pairs: DataFrame, *, top_k: int) -> DataFrame:
    """Keep the ``top_k`` other products of each product and kind, with their ``rank``.

    Ordered by lift desc, confidence desc, ``pair_count`` desc, then ``other_product_id``
    asc (a total order, so ranks are 1..n without ties, the same on every run).

    Args:
        pairs: Output of :func:`product_pairs`.
        top_k: Other products kept per product and kind.

    Raises:
        AffinityArgumentError: ``top_k`` is below 1.
    """
    if top_k < 1:
        raise AffinityArgumentError(f"top_k must be at least 1, got {top_k}")
    best_first = Window.partitionBy("product_id", "kind").orderBy(
        F.col("lift").desc(),
        F.col("confidence").desc(),
        F.col("pair_count").desc(),
        F.col("other_product_id").asc(),
    )
    return pairs.withColumn("rank", F.row_number().over(best_first)).where(F.col("rank") <= top_k)


def bought_together(
    orders: DataFrame,
    *,
    order_items: DataFrame,
    as_of: dt.date,
    window_days: int,
    top_k: int,
    min_pairs: int,
    max_basket_products: int,
) -> DataFrame:
    """The ``bought_together`` pairs as of a date (what :func:`product_affinity` publishes for that kind).

    Returns:
        The columns of :func:`product_pairs` plus ``rank``, at most ``top_k`` per product.
    """
    return (
        orders.transform(order_baskets, order_items=order_items, as_of=as_of, window_days=window_days)
        .transform(
            product_pairs, kind=BOUGHT_TOGETHER, min_pairs=min_pairs, max_basket_products=max_basket_products
        )
        .transform(top_pairs_per_product, top_k=top_k)
    )


def product_affinity(
    clicks: DataFrame,
    *,
    orders: DataFrame,
    order_items: DataFrame,
    as_of: dt.date,
    window_days: int,
    top_k: int,
    min_pairs: int,
    max_basket_products: int,
) -> DataFrame:
    """The gold ``product_affinity`` rows of one as-of date.

    Args:
        clicks: silver.clicks (``session_id``, ``event_type``, ``event_date``, ``product_id``).
        orders: silver.orders (``order_id``, ``order_status``, ``order_date``).
        order_items: silver.order_items (``order_id``, ``product_id``).
        as_of: Last day of the window; later orders and events are ignored.
        window_days: Days of orders and sessions counted (``recommendations.window_days``).
        top_k: Other products kept per product and kind (``recommendations.affinity_top_k``).
        min_pairs: Fewest shared baskets of a pair kept (``recommendations.affinity_min_pairs``).
        max_basket_products: Largest basket counted (``recommendations.affinity_max_basket_products``).

    Returns:
        ``product_id, other_product_id, kind, as_of_date, support, confidence, lift,
        pair_count, rank``: both kinds, at most ``top_k`` rows per product and kind. Empty
        when no two products share ``min_pairs`` baskets.

    Raises:
        AffinityArgumentError: A window, ``top_k``, ``min_pairs`` or ``max_basket_products`` is unusable.
    """
    bought = bought_together(
        orders,
        order_items=order_items,
        as_of=as_of,
        window_days=window_days,
        top_k=top_k,
        min_pairs=min_pairs,
        max_basket_products=max_basket_products,
    )
    viewed = (
        clicks.transform(session_baskets, as_of=as_of, window_days=window_days)
        .transform(
            product_pairs, kind=VIEWED_TOGETHER, min_pairs=min_pairs, max_basket_products=max_basket_products
        )
        .transform(top_pairs_per_product, top_k=top_k)
    )
    return (
        bought.unionByName(viewed)
        .withColumn("as_of_date", F.lit(as_of))
        .transform(conform_to, PRODUCT_AFFINITY_TABLE_SCHEMA)
    )
