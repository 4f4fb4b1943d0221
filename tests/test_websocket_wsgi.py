"""Issue 29: WebSockets for WSGI apps as Gunicorn's threaded worker offers them. A WebSocket
upgrade request carries `environ["gunicorn.socket"]`, a real socket whose bytes the core relays
to the client (TLS too); flask-sock, Flask-SocketIO (threading mode) and python-engineio work
unchanged. Real clients (the `websockets` library, python-socketio, wsproto over raw sockets)
against real `ferrocorn` processes.

Over TLS the clients are single-threaded (wsproto on an `ssl` socket, and a few lines of
Engine.IO on it for Socket.IO): the `websockets` sync client and python-socketio read on a
thread of their own while the caller writes on the same `ssl` socket, which OpenSSL does not
allow, and about one TLS connection in fifty then loses its bytes, against any server (the
`websockets` library's own server included)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio
from test_ctl import ask, sockdir  # noqa: F401 (a fixture)
from test_metrics import scrape, value
from test_tls import Pki, client_context, pki  # noqa: F401 (a fixture)
from websockets.sync.client import ClientConnection, connect
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Request,
    TextMessage,
)

from support import Server, free_port, http_request, wait_for

APP = "ws_app:app"


@pytest.fixture(params=["plain", "tls"])
def scheme(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def tls_args(pki: Pki) -> list[str]:  # noqa: F811 (the fixture's value)
    return ["--certfile", str(pki.server.cert_path), "--keyfile", str(pki.server.key_path)]


class Closed(Exception):
    """The server closed the WebSocket with this code and reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class RawWs:
    """A single-threaded WebSocket client: wsproto on a socket (TLS with `ctx`), reading only
    when told to."""

    def __init__(self, port: int, path: str, ctx: ssl.SSLContext | None = None,
                 timeout: float = 30) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock: socket.socket = \
            ctx.wrap_socket(raw, server_hostname="localhost") if ctx else raw
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(self.ws.send(Request(host="localhost", target=path)))
        self.events: list[Any] = []
        self.partial: dict[type, bytearray] = {}
        while not any(isinstance(e, AcceptConnection) for e in self.events):
            assert self.feed(), "closed before the handshake's answer"
        self.events = [e for e in self.events if not isinstance(e, AcceptConnection)]

    def feed(self) -> bool:
        data = self.sock.recv(256 * 1024)
        self.ws.receive_data(data or None)
        self.events.extend(self.ws.events())
        return bool(data)

    def send(self, message: str | bytes) -> None:
        self.sock.sendall(self.ws.send(Message(data=message)))

    def recv(self) -> str | bytes:
        """The next whole message; raises :class:`Closed` at the server's close frame (after
        answering it)."""
        while True:
            while self.events:
                event = self.events.pop(0)
                if isinstance(event, (BytesMessage, TextMessage)):
                    buf = self.partial.setdefault(type(event), bytearray())
                    buf += event.data if isinstance(event, BytesMessage) else \
                        event.data.encode()
                    if event.message_finished:
                        done = bytes(self.partial.pop(type(event)))
                        return done.decode() if isinstance(event, TextMessage) else done
                elif isinstance(event, CloseConnection):
                    with contextlib.suppress(Exception):
                        self.sock.sendall(self.ws.send(event.response()))
                    raise Closed(event.code, event.reason or "")
            if not self.feed():
                raise Closed(1006, "")

    def messages(self) -> Iterator[str | bytes]:
        """Messages until the server closes."""
        with contextlib.suppress(Closed):
            while True:
                yield self.recv()

    def close(self, code: int, reason: str = "") -> Closed:
        """Starts the close handshake; returns the server's answer."""
        self.sock.sendall(self.ws.send(CloseConnection(code=code, reason=reason)))
        try:
            while True:
                self.recv()
        except Closed as answer:
            return answer

    def shut(self) -> None:
        self.sock.close()


class MiniSocketIO:
    """Socket.IO (protocol 5 on Engine.IO 4) over a :class:`RawWs`: enough to join a chat."""

    def __init__(self, site: Site) -> None:
        self.ws = site.raw("/socket.io/?EIO=4&transport=websocket")
        opened = self.ws.recv()
        assert isinstance(opened, str) and opened.startswith("0"), opened
        self.ws.send("40")  # CONNECT to the default namespace
        connected = self.packet()
        assert connected.startswith("40"), connected

    def packet(self) -> str:
        while True:
            message = self.ws.recv()
            assert isinstance(message, str)
            if message == "2":  # the server's ping
                self.ws.send("3")
                continue
            return message

    def emit(self, event: str, data: Any) -> None:
        self.ws.send("42" + json.dumps([event, data]))

    def event(self) -> list[Any]:
        """The next EVENT packet's `[name, data]`."""
        while True:
            message = self.packet()
            if message.startswith("42"):
                return list(json.loads(message[2:]))


class Site:
    """A running server and how to reach it over its scheme."""

    def __init__(self, server: Server, ctx: ssl.SSLContext | None) -> None:
        self.server = server
        self.ctx = ctx

    def ws_url(self, path: str) -> str:
        if self.ctx is None:
            return f"ws://127.0.0.1:{self.server.port}{path}"
        return f"wss://localhost:{self.server.port}{path}"

    def http_url(self) -> str:
        if self.ctx is None:
            return f"http://127.0.0.1:{self.server.port}"
        return f"https://localhost:{self.server.port}"

    def ws(self, path: str = "/echo", **kwargs: Any) -> ClientConnection:
        try:
            # Generous: two cores shared with other builds can stall a process for seconds.
            return connect(self.ws_url(path), ssl=self.ctx, open_timeout=30, close_timeout=5,
                           max_size=None, **kwargs)
        except TimeoutError as e:
            raise AssertionError(f"no handshake: {e}\n{self.server.log[-4000:]}") from e

    def raw(self, path: str = "/echo") -> RawWs:
        return RawWs(self.server.port, path, self.ctx)

    def get(self, path: str) -> tuple[int, bytes]:
        import http.client
        if self.ctx is None:
            conn: http.client.HTTPConnection = http.client.HTTPConnection(
                "127.0.0.1", self.server.port, timeout=10)
        else:
            conn = http.client.HTTPSConnection("localhost", self.server.port, context=self.ctx,
                                               timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()


@pytest.fixture
def site_factory(start_server: Callable[..., Server], pki: Pki  # noqa: F811
                 ) -> Callable[..., Site]:
    def make(scheme: str = "plain", *args: str) -> Site:
        extra = tls_args(pki) if scheme == "tls" else []
        server = start_server(APP, "--threads", "8", "--log-level", "debug", *extra, *args)
        return Site(server, client_context(pki) if scheme == "tls" else None)
    return make


# ------------------------------------------------------------------------------ flask-sock

def test_flask_sock_echo_text_binary_and_large(site_factory: Callable[..., Site],
                                                scheme: str) -> None:
    site = site_factory(scheme)
    ws = site.raw()
    try:
        ws.send("hello")
        assert ws.recv() == "hello"
        ws.send(b"\x00\x01\xff")
        assert ws.recv() == b"\x00\x01\xff"
        text = "é" * (512 * 1024)  # 1 MiB of UTF-8
        ws.send(text)
        assert ws.recv() == text
        blob = os.urandom(4 * 1024 * 1024)
        ws.send(blob)
        assert ws.recv() == blob
        # Plain HTTP is served meanwhile, by another app thread.
        assert site.get("/hello") == (200, b"hello")
        ws.send("still here")
        assert ws.recv() == "still here"
        assert ws.close(1000).code == 1000
    finally:
        ws.shut()


def test_the_websockets_library_client_echoes(site_factory: Callable[..., Site]) -> None:
    """A second, independent client implementation (cleartext: see the module's note)."""
    site = site_factory("plain")
    with site.ws() as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        blob = os.urandom(2 * 1024 * 1024)
        ws.send(blob)
        assert ws.recv(timeout=20) == blob
        ws.close(code=4002, reason="bye")
        assert ws.protocol.close_rcvd is not None
        assert ws.protocol.close_rcvd.code == 4002

def test_close_codes_both_ways(site_factory: Callable[..., Site], scheme: str) -> None:
    site = site_factory(scheme)
    # The server closes with a code of the app's choosing.
    ws = site.raw()
    try:
        ws.send("close:4001")
        with pytest.raises(Closed) as closed:
            ws.recv()
        assert (closed.value.code, closed.value.reason) == (4001, "as asked")
    finally:
        ws.shut()
    # The client closes: the app answers the close handshake with the same code.
    ws = site.raw()
    try:
        ws.send("x")
        assert ws.recv() == "x"
        assert ws.close(4002, "bye").code == 4002
    finally:
        ws.shut()
    # Nothing was logged as an error: the app's StopIteration is Gunicorn's "done".
    assert site.get("/hello") == (200, b"hello")
    assert "Error handling request" not in site.server.log
    assert "Traceback" not in site.server.log

def test_a_frame_the_app_writes_after_its_call_returns_reaches_the_client(
        site_factory: Callable[..., Site], scheme: str) -> None:
    """simple-websocket answers a client's close frame from its reader thread after it has
    woken the app, which may have returned by then: the relay waits for the app's end of the
    socket to close (within a second) before it ends. The app's thread here writes only once
    the server has let the call's environ go. Without the wait, 4 connections in 6 lost the
    frame: five connections make a regression all but certain to show."""
    site = site_factory(scheme)
    for _ in range(5):
        ws = site.raw("/late-word")
        try:
            assert ws.recv() == "late"
        finally:
            ws.shut()
    assert site.get("/hello") == (200, b"hello")


def test_a_websocket_is_logged_as_a_101_and_counted(site_factory: Callable[..., Site]) -> None:
    mport = free_port()
    site = site_factory("plain", "--metrics-bind", f"127.0.0.1:{mport}", "--access-logfile", "-",
                        "--access-logformat", "%(r)s %(s)s")
    with site.ws() as ws:
        ws.send("counted")
        assert ws.recv(timeout=10) == "counted"
    wait_for(lambda: value(scrape(mport), "ferrocorn_websocket_tunnels_total") == 1,
             message="the tunnel to be counted")
    wait_for(lambda: "GET /echo HTTP/1.1 101" in site.server.stdout,
             message="the access log line")


def test_an_upgrade_request_to_a_plain_route_is_answered_as_usual(
        site_factory: Callable[..., Site]) -> None:
    site = site_factory("plain")
    conn = site.server.connect()
    try:
        upgrade = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                   ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                   ("Sec-WebSocket-Version", "13")]
        conn.send(http_request("/hello", headers=upgrade))
        reply = conn.response()
        # Werkzeug's routing refuses a WebSocket request to an HTTP route: the app's answer,
        # through start_response, goes out as any other.
        assert reply.status == 400 and b"Bad Request" in reply.body
        # The connection goes on as a keep-alive one.
        conn.send(http_request("/hello"))
        assert conn.response().status == 200
    finally:
        conn.close()


# --------------------------------------------------------------------------- Flask-SocketIO

def test_socketio_chat_two_clients_see_each_other(site_factory: Callable[..., Site]) -> None:
    site = site_factory("plain")
    seen: dict[str, list[Any]] = {"alice": [], "bob": []}
    cond = threading.Condition()
    clients = {}
    for name in ("alice", "bob"):
        client = socketio.Client(reconnection=False)

        def said(data: Any, who: str = name) -> None:
            with cond:
                seen[who].append(data)
                cond.notify_all()

        client.on("said", said)
        try:
            client.connect(site.http_url(), transports=["websocket"], wait_timeout=30)
        except socketio.exceptions.ConnectionError as e:
            raise AssertionError(f"{name}: {e}\n{site.server.log[-4000:]}") from e
        assert client.transport() == "websocket"
        clients[name] = client
    try:
        clients["alice"].emit("say", {"from": "alice", "text": "hi bob"})
        clients["bob"].emit("say", {"from": "bob", "text": "hi alice"})
        expected = [{"from": "alice", "text": "hi bob"}, {"from": "bob", "text": "hi alice"}]

        def everyone_saw_both() -> bool:
            return all(sorted(seen[n], key=lambda d: d["from"]) == expected for n in seen)

        with cond:
            assert cond.wait_for(everyone_saw_both, timeout=30), seen
    finally:
        for client in clients.values():
            client.disconnect()
    assert "Traceback" not in site.server.log


def test_socketio_chat_over_tls(site_factory: Callable[..., Site]) -> None:
    """The same chat over TLS, with Engine.IO spoken by a single-threaded client."""
    site = site_factory("tls")
    alice, bob = MiniSocketIO(site), MiniSocketIO(site)
    try:
        alice.emit("say", {"from": "alice", "text": "hi bob"})
        bob.emit("say", {"from": "bob", "text": "hi alice"})
        expected = [["said", {"from": "alice", "text": "hi bob"}],
                    ["said", {"from": "bob", "text": "hi alice"}]]
        for client in (alice, bob):
            got = [client.event(), client.event()]
            assert sorted(got, key=lambda e: e[1]["from"]) == expected
    finally:
        alice.ws.shut()
        bob.ws.shut()
    assert "Traceback" not in site.server.log

# ------------------------------------------------------------- connections, threads, stops

def test_an_open_websocket_is_counted_holds_a_thread_and_is_never_reclaimed(
        start_server: Callable[..., Server], sockdir: Path) -> None:  # noqa: F811
    path = sockdir / "ferrocorn.ctl"
    server = start_server(APP, "--threads", "4", "--worker-connections", "2",
                          "--keep-alive", "60", "--control-socket", str(path),
                          "--log-level", "debug")
    site = Site(server, None)
    with site.ws() as ws:
        ws.send("one")
        assert ws.recv(timeout=10) == "one"
        data = wait_for(
            lambda: (d := ask(path, "show", "workers"))["workers"][0]["busy_threads"] == 1
            and d, message="the websocket's app thread to count as busy")
        assert data["workers"][0]["connections"] >= 1
        # The other slot goes to a keep-alive connection that then idles.
        idle = server.connect()
        idle.send(http_request("/hello"))
        assert idle.response().status == 200
        # At the cap, a new client is served in the idle connection's place, not the
        # websocket's, which is busy for as long as it is open.
        fresh = server.connect()
        fresh.send(http_request("/hello"))
        assert fresh.response().status == 200
        assert idle.read_until_close(timeout=5) == b""
        server.wait_log(r"closed the longest-idle keep-alive")
        ws.send("two")
        assert ws.recv(timeout=10) == "two"
        fresh.close()
        idle.close()


def test_a_websocket_open_past_timeout_does_not_get_the_worker_killed(
        site_factory: Callable[..., Site]) -> None:
    """--timeout is for hung requests; an app thread serving a websocket is not one."""
    site = site_factory("plain", "--timeout", "2")
    workers = site.server.worker_pids()
    with site.ws() as ws:
        deadline = time.monotonic() + 3.5  # past --timeout and a few heartbeats
        rounds = 0
        while time.monotonic() < deadline:
            ws.send(f"round {rounds}")
            assert ws.recv(timeout=10) == f"round {rounds}"
            assert site.get("/hello") == (200, b"hello")
            rounds += 1
    assert site.server.worker_pids() == workers
    assert "has run for more than" not in site.server.log


def test_graceful_stop_closes_websockets_with_going_away(
        site_factory: Callable[..., Site], scheme: str) -> None:
    site = site_factory(scheme)
    ws = site.raw()
    try:
        ws.send("before")
        assert ws.recv() == "before"
        started = time.monotonic()
        site.server.signal(signal.SIGTERM)
        with pytest.raises(Closed) as closed:
            ws.recv()
        assert closed.value.code == 1001
    finally:
        ws.shut()
    assert site.server.wait_exit(timeout=15) == 0
    # Well within --graceful-timeout (30 s): the websocket does not hold the stop up.
    assert time.monotonic() - started < 10

# ---------------------------------------------------------------------------- backpressure

def test_a_client_that_stops_reading_pauses_the_app(site_factory: Callable[..., Site]) -> None:
    site = site_factory("plain")
    total = 512  # messages of 64 KiB: 32 MiB in all
    client = site.raw("/flood")
    try:
        client.send(str(total))

        def progress() -> dict[str, int]:
            status, body = site.get("/progress")
            assert status == 200
            return json.loads(body)

        last = {"sent": -1, "since": time.monotonic()}

        def stalled() -> bool:
            sent = progress()["sent"]
            now = time.monotonic()
            if sent != last["sent"]:
                last.update(sent=sent, since=now)
                return False
            return sent > 0 and now - last["since"] >= 1.0

        wait_for(stalled, timeout=30, interval=0.1, message="the app's sends to block")
        sent = progress()["sent"]
        assert progress()["done"] == 0
        # What the kernel's socket buffers (loopback TCP autotunes them to a few MiB), the
        # relay's 16 KiB and the pair's hold: not the 32 MiB the app wanted to send.
        assert sent * 64 * 1024 < 20 * 1024 * 1024, f"{sent} messages taken in"
        # Reading again lets the app go on; every message arrives, in order.
        got = 0
        for message in client.messages():
            assert int.from_bytes(message[:8], "big") == got
            assert len(message) == 64 * 1024
            got += 1
            if got == total:
                break
        assert got == total
        client.send("thanks")
        assert progress() == {"sent": total, "done": 1}
    finally:
        client.sock.close()


def test_a_flooding_client_is_not_buffered_without_bound(
        site_factory: Callable[..., Site]) -> None:
    site = site_factory("plain")
    client = site.raw("/raw-sink")
    try:
        client.sock.setblocking(False)
        frame = client.ws.send(Message(data=bytes(64 * 1024)))
        pushed = 0
        limit = 256 * 1024 * 1024
        # Send until the connection takes nothing for 2 s (the app reads nothing).
        while pushed < limit:
            _, writable, _ = select.select([], [client.sock], [], 2.0)
            if not writable:
                break
            try:
                pushed += client.sock.send(frame)
            except BlockingIOError:
                continue
        assert pushed < 32 * 1024 * 1024, f"the server took in {pushed} bytes"
        # The worker serves on meanwhile.
        assert site.get("/hello") == (200, b"hello")
        # The app returns (raising StopIteration, Gunicorn's way): the connection closes.
        assert site.get("/release") == (200, b"released")
        client.sock.setblocking(True)
        client.sock.settimeout(10)
        # (The server may reset rather than close a connection whose bytes it dropped.)
        with contextlib.suppress(ConnectionResetError):
            while client.sock.recv(65536):
                pass
    finally:
        client.sock.close()
    assert "Error handling request" not in site.server.log
