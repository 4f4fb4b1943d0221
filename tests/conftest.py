"""The fixtures of the integration suite. The helpers tests import are in ``support/``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from support import skips
from support.matrix import (  # noqa: F401 (the protocol matrix's fixtures, for every module)
    certs_fixture,
    declared_differences_fixture,
    interface_fixture,
    matrix_fixture,
    proto_fixture,
    workdir_fixture,
)
from support.server import LIVE_SERVERS, STARTED, Server, running_server

#: Tests skipped in this run, with their reasons (for the strict check at the end).
SKIPPED: list[tuple[str, str]] = []


@pytest.fixture
def start_server() -> Iterator[Callable[..., Server]]:
    """A factory for servers that live as long as the test; all are stopped at teardown."""
    stack = contextlib.ExitStack()

    def start(app: str, *args: str, **kwargs: Any) -> Server:
        return stack.enter_context(running_server(app, *args, **kwargs))

    with stack:
        yield start


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "app_errors: the test provokes errors on purpose; skip the check that the server log "
        "gained no AssertionError (wsgiref.validate's verdict) during it",
    )
    config.addinivalue_line(
        "markers",
        "wheels: installs the release wheels and the sdist of `make wheels` "
        "(tests/test_wheels.py); opt-in: `make test-wheels` runs them, `make test` leaves "
        "them out",
    )


@pytest.fixture(autouse=True)
def _validator_clean(request: pytest.FixtureRequest) -> Iterator[None]:
    """No server may log an AssertionError (wsgiref.validate found a PEP 3333 violation),
    an unclosed iterator, or a Rust panic while a test runs."""
    marks = [(server, server.mark()) for server in LIVE_SERVERS]
    first_new = len(STARTED)
    yield
    for server, mark in marks + [(s, 0) for s in STARTED[first_new:]]:
        text = server.log_since(mark)
        assert "panicked" not in text, text
        if request.node.get_closest_marker("app_errors"):
            continue
        assert "AssertionError" not in text, \
            "wsgiref.validate found a PEP 3333 violation:\n" + text
        assert "garbage collected without being closed" not in text, text


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        SKIPPED.append((report.nodeid, reason))


def _not_allowed() -> list[tuple[str, str]]:
    if os.environ.get("FERROCORN_STRICT_SKIPS") != "1":
        return []
    return [(nodeid, reason) for nodeid, reason in SKIPPED if not skips.allowed(reason)]


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """With FERROCORN_STRICT_SKIPS=1 (make test), a skip whose reason is not environmental
    (support/skips.py) fails the run."""
    if _not_allowed() and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    bad = _not_allowed()
    if bad:
        terminalreporter.section("skips that fail the run (FERROCORN_STRICT_SKIPS=1)", red=True)
        for nodeid, reason in bad:
            terminalreporter.line(f"{nodeid}: {reason}")
        terminalreporter.line("Each is a tool make test-deps installs, or root in CI: the run did "
                              "not test what it says. Environmental reasons: support/skips.py.")
