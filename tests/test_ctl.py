"""The control socket and `ferrocorn ctl` (issue 20): every command against a live master, and
the socket's refusals (a peer of another uid, oversized and unknown requests, stuck clients),
after each of which the master keeps serving.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import Server, clean_env, ferrocorn_bin, wait_for
from support.skips import needs_root

#: The socket's request limit (crates/ferrocorn/src/master/control.rs).
MAX_REQUEST = 4096


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A directory every uid may traverse (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="ferrocorn-ctl-"))
    path.chmod(0o755)
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


def ctl(path: Path, *words: str, as_json: bool = True,
        module: bool = False) -> subprocess.CompletedProcess[str]:
    """`ferrocorn ctl` (or `python -m ferrocorn.ctl`) against the socket at `path`."""
    if module:
        cmd = [sys.executable, "-m", "ferrocorn.ctl"]
    else:
        cmd = [ferrocorn_bin(), "ctl"]
    cmd += ["-s", str(path)] + (["--json"] if as_json else []) + list(words)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20, env=clean_env())


def ask(path: Path, *words: str) -> dict:
    """The data of a command that must succeed."""
    done = ctl(path, *words)
    assert done.returncode == 0, (done.stdout, done.stderr)
    answer = json.loads(done.stdout)
    assert answer["ok"] is True, answer
    return answer["data"]


def raw(path: Path, payload: bytes, timeout: float = 5.0) -> dict:
    """Sends raw bytes, returns the decoded one-line answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(payload)
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def start(sockdir: Path, *args: str, workers: int = 2) -> tuple[Server, Path]:
    path = sockdir / "ferrocorn.ctl"
    server = Server("master_app:app", "-w", str(workers), "--control-socket", str(path), *args)
    server.start()
    return server, path


def test_show_workers_stats_and_config(sockdir: Path) -> None:
    server, path = start(sockdir)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == 0o600, oct(mode)
        assert f"Control socket at: {path}" in server.log
        for _ in range(6):
            server.assert_serving()
        pids = set(wait_for(lambda: len(server.worker_pids()) == 2 and server.worker_pids()))

        def served() -> dict | None:
            data = ask(path, "show", "workers")
            total = sum(w["requests"] for w in data["workers"])
            return data if total >= 6 else None

        data = wait_for(served, message="the workers' request counts")
        assert {w["pid"] for w in data["workers"]} == pids
        assert data["target"] == 2
        for w in data["workers"]:
            assert w["state"] == "ready"
            assert w["rss"] > 1024 * 1024
            assert w["threads"] == 4
            assert w["age"] >= 0
            assert {"connections", "busy_threads"} <= w.keys()

        table = ctl(path, "show", "workers", as_json=False)
        assert table.returncode == 0, table.stderr
        header = table.stdout.splitlines()[0].split()
        assert header == ["PID", "AGE", "REQUESTS", "CONNS", "BUSY", "RSS_MIB", "STATE"]
        for pid in pids:
            assert str(pid) in table.stdout

        stats = ask(path, "show", "stats")
        assert stats["master_pid"] == server.master_pid
        assert stats["workers"] == 2 and stats["target_workers"] == 2
        assert stats["requests"] >= 6
        assert stats["recycled"] == {"memory": 0, "lifetime": 0}
        text = ctl(path, "show", "stats", as_json=False, module=True)
        assert text.returncode == 0 and "master_pid" in text.stdout, text

        config = ask(path, "show", "config")
        assert config["workers"] == "2"
        assert config["control_socket"] == str(path)
        assert config["app"] == "master_app:app"
        assert config["preload"] is False
        assert "workers" in ctl(path, "show", "config", as_json=False).stdout
    finally:
        server.stop()
    assert not path.exists(), "the master removes its socket when it stops"


def test_busy_threads_and_connections_are_reported(sockdir: Path) -> None:
    server, path = start(sockdir, workers=1)
    try:
        conn = server.http(timeout=20)
        conn.request("GET", "/slow?3")
        data = wait_for(
            lambda: (d := ask(path, "show", "workers"))["workers"][0]["busy_threads"] == 1 and d,
            message="a busy thread")
        assert data["workers"][0]["connections"] >= 1
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        server.stop()


def test_worker_add_remove_and_kill(sockdir: Path) -> None:
    server, path = start(sockdir)
    try:
        assert ask(path, "worker", "add", "2") == {"previous": 2, "workers": 4}
        wait_for(lambda: len(server.worker_pids()) == 4, message="4 workers")
        assert ask(path, "worker", "remove") == {"previous": 4, "workers": 3}
        wait_for(lambda: len(server.worker_pids()) == 3, message="3 workers")
        assert ask(path, "worker", "remove", "10")["workers"] == 1, "at least one stays"
        wait_for(lambda: len(server.worker_pids()) == 1, message="1 worker")
        wait_for(lambda: ask(path, "show", "workers")["workers"][0]["state"] == "ready",
                 message="the worker ready")

        victim = server.worker_pids()[0]
        assert ask(path, "worker", "kill", str(victim)) == {"killed": victim}
        wait_for(lambda: (p := server.worker_pids()) and victim not in p, message="a new worker")
        server.assert_serving()
        assert f"Stopping worker (pid:{victim}) as asked on the control socket" in server.log

        refused = ctl(path, "worker", "kill", "1", as_json=False)
        assert refused.returncode == 1
        assert "no worker with pid 1" in refused.stderr
        bad = ctl(path, "worker", "add", "many", as_json=False)
        assert bad.returncode == 1 and "not a worker count" in bad.stderr
    finally:
        server.stop()


def test_reload_replaces_every_worker(sockdir: Path) -> None:
    server, path = start(sockdir)
    try:
        before = set(wait_for(lambda: len(server.worker_pids()) == 2 and server.worker_pids()))
        assert ask(path, "reload") == {"status": "reloading"}
        wait_for(lambda: (p := set(server.worker_pids())) and len(p) == 2 and not p & before,
                 timeout=20, message="two new workers")
        server.assert_serving()
        assert ask(path, "show", "stats")["generation"] == 1
    finally:
        server.stop()


@pytest.mark.parametrize("graceful", [True, False])
def test_shutdown(sockdir: Path, graceful: bool) -> None:
    server, path = start(sockdir, workers=1)
    try:
        words = ["shutdown", "--graceful"] if graceful else ["shutdown"]
        assert ask(path, *words) == {"status": "shutting down", "graceful": graceful}
        assert server.wait_exit() == 0
        kind = "graceful" if graceful else "quick"
        assert f"Shutdown ({kind}) asked on the control socket" in server.log
    finally:
        server.stop()
    assert not path.exists()


def test_a_graceful_shutdown_lets_the_request_in_flight_finish(sockdir: Path) -> None:
    server, path = start(sockdir, workers=1)
    try:
        conn = server.http(timeout=20)
        conn.request("GET", "/slow?1.5")
        wait_for(lambda: ask(path, "show", "workers")["workers"][0]["busy_threads"] == 1,
                 message="the request in the app")
        ask(path, "shutdown", "--graceful")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read()
        assert server.wait_exit() == 0
    finally:
        server.stop()


def _as_uid(path: Path, uid: int, payload: bytes) -> tuple[str, str]:
    """Connects to `path` from a forked child running as `uid`; returns (outcome, data)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery, only syscalls, then _exit
        try:
            os.close(read_end)
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                try:
                    s.connect(str(path))
                except OSError as e:
                    os.write(write_end, f"connect:{e.errno}".encode())
                    os._exit(0)
                try:
                    # The server may have answered and closed before this is sent.
                    s.sendall(payload)
                except OSError:
                    pass
                data = b""
                try:
                    while not data.endswith(b"\n"):
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                except OSError as e:
                    data += f"<{e!r}>".encode()
                os.write(write_end, b"answer:" + data)
        except BaseException as e:  # noqa: BLE001 - reported to the parent, which asserts
            os.write(write_end, f"error:{e!r}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    outcome, _, data = b"".join(chunks).decode().partition(":")
    return outcome, data


@needs_root
def test_a_peer_of_another_uid_is_refused(sockdir: Path) -> None:
    # A world-writable socket, so that the connection reaches the server's own check.
    server, path = start(sockdir, "--control-socket-mode", "0666", workers=1)
    try:
        outcome, data = _as_uid(path, 65534, b"shutdown\n")
        assert outcome == "answer", (outcome, data)
        answer = json.loads(data)
        assert answer["ok"] is False
        assert "permission denied" in answer["error"]
        server.wait_log(r"refused a peer running as uid 65534")
        assert server.running()
        server.assert_serving()
        assert ask(path, "show", "stats")["state"] == "running"
    finally:
        server.stop()


@needs_root
def test_the_default_mode_keeps_other_users_out(sockdir: Path) -> None:
    server, path = start(sockdir, workers=1)
    try:
        outcome, data = _as_uid(path, 65534, b"show stats\n")
        assert outcome == "connect", (outcome, data)
        assert int(data) == 13  # EACCES
        server.assert_serving()
    finally:
        server.stop()


def test_oversized_unknown_and_malformed_requests_are_refused(sockdir: Path) -> None:
    server, path = start(sockdir, workers=1)
    try:
        big = raw(path, b"show " + b"x" * (2 * MAX_REQUEST))
        assert big["ok"] is False and "too large" in big["error"]
        long_line = raw(path, b"show " + b"x" * MAX_REQUEST + b"\n")
        assert long_line["ok"] is False and "too large" in long_line["error"]
        unknown = raw(path, b"format disk\n")
        assert unknown["ok"] is False
        assert unknown["error"].startswith('unknown command "format disk"')
        assert "show workers" in unknown["error"]
        binary = raw(path, b"\xff\xfe\n")
        assert binary["ok"] is False and "UTF-8" in binary["error"]
        empty = raw(path, b"\n")
        assert empty["ok"] is False
        # Without the trailing newline, the end of the stream ends the request.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(path))
            s.sendall(b"show stats")
            s.shutdown(socket.SHUT_WR)
            assert json.loads(s.makefile("rb").readline())["ok"] is True
        assert server.running()
        server.assert_serving()
        assert ask(path, "show", "stats")["workers"] == 1
    finally:
        server.stop()


def test_stuck_clients_do_not_hold_the_master(sockdir: Path) -> None:
    server, path = start(sockdir, workers=1)
    stuck = []
    try:
        # A probe that connects and leaves is dropped without a word.
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(str(path))
        probe.close()
        # Silent clients and one stalled halfway through its line.
        for _ in range(3):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(path))
            stuck.append(s)
        stuck[-1].sendall(b"show wor")
        # Answered while the stuck clients are still connected (the master drops them only at
        # their 2 s deadline): measured on the stuck sockets, not against a wall clock. The
        # request is sent directly (no Python process to start).
        assert raw(path, b"show stats\n")["data"]["workers"] == 1
        for s in stuck:
            with pytest.raises(BlockingIOError):
                s.recv(1, socket.MSG_DONTWAIT)  # no EOF yet: still held open
        server.assert_serving()
        # Each stuck client is dropped after its deadline (2 s).
        for s in stuck:
            s.settimeout(10)
            assert s.recv(100) == b""
        server.wait_log("sent no complete request in time")
        wait_for(lambda: server.log.count("sent no complete request in time") >= 3,
                 message="the three stuck clients dropped")
        assert server.log.count("sent no complete request in time") == 3, "not the probe"
        # More clients at once than the master serves: the extras are told so at once.
        crowd = []
        for _ in range(12):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(path))
            crowd.append(s)
        refusals = 0
        for s in crowd:
            s.settimeout(5)
            try:
                s.sendall(b"show stats\n")
            except BrokenPipeError:
                pass  # turned away already: the answer waits in the socket
            line = s.makefile("rb").readline()
            if line and "busy" in json.loads(line).get("error", ""):
                refusals += 1
            s.close()
        assert refusals >= 1
        assert ask(path, "show", "stats")["state"] == "running"
    finally:
        for s in stuck:
            s.close()
        server.stop()


def test_unreachable_socket_is_exit_status_2(sockdir: Path) -> None:
    done = ctl(sockdir / "nobody.ctl", "show", "stats", as_json=False)
    assert done.returncode == 2
    assert "cannot talk to the control socket" in done.stderr


def test_default_path_and_no_control_socket(tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir()
    server = Server("master_app:app", env={"XDG_RUNTIME_DIR": str(runtime)})
    server.start()
    try:
        path = runtime / "ferrocorn.ctl"
        assert path.exists()
        done = subprocess.run([ferrocorn_bin(), "ctl", "--json", "show", "stats"],
                              capture_output=True, text=True, timeout=20,
                              env=clean_env({"XDG_RUNTIME_DIR": str(runtime)}))
        assert json.loads(done.stdout)["data"]["master_pid"] == server.master_pid
        # A second server finds the socket taken: it serves without one, and says so.
        second = Server("master_app:app", env={"XDG_RUNTIME_DIR": str(runtime)})
        second.start()
        try:
            assert "another server is listening there" in second.log
            second.assert_serving()
        finally:
            second.stop()
        assert path.exists(), "the second server left the first one's socket alone"
    finally:
        server.stop()
    assert not path.exists()

    server = Server("master_app:app", "--no-control-socket",
                    env={"XDG_RUNTIME_DIR": str(runtime)})
    server.start()
    try:
        assert not (runtime / "ferrocorn.ctl").exists()
        assert "Control socket at" not in server.log
    finally:
        server.stop()


def test_an_explicit_path_that_is_taken_stops_the_start(sockdir: Path) -> None:
    path = sockdir / "taken.ctl"
    path.write_text("not a socket")
    server = Server("master_app:app", "--control-socket", str(path))
    server.spawn()
    assert server.wait_exit() == 1
    assert "the path exists and is not a socket" in server.log
    assert "Listening at" not in server.log, "stopped before saying it was up"


def test_control_socket_is_an_alias_of_s(sockdir: Path, tmp_path: Path) -> None:
    """`--control-socket PATH` (the server's own flag) names the socket as `-s` does, with a
    server on the default path beside it, so talking to the default socket instead shows."""
    runtime = tmp_path / "run"
    runtime.mkdir()
    env = {"XDG_RUNTIME_DIR": str(runtime)}
    default = Server("master_app:app", "-w", "1", env=env).start()
    named, path = start(sockdir, workers=1)
    try:
        assert (runtime / "ferrocorn.ctl").exists()
        for flags in (["--control-socket", str(path)], [f"--control-socket={path}"],
                      ["--socket", str(path)], ["-s", str(path)]):
            done = subprocess.run([ferrocorn_bin(), "ctl", *flags, "--json", "show", "stats"],
                                  capture_output=True, text=True, timeout=20,
                                  env=clean_env(env))
            assert done.returncode == 0, (flags, done.stdout, done.stderr)
            assert json.loads(done.stdout)["data"]["master_pid"] == named.master_pid, flags
    finally:
        named.stop()
        default.stop()


@pytest.mark.parametrize("argv", [["--sock", "x", "show", "stats"], ["-x", "show", "stats"],
                                  ["--control-socket"], ["--timeout", "soon", "show", "stats"]])
def test_unknown_options_are_a_usage_error(sockdir: Path, tmp_path: Path, argv: list[str]) -> None:
    """An option ctl does not know (or one without its value) is exit status 2 with the usage,
    not words sent to whatever socket is at the default path."""
    runtime = tmp_path / "run"
    runtime.mkdir()
    env = {"XDG_RUNTIME_DIR": str(runtime)}
    server = Server("master_app:app", "-w", "1", env=env).start()
    try:
        done = subprocess.run([ferrocorn_bin(), "ctl", *argv], capture_output=True, text=True,
                              timeout=20, env=clean_env(env))
        assert done.returncode == 2, (done.stdout, done.stderr)
        assert "usage: ferrocorn ctl" in done.stderr and done.stdout == ""
        first = done.stderr.splitlines()[0]
        assert first.startswith("ferrocorn ctl: ") and argv[0] in first, first
    finally:
        server.stop()
