"""Builds ferrocorn's release wheel with profile-guided optimisation (PGO).

1. An instrumented wheel is built (``-Cprofile-generate``) in its own target directory.
2. It serves a short training load: the benchmark's apps (``bench/apps``) driven by
   ``http.client`` on 127.0.0.1, a bounded number of requests each.
3. ``llvm-profdata`` merges the counts the processes wrote when they exited.
4. The release wheel is built with ``-Cprofile-use``: LLVM lays the hot path out together and
   moves cold code (errors, rare branches) out of it.

On hello this cut the instructions per request by 9.5% and the instruction-cache misses by 63%
(callgrind), for 7% more requests per second (docs/benchmarks.md). Where ``llvm-profdata`` cannot
be had (no rustup to add the ``llvm-tools`` component), the plain release wheel is built and a
warning says so.

``pip install .`` runs the same build through the in-tree build backend
(``tools/ferrocorn_build.py``); ``make install`` runs this script.

Usage: ``python tools/pgo_build.py --python .venv/bin/python --out dist``
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "bench" / "apps"
PGO_DIR = ROOT / "target" / "pgo"

# The benchmark's helpers: a free port, and waiting for a server's first answer.
sys.path.insert(0, str(ROOT / "bench"))
from instructions import wait_ready  # noqa: E402
from run import free_port  # noqa: E402


@dataclass(frozen=True)
class Lesson:
    """One app of the training load and how it is driven."""

    app: str
    clients: int
    requests: int  # per client
    method: str = "GET"
    body: bytes = b""
    path: str = "/"
    #: Extra arguments; {static} is a directory holding site.css (2 KiB) and app.js (64 KiB).
    args: tuple[str, ...] = ()
    #: A module the app imports; the lesson is skipped where it is not installed (a
    #: ``pip install .`` builds with whatever the interpreter has).
    needs: str | None = None


LESSONS = [
    # The common case first and most: a small response on a keep-alive connection.
    Lesson("hello:app", clients=8, requests=3000),
    Lesson("flask_hello:app", clients=4, requests=500, needs="flask"),
    Lesson("echo:app", clients=4, requests=300, method="POST", body=b"p" * 65536),
    Lesson("big:app", clients=4, requests=40),
    # Blocking calls: the app thread pool rather than the I/O thread.
    Lesson("sleep50:app", clients=48, requests=3),
    # Static files (--static-map): a small one from memory, a larger one with sendfile.
    Lesson("hello:app", clients=4, requests=1500, path="/static/site.css",
           args=("--static-map", "/static={static}")),
    Lesson("hello:app", clients=4, requests=300, path="/static/app.js",
           args=("--static-map", "/static={static}")),
]


def llvm_profdata() -> Path | None:
    """The llvm-profdata of rustc's own LLVM (the raw profile format follows LLVM's version),
    adding rustup's llvm-tools component when it is missing."""
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True,
                             check=True).stdout.strip()
    host = next(line.split()[1] for line in subprocess.run(
        ["rustc", "-vV"], capture_output=True, text=True, check=True).stdout.splitlines()
        if line.startswith("host:"))
    tool = Path(sysroot) / "lib" / "rustlib" / host / "bin" / "llvm-profdata"
    if not tool.exists() and shutil.which("rustup"):
        try:
            subprocess.run(["rustup", "component", "add", "llvm-tools"], check=False,
                           timeout=300)
        except subprocess.TimeoutExpired:
            print("warning: rustup component add llvm-tools timed out", file=sys.stderr)
    return tool if tool.exists() else None


def maturin_command(python: str) -> str:
    """maturin beside the interpreter (a venv's), else the one on PATH (pip's build
    environment puts its scripts there)."""
    beside = Path(python).parent / "maturin"
    if beside.exists():
        return str(beside)
    found = shutil.which("maturin")
    if found is None:
        raise SystemExit("maturin is not installed (pip install 'maturin>=1.5,<2')")
    return found


def maturin(python: str, out: Path, target_dir: Path, rustflags: str,
            extra: tuple[str, ...] = ()) -> Path:
    """Builds the release wheel into `out` and returns its path."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("ferrocorn-*.whl"):
        old.unlink()
    flags = " ".join(f for f in (os.environ.get("RUSTFLAGS", ""), rustflags) if f)
    env = {**os.environ, "RUSTFLAGS": flags, "CARGO_TARGET_DIR": str(target_dir)}
    subprocess.run([maturin_command(python), "build", "--release", "--interpreter", python,
                    "--out", str(out), *extra], env=env, check=True, cwd=ROOT)
    return next(out.glob("ferrocorn-*.whl"))


def importable(python: str, module: str, env: dict[str, str]) -> bool:
    """True when `python` can import `module` with `env`."""
    return subprocess.run([python, "-c", f"import {module}"], capture_output=True, env=env,
                          check=False).returncode == 0


def drive(port: int, lesson: Lesson, errors: list[str]) -> None:
    """One client: `lesson.requests` requests on one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for _ in range(lesson.requests):
            conn.request(lesson.method, lesson.path, body=lesson.body or None)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                errors.append(f"{lesson.app}: status {resp.status}")
                return
    except (OSError, http.client.HTTPException) as e:
        errors.append(f"{lesson.app}: {e}")
    finally:
        conn.close()


def train(python: str, package: Path) -> None:
    """Serves each lesson from the instrumented build in `package`; the processes write their
    counts when they exit."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(package), str(APPS)])}
    static = Path(package) / "static-lesson"
    static.mkdir()
    (static / "site.css").write_bytes(b".c { margin: 0; }\n" * 120)
    (static / "app.js").write_bytes(b"var x = 1;\n" * 6000)
    for lesson in LESSONS:
        if lesson.needs and not importable(python, lesson.needs, env):
            print(f"pgo: {lesson.app} skipped ({lesson.needs} is not installed)", flush=True)
            continue
        port = free_port()
        args = [a.format(static=static) for a in lesson.args]
        proc = subprocess.Popen(
            [python, "-m", "ferrocorn", "-w", "2", "--log-level", "warning",
             "-b", f"127.0.0.1:{port}", *args, lesson.app],
            env=env, cwd=APPS, stdout=subprocess.DEVNULL)
        try:
            wait_ready(port, proc, time.monotonic() + 60)
            errors: list[str] = []
            clients = [threading.Thread(target=drive, args=(port, lesson, errors))
                       for _ in range(lesson.clients)]
            for c in clients:
                c.start()
            for c in clients:
                c.join()
            if errors:
                raise SystemExit(f"training failed: {errors[0]}")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        print(f"pgo: trained on {lesson.app}{lesson.path if lesson.path != '/' else ''} "
              f"({lesson.clients} x {lesson.requests} requests)", flush=True)


def build(python: str, out: Path, extra: tuple[str, ...] = ()) -> Path:
    """Builds the profile-guided release wheel for `python` into `out` (the one-pass wheel
    where llvm-profdata cannot be had) and returns its path. `extra`: maturin arguments."""
    profdata = llvm_profdata()
    if profdata is None:
        print("warning: llvm-profdata is not available (rustup component add llvm-tools); "
              "building without PGO", file=sys.stderr)
        return maturin(python, out, ROOT / "target", "", extra)

    raw = PGO_DIR / "raw"
    shutil.rmtree(raw, ignore_errors=True)
    raw.mkdir(parents=True)
    started = time.monotonic()
    wheel = maturin(python, PGO_DIR / "wheel", PGO_DIR / "target",
                    f"-Cprofile-generate={raw}", extra)
    instrumented = time.monotonic()
    with tempfile.TemporaryDirectory() as package:
        with zipfile.ZipFile(wheel) as z:
            z.extractall(package)
        train(python, Path(package))
    trained = time.monotonic()

    merged = PGO_DIR / "merged.profdata"
    subprocess.run([str(profdata), "merge", "-o", str(merged), str(raw)], check=True)
    wheel = maturin(python, out, ROOT / "target", f"-Cprofile-use={merged}", extra)
    done = time.monotonic()
    print(f"pgo: instrumented build {instrumented - started:.0f} s, training "
          f"{trained - instrumented:.0f} s, final build {done - trained:.0f} s", flush=True)
    return wheel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", required=True, help="the interpreter to build for")
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="where the wheel goes")
    args = parser.parse_args()
    build(str(Path(args.python).absolute()), args.out)


if __name__ == "__main__":
    main()
