"""--reload: an edited module is picked up (inotify), a syntax error shows its traceback and
leaves the old code serving, and --reload-extra-file changes restart the workers too."""

from __future__ import annotations

import textwrap
from pathlib import Path

from support import Server, wait_for

MODULE = """\
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [{body!r}]
"""


def write_module(path: Path, body: bytes) -> None:
    # Written to a temporary file and renamed over the module, as many editors save.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(textwrap.dedent(MODULE).format(body=body))
    tmp.replace(path)


def body_is(server: Server, expected: bytes) -> bool:
    return server.get("/").body == expected


def test_edited_module_is_served_and_broken_edit_keeps_old_code(tmp_path: Path) -> None:
    module = tmp_path / "live.py"
    write_module(module, b"v1")
    server = Server("live:app", "--reload", "--pythonpath", str(tmp_path), cwd=tmp_path).start()
    try:
        assert body_is(server, b"v1")
        write_module(module, b"v2")
        wait_for(lambda: body_is(server, b"v2"), timeout=15, message="v2 to be served")

        mark = server.mark()
        module.write_text("def app(:\n")
        log = server.wait_log("the previous workers go on serving", since=mark, timeout=15)
        assert "SyntaxError" in log and "Traceback (most recent call last)" in log
        assert 'live.py", line 1' in log
        assert body_is(server, b"v2")
        assert server.running()

        write_module(module, b"v3")
        wait_for(lambda: body_is(server, b"v3"), timeout=15, message="v3 after the fix")
    finally:
        server.stop()


def test_extra_file_change_restarts_workers(tmp_path: Path) -> None:
    extra = tmp_path / "settings.toml"
    extra.write_text("a = 1\n")
    server = Server("basic:app", "--reload", "--reload-extra-file", str(extra),
                    cwd=tmp_path).start()
    try:
        first = wait_for(lambda: server.worker_pids(), message="a worker")
        extra.write_text("a = 2\n")
        wait_for(lambda: server.worker_pids() and server.worker_pids() != first, timeout=15,
                 message="a new worker")
        assert server.get("/").status == 200
        # The worker's line may still be in the pipe when the new pid shows in /proc.
        server.wait_log("settings.toml changed")
    finally:
        server.stop()
