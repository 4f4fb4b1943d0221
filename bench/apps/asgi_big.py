"""A 1 MiB response streamed by an ASGI app in 16 pieces of 64 KiB."""

PIECE = b"x" * 65536
START = {"type": "http.response.start", "status": 200,
         "headers": [(b"content-type", b"application/octet-stream"),
                     (b"content-length", str(16 * 65536).encode())]}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send(START)
    for i in range(16):
        await send({"type": "http.response.body", "body": PIECE, "more_body": i < 15})
