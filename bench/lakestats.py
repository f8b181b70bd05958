"""What a run left in the lake, read without Spark: Delta commits and files, and run records.

* :func:`scan_delta_logs` reads every commit file (``_delta_log/<version>.json``) of every
  Delta table under the lake, with the commit's time (``commitInfo``);
  :func:`commits_between` picks the commits a process made (by time), :func:`by_area` sums
  them per lake area and :func:`attribute_commits` per pipeline job (the job whose run
  record's start and end hold the commit's time).
* :func:`read_run_records` reads ``<lake>/ops/pipeline_runs`` through the ``deltalake``
  package (one row per job run, see ``pipeline_lib.ops.runs``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline_lib.ops.watermarks import STATE_KEY

DELTA_LOG = "_delta_log"


@dataclass(frozen=True)
class CommitStats:
    """The actions of one Delta commit, and when it was made.

    ``timestamp_ms`` is the commit's ``commitInfo`` time (``inCommitTimestamp`` when the
    table has in-commit timestamps, else ``timestamp``: the writer's clock, milliseconds
    since the epoch), or the commit file's modification time when it has no commitInfo.
    """

    adds: int
    add_bytes: int
    removes: int
    timestamp_ms: int = 0
    operation: str = ""
    consumer: str = ""  # the job named in the commit's userMetadata (watermarks.STATE_KEY), else ""


@dataclass(frozen=True)
class Commit:
    """One commit of one table (``table`` relative to the lake, e.g. ``silver/orders``)."""

    table: str
    version: int
    stats: CommitStats

    @property
    def area(self) -> str:
        """``bronze``, ``silver``, ``gold``, ``quarantine`` or ``ops``."""
        return self.table.split("/", 1)[0]


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


def commit_stats(path: Path) -> CommitStats:
    adds = add_bytes = removes = 0
    timestamp_ms: int | None = None
    operation = consumer = ""
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
            elif "commitInfo" in action:
                info = action["commitInfo"]
                moment = info.get("inCommitTimestamp", info.get("timestamp"))
                timestamp_ms = int(moment) if moment is not None else None
                operation = str(info.get("operation", ""))
                consumer = _consumer(info.get("userMetadata"))
    if timestamp_ms is None:
        timestamp_ms = path.stat().st_mtime_ns // 1_000_000
    return CommitStats(adds, add_bytes, removes, timestamp_ms, operation, consumer)


def _consumer(user_metadata: object) -> str:
    """The job a commit's ``userMetadata`` names as the consumer of its inputs, else ""."""
    if not isinstance(user_metadata, str):
        return ""
    try:
        consumed = json.loads(user_metadata).get(STATE_KEY) or {}
    except (ValueError, AttributeError):
        return ""
    return str(consumed.get("consumer", "")) if isinstance(consumed, dict) else ""


def scan_delta_logs(lake: Path) -> dict[str, dict[int, CommitStats]]:
    """Per table (path relative to the lake, e.g. ``silver/orders``), the stats of every commit
    whose commit file is still there (log cleanup removes old ones after a checkpoint)."""
    scan: dict[str, dict[int, CommitStats]] = {}
    for table in find_delta_tables(lake):
        commits: dict[int, CommitStats] = {}
        for entry in (table / DELTA_LOG).iterdir():
            stem, _, suffix = entry.name.partition(".")
            if suffix == "json" and stem.isdigit():
                commits[int(stem)] = commit_stats(entry)
        scan[table.relative_to(lake).as_posix()] = commits
    return scan


def commits_between(scan: dict[str, dict[int, CommitStats]], start_ms: int, end_ms: int) -> list[Commit]:
    """The commits of every table made from ``start_ms`` to ``end_ms`` (inclusive), oldest first."""
    found = [
        Commit(table, version, stats)
        for table, commits in scan.items()
        for version, stats in commits.items()
        if start_ms <= stats.timestamp_ms <= end_ms
    ]
    return sorted(found, key=lambda commit: (commit.stats.timestamp_ms, commit.table, commit.version))


def _add(target: WriteStats, commits: list[Commit]) -> None:
    target.commits += len(commits)
    target.data_files_added += sum(c.stats.adds for c in commits)
    target.bytes_added += sum(c.stats.add_bytes for c in commits)
    target.data_files_removed += sum(c.stats.removes for c in commits)
    target.tables_changed += len({c.table for c in commits})


def by_area(commits: Sequence[Commit]) -> dict[str, WriteStats]:
    """Per lake area (``bronze``, ``silver``, ``gold``, ``quarantine``, ``ops``), what ``commits``
    wrote; ``total`` adds them up."""
    areas: dict[str, list[Commit]] = {}
    for commit in commits:
        areas.setdefault(commit.area, []).append(commit)
    result: dict[str, WriteStats] = {}
    for area in sorted(areas):
        result[area] = WriteStats()
        _add(result[area], areas[area])
    total = WriteStats()
    _add(total, list(commits))
    return {**result, "total": total}


OUTSIDE_JOBS = "(outside jobs)"


def attribute_commits(
    commits: Sequence[Commit], windows: Sequence[tuple[str, int, int]]
) -> dict[str, WriteStats]:
    """Per pipeline job, its commits: those whose ``userMetadata`` names it as the consumer
    (a data commit with what it consumed), and the other commits made within its run:
    ``windows`` are ``(job, start_ms, end_ms)`` from the run records. Commits outside every
    window (a job's run record is appended just after its ``ended_at``) are under
    :data:`OUTSIDE_JOBS`."""
    grouped: dict[str, list[Commit]] = {}
    jobs = {job for job, _start, _end in windows}
    for commit in commits:
        moment = commit.stats.timestamp_ms
        named = commit.stats.consumer if commit.stats.consumer in jobs else ""
        owner = named or next((job for job, start, end in windows if start <= moment <= end), OUTSIDE_JOBS)
        grouped.setdefault(owner, []).append(commit)
    result: dict[str, WriteStats] = {}
    for owner, owned in grouped.items():
        result[owner] = WriteStats()
        _add(result[owner], owned)
    return result


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
