"""Instructions per request in user space, counted by callgrind: steadier than req/s or CPU time
on a shared machine, and comparable between servers.

The server runs under ``valgrind --tool=callgrind`` (ferrocorn with one worker; bjoern as it
is) and is sent a fixed number of keep-alive requests, twice: once few, once many. The
difference of the two totals over the difference of the counts leaves start-up and shutdown
out. With ``--top`` it also prints the functions that cost the most per request.

    .bench-venv/bin/python bench/instructions.py                  # ferrocorn, hello
    .bench-venv/bin/python bench/instructions.py --server bjoern --app hello:app
    .bench-venv/bin/python bench/instructions.py --top 30
    .bench-venv/bin/python bench/instructions.py --app body_reads:app --path /read --body 65536
    PYTHONPATH=/tmp/old .bench-venv/bin/python bench/instructions.py   # another build of
                                                   # the ferrocorn package, copied to /tmp/old

Needs valgrind (``apt-get install valgrind``). The counts exclude the kernel.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from run import free_port  # bench/run.py, beside this script

BENCH = Path(__file__).resolve().parent
APPS = BENCH / "apps"
VENV = BENCH.parent / ".venv" / "bin"
CONNECTIONS = 8
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"


def wait_ready(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode} before answering")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(REQUEST)
                if s.recv(64).startswith(b"HTTP/1.1 "):
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not answer within its start-up time")


def post(path: str, size: int) -> bytes:
    """A request for ``path``: a GET, or a POST of ``size`` bytes of 63-byte lines."""
    if not size:
        return REQUEST.replace(b"GET / ", f"GET {path} ".encode(), 1)
    line = b"l" * 63 + b"\n"
    body = (line * (size // len(line) + 1))[:size]
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\n"
            f"Content-Type: text/plain\r\nContent-Length: {size}\r\n\r\n").encode() + body


def send(port: int, count: int, request: bytes = REQUEST) -> None:
    """`count` requests over CONNECTIONS keep-alive connections, each read to its end."""

    def one_connection(n: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            buf = b""
            for _ in range(n):
                s.sendall(request)
                while True:
                    end = buf.find(b"\r\n\r\n")
                    if end >= 0:
                        m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", buf[:end + 2])
                        size = end + 4 + (int(m.group(1)) if m else 0)
                        if len(buf) >= size:
                            buf = buf[size:]
                            break
                    chunk = s.recv(65536)
                    if not chunk:
                        raise SystemExit("the server closed a connection mid-run")
                    buf += chunk

    threads = [threading.Thread(target=one_connection, args=(count // CONNECTIONS,))
               for _ in range(CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def command(server: str, app: str, port: int) -> list[str]:
    if server == "ferrocorn":
        # A long --timeout: under valgrind an app like FastAPI takes minutes to import.
        return [str(VENV / "python"), str(VENV / "ferrocorn"), "-w", "1", "--threads", "64",
                "--timeout", "900",
                "--log-level", "warning", "-b", f"127.0.0.1:{port}", app]
    return [sys.executable, str(BENCH / "bjoern_serve.py"), app, str(port)]


def profile(server: str, app: str, requests: int, out: Path,
            request: bytes = REQUEST, start_timeout: float = 120) -> Path:
    """Runs the server under callgrind for `requests` requests; returns the serving process's
    profile (a ferrocorn worker's, not its master's)."""
    port = free_port()
    cmd = ["valgrind", "--tool=callgrind", "--trace-children=yes", *command(server, app, port)]
    # Started in `out`, where callgrind writes each process's profile; the app is found
    # through PYTHONPATH (after any path already there: a build to compare can go first).
    paths = [p for p in (os.environ.get("PYTHONPATH"), str(APPS)) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    proc = subprocess.Popen(cmd, cwd=out, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, proc, time.monotonic() + start_timeout)
        send(port, requests, request)
    finally:
        proc.send_signal(signal.SIGINT if server == "bjoern" else signal.SIGTERM)
        proc.wait(timeout=120)
    profiles = list(out.glob("callgrind.out.*"))
    if not profiles:
        raise SystemExit("callgrind wrote no profile")
    # The serving process is the one that ran the most instructions.
    return max(profiles, key=total)


def total(profile: Path) -> int:
    for line in profile.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    return 0


def per_function(profile: Path) -> dict[str, int]:
    out = subprocess.run(["callgrind_annotate", "--threshold=100", str(profile)],
                         capture_output=True, text=True, check=True).stdout
    costs: dict[str, int] = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\S.*)", line)
        if m and "PROGRAM TOTALS" not in line:
            costs[m.group(2)] = int(m.group(1).replace(",", ""))
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=["ferrocorn", "bjoern"], default="ferrocorn")
    parser.add_argument("--app", default="hello:app", help="an app of bench/apps")
    parser.add_argument("--requests", type=int, default=4000,
                        help="requests counted (sent on top of a first, smaller run)")
    parser.add_argument("--top", type=int, default=0, help="also list the costliest functions")
    parser.add_argument("--path", default="/", help="the request's path")
    parser.add_argument("--body", type=int, default=0,
                        help="POST a body of this many bytes (text lines) instead of a GET")
    parser.add_argument("--start-timeout", type=float, default=120,
                        help="seconds the server may take to start under valgrind (an app "
                        "importing FastAPI takes minutes on a busy machine)")
    parser.add_argument("--keep", type=Path, help="copy the larger run's profile here (for "
                        "callgrind_annotate --inclusive=yes, or kcachegrind)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    few = max(CONNECTIONS, args.requests // 5 // CONNECTIONS * CONNECTIONS)
    many = few + args.requests // CONNECTIONS * CONNECTIONS
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        request = post(args.path, args.body)
        small = profile(args.server, args.app, few, Path(a), request, args.start_timeout)
        large = profile(args.server, args.app, many, Path(b), request, args.start_timeout)
        n = many - few
        if args.keep:
            shutil.copy(large, args.keep)
        print(f"{args.server} {args.app}: {(total(large) - total(small)) / n:,.0f} "
              f"instructions per request (user space; {few} and {many} requests)")
        if args.top:
            before, after = per_function(small), per_function(large)
            rows = sorted(((after.get(k, 0) - before.get(k, 0)) / n, k)
                          for k in set(before) | set(after))
            for cost, name in reversed(rows[-args.top:]):
                print(f"{cost:9,.0f}  {name[:140]}")


if __name__ == "__main__":
    main()
