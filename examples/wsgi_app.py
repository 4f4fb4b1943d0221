"""A plain WSGI application (PEP 3333), no dependencies, to try ferrocorn with.

    ferrocorn --chdir examples wsgi_app            # its `application`
    ferrocorn --chdir examples wsgi_app:app        # the same object

Paths: ``/`` (hello), ``/environ`` (the environ, as text), ``/stream`` (a body produced by a
generator, sent chunked), ``/file`` (this file, sent through ``wsgi.file_wrapper``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

Environ = dict[str, Any]
StartResponse = Callable[..., Callable[[bytes], object]]


def hello(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    body = b"Hello from ferrocorn! Try /environ, /stream and /file.\n"
    start_response(
        "200 OK",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [body]


def show_environ(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    lines = [f"{key} = {environ[key]!r}" for key in sorted(environ)]
    body = ("\n".join(lines) + "\n").encode("utf-8")
    start_response(
        "200 OK",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [body]


def stream(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """No Content-Length: HTTP/1.1 clients get the body chunked, piece by piece."""
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])

    def pieces() -> Iterator[bytes]:
        for n in range(1, 6):
            yield f"piece {n} of 5\n".encode()
            time.sleep(0.2)

    return pieces()


def send_file(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """The server sends a real file with sendfile(2), without reading it into Python."""
    f = open(__file__, "rb")  # closed by the server, through the wrapper's close()
    size = f.seek(0, 2)
    f.seek(0)
    start_response(
        "200 OK",
        [("Content-Type", "text/x-python; charset=utf-8"), ("Content-Length", str(size))],
    )
    wrapper: Iterable[bytes] = environ["wsgi.file_wrapper"](f, 64 * 1024)
    return wrapper


def not_found(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    body = b"Not Found\n"
    start_response(
        "404 Not Found",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [body]


ROUTES: dict[str, Callable[[Environ, StartResponse], Iterable[bytes]]] = {
    "/": hello,
    "/environ": show_environ,
    "/stream": stream,
    "/file": send_file,
}


def application(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    handler = ROUTES.get(environ.get("PATH_INFO") or "/", not_found)
    return handler(environ, start_response)


app = application
