"""The ASGI side of a worker: one asyncio event loop on a thread of its own.

The Rust core queues each request as an exchange; :class:`LoopWorker`'s drain takes them in
batches from the native runtime (``AsgiRuntime.take``) and runs each as a task calling the app.
The runtime wakes the loop through an eventfd watched with ``loop.add_reader``, and only when
the loop said it sleeps: a drain that found work schedules the next one with ``call_soon``, so
a busy loop looks again at every turn without being written to. The app's ``receive`` and
``send`` are the native ``AsgiCall``'s own: they never block the loop, and answer at once with
an awaitable that is already done, or with one that waits until the call's token comes back
through the same drain (a body piece arrived, the client read enough of the response, or the
connection ended): for ``receive`` a native awaitable over :meth:`LoopWorker._wait`'s future,
for ``send`` the coroutine :meth:`LoopWorker.room_later`. See docs/asgi.md and docs/design.md.
"""

from __future__ import annotations

import asyncio
import sys
import threading

from ferrocorn import _ferrocorn
from ferrocorn._ferrocorn import ClientDisconnected

TYPE_CHECKING = False  # annotations only: imports cost every server process memory
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping
    from typing import Any

    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]
    ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

__all__ = ["ClientDisconnected", "LoopWorker"]


#: Python 3.12+ starts a request's task eagerly: its first step runs in the drain, so a
#: request whose app never has to wait (it answers at once) costs no scheduling at all.
_EAGER = sys.version_info >= (3, 12)
_Task = asyncio.Task


def _formatted(exc: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()


class _Lifespan:
    """ASGI's lifespan protocol: startup before the worker accepts, shutdown when it stops."""

    def __init__(self, app: ASGIApp, required: bool, state: dict[str, Any]) -> None:
        self.app = app
        self.required = required
        self.state = state
        self.supported = True

    async def startup(self) -> str | None:
        """Runs the startup; returns None, or the message to stop the server with."""
        loop = asyncio.get_running_loop()
        self._events: asyncio.Queue[Message] = asyncio.Queue()
        self._started: asyncio.Future[str | None] = loop.create_future()
        self._stopped: asyncio.Future[None] = loop.create_future()
        self._events.put_nowait({"type": "lifespan.startup"})
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        self._task = loop.create_task(self._run(scope))
        return await self._started

    async def _run(self, scope: MutableMapping[str, Any]) -> None:
        try:
            await self.app(scope, self._events.get, self._send)
        except BaseException as exc:  # whatever the app raised, the worker goes on
            if not self._started.done():
                if self.required:
                    _ferrocorn.log("error", f"ASGI lifespan startup raised:\n{_formatted(exc)}")
                    self._started.set_result(
                        f"ASGI lifespan startup raised {type(exc).__name__}: {exc}"
                    )
                else:
                    self.supported = False
                    _ferrocorn.log("info", "ASGI 'lifespan' protocol appears unsupported.")
                    _ferrocorn.log("debug", _formatted(exc))
                    self._started.set_result(None)
            else:
                _ferrocorn.log("error", f"Exception in ASGI lifespan:\n{_formatted(exc)}")
        else:
            if not self._started.done():
                if self.required:
                    self._started.set_result(
                        "the app's lifespan returned before answering lifespan.startup"
                    )
                else:
                    self.supported = False
                    self._started.set_result(None)
        finally:
            if not self._stopped.done():
                self._stopped.set_result(None)

    async def _send(self, message: Message) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "lifespan.startup.complete":
            if not self._started.done():
                self._started.set_result(None)
        elif kind == "lifespan.startup.failed":
            if not self._started.done():
                text = message.get("message") or "no message given"
                self._started.set_result(f"ASGI lifespan startup failed: {text}")
        elif kind == "lifespan.shutdown.complete":
            if not self._stopped.done():
                self._stopped.set_result(None)
        elif kind == "lifespan.shutdown.failed":
            _ferrocorn.log(
                "error", f"ASGI lifespan shutdown failed: {message.get('message') or ''}"
            )
            if not self._stopped.done():
                self._stopped.set_result(None)
        else:
            raise RuntimeError(f"unexpected ASGI lifespan message type {kind!r}")

    async def shutdown(self) -> None:
        if not self.supported or self._task.done():
            return
        self._events.put_nowait({"type": "lifespan.shutdown"})
        await self._stopped


class LoopWorker:
    """The worker's event loop thread (made and driven by ``crates/ferrocorn-py/src/asgi``)."""

    def __init__(
        self, app: ASGIApp, runtime: Any, loop_kind: str, lifespan: str, tick: float
    ) -> None:
        self._app = app
        self._rt = runtime
        self._loop_kind = loop_kind
        self._lifespan_mode = lifespan
        self._tick_period = tick
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The futures of the calls waiting for their token, by token: one future, or a list
        #: when more than one waits (an idle WebSocket's ``receive`` holds no list).
        self._waiters: dict[int, asyncio.Future[None] | list[asyncio.Future[None]]] = {}
        self._state: dict[str, Any] = {}
        self._lifespan: _Lifespan | None = None
        self._ready = threading.Event()
        self._startup_error: str | None = None
        self._boot_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        runtime.set_waits(self)

    # The calling (main) thread.

    def start(self) -> str | None:
        """Starts the loop and runs the lifespan's startup; the failure's message, or None."""
        factory = self._loop_factory()
        self._thread = threading.Thread(
            target=self._main, args=(factory,), name="ferrocorn-asgi-loop", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._boot_error is not None:
            raise self._boot_error
        return self._startup_error

    def stop(self, timeout: float) -> None:
        """The lifespan's shutdown (at most ``timeout`` seconds), then the loop stops."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        done = threading.Event()

        async def shutdown() -> None:
            try:
                if self._lifespan is not None:
                    await self._lifespan.shutdown()
            finally:
                done.set()

        # Connections closed as the worker stopped left tokens: their requests hear of it.
        loop.call_soon_threadsafe(self._drain)
        loop.call_soon_threadsafe(lambda: loop.create_task(shutdown()))
        if not done.wait(timeout):
            _ferrocorn.log("warning", "ASGI lifespan shutdown did not finish in time")
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=1.0)

    def _loop_factory(self) -> Callable[[], asyncio.AbstractEventLoop]:
        if self._loop_kind in ("auto", "uvloop"):
            try:
                import uvloop
            except ImportError:
                if self._loop_kind == "uvloop":
                    raise RuntimeError(
                        "--loop uvloop: uvloop is not installed (pip install uvloop)"
                    ) from None
            else:
                return uvloop.new_event_loop  # type: ignore[no-any-return]
        return asyncio.new_event_loop

    # The loop thread.

    def _main(self, factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
        try:
            loop = factory()
            asyncio.set_event_loop(loop)
            self._loop = loop
            loop.add_reader(self._rt.fd, self._on_ring)
            self._tick()
            if self._lifespan_mode != "off":
                self._lifespan = _Lifespan(self._app, self._lifespan_mode == "on", self._state)
                self._startup_error = loop.run_until_complete(self._lifespan.startup())
        except BaseException as exc:  # reported by start()
            self._boot_error = exc
        self._ready.set()
        if self._boot_error is not None or self._startup_error is not None:
            return
        loop.call_soon(self._drain)
        loop.run_forever()

    def _tick(self) -> None:
        # The hung-loop check counts from the last tick (see `Jobs::alive`).
        self._rt.tick()
        assert self._loop is not None
        self._loop.call_later(self._tick_period, self._tick)

    def _on_ring(self) -> None:
        self._rt.clear_ring()
        self._drain()

    def _drain(self) -> None:
        calls, tokens, again = self._rt.take()
        loop = self._loop
        assert loop is not None
        # The requests under way hear their news before the new ones start (fairness: a
        # batch of new requests does not run ahead of the ones waiting for a body piece or
        # for room).
        # Most tokens are exchanges' ends that nothing waits for: with no call waiting at
        # all, there is nobody to wake.
        if tokens and self._waiters:
            for token in tokens:
                self._wake(token)
        if calls:
            # Each request a task of its own, made here without a function call per request
            # (see docs/design.md): on 3.11, `Task(...)` is what the loop's `create_task`
            # makes when no task factory is set, without its wrapper's cost; a task factory
            # the app set is used through `create_task`.
            serve = self._serve
            if _EAGER:
                for call in calls:
                    _Task(serve(call), loop=loop, eager_start=True)  # type: ignore[call-arg]
            elif loop.get_task_factory() is None:
                for call in calls:
                    _Task(serve(call), loop=loop)
            else:
                for call in calls:
                    loop.create_task(serve(call))
        if again:
            loop.call_soon(self._drain)

    def _wake(self, token: int) -> None:
        waiters = self._waiters.pop(token, None)
        if waiters is None:
            return
        if type(waiters) is list:
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
        elif not waiters.done():  # type: ignore[union-attr]
            waiters.set_result(None)  # type: ignore[union-attr]

    # Called by an AsgiCall whose receive() (the native AsgiReceiving) or send() must wait for
    # its token.

    def _wait(self, token: int) -> asyncio.Future[None]:
        """A future the drain resolves (with None) when the call of ``token`` has news."""
        assert self._loop is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        waiters = self._waiters.get(token)
        if waiters is None:
            self._waiters[token] = fut
        elif type(waiters) is list:
            waiters.append(fut)
        else:
            self._waiters[token] = [waiters, fut]  # type: ignore[list-item]
        return fut

    async def room_later(self, call: Any) -> None:
        """Returns once the client has taken enough of the response (or is gone)."""
        token = call.token
        while not call.has_room():
            await self._wait(token)

    async def _serve(self, call: Any) -> None:
        try:
            await self._app(call.scope(self._rt, self._state), call.receive, call.send)
        except ClientDisconnected:
            call.finish(None)
        except BaseException as exc:  # logged with its traceback; the worker serves on
            call.finish(_formatted(exc))
        else:
            call.finish(None)
        finally:
            # Whatever the app left waiting (a task of its own) looks again: the call is over.
            # Nothing waits on most requests' ends (no call waits at all), then nothing to do.
            if self._waiters:
                self._wake(call.token)
