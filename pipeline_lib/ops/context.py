"""What a job gets and what it reports: :class:`JobContext` and :class:`JobResult`.

A job is a function ``(ctx: JobContext) -> JobResult`` declared in :mod:`jobs.graph`; the
library's job steps (:mod:`pipeline_lib.silver.steps`, :mod:`pipeline_lib.gold.as_of`...)
take the same context, so a job module is only the recipe that chains them.
"""

from __future__ import annotations

import datetime as dt
import sys
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import SparkSession

from pipeline_lib.config import PipelineConfig
from pipeline_lib.io.delta import table_path


@dataclass(frozen=True)
class JobContext:
    """What a job gets: the session, the config, and this run's identity and options."""

    spark: SparkSession
    config: PipelineConfig
    run_id: str
    as_of: dt.date | None = None
    full_refresh: bool = False
    # ``run --force``: also recompute what the job's own state says is unchanged (a gold
    # aggregate's partition whose inputs it was written from); what comes out the same is
    # still not written.
    force: bool = False
    # The shop database's clock, read once by the runner at the start of a run that extracts
    # from it: every extract of the run ends its window at the same instant. None: each
    # extract reads the clock itself (a job run alone).
    source_clock: dt.datetime | None = None

    @property
    def lake(self) -> str:
        """The lake root."""
        return self.config.paths.lake

    def path(self, layer: str, table: str) -> str:
        """``<lake>/<layer>/<table>``."""
        return table_path(self.config.paths.lake, layer, table)

    def progress(self, message: str) -> None:
        """One line of progress on stderr."""
        progress(message)


_PROGRESS_LOCK = threading.Lock()


def progress(message: str) -> None:
    """One line of progress on stderr, with the time.

    One write per line, under a lock: the runner's jobs run in threads side by side, and
    ``print`` writes the text and its newline separately, so two jobs' lines could run into
    one (a scheduler's log, or a tool counting the lines, then misreads both).
    """
    line = f"[{dt.datetime.now():%H:%M:%S}] {message}\n"
    with _PROGRESS_LOCK:
        sys.stderr.write(line)
        sys.stderr.flush()


@dataclass
class JobResult:
    """What a job reports: row counts, the Delta versions it wrote, and free-form details."""

    rows_read: int = 0
    rows_written: int = 0
    rows_quarantined: int = 0
    delta_versions: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus a random suffix."""
    return f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
