"""Cheap facts about the lake and the landing zone, read without starting Spark.

The runner decides whether a job has anything to do before it starts a JVM: the Delta
version of each input table (the names of the commit files in ``_delta_log``), the files
delivered for a landing source, and the job's state from its last success. Those are file
listings and small JSON files, read here with ``pyarrow.fs`` (local folders, S3, GCS, HDFS,
Azure). A root this module cannot open (an ``abfss://`` URI on a pyarrow without Azure, say)
gives ``None``: the runner then runs the job, which finds out with Spark.

Writes here are the runner's state files only (``<lake>/ops/_state/<job>.json``); every
table is written through :mod:`pipeline_lib.io.delta`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

STATE_FOLDER = "_state"
_COMMIT = re.compile(r"^(\d{20})\.json$")
_CHECKPOINT = re.compile(r"^(\d{20})\.checkpoint(\.\d+\.\d+)?\.parquet$")
_DELIVERY = re.compile(r"^ingest_date=(\d{4}-\d{2}-\d{2})$")
# pyarrow names object-store schemes as their SDKs do; Hadoop's connectors use other names.
_SCHEMES = {"s3a": "s3", "s3n": "s3", "gcs": "gs"}


class UnreadableRootError(RuntimeError):
    """A root that pyarrow cannot open here (an unsupported scheme, missing credentials)."""


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    scheme, sep, rest = uri.partition("://")
    if sep and scheme in _SCHEMES:
        uri = f"{_SCHEMES[scheme]}://{rest}"
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, ValueError, OSError) as err:
        raise UnreadableRootError(f"{uri}: {err}") from err


def _entries(uri: str) -> list[pafs.FileInfo] | None:
    """The entries of a folder (not recursive); None when it does not exist."""
    filesystem, path = _filesystem(uri)
    try:
        return filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=False, recursive=False))
    except FileNotFoundError:
        return None


def delta_version(table: str) -> int | None:
    """The table's latest committed version (the highest ``<version>.json`` or checkpoint in
    ``_delta_log``), or None when there is no table. Same answer as
    :func:`pipeline_lib.io.delta.table_version`, without a JVM."""
    entries = _entries(f"{table.rstrip('/')}/_delta_log")
    if entries is None:
        return None
    versions = [
        int(m.group(1))
        for e in entries
        if (m := _COMMIT.match(e.base_name) or _CHECKPOINT.match(e.base_name))
    ]
    return max(versions) if versions else None


def landing_digest(landing: str, source: str, as_of: dt.date | None) -> str | None:
    """A digest of the files delivered for ``source`` up to ``as_of`` (all when None).

    Each delivery folder's files, with their sizes and modification times, in a stable
    order. Deliveries are written once (the contract), so a new digest means a new file.
    None when nothing is delivered (no folder, or none up to ``as_of``).
    """
    folders = _entries(f"{landing.rstrip('/')}/{source}")
    if not folders:
        return None
    seen = []
    for folder in sorted(folders, key=lambda e: e.base_name):
        match = _DELIVERY.match(folder.base_name)
        if folder.type != pafs.FileType.Directory or not match:
            continue
        if as_of is not None and match.group(1) > as_of.isoformat():
            continue
        for entry in sorted(_entries(folder.path) or [], key=lambda e: e.base_name):
            if entry.type == pafs.FileType.File and not entry.base_name.startswith((".", "_")):
                seen.append(f"{folder.base_name}/{entry.base_name}\t{entry.size}\t{entry.mtime_ns}")
    if not seen:
        return None
    return hashlib.sha256("\n".join(seen).encode()).hexdigest()


def state_path(lake: str, job: str) -> str:
    """``<lake>/ops/_state/<job>.json``."""
    return f"{lake.rstrip('/')}/ops/{STATE_FOLDER}/{job}.json"


def read_state(lake: str, job: str) -> dict[str, Any] | None:
    """The job's state from its last success, or None (never ran, unreadable, or corrupt)."""
    try:
        filesystem, path = _filesystem(state_path(lake, job))
        with filesystem.open_input_stream(path) as stream:
            state = json.loads(stream.read().decode("utf-8"))
    except (FileNotFoundError, UnreadableRootError, ValueError, OSError):
        return None
    return state if isinstance(state, dict) else None


def write_state(lake: str, job: str, state: Mapping[str, Any]) -> None:
    """Write the job's state whole: a temporary file renamed over the old one (atomic on a
    local disk; object stores replace an object whole)."""
    filesystem, path = _filesystem(state_path(lake, job))
    folder = path.rsplit("/", 1)[0]
    filesystem.create_dir(folder, recursive=True)
    temporary = f"{folder}/.{uuid.uuid4().hex}.tmp"
    with filesystem.open_output_stream(temporary) as stream:
        stream.write(json.dumps(dict(state), sort_keys=True, default=str).encode("utf-8"))
    filesystem.move(temporary, path)
