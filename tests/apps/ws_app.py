"""WebSockets the way Gunicorn's threaded worker serves them (issue 29): a flask-sock echo, a
Flask-SocketIO chat in threading mode, a route that sends more than a stalled client takes,
and a hand-written app on `environ["gunicorn.socket"]` that never reads what it is sent."""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, jsonify
from flask_sock import Sock
from flask_socketio import SocketIO, emit
from simple_websocket import ConnectionClosed

app = Flask(__name__)
sock = Sock(app)
socketio = SocketIO(app, async_mode="threading")

#: How far the /flood route got, read by the tests through /progress.
progress: dict[str, int] = {"sent": 0, "done": 0}
#: Set by /release: the raw sink's app returns.
release = threading.Event()


@app.get("/hello")
def hello() -> str:
    return "hello"


@app.get("/progress")
def get_progress() -> Any:
    return jsonify(progress)


@app.get("/release")
def do_release() -> str:
    release.set()
    return "released"


@sock.route("/echo")
def echo(ws: Any) -> None:
    """Echoes every message; `close:CODE` closes with that code."""
    while True:
        message = ws.receive()
        if isinstance(message, str) and message.startswith("close:"):
            ws.close(reason=int(message[6:]), message="as asked")
            return
        ws.send(message)


@sock.route("/flood")
def flood(ws: Any) -> None:
    """Sends `count` binary messages of 64 KiB (each starting with its index), counting them."""
    count = int(ws.receive())
    progress["sent"] = 0
    progress["done"] = 0
    chunk = bytes(64 * 1024 - 8)
    try:
        for i in range(count):
            ws.send(i.to_bytes(8, "big") + chunk)
            progress["sent"] = i + 1
        progress["done"] = 1
        ws.receive()  # the client's word that it has read everything
    except ConnectionClosed:
        pass


@socketio.on("join")
def on_join(name: str) -> None:
    emit("joined", name, broadcast=True)


@socketio.on("say")
def on_say(data: dict[str, str]) -> None:
    emit("said", data, broadcast=True)


def handshake(environ: dict[str, Any]) -> Any:
    """Answers the WebSocket handshake by hand on Gunicorn's socket, which it returns."""
    conn = environ["gunicorn.socket"]
    key = environ["HTTP_SEC_WEBSOCKET_KEY"].encode()
    accept = base64.b64encode(
        hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    return conn


class Finished:
    """Put into the environ: when the server lets the environ go, the app's call is over."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __del__(self) -> None:
        self.event.set()


def late_word(environ: dict[str, Any]) -> None:
    """What simple-websocket does when the client closes: a thread of the app's writes the
    last frame after the app's call has returned. Here the thread waits until the server has
    dropped the environ, then sends the text frame "late" and closes the socket."""
    conn = handshake(environ)
    finished = Finished()
    environ["test.finished"] = finished
    event = finished.event

    def last_word() -> None:
        if event.wait(30):
            conn.sendall(b"\x81\x04late")
        conn.close()

    threading.Thread(target=last_word, daemon=True).start()
    del finished
    raise StopIteration()  # Gunicorn's convention: the app took the socket


def raw_sink(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """A WebSocket handshake written by hand on Gunicorn's socket, then nothing read until
    /release: what the client sends meanwhile must not pile up in the server."""
    if environ["PATH_INFO"] == "/late-word":
        late_word(environ)
    if environ["PATH_INFO"] != "/raw-sink":
        return flask_app(environ, start_response)
    handshake(environ)
    release.wait(30)
    release.clear()
    # Gunicorn's convention for "the app used the socket": the server closes the connection.
    raise StopIteration()


flask_app = app.wsgi_app
app.wsgi_app = raw_sink  # type: ignore[method-assign]
