"""Issue 29: ASGI's websocket scope, on the RFC 6455 protocol the core speaks itself.

Starlette, FastAPI and Django Channels apps (tests/apps/asgi_ws*.py), against real ``ferrocorn``
processes, driven by two client implementations: wsproto on a plain or TLS socket (the module's
:class:`Ws`, single-threaded, reading only when told to) and the ``websockets`` library
(cleartext: see tests/test_websocket_wsgi.py's note on its threads over TLS)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import signal
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

import pytest
from test_http2 import Client as H2Client
from test_metrics import scrape, value
from test_tls import Pki, client_context, pki  # noqa: F401 (a fixture)
from test_websocket_wsgi import Closed, RawWs, tls_args
from test_websocket_wsgi import Site as WsgiSite
from websockets.exceptions import ConnectionClosed
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Message, RejectConnection, Request
from wsproto.frame_protocol import FrameProtocol, Opcode

from support import Server, free_port, http_request, wait_for
from support.procfs import vm_kib
from support.wsframes import BINARY, TEXT, H2WsClient

APP = "asgi_ws:app"


@pytest.fixture(params=["plain", "tls"])
def scheme(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Ws(RawWs):
    """:class:`RawWs` offering subprotocols, keeping the server's accept."""

    def __init__(self, port: int, path: str, ctx: ssl.SSLContext | None = None,
                 subprotocols: list[str] | None = None,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock: socket.socket = \
            ctx.wrap_socket(raw, server_hostname="localhost") if ctx else raw
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(self.ws.send(Request(host="localhost", target=path,
                                               subprotocols=subprotocols or [],
                                               extra_headers=headers or [])))
        self.events: list[Any] = []
        self.partial: dict[type, bytearray] = {}
        while not any(isinstance(e, AcceptConnection) for e in self.events):
            assert self.feed(), "closed before the handshake's answer"
        self.accepted: AcceptConnection = next(
            e for e in self.events if isinstance(e, AcceptConnection))
        self.events = [e for e in self.events if not isinstance(e, AcceptConnection)]


class Site(WsgiSite):
    """A running ASGI server and how to reach it over its scheme (the WSGI tests' clients,
    with subprotocols offered through :class:`Ws`)."""

    def raw(self, path: str = "/echo", subprotocols: list[str] | None = None) -> Ws:
        return Ws(self.server.port, path, self.ctx, subprotocols)

    def seen(self) -> dict[str, Any]:
        status, body = self.get("/seen")
        assert status == 200, body
        return dict(json.loads(body))

    def handshake(self, path: str, *, key: str = "dGhlIHNhbXBsZSBub25jZQ==",
                  version: str = "13") -> tuple[int, dict[str, str], bytes]:
        """A hand-made handshake on a fresh connection: the status, fields and body."""
        conn = self.server.connect()
        try:
            conn.send(http_request(path, headers=[
                ("Upgrade", "websocket"), ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", version)]))
            reply = conn.response()
            return reply.status, {k.lower(): v for k, v in reply.headers}, reply.body
        finally:
            conn.close()


@pytest.fixture
def site_factory(start_server: Callable[..., Server], pki: Pki  # noqa: F811
                 ) -> Callable[..., Site]:
    def make(scheme: str = "plain", *args: str, app: str = APP, **kwargs: Any) -> Site:
        extra = tls_args(pki) if scheme == "tls" else []
        server = start_server(app, "--log-level", "debug", *extra, *args, **kwargs)
        return Site(server, client_context(pki) if scheme == "tls" else None)
    return make


def disconnects(site: Site, count: int) -> list[list[Any]]:
    """The app's websocket.disconnect codes and reasons, once it has seen ``count``."""
    def enough() -> list[list[Any]] | None:
        seen = list(site.seen()["disconnects"])
        return seen if len(seen) >= count else None
    return list(wait_for(enough, timeout=10, message=f"the app to see {count} disconnect(s)"))


# ------------------------------------------------------------------------------- Starlette

def test_starlette_echo_text_binary_large_subprotocol_and_close_codes(
        site_factory: Callable[..., Site], scheme: str) -> None:
    site = site_factory(scheme)
    ws = site.raw(subprotocols=["v0", "v1", "v2"])
    try:
        # The app chose the last it knows of those offered, and sent its own fields.
        assert ws.accepted.subprotocol == "v2"
        fields = {k.decode(): v.decode() for k, v in ws.accepted.extra_headers}
        assert fields["x-accepted-by"] == "starlette"
        assert fields["set-cookie"] == "ws=1"
        ws.send("hello")
        assert ws.recv() == "hello"
        ws.send(b"\x00\x01\xff")
        assert ws.recv() == b"\x00\x01\xff"
        text = "é" * (512 * 1024)  # 1 MiB of UTF-8
        ws.send(text)
        assert ws.recv() == text
        blob = os.urandom(1024 * 1024)
        ws.send(blob)
        assert ws.recv() == blob
        # HTTP is served meanwhile by the same loop.
        assert site.get("/hello") == (200, b"hello")
        # The client closes: the app hears its code and reason.
        assert ws.close(4002, "bye").code == 4002
    finally:
        ws.shut()
    assert disconnects(site, 1) == [[4002, "bye"]]
    # The app closes with a code and reason of its own; it hears the client's answer.
    ws = site.raw()
    try:
        ws.send("close:4001:as asked")
        with pytest.raises(Closed) as closed:
            ws.recv()
        assert (closed.value.code, closed.value.reason) == (4001, "as asked")
    finally:
        ws.shut()
    assert disconnects(site, 2)[1][0] == 4001
    assert "Traceback" not in site.server.log


def test_the_websocket_scope(site_factory: Callable[..., Site], scheme: str) -> None:
    site = site_factory(scheme)
    ws = site.raw("/echo?room=1&x=%20", subprotocols=["v1", "chat"])
    try:
        ws.send("scope")
        scope = json.loads(ws.recv())
    finally:
        ws.shut()
    assert scope["type"] == "websocket"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == ("wss" if scheme == "tls" else "ws")
    assert (scope["path"], scope["raw_path"]) == ("/echo", "/echo")
    assert scope["query_string"] == "room=1&x=%20"
    assert scope["root_path"] == ""
    assert scope["subprotocols"] == ["v1", "chat"]
    assert not scope["has_method"]
    names = [name for name, _ in scope["headers"]]
    assert "sec-websocket-key" in names and "upgrade" in names
    assert ["sec-websocket-protocol", "v1, chat"] in scope["headers"]
    assert scope["client"][0] == "127.0.0.1"
    assert scope["server"] == ["127.0.0.1", site.server.port]
    expected = ["websocket.http.response"] + (["tls"] if scheme == "tls" else [])
    assert scope["extensions"] == sorted(expected)


def test_a_trusted_proxy_saying_https_makes_the_scheme_wss(
        site_factory: Callable[..., Site]) -> None:
    site = site_factory("plain", "--forwarded-allow-ips", "127.0.0.1")
    ws = Ws(site.server.port, "/echo", headers=[(b"x-forwarded-proto", b"https")])
    try:
        ws.send("scope")
        assert json.loads(ws.recv())["scheme"] == "wss"
    finally:
        ws.shut()


def test_two_clients_in_a_room_see_each_others_messages(
        site_factory: Callable[..., Site]) -> None:
    site = site_factory("plain")
    # Each joins the room as its accept goes out, before its handshake completes.
    with site.ws("/room?name=alice") as alice, site.ws("/room?name=bob") as bob:
        alice.send("hi")
        assert alice.recv(timeout=5) == "alice: hi"
        assert bob.recv(timeout=5) == "alice: hi"
        bob.send("hello")
        assert bob.recv(timeout=5) == "bob: hello"
        assert alice.recv(timeout=5) == "bob: hello"


def test_the_denial_extension_and_a_close_before_the_accept(
        site_factory: Callable[..., Site]) -> None:
    site = site_factory("plain", "--access-logfile", "-", "--access-logformat", "%(r)s %(s)s")
    status, fields, body = site.handshake("/deny")
    assert (status, fields.get("x-why"), body) == (418, "teapot", b"no entry")
    status, _, _ = site.handshake("/reject")
    assert status == 403
    # wsproto sees the refusals as such.
    for path, expected in (("/deny", 418), ("/reject", 403)):
        conn = socket.create_connection(("127.0.0.1", site.server.port), timeout=10)
        try:
            client = WSConnection(ConnectionType.CLIENT)
            conn.sendall(client.send(Request(host="localhost", target=path)))
            events: list[Any] = []
            while not events:
                data = conn.recv(65536)
                client.receive_data(data or None)
                events.extend(client.events())
            assert isinstance(events[0], RejectConnection)
            assert events[0].status_code == expected
        finally:
            conn.close()
    wait_for(lambda: "GET /deny HTTP/1.1 418" in site.server.stdout
             and "GET /reject HTTP/1.1 403" in site.server.stdout,
             message="the refusals' access log lines")


def test_a_malformed_handshake_is_refused_without_the_app(
        site_factory: Callable[..., Site]) -> None:
    site = site_factory("plain")
    status, fields, body = site.handshake("/echo", version="8")
    assert status == 426 and fields["sec-websocket-version"] == "13", body
    status, _, body = site.handshake("/echo", key=base64.b64encode(b"short").decode())
    assert status == 400 and b"Sec-WebSocket-Key" in body
    # The app was never called.
    assert site.seen()["connects"] == 0
    assert site.get("/hello") == (200, b"hello")


@pytest.mark.app_errors
def test_bad_app_messages_raise_into_the_app_and_the_worker_serves_on(
        site_factory: Callable[..., Site]) -> None:
    site = site_factory("plain")
    ws = site.raw("/raw/bad", subprotocols=["chat"])
    try:
        assert ws.recv() == "fine"  # the one good send among the bad
        errors = json.loads(ws.recv())
        with pytest.raises(Closed) as closed:
            ws.recv()
        assert (closed.value.code, closed.value.reason) == (4000, "done")
    finally:
        ws.shut()
    connecting = ("expected 'websocket.accept', 'websocket.close' or "
                  "'websocket.http.response.start'")
    open_ = "expected 'websocket.send' or 'websocket.close'"
    assert errors == [
        f"RuntimeError: Unexpected ASGI message 'websocket.send': {connecting}",
        'RuntimeError: unexpected ASGI message type "http.response.start" for a WebSocket',
        "ValueError: websocket.accept: subprotocol 'never-offered' was not offered by the "
        "client (offered: chat)",
        'TypeError: ASGI message field "headers" must be an iterable of [name, value] '
        "byte-string pairs",
        # (Starlette's middleware looks into a message before the server does.)
        errors[4] if errors[4].startswith("TypeError: ") else "a TypeError",
        f"RuntimeError: Unexpected ASGI message 'websocket.accept': {open_}",
        "ValueError: websocket.send needs exactly one of 'bytes' and 'text'",
        "ValueError: websocket.send needs exactly one of 'bytes' and 'text'",
        'TypeError: ASGI message field "text" must be a str or None',
        "ValueError: close code 1006 may not be sent (RFC 6455 §7.4: 1000-1003, 1007-1014, "
        "3000-4999)",
        f"RuntimeError: Unexpected ASGI message 'websocket.http.response.start': {open_}",
        "accepted",  # a None field counts as absent
    ]
    wait_for(lambda: "bad_after_close" in site.seen(), message="the app's send after close")
    assert site.seen()["bad_after_close"].startswith(
        "RuntimeError: Unexpected ASGI message 'websocket.send': expected nothing after")
    # An exception before the accept: a 500; after it: a close with 1011; a return without
    # an answer: a 500. Each logged with its traceback.
    assert site.handshake("/raw/raises-before")[0] == 500
    assert site.handshake("/raw/returns")[0] == 500
    ws = site.raw("/raw/raises-after")
    try:
        with pytest.raises(Closed) as closed:
            ws.recv()
        assert closed.value.code == 1011
    finally:
        ws.shut()
    log = site.server.wait_log(r"the app failed after accepting")
    assert "the app failed before accepting" in log
    assert "Exception in ASGI application" in log
    assert "returned without accepting or denying" in log
    assert site.get("/hello") == (200, b"hello")


def test_a_receive_given_up_while_it_waits_leaves_the_next_ones_their_messages(
        site_factory: Callable[..., Site], scheme: str) -> None:
    # A receive() that must wait is a native awaitable (asgi/receiving.rs): cancelled through
    # its throw(), driven by a task of its own through send(), awaited directly through
    # __next__, each with its future for the call's token on the loop's side.
    site = site_factory(scheme)
    ws = site.raw("/raw/given-up")
    try:
        assert ws.recv() == "gave up twice"
        ws.send("one")
        assert ws.recv() == "task: one"
        ws.send("two")
        assert ws.recv() == "await: two"
    finally:
        ws.shut()
    assert site.get("/hello") == (200, b"hello")


def test_a_client_that_goes_away_is_seen_by_the_app(site_factory: Callable[..., Site]) -> None:
    site = site_factory("plain")
    ws = site.raw()
    ws.send("x")
    assert ws.recv() == "x"
    ws.sock.close()  # no close frame
    assert disconnects(site, 1) == [[1006, ""]]
    with site.ws() as client:
        client.send("y")
        assert client.recv(timeout=5) == "y"
        client.close(code=4003, reason="leaving")
    assert disconnects(site, 2)[1] == [4003, "leaving"]


def test_graceful_stop_closes_with_going_away(site_factory: Callable[..., Site],
                                               scheme: str) -> None:
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
    assert time.monotonic() - started < 5  # well within --graceful-timeout (30 s)
    assert "app saw websocket.disconnect 1001" in site.server.log


def test_a_message_over_ws_max_size_closes_with_1009(site_factory: Callable[..., Site],
                                                     scheme: str) -> None:
    mport = free_port()
    site = site_factory(scheme, "--ws-max-size", "1024", "--metrics-bind", f"127.0.0.1:{mport}")
    ws = site.raw()
    try:
        ws.send(b"x" * 1024)
        assert ws.recv() == b"x" * 1024
        ws.send(b"x" * 1025)
        with pytest.raises(Closed) as closed:
            ws.recv()
        assert closed.value.code == 1009
    finally:
        ws.shut()
    assert disconnects(site, 1)[0][0] == 1009
    wait_for(lambda: value(scrape(mport), "ferrocorn_websocket_too_big_total") == 1,
             message="the 1009 to be counted")


def test_an_unanswered_ping_closes_with_1011_and_answered_ones_keep_it_open(
        site_factory: Callable[..., Site]) -> None:
    site = site_factory("plain", "--ws-ping-interval", "0.1", "--ws-ping-timeout", "0.3")
    # The websockets client answers pings: open well past several of them.
    with site.ws() as client:
        deadline = time.monotonic() + 0.8
        rounds = 0
        while time.monotonic() < deadline:
            client.send(str(rounds))
            assert client.recv(timeout=5) == str(rounds)
            rounds += 1
            select.select([], [], [], 0.05)  # pacing the rounds, not synchronising
    # A client that reads nothing answers no ping.
    ws = site.raw()
    try:
        # Nothing is read from here on, so no pong goes back.
        assert disconnects(site, 2)[1][0] == 1011
        with pytest.raises(Closed) as closed:
            ws.recv()
        assert closed.value.code == 1011
    finally:
        ws.shut()


def test_an_open_websocket_counts_is_never_reclaimed_and_outlives_timeout(
        site_factory: Callable[..., Site]) -> None:
    # --timeout 2, not 1: a loop thread starved of CPU for a second on a busy machine would
    # count as hung (rightly), which is not what this test is about.
    site = site_factory("plain", "--worker-connections", "2", "--keep-alive", "60",
                        "--timeout", "2")
    workers = site.server.worker_pids()
    with site.ws() as ws:
        ws.send("one")
        assert ws.recv(timeout=5) == "one"
        idle = site.server.connect()
        idle.send(http_request("/hello"))
        assert idle.response().status == 200
        # At the cap, a new client is served in the idle connection's place.
        fresh = site.server.connect()
        fresh.send(http_request("/hello"))
        assert fresh.response().status == 200
        assert idle.read_until_close(timeout=5) == b""
        # Open past --timeout: a websocket is no hung request.
        deadline = time.monotonic() + 2.2
        while time.monotonic() < deadline:
            ws.send("two")
            assert ws.recv(timeout=5) == "two"
        fresh.close()
        idle.close()
    assert site.server.worker_pids() == workers
    assert "has run for more than" not in site.server.log


def test_logged_as_a_101_and_counted(site_factory: Callable[..., Site]) -> None:
    mport = free_port()
    site = site_factory("plain", "--metrics-bind", f"127.0.0.1:{mport}", "--access-logfile", "-",
                        "--access-logformat", "%(r)s %(s)s")
    with site.ws() as ws:
        ws.send("counted")
        assert ws.recv(timeout=5) == "counted"
    wait_for(lambda: value(scrape(mport), "ferrocorn_websockets_total") == 1,
             message="the websocket to be counted")
    wait_for(lambda: "GET /echo HTTP/1.1 101" in site.server.stdout,
             message="the access log line")


# ---------------------------------------------------------------------------- backpressure

def test_a_client_that_stops_reading_pauses_the_app(site_factory: Callable[..., Site]) -> None:
    site = site_factory("plain")
    total = 256  # messages of 64 KiB: 16 MiB
    client = site.raw("/flood")
    try:
        client.send(str(total))

        def progress() -> dict[str, int]:
            status, body = site.get("/progress")
            assert status == 200
            return dict(json.loads(body))

        last = {"sent": -1, "since": time.monotonic()}

        def stalled() -> bool:
            sent = progress()["sent"]
            now = time.monotonic()
            if sent != last["sent"]:
                last.update(sent=sent, since=now)
                return False
            return sent > 0 and now - last["since"] >= 0.3

        wait_for(stalled, timeout=10, interval=0.05, message="the app's sends to block")
        sent = progress()["sent"]
        # The kernel's socket buffers and the server's bound (256 KiB), not the 16 MiB.
        assert sent * 64 * 1024 < 12 * 1024 * 1024, f"{sent} messages taken in"
        got = 0
        for message in client.messages():
            assert int.from_bytes(message[:8], "big") == got
            got += 1
            if got == total:
                break
        assert got == total
        client.send("thanks")
        wait_for(lambda: progress() == {"sent": total, "done": 1}, timeout=5,
                 message="the app to finish")
    finally:
        client.shut()


def test_a_flooding_client_is_not_buffered_without_bound(
        site_factory: Callable[..., Site]) -> None:
    site = site_factory("plain")
    client = site.raw("/sink")
    try:
        client.sock.setblocking(False)
        frame = client.ws.send(Message(data=bytes(64 * 1024)))
        pushed = 0
        limit = 128 * 1024 * 1024
        # Send until the connection takes nothing for 0.5 s (the app receives nothing).
        while pushed < limit:
            _, writable, _ = select.select([], [client.sock], [], 0.5)
            if not writable:
                break
            with contextlib.suppress(BlockingIOError):
                pushed += client.sock.send(frame)
        assert pushed < 16 * 1024 * 1024, f"the server took in {pushed} bytes"
        assert site.get("/hello") == (200, b"hello")
        # The app closes; the server then reads (and drops) what is still coming, so the
        # frame cut off above can be finished and the close handshake answered.
        assert site.get("/release") == (200, b"released")
        client.sock.setblocking(True)
        client.sock.settimeout(10)
        client.sock.sendall(frame[pushed % len(frame):] if pushed % len(frame) else b"")
        with pytest.raises(Closed) as closed:
            client.recv()
        assert closed.value.code == 1000
    finally:
        client.shut()


class _Messages:
    """send(message) and recv() -> message over a wsproto client (HTTP/1.1, with or without
    TLS) or over HTTP/2 (RFC 8441's extended CONNECT, TLS with ALPN h2)."""

    def __init__(self, site: Site, over_h2: bool) -> None:
        self.h2: H2WsClient | None = None
        self.ws: Ws | None = None
        if over_h2:
            assert site.ctx is not None
            site.ctx.set_alpn_protocols(["h2"])
            self.h2 = H2WsClient(site.server.port, "/echo", ctx=site.ctx)
            assert self.h2.status == 200, self.h2.status
        else:
            self.ws = site.raw()

    def send(self, message: str | bytes) -> None:
        if self.h2 is not None:
            text = isinstance(message, str)
            self.h2.send_frame(TEXT if text else BINARY,
                               message.encode() if isinstance(message, str) else message)
        else:
            assert self.ws is not None
            self.ws.send(message)

    def recv(self) -> str | bytes:
        if self.h2 is not None:
            opcode, data = self.h2.recv_message()
            return data.decode() if opcode == TEXT else data
        assert self.ws is not None
        return self.ws.recv()

    def shut(self) -> None:
        if self.h2 is not None:
            self.h2.shutdown()
        elif self.ws is not None:
            self.ws.shut()


@pytest.mark.parametrize("transport", ["plain", "tls", "h2"])
def test_a_large_message_leaves_no_large_buffer_behind(site_factory: Callable[..., Site],
                                                     transport: str) -> None:
    """After a 1 MiB message each way, an open WebSocket holds little more than an idle one:
    the server cuts large frames into pieces both ways, since `tungstenite` keeps its read and
    write buffers at the largest frame for as long as the connection is open (a client could
    otherwise make each of its connections hold up to --ws-max-size). Over HTTP/1.1, TLS and
    HTTP/2 (the same session runs on an HTTP/2 stream).

    glibc's malloc runs with a fixed mmap threshold here, so that what is measured is what the
    server holds, not the freed memory malloc keeps for reuse (by default it raises the
    threshold after the first large free, and the holes the received messages leave in its
    heap then stay in RSS: docs/websockets.md has both figures)."""
    scheme = "plain" if transport == "plain" else "tls"
    site = site_factory(scheme, "--workers", "1", env={"MALLOC_MMAP_THRESHOLD_": "131072"})
    big = os.urandom(1 << 20)

    def exchanged() -> _Messages:
        client = _Messages(site, transport == "h2")
        client.send(big)
        assert client.recv() == big
        # The app's own variables let go of the large message at the next one.
        client.send(b"small")
        assert client.recv() == b"small"
        return client

    (worker,) = wait_for(lambda: site.server.worker_pids(), message="the worker")
    held = [exchanged()]  # the first one warms the worker's pools and allocator
    before = vm_kib(worker, "VmRSS")
    count = 24
    try:
        held += [exchanged() for _ in range(count)]
        growth = vm_kib(worker, "VmRSS") - before
        # Before the cut: about 2 MiB per connection (1,028 KiB read, 1,034 KiB written).
        assert growth < count * 256, f"RSS grew {growth} KiB for {count} connections"
        for client in held:  # all still open and answering
            client.send("still here")
            assert client.recv() == "still here"
    finally:
        for client in held:
            client.shut()


# ------------------------------------------------------------------------ FastAPI, Channels

def test_fastapi_echo(site_factory: Callable[..., Site]) -> None:
    site = site_factory("plain", app="asgi_ws_fastapi:app")
    with site.ws(subprotocols=["v1"]) as ws:
        assert ws.subprotocol == "v1"
        assert ws.response.headers["x-accepted-by"] == "fastapi"
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
        blob = os.urandom(1024 * 1024)
        ws.send(blob)
        assert ws.recv(timeout=5) == blob
        ws.send("close:4005:fastapi says bye")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        assert ws.protocol.close_rcvd is not None
        assert (ws.protocol.close_rcvd.code, ws.protocol.close_rcvd.reason) == \
            (4005, "fastapi says bye")


def test_django_channels_echo_consumer(site_factory: Callable[..., Site], scheme: str) -> None:
    site = site_factory(scheme, app="asgi_ws_channels:application")
    ws = site.raw("/ws/echo/", subprotocols=["echo.v1"])
    try:
        assert ws.accepted.subprotocol == "echo.v1"
        ws.send("hello channels")
        assert ws.recv() == "hello channels"
        ws.send(b"\x01\x02")
        assert ws.recv() == b"\x01\x02"
        ws.send("bye")
        with pytest.raises(Closed) as closed:
            ws.recv()
        assert closed.value.code == 4001
    finally:
        ws.shut()


def test_django_channels_group_broadcast(site_factory: Callable[..., Site]) -> None:
    site = site_factory("plain", app="asgi_ws_channels:application")
    # Each joins the group before it accepts.
    with site.ws("/ws/room/") as alice, site.ws("/ws/room/") as bob:
        alice.send(json.dumps({"who": "alice", "text": "hi"}))
        assert json.loads(alice.recv(timeout=5)) == {"who": "alice", "text": "hi"}
        assert json.loads(bob.recv(timeout=5)) == {"who": "alice", "text": "hi"}
        bob.send(json.dumps({"who": "bob", "text": "hello"}))
        assert json.loads(bob.recv(timeout=5)) == {"who": "bob", "text": "hello"}
        assert json.loads(alice.recv(timeout=5)) == {"who": "bob", "text": "hello"}


# -------------------------------------------------------------------- HTTP/2 (RFC 8441)

class H2Ws:
    """A WebSocket over an HTTP/2 extended CONNECT stream: the ``h2`` package for the stream,
    wsproto's frame layer for the WebSocket inside it."""

    def __init__(self, client: H2Client, path: str, subprotocols: list[str]) -> None:
        self.client = client
        client.wait(lambda: client.conn.remote_settings.enable_connect_protocol == 1,
                    message="the server's SETTINGS_ENABLE_CONNECT_PROTOCOL")
        self.sid = client.request(path, method="CONNECT", end=False, headers=[
            (":protocol", "websocket"), ("sec-websocket-version", "13"),
            ("sec-websocket-protocol", ", ".join(subprotocols))])
        client.wait(lambda: self.sid in client.status, message="the CONNECT's answer")
        self.frames = FrameProtocol(client=True, extensions=[])
        self.partial = bytearray()
        self.text = False

    def send(self, message: str | bytes) -> None:
        self.client.send_body(self.sid, self.frames.send_data(message, fin=True), end=False)

    def recv(self) -> str | bytes | tuple[int, str]:
        """The next message, or the close frame's (code, reason)."""
        body = self.client.body[self.sid]
        while True:
            for frame in self.frames.received_frames():
                if frame.opcode is Opcode.CLOSE:
                    return tuple(frame.payload)  # type: ignore[return-value]
                if frame.opcode is not Opcode.CONTINUATION:
                    self.text = frame.opcode is Opcode.TEXT
                payload = frame.payload
                self.partial += payload.encode() if isinstance(payload, str) else payload
                if frame.message_finished:
                    done = bytes(self.partial)
                    self.partial.clear()
                    return done.decode() if self.text else done
            self.client.wait(lambda: bool(body), message="a WebSocket frame")
            self.frames.receive_bytes(bytes(body))
            body.clear()

    def close(self, code: int, reason: str) -> None:
        self.client.send_body(self.sid, self.frames.close(code, reason), end=False)


def test_websockets_over_http2_extended_connect(start_server: Callable[..., Server]) -> None:
    server = start_server(APP, "--http2-cleartext", "prior-knowledge", "--log-level", "debug")
    client = H2Client(server)
    try:
        ws = H2Ws(client, "/echo", ["v0", "v1", "v2"])
        assert client.status[ws.sid] == 200
        assert client.headers[ws.sid]["sec-websocket-protocol"] == "v2"
        assert client.headers[ws.sid]["x-accepted-by"] == "starlette"
        ws.send("hello")
        assert ws.recv() == "hello"
        blob = os.urandom(256 * 1024)  # past the stream's initial window
        ws.send(blob)
        assert ws.recv() == blob
        ws.send("scope")
        scope = json.loads(str(ws.recv()))
        assert (scope["http_version"], scope["scheme"], scope["path"]) == ("2", "ws", "/echo")
        assert not scope["has_method"]
        # Plain requests share the connection meanwhile.
        assert client.get("/hello") == (200, b"hello")
        ws.close(4002, "bye")
        assert ws.recv() == (4002, "bye")
        wait_for(lambda: json.loads(client.get("/seen")[1])["disconnects"] == [[4002, "bye"]],
                 message="the app to see the close")
    finally:
        client.close()
    # A WSGI app is not offered it: its WebSockets are gunicorn.socket's, HTTP/1.1 only.
    wsgi = start_server("h2_app:app", "--http2-cleartext", "prior-knowledge")
    client = H2Client(wsgi)
    try:
        assert client.get("/hello")[0] == 200
        assert client.conn.remote_settings.enable_connect_protocol == 0
    finally:
        client.close()
