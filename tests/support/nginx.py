"""A real nginx in front of the server: a foreground child process, its config, temporary
files and logs in a folder of the test's own."""

from __future__ import annotations

import shutil
import signal
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from .net import PortTaken, on_free_ports
from .procfs import children, listening_ports
from .wait import wait_for

#: The nginx binary (Debian puts it in /usr/sbin), or None where it is not installed.
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")


class Nginx:
    """nginx with one worker serving ``http(*ports)`` (the inside of its ``http`` block:
    upstreams and servers, listening on ``ports``), started at once on ``ports`` free ports;
    ready when its worker runs and nginx itself listens on each of them. ``port`` is the first.

    A free port may be taken by another process before nginx binds it: then nginx says
    "Address already in use", and it is started again on new ports (at most
    :data:`support.net.BIND_ATTEMPTS` times)."""

    def __init__(self, prefix: Path, http: Callable[..., str], ports: int = 1) -> None:
        if NGINX is None:
            raise RuntimeError("nginx is not installed (make test-deps)")
        self.prefix = prefix
        self.proc: subprocess.Popen[bytes] | None = None
        self._http = http
        (prefix / "logs").mkdir(parents=True, exist_ok=True)
        self.stderr = prefix / "logs" / "stderr.log"
        self.ports: list[int] = on_free_ports(self._start, ports)
        self.port = self.ports[0]

    def _start(self, ports: list[int]) -> list[int]:
        conf = self.prefix / "nginx.conf"
        conf.write_text(textwrap.dedent(f"""\
            worker_processes 1;
            error_log {self.prefix}/logs/error.log info;
            pid {self.prefix}/nginx.pid;
            events {{ worker_connections 256; }}
            http {{
                client_body_temp_path {self.prefix}/body;
                proxy_temp_path {self.prefix}/proxy;
                fastcgi_temp_path {self.prefix}/fastcgi;
                uwsgi_temp_path {self.prefix}/uwsgi;
                scgi_temp_path {self.prefix}/scgi;
            """) + textwrap.indent(textwrap.dedent(self._http(*ports)).strip(), "    ")
            + "\n}\n")
        # stderr into a file, appended to, so that it can be read while nginx runs (its bind()
        # failures are written there first).
        self.stderr.write_bytes(b"")
        with self.stderr.open("ab") as err:
            # `user root` only matters when the test runs as root (nginx ignores it otherwise,
            # with a warning): its worker then reads the test's folders and unix sockets.
            self.proc = subprocess.Popen(
                [NGINX, "-p", str(self.prefix), "-c", str(conf), "-g", "daemon off; user root;"],
                stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_for(lambda: self._started(ports), timeout=15, message="nginx to listen")
        except PortTaken:
            # Still in its bind() retries, before it handles signals: killed, not asked.
            self.proc.kill()
            self.proc.wait(5)
            raise
        except BaseException:
            self.stop()
            raise
        return ports

    def _started(self, ports: list[int]) -> bool:
        """nginx forks its worker once every listening socket is bound; a port another process
        holds fails nginx's bind() (which it retries for a few seconds before it exits)."""
        assert self.proc is not None
        err = self.stderr.read_text(errors="replace")
        if "Address already in use" in err:
            raise PortTaken(err.strip())
        if self.proc.poll() is not None:
            raise AssertionError(f"nginx exited: {err}")
        return bool(children(self.proc.pid)) and set(ports) <= listening_ports(self.proc.pid)

    def error_log(self) -> str:
        return (self.prefix / "logs" / "error.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> Nginx:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def proxy_pass(upstream: str, extra: str = "") -> str:
    """A location's lines passing requests to ``upstream`` over HTTP/1.1 with keep-alive and
    the forwarding headers of the README's nginx config; ``extra`` lines after them."""
    return f"""
        proxy_pass http://{upstream};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        {extra}"""
