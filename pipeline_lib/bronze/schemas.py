"""Schema contracts of the landing zone and of the bronze tables.

The landing contract (``docs/contracts.md``) lists the fields of each source. Bronze
keeps every field *as delivered*: all contract fields are read as strings (a nested JSON
object or array keeps its JSON text), so a mistyped value is never lost before silver
decides what to do with it. Each bronze row also carries lineage columns.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import types as T

# Lineage and rescue columns that every bronze table adds to the delivered fields.
SOURCE_FILE = "_source_file"
INGEST_DATE = "_ingest_date"
INGESTED_AT = "_ingested_at"
RUN_ID = "_run_id"
CORRUPT_RECORD = "_corrupt_record"
RESCUED_DATA = "_rescued_data"

BRONZE_LINEAGE_FIELDS = (
    T.StructField(RESCUED_DATA, T.StringType(), True),
    T.StructField(CORRUPT_RECORD, T.StringType(), True),
    T.StructField(SOURCE_FILE, T.StringType(), False),
    T.StructField(INGEST_DATE, T.DateType(), False),
    T.StructField(INGESTED_AT, T.TimestampType(), False),
    T.StructField(RUN_ID, T.StringType(), False),
)


@dataclass(frozen=True)
class LandingSource:
    """One landing-zone source: its folder name, file format and contract fields."""

    name: str
    file_format: str  # "csv" or "json"
    fields: tuple[str, ...]

    @property
    def delivered_schema(self) -> T.StructType:
        """The contract fields, all strings: how bronze reads them."""
        return T.StructType([T.StructField(f, T.StringType(), True) for f in self.fields])

    @property
    def bronze_schema(self) -> T.StructType:
        """The bronze table: delivered fields, then rescue and lineage columns."""
        return T.StructType([*self.delivered_schema.fields, *BRONZE_LINEAGE_FIELDS])


LANDING_SOURCES: dict[str, LandingSource] = {
    source.name: source
    for source in (
        LandingSource(
            "orders",
            "csv",
            (
                "order_id",
                "customer_id",
                "order_status",
                "order_ts",
                "updated_at",
                "currency",
                "channel",
                "ship_country",
                "ship_city",
                "payment_type",
                "shipping_fee",
            ),
        ),
        LandingSource(
            "order_items",
            "csv",
            ("order_id", "line_no", "product_id", "quantity", "unit_price", "discount_amount"),
        ),
        LandingSource(
            "customers",
            "csv",
            (
                "customer_id",
                "email",
                "first_name",
                "last_name",
                "phone",
                "country",
                "city",
                "postal_code",
                "signup_ts",
                "updated_at",
                "marketing_opt_in",
            ),
        ),
        LandingSource(
            "clicks",
            "json",
            (
                "event_id",
                "event_ts",
                "event_type",
                "anonymous_id",
                "customer_id",
                "session_id",
                "product_id",
                "order_id",
                "quantity",
                "price",
                "page_url",
                "referrer",
                "search_query",
                "utm",
                "device",
            ),
        ),
        LandingSource(
            "catalogue",
            "json",
            (
                "product_id",
                "sku",
                "name",
                "brand",
                "category_path",
                "price",
                "currency",
                "is_active",
                "updated_at",
                "attributes",
            ),
        ),
        LandingSource("fx_rates", "csv", ("rate_date", "currency", "rate_to_base")),
        LandingSource(
            "inventory",
            "csv",
            (
                "product_id",
                "location_id",
                "snapshot_ts",
                "on_hand",
                "available",
                "committed",
                "incoming",
                "lead_time_days",
            ),
        ),
    )
}


# The key of each source that may come from the shop's database (docs/postgres.md): parallel
# JDBC reads split a window by its hash.
SOURCE_KEYS: dict[str, tuple[str, ...]] = {
    "orders": ("order_id",),
    "order_items": ("order_id", "line_no"),
    "customers": ("customer_id",),
}
