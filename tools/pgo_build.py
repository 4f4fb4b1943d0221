"""Builds ferrocorn's release wheel with profile-guided optimisation (PGO).

1. An instrumented wheel is built (``-Cprofile-generate``) in its own target directory.
2. It serves a short training load: the benchmark's apps (``bench/apps``) driven by
   ``http.client`` on 127.0.0.1, a bounded number of requests each.
3. ``llvm-profdata`` merges the counts the processes wrote when they exited.
4. The release wheel is built with ``-Cprofile-use``: LLVM lays the hot path out together and
   moves cold code (errors, rare branches) out of it.

When it came in this cut the instructions per hello request by 11% and the instruction-cache
misses by 69% (callgrind), for 7% more requests per second (docs/benchmarks.md). At the head of
2026-12-07 it hid its gain behind one 3,200-byte ``memset`` per request that the profile's
inlining brought in (callgrind counts it a byte at a time); with that array left uninitialised
it counts 18,405 instructions per hello against 21,034 one-pass, 12.5% fewer (docs/install.md,
"What the profile buys a wheel"). The build fails when the profile lacks the core crate's
request path among its hottest functions (``check_profile``). Where ``llvm-profdata`` cannot be
had (no rustup to add the ``llvm-tools`` component), the plain release wheel is built and a
warning says so.

``pip install .`` runs the same build through the in-tree build backend
(``tools/ferrocorn_build.py``); ``make install`` runs this script for the manylinux2014 wheel of
``.venv``'s interpreter, and so does ``make wheels`` for all the release wheels: there the build
is for a Rust target (``--target``), linked with zig
(``--zig``, maturin's means of building for an old glibc or for musl from this machine) and
tagged and checked by maturin for a platform (``--compatibility manylinux2014`` or
``musllinux_1_2``); one training run, then one final build per interpreter (``--interpreter``)
with the same profile. The training runs the instrumented build, so it needs an interpreter
that can load it (``--train-python``, the build's ``--python`` by default): a musl build needs
a musl Python.

Each build tells the compiler how it was made (``FERROCORN_BUILD_PGO``,
``FERROCORN_BUILD_WHEEL_TAG``), which ``ferrocorn --version`` prints; the wheel's tag is checked
against it.

Usage::

    python tools/pgo_build.py --python .venv/bin/python --out dist
    python tools/pgo_build.py --python .venv/bin/python --out dist --zig \
        --target x86_64-unknown-linux-gnu --compatibility manylinux2014 \
        --interpreter python3.9 python3.10 python3.11 python3.12 python3.13
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
#: The one-pass builds of `--one-pass` (other RUSTFLAGS: kept apart from the profile-guided
#: build's artifacts, which would otherwise be rebuilt after it).
ONE_PASS_DIR = ROOT / "target" / "one-pass"

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


@dataclass(frozen=True)
class Platform:
    """What the wheels are built for: a Rust target, the linker, maturin's platform tag."""

    #: The Rust target triple; None: the host's, without ``--target``.
    target: str | None = None
    #: Link with zig (maturin's ``--zig``, from the ``ziglang`` package): glibc 2.17 or musl
    #: from this machine.
    zig: bool = False
    #: maturin's ``--compatibility``: ``linux`` (the plain tag, for a local install),
    #: ``manylinux2014`` or ``musllinux_1_2``; maturin checks the wheel against it.
    compatibility: str = "linux"

    def maturin_args(self) -> tuple[str, ...]:
        args: list[str] = ["--compatibility", self.compatibility]
        if self.target:
            args += ["--target", self.target]
        if self.zig:
            args.append("--zig")
        if self.compatibility != "linux":
            # Fail on anything the tag does not allow rather than graft libraries in.
            args += ["--auditwheel", "check"]
        return tuple(args)

    def triple(self) -> str:
        return self.target or host_triple()

    def platform_tag(self) -> str:
        """The platform part of the wheel's tag, as maturin names it."""
        arch = self.triple().split("-")[0]
        if self.compatibility in ("linux", "off"):
            return f"linux_{arch}"
        if self.compatibility in ("manylinux2014", "manylinux_2_17"):
            return f"manylinux2014_{arch}.manylinux_2_17_{arch}"
        if self.compatibility.startswith(("manylinux_", "musllinux_")):
            return f"{self.compatibility}_{arch}"
        raise SystemExit(f"unknown --compatibility {self.compatibility}")

    def libc(self) -> str:
        """``musl`` or ``gnu``: which C library the build links to."""
        return "musl" if self.triple().endswith("-musl") else "gnu"

    def key(self) -> str:
        """A directory name for this platform's profile."""
        return f"{self.triple()}-{self.compatibility}"


HOST = Platform()


def host_triple() -> str:
    return next(line.split()[1] for line in subprocess.run(
        ["rustc", "-vV"], capture_output=True, text=True, check=True).stdout.splitlines()
        if line.startswith("host:"))


def interpreter_tag(python: str) -> str:
    """The interpreter and ABI part of a wheel tag for `python`: ``cp311-cp311``,
    ``cp314-cp314t`` (free-threaded)."""
    code = ("import sys, sysconfig; v = sys.version_info; "
            "t = 't' if sysconfig.get_config_var('Py_GIL_DISABLED') else ''; "
            "print(f'cp{v[0]}{v[1]}-cp{v[0]}{v[1]}{t}')")
    return subprocess.run([python, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


#: The CPython versions ferrocorn supports (pyproject.toml: requires-python >= 3.9; pyo3 0.30).
SUPPORTED = [(3, minor) for minor in range(9, 15)]


def find_interpreters() -> list[str]:
    """One interpreter per supported CPython version found here: ``python3.X`` on PATH, else the
    newest under pyenv's versions (a pyenv shim for a version not selected does not run)."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = []
    for major, minor in SUPPORTED:
        name = f"python{major}.{minor}"
        candidates = [shutil.which(name)] + sorted(
            pyenv.glob(f"{major}.{minor}.*/bin/{name}"),
            key=lambda p: [int(x) if x.isdigit() else 0 for x in p.parts[-3].split(".")],
            reverse=True)
        for candidate in filter(None, candidates):
            ran = subprocess.run([str(candidate), "-c", "import sys; print(sys.version_info[:2])"],
                                 capture_output=True, text=True, check=False)
            if ran.returncode == 0 and ran.stdout.strip() == str((major, minor)):
                found.append(str(candidate))
                break
    return found


def runs_on(python: str, libc: str) -> bool:
    """True when `python` is linked to `libc` (``musl`` or ``gnu``): it can load a build for it."""
    code = "import platform; print(platform.libc_ver()[0] or 'musl')"
    ran = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    return {"glibc": "gnu", "musl": "musl"}.get(ran.stdout.strip()) == libc


def resolve(python: str) -> str:
    """An interpreter given by name (``python3.12``) or path, as an absolute path."""
    found = shutil.which(python) if os.sep not in python else python
    if found is None:
        raise SystemExit(f"interpreter {python} not found")
    return str(Path(found).absolute())


def llvm_profdata() -> Path | None:
    """The llvm-profdata of rustc's own LLVM (the raw profile format follows LLVM's version),
    adding rustup's llvm-tools component when it is missing."""
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True,
                             check=True).stdout.strip()
    tool = Path(sysroot) / "lib" / "rustlib" / host_triple() / "bin" / "llvm-profdata"
    if not tool.exists() and shutil.which("rustup"):
        try:
            subprocess.run(["rustup", "component", "add", "llvm-tools"], check=False,
                           timeout=300)
        except subprocess.TimeoutExpired:
            print("warning: rustup component add llvm-tools timed out", file=sys.stderr)
    return tool if tool.exists() else None


def maturin_command(python: str) -> str:
    """maturin beside the interpreter (a venv's) or beside the one running this script, else
    the one on PATH (pip's build environment puts its scripts there)."""
    for beside in (Path(python).parent / "maturin", Path(sys.executable).parent / "maturin"):
        if beside.exists():
            return str(beside)
    found = shutil.which("maturin")
    if found is None:
        raise SystemExit("maturin is not installed (pip install 'maturin>=1.5,<2')")
    return found


#: What maturin's zig mode (cargo-zigbuild) sets for cargo: build scripts and proc macros are
#: not given the target's settings. Cargo then hashes that into the metadata of every crate
#: built for the host, hence of every crate that uses one (a derive, a build script), hence into
#: every symbol name; a profile's counts are found by symbol name. The instrumented build, which
#: zig cannot link, is given the same, so its names are the zig-linked release build's.
ZIG_HOST_CONFIG = {
    "CARGO_TARGET_APPLIES_TO_HOST": "false",
    "CARGO_UNSTABLE_TARGET_APPLIES_TO_HOST": "true",
    "__CARGO_TEST_CHANNEL_OVERRIDE_DO_NOT_USE_THIS": "nightly",
}


def maturin(python: str, out: Path, target_dir: Path, rustflags: str, platform: Platform,
            pgo: str, env_extra: dict[str, str] | None = None) -> Path:
    """Builds the release wheel for `python` into `out` (replacing an older one of the same
    interpreter and platform) and returns its path. `pgo` is what ``ferrocorn --version`` says:
    ``1``, ``0`` or ``instrumented``."""
    out.mkdir(parents=True, exist_ok=True)
    tag = f"{interpreter_tag(python)}-{platform.platform_tag()}"
    for old in out.glob(f"ferrocorn-*-{tag}.whl"):
        old.unlink()
    before = set(out.glob("ferrocorn-*.whl"))
    flags = " ".join(f for f in (os.environ.get("RUSTFLAGS", ""), rustflags) if f)
    command = maturin_command(python)
    # maturin finds zig as `python3 -m ziglang`: the python3 beside maturin (the venv's) has it.
    path = os.pathsep.join([str(Path(command).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "RUSTFLAGS": flags, "CARGO_TARGET_DIR": str(target_dir),
           "FERROCORN_BUILD_PGO": pgo, "FERROCORN_BUILD_WHEEL_TAG": tag, "PATH": path,
           **(env_extra or {})}
    subprocess.run([command, "build", "--release", "--interpreter", python,
                    "--out", str(out), *platform.maturin_args()], env=env, check=True, cwd=ROOT)
    built = set(out.glob("ferrocorn-*.whl")) - before
    if len(built) != 1:
        raise SystemExit(f"expected one new wheel in {out}, found {sorted(built)}")
    wheel = built.pop()
    if not wheel.name.endswith(f"-{tag}.whl"):
        raise SystemExit(f"{wheel.name}: expected the tag {tag} (what ferrocorn --version says)")
    return wheel


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


#: The core crate's symbols (legacy mangling: ``_ZN9ferrocorn...``); the request path is there.
CORE_SYMBOL = "_ZN9ferrocorn"


def check_profile(profdata: Path, merged: Path) -> None:
    """Fails the build unless the training's counts cover the core crate's request path: its
    hottest functions must be the core's (a worker that wrote nothing on exit, or training
    that reached no app, leaves the profile without them, and the "profile-guided" build
    would be a one-pass build in all but name)."""
    shown = subprocess.run([str(profdata), "show", "--topn=20", str(merged)],
                           capture_output=True, text=True, check=True).stdout
    top = [line.strip() for line in shown.splitlines() if "max count" in line]
    core = [line for line in top if CORE_SYMBOL in line]
    total = next((line.split(":")[1].strip() for line in shown.splitlines()
                  if line.startswith("Total functions:")), "?")
    if not core:
        raise SystemExit(f"pgo: the profile ({total} functions) has none of the core crate's "
                         f"among its 20 hottest: the training did not reach the request path\n"
                         + "\n".join(top))
    print(f"pgo: profile of {total} functions, {len(core)} of the 20 hottest in the core crate "
          f"(hottest: {core[0]})", flush=True)


def one_pass(interpreters: list[str], out: Path, platform: Platform, why: str) -> list[Path]:
    """The one-pass wheels, with a warning that says why."""
    print(f"warning: building without PGO: {why}", file=sys.stderr, flush=True)
    return [maturin(py, out, ROOT / "target", "", platform, "0") for py in interpreters]


def build_wheels(train_python: str, out: Path, platform: Platform = HOST,
                 interpreters: list[str] | None = None, pgo: bool = True) -> list[Path]:
    """Builds the profile-guided release wheels for `platform` into `out`, one per interpreter
    (`train_python` alone by default), and returns their paths. The instrumented build is
    built for and trained with `train_python`; every final build uses that one profile (the
    Rust code is the same for each interpreter, but for pyo3's few version-dependent
    functions, whose counts the compiler then leaves out). Without llvm-profdata, or with
    `pgo` False, the one-pass wheels are built, and a warning says so."""
    interpreters = interpreters or [train_python]
    if not pgo:
        print(f"one-pass build for {platform.key()}", flush=True)
        return [maturin(py, out, ONE_PASS_DIR, "", platform, "0") for py in interpreters]
    if platform.libc() != HOST.libc() and not runs_on(train_python, platform.libc()):
        return one_pass(interpreters, out, platform,
                        f"the instrumented {platform.triple()} build needs a {platform.libc()} "
                        f"Python to train with (--python), and {train_python} is not one")
    profdata = llvm_profdata()
    if profdata is None:
        return one_pass(interpreters, out, platform,
                        "llvm-profdata is not available (rustup component add llvm-tools)")

    pgo_dir = PGO_DIR if platform == HOST else PGO_DIR / platform.key()
    raw = pgo_dir / "raw"
    shutil.rmtree(raw, ignore_errors=True)
    raw.mkdir(parents=True)
    started = time.monotonic()
    # zig cannot link the instrumented build (it takes rustc's `-u __llvm_profile_runtime`
    # for a file): the system's linker does, for the same target, with cargo configured as in
    # zig mode (ZIG_HOST_CONFIG), so that its symbol names, which the counts are filed under,
    # are the release build's.
    trained_on = Platform(platform.triple(), False, "linux") if platform.zig else platform
    wheel = maturin(train_python, pgo_dir / "wheel", PGO_DIR / "target",
                    f"-Cprofile-generate={raw}", trained_on, "instrumented",
                    ZIG_HOST_CONFIG if platform.zig else None)
    instrumented = time.monotonic()
    # Without --target, RUSTFLAGS instrument the build scripts and proc macros too, which
    # wrote their own counts while the build ran: the profile is the training's alone.
    shutil.rmtree(raw)
    raw.mkdir()
    with tempfile.TemporaryDirectory() as package:
        with zipfile.ZipFile(wheel) as z:
            z.extractall(package)
        train(train_python, Path(package))
    trained = time.monotonic()

    merged = pgo_dir / "merged.profdata"
    subprocess.run([str(profdata), "merge", "-o", str(merged), str(raw)], check=True)
    check_profile(profdata, merged)
    wheels = []
    for py in interpreters:
        began = time.monotonic()
        wheels.append(maturin(py, out, ROOT / "target", f"-Cprofile-use={merged}", platform,
                              "1"))
        print(f"pgo: {wheels[-1].name} built in {time.monotonic() - began:.0f} s", flush=True)
    done = time.monotonic()
    print(f"pgo: instrumented build {instrumented - started:.0f} s, training "
          f"{trained - instrumented:.0f} s, final builds {done - trained:.0f} s", flush=True)
    return wheels


def build(python: str, out: Path, platform: Platform = HOST) -> Path:
    """Builds the profile-guided release wheel for `python` into `out` (the one-pass wheel
    where llvm-profdata cannot be had) and returns its path."""
    return build_wheels(python, out, platform)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", required=True,
                        help="the interpreter that trains the instrumented build (and the one "
                        "the wheel is built for without --interpreter)")
    parser.add_argument("--interpreter", nargs="+", default=None,
                        help="the interpreters to build wheels for (names or paths; 'auto': "
                        "one per supported CPython version found here)")
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="where the wheels go")
    parser.add_argument("--target", help="the Rust target triple (default: the host's)")
    parser.add_argument("--zig", action="store_true", help="link with zig (maturin --zig)")
    parser.add_argument("--compatibility", default="linux",
                        help="maturin's platform tag: linux (default), manylinux2014, "
                        "musllinux_1_2")
    parser.add_argument("--one-pass", action="store_true",
                        help="no PGO: the one-pass build (in target/one-pass), to compare")
    args = parser.parse_args()
    platform = Platform(args.target, args.zig, args.compatibility)
    interpreters = None
    if args.interpreter == ["auto"]:
        interpreters = find_interpreters()
        print(f"interpreters: {' '.join(interpreters)}", flush=True)
    elif args.interpreter:
        interpreters = [resolve(p) for p in args.interpreter]
    wheels = build_wheels(resolve(args.python), args.out, platform, interpreters,
                          pgo=not args.one_pass)
    for wheel in wheels:
        print(f"built {wheel} ({wheel.stat().st_size / 2**20:.1f} MiB)", flush=True)


if __name__ == "__main__":
    main()
