"""103 Early Hints (RFC 8297) from ``environ["wsgi.early_hints"]``, as Gunicorn defines it:
seen by a raw-socket client and by curl, before the final response, on app threads and on the
I/O thread; none for HTTP/1.0, none once the response has started; invalid fields refused."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from support import RawConn, Server, http_request
from support.nginx import Nginx, proxy_pass
from support.skips import needs_tool

APP = "hints_app:app"
CURL = shutil.which("curl")


def exchange(server: Server, path: str, version: str = "HTTP/1.1",
             conn: RawConn | None = None) -> list:
    """The responses to one request, interim ones included, in order."""
    own = conn is None
    conn = conn or server.connect()
    try:
        conn.send(http_request(path, version=version))
        out = [conn.response(skip_interim=False)]
        while out[-1].status < 200:
            out.append(conn.response(skip_interim=False))
        return out
    finally:
        if own:
            conn.close()


def test_a_hint_comes_before_the_response(start_server) -> None:
    server = start_server(APP)
    hint, final = exchange(server, "/")
    assert (hint.version, hint.status, hint.reason) == ("HTTP/1.1", 103, "Early Hints")
    assert hint.raw.startswith(b"HTTP/1.1 103 Early Hints\r\n")
    assert hint.headers == [("Link", "</style.css>; rel=preload; as=style")]
    assert hint.body == b""
    assert final.status == 200 and final.body


def test_several_calls_send_several_hints(start_server) -> None:
    server = start_server(APP)
    first, second, final = exchange(server, "/two")
    assert first.status == second.status == 103
    assert first.header_all("Link") == ["</style.css>; rel=preload; as=style"]
    assert second.header_all("Link") == ["</app.js>; rel=preload; as=script",
                                         "</font.woff2>; rel=preload; as=font; crossorigin"]
    assert final.status == 200


def test_bytes_and_a_call_after_start_response(start_server) -> None:
    server = start_server(APP)
    hint, final = exchange(server, "/bytes")
    assert hint.status == 103 and hint.headers == [("Link", "</b.css>; rel=preload")]
    # start_response only records the head; until a body goes out a hint may still precede it.
    hint, final = exchange(server, "/after-start")
    assert hint.status == 103 and final.status == 200 and final.body == b"ok"


def test_ignored_once_the_response_has_started_or_when_empty(start_server) -> None:
    server = start_server(APP)
    (final,) = exchange(server, "/late")
    assert final.status == 200 and final.body == b"first second"  # and no 103 before it
    (final,) = exchange(server, "/empty")
    assert final.status == 200


def test_http10_gets_no_hint_but_the_callable_works(start_server) -> None:
    server = start_server(APP)
    with server.connect() as conn:
        conn.send(http_request("/two", version="HTTP/1.0"))
        data = conn.read_until_close()
    assert data.startswith(b"HTTP/1.0 200 "), data[:100]
    assert b" 103 " not in data


def test_keep_alive_and_the_io_thread(start_server) -> None:
    """Many requests on one connection: each gets its hint, first from app threads, then from
    the I/O thread once the route has proven fast (inline), through the other channel."""
    server = start_server(APP, "-w", "1", "--threads", "2")
    threads = []
    with server.connect() as conn:
        for _ in range(60):
            hint, final = exchange(server, "/", conn=conn)
            assert hint.status == 103 and hint.header("Link")
            assert final.status == 200
            threads.append(final.body.decode())
            if threads[-1] == "MainThread" and len(threads) > 10:
                break
    assert threads[0] != "MainThread"
    assert threads[-1] == "MainThread", f"never ran inline: {threads[-5:]}"


@pytest.mark.app_errors
def test_invalid_hints_are_refused(start_server) -> None:
    server = start_server(APP)
    (final,) = exchange(server, "/bad")
    errors = json.loads(final.body)
    for name, error in errors.items():
        assert error, f"{name} was accepted"
    for name in ("crlf", "lf", "nul", "name_space", "name_colon", "name_empty", "hop_by_hop",
                 "content_length", "not_latin1"):
        assert errors[name].startswith("ValueError"), (name, errors[name])
    for name in ("not_pairs", "not_str", "not_iterable"):
        assert errors[name].startswith("TypeError"), (name, errors[name])
    # The message names the field but never echoes the value.
    assert "evil" not in errors["crlf"] and "Link" in errors["crlf"]
    # Nothing was sent for any of them (one response came), and the server goes on.
    assert server.assert_serving("/empty").status == 200


@needs_tool("curl")
def test_curl_shows_the_hint(start_server) -> None:
    server = start_server(APP)
    out = subprocess.run([CURL, "-sv", "--max-time", "10", f"{server.url}/"],
                         capture_output=True, timeout=20)
    assert out.returncode == 0, out.stderr.decode()
    trace = out.stderr.decode()
    assert "< HTTP/1.1 103 Early Hints" in trace, trace
    assert "< Link: </style.css>; rel=preload; as=style" in trace
    assert trace.index("103 Early Hints") < trace.index("< HTTP/1.1 200 OK")
    assert out.stdout  # the body, after the hint


@needs_tool("nginx")
def test_nginx_proxy_pass_relays_the_hint(start_server, tmp_path) -> None:
    """docs/early-hints.md says nginx's proxy_pass hands the 103 on to the client."""
    server = start_server(APP)
    with Nginx(tmp_path / "nginx", lambda port: f"""
            server {{
                listen 127.0.0.1:{port};
                location / {{ {proxy_pass(f"127.0.0.1:{server.port}")} }}
            }}""") as nginx, RawConn.tcp("127.0.0.1", nginx.port) as conn:
        conn.send(http_request("/", host="app.example"))
        hint = conn.response(skip_interim=False)
        final = conn.response(skip_interim=False)
    assert hint.status == 103 and hint.header("Link") == "</style.css>; rel=preload; as=style"
    assert final.status == 200 and final.body
