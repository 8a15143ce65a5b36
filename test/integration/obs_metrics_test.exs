# SPDX-License-Identifier: Apache-2.0
#
# The daemon's /metrics page after real traffic: promtool accepts it, the alerting rules and the
# dashboard find every metric they use, and a real Prometheus server counts the calls.

defmodule Snakepit.Test.ObsMetricsTest do
  use ExUnit.Case, async: false
  alias Snakepit.Test.{Obs, Pool}

  @root Path.expand("../..", __DIR__)
  @rules Path.join(@root, "deploy/prometheus/snakepit-rules.yml")
  @dashboard Path.join(@root, "deploy/grafana/snakepit-dashboard.json")

  # Ok calls, Python exceptions, timeouts and a worker killed by SIGKILL.
  defp traffic(daemon) do
    node = daemon.node

    for i <- 1..20 do
      assert {:ok, ^i} = Pool.fixture(node, "echo", [i])
    end

    for _ <- 1..5 do
      assert {:error, %{kind: :python_exception}} = Pool.fixture(node, "raise_key_error", [])
    end

    for _ <- 1..2 do
      assert {:error, %{kind: :timeout}} = Pool.fixture(node, "sleep", [5], timeout: 200)
    end

    [victim | _] = Pool.worker_pids(daemon)
    System.cmd("kill", ["-KILL", Integer.to_string(victim)])

    assert Pool.wait_until(fn -> victim not in Pool.worker_pids(daemon) end, 5000)
    assert {:ok, 3} = Pool.execute(node, "python.operator.add", [1, 2])
  end

  test "page after traffic passes promtool and has the used names" do
    {daemon, port} = Obs.start_daemon!(Obs.ini(2))
    traffic(daemon)

    # The restart after the kill is counted once the replacement is up.
    restarts =
      Pool.wait_until(
        fn ->
          page = Obs.scrape(port)
          Obs.sample_sum(page, "snakepit_worker_restarts_total") >= 1 && page
        end,
        10_000
      )

    assert restarts,
           "snakepit_worker_restarts_total did not reach 1:\n" <>
             Enum.join(Obs.log_lines(daemon, ~r/./), "\n") <> "\n" <> Obs.scrape(port)

    page = Obs.scrape(port)
    file = Path.join(System.tmp_dir!(), "snakepit-metrics-#{System.unique_integer([:positive])}")
    File.write!(file, page)

    {out, status} =
      System.cmd("sh", ["-c", "promtool check metrics < \"$0\"", file], stderr_to_stdout: true)

    File.rm!(file)
    assert status == 0, "promtool check metrics failed:\n#{out}"

    assert Obs.sample_sum(page, "snakepit_requests_total", status: "ok") == 21
    assert Obs.sample_sum(page, "snakepit_requests_total", status: "python_exception") == 5
    assert Obs.sample_sum(page, "snakepit_requests_total", status: "timeout") == 2
    # A timeout interrupts the call with SIGINT and keeps the worker, so only the kill counts.
    assert Obs.sample_sum(page, "snakepit_worker_restarts_total", reason: "killed") == 1
    assert Obs.sample_sum(page, "snakepit_worker_restarts_total") == 1

    for file <- [@rules, @dashboard] do
      names = Obs.metric_names_in(file)
      assert length(names) > 5, "found only #{inspect(names)} in #{file}"
      missing = Enum.reject(names, &Obs.exported?(page, &1))
      assert missing == [], "#{file} uses metrics the daemon does not export: #{inspect(missing)}"
    end
  end

  test "Prometheus counts the calls by command" do
    {daemon, port} = Obs.start_daemon!(Obs.ini(2))
    prom = Obs.start_prometheus!("127.0.0.1:#{port}")
    calls = 37

    for i <- 1..calls do
      assert {:ok, _} = Pool.execute(daemon.node, "python.operator.add", [i, 1])
    end

    query = ~s/sum(snakepit_requests_total{command="python.operator.add"})/

    value =
      Pool.wait_until(
        fn ->
          v = Obs.promql(prom, query)
          v == calls * 1.0 && v
        end,
        20_000
      )

    assert value == calls * 1.0,
           "#{query} was #{inspect(Obs.promql(prom, query))}, expected #{calls}"

    assert Obs.promql(prom, ~s/up{job="snakepit"}/) == 1.0
    assert Obs.promql(prom, "sum(snakepit_requests_total)") == calls * 1.0
  end
end
