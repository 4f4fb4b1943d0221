"""Type stubs for the native extension built from ``crates/ferrocorn-py``."""

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

__version__: str

def main(
    argv: list[str],
    app: Callable[..., Any] | None = None,
    settings: Sequence[tuple[str, bool | str | list[str]]] | None = None,
) -> int:
    """Parse ``argv`` (program name first), serve until stopped, and return the exit code.

    With ``app``, that object is served instead of an ``APP`` spec; ``settings`` then take the
    config file's place.
    """

def log(level: str, message: str) -> None:
    """Write ``message`` into the error log at ``level`` (debug, info, warning, error)."""

class ClientDisconnected(OSError):
    """Raised by an ASGI app's ``send()`` once its client has gone (HTTP spec 2.4)."""

class AsgiRuntime:
    """The worker's event loop as the native core sees it (driven by ``ferrocorn._asgi``)."""

    @property
    def fd(self) -> int: ...
    def clear_ring(self) -> None: ...
    def set_waits(self, waits: Any) -> None:
        """The loop's side: its ``receive_later(call)`` and ``room_later(call)`` wait."""
    def take(self) -> tuple[list[AsgiCall | AsgiWebSocket], list[int], bool]: ...
    def tick(self) -> None: ...

class AsgiDone:
    """What ``AsgiCall.receive()``/``send()`` return when they need not wait: awaiting it
    gives its value at once (it also has a coroutine's ``send``, ``throw`` and ``close``)."""

    def __await__(self) -> AsgiDone: ...
    def __iter__(self) -> AsgiDone: ...
    def __next__(self) -> None: ...
    def send(self, value: Any) -> None: ...
    def throw(self, exc: Any, value: Any = None, traceback: Any = None) -> None: ...
    def close(self) -> None: ...

class AsgiCall:
    """One request on the event loop."""

    @property
    def token(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def scope(self, shared: AsgiRuntime, state: dict[str, Any] | None = None) -> dict[str, Any]: ...
    def receive(self) -> Awaitable[dict[str, Any]]:
        """The app's ``receive``: an ``AsgiDone``, or the loop's ``receive_later(self)``."""
    def poll_receive(self) -> dict[str, Any] | None: ...
    def send(self, message: dict[str, Any]) -> Awaitable[None]:
        """The app's ``send``: an ``AsgiDone``, or the loop's ``room_later(self)``."""
    def has_room(self) -> bool: ...
    def finish(self, error: str | None = None) -> None: ...

class AsgiWebSocket:
    """One WebSocket on the event loop (the websocket scope); driven as an ``AsgiCall``."""

    @property
    def token(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def scope(self, shared: AsgiRuntime, state: dict[str, Any] | None = None) -> dict[str, Any]: ...
    def receive(self) -> Awaitable[dict[str, Any]]:
        """The app's ``receive``: an ``AsgiDone``, or the loop's ``receive_later(self)``."""
    def poll_receive(self) -> dict[str, Any] | None: ...
    def send(self, message: dict[str, Any]) -> Awaitable[None]:
        """The app's ``send``: an ``AsgiDone``, or the loop's ``room_later(self)``."""
    def has_room(self) -> bool: ...
    def finish(self, error: str | None = None) -> None: ...
