"""Python-side pieces of ferrocorn's WSGI support."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import IO, Any

__all__ = ["FileWrapper"]


class FileWrapper:
    """``environ['wsgi.file_wrapper']`` (PEP 3333, "Optional Platform-Specific File Handling").

    An application returns ``FileWrapper(open(path, "rb"))`` as its response body. When the
    wrapped object's ``fileno()`` is a regular file, the server sends it with ``sendfile(2)``
    from the file's current position to its end, without this object ever being iterated.
    Otherwise the server iterates it like any other body: blocks of ``blksize`` bytes read
    until ``read()`` returns nothing. Either way the server calls :meth:`close` at the end.
    """

    filelike: IO[bytes] | Any
    blksize: int

    def __init__(self, filelike: IO[bytes] | Any, blksize: int = 8192) -> None:
        if blksize <= 0:
            raise ValueError(f"blksize must be a positive number of bytes, not {blksize!r}")
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        data = self.filelike.read(self.blksize)
        if not data:
            raise StopIteration
        return data

    def close(self) -> None:
        """Closes the wrapped object, if it can be closed (PEP 3333 asks for exactly this)."""
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.filelike!r}, blksize={self.blksize})"
