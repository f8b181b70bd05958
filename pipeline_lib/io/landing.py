"""Landing-zone I/O: list the delivery files of a source and read one of them.

Listing goes through Hadoop's file system, so the same code serves a local folder and an
object store. The listing is bounded metadata (one entry per delivered file), collected
on the driver on purpose.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline_lib.bronze.schemas import CORRUPT_RECORD, INGEST_DATE, SOURCE_FILE, LandingSource
from pipeline_lib.bronze.transforms import align_csv_to_contract, parse_json_lines
from pipeline_lib.io.delta import hadoop_configuration, hadoop_file_system, jvm
from pipeline_lib.io.frames import local_frame

_DELIVERY_FOLDER = re.compile(r"ingest_date=(\d{4}-\d{2}-\d{2})")  # fullmatch
_GLOB_CHARS = re.compile(r"([\\\[\]{}*?])")
MAX_HEADER_BYTES = 1 << 20  # a longer first line is left to Spark's own header read
FILE_PATH = "file_path"  # of Spark's hidden _metadata column
_LINE_BREAK = r"[\r\n]"
_FILE_KEY = "__delivered_file"
# How every CSV delivery is parsed (RFC 4180: a doubled quote inside quotes is a quote).
CSV_OPTIONS = {"header": "true", "inferSchema": "false", "escape": '"', "encoding": "UTF-8"}
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


def read_delivery_file(
    spark: SparkSession, delivery: DeliveryFile, source: LandingSource, *, multiline: bool = True
) -> DeliveryRead:
    """Read one delivered file into the source's contract fields, all strings.

    CSV is read as RFC 4180 (``multiline``: a quoted field may hold commas, doubled quotes
    and line breaks) with the file's own header, matched to the contract ignoring case and
    surrounding spaces (so a reordered or extra column lands where it belongs), in
    permissive mode: a row that does not fit keeps its raw text in ``_corrupt_record``.
    ``multiline=False`` reads one record per line instead: the fallback for a file whose
    quotes do not balance (see :func:`corrupt_record_spans_lines`) or whose header follows
    blank lines. JSON Lines (plain or ``.gz``) is read as text and parsed per line, so a
    malformed line is kept, not dropped. Reading is lazy: a broken file (a truncated gzip,
    say) fails when the records are first used. :func:`read_deliveries` reads many files
    in one read; this reads one (to isolate a broken file, or to re-read a header).

    Returns:
        The records (contract fields, ``_rescued_data`` and ``_corrupt_record``; no
        lineage yet) and the problems of a CSV file's shape (header, fallback).
    """
    path = _escape_glob(delivery.path)
    if source.file_format == "json":
        return DeliveryRead(spark.read.text(path).transform(parse_json_lines, source=source), ())
    layout = csv_layout(spark, delivery, source, multiline=multiline)
    if layout is None:  # an empty file: nothing to read, but keep the contract's shape
        return DeliveryRead(_no_records(spark, source), ())
    return DeliveryRead(_read_csv(spark, [path], layout, source), layout.problems)


@dataclass(frozen=True)
class CsvLayout:
    """How a CSV delivery is read: its columns (contract names where they match) and mode."""

    names: tuple[str, ...]
    line_by_line: bool
    problems: tuple[str, ...]


def csv_layout(
    spark: SparkSession,
    delivery: DeliveryFile,
    source: LandingSource,
    *,
    multiline: bool = True,
    parsed: dict[str, list[str]] | None = None,
) -> CsvLayout | None:
    """The layout of one CSV delivery from its header (no Spark job); None for an empty file.

    ``parsed``: as :func:`csv_header`'s.
    """
    found = csv_header(spark, delivery.path, parsed=parsed)
    if found is None:  # a first line over 1 MiB: let Spark read it from the file
        columns = spark.read.options(**CSV_OPTIONS).csv(_escape_glob(delivery.path)).columns
        found = CsvHeader(columns, after_blank_lines=False)
    if not found.names:
        return None
    names = contract_names(found.names, source)
    # Spark skips the first *record* as the header; after blank lines, with multiLine, that
    # would be a blank line, and the header a row: such a file is read line by line.
    line_by_line = not multiline or found.after_blank_lines
    problems = list(_header_problems(names, found.names, source))
    if line_by_line and multiline:
        problems.append("blank lines before the header: read one record per line (no quoted line breaks)")
    return CsvLayout(tuple(names), line_by_line, tuple(problems))


def _read_csv(
    spark: SparkSession,
    paths: Sequence[str],
    layout: CsvLayout,
    source: LandingSource,
    *,
    keep: Sequence[str] = (),
) -> DataFrame:
    schema = T.StructType(
        [T.StructField(name, T.StringType()) for name in layout.names]
        + [T.StructField(CORRUPT_RECORD, T.StringType())]
    )
    delivered = (
        spark.read.schema(schema)
        .options(**CSV_OPTIONS)
        .option("multiLine", not layout.line_by_line)
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", CORRUPT_RECORD)
        .csv(list(paths))
    )
    if keep:
        delivered = delivered.select("*", *[F.col(f"_metadata.{FILE_PATH}").alias(c) for c in keep])
    if not layout.line_by_line:
        # A record of spaces and control characters only (a UTF-16 file's trailing NUL, say)
        # holds nothing: read line by line, Spark skips such lines; read as RFC 4180, skip it too.
        blank = F.col(CORRUPT_RECORD).isNotNull() & F.col(CORRUPT_RECORD).rlike(r"^[\x00-\x20]*$")
        delivered = delivered.where(~blank)
    return delivered.transform(align_csv_to_contract, source=source, keep=keep)


def _no_records(spark: SparkSession, source: LandingSource, *, keep: Sequence[str] = ()) -> DataFrame:
    empty = T.StructType(
        [
            *source.delivered_schema.fields,
            T.StructField(CORRUPT_RECORD, T.StringType()),
            *[T.StructField(c, T.StringType()) for c in keep],
        ]
    )
    return local_frame(spark, [], empty).transform(align_csv_to_contract, source=source, keep=keep)


@dataclass(frozen=True)
class DeliveryBatch:
    """Many delivered files of one source, read together.

    ``records`` has the contract fields, ``_rescued_data``, ``_corrupt_record``,
    ``_source_file`` and ``_ingest_date`` (each row's delivery); ``problems`` the shape
    problems per file; ``unreadable`` the files whose header could not be read, with why.
    """

    records: DataFrame
    problems: dict[str, tuple[str, ...]]
    unreadable: dict[str, str]


def read_deliveries(
    spark: SparkSession,
    deliveries: Sequence[DeliveryFile],
    source: LandingSource,
    *,
    line_by_line: Collection[str] = (),
) -> DeliveryBatch:
    """Read delivered files of one source in one Spark read per layout, not one per file.

    JSON Lines files are one read; CSV files one read per layout (files with the same
    header and mode). Each row's delivery comes from the file it was read from
    (``_metadata.file_path``), so lineage needs no read per file. Lazy, as
    :func:`read_delivery_file`: a broken file fails the batch when it is used (the caller
    then reads file by file to isolate it).

    Args:
        line_by_line: Paths of CSV files to read one record per line.
    """
    keep = [_FILE_KEY]
    problems: dict[str, tuple[str, ...]] = {}
    unreadable: dict[str, str] = {}
    frames: list[DataFrame] = []
    if source.file_format == "json":
        if deliveries:
            lines = spark.read.text([_escape_glob(d.path) for d in deliveries]).select(
                "*", F.col(f"_metadata.{FILE_PATH}").alias(_FILE_KEY)
            )
            frames.append(lines.transform(parse_json_lines, source=source, keep=keep))
    else:
        groups: dict[CsvLayout, list[str]] = {}
        parsed: dict[str, list[str]] = {}  # the batch's header lines, each parsed once
        for delivery in deliveries:
            try:
                layout = csv_layout(
                    spark, delivery, source, multiline=delivery.path not in line_by_line, parsed=parsed
                )
            except Exception as exc:  # the file's first line cannot be read
                unreadable[delivery.path] = str(exc)
                continue
            if layout is None:
                continue
            problems[delivery.path] = layout.problems
            groups.setdefault(dataclasses.replace(layout, problems=()), []).append(
                _escape_glob(delivery.path)
            )
        frames += [_read_csv(spark, paths, layout, source, keep=keep) for layout, paths in groups.items()]
    readable = [d for d in deliveries if d.path not in unreadable]
    records = (
        functools.reduce(DataFrame.unionByName, frames) if frames else _no_records(spark, source, keep=keep)
    )
    lineage = _lineage_of(spark, readable)
    return DeliveryBatch(
        records.join(F.broadcast(lineage), on=_FILE_KEY, how="inner").drop(_FILE_KEY), problems, unreadable
    )


def _lineage_of(spark: SparkSession, deliveries: Sequence[DeliveryFile]) -> DataFrame:
    """``_metadata.file_path`` (URI-encoded, as Spark reports it) -> ``_source_file`` and
    ``_ingest_date`` of each delivery (bounded: one row per file)."""
    # The JVM handle: the URI must be Hadoop's own encoding of the path (what _metadata
    # reports); Python's urllib encodes differently (e.g. '=' and '+').
    java = jvm(spark)
    rows = [
        (str(java.org.apache.hadoop.fs.Path(d.path).toUri().toString()), d.path, d.ingest_date)
        for d in deliveries
    ]
    schema = T.StructType(
        [
            T.StructField(_FILE_KEY, T.StringType(), False),
            T.StructField(SOURCE_FILE, T.StringType(), False),
            T.StructField(INGEST_DATE, T.DateType(), False),
        ]
    )
    return local_frame(spark, rows, schema)


def corrupt_record_spans_lines() -> Column:
    """True for a row whose raw text spans lines and still did not parse: a quote that never
    closed swallowed the rest of the file. Its file is read again one record per line, so the
    rows after the broken one parse on their own (the broken row stays in ``_corrupt_record``)."""
    return F.col(CORRUPT_RECORD).rlike(_LINE_BREAK)


def field_spans_lines(source: LandingSource) -> Column:
    """True for a row with a line break inside a field: a quoted multi-line value, or two rows
    joined by a stray quote; :func:`parses_as_rfc4180` tells which."""
    spans = F.lit(False)
    for name in source.fields:
        spans = spans | F.coalesce(F.col(name).rlike(_LINE_BREAK), F.lit(False))
    return spans


def parses_as_rfc4180(spark: SparkSession, delivery: DeliveryFile, source: LandingSource) -> bool:
    """True when the file's quoting is well formed: a quote inside a quoted value is doubled.

    A stray quote can join two rows into one well-shaped record (``C1,"a,...\nC2,"b,...``):
    read strictly, such a file fails; its rows are then read one record per line instead.
    """
    layout = csv_layout(spark, delivery, source)
    if layout is None:
        return True
    strict = (
        spark.read.schema(T.StructType([T.StructField(n, T.StringType()) for n in layout.names]))
        .options(**CSV_OPTIONS)
        .option("multiLine", True)
        .option("unescapedQuoteHandling", "RAISE_ERROR")
        .csv(_escape_glob(delivery.path))
    )
    try:
        strict.count()  # tokenizing every record is what finds a stray quote
    except Exception:
        return False
    return True


def contract_names(header: list[str], source: LandingSource) -> list[str]:
    """The header's names, each contract field matched ignoring case and surrounding spaces.

    ``Order_ID `` reads as ``order_id``; a name that matches no field stays as delivered. Two
    names that match the same field (``order_id`` and ``Order_ID ``) are ambiguous: neither is
    taken for the field (both stay as delivered, so their values go to ``_rescued_data`` and
    the field is missing), as for two identical names, which Spark renames apart.
    """
    fields = {name.lower(): name for name in source.fields}
    names = [fields.get(name.strip().lower(), name) for name in header]
    claims = Counter(name for name in names if name in source.fields)
    return [
        original if claims.get(name, 0) > 1 else name for original, name in zip(header, names, strict=True)
    ]


@dataclass(frozen=True)
class CsvHeader:
    """A CSV file's column names, and whether blank lines come before them."""

    names: list[str]
    after_blank_lines: bool


def csv_header(
    spark: SparkSession, path: str, *, parsed: dict[str, list[str]] | None = None
) -> CsvHeader | None:
    """A CSV file's column names as Spark's CSV reader (``header``) names them, without a Spark job.

    Spark takes the first line that is not only spaces (a UTF-8 byte order mark at the start of the
    file skipped, compressed files decompressed by extension) and parses it with its CSV
    parser. This reads that line through Hadoop's file system on the driver and hands it to
    the same parser (:data:`CSV_OPTIONS`) as a one-line local Dataset, so names are the same
    (empty names become ``_c<i>``, duplicates get their index). ``spark.read.csv(path).columns``
    instead runs a Spark job per file.

    Args:
        parsed: Header lines already parsed -> their names, shared by the calls of one batch:
            parsing a line is a query's analysis, and a backfill's files repeat the same
            header (measured in ``bench/results/MEASUREMENTS.md``).

    Returns:
        The names (``[]`` for a file of blank lines only) and whether blank lines precede them;
        None when the first non-blank line is over :data:`MAX_HEADER_BYTES` (the caller then
        lets Spark read it).
    """
    # The JVM handles: Hadoop's codecs and line reader read the first line of a (compressed)
    # file on the driver; PySpark has no API for that, and a Spark read is a job per file.
    java = jvm(spark)
    conf = hadoop_configuration(spark)
    file, fs = hadoop_file_system(spark, path)
    raw = fs.open(file)
    try:
        codec = java.org.apache.hadoop.io.compress.CompressionCodecFactory(conf).getCodec(file)
        reader = java.org.apache.hadoop.util.LineReader(
            raw if codec is None else codec.createInputStream(raw)
        )
        text = java.org.apache.hadoop.io.Text()
        first = True
        skipped = 0
        while reader.readLine(text, MAX_HEADER_BYTES, _INT_MAX) > 0:
            if text.getLength() >= MAX_HEADER_BYTES:
                return None
            line = text.toString()
            if first and line.startswith("\ufeff"):
                line = line[1:]  # Hadoop's line reader skips a byte order mark at the file's start
            first = False
            if line.strip(" "):  # Spark skips lines that SQL's trim (spaces only) empties
                break
            skipped += 1
        else:
            return CsvHeader([], after_blank_lines=False)
    finally:
        raw.close()
    parsed = {} if parsed is None else parsed
    if line not in parsed:
        parsed[line] = _parse_header_line(spark, line)
    return CsvHeader(list(parsed[line]), after_blank_lines=skipped > 0)


def _parse_header_line(spark: SparkSession, line: str) -> list[str]:
    """The column names Spark's CSV reader gives a header line."""
    # The JVM handle: a one-line Dataset[String] parsed by Spark's own CSV reader gives the
    # header names Spark would give; PySpark's csv() takes an RDD, which starts a Python worker.
    java = jvm(spark)
    session = spark._jsparkSession
    lines = session.createDataset(
        java.java.util.Collections.singletonList(line), java.org.apache.spark.sql.Encoders.STRING()
    )
    reader = session.read()
    for key, value in CSV_OPTIONS.items():
        reader = reader.option(key, value)
    return list(reader.csv(lines).schema().fieldNames())


def _header_problems(header: list[str], delivered: list[str], source: LandingSource) -> tuple[str, ...]:
    problems = []
    normalized = Counter(fields for name in delivered if (fields := name.strip().lower()) in source.fields)
    ambiguous = sorted(field for field, count in normalized.items() if count > 1)
    if ambiguous:
        problems.append(
            f"ambiguous header: several columns name {ambiguous} (ignoring case and spaces); none used"
        )
    missing = [c for c in source.fields if c not in header]
    extra = [c for c in header if c not in source.fields]
    renamed = [
        f"{d!r} as {h!r}" for d, h in zip(delivered, header, strict=True) if d != h and h in source.fields
    ]
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
    if renamed:
        problems.append(f"header names matched ignoring case and spaces: {', '.join(renamed)}")
    return tuple(problems)


def _parse_date(text: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None


def _escape_glob(path: str) -> str:
    # Spark globs the paths it reads; a file name with [ ] { } * ? must be read literally.
    return _GLOB_CHARS.sub(r"\\\1", path)
