"""Stock snapshots (the optional ``inventory`` source): cleaning and the tie rule.

A snapshot row is the stock of one product at one location at ``snapshot_ts``; its key is
``(product_id, location_id, snapshot_ts)``. The same key delivered again is a correction:
the latest delivery wins (as for exchange rates), and two different rows of one key in one
delivery are a conflict that the content hash decides (docs/silver.md, "Which version
wins"). A day without a snapshot stays without one: nothing here fills it in.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline_lib.bronze.schemas import INGEST_DATE
from pipeline_lib.silver.common import (
    clean_string,
    parse_timestamp,
    parse_whole_number,
    rank_versions,
    utc_date,
)
from pipeline_lib.silver.schemas import SILVER_SCHEMAS

__all__ = [
    "INVENTORY_CONTENT",
    "INVENTORY_KEYS",
    "clean_inventory",
    "inventory_version_key",
    "rank_inventory",
    "to_silver_inventory",
]

BRONZE = "_bronze"
LINEAGE = ("_source_file", "_ingest_date", "_run_id")
INVENTORY_KEYS = ("product_id", "location_id", "snapshot_ts")
# What a snapshot row says (the contract's fields, typed): equal content is a copy.
INVENTORY_CONTENT = (
    "product_id", "location_id", "snapshot_ts", "on_hand", "available", "committed", "incoming",
    "lead_time_days",
)  # fmt: skip
_COUNTS = ("on_hand", "available", "committed", "incoming", "lead_time_days")


def clean_inventory(bronze: DataFrame, *, source_timezone: str) -> DataFrame:
    """Type and normalise bronze inventory rows.

    Args:
        bronze: Bronze ``inventory`` rows (all strings plus lineage).
        source_timezone: Time zone of a naive ``snapshot_ts``.

    Returns:
        One row per bronze row: ``product_id`` and ``location_id`` (trimmed, blank is null),
        ``snapshot_ts`` (UTC), ``snapshot_date`` (its UTC date), the counts ``on_hand``,
        ``available``, ``committed``, ``incoming`` and ``lead_time_days`` as ``int`` (``3``,
        ``3.0`` and ``3e0`` parse; ``2.5``, ``n/a`` and an empty value are null; a negative
        number parses, for a quality rule to reject), lineage and ``_bronze`` (the row as
        delivered).
    """
    return bronze.select(
        clean_string("product_id").alias("product_id"),
        clean_string("location_id").alias("location_id"),
        parse_timestamp("snapshot_ts", source_timezone=source_timezone).alias("snapshot_ts"),
        *[parse_whole_number(name).alias(name) for name in _COUNTS],
        *LINEAGE,
        F.struct(*[F.col(c) for c in bronze.columns]).alias(BRONZE),
    ).withColumn("snapshot_date", utc_date("snapshot_ts"))


def rank_inventory(snapshots: DataFrame) -> DataFrame:
    """:func:`~pipeline_lib.silver.common.rank_versions` of cleaned snapshots.

    Per ``(product_id, location_id, snapshot_ts)`` the row of the latest delivery wins (a
    re-delivered snapshot is a correction); within one delivery, copies are duplicates and
    rows with other content a conflict decided by the content hash.

    Returns:
        ``snapshots`` plus ``_version_outcome`` (``kept``, ``duplicate``, ``conflict`` or
        ``superseded``). Same grain.
    """
    return rank_versions(
        snapshots, keys=list(INVENTORY_KEYS), version=[INGEST_DATE], content=INVENTORY_CONTENT
    )


def inventory_version_key(prefix: str = "") -> str:
    """SQL of what makes one row of a snapshot key win over another: ``(delivery date,
    content hash)``, over the columns of the table alias ``prefix`` (``s.`` or ``t.``).

    The MERGE into silver updates a recorded row only when the incoming row's key is greater,
    so an incremental run keeps what a rebuild from all deliveries keeps.
    """
    content = ", ".join(f"{prefix}`{c}`" for c in INVENTORY_CONTENT)
    return f"struct({prefix}`{INGEST_DATE}`, sha2(to_json(struct({content})), 256))"


def to_silver_inventory(snapshots: DataFrame) -> DataFrame:
    """The silver ``inventory`` contract (``SILVER_SCHEMAS['inventory']``)."""
    return snapshots.select(
        *[F.col(f.name).cast(f.dataType).alias(f.name) for f in SILVER_SCHEMAS["inventory"]]
    )
