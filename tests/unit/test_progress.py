"""Progress lines of jobs running side by side stay whole lines."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^\[\d\d:\d\d:\d\d\] job\.\d+: line \d+$")
THREADS, LINES = 6, 300

# Threads printing progress at once, as the runner's jobs do, to stderr on a pipe (a
# scheduler's log): an in-memory stderr would hide the fault, a real stream shows it.
WRITERS = f"""
import sys, threading
sys.setswitchinterval(1e-6)  # hand the interpreter to another thread as often as it can
from pipeline_lib.ops.context import progress
threads = [
    threading.Thread(target=lambda n=n: [progress(f"job.{{n}}: line {{i}}") for i in range({LINES})])
    for n in range({THREADS})
]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
"""


def test_lines_of_threads_writing_at_once_never_run_into_each_other() -> None:
    # The no-op benchmark run once printed two jobs' skip lines on one line, and counted
    # fewer skipped jobs than the runner reported.
    path = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    done = subprocess.run(
        [sys.executable, "-c", WRITERS], capture_output=True, text=True, env=env, check=True, timeout=120
    )
    lines = done.stderr.split("\n")
    assert lines[-1] == ""
    assert [line for line in lines[:-1] if not LINE.match(line)] == []
    assert len(lines) - 1 == THREADS * LINES
