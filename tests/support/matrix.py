"""The parity matrix's machinery (issues 26 and 28): every test of a parity module runs once per
protocol and per interface (WSGI, ASGI), against servers started once per (protocol,
interface, configuration) per module.

``tests/conftest.py`` imports the fixtures below (``*_fixture``: pytest knows them by the name
each declares), so every test module has them; a parity module sets :data:`PARITY` as its
``pytestmark``; then

- ``proto`` and ``interface`` (module scope) are parametrized over :data:`PROTOCOL_NAMES` and
  :data:`INTERFACES`, so every test of the module runs on every protocol with a WSGI app
  (tests/apps/parity_app.py) and with an ASGI app (tests/apps/parity_asgi.py) by default;
- ``matrix.serve(*flags)`` gives the module's server for those flags on that protocol and
  interface (started on first use with the protocol's own flags added, stopped with the
  module's last test of the combination), as ``Served(server, client, proto, interface)``;
- ``@behaviour("name")`` says which behaviour a test exercises; where a protocol or an
  interface legitimately does not have it, :data:`DIFFERENCES` says why, and the test is
  skipped there with that reason. That table is the one place a difference is declared; what
  a protocol does differently on the wire (scheme, SERVER_PROTOCOL, framing) is in
  ``support.clients.PROTOCOLS``, and how an ASGI scope says what a WSGI environ says is
  :func:`as_environ`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import pytest

from .clients import PROTOCOLS, Certs, Client, Proto, Reply, make_certificates
from .server import Server, running_server

PROTOCOL_NAMES = tuple(PROTOCOLS)
PARITY_APP = "parity_app:app"
#: The app of each interface: the same routes where the interface has the behaviour.
INTERFACES: dict[str, str] = {"wsgi": PARITY_APP, "asgi": "parity_asgi:app"}
#: The body of parity_app's own 404 (tests/apps is the server's path, not the tests').
APP_404 = b"not found by the app"

#: (behaviour, protocol or interface) -> why that protocol or interface does not have the
#: behaviour. Nothing else skips.
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
    # The interfaces: what PEP 3333 has and ASGI 3 has not (or ferrocorn does not do yet).
    ("readline", "asgi"):
        "wsgi.input's readline() and its reads after the end are PEP 3333's; an ASGI app "
        "receives http.request messages (the echo and hash tests read those)",
    ("write-callable", "asgi"):
        "the write() callable start_response returns is PEP 3333's; ASGI streams with "
        "more_body (the streamed-body tests)",
    ("iterable-close", "asgi"):
        "close() on the app's iterable is PEP 3333's; an ASGI app's coroutine simply returns",
    ("exc-info", "asgi"):
        "start_response(status, headers, exc_info) (replacing the head, re-raising once it "
        "went out) is PEP 3333's; ASGI has one http.response.start, a second is an error "
        "(test_asgi.py)",
    ("file-like", "asgi"):
        "wsgi.file_wrapper of an object without fileno() is PEP 3333's; ASGI sends a file by "
        "its path (http.response.pathsend, the file test) or its descriptor "
        "(http.response.zerocopysend, the file-from-an-offset test)",
}

F = TypeVar("F", bound=Callable[..., object])


def behaviour(name: str) -> Callable[[F], F]:
    """Names the behaviour a test exercises, for :data:`DIFFERENCES`."""
    assert any(b == name for b, _ in DIFFERENCES), f"nothing differs on {name!r}"

    def mark(test: F) -> F:
        test.parity_behaviour = name  # type: ignore[attr-defined]
        return test
    return mark


class Served(NamedTuple):
    server: Server
    client: Client
    proto: Proto
    #: ``wsgi`` or ``asgi``: which parity app the server serves.
    interface: str

    @property
    def tag(self) -> str:
        """``PROTOCOL-INTERFACE``: names the files a test shares with the app (records,
        signals) apart from those of the module's other combinations."""
        return f"{self.proto.name}-{self.interface}"


class Matrix:
    """The servers of one module on one protocol and interface, one per configuration."""

    def __init__(self, proto: Proto, interface: str, certs: Certs) -> None:
        self.proto = proto
        self.interface = interface
        self.certs = certs
        self.stack = contextlib.ExitStack()
        self.served: dict[tuple[str, tuple[str, ...]], Served] = {}

    def serve(self, *flags: str) -> Served:
        key = (self.interface, flags)
        if key not in self.served:
            server = self.stack.enter_context(running_server(
                INTERFACES[self.interface], "--interface", self.interface,
                *self.proto.server_flags(self.certs), *flags))
            self.served[key] = Served(server, self.proto.client(server, self.certs),
                                      self.proto, self.interface)
        return self.served[key]

    def close(self) -> None:
        self.stack.close()


# ------------------------------------------------------------------------------- environ and scope

#: ``tls_version`` of the ASGI tls extension -> SSL_PROTOCOL's name for it.
TLS_VERSIONS = {0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}


def as_environ(scope: dict[str, Any]) -> dict[str, object]:
    """What an ASGI scope (parity_asgi's /env, bytes as latin-1 text) says, under the WSGI
    environ's names, so a test asks the same of both interfaces:

    =====================  ===============================================================
    REQUEST_METHOD         ``method``
    SCRIPT_NAME            ``root_path``
    PATH_INFO              ``path`` without ``root_path``
    QUERY_STRING           ``query_string``
    SERVER_PROTOCOL        ``HTTP/`` + ``http_version``
    wsgi.url_scheme        ``scheme``
    REMOTE_ADDR            ``client[0]``
    SERVER_NAME/PORT       ``server``
    CONTENT_TYPE/LENGTH    the ``content-type`` and ``content-length`` fields
    HTTP_*                 every other field (repeats joined with ``,``), except names with
                           ``_``, which a gateway drops so they cannot pass for ``-`` ones
    HTTPS, SSL_PROTOCOL    the ``tls`` extension (``on``; its ``tls_version`` by name)
    =====================  ===============================================================
    """
    env: dict[str, object] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope["root_path"],
        "PATH_INFO": scope["path"][len(scope["root_path"]):],
        "QUERY_STRING": scope["query_string"],
        "SERVER_PROTOCOL": "HTTP/" + scope["http_version"],
        "wsgi.url_scheme": scope["scheme"],
    }
    if scope.get("client"):
        env["REMOTE_ADDR"] = scope["client"][0]
    if scope.get("server"):
        env["SERVER_NAME"], env["SERVER_PORT"] = scope["server"][0], str(scope["server"][1])
    for name, value in scope["headers"]:
        if "_" in name:
            continue
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        env[key] = f"{env[key]},{value}" if key in env else value
    tls = scope.get("extensions", {}).get("tls")
    if tls is not None:
        env["HTTPS"] = "on"
        env["SSL_PROTOCOL"] = TLS_VERSIONS.get(tls["tls_version"], str(tls["tls_version"]))
    return env


def environ_of(site: Served, reply: Reply) -> dict[str, object]:
    """The environ (WSGI) or the scope as one (ASGI, :func:`as_environ`) that the app's /env
    route answered ``reply`` with, as plain values."""
    assert reply.status == 200, reply
    data = json.loads(reply.body)
    if site.interface == "asgi":
        return as_environ(data["scope"])
    return {k: v["value"] for k, v in data.items() if isinstance(v, dict) and "value" in v}


# ------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session", name="certs")
def certs_fixture(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certificates(tmp_path_factory.mktemp("parity-certs"))


@pytest.fixture(scope="module", params=PROTOCOL_NAMES, name="proto")
def proto_fixture(request: pytest.FixtureRequest) -> Proto:
    return PROTOCOLS[request.param]


@pytest.fixture(scope="module", params=tuple(INTERFACES), name="interface")
def interface_fixture(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module", name="matrix")
def matrix_fixture(proto: Proto, interface: str, certs: Certs) -> Iterator[Matrix]:
    m = Matrix(proto, interface, certs)
    try:
        yield m
    finally:
        m.close()


#: A parity module's ``pytestmark``: each of its tests runs on every protocol and interface,
#: skipped where :data:`DIFFERENCES` says the protocol or interface has no such behaviour.
PARITY = pytest.mark.usefixtures("declared_differences")


@pytest.fixture(name="declared_differences")
def declared_differences_fixture(request: pytest.FixtureRequest, proto: Proto,
                                 interface: str) -> None:
    name = getattr(request.function, "parity_behaviour", None)
    if not name:
        return
    for where in (interface, proto.name):
        reason = DIFFERENCES.get((name, where))
        if reason:
            pytest.skip(f"{where} differs on {name}: {reason}")


@pytest.fixture(scope="module", name="workdir")
def workdir_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for files the app writes (close() records, --max-pending signals)."""
    return tmp_path_factory.mktemp("parity")
