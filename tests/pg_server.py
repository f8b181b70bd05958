"""A real, throwaway PostgreSQL server for tests: ``initdb`` in a folder, served on 127.0.0.1 only.

The shop's source tables (orders, order_items, customers) live in PostgreSQL and gold tables
are published back into it, so the tests that cover Spark's JDBC source and the publisher run
against a real server rather than a mock. :func:`start_postgres` finds the server binaries
(``tools/install_postgres.sh`` installs them), initialises a cluster under ``base_dir`` with a
generated superuser password (SCRAM-SHA-256), starts it with durability switched off (test
data need not survive a crash) and creates the database ``shop``. :func:`running_postgres`
does the same in a fresh temporary folder and removes it afterwards::

    with running_postgres() as server:
        with server.connect() as conn:
            conn.execute("CREATE TABLE t (id int)")
        spark.read.jdbc(server.jdbc_url(), "t", properties=server.jdbc_properties())

``initdb`` and ``postgres`` refuse to run as root. Run as root (as CI does), the server runs as
an unprivileged system user instead: ``postgres`` where the Debian package created it, else
``ecompg``, created on first use. That user must be able to enter ``base_dir`` and every folder
above it, which rules out pytest's ``tmp_path`` as root: ``/tmp/pytest-of-root`` is ``0700``,
and every pytest run started meanwhile sets it back so, whatever this one changed. Hence
:func:`running_postgres`, whose folder sits in the system temp folder. Clients reach the
server over TCP only; the data folder, the Unix socket and the server log (``postgres.log``)
all stay in ``base_dir``. The DB-API client is psycopg 3 (``psycopg[binary]``).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg

from tools.ports import free_port

HOST = "127.0.0.1"
SUPERUSER = "postgres"
DATABASE = "shop"
JDBC_DRIVER = "org.postgresql.Driver"
# The OS user the server runs as when the tests run as root: Debian's own if present, else ours.
OS_USERS = ("postgres", "ecompg")
DEBIAN_BINDIRS = Path("/usr/lib/postgresql")
INSTALL_HINT = "run tools/install_postgres.sh (it installs Debian's `postgresql` package)"
# Durability is worth nothing to a test server: these cut initdb + start to about a second.
TEST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "shared_buffers": "32MB",
    "max_connections": "40",
    "huge_pages": "off",
    # Timestamps read back through JDBC must not depend on the machine's zone.
    "timezone": "UTC",
    "log_timezone": "UTC",
}
_SUN_PATH_MAX = 107  # bytes of a Unix socket path, NUL excluded
_START_ATTEMPTS = 3  # a port picked free can be taken before the server binds it
_STOP_TIMEOUT_S = 30.0


class PostgresNotFoundError(RuntimeError):
    """PostgreSQL's server binaries (initdb, pg_ctl, postgres) are not on this machine."""


class PostgresStartError(RuntimeError):
    """The test server did not initialise or start; the message ends with its log."""


class PostgresStopError(RuntimeError):
    """Processes of the test server were still running after it was stopped and killed."""


def find_postgres_bindir() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``: from PATH, else Debian's newest.

    Raises:
        PostgresNotFoundError: Neither PATH nor ``/usr/lib/postgresql/*/bin`` has all three.
    """
    candidates: list[Path] = []
    on_path = shutil.which("pg_ctl")
    if on_path is not None:
        candidates.append(Path(on_path).resolve().parent)
    versioned = [d for d in DEBIAN_BINDIRS.glob("*/bin") if d.parent.name.isdigit()]
    candidates.extend(sorted(versioned, key=lambda d: int(d.parent.name), reverse=True))
    for bindir in candidates:
        if all(os.access(bindir / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    raise PostgresNotFoundError(
        f"PostgreSQL's server binaries (initdb, pg_ctl, postgres) are neither on PATH nor in "
        f"{DEBIAN_BINDIRS}/*/bin: {INSTALL_HINT}"
    )


def server_processes(data_dir: Path) -> list[int]:
    """Live processes of the server of ``data_dir``: every postgres process works in its data folder.

    Zombies and processes this user may not inspect are left out.
    """
    target = str(data_dir.resolve())
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/cwd") == target:
                found.append(int(entry))
        except OSError:
            continue
    return found


def process_is_running(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rpartition(")")[2].split()[0] not in ("Z", "X")


def _conf_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _os_user() -> pwd.struct_passwd | None:
    """The unprivileged user to run the server as, created if need be; None when not root."""
    if os.geteuid() != 0:
        return None
    for name in OS_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    name = OS_USERS[-1]
    created = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        # A parallel test process may have created it first: that is as good.
        return pwd.getpwnam(name)
    except KeyError:
        raise PostgresStartError(
            f"could not create the system user {name!r} to run PostgreSQL as (initdb refuses root): "
            f"{created.stderr.strip()}"
        ) from None


def _as_user(command: list[str], user: pwd.struct_passwd | None) -> list[str]:
    """``command`` run as ``user`` (root only), through runuser or else setpriv."""
    if user is None:
        return command
    if shutil.which("runuser"):
        return ["runuser", "-u", user.pw_name, "--", *command]
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", *command]


def _first_unreachable(folder: Path, user: pwd.struct_passwd) -> Path | None:
    """The topmost of ``folder`` and the folders above it that ``user`` may not enter, if any."""
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    for path in (*reversed(folder.parents), folder):
        info = os.stat(path)
        if info.st_uid == user.pw_uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid in groups:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return path
    return None


def _log_tail(log_path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


@dataclass
class PostgresServer:
    """A running test server: where it listens, its superuser's credentials, and how to stop it."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str
    data_dir: Path
    log_path: Path
    bindir: Path
    os_user: pwd.struct_passwd | None = field(default=None, repr=False)
    init_seconds: float = 0.0
    start_seconds: float = 0.0
    stopped: bool = False

    def url(self) -> str:
        """``postgresql://user@host:port/db``: the password stays out, so the URL can be logged."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"

    def jdbc_url(self) -> str:
        """The URL for Spark's JDBC source; credentials go in :meth:`jdbc_properties`."""
        return f"jdbc:postgresql://{self.host}:{self.port}/{self.database}"

    def jdbc_properties(self) -> dict[str, str]:
        """``user``, ``password`` and ``driver`` for ``spark.read.jdbc(..., properties=...)``."""
        return {"user": self.user, "password": self.password, "driver": JDBC_DRIVER}

    def connect(self, database: str | None = None, **kwargs: Any) -> psycopg.Connection[Any]:
        """A new DB-API (psycopg 3) connection as the superuser over TCP; the caller closes it."""
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=database or self.database,
            connect_timeout=10,
            **kwargs,
        )

    def run_sql(
        self, sql: str, params: tuple[Any, ...] | None = None, *, database: str | None = None
    ) -> list[tuple[Any, ...]]:
        """Run one statement as the superuser in autocommit mode (so ``CREATE DATABASE`` works).

        Returns:
            The rows it returned, or ``[]`` for a statement that returns none.
        """
        with self.connect(database, autocommit=True) as conn, conn.cursor() as cursor:
            cursor.execute(sql, params)  # type: ignore[arg-type]  # test SQL, not user input
            return list(cursor.fetchall()) if cursor.description is not None else []

    def copy_database(self, name: str, *, template: str | None = None) -> PostgresServer:
        """A new database ``name`` copied from ``template`` (default this one's), and the server
        seen through it: the same server and credentials, ``database`` = ``name``.

        ``CREATE DATABASE ... TEMPLATE`` copies files, not rows: a loaded shop is copied in a
        fraction of a second, so each test module can change its own copy. The template must
        have no open connection. Stop the server through the object that started it.
        """
        source = template or self.database
        self.run_sql(f'CREATE DATABASE "{name}" TEMPLATE "{source}"', database="postgres")
        return dataclasses.replace(self, database=name)

    def postmaster_pid(self) -> int | None:
        """The server's main process id from ``postmaster.pid``, or None when it is not running."""
        try:
            first_line = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        except OSError:
            return None
        return int(first_line) if first_line.strip().isdigit() else None

    def stop(self) -> None:
        """Stop the server (``pg_ctl stop -m fast``) and make sure none of its processes remain.

        Idempotent. Falls back to signals when ``pg_ctl`` fails, e.g. when a folder above the
        data folder was closed to the server's user after the start.

        Raises:
            PostgresStopError: A process of this server outlived SIGKILL.
        """
        if self.stopped:
            return
        postmaster = self.postmaster_pid()
        command = [str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast", "-w"]
        subprocess.run(
            _as_user([*command, "-t", str(int(_STOP_TIMEOUT_S)), "-s"], self.os_user),
            capture_output=True,
            text=True,
            check=False,
        )
        if postmaster is not None and process_is_running(postmaster):
            with contextlib.suppress(ProcessLookupError):
                os.kill(postmaster, signal.SIGINT)  # the signal pg_ctl's fast mode sends
        survivors = self._wait_gone(postmaster, _STOP_TIMEOUT_S)
        for pid in survivors:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if survivors and self._wait_gone(postmaster, 5.0):
            raise PostgresStopError(f"PostgreSQL processes {survivors} of {self.data_dir} survived SIGKILL")
        self.stopped = True
        atexit.unregister(self.stop)

    def _wait_gone(self, postmaster: int | None, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        while True:
            alive = set(server_processes(self.data_dir))
            if postmaster is not None and process_is_running(postmaster):
                alive.add(postmaster)
            if not alive or time.monotonic() > deadline:
                return sorted(alive)
            time.sleep(0.05)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start_postgres(base_dir: Path, *, port: int | None = None) -> PostgresServer:
    """Initialise a cluster in ``base_dir/data``, start it on 127.0.0.1 and create database ``shop``.

    Args:
        base_dir: A folder for the data folder, the Unix socket and ``postgres.log``; created
            if missing. Its ``data`` folder must not exist yet. As root, the server's user must
            be able to enter it and every folder above it (see :func:`running_postgres`).
        port: The TCP port; by default a free one (retried if another process takes it first).

    Returns:
        The running server. Stop it with :meth:`PostgresServer.stop` or a ``with`` block; a
        server still running when Python exits is stopped then.

    Raises:
        PostgresNotFoundError: The server binaries are missing.
        PostgresStartError: As root, the server's user cannot reach ``base_dir``; or
            ``initdb`` or the start failed, and the message quotes the log.
        FileExistsError: ``base_dir/data`` exists already.
    """
    bindir = find_postgres_bindir()
    os_user = _os_user()
    base_dir = Path(base_dir).resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    if os_user is not None and (blocked := _first_unreachable(base_dir, os_user)) is not None:
        raise PostgresStartError(
            f"the server runs as {os_user.pw_name!r} (initdb refuses root), who may not enter {blocked}; "
            f"use running_postgres() or a base_dir in a folder others may enter, such as "
            f"{tempfile.gettempdir()}"
        )
    data_dir, socket_dir, log_path = base_dir / "data", base_dir / "run", base_dir / "postgres.log"
    password = secrets.token_urlsafe(24)

    began = time.monotonic()
    data_dir.mkdir(mode=0o700)
    socket_dir.mkdir(mode=0o700, exist_ok=True)
    log_path.touch(mode=0o600)
    pwfile = base_dir / "superuser.pw"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    if os_user is not None:
        for path in (data_dir, socket_dir, log_path, pwfile):
            os.chown(path, os_user.pw_uid, os_user.pw_gid)
    initdb = [
        str(bindir / "initdb"),
        f"--pgdata={data_dir}",
        f"--username={SUPERUSER}",
        f"--pwfile={pwfile}",
        "--auth=scram-sha-256",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
        "--no-instructions",
    ]
    try:
        result = subprocess.run(
            _as_user(initdb, os_user), cwd=base_dir, capture_output=True, text=True, check=False
        )
    finally:
        pwfile.unlink()
    if result.returncode != 0:
        raise PostgresStartError(f"initdb failed in {data_dir}:\n{(result.stdout + result.stderr).strip()}")
    init_seconds = time.monotonic() - began

    socket_file = f"{socket_dir}/.s.PGSQL.65535"
    # A socket path longer than the kernel allows would stop the server; TCP is all the tests use.
    socket_dirs = str(socket_dir) if len(socket_file.encode()) <= _SUN_PATH_MAX else ""
    settings = {
        **TEST_SETTINGS,
        "listen_addresses": _conf_quote(HOST),
        "unix_socket_directories": _conf_quote(socket_dirs),
    }
    with (data_dir / "postgresql.conf").open("a") as conf:
        conf.write("\n# tests/pg_server.py\n")
        conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    began = time.monotonic()
    server = None
    for attempt in range(1, _START_ATTEMPTS + 1):
        chosen = port if port is not None else free_port()
        # Later lines of postgresql.conf win, so each attempt appends its port.
        with (data_dir / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {chosen}\n")
        server = PostgresServer(
            host=HOST,
            port=chosen,
            user=SUPERUSER,
            password=password,
            database=DATABASE,
            data_dir=data_dir,
            log_path=log_path,
            bindir=bindir,
            os_user=os_user,
            init_seconds=init_seconds,
        )
        command = [str(bindir / "pg_ctl"), "start", "-w", "-t", "60", "-s"]
        started = subprocess.run(
            _as_user([*command, "-D", str(data_dir), "-l", str(log_path)], os_user),
            cwd=base_dir,
            capture_output=True,
            text=True,
            check=False,
        )
        if started.returncode == 0:
            break
        server.stop()  # whatever got started goes
        port_taken = "could not bind" in _log_tail(log_path, lines=5)
        if port is not None or not port_taken or attempt == _START_ATTEMPTS:
            raise PostgresStartError(
                f"PostgreSQL did not start on {HOST}:{chosen} ({started.stdout.strip()} "
                f"{started.stderr.strip()}); log {log_path}:\n{_log_tail(log_path)}"
            )
    assert server is not None
    atexit.register(server.stop)
    try:
        server.run_sql(f"CREATE DATABASE {DATABASE}", database="postgres")
    except BaseException:
        server.stop()
        raise
    server.start_seconds = time.monotonic() - began
    return server


@contextlib.contextmanager
def running_postgres(*, port: int | None = None) -> Iterator[PostgresServer]:
    """A server in a fresh folder of the system temp folder, stopped and removed on exit.

    The folder is created ``0755`` so that, as root, the server's user can enter it.
    """
    with tempfile.TemporaryDirectory(prefix="ecom-pg-") as folder:
        base_dir = Path(folder)
        base_dir.chmod(0o755)
        with start_postgres(base_dir, port=port) as server:
            yield server


@dataclass(frozen=True)
class PostgresShop:
    """A generated shop's landing zone, and the same shop loaded into a real PostgreSQL server.

    Attributes:
        server: The running test server (tests/pg_server.py); its database ``shop`` holds the
            loaded ``orders``, ``order_items`` and ``customers`` and serves as a template only.
        landing: The landing zone the shop was generated into (read-only for the tests).
    """

    server: PostgresServer
    landing: Path

    def database(self, name: str) -> PostgresServer:
        """A fresh copy of the loaded shop as database ``name``, for one test module to change."""
        return self.server.copy_database(name)
