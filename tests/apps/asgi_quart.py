"""A Quart app for tests/test_asgi_frameworks.py: Flask's API on ASGI, through its own request
and response machinery (JSON, forms, uploads, streaming, cookies, redirects, errors, sync
views in Quart's thread pool, and the lifespan's before/after serving)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import AsyncIterator
from typing import Any

from quart import Quart, Response, abort, jsonify, make_response, redirect, request

app = Quart(__name__)
app.config["SERVING"] = "not started"


@app.before_serving
async def startup() -> None:
    app.config["SERVING"] = "started by lifespan"


@app.route("/")
async def index() -> str:
    return "hello from quart"


@app.route("/serving")
async def serving() -> str:
    return str(app.config["SERVING"])


@app.route("/items/<int:item_id>")
async def item(item_id: int) -> Any:
    return jsonify(item=item_id, q=request.args.getlist("q"), path=request.path,
                   scheme=request.scheme, http_version=request.http_version)


@app.route("/json", methods=["POST"])
async def json_echo() -> Any:
    data = await request.get_json()
    return jsonify(got=data, type=request.content_type)


@app.route("/form", methods=["POST"])
async def form() -> Any:
    fields = await request.form
    files = await request.files
    return jsonify(fields=fields.to_dict(), files={
        name: {"filename": f.filename, "sha256": hashlib.sha256(f.read()).hexdigest()}
        for name, f in files.items()})


@app.route("/body", methods=["POST"])
async def body() -> Any:
    data = await request.get_data()
    return jsonify(length=len(data), sha256=hashlib.sha256(data).hexdigest())


@app.route("/stream")
async def stream() -> Response:
    async def pieces() -> AsyncIterator[bytes]:
        for i in range(20):
            yield f"line {i}\n".encode()
    return Response(pieces(), content_type="text/plain")


@app.route("/cookie")
async def cookie() -> Any:
    response = await make_response(jsonify(seen=dict(request.cookies)))
    response.set_cookie("flavour", "oat", httponly=True)
    return response


@app.route("/redirect")
async def go_elsewhere() -> Any:
    return redirect("/")


@app.route("/teapot")
async def teapot() -> Any:
    abort(418)


@app.route("/crash")
async def crash() -> Any:
    raise RuntimeError("quart view crashed on purpose")


@app.route("/sync")
def sync_view() -> str:
    """A plain def: Quart runs it in its thread pool, off the event loop."""
    return threading.current_thread().name
