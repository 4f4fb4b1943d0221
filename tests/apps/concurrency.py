"""Apps for --threads.

``concurrency:barrier(4)``: every request waits (≤ 5 s) until 4 requests are inside the app
at once (in this process); 200 "met" when they were, 503 "broken" when the barrier timed
out; ``/pid`` answers the worker's pid.

``concurrency:tracker()``: each request stays in the app for a moment (a fixed 0.2 s of work)
and records how many requests were inside at once; ``/max`` returns the highest count seen.
"""

from __future__ import annotations

import os
import threading
import time
from wsgiref.validate import validator


def _reply(start_response, status, body):
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def barrier(parties):
    gate = threading.Barrier(parties, timeout=5)

    def app(environ, start_response):
        if environ.get("PATH_INFO") == "/health":
            return _reply(start_response, "200 OK", b"ok")
        if environ.get("PATH_INFO") == "/pid":
            return _reply(start_response, "200 OK", str(os.getpid()).encode())
        try:
            gate.wait()
        except threading.BrokenBarrierError:
            return _reply(start_response, "503 Service Unavailable", b"broken")
        return _reply(start_response, "200 OK", b"met")

    return validator(app)


def tracker():
    lock = threading.Lock()
    state = {"inside": 0, "max": 0}

    def app(environ, start_response):
        path = environ.get("PATH_INFO")
        if path == "/max":
            return _reply(start_response, "200 OK", str(state["max"]).encode())
        if path == "/health":
            return _reply(start_response, "200 OK", b"ok")
        with lock:
            state["inside"] += 1
            state["max"] = max(state["max"], state["inside"])
        try:
            time.sleep(0.2)  # the work a request does while others may run
        finally:
            with lock:
                state["inside"] -= 1
        return _reply(start_response, "200 OK", b"done")

    return validator(app)
