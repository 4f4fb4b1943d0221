"""ferrocorn against its peers, back to back in one run on this machine.

    make bench                       # or: .bench-venv/bin/python bench/run.py [--quick]

For every workload, the servers (2 worker processes each) are started together and loaded in
turns with wrk (-t1) on 127.0.0.1 after a warm-up, several rounds, each round in another order
(`rotations`); the HTTP/2 workloads with h2load over prior-knowledge h2c, 16 connections x 64
streams, against the peers whose h2c works. Medians are reported with p50/p99 latency,
errors and the RSS of the server's whole process tree, plus ferrocorn's ratio to the best peer.
The machine is shared and noisy: only ratios from one run mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
APPS = BENCH / "apps"
RESULTS = BENCH / "results"
FERROCORN = str(ROOT / ".venv" / "bin" / "ferrocorn")
PEERS_BIN = Path(sys.executable).parent

#: The plain hyper server (bench/hyper_hello, no Python): what HTTP, and TLS, cost alone.
HYPER = "hyper (no Python)"
#: The workloads it serves: the bodies it knows (hello, 1 MiB), in cleartext and over rustls.
#: Over TLS it shows where the client's own ceiling lies: wrk's one thread decrypting every
#: byte on the same two cores (docs/benchmarks.md, TLS).
HYPER_WORKLOADS = ("hello", "1 MiB response", "TLS hello", "TLS handshakes", "TLS 1 MiB")

#: The bench's own client checks: the certificate is made for the run, so it is not verified.
UNVERIFIED = ssl.create_default_context()
UNVERIFIED.check_hostname = False
UNVERIFIED.verify_mode = ssl.CERT_NONE

#: bjoern serves one request at a time per process: a yardstick for fast apps, not a peer that
#: can serve a blocking one.
BJOERN = "bjoern (1 process)"

#: ferrocorn's one configuration for every workload.
FERROCORN_ARGS = ["-w", "2", "--threads", "64"]


@dataclass
class ServerSpec:
    name: str
    argv: list[str]  # {port} and {app} are filled in
    #: Not a peer but a yardstick: run for these workloads only, left out of "best peer".
    reference_for: tuple[str, ...] = ()
    #: Arguments that turn TLS on ({cert} and {key} filled in); none: no TLS workloads.
    tls_args: tuple[str, ...] = ()
    #: Arguments (put before the app) that make it serve prior-knowledge h2c; None: it
    #: cannot, and sits out the HTTP/2 workloads.
    h2_args: tuple[str, ...] | None = None
    #: The interfaces it serves: WSGI servers sit out the ASGI workloads and the other way.
    serves: tuple[str, ...] = ("wsgi",)

    def runs(self, workload: Workload) -> bool:
        if ("asgi" if workload.asgi else "wsgi") not in self.serves:
            return False
        if workload.tls and not self.tls_args:
            return False
        if workload.h2 and self.h2_args is None:
            return False
        return not self.reference_for or workload.name in self.reference_for

    def command(self, port: int, app: str, h2: bool = False,
                tls: tuple[str, str] | None = None) -> list[str]:
        argv = list(self.argv)
        at = argv.index("{app}") if "{app}" in argv else len(argv)
        if h2 and self.h2_args:
            argv[at:at] = self.h2_args
            at += len(self.h2_args)
        argv = [a.format(port=port, app=app) for a in argv]
        if tls:
            argv[at:at] = [a.format(cert=tls[0], key=tls[1]) for a in self.tls_args]
        return argv


#: TLS flags: Gunicorn's names (ferrocorn takes the same ones) and Granian's.
GUNICORN_TLS = ("--certfile", "{cert}", "--keyfile", "{key}")
GRANIAN_TLS = ("--ssl-certificate", "{cert}", "--ssl-keyfile", "{key}")


def servers() -> list[ServerSpec]:
    gunicorn = str(PEERS_BIN / "gunicorn")
    granian = str(PEERS_BIN / "granian")
    specs = [
        ServerSpec("ferrocorn", [FERROCORN, *FERROCORN_ARGS, "--log-level", "warning",
                                 "-b", "127.0.0.1:{port}", "--chdir", str(APPS), "{app}"],
                   tls_args=GUNICORN_TLS, h2_args=("--http2-cleartext", "prior-knowledge"),
                   serves=("wsgi", "asgi")),
        ServerSpec("gunicorn sync", [gunicorn, "-w", "2", "-b", "127.0.0.1:{port}",
                                     "--chdir", str(APPS), "--log-level", "warning", "{app}"],
                   tls_args=GUNICORN_TLS),
        ServerSpec("gunicorn gthread", [gunicorn, "-w", "2", "-k", "gthread", "--threads", "32",
                                        "-b", "127.0.0.1:{port}", "--chdir", str(APPS),
                                        "--log-level", "warning", "{app}"],
                   tls_args=GUNICORN_TLS,
                   h2_args=("--http-protocols", "h2,h1", "--http2-cleartext",
                            "prior-knowledge")),
        ServerSpec("granian", [granian, "--interface", "wsgi", "--workers", "2",
                               "--host", "127.0.0.1", "--port", "{port}", "--working-dir",
                               str(APPS), "--log-level", "warning", "{app}"],
                   tls_args=GRANIAN_TLS, h2_args=("--http", "2")),
        ServerSpec("granian bt8", [granian, "--interface", "wsgi", "--workers", "2",
                                   "--blocking-threads", "8", "--host", "127.0.0.1",
                                   "--port", "{port}", "--working-dir", str(APPS),
                                   "--log-level", "warning", "{app}"],
                   tls_args=GRANIAN_TLS),
    ]
    # ASGI peers (issue 28): Uvicorn as its docs deploy it (httptools + uvloop), Granian's
    # ASGI interface, Hypercorn (which also speaks h2c: it takes a connection that opens with
    # HTTP/2's preface as prior-knowledge h2c, no flag needed; over h2c with a config file
    # that lifts its per-connection request limit, see bench/hypercorn_h2c.toml); two workers
    # each, as ferrocorn.
    uvicorn = str(PEERS_BIN / "uvicorn")
    hypercorn = str(PEERS_BIN / "hypercorn")
    specs += [
        ServerSpec("uvicorn", [uvicorn, "--workers", "2", "--loop", "uvloop", "--http",
                               "httptools", "--host", "127.0.0.1", "--port", "{port}",
                               "--app-dir", str(APPS), "--log-level", "warning",
                               "--no-access-log", "{app}"], serves=("asgi",)),
        ServerSpec("granian asgi", [granian, "--interface", "asgi", "--workers", "2",
                                    "--host", "127.0.0.1", "--port", "{port}",
                                    "--working-dir", str(APPS), "--log-level", "warning",
                                    "{app}"],
                   h2_args=("--http", "2"), serves=("asgi",)),
        ServerSpec("hypercorn", [hypercorn, "-w", "2", "-b", "127.0.0.1:{port}",
                                 "--log-level", "warning", "{app}"],
                   h2_args=("--config", str(BENCH / "hypercorn_h2c.toml")),
                   serves=("asgi",)),
    ]
    specs = [s for s in specs if Path(s.argv[0]).exists()]
    if subprocess.run([sys.executable, "-c", "import bjoern"], capture_output=True).returncode == 0:
        specs.append(ServerSpec(BJOERN, [sys.executable,
                                                       str(BENCH / "bjoern_serve.py"),
                                                       "{app}", "{port}"]))
    hyper = ROOT / "target" / "hyper" / "release" / "hyper_hello"
    if hyper.exists():
        specs.append(ServerSpec(HYPER, [str(hyper), "{port}", "{app}"],
                                reference_for=HYPER_WORKLOADS,
                                tls_args=("--tls", "{cert}", "{key}")))
    return specs


@dataclass
class Workload:
    name: str
    app: str
    conns: int
    path: str = "/"
    script: str | None = None
    limit: float | None = None  # the most any server can do (blocking app: conns / latency)
    tls: bool = False  # over https, with a certificate made for the run (see `certificate`)
    headers: tuple[str, ...] = ()  # extra request fields (wrk -H)
    #: HTTP/2: h2load with `conns` connections of H2_STREAMS streams each, h2c prior knowledge.
    h2: bool = False
    #: An ASGI app: run by the servers that serve ASGI (see `ServerSpec.serves`).
    asgi: bool = False


#: Streams in flight per connection in the HTTP/2 workloads.
H2_STREAMS = 64


WORKLOADS = [
    Workload("hello", "hello:app", 64),
    Workload("flask", "flask_hello:app", 64),
    Workload("1 MiB response", "big:app", 16),
    Workload("POST 64 KiB echo", "echo:app", 16, script=str(BENCH / "post64k.lua")),
    Workload("50 ms blocking", "sleep50:app", 100, limit=100 / 0.05),
    # The shapes apps really have (issue 19): bodies read in pieces, responses in many chunks.
    Workload("POST 64 KiB read(n)", "body_reads:app", 16, path="/read",
             script=str(BENCH / "post64k.lua")),
    Workload("POST 64 KiB readline", "body_reads:app", 16, path="/readline",
             script=str(BENCH / "post_lines.lua")),
    Workload("POST 64 KiB iteration", "body_reads:app", 16, path="/iter",
             script=str(BENCH / "post_lines.lua")),
    Workload("Flask JSON POST", "flask_json:app", 64, script=str(BENCH / "post_json.lua")),
    Workload("1 MiB in 16 chunks", "chunked_big:app", 16, path="/list"),
    Workload("1 MiB generator", "chunked_big:app", 16, path="/gen"),
    Workload("1 MiB file_wrapper", "chunked_big:app", 16, path="/file"),
    Workload("Django hello", "djsite.wsgi:application", 64),
    Workload("h2 hello", "hello:app", 16, h2=True),
    Workload("h2 flask", "flask_hello:app", 16, h2=True),
    # TLS (issue 16): keep-alive hello, a full handshake per request (wrk opens a new
    # connection for each, and does not resume sessions), and the 1 MiB response encrypted.
    Workload("TLS hello", "hello:app", 64, tls=True),
    Workload("TLS handshakes", "hello:app", 16, tls=True, headers=("Connection: close",)),
    Workload("TLS 1 MiB", "big:app", 16, tls=True),
    # ASGI (issue 28): against Uvicorn, Granian's ASGI interface and Hypercorn.
    Workload("ASGI hello", "asgi_hello:app", 64, asgi=True),
    Workload("FastAPI JSON", "asgi_fastapi_json:app", 64, asgi=True),
    Workload("ASGI 1 MiB streamed", "asgi_big:app", 16, asgi=True),
    Workload("h2 ASGI hello", "asgi_hello:app", 16, h2=True, asgi=True),
]
IDLE = "2,000 idle conns"
#: Issue 28's memory goal: 10,000 idle keep-alive connections per worker (two workers) to an
#: ASGI app, in less memory than Granian's ASGI interface.
IDLE_ASGI_PER_WORKER = 10_000
IDLE_ASGI = "ASGI 10,000 idle conns per worker"

#: Static files (issue 18): the same directory (made by `static_dir`) served by ferrocorn
#: (--static-map), WhiteNoise under Gunicorn gthread, Granian's static mount and nginx.
STATIC_WORKLOADS = [
    Workload("static 2 KiB CSS", "hello:app", 64, path="/static/site.css"),
    Workload("static 1 MiB JS", "hello:app", 16, path="/static/app.js"),
    Workload("static 1 MiB JS, br", "hello:app", 16, path="/static/app.js",
             headers=("Accept-Encoding: br",)),
]
WHITENOISE = "gunicorn gthread + WhiteNoise"
NGINX = "nginx"


def static_dir(base: Path) -> Path:
    """bench/.static: a 2 KiB CSS file, a 1 MiB JS file and (with the brotli module) its .br."""
    root = base / ".static"
    root.mkdir(exist_ok=True)
    css = (b".c { color: #123456; margin: 0 auto; }\n" * 64)[:2048]
    (root / "site.css").write_bytes(css)
    line = b"function f%06d(a, b) { return a * b + %d; }\n"
    js = b"".join(line % (i, i) for i in range(30000))[: 1 << 20]
    (root / "app.js").write_bytes(js)
    try:
        import brotli  # type: ignore[import-not-found]

        (root / "app.js.br").write_bytes(brotli.compress(js))
    except ImportError:
        print("brotli not installed: no app.js.br (the br row measures the plain file)")
    return root


def static_servers(root: Path, tmp: Path) -> list[ServerSpec]:
    gunicorn = str(PEERS_BIN / "gunicorn")
    granian = str(PEERS_BIN / "granian")
    conf = tmp / "nginx.conf"
    conf.write_text(f"""worker_processes 2;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    include /etc/nginx/mime.types;
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {tmp};
    proxy_temp_path {tmp};
    fastcgi_temp_path {tmp};
    uwsgi_temp_path {tmp};
    scgi_temp_path {tmp};
    server {{
        listen 127.0.0.1:{{port}};
        location /static/ {{ alias {root}/; expires 60s; }}
        location / {{ return 200 "hello"; }}
    }}
}}
""")
    specs = [
        ServerSpec("ferrocorn", [FERROCORN, *FERROCORN_ARGS, "--log-level", "warning",
                                 "-b", "127.0.0.1:{port}", "--chdir", str(APPS),
                                 "--static-map", f"/static={root}", "{app}"]),
        ServerSpec(WHITENOISE, [gunicorn, "-w", "2", "-k", "gthread", "--threads", "32",
                                "-b", "127.0.0.1:{port}", "--chdir", str(APPS),
                                "--log-level", "warning", "whitenoise_app:app"]),
        ServerSpec("granian", [granian, "--interface", "wsgi", "--workers", "2",
                               "--host", "127.0.0.1", "--port", "{port}", "--working-dir",
                               str(APPS), "--log-level", "warning",
                               "--static-path-route", "/static",
                               "--static-path-mount", str(root), "{app}"]),
    ]
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if Path(nginx).exists():
        specs.append(ServerSpec(NGINX, [nginx, "-e", f"{tmp}/nginx-error.log", "-p", str(tmp),
                                        "-c", str(conf), "-g", "daemon off;"]))
    return [s for s in specs if Path(s.argv[0]).exists()]


@dataclass
class Result:
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: int = 0
    rss_mib: float = 0.0
    #: CPU time (user + system) per response, median of the runs: the server's whole process
    #: tree, and the load generator's. The client runs on the same cores with one thread, so
    #: it also bounds req/s: at most 1e6 / client_us_per_req, whatever the server.
    server_us_per_req: float = 0.0
    client_us_per_req: float = 0.0
    runs: list[float] = field(default_factory=list)
    note: str = ""
    #: More than 1% of the responses were errors (non-2xx/3xx, timeouts): its req/s count
    #: failures, so it is left out of the ratios.
    failed: bool = False


def django_project() -> None:
    """`django-admin startproject djsite` plus one view, made at run time in bench/apps/djsite
    (not committed: it is what a new Django user starts from, default middleware included)."""
    target = APPS / "djsite"
    if (target / "views.py").exists():
        return
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([str(PEERS_BIN / "django-admin"), "startproject", "djsite", tmp],
                       check=True)
        shutil.copytree(Path(tmp) / "djsite", target)
    settings = target / "settings.py"
    text = settings.read_text().replace("DEBUG = True", "DEBUG = False")
    settings.write_text(text.replace("ALLOWED_HOSTS = []", 'ALLOWED_HOSTS = ["*"]'))
    (target / "views.py").write_text(
        "from django.http import HttpResponse\n\n\n"
        "def hello(request):\n    return HttpResponse(\"Hello, World!\")\n")
    urls = target / "urls.py"
    urls.write_text(urls.read_text().replace(
        "urlpatterns = [",
        "from djsite.views import hello\n\nurlpatterns = [\n    path(\"\", hello),"))


def free_port() -> int:
    # Not tests/support's: the sdist's profile-guided build imports this file without tests/.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            pass
    return out


def tree_rss_mib(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` and its descendants (all their threads), in seconds."""
    ticks = 0
    for p in tree(pid):
        try:
            # The fields after the command name (which may hold spaces): utime, stime are 14, 15.
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def certificate() -> tuple[str, str]:
    """A throwaway self-signed ECDSA P-256 certificate for 127.0.0.1 (made once per run)."""
    directory = Path(tempfile.mkdtemp(prefix="ferrocorn-bench-tls-"))
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return str(cert), str(key)


#: How many times a server is started again on a new port after another process took the free
#: port it was given (between `free_port` choosing it and the server binding it).
BIND_ATTEMPTS = 5


def listening_ports(pid: int) -> set[int]:
    """The TCP ports `pid` and its descendants listen on: a port another process listens on
    answers a connection too, and must not pass for the server's. (Not tests/support's
    procfs.listening_ports, as `free_port`: the sdist's build imports this file without
    tests/.)"""
    inodes = set()
    for p in tree(pid):
        try:
            for fd in os.listdir(f"/proc/{p}/fd"):
                target = os.readlink(f"/proc/{p}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            pass
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # 0A: LISTEN
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


#: Each server in a session of its own (`--own-session`). Off by default: with the kernel's
#: autogroup scheduling (`/proc/sys/kernel/sched_autogroup_enabled`, on in most
#: distributions) a new session is a scheduling group of its own, which the CPU is shared
#: with fairly, group against group, not thread against thread. The load generator (wrk,
#: h2load, ws_load: in the harness's group) then gets half of the core it runs on whenever the
#: server's threads want both cores, and a server that needs less than the rest of the
#: machine is measured at the client's ceiling: about 0.5 / (client CPU seconds per request)
#: requests a second, 45,000-50,000 here (docs/benchmarks.md, "The load generator's share of
#: the CPU"). In the harness's session every thread, the client's and the servers', is
#: scheduled as an equal, as on a machine with no grouping.
OWN_SESSION = False


def session_args() -> dict[str, Any]:
    """Popen's arguments for a server: a new session (see OWN_SESSION) or only a new process
    group; either way `os.killpg(pid)` stops the server and its workers."""
    if OWN_SESSION:
        return {"start_new_session": True}
    if sys.version_info >= (3, 11):
        return {"process_group": 0}
    return {"preexec_fn": os.setpgrp}


class Running:
    def __init__(self, spec: ServerSpec, app: str, h2: bool = False,
                 tls: tuple[str, str] | None = None) -> None:
        self.tls = tls is not None
        #: The server's stderr, appended to (read while it runs, and quoted when it fails).
        self.stderr = tempfile.TemporaryFile("a+b")
        for _ in range(BIND_ATTEMPTS):
            self.port = free_port()
            if self._start(spec, app, h2, tls):
                return
        self.stderr.close()
        raise RuntimeError(f"{spec.name} lost its port to another process {BIND_ATTEMPTS} "
                           "times")

    def _errors(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def _start(self, spec: ServerSpec, app: str, h2: bool,
               tls: tuple[str, str] | None) -> bool:
        """Started and answering on `self.port`: True; it could not bind the port: False."""
        command = spec.command(self.port, app, h2, tls)
        if spec.name == NGINX:
            # nginx reads its port from its config file.
            conf = Path(command[command.index("-c") + 1])
            text = conf.read_text()
            conf.write_text(re.sub(r"listen 127\.0\.0\.1:\S+;",
                                   f"listen 127.0.0.1:{self.port};", text))
        self.stderr.truncate(0)
        # A process group of its own (so a stop reaches the workers), in the harness's session:
        # see OWN_SESSION.
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self.stderr,
                                     cwd=APPS, **session_args())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if "address already in use" in self._errors().lower():
                self._halt()
                return False
            if self.proc.poll() is not None:
                # Its last words, on one line (the note goes into a table's cell).
                tail = " / ".join(self._errors().strip().splitlines()[-3:])[-300:]
                self.stop()
                raise RuntimeError(f"{spec.name} exited with {self.proc.returncode}: {tail}")
            if self.port not in listening_ports(self.proc.pid):
                time.sleep(0.05)  # polling for readiness
                continue
            if h2:
                ok = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_version}",
                                     "--http2-prior-knowledge", "--max-time", "2",
                                     f"http://127.0.0.1:{self.port}/"],
                                    capture_output=True, text=True).stdout == "2"
                if ok:
                    return True
                time.sleep(0.05)  # polling for readiness
                continue
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as raw:
                    s = UNVERIFIED.wrap_socket(raw) if self.tls else raw
                    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if s.recv(16).startswith(b"HTTP/1."):
                        return True
            except OSError:
                time.sleep(0.05)  # polling for readiness
        self.stop()
        raise RuntimeError(f"{spec.name} did not answer within 30 s")

    def _halt(self) -> None:
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def stop(self) -> None:
        self._halt()
        self.stderr.close()


def h2load(port: int, w: Workload, seconds: float) -> dict[str, float]:
    """h2load's rate over `seconds`; it reports a mean time per request, no percentiles (the
    mean goes in p50, p99 stays 0)."""
    cmd = ["h2load", "-t1", f"-c{w.conns}", f"-m{H2_STREAMS}", f"-D{max(1, round(seconds))}",
           "--warm-up-time=1", f"http://127.0.0.1:{port}{w.path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = re.search(r"finished in [\d.]+\w*s, ([\d.]+) req/s", out)
    failed = re.search(r"requests: .*? (\d+) failed, (\d+) errored, (\d+) timeout", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out)
    errors = sum(int(n) for n in failed.groups()) if failed else 1
    if codes:
        errors += int(codes.group(3)) + int(codes.group(4))
    p50 = float(mean.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[mean.group(2)] \
        if mean else 0.0
    return {"rps": float(rps.group(1)) if rps else 0.0, "p50": p50, "p99": 0.0,
            "errors": errors}


def load(port: int, w: Workload, seconds: float) -> dict[str, float]:
    return h2load(port, w, seconds) if w.h2 else wrk(port, w, seconds)


def wrk(port: int, w: Workload, seconds: float) -> dict[str, float]:
    cmd = ["wrk", "-t1", f"-c{w.conns}", f"-d{max(1, round(seconds))}s", "--latency",
           "--timeout", "5s"]
    if w.script:
        cmd += ["-s", w.script]
    for h in w.headers:
        cmd += ["-H", h]
    scheme = "https" if w.tls else "http"
    out = subprocess.run([*cmd, f"{scheme}://127.0.0.1:{port}{w.path}"], capture_output=True,
                         text=True, timeout=seconds + 60).stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return 0.0
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(rps.group(1)) if rps else 0.0, "p50": ms("50"), "p99": ms("99"),
            "errors": errors + (int(non2xx.group(1)) if non2xx else 0)}


def rotations(names: list[str], reps: int) -> list[list[str]]:
    """The order the servers are loaded in, one per round: the list rotated to start at server
    ``r * n // reps`` in round ``r``, so the starts are spread evenly over the list. With
    ``reps`` a multiple of the ``n`` servers every server is loaded in every position equally
    often; with fewer rounds each takes ``reps`` different positions spread over the round
    (an order effect of about 15% was seen when the order was the same in every round)."""
    n = len(names)
    if not n:
        return [[] for _ in range(reps)]
    return [names[r * n // reps % n:] + names[:r * n // reps % n] for r in range(reps)]


def measure(specs: list[ServerSpec], w: Workload, seconds: float, reps: int,
            tls: tuple[str, str] | None = None) -> dict[str, Result]:
    """Every server of the workload, started together and measured in turns: the first run of
    each, then the second of each, and so on, each round in another order (`rotations`). Only
    the one under load does any work; spreading each server's runs over the whole span means a
    slow minute of this shared machine weighs on every server alike, not on whichever happened
    to run in it, and no server always runs first or last in a round."""
    results: dict[str, Result] = {}
    running: dict[str, Running] = {}
    try:
        for spec in specs:
            try:
                running[spec.name] = Running(spec, w.app, w.h2, tls if w.tls else None)
            except RuntimeError as e:
                results[spec.name] = Result(note=str(e))
        for server in running.values():
            load(server.port, w, 1)  # warm-up
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in running}
        for order in rotations(list(running), reps):
            for name in order:
                server = running[name]
                cpu0, client0 = tree_cpu_seconds(server.proc.pid), children_cpu_seconds()
                r = load(server.port, w, seconds)
                # h2load's warm-up second (--warm-up-time=1) is served but left out of its rate.
                answered = r["rps"] * (max(1, round(seconds)) + (1 if w.h2 else 0))
                if answered:
                    r["server_us"] = 1e6 * (tree_cpu_seconds(server.proc.pid) - cpu0) / answered
                    r["client_us"] = 1e6 * (children_cpu_seconds() - client0) / answered
                runs[name].append(r)
        for name, server in running.items():
            rs = runs[name]
            med = lambda k, d=None, rs=rs: statistics.median(r.get(k, d) for r in rs)  # noqa: E731
            errors = int(sum(r["errors"] for r in rs))
            answered = sum(r["rps"] for r in rs) * seconds
            failed = errors > 0.01 * answered
            results[name] = Result(rps=med("rps"), p50_ms=med("p50"), p99_ms=med("p99"),
                                   errors=errors,
                                   rss_mib=tree_rss_mib(server.proc.pid),
                                   server_us_per_req=med("server_us", 0.0),
                                   client_us_per_req=med("client_us", 0.0),
                                   runs=[r["rps"] for r in rs], failed=failed,
                                   note="failing: left out of the ratios" if failed else "")
    finally:
        for server in running.values():
            server.stop()
    return {spec.name: results[spec.name] for spec in specs if spec.name in results}


#: Opens idle keep-alive connections (argv: port, count, seconds allowed), prints how many it
#: holds and the errors, then holds them until its stdin closes. The connections are held in
#: such child processes, at most IDLE_PER_HOLDER each: one process may not have the file
#: descriptors for 20,000 (the hard limit here is 20,000, and not everyone may raise it).
IDLE_HOLDER = """
import socket, sys, time
port, count, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
socks, errors, deadline = [], 0, time.monotonic() + seconds
for _ in range(count):
    if time.monotonic() > deadline:
        break
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        s.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
        s.recv(4096)
        socks.append(s)
    except OSError:
        errors += 1
        if errors > 20:
            break
print(len(socks), errors, flush=True)
sys.stdin.read()
"""
IDLE_PER_HOLDER = 8000


def measure_idle(spec: ServerSpec, count: int, samples: int, app: str = "hello:app") -> Result:
    """RSS with `count` idle keep-alive connections open, and latency of requests meanwhile."""
    server = Running(spec, app)
    holders: list[subprocess.Popen[str]] = []
    held = errors = 0
    # A server that cannot hold them gets no longer (opening one takes well under 5 ms).
    seconds = max(30, count / 200)
    try:
        for start in range(0, count, IDLE_PER_HOLDER):
            n = min(IDLE_PER_HOLDER, count - start)
            holders.append(subprocess.Popen(
                [sys.executable, "-c", IDLE_HOLDER, str(server.port), str(n), str(seconds)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for h in holders:
            assert h.stdout is not None
            line = h.stdout.readline().split()
            if len(line) == 2:
                held, errors = held + int(line[0]), errors + int(line[1])
            else:
                errors += 1
        latencies = []
        deadline = time.monotonic() + 30
        for _ in range(samples):
            if time.monotonic() > deadline:
                break
            start = time.monotonic()
            try:
                with socket.create_connection(("127.0.0.1", server.port), timeout=2) as s:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    while s.recv(65536):
                        pass
                latencies.append((time.monotonic() - start) * 1000)
            except OSError:
                errors += 1
                if errors > 40:
                    break
        rss = tree_rss_mib(server.proc.pid)
    finally:
        for h in holders:
            h.communicate(timeout=30)  # closes its stdin: it lets go of its connections
        server.stop()
    latencies.sort()
    if not latencies:
        return Result(errors=errors, rss_mib=rss, note=f"{held} connections held")
    return Result(rps=0.0, p50_ms=statistics.median(latencies),
                  p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
                  errors=errors, rss_mib=rss, note=f"{held} connections held")


def table(results: dict[str, dict[str, Result]], names: list[str]) -> str:
    lines = ["| workload | server | req/s | p50 ms | p99 ms | errors | RSS MiB | "
             "server CPU us/req | client CPU us/req |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for wname, by_server in results.items():
        for name in names:
            r = by_server.get(name)
            if r is None:
                continue
            rps = "-" if wname in (IDLE, IDLE_ASGI) else f"{r.rps:,.0f}"
            lines.append(f"| {wname} | {name} | {rps} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
                         f"{r.errors} | {r.rss_mib:.1f} | {r.server_us_per_req:,.0f} | "
                         f"{r.client_us_per_req:,.0f} |")
    return "\n".join(lines)


def ratios(results: dict[str, dict[str, Result]]) -> str:
    """ferrocorn against the best peer that can also serve a blocking app (Gunicorn, Granian:
    bjoern runs one request at a time), against bjoern, and its p99 against that best peer's."""
    lines = ["| workload | ferrocorn req/s | best blocking-capable peer | its req/s | ratio | "
             "vs bjoern | p99 vs best peer |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    for w in WORKLOADS:
        by = results.get(w.name, {})
        ours = by.get("ferrocorn")
        # Another build of ferrocorn (--ferrocorn-build) is not a peer.
        peers = {n: r for n, r in by.items()
                 if not n.startswith("ferrocorn") and n not in (HYPER, BJOERN)
                 and not r.failed}
        if not ours or not peers:
            continue
        best = max(peers, key=lambda n: peers[n].rps)
        ratio = ours.rps / peers[best].rps if peers[best].rps else float("inf")
        extra = f" ({ours.rps / w.limit:.1%} of the {w.limit:,.0f} limit)" if w.limit else ""
        if HYPER in by and by[HYPER].rps:
            extra += f" ({ours.rps / by[HYPER].rps:.2f}x {HYPER})"
        bj = by.get(BJOERN)
        vs_bjoern = f"{ours.rps / bj.rps:.2f}x" if bj and bj.rps else "-"
        p99 = (f"{ours.p99_ms / peers[best].p99_ms:.2f}x" if peers[best].p99_ms else "-")
        lines.append(f"| {w.name} | {ours.rps:,.0f} | {best} | {peers[best].rps:,.0f} | "
                     f"{ratio:.2f}x{extra} | {vs_bjoern} | {p99} |")
    for wname, peer in ((IDLE, "granian"), (IDLE_ASGI, "granian asgi")):
        idle = results.get(wname, {})
        if "ferrocorn" in idle and peer in idle and idle[peer].rss_mib:
            lines.append(f"| RSS, {wname} | {idle['ferrocorn'].rss_mib:.1f} MiB | {peer} | "
                         f"{idle[peer].rss_mib:.1f} MiB | "
                         f"{idle['ferrocorn'].rss_mib / idle[peer].rss_mib:.2f}x |")
    return "\n".join(lines)


def per_shape(results: dict[str, dict[str, Result]], names: list[str]) -> str:
    """One table per workload: each server's req/s, ferrocorn's ratio over it, and latency."""
    out = []
    for wname, by in results.items():
        ours = by.get("ferrocorn")
        if wname in (IDLE, IDLE_ASGI) or not ours:
            continue
        lines = [f"### {wname}", "", "| server | req/s | ferrocorn over it | p50 ms | p99 ms | "
                 "RSS MiB |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for name in names:
            r = by.get(name)
            if r is None:
                continue
            over = "-" if name == "ferrocorn" or not r.rps else f"{ours.rps / r.rps:.2f}x"
            if r.failed:
                over += " (failing)"
            lines.append(f"| {name} | {r.rps:,.0f} | {over} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
                         f"{r.rss_mib:.1f} |")
        out.append("\n".join(lines))
    return "\n\n".join(out)


def static_ratios(results: dict[str, dict[str, Result]]) -> str:
    """ferrocorn's req/s over each peer's on the static rows (issue 18's goals: 10x WhiteNoise
    on the small file, at least Granian on both, 0.8x nginx on the 1 MiB file)."""
    peers = [WHITENOISE, "granian", NGINX]
    lines = ["| workload | ferrocorn req/s | " + " | ".join(f"vs {p}" for p in peers) + " |",
             "| --- | ---: |" + " ---: |" * len(peers)]
    for w in STATIC_WORKLOADS:
        by = results.get(w.name, {})
        ours = by.get("ferrocorn")
        if not ours:
            continue
        cells = []
        for p in peers:
            r = by.get(p)
            cells.append(f"{ours.rps / r.rps:.2f}x" if r and r.rps else "-")
        lines.append(f"| {w.name} | {ours.rps:,.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chart(results: dict[str, dict[str, Result]], names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = [w.name for w in WORKLOADS if w.name in results]
    fig, ax = plt.subplots(figsize=(11, 5))
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        values = []
        for wname in workloads:
            ours = results[wname].get("ferrocorn")
            r = results[wname].get(name)
            values.append(r.rps / ours.rps if r and ours and ours.rps else 0)
        xs = [x + i * width for x in range(len(workloads))]
        bars = ax.bar(xs, values, width, label=name)
        for bar, wname in zip(bars, workloads):
            r = results[wname].get(name)
            if r:
                ax.annotate(f"{r.rps:,.0f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(workloads))])
    ax.set_xticklabels(workloads)
    ax.set_ylabel("req/s relative to ferrocorn (labels: req/s)")
    ax.set_title("WSGI servers, 2 workers each, wrk -t1 on 127.0.0.1 (higher is better)")
    ax.axhline(1.0, color="grey", linewidth=0.5)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=len(names))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# WebSockets (issue 29). The load comes from bench/ws_load (Rust, tokio-tungstenite, one
# thread as wrk -t1 is), built by `make bench`: a Python client would be the bottleneck.
WS_LOAD = ROOT / "target" / "ws_load" / "release" / "ws_load"
#: Threads of the WSGI servers in the flask-sock row: each open WebSocket holds one (under
#: Gunicorn gthread as under ferrocorn), and a worker may be handed most of the connections.
WS_THREADS = 128
#: Connections a worker may hold (ferrocorn's --worker-connections, Granian's
#: --backpressure): room for the idle row's share on one worker with a margin.
WS_CONNS_CAP = 25_000


@dataclass
class WsWorkload:
    name: str
    app: str
    interface: str  # "asgi" or "wsgi": which servers run it (ServerSpec.serves)
    #: echo: connections in all, one message in flight each (idle: --ws-idle per worker).
    conns: int
    idle: bool = False
    path: str = "/echo"
    size: int = 1024


WS_ECHO = "ws echo 1 KiB"
WS_IDLE = "ws idle"
WS_FLASK = "flask-sock echo 1 KiB"
WS_WORKLOADS = [
    WsWorkload(WS_ECHO, "ws_asgi_echo:app", "asgi", 100),
    WsWorkload(WS_IDLE, "ws_asgi_echo:app", "asgi", 0, idle=True),
    WsWorkload(WS_FLASK, "ws_flask_echo:app", "wsgi", 100),
]


@dataclass
class WsIdleResult(Result):
    """The idle row: memory with `held` connections open (as it was read) beyond the
    `baseline_mib` the server had after a warm-up echo, per connection; fewer than 99% of those
    asked for open then: failed, left out of the ratios."""
    held: int = 0
    baseline_mib: float = 0.0
    kib_per_conn: float = 0.0
    open_seconds: float = 0.0
    still_open: int = 0


def ws_servers(builds: list[tuple[str, str]]) -> list[ServerSpec]:
    """The WebSocket rows' servers, 2 workers each: ferrocorn (ASGI; WSGI with flask-sock on
    gunicorn.socket), Uvicorn with its `websockets` implementation (httptools, uvloop),
    Granian's ASGI interface, and Gunicorn gthread with flask-sock on simple-websocket.
    `builds`: other ferrocorn executables (--ferrocorn-build), measured beside it."""
    gunicorn = str(PEERS_BIN / "gunicorn")
    granian = str(PEERS_BIN / "granian")
    uvicorn = str(PEERS_BIN / "uvicorn")
    ours = [
        ServerSpec("ferrocorn", [FERROCORN, *FERROCORN_ARGS, "--worker-connections",
                                 str(WS_CONNS_CAP), "--log-level", "warning",
                                 "-b", "127.0.0.1:{port}", "--chdir", str(APPS), "{app}"],
                   serves=("asgi",)),
        ServerSpec("ferrocorn", [FERROCORN, "-w", "2", "--threads", str(WS_THREADS),
                                 "--log-level", "warning", "-b", "127.0.0.1:{port}",
                                 "--chdir", str(APPS), "{app}"]),
    ]
    specs = ours + [replace(s, name=f"ferrocorn {label}", argv=[path, *s.argv[1:]])
                    for label, path in builds for s in ours]
    specs += [
        ServerSpec("uvicorn websockets", [uvicorn, "--workers", "2", "--loop", "uvloop",
                                          "--http", "httptools", "--ws", "websockets",
                                          "--host", "127.0.0.1", "--port", "{port}",
                                          "--app-dir", str(APPS), "--log-level", "warning",
                                          "--no-access-log", "{app}"], serves=("asgi",)),
        ServerSpec("granian asgi", [granian, "--interface", "asgi", "--workers", "2",
                                    "--backpressure", str(WS_CONNS_CAP),
                                    "--host", "127.0.0.1", "--port", "{port}",
                                    "--working-dir", str(APPS), "--log-level", "warning",
                                    "{app}"], serves=("asgi",)),
        ServerSpec("gunicorn gthread", [gunicorn, "-w", "2", "-k", "gthread", "--threads",
                                        str(WS_THREADS), "-b", "127.0.0.1:{port}",
                                        "--chdir", str(APPS), "--log-level", "warning",
                                        "{app}"]),
    ]
    return [s for s in specs if Path(s.argv[0]).exists()]


def ws_handshake(port: int, path: str) -> str:
    """The status line a WebSocket opening handshake gets ('' if none came)."""
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(request)
            head = b""
            while b"\r\n" not in head and len(head) < 4096:
                piece = s.recv(4096)
                if not piece:
                    break
                head += piece
    except OSError:
        return ""
    return head.split(b"\r\n", 1)[0].decode("latin-1")


def ws_skip_note(spec: ServerSpec, w: WsWorkload, status: str) -> str:
    said = f"answered the handshake with {status!r}" if status else "did not answer the handshake"
    if spec.name.startswith("ferrocorn") and w.interface == "asgi":
        return (f"skipped: {said}; this build of ferrocorn does not serve ASGI's websocket "
                "scope (it predates issue 29's)")
    return f"skipped: {said}"


def ws_echo(port: int, w: WsWorkload, seconds: float, conns: int | None = None,
            warmup: float = 1.0) -> dict[str, float]:
    """One ws_load echo run: messages/s and round trips (ms) over `seconds` after `warmup`."""
    cmd = [str(WS_LOAD), "echo", f"ws://127.0.0.1:{port}{w.path}", "--conns",
           str(conns or w.conns), "--size", str(w.size), "--warmup", str(warmup),
           "--duration", str(seconds)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=warmup + seconds + 60)
    try:
        out = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"rps": 0.0, "p50": 0.0, "p99": 0.0, "errors": conns or w.conns,
                "error": done.stderr.strip()[-300:]}
    return {"rps": out["messages_per_s"], "p50": out["p50_ms"], "p99": out["p99_ms"],
            "errors": out["errors"], "error": out["first_error"]}


def measure_ws_echo(specs: list[ServerSpec], w: WsWorkload, seconds: float,
                    reps: int) -> dict[str, Result]:
    """As `measure`: the servers started together, probed with a handshake, then loaded in
    turns, each round in another order (a 1 s warm-up inside each run is served but not
    counted)."""
    results: dict[str, Result] = {}
    running: dict[str, Running] = {}
    try:
        for spec in specs:
            try:
                server = Running(spec, w.app)
            except RuntimeError as e:
                results[spec.name] = Result(note=str(e))
                continue
            status = ws_handshake(server.port, w.path)
            if " 101 " not in f"{status} ":
                results[spec.name] = Result(note=ws_skip_note(spec, w, status))
                server.stop()
                continue
            running[spec.name] = server
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in running}
        for order in rotations(list(running), reps):
            for name in order:
                server = running[name]
                cpu0, client0 = tree_cpu_seconds(server.proc.pid), children_cpu_seconds()
                r = ws_echo(server.port, w, seconds)
                served = r["rps"] * (seconds + 1)  # the warm-up second's messages too
                if served:
                    r["server_us"] = 1e6 * (tree_cpu_seconds(server.proc.pid) - cpu0) / served
                    r["client_us"] = 1e6 * (children_cpu_seconds() - client0) / served
                runs[name].append(r)
        for name, server in running.items():
            rs = runs[name]
            med = lambda k, d=None, rs=rs: statistics.median(r.get(k, d) for r in rs)  # noqa: E731
            errors = int(sum(r["errors"] for r in rs))
            failed = errors > 0
            first = next((r["error"] for r in rs if r.get("error")), "")
            results[name] = Result(rps=med("rps"), p50_ms=med("p50"), p99_ms=med("p99"),
                                   errors=errors, rss_mib=tree_rss_mib(server.proc.pid),
                                   server_us_per_req=med("server_us", 0.0),
                                   client_us_per_req=med("client_us", 0.0),
                                   runs=[r["rps"] for r in rs], failed=failed,
                                   note=f"failing ({first}): left out of the ratios"
                                   if failed else "")
    finally:
        for server in running.values():
            server.stop()
    return {spec.name: results[spec.name] for spec in specs if spec.name in results}


def measure_ws_idle(spec: ServerSpec, w: WsWorkload, per_worker: int,
                    workers: int = 2) -> Result:
    """RSS of the server's process tree with `per_worker` x `workers` idle WebSockets open,
    beyond its RSS after a warm-up echo; meanwhile 10 connections echo for 2 s (latency)."""
    try:
        server = Running(spec, w.app)
    except RuntimeError as e:
        return Result(note=str(e))
    clients: list[subprocess.Popen[str]] = []
    try:
        status = ws_handshake(server.port, w.path)
        if " 101 " not in f"{status} ":
            return Result(note=ws_skip_note(spec, w, status))
        ws_echo(server.port, w, 1.0, conns=4, warmup=0.0)
        baseline = tree_rss_mib(server.proc.pid)
        total = per_worker * workers
        # One client process per share that fits its descriptor limit (it inherits ours).
        room = max(256, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 64)
        shares = [min(room, total - start) for start in range(0, total, room)]
        url = f"ws://127.0.0.1:{server.port}{w.path}"
        for share in shares:
            clients.append(subprocess.Popen(
                [str(WS_LOAD), "idle", url, "--conns", str(share), "--concurrency", "64",
                 "--open-max", "240", "--hold-max", "300"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        opened_reports = [ws_report(c) for c in clients]
        held = sum(int(r.get("opened", 0)) for r in opened_reports)
        errors = sum(int(r.get("errors", 0)) for r in opened_reports)
        open_seconds = max((float(r.get("open_seconds", 0.0)) for r in opened_reports),
                           default=0.0)
        first = next((str(r["first_error"]) for r in opened_reports if r.get("first_error")),
                     "")
        time.sleep(2)  # the servers' own timers (pings) run once over the held connections
        rss = tree_rss_mib(server.proc.pid)
        # The ones still open as the memory is read: a server may have closed some already.
        live = 0
        for c in clients:
            if c.stdin:
                c.stdin.write("status\n")
                c.stdin.flush()
            live += int(ws_report(c).get("still_open", 0))
        probe = ws_echo(server.port, w, 2.0, conns=10, warmup=0.5)
        for c in clients:
            if c.stdin:
                c.stdin.close()
        closing = [ws_report(c) for c in clients]
        still = sum(int(r.get("still_open", 0)) for r in closing)
    finally:
        for c in clients:
            if c.poll() is None:
                c.kill()
            c.wait(10)
        server.stop()
    per_conn = (rss - baseline) * 1024 / live if live else 0.0
    note = (f"{held:,} opened, {live:,} open as RSS was read ({still:,} at the end), "
            f"{per_conn:.1f} KiB each beyond the {baseline:.1f} MiB baseline; opened in "
            f"{open_seconds:.1f} s")
    if errors:
        note += f"; {errors} failed to open ({first})"
    if probe["errors"]:
        note += f"; the echo meanwhile: {probe['errors']} failed ({probe.get('error', '')})"
    return WsIdleResult(p50_ms=probe["p50"], p99_ms=probe["p99"],
                        errors=errors + int(probe["errors"]), rss_mib=rss, note=note,
                        held=live, baseline_mib=baseline, kib_per_conn=per_conn,
                        open_seconds=open_seconds, still_open=still,
                        failed=live < 0.99 * total)


def ws_report(client: subprocess.Popen[str]) -> dict[str, object]:
    """The next JSON line a ws_load idle process prints ({} if it ended without one)."""
    line = client.stdout.readline() if client.stdout else ""
    try:
        out = json.loads(line)
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


def ws_tables(results: dict[str, dict[str, Result]], names: list[str], per_worker: int) -> str:
    """The WebSocket rows: each server's figures, then ferrocorn's ratios over each peer."""
    lines = ["| workload | server | messages/s | p50 ms | p99 ms | errors | RSS MiB | "
             "server CPU us/msg | client CPU us/msg | note |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for w in WS_WORKLOADS:
        if w.idle:
            continue
        for name in names:
            r = results.get(w.name, {}).get(name)
            if r is not None:
                lines.append(f"| {w.name} | {name} | {r.rps:,.0f} | {r.p50_ms:.2f} | "
                             f"{r.p99_ms:.2f} | {r.errors} | {r.rss_mib:.1f} | "
                             f"{r.server_us_per_req:,.1f} | {r.client_us_per_req:,.1f} | "
                             f"{r.note} |")
    idle = results.get(WS_IDLE, {})
    if idle:
        lines += ["", f"### {WS_IDLE}: {per_worker:,} connections per worker "
                  "(2 workers), RSS of the whole process tree", "",
                  "| server | held | baseline MiB | RSS held MiB | KiB per connection | "
                  "echo p50 ms meanwhile | p99 ms | opened in s | note |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for name in names:
            r = idle.get(name)
            if isinstance(r, WsIdleResult):
                lines.append(f"| {name} | {r.held:,} | {r.baseline_mib:.1f} | "
                             f"{r.rss_mib:.1f} | {r.kib_per_conn:.1f} | {r.p50_ms:.2f} | "
                             f"{r.p99_ms:.2f} | {r.open_seconds:.1f} | {r.note} |")
            elif r is not None:
                lines.append(f"| {name} | - | - | - | - | - | - | - | {r.note} |")
    lines += ["", "### ferrocorn over each peer", "",
              "| workload | ferrocorn | peer | ferrocorn over it | p99 ferrocorn / peer |",
              "| --- | ---: | --- | ---: | ---: |"]
    for w in WS_WORKLOADS:
        by = results.get(w.name, {})
        # ferrocorn and any other build of it (--ferrocorn-build) that ran the row.
        ours_all = {n: r for n, r in by.items()
                    if n.startswith("ferrocorn") and not r.failed and (r.rps or w.idle)}
        peers = {n: r for n, r in by.items() if not n.startswith("ferrocorn") and not r.failed}
        for ours_name, ours in ours_all.items():
            for name, r in peers.items():
                if w.idle and isinstance(ours, WsIdleResult) and isinstance(r, WsIdleResult) \
                        and r.kib_per_conn:
                    lines.append(f"| {w.name}, KiB per connection | {ours_name}: "
                                 f"{ours.kib_per_conn:.1f} | {name}: {r.kib_per_conn:.1f} | "
                                 f"{ours.kib_per_conn / r.kib_per_conn:.2f}x as much | - |")
                elif not w.idle and r.rps:
                    p99 = f"{ours.p99_ms / r.p99_ms:.2f}x" if r.p99_ms else "-"
                    lines.append(f"| {w.name}, messages/s | {ours_name}: {ours.rps:,.0f} | "
                                 f"{name}: {r.rps:,.0f} | {ours.rps / r.rps:.2f}x | {p99} |")
    return "\n".join(lines)


def run_ws(workloads: list[WsWorkload], builds: list[tuple[str, str]], wanted: set[str] | None,
           seconds: float, reps: int, idle_per_worker: int
           ) -> tuple[dict[str, dict[str, Result]], list[str]]:
    """Every chosen WebSocket workload, printed as it is measured."""
    specs = ws_servers(builds)
    if wanted:
        specs = [s for s in specs if s.name in wanted]
    names = list(dict.fromkeys(s.name for s in specs))
    results: dict[str, dict[str, Result]] = {}
    for w in workloads:
        chosen = [s for s in specs if w.interface in s.serves]
        if w.idle:
            results[w.name] = {s.name: measure_ws_idle(s, w, idle_per_worker) for s in chosen}
        else:
            results[w.name] = measure_ws_echo(chosen, w, seconds, reps)
        for name, r in results[w.name].items():
            print(f"{w.name:>22} | {name:<18} {r.rps:>9,.0f} msg/s  p50 {r.p50_ms:6.2f} ms  "
                  f"p99 {r.p99_ms:7.2f} ms  errors {r.errors:<5} RSS {r.rss_mib:7.1f} MiB "
                  f"{r.note}", flush=True)
    return results, names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--reps", type=int, default=3, help="wrk runs per server and workload")
    parser.add_argument("--quick", action="store_true", help="1 s runs, 1 repetition")
    parser.add_argument("--only", help="comma-separated workload names to run ('idle' for the "
                        "idle connections, WSGI and ASGI; 'asgi idle' for the ASGI ones alone; a "
                        "partial run leaves bench/results/latest.* alone)")
    parser.add_argument("--servers", help="comma-separated server names to run (ferrocorn is "
                        "always included)")
    parser.add_argument("--ferrocorn", help="the ferrocorn executable measured as 'ferrocorn' "
                        "(default: .venv's)")
    parser.add_argument("--ferrocorn-build", action="append", default=[], metavar="LABEL=PATH",
                        help="another ferrocorn executable, measured as the server 'ferrocorn "
                        "LABEL' with the same arguments (another build's wheel, say: one-pass "
                        "against profile-guided)")
    parser.add_argument("--ws-idle", type=int, default=10_000, metavar="N",
                        help="idle WebSockets per worker in the 'ws idle' row (default 10,000)")
    parser.add_argument("--own-session", action="store_true",
                        help="start each server in a session of its own, as before 2026-12-07 "
                        "(with autogroup scheduling this caps the load generator at half a core: "
                        "see OWN_SESSION)")
    args = parser.parse_args()
    if args.own_session:
        global OWN_SESSION
        OWN_SESSION = True
    if args.ferrocorn:
        global FERROCORN
        FERROCORN = str(Path(args.ferrocorn).absolute())
    if args.quick:
        args.duration, args.reps = 1.0, 1
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (make bench installs it)")
    if not shutil.which("h2load"):
        print("h2load (nghttp2-client) is not installed: no HTTP/2 workloads", flush=True)
        WORKLOADS[:] = [w for w in WORKLOADS if not w.h2]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # The ASGI idle row holds 20,000 connections: as root the hard limit can go up too.
    want = 2 * IDLE_ASGI_PER_WORKER + 4096
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, want)), hard))

    specs = servers()
    ours = next((s for s in specs if s.name == "ferrocorn"), None)
    for build in args.ferrocorn_build:
        label, path = build.split("=", 1)
        if ours is None:
            raise SystemExit(f"no ferrocorn at {FERROCORN} to measure {label} beside")
        specs.append(replace(ours, name=f"ferrocorn {label}",
                             argv=[str(Path(path).absolute()), *ours.argv[1:]]))
    if args.servers:
        wanted = {"ferrocorn", *args.servers.split(",")}
        specs = [s for s in specs if s.name in wanted]
    names = [s.name for s in specs]
    partial = bool(args.only or args.servers)
    chosen = [w for w in WORKLOADS if not args.only or w.name in args.only.split(",")]
    chosen_static = [w for w in STATIC_WORKLOADS
                     if not args.only or w.name in args.only.split(",")
                     or "static" in args.only.split(",")]
    per_run = 1 + args.duration * args.reps + 3
    estimate = len(specs) * (len(chosen) * per_run + 10)
    print(f"servers: {', '.join(names)}; workloads: {len(chosen)} + idle; "
          f"about {estimate / 60:.0f} min", flush=True)

    if any(w.app.startswith("djsite") for w in chosen):
        django_project()
    results: dict[str, dict[str, Result]] = {}
    tls = certificate() if any(w.tls for w in chosen) else None
    for w in chosen:
        results[w.name] = measure([s for s in specs if s.runs(w)], w, args.duration,
                                  args.reps, tls)
        for name, r in results[w.name].items():
            print(f"{w.name:>18} | {name:<16} {r.rps:>10,.0f} req/s  p99 {r.p99_ms:7.2f} ms"
                  f"  errors {r.errors:<5} RSS {r.rss_mib:6.1f} MiB  CPU/req server "
                  f"{r.server_us_per_req:,.0f} us client {r.client_us_per_req:,.0f} us {r.note}",
                  flush=True)
    if chosen_static:
        import tempfile

        root = static_dir(BENCH)
        os.environ["BENCH_STATIC_DIR"] = str(root)
        with tempfile.TemporaryDirectory() as tmp:
            sspecs = static_servers(root, Path(tmp))
            if args.servers:
                sspecs = [s for s in sspecs if s.name in wanted]
            for name in (s.name for s in sspecs):
                if name not in names:
                    names.append(name)
            for w in chosen_static:
                results[w.name] = measure(sspecs, w, args.duration, args.reps)
                for name, r in results[w.name].items():
                    print(f"{w.name:>18} | {name:<16} {r.rps:>10,.0f} req/s  p99 "
                          f"{r.p99_ms:7.2f} ms  errors {r.errors:<5} RSS {r.rss_mib:6.1f} MiB "
                          f"{r.note}", flush=True)
    if not args.only or "idle" in args.only.split(","):
        results[IDLE] = {}
        for spec in specs:
            if (spec.reference_for and IDLE not in spec.reference_for) \
                    or "wsgi" not in spec.serves:
                continue
            r = measure_idle(spec, 2000, 200)
            results[IDLE][spec.name] = r
            print(f"{IDLE:>18} | {spec.name:<16} p50 {r.p50_ms:.2f} ms p99 {r.p99_ms:.2f} ms  "
                  f"errors {r.errors:<5} RSS {r.rss_mib:6.1f} MiB  {r.note}", flush=True)
    if not args.only or {"idle", "asgi idle"} & set(args.only.split(",")):
        results[IDLE_ASGI] = {}
        count = 2 * IDLE_ASGI_PER_WORKER
        for spec in specs:
            if spec.reference_for or "asgi" not in spec.serves:
                continue
            # The per-worker connection caps are raised past the count: ferrocorn's
            # --worker-connections (Gunicorn's 1,000 by default; over it, idle connections are
            # reclaimed) and Granian's --backpressure (backlog / workers, 512: over it, new
            # connections wait unaccepted).
            cap = str(IDLE_ASGI_PER_WORKER + IDLE_ASGI_PER_WORKER // 5)
            flag = {"granian asgi": "--backpressure"}.get(
                spec.name, "--worker-connections" if spec.name.startswith("ferrocorn") else "")
            if flag:
                spec = replace(spec, argv=[spec.argv[0], flag, cap, *spec.argv[1:]])
            r = measure_idle(spec, count, 200, app="asgi_hello:app")
            results[IDLE_ASGI][spec.name] = r
            print(f"{'ASGI idle':>18} | {spec.name:<16} p50 {r.p50_ms:.2f} ms p99 "
                  f"{r.p99_ms:.2f} ms  errors {r.errors:<5} RSS {r.rss_mib:6.1f} MiB  {r.note}",
                  flush=True)

    ws_results, ws_names = {}, []
    only = args.only.split(",") if args.only else []
    chosen_ws = [w for w in WS_WORKLOADS if not only or w.name in only or "ws" in only]
    if chosen_ws and not WS_LOAD.exists():
        print(f"{WS_LOAD} is not built (make bench builds it): no WebSocket rows", flush=True)
    elif chosen_ws:
        builds = [tuple(b.split("=", 1)) for b in args.ferrocorn_build]
        ws_results, ws_names = run_ws(chosen_ws, [(label, str(Path(path).absolute()))
                                                  for label, path in builds],
                                      wanted if args.servers else None, args.duration,
                                      args.reps, args.ws_idle)

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    header = (f"# Benchmark {stamp}\n\n`make bench` (wrk -t1, {args.duration:g} s x {args.reps}, "
              f"medians); ferrocorn `{' '.join(FERROCORN_ARGS)}`; {os.cpu_count()} CPUs.\n\n")
    text = header + table(results, names) + "\n\n## ferrocorn vs the best peer\n\n" + \
        ratios(results) + "\n"
    if chosen_static:
        text += "\n## Static files: ferrocorn's req/s over each peer's\n\n" + \
            static_ratios(results) + "\n"
    text += "\n## Each shape\n\n" + per_shape(results, names) + "\n"
    if ws_results:
        text += ("\n## WebSockets (ws_load: one thread, one 1 KiB text message in flight per "
                 "connection)\n\n" + ws_tables(ws_results, ws_names, args.ws_idle) + "\n")
    print("\n" + text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stamp}.md").write_text(text)
    if partial:
        print(f"partial run: written to {RESULTS / (stamp + '.md')} only")
        return
    (RESULTS / "latest.md").write_text(text)
    data = {w: {s: asdict(r) for s, r in by.items()} for w, by in results.items()}
    data.update({w: {s: asdict(r) for s, r in by.items()} for w, by in ws_results.items()})
    (RESULTS / "latest.json").write_text(json.dumps({"when": stamp, "results": data}, indent=1))
    try:
        chart(results, names, RESULTS / "latest.png")
        print(f"chart: {RESULTS / 'latest.png'}")
    except ImportError:
        print("matplotlib not installed: no chart")


if __name__ == "__main__":
    main()
