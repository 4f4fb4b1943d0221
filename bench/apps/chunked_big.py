"""A 1 MiB response in the shapes apps send it: a list of 16 chunks of 64 KiB (``/list``), a
generator of them (``/gen``, as Django's StreamingHttpResponse), and ``wsgi.file_wrapper``
over a 1 MiB file (``/file``)."""

import os
import tempfile

CHUNK = b"x" * (64 * 1024)
CHUNKS = [CHUNK] * 16
SIZE = len(CHUNK) * len(CHUNKS)
HEADERS = [("Content-Type", "application/octet-stream"), ("Content-Length", str(SIZE))]

_fd, FILE = tempfile.mkstemp(prefix="ferrocorn-bench-", suffix=".bin")
with os.fdopen(_fd, "wb") as f:
    f.write(CHUNK * 16)


def _gen():
    yield from CHUNKS


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    path = environ["PATH_INFO"]
    if path == "/gen":
        return _gen()
    if path == "/file":
        return environ["wsgi.file_wrapper"](open(FILE, "rb"), 64 * 1024)
    return CHUNKS
