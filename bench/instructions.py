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
    .bench-venv/bin/python bench/instructions.py --ws   # WebSocket echo of 1 KiB text
                                                   # messages (ws_asgi_echo:app, /echo)

With ``--ws`` a "request" is one echoed message: each of the connections opens a WebSocket
(the handshake is counted in both runs, so it drops out of the difference) and sends
``--size`` bytes of text, waits for them back, and sends the next.

Needs valgrind (``apt-get install valgrind``). The counts exclude the kernel.
"""

from __future__ import annotations

import argparse
import base64
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
from collections.abc import Callable
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


def over_connections(one_connection: Callable[[int], None], count: int) -> None:
    """Runs `one_connection(count // CONNECTIONS)` on CONNECTIONS threads at once."""
    threads = [threading.Thread(target=one_connection, args=(count // CONNECTIONS,))
               for _ in range(CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


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

    over_connections(one_connection, count)


def ws_frame(size: int) -> bytes:
    """A masked (client) text frame of `size` bytes of ASCII."""
    payload = (b"0123456789abcdef" * (size // 16 + 1))[:size]
    mask = b"\x37\xfa\x21\x3d"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    if size < 126:
        head = bytes([0x81, 0x80 | size])
    elif size < 65536:
        head = bytes([0x81, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([0x81, 0x80 | 127]) + size.to_bytes(8, "big")
    return head + mask + masked


def ws_echo(port: int, count: int, path: str, size: int) -> None:
    """`count` echoes of `size`-byte text messages over CONNECTIONS WebSockets, one message
    in flight on each; every connection ends with a close frame (1000) and its answer."""
    key = base64.b64encode(os.urandom(16)).decode()
    handshake = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n").encode()
    frame = ws_frame(size)
    echoed = 2 + (2 if 126 <= size < 65536 else 8 if size >= 65536 else 0) + size
    close = bytes([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8])  # code 1000, zero mask

    def read_exactly(s: socket.socket, buf: bytearray, n: int) -> bytes:
        while len(buf) < n:
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("the server closed a WebSocket mid-run")
            buf += chunk
        out = bytes(buf[:n])
        del buf[:n]
        return out

    def one_connection(n: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            s.sendall(handshake)
            buf = bytearray()
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    raise SystemExit("the server closed the connection in the handshake")
                buf += chunk
            end = buf.index(b"\r\n\r\n") + 4
            if not buf.startswith(b"HTTP/1.1 101 "):
                raise SystemExit(f"the handshake got {bytes(buf[:end])!r}")
            del buf[:end]
            for _ in range(n):
                s.sendall(frame)
                read_exactly(s, buf, echoed)
            s.sendall(close)
            read_exactly(s, buf, 2)

    over_connections(one_connection, count)


def command(server: str, app: str, port: int) -> list[str]:
    if server == "ferrocorn":
        # A long --timeout: under valgrind an app like FastAPI takes minutes to import.
        return [str(VENV / "python"), str(VENV / "ferrocorn"), "-w", "1", "--threads", "64",
                "--timeout", "900",
                "--log-level", "warning", "-b", f"127.0.0.1:{port}", app]
    return [sys.executable, str(BENCH / "bjoern_serve.py"), app, str(port)]


def profile(server: str, app: str, requests: int, out: Path,
            request: bytes = REQUEST, start_timeout: float = 120,
            ws: tuple[str, int] | None = None) -> Path:
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
        if ws is not None:
            ws_echo(port, requests, *ws)
        else:
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
    parser.add_argument("--app", help="an app of bench/apps (default hello:app; with --ws "
                        "ws_asgi_echo:app)")
    parser.add_argument("--requests", type=int, default=4000,
                        help="requests counted (sent on top of a first, smaller run)")
    parser.add_argument("--top", type=int, default=0, help="also list the costliest functions")
    parser.add_argument("--path", help="the request's path (default /; with --ws /echo)")
    parser.add_argument("--body", type=int, default=0,
                        help="POST a body of this many bytes (text lines) instead of a GET")
    parser.add_argument("--ws", action="store_true",
                        help="count WebSocket echoes instead of requests (default app "
                        "ws_asgi_echo:app, path /echo)")
    parser.add_argument("--size", type=int, default=1024,
                        help="with --ws: the text message's size in bytes")
    parser.add_argument("--start-timeout", type=float, default=120,
                        help="seconds the server may take to start under valgrind (an app "
                        "importing FastAPI takes minutes on a busy machine)")
    parser.add_argument("--keep", type=Path, help="copy the larger run's profile here (for "
                        "callgrind_annotate --inclusive=yes, or kcachegrind)")
    args = parser.parse_args()
    app = args.app or ("ws_asgi_echo:app" if args.ws else "hello:app")
    path = args.path or ("/echo" if args.ws else "/")
    ws = (path, args.size) if args.ws else None
    unit = "message" if args.ws else "request"
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    few = max(CONNECTIONS, args.requests // 5 // CONNECTIONS * CONNECTIONS)
    many = few + args.requests // CONNECTIONS * CONNECTIONS
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        request = post(path, args.body)
        small = profile(args.server, app, few, Path(a), request, args.start_timeout, ws)
        large = profile(args.server, app, many, Path(b), request, args.start_timeout, ws)
        n = many - few
        if args.keep:
            shutil.copy(large, args.keep)
        print(f"{args.server} {app}: {(total(large) - total(small)) / n:,.0f} "
              f"instructions per {unit} (user space; {few} and {many} {unit}s)")
        if args.top:
            before, after = per_function(small), per_function(large)
            rows = sorted(((after.get(k, 0) - before.get(k, 0)) / n, k)
                          for k in set(before) | set(after))
            for cost, name in reversed(rows[-args.top:]):
                print(f"{cost:9,.0f}  {name[:140]}")


if __name__ == "__main__":
    main()
