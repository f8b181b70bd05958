"""One running instance per job: a lock file in ``<lake>/ops/_locks``.

Starting a job while the same job runs (two cron entries overlapping, a manual run during
the scheduled one) is refused with a message naming the holder. The lock is a small file
created with "fail if it exists", which is atomic on local and HDFS-like file systems. A
lock left by a process that died (same host, pid gone) or older than ``stale_after`` is
taken over with a warning.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import SparkSession

LOCKS_FOLDER = "_locks"
DEFAULT_STALE_AFTER = dt.timedelta(hours=12)


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
    jvm = spark.sparkContext._jvm  # Hadoop's FileSystem has no Python API
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    path = jvm.org.apache.hadoop.fs.Path(f"{lake.rstrip('/')}/ops/{LOCKS_FOLDER}/{job}.lock")
    fs = path.getFileSystem(hadoop_conf)
    holder = {
        "run_id": run_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    if not _try_create(fs, path, holder):
        current = _read(jvm, fs, path)
        if not _is_stale(current, stale_after):
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
        if _read(jvm, fs, path).get("run_id") == run_id:
            fs.delete(path, False)


def _try_create(fs: object, path: object, holder: dict[str, object]) -> bool:
    try:
        stream = fs.create(path, False)  # type: ignore[attr-defined]
    except Exception as exc:  # FileAlreadyExistsException arrives as a Py4J error
        if "FileAlreadyExists" in str(exc) or "already exists" in str(exc):
            return False
        raise
    try:
        stream.write(bytearray(json.dumps(holder).encode()))
    finally:
        stream.close()
    return True


def _read(jvm: object, fs: object, path: object) -> dict[str, object]:
    try:
        stream = fs.open(path)  # type: ignore[attr-defined]
    except Exception:  # released meanwhile
        return {}
    try:
        text = str(jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))  # type: ignore[attr-defined]
    finally:
        stream.close()
    try:
        return json.loads(text or "{}")
    except json.JSONDecodeError:
        return {}


def _is_stale(holder: dict[str, object], stale_after: dt.timedelta) -> bool:
    if not holder:
        return True
    try:
        started = dt.datetime.fromisoformat(str(holder["started_at"]))
    except (KeyError, ValueError):
        return True
    if dt.datetime.now(dt.UTC) - started > stale_after:
        return True
    if holder.get("host") == socket.gethostname():
        try:
            os.kill(int(holder["pid"]), 0)  # type: ignore[arg-type]
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return False
