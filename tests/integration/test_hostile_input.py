"""Hostile deliveries: seeded mutations of generated files, through bronze and silver.

A small generated landing zone (2 days, scale 0.001) gets, beside its valid files, one
mutated copy per kind of damage a real feed delivers: truncation (mid-row, and a cut gzip),
flipped bytes, latin-1 and UTF-16 re-encoding, NUL bytes, a line of several MB, wrong
types, a JSON document nested 10 000 deep, lines that are not JSON objects, unbalanced
quotes and duplicate CSV header names. Every mutated file's name has spaces and accents.
The fuzzer is seeded (``ECOM_FUZZ_SEED`` picks another seed, to explore; the default keeps
CI reproducible). Then:

- the run never crashes: every bronze and silver job succeeds;
- every row is accounted for: per file, rows in the file (counted here from its bytes, as
  Hadoop splits lines) = rows in bronze = rows in ``ops/ingested_files``, or the file is
  logged ``failed`` with a reason and has no row in bronze; per silver table, bronze rows =
  silver rows + quarantined rows + duplicates, superseded and unchanged rows (counted from
  the tables, the run record's details only for what a table cannot show);
- the report says what was wrong and where: the file log's problems per file, the
  quarantine's ``_failed_rules`` and ``_source_file`` per row, the run records.

The command-line run over this landing zone, every layer with gold included, is in
``test_privacy_and_paths.py`` (one run serves both: its output is also scanned for personal data).
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs.bronze import INGEST_LOG_TABLE
from jobs.framework import JobContext, JobFailedError, JobResult, JobSpec, new_run_id, run_job, select_jobs
from pipeline_lib.config import PipelineConfig
from pipeline_lib.delta_io import read_table, table_exists, table_path
from pipeline_lib.generator import generate_landing
from pipeline_lib.runs import RUNS_TABLE
from pipeline_lib.schemas import LANDING_SOURCES

pytestmark = pytest.mark.slow

FUZZ_SEED = int(os.environ.get("ECOM_FUZZ_SEED", "20260301"))
START = dt.date(2026, 3, 1)
DAYS = 2
HUGE_FIELD_CHARS = 6_000_000
MIN_ROWS = 8  # rows of a file a row-damaging mutation starts from
NESTING_DEPTH = 10_000
# Row-damaging mutations go to sources whose files hold enough rows that one damaged row
# stays under the 20 % "parse error" stop-the-line threshold of conf/quality.yaml; a
# 6-row fx_rates file would (by design, tested in test_silver_jobs.py) stop silver.fx_rates.
CSV_TARGETS = ("orders", "order_items", "customers")
JSON_TARGETS = ("clicks", "catalogue")
# Fields whose wrong type makes a quarantine rule fail (not only a flag).
WRONG_TYPE_FIELDS = {
    "orders": ("order_ts", "updated_at", "shipping_fee"),
    "order_items": ("quantity", "unit_price", "line_no"),
    "customers": ("updated_at",),
    "clicks": ("quantity", "price", "event_ts"),
    "catalogue": ("price", "updated_at"),
}
WRONG_VALUES = ("two", "yesterday", "1e999", "NaN", "-", "12,5", "0x1F", "9" * 40)


@dataclass
class Mutant:
    """One mutated delivery file and what its report must say."""

    kind: str
    source: str
    path: Path
    expect_failed: bool = False
    expect_problems: tuple[str, ...] = ()  # substrings of the file log's problems
    expect_quarantined: bool = False  # some of its rows must be in quarantine
    expect_long_value: bool = False
    notes: dict[str, object] = field(default_factory=dict)


# --- counting rows the way the readers do, independently of the pipeline -------------------

_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def hadoop_lines(data: bytes) -> list[bytes]:
    """Lines as Hadoop's line reader cuts them (LF, CR or CRLF end a line)."""
    lines = _LINE_BREAK.split(data)
    return lines[:-1] if lines and lines[-1] == b"" else lines


def expected_rows(path: Path, file_format: str) -> int:
    """Rows a delivered file holds: CSV data lines (non-blank, header excluded), JSON non-blank lines."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    texts = [line.decode("utf-8", errors="replace") for line in hadoop_lines(data)]
    if file_format == "csv":
        # Spark's CSV reader skips lines that Scala's String.trim empties (every char <= ' '),
        # then takes the first remaining line as the header.
        non_blank = [t for t in texts if any(ch > " " for ch in t)]
        return max(len(non_blank) - 1, 0)
    return sum(1 for t in texts if t.strip(" ") != "")  # bronze drops lines that SQL trim() empties


# --- the mutations ---------------------------------------------------------------------------


def _csv_split(data: bytes) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    return rows[0], rows[1:]


def _csv_join(header: list[str], rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _body_start(data: bytes) -> int:
    return data.index(b"\n") + 1


def _object_lines(lines: list[bytes]) -> list[int]:
    """Indexes of the lines that are JSON objects (the generator delivers some malformed ones)."""
    indexes = []
    for index, line in enumerate(lines):
        try:
            if isinstance(json.loads(line), dict):
                indexes.append(index)
        except ValueError:
            continue
    return indexes


def truncate(rng: random.Random, data: bytes, fmt: str) -> tuple[bytes, dict[str, object]]:
    cut = rng.randrange(_body_start(data) + 1 if fmt == "csv" else 1, len(data) - 1)
    return data[:cut], {"cut_at": cut}


def flip_bytes(rng: random.Random, data: bytes, fmt: str) -> tuple[bytes, dict[str, object]]:
    mutable = bytearray(data)
    positions = sorted(rng.sample(range(_body_start(data), len(data) - 1), 3))
    for position in positions:
        mutable[position] ^= rng.randrange(1, 256)
    return bytes(mutable), {"positions": positions}


def insert_nul(rng: random.Random, data: bytes, fmt: str) -> tuple[bytes, dict[str, object]]:
    lines = data.split(b"\n")
    for index in rng.sample(range(1, len(lines) - 1), 2):
        line = lines[index]
        at = rng.randrange(1, len(line))
        lines[index] = line[:at] + b"\x00" + line[at:]
    return b"\n".join(lines), {}


def huge_line(rng: random.Random, data: bytes, fmt: str, source: str) -> tuple[bytes, dict[str, object]]:
    big = "x" * HUGE_FIELD_CHARS
    if fmt == "csv":
        header, rows = _csv_split(data)
        row = list(rng.choice(rows))
        row[rng.randrange(1, len(row))] = big
        return _csv_join(header, [*rows, row]), {}
    lines = hadoop_lines(data)
    record = json.loads(lines[rng.choice(_object_lines(lines))])
    record["page_url" if source == "clicks" else "name"] = big
    return data + json.dumps(record).encode() + b"\n", {}


def wrong_types(rng: random.Random, data: bytes, fmt: str, source: str) -> tuple[bytes, dict[str, object]]:
    fields = WRONG_TYPE_FIELDS[source]
    if fmt == "csv":
        header, rows = _csv_split(data)
        for row in rng.sample(rows, 2):
            row[header.index(rng.choice(fields))] = rng.choice(WRONG_VALUES)
        return _csv_join(header, rows), {}
    lines = hadoop_lines(data)
    wrong_json: list[object] = ["two", {"a": 1}, [1, 2], True, 12345, "1e999"]
    for index in rng.sample(_object_lines(lines), 2):
        record = json.loads(lines[index])
        record[rng.choice(fields)] = rng.choice(wrong_json)
        if source == "clicks":
            record["utm"] = 7  # a nested field holding a number: flagged, kept
            record["event_id"] = f"{record['event_id']}-typed"  # not a duplicate of the original
        lines[index] = json.dumps(record).encode()
    return b"\n".join(lines) + b"\n", {}


def unbalanced_quote(rng: random.Random, data: bytes, fmt: str) -> tuple[bytes, dict[str, object]]:
    lines = data.split(b"\n")
    index = rng.randrange(1, len(lines) - 1)
    line = lines[index]
    if fmt == "csv":
        commas = [m.start() for m in re.finditer(rb",", line)]
        at = rng.choice(commas) + 1
        lines[index] = line[:at] + b'"' + line[at:].replace(b'"', b"")
    else:
        lines[index] = line.replace(b'",', b",", 1)  # a string that never closes
    return b"\n".join(lines), {"line": index}


def duplicate_header(rng: random.Random, data: bytes, fmt: str) -> tuple[bytes, dict[str, object]]:
    header, rows = _csv_split(data)
    first, second = rng.sample(range(len(header)), 2)
    replaced = header[second]
    header[second] = header[first]
    return _csv_join(header, rows), {"replaced": replaced, "duplicated": header[first]}


def reencode(encoding: str) -> Callable[[random.Random, bytes, str], tuple[bytes, dict[str, object]]]:
    def mutate(rng: random.Random, data: bytes, fmt: str) -> tuple[bytes, dict[str, object]]:
        text = data.decode("utf-8")
        return text.encode(encoding, errors="replace"), {
            "latin1_chars": sum(0x80 <= ord(ch) <= 0xFF for ch in text)
        }

    return mutate


def deep_nesting(rng: random.Random, data: bytes, fmt: str, source: str) -> tuple[bytes, dict[str, object]]:
    lines = hadoop_lines(data)
    record = json.loads(lines[_object_lines(lines)[0]])
    deep = "[" * NESTING_DEPTH + "]" * NESTING_DEPTH
    nested_field = "utm" if source == "clicks" else "attributes"
    if source == "clicks":
        record["event_id"] = f"{record['event_id']}-deep"
    # json.dumps cannot write 10 000 levels (recursion limit): splice the text in.
    text = json.dumps({**record, nested_field: "__DEEP__"}).replace('"__DEEP__"', deep)
    return data + text.encode() + b"\n", {}


def not_objects(rng: random.Random, data: bytes, fmt: str) -> tuple[bytes, dict[str, object]]:
    return data + b'42\n[1, 2]\nnull\n"a string"\ntrue\n{"unclosed": \n', {}


# --- building the hostile landing zone -------------------------------------------------------


def _read_original(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


def build_hostile_landing(landing: Path, seed: int) -> list[Mutant]:
    """Generate 2 days of deliveries, then add one mutated copy per kind of damage."""
    generate_landing(landing, start=START, days=DAYS, scale=0.001, seed=5)
    originals = {source: sorted((landing / source).glob("ingest_date=*/*")) for source in LANDING_SOURCES}
    rng = random.Random(seed)
    mutants: list[Mutant] = []

    def add(kind: str, source: str, content: bytes, ext: str, **expect: object) -> None:
        original = rng.choice(originals[source])
        number = len(mutants) + 1
        path = original.parent / f"fuzz {number:02d} {kind} – ünïcødé façade.{ext}"
        path.write_bytes(content)
        mutants.append(Mutant(kind, source, path, **expect))  # type: ignore[arg-type]

    def pick(sources: tuple[str, ...]) -> tuple[str, bytes]:
        # A file with enough rows that one damaged row stays under the 20 % threshold.
        source = rng.choice(sources)
        candidates = [data for data in map(_read_original, originals[source]) if data.count(b"\n") > MIN_ROWS]
        return source, rng.choice(candidates)

    for kind, mutate in (
        ("truncated", truncate),
        ("flipped bytes", flip_bytes),
        ("unbalanced quote", unbalanced_quote),
    ):
        source, data = pick(CSV_TARGETS)
        content, notes = mutate(rng, data, "csv")
        expect_problems = ("did not parse",) if kind == "unbalanced quote" else ()
        add(kind, source, content, "csv", expect_problems=expect_problems, notes=notes)
        source, data = pick(JSON_TARGETS)
        content, notes = mutate(rng, data, "json")
        add(kind, source, content, "jsonl", expect_problems=expect_problems, notes=notes)

    source, data = pick(CSV_TARGETS)
    add("nul bytes", source, insert_nul(rng, data, "csv")[0], "csv", expect_problems=("NUL",))
    source, data = pick(JSON_TARGETS)
    add("nul bytes", source, insert_nul(rng, data, "json")[0], "jsonl", expect_problems=("NUL",))

    customers = pick(("customers",))[1]
    content, notes = reencode("latin-1")(rng, customers, "csv")
    add(
        "latin-1",
        "customers",
        content,
        "csv",
        expect_problems=("invalid UTF-8",) if notes["latin1_chars"] else (),
        notes=notes,
    )
    source, data = pick(CSV_TARGETS)
    add(
        "utf-16",
        source,
        reencode("utf-16")(rng, data, "csv")[0],
        "csv",
        expect_problems=("lacks contract columns",),
    )
    source, data = pick(CSV_TARGETS)
    content, notes = duplicate_header(rng, data, "csv")
    add(
        "duplicate header",
        source,
        content,
        "csv",
        expect_problems=("lacks contract columns",),
        notes=notes,
    )

    for sources, fmt, ext in ((CSV_TARGETS, "csv", "csv"), (JSON_TARGETS, "json", "jsonl")):
        source, data = pick(sources)
        add("huge line", source, huge_line(rng, data, fmt, source)[0], ext, expect_long_value=True)
        source, data = pick(sources)
        add("wrong types", source, wrong_types(rng, data, fmt, source)[0], ext, expect_quarantined=True)

    source, data = pick(JSON_TARGETS)
    add("deeply nested", source, deep_nesting(rng, data, "json", source)[0], "jsonl")
    source, data = pick(JSON_TARGETS)
    add("not objects", source, not_objects(rng, data, "json")[0], "jsonl", expect_problems=("did not parse",))

    gzipped = [p for p in originals["clicks"] if p.name.endswith(".gz")]
    original = rng.choice(gzipped).read_bytes()
    add("cut gzip", "clicks", original[: len(original) // 2], "jsonl.gz", expect_failed=True)
    return mutants


# --- the run ---------------------------------------------------------------------------------


@dataclass
class HostileRun:
    config: PipelineConfig
    mutants: list[Mutant]
    failures: dict[str, str]
    results: dict[str, JobResult]


@pytest.fixture(scope="module")
def hostile_landing(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Mutant]]:
    """The generated deliveries with the mutated files beside them (pure Python, quick)."""
    landing = tmp_path_factory.mktemp("hostile") / "landing"
    return landing, build_hostile_landing(landing, FUZZ_SEED)


@pytest.fixture(scope="module")
def hostile(
    spark: SparkSession, base_config: PipelineConfig, hostile_landing: tuple[Path, list[Mutant]]
) -> HostileRun:
    """Every bronze and silver job, in process, over the hostile landing zone."""
    landing, mutants = hostile_landing
    config = base_config.with_paths(landing=str(landing), lake=str(landing.parent / "lake"))
    ctx = JobContext(spark=spark, config=config, run_id=new_run_id())
    failures: dict[str, str] = {}
    results: dict[str, JobResult] = {}
    for spec in select_jobs("bronze") + select_jobs("silver"):
        try:
            results[spec.qualified_name] = run_job(spec, ctx)
        except JobFailedError as err:
            failures[spec.qualified_name] = str(err)
    return HostileRun(config, mutants, failures, results)


def landing_files(config: PipelineConfig) -> dict[str, tuple[str, Path]]:
    """Every delivered file, as ``file:<path>`` (how bronze records it) -> (source, path)."""
    return {
        f"file:{path}": (source, path)
        for source in LANDING_SOURCES
        for path in sorted(Path(config.paths.landing, source).glob("ingest_date=*/*"))
    }


def test_no_job_crashes_on_hostile_deliveries(hostile: HostileRun):
    assert hostile.failures == {}, f"fuzz seed {FUZZ_SEED}: {hostile.failures}"


def test_every_delivered_row_is_in_bronze_or_its_file_is_logged_failed(spark, hostile: HostileRun):
    config = hostile.config
    files = landing_files(config)
    log = {
        r["file"]: r
        for r in read_table(spark, table_path(config.paths.lake, "ops", INGEST_LOG_TABLE)).collect()
    }
    in_bronze: dict[str, int] = {}
    for source in LANDING_SOURCES:
        path = table_path(config.paths.lake, "bronze", source)
        if table_exists(spark, path):
            for row in read_table(spark, path).groupBy("_source_file").count().collect():
                in_bronze[row["_source_file"]] = row["count"]

    assert set(log) == set(files), "every delivered file has exactly one row in the file log"
    assert len(log) == read_table(spark, table_path(config.paths.lake, "ops", INGEST_LOG_TABLE)).count()
    for name, (source, path) in files.items():
        entry = log[name]
        if entry["status"] == "failed":
            assert in_bronze.get(name, 0) == 0, name
            assert entry["problems"] and entry["problems"][0].startswith("unreadable"), name
            continue
        expected = expected_rows(path, LANDING_SOURCES[source].file_format)
        assert (in_bronze.get(name, 0), entry["rows"]) == (expected, expected), f"{path.name}: {entry}"


def test_file_log_says_what_was_wrong_with_each_mutated_file(spark, hostile: HostileRun):
    config = hostile.config
    log = {
        r["file"]: r
        for r in read_table(spark, table_path(config.paths.lake, "ops", INGEST_LOG_TABLE)).collect()
    }
    failed = {name for name, r in log.items() if r["status"] == "failed"}
    assert failed == {f"file:{m.path}" for m in hostile.mutants if m.expect_failed}
    for mutant in hostile.mutants:
        entry = log[f"file:{mutant.path}"]
        problems = " | ".join(entry["problems"])
        for expected in mutant.expect_problems:
            assert expected in problems, f"{mutant.kind} ({mutant.source}): {problems!r}"
        if "did not parse" in mutant.expect_problems:
            assert entry["corrupt_rows"] >= 1, mutant
    for name in failed:  # the reason names what is wrong, not Py4J's "error while calling o123.count"
        reason = log[name]["problems"][0]
        assert not re.search(r"An error occurred while calling o\d+", reason), reason
        assert "EOFException" in reason, reason
    # The bronze run records list the failed files, with the files' own paths.
    runs = read_table(spark, table_path(config.paths.lake, "ops", RUNS_TABLE)).where(
        F.col("layer") == "bronze"
    )
    listed = {f for r in runs.collect() for f in json.loads(r["details"]).get("files_failed", [])}
    assert listed == failed


def test_long_values_arrive_whole(spark, hostile: HostileRun):
    config = hostile.config
    for mutant in (m for m in hostile.mutants if m.expect_long_value):
        rows = read_table(spark, table_path(config.paths.lake, "bronze", mutant.source)).where(
            F.col("_source_file") == f"file:{mutant.path}"
        )
        text_columns = [
            F.length(F.coalesce(F.col(c), F.lit(""))) for c in LANDING_SOURCES[mutant.source].fields
        ]
        longest = rows.select(F.greatest(*text_columns).alias("n")).agg(F.max("n")).first()[0]
        assert longest == HUGE_FIELD_CHARS, mutant.kind


def test_silver_accounts_for_every_bronze_row(spark, hostile: HostileRun):
    config = hostile.config
    lake = config.paths.lake

    def count(layer: str, table: str) -> int:
        path = table_path(lake, layer, table)
        return read_table(spark, path).count() if table_exists(spark, path) else 0

    details = {name: result.details for name, result in hostile.results.items()}
    # One silver run over fresh tables: every bronze row was read once.
    for table, source in (
        ("fx_rates", "fx_rates"),
        ("orders", "orders"),
        ("order_items", "order_items"),
        ("customers", "customers"),
        ("products", "catalogue"),
    ):
        d = details[f"silver.{table}"]
        assert d["bronze_rows_read"] == count("bronze", source), table
        assert d["quarantined"] == count("quarantine", table), table
        silver_rows = count("silver", table)
        if table in ("customers", "products"):
            # SCD2: rows are versions; the delisted versions are generated, not read.
            assert silver_rows == d["new_versions"] + d["delisted_versions"], table
            others = d["duplicates_removed"] + d["unchanged"]
        else:
            assert silver_rows == d["written"], table
            others = d["duplicates_removed"] + d.get("superseded", 0)
        assert d["bronze_rows_read"] == d["written"] + d["quarantined"] + others, (table, d)

    clicks = details["silver.clicks"]
    assert clicks["bronze_rows"] == count("bronze", "clicks")
    assert clicks["quarantined"] == count("quarantine", "clicks")
    assert count("silver", "clicks") == clicks["inserted"]
    assert clicks["bronze_rows"] == clicks["inserted"] + clicks["quarantined"] + clicks["duplicates_removed"]


def test_quarantine_says_which_rules_failed_and_which_file_it_came_from(spark, hostile: HostileRun):
    config = hostile.config
    files = set(landing_files(config))
    by_file: dict[str, int] = {}
    for table in ("orders", "order_items", "customers", "products", "clicks", "fx_rates"):
        path = table_path(config.paths.lake, "quarantine", table)
        if not table_exists(spark, path):
            continue
        rows = read_table(spark, path)
        assert rows.where(F.size("_failed_rules") < 1).count() == 0, table
        for row in rows.groupBy("_source_file").count().collect():
            assert row["_source_file"] in files, row
            by_file[row["_source_file"]] = by_file.get(row["_source_file"], 0) + row["count"]
    for mutant in (m for m in hostile.mutants if m.expect_quarantined):
        assert by_file.get(f"file:{mutant.path}", 0) >= 1, f"{mutant.kind} ({mutant.source})"


def test_file_names_hadoop_cannot_parse_do_not_stop_the_other_deliveries(spark, config):
    folder = Path(config.paths.landing) / "orders" / "ingest_date=2026-03-01"
    folder.mkdir(parents=True)
    header = ",".join(LANDING_SOURCES["orders"].fields)
    names = ("orders.csv", "orders 10:00.csv", "orders 100%.csv", "orders #2.csv", "orders?.csv")
    for number, name in enumerate(names):
        (folder / name).write_text(f"{header}\no{number},c1,paid\n", encoding="utf-8")
    ctx = JobContext(spark=spark, config=config, run_id=new_run_id())

    result = run_job(select_jobs("bronze", "orders")[0], ctx)

    log = {
        Path(r["file"].removeprefix("file:")).name: r
        for r in read_table(spark, table_path(config.paths.lake, "ops", INGEST_LOG_TABLE)).collect()
    }
    assert log["orders.csv"]["status"] == "ingested"
    reported = set(log) | {Path(entry.split(": ")[0]).name for entry in result.details["not_deliveries"]}
    assert set(names) <= reported, "every delivered file is ingested, or reported with a reason"
    ingested = [r for r in log.values() if r["status"] == "ingested"]
    assert read_table(spark, table_path(config.paths.lake, "bronze", "orders")).count() == len(ingested)


def test_a_job_failing_in_the_jvm_records_the_java_cause(spark, config, hostile_landing):
    broken = next(m.path for m in hostile_landing[1] if m.expect_failed)

    def read_broken(ctx: JobContext) -> JobResult:
        return JobResult(rows_read=ctx.spark.read.text(str(broken)).count())

    ctx = JobContext(spark=spark, config=config, run_id=new_run_id())
    with pytest.raises(JobFailedError, match=r"^bronze\.broken: Py4JJavaError: java\.io\.EOFException"):
        run_job(JobSpec("bronze", "broken", read_broken, ""), ctx)

    error = read_table(spark, table_path(config.paths.lake, "ops", RUNS_TABLE)).first()["error"]
    assert error.startswith("Py4JJavaError: java.io.EOFException"), error
