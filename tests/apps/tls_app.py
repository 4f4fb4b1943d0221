"""Routes for the TLS tests: the environ's TLS keys, a streamed echo, a chunked response and a
file sent through ``wsgi.file_wrapper``."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from wsgiref.validate import validator

KEYS = ("REMOTE_ADDR", "wsgi.url_scheme", "HTTPS", "SERVER_PORT", "SERVER_NAME", "SSL_PROTOCOL",
        "SSL_CIPHER",
        "SSL_CLIENT_VERIFY", "SSL_CLIENT_S_DN", "SSL_CLIENT_I_DN", "SSL_CLIENT_CERT")

_FILES: dict[int, str] = {}


def _file(size: int) -> str:
    """A file of ``size`` bytes of a known pattern (made once per worker)."""
    if size not in _FILES:
        fd, path = tempfile.mkstemp(prefix="ferrocorn-tls-")
        with os.fdopen(fd, "wb") as f:
            f.write(bytes(range(256)) * (size // 256) + bytes(range(size % 256)))
        _FILES[size] = path
    return _FILES[size]


def _reply(start_response, body: bytes, ctype: str = "application/json"):
    start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


def tls_app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/env":
        data = {k: environ.get(k) for k in KEYS}
        return _reply(start_response, json.dumps(data).encode())
    if path == "/echo":
        digest, total = hashlib.sha256(), 0
        while True:
            piece = environ["wsgi.input"].read(65536)
            if not piece:
                break
            digest.update(piece)
            total += len(piece)
        body = json.dumps({"length": total, "sha256": digest.hexdigest()}).encode()
        return _reply(start_response, body)
    if path == "/chunked":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"piece {i}\n".encode() for i in range(50))
    return _reply(start_response, b"hello over tls\n", "text/plain")


def file_route(environ, start_response):
    """Not wrapped in the validator: its iterator wrapper would hide the file wrapper from the
    server, which must take its sendfile path (a bounded copy under TLS)."""
    size = int(environ["QUERY_STRING"] or "0")
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(size))])
    return environ["wsgi.file_wrapper"](open(_file(size), "rb"), 65536)


_valid = validator(tls_app)


def app(environ, start_response):
    if environ["PATH_INFO"] == "/file":
        return file_route(environ, start_response)
    return _valid(environ, start_response)
