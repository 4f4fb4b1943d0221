"""The parity matrix's app (tests/test_parity*.py, issue 26): the existing test apps mounted
under one prefix each, so every behaviour is asked of the same app over every protocol, plus
the few routes none of them has. Every route is wrapped in ``wsgiref.validate.validator``
(the mounted apps wrap their own).

/r/...           responses.py (PEP 3333 response paths, app errors, close(), file_wrapper)
/hints/...       hints_app.py (wsgi.early_hints)
/echo            echo.py (reads wsgi.input as ?mode= says; the request back as JSON)
/env             environ_app.py (the environ as JSON)
/not-modified    a 304 with an ETag and no body
/hold?started=PATH&go=PATH
                 writes PATH ``started``, then waits (at most 15 s) for the file ``go``: holds
                 an app thread for as long as the test wants (--max-pending)
anything else    the app's own 404, whose body says it is the app's
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from urllib.parse import parse_qs
from wsgiref.validate import validator

import echo
import environ_app
import hints_app
import responses

#: The body of the app's own 404 (a static miss must not be this one; parity_matrix.APP_404).
APP_404 = b"not found by the app"

StartResponse = Callable[..., Callable[[bytes], object]]
WsgiApp = Callable[[dict, StartResponse], Iterable[bytes]]


def _query(environ: dict) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _not_modified(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    start_response("304 Not Modified", [("ETag", '"parity-v1"'), ("X-Route", "not-modified")])
    return []


def _hold(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    params = _query(environ)
    with open(params["started"], "w") as f:
        f.write("started")
    deadline = time.monotonic() + 15
    while not os.path.exists(params["go"]) and time.monotonic() < deadline:
        time.sleep(0.01)  # the app's own wait for the test's signal, bounded
    body = b"held"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


def _missing(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    start_response("404 Not Found", [("Content-Type", "text/plain"),
                                     ("Content-Length", str(len(APP_404)))])
    return [APP_404]


OWN: dict[str, WsgiApp] = {
    "/not-modified": validator(_not_modified),
    "/hold": validator(_hold),
}
MOUNTS: dict[str, WsgiApp] = {
    "/r": responses.app,
    "/hints": hints_app.app,
}
WHOLE: dict[str, WsgiApp] = {
    "/echo": echo.app,
    "/env": environ_app.app,
}
missing = validator(_missing)


def app(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    if path in OWN:
        return OWN[path](environ, start_response)
    if path in WHOLE:
        return WHOLE[path](environ, start_response)
    prefix, _, rest = path[1:].partition("/")
    mounted = MOUNTS.get("/" + prefix)
    if mounted is not None and rest:
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + "/" + prefix
        environ["PATH_INFO"] = "/" + rest
        return mounted(environ, start_response)
    return missing(environ, start_response)
