"""Issue 21: Gunicorn 27's parser strictness (bare LF, empty lines before the request line,
duplicate Host and Content-Type, how a field line counts against --limit-request-field_size),
the RFC 9112 MUSTs Gunicorn skips (HTTP/1.1 without Host), a truncated chunked body seen by the
app, header values from the app without their surrounding whitespace, and the bound on how much
of an unread body the server drains to keep a connection alive. Raw sockets throughout: each
request goes out exactly as written here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support import Server, http_request, running_server, wait_for

APP = "hostile_app:app"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with running_server(APP) as srv:
        yield srv


def refused(server: Server, raw: bytes) -> int:
    """Sends ``raw``; returns the status of the answer, after checking the server then closed
    the connection and still serves others."""
    with server.connect() as conn:
        conn.send(raw)
        status = conn.response().status
        assert conn.read_until_close(timeout=5) == b""
    server.assert_serving("/hello")
    return status


@pytest.mark.parametrize("raw", [
    b"GET /hello HTTP/1.1\nHost: x\r\n\r\n",
    b"GET /hello HTTP/1.1\r\nHost: x\n\r\n",
    b"GET /hello HTTP/1.1\r\nHost: x\r\n\n",
    b"GET /hello HTTP/1.1\nHost: x\n\n",
    b"GET /hello HTTP/1.1\r\nHost: x\r\nX-A: 1\nX-B: 2\r\n\r\n",
    b"\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n",
], ids=["request-line", "field", "end-of-head", "all-lines", "mid-head", "before-request-line"])
def test_a_bare_lf_in_the_head_is_a_400(server: Server, raw: bytes) -> None:
    assert refused(server, raw) == 400


def test_one_empty_line_before_the_request_line_is_ignored_and_two_are_not(
        server: Server) -> None:
    with server.connect() as conn:
        conn.send(b"\r\n" + http_request("/hello"))
        assert conn.response().status == 200
        # The same on a kept-alive connection: a CRLF an old client sent after a POST body.
        conn.send(b"\r\n" + http_request("/hello"))
        assert conn.response().status == 200
    assert refused(server, b"\r\n\r\n" + http_request("/hello")) == 400


@pytest.mark.parametrize("field", ["Host: other.example", "Content-Type: text/plain"])
def test_a_second_host_or_content_type_is_a_400(server: Server, field: str) -> None:
    raw = (f"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{field}\r\n"
           "Content-Length: 2\r\n\r\n{}").encode()
    assert refused(server, raw) == 400


def test_http11_without_host_is_a_400_and_http10_needs_none(server: Server) -> None:
    assert refused(server, b"GET /hello HTTP/1.1\r\n\r\n") == 400
    with server.connect() as conn:
        conn.send(b"GET /hello HTTP/1.0\r\n\r\n")
        assert conn.response().status == 200


def test_field_size_counts_the_line_and_its_crlf_as_gunicorn_does(start_server) -> None:
    """With --limit-request-field_size 100, Gunicorn accepts a field line of 98 bytes (plus
    CRLF: 100) and refuses one of 99, whitespace included; so does ferrocorn."""
    server = start_server(APP, "--limit-request-field_size", "100")
    name = "X-Field: "
    for line, status in [(name + "v" * (98 - len(name)), 200),
                         (name + "v" * (99 - len(name)), 431),
                         ("X-Field:   " + "v" * (98 - len(name)), 431)]:
        raw = f"GET /hello HTTP/1.1\r\nHost: x\r\n{line}\r\n\r\n".encode()
        with server.connect() as conn:
            conn.send(raw)
            assert conn.response().status == status, (len(line), line[:12])


def test_a_truncated_chunked_body_is_an_error_on_read(server: Server, tmp_path: Path) -> None:
    record = tmp_path / "upload.txt"
    conn = server.connect()
    conn.send(f"POST /upload?record={record} HTTP/1.1\r\nHost: x\r\n"
              "Transfer-Encoding: chunked\r\n\r\n10\r\n0123456789".encode())
    conn.close()  # the client goes away in the middle of a chunk
    line = wait_for(lambda: record.exists() and record.read_text().strip(),
                    message="the app's read to end")
    assert line.startswith("error "), line
    assert "closed the connection before the whole body was sent" in line, line
    server.assert_serving("/hello")


def test_header_values_from_the_app_lose_surrounding_whitespace(start_server) -> None:
    """Django's cookies come as `" csrftoken=..."`: they go out after one space, not two."""
    server = start_server("responses:app")
    with server.connect() as conn:
        conn.send(http_request("/spaced_cookie", headers=[("Connection", "close")]))
        raw = conn.read_until_close()
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
    assert b"\r\nSet-Cookie: csrftoken=abc; Path=/\r\n" in head + b"\r\n", head
    assert b"\r\nX-Padded: value\r\n" in head + b"\r\n", head


def test_an_unread_body_is_drained_only_up_to_64_kib(server: Server) -> None:
    # Up to the bound, the server reads the rest of a body the app ignored and keeps the
    # connection for the next request.
    with server.connect() as conn:
        body = b"x" * (60 * 1024)
        conn.send(http_request("/hello", method="POST", body=body))
        assert conn.response().status == 200
        conn.send(http_request("/hello"))
        assert conn.response().status == 200
    # Beyond it (a 10 GB upload the app never reads), the connection is closed after the
    # response instead of reading gigabytes.
    with server.connect() as conn:
        conn.send(b"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n"
                  + b"x" * 100_000)
        resp = conn.response()
        assert resp.status == 200
        assert resp.header("Connection") == "close" or conn.read_until_close(timeout=5) == b""
