"""A plain ASGI 3 app (no framework) for tests/test_asgi.py: every route exercises one part of
the HTTP scope, of streaming both ways, of disconnects, of lifespan, or one way an app can get
ASGI wrong. Events the tests wait for are appended to the file named by $ASGI_EVENTS."""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import threading
import time
import weakref
from typing import Any
from urllib.parse import parse_qs

Scope = dict[str, Any]


def record(event: str) -> None:
    path = os.environ.get("ASGI_EVENTS")
    if path:
        with open(path, "a") as f:
            f.write(event + "\n")


#: Chunks the /big route has handed to send(), for the backpressure test.
PROGRESS = {"sent": 0}
RELEASE: dict[str, asyncio.Event] = {}


def plain(value: Any) -> Any:
    """The scope as JSON: bytes as latin-1 text, tuples as lists."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


async def respond(send, status: int, body: bytes, headers=None) -> None:
    hdrs = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status,
                "headers": hdrs + list(headers or [])})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive) -> tuple[bytes, int]:
    body, messages = b"", 0
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        messages += 1
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body, messages


async def lifespan(scope: Scope, receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            scope["state"]["started_at"] = "startup"
            scope["state"]["counter"] = [0]
            record("startup")
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            record("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(scope, receive, send)
        return
    assert scope["type"] == "http"
    path = scope["path"]
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    root = scope["root_path"]
    route = path[len(root):] if root and path.startswith(root) else path
    # Under a root path, any path ending in a route's name reaches it.
    handler = ROUTES.get(route) or (ROUTES.get(route.rsplit("/", 1)[-1]) if root else None)
    if handler is None:
        await respond(send, 404, b"not found")
        return
    await handler(scope, receive, send, query)


async def scope_route(scope, receive, send, query) -> None:
    body, _ = await read_body(receive)
    scope["state"].setdefault("seen", 0)
    scope["state"]["seen"] += 1
    data = json.dumps({"scope": plain(scope), "body": body.decode("latin-1")}).encode()
    await respond(send, 200, data, [(b"content-type", b"application/json")])


async def echo(scope, receive, send, query) -> None:
    body, messages = await read_body(receive)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"x-messages", str(messages).encode())]})
    await send({"type": "http.response.body", "body": body})


async def as_tasks(scope, receive, send, query) -> None:
    """receive() and send() handed to asyncio as coroutines (create_task, ensure_future)."""
    body = b""
    while True:
        message = await asyncio.create_task(receive())
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    await asyncio.ensure_future(send({"type": "http.response.start", "status": 200,
                                      "headers": [(b"x-awaited", b"tasks")]}))
    await asyncio.create_task(send({"type": "http.response.body", "body": body}))


#: Set by /task-context in its request's context: no later request may see it.
REQUEST_MARK: contextvars.ContextVar[str | None] = contextvars.ContextVar("mark", default=None)


async def task_context(scope, receive, send, query) -> None:
    """What asyncio says of the request's task and context, before and after it waits."""
    seen = REQUEST_MARK.get()
    REQUEST_MARK.set(query.get("mark", "set"))
    task = asyncio.current_task()
    if query.get("wait") == "1":
        await asyncio.sleep(0)  # the task is suspended and scheduled again
    data = json.dumps({
        "a_task": task is not None,
        "same_task": asyncio.current_task() is task,
        "seen_before": seen,
        "mark_now": REQUEST_MARK.get(),
    }).encode()
    await respond(send, 200, data, [(b"content-type", b"application/json")])


async def stream(scope, receive, send, query) -> None:
    n, size = int(query.get("n", "5")), int(query.get("size", "10"))
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")]})
    for i in range(n):
        await send({"type": "http.response.body", "body": bytes([65 + i % 26]) * size,
                    "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def empty_first(scope, receive, send, query) -> None:
    """An empty piece with more to come, then the whole body: the head waits for it."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"", "more_body": True})
    await send({"type": "http.response.body", "body": b"abc"})


async def big(scope, receive, send, query) -> None:
    """256 KiB chunks, counted, for a client that does not read."""
    n = int(query.get("n", "200"))
    PROGRESS["sent"] = 0
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(n * 262144).encode())]})
    chunk = b"x" * 262144
    for i in range(n):
        await send({"type": "http.response.body", "body": chunk, "more_body": i < n - 1})
        PROGRESS["sent"] += 1


async def progress(scope, receive, send, query) -> None:
    await respond(send, 200, str(PROGRESS["sent"]).encode())


async def hold(scope, receive, send, query) -> None:
    """Reads one body message, waits to be released (/release), then reads the rest."""
    first = await receive()
    record(f"hold-first {len(first.get('body', b''))}")
    event = RELEASE.setdefault(query.get("key", "k"), asyncio.Event())
    await event.wait()
    rest, messages = await read_body(receive)
    total = len(first.get("body", b"")) + len(rest)
    await respond(send, 200, f"{total} {messages + 1}".encode())


async def release(scope, receive, send, query) -> None:
    RELEASE.setdefault(query.get("key", "k"), asyncio.Event()).set()
    await respond(send, 200, b"released")


async def wait_disconnect(scope, receive, send, query) -> None:
    """Reads the body, then waits for http.disconnect without answering."""
    await read_body(receive)
    record("waiting")
    message = await receive()
    record(f"received {message['type']}")


async def stream_forever(scope, receive, send, query) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    record("streaming")
    try:
        for _ in range(100000):
            await send({"type": "http.response.body", "body": b"y" * 16384, "more_body": True})
    except OSError as exc:
        record(f"send raised {type(exc).__name__}")
        raise


async def after_response(scope, receive, send, query) -> None:
    await respond(send, 200, b"done")
    message = await receive()
    record(f"after response {message['type']}")


async def pathsend(scope, receive, send, query) -> None:
    name = query["file"]
    size = os.path.getsize(name)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(size).encode())]})
    await send({"type": "http.response.pathsend", "path": name})


async def zerocopy(scope, receive, send, query) -> None:
    """``http.response.zerocopysend`` mixed with body messages: a prefix, the file from an
    offset for a count, the rest of it from where the file stands, a suffix. The file is
    closed as soon as the sends returned."""
    assert "http.response.zerocopysend" in scope["extensions"]
    offset, count = int(query.get("offset", "0")), int(query.get("count", "0"))
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")]})
    await send({"type": "http.response.body", "body": b"<", "more_body": True})
    with open(query["file"], "rb") as f:
        await send({"type": "http.response.zerocopysend", "file": f, "offset": offset,
                    "count": count, "more_body": True})
        f.seek(offset + count)  # no offset below: from where the file stands
        await send({"type": "http.response.zerocopysend", "file": f, "more_body": True})
    record("zerocopy file closed")
    await send({"type": "http.response.body", "body": b">"})


async def zerocopy_only(scope, receive, send, query) -> None:
    """One ``http.response.zerocopysend`` of a whole file, no other body message (the head
    waits for the file's first bytes)."""
    with open(query["file"], "rb") as f:
        size = os.fstat(f.fileno()).st_size
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(size).encode())]})
        await send({"type": "http.response.zerocopysend", "file": f})


class NoSuchDescriptor:
    """A file object whose descriptor is not open."""

    def fileno(self) -> int:
        return 999_999


BAD_ZEROCOPY: dict[str, dict[str, Any]] = {
    "no_file": {"file": None},
    "not_a_file": {"file": b"data"},
    "closed": {"file": "closed"},
    "not_open": {"file": NoSuchDescriptor()},
    "pipe": {"file": "pipe"},
    "offset_str": {"offset": "1"},
    "offset_negative": {"offset": -1},
    "count_float": {"count": 1.5},
    "more_body_str": {"more_body": "yes"},
}


async def zerocopy_bad(scope, receive, send, query) -> None:
    """Each of BAD_ZEROCOPY's messages, reported as JSON with the exception each raised;
    then the answer itself, which the bad sends left untouched."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    errors = {}
    read_end, write_end = os.pipe()
    with open(query["file"], "rb") as f, open(read_end, "rb") as pipe, open(write_end, "wb"):
        closed = open(query["file"], "rb")
        closed.close()
        stand_ins = {"closed": closed, "pipe": pipe}
        for name, fields in BAD_ZEROCOPY.items():
            message = {"type": "http.response.zerocopysend", "file": f, "more_body": True,
                       **fields}
            if isinstance(message["file"], str):
                message["file"] = stand_ins[message["file"]]
            if message["file"] is None:
                del message["file"]
            try:
                await send(message)
                errors[name] = None
            except (TypeError, ValueError) as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
    await send({"type": "http.response.body", "body": json.dumps(errors).encode()})


async def hints(scope, receive, send, query) -> None:
    """Two ``http.response.early_hint`` messages, then the page."""
    assert "http.response.early_hint" in scope["extensions"]
    await send({"type": "http.response.early_hint",
                "links": [b"</style.css>; rel=preload; as=style"]})
    await send({"type": "http.response.early_hint",
                "links": (link for link in [b"</a.js>; rel=preload; as=script",
                                            b"  </b.js>; rel=preload  "])})
    await respond(send, 200, b"hinted")


async def hints_late(scope, receive, send, query) -> None:
    """An early hint once the body started: send() raises, the app goes on."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"a", "more_body": True})
    try:
        await send({"type": "http.response.early_hint", "links": [b"</x.css>"]})
        record("late hint taken")
    except RuntimeError as exc:
        record(f"late hint raised RuntimeError: {exc}")
    await send({"type": "http.response.body", "body": b"b"})


BAD_HINTS: dict[str, Any] = {
    "no_links": None,
    "not_iterable": 5,
    "str_links": ["</a.css>"],
    "crlf": [b"</a.css>\r\nSet-Cookie: evil=1"],
    "nul": [b"</a.css>\x00"],
}


async def hints_bad(scope, receive, send, query) -> None:
    errors = {}
    for name, links in BAD_HINTS.items():
        message: dict[str, Any] = {"type": "http.response.early_hint"}
        if links is not None:
            message["links"] = links
        try:
            await send(message)
            errors[name] = None
        except (TypeError, ValueError) as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
    await respond(send, 200, json.dumps(errors).encode())


TRAILER_BODY = [b"alpha-", b"beta"]


async def trailers(scope, receive, send, query) -> None:
    """``http.response.trailers``: a body in two messages (with its length when ``cl``),
    then its SHA-256 and a status as trailers, in two messages."""
    import hashlib

    assert "http.response.trailers" in scope["extensions"]
    body = b"".join(TRAILER_BODY)
    headers = [(b"content-type", b"text/plain"), (b"trailer", b"x-checksum, x-status")]
    if query.get("cl"):
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers,
                "trailers": True})
    await send({"type": "http.response.body", "body": TRAILER_BODY[0], "more_body": True})
    await send({"type": "http.response.body", "body": TRAILER_BODY[1]})
    await send({"type": "http.response.trailers", "more_trailers": True,
                "headers": [(b"x-checksum", hashlib.sha256(body).hexdigest().encode())]})
    await send({"type": "http.response.trailers", "headers": [(b"x-status", b"ok")]})
    record("trailers sent")


async def trailers_bad(scope, receive, send, query) -> None:
    """Trailers too early, a field a trailer may not carry, and a body message where the
    trailers are due: each raises into send(), reported as JSON in the trailer x-errors."""
    errors = {}

    async def attempt(name: str, message: dict[str, Any]) -> None:
        try:
            await send(message)
            errors[name] = None
        except (TypeError, ValueError, RuntimeError) as exc:
            errors[name] = type(exc).__name__
    await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
    await attempt("too_early", {"type": "http.response.trailers", "headers": []})
    await send({"type": "http.response.body", "body": b"body"})
    await attempt("content_length", {"type": "http.response.trailers",
                                     "headers": [(b"content-length", b"4")]})
    await attempt("crlf", {"type": "http.response.trailers",
                           "headers": [(b"x-a", b"1\r\nx-b: 2")]})
    await attempt("body_again", {"type": "http.response.body", "body": b"more"})
    await attempt("more_str", {"type": "http.response.trailers", "headers": [],
                               "more_trailers": "no"})
    await send({"type": "http.response.trailers",
                "headers": [(b"x-errors", json.dumps(errors, sort_keys=True).encode())]})


async def trailers_unfinished(scope, receive, send, query) -> None:
    """The body and a first trailers message with more to come; then the app returns (or,
    with ``raise``, raises)."""
    await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
    await send({"type": "http.response.body", "body": b"partial"})
    await send({"type": "http.response.trailers", "headers": [(b"x-a", b"1")],
                "more_trailers": True})
    if query.get("raise"):
        raise ValueError("boom before the last trailers")


async def sync_work(scope, receive, send, query) -> None:
    loop = asyncio.get_running_loop()

    def blocking() -> str:
        time.sleep(0.01)
        return threading.current_thread().name

    name = await loop.run_in_executor(None, blocking)
    loop_thread = threading.current_thread().name
    await respond(send, 200, f"{name}|{loop_thread}".encode())


async def block(scope, receive, send, query) -> None:
    time.sleep(float(query.get("s", "60")))  # blocks the loop on purpose
    await respond(send, 200, b"unblocked")


async def cookies(scope, receive, send, query) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"set-cookie", b"a=1; Path=/"), (b"set-cookie", b"b=2; HttpOnly"),
        (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


# Ways to get ASGI wrong; each must be logged while the worker serves on.

async def double_start(scope, receive, send, query) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.start", "status": 200, "headers": []})


async def body_first(scope, receive, send, query) -> None:
    await send({"type": "http.response.body", "body": b"x"})


async def wrong_type(scope, receive, send, query) -> None:
    await send({"type": "http.response.bogus"})


async def bad_status(scope, receive, send, query) -> None:
    await send({"type": "http.response.start", "status": "200", "headers": []})


async def bad_body(scope, receive, send, query) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": "text, not bytes"})


async def bad_headers(scope, receive, send, query) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [("a", "b")]})


async def no_response(scope, receive, send, query) -> None:
    return None


async def raises(scope, receive, send, query) -> None:
    raise ValueError("boom before the response")


async def raises_midway(scope, receive, send, query) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"100")]})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    raise ValueError("boom in the middle")


async def returns_midway(scope, receive, send, query) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})


ROUTES = {
    "/scope": scope_route, "scope": scope_route, "/echo": echo, "/stream": stream,
    "/as-tasks": as_tasks, "/task-context": task_context,
    "/empty-first": empty_first,
    "/big": big, "/progress": progress, "/hold": hold, "/release": release,
    "/wait-disconnect": wait_disconnect, "/stream-forever": stream_forever,
    "/after-response": after_response, "/pathsend": pathsend, "/sync": sync_work,
    "/block": block, "/cookies": cookies, "/bad/double-start": double_start,
    "/bad/body-first": body_first, "/bad/wrong-type": wrong_type,
    "/bad/status": bad_status, "/bad/body": bad_body, "/bad/headers": bad_headers,
    "/bad/no-response": no_response, "/bad/raises": raises,
    "/bad/raises-midway": raises_midway, "/bad/returns-midway": returns_midway,
    "/zerocopy": zerocopy, "/zerocopy-only": zerocopy_only, "/zerocopy-bad": zerocopy_bad,
    "/hints": hints, "/hints-late": hints_late, "/hints-bad": hints_bad,
    "/trailers": trailers, "/trailers-bad": trailers_bad,
    "/trailers-unfinished": trailers_unfinished,
}


# Other shapes of app, for the interface detection and lifespan tests.

class ClassApp:
    """An object whose ``__call__`` is a coroutine function (as Django's ASGIHandler)."""

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(scope, receive, send)
            return
        await respond(send, 200, b"class app")


class_app = ClassApp()


def create_app(greeting: str = "factory") -> Any:
    async def made(scope: Scope, receive, send) -> None:
        if scope["type"] != "http":
            raise RuntimeError("no lifespan here")
        await respond(send, 200, greeting.encode())
    return made


async def failing_lifespan(scope: Scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
        return
    await respond(send, 200, b"never")


async def no_lifespan(scope: Scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        raise RuntimeError("this app does not do lifespan")
    await respond(send, 200, b"served without lifespan")


async def raising_startup(scope: Scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await receive()
        raise RuntimeError("startup exploded")
    await respond(send, 200, b"never")


#: The tasks the task factory `with_task_factory` sets on the loop has made.
FACTORY_TASKS: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()


def _factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
    task = asyncio.Task(coro, loop=loop, **kwargs)
    FACTORY_TASKS.add(task)
    return task


async def with_task_factory(scope: Scope, receive, send) -> None:
    """Sets a task factory on the loop at startup; answers whether it made the request's
    task (Python 3.11: yes, as `create_task` would use it; 3.12+: the task starts eagerly)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                asyncio.get_running_loop().set_task_factory(_factory)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    data = json.dumps({"factory": asyncio.current_task() in FACTORY_TASKS}).encode()
    await respond(send, 200, data, [(b"content-type", b"application/json")])
