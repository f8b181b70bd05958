"""Orders and their lines: cleaning, latest-version selection and amounts."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from pipeline_lib.bronze.schemas import INGEST_DATE
from pipeline_lib.silver.common import (
    clean_string,
    lower_code,
    parse_decimal,
    parse_timestamp,
    parse_whole_number,
    rank_versions,
    row_fingerprint,
    upper_code,
    utc_date,
)
from pipeline_lib.silver.schemas import BASE_MONEY, FAILED_RULES, MONEY, SILVER_SCHEMAS

__all__ = [
    "CHANNELS",
    "ORDER_CONTENT",
    "ORDER_ITEM_CONTENT",
    "ORDER_STATUSES",
    "clean_order_items",
    "clean_orders",
    "lines_awaiting_orders",
    "order_tie_break",
    "order_version_key",
    "order_versions",
    "rank_order_items",
    "rank_orders",
    "status_precedence",
    "to_silver_order_items",
    "to_silver_orders",
    "with_line_amounts",
    "with_order_version",
    "with_shipping_fee_base",
    "with_superseded_flag",
]

# In lifecycle order, which is also the tie rule's precedence: of two states of an order with the
# same updated_at, the one further along wins (a cancellation written in the same second as the
# payment is the later event).
ORDER_STATUSES = ("created", "paid", "shipped", "delivered", "cancelled", "returned")
CHANNELS = ("web", "app", "marketplace", "store")
BRONZE = "_bronze"
LINEAGE = ("_source_file", "_ingest_date", "_run_id")
IS_SUPERSEDED = "_is_superseded"
# The content of an order row (the contract's fields, typed): two rows with the same content
# are copies; with the same updated_at and other content, a conflict (docs/silver.md).
ORDER_CONTENT = (
    "order_id", "customer_id", "order_status", "order_ts", "updated_at", "currency", "channel",
    "ship_country", "ship_city", "payment_type", "shipping_fee",
)  # fmt: skip
ORDER_ITEM_CONTENT = ("order_id", "line_no", "product_id", "quantity", "unit_price", "discount_amount")


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
        ``shipping_fee`` decimal(20,4), never rounded), ``order_date`` (UTC date of ``order_ts``), lineage
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


def order_tie_break() -> list[Column]:
    """Among versions of an order with the same ``updated_at``: the latest delivery, then the
    status furthest along :data:`ORDER_STATUSES` (then :func:`rank_versions`' content hash)."""
    return [F.col(INGEST_DATE).desc_nulls_last(), status_precedence(F.col("order_status")).desc()]


def status_precedence(status: Column) -> Column:
    """The position of a status in :data:`ORDER_STATUSES` (1 = ``created``), 0 if unknown."""
    return F.array_position(F.array(*[F.lit(s) for s in ORDER_STATUSES]), status)


def rank_orders(orders: DataFrame) -> DataFrame:
    """:func:`rank_versions` of cleaned orders: per ``order_id``, the greatest ``updated_at``
    wins; a tie is a conflict resolved by :func:`order_tie_break`; copies are duplicates."""
    return rank_versions(
        orders, keys=["order_id"], version=["updated_at"], tie_break=order_tie_break(), content=ORDER_CONTENT
    )


def order_version_key() -> Column:
    """What makes one version of an order win over another, as one comparable struct.

    ``(updated_at, _ingest_date, status precedence, content hash)``: the tie rule of
    :func:`rank_orders`, usable to compare a new row with the one recorded in silver
    (both have these columns), so an incremental run picks what a rebuild picks.
    """
    return F.struct(
        F.col("updated_at").alias("updated_at"),
        F.col(INGEST_DATE).alias("ingest_date"),
        status_precedence(F.col("order_status")).alias("status"),
        row_fingerprint(ORDER_CONTENT).alias("content"),
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
        ``quantity`` (int; ``2.0`` is 2), ``unit_price`` and ``discount_amount`` (decimal(20,4),
        never rounded: more decimals do not parse), lineage
        and ``_bronze``. Values that do not parse are null.
    """
    return bronze.select(
        clean_string("order_id").alias("order_id"),
        parse_whole_number("line_no").alias("line_no"),
        clean_string("product_id").alias("product_id"),
        parse_whole_number("quantity").alias("quantity"),
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
        .withColumn(IS_SUPERSEDED, F.coalesce(F.col("order_updated_at") < newest, F.lit(False)))
        .drop("recorded_version")
    )


def rank_order_items(items: DataFrame) -> DataFrame:
    """:func:`rank_versions` of lines: per ``(order_id, line_no)``, the line of the newest
    order version wins; within a version, the latest delivery's, then the content hash."""
    return rank_versions(
        items,
        keys=["order_id", "line_no"],
        version=["order_updated_at"],
        tie_break=[F.col(INGEST_DATE).desc_nulls_last()],
        content=ORDER_ITEM_CONTENT,
    )


def lines_awaiting_orders(quarantined: DataFrame, *, orders: DataFrame, rule: str) -> DataFrame:
    """Quarantined lines that failed only ``rule`` (their order was unknown) and whose order has
    arrived since: the lines to check again.

    Args:
        quarantined: Open rows of ``quarantine/order_items`` (the bronze row as delivered and
            ``_failed_rules``).
        orders: Silver orders (``order_id``).
        rule: The name of the rule that requires the line's order (``order_known``).

    Returns:
        The quarantined rows (same columns) whose ``_failed_rules`` is exactly ``[rule]`` and
        whose trimmed ``order_id`` is in ``orders``.
    """
    known = orders.select(F.col("order_id").alias("__order_id")).distinct()
    only_that_rule = F.col(FAILED_RULES) == F.array(F.lit(rule))
    return quarantined.where(only_that_rule).join(
        known, on=clean_string("order_id") == F.col("__order_id"), how="left_semi"
    )


def with_line_amounts(items: DataFrame) -> DataFrame:
    """Add ``net_amount`` = ``quantity * unit_price - discount_amount`` (decimal(20,4)) and
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


def compare_with_recorded(compared: DataFrame) -> dict[str, int]:
    """How a batch's winning order versions compare with silver's rows (one aggregate row).

    ``compared`` holds each winner's ``__key`` (:func:`order_version_key`), the recorded
    row's ``__recorded`` key and ``__newer`` (the winner replaces the recorded row). Counts:
    ``redelivered`` (same time and content), ``conflicts_lost`` and ``conflicts_won`` (same
    time, other content), ``older`` (recorded is newer).
    """
    same_time = F.col("__key.updated_at") == F.col("__recorded.updated_at")
    same_content = F.col("__key.content") == F.col("__recorded.content")
    row = compared.agg(
        F.count_if(~F.col("__newer") & same_time & same_content).alias("redelivered"),
        F.count_if(~F.col("__newer") & same_time & ~same_content).alias("conflicts_lost"),
        F.count_if(F.col("__newer") & same_time & ~same_content).alias("conflicts_won"),
        F.count_if(~F.col("__newer") & ~same_time).alias("older"),
    ).first()
    names = ("redelivered", "conflicts_lost", "conflicts_won", "older")
    return {name: 0 if row is None else int(row[name] or 0) for name in names}
