"""Summaries of Spark event logs: where a run's wall time went.

The benchmark runs each layer with ``spark.eventLog.enabled=true`` (uncompressed, not
rolled), one log file per application. :func:`summarize_event_log` turns one log into
numbers that separate fixed overhead from data work:

* ``busy_s``: time during which at least one Spark job was running (the union of the job
  intervals); ``wall_s - busy_s`` is driver-only time: JVM and session start, Delta log
  replay, planning, Python;
* ``task_s`` and ``task_cpu_s``: executor time summed over tasks (the data work; with two
  cores at most ``2 x busy_s``);
* ``spark_jobs``, ``stages``, ``tasks`` and the slowest jobs with their call sites.

:func:`attribute_jobs` splits those numbers by pipeline job: by the ``ecom.job`` local
property the runner sets on each job's thread (exact, also for jobs running side by side, and
for the Spark jobs of a query's broadcasts and of ALS), else by its ``ecom-job=<job>`` session
tag (logs of runs before the property: the tag misses those), else by the start and end of
each job's run record (logs of runs before the tag).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.runner import JOB_PROPERTY, JOB_TAG_PREFIX

# Settings that make a log one plain JSON-lines file per application.
EVENT_LOG_CONF = {
    "spark.eventLog.enabled": "true",
    "spark.eventLog.compress": "false",
    "spark.eventLog.rolling.enabled": "false",
}


@dataclass
class SparkJob:
    job_id: int
    start_ms: int
    end_ms: int
    stages: int
    description: str
    pipeline_job: str = ""  # from the runner's job property or tag (jobs.runner); "" without either

    @property
    def seconds(self) -> float:
        return (self.end_ms - self.start_ms) / 1000


@dataclass
class EventLogSummary:
    """One Spark application, summarized (times in seconds)."""

    app_id: str
    wall_s: float
    first_job_after_s: float
    busy_s: float
    spark_jobs: int
    stages: int
    tasks: int
    task_s: float
    task_cpu_s: float
    gc_s: float
    sql_executions: int
    records_read: int
    records_written: int
    jobs: list[SparkJob] = field(default_factory=list, repr=False)
    app_start_ms: int = 0

    def as_dict(self, top: int = 8) -> dict[str, Any]:
        """The numbers, plus the ``top`` slowest Spark jobs."""
        slowest = sorted(self.jobs, key=lambda job: job.seconds, reverse=True)[:top]
        return {
            "app_id": self.app_id,
            "wall_s": round(self.wall_s, 2),
            "first_job_after_s": round(self.first_job_after_s, 2),
            "busy_s": round(self.busy_s, 2),
            "driver_only_s": round(self.wall_s - self.busy_s, 2),
            "spark_jobs": self.spark_jobs,
            "stages": self.stages,
            "tasks": self.tasks,
            "task_s": round(self.task_s, 2),
            "task_cpu_s": round(self.task_cpu_s, 2),
            "gc_s": round(self.gc_s, 2),
            "sql_executions": self.sql_executions,
            "records_read": self.records_read,
            "records_written": self.records_written,
            "slowest_jobs": [
                {"seconds": round(job.seconds, 2), "stages": job.stages, "what": job.description}
                for job in slowest
            ],
            "jobs_by_kind": jobs_by_kind(self.jobs)[: top + 4],
        }


def jobs_by_kind(jobs: Iterable[SparkJob]) -> list[dict[str, Any]]:
    """Spark jobs grouped by call site (numbers such as versions read as N), most seconds first."""
    kinds: dict[str, list[float]] = {}
    for job in jobs:
        kind = re.sub(r"\d+", "N", job.description.replace("<br/>", " "))
        kinds.setdefault(kind, []).append(job.seconds)
    ranked = sorted(kinds.items(), key=lambda item: sum(item[1]), reverse=True)
    return [{"what": what, "count": len(times), "seconds": round(sum(times), 2)} for what, times in ranked]


def union_seconds(intervals: Iterable[tuple[int, int]]) -> float:
    """Total length in seconds of the union of ``(start_ms, end_ms)`` intervals."""
    total = 0
    current_start = current_end = None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None and current_start is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None and current_start is not None:
        total += current_end - current_start
    return total / 1000


# The runner's tag of a pipeline job's Spark jobs, inside ``spark.job.tags`` (a comma-separated
# list; Spark prefixes a session tag with the session's and thread's ids).
_JOB_TAG = re.compile(re.escape(JOB_TAG_PREFIX) + r"([^,]+)")


def _pipeline_job(event: dict[str, Any]) -> str:
    """The pipeline job whose property or tag a Spark job carries, else ""."""
    properties = event.get("Properties") or {}
    if properties.get(JOB_PROPERTY):
        return str(properties[JOB_PROPERTY])
    match = _JOB_TAG.search(str(properties.get("spark.job.tags", "")))
    return match.group(1) if match else ""


def _describe(event: dict[str, Any]) -> str:
    """The job's description, else its first stage's name and the first frame of its call site."""
    properties = event.get("Properties") or {}
    if properties.get("spark.job.description"):
        return " ".join(str(properties["spark.job.description"]).split())[:160]
    stages = sorted(event.get("Stage Infos") or [], key=lambda stage: stage.get("Stage ID", 0))
    if not stages:
        return str(properties.get("callSite.short", "?"))
    name = str(stages[-1].get("Stage Name", "?"))
    frame = str(stages[-1].get("Details", "")).split("\n", 1)[0].split("(", 1)[0]
    method = ".".join(frame.split(".")[-2:]) if frame else ""
    return f"{name} [{method}]" if method and method not in name else name


def summarize_event_log(path: Path) -> EventLogSummary:
    """Read one uncompressed event log file."""
    app_id, app_start, app_end = path.name, 0, 0
    job_starts: dict[int, tuple[int, int, str, str]] = {}
    jobs: list[SparkJob] = []
    stages = tasks = sql = records_read = records_written = 0
    task_ms = cpu_ns = gc_ms = 0
    last_ms = 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            event = json.loads(line)
            kind = event.get("Event", "")
            if kind == "SparkListenerApplicationStart":
                app_id = event.get("App ID", app_id)
                app_start = int(event["Timestamp"])
            elif kind == "SparkListenerApplicationEnd":
                app_end = int(event["Timestamp"])
            elif kind == "SparkListenerJobStart":
                job_starts[event["Job ID"]] = (
                    int(event["Submission Time"]),
                    len(event.get("Stage IDs", [])),
                    _describe(event),
                    _pipeline_job(event),
                )
            elif kind == "SparkListenerJobEnd":
                start, stage_count, description, owner = job_starts.pop(event["Job ID"], (0, 0, "?", ""))
                end = int(event["Completion Time"])
                last_ms = max(last_ms, end)
                jobs.append(SparkJob(event["Job ID"], start or end, end, stage_count, description, owner))
            elif kind == "SparkListenerStageCompleted":
                stages += 1
            elif kind == "SparkListenerTaskEnd":
                tasks += 1
                metrics = event.get("Task Metrics") or {}
                task_ms += int(metrics.get("Executor Run Time", 0))
                cpu_ns += int(metrics.get("Executor CPU Time", 0))
                gc_ms += int(metrics.get("JVM GC Time", 0))
                records_read += int((metrics.get("Input Metrics") or {}).get("Records Read", 0))
                records_written += int((metrics.get("Output Metrics") or {}).get("Records Written", 0))
                finish = int((event.get("Task Info") or {}).get("Finish Time", 0))
                last_ms = max(last_ms, finish)
            elif kind.endswith("SparkListenerSQLExecutionStart"):
                sql += 1
    app_end = app_end or last_ms
    first_job = min((job.start_ms for job in jobs), default=app_end)
    return EventLogSummary(
        app_id=app_id,
        wall_s=(app_end - app_start) / 1000 if app_start else 0.0,
        first_job_after_s=(first_job - app_start) / 1000 if app_start else 0.0,
        busy_s=union_seconds((job.start_ms, job.end_ms) for job in jobs),
        spark_jobs=len(jobs),
        stages=stages,
        tasks=tasks,
        task_s=task_ms / 1000,
        task_cpu_s=cpu_ns / 1e9,
        gc_s=gc_ms / 1000,
        sql_executions=sql,
        records_read=records_read,
        records_written=records_written,
        jobs=jobs,
        app_start_ms=app_start,
    )


def summarize_folder(folder: Path) -> EventLogSummary | None:
    """The summary of the one event log in ``folder`` (None when there is none)."""
    logs = sorted(p for p in folder.glob("*") if p.is_file() and not p.name.startswith("."))
    logs = [p for p in logs if not p.name.endswith(".inprogress") or len(logs) == 1]
    return summarize_event_log(logs[-1]) if logs else None


def _ms(moment: dt.datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def attribute_jobs(summary: EventLogSummary, records: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per pipeline job (run record), its Spark jobs: those tagged with its name, and for an
    untagged Spark job (a log written before the runner tagged jobs, or the runner's own
    work) the job whose run it started within.

    Returns:
        ``{job name: {"spark_jobs": n, "busy_s": s}}``; Spark jobs outside every record
        (session start, between jobs) are under ``"(between jobs)"``.
    """
    windows = [(record["job"], _ms(record["started_at"]), _ms(record["ended_at"])) for record in records]
    result: dict[str, dict[str, Any]] = {}
    grouped: dict[str, list[SparkJob]] = {}
    for job in summary.jobs:
        owner = job.pipeline_job or next(
            (name for name, start, end in windows if start <= job.start_ms <= end), "(between jobs)"
        )
        grouped.setdefault(owner, []).append(job)
    for owner, owned in grouped.items():
        result[owner] = {
            "spark_jobs": len(owned),
            "busy_s": round(union_seconds((job.start_ms, job.end_ms) for job in owned), 2),
        }
    return result
