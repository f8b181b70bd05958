"""Slowly changing dimensions, type 2: a pure rebuild of the history of the affected keys.

:func:`build_scd2_history` takes the existing history and new versions (e.g. the cleaned
rows of a delivery, each valid from its ``updated_at``) and returns the complete new
history of every key that has a new version. The job then replaces those keys' rows in
the table in one MERGE. Rebuilding a key's whole history, rather than patching its current
row, is what places a late update correctly:

- all versions of a key (existing and new) are sorted by ``valid_from``;
- a version whose tracked attributes equal those of the version just before it is
  dropped: it changes nothing, so a no-change delivery creates no version, and a late
  update equal to its predecessor disappears;
- ``valid_to`` is the next version's ``valid_from`` (null for the last one) and
  ``is_current`` is true for the last one only, so versions never overlap, they leave no
  gaps, and each key has exactly one current version whatever order deliveries arrive in.

Each version's ``updated_at`` is the *latest time its state was observed* (the greatest
``updated_at``, or ``valid_from``, of the rows it absorbed). A recorded version thus
re-enters the rebuild as two observations, at ``valid_from`` and at ``updated_at``, so a
late update older than a later confirmation of the current state never becomes current:
with X seen at 1 and again at 12 (one version X from 1, updated_at 12), a late Y seen at 9
yields X from 1, Y from 9, X from 12. Observations inside a collapsed run other than its
first and last are not kept, so a late update that falls inside such a run splits it at
the run's last observation rather than at the exact one (documented in docs/silver.md).

Versions sharing key and ``valid_from`` (recorded or new) are one observation: the first by
``prefer`` (the latest delivery), then by the SHA-256 of their content (:func:`version_content`)
wins, whether it was recorded before or arrives now, so an incremental build keeps what a
rebuild keeps. A re-delivery has the content of the recorded row: the recorded one stays, and
re-processing is idempotent.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from pipeline_lib.bronze.schemas import INGEST_DATE
from pipeline_lib.io.delta import require_columns
from pipeline_lib.silver.common import content_columns, row_fingerprint
from pipeline_lib.silver.schemas import DQ_FLAGS

__all__ = [
    "FROM_INCOMING",
    "IS_CURRENT",
    "VALID_FROM",
    "VALID_TO",
    "build_scd2_history",
    "history_counts",
    "version_content",
]

VALID_FROM = "valid_from"
VALID_TO = "valid_to"
IS_CURRENT = "is_current"
OBSERVED_AT = "updated_at"
# Marks the output rows that came from ``incoming`` (the new versions), for counting.
FROM_INCOMING = "_from_incoming"


def version_content(columns: Sequence[str]) -> list[str]:
    """The columns of a version that say what it is: not lineage, rule flags, the last
    observation time (``updated_at`` moves with later confirmations) or validity."""
    return content_columns(
        columns, exclude=(INGEST_DATE, DQ_FLAGS, OBSERVED_AT, VALID_TO, IS_CURRENT, FROM_INCOMING)
    )


def build_scd2_history(
    existing: DataFrame,
    incoming: DataFrame,
    *,
    keys: Sequence[str],
    tracked: Sequence[str],
    prefer: Sequence[Column] = (),
) -> DataFrame:
    """The new full SCD2 history of every key in ``incoming``.

    Args:
        existing: The recorded history: ``keys``, ``tracked``, ``valid_from``, ``valid_to``,
            ``is_current``, ``updated_at`` (last observation) and any other columns (may be
            empty). Only keys of ``incoming``
            are read from it.
        incoming: New versions: the columns of ``existing`` except ``valid_to`` and
            ``is_current``; ``valid_from`` (usually = ``updated_at``) must not be null.
        keys: The business key, e.g. ``["customer_id"]``.
        tracked: Attributes whose change opens a new version; others ride along with the
            version that opened it.
        prefer: Order among versions with the same key and ``valid_from`` (first wins),
            e.g. ``[F.col("_ingest_date").desc()]``; then the content's SHA-256 decides.

    Returns:
        One row per version of each affected key: the columns of ``existing`` with
        ``valid_to`` and ``is_current`` recomputed, plus ``_from_incoming`` (true when the
        version came from ``incoming``). Keys absent from ``incoming`` are not returned.

    Raises:
        MissingColumnsError: A key, tracked or validity column is missing.
    """
    require_columns(
        existing, [*keys, *tracked, VALID_FROM, VALID_TO, IS_CURRENT], what="SCD2 existing history"
    )
    require_columns(incoming, [*keys, *tracked, VALID_FROM], what="SCD2 incoming versions")
    require_columns(existing, [OBSERVED_AT], what="SCD2 existing history")
    version_columns = [c for c in existing.columns if c not in (VALID_TO, IS_CURRENT)]
    affected = incoming.select(*keys).distinct()
    recorded = (
        existing.join(affected, on=list(keys), how="left_semi")
        .select(*version_columns)
        .withColumn(FROM_INCOMING, F.lit(False))
    )
    # The last confirmation of a recorded version is an observation of its own.
    confirmed = recorded.where(F.col(OBSERVED_AT) > F.col(VALID_FROM)).withColumn(
        VALID_FROM, F.col(OBSERVED_AT)
    )
    new = incoming.select(*version_columns).withColumn(FROM_INCOMING, F.lit(True))
    observations = recorded.unionByName(confirmed).unionByName(new)

    # Recorded last: of two rows with the same content (a re-delivery) the recorded one stays.
    same_start = Window.partitionBy(*keys, VALID_FROM).orderBy(
        *prefer, row_fingerprint(version_content(version_columns)).desc(), F.col(FROM_INCOMING).asc()
    )
    distinct_starts = (
        observations.withColumn("__pick", F.row_number().over(same_start))
        .where(F.col("__pick") == 1)
        .drop("__pick")
    )

    in_time = Window.partitionBy(*keys).orderBy(F.col(VALID_FROM).asc())
    running = in_time.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    state = F.struct(*[F.col(c) for c in tracked])
    previous = F.lag(state).over(in_time)
    is_run_start = previous.isNull() | ~state.eqNullSafe(previous)
    runs = distinct_starts.withColumn("__start", is_run_start.cast("int")).withColumn(
        "__run", F.sum("__start").over(running)
    )
    last_seen = F.max(F.greatest(F.col(VALID_FROM), F.col(OBSERVED_AT))).over(
        Window.partitionBy(*keys, "__run").rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    )
    versions = runs.withColumn(OBSERVED_AT, last_seen).where(F.col("__start") == 1).drop("__start", "__run")
    return (
        versions.withColumn(VALID_TO, F.lead(VALID_FROM).over(in_time))
        .withColumn(IS_CURRENT, F.col(VALID_TO).isNull())
        .select(*existing.columns, FROM_INCOMING)
    )


def history_counts(
    incoming: DataFrame, history: DataFrame, *, keys: Sequence[str]
) -> tuple[int, int, int, int, int]:
    """What a rebuild did with the incoming rows, for the job's reconciliation (two queries).

    Returns:
        ``(received, distinct_contents, distinct_starts, new_versions, delisted_versions)``:
        rows received from bronze (generated delisted rows, whose rule flags are null, are not
        counted), their distinct contents and distinct ``(key, valid_from)`` per key and start
        (a copy is a duplicate; another content with the same start, a conflict), then the
        versions of ``history`` that came from ``incoming``, and those of them that are delistings.
    """
    content = row_fingerprint(version_content(incoming.columns))
    received, distinct_contents, distinct_starts = _one_row(
        incoming.where(F.col(DQ_FLAGS).isNotNull())
        .groupBy(*keys, VALID_FROM)
        .agg(F.count(F.lit(1)).alias("rows"), F.count_distinct(content).alias("contents"))
        .agg(F.coalesce(F.sum("rows"), F.lit(0)), F.coalesce(F.sum("contents"), F.lit(0)), F.count(F.lit(1)))
    )
    delisted = F.col("is_delisted") if "is_delisted" in history.columns else F.lit(False)
    new_versions, delisted_versions = _one_row(
        history.agg(F.count_if(F.col(FROM_INCOMING)), F.count_if(F.col(FROM_INCOMING) & delisted))
    )
    return (
        int(received),
        int(distinct_contents),
        int(distinct_starts),
        int(new_versions),
        int(delisted_versions),
    )


def _one_row(aggregate: DataFrame) -> tuple[int, ...]:
    """The values of a global aggregate's one row, as whole numbers."""
    row = aggregate.first()
    if row is None:  # a global aggregate always has its row
        raise RuntimeError("an aggregate returned no row")
    return tuple(int(value) for value in row)
