# SPDX-License-Identifier: Apache-2.0
"""Command dispatch inside a snakepit worker.

snakepit-worker calls :func:`configure` once in the zygote, then :func:`call` for every request
and :func:`describe` for every exception a call raises. Commands are either
``python.<module path>.<attribute path>`` (the generic adapter, limited to the allowed modules)
or the name of a tool of the pool's adapter class.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
import types
from typing import Any, Callable

GENERIC_PREFIX = "python."

# Error replies stay small whatever the exception holds.
MESSAGE_MAX_CHARS = 8192
TRACEBACK_MAX_LINES = 200
TRACEBACK_LINE_MAX_CHARS = 1024


class RequestError(Exception):
    """A call that the worker rejects before or instead of running it."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


_allowed: tuple[str, ...] = ()
_adapter_class: type | None = None
_adapter_spec: str | None = None
_adapter_tools: dict[str, Callable[..., Any]] | None = None
_targets: dict[str, Callable[..., Any]] = {}


def _split_names(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    return tuple(name.strip() for name in text.split(",") if name.strip())


def configure(allow: str | None, adapter: str | None) -> None:
    """Set the module allowlist and import the adapter class ("package.module:Class")."""
    global _allowed, _adapter_class, _adapter_spec, _adapter_tools
    _allowed = _split_names(allow)
    _adapter_spec = adapter
    _adapter_class = None
    _adapter_tools = None
    _targets.clear()
    if adapter:
        module_name, _, class_name = adapter.partition(":")
        module = importlib.import_module(module_name)
        cls = _lookup_path(module, class_name, adapter)
        if not isinstance(cls, type):
            raise TypeError(f"adapter {adapter!r} is not a class")
        _adapter_class = cls


def repair_executable() -> None:
    """Point sys.executable at the interpreter when it names the embedding binary.

    Python derives sys.executable from argv[0], which is snakepit-worker here, or leaves it
    empty. subprocess and multiprocessing run sys.executable as a Python interpreter, so give
    them the one of the running prefix and version.
    """
    executable = sys.executable
    if executable and os.path.basename(executable).startswith("python"):
        return
    candidate = os.path.join(sys.base_prefix, "bin", "python%d.%d" % sys.version_info[:2])
    if os.access(candidate, os.X_OK):
        sys.executable = candidate
        sys._base_executable = candidate


def preload(names: str | None) -> None:
    """Import each comma-separated module, in order."""
    for name in _split_names(names):
        importlib.import_module(name)


def is_allowed(module_name: str) -> bool:
    """Tell whether ``module_name`` is an allowed module or a submodule of one.

    The allowlist ``*`` allows every module: the daemon passes it when clients may register
    libraries at run time, and then checks each command against its own list before the call.
    """
    for allowed in _allowed:
        if allowed == "*":
            return True
        if module_name == allowed or module_name.startswith(allowed + "."):
            return True
    return False


def _lookup_path(obj: Any, path: str, command: str) -> Any:
    for name in path.split("."):
        try:
            obj = getattr(obj, name)
        except AttributeError:
            raise RequestError("bad_request", f"{command!r}: no attribute {name!r}") from None
    return obj


def _lookup_allowed(module: Any, path: str, command: str) -> Any:
    """Walk ``path`` from an allowed module without leaving the allowlist.

    Dunder names (``__globals__``, ``__builtins__``, ``__class__``, ...) are rejected, and so
    is every step that reaches a module that is not allowed, so ``python.json.codecs.builtins.eval``
    cannot reach ``builtins`` through ``json``. Single-underscore names such as ``os._exit``
    stay callable.
    """
    obj = module
    for name in path.split("."):
        if name.startswith("__"):
            raise RequestError(
                "not_allowed",
                f"{command!r}: {name!r} is a special attribute, which commands cannot use",
            )
        try:
            obj = getattr(obj, name)
        except AttributeError:
            raise RequestError("bad_request", f"{command!r}: no attribute {name!r}") from None
        if isinstance(obj, types.ModuleType) and not is_allowed(obj.__name__):
            raise RequestError(
                "not_allowed",
                f"{command!r}: {name!r} is the module {obj.__name__!r}, which is not in the "
                "pool's allowed libraries",
            )
    return obj


def _import_if_exists(module_name: str) -> Any | None:
    module = sys.modules.get(module_name)
    if module is not None:
        return module
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only a missing module_name (or a parent) means "try a shorter prefix"; a missing
        # dependency inside an existing module is that module's error.
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            return None
        raise


def _resolve_generic(command: str) -> Callable[..., Any]:
    parts = command[len(GENERIC_PREFIX):].split(".")
    if len(parts) < 2 or not all(parts):
        raise RequestError(
            "bad_request",
            f"invalid command {command!r}: expected python.<module>.<attribute>",
        )
    allowed_prefix = False
    # Try module prefixes from the longest down; the rest of the command is the attribute path.
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        if not is_allowed(module_name):
            continue
        allowed_prefix = True
        module = _import_if_exists(module_name)
        if module is not None:
            target = _lookup_allowed(module, ".".join(parts[split:]), command)
            if not callable(target):
                raise RequestError("bad_request", f"{command!r} is not callable")
            return target
    if not allowed_prefix:
        raise RequestError(
            "not_allowed",
            f"{command!r}: module {parts[0]!r} is not in the pool's allowed libraries",
        )
    raise RequestError("bad_request", f"{command!r}: no such module")


def _adapter_tool(command: str) -> Callable[..., Any]:
    global _adapter_tools
    if _adapter_class is None:
        raise RequestError(
            "bad_request",
            f"unknown command {command!r}: the pool has no adapter, and generic commands "
            "start with 'python.'",
        )
    if _adapter_tools is None:
        # One adapter instance per worker, made on first use after the fork.
        instance = _adapter_class()
        tools = getattr(instance, "tools", None)
        _adapter_tools = tools() if callable(tools) else {}
    tool = _adapter_tools.get(command)
    if tool is None:
        raise RequestError(
            "bad_request", f"unknown tool {command!r} for adapter {_adapter_spec!r}"
        )
    return tool


def _resolve(command: str) -> Callable[..., Any]:
    if command.startswith(GENERIC_PREFIX):
        target = _resolve_generic(command)
    else:
        target = _adapter_tool(command)
    _targets[command] = target
    return target


def _check_keywords(kwargs: dict) -> dict:
    for key in kwargs:
        if not isinstance(key, str):
            raise RequestError(
                "bad_request", f"keyword argument names must be atoms or strings, got {key!r}"
            )
    return kwargs


def call(command: str, args: Any) -> Any:
    """Run ``command`` with ``args``: a list (positional), dict (keywords) or (list, dict)."""
    target = _targets.get(command)
    if target is None:
        target = _resolve(command)
    kind = type(args)
    if kind is list:
        return target(*args)
    if kind is dict:
        return target(**_check_keywords(args))
    if (kind is tuple and len(args) == 2 and type(args[0]) is list
            and type(args[1]) is dict):
        return target(*args[0], **_check_keywords(args[1]))
    raise RequestError(
        "bad_request",
        f"invalid arguments of type {kind.__name__}: expected a list, a map or {{list, map}}",
    )


def _clip(text: str, limit: int) -> bytes:
    if len(text) > limit:
        text = text[:limit] + f"... ({len(text) - limit} more characters)"
    return text.encode("utf-8", "backslashreplace")


def _qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _traceback_lines(exc: BaseException) -> list[bytes]:
    report = traceback.TracebackException.from_exception(exc)
    # Drop the frames of this module: they are the same in every error reply.
    report.stack = traceback.StackSummary.from_list(
        [frame for frame in report.stack if frame.filename != __file__]
    )
    lines = "".join(report.format()).splitlines()
    if len(lines) > TRACEBACK_MAX_LINES:
        skipped = len(lines) - TRACEBACK_MAX_LINES
        half = TRACEBACK_MAX_LINES // 2
        lines = lines[:half] + [f"... ({skipped} lines skipped)"] + lines[-half:]
    return [_clip(line, TRACEBACK_LINE_MAX_CHARS) for line in lines]


def describe(exc: BaseException) -> tuple:
    """Describe ``exc`` for the error map: (kind, message, type, traceback, args)."""
    if isinstance(exc, RequestError):
        return (exc.kind, _clip(exc.message, MESSAGE_MAX_CHARS), None, None, None)
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not hide the original exception
        message = f"<{type(exc).__name__} with an unprintable message>"
    return (
        "python_exception",
        _clip(message, MESSAGE_MAX_CHARS),
        _qualified_name(type(exc)).encode("utf-8", "backslashreplace"),
        _traceback_lines(exc),
        list(exc.args),
    )
