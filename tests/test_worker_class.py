"""`-k` / `--worker-class` (issue 20): Gunicorn command lines and config files that name a worker
class run unchanged. sync, gthread, gevent, eventlet and tornado are served by ferrocorn's
threads; ASGI classes (Gunicorn's asgi, Uvicorn's) select ASGI; unknown names stop the start
with a clear error.
"""

from __future__ import annotations

import http.client
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from support import APPS_DIR, Server, clean_env, ferrocorn_bin


def print_config(*args: str, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> dict[str, str]:
    done = subprocess.run([ferrocorn_bin(), *args, "--print-config", "basic:app"],
                          capture_output=True, text=True, timeout=30, env=clean_env(env),
                          cwd=cwd)
    assert done.returncode == 0, done.stderr
    return dict(line.split(" = ", 1) for line in done.stdout.splitlines() if " = " in line)


@pytest.mark.parametrize(("args", "threads", "shown"), [
    ([], "4", '"gthread"'),
    (["-k", "sync"], "1", '"sync"'),
    (["-k", "sync", "--threads", "8"], "8", '"sync"'),
    (["--threads", "8", "-k", "sync"], "8", '"sync"'),
    (["-k", "gthread"], "4", '"gthread"'),
    (["-k", "gthread", "--threads", "8"], "8", '"gthread"'),
    (["-k", "gevent"], "1000", '"gevent"'),
    (["-k", "gevent", "--worker-connections", "50"], "50", '"gevent"'),
    (["-k", "gevent", "--worker-connections", "5000"], "1024", '"gevent"'),
    (["-k", "gevent", "--threads", "16"], "16", '"gevent"'),
    (["-k", "eventlet"], "1000", '"eventlet"'),
    (["-k", "tornado"], "4", '"tornado"'),
    (["--worker-class", "gunicorn.workers.ggevent.GeventWorker"], "1000",
     '"gunicorn.workers.ggevent.GeventWorker"'),
    (["--worker-class=gunicorn.workers.sync.SyncWorker"], "1",
     '"gunicorn.workers.sync.SyncWorker"'),
    (["-k", "egg:gunicorn#gthread"], "4", '"egg:gunicorn#gthread"'),
    (["-k", "gevent_pywsgi"], "1000", '"gevent_pywsgi"'),
])
def test_classes_and_their_threads(args: list[str], threads: str, shown: str) -> None:
    config = print_config(*args)
    assert config["threads"] == threads
    assert config["worker_class"] == shown


def test_config_file_and_environment(tmp_path: Path) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text('worker_class = "sync"\nworkers = 3\n')
    config = print_config("-c", str(conf))
    assert (config["worker_class"], config["threads"]) == ('"sync"', "1")
    # The file names the class, the command line the threads.
    conf.write_text('worker_class = "gevent"\nworker_connections = 300\n')
    assert print_config("-c", str(conf))["threads"] == "300"
    assert print_config("-c", str(conf), "--threads", "2")["threads"] == "2"
    config = print_config(env={"GUNICORN_CMD_ARGS": "-k sync"})
    assert config["threads"] == "1"
    # gunicorn.conf.py is read from the working directory without -c, with no warning.
    conf.write_text('worker_class = "sync"\n')
    done = subprocess.run([ferrocorn_bin(), "--print-config", "basic:app"], capture_output=True,
                          text=True, timeout=30, env=clean_env(), cwd=tmp_path)
    assert "threads = 1" in done.stdout
    assert "worker_class" not in done.stderr


@pytest.mark.parametrize("name", [
    "uvicorn.workers.UvicornWorker",
    "uvicorn.workers.UvicornH11Worker",
    "uvicorn_worker.UvicornWorker",
    "asgi",
    "gunicorn.workers.gasgi.ASGIWorker",
])
def test_asgi_classes_select_asgi(name: str) -> None:
    done = subprocess.run([ferrocorn_bin(), "-k", name, "--print-config", "asgi_app:app"],
                          capture_output=True, text=True, timeout=30, env=clean_env())
    assert done.returncode == 0, done.stderr
    assert f'worker_class = "{name}"' in done.stdout
    # Served as ASGI whatever --interface auto would say (tests/test_asgi.py serves them).
    conflict = subprocess.run([ferrocorn_bin(), "-k", name, "--interface", "wsgi",
                               "--check-config", "basic:app"],
                              capture_output=True, text=True, timeout=30, env=clean_env())
    assert conflict.returncode == 1
    assert "contradict" in conflict.stderr


@pytest.mark.parametrize("name", ["meinheld", "gunicorn.workers.gfoo.FooWorker", ""])
def test_unknown_classes_list_the_accepted_ones(name: str) -> None:
    done = subprocess.run([ferrocorn_bin(), "-k", name, "basic:app"], capture_output=True,
                          text=True, timeout=30, env=clean_env())
    assert done.returncode == 2, done.stderr
    assert "unknown worker class" in done.stderr
    assert "sync, gthread, gevent" in done.stderr


def test_a_bad_class_in_a_config_file_names_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text('worker_class = "meinheld.gmeinheld.MeinheldWorker"\n')
    done = subprocess.run([ferrocorn_bin(), "-c", str(conf), "basic:app"],
                          capture_output=True, text=True, timeout=30, env=clean_env())
    assert done.returncode == 1
    assert f"config file {conf}" in done.stderr
    assert "unknown worker class" in done.stderr


def _concurrent(server: Server, n: int, path: str) -> tuple[float, list[int]]:
    """`n` requests at once; the wall time and the statuses."""
    statuses: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            with lock:
                statuses.append(resp.status)
        finally:
            conn.close()

    threads = [threading.Thread(target=one) for _ in range(n)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return time.monotonic() - began, statuses


def test_gevent_serves_a_thread_per_connection() -> None:
    server = Server("master_app:app", "-k", "gevent", "--worker-connections", "64")
    server.start()
    try:
        assert re.search(r"Worker class gevent: served by threads, one per connection "
                         r"\(64 per worker, from --worker-connections", server.log), server.log
        assert "Using worker: threads (64 per worker)" in server.log
        # 48 requests that each wait 1 s on "I/O" finish together, not in 12 rounds of 4.
        took, statuses = _concurrent(server, 48, "/slow?1")
        assert statuses == [200] * 48
        assert took < 5, took
    finally:
        server.stop()


def test_sync_serves_one_request_at_a_time_per_worker() -> None:
    server = Server("master_app:app", "-k", "sync")
    server.start()
    try:
        assert "Using worker: threads (1 per worker)" in server.log
        took, statuses = _concurrent(server, 3, "/slow?0.4")
        assert statuses == [200] * 3
        assert took >= 1.1, f"one thread: the three requests ran one after another ({took:.2f}s)"
    finally:
        server.stop()


def test_gunicorn_command_line_runs_unchanged() -> None:
    """The issue's example, `ferrocorn -k gthread --threads 8 myapp:app`."""
    server = Server("master_app:app", "-k", "gthread", "--threads", "8", "-w", "2",
                    "--pythonpath", str(APPS_DIR))
    server.start()
    try:
        assert "Using worker: threads (8 per worker)" in server.log
        server.assert_serving()
    finally:
        server.stop()
