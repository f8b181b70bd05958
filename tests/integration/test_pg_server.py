"""The throwaway PostgreSQL server of tests/pg_server.py, run for real (no Spark).

The JDBC reader and the gold publisher will be tested against this server, so it is held to
what they rely on: rows written through the client come back unchanged, only the right
password gets in, nothing but 127.0.0.1 is bound, and a stopped server leaves no process and
no bound port behind.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from tests.pg_server import (
    PostgresServer,
    PostgresStartError,
    process_is_running,
    running_postgres,
    server_processes,
    start_postgres,
)
from tools.ports import free_port, port_is_free

pytestmark = pytest.mark.slow

ROW_COUNT = 10_000
TCP_LISTEN = "0A"


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    """One server for the module's checks; the stop tests start their own."""
    with running_postgres() as running:
        yield running


@pytest.fixture
def server_dir() -> Iterator[Path]:
    """A fresh folder the server's user can reach even as root (pytest's tmp_path it cannot)."""
    with tempfile.TemporaryDirectory(prefix="ecom-pg-test-") as folder:
        os.chmod(folder, 0o755)
        yield Path(folder)


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a TCP socket listening on ``port``, from the kernel's tables."""
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address_hex, port_hex = local.split(":")
            if state != TCP_LISTEN or int(port_hex, 16) != port:
                continue
            raw = bytes.fromhex(address_hex)
            # The kernel prints each 32-bit word in host (little-endian) order.
            in_order = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            addresses.add(str(ipaddress.ip_address(in_order)))
    return addresses


def processes_naming(data_dir: Path) -> list[int]:
    """Live processes whose command line names ``data_dir`` (the postmaster's ``-D``).

    A check independent of :func:`server_processes`, which matches working folders.
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            command_line = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(data_dir) in command_line and process_is_running(int(entry)):
            found.append(int(entry))
    return found


def assert_fully_stopped(server: PostgresServer, postmaster: int) -> None:
    assert server.stopped
    assert not process_is_running(postmaster)
    assert server_processes(server.data_dir) == []
    assert processes_naming(server.data_dir) == []
    assert not (server.data_dir / "postmaster.pid").exists()
    assert port_is_free(server.port)
    assert listening_addresses(server.port) == set()


def test_rows_inserted_through_the_client_read_back_unchanged(server: PostgresServer) -> None:
    expected = [
        (
            order_id,
            f"ORD-{order_id:05d}",
            Decimal(order_id * 37 % 100_000) / 100,
            # a null every 7th row; an edge row of quotes, tabs and non-ASCII text every 1000th
            None if order_id % 7 == 0 else ("O'Brien\t«café» ☕\n" if order_id % 1000 == 0 else "ok"),
        )
        for order_id in range(1, ROW_COUNT + 1)
    ]
    with server.connect() as conn:
        conn.execute(
            "CREATE TABLE orders_probe ("
            " order_id bigint PRIMARY KEY, reference text NOT NULL, amount numeric(12, 2), note text)"
        )
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO orders_probe (order_id, reference, amount, note) VALUES (%s, %s, %s, %s)",
                expected,
            )
    # a new connection sees only what the first one committed
    with server.connect() as conn:
        actual = conn.execute(
            "SELECT order_id, reference, amount, note FROM orders_probe ORDER BY order_id"
        ).fetchall()

    assert actual == expected
    assert server.run_sql("SELECT count(*), count(note), sum(amount) FROM orders_probe") == [
        (ROW_COUNT, sum(row[3] is not None for row in expected), sum(row[2] for row in expected))
    ]


@pytest.mark.parametrize("password", ["wrong", ""], ids=["wrong password", "no password"])
def test_a_bad_password_is_refused(server: PostgresServer, password: str) -> None:
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(
            host=server.host,
            port=server.port,
            user=server.user,
            password=password,
            dbname=server.database,
            connect_timeout=5,
        )


def test_the_server_listens_on_127_0_0_1_only(server: PostgresServer) -> None:
    assert listening_addresses(server.port) == {"127.0.0.1"}
    assert server.run_sql("SHOW listen_addresses") == [("127.0.0.1",)]
    # another loopback address reaches this machine too, but no socket of the server is bound to it
    for family, address in ((socket.AF_INET, "127.0.0.2"), (socket.AF_INET6, "::1")):
        with socket.socket(family, socket.SOCK_STREAM) as probe, pytest.raises(ConnectionRefusedError):
            probe.settimeout(5)
            probe.connect((address, server.port))


def test_urls_name_the_server_but_never_the_password(server: PostgresServer) -> None:
    assert server.url() == f"postgresql://postgres@127.0.0.1:{server.port}/shop"
    assert server.jdbc_url() == f"jdbc:postgresql://127.0.0.1:{server.port}/shop"
    assert server.jdbc_properties() == {
        "user": "postgres",
        "password": server.password,
        "driver": "org.postgresql.Driver",
    }
    assert len(server.password) >= 24
    for shown in (server.url(), server.jdbc_url(), repr(server)):
        assert server.password not in shown


def test_run_sql_runs_as_the_superuser_with_the_test_settings(server: PostgresServer) -> None:
    assert server.run_sql("SELECT current_user, current_database(), usesuper FROM pg_user") == [
        ("postgres", "shop", True)
    ]
    assert server.run_sql("CREATE DATABASE scratch") == []
    assert server.run_sql("SELECT current_database()", database="scratch") == [("scratch",)]
    assert server.run_sql("SELECT %s::int + 1 WHERE false", (1,)) == []
    settings = dict(
        server.run_sql(
            "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
            (["fsync", "synchronous_commit", "full_page_writes", "server_encoding", "TimeZone"],),
        )
    )
    assert settings == {
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "server_encoding": "UTF8",
        "TimeZone": "UTC",
    }


def test_stop_frees_the_port_and_ends_every_server_process(server_dir: Path) -> None:
    port = free_port()
    with start_postgres(server_dir, port=port) as server:
        postmaster = server.postmaster_pid()
        assert server.port == port
        assert not port_is_free(port)
        assert postmaster is not None
        assert postmaster in server_processes(server.data_dir)
        assert processes_naming(server.data_dir) == [postmaster]
        assert len(server_processes(server.data_dir)) > 1  # and its background workers

    assert_fully_stopped(server, postmaster)
    with pytest.raises(psycopg.OperationalError):
        server.connect()
    server.stop()  # a second stop is a no-op
    assert_fully_stopped(server, postmaster)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_stop_ends_the_server_when_its_user_can_no_longer_reach_the_data(server_dir: Path) -> None:
    # A folder above the data closed after the start: pg_ctl, run as the server's user, cannot
    # read postmaster.pid, so stop() must signal the server itself.
    locked = server_dir / "locked"
    server = start_postgres(locked / "pg")
    postmaster = server.postmaster_pid()
    assert postmaster is not None
    locked.chmod(0o700)
    try:
        server.stop()
    finally:
        locked.chmod(0o755)

    assert_fully_stopped(server, postmaster)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_start_as_root_refuses_a_folder_the_server_user_cannot_reach(server_dir: Path) -> None:
    private = server_dir / "private"
    private.mkdir(mode=0o700)

    with pytest.raises(PostgresStartError, match=f"may not enter {private}; use running_postgres"):
        start_postgres(private / "pg")
    assert not (private / "pg" / "data").exists()


def test_start_refuses_a_folder_that_holds_a_cluster(server: PostgresServer) -> None:
    with pytest.raises(FileExistsError):
        start_postgres(server.data_dir.parent)


def test_start_on_a_taken_port_fails_and_quotes_the_log(server: PostgresServer, server_dir: Path) -> None:
    with pytest.raises(PostgresStartError, match="could not bind"):
        start_postgres(server_dir, port=server.port)

    assert server_processes(server_dir / "data") == []
    assert server.run_sql("SELECT 1") == [(1,)]
