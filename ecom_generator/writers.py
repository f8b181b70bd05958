"""Landing-zone writers: deterministic CSV, JSON Lines and gzip files.

Identical inputs give identical bytes: gzip headers carry no file name or time stamp.
"""

from __future__ import annotations

import gzip
import io
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

GZIP_LEVEL = 3


def delivery_dir(landing: Path, source: str, date_text: str) -> Path:
    """``<landing>/<source>/ingest_date=YYYY-MM-DD``, created if missing."""
    folder = landing / source / f"ingest_date={date_text}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_csv(path: Path, table: pa.Table) -> int:
    """Write a CSV file with a header row (strings ``"``-quoted, nulls empty).

    Returns:
        Data rows written.
    """
    pcsv.write_csv(table, str(path), write_options=pcsv.WriteOptions(include_header=True))
    return table.num_rows


def line_bytes(lines: pa.Array) -> memoryview:
    """The bytes of string rows each followed by ``\\n``, without a Python loop per row."""
    if len(lines) == 0:
        return memoryview(b"")
    newline = pa.scalar("\n", pa.large_string())
    joined = pc.binary_join_element_wise(
        lines.cast(pa.large_string()), newline, pa.scalar("", pa.large_string())
    )
    joined = joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int64)[
        joined.offset : joined.offset + len(joined) + 1
    ]
    data = joined.buffers()[2]
    return memoryview(data)[int(offsets[0]) : int(offsets[-1])]


class JsonLinesWriter:
    """Append JSON Lines chunks to one file, gzip-compressed or plain.

    Compression and disk writes run on one background thread (zlib releases the GIL), so the
    next chunk is rendered while the previous one is compressed; chunks keep their order.
    """

    def __init__(self, path: Path, *, compress: bool) -> None:
        self.path = path
        self.rows = 0
        self._raw = path.open("wb")
        self._stream: io.BufferedIOBase | gzip.GzipFile = (
            gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, compresslevel=GZIP_LEVEL, mtime=0)
            if compress
            else self._raw
        )
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jsonl-writer")
        self._pending: Future[None] | None = None

    def _write_now(self, lines: pa.Array) -> None:
        self._stream.write(line_bytes(lines))

    def write(self, lines: pa.Array) -> None:
        """Append rows (JSON objects without newline); returns once the previous chunk is written."""
        if self._pending is not None:
            self._pending.result()
        self._pending = self._worker.submit(self._write_now, lines)
        self.rows += len(lines)

    def close(self) -> None:
        """Finish pending writes, flush and close the file."""
        try:
            if self._pending is not None:
                self._pending.result()
        finally:
            self._worker.shutdown(wait=True)
            if self._stream is not self._raw:
                self._stream.close()
            self._raw.close()

    def __enter__(self) -> JsonLinesWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def write_empty(path: Path) -> None:
    """Write a 0-byte file."""
    path.write_bytes(b"")
