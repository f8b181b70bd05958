"""Hostile deliveries and the one command-line run over them, shared by the tests that read it.

:func:`build_hostile_landing` writes a small generated landing zone (2 days, scale 0.001)
with, beside its valid files, one mutated copy per kind of damage a real feed delivers
(seeded: ``ECOM_FUZZ_SEED`` picks another seed, to explore; the default keeps CI
reproducible). :func:`run_over_hostile_landing` adds a customers file with a malformed row
and runs ``ecom-pipeline run --layer all`` then ``status`` over it, as a subprocess, with a
distinctive ``ECOM_HMAC_KEY``, in an empty working directory and with ``HOME`` an empty
folder. The session builds it once (``tests/conftest.py`` ``hostile_build``);
``test_hostile_input.py`` checks that nothing crashed and every row is accounted for,
``test_privacy_and_paths.py`` that nothing personal or secret leaked and nothing was written
outside the lake.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import io
import json
import os
import random
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ecom_generator import generate_landing
from pipeline_lib.bronze.schemas import LANDING_SOURCES
from tests.support import REPO, cli_environment, run_cli

HMAC_KEY = "Kx9-distinctive-hmac-key-7f3a1c"
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


# --- the command-line run ----------------------------------------------------------------


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def _add_customer_file_with_a_malformed_row(landing: Path) -> None:
    original = sorted(landing.glob("customers/ingest_date=*/customers_*.csv"))[0]
    lines = original.read_text(encoding="utf-8").splitlines()
    # An unbalanced quote: the row (with its e-mail and name) is kept whole in _corrupt_record.
    lines[2] = lines[2].replace('","', '",""', 1)
    (original.parent / "customers résumé copy.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class HostileBuild:
    """The hostile landing zone, the lake one command-line run built from it, and what it printed."""

    root: Path  # holds exactly cwd, home, lake and landing
    landing: Path
    lake: Path
    cwd: Path
    home: Path
    landing_before: dict[str, str]  # relative path -> SHA-256, before the run
    mutants: list[Mutant]
    returncodes: dict[str, int]  # "run" and "status"
    outputs: dict[str, str]  # stdout + stderr of each command

    @property
    def output(self) -> str:
        return "\n".join(self.outputs.values())


def _conf_with_campaigns_started(conf: Path, start: dt.date) -> Path:
    """A copy of ``conf/`` whose campaigns start on ``start``, so that two days of deliveries
    give every gold table rows (the checked-in campaigns start after them)."""
    shutil.copytree(REPO / "conf", conf)
    path = conf / "campaigns.yaml"
    campaigns = yaml.safe_load(path.read_text())
    for definition in campaigns["campaigns"]["definitions"]:
        definition["start_date"] = start
    path.write_text(yaml.safe_dump(campaigns, sort_keys=False))
    return conf


def run_over_hostile_landing(root: Path) -> HostileBuild:
    """Write the hostile landing zone under ``root``, then run every layer and ``status`` over it."""
    landing, lake, cwd, home = root / "landing", root / "lake", root / "cwd", root / "home"
    for folder in (cwd, home):
        folder.mkdir(parents=True)
    mutants = build_hostile_landing(landing, FUZZ_SEED)
    _add_customer_file_with_a_malformed_row(landing)
    landing_before = snapshot(landing)
    conf = _conf_with_campaigns_started(root / "conf", START)
    env = cli_environment(ECOM_HMAC_KEY=HMAC_KEY, HOME=str(home), ECOM_CONF_DIR=str(conf))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    returncodes, outputs = {}, {}
    for name, args in (
        ("run", ("run", "--layer", "all", "--landing", str(landing), "--lake", str(lake))),
        ("status", ("status", "--landing", str(landing), "--lake", str(lake))),
    ):
        done = run_cli(*args, env=env, cwd=cwd, check=False)
        returncodes[name], outputs[name] = done.returncode, done.stdout + done.stderr
    return HostileBuild(root, landing, lake, cwd, home, landing_before, mutants, returncodes, outputs)
