"""Orders and their lines: cleaning, latest-version selection and amounts."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from pipeline_lib.schemas import BASE_MONEY, INGEST_DATE, MONEY, SILVER_SCHEMAS, SOURCE_FILE
from pipeline_lib.transforms.common import (
    clean_string,
    keep_latest,
    lower_code,
    parse_decimal,
    parse_int,
    parse_timestamp,
    upper_code,
    utc_date,
)

__all__ = [
    "CHANNELS",
    "ORDER_STATUSES",
    "clean_order_items",
    "clean_orders",
    "dedupe_order_items",
    "dedupe_orders",
    "order_versions",
    "to_silver_order_items",
    "to_silver_orders",
    "with_line_amounts",
    "with_order_version",
    "with_shipping_fee_base",
    "with_superseded_flag",
]

ORDER_STATUSES = ("created", "paid", "shipped", "delivered", "cancelled", "returned")
CHANNELS = ("web", "app", "marketplace", "store")
BRONZE = "_bronze"
LINEAGE = ("_source_file", "_ingest_date", "_run_id")
SUPERSEDED = "_is_superseded"


def _bronze_record(bronze: DataFrame) -> Column:
    return F.struct(*[F.col(c) for c in bronze.columns]).alias(BRONZE)


def clean_orders(bronze: DataFrame, *, source_timezone: str) -> DataFrame:
    """Type and normalise bronze order rows.

    Args:
        bronze: Bronze ``orders`` rows (all strings plus lineage).
        source_timezone: Time zone of naive timestamps.

    Returns:
        One row per bronze row: the typed order columns (codes trimmed, statuses and
        channels lower case, currency and country upper case, timestamps UTC,
        ``shipping_fee`` decimal(18,2)), ``order_date`` (UTC date of ``order_ts``), lineage
        and ``_bronze`` (the row as delivered). Values that do not parse are null.
    """
    return bronze.select(
        clean_string("order_id").alias("order_id"),
        clean_string("customer_id").alias("customer_id"),
        lower_code("order_status").alias("order_status"),
        parse_timestamp("order_ts", source_timezone=source_timezone).alias("order_ts"),
        parse_timestamp("updated_at", source_timezone=source_timezone).alias("updated_at"),
        upper_code("currency").alias("currency"),
        lower_code("channel").alias("channel"),
        upper_code("ship_country").alias("ship_country"),
        clean_string("ship_city").alias("ship_city"),
        lower_code("payment_type").alias("payment_type"),
        parse_decimal("shipping_fee", MONEY).alias("shipping_fee"),
        *LINEAGE,
        _bronze_record(bronze),
    ).withColumn("order_date", utc_date("order_ts"))


def dedupe_orders(orders: DataFrame) -> DataFrame:
    """One row per ``order_id``: the greatest ``updated_at``; ties go to the latest delivery."""
    return keep_latest(
        orders,
        keys=["order_id"],
        order_by=[F.col("updated_at").desc(), F.col(INGEST_DATE).desc(), F.col(SOURCE_FILE).desc()],
    )


def with_shipping_fee_base(orders: DataFrame) -> DataFrame:
    """Add ``shipping_fee_base`` = ``shipping_fee * fx_rate_to_base`` (decimal(22,6); null stays null)."""
    return orders.withColumn(
        "shipping_fee_base", (F.col("shipping_fee") * F.col("fx_rate_to_base")).cast(BASE_MONEY)
    )


def to_silver_orders(orders: DataFrame) -> DataFrame:
    """The silver ``orders`` contract (``SILVER_SCHEMAS['orders']``)."""
    return orders.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in SILVER_SCHEMAS["orders"]])


def clean_order_items(bronze: DataFrame) -> DataFrame:
    """Type bronze order lines.

    Returns:
        One row per bronze row: ``order_id``, ``line_no`` (int), ``product_id``,
        ``quantity`` (int), ``unit_price`` and ``discount_amount`` (decimal(18,2)), lineage
        and ``_bronze``. Values that do not parse are null.
    """
    return bronze.select(
        clean_string("order_id").alias("order_id"),
        parse_int("line_no").alias("line_no"),
        clean_string("product_id").alias("product_id"),
        parse_int("quantity").alias("quantity"),
        parse_decimal("unit_price", MONEY).alias("unit_price"),
        parse_decimal("discount_amount", MONEY).alias("discount_amount"),
        *LINEAGE,
        _bronze_record(bronze),
    )


def order_versions(orders: DataFrame) -> DataFrame:
    """The order version each delivery holds: one row per ``(order_id, _ingest_date)``.

    Args:
        orders: Cleaned order rows (``order_id``, ``updated_at``, ``_ingest_date``).

    Returns:
        ``order_id``, ``_ingest_date``, ``delivered_updated_at`` (the greatest
        ``updated_at`` of that order in that delivery).
    """
    return (
        orders.where(F.col("order_id").isNotNull())
        .groupBy("order_id", INGEST_DATE)
        .agg(F.max("updated_at").alias("delivered_updated_at"))
    )


def with_order_version(items: DataFrame, *, delivered: DataFrame, current_orders: DataFrame) -> DataFrame:
    """Add the order version a line belongs to, and the current silver order's rate.

    Lines come with their order row in the same delivery (same ``_ingest_date``): the
    line's ``order_updated_at`` is that row's ``updated_at``; a line delivered without its
    order row belongs to the current silver version.

    Args:
        items: Cleaned lines.
        delivered: :func:`order_versions` of the orders delivered with them.
        current_orders: Silver orders (``order_id``, ``updated_at``, ``fx_rate_to_base``).

    Returns:
        ``items`` plus ``order_updated_at``, ``current_order_updated_at`` and
        ``fx_rate_to_base`` (null when the order is not in silver). Same grain.
    """
    current = current_orders.select(
        "order_id",
        F.col("updated_at").alias("current_order_updated_at"),
        F.col("fx_rate_to_base").alias("fx_rate_to_base"),
    )
    return (
        items.join(delivered, on=["order_id", INGEST_DATE], how="left")
        .join(current, on="order_id", how="left")
        .withColumn("order_updated_at", F.coalesce("delivered_updated_at", "current_order_updated_at"))
        .drop("delivered_updated_at")
    )


def with_superseded_flag(items: DataFrame, *, recorded_versions: DataFrame) -> DataFrame:
    """Flag lines of an order version older than the newest one known (``_is_superseded``).

    The newest version of an order is the greatest of: the versions among these lines,
    the current silver order, and the version of the lines already in silver. Only the
    lines of that version win; older ones arrived late and are ignored (and counted).

    Args:
        items: Output of :func:`with_order_version`.
        recorded_versions: ``order_id``, ``recorded_version``: the ``order_updated_at`` of
            the lines already in silver (one row per order).

    Returns:
        ``items`` plus ``_is_superseded`` (boolean, never null). Same grain.
    """
    per_order = Window.partitionBy("order_id").rowsBetween(
        Window.unboundedPreceding, Window.unboundedFollowing
    )
    newest = F.greatest(
        F.max("order_updated_at").over(per_order),
        F.col("current_order_updated_at"),
        F.col("recorded_version"),
    )
    return (
        items.join(recorded_versions, on="order_id", how="left")
        .withColumn(SUPERSEDED, F.coalesce(F.col("order_updated_at") < newest, F.lit(False)))
        .drop("recorded_version")
    )


def dedupe_order_items(items: DataFrame) -> DataFrame:
    """One row per ``(order_id, line_no)``: the latest delivery's."""
    return keep_latest(
        items,
        keys=["order_id", "line_no"],
        order_by=[F.col("order_updated_at").desc(), F.col(INGEST_DATE).desc(), F.col(SOURCE_FILE).desc()],
    )


def with_line_amounts(items: DataFrame) -> DataFrame:
    """Add ``net_amount`` = ``quantity * unit_price - discount_amount`` (decimal(18,2)) and
    ``net_amount_base`` = ``net_amount * fx_rate_to_base`` (decimal(22,6)); nulls propagate."""
    net = (F.col("quantity") * F.col("unit_price") - F.col("discount_amount")).cast(MONEY)
    return items.withColumn("net_amount", net).withColumn(
        "net_amount_base", (F.col("net_amount") * F.col("fx_rate_to_base")).cast(BASE_MONEY)
    )


def to_silver_order_items(items: DataFrame) -> DataFrame:
    """The silver ``order_items`` contract (``SILVER_SCHEMAS['order_items']``)."""
    return items.select(
        *[F.col(f.name).cast(f.dataType).alias(f.name) for f in SILVER_SCHEMAS["order_items"]]
    )
