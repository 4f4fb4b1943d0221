"""Sends 103 Early Hints through ``environ["wsgi.early_hints"]`` (Gunicorn's callable).

- ``/``: one hint (a Link to /style.css), then the page; the body names the serving thread
  (``MainThread`` is the worker's I/O thread, where proven-fast routes run inline);
- ``/two``: two calls, the second with two Link fields, then the page;
- ``/bytes``: names and values given as bytes;
- ``/after-start``: calls it after ``start_response`` but before any body (still sent);
- ``/late``: calls it between two body pieces, once the response has started (ignored);
- ``/empty``: calls it with an empty list (nothing is sent);
- ``/bad``: tries the invalid hints below and reports, as JSON, the exception each raised.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator
from wsgiref.validate import validator

LINK = ("Link", "</style.css>; rel=preload; as=style")

BAD = {
    "crlf": [("Link", "</a.css>\r\nSet-Cookie: evil=1")],
    "lf": [("Link", "</a.css>\nX-Evil: 1")],
    "nul": [("Link", "</a.css>\x00")],
    "name_space": [("Bad Name", "x")],
    "name_colon": [("Link:", "x")],
    "name_empty": [("", "x")],
    "hop_by_hop": [("Connection", "close")],
    "content_length": [("Content-Length", "0")],
    "not_latin1": [("Link", "</\u2603.css>")],
    "not_pairs": ["Link"],
    "not_str": [("Link", 5)],
    "not_iterable": 5,
}


def page(start_response: Callable, text: str) -> list[bytes]:
    body = text.encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


def late(environ: dict, start_response: Callable) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first "
    environ["wsgi.early_hints"]([LINK])  # the head has gone: ignored
    yield b"second"


def _app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    hints = environ["wsgi.early_hints"]
    path = environ["PATH_INFO"]
    if path == "/two":
        hints([LINK])
        hints([("Link", "</app.js>; rel=preload; as=script"),
               ("Link", "</font.woff2>; rel=preload; as=font; crossorigin")])
    elif path == "/bytes":
        hints([(b"Link", b"</b.css>; rel=preload")])
    elif path == "/after-start":
        body = b"ok"
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        hints([LINK])
        return [body]
    elif path == "/late":
        return late(environ, start_response)
    elif path == "/empty":
        hints([])
    elif path == "/bad":
        errors = {}
        for name, value in BAD.items():
            try:
                hints(value)
                errors[name] = None
            except (TypeError, ValueError) as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
        return page(start_response, json.dumps(errors))
    else:
        hints([LINK])
    return page(start_response, threading.current_thread().name)


app = validator(_app)
