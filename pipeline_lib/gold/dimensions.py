"""Gold dimensions: dim_date, dim_customer, dim_product.

Surrogate keys are deterministic (a hash of the natural key and the version's
``valid_from``), so the same silver history always yields the same keys, run after run
and on a full refresh. The first version of an entity has the key of the natural key
alone, which is also the key of its *inferred member* (an id seen in orders before the
CRM or catalogue delivered it): when the real record arrives, the inferred row becomes
its first version under the same key. ``-1`` is the unknown member (no id at all).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from pipeline_lib.gold.schemas import DIM_CUSTOMER_SCHEMA, DIM_DATE_SCHEMA, DIM_PRODUCT_SCHEMA, conform_to

UNKNOWN_SK = -1
# valid_from of unknown and inferred members, 1900-01-01T00:00:00Z as epoch seconds: earlier
# than any real event, so these members match at any time.
MEMBER_VALID_FROM_EPOCH_S = -2_208_988_800
CUSTOMER_ENTITY = "customer"
PRODUCT_ENTITY = "product"

MONTH_NAMES = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

_KEY_SEPARATOR = "\u001f"  # ASCII unit separator: never part of an id
_NULL_PART = "\u0000"


# --- Column functions ------------------------------------------------------------------------


def date_key(date: str | Column) -> Column:
    """``yyyymmdd`` as an int (``2024-02-29`` -> ``20240229``); null for a null date.

    Pure date arithmetic: independent of the session time zone.
    """
    column = F.col(date) if isinstance(date, str) else date
    return (F.year(column) * 10000 + F.month(column) * 100 + F.dayofmonth(column)).cast("int")


def surrogate_key(*parts: str | Column) -> Column:
    """A positive 60-bit bigint from the SHA-256 of the parts (joined by a separator).

    Deterministic across runs, sessions and Spark versions; a null part hashes as a marker
    distinct from the empty string. Never negative, so it cannot collide with ``-1``.
    """
    columns = [
        F.coalesce((F.col(p) if isinstance(p, str) else p).cast("string"), F.lit(_NULL_PART)) for p in parts
    ]
    digest = F.sha2(F.concat_ws(_KEY_SEPARATOR, *columns), 256)
    return F.conv(F.substring(digest, 1, 15), 16, 10).cast("bigint")


def member_sk(entity: str, natural_key: str | Column) -> Column:
    """The key of an entity's first version and of its inferred member; ``-1`` for a null id."""
    key = F.col(natural_key) if isinstance(natural_key, str) else natural_key
    return F.when(key.isNull(), F.lit(UNKNOWN_SK).cast("bigint")).otherwise(surrogate_key(F.lit(entity), key))


def version_sk(entity: str, natural_key: str | Column, valid_from: str | Column, is_first: Column) -> Column:
    """The key of one SCD2 version: :func:`member_sk` for the first one, else hash of (id, valid_from).

    ``valid_from`` enters as epoch microseconds, so the key does not depend on the time zone.
    """
    start = F.col(valid_from) if isinstance(valid_from, str) else valid_from
    return F.when(is_first, member_sk(entity, natural_key)).otherwise(
        surrogate_key(F.lit(entity), natural_key, F.unix_micros(start))
    )


# --- DataFrame transformations ---------------------------------------------------------------


def build_dim_date(dates: DataFrame, *, date_column: str = "date") -> DataFrame:
    """One row per calendar day of the whole years that the input dates touch.

    The range is 1 January of the earliest year to 31 December of the latest, so the
    table only changes when the data enters a new year, and every date key of the facts
    (and of the year to come) is present.

    Args:
        dates: Any rows with a date column; nulls are ignored, duplicates are fine.
        date_column: The name of that column.

    Returns:
        :data:`DIM_DATE_SCHEMA`, one row per day; empty when there is no non-null date.
    """
    bounds = dates.agg(F.min(date_column).alias("first_date"), F.max(date_column).alias("last_date")).where(
        F.col("first_date").isNotNull()
    )
    days = bounds.select(
        F.explode(
            F.sequence(
                F.make_date(F.year("first_date"), F.lit(1), F.lit(1)),
                F.make_date(F.year("last_date"), F.lit(12), F.lit(31)),
            )
        ).alias("date")
    )
    day_of_week = F.weekday("date") + 1  # weekday: 0 = Monday
    calendar = days.select(
        date_key("date").alias("date_key"),
        "date",
        F.year("date").alias("year"),
        F.quarter("date").alias("quarter"),
        F.month("date").alias("month"),
        F.element_at(F.array(*map(F.lit, MONTH_NAMES)), F.month("date")).alias("month_name"),
        F.dayofmonth("date").alias("day_of_month"),
        F.dayofyear("date").alias("day_of_year"),
        day_of_week.alias("day_of_week"),
        F.element_at(F.array(*map(F.lit, DAY_NAMES)), day_of_week).alias("day_name"),
        F.weekofyear("date").alias("iso_week"),
        (day_of_week >= 6).alias("is_weekend"),
        F.format_string("%04d-%02d", F.year("date"), F.month("date")).alias("year_month"),
    )
    return conform_to(calendar, DIM_DATE_SCHEMA)


def _with_is_first_version(versions: DataFrame, *, natural_key: str) -> DataFrame:
    entity = Window.partitionBy(natural_key).rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    return versions.withColumn("_is_first", F.col("valid_from") == F.min("valid_from").over(entity))


def _missing_ids(referenced: DataFrame, known: DataFrame, *, natural_key: str) -> DataFrame:
    """Distinct non-null ids of ``referenced`` that ``known`` lacks."""
    return (
        referenced.select(natural_key)
        .where(F.col(natural_key).isNotNull())
        .distinct()
        .join(known.select(natural_key).distinct(), on=natural_key, how="left_anti")
    )


def _member_flags() -> list[Column]:
    """valid_from, valid_to and is_current of an unknown or inferred member."""
    return [
        F.timestamp_seconds(F.lit(MEMBER_VALID_FROM_EPOCH_S)).alias("valid_from"),
        F.lit(None).cast("timestamp").alias("valid_to"),
        F.lit(True).alias("is_current"),
    ]


def build_dim_customer(customers: DataFrame, *, orders: DataFrame) -> DataFrame:
    """dim_customer: every version of every customer, plus the unknown and inferred members.

    Args:
        customers: silver.customers, all versions. Requires ``customer_id``, ``email_hash``,
            ``country``, ``city``, ``signup_ts``, ``marketing_opt_in``, ``valid_from``,
            ``valid_to``, ``is_current``. Its personal columns are never selected.
        orders: Anything with ``customer_id`` (silver.orders): each non-null id missing
            from ``customers`` becomes an inferred member (``is_inferred``, attributes
            null, valid from 1900-01-01, current). Null ids (guests) map to the unknown member.

    Returns:
        :data:`DIM_CUSTOMER_SCHEMA`, one row per customer version; ``customer_sk`` unique.
        Row ``customer_sk = -1`` (``customer_id`` null) is the unknown member.
    """
    versions = (
        customers.where(F.col("customer_id").isNotNull())
        .transform(_with_is_first_version, natural_key="customer_id")
        .select(
            version_sk(CUSTOMER_ENTITY, "customer_id", "valid_from", F.col("_is_first")).alias("customer_sk"),
            "customer_id",
            "email_hash",
            "country",
            "city",
            "signup_ts",
            "marketing_opt_in",
            "valid_from",
            "valid_to",
            "is_current",
            F.lit(False).alias("is_inferred"),
        )
    )
    inferred = _missing_ids(orders, customers, natural_key="customer_id").select(
        member_sk(CUSTOMER_ENTITY, "customer_id").alias("customer_sk"),
        "customer_id",
        *(F.lit(None).alias(c) for c in ("email_hash", "country", "city", "signup_ts", "marketing_opt_in")),
        *_member_flags(),
        F.lit(True).alias("is_inferred"),
    )
    unknown = customers.sparkSession.range(1).select(
        F.lit(UNKNOWN_SK).alias("customer_sk"),
        *(
            F.lit(None).alias(c)
            for c in ("customer_id", "email_hash", "country", "city", "signup_ts", "marketing_opt_in")
        ),
        *_member_flags(),
        F.lit(False).alias("is_inferred"),
    )
    members = [conform_to(frame, DIM_CUSTOMER_SCHEMA) for frame in (versions, inferred, unknown)]
    return members[0].unionByName(members[1]).unionByName(members[2])


def build_dim_product(products: DataFrame, *, order_items: DataFrame) -> DataFrame:
    """dim_product: every version of every product, plus the unknown and inferred members.

    ``list_price`` is the catalogue price as delivered, with its ``list_price_currency``:
    it is an attribute of the version, not an amount to add up (facts carry base amounts).

    Args:
        products: silver.products, all versions. Requires ``product_id``, ``sku``, ``name``,
            ``brand``, ``category_l1``..``category_l3``, ``price``, ``currency``,
            ``is_active``, ``is_delisted``, ``valid_from``, ``valid_to``, ``is_current``.
        order_items: Anything with ``product_id`` (silver.order_items): each non-null id
            missing from ``products`` becomes an inferred member, as in
            :func:`build_dim_customer`.

    Returns:
        :data:`DIM_PRODUCT_SCHEMA`, one row per product version; ``product_sk`` unique.
        Row ``product_sk = -1`` (``product_id`` null) is the unknown member.
    """
    attributes = ("sku", "name", "brand", "category_l1", "category_l2", "category_l3")
    versions = (
        products.where(F.col("product_id").isNotNull())
        .transform(_with_is_first_version, natural_key="product_id")
        .select(
            version_sk(PRODUCT_ENTITY, "product_id", "valid_from", F.col("_is_first")).alias("product_sk"),
            "product_id",
            *attributes,
            F.col("price").alias("list_price"),
            F.col("currency").alias("list_price_currency"),
            "is_active",
            "is_delisted",
            "valid_from",
            "valid_to",
            "is_current",
            F.lit(False).alias("is_inferred"),
        )
    )
    empty_attributes = (*attributes, "list_price", "list_price_currency", "is_active", "is_delisted")
    inferred = _missing_ids(order_items, products, natural_key="product_id").select(
        member_sk(PRODUCT_ENTITY, "product_id").alias("product_sk"),
        "product_id",
        *(F.lit(None).alias(c) for c in empty_attributes),
        *_member_flags(),
        F.lit(True).alias("is_inferred"),
    )
    unknown = products.sparkSession.range(1).select(
        F.lit(UNKNOWN_SK).alias("product_sk"),
        F.lit(None).alias("product_id"),
        *(F.lit(None).alias(c) for c in empty_attributes),
        *_member_flags(),
        F.lit(False).alias("is_inferred"),
    )
    members = [conform_to(frame, DIM_PRODUCT_SCHEMA) for frame in (versions, inferred, unknown)]
    return members[0].unionByName(members[1]).unionByName(members[2])
