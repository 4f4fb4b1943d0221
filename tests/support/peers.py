"""Peer servers the differential tests compare ferrocorn with, run the same way on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
import tempfile

from .net import PortTaken, on_free_ports
from .procfs import listening_ports
from .server import APPS_DIR, clean_env
from .wait import wait_for


class Uvicorn:
    """Uvicorn (httptools, uvloop) serving ``app`` from tests/apps, with ``extra`` options;
    started again on another port when another process took its free port first."""

    def __init__(self, app: str, *extra: str) -> None:
        self.argv = [sys.executable, "-m", "uvicorn", "--app-dir", str(APPS_DIR),
                     "--host", "127.0.0.1", "--loop", "uvloop", "--http", "httptools",
                     "--no-access-log", "--log-level", "warning", *extra, app]
        #: What it wrote to stderr (read while it runs: a lost bind() is reported there).
        self.stderr = tempfile.TemporaryFile("a+b")
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = on_free_ports(self._start)[0]

    def _start(self, ports: list[int]) -> list[int]:
        self.stderr.truncate(0)
        self.proc = subprocess.Popen([*self.argv, "--port", str(ports[0])], env=clean_env(),
                                     stdout=subprocess.DEVNULL, stderr=self.stderr)
        try:
            wait_for(lambda: self._up(ports[0]), timeout=20, message="uvicorn listening")
        except BaseException:
            self._halt()
            raise
        return ports

    def _up(self, port: int) -> bool:
        """It listens on ``port`` itself (it binds once its app has started)."""
        assert self.proc is not None
        self.stderr.seek(0)
        err = self.stderr.read().decode(errors="replace")
        if self.proc.poll() is not None:
            if "address already in use" in err.lower():
                raise PortTaken(err.strip())
            raise AssertionError(f"uvicorn exited: {err}")
        return port in listening_ports(self.proc.pid)

    def _halt(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        self._halt()
        self.stderr.close()
