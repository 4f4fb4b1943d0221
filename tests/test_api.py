"""The programmatic API: ferrocorn.serve() and ferrocorn.WSGIServer, each run in a subprocess
as a program that starts its own server would."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from support import APPS_DIR, Server, clean_env, wait_for

PROGRAM = """\
    import sys
    sys.path.insert(0, {apps!r})
    import ferrocorn
    from basic import make_app

    app = make_app("from the api")
    {call}
    print("returned", code, flush=True)
"""


class ApiServer(Server):
    """A Python program calling the API, watched like a `ferrocorn` process."""

    def __init__(self, script: Path, tmp: Path) -> None:
        super().__init__("", binds=["127.0.0.1:0"], cwd=tmp, pythonpath=False)
        self.script = script

    def command(self) -> list[str]:
        return [sys.executable, str(self.script)]


def program(tmp_path: Path, call: str) -> ApiServer:
    script = tmp_path / "serve_it.py"
    script.write_text(textwrap.dedent(PROGRAM).format(apps=str(APPS_DIR), call=call))
    return ApiServer(script, tmp_path)


@pytest.mark.parametrize(
    "call",
    [
        'code = ferrocorn.serve(app, bind="127.0.0.1:0", workers=2, threads=2)',
        'code = ferrocorn.serve(app, ("127.0.0.1", 0), workers=2, threads=2)',
        "code = ferrocorn.WSGIServer(('127.0.0.1', 0), app, workers=2, threads=2).serve_forever()",
    ],
    ids=["serve-str", "serve-tuple", "wsgiserver"],
)
def test_serves_until_ctrl_c_then_returns_zero(tmp_path: Path, call: str) -> None:
    server = program(tmp_path, call).start()
    try:
        assert server.get("/").body == b"from the api"
        wait_for(lambda: len(server.worker_pids()) == 2, message="2 workers")
        server.signal(signal.SIGINT)
        assert server.wait_exit() == 0
    finally:
        server.stop()
    assert "returned 0" in server.stdout
    assert "Traceback" not in server.log


def test_settings_are_validated_like_the_command_line(tmp_path: Path) -> None:
    script = tmp_path / "bad.py"
    script.write_text(textwrap.dedent(PROGRAM).format(
        apps=str(APPS_DIR), call='code = ferrocorn.serve(app, "127.0.0.1:0", workers="lots")'))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=clean_env(),
                          capture_output=True, text=True, timeout=30)
    assert "returned 1" in proc.stdout
    assert "lots" in proc.stderr


def test_sigterm_stops_gracefully(tmp_path: Path) -> None:
    server = program(tmp_path, 'code = ferrocorn.serve(app, "127.0.0.1:0")').start()
    try:
        assert server.get("/").status == 200
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0
    finally:
        server.stop()
    assert "returned 0" in server.stdout
