# SPDX-License-Identifier: Apache-2.0
#
# Session-bound calls: the affinity modes, a session whose worker is replaced after a timeout,
# and sessions bound to a worker that is recycled by its request limit.

defmodule Snakepit.Test.SessionAffinityTest do
  use ExUnit.Case, async: false
  alias Snakepit.Test.{Pool, ProcTree}

  setup do
    daemon = Pool.start_daemon!(Pool.pool_ini(size: 2, kill_grace_ms: 200))
    id = "aff-#{System.unique_integer([:positive])}"
    {:ok, _} = GenServer.call({:snakepit, daemon.node}, {:session, :create, id, []})
    # The first call binds the session to the worker that runs it.
    {:ok, bound_pid} = Pool.fixture(daemon.node, "remember", ["k", "state"], session_id: id)
    %{daemon: daemon, node: daemon.node, id: id, bound_pid: bound_pid}
  end

  # Keep the session's worker busy for `seconds` and return the task.
  defp occupy(node, id, seconds) do
    task = Task.async(fn -> Pool.fixture(node, "pid_after", [seconds], session_id: id) end)
    Process.sleep(150)
    task
  end

  test "calls stay on the session's worker", %{node: node, id: id, bound_pid: pid} do
    for _ <- 1..5 do
      assert {:ok, [^pid, "state"]} = Pool.fixture(node, "recall", ["k"], session_id: id)
    end

    assert {:ok, %{worker_id: worker_id}} =
             GenServer.call({:snakepit, node}, {:session, :get, id})

    assert is_integer(worker_id)
  end

  test "strict_fail_fast gives worker_busy", %{node: node, id: id, bound_pid: pid} do
    busy = occupy(node, id, 1)

    {ms, result} =
      Pool.timed(fn ->
        Pool.fixture(node, "recall", ["k"], session_id: id, affinity: :strict_fail_fast)
      end)

    assert {:error, %{kind: :worker_busy, retryable: true}} = result
    assert ms < 100
    assert {:ok, ^pid} = Task.await(busy, 5000)

    assert {:ok, [^pid, "state"]} =
             Pool.fixture(node, "recall", ["k"], session_id: id, affinity: :strict_fail_fast)
  end

  test "strict_queue waits for the session's worker", %{node: node, id: id, bound_pid: pid} do
    busy = occupy(node, id, 1)

    {ms, result} =
      Pool.timed(fn ->
        Pool.fixture(node, "recall", ["k"], session_id: id, affinity: :strict_queue)
      end)

    assert {:ok, [^pid, "state"]} = result
    assert ms >= 600
    assert {:ok, ^pid} = Task.await(busy, 5000)
  end

  test "hint goes to another worker", %{node: node, id: id, bound_pid: pid} do
    busy = occupy(node, id, 1)

    {ms, result} =
      Pool.timed(fn -> Pool.fixture(node, "recall", ["k"], session_id: id, affinity: :hint) end)

    assert {:ok, [other, nil]} = result
    assert other != pid
    assert ms < 500
    assert {:ok, ^pid} = Task.await(busy, 5000)
  end

  test "session worker replaced after a timeout", %{
    daemon: daemon,
    node: node,
    id: id,
    bound_pid: pid
  } do
    assert {:error, %{kind: :timeout}} =
             Pool.fixture(node, "sleep_through_interrupts", [5], session_id: id, timeout: 300)

    assert Pool.wait_until(fn -> not ProcTree.alive?(pid) end, 3000)

    assert {:error, error} = Pool.fixture(node, "recall", ["k"], session_id: id)
    assert %{kind: :session_worker_unavailable, message: message} = error
    assert message =~ id
    assert message =~ "lost"

    assert {:ok, [fresh, nil]} = Pool.fixture(node, "recall", ["k"], session_id: id)
    assert fresh != pid
    assert fresh in Pool.worker_pids(daemon)
    assert {:ok, [^fresh, nil]} = Pool.fixture(node, "recall", ["k"], session_id: id)
  end

  test "strict_queue call held for a worker that dies", %{node: node, id: id, bound_pid: pid} do
    timed_out =
      Task.async(fn ->
        Pool.fixture(node, "sleep_through_interrupts", [5], session_id: id, timeout: 300)
      end)

    Process.sleep(100)

    {ms, result} =
      Pool.timed(fn ->
        Pool.fixture(node, "recall", ["k"], session_id: id, affinity: :strict_queue)
      end)

    assert {:error, %{kind: :session_worker_unavailable}} = result
    assert ms < 2000
    assert {:error, %{kind: :timeout}} = Task.await(timed_out, 5000)
    refute ProcTree.alive?(pid)
  end

  test "unknown affinity is a bad request", %{node: node, id: id} do
    assert {:error, %{kind: :bad_request, message: message}} =
             Pool.fixture(node, "echo", [1], session_id: id, affinity: :sticky)

    assert message =~ "affinity"
    assert {:ok, 1} = Pool.fixture(node, "echo", [1], session_id: id)
  end
end

defmodule Snakepit.Test.SessionRecycleTest do
  use ExUnit.Case, async: false
  alias Snakepit.Test.Pool

  @sessions 100
  @max_requests 10

  test "100 sessions on one worker recycled by max_requests" do
    daemon = Pool.start_daemon!(Pool.pool_ini(size: 1, max_requests: @max_requests))
    node = daemon.node
    ids = for i <- 1..@sessions, do: "rec-#{i}"
    for id <- ids, do: {:ok, _} = GenServer.call({:snakepit, node}, {:session, :create, id, []})

    # Every call is in flight at once. The one worker serves max_requests calls and is replaced.
    tags =
      for id <- ids,
          do:
            Pool.send_call(
              node,
              {:execute, "python.pool_fixtures.pid_after", [0.01], [session_id: id]}
            )

    results = Enum.map(tags, &Pool.await_reply(&1, 60_000))

    for result <- results,
        do: assert(match?({:ok, pid} when is_integer(pid), result), inspect(result))

    calls_per_worker = results |> Enum.map(fn {:ok, pid} -> pid end) |> Enum.frequencies()
    assert map_size(calls_per_worker) == div(@sessions, @max_requests)
    assert Enum.all?(Map.values(calls_per_worker), &(&1 == @max_requests))

    # Each session's worker is gone now: one report of the lost state, then a fresh worker.
    second = for id <- ids, do: Pool.fixture(node, "pid", [], session_id: id)
    assert Enum.all?(second, &match?({:error, %{kind: :session_worker_unavailable}}, &1))
    third = for id <- Enum.take(ids, 5), do: Pool.fixture(node, "pid", [], session_id: id)
    assert Enum.all?(third, &match?({:ok, _}, &1))
  end
end

