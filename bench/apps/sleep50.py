"""An app that blocks for 50 ms (a database call, say): concurrency is what counts."""

import time


def app(environ, start_response):
    time.sleep(0.05)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
