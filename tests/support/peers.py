"""Peer servers the differential tests compare ferrocorn with, run the same way on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import sys

from .net import free_port
from .server import APPS_DIR, clean_env
from .wait import wait_for


class Uvicorn:
    """Uvicorn (httptools, uvloop) serving ``app`` from tests/apps, with ``extra`` options."""

    def __init__(self, app: str, *extra: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(APPS_DIR), "--host", "127.0.0.1",
             "--port", str(self.port), "--loop", "uvloop", "--http", "httptools",
             "--no-access-log", "--log-level", "warning", *extra, app],
            env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._up, timeout=20, message="uvicorn listening")

    def _up(self) -> bool:
        assert self.proc.poll() is None, "uvicorn exited"
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
