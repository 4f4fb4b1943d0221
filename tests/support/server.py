"""The real `ferrocorn` process, as every test starts it.

:class:`Server` binds port 0 (or a unix socket), and the real address is read from the
``Listening at:`` line the server logs when it is ready. Nothing here sleeps to synchronise:
readiness and log lines are polled for with a deadline (:func:`support.wait.wait_for`).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .procfs import children
from .raw import SOCK_TIMEOUT, Fields, RawConn
from .wait import wait_for

TESTS_DIR = Path(__file__).resolve().parent.parent
APPS_DIR = TESTS_DIR / "apps"
CORPUS_DIR = TESTS_DIR / "corpus"

#: How long a server gets to print its ``Listening at:`` lines.
START_TIMEOUT = 15.0
#: How long a server gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 15.0

LISTEN_RE = re.compile(r"Listening at: (\S+) \((\d+)\)")


def ferrocorn_bin() -> str:
    """The server executable: $FERROCORN_BIN, else the one beside this Python."""
    env = os.environ.get("FERROCORN_BIN")
    if env:
        return env
    return str(Path(sys.executable).parent / "ferrocorn")


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
                 pythonpath: bool = True, expect_listening: int | None = None,
                 fds: dict[int, int] | None = None) -> None:
        self.app = app
        #: Descriptors the process starts with: its fd number -> this process's fd.
        self.fds = dict(fds or {})
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
        fds = self.fds

        def place_fds() -> None:
            for target, source in fds.items():
                os.dup2(source, target)  # inheritable: it survives the exec

        self.proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, cwd=self.cwd, env=self.env, start_new_session=True,
            # Python's own descriptors are close-on-exec: only the placed ones are inherited.
            close_fds=not fds, preexec_fn=place_fds if fds else None,
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
        return sorted(children(self.pid))

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


class Reply(Fields):
    """A response as http.client parsed it."""

    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes,
                 version: int = 11) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.version = version

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


# ------------------------------------------------------------ servers a test runs

LIVE_SERVERS: list[Server] = []
#: Every server ever started, in order (the autouse check looks at those a test started).
STARTED: list[Server] = []


@contextlib.contextmanager
def serving(server: Server) -> Iterator[Server]:
    """Starts ``server`` for the block, with the checks every test's servers get (the log is
    looked at by conftest's autouse fixture; a panic fails the test), then stops it."""
    STARTED.append(server)
    server.start()
    LIVE_SERVERS.append(server)
    try:
        yield server
    finally:
        LIVE_SERVERS.remove(server)
        server.stop()
        assert "panicked" not in server.log, server.log


def running_server(app: str, *args: str,
                   **kwargs: Any) -> contextlib.AbstractContextManager[Server]:
    """:func:`serving` a new :class:`Server` (``Server``'s arguments)."""
    return serving(Server(app, *args, **kwargs))
