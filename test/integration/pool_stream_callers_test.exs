# SPDX-License-Identifier: Apache-2.0
#
# Streams whose caller goes away. While a stream is open, the daemon queries the caller's node
# every second whether the caller is alive (erlang:is_process_alive/1 through rex). It cancels
# the stream when the caller exited or its node disconnects, and frees the worker long before the
# stream's 60 s timeout. The daemon neither monitors nor links the caller, and probes stop with the stream.
# The daemon runs at debug level, where it logs every probe it sends and every reply it gets.

defmodule Snakepit.Test.PoolStreamCallersTest do
  use ExUnit.Case, async: false
  alias Snakepit.Test.{Obs, OsProcess, Peer, Pool}

  # One item every 100 ms for 60 s, with a timeout of 60 s.
  @tick {:execute_stream, "python.pool_fixtures.tick", [600, 0.1], [timeout: 60_000]}

  setup_all do
    {daemon, http} = Obs.start_daemon!(Pool.pool_ini(size: 1), args: ["--log-level", "debug"])
    %{daemon: daemon, node: daemon.node, http: http}
  end

  # The daemon's pids among the processes that monitor or link `pid`.
  defp daemon_watchers(pid, node) do
    {:monitored_by, monitors} = Process.info(pid, :monitored_by)
    {:links, links} = Process.info(pid, :links)
    Enum.filter(monitors ++ links, &(is_pid(&1) and node(&1) == node))
  end

  defp probes_sent(daemon),
    do: length(Obs.log_lines(daemon, ~r/sent probe \d+ of the caller of stream \d+/))

  defp probe_replies(daemon), do: length(Obs.log_lines(daemon, ~r/Received a probe reply/))

  # Open a short stream while tracing what this node's rex receives, and return the daemon's pid
  # from the first probe, which must be rex's {call, M, F, A, GroupLeader} request.
  defp probe_request(node) do
    rex = Process.whereis(:rex)
    :erlang.trace(rex, true, [:receive])
    assert {:ok, _, {:done, 1}} = Pool.stream(node, "python.pool_fixtures.count", [1])
    me = self()

    receive do
      {:trace, ^rex, :receive, {:"$gen_call", {from, tag}, request}} when node(from) == node ->
        :erlang.trace(rex, false, [:receive])
        assert is_reference(tag)
        assert request == {:call, :erlang, :is_process_alive, [me], :user}
        from
    after
      2000 ->
        :erlang.trace(rex, false, [:receive])
        flunk("rex received no probe from the daemon")
    end
  end

  # Once no stream is open: every probe got its reply, and no probe goes out for 1.5 s, longer
  # than the probe interval.
  defp assert_probes_stopped(daemon) do
    assert Pool.wait_until(fn -> probe_replies(daemon) == probes_sent(daemon) end, 2000),
           "#{probes_sent(daemon)} probes sent, #{probe_replies(daemon)} replies received"

    sent = probes_sent(daemon)
    Process.sleep(1500)
    assert probes_sent(daemon) == sent
    assert probe_replies(daemon) == sent
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

  # Milliseconds until the pool's one worker serves the next call. A caller that exits mid-stream
  # is found by the next probe, at most 1 s later, and the worker then stops at its interrupt:
  # the tests allow 2 s for both.
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
    logged = cancelled_lines(daemon, "its caller exited")
    caller = start_caller(node)
    assert daemon_watchers(caller, node) == []
    monitor = Process.monitor(caller)
    send(caller, :exit)
    assert_receive {:DOWN, ^monitor, :process, ^caller, :normal}

    assert next_call_ms(node) < 2000
    assert_cancel_logged(daemon, "its caller exited", logged)
    assert cancelled_count(http) == before + 1
    assert_probes_stopped(daemon)
  end

  test "caller killed mid-stream frees the worker", %{daemon: daemon, node: node} do
    logged = cancelled_lines(daemon, "its caller exited")
    caller = start_caller(node)
    Process.exit(caller, :kill)

    assert next_call_ms(node) < 2000
    assert_cancel_logged(daemon, "its caller exited", logged)
    assert_probes_stopped(daemon)
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
    logged = cancelled_lines(daemon, "its caller exited")
    {caller, monitor} = spawn_monitor(fn -> Pool.send_call(node, @tick) end)
    assert_receive {:DOWN, ^monitor, :process, ^caller, :normal}, 1000

    # The first probe goes out when the stream opens, so no probe interval passes here.
    assert next_call_ms(node) < 1000
    assert_cancel_logged(daemon, "its caller exited", logged)
  end

  test "queued stream of a caller that exits is dropped", %{daemon: daemon, node: node} do
    logged = cancelled_lines(daemon, "its caller exited")
    busy = Pool.send_call(node, {:execute, "python.pool_fixtures.sleep", [3, :slept], []})

    {caller, monitor} =
      spawn_monitor(fn -> {:ok, _ref} = GenServer.call({:snakepit, node}, @tick) end)

    assert_receive {:DOWN, ^monitor, :process, ^caller, :normal}, 1000
    # A probe within about 1 s finds the caller gone while the stream waits behind the sleep.
    assert_cancel_logged(daemon, "its caller exited", logged)
    refute_received {^busy, _}
    assert Pool.await_reply(busy, 5000) == {:ok, :slept}

    # The stream left the queue with its caller, so this call runs as soon as the sleep ends.
    assert next_call_ms(node) < 1000
  end

  test "probe is a call of rex", %{node: node} do
    daemon_pid = probe_request(node)
    assert node(daemon_pid) == node
  end

  test "plain calls send no monitor messages", %{daemon: daemon, node: node} do
    ignored = fn ->
      length(Obs.log_lines(daemon, ~r/Ignored a control message with operation/))
    end

    daemon_pid = probe_request(node)
    assert_probes_stopped(daemon)
    before = ignored.()
    sent = probes_sent(daemon)

    for _ <- 1..200 do
      assert GenServer.call({:snakepit, node}, :ping) == :pong
    end

    assert Pool.fixture(node, "echo", [:alive]) == {:ok, :alive}
    # Only streams are probed, and a call's monitor of the registered name stays on this node.
    assert ignored.() == before
    assert probes_sent(daemon) == sent

    # The log line does count control messages: a link to the daemon's pid sends a LINK.
    Process.link(daemon_pid)
    assert Pool.wait_until(fn -> ignored.() > before end, 2000)
    Process.unlink(daemon_pid)
  end

  test "monitor of the registered name stays quiet", %{node: node} do
    # The daemon does not advertise named monitors, so this monitor lives on this node.
    monitor = Process.monitor({:snakepit, node})
    assert Pool.fixture(node, "echo", [:alive]) == {:ok, :alive}
    refute_receive {:DOWN, ^monitor, _, _, _}, 300
    Process.demonitor(monitor)
  end

  test "stream that ends normally stops its probes", %{daemon: daemon, node: node} do
    sent = probes_sent(daemon)
    assert {:ok, chunks, {:done, 5}} = Pool.stream(node, "python.pool_fixtures.count", [5])
    assert chunks == [0, 1, 2, 3, 4]
    assert probes_sent(daemon) > sent, "no probe when the stream opened"
    assert daemon_watchers(self(), node) == []
    assert_probes_stopped(daemon)
  end

  test "stream with a Python error stops its probes", %{daemon: daemon, node: node} do
    assert {:ok, _, {:error, %{kind: :python_exception}}} =
             Pool.stream(node, "python.pool_fixtures.fail_after", [3])

    assert daemon_watchers(self(), node) == []
    assert_probes_stopped(daemon)
  end

  test "stream past its deadline stops its probes", %{daemon: daemon, node: node} do
    {:ok, ref} =
      GenServer.call(
        {:snakepit, node},
        {:execute_stream, "python.pool_fixtures.tick", [600, 0.1], [timeout: 2500]}
      )

    assert_receive {:snakepit_stream, ^ref, {:chunk, 0}}, 5000
    sent = probes_sent(daemon)
    # The stream runs past one probe interval, so the probes repeat while it is open.
    assert Pool.wait_until(fn -> probes_sent(daemon) > sent end, 2000)
    assert daemon_watchers(self(), node) == []
    assert_receive {:snakepit_stream, ^ref, {:error, %{kind: :timeout}}}, 5000
    assert daemon_watchers(self(), node) == []
    assert_probes_stopped(daemon)
    # The worker stopped at the interrupt and serves the next call.
    assert next_call_ms(node) < 1000
  end
end
