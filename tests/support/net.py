"""Addresses for the tests: a free port, whether IPv6 works here, and starting a child on
free ports again when another process took one first."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: How many times :func:`on_free_ports` starts a child on new ports after it lost one.
BIND_ATTEMPTS = 5


class PortTaken(Exception):
    """A child could not bind a port it was given (EADDRINUSE): another process took it between
    :func:`free_port` choosing it and the child binding it."""


def ipv6_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (each was free when it was chosen)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def on_free_ports(start: Callable[[list[int]], T], count: int = 1,
                  attempts: int = BIND_ATTEMPTS) -> T:
    """``start(ports)`` with ``count`` free ports for a child process to bind. A port is free
    when chosen, not when the child binds it: when ``start`` raises :class:`PortTaken` (having
    stopped its child), it is called again with new ports, at most ``attempts`` times."""
    taken: list[str] = []
    for _ in range(attempts):
        try:
            return start(free_ports(count))
        except PortTaken as e:
            taken.append(str(e))
    raise AssertionError(f"lost the port to another process {attempts} times: {taken}")
