"""Incremental reads: which Delta version of an upstream table a job has processed.

Each consumer (a silver or gold job, named ``<layer>.<table>`` after the table it writes)
records, per upstream table, the last version it processed. The next run reads only the
change data feed of the versions after it.

**The record travels with the data.** A job that writes its table puts what it consumed
in that very commit (``commitInfo.userMetadata``, :func:`consumed_metadata`): the rows and
the versions they came from are committed atomically, and no second commit is needed. A
job that consumed new versions but changed nothing (every new row a duplicate, say), and
the erasure when it moves consumers past its own commits, append a row to the log
``<lake>/ops/watermarks`` instead. A consumer's watermark on a source is the newest of the
two (:func:`processed_versions`: the commit's time against the log row's). A crash after a
job's data commit loses nothing; a crash before it (or before a log append) makes the next
run read those versions again, which the jobs' key-based writes absorb.

The table is an append-only log: a save appends one row per source moved, and a
consumer's watermark on a source is its latest row (:func:`current_watermarks`: the
newest ``updated_at``, then the highest version). A blind append is one Spark job and
never conflicts; a MERGE is several Spark jobs and can conflict (measurements:
``bench/results/MEASUREMENTS.md``). The log grows by one row per watermark moved (~14 a
run, one small file each); ``ecom-pipeline maintain`` compacts its files like every table's,
and with the pipeline's settings Delta's auto-compaction already does after most appends
(a commit of its own: see ``bench/results/ANALYSIS.md``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline_lib.io.delta import (
    OPS_TABLE_PROPERTIES,
    append_shared,
    latest_commit,
    read_changes,
    read_table,
    recent_commits,
    table_exists,
    table_path,
    table_version,
)
from pipeline_lib.io.frames import local_frame
from pipeline_lib.ops.schemas import WATERMARKS_SCHEMA, WATERMARKS_TABLE

STATE_KEY = "ecom_consumed"  # in the userMetadata of a consumer's data commit
COMMITS_SEARCHED = 20
# The commits that carry a job's data (and so what it consumed); any other is maintenance.
DATA_OPERATIONS = frozenset({"WRITE", "MERGE", "CREATE TABLE AS SELECT", "REPLACE TABLE AS SELECT"})
CDF_PROPERTIES = {"delta.enableChangeDataFeed": "true"}


def current_watermarks(log: DataFrame) -> DataFrame:
    """Each ``(consumer, source)``'s current watermark: its latest row in the log (pure).

    Latest is the newest ``updated_at``, ties broken by the higher version, so a watermark
    moved back (a source table re-created) is read as moved back, as the save meant.

    Args:
        log: Rows of ``ops/watermarks`` (any subset of consumers and sources).

    Returns:
        One row per ``(consumer, source)`` with the log's columns.
    """
    latest = F.max_by(F.struct(*[F.col(c) for c in log.columns]), F.struct("updated_at", "version"))
    return log.groupBy("consumer", "source").agg(latest.alias("w")).select("w.*")


def read_watermarks(spark: SparkSession, lake: str) -> DataFrame | None:
    """The current watermarks of every consumer (:func:`current_watermarks`), None with no table yet."""
    path = table_path(lake, "ops", WATERMARKS_TABLE)
    if not table_exists(spark, path):
        return None
    return read_table(spark, path).transform(current_watermarks)


def consumed_metadata(consumer: str, versions: Mapping[str, int], run_id: str) -> str:
    """The ``userMetadata`` a consumer's data commit carries: what it consumed, and its run."""
    record = {"consumer": consumer, "sources": {s: int(v) for s, v in versions.items()}, "run_id": run_id}
    return json.dumps({STATE_KEY: record}, sort_keys=True)


def consumer_table(lake: str, consumer: str) -> str:
    """The table a consumer writes: ``silver.orders`` -> ``<lake>/silver/orders``."""
    layer, _, table = consumer.partition(".")
    return table_path(lake, layer, table)


def processed_versions(
    spark: SparkSession, lake: str, consumer: str, sources: Sequence[str]
) -> dict[str, int | None]:
    """The last version of each source ``consumer`` processed (None if never): the newest of
    the record in the consumer's latest data commit and the log's row."""
    found: dict[str, tuple[int, int]] = {}  # source -> (version, epoch ms of the record)
    log = table_path(lake, "ops", WATERMARKS_TABLE)
    if table_exists(spark, log):
        rows = (
            read_table(spark, log)
            .where((F.col("consumer") == consumer) & F.col("source").isin(*sources))
            .transform(current_watermarks)
            .select("source", "version", F.unix_millis("updated_at").alias("at"))
            .collect()  # one row per source of this consumer
        )
        found = {r["source"]: (int(r["version"]), int(r["at"])) for r in rows}
    committed = _committed_state(spark, lake, consumer)
    if committed is not None:
        versions, at = committed
        for source, version in versions.items():
            if source in sources and (source not in found or at >= found[source][1]):
                found[source] = (version, at)
    return {source: found[source][0] if source in found else None for source in sources}


def last_processed_version(spark: SparkSession, lake: str, consumer: str, source: str) -> int | None:
    """The last version of ``source`` that ``consumer`` processed, or None if never."""
    return processed_versions(spark, lake, consumer, [source])[source]


def record_consumption(
    spark: SparkSession, lake: str, consumer: str, versions: Mapping[str, int], run_id: str
) -> bool:
    """Make sure ``consumer``'s consumption of ``versions`` is recorded.

    When the consumer's table's latest commit is this run's and carries it (the job wrote
    its table with :func:`consumed_metadata`), it is; otherwise one row per source is
    appended to the log.

    Returns:
        True when it travelled with the data commit, False when the log was written.
    """
    if not versions:
        return True
    latest = latest_commit(spark, consumer_table(lake, consumer))
    if latest is not None and latest.info.get("userMetadata") == consumed_metadata(
        consumer, versions, run_id
    ):
        return True
    save_processed_versions(spark, lake, consumer, versions, run_id)
    return False


def _committed_state(spark: SparkSession, lake: str, consumer: str) -> tuple[dict[str, int], int] | None:
    """What the consumer's latest data commit that records it says it consumed, and when.

    Looks at the last :data:`COMMITS_SEARCHED` commits of its table (others come between:
    OPTIMIZE, an erasure); older records are in the log too, or the job re-reads.
    """
    for commit in recent_commits(spark, consumer_table(lake, consumer), limit=COMMITS_SEARCHED):
        if commit.info.get("operation") not in DATA_OPERATIONS:
            continue  # OPTIMIZE, VACUUM...: a session setting may have tagged it too, it read nothing
        raw = commit.info.get("userMetadata")
        try:
            record = json.loads(raw)[STATE_KEY] if isinstance(raw, str) else None
        except (ValueError, KeyError, TypeError):
            record = None
        if isinstance(record, dict) and record.get("consumer") == consumer:
            sources = {str(k): int(v) for k, v in (record.get("sources") or {}).items()}
            return sources, int(commit.info.get("timestamp") or 0)
    return None


def save_processed_versions(
    spark: SparkSession, lake: str, consumer: str, versions: Mapping[str, int], run_id: str
) -> None:
    """Record, in one append, the version up to which ``consumer`` has processed each source."""
    save_watermarks(
        spark, lake, [(consumer, source, version) for source, version in versions.items()], run_id
    )


def save_watermarks(
    spark: SparkSession, lake: str, marks: Sequence[tuple[str, str, int]], run_id: str
) -> None:
    """Append ``(consumer, source, version)`` rows to the log, one commit; nothing when empty.

    Raises:
        ValueError: A ``(consumer, source)`` appears twice: the log could not tell which is current.
    """
    if not marks:
        return
    keys = Counter((consumer, source) for consumer, source, _ in marks)
    if repeated := sorted(key for key, count in keys.items() if count > 1):
        raise ValueError(f"watermarks saved twice in one commit: {repeated}")
    now = dt.datetime.now(dt.UTC)
    rows = [(consumer, source, int(version), run_id, now) for consumer, source, version in marks]
    append_shared(
        local_frame(spark, rows, WATERMARKS_SCHEMA),
        table_path(lake, "ops", WATERMARKS_TABLE),
        properties=OPS_TABLE_PROPERTIES,
    )


def read_appended_rows(spark: SparkSession, path: str, after_version: int | None) -> tuple[DataFrame, int]:
    """Rows inserted into an append-only table after ``after_version``, and the version read up to.

    Uses the change data feed (enabled on every table this project creates); with no
    watermark yet the whole current table is read.

    Returns:
        ``(rows, latest_version)``; ``rows`` is empty when nothing is new.

    Raises:
        FileNotFoundError: There is no table at ``path`` (callers check :func:`table_exists`).
    """
    latest = table_version(spark, path)
    if latest is None:
        raise FileNotFoundError(f"no Delta table at {path}: run the upstream job first")
    return read_changes(spark, path, after=after_version, latest=latest, change_types=("insert",)), latest


@dataclass
class PinnedInputs:
    """The tables a consumer reads, pinned at their current versions, and what it consumed before.

    Every read is of the pinned version, so what the job records it consumed is exactly what
    it read. Build it with :meth:`pin`.
    """

    spark: SparkSession
    lake: str
    consumer: str
    run_id: str
    versions: dict[str, int]  # source ``layer.table`` -> the version this run reads
    done: dict[str, int | None]  # source -> the last version processed (None: never)

    @classmethod
    def pin(
        cls, spark: SparkSession, lake: str, consumer: str, sources: Sequence[str], run_id: str
    ) -> PinnedInputs:
        """Pin ``sources`` (``layer.table``) at their latest versions.

        Raises:
            FileNotFoundError: A source table does not exist (its job has not run).
        """
        versions = {}
        for source in sources:
            path = source_path(lake, source)
            version = table_version(spark, path)
            if version is None:
                raise FileNotFoundError(f"no Delta table {source} at {path}: run its job first")
            versions[source] = version
        return cls(
            spark, lake, consumer, run_id, versions, processed_versions(spark, lake, consumer, sources)
        )

    @property
    def unchanged(self) -> bool:
        """True when every source is at the version already processed."""
        return all(self.done[source] == version for source, version in self.versions.items())

    @property
    def first_time(self) -> bool:
        """True when some source was never processed (its changes are not known: rebuild)."""
        return any(version is None for version in self.done.values())

    @property
    def state(self) -> str:
        """What the job's commit records it consumed: the versions of every source read."""
        return consumed_metadata(self.consumer, self.versions, self.run_id)

    def read(self, source: str) -> DataFrame:
        """The source as of its pinned version."""
        return read_table(self.spark, source_path(self.lake, source), version=self.versions[source])

    def changes(self, source: str) -> DataFrame:
        """Every row image (insert, update pre/post, delete) of the versions not processed yet;
        every row when the source was never processed."""
        return read_changes(
            self.spark, source_path(self.lake, source), after=self.done[source], latest=self.versions[source]
        )

    def record(self) -> None:
        """Record the versions processed: nothing to do when the job's own commit carries them,
        else one append to the log for the sources that moved."""
        if not self.unchanged:
            record_consumption(self.spark, self.lake, self.consumer, self.versions, self.run_id)


def source_path(lake: str, source: str) -> str:
    """The path of a ``layer.table`` source."""
    layer, table = source.split(".")
    return table_path(lake, layer, table)
