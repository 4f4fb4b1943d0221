"""A plain ASGI WebSocket echo (bench/run.py's "ws echo" and "ws idle" rows): every message
goes back as it came, text as text, bytes as bytes. Plain HTTP gets a hello (the readiness
probe)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

HELLO = [{"type": "http.response.start", "status": 200,
          "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]},
         {"type": "http.response.body", "body": b"Hello, World!"}]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        for message in HELLO:
            await send(message)
        return
    if scope["type"] != "websocket":
        return  # no lifespan
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return  # websocket.disconnect
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
