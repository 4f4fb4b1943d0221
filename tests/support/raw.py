"""Raw HTTP/1.1 over a socket: :class:`RawConn` (a socket with a timeout and a small, strict
response parser), so the tests see exactly the bytes the server sent."""

from __future__ import annotations

import contextlib
import datetime
import json
import re
import select
import socket
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

#: Default timeout for every socket operation in the suite.
SOCK_TIMEOUT = 10.0


class Fields:
    """Header lookups (case-insensitive) and the body as JSON, for a response's
    ``headers`` (a list of name, value pairs) and ``body``."""

    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


class Response(Fields):
    """One response parsed from raw bytes by :func:`parse_responses`."""

    def __init__(self) -> None:
        self.version = ""
        self.status = 0
        self.reason = ""
        self.headers: list[tuple[str, str]] = []
        self.body = b""
        self.raw = b""
        #: False when the connection ended before the body did.
        self.complete = True
        self.chunked = False
        #: True when the body was delimited by the end of the connection.
        self.close_delimited = False
        self.trailers: list[tuple[str, str]] = []

    def __repr__(self) -> str:
        return f"<Response {self.version} {self.status} {self.reason!r} body={self.body[:120]!r}>"


class Incomplete(Exception):
    """The bytes ended before a whole response head was read."""


class _Reader:
    """Pulls bytes from a buffer, asking ``fill`` for more; ``fill`` returns False at EOF."""

    def __init__(self, buf: bytearray, fill: Callable[[], bool]) -> None:
        self.buf = buf
        self.fill = fill
        self.pos = 0
        self.eof = False

    def _more(self) -> bool:
        if self.eof:
            return False
        if not self.fill():
            self.eof = True
            return False
        return True

    def line(self, limit: int = 65536) -> bytes:
        while True:
            i = self.buf.find(b"\n", self.pos)
            if i >= 0:
                out = bytes(self.buf[self.pos:i + 1])
                self.pos = i + 1
                return out
            if len(self.buf) - self.pos > limit:
                raise AssertionError("response line too long")
            if not self._more():
                raise Incomplete(bytes(self.buf[self.pos:]))

    def exactly(self, n: int) -> tuple[bytes, bool]:
        while len(self.buf) - self.pos < n:
            if not self._more():
                out = bytes(self.buf[self.pos:])
                self.pos = len(self.buf)
                return out, False
        out = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return out, True

    def rest(self) -> bytes:
        while self._more():
            pass
        out = bytes(self.buf[self.pos:])
        self.pos = len(self.buf)
        return out


def _parse_head(reader: _Reader, resp: Response) -> None:
    start = reader.pos
    status_line = reader.line()
    assert status_line.endswith(b"\r\n"), f"status line not CRLF-terminated: {status_line!r}"
    m = re.fullmatch(rb"(HTTP/\d\.\d) (\d{3}) ?([^\r\n]*)\r\n", status_line)
    assert m, f"bad status line {status_line!r}"
    resp.version = m.group(1).decode()
    resp.status = int(m.group(2))
    resp.reason = m.group(3).decode("latin-1")
    while True:
        line = reader.line()
        assert line.endswith(b"\r\n"), f"header line not CRLF-terminated: {line!r}"
        if line == b"\r\n":
            break
        name, sep, value = line[:-2].partition(b":")
        assert sep and name and not name.strip(b"!#$%&'*+-.^_`|~0123456789"
                                               b"abcdefghijklmnopqrstuvwxyz"
                                               b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"), \
            f"invalid header line in response: {line!r}"
        resp.headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    resp.raw = bytes(reader.buf[start:reader.pos])


def _read_response(reader: _Reader, method: str = "GET") -> Response:
    """Parses one response; a 1xx response is returned as it is (the caller loops)."""
    start = reader.pos
    resp = Response()
    _parse_head(reader, resp)
    status = resp.status
    te = (resp.header("Transfer-Encoding") or "").lower()
    cl = resp.header("Content-Length")
    if 100 <= status < 200 or status in (204, 304) or method == "HEAD":
        pass
    elif te:
        assert te == "chunked", f"unexpected Transfer-Encoding {te!r}"
        resp.chunked = True
        body = bytearray()
        while True:
            try:
                size_line = reader.line()
            except Incomplete:
                resp.complete = False
                break
            m = re.fullmatch(rb"([0-9a-fA-F]+)(;[^\r\n]*)?\r\n", size_line)
            assert m, f"bad chunk size line from server: {size_line!r}"
            size = int(m.group(1), 16)
            if size == 0:
                try:
                    while True:
                        trailer = reader.line()
                        if trailer == b"\r\n":
                            break
                        name, _, value = trailer[:-2].partition(b":")
                        resp.trailers.append((name.decode("latin-1"),
                                              value.strip().decode("latin-1")))
                except Incomplete:
                    resp.complete = False
                break
            data, ok = reader.exactly(size + 2)
            body += data[:size]
            if not ok:
                resp.complete = False
                break
            assert data[size:] == b"\r\n", f"chunk data not followed by CRLF: {data[-10:]!r}"
        resp.body = bytes(body)
    elif cl is not None:
        assert re.fullmatch(r"\d+", cl), f"bad Content-Length from server: {cl!r}"
        resp.body, resp.complete = reader.exactly(int(cl))
    else:
        resp.close_delimited = True
        resp.body = reader.rest()
    resp.raw = bytes(reader.buf[start:reader.pos])
    return resp


def parse_responses(data: bytes, method: str = "GET") -> list[Response]:
    """Every response in ``data`` (what a connection sent until it closed)."""
    reader = _Reader(bytearray(data), lambda: False)
    out = []
    while reader.pos < len(reader.buf):
        out.append(_read_response(reader, method))
    return out


class RawConn:
    """A client socket (with a timeout) plus a buffer for parsing responses."""

    def __init__(self, sock: socket.socket, timeout: float = SOCK_TIMEOUT) -> None:
        self.sock = sock
        self.sock.settimeout(timeout)
        self.timeout = timeout
        self.buf = bytearray()
        self.reader = _Reader(self.buf, self._fill)
        self.reset = False

    @classmethod
    def tcp(cls, host: str, port: int, timeout: float = SOCK_TIMEOUT) -> RawConn:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect((host, port))
        return cls(sock, timeout)

    @classmethod
    def unix(cls, path: str, timeout: float = SOCK_TIMEOUT) -> RawConn:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(path)
        return cls(sock, timeout)

    def __enter__(self) -> RawConn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def abort(self) -> None:
        """Close with an RST (SO_LINGER 0), as a client that vanishes does."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            self.reset = True
            return False
        if not data:
            return False
        self.buf += data
        return True

    def compact(self) -> None:
        del self.buf[:self.reader.pos]
        self.reader.pos = 0

    def response(self, method: str = "GET", skip_interim: bool = True) -> Response:
        """The next response (1xx ones skipped unless ``skip_interim`` is False)."""
        while True:
            try:
                resp = _read_response(self.reader, method)
            except Incomplete as exc:
                raise AssertionError(
                    f"connection closed before a whole response; got {exc.args[0]!r}") from None
            self.compact()
            if skip_interim and 100 <= resp.status < 200:
                continue
            return resp

    def read_until_close(self, timeout: float | None = None) -> bytes:
        """Everything until the server closes; fails if it does not within ``timeout``."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"connection not closed by the server; got {bytes(self.buf)[:300]!r}")
            self.sock.settimeout(remaining)
            try:
                if not self._fill():
                    break
            except (TimeoutError, socket.timeout):
                raise AssertionError(
                    f"connection not closed by the server; got {bytes(self.buf)[:300]!r}"
                ) from None
        self.sock.settimeout(self.timeout)
        out = bytes(self.buf[self.reader.pos:])
        self.reader.pos = len(self.buf)
        self.compact()
        return out

    def assert_closed(self, timeout: float | None = None) -> None:
        """The server closes the connection without sending anything more."""
        rest = self.read_until_close(timeout)
        assert rest == b"", f"unexpected bytes before close: {rest[:200]!r}"

    def readable(self) -> bool:
        """Data (or EOF) is waiting, without blocking."""
        r, _, _ = select.select([self.sock], [], [], 0)
        return bool(r)

    def nothing_received(self) -> bool:
        """Nothing at all (no data, no EOF) has arrived yet; does not block."""
        if self.buf[self.reader.pos:]:
            return False
        return not self.readable()


def http_request(path: str = "/", method: str = "GET", host: str = "localhost",
                 headers: list[tuple[str, str]] | None = None, body: bytes = b"",
                 version: str = "HTTP/1.1") -> bytes:
    """A raw request, with Content-Length when there is a body."""
    lines = [f"{method} {path} {version}", f"Host: {host}"]
    for name, value in headers or []:
        lines.append(f"{name}: {value}")
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def assert_standard_headers(headers: Any) -> None:
    """Every response carries a valid ``Date`` and ``Server: ferrocorn``."""
    date = headers.header("Date")
    assert date, f"no Date header in {headers.headers}"
    parsed = parsedate_to_datetime(date)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - parsed).total_seconds()) < 120, date
    assert re.fullmatch(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT", date), \
        f"Date is not an IMF-fixdate: {date!r}"
    server = headers.header("Server")
    assert server is not None and server.split("/")[0].strip() == "ferrocorn", server
