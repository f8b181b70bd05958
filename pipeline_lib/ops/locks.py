"""One running instance per job: a lock file in ``<lake>/ops/_locks``.

Starting a job while the same job runs (two cron entries overlapping, a manual run during
the scheduled one) is refused with a message naming the holder. The lock is a small JSON
file naming its holder. On a local file system it appears atomically with its content (a
hard link of a written temporary file, which fails if the lock exists); elsewhere it is
created through Hadoop with "fail if it exists", atomic on HDFS-like file systems, and a
lock file still empty (its holder is writing it) counts as held for ``EMPTY_GRACE``. A lock
left by a process that died (same host, pid gone) or older than ``stale_after`` is taken
over with a warning.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import SparkSession

from pipeline_lib.io.delta import hadoop_file_system, read_text_file

LOCKS_FOLDER = "_locks"
DEFAULT_STALE_AFTER = dt.timedelta(hours=12)
# A lock file without a holder yet is being written; only after this long is it abandoned.
EMPTY_GRACE = dt.timedelta(minutes=1)


class JobLockedError(RuntimeError):
    """The same job is already running."""


@contextmanager
def job_lock(
    spark: SparkSession, lake: str, job: str, run_id: str, *, stale_after: dt.timedelta = DEFAULT_STALE_AFTER
) -> Iterator[None]:
    """Hold the lock of ``job`` for the duration of the block.

    Raises:
        JobLockedError: Another live run holds the lock.
    """
    path, fs = hadoop_file_system(spark, f"{lake.rstrip('/')}/ops/{LOCKS_FOLDER}/{job}.lock")
    holder = {
        "run_id": run_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    if not _try_create(fs, path, holder):
        current = _read(spark, path)
        if not _is_stale(current, stale_after, written_at=_modified_at(fs, path)):
            raise JobLockedError(
                f"{job} is already running (run {current.get('run_id')} on {current.get('host')}, "
                f"pid {current.get('pid')}, since {current.get('started_at')}); "
                f"if that process is gone, delete {path.toString()}"
            )
        print(
            f"warning: taking over the stale lock of {job} from run {current.get('run_id')}", file=sys.stderr
        )
        fs.delete(path, False)
        if not _try_create(fs, path, holder):
            raise JobLockedError(f"{job}: another run took the lock at the same moment")
    try:
        yield
    finally:
        if _read(spark, path).get("run_id") == run_id:
            fs.delete(path, False)


def _try_create(fs: object, path: object, holder: dict[str, object]) -> bool:
    """Create the lock file holding ``holder``; False if it exists already."""
    content = json.dumps(holder).encode()
    if fs.getScheme() == "file":  # type: ignore[attr-defined]
        return _try_create_local(path.toUri().getPath(), content)  # type: ignore[attr-defined]
    try:
        stream = fs.create(path, False)  # type: ignore[attr-defined]
    except Exception as exc:  # FileAlreadyExistsException arrives as a Py4J error
        if "FileAlreadyExists" in str(exc) or "already exists" in str(exc):
            return False
        raise
    try:
        stream.write(bytearray(content))
    finally:
        stream.close()
    return True


def _try_create_local(path: str, content: bytes) -> bool:
    # Hadoop's local create(overwrite=False) checks, then opens: two processes can both pass.
    # A hard link fails if the name exists, and the lock never appears without its content.
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{threading.get_ident()}")
    with open(temporary, "wb") as handle:
        handle.write(content)
    try:
        os.link(temporary, path)
    except FileExistsError:
        return False
    finally:
        os.unlink(temporary)
    return True


def _modified_at(fs: object, path: object) -> dt.datetime | None:
    try:
        millis = fs.getFileStatus(path).getModificationTime()  # type: ignore[attr-defined]
    except Exception:  # released meanwhile
        return None
    return dt.datetime.fromtimestamp(millis / 1000, dt.UTC)


def _read(spark: SparkSession, path: object) -> dict[str, object]:
    text = read_text_file(spark, path.toString())  # type: ignore[attr-defined]
    try:
        return json.loads(text or "{}")
    except json.JSONDecodeError:
        return {}


def _is_stale(
    holder: dict[str, object], stale_after: dt.timedelta, *, written_at: dt.datetime | None
) -> bool:
    if not holder:  # gone, or created and not written yet
        return written_at is None or dt.datetime.now(dt.UTC) - written_at > EMPTY_GRACE
    try:
        started = dt.datetime.fromisoformat(str(holder["started_at"]))
    except (KeyError, ValueError):
        return True
    if dt.datetime.now(dt.UTC) - started > stale_after:
        return True
    if holder.get("host") == socket.gethostname():
        try:
            os.kill(int(str(holder["pid"])), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return False
