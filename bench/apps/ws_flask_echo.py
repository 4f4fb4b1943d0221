"""flask-sock's echo (bench/run.py's "flask-sock echo" row), served by a WSGI server's
threads: ferrocorn through `gunicorn.socket` (docs/websockets.md), Gunicorn gthread natively."""

from flask import Flask
from flask_sock import Sock

app = Flask(__name__)
sock = Sock(app)


@app.route("/")
def hello() -> str:
    return "Hello, World!"


@sock.route("/echo")
def echo(ws) -> None:  # type: ignore[no-untyped-def]
    while True:
        ws.send(ws.receive())
