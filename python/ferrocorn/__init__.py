"""ferrocorn: a WSGI HTTP server for Python whose HTTP core is written in Rust.

The server itself lives in the native extension ``ferrocorn._ferrocorn`` and is started with
the ``ferrocorn`` command (or ``python -m ferrocorn``), or from Python with :func:`serve` and
:class:`WSGIServer`. This package only holds the thin Python side: the entry points, config
files and server hooks, application loading and ``wsgi.file_wrapper``.
"""

from __future__ import annotations

# The extension carries the version (maturin takes the package's from Cargo.toml), which spares
# every server process importlib.metadata: about 5 MiB of RSS each, for one string.
try:
    from ferrocorn._ferrocorn import __version__
except ImportError:  # running from a source tree whose extension was never built
    __version__ = "0.0.0"

from ferrocorn._api import WSGIServer, serve

__all__ = ["WSGIServer", "__version__", "serve"]
