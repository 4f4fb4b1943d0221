"""Echoes the request back as JSON, reading ``wsgi.input`` the way ``?mode=`` says.

Modes (``size`` is the argument where one is taken):

``read_n`` (default)  read(size) until b''
``read_all``          read() with no argument
``readline``          readline() until b''
``readline_n``        readline(size) until b''
``readlines``         readlines()
``iter``              ``for line in wsgi.input``
``partial``           read(size) once, leaving the rest of the body unread
``noread``            does not touch the body
``hash``              read(65536) until b''; returns length, sha256 and the largest piece
``wait_then_read``    writes the file ``started``, waits (≤ 15 s) for the file ``go``, then
                      reads like read_n (for the 100-continue test)

The reply has ``pieces`` (what each call returned, latin-1 decoded) and ``after`` (what
further reads returned once the body was exhausted: they must all be empty).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from urllib.parse import parse_qs
from wsgiref.validate import validator

MAX_CALLS = 1_000_000


def _raw(stream):
    """The server's own wsgi.input under the validator's wrapper (for calls it forbids)."""
    return getattr(stream, "input", stream)


def _until_empty(call):
    pieces = []
    for _ in range(MAX_CALLS):
        piece = call()
        if not piece:
            break
        pieces.append(piece)
    return pieces


def echo(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    mode = query.get("mode", ["read_n"])[0]
    size = int(query.get("size", ["65536"])[0])
    stream = environ["wsgi.input"]
    pieces: list[bytes] = []
    extra: dict[str, object] = {}

    if mode == "read_n":
        pieces = _until_empty(lambda: stream.read(size))
    elif mode == "read_all":
        pieces = [_raw(stream).read()]
    elif mode == "readline":
        pieces = _until_empty(stream.readline)
    elif mode == "readline_n":
        pieces = _until_empty(lambda: stream.readline(size))
    elif mode == "readlines":
        pieces = stream.readlines()
    elif mode == "iter":
        pieces = []
        for line in _raw(stream):
            pieces.append(line)
            if len(pieces) > MAX_CALLS:
                break
    elif mode == "partial":
        pieces = [stream.read(size)]
    elif mode == "noread":
        pieces = []
    elif mode == "hash":
        digest = hashlib.sha256()
        length = 0
        largest = 0
        for _ in range(MAX_CALLS):
            piece = stream.read(65536)
            if not piece:
                break
            digest.update(piece)
            length += len(piece)
            largest = max(largest, len(piece))
        extra = {"length": length, "sha256": digest.hexdigest(), "largest": largest}
    elif mode == "wait_then_read":
        with open(query["started"][0], "w") as f:
            f.write("started")
        deadline = time.monotonic() + 15
        while not os.path.exists(query["go"][0]) and time.monotonic() < deadline:
            time.sleep(0.01)
        pieces = _until_empty(lambda: stream.read(size))
    else:
        raise ValueError(f"unknown mode {mode!r}")

    after = []
    if mode not in ("partial", "noread"):
        after = [stream.read(1), stream.readline(), stream.read(100), stream.readline(5)]

    headers = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
    reply = {
        "method": environ["REQUEST_METHOD"],
        "path": environ.get("PATH_INFO", ""),
        "query": environ.get("QUERY_STRING", ""),
        "raw_uri": environ.get("RAW_URI"),
        "protocol": environ.get("SERVER_PROTOCOL"),
        "content_length": environ.get("CONTENT_LENGTH"),
        "content_type": environ.get("CONTENT_TYPE"),
        "headers": headers,
        "body": b"".join(pieces).decode("latin-1"),
        "pieces": [p.decode("latin-1") for p in pieces],
        "after": [a.decode("latin-1") for a in after],
        **extra,
    }
    data = json.dumps(reply).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(data)))])
    return [data]


app = validator(echo)
