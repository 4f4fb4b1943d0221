"""An app for the hostile-client tests: small answers, huge streamed answers, body readers.

    /hello                       13 bytes
    /pid                         the worker's pid
    /sleep?s=0.5                 sleeps, then answers
    /stream?n=N&size=S&record=F  N chunks of S bytes; records "close K" in F when closed
    /upload?record=F             reads the body in 64 KiB pieces; records "read N" or
                                 "error ..." in F; answers with the byte count
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from urllib.parse import parse_qs
from wsgiref.validate import validator


def _q(environ: dict) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _record(path: str | None, text: str) -> None:
    if path:
        with open(path, "a") as f:
            f.write(text + "\n")


class Stream:
    def __init__(self, n: int, size: int, record: str | None) -> None:
        self.n, self.chunk, self.record, self.sent = n, b"x" * size, record, 0

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(self.n):
            self.sent += 1
            yield self.chunk

    def close(self) -> None:
        _record(self.record, f"close {self.sent}")


def _app(environ: dict, start_response):
    path = environ.get("PATH_INFO", "")
    q = _q(environ)
    text = [("Content-Type", "text/plain")]
    if path == "/pid":
        body = str(os.getpid()).encode()
    elif path == "/sleep":
        _record(q.get("record"), "start")
        time.sleep(float(q.get("s", "0.5")))
        body = b"slept"
    elif path == "/stream":
        n, size = int(q.get("n", "10")), int(q.get("size", "65536"))
        start_response("200 OK", [*text, ("Content-Length", str(n * size))])
        return Stream(n, size, q.get("record"))
    elif path == "/upload":
        total = 0
        stream = environ["wsgi.input"]
        try:
            while True:
                piece = stream.read(65536)
                if not piece:
                    break
                total += len(piece)
        except Exception as e:  # the server's error for a stalled or broken body
            _record(q.get("record"), f"error {type(e).__name__}: {e}")
            raise
        _record(q.get("record"), f"read {total}")
        body = str(total).encode()
    else:
        body = b"Hello, World!"
    start_response("200 OK", [*text, ("Content-Length", str(len(body)))])
    return [body]


app = validator(_app)
