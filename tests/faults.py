"""Fault injection for the crash-safety tests: run the pipeline and kill it at a named point.

Test-only: production code has no crash hook. ``python -m tests.faults <ecom-pipeline
arguments>`` is the CLI with crash points wrapped around the I/O functions where a crash is
most likely to lose or double data (:func:`install`): just before and just after every Delta
commit (:func:`pipeline_lib.io.delta.write_table` and :func:`pipeline_lib.io.delta.merge`,
through which every data commit goes), around each watermark save and run record, and
between a bronze append and its file-log entry. When the environment variable
``ECOM_CRASH_AT`` names the point, the process is killed with ``SIGKILL``, as a power cut
or the kernel's OOM killer would: no ``finally`` block, no ``atexit`` hook, no Spark
shutdown, nothing flushed. The Spark driver's JVM is killed first, so it cannot finish
anything on its own either.

``ECOM_CRASH_AT=<point>[:<n>]``:

- ``<point>`` is a dotted name, matched as a whole or as a prefix ending at a dot:
  ``delta.after_commit`` matches ``delta.after_commit.silver.orders`` and every other
  table, ``delta.after_commit.silver.orders`` only that table;
- ``<n>`` (default 1) kills at the n-th matching point reached in this process, e.g.
  ``delta.before_commit:3`` just before the third commit.

The points (``<layer>.<table>`` names the Delta table, ``<job>`` is e.g. ``silver.orders``):

============================================  ==============================================
``delta.before_commit.<layer>.<table>``        a write, upsert, insert-only or group MERGE
                                               is about to commit
``delta.after_commit.<layer>.<table>``         it has committed
``bronze.before_log.<source>``                 new files are in bronze, not yet in
                                               ``ops.ingested_files``
``bronze.after_log.<source>``                  the file log is written
``watermark.before_save.<consumer>``           a job consumed new versions without writing its
                                               table; the log row saying so is not appended yet
``watermark.after_save.<consumer>``            the log row is appended
``run_record.before.<job>``                    the run's jobs have finished; their run records
                                               (this job's among them) are not appended yet
``run_record.after.<job>``                     the run records are appended
============================================  ==============================================
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

CRASH_ENV = "ECOM_CRASH_AT"

# Matching points reached so far in this process, per ECOM_CRASH_AT value.
_reached: dict[str, int] = {}


def crash_point(name: str, *, table: str | None = None) -> None:
    """Kill this process with SIGKILL if ``ECOM_CRASH_AT`` names this point (test hook).

    Args:
        name: The point's dotted name, e.g. ``delta.before_commit``.
        table: A Delta table path ``<lake>/<layer>/<table>``; its ``<layer>.<table>`` is
            appended to ``name``.

    Raises:
        ValueError: ``ECOM_CRASH_AT`` is set but malformed (e.g. ``point:0``).
    """
    wanted = os.environ.get(CRASH_ENV)
    if not wanted:
        return
    point, occurrence = parse_crash_spec(wanted)
    full_name = name if table is None else f"{name}.{table_label(table)}"
    if not (full_name == point or full_name.startswith(f"{point}.")):
        return
    _reached[wanted] = _reached.get(wanted, 0) + 1
    if _reached[wanted] == occurrence:
        _kill_self(full_name)


def parse_crash_spec(spec: str) -> tuple[str, int]:
    """``"<point>[:<n>]"`` as ``(point, n)``.

    Raises:
        ValueError: The point is empty or ``n`` is not a whole number >= 1.
    """
    point, _, count = spec.strip().partition(":")
    occurrence = int(count) if count.strip().isdigit() else -1 if count else 1
    if not point or occurrence < 1:
        raise ValueError(
            f"{CRASH_ENV}={spec!r}: expected <point>[:<n>] with n >= 1, e.g. delta.before_commit:2"
        )
    return point, occurrence


def table_label(path: str) -> str:
    """``<layer>.<table>`` of a table path ``<lake>/<layer>/<table>``."""
    parts = path.rstrip("/").split("/")
    return ".".join(parts[-2:])


def _kill_self(point: str) -> None:
    jvm = _spark_driver_jvm_pid()
    print(
        f"{CRASH_ENV}: killing process {os.getpid()} (Spark JVM {jvm}) at {point}",
        file=sys.stderr,
        flush=True,
    )
    # PySpark runs the driver's JVM as a child process; left alone it would notice the closed
    # pipe and shut down cleanly (running its shutdown hooks), which a real crash does not.
    if jvm is not None:
        try:
            os.kill(jvm, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os.kill(os.getpid(), signal.SIGKILL)


def _spark_driver_jvm_pid() -> int | None:
    """The pid of the JVM this process's SparkContext launched, if it launched one."""
    context = sys.modules.get("pyspark.core.context") or sys.modules.get("pyspark.context")
    gateway = getattr(getattr(context, "SparkContext", None), "_gateway", None)
    process = getattr(gateway, "proc", None)
    return None if process is None else int(process.pid)


def install() -> None:
    """Wrap the I/O functions named in this module's docstring with their crash points.

    Every module already imported that bound one of them by name (``from ... import``) gets
    the wrapper too; modules imported later import the wrapper.
    """
    from pipeline_lib.io import delta, ingest_log
    from pipeline_lib.ops import runs, watermarks

    def around_commit(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str]:
        path = kwargs.get("path", args[1] if len(args) > 1 else "")
        return f"delta.before_commit.{table_label(path)}", f"delta.after_commit.{table_label(path)}"

    def around_log(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str]:
        source = kwargs.get("source", args[2])
        return f"bronze.before_log.{source}", f"bronze.after_log.{source}"

    def around_watermark(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str]:
        consumer = kwargs.get("consumer", args[2])
        return f"watermark.before_save.{consumer}", f"watermark.after_save.{consumer}"

    def around_records(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[list[str], list[str]]:
        jobs = [record.job for record in kwargs.get("records", args[2] if len(args) > 2 else ())]
        return [f"run_record.before.{j}" for j in jobs], [f"run_record.after.{j}" for j in jobs]

    _wrap(delta, "write_table", around_commit)
    _wrap(delta, "merge", around_commit)
    _wrap(ingest_log, "append_log", around_log)
    _wrap(watermarks, "save_processed_versions", around_watermark)
    _wrap(runs, "record_runs", around_records)


def _wrap(module: Any, name: str, points: Callable[[tuple[Any, ...], dict[str, Any]], Any]) -> None:
    original = getattr(module, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        before, after = points(args, kwargs)
        for point in _as_list(before):
            crash_point(point)
        result = original(*args, **kwargs)
        for point in _as_list(after):
            crash_point(point)
        return result

    for loaded in list(sys.modules.values()):
        if getattr(loaded, name, None) is original:
            setattr(loaded, name, wrapper)


def _as_list(points: str | Sequence[str]) -> Sequence[str]:
    return [points] if isinstance(points, str) else points


def main(argv: Sequence[str] | None = None) -> int:
    """``ecom-pipeline`` with the crash points installed."""
    install()
    from jobs.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
