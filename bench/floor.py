"""The floor: read every landing file once and write it as plain Parquet, nothing else.

Two engines, two definitions, both reported by the benchmark:

* **Spark floor** (the one the targets use): a fresh ``python -m bench.floor spark``
  process with the pipeline's own Spark settings (``conf/``), so it pays one JVM and
  session start like a pipeline layer does. Each source is read with its contract fields
  as strings, CSV with its header and JSON Lines parsed with the contract schema
  (``pipeline_lib.bronze.schemas.LANDING_SOURCES``), permissive (a malformed line becomes nulls),
  and written as one plain Parquet folder per source. No validation, no dedup, no Delta.
* **pyarrow floor** (an engine-free lower bound): in the benchmark's own process, each
  file on its own: CSV parsed into text columns, JSON Lines kept as raw text lines (the
  pyarrow JSON reader stops at the first malformed line, and the landing zone has some),
  one Parquet file per landing file.

    python -m bench.floor spark --landing /tmp/ecom-bench/0.1/landing --out /tmp/x --set spark.master=local[2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline_lib.bronze.schemas import LANDING_SOURCES

# A byte that never occurs in the generator's JSON Lines: each line is one field.
_NO_DELIMITER = "\x1e"


@dataclass
class FloorResult:
    """What a floor run did."""

    engine: str
    seconds: float
    files: int
    empty_files: int
    rows: int
    input_bytes: int
    output_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def landing_files(landing: Path) -> dict[str, list[Path]]:
    """Every delivery file per source: ``<landing>/<source>/ingest_date=*/<file>``, sorted."""
    files: dict[str, list[Path]] = {}
    for source in LANDING_SOURCES:
        found = sorted(p for p in (landing / source).glob("ingest_date=*/*") if p.is_file())
        if found:
            files[source] = found
    return files


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _read_csv_as_text(path: Path) -> pa.Table:
    with open(path, "rb") as handle:
        header = handle.readline().decode("utf-8", errors="replace").strip()
    names = [name.strip('"') for name in header.split(",")]
    return pacsv.read_csv(
        path,
        parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=lambda _row: "skip"),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()), check_utf8=False, strings_can_be_null=True
        ),
    )


def _read_lines(path: Path) -> pa.Table:
    return pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(column_names=["line"]),
        parse_options=pacsv.ParseOptions(delimiter=_NO_DELIMITER, quote_char=False, escape_char=False),
        convert_options=pacsv.ConvertOptions(column_types={"line": pa.binary()}),
    )


def pyarrow_floor(landing: Path, out: Path) -> FloorResult:
    """Read every landing file once with pyarrow and write it as one Parquet file.

    Args:
        landing: The landing-zone root.
        out: Output folder (replaced).
    """
    shutil.rmtree(out, ignore_errors=True)
    files = landing_files(landing)
    started = time.monotonic()
    count = empty = rows = input_bytes = 0
    for source, paths in files.items():
        file_format = LANDING_SOURCES[source].file_format
        for path in paths:
            count += 1
            size = path.stat().st_size
            input_bytes += size
            if size == 0:
                empty += 1
                continue
            table = _read_csv_as_text(path) if file_format == "csv" else _read_lines(path)
            target = out / source / path.parent.name / f"{path.name.split('.')[0]}.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, target)
            rows += table.num_rows
    seconds = time.monotonic() - started
    return FloorResult("pyarrow", seconds, count, empty, rows, input_bytes, _folder_bytes(out))


def spark_floor_in_session(landing: Path, out: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """Run the Spark floor in this process: build the session, then read and write each source.

    Returns:
        ``{"session_s": seconds to build the session, "work_s": seconds to read and write, ...}``.
    """
    from pipeline_lib.config import load_config
    from pipeline_lib.session import build_spark_session

    clock = time.monotonic()
    config = load_config(None, overrides=overrides)
    spark = build_spark_session(config.spark, app_name="ecom-bench-floor")
    session_s = time.monotonic() - clock
    shutil.rmtree(out, ignore_errors=True)
    files = landing_files(landing)
    clock = time.monotonic()
    for source, paths in files.items():
        spec = LANDING_SOURCES[source]
        names = [str(p) for p in paths if p.stat().st_size > 0]
        reader = spark.read.schema(spec.delivered_schema).option("mode", "PERMISSIVE")
        frame = reader.option("header", True).csv(names) if spec.file_format == "csv" else reader.json(names)
        frame.write.mode("overwrite").parquet(str(out / source))
    work_s = time.monotonic() - clock
    spark.stop()
    return {
        "session_s": round(session_s, 3),
        "work_s": round(work_s, 3),
        "files": sum(len(p) for p in files.values()),
        "output_bytes": _folder_bytes(out),
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.floor spark --landing DIR --out DIR [--set key=value ...]``."""
    from pipeline_lib.config import parse_assignment

    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.splitlines()[0])
    parser.add_argument("engine", choices=["spark", "pyarrow"])
    parser.add_argument("--landing", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args(argv)
    if args.engine == "pyarrow":
        print(json.dumps(pyarrow_floor(args.landing, args.out).as_dict()))
        return 0
    overrides = dict(parse_assignment(item) for item in args.set)
    print(json.dumps(spark_floor_in_session(args.landing, args.out, overrides)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
