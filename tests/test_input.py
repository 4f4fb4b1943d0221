"""wsgi.input: every read method, chunked bodies, body boundaries, streaming, 100-continue."""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import Server, http_request, running_server, vm_kib, wait_for

BODY = b"line one\nline two\n\n\xe9\xff binary\r\nlast line without newline"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with running_server("echo:app") as srv:
        yield srv


def chunked(body: bytes, size: int = 7) -> bytes:
    out = b""
    for i in range(0, len(body), size):
        piece = body[i:i + size]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    return out + b"0\r\n\r\n"


def post(server: Server, query: str, body: bytes, use_chunked: bool = False) -> dict:
    if use_chunked:
        raw = (f"POST /echo?{query} HTTP/1.1\r\nHost: x\r\n"
               "Transfer-Encoding: chunked\r\n\r\n").encode() + chunked(body)
    else:
        raw = http_request(f"/echo?{query}", method="POST", body=body)
    with server.connect() as conn:
        conn.send(raw)
        resp = conn.response("POST")
    assert resp.status == 200, resp
    return resp.json()


def lat(pieces: list[bytes]) -> list[str]:
    return [p.decode("latin-1") for p in pieces]


def expected_pieces(mode: str, body: bytes, size: int) -> list[bytes]:
    """What the same calls return on an io.BytesIO holding the body."""
    f = io.BytesIO(body)
    if mode == "read_all":
        return [f.read()]
    if mode == "readline":
        return list(iter(f.readline, b""))
    if mode == "readline_n":
        return list(iter(lambda: f.readline(size), b""))
    if mode in ("readlines", "iter"):
        return f.readlines()
    raise AssertionError(mode)


@pytest.mark.parametrize("use_chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("size", [1, 3, 7, 65536])
def test_read_n(server: Server, size: int, use_chunked: bool) -> None:
    reply = post(server, f"mode=read_n&size={size}", BODY, use_chunked)
    assert reply["body"] == BODY.decode("latin-1")
    assert all(0 < len(p) <= size for p in reply["pieces"]), reply["pieces"]
    if not use_chunked and size >= len(BODY):
        assert reply["pieces"] == [BODY.decode("latin-1")]
    assert reply["after"] == ["", "", "", ""]  # reads after the end return b"" at once


@pytest.mark.parametrize("use_chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(("mode", "size"), [
    ("read_all", 0), ("readline", 0), ("readline_n", 1), ("readline_n", 4),
    ("readline_n", 100), ("readlines", 0), ("iter", 0),
])
def test_read_methods(server: Server, mode: str, size: int, use_chunked: bool) -> None:
    reply = post(server, f"mode={mode}&size={size}", BODY, use_chunked)
    assert reply["pieces"] == lat(expected_pieces(mode, BODY, size))
    assert reply["body"] == BODY.decode("latin-1")
    assert reply["after"] == ["", "", "", ""]


@pytest.mark.parametrize("mode", ["read_n", "read_all", "readline", "readlines", "iter"])
def test_empty_body(server: Server, mode: str) -> None:
    for raw in (http_request("/e?mode=" + mode),
                b"POST /e?mode=" + mode.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: 0\r\n\r\n",
                b"POST /e?mode=" + mode.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"):
        with server.connect() as conn:
            conn.send(raw)
            reply = conn.response().json()
        assert reply["body"] == "", raw
        assert reply["pieces"] in ([], [""]), raw
        assert reply["after"] == ["", "", "", ""]


def test_long_line_without_newline(server: Server) -> None:
    body = b"x" * 300_000
    reply = post(server, "mode=readline", body)
    assert reply["pieces"] == [body.decode()]
    reply = post(server, "mode=readline_n&size=100000", body)
    assert [len(p) for p in reply["pieces"]] == [100000, 100000, 100000]


# ---------------------------------------------------------------------- chunked bodies

def test_chunked_with_extensions_and_trailers(server: Server) -> None:
    raw = (b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"4;name=value\r\nWiki\r\n"
           b"5;quoted=\"a b\";flag\r\npedia\r\n"
           b"E\r\n in\r\n\r\nchunks.\r\n"
           b"0\r\nX-Checksum: abc\r\n\r\n")
    with server.connect() as conn:
        conn.send(raw)
        reply = conn.response().json()
    assert reply["body"] == "Wikipedia in\r\n\r\nchunks."


def test_chunked_arriving_in_pieces(server: Server) -> None:
    """Chunk-size lines, data and CRLFs split across separate sends still decode."""
    body = bytes(range(256)) * 40
    raw = (b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           + chunked(body, 1000))
    with server.connect() as conn:
        for i in range(0, len(raw), 997):
            conn.send(raw[i:i + 997])
        reply = conn.response().json()
    assert reply["body"].encode("latin-1") == body


def test_chunked_uppercase_hex_and_leading_zeros(server: Server) -> None:
    raw = (b"POST /h HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"000A\r\n0123456789\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n00\r\n\r\n")
    with server.connect() as conn:
        conn.send(raw)
        reply = conn.response().json()
    assert reply["body"] == "0123456789abcdefghijklmnopqrstuvwxyz"


# ---------------------------------------------------------------------- body boundaries

@pytest.mark.parametrize("mode", ["read_n", "read_all", "readline", "readlines", "iter",
                                  "partial", "noread"])
@pytest.mark.parametrize("use_chunked", [False, True], ids=["content-length", "chunked"])
def test_never_reads_past_the_body(server: Server, mode: str, use_chunked: bool) -> None:
    """A request pipelined right behind a body is answered as its own request, whatever
    the app read of the body before it."""
    body = b"0123456789\nABCDEFGHIJ"
    if use_chunked:
        first = (f"POST /first?mode={mode}&size=3 HTTP/1.1\r\nHost: x\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n").encode() + chunked(body, 5)
    else:
        first = http_request(f"/first?mode={mode}&size=3", method="POST", body=body)
    second = http_request("/second?mode=read_n", method="POST", body=b"second body")
    third = http_request("/third")
    with server.connect() as conn:
        conn.send(first + second + third)
        one = conn.response("POST").json()
        two = conn.response("POST").json()
        three = conn.response().json()
    expected = {"partial": "012", "noread": ""}.get(mode, body.decode())
    assert one["path"] == "/first" and one["body"] == expected
    assert two["path"] == "/second" and two["method"] == "POST"
    assert two["body"] == "second body"
    assert two["after"] == ["", "", "", ""]
    assert three["path"] == "/third" and three["body"] == ""


def test_body_split_across_sends(server: Server) -> None:
    """The app's reads wait for the rest of a body that arrives later."""
    with server.connect() as conn:
        conn.send(b"POST /late HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234")
        assert conn.nothing_received()
        conn.send(b"56789")
        reply = conn.response("POST").json()
    assert reply["body"] == "0123456789"


# ---------------------------------------------------------------------- large bodies

def _rss_sampler(pids: list[int], stop: threading.Event, peak: list[int]) -> None:
    while not stop.is_set():
        for pid in pids:
            try:
                peak[0] = max(peak[0], vm_kib(pid, "VmRSS"))
            except (OSError, AssertionError):
                pass
        stop.wait(0.02)


@pytest.mark.parametrize("use_chunked", [False, True], ids=["content-length", "chunked"])
def test_large_body_is_streamed_not_buffered(server: Server, use_chunked: bool) -> None:
    total = 50 * 1024 * 1024
    piece = 64 * 1024
    pids = server.worker_pids() or [server.pid]
    base_rss = max(vm_kib(pid, "VmRSS") for pid in pids)
    base_hwm = max(vm_kib(pid, "VmHWM") for pid in pids)
    digest = hashlib.sha256()
    stop = threading.Event()
    peak = [0]
    sampler = threading.Thread(target=_rss_sampler, args=(pids, stop, peak), daemon=True)
    sampler.start()
    try:
        with server.connect(timeout=60) as conn:
            if use_chunked:
                conn.send(b"POST /big?mode=hash HTTP/1.1\r\nHost: x\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n")
            else:
                conn.send(b"POST /big?mode=hash HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Length: %d\r\n\r\n" % total)
            for i in range(total // piece):
                data = bytes([i % 251]) * piece
                digest.update(data)
                conn.send(b"%x\r\n%s\r\n" % (piece, data) if use_chunked else data)
            if use_chunked:
                conn.send(b"0\r\n\r\n")
            reply = conn.response("POST").json()
    finally:
        stop.set()
        sampler.join(5)
    assert reply["length"] == total
    assert reply["sha256"] == digest.hexdigest()
    assert reply["largest"] <= 65536
    hwm = max(vm_kib(pid, "VmHWM") for pid in pids)
    limit_kib = 25 * 1024
    assert peak[0] - base_rss < limit_kib, \
        f"worker RSS grew by {(peak[0] - base_rss) // 1024} MiB for a 50 MiB body"
    assert hwm - base_hwm < limit_kib, \
        f"worker peak RSS grew by {(hwm - base_hwm) // 1024} MiB for a 50 MiB body"


# ---------------------------------------------------------------------- 100-continue

def test_100_continue_sent_when_app_reads(server: Server) -> None:
    with server.connect() as conn:
        conn.send(b"POST /c?mode=read_n HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        interim = conn.response("POST", skip_interim=False)
        assert (interim.version, interim.status) == ("HTTP/1.1", 100), interim
        assert interim.body == b""
        conn.send(b"hello")
        final = conn.response("POST")
    assert final.status == 200
    assert final.json()["body"] == "hello"


def test_100_continue_only_once_app_reads(server: Server, tmp_path: Path) -> None:
    """The 100 goes out when the app first reads wsgi.input, not when the request arrives."""
    started, go = tmp_path / "started", tmp_path / "go"
    with server.connect() as conn:
        conn.send((f"POST /w?mode=wait_then_read&started={started}&go={go} HTTP/1.1\r\n"
                   "Host: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n").encode())
        wait_for(started.exists, 10, message="the app to be called")
        assert conn.nothing_received(), "100 Continue sent before the app read the body"
        go.write_text("go")
        interim = conn.response("POST", skip_interim=False)
        assert interim.status == 100, interim
        conn.send(b"world")
        final = conn.response("POST")
    assert final.status == 200 and final.json()["body"] == "world"


def test_no_100_continue_when_app_does_not_read(server: Server) -> None:
    with server.connect() as conn:
        conn.send(b"POST /n?mode=noread HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        first = conn.response("POST", skip_interim=False)
        assert first.status == 200, f"expected the final response first, got {first}"
        assert first.json()["body"] == ""
        assert b"100 Continue" not in first.raw
    assert server.assert_serving("/health?mode=noread")


def test_no_100_continue_for_http10(server: Server) -> None:
    with server.connect() as conn:
        conn.send(b"POST /o?mode=read_n HTTP/1.0\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\nhello")
        data = conn.read_until_close()
    assert b"100 Continue" not in data
    assert data.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")), data[:100]
    assert b'"body": "hello"' in data


def test_100_continue_with_chunked_body(server: Server) -> None:
    with server.connect() as conn:
        conn.send(b"POST /cc?mode=read_n HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        assert conn.response("POST", skip_interim=False).status == 100
        conn.send(b"3\r\nabc\r\n0\r\n\r\n")
        assert conn.response("POST").json()["body"] == "abc"
