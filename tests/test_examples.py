"""The example apps a new user is pointed at (README quick start, `make run`) serve."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from support import TESTS_DIR, http_request

EXAMPLES = TESTS_DIR.parent / "examples"


@pytest.mark.skipif(importlib.util.find_spec("flask") is None, reason="flask is not installed")
def test_flask_example(start_server) -> None:
    server = start_server("flask_app:app", "--chdir", str(EXAMPLES), pythonpath=False)
    index = server.get("/")
    assert index.status == 200 and b"ferrocorn" in index.body
    facts = server.get("/json?x=1")
    assert facts.status == 200
    assert facts.json()["query"] == "x=1" and facts.json()["wsgi_version"] == [1, 0]
    echoed = server.request("POST", "/echo", body=b"hello flask",
                            headers={"Content-Type": "text/plain"})
    assert echoed.status == 200 and echoed.body == b"hello flask"
    assert "Traceback" not in server.log


def test_plain_wsgi_example(start_server) -> None:
    server = start_server("wsgi_app", "--chdir", str(EXAMPLES), pythonpath=False)
    assert server.get("/").status == 200
    with server.connect() as conn:
        conn.send(http_request("/stream"))
        stream = conn.response()
        assert stream.status == 200 and stream.chunked and stream.complete and stream.body
        conn.send(http_request("/file"))
        sent = conn.response()
    assert sent.status == 200
    assert sent.body == Path(EXAMPLES / "wsgi_app.py").read_bytes()
    assert "Traceback" not in server.log
