"""Executing a Python config file (``-c ferrocorn.conf.py``), as Gunicorn does.

The file is plain Python run in a fresh namespace. Its public variables are settings (named as
in Gunicorn's ``gunicorn.conf.py``); its functions named after server hooks are hooks. The Rust
side maps the settings onto command-line flags and validates them; this module only runs the
file and brings each value into one of three shapes: a bool, a string or a list of strings.
"""

from __future__ import annotations

import os
import types

from ferrocorn._hooks import HOOK_NAMES

TYPE_CHECKING = False  # annotations only: imports cost every server process memory
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Union

    # typing.Union: `bool | str` is evaluated at run time, and CPython 3.9 cannot.
    Value = Union[bool, str, list[str]]

__all__ = ["ConfigFileError", "load_config_file", "normalise"]


class ConfigFileError(Exception):
    """The config file could not be read or raised while running."""


def load_config_file(path: str) -> tuple[list[tuple[str, Value]], dict[str, Callable[..., Any]]]:
    """Run the config file at ``path``; return its settings and its hooks.

    Settings come back in the file's order. Names starting with ``_``, modules and classes are
    not settings. Functions named after hooks are hooks; other functions are passed on as
    settings so that the caller warns about them (a misspelt hook should not go unnoticed).
    """
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError as e:
        raise ConfigFileError(f"cannot read config file {path}: {e.strerror}") from e
    namespace: dict[str, Any] = {"__file__": os.path.abspath(path), "__name__": "__config__"}
    try:
        code = compile(source, path, "exec")
        exec(code, namespace)  # noqa: S102 - running the operator's config file is the point
    except BaseException as e:  # noqa: BLE001 - any failure in the file is reported, not raised
        if isinstance(e, KeyboardInterrupt):
            raise
        import traceback

        # The three-argument form: CPython 3.9 has no other.
        detail = "".join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip()
        raise ConfigFileError(f"config file {path} failed to run:\n{detail}") from e

    settings: list[tuple[str, Value]] = []
    hooks: dict[str, Callable[..., Any]] = {}
    for name, value in namespace.items():
        if name.startswith("_") or isinstance(value, (types.ModuleType, type)):
            continue
        if name in HOOK_NAMES:
            if not callable(value):
                raise ConfigFileError(f"config file {path}: hook {name} must be a function")
            hooks[name] = value
            continue
        if callable(value):
            settings.append((name, f"<function {getattr(value, '__name__', name)}>"))
            continue
        if value is None:
            continue
        settings.append((name, normalise(name, value)))
    return settings, hooks


def normalise(name: str, value: object) -> Value:
    """One setting's value as a bool, a string or a list of strings."""
    if isinstance(value, bool):
        return value
    from collections.abc import Mapping

    if name == "logconfig_dict" and isinstance(value, Mapping):
        import json

        return json.dumps(value)
    if isinstance(value, Mapping):
        # secure_scheme_headers = {"X-FORWARDED-PROTO": "https"} and the like.
        return [f"{k}={v}" for k, v in value.items()]
    if isinstance(value, (list, tuple, set, frozenset)):
        return [str(item) for item in value]
    if isinstance(value, int) and name in ("umask", "control_socket_mode"):
        return oct(value)
    return str(value)
