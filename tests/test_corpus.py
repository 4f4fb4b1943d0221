"""Strict request parsing (RFC 9112), driven by the corpus in tests/corpus (see its README).

Each valid request must be answered 200 with what the echo app saw; each invalid one with
its expected status, ``Connection: close`` and a closed connection, after which the server
still serves. Every entry is replayed whole, line by line and (when short) byte by byte.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from support import RawConn, Server, http_request, parse_responses, running_server
from support.raw import assert_standard_headers
from support.server import CORPUS_DIR

BYTE_BY_BYTE_LIMIT = 600
#: How long the server gets to close the connection after an error response.
CLOSE_TIMEOUT = 5.0
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: example.com\r\n\r\n"


def unescape(text: str) -> bytes:
    """The corpus escapes: \\r \\n \\t \\0 \\\\ \\xHH; every other byte stands for itself."""
    out = bytearray()
    i = 0
    simple = {"r": b"\r", "n": b"\n", "t": b"\t", "0": b"\0", "\\": b"\\"}
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            assert ord(ch) < 128, f"non-ASCII character in a corpus file: {ch!r}"
            out += ch.encode()
            i += 1
            continue
        nxt = text[i + 1:i + 2]
        if nxt in simple:
            out += simple[nxt]
            i += 2
        elif nxt == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", text[i + 2:i + 4]):
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
        else:
            raise ValueError(f"bad escape {text[i:i + 4]!r}")
    return bytes(out)


@dataclass
class Entry:
    name: str
    data: bytes
    statuses: set[int]
    meta: dict[str, list[str]] = field(default_factory=dict)

    def first(self, key: str) -> str | None:
        values = self.meta.get(key)
        return unescape(values[0]).decode("latin-1") if values else None

    @property
    def method(self) -> str:
        return self.data.lstrip(b"\r\n").split(b" ", 1)[0].decode("latin-1")

    @property
    def keeps_alive(self) -> bool:
        return b" HTTP/1.1\r\n" in self.data.split(b"\r\n\r\n", 1)[0] + b"\r\n"


def load(kind: str) -> list[Entry]:
    entries = []
    for path in sorted((CORPUS_DIR / kind).glob("*.http")):
        text = path.read_text(encoding="ascii")
        head, sep, raw = text.partition("\n---\n")
        assert sep, f"{path}: no '---' line"
        meta: dict[str, list[str]] = {}
        for line in head.splitlines():
            key, _, value = line.partition(": ")
            meta.setdefault(key.strip(), []).append(value)
        statuses = {int(s) for s in meta["status"][0].split()}
        entries.append(Entry(path.stem, unescape("".join(raw.splitlines())), statuses, meta))
    return entries


def generated() -> tuple[list[Entry], list[Entry]]:
    """Entries too large to write by hand: the size limits (request line 4094 bytes,
    100 header fields, 8190 bytes per field) and requests just inside them."""
    def headers(n: int) -> bytes:
        return b"".join(b"X-Field-%03d: v\r\n" % i for i in range(n))

    valid = [
        Entry("gen-long-request-line-ok", b"GET /" + b"a" * 4000 + b" HTTP/1.1\r\n"
              b"Host: example.com\r\n\r\n", {200}, {"path": ["/" + "a" * 4000]}),
        Entry("gen-hundred-fields-ok", b"GET /hundred HTTP/1.1\r\nHost: example.com\r\n"
              + headers(99) + b"\r\n", {200}, {"header": ["HTTP_X_FIELD_098=v"]}),
        Entry("gen-large-field-ok", b"GET /large HTTP/1.1\r\nHost: example.com\r\nX-Big: "
              + b"b" * 4000 + b"\r\n\r\n", {200}, {"header": ["HTTP_X_BIG=" + "b" * 4000]}),
    ]
    invalid = [
        Entry("gen-request-line-too-long", b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n"
              b"Host: example.com\r\n\r\n", {414}),
        Entry("gen-too-many-fields", b"GET / HTTP/1.1\r\nHost: example.com\r\n"
              + headers(100) + b"\r\n", {431}),
        Entry("gen-field-too-large", b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Big: "
              + b"b" * 9000 + b"\r\n\r\n", {431}),
    ]
    return valid, invalid


GEN_VALID, GEN_INVALID = generated()
VALID = load("valid") + GEN_VALID
INVALID = load("invalid") + GEN_INVALID


def modes(entries: list[Entry], extra: tuple[str, ...] = ()) -> list:
    params = []
    for entry in entries:
        for mode in ("whole", "lines", "bytes", *extra):
            if mode == "bytes" and len(entry.data) > BYTE_BY_BYTE_LIMIT:
                continue
            params.append(pytest.param(entry, mode, id=f"{entry.name}-{mode}"))
    return params


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with running_server("echo:app") as srv:
        yield srv


def pieces(data: bytes, mode: str) -> list[bytes]:
    if mode == "lines":
        return [p for p in re.split(rb"(?<=\n)", data) if p]
    if mode == "bytes":
        return [data[i:i + 1] for i in range(len(data))]
    return [data]


def replay(conn: RawConn, data: bytes, mode: str) -> None:
    """Send ``data`` in pieces; stop early once the server has answered (or closed)."""
    for piece in pieces(data, mode):
        if conn.readable():
            return
        try:
            conn.send(piece)
        except (BrokenPipeError, ConnectionResetError):
            return


def norm(value: str) -> str:
    return re.sub(r",[ \t]*", ",", value)


# ---------------------------------------------------------------------- valid requests

def check_echo(entry: Entry, reply: dict) -> None:
    for key in ("method", "path", "query", "body"):
        expected = entry.first(key)
        if expected is not None:
            assert reply[key] == expected, (key, reply[key], expected)
    for spec in entry.meta.get("header", []):
        key, _, value = spec.partition("=")
        assert key in reply["headers"], (key, sorted(reply["headers"]))
        expected_value = unescape(value).decode("latin-1")
        assert norm(reply["headers"][key]) == norm(expected_value), (key, reply["headers"][key])
    for key in entry.meta.get("absent", []):
        assert key not in reply["headers"], (key, reply["headers"][key])


@pytest.mark.parametrize(("entry", "mode"), modes(VALID))
def test_valid_request(server: Server, entry: Entry, mode: str) -> None:
    with server.connect() as conn:
        replay(conn, entry.data, mode)
        resp = conn.response(entry.method)
        assert resp.status == 200, (resp, resp.body[:300])
        assert_standard_headers(resp)
        check_echo(entry, resp.json())
        if entry.keeps_alive:
            # the parser is in step: the next request on the connection is read correctly
            conn.send(http_request("/next-on-connection"))
            assert conn.response().json()["path"] == "/next-on-connection"
        else:
            conn.assert_closed()


def test_corpus_is_not_empty() -> None:
    assert len(VALID) >= 25 and len(INVALID) >= 80


# ---------------------------------------------------------------------- invalid requests

def check_rejected(server: Server, entry: Entry, data: bytes, reset: bool) -> None:
    assert data or not reset, "connection reset before any response was read"
    assert data, "connection closed without a response"
    responses = parse_responses(data)
    assert len(responses) == 1, f"expected one response, got {responses}"
    resp = responses[0]
    assert resp.status in entry.statuses, \
        f"{entry.meta.get('about', [''])[0]}: expected {sorted(entry.statuses)}, got {resp}"
    assert (resp.header("Connection") or "").lower() == "close", resp.headers
    assert (resp.header("Content-Type") or "").startswith("text/plain"), resp.headers
    assert resp.body.strip(), "the error response names no problem"
    assert b"/smuggled" not in data
    assert_standard_headers(resp)
    server.assert_serving("/health")


@pytest.mark.parametrize(("entry", "mode"), modes(INVALID, ("after-valid",)))
def test_invalid_request(server: Server, entry: Entry, mode: str) -> None:
    with server.connect() as conn:
        if mode == "after-valid":
            # a kept-alive connection that already served a request
            conn.send(http_request("/before"))
            assert conn.response().json()["path"] == "/before"
            replay(conn, entry.data, "whole")
        else:
            replay(conn, entry.data, mode)
        data = conn.read_until_close(CLOSE_TIMEOUT)
        check_rejected(server, entry, data, conn.reset)


@pytest.mark.parametrize("entry", [pytest.param(e, id=e.name) for e in INVALID])
def test_invalid_request_then_smuggled_one(server: Server, entry: Entry) -> None:
    """An invalid request with a valid one right behind it in the same send: exactly one
    response, and the second request is never served."""
    with server.connect() as conn:
        replay(conn, entry.data + SMUGGLED, "whole")
        data = conn.read_until_close(CLOSE_TIMEOUT)
        check_rejected(server, entry, data, conn.reset)
