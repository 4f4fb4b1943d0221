"""HTTP/2 (issue 17): prior-knowledge h2c from trusted peers, each stream a WSGI request served
concurrently on the app threads, flow control as backpressure both ways, the limits and the
known attacks (each with bounded cost while other clients keep being served), graceful stop.

Frame-level clients use Python's ``h2`` package (and raw frames where a client library would
refuse to misbehave); ``curl --http2-prior-knowledge`` and ``h2load`` are the real clients.
"""

from __future__ import annotations

import json
import signal
import socket
import struct
import subprocess
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import pytest

from support import Server, free_port, vm_kib, wait_for
from support.skips import needs_tool

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2C = ("--http2-cleartext", "prior-knowledge")

# Frame types and flags (RFC 9113 §6).
DATA, HEADERS, RST_STREAM, SETTINGS, PING, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 8, 9
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
ENHANCE_YOUR_CALM = 0xB


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(
        ">I", stream) + payload


def the_worker(server: Server) -> int:
    pids = wait_for(server.worker_pids, message="a worker")
    return pids[0]


def rss_kib(server: Server) -> int:
    return vm_kib(the_worker(server), "VmRSS")


class Client:
    """An HTTP/2 client on one socket, driven by the ``h2`` package."""

    def __init__(self, server: Server, settings: dict[int, int] | None = None,
                 timeout: float = 10.0) -> None:
        if server.url:
            self.sock = socket.create_connection((server.host, server.port), timeout=timeout)
            self.host = f"{server.host}:{server.port}"
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(server.unix_path)
            self.host = "localhost"
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.flush()
        self.status: dict[int, int] = {}
        self.headers: dict[int, dict[str, str]] = {}
        self.body: dict[int, bytearray] = {}
        self.ended: set[int] = set()
        self.informational: dict[int, list[dict[str, str]]] = {}
        self.trailers: dict[int, dict[str, str]] = {}
        self.reset: dict[int, int] = {}
        self.goaway: int | None = None
        self.closed = False
        self.auto_ack = True

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path: str, method: str = "GET", body: bytes | None = None,
                headers: list[tuple[str, str]] | None = None, end: bool = True) -> int:
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":path", path), (":scheme", "http"),
                (":authority", self.host)] + (headers or [])
        self.conn.send_headers(sid, hdrs, end_stream=end and not body)
        self.body[sid] = bytearray()
        if body:
            self.send_body(sid, body, end)
        self.flush()
        return sid

    def send_body(self, sid: int, body: bytes, end: bool = True) -> None:
        """Sends ``body`` as the server's window allows, reading its frames meanwhile."""
        view = memoryview(body)
        deadline = time.monotonic() + 60
        while view:
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if room <= 0:
                assert time.monotonic() < deadline, "the server never opened its window"
                self.pump()
                continue
            self.conn.send_data(sid, bytes(view[:room]))
            view = view[room:]
            self.flush()
        if end:
            self.conn.end_stream(sid)
            self.flush()

    def pump(self, timeout: float | None = None) -> bool:
        """Reads once and handles what came; False when the connection is closed."""
        if self.closed:
            return False
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed = True
            return False
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.InformationalResponseReceived):
                self.informational.setdefault(event.stream_id, []).append(dict(event.headers))
            elif isinstance(event, h2.events.ResponseReceived):
                headers = dict(event.headers)
                self.status[event.stream_id] = int(headers[":status"])
                self.headers[event.stream_id] = headers
            elif isinstance(event, h2.events.DataReceived):
                self.body.setdefault(event.stream_id, bytearray()).extend(event.data)
                if self.auto_ack:
                    self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                        event.stream_id)
            elif isinstance(event, h2.events.TrailersReceived):
                self.trailers[event.stream_id] = dict(event.headers)
            elif isinstance(event, h2.events.StreamEnded):
                self.ended.add(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self.reset[event.stream_id] = event.error_code
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = event.error_code
        try:
            self.flush()
        except OSError:
            self.closed = True
        return True

    def wait(self, predicate, timeout: float = 10.0, message: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out waiting for {message}"
            if not self.pump(remaining):
                assert predicate(), f"connection closed before {message}"
                return

    def done(self, sid: int) -> bool:
        return sid in self.ended or sid in self.reset

    def get(self, path: str, **kw) -> tuple[int, bytes]:
        sid = self.request(path, **kw)
        self.wait(lambda: self.done(sid), message=f"the response to {path}")
        return self.status.get(sid, 0), bytes(self.body[sid])

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def h2server():
    server = Server("h2_app:app", *H2C, "--threads", "8", "--body-timeout", "2",
                    "--write-timeout", "2", "--limit-request-body", str(200 << 20)).start()
    yield server
    server.stop()


def test_environ_of_a_stream(h2server: Server) -> None:
    c = Client(h2server)
    status, body = c.get("/environ?x=1", headers=[("cookie", "a=1"), ("cookie", "b=2"),
                                                  ("x-test", "yes")])
    assert status == 200
    env = json.loads(body)
    assert env["SERVER_PROTOCOL"] == "HTTP/2"
    assert env["HTTP_HOST"] == c.host
    assert env["SERVER_NAME"] == h2server.host
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["HTTP_X_TEST"] == "yes"
    assert env["QUERY_STRING"] == "x=1" and env["PATH_INFO"] == "/environ"
    assert env["RAW_URI"] == "/environ?x=1"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    sid = c.request("/environ", method="POST", body=b"hello body",
                    headers=[("content-length", "10")])
    c.wait(lambda: c.done(sid))
    env = json.loads(c.body[sid])
    assert env["body"] == "hello body" and env["CONTENT_LENGTH"] == "10"
    # A body without Content-Length (delimited by END_STREAM) reads to its end too.
    sid = c.request("/environ", method="POST", body=b"x" * 100_000)
    c.wait(lambda: c.done(sid))
    assert json.loads(c.body[sid])["body"] == "x" * 100_000
    assert c.headers[sid].get("server", "").startswith("ferrocorn")
    assert "date" in c.headers[sid]
    c.close()


def test_curl_prior_knowledge(h2server: Server) -> None:
    for path, size in (("/hello", 5), ("/big?mib=4", 4 << 20)):
        out = subprocess.run(
            ["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null",
             "-w", "%{http_version} %{http_code} %{size_download}", f"{h2server.url}{path}"],
            capture_output=True, timeout=30, check=True, text=True)
        assert out.stdout.split() == ["2", "200", str(size)], out


def test_file_wrapper_and_large_responses(h2server: Server) -> None:
    c = Client(h2server)
    status, body = c.get("/file?kib=3000")
    assert status == 200 and len(body) == 3000 * 1024
    assert body == bytes(range(256)) * (3000 * 4)
    status, body = c.get("/big?mib=8")
    assert status == 200 and len(body) == 8 << 20
    # HEAD: the head only.
    status, body = c.get("/big?mib=1", method="HEAD")
    assert status == 200 and body == b""
    c.close()


def test_h2c_off_by_default_and_refused_from_untrusted_peers() -> None:
    servers = [Server("h2_app:app"),
               Server("h2_app:app", *H2C, "--forwarded-allow-ips", "10.9.9.9")]
    try:
        for server in servers:
            server.start()
            with server.connect() as conn:
                conn.send(PREFACE + frame(SETTINGS, 0, 0))
                reply = conn.read_until_close(10)
            assert reply.startswith(b"HTTP/1.1 505 "), reply[:100]
            server.assert_serving("/hello")
    finally:
        for server in servers:
            server.stop()


def test_concurrent_streams_on_one_connection() -> None:
    server = Server("h2_app:app", *H2C, "--threads", "100").start()
    sleep = 0.4
    try:
        c = Client(server)
        assert c.get("/hello")[0] == 200  # connection settled
        took = []
        for _ in range(2):  # the first round also starts the app threads
            started = time.monotonic()
            sids = [c.request(f"/sleep?ms={int(sleep * 1000)}") for _ in range(100)]
            c.wait(lambda sids=sids: all(c.done(s) for s in sids), timeout=60,
                   message="100 responses")
            took.append(time.monotonic() - started)
            assert all(c.status.get(s) == 200 for s in sids)
        # Against the app's own sleep: one after another would be 100 of them; concurrently
        # about one. Under four means at least 25 ran at once.
        assert sleep <= took[1] < 4 * sleep, took
        c.close()
    finally:
        server.stop()


@needs_tool("h2load")
def test_h2load_many_streams(h2server: Server) -> None:
    out = subprocess.run(["h2load", "-n", "3000", "-c", "4", "-m", "32", f"{h2server.url}/hello"],
                         capture_output=True, text=True, timeout=60)
    assert "3000 succeeded, 0 failed, 0 errored" in out.stdout, out.stdout[-2000:]
    assert "status codes: 3000 2xx" in out.stdout, out.stdout[-2000:]


def test_slow_read_upload_keeps_memory_flat(tmp_path) -> None:
    """100 MiB uploaded faster than the app reads it (64 KiB a read, a pause after each): the
    flow-control window, given back only as the app reads, is all the worker holds."""
    upload = tmp_path / "upload.bin"
    with open(upload, "wb") as f:
        f.truncate(100 << 20)
    server = Server("h2_app:app", *H2C).start()
    try:
        assert server.get("/hello").status == 200
        before = rss_kib(server)
        out = subprocess.run(
            ["curl", "-sS", "--http2-prior-knowledge", "--data-binary", f"@{upload}",
             "-H", "Content-Type: application/octet-stream", f"{server.url}/slowread?ms=1"],
            capture_output=True, timeout=120, check=True)
        assert out.stdout == str(100 << 20).encode()
        grew = vm_kib(the_worker(server), "VmHWM") - before
        print(f"worker grew {grew} KiB (peak) for a 100 MiB upload")
        # The window (64 KiB a stream, 1 MiB the connection) bounds what the worker holds.
        assert grew < 16 * 1024, f"worker grew {grew} KiB for a 100 MiB upload"
    finally:
        server.stop()


def test_graceful_stop_finishes_streams_in_flight() -> None:
    """GOAWAY, then the streams in flight still get their whole responses. (Raw frames: the
    ``h2`` package stops reading a connection at its first GOAWAY.)"""
    server = Server("h2_app:app", *H2C, "--threads", "8", "--graceful-timeout", "10").start()
    try:
        host = f"{server.host}:{server.port}"
        sock = raw_h2(server)
        enc = hpack.Encoder()
        sids = [1, 3, 5, 7, 9]
        for sid in sids:
            sock.sendall(frame(HEADERS, END_HEADERS | END_STREAM, sid,
                               headers_block("/sleep?ms=800", host, encoder=enc)))
        # Frames are handled in order: once the PING is answered the streams are open.
        sock.sendall(frame(PING, 0, 0, b"synchron"))
        got = bytearray()
        while not any(k == PING and f & ACK for k, f, _, _ in frames_of(bytes(got))):
            data = sock.recv(65536)
            assert data, "closed before the PING's answer"
            got += data
        server.signal(signal.SIGTERM)
        got += read_until_closed(sock, 15)
        frames = frames_of(bytes(got))
        assert goaway_code(bytes(got)) == 0  # NO_ERROR: a graceful GOAWAY
        dec = hpack.Decoder()
        status = {sid: dict(dec.decode(p)).get(":status") for k, _, sid, p in frames
                  if k == HEADERS}
        assert status == dict.fromkeys(sids, "200")
        bodies = {sid: b"".join(p for k, _, s, p in frames if k == DATA and s == sid)
                  for sid in sids}
        assert bodies == dict.fromkeys(sids, b"slept")
        assert server.wait_exit(15) == 0
    finally:
        server.stop()


def test_limits_answer_per_stream(h2server: Server) -> None:
    c = Client(h2server)
    status, _ = c.get("/hello", headers=[("x-big", "v" * 9000)])
    assert status == 431
    status, _ = c.get("/" + "a" * 5000)
    assert status == 414
    # The connection serves on.
    assert c.get("/hello") == (200, b"hello")
    c.close()
    small = Server("h2_app:app", *H2C, "--limit-request-body", "1000").start()
    try:
        c = Client(small)
        sid = c.request("/slowread?ms=0", method="POST", headers=[("content-length", "5000")],
                        end=False)
        c.wait(lambda: c.done(sid) or c.status.get(sid))
        assert c.status.get(sid) == 413
        assert c.get("/hello") == (200, b"hello")
        # Without a Content-Length the count is kept as the body arrives.
        sid = c.request("/slowread?ms=0", method="POST", body=b"x" * 5000)
        c.wait(lambda: c.done(sid))
        assert c.status.get(sid, 0) >= 400 or sid in c.reset
        assert c.get("/hello") == (200, b"hello")
        c.close()
    finally:
        small.stop()


# ----------------------------------------------------------------------------- attacks


def raw_h2(server: Server, settings: bytes = b"") -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=10)
    sock.sendall(PREFACE + frame(SETTINGS, 0, 0, settings))
    return sock


def headers_block(path: str, host: str, extra: list[tuple[str, str]] | None = None,
                  encoder: hpack.Encoder | None = None) -> bytes:
    enc = encoder or hpack.Encoder()
    return enc.encode([(":method", "GET"), (":path", path), (":scheme", "http"),
                       (":authority", host)] + (extra or []))


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """What the server sends until it closes the connection (within ``timeout``)."""
    deadline = time.monotonic() + timeout
    got = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "the server did not close the connection"
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return bytes(got)
        if not data:
            return bytes(got)
        got += data


def frames_of(data: bytes) -> list[tuple[int, int, int, bytes]]:
    out = []
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        kind, flags = data[3], data[4]
        sid = int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
        out.append((kind, flags, sid, data[9:9 + length]))
        data = data[9 + length:]
    return out


def goaway_code(data: bytes) -> int | None:
    for kind, _, _, payload in frames_of(data):
        if kind == 7:
            return int.from_bytes(payload[4:8], "big")
    return None


def send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


@pytest.fixture()
def attacked():
    server = Server("h2_app:app", *H2C, "--threads", "4", "--body-timeout", "1",
                    "--write-timeout", "1").start()
    yield server
    server.stop()


def test_rapid_reset(attacked: Server) -> None:
    """CVE-2023-44487: streams opened and reset at once, thousands of them."""
    host = f"{attacked.host}:{attacked.port}"
    sock = raw_h2(attacked)
    enc = hpack.Encoder()
    burst = bytearray()
    for i in range(2000):
        sid = 1 + 2 * i
        burst += frame(HEADERS, END_HEADERS | END_STREAM, sid,
                       headers_block("/sleep?ms=20", host, encoder=enc))
        burst += frame(RST_STREAM, 0, sid, struct.pack(">I", 8))  # CANCEL
    send_quietly(sock, bytes(burst))
    data = read_until_closed(sock, 20)
    assert goaway_code(data) == ENHANCE_YOUR_CALM
    sock.close()
    attacked.assert_serving("/hello")
    c = Client(attacked)
    assert c.get("/hello") == (200, b"hello")


def test_rapid_reset_paced(attacked: Server, tmp_path) -> None:
    """Rapid reset paced by a PING round trip per stream, so that streams can be accepted (and
    handed to the app) before their RST_STREAM: the app runs at most about a hundred of them
    before the connection is closed with ENHANCE_YOUR_CALM (streams reset before they are
    accepted never reach it)."""
    host = f"{attacked.host}:{attacked.port}"
    calls = tmp_path / "calls"
    calls.write_bytes(b"")
    sock = raw_h2(attacked)
    enc = hpack.Encoder()
    got = bytearray()
    for i in range(400):
        sid = 1 + 2 * i
        send_quietly(sock, frame(HEADERS, END_HEADERS | END_STREAM, sid,
                                 headers_block(f"/tick?f={calls}", host, encoder=enc))
                     + frame(PING, 0, 0, struct.pack(">Q", i)))
        while not any(k == PING and f & ACK and p == struct.pack(">Q", i)
                      for k, f, _, p in frames_of(bytes(got))):
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                break
            got += data
        if goaway_code(bytes(got)) is not None:
            break
        send_quietly(sock, frame(RST_STREAM, 0, sid, struct.pack(">I", 8)))
    sock.close()
    attacked.assert_serving("/hello")
    ran = len(calls.read_bytes())
    assert ran <= 100 + 8, ran  # the bound, plus what was queued for the 4 threads
    if ran > 100:
        assert goaway_code(bytes(got)) == ENHANCE_YOUR_CALM


def test_made_you_reset(attacked: Server) -> None:
    """CVE-2025-8671: frames that make the server reset streams (a WINDOW_UPDATE that
    overflows the stream's window is a stream error, RFC 9113 §6.9.1)."""
    host = f"{attacked.host}:{attacked.port}"
    sock = raw_h2(attacked)
    enc = hpack.Encoder()
    burst = bytearray()
    for i in range(1000):
        sid = 1 + 2 * i
        burst += frame(HEADERS, END_HEADERS, sid, headers_block("/hello", host, encoder=enc))
        burst += frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", 0x7FFFFFFF))
    send_quietly(sock, bytes(burst))
    data = read_until_closed(sock, 20)
    assert goaway_code(data) == ENHANCE_YOUR_CALM
    sock.close()
    attacked.assert_serving("/hello")


def test_continuation_flood(attacked: Server) -> None:
    host = f"{attacked.host}:{attacked.port}"
    sock = raw_h2(attacked)
    before = rss_kib(attacked)
    send_quietly(sock, frame(HEADERS, 0, 1, headers_block("/hello", host)))
    junk = hpack.Encoder().encode([("x-junk", "j" * 1000)])
    sent = 0
    for _ in range(2000):
        try:
            sock.sendall(frame(CONTINUATION, 0, 1, junk))
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += 1
    read_until_closed(sock, 20)
    sock.close()
    assert sent < 2000 or rss_kib(attacked) - before < 16 * 1024
    attacked.assert_serving("/hello")


def test_hpack_bomb(attacked: Server) -> None:
    """A 4 KiB field put in the dynamic table once, then referenced with one byte each time:
    the decoded list passes --http2-max-header-list-size and the request is refused."""
    c = Client(attacked)
    big = "b" * 4000
    enc = hpack.Encoder()
    first = enc.encode([(":method", "GET"), (":path", "/hello"), (":scheme", "http"),
                        (":authority", c.host), ("x-bomb", big)])
    # Index 62 is the first dynamic entry: each byte 0xBE repeats the 4 KB field.
    bomb = first + bytes([0xBE]) * 100
    c.sock.sendall(frame(HEADERS, END_HEADERS | END_STREAM, 1, bomb))
    c.conn.get_next_available_stream_id()  # keep h2's stream counter in step
    data = read_until_closed_or(c.sock, 5)
    kinds = [(k, sid) for k, _, sid, _ in frames_of(data)]
    # Refused as a whole: GOAWAY ENHANCE_YOUR_CALM (the h2 crate's answer to a header list
    # over the limit), and no response: a server that decoded and served it answers 200.
    assert goaway_code(data) == ENHANCE_YOUR_CALM, kinds
    assert (HEADERS, 1) not in kinds and (DATA, 1) not in kinds, kinds
    attacked.assert_serving("/hello")


def read_until_closed_or(sock: socket.socket, timeout: float) -> bytes:
    """What the server sends within ``timeout`` (or until it closes)."""
    deadline = time.monotonic() + timeout
    got = bytearray()
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except (TimeoutError, socket.timeout):
            break
        except ConnectionResetError:
            break
        if not data:
            break
        got += data
        if any(k in (HEADERS, RST_STREAM, 7) for k, *_ in frames_of(bytes(got))):
            break
    return bytes(got)


@pytest.mark.parametrize("flood", ["ping", "settings", "window_update", "tiny_data"])
def test_small_frame_floods(attacked: Server, flood: str) -> None:
    """Thousands of tiny control frames, never reading the answers: the worker stays bounded
    and keeps serving other clients."""
    host = f"{attacked.host}:{attacked.port}"
    sock = raw_h2(attacked)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    before = rss_kib(attacked)
    if flood == "ping":
        one = frame(PING, 0, 0, b"12345678")
    elif flood == "settings":
        one = frame(SETTINGS, 0, 0, struct.pack(">HI", 3, 100))
    elif flood == "window_update":
        one = frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1))
    else:
        send_quietly(sock, frame(HEADERS, END_HEADERS, 1, hpack.Encoder().encode(
            [(":method", "POST"), (":path", "/slowread?ms=0"), (":scheme", "http"),
             (":authority", host)])))
        one = frame(DATA, 0, 1, b"x")
    chunk = one * 1000
    deadline = time.monotonic() + 3
    sent = 0
    sock.settimeout(0.5)
    while time.monotonic() < deadline and sent < 200_000:
        try:
            sock.sendall(chunk)
        except (TimeoutError, socket.timeout):
            break  # the server stopped reading: backpressure
        except (BrokenPipeError, ConnectionResetError):
            break  # the server closed the connection
        sent += 1000
    # Others are served meanwhile, and the worker did not balloon.
    attacked.assert_serving("/hello")
    assert rss_kib(attacked) - before < 32 * 1024
    sock.close()
    attacked.assert_serving("/hello")


def test_stream_that_never_ends(attacked: Server) -> None:
    """A body that never gets END_STREAM: the app's read fails after --body-timeout."""
    c = Client(attacked)
    sid = c.request("/slowread?ms=0", method="POST", body=b"x" * 1000, end=False)
    started = time.monotonic()
    c.wait(lambda: c.done(sid) or sid in c.status, timeout=10, message="an answer")
    assert time.monotonic() - started < 8
    assert c.status.get(sid, 0) >= 400 or sid in c.reset
    assert c.get("/hello") == (200, b"hello")


def test_zero_window_held_forever(attacked: Server) -> None:
    """A client that announces a zero window and never opens it: the stream is reset after
    --write-timeout and the app thread freed."""
    c = Client(attacked, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    c.auto_ack = False
    sid = c.request("/big?mib=64")
    c.wait(lambda: sid in c.reset, timeout=10, message="the stream's reset")
    other = Client(attacked)
    assert other.get("/hello") == (200, b"hello")


def test_access_log_and_metrics(tmp_path) -> None:
    port = free_port()
    server = Server("h2_app:app", *H2C, "--access-logfile", "-", "--access-logformat",
                    "%(H)s %(s)s %(U)s", "--metrics-bind", f"127.0.0.1:{port}").start()
    try:
        c = Client(server)
        assert c.get("/hello") == (200, b"hello")
        wait_for(lambda: "HTTP/2.0 200 /hello" in server.stdout, message="access line")
        import urllib.request

        def scraped() -> str | None:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            return text if "ferrocorn_http2_streams_total 1" in text else None
        text = wait_for(scraped, message="http2 stream counted")
        assert "ferrocorn_http2_resets_sent_total" in text
        assert "ferrocorn_http2_goaways_sent_total" in text
    finally:
        server.stop()


def test_head_that_never_ends() -> None:
    """HEADERS without END_HEADERS, then silence: no stream ever opens, so the connection is
    idle; it gets GOAWAY after --keep-alive and is dropped --header-timeout later."""
    server = Server("h2_app:app", *H2C, "--keep-alive", "1", "--header-timeout", "2").start()
    try:
        sock = raw_h2(server)
        block = headers_block("/hello", f"{server.host}:{server.port}")
        sock.sendall(frame(HEADERS, 0, 1, block[:5]))
        started = time.monotonic()
        data = read_until_closed(sock, 15)
        assert time.monotonic() - started < 8
        assert goaway_code(data) is not None
        server.assert_serving("/hello")
    finally:
        server.stop()


@needs_tool("h2load")
def test_max_requests_counts_streams() -> None:
    server = Server("h2_app:app", *H2C, "--max-requests", "10").start()
    try:
        # h2load sends the ten one after another on one connection (and, unlike the ``h2``
        # package, reads on after the GOAWAY that comes with the tenth).
        out = subprocess.run(["h2load", "-n", "10", "-c", "1", "-m", "1", f"{server.url}/hello"],
                             capture_output=True, timeout=30, text=True).stdout
        assert "10 succeeded, 0 failed, 0 errored" in out, out[-1500:]
        server.wait_log(r"Autorestarting worker after 10 requests")
        server.assert_serving("/hello")
    finally:
        server.stop()


def test_hop_by_hop_fields_never_reach_http2() -> None:
    """PEP 3333 forbids them: start_response refuses one (a 500, as on HTTP/1.1), and nothing
    connection-specific is ever framed into HTTP/2 HEADERS (RFC 9113 §8.2.2)."""
    server = Server("h2_app:hop_app", *H2C).start()
    try:
        c = Client(server)
        status, _ = c.get("/")
        assert status == 500
        assert "connection" not in c.headers[1]
        assert c.get("/")[0] == 500  # the connection goes on
    finally:
        server.stop()


def test_h2c_over_a_unix_socket(tmp_path) -> None:
    """A unix-socket peer is trusted (the proxy is on this machine), so h2c is accepted."""
    server = Server("h2_app:app", *H2C, binds=[f"unix:{tmp_path}/h2.sock"]).start()
    try:
        c = Client(server)
        status, body = c.get("/environ")
        assert status == 200
        env = json.loads(body)
        assert env["SERVER_PROTOCOL"] == "HTTP/2" and env["HTTP_HOST"] == "localhost"
        assert env["REMOTE_ADDR"] == ""
    finally:
        server.stop()


def test_early_hints_go_out_as_a_103_before_the_response() -> None:
    """wsgi.early_hints over HTTP/2: an informational 103 HEADERS frame with the Link fields,
    then the final response; hints once the response has started are not sent."""
    server = Server("hints_app:app", *H2C).start()
    try:
        client = Client(server)
        sid = client.request("/two")
        client.wait(lambda: client.done(sid), message="the response to /two")
        assert client.status[sid] == 200
        hints = client.informational.get(sid, [])
        assert [h[":status"] for h in hints] == ["103", "103"], hints
        assert hints[0]["link"] == "</style.css>; rel=preload; as=style"
        late = client.request("/late")
        client.wait(lambda: client.done(late), message="the response to /late")
        assert client.status[late] == 200 and bytes(client.body[late]) == b"first second"
        assert late not in client.informational
        client.close()
    finally:
        server.stop()


def test_expect_100_continue_on_a_stream() -> None:
    """A stream with ``expect: 100-continue`` gets an informational 100 when the app first
    reads wsgi.input (RFC 9110 §10.1.1), as over HTTP/1.1; an app that answers without reading
    sends none."""
    server = Server("h2_app:app", *H2C).start()
    try:
        c = Client(server)
        sid = c.request("/environ", method="POST", end=False,
                        headers=[("content-length", "5"), ("expect", "100-continue")])
        c.wait(lambda: sid in c.informational, message="the 100")
        assert [h[":status"] for h in c.informational[sid]] == ["100"]
        assert sid not in c.status
        c.send_body(sid, b"after")
        c.wait(lambda: c.done(sid), message="the response")
        assert c.status[sid] == 200 and json.loads(c.body[sid])["body"] == "after"
        sid = c.request("/hello", method="POST", end=False,
                        headers=[("content-length", "5"), ("expect", "100-continue")])
        c.wait(lambda: sid in c.status, message="the response to /hello")
        assert c.status[sid] == 200 and sid not in c.informational
        c.close()
    finally:
        server.stop()


def test_idle_http2_connections_are_reclaimed_busy_ones_are_not() -> None:
    """At --worker-connections, an HTTP/2 connection with no stream open is idle: it gets
    GOAWAY (NO_ERROR) and is closed to admit a new client. One with a stream open is busy."""
    server = Server("h2_app:app", *H2C, "--worker-connections", "2", "--keep-alive", "60",
                    "--log-level", "debug").start()
    try:
        idle = Client(server)
        assert idle.get("/hello") == (200, b"hello")
        busy = Client(server)
        slow = busy.request("/sleep?ms=1500")
        with server.connect() as fresh:
            fresh.send(http_request_line("/hello"))
            assert fresh.response().body == b"hello"
        idle.wait(lambda: idle.closed, timeout=5, message="the idle connection's close")
        assert idle.goaway == 0
        server.wait_log(r"HTTP/2 connection reclaimed")
        busy.wait(lambda: busy.done(slow), timeout=10, message="the busy stream")
        assert busy.status[slow] == 200 and not busy.closed
        assert busy.get("/hello") == (200, b"hello")
    finally:
        server.stop()


def http_request_line(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def test_a_peer_that_never_answers_pings_is_dropped() -> None:
    """With a stream open, a PING goes out every --keep-alive (at least 1 s); a peer that
    does not answer within --write-timeout is closed. A peer that answers stays, and others
    are served meanwhile."""
    server = Server("h2_app:app", *H2C, "--keep-alive", "1", "--write-timeout", "1",
                    "--threads", "4").start()
    try:
        sock = raw_h2(server)
        host = f"{server.host}:{server.port}"
        app_sleep = 5.0  # well past the drop, so the drop cannot wait for the response
        sock.sendall(frame(HEADERS, END_STREAM | END_HEADERS, 1,
                           headers_block(f"/sleep?ms={int(app_sleep * 1000)}", host)))
        started = time.monotonic()
        answering = Client(server)
        slow = answering.request(f"/sleep?ms={int(app_sleep * 1000)}")
        # The answering peer reads (and so answers PINGs) on a thread of its own.
        waiter = threading.Thread(target=answering.wait, args=(lambda: answering.done(slow),))
        waiter.start()
        data = read_until_closed(sock, 10)
        dropped_after = time.monotonic() - started
        assert any(kind == PING and not flags & ACK for kind, flags, _, _ in frames_of(data))
        # A PING after --keep-alive, unanswered for --write-timeout: dropped then, not sooner,
        # and without the response, which the app gives only after app_sleep.
        assert not any(sid == 1 and kind in (HEADERS, DATA) for kind, _, sid, _ in frames_of(data))
        assert 2.0 - 0.05 <= dropped_after < app_sleep, dropped_after
        assert Client(server).get("/hello") == (200, b"hello")
        waiter.join(10)
        assert answering.status.get(slow) == 200 and not answering.closed
    finally:
        server.stop()


# ------------------------------------------------------------- settings at non-default values

FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR, REFUSED_STREAM = 0x3, 0x6, 0x7


def handshake(server: Server) -> tuple[socket.socket, dict[int, int]]:
    """A raw HTTP/2 connection past the settings exchange: the server's SETTINGS read and
    acknowledged (its limits apply from then on). Returns the socket and those settings."""
    sock = raw_h2(server)
    got = bytearray()
    deadline = time.monotonic() + 10
    while True:
        frames = frames_of(bytes(got))
        theirs = [p for kind, flags, _, p in frames if kind == SETTINGS and not flags & ACK]
        if theirs:
            break
        assert time.monotonic() < deadline, "no SETTINGS from the server"
        data = sock.recv(65536)
        assert data, "closed before its SETTINGS"
        got += data
    sock.sendall(frame(SETTINGS, ACK, 0))
    payload = theirs[0]
    return sock, {int.from_bytes(payload[i:i + 2], "big"):
                  int.from_bytes(payload[i + 2:i + 6], "big") for i in range(0, len(payload), 6)}


Frame = tuple[int, int, int, bytes]  # type, flags, stream, payload


def read_frames(sock: socket.socket, done, timeout: float = 10.0) -> list[Frame]:
    """Frames from the server until ``done(frames)`` holds or the connection closes."""
    deadline = time.monotonic() + timeout
    got = bytearray()
    while not done(frames_of(bytes(got))):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out; frames so far: {[f[:3] for f in frames_of(bytes(got))]}"
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        got += data
    return frames_of(bytes(got))


def rst_code(frames, sid: int) -> int | None:
    for kind, _, stream, payload in frames:
        if kind == RST_STREAM and stream == sid:
            return int.from_bytes(payload[:4], "big")
    return None


def goaways(frames: list[Frame]) -> list[int]:
    """The error codes of the GOAWAY frames among ``frames``."""
    return [int.from_bytes(payload[4:8], "big") for kind, _, _, payload in frames if kind == 7]


def ended(frames, sid: int) -> bool:
    return any(stream == sid and kind in (HEADERS, DATA) and flags & END_STREAM
               for kind, flags, stream, _ in frames)


def test_max_concurrent_streams_and_frame_size_at_non_default_values() -> None:
    """--http2-max-concurrent-streams 3: advertised, and a fourth stream while three are open
    is refused (REFUSED_STREAM) while the three are answered. --http2-max-frame-size 20000: a
    20000-byte DATA frame is read (16384 is the default's limit), one of 20001 is a
    FRAME_SIZE_ERROR."""
    server = Server("h2_app:app", *H2C, "--threads", "8", "--http2-max-concurrent-streams", "3",
                    "--http2-max-frame-size", "20000").start()
    try:
        sock, settings = handshake(server)
        assert settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == 3
        assert settings[h2.settings.SettingCodes.MAX_FRAME_SIZE] == 20000
        enc = hpack.Encoder()
        host = f"{server.host}:{server.port}"
        for sid in (1, 3, 5, 7):
            sock.sendall(frame(HEADERS, END_STREAM | END_HEADERS, sid,
                               headers_block("/sleep?ms=500", host, encoder=enc)))
        frames = read_frames(sock, lambda f: all(ended(f, s) for s in (1, 3, 5))
                             and rst_code(f, 7) is not None)
        assert rst_code(frames, 7) == REFUSED_STREAM
        assert all(rst_code(frames, s) is None for s in (1, 3, 5))
        sock.close()

        for size, refused in ((20000, False), (20001, True)):
            sock, _ = handshake(server)
            sock.sendall(frame(HEADERS, END_HEADERS, 1, enc_post("/environ", host, size)))
            sock.sendall(frame(DATA, END_STREAM, 1, b"x" * size))
            frames = read_frames(sock, lambda f: ended(f, 1) or goaways(f))
            goaway = goaways(frames)
            if refused:
                assert goaway == [FRAME_SIZE_ERROR], frames
            else:
                assert not goaway and ended(frames, 1), frames
                body = b"".join(p for k, _, s, p in frames if k == DATA and s == 1)
                assert json.loads(body)["body"] == "x" * size
            sock.close()
    finally:
        server.stop()


def enc_post(path: str, host: str, length: int) -> bytes:
    return hpack.Encoder().encode([(":method", "POST"), (":path", path), (":scheme", "http"),
                                   (":authority", host), ("content-length", str(length))])


def test_initial_window_size_at_a_non_default_value() -> None:
    """--http2-initial-window-size 4096: advertised; a client may send 4096 bytes of a body
    the app has not read, and a frame past that is a flow-control error."""
    server = Server("h2_app:app", *H2C, "--http2-initial-window-size", "4096").start()
    try:
        sock, settings = handshake(server)
        assert settings[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] == 4096
        host = f"{server.host}:{server.port}"
        # /sleep does not read its body: nothing reopens the window meanwhile.
        sock.sendall(frame(HEADERS, END_HEADERS, 1, enc_post("/sleep?ms=3000", host, 8000)))
        sock.sendall(frame(DATA, 0, 1, b"x" * 4096))  # exactly the window: accepted
        sock.sendall(frame(HEADERS, END_HEADERS, 3, enc_post("/sleep?ms=3000", host, 8000)))
        sock.sendall(frame(DATA, 0, 3, b"x" * 4097))  # one byte past it
        frames = read_frames(sock, lambda f: rst_code(f, 3) is not None or goaways(f))
        goaway = goaways(frames)
        assert rst_code(frames, 3) == FLOW_CONTROL_ERROR or goaway == [FLOW_CONTROL_ERROR], \
            frames
        assert rst_code(frames, 1) is None or goaway, "the stream within its window stays"
        sock.close()
    finally:
        server.stop()
