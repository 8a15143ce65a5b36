# SPDX-License-Identifier: Apache-2.0
#
# The worker pool benchmark, run by test/bench/pool_bench.sh on a distributed `elixir` node. It
# starts every process it measures (snakepit-cnode daemons, the echo C node, the socketpair
# floor, plain `python3` processes), stops each by its own OS pid, and prints one table of
# numbers with the ratios against their targets. Settings come from environment variables that
# pool_bench.sh sets: SNAKEPIT_CNODE, BENCH_FLOOR, BENCH_ECHO_CNODE, BENCH_PORT_WORKER,
# BENCH_PYTHON, BENCH_CALLS, BENCH_STARTS.

Code.require_file("support.exs", __DIR__)

defmodule Bench.Daemon do
  @moduledoc "A snakepit-cnode under test, started with a config file and `--owner` this node."

  defstruct [:proc, :node, :started_us, :started_wall_ms]

  def start(cnode, config, name, pool_size, extra_args \\ [], env \\ []) do
    args =
      [
        "--config",
        config,
        "--sname",
        name,
        "--http",
        "off",
        "--pool-size",
        Integer.to_string(pool_size),
        "--library",
        "operator",
        "--library",
        "copy",
        "--owner",
        Atom.to_string(node())
      ] ++ extra_args

    started_wall_ms = System.os_time(:millisecond)
    started_us = System.monotonic_time(:microsecond)

    proc =
      Bench.OsProcess.start(cnode, args, [
        {"SNAKEPIT_COOKIE", Atom.to_string(Node.get_cookie())} | env
      ])

    [node_name] = Bench.OsProcess.await_line(proc, ~r/^READY (\S+)$/, 60_000)
    node = String.to_atom(node_name)
    true = Node.connect(node)
    %__MODULE__{proc: proc, node: node, started_us: started_us, started_wall_ms: started_wall_ms}
  end

  def stop(%__MODULE__{proc: proc}), do: Bench.OsProcess.stop(proc)

  def call(%__MODULE__{node: node}, request, timeout \\ 60_000) do
    GenServer.call({:snakepit, node}, request, timeout)
  end

  def idle_workers(d) do
    {:ok, %{pools: [%{workers: workers}]}} = call(d, :info)
    workers.idle
  end

  @doc "Poll `:info` until `count` workers are idle; returns the monotonic time in us."
  def await_idle(d, count, deadline_ms \\ 60_000) do
    give_up = System.monotonic_time(:millisecond) + deadline_ms
    poll_idle(d, count, give_up, deadline_ms)
  end

  defp poll_idle(d, count, give_up, deadline_ms) do
    idle = idle_workers(d)
    now = System.monotonic_time(:microsecond)

    cond do
      idle >= count ->
        now

      System.monotonic_time(:millisecond) > give_up ->
        tail =
          d.proc |> Bench.OsProcess.lines() |> Enum.take(-20) |> Enum.map_join("\n", &elem(&1, 1))

        raise "fewer than #{count} workers idle after #{deadline_ms} ms; last lines:\n#{tail}"

      true ->
        Process.sleep(2)
        poll_idle(d, count, give_up, deadline_ms)
    end
  end

  @doc "Log lines as `{wall_ms, message}`, parsed from the ISO timestamp each line starts with."
  def log(%__MODULE__{proc: proc}) do
    for {_, line} <- Bench.OsProcess.lines(proc),
        [ts, msg] <- [Regex.run(~r/^(\S+Z) \S+ (.*)$/, line, capture: :all_but_first)] do
      {:ok, dt, 0} = DateTime.from_iso8601(ts)
      {DateTime.to_unix(dt, :millisecond), msg}
    end
  end

  @doc "The OS pids of the pool's zygote and of its workers that logged they are ready."
  def pids(d) do
    log = log(d)

    zygote =
      Enum.find_value(log, fn {_, msg} ->
        case Regex.run(~r/template interpreter ready \(pid (\d+)/, msg) do
          [_, pid] -> String.to_integer(pid)
          nil -> nil
        end
      end)

    workers =
      for {_, msg} <- log, [_, pid] <- [Regex.run(~r/worker \d+ \(pid (\d+)\) ready/, msg)] do
        String.to_integer(pid)
      end

    {zygote, Enum.uniq(workers)}
  end
end

defmodule Bench.Memory do
  @moduledoc "Memory of a process from /proc/PID/smaps_rollup, in KiB."

  def rollup(os_pid) do
    for line <- File.read!("/proc/#{os_pid}/smaps_rollup") |> String.split("\n"),
        [_, key, kb] <- [Regex.run(~r/^(\w+):\s+(\d+) kB/, line)],
        into: %{} do
      {key, String.to_integer(kb)}
    end
  end

  def pss(os_pid), do: rollup(os_pid)["Pss"]

  @doc "Minor page faults of the whole process so far (field 10 of /proc/PID/stat)."
  def minor_faults(os_pid) do
    [_, after_comm] = String.split(File.read!("/proc/#{os_pid}/stat"), ") ", parts: 2)
    after_comm |> String.split() |> Enum.at(7) |> String.to_integer()
  end

  def uss(os_pid) do
    r = rollup(os_pid)
    r["Private_Clean"] + r["Private_Dirty"]
  end
end

defmodule Bench do
  @moduledoc "The measurements and the table."

  @add {:execute, "python.operator.add", [1, 2], []}
  @big_size 10_000_000
  @big_calls 20

  # glibc returns each freed block over its mmap threshold to the kernel, so every 10 MB
  # buffer is page-faulted in anew. These tunables keep such blocks in the heap for reuse.
  @malloc_tunables "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=134217728"

  # The four latency series run in interleaved slices, so that load from other processes on
  # the machine falls on all of them alike. Percentiles are over all slices of a series.
  @rounds 10

  def env(name), do: System.fetch_env!(name)
  def env_int(name), do: name |> env() |> String.to_integer()

  def run do
    calls = env_int("BENCH_CALLS")
    starts = env_int("BENCH_STARTS")
    config = write_config()
    IO.puts("load average at start: #{load_average()}")

    # Fresh interpreters first, while no daemon shares their libraries' pages.
    fresh_mem = fresh_memory()
    {startup, pool8_mem} = measure_starts(config, starts)

    d2 = Bench.Daemon.start(env("SNAKEPIT_CNODE"), config, "bench_pool2_#{System.pid()}", 2)

    {latency, throughput, big} =
      try do
        Bench.Daemon.await_idle(d2, 2)
        latency = latencies(d2, calls)
        throughput = %{one: calls_per_second(d2, 1, calls), eight: calls_per_second(d2, 8, calls)}
        {latency, throughput, %{default: big_round_trip(d2)}}
      after
        Bench.Daemon.stop(d2)
      end

    big = Map.put(big, :tuned, big_round_trips(config))
    File.rm(config)
    IO.puts("load average at end: #{load_average()}")

    rows =
      latency_rows(latency) ++
        [
          {"2", "pool of 2, 1 caller", rate(throughput.one), nil, nil},
          {"2", "pool of 2, 8 concurrent callers", rate(throughput.eight), nil, nil}
        ] ++ startup_rows(startup) ++ memory_rows(pool8_mem, fresh_mem) ++ big_rows(big)

    print(rows, calls, starts)
    summary(rows)
  end

  defp load_average,
    do: File.read!("/proc/loadavg") |> String.split() |> Enum.take(3) |> Enum.join(" ")

  defp latency_rows(%{pool: pool, echo: echo, floor: floor, port: port}) do
    floor_p50 = echo.p50 + floor.p50
    floor_p99 = echo.p99 + floor.p99

    [
      {"1", "execute python.operator.add, 1 caller, p50", us(pool.p50), nil, nil},
      {"1", "execute python.operator.add, 1 caller, p99", us(pool.p99), nil, nil},
      {"1", "  echo C node round trip (ei), p50 / p99", pair(echo, &us/1), nil, nil},
      {"1", "  socketpair to embedded CPython, p50 / p99", pair(floor, &us/1), nil, nil},
      {"1", "  floor = echo + socketpair, p50 / p99", "#{us(floor_p50)} / #{us(floor_p99)}", nil,
       nil},
      {"1", "  p50 against the floor", ratio(pool.p50, floor_p50), "<= 1.30x",
       pool.p50 / floor_p50 <= 1.3},
      {"1", "  on-CPU time per call: daemon / workers / this BEAM",
       "#{us(pool.cpu_us.daemon)} / #{us(pool.cpu_us.workers)} / #{us(pool.cpu_us.beam)}", nil,
       nil},
      {"1", "  on-CPU time per call: echo node / this BEAM",
       "#{us(echo.cpu_us.echo_node)} / #{us(echo.cpu_us.beam)}", nil, nil},
      {"1", "  on-CPU time per call: socketpair parent / child",
       "#{us(floor.cpu_us.parent)} / #{us(floor.cpu_us.child)}", nil, nil},
      {"1", "  Port to python3 by hand, p50 / p99", pair(port, &us/1), nil, nil},
      {"1", "  on-CPU time per call: Port's python3 / this BEAM",
       "#{us(port.cpu_us.python)} / #{us(port.cpu_us.beam)}", nil, nil},
      {"1", "  p50 against the Port", ratio(pool.p50, port.p50), "<= 0.50x",
       pool.p50 / port.p50 <= 0.5}
    ]
  end

  defp startup_rows(startup) do
    [
      {"3", "daemon start to 8 workers idle (:info polling), median", ms(startup.info_ms), nil,
       nil},
      {"3", "daemon start to 8th worker ready (log lines), median", ms(startup.log_ms), nil, nil},
      {"3", "  of which template interpreter start and preload (log), median",
       ms(startup.zygote_ms), nil, nil},
      {"3", "  fork to ready per worker (log), median / max",
       "#{ms(startup.fork_median_ms)} / #{ms(startup.fork_max_ms)}", nil, nil},
      {"3", "  8 fresh python3 -c 'import numpy, pandas' in parallel, wall, median",
       ms(startup.parallel_ms), nil, nil},
      {"3", "  1 fresh python3 -c 'import numpy, pandas', median", ms(startup.single_ms), nil,
       nil},
      {"3", "  start to 8 idle against 8 fresh, median of the runs' ratios",
       "#{:erlang.float_to_binary(startup.ratio, decimals: 2)}x", "<= 0.20x",
       startup.ratio <= 0.2}
    ]
  end

  defp memory_rows(pool, fresh) do
    worker_pss = mean(pool.worker_pss)
    worker_uss = mean(pool.worker_uss)

    [
      {"4", "fresh python3 with numpy, pandas: PSS / USS",
       "#{mib(fresh.pss)} / #{mib(fresh.uss)}", nil, nil},
      {"4", "worker of a pool of 8 after 8000 calls: PSS, mean / max",
       "#{mib(worker_pss)} / #{mib(Enum.max(pool.worker_pss))}", nil, nil},
      {"4", "  worker USS (its private pages), mean", mib(worker_uss), nil, nil},
      {"4", "  zygote PSS", mib(pool.zygote_pss), nil, nil},
      {"4", "  zygote and 8 workers: PSS, total", mib(pool.total_pss), nil, nil},
      {"4", "  worker PSS against fresh PSS", ratio(worker_pss, fresh.pss), "<= 0.30x",
       worker_pss / fresh.pss <= 0.3},
      {"4", "  worker USS against fresh PSS", ratio(worker_uss, fresh.pss), nil, nil}
    ]
  end

  defp big_rows(%{default: default, tuned: tuned}) do
    [
      {"5", "10 MB binary through python.copy.copy, round trip, median / min",
       "#{ms(default.median_ms)} / #{ms(default.min_ms)}", nil, nil},
      {"5", "  payload MB / round-trip second, median", mb_per_s(default), nil, nil},
      {"5", "  minor page faults per round trip: daemon / worker", faults(default), nil, nil},
      {"5", "  with the malloc tunables below: round trip, median / min",
       "#{ms(tuned.median_ms)} / #{ms(tuned.min_ms)}", nil, nil},
      {"5", "    payload MB / round-trip second, median", mb_per_s(tuned), nil, nil},
      {"5", "    minor page faults per round trip: daemon / worker", faults(tuned), nil, nil}
    ]
  end

  defp mb_per_s(big) do
    "#{:erlang.float_to_binary(@big_size / 1.0e6 / (big.median_ms / 1000), decimals: 1)} MB/s"
  end

  defp faults(big), do: "#{round(big.daemon_faults)} / #{round(big.worker_faults)}"

  defp mean(values), do: Enum.sum(values) / length(values)
  defp pair(summary, unit), do: "#{unit.(summary.p50)} / #{unit.(summary.p99)}"

  defp write_config do
    path = Path.join(System.tmp_dir!(), "pool_bench_#{System.pid()}.ini")

    File.write!(path, """
    [pool default]
    size = 8
    python = #{env("BENCH_PYTHON")}
    preload = numpy, pandas
    """)

    path
  end

  # ---- 1. Latency ----

  defp latencies(d, calls) do
    echo = start_echo()
    port = open_port()
    {:os_pid, port_pid} = Port.info(port, :os_pid)
    {_zygote, workers} = Bench.Daemon.pids(d)

    # Each series: its call and the processes whose on-CPU time it is charged with.
    series = [
      {:pool, fn -> {:ok, 3} = Bench.Daemon.call(d, @add) end,
       [daemon: [d.proc.os_pid], workers: workers]},
      {:echo, fn -> :pong = GenServer.call({:echo, echo.node}, @add) end,
       [echo_node: [echo.proc.os_pid]]},
      {:port, fn -> {:ok, 3} = port_call(port) end, [python: [port_pid]]}
    ]

    slice = div(calls, @rounds)

    try do
      for _ <- 1..@rounds, reduce: %{} do
        acc ->
          acc = merge_slice(acc, :floor, floor_slice(slice))

          Enum.reduce(series, acc, fn {name, fun, roles}, acc ->
            merge_slice(acc, name, timed_slice(fun, slice, roles))
          end)
      end
      |> Map.new(fn {name, %{samples: samples, cpu_ns: cpu_ns}} ->
        cpu_us = Map.new(cpu_ns, fn {role, ns} -> {role, ns / 1000 / length(samples)} end)
        {name, Map.put(Bench.Stats.summary(samples), :cpu_us, cpu_us)}
      end)
    after
      Port.close(port)
      Bench.OsProcess.stop(echo.proc)
    end
  end

  defp merge_slice(acc, name, slice) do
    Map.update(acc, name, slice, fn old ->
      %{
        samples: old.samples ++ slice.samples,
        cpu_ns: Map.merge(old.cpu_ns, slice.cpu_ns, fn _, a, b -> a + b end)
      }
    end)
  end

  # One slice of a series: latencies in us and the on-CPU ns each role (and this BEAM) used.
  defp timed_slice(fun, calls, roles) do
    roles = [{:beam, [System.pid() |> String.to_integer()]} | roles]
    for _ <- 1..100, do: fun.()
    before = Map.new(roles, fn {role, pids} -> {role, Bench.Cpu.ns(pids)} end)
    samples = Bench.Stats.time_calls(fun, calls, 0)
    cpu_ns = Map.new(roles, fn {role, pids} -> {role, Bench.Cpu.ns(pids) - before[role]} end)
    %{samples: samples, cpu_ns: cpu_ns}
  end

  defp floor_slice(calls) do
    {out, 0} = System.cmd(env("BENCH_FLOOR"), ["--samples", Integer.to_string(calls)])
    lines = String.split(out, "\n", trim: true)
    samples = for "sample_us=" <> v <- lines, do: float(v)

    kv =
      for line <- lines, [k, v] = String.split(line, "="), k != "sample_us", into: %{} do
        {k, float(v)}
      end

    cpu_ns = %{
      parent: kv["parent_cpu_us"] * 1000 * calls,
      child: kv["child_cpu_us"] * 1000 * calls
    }

    %{samples: samples, cpu_ns: cpu_ns}
  end

  defp float(s), do: s |> Float.parse() |> elem(0)

  defp start_echo do
    name = "bench_echo_#{System.pid()}"
    cookie = Atom.to_string(Node.get_cookie())
    proc = Bench.OsProcess.start(env("BENCH_ECHO_CNODE"), [name, cookie])
    [node_name] = Bench.OsProcess.await_line(proc, ~r/^READY (\S+)$/, 10_000)
    node = String.to_atom(node_name)
    true = Node.connect(node)
    %{proc: proc, node: node}
  end

  defp open_port do
    Port.open({:spawn_executable, env("BENCH_PYTHON")}, [
      :binary,
      {:packet, 4},
      args: [env("BENCH_PORT_WORKER")]
    ])
  end

  defp port_call(port) do
    send(port, {self(), {:command, :erlang.term_to_binary({"operator", "add", [1, 2]})}})

    receive do
      {^port, {:data, data}} -> :erlang.binary_to_term(data)
    end
  end

  # ---- 2. Throughput ----

  defp calls_per_second(d, callers, calls) do
    per_caller = div(calls, callers) * 2
    t0 = System.monotonic_time(:microsecond)

    1..callers
    |> Enum.map(fn _ ->
      Task.async(fn -> for _ <- 1..per_caller, do: {:ok, 3} = Bench.Daemon.call(d, @add) end)
    end)
    |> Enum.each(&Task.await(&1, :infinity))

    callers * per_caller / ((System.monotonic_time(:microsecond) - t0) / 1.0e6)
  end

  # ---- 3. Start ----

  defp elapsed_ms(fun) do
    t0 = System.monotonic_time(:microsecond)
    fun.()
    (System.monotonic_time(:microsecond) - t0) / 1000
  end

  # Fresh imports and pool starts alternate, so that load from other processes on the machine
  # falls on both alike. The last daemon also gives the memory readings.
  defp measure_starts(config, count) do
    python = env("BENCH_PYTHON")
    import = fn -> {_, 0} = System.cmd(python, ["-c", "import numpy, pandas"]) end
    # Warm the page cache once, as a daemon restart on a running host finds it.
    import.()

    runs =
      for i <- 1..count do
        single = elapsed_ms(import)

        parallel =
          elapsed_ms(fn ->
            1..8 |> Enum.map(fn _ -> Task.async(import) end) |> Enum.each(&Task.await(&1, 60_000))
          end)

        {timing, mem} = pool8_start(config, i, i == count)
        Map.merge(timing, %{single_ms: single, parallel_ms: parallel, mem: mem})
      end

    pick = fn key -> runs |> Enum.map(& &1[key]) |> Bench.Stats.median() end
    fork_ms = Enum.flat_map(runs, & &1.fork_ms)

    startup = %{
      info_ms: pick.(:info_ms),
      log_ms: pick.(:log_ms),
      zygote_ms: pick.(:zygote_ms),
      fork_median_ms: Bench.Stats.median(fork_ms),
      fork_max_ms: Enum.max(fork_ms),
      single_ms: pick.(:single_ms),
      parallel_ms: pick.(:parallel_ms),
      ratio: runs |> Enum.map(&(&1.info_ms / &1.parallel_ms)) |> Bench.Stats.median()
    }

    {startup, List.last(runs).mem}
  end

  defp pool8_start(config, i, measure_memory) do
    name = "bench_pool8_#{System.pid()}_#{i}"
    d = Bench.Daemon.start(env("SNAKEPIT_CNODE"), config, name, 8, ["--log-level", "debug"])

    try do
      idle_us = Bench.Daemon.await_idle(d, 8)
      timing = start_timing(d, idle_us)
      {timing, if(measure_memory, do: pool8_memory(d))}
    after
      Bench.Daemon.stop(d)
    end
  end

  defp start_timing(d, idle_us) do
    log = Bench.Daemon.log(d)
    at = fn regex -> Enum.find_value(log, fn {t, msg} -> if msg =~ regex, do: t end) end

    # The zygote logs each fork as it happens; the daemon logs "ready" when HELLO arrives.
    forked =
      for {t, msg} <- log,
          [_, id] <- [Regex.run(~r/forked worker (\d+) as pid/, msg)],
          into: %{} do
        {id, t}
      end

    ready =
      for {t, msg} <- log, [_, id] <- [Regex.run(~r/worker (\d+) \(pid \d+\) ready/, msg)] do
        {id, t}
      end

    8 = length(ready)

    %{
      info_ms: (idle_us - d.started_us) / 1000,
      log_ms: (ready |> Enum.map(&elem(&1, 1)) |> Enum.max()) - d.started_wall_ms,
      zygote_ms: at.(~r/template interpreter ready/) - at.(~r/started the template interpreter/),
      fork_ms: for({id, t} <- ready, Map.has_key?(forked, id), do: t - forked[id])
    }
  end

  # ---- 4. Memory ----

  defp fresh_memory do
    python = env("BENCH_PYTHON")
    script = "import sys, numpy, pandas; print('imported', flush=True); sys.stdin.read()"
    proc = Bench.OsProcess.start(python, ["-c", script])

    try do
      Bench.OsProcess.await_line(proc, ~r/^imported$/, 30_000)
      %{pss: Bench.Memory.pss(proc.os_pid), uss: Bench.Memory.uss(proc.os_pid)}
    after
      Bench.OsProcess.stop(proc)
    end
  end

  defp pool8_memory(d) do
    # Load first: every worker serves calls, so the readings include pages touched by work.
    calls_per_second(d, 8, 8000)
    {zygote, workers} = Bench.Daemon.pids(d)
    8 = length(workers)

    %{
      zygote_pss: Bench.Memory.pss(zygote),
      worker_pss: Enum.map(workers, &Bench.Memory.pss/1),
      worker_uss: Enum.map(workers, &Bench.Memory.uss/1),
      total_pss: Enum.sum(Enum.map([zygote | workers], &Bench.Memory.pss/1))
    }
  end

  # ---- 5. Large binary ----

  defp big_round_trips(config) do
    name = "bench_tuned_#{System.pid()}"
    env = [{"GLIBC_TUNABLES", @malloc_tunables}]
    d = Bench.Daemon.start(env("SNAKEPIT_CNODE"), config, name, 1, [], env)

    try do
      Bench.Daemon.await_idle(d, 1)
      big_round_trip(d)
    after
      Bench.Daemon.stop(d)
    end
  end

  defp big_round_trip(d) do
    payload = :crypto.strong_rand_bytes(@big_size)
    request = {:execute, "python.copy.copy", [payload], [timeout: 60_000]}
    {:ok, ^payload} = Bench.Daemon.call(d, request)
    {_zygote, workers} = Bench.Daemon.pids(d)
    faults_before = {Bench.Memory.minor_faults(d.proc.os_pid), sum_faults(workers)}

    samples =
      for _ <- 1..@big_calls do
        elapsed_ms(fn -> {:ok, ^payload} = Bench.Daemon.call(d, request) end)
      end

    {daemon_before, workers_before} = faults_before

    %{
      median_ms: Bench.Stats.median(samples),
      min_ms: Enum.min(samples),
      daemon_faults: (Bench.Memory.minor_faults(d.proc.os_pid) - daemon_before) / @big_calls,
      worker_faults: (sum_faults(workers) - workers_before) / @big_calls
    }
  end

  defp sum_faults(os_pids), do: os_pids |> Enum.map(&Bench.Memory.minor_faults/1) |> Enum.sum()

  # ---- Output ----

  defp us(v), do: "#{:erlang.float_to_binary(v / 1.0, decimals: 1)} us"
  defp ms(v), do: "#{:erlang.float_to_binary(v / 1.0, decimals: 1)} ms"
  defp mib(kib), do: "#{:erlang.float_to_binary(kib / 1024, decimals: 1)} MiB"
  defp rate(v), do: "#{round(v)} calls/s"
  defp ratio(a, b), do: "#{:erlang.float_to_binary(a / b, decimals: 2)}x"

  defp print(rows, calls, starts) do
    IO.puts(
      "calls per latency series: #{calls}, in #{@rounds} interleaved slices after 100 warm-up calls each; starts: #{starts}"
    )

    IO.puts("")
    header = {"#", "measurement", "value", "target", "result"}
    table = [header | Enum.map(rows, &format_row/1)]
    widths = for i <- 0..4, do: table |> Enum.map(&String.length(elem(&1, i))) |> Enum.max()

    for {row, n} <- Enum.with_index(table) do
      cells = for {w, i} <- Enum.with_index(widths), do: String.pad_trailing(elem(row, i), w)
      IO.puts(cells |> Enum.join("  ") |> String.trim_trailing())
      if n == 0, do: IO.puts(widths |> Enum.map(&String.duplicate("-", &1)) |> Enum.join("  "))
    end
  end

  defp format_row({item, name, value, target, met}) do
    result =
      case met do
        nil -> ""
        true -> "met"
        false -> "MISSED"
      end

    {item, name, value, target || "", result}
  end

  defp summary(rows) do
    checked = Enum.reject(rows, fn {_, _, _, _, met} -> met == nil end)
    missed = Enum.count(checked, fn {_, _, _, _, met} -> met == false end)
    IO.puts("")
    IO.puts("malloc tunables: GLIBC_TUNABLES=#{@malloc_tunables} (daemon and worker)")
    IO.puts("targets: #{length(checked) - missed} met, #{missed} missed")
  end
end

Bench.run()
