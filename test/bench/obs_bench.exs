# SPDX-License-Identifier: Apache-2.0
#
# The observability benchmark, run by test/bench/obs_bench.sh on a distributed `elixir` node:
# - the p50 of a trivial call (python.operator.add) with metrics and telemetry on, against the
#   same build with them off ([http] listen = off and [node] telemetry = false), in one run;
# - the time to serve GET /metrics from a daemon with 4 pools and 100 commands in each.
# It reuses the OS process helpers of the integration tests and stops every daemon by its pid.
# Settings come from environment variables that obs_bench.sh sets: SNAKEPIT_CNODE, BENCH_CALLS,
# BENCH_ROUNDS, BENCH_RENDERS.

Code.require_file("../integration/support/daemon.exs", __DIR__)

defmodule Bench.Obs do
  alias Snakepit.Test.Daemon

  def env_int(name), do: String.to_integer(System.fetch_env!(name))

  def free_port do
    {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(socket)
    :gen_tcp.close(socket)
    port
  end

  @doc "Start a daemon from `ini` with `--http http`; returns `{daemon, config_path}`."
  def start(name, ini, http) do
    path = Path.join(System.tmp_dir!(), "snakepit-obs-bench-#{name}-#{System.pid()}.ini")
    File.write!(path, ini)
    # Flags override the config file, and this --http overrides the harness's --http off.
    args = ["--config", path, "--http", http]
    {:ok, daemon} = Daemon.start(sname: Daemon.unique_name(name), args: args)
    true = Node.connect(daemon.node)
    {daemon, path}
  end

  def stop({daemon, path}) do
    Daemon.stop(daemon)
    File.rm(path)
  end

  def call(node, command, args, opts \\ []) do
    GenServer.call({:snakepit, node}, {:execute, command, args, opts}, 30_000)
  end

  # Microseconds of `calls` sequential trivial calls.
  def latencies(node, calls) do
    for _ <- 1..calls do
      {us, {:ok, 3}} = :timer.tc(fn -> call(node, "python.operator.add", [1, 2]) end)
      us
    end
  end

  def percentile(sorted, p),
    do: Enum.at(sorted, min(length(sorted) - 1, trunc(length(sorted) * p)))

  def summary(values) do
    sorted = Enum.sort(values)

    %{
      n: length(sorted),
      p50: percentile(sorted, 0.5),
      p90: percentile(sorted, 0.9),
      p99: percentile(sorted, 0.99),
      mean: Enum.sum(sorted) / length(sorted)
    }
  end

  # A subscriber that counts the events it receives and sends the count on {:count, pid}.
  def subscriber do
    spawn(fn -> count_events(0) end)
  end

  defp count_events(n) do
    receive do
      {:snakepit_telemetry, _, _, _} -> count_events(n + 1)
      {:count, from} -> send(from, {:events, n})
    end
  end

  # Scrape /metrics every second, as a Prometheus server with a 1 s interval would.
  def scraper(port) do
    spawn(fn -> scrape_loop(port) end)
  end

  defp scrape_loop(port) do
    http_get(port, "/metrics")
    Process.sleep(1000)
    scrape_loop(port)
  end

  @doc "GET `path` on a new connection: `{status, body_bytes}`, or `{status, body}` with :body."
  def http_get(port, path, what \\ :size) do
    {:ok, socket} = :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false])

    :ok =
      :gen_tcp.send(
        socket,
        "GET #{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
      )

    data = read_all(socket, "")
    :gen_tcp.close(socket)
    [head, body] = String.split(data, "\r\n\r\n", parts: 2)
    [_, status] = Regex.run(~r/\AHTTP\/1\.1 (\d+)/, head)
    {String.to_integer(status), if(what == :body, do: body, else: byte_size(body))}
  end

  defp read_all(socket, acc) do
    case :gen_tcp.recv(socket, 0, 10_000) do
      {:ok, data} -> read_all(socket, acc <> data)
      {:error, :closed} -> acc
    end
  end

  def fmt_us(us), do: :io_lib.format("~.1f", [us * 1.0]) |> to_string()

  def pool_ini(telemetry) do
    """
    [node]
    telemetry = #{telemetry}

    [pool default]
    size = 1

    [library operator]
    module = operator
    """
  end

  def overhead do
    calls = env_int("BENCH_CALLS")
    rounds = env_int("BENCH_ROUNDS")
    on_port = free_port()
    sub_port = free_port()

    variants = [
      {"off", start("obs_off", pool_ini(false), "off")},
      {"off (control)", start("obs_off2", pool_ini(false), "off")},
      {"on", start("obs_on", pool_ini(true), "127.0.0.1:#{on_port}")},
      {"on + subscriber", start("obs_sub", pool_ini(true), "127.0.0.1:#{sub_port}")}
    ]

    {_, {sub_daemon, _}} = List.keyfind(variants, "on + subscriber", 0)
    sub = subscriber()
    :ok = GenServer.call({:snakepit, sub_daemon.node}, {:subscribe, sub, [[:snakepit]]})
    scrapers = [scraper(on_port), scraper(sub_port)]

    # Warm the workers up, then run the variants in a rotating order in each round, so that
    # drift on the host hits all of them alike.
    for {_, {daemon, _}} <- variants, do: latencies(daemon.node, 500)

    results =
      Enum.reduce(1..rounds, %{}, fn round, acc ->
        shift = rem(round, length(variants))
        order = Enum.drop(variants, shift) ++ Enum.take(variants, shift)

        Enum.reduce(order, acc, fn {label, {daemon, _}}, acc ->
          ticks = Snakepit.Test.Proc.cpu_ticks(Daemon.os_pid(daemon))
          round_us = latencies(daemon.node, calls)
          ticks = Snakepit.Test.Proc.cpu_ticks(Daemon.os_pid(daemon)) - ticks

          Map.update(acc, label, {round_us, ticks}, fn {us, t} -> {round_us ++ us, t + ticks} end)
        end)
      end)

    Enum.each(scrapers, &Process.exit(&1, :kill))
    send(sub, {:count, self()})
    events = receive do: ({:events, n} -> n)

    IO.puts(
      "trivial call python.operator.add, pool size 1, #{rounds} rounds of #{calls} calls " <>
        "per daemon, in rotating order:"
    )

    off = summary(elem(results["off"], 0))
    # Clock ticks of user plus system time; 100 per second on Linux (getconf CLK_TCK).
    cpu_us = fn label -> elem(results[label], 1) * 10_000 / (calls * rounds) end

    for {label, _} <- variants do
      s = summary(elem(results[label], 0))

      IO.puts(
        "  #{String.pad_trailing(label, 16)} p50 #{fmt_us(s.p50)} us  p90 #{fmt_us(s.p90)} us  " <>
          "p99 #{fmt_us(s.p99)} us  mean #{fmt_us(s.mean)} us  (n=#{s.n})  " <>
          "p50 vs off #{fmt_us((s.p50 - off.p50) / off.p50 * 100)} %  " <>
          "mean vs off #{fmt_us((s.mean - off.mean) / off.mean * 100)} %  " <>
          "daemon CPU #{fmt_us(cpu_us.(label))} us per call"
      )
    end

    IO.puts("  off: [http] listen = off (--http off), [node] telemetry = false")
    IO.puts("  off (control): a second daemon like off, which shows the spread between daemons")
    IO.puts("  on: /metrics served and scraped every 1 s, telemetry on, no subscriber")

    IO.puts(
      "  on + subscriber: as on, and one process subscribed to [[:snakepit]] " <>
        "(#{events} events received)"
    )

    IO.puts("  target: at most 3 % p50 overhead")

    Enum.each(variants, fn {_, running} -> stop(running) end)
  end

  def render do
    renders = env_int("BENCH_RENDERS")
    port = free_port()

    pools =
      for p <- 0..3 do
        """
        [pool p#{p}]
        size = 1

        [library operator_p#{p}]
        module = operator
        pool = p#{p}
        """
      end

    ini = Enum.join(pools, "\n")
    {daemon, _} = running = start("obs_render", ini, "127.0.0.1:#{port}")

    # 100 commands per pool: python.operator.add succeeds; the 99 others raise AttributeError,
    # which adds a series per command as a success would.
    for p <- 0..3, c <- 0..99 do
      command = if c == 0, do: "python.operator.add", else: "python.operator.missing_#{c}"
      call(daemon.node, command, [1, 2], pool: "p#{p}")
    end

    {200, bytes} = http_get(port, "/metrics")

    {200, page} = http_get(port, "/metrics", :body)
    series = page |> String.split("\n", trim: true) |> Enum.reject(&String.starts_with?(&1, "#"))

    time = fn path ->
      for _ <- 1..renders do
        {us, {200, _}} = :timer.tc(fn -> http_get(port, path) end)
        us
      end
      |> summary()
    end

    # Warm up, then time /metrics against /health/live, which renders nothing.
    time.("/metrics")
    metrics = time.("/metrics")
    live = time.("/health/live")

    IO.puts(
      "GET /metrics, 4 pools x 100 commands: #{bytes} bytes, #{length(series)} samples, " <>
        "#{renders} requests on new connections:"
    )

    IO.puts("  /metrics:     p50 #{fmt_us(metrics.p50)} us  p90 #{fmt_us(metrics.p90)} us")
    IO.puts("  /health/live: p50 #{fmt_us(live.p50)} us  p90 #{fmt_us(live.p90)} us")
    IO.puts("  render and send (p50 difference): #{fmt_us(metrics.p50 - live.p50)} us")
    stop(running)
  end
end

Bench.Obs.overhead()
Bench.Obs.render()
