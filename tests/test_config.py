"""Config as code: Python config files (Gunicorn's format), *_CMD_ARGS, precedence,
--check-config, --print-config, server hooks, and SIGHUP re-reading the file."""

from __future__ import annotations

import signal
import subprocess
import textwrap
from pathlib import Path

import pytest

from support import APPS_DIR, Server, clean_env, ferrocorn_bin, wait_for


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def run_cli(*args: str, cwd: Path,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ferrocorn_bin(), "--pythonpath", str(APPS_DIR), *args],
        cwd=cwd, env=clean_env(env), capture_output=True, text=True, timeout=30,
    )


def printed(proc: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """--print-config's lines as name -> value text."""
    assert proc.returncode == 0, proc.stderr
    return dict(line.split(" = ", 1) for line in proc.stdout.splitlines())


GUNICORN_CONF = """\
    import multiprocessing  # modules are not settings

    bind = ["127.0.0.1:0"]
    workers = 2
    threads = 3
    keepalive = 7
    timeout = 40
    preload_app = False
    worker_class = "sync"
    worker_tmp_dir = "/dev/shm"
    secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}
    forwarded_allow_ips = "10.0.0.0/8,127.0.0.1"
    wokers = 5
    _private = "not a setting"

    def on_starting(server):
        server.log.info("hook on_starting pid=%s", server.pid)

    def when_ready(server):
        server.log.info("hook when_ready workers=%s", server.num_workers)

    def pre_fork(server, worker):
        server.log.info("hook pre_fork age=%s", worker.age)

    def post_fork(server, worker):
        server.log.info("hook post_fork age=%s pid=%s", worker.age, worker.pid)

    def post_worker_init(worker):
        worker.log.info("hook post_worker_init pid=%s threads=%s", worker.pid, worker.cfg.threads)

    def pre_request(worker, req):
        worker.log.info("hook pre_request %s %s", req.method, req.path)

    def post_request(worker, req, environ, resp):
        worker.log.info("hook post_request %s %s %s", req.path, resp.status_code, resp.sent)

    def worker_exit(server, worker):
        server.log.info("hook worker_exit pid=%s", worker.pid)

    def child_exit(server, worker):
        server.log.info("hook child_exit pid=%s", worker.pid)

    def nworkers_changed(server, new_value, old_value):
        server.log.info("hook nworkers_changed %s -> %s", old_value, new_value)

    def on_reload(server):
        server.log.info("hook on_reload")

    def on_exit(server):
        server.log.info("hook on_exit")
"""


def test_print_config_shows_file_values_under_gunicorn_names(tmp_path: Path) -> None:
    write(tmp_path / "gunicorn.conf.py", GUNICORN_CONF)
    values = printed(run_cli("--print-config", "basic:app", cwd=tmp_path))
    assert values["workers"] == "2"
    assert values["threads"] == "3"
    assert values["keep_alive"] == "7"
    assert values["timeout"] == "40"
    assert values["preload"] == "False"
    assert values["bind"] == '["127.0.0.1:0"]'
    assert values["secure_scheme_headers"] == '"X-FORWARDED-PROTO=https"'
    assert values["forwarded_allow_ips"] == '"10.0.0.0/8,127.0.0.1"'
    assert values["app"] == '"basic:app"'
    assert "max_requests" in values and values["max_requests"] == "0"


def test_unknown_and_ignored_names_are_warned_about(tmp_path: Path) -> None:
    write(tmp_path / "gunicorn.conf.py", GUNICORN_CONF)
    proc = run_cli("--print-config", "basic:app", cwd=tmp_path)
    assert proc.returncode == 0
    assert 'unknown setting "wokers" ignored' in proc.stderr
    assert 'setting "worker_tmp_dir" has no effect' in proc.stderr
    # worker_class is honoured since issue 20 (-k sync, with threads = 3 given).
    assert "worker_class" not in proc.stderr
    assert "_private" not in proc.stderr and "multiprocessing" not in proc.stderr


def test_precedence_command_line_over_env_over_file_over_defaults(tmp_path: Path) -> None:
    conf = write(tmp_path / "app.conf.py", """\
        workers = 3
        threads = 5
        timeout = 50
        max_requests = 9
    """)
    env = {"GUNICORN_CMD_ARGS": "--threads 6 --timeout 60"}
    values = printed(run_cli("-c", str(conf), "--timeout", "70", "--print-config", "basic:app",
                             cwd=tmp_path, env=env))
    assert values["timeout"] == "70"      # command line
    assert values["threads"] == "6"       # environment over file
    assert values["workers"] == "3"       # file over default
    assert values["max_requests"] == "9"  # file
    assert values["graceful_timeout"] == "30"  # default
    # FERROCORN_CMD_ARGS is preferred to GUNICORN_CMD_ARGS when both are set.
    env["FERROCORN_CMD_ARGS"] = "--threads 8"
    values = printed(run_cli("-c", str(conf), "--print-config", "basic:app", cwd=tmp_path, env=env))
    assert values["threads"] == "8"


def test_file_beats_web_concurrency_but_command_line_beats_file(tmp_path: Path) -> None:
    conf = write(tmp_path / "c.py", "workers = 3\n")
    env = {"WEB_CONCURRENCY": "5"}
    assert printed(run_cli("--print-config", "basic:app", cwd=tmp_path, env=env))["workers"] == "5"
    values = printed(run_cli("-c", str(conf), "--print-config", "basic:app", cwd=tmp_path, env=env))
    assert values["workers"] == "3"
    values = printed(run_cli("-c", str(conf), "-w", "2", "--print-config", "basic:app",
                             cwd=tmp_path, env=env))
    assert values["workers"] == "2"


def test_bind_list_comes_whole_from_the_highest_source(tmp_path: Path) -> None:
    conf = write(tmp_path / "c.py", 'bind = ["127.0.0.1:1111", "127.0.0.1:2222"]\n')
    values = printed(run_cli("-c", str(conf), "--print-config", "basic:app", cwd=tmp_path))
    assert values["bind"] == '["127.0.0.1:1111", "127.0.0.1:2222"]'
    values = printed(run_cli("-c", str(conf), "-b", "127.0.0.1:3333", "--print-config", "basic:app",
                             cwd=tmp_path))
    assert values["bind"] == '["127.0.0.1:3333"]'


def test_wsgi_app_from_the_config_file(tmp_path: Path) -> None:
    write(tmp_path / "ferrocorn.conf.py", 'wsgi_app = "basic:app"\n')
    server = Server("", cwd=tmp_path).start()
    try:
        assert server.get("/").body == b"hello"
    finally:
        server.stop()


def test_ferrocorn_conf_is_preferred_to_gunicorn_conf(tmp_path: Path) -> None:
    write(tmp_path / "ferrocorn.conf.py", "threads = 9\n")
    write(tmp_path / "gunicorn.conf.py", "threads = 2\n")
    assert printed(run_cli("--print-config", "basic:app", cwd=tmp_path))["threads"] == "9"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("workers = 'many'\n", "invalid value 'many'"),
        ("raise RuntimeError('config exploded')\n", "config exploded"),
        ("def broken(:\n", "SyntaxError"),
        ("bind = ['nonsense:port:x']\n", "nonsense"),
    ],
    ids=["bad-value", "raises", "syntax-error", "bad-bind"],
)
def test_bad_config_files_fail_with_a_clear_error(tmp_path: Path, text: str, expected: str) -> None:
    conf = write(tmp_path / "bad.conf.py", text)
    proc = run_cli("-c", str(conf), "basic:app", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert expected in proc.stderr
    assert "bad.conf.py" in proc.stderr or "nonsense" in proc.stderr
    assert "panicked" not in proc.stderr


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    proc = run_cli("-c", str(tmp_path / "nope.py"), "basic:app", cwd=tmp_path)
    assert proc.returncode == 1
    assert "nope.py" in proc.stderr


def test_check_config(tmp_path: Path) -> None:
    ok = run_cli("--check-config", "basic:app", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "Config OK" in ok.stdout
    bad_app = run_cli("--check-config", "basic:nope", cwd=tmp_path)
    assert bad_app.returncode == 4
    assert "nope" in bad_app.stderr
    bad_bind = run_cli("--check-config", "-b", "999.1.1.1:x", "basic:app", cwd=tmp_path)
    assert bad_bind.returncode == 1
    no_app = run_cli("--check-config", cwd=tmp_path)
    assert no_app.returncode == 1 and "no APP given" in no_app.stderr


def test_gunicorn_conf_with_hooks_runs_unchanged(tmp_path: Path) -> None:
    write(tmp_path / "gunicorn.conf.py", GUNICORN_CONF)
    server = Server("basic:app", binds=[], cwd=tmp_path).start()
    try:
        wait_for(lambda: len(server.worker_pids()) == 2, message="2 workers")
        log = server.wait_log(r"hook post_worker_init pid=\d+ threads=3")
        assert "hook on_starting pid=" in log and "hook when_ready workers=2" in log
        assert "hook pre_fork age=1" in log and "hook pre_fork age=2" in log
        server.wait_log(r"hook post_fork age=2 pid=\d+")
        reply = server.get("/hooked")
        assert reply.status == 200
        server.wait_log(r"hook pre_request GET /hooked")
        server.wait_log(r"hook post_request /hooked 200 5")
        # One worker more: nworkers_changed.
        server.signal(signal.SIGTTIN)
        server.wait_log(r"hook nworkers_changed 2 -> 3")
        wait_for(lambda: len(server.worker_pids()) == 3, message="3 workers")
        # A worker killed: child_exit in the master.
        victim = server.worker_pids()[0]
        server.signal(signal.SIGTTOU)
        server.wait_log(r"hook child_exit pid=\d+")
    finally:
        server.stop()
    assert "hook worker_exit pid=" in server.log
    assert "hook on_exit" in server.log
    assert victim  # the TTOU above retired one of the workers that existed


def test_a_raising_hook_is_logged_and_the_server_goes_on(tmp_path: Path) -> None:
    write(tmp_path / "ferrocorn.conf.py", """\
        def when_ready(server):
            raise RuntimeError("when_ready exploded")

        def pre_request(worker, req):
            raise ValueError("pre_request exploded")

        def post_fork(server, worker):
            1 / 0
    """)
    server = Server("basic:app", cwd=tmp_path).start()
    try:
        assert server.get("/").body == b"hello"
        assert server.get("/").status == 200
        log = server.wait_log("pre_request exploded")
    finally:
        server.stop()
    assert "Exception in when_ready hook" in log and "when_ready exploded" in log
    assert "Exception in post_fork hook" in log and "ZeroDivisionError" in log
    assert "Traceback (most recent call last)" in log


def test_request_hooks_run_around_an_asgi_app(tmp_path: Path) -> None:
    """Gunicorn's ASGI worker calls pre_request and post_request around each HTTP request;
    so does ferrocorn, with ``req``, the environ and ``resp`` built from the scope and the
    app's messages. The lifespan scope passes through unhooked."""
    write(tmp_path / "gunicorn.conf.py", """\
        def pre_request(worker, req):
            worker.log.info("hook pre_request %s %s?%s", req.method, req.path, req.query)

        def post_request(worker, req, environ, resp):
            worker.log.info("hook post_request %s %s %s %s", req.path, resp.status_code,
                            resp.sent, environ.get("HTTP_X_HOOK"))
    """)
    server = Server("ws_echo_asgi:app", "--interface", "asgi", binds=["127.0.0.1:0"],
                    cwd=tmp_path).start()
    try:
        reply = server.get("/asked?q=1", headers={"X-Hook": "seen"})
        assert reply.status == 404 and reply.body == b"a WebSocket endpoint\n"
        server.wait_log(r"hook pre_request GET /asked\?q=1")
        server.wait_log(r"hook post_request /asked 404 21 seen")
    finally:
        server.stop()
    assert "hooks are WSGI's" not in server.log
    assert server.log.count("hook pre_request") == 1


def test_hup_rereads_the_config_file(tmp_path: Path) -> None:
    conf = write(tmp_path / "ferrocorn.conf.py", """\
        workers = 1
        def on_reload(server):
            server.log.info("hook on_reload")
    """)
    server = Server("basic:app", cwd=tmp_path).start()
    try:
        wait_for(lambda: len(server.worker_pids()) == 1, message="1 worker")
        write(conf, """\
            workers = 2
            def on_reload(server):
                server.log.info("hook on_reload v2")
        """)
        server.signal(signal.SIGHUP)
        server.wait_log("hook on_reload v2")
        wait_for(lambda: len(server.worker_pids()) == 2, message="2 workers after reload")
        # A broken file on the next HUP: the running configuration stays.
        write(conf, "workers = 'x'\n")
        mark = server.mark()
        server.signal(signal.SIGHUP)
        server.wait_log("keeping the running configuration", since=mark)
        assert server.get("/").status == 200
        wait_for(lambda: len(server.worker_pids()) == 2, message="still 2 workers")
    finally:
        server.stop()


def test_hup_with_an_app_that_no_longer_imports_keeps_the_old_workers(tmp_path: Path) -> None:
    module = tmp_path / "shifting.py"
    write(module, """\
        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"v1"]
    """)
    server = Server("shifting:app", "--pythonpath", str(tmp_path), cwd=tmp_path).start()
    try:
        old = wait_for(lambda: server.worker_pids(), message="a worker")
        write(module, "def app(:\n")
        mark = server.mark()
        server.signal(signal.SIGHUP)
        server.wait_log("the previous workers go on serving", since=mark)
        assert server.get("/").body == b"v1"
        assert server.worker_pids() == old
        assert server.running()
    finally:
        server.stop()


def test_worker_abort_hook_runs_after_the_timeout_traceback(tmp_path: Path) -> None:
    write(tmp_path / "ferrocorn.conf.py", """\
        timeout = 2
        def worker_abort(worker):
            worker.log.warning("hook worker_abort pid=%s", worker.pid)
    """)
    server = Server("master_app:app", cwd=tmp_path).start()
    try:
        (worker,) = wait_for(lambda: server.worker_pids(), message="a worker")
        conn = server.connect(timeout=20)
        conn.send(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
        log = server.wait_log(rf"hook worker_abort pid={worker}", timeout=20)
        conn.close()
        # faulthandler's dump of the hung thread comes first.
        assert log.index("in _app") < log.index("hook worker_abort")
        wait_for(lambda: server.worker_pids() and worker not in server.worker_pids(),
                 message="a replacement worker")
        assert server.get("/").status == 200
    finally:
        server.stop()


def test_worker_int_hook_on_quick_stop(tmp_path: Path) -> None:
    write(tmp_path / "ferrocorn.conf.py", """\
        def worker_int(worker):
            worker.log.info("hook worker_int pid=%s", worker.pid)
    """)
    server = Server("basic:app", cwd=tmp_path).start()
    try:
        (worker,) = wait_for(lambda: server.worker_pids(), message="a worker")
        server.signal(signal.SIGINT)
        assert server.wait_exit() == 0
    finally:
        server.stop()
    assert f"hook worker_int pid={worker}" in server.log
