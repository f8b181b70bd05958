"""Pure silver transformations (``DataFrame -> DataFrame``) and their column helpers.

Modules: :mod:`.common` (column helpers: text, codes, timestamps, numbers; the tie rule:
``rank_versions``, ``keep_latest``), :mod:`.fx` (rates and the as-of lookup), :mod:`.orders`
(orders and lines), :mod:`.customers`, :mod:`.products`, :mod:`.inventory` (stock snapshots),
:mod:`.deletions` (rows deleted at the source, as tombstones from a database extract).
Clickstream transforms live in their own module.
"""

from __future__ import annotations

from pipeline_lib.silver.common import (
    clean_string,
    content_columns,
    count_outcomes,
    keep_latest,
    lower_code,
    parse_boolean,
    parse_date,
    parse_decimal,
    parse_timestamp,
    parse_whole_number,
    rank_versions,
    row_fingerprint,
    upper_code,
    utc_date,
)
from pipeline_lib.silver.customers import clean_customers, to_silver_customers, with_email_hash
from pipeline_lib.silver.deletions import clean_deletions, deleted_rows, deletion_versions, without_deleted
from pipeline_lib.silver.fx import clean_fx_rates, dedupe_fx_rates, to_silver_fx_rates, with_fx_rate
from pipeline_lib.silver.inventory import (
    clean_inventory,
    inventory_version_key,
    rank_inventory,
    to_silver_inventory,
)
from pipeline_lib.silver.orders import (
    clean_order_items,
    clean_orders,
    order_tie_break,
    order_version_key,
    order_versions,
    rank_order_items,
    rank_orders,
    to_silver_order_items,
    to_silver_orders,
    with_line_amounts,
    with_order_version,
    with_shipping_fee_base,
    with_superseded_flag,
)
from pipeline_lib.silver.products import (
    clean_products,
    rank_products,
    to_silver_products,
    with_delisted_products,
)

__all__ = [
    "clean_customers",
    "clean_deletions",
    "clean_fx_rates",
    "clean_inventory",
    "clean_order_items",
    "clean_orders",
    "clean_products",
    "clean_string",
    "content_columns",
    "count_outcomes",
    "dedupe_fx_rates",
    "deleted_rows",
    "deletion_versions",
    "inventory_version_key",
    "keep_latest",
    "lower_code",
    "order_tie_break",
    "order_version_key",
    "order_versions",
    "parse_boolean",
    "parse_date",
    "parse_decimal",
    "parse_timestamp",
    "parse_whole_number",
    "rank_inventory",
    "rank_order_items",
    "rank_orders",
    "rank_products",
    "rank_versions",
    "row_fingerprint",
    "to_silver_customers",
    "to_silver_fx_rates",
    "to_silver_inventory",
    "to_silver_order_items",
    "to_silver_orders",
    "to_silver_products",
    "upper_code",
    "utc_date",
    "with_delisted_products",
    "with_email_hash",
    "with_fx_rate",
    "with_line_amounts",
    "with_order_version",
    "with_shipping_fee_base",
    "with_superseded_flag",
    "without_deleted",
]
