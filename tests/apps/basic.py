"""The smallest valid app, in every form the APP argument can name.

    basic:app                          the app
    basic                              its ``application``
    basic:make_app()                   a factory
    basic:make_app('hi', suffix='!')   a factory with literal arguments
    basic:not_callable                 a bad APP: not callable
    basic:broken_factory()             a bad APP: the factory raises
"""

from __future__ import annotations

import os
from wsgiref.validate import validator


def make_app(greeting: str = "hello", suffix: str = "") -> object:
    body_text = greeting + suffix

    def hello(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/cwd":
            body = os.getcwd().encode()
        elif path == "/pid":
            body = str(os.getpid()).encode()
        elif path == "/peer":
            body = f"{environ.get('REMOTE_ADDR')} {environ.get('SERVER_PORT')}".encode()
        else:
            body = body_text.encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    return validator(hello)


app = make_app()
application = make_app("application")
not_callable = 42


def broken_factory():
    raise RuntimeError("the factory is broken")
