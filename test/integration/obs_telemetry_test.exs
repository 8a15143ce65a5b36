# SPDX-License-Identifier: Apache-2.0
#
# Telemetry delivered to BEAM subscribers: worker crash and restart events, the request events
# and their correlation_id, unsubscribing, the subscriber limit, and subscribers whose node goes
# down.

defmodule Snakepit.Test.ObsTelemetryTest do
  use ExUnit.Case, async: false
  alias Snakepit.Test.{Daemon, Obs, OsProcess, Peer, Pool}

  defp subscribe(node, prefixes, pid \\ self()) do
    GenServer.call({:snakepit, node}, {:subscribe, pid, prefixes})
  end

  # The next telemetry message for `event`, skipping others: `{measurements, metadata}`.
  defp await_event(event, timeout \\ 5000) do
    receive do
      {:snakepit_telemetry, ^event, measurements, metadata} -> {measurements, metadata}
    after
      timeout -> flunk("no #{inspect(event)} event within #{timeout} ms")
    end
  end

  # Every telemetry message that arrives within `timeout` ms.
  defp collect_events(timeout) do
    receive do
      {:snakepit_telemetry, event, _, metadata} -> [{event, metadata} | collect_events(timeout)]
    after
      timeout -> []
    end
  end

  describe "worker events" do
    setup do
      {daemon, port} = Obs.start_daemon!(Obs.ini(2))
      # The started events of the first workers must not be mistaken for those of replacements.
      Obs.await_idle(port, 2)
      %{daemon: daemon, port: port}
    end

    test "killed worker gives crashed and restarted", %{daemon: daemon} do
      assert :ok = subscribe(daemon.node, [[:snakepit, :worker]])
      [victim | _] = Pool.worker_pids(daemon)
      {_, 0} = System.cmd("kill", ["-KILL", Integer.to_string(victim)])

      {measurements, crashed} = await_event([:snakepit, :worker, :crashed])
      assert crashed.os_pid == victim
      assert crashed.signal == 9
      assert crashed.reason == :killed
      assert crashed.pool == "default"
      refute Map.has_key?(crashed, :exit_status)
      assert is_integer(measurements.uptime_us)
      assert measurements.uptime_us > 0

      {_, started} = await_event([:snakepit, :worker, :started])
      {_, restarted} = await_event([:snakepit, :worker, :restarted])
      assert restarted.pool == "default"
      assert restarted.worker_id == started.worker_id
      assert restarted.worker_id != crashed.worker_id
      assert started.os_pid in Pool.worker_pids(daemon)
      assert started.os_pid != victim
    end

    test "restarted carries the documented fields", %{daemon: daemon} do
      # docs/telemetry.md: measurement `restarts`, metadata `previous_worker_id` and `reason`.
      assert :ok = subscribe(daemon.node, [[:snakepit, :worker]])
      [victim | _] = Pool.worker_pids(daemon)
      {_, 0} = System.cmd("kill", ["-KILL", Integer.to_string(victim)])

      {_, crashed} = await_event([:snakepit, :worker, :crashed])
      {measurements, restarted} = await_event([:snakepit, :worker, :restarted])
      assert measurements[:restarts] == 1
      assert restarted[:previous_worker_id] == crashed.worker_id
      assert restarted[:reason] == :killed
    end

    test "worker that exits gives its exit status", %{daemon: daemon} do
      assert :ok = subscribe(daemon.node, [[:snakepit, :worker, :crashed]])
      assert {:error, error} = Pool.fixture(daemon.node, "exit_now", [3])
      assert error.kind == :worker_crashed
      {_, crashed} = await_event([:snakepit, :worker, :crashed])
      assert crashed.exit_status == 3
      assert crashed.reason == :exited
      refute Map.has_key?(crashed, :signal)
      # The crash is tied to the call the worker was running.
      assert crashed[:correlation_id] == error.correlation_id
      # A subscription to crashed events gets no started or restarted events.
      assert collect_events(500) == []
    end
  end

  describe "recycling events" do
    test "recycled worker's replacement gives restarted" do
      {daemon, port} = Obs.start_daemon!(Obs.ini(1, max_requests: 1))
      Obs.await_idle(port, 1)
      assert :ok = subscribe(daemon.node, [[:snakepit, :worker]])
      assert {:ok, 3} = Pool.execute(daemon.node, "python.operator.add", [1, 2])

      {_, recycled} = await_event([:snakepit, :worker, :recycled])
      assert recycled.reason == :max_requests
      {measurements, restarted} = await_event([:snakepit, :worker, :restarted])
      assert restarted.reason == :recycled
      assert restarted.previous_worker_id == recycled.worker_id
      assert measurements.restarts == 1
    end
  end

  describe "request events" do
    setup do
      {daemon, port} = Obs.start_daemon!(Obs.ini(1))
      assert :ok = subscribe(daemon.node, [[:snakepit, :request]])
      %{daemon: daemon, port: port}
    end

    test "ok call gives start and stop with one id", %{daemon: daemon} do
      assert {:ok, 3} = Pool.execute(daemon.node, "python.operator.add", [1, 2])
      {start_m, start} = await_event([:snakepit, :request, :start])
      {stop_m, stop} = await_event([:snakepit, :request, :stop])

      assert is_binary(start.correlation_id)
      assert start.correlation_id != ""
      assert stop.correlation_id == start.correlation_id
      assert start.command == "python.operator.add"
      assert stop.command == "python.operator.add"
      assert start.pool == "default"
      assert start.caller_node == node()
      assert is_integer(start_m.system_time_us)
      assert abs(start_m.system_time_us - System.os_time(:microsecond)) < 10_000_000
      assert is_integer(stop_m.duration_us)
      assert stop_m.duration_us > 0
      assert is_integer(stop_m.queue_time_us)
      assert is_integer(stop.worker_id)
    end

    test "exception shares its id with the error reply", %{daemon: daemon} do
      assert {:error, error} = Pool.fixture(daemon.node, "raise_key_error", [])
      assert error.kind == :python_exception
      {_, start} = await_event([:snakepit, :request, :start])
      {_, exception} = await_event([:snakepit, :request, :exception])

      assert is_binary(error.correlation_id)
      assert error.correlation_id != ""
      assert start.correlation_id == error.correlation_id
      assert exception.correlation_id == error.correlation_id
      assert exception.kind == :python_exception
      assert exception.error_type =~ "KeyError"
      assert collect_events(300) == []
    end

    test "each call gets its own id", %{daemon: daemon} do
      ids =
        for i <- 1..5 do
          assert {:ok, _} = Pool.execute(daemon.node, "python.operator.add", [i, i])
          {_, start} = await_event([:snakepit, :request, :start])
          {_, stop} = await_event([:snakepit, :request, :stop])
          assert stop.correlation_id == start.correlation_id
          start.correlation_id
        end

      assert length(Enum.uniq(ids)) == 5
    end

    test "timeout gives an exception of kind timeout", %{daemon: daemon} do
      assert {:error, error} = Pool.fixture(daemon.node, "sleep", [5], timeout: 200)
      assert error.kind == :timeout
      {_, exception} = await_event([:snakepit, :request, :exception])
      assert exception.kind == :timeout
      assert exception.correlation_id == error.correlation_id
    end

    test "exception carries retryable", %{daemon: daemon} do
      # docs/telemetry.md lists `retryable` in the metadata of request.exception.
      assert {:error, error} = Pool.fixture(daemon.node, "raise_key_error", [])
      {_, exception} = await_event([:snakepit, :request, :exception])
      assert exception[:retryable] == error.retryable
    end

    test "unsubscribe stops delivery", %{daemon: daemon} do
      assert {:ok, 2} = Pool.execute(daemon.node, "python.operator.add", [1, 1])
      await_event([:snakepit, :request, :stop])
      assert :ok = GenServer.call({:snakepit, daemon.node}, {:unsubscribe, self()})
      # The start event of the call above is still in the mailbox.
      assert [{[:snakepit, :request, :start], _}] = collect_events(0)

      for i <- 1..10 do
        assert {:ok, _} = Pool.execute(daemon.node, "python.operator.add", [i, 1])
      end

      assert collect_events(500) == []
      # Unsubscribing a process that has no subscription is not an error.
      assert :ok = GenServer.call({:snakepit, daemon.node}, {:unsubscribe, self()})
    end

    test "subscribing again replaces the prefixes", %{daemon: daemon} do
      assert :ok = subscribe(daemon.node, [[:snakepit, :request, :stop]])
      assert {:ok, _} = Pool.execute(daemon.node, "python.operator.add", [1, 1])
      events = collect_events(500)
      assert [{[:snakepit, :request, :stop], _}] = events
    end
  end

  describe "rejected requests" do
    test "full queue gives queue.full then exception" do
      {daemon, port} = Obs.start_daemon!(Obs.ini(1, max_queue: 1))
      assert :ok = subscribe(daemon.node, [[:snakepit, :request], [:snakepit, :queue]])
      request = {:execute, "python.pool_fixtures.sleep", [0.5], []}
      # One call runs, one waits in the queue of length 1, and the third is rejected.
      tags = for _ <- 1..3, do: Pool.send_call(daemon.node, request)
      replies = Enum.map(tags, &Pool.await_reply(&1, 5000))
      assert [{:ok, nil}, {:ok, nil}, {:error, error}] = replies
      assert error.kind == :overloaded

      events = collect_events(500)
      rejected = for {event, md} <- events, md.correlation_id == error.correlation_id, do: event

      assert rejected == [
               [:snakepit, :request, :start],
               [:snakepit, :queue, :full],
               [:snakepit, :request, :exception]
             ]

      page = Obs.scrape(port)
      assert Obs.sample_sum(page, "snakepit_requests_total", status: "overloaded") == 1
    end

    # request_execute() replies not_allowed and bad_request itself, before a pool sees the call.
    test "not_allowed call gives no events but is counted" do
      {daemon, port} = Obs.start_daemon!(Obs.ini(1))
      assert :ok = subscribe(daemon.node, [[:snakepit]])
      assert {:error, error} = Pool.execute(daemon.node, "python.subprocess.run", [["id"]])
      assert error.kind == :not_allowed
      assert collect_events(300) == []
      page = Obs.scrape(port)
      labels = [command: "python.subprocess.run", status: "not_allowed"]
      assert Obs.sample_sum(page, "snakepit_requests_total", labels) == 1
    end
  end

  describe "subscriptions" do
    test "invalid subscriptions get bad_request" do
      {daemon, _port} = Obs.start_daemon!(Obs.ini(1))
      too_many = for i <- 1..17, do: [:snakepit, String.to_atom("p#{i}")]
      too_long = [[:a, :b, :c, :d, :e, :f, :g]]

      for prefixes <- [[["snakepit"]], too_many, too_long, :all] do
        assert {:error, %{kind: :bad_request}} = subscribe(daemon.node, prefixes),
               "prefixes #{inspect(prefixes)}"
      end

      sixteen = Enum.take(too_many, 16)
      assert :ok = subscribe(daemon.node, sixteen)
      assert :ok = subscribe(daemon.node, [[:a, :b, :c, :d, :e, :f]])

      assert {:error, %{kind: :bad_request}} =
               GenServer.call({:snakepit, daemon.node}, {:unsubscribe, :me})
    end

    test "subscribe is rejected when telemetry is off" do
      {daemon, port} = Obs.start_daemon!(Obs.ini(1) <> "\n[node]\ntelemetry = false\n")

      assert {:error, error} = subscribe(daemon.node, [[:snakepit]])
      assert error.kind == :bad_request
      assert error.message =~ "telemetry = false"
      assert {:ok, 3} = Pool.execute(daemon.node, "python.operator.add", [1, 2])

      # The event-driven metrics stay at zero, and the gauges read at scrape time still work.
      page = Obs.scrape(port)
      assert Obs.sample_sum(page, "snakepit_requests_total") == 0
      assert Obs.sample_sum(page, "snakepit_request_duration_seconds_count") == 0
      assert Obs.sample_sum(page, "snakepit_workers", state: "idle") == 1
    end

    test "subscribers of a node that goes down are removed" do
      {daemon, port} = Obs.start_daemon!(Obs.ini(1))
      # 256 subscribers is the daemon's limit, so the 257th is rejected.
      {peer, peer_node} = Peer.start!("subscribe", [Atom.to_string(daemon.node), "256"])
      assert {:ok, _} = OsProcess.await_line(peer, ~r/^SUBSCRIBED 256$/, 30_000)
      assert {:error, error} = subscribe(daemon.node, [[:snakepit]])
      assert error.kind == :overloaded
      assert error.message =~ "too many subscribers"

      assert {:ok, 3} = Pool.execute(daemon.node, "python.operator.add", [1, 2])

      assert {:ok, _} =
               OsProcess.await_line(peer, ~r/^EVENT \[:snakepit, :request, :stop\]$/, 5000)

      OsProcess.stop_process(peer)

      assert Pool.wait_until(
               fn ->
                 Enum.any?(Daemon.lines(daemon), &(&1 =~ "Node #{peer_node} disconnected"))
               end,
               10_000
             ),
             "the daemon did not log the disconnect of #{peer_node}"

      errors_before = length(Obs.log_lines(daemon, ~r/ (error|warning): /))

      for i <- 1..50 do
        assert {:ok, _} = Pool.execute(daemon.node, "python.operator.add", [i, 1])
      end

      # The 256 subscriptions of the peer are gone, so a new one fits.
      assert :ok = subscribe(daemon.node, [[:snakepit, :request, :stop]])
      assert {:ok, _} = Pool.execute(daemon.node, "python.operator.add", [0, 1])
      await_event([:snakepit, :request, :stop])

      page = Obs.scrape(port)
      assert Obs.sample_sum(page, "snakepit_telemetry_dropped_total") == 0
      errors = Enum.drop(Obs.log_lines(daemon, ~r/ (error|warning): /), errors_before)
      assert errors == []
    end
  end
end
