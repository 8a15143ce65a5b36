# SPDX-License-Identifier: Apache-2.0
#
# The session benchmark, run by test/bench/session_bench.sh on a distributed `elixir` node. It
# starts a redis-server on a free loopback port and two snakepit-cnode daemons, one with the
# memory store and one with the Redis store. It times :ping and session put/get on each in
# interleaved slices, and Redis's own GET latency with redis-benchmark and over a raw socket.
# Then it reads the memory daemon's VmRSS before and after creating many small sessions. Each
# process is stopped by its own OS pid. Settings come from environment variables that
# session_bench.sh sets: SNAKEPIT_CNODE, BENCH_REDIS_SERVER, BENCH_REDIS_BENCHMARK, BENCH_CALLS,
# BENCH_SESSIONS.

Code.require_file("support.exs", __DIR__)

defmodule Bench do
  @moduledoc "The measurements and the table."

  # The series run in interleaved slices, so that load from other processes on the machine falls
  # on all of them alike. Percentiles are over all slices of a series. On a 2-CPU VM a loop of
  # 20,000 pings switched between a fast mode (under 50 us) and a slow one in runs of 20 to
  # 5,000 calls, so the slices are short.
  @slice_calls 10
  @warmup 200
  @value "small value"

  def env(name), do: System.fetch_env!(name)
  def env_int(name), do: name |> env() |> String.to_integer()

  def run do
    calls = env_int("BENCH_CALLS")
    sessions = env_int("BENCH_SESSIONS")
    config = write_config(sessions)
    IO.puts("load average at start: #{load_average()}")

    redis_port = free_port()
    redis = start_redis(redis_port)

    try do
      memory_daemon =
        start_daemon("bench_sess_mem_#{System.pid()}", ["--config", config, "--store", "memory"])

      try do
        url = "redis://127.0.0.1:#{redis_port}/0"
        redis_daemon = start_daemon("bench_sess_redis_#{System.pid()}", ["--store", url])

        try do
          latency = latencies(memory_daemon, redis_daemon, redis_port, calls)
          floor = redis_benchmark(redis_port)
          server = redis_server_time(redis_daemon, redis_port)
          rss = session_memory(memory_daemon, sessions)
          IO.puts("load average at end: #{load_average()}")
          report(latency, floor, server, rss, calls, sessions)
        after
          stop_daemon(redis_daemon)
        end
      after
        stop_daemon(memory_daemon)
      end
    after
      Bench.OsProcess.stop(redis)
      File.rm(config)
    end
  end

  defp load_average,
    do: File.read!("/proc/loadavg") |> String.split() |> Enum.take(3) |> Enum.join(" ")

  defp write_config(sessions) do
    path = Path.join(System.tmp_dir!(), "session_bench_#{System.pid()}.ini")

    File.write!(path, """
    [store]
    max_sessions = #{max(200_000, 2 * sessions)}
    """)

    path
  end

  # Returns a loopback port that the kernel picked for a listener, free again once it is closed.
  defp free_port do
    {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(socket)
    :gen_tcp.close(socket)
    port
  end

  defp start_redis(port) do
    args = ["--port", "#{port}", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = Bench.OsProcess.start(env("BENCH_REDIS_SERVER"), args)
    Bench.OsProcess.await_line(proc, ~r/(Ready to accept connections)/, 10_000)
    proc
  end

  defp start_daemon(name, extra) do
    args = ["--sname", name, "--http", "off", "--pool-size", "1"] ++ extra
    cookie = Atom.to_string(Node.get_cookie())
    proc = Bench.OsProcess.start(env("SNAKEPIT_CNODE"), args, [{"SNAKEPIT_COOKIE", cookie}])
    [node_name] = Bench.OsProcess.await_line(proc, ~r/^READY (\S+)$/, 60_000)
    node = String.to_atom(node_name)
    true = Node.connect(node)
    %{proc: proc, node: node}
  end

  defp stop_daemon(d), do: Bench.OsProcess.stop(d.proc)

  defp call(d, request), do: GenServer.call({:snakepit, d.node}, request, 60_000)

  # ---- Latency ----

  defp latencies(memory_daemon, redis_daemon, redis_port, calls) do
    {:ok, sock} =
      :gen_tcp.connect({127, 0, 0, 1}, redis_port, [:binary, active: false, nodelay: true])

    "+OK\r\n" = redis_cmd(sock, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n")

    series =
      for {label, d} <- [{:memory, memory_daemon}, {:redis, redis_daemon}] do
        id = "bench-#{label}-#{System.unique_integer([:positive])}"
        {:ok, _} = call(d, {:session, :create, id, [owner: nil]})
        :ok = call(d, {:session, :put, id, "v", @value})

        [
          {{label, :ping}, fn -> :pong = call(d, :ping) end},
          {{label, :put}, fn -> :ok = call(d, {:session, :put, id, "v", @value}) end},
          {{label, :get}, fn -> {:ok, @value} = call(d, {:session, :get, id, "v"}) end}
        ]
      end
      |> List.flatten()
      |> Kernel.++([
        {{:raw, :get},
         fn -> "$1\r\nv\r\n" = redis_cmd(sock, "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n") end}
      ])

    for {_, fun} <- series, _ <- 1..@warmup, do: fun.()
    slice = @slice_calls

    samples =
      for _ <- 1..max(div(calls, slice), 1), {name, fun} <- series, reduce: %{} do
        acc ->
          Map.update(
            acc,
            name,
            Bench.Stats.time_calls(fun, slice),
            &(Bench.Stats.time_calls(fun, slice) ++ &1)
          )
      end

    :gen_tcp.close(sock)
    Map.new(samples, fn {name, s} -> {name, Bench.Stats.summary(s)} end)
  end

  # Sends one command and returns its reply. The replies read here are small enough for one recv.
  defp redis_cmd(sock, cmd) do
    :ok = :gen_tcp.send(sock, cmd)
    {:ok, reply} = :gen_tcp.recv(sock, 0, 5000)
    reply
  end

  # Runs redis-benchmark with one client, so that it times one request at a time, as the calls are.
  defp redis_benchmark(port) do
    args = [
      "-h",
      "127.0.0.1",
      "-p",
      "#{port}",
      "-t",
      "get",
      "-n",
      "20000",
      "-c",
      "1",
      "--csv",
      "--precision",
      "3"
    ]

    {out, 0} = System.cmd(env("BENCH_REDIS_BENCHMARK"), args)
    [header, row | _] = out |> String.split("\n", trim: true) |> Enum.map(&csv/1)
    kv = Map.new(Enum.zip(header, row))
    ms = fn key -> kv[key] |> Float.parse() |> elem(0) end

    %{
      p50: ms.("p50_latency_ms") * 1000,
      p95: ms.("p95_latency_ms") * 1000,
      p99: ms.("p99_latency_ms") * 1000
    }
  end

  # Reads INFO commandstats after 1,000 session puts and again after 1,000 gets on the Redis
  # daemon: the commands per call and Redis's own time for each (usec_per_call).
  defp redis_server_time(d, port) do
    {:ok, sock} = :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false])
    id = "bench-server-#{System.unique_integer([:positive])}"
    {:ok, _} = call(d, {:session, :create, id, [owner: nil]})

    result =
      for {op, request, reply} <- [
            {:put, {:session, :put, id, "v", @value}, :ok},
            {:get, {:session, :get, id, "v"}, {:ok, @value}}
          ],
          into: %{} do
        "+OK\r\n" = redis_cmd(sock, "*2\r\n$6\r\nCONFIG\r\n$9\r\nRESETSTAT\r\n")
        for _ <- 1..1000, do: ^reply = call(d, request)
        :ok = :gen_tcp.send(sock, "*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")

        stats =
          for [_, cmd, calls, usec] <-
                Regex.scan(
                  ~r/cmdstat_(\w+):calls=(\d+),usec=\d+,usec_per_call=([\d.]+)/,
                  bulk(sock, "")
                ),
              cmd not in ["config", "info"] do
            {cmd, String.to_integer(calls) / 1000, elem(Float.parse(usec), 0)}
          end

        {op, stats}
      end

    :gen_tcp.close(sock)
    result
  end

  # Reads a bulk string reply until its announced length has arrived.
  defp bulk(sock, acc) do
    {:ok, data} = :gen_tcp.recv(sock, 0, 5000)
    acc = acc <> data
    [head, rest] = String.split(acc, "\r\n", parts: 2)
    "$" <> len = head
    if byte_size(rest) >= String.to_integer(len) + 2, do: rest, else: bulk(sock, acc)
  end

  defp csv(line), do: line |> String.split(",") |> Enum.map(&String.trim(&1, "\""))

  # ---- Memory ----

  defp vm_rss_kib(os_pid) do
    [_, kib] = Regex.run(~r/VmRSS:\s+(\d+) kB/, File.read!("/proc/#{os_pid}/status"))
    String.to_integer(kib)
  end

  defp session_memory(d, sessions) do
    before = vm_rss_kib(d.proc.os_pid)
    callers = 8
    per_caller = div(sessions, callers)
    t0 = System.monotonic_time(:millisecond)

    1..callers
    |> Enum.map(fn c ->
      Task.async(fn ->
        for i <- 1..per_caller do
          id = "mem-#{c}-#{i}"
          {:ok, _} = call(d, {:session, :create, id, [owner: nil]})
          :ok = call(d, {:session, :put, id, "v", @value})
        end
      end)
    end)
    |> Enum.each(&Task.await(&1, :infinity))

    elapsed_s = (System.monotonic_time(:millisecond) - t0) / 1000
    after_kib = vm_rss_kib(d.proc.os_pid)

    %{
      sessions: callers * per_caller,
      before_kib: before,
      after_kib: after_kib,
      elapsed_s: elapsed_s
    }
  end

  # ---- Output ----

  defp us(v), do: "#{:erlang.float_to_binary(v / 1.0, decimals: 1)} us"
  defp trio(s), do: "#{us(s.p50)} / #{us(s.p95)} / #{us(s.p99)}"
  defp ratio(a, b), do: "#{:erlang.float_to_binary(a / b, decimals: 2)}x"

  # The store calls its scripts with EVALSHA, and with EVAL after a NOSCRIPT reply. Redis's time
  # per session call is the scripts' usec_per_call weighted by their calls per session call.
  defp server_row(server, op) do
    {scripts, inside} = Enum.split_with(server[op], &(elem(&1, 0) in ["eval", "evalsha"]))
    calls = fn name -> for({^name, per_call, _} <- scripts, do: per_call) |> Enum.sum() end
    usec = for({_, per_call, usec} <- scripts, do: per_call * usec) |> Enum.sum()
    one_decimal = &:erlang.float_to_binary(&1 / 1.0, decimals: 1)

    value =
      "#{one_decimal.(calls.("evalsha"))} EVALSHA + #{one_decimal.(calls.("eval"))} EVAL, #{us(usec)} in Redis, " <>
        "#{one_decimal.(inside |> Enum.map(&elem(&1, 1)) |> Enum.sum())} commands inside"

    {"  Redis per session #{op}", value, "", nil}
  end

  defp report(latency, floor, server, rss, calls, sessions) do
    memory_ping = latency[{:memory, :ping}].p95
    redis_ping = latency[{:redis, :ping}].p95
    redis_bound = redis_ping + 2 * floor.p95
    put_p95 = latency[{:memory, :put}].p95
    get_p95 = latency[{:memory, :get}].p95
    # The raw socket GET runs in the same interleaved slices as the calls, redis-benchmark after.
    raw_bound = redis_ping + 2 * latency[{:raw, :get}].p95
    bytes = (rss.after_kib - rss.before_kib) * 1024 / rss.sessions

    rows = [
      {"ping, memory daemon", trio(latency[{:memory, :ping}]), "", nil},
      {"session put, memory", trio(latency[{:memory, :put}]),
       "p95 <= 1.2 x ping p95 = #{us(1.2 * memory_ping)}",
       latency[{:memory, :put}].p95 <= 1.2 * memory_ping},
      {"session get, memory", trio(latency[{:memory, :get}]),
       "p95 <= 1.2 x ping p95 = #{us(1.2 * memory_ping)}",
       latency[{:memory, :get}].p95 <= 1.2 * memory_ping},
      {"  put / get p95 against ping p95",
       "#{ratio(put_p95, memory_ping)} / #{ratio(get_p95, memory_ping)}", "", nil},
      {"ping, Redis daemon", trio(latency[{:redis, :ping}]), "", nil},
      {"session put, Redis", trio(latency[{:redis, :put}]),
       "p95 <= ping p95 + 2 x GET p95 = #{us(redis_bound)}",
       latency[{:redis, :put}].p95 <= redis_bound},
      {"session get, Redis", trio(latency[{:redis, :get}]),
       "p95 <= ping p95 + 2 x GET p95 = #{us(redis_bound)}",
       latency[{:redis, :get}].p95 <= redis_bound},
      server_row(server, :put),
      server_row(server, :get),
      {"Redis GET, redis-benchmark -c 1", trio(floor), "", nil},
      {"Redis GET, raw socket from this node", trio(latency[{:raw, :get}]), "", nil},
      {"  ping p95 + 2 x raw socket GET p95", us(raw_bound), "", nil},
      {"VmRSS before / after, memory daemon", "#{rss.before_kib} / #{rss.after_kib} KiB", "",
       nil},
      {"memory per session (1 small variable)", "#{round(bytes)} bytes", "", nil},
      {"  create + put of #{rss.sessions} sessions, 8 callers",
       "#{:erlang.float_to_binary(rss.elapsed_s, decimals: 1)} s", "", nil}
    ]

    IO.puts(
      "calls per latency series: #{calls}, in interleaved slices of #{@slice_calls} after " <>
        "#{@warmup} warm-up calls; sessions for the memory reading: #{sessions}; " <>
        "value: #{inspect(@value)}"
    )

    IO.puts("latencies are p50 / p95 / p99")
    IO.puts("")
    table = [{"measurement", "value", "target", "result"} | Enum.map(rows, &format_row/1)]
    widths = for i <- 0..3, do: table |> Enum.map(&String.length(elem(&1, i))) |> Enum.max()

    for {row, n} <- Enum.with_index(table) do
      cells = for {w, i} <- Enum.with_index(widths), do: String.pad_trailing(elem(row, i), w)
      IO.puts(cells |> Enum.join("  ") |> String.trim_trailing())
      if n == 0, do: IO.puts(widths |> Enum.map(&String.duplicate("-", &1)) |> Enum.join("  "))
    end

    checked = Enum.reject(rows, fn {_, _, _, met} -> met == nil end)
    missed = Enum.count(checked, fn {_, _, _, met} -> met == false end)
    IO.puts("")
    IO.puts("targets: #{length(checked) - missed} met, #{missed} missed")
  end

  defp format_row({name, value, target, met}) do
    result =
      case met do
        nil -> ""
        true -> "met"
        false -> "MISSED"
      end

    {name, value, target, result}
  end
end

Bench.run()
