"""Standing connections and hostile clients, at full size: memory per idle connection with
10,000 idle keep-alive connections, request latency while 2,000 idle and 200 slowloris
connections are open, fresh requests while idle and slowloris connections hold every slot of
--worker-connections (the defaults, and 10,000 per worker), and peak memory during a 10 GB
streamed upload.

    .venv/bin/python bench/hostile.py [--idle 10000] [--upload-gb 10] [--only cap]

Runs the installed `ferrocorn` (the one beside this Python) with one worker on 127.0.0.1 and
prints a small table. Not a test: it asserts nothing, it measures.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent.parent / "tests" / "apps"
BIN = str(Path(sys.executable).parent / "ferrocorn")

sys.path.insert(0, str(APP_DIR.parent))
from support.procfs import children, vm_kib  # noqa: E402  (tests/support, the /proc readers)


class Server:
    def __init__(self, *args: str, cap: int | None = 20000) -> None:
        limit = ["--worker-connections", str(cap)] if cap else []
        self.proc = subprocess.Popen(
            [BIN, "-b", "127.0.0.1:0", "--pythonpath", str(APP_DIR), *limit, *args,
             "hostile_app:app"],
            stderr=subprocess.PIPE, text=True, start_new_session=True)
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 20
        self.port = 0
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            m = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        if not self.port:
            raise SystemExit("ferrocorn did not start")
        deadline = time.monotonic() + 20
        while not children(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.get()

    @property
    def worker(self) -> int:
        return min(children(self.proc.pid))

    def tree_rss_kib(self) -> int:
        pids = [self.proc.pid, *children(self.proc.pid)]
        return sum(vm_kib(p, "VmRSS") for p in pids)

    def get(self, path: str = "/hello") -> float:
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            while s.recv(65536):
                pass
        return time.monotonic() - start

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


def idle_memory(count: int) -> tuple[float, int]:
    server = Server()
    try:
        for _ in range(100):
            server.get()
        before = vm_kib(server.worker, "VmRSS")
        # Each connection makes one request (so it is accepted before the next one is opened,
        # and the listen backlog never overflows), then stays open, idle.
        socks = []
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            s.recv(65536)
            socks.append(s)
        after = vm_kib(server.worker, "VmRSS")
        for s in socks:
            s.close()
        return (after - before) / count, after
    finally:
        server.stop()


def latency_under_load(idle: int, slow: int, samples: int) -> tuple[float, float, float]:
    server = Server("--keep-alive", "3600", "--header-timeout", "3600")
    try:
        quiet = sorted(server.get() for _ in range(samples))
        socks = []
        for _ in range(idle):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            s.recv(65536)
            socks.append(s)
        for _ in range(slow):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        loaded = sorted(server.get() for _ in range(samples))
        for s in socks:
            s.close()
        p = lambda xs, q: xs[min(len(xs) - 1, int(len(xs) * q))] * 1000  # noqa: E731
        return statistics.median(quiet) * 1000, statistics.median(loaded) * 1000, p(loaded, 0.99)
    finally:
        server.stop()


def _hold(port: int, idle: int, slow: int, ready, done) -> None:
    """In a child process (one process may hold no more than its open-file limit): opens
    ``idle`` connections that make one request each and ``slow`` that send half a head, tells
    ``ready``, and keeps them until ``done`` says so."""
    socks = []
    for _ in range(idle):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        s.recv(65536)
        socks.append(s)
    for _ in range(slow):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    ready.send(len(socks))
    done.recv()
    for s in socks:
        s.close()


def at_the_cap(workers: int, cap: int | None, idle: int, slow: int,
               samples: int) -> tuple[float, float, int, int]:
    """Idle keep-alive and slowloris connections hold every slot (--keep-alive 60): fresh
    requests, one after another, each on a new connection. Returns their p50 and p99 in ms,
    how many were answered, and the server's RSS (KiB, master and workers)."""
    import multiprocessing

    server = Server("-w", str(workers), "--keep-alive", "60", cap=cap)
    holders = []
    try:
        per = 8000
        parts = [(min(per, idle - i), 0) for i in range(0, idle, per)] + [(0, slow)]
        for n_idle, n_slow in parts:
            ready_r, ready_w = multiprocessing.Pipe(duplex=False)
            done_r, done_w = multiprocessing.Pipe(duplex=False)
            proc = multiprocessing.Process(target=_hold,
                                           args=(server.port, n_idle, n_slow, ready_w, done_r))
            proc.start()
            holders.append((proc, done_w))
            ready_r.recv()
        times = []
        for _ in range(samples):
            try:
                times.append(server.get())
            except OSError:
                pass
        rss = server.tree_rss_kib()
        times.sort()
        p = lambda xs, q: xs[min(len(xs) - 1, int(len(xs) * q))] * 1000  # noqa: E731
        return statistics.median(times) * 1000, p(times, 0.99), len(times), rss
    finally:
        for proc, done in holders:
            done.send(True)
            proc.join(30)
        server.stop()


def upload_peak(gb: float) -> tuple[float, int, int]:
    server = Server()
    try:
        before = vm_kib(server.worker, "VmRSS")
        total = int(gb * 1e9) // (1 << 20) * (1 << 20)
        piece = b"u" * (1 << 20)
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(f"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {total}\r\n"
                      "Connection: close\r\n\r\n".encode())
            for _ in range(total // len(piece)):
                s.sendall(piece)
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        elapsed = time.monotonic() - start
        assert reply.endswith(str(total).encode()), reply[-200:]
        return total / elapsed / 1e9, before, vm_kib(server.worker, "VmHWM")
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=10000)
    parser.add_argument("--upload-gb", type=float, default=10.0)
    parser.add_argument("--only", choices=["cap"], help="run only the measurements at the cap")
    args = parser.parse_args()
    # The client connections are spread over a few processes (each holds at most 8,000);
    # the server's workers inherit this limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.idle + 2000)), hard))

    print("| measurement | value |")
    print("| --- | --- |")
    if args.only is None:
        per_conn, total = idle_memory(args.idle)
        quiet, loaded, p99 = latency_under_load(2000, 200, 500)
        print(f"| memory per idle keep-alive connection ({args.idle:,} open) | "
              f"{per_conn:.1f} KiB |")
        print(f"| worker RSS with {args.idle:,} idle connections | {total / 1024:.1f} MiB |")
        print(f"| request latency p50, no other connections | {quiet:.2f} ms |")
        print(f"| request latency p50 / p99, 2,000 idle + 200 slowloris open | "
              f"{loaded:.2f} / {p99:.2f} ms |")
    for workers, cap, idle in [(2, None, 2000), (2, args.idle, 2 * args.idle)]:
        p50, p99, answered, rss = at_the_cap(workers, cap, idle, 200, 200)
        label = "defaults (1,000)" if cap is None else f"{cap:,}"
        print(f"| -w {workers}, --worker-connections {label}, --keep-alive 60: {idle:,} idle + "
              f"200 slowloris, then 200 fresh requests: answered, p50 / p99, RSS | "
              f"{answered}/200, {p50:.2f} / {p99:.2f} ms, {rss / 1024:.1f} MiB |")
    if args.only is None:
        rate, before, peak = upload_peak(args.upload_gb)
        print(f"| {args.upload_gb:g} GB upload: worker RSS before / peak | "
              f"{before / 1024:.1f} / {peak / 1024:.1f} MiB ({rate:.2f} GB/s) |")


if __name__ == "__main__":
    main()
