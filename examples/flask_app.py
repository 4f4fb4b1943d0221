"""A small Flask application to try ferrocorn with.

    ferrocorn --chdir examples flask_app:app        # or simply: make run

Then open http://127.0.0.1:8000/, http://127.0.0.1:8000/json, or send a body to /echo:

    curl --data-binary 'hello' http://127.0.0.1:8000/echo
"""

from __future__ import annotations

import os
import threading

from flask import Flask, Response, jsonify, request

app = Flask(__name__)


@app.get("/")
def index() -> str:
    return "Hello from ferrocorn!"


@app.get("/json")
def environ_facts() -> Response:
    """A few facts from the WSGI environ ferrocorn built for this request."""
    environ = request.environ
    return jsonify(
        server_software=environ.get("SERVER_SOFTWARE"),
        server_protocol=environ.get("SERVER_PROTOCOL"),
        method=environ.get("REQUEST_METHOD"),
        path=environ.get("PATH_INFO"),
        query=environ.get("QUERY_STRING"),
        raw_uri=environ.get("RAW_URI"),
        remote_addr=environ.get("REMOTE_ADDR"),
        wsgi_version=list(environ["wsgi.version"]),
        url_scheme=environ["wsgi.url_scheme"],
        multithread=environ["wsgi.multithread"],
        multiprocess=environ["wsgi.multiprocess"],
        pid=os.getpid(),
        thread=threading.current_thread().name,
    )


@app.post("/echo")
def echo() -> Response:
    """Sends the request body back, with its content type."""
    return Response(
        request.get_data(),
        content_type=request.content_type or "application/octet-stream",
    )
