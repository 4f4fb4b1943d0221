"""ferrocorn: a WSGI HTTP server for Python whose HTTP core is written in Rust.

The server itself lives in the native extension ``ferrocorn._ferrocorn`` and is started with
the ``ferrocorn`` command (or ``python -m ferrocorn``). This package only holds the thin
Python side: the command-line entry point, application loading and ``wsgi.file_wrapper``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__: str = version("ferrocorn")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
