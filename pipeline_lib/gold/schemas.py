"""Schema contracts of the gold tables (``docs/contracts.md``, "Gold tables").

Every gold transform ends in :func:`conform_to` with one of these ``StructType``s, so the
columns, their order and their types are fixed here and nowhere else. The contract lists
the minimum columns; the extra ones are documented in ``docs/gold.md``.

Personal data never reaches gold: no e-mail, first name, last name, phone or postal code
(:data:`pipeline_lib.privacy.pii.PII_COLUMNS`); customers are identified by ``customer_id``
and ``email_hash``.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline_lib.silver.schemas import BASE_MONEY, MONEY, RATE


def _schema(*fields: tuple[str, T.DataType]) -> T.StructType:
    return T.StructType([T.StructField(name, data_type, True) for name, data_type in fields])


# --- Aggregates (built by jobs/gold_aggregates.py; contract columns exactly) ---------------

CUSTOMER_SEGMENTS_SCHEMA = _schema(  # one customer as of a date
    ("customer_id", T.StringType()),
    ("as_of_date", T.DateType()),
    ("recency_days", T.IntegerType()),  # days from the last revenue order to as_of_date
    ("frequency", T.LongType()),  # distinct revenue orders
    ("monetary", BASE_MONEY),  # revenue, base currency
    ("r_score", T.IntegerType()),  # 1..5, 5 best
    ("f_score", T.IntegerType()),
    ("m_score", T.IntegerType()),
    ("segment", T.StringType()),
)

PRODUCT_POPULARITY_SCHEMA = _schema(  # one product per window as of a date
    ("product_id", T.StringType()),
    ("as_of_date", T.DateType()),
    ("window_days", T.IntegerType()),
    ("views", T.LongType()),
    ("add_to_carts", T.LongType()),
    ("purchases", T.LongType()),  # distinct orders
    ("units", T.LongType()),
    ("revenue", BASE_MONEY),
    ("view_to_cart_rate", T.DoubleType()),
    ("cart_to_purchase_rate", T.DoubleType()),
    ("rank_in_category", T.IntegerType()),
    ("rank_overall", T.IntegerType()),
)

# --- Campaigns (built by jobs/gold_campaigns.py; docs/campaigns_and_stock.md) --------------

CAMPAIGN_AUDIENCES_SCHEMA = _schema(  # one member of a campaign as of a date; no personal data
    ("campaign", T.StringType()),
    ("as_of_date", T.DateType()),
    ("customer_id", T.StringType()),
    ("segment", T.StringType()),  # RFM segment as of as_of_date
    ("group", T.StringType()),  # treatment or control: a hash of campaign and customer_id, stable
    ("channel", T.StringType()),  # email, sms, ads
    ("country", T.StringType()),  # of the customer's current CRM version
    ("recency_days", T.IntegerType()),
    ("frequency", T.LongType()),
    ("monetary", BASE_MONEY),
    ("r_score", T.IntegerType()),
    ("f_score", T.IntegerType()),
    ("m_score", T.IntegerType()),
)

CAMPAIGN_RESULTS_SCHEMA = _schema(  # one group of a campaign as of a date
    ("campaign", T.StringType()),
    ("as_of_date", T.DateType()),
    ("group", T.StringType()),
    ("channel", T.StringType()),
    ("start_date", T.DateType()),
    ("end_date", T.DateType()),  # last day counted: start + measurement_days - 1, or as_of_date if earlier
    ("days_measured", T.IntegerType()),
    ("customers", T.LongType()),  # members of the launch audience in this group
    ("buyers", T.LongType()),  # ... with at least one revenue order in [start_date, end_date]
    ("orders", T.LongType()),  # distinct revenue orders
    ("revenue", BASE_MONEY),
    ("conversion_rate", T.DoubleType()),  # buyers / customers
    ("revenue_per_customer", T.DoubleType()),
    # Treatment rows only (null on control rows): treatment minus control, with a two-sided
    # normal-approximation interval at confidence_level.
    ("conversion_uplift", T.DoubleType()),
    ("conversion_uplift_ci_low", T.DoubleType()),
    ("conversion_uplift_ci_high", T.DoubleType()),
    ("revenue_uplift_per_customer", T.DoubleType()),
    ("revenue_uplift_ci_low", T.DoubleType()),
    ("revenue_uplift_ci_high", T.DoubleType()),
    ("confidence_level", T.DoubleType()),
    ("is_significant", T.BooleanType()),  # the conversion interval excludes 0
)

# --- Stock (built by jobs/gold_stock.py; docs/campaigns_and_stock.md) -----------------------

FACT_INVENTORY_DAILY_SCHEMA = _schema(  # one product, location and day with a snapshot
    ("product_id", T.StringType()),
    ("location_id", T.StringType()),
    ("date_key", T.IntegerType()),  # yyyymmdd of the UTC day
    ("date", T.DateType()),
    ("on_hand", T.IntegerType()),  # of the day's last snapshot (the closing stock)
    ("available", T.IntegerType()),
    ("committed", T.IntegerType()),
    ("incoming", T.IntegerType()),
    ("lead_time_days", T.IntegerType()),
    ("in_stock", T.BooleanType()),  # available > 0 at the closing snapshot
    ("snapshot_ts", T.TimestampType()),  # the closing snapshot's time
    ("snapshots", T.IntegerType()),  # snapshots of the day
)

STOCK_SIGNALS_SCHEMA = _schema(  # one product as of a date (windows: stock.short/long_window_days)
    ("product_id", T.StringType()),
    ("as_of_date", T.DateType()),
    ("available", T.LongType()),  # sum over locations of their latest snapshot on or before as_of_date
    ("avg_daily_units_7d", T.DoubleType()),  # units per in-stock day of the short window
    ("avg_daily_units_28d", T.DoubleType()),  # units per in-stock day of the long window
    ("days_of_cover", T.DoubleType()),  # available / avg_daily_units_28d
    ("days_out_of_stock_28d", T.IntegerType()),
    ("reorder_point", T.DoubleType()),
    ("reorder_now", T.BooleanType()),
    ("suggested_quantity", T.LongType()),
    ("on_hand", T.LongType()),
    ("incoming", T.LongType()),
    ("inventory_position", T.LongType()),  # available + incoming
    ("locations", T.IntegerType()),  # locations with a snapshot on or before as_of_date
    ("last_snapshot_date", T.DateType()),
    ("in_stock_days_7d", T.IntegerType()),
    ("in_stock_days_28d", T.IntegerType()),
    ("days_unknown_28d", T.IntegerType()),  # no snapshot and no sale: neither in nor out of stock
    ("units_sold_28d", T.LongType()),
    ("sigma_daily_units_28d", T.DoubleType()),  # sample standard deviation over in-stock days
    ("lead_time_days", T.IntegerType()),
    ("safety_stock", T.DoubleType()),
    ("lost_sales_units_28d", T.DoubleType()),  # days_out_of_stock_28d * avg_daily_units_28d
)

# --- Actions: recommendations (built by jobs/gold_recommendations.py) ----------------------

RECOMMENDATIONS_SCHEMA = _schema(  # one customer, rank and as-of date
    ("customer_id", T.StringType()),
    ("as_of_date", T.DateType()),
    ("rank", T.IntegerType()),  # 1 = first shown
    ("product_id", T.StringType()),
    ("score", T.DoubleType()),  # the source's own measure (see docs/recommendations.md)
    ("source", T.StringType()),  # model, co_purchase, popularity
)

PRODUCT_AFFINITY_SCHEMA = _schema(  # one pair of products, kind and as-of date
    ("product_id", T.StringType()),
    ("other_product_id", T.StringType()),
    ("kind", T.StringType()),  # bought_together (same order), viewed_together (same session)
    ("as_of_date", T.DateType()),
    ("support", T.DoubleType()),  # share of the baskets holding both
    ("confidence", T.DoubleType()),  # share of the baskets holding product_id that hold other_product_id
    ("lift", T.DoubleType()),  # confidence / share of the baskets holding other_product_id
)

RECOMMENDATION_METRICS_SCHEMA = _schema(  # one method and as-of date
    ("as_of_date", T.DateType()),
    ("method", T.StringType()),  # model, co_purchase, popularity
    ("k", T.IntegerType()),
    ("precision_at_k", T.DoubleType()),
    ("recall_at_k", T.DoubleType()),
    ("ndcg_at_k", T.DoubleType()),
    ("coverage", T.DoubleType()),  # share of the sellable catalogue in at least one list
)

# The tables: the contract's columns, then the extra columns documented in docs/recommendations.md.
RECOMMENDATIONS_TABLE_SCHEMA = T.StructType(
    [*RECOMMENDATIONS_SCHEMA.fields, T.StructField("reason", T.StringType(), True)]
)
PRODUCT_AFFINITY_TABLE_SCHEMA = T.StructType(
    [
        *PRODUCT_AFFINITY_SCHEMA.fields,
        T.StructField("pair_count", T.LongType(), True),  # baskets holding both
        T.StructField("rank", T.IntegerType(), True),  # 1..top_k within product_id and kind
    ]
)
RECOMMENDATION_METRICS_TABLE_SCHEMA = T.StructType(
    [
        *RECOMMENDATION_METRICS_SCHEMA.fields,
        T.StructField("train_end_date", T.DateType(), True),  # as_of_date - holdout_days
        T.StructField("test_users", T.LongType(), True),  # customers evaluated
        T.StructField("users_scored", T.LongType(), True),  # ... whose list the method itself filled
    ]
)

# --- Star schema (built by jobs/gold.py) ---------------------------------------------------

DIM_DATE_SCHEMA = _schema(  # one calendar day
    ("date_key", T.IntegerType()),  # yyyymmdd
    ("date", T.DateType()),
    ("year", T.IntegerType()),
    ("quarter", T.IntegerType()),
    ("month", T.IntegerType()),
    ("month_name", T.StringType()),  # January .. December
    ("day_of_month", T.IntegerType()),
    ("day_of_year", T.IntegerType()),
    ("day_of_week", T.IntegerType()),  # ISO: 1 = Monday .. 7 = Sunday
    ("day_name", T.StringType()),  # Monday .. Sunday
    ("iso_week", T.IntegerType()),
    ("is_weekend", T.BooleanType()),
    ("year_month", T.StringType()),  # yyyy-MM
)

DIM_CUSTOMER_SCHEMA = _schema(  # one version of a customer (SCD type 2), plus unknown/inferred members
    ("customer_sk", T.LongType()),
    ("customer_id", T.StringType()),
    ("email_hash", T.StringType()),
    ("country", T.StringType()),
    ("city", T.StringType()),
    ("signup_ts", T.TimestampType()),
    ("marketing_opt_in", T.BooleanType()),
    ("valid_from", T.TimestampType()),
    ("valid_to", T.TimestampType()),  # null while current
    ("is_current", T.BooleanType()),
    ("is_inferred", T.BooleanType()),  # known from orders only, not (yet) from the CRM
)

DIM_PRODUCT_SCHEMA = _schema(  # one version of a product (SCD type 2), plus unknown/inferred members
    ("product_sk", T.LongType()),
    ("product_id", T.StringType()),
    ("sku", T.StringType()),
    ("name", T.StringType()),
    ("brand", T.StringType()),
    ("category_l1", T.StringType()),
    ("category_l2", T.StringType()),
    ("category_l3", T.StringType()),
    ("list_price", MONEY),  # as delivered by the catalogue, in list_price_currency
    ("list_price_currency", T.StringType()),
    ("is_active", T.BooleanType()),
    ("is_delisted", T.BooleanType()),
    ("valid_from", T.TimestampType()),
    ("valid_to", T.TimestampType()),  # null while current
    ("is_current", T.BooleanType()),
    ("is_inferred", T.BooleanType()),  # known from order lines only, not (yet) from the catalogue
)

FACT_ORDER_LINES_SCHEMA = _schema(  # one order line, current state
    ("order_id", T.StringType()),
    ("line_no", T.IntegerType()),
    ("order_ts", T.TimestampType()),
    ("order_date_key", T.IntegerType()),
    ("customer_id", T.StringType()),  # null for a guest checkout
    ("customer_sk", T.LongType()),
    ("product_id", T.StringType()),
    ("product_sk", T.LongType()),
    ("quantity", T.IntegerType()),
    ("unit_price", MONEY),  # order currency
    ("discount_amount", MONEY),  # order currency, whole line
    ("net_amount", MONEY),  # order currency
    ("net_amount_base", BASE_MONEY),  # base currency, at the order date's rate
    ("fx_rate_to_base", RATE),
    ("currency", T.StringType()),
    ("order_status", T.StringType()),
    ("channel", T.StringType()),
    ("is_revenue", T.BooleanType()),
)

FACT_ORDERS_SCHEMA = _schema(  # one order, current state
    ("order_id", T.StringType()),
    ("customer_id", T.StringType()),  # null for a guest checkout
    ("customer_sk", T.LongType()),
    ("order_ts", T.TimestampType()),
    ("order_date_key", T.IntegerType()),
    ("updated_at", T.TimestampType()),
    ("order_status", T.StringType()),
    ("channel", T.StringType()),
    ("ship_country", T.StringType()),
    ("ship_city", T.StringType()),
    ("payment_type", T.StringType()),
    ("currency", T.StringType()),
    ("line_count", T.LongType()),
    ("item_count", T.LongType()),  # sum of quantities
    ("net_amount_base", BASE_MONEY),  # sum of its lines; 0 without lines
    ("shipping_fee_base", BASE_MONEY),
    ("is_revenue", T.BooleanType()),
)

FACT_SESSIONS_SCHEMA = _schema(  # one visit
    ("session_id", T.StringType()),
    ("anonymous_id", T.StringType()),
    ("customer_id", T.StringType()),  # the last known customer of the session, by time
    ("start_ts", T.TimestampType()),
    ("end_ts", T.TimestampType()),
    ("duration_s", T.LongType()),
    ("session_date_key", T.IntegerType()),  # of the first event
    ("events", T.LongType()),
    ("page_views", T.LongType()),
    ("product_views", T.LongType()),
    ("searches", T.LongType()),
    ("add_to_carts", T.LongType()),
    ("checkouts", T.LongType()),  # begin_checkout events
    ("purchases", T.LongType()),  # distinct orders purchased
    ("converted", T.BooleanType()),
    ("funnel_step", T.StringType()),  # furthest step reached
    ("funnel_step_no", T.IntegerType()),  # 1 page_view .. 5 purchase
    ("landing_page", T.StringType()),
    ("utm_source", T.StringType()),
    ("utm_medium", T.StringType()),
    ("utm_campaign", T.StringType()),
    ("device_type", T.StringType()),
    ("is_session_derived", T.BooleanType()),
)

PRODUCT_INTEREST_HOURLY_SCHEMA = _schema(  # one product and sliding window (ecom-pipeline stream)
    ("product_id", T.StringType()),
    # UTC; windows of sources.clicks.interest_window_minutes every interest_slide_minutes
    ("window_start", T.TimestampType()),
    ("window_end", T.TimestampType()),
    ("views", T.LongType()),  # product_view events
    ("add_to_carts", T.LongType()),  # add_to_cart events
    ("purchases", T.LongType()),  # purchase events (one per order line of the product)
    ("updated_at", T.TimestampType()),  # when the stream last changed the row
)

GOLD_SCHEMAS: dict[str, T.StructType] = {
    "dim_date": DIM_DATE_SCHEMA,
    "dim_customer": DIM_CUSTOMER_SCHEMA,
    "dim_product": DIM_PRODUCT_SCHEMA,
    "fact_order_lines": FACT_ORDER_LINES_SCHEMA,
    "fact_orders": FACT_ORDERS_SCHEMA,
    "fact_sessions": FACT_SESSIONS_SCHEMA,
    "customer_segments": CUSTOMER_SEGMENTS_SCHEMA,
    "product_popularity": PRODUCT_POPULARITY_SCHEMA,
    "campaign_audiences": CAMPAIGN_AUDIENCES_SCHEMA,
    "campaign_results": CAMPAIGN_RESULTS_SCHEMA,
    "fact_inventory_daily": FACT_INVENTORY_DAILY_SCHEMA,
    "stock_signals": STOCK_SIGNALS_SCHEMA,
    "recommendations": RECOMMENDATIONS_SCHEMA,
    "product_affinity": PRODUCT_AFFINITY_SCHEMA,
    "recommendation_metrics": RECOMMENDATION_METRICS_SCHEMA,
    "product_interest_hourly": PRODUCT_INTEREST_HOURLY_SCHEMA,
}


def conform_to(df: DataFrame, schema: T.StructType) -> DataFrame:
    """Select the contract's columns, in its order, cast to its types.

    Args:
        df: Must hold every column of ``schema`` (extra columns are dropped).
        schema: A gold contract from this module.

    Returns:
        ``df`` with exactly the contract's columns.

    Raises:
        pyspark.errors.AnalysisException: A contract column is missing.
    """
    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])
