"""Keeps the server's per-request callables past their request, as a sloppy app might, and
calls them from a later one: they must still reach their own (finished) request, never the
current one. Not wrapped in ``wsgiref.validate``: its wrappers would hold the server's objects
for the app, and the point is to hold the server's own.

- ``/keep``: keeps ``start_response``, ``environ["wsgi.early_hints"]`` and the ``write``
  returned by ``start_response``, strongly;
- ``/weak``: keeps only weak references to ``wsgi.early_hints`` and ``write``;
- ``/stale``: calls what the last ``/keep`` or ``/weak`` kept (hints first, then ``write``, then
  ``start_response``), then answers with JSON naming what each call did.
"""

from __future__ import annotations

import json
import weakref
from typing import Any, Callable

LINK = [("Link", "</stale.css>; rel=preload")]
kept: dict[str, Any] = {}


def outcome(call: Callable[[], object]) -> str:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - reported to the test
        return type(exc).__name__
    return "ok"


def app(environ: dict, start_response: Callable) -> list[bytes]:
    path = environ["PATH_INFO"]
    if path in ("/keep", "/weak"):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        hints = environ["wsgi.early_hints"]
        kept.clear()
        if path == "/keep":
            kept.update(start_response=start_response, hints=lambda: hints, write=lambda: write)
        else:
            hints_ref, write_ref = weakref.ref(hints), weakref.ref(write)
            kept.update(hints=hints_ref, write=write_ref)
        return [b"kept"]
    results = {}
    hints, write = kept["hints"](), kept["write"]()
    results["alive"] = hints is not None and write is not None
    if hints is not None:
        results["hints"] = outcome(lambda: hints(LINK))
    if write is not None:
        results["write"] = outcome(lambda: write(b"stale bytes"))
    if "start_response" in kept:
        results["start_response"] = outcome(
            lambda: kept["start_response"]("500 Stale", [("Content-Type", "text/plain")]))
    body = json.dumps(results).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
