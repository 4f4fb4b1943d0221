"""The smuggling harness (tests/smuggling.py) against ferrocorn, Gunicorn and Granian.

    .bench-venv/bin/python bench/smuggling.py [--mutants 1000] [--seed 21] [--servers ...]

Each server serves tests/apps/smuggle_app.py (the recording app, without wsgiref's validator)
with one worker process on 127.0.0.1 behind a fresh nginx (upstream keepalive pool of one
connection); the known smuggling requests and the seeded mutants go through nginx and straight
to the server. Prints one row per server and every failed verdict. Not a test: it compares.
ferrocorn is the one in .venv (make install); Gunicorn and Granian come from the bench venv
(make .bench-venv/.stamp).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from smuggling import (  # noqa: E402
    APPS_DIR,
    NGINX,
    SUMMARY_HEAD,
    Harness,
    Records,
    free_port,
    known_cases,
    mutants,
    nginx_in_front,
    poll,
    record_env,
    summary_row,
)

FERROCORN = str(ROOT / ".venv" / "bin" / "ferrocorn")
PEERS = Path(sys.executable).parent
APP = "smuggle_app:raw_app"


def servers() -> dict[str, list[str]]:
    return {
        "ferrocorn": [FERROCORN, "-w", "1", "--threads", "4", "--keep-alive", "30",
                      "-b", "127.0.0.1:{port}", "--pythonpath", str(APPS_DIR), APP],
        "gunicorn gthread": [str(PEERS / "gunicorn"), "-w", "1", "-k", "gthread",
                             "--threads", "4", "--keep-alive", "30", "-b", "127.0.0.1:{port}",
                             "--chdir", str(APPS_DIR), APP],
        "gunicorn sync": [str(PEERS / "gunicorn"), "-w", "1", "-b", "127.0.0.1:{port}",
                          "--chdir", str(APPS_DIR), APP],
        "granian": [str(PEERS / "granian"), "--interface", "wsgi", "--workers", "1",
                    "--blocking-threads", "4", "--http", "1", "--host", "127.0.0.1",
                    "--port", "{port}", "--working-dir", str(APPS_DIR), APP],
    }


def version(name: str) -> str:
    if name == "ferrocorn":
        out = subprocess.run([FERROCORN, "--version"], capture_output=True, text=True)
        return (out.stdout or out.stderr).strip().split()[-1] if out.returncode == 0 else "?"
    try:
        return metadata.version(name.split()[0])
    except metadata.PackageNotFoundError:
        return "?"


def answered(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def run_one(name: str, argv: list[str], cases: list, budget: float,
            folder: Path) -> tuple[Harness, bool]:
    """The harness after the run, and whether the server was still running at its end."""
    port = free_port()
    records = folder / "records"
    env = dict(os.environ, **record_env(records))
    proc = subprocess.Popen([a.format(port=port) for a in argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        if not poll(lambda: answered(port), 30, 0.05):
            raise SystemExit(f"{name} did not answer on port {port}")
        with nginx_in_front(folder / "nginx", port) as nginx:
            h = Harness(port, Records(records), nginx)
            h.records.read_new()  # the readiness probes
            h.run(cases, budget)
            alive = proc.poll() is None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
    return h, alive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--budget", type=float, default=300.0,
                        help="seconds per server (cases left when it runs out are not run)")
    parser.add_argument("--servers", default=",".join(servers()))
    parser.add_argument("--details", type=int, default=40,
                        help="failed verdicts to print per server and mode")
    args = parser.parse_args()
    if NGINX is None:
        raise SystemExit("nginx is not installed (make test-deps)")
    known = known_cases()
    cases = known + mutants(known, args.mutants, args.seed)
    chosen = [s.strip() for s in args.servers.split(",") if s.strip()]
    results: dict[str, Harness] = {}
    survived: dict[str, bool] = {}
    nginx_version = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip()
    print(f"{len(known)} known cases + {args.mutants} mutants (seed {args.seed}); "
          f"{nginx_version.replace('nginx version: ', '')} in front, upstream keepalive 1")
    for name in chosen:
        argv = servers()[name]
        if not Path(argv[0]).exists():
            print(f"{name}: {argv[0]} is missing, skipped")
            continue
        with tempfile.TemporaryDirectory(prefix="smuggle-") as tmp:
            start = time.monotonic()
            results[name], survived[name] = run_one(name, argv, cases, args.budget, Path(tmp))
            print(f"{name} {version(name)}: {time.monotonic() - start:.0f} s", flush=True)
    print()
    print(SUMMARY_HEAD)
    for name, h in results.items():
        print(summary_row(f"{name} {version(name)}", h.tally))
    for name, h in results.items():
        t = h.tally
        if not survived[name]:
            print(f"\n{name}: the server process was gone at the end of the run")
        if t.backend_refusals:
            print(f"\n{name}: forwarded by nginx, answered with an error: "
                  + "; ".join(t.backend_refusals[:args.details]))
        if t.late:
            print(f"\n{name}: {t.late} records arrived after their case was judged "
                  f"(checked against nginx's log all the same)")
        if t.direct_no_close:
            print(f"\n{name}, directly: {t.direct_no_close} connections still open "
                  f"after the case timeout")
        if t.direct_silent_cases:
            print(f"\n{name}, directly: stopped at a framing error without a 4xx/5xx: "
                  + "; ".join(t.direct_silent_cases[:args.details]))
        for label, found in (("through nginx", t.mismatches), ("directly", t.direct_mismatches)):
            if not found:
                continue
            print(f"\n{name}, {label}: {len(found)} failed verdicts"
                  + (f" (first {args.details})" if len(found) > args.details else ""))
            for m in found[:args.details]:
                print(f"  - {m}")


if __name__ == "__main__":
    main()
