"""The same delivered rows in fewer, larger deliveries: the backfill layouts of the benchmark.

The benchmark's backfill measure ingests one landing zone of daily deliveries (one
``ingest_date=`` folder per source and day, as the generator writes them) and the same rows
regrouped into one folder per block of consecutive days. :func:`regroup_deliveries` builds
the second from the first:

* CSV: one header, then the rows of each file of the block (files whose header differs, such
  as a delivery with an extra column, go to a second file of the same folder, so every row
  keeps its own header);
* JSON Lines: the files concatenated; gzip files are decompressed and the block written
  compressed (with Python's ``gzip``) when any of its files was;
* empty files add nothing.

Blocks are calendar days counted from the first delivery of any source, the same for every
source; a block's folder is named after its first day, its files
``<source>_<yyyymmdd>[_<n>].<ext>``.
"""

from __future__ import annotations

import datetime as dt
import gzip
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

DELIVERY_PREFIX = "ingest_date="
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class Layout:
    """A landing zone's shape: delivery folders per source, files and bytes in all."""

    folders_per_source: dict[str, int]
    files: int
    bytes: int

    def as_dict(self) -> dict[str, object]:
        return {"folders_per_source": self.folders_per_source, "files": self.files, "bytes": self.bytes}


def describe(landing: Path) -> Layout:
    """Count the delivery folders of each source, and the files and bytes of the landing zone."""
    folders = {
        source.name: sum(1 for d in source.iterdir() if d.is_dir() and d.name.startswith(DELIVERY_PREFIX))
        for source in sorted(landing.iterdir())
        if source.is_dir()
    }
    files = [p for p in landing.rglob("*") if p.is_file()]
    return Layout(folders, len(files), sum(p.stat().st_size for p in files))


def _delivery_date(folder: Path) -> dt.date:
    return dt.date.fromisoformat(folder.name.removeprefix(DELIVERY_PREFIX))


def _blocks(
    folders: Sequence[Path], first_day: dt.date, days_per_block: int
) -> Iterator[tuple[dt.date, list[Path]]]:
    """The delivery folders by block of ``days_per_block`` calendar days from ``first_day``, with
    each block's first day (the same blocks for every source, whatever days it skipped)."""
    blocks: dict[int, list[Path]] = {}
    for folder in folders:
        blocks.setdefault((_delivery_date(folder) - first_day).days // days_per_block, []).append(folder)
    for index, block in sorted(blocks.items()):
        yield first_day + dt.timedelta(days=index * days_per_block), block


def _open(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _copy_rest(source: BinaryIO, sink: BinaryIO) -> bool:
    """Copy ``source`` to ``sink``; True when the bytes copied ended without a newline."""
    last = b""
    while chunk := source.read(_COPY_CHUNK):
        sink.write(chunk)
        last = chunk[-1:]
    return last not in (b"", b"\n")


def _csv_block(files: Sequence[Path], folder: Path, stem: str) -> list[Path]:
    """One CSV file per distinct header; returns the files written."""
    by_header: dict[bytes, list[Path]] = {}
    for path in files:
        with _open(path) as handle:
            header = handle.readline()
        if header:
            by_header.setdefault(header.rstrip(b"\r\n"), []).append(path)
    written = []
    for index, (header, paths) in enumerate(by_header.items()):
        target = folder / (f"{stem}.csv" if index == 0 else f"{stem}_{index + 1}.csv")
        with open(target, "wb") as sink:
            sink.write(header + b"\n")
            for path in paths:
                with _open(path) as handle:
                    handle.readline()
                    if _copy_rest(handle, sink):
                        sink.write(b"\n")
        written.append(target)
    return written


def _jsonl_block(files: Sequence[Path], folder: Path, stem: str) -> list[Path]:
    """One JSON Lines file, gzip-compressed when any file of the block was."""
    compress = any(path.name.endswith(".gz") for path in files)
    target = folder / (f"{stem}.jsonl.gz" if compress else f"{stem}.jsonl")
    with open(target, "wb") as raw:
        sink: BinaryIO = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if compress else raw
        try:
            for path in files:
                with _open(path) as handle:
                    if _copy_rest(handle, sink):
                        sink.write(b"\n")
        finally:
            if sink is not raw:
                sink.close()
    return [target]


def regroup_deliveries(daily: Path, out: Path, *, days_per_block: int) -> Layout:
    """Write ``daily``'s deliveries into ``out``, one delivery folder per ``days_per_block`` days.

    Args:
        daily: A landing zone of ``<source>/ingest_date=YYYY-MM-DD/<files>``.
        out: The landing zone to write (replaced).
        days_per_block: Consecutive calendar days per folder of ``out``.

    Returns:
        The layout written.

    Raises:
        ValueError: ``days_per_block`` < 1, or a file that is neither CSV nor JSON Lines.
    """
    if days_per_block < 1:
        raise ValueError(f"days_per_block must be >= 1, got {days_per_block}")
    if out.exists():
        shutil.rmtree(out)
    deliveries = {
        source.name: sorted(
            (d for d in source.iterdir() if d.is_dir() and d.name.startswith(DELIVERY_PREFIX)),
            key=_delivery_date,
        )
        for source in sorted(p for p in daily.iterdir() if p.is_dir())
    }
    first_day = min((_delivery_date(f[0]) for f in deliveries.values() if f), default=None)
    out.mkdir(parents=True)
    if first_day is None:
        return describe(out)
    for source, folders in deliveries.items():
        for day, block in _blocks(folders, first_day, days_per_block):
            folder = out / source / f"{DELIVERY_PREFIX}{day.isoformat()}"
            folder.mkdir(parents=True)
            stem = f"{source}_{day:%Y%m%d}"
            files = [f for d in block for f in sorted(d.iterdir()) if f.is_file() and f.stat().st_size > 0]
            kinds = {_kind(f) for f in files}
            if kinds - {"csv", "jsonl"}:
                raise ValueError(f"{source}: cannot regroup files other than CSV and JSON Lines: {files}")
            _csv_block([f for f in files if _kind(f) == "csv"], folder, stem)
            if any(_kind(f) == "jsonl" for f in files):
                _jsonl_block([f for f in files if _kind(f) == "jsonl"], folder, stem)
    return describe(out)


def _kind(path: Path) -> str:
    name = path.name.removesuffix(".gz")
    return name.rsplit(".", 1)[-1] if "." in name else ""
