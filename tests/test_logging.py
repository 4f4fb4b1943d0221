"""The access log (Gunicorn's format atoms, JSON lines), the error log file, captured output,
and reopening both on USR1 (logrotate)."""

from __future__ import annotations

import base64
import json
import re
import signal
from pathlib import Path

from support import Server, free_port, http_request, wait_for

APP = "hostile_app:app"
TIME = r"\[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\]"


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def wait_lines(path: Path, count: int) -> list[str]:
    return wait_for(lambda: len(lines(path)) >= count and lines(path), timeout=10,
                    message=f"{count} access log lines in {path}")


def test_default_format_matches_gunicorn_byte_for_byte(start_server, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    server = start_server(APP, "--access-logfile", str(log))
    auth = base64.b64encode(b"alice:secret").decode()
    with server.connect() as conn:
        conn.send(http_request("/hello?x=1", headers=[("User-Agent", "probe/1.0"),
                                                       ("Referer", "http://ref.example/"),
                                                       ("Authorization", f"Basic {auth}")]))
        assert conn.response().status == 200
        conn.send(http_request("/pid", version="HTTP/1.0"))
        pid_body = conn.response().body
    got = wait_lines(log, 2)
    first = re.fullmatch(rf'127\.0\.0\.1 - alice {TIME} "GET /hello\?x=1 HTTP/1\.1" 200 13 '
                         r'"http://ref\.example/" "probe/1\.0"', got[0])
    assert first, got[0]
    assert re.fullmatch(rf'127\.0\.0\.1 - - {TIME} "GET /pid HTTP/1\.0" 200 {len(pid_body)} '
                        r'"-" "-"', got[1]), got[1]


def test_custom_atoms(start_server, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    fmt = ("%(m)s|%(U)s|%(q)s|%(H)s|%(s)s|%(B)s|%(b)s|%({x-request-id}i)s|%({content-type}o)s|"
           "%({REMOTE_ADDR}e)s|%({HTTP_X_REQUEST_ID}e)s|%(p)s|%(D)s|%(L)s|%(T)s")
    server = start_server(APP, "--access-logfile", str(log), "--access-logformat", fmt)
    with server.connect() as conn:
        conn.send(http_request("/caf%C3%A9?a=b", headers=[("X-Request-Id", "r-42")]))
        assert conn.response().status == 200
    (line,) = wait_lines(log, 1)
    parts = line.split("|")
    assert parts[:11] == ["GET", "/café", "a=b", "HTTP/1.1", "200", "13", "13", "r-42",
                          "text/plain", "127.0.0.1", "r-42"]
    assert parts[11] == f"<{server.worker_pids()[0]}>"
    micros, decimal, seconds = int(parts[12]), float(parts[13]), int(parts[14])
    assert 0 < micros < 5_000_000 and abs(decimal - micros / 1e6) < 1e-5 and seconds == 0


def test_json_lines(start_server, tmp_path: Path) -> None:
    log = tmp_path / "access.jsonl"
    server = start_server(APP, "--access-logfile", str(log), "--access-log-json")
    assert server.get("/hello?z=9").status == 200
    (line,) = wait_lines(log, 1)
    entry = json.loads(line)
    assert entry["method"] == "GET" and entry["path"] == "/hello" and entry["query"] == "z=9"
    assert entry["status"] == 200 and entry["bytes"] == 13
    assert entry["remote_addr"] == "127.0.0.1" and entry["protocol"] == "HTTP/1.1"
    assert isinstance(entry["duration_us"], int)


def test_stdout_access_log(start_server) -> None:
    server = start_server(APP, "--access-logfile", "-")
    assert server.get("/hello").status == 200
    wait_for(lambda: '"GET /hello HTTP/1.1" 200 13' in server.stdout, message="a stdout line")


def test_bad_format_is_refused_at_start(tmp_path: Path) -> None:
    server = Server(APP, "--access-logfile", str(tmp_path / "a.log"),
                    "--access-logformat", "%(nope)s")
    server.spawn()
    assert server.wait_exit() == 2
    assert "unknown access log atom %(nope)s" in server.log


def spawn_on_port(app: str, *args: str) -> Server:
    """A server whose error log goes to a file: its port is chosen here, not read from stderr."""
    port = free_port()
    server = Server(app, *args, binds=[f"127.0.0.1:{port}"])
    server.host, server.port = "127.0.0.1", port
    server.url = f"http://127.0.0.1:{port}"
    server.spawn()

    def answers() -> bool:
        try:
            return server.get("/").status > 0
        except OSError:
            return False

    try:
        wait_for(answers, timeout=15, message="the server to answer")
    except AssertionError:
        server.stop()
        raise
    return server


def test_usr1_reopens_access_and_error_logs(tmp_path: Path) -> None:
    access, errors = tmp_path / "access.log", tmp_path / "error.log"
    server = spawn_on_port(APP, "-w", "2", "--access-logfile", str(access),
                           "--error-logfile", str(errors))
    try:
        assert "Listening at" in errors.read_text()
        wait_for(lambda: len(server.worker_pids()) == 2, message="2 workers")
        assert server.get("/hello").status == 200
        wait_lines(access, 1)
        access.rename(tmp_path / "access.log.1")
        errors.rename(tmp_path / "error.log.1")
        server.signal(signal.SIGUSR1)
        wait_for(errors.exists, message="the master to reopen its error log")
        for _ in range(200):  # bounded: until a reopened worker has logged a line
            assert server.get("/hello").status == 200
            if lines(access):
                break
        assert lines(access), "no line in the reopened access log"
    finally:
        server.stop()


def test_capture_output_sends_prints_to_the_error_log(tmp_path: Path) -> None:
    errors = tmp_path / "error.log"
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "noisy.py").write_text(
        "import sys\n"
        "def app(environ, start_response):\n"
        "    print('printed by the app')\n"
        "    sys.stderr.write('written to stderr\\n')\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'ok']\n")
    server = spawn_on_port("noisy:app", "--pythonpath", str(app_dir), "--error-logfile",
                           str(errors), "--capture-output")
    try:
        wait_for(lambda: "printed by the app" in errors.read_text()
                 and "written to stderr" in errors.read_text(), message="captured output")
        assert "Listening at" in errors.read_text()
        assert "printed by the app" not in server.stdout
    finally:
        server.stop()


def gunicorn_style_logconfig(errors: Path, access: Path) -> dict:
    """A logconfig_dict as Gunicorn users write it: handlers on gunicorn.error/access."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(name)s %(levelname)s %(message)s"}},
        "handlers": {
            "errors": {"class": "logging.FileHandler", "filename": str(errors),
                       "formatter": "plain"},
            "access": {"class": "logging.FileHandler", "filename": str(access),
                       "formatter": "plain"},
        },
        "loggers": {
            "gunicorn.error": {"handlers": ["errors"], "level": "INFO", "propagate": False},
            "gunicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
    }


def test_logconfig_dict_from_a_gunicorn_config_file(tmp_path: Path) -> None:
    errors, access = tmp_path / "errors.log", tmp_path / "access.log"
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(f"logconfig_dict = {gunicorn_style_logconfig(errors, access)!r}\n")
    server = spawn_on_port(APP, "-w", "2", "-c", str(conf))
    try:
        wait_for(lambda: "gunicorn.error INFO Booting worker" in errors.read_text(),
                 message="the error log through Python's logging")
        assert "gunicorn.error INFO Listening at: http://127.0.0.1" in errors.read_text()
        assert server.get("/hello?via=logging").status == 200
        line = wait_for(lambda: next((x for x in lines(access) if "via=logging" in x), None),
                        message="the access line through Python's logging")
        assert re.fullmatch(rf'gunicorn\.access INFO 127\.0\.0\.1 - - {TIME} '
                            r'"GET /hello\?via=logging HTTP/1\.1" 200 13 "-" "[^"]*"', line), line
    finally:
        server.stop()


def test_logconfig_dict_on_the_command_line(tmp_path: Path) -> None:
    errors = tmp_path / "errors.log"
    config = {"version": 1,
              "handlers": {"f": {"class": "logging.FileHandler", "filename": str(errors)}},
              "loggers": {"ferrocorn.error": {"handlers": ["f"], "level": "DEBUG"}}}
    server = spawn_on_port(APP, "--logconfig-dict", json.dumps(config))
    try:
        wait_for(lambda: "Booting worker" in errors.read_text(), message="ferrocorn.error lines")
        assert "Booting worker" not in server.log, "the error log went to Python, not stderr"
    finally:
        server.stop()


def test_bad_logconfig_dict_is_a_clear_error(tmp_path: Path) -> None:
    for bad, expect in [("{not json", "--logconfig-dict: JSONDecodeError: Expecting property"),
                        ('{"version": 1, "handlers": {"h": {"class": "no.such.Handler"}}}',
                         "--logconfig-dict: ValueError: Unable to configure handler 'h'")]:
        server = Server(APP, "--logconfig-dict", bad)
        server.spawn()
        assert server.wait_exit() != 0
        assert expect in server.log, server.log
        assert "Traceback" not in server.log and "panicked" not in server.log
