"""One client interface over every protocol ferrocorn speaks, for the parity matrix (issue 26).

``client.request(method, path, headers, body)`` returns a :class:`Reply` (status, headers,
body, and the interim 1xx responses that came before it) whichever protocol carried it:

=========  ==========================================================================
``h1``     HTTP/1.1 in cleartext, on a raw socket (support.raw's strict response parser)
``h1-tls`` HTTP/1.1 over TLS (ALPN ``http/1.1``)
``h2-tls`` HTTP/2 over TLS (ALPN ``h2``), driven with the ``h2`` package
``h2c``    HTTP/2 in cleartext with prior knowledge (``--http2-cleartext prior-knowledge``)
``uwsgi``  uwsgi packets as nginx's ``uwsgi_pass`` writes them (``--protocol uwsgi``)
=========  ==========================================================================

Each request goes over a connection of its own, so one exchange never depends on another.
:data:`PROTOCOLS` says, for each, the server flags it needs and what it legitimately does
differently on the wire (scheme, ``SERVER_PROTOCOL``, how an unsized body is delimited).
Certificates are made at run time (:func:`make_certificates`, with test_tls's issuer).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol as Interface
from urllib.parse import unquote

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from .certs import issue
from .raw import SOCK_TIMEOUT, RawConn, Response
from .server import Server

Headers = list[tuple[str, str]]


# ------------------------------------------------------------------------------- replies


@dataclass
class Interim:
    """A 1xx response (100 Continue, 103 Early Hints) that came before the final one."""

    status: int
    headers: Headers


@dataclass
class Reply:
    """A final response, the same shape over every protocol. Header names are lower-case."""

    status: int
    headers: Headers
    body: bytes
    interim: list[Interim] = field(default_factory=list)
    #: The body ended as its framing said it would (HTTP/1.x: the whole Content-Length, the
    #: last chunk, or the close; HTTP/2: END_STREAM).
    complete: bool = True
    #: How the body was delimited: ``length``, ``chunked``, ``close`` or ``none`` (HTTP/1.x),
    #: ``h2`` (DATA frames and END_STREAM).
    framing: str = ""
    #: HTTP/2: the RST_STREAM error code the server reset the stream with before its end.
    reset: int | None = None
    #: HTTP/1.x: the connection was reset (RST) rather than closed.
    connection_reset: bool = False
    version: str = ""

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    def names(self) -> set[str]:
        return {k for k, _ in self.headers}

    def json(self) -> object:
        import json
        return json.loads(self.body)

    def __repr__(self) -> str:
        return (f"<Reply {self.version} {self.status} framing={self.framing} "
                f"complete={self.complete} reset={self.reset} interim="
                f"{[i.status for i in self.interim]} headers={self.headers} "
                f"body={self.body[:120]!r}>")


class Client(Interface):
    """What every adapter offers."""

    #: ``host:port`` as the client sends it (Host, ``:authority``, ``HTTP_HOST``).
    authority: str

    def request(self, method: str = "GET", path: str = "/",
                headers: Iterable[tuple[str, str]] = (), body: bytes = b"", *,
                withhold_body: bool = False, expect_continue: bool = False) -> Reply:
        """One request on a connection of its own.

        A non-empty ``body`` is declared with a Content-Length (unless ``headers`` has one).
        ``withhold_body``: declare it, but never send it (a request refused on its head).
        ``expect_continue``: send ``Expect: 100-continue`` and the body only once a 100 came
        (if the final response comes first, the body is never sent).
        """
        ...


def _has(headers: Headers, name: str) -> bool:
    return any(k.lower() == name for k, _ in headers)


# ------------------------------------------------------------------------------- HTTP/1.1


class _Conn(RawConn):
    """support.raw's RawConn, reading a TLS close without close_notify as the end it is."""

    def _fill(self) -> bool:
        try:
            return super()._fill()
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            return False
        except ssl.SSLError:
            self.reset = True
            return False


def _interim(resp: Response) -> Interim:
    return Interim(resp.status, [(k.lower(), v) for k, v in resp.headers])


def _reply_from(resp: Response, interim: list[Interim], conn: RawConn, method: str) -> Reply:
    if resp.chunked:
        framing = "chunked"
    elif resp.close_delimited:
        framing = "close"
    elif resp.header("Content-Length") is not None and method != "HEAD" \
            and resp.status not in (204, 304):
        framing = "length"
    else:
        framing = "none"
    return Reply(resp.status, [(k.lower(), v) for k, v in resp.headers], resp.body, interim,
                 complete=resp.complete, framing=framing, connection_reset=conn.reset,
                 version=resp.version)


def _send_quietly(conn: RawConn, data: bytes) -> bool:
    """Sends ``data``; False when the server had already closed (it may have answered)."""
    try:
        conn.send(data)
        return True
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
        return False


class Http1Client:
    """HTTP/1.1, in cleartext or over TLS (``tls``: the client context, ALPN http/1.1)."""

    def __init__(self, server: Server, tls: ssl.SSLContext | None = None,
                 timeout: float = SOCK_TIMEOUT) -> None:
        self.server = server
        self.tls = tls
        self.timeout = timeout
        self.authority = f"{server.host}:{server.port}"

    def connect(self) -> RawConn:
        sock = socket.create_connection((self.server.host, self.server.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_hostname="localhost")
            assert sock.selected_alpn_protocol() == "http/1.1", \
                sock.selected_alpn_protocol()
        return _Conn(sock, self.timeout)

    def request(self, method: str = "GET", path: str = "/",
                headers: Iterable[tuple[str, str]] = (), body: bytes = b"", *,
                withhold_body: bool = False, expect_continue: bool = False) -> Reply:
        fields = list(headers)
        if (body or withhold_body) and not _has(fields, "content-length"):
            fields.append(("Content-Length", str(len(body))))
        if expect_continue:
            fields.append(("Expect", "100-continue"))
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.authority}"]
        lines += [f"{name}: {value}" for name, value in fields]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        interim: list[Interim] = []
        with self.connect() as conn:
            send_now = not expect_continue and not withhold_body
            _send_quietly(conn, head + body if send_now else head)
            for _ in range(100):  # bounded: a server sending 1xx forever fails the test
                resp = conn.response(method, skip_interim=False)
                if 100 <= resp.status < 200:
                    interim.append(_interim(resp))
                    if resp.status == 100 and expect_continue and not withhold_body:
                        _send_quietly(conn, body)
                    continue
                return _reply_from(resp, interim, conn, method)
        raise AssertionError(f"more than 100 interim responses: {interim[:3]}")


# ------------------------------------------------------------------------------- uwsgi


def uwsgi_packet(variables: list[tuple[str, str]], modifier1: int = 0) -> bytes:
    """A uwsgi request packet: a 4-byte header, then each name and value with its length."""
    block = b""
    for name, value in variables:
        for s in (name.encode("latin-1"), value.encode("latin-1")):
            block += struct.pack("<H", len(s)) + s
    return struct.pack("<BHB", modifier1, len(block), 0) + block


class UwsgiClient:
    """What nginx's ``uwsgi_pass`` sends, with its stock uwsgi_params: the CGI variables,
    each request header as ``HTTP_*``, the client's address as ``REMOTE_ADDR`` (here: this
    client's own), then the body; the response comes back as HTTP/1.x and the connection
    closes after it. There are no interim responses and no 100-continue on this hop."""

    def __init__(self, server: Server, timeout: float = SOCK_TIMEOUT) -> None:
        self.server = server
        self.timeout = timeout
        self.authority = f"{server.host}:{server.port}"

    def variables(self, sock: socket.socket, method: str, path: str, fields: Headers,
                  length: int) -> list[tuple[str, str]]:
        target, _, query = path.partition("?")
        client, client_port = sock.getsockname()[:2]
        content_type = next((v for k, v in fields if k.lower() == "content-type"), "")
        out = [
            ("QUERY_STRING", query), ("REQUEST_METHOD", method),
            ("CONTENT_TYPE", content_type), ("CONTENT_LENGTH", str(length) if length else ""),
            ("REQUEST_URI", path), ("PATH_INFO", unquote(target)),
            ("SERVER_PROTOCOL", "HTTP/1.1"), ("REQUEST_SCHEME", "http"),
            ("REMOTE_ADDR", client), ("REMOTE_PORT", str(client_port)),
            ("SERVER_PORT", str(self.server.port)), ("SERVER_NAME", self.server.host),
            ("HTTP_HOST", self.authority),
        ]
        for name, value in fields:
            # nginx leaves out names with "_" (underscores_in_headers off), as ferrocorn does.
            if name.lower() in ("host", "content-length") or "_" in name:
                continue
            out.append(("HTTP_" + name.upper().replace("-", "_"), value))
        return out

    def request(self, method: str = "GET", path: str = "/",
                headers: Iterable[tuple[str, str]] = (), body: bytes = b"", *,
                withhold_body: bool = False, expect_continue: bool = False) -> Reply:
        if expect_continue:
            raise ValueError("uwsgi has no 100-continue: the front end answers it")
        fields = list(headers)
        declared = next((int(v) for k, v in fields if k.lower() == "content-length"),
                        len(body))
        sock = socket.create_connection((self.server.host, self.server.port), self.timeout)
        with _Conn(sock, self.timeout) as conn:
            packet = uwsgi_packet(self.variables(sock, method, path, fields, declared))
            _send_quietly(conn, packet if withhold_body else packet + body)
            resp = conn.response(method, skip_interim=False)
            interim = []
            while 100 <= resp.status < 200:  # never expected: kept, so a test can see it
                interim.append(_interim(resp))
                resp = conn.response(method, skip_interim=False)
            return _reply_from(resp, interim, conn, method)


# ------------------------------------------------------------------------------- HTTP/2


class Http2Client:
    """HTTP/2 over TLS (ALPN ``h2``) or in cleartext with prior knowledge (``tls=None``)."""

    def __init__(self, server: Server, tls: ssl.SSLContext | None = None,
                 timeout: float = SOCK_TIMEOUT) -> None:
        self.server = server
        self.tls = tls
        self.timeout = timeout
        self.authority = f"{server.host}:{server.port}"
        self.scheme = "https" if tls is not None else "http"

    def connect(self) -> socket.socket:
        sock = socket.create_connection((self.server.host, self.server.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_hostname="localhost")
            assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
        return sock

    def request(self, method: str = "GET", path: str = "/",
                headers: Iterable[tuple[str, str]] = (), body: bytes = b"", *,
                withhold_body: bool = False, expect_continue: bool = False) -> Reply:
        fields = [(k.lower(), v) for k, v in headers]
        if (body or withhold_body) and not _has(fields, "content-length"):
            fields.append(("content-length", str(len(body))))
        if expect_continue:
            fields.append(("expect", "100-continue"))
        with contextlib.closing(self.connect()) as sock:
            stream = _Stream(sock, self.timeout)
            sid = stream.open([(":method", method), (":scheme", self.scheme),
                               (":authority", self.authority), (":path", path)] + fields,
                              end=not body and not withhold_body)
            if body and not withhold_body:
                if expect_continue:
                    stream.wait(lambda: stream.interim or stream.status is not None,
                                "a 100 Continue or the response")
                if not expect_continue or any(i.status == 100 for i in stream.interim):
                    stream.send_body(sid, body)
            stream.wait(lambda: stream.ended or stream.reset is not None or stream.closed,
                        "the end of the response")
            return stream.reply(method)


class _Stream:
    """One HTTP/2 connection carrying one request, read with the ``h2`` package (which also
    checks the server's frames: a connection-specific field in a response fails it)."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self.sock = sock
        self.deadline = time.monotonic() + timeout
        self.conn = h2.connection.H2Connection(config=h2.config.H2Configuration(
            client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.sid = 0
        self.interim: list[Interim] = []
        self.status: int | None = None
        self.headers: Headers = []
        self.trailers: Headers = []
        self.body = bytearray()
        self.ended = False
        self.reset: int | None = None
        self.closed = False
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            with contextlib.suppress(OSError):
                self.sock.sendall(data)

    def open(self, headers: Headers, end: bool) -> int:
        self.sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(self.sid, headers, end_stream=end)
        self.flush()
        return self.sid

    def send_body(self, sid: int, body: bytes) -> None:
        """Sends ``body`` and END_STREAM as the server's windows allow, reading meanwhile;
        stops when the server answered or reset the stream first."""
        view = memoryview(body)
        while view and not (self.ended or self.reset is not None or self.closed):
            try:
                room = min(self.conn.local_flow_control_window(sid),
                           self.conn.max_outbound_frame_size, len(view))
            except h2.exceptions.StreamClosedError:
                return
            if room <= 0:
                self.pump()
                continue
            self.conn.send_data(sid, bytes(view[:room]))
            view = view[room:]
            self.flush()
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            if not view:
                self.conn.end_stream(sid)
                self.flush()

    def pump(self) -> None:
        """Reads once (within the deadline) and handles what came."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"HTTP/2: timed out; so far {self.reply('GET')!r}")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        except (TimeoutError, socket.timeout):
            raise AssertionError(f"HTTP/2: timed out; so far {self.reply('GET')!r}") from None
        if not data:
            self.closed = True
            return
        for event in self.conn.receive_data(data):
            self.handle(event)
        self.flush()

    def handle(self, event: h2.events.Event) -> None:
        def decoded(pairs: Iterable[tuple[bytes, bytes]]) -> Headers:
            return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in pairs]

        if getattr(event, "stream_id", self.sid) != self.sid:
            return
        if isinstance(event, h2.events.InformationalResponseReceived):
            fields = decoded(event.headers)
            status = int(dict(fields)[":status"])
            self.interim.append(Interim(status, [f for f in fields if f[0][0] != ":"]))
        elif isinstance(event, h2.events.ResponseReceived):
            fields = decoded(event.headers)
            self.status = int(dict(fields)[":status"])
            self.headers = [f for f in fields if f[0][0] != ":"]
        elif isinstance(event, h2.events.TrailersReceived):
            self.trailers = decoded(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            self.body += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.ended = True
        elif isinstance(event, h2.events.StreamReset):
            if not self.ended:
                self.reset = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.closed = True

    def wait(self, done: object, what: str) -> None:
        assert callable(done)
        for _ in range(100_000):  # bounded by the deadline in pump()
            if done():
                return
            if self.closed:
                return
            self.pump()
        raise AssertionError(f"HTTP/2: never saw {what}")

    def reply(self, method: str) -> Reply:
        return Reply(self.status or 0, self.headers, bytes(self.body), list(self.interim),
                     complete=self.ended, framing="h2", reset=self.reset, version="HTTP/2")


# ------------------------------------------------------------------------------- protocols


@dataclass(frozen=True)
class Certs:
    """A throwaway CA and the server certificate it signed (for 127.0.0.1 and localhost)."""

    ca: Path
    cert: Path
    key: Path

    def client_context(self, alpn: list[str]) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.set_alpn_protocols(alpn)
        return ctx


def make_certificates(directory: Path) -> Certs:
    """Issued at run time (support.certs): nothing secret is ever committed."""
    ca = issue(directory, "parity-ca", cn="Ferrocorn Parity CA", ca=True)
    server = issue(directory, "parity-server", cn="localhost", issuer=ca)
    return Certs(ca.cert_path, server.cert_path, server.key_path)


@dataclass(frozen=True)
class Proto:
    """One protocol of the matrix and what it legitimately does differently."""

    name: str
    tls: bool = False
    http2: bool = False
    uwsgi: bool = False
    #: Flags the server needs for it (TLS flags come from :meth:`server_flags`).
    flags: tuple[str, ...] = ()
    #: How a response body without Content-Length is delimited.
    unsized_framing: str = "chunked"
    #: curl's flags for it (None: curl does not speak it).
    curl: tuple[str, ...] | None = ("--http1.1",)
    #: How a response the app fails in the middle of ends: ``short`` (the head and what was
    #: sent, then the connection ends before the body does), or ``reset`` (RST_STREAM; the
    #: frames still queued for the stream, its head included, may be dropped with it).
    cut_short: str = "short"

    @property
    def scheme(self) -> str:
        """``wsgi.url_scheme`` and the access log's scheme when no proxy says otherwise."""
        return "https" if self.tls else "http"

    @property
    def server_protocol(self) -> str:
        """``SERVER_PROTOCOL`` in the environ."""
        return "HTTP/2" if self.http2 else "HTTP/1.1"

    @property
    def log_protocol(self) -> str:
        """The access log's protocol (``%(H)s``, JSON ``protocol``)."""
        return "HTTP/2.0" if self.http2 else "HTTP/1.1"

    def check_connection_fields(self, reply: Reply) -> None:
        """HTTP/2 carries no connection-specific field (RFC 9113 §8.2.2; the ``h2`` package
        refuses one anyway); a uwsgi response closes its connection and says so."""
        if self.http2:
            assert not reply.names() & {"connection", "transfer-encoding", "keep-alive",
                                        "upgrade", "proxy-connection"}, reply
        if self.uwsgi:
            assert reply.header("connection") == "close", reply

    def server_flags(self, certs: Certs) -> tuple[str, ...]:
        tls = ("--certfile", str(certs.cert), "--keyfile", str(certs.key)) if self.tls else ()
        return tls + self.flags

    def client(self, server: Server, certs: Certs) -> Client:
        if self.uwsgi:
            return UwsgiClient(server)
        alpn = ["h2"] if self.http2 else ["http/1.1"]
        tls = certs.client_context(alpn) if self.tls else None
        if self.http2:
            return Http2Client(server, tls)
        return Http1Client(server, tls)


PROTOCOLS: dict[str, Proto] = {p.name: p for p in (
    Proto("h1"),
    Proto("h1-tls", tls=True),
    Proto("h2-tls", tls=True, http2=True, unsized_framing="h2", cut_short="reset",
          curl=("--http2",)),
    Proto("h2c", http2=True, flags=("--http2-cleartext", "prior-knowledge"),
          unsized_framing="h2", cut_short="reset", curl=("--http2-prior-knowledge",)),
    Proto("uwsgi", uwsgi=True, flags=("--protocol", "uwsgi"), unsized_framing="close",
          curl=None),
)}


def curl(proto: Proto, server: Server, certs: Certs, path: str,
         headers: Iterable[tuple[str, str]] = (), upload: Path | None = None) -> Reply:
    """One GET with the real curl, speaking ``proto`` (which must have ``curl`` flags); a POST
    of the file ``upload`` when given."""
    assert proto.curl is not None, f"curl does not speak {proto.name}"
    with tempfile.TemporaryDirectory() as tmp:
        head, body = Path(tmp) / "head", Path(tmp) / "body"
        cmd = ["curl", "-sS", *proto.curl, "-D", str(head), "-o", str(body),
               "-w", "%{http_version}"]
        if upload is not None:
            cmd += ["-X", "POST", "--data-binary", f"@{upload}"]
        if proto.tls:
            cmd += ["--cacert", str(certs.ca)]
        for name, value in headers:
            cmd += ["-H", f"{name}: {value}"]
        out = subprocess.run(cmd + [server.url + path], capture_output=True, text=True, check=False,
                             timeout=30)
        assert out.returncode == 0, f"curl exited {out.returncode}: {out.stderr}"
        # The last block is the final response (interim ones come before it).
        blocks = [b for b in head.read_bytes().decode("latin-1").split("\r\n\r\n") if b.strip()]
        status_line, *lines = blocks[-1].split("\r\n")
        fields = [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(":")
                                                                 for line in lines)]
        return Reply(int(status_line.split()[1]), fields, body.read_bytes(),
                     version=f"HTTP/{out.stdout}")
