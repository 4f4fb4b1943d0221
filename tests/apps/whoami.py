"""Which user and group the worker runs as: ``uid gid groups`` as text.

It imports only what every interpreter has imported by the time it runs a script (``os``): the
--user tests serve it with an interpreter whose standard library the worker cannot read once it
has switched users."""

from __future__ import annotations

import os


def app(environ, start_response):
    groups = ",".join(str(g) for g in sorted(os.getgroups()))
    body = f"{os.getuid()} {os.getgid()} {groups} {os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


async def asgi(scope, receive, send):
    """The same, as an ASGI app (served with -k asgi: its event loop too must boot as the
    user)."""
    if scope["type"] != "http":
        raise RuntimeError("no lifespan here")
    groups = ",".join(str(g) for g in sorted(os.getgroups()))
    body = f"{os.getuid()} {os.getgid()} {groups} {os.getpid()}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
