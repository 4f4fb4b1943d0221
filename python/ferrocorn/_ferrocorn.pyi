"""Type stubs for the native extension built from ``crates/ferrocorn-py``."""

from collections.abc import Callable, Sequence
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
