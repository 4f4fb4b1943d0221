"""A FastAPI app for the differential test against Uvicorn (tests/test_asgi_differential.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi.responses import PlainTextResponse, RedirectResponse, StreamingResponse
from pydantic import BaseModel
from starlette.responses import Response

app = FastAPI()


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


@app.get("/")
async def root() -> dict[str, str]:
    return {"message": "hello"}


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None) -> dict[str, object]:
    return {"item_id": item_id, "q": q}


@app.post("/items")
async def create_item(item: Item) -> dict[str, object]:
    return {"created": item.model_dump(), "total": item.price * 2}


@app.post("/upload")
async def upload(file: Annotated[UploadFile, File()], note: str = Form(...)) -> dict[str, object]:
    content = await file.read()
    return {"filename": file.filename, "size": len(content), "note": note,
            "type": file.content_type}


@app.post("/login")
async def login(username: str = Form(...), password: str = Form(...)) -> dict[str, object]:
    return {"user": username, "length": len(password)}


@app.get("/stream")
async def stream() -> StreamingResponse:
    async def gen():
        for i in range(10):
            yield (f"chunk {i}," * 50).encode()

    return StreamingResponse(gen(), media_type="text/csv")


@app.get("/cookies")
async def cookies(response: Response) -> dict[str, bool]:
    response.set_cookie("token", "t0k3n", secure=True, samesite="strict")
    response.set_cookie("pref", "1")
    return {"set": True}


@app.get("/go")
async def go() -> RedirectResponse:
    return RedirectResponse("/items/7?q=went", status_code=307)


@app.get("/missing")
async def missing() -> None:
    raise HTTPException(status_code=404, detail="Item not found", headers={"x-error": "yes"})


@app.get("/boom")
async def boom() -> None:
    raise RuntimeError("differential boom")


@app.get("/sync")
def sync_endpoint() -> PlainTextResponse:
    return PlainTextResponse("from a thread")
