"""What an ``ecom-pipeline run`` process said on stderr: which jobs ran, which were skipped.

The runner (``jobs/runner.py``) writes one progress line per job outcome and one summary
line per run id, each prefixed with the time::

    [12:00:01] run 20260301T110000Z-1a2b3c4d: 20 jobs, landing ..., lake ...
    [12:00:01] bronze.orders: skipped, nothing it reads changed since run 20260301T100000Z-5e6f7a8b
    [12:00:09] silver.orders: done in 7.9s: 120 rows in, 118 written, 2 quarantined
    [12:00:09] gold.fact_orders: blocked: silver.orders failed
    [12:00:10] run 20260301T110000Z-1a2b3c4d: 1 ran, 18 skipped (nothing new), 1 failed or blocked

A run with nothing new starts no JVM and leaves no run record, so these lines are the only
account of its skipped jobs; :func:`parse_run_log` reads them back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

RAN, SKIPPED, FAILED, BLOCKED = "ran", "skipped", "failed", "blocked"

_TIME = r"^\[\d\d:\d\d:\d\d\] "
_JOB = r"(?P<job>[a-z_]+\.[a-z0-9_]+)"
_OUTCOMES = (
    (SKIPPED, re.compile(_TIME + _JOB + r": skipped, nothing it reads changed since run (?P<since>\S+)")),
    (RAN, re.compile(_TIME + _JOB + r": done in (?P<seconds>[\d.]+)s")),
    (FAILED, re.compile(_TIME + _JOB + r": FAILED after (?P<seconds>[\d.]+)s")),
    (BLOCKED, re.compile(_TIME + _JOB + r": blocked: ")),
)
_RUN_START = re.compile(_TIME + r"run (?P<run>\S+?)(?: as of \S+(?: \(\d+/\d+\))?)?: \d+ jobs, ")
_RUN_END = re.compile(
    _TIME + r"run (?P<run>\S+?)(?: as of \S+(?: \(\d+/\d+\))?)?: (?P<ran>\d+) ran, (?P<skipped>\d+) skipped "
    r"\(nothing new\), (?P<failed>\d+) failed or blocked"
)


@dataclass
class RunLog:
    """The outcomes a run's stderr reported.

    Attributes:
        run_ids: The run ids started (one per as-of date), in order.
        outcomes: ``(job, status, detail)`` in the order reported; ``detail`` is the run the
            job was idle since (skipped) or its seconds as printed (ran, failed).
        totals: The runner's own summary, summed over its run ids: ``ran``, ``skipped``,
            ``failed_or_blocked`` (empty when no summary line was printed: the run stopped).
    """

    run_ids: list[str] = field(default_factory=list)
    outcomes: list[tuple[str, str, str]] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)

    def status_of(self) -> dict[str, str]:
        """Per job, its last reported status."""
        return {job: status for job, status, _ in self.outcomes}

    def jobs_with(self, status: str) -> list[str]:
        """The jobs whose last reported status is ``status``, in the order reported."""
        return [job for job, found in self.status_of().items() if found == status]

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_ids": self.run_ids,
            "totals": self.totals,
            "ran": self.jobs_with(RAN),
            "skipped": self.jobs_with(SKIPPED),
            "failed": self.jobs_with(FAILED),
            "blocked": self.jobs_with(BLOCKED),
        }


_RUN_INTO = re.compile(r"(?<=\S)(\[\d\d:\d\d:\d\d\] )")


def parse_run_log(text: str) -> RunLog:
    """Read the runner's progress lines out of a process's output (other lines are ignored)."""
    log = RunLog()
    # Logs of runs before progress lines were written whole could hold two threads' lines
    # run into one ("...since run X[15:22:38] gold.y: skipped, ..."): split them again.
    text = _RUN_INTO.sub(r"\n\1", text)
    for line in text.splitlines():
        start = _RUN_START.match(line)
        if start:
            log.run_ids.append(start.group("run"))
            continue
        end = _RUN_END.match(line)
        if end:
            for key, group in (("ran", "ran"), ("skipped", "skipped"), ("failed_or_blocked", "failed")):
                log.totals[key] = log.totals.get(key, 0) + int(end.group(group))
            continue
        for status, pattern in _OUTCOMES:
            found = pattern.match(line)
            if found:
                groups = found.groupdict()
                log.outcomes.append(
                    (found.group("job"), status, groups.get("since") or groups.get("seconds") or "")
                )
                break
    return log
