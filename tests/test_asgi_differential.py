"""The same Starlette, FastAPI and Quart apps under ferrocorn and under Uvicorn (httptools +
uvloop), asked the same requests: the same status, headers (but Date and Server) and bodies."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from typing import Any

import pytest

from support import Server, running_server
from support.peers import Uvicorn

pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

BOUNDARY = "----ferrocornDifferential7MA4YWxkTrZu0gW"

Request = tuple[str, str, bytes, dict[str, str]]


def multipart(fields: list[tuple[str, str]], files: list[tuple[str, str, str, bytes]]) -> bytes:
    out = b""
    for name, value in fields:
        out += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
                f"{value}\r\n").encode()
    for name, filename, ctype, content in files:
        out += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                f"filename=\"{filename}\"\r\nContent-Type: {ctype}\r\n\r\n").encode()
        out += content + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


FORM = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
URLENCODED = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}
UPLOAD = bytes(range(256)) * 2048  # 512 KiB

STARLETTE: list[Request] = [
    ("GET", "/", b"", {}),
    ("HEAD", "/", b"", {}),
    ("POST", "/", b"", {}),  # 405
    ("GET", "/nowhere", b"", {}),  # 404
    ("GET", "/items/42?q=x&t=1&t=2", b"", {}),
    ("GET", "/items/notanint", b"", {}),
    ("POST", "/json", b'{"a": [1, 2, {"b": null}]}', JSON),
    ("POST", "/json", b"{not json", JSON),
    ("POST", "/form", b"a=1&b=two+words&c=%C3%A9", URLENCODED),
    ("POST", "/form", multipart([("title", "report")],
                                [("doc", "r.bin", "application/octet-stream", UPLOAD)]), FORM),
    ("POST", "/upload-stream", UPLOAD * 4, {"Content-Type": "application/octet-stream"}),
    ("GET", "/stream", b"", {}),
    ("GET", "/cookie", b"", {"Cookie": "a=1; b=2"}),
    ("GET", "/redirect", b"", {}),
    ("GET", "/teapot", b"", {}),
    ("GET", "/crash", b"", {}),
    ("GET", "/sync", b"", {}),
]

FASTAPI: list[Request] = [
    ("GET", "/", b"", {}),
    ("GET", "/items/5?q=search", b"", {}),
    ("GET", "/items/abc", b"", {}),  # 422
    ("DELETE", "/items/5", b"", {}),  # 405
    ("GET", "/nowhere", b"", {}),  # 404
    ("POST", "/items", b'{"name": "pen", "price": 1.5, "tags": ["a"]}', JSON),
    ("POST", "/items", b'{"name": "pen"}', JSON),  # 422
    ("POST", "/upload", multipart([("note", "hello")],
                                  [("file", "data.bin", "application/octet-stream", UPLOAD)]),
     FORM),
    ("POST", "/login", b"username=ann&password=s3cret", URLENCODED),
    ("GET", "/stream", b"", {}),
    ("GET", "/cookies", b"", {}),
    ("GET", "/go", b"", {}),
    ("GET", "/missing", b"", {}),
    ("GET", "/boom", b"", {}),
    ("GET", "/sync", b"", {}),
    ("GET", "/openapi.json", b"", {}),
    ("GET", "/docs", b"", {}),
]


QUART: list[Request] = [
    ("GET", "/", b"", {}),
    ("HEAD", "/", b"", {}),
    ("POST", "/", b"", {}),  # 405
    ("GET", "/serving", b"", {}),  # before_serving ran (lifespan)
    ("GET", "/items/7?q=a&q=b+c", b"", {}),
    ("GET", "/items/seven", b"", {}),  # 404
    ("POST", "/json", b'{"a": [1, 2, {"b": null}]}', JSON),
    ("POST", "/form", multipart([("title", "report")],
                                [("doc", "r.bin", "application/octet-stream", UPLOAD)]), FORM),
    ("POST", "/form", b"a=1&b=two+words", URLENCODED),
    ("POST", "/body", UPLOAD * 4, {"Content-Type": "application/octet-stream"}),
    ("GET", "/stream", b"", {}),
    ("GET", "/cookie", b"", {"Cookie": "a=1; b=2"}),
    ("GET", "/redirect", b"", {}),
    ("GET", "/teapot", b"", {}),
    ("GET", "/crash", b"", {}),
    ("GET", "/sync", b"", {}),
]
REQUESTS = {"asgi_starlette:app": STARLETTE, "asgi_fastapi:app": FASTAPI,
            "asgi_quart:app": QUART}


def normal(name: str, value: str) -> str:
    """Starlette lists `Allow` from a set: its order is the process's hash seed's."""
    if name == "allow":
        return ", ".join(sorted(m.strip() for m in value.split(",")))
    return value


def ask(port: int, request: Request) -> tuple[int, list[tuple[str, str]], bytes]:
    method, path, body, headers = request
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        kept = sorted((k.lower(), normal(k.lower(), v)) for k, v in resp.getheaders()
                      if k.lower() not in ("date", "server"))
        return resp.status, kept, data
    finally:
        conn.close()


@pytest.fixture(scope="module", params=list(REQUESTS))
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[str, Server, Uvicorn]]:
    app = request.param
    reference = Uvicorn(app)
    try:
        with running_server(app, "-w", "1") as ours:
            yield app, ours, reference
    finally:
        reference.stop()


@pytest.mark.app_errors
def test_same_answers_as_uvicorn(pair: tuple[str, Server, Uvicorn]) -> None:
    app, ours, reference = pair
    requests = REQUESTS[app]
    differences: list[Any] = []
    statuses = set()
    for req in requests:
        theirs = ask(reference.port, req)
        mine = ask(ours.port, req)
        statuses.add(theirs[0])
        if mine != theirs:
            differences.append((req[0], req[1], {"ferrocorn": (mine[0], mine[1], mine[2][:200]),
                                                 "uvicorn": (theirs[0], theirs[1],
                                                             theirs[2][:200])}))
    assert not differences, differences
    # The cases covered what they were meant to.
    assert {200, 404, 405, 500} <= statuses
    assert ours.running()
