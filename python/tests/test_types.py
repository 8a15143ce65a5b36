# SPDX-License-Identifier: Apache-2.0
"""Tests of snakepit.Atom and the opaque term types."""

import pickle

import pytest

from snakepit import Atom, Fun, Opaque, Pid, Port, Reference


def test_atom_is_str_and_equals_same_text() -> None:
    atom = Atom("ok")
    assert isinstance(atom, str)
    assert atom == "ok"
    assert hash(atom) == hash("ok")
    assert {"ok": 1}[atom] == 1


def test_atom_repr_shows_type() -> None:
    assert repr(Atom("ok")) == "Atom('ok')"


def test_atom_survives_str_operations_as_str() -> None:
    assert type(Atom("ab") + "c") is str
    assert type(Atom("AB").lower()) is str


def test_atom_kwargs_use() -> None:
    def f(**kwargs: int) -> dict[str, int]:
        return kwargs

    assert f(**{Atom("x"): 1}) == {"x": 1}


@pytest.mark.parametrize("cls", [Pid, Reference, Port, Fun])
def test_opaque_equality_by_type_and_bytes(cls: type[Opaque]) -> None:
    a = cls(b"X\x01")
    assert a == cls(b"X\x01")
    assert a != cls(b"X\x02")
    assert hash(a) == hash(cls(bytearray(b"X\x01")))
    assert a.etf == b"X\x01"


def test_opaque_types_differ() -> None:
    assert Pid(b"X") != Reference(b"X")
    assert Pid(b"X") != b"X"
    assert len({Pid(b"X"), Port(b"X"), Pid(b"X")}) == 2


def test_opaque_rejects_non_bytes() -> None:
    with pytest.raises(TypeError, match="Pid expects bytes, got str"):
        Pid("X")  # type: ignore[arg-type]


def test_opaque_repr_and_pickle() -> None:
    pid = Pid(b"X\x00")
    assert repr(pid) == "Pid(b'X\\x00')"
    assert pickle.loads(pickle.dumps(pid)) == pid


def test_opaque_is_immutable() -> None:
    pid = Pid(b"X")
    with pytest.raises(AttributeError):
        pid.etf = b"Y"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        pid.other = 1  # type: ignore[attr-defined]


def test_types_report_package_module() -> None:
    for cls in (Atom, Pid, Reference, Port, Fun):
        assert cls.__module__ == "snakepit"
