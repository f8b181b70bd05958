"""Delta Lake I/O at the edges: where tables live, and safe, explicit writes.

Layout: ``<lake>/<layer>/<table>``, layers ``bronze``, ``silver``, ``gold``, ``quarantine``
and ``ops``. Every helper checks the columns it needs before touching data and fails
with a "found vs required" message; duplicate keys are reported before a MERGE.

Every data commit of the project goes through two functions: :func:`write_table` (append,
overwrite, replace a partition) and :func:`merge` (every MERGE). The crash-safety tests wrap
exactly these two (``tests/crashing.py``) to kill a run just before or after a commit.
Maintenance commands (OPTIMIZE, VACUUM, an UPDATE of the erasure log) are here too.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from delta.tables import DeltaMergeBuilder, DeltaTable
from py4j.java_gateway import JavaObject
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructField, StructType

from pipeline_lib.io.frames import count_and_compare
from pipeline_lib.ops.retry import retry_on_conflict

LAYERS = ("bronze", "silver", "gold", "quarantine", "ops")
# Delta's MERGE builder, for the callers of :func:`merge` that build their clauses.
MergeBuilder = DeltaMergeBuilder
_COMMIT_FILE = re.compile(r"/(\d{20})\.json(?=[,)])")  # in "Array(file:/…/_delta_log/00…01.json, …)"
_NAME = re.compile(r"[a-z][a-z0-9_]*")  # used with fullmatch: `$` would accept a trailing "\n"
# Properties of the bookkeeping tables (layer ``ops``: run records, watermarks, file log,
# quality metrics), set when they are created. They take many small commits; Delta's
# default checkpoint every 10 commits then costs more than the commits themselves
# (bench/results/MEASUREMENTS.md). Every 100 commits keeps a snapshot's replay short.
OPS_TABLE_PROPERTIES = {"delta.checkpointInterval": "100"}


@dataclass(frozen=True)
class MergeCounts:
    """Rows a write changed, as Delta counted them in that very commit."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    source_rows: int = 0  # rows of the source the write compared or wrote

    @property
    def written(self) -> int:
        return self.inserted + self.updated + self.deleted

    @classmethod
    def of_merge(cls, metrics: DataFrame, *, source_rows: int) -> MergeCounts:
        """From the one-row DataFrame ``DeltaMergeBuilder.execute()`` returns."""
        row = metrics.first()
        values = row.asDict() if row is not None else {}
        return cls(
            inserted=int(values.get("num_inserted_rows") or 0),
            updated=int(values.get("num_updated_rows") or 0),
            deleted=int(values.get("num_deleted_rows") or 0),
            source_rows=source_rows,
        )


class DeltaIOError(RuntimeError):
    """A Delta write was refused before it touched the table."""


class MissingColumnsError(DeltaIOError):
    """A DataFrame lacks columns that a write needs."""


class DuplicateKeyError(DeltaIOError):
    """The source of a MERGE holds a key more than once."""


def table_path(lake: str, layer: str, table: str) -> str:
    """``<lake>/<layer>/<table>``; layer and table must be plain names, so no path leaves the lake.

    Raises:
        ValueError: The layer is unknown or the table name is not ``[a-z][a-z0-9_]*``.
    """
    if layer not in LAYERS:
        raise ValueError(f"unknown layer {layer!r}; expected one of {', '.join(LAYERS)}")
    if not _NAME.fullmatch(table):
        raise ValueError(f"table name {table!r} is not a plain lower-case name ([a-z][a-z0-9_]*)")
    return f"{lake.rstrip('/')}/{layer}/{table}"


def table_exists(spark: SparkSession, path: str) -> bool:
    """True if a Delta table lives at ``path``."""
    return DeltaTable.isDeltaTable(spark, path)


def read_table(spark: SparkSession, path: str, *, version: int | None = None) -> DataFrame:
    """Read a Delta table, optionally as of an older version."""
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(path)


def read_partition(spark: SparkSession, path: str, predicate: str) -> DataFrame | None:
    """The rows of the existing table at ``path`` that match ``predicate`` (on partition
    columns), or None when no data file holds such rows.

    Which files hold them is answered from the Delta log the session already holds
    (``inputFiles``: no Spark job, a few milliseconds warm), so a caller learns that a
    partition is empty without a query.
    """
    rows = read_table(spark, path).where(F.expr(predicate))
    return rows if rows.inputFiles() else None


def jvm(spark: SparkSession) -> Any:
    """The session's JVM view (Py4J): for the Java classes PySpark has no API for.

    The one place the private handle is read; each caller says why it needs the JVM.
    """
    # The JVM handle: PySpark exposes no public accessor for its Py4J gateway's JVM view.
    view = spark.sparkContext._jvm
    if view is None:
        raise RuntimeError("the Spark session has no JVM (stopped, or Spark Connect)")
    return view


def hadoop_configuration(spark: SparkSession) -> Any:
    """The session's Hadoop configuration (what reaches the lake's file system)."""
    # The JVM handle: PySpark has no API for the Hadoop configuration Spark uses.
    return spark.sparkContext._jsc.hadoopConfiguration()


def hadoop_file_system(spark: SparkSession, path: str) -> tuple[JavaObject, JavaObject]:
    """Hadoop's ``Path`` for ``path`` and its ``FileSystem``, with the session's Hadoop settings.

    For bounded driver-side file work (listings, a commit file, a CSV header): local
    folders, HDFS and object stores alike.
    """
    # The JVM handle: PySpark has no API for Hadoop's file system (listings, small reads and
    # writes without a Spark job); Spark's own Hadoop configuration is what reaches the lake.
    hadoop_path = jvm(spark).org.apache.hadoop.fs.Path(path)
    return hadoop_path, hadoop_path.getFileSystem(hadoop_configuration(spark))


def read_text_file(spark: SparkSession, path: str) -> str | None:
    """The whole text (UTF-8) of a small file through Hadoop's file system; None when it is gone."""
    file, fs = hadoop_file_system(spark, path)
    try:
        stream = fs.open(file)
    except Exception:  # deleted meanwhile (a released lock): Hadoop's FileNotFoundException via Py4J
        return None
    try:
        # The JVM handle: Hadoop streams have no Python API, and copying the bytes over Py4J
        # one call per chunk would be slower than commons-io's one call (on Spark's class path).
        return str(jvm(spark).org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
    finally:
        stream.close()


def table_version(spark: SparkSession, path: str) -> int | None:
    """The latest committed version of the table at ``path``, or None if there is no table.

    Read from the names of the commit files in ``_delta_log`` (``<version>.json``, each
    written whole by Delta's atomic commit), with one listing through Hadoop's file system:
    no DataFrame to build and plan, unlike ``DeltaTable.history(1)``.
    """
    log, fs = hadoop_file_system(spark, f"{path.rstrip('/')}/_delta_log")
    if not fs.exists(log):
        return None
    # One string for the whole listing: one py4j call instead of three per file (py4j passes
    # a Path[] only where the parameter is an Object, as in Scala's stringOf). The JVM handle:
    # PySpark has no API for Hadoop's FileUtil or Scala's runtime.
    java = jvm(spark)
    paths = java.org.apache.hadoop.fs.FileUtil.stat2Paths(fs.listStatus(log))
    listing = java.scala.runtime.ScalaRunTime.stringOf(paths)
    versions = [int(v) for v in _COMMIT_FILE.findall(listing)]
    return max(versions) if versions else None


@dataclass(frozen=True)
class Commit:
    """A table's commit: its version and its ``commitInfo`` action, as Delta wrote it.

    ``info`` holds ``operation``, ``operationMetrics`` (numbers as strings, as in
    ``DESCRIBE HISTORY``), ``userMetadata`` when the writer set one, and the rest.
    """

    version: int
    info: dict[str, Any]


def latest_commit(spark: SparkSession, path: str) -> Commit | None:
    """The table's latest commit, or None when there is no table.

    Read from the commit file's ``commitInfo`` line through Hadoop's file system, next to
    :func:`table_version`'s listing; ``DeltaTable.history(1)`` reads the same line but
    builds and plans a DataFrame around it.
    """
    version = table_version(spark, path)
    return None if version is None else read_commit(spark, path, version)


def read_commit(spark: SparkSession, path: str, version: int) -> Commit | None:
    """The ``commitInfo`` of one version of the table (None when its file is gone: a log
    cleaned up after a checkpoint)."""
    commit, fs = hadoop_file_system(spark, f"{path.rstrip('/')}/_delta_log/{version:020d}.json")
    if not fs.exists(commit):
        return None
    # The JVM handle: the commit file is read line by line on the driver through Hadoop (no
    # PySpark API reads one file without a Spark job; DeltaTable.history plans a DataFrame).
    java = jvm(spark)
    stream = fs.open(commit)
    try:
        reader = java.java.io.BufferedReader(java.java.io.InputStreamReader(stream, "UTF-8"))
        while (line := reader.readLine()) is not None:
            info = json.loads(line).get("commitInfo")
            if isinstance(info, dict):  # Delta writes it first; any other action line is skipped
                return Commit(version, info)
    finally:
        stream.close()
    return Commit(version, {})


def recent_commits(spark: SparkSession, path: str, *, limit: int) -> Iterator[Commit]:
    """The table's commits, newest first, at most ``limit`` of them (fewer when the log was
    cleaned up); nothing when there is no table."""
    latest = table_version(spark, path)
    if latest is None:
        return
    for version in range(latest, max(latest - limit, -1), -1):
        commit = read_commit(spark, path, version)
        if commit is None:
            return
        yield commit


@contextmanager
def commit_metadata(spark: SparkSession, user_metadata: str | None) -> Iterator[None]:
    """Every Delta commit of the block carries ``user_metadata`` (``commitInfo.userMetadata``).

    For the operations without a writer option (MERGE): Delta reads the session setting
    ``spark.databricks.delta.commitInfo.userMetadata``; it is restored after the block.
    """
    if user_metadata is None:
        yield
        return
    previous = spark.conf.get(_USER_METADATA, None)
    spark.conf.set(_USER_METADATA, user_metadata)
    try:
        yield
    finally:
        if previous is None:
            spark.conf.unset(_USER_METADATA)
        else:
            spark.conf.set(_USER_METADATA, previous)


_USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"


def latest_user_metadata(spark: SparkSession, path: str) -> str | None:
    """The ``userMetadata`` of the table's latest commit, or None (no table, no metadata)."""
    commit = latest_commit(spark, path)
    metadata = commit.info.get("userMetadata") if commit else None
    return metadata if isinstance(metadata, str) else None


def require_columns(df: DataFrame, required: Iterable[str], *, what: str) -> None:
    """Raise :class:`MissingColumnsError` listing found vs required columns."""
    required = list(required)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise MissingColumnsError(
            f"{what}: missing columns {missing}; found {sorted(df.columns)}, required {required}"
        )


def assert_unique_keys(df: DataFrame, keys: Sequence[str], *, what: str) -> None:
    """Raise :class:`DuplicateKeyError` with examples when ``keys`` repeat in ``df``.

    Rows the driver holds (:func:`pipeline_lib.io.frames.local_frame`: run records, watermarks,
    quality metrics) are checked there: collecting them runs no Spark job, where grouping
    them runs two (a warm pipeline run saves ~30 such jobs).
    """
    if df.isLocal():
        repeated = Counter(tuple(row) for row in df.select(*keys).collect())
        duplicates = [dict(zip(keys, key, strict=True)) for key, n in repeated.items() if n > 1][:3]
    else:
        found = df.groupBy(*keys).count().where(F.col("count") > 1).limit(3).collect()
        duplicates = [{k: row[k] for k in keys} for row in found]
    if duplicates:
        examples = ", ".join(str(key) for key in duplicates)
        raise DuplicateKeyError(f"{what}: key {list(keys)} repeats in the source, e.g. {examples}")


def add_missing_columns(spark: SparkSession, path: str, fields: Sequence[StructField]) -> list[str]:
    """Add to the table at ``path`` the ``fields`` it lacks (nullable; metadata only).

    For a table created before a column was added to its contract (a MERGE cannot insert
    into a column the table lacks). Nothing happens when there is no table yet.

    Returns:
        The names added.
    """
    if not table_exists(spark, path):
        return []
    present = set(read_table(spark, path).columns)
    missing = [f for f in fields if f.name not in present]
    if missing:
        columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in missing)
        spark.sql(f"ALTER TABLE delta.`{path}` ADD COLUMNS ({columns})")
    return [f.name for f in missing]


def create_empty_table(
    spark: SparkSession,
    path: str,
    schema: StructType,
    *,
    partition_by: Sequence[str] = (),
    properties: dict[str, str] | None = None,
) -> bool:
    """Create the table at ``path`` with ``schema`` and no rows, unless a table is there.

    For a source that has never delivered: its tables are empty, not missing, so the jobs
    that read them run.

    Returns:
        True when the table was created.
    """
    if table_exists(spark, path):
        return False
    empty = spark.createDataFrame([], schema)
    write_table(empty, path, mode="overwrite", partition_by=partition_by, properties=properties)
    return True


def write_table(
    df: DataFrame,
    path: str,
    *,
    mode: str = "append",
    partition_by: Sequence[str] = (),
    properties: dict[str, str] | None = None,
    overwrite_schema: bool = False,
    user_metadata: str | None = None,
    replace_where: str | None = None,
) -> None:
    """Write ``df`` as one Delta commit (``append`` or ``overwrite``).

    Args:
        properties: Delta table properties, set when the table is created
            (e.g. ``{"delta.enableChangeDataFeed": "true"}``).
        user_metadata: Kept in the commit's ``commitInfo.userMetadata``
            (see :func:`latest_user_metadata`).
        replace_where: With ``overwrite``, replace only the rows matching this SQL predicate
            (e.g. one partition); Delta checks that every written row matches it.
    """
    if mode not in ("append", "overwrite"):
        raise ValueError(f"mode must be 'append' or 'overwrite', got {mode!r}")
    writer = df.write.format("delta").mode(mode)
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    if overwrite_schema:
        writer = writer.option("overwriteSchema", "true")
    else:
        writer = writer.option("mergeSchema", "true")
    for key, value in (properties or {}).items():
        writer = writer.option(key, value)
    if user_metadata is not None:
        writer = writer.option("userMetadata", user_metadata)
    if replace_where is not None:
        writer = writer.option("replaceWhere", replace_where)
    writer.save(path)


def append_shared(
    df: DataFrame,
    path: str,
    *,
    properties: dict[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Append ``df`` to a table that jobs running side by side append to (the bookkeeping tables).

    Blind appends do not conflict with each other, except the first: when two jobs create the
    table at the same moment, Delta refuses the second (``ProtocolChangedException``). That
    append committed nothing, so it is tried again (:func:`pipeline_lib.ops.retry.retry_on_conflict`)
    instead of failing the whole job, whose retry would then find its own earlier commits.
    """
    retry_on_conflict(
        lambda: write_table(df, path, mode="append", properties=properties),
        what=f"append to {'.'.join(path.rstrip('/').split('/')[-2:])}",
        progress=progress,
    )


def upsert(
    source: DataFrame,
    path: str,
    *,
    keys: Sequence[str],
    partition_by: Sequence[str] = (),
    properties: dict[str, str] | None = None,
    update_condition: str | None = None,
    user_metadata: str | None = None,
) -> None:
    """MERGE ``source`` into the table at ``path`` by ``keys``: update matches, insert the rest.

    Creates the table from ``source`` when it does not exist yet. Rows that would change
    nothing are not rewritten, so re-running with the same source commits no changed data.

    Args:
        keys: The merge key; it must be unique in ``source`` (checked first).
        update_condition: Extra SQL condition on ``t`` (target) and ``s`` (source) for
            updating a match, e.g. ``"s.updated_at > t.updated_at"``.
        user_metadata: Kept in the commit's ``commitInfo.userMetadata``.

    Raises:
        MissingColumnsError: A key column is missing from ``source``.
        DuplicateKeyError: A key repeats in ``source``.
    """
    require_columns(source, keys, what=f"upsert into {path}")
    assert_unique_keys(source, keys, what=f"upsert into {path}")
    spark = source.sparkSession
    if not table_exists(spark, path):
        write_table(
            source,
            path,
            mode="overwrite",
            partition_by=partition_by,
            properties=properties,
            user_metadata=user_metadata,
        )
        return
    changed = changed_condition(source.columns, keys)
    condition = " AND ".join(f"({c})" for c in (update_condition, changed) if c)
    merge(
        source,
        path,
        on=key_condition(keys),
        clauses=lambda m: m.whenMatchedUpdateAll(condition=condition or None).whenNotMatchedInsertAll(),
        user_metadata=user_metadata,
    )


def append_new(
    source: DataFrame, path: str, *, keys: Sequence[str], partition_by: Sequence[str] = ()
) -> None:
    """Insert the rows of ``source`` whose key is not in the table yet (insert-only MERGE).

    Re-running with the same source inserts nothing: the append-once write for event data.

    Raises:
        DuplicateKeyError: A key repeats in ``source``.
    """
    require_columns(source, keys, what=f"append into {path}")
    assert_unique_keys(source, keys, what=f"append into {path}")
    spark = source.sparkSession
    if not table_exists(spark, path):
        write_table(source, path, mode="overwrite", partition_by=partition_by)
        return
    merge(source, path, on=key_condition(keys), clauses=lambda m: m.whenNotMatchedInsertAll())


def register_lake_tables(spark: SparkSession, lake: str, layers: Sequence[str] = LAYERS) -> list[str]:
    """Register every Delta table under ``<lake>/<layer>/`` as ``<layer>.<table>`` in the catalog.

    So a notebook can write ``spark.table("gold.fact_orders")`` or plain SQL. Idempotent.
    Listing uses Hadoop's file system, so it works on object stores too.

    Returns:
        The qualified names registered, sorted.
    """
    registered = []
    for layer in layers:
        root, fs = hadoop_file_system(spark, f"{lake.rstrip('/')}/{layer}")
        if not fs.exists(root):
            continue
        spark.sql(f"CREATE DATABASE IF NOT EXISTS `{layer}`")
        for status in fs.listStatus(root):
            name = status.getPath().getName()
            path = table_path(lake, layer, name) if _NAME.fullmatch(name) else None
            if status.isDirectory() and path and table_exists(spark, path):
                spark.sql(f"CREATE TABLE IF NOT EXISTS `{layer}`.`{name}` USING DELTA LOCATION '{path}'")
                registered.append(f"{layer}.{name}")
    return sorted(registered)


def replace_groups(
    source: DataFrame,
    path: str,
    *,
    row_keys: Sequence[str],
    scope: DataFrame | None = None,
    properties: dict[str, str] | None = None,
    user_metadata: str | None = None,
) -> MergeCounts | None:
    """Make the table's rows of every affected group exactly ``source``'s rows, in one MERGE.

    A group is a value of the columns of ``scope`` (default: the first row key's values in
    ``source``), e.g. an order's lines or a customer's versions. Target rows of an affected
    group missing from ``source`` (a removed order line) are deleted, changed rows updated,
    new rows inserted; unchanged rows are not rewritten. Creates the table from ``source``
    when it does not exist.

    Args:
        row_keys: Unique key of a row; checked in ``source`` before the MERGE.
        scope: The affected groups (distinct values of a key prefix); a group in scope with
            no rows in ``source`` loses all its rows.
        user_metadata: Kept in the commit's ``commitInfo.userMetadata``.

    Returns:
        None when there was nothing to merge (no commit), else the rows the commit inserted,
        updated and deleted (Delta's own counts of that MERGE, or the rows of a new table).

    Raises:
        DuplicateKeyError: A row key repeats in ``source``.
    """
    spark = source.sparkSession
    require_columns(source, row_keys, what=f"replace groups in {path}")
    if not source.isLocal():  # staged (twice: its rows and its keys), checked, counted: compute once
        source = source.localCheckpoint()
    if not table_exists(spark, path):
        assert_unique_keys(source, row_keys, what=f"replace groups in {path}")
        write_table(source, path, mode="overwrite", properties=properties, user_metadata=user_metadata)
        rows = source.count()
        return MergeCounts(inserted=rows, source_rows=rows)
    scope = source.select(row_keys[0]).distinct() if scope is None else scope
    gone = (
        read_table(spark, path)
        .join(scope, on=scope.columns, how="left_semi")
        .select(*row_keys)
        .join(source.select(*row_keys), on=list(row_keys), how="left_anti")
    )
    # The staged rows are counted, then read twice by the MERGE: compute them once.
    staged = (
        source.withColumn(_DELETE_FLAG, F.lit(False))
        .unionByName(gone.withColumn(_DELETE_FLAG, F.lit(True)), allowMissingColumns=True)
        .localCheckpoint()
    )
    # One query sizes both sides and checks the source's row keys (rows to delete come from the
    # table, whose keys are unique, and match no source key): per flag, the rows and the most
    # rows of one key. At most two rows.
    sizes: dict[bool, int] = {}
    repeated = False
    for row in (
        staged.groupBy(_DELETE_FLAG, *row_keys)
        .count()
        .groupBy(_DELETE_FLAG)
        .agg(F.sum("count").alias("rows"), F.max("count").alias("most"))
        .collect()
    ):
        sizes[bool(row[_DELETE_FLAG])] = int(row["rows"])
        repeated = repeated or (not row[_DELETE_FLAG] and row["most"] > 1)
    if repeated:
        assert_unique_keys(source, row_keys, what=f"replace groups in {path}")  # raises, with examples
    if not sizes:
        return None
    changed = changed_condition(source.columns, row_keys)
    values: dict[str, str | Column] = {f"`{c}`": f"s.`{c}`" for c in source.columns}
    return merge(
        staged,
        path,
        on=key_condition(row_keys),
        clauses=lambda m: (
            m.whenMatchedDelete(condition=f"s.{_DELETE_FLAG}")
            .whenMatchedUpdate(condition=f"NOT s.{_DELETE_FLAG} AND ({changed or 'false'})", set=values)
            .whenNotMatchedInsert(condition=f"NOT s.{_DELETE_FLAG}", values=values)
        ),
        user_metadata=user_metadata,
        source_rows=sizes.get(False, 0),
    )


_DELETE_FLAG = "_merge_delete"


def key_condition(keys: Sequence[str], *, null_safe: bool = True) -> str:
    """The MERGE condition matching target ``t`` and source ``s`` on ``keys``.

    Null-safe (``<=>``) by default, so a null key part matches a null; ``null_safe=False``
    gives plain ``=``, which lets Delta prune files by the key's statistics.
    """
    equals = "<=>" if null_safe else "="
    return " AND ".join(f"t.`{k}` {equals} s.`{k}`" for k in keys)


def changed_condition(columns: Sequence[str], keys: Sequence[str]) -> str:
    """SQL true when a matched row differs from its source row in a non-key column ('' if none)."""
    return " OR ".join(f"NOT (t.`{c}` <=> s.`{c}`)" for c in columns if c not in keys)


def merge(
    source: DataFrame,
    path: str,
    *,
    on: str | Column,
    clauses: Callable[[MergeBuilder], MergeBuilder],
    user_metadata: str | None = None,
    source_rows: int = 0,
) -> MergeCounts:
    """Run one MERGE of ``source`` (alias ``s``) into the table at ``path`` (alias ``t``).

    Every MERGE of the project commits here. ``clauses`` adds the ``whenMatched...`` and
    ``whenNotMatched...`` clauses to Delta's builder.

    Returns:
        Delta's counts of that very commit (``source_rows`` passed through).
    """
    spark = source.sparkSession
    builder = clauses(DeltaTable.forPath(spark, path).alias("t").merge(source.alias("s"), on))
    with commit_metadata(spark, user_metadata):
        metrics = builder.execute()
    return MergeCounts.of_merge(metrics, source_rows=source_rows)


def sync_table(
    built: DataFrame, path: str, *, keys: Sequence[str], user_metadata: str | None
) -> MergeCounts | None:
    """Make the existing table at ``path`` equal to ``built``, committing only if the content differs.

    One MERGE by ``keys`` updates the changed rows, inserts the new ones and deletes the
    vanished ones, so the table's change feed lists exactly the rows that changed.

    Returns:
        None when the table already held exactly ``built`` (no commit), else the MERGE's counts.

    Raises:
        DuplicateKeyError: A key repeats in ``built``.
    """
    assert_unique_keys(built, keys, what=f"sync of {path}")
    existing = read_table(built.sparkSession, path).select(*built.columns)
    rows, unchanged = count_and_compare(built, existing)  # one query: the MERGE's source count too
    if unchanged:
        return None
    changed = changed_condition(built.columns, keys)
    return merge(
        built,
        path,
        on=key_condition(keys),
        clauses=lambda m: (
            m.whenMatchedUpdateAll(condition=changed or None)
            .whenNotMatchedInsertAll()
            .whenNotMatchedBySourceDelete()
        ),
        user_metadata=user_metadata,
        source_rows=rows,
    )


CHANGE_TYPES = ("insert", "update_preimage", "update_postimage", "delete")
_CHANGE_FEED_COLUMNS = ("_change_type", "_commit_version", "_commit_timestamp")


def read_changes(
    spark: SparkSession,
    path: str,
    *,
    after: int | None,
    latest: int,
    change_types: Sequence[str] = CHANGE_TYPES,
) -> DataFrame:
    """The rows changed in versions ``after+1..latest`` (change data feed), of ``change_types``.

    With ``after`` None every row of version ``latest`` counts as changed (an ``insert``);
    with ``after >= latest`` nothing changed. Each row keeps ``_change_type`` (insert,
    update_preimage, update_postimage, delete) unless only inserts are asked for, which come
    with the table's columns alone.
    """
    only_inserts = tuple(change_types) == ("insert",)
    if after is None or after >= latest:
        rows = read_table(spark, path, version=latest)
        rows = rows if after is None else rows.limit(0)
        return rows if only_inserts else rows.withColumn("_change_type", F.lit("insert"))
    changes = (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", after + 1)
        .option("endingVersion", latest)
        .load(path)
        .where(F.col("_change_type").isin(*change_types))
        .drop("_commit_version", "_commit_timestamp")
    )
    return changes.drop("_change_type") if only_inserts else changes


def table_properties(spark: SparkSession, path: str) -> dict[str, str]:
    """The table's properties (``TBLPROPERTIES``), e.g. ``delta.enableDeletionVectors``."""
    detail = DeltaTable.forPath(spark, path).detail().first()
    return dict(detail["properties"] or {}) if detail is not None else {}


def update_rows(spark: SparkSession, path: str, condition: Column, values: dict[str, str | Column]) -> None:
    """UPDATE the rows matching ``condition`` with ``values`` (one commit; for small bookkeeping tables)."""
    DeltaTable.forPath(spark, path).update(condition, values)


def optimize(spark: SparkSession, path: str, *, zorder_by: Sequence[str] = ()) -> int:
    """Compact the table's small files (Z-ordered by ``zorder_by`` when given); the files removed."""
    optimizer = DeltaTable.forPath(spark, path).optimize()
    metrics = optimizer.executeZOrderBy(*zorder_by) if zorder_by else optimizer.executeCompaction()
    row = metrics.select("metrics.numFilesRemoved").first()
    return int(row[0]) if row is not None else 0


def vacuum(spark: SparkSession, path: str, *, retention_hours: float, allow_unsafe: bool = False) -> None:
    """Delete the table's data files unused by versions younger than ``retention_hours``.

    Delta refuses a retention under its safe minimum (7 days) unless its retention check is
    off: ``allow_unsafe`` switches it off for this VACUUM only, and restores it.
    """
    if not allow_unsafe:
        DeltaTable.forPath(spark, path).vacuum(float(retention_hours))
        return
    previous = spark.conf.get(_RETENTION_CHECK, None)
    spark.conf.set(_RETENTION_CHECK, "false")
    try:
        DeltaTable.forPath(spark, path).vacuum(float(retention_hours))
    finally:
        if previous is None:
            spark.conf.unset(_RETENTION_CHECK)
        else:
            spark.conf.set(_RETENTION_CHECK, previous)


_RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"


def purge_deleted_rows(spark: SparkSession, path: str) -> None:
    """Rewrite the files holding rows that deletion vectors only mark deleted (``REORG ... PURGE``)."""
    spark.sql(f"REORG TABLE delta.`{path}` APPLY (PURGE)")


def insert_or_update(
    source: DataFrame,
    path: str,
    *,
    keys: Sequence[str],
    is_new: str,
    insert_columns: Sequence[str],
    update_columns: Sequence[str],
    target_condition: str | None = None,
    user_metadata: str | None = None,
) -> MergeCounts:
    """One MERGE: insert the source rows flagged ``is_new``, update ``update_columns`` of the others.

    For a table whose rows are written once and then only re-annotated (click events whose
    session or stitched customer changes): the plan decides which rows are new, so the MERGE
    needs no content comparison. A new row fills ``insert_columns`` (the table's columns).

    ``target_condition`` (on the target ``t`` only, e.g. a partition range) joins the MERGE
    condition, so that Delta reads only the files it can hold. Every source row to update
    must lie within it, and no row flagged new may have a key outside it: the caller's plan
    guarantees both (a new row's key already in the table would be inserted a second time).
    """
    on = key_condition(keys, null_safe=False)
    return merge(
        source,
        path,
        on=on if target_condition is None else f"({on}) AND ({target_condition})",
        clauses=lambda m: m.whenMatchedUpdate(
            condition=f"NOT s.`{is_new}`", set={c: f"s.`{c}`" for c in update_columns}
        ).whenNotMatchedInsert(condition=f"s.`{is_new}`", values={c: f"s.`{c}`" for c in insert_columns}),
        user_metadata=user_metadata,
    )


def _source_values(columns: Sequence[str]) -> dict[str, str | Column]:
    """MERGE assignments taking each column from the source row ``s``."""
    return {c: f"s.`{c}`" for c in columns}
