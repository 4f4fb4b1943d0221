"""``ferrocorn ctl``: talk to a running server's control socket.

``ferrocorn ctl show workers`` (or ``python -m ferrocorn.ctl show workers``) sends one line of
words to the master's unix socket and prints its one-line JSON answer as a table, or as JSON
with ``--json``. Commands: ``show workers``, ``show stats``, ``show config``,
``worker add [N]``, ``worker remove [N]``, ``worker kill PID``, ``reload``,
``shutdown [--graceful]``, ``help``.

Exit status: 0 when the server did what was asked, 1 when it refused (the error is printed on
stderr), 2 when it could not be reached.
"""

from __future__ import annotations

import json
import os
import socket
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

__all__ = ["CtlError", "default_socket", "main", "request"]

#: Largest answer read from the server.
MAX_ANSWER = 16 * 1024 * 1024


class CtlError(Exception):
    """The control socket could not be reached, or its answer was not understood."""


def default_socket() -> str:
    """Where a server puts its control socket when ``--control-socket`` is not given."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "ferrocorn.ctl")
    return "ferrocorn.ctl"


def request(path: str, words: Sequence[str], timeout: float = 5.0) -> dict[str, Any]:
    """Send one command to the control socket at ``path``; return the decoded answer."""
    line = " ".join(words).encode() + b"\n"
    chunks: list[bytes] = []
    size = 0
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(line)
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if chunks[-1].endswith(b"\n") or size > MAX_ANSWER:
                    break
    except OSError as e:
        raise CtlError(f"cannot talk to the control socket {path}: {e.strerror or e}") from e
    try:
        answer = json.loads(b"".join(chunks))
    except ValueError as e:
        raise CtlError(f"the control socket {path} sent no valid answer") from e
    if not isinstance(answer, dict):
        raise CtlError(f"the control socket {path} sent no valid answer")
    return answer


def _mib(n: object) -> str:
    return f"{int(n) / (1024 * 1024):.1f}" if isinstance(n, (int, float)) else "?"


def _age(seconds: object) -> str:
    if not isinstance(seconds, (int, float)):
        return "?"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def format_answer(words: Sequence[str], data: Any) -> str:
    """A human-readable rendering of a command's answer."""
    command = " ".join(words[:2])
    if command == "show workers":
        rows = [
            [str(w.get("pid")), _age(w.get("age")), str(w.get("requests")),
             str(w.get("connections")), f"{w.get('busy_threads')}/{w.get('threads')}",
             _mib(w.get("rss")), str(w.get("state"))]
            for w in data.get("workers", [])
        ]
        table = _table(["PID", "AGE", "REQUESTS", "CONNS", "BUSY", "RSS_MIB", "STATE"], rows)
        return f"{table}\n{len(rows)} worker(s) running, {data.get('target')} configured"
    if command == "show stats":
        rows = []
        for key, value in data.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k}={v}" for k, v in value.items())
            elif key.endswith("rss"):
                value = f"{_mib(value)} MiB"
            elif key == "uptime":
                value = _age(value)
            rows.append([key, str(value)])
        return _table(["STAT", "VALUE"], rows)
    if command == "show config":
        rows = [[k, json.dumps(v)] for k, v in data.items()]
        return _table(["SETTING", "VALUE"], rows)
    if isinstance(data, dict):
        return "\n".join(f"{k}: {v}" for k, v in data.items())
    return str(data)


USAGE = """usage: ferrocorn ctl [-s PATH] [--json] [--timeout SECONDS] COMMAND...

commands:
  show workers          pid, age, requests served, open connections, busy threads, RSS, state
  show stats            the server's totals
  show config           every setting's effective value
  worker add [N]        N more workers (default 1)
  worker remove [N]     N fewer workers (default 1; at least one stays)
  worker kill PID       stop one worker gracefully (the master starts another)
  reload                new workers with the reloaded config, then the old ones stop
  shutdown [--graceful] stop the server (--graceful: let requests in flight finish)
  help                  the commands the server knows

options:
  -s, --socket, --control-socket PATH
                        the control socket [default: $XDG_RUNTIME_DIR/ferrocorn.ctl, else
                        ./ferrocorn.ctl]
  --json                print the server's JSON answer instead of a table
  --timeout SECONDS     how long to wait for the server [default: 5]
"""


#: The options that take a value, and what they set. ``--control-socket`` is the server's own
#: name for the socket, so the command that started a server names it for ctl too.
_VALUE_OPTIONS = {"-s": "socket", "--socket": "socket", "--control-socket": "socket",
                  "--timeout": "timeout"}


def _usage_error(message: str) -> int:
    sys.stderr.write(f"ferrocorn ctl: {message}\n{USAGE}")
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ferrocorn ctl`` with ``argv`` (no program name); return the exit status.

    Options come before the command (``--json`` may come anywhere); an unknown option there is
    a usage error (exit 2). After the command, words starting with ``-`` are the command's own
    (``shutdown --graceful``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    path = default_socket()
    as_json = False
    timeout = 5.0
    words: list[str] = []
    while args:
        arg = args.pop(0)
        if arg == "--json":
            as_json = True
            continue
        if words or not arg.startswith("-") or arg == "-":
            words.append(arg)
            continue
        if arg in ("-h", "--help"):
            sys.stdout.write(USAGE)
            return 0
        name, has_value, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        option = _VALUE_OPTIONS.get(name)
        if option is None:
            return _usage_error(f"unknown option {name}")
        if not has_value:
            if not args:
                return _usage_error(f"{name} needs a value")
            value = args.pop(0)
        if option == "socket":
            path = value
        else:
            try:
                timeout = float(value)
            except ValueError:
                return _usage_error("--timeout takes a number of seconds")
    if not words:
        sys.stderr.write(USAGE)
        return 2
    try:
        answer = request(path, words, timeout)
    except CtlError as e:
        sys.stderr.write(f"ferrocorn ctl: {e}\n")
        return 2
    if as_json:
        sys.stdout.write(json.dumps(answer, indent=2) + "\n")
        return 0 if answer.get("ok") else 1
    if not answer.get("ok"):
        sys.stderr.write(f"ferrocorn ctl: {answer.get('error', 'refused')}\n")
        return 1
    sys.stdout.write(format_answer(words, answer.get("data")) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
