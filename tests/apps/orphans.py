"""An app that leaves an orphan behind: ``/orphan`` forks a child that forks a grandchild and
exits at once, so the grandchild (which lives 0.3 s) is re-parented to PID 1 of its PID
namespace. For the container tests, where that PID 1 is ferrocorn's master, which must reap it.
Any other path answers the worker's pid.
"""

from __future__ import annotations

import os
import time
from wsgiref.validate import validator


def _app(environ, start_response):
    if environ["PATH_INFO"] == "/orphan":
        child = os.fork()
        if child == 0:
            if os.fork() == 0:
                time.sleep(0.3)
            os._exit(0)
        os.waitpid(child, 0)
    if environ["PATH_INFO"] == "/slow":
        time.sleep(1.5)  # a request in flight while the container is stopped
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


app = validator(_app)
