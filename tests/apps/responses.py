"""Response-side behaviours, one route each (``PATH_INFO``), parameters in the query string.

Routes whose app is valid are wrapped in ``wsgiref.validate.validator``; the ones that break
PEP 3333 on purpose (bad headers, bad status, sendfile path) are marked RAW. ``record=PATH``
makes an iterable (or file) append what happened to it (``close 3`` …) to that file, so a test
can prove ``close()`` was called.
"""

from __future__ import annotations

import io
import os
import sys
import time
from urllib.parse import parse_qs
from wsgiref.validate import validator

TEXT = ("Content-Type", "text/plain")


def record(path, text):
    if path:
        with open(path, "a") as f:
            f.write(text + "\n")


def q(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def fixed(status, body, headers=()):
    def app(environ, start_response):
        start_response(status, [TEXT, ("Content-Length", str(len(body))), *headers])
        return [body]
    return app


class Recorded:
    """An iterable with close(), recording how far it got and that it was closed."""

    def __init__(self, path, chunks, raise_at=None, delay=0.0):
        self.path = path
        self.chunks = chunks
        self.raise_at = raise_at
        self.delay = delay
        self.count = 0

    def __iter__(self):
        for i, chunk in enumerate(self.chunks):
            if i == self.raise_at:
                raise RuntimeError(f"iterable raised after {i} chunks")
            self.count = i + 1
            yield chunk
            if self.delay:
                time.sleep(self.delay)

    def close(self):
        record(self.path, f"close {self.count}")


class RecordingFile(io.FileIO):
    """A real file (so it has fileno() and can be sent with sendfile) that records close()."""

    record_path = ""

    def close(self):
        if not self.closed:
            record(self.record_path, "file closed")
        super().close()


class ReadOnly:
    """A file-like object with read() and close() but no fileno(): no sendfile possible."""

    def __init__(self, data, path):
        self.data = io.BytesIO(data)
        self.path = path

    def read(self, size=-1):
        return self.data.read(size)

    def close(self):
        record(self.path, "readonly closed")


# ---------------------------------------------------------------------------- routes

def health(environ, start_response):
    return fixed("200 OK", b"ok")(environ, start_response)


def reason(environ, start_response):
    return fixed("299 Custom Reason", b"custom")(environ, start_response)


def latin1(environ, start_response):
    return fixed("200 OK", b"latin", [("X-Latin", "caf\u00e9 \u00f1 \u00ff")])(
        environ, start_response)


def head(environ, start_response):
    return fixed("200 OK", b"the body of a GET", [("X-Custom", "same-for-head")])(
        environ, start_response)


def gen(environ, start_response):
    """No Content-Length; an empty piece in the middle must not end the body."""
    start_response("200 OK", [TEXT, ("X-Gen", "1")])

    def pieces():
        yield b"alpha-"
        yield b""
        yield b"beta-"
        yield b"gamma"
    return pieces()


def many(environ, start_response):
    """``n`` pieces of sizes 1, 2, 3, ... (piece i is bytes([i % 256]) * (i + 1)), no
    Content-Length unless ``cl`` gives one: an app far ahead of the socket, whose pieces go
    out several to a write."""
    params = q(environ)
    n = int(params.get("n", "300"))
    headers = [("Content-Type", "application/octet-stream")]
    if "cl" in params:
        headers.append(("Content-Length", params["cl"]))
    start_response("200 OK", headers)
    return [bytes([i % 256]) * (i + 1) for i in range(n)]


def empty(environ, start_response):
    start_response("200 OK", [TEXT])
    return []


def no_content(environ, start_response):
    start_response("204 No Content", [])
    return []


def write_route(environ, start_response):
    params = q(environ)
    headers = [TEXT]
    if params.get("cl"):
        headers.append(("Content-Length", str(len(b"one-two-three"))))
    write = start_response("200 OK", headers)
    write(b"one-")
    write(b"two-")
    return Recorded(params.get("record"), [b"three"])


def exc_info_replace(environ, start_response):
    start_response("200 OK", [TEXT, ("X-First", "1")])
    try:
        raise ValueError("replace the headers")
    except ValueError:
        body = b"replaced"
        start_response("500 Internal Server Error",
                       [TEXT, ("X-Second", "1"), ("Content-Length", str(len(body)))],
                       sys.exc_info())
    return [body]


def exc_info_first(environ, start_response):
    """exc_info on the first call is allowed: it behaves as a normal call."""
    try:
        raise ValueError("first call with exc_info")
    except ValueError:
        body = b"first"
        start_response("503 Service Unavailable",
                       [TEXT, ("Content-Length", str(len(body)))], sys.exc_info())
    return [body]


def exc_info_after_sent(environ, start_response):
    """After the headers went out, start_response(exc_info) must re-raise exc_info."""
    params = q(environ)
    write = start_response("200 OK", [TEXT])
    write(b"partial-body")
    try:
        raise ValueError(f"late error {params.get('marker')}")
    except ValueError as original:
        try:
            start_response("500 Internal Server Error", [TEXT], sys.exc_info())
        except BaseException as raised:  # noqa: BLE001 - recording what was raised
            record(params.get("record"), f"reraised same={raised is original}")
            raise
        record(params.get("record"), "not reraised")
    return [b"should not get here"]


def start_twice(environ, start_response):
    """A second start_response without exc_info is an error the server must raise."""
    start_response("200 OK", [TEXT])
    try:
        start_response("201 Created", [TEXT])
    except Exception as exc:  # noqa: BLE001
        result = f"raised:{type(exc).__name__}"
    else:
        result = "accepted"
    return [result.encode()]


def close_normal(environ, start_response):
    start_response("200 OK", [TEXT])
    return Recorded(q(environ).get("record"), [b"a", b"b", b"c"])


def close_raise(environ, start_response):
    start_response("200 OK", [TEXT])
    return Recorded(q(environ).get("record"), [b"x" * 1000, b"y" * 1000, b"z"], raise_at=2)


def close_stream(environ, start_response):
    params = q(environ)
    n = int(params.get("n", "3000"))
    size = int(params.get("size", "65536"))
    delay = float(params.get("delay", "0.005"))
    start_response("200 OK", [TEXT])
    return Recorded(params.get("record"), (b"s" * size for _ in range(n)), delay=delay)


def raise_before(environ, start_response):
    raise RuntimeError(f"boom-before-{q(environ).get('marker')}")


def raise_after_start(environ, start_response):
    start_response("200 OK", [TEXT])
    raise RuntimeError(f"boom-after-start-{q(environ).get('marker')}")


def raise_first_iter(environ, start_response):
    marker = q(environ).get("marker")
    start_response("200 OK", [TEXT])

    def pieces():
        yield b""  # an empty piece: the headers must still not be sent
        raise RuntimeError(f"boom-first-iter-{marker}")
    return pieces()


def raise_mid_body(environ, start_response):
    params = q(environ)
    marker = params.get("marker")
    headers = [TEXT]
    if params.get("cl"):
        headers.append(("Content-Length", "3000"))
    start_response("200 OK", headers)

    def pieces():
        yield b"m" * 1000
        raise RuntimeError(f"boom-mid-body-{marker}")
    return Recorded(params.get("record"), pieces())


def file_route(environ, start_response):
    params = q(environ)
    f = RecordingFile(params["path"], "rb")
    f.record_path = params.get("record", "")
    size = os.fstat(f.fileno()).st_size
    offset = int(params.get("offset", "0"))
    f.seek(offset)
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(size - offset))])
    return environ["wsgi.file_wrapper"](f, int(params.get("block", "8192")))


def file_like(environ, start_response):
    params = q(environ)
    with open(params["path"], "rb") as f:
        data = f.read()
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(data)))])
    return environ["wsgi.file_wrapper"](ReadOnly(data, params.get("record")), 4096)


def errors(environ, start_response):
    marker = q(environ).get("marker")
    stream = environ["wsgi.errors"]
    stream.write(f"errors-write-{marker}\n")
    stream.writelines([f"errors-lines-{marker}-1\n", f"errors-lines-{marker}-2\n"])
    stream.flush()
    return fixed("200 OK", b"logged")(environ, start_response)


def big(environ, start_response):
    """``size`` bytes in ``chunk``-byte pieces (piece i is bytes([i % 256]) * chunk), writing
    how many pieces were produced to ``progress`` every 4 pieces."""
    params = q(environ)
    size = int(params.get("size", str(50 * 1024 * 1024)))
    chunk = int(params.get("chunk", "65536"))
    progress = params.get("progress")
    count = size // chunk
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(count * chunk))])

    def pieces():
        for i in range(count):
            if progress and i % 4 == 0:
                with open(progress + ".tmp", "w") as f:
                    f.write(str(i))
                os.replace(progress + ".tmp", progress)
            yield bytes([i % 256]) * chunk
        if progress:
            with open(progress + ".tmp", "w") as f:
                f.write(str(count))
            os.replace(progress + ".tmp", progress)
    return pieces()


# Apps that break the rules on purpose: not validated.

def cl_mismatch(environ, start_response):
    """RAW. ``kind=long``: Content-Length 5 but 10 bytes; ``kind=short``: 10 but 3."""
    kind = q(environ).get("kind")
    start_response("200 OK", [TEXT, ("Content-Length", "5" if kind == "long" else "10")])
    return [b"01234", b"56789"] if kind == "long" else [b"abc"]


def bad_header(environ, start_response):
    """RAW. ``kind``: crlf_value, lf_value, cr_value, crlf_name, colon_name, space_name,
    non_latin1, bytes_value, hop (with ``name``)."""
    params = q(environ)
    kind = params.get("kind")
    headers = {
        "crlf_value": [("X-Bad", "a\r\nX-Injected: yes")],
        "lf_value": [("X-Bad", "a\nX-Injected: yes")],
        "cr_value": [("X-Bad", "a\rX-Injected: yes")],
        "crlf_name": [("X-Bad\r\nX-Injected", "yes")],
        "colon_name": [("X-Bad: x", "yes")],
        "space_name": [("X Bad", "yes")],
        "non_latin1": [("X-Euro", "\u20ac")],
        "bytes_value": [("X-Bytes", b"raw")],
        "hop": [(params.get("name", "Keep-Alive"), params.get("value", "timeout=5"))],
    }[kind]
    body = b"should never be sent"
    start_response("200 OK", [TEXT, ("Content-Length", str(len(body))), *headers])
    return [body]


def bad_status(environ, start_response):
    """RAW: a status that is not ``NNN reason``."""
    status = q(environ).get("status", "abc")
    start_response(status, [TEXT])
    return [b"bad status"]


VALID = {
    "/health": health,
    "/reason": reason,
    "/latin1": latin1,
    "/head": head,
    "/gen": gen,
    "/many": many,
    "/empty": empty,
    "/204": no_content,
    "/write": write_route,
    "/exc_info/replace": exc_info_replace,
    "/exc_info/first": exc_info_first,
    "/exc_info/after_sent": exc_info_after_sent,
    "/start_twice": start_twice,
    "/close/normal": close_normal,
    "/close/raise": close_raise,
    "/close/stream": close_stream,
    "/raise/before": raise_before,
    "/raise/after_start": raise_after_start,
    "/raise/first_iter": raise_first_iter,
    "/raise/mid_body": raise_mid_body,
    "/file": file_route,
    "/file_like": file_like,
    "/errors": errors,
    "/big": big,
    "/spaced_cookie": fixed("200 OK", b"ok", [
        # What Django sends: SimpleCookie.output(header="") begins with a space.
        ("Set-Cookie", " csrftoken=abc; Path=/"),
        ("X-Padded", "  value  "),
    ]),
}
RAW = {
    "/raw/file": file_route,
    "/raw/close/stream": close_stream,
    "/raw/bad_header": bad_header,
    "/raw/bad_status": bad_status,
    "/raw/cl_mismatch": cl_mismatch,
}
ROUTES = {path: validator(route) for path, route in VALID.items()}
ROUTES.update(RAW)


def app(environ, start_response):
    route = ROUTES.get(environ.get("PATH_INFO", ""))
    if route is None:
        return validator(fixed("404 Not Found", b"no such route"))(environ, start_response)
    return route(environ, start_response)
