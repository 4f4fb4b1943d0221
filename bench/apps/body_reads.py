"""A request body read the ways apps read it, answered with a few bytes (a form post, a JSON
API): in ``read(n)`` calls of 64 KiB (``/read``), line by line with ``readline()``
(``/readline``), or by iterating over ``wsgi.input`` (``/iter``)."""

CHUNK = 64 * 1024
HEADERS = [("Content-Type", "text/plain")]


def _read(stream) -> int:
    total = 0
    while True:
        piece = stream.read(CHUNK)
        if not piece:
            return total
        total += len(piece)


def _readline(stream) -> int:
    total = 0
    while True:
        line = stream.readline()
        if not line:
            return total
        total += len(line)


def _iter(stream) -> int:
    return sum(len(line) for line in stream)


ROUTES = {"/read": _read, "/readline": _readline, "/iter": _iter}


def app(environ, start_response):
    total = ROUTES.get(environ["PATH_INFO"], _read)(environ["wsgi.input"])
    body = str(total).encode()
    start_response("200 OK", [*HEADERS, ("Content-Length", str(len(body)))])
    return [body]
