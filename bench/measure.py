"""Run a command in a subprocess and measure it: wall time and peak memory of its process tree.

Memory is read from ``/proc`` (Linux only; no psutil needed): every ``interval`` seconds the
sampler finds the subprocess and all its descendants (for a pipeline run: the Python
driver, the JVM that PySpark starts, and any Python workers) and sums their resident set
sizes. The peak of that sum is the run's peak memory; each process's own high-water mark
(``VmHWM``) is kept too, so a spike shorter than the interval is not lost for the JVM.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SAMPLE_INTERVAL_S = 0.25


@dataclass
class Measured:
    """What one measured subprocess did.

    Attributes:
        command: The command line run.
        returncode: Its exit status.
        seconds: Wall time from start to exit.
        peak_tree_rss_bytes: Largest sum of resident memory of the tree's Python and Java
            processes seen by the sampler (see :func:`is_counted`).
        peak_process_hwm_bytes: Per command name (``java``, ``python3``...), the largest ``VmHWM``
            of any one process of that name in the tree.
        cpu_seconds: User plus system CPU time of the tree's processes, as last sampled (a
            process's last ``interval`` before it exits is not seen). Far below ``seconds x
            cores`` when other work competes for the cores.
        log: File holding the subprocess's stdout and stderr.
    """

    command: list[str]
    returncode: int
    seconds: float
    peak_tree_rss_bytes: int
    peak_process_hwm_bytes: dict[str, int] = field(default_factory=dict)
    cpu_seconds: float = 0.0
    log: str = ""

    @property
    def peak_jvm_hwm_bytes(self) -> int:
        """The JVM's own high-water mark (0 when no JVM ran)."""
        return self.peak_process_hwm_bytes.get("java", 0)


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as handle:
                stat = handle.read()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: the ppid follows the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    children = _children_by_parent()
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


_TICKS = os.sysconf("SC_CLK_TCK")


def read_cpu_seconds(pid: int) -> float | None:
    """User plus system CPU seconds of a live process (all its threads), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def read_memory(pid: int) -> tuple[str, int, int] | None:
    """``(name, VmRSS bytes, VmHWM bytes)`` of a live process, None when it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    values: dict[str, str] = {}
    for line in lines:
        key, _, value = line.partition(":")
        values[key] = value.strip()
    if "VmRSS" not in values:  # a zombie or a kernel thread
        return None
    kib = {key: int(values.get(key, "0 kB").split()[0]) * 1024 for key in ("VmRSS", "VmHWM")}
    return values.get("Name", "?"), kib["VmRSS"], kib["VmHWM"]


def is_counted(name: str) -> bool:
    """Whether a process's memory counts in the tree's sum: Python and the (largest) JVM only.

    The JVM forks short-lived helpers (Hadoop runs ``chmod``; before its ``exec`` the child
    shows the JVM's whole resident set under a thread's name such as ``Thread-4``); adding
    them would count the JVM's pages twice.
    """
    return name == "java" or name.startswith("python")


class _Sampler(threading.Thread):
    def __init__(self, root: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.interval = interval
        self.peak_rss = 0
        self.hwm_by_pid: dict[int, tuple[str, int]] = {}
        self.cpu_by_pid: dict[int, float] = {}
        self.stopped = threading.Event()

    def sample(self) -> None:
        python_rss = jvm_rss = 0
        for pid in process_tree(self.root):
            memory = read_memory(pid)
            if memory is None:
                continue
            name, rss, hwm = memory
            if name == "java":  # one JVM per run; a forked java child would share its pages
                jvm_rss = max(jvm_rss, rss)
            elif is_counted(name):
                python_rss += rss
            self.hwm_by_pid[pid] = (name, max(hwm, self.hwm_by_pid.get(pid, (name, 0))[1]))
            cpu = read_cpu_seconds(pid)
            if cpu is not None:
                self.cpu_by_pid[pid] = cpu
        self.peak_rss = max(self.peak_rss, python_rss + jvm_rss)

    def run(self) -> None:
        while not self.stopped.is_set():
            self.sample()
            self.stopped.wait(self.interval)

    def peak_hwm_by_name(self) -> dict[str, int]:
        peaks: dict[str, int] = {}
        for name, hwm in self.hwm_by_pid.values():
            peaks[name] = max(peaks.get(name, 0), hwm)
        return peaks


def run_measured(
    command: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    echo: Callable[[str], bool] | None = None,
    interval: float = SAMPLE_INTERVAL_S,
) -> Measured:
    """Run ``command``, sampling its process tree's memory, and write its output to ``log``.

    Args:
        command: The command line.
        log: File for the subprocess's stdout and stderr (merged), created or replaced.
        env: The environment; default this process's.
        cwd: Working directory.
        echo: Lines for which it returns True are also printed on this process's stderr (progress).
        interval: Seconds between memory samples.

    Returns:
        The measurement; the caller decides what a non-zero exit means.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log, "w", encoding="utf-8", buffering=1) as sink:  # line-buffered: tail -f works
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        sampler = _Sampler(process.pid, interval)
        sampler.start()
        assert process.stdout is not None
        for line in process.stdout:
            sink.write(line)
            if echo is not None and echo(line):
                print(f"    {line.rstrip()}", file=sys.stderr, flush=True)
        returncode = process.wait()
        seconds = time.monotonic() - started
        sampler.stopped.set()
        sampler.join()
    return Measured(
        command=list(command),
        returncode=returncode,
        seconds=seconds,
        peak_tree_rss_bytes=sampler.peak_rss,
        peak_process_hwm_bytes=sampler.peak_hwm_by_name(),
        cpu_seconds=round(sum(sampler.cpu_by_pid.values()), 2),
        log=str(log),
    )


def tail(path: str | Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a text file (for error messages)."""
    text = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:])
