"""Ports for the servers tests start: free, distinct, and never the kernel's ephemeral ones."""

from __future__ import annotations

import socket

from tools.ports import HOST, LOWEST_PORT, ephemeral_range, free_port, free_ports, port_is_free


def test_chosen_ports_are_distinct_free_and_outside_the_ephemeral_range():
    low, high = ephemeral_range()
    ports = free_ports(4)
    assert len(set(ports)) == 4
    for port in [*ports, free_port()]:
        assert port >= LOWEST_PORT and not low <= port <= high, (port, (low, high))
        assert port_is_free(port)


def test_a_port_some_socket_listens_on_is_not_free():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind((HOST, free_port()))
        server.listen()
        assert not port_is_free(server.getsockname()[1])


def test_a_port_the_kernel_hands_to_port_0_is_in_its_ephemeral_range():
    # What Spark's driver sockets get: the reason servers' ports are chosen elsewhere.
    low, high = ephemeral_range()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        assert low <= probe.getsockname()[1] <= high
