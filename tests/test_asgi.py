"""ASGI 3.0 (HTTP) on the same core as WSGI: the scope, streaming both ways with backpressure,
disconnects seen by the app, lifespan, bad apps, and the transports (HTTP/2, TLS, uwsgi), the
static map and the limits unchanged. Real `ferrocorn` processes, real clients
(tests/apps/asgi_app.py is the app)."""

from __future__ import annotations

import hashlib
import json
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import (
    APPS_DIR,
    RawConn,
    Server,
    http_request,
    parse_responses,
    running_server,
    wait_for,
)
from support.skips import needs_tool

APP = "asgi_app:app"


class Events:
    """The file the app appends its events to ($ASGI_EVENTS)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_text("")

    def lines(self) -> list[str]:
        return self.path.read_text().splitlines()

    def wait(self, event: str, timeout: float = 10.0) -> None:
        wait_for(lambda: event in self.lines(), timeout, message=f"app event {event!r}")


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Events:
    return Events(tmp_path_factory.mktemp("asgi") / "events.log")


@pytest.fixture(scope="module")
def static_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("static")
    (d / "hello.txt").write_text("static hello\n")
    return d


@pytest.fixture(scope="module")
def server(events: Events, static_dir: Path) -> Iterator[Server]:
    """One ASGI server for the tests that only talk to it: h2c from loopback, a static map,
    a body limit, an access log."""
    with running_server(
        APP, "--http2-cleartext", "prior-knowledge", "--static-map", f"/static={static_dir}",
        "--limit-request-body", str(100 << 20), "--access-logfile", "-",
        env={"ASGI_EVENTS": str(events.path)},
    ) as s:
        yield s


def scope_of(server: Server, path: str = "/scope", headers: dict[str, str] | None = None,
             body: bytes | None = None) -> dict[str, Any]:
    reply = server.request("POST" if body else "GET", path, body=body, headers=headers)
    assert reply.status == 200, (reply.status, reply.body[:300])
    return json.loads(reply.body)


# ----------------------------------------------------------------------------- the scope

def test_scope_keys_over_http11(server: Server) -> None:
    data = scope_of(server, "/scope?a=1&b=%20x", headers={"X-Custom": "Value", "Cookie": "k=v"},
                    body=b"hello")
    scope = data["scope"]
    assert data["body"] == "hello"
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "POST"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/scope"
    assert scope["raw_path"] == "/scope"
    assert scope["query_string"] == "a=1&b=%20x"
    assert scope["root_path"] == ""
    headers = scope["headers"]
    assert ["x-custom", "Value"] in headers and ["cookie", "k=v"] in headers
    assert all(name == name.lower() for name, _ in headers)
    assert ["host", f"{server.host}:{server.port}"] in headers
    assert scope["client"][0] == "127.0.0.1" and isinstance(scope["client"][1], int)
    assert scope["server"] == ["127.0.0.1", server.port]
    assert scope["state"]["started_at"] == "startup"  # from the lifespan's startup
    assert "http.response.pathsend" in scope["extensions"]
    assert "tls" not in scope["extensions"]


def test_state_is_a_shallow_copy_per_request(server: Server) -> None:
    first = scope_of(server)["scope"]["state"]
    second = scope_of(server)["scope"]["state"]
    # The app counts in its copy: no request sees another's key.
    assert first["seen"] == second["seen"] == 1


def test_http10_and_a_decoded_path(server: Server) -> None:
    with server.connect() as conn:
        conn.send(http_request("/caf%C3%A9/../scope", version="HTTP/1.0"))
        resp = conn.response()
    assert resp.status == 404  # the route is /scope, the decoded path is not
    with server.connect() as conn:
        conn.send(http_request("/scope", version="HTTP/1.0"))
        resp = conn.response()
    assert json.loads(resp.body)["scope"]["http_version"] == "1.0"


def test_root_path_and_trusted_proxy_headers(start_server: Any) -> None:
    s = start_server(APP, "--root-path", "/mount", "--forwarded-headers", "for,proto,prefix")
    scope = scope_of(s, "/caf%C3%A9/scope")["scope"]
    assert scope["root_path"] == "/mount"
    assert scope["path"] == "/mount/café/scope"
    assert scope["raw_path"] == "/mount/caf%C3%A9/scope"
    # A path that carries the root path already keeps it as it is.
    assert scope_of(s, "/mount/scope")["scope"]["path"] == "/mount/scope"
    # From a trusted peer (loopback): the prefix, the scheme and the client.
    scope = scope_of(s, "/scope", headers={"X-Forwarded-Prefix": "/api",
                                          "X-Forwarded-Proto": "https",
                                          "X-Forwarded-For": "203.0.113.9"})["scope"]
    assert (scope["root_path"], scope["path"]) == ("/api", "/api/scope")
    assert scope["scheme"] == "https"
    assert scope["client"][0] == "203.0.113.9"


# ------------------------------------------------------------------ streaming both ways

def test_a_large_upload_streams_in_pieces(server: Server) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    reply = server.request("POST", "/echo", body=body)
    assert reply.status == 200
    assert reply.body == body
    assert int(reply.header("x-messages")) >= 16  # at most 64 KiB per http.request


def test_receive_and_send_run_as_tasks(server: Server) -> None:
    # What receive() and send() return is awaited here through asyncio.create_task and
    # ensure_future, as an app may hand them over (they need not be `async def` coroutines,
    # but must pass for one); the 1 MiB body also makes receive() wait for its pieces.
    body = bytes(range(256)) * 4096
    reply = server.request("POST", "/as-tasks", body=body)
    assert (reply.status, reply.header("x-awaited")) == (200, "tasks")
    assert reply.body == body


@pytest.mark.parametrize("wait", ["0", "1"])
def test_each_request_is_a_task_with_a_context_of_its_own(server: Server, wait: str) -> None:
    # On Python 3.12+ the task starts eagerly (in the loop's drain); the app must not tell:
    # current_task() is its task before and after it waits, and what it sets in a context
    # variable is gone for the next request.
    for mark in ("first", "second"):
        reply = server.request("GET", f"/task-context?wait={wait}&mark={mark}")
        assert reply.status == 200
        assert json.loads(reply.body) == {"a_task": True, "same_task": True,
                                          "seen_before": None, "mark_now": mark}


def test_a_chunked_upload(server: Server) -> None:
    with server.connect() as conn:
        conn.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        resp = conn.response()
    assert (resp.status, resp.body) == (200, b"hello world")


def test_a_streamed_response_is_chunked(server: Server) -> None:
    with server.connect() as conn:
        conn.send(http_request("/stream?n=50&size=1000"))
        resp = conn.response()
    assert resp.status == 200
    assert resp.header("transfer-encoding") == "chunked"
    assert len(resp.body) == 50_000 and resp.body.startswith(b"A" * 1000)


def test_an_empty_first_piece_does_not_send_the_head(server: Server) -> None:
    """The head goes out with the first body bytes: after an empty more_body piece, the last
    message is the whole body, and gets its length."""
    with server.connect() as conn:
        conn.send(http_request("/empty-first"))
        resp = conn.response()
    assert (resp.status, resp.body) == (200, b"abc")
    assert resp.header("content-length") == "3" and resp.header("transfer-encoding") is None


def test_100_continue_at_the_first_receive_and_head(server: Server) -> None:
    with server.connect() as conn:
        conn.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        interim = conn.response("POST", skip_interim=False)
        assert interim.status == 100
        conn.send(b"hello")
        resp = conn.response("POST")
        assert (resp.status, resp.body) == (200, b"hello")
        conn.send(b"HEAD /stream?n=3 HTTP/1.1\r\nHost: x\r\n\r\n")
        head = conn.response("HEAD")
        assert (head.status, head.body) == (200, b"")
        conn.send(http_request("/stream?n=2&size=3"))
        assert conn.response().body == b"AAABBB"  # the connection went on after HEAD


def test_the_app_is_not_sent_the_whole_upload(server: Server, events: Events) -> None:
    """Body bytes are read off the socket only as the app receives them: while the app holds
    off, the client's upload stalls in the kernel's buffers."""
    size = 64 << 20
    # 64 MiB through the app piece by piece: generous on a loaded 2-core machine.
    sock = socket.create_connection((server.host, server.port), timeout=60)
    try:
        sock.sendall(f"POST /hold?key=up HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n"
                     .encode())
        sock.setblocking(False)
        chunk = b"u" * 65536
        sent = 0
        deadline = time.monotonic() + 20
        while sent < size and time.monotonic() < deadline:
            _, writable, _ = select.select([], [sock], [], 0.5)
            if not writable:
                break  # the server stopped taking bytes
            try:
                sent += sock.send(chunk[: size - sent])
            except BlockingIOError:
                continue
        assert sent < size // 2, f"{sent} bytes were taken while the app read one piece"
        events.wait("hold-first 65536")
        assert server.get("/release?key=up").status == 200
        sock.setblocking(True)
        rest = size - sent
        while rest:
            n = sock.send(chunk[: min(rest, len(chunk))])
            rest -= n
        conn = RawConn(sock)
        resp = conn.response("POST")
        total, _messages = resp.body.split()
        assert int(total) == size
    finally:
        sock.close()


def test_a_client_that_does_not_read_holds_send_back(server: Server) -> None:
    """`await send()` waits while the client takes nothing: the app is held at a bounded
    number of 256 KiB chunks, then goes on as the client reads, to the last byte."""
    conn = server.connect(timeout=30)
    try:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        conn.send(http_request("/big?n=200"))  # 50 MiB

        def progress() -> int:
            return int(server.get("/progress").body)

        wait_for(lambda: progress() > 0, message="the app starting to send")
        # Bounded: the count stops moving once the buffers are full.
        last, stable = -1, 0
        for _ in range(100):
            now = progress()
            stable = stable + 1 if now == last else 0
            if stable >= 3:
                break
            last = now
            time.sleep(0.1)  # spacing the polls, not synchronising
        assert stable >= 3, "the app never stopped sending"
        assert last < 100, f"{last} chunks (of 200) sent to a client reading nothing"
        resp = conn.response()
        assert len(resp.body) == 200 * 262144
        assert progress() == 200
    finally:
        conn.close()


def test_pathsend_serves_a_file(server: Server, tmp_path: Path) -> None:
    f = tmp_path / "big.bin"
    data = bytes(range(256)) * 8192  # 2 MiB
    f.write_bytes(data)
    reply = server.get(f"/pathsend?file={f}")
    assert (reply.status, reply.body) == (200, data)


def test_zerocopysend_mixed_with_body_messages(server: Server, events: Events,
                                               tmp_path: Path) -> None:
    """http.response.zerocopysend from an offset for a count, then from where the file
    stands, between two body messages; the app closed its file as soon as send() returned."""
    f = tmp_path / "zc.bin"
    data = bytes(range(256)) * 4096  # 1 MiB
    f.write_bytes(data)
    reply = server.get(f"/zerocopy?file={f}&offset=1000&count=300000")
    assert reply.status == 200, reply.body[:200]
    assert reply.header("transfer-encoding") == "chunked"
    assert reply.body == b"<" + data[1000:301000] + data[301000:] + b">"
    events.wait("zerocopy file closed")
    # A count past the end stops at the end.
    reply = server.get(f"/zerocopy?file={f}&offset={len(data) - 10}&count=1000000")
    assert reply.body == b"<" + data[-10:] + b">"


def test_zerocopysend_alone_over_http2(server: Server, tmp_path: Path) -> None:
    from test_http2 import Client

    f = tmp_path / "zc2.bin"
    data = bytes(range(251)) * 2000
    f.write_bytes(data)
    reply = server.get(f"/zerocopy-only?file={f}")
    assert (reply.status, reply.header("content-length"), reply.body) == (
        200, str(len(data)), data)
    client = Client(server)
    try:
        sid = client.request(f"/zerocopy?file={f}&offset=7&count=70000")
        assert _h2_body(client, sid) == b"<" + data[7:70007] + data[70007:] + b">"
    finally:
        client.sock.close()


def test_zerocopysend_refuses_bad_fields(server: Server, tmp_path: Path) -> None:
    f = tmp_path / "zc3.bin"
    f.write_bytes(b"z" * 100)
    reply = server.get(f"/zerocopy-bad?file={f}")
    assert reply.status == 200
    errors = json.loads(reply.body)
    kinds = {name: (err or "taken").split(":")[0] for name, err in errors.items()}
    assert kinds == {
        "no_file": "TypeError", "not_a_file": "TypeError", "closed": "ValueError",
        "not_open": "ValueError", "pipe": "ValueError", "offset_str": "TypeError",
        "offset_negative": "ValueError", "count_float": "TypeError",
        "more_body_str": "TypeError"}, errors
    assert "closed file" in errors["closed"], errors
    assert "regular file" in errors["pipe"], errors


def hint_exchange(server: Server, path: str, version: str = "HTTP/1.1") -> list[Any]:
    """The responses to one request on a raw socket, interim ones included, in order."""
    with server.connect() as conn:
        conn.send(http_request(path, version=version))
        out = [conn.response(skip_interim=False)]
        for _ in range(10):
            if out[-1].status >= 200:
                break
            out.append(conn.response(skip_interim=False))
        return out


def test_early_hints_go_out_before_the_response(server: Server) -> None:
    first, second, final = hint_exchange(server, "/hints")
    assert first.raw.startswith(b"HTTP/1.1 103 Early Hints\r\n")
    assert first.headers == [("Link", "</style.css>; rel=preload; as=style")]
    # One Link field per item, in order, surrounding whitespace trimmed.
    assert second.headers == [("Link", "</a.js>; rel=preload; as=script"),
                              ("Link", "</b.js>; rel=preload")]
    assert (final.status, final.body) == (200, b"hinted")
    # An HTTP/1.0 client gets no interim response (RFC 9110 §15.2).
    (final,) = hint_exchange(server, "/hints", version="HTTP/1.0")
    assert (final.status, final.body) == (200, b"hinted")


def test_early_hints_over_http2(server: Server) -> None:
    from test_http2 import Client

    client = Client(server)
    try:
        sid = client.request("/hints")
        assert _h2_body(client, sid) == b"hinted"
        hints = client.informational[sid]
        assert [h[":status"] for h in hints] == ["103", "103"], hints
    finally:
        client.sock.close()


def test_a_late_early_hint_raises_and_bad_links_are_refused(server: Server,
                                                             events: Events) -> None:
    (final,) = hint_exchange(server, "/hints-late")
    assert (final.status, final.body) == (200, b"ab")
    events.wait("late hint raised RuntimeError: Unexpected ASGI message "
                "'http.response.early_hint': the response's body has started (a 103 goes "
                "before it)")
    reply = server.get("/hints-bad")
    errors = json.loads(reply.body)
    kinds = {name: (err or "taken").split(":")[0] for name, err in errors.items()}
    assert kinds == {"no_links": "TypeError", "not_iterable": "TypeError",
                     "str_links": "TypeError", "crlf": "ValueError", "nul": "ValueError"}, errors


TRAILER_BODY = b"alpha-beta"
TRAILERS = [("x-checksum", hashlib.sha256(TRAILER_BODY).hexdigest()),
            ("x-status", "ok")]


def chunked_exchange(sock: socket.socket, path: str, te: bool = True,
                     version: str = "HTTP/1.1") -> tuple[bytes, dict[str, str], bytes,
                                                         list[tuple[str, str]]]:
    """One request on ``sock``; the response's head, fields, body and trailer fields,
    decoded from the chunked framing by hand (http.client drops trailers)."""
    extra = [("TE", "trailers")] if te else []
    sock.sendall(http_request(path, headers=extra, version=version))
    data = b""
    deadline = time.monotonic() + 10

    def more() -> None:
        nonlocal data
        assert time.monotonic() < deadline, data
        piece = sock.recv(65536)
        assert piece, f"closed early: {data!r}"
        data += piece
    while b"\r\n\r\n" not in data:
        more()
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    if "content-length" in fields:
        data = rest
        while len(data) < int(fields["content-length"]):
            more()
        return lines[0].encode(), fields, data, []
    assert fields.get("transfer-encoding") == "chunked", fields
    data, body = rest, b""
    for _ in range(1000):
        while b"\r\n" not in data:
            more()
        size_line, data = data.split(b"\r\n", 1)
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        while len(data) < size + 2:
            more()
        body, data = body + data[:size], data[size + 2:]
    while not (data.startswith(b"\r\n") or b"\r\n\r\n" in data):
        more()
    section = data.split(b"\r\n\r\n", 1)[0] if not data.startswith(b"\r\n") else b""
    trailers = [(k.strip().lower(), v.strip()) for k, v in
                (line.split(":", 1) for line in section.decode("latin-1").split("\r\n")
                 if line)]
    return lines[0].encode(), fields, body, trailers


def test_trailers_over_http11(server: Server, events: Events) -> None:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        status, fields, body, trailers = chunked_exchange(sock, "/trailers")
        assert (status, body, trailers) == (b"HTTP/1.1 200 OK", TRAILER_BODY, TRAILERS)
        assert fields["trailer"] == "x-checksum, x-status"
        # The connection goes on after the trailer section.
        status, _, body, trailers = chunked_exchange(sock, "/trailers", te=False)
        assert (status, body, trailers) == (b"HTTP/1.1 200 OK", TRAILER_BODY, [])
        # A body with its length has no place for trailers: the body alone.
        _, fields, body, trailers = chunked_exchange(sock, "/trailers?cl=1")
        assert (fields["content-length"], body, trailers) == ("10", TRAILER_BODY, [])
        status, _, body, trailers = chunked_exchange(sock, "/trailers")
        assert (body, trailers) == (TRAILER_BODY, TRAILERS)
    events.wait("trailers sent")


def test_trailers_over_h2c(server: Server) -> None:
    from test_http2 import Client

    client = Client(server)
    try:
        sid = client.request("/trailers", headers=[("te", "trailers")])
        assert _h2_body(client, sid) == TRAILER_BODY
        assert list(client.trailers[sid].items()) == TRAILERS
        sid = client.request("/trailers")  # no TE: trailers
        assert _h2_body(client, sid) == TRAILER_BODY
        assert sid not in client.trailers
    finally:
        client.sock.close()


def test_bad_trailers_raise_into_send(server: Server) -> None:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        _, _, body, trailers = chunked_exchange(sock, "/trailers-bad")
    assert body == b"body"
    assert [k for k, _ in trailers] == ["x-errors"], trailers
    assert json.loads(trailers[0][1]) == {
        "too_early": "RuntimeError", "content_length": "ValueError", "crlf": "ValueError",
        "body_again": "RuntimeError", "more_str": "TypeError"}


def test_trailers_over_tls_and_uwsgi(tmp_path_factory: pytest.TempPathFactory,
                                     start_server: Any) -> None:
    """HTTP/1.1 over TLS and HTTP/2 over TLS (ALPN h2) carry them; uwsgi, whose responses
    are never chunked, sends the body alone."""
    import ssl

    import h2.config
    import h2.connection
    import h2.events
    from test_uwsgi import packet, request_vars, send_packet

    from support.certs import issue

    d = tmp_path_factory.mktemp("trailers-pki")
    ca = issue(d, "ca", cn="Ferrocorn Test CA", ca=True)
    cert = issue(d, "server", cn="localhost", issuer=ca)
    s = start_server(APP, "--certfile", str(cert.cert_path), "--keyfile", str(cert.key_path))
    ctx = ssl.create_default_context(cafile=str(ca.cert_path))
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", s.port), timeout=10),
                         server_hostname="localhost") as tls:
        _, _, body, trailers = chunked_exchange(tls, "/trailers")
    assert (body, trailers) == (TRAILER_BODY, TRAILERS)

    ctx.set_alpn_protocols(["h2"])
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", s.port), timeout=10),
                         server_hostname="localhost") as tls:
        assert tls.selected_alpn_protocol() == "h2"
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "GET"), (":path", "/trailers"), (":scheme", "https"),
                              (":authority", "localhost"), ("te", "trailers")],
                          end_stream=True)
        tls.sendall(conn.data_to_send())
        got, h2_trailers, ended = b"", None, False
        for _ in range(100):
            if ended:
                break
            data = tls.recv(65536)
            assert data, "closed before the stream ended"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    got += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, 1)
                elif isinstance(event, h2.events.TrailersReceived):
                    h2_trailers = list(event.headers)
                elif isinstance(event, h2.events.StreamEnded):
                    ended = True
            tls.sendall(conn.data_to_send())
    assert (got, h2_trailers) == (TRAILER_BODY, TRAILERS)

    u = start_server(APP, "--protocol", "uwsgi")
    raw = send_packet(u, packet(request_vars("/trailers", extra=[("HTTP_TE", "trailers")])))
    (resp,) = parse_responses(raw)
    assert resp.status == 200 and resp.body == TRAILER_BODY, raw
    assert raw.endswith(b"\r\n\r\n" + TRAILER_BODY), raw  # the body, nothing after it


def test_sync_code_runs_on_the_default_executor(server: Server) -> None:
    worker_thread, loop_thread = server.get("/sync").body.decode().split("|")
    assert loop_thread == "ferrocorn-asgi-loop"
    assert worker_thread != loop_thread


def test_cookies_and_access_log(server: Server) -> None:
    mark = len(server.stdout)
    reply = server.get("/cookies")
    assert reply.header_all("set-cookie") == ["a=1; Path=/", "b=2; HttpOnly"]
    wait_for(lambda: '"GET /cookies HTTP/1.1" 200 2' in server.stdout[mark:],
             message="the access log line")


# -------------------------------------------------------------------------- disconnects

def test_the_app_sees_a_client_leave_while_it_waits(server: Server, events: Events) -> None:
    conn = server.connect()
    conn.send(http_request("/wait-disconnect", method="POST", body=b"x"))
    events.wait("waiting")
    conn.close()
    events.wait("received http.disconnect")


def test_the_app_sees_a_client_leave_while_it_streams(server: Server, events: Events) -> None:
    conn = server.connect()
    conn.send(http_request("/stream-forever"))
    events.wait("streaming")
    conn.sock.recv(65536)
    conn.abort()
    events.wait("send raised ClientDisconnected")


def test_disconnect_after_the_response(server: Server, events: Events) -> None:
    assert server.get("/after-response").body == b"done"
    events.wait("after response http.disconnect")


# ---------------------------------------------------------------------------- transports

def test_http2_scope_upload_and_reset(server: Server, events: Events) -> None:
    from test_http2 import Client

    client = Client(server)
    try:
        sid = client.request("/scope")
        scope = json.loads(_h2_body(client, sid))["scope"]
        assert scope["http_version"] == "2"
        assert ["host", client.host] in scope["headers"]
        payload = b"z" * 300_000
        sid = client.request("/echo", method="POST", body=payload)
        assert _h2_body(client, sid) == payload
        # RST_STREAM while the app waits: it receives http.disconnect.
        before = events.lines().count("received http.disconnect")
        sid = client.request("/wait-disconnect", method="POST", body=b"x")
        wait_for(lambda: events.lines().count("waiting") > before, message="the app waiting")
        client.conn.reset_stream(sid)
        client.flush()
        wait_for(lambda: events.lines().count("received http.disconnect") > before,
                 message="http.disconnect after RST_STREAM")
    finally:
        client.sock.close()


def _h2_body(client: Any, sid: int) -> bytes:
    deadline = time.monotonic() + 20
    while sid not in client.ended:
        assert time.monotonic() < deadline, "stream never ended"
        assert client.pump(), "connection closed"
    assert client.status[sid] == 200, client.status[sid]
    return bytes(client.body[sid])


@needs_tool("curl")
def test_tls_scope_and_certificates(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The tls extension over HTTP/1.1 (http.client) and HTTP/2 (curl): the server's
    certificate, and the client's with the intermediate it sent after it."""
    import http.client
    import ssl

    from cryptography import x509
    from test_tls import issue

    d = tmp_path_factory.mktemp("asgi-pki")
    ca = issue(d, "ca", cn="Ferrocorn Test CA", ca=True)
    server_cert = issue(d, "server", cn="localhost", issuer=ca, serial=1001)
    client_ca = issue(d, "client-ca", cn="Ferrocorn Client CA", ca=True)
    middle = issue(d, "client-int", cn="Ferrocorn Client Intermediate", issuer=client_ca,
                   ca=True)
    client = issue(d, "client", cn="alice", issuer=middle, client=True)
    chain = d / "client-chain.pem"
    chain.write_bytes(client.cert_path.read_bytes() + middle.cert_path.read_bytes())
    with running_server(APP, "--certfile", str(server_cert.cert_path), "--keyfile",
                        str(server_cert.key_path), "--ca-certs", str(client_ca.cert_path),
                        "--cert-reqs", "1") as s:
        ctx = ssl.create_default_context(cafile=str(ca.cert_path))
        ctx.load_cert_chain(str(chain), str(client.key_path))
        ctx.maximum_version = ssl.TLSVersion.TLSv1_3
        conn = http.client.HTTPSConnection("localhost", s.port, context=ctx, timeout=10)
        conn.request("GET", "/scope")
        scope = json.loads(conn.getresponse().read())["scope"]
        conn.close()
        # HTTP/2 (ALPN h2), without a client certificate.
        out = subprocess.run(
            ["curl", "-sS", "--http2", "--cacert", str(ca.cert_path),
             "-w", "\n%{http_version}", f"https://localhost:{s.port}/scope"],
            capture_output=True, text=True, timeout=20, check=True).stdout
        body, version = out.rsplit("\n", 1)
        scope2 = json.loads(body)["scope"]
    assert scope["scheme"] == "https"
    tls = scope["extensions"]["tls"]
    assert tls["client_cert_name"].startswith("CN=alice")
    certs = [x509.load_pem_x509_certificate(pem.encode()) for pem in tls["client_cert_chain"]]
    assert certs == [client.cert, middle.cert]
    assert x509.load_pem_x509_certificate(tls["server_cert"].encode()) == server_cert.cert
    assert tls["tls_version"] == 0x0304
    assert isinstance(tls["cipher_suite"], int) and tls["cipher_suite"] > 0
    assert tls["client_cert_error"] is None
    assert (version, scope2["http_version"]) == ("2", "2")
    tls2 = scope2["extensions"]["tls"]
    assert tls2["server_cert"] == tls["server_cert"]
    assert (tls2["client_cert_chain"], tls2["client_cert_name"]) == ([], None)


def test_uwsgi_transport(start_server: Any) -> None:
    from test_uwsgi import packet, request_vars, send_packet

    s = start_server(APP, "--protocol", "uwsgi")
    data = send_packet(s, packet(request_vars("/scope", query="q=1")))
    (resp,) = parse_responses(data)
    scope = json.loads(resp.body)["scope"]
    assert scope["client"] == ["203.0.113.7", 40000]
    assert scope["query_string"] == "q=1"
    assert scope["path"] == "/scope"


def test_static_map_and_limits_are_unchanged(server: Server) -> None:
    reply = server.get("/static/hello.txt")
    assert (reply.status, reply.body) == (200, b"static hello\n")
    assert reply.header("etag")
    with server.connect() as conn:
        conn.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 200000000\r\n\r\n")
        assert conn.response("POST").status == 413


# ----------------------------------------------------------------------------- bad apps

@pytest.mark.app_errors
@pytest.mark.parametrize("route, logged", [
    ("/bad/double-start", "Unexpected ASGI message 'http.response.start'"),
    ("/bad/body-first", "Expected ASGI message 'http.response.start' first"),
    ("/bad/wrong-type", "unexpected ASGI message type \"http.response.bogus\""),
    ("/bad/status", "ASGI response status must be an int"),
    ("/bad/body", "ASGI message field \"body\" must be bytes"),
    ("/bad/headers", "ASGI message field \"headers\""),
    ("/bad/no-response", "ASGI app returned without sending a response"),
    ("/bad/raises", "ValueError: boom before the response"),
])
def test_bad_apps_get_a_500_and_a_log_line(server: Server, route: str, logged: str) -> None:
    mark = server.mark()
    reply = server.get(route)
    assert reply.status == 500, (reply.status, reply.body)
    server.wait_log(logged, since=mark)
    if route != "/bad/no-response":
        assert "Traceback" in server.log_since(mark)
    server.assert_serving("/scope")


@pytest.mark.app_errors
@pytest.mark.parametrize("route, logged", [
    ("/bad/raises-midway", "ValueError: boom in the middle"),
    ("/bad/returns-midway", "ASGI app returned without completing its response"),
])
def test_a_started_response_is_cut(server: Server, route: str, logged: str) -> None:
    mark = server.mark()
    with server.connect() as conn:
        conn.send(http_request(route))
        data = conn.read_until_close()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"partial" in data
    assert not data.endswith(b"0\r\n\r\n")  # never completed
    server.wait_log(logged, since=mark)
    server.assert_serving("/scope")


@pytest.mark.app_errors
def test_an_app_that_stops_before_its_last_trailers(server: Server) -> None:
    """Returning: the response ends with the trailers it sent, and a log line; raising: the
    response is cut, so no client takes it for whole."""
    mark = server.mark()
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        _, _, body, trailers = chunked_exchange(sock, "/trailers-unfinished")
    assert (body, trailers) == (b"partial", [("x-a", "1")])
    server.wait_log("ASGI app returned without its last trailers", since=mark)
    with server.connect() as conn:
        conn.send(http_request("/trailers-unfinished?raise=1", headers=[("TE", "trailers")]))
        data = conn.read_until_close()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"partial" in data
    assert not data.endswith(b"\r\n\r\n")  # no last chunk
    server.wait_log("ValueError: boom before the last trailers", since=mark)
    server.assert_serving("/scope")


def test_a_task_factory_the_app_sets_makes_the_tasks_on_3_11(start_server: Any) -> None:
    # The drain makes each request's task itself; where a factory is set (3.11, which starts
    # no task eagerly) it goes through create_task, which uses it. The server runs this
    # interpreter.
    s = start_server("asgi_app:with_task_factory")
    for _ in range(2):
        reply = s.get("/")
        assert reply.status == 200
        assert json.loads(reply.body) == {"factory": sys.version_info < (3, 12)}


# ----------------------------------------------------------------------------- lifespan

def test_lifespan_startup_and_shutdown(tmp_path: Path) -> None:
    events = Events(tmp_path / "events.log")
    s = Server(APP, env={"ASGI_EVENTS": str(events.path)})
    s.start()
    try:
        assert events.lines() == ["startup"]
        assert s.get("/scope").status == 200
    finally:
        assert s.stop() == 0
    assert events.lines() == ["startup", "shutdown"]


@pytest.mark.parametrize("app, args, message", [
    ("asgi_app:failing_lifespan", [], "ASGI lifespan startup failed: database unreachable"),
    ("asgi_app:no_lifespan", ["--lifespan", "on"], "this app does not do lifespan"),
    ("asgi_app:raising_startup", ["--lifespan", "on"], "startup exploded"),
])
def test_a_failed_startup_stops_the_server(app: str, args: list[str], message: str) -> None:
    s = Server(app, *args)
    s.spawn()
    code = s.wait_exit(30)
    assert code != 0
    assert message in s.log, s.log


def test_an_app_without_lifespan_is_served_in_auto(start_server: Any) -> None:
    s = start_server("asgi_app:no_lifespan")
    assert s.get("/").body == b"served without lifespan"
    assert "ASGI 'lifespan' protocol appears unsupported." in s.log
    s2 = start_server("asgi_app:no_lifespan", "--lifespan", "off")
    assert s2.get("/").body == b"served without lifespan"
    assert "appears unsupported" not in s2.log


# --------------------------------------------------------------- choosing the interface

@pytest.mark.parametrize("app, args, body", [
    ("asgi_app:class_app", [], b"class app"),
    ("asgi_app:create_app('hi')", [], b"hi"),
    ("asgi_app:class_app", ["-k", "uvicorn.workers.UvicornWorker"], b"class app"),
    ("asgi_app:class_app", ["-k", "uvicorn_worker.UvicornWorker", "--loop", "asyncio"],
     b"class app"),
    ("asgi_app:create_app()", ["--interface", "asgi", "-w", "2"], b"factory"),
])
def test_asgi_apps_are_recognised(start_server: Any, app: str, args: list[str],
                                  body: bytes) -> None:
    s = start_server(app, *args)
    reply = s.get("/")
    assert (reply.status, reply.body) == (200, body)


def test_contradicting_interface_settings_are_refused() -> None:
    s = Server(APP, "-k", "asgi", "--interface", "wsgi")
    s.spawn()
    assert s.wait_exit(15) == 1
    assert "contradict" in s.log


def test_a_wsgi_app_is_still_wsgi(start_server: Any) -> None:
    s = start_server("basic:app")
    assert s.get("/").status == 200
    assert "Serving an ASGI app" not in s.log


# ------------------------------------------------------------------------- a hung loop

@pytest.mark.app_errors
def test_a_blocked_loop_is_treated_as_a_hung_worker(start_server: Any) -> None:
    s = start_server(APP, "-t", "2")
    first = s.worker_pids()
    conn = s.connect(timeout=30)
    conn.send(http_request("/block?s=60"))
    s.wait_log("has run for more than 2s", timeout=20)
    wait_for(lambda: s.worker_pids() and s.worker_pids() != first, timeout=20,
             message="a new worker")
    conn.close()
    assert 'Request "the ASGI event loop (blocked by the app)"' in s.log
    s.wait_log("in block")  # the loop thread's traceback, from faulthandler
    s.assert_serving("/scope")



# ------------------------------------------------------------------- ferrocorn.serve()

def test_serve_takes_an_asgi_app(tmp_path: Path) -> None:
    import signal
    import textwrap

    from test_api import ApiServer

    script = tmp_path / "serve_asgi.py"
    script.write_text(textwrap.dedent(f"""\
        import sys
        sys.path.insert(0, {str(APPS_DIR)!r})
        import ferrocorn
        from asgi_app import create_app

        code = ferrocorn.serve(create_app("from serve()"), bind="127.0.0.1:0", lifespan="off")
        print("returned", code, flush=True)
    """))
    server = ApiServer(script, tmp_path).start()
    try:
        assert server.get("/").body == b"from serve()"
        server.signal(signal.SIGINT)
        assert server.wait_exit() == 0
    finally:
        server.stop()
