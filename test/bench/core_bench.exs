# SPDX-License-Identifier: Apache-2.0
#
# Benchmark of the C node core, run by core_bench.sh on a distributed elixir node. It measures
# the round-trip latency of GenServer.call(:ping) with one caller (p50, p99) and the calls per
# second with eight concurrent callers. The targets are snakepit-cnode and two baselines
# started in the same run: the blocking echo C node (echo_cnode) and a trivial GenServer on
# another BEAM node.

Code.require_file("../integration/support/daemon.exs", __DIR__)
alias Snakepit.Test.{Daemon, OsProcess}

defmodule Bench do
  def start_echo_cnode do
    name = Daemon.unique_name("bench_echo")
    proc = OsProcess.start(System.fetch_env!("SNAKEPIT_ECHO_CNODE"), [name, Daemon.cookie()])
    {:ok, [_, node]} = OsProcess.await_line(proc, ~r/^READY (\S+)$/, 10_000)
    {proc, {:bench_echo, String.to_atom(node)}}
  end

  def start_genserver_node do
    name = Daemon.unique_name("bench_gs")
    script = Path.expand("genserver_node.exs", __DIR__)
    elixir = System.find_executable("elixir")
    proc = OsProcess.start(elixir, ["--sname", name, "--cookie", Daemon.cookie(), script])
    {:ok, [_, node]} = OsProcess.await_line(proc, ~r/^READY (\S+)$/, 30_000)
    {proc, {:bench_echo, String.to_atom(node)}}
  end

  def call(dest), do: :pong = GenServer.call(dest, :ping, 5000)

  def latency_us(dest, n) do
    samples =
      for _ <- 1..n do
        t0 = System.monotonic_time(:nanosecond)
        call(dest)
        System.monotonic_time(:nanosecond) - t0
      end

    sorted = samples |> Enum.sort() |> List.to_tuple()

    pick = fn q ->
      elem(sorted, min(tuple_size(sorted) - 1, trunc(q * tuple_size(sorted)))) / 1000
    end

    {pick.(0.5), pick.(0.99)}
  end

  def calls_per_second(dest, callers, ms) do
    t0 = System.monotonic_time(:millisecond)
    deadline = t0 + ms

    total =
      1..callers
      |> Enum.map(fn _ -> Task.async(fn -> loop(dest, deadline, 0) end) end)
      |> Enum.map(&Task.await(&1, :infinity))
      |> Enum.sum()

    total * 1000 / (System.monotonic_time(:millisecond) - t0)
  end

  defp loop(dest, deadline, n) do
    if System.monotonic_time(:millisecond) >= deadline do
      n
    else
      call(dest)
      loop(dest, deadline, n + 1)
    end
  end

  def median(values), do: values |> Enum.sort() |> Enum.at(div(length(values), 2))
end

rounds = String.to_integer(System.get_env("BENCH_ROUNDS", "3"))
samples = String.to_integer(System.get_env("BENCH_SAMPLES", "20000"))
window_ms = String.to_integer(System.get_env("BENCH_WINDOW_MS", "3000"))
callers = 8

{:ok, daemon} = Daemon.start(sname: Daemon.unique_name("bench_cnode"))
{echo_proc, echo} = Bench.start_echo_cnode()
{gs_proc, gs} = Bench.start_genserver_node()

targets = [
  {"snakepit-cnode", {:snakepit, daemon.node}},
  {"echo C node (ei, blocking)", echo},
  {"BEAM gen_server", gs}
]

# Connect and warm up every target before measuring anything.
for {_, dest} <- targets, _ <- 1..2000, do: Bench.call(dest)

# Rounds interleave the targets so that drift in the machine's load hits all of them alike.
results =
  for _ <- 1..rounds, {label, dest} <- targets do
    {p50, p99} = Bench.latency_us(dest, samples)
    {label, {p50, p99, Bench.calls_per_second(dest, callers, window_ms)}}
  end

summary =
  for {label, _} <- targets do
    mine = for {^label, r} <- results, do: r

    {label,
     {Bench.median(Enum.map(mine, &elem(&1, 0))), Bench.median(Enum.map(mine, &elem(&1, 1))),
      Bench.median(Enum.map(mine, &elem(&1, 2)))}}
  end

{cpus, _} = System.cmd("nproc", [])
{kernel, _} = System.cmd("uname", ["-r"])

IO.puts("""
core benchmark: GenServer.call(dest, :ping) from one elixir node over loopback
OTP #{System.otp_release()}, Elixir #{System.version()}, #{String.trim(cpus)} CPUs, Linux #{String.trim(kernel)}
#{rounds} rounds (medians shown); latency: #{samples} sequential calls; throughput: #{callers} callers for #{window_ms} ms
""")

IO.puts(
  String.pad_trailing("target", 30) <>
    String.pad_leading("p50 us", 10) <>
    String.pad_leading("p99 us", 10) <> String.pad_leading("calls/s (#{callers})", 18)
)

for {label, {p50, p99, cps}} <- summary do
  IO.puts(
    String.pad_trailing(label, 30) <>
      String.pad_leading(:erlang.float_to_binary(p50, decimals: 1), 10) <>
      String.pad_leading(:erlang.float_to_binary(p99, decimals: 1), 10) <>
      String.pad_leading(Integer.to_string(round(cps)), 18)
  )
end

[{_, {d50, d99, dcps}}, {_, {e50, e99, ecps}}, {_, {g50, _, gcps}}] = summary
p50_ratio = d50 / e50
cps_ratio = dcps / ecps

IO.puts("""

snakepit-cnode / echo C node: p50 #{Float.round(p50_ratio, 3)}x (target <= 1.15), \
p99 #{Float.round(d99 / e99, 3)}x, throughput #{Float.round(cps_ratio, 3)}x (target >= 0.9)
snakepit-cnode / BEAM gen_server: p50 #{Float.round(d50 / g50, 3)}x, throughput #{Float.round(dcps / gcps, 3)}x
p50 target #{if p50_ratio <= 1.15, do: "met", else: "missed"}, \
throughput target #{if cps_ratio >= 0.9, do: "met", else: "missed"}\
""")

OsProcess.stop(gs_proc)
OsProcess.stop(echo_proc)
Daemon.stop(daemon)
