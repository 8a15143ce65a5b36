# SPDX-License-Identifier: Apache-2.0
#
# Modules shared by the benchmark programs pool_bench.exs, session_bench.exs and burst_bench.exs:
# an OS process run through a port and stopped by its pid, sample statistics, and on-CPU time.

defmodule Bench.OsProcess do
  @moduledoc """
  One executable run through a port. Every output line (stdout and stderr together) is kept
  with the monotonic time it arrived, so the benchmark can wait for a line and read timings.
  """
  use GenServer

  defstruct [:server, :os_pid]

  def start(path, args, env \\ []) do
    {:ok, server} = GenServer.start(__MODULE__, {path, args, env})
    %__MODULE__{server: server, os_pid: GenServer.call(server, :os_pid)}
  end

  @doc "Every line so far as `{monotonic_us, line}`, oldest first."
  def lines(%__MODULE__{server: server}), do: GenServer.call(server, :lines)

  @doc "Wait for the first line matching `regex`; returns its captures or raises."
  def await_line(%__MODULE__{server: server} = p, regex, timeout) do
    case GenServer.call(server, {:await_line, regex, timeout}, timeout + 1000) do
      {:ok, captures} ->
        captures

      other ->
        tail = p |> lines() |> Enum.take(-20) |> Enum.map_join("\n", &elem(&1, 1))
        raise "#{inspect(regex)} not seen (#{inspect(other)}); last lines:\n#{tail}"
    end
  end

  @doc "Send SIGTERM by OS pid, then SIGKILL after `grace` ms, and wait for the exit."
  def stop(%__MODULE__{server: server, os_pid: os_pid}, grace \\ 5000) do
    kill("TERM", os_pid)

    if GenServer.call(server, {:await_exit, grace}, grace + 1000) == :timeout do
      kill("KILL", os_pid)
      GenServer.call(server, {:await_exit, 5000}, 6000)
    end

    GenServer.stop(server)
  end

  defp kill(signal, os_pid) do
    System.cmd("kill", ["-#{signal}", Integer.to_string(os_pid)], stderr_to_stdout: true)
  end

  @impl true
  def init({path, args, env}) do
    port =
      Port.open({:spawn_executable, path}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        {:line, 65_536},
        args: args,
        env: Enum.map(env, fn {k, v} -> {to_charlist(k), to_charlist(v)} end)
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    {:ok, %{port: port, os_pid: os_pid, lines: [], partial: "", status: nil, waiters: []}}
  end

  @impl true
  def handle_call(:os_pid, _from, s), do: {:reply, s.os_pid, s}
  def handle_call(:lines, _from, s), do: {:reply, Enum.reverse(s.lines), s}

  def handle_call({:await_line, regex, timeout}, from, s) do
    case find(Enum.reverse(s.lines), regex) do
      {:ok, captures} -> {:reply, {:ok, captures}, s}
      :none when s.status != nil -> {:reply, {:exited, s.status}, s}
      :none -> {:noreply, wait(s, {:line, regex}, from, timeout)}
    end
  end

  def handle_call({:await_exit, timeout}, from, s) do
    if s.status, do: {:reply, {:ok, s.status}, s}, else: {:noreply, wait(s, :exit, from, timeout)}
  end

  @impl true
  def handle_info({port, {:data, {:noeol, chunk}}}, %{port: port} = s) do
    {:noreply, %{s | partial: s.partial <> chunk}}
  end

  def handle_info({port, {:data, {:eol, chunk}}}, %{port: port} = s) do
    line = {System.monotonic_time(:microsecond), s.partial <> chunk}
    s = %{s | lines: [line | s.lines], partial: ""}

    {done, waiting} =
      Enum.split_with(s.waiters, fn
        {{:line, regex}, _, _} -> find([line], regex) != :none
        _ -> false
      end)

    for {{:line, regex}, from, timer} <- done do
      Process.cancel_timer(timer)
      GenServer.reply(from, find([line], regex))
    end

    {:noreply, %{s | waiters: waiting}}
  end

  def handle_info({port, {:exit_status, status}}, %{port: port} = s) do
    for {kind, from, timer} <- s.waiters do
      Process.cancel_timer(timer)
      GenServer.reply(from, if(kind == :exit, do: {:ok, status}, else: {:exited, status}))
    end

    {:noreply, %{s | status: status, waiters: []}}
  end

  def handle_info({:waiter_timeout, from}, s) do
    GenServer.reply(from, :timeout)
    {:noreply, %{s | waiters: Enum.reject(s.waiters, fn {_, f, _} -> f == from end)}}
  end

  defp wait(s, kind, from, timeout) do
    timer = Process.send_after(self(), {:waiter_timeout, from}, timeout)
    %{s | waiters: [{kind, from, timer} | s.waiters]}
  end

  defp find(lines, regex) do
    Enum.find_value(lines, :none, fn {_, line} ->
      case Regex.run(regex, line, capture: :all_but_first) do
        nil -> nil
        captures -> {:ok, captures}
      end
    end)
  end
end

defmodule Bench.Stats do
  @moduledoc "Percentiles, medians and timings of samples in microseconds."

  def percentile(samples, p) do
    sorted = Enum.sort(samples)
    Enum.at(sorted, min(length(sorted) - 1, trunc(length(sorted) * p / 100)))
  end

  def median(samples), do: percentile(samples, 50)

  @doc "Time `calls` calls of `fun` (after `warmup` untimed ones); returns microseconds each."
  def time_calls(fun, calls, warmup \\ 0) do
    for _ <- 1..warmup//1, do: fun.()

    for _ <- 1..calls do
      t0 = System.monotonic_time(:nanosecond)
      fun.()
      (System.monotonic_time(:nanosecond) - t0) / 1000
    end
  end

  def summary(samples) do
    %{
      p50: percentile(samples, 50),
      p95: percentile(samples, 95),
      p99: percentile(samples, 99),
      mean: Enum.sum(samples) / length(samples)
    }
  end
end

defmodule Bench.Cpu do
  @moduledoc "On-CPU time of processes from /proc/PID/task/TID/schedstat, in nanoseconds."

  @doc "The on-CPU time of every thread of the processes `os_pids`, summed."
  def ns(os_pids) do
    for pid <- os_pids, path <- Path.wildcard("/proc/#{pid}/task/*/schedstat"), reduce: 0 do
      sum ->
        case File.read(path) do
          {:ok, text} -> sum + (text |> String.split() |> hd() |> String.to_integer())
          # A thread that ended between the listing and the read.
          {:error, _} -> sum
        end
    end
  end
end
