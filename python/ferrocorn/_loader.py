"""Finding the application named by the ``APP`` argument, and telling ASGI from WSGI.

The forms are Gunicorn's, plus Twisted's dotted form:

``module:name``
    an attribute of the module; a dotted path (``module:obj.attr``) is followed.
``module:factory()`` / ``module:factory('arg', key=1)``
    a call returning the application. Arguments must be Python literals: the call is parsed
    with :mod:`ast` and the arguments evaluated with :func:`ast.literal_eval`, never ``eval``.
``module``
    the module's ``application`` attribute, else its ``app``.
``package.module.name``
    when the whole dotted name is not a module, the part after the last dot is an attribute of
    the module before it.

Every failure is an :class:`AppLoadError` with a one-line message for the user; when the
failure came from the application's own code, the original exception is its ``__cause__``.
"""

from __future__ import annotations

import importlib
from keyword import iskeyword

TYPE_CHECKING = False  # annotations only: imports cost every server process memory
if TYPE_CHECKING:
    import ast
    from collections.abc import Callable
    from types import ModuleType
    from typing import Any, NoReturn

__all__ = ["AppLoadError", "is_asgi", "load_app"]

#: Attributes looked up, in order, when ``APP`` names only a module.
DEFAULT_ATTRIBUTES = ("application", "app")


class AppLoadError(Exception):
    """The application could not be loaded; ``str()`` is a one-line message for the user."""


class _Target:
    """What the part of ``APP`` after the module names: an attribute path, maybe called."""

    __slots__ = ("args", "call", "kwargs", "path")

    def __init__(
        self,
        path: tuple[str, ...],
        call: bool = False,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.path = path
        self.call = call
        self.args = args
        self.kwargs = kwargs or {}

    @property
    def name(self) -> str:
        return ".".join(self.path)


def load_app(spec: str) -> Callable[..., Any]:
    """Import and return the WSGI application named by ``spec`` (the ``APP`` argument)."""
    spec = spec.strip()
    if not spec:
        raise AppLoadError("No application given: expected MODULE:NAME, e.g. 'myapp:app'.")

    if ":" in spec:
        module_name, _, expression = spec.partition(":")
        module_name = module_name.strip()
        _check_module_name(module_name, spec)
        target = _parse_target(expression.strip(), spec)
        module = _import(module_name)
        app = _resolve(module, module_name, target, spec)
    else:
        _check_module_name(spec, spec)
        module, module_name, attribute = _import_dotted(spec)
        if attribute is None:
            app = _default_attribute(module, module_name)
        else:
            app = _resolve(module, module_name, _Target((attribute,)), spec)

    if not callable(app):
        raise AppLoadError(
            f"Application object must be callable: {spec!r} is a {type(app).__name__!r}"
        )
    return app


def is_asgi(app: object) -> bool:
    """True when ``app`` looks like an ASGI 3 application: a coroutine function (also one
    marked as such, as asgiref's ``markcoroutinefunction`` does), or an object whose
    ``__call__`` is one (a class with ``async def __call__``, Django's ``ASGIHandler``).
    Anything else is served as WSGI (``--interface`` says otherwise when this guesses wrong).
    """
    import inspect

    def coroutine_function(obj: object) -> bool:
        if inspect.iscoroutinefunction(obj):
            return True
        # Python < 3.12 and asgiref's marker for callables that return a coroutine.
        if getattr(obj, "_is_coroutine", None) is not None:
            import asyncio

            return bool(asyncio.iscoroutinefunction(obj))
        return False

    if coroutine_function(app):
        return True
    if inspect.isclass(app):
        return False  # calling a class makes an object: that is WSGI (or ASGI 2)
    # The __call__ methods themselves (not callable()): whether they are coroutine functions.
    call = getattr(type(app), "__call__", None)  # noqa: B004
    if call is not None and coroutine_function(call):
        return True
    bound = getattr(app, "__call__", None)  # noqa: B004
    return bound is not None and coroutine_function(bound)


def _check_module_name(name: str, spec: str) -> None:
    if not name or not all(part.isidentifier() for part in name.split(".")):
        raise AppLoadError(
            f"Failed to parse {spec!r}: {name!r} is not a module name "
            "(expected MODULE:NAME, e.g. 'myapp:app')."
        )


def _plain(expression: str) -> bool:
    """``name`` or ``a.b``: no parser needed."""
    return bool(expression) and all(
        part.isidentifier() and not iskeyword(part) for part in expression.split(".")
    )


def prepare(spec: str) -> None:
    """Imports now what :func:`load_app` will need from the standard library for ``spec``: a
    worker calls it before it switches to ``--user``, whose interpreter's files may be out of
    that user's reach."""
    _, colon, expression = spec.strip().partition(":")
    if colon and not _plain(expression.strip()):
        import ast  # noqa: F401  (the parser of factory calls)


def _parse_target(expression: str, spec: str) -> _Target:
    """Parses ``name``, ``a.b`` or ``factory(literal, key=literal)``, and nothing else."""
    if _plain(expression):
        return _Target(tuple(expression.split(".")))  # the usual 'module:app'
    import ast  # only for factory calls: the module costs each worker 1.3 MiB

    error = AppLoadError(f"Failed to parse {spec!r} as an attribute name or function call.")
    try:
        node = ast.parse(expression, mode="eval").body
    except SyntaxError:
        raise error from None

    if not isinstance(node, ast.Call):
        path = _attribute_path(node)
        if path is None:
            raise error
        return _Target(path)

    path = _attribute_path(node.func)
    if path is None:
        raise error
    if any(isinstance(arg, ast.Starred) for arg in node.args) or any(
        keyword.arg is None for keyword in node.keywords
    ):
        raise AppLoadError(
            f"Failed to parse {spec!r}: factory arguments must be literal values, "
            "not *args or **kwargs."
        )
    try:
        args = tuple(ast.literal_eval(arg) for arg in node.args)
        kwargs = {str(kw.arg): ast.literal_eval(kw.value) for kw in node.keywords}
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise AppLoadError(
            f"Failed to parse {spec!r}: factory arguments must be literal values "
            "(strings, numbers, tuples, lists, dicts, sets, booleans, None)."
        ) from None
    return _Target(path, call=True, args=args, kwargs=kwargs)


def _attribute_path(node: ast.expr) -> tuple[str, ...] | None:
    """``a`` → ``("a",)``, ``a.b.c`` → ``("a", "b", "c")``, anything else → None."""
    import ast

    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return tuple(reversed(parts))


def _is_self_or_parent(missing: str | None, module_name: str) -> bool:
    """True when a ModuleNotFoundError for ``missing`` means ``module_name`` itself is absent."""
    return missing is not None and (module_name == missing or module_name.startswith(missing + "."))


def _import_dotted(spec: str) -> tuple[ModuleType, str, str | None]:
    """Twisted's form: ``spec`` itself when it is a module (attribute None), else the module
    before its last dot and the attribute after it."""
    try:
        return importlib.import_module(spec), spec, None
    except ModuleNotFoundError as exc:
        if not (_is_self_or_parent(exc.name, spec) and "." in spec):
            _raise_import_error(spec, exc)
    except (Exception, SystemExit) as exc:
        _raise_import_error(spec, exc)
    module_name, _, attribute = spec.rpartition(".")
    return _import(module_name), module_name, attribute


def _import(module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:  # whatever the module's own code raised
        _raise_import_error(module_name, exc)


def _raise_import_error(module_name: str, exc: BaseException) -> NoReturn:
    if isinstance(exc, ModuleNotFoundError) and _is_self_or_parent(exc.name, module_name):
        # The app's module (or a package above it) does not exist: Python's own message says
        # which, e.g. "No module named 'nosuch'". Its traceback is only import machinery.
        raise AppLoadError(_one_line(str(exc))) from None
    # Anything else happened while running the module's code, including a ModuleNotFoundError
    # for some *other* module it imports: that is the module's failure, not a missing app.
    raise AppLoadError(f"Error while importing {module_name!r}: {_describe(exc)}") from exc


def _resolve(module: ModuleType, module_name: str, target: _Target, spec: str) -> Any:
    obj: Any = module
    for depth, part in enumerate(target.path, start=1):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            missing = ".".join(target.path[:depth])
            raise AppLoadError(
                f"Failed to find attribute {missing!r} in {module_name!r}."
            ) from None
    if not target.call:
        return obj

    if not callable(obj):
        raise AppLoadError(
            f"Application factory must be callable: {target.name!r} in {module_name!r} "
            f"is a {type(obj).__name__!r}"
        )
    try:
        app = obj(*target.args, **target.kwargs)
    except Exception as exc:  # the factory's own failure, reported with its cause
        raise AppLoadError(
            f"Error while calling the application factory {spec!r}: {_describe(exc)}"
        ) from exc
    if not callable(app):
        raise AppLoadError(
            f"Application object must be callable: the factory {spec!r} "
            f"returned a {type(app).__name__!r}"
        )
    return app


def _default_attribute(module: ModuleType, module_name: str) -> Any:
    for name in DEFAULT_ATTRIBUTES:
        try:
            return getattr(module, name)
        except AttributeError:
            continue
    names = " or ".join(repr(name) for name in DEFAULT_ATTRIBUTES)
    raise AppLoadError(
        f"Failed to find attribute {names} in {module_name!r}: "
        f"name the application as '{module_name}:NAME'."
    )


def _describe(exc: BaseException) -> str:
    """``ZeroDivisionError: division by zero``, on one line."""
    kind = type(exc).__name__
    message = _one_line(str(exc))
    return f"{kind}: {message}" if message else kind


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())
