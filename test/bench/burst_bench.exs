# SPDX-License-Identifier: Apache-2.0
#
# Concurrent :ping callers on one connection, run by test/bench/burst_bench.sh. For each daemon
# binary it prints calls/s and the daemon's on-CPU time and write syscalls per call, read from
# /proc. With a second binary (BENCH_BASELINE_CNODE) the two run in alternating rounds, so that
# a change can be compared with the build before it in the same conditions.

Code.require_file("support.exs", __DIR__)

defmodule Bench.Burst do
  @moduledoc "The rounds and the table."

  def env(name), do: System.fetch_env!(name)

  # Write syscalls of the process so far (write, writev, sendmsg, ...), from /proc/PID/io.
  defp writes(os_pid) do
    [_, n] = Regex.run(~r/^syscw: (\d+)$/m, File.read!("/proc/#{os_pid}/io"))
    String.to_integer(n)
  end

  defp start(binary, cookie) do
    sname = "burst_#{System.unique_integer([:positive])}"
    env = [{"SNAKEPIT_COOKIE", cookie}]
    args = ["--sname", sname, "--http", "off", "--pool-size", "1"]
    proc = Bench.OsProcess.start(binary, args, env)
    [node] = Bench.OsProcess.await_line(proc, ~r/^READY (\S+)$/, 10_000)
    node = String.to_atom(node)
    true = Node.connect(node)
    %{proc: proc, node: node}
  end

  defp ping(node), do: :pong = GenServer.call({:snakepit, node}, :ping, 60_000)

  @doc "One round: `callers` processes make `calls` pings in all; returns the readings."
  def round(binary, callers, calls) do
    cookie = Atom.to_string(Node.get_cookie())
    d = start(binary, cookie)
    for _ <- 1..2000, do: ping(d.node)
    os_pid = d.proc.os_pid
    {cpu0, writes0} = {Bench.Cpu.ns([os_pid]), writes(os_pid)}
    t0 = System.monotonic_time(:microsecond)
    per_caller = div(calls, callers)

    1..callers
    |> Enum.map(fn _ -> Task.async(fn -> for _ <- 1..per_caller, do: ping(d.node) end) end)
    |> Enum.each(&Task.await(&1, :infinity))

    elapsed_s = (System.monotonic_time(:microsecond) - t0) / 1.0e6
    total_calls = per_caller * callers

    reading = %{
      calls_per_s: total_calls / elapsed_s,
      cpu_us_per_call: (Bench.Cpu.ns([os_pid]) - cpu0) / 1000 / total_calls,
      writes_per_call: (writes(os_pid) - writes0) / total_calls
    }

    Bench.OsProcess.stop(d.proc)
    reading
  end

  def main do
    callers = String.to_integer(env("BENCH_CALLERS"))
    calls = String.to_integer(env("BENCH_CALLS"))
    rounds = String.to_integer(env("BENCH_ROUNDS"))

    binaries =
      [{"this build", env("SNAKEPIT_CNODE")}] ++
        case System.get_env("BENCH_BASELINE_CNODE", "") do
          "" -> []
          path -> [{"baseline", path}]
        end

    readings =
      for _ <- 1..rounds, {label, binary} <- binaries, reduce: %{} do
        acc ->
          Map.update(
            acc,
            label,
            [round(binary, callers, calls)],
            &[round(binary, callers, calls) | &1]
          )
      end

    IO.puts("#{callers} callers, #{calls} pings per round, #{rounds} rounds; medians over rounds")

    IO.puts(
      String.pad_trailing("daemon", 12) <>
        String.pad_leading("calls/s", 10) <>
        String.pad_leading("CPU us/call", 14) <> String.pad_leading("writes/call", 14)
    )

    for {label, binary} <- binaries do
      rs = readings[label]
      median = fn key -> rs |> Enum.map(& &1[key]) |> Bench.Stats.median() end

      IO.puts(
        String.pad_trailing(label, 12) <>
          String.pad_leading("#{round(median.(:calls_per_s))}", 10) <>
          String.pad_leading(:erlang.float_to_binary(median.(:cpu_us_per_call), decimals: 2), 14) <>
          String.pad_leading(:erlang.float_to_binary(median.(:writes_per_call), decimals: 3), 14) <>
          "  #{binary}"
      )
    end
  end
end

Bench.Burst.main()
