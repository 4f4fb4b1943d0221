"""Requests in background threads while a test does something else to the server (reloads,
upgrades, recycling), counting what was answered and what failed. Bounded in count and time."""

from __future__ import annotations

import http.client
import threading
import time


class Load:
    """``clients`` threads sending up to ``total`` GETs of ``path`` to ``host:port``, each on a
    fresh connection, for at most ``seconds``. The bodies of the 200s (the test apps answer
    with the worker's pid) are collected in ``pids``."""

    def __init__(self, host: str, port: int, total: int = 5000, clients: int = 1,
                 path: str = "/", seconds: float = 60.0) -> None:
        self.host = host
        self.port = port
        self.path = path
        self.left = total
        self.ok = 0
        self.failures: list[str] = []
        self.pids: set[str] = set()
        self.lock = threading.Lock()
        self.deadline = time.monotonic() + seconds
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        while time.monotonic() < self.deadline:
            with self.lock:
                if self.left <= 0:
                    return
                self.left -= 1
            try:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=20)
                conn.request("GET", self.path)
                resp = conn.getresponse()
                body = resp.read().decode()
                conn.close()
                with self.lock:
                    if resp.status == 200:
                        self.ok += 1
                        self.pids.add(body)
                    else:
                        self.failures.append(f"status {resp.status}")
            except OSError as e:
                with self.lock:
                    self.failures.append(repr(e))

    def running(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def join(self, timeout: float = 70.0) -> None:
        for t in self.threads:
            t.join(timeout)

    def stop(self) -> None:
        """No more requests after those in flight; waits for them."""
        with self.lock:
            self.left = 0
        self.join()
