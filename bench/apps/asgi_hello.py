"""The hello app as ASGI: 13 bytes of plain text, the server's own overhead."""

BODY = b"Hello, World!"
START = {"type": "http.response.start", "status": 200,
         "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]}
DONE = {"type": "http.response.body", "body": BODY}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return  # no lifespan
    await send(START)
    await send(DONE)
