"""HTTP/1.1 connection handling: keep-alive, pipelining, HTTP/1.0, Connection: close, and
real clients (http.client, curl)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import Server, http_request, parse_responses, running_server, wait_for
from support.raw import assert_standard_headers
from support.skips import needs_tool


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with running_server("echo:app") as srv:
        yield srv


def test_keep_alive_many_requests_one_connection(server: Server) -> None:
    with server.connect() as conn:
        for i in range(10):
            if i % 2:
                conn.send(http_request(f"/k{i}", method="POST", body=b"body %d" % i))
            else:
                conn.send(http_request(f"/k{i}"))
            resp = conn.response("POST" if i % 2 else "GET")
            assert resp.status == 200
            assert (resp.header("Connection") or "").lower() != "close"
            reply = resp.json()
            assert reply["path"] == f"/k{i}"
            assert reply["body"] == (f"body {i}" if i % 2 else "")


def test_http_client_reuses_connection(server: Server) -> None:
    conn = server.http()
    try:
        conn.request("GET", "/first")
        assert conn.getresponse().read()
        sock = conn.sock
        for i in range(5):
            conn.request("POST", f"/n{i}", body=b"x" * i)
            resp = conn.getresponse()
            assert json.loads(resp.read())["body"] == "x" * i
            assert conn.sock is sock, "http.client had to reconnect: keep-alive not kept"
    finally:
        conn.close()


def test_pipelining_responses_in_order(server: Server) -> None:
    requests = [
        http_request("/p0"),
        http_request("/p1", method="POST", body=b"first body"),
        b"POST /p2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n",
        http_request("/p3", method="HEAD"),
        http_request("/p4?x=y"),
        http_request("/p5", method="DELETE"),
    ]
    methods = ["GET", "POST", "POST", "HEAD", "GET", "DELETE"]
    with server.connect() as conn:
        conn.send(b"".join(requests))
        responses = [conn.response(m) for m in methods]
    assert all(r.status == 200 for r in responses)
    bodies = [r.json() for i, r in enumerate(responses) if methods[i] != "HEAD"]
    assert [b["path"] for b in bodies] == ["/p0", "/p1", "/p2", "/p4", "/p5"]
    assert [b["method"] for b in bodies] == ["GET", "POST", "POST", "GET", "DELETE"]
    assert bodies[1]["body"] == "first body" and bodies[2]["body"] == "abc"
    assert responses[3].body == b""


def test_pipelining_many_requests_in_one_write(server: Server) -> None:
    n = 50
    with server.connect() as conn:
        conn.send(b"".join(http_request(f"/many/{i}") for i in range(n)))
        paths = [conn.response().json()["path"] for _ in range(n)]
    assert paths == [f"/many/{i}" for i in range(n)]


def test_pipelined_responses_stay_in_order_when_first_is_slow(server: Server,
                                                             tmp_path: Path) -> None:
    started, go = tmp_path / "started", tmp_path / "go"
    slow = http_request(f"/slow?mode=wait_then_read&started={started}&go={go}",
                        method="POST", body=b"slow")
    with server.connect() as conn:
        conn.send(slow + http_request("/fast") + http_request("/fast2"))
        wait_for(started.exists, 10, message="the slow request to reach the app")
        assert conn.nothing_received(), "a later response overtook the first one"
        go.write_text("go")
        first, second, third = conn.response("POST"), conn.response(), conn.response()
    assert first.json()["path"] == "/slow" and first.json()["body"] == "slow"
    assert second.json()["path"] == "/fast"
    assert third.json()["path"] == "/fast2"


def test_http10_keep_alive(server: Server) -> None:
    with server.connect() as conn:
        for i in range(3):
            conn.send(f"GET /ten{i} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".encode())
            resp = conn.response()
            assert resp.status == 200
            assert (resp.header("Connection") or "").lower() == "keep-alive", resp.headers
            assert resp.header("Content-Length") is not None
            assert resp.json()["path"] == f"/ten{i}"
            assert resp.json()["protocol"] == "HTTP/1.0"


def test_http10_closes_by_default(server: Server) -> None:
    with server.connect() as conn:
        conn.send(b"GET /plain10 HTTP/1.0\r\n\r\n" + b"GET /ignored HTTP/1.0\r\n\r\n")
        data = conn.read_until_close()
    responses = parse_responses(data)
    assert len(responses) == 1
    assert responses[0].json()["path"] == "/plain10"
    assert (responses[0].header("Connection") or "close").lower() == "close"


@pytest.mark.parametrize("value", ["close", "Close", "CLOSE", "keep-alive, close"])
def test_connection_close_honoured(server: Server, value: str) -> None:
    with server.connect() as conn:
        conn.send(http_request("/bye", headers=[("Connection", value)])
                  + http_request("/never"))
        data = conn.read_until_close()
    responses = parse_responses(data)
    assert len(responses) == 1, "a request after Connection: close was answered"
    assert responses[0].json()["path"] == "/bye"
    assert (responses[0].header("Connection") or "").lower() == "close"
    assert_standard_headers(responses[0])


def test_idle_keep_alive_connection_is_closed(server: Server) -> None:
    """The default --keep-alive (2 s) ends idle connections, but not at once."""
    with server.connect() as conn:
        conn.send(http_request("/idle"))
        assert conn.response().status == 200
        started = time.monotonic()
        conn.assert_closed(timeout=10)
        idle = time.monotonic() - started
    assert 1.0 <= idle < 8, f"idle connection closed after {idle:.2f}s (keep-alive is 2 s)"


def test_many_connections_in_sequence(server: Server) -> None:
    for i in range(150):
        with server.connect() as conn:
            conn.send(http_request(f"/seq{i}", headers=[("Connection", "close")]))
            assert conn.response().json()["path"] == f"/seq{i}"


def test_concurrent_clients(server: Server) -> None:
    errors: list[BaseException] = []

    def client(n: int) -> None:
        try:
            with server.connect() as conn:
                for i in range(10):
                    body = f"client {n} request {i}".encode()
                    conn.send(http_request(f"/c{n}/{i}", method="POST", body=body))
                    reply = conn.response("POST").json()
                    assert reply["path"] == f"/c{n}/{i}" and reply["body"] == body.decode()
        except BaseException as exc:  # noqa: BLE001 - collected and re-raised
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert not any(t.is_alive() for t in threads)


# ---------------------------------------------------------------------- curl

CURL = shutil.which("curl")
needs_curl = needs_tool("curl")


def curl(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    assert CURL
    return subprocess.run([CURL, "--silent", "--show-error", "--max-time", "30",
                           "--noproxy", "*", *args], input=data, capture_output=True,
                          timeout=60)


@needs_curl
def test_curl_get(server: Server) -> None:
    result = curl("--include", f"{server.url}/curl/get?a=b")
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"\r\nServer: ferrocorn" in head and b"\r\nDate: " in head
    assert json.loads(body)["query"] == "a=b"


@needs_curl
def test_curl_http10(server: Server) -> None:
    result = curl("--http1.0", f"{server.url}/curl/ten")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["protocol"] == "HTTP/1.0"


@needs_curl
def test_curl_reuses_connection(server: Server) -> None:
    result = curl("--verbose", f"{server.url}/one", f"{server.url}/two")
    assert result.returncode == 0, result.stderr
    assert b"Re-using existing connection" in result.stderr or \
        b"Reusing existing" in result.stderr, result.stderr.decode(errors="replace")


@needs_curl
@pytest.mark.parametrize("chunked_upload", [False, True], ids=["content-length", "chunked"])
def test_curl_upload_with_expect_100(server: Server, chunked_upload: bool) -> None:
    body = bytes(range(256)) * 8192  # 2 MiB: curl sends Expect: 100-continue
    args = ["--verbose", "--data-binary", "@-", "-H", "Expect: 100-continue"]
    if chunked_upload:
        args += ["-H", "Transfer-Encoding: chunked"]
    result = curl(*args, f"{server.url}/upload?mode=hash", data=body)
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["length"] == len(body)
    assert reply["sha256"] == hashlib.sha256(body).hexdigest()
    assert b"HTTP/1.1 100 Continue" in result.stderr, result.stderr.decode(errors="replace")


def test_server_still_serving(server: Server) -> None:
    server.assert_serving("/health")
