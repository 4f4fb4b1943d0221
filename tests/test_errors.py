"""Nothing a client sends brings the server down: garbage, half-open and vanished
connections, idle sockets, floods. After each, a normal request is still served, and the
worker process is the same one (it did not crash and get replaced)."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

import pytest

from support import RawConn, Server, http_request, parse_responses, running_server, wait_for


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with running_server("responses:app") as srv:
        srv.assert_serving("/health")  # the worker is up (it boots after "Listening at")
        srv.initial_workers = sorted(srv.worker_pids())  # type: ignore[attr-defined]
        yield srv
        assert sorted(srv.worker_pids()) == srv.initial_workers, \
            "a worker died during the error tests:\n" + srv.log[-3000:]


def survives(server: Server) -> None:
    server.assert_serving("/health")
    assert sorted(server.worker_pids()) == server.initial_workers, \
        "the worker was replaced: it crashed\n" + server.log[-3000:]  # type: ignore[attr-defined]


def closes_with_optional_error(conn: RawConn, statuses: tuple[int, ...] = (400,)) -> None:
    """The server either answers with an error status and closes, or just closes."""
    data = conn.read_until_close(10)
    if data:
        responses = parse_responses(data)
        assert len(responses) == 1, responses
        assert responses[0].status in statuses, responses[0]


@pytest.mark.parametrize("seed", range(6))
def test_random_garbage(server: Server, seed: int) -> None:
    garbage = random.Random(seed).randbytes(4096)
    with server.connect() as conn:
        try:
            conn.send(garbage)
        except (BrokenPipeError, ConnectionResetError):
            pass
        closes_with_optional_error(conn, (400, 414, 431, 505, 501))
    survives(server)


def test_tls_client_hello(server: Server) -> None:
    hello = bytes.fromhex("16030100a5010000a10303") + bytes(range(32)) + b"\x00" * 100
    with server.connect() as conn:
        conn.send(hello)
        closes_with_optional_error(conn)
    survives(server)


def test_endless_request_line(server: Server) -> None:
    with server.connect() as conn:
        try:
            for _ in range(10):  # 100 KiB of request line, no newline
                if conn.readable():
                    break
                conn.send(b"A" * 10240)
        except (BrokenPipeError, ConnectionResetError):
            pass
        closes_with_optional_error(conn, (400, 414))
    survives(server)


def test_endless_header_section(server: Server) -> None:
    with server.connect() as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        try:
            for i in range(2000):  # header lines until the server objects
                if conn.readable():
                    break
                conn.send(b"X-Header-%d: value\r\n" % i)
        except (BrokenPipeError, ConnectionResetError):
            pass
        closes_with_optional_error(conn, (431, 400))
    survives(server)


@pytest.mark.parametrize("abort", [False, True], ids=["fin", "rst"])
def test_connect_and_leave(server: Server, abort: bool) -> None:
    for _ in range(20):
        conn = server.connect()
        if abort:
            conn.abort()
        else:
            conn.close()
    survives(server)


@pytest.mark.parametrize(("partial", "statuses"), [
    (b"GET", (400,)),
    (b"GET / HTTP/1.1\r\n", (400,)),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Half", (400,)),
    # the app (which does not read the body) may answer before the body is found short
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part", (400, 404)),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
     (400, 404)),
], ids=["method", "request-line", "mid-header", "short-body", "short-chunk"])
def test_half_open_connection_is_closed(server: Server, partial: bytes,
                                        statuses: tuple[int, ...]) -> None:
    """The client sends part of a request, then shuts down its side: the server ends it."""
    with server.connect() as conn:
        conn.send(partial)
        conn.sock.shutdown(socket.SHUT_WR)
        closes_with_optional_error(conn, statuses)
    survives(server)


@pytest.mark.parametrize("partial", [
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Half",
    b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 300000,
], ids=["mid-header", "mid-body"])
def test_client_vanishes_mid_request(server: Server, partial: bytes) -> None:
    for _ in range(5):
        conn = server.connect()
        conn.send(partial)
        conn.abort()
    survives(server)


def test_client_vanishes_mid_response(server: Server) -> None:
    for _ in range(5):
        conn = server.connect()
        conn.send(http_request(f"/big?size={8 * 1024 * 1024}"))
        wait_for(lambda conn=conn: conn._fill() and len(conn.buf) > 100000, 10, 0,
                 message="the start of the response")
        conn.abort()
    survives(server)


def test_idle_connections_do_not_block_others(server: Server) -> None:
    """Open connections that send nothing (or half a request) do not hold up other
    clients, whatever the number of Python threads."""
    idle = [server.connect() for _ in range(30)]
    try:
        for i, conn in enumerate(idle):
            if i % 2:
                conn.send(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finished
        for _ in range(5):
            server.assert_serving("/health")
    finally:
        for conn in idle:
            conn.close()
    survives(server)


def test_pipelined_flood(server: Server) -> None:
    n = 300
    with server.connect(timeout=30) as conn:
        conn.send(b"".join(http_request("/health") for _ in range(n)))
        bodies = [conn.response().body for _ in range(n)]
    assert bodies == [b"ok"] * n
    survives(server)


def test_garbage_after_valid_request_on_same_connection(server: Server) -> None:
    with server.connect() as conn:
        conn.send(http_request("/health"))
        assert conn.response().body == b"ok"
        conn.send(b"\x00\xff\xfe garbage \r\n\r\n")
        closes_with_optional_error(conn)
    survives(server)


def test_many_empty_lines_before_a_request(server: Server) -> None:
    """Thousands of empty lines before a request: ignored, or refused with a 400."""
    with server.connect() as conn:
        conn.send(b"\r\n" * 5000 + http_request("/health", headers=[("Connection", "close")]))
        try:
            data = conn.read_until_close(10)
        except ConnectionResetError:
            data = b""
    if data:
        (resp,) = parse_responses(data)
        assert resp.status in (200, 400), resp
    survives(server)


def test_many_bad_requests_in_a_row(server: Server) -> None:
    bad = [b"BAD\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n"
           b"Content-Length: x\r\n\r\n", b"GET /\x00 HTTP/1.1\r\n\r\n"]
    for i in range(40):
        with server.connect() as conn:
            conn.send(bad[i % len(bad)])
            closes_with_optional_error(conn, (400, 505))
    survives(server)
