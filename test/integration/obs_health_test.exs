# SPDX-License-Identifier: Apache-2.0
#
# The health endpoints: /health/startup and /health/ready return 503 until the first worker of
# every pool is up, /health/ready returns 503 while a pool is degraded, /health/live stays 200,
# and /health is a JSON document of the pools and their workers.

defmodule Snakepit.Test.ObsHealthTest do
  use ExUnit.Case, async: false
  alias Snakepit.Test.{Daemon, Obs, OsProcess, Pool, Redis}

  # Fields of the /health document, read by Python's json module: one line "status pools" and
  # one line per pool "name size degraded idle busy starting stopping".
  @health_summary """
  import json, sys
  doc = json.loads(sys.argv[1])
  print(doc["status"], len(doc["pools"]))
  for p in doc["pools"]:
      w = p["workers"]
      print(p["name"], p["size"], str(p["degraded"]).lower(), w["idle"], w["busy"],
            w["starting"], w["stopping"])
  """

  defp health(port) do
    {status, body} = Obs.get(port, "/health")
    {out, exit_status} = Obs.python(@health_summary, body)
    assert exit_status == 0, "/health is not the expected JSON document: #{body}\n#{out}"
    [head | pools] = String.split(out, "\n", trim: true)
    {status, head, pools, body}
  end

  defp code(port, path), do: elem(Obs.get(port, path), 0)

  # Poll until the HTTP port accepts a connection.
  defp await_port(port, timeout) do
    Pool.wait_until(
      fn ->
        case :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false], 100) do
          {:ok, socket} -> :gen_tcp.close(socket) || true
          {:error, _} -> false
        end
      end,
      timeout
    )
  end

  test "startup and ready are 503 until the first worker is up" do
    port = Redis.free_port()
    config = Pool.write_config(Obs.ini(1, preload: "numpy, pandas"))

    {:ok, daemon} =
      Daemon.start(
        args: ["--config", config, "--http", "127.0.0.1:#{port}"],
        env: [{"PYTHONPATH", Pool.fixtures_dir()}],
        ready: false
      )

    on_exit(fn ->
      Daemon.stop(daemon)
      File.rm(config)
    end)

    assert await_port(port, 10_000), "the HTTP port #{port} never opened"
    # The template imports numpy and pandas first, which takes far longer than these requests.
    assert {503, startup} = Obs.get(port, "/health/startup")
    assert startup =~ "waiting for the first worker"
    assert {503, ready} = Obs.get(port, "/health/ready")
    assert ready =~ "pool 'default' has no ready worker"
    assert code(port, "/health/live") == 200
    assert {503, "unavailable 1", ["default 1 false " <> _], _} = health(port)
    assert OsProcess.exit_status(daemon.proc) == nil
    refute Enum.any?(Daemon.lines(daemon), &(&1 =~ ~r/^READY /))

    assert {:ok, _} = OsProcess.await_line(daemon.proc, ~r/^READY /, 30_000)
    assert code(port, "/health/startup") == 200
    assert code(port, "/health/ready") == 200
    assert code(port, "/health/live") == 200
    assert {200, "ok 1", ["default 1 false 1 0 0 0"], _} = health(port)
  end

  test "ready is 503 while a pool is degraded" do
    {daemon, port} = Obs.start_daemon!(Obs.ini(2))
    Obs.await_idle(port, 2)
    assert code(port, "/health/ready") == 200
    assert {200, "ok 1", ["default 2 false 2 0 0 0"], _} = health(port)

    # Five deaths within ten seconds make a pool degraded. Each kill waits for the replacement,
    # so that the pool always has a ready worker and only the crash loop can fail the probe.
    for _ <- 1..5 do
      [victim | _] = Pool.worker_pids(daemon)
      {_, 0} = System.cmd("kill", ["-KILL", Integer.to_string(victim)])

      assert Pool.wait_until(
               fn ->
                 pids = Pool.worker_pids(daemon)
                 victim not in pids and length(pids) == 2
               end,
               5000
             ),
             "no replacement for worker #{victim}: #{inspect(Pool.worker_pids(daemon))}"
    end

    assert Pool.wait_until(fn -> code(port, "/health/ready") == 503 end, 2000)
    assert {503, reason} = Obs.get(port, "/health/ready")
    assert reason =~ "pool 'default' is degraded"
    assert code(port, "/health/live") == 200
    assert code(port, "/health/startup") == 200
    assert {503, "unavailable 1", ["default 2 true " <> _], body} = health(port)
    assert body =~ ~s("reason":"pool 'default' is degraded)
    page = Obs.scrape(port)
    assert Obs.sample_sum(page, "snakepit_workers", pool: "default", state: "degraded") == 1
    assert Obs.sample_sum(page, "snakepit_worker_restarts_total", reason: "killed") == 5

    # Calls are still served while the pool is degraded.
    assert {:ok, 5} = Pool.execute(daemon.node, "python.operator.add", [2, 3])

    # Ten seconds after the first of the five deaths the pool is no longer degraded.
    assert Pool.wait_until(fn -> code(port, "/health/ready") == 200 end, 15_000),
           "still #{inspect(Obs.get(port, "/health/ready"))} 15 s after the crash loop"

    assert {200, "ok 1", ["default 2 false " <> _], _} = health(port)
  end

  test "live stays 200 and unknown paths are 404" do
    {_daemon, port} = Obs.start_daemon!(Obs.ini(1))

    for path <- ["/health/live", "/health/ready", "/health/startup", "/health", "/metrics"] do
      assert code(port, path) == 200, "GET #{path}"
    end

    assert code(port, "/nope") == 404
    assert code(port, "/health/") == 404

    request =
      "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

    assert {:ok, 405, _} = Obs.raw_request(port, request)
  end
end
