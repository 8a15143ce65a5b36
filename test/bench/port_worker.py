# SPDX-License-Identifier: Apache-2.0
"""Serve Python calls to an Elixir Port opened with {:packet, 4}, as a user would write by hand.

This is the baseline of test/bench/pool_bench.sh. Each request is
:erlang.term_to_binary({module, function, args}) with binaries for the names and a list of small
integers as args. The reply is {:ok, result} or {:error, message}. The script decodes and encodes
only the few term types it needs, the way a hand-written bridge does.
"""

import importlib
import struct
import sys

SMALL_INTEGER_EXT = 97
INTEGER_EXT = 98
SMALL_TUPLE_EXT = 104
NIL_EXT = 106
STRING_EXT = 107
LIST_EXT = 108
BINARY_EXT = 109
SMALL_ATOM_UTF8_EXT = 119


def decode(data: bytes, pos: int):
    """Decode the term at data[pos:] and return (value, next position)."""
    tag = data[pos]
    pos += 1
    if tag == SMALL_INTEGER_EXT:
        return data[pos], pos + 1
    if tag == INTEGER_EXT:
        return struct.unpack_from(">i", data, pos)[0], pos + 4
    if tag == BINARY_EXT:
        (size,) = struct.unpack_from(">I", data, pos)
        pos += 4
        return data[pos : pos + size].decode(), pos + size
    if tag == NIL_EXT:
        return [], pos
    if tag == STRING_EXT:  # a list of integers 0..255, as term_to_binary([1, 2]) sends it
        (size,) = struct.unpack_from(">H", data, pos)
        pos += 2
        return list(data[pos : pos + size]), pos + size
    if tag == LIST_EXT:
        (count,) = struct.unpack_from(">I", data, pos)
        pos += 4
        items = []
        for _ in range(count):
            item, pos = decode(data, pos)
            items.append(item)
        return items, pos + 1  # the NIL_EXT tail of a proper list
    if tag == SMALL_TUPLE_EXT:
        count = data[pos]
        pos += 1
        items = []
        for _ in range(count):
            item, pos = decode(data, pos)
            items.append(item)
        return tuple(items), pos
    raise ValueError(f"unsupported term tag {tag}")


def encode(value) -> bytes:
    """Encode an int (32-bit), str or a tuple of those, without the version byte."""
    if isinstance(value, int) and 0 <= value < 256:
        return bytes([SMALL_INTEGER_EXT, value])
    if isinstance(value, int):
        return struct.pack(">Bi", INTEGER_EXT, value)
    if isinstance(value, str):
        raw = value.encode()
        return struct.pack(">BI", BINARY_EXT, len(raw)) + raw
    if isinstance(value, tuple):
        return bytes([SMALL_TUPLE_EXT, len(value)]) + b"".join(encode(v) for v in value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def atom(name: str) -> bytes:
    raw = name.encode()
    return bytes([SMALL_ATOM_UTF8_EXT, len(raw)]) + raw


def read_exact(stream, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError
    return data


def main() -> None:
    stdin = sys.stdin.buffer
    stdout = sys.stdout.buffer
    functions = {}
    while True:
        try:
            (size,) = struct.unpack(">I", read_exact(stdin, 4))
            request = read_exact(stdin, size)
        except EOFError:
            return
        (module, name, args), _ = decode(request, 1)
        try:
            function = functions.get((module, name))
            if function is None:
                function = getattr(importlib.import_module(module), name)
                functions[(module, name)] = function
            reply = bytes([131, SMALL_TUPLE_EXT, 2]) + atom("ok") + encode(function(*args))
        except Exception as e:  # the caller gets every failure as {:error, message}
            reply = bytes([131, SMALL_TUPLE_EXT, 2]) + atom("error") + encode(repr(e))
        stdout.write(struct.pack(">I", len(reply)) + reply)
        stdout.flush()


if __name__ == "__main__":
    main()
