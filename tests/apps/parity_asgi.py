"""The parity matrix's ASGI app (tests/test_parity*.py, issue 28): parity_app.py's routes where
ASGI has the behaviour, answered the ASGI way, so every parity test can ask the same of a WSGI
and an ASGI app over every protocol. Every request goes through :func:`checked` (this app's
counterpart of ``wsgiref.validate``: a scope or a received message off the spec fails with an
AssertionError, which the suite's autouse check finds in the server's log).

/r/health, /r/head, /r/latin1   a whole body with its Content-Length (one message)
/r/gen                          streamed (``more_body``), an empty piece in the middle, no length
/r/many?n=N[&cl=L]              N pieces of sizes 1, 2, 3, ... (as responses.py's /many)
/r/big?size=S&chunk=C           S bytes in C-byte pieces, with the length
/r/empty                        start and one empty body message
/r/204                          204 with no fields
/r/file?path=P[&record=R]       ``http.response.pathsend`` of P (WSGI: wsgi.file_wrapper);
                                ``pathsend done`` appended to R once send() returned
/r/file?path=P&offset=O[&record=R]
                                ``http.response.zerocopysend`` of the open file from O, which
                                is closed once send() returned (``file closed`` in R)
/hints/two|bytes|after-start|late|empty
                                ``http.response.early_hint`` as hints_app.py sends
                                wsgi.early_hints (``late``: once the body started, send()
                                raises and the app goes on)
/r/raise/before|after_start|first_iter|mid_body?marker=M[&cl=1]
                                ``RuntimeError("boom-<route>-M")`` before anything, after
                                http.response.start, after an empty more_body piece, or
                                after 1000 bytes of a body (of 3000 declared with ``cl``)
/echo?mode=read_n|hash|noread   the request back as JSON, like echo.py (``pieces`` are the
                                http.request messages' bodies)
/env                            the scope as JSON (bytes as latin-1 text), and the body
/not-modified                   a 304 with an ETag and no body
/hold?started=PATH&go=PATH      writes PATH ``started``, then blocks the event loop (at most
                                15 s) until the file ``go`` exists: the loop is held as an app
                                thread is by parity_app's /hold (--max-pending)
anything else                   the app's own 404, whose body says it is the app's
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from asgi_app import plain  # the scope as JSON, as the ASGI tests' app dumps it

#: The body of the app's own 404 (the same as parity_app's: a static miss must not be it).
APP_404 = b"not found by the app"
TEXT = (b"content-type", b"text/plain")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Route = Callable[[Scope, Receive, Send, dict[str, str]], Awaitable[None]]


# ------------------------------------------------------------------------------- the checks


def check_scope(scope: Scope) -> None:
    """The HTTP scope as asgiref's spec (2.4) describes it."""
    assert scope["type"] == "http", scope
    assert scope["asgi"]["version"] == "3.0", scope["asgi"]
    assert scope["asgi"].get("spec_version", "2.0") >= "2.0", scope["asgi"]
    assert scope["http_version"] in ("1.0", "1.1", "2"), scope["http_version"]
    assert isinstance(scope["method"], str) and scope["method"] == scope["method"].upper()
    assert scope["scheme"] in ("http", "https"), scope["scheme"]
    assert isinstance(scope["path"], str) and isinstance(scope["root_path"], str)
    assert scope["path"].startswith(scope["root_path"]), scope
    assert scope.get("raw_path") is None or isinstance(scope["raw_path"], bytes)
    assert isinstance(scope["query_string"], bytes), scope["query_string"]
    for pair in scope["headers"]:
        name, value = pair
        assert isinstance(name, bytes) and isinstance(value, bytes), pair
        assert name == name.lower(), pair
    for end in ("client", "server"):
        if scope.get(end) is not None:
            host, port = scope[end]
            assert isinstance(host, str) and (port is None or isinstance(port, int)), scope[end]


def check_received(message: Message) -> None:
    if message["type"] == "http.request":
        assert isinstance(message.get("body", b""), bytes), message
        assert isinstance(message.get("more_body", False), bool), message
    else:
        assert message["type"] == "http.disconnect", message


def checked(route: Route) -> Route:
    async def run(scope: Scope, receive: Receive, send: Send, query: dict[str, str]) -> None:
        check_scope(scope)

        async def receive_checked() -> Message:
            message = await receive()
            check_received(message)
            return message
        await route(scope, receive_checked, send, query)
    return run


# ------------------------------------------------------------------------------- helpers


def record(path: str | None, text: str) -> None:
    if path:
        with open(path, "a") as f:
            f.write(text + "\n")


async def whole(send: Send, status: int, body: bytes,
                headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A response in one body message, with its Content-Length."""
    await send({"type": "http.response.start", "status": status,
                "headers": [TEXT, (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


async def read_all(receive: Receive) -> list[bytes]:
    """The bodies of the http.request messages, until the one without ``more_body``."""
    pieces: list[bytes] = []
    for _ in range(1_000_000):
        message = await receive()
        assert message["type"] == "http.request", message
        pieces.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return pieces




# ------------------------------------------------------------------------------- routes


async def health(scope: Scope, receive: Receive, send: Send, query: dict[str, str]) -> None:
    await whole(send, 200, b"ok")


async def head(scope: Scope, receive: Receive, send: Send, query: dict[str, str]) -> None:
    await whole(send, 200, b"the body of a GET", [(b"x-custom", b"same-for-head")])


async def latin1(scope: Scope, receive: Receive, send: Send, query: dict[str, str]) -> None:
    await whole(send, 200, b"latin", [(b"x-latin", "caf\u00e9 \u00f1 \u00ff".encode("latin-1"))])


async def gen(scope: Scope, receive: Receive, send: Send, query: dict[str, str]) -> None:
    """No Content-Length; an empty piece in the middle must not end the body."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [TEXT, (b"x-gen", b"1")]})
    for piece in (b"alpha-", b"", b"beta-"):
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b"gamma"})


async def many(scope: Scope, receive: Receive, send: Send, query: dict[str, str]) -> None:
    n = int(query.get("n", "300"))
    headers = [(b"content-type", b"application/octet-stream")]
    if "cl" in query:
        headers.append((b"content-length", query["cl"].encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for i in range(n):
        await send({"type": "http.response.body", "body": bytes([i % 256]) * (i + 1),
                    "more_body": i < n - 1})


async def big(scope: Scope, receive: Receive, send: Send, query: dict[str, str]) -> None:
    size, chunk = int(query.get("size", str(4 << 20))), int(query.get("chunk", "65536"))
    count = size // chunk
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream"),
                            (b"content-length", str(count * chunk).encode())]})
    for i in range(count):
        await send({"type": "http.response.body", "body": bytes([i % 256]) * chunk,
                    "more_body": i < count - 1})


async def empty(scope: Scope, receive: Receive, send: Send, query: dict[str, str]) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [TEXT]})
    await send({"type": "http.response.body", "body": b""})


async def no_content(scope: Scope, receive: Receive, send: Send,
                     query: dict[str, str]) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body"})


async def not_modified(scope: Scope, receive: Receive, send: Send,
                       query: dict[str, str]) -> None:
    await send({"type": "http.response.start", "status": 304,
                "headers": [(b"etag", b'"parity-v1"'), (b"x-route", b"not-modified")]})
    await send({"type": "http.response.body"})


async def file_route(scope: Scope, receive: Receive, send: Send, query: dict[str, str]) -> None:
    if "offset" in query:
        await file_from(scope, send, query)
        return
    assert "http.response.pathsend" in scope["extensions"], scope["extensions"]
    path = query["path"]
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream"),
                            (b"content-length", str(os.path.getsize(path)).encode())]})
    await send({"type": "http.response.pathsend", "path": path})
    record(query.get("record"), "pathsend done")


async def file_from(scope: Scope, send: Send, query: dict[str, str]) -> None:
    """The file from an offset, with ``http.response.zerocopysend``; the app closes its file
    as soon as send() returns (the server sends from its own descriptor)."""
    assert "http.response.zerocopysend" in scope["extensions"], scope["extensions"]
    path, offset = query["path"], int(query["offset"])
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream"),
                                (b"content-length", str(size - offset).encode())]})
        await send({"type": "http.response.zerocopysend", "file": f, "offset": offset})
    record(query.get("record"), "file closed")


STYLE = b"</style.css>; rel=preload; as=style"


async def hints(scope: Scope, receive: Receive, send: Send, query: dict[str, str]) -> None:
    """hints_app.py's routes, with ``http.response.early_hint``."""
    assert "http.response.early_hint" in scope["extensions"], scope["extensions"]
    which = scope["path"].rsplit("/", 1)[-1]

    async def hint(*links: bytes) -> None:
        await send({"type": "http.response.early_hint", "links": list(links)})
    if which == "two":
        await hint(STYLE)
        await hint(b"</app.js>; rel=preload; as=script",
                   b"</font.woff2>; rel=preload; as=font; crossorigin")
    elif which == "bytes":
        await hint(b"</b.css>; rel=preload")
    elif which == "after-start":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [TEXT, (b"content-length", b"2")]})
        await hint(STYLE)  # the head waits for the body: still sent
        await send({"type": "http.response.body", "body": b"ok"})
        return
    elif which == "late":
        await send({"type": "http.response.start", "status": 200, "headers": [TEXT]})
        await send({"type": "http.response.body", "body": b"first ", "more_body": True})
        try:
            await hint(STYLE)
        except RuntimeError as exc:  # the head has gone: refused
            assert "early_hint" in str(exc), exc
        else:
            raise AssertionError("a late early_hint was taken")
        await send({"type": "http.response.body", "body": b"second"})
        return
    elif which == "empty":
        await hint()
    else:
        await hint(STYLE)
    await whole(send, 200, b"ferrocorn-asgi-loop")


async def raise_before(scope: Scope, receive: Receive, send: Send,
                       query: dict[str, str]) -> None:
    raise RuntimeError(f"boom-before-{query.get('marker')}")


async def raise_after_start(scope: Scope, receive: Receive, send: Send,
                            query: dict[str, str]) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [TEXT]})
    raise RuntimeError(f"boom-after-start-{query.get('marker')}")


async def raise_first_iter(scope: Scope, receive: Receive, send: Send,
                           query: dict[str, str]) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [TEXT]})
    # An empty piece: the head must still not be sent.
    await send({"type": "http.response.body", "body": b"", "more_body": True})
    raise RuntimeError(f"boom-first-iter-{query.get('marker')}")


async def raise_mid_body(scope: Scope, receive: Receive, send: Send,
                         query: dict[str, str]) -> None:
    headers = [TEXT]
    if query.get("cl"):
        headers.append((b"content-length", b"3000"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"m" * 1000, "more_body": True})
    raise RuntimeError(f"boom-mid-body-{query.get('marker')}")


async def echo(scope: Scope, receive: Receive, send: Send, query: dict[str, str]) -> None:
    mode = query.get("mode", "read_n")
    pieces: list[bytes] = []
    extra: dict[str, object] = {}
    if mode == "read_n":
        pieces = await read_all(receive)
    elif mode == "hash":
        got = await read_all(receive)
        whole_body = b"".join(got)
        extra = {"length": len(whole_body), "sha256": hashlib.sha256(whole_body).hexdigest(),
                 "largest": max((len(p) for p in got), default=0)}
    elif mode != "noread":
        raise ValueError(f"unknown mode {mode!r}")
    fields = dict(scope["headers"])
    reply = {
        "method": scope["method"],
        "path": scope["path"],
        "query": scope["query_string"].decode("latin-1"),
        "raw_uri": plain(scope.get("raw_path")),
        "protocol": scope["http_version"],
        "content_length": plain(fields.get(b"content-length")),
        "content_type": plain(fields.get(b"content-type")),
        "headers": plain(scope["headers"]),
        "body": b"".join(pieces).decode("latin-1"),
        "pieces": [p.decode("latin-1") for p in pieces],
        "after": [],
        **extra,
    }
    await whole(send, 200, json.dumps(reply).encode(), [(b"content-type", b"application/json")])


async def env(scope: Scope, receive: Receive, send: Send, query: dict[str, str]) -> None:
    body = b"".join(await read_all(receive))
    data = json.dumps({"scope": plain(scope), "body": body.decode("latin-1")}).encode()
    await whole(send, 200, data, [(b"content-type", b"application/json")])


async def hold(scope: Scope, receive: Receive, send: Send, query: dict[str, str]) -> None:
    with open(query["started"], "w") as f:
        f.write("started")
    deadline = time.monotonic() + 15
    while not os.path.exists(query["go"]) and time.monotonic() < deadline:
        time.sleep(0.01)  # blocks the loop on purpose, as an app thread is held; bounded
    await whole(send, 200, b"held")


async def missing(scope: Scope, receive: Receive, send: Send, query: dict[str, str]) -> None:
    await whole(send, 404, APP_404)


ROUTES: dict[str, Route] = {path: checked(route) for path, route in {
    "/r/health": health,
    "/r/head": head,
    "/r/latin1": latin1,
    "/r/gen": gen,
    "/r/many": many,
    "/r/big": big,
    "/r/empty": empty,
    "/r/204": no_content,
    "/r/file": file_route,
    "/r/raise/before": raise_before,
    "/r/raise/after_start": raise_after_start,
    "/r/raise/first_iter": raise_first_iter,
    "/r/raise/mid_body": raise_mid_body,
    "/echo": echo,
    "/env": env,
    "/not-modified": not_modified,
    "/hold": hold,
    **{f"/hints/{which}": hints for which in ("two", "bytes", "after-start", "late", "empty")},
}.items()}


async def lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    for _ in range(2):
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(scope, receive, send)
        return
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}
    route = scope["path"][len(scope["root_path"]):]
    await ROUTES.get(route, checked(missing))(scope, receive, send, query)
