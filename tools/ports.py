"""Free TCP ports for the servers the project starts (PostgreSQL, Kafka, a Spark cluster), chosen
outside the kernel's ephemeral range.

The kernel hands out ports of its ephemeral range (Linux: ``/proc/sys/net/ipv4/ip_local_port_range``,
32768-60999 by default) to every socket bound to port 0: a "free port" probed that way, and
the short-lived sockets every Spark driver opens to pass results to Python. A server's port
taken from that range can therefore belong to another process's Spark socket a moment after
the server stopped (or before it started), and a client still retrying it (a readiness probe,
a Kafka client reconnecting after its broker stopped) then connects to Spark's socket instead:
Spark refuses its handshake and the Python side it was meant for fails ("connection refused",
``SocketAuthHelper`` errors). Ports below that range are never handed out that way, so a
server's port here stays its own.
"""

from __future__ import annotations

import contextlib
import random
import socket
from pathlib import Path

HOST = "127.0.0.1"
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# The kernel's default range where the file is missing (Linux's; macOS uses 49152-65535).
DEFAULT_EPHEMERAL_RANGE = (32768, 60999)
# Registered ports below this are left to the services that commonly use them.
LOWEST_PORT = 20000
HIGHEST_PORT = 65535
ATTEMPTS = 200


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range of ports for sockets bound to port 0 (inclusive)."""
    with contextlib.suppress(OSError, ValueError):
        low, high = (int(part) for part in EPHEMERAL_RANGE_FILE.read_text().split())
        return low, high
    return DEFAULT_EPHEMERAL_RANGE


def candidate_ports() -> list[int]:
    """Ports from :data:`LOWEST_PORT` up that are outside the ephemeral range."""
    low, high = ephemeral_range()
    return [port for port in range(LOWEST_PORT, HIGHEST_PORT + 1) if not low <= port <= high]


def port_is_free(port: int, host: str = HOST) -> bool:
    """True when a server could listen on ``host:port`` now (no listener holds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the servers' own sockets do (JVM, PostgreSQL): connections a stopped server closed
        # linger in TIME_WAIT for a minute and do not keep a new server from binding the port.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int, host: str = HOST) -> list[int]:
    """``count`` distinct ports of ``host`` that nothing holds now, outside the ephemeral range.

    Each is held while the others are chosen, so they differ; another process may still take
    one before its server binds it (the server's start then fails and says so).

    Raises:
        OSError: Not enough free ports were found in :data:`ATTEMPTS` tries.
    """
    candidates = candidate_ports()
    held: list[socket.socket] = []
    try:
        for port in random.sample(candidates, min(ATTEMPTS, len(candidates))):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                probe.bind((host, port))
            except OSError:
                probe.close()
                continue
            held.append(probe)
            if len(held) == count:
                return [int(s.getsockname()[1]) for s in held]
    finally:
        for probe in held:
            probe.close()
    raise OSError(f"no {count} free TCP ports on {host} between {LOWEST_PORT} and {HIGHEST_PORT}")


def free_port(host: str = HOST) -> int:
    """One port of ``host`` that nothing holds now, outside the ephemeral range."""
    return free_ports(1, host)[0]
