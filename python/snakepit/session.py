# SPDX-License-Identifier: Apache-2.0
"""Variables of the session of the running call.

Inside a call made with a ``session_id`` option, :func:`get` and :func:`put` read and write that
session's variables in the daemon's session store. The worker asks the daemon on its request
socket and waits for the answer, so each access costs one round trip. Outside such a call both
raise :class:`RuntimeError`.
"""

from __future__ import annotations

from typing import Any

from snakepit import Atom

try:
    import _snakepit_worker
except ImportError:  # plain Python, not a snakepit worker
    _snakepit_worker = None

_GET = Atom("get")
_PUT = Atom("put")


class SessionError(Exception):
    """The daemon could not serve a session variable; ``kind`` is the error kind."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}" if message else kind)
        self.kind = kind
        self.message = message


def _request(request: tuple) -> Any:
    if _snakepit_worker is None:
        raise RuntimeError("snakepit.session works only inside a snakepit worker")
    return _snakepit_worker.session_request(request)


def _raise_error(reply: Any) -> None:
    details = reply[1] if isinstance(reply[1], dict) else {}
    raise SessionError(str(details.get("kind", "unknown")), str(details.get("message", "")))


def _is_tagged(reply: Any, tag: str, size: int) -> bool:
    return type(reply) is tuple and len(reply) == size and reply[0] == tag


def session_id() -> str | bytes | None:
    """Return the session id of the running call, or None outside a session call."""
    if _snakepit_worker is None:
        return None
    return _snakepit_worker.session_id()


def get(name: str, default: Any = None) -> Any:
    """Return the session variable ``name``, or ``default`` when the session does not have it."""
    if not isinstance(name, str):
        raise TypeError(f"session variable names are str, not {type(name).__name__}")
    reply = _request((_GET, name))
    if _is_tagged(reply, "ok", 2):
        return reply[1]
    if _is_tagged(reply, "error", 2):
        if isinstance(reply[1], dict) and reply[1].get("kind") == "not_found":
            return default
        _raise_error(reply)
    raise SessionError("bad_request", f"unexpected session reply {reply!r}")


def put(name: str, value: Any) -> None:
    """Set the session variable ``name`` to ``value``."""
    if not isinstance(name, str):
        raise TypeError(f"session variable names are str, not {type(name).__name__}")
    reply = _request((_PUT, name, value))
    if reply == "ok" and not isinstance(reply, tuple):
        return
    if _is_tagged(reply, "error", 2):
        _raise_error(reply)
    raise SessionError("bad_request", f"unexpected session reply {reply!r}")
