"""Fast routes served on the worker's I/O thread ("inline"), and everything else on app threads.

The app reports the Python thread that ran it: ``MainThread`` is the worker's I/O thread.
See crates/ferrocorn/src/inline.rs for the rules these tests pin down.
"""

from __future__ import annotations

import socket
import threading
import time

from support import Server, http_request

APP = "inline_app:app"
QUALIFY = 8  # consecutive fast responses before a route runs inline


def served_by(server: Server, path: str, method: str = "GET", body: bytes | None = None) -> str:
    reply = server.request(method, path, body=body)
    assert reply.status == 200, reply.body
    return reply.body.decode()


def until_inline(server: Server, path: str, limit: int = 200) -> list[str]:
    """Requests `path` until the I/O thread serves it (bounded: a busy machine may make a
    few responses too slow to count); the names of the threads that served them."""
    names = [served_by(server, path)]
    while names[-1] != "MainThread" and len(names) < limit:
        names.append(served_by(server, path))
    assert names[-1] == "MainThread", f"{path} never ran inline: {names[-5:]}"
    return names


def test_a_fast_route_moves_to_the_io_thread(start_server) -> None:
    server = start_server(APP, "-w", "1", "--threads", "4")
    names = until_inline(server, "/thread")
    assert names[0] != "MainThread", "an unknown route starts on the app threads"
    assert len(names) > QUALIFY, "it takes several fast responses"
    assert {served_by(server, "/thread") for _ in range(5)} == {"MainThread"}


def test_no_inline_keeps_every_request_on_app_threads(start_server) -> None:
    server = start_server(APP, "-w", "1", "--threads", "4", "--no-inline")
    names = {served_by(server, "/thread") for _ in range(QUALIFY * 3)}
    assert "MainThread" not in names


def test_requests_with_a_body_stay_on_app_threads(start_server) -> None:
    server = start_server(APP, "-w", "1", "--threads", "4")
    until_inline(server, "/thread")
    assert served_by(server, "/thread", "POST", b"x" * 100) != "MainThread"


def until_post_inline(server: Server, path: str, limit: int = 200) -> None:
    """POSTs a small body to `path` until the I/O thread serves it (bounded)."""
    for _ in range(limit):
        if served_by(server, path, "POST", b"x" * 100).startswith("MainThread "):
            return
    raise AssertionError(f"POST {path} never ran inline")


def test_a_fast_route_s_body_arriving_in_pieces_is_awaited_then_run_inline(start_server) -> None:
    """A route that runs inline and a small body that is still arriving: the connection waits
    for the rest (the I/O thread serves others meanwhile), then the app runs inline with all
    of it, instead of on an app thread that would take turns with the I/O thread for the GIL."""
    server = start_server(APP, "-w", "1", "--threads", "4")
    until_post_inline(server, "/received")
    size = 48 * 1024
    with server.connect() as slow, server.connect() as other:
        slow.send(b"POST /received HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size
                  + b"a" * (size // 2))
        # Another client is answered while the first one's body is incomplete.
        other.send(http_request("/thread"))
        assert other.response().status == 200
        slow.send(b"b" * (size - size // 2))
        reply = slow.response("POST")
    assert reply.status == 200
    assert reply.body == f"MainThread {size}".encode()


def test_a_fast_route_s_body_cut_short_fails_the_app_s_read(start_server) -> None:
    """The client stops halfway through the body: the app's read fails, the client gets a 400
    naming why, and the server goes on serving."""
    server = start_server(APP, "-w", "1", "--threads", "4")
    until_post_inline(server, "/received")
    with server.connect() as conn:
        conn.send(b"POST /received HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n"
                  + b"a" * 400)
        conn.sock.shutdown(socket.SHUT_WR)
        data = conn.sock.recv(4096)
        while data and b"\r\n" not in data:
            data += conn.sock.recv(4096)
    # The body error is the client's: a 400 naming it, as when an app thread reads it.
    assert data.startswith(b"HTTP/1.1 400 "), data[:100]
    assert b"client closed the connection" in data
    assert server.get("/thread").status == 200


def test_two_slow_responses_in_a_row_send_the_route_back(start_server) -> None:
    server = start_server(APP, "-w", "1", "--threads", "4")
    until_inline(server, "/work?ms=0")
    # One slow response may be the CPU taking the thread away for a moment: kept inline.
    assert served_by(server, "/work?ms=30") == "MainThread"
    assert served_by(server, "/work?ms=30") == "MainThread"  # ran inline, slow again
    assert served_by(server, "/work?ms=0") != "MainThread"


def test_one_blocking_response_sends_the_route_back(start_server) -> None:
    server = start_server(APP, "-w", "1", "--threads", "4")
    until_inline(server, "/work?ms=0")
    assert served_by(server, "/work?ms=80") == "MainThread"  # ran inline, blocked 80 ms
    assert served_by(server, "/work?ms=0") != "MainThread"


def test_a_slow_request_on_the_app_threads_keeps_the_io_thread_free(start_server) -> None:
    """While an unproven request is with the app threads, nothing runs inline, so a proven
    route cannot queue behind the GIL on the I/O thread; it still answers at once."""
    server = start_server(APP, "-w", "1", "--threads", "4")
    until_inline(server, "/thread")
    slow: list[str] = []
    worker = threading.Thread(target=lambda: slow.append(served_by(server, "/slow?ms=3000")))
    worker.start()
    try:
        # Wait (bounded) until the slow request is with the app: then /thread leaves the I/O
        # thread alone.
        deadline = time.monotonic() + 2.0
        name = served_by(server, "/thread")
        while name == "MainThread" and time.monotonic() < deadline:
            name = served_by(server, "/thread")
        assert name != "MainThread"
        # Measured against the slow request itself, not a wall-clock bound: the fast one was
        # answered while the slow one was still with the app.
        assert not slow, "a fast request waited for the slow one"
    finally:
        worker.join(10)
    assert slow and slow[0] != "MainThread"
    until_inline(server, "/thread", limit=20)  # back on the I/O thread once it is done


def test_the_app_s_own_threads_get_the_gil_under_inline_load(start_server) -> None:
    """The I/O thread keeps the GIL from one inline call to the next while requests keep
    coming; the app's background threads must still run meanwhile."""
    server = start_server(APP, "-w", "1", "--threads", "4")
    until_inline(server, "/thread")
    before = int(served_by(server, "/ticks"))
    failures: list[str] = []

    def load() -> None:
        conn = server.http()
        try:
            for _ in range(500):
                conn.request("GET", "/thread")
                reply = conn.getresponse()
                if reply.read() != b"MainThread":
                    failures.append("served off the I/O thread")
        except OSError as e:
            failures.append(repr(e))
        finally:
            conn.close()

    clients = [threading.Thread(target=load) for _ in range(4)]
    start = time.monotonic()
    for c in clients:
        c.start()
    for c in clients:
        c.join(60)
    took = time.monotonic() - start
    after = int(served_by(server, "/ticks"))
    assert not failures, failures[:3]
    # The ticker wakes every millisecond; starved of the GIL it would not count at all.
    assert after - before >= max(1, int(took * 1000) // 20), (before, after, took)


def test_responses_made_in_one_run_reach_their_own_connections(start_server) -> None:
    """Requests ready at once are answered inline in one run of the I/O thread, the small
    responses after the first held to its end, the large ones sent at once: each connection
    gets its own response, whole, and keeps going."""
    server = start_server(APP, "-w", "1", "--threads", "4")
    for _ in range(200):
        if served_by(server, "/echo?warm").startswith("MainThread"):
            break
    else:
        raise AssertionError("/echo never ran inline")
    conns = [server.connect() for _ in range(24)]
    inline = 0
    try:
        for round_ in range(4):
            sizes = [40_000 if i % 6 == 0 else i for i in range(len(conns))]
            for i, conn in enumerate(conns):
                conn.send(http_request(f"/echo?id={round_}-{i}&size={sizes[i]}"))
            for i, conn in enumerate(conns):
                resp = conn.response()
                assert resp.status == 200, resp
                name, query, padding = resp.body.split(b" ", 2)
                assert query == f"id={round_}-{i}&size={sizes[i]}".encode()
                assert padding == b"x" * sizes[i]
                inline += name == b"MainThread"
    finally:
        for conn in conns:
            conn.close()
    assert inline > len(conns), "the route stayed on the I/O thread for most requests"
