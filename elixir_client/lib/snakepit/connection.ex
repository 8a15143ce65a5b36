defmodule Snakepit.Connection do
  @moduledoc """
  Connection manager: connects to the configured daemons, watches them and routes calls.

  For each node the manager runs `Node.connect/1`, checks the daemon with `:ping`, registers
  the configured `python_libraries` and only then counts the node as healthy. It watches every
  healthy node with `Node.monitor/2`. A node that fails to connect or goes down is retried
  after `reconnect_min_ms`, doubling up to `reconnect_max_ms`, with up to 20% jitter.

  Calls do not pass through the manager process. The caller reads the routing table (an ETS
  table owned by the manager) and calls the daemon itself, so one slow call never delays
  another. See `Snakepit.Router` for the routing rules. The table also maps each session id to
  the node that holds the session.

  A call whose node goes down returns a `:nodedown` error as soon as the distribution notices
  the lost connection, because `GenServer.call/3` monitors the daemon's server. A call whose
  deadline passes with no reply returns a `:timeout` error.
  """

  use GenServer
  require Logger

  alias Snakepit.{Config, Error, Router}

  @table __MODULE__

  # The daemon enforces the call's own deadline and sends a `:timeout` error when it passes.
  # The caller waits this much longer, so that the daemon's error arrives before the caller
  # gives up with a `:timeout` error of its own, which cannot say what the daemon was doing.
  @reply_margin_ms 500

  # Deadline of the `:ping` and `:register_libraries` requests made while connecting.
  @probe_timeout_ms 5_000

  # How long a call made just after the start waits for the first connection attempts: one
  # attempt makes at most a `:ping` and a `:register_libraries` request.
  @start_wait_ms 2 * @probe_timeout_ms + 1_000

  @type node_status :: :connecting | :up | :down

  ## Client API

  @doc false
  @spec start_link(Config.t()) :: GenServer.on_start()
  def start_link(%Config{} = config) do
    GenServer.start_link(__MODULE__, config, name: __MODULE__)
  end

  @doc """
  Returns the healthy nodes, in the order the configuration lists them.
  """
  @spec healthy_nodes() :: [node()]
  def healthy_nodes do
    case lookup(:healthy) do
      nil -> []
      nodes -> nodes
    end
  end

  @doc """
  Returns the healthy nodes for a call. Just after the application starts, while no node is
  healthy yet, it waits until one is up or the first connection attempt of every configured
  node has finished (at most #{@start_wait_ms} ms), so that the first calls of an application
  find the nodes that are up.
  """
  @spec routable_nodes() :: [node()]
  def routable_nodes do
    case healthy_nodes() do
      [] ->
        if lookup(:starting), do: await_start()
        healthy_nodes()

      healthy ->
        healthy
    end
  end

  defp await_start do
    GenServer.call(__MODULE__, :await_start, @start_wait_ms)
  catch
    # The caller goes on with the nodes that are up by now, and gets :nodedown if none is.
    :exit, _reason -> :ok
  end

  @doc """
  Returns each known node with its status (`:connecting`, `:up` or `:down`).
  """
  @spec status() :: %{node() => node_status()}
  def status, do: GenServer.call(__MODULE__, :status)

  @doc """
  Adds a node to the managed set at run time and starts connecting to it.
  """
  @spec add_node(node()) :: :ok
  def add_node(node) when is_atom(node), do: GenServer.call(__MODULE__, {:add_node, node})

  @doc """
  Stops managing `node`: it is no longer monitored, reconnected or routed to. The connection
  itself stays, because other parts of the application may use it.
  """
  @spec remove_node(node()) :: :ok
  def remove_node(node) when is_atom(node), do: GenServer.call(__MODULE__, {:remove_node, node})

  @doc """
  Waits until `node` is healthy, up to `timeout` milliseconds.
  """
  @spec await_node(node(), timeout()) :: :ok | {:error, Error.t()}
  def await_node(node, timeout \\ 5_000) do
    GenServer.call(__MODULE__, {:await_node, node}, timeout)
  catch
    :exit, {:timeout, _} ->
      {:error, Error.new(:nodedown, "node #{node} did not become healthy within #{timeout} ms")}
  end

  @doc """
  Picks the node for a call with `opts` (`:node`, `:session_id`), without calling it.

  A session id that the client has not seen yet is looked up on the healthy nodes with
  `{:session, :get, id}`, and the node that has it is remembered.
  """
  @spec route(keyword()) :: {:ok, node()} | {:error, Error.t()}
  def route(opts) do
    healthy = routable_nodes()
    explicit = Keyword.get(opts, :node)
    session_id = Keyword.get(opts, :session_id)

    session_node =
      if explicit == nil and session_id != nil,
        do: session_node(session_id) || locate_session(session_id, healthy)

    counter = if healthy == [], do: 0, else: :ets.update_counter(@table, :counter, 1)

    case Router.route(explicit, session_node, healthy, counter) do
      {:ok, node} -> {:ok, node}
      {:error, reason} -> {:error, no_route_error(reason, session_id)}
    end
  end

  @doc """
  Sends `request` to the daemon on `node` and waits up to `timeout` plus a margin of 500 ms for
  the daemon's own deadline error.

  Returns the daemon's reply, with an `{:error, map}` reply turned into a `Snakepit.Error`.
  """
  @spec call_node(node(), term(), pos_integer()) :: term()
  def call_node(node, request, timeout) do
    wait_for_reply(node, request, timeout + @reply_margin_ms)
  end

  defp wait_for_reply(node, request, wait_ms) do
    case GenServer.call({registered_name(), node}, request, wait_ms) do
      {:error, %{} = map} when not is_struct(map) -> {:error, Error.from_map(map, node)}
      reply -> reply
    end
  catch
    :exit, {{:nodedown, ^node}, _call} ->
      {:error, Error.new(:nodedown, "node #{node} went down during the call", node: node)}

    :exit, {:timeout, _call} ->
      message = "no reply from node #{node} within #{wait_ms} ms"
      {:error, Error.new(:timeout, message, node: node)}

    :exit, {reason, _call} when reason in [:noproc, :normal, :shutdown] ->
      message = "no process registered as #{inspect(registered_name())} on node #{node}"
      {:error, Error.new(:noproc, message, node: node)}
  end

  @doc "Returns how much longer than a call's timeout the caller waits for the daemon's reply."
  @spec reply_margin_ms() :: pos_integer()
  def reply_margin_ms, do: @reply_margin_ms

  @doc """
  Routes `request` by `opts` and calls the chosen node, with the `:timeout` option or the
  configured `default_timeout`.
  """
  @spec call(term(), keyword()) :: term()
  def call(request, opts) do
    with {:ok, node} <- route(opts) do
      call_node(node, request, timeout(opts))
    end
  end

  @doc """
  Returns the call deadline in milliseconds for `opts`.
  """
  @spec timeout(keyword()) :: pos_integer()
  def timeout(opts), do: Keyword.get_lazy(opts, :timeout, fn -> config().default_timeout end)

  @doc "Returns the validated configuration the application started with."
  @spec config() :: Config.t()
  def config, do: lookup(:config) || %Config{}

  @doc "Returns the name the daemons register their server under."
  @spec registered_name() :: atom()
  def registered_name, do: config().registered_name

  @doc "Records that `node` holds session `id`."
  @spec remember_session(String.t(), node()) :: :ok
  def remember_session(id, node) do
    :ets.insert(@table, {{:session, id}, node})
    :ok
  end

  @doc "Forgets the node of session `id`."
  @spec forget_session(String.t()) :: :ok
  def forget_session(id) do
    :ets.delete(@table, {:session, id})
    :ok
  end

  @doc "Returns the node remembered for session `id`, or `nil`."
  @spec session_node(String.t()) :: node() | nil
  def session_node(id), do: lookup({:session, id})

  ## Server

  @impl true
  def init(%Config{} = config) do
    :ets.new(@table, [:named_table, :public, :set, read_concurrency: true])
    starting = MapSet.new(config.nodes)
    :ets.insert(@table, [{:config, config}, {:healthy, []}, {:counter, 0}])
    :ets.insert(@table, {:starting, MapSet.size(starting) > 0})

    state = %{
      config: config,
      nodes: %{},
      order: [],
      waiters: %{},
      starting: starting,
      start_waiters: []
    }

    {:ok, Enum.reduce(config.nodes, state, &manage/2)}
  end

  @impl true
  def handle_call(:status, _from, state) do
    {:reply, Map.new(state.nodes, fn {node, entry} -> {node, entry.status} end), state}
  end

  def handle_call({:add_node, node}, _from, state) do
    {:reply, :ok, manage(node, state)}
  end

  def handle_call({:remove_node, node}, _from, state) do
    case Map.pop(state.nodes, node) do
      {nil, _nodes} ->
        {:reply, :ok, state}

      {entry, nodes} ->
        if entry.status == :up, do: Node.monitor(node, false)
        if entry.timer, do: Process.cancel_timer(entry.timer)
        state = %{state | nodes: nodes, order: List.delete(state.order, node)}
        {:reply, :ok, state |> publish_healthy() |> first_attempt_done(node)}
    end
  end

  def handle_call(:await_start, from, state) do
    if MapSet.size(state.starting) == 0,
      do: {:reply, :ok, state},
      else: {:noreply, %{state | start_waiters: [from | state.start_waiters]}}
  end

  def handle_call({:await_node, node}, from, state) do
    case state.nodes do
      %{^node => %{status: :up}} ->
        {:reply, :ok, state}

      nodes when not is_map_key(nodes, node) ->
        message = "node #{node} is not managed: add it to the nodes setting or call add_node/1"
        {:reply, {:error, Error.new(:nodedown, message, node: node)}, state}

      _other ->
        {:noreply,
         update_in(state.waiters, &Map.update(&1, node, [from], fn l -> [from | l] end))}
    end
  end

  @impl true
  def handle_info({:connect, node}, state) do
    case state.nodes do
      %{^node => entry} -> {:noreply, start_connect(node, entry, state)}
      _removed -> {:noreply, state}
    end
  end

  def handle_info({:probe_result, node, attempt_ref, result}, state) do
    case state.nodes do
      %{^node => %{attempt_ref: ^attempt_ref} = entry} ->
        {:noreply, node |> probe_done(entry, result, state) |> first_attempt_done(node)}

      _stale ->
        {:noreply, state}
    end
  end

  def handle_info({:nodedown, node}, state) do
    case state.nodes do
      %{^node => %{status: :up} = entry} ->
        Logger.warning("Snakepit node #{node} went down; reconnecting")
        emit(:node_down, node)
        {:noreply, schedule_reconnect(node, %{entry | status: :down, attempts: 0}, state)}

      _other ->
        {:noreply, state}
    end
  end

  def handle_info(_message, state), do: {:noreply, state}

  ## Node life cycle

  defp manage(node, state) do
    if Map.has_key?(state.nodes, node) do
      state
    else
      entry = %{status: :connecting, attempts: 0, timer: nil, attempt_ref: nil}
      state = %{state | order: state.order ++ [node]}
      start_connect(node, entry, state)
    end
  end

  # The probe (connect, ping, register libraries) runs in its own process, because
  # `Node.connect/1` to an unreachable host blocks for the connect timeout.
  defp start_connect(node, entry, state) do
    if state.config.cookie, do: Node.set_cookie(node, state.config.cookie)
    manager = self()
    attempt_ref = make_ref()
    libraries = state.config.python_libraries
    name = state.config.registered_name

    spawn(fn ->
      send(manager, {:probe_result, node, attempt_ref, probe(node, name, libraries)})
    end)

    entry = %{entry | status: :connecting, timer: nil, attempt_ref: attempt_ref}
    put_in(state.nodes[node], entry)
  end

  defp probe(node, name, libraries) do
    with {:connect, true} <- {:connect, Node.connect(node)},
         {:ping, :pong} <- {:ping, safe_call({name, node}, :ping)} do
      register_libraries({name, node}, libraries)
    end
  end

  defp register_libraries(_server, []), do: :ok

  defp register_libraries(server, libraries) do
    case safe_call(server, {:register_libraries, libraries}) do
      :ok -> :ok
      other -> {:libraries, other}
    end
  end

  defp safe_call(server, request) do
    GenServer.call(server, request, @probe_timeout_ms)
  catch
    :exit, reason -> {:exit, reason}
  end

  defp probe_done(node, entry, :ok, state), do: node_up(node, entry, state)

  defp probe_done(node, entry, {:libraries, reply}, state) do
    # Calls into the rejected libraries will fail, so this is logged as an error. The node
    # stays in use, because calls into other modules still work.
    Logger.error(
      "Snakepit node #{node} rejected register_libraries: #{format_reply(reply)}; " <>
        "allow client libraries in the daemon's config or list them there"
    )

    node_up(node, entry, state)
  end

  defp probe_done(node, entry, failure, state) do
    level = if entry.attempts == 0, do: :warning, else: :debug
    Logger.log(level, "Snakepit node #{node} is not reachable: #{describe_failure(failure)}")
    schedule_reconnect(node, %{entry | status: :down}, state)
  end

  # Calls stop waiting for the start once a node is up or every configured node's first attempt
  # has finished, whichever comes first.
  defp first_attempt_done(%{starting: starting} = state, node) do
    starting = MapSet.delete(starting, node)

    if MapSet.size(starting) == 0 or match?(%{status: :up}, state.nodes[node]) do
      end_start(state)
    else
      %{state | starting: starting}
    end
  end

  defp end_start(%{start_waiters: waiters} = state) do
    :ets.insert(@table, {:starting, false})
    Enum.each(waiters, &GenServer.reply(&1, :ok))
    %{state | starting: MapSet.new(), start_waiters: []}
  end

  defp node_up(node, entry, state) do
    Node.monitor(node, true)
    Logger.info("Snakepit node #{node} is up")
    emit(:node_up, node)
    {waiting, waiters} = Map.pop(state.waiters, node, [])
    Enum.each(waiting, &GenServer.reply(&1, :ok))
    entry = %{entry | status: :up, attempts: 0, attempt_ref: nil}
    publish_healthy(%{state | nodes: Map.put(state.nodes, node, entry), waiters: waiters})
  end

  defp schedule_reconnect(node, entry, state) do
    %{reconnect_min_ms: min_ms, reconnect_max_ms: max_ms} = state.config
    delay = Router.jitter(Router.backoff(entry.attempts, min_ms, max_ms))
    timer = Process.send_after(self(), {:connect, node}, delay)
    entry = %{entry | attempts: entry.attempts + 1, timer: timer, attempt_ref: nil}
    publish_healthy(put_in(state.nodes[node], entry))
  end

  defp publish_healthy(state) do
    healthy = Enum.filter(state.order, &match?(%{status: :up}, state.nodes[&1]))
    :ets.insert(@table, {:healthy, healthy})
    state
  end

  # Node events go to the telemetry forwarder, which subscribes new nodes to daemon events.
  defp emit(event, node) do
    case Process.whereis(Snakepit.Telemetry) do
      nil -> :ok
      pid -> send(pid, {event, node})
    end
  end

  defp describe_failure({:connect, false}), do: "Node.connect/1 failed (check epmd and cookie)"

  defp describe_failure({:connect, :ignored}),
    do: "this node is not alive (start it with --sname)"

  defp describe_failure({:ping, reply}), do: ":ping failed: #{format_reply(reply)}"

  defp format_reply({:exit, reason}), do: "exit #{inspect(reason)}"
  defp format_reply({:error, %{} = map}), do: Exception.message(Error.from_map(map))
  defp format_reply(other), do: inspect(other)

  ## Routing helpers

  defp locate_session(_id, []), do: nil

  defp locate_session(id, healthy) do
    name = registered_name()

    Enum.find(healthy, fn node ->
      match?({:ok, _session}, safe_call({name, node}, {:session, :get, id}))
    end)
    |> tap(fn node -> if node, do: remember_session(id, node) end)
  end

  defp no_route_error(:no_healthy_node, _session_id) do
    Error.new(:nodedown, "no Snakepit node is connected")
  end

  defp no_route_error({:node_not_connected, node}, _session_id) do
    Error.new(:nodedown, "node #{node} is not connected", node: node)
  end

  defp no_route_error({:session_node_down, node}, session_id) do
    message = "node #{node} is down, and it has session #{inspect(session_id)}"
    Error.new(:nodedown, message, node: node)
  end

  defp lookup(key) do
    case :ets.lookup(@table, key) do
      [{^key, value}] -> value
      [] -> nil
    end
  rescue
    # The table is gone while the application is not running.
    ArgumentError -> nil
  end
end
