"""Compare two lakes table by table by CONTENT, as multisets of rows, for the reliability tests.

Row counts hide a lost row plus a doubled one; Delta versions count commits, not data. So
every table is compared row by row: two tables are equal when each distinct row occurs as
many times in one as in the other, whatever the order or the file layout. One Spark job
per table (a union of both sides, grouped by every column, keeping the rows whose counts
differ), so a lake of thirty tables costs thirty small jobs.

Only columns that legitimately differ between two runs over the same input are left out,
each with its reason (:data:`VOLATILE_COLUMNS`, :data:`VOLATILE_OPS_COLUMNS`). Maps,
arrays and structs are compared as their JSON text (Spark cannot group by a map).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline_lib.io.delta import read_table, table_exists, table_path
from pipeline_lib.io.quality import current_quality_metrics
from pipeline_lib.ops.watermarks import current_watermarks

DATA_LAYERS = ("bronze", "silver", "quarantine", "gold")

# Columns of the data layers that differ between two runs over the same input, and why.
VOLATILE_COLUMNS: dict[str, str] = {
    "_run_id": "bronze lineage, copied to silver and quarantine: the id of the run that ingested "
    "the row, new at every run",
    "_ingested_at": "bronze lineage: the wall-clock time of ingestion",
    "_quarantined_at": "quarantine: the wall-clock time the row was quarantined",
    "_quarantine_run_id": "quarantine: the id of the run that quarantined the row",
    "_resolved_by": "quarantine: the id of the run that admitted a quarantined row later",
}
# Columns compared for being set or not, not for their value, and why.
SET_OR_NOT_COLUMNS: dict[str, str] = {
    "_resolved_at": "quarantine: whether a later run admitted the row is content; when, the wall clock",
}

# The ops tables worth comparing, with their columns that differ between runs, and why.
VOLATILE_OPS_COLUMNS: dict[str, dict[str, str]] = {
    "ingested_files": {
        "run_id": "the run that ingested the file",
        "logged_at": "the wall-clock time of the log entry",
    },
    "watermarks": {
        "version": "a Delta version of the upstream table: it counts commits (a no-op MERGE, an "
        "auto-compaction, a commit of a killed run), not content; the tables are compared instead",
        "run_id": "the run that moved the watermark",
        "updated_at": "the wall-clock time it moved",
    },
    "quality_metrics": {
        "run_id": "the run that measured",
        "measured_at": "the wall-clock time of the measure",
    },
}
# Ops tables kept as logs, compared through their current view: ops.watermarks appends a
# row per save, ops.quality_metrics a row per measurement (a crashed run and its re-run may
# save the same watermark, or measure the same delivery, twice).
OPS_VIEWS: dict[str, Callable[[DataFrame], DataFrame]] = {
    "watermarks": current_watermarks,
    "quality_metrics": current_quality_metrics,
}
# Not compared: ops.pipeline_runs is a log of runs (each run, a re-run included, appends its
# rows by design, with times and ids); ops/_locks holds lock files, not a Delta table.
NOT_COMPARED_OPS = {"pipeline_runs": "a log of runs: every run appends its own records by design"}


@dataclass
class TableComparison:
    """How one table of the left lake differs from the same table of the right lake."""

    name: str
    problem: str | None = None  # missing table or different columns
    only_left: int = 0  # rows (with multiplicity) in left and not in right
    only_right: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return self.problem is None and not self.only_left and not self.only_right

    def describe(self) -> str:
        if self.problem:
            return f"{self.name}: {self.problem}"
        lines = [f"{self.name}: {self.only_left} rows only on the left, {self.only_right} only on the right"]
        lines += [f"    {example}" for example in self.examples]
        return "\n".join(lines)


def comparable(frame: DataFrame, *, exclude: Iterable[str] = ()) -> DataFrame:
    """``frame`` without the ``exclude`` columns, columns sorted by name, complex values as JSON.

    Maps, arrays and structs become their JSON text, so that rows can be grouped and compared;
    map keys are sorted first, so two equal maps give the same text.
    """
    excluded = set(exclude)
    columns = sorted((f for f in frame.schema.fields if f.name not in excluded), key=lambda f: f.name)
    return frame.select(*[_as_comparable(f).alias(f.name) for f in columns])


def _as_comparable(column: T.StructField) -> Column:
    value = F.col(f"`{column.name}`")
    if column.name in SET_OR_NOT_COLUMNS:
        return value.isNotNull()
    if isinstance(column.dataType, T.MapType):
        return F.to_json(F.map_from_entries(F.array_sort(F.map_entries(value))))
    if isinstance(column.dataType, (T.ArrayType, T.StructType)):
        return F.to_json(value)
    return value


def compare_frames(left: DataFrame, right: DataFrame, *, name: str, examples: int = 5) -> TableComparison:
    """Compare two frames with the same columns as multisets of rows (one Spark job).

    Args:
        left: Rows as from :func:`comparable`.
        right: Rows as from :func:`comparable`, same column names and types.
        name: The table's name for the report.
        examples: How many differing rows to keep for the report.
    """
    left_types = [(f.name, f.dataType.simpleString()) for f in left.schema.fields]
    right_types = [(f.name, f.dataType.simpleString()) for f in right.schema.fields]
    if left_types != right_types:
        return TableComparison(name, problem=f"columns differ: left {left_types}, right {right_types}")
    columns = left.columns
    both = left.withColumn("__side", F.lit(1)).unionByName(right.withColumn("__side", F.lit(-1)))
    differing = (
        both.groupBy(*[F.col(f"`{c}`") for c in columns])
        .agg(F.sum("__side").alias("__surplus"))
        .where(F.col("__surplus") != 0)
    )
    # Bounded: the totals in one row, then a few example rows (collected only when unequal).
    totals = differing.agg(
        F.sum(F.when(F.col("__surplus") > 0, F.col("__surplus"))).alias("left"),
        F.sum(F.when(F.col("__surplus") < 0, -F.col("__surplus"))).alias("right"),
    ).first()
    comparison = TableComparison(
        name, only_left=int(totals["left"] or 0), only_right=int(totals["right"] or 0)
    )
    if not comparison.equal:
        for row in differing.orderBy(*[F.col(f"`{c}`") for c in columns]).limit(examples).collect():
            side = "left" if row["__surplus"] > 0 else "right"
            values = {c: row[c] for c in columns}
            comparison.examples.append(f"{abs(row['__surplus'])}x only {side}: {values}")
    return comparison


def compare_tables(
    spark: SparkSession,
    left_path: str,
    right_path: str,
    *,
    name: str,
    exclude: Iterable[str] = (),
    normalize: Callable[[DataFrame], DataFrame] | None = None,
) -> TableComparison:
    """Compare the Delta tables at two paths by content (see :func:`compare_frames`).

    Args:
        exclude: Columns left out (they differ between runs by design).
        normalize: Applied to both sides before the comparison (e.g. to map renamed files).
    """
    sides = (("left", left_path), ("right", right_path))
    missing = [side for side, path in sides if not table_exists(spark, path)]
    if len(missing) == 2 and name.startswith("ops."):
        return TableComparison(name)  # a bookkeeping table neither run needed (ops.watermarks)
    if missing:
        return TableComparison(name, problem=f"no Delta table on the {' and '.join(missing)} side")
    frames = []
    for path in (left_path, right_path):
        frame = read_table(spark, path)
        frames.append(comparable(normalize(frame) if normalize else frame, exclude=exclude))
    return compare_frames(frames[0], frames[1], name=name)


def lake_tables(lake: str, layer: str) -> list[str]:
    """The Delta tables under ``<lake>/<layer>`` (local lakes only: the tests' own)."""
    root = Path(lake) / layer
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "_delta_log").is_dir())


def compare_lakes(
    spark: SparkSession,
    left_lake: str,
    right_lake: str,
    *,
    layers: Sequence[str] = DATA_LAYERS,
    ops_tables: Sequence[str] = tuple(VOLATILE_OPS_COLUMNS),
    exclude: Mapping[str, Iterable[str]] | None = None,
    normalize: Mapping[str, Callable[[DataFrame], DataFrame]] | None = None,
) -> list[TableComparison]:
    """Compare every table of ``layers`` (both lakes must hold the same tables) and ``ops_tables``.

    Args:
        layers: Data layers compared whole: each table in either lake must be in both.
        ops_tables: Ops tables compared, without their :data:`VOLATILE_OPS_COLUMNS`, logs
            through their current view (:data:`OPS_VIEWS`).
        exclude: More columns to leave out, per ``<layer>.<table>`` (or per layer), for a
            comparison that must ignore a documented difference.
        normalize: Per ``<layer>.<table>`` (or per layer), a function applied to both sides.

    Returns:
        One comparison per table, in layer order; check ``.equal``.
    """
    exclude, normalize = exclude or {}, normalize or {}
    names = [
        (layer, table)
        for layer in layers
        for table in sorted(set(lake_tables(left_lake, layer)) | set(lake_tables(right_lake, layer)))
    ]
    names += [("ops", table) for table in ops_tables]
    comparisons = []
    for layer, table in names:
        qualified = f"{layer}.{table}"
        excluded = [
            *VOLATILE_COLUMNS,
            *(VOLATILE_OPS_COLUMNS.get(table, {}) if layer == "ops" else ()),
            *exclude.get(layer, ()),
            *exclude.get(qualified, ()),
        ]
        comparisons.append(
            compare_tables(
                spark,
                table_path(left_lake, layer, table),
                table_path(right_lake, layer, table),
                name=qualified,
                exclude=excluded,
                normalize=_then(
                    OPS_VIEWS.get(table) if layer == "ops" else None,
                    normalize.get(qualified) or normalize.get(layer),
                ),
            )
        )
    return comparisons


def _then(
    first: Callable[[DataFrame], DataFrame] | None, second: Callable[[DataFrame], DataFrame] | None
) -> Callable[[DataFrame], DataFrame] | None:
    """``first`` then ``second``, either possibly absent."""
    if first is None or second is None:
        return first or second
    return lambda frame: frame.transform(first).transform(second)


def assert_lakes_equal(spark: SparkSession, left_lake: str, right_lake: str, **options: object) -> list[str]:
    """Fail with a readable report unless :func:`compare_lakes` finds every table equal.

    Returns:
        The names of the tables compared (for the caller to check the coverage).
    """
    comparisons = compare_lakes(spark, left_lake, right_lake, **options)  # type: ignore[arg-type]
    unequal = [c.describe() for c in comparisons if not c.equal]
    assert not unequal, f"{len(unequal)} of {len(comparisons)} tables differ:\n" + "\n".join(unequal)
    return [c.name for c in comparisons]


def count_rows(spark: SparkSession, lake: str, layer: str, table: str) -> int:
    """Rows of ``<lake>/<layer>/<table>`` (0 when there is no table)."""
    path = table_path(lake, layer, table)
    return read_table(spark, path).count() if table_exists(spark, path) else 0
