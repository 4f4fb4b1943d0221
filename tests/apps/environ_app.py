"""Returns the environ as JSON: for every key, its type and value (repr for non-JSON ones).

``wsgi.input`` and ``wsgi.errors`` are described by the methods they have. The body, if any,
is read (in pieces, as the validator wants) and returned as ``body``.
"""

from __future__ import annotations

import json
from wsgiref.validate import validator

INPUT_METHODS = ("read", "readline", "readlines", "__iter__")
ERRORS_METHODS = ("write", "writelines", "flush")


def describe(value):
    if isinstance(value, (str, bool, int, float)) or value is None:
        shown = value
    elif isinstance(value, tuple):
        shown = list(value)
    else:
        shown = repr(value)
    return {"type": type(value).__name__, "value": shown}


def environ_app(environ, start_response):
    out = {key: describe(value) for key, value in environ.items()}
    # The validator wraps these two; describe what the server gave it.
    raw_input = getattr(environ["wsgi.input"], "input", environ["wsgi.input"])
    raw_errors = getattr(environ["wsgi.errors"], "errors", environ["wsgi.errors"])
    out["wsgi.input"]["methods"] = [m for m in INPUT_METHODS
                                    if callable(getattr(raw_input, m, None))]
    out["wsgi.errors"]["methods"] = [m for m in ERRORS_METHODS
                                     if callable(getattr(raw_errors, m, None))]
    out["wsgi.file_wrapper"] = {"type": type(environ.get("wsgi.file_wrapper")).__name__,
                                "callable": callable(environ.get("wsgi.file_wrapper"))}
    body = bytearray()
    for _ in range(100000):
        piece = environ["wsgi.input"].read(65536)
        if not piece:
            break
        body += piece
    out["body"] = body.decode("latin-1")
    data = json.dumps(out).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(data)))])
    return [data]


app = validator(environ_app)
