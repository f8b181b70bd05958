"""What a SQL reader of the published gold tables is told: each table's grain key and comments.

``ecom-pipeline publish`` (docs/postgres.md) puts a primary key on :data:`GOLD_KEYS` and the
comments below on the tables and columns it publishes. The texts are those of docs/gold.md,
docs/segments_and_popularity.md, docs/campaigns_and_stock.md and docs/recommendations.md
(``tests/unit/test_gold_catalog.py`` checks that the keys and grains here are the documented
ones); a column without a documented meaning has no
comment.
"""

from __future__ import annotations

__all__ = ["COLUMN_COMMENTS", "GOLD_KEYS", "TABLE_COMMENTS", "column_comments"]

# The grain of each gold table: its primary key once published.
GOLD_KEYS: dict[str, tuple[str, ...]] = {
    "dim_date": ("date_key",),
    "dim_customer": ("customer_sk",),
    "dim_product": ("product_sk",),
    "fact_order_lines": ("order_id", "line_no"),
    "fact_orders": ("order_id",),
    "fact_sessions": ("session_id",),
    "customer_segments": ("customer_id", "as_of_date"),
    "product_popularity": ("product_id", "as_of_date", "window_days"),
    "fact_inventory_daily": ("product_id", "location_id", "date_key"),
    "stock_signals": ("product_id", "as_of_date"),
    "campaign_audiences": ("campaign", "as_of_date", "customer_id"),
    "campaign_results": ("campaign", "as_of_date", "group"),
    "recommendations": ("customer_id", "as_of_date", "rank"),
    "product_affinity": ("product_id", "other_product_id", "kind", "as_of_date"),
    "recommendation_metrics": ("as_of_date", "method"),
    "product_interest_hourly": ("product_id", "window_start"),
}

# docs/gold.md's "grain" column; docs/segments_and_popularity.md for the aggregates.
TABLE_COMMENTS: dict[str, str] = {
    "dim_date": "one calendar day",
    "dim_customer": "one version of a customer (SCD 2), plus members",
    "dim_product": "one version of a product (SCD 2), plus members",
    "fact_order_lines": "one current line of an order",
    "fact_orders": "one order, current state",
    "fact_sessions": "one visit",
    "customer_segments": "one customer as of a date (RFM scores and segment)",
    "product_popularity": "one product per window as of a date",
    # docs/campaigns_and_stock.md's "grain" column.
    "fact_inventory_daily": "one product, location and UTC day with a snapshot",
    "stock_signals": "one product as of a date",
    "campaign_audiences": "one member of a campaign as of a date",
    "campaign_results": "one group of a campaign as of a date",
    # docs/recommendations.md's "Grain" lines.
    "recommendations": "one customer, rank and as-of date",
    "product_affinity": "one ordered pair of products, kind and as-of date",
    "recommendation_metrics": "one method and as-of date",
    # docs/kafka.md, "gold.product_interest_hourly".
    "product_interest_hourly": "one product and sliding window of event time",
}

# Columns whose meaning the docs state, by table ("*" for every table holding the column).
COLUMN_COMMENTS: dict[str, dict[str, str]] = {
    "*": {
        "customer_id": "the customer; null for a guest checkout",
        "net_amount_base": "base currency, at the order date's rate",
        "is_revenue": "the order's status counts as revenue",
        "valid_to": "null while current",
        "is_inferred": "known from orders or order lines only, not (yet) from the CRM or catalogue",
    },
    "dim_date": {
        "date_key": "yyyymmdd",
        "day_of_week": "ISO: 1 = Monday .. 7 = Sunday",
        "year_month": "yyyy-MM",
    },
    "dim_product": {"list_price": "the catalogue price as delivered, in list_price_currency"},
    "fact_order_lines": {
        "unit_price": "order currency, before discount",
        "discount_amount": "order currency, whole line",
        "net_amount": "order currency",
    },
    "fact_orders": {
        "line_count": "number of current lines",
        "item_count": "sum of the lines' quantities",
        "net_amount_base": "sum of the lines' net_amount_base; 0 without lines",
    },
    "fact_sessions": {
        "customer_id": "the last known customer of the session, by time",
        "session_date_key": "date of the first event",
        "checkouts": "begin_checkout events",
        "purchases": "distinct orders purchased",
    },
    "customer_segments": {
        "recency_days": "days from the last revenue order to as_of_date",
        "frequency": "distinct revenue orders up to the as-of date",
        "monetary": "revenue of those orders, base currency",
    },
    "product_popularity": {
        "purchases": "distinct revenue orders dated in the window with a line of the product",
        "units": "sum of quantity of those lines",
        "revenue": "sum of net_amount_base of those lines",
        "view_to_cart_rate": "add_to_carts / views, null when views = 0",
        "cart_to_purchase_rate": "purchases / add_to_carts, null when add_to_carts = 0",
    },
}


def column_comments(table: str, columns: list[str] | tuple[str, ...]) -> dict[str, str]:
    """The documented comments of ``table``'s ``columns`` (a table-specific one wins)."""
    wanted = set(columns)
    merged = {**COLUMN_COMMENTS["*"], **COLUMN_COMMENTS.get(table, {})}
    return {column: text for column, text in merged.items() if column in wanted}
