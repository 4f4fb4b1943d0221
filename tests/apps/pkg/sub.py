"""``pkg.sub.application`` (Twisted's dotted form) and ``pkg.sub:application``."""

from wsgiref.validate import validator


def _app(environ, start_response):
    body = b"from pkg.sub"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


application = validator(_app)
