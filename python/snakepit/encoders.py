# SPDX-License-Identifier: Apache-2.0
"""Encoders for Python objects that have no term of their own.

The term codec maps the core Python types itself (see the table in ``cnode/etf_py.h``). For any
other object it calls :func:`lookup` with the object's type. When an encoder is found, the codec
encodes what the encoder returns instead. An object with no encoder is an ``encode_error``
naming its type. An encoder returns any term-convertible object, which may itself need an
encoder (the codec follows at most 8 such steps per object).

Lookup walks the type's MRO, so an encoder registered for a base class also serves its
subclasses, and the most derived registration wins.

Built-in encoders, registered on the first lookup after their library has been imported
(this module never imports numpy or pandas itself):

* ``numpy.ndarray`` -> nested lists of numbers, as ``ndarray.tolist()`` (a 0-d array gives its
  scalar); dtype and shape are not sent, the nesting carries the shape.
* numpy scalars (``numpy.generic``) -> the matching Python number, bool, str or bytes.
* ``pandas.DataFrame`` -> a list of row maps, ``%{column => value}``, one per row in order;
  the index is not sent (call ``reset_index()`` first to keep it).
* ``pandas.Series`` and ``pandas.Index`` -> the list of their values, so a DataFrame column
  and the DataFrame's rows carry values the same way.
* ``pandas.Timestamp`` -> ISO 8601 binary like ``datetime``; ``pandas.NaT`` and ``pandas.NA``
  -> ``nil``. Missing float values stay NaN and so become the atom ``nan``.
* ``datetime.datetime``, ``datetime.date``, ``datetime.time`` -> ISO 8601 binary, as
  ``isoformat()`` (with the UTC offset when the value has a timezone).
* ``decimal.Decimal`` -> its exact decimal string as a binary, e.g. ``"1.10"``.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

__all__ = ["Encoder", "register", "unregister", "lookup", "encode"]

Encoder = Callable[[Any], Any]

_registry: dict[type, Encoder] = {}
_cache: dict[type, Encoder | None] = {}
_builtins_done: set[str] = set()


def register(tp: type, fn: Encoder) -> None:
    """Register ``fn`` as the encoder of ``tp`` and its subclasses, replacing any earlier one."""
    if not isinstance(tp, type):
        raise TypeError(f"register() expects a type, got {type(tp).__qualname__}")
    if not callable(fn):
        raise TypeError(f"register() expects a callable encoder, got {type(fn).__qualname__}")
    _registry[tp] = fn
    _cache.clear()


def unregister(tp: type) -> None:
    """Remove the encoder registered for exactly ``tp``; a type with none is ignored."""
    if _registry.pop(tp, None) is not None:
        _cache.clear()


def lookup(tp: type) -> Encoder | None:
    """Return the encoder for objects of type ``tp``, or None when no encoder applies."""
    try:
        return _cache[tp]
    except KeyError:
        pass
    _register_builtins()
    found = None
    for base in tp.__mro__:
        found = _registry.get(base)
        if found is not None:
            break
    _cache[tp] = found
    return found


def encode(obj: Any) -> Any:
    """Apply the encoder for ``obj``'s type; raise TypeError when there is none."""
    fn = lookup(type(obj))
    if fn is None:
        tp = type(obj)
        raise TypeError(f"no encoder for {tp.__module__}.{tp.__qualname__}")
    return fn(obj)


def _isoformat(value: Any) -> str:
    return value.isoformat()


def _numpy_array(array: Any) -> Any:
    return array.tolist()


def _numpy_scalar(value: Any) -> Any:
    return value.item()


def _dataframe_records(frame: Any) -> list[dict[Any, Any]]:
    columns = list(frame.columns)
    return [dict(zip(columns, row)) for row in frame.itertuples(index=False, name=None)]


def _values(series: Any) -> list[Any]:
    return series.tolist()


def _missing(_value: Any) -> None:
    return None


def _register_datetime(module: Any) -> None:
    for tp in (module.datetime, module.date, module.time):
        _registry.setdefault(tp, _isoformat)


def _register_decimal(module: Any) -> None:
    _registry.setdefault(module.Decimal, str)


def _register_numpy(module: Any) -> None:
    _registry.setdefault(module.ndarray, _numpy_array)
    _registry.setdefault(module.generic, _numpy_scalar)


def _register_pandas(module: Any) -> None:
    _registry.setdefault(module.DataFrame, _dataframe_records)
    _registry.setdefault(module.Series, _values)
    _registry.setdefault(module.Index, _values)
    _registry.setdefault(module.Timestamp, _isoformat)
    _registry.setdefault(type(module.NaT), _missing)
    _registry.setdefault(type(module.NA), _missing)


_BUILTINS: dict[str, Callable[[Any], None]] = {
    "datetime": _register_datetime,
    "decimal": _register_decimal,
    "numpy": _register_numpy,
    "pandas": _register_pandas,
}


def _register_builtins() -> None:
    """Register the built-in encoders of every library imported since the last call.

    A user's own registration for the same type, made earlier, wins over the built-in one.
    """
    if len(_builtins_done) == len(_BUILTINS):
        return
    for name, setup in _BUILTINS.items():
        if name in _builtins_done:
            continue
        module = sys.modules.get(name)
        if module is None:
            continue
        setup(module)
        _builtins_done.add(name)
        _cache.clear()
