# SPDX-License-Identifier: Apache-2.0
"""Python types for Erlang terms that have no Python equivalent.

``Atom`` is a ``str`` subclass, so atoms work as dict keys and keyword names, and compare equal
to the ``str`` of the same text. ``Pid``, ``Reference``, ``Port`` and ``Fun`` are opaque: they
hold the term's external term format bytes (without the version byte 131) and the codec writes
those bytes back unchanged, so a pid received from Erlang can be returned to Erlang.
"""

from __future__ import annotations

__all__ = ["Atom", "Opaque", "Pid", "Reference", "Port", "Fun"]


class Atom(str):
    """An Erlang atom. Encoded as an atom, where a plain ``str`` is encoded as a binary."""

    __slots__ = ()
    __module__ = "snakepit"

    def __repr__(self) -> str:
        return f"Atom({str.__repr__(self)})"


class Opaque:
    """An Erlang term kept as its external term format bytes, compared by those bytes."""

    __slots__ = ("_etf",)
    __module__ = "snakepit"

    def __init__(self, etf: bytes) -> None:
        if not isinstance(etf, (bytes, bytearray, memoryview)):
            raise TypeError(f"{type(self).__name__} expects bytes, got {type(etf).__qualname__}")
        self._etf = bytes(etf)

    @property
    def etf(self) -> bytes:
        """The term's external term format bytes, without the version byte."""
        return self._etf

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._etf == other._etf  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._etf))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._etf!r})"

    def __reduce__(self) -> tuple[type, tuple[bytes]]:
        return (type(self), (self._etf,))


class Pid(Opaque):
    """An Erlang process identifier."""

    __slots__ = ()
    __module__ = "snakepit"


class Reference(Opaque):
    """An Erlang reference."""

    __slots__ = ()
    __module__ = "snakepit"


class Port(Opaque):
    """An Erlang port identifier."""

    __slots__ = ()
    __module__ = "snakepit"


class Fun(Opaque):
    """An Erlang fun: a closure or an external fun such as ``fun erlang:abs/1``."""

    __slots__ = ()
    __module__ = "snakepit"
