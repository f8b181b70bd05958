"""Raw files of the lake and of the landing zone, for the erasure's searches and checks.

Delta reads tables through their log (:mod:`pipeline_lib.io.delta`); the erasure must also
look at what the log no longer references (data files of older versions and change data,
which VACUUM deletes), at the log itself (min/max statistics of identifiers), and at the
delivery files, which stay outside the lake. Every such read is here. Only file names and
matching rows of one customer are collected.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline_lib.io.delta import LAYERS, hadoop_file_system, read_table, table_exists, table_path

LANDING_GLOB = "*/ingest_date=*/*"


def lake_tables(spark: SparkSession, lake: str, *, exclude: Sequence[str] = ()) -> dict[str, str]:
    """Every Delta table of the lake as ``{layer.table: path}``, except those of ``exclude`` (sorted).

    Lists with Hadoop's file system, so it works on object stores too.
    """
    found = {}
    for layer in LAYERS:
        root, fs = hadoop_file_system(spark, f"{lake.rstrip('/')}/{layer}")
        if not fs.exists(root):
            continue
        for status in fs.listStatus(root):
            name = status.getPath().getName()
            if not status.isDirectory() or name.startswith(("_", ".")) or f"{layer}.{name}" in exclude:
                continue
            path = table_path(lake, layer, name)
            if table_exists(spark, path):
                found[f"{layer}.{name}"] = path
    return dict(sorted(found.items()))


def _normalized(uri: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlparse(uri).path).replace("//", "/")


def unreferenced_files(spark: SparkSession, path: str) -> list[str]:
    """Data files under the table that its current version does not use: older versions and
    change-data files, which VACUUM deletes (lists file names only)."""
    root, fs = hadoop_file_system(spark, path)
    live = {_normalized(uri) for uri in read_table(spark, path).inputFiles()}
    files = fs.listFiles(root, True)
    unreferenced = []
    while files.hasNext():
        uri = files.next().getPath().toString()
        if uri.endswith(".parquet") and "/_delta_log/" not in uri and _normalized(uri) not in live:
            unreferenced.append(uri)
    return sorted(unreferenced)


def read_data_files(spark: SparkSession, files: Sequence[str]) -> list[DataFrame]:
    """Parquet data files of a table (e.g. :func:`unreferenced_files`), as one frame when their
    schemas merge, else one frame per file (the table's schema changed incompatibly over time)."""
    try:
        return [spark.read.option("mergeSchema", "true").parquet(*files)]
    except AnalysisException:
        return [spark.read.parquet(file) for file in files]


def log_files_matching(
    spark: SparkSession, tables: dict[str, str], touched: Sequence[str], pattern: str
) -> dict[str, list[str]]:
    """Per touched table, the ``_delta_log`` files whose text matches the regular expression.

    Commit (``.json``) and checksum (``.crc``) files are read as text, checkpoints as rows
    turned to JSON, all tables at once. Collects file names only.
    """
    owner = {}
    for name in touched:
        if name in tables:
            log, fs = hadoop_file_system(spark, f"{tables[name]}/_delta_log")
            for status in fs.listStatus(log):
                owner[status.getPath().toString()] = name
    texts = [f for f in owner if f.endswith((".json", ".crc"))]
    checkpoints = [f for f in owner if ".checkpoint" in f and f.endswith(".parquet")]
    frames = [spark.read.text(texts)] if texts else []
    if checkpoints:
        frames.append(spark.read.parquet(*checkpoints).select(F.to_json(F.struct("*")).alias("value")))
    hits = {
        _normalized(row["file"])
        for frame in frames
        for row in frame.where(F.col("value").rlike(pattern))
        .select(F.input_file_name().alias("file"))
        .distinct()
        .collect()
    }
    found: dict[str, list[str]] = {}
    for file, name in owner.items():
        if _normalized(file) in hits:
            found.setdefault(name, []).append(file.rsplit("/", 1)[-1])
    return {name: sorted(files) for name, files in sorted(found.items())}


def landing_files_matching(spark: SparkSession, landing: str, pattern: str) -> list[str]:
    """Delivery files of the landing zone with a line matching the regular expression (read only)."""
    root, fs = hadoop_file_system(spark, landing)
    if not fs.exists(root):
        return []
    try:
        lines = spark.read.text(f"{landing.rstrip('/')}/{LANDING_GLOB}")
    except AnalysisException:  # no delivery file at all
        return []
    hits = (
        lines.where(F.col("value").rlike(pattern))
        .select(F.input_file_name().alias("file"))
        .distinct()
        .collect()
    )
    return sorted(row["file"] for row in hits)
