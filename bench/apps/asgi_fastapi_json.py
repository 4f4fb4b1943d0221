"""A FastAPI endpoint returning a small JSON document (issue 28's "FastAPI JSON" row)."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def root() -> dict[str, object]:
    return {"message": "Hello, World!", "items": [1, 2, 3], "ok": True}
