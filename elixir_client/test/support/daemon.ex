defmodule SnakepitTest.Daemon do
  @moduledoc """
  Starts real `snakepit-cnode` daemons for the tests and stops them by OS pid.

  The binary is `$SNAKEPIT_BUILD_DIR/cnode/snakepit-cnode`, by default
  `../build/cnode/snakepit-cnode` relative to the Mix project. Each daemon gets a node name
  unique to this test run, the test node's cookie through `SNAKEPIT_COOKIE`, and `--http off`.
  """

  @ready_timeout_ms 30_000

  # The daemon runs only modules of configured libraries; these are the ones the tests call.
  @test_libraries ~w(builtins os json time importlib itertools)

  @doc "Returns the arguments every test daemon gets: a small pool and the tests' libraries."
  def default_args do
    ["--pool-size", "2"] ++ Enum.flat_map(@test_libraries, &["--library", &1])
  end

  defstruct [:node, :sname, :os_pid, :port, :owner]

  @type t :: %__MODULE__{
          node: node(),
          sname: String.t(),
          os_pid: pos_integer(),
          port: port(),
          owner: pid()
        }

  @doc "Returns the path of the daemon binary."
  def executable do
    build = System.get_env("SNAKEPIT_BUILD_DIR") || Path.expand("../build", File.cwd!())
    Path.join([build, "cnode", "snakepit-cnode"])
  end

  @doc "Returns a node short name unique to this test run."
  def unique_sname(label) do
    "sp_#{label}_#{System.get_env("SNAKEPIT_TEST_RUN", "run")}_#{System.unique_integer([:positive])}"
  end

  @doc """
  Starts a daemon and waits for its `READY` line; returns the daemon or raises with its output.

  Options: `:sname` (default: a unique one), `:args` (more arguments, default
  `default_args/0`).
  A process that owns the port is spawned, so the daemon outlives the calling test process
  until `stop/1` kills it.
  """
  def start!(opts \\ []) do
    sname = Keyword.get_lazy(opts, :sname, fn -> unique_sname("d") end)
    args = ["--sname", sname, "--http", "off"] ++ Keyword.get(opts, :args, default_args())
    env = [{~c"SNAKEPIT_COOKIE", Atom.to_charlist(Node.get_cookie())}]
    caller = self()

    owner =
      spawn(fn ->
        port =
          Port.open({:spawn_executable, executable()}, [
            :binary,
            :exit_status,
            :stderr_to_stdout,
            {:line, 4096},
            args: args,
            env: env
          ])

        {:os_pid, os_pid} = Port.info(port, :os_pid)
        send(caller, {:daemon_port, self(), port, os_pid})
        drain(port, caller, [])
      end)

    receive do
      {:daemon_port, ^owner, port, os_pid} ->
        daemon = %__MODULE__{sname: sname, os_pid: os_pid, port: port, owner: owner}
        await_ready(daemon)
    after
      5_000 -> raise "failed to open a port for #{executable()}"
    end
  end

  # Reads the daemon's output for as long as it runs, so that its pipe never fills. The first
  # READY line goes to the caller of start!/1, and so does an exit before READY. An exit after
  # READY is not reported, so that tests that kill a daemon find no extra message.
  defp drain(port, caller, tail, ready? \\ false) do
    receive do
      {^port, {:data, {:eol, "READY " <> name}}} ->
        send(caller, {:daemon_ready, self(), String.to_atom(name)})
        drain(port, caller, tail, true)

      {^port, {:data, {_eol, line}}} ->
        if System.get_env("SNAKEPIT_TEST_DAEMON_LOG"), do: IO.puts(:stderr, "daemon: " <> line)
        drain(port, caller, Enum.take([line | tail], 30), ready?)

      {^port, {:exit_status, status}} ->
        unless ready?, do: send(caller, {:daemon_exit, self(), status, Enum.reverse(tail)})

      {:tail, from} ->
        send(from, {:daemon_tail, self(), Enum.reverse(tail)})
        drain(port, caller, tail, ready?)
    end
  end

  defp await_ready(%{owner: owner} = daemon) do
    receive do
      {:daemon_ready, ^owner, node} ->
        %{daemon | node: node}

      {:daemon_exit, ^owner, status, tail} ->
        raise "#{executable()} exited with status #{status} before READY:\n" <>
                Enum.join(tail, "\n")
    after
      @ready_timeout_ms ->
        send(owner, {:tail, self()})

        tail =
          receive do
            {:daemon_tail, ^owner, lines} -> lines
          after
            1_000 -> []
          end

        children = children(daemon.os_pid)
        stop(daemon)

        raise "#{executable()} (os pid #{daemon.os_pid}) printed no READY line within " <>
                "#{@ready_timeout_ms} ms; its children: #{inspect(children)}; its output:\n" <>
                Enum.join(tail, "\n")
    end
  end

  @doc "Sends `signal` (\"TERM\", \"KILL\", \"STOP\", \"CONT\") to the daemon's OS pid."
  def signal(%__MODULE__{os_pid: os_pid}, signal) do
    {_output, 0} = System.cmd("kill", ["-" <> signal, Integer.to_string(os_pid)])
    :ok
  end

  @doc "Tells whether the local epmd lists the node name `sname`."
  def registered?(sname) do
    {:ok, names} = :erl_epmd.names()
    Enum.any?(names, fn {name, _port} -> to_string(name) == sname end)
  end

  @doc "Lists the child processes of OS process `os_pid` as `ps` would: pid, state, command."
  def children(os_pid) do
    for stat_path <- Path.wildcard("/proc/[0-9]*/stat"),
        {:ok, stat} <- [File.read(stat_path)],
        [_all, pid, command, state, ppid] <-
          [Regex.run(~r/^(\d+) \((.*)\) (\S) (\d+) /, stat)],
        ppid == Integer.to_string(os_pid) do
      "#{pid} #{state} #{command}"
    end
  end

  @doc "Tells whether the daemon's OS process still exists (and is not a zombie)."
  def alive?(%__MODULE__{os_pid: os_pid}), do: os_process_alive?(os_pid)

  @doc "Tells whether OS process `os_pid` exists and is not a zombie."
  def os_process_alive?(os_pid) do
    case File.read("/proc/#{os_pid}/stat") do
      {:ok, stat} -> not String.contains?(stat, ") Z ")
      {:error, _reason} -> false
    end
  end

  @doc """
  Stops the daemon by its OS pid: SIGCONT (in case a test stopped it), SIGTERM, and SIGKILL
  after 5 s. Returns once the process is gone.
  """
  def stop(%__MODULE__{} = daemon) do
    if alive?(daemon) do
      System.cmd("kill", ["-CONT", Integer.to_string(daemon.os_pid)], stderr_to_stdout: true)
      System.cmd("kill", ["-TERM", Integer.to_string(daemon.os_pid)], stderr_to_stdout: true)

      unless wait_gone(daemon.os_pid, 5_000) do
        System.cmd("kill", ["-KILL", Integer.to_string(daemon.os_pid)], stderr_to_stdout: true)
        wait_gone(daemon.os_pid, 2_000)
      end
    end

    :ok
  end

  @doc "Waits up to `timeout` ms for OS process `os_pid` to be gone."
  def wait_gone(os_pid, timeout) do
    deadline = System.monotonic_time(:millisecond) + timeout
    wait_gone_until(os_pid, deadline)
  end

  defp wait_gone_until(os_pid, deadline) do
    cond do
      not os_process_alive?(os_pid) ->
        true

      System.monotonic_time(:millisecond) > deadline ->
        false

      true ->
        Process.sleep(20)
        wait_gone_until(os_pid, deadline)
    end
  end
end
