"""Gold ``recommendations`` and ``recommendation_metrics``: what to show each customer next, measured.

Three sources, each a pure transformation (see ``docs/recommendations.md``):

* **model** (:func:`model_recommendations`): ``pyspark.ml.recommendation.ALS`` with implicit
  feedback. Each customer's interactions of the window (product views and add-to-carts from
  silver.clicks, lines of revenue orders from silver.orders) are weighted by kind and by a
  recency decay, summed per (customer, product) and fed to ALS through a dense integer id
  map; customers with fewer than ``min_interactions`` distinct products are not scored.
* **co_purchase** (:func:`co_purchase_recommendations`): the products most often bought
  together (:mod:`pipeline_lib.gold.affinity`) with what the customer bought in the window.
* **popularity** (:func:`popularity_recommendations`): the products most often ordered in
  the last ``popularity_window_days`` within the customer's favourite category, then their
  country, then the whole shop.

:func:`blend_recommendations` fills each list in that order (model, co-purchase, popularity),
so every customer with an order or a login gets ``top_n`` products when the catalogue has
them. Products the customer already ordered are left out (unless repeat purchases are
allowed), and only products listed and active at the as-of date are ever recommended.

:func:`evaluate_recommendations` replays this at ``as_of - holdout_days`` and scores each
method's lists against the purchases made after it (precision, recall and NDCG at ``k``,
:func:`ranking_metrics`, equal to ``pyspark.ml.evaluation.RankingEvaluator``; and coverage).

Determinism: interaction weights are summed as decimals (exact in any order), ALS gets one
sorted partition, one block of users and items and a fixed seed, scores are rounded to
:data:`SCORE_DECIMALS` places and every ranking ends on the product id. The same silver
tables and settings give the same rows, whatever the partitioning.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import Column, DataFrame, Row, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline_lib.config import AlsSettings, InteractionWeights
from pipeline_lib.gold.affinity import bought_together, window_start
from pipeline_lib.gold.schemas import (
    RECOMMENDATION_METRICS_TABLE_SCHEMA,
    RECOMMENDATIONS_TABLE_SCHEMA,
    conform_to,
)
from pipeline_lib.gold.segments import filter_revenue_orders, join_revenue_order_lines
from pipeline_lib.io.ml import restrict_items

SOURCE_MODEL = "model"
SOURCE_CO_PURCHASE = "co_purchase"
SOURCE_POPULARITY = "popularity"
METHODS = (SOURCE_MODEL, SOURCE_CO_PURCHASE, SOURCE_POPULARITY)

VIEW = "product_view"
ADD_TO_CART = "add_to_cart"
PURCHASE = "purchase"

# Popularity tiers, in the order a fallback list is filled.
TIER_CATEGORY, TIER_COUNTRY, TIER_SHOP = 1, 2, 3
SCORE_DECIMALS = 6
# Interaction weights are summed as decimals: exact, so the sum is the same in any order.
WEIGHT = T.DecimalType(18, 6)
# Per-user metric values are averaged as decimals for the same reason.
_METRIC = T.DecimalType(24, 12)
_CANDIDATE_SCHEMA = (
    "customer_id string, product_id string, score double, source string, reason string, source_rank int"
)


class RecommendationArgumentError(ValueError):
    """A setting given to the recommendation transforms is unusable."""


@dataclass(frozen=True)
class RecommendationInputs:
    """The silver tables every recommendation is computed from.

    Attributes:
        clicks: silver.clicks (``customer_id``, ``session_id``, ``event_type``, ``event_date``,
            ``product_id``).
        orders: silver.orders (``order_id``, ``customer_id``, ``order_status``, ``order_ts``,
            ``order_date``, ``ship_country``).
        order_items: silver.order_items (``order_id``, ``line_no``, ``product_id``, ``quantity``,
            ``net_amount_base``).
        products: silver.products, SCD type 2 (``product_id``, ``category_l1``, ``is_active``,
            ``is_delisted``, ``valid_from``).
        customers: silver.customers, SCD type 2 (``customer_id``, ``country``, ``valid_from``).
    """

    clicks: DataFrame
    orders: DataFrame
    order_items: DataFrame
    products: DataFrame
    customers: DataFrame


# ---------------------------------------------------------------------------------------
# Column helpers (Column -> Column)
# ---------------------------------------------------------------------------------------
def recency_decay(event_date: str | Column, *, as_of: dt.date, half_life_days: float) -> Column:
    """``0.5 ** (days before as_of / half_life_days)``: 1 on the as-of date, 0.5 a half-life earlier.

    Raises:
        RecommendationArgumentError: ``half_life_days`` is not positive.
    """
    if half_life_days <= 0:
        raise RecommendationArgumentError(f"the half-life must be positive, got {half_life_days}")
    event_date = F.col(event_date) if isinstance(event_date, str) else event_date
    age = F.datediff(F.lit(as_of), event_date)
    return F.pow(F.lit(0.5), age / F.lit(float(half_life_days)))


def kind_weight(kind: str | Column, *, weights: InteractionWeights) -> Column:
    """The configured weight of an interaction kind; null for another kind (no hidden default)."""
    kind = F.col(kind) if isinstance(kind, str) else kind
    return (
        F.when(kind == VIEW, F.lit(float(weights.view)))
        .when(kind == ADD_TO_CART, F.lit(float(weights.add_to_cart)))
        .when(kind == PURCHASE, F.lit(float(weights.purchase)))
    )


def rounded_score(score: str | Column) -> Column:
    """A score as a double rounded to :data:`SCORE_DECIMALS` places (ALS computes in floats)."""
    score = F.col(score) if isinstance(score, str) else score
    return F.round(score.cast(T.DoubleType()), SCORE_DECIMALS)


# ---------------------------------------------------------------------------------------
# Interactions and the dense id map
# ---------------------------------------------------------------------------------------
def select_interaction_events(
    clicks: DataFrame, *, orders: DataFrame, order_items: DataFrame, as_of: dt.date, window_days: int
) -> DataFrame:
    """The customers' product views, add-to-carts and purchases dated in the window.

    Views and carts are click events with a ``customer_id`` (delivered or stitched) and a
    product; purchases are the current lines of the customer's revenue orders (orders are
    the truth about sales, as in ``product_popularity``; the tracker's ``purchase`` events
    are not used).

    Returns:
        One row per event or order line: ``customer_id``, ``product_id``, ``kind``
        (``product_view``, ``add_to_cart``, ``purchase``), ``event_date``.
    """
    first_day = window_start(as_of, window_days)
    views_and_carts = clicks.where(
        F.col("customer_id").isNotNull()
        & F.col("product_id").isNotNull()
        & F.col("event_type").isin(VIEW, ADD_TO_CART)
        & F.col("event_date").between(F.lit(first_day), F.lit(as_of))
    ).select("customer_id", "product_id", F.col("event_type").alias("kind"), "event_date")
    purchases = (
        orders.transform(filter_revenue_orders, as_of=as_of, from_date=first_day)
        .where(F.col("customer_id").isNotNull())
        .transform(join_revenue_order_lines, order_items=order_items)
        .where(F.col("product_id").isNotNull())
        .select(
            "customer_id",
            "product_id",
            F.lit(PURCHASE).alias("kind"),
            F.col("order_date").alias("event_date"),
        )
    )
    return views_and_carts.unionByName(purchases)


def with_interaction_weight(
    events: DataFrame, *, as_of: dt.date, weights: InteractionWeights, half_life_days: float
) -> DataFrame:
    """Add ``weight``: the kind's weight times the recency decay, as ``decimal(18,6)``.

    Args:
        events: Requires ``kind`` and ``event_date``.
    """
    weight = kind_weight("kind", weights=weights) * recency_decay(
        "event_date", as_of=as_of, half_life_days=half_life_days
    )
    return events.withColumn("weight", weight.cast(WEIGHT))


def aggregate_interactions(events: DataFrame) -> DataFrame:
    """Sum the weights per customer and product.

    Args:
        events: Requires ``customer_id``, ``product_id``, ``kind``, ``weight``.

    Returns:
        One row per (``customer_id``, ``product_id``) with a positive total weight:
        ``strength`` (decimal sum of weights), ``events`` (count), ``purchases`` (purchase lines).
    """
    return (
        events.where(F.col("weight") > 0)
        .groupBy("customer_id", "product_id")
        .agg(
            F.sum("weight").alias("strength"),
            F.count(F.lit(1)).alias("events"),
            F.count_if(F.col("kind") == PURCHASE).alias("purchases"),
        )
    )


def customer_product_interactions(
    inputs: RecommendationInputs,
    *,
    as_of: dt.date,
    window_days: int,
    weights: InteractionWeights,
    half_life_days: float,
) -> DataFrame:
    """Implicit feedback per customer and product over the window ending at ``as_of``.

    Returns:
        One row per (``customer_id``, ``product_id``): ``strength``, ``events``, ``purchases``
        (see :func:`aggregate_interactions`).
    """
    return (
        select_interaction_events(
            inputs.clicks,
            orders=inputs.orders,
            order_items=inputs.order_items,
            as_of=as_of,
            window_days=window_days,
        )
        .transform(with_interaction_weight, as_of=as_of, weights=weights, half_life_days=half_life_days)
        .transform(aggregate_interactions)
    )


def dense_index(values: DataFrame, *, column: str, index: str) -> DataFrame:
    """Number the distinct non-null values of ``column`` 0, 1, 2... in sorted order.

    ALS needs integer ids; the surrogate keys are 60-bit and the natural ids strings. The
    numbering is a row number over the sorted distinct values: one window over the whole
    DataFrame (one partition), meant for one row per customer or product.

    Returns:
        ``column``, ``index`` (int, dense from 0).
    """
    in_order = Window.orderBy(F.col(column).asc())
    return (
        values.select(column)
        .where(F.col(column).isNotNull())
        .distinct()
        .withColumn(index, (F.row_number().over(in_order) - 1).cast(T.IntegerType()))
    )


# ---------------------------------------------------------------------------------------
# Products, customers and exclusions as of a date
# ---------------------------------------------------------------------------------------
def select_products_as_of(products: DataFrame, *, as_of: dt.date) -> DataFrame:
    """The product versions valid at the end of a date: the latest that started on or before it.

    A product whose first version starts after ``as_of`` was not listed yet and has no row.

    Args:
        products: silver.products (SCD type 2); requires ``product_id``, ``category_l1``,
            ``is_active``, ``is_delisted``, ``valid_from``.

    Returns:
        One row per product: ``product_id``, ``category_l1``, ``is_sellable`` (active and not
        delisted; a null flag is not sellable).
    """
    latest_first = Window.partitionBy("product_id").orderBy(F.col("valid_from").desc())
    sellable = F.coalesce(F.col("is_active") & ~F.col("is_delisted"), F.lit(False))
    return (
        products.where(F.col("product_id").isNotNull() & (F.to_date("valid_from") <= F.lit(as_of)))
        .withColumn("_latest", F.row_number().over(latest_first))
        .where(F.col("_latest") == 1)
        .select("product_id", "category_l1", sellable.alias("is_sellable"))
    )


def list_population(clicks: DataFrame, *, orders: DataFrame, as_of: dt.date) -> DataFrame:
    """The customers who get a list: an order (any status) or a login up to ``as_of``.

    A login is any click event with a ``customer_id`` (delivered, or stitched from a later
    login of the device).

    Returns:
        One row per ``customer_id``.
    """
    ordered = orders.where(F.col("customer_id").isNotNull() & (F.col("order_date") <= F.lit(as_of)))
    logged_in = clicks.where(F.col("customer_id").isNotNull() & (F.col("event_date") <= F.lit(as_of)))
    return ordered.select("customer_id").unionByName(logged_in.select("customer_id")).distinct()


def ordered_products(orders: DataFrame, *, order_items: DataFrame, as_of: dt.date) -> DataFrame:
    """Every product a customer ordered up to ``as_of``, whatever the order's status.

    A returned product was not what they wanted, a cancelled one was already chosen: either
    way it is not news to them.

    Returns:
        One row per (``customer_id``, ``product_id``).
    """
    customer_orders = orders.where(
        F.col("customer_id").isNotNull() & (F.col("order_date") <= F.lit(as_of))
    ).select("order_id", "customer_id")
    return (
        customer_orders.join(order_items.select("order_id", "product_id"), on="order_id", how="inner")
        .where(F.col("product_id").isNotNull())
        .select("customer_id", "product_id")
        .distinct()
    )


def customer_profiles(
    population: DataFrame,
    *,
    customers: DataFrame,
    orders: DataFrame,
    interactions: DataFrame,
    products_as_of: DataFrame,
    as_of: dt.date,
) -> DataFrame:
    """Each customer's country and favourite category, for the popularity fallback.

    Args:
        population: ``customer_id`` of the customers to profile.
        customers: silver.customers (``customer_id``, ``country``, ``valid_from``).
        orders: silver.orders (``order_id``, ``customer_id``, ``order_ts``, ``order_date``, ``ship_country``).
        interactions: Output of :func:`customer_product_interactions` (``customer_id``,
            ``product_id``, ``strength``).
        products_as_of: Output of :func:`select_products_as_of` (``product_id``, ``category_l1``).
        as_of: Later customer versions and orders are ignored.

    Returns:
        One row per customer of ``population``: ``customer_id``, ``country`` (of the CRM
        version valid at ``as_of``, else the ship-to country of their latest order, else
        null), ``favourite_category`` (the ``category_l1`` with the most interaction
        strength, ties to the first name; null without interactions).
    """
    latest_version = Window.partitionBy("customer_id").orderBy(F.col("valid_from").desc())
    crm_country = (
        customers.where(F.to_date("valid_from") <= F.lit(as_of))
        .withColumn("_latest", F.row_number().over(latest_version))
        .where(F.col("_latest") == 1)
        .select("customer_id", F.col("country").alias("_crm_country"))
    )
    shipped_to = (
        orders.where(F.col("customer_id").isNotNull() & (F.col("order_date") <= F.lit(as_of)))
        .groupBy("customer_id")
        .agg(F.max_by("ship_country", F.struct("order_ts", "order_id")).alias("_ship_country"))
    )
    strongest = Window.partitionBy("customer_id").orderBy(
        F.col("_strength").desc(), F.col("category_l1").asc()
    )
    favourite = (
        interactions.join(products_as_of.select("product_id", "category_l1"), on="product_id", how="inner")
        .where(F.col("category_l1").isNotNull())
        .groupBy("customer_id", "category_l1")
        .agg(F.sum("strength").alias("_strength"))
        .withColumn("_order", F.row_number().over(strongest))
        .where(F.col("_order") == 1)
        .select("customer_id", F.col("category_l1").alias("favourite_category"))
    )
    return (
        population.select("customer_id")
        .join(crm_country, on="customer_id", how="left")
        .join(shipped_to, on="customer_id", how="left")
        .join(favourite, on="customer_id", how="left")
        .select(
            "customer_id",
            F.coalesce("_crm_country", "_ship_country").alias("country"),
            "favourite_category",
        )
    )


# ---------------------------------------------------------------------------------------
# The model: ALS with implicit feedback
# ---------------------------------------------------------------------------------------
def fit_implicit_als(ratings: DataFrame, *, params: AlsSettings) -> ALSModel:
    """Train ALS (implicit preferences) on ``user``, ``item``, ``rating`` with a fixed seed.

    The ratings go in as one partition sorted by user and item: with one block of users and
    items (``params.blocks``) ALS then sums every user's and item's terms in one order, so
    the factors do not depend on Spark's partitioning.
    """
    als = ALS(
        rank=params.rank,
        maxIter=params.max_iter,
        regParam=params.reg_param,
        alpha=params.alpha,
        implicitPrefs=True,
        seed=params.seed,
        numUserBlocks=params.blocks,
        numItemBlocks=params.blocks,
        userCol="user",
        itemCol="item",
        ratingCol="rating",
    )
    return als.fit(ratings.repartition(1).sortWithinPartitions("user", "item"))


def collect_candidate_depth(
    item_ids: DataFrame, *, scored: DataFrame, exclusions: DataFrame, top_n: int
) -> int:
    """How many items to ask ALS for per customer so that ``top_n`` remain after the exclusions.

    ``top_n`` plus the most items of ``item_ids`` (the items the model ranks) any scored
    customer has already ordered. Collects one number (bounded).
    """
    most_excluded = (
        exclusions.join(item_ids, on="product_id", how="left_semi")
        .join(scored, on="customer_id", how="left_semi")
        .groupBy("customer_id")
        .count()
        .agg(F.max("count"))
        .first()
    )
    return top_n + int((most_excluded and most_excluded[0]) or 0)


def model_recommendations(
    interactions: DataFrame,
    *,
    sellable: DataFrame,
    exclusions: DataFrame,
    top_n: int,
    min_interactions: int,
    params: AlsSettings,
    customers: DataFrame | None = None,
) -> DataFrame:
    """Train ALS on the interactions and rank the sellable products for the customers it can score.

    Every customer and product of ``interactions`` trains the model; customers with at least
    ``min_interactions`` distinct products are scored (those of ``customers`` only, when
    given), over the sellable products only (:func:`restrict_items`). Runs Spark jobs: the
    training, and one small aggregate (:func:`collect_candidate_depth`).

    Args:
        interactions: Output of :func:`customer_product_interactions`.
        sellable: ``product_id`` of the products that may be recommended.
        exclusions: (``customer_id``, ``product_id``) never to recommend (already ordered).
        top_n: Products per customer.
        min_interactions: Fewest distinct products a scored customer interacted with.
        params: ALS settings (rank, regularisation, alpha, iterations, seed, blocks).
        customers: ``customer_id`` of the customers to score; None for all.

    Returns:
        At most ``top_n`` rows per scored customer: ``customer_id``, ``product_id``, ``score``
        (ALS's predicted preference, rounded), ``source`` (``model``), ``reason``,
        ``source_rank`` (1..n by score desc, then product id). Empty without interactions.

    Raises:
        RecommendationArgumentError: ``top_n`` or ``min_interactions`` below 1.
    """
    _check_top_n(top_n)
    if min_interactions < 1:
        raise RecommendationArgumentError(f"min_interactions must be at least 1, got {min_interactions}")
    spark = interactions.sparkSession
    user_ids = dense_index(interactions, column="customer_id", index="user")
    item_ids = dense_index(interactions, column="product_id", index="item")
    ratings = (
        interactions.join(user_ids, on="customer_id", how="inner")
        .join(item_ids, on="product_id", how="inner")
        .select("user", "item", F.col("strength").cast(T.FloatType()).alias("rating"))
    )
    scored = (
        interactions.groupBy("customer_id")
        .agg(F.countDistinct("product_id").alias("_products"))
        .where(F.col("_products") >= min_interactions)
        .select("customer_id")
    )
    if customers is not None:
        scored = scored.join(customers.select("customer_id"), on="customer_id", how="left_semi")
    interactions.persist()  # read by the actions below only: released before returning
    try:
        if ratings.isEmpty():
            return spark.createDataFrame([], _CANDIDATE_SCHEMA)
        sellable_ids = item_ids.join(sellable, on="product_id", how="left_semi").localCheckpoint()
        model = restrict_items(fit_implicit_als(ratings, params=params), sellable_ids)
        depth = collect_candidate_depth(sellable_ids, scored=scored, exclusions=exclusions, top_n=top_n)
    finally:
        interactions.unpersist()
    ranked = model.recommendForUserSubset(scored.join(user_ids, on="customer_id", how="inner"), depth)
    best_first = Window.partitionBy("customer_id").orderBy(F.col("score").desc(), F.col("product_id").asc())
    return (
        ranked.select("user", F.inline("recommendations"))
        .join(user_ids, on="user", how="inner")
        .join(item_ids, on="item", how="inner")
        .select("customer_id", "product_id", rounded_score("rating").alias("score"))
        .join(sellable.select("product_id"), on="product_id", how="left_semi")
        .join(exclusions, on=["customer_id", "product_id"], how="left_anti")
        .withColumn("source_rank", F.row_number().over(best_first))
        .where(F.col("source_rank") <= top_n)
        .select(
            "customer_id",
            "product_id",
            "score",
            F.lit(SOURCE_MODEL).alias("source"),
            F.lit("personal model: customers with views, carts and orders like yours chose it").alias(
                "reason"
            ),
            F.col("source_rank").cast(T.IntegerType()),
        )
    )


# ---------------------------------------------------------------------------------------
# Co-purchase and popularity
# ---------------------------------------------------------------------------------------
def co_purchase_recommendations(
    bought: DataFrame, *, pairs: DataFrame, sellable: DataFrame, exclusions: DataFrame, top_n: int
) -> DataFrame:
    """The products most often bought together with what each customer bought.

    A candidate's score is the highest ``confidence`` of a pair with one of the customer's
    products (that product is the anchor named in the reason).

    Args:
        bought: (``customer_id``, ``product_id``) the customer bought (the anchors).
        pairs: ``bought_together`` pairs (:func:`pipeline_lib.gold.affinity.bought_together`):
            ``product_id``, ``other_product_id``, ``confidence``, ``lift``.
        sellable: ``product_id`` of the products that may be recommended.
        exclusions: (``customer_id``, ``product_id``) never to recommend.
        top_n: Products per customer.

    Returns:
        At most ``top_n`` rows per customer with a candidate: ``customer_id``, ``product_id``,
        ``score``, ``source`` (``co_purchase``), ``reason``, ``source_rank`` (by score desc,
        then product id).
    """
    _check_top_n(top_n)
    candidates = (
        bought.select("customer_id", F.col("product_id").alias("anchor"))
        .distinct()
        .join(
            pairs.select(
                F.col("product_id").alias("anchor"),
                F.col("other_product_id").alias("product_id"),
                "confidence",
                "lift",
            ),
            on="anchor",
            how="inner",
        )
        .join(sellable.select("product_id"), on="product_id", how="left_semi")
        .join(exclusions, on=["customer_id", "product_id"], how="left_anti")
        .groupBy("customer_id", "product_id")
        .agg(
            F.max("confidence").alias("_confidence"),
            F.max_by("anchor", F.struct("confidence", "lift", "anchor")).alias("_anchor"),
        )
    )
    best_first = Window.partitionBy("customer_id").orderBy(F.col("score").desc(), F.col("product_id").asc())
    return (
        candidates.withColumn("score", rounded_score("_confidence"))
        .withColumn("source_rank", F.row_number().over(best_first))
        .where(F.col("source_rank") <= top_n)
        .select(
            "customer_id",
            "product_id",
            "score",
            F.lit(SOURCE_CO_PURCHASE).alias("source"),
            F.concat(F.lit("often bought together with "), F.col("_anchor")).alias("reason"),
            F.col("source_rank").cast(T.IntegerType()),
        )
    )


def rank_popular_products(
    orders: DataFrame,
    *,
    order_items: DataFrame,
    sellable: DataFrame,
    as_of: dt.date,
    window_days: int,
    depth: int,
) -> DataFrame:
    """The most ordered sellable products of the window: per category, per country and in the shop.

    Popularity is the share of the scope's revenue orders of the window that hold the
    product (a category's scope is every order of the window; a country's the orders shipped
    there). The shop-wide ranking lists every sellable product (never ordered: share 0), so
    a fallback list can always be filled.

    Args:
        orders: silver.orders (``order_id``, ``order_status``, ``order_date``, ``ship_country``).
        order_items: silver.order_items (``order_id``, ``product_id``).
        sellable: The sellable products (``product_id``, ``category_l1``): the rows of
            :func:`select_products_as_of` with ``is_sellable``.
        as_of: Last day of the window.
        window_days: Days in the window.
        depth: Products kept per scope.

    Returns:
        ``tier`` (1 category, 2 country, 3 shop), ``scope`` (the category or country; null
        for the shop), ``product_id``, ``share``, ``popularity_rank`` (1..``depth`` by share
        desc, then product id).
    """
    revenue_orders = orders.transform(
        filter_revenue_orders, as_of=as_of, from_date=window_start(as_of, window_days)
    ).select("order_id", "ship_country")
    lines = (
        revenue_orders.join(order_items.select("order_id", "product_id"), on="order_id", how="inner")
        .join(sellable, on="product_id", how="inner")
        .select("order_id", "ship_country", "product_id", "category_l1")
        .distinct()
    )
    all_orders = revenue_orders.agg(F.count(F.lit(1)).alias("_orders"))
    by_category = (
        lines.where(F.col("category_l1").isNotNull())
        .groupBy(F.col("category_l1").alias("scope"), "product_id")
        .agg(F.count(F.lit(1)).alias("_hits"))
        .crossJoin(all_orders)
        .withColumn("tier", F.lit(TIER_CATEGORY))
    )
    country_orders = (
        revenue_orders.where(F.col("ship_country").isNotNull())
        .groupBy(F.col("ship_country").alias("scope"))
        .agg(F.count(F.lit(1)).alias("_orders"))
    )
    by_country = (
        lines.where(F.col("ship_country").isNotNull())
        .groupBy(F.col("ship_country").alias("scope"), "product_id")
        .agg(F.count(F.lit(1)).alias("_hits"))
        .join(country_orders, on="scope", how="inner")
        .withColumn("tier", F.lit(TIER_COUNTRY))
    )
    shop_hits = lines.groupBy("product_id").agg(F.count(F.lit(1)).alias("_hits"))
    in_shop = (
        sellable.select("product_id")
        .join(shop_hits, on="product_id", how="left")
        .select("product_id", F.coalesce("_hits", F.lit(0)).alias("_hits"))
        .crossJoin(all_orders)
        .withColumn("scope", F.lit(None).cast(T.StringType()))
        .withColumn("tier", F.lit(TIER_SHOP))
    )
    share = F.when(F.col("_orders") > 0, F.col("_hits").cast(T.DoubleType()) / F.col("_orders")).otherwise(
        F.lit(0.0)
    )
    best_first = Window.partitionBy("tier", "scope").orderBy(F.col("share").desc(), F.col("product_id").asc())
    columns = ["tier", "scope", "product_id", "_hits", "_orders"]
    return (
        by_category.select(*columns)
        .unionByName(by_country.select(*columns))
        .unionByName(in_shop.select(*columns))
        .withColumn("share", rounded_score(share))
        .withColumn("popularity_rank", F.row_number().over(best_first))
        .where(F.col("popularity_rank") <= depth)
        .select(
            F.col("tier").cast(T.IntegerType()),
            "scope",
            "product_id",
            "share",
            F.col("popularity_rank").cast(T.IntegerType()),
        )
    )


def popularity_recommendations(
    profiles: DataFrame, *, popular: DataFrame, exclusions: DataFrame, top_n: int, window_days: int
) -> DataFrame:
    """Fill each customer's list with popular products: their favourite category, their country, the shop.

    Each customer reaches the first ``top_n`` plus (their rows of ``exclusions``) ranks of
    each tier, not the whole of ``popular``: a rank below that can never make their list.
    Of the ranks above an entry of their list, each is excluded (at most that many), already
    listed by an earlier tier or listed (together fewer than ``top_n``). The depth ``popular``
    was ranked to, shared by every customer (that of the customer with the most exclusions),
    multiplied the candidate rows (bench/results/MEASUREMENTS.md, 2026-12-08).

    Args:
        profiles: Output of :func:`customer_profiles` (``customer_id``, ``country``, ``favourite_category``).
        popular: Output of :func:`rank_popular_products`.
        exclusions: (``customer_id``, ``product_id``) never to recommend.
        top_n: Products per customer.
        window_days: The popularity window (for the reason text).

    Returns:
        At most ``top_n`` rows per customer: ``customer_id``, ``product_id``, ``score`` (the
        share of orders), ``source`` (``popularity``), ``reason``, ``source_rank`` (category
        tier first, then country, then shop; within a tier by popularity).
    """
    _check_top_n(top_n)
    excluded = exclusions.groupBy("customer_id").agg(F.count(F.lit(1)).alias("_excluded"))
    reach = profiles.join(excluded, on="customer_id", how="left").select(
        "customer_id",
        "favourite_category",
        "country",
        F.explode(F.sequence(F.lit(1), (F.lit(top_n) + F.coalesce("_excluded", F.lit(0))).cast("int"))).alias(
            "popularity_rank"
        ),
    )
    tiers = {TIER_CATEGORY: "favourite_category", TIER_COUNTRY: "country"}
    matched = [
        reach.select("customer_id", F.col(scope).alias("scope"), "popularity_rank")
        .join(popular.where(F.col("tier") == tier), on=["scope", "popularity_rank"], how="inner")
        .select("customer_id", "tier", "scope", "product_id", "share", "popularity_rank")
        for tier, scope in tiers.items()
    ]
    shop = (
        reach.select("customer_id", "popularity_rank")
        .join(popular.where(F.col("tier") == TIER_SHOP), on="popularity_rank", how="inner")
        .select("customer_id", "tier", "scope", "product_id", "share", "popularity_rank")
    )
    first_tier = Window.partitionBy("customer_id", "product_id").orderBy("tier", "popularity_rank")
    best_first = Window.partitionBy("customer_id").orderBy("tier", "popularity_rank", "product_id")
    days = f" over the last {window_days} days"
    reason = (
        F.when(
            F.col("tier") == TIER_CATEGORY,
            F.concat(F.lit("popular in "), F.col("scope"), F.lit(", your favourite category" + days)),
        )
        .when(
            F.col("tier") == TIER_COUNTRY,
            F.concat(F.lit("popular in your country ("), F.col("scope"), F.lit(")" + days)),
        )
        .otherwise(F.lit("popular in the shop" + days))
    )
    return (
        matched[0]
        .unionByName(matched[1])
        .unionByName(shop)
        .join(exclusions, on=["customer_id", "product_id"], how="left_anti")
        .withColumn("_first", F.row_number().over(first_tier))
        .where(F.col("_first") == 1)
        .withColumn("source_rank", F.row_number().over(best_first))
        .where(F.col("source_rank") <= top_n)
        .select(
            "customer_id",
            "product_id",
            F.col("share").alias("score"),
            F.lit(SOURCE_POPULARITY).alias("source"),
            reason.alias("reason"),
            F.col("source_rank").cast(T.IntegerType()),
        )
    )


def blend_recommendations(*sources: DataFrame, top_n: int) -> DataFrame:
    """One list per customer: the first source's products, then the next source's new ones, and so on.

    Args:
        sources: Candidate frames (``customer_id``, ``product_id``, ``score``, ``source``,
            ``reason``, ``source_rank``), most trusted first.
        top_n: Products per customer.

    Returns:
        At most ``top_n`` rows per customer, each product once (from the first source that
        proposed it): the candidate columns plus ``rank`` (1..n).

    Raises:
        RecommendationArgumentError: No source, or ``top_n`` below 1.
    """
    _check_top_n(top_n)
    if not sources:
        raise RecommendationArgumentError("blend_recommendations needs at least one source")
    prioritised = sources[0].withColumn("_priority", F.lit(0))
    for priority, source in enumerate(sources[1:], start=1):
        prioritised = prioritised.unionByName(source.withColumn("_priority", F.lit(priority)))
    first_source = Window.partitionBy("customer_id", "product_id").orderBy("_priority", "source_rank")
    in_order = Window.partitionBy("customer_id").orderBy("_priority", "source_rank", "product_id")
    return (
        prioritised.withColumn("_first", F.row_number().over(first_source))
        .where(F.col("_first") == 1)
        .withColumn("rank", F.row_number().over(in_order).cast(T.IntegerType()))
        .where(F.col("rank") <= top_n)
        .drop("_first", "_priority")
    )


# ---------------------------------------------------------------------------------------
# Everything as of a date: the served lists and their evaluation
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Candidates:
    """The three sources' candidates for the customers of one date."""

    model: DataFrame
    co_purchase: DataFrame
    popularity: DataFrame
    population: DataFrame
    sellable: DataFrame


def _candidates_as_of(
    inputs: RecommendationInputs,
    *,
    as_of: dt.date,
    top_n: int,
    window_days: int,
    weights: InteractionWeights,
    half_life_days: float,
    min_interactions: int,
    allow_repeat_purchases: bool,
    popularity_window_days: int,
    affinity_top_k: int,
    affinity_min_pairs: int,
    affinity_max_basket_products: int,
    als: AlsSettings,
    customers: DataFrame | None = None,
) -> _Candidates:
    """Build the candidates of every source for the population of ``as_of`` (or its ``customers``).

    Runs Spark jobs: besides the model's training, the frames several sources read (the
    population, the products, what was ordered, the interactions: scans of the window's silver
    clicks and orders) and the candidates of each source are computed once each and held on
    the executors (``localCheckpoint``). Left lazy, every source, every branch of the
    evaluation's three policies and every broadcast of a join scanned the clicks again: the
    two jobs ran 900 Spark jobs and 80 s at scale 1.
    """
    population = list_population(inputs.clicks, orders=inputs.orders, as_of=as_of)
    if customers is not None:
        population = population.join(customers.select("customer_id"), on="customer_id", how="left_semi")
    population = population.localCheckpoint()
    products_as_of = select_products_as_of(inputs.products, as_of=as_of).localCheckpoint()
    sellable = products_as_of.where(F.col("is_sellable")).select("product_id", "category_l1")
    ordered = ordered_products(inputs.orders, order_items=inputs.order_items, as_of=as_of).localCheckpoint()
    exclusions = ordered.limit(0) if allow_repeat_purchases else ordered
    interactions = customer_product_interactions(
        inputs, as_of=as_of, window_days=window_days, weights=weights, half_life_days=half_life_days
    ).localCheckpoint()
    model = model_recommendations(
        interactions,
        sellable=sellable,
        exclusions=exclusions,
        top_n=top_n,
        min_interactions=min_interactions,
        params=als,
        customers=population,
    )
    pairs = bought_together(
        inputs.orders,
        order_items=inputs.order_items,
        as_of=as_of,
        window_days=window_days,
        top_k=affinity_top_k,
        min_pairs=affinity_min_pairs,
        max_basket_products=affinity_max_basket_products,
    )
    anchors = interactions.where(F.col("purchases") > 0).join(population, on="customer_id", how="left_semi")
    co_purchase = co_purchase_recommendations(
        anchors, pairs=pairs, sellable=sellable, exclusions=exclusions, top_n=top_n
    )
    profiles = customer_profiles(
        population,
        customers=inputs.customers,
        orders=inputs.orders,
        interactions=interactions,
        products_as_of=products_as_of,
        as_of=as_of,
    )
    # Deep enough that top_n remain after the customer's exclusions and the products the
    # model and co-purchase already put in the list (which the blend skips).
    most_excluded = 0 if allow_repeat_purchases else collect_most_ordered(ordered, population=population)
    popular = rank_popular_products(
        inputs.orders,
        order_items=inputs.order_items,
        sellable=sellable,
        as_of=as_of,
        window_days=popularity_window_days,
        depth=2 * top_n + most_excluded,
    )
    popularity = popularity_recommendations(
        profiles, popular=popular, exclusions=exclusions, top_n=top_n, window_days=popularity_window_days
    )
    return _Candidates(
        model.localCheckpoint(),
        co_purchase.localCheckpoint(),
        popularity.localCheckpoint(),
        population,
        sellable,
    )


def collect_most_ordered(ordered: DataFrame, *, population: DataFrame) -> int:
    """The most distinct products one customer of ``population`` ordered (one number, collected)."""
    row = (
        ordered.join(population, on="customer_id", how="left_semi")
        .groupBy("customer_id")
        .count()
        .agg(F.max("count"))
        .first()
    )
    return int((row and row[0]) or 0)


def recommendations(
    inputs: RecommendationInputs,
    *,
    as_of: dt.date,
    top_n: int,
    window_days: int,
    weights: InteractionWeights,
    half_life_days: float,
    min_interactions: int,
    allow_repeat_purchases: bool,
    popularity_window_days: int,
    affinity_top_k: int,
    affinity_min_pairs: int,
    affinity_max_basket_products: int,
    als: AlsSettings,
) -> DataFrame:
    """The gold ``recommendations`` rows of one as-of date.

    Args:
        inputs: The silver tables.
        as_of: The as-of date; later data is ignored.
        top_n: Products per customer (``recommendations.top_n``).
        window_days: Days of interactions training the model and the co-purchase pairs.
        weights: Weight of a view, an add-to-cart and an order line.
        half_life_days: Recency half-life of an interaction's weight.
        min_interactions: Fewest distinct products of a customer the model scores.
        allow_repeat_purchases: Recommend products the customer already ordered too.
        popularity_window_days: Days of orders ranking the popularity fallback.
        affinity_top_k, affinity_min_pairs, affinity_max_basket_products: The co-purchase
            pairs (as in ``product_affinity``).
        als: ALS settings.

    Returns:
        One row per customer with an order or a login up to ``as_of`` and rank (at most
        ``top_n``): ``customer_id, as_of_date, rank, product_id, score, source, reason``.
        Fewer than ``top_n`` rows only when fewer sellable products are left for them.
    """
    candidates = _candidates_as_of(
        inputs,
        as_of=as_of,
        top_n=top_n,
        window_days=window_days,
        weights=weights,
        half_life_days=half_life_days,
        min_interactions=min_interactions,
        allow_repeat_purchases=allow_repeat_purchases,
        popularity_window_days=popularity_window_days,
        affinity_top_k=affinity_top_k,
        affinity_min_pairs=affinity_min_pairs,
        affinity_max_basket_products=affinity_max_basket_products,
        als=als,
    )
    return (
        blend_recommendations(candidates.model, candidates.co_purchase, candidates.popularity, top_n=top_n)
        .withColumn("as_of_date", F.lit(as_of))
        .transform(conform_to, RECOMMENDATIONS_TABLE_SCHEMA)
    )


def holdout_purchases(
    orders: DataFrame, *, order_items: DataFrame, after: dt.date, as_of: dt.date
) -> DataFrame:
    """What customers bought after ``after`` up to ``as_of``: the relevant products of the evaluation.

    Returns:
        One row per (``customer_id``, ``product_id``) of a revenue order dated in
        ``(after, as_of]``; guests excluded.
    """
    return (
        orders.transform(filter_revenue_orders, as_of=as_of, from_date=after + dt.timedelta(days=1))
        .where(F.col("customer_id").isNotNull())
        .transform(join_revenue_order_lines, order_items=order_items)
        .where(F.col("product_id").isNotNull())
        .select("customer_id", "product_id")
        .distinct()
    )


def ranking_metrics(lists: DataFrame, *, relevant: DataFrame, users: DataFrame, k: int) -> DataFrame:
    """Mean precision, recall and NDCG at ``k`` over ``users``, as ``RankingEvaluator`` computes them.

    For a user with ``hits`` relevant products among the first ``k`` of their list and
    ``R`` relevant products: precision = ``hits / k``; recall = ``hits / R``; NDCG =
    ``sum(1 / log2(rank + 1) over hits) / sum(1 / log2(i + 1) for i = 1..min(R, k))``. A user
    without a list scores 0. Means are taken as decimals (exact in any order).

    Args:
        lists: ``customer_id``, ``product_id``, ``rank`` (1 = first).
        relevant: (``customer_id``, ``product_id``) the user did buy.
        users: ``customer_id`` of the users evaluated (each with a relevant product).
        k: The cut-off.

    Returns:
        One row: ``users`` (long), ``precision_at_k``, ``recall_at_k``, ``ndcg_at_k``
        (doubles rounded to 6 places; null when there is no user).
    """
    _check_top_n(k)
    top = lists.where(F.col("rank") <= k).select("customer_id", "product_id", "rank")
    hits = (
        top.join(relevant, on=["customer_id", "product_id"], how="inner")
        .groupBy("customer_id")
        .agg(
            F.count(F.lit(1)).alias("_hits"),
            F.sum(F.lit(1.0) / F.log2(F.col("rank") + F.lit(1))).alias("_dcg"),
        )
    )
    wanted = relevant.groupBy("customer_id").agg(F.count(F.lit(1)).alias("_relevant"))
    ideal = F.aggregate(
        F.sequence(F.lit(1), F.least(F.col("_relevant"), F.lit(k)).cast(T.IntegerType())),
        F.lit(0.0),
        lambda total, i: total + F.lit(1.0) / F.log2(i + F.lit(1)),
    )
    per_user = (
        users.select("customer_id")
        .distinct()
        .join(wanted, on="customer_id", how="inner")
        .join(hits, on="customer_id", how="left")
        .select(
            (F.coalesce("_hits", F.lit(0)) / F.lit(k)).cast(_METRIC).alias("_precision"),
            (F.coalesce("_hits", F.lit(0)) / F.col("_relevant")).cast(_METRIC).alias("_recall"),
            (F.coalesce("_dcg", F.lit(0.0)) / ideal).cast(_METRIC).alias("_ndcg"),
        )
    )
    return per_user.agg(
        F.count(F.lit(1)).alias("users"),
        *[
            F.round(F.avg(f"_{name}").cast(T.DoubleType()), SCORE_DECIMALS).alias(f"{name}_at_k")
            for name in ("precision", "recall", "ndcg")
        ],
    )


def _method_metrics(
    lists: DataFrame,
    *,
    method: str,
    relevant: DataFrame,
    users: DataFrame,
    sellable: DataFrame,
    k: int,
) -> DataFrame:
    """One metrics row of a method: ranking metrics, coverage and how many users it scored itself."""
    listed = lists.where(F.col("rank") <= k)
    own = listed.where(F.col("source") == method) if method != SOURCE_POPULARITY else listed
    extent = listed.agg(F.countDistinct("product_id").alias("_listed_products"))
    scored_users = own.agg(F.countDistinct("customer_id").alias("users_scored"))
    catalogue = sellable.agg(F.count(F.lit(1)).alias("_sellable"))
    coverage = F.when(
        (F.col("users") > 0) & (F.col("_sellable") > 0),
        F.round(F.col("_listed_products").cast(T.DoubleType()) / F.col("_sellable"), SCORE_DECIMALS),
    )
    return (
        ranking_metrics(listed, relevant=relevant, users=users, k=k)
        .crossJoin(extent)
        .crossJoin(scored_users)
        .crossJoin(catalogue)
        .select(
            F.lit(method).alias("method"),
            F.lit(k).cast(T.IntegerType()).alias("k"),
            "precision_at_k",
            "recall_at_k",
            "ndcg_at_k",
            coverage.alias("coverage"),
            F.col("users").alias("test_users"),
            "users_scored",
        )
    )


def evaluate_recommendations(
    inputs: RecommendationInputs,
    *,
    as_of: dt.date,
    holdout_days: int,
    top_n: int,
    window_days: int,
    weights: InteractionWeights,
    half_life_days: float,
    min_interactions: int,
    allow_repeat_purchases: bool,
    popularity_window_days: int,
    affinity_top_k: int,
    affinity_min_pairs: int,
    affinity_max_basket_products: int,
    als: AlsSettings,
) -> DataFrame:
    """The gold ``recommendation_metrics`` rows of one as-of date: the three methods side by side.

    Protocol: everything is rebuilt as of ``train_end = as_of - holdout_days`` from the
    data dated up to then (the model, the co-purchase pairs, popularity, exclusions, who
    gets a list, what is sellable). The test users are the customers who had a list then
    and bought after it (revenue orders dated in ``(train_end, as_of]``); their relevant
    products are what they bought. Each method is a whole policy, as it would be served:

    * ``model``: the model's list, filled by the popularity fallback;
    * ``co_purchase``: the co-purchase list, filled by the popularity fallback;
    * ``popularity``: the popularity fallback alone (the baseline to beat).

    Runs one Spark job (is anybody to test?); when no customer who had a list at the cut
    bought after it (a lake younger than the holdout, a quiet week), the rows come without
    building any candidate or training the model.

    Args: as :func:`recommendations`, plus ``holdout_days`` (days held out for the test).

    Returns:
        One row per method: ``as_of_date, method, k (= top_n), precision_at_k, recall_at_k,
        ndcg_at_k, coverage, train_end_date, test_users, users_scored``. The measures are
        null when there is no test user.

    Raises:
        RecommendationArgumentError: ``holdout_days`` below 1.
    """
    if holdout_days < 1:
        raise RecommendationArgumentError(f"holdout_days must be at least 1, got {holdout_days}")
    train_end = as_of - dt.timedelta(days=holdout_days)
    relevant = holdout_purchases(inputs.orders, order_items=inputs.order_items, after=train_end, as_of=as_of)
    training = RecommendationInputs(
        clicks=inputs.clicks.where(F.col("event_date") <= F.lit(train_end)),
        orders=inputs.orders.where(F.col("order_date") <= F.lit(train_end)),
        order_items=inputs.order_items,
        products=inputs.products,
        customers=inputs.customers,
    )
    test_users = list_population(training.clicks, orders=training.orders, as_of=train_end).join(
        relevant, on="customer_id", how="left_semi"
    )
    if test_users.isEmpty():  # nobody to test: the rows the full evaluation gives, without training
        return _metrics_without_test_users(inputs.orders, as_of=as_of, train_end=train_end, k=top_n)
    candidates = _candidates_as_of(
        training,
        as_of=train_end,
        top_n=top_n,
        window_days=window_days,
        weights=weights,
        half_life_days=half_life_days,
        min_interactions=min_interactions,
        allow_repeat_purchases=allow_repeat_purchases,
        popularity_window_days=popularity_window_days,
        affinity_top_k=affinity_top_k,
        affinity_min_pairs=affinity_min_pairs,
        affinity_max_basket_products=affinity_max_basket_products,
        als=als,
        customers=relevant.select("customer_id").distinct(),
    )
    users = candidates.population
    policies = {
        SOURCE_MODEL: blend_recommendations(candidates.model, candidates.popularity, top_n=top_n),
        SOURCE_CO_PURCHASE: blend_recommendations(candidates.co_purchase, candidates.popularity, top_n=top_n),
        SOURCE_POPULARITY: blend_recommendations(candidates.popularity, top_n=top_n),
    }
    rows = [
        _method_metrics(
            lists, method=method, relevant=relevant, users=users, sellable=candidates.sellable, k=top_n
        )
        for method, lists in policies.items()
    ]
    metrics = rows[0]
    for row in rows[1:]:
        metrics = metrics.unionByName(row)
    return metrics.withColumns({"as_of_date": F.lit(as_of), "train_end_date": F.lit(train_end)}).transform(
        conform_to, RECOMMENDATION_METRICS_TABLE_SCHEMA
    )


def _metrics_without_test_users(
    orders: DataFrame, *, as_of: dt.date, train_end: dt.date, k: int
) -> DataFrame:
    """The metrics rows of a date nobody bought after ``train_end``: null measures, no user."""
    rows = [(method, k, None, None, None, None, 0, 0) for method in METHODS]
    schema = (
        "method string, k int, precision_at_k double, recall_at_k double, ndcg_at_k double, "
        "coverage double, test_users long, users_scored long"
    )
    return (
        orders.sparkSession.createDataFrame(rows, schema)
        .withColumns({"as_of_date": F.lit(as_of), "train_end_date": F.lit(train_end)})
        .transform(conform_to, RECOMMENDATION_METRICS_TABLE_SCHEMA)
    )


def _check_top_n(top_n: int) -> None:
    if top_n < 1:
        raise RecommendationArgumentError(f"a list needs at least 1 product, got top_n={top_n}")


def metrics_line(as_of: dt.date, rows: Sequence[Row]) -> str:
    """One line for a run's progress: the test, then NDCG, precision, recall at k and coverage per method.

    Args:
        as_of: The as-of date.
        rows: The ``recommendation_metrics`` rows of that date (any order; :data:`METHODS` order shown).
    """
    if not rows:
        return f"as of {as_of}: no metrics"
    position = {method: index for index, method in enumerate(METHODS)}
    rows = sorted(rows, key=lambda row: position.get(row["method"], len(position)))
    first = rows[0]
    head = (
        f"as of {as_of} (trained up to {first['train_end_date']}, {first['test_users']} customers "
        f"bought after it), @{first['k']}"
    )
    if not first["test_users"]:
        return f"{head}: nothing to evaluate"

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    methods = "; ".join(
        f"{row['method']} ndcg {number(row['ndcg_at_k'])} precision {number(row['precision_at_k'])} "
        f"recall {number(row['recall_at_k'])} coverage {number(row['coverage'])}"
        for row in rows
    )
    return f"{head}: {methods}"
