# SPDX-License-Identifier: Apache-2.0
"""Tests of command resolution, argument forms and error descriptions in snakepit._runtime."""

import json
import os
import sys
import textwrap

import pytest

from snakepit import Atom, _runtime
from snakepit._runtime import RequestError
from snakepit.adapter import Adapter, tool


@pytest.fixture
def modules(tmp_path, monkeypatch):
    """A directory on sys.path for throwaway modules; they are unloaded afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)

    def write(name, source):
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))

    yield write
    for name in set(sys.modules) - before:
        del sys.modules[name]


def configure(allow, adapter=None):
    _runtime.configure(allow, adapter)


def test_allowlist_matches_names_and_submodules():
    configure("os, json")
    assert _runtime.is_allowed("os")
    assert _runtime.is_allowed("os.path")
    assert _runtime.is_allowed("json.decoder")
    assert not _runtime.is_allowed("osx")
    assert not _runtime.is_allowed("subprocess")


def test_longest_module_prefix_wins():
    configure("os")
    import os.path

    assert _runtime.call("python.os.path.join", ["a", "b"]) == os.path.join("a", "b")
    assert _runtime.call("python.os.getcwd", []) == os.getcwd()


def test_attribute_path_inside_module(modules):
    modules("rt_nested", """
        class Box:
            @staticmethod
            def open(x):
                return x + 1
    """)
    configure("rt_nested")
    assert _runtime.call("python.rt_nested.Box.open", [1]) == 2


def test_not_allowed_imports_nothing(modules):
    modules("rt_forbidden", "raise RuntimeError('imported')\n")
    configure("os")
    with pytest.raises(RequestError) as info:
        _runtime.call("python.rt_forbidden.f", [])
    assert info.value.kind == "not_allowed"
    assert "rt_forbidden" not in sys.modules


def test_missing_dependency_is_the_modules_error(modules):
    modules("rt_broken", "import rt_no_such_dependency\n")
    configure("rt_broken")
    with pytest.raises(ModuleNotFoundError) as info:
        _runtime.call("python.rt_broken.f", [])
    assert info.value.name == "rt_no_such_dependency"


@pytest.mark.parametrize(
    "command",
    ["python.os", "python.", "python.os..path", "python.os.no_such_name", "python.os.sep"],
)
def test_malformed_or_uncallable_commands(command):
    configure("os")
    with pytest.raises(RequestError) as info:
        _runtime.call(command, [])
    assert info.value.kind == "bad_request"


def test_allowed_but_missing_module():
    configure("rt_not_installed")
    with pytest.raises(RequestError) as info:
        _runtime.call("python.rt_not_installed.f", [])
    assert info.value.kind == "bad_request"


def test_argument_forms(modules):
    modules("rt_args", """
        def f(*args, **kwargs):
            return args, kwargs
    """)
    configure("rt_args")
    assert _runtime.call("python.rt_args.f", [1, 2]) == ((1, 2), {})
    assert _runtime.call("python.rt_args.f", {Atom("a"): 1, "b": 2}) == ((), {"a": 1, "b": 2})
    assert _runtime.call("python.rt_args.f", ([1], {Atom("k"): 3})) == ((1,), {"k": 3})
    for bad in (5, "text", ([1],), ((1,), {}), {1: 2}, ([], {b"k": 1})):
        with pytest.raises(RequestError) as info:
            _runtime.call("python.rt_args.f", bad)
        assert info.value.kind == "bad_request", bad


def test_resolution_is_cached(modules):
    modules("rt_cached", """
        def f():
            return "first"
    """)
    configure("rt_cached")
    assert _runtime.call("python.rt_cached.f", []) == "first"
    sys.modules["rt_cached"].f = lambda: "second"
    assert _runtime.call("python.rt_cached.f", []) == "first"


class Tools(Adapter):
    instances = 0

    def __init__(self):
        Tools.instances += 1

    @tool
    def echo(self, value):
        return value

    @tool(name="renamed")
    def original(self):
        return "renamed"

    def helper(self):
        return "not a tool"


class MoreTools(Tools):
    @tool(name="echo")
    def loud_echo(self, value):
        return str(value).upper()


def test_adapter_tools_and_single_instance():
    Tools.instances = 0
    configure(None, f"{__name__}:Tools")
    assert _runtime.call("echo", ["x"]) == "x"
    assert _runtime.call("renamed", []) == "renamed"
    for unknown in ("helper", "original", "nope"):
        with pytest.raises(RequestError) as info:
            _runtime.call(unknown, [])
        assert info.value.kind == "bad_request"
    assert Tools.instances == 1


def test_subclass_tool_replaces_parent():
    configure(None, f"{__name__}:MoreTools")
    assert _runtime.call("echo", ["x"]) == "X"
    assert _runtime.call("renamed", []) == "renamed"


def test_no_adapter_rejects_tools():
    configure("os")
    with pytest.raises(RequestError) as info:
        _runtime.call("echo", [])
    assert info.value.kind == "bad_request"


def test_adapter_spec_must_name_a_class():
    with pytest.raises(TypeError):
        configure(None, "os.path:join")
    with pytest.raises(ModuleNotFoundError):
        configure(None, "rt_no_such_adapter_module:Class")


def test_tool_names_are_checked():
    with pytest.raises(ValueError):
        tool(name="python.os.getcwd")(lambda self: None)
    with pytest.raises(ValueError):
        tool(name="")(lambda self: None)


def raise_in_user_code():
    raise TypeError("bad")


def test_describe_python_exception(modules):
    modules("rt_raises", """
        def f():
            raise TypeError("bad", 7)
    """)
    configure("rt_raises")
    with pytest.raises(TypeError) as info:
        _runtime.call("python.rt_raises.f", [])
    kind, message, type_name, traceback, args = _runtime.describe(info.value)
    assert kind == "python_exception"
    assert message == b"('bad', 7)"
    assert type_name == b"builtins.TypeError"
    assert args == ["bad", 7]
    assert traceback[0] == b"Traceback (most recent call last):"
    assert traceback[-1] == b"TypeError: ('bad', 7)"
    assert not any(b"snakepit/_runtime.py" in line for line in traceback)
    assert any(b"rt_raises.py" in line for line in traceback)


def test_describe_request_error():
    assert _runtime.describe(RequestError("not_allowed", "no")) == (
        "not_allowed", b"no", None, None, None)


def test_describe_clips_and_survives_bad_str():
    class Loud(Exception):
        pass

    class Broken(Exception):
        def __str__(self):
            raise ValueError("no str")

    _, message, type_name, _, _ = _runtime.describe(Loud("x" * 100000))
    assert len(message) < _runtime.MESSAGE_MAX_CHARS + 100
    assert type_name.endswith(b"Loud")
    _, message, _, _, _ = _runtime.describe(Broken())
    assert b"unprintable" in message


def test_describe_recursion_traceback_is_bounded():
    def recurse():
        return recurse()

    with pytest.raises(RecursionError) as info:
        recurse()
    _, _, type_name, traceback, _ = _runtime.describe(info.value)
    assert type_name == b"builtins.RecursionError"
    assert len(traceback) <= _runtime.TRACEBACK_MAX_LINES + 1


def test_preload_imports_in_order(modules):
    modules("rt_first", "ORDER = []\n")
    modules("rt_second", "import rt_first\nrt_first.ORDER.append('second')\n")
    _runtime.preload("rt_first, rt_second")
    assert sys.modules["rt_first"].ORDER == ["second"]
    with pytest.raises(ModuleNotFoundError):
        _runtime.preload("rt_no_such_preload")


def test_session_outside_a_worker():
    from snakepit import session

    assert session.session_id() is None
    with pytest.raises(RuntimeError):
        session.get("x")
    with pytest.raises(RuntimeError):
        session.put("x", 1)
    with pytest.raises(TypeError):
        session.get(b"x")


def test_repair_executable(monkeypatch):
    import os

    monkeypatch.setattr(sys, "executable", "/opt/snakepit/bin/snakepit-worker")
    monkeypatch.setattr(sys, "_base_executable", "", raising=False)
    _runtime.repair_executable()
    assert os.path.basename(sys.executable) == "python%d.%d" % sys.version_info[:2]
    assert os.access(sys.executable, os.X_OK)
    assert sys._base_executable == sys.executable


def test_repair_executable_keeps_an_interpreter(monkeypatch):
    monkeypatch.setattr(sys, "executable", "/srv/venv/bin/python")
    _runtime.repair_executable()
    assert sys.executable == "/srv/venv/bin/python"


def test_star_allows_every_module():
    configure("*")
    assert _runtime.is_allowed("subprocess")
    assert _runtime.call("python.operator.add", [1, 2]) == 3


def test_attribute_walk_cannot_leave_the_allowlist() -> None:
    _runtime.configure("json", None)
    for command in (
        "python.json.codecs.builtins.eval",
        "python.json.codecs.sys.getrecursionlimit",
        "python.json.loads.__globals__.get",
        "python.json.JSONDecoder.__init__.__builtins__.get",
    ):
        with pytest.raises(_runtime.RequestError) as info:
            _runtime._resolve_generic(command)
        assert info.value.kind == "not_allowed", command


def test_attribute_walk_keeps_allowed_names() -> None:
    _runtime.configure("json,os", None)
    assert _runtime._resolve_generic("python.json.loads") is json.loads
    assert _runtime._resolve_generic("python.os.path.join") is os.path.join
    assert _runtime._resolve_generic("python.os._exit") is os._exit
