"""The parity matrix (issue 26), responses: every PEP 3333 response path, app errors, early
hints and 100-continue give the same answers over HTTP/1.1, HTTP/1.1 over TLS, HTTP/2 over
TLS, h2c and uwsgi. The protocols and their declared differences: tests/parity_matrix.py.
The other parity modules: test_parity_static.py (static files), test_parity_admission.py
(limits, --max-pending, forwarded headers), test_parity_observe.py (access log, metrics).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import wait_for
from parity_matrix import (Matrix, Served, _declared_differences, behaviour, certs,  # noqa: F401
                           matrix, proto, workdir)
from support.clients import Reply

FILE_BYTES = bytes(range(256)) * 1200  # 300 KiB: a file_wrapper body over several windows


@pytest.fixture(scope="module")
def site(matrix: Matrix) -> Served:
    return matrix.serve("--limit-request-body", "100000")


@pytest.fixture(scope="module")
def data_file(workdir: Path) -> Path:
    path = workdir / "data.bin"
    path.write_bytes(FILE_BYTES)
    return path


def records(path: Path) -> list[str]:
    """What the app's iterables and files recorded (responses.py ``record=``)."""
    return path.read_text().splitlines() if path.exists() else []


def wait_record(path: Path, line: str) -> list[str]:
    return wait_for(lambda: line in records(path) and records(path),
                    message=f"{line!r} recorded in {path}")


def no_hop_by_hop(site: Served, reply: Reply) -> None:
    """HTTP/2 carries no connection-specific field (RFC 9113 §8.2.2): the client library
    refuses one anyway; and uwsgi responses close their connection."""
    if site.proto.http2:
        assert not reply.names() & {"connection", "transfer-encoding", "keep-alive"}, reply
    if site.proto.uwsgi:
        assert reply.header("connection") == "close", reply


# ------------------------------------------------------------------------------- environ


def test_environ_of_a_request(site: Served) -> None:
    reply = site.client.request("POST", "/env?x=1&y=%2F", [("X-Test", "yes"),
                                                           ("Content-Type", "text/plain")],
                                b"hello body")
    assert reply.status == 200, reply
    env = {k: v["value"] for k, v in json.loads(reply.body).items()
           if isinstance(v, dict) and "value" in v}
    assert env["REQUEST_METHOD"] == "POST"
    assert env["PATH_INFO"] == "/env" and env["QUERY_STRING"] == "x=1&y=%2F"
    assert env["SERVER_PROTOCOL"] == site.proto.server_protocol
    assert env["wsgi.url_scheme"] == site.proto.scheme
    assert env["HTTP_HOST"] == site.client.authority
    assert env["HTTP_X_TEST"] == "yes"
    assert env["CONTENT_LENGTH"] == "10" and env["CONTENT_TYPE"] == "text/plain"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert json.loads(reply.body)["body"] == "hello body"
