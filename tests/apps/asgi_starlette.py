"""A Starlette app for the differential test against Uvicorn (tests/test_asgi_differential.py)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route


async def home(request: Request) -> Response:
    return JSONResponse({"hello": "world", "method": request.method})


async def item(request: Request) -> Response:
    return JSONResponse({"id": int(request.path_params["item_id"]),
                         "q": request.query_params.get("q"),
                         "all": request.query_params.getlist("t")})


async def echo_json(request: Request) -> Response:
    return JSONResponse({"got": await request.json()}, status_code=201)


async def form(request: Request) -> Response:
    async with request.form() as data:
        out = {}
        for key, value in data.multi_items():
            if isinstance(value, str):
                out[key] = value
            else:
                content = await value.read()
                out[key] = {"filename": value.filename, "size": len(content),
                            "type": value.content_type, "head": content[:16].decode("latin-1")}
    return JSONResponse(out)


async def upload_stream(request: Request) -> Response:
    total, pieces = 0, 0
    async for chunk in request.stream():
        total += len(chunk)
        pieces += 1 if chunk else 0
    return PlainTextResponse(f"{total}")


async def stream(request: Request) -> Response:
    async def gen():
        for i in range(20):
            yield f"line {i}\n".encode() * 100

    return StreamingResponse(gen(), media_type="text/plain", headers={"x-stream": "yes"})


async def cookie(request: Request) -> Response:
    resp = PlainTextResponse(f"cookies: {sorted(request.cookies.items())}")
    resp.set_cookie("session", "abc123", httponly=True, max_age=3600)
    resp.set_cookie("theme", "dark", path="/")
    resp.delete_cookie("old")
    return resp


async def redirect(request: Request) -> Response:
    return RedirectResponse("/items/1?q=redirected", status_code=302)


async def teapot(request: Request) -> Response:
    raise HTTPException(status_code=418, detail="I'm a teapot")


async def crash(request: Request) -> Response:
    raise ValueError("differential crash")


def sync_route(request: Request) -> Response:
    return PlainTextResponse("sync " + request.url.path)


app = Starlette(routes=[
    Route("/", home),
    Route("/items/{item_id:int}", item),
    Route("/json", echo_json, methods=["POST"]),
    Route("/form", form, methods=["POST"]),
    Route("/upload-stream", upload_stream, methods=["POST", "PUT"]),
    Route("/stream", stream),
    Route("/cookie", cookie),
    Route("/redirect", redirect),
    Route("/teapot", teapot),
    Route("/crash", crash),
    Route("/sync", sync_route),
])
