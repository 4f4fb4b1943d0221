"""Serves `module:callable` from bench/apps with bjoern (one process, as bjoern runs):
``python bjoern_serve.py APP PORT``."""

from __future__ import annotations

import importlib
import os
import sys

import bjoern


def main() -> None:
    spec, port = sys.argv[1], int(sys.argv[2])
    sys.path.insert(0, os.getcwd())  # the apps directory, where the runner starts us
    module, _, name = spec.partition(":")
    app = getattr(importlib.import_module(module), name or "application")
    bjoern.run(app, "127.0.0.1", port)


if __name__ == "__main__":
    main()
