"""Export I/O: one file out of the lake, and the log of who exported what.

:func:`write_single_file` writes a small DataFrame (an audience) as ONE CSV (with a header) or
Parquet file at the path given, through Hadoop's file system (a local path or an object
store): Spark writes a one-partition folder beside it, the single part file is renamed to
the destination (replacing an older file), and the folder is removed, so the destination
holds either the old file or the whole new one. :func:`log_export` appends the record of an
export to ``<lake>/ops/audience_exports`` (schema: :data:`pipeline_lib.ops.schemas.EXPORTS_SCHEMA`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession

from pipeline_lib.io.delta import OPS_TABLE_PROPERTIES, hadoop_file_system, jvm, table_path, write_table
from pipeline_lib.io.frames import local_frame
from pipeline_lib.ops.schemas import EXPORTS_SCHEMA, EXPORTS_TABLE

FORMATS = {".csv": "csv", ".parquet": "parquet"}


class ExportError(ValueError):
    """The export cannot be written as asked (format, destination, missing audience)."""


def export_format(destination: str) -> str:
    """``csv`` or ``parquet`` from the destination's extension.

    Raises:
        ExportError: Another extension.
    """
    for suffix, name in FORMATS.items():
        if destination.lower().endswith(suffix):
            return name
    raise ExportError(f"--out must end in .csv or .parquet, got {destination!r}")


def write_single_file(frame: DataFrame, destination: str, *, private: bool = False) -> None:
    """Write ``frame`` as one file at ``destination`` (format from its extension).

    Args:
        frame: A bounded DataFrame (it goes through one task).
        destination: ``*.csv`` (UTF-8, header, ``"`` quoting) or ``*.parquet``; its folder
            must exist.
        private: Make the file readable by its owner only (contact details).

    Raises:
        ExportError: A bad extension, or the destination's folder does not exist.
    """
    spark = frame.sparkSession
    file_format = export_format(destination)
    target, fs = hadoop_file_system(spark, destination)
    folder = target.getParent()
    if folder is None or not fs.exists(folder):
        raise ExportError(f"the folder of --out {destination!r} does not exist")
    staging = f"{folder.toString()}/.{target.getName()}.{uuid.uuid4().hex}.tmp"
    writer = frame.coalesce(1).write.mode("overwrite").format(file_format)
    if file_format == "csv":
        writer = writer.option("header", "true").option("escape", '"').option("encoding", "UTF-8")
    writer.save(staging)
    # The JVM: PySpark has no API to rename a file or set its permissions on Hadoop's file system.
    java = jvm(spark)
    staged = java.org.apache.hadoop.fs.Path(staging)
    try:
        parts = [s.getPath() for s in fs.listStatus(staged) if s.getPath().getName().startswith("part-")]
        if len(parts) != 1:
            raise ExportError(f"expected one file from the export, Spark wrote {len(parts)}")
        if fs.exists(target):
            fs.delete(target, False)
        if not fs.rename(parts[0], target):
            raise ExportError(f"could not move the export to {destination!r}")
        if private:
            permission = java.org.apache.hadoop.fs.permission.FsPermission(java.java.lang.Short(0o600))
            fs.setPermission(target, permission)
    finally:
        fs.delete(staged, True)


@dataclass(frozen=True)
class ExportRecord:
    """Who exported what, where (one row of ``ops/audience_exports``)."""

    exported_by: str
    host: str
    campaign: str
    as_of_date: dt.date
    group: str
    rows: int
    left_out_without_consent: int
    with_contact: bool
    columns: Sequence[str]
    destination: str
    export_id: str = ""
    exported_at: dt.datetime | None = None

    def line(self) -> str:
        """The log line: who, what, how many, with which columns, where."""
        contact = "WITH contact details" if self.with_contact else "without contact details"
        return (
            f"export-audience: {self.exported_by}@{self.host} exported {self.rows} {self.group} members of "
            f"campaign {self.campaign} as of {self.as_of_date} {contact} (columns {', '.join(self.columns)}) "
            f"to {self.destination}; {self.left_out_without_consent} left out: no consent any more"
        )


def log_export(spark: SparkSession, lake: str, record: ExportRecord) -> None:
    """Append ``record`` to ``<lake>/ops/audience_exports`` (one commit)."""
    row = (
        record.export_id or uuid.uuid4().hex,
        record.exported_at or dt.datetime.now(dt.UTC),
        record.exported_by,
        record.host,
        record.campaign,
        record.as_of_date,
        record.group,
        int(record.rows),
        int(record.left_out_without_consent),
        record.with_contact,
        list(record.columns),
        record.destination,
    )
    write_table(
        local_frame(spark, [row], EXPORTS_SCHEMA),
        table_path(lake, "ops", EXPORTS_TABLE),
        properties=OPS_TABLE_PROPERTIES,
    )
