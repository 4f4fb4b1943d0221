"""The command line: Gunicorn's flags, every bind form, every APP form, bad APPs, signals."""

from __future__ import annotations

import importlib.metadata
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from support import (
    APPS_DIR,
    TESTS_DIR,
    RawConn,
    Server,
    clean_env,
    ferrocorn_bin,
    free_port,
    http_request,
    ipv6_available,
    running_server,
    wait_for,
)
from support.server import UnixHTTPConnection


def run_cli(*args: str, timeout: float = 30, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ferrocorn_bin(), *args], capture_output=True, text=True,
                          timeout=timeout, env=clean_env(env), cwd=cwd or TESTS_DIR.parent,
                          stdin=subprocess.DEVNULL)


def assert_no_crash_output(text: str) -> None:
    assert "panicked" not in text, text
    assert "RUST_BACKTRACE" not in text, text
    assert "Traceback" not in text, text


# ---------------------------------------------------------------------- info flags

def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0, result
    out = result.stdout + result.stderr
    assert re.search(r"ferrocorn\s+\d+\.\d+\.\d+", out), out


def test_version_says_how_it_was_built() -> None:
    """`--version` names the build for a bug report; the wheel tag it recorded at build time
    (tools/pgo_build.py) is the installed wheel's. `-V` is the version alone."""
    out = run_cli("--version").stdout
    first, *rest = out.splitlines()
    assert re.fullmatch(r"ferrocorn \d+\.\d+\.\d+", first), out
    facts = dict(line.split(": ", 1) for line in rest)
    assert set(facts) == {"build", "TLS", "wheel", "target", "rustc", "python"}, out
    assert facts["build"].startswith(("profile-guided", "one-pass")), out
    assert facts["TLS"] == "rustls 0.23, ring provider", out
    assert facts["rustc"].startswith("rustc 1."), out
    assert facts["python"].split()[0] == platform.python_version(), out
    if not facts["wheel"].startswith("none recorded"):
        interpreter, abi, platforms = facts["wheel"].split("-")
        recorded = {f"{interpreter}-{abi}-{p}" for p in platforms.split(".")}
        wheel = importlib.metadata.distribution("ferrocorn").read_text("WHEEL") or ""
        installed = {line[5:] for line in wheel.splitlines() if line.startswith("Tag: ")}
        assert recorded == installed, (out, wheel)
    assert run_cli("-V").stdout.strip() == first


def test_version_via_python_m() -> None:
    result = subprocess.run([sys.executable, "-m", "ferrocorn", "--version"], capture_output=True,
                            text=True, timeout=30, env=clean_env(), stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result
    assert re.search(r"ferrocorn\s+\d+\.\d+\.\d+", result.stdout + result.stderr), result


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help(flag: str) -> None:
    result = run_cli(flag)
    assert result.returncode == 0, result
    out = result.stdout + result.stderr
    for option in ("-b", "--bind", "--threads", "--chdir", "--pythonpath", "--log-level",
                   "--keep-alive", "--version", "APP"):
        assert option in out, f"{option} missing from {flag} output:\n{out}"


# ---------------------------------------------------------------------- bind forms

def test_bind_ipv4_port_zero_reports_real_port_and_pid(start_server) -> None:
    server = start_server("basic:app")
    assert server.host == "127.0.0.1"
    assert 0 < server.port < 65536
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert server.master_pid == server.pid
    line = re.search(r"^\[(.+?)\] \[(\d+)\] \[INFO\] Listening at: ", server.log, re.M)
    assert line, server.log
    assert int(line.group(2)) == server.pid
    assert len(re.findall("Listening at:", server.log)) == 1
    reply = server.get("/")
    assert reply.status == 200 and reply.body == b"hello"


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback")
def test_bind_ipv6(start_server) -> None:
    server = start_server("basic:app", binds=["[::1]:0"])
    assert server.url == f"http://[::1]:{server.port}", server.addresses
    assert server.host == "::1"
    reply = server.get("/peer")
    assert reply.status == 200
    assert reply.body == f"::1 {server.port}".encode()


def test_bind_unix_socket(start_server, tmp_path: Path) -> None:
    path = tmp_path / "ferrocorn.sock"
    server = start_server("basic:app", binds=[f"unix:{path}"])
    assert server.addresses == [f"unix:{path}"], server.log
    conn = UnixHTTPConnection(str(path))
    try:
        for _ in range(3):  # keep-alive works over unix sockets too
            conn.request("GET", "/")
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.read() == b"hello"
    finally:
        conn.close()


def test_bind_several(start_server, tmp_path: Path) -> None:
    path = tmp_path / "both.sock"
    server = start_server("basic:app", binds=["127.0.0.1:0", f"unix:{path}"])
    assert len(server.addresses) == 2, server.log
    assert f"unix:{path}" in server.addresses
    assert server.get("/").body == b"hello"
    conn = UnixHTTPConnection(str(path))
    try:
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"hello"
    finally:
        conn.close()


def test_port_env_sets_default_bind(start_server) -> None:
    port = free_port()
    server = start_server("basic:app", binds=[], env={"PORT": str(port)})
    assert server.addresses == [f"http://0.0.0.0:{port}"], server.log
    conn = RawConn.tcp("127.0.0.1", port)
    with conn:
        conn.send(http_request("/"))
        resp = conn.response()
    assert resp.status == 200 and resp.body == b"hello"


def test_default_bind_is_localhost_8000(start_server) -> None:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", 8000))
        except OSError:
            pytest.skip("port 8000 is in use here")
    server = start_server("basic:app", binds=[])
    assert server.addresses == ["http://127.0.0.1:8000"], server.log


def test_bind_in_use_fails_cleanly() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("-b", f"127.0.0.1:{port}", "--pythonpath", str(APPS_DIR), "basic:app",
                         timeout=60)
    assert result.returncode != 0
    assert_no_crash_output(result.stderr)
    assert str(port) in result.stderr, result.stderr


@pytest.mark.parametrize("args", [
    ["--threads", "many", "basic:app"],
    ["--log-level", "loud", "basic:app"],
    ["-b", "127.0.0.1:notaport", "basic:app"],
    ["--keep-alive", "-3", "basic:app"],
    [],  # no APP at all
], ids=["threads-not-a-number", "unknown-log-level", "bad-bind", "negative-keep-alive",
        "no-app"])
def test_bad_options_are_usage_errors(args: list[str]) -> None:
    result = run_cli("--pythonpath", str(APPS_DIR), *args)
    assert result.returncode != 0, result
    assert_no_crash_output(result.stderr)
    assert result.stderr.strip(), "no message for a usage error"


# ---------------------------------------------------------------------- app loading

@pytest.mark.parametrize(("spec", "body"), [
    ("basic:app", b"hello"),
    ("basic", b"application"),
    ("basic:make_app()", b"hello"),
    ("basic:make_app('hi', suffix='!')", b"hi!"),
    ("basic:make_app(greeting=\"hey\")", b"hey"),
    ("pkg.sub.application", b"from pkg.sub"),
    ("pkg.sub:application", b"from pkg.sub"),
    ("pkg.sub", b"from pkg.sub"),
], ids=["module-callable", "module-alone", "factory", "factory-args", "factory-kwarg",
        "twisted-dotted", "package-colon", "package-module-alone"])
def test_app_forms(start_server, spec: str, body: bytes) -> None:
    server = start_server(spec)
    reply = server.get("/")
    assert reply.status == 200
    assert reply.body == body


BAD_APPS = [
    # spec, text the message must contain, exit code 4 required
    ("ferrocorn_no_such_module:app", "ferrocorn_no_such_module", True),
    ("basic:no_such_attribute", "no_such_attribute", True),
    ("basic:not_callable", "not_callable", True),
    ("raising_import:app", "raising_import", True),
    ("ferrocorn_no_such_module", "ferrocorn_no_such_module", True),
    ("pkg.sub.no_such_attribute", "no_such_attribute", False),
    ("broken_dependency:app", "ferrocorn_tests_no_such_dependency", False),
    ("syntax_error:app", "syntax_error", False),
    ("basic:broken_factory()", "broken_factory", False),
    ("basic:make_app(", "basic:make_app(", False),
    ("exits_on_import:app", "exits_on_import", False),
]


@pytest.mark.parametrize(("spec", "names", "code4"), BAD_APPS,
                         ids=[spec for spec, _, _ in BAD_APPS])
def test_bad_app_exits_with_one_line_error(spec: str, names: str, code4: bool) -> None:
    started = time.monotonic()
    result = run_cli("-b", "127.0.0.1:0", "--pythonpath", str(APPS_DIR), spec, timeout=30)
    elapsed = time.monotonic() - started
    out = result.stderr
    assert result.returncode != 0, f"exit code 0 for a bad APP {spec!r}:\n{out}"
    if code4:
        assert result.returncode == 4, f"expected exit code 4, got {result.returncode}:\n{out}"
    assert elapsed < 25, "the master kept respawning a worker that cannot load the app"
    assert_no_crash_output(out + result.stdout)
    error_lines = [line for line in out.splitlines() if "Error:" in line]
    assert error_lines, f"no 'Error: ...' line:\n{out}"
    assert any(names in line for line in error_lines), \
        f"the error does not name {names!r}:\n{out}"
    # One line: everything else on stderr is an ordinary log line.
    for line in out.splitlines():
        if line.strip() and "Error:" not in line:
            assert re.match(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[[A-Z]+\] ",
                            line), f"stray output line {line!r} in:\n{out}"


def test_chdir(start_server, tmp_path: Path) -> None:
    app_dir = tmp_path / "project"
    app_dir.mkdir()
    (app_dir / "chdir_target_app.py").write_text(
        "import os\n"
        "def app(environ, start_response):\n"
        "    body = os.getcwd().encode()\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain'),\n"
        "                              ('Content-Length', str(len(body)))])\n"
        "    return [body]\n")
    server = start_server("chdir_target_app:app", "--chdir", str(app_dir), pythonpath=False)
    reply = server.get("/")
    assert reply.status == 200
    assert Path(reply.body.decode()).resolve() == app_dir.resolve()


def test_pythonpath_comma_separated(start_server, tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    second.mkdir()
    (first / "pythonpath_helper.py").write_text("VALUE = b'helper from dir one'\n")
    (second / "pythonpath_app.py").write_text(
        "from pythonpath_helper import VALUE\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain'),\n"
        "                              ('Content-Length', str(len(VALUE)))])\n"
        "    return [VALUE]\n")
    server = start_server("pythonpath_app:app", "--pythonpath", f"{first},{second}",
                          pythonpath=False)
    assert server.get("/").body == b"helper from dir one"


# ---------------------------------------------------------------------- threads

def _concurrent_gets(server: Server, paths: list[str]) -> list[tuple[int, bytes]]:
    results: list[tuple[int, bytes] | BaseException | None] = [None] * len(paths)

    def one(i: int, path: str) -> None:
        try:
            reply = server.get(path)
            results[i] = (reply.status, reply.body)
        except BaseException as exc:  # noqa: BLE001 - reported below
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i, p), daemon=True)
               for i, p in enumerate(paths)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for r in results:
        assert isinstance(r, tuple), r
    return results  # type: ignore[return-value]


def test_threads_serve_requests_concurrently(start_server) -> None:
    server = start_server("concurrency:barrier(4)", "--threads", "4")
    results = _concurrent_gets(server, ["/"] * 4)
    assert results == [(200, b"met")] * 4


def _app_threads(pid: int) -> int:
    """Threads of process `pid` that are app threads (named ferrocorn-app-N)."""
    names = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except OSError:  # the thread ended meanwhile
            continue
    return sum(name.startswith("ferrocorn-app") for name in names)


def test_app_threads_start_when_requests_need_them(start_server) -> None:
    server = start_server("concurrency:barrier(4)", "--threads", "6")
    (worker,) = server.worker_pids()
    assert _app_threads(worker) == 0  # no request yet: no thread
    assert _concurrent_gets(server, ["/"] * 4) == [(200, b"met")] * 4
    assert 4 <= _app_threads(worker) <= 6
    # Another burst reuses them: never more than --threads.
    assert _concurrent_gets(server, ["/"] * 4) == [(200, b"met")] * 4
    assert 4 <= _app_threads(worker) <= 6


def test_threads_one_serialises_requests(start_server) -> None:
    server = start_server("concurrency:tracker()", "--threads", "1")
    results = _concurrent_gets(server, ["/work"] * 3)
    assert results == [(200, b"done")] * 3
    assert server.get("/max").body == b"1"


# ---------------------------------------------------------------------- logging

def test_log_level_error_hides_info(tmp_path: Path) -> None:
    path = tmp_path / "quiet.sock"
    server = Server("responses:app", "--log-level", "error", binds=[f"unix:{path}"])
    server.spawn()
    try:
        def serves() -> bool:
            if not path.exists():
                assert server.running(), server.log
                return False
            conn = UnixHTTPConnection(str(path), timeout=2)
            try:
                conn.request("GET", "/health")
                return conn.getresponse().status == 200
            except OSError:
                return False
            finally:
                conn.close()

        wait_for(serves, 15, 0.05, "the quiet server to serve")
        conn = UnixHTTPConnection(str(path))
        conn.request("GET", "/raise/before?marker=quiet")
        assert conn.getresponse().status == 500
        conn.close()
        server.wait_log(r"\[ERROR\]")
        assert "[INFO]" not in server.log, server.log
    finally:
        server.stop()


def test_log_level_debug_serves(start_server) -> None:
    server = start_server("basic:app", "--log-level", "debug")
    assert server.get("/").status == 200
    assert "[INFO]" in server.log


# ---------------------------------------------------------------------- keep-alive option

def test_keep_alive_option_closes_idle_connections(start_server) -> None:
    server = start_server("basic:app", "--keep-alive", "1")
    with server.connect() as conn:
        conn.send(http_request("/"))
        assert conn.response().status == 200
        started = time.monotonic()
        conn.assert_closed(timeout=8)
        idle = time.monotonic() - started
    assert 0.5 <= idle < 5, f"idle connection closed after {idle:.2f}s with --keep-alive 1"


# ---------------------------------------------------------------------- signals

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_exits_zero(signum: int) -> None:
    with running_server("basic:app") as server:
        assert server.get("/").status == 200
        server.signal(signum)
        assert server.wait_exit() == 0, server.log
        assert "panicked" not in server.log


def test_sigterm_closes_idle_keep_alive_connections_at_once() -> None:
    """A graceful stop does not wait out the keep-alive time of idle connections: they are
    closed as the stop begins, and the worker exits well before --keep-alive or
    --graceful-timeout would end it."""
    with running_server("basic:app", "--keep-alive", "60", "--graceful-timeout", "30") as server:
        conns = [server.connect(timeout=10) for _ in range(3)]
        try:
            for c in conns:
                c.send(http_request("/"))
                assert c.response().status == 200
            started = time.monotonic()
            server.signal(signal.SIGTERM)
            for c in conns:
                c.assert_closed(timeout=10)
            assert server.wait_exit() == 0, server.log
            assert time.monotonic() - started < 8, server.log
        finally:
            for c in conns:
                c.close()


def test_sigterm_lets_inflight_request_finish(tmp_path: Path) -> None:
    started, go = tmp_path / "started", tmp_path / "go"
    with running_server("echo:app") as server:
        conn = server.connect()
        with conn:
            conn.send(http_request(
                f"/?mode=wait_then_read&started={started}&go={go}", method="POST",
                body=b"in flight"))
            wait_for(started.exists, 10, message="the app to be called")
            mark = server.mark()
            server.signal(signal.SIGTERM)
            # The master has the signal before the app finishes: it logs that it handled it
            # (Gunicorn: "Handling signal: term").
            server.wait_log(r"Handling signal: SIGTERM", since=mark, timeout=5)
            go.write_text("go")
            resp = conn.response("POST")
        assert resp.status == 200
        assert resp.json()["body"] == "in flight"
        assert server.wait_exit() == 0, server.log


def test_burst_larger_than_the_queue_is_served_whole(start_server) -> None:
    """64 requests at once against one app thread (a queue of 4): every one is answered.
    Senders waiting for room in the queue once lost their wake-up and hung."""
    server = start_server("basic:app", "--threads", "1", "--no-inline")
    for _ in range(5):  # bounded: the lost wake-up showed in most bursts
        conns = [server.connect(timeout=10) for _ in range(64)]
        try:
            for c in conns:
                c.send(http_request("/"))
            for c in conns:
                assert c.response().status == 200
        finally:
            for c in conns:
                c.close()
