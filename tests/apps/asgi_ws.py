"""WebSocket routes of a Starlette app, and raw ASGI ones for what Starlette never sends, for
tests/test_websocket_asgi.py.

- ``/echo``: echoes text and bytes; picks the last subprotocol it knows of those offered and
  sends extra headers with its accept; ``close:CODE:REASON`` makes it close so. The code the
  client closed with is kept for ``/seen``.
- ``/room``: a broadcast: each message goes to every client in the room.
- ``/deny``: the denial extension (418, a header, a body); ``/reject``: a close before the
  accept (a 403).
- ``/sink``: accepts and receives nothing until told over HTTP (``/release``).
- ``/flood``: sends N messages of 64 KiB, counting them in ``/progress``.
- ``/raw/...``: an ASGI app speaking the protocol by hand: each bad message raises into it,
  and it reports what it was told (``/raw/bad``), or lets it escape (``/raw/raises-*``).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

KNOWN = ("v1", "v2")
seen: dict[str, Any] = {"disconnects": [], "connects": 0}
room: set[WebSocket] = set()
released = asyncio.Event()
progress = {"sent": 0, "done": 0}


def disconnected(code: int, reason: str | None) -> None:
    """Kept for ``/seen``, and logged (a stopping server can no longer be asked)."""
    seen["disconnects"].append([code, reason or ""])
    print(f"app saw websocket.disconnect {code}", file=sys.stderr, flush=True)


def _scope_facts(scope: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": scope["type"],
        "asgi": scope["asgi"],
        "http_version": scope["http_version"],
        "scheme": scope["scheme"],
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode(),
        "query_string": scope["query_string"].decode(),
        "root_path": scope["root_path"],
        "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
        "client": list(scope["client"]) if scope["client"] else None,
        "server": list(scope["server"]),
        "subprotocols": scope["subprotocols"],
        "extensions": sorted(scope.get("extensions", {})),
        "has_method": "method" in scope,
        "state": sorted(scope.get("state", {})),
    }


async def echo(ws: WebSocket) -> None:
    seen["connects"] += 1
    chosen = [p for p in ws.scope["subprotocols"] if p in KNOWN]
    await ws.accept(subprotocol=chosen[-1] if chosen else None,
                    headers=[(b"x-accepted-by", b"starlette"), (b"set-cookie", b"ws=1")])
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                disconnected(message["code"], message.get("reason"))
                return
            text, data = message.get("text"), message.get("bytes")
            if text is not None and text.startswith("close:"):
                _, code, reason = text.split(":", 2)
                await ws.close(int(code), reason)
                final = await ws.receive()
                disconnected(final["code"], final.get("reason"))
                return
            if text == "scope":
                await ws.send_text(json.dumps(_scope_facts(dict(ws.scope))))
            elif text is not None:
                await ws.send_text(text)
            else:
                await ws.send_bytes(data or b"")
    except WebSocketDisconnect as e:
        disconnected(e.code, e.reason)


async def broadcast(ws: WebSocket) -> None:
    await ws.accept()
    room.add(ws)
    try:
        async for text in ws.iter_text():
            for member in list(room):
                await member.send_text(f"{ws.query_params.get('name', '?')}: {text}")
    finally:
        room.discard(ws)


async def deny(ws: WebSocket) -> None:
    await ws.send_denial_response(
        PlainTextResponse("no entry", status_code=418, headers={"x-why": "teapot"}))


async def reject(ws: WebSocket) -> None:
    await ws.close(code=4403)


async def sink(ws: WebSocket) -> None:
    await ws.accept()
    await released.wait()
    released.clear()
    await ws.close(1000)


async def flood(ws: WebSocket) -> None:
    await ws.accept()
    total = int(await ws.receive_text())
    progress.update(sent=0, done=0)
    for i in range(total):
        await ws.send_bytes(i.to_bytes(8, "big") + bytes(64 * 1024 - 8))
        progress["sent"] = i + 1
    await ws.receive_text()
    progress["done"] = 1
    await ws.close()


async def seen_view(request: Request) -> Response:
    return JSONResponse(seen)


async def release(request: Request) -> Response:
    released.set()
    return PlainTextResponse("released")


async def progress_view(request: Request) -> Response:
    return JSONResponse(progress)


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


async def raw(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """By hand: ``/bad`` tries each bad message and reports the errors; ``/raises-before`` and
    ``/raises-after`` let an exception escape before and after the accept; ``/returns`` returns
    without answering the handshake; ``/given-up`` (:func:`given_up`) cancels waiting
    receives."""
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    path = "/raw/" + scope["path"].rsplit("/", 1)[-1]  # Mount may or may not strip "/raw"
    if path == "/raw/raises-before":
        raise ValueError("the app failed before accepting")
    if path == "/raw/returns":
        return
    errors: list[str] = []

    async def attempt(message: Any) -> None:
        try:
            await send(message)
        except Exception as e:  # what the server raised into the app
            errors.append(f"{type(e).__name__}: {e}")
        else:
            errors.append("accepted")

    if path == "/raw/bad":
        await attempt({"type": "websocket.send", "text": "too early"})
        await attempt({"type": "http.response.start", "status": 200})
        await attempt({"type": "websocket.accept", "subprotocol": "never-offered"})
        await attempt({"type": "websocket.accept", "headers": "not pairs"})
        await attempt(["not", "a", "dict"])
    await send({"type": "websocket.accept"})
    if path == "/raw/given-up":
        await given_up(receive, send)
        return
    if path == "/raw/raises-after":
        raise ValueError("the app failed after accepting")
    if path == "/raw/bad":
        await attempt({"type": "websocket.accept"})
        await attempt({"type": "websocket.send", "text": "a", "bytes": b"b"})
        await attempt({"type": "websocket.send"})
        await attempt({"type": "websocket.send", "text": b"bytes as text"})
        await attempt({"type": "websocket.close", "code": 1006})
        await attempt({"type": "websocket.http.response.start", "status": 403})
        await attempt({"type": "websocket.send", "bytes": None, "text": "fine"})
        await send({"type": "websocket.send", "text": json.dumps(errors)})
        await send({"type": "websocket.close", "code": 4000, "reason": "done"})
        await attempt({"type": "websocket.send", "text": "after close"})
        seen["bad_after_close"] = errors[-1]
        message = await receive()
        disconnected(message["code"], message.get("reason"))


async def given_up(receive: Any, send: Any) -> None:
    """``receive()`` awaited in tasks of their own: two given up while they wait (a timeout
    cancels them), then one in a task that gets the client's next message (the loop's side
    then holds three futures for the call's token, two of them cancelled), then the plain
    await's."""
    for _ in range(2):
        try:
            await asyncio.wait_for(receive(), 0.01)
        except asyncio.TimeoutError:
            pass
        else:
            raise AssertionError("a message came before the client was told to send one")
    await send({"type": "websocket.send", "text": "gave up twice"})
    first = await asyncio.ensure_future(receive())
    await send({"type": "websocket.send", "text": "task: " + first["text"]})
    second = await receive()
    await send({"type": "websocket.send", "text": "await: " + second["text"]})


app = Starlette(routes=[
    WebSocketRoute("/echo", echo),
    WebSocketRoute("/room", broadcast),
    WebSocketRoute("/deny", deny),
    WebSocketRoute("/reject", reject),
    WebSocketRoute("/sink", sink),
    WebSocketRoute("/flood", flood),
    Route("/seen", seen_view),
    Route("/release", release),
    Route("/progress", progress_view),
    Route("/hello", hello),
    Mount("/raw", app=raw),
])
