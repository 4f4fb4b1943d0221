"""The response side of PEP 3333 and HTTP/1.1 framing: start_response, exc_info, write(),
close(), file_wrapper, HEAD, chunked / close-delimited bodies, header checks, app errors."""

from __future__ import annotations

import hashlib
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from support import (
    Response,
    Server,
    http_request,
    parse_responses,
    running_server,
    vm_kib,
    wait_for,
)
from support.raw import assert_standard_headers


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with running_server("responses:app") as srv:
        yield srv


def fetch(server: Server, path: str, method: str = "GET", version: str = "HTTP/1.1",
          extra: bytes = b"") -> Response:
    with server.connect() as conn:
        if version == "HTTP/1.0":
            conn.send(f"{method} {path} HTTP/1.0\r\n".encode() + extra + b"\r\n")
        else:
            conn.send(f"{method} {path} HTTP/1.1\r\nHost: x\r\n".encode() + extra + b"\r\n")
        return conn.response(method)


def read_record(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def wait_record(path: Path, text: str, timeout: float = 10.0) -> str:
    return wait_for(lambda: text in read_record(path) and read_record(path), timeout,
                    message=f"{text!r} in {path.name} (has {read_record(path)!r})")


def marker() -> str:
    return uuid.uuid4().hex[:12]


# ---------------------------------------------------------------------- status and headers

def test_custom_reason_phrase(server: Server) -> None:
    resp = fetch(server, "/reason")
    assert resp.raw.startswith(b"HTTP/1.1 299 Custom Reason\r\n"), resp.raw[:80]
    assert resp.body == b"custom"
    reply = server.get("/reason")
    assert (reply.status, reply.reason) == (299, "Custom Reason")


def test_latin1_header_value_sent_as_latin1_bytes(server: Server) -> None:
    resp = fetch(server, "/latin1")
    assert b"\r\nX-Latin: caf\xe9 \xf1 \xff\r\n" in resp.raw, resp.raw
    assert resp.header("X-Latin") == "caf\u00e9 \u00f1 \u00ff"


@pytest.mark.parametrize("path", ["/health", "/gen", "/nowhere", "/204", "/reason"])
def test_date_and_server_headers(server: Server, path: str) -> None:
    resp = fetch(server, path)
    assert_standard_headers(resp)
    assert len(resp.header_all("Date")) == 1 and len(resp.header_all("Server")) == 1


@pytest.mark.app_errors
def test_date_and_server_on_error_responses(server: Server) -> None:
    assert_standard_headers(fetch(server, "/raise/before?marker=" + marker()))


# ---------------------------------------------------------------------- HEAD

def test_head_has_same_headers_and_no_body(server: Server) -> None:
    with server.connect() as conn:
        # pipelined: a HEAD response with a body would corrupt the next one
        conn.send(http_request("/head", method="HEAD") + http_request("/head")
                  + http_request("/head", method="HEAD") + http_request("/health"))
        head = conn.response("HEAD")
        get = conn.response("GET")
        head2 = conn.response("HEAD")
        health = conn.response("GET")
    assert head.status == get.status == head2.status == 200
    assert head.body == b"" and head2.body == b""
    assert get.body == b"the body of a GET"
    assert health.body == b"ok"

    def comparable(resp: Response) -> list[tuple[str, str]]:
        return sorted((k.lower(), v) for k, v in resp.headers if k.lower() != "date")

    assert comparable(head) == comparable(get)
    assert head.header("Content-Length") == str(len(b"the body of a GET"))


def test_head_on_streamed_body_sends_no_body(server: Server) -> None:
    with server.connect() as conn:
        conn.send(http_request("/gen", method="HEAD") + http_request("/health"))
        head = conn.response("HEAD")
        after = conn.response()
    assert head.status == 200 and head.header("X-Gen") == "1"
    assert after.status == 200 and after.body == b"ok", after


# ---------------------------------------------------------------------- framing

def test_no_content_length_is_chunked_for_http11(server: Server) -> None:
    with server.connect() as conn:
        conn.send(http_request("/gen"))
        resp = conn.response()
        assert resp.chunked, resp.headers
        assert resp.header("Content-Length") is None
        assert resp.complete
        # An empty piece from the app did not end the chunked body early.
        assert resp.body == b"alpha-beta-gamma"
        conn.send(http_request("/health"))  # the connection is still usable
        assert conn.response().body == b"ok"


@pytest.mark.parametrize("keep_alive", [False, True], ids=["plain", "keep-alive-asked"])
def test_no_content_length_is_close_delimited_for_http10(server: Server,
                                                         keep_alive: bool) -> None:
    extra = b"Connection: keep-alive\r\n" if keep_alive else b""
    with server.connect() as conn:
        conn.send(b"GET /gen HTTP/1.0\r\n" + extra + b"\r\n")
        data = conn.read_until_close()
    (resp,) = parse_responses(data)
    assert resp.status == 200
    assert resp.header("Transfer-Encoding") is None, "chunked sent to an HTTP/1.0 client"
    assert resp.body == b"alpha-beta-gamma"
    if resp.header("Content-Length") is None:
        assert resp.close_delimited


def test_empty_body(server: Server) -> None:
    with server.connect() as conn:
        conn.send(http_request("/empty") + http_request("/health"))
        empty = conn.response()
        after = conn.response()
    assert empty.status == 200 and empty.body == b"" and empty.complete
    assert after.body == b"ok"


def test_204_has_no_body(server: Server) -> None:
    with server.connect() as conn:
        conn.send(http_request("/204") + http_request("/health"))
        resp = conn.response()
        after = conn.response()
    assert resp.status == 204
    assert resp.header("Transfer-Encoding") is None
    assert resp.header("Content-Length") in (None, "0")
    assert after.status == 200 and after.body == b"ok"


def test_app_content_length_too_long_body_is_cut(server: Server) -> None:
    """The server never sends more than the Content-Length the app declared."""
    with server.connect() as conn:
        conn.send(http_request("/raw/cl_mismatch?kind=long"))
        resp = conn.response()
        assert resp.body == b"01234"
        conn.send(http_request("/health", headers=[("Connection", "close")]))
        rest = conn.read_until_close()
    # Either the server closed after the cut response, or the next response follows cleanly.
    assert b"56789" not in rest
    if rest:
        (after,) = parse_responses(rest)
        assert after.status == 200 and after.body == b"ok"


@pytest.mark.app_errors
def test_app_content_length_too_short_closes(server: Server) -> None:
    with server.connect() as conn:
        conn.send(http_request("/raw/cl_mismatch?kind=short"))
        data = conn.read_until_close()
    (resp,) = parse_responses(data)
    assert not resp.complete and resp.body == b"abc"


# ---------------------------------------------------------------------- write()

def test_write_callable_chunked(server: Server, tmp_path: Path) -> None:
    record = tmp_path / "record"
    resp = fetch(server, f"/write?record={record}")
    assert resp.status == 200
    assert resp.body == b"one-two-three"
    assert resp.chunked and resp.complete
    wait_record(record, "close 1")


def test_write_callable_with_content_length(server: Server) -> None:
    resp = fetch(server, "/write?cl=1")
    assert resp.header("Content-Length") == "13"
    assert resp.body == b"one-two-three"


# ---------------------------------------------------------------------- exc_info

def test_exc_info_replaces_headers_before_anything_sent(server: Server) -> None:
    resp = fetch(server, "/exc_info/replace")
    assert resp.status == 500
    assert resp.header("X-Second") == "1"
    assert resp.header("X-First") is None
    assert resp.body == b"replaced"


def test_exc_info_on_first_call_is_a_normal_call(server: Server) -> None:
    resp = fetch(server, "/exc_info/first")
    assert resp.status == 503 and resp.body == b"first"


@pytest.mark.app_errors
def test_exc_info_after_headers_sent_reraises(server: Server, tmp_path: Path) -> None:
    record = tmp_path / "record"
    tag = marker()
    mark = server.mark()
    with server.connect() as conn:
        conn.send(http_request(f"/exc_info/after_sent?record={record}&marker={tag}"))
        data = conn.read_until_close()
    assert read_record(record) == "reraised same=True\n"
    (resp,) = parse_responses(data)
    assert resp.status == 200
    assert resp.body.startswith(b"partial-body")
    assert not resp.complete, "a response cut by an app error must not look complete"
    server.wait_log(f"late error {tag}", since=mark)
    server.assert_serving("/health")


def test_start_response_twice_without_exc_info_raises(server: Server) -> None:
    resp = fetch(server, "/start_twice")
    assert resp.status == 200
    assert resp.body.startswith(b"raised:"), resp.body


# ---------------------------------------------------------------------- close()

def test_close_called_after_normal_iteration(server: Server, tmp_path: Path) -> None:
    record = tmp_path / "record"
    resp = fetch(server, f"/close/normal?record={record}")
    assert resp.body == b"abc"
    assert wait_record(record, "close") == "close 3\n"


def test_close_called_for_head(server: Server, tmp_path: Path) -> None:
    record = tmp_path / "record"
    resp = fetch(server, f"/close/normal?record={record}", method="HEAD")
    assert resp.status == 200 and resp.body == b""
    wait_record(record, "close")


@pytest.mark.app_errors
def test_close_called_when_app_raises_mid_way(server: Server, tmp_path: Path) -> None:
    record = tmp_path / "record"
    mark = server.mark()
    with server.connect() as conn:
        conn.send(http_request(f"/close/raise?record={record}"))
        data = conn.read_until_close()
    (resp,) = parse_responses(data)
    assert resp.status == 200 and not resp.complete
    assert resp.body == b"x" * 1000 + b"y" * 1000
    assert wait_record(record, "close") == "close 2\n"
    server.wait_log("iterable raised after 2 chunks", since=mark)


@pytest.mark.parametrize("route", ["/close/stream", "/raw/close/stream"],
                         ids=["validated", "raw"])
@pytest.mark.parametrize("abort", [False, True], ids=["fin", "rst"])
def test_close_called_when_client_disconnects(server: Server, tmp_path: Path, route: str,
                                              abort: bool) -> None:
    record = tmp_path / "record"
    n = 3000
    conn = server.connect()
    conn.send(http_request(f"{route}?record={record}&n={n}&delay=0.005"))
    # read the head and the start of the body, then vanish
    wait_for(lambda: conn._fill() and len(conn.buf) > 70000, 10, 0,
             message="the start of the stream")
    if abort:
        conn.abort()
    else:
        conn.close()
    text = wait_record(record, "close", timeout=12)
    count = int(text.split()[1])
    assert count < n // 2, f"the server kept iterating after the client left ({count} chunks)"
    server.assert_serving("/health")


# ---------------------------------------------------------------------- file_wrapper

@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    data = random.Random(3333).randbytes(3 * 1024 * 1024 + 123)
    path = tmp_path_factory.mktemp("files") / "data.bin"
    path.write_bytes(data)
    return path, data


@pytest.mark.parametrize("route", ["/file", "/raw/file"], ids=["validated", "sendfile"])
@pytest.mark.parametrize("offset", [0, 1000])
def test_file_wrapper(server: Server, data_file: tuple[Path, bytes], tmp_path: Path,
                      route: str, offset: int) -> None:
    path, data = data_file
    record = tmp_path / "record"
    resp = fetch(server, f"{route}?path={path}&offset={offset}&record={record}")
    assert resp.status == 200
    assert resp.header("Content-Length") == str(len(data) - offset)
    assert len(resp.body) == len(data) - offset
    assert resp.body == data[offset:], "file_wrapper sent the wrong bytes"
    wait_record(record, "file closed")


def test_file_wrapper_keep_alive(server: Server, data_file: tuple[Path, bytes]) -> None:
    path, data = data_file
    with server.connect() as conn:
        for offset in (0, 5, len(data) - 10):
            conn.send(http_request(f"/raw/file?path={path}&offset={offset}"))
            assert conn.response().body == data[offset:]
        conn.send(http_request("/health"))
        assert conn.response().body == b"ok"


def test_file_wrapper_head(server: Server, data_file: tuple[Path, bytes]) -> None:
    path, data = data_file
    with server.connect() as conn:
        conn.send(http_request(f"/raw/file?path={path}", method="HEAD") + http_request("/health"))
        head = conn.response("HEAD")
        after = conn.response()
    assert head.header("Content-Length") == str(len(data)) and head.body == b""
    assert after.body == b"ok"


def test_file_wrapper_on_object_without_fileno(server: Server,
                                               data_file: tuple[Path, bytes],
                                               tmp_path: Path) -> None:
    path, data = data_file
    record = tmp_path / "record"
    resp = fetch(server, f"/file_like?path={path}&record={record}")
    assert resp.body == data
    wait_record(record, "readonly closed")


def _proc_io(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = int(value)
    return fields


def test_file_wrapper_uses_sendfile(server: Server, tmp_path: Path) -> None:
    """A real file goes out with sendfile(2): the worker makes a handful of read-type
    syscalls for 32 MiB, not one per 8 KiB block as iterating the wrapper would."""
    path = tmp_path / "sendfile.bin"
    data = random.Random(2).randbytes(32 * 1024 * 1024)
    path.write_bytes(data)
    server.assert_serving("/health")
    workers = server.worker_pids() or [server.pid]
    before = {pid: _proc_io(pid) for pid in workers}
    resp = fetch(server, f"/raw/file?path={path}&block=8192")
    after = {pid: _proc_io(pid) for pid in workers}
    assert resp.body == data
    reads = sum(after[pid]["syscr"] - before[pid]["syscr"] for pid in workers)
    blocks = len(data) // 8192
    assert reads < blocks // 4, \
        f"{reads} read syscalls to send {blocks} blocks: the file was not sent with sendfile"


# ---------------------------------------------------------------------- refused headers

def _expect_refused(server: Server, path: str) -> None:
    mark = server.mark()
    with server.connect() as conn:
        conn.send(http_request(path))
        resp = conn.response()
    assert resp.status == 500, resp
    assert b"X-Injected" not in resp.raw, resp.raw
    assert b"should never be sent" not in resp.body
    server.wait_log(r"\[ERROR\]", since=mark)
    server.assert_serving("/health")


@pytest.mark.app_errors
@pytest.mark.parametrize("kind", ["crlf_value", "lf_value", "cr_value", "crlf_name",
                                  "colon_name", "space_name", "non_latin1", "bytes_value"])
def test_bad_header_from_app_is_500(server: Server, kind: str) -> None:
    _expect_refused(server, f"/raw/bad_header?kind={kind}")


@pytest.mark.app_errors
@pytest.mark.parametrize(("name", "value"), [
    ("Connection", "close"), ("Keep-Alive", "timeout=5"), ("Transfer-Encoding", "chunked"),
    ("Upgrade", "websocket"), ("TE", "trailers"), ("Trailer", "X-Foo"),
    ("Proxy-Authenticate", "Basic"), ("Proxy-Authorization", "Basic eA=="),
    ("transfer-encoding", "identity"),
])
def test_hop_by_hop_header_from_app_is_500(server: Server, name: str, value: str) -> None:
    _expect_refused(server, f"/raw/bad_header?kind=hop&name={quote(name)}&value={quote(value)}")


@pytest.mark.app_errors
@pytest.mark.parametrize("status", ["abc", "20x Bad", "99 Too Low", "1000 Too High",
                                    "200 OK\r\nX-Injected: yes", "200 OK\nX-Injected: yes"])
def test_bad_status_from_app_is_500(server: Server, status: str) -> None:
    _expect_refused(server, f"/raw/bad_status?status={quote(status)}")


# ---------------------------------------------------------------------- app exceptions

@pytest.mark.app_errors
@pytest.mark.parametrize("route", ["/raise/before", "/raise/after_start", "/raise/first_iter"])
def test_exception_before_response_started_is_500_with_traceback(server: Server,
                                                                 route: str) -> None:
    tag = marker()
    mark = server.mark()
    with server.connect() as conn:
        conn.send(http_request(f"{route}?marker={tag}"))
        resp = conn.response()
    assert resp.status == 500, resp
    assert_standard_headers(resp)
    log = server.wait_log(f"RuntimeError: boom-.*{tag}", since=mark)
    assert "Error handling request" in log, log
    assert "Traceback (most recent call last):" in log, log
    # the traceback is complete: it reaches into the app's own frame
    assert "responses.py" in log, log
    assert tag.encode() not in resp.body, "the traceback must not be sent to the client"
    server.assert_serving("/health")


@pytest.mark.app_errors
@pytest.mark.parametrize("with_cl", [False, True], ids=["chunked", "content-length"])
def test_exception_after_response_started_closes_connection(server: Server, tmp_path: Path,
                                                            with_cl: bool) -> None:
    tag = marker()
    record = tmp_path / "record"
    mark = server.mark()
    path = f"/raise/mid_body?marker={tag}&record={record}" + ("&cl=1" if with_cl else "")
    with server.connect() as conn:
        conn.send(http_request(path))
        data = conn.read_until_close()
    (resp,) = parse_responses(data)
    assert resp.status == 200
    assert resp.body == b"m" * 1000
    assert not resp.complete, "truncated body must not be framed as complete"
    log = server.wait_log(f"boom-mid-body-{tag}", since=mark)
    assert "Traceback (most recent call last):" in log
    wait_record(record, "close")
    server.assert_serving("/health")


# ---------------------------------------------------------------------- wsgi.errors

def test_wsgi_errors_goes_to_error_log(server: Server) -> None:
    tag = marker()
    mark = server.mark()
    assert fetch(server, f"/errors?marker={tag}").body == b"logged"
    server.wait_log(f"errors-write-{tag}", since=mark)
    server.wait_log(f"errors-lines-{tag}-1", since=mark)
    server.wait_log(f"errors-lines-{tag}-2", since=mark)


# ---------------------------------------------------------------------- big responses

def test_large_response_is_streamed_with_backpressure(server: Server, tmp_path: Path) -> None:
    """A fast app and a slow client: the server must not buffer the whole 50 MiB body."""
    progress = tmp_path / "progress"
    chunk = 64 * 1024
    count = 800  # 50 MiB
    pids = server.worker_pids() or [server.pid]
    base_hwm = max(vm_kib(pid, "VmHWM") for pid in pids)

    def produced() -> int:
        try:
            return int(progress.read_text() or 0)
        except (OSError, ValueError):
            return 0

    digest = hashlib.sha256()
    with server.connect(timeout=30) as conn:
        conn.send(http_request(f"/big?size={count * chunk}&chunk={chunk}&progress={progress}"))
        # read about 1 MiB, then stop reading for a while
        wait_for(lambda: conn._fill() and len(conn.buf) > 1024 * 1024, 10, 0,
                 message="the first MiB")
        wait_for(lambda: produced() > 0, 10, message="the app to start producing")
        highest = 0
        window_end = time.monotonic() + 1.5
        while time.monotonic() < window_end:  # watch the app for 1.5 s while we do not read
            highest = max(highest, produced())
            time.sleep(0.05)
        assert highest < count // 2, \
            f"the app produced {highest} of {count} pieces while the client read 1 MiB"
        resp = conn.response()
    assert resp.status == 200 and resp.complete
    assert len(resp.body) == count * chunk
    for i in range(count):
        digest.update(bytes([i % 256]) * chunk)
    assert hashlib.sha256(resp.body).hexdigest() == digest.hexdigest()
    hwm = max(vm_kib(pid, "VmHWM") for pid in pids)
    assert hwm - base_hwm < 25 * 1024, \
        f"worker peak RSS grew by {(hwm - base_hwm) // 1024} MiB for a 50 MiB response"


def many_body(n: int) -> bytes:
    return b"".join(bytes([i % 256]) * (i + 1) for i in range(n))


def test_many_pieces_queued_by_the_app_arrive_whole_and_in_order(server: Server) -> None:
    """An app ahead of the socket: its queued pieces go out several to a write, chunked (as one
    chunk per write) or under a Content-Length, byte for byte."""
    with server.connect() as conn:
        for _ in range(3):
            conn.send(http_request("/many?n=400"))
            resp = conn.response()
            assert resp.status == 200 and resp.header("Transfer-Encoding") == "chunked"
            assert resp.body == many_body(400)
        total = len(many_body(400))
        conn.send(http_request(f"/many?n=400&cl={total}"))
        resp = conn.response()
        assert resp.header("Content-Length") == str(total) and resp.body == many_body(400)


def test_queued_pieces_past_the_content_length_are_cut(server: Server) -> None:
    total = len(many_body(400))
    with server.connect() as conn:
        conn.send(http_request(f"/many?n=400&cl={total - 1000}", headers=[("Connection", "close")]))
        resp = conn.response()
        assert resp.status == 200
        assert resp.body == many_body(400)[:total - 1000]
        assert conn.read_until_close(timeout=5) == b""
