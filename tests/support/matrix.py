"""The parity matrix's machinery (issue 26): every test of a parity module runs once per
protocol, against servers started once per (protocol, configuration) per module.

``tests/conftest.py`` imports the fixtures below (``*_fixture``: pytest knows them by the name
each declares), so every test module has them; a parity module sets :data:`PARITY` as its
``pytestmark``; then

- ``proto`` (module scope) is parametrized over :data:`PROTOCOL_NAMES`, so every test of the
  module runs on every protocol by default;
- ``matrix.serve(*flags)`` gives the module's server for those flags on that protocol (started
  on first use with the protocol's own flags added, stopped with the module's last test of
  the protocol), as ``Served(server, client, proto)``;
- ``@behaviour("name")`` says which behaviour a test exercises; where a protocol legitimately
  does not have it, :data:`DIFFERENCES` says why, and the test is skipped there with that
  reason. That table is the one place a protocol difference is declared; what a protocol
  does differently on the wire (scheme, SERVER_PROTOCOL, framing) is in
  ``support.clients.PROTOCOLS``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple, TypeVar

import pytest

from .clients import PROTOCOLS, Certs, Client, Proto, make_certificates
from .server import Server, running_server

PROTOCOL_NAMES = tuple(PROTOCOLS)
PARITY_APP = "parity_app:app"
#: The body of parity_app's own 404 (tests/apps is the server's path, not the tests').
APP_404 = b"not found by the app"

#: (behaviour, protocol) -> why that protocol does not have the behaviour. Nothing else skips.
DIFFERENCES: dict[tuple[str, str], str] = {
    ("interim", "uwsgi"):
        "uwsgi carries one final response per request: no 1xx (103 Early Hints) goes back "
        "through the front end (docs/uwsgi.md)",
    ("continue", "uwsgi"):
        "Expect: 100-continue is answered by the front end (nginx) before it sends the "
        "packet; the uwsgi hop has no interim responses",
    ("forwarded-headers", "uwsgi"):
        "the front end states the client in the packet (REMOTE_ADDR, HTTPS); X-Forwarded-* "
        "are ordinary HTTP_* keys over uwsgi (docs/uwsgi.md; test_uwsgi.py covers it)",
    ("untrusted-peer", "h2c"):
        "h2c is only spoken with --forwarded-allow-ips peers: an untrusted peer gets "
        "HTTP/1.1 (docs/http2.md)",
    ("curl", "uwsgi"):
        "curl speaks no uwsgi: nginx is the uwsgi client (test_uwsgi.py drives a real one)",
    ("unsized-truncation", "uwsgi"):
        "a body without Content-Length is delimited by the connection's close over uwsgi, "
        "so a response cut short cannot be told from a whole one (as with uWSGI)",
}

F = TypeVar("F", bound=Callable[..., object])


def behaviour(name: str) -> Callable[[F], F]:
    """Names the behaviour a test exercises, for :data:`DIFFERENCES`."""
    assert any(b == name for b, _ in DIFFERENCES), f"no protocol differs on {name!r}"

    def mark(test: F) -> F:
        test.parity_behaviour = name  # type: ignore[attr-defined]
        return test
    return mark


class Served(NamedTuple):
    server: Server
    client: Client
    proto: Proto


class Matrix:
    """The servers of one module on one protocol, one per configuration."""

    def __init__(self, proto: Proto, certs: Certs) -> None:
        self.proto = proto
        self.certs = certs
        self.stack = contextlib.ExitStack()
        self.served: dict[tuple[str, tuple[str, ...]], Served] = {}

    def serve(self, *flags: str, app: str = PARITY_APP) -> Served:
        key = (app, flags)
        if key not in self.served:
            server = self.stack.enter_context(
                running_server(app, *self.proto.server_flags(self.certs), *flags))
            self.served[key] = Served(server, self.proto.client(server, self.certs), self.proto)
        return self.served[key]

    def close(self) -> None:
        self.stack.close()


@pytest.fixture(scope="session", name="certs")
def certs_fixture(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certificates(tmp_path_factory.mktemp("parity-certs"))


@pytest.fixture(scope="module", params=PROTOCOL_NAMES, name="proto")
def proto_fixture(request: pytest.FixtureRequest) -> Proto:
    return PROTOCOLS[request.param]


@pytest.fixture(scope="module", name="matrix")
def matrix_fixture(proto: Proto, certs: Certs) -> Iterator[Matrix]:
    m = Matrix(proto, certs)
    try:
        yield m
    finally:
        m.close()


#: A parity module's ``pytestmark``: each of its tests runs on every protocol, skipped where
#: :data:`DIFFERENCES` says the protocol has no such behaviour.
PARITY = pytest.mark.usefixtures("declared_differences")


@pytest.fixture(name="declared_differences")
def declared_differences_fixture(request: pytest.FixtureRequest, proto: Proto) -> None:
    name = getattr(request.function, "parity_behaviour", None)
    reason = DIFFERENCES.get((name, proto.name)) if name else None
    if reason:
        pytest.skip(f"{proto.name} differs on {name}: {reason}")


@pytest.fixture(scope="module", name="workdir")
def workdir_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for files the app writes (close() records, --max-pending signals)."""
    return tmp_path_factory.mktemp("parity")
