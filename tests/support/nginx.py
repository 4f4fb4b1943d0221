"""A real nginx in front of the server: a foreground child process, its config, temporary
files and logs in a folder of the test's own."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import textwrap
from pathlib import Path
from types import TracebackType

from .wait import wait_for

#: The nginx binary (Debian puts it in /usr/sbin), or None where it is not installed.
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")


class Nginx:
    """nginx with one worker serving ``http`` (the inside of its ``http`` block: upstreams and
    servers), started at once; ready when ``(listen_host, port)`` accepts a connection.
    ``port`` is a free port the caller's servers listen on."""

    def __init__(self, prefix: Path, http: str, port: int, listen_host: str = "127.0.0.1") -> None:
        if NGINX is None:
            raise RuntimeError("nginx is not installed (make test-deps)")
        self.prefix = prefix
        self.port = port
        self.listen_host = listen_host
        (prefix / "logs").mkdir(parents=True, exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(textwrap.dedent(f"""\
            worker_processes 1;
            error_log {prefix}/logs/error.log info;
            pid {prefix}/nginx.pid;
            events {{ worker_connections 256; }}
            http {{
                client_body_temp_path {prefix}/body;
                proxy_temp_path {prefix}/proxy;
                fastcgi_temp_path {prefix}/fastcgi;
                uwsgi_temp_path {prefix}/uwsgi;
                scgi_temp_path {prefix}/scgi;
            """) + textwrap.indent(textwrap.dedent(http).strip(), "    ") + "\n}\n")
        # `user root` only matters when the test runs as root (nginx ignores it otherwise, with
        # a warning): its worker then reads the test's folders and unix sockets.
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(prefix), "-c", str(conf), "-g", "daemon off; user root;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for(self._listening, timeout=10, message="nginx to listen")
        except BaseException:
            self.stop()
            raise

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise AssertionError(f"nginx exited: {err}")
        try:
            socket.create_connection((self.listen_host, self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def error_log(self) -> str:
        return (self.prefix / "logs" / "error.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stderr:
            self.proc.stderr.close()

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
