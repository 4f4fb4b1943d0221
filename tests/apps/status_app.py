"""Answers /status/<code> with that status, /boom by raising, anything else with 200; its own
/metrics route shows that the server's metrics endpoint does not shadow it."""

from __future__ import annotations

from http import HTTPStatus
from wsgiref.validate import validator


def _app(environ: dict, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/boom":
        raise RuntimeError("boom")
    code = 200
    if path.startswith("/status/"):
        code = int(path.rsplit("/", 1)[1])
    body = b"app metrics" if path == "/metrics" else b"x" * 10
    start_response(f"{code} {HTTPStatus(code).phrase}",
                   [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


app = validator(_app)
