"""Schemas of the silver tables and of the quarantine.

Silver is typed, cleaned and deduplicated: money is decimal, time is UTC. Every silver table
keeps the lineage of the bronze row it came from and the names of the 'flag' quality rules
the row failed. The landing and bronze schemas are in :mod:`pipeline_lib.bronze.schemas`.
"""

from __future__ import annotations

from pyspark.sql import types as T

from pipeline_lib.bronze.schemas import INGEST_DATE, RUN_ID, SOURCE_FILE

# ---------------------------------------------------------------------------------------
# Silver: typed, cleaned, deduplicated. Money is decimal, time is UTC. Every silver table
# keeps the lineage of the bronze row it came from (_source_file, _ingest_date, _run_id)
# and the names of the 'flag' quality rules the row failed (_dq_flags, empty if none).
# ---------------------------------------------------------------------------------------
# Money as delivered: 16 integer digits and 4 decimals, never rounded in silver (a value with
# more decimals does not parse); gold rounds only for display.
MONEY = T.DecimalType(20, 4)
BASE_MONEY = T.DecimalType(22, 6)  # converted amounts keep precision; round only for display
RATE = T.DecimalType(18, 8)
DQ_FLAGS = "_dq_flags"

SILVER_LINEAGE_FIELDS = (
    T.StructField(SOURCE_FILE, T.StringType(), True),
    T.StructField(INGEST_DATE, T.DateType(), True),
    T.StructField(RUN_ID, T.StringType(), True),
    T.StructField(DQ_FLAGS, T.ArrayType(T.StringType(), False), True),
)


def _struct(*fields: tuple[str, T.DataType], lineage: bool = True) -> T.StructType:
    columns = [T.StructField(name, data_type, True) for name, data_type in fields]
    return T.StructType([*columns, *(SILVER_LINEAGE_FIELDS if lineage else ())])


SILVER_SCHEMAS: dict[str, T.StructType] = {
    "fx_rates": _struct(("rate_date", T.DateType()), ("currency", T.StringType()), ("rate_to_base", RATE)),
    "orders": _struct(
        ("order_id", T.StringType()),
        ("customer_id", T.StringType()),  # null for a guest checkout
        ("order_status", T.StringType()),
        ("order_ts", T.TimestampType()),
        ("order_date", T.DateType()),  # the UTC calendar date of order_ts
        ("updated_at", T.TimestampType()),
        ("currency", T.StringType()),
        ("channel", T.StringType()),
        ("ship_country", T.StringType()),
        ("ship_city", T.StringType()),
        ("payment_type", T.StringType()),
        ("shipping_fee", MONEY),
        ("fx_rate_to_base", RATE),  # rate of order_date, or the latest earlier one
        ("shipping_fee_base", BASE_MONEY),
    ),
    "order_items": _struct(
        ("order_id", T.StringType()),
        ("line_no", T.IntegerType()),
        ("product_id", T.StringType()),
        ("quantity", T.IntegerType()),
        ("unit_price", MONEY),
        ("discount_amount", MONEY),
        ("net_amount", MONEY),  # quantity * unit_price - discount_amount, order currency
        ("net_amount_base", BASE_MONEY),  # net_amount at the order's fx_rate_to_base
        ("order_updated_at", T.TimestampType()),  # the order version these lines belong to
    ),
    "customers": _struct(  # SCD type 2; personal data in clear lives only here
        ("customer_id", T.StringType()),
        ("email", T.StringType()),
        ("email_hash", T.StringType()),  # HMAC-SHA-256 of the lower-cased e-mail, hex
        ("first_name", T.StringType()),
        ("last_name", T.StringType()),
        ("phone", T.StringType()),
        ("country", T.StringType()),
        ("city", T.StringType()),
        ("postal_code", T.StringType()),
        ("signup_ts", T.TimestampType()),
        ("updated_at", T.TimestampType()),
        ("marketing_opt_in", T.BooleanType()),
        ("valid_from", T.TimestampType()),
        ("valid_to", T.TimestampType()),  # null while current
        ("is_current", T.BooleanType()),
    ),
    "products": _struct(  # SCD type 2; a product missing from a snapshot is closed as delisted
        ("product_id", T.StringType()),
        ("sku", T.StringType()),
        ("name", T.StringType()),
        ("brand", T.StringType()),
        ("category_path", T.ArrayType(T.StringType(), True)),
        ("category_l1", T.StringType()),
        ("category_l2", T.StringType()),
        ("category_l3", T.StringType()),
        ("price", MONEY),
        ("currency", T.StringType()),
        ("is_active", T.BooleanType()),
        ("is_delisted", T.BooleanType()),
        ("updated_at", T.TimestampType()),
        ("attributes", T.StringType()),  # the delivered JSON object, as text
        ("valid_from", T.TimestampType()),
        ("valid_to", T.TimestampType()),
        ("is_current", T.BooleanType()),
    ),
    "clicks": _struct(
        ("event_id", T.StringType()),
        ("event_ts", T.TimestampType()),
        ("event_date", T.DateType()),
        ("event_type", T.StringType()),
        ("anonymous_id", T.StringType()),
        ("customer_id", T.StringType()),  # as delivered, or stitched from the device's login
        ("is_customer_stitched", T.BooleanType()),  # customer_id came from a later login of the device
        ("session_id", T.StringType()),  # as delivered, or derived by the inactivity gap
        ("is_session_derived", T.BooleanType()),
        ("product_id", T.StringType()),
        ("order_id", T.StringType()),
        ("quantity", T.IntegerType()),
        ("price", MONEY),
        ("page_url", T.StringType()),
        ("referrer", T.StringType()),
        ("search_query", T.StringType()),
        ("utm_source", T.StringType()),
        ("utm_medium", T.StringType()),
        ("utm_campaign", T.StringType()),
        ("device_type", T.StringType()),
        ("device_os", T.StringType()),
        ("device_browser", T.StringType()),
    ),
    "inventory": _struct(  # one stock snapshot of a product at a location; a missing day stays missing
        ("product_id", T.StringType()),
        ("location_id", T.StringType()),
        ("snapshot_ts", T.TimestampType()),
        ("snapshot_date", T.DateType()),  # the UTC calendar date of snapshot_ts
        ("on_hand", T.IntegerType()),
        ("available", T.IntegerType()),
        ("committed", T.IntegerType()),
        ("incoming", T.IntegerType()),
        ("lead_time_days", T.IntegerType()),  # null when the source left it empty
    ),
}

# Quarantine: the bronze row as delivered (all strings), the rules it failed, and where from.
FAILED_RULES = "_failed_rules"
QUARANTINED_AT = "_quarantined_at"
