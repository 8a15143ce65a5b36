# SPDX-License-Identifier: Apache-2.0
"""Custom adapters: classes whose tools serve the commands that do not start with ``python.``.

Set ``adapter = package.module:Class`` in a ``[pool NAME]`` section of the daemon's config file,
which the daemon passes to each worker as ``--adapter``. Each worker of that pool then creates
one instance of ``Class`` on the first tool call and dispatches a command to the tool of that
name::

    from snakepit.adapter import Adapter, tool

    class Text(Adapter):
        @tool
        def upper(self, s: str) -> str:
            return s.upper()

        @tool(name="word_count")
        def count(self, s: str) -> int:
            return len(s.split())
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar, overload

F = TypeVar("F", bound=Callable[..., Any])

_TOOL_ATTRIBUTE = "__snakepit_tool__"


@overload
def tool(function: F) -> F: ...


@overload
def tool(*, name: str | None = None) -> Callable[[F], F]: ...


def tool(function: Any = None, *, name: str | None = None) -> Any:
    """Mark a method of an :class:`Adapter` as a tool, named ``name`` or after the method."""

    def mark(fn: F) -> F:
        tool_name = name if name is not None else fn.__name__
        if not isinstance(tool_name, str) or not tool_name:
            raise ValueError(f"invalid tool name {tool_name!r}")
        if tool_name.startswith("python."):
            raise ValueError(f"tool name {tool_name!r} is reserved for generic commands")
        setattr(fn, _TOOL_ATTRIBUTE, tool_name)
        return fn

    if function is not None:
        return mark(function)
    return mark


class Adapter:
    """Base class of custom adapters; subclasses mark their tools with :func:`tool`."""

    def tools(self) -> dict[str, Callable[..., Any]]:
        """Return the bound tool methods of this instance by tool name."""
        found: dict[str, Callable[..., Any]] = {}
        # Walk the MRO from the base up, so a subclass's tool replaces its parent's.
        for cls in reversed(type(self).__mro__):
            for attribute, value in vars(cls).items():
                tool_name = getattr(value, _TOOL_ATTRIBUTE, None)
                if tool_name is not None:
                    found[tool_name] = getattr(self, attribute)
        return found
