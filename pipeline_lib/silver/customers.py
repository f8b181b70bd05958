"""Customers: cleaning, e-mail pseudonymisation and the SCD type 2 contract."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline_lib.privacy.pii import hmac_sha256_hex, normalize_email
from pipeline_lib.silver.common import clean_string, parse_boolean, parse_timestamp, upper_code
from pipeline_lib.silver.schemas import SILVER_SCHEMAS

__all__ = ["clean_customers", "to_silver_customers", "with_email_hash"]

BRONZE = "_bronze"
LINEAGE = ("_source_file", "_ingest_date", "_run_id")


def clean_customers(bronze: DataFrame, *, source_timezone: str) -> DataFrame:
    """Type and normalise bronze customer rows.

    Returns:
        One row per bronze row: text trimmed (blank -> null), ``email`` trimmed as
        delivered, ``country`` upper case, timestamps UTC, ``marketing_opt_in`` boolean,
        ``valid_from`` = ``updated_at`` (the version's start), lineage and ``_bronze``.
    """
    return bronze.select(
        clean_string("customer_id").alias("customer_id"),
        clean_string("email").alias("email"),
        clean_string("first_name").alias("first_name"),
        clean_string("last_name").alias("last_name"),
        clean_string("phone").alias("phone"),
        upper_code("country").alias("country"),
        clean_string("city").alias("city"),
        clean_string("postal_code").alias("postal_code"),
        parse_timestamp("signup_ts", source_timezone=source_timezone).alias("signup_ts"),
        parse_timestamp("updated_at", source_timezone=source_timezone).alias("updated_at"),
        parse_boolean("marketing_opt_in").alias("marketing_opt_in"),
        *LINEAGE,
        F.struct(*[F.col(c) for c in bronze.columns]).alias(BRONZE),
    ).withColumn("valid_from", F.col("updated_at"))


def with_email_hash(customers: DataFrame, *, key: bytes) -> DataFrame:
    """Add ``email_hash``: HMAC-SHA-256 (hex) of the trimmed, lower-cased e-mail; null e-mail -> null."""
    return customers.withColumn("email_hash", hmac_sha256_hex(normalize_email("email"), key=key))


def to_silver_customers(customers: DataFrame) -> DataFrame:
    """The silver ``customers`` contract (``SILVER_SCHEMAS['customers']``), one row per version."""
    return customers.select(
        *[F.col(f.name).cast(f.dataType).alias(f.name) for f in SILVER_SCHEMAS["customers"]]
    )
