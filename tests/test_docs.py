"""docs/migrating-from-gunicorn.md's examples, run (issue 20): its Gunicorn command lines parse
as ferrocorn's, its gunicorn.conf.py is read without a warning and serves with its hooks, and
its `ferrocorn ctl` commands work against a live master.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from support import Server, clean_env, ferrocorn_bin, wait_for

DOC = Path(__file__).resolve().parent.parent / "docs" / "migrating-from-gunicorn.md"


def block(tag: str) -> str:
    m = re.search(rf"<!-- test: {tag} -->\n```\w+\n(.*?)\n```", DOC.read_text(), re.S)
    assert m, f"no {tag} block in {DOC}"
    return m.group(1)


def commands(tag: str) -> list[list[str]]:
    lines = [line[2:] for line in block(tag).splitlines() if line.startswith("$ ")]
    assert lines
    return [shlex.split(line) for line in lines]


def test_command_lines_parse(tmp_path: Path) -> None:
    for argv in commands("commands"):
        assert argv[0] == "ferrocorn"
        done = subprocess.run([ferrocorn_bin(), *argv[1:], "--print-config"],
                              capture_output=True, text=True, timeout=30, env=clean_env(),
                              cwd=tmp_path)
        assert done.returncode == 0, (argv, done.stderr)
        assert "WARN" not in done.stderr, (argv, done.stderr)
        assert 'app = "myproject.wsgi:application"' in done.stdout


def test_the_config_file_is_read_whole_and_serves(tmp_path: Path) -> None:
    source = block("config-file")
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(source)
    done = subprocess.run([ferrocorn_bin(), "--print-config"], capture_output=True, text=True,
                          timeout=30, env=clean_env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", "every setting in the example is known"
    assert 'worker_class = "gthread"' in done.stdout
    assert 'control_socket_mode = "0o600"' in done.stdout
    # Served for real, with a test app, a test address and two workers.
    served = (source.replace('"myproject.wsgi:application"', '"master_app:app"')
              .replace('["0.0.0.0:8000"]', '["127.0.0.1:0"]')
              .replace("multiprocessing.cpu_count() * 2 + 1", "2"))
    conf.write_text(served)
    server = Server("", "-c", str(conf), "--control-socket", str(tmp_path / "ctl"), binds=[],
                    cwd=tmp_path)
    server.start()
    try:
        server.assert_serving()
        server.wait_log(r"(worker \d+ booted[\s\S]*){2}")
        assert "Using worker: threads (4 per worker)" in server.log
    finally:
        server.stop()
    assert re.search(r"worker \d+ exiting", server.log)


def test_ctl_commands(tmp_path: Path) -> None:
    path = tmp_path / "ferrocorn.ctl"
    server = Server("master_app:app", "-w", "2", "--control-socket", str(path))
    server.start()
    try:
        for argv in commands("ctl"):
            assert argv[:2] == ["ferrocorn", "ctl"]
            done = subprocess.run([ferrocorn_bin(), "ctl", "-s", str(path), *argv[2:]],
                                  capture_output=True, text=True, timeout=30, env=clean_env())
            assert done.returncode == 0, (argv, done.stderr)
            assert done.stdout.strip()
            if argv[2:4] == ["worker", "add"]:
                wait_for(lambda: len(server.worker_pids()) == 4, message="4 workers")
        assert server.wait_exit() == 0
    finally:
        server.stop()
