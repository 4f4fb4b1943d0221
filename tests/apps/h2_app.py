"""Routes for the HTTP/2 tests (tests/test_http2.py), wrapped in wsgiref's validator.

/hello           a short text
/sleep?ms=N      sleeps N ms, then answers
/environ         selected environ keys as JSON
/slowread?ms=N   reads the body 64 KiB at a time, sleeping N ms between reads; answers the
                 byte count
/tick?f=PATH     appends a byte to PATH (counting calls), sleeps 50 ms
/big?mib=N       streams N MiB in 64 KiB pieces
/file?kib=N      a file of N KiB through wsgi.file_wrapper
"""

from __future__ import annotations

import json
import tempfile
import time
from urllib.parse import parse_qs
from wsgiref.validate import validator

KEYS = ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "SERVER_PROTOCOL", "HTTP_HOST",
        "HTTP_COOKIE", "HTTP_X_TEST", "REMOTE_ADDR", "SERVER_NAME", "SERVER_PORT",
        "wsgi.url_scheme", "CONTENT_LENGTH", "RAW_URI", "HTTP_UPGRADE", "HTTP_CONNECTION",
        "HTTP_HTTP2_SETTINGS", "HTTP_TE", "HTTP_X_HOP", "HTTP_X_BIG")


def arg(environ, name, default):
    return int(parse_qs(environ.get("QUERY_STRING", "")).get(name, [default])[0])


def text(start_response, body: bytes, status="200 OK"):
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def inner(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/hello":
        return text(start_response, b"hello")
    if path == "/sleep":
        time.sleep(arg(environ, "ms", 50) / 1000)
        return text(start_response, b"slept")
    if path == "/environ":
        out = {k: environ.get(k) for k in KEYS}
        body = bytearray()
        while piece := environ["wsgi.input"].read(65536):
            body += piece
        out["body"] = body.decode("latin-1")
        return text(start_response, json.dumps(out).encode())
    if path == "/tick":
        # One byte per call into the file named by ?f=, then a 50 ms sleep.
        with open(parse_qs(environ["QUERY_STRING"])["f"][0], "ab") as f:
            f.write(b".")
        time.sleep(0.05)
        return text(start_response, b"tick")
    if path == "/slowread":
        pause = arg(environ, "ms", 1) / 1000
        total = 0
        while True:
            piece = environ["wsgi.input"].read(65536)
            if not piece:
                break
            total += len(piece)
            if pause:
                time.sleep(pause)
        return text(start_response, str(total).encode())
    if path == "/big":
        mib = arg(environ, "mib", 1)
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(mib << 20))])
        piece = b"x" * 65536
        return (piece for _ in range(mib * 16))
    if path == "/file":
        kib = arg(environ, "kib", 1024)
        f = tempfile.TemporaryFile()
        f.write(bytes(range(256)) * (kib * 4))
        f.seek(0)
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(kib * 1024))])
        return environ["wsgi.file_wrapper"](f, 65536)
    return text(start_response, b"not found", "404 Not Found")


validated = validator(inner)


def app(environ, start_response):
    return validated(environ, start_response)



def hop_app(environ, start_response):
    """Sends a hop-by-hop field (not through the validator, which would refuse it first)."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Connection", "keep-alive")])
    return [b"hop"]
