"""The release wheels, installed the way a user installs them (issue 30, docs/install.md).

In `make test` (the wheel `make install` built into dist/: the manylinux2014 wheel for this
interpreter, linked with zig, profile-guided as every release wheel):
- it goes into a fresh venv, with no `cargo` or `rustc` on PATH, and serves a request;
  `ferrocorn --version` there says what it says in .venv and names the wheel's tag. Its glibc
  symbol versions are at most 2.17, and pypa's auditwheel (independent of maturin's check at
  build time) finds it consistent with its tag;
- the sdist (`maturin sdist`, seconds) holds the build backend, tools/ and the training apps.

Opt-in (`-m wheels`, `make test-wheels`, which first runs `make wheels`), over wheelhouse/:
- each manylinux2014 wheel whose interpreter is on this machine, as above;
- the musllinux_1_2 wheels cannot run here (no musl Python): their tag, the libraries they link
  (the musl C library alone) and the absence of any glibc symbol are checked, and the tag the
  build recorded for `--version`;
- `pip install` of the sdist from a clean directory builds the profile-guided binary, which
  serves a request. It compiles everything twice (instrumented, then profile-guided): several
  minutes on two cores, which is why it is not in `make test`.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WHEELHOUSE = ROOT / "wheelhouse"
#: Where `make install` leaves the wheel it installs into .venv.
DIST = ROOT / "dist"
sys.path.insert(0, str(ROOT / "tools"))

import pgo_build  # noqa: E402

MANYLINUX = "manylinux2014_x86_64.manylinux_2_17_x86_64"
MUSLLINUX = "musllinux_1_2_x86_64"
#: The only library a musllinux wheel may link (auditwheel's musllinux policy): musl's C
#: library, which is also its libm, libpthread and libdl; musl's loader resolves the name to
#: itself.
MUSL_LIBC = "libc.so"

HELLO = '''
def app(environ, start_response):
    body = b"hello from " + environ["SERVER_SOFTWARE"].encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''

#: An ASGI app that says what asyncio tells it of its request's task and context (Python 3.12+
#: starts each request's task eagerly, in `_asgi.LoopWorker._drain`; the app must not be able
#: to tell).
TASK_CONTEXT = '''
import asyncio
import contextvars
import json

MARK = contextvars.ContextVar("mark", default=None)


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    seen = MARK.get()
    MARK.set(scope["path"])
    task = asyncio.current_task()
    if scope["path"].startswith("/wait"):
        await asyncio.sleep(0)
    body = json.dumps({"a_task": task is not None, "same_task": asyncio.current_task() is task,
                       "seen_before": seen}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
'''


def wheels(platform: str) -> list[Path]:
    found = sorted(WHEELHOUSE.glob(f"ferrocorn-*-{platform}.whl"))
    if not found:
        pytest.fail(f"no ferrocorn-*-{platform}.whl in {WHEELHOUSE}: `make test-wheels` builds "
                    "them before running these tests")
    return found


def interpreter_for(wheel: Path) -> str | None:
    """This machine's interpreter for the wheel's cpXY tag, if there is one."""
    tag = "-".join(wheel.name.split("-")[2:4])
    return next((py for py in pgo_build.find_interpreters()
                 if pgo_build.interpreter_tag(py) == tag), None)


def no_toolchain_path(venv: Path) -> str:
    """PATH with the venv first and no directory that holds cargo or rustc."""
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and not any((Path(d) / tool).exists() for tool in ("cargo", "rustc"))]
    path = os.pathsep.join([str(venv / "bin"), *dirs])
    assert shutil.which("cargo", path=path) is None and shutil.which("rustc", path=path) is None
    return path


def clean_env(path: str) -> dict[str, str]:
    """The environment without what points into this checkout's build (the Makefile exports
    PYO3_PYTHON) or a venv."""
    drop = {"PYO3_PYTHON", "CARGO_TARGET_DIR", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME",
            "RUSTFLAGS"}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "PATH": path}


def fresh_venv(python: str, where: Path) -> Path:
    venv = where / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=300)
    return venv


def serve_one_request(venv: Path, env: dict[str, str], workdir: Path) -> str:
    """Starts the venv's `ferrocorn` on a hello app; returns the body of one GET."""
    [body] = serve(venv, env, workdir, HELLO, ["/"])
    return body


def serve(venv: Path, env: dict[str, str], workdir: Path, source: str,
          paths: list[str]) -> list[str]:
    """Starts the venv's `ferrocorn` on the app `source` defines; the bodies of a GET of each
    path, in turn."""
    (workdir / "wheel_app.py").write_text(source)
    port = pgo_build.free_port()
    log = workdir / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(venv / "bin" / "ferrocorn"), "-w", "1", "-b", f"127.0.0.1:{port}",
             "--chdir", str(workdir), "wheel_app:app"],
            cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"ferrocorn exited: {log.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"no answer within 30 s: {log.read_text()}") from None
                time.sleep(0.2)  # polling for the server to listen
        bodies = []
        for path in paths:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read().decode()
            conn.close()
            assert resp.status == 200, (resp.status, body)
            bodies.append(body)
        return bodies
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def version_text(venv: Path, env: dict[str, str]) -> str:
    return subprocess.run([str(venv / "bin" / "ferrocorn"), "--version"], env=env,
                          capture_output=True, text=True, check=True, timeout=60).stdout


def extension(wheel: Path, into: Path) -> Path:
    """The compiled extension module inside `wheel`, extracted into `into`."""
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if re.match(r"ferrocorn/_ferrocorn.*\.so$", n)]
        assert len(names) == 1, names
        return Path(z.extract(names[0], into))


def readelf(*args: str) -> str:
    if shutil.which("readelf") is None:
        pytest.skip("readelf (binutils) is not installed")
    return subprocess.run(["readelf", "-W", *args], capture_output=True, text=True,
                          check=True).stdout


def needed(so: Path) -> list[str]:
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", readelf("-d", str(so)))


def glibc_versions(so: Path) -> set[tuple[int, ...]]:
    text = readelf("--version-info", "--dyn-syms", str(so))
    return {tuple(int(x) for x in v.split(".")) for v in re.findall(r"GLIBC_(\d+(?:\.\d+)+)", text)}


def wheel_ids(platform: str) -> list[Path]:
    return sorted(WHEELHOUSE.glob(f"ferrocorn-*-{platform}.whl")) or [Path("missing")]


def made_by_install() -> Path:
    """The manylinux2014 wheel `make install` built for this interpreter (and installed in
    .venv, whose `ferrocorn` runs the test suite)."""
    tag = pgo_build.interpreter_tag(sys.executable)
    found = sorted(DIST.glob(f"ferrocorn-*-{tag}-{MANYLINUX}.whl"))
    if not found:
        pytest.fail(f"no ferrocorn-*-{tag}-{MANYLINUX}.whl in {DIST}: `make install` builds it")
    return found[-1]


#: The tests over manylinux wheels take `make install`'s (always) and `make wheels`' (opt-in).
INSTALLED = Path("made-by-make-install")


def manylinux_wheels() -> list[object]:
    wheelhouse = [pytest.param(w, marks=pytest.mark.wheels, id=w.name)
                  for w in wheel_ids(MANYLINUX)]
    return [pytest.param(INSTALLED, id="make-install"), *wheelhouse]


def manylinux_wheel(param: Path) -> Path:
    if param == INSTALLED:
        return made_by_install()
    if not param.exists():
        wheels(MANYLINUX)
    return param


@pytest.mark.parametrize("param", manylinux_wheels())
def test_manylinux_wheel_serves_without_a_rust_toolchain(param: Path, tmp_path: Path) -> None:
    wheel = manylinux_wheel(param)
    python = sys.executable if param == INSTALLED else interpreter_for(wheel)
    if python is None:
        pytest.skip(f"no interpreter for {wheel.name} on this machine")
    venv = fresh_venv(python, tmp_path)
    env = clean_env(no_toolchain_path(venv))
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    "--no-index", "--disable-pip-version-check", str(wheel)],
                   env=env, cwd=tmp_path, check=True, timeout=300)
    version = version_text(venv, env)
    tag = wheel.name.split("-", 2)[2].removesuffix(".whl")
    if param == INSTALLED:
        # The very build the suite runs (.venv's), profile-guided or not as `make install` made it.
        ours = subprocess.run([str(Path(sys.executable).parent / "ferrocorn"), "--version"],
                              capture_output=True, text=True, check=True, timeout=60).stdout
        assert version == ours, (version, ours)
    else:
        assert "build: profile-guided" in version, version
    assert f"wheel: {tag}\n" in version, version
    assert "TLS: rustls" in version and "ring" in version, version
    assert "target: x86_64-unknown-linux-gnu" in version, version
    assert serve_one_request(venv, env, tmp_path).startswith("hello from ferrocorn")


@pytest.mark.parametrize("param", manylinux_wheels())
def test_manylinux_wheel_needs_glibc_2_17_at_most(param: Path, tmp_path: Path) -> None:
    so = extension(manylinux_wheel(param), tmp_path)
    versions = glibc_versions(so)
    assert versions, "no glibc symbol versions: not a glibc build?"
    assert max(versions) <= (2, 17), sorted(versions)
    allowed = {"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1",
               "libgcc_s.so.1", "ld-linux-x86-64.so.2"}  # manylinux2014's own policy list
    assert set(needed(so)) <= allowed, needed(so)


@pytest.mark.wheels
@pytest.mark.parametrize("wheel", wheel_ids(MUSLLINUX), ids=lambda p: p.name)
def test_musllinux_wheel_links_musl_alone(wheel: Path, tmp_path: Path) -> None:
    """No musl Python here to run it: what it links and the tag it recorded are checked."""
    if not wheel.exists():
        wheels(MUSLLINUX)
    so = extension(wheel, tmp_path)
    assert needed(so) == [MUSL_LIBC], needed(so)
    assert not glibc_versions(so), "a glibc symbol version in a musl build"
    tag = wheel.name.split("-", 2)[2].removesuffix(".whl")
    assert tag.endswith(MUSLLINUX)
    # The file name musl CPython imports: 3.11 and later say linux-musl; before, CPython on musl
    # called itself linux-gnu (maturin follows it).
    minor = int(tag.split("-")[0][3:])
    env = "musl" if minor >= 11 else "gnu"
    assert so.name == f"_ferrocorn.cpython-3{minor}-x86_64-linux-{env}.so", so.name
    binary = so.read_bytes()
    assert tag.encode() in binary, "the tag --version prints is not the wheel's"
    assert b"x86_64-unknown-linux-musl" in binary


@pytest.mark.parametrize("param", manylinux_wheels())
def test_auditwheel_agrees_with_the_tag(param: Path) -> None:
    """pypa's auditwheel (not maturin's check, which ran at build time) reads each manylinux
    wheel. (It judges a musllinux wheel by the C library of the machine it runs on, glibc here:
    the musllinux test above checks what it would.)"""
    wheel = manylinux_wheel(param)
    auditwheel = Path(sys.executable).parent / "auditwheel"
    if not auditwheel.exists():
        pytest.fail("auditwheel is not installed (make install and make test-wheels install it)")
    shown = subprocess.run([str(auditwheel), "show", str(wheel)], capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    text = " ".join(shown.stdout.split())
    found = re.search(r'consistent with the following platform tag: "(\w+?)_(\d+)_(\d+)_x86_64"',
                      text)
    assert found, text
    # The wheel's own tag, or an older (more widely installable) one.
    policy, version = found.group(1), (int(found.group(2)), int(found.group(3)))
    assert policy == "manylinux" and version <= (2, 17), text


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`maturin sdist` of this tree, as `make wheels` runs it."""
    out = tmp_path_factory.mktemp("sdist")
    maturin = Path(sys.executable).parent / "maturin"
    subprocess.run([str(maturin), "sdist", "--out", str(out)], cwd=ROOT, check=True,
                   capture_output=True, timeout=300)
    [built] = out.glob("ferrocorn-*.tar.gz")
    return built


def test_sdist_holds_the_backend_and_the_training_apps(sdist: Path) -> None:
    """Everything `pip install` of the sdist builds from."""
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for required in ("pyproject.toml", "Cargo.toml", "Cargo.lock", "tools/ferrocorn_build.py",
                     "tools/pgo_build.py", "bench/run.py", "bench/instructions.py",
                     "bench/apps/hello.py", "bench/apps/flask_hello.py",
                     "crates/ferrocorn-py/build.rs", "python/ferrocorn/__init__.py"):
        assert required in names, required


def test_sdist_installs_the_profile_guided_build(sdist: Path, tmp_path: Path) -> None:
    """`pip install ferrocorn-X.tar.gz` from a clean directory, with no target directory to
    reuse: the in-tree backend builds it profile-guided (this compiles everything twice, some
    minutes on two cores), and it serves."""
    if shutil.which("cargo") is None:
        pytest.skip("cargo is not installed: an sdist needs a Rust toolchain")
    work = tmp_path / "clean"
    work.mkdir()
    # The newest interpreter here, so that a Python other than the tests' own builds and
    # serves too (here 3.13 where there is one; 3.12+ also runs the eager task start).
    python = (pgo_build.find_interpreters() or [sys.executable])[-1]
    venv = fresh_venv(python, tmp_path)
    env = clean_env(os.pathsep.join([str(venv / "bin"), os.environ.get("PATH", "")]))
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    built = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-v",
                            str(sdist)], env=env, cwd=work, capture_output=True, text=True,
                           timeout=3600)
    log = built.stdout + built.stderr
    (ROOT / "target").mkdir(exist_ok=True)
    (ROOT / "target" / "sdist-install.log").write_text(log)
    assert built.returncode == 0, log[-4000:]
    assert "pgo: instrumented build" in log, "not the profile-guided build"
    version = version_text(venv, env)
    assert "build: profile-guided" in version, version
    assert "wheel: cp" in version and "linux_x86_64" in version, version
    assert serve_one_request(venv, env, work).startswith("hello from ferrocorn")
    # An ASGI app on that interpreter: each request a task of its own, before and after it
    # waits, in a context of its own.
    for body in serve(venv, env, work, TASK_CONTEXT, ["/now", "/wait", "/now", "/wait"]):
        assert json.loads(body) == {"a_task": True, "same_task": True, "seen_before": None}
