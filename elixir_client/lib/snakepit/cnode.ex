defmodule Snakepit.CNode do
  @moduledoc """
  Starts a local `snakepit-cnode` daemon under a supervisor, owned by this node.

      children = [
        {Snakepit.CNode,
         executable: "/usr/bin/snakepit-cnode", sname: "snakepit_app", args: ["--http", "off"]}
      ]

  The daemon runs as a Port with `--owner <this node>`, so it also exits if this node goes
  away without stopping it. `start_link/1` returns only after the daemon printed its
  `READY <node>` line, and fails with the daemon's last output lines when the daemon exits
  first or `:ready_timeout` passes. With `connect: true` (the default) the daemon's node is
  then added to `Snakepit.Connection`, or only connected with `Node.connect/1` when the
  `:snakepit` application is not running. With `connect: false`, connect to the node yourself:
  an owned daemon exits when its owner has not connected within the daemon's grace period.

  Stopping the child stops the daemon: the launcher sends SIGTERM to the daemon's OS pid, waits
  up to `:stop_timeout` for it to exit, then sends SIGKILL.

  Options:

    * `:executable` (required) - path of the `snakepit-cnode` binary.
    * `:sname` or `:name` - the daemon's node name (default: the daemon's own, `snakepit`).
    * `:args` - more command-line arguments, e.g. `["--config", "/etc/snakepit.ini"]`.
    * `:env` - environment variables as `[{"NAME", "value"}]`.
    * `:ready_timeout` - milliseconds to wait for `READY` (default 30000).
    * `:stop_timeout` - milliseconds to wait for exit after SIGTERM (default 10000).
    * `:connect` - add the node to `Snakepit.Connection` when ready (default `true`).
    * `:log_level` - Logger level for the daemon's output lines, or `false` (default `:info`).
    * `:id` - child id (default `Snakepit.CNode`).
  """

  use GenServer
  require Logger

  # Lines of daemon output kept to explain a failed start.
  @tail_lines 20

  @type option ::
          {:executable, Path.t()}
          | {:sname, String.t()}
          | {:name, String.t()}
          | {:args, [String.t()]}
          | {:env, [{String.t(), String.t()}]}
          | {:ready_timeout, pos_integer()}
          | {:stop_timeout, pos_integer()}
          | {:connect, boolean()}
          | {:log_level, Logger.level() | false}
          | {:id, term()}

  @doc """
  Returns a child spec whose shutdown time covers `:stop_timeout`.
  """
  @spec child_spec([option()]) :: Supervisor.child_spec()
  def child_spec(opts) do
    %{
      id: Keyword.get(opts, :id, __MODULE__),
      start: {__MODULE__, :start_link, [opts]},
      shutdown: Keyword.get(opts, :stop_timeout, 10_000) + 1_000
    }
  end

  @doc """
  Starts the daemon and waits for its `READY` line.
  """
  @spec start_link([option()]) :: GenServer.on_start()
  def start_link(opts), do: GenServer.start_link(__MODULE__, opts)

  @doc """
  Returns the daemon's node name (from its `READY` line) and OS pid.
  """
  @spec info(GenServer.server()) :: %{node: node(), os_pid: non_neg_integer()}
  def info(server), do: GenServer.call(server, :info)

  @doc """
  Builds the daemon's command-line arguments from the options.

      iex> Snakepit.CNode.command_args([sname: "sp", args: ["--http", "off"]], :"app@host")
      ["--owner", "app@host", "--sname", "sp", "--http", "off"]
  """
  @spec command_args([option()], node()) :: [String.t()]
  def command_args(opts, owner) do
    name_args =
      cond do
        sname = opts[:sname] -> ["--sname", sname]
        name = opts[:name] -> ["--name", name]
        true -> []
      end

    ["--owner", Atom.to_string(owner)] ++ name_args ++ Keyword.get(opts, :args, [])
  end

  ## Server

  @impl true
  def init(opts) do
    # Trapping exits makes the supervisor's shutdown run terminate/2, which stops the daemon.
    Process.flag(:trap_exit, true)

    with {:ok, executable} <- fetch_executable(opts),
         :ok <- check_alive() do
      port =
        Port.open({:spawn_executable, executable}, [
          :binary,
          :exit_status,
          :stderr_to_stdout,
          {:line, 4096},
          args: command_args(opts, node()),
          env: Enum.map(Keyword.get(opts, :env, []), &charlist_pair/1)
        ])

      {:os_pid, os_pid} = Port.info(port, :os_pid)

      state = %{
        port: port,
        os_pid: os_pid,
        node: nil,
        tail: [],
        partial: "",
        log_level: Keyword.get(opts, :log_level, :info),
        stop_timeout: Keyword.get(opts, :stop_timeout, 10_000)
      }

      deadline = System.monotonic_time(:millisecond) + Keyword.get(opts, :ready_timeout, 30_000)
      await_ready(state, deadline, Keyword.get(opts, :connect, true))
    end
  end

  @impl true
  def handle_call(:info, _from, state) do
    {:reply, %{node: state.node, os_pid: state.os_pid}, state}
  end

  @impl true
  def handle_info({port, {:data, data}}, %{port: port} = state) do
    {_lines, state} = take_line(state, data)
    {:noreply, state}
  end

  def handle_info({port, {:exit_status, status}}, %{port: port} = state) do
    Logger.error("snakepit-cnode #{state.node} exited with status #{status}")
    {:stop, {:cnode_exited, status}, %{state | port: nil}}
  end

  def handle_info({:EXIT, port, _reason}, %{port: port} = state), do: {:noreply, state}
  def handle_info({:EXIT, _from, reason}, state), do: {:stop, reason, state}
  def handle_info(_message, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, state) do
    forget_node(state.node)
    if state.port, do: stop_daemon(state), else: :ok
  end

  ## Start-up

  defp fetch_executable(opts) do
    case Keyword.fetch(opts, :executable) do
      {:ok, path} when is_binary(path) ->
        if File.regular?(path),
          do: {:ok, path},
          else: {:stop, {:cnode_not_found, "snakepit-cnode executable not found: #{path}"}}

      _missing ->
        {:stop, {:cnode_not_found, "Snakepit.CNode needs the :executable option"}}
    end
  end

  defp check_alive do
    if Node.alive?(),
      do: :ok,
      else: {:stop, {:not_distributed, "this node is not distributed: start it with --sname"}}
  end

  defp await_ready(state, deadline, connect?) do
    wait_ms = max(deadline - System.monotonic_time(:millisecond), 0)
    port = state.port

    receive do
      {^port, {:data, data}} ->
        case take_line(state, data) do
          {["READY " <> name | _rest], state} ->
            ready(%{state | node: String.to_atom(name)}, connect?)

          {_lines, state} ->
            await_ready(state, deadline, connect?)
        end

      {^port, {:exit_status, status}} ->
        {:stop,
         {:cnode_exited,
          "snakepit-cnode exited with status #{status} before READY" <> tail(state)}}
    after
      wait_ms ->
        stop_daemon(state)

        {:stop,
         {:cnode_ready_timeout, "snakepit-cnode printed no READY line in time" <> tail(state)}}
    end
  end

  defp ready(state, connect?) do
    Logger.info("snakepit-cnode #{state.node} is ready (os pid #{state.os_pid})")
    if connect?, do: connect_node(state.node)
    {:ok, %{state | tail: []}}
  end

  defp connect_node(node) do
    if Process.whereis(Snakepit.Connection),
      do: Snakepit.Connection.add_node(node),
      else: Node.connect(node)
  end

  # Port line mode splits lines longer than the buffer into :noeol pieces; join them.
  defp take_line(state, {:noeol, piece}), do: {[], %{state | partial: state.partial <> piece}}

  defp take_line(state, {:eol, piece}) do
    line = state.partial <> piece
    log_line(state, line)
    tail = Enum.take([line | state.tail], @tail_lines)
    {[line], %{state | partial: "", tail: tail}}
  end

  defp log_line(%{log_level: false}, _line), do: :ok
  defp log_line(%{log_level: level}, line), do: Logger.log(level, "snakepit-cnode: " <> line)

  defp tail(%{tail: []}), do: " and printed nothing"
  defp tail(%{tail: lines}), do: "; its last output:\n" <> Enum.join(Enum.reverse(lines), "\n")

  ## Shutdown

  defp forget_node(nil), do: :ok

  defp forget_node(node) do
    if Process.whereis(Snakepit.Connection), do: Snakepit.Connection.remove_node(node)
    :ok
  catch
    # The connection manager stopped between the check and the call.
    :exit, _reason -> :ok
  end

  defp stop_daemon(state) do
    signal(state.os_pid, "TERM")

    unless await_exit(state.port, state.stop_timeout) do
      Logger.warning("snakepit-cnode (os pid #{state.os_pid}) ignored SIGTERM; sending SIGKILL")
      signal(state.os_pid, "KILL")
      await_exit(state.port, 1_000)
    end

    Port.close(state.port)
    :ok
  catch
    # The port is already closed when the daemon exited first.
    :error, :badarg -> :ok
  end

  defp await_exit(port, timeout) do
    receive do
      {^port, {:exit_status, _status}} -> true
      {^port, {:data, _data}} -> await_exit(port, timeout)
    after
      timeout -> false
    end
  end

  defp signal(os_pid, name) do
    System.cmd("kill", ["-" <> name, Integer.to_string(os_pid)], stderr_to_stdout: true)
  end

  defp charlist_pair({name, value}), do: {to_charlist(name), value && to_charlist(value)}
end
