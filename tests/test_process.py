"""The process options, each run for real (issue 27): --daemon, --user/--group (with an
interpreter the user cannot read, and the unix socket handed to that user), --reuse-port,
--max-requests-jitter, systemd's LISTEN_FDS and --backlog.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import (
    APPS_DIR,
    RawConn,
    Server,
    clean_env,
    ferrocorn_bin,
    free_port,
    http_request,
    tcp_sockets,
    wait_for,
)
from support.procfs import alive, children, socket_inodes, status_ids
from support.skips import needs_root, needs_tool

NOBODY = 65534  # nobody / nogroup on Debian


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder every user may read (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="ferrocorn-proc-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------------- daemon


def test_daemon_detaches_and_writes_its_pid(tmp_path: Path) -> None:
    """-D: the command returns at once (exit 0), the master lives on in a session of its own
    with stdin and stdout on /dev/null and its log in --error-logfile, its pid in --pid,
    serving; TERM stops it and removes the pid file."""
    pidfile = tmp_path / "ferrocorn.pid"
    log = tmp_path / "error.log"
    port = free_port()
    cmd = [ferrocorn_bin(), "-D", "-p", str(pidfile), "--error-logfile", str(log),
           "-b", f"127.0.0.1:{port}", "--pythonpath", str(APPS_DIR), "--no-control-socket",
           "master_app:app"]
    started = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=clean_env(), start_new_session=True)
    daemon = 0
    try:
        # Detached: the command itself exits while the server goes on.
        out, err = started.communicate(timeout=20)
        assert started.returncode == 0, err
        daemon = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(),
                              message="the daemon's pid file"))
        assert daemon != started.pid and alive(daemon)
        assert os.getsid(daemon) not in (started.pid, os.getsid(0)), "a session of its own"
        assert status_ids(daemon, "PPid") != [started.pid]
        # stdin and stdout on /dev/null; stderr stays the --error-logfile.
        assert [os.readlink(f"/proc/{daemon}/fd/{fd}") for fd in (0, 1, 2)] == \
            ["/dev/null", "/dev/null", str(log)]
        wait_for(lambda: f"Listening at: http://127.0.0.1:{port} ({daemon})" in log.read_text(),
                 message="the daemon's Listening line")
        with RawConn.tcp("127.0.0.1", port) as conn:
            conn.send(http_request("/"))
            assert int(conn.response().body) in children(daemon), "served by its worker"
        os.kill(daemon, signal.SIGTERM)
        wait_for(lambda: not alive(daemon), timeout=20, message="the daemon to stop")
        assert not pidfile.exists(), "the daemon removes its pid file"
    finally:
        if daemon and alive(daemon):
            os.kill(daemon, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(started.pid, signal.SIGKILL)


# ------------------------------------------------------------------------------ user, group


def _unreadable_interpreter(private: Path, shared: Path) -> tuple[list[str], dict[str, str]]:
    """This Python, with its standard library and ferrocorn's package reached through
    ``private`` (a 0700 folder of root's): as pyenv's interpreters under /root are, for any
    other user. PYTHONHOME points into it; the real files are linked from there."""
    private.mkdir(mode=0o700)
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    (private / "lib").mkdir()
    (private / "lib" / version).symlink_to(sysconfig.get_paths()["stdlib"])
    (private / "site").symlink_to(Path(sysconfig.get_paths()["purelib"]))
    python = os.path.realpath(sys.executable)
    env = {"PYTHONHOME": str(private), "PYTHONPATH": str(private / "site"),
           "PYTHONNOUSERSITE": "1"}
    return [python, "-m", "ferrocorn"], env


@needs_root
@needs_tool("setpriv")
@pytest.mark.parametrize("app,flags", [("whoami:app", ()), ("whoami:asgi", ("-k", "asgi"))],
                         ids=["wsgi", "asgi"])
def test_user_and_group_with_an_interpreter_the_user_cannot_read(
        tmp_path: Path, shared_dir: Path, app: str, flags: tuple[str, ...]) -> None:
    """-u nobody -g nogroup: each worker runs as nobody:nogroup (no other groups) and serves,
    the master stays root. The interpreter's files are in a folder nobody cannot read, so what
    the worker needs from the standard library is imported before it switches ("No module
    named 'importlib'" otherwise; 'inspect' to tell the app's interface, 'asyncio' for an ASGI
    app's event loop)."""
    shutil.copy(APPS_DIR / "whoami.py", shared_dir / "whoami.py")
    command, env = _unreadable_interpreter(tmp_path / "private", shared_dir)
    # The interpreter really is out of nobody's reach.
    denied = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                             "--clear-groups", "ls", str(tmp_path / "private" / "lib")],
                            capture_output=True, timeout=20)
    assert denied.returncode != 0, "the private folder must be unreadable to nobody"
    server = Server(app, "-u", "nobody", "-g", "nogroup", "-w", "2", *flags,
                    "--no-control-socket", env=env, cwd=shared_dir, pythonpath=False)
    server.command = lambda: [  # type: ignore[method-assign]
        *command, "-b", "127.0.0.1:0", *server.args, server.app]
    server.start()
    try:
        assert "No module named" not in server.log and server.running(), server.log
        uid, gid, groups, pid = server.get("/").body.decode().split()
        assert (int(uid), int(gid), groups) == (NOBODY, NOBODY, str(NOBODY))
        workers = wait_for(lambda: len(server.worker_pids()) == 2 and server.worker_pids(),
                           message="two workers")
        assert int(pid) in workers
        # Each worker switches once it has booted (real, effective, saved and file-system ids).
        wait_for(lambda: all(status_ids(w, "Uid") == status_ids(w, "Gid") == [NOBODY] * 4
                             for w in workers), message="both workers as nobody:nogroup")
        assert status_ids(server.pid, "Uid")[0] == 0, "the master stays root"
    finally:
        server.stop()


@needs_root
@needs_tool("curl")
@needs_tool("setpriv")
def test_a_unix_socket_is_handed_to_the_user(shared_dir: Path) -> None:
    """docs/deploy-nginx.md: with --user/--group the socket ferrocorn creates belongs to that
    user, so with --umask 077 (mode 0700) the user's processes (nginx's workers, in the doc)
    connect and others cannot."""
    sock = shared_dir / "app.sock"
    server = Server("whoami:app", "-u", "nobody", "-g", "nogroup", "--umask", "077",
                    "--no-control-socket", binds=[f"unix:{sock}"])
    server.start()
    try:
        st = sock.stat()
        assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
        assert st.st_mode & 0o777 == 0o700, oct(st.st_mode)

        def curl_as(uid: int) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}",
                                   "--clear-groups", "curl", "-sS", "--max-time", "10",
                                   "--unix-socket", str(sock), "http://localhost/"],
                                  capture_output=True, text=True, timeout=30)

        as_nobody = curl_as(NOBODY)
        assert as_nobody.returncode == 0, as_nobody.stderr
        assert as_nobody.stdout.startswith(f"{NOBODY} {NOBODY} ")
        other = pwd.getpwnam("daemon").pw_uid
        refused = curl_as(other)
        assert refused.returncode == 7, refused  # curl: could not connect
    finally:
        server.stop()
    assert not sock.exists()


# ------------------------------------------------------------------------------- reuse-port


def _listeners(port: int) -> list:
    return [s for s in tcp_sockets() if s.local_port == port and s.state == "0A"]  # LISTEN


def test_reuse_port_spreads_connections_over_the_workers_sockets(start_server) -> None:
    """--reuse-port: besides the shared socket, each worker listens on one of its own for the
    same address, and the kernel spreads new connections over them. With the workers stopped
    (SIGSTOP), connections wait in the accept queues, which /proc/net/tcp shows per socket:
    both workers' own sockets get some."""
    server = start_server("master_app:app", "-w", "2", "--reuse-port")
    workers = wait_for(lambda: len(server.worker_pids()) == 2 and server.worker_pids(),
                       message="two workers")
    listening = wait_for(lambda: len(_listeners(server.port)) == 3 and _listeners(server.port),
                         message="three listening sockets: the shared one and one per worker")
    master_own = socket_inodes(server.pid)
    own = {w: {s.inode for s in listening if s.inode in socket_inodes(w)} - master_own
           for w in workers}
    assert all(len(inodes) == 1 for inodes in own.values()), own
    for w in workers:
        os.kill(w, signal.SIGSTOP)
    conns = []
    try:
        for _ in range(60):
            conns.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
        queued = wait_for(lambda: (q := {s.inode: s.rx_queue for s in _listeners(server.port)})
                          and sum(q.values()) == 60 and q, message="60 connections queued")
        for w, inodes in own.items():
            (inode,) = inodes
            assert queued[inode] >= 5, f"worker {w}'s own socket got {queued[inode]} of 60"
    finally:
        for w in workers:
            os.kill(w, signal.SIGCONT)
        for c in conns:
            c.close()
    server.assert_serving()


# ----------------------------------------------------------------------- max-requests-jitter


def test_max_requests_jitter_spreads_the_restarts(start_server) -> None:
    """--max-requests 5 --max-requests-jitter 40: each worker restarts after 5 + a random 0..=40
    of its own requests, so successive workers' limits differ (all equal would be 1 in 41^4)."""
    server = start_server("master_app:app", "--max-requests", "5", "--max-requests-jitter", "40")
    limits: list[int] = []
    for _ in range(400):
        reply = server.get("/")
        assert reply.status == 200
        limits = [int(n) for n in re.findall(r"Autorestarting worker after (\d+) requests",
                                             server.log)]
        if len(limits) >= 5:
            break
    assert len(limits) >= 5, server.log[-2000:]
    assert all(5 <= n <= 45 for n in limits), limits
    assert len(set(limits)) > 1, f"every worker restarted after the same count: {limits}"


# ---------------------------------------------------------------------------- LISTEN_FDS


def test_systemd_socket_activation_serves_the_socket_passed_as_fd_3() -> None:
    """systemd passes the listening socket as fd 3 with LISTEN_FDS=1 and LISTEN_PID=the
    server's pid; with no -b the server serves that socket (the test's own, on a port only
    the test knows) and binds nothing else."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    inode = str(os.fstat(sock.fileno()).st_ino)
    fd = sock.fileno()

    server = Server("master_app:app", "--no-control-socket", binds=[], fds={3: fd})
    plain = server.command
    # LISTEN_PID must be the server's own pid: a shell sets it to its own, then execs.
    server.command = lambda: [  # type: ignore[method-assign]
        "sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"', "sh", *plain()]
    server.spawn()
    sock.close()
    try:
        server.wait_ready()
        assert server.addresses == [f"http://127.0.0.1:{port}"], server.addresses
        assert os.readlink(f"/proc/{server.pid}/fd/3") == f"socket:[{inode}]"
        server.wait_worker()
        assert server.get("/").status == 200
    finally:
        server.stop()


# ---------------------------------------------------------------------------------- backlog


def test_backlog_sets_the_accept_queue(start_server) -> None:
    """--backlog 7: the listening socket's queue holds 7 (+1, the kernel's way) connections
    while no worker accepts; more are not taken (their handshake is not completed)."""
    server = start_server("master_app:app", "--backlog", "7")
    (worker,) = server.worker_pids()
    os.kill(worker, signal.SIGSTOP)
    pending = []
    try:
        for _ in range(20):
            s = socket.socket()
            s.setblocking(False)
            err = s.connect_ex(("127.0.0.1", server.port))
            assert err in (0, errno.EINPROGRESS), err
            pending.append(s)

        def queued() -> int:
            (row,) = _listeners(server.port)
            return row.rx_queue

        def states() -> list[str]:  # our side of each connection
            ours = {s.getsockname()[1] for s in pending}
            return sorted(r.state for r in tcp_sockets()
                          if r.remote_port == server.port and r.local_port in ours)

        # 8 handshakes completed and queued; the other SYNs are dropped while it is full.
        wait_for(lambda: queued() == 8 and states() == ["01"] * 8 + ["02"] * 12,
                 message="the accept queue to fill: 8 established, 12 still SYN_SENT")
    finally:
        os.kill(worker, signal.SIGCONT)
        for s in pending:
            s.close()
    server.assert_serving()
