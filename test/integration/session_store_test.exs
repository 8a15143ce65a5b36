# SPDX-License-Identifier: Apache-2.0
#
# Session requests and variables on both stores (memory and a real redis-server), the store's
# limits, Python code reading and writing variables through snakepit.session, and sessions of a
# node that goes down.

defmodule Snakepit.Test.SessionStoreCases do
  @moduledoc "The same session tests for each store backend."

  defmacro __using__(backend: backend) do
    quote do
      use ExUnit.Case, async: false
      alias Snakepit.Test.{Pool, Redis}

      @backend unquote(backend)

      # INI lines of the [store] section for this backend. Starts Redis when the backend needs one.
      def store_ini(extra \\ "") do
        backend =
          case @backend do
            :memory ->
              "backend = memory"

            :redis ->
              redis = Redis.start_linked!()

              "backend = redis\nurl = #{redis.url}\nkey_prefix = t#{System.unique_integer([:positive])}:"
          end

        "[store]\n#{backend}\n#{extra}\n"
      end

      setup_all do
        daemon = Pool.start_daemon!(Pool.pool_ini([size: 1], store_ini()))
        %{daemon: daemon, node: daemon.node}
      end

      setup do
        %{id: "s-#{@backend}-#{System.unique_integer([:positive])}"}
      end

      defp session(node, request), do: GenServer.call({:snakepit, node}, request, 10_000)

      test "create, get, touch, delete", %{node: node, id: id} do
        me = node()
        assert {:ok, created} = session(node, {:session, :create, id, [ttl: 600]})
        assert %{id: ^id, ttl_s: 600, owner: ^me, worker_id: nil} = created
        assert is_integer(created.created_ms)
        assert created.accessed_ms >= created.created_ms

        assert {:ok, got} = session(node, {:session, :get, id})
        assert got.id == id
        assert got.created_ms == created.created_ms

        Process.sleep(20)
        assert :ok = session(node, {:session, :touch, id})
        assert {:ok, touched} = session(node, {:session, :get, id})
        assert touched.accessed_ms > created.accessed_ms

        assert :ok = session(node, {:session, :delete, id})

        assert {:error, %{kind: :session_not_found, retryable: false}} =
                 session(node, {:session, :get, id})

        assert :ok = session(node, {:session, :delete, id})
      end

      test "create is idempotent", %{node: node, id: id} do
        assert {:ok, first} = session(node, {:session, :create, id, []})
        Process.sleep(10)
        assert {:ok, second} = session(node, {:session, :create, id, []})
        assert second.created_ms == first.created_ms
      end

      test "owner nil and map options", %{node: node, id: id} do
        assert {:ok, %{owner: nil, ttl_s: 30}} =
                 session(node, {:session, :create, id, %{owner: nil, ttl: 30}})
      end

      test "unknown sessions", %{node: node, id: id} do
        assert {:error, %{kind: :session_not_found}} = session(node, {:session, :get, id})
        assert {:error, %{kind: :session_not_found}} = session(node, {:session, :touch, id})
        assert {:error, %{kind: :session_not_found}} = session(node, {:session, :get, id, "v"})
        assert {:error, %{kind: :session_not_found}} = session(node, {:session, :put, id, "v", 1})

        assert {:error, %{kind: :session_not_found, message: message}} =
                 Pool.fixture(node, "echo", [1], session_id: id)

        assert message =~ id
      end

      test "variables round trip", %{node: node, id: id} do
        {:ok, _} = session(node, {:session, :create, id, []})

        values = [
          {"map", %{"a" => [1, 2.5, :b], 3 => {:tuple, "x"}}},
          {"binary", <<0, 255, 1>>},
          {"big", 12_345_678_901_234_567_890_123},
          {"pid", self()},
          {"empty", []}
        ]

        for {name, value} <- values,
            do: assert(:ok = session(node, {:session, :put, id, name, value}))

        for {name, value} <- values,
            do: assert({:ok, ^value} = session(node, {:session, :get, id, name}))

        assert :ok = session(node, {:session, :put, id, "map", :replaced})
        assert {:ok, :replaced} = session(node, {:session, :get, id, "map"})

        assert {:error, %{kind: :session_not_found, message: message}} =
                 session(node, {:session, :get, id, "nope"})

        assert message =~ "nope"
      end

      test "list sessions", %{node: node, id: id} do
        ids = for i <- 1..5, do: "#{id}-#{i}"
        for sid <- ids, do: {:ok, _} = session(node, {:session, :create, sid, []})
        assert {:ok, listed} = session(node, {:session, :list, []})
        assert ids -- listed == []
        assert {:ok, two} = session(node, {:session, :list, [limit: 2]})
        assert length(two) == 2
      end

      test "Python reads and writes session variables", %{node: node, id: id} do
        {:ok, _} = session(node, {:session, :create, id, []})
        value = %{"nested" => [1, {:two}, "three"]}

        assert {:ok, ^id} =
                 Pool.fixture(node, "session_put", ["from_python", value], session_id: id)

        assert {:ok, ^value} = session(node, {:session, :get, id, "from_python"})

        assert :ok = session(node, {:session, :put, id, "from_elixir", [:a, 1]})
        assert {:ok, [:a, 1]} = Pool.fixture(node, "session_get", ["from_elixir"], session_id: id)
        assert {:ok, :missing} = Pool.fixture(node, "session_get", ["absent"], session_id: id)
      end

      test "Python reading a deleted session raises", %{node: node, id: id} do
        {:ok, _} = session(node, {:session, :create, id, []})

        task =
          Task.async(fn -> Pool.fixture(node, "session_get_after", [0.5, "x"], session_id: id) end)

        Process.sleep(100)
        assert :ok = session(node, {:session, :delete, id})
        assert {:error, error} = Task.await(task, 5000)
        assert %{kind: :python_exception, type: "snakepit.session.SessionError"} = error
        assert error.message =~ "session_not_found"
      end

      test "snakepit.session outside a session call", %{node: node} do
        assert {:error, %{kind: :python_exception}} = Pool.fixture(node, "session_get", ["x"])
      end

      test "TTL expiry", %{node: node, id: id} do
        assert {:ok, %{ttl_s: 1}} = session(node, {:session, :create, id, [ttl: 1]})
        # No request in between: a get or touch would count as an access.
        Process.sleep(2500)
        assert {:error, %{kind: :session_not_found}} = session(node, {:session, :get, id})
      end

      test "bad session requests", %{node: node, id: id} do
        long = String.duplicate("i", 257)

        for request <- [
              {:session, :create, long, []},
              {:session, :create, "", []},
              {:session, :create, id, [ttl: 0]},
              {:session, :create, id, [colour: :red]},
              {:session, :frobnicate, id},
              {:session, :put, id, String.duplicate("n", 257), 1},
              {:session, :list, [limit: 0]}
            ] do
          assert {:error, %{kind: :bad_request}} = session(node, request), inspect(request)
        end

        assert {:ok, _} = session(node, {:session, :create, String.duplicate("i", 256), []})
      end

      test "max_value_bytes at the limit and limit + 1" do
        # A binary of n bytes is n + 6 bytes in external term format with its version byte.
        daemon = Pool.start_daemon!(Pool.pool_ini([size: 1], store_ini("max_value_bytes = 1024")))
        node = daemon.node
        {:ok, _} = session(node, {:session, :create, "v", []})
        assert :ok = session(node, {:session, :put, "v", "x", :binary.copy("a", 1018)})

        assert {:error, %{kind: :too_large, message: message}} =
                 session(node, {:session, :put, "v", "x", :binary.copy("a", 1019)})

        assert message =~ "1024"
        assert {:ok, value} = session(node, {:session, :get, "v", "x"})
        assert byte_size(value) == 1018

        # The same limit holds for a put from Python.
        assert {:error, error} =
                 Pool.fixture(node, "session_put", ["y", :binary.copy("b", 1019)], session_id: "v")

        assert %{kind: :python_exception, type: "snakepit.session.SessionError"} = error
        assert error.message =~ "too_large"
        assert {:ok, "v"} = Pool.fixture(node, "session_put", ["y", "small"], session_id: "v")
      end

      test "max_sessions at the limit and limit + 1" do
        daemon = Pool.start_daemon!(Pool.pool_ini([size: 1], store_ini("max_sessions = 5")))
        node = daemon.node
        for i <- 1..5, do: assert({:ok, _} = session(node, {:session, :create, "m#{i}", []}))

        assert {:error, %{kind: :overloaded, message: message}} =
                 session(node, {:session, :create, "m6", []})

        assert message =~ "max_sessions = 5"
        assert {:ok, _} = session(node, {:session, :create, "m1", []})
        assert :ok = session(node, {:session, :delete, "m1"})
        assert {:ok, _} = session(node, {:session, :create, "m6", []})
      end
    end
  end
end

defmodule Snakepit.Test.SessionMemoryTest do
  use Snakepit.Test.SessionStoreCases, backend: :memory
end

defmodule Snakepit.Test.SessionRedisTest do
  use Snakepit.Test.SessionStoreCases, backend: :redis
end

defmodule Snakepit.Test.SessionRedisSharedTest do
  use ExUnit.Case, async: false
  alias Snakepit.Test.{Pool, Redis}

  defp session(node, request), do: GenServer.call({:snakepit, node}, request, 10_000)

  defp redis_ini(redis, prefix) do
    Pool.pool_ini(
      [size: 1],
      "[store]\nbackend = redis\nurl = #{redis.url}\nkey_prefix = #{prefix}\n"
    )
  end

  test "two daemons on one Redis see each other's sessions" do
    redis = Redis.start_linked!()
    ini = redis_ini(redis, "shared:")
    a = Pool.start_daemon!(ini)
    b = Pool.start_daemon!(ini)

    assert {:ok, _} = session(a.node, {:session, :create, "from_a", [owner: nil]})
    assert :ok = session(a.node, {:session, :put, "from_a", "v", {:set_by, :a}})
    assert {:ok, %{id: "from_a"}} = session(b.node, {:session, :get, "from_a"})
    assert {:ok, {:set_by, :a}} = session(b.node, {:session, :get, "from_a", "v"})

    assert :ok = session(b.node, {:session, :put, "from_a", "v", {:set_by, :b}})
    assert {:ok, {:set_by, :b}} = session(a.node, {:session, :get, "from_a", "v"})
    assert :ok = session(b.node, {:session, :delete, "from_a"})
    assert {:error, %{kind: :session_not_found}} = session(a.node, {:session, :get, "from_a"})
  end

  test "a daemon restarted with Redis keeps sessions" do
    redis = Redis.start_linked!()
    ini = redis_ini(redis, "restart:")
    first = Pool.start_daemon!(ini)
    assert {:ok, created} = session(first.node, {:session, :create, "kept", [owner: nil]})
    assert :ok = session(first.node, {:session, :put, "kept", "v", [1, 2, 3]})
    # A session call binds the session to a worker of the first daemon.
    assert {:ok, old_pid} = Pool.fixture(first.node, "remember", ["k", 1], session_id: "kept")
    assert {:ok, %{worker_id: old_worker}} = session(first.node, {:session, :get, "kept"})
    assert is_integer(old_worker)
    assert 0 = Pool.stop_quietly(first)

    second = Pool.start_daemon!(ini)
    assert {:ok, got} = session(second.node, {:session, :get, "kept"})
    assert got.created_ms == created.created_ms
    assert got.worker_id == old_worker
    assert {:ok, [1, 2, 3]} = session(second.node, {:session, :get, "kept", "v"})

    # That worker's Python state went with the first daemon: reported once, then a fresh worker.
    assert {:error, %{kind: :session_worker_unavailable}} =
             Pool.fixture(second.node, "recall", ["k"], session_id: "kept")

    assert {:ok, [new_pid, nil]} = Pool.fixture(second.node, "recall", ["k"], session_id: "kept")
    assert new_pid != old_pid
  end

  test "Redis killed and restarted under load" do
    redis = Redis.start_linked!()
    daemon = Pool.start_daemon!(redis_ini(redis, "chaos:"))
    node = daemon.node
    value = :binary.copy(<<7>>, 1_000_000)
    {:ok, _} = session(node, {:session, :create, "load", [owner: nil]})

    stop_at = System.monotonic_time(:millisecond) + 3000

    writers =
      for i <- 1..16 do
        Task.async(fn -> write_until(node, "v#{i}", value, stop_at, []) end)
      end

    Process.sleep(500)
    Redis.kill(redis)
    Process.sleep(300)

    # A session-bound call needs the store too: it fails at once and runs no Python.
    {ms, result} = Pool.timed(fn -> Pool.fixture(node, "echo", [1], session_id: "load") end)
    assert {:error, %{kind: :store_unavailable, retryable: true}} = result
    assert ms < 500

    Process.sleep(700)
    restarted = Redis.start_linked!(redis.port)

    results = Enum.flat_map(writers, &Task.await(&1, 30_000))
    kinds = results |> Enum.map(fn {_ms, r} -> outcome(r) end) |> Enum.frequencies()
    assert Map.keys(kinds) -- [:ok, :store_unavailable, :session_not_found] == [], inspect(kinds)
    assert kinds[:ok] >= 16
    assert kinds[:store_unavailable] >= 1
    slowest = results |> Enum.map(&elem(&1, 0)) |> Enum.max()
    assert slowest < 1000

    # After the restart the store works again within the reconnect backoff.
    assert Pool.wait_until(
             fn -> match?({:ok, _}, session(node, {:session, :create, "again", []})) end,
             6000
           )

    assert :ok = session(node, {:session, :put, "again", "v", value})
    assert {:ok, ^value} = session(node, {:session, :get, "again", "v"})
    assert GenServer.call({:snakepit, node}, :ping) == :pong
    Redis.stop(restarted)
  end

  defp outcome(:ok), do: :ok
  defp outcome({:ok, _}), do: :ok
  defp outcome({:error, %{kind: kind}}), do: kind
  defp outcome(other), do: other

  # Puts `value` until the deadline. After Redis restarts empty, the session is created again.
  defp write_until(node, name, value, stop_at, acc) do
    if System.monotonic_time(:millisecond) >= stop_at do
      acc
    else
      {ms, result} = Pool.timed(fn -> session(node, {:session, :put, "load", name, value}) end)

      if match?({:error, %{kind: :session_not_found}}, result) do
        session(node, {:session, :create, "load", [owner: nil]})
      end

      if match?({:error, _}, result), do: Process.sleep(50)
      write_until(node, name, value, stop_at, [{ms, result} | acc])
    end
  end
end

defmodule Snakepit.Test.SessionOwnerTest do
  use ExUnit.Case, async: false
  alias Snakepit.Test.{OsProcess, Peer, Pool}

  @grace_ms 800

  test "sessions of a node that stays down are deleted after the grace period" do
    ini = Pool.pool_ini([size: 1], "[store]\nsession_owner_grace_ms = #{@grace_ms}\n")
    daemon = Pool.start_daemon!(ini)
    node = daemon.node
    script = Path.expand("support/pool_peer.exs", __DIR__)

    {peer, peer_node} =
      Peer.start!("sessions", [Atom.to_string(node), "owned", "unowned"], script: script)

    assert {:ok, _} = OsProcess.await_line(peer, ~r/^CREATED/, 20_000)

    assert {:ok, %{owner: ^peer_node}} =
             GenServer.call({:snakepit, node}, {:session, :get, "owned"})

    assert {:ok, %{owner: nil}} = GenServer.call({:snakepit, node}, {:session, :get, "unowned"})
    assert {:ok, _} = OsProcess.await_exit(peer, 10_000)
    down_at = System.monotonic_time(:millisecond)

    # Within the grace period the session stays.
    assert {:ok, _} = GenServer.call({:snakepit, node}, {:session, :get, "owned"})

    assert Pool.wait_until(
             fn ->
               match?(
                 {:error, %{kind: :session_not_found}},
                 GenServer.call({:snakepit, node}, {:session, :get, "owned"})
               )
             end,
             @grace_ms + 3000
           )

    assert System.monotonic_time(:millisecond) - down_at >= @grace_ms - 100
    assert {:ok, _} = GenServer.call({:snakepit, node}, {:session, :get, "unowned"})
  end

  test "an owner back within the grace period keeps its sessions" do
    grace_ms = 3000
    ini = Pool.pool_ini([size: 1], "[store]\nsession_owner_grace_ms = #{grace_ms}\n")
    daemon = Pool.start_daemon!(ini)
    node = daemon.node
    script = Path.expand("support/pool_peer.exs", __DIR__)
    name = Snakepit.Test.Daemon.unique_name("owner")
    args = [Atom.to_string(node), "owned", "unowned"]
    {first, peer_node} = Peer.start!("sessions", args, script: script, name: name)
    assert {:ok, _} = OsProcess.await_line(first, ~r/^CREATED/, 20_000)
    assert {:ok, _} = OsProcess.await_exit(first, 10_000)
    down_at = System.monotonic_time(:millisecond)

    {second, ^peer_node} =
      Peer.start!("connect", [Atom.to_string(node)], script: script, name: name)

    assert {:ok, _} = OsProcess.await_line(second, ~r/^CONNECTED pong/, 20_000)
    assert System.monotonic_time(:millisecond) - down_at < grace_ms
    Process.sleep(grace_ms + 500)

    assert {:ok, %{owner: ^peer_node}} =
             GenServer.call({:snakepit, node}, {:session, :get, "owned"})
  end
end

