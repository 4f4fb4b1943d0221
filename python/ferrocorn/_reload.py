"""``--reload``: which files to watch (the watching itself is done in Rust, with inotify)."""

from __future__ import annotations

import sys


def module_files() -> list[str]:
    """The source file of every loaded module that has one."""
    files: set[str] = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not isinstance(path, str):
            continue
        if path.endswith((".pyc", ".pyo")):
            path = path[:-1]
        files.add(path)
    return sorted(files)
