"""Landing-zone I/O: list the delivery files of a source and read one of them.

Listing goes through Hadoop's file system, so the same code serves a local folder and an
object store. The listing is bounded metadata (one entry per delivered file), collected
on the driver on purpose.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from pipeline_lib.bronze import align_csv_to_contract, parse_json_lines
from pipeline_lib.delta_io import hadoop_file_system
from pipeline_lib.frames import local_frame
from pipeline_lib.schemas import CORRUPT_RECORD, LandingSource

_DELIVERY_FOLDER = re.compile(r"ingest_date=(\d{4}-\d{2}-\d{2})")  # fullmatch
_GLOB_CHARS = re.compile(r"([\\\[\]{}*?])")
MAX_HEADER_BYTES = 1 << 20  # a longer first line is left to Spark's own header read
_INT_MAX = 2**31 - 1


@dataclass(frozen=True)
class DeliveryFile:
    """One file of one delivery, as listed in the landing zone."""

    source: str
    path: str
    ingest_date: dt.date
    size: int
    modified_at: dt.datetime


@dataclass(frozen=True)
class Listing:
    """What a source folder holds: its delivery files, and entries that are not deliveries."""

    files: tuple[DeliveryFile, ...]
    ignored: tuple[str, ...]  # "path: reason" for folders or files outside the contract's layout


def list_delivery_files(spark: SparkSession, landing: str, source: str) -> Listing:
    """List ``<landing>/<source>/ingest_date=YYYY-MM-DD/<file>``, oldest delivery first.

    A source folder that does not exist yet is an empty listing, not an error. Hidden
    files (``.`` or ``_`` prefix, e.g. ``_SUCCESS`` or ``.crc``) are skipped; folders
    whose name is not ``ingest_date=<a real date>`` are reported in ``ignored``.
    """
    root, fs = hadoop_file_system(spark, f"{landing.rstrip('/')}/{source}")
    if not fs.exists(root):
        return Listing((), ())
    files: list[DeliveryFile] = []
    ignored: list[str] = []
    for folder in fs.listStatus(root):
        name = folder.getPath().getName()
        if name.startswith((".", "_")):
            continue
        match = _DELIVERY_FOLDER.fullmatch(name)
        delivery_date = _parse_date(match.group(1)) if match else None
        if not folder.isDirectory() or delivery_date is None:
            ignored.append(f"{folder.getPath().toString()}: not an ingest_date=YYYY-MM-DD delivery folder")
            continue
        for status in fs.listStatus(folder.getPath()):
            file_name = status.getPath().getName()
            if status.isDirectory() or file_name.startswith((".", "_")):
                continue
            files.append(
                DeliveryFile(
                    source=source,
                    path=status.getPath().toString(),
                    ingest_date=delivery_date,
                    size=int(status.getLen()),
                    modified_at=dt.datetime.fromtimestamp(status.getModificationTime() / 1000, dt.UTC),
                )
            )
    files.sort(key=lambda f: (f.ingest_date, f.path))
    return Listing(tuple(files), tuple(sorted(ignored)))


@dataclass(frozen=True)
class DeliveryRead:
    """A delivered file read into the contract, and what was odd about its shape."""

    records: DataFrame
    problems: tuple[str, ...]


def read_delivery_file(spark: SparkSession, delivery: DeliveryFile, source: LandingSource) -> DeliveryRead:
    """Read one delivered file into the source's contract fields, all strings.

    CSV is read with the file's own header (so a reordered or extra column lands where
    it belongs) in permissive mode: a row that does not fit keeps its raw text in
    ``_corrupt_record``. JSON Lines (plain or ``.gz``) is read as text and parsed per
    line, so a malformed line is kept, not dropped. Reading is lazy: a broken file
    (a truncated gzip, say) fails when the records are first used.

    Returns:
        The records (contract fields, ``_rescued_data`` and ``_corrupt_record``; no
        lineage yet) and the header problems of a CSV file.
    """
    path = _escape_glob(delivery.path)
    if source.file_format == "json":
        return DeliveryRead(spark.read.text(path).transform(parse_json_lines, source=source), ())
    header = csv_header(spark, delivery.path)
    if header is None:  # a first line over 1 MiB: let Spark read it from the file
        header = spark.read.option("header", True).option("inferSchema", False).csv(path).columns
    if not header:  # an empty file: nothing to read, but keep the contract's shape
        empty = T.StructType([*source.delivered_schema.fields, T.StructField(CORRUPT_RECORD, T.StringType())])
        records = local_frame(spark, [], empty).transform(align_csv_to_contract, source=source)
        return DeliveryRead(records, ())
    schema = T.StructType(
        [T.StructField(name, T.StringType()) for name in header]
        + [T.StructField(CORRUPT_RECORD, T.StringType())]
    )
    delivered = (
        spark.read.schema(schema)
        .option("header", True)
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", CORRUPT_RECORD)
        .option("encoding", "UTF-8")
        .csv(path)
    )
    return DeliveryRead(
        delivered.transform(align_csv_to_contract, source=source), _header_problems(header, source)
    )


def csv_header(spark: SparkSession, path: str) -> list[str] | None:
    """A CSV file's column names as Spark's CSV reader (``header``) names them, without a Spark job.

    Spark takes the first line that is not only spaces (a UTF-8 byte order mark at the start of the
    file skipped, compressed files decompressed by extension) and parses it with its CSV
    parser. This reads that line through Hadoop's file system on the driver and hands it to
    the same parser as a one-line local Dataset, so names are the same (empty names become
    ``_c<i>``, duplicates get their index). ``spark.read.csv(path).columns`` instead runs a
    Spark job per file (~0.4 s each).

    Returns:
        The names; ``[]`` for a file of blank lines only; None when the first non-blank
        line is over :data:`MAX_HEADER_BYTES` (the caller then lets Spark read it).
    """
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    file, fs = hadoop_file_system(spark, path)
    raw = fs.open(file)
    try:
        codec = jvm.org.apache.hadoop.io.compress.CompressionCodecFactory(conf).getCodec(file)
        reader = jvm.org.apache.hadoop.util.LineReader(raw if codec is None else codec.createInputStream(raw))
        text = jvm.org.apache.hadoop.io.Text()
        first = True
        while reader.readLine(text, MAX_HEADER_BYTES, _INT_MAX) > 0:
            if text.getLength() >= MAX_HEADER_BYTES:
                return None
            line = text.toString()
            if first and line.startswith("\ufeff"):
                line = line[1:]  # Hadoop's line reader skips a byte order mark at the file's start
            first = False
            if line.strip(" "):  # Spark skips lines that SQL's trim (spaces only) empties
                break
        else:
            return []
    finally:
        raw.close()
    session = spark._jsparkSession
    lines = session.createDataset(
        jvm.java.util.Collections.singletonList(line), jvm.org.apache.spark.sql.Encoders.STRING()
    )
    return list(
        session.read()
        .option("header", "true")
        .option("inferSchema", "false")
        .csv(lines)
        .schema()
        .fieldNames()
    )


def _header_problems(header: list[str], source: LandingSource) -> tuple[str, ...]:
    problems = []
    missing = [c for c in source.fields if c not in header]
    extra = [c for c in header if c not in source.fields]
    if missing:
        problems.append(f"header lacks contract columns {missing}")
    if extra and not set(header) & set(source.fields):
        # Not a header at all: the "names" are the first row's values, which may be personal
        # data, and the file log must not hold any. Counted, not named.
        problems.append(
            f"{len(extra)} columns outside the contract kept in _rescued_data, names not logged "
            "(a file without a header has its first line read as one)"
        )
    elif extra:
        problems.append(f"columns outside the contract kept in _rescued_data: {extra}")
    return tuple(problems)


def _parse_date(text: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None


def _escape_glob(path: str) -> str:
    # Spark globs the paths it reads; a file name with [ ] { } * ? must be read literally.
    return _GLOB_CHARS.sub(r"\\\1", path)
