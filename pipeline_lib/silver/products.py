"""Products from catalogue snapshots: cleaning, delisting, and the SCD type 2 contract."""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline_lib.bronze.schemas import INGEST_DATE, SOURCE_FILE
from pipeline_lib.silver.common import (
    clean_string,
    parse_boolean,
    parse_decimal,
    parse_timestamp,
    rank_versions,
    upper_code,
)
from pipeline_lib.silver.schemas import MONEY, SILVER_SCHEMAS

__all__ = [
    "PRODUCT_CONTENT",
    "clean_products",
    "rank_products",
    "to_silver_products",
    "with_delisted_products",
]

BRONZE = "_bronze"
LINEAGE = ("_source_file", "_ingest_date", "_run_id")
SNAPSHOT_TS = "snapshot_ts"
ATTRIBUTES = (
    "sku", "name", "brand", "category_path", "category_l1", "category_l2", "category_l3",
    "price", "currency", "is_active", "attributes",
)  # fmt: skip


# What a catalogue row says (typed); two rows with the same content are copies.
PRODUCT_CONTENT = ("product_id", *ATTRIBUTES, "updated_at")


def clean_products(bronze: DataFrame, *, source_timezone: str) -> DataFrame:
    """Type bronze catalogue rows.

    Returns:
        One row per bronze row: ``product_id``, ``sku``, ``name``, ``brand``,
        ``category_path`` (array<string> parsed from its JSON text, null if not an array),
        ``category_l1..l3`` (its first three levels), ``price`` (decimal(20,4), never rounded),
        ``currency``, ``is_active``, ``updated_at`` (UTC), ``attributes`` (JSON text),
        ``is_delisted`` (false), ``valid_from`` (= ``updated_at``), ``snapshot_ts`` (start of
        the delivery's ingest date, UTC), lineage and ``_bronze``.
    """
    path = F.from_json(clean_string("category_path"), T.ArrayType(T.StringType()))
    return bronze.select(
        clean_string("product_id").alias("product_id"),
        clean_string("sku").alias("sku"),
        clean_string("name").alias("name"),
        clean_string("brand").alias("brand"),
        path.alias("category_path"),
        parse_decimal("price", MONEY).alias("price"),
        upper_code("currency").alias("currency"),
        parse_boolean("is_active").alias("is_active"),
        parse_timestamp("updated_at", source_timezone=source_timezone).alias("updated_at"),
        clean_string("attributes").alias("attributes"),
        *LINEAGE,
        F.struct(*[F.col(c) for c in bronze.columns]).alias(BRONZE),
    ).withColumns(
        {
            "category_l1": F.get(F.col("category_path"), 0),
            "category_l2": F.get(F.col("category_path"), 1),
            "category_l3": F.get(F.col("category_path"), 2),
            "is_delisted": F.lit(False),
            "valid_from": F.col("updated_at"),
            SNAPSHOT_TS: F.concat(F.col(INGEST_DATE).cast("string"), F.lit("T00:00:00Z")).try_cast(
                "timestamp"
            ),
        }
    )


def rank_products(products: DataFrame) -> DataFrame:
    """:func:`rank_versions` per product and snapshot (``_ingest_date``): the greatest
    ``updated_at`` wins, a tie goes to the content hash (a snapshot split over files or
    re-ordered gives the same winner)."""
    return rank_versions(
        products, keys=["product_id", INGEST_DATE], version=["updated_at"], content=PRODUCT_CONTENT
    )


def with_delisted_products(products: DataFrame, *, current: DataFrame) -> DataFrame:
    """Add a delisted version for every known product missing from a snapshot.

    Each delivery (``_ingest_date``) is a full snapshot. A product known before a snapshot
    (present in an earlier snapshot of this batch, or current in silver) but absent from
    it gets a row with ``is_delisted`` true, its last known attributes, and
    ``valid_from`` = ``updated_at`` = the snapshot's ``snapshot_ts`` (at least one second
    after the state it closes). A product that comes back after a delisting with an
    ``updated_at`` no later than the delisting is relisted at its snapshot's time.

    Args:
        products: Cleaned, valid rows, one per product and snapshot.
        current: Current silver versions (``product_id``, the attributes, ``is_delisted``,
            ``valid_from``, ``updated_at``).

    Returns:
        ``products`` (with ``valid_from`` adjusted for relistings) plus the delisted rows
        (lineage of their snapshot, ``_bronze`` null). Grain: product and snapshot.
    """
    snapshots = products.groupBy(INGEST_DATE, SNAPSHOT_TS).agg(
        F.min(SOURCE_FILE).alias("__snap_file"), F.min("_run_id").alias("__snap_run")
    )
    keys = products.select("product_id").unionByName(current.select("product_id")).distinct()
    present = products.withColumn("__present", F.lit(True)).drop(SNAPSHOT_TS)
    cells = (
        keys.crossJoin(snapshots)
        .join(present, on=["product_id", INGEST_DATE], how="left")
        .withColumns(
            {
                "__present": F.coalesce("__present", F.lit(False)),
                "__seed": F.lit(False),
                "__at": F.col(SNAPSHOT_TS),
            }
        )
    )
    seeds = current.select(
        "product_id",
        *ATTRIBUTES,
        "is_delisted",
        "valid_from",
        "updated_at",
        (~F.col("is_delisted")).alias("__present"),
        F.lit(True).alias("__seed"),
        F.col("valid_from").alias("__at"),
    )
    timeline = cells.unionByName(seeds, allowMissingColumns=True)
    in_time = Window.partitionBy("product_id").orderBy(F.col("__at").asc(), F.col("__seed").desc())
    before = in_time.rowsBetween(Window.unboundedPreceding, -1)
    known = F.col("__present") | F.col("__seed")
    state = F.struct(*[F.col(c) for c in ATTRIBUTES], F.greatest("valid_from", "updated_at").alias("seen"))
    timeline = timeline.withColumns(
        {
            "__last": F.last(F.when(known, state), ignorenulls=True).over(before),
            "__prev_present": F.lag("__present").over(in_time),
            "__prev_at": F.lag("__at").over(in_time),
        }
    )
    relisted = (F.col("__prev_present") == F.lit(False)) & (F.col("updated_at") <= F.col("__prev_at"))
    listed_rows = timeline.where(F.col("__present") & ~F.col("__seed")).withColumn(
        "valid_from", F.when(relisted, F.col(SNAPSHOT_TS)).otherwise(F.col("valid_from"))
    )
    delisted_at = F.greatest(F.col(SNAPSHOT_TS), F.col("__last.seen") + F.expr("INTERVAL 1 SECOND"))
    # Only the snapshot where a product goes missing opens a delisted version.
    goes_missing = ~F.col("__present") & ~F.col("__seed") & (F.col("__prev_present") == F.lit(True))
    delisted_rows = timeline.where(goes_missing & F.col("__last").isNotNull()).select(
        "product_id",
        *[F.col(f"__last.{c}").alias(c) for c in ATTRIBUTES],
        F.lit(True).alias("is_delisted"),
        delisted_at.alias("valid_from"),
        delisted_at.alias("updated_at"),
        F.col("__snap_file").alias(SOURCE_FILE),
        F.col(INGEST_DATE),
        F.col("__snap_run").alias("_run_id"),
        F.col(SNAPSHOT_TS),
    )
    helpers = [c for c in timeline.columns if c.startswith("__")]
    return listed_rows.drop(*helpers).unionByName(delisted_rows, allowMissingColumns=True)


def to_silver_products(products: DataFrame) -> DataFrame:
    """The silver ``products`` contract (``SILVER_SCHEMAS['products']``), one row per version."""
    return products.select(
        *[F.col(f.name).cast(f.dataType).alias(f.name) for f in SILVER_SCHEMAS["products"]]
    )
