"""Deletions at the source (tombstones in bronze) as silver applies them, pure.

A bronze job reading the shop's database appends a **tombstone** for every key the source
table no longer holds (:mod:`pipeline_lib.bronze.database`): the key, every other field null,
``_rescued_data`` = ``{"_op": "delete", "deleted_at": ...}``. Silver never checks tombstones
against the quality rules (they would fail them all): the job splits them off first
(:func:`pipeline_lib.bronze.database.is_deletion`), cleans them here and applies them by
silver's own rule, **the greatest time wins**: a deletion removes the versions of its key
older than it, and a version newer than the deletion (the key inserted again) survives it.

- ``orders``: a deleted order leaves silver (its lines follow by their own tombstones);
- ``order_items``: a deleted line leaves its order;
- ``customers`` (SCD type 2): the deletion is an observation of the key's history: the version
  current before it is closed at the deletion time (``valid_to``, ``is_current`` false) and no
  version is current until the customer is inserted again (:func:`deletion_versions`).

Landing files never carry tombstones: with none, every silver job runs as before.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipeline_lib.bronze.database import deleted_at
from pipeline_lib.bronze.schemas import INGEST_DATE
from pipeline_lib.silver.common import clean_string, parse_timestamp, parse_whole_number

__all__ = [
    "DELETED_AT",
    "IS_DELETION",
    "clean_deletions",
    "deleted_rows",
    "deletion_versions",
    "latest_deletions",
    "without_deleted",
]

DELETED_AT = "deleted_at"
# Marks the versions made of deletions inside an SCD2 rebuild (never written).
IS_DELETION = "_is_deletion"
_WHOLE_NUMBER_KEYS = ("line_no",)


def _key(name: str) -> Column:
    return (parse_whole_number(name) if name in _WHOLE_NUMBER_KEYS else clean_string(name)).alias(name)


def clean_deletions(tombstones: DataFrame, *, keys: Sequence[str]) -> DataFrame:
    """Typed tombstones: ``keys`` (text trimmed, ``line_no`` int), ``deleted_at`` (UTC
    timestamp) and ``_ingest_date``. One row per tombstone; rows with a null key part or
    deletion time are dropped (a tombstone is written by the extract, never malformed)."""
    cleaned = tombstones.select(
        *[_key(k) for k in keys],
        parse_timestamp(deleted_at(), source_timezone="UTC").alias(DELETED_AT),
        F.col(INGEST_DATE),
    )
    complete = F.col(DELETED_AT).isNotNull()
    for key in keys:
        complete = complete & F.col(key).isNotNull()
    return cleaned.where(complete)


def latest_deletions(deletions: DataFrame, *, keys: Sequence[str]) -> DataFrame:
    """The latest deletion of each key: ``keys``, ``deleted_at``. One row per key."""
    return deletions.groupBy(*keys).agg(F.max(DELETED_AT).alias(DELETED_AT))


def without_deleted(rows: DataFrame, *, deletions: DataFrame, keys: Sequence[str], version: str) -> DataFrame:
    """``rows`` but those a later deletion of their key removes.

    Args:
        rows: Versions of ``keys`` with their time in ``version`` (``updated_at`` of an order,
            ``order_updated_at`` of a line).
        deletions: :func:`clean_deletions` (any number per key).

    Returns:
        The rows of ``rows`` whose key has no deletion, or only deletions no later than
        ``version`` (a row inserted again after its deletion). Same columns and grain.
    """
    latest = latest_deletions(deletions, keys=keys)
    survives = F.col(DELETED_AT).isNull() | (F.col(DELETED_AT) <= F.col(version))
    return rows.join(latest, on=list(keys), how="left").where(survives).drop(DELETED_AT)


def deleted_rows(rows: DataFrame, *, deletions: DataFrame, keys: Sequence[str], version: str) -> DataFrame:
    """The rows of ``rows`` that a later deletion of their key removes (the complement of
    :func:`without_deleted`). Same columns and grain."""
    latest = latest_deletions(deletions, keys=keys)
    return (
        rows.join(latest, on=list(keys), how="inner")
        .where(F.col(DELETED_AT) > F.col(version))
        .drop(DELETED_AT)
    )


def deletion_versions(
    deletions: DataFrame,
    *,
    like: DataFrame,
    keys: Sequence[str],
    valid_from: str = "valid_from",
    observed_at: str = "updated_at",
) -> DataFrame:
    """Deletions as SCD2 versions with the columns of ``like``, and ``_is_deletion`` true.

    Each row: ``keys``, ``valid_from`` = ``updated_at`` = ``deleted_at``, every other column of
    ``like`` null (its rule flags too: a deletion is no delivered row, and is not counted as
    one). Fed to :func:`~pipeline_lib.silver.history.build_scd2_history` with ``_is_deletion``
    tracked, a deletion closes the version before it; the job then drops the deletion versions,
    so the key has no current version until a later one arrives.
    """
    types = {f.name: f.dataType for f in like.schema.fields}

    def column(name: str) -> Column:
        if name in keys:
            return F.col(name).cast(types[name])
        if name in (valid_from, observed_at):
            return F.col(DELETED_AT).cast(types[name])
        return F.lit(None).cast(types[name])

    return deletions.select(*[column(name).alias(name) for name in like.columns]).withColumn(
        IS_DELETION, F.lit(True)
    )
