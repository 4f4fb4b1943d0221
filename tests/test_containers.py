"""docs/deploy-containers.md, run as far as it runs without Docker or a cluster (issue 20): the
image's command with `PORT` and `WEB_CONCURRENCY`, the master as PID 1 of a PID namespace (as
in a container) stopping gracefully on `SIGTERM` and reaping orphans, and the Kubernetes
manifest's timing.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from support import APPS_DIR, Server, ferrocorn_bin, free_port, wait_for
from support.procfs import zombies_of
from support.skips import needs_root, needs_tool

DOC = Path(__file__).resolve().parent.parent / "docs" / "deploy-containers.md"


def block(tag: str) -> str:
    """The fenced block that follows `<!-- test: TAG -->` in the doc."""
    text = DOC.read_text()
    m = re.search(rf"<!-- test: {tag} -->\n```\w+\n(.*?)\n```", text, re.S)
    assert m, f"no {tag} block in {DOC}"
    return m.group(1)


def image_command(sockdir: Path) -> list[str]:
    """The Dockerfile's CMD, serving a test app, its control socket in `sockdir`."""
    cmd_line = [line for line in block("dockerfile").splitlines() if line.startswith("CMD ")]
    assert len(cmd_line) == 1
    cmd = json.loads(cmd_line[0][4:])
    assert cmd[0] == "ferrocorn", "exec form, the master itself is PID 1"
    assert "-b" not in cmd and "--bind" not in cmd, "the image binds $PORT"
    args = cmd[1:-1]
    args[args.index("--control-socket") + 1] = str(sockdir / "ferrocorn.ctl")
    return [*args, "--pythonpath", str(APPS_DIR)]


def image_env() -> dict[str, str]:
    env_line = [line for line in block("dockerfile").splitlines() if line.startswith("ENV PORT")]
    assert len(env_line) == 1
    return dict(pair.split("=", 1) for pair in env_line[0][4:].split())



class ImageServer(Server):
    """The image's command, optionally as PID 1 of a new PID namespace (`unshare`)."""

    def __init__(self, app: str, args: list[str], env: dict[str, str], pid1: bool) -> None:
        super().__init__(app, *args, binds=[], env=env, pythonpath=False)
        self.pid1 = pid1

    def command(self) -> list[str]:
        cmd = super().command()
        if self.pid1:
            # --kill-child: the namespace dies with unshare if the test fails halfway.
            return ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", *cmd]
        return cmd

    def master_host_pid(self) -> int:
        """The master's pid as this test sees it (unshare's only child when PID 1)."""
        if not self.pid1:
            return self.pid
        kids = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        assert len(kids) == 1, kids
        return int(kids[0])


def test_the_image_command_honours_port_and_web_concurrency(tmp_path: Path) -> None:
    env = image_env()
    assert env["PORT"] == "8000" and env["WEB_CONCURRENCY"] == "2"
    port = free_port()
    server = ImageServer("master_app:app", image_command(tmp_path),
                         {"PORT": str(port), "WEB_CONCURRENCY": "3"}, pid1=False)
    server.start()
    try:
        assert f"Listening at: http://0.0.0.0:{port} ({server.pid})" in server.log
        wait_for(lambda: len(server.worker_pids()) == 3, message="WEB_CONCURRENCY=3 workers")
        server.assert_serving()
        done = subprocess.run(
            [ferrocorn_bin(), "ctl", "-s", str(tmp_path / "ferrocorn.ctl"), "--json", "show",
             "stats"], capture_output=True, text=True, timeout=20)
        assert json.loads(done.stdout)["data"]["target_workers"] == 3
    finally:
        server.stop()


@needs_tool("unshare")
def test_as_pid_1_sigterm_stops_gracefully_and_orphans_are_reaped(tmp_path: Path) -> None:
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"],
                           capture_output=True, timeout=20)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a PID namespace here: {probe.stderr.decode().strip()}")
    port = free_port()
    server = ImageServer("orphans:app", image_command(tmp_path),
                         {"PORT": str(port), "WEB_CONCURRENCY": "2"}, pid1=True)
    server.start()
    try:
        assert f"Listening at: http://0.0.0.0:{port} (1)" in server.log, "the master is PID 1"
        master = server.master_host_pid()
        # Orphans re-parented to PID 1 are reaped by the master's loop.
        for _ in range(5):
            assert server.get("/orphan").status == 200
        wait_for(lambda: not zombies_of(master), message="the orphans reaped")

        # A request in flight when the runtime sends SIGTERM to PID 1 finishes.
        result: dict[str, object] = {}

        def slow() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            try:
                conn.request("GET", "/slow")
                resp = conn.getresponse()
                result["status"] = resp.status
                result["body"] = resp.read()
            except OSError as e:
                result["error"] = repr(e)
            finally:
                conn.close()

        client = threading.Thread(target=slow)
        client.start()
        # The request reaches a worker before the signal: wait until the app holds it.
        wait_for(lambda: _busy(tmp_path), message="the request in the app")
        os.kill(master, signal.SIGTERM)
        client.join(20)
        assert result.get("status") == 200, result
        assert server.wait_exit() == 0, server.log[-2000:]
        assert "Handling signal: SIGTERM" in server.log
        assert "Shutting down: Master" in server.log
    finally:
        server.stop()


def _busy(sockdir: Path) -> bool:
    done = subprocess.run(
        [ferrocorn_bin(), "ctl", "-s", str(sockdir / "ferrocorn.ctl"), "--json", "show",
         "workers"], capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        return False
    return any(w["busy_threads"] for w in json.loads(done.stdout)["data"]["workers"])


def test_kubernetes_grace_period_covers_the_graceful_timeout() -> None:
    manifest = block("kubernetes")
    grace = int(re.search(r"terminationGracePeriodSeconds: (\d+)", manifest).group(1))
    args = json.loads(re.search(r"args: (\[.*?\])", manifest, re.S).group(1))
    graceful = int(args[args.index("--graceful-timeout") + 1])
    pre_stop = int(re.search(r'command: \["sleep", "(\d+)"\]', manifest).group(1))
    assert grace > pre_stop + graceful, (grace, pre_stop, graceful)
    assert args[0] == "ferrocorn" and "--control-socket" in args
    # The liveness probe's command is a real ctl command line.
    probe = json.loads(re.search(r'livenessProbe:.*?command: (\[.*?\])', manifest, re.S).group(1))
    socket_path = args[args.index("--control-socket") + 1]
    assert probe == ["ferrocorn", "ctl", "-s", socket_path, "show", "stats"]
    # The container's args parse as a ferrocorn command line.
    done = subprocess.run([ferrocorn_bin(), *args[1:], "--print-config"], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "max_worker_memory = 400" in done.stdout


def test_the_dockerfile_builds_in_one_stage_and_runs_in_another() -> None:
    dockerfile = block("dockerfile")
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?$", dockerfile, re.M)
    assert len(stages) == 2 and stages[0][1] == "build", stages
    build, run = dockerfile.split("\nFROM ", 2)[1:]
    assert "pip wheel --no-deps --wheel-dir /wheels ./ferrocorn" in build
    assert "rustup" in build and "rustup" not in run, "no toolchain in the final image"
    assert "COPY --from=build /wheels /wheels" in run
    user = re.search(r"useradd .*--uid (\d+) (\w+)", run)
    assert user and int(user.group(1)) >= 1000
    assert f"USER {user.group(2)}" in run
    assert run.index("USER ") < run.index("CMD "), "the server does not run as root"


def _wheel() -> Path | None:
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    dist = Path(__file__).resolve().parent.parent / "dist"
    found = sorted(dist.glob(f"ferrocorn-*-{tag}-*.whl")) if dist.is_dir() else []
    return found[-1] if found else None


@needs_root
@needs_tool("setpriv")
def test_the_installed_wheel_serves_as_an_unprivileged_user(tmp_path: Path) -> None:
    """The final stage: the wheel installed, the image's command run by a non-root user."""
    wheel = _wheel()
    if wheel is None:
        pytest.skip("no wheel in dist/ (make install builds it)")
    home = Path(tempfile.mkdtemp(prefix="ferrocorn-image-"))
    try:
        home.chmod(0o755)
        site = home / "site"
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        "--no-index", "--target", str(site), str(wheel)], check=True,
                       timeout=120)
        apps = home / "app"
        shutil.copytree(APPS_DIR, apps)
        for path in [home, *home.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        os.chown(home, 65534, 65534)  # the user's own directory: its control socket goes there
        python = shutil.which("python3", path="/usr/bin:/usr/local/bin") or sys.executable
        args = image_command(home)
        args[args.index("--pythonpath") + 1] = str(apps)
        port = free_port()
        server = ImageServer("master_app:app", args,
                             {"PORT": str(port), "WEB_CONCURRENCY": "2",
                              "PYTHONPATH": str(site)}, pid1=False)
        server.command = lambda: [  # type: ignore[method-assign]
            "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
            python, "-m", "ferrocorn", *args, "master_app:app"]
        server.start()
        try:
            assert f"Listening at: http://0.0.0.0:{port}" in server.log
            server.assert_serving()
            owner = {Path(f"/proc/{pid}").stat().st_uid
                     for pid in [server.pid, *server.worker_pids()]}
            assert owner == {65534}, owner
            sock = home / "ferrocorn.ctl"
            assert sock.stat().st_uid == 65534
            server.signal(signal.SIGTERM)
            assert server.wait_exit() == 0
        finally:
            server.stop()
    finally:
        shutil.rmtree(home, ignore_errors=True)
