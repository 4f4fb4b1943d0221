"""App for the pre-fork master tests: answers with the pid of the worker that served it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.validate import validator

IMPORT_LOG = os.environ.get("MASTER_APP_IMPORT_LOG")
if IMPORT_LOG:
    # --preload tests: which process imported the app.
    with open(IMPORT_LOG, "a", encoding="ascii") as f:
        f.write(f"{os.getpid()}\n")


def _app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/slow":
        # A long request (the workload of the test, not a synchronisation).
        time.sleep(float(environ["QUERY_STRING"] or "1"))
    elif path == "/hang":
        while True:
            pass
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


app = validator(_app)
