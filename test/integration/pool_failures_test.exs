# SPDX-License-Identifier: Apache-2.0
#
# Failures of Python calls and of worker processes: exceptions, exits, signals, timeouts, full
# queues, commands outside the allowlist, and one answer per call while workers are killed and
# stopped under load.

defmodule Snakepit.Test.PoolExceptionsTest do
  use ExUnit.Case, async: false
  alias Snakepit.Test.Pool

  # One worker, so that "the same worker" is the same pid.
  setup_all do
    daemon = Pool.start_daemon!(Pool.pool_ini(size: 1))
    %{daemon: daemon, node: daemon.node}
  end

  # Each exception is a structured error, and the worker goes on.
  @cases [
    {"raise_type_error", "builtins.TypeError", ~r/^bad$/},
    {"raise_key_error", "builtins.KeyError", ~r/'k'/},
    {"raise_system_exit", "builtins.SystemExit", ~r/3/},
    {"raise_keyboard_interrupt", "builtins.KeyboardInterrupt", ~r/^$|KeyboardInterrupt/},
    {"recurse", "builtins.RecursionError", ~r/recursion/}
  ]

  for {function, type, message} <- @cases do
    test "#{function} gives a structured error on the same worker", %{node: node} do
      assert {:ok, pid} = Pool.fixture(node, "pid", [])
      assert {:error, error} = Pool.fixture(node, unquote(function), [])
      assert %{kind: :python_exception, retryable: false} = error
      assert error.type == unquote(type)
      assert error.message =~ unquote(Macro.escape(message))
      assert [_ | _] = error.traceback
      assert Enum.all?(error.traceback, &is_binary/1)
      assert Enum.any?(error.traceback, &(&1 =~ "pool_fixtures.py"))
      assert {:ok, ^pid} = Pool.fixture(node, "pid", [])
    end
  end
end

defmodule Snakepit.Test.PoolCrashTest do
  use ExUnit.Case, async: false
  alias Snakepit.Test.{Daemon, Pool, ProcTree}

  setup do
    ini =
      Pool.pool_ini(size: 1, kill_grace_ms: 200, heartbeat_interval_ms: 100, heartbeat_misses: 3)

    daemon = Pool.start_daemon!(ini)
    %{daemon: daemon, node: daemon.node}
  end

  defp assert_replaced(daemon, node, old_pid) do
    Process.sleep(1000)
    assert ProcTree.zombie_children(Daemon.os_pid(daemon)) == []
    refute ProcTree.alive?(old_pid)
    assert {:ok, new_pid} = Pool.fixture(node, "pid", [], [], 10_000)
    assert new_pid != old_pid
    assert Pool.worker_pids(daemon) == [new_pid]
  end

  defp subscribe_worker_events(node) do
    events = [[:snakepit, :worker, :crashed], [:snakepit, :worker, :restarted]]
    assert :ok = GenServer.call({:snakepit, node}, {:subscribe, self(), events})
  end

  test "os._exit(3) reports exit status 3", %{daemon: daemon, node: node} do
    subscribe_worker_events(node)
    assert {:ok, pid} = Pool.fixture(node, "pid", [])
    assert {:error, error} = Pool.fixture(node, "exit_now", [3])
    assert %{kind: :worker_crashed, message: message} = error
    assert message =~ "exited with status 3"
    assert message =~ "pid #{pid}"

    assert_receive {:snakepit_telemetry, [:snakepit, :worker, :crashed], _,
                    %{os_pid: ^pid, exit_status: 3}},
                   2000

    assert_receive {:snakepit_telemetry, [:snakepit, :worker, :restarted], _, _}, 2000
    assert_replaced(daemon, node, pid)
  end

  test "SIGKILL reports signal 9", %{daemon: daemon, node: node} do
    subscribe_worker_events(node)
    assert {:ok, pid} = Pool.fixture(node, "pid", [])
    task = Task.async(fn -> Pool.fixture(node, "sleep", [10]) end)
    Process.sleep(300)
    {_, 0} = System.cmd("kill", ["-KILL", Integer.to_string(pid)])
    assert {:error, error} = Task.await(task, 5000)
    assert %{kind: :worker_crashed, message: message} = error
    assert message =~ "signal 9"

    assert_receive {:snakepit_telemetry, [:snakepit, :worker, :crashed], _,
                    %{os_pid: ^pid, signal: 9}},
                   2000

    assert_receive {:snakepit_telemetry, [:snakepit, :worker, :restarted], _, _}, 2000
    assert_replaced(daemon, node, pid)
  end

  test "SIGSTOP is caught by missed heartbeats", %{daemon: daemon, node: node} do
    assert {:ok, pid} = Pool.fixture(node, "pid", [])
    task = Task.async(fn -> Pool.timed(fn -> Pool.fixture(node, "sleep", [10]) end) end)
    Process.sleep(200)
    {_, 0} = System.cmd("kill", ["-STOP", Integer.to_string(pid)])
    {ms, result} = Task.await(task, 5000)
    assert {:error, %{kind: :worker_crashed, message: message}} = result
    assert message =~ "signal 9"
    assert ms < 1500
    assert Enum.any?(Daemon.lines(daemon), &(&1 =~ "stopped answering heartbeats"))
    assert_replaced(daemon, node, pid)
  end
end

defmodule Snakepit.Test.PoolTimeoutTest do
  use ExUnit.Case, async: false
  alias Snakepit.Test.Pool

  setup do
    ini = Pool.pool_ini(size: 2, max_queue: 20, queue_timeout_ms: 5000, kill_grace_ms: 300)
    daemon = Pool.start_daemon!(ini)
    %{daemon: daemon, node: daemon.node}
  end

  test "ten 5 s sleeps with a 1 s timeout on two workers", %{node: node} do
    tasks =
      for _ <- 1..10 do
        Task.async(fn ->
          Pool.timed(fn -> Pool.fixture(node, "sleep", [5], [timeout: 1000], 10_000) end)
        end)
      end

    for {ms, result} <- Enum.map(tasks, &Task.await(&1, 15_000)) do
      assert {:error, %{kind: :timeout, retryable: true}} = result
      assert ms >= 950
      assert ms < 1500
    end

    {ping_ms, :pong} = Pool.timed(fn -> GenServer.call({:snakepit, node}, :ping) end)
    assert ping_ms < 100
    {call_ms, {:ok, :next}} = Pool.timed(fn -> Pool.fixture(node, "echo", [:next]) end)
    assert call_ms < 100
  end

  test "the daemon's timeout comes before the caller's", %{node: node} do
    {ms, result} = Pool.timed(fn -> Pool.fixture(node, "sleep", [3], [timeout: 500], 5000) end)

    assert {:error, %{kind: :timeout, message: message}} = result
    assert message =~ "500 ms"
    assert ms >= 480
    assert ms < 1000

    # A margin of 200 ms is enough: the error arrives, not the caller's own exit.
    {ms, result} = Pool.timed(fn -> Pool.fixture(node, "sleep", [3], [timeout: 1000], 1200) end)

    assert {:error, %{kind: :timeout}} = result
    assert ms < 1200
  end

  test "a call that ignores SIGINT is killed after the grace period", %{daemon: daemon} do
    node = daemon.node

    {ms, result} =
      Pool.timed(fn ->
        Pool.fixture(node, "sleep_through_interrupts", [5], [timeout: 300], 5000)
      end)

    assert {:error, %{kind: :timeout}} = result
    assert ms < 800

    assert Pool.wait_until(fn ->
             Enum.any?(
               Snakepit.Test.Daemon.lines(daemon),
               &(&1 =~ "did not stop after its call timed out")
             )
           end)

    assert {:ok, :after} = Pool.fixture(node, "echo", [:after], [], 10_000)
  end
end

defmodule Snakepit.Test.PoolQueueTest do
  use ExUnit.Case, async: false
  alias Snakepit.Test.Pool

  @max_queue 3

  setup do
    ini = Pool.pool_ini(size: 1, max_queue: @max_queue, queue_timeout_ms: 400)
    daemon = Pool.start_daemon!(ini)
    %{daemon: daemon, node: daemon.node}
  end

  defp sleep_request(seconds, timeout \\ 10_000) do
    {:execute, "python.pool_fixtures.sleep", [seconds, :slept], [timeout: timeout]}
  end

  test "overloaded at max_queue + 1", %{node: node} do
    busy = Pool.send_call(node, sleep_request(1))
    Process.sleep(100)
    queued = for _ <- 1..@max_queue, do: Pool.send_call(node, sleep_request(0))

    {ms, over} =
      Pool.timed(fn -> Pool.await_reply(Pool.send_call(node, sleep_request(0)), 2000) end)

    assert {:error, %{kind: :overloaded, retryable: true, message: message}} = over
    assert message =~ "max_queue = #{@max_queue}"
    assert ms < 100
    assert {:ok, :slept} = Pool.await_reply(busy, 5000)
    # The queued calls waited past their queue timeout of 400 ms.
    for tag <- queued do
      assert {:error, %{kind: :queue_timeout, retryable: true}} = Pool.await_reply(tag, 5000)
    end
  end

  test "queued calls run when the worker frees in time", %{node: node} do
    busy = Pool.send_call(node, sleep_request(0.2))
    queued = for _ <- 1..@max_queue, do: Pool.send_call(node, sleep_request(0))
    assert {:ok, :slept} = Pool.await_reply(busy, 5000)
    for tag <- queued, do: assert({:ok, :slept} = Pool.await_reply(tag, 5000))
  end

  test "queue_timeout after queue_timeout_ms", %{node: node} do
    busy = Pool.send_call(node, sleep_request(2))
    Process.sleep(50)

    {ms, result} =
      Pool.timed(fn -> Pool.await_reply(Pool.send_call(node, sleep_request(0)), 5000) end)

    assert {:error, %{kind: :queue_timeout, retryable: true, message: message}} = result
    assert message =~ "400 ms"
    assert ms >= 380
    assert ms < 700
    assert {:ok, :slept} = Pool.await_reply(busy, 5000)
  end
end

defmodule Snakepit.Test.PoolAllowlistTest do
  use ExUnit.Case, async: false
  alias Snakepit.Test.Pool

  setup do
    dir = Path.join(System.tmp_dir!(), "snakepit-marker-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf(dir) end)

    ini =
      Pool.pool_ini([size: 1], """
      [pool other]
      size = 1

      [library unlisted]
      module = pool_unlisted
      pool = other
      """)

    daemon = Pool.start_daemon!(ini, env: [{"SNAKEPIT_TEST_MARKER_DIR", dir}])
    %{daemon: daemon, node: daemon.node, dir: dir}
  end

  test "not_allowed runs nothing", %{node: node, dir: dir} do
    target = Path.join(dir, "touched")

    for command <- [
          "python.pool_unlisted.touch",
          "python.os.system",
          "python.pool_fixtures_x.echo",
          "python.pool_fixtures",
          "python.pool_fixtures."
        ] do
      assert {:error, error} = Pool.execute(node, command, [target])
      assert %{kind: :not_allowed, retryable: false, message: message} = error
      assert message =~ command
    end

    refute File.exists?(target)
    refute File.exists?(Path.join(dir, "imported"))

    # The same call on the pool that allows the module has the side effect.
    assert {:ok, ^target} =
             Pool.execute(node, "python.pool_unlisted.touch", [target], pool: "other")

    assert File.exists?(target)
    assert File.exists?(Path.join(dir, "imported"))
  end
end

defmodule Snakepit.Test.PoolNumpyTest do
  use ExUnit.Case, async: false
  alias Snakepit.Test.Pool

  test "1000 x 1000 matmul in a worker forked after preloading numpy" do
    daemon = Pool.start_daemon!(Pool.pool_ini(size: 1, preload: "numpy"))
    node = daemon.node
    assert {:ok, true} = Pool.fixture(node, "is_imported", ["numpy"])

    {ms, result} = Pool.timed(fn -> Pool.fixture(node, "matmul_seconds", [1000], [], 10_000) end)
    assert {:ok, [seconds, 1000, true]} = result
    assert seconds < 2.0
    assert ms < 2000
  end
end

defmodule Snakepit.Test.PoolChaosTest do
  use ExUnit.Case, async: false
  alias Snakepit.Test.{Daemon, Pool, ProcTree}

  @callers 8
  @duration_ms 4000

  test "every call gets one answer while workers are killed and stopped" do
    ini =
      Pool.pool_ini(
        size: 3,
        heartbeat_interval_ms: 100,
        heartbeat_misses: 3,
        kill_grace_ms: 200,
        queue_timeout_ms: 5000,
        request_timeout_ms: 5000
      )

    daemon = Pool.start_daemon!(ini)
    node = daemon.node

    deadline = System.monotonic_time(:millisecond) + @duration_ms
    callers = for _ <- 1..@callers, do: Task.async(fn -> call_until(node, deadline, []) end)
    signals = chaos(daemon, deadline, [])
    release_stopped(signals)

    results = Enum.flat_map(callers, &Task.await(&1, 60_000))

    assert :no_reply not in results
    kinds = results |> Enum.map(&kind/1) |> Enum.frequencies()
    assert Map.keys(kinds) -- [:ok, :worker_crashed] == [], inspect(kinds)
    assert kinds[:ok] > 20
    assert kinds[:worker_crashed] >= 1
    assert Enum.any?(signals, &match?({"KILL", _}, &1))
    assert Enum.any?(signals, &match?({"STOP", _}, &1))
    assert Enum.any?(Daemon.lines(daemon), &(&1 =~ "stopped answering heartbeats"))

    # The pool recovers: a call succeeds and no child is left a zombie.
    assert {:ok, :after} = Pool.fixture(node, "echo", [:after], [], 30_000)
    Process.sleep(1000)
    assert ProcTree.zombie_children(Daemon.os_pid(daemon)) == []
  end

  defp kind({:ok, _}), do: :ok
  defp kind({:error, %{kind: kind}}), do: kind
  defp kind(other), do: other

  # Calls until the deadline; each must get exactly one reply, so a second one fails the test.
  defp call_until(node, deadline, acc) do
    if System.monotonic_time(:millisecond) >= deadline do
      receive do
        {tag, reply} when is_reference(tag) -> [{:second_reply, reply} | acc]
      after
        500 -> acc
      end
    else
      tag = Pool.send_call(node, {:execute, "python.pool_fixtures.pid_after", [0.05], []})
      call_until(node, deadline, [Pool.await_reply(tag, 15_000) | acc])
    end
  end

  # Every 400 ms, SIGKILL or SIGSTOP (in turn) one worker of the daemon. Returns [{signal, pid}].
  defp chaos(daemon, deadline, signals) do
    Process.sleep(400)

    if System.monotonic_time(:millisecond) >= deadline - 400 do
      signals
    else
      signal = if rem(length(signals), 2) == 0, do: "KILL", else: "STOP"

      case Pool.worker_pids(daemon) |> Enum.filter(&ProcTree.alive?/1) do
        [] ->
          chaos(daemon, deadline, signals)

        pids ->
          pid = Enum.random(pids)
          System.cmd("kill", ["-#{signal}", Integer.to_string(pid)], stderr_to_stdout: true)
          chaos(daemon, deadline, [{signal, pid} | signals])
      end
    end
  end

  # A stopped worker that the daemon failed to kill would stay behind: kill it here.
  defp release_stopped(signals) do
    Process.sleep(1000)

    for {"STOP", pid} <- signals, ProcTree.alive?(pid) do
      System.cmd("kill", ["-KILL", Integer.to_string(pid)], stderr_to_stdout: true)
      flunk("worker #{pid} was stopped with SIGSTOP and still runs 1 s later")
    end
  end
end

defmodule Snakepit.Test.PoolOutputLimitTest do
  use ExUnit.Case, async: false
  alias Snakepit.Test.{OsProcess, Peer, Pool}

  # A caller node that stops reading while 4 MB replies keep coming: the reply that passes
  # max_output_bytes makes the daemon drop that connection, and the node-down that follows
  # cancels the node's other calls. The daemon must stay up for everyone else. When the close
  # ran inside the reply's send, the caller was freed twice and glibc aborted the daemon.
  test "replies past max_output_bytes drop that node, not the daemon" do
    ini = "[node]\nmax_output_bytes = 16777216\n\n" <> Pool.pool_ini(size: 4)
    daemon = Pool.start_daemon!(ini)
    node = daemon.node
    script = Path.expand("support/pool_peer.exs", __DIR__)
    {peer, _peer_node} = Peer.start!("blobs", [Atom.to_string(node)], script: script)
    assert {:ok, _} = OsProcess.await_line(peer, ~r/^CALLING$/, 20_000)

    OsProcess.signal(peer, "STOP")

    assert {:ok, _} =
             OsProcess.await_line(daemon.proc, ~r/its output queue would pass 16777216/, 20_000)

    OsProcess.signal(peer, "KILL")
    {:ok, _} = OsProcess.await_exit(peer, 5000)
    Process.sleep(200)
    assert OsProcess.exit_status(daemon.proc) == nil, "the daemon exited"
    assert :pong = GenServer.call({:snakepit, node}, :ping, 5000)
    assert {:ok, 7} = Pool.fixture(node, "echo", [7])
  end
end

defmodule Snakepit.Test.PoolForwardedCallTest do
  use ExUnit.Case, async: false
  alias Snakepit.Test.{OsProcess, Peer, Pool}

  # A call that a proxy node forwarded belongs to its caller's node: the proxy's disconnect
  # does not cancel it, and the reply still reaches the caller.
  test "a forwarded call outlives its proxy node" do
    daemon = Pool.start_daemon!(Pool.pool_ini(size: 1))
    {proxy, proxy_node} = Peer.start!("forward", [Atom.to_string(daemon.node)])
    assert {:ok, _} = OsProcess.await_line(proxy, ~r/^FORWARDING$/, 30_000)

    tag = make_ref()
    request = {:execute, "python.pool_fixtures.sleep", [1, :slept], []}
    send({:forwarder, proxy_node}, {:forward, {:"$gen_call", {self(), tag}, request}})
    Process.sleep(300)
    OsProcess.signal(proxy, "KILL")
    {:ok, _} = OsProcess.await_exit(proxy, 5000)

    assert_receive {^tag, {:ok, :slept}}, 5000
  end
end
