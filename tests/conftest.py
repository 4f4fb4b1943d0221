"""Shared machinery for the integration suite: the real `ferrocorn` process and raw clients.

Every test drives a real server process started with :class:`Server`: it binds port 0 (or a
unix socket), and the real address is read from the ``Listening at:`` line the server logs
when it is ready. Nothing here sleeps to synchronise: readiness, log lines and files written
by the test apps are polled for with a deadline (:func:`wait_for`).

Raw HTTP goes through :class:`RawConn` (a socket with a timeout and a small, strict response
parser) so the tests see exactly the bytes the server sent.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

TESTS_DIR = Path(__file__).resolve().parent
APPS_DIR = TESTS_DIR / "apps"
CORPUS_DIR = TESTS_DIR / "corpus"

#: How long a server gets to print its ``Listening at:`` lines.
START_TIMEOUT = 15.0
#: How long a server gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 15.0
#: Default timeout for every socket operation in the suite.
SOCK_TIMEOUT = 10.0

LISTEN_RE = re.compile(r"Listening at: (\S+) \((\d+)\)")


def ferrocorn_bin() -> str:
    """The server executable: $FERROCORN_BIN, else the one beside this Python."""
    env = os.environ.get("FERROCORN_BIN")
    if env:
        return env
    return str(Path(sys.executable).parent / "ferrocorn")


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
              message: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)  # polling interval, not synchronisation


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a server: no inherited settings that would change its behaviour."""
    env = dict(os.environ)
    for key in ("PORT", "FERROCORN_CMD_ARGS", "GUNICORN_CMD_ARGS", "WEB_CONCURRENCY"):
        env.pop(key, None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if extra:
        env.update(extra)
    return env


class Server:
    """One real `ferrocorn` process.

    ``binds`` defaults to ``["127.0.0.1:0"]``; pass ``binds=[]`` to give no ``-b`` at all.
    After :meth:`start`, ``addresses`` holds what each ``Listening at:`` line said, and
    ``host``/``port``/``url`` describe the first TCP one.
    """

    def __init__(self, app: str, *args: str, binds: list[str] | None = None,
                 env: dict[str, str] | None = None, cwd: str | Path | None = None,
                 pythonpath: bool = True, expect_listening: int | None = None) -> None:
        self.app = app
        self.args = list(args)
        self.binds = ["127.0.0.1:0"] if binds is None else list(binds)
        self.env = clean_env(env)
        self.cwd = str(cwd) if cwd else str(TESTS_DIR.parent)
        self.pythonpath = pythonpath
        self.expect_listening = len(self.binds) or 1 if expect_listening is None \
            else expect_listening
        self.proc: subprocess.Popen[bytes] | None = None
        self._lines: list[str] = []
        self._out: list[str] = []
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self.addresses: list[str] = []
        self.host = ""
        self.port = 0
        self.url = ""
        self.unix_path = ""
        self.returncode: int | None = None

    # ------------------------------------------------------------------ process
    def command(self) -> list[str]:
        cmd = [ferrocorn_bin()]
        for bind in self.binds:
            cmd += ["-b", bind]
        if self.pythonpath:
            cmd += ["--pythonpath", str(APPS_DIR)]
        cmd += self.args
        if self.app:
            cmd.append(self.app)
        return cmd

    def spawn(self) -> Server:
        """Start the process without waiting for it to be ready."""
        self.proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, cwd=self.cwd, env=self.env, start_new_session=True,
        )
        for stream, sink in ((self.proc.stderr, self._lines), (self.proc.stdout, self._out)):
            thread = threading.Thread(target=self._pump, args=(stream, sink), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _pump(self, stream: Any, sink: list[str]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace")
            with self._cond:
                sink.append(line)
                self._cond.notify_all()
        stream.close()
        with self._cond:
            self._cond.notify_all()

    def start(self) -> Server:
        self.spawn()
        try:
            self.wait_ready()
            self.wait_worker()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_worker(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until a worker answers. The master logs 'Listening at' before any worker is up
        (connections wait in the backlog meanwhile); a test that signals or edits files right
        away would otherwise race the worker's boot. A malformed request gets the server's own
        400 and a close (or only the close, with --proxy-protocol): the app is not called."""
        with self.connect(timeout) as conn:
            conn.send(b"READY?\r\n\r\n")
            conn.read_until_close(timeout)  # fails if no worker closes it in time

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [LISTEN_RE.search(line) for line in self._lines]
                found = [m for m in found if m]
                if len(found) >= self.expect_listening:
                    break
                if self.proc.poll() is not None:
                    # let the reader threads drain what is left
                    self._cond.wait(0.2)
                    raise AssertionError(
                        f"ferrocorn exited with {self.proc.returncode} before listening:\n"
                        + self.log)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no 'Listening at:' line within {timeout}s:\n" + self.log)
                self._cond.wait(min(remaining, 0.1))
        self.addresses = [m.group(1) for m in found]
        self.master_pid = int(found[0].group(2))
        for address in self.addresses:
            if address.startswith("unix:"):
                self.unix_path = self.unix_path or address[len("unix:"):]
                continue
            m = re.fullmatch(r"https?://(\[[^\]]+\]|[^:]+):(\d+)", address)
            assert m, f"unparsable listening address {address!r}"
            if not self.url:
                self.host = m.group(1).strip("[]")
                self.port = int(m.group(2))
                self.url = address

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int:
        assert self.proc is not None
        self.returncode = self.proc.wait(timeout)
        self._join()
        return self.returncode

    def stop(self) -> int | None:
        """SIGTERM, wait, then SIGKILL the whole process group if it did not go."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        # Workers left behind by a master that died would hold our pipes open.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, 0)
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.returncode = self.proc.returncode
        self._join()
        return self.returncode

    def _join(self) -> None:
        for thread in self._threads:
            thread.join(5)

    def worker_pids(self) -> list[int]:
        """Children of the master (the worker processes)."""
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == self.pid:
                pids.append(int(entry))
        return pids

    # ---------------------------------------------------------------------- log
    @property
    def log(self) -> str:
        with self._cond:
            return "".join(self._lines)

    @property
    def stdout(self) -> str:
        with self._cond:
            return "".join(self._out)

    def mark(self) -> int:
        """A position in the log; see :meth:`log_since`."""
        with self._cond:
            return len(self._lines)

    def log_since(self, mark: int) -> str:
        with self._cond:
            return "".join(self._lines[mark:])

    def wait_log(self, pattern: str, since: int = 0, timeout: float = 10.0) -> str:
        """Wait until a log line after ``since`` matches the regex; return the log since."""
        regex = re.compile(pattern)

        def check() -> str | None:
            text = self.log_since(since)
            return text if regex.search(text) else None

        return wait_for(check, timeout, message=f"log line matching {pattern!r}:\n"
                        + self.log_since(since)[-3000:])

    # ------------------------------------------------------------------ clients
    def connect(self, timeout: float = SOCK_TIMEOUT) -> RawConn:
        if self.url:
            return RawConn.tcp(self.host, self.port, timeout)
        return RawConn.unix(self.unix_path, timeout)

    def http(self, timeout: float = SOCK_TIMEOUT) -> http.client.HTTPConnection:
        if self.url:
            return http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        return UnixHTTPConnection(self.unix_path, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        """One request over a fresh http.client connection."""
        conn = self.http()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return Reply(resp.status, resp.reason, resp.getheaders(), data, resp.version)
        finally:
            conn.close()

    def get(self, path: str = "/", headers: dict[str, str] | None = None) -> Reply:
        return self.request("GET", path, headers=headers)

    def assert_serving(self, path: str = "/") -> Reply:
        """The server still answers a normal request with a 200."""
        assert self.running(), "ferrocorn is no longer running:\n" + self.log[-3000:]
        reply = self.get(path)
        assert reply.status == 200, (reply.status, reply.body[:200])
        return reply


class Reply:
    """A response as http.client parsed it."""

    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes,
                 version: int = 11) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.version = version

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        import json
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Reply {self.status} {self.reason!r} {self.body[:80]!r}>"


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix socket."""

    def __init__(self, path: str, timeout: float = SOCK_TIMEOUT) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


# --------------------------------------------------------------------------- raw HTTP


class Response:
    """One response parsed from raw bytes by :func:`parse_response`."""

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

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        import json
        return json.loads(self.body)

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
    from email.utils import parsedate_to_datetime
    import datetime

    date = headers.header("Date")
    assert date, f"no Date header in {headers.headers}"
    parsed = parsedate_to_datetime(date)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - parsed).total_seconds()) < 120, date
    assert re.fullmatch(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT", date), \
        f"Date is not an IMF-fixdate: {date!r}"
    server = headers.header("Server")
    assert server is not None and server.split("/")[0].strip() == "ferrocorn", server


def ipv6_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def vm_kib(pid: int, field: str) -> int:
    """A /proc/<pid>/status memory field (VmRSS, VmHWM) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


class TcpSocket(NamedTuple):
    """One row of /proc/net/tcp (or tcp6): ports, state and queues of a socket on this host."""
    local_port: int
    remote_port: int
    state: str  # two hex digits: 01 ESTABLISHED, 08 CLOSE_WAIT, 0A LISTEN
    tx_queue: int  # bytes sent but not acknowledged, or not yet sent (ss's Send-Q)
    inode: str


def tcp_sockets(tables: tuple[str, ...] = ("/proc/net/tcp",)) -> list[TcpSocket]:
    """Every TCP socket of this host in ``tables``, as the kernel lists them."""
    rows = []
    for table in tables:
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            rows.append(TcpSocket(int(f[1].rsplit(":", 1)[1], 16), int(f[2].rsplit(":", 1)[1], 16),
                                  f[3], int(f[4].split(":")[0], 16), f[9]))
    return rows


# --------------------------------------------------------------------------- fixtures

LIVE_SERVERS: list[Server] = []
#: Every server ever started, in order (the autouse check looks at those a test started).
STARTED: list[Server] = []


@contextlib.contextmanager
def running_server(app: str, *args: str, **kwargs: Any) -> Iterator[Server]:
    server = Server(app, *args, **kwargs)
    STARTED.append(server)
    server.start()
    LIVE_SERVERS.append(server)
    try:
        yield server
    finally:
        LIVE_SERVERS.remove(server)
        server.stop()
        assert "panicked" not in server.log, server.log


@pytest.fixture
def start_server() -> Iterator[Callable[..., Server]]:
    """A factory for servers that live as long as the test; all are stopped at teardown."""
    stack = contextlib.ExitStack()

    def start(app: str, *args: str, **kwargs: Any) -> Server:
        return stack.enter_context(running_server(app, *args, **kwargs))

    with stack:
        yield start


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "app_errors: the test provokes errors on purpose; skip the check that the server log "
        "gained no AssertionError (wsgiref.validate's verdict) during it",
    )
    config.addinivalue_line(
        "markers",
        "wheels: installs the release wheels and the sdist of `make wheels` (tests/test_wheels.py); "
        "opt-in: `make test-wheels` runs them, `make test` leaves them out",
    )


@pytest.fixture(autouse=True)
def _validator_clean(request: pytest.FixtureRequest) -> Iterator[None]:
    """No server may log an AssertionError (wsgiref.validate found a PEP 3333 violation),
    an unclosed iterator, or a Rust panic while a test runs."""
    marks = [(server, server.mark()) for server in LIVE_SERVERS]
    first_new = len(STARTED)
    yield
    for server, mark in marks + [(s, 0) for s in STARTED[first_new:]]:
        text = server.log_since(mark)
        assert "panicked" not in text, text
        if request.node.get_closest_marker("app_errors"):
            continue
        assert "AssertionError" not in text, \
            "wsgiref.validate found a PEP 3333 violation:\n" + text
        assert "garbage collected without being closed" not in text, text
