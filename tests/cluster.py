"""A throw-away Spark standalone cluster (one master, one worker) for tests.

It runs the master and the worker that ship with the installed pyspark
(``bin/spark-class org.apache.spark.deploy.master.Master`` and ``...worker.Worker``),
bound to 127.0.0.1 on ports the OS hands out, with every log, work and scratch folder
under the given root. Leaving the ``with`` block (also on error) kills both daemons and
every executor they started::

    with StandaloneCluster(tmp_path / "cluster") as cluster:
        subprocess.run(["./spark-submit.sh", "--master", cluster.master_url, "--", "jobs"], ...)
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import pyspark

from tools.ports import free_ports

SPARK_HOME = Path(pyspark.__file__).resolve().parent
SPARK_CLASS = SPARK_HOME / "bin" / "spark-class"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
EXECUTOR_CLASS = "org.apache.spark.executor.CoarseGrainedExecutorBackend"
HOST = "127.0.0.1"
# A port taken between our probe and the daemon's bind makes the daemon exit (no silent move
# to port + 1, see spark.port.maxRetries below); the whole start is then retried on new ports.
START_ATTEMPTS = 3

T = TypeVar("T")
_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn``: SIGTERM the child when the test process dies (even by SIGKILL; Linux only).

    Without it a test run killed by a CI timeout would leave the daemons running.
    """
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ClusterError(RuntimeError):
    """The cluster did not start or did not reach the state a test waited for."""


def wait_for(what: str, probe: Callable[[], T | None], *, timeout_s: float, interval_s: float = 0.5) -> T:
    """Call ``probe`` until it returns something truthy; return that.

    Raises:
        ClusterError: ``timeout_s`` passed first; the message names ``what``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


def child_pids(parent: int) -> list[int]:
    """Direct children of ``parent``, from ``/proc`` (Linux).

    A JVM forks from whichever thread starts the process, so every thread's list is read.
    """
    pids: list[int] = []
    for children in Path(f"/proc/{parent}/task").glob("*/children"):
        try:
            pids += [int(pid) for pid in children.read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return pids


def command_line(pid: int) -> str:
    """The command line of ``pid`` (empty once it has gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


class StandaloneCluster:
    """One Spark standalone master and one worker on 127.0.0.1, for the length of a ``with`` block.

    Args:
        root: Folder for the daemons' logs (``logs/``), the worker's work folder (``work/``,
            one sub-folder per application and executor, holding each executor's
            ``stdout``/``stderr``) and scratch space (``local/``).
        cores: Cores the worker offers.
        memory: Memory the worker offers to executors, e.g. ``"2g"``.
        daemon_memory: Heap of the master and the worker JVMs themselves.
        startup_timeout_s: Seconds to wait for the master to be alive and the worker registered.
    """

    def __init__(
        self,
        root: Path,
        *,
        cores: int = 2,
        memory: str = "2g",
        daemon_memory: str = "512m",
        startup_timeout_s: float = 180.0,
    ) -> None:
        self.root = Path(root)
        self.cores = cores
        self.memory = memory
        self.daemon_memory = daemon_memory
        self.startup_timeout_s = startup_timeout_s
        self.log_dir = self.root / "logs"
        self.work_dir = self.root / "work"
        self.local_dir = self.root / "local"
        self.conf_dir = self.root / "conf"  # empty: no spark-env.sh or defaults of the machine
        self.master_port = self.master_ui_port = self.worker_port = self.worker_ui_port = 0
        self._master: subprocess.Popen[bytes] | None = None
        self._worker: subprocess.Popen[bytes] | None = None

    # -- addresses -------------------------------------------------------------------------

    @property
    def master_url(self) -> str:
        """``spark://127.0.0.1:<port>``, what ``--master`` takes."""
        return f"spark://{HOST}:{self.master_port}"

    @property
    def master_ui(self) -> str:
        return f"http://{HOST}:{self.master_ui_port}"

    @property
    def worker_ui(self) -> str:
        return f"http://{HOST}:{self.worker_ui_port}"

    @property
    def worker_pid(self) -> int:
        if self._worker is None:
            raise ClusterError("the worker is not running")
        return self._worker.pid

    # -- life cycle ------------------------------------------------------------------------

    def __enter__(self) -> StandaloneCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the master, then the worker; return once the worker has registered.

        Raises:
            ClusterError: A daemon exited or did not get ready in time (the message quotes its log).
        """
        for folder in (self.log_dir, self.work_dir, self.local_dir, self.conf_dir):
            folder.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, START_ATTEMPTS + 1):
            self.master_port, self.master_ui_port, self.worker_port, self.worker_ui_port = free_ports(4)
            try:
                self._start_master()
                self._start_worker()
                return
            except ClusterError:
                self.stop()
                if attempt == START_ATTEMPTS:
                    raise

    def stop(self) -> None:
        """Stop the worker (with its executors) and the master; kill what does not stop."""
        for name in ("_worker", "_master"):
            process: subprocess.Popen[bytes] | None = getattr(self, name)
            if process is None:
                continue
            _stop_process_group(process)
            setattr(self, name, None)

    def _environment(self, daemon_opts: str) -> dict[str, str]:
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK_", "PYSPARK_"))}
        return {
            **environ,
            "SPARK_HOME": str(SPARK_HOME),
            "SPARK_CONF_DIR": str(self.conf_dir),
            "SPARK_LOG_DIR": str(self.log_dir),
            "SPARK_PID_DIR": str(self.root),
            "SPARK_WORKER_DIR": str(self.work_dir),
            "SPARK_LOCAL_DIRS": str(self.local_dir),
            "SPARK_LOCAL_IP": HOST,
            "SPARK_DAEMON_MEMORY": self.daemon_memory,
            "SPARK_DAEMON_JAVA_OPTS": daemon_opts,
        }

    def _launch(self, name: str, args: list[str], daemon_opts: str) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.out").open("ab")
        try:
            # A new session: the daemon and everything it starts (executors, their Python
            # workers) share one process group that stop() signals as a whole.
            return subprocess.Popen(
                [str(SPARK_CLASS), *args],
                env=self._environment(daemon_opts),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        finally:
            log.close()

    def _start_master(self) -> None:
        args = [MASTER_CLASS, "--host", HOST, "--port", str(self.master_port)]
        args += ["--webui-port", str(self.master_ui_port)]
        # No REST submission server: it would listen on the fixed port 6066.
        self._master = self._launch(
            "master", args, "-Dspark.port.maxRetries=0 -Dspark.master.rest.enabled=false"
        )
        wait_for(
            "the Spark master to be ALIVE",
            lambda: (
                self._alive("master", self._master) and (self.master_state() or {}).get("status") == "ALIVE"
            ),
            timeout_s=self.startup_timeout_s,
        )

    def _start_worker(self) -> None:
        args = [WORKER_CLASS, "--host", HOST, "--port", str(self.worker_port)]
        args += ["--webui-port", str(self.worker_ui_port), "--cores", str(self.cores)]
        args += ["--memory", self.memory, "--work-dir", str(self.work_dir), self.master_url]
        self._worker = self._launch(
            "worker", args, "-Dspark.port.maxRetries=0 -Dspark.worker.cleanup.enabled=false"
        )
        wait_for(
            "the Spark worker to register with the master",
            lambda: self._alive("worker", self._worker) and self.alive_workers(),
            timeout_s=self.startup_timeout_s,
        )

    def _alive(self, name: str, process: subprocess.Popen[bytes] | None) -> bool:
        if process is None or process.poll() is not None:
            tail = "\n".join(self.log_text(name).splitlines()[-15:])
            raise ClusterError(f"the Spark {name} exited; end of {self.log_dir / name}.out:\n{tail}")
        return True

    # -- state -----------------------------------------------------------------------------

    def log_text(self, name: str) -> str:
        """What the master (``name="master"``) or the worker wrote to its console log."""
        path = self.log_dir / f"{name}.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def master_state(self) -> dict[str, Any] | None:
        """The master's ``/json/`` page (workers, active and completed applications), or None."""
        return _get_json(f"{self.master_ui}/json/")

    def worker_state(self) -> dict[str, Any] | None:
        """The worker's ``/json/`` page (running and finished executors), or None."""
        return _get_json(f"{self.worker_ui}/json/")

    def alive_workers(self) -> list[dict[str, Any]]:
        state = self.master_state() or {}
        return [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]

    def executor_pids(self) -> list[int]:
        """The executor JVMs the worker runs now (children whose command line is an executor)."""
        return [pid for pid in child_pids(self.worker_pid) if EXECUTOR_CLASS in command_line(pid)]

    def executor_dirs(self, app_id: str) -> list[Path]:
        """``<work>/<app_id>/<executor id>`` of every executor the worker ever started for the app."""
        app_dir = self.work_dir / app_id
        return (
            sorted((p for p in app_dir.iterdir() if p.is_dir()), key=lambda p: p.name)
            if app_dir.is_dir()
            else []
        )


def _get_json(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)
    except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
        return None


def _stop_process_group(process: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """SIGTERM the process's group (it leads one), wait, then SIGKILL the group."""
    group = process.pid  # start_new_session=True: the group id is the leader's pid
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    # Executors or Python workers may outlive their daemon: kill whatever is left of the group.
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
