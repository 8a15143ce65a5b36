defmodule Snakepit.ExecuteTest do
  use ExUnit.Case, async: false

  @moduletag :pool
  @moduletag :capture_log

  alias Snakepit.{Connection, Error}
  alias SnakepitTest.{App, Daemon, Wait}

  setup do
    primary = :persistent_term.get(:snakepit_test_primary)
    on_exit(fn -> App.restart!(nodes: [primary.node]) end)
    %{primary: primary}
  end

  test "execute with positional, keyword and mixed arguments" do
    assert Snakepit.execute("python.os.path.join", ["a", "b"]) == {:ok, "a/b"}
    assert Snakepit.execute("python.builtins.int", {["ff"], %{"base" => 16}}) == {:ok, 255}
    assert Snakepit.execute("python.builtins.dict", %{"x" => 1}) == {:ok, %{"x" => 1}}

    assert Snakepit.execute("python.builtins.len", ["abc"], timeout: 5_000, pool: "default") ==
             {:ok, 3}
  end

  test "arguments are checked before the call" do
    assert {:error, %Error{kind: :bad_request}} = Snakepit.execute(:not_a_binary, [])
    assert {:error, %Error{kind: :bad_request}} = Snakepit.execute("python.os.getcwd", :bad)

    assert {:error, %Error{kind: :bad_request, message: "invalid option :affinity: :sticky"}} =
             Snakepit.execute("python.os.getcwd", [], affinity: :sticky)
  end

  test "python exception becomes a structured error", %{primary: primary} do
    assert {:error, %Error{} = error} = Snakepit.execute("python.json.loads", ["{"])
    assert error.kind == :python_exception
    assert error.type =~ "JSONDecodeError"
    assert error.retryable == false
    assert error.node == primary.node
    assert [_ | _] = error.traceback
    assert Exception.message(error) =~ "python_exception: "
  end

  test "daemon timeout arrives before the caller's own" do
    {ms, reply} = Wait.timed(fn -> Snakepit.execute("python.time.sleep", [5], timeout: 500) end)
    assert {:error, %Error{kind: :timeout, retryable: true}} = reply
    assert ms >= 500
    assert ms < 1_000
  end

  test "unencodable result is an encode_error" do
    assert {:error, %Error{kind: :encode_error} = error} =
             Snakepit.execute("python.builtins.object", [])

    assert error.message =~ "object"
  end

  test "too deep argument is a too_deep error and the worker keeps serving" do
    deep = Enum.reduce(1..300, [], fn _level, inner -> [inner] end)
    assert {:error, %Error{kind: :too_deep}} = Snakepit.execute("python.builtins.len", [deep])
    assert Snakepit.execute("python.builtins.len", ["ok"]) == {:ok, 2}
  end

  test "too large argument is a too_large error" do
    big = :binary.copy(<<0>>, 64 * 1024 * 1024 + 1)
    assert {:error, %Error{kind: :too_large}} = Snakepit.execute("python.builtins.len", [big])
    assert Snakepit.execute("python.builtins.len", ["ok"]) == {:ok, 2}
  end

  @tag :sessions
  test "execute_in_session runs in the session" do
    id = "exec-#{System.unique_integer([:positive])}"
    assert {:ok, _session} = Snakepit.create_session(id)
    assert Snakepit.execute_in_session(id, "python.builtins.len", ["abcd"]) == {:ok, 4}
    assert Snakepit.delete_session(id) == :ok
  end

  test "execute_stream calls back with each chunk in order" do
    parent = self()
    callback = fn chunk -> send(parent, {:chunk, chunk}) end

    assert {:ok, _result} = Snakepit.execute_stream("python.builtins.iter", [[1, 2, 3]], callback)

    assert_received {:chunk, 1}
    assert_received {:chunk, 2}
    assert_received {:chunk, 3}
    refute_received {:chunk, _other}
  end

  test "stream is lazy and can halt early" do
    stream = Snakepit.stream("python.builtins.iter", [[1, 2, 3]])
    assert Enum.to_list(stream) == [1, 2, 3]
    assert Enum.take(Snakepit.stream("python.builtins.iter", [[1, 2, 3]]), 2) == [1, 2]
  end

  test "early halt leaves no messages behind" do
    # An endless generator. The daemon cancels it when the relay exits, or else at the deadline.
    endless = Snakepit.stream("python.itertools.count", [], timeout: 1_500)
    assert Enum.take(endless, 5) == [0, 1, 2, 3, 4]

    Process.sleep(300)
    assert Process.info(self(), :messages) == {:messages, []}
  end

  test "stream whose node is killed ends with nodedown" do
    daemon = Daemon.start!(sname: Daemon.unique_sname("stream_kill"))
    on_exit(fn -> Daemon.stop(daemon) end)
    App.restart!(nodes: [daemon.node])

    kill_at_three = fn
      3 -> Daemon.signal(daemon, "KILL")
      _chunk -> :ok
    end

    {ms, reply} =
      Wait.timed(fn ->
        Snakepit.execute_stream("python.itertools.count", [], kill_at_three, timeout: 20_000)
      end)

    assert {:error, %Error{kind: :nodedown, node: node}} = reply
    assert node == daemon.node
    assert ms < 3_000
    assert Process.info(self(), :messages) == {:messages, []}
  end

  test "stream raises the daemon's error" do
    assert_raise Error, ~r/python_exception/, fn ->
      Enum.to_list(Snakepit.stream("python.json.loads", ["{"]))
    end
  end

  @tag :tmp_dir
  test "configured libraries are registered on connect", %{tmp_dir: dir} do
    config = Path.join(dir, "snakepit.ini")
    File.write!(config, "[node]\nallow_client_libraries = true\n")
    args = ["--config", config | Daemon.default_args()]
    daemon = Daemon.start!(sname: Daemon.unique_sname("libs"), args: args)
    on_exit(fn -> Daemon.stop(daemon) end)

    App.restart!(nodes: [daemon.node])

    assert {:error, %Error{kind: :not_allowed}} =
             Snakepit.execute("python.string.capwords", ["a b"])

    libraries = [%{name: "string", module: "string", pip_package: "string"}]
    App.restart!(nodes: [daemon.node], python_libraries: libraries)
    assert Snakepit.execute("python.string.capwords", ["a b"]) == {:ok, "A B"}
  end

  test "in-flight execute gets nodedown when the daemon is killed" do
    daemon = Daemon.start!(sname: Daemon.unique_sname("exec_kill"))
    on_exit(fn -> Daemon.stop(daemon) end)
    App.restart!(nodes: [daemon.node])

    task = Task.async(fn -> Snakepit.execute("python.time.sleep", [10], timeout: 20_000) end)
    Process.sleep(500)
    {ms, reply} = Wait.timed(fn -> Daemon.signal(daemon, "KILL") && Task.await(task, 5_000) end)

    assert {:error, %Error{kind: :nodedown}} = reply
    assert ms < 2_000
  end

  test "idempotent call is retried on another node" do
    a = Daemon.start!(sname: Daemon.unique_sname("idem_a"))
    b = Daemon.start!(sname: Daemon.unique_sname("idem_b"))
    on_exit(fn -> Enum.each([a, b], &Daemon.stop/1) end)
    App.restart!(nodes: [a.node, b.node])

    # Round robin sends one of the two calls to each node; a is killed under its call.
    tasks =
      for _call <- 1..2 do
        Task.async(fn ->
          Snakepit.execute("python.time.sleep", [1], idempotent: true, timeout: 10_000)
        end)
      end

    Process.sleep(300)
    :ok = Daemon.signal(a, "KILL")

    assert Enum.map(tasks, &Task.await(&1, 15_000)) == [{:ok, nil}, {:ok, nil}]
    assert Connection.healthy_nodes() == [b.node]
  end
end
