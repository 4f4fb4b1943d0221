"""Records every request it is called for, for the smuggling harness (tests/smuggling.py).

Each call appends one JSON line to ``$SMUGGLE_RECORDS/<pid>.jsonl`` (one file per worker
process, written with a single ``os.write`` on an ``O_APPEND`` descriptor, so lines from
threads never interleave) before it answers: when the client has the response, the record is
on disk. A record holds the monotonic clock (system-wide on Linux, so records from several
workers sort into the order the app was called), the ``X-Request-Id`` nginx tagged the request
with (``None`` for a request nginx did not send), the method, ``PATH_INFO`` and
``QUERY_STRING`` as the server decoded them, and the whole body, latin-1 decoded.

The body is read with ``read(size)`` until ``b''`` (``wsgiref.validate`` forbids ``read()``
without a size); a body the server cannot deliver whole (a truncated chunked body) is
recorded with ``"error"`` set and answered 400.
"""

from __future__ import annotations

import json
import os
import threading
import time
from wsgiref.validate import validator

_lock = threading.Lock()
_fds: dict[int, int] = {}
MAX_READS = 100_000


def _fd() -> int:
    pid = os.getpid()
    with _lock:
        fd = _fds.get(pid)
        if fd is None:
            folder = os.environ["SMUGGLE_RECORDS"]
            fd = os.open(os.path.join(folder, f"{pid}.jsonl"),
                         os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            _fds[pid] = fd
        return fd


def _read_body(stream) -> tuple[bytes, str | None]:
    body = bytearray()
    try:
        for _ in range(MAX_READS):
            piece = stream.read(65536)
            if not piece:
                return bytes(body), None
            body += piece
        return bytes(body), "body did not end"
    except Exception as exc:  # the server's error for a body that did not arrive whole
        return bytes(body), f"{type(exc).__name__}: {exc}"


def raw_app(environ, start_response):
    t = time.monotonic_ns()
    body, error = _read_body(environ["wsgi.input"])
    record = {
        "t": t,
        "pid": os.getpid(),
        "id": environ.get("HTTP_X_REQUEST_ID"),
        "method": environ["REQUEST_METHOD"],
        "path": environ.get("PATH_INFO", ""),
        "query": environ.get("QUERY_STRING", ""),
        "body": body.decode("latin-1"),
        "error": error,
    }
    os.write(_fd(), (json.dumps(record) + "\n").encode())
    status = "400 Bad Request" if error else "200 OK"
    reply = f"seen {record['method']} {record['path']} id={record['id']} body={len(body)}\n"
    data = reply.encode("latin-1", "replace")
    start_response(status, [("Content-Type", "text/plain"),
                            ("Content-Length", str(len(data)))])
    return [data]


app = validator(raw_app)
