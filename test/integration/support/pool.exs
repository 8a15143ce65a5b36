# SPDX-License-Identifier: Apache-2.0
#
# Helpers for the pool and session tests. They start the daemon from an INI text with the Python
# fixtures of test/fixtures/python on its path, make calls and streams, read the daemon's child
# processes from /proc, and run a real redis-server on a free loopback port.

defmodule Snakepit.Test.Pool do
  @moduledoc """
  The daemon with a worker pool. Tests pass the config as INI text; the fixture modules are on
  the workers' PYTHONPATH, and `pool_fixtures` is allowed unless the text says otherwise.
  """
  alias Snakepit.Test.{Daemon, OsProcess}

  def fixtures_dir, do: Path.expand("../../fixtures/python", __DIR__)

  @doc "Write `ini` to a fresh file in the temporary directory and return its path."
  def write_config(ini) do
    path = Path.join(System.tmp_dir!(), "snakepit-pool-#{System.unique_integer([:positive])}.ini")
    File.write!(path, ini)
    path
  end

  @doc """
  Start the daemon with the config `ini` and connect to it. Options: `:args` (more flags),
  `:env` (more environment), `:sname`, `:stop` (false to leave stopping to the test). The daemon
  is stopped when the test (or, from setup_all, the module) ends.
  """
  def start_daemon!(ini, opts \\ []) do
    path = write_config(ini)

    daemon =
      case Daemon.start(
             sname: Keyword.get_lazy(opts, :sname, fn -> Daemon.unique_name("pool") end),
             args: ["--config", path] ++ Keyword.get(opts, :args, []),
             env: [{"PYTHONPATH", fixtures_dir()}] ++ Keyword.get(opts, :env, [])
           ) do
        {:ok, daemon} ->
          daemon

        {:error, {:not_ready, status, lines}} ->
          raise "the daemon did not start (#{inspect(status)}); its output:\n" <>
                  Enum.join(lines, "\n")
      end

    if Keyword.get(opts, :stop, true) do
      ExUnit.Callbacks.on_exit(fn ->
        status = stop_quietly(daemon)
        File.rm(path)

        # A daemon the test left running must shut down cleanly on SIGTERM.
        if status not in [0, :stopped] do
          raise "the daemon #{daemon.node} exited with status #{inspect(status)} after SIGTERM"
        end
      end)
    end

    true = Node.connect(daemon.node)
    daemon
  end

  @doc "Stop the daemon unless a test stopped it already: its exit status, or `:stopped`."
  def stop_quietly(daemon) do
    Daemon.stop(daemon)
  catch
    :exit, _ -> :stopped
  end

  @doc "INI text of the default pool with `settings` (a keyword list) and the fixtures allowed."
  def pool_ini(settings, extra \\ "") do
    keys = Enum.map_join(settings, "\n", fn {k, v} -> "#{k} = #{v}" end)

    """
    [pool default]
    #{keys}

    [library pool_fixtures]
    module = pool_fixtures
    #{extra}
    """
  end

  def execute(node, command, args, opts \\ [], timeout \\ 60_000) do
    GenServer.call({:snakepit, node}, {:execute, command, args, opts}, timeout)
  end

  @doc "Call `python.pool_fixtures.<name>`."
  def fixture(node, name, args, opts \\ [], timeout \\ 60_000) do
    execute(node, "python.pool_fixtures.#{name}", args, opts, timeout)
  end

  @doc """
  Send a request as a `$gen_call` with a plain reference tag and return the tag. Unlike an alias
  tag, a plain tag lets a second reply to the same call land in the mailbox, where a test can
  see it.
  """
  def send_call(node, request) do
    tag = make_ref()
    :erlang.send({:snakepit, node}, {:"$gen_call", {self(), tag}, request})
    tag
  end

  @doc "Wait for the reply to `send_call/2`: the reply term, or `:no_reply`."
  def await_reply(tag, timeout) do
    receive do
      {^tag, reply} -> reply
    after
      timeout -> :no_reply
    end
  end

  @doc """
  Start a stream and collect its messages: `{:ok, chunks, final}` with `final` the `{:done, r}`
  or `{:error, e}` message, or `{:error, reply}` when the stream did not open.
  """
  def stream(node, command, args, opts \\ [], timeout \\ 30_000) do
    case GenServer.call({:snakepit, node}, {:execute_stream, command, args, opts}, timeout) do
      {:ok, ref} -> collect(ref, [], timeout)
      other -> {:error, other}
    end
  end

  defp collect(ref, chunks, timeout) do
    receive do
      {:snakepit_stream, ^ref, {:chunk, term}} -> collect(ref, [term | chunks], timeout)
      {:snakepit_stream, ^ref, final} -> {:ok, Enum.reverse(chunks), final}
    after
      timeout -> {:ok, Enum.reverse(chunks), :no_final_message}
    end
  end

  @doc "Milliseconds that `fun` takes, with its result: `{ms, result}`."
  def timed(fun) do
    start = System.monotonic_time(:millisecond)
    result = fun.()
    {System.monotonic_time(:millisecond) - start, result}
  end

  @doc "Poll `fun` every 20 ms until it returns a truthy value or `timeout` ms pass."
  def wait_until(fun, timeout \\ 5000) do
    deadline = System.monotonic_time(:millisecond) + timeout
    poll(fun, deadline)
  end

  defp poll(fun, deadline) do
    case fun.() do
      falsy when falsy in [nil, false] ->
        if System.monotonic_time(:millisecond) >= deadline do
          nil
        else
          Process.sleep(20)
          poll(fun, deadline)
        end

      value ->
        value
    end
  end

  @doc "The OS pid of the pool's template interpreter, from the daemon's latest log line about it."
  def zygote_pid(daemon) do
    Daemon.lines(daemon)
    |> Enum.flat_map(fn line ->
      case Regex.run(~r/started the template interpreter .* \(pid (\d+)\)/, line) do
        [_, pid] -> [String.to_integer(pid)]
        nil -> []
      end
    end)
    |> List.last()
  end

  @doc "OS pids of the daemon's worker processes: its children except the template."
  def worker_pids(daemon) do
    zygote = zygote_pid(daemon)

    Snakepit.Test.ProcTree.children(Daemon.os_pid(daemon))
    |> Enum.map(& &1.pid)
    |> Enum.reject(&(&1 == zygote))
    |> Enum.sort()
  end
end

defmodule Snakepit.Test.ProcTree do
  @moduledoc "Processes and their parents, read from /proc."

  @doc "Every process as %{pid, ppid, state, comm}."
  def all do
    File.ls!("/proc")
    |> Enum.filter(&Regex.match?(~r/^\d+$/, &1))
    |> Enum.flat_map(fn pid ->
      case File.read("/proc/#{pid}/stat") do
        {:ok, stat} -> [parse_stat(stat)]
        {:error, _} -> []
      end
    end)
  end

  defp parse_stat(stat) do
    # The command name is in parentheses and may contain spaces, so split at the last ") ".
    {index, _} = :binary.matches(stat, ") ") |> List.last()
    [pid, comm] = binary_part(stat, 0, index) |> String.split(" (", parts: 2)
    rest = binary_part(stat, index + 2, byte_size(stat) - index - 2)
    [state, ppid | _] = String.split(rest)
    %{pid: String.to_integer(pid), ppid: String.to_integer(ppid), state: state, comm: comm}
  end

  def children(pid), do: Enum.filter(all(), &(&1.ppid == pid))

  def descendants(pid) do
    procs = all()
    walk(procs, [pid], [])
  end

  defp walk(_procs, [], found), do: found

  defp walk(procs, [pid | rest], found) do
    kids = Enum.filter(procs, &(&1.ppid == pid))
    walk(procs, rest ++ Enum.map(kids, & &1.pid), found ++ kids)
  end

  @doc "Whether the process exists and is not a zombie."
  def alive?(pid) do
    case File.read("/proc/#{pid}/stat") do
      {:ok, stat} -> parse_stat(stat).state != "Z"
      {:error, _} -> false
    end
  end

  def zombie_children(pid), do: Enum.filter(children(pid), &(&1.state == "Z"))
end

defmodule Snakepit.Test.Redis do
  @moduledoc """
  A real redis-server on a free loopback port, without persistence, stopped by its OS pid.
  """
  alias Snakepit.Test.OsProcess

  defstruct [:proc, :port, :url]

  def free_port do
    {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(socket)
    :gen_tcp.close(socket)
    port
  end

  @doc "Start redis-server (on `port`, or a free one) and wait until it accepts connections."
  def start!(port \\ nil) do
    port = port || free_port()
    server = System.find_executable("redis-server") || raise "redis-server is not installed"

    args = [
      "--port",
      Integer.to_string(port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
      "--protected-mode",
      "yes"
    ]

    proc = OsProcess.start(server, args)

    case OsProcess.await_line(proc, ~r/Ready to accept connections/, 10_000) do
      {:ok, _} ->
        :ok

      other ->
        raise "redis-server did not start: #{inspect(other)} #{inspect(OsProcess.lines(proc))}"
    end

    %__MODULE__{proc: proc, port: port, url: "redis://127.0.0.1:#{port}/0"}
  end

  @doc "Start redis-server and stop it when the test (or module) ends."
  def start_linked!(port \\ nil) do
    redis = start!(port)
    ExUnit.Callbacks.on_exit(fn -> stop(redis) end)
    redis
  end

  def stop(%__MODULE__{proc: proc}) do
    if OsProcess.exit_status(proc) == nil, do: OsProcess.stop(proc)
    :ok
  catch
    :exit, _ -> :ok
  end

  @doc "Kill the server with SIGKILL and wait for its exit."
  def kill(%__MODULE__{proc: proc}) do
    OsProcess.signal(proc, "KILL")
    {:ok, _} = OsProcess.await_exit(proc, 5000)
    :ok
  end
end

