"""A FastAPI WebSocket echo for tests/test_websocket_asgi.py: text and bytes echoed, the
client's last offered subprotocol of those it knows accepted, ``close:CODE:REASON`` closes."""

from __future__ import annotations

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

app = FastAPI()
KNOWN = ("v1", "v2")


@app.websocket("/echo")
async def echo(ws: WebSocket) -> None:
    chosen = [p for p in ws.scope["subprotocols"] if p in KNOWN]
    await ws.accept(subprotocol=chosen[-1] if chosen else None,
                    headers=[(b"x-accepted-by", b"fastapi")])
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text, data = message.get("text"), message.get("bytes")
            if text is not None and text.startswith("close:"):
                _, code, reason = text.split(":", 2)
                await ws.close(int(code), reason)
                return
            if text is not None:
                await ws.send_text(text)
            else:
                await ws.send_bytes(data or b"")
    except WebSocketDisconnect:
        return


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "fastapi"}
