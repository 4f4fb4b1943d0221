"""Starting ferrocorn from Python: :func:`serve` (WSGI or ASGI apps) and :class:`WSGIServer`.

For programs that start their server themselves, as Tornado's, gevent's and Waitress's users
do. The server is the same one the ``ferrocorn`` command runs, with the same settings (named as
in a config file: ``workers``, ``threads``, ``timeout``, ``forwarded_allow_ips``, ...). The app
is the object you pass; it is inherited by the worker processes when they are forked.
"""

from __future__ import annotations

import os

from ferrocorn._config import normalise

TYPE_CHECKING = False  # annotations only: imports cost every server process memory
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping
    from typing import Any, TypeAlias

    WSGIApp: TypeAlias = Callable[..., Iterable[bytes]]
    ASGIApp: TypeAlias = Callable[..., Awaitable[None]]
    Address: TypeAlias = str | tuple[str, int] | Iterable[str | tuple[str, int]]

__all__ = ["WSGIServer", "serve"]


def _bind_value(bind: Address) -> list[str]:
    if isinstance(bind, str):
        return [bind]
    if isinstance(bind, tuple) and len(bind) == 2 and isinstance(bind[1], int):
        host, port = bind
        host = host or "0.0.0.0"
        return [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    out: list[str] = []
    for item in bind:  # type: ignore[union-attr]
        out.extend(_bind_value(item))
    return out


def serve(
    app: WSGIApp | ASGIApp,
    bind: Address = "127.0.0.1:8000",
    *,
    static: Mapping[str, str | os.PathLike[str]] | None = None,
    **settings: Any,
) -> int:
    """Serve ``app`` until the server is stopped (Ctrl-C, SIGTERM); return the exit code.

    ``app`` is a WSGI app, or an ASGI 3 app (an ``async def`` callable, or an object whose
    ``__call__`` is one; ``interface="asgi"`` says so outright), served on one event loop per
    worker with ``loop`` and ``lifespan`` as settings.

    ``bind`` is an address as on the command line (``"127.0.0.1:5000"``, ``"unix:/run/app.sock"``),
    a ``(host, port)`` pair, or a list of them. Every other keyword is a setting, named as in a
    config file: ``serve(app, workers=2, threads=8, timeout=60)``. ``static`` maps URL prefixes
    to directories served by the server itself (``static={"/static": "static"}``, as
    ``--static-map``). Must be called from the main thread (the server takes over its signals
    while it runs).
    """
    from ferrocorn import _ferrocorn

    values: list[tuple[str, bool | str | list[str]]] = [("bind", _bind_value(bind))]
    if static:
        # static={"/static": "static"}: URL prefix to directory, as --static-map.
        values.append(("static_map", [f"{p}={os.fspath(d)}" for p, d in static.items()]))
    for name, value in settings.items():
        if value is not None:
            values.append((name, normalise(name, value)))
    return _ferrocorn.main(["ferrocorn"], app, values)


class WSGIServer:
    """``WSGIServer(("", 5000), app).serve_forever()``, as gevent's and Waitress's servers."""

    def __init__(self, listener: Address, application: WSGIApp, **settings: Any) -> None:
        self.address = listener
        self.application = application
        self.settings = settings
        self._serving_pid: int | None = None

    def serve_forever(self) -> int:
        """Serve until stopped; returns the exit code (0 after Ctrl-C or :meth:`stop`)."""
        self._serving_pid = os.getpid()
        try:
            return serve(self.application, self.address, **self.settings)
        finally:
            self._serving_pid = None

    def stop(self) -> None:
        """Stop gracefully (from another thread of the serving process, or a signal handler)."""
        if self._serving_pid == os.getpid():
            import signal

            os.kill(self._serving_pid, signal.SIGTERM)
