"""Server hooks from the config file, called at the points Gunicorn calls them.

The Rust side calls :func:`dispatch` only for hooks that are set, with plain facts (pids,
worker numbers, the environ); this module turns them into the ``server``, ``worker``, ``req``
and ``resp`` objects hooks written for Gunicorn expect, and keeps a hook's exception from
reaching the server: it is logged with its traceback and the server goes on.
"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

TYPE_CHECKING = False  # annotations only: imports cost every server process memory
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Any

__all__ = ["HOOK_NAMES", "Log", "install", "configured", "dispatch"]

#: Every hook, with the arguments Gunicorn passes to it.
HOOK_NAMES: frozenset[str] = frozenset(
    {
        "on_starting",  # (server)
        "on_reload",  # (server)
        "when_ready",  # (server)
        "pre_fork",  # (server, worker)
        "post_fork",  # (server, worker)
        "post_worker_init",  # (worker)
        "worker_int",  # (worker)
        "worker_abort",  # (worker)
        "pre_exec",  # (server)
        "pre_request",  # (worker, req)
        "post_request",  # (worker, req, environ, resp)
        "child_exit",  # (server, worker)
        "worker_exit",  # (server, worker)
        "nworkers_changed",  # (server, new_value, old_value)
        "on_exit",  # (server)
    }
)

_hooks: dict[str, Callable[..., Any]] = {}
_cfg = SimpleNamespace()
_server: Server | None = None
_worker: Worker | None = None


class Log:
    """``server.log`` / ``worker.log``: writes into ferrocorn's error log."""

    def _write(self, level: str, msg: object, args: tuple[object, ...]) -> None:
        from ferrocorn import _ferrocorn

        text = str(msg) % args if args else str(msg)
        _ferrocorn.log(level, text)

    def debug(self, msg: object, *args: object) -> None:
        self._write("debug", msg, args)

    def info(self, msg: object, *args: object) -> None:
        self._write("info", msg, args)

    def warning(self, msg: object, *args: object) -> None:
        self._write("warning", msg, args)

    warn = warning

    def error(self, msg: object, *args: object) -> None:
        self._write("error", msg, args)

    def critical(self, msg: object, *args: object) -> None:
        self._write("critical", msg, args)

    def exception(self, msg: object, *args: object) -> None:
        import traceback

        self._write("error", f"{msg}\n{traceback.format_exc().rstrip()}", args)


class Server:
    """What hooks get as ``server`` (Gunicorn's arbiter): the master's facts."""

    def __init__(self, pid: int, app_uri: str, num_workers: int) -> None:
        self.pid = pid
        self.app_uri = app_uri
        self.num_workers = num_workers
        self.cfg = _cfg
        self.log = Log()

    def __repr__(self) -> str:
        return f"<ferrocorn master pid={self.pid}>"


class Worker:
    """What hooks get as ``worker``: one worker process's facts."""

    def __init__(self, age: int, pid: int = 0, ppid: int = 0) -> None:
        self.age = age
        self.pid = pid
        self.ppid = ppid
        self.alive = True
        self.booted = False
        self.started = time.time()
        self.cfg = _cfg
        self.log = Log()

    def __repr__(self) -> str:
        return f"<ferrocorn worker {self.age} pid={self.pid}>"


class Request:
    """What ``pre_request``/``post_request`` get as ``req``, built from the environ."""

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self.method: str = environ.get("REQUEST_METHOD", "")
        self.uri: str = environ.get("RAW_URI", "")
        self.path: str = environ.get("PATH_INFO", "")
        self.query: str = environ.get("QUERY_STRING", "")
        self.version: tuple[int, int] = _version(environ.get("SERVER_PROTOCOL", "HTTP/1.1"))
        self.scheme: str = environ.get("wsgi.url_scheme", "http")
        self.remote_addr: str = environ.get("REMOTE_ADDR", "")
        self.headers: list[tuple[str, str]] = [
            (k[5:].replace("_", "-"), v) for k, v in environ.items() if k.startswith("HTTP_")
        ]
        for key, name in (("CONTENT_TYPE", "CONTENT-TYPE"), ("CONTENT_LENGTH", "CONTENT-LENGTH")):
            if environ.get(key):
                self.headers.append((name, environ[key]))


class Response:
    """What ``post_request`` gets as ``resp``."""

    def __init__(self, status: str, headers: Iterable[tuple[str, str]], sent: int) -> None:
        self.status = status
        self.status_code = int(status.split(" ", 1)[0]) if status[:3].isdigit() else 0
        self.headers = list(headers)
        self.sent = sent
        self.response_length = sent


def _version(protocol: str) -> tuple[int, int]:
    try:
        major, minor = protocol.split("/", 1)[1].split(".", 1)
        return int(major), int(minor)
    except (IndexError, ValueError):
        return (1, 1)


def install(hooks: Mapping[str, Callable[..., Any]], settings: Mapping[str, object]) -> None:
    """Make ``hooks`` the ones dispatched, with ``settings`` as ``server.cfg``/``worker.cfg``."""
    _hooks.clear()
    _hooks.update(hooks)
    _cfg.__dict__.clear()
    _cfg.__dict__.update(settings)


def configured() -> list[str]:
    """The names of the hooks that are set."""
    return sorted(_hooks)


def _report(name: str, error: BaseException) -> None:
    import traceback

    from ferrocorn import _ferrocorn

    # The three-argument form: CPython 3.9 has no other.
    detail = "".join(traceback.format_exception(type(error), error, error.__traceback__)).rstrip()
    _ferrocorn.log("error", f"Exception in {name} hook:\n{detail}")


def _call(name: str, *args: object) -> None:
    hook = _hooks.get(name)
    if hook is None:
        return
    try:
        hook(*args)
    except Exception as e:  # noqa: BLE001 - a failing hook must never take the server down
        _report(name, e)


def dispatch(name: str, facts: Mapping[str, Any]) -> None:
    """Call hook ``name``; ``facts`` are what the Rust side knows at that point."""
    global _server, _worker
    if name not in _hooks:
        return
    if _server is None or "num_workers" in facts:
        _server = Server(
            facts.get("master_pid", os.getpid()), facts.get("app", ""), facts.get("num_workers", 0)
        )
    server = _server
    worker_id = facts.get("worker_id")
    if worker_id is not None:
        if _worker is None or _worker.age != worker_id:
            _worker = Worker(worker_id, facts.get("worker_pid", 0), server.pid)
        if "worker_pid" in facts:
            _worker.pid = facts["worker_pid"]
    worker = _worker
    if name in ("on_starting", "on_reload", "when_ready", "pre_exec", "on_exit"):
        _call(name, server)
    elif name in ("pre_fork", "post_fork", "child_exit", "worker_exit"):
        _call(name, server, worker)
    elif name in ("post_worker_init", "worker_int", "worker_abort"):
        _call(name, worker)
    elif name == "nworkers_changed":
        _call(name, server, facts.get("new", 0), facts.get("old", 0))


def pre_request(worker_id: int, environ: Mapping[str, Any]) -> Request:
    """Run ``pre_request``; the returned request is handed to :func:`post_request`."""
    req = Request(environ)
    _call("pre_request", _current_worker(worker_id), req)
    return req


def post_request(
    worker_id: int,
    req: Request,
    environ: Mapping[str, Any],
    status: str,
    headers: list[tuple[str, str]],
    sent: int,
) -> None:
    _call("post_request", _current_worker(worker_id), req, environ, Response(status, headers, sent))


class _Tracked:
    """The app's iterable, counting what is sent; ``post_request`` runs when it is closed."""

    def __init__(self, result: Iterable[bytes], finish: Callable[[int], None]) -> None:
        self._result = result
        self._finish = finish
        self._sent = 0

    def __iter__(self) -> Any:
        for chunk in self._result:
            self._sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._finish(self._sent)


def wrap_app(app: Callable[..., Any], worker_id: int) -> Callable[..., Any]:
    """The app with ``pre_request`` and ``post_request`` around each call."""

    def with_hooks(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        req = pre_request(worker_id, environ)
        seen: dict[str, Any] = {"status": "", "headers": []}

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            seen["status"], seen["headers"] = status, headers
            return start_response(status, headers, exc_info) if exc_info else start_response(
                status, headers
            )

        def finish(sent: int) -> None:
            post_request(worker_id, req, environ, seen["status"], seen["headers"], sent)

        try:
            result = app(environ, start)
        except BaseException:
            finish(0)
            raise
        return _Tracked(result, finish)

    return with_hooks


def _current_worker(worker_id: int) -> Worker:
    global _worker
    if _worker is None or _worker.age != worker_id:
        _worker = Worker(worker_id, os.getpid(), os.getppid())
    return _worker


def environ_of(scope: Mapping[str, Any]) -> dict[str, Any]:
    """A WSGI-shaped environ for an ASGI ``http`` scope: what :class:`Request` and a
    ``post_request`` hook written for Gunicorn read."""
    query = scope.get("query_string", b"").decode("latin-1")
    raw_path = scope.get("raw_path") or scope.get("path", "").encode("utf-8")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope.get("method", ""),
        "RAW_URI": raw_path.decode("latin-1") + (f"?{query}" if query else ""),
        "PATH_INFO": scope.get("path", ""),
        "SCRIPT_NAME": scope.get("root_path", ""),
        "QUERY_STRING": query,
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "REMOTE_ADDR": (scope.get("client") or ("", 0))[0],
    }
    for name, value in scope.get("headers", ()):
        key = name.decode("latin-1").upper().replace("-", "_")
        key = key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"
        text = value.decode("latin-1")
        environ[key] = f"{environ[key]},{text}" if key in environ else text
    return environ


def wrap_asgi_app(app: Callable[..., Any], worker_id: int) -> Callable[..., Any]:
    """The ASGI app with ``pre_request`` and ``post_request`` around each HTTP request, as
    Gunicorn's ASGI worker runs them: ``req`` and the environ are built from the scope, ``resp``
    from the ``http.response.*`` messages the app sent. Lifespan and WebSocket scopes pass."""

    async def with_hooks(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await app(scope, receive, send)
            return
        environ = environ_of(scope)
        req = pre_request(worker_id, environ)
        seen: dict[str, Any] = {"status": "", "headers": [], "sent": 0}

        async def tracked(message: dict[str, Any]) -> None:
            kind = message.get("type")
            if kind == "http.response.start":
                code = message.get("status", 0)
                seen["status"] = f"{code} {_reason(code)}".rstrip()
                seen["headers"] = [(bytes(k).decode("latin-1"), bytes(v).decode("latin-1"))
                                   for k, v in message.get("headers", ())]
            elif kind == "http.response.body":
                seen["sent"] += len(message.get("body", b""))
            await send(message)

        try:
            await app(scope, receive, tracked)
        finally:
            post_request(worker_id, req, environ, seen["status"], seen["headers"], seen["sent"])

    return with_hooks


def _reason(code: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return ""

