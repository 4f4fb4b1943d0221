"""Request smuggling, end to end: known attack requests and 1,000 seeded mutants of them go
through a real nginx (upstream keepalive pool) to ferrocorn and straight to ferrocorn, and the
app must see exactly the requests nginx forwarded, in order, with the same bodies, and, without
nginx, no request beyond what a strict RFC 9112 reading of the bytes holds. The harness is
tests/smuggling.py (its docstring says how each verdict is reached); bench/smuggling.py runs the
same against Gunicorn and Granian.

A deliberately naive backend (it reads no body on a GET: the "CL.0" desync) shows that both
verdicts catch a real desync, so a clean run means something.
"""

from __future__ import annotations

import io
import socket
import socketserver
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from smuggling import (
    NGINX,
    Case,
    Harness,
    Records,
    Tally,
    known_cases,
    mutants,
    nginx_in_front,
    read_requests,
    record_env,
)

from support import APPS_DIR, Server, running_server
from support.skips import needs_tool

needs_nginx = needs_tool("nginx")

MUTANTS = 1000
#: Wall-clock bound for each run of cases (a run that does not finish in it fails).
BUDGET = 45.0

KNOWN = known_cases()


def by_name(name: str) -> Case:
    return next(c for c in KNOWN if c.name == name)


# --------------------------------------------------------------- the harness itself

@pytest.mark.parametrize(("name", "served", "tail"), [
    ("pipelined-gets", ["/c/pipelined-gets", "/c/pipelined-gets/next"], None),
    ("clte-plain", [], "/c/clte-plain"),
    ("tecl-plain", [], "/c/tecl-plain"),
    ("clte-xchunked", [], "/c/clte-xchunked"),
    ("cl-dup-differ", [], "/c/cl-dup-differ"),
    ("cl-dup-same", ["/c/cl-dup-same", "/c/cl-dup-same/next"], None),
    ("cl-underscore", ["/c/cl-underscore", "/smuggled", "/c/cl-underscore/next"], None),
    ("chunk-ext-quoted-crlf", [], "/c/chunk-ext-quoted-crlf"),
    ("chunk-size-overflow-64-zero", [], "/c/chunk-size-overflow-64-zero"),
    ("bare-lf-request-line", [], "/c/bare-lf-request-line"),
    ("get-with-body", ["/c/get-with-body", "/c/get-with-body/next"], None),
    ("connection-close-then-more", ["/c/connection-close-then-more"], None),
    ("absolute-form", ["/c/absolute-form", "/c/absolute-form/next"], None),
])
def test_strict_reading_of_known_cases(name: str, served: list[str], tail: str | None) -> None:
    reading = read_requests(by_name(name).data)
    assert [r.path for r in reading.requests] == served, reading
    assert (reading.tail[1] if reading.tail else None) == tail, reading


def test_strict_reading_keeps_bodies() -> None:
    reading = read_requests(by_name("pipelined-post-chunked").data)
    assert reading.requests[0].body.startswith(b"abcGET /smuggled HTTP/1.1\r\n")
    assert reading.requests[1].path == "/c/pipelined-post-chunked/next"


def test_mutants_are_bounded_distinct_and_reproducible() -> None:
    first = mutants(KNOWN, MUTANTS)
    assert len(first) == MUTANTS
    assert len({m.data for m in first} | {c.data for c in KNOWN}) == MUTANTS + len(KNOWN)
    assert [m.data for m in mutants(KNOWN, MUTANTS)] == [m.data for m in first]
    assert {m.parent for m in first} <= {c.name for c in KNOWN}


# ------------------------------------------------------------------------ ferrocorn

@dataclass
class Setup:
    harness: Harness
    server: Server


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    if NGINX is None:
        pytest.skip("nginx is not installed (make test-deps)")
    folder = tmp_path_factory.mktemp("smuggling")
    records = folder / "records"
    with running_server("smuggle_app:app", "-w", "1", "--threads", "4", "--keep-alive", "30",
                        "--forwarded-allow-ips", "127.0.0.1",
                        env=record_env(records)) as server, \
            nginx_in_front(folder / "nginx", server.port) as nginx:
        yield Setup(Harness(server.port, Records(records), nginx), server)


def run(setup: Setup, cases: list[Case]) -> Tally:
    h = setup.harness
    h.tally = Tally()
    tally = h.run(cases, BUDGET)
    assert tally.cases == len(cases), f"only {tally.cases} of {len(cases)} cases in {BUDGET}s"
    problems = [str(m) for m in tally.mismatches + tally.direct_mismatches]
    assert not problems, f"{len(problems)} smuggling verdicts failed:\n" + "\n".join(problems)
    assert tally.direct_no_close == 0
    # Where the bytes stop making sense, ferrocorn says so (a 4xx) before it closes.
    assert tally.direct_silent == 0, tally.direct_silent_cases
    assert setup.server.running()
    return tally


@needs_nginx
def test_known_smuggling_requests(setup: Setup) -> None:
    t = run(setup, KNOWN)
    # The run discriminates: nginx refused some cases, forwarded others, and ferrocorn both
    # served and refused requests sent to it directly.
    assert t.refused_by_nginx > 10 and t.forwarded > 50 and t.app_seen > 50
    assert t.direct_refused > 50 and t.direct_served > 30


@needs_nginx
def test_mutated_smuggling_requests(setup: Setup) -> None:
    t = run(setup, mutants(KNOWN, MUTANTS))
    assert t.forwarded > 100 and t.direct_refused > 100 and t.direct_served > 100


# ------------------------------------------------------- a backend that does desync

class NaiveHandler(socketserver.StreamRequestHandler):
    """HTTP/1.1 the naive way: Content-Length only, and no body at all on GET or HEAD (the
    "CL.0" desync: a GET's body is read as the next request)."""

    def handle(self) -> None:
        sys.path.insert(0, str(APPS_DIR))
        import smuggle_app  # noqa: PLC0415 (the recording app, in this process)

        for _ in range(100):
            line = self.rfile.readline(65536)
            if not line.strip():
                return
            method, target, _ = line.decode("latin-1").split(" ", 2)
            headers = {}
            while True:
                h = self.rfile.readline(65536)
                if h in (b"\r\n", b"\n", b""):
                    break
                name, _, value = h.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            length = 0 if method in ("GET", "HEAD") else int(headers.get("content-length", 0))
            path, _, query = target.partition("?")
            environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
                       "wsgi.input": io.BytesIO(self.rfile.read(length))}
            if "x-request-id" in headers:
                environ["HTTP_X_REQUEST_ID"] = headers["x-request-id"]
            out = []
            body = b"".join(smuggle_app.raw_app(environ, lambda s, h, out=out: out.append(s)))
            self.wfile.write(b"HTTP/1.1 " + out[0].encode() + b"\r\nContent-Length: %d\r\n\r\n"
                             % len(body) + body)
            if headers.get("connection", "").lower() == "close":
                return


@needs_nginx
def test_the_harness_catches_a_desync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records = tmp_path / "records"
    monkeypatch.setenv("SMUGGLE_RECORDS", record_env(records)["SMUGGLE_RECORDS"])
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    naive = socketserver.ThreadingTCPServer(("127.0.0.1", 0), NaiveHandler)
    naive.daemon_threads = True
    thread = threading.Thread(target=naive.serve_forever, daemon=True)
    thread.start()
    try:
        with nginx_in_front(tmp_path / "nginx", naive.server_address[1]) as nginx:
            h = Harness(naive.server_address[1], Records(records), nginx)
            h.run([by_name("get-with-body"), by_name("pipelined-gets")], BUDGET)
    finally:
        naive.shutdown()
        naive.server_close()
    t = h.tally
    assert t.cases == 2
    # Through nginx: the GET's body became a request of its own on the pooled connection.
    assert t.extra >= 1, t.mismatches
    assert any("/smuggled" in str(m) for m in t.mismatches), t.mismatches
    # Directly: it served a request the bytes do not hold.
    assert [m.case for m in t.direct_mismatches] == ["get-with-body"], t.direct_mismatches
    # The plain pipelined pair is no false alarm.
    assert all(m.case == "get-with-body" for m in t.mismatches), t.mismatches
    with socket.socket() as s:  # the naive server is gone
        assert s.connect_ex(naive.server_address) != 0
