"""The examples of docs/migrating-from-uwsgi.md run: every ``ferrocorn`` command and config
file in it passes ``--check-config`` (valid settings, the app imports) against a scratch
project standing for /srv/myproject, and the uwsgi-protocol command serves a request."""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import textwrap
from pathlib import Path

from support import Server, clean_env, ferrocorn_bin, parse_responses

DOC = Path(__file__).resolve().parent.parent / "docs" / "migrating-from-uwsgi.md"
FENCE = re.compile(r"```(\w+)\n(.*?)```", re.S)


def blocks(kind: str) -> list[str]:
    return [body for lang, body in FENCE.findall(DOC.read_text()) if lang == kind]


def commands() -> list[tuple[dict[str, str], list[str]]]:
    """Each shell example: its leading VAR=value assignments and its arguments."""
    out = []
    for body in blocks("sh"):
        words = shlex.split(body.replace("\\\n", " "))
        env = {}
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        assert words[0] == "ferrocorn", body
        out.append((env, words[1:]))
    return out


def project(tmp: Path) -> Path:
    """A scratch /srv/myproject: a Django-like package and a wsgi-file app."""
    root = tmp / "myproject"
    (root / "myproject").mkdir(parents=True)
    (root / "myproject" / "__init__.py").write_text("")
    (root / "myproject" / "wsgi.py").write_text(textwrap.dedent("""\
        import os

        # As Django's get_wsgi_application() does: the settings module must be named.
        assert os.environ["DJANGO_SETTINGS_MODULE"] == "myproject.settings"


        def application(environ, start_response):
            body = environ["PATH_INFO"].encode()
            start_response("200 OK", [("Content-Type", "text/plain"),
                                      ("Content-Length", str(len(body)))])
            return [body]
        """))
    (root / "app.py").write_text("from myproject.wsgi import application as app\n")
    return root


def localise(args: list[str], root: Path, sock: Path) -> list[str]:
    return [a.replace("/srv/myproject", str(root)).replace("/run/myproject.sock", str(sock))
            for a in args]


def check(args: list[str], cwd: Path, env: dict[str, str]) -> None:
    run = subprocess.run([ferrocorn_bin(), *args, "--check-config"], cwd=cwd,
                         env=clean_env(env), capture_output=True, timeout=60)
    assert run.returncode == 0, (args, run.stderr.decode()[-2000:])


def test_every_command_and_config_file_checks(tmp_path: Path) -> None:
    root = project(tmp_path)
    sock = tmp_path / "app.sock"
    found = commands()
    assert len(found) >= 3, "the guide lost its examples"
    for env, args in found:
        if args == ["-c", "ferrocorn.conf.py"]:
            continue  # below, with the config file written out
        # The http-socket example needs the DJANGO_SETTINGS_MODULE its app asserts.
        env = {"DJANGO_SETTINGS_MODULE": "myproject.settings", **env}
        check(localise(args, root, sock), root, env)
    (conf,) = [b for b in blocks("python") if b.startswith("# ferrocorn.conf.py")]
    (root / "ferrocorn.conf.py").write_text(
        conf.replace("/srv/myproject", str(root)).replace("/run/myproject.sock", str(sock)))
    # The config file sets DJANGO_SETTINGS_MODULE itself (uWSGI's env =).
    check(["-c", "ferrocorn.conf.py"], root, {})


def test_the_uwsgi_example_serves(tmp_path: Path) -> None:
    root = project(tmp_path)
    sock = tmp_path / "app.sock"
    env, args = next((e, a) for e, a in commands() if "--protocol" in a)
    args = localise(args, root, sock)
    binds = [args[i + 1] for i, a in enumerate(args) if a == "-b"]
    server = Server("", *args, binds=[], env=env, cwd=root, pythonpath=False,
                    expect_listening=len(binds))
    server.start()
    try:
        # chmod-socket = 660 through --umask 0o117.
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
        from test_uwsgi import packet, request_vars, send_packet
        data = send_packet(server, packet(request_vars("/hello")))
        (resp,) = parse_responses(data)
        assert resp.status == 200 and resp.body == b"/hello"
    finally:
        server.stop()
