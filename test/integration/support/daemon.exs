# SPDX-License-Identifier: Apache-2.0
#
# Helpers for the integration tests: OS processes started through ports (the daemon under test
# and extra Elixir peer nodes), their output, their exit status, and /proc readings. Every
# process is stopped by its own OS pid, never by name.

defmodule Snakepit.Test.OsProcess do
  @moduledoc """
  Runs one executable through a port, keeps every line it prints (stdout and stderr together),
  and reports its exit status. The OS pid is known at once, so tests can signal the process.
  """
  use GenServer

  defstruct [:server, :os_pid]

  @doc "Start `path` with `args` and extra environment variables `env` ([{name, value}])."
  def start(path, args, env \\ []) do
    {:ok, server} = GenServer.start(__MODULE__, {path, args, env})
    %__MODULE__{server: server, os_pid: GenServer.call(server, :os_pid)}
  end

  @doc "Every line printed so far."
  def lines(%__MODULE__{server: server}), do: GenServer.call(server, :lines)

  @doc """
  Wait for the first line matching `regex` (searching earlier lines too). Returns
  `{:ok, captures}`, `{:exited, status}` or `:timeout`.
  """
  def await_line(%__MODULE__{server: server}, regex, timeout) do
    GenServer.call(server, {:await_line, regex, timeout}, timeout + 1000)
  end

  @doc "Wait for the exit status: `{:ok, status}` or `:timeout`."
  def await_exit(%__MODULE__{server: server}, timeout) do
    GenServer.call(server, {:await_exit, timeout}, timeout + 1000)
  end

  @doc "The exit status, or nil while the process runs."
  def exit_status(%__MODULE__{server: server}), do: GenServer.call(server, :exit_status)

  @doc "Send `signal` (\"TERM\", \"KILL\", \"STOP\", ...) to the process by its OS pid."
  def signal(%__MODULE__{os_pid: os_pid}, signal) do
    {_, 0} = System.cmd("kill", ["-#{signal}", Integer.to_string(os_pid)])
    :ok
  end

  @doc "Stop the process and release its port. Returns the exit status."
  def stop(%__MODULE__{} = p, grace \\ 5000) do
    status = stop_process(p, grace)
    GenServer.stop(p.server)
    status
  end

  @doc """
  End the process (SIGTERM, then SIGKILL after `grace` ms) but keep its output readable.
  Returns the exit status.
  """
  def stop_process(%__MODULE__{} = p, grace \\ 5000) do
    case exit_status(p) do
      nil ->
        # A stopped process only acts on SIGTERM once it runs again.
        System.cmd("kill", ["-CONT", Integer.to_string(p.os_pid)], stderr_to_stdout: true)
        System.cmd("kill", ["-TERM", Integer.to_string(p.os_pid)], stderr_to_stdout: true)

        case await_exit(p, grace) do
          {:ok, status} ->
            status

          :timeout ->
            System.cmd("kill", ["-KILL", Integer.to_string(p.os_pid)], stderr_to_stdout: true)
            {:ok, status} = await_exit(p, 5000)
            status
        end

      status ->
        status
    end
  end

  @impl true
  def init({path, args, env}) do
    port =
      Port.open({:spawn_executable, path}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        {:line, 1_048_576},
        args: args,
        # A value of false removes the variable from the inherited environment.
        env: Enum.map(env, fn {k, v} -> {to_charlist(k), v && to_charlist(v)} end)
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    {:ok, %{port: port, os_pid: os_pid, lines: [], partial: "", status: nil, waiters: []}}
  end

  @impl true
  def handle_call(:os_pid, _from, s), do: {:reply, s.os_pid, s}
  def handle_call(:lines, _from, s), do: {:reply, Enum.reverse(s.lines), s}
  def handle_call(:exit_status, _from, s), do: {:reply, s.status, s}

  def handle_call({:await_line, regex, timeout}, from, s) do
    case find_line(Enum.reverse(s.lines), regex) do
      {:ok, captures} ->
        {:reply, {:ok, captures}, s}

      :none when s.status != nil ->
        {:reply, {:exited, s.status}, s}

      :none ->
        {:noreply, add_waiter(s, {:line, regex}, from, timeout)}
    end
  end

  def handle_call({:await_exit, timeout}, from, s) do
    if s.status != nil do
      {:reply, {:ok, s.status}, s}
    else
      {:noreply, add_waiter(s, :exit, from, timeout)}
    end
  end

  @impl true
  def handle_info({port, {:data, {:noeol, chunk}}}, %{port: port} = s) do
    {:noreply, %{s | partial: s.partial <> chunk}}
  end

  def handle_info({port, {:data, {:eol, chunk}}}, %{port: port} = s) do
    line = s.partial <> chunk
    s = %{s | partial: "", lines: [line | s.lines]}

    waiters =
      Enum.reject(s.waiters, fn {_ref, kind, from, timer} ->
        with {:line, regex} <- kind, [_ | _] = captures <- Regex.run(regex, line) do
          Process.cancel_timer(timer)
          GenServer.reply(from, {:ok, captures})
          true
        else
          _ -> false
        end
      end)

    {:noreply, %{s | waiters: waiters}}
  end

  def handle_info({port, {:exit_status, status}}, %{port: port} = s) do
    for {_ref, kind, from, timer} <- s.waiters do
      Process.cancel_timer(timer)
      GenServer.reply(from, if(kind == :exit, do: {:ok, status}, else: {:exited, status}))
    end

    {:noreply, %{s | status: status, waiters: []}}
  end

  def handle_info({:waiter_timeout, ref}, s) do
    {expired, rest} = Enum.split_with(s.waiters, fn {r, _, _, _} -> r == ref end)
    Enum.each(expired, fn {_, _, from, _} -> GenServer.reply(from, :timeout) end)
    {:noreply, %{s | waiters: rest}}
  end

  def handle_info(_other, s), do: {:noreply, s}

  defp add_waiter(s, kind, from, timeout) do
    ref = make_ref()
    timer = Process.send_after(self(), {:waiter_timeout, ref}, timeout)
    %{s | waiters: [{ref, kind, from, timer} | s.waiters]}
  end

  defp find_line(lines, regex) do
    Enum.find_value(lines, :none, fn line ->
      case Regex.run(regex, line) do
        nil -> nil
        captures -> {:ok, captures}
      end
    end)
  end
end

defmodule Snakepit.Test.Daemon do
  @moduledoc """
  The daemon under test: `snakepit-cnode` from the build directory (or `$SNAKEPIT_CNODE`),
  started with a unique short name and the runner's cookie, and ready once it printed its
  `READY node@host` line.
  """
  alias Snakepit.Test.OsProcess

  defstruct [:proc, :node, :sname]

  def binary do
    System.get_env("SNAKEPIT_CNODE") ||
      Path.expand("../../../build/cnode/snakepit-cnode", __DIR__)
  end

  def cookie, do: Atom.to_string(Node.get_cookie())

  @doc "A short node name no other test or run uses."
  def unique_name(prefix) do
    "#{prefix}_#{System.os_time(:millisecond) |> rem(100_000_000)}_#{System.unique_integer([:positive])}"
  end

  @doc """
  Start the daemon. Options: `:sname`, `:args` (more flags), `:env` (more environment),
  `:cookie_env` (false to leave SNAKEPIT_COOKIE unset), `:ready` (false to skip waiting for
  the READY line). Returns `{:ok, daemon}` or `{:error, reason}`.
  """
  def start(opts \\ []) do
    sname = Keyword.get_lazy(opts, :sname, fn -> unique_name("cnode") end)
    args = ["--sname", sname, "--http", "off"] ++ Keyword.get(opts, :args, [])

    cookie_env =
      if Keyword.get(opts, :cookie_env, true), do: [{"SNAKEPIT_COOKIE", cookie()}], else: []

    proc = OsProcess.start(binary(), args, cookie_env ++ Keyword.get(opts, :env, []))
    daemon = %__MODULE__{proc: proc, sname: sname}

    if Keyword.get(opts, :ready, true) do
      case OsProcess.await_line(proc, ~r/^READY (\S+)$/, 10_000) do
        {:ok, [_, node]} ->
          {:ok, %{daemon | node: String.to_atom(node)}}

        other ->
          lines = OsProcess.lines(proc)
          OsProcess.stop(proc)
          {:error, {:not_ready, other, lines}}
      end
    else
      {:ok, daemon}
    end
  end

  @doc """
  Start the daemon for the current test and stop it when the test ends. The test fails if the
  daemon printed a sanitizer report (when the build has -Db_sanitize).
  """
  def start!(opts \\ []) do
    {:ok, daemon} = start(opts)

    ExUnit.Callbacks.on_exit(fn ->
      OsProcess.stop_process(daemon.proc)
      output = lines(daemon)
      stop(daemon)

      if Enum.any?(output, &(&1 =~ ~r/runtime error:|Sanitizer/)) do
        raise "the daemon printed a sanitizer report:\n" <> Enum.join(output, "\n")
      end
    end)

    daemon
  end

  def os_pid(%__MODULE__{proc: proc}), do: proc.os_pid

  @doc "The distribution port, from the daemon's start-up log line."
  def dist_port(%__MODULE__{} = daemon) do
    [_, port] = Enum.find_value(lines(daemon), &Regex.run(~r/ on port (\d+),/, &1))
    String.to_integer(port)
  end

  def lines(%__MODULE__{proc: proc}), do: OsProcess.lines(proc)
  def stop(%__MODULE__{proc: proc}), do: OsProcess.stop(proc)

  @doc "Run the daemon to completion (for exit status tests): `{output, status}`."
  def run(args, env \\ [], timeout \\ 10_000) do
    proc = OsProcess.start(binary(), args, env)

    case OsProcess.await_exit(proc, timeout) do
      {:ok, status} ->
        lines = OsProcess.lines(proc)
        OsProcess.stop(proc)
        {Enum.join(lines, "\n"), status}

      :timeout ->
        lines = OsProcess.lines(proc)
        OsProcess.stop(proc)
        {Enum.join(lines, "\n"), :timeout}
    end
  end
end

defmodule Snakepit.Test.Peer do
  @moduledoc """
  Another Elixir node as an OS process of its own, running one mode of `peer.exs`. Its output
  lines tell the test what it did.
  """
  alias Snakepit.Test.{Daemon, OsProcess}

  @doc """
  Start `elixir --sname NAME --cookie COOKIE peer.exs MODE ARGS...`. Options: `:name`,
  `:cookie`, `:erl` (flags for the VM, e.g. "-kernel net_ticktime 4"), `:script` (another peer
  script in place of peer.exs). Stopped when the test ends. Returns `{process, node}`.
  """
  def start!(mode, args, opts \\ []) do
    name = Keyword.get_lazy(opts, :name, fn -> Daemon.unique_name("peer") end)
    cookie = Keyword.get(opts, :cookie, Daemon.cookie())
    erl = if opts[:erl], do: ["--erl", opts[:erl]], else: []
    script = Keyword.get_lazy(opts, :script, fn -> Path.expand("peer.exs", __DIR__) end)
    elixir = System.find_executable("elixir")
    argv = ["--sname", name, "--cookie", cookie] ++ erl ++ [script, mode | args]
    proc = OsProcess.start(elixir, argv)
    ExUnit.Callbacks.on_exit(fn -> OsProcess.stop(proc) end)
    {proc, String.to_atom("#{name}@#{host()}")}
  end

  @doc "The host part of this node's name, which peers share."
  def host do
    [_, host] = node() |> Atom.to_string() |> String.split("@")
    host
  end
end

defmodule Snakepit.Test.Proc do
  @moduledoc "Readings of another process from /proc."

  @doc "Number of open file descriptors."
  def fd_count(os_pid), do: File.ls!("/proc/#{os_pid}/fd") |> length()

  @doc "User plus system CPU time in clock ticks (fields 14 and 15 of /proc/PID/stat)."
  def cpu_ticks(os_pid) do
    stat = File.read!("/proc/#{os_pid}/stat")
    # The command name may contain spaces, so the fields are counted from the last ')'.
    fields = stat |> String.split(") ") |> List.last() |> String.split()
    String.to_integer(Enum.at(fields, 11)) + String.to_integer(Enum.at(fields, 12))
  end

  @doc "Whether epmd lists `sname`, from the output of `epmd -names`."
  def epmd_registered?(sname) do
    {out, 0} = System.cmd("epmd", ["-names"])
    Regex.match?(~r/^name #{Regex.escape(sname)} at port/m, out)
  end
end
