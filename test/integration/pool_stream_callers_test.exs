# SPDX-License-Identifier: Apache-2.0
#
# Streams whose caller goes away: the daemon monitors each stream's caller, cancels the stream
# when the caller exits or its node disconnects, and frees the worker long before the stream's
# 60 s timeout. Streams that end in any other way remove their monitor from the caller.

defmodule Snakepit.Test.PoolStreamCallersTest do
  use ExUnit.Case, async: false
  alias Snakepit.Test.{Obs, OsProcess, Peer, Pool}

  # One item every 100 ms for 60 s, with a timeout of 60 s.
  @tick {:execute_stream, "python.pool_fixtures.tick", [600, 0.1], [timeout: 60_000]}

  setup_all do
    {daemon, http} = Obs.start_daemon!(Pool.pool_ini(size: 1))
    %{daemon: daemon, node: daemon.node, http: http}
  end

  # The daemon's pids among the processes that monitor `pid`.
  defp daemon_monitors(pid, node) do
    {:monitored_by, monitors} = Process.info(pid, :monitored_by)
    Enum.filter(monitors, &(is_pid(&1) and node(&1) == node))
  end

  # A process that opens the tick stream, reports its first chunk, and then waits for `:exit`.
  defp start_caller(node) do
    parent = self()

    caller =
      spawn(fn ->
        {:ok, ref} = GenServer.call({:snakepit, node}, @tick)

        receive do
          {:snakepit_stream, ^ref, {:chunk, 0}} -> send(parent, {:streaming, self()})
        end

        receive do
          :exit -> :ok
        end
      end)

    assert_receive {:streaming, ^caller}, 10_000
    caller
  end

  # Milliseconds until the pool's one worker serves the next call.
  defp next_call_ms(node) do
    {ms, result} = Pool.timed(fn -> Pool.fixture(node, "echo", [:next], timeout: 5000) end)
    assert result == {:ok, :next}
    ms
  end

  defp cancelled_lines(daemon, cause) do
    Obs.log_lines(
      daemon,
      ~r/cancelled stream \d+ \(python\.pool_fixtures\.tick, .*because #{cause}/
    )
  end

  # Wait for one more log line of a cancelled stream than `before` had.
  defp assert_cancel_logged(daemon, cause, before) do
    assert Pool.wait_until(fn -> length(cancelled_lines(daemon, cause)) > length(before) end),
           "no new log line of a stream cancelled because #{cause}"
  end

  defp cancelled_count(http) do
    Obs.sample_sum(Obs.scrape(http), "snakepit_requests_total",
      command: "python.pool_fixtures.tick",
      status: "cancelled"
    )
  end

  test "caller that exits normally frees the worker", %{daemon: daemon, node: node, http: http} do
    before = cancelled_count(http)
    logged = cancelled_lines(daemon, "its caller exited with reason normal")
    caller = start_caller(node)
    assert [_] = daemon_monitors(caller, node)
    monitor = Process.monitor(caller)
    send(caller, :exit)
    assert_receive {:DOWN, ^monitor, :process, ^caller, :normal}

    assert next_call_ms(node) < 1000
    assert_cancel_logged(daemon, "its caller exited with reason normal", logged)
    assert cancelled_count(http) == before + 1
  end

  test "caller killed mid-stream frees the worker", %{daemon: daemon, node: node} do
    logged = cancelled_lines(daemon, "its caller exited with reason killed")
    caller = start_caller(node)
    Process.exit(caller, :kill)

    assert next_call_ms(node) < 1000
    assert_cancel_logged(daemon, "its caller exited with reason killed", logged)
  end

  test "caller node that disconnects frees the worker", %{daemon: daemon, node: node} do
    script = Path.expand("support/pool_peer.exs", __DIR__)
    {peer, peer_node} = Peer.start!("stream", [Atom.to_string(node)], script: script)
    assert {:ok, _} = OsProcess.await_line(peer, ~r/^STREAMING$/, 20_000)

    # SIGKILL closes the peer's sockets at once, with no orderly goodbye.
    OsProcess.signal(peer, "KILL")
    {:ok, _} = OsProcess.await_exit(peer, 5000)

    assert next_call_ms(node) < 1000
    cause = "the node of its caller, #{Regex.escape(Atom.to_string(peer_node))}, disconnected"
    assert_cancel_logged(daemon, cause, [])
  end

  test "caller dead before the request arrives", %{daemon: daemon, node: node} do
    logged = cancelled_lines(daemon, "its caller exited with reason noproc")
    {caller, monitor} = spawn_monitor(fn -> Pool.send_call(node, @tick) end)
    assert_receive {:DOWN, ^monitor, :process, ^caller, :normal}, 1000

    assert next_call_ms(node) < 1000
    assert_cancel_logged(daemon, "its caller exited with reason noproc", logged)
  end

  test "queued stream of a caller that exits is dropped", %{daemon: daemon, node: node} do
    logged = cancelled_lines(daemon, "its caller exited with reason normal")
    busy = Pool.send_call(node, {:execute, "python.pool_fixtures.sleep", [1, :slept], []})
    parent = self()

    {caller, monitor} =
      spawn_monitor(fn ->
        {:ok, _ref} = GenServer.call({:snakepit, node}, @tick)
        # Exit only once the monitor is set, else its exit reason is noproc.
        Pool.wait_until(fn -> daemon_monitors(self(), node) != [] end)
        send(parent, :queued)
      end)

    assert_receive :queued, 5000
    assert_receive {:DOWN, ^monitor, :process, ^caller, :normal}, 1000
    assert Pool.await_reply(busy, 5000) == {:ok, :slept}

    # The stream left the queue with its caller, so this call runs as soon as the sleep ends.
    assert next_call_ms(node) < 1000
    assert_cancel_logged(daemon, "its caller exited with reason normal", logged)
  end

  test "monitor of the registered name stays quiet", %{node: node} do
    # The handshake advertises named monitors, so this monitor lives on the daemon's side.
    monitor = Process.monitor({:snakepit, node})
    assert Pool.fixture(node, "echo", [:alive]) == {:ok, :alive}
    refute_receive {:DOWN, ^monitor, _, _, _}, 300
    Process.demonitor(monitor)
  end

  test "stream that ends normally leaves no monitor", %{node: node} do
    assert {:ok, chunks, {:done, 5}} = Pool.stream(node, "python.pool_fixtures.count", [5])
    assert chunks == [0, 1, 2, 3, 4]
    assert Pool.wait_until(fn -> daemon_monitors(self(), node) == [] end, 1000)
  end

  test "stream with a Python error leaves no monitor", %{node: node} do
    assert {:ok, _, {:error, %{kind: :python_exception}}} =
             Pool.stream(node, "python.pool_fixtures.fail_after", [3])

    assert Pool.wait_until(fn -> daemon_monitors(self(), node) == [] end, 1000)
  end

  test "stream past its deadline leaves no monitor", %{node: node} do
    {:ok, ref} =
      GenServer.call(
        {:snakepit, node},
        {:execute_stream, "python.pool_fixtures.tick", [600, 0.1], [timeout: 500]}
      )

    assert_receive {:snakepit_stream, ^ref, {:chunk, 0}}, 5000
    assert [_] = daemon_monitors(self(), node)
    assert_receive {:snakepit_stream, ^ref, {:error, %{kind: :timeout}}}, 5000
    assert Pool.wait_until(fn -> daemon_monitors(self(), node) == [] end, 1000)
    # The worker stopped at the interrupt and serves the next call.
    assert next_call_ms(node) < 1000
  end
end
