"""What a run left in the lake, read without Spark: Delta commits and files, and run records.

* :func:`scan_delta_logs` reads every commit file (``_delta_log/<version>.json``) of every
  Delta table under the lake; :func:`files_written` diffs two scans, so the benchmark can say
  how many data files (``add`` actions), bytes and commits each layer wrote.
* :func:`read_run_records` reads ``<lake>/ops/pipeline_runs`` through the ``deltalake``
  package (one row per job run, see ``pipeline_lib.runs``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DELTA_LOG = "_delta_log"


@dataclass(frozen=True)
class CommitStats:
    """The actions of one Delta commit."""

    adds: int
    add_bytes: int
    removes: int


@dataclass
class WriteStats:
    """Commits and files written to a set of tables between two scans."""

    commits: int = 0
    data_files_added: int = 0
    bytes_added: int = 0
    data_files_removed: int = 0
    tables_changed: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def find_delta_tables(lake: Path) -> list[Path]:
    """Every folder under ``lake`` holding a ``_delta_log`` (not descending into tables)."""
    tables: list[Path] = []
    if not lake.is_dir():
        return tables
    for root, dirs, _files in os.walk(lake):
        if DELTA_LOG in dirs:
            tables.append(Path(root))
            dirs[:] = []  # a table's partition folders hold no tables
        else:
            dirs.sort()
    return sorted(tables)


def _commit_stats(path: Path) -> CommitStats:
    adds = add_bytes = removes = 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            action = json.loads(line)
            if "add" in action:
                adds += 1
                add_bytes += int(action["add"].get("size", 0))
            elif "remove" in action:
                removes += 1
    return CommitStats(adds, add_bytes, removes)


def scan_delta_logs(lake: Path) -> dict[str, dict[int, CommitStats]]:
    """Per table (path relative to the lake, e.g. ``silver/orders``), the stats of every commit."""
    scan: dict[str, dict[int, CommitStats]] = {}
    for table in find_delta_tables(lake):
        commits: dict[int, CommitStats] = {}
        for entry in (table / DELTA_LOG).iterdir():
            stem, _, suffix = entry.name.partition(".")
            if suffix == "json" and stem.isdigit():
                commits[int(stem)] = _commit_stats(entry)
        scan[table.relative_to(lake).as_posix()] = commits
    return scan


def files_written(
    before: dict[str, dict[int, CommitStats]], after: dict[str, dict[int, CommitStats]]
) -> dict[str, WriteStats]:
    """Per lake area (``bronze``, ``silver``, ``gold``, ``quarantine``, ``ops``), what was committed
    between two scans; ``total`` adds them up."""
    areas: dict[str, WriteStats] = {}
    total = WriteStats()
    for table, commits in after.items():
        new = [stats for version, stats in commits.items() if version not in before.get(table, {})]
        if not new:
            continue
        area = areas.setdefault(table.split("/", 1)[0], WriteStats())
        for target in (area, total):
            target.commits += len(new)
            target.data_files_added += sum(s.adds for s in new)
            target.bytes_added += sum(s.add_bytes for s in new)
            target.data_files_removed += sum(s.removes for s in new)
            target.tables_changed += 1
    return {**dict(sorted(areas.items())), "total": total}


def lake_footprint(lake: Path) -> dict[str, int]:
    """Files and bytes on disk under the lake: data files, and Delta log files (commits, checkpoints)."""
    data_files = data_bytes = log_files = log_bytes = 0
    for root, _dirs, files in os.walk(lake):
        in_log = DELTA_LOG in Path(root).parts
        for name in files:
            if name.endswith(".crc"):
                continue
            size = (Path(root) / name).stat().st_size
            if in_log:
                log_files += 1
                log_bytes += size
            elif name.endswith(".parquet"):
                data_files += 1
                data_bytes += size
    return {
        "data_files": data_files,
        "data_bytes": data_bytes,
        "log_files": log_files,
        "log_bytes": log_bytes,
    }


def read_run_records(lake: Path, run_ids: set[str] | None = None) -> list[dict[str, Any]]:
    """The rows of ``<lake>/ops/pipeline_runs`` (optionally only some runs), oldest first.

    Each row gets ``seconds`` (``ended_at - started_at``).
    """
    from deltalake import DeltaTable

    path = lake / "ops" / "pipeline_runs"
    if not (path / DELTA_LOG).is_dir():
        return []
    columns = ["run_id", "job", "layer", "started_at", "ended_at", "status", "rows_read", "rows_written"]
    columns += ["rows_quarantined", "details"]
    rows = DeltaTable(str(path)).to_pyarrow_table(columns=columns).to_pylist()
    if run_ids is not None:
        rows = [row for row in rows if row["run_id"] in run_ids]
    for row in rows:
        row["seconds"] = (row["ended_at"] - row["started_at"]).total_seconds()
        row["details"] = json.loads(row["details"]) if row["details"] else {}
    return sorted(rows, key=lambda row: row["started_at"])
