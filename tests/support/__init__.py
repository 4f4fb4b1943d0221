"""Helpers for the integration tests (and bench/): the real server process, raw HTTP, /proc
readers, free ports and an nginx runner. ``tests/conftest.py`` holds only the fixtures.

The names most tests use are here; the rest are in the modules (``support.procfs``,
``support.nginx``, ...)."""

from .net import free_port, ipv6_available
from .procfs import tcp_sockets, vm_kib
from .raw import RawConn, Response, http_request, parse_responses
from .server import APPS_DIR, TESTS_DIR, Server, clean_env, ferrocorn_bin, running_server
from .wait import wait_for

__all__ = [
    "APPS_DIR", "TESTS_DIR", "RawConn", "Response", "Server", "clean_env", "ferrocorn_bin",
    "free_port", "http_request", "ipv6_available", "parse_responses", "running_server",
    "tcp_sockets", "vm_kib", "wait_for",
]
