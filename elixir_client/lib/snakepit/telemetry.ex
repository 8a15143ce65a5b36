defmodule Snakepit.Telemetry do
  @moduledoc """
  Receives the daemons' telemetry events and passes them to handlers.

  The daemons send events such as `[:snakepit, :worker, :crashed]` to the processes that
  subscribed with `{:subscribe, pid, event_prefixes}`. This process is that subscriber for
  every healthy node: it subscribes to the union of the prefixes of the attached handlers,
  also on nodes that come up later, and calls each handler whose prefix matches an event.

  When the host application has the `:telemetry` library loaded, every received event is also
  emitted with `:telemetry.execute/3`, so the usual `Telemetry.Metrics` reporters see it.
  `:telemetry` is not a dependency of this library.

      Snakepit.Telemetry.attach(
        "log-crashes",
        [[:snakepit, :worker, :crashed]],
        fn event, measurements, metadata, _config ->
          Logger.warning("\#{inspect(event)} \#{inspect(measurements)} \#{inspect(metadata)}")
        end,
        nil
      )

  A handler runs in this process. One that raises is detached with a log line, as
  `:telemetry` does, so that a faulty handler cannot stop the others.
  """

  use GenServer
  require Logger

  alias Snakepit.Connection

  @type event :: [atom()]
  @type handler :: (event(), map(), map(), term() -> any())

  # Prefixes one subscriber may have on a daemon (its TELEMETRY_PREFIXES_MAX).
  @daemon_prefixes_max 16

  # Deadline of each subscribe and unsubscribe request to a daemon.
  @subscribe_timeout_ms 5_000

  @doc false
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(_opts), do: GenServer.start_link(__MODULE__, nil, name: __MODULE__)

  @doc """
  Attaches `handler` under `handler_id` for events that start with one of `event_prefixes`.

  `event_prefixes` is a list of prefixes (`[[:snakepit, :worker], [:snakepit, :session]]`) or
  one prefix (`[:snakepit, :worker]`). `handler` is called as
  `handler.(event, measurements, metadata, config)`.

  Returns `{:error, :already_exists}` when `handler_id` is taken.
  """
  @spec attach(term(), [event()] | event(), handler(), term()) :: :ok | {:error, :already_exists}
  def attach(handler_id, event_prefixes, handler, config) when is_function(handler, 4) do
    prefixes = normalize_prefixes(event_prefixes)
    GenServer.call(__MODULE__, {:attach, handler_id, prefixes, handler, config}, :infinity)
  end

  @doc """
  Detaches the handler `handler_id`; returns `{:error, :not_found}` when none is attached.
  """
  @spec detach(term()) :: :ok | {:error, :not_found}
  def detach(handler_id), do: GenServer.call(__MODULE__, {:detach, handler_id}, :infinity)

  @doc """
  Returns the attached handler ids with their prefixes.
  """
  @spec list_handlers() :: %{term() => [event()]}
  def list_handlers, do: GenServer.call(__MODULE__, :list_handlers)

  @doc """
  Tells whether `event` starts with one of `prefixes`.

      iex> Snakepit.Telemetry.matches?([:snakepit, :worker, :crashed], [[:snakepit, :worker]])
      true
      iex> Snakepit.Telemetry.matches?([:snakepit, :session, :created], [[:snakepit, :worker]])
      false
  """
  @spec matches?(event(), [event()]) :: boolean()
  def matches?(event, prefixes) do
    Enum.any?(prefixes, fn prefix -> Enum.take(event, length(prefix)) == prefix end)
  end

  @doc """
  Reduces handler prefixes to the subscription sent to a daemon: prefixes covered by a shorter
  one are dropped, and more than `max` prefixes become `[[:snakepit]]` (every daemon event).
  Handlers still filter by their own prefixes, so a wider subscription only costs traffic.

      iex> Snakepit.Telemetry.subscription([[:snakepit, :worker, :crashed], [:snakepit, :worker]])
      [[:snakepit, :worker]]
      iex> Snakepit.Telemetry.subscription([[:snakepit, :a], [:snakepit, :b]], 1)
      [[:snakepit]]
  """
  @spec subscription([event()], pos_integer()) :: [event()]
  def subscription(prefixes, max \\ @daemon_prefixes_max) do
    reduced =
      prefixes
      |> Enum.uniq()
      |> Enum.reject(fn prefix ->
        Enum.any?(prefixes, &(&1 != prefix and matches?(prefix, [&1])))
      end)

    if length(reduced) > max, do: [[:snakepit]], else: reduced
  end

  ## Server

  @impl true
  def init(nil), do: {:ok, %{handlers: %{}, subscribed: []}}

  @impl true
  def handle_call({:attach, id, prefixes, handler, config}, _from, state) do
    if Map.has_key?(state.handlers, id) do
      {:reply, {:error, :already_exists}, state}
    else
      state = put_in(state.handlers[id], {prefixes, handler, config})
      {:reply, :ok, resubscribe(state, Connection.healthy_nodes())}
    end
  end

  def handle_call({:detach, id}, _from, state) do
    if Map.has_key?(state.handlers, id) do
      state = update_in(state.handlers, &Map.delete(&1, id))
      {:reply, :ok, resubscribe(state, Connection.healthy_nodes())}
    else
      {:reply, {:error, :not_found}, state}
    end
  end

  def handle_call(:list_handlers, _from, state) do
    {:reply, Map.new(state.handlers, fn {id, {prefixes, _fun, _config}} -> {id, prefixes} end),
     state}
  end

  @impl true
  def handle_info({:snakepit_telemetry, event, measurements, metadata}, state) do
    state = dispatch(state, event, measurements, metadata)

    if Code.ensure_loaded?(:telemetry) do
      apply(:telemetry, :execute, [event, measurements, metadata])
    end

    {:noreply, state}
  end

  def handle_info({:node_up, node}, state) do
    {:noreply, resubscribe(state, [node])}
  end

  def handle_info({:node_down, node}, state) do
    {:noreply, %{state | subscribed: List.delete(state.subscribed, node)}}
  end

  def handle_info(_message, state), do: {:noreply, state}

  ## Subscriptions

  defp resubscribe(state, nodes) do
    prefixes = all_prefixes(state)

    Enum.reduce(nodes, state, fn node, state ->
      if node in state.subscribed, do: request(node, {:unsubscribe, self()})

      cond do
        prefixes == [] ->
          %{state | subscribed: List.delete(state.subscribed, node)}

        request(node, {:subscribe, self(), prefixes}) == :ok ->
          %{state | subscribed: Enum.uniq([node | state.subscribed])}

        true ->
          %{state | subscribed: List.delete(state.subscribed, node)}
      end
    end)
  end

  defp request(node, message) do
    case Connection.call_node(node, message, @subscribe_timeout_ms) do
      :ok ->
        :ok

      other ->
        Logger.warning(
          "Snakepit telemetry request #{inspect(elem(message, 0))} to node #{node} " <>
            "failed: #{inspect(other)}"
        )

        :error
    end
  end

  defp all_prefixes(state) do
    state.handlers
    |> Enum.flat_map(fn {_id, {prefixes, _fun, _config}} -> prefixes end)
    |> subscription()
  end

  defp dispatch(state, event, measurements, metadata) do
    Enum.reduce(state.handlers, state, fn {id, {prefixes, handler, config}}, state ->
      if matches?(event, prefixes) do
        run_handler(state, id, handler, [event, measurements, metadata, config])
      else
        state
      end
    end)
  end

  defp run_handler(state, id, handler, args) do
    apply(handler, args)
    state
  rescue
    exception ->
      Logger.error(
        "Snakepit telemetry handler #{inspect(id)} raised and was detached: " <>
          Exception.format(:error, exception, __STACKTRACE__)
      )

      resubscribe(update_in(state.handlers, &Map.delete(&1, id)), state.subscribed)
  end

  defp normalize_prefixes([first | _rest] = prefix) when is_atom(first), do: [prefix]
  defp normalize_prefixes(prefixes) when is_list(prefixes), do: prefixes
end
