"""Standing connections and hostile clients: I/O timeouts that hold no Python thread,
connection caps, backpressure, bounded memory, and a randomized mutation run against a live
server. Counts and durations are kept small enough for CI; `bench/hostile.py` runs the full
sizes (10,000 idle connections, a 10 GB upload) and reports the figures."""

from __future__ import annotations

import random
import resource
import socket
import statistics
import threading
import time
from pathlib import Path

import pytest

from support import Server, http_request, vm_kib, wait_for

APP = "hostile_app:app"


def raise_nofile(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, want), hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def tree_rss_kib(server: Server) -> int:
    return vm_kib(server.pid, "VmRSS") + sum(vm_kib(p, "VmRSS") for p in server.worker_pids())


def the_worker(server: Server) -> int:
    (pid,) = wait_for(lambda: server.worker_pids(), message="the worker")
    return pid


def worker_rss_kib(server: Server) -> int:
    return vm_kib(the_worker(server), "VmRSS")


def open_idle(server: Server, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        s = socket.create_connection((server.host, server.port), timeout=10)
        socks.append(s)
    return socks


def timed_get(server: Server, path: str = "/hello") -> float:
    start = time.monotonic()
    reply = server.get(path)
    assert reply.status == 200
    return time.monotonic() - start


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# ------------------------------------------------------------------------------ timeouts

def test_slowloris_head_is_dropped_after_header_timeout(start_server) -> None:
    server = start_server(APP, "--header-timeout", "1", "--log-level", "debug")
    with server.connect() as conn:
        start = time.monotonic()
        conn.send(b"GET / HTTP/1.1\r\n")
        # Trickle a header byte now and then: each byte arrives, the whole head never does.
        closed = False
        for _ in range(40):
            try:
                conn.send(b"X")
            except OSError:
                closed = True
                break
            if conn.readable():
                closed = True
                break
            time.sleep(0.1)  # the slow client's pace, not synchronisation
        assert closed, "server kept a slowloris connection past --header-timeout"
        assert time.monotonic() - start < 3.5
    server.wait_log(r"127\.0\.0\.1:\d+: request head timed out")
    assert server.get("/hello").status == 200


def test_idle_keep_alive_connection_is_closed(start_server) -> None:
    server = start_server(APP, "--keep-alive", "1", "--log-level", "debug")
    with server.connect() as conn:
        conn.send(http_request("/hello"))
        assert conn.response().status == 200
        start = time.monotonic()
        conn.assert_closed(timeout=5)
        assert 0.5 < time.monotonic() - start < 3
    server.wait_log(r"127\.0\.0\.1:\d+: keep-alive timed out")


def test_keep_alive_deadline_moves_with_each_request(start_server) -> None:
    """The keep-alive timeout counts from the last response, not from the first: a client
    sending a request every 0.4 x --keep-alive stays connected for twice --keep-alive (every
    request answered on the one connection), then is closed once idle for --keep-alive."""
    keep_alive = 1.0
    server = start_server(APP, "--keep-alive", str(int(keep_alive)))
    with server.connect() as conn:
        conn.send(http_request("/hello"))
        assert conn.response().status == 200
        first = time.monotonic()
        answered = 1
        for _ in range(20):  # bounded; ends once twice the keep-alive has passed
            if time.monotonic() - first > 2 * keep_alive:
                break
            time.sleep(0.4 * keep_alive)  # the client's pace, not synchronisation
            conn.send(http_request("/hello"))
            assert conn.response().status == 200, "closed before --keep-alive of idleness"
            answered += 1
        assert answered >= 5
        idle_from = time.monotonic()
        conn.assert_closed(timeout=5)
        assert 0.5 * keep_alive < time.monotonic() - idle_from < keep_alive + 2


def test_stalled_upload_fails_the_apps_read(start_server, tmp_path: Path) -> None:
    record = tmp_path / "upload.txt"
    server = start_server(APP, "--body-timeout", "1", "--threads", "1", "--log-level", "debug")
    with server.connect() as conn:
        conn.send(http_request(f"/upload?record={record}", method="POST",
                               headers=[("Content-Length", "100000")]) + b"a" * 1000)
        data = conn.read_until_close(timeout=5)
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]
    wait_for(lambda: lines_of(record), message="the app's read to fail")
    assert lines_of(record)[0].startswith("error ") and "timed out" in lines_of(record)[0]
    # The only app thread is free again.
    assert server.get("/hello").status == 200


def test_client_that_stops_reading_is_dropped_and_iterable_closed(start_server,
                                                                   tmp_path: Path) -> None:
    record = tmp_path / "stream.txt"
    server = start_server(APP, "--write-timeout", "1", "--threads", "1", "--log-level", "debug")
    sock = socket.create_connection((server.host, server.port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        # 1 GiB that the client never reads.
        sock.sendall(http_request(f"/stream?n=16384&size=65536&record={record}"))
        wait_for(lambda: lines_of(record), timeout=10, message="the iterable to be closed")
        sent = int(lines_of(record)[0].split()[1])
        assert sent < 16384
    finally:
        sock.close()
    server.wait_log(r"127\.0\.0\.1:\d+: write timed out")
    assert server.get("/hello").status == 200


# ---------------------------------------------------------------------- caps and backpressure

def test_worker_connections_cap_makes_new_connections_wait(start_server) -> None:
    """At the cap with every connection in the middle of a request, a new client waits (none
    is closed for it) and is served once a slot frees."""
    server = start_server(APP, "--worker-connections", "2")
    first, second = server.connect(), server.connect()
    try:
        for conn in (first, second):
            # In the middle of a request: half of its body sent, the app waiting for the rest.
            conn.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
        third = server.connect()
        third.send(http_request("/hello"))
        # Accepted by the kernel (backlog), not served while two requests are in progress.
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            assert third.nothing_received(), "a third connection was served past the cap"
            time.sleep(0.02)  # polling interval
        first.send(b"67890")
        assert first.response().status == 200
        # The first connection is idle now: the waiting client takes its place.
        assert third.response().status == 200
        assert first.read_until_close(timeout=5) == b""
        # The other request in progress was never touched.
        second.send(b"67890")
        assert second.response().status == 200
        third.close()
    finally:
        first.close()
        second.close()


def test_full_queue_answers_503_with_retry_after(start_server, tmp_path: Path) -> None:
    record = tmp_path / "sleep.txt"
    server = start_server(APP, "--threads", "1", "--max-pending", "1")
    busy, second, third = server.connect(), server.connect(), server.connect()
    try:
        busy.send(http_request(f"/sleep?s=1.5&record={record}"))
        wait_for(lambda: lines_of(record), message="the only app thread to be busy")
        # One of the next two waits in the queue (max-pending 1); the other is refused.
        second.send(http_request("/hello"))
        third.send(http_request("/hello"))
        replies = sorted([second.response(), third.response()], key=lambda r: r.status)
        assert [r.status for r in replies] == [200, 503]
        assert replies[1].header("Retry-After")
        assert busy.response().status == 200
    finally:
        for conn in (busy, second, third):
            conn.close()


def test_without_max_pending_requests_wait_instead_of_failing(start_server) -> None:
    server = start_server(APP, "--threads", "2")
    results: list[int] = []

    def call() -> None:
        results.append(server.get("/sleep?s=0.3").status)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert results == [200] * 8


# ------------------------------------------------------------------------------ memory

def test_idle_connections_cost_little_memory_and_others_stay_fast(start_server) -> None:
    count = 2000
    raise_nofile(count * 2 + 200)
    server = start_server(APP, "--worker-connections", "5000")
    for _ in range(50):
        timed_get(server)
    before = worker_rss_kib(server)
    idle = open_idle(server, count)
    slow: list[socket.socket] = []
    try:
        for _ in range(200):
            s = socket.create_connection((server.host, server.port), timeout=10)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # slowloris: never finishes its head
            slow.append(s)
        # Every idle connection is accepted (the worker holds them, not the backlog).
        wait_for(lambda: worker_rss_kib(server) > before, message="connections accepted")
        latencies = sorted(timed_get(server) for _ in range(200))
        after = worker_rss_kib(server)
    finally:
        for s in idle + slow:
            s.close()
    per_conn = (after - before) / (count + 200)
    p50, p99 = statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]
    print(f"\n{count} idle + 200 slowloris: {per_conn:.1f} KiB/connection, "
          f"p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms")
    assert per_conn < 16, f"{per_conn:.1f} KiB per idle connection"
    assert p99 < 1.0, f"p99 {p99:.3f}s with idle and slowloris connections open"


def test_10000_pipelined_requests_on_one_connection(start_server) -> None:
    server = start_server(APP)
    before = worker_rss_kib(server)
    n = 10000
    with server.connect(timeout=30) as conn:
        batch = http_request("/hello") * n
        sender = threading.Thread(target=conn.send, args=(batch,))
        sender.start()
        for _ in range(n):
            resp = conn.response()
            assert resp.status == 200 and resp.body == b"Hello, World!"
        sender.join(30)
    growth = worker_rss_kib(server) - before
    assert growth < 32 * 1024, f"RSS grew {growth} KiB for {n} pipelined requests"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_huge_upload_is_streamed_with_flat_memory(start_server, tmp_path: Path,
                                                  chunked: bool) -> None:
    record = tmp_path / "upload.txt"
    server = start_server(APP)
    before = worker_rss_kib(server)
    total = 1 << 30  # 1 GiB; bench/hostile.py sends 10 GB
    piece = b"u" * (1 << 20)
    with server.connect(timeout=60) as conn:
        if chunked:
            conn.send(b"POST /upload?record=%s HTTP/1.1\r\nHost: x\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n" % str(record).encode())
            frame = b"%x\r\n" % len(piece) + piece + b"\r\n"
            for _ in range(total // len(piece)):
                conn.send(frame)
            conn.send(b"0\r\n\r\n")
        else:
            conn.send(http_request(f"/upload?record={record}", method="POST",
                                   headers=[("Content-Length", str(total))]))
            for _ in range(total // len(piece)):
                conn.send(piece)
        resp = conn.response()
    assert resp.status == 200 and resp.body == str(total).encode()
    peak = vm_kib(the_worker(server), "VmHWM")
    assert peak - before < 64 * 1024, f"peak RSS grew {peak - before} KiB during a 1 GiB upload"


def test_slow_reader_of_a_huge_response_keeps_memory_flat(start_server, tmp_path: Path) -> None:
    server = start_server(APP)
    before = worker_rss_kib(server)
    sock = socket.create_connection((server.host, server.port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    try:
        sock.sendall(http_request("/stream?n=16384&size=65536"))  # 1 GiB
        received = 0
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:  # ~64 KiB/s
            received += len(sock.recv(1024))
            time.sleep(0.015)  # the slow reader's pace
        growth = worker_rss_kib(server) - before
    finally:
        sock.close()
    assert received > 0
    assert growth < 16 * 1024, f"RSS grew {growth} KiB while a client read slowly"


@pytest.mark.parametrize(("line", "fields", "field_size"), [
    (4094, 100, 8190),  # the defaults
    (200, 5, 300),  # values of their own: the defaults would serve every request below
], ids=["defaults", "set"])
def test_headers_exactly_at_the_limits_are_accepted(start_server, line: int, fields: int,
                                                     field_size: int) -> None:
    """--limit-request-line, --limit-request-fields and --limit-request-field_size: a request
    exactly at each is served, one past it is refused (414, 431)."""
    args = [] if (line, fields, field_size) == (4094, 100, 8190) else [
        "--limit-request-line", str(line), "--limit-request-fields", str(fields),
        "--limit-request-field_size", str(field_size)]
    server = start_server(APP, *args)
    line_target = "/hello?" + "a" * (line - len("GET /hello? HTTP/1.1"))
    assert len(f"GET {line_target} HTTP/1.1") == line
    # A field line counts with its CRLF, as Gunicorn counts it (8188 + 2 = 8190).
    big = "b" * (field_size - 2 - len("X-Big: "))
    assert len(f"X-Big: {big}\r\n") == field_size
    # With Host, exactly `fields` fields.
    headers = [(f"X-H{i}", "v") for i in range(fields - 2)] + [("X-Big", big)]
    with server.connect() as conn:
        conn.send(http_request(line_target, headers=headers))
        assert conn.response().status == 200
    with server.connect() as conn:
        conn.send(http_request(line_target + "a"))
        assert conn.response().status == 414
    with server.connect() as conn:
        conn.send(http_request("/hello", headers=headers + [("X-One-More", "v")]))
        assert conn.response().status == 431
    with server.connect() as conn:
        conn.send(http_request("/hello", headers=[("X-Big", big + "b")]))
        assert conn.response().status == 431


def test_limit_request_body(start_server) -> None:
    server = start_server(APP, "--limit-request-body", "1000")
    with server.connect() as conn:
        conn.send(http_request("/upload", method="POST", body=b"x" * 1000))
        assert conn.response().status == 200
    with server.connect() as conn:
        conn.send(http_request("/upload", method="POST", headers=[("Content-Length", "1001")]))
        assert conn.response().status == 413
    with server.connect() as conn:
        conn.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  + b"3e8\r\n" + b"x" * 1000 + b"\r\n" + b"10\r\n" + b"y" * 16 + b"\r\n0\r\n\r\n")
        assert conn.response().status == 413


# ---------------------------------------------------------------------- randomized mutation

VALID_REQUESTS = [
    b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /hello?x=1 HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
    b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n0\r\n\r\n",
    b"HEAD /hello HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n",
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.choice(["truncate", "duplicate", "flip", "insert", "delete"])
        if not b:
            break
        i = rng.randrange(len(b))
        if op == "truncate":
            del b[i:]
        elif op == "duplicate":
            j = min(len(b), i + rng.randint(1, 20))
            b[i:i] = b[i:j]
        elif op == "flip":
            b[i] ^= 1 << rng.randrange(8)
        elif op == "insert":
            b[i:i] = bytes([rng.choice(b"\r\n :\x00\t;,-0aZ\x7f\xff")])
        else:
            del b[i]
    return bytes(b)


def test_randomized_mutations_never_crash_hang_or_desync(start_server) -> None:
    seed = int(time.time())
    print(f"\nmutation seed: {seed}")
    rng = random.Random(seed)
    server = start_server(APP, "--header-timeout", "1", "--body-timeout", "1",
                          "--keep-alive", "1")
    worker = the_worker(server)
    sentinel = b"GET /pid HTTP/1.1\r\nHost: sentinel\r\nConnection: close\r\n\r\n"
    deadline = time.monotonic() + 30
    rounds = 0
    while rounds < 300 and time.monotonic() < deadline:
        rounds += 1
        data = mutate(rng, rng.choice(VALID_REQUESTS))
        with server.connect(timeout=5) as conn:
            # Sent split at random points, then a sentinel on the same connection.
            cuts = sorted(rng.sample(range(len(data) + 1), k=min(3, len(data) + 1)))
            pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
            try:
                for piece in pieces:
                    if piece:
                        conn.send(piece)
                conn.send(sentinel)
                raw = conn.read_until_close(timeout=4)
            except OSError:
                raw = bytes(conn.buf)
        # Whatever came back parses as responses; a sentinel answer is really the sentinel's.
        text = raw.decode("latin-1")
        for status in (int(line.split()[1]) for line in text.split("\r\n")
                       if line.startswith("HTTP/1.") and len(line.split()) > 1
                       and line.split()[1].isdigit()):
            assert status < 500 or status in (501, 505), f"seed {seed}: {status} for {data!r}"
        if str(worker).encode() in raw:
            assert b"Hello, World!" not in raw.split(str(worker).encode())[-1]
    print(f"mutation rounds: {rounds}")
    assert server.worker_pids() == [worker], f"seed {seed}: the worker died"
    assert server.get("/hello").status == 200
    assert "panicked" not in server.log
