"""Says which Python thread served each request, to show when the I/O thread serves it.

- ``/thread``: the serving thread's name (``MainThread`` is the worker's I/O thread);
- ``/work?ms=N``: sleeps N milliseconds first;
- ``/slow``: sleeps ``?ms=`` milliseconds (default 800) first; a route of its own;
- ``/echo?size=N``: the serving thread's name, the query string and N bytes of padding;
- ``/received`` (POST): the serving thread's name and the length of the body it read;
- ``/ticks``: how many times a background thread of the app has run so far (it wakes every
  millisecond and needs the GIL to count).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from urllib.parse import parse_qs
from wsgiref.validate import validator

_ticks = 0


def _tick() -> None:
    global _ticks
    while True:
        time.sleep(0.001)
        _ticks += 1


threading.Thread(target=_tick, name="ticker", daemon=True).start()


def _app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/ticks":
        body = str(_ticks).encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    query = parse_qs(environ["QUERY_STRING"])
    received = b""
    if environ["REQUEST_METHOD"] == "POST":
        received = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    if path == "/received":
        body = f"{threading.current_thread().name} {len(received)}".encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path in ("/work", "/slow"):
        default = "800" if path == "/slow" else "0"
        time.sleep(int(query.get("ms", [default])[0]) / 1000)
    elif path == "/echo":
        # The serving thread, the query, and ``size`` bytes of padding.
        size = int(query.get("size", ["0"])[0])
        head = f"{threading.current_thread().name} {environ['QUERY_STRING']} "
        body = head.encode() + b"x" * size
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    elif path != "/thread":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    body = threading.current_thread().name.encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


app = validator(_app)
