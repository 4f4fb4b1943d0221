"""Why a test may be skipped, in one place.

``make test`` runs pytest with ``FERROCORN_STRICT_SKIPS=1``: the run then fails when a test was
skipped for a reason not in :data:`ENVIRONMENTAL` (conftest.py's ``pytest_sessionfinish``). A
tool ``make test-deps`` installs that is missing, or a test that needs root skipped in CI (which
runs as root), means a green run did not test what it says it did."""

from __future__ import annotations

import os
import re
import shutil

import pytest

#: The reason of a test that needs root (switching users): environmental outside CI only.
NOT_ROOT = "needs root (to switch to another user)"

#: Reasons a strict run accepts (a prefix of the skip's reason), each with why it is the host's
#: and not the Makefile's to fix.
ENVIRONMENTAL: dict[str, str] = {
    "no IPv6 loopback": "the host has no ::1 (some containers run without IPv6)",
    "cannot create a PID namespace here": "unprivileged containers refuse unshare(CLONE_NEWPID)",
    "port 8000 is in use here": "the default-port test needs 127.0.0.1:8000 free",
    NOT_ROOT: "a developer's run as a normal user (CI runs as root: there it fails the run)",
}


#: A protocol or an interface that legitimately lacks a behaviour, declared in
#: ``support.matrix.DIFFERENCES`` (uwsgi has no interim responses, an ASGI app no write()
#: callable, ...): not a skip of the host's, but not a gap either. The skip's reason is
#: ``WHERE differs on BEHAVIOUR: REASON``, and is allowed only as the table declares it.
PROTOCOL_DIFFERS = re.compile(r"^([\w-]+) differs on ([\w-]+): (.*)$", re.DOTALL)


def declared_difference(reason: str) -> bool:
    """Whether ``reason`` is a skip for a difference :data:`support.matrix.DIFFERENCES`
    declares, word for word."""
    from .matrix import DIFFERENCES  # the table is the matrix's; it imports the clients
    m = PROTOCOL_DIFFERS.match(reason)
    return m is not None and DIFFERENCES.get((m.group(2), m.group(1))) == m.group(3)


def allowed(reason: str) -> bool:
    """Whether a strict run accepts a skip with ``reason``."""
    if reason.startswith(NOT_ROOT):
        return not os.environ.get("CI")
    if declared_difference(reason):
        return True
    return any(reason.startswith(prefix) for prefix in ENVIRONMENTAL)


def needs_tool(command: str) -> pytest.MarkDecorator:
    """Skip where ``command`` (a program ``make test-deps`` installs) is missing."""
    found = shutil.which(command) or shutil.which(command, path="/usr/sbin:/sbin")
    return pytest.mark.skipif(found is None,
                              reason=f"{command} is not installed (make test-deps installs it)")


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason=NOT_ROOT)
