# SPDX-License-Identifier: Apache-2.0
"""Tests of the encoder registry and its built-in encoders."""

import datetime
import decimal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from snakepit import encoders


class Base:
    pass


class Child(Base):
    pass


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    yield
    encoders.unregister(Base)
    encoders.unregister(Child)


def test_lookup_walks_mro() -> None:
    encoders.register(Base, lambda obj: "base")
    assert encoders.encode(Child()) == "base"
    encoders.register(Child, lambda obj: "child")
    assert encoders.encode(Child()) == "child"
    assert encoders.encode(Base()) == "base"


def test_lookup_misses_return_none() -> None:
    assert encoders.lookup(Base) is None
    with pytest.raises(TypeError, match="no encoder for .*Base"):
        encoders.encode(Base())


def test_register_after_negative_lookup() -> None:
    assert encoders.lookup(Child) is None
    encoders.register(Base, lambda obj: 1)
    assert encoders.lookup(Child) is not None


def test_unregister() -> None:
    encoders.register(Base, lambda obj: 1)
    encoders.unregister(Base)
    assert encoders.lookup(Base) is None
    encoders.unregister(Base)


def test_register_validates_arguments() -> None:
    with pytest.raises(TypeError, match="expects a type"):
        encoders.register(Base(), str)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        encoders.register(Base, 3)  # type: ignore[arg-type]


def test_datetime_iso8601() -> None:
    utc = datetime.timezone.utc
    assert encoders.encode(datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=utc)) == (
        "2024-01-02T03:04:05+00:00"
    )
    assert encoders.encode(datetime.date(2024, 1, 2)) == "2024-01-02"
    assert encoders.encode(datetime.time(3, 4)) == "03:04:00"


def test_decimal_exact_string() -> None:
    assert encoders.encode(decimal.Decimal("1.10")) == "1.10"
    assert encoders.encode(decimal.Decimal("-1E+3")) == "-1E+3"


def test_numpy_array_and_scalars() -> None:
    numpy = pytest.importorskip("numpy")
    assert encoders.encode(numpy.arange(6).reshape(2, 3)) == [[0, 1, 2], [3, 4, 5]]
    assert encoders.encode(numpy.array(2.5)) == 2.5
    value = encoders.encode(numpy.int32(7))
    assert value == 7
    assert type(value) is int
    assert type(encoders.encode(numpy.float32(0.5))) is float
    assert encoders.encode(numpy.bool_(True)) is True


def test_pandas_records_and_columns() -> None:
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame({"a": [1, 2], "b": ["x", None]}, index=[10, 20])
    assert encoders.encode(frame) == [{"a": 1, "b": "x"}, {"a": 2, "b": None}]
    assert encoders.encode(frame["a"]) == [1, 2]
    assert encoders.encode(frame.index) == [10, 20]
    stamp = pandas.Timestamp("2024-01-02T03:04:05.000000001")
    assert encoders.encode(stamp) == "2024-01-02T03:04:05.000000001"
    assert encoders.encode(pandas.NaT) is None
    assert encoders.encode(pandas.NA) is None


def test_user_encoder_wins_over_builtin() -> None:
    encoders.register(datetime.date, lambda d: d.toordinal())
    try:
        assert encoders.encode(datetime.date(1, 1, 1)) == 1
    finally:
        encoders.unregister(datetime.date)


def test_numpy_not_imported_for_registration() -> None:
    code = textwrap.dedent(
        """
        import sys
        from snakepit import encoders
        encoders.lookup(int)
        encoders.lookup(type(None))
        print("numpy" in sys.modules, "pandas" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"PYTHONPATH": ":".join(p for p in sys.path if p)},
    )
    assert out.stdout.split() == ["False", "False"]


def test_library_imported_after_first_lookup() -> None:
    code = textwrap.dedent(
        """
        from snakepit import encoders
        assert encoders.lookup(int) is None
        import numpy
        print(encoders.encode(numpy.int8(3)))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"PYTHONPATH": ":".join(p for p in sys.path if p)},
    )
    assert out.stdout.strip() == "3"
