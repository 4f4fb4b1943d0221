"""An app that leaks memory on purpose, for worker recycling (--max-worker-memory).

Every request keeps ``LEAK_KIB`` (default 256) KiB of written memory for the rest of the
process's life, then answers with the worker's pid after a short wait (``/?ms=N``, default
10 ms) that keeps a test's load bounded.
"""

from __future__ import annotations

import os
import time
from wsgiref.validate import validator

_KEPT: list[bytes] = []
_LEAK = int(os.environ.get("LEAK_KIB", "256")) * 1024


def _app(environ, start_response):
    # Written bytes, so the pages are resident (a zeroed allocation may not be).
    _KEPT.append(b"\x01" * _LEAK)
    query = environ.get("QUERY_STRING", "")
    ms = int(query[3:]) if query.startswith("ms=") and query[3:].isdigit() else 10
    time.sleep(ms / 1000)
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


app = validator(_app)
