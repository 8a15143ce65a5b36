defmodule Snakepit do
  @moduledoc """
  Calls Python through `snakepit-cnode` daemons.

  The daemon is an Erlang C node. This module wraps its protocol (plain `GenServer.call/3`
  requests) in functions that return `{:ok, value}` or `{:error, %Snakepit.Error{}}`, and
  `Snakepit.Connection` picks the daemon for each call.

      # config/runtime.exs
      config :snakepit,
        nodes: [:"snakepit@app-host"],
        python_libraries: [%{name: "pandas", module: "pandas", pip_package: "pandas>=1.5"}]

      {:ok, "a/b"} = Snakepit.execute("python.os.path.join", ["a", "b"])
      {:ok, 3} = Snakepit.execute("python.builtins.len", ["abc"], timeout: 1_000)

  ## Commands and arguments

  A command is `"python.<module path>.<attribute path>"` for the generic adapter, or the name
  of a tool of a custom adapter. Arguments are a map (keyword arguments), a list (positional
  arguments) or a `{list, map}` tuple (both). The daemon runs only modules of the libraries in
  its config (`[library NAME]` sections or `--library MODULE`), and replies `:not_allowed` to
  other commands.

  ## Options

  Every call accepts:

    * `:timeout` - deadline of the whole call in milliseconds (default: the `default_timeout`
      setting). The daemon enforces it. The caller waits 500 ms longer so that the daemon's own
      `:timeout` error arrives before the caller gives up.
    * `:node` - send the call to this node instead of routing it.

  Calls that run Python (`execute/3`, `execute_stream/4`, `stream/3`) also accept `:pool`
  (default: the `pool` setting), `:session_id`, `:affinity` (`:hint`, `:strict_queue` or
  `:strict_fail_fast`) and `:idempotent` (a boolean). An idempotent call that loses its node
  is retried once on another healthy node.

  An unknown option is a `:bad_request` error for that call:

      iex> {:error, error} = Snakepit.execute("python.os.getcwd", [], colour: :red)
      iex> Exception.message(error)
      "bad_request: unknown option :colour"
  """

  alias Snakepit.{Connection, Error, StreamRelay}

  @type command :: String.t()
  @type args :: map() | list() | {list(), map()}
  @type session_id :: String.t()
  @type result(value) :: {:ok, value} | {:error, Error.t()}
  @type chunk_callback :: (term() -> any())

  @execute_keys [:timeout, :node, :pool, :session_id, :affinity, :idempotent]
  @call_keys [:timeout, :node]
  @affinities [:hint, :strict_queue, :strict_fail_fast]

  # Options that only steer the client. They are not sent to the daemon.
  @client_keys [:node]

  ## Execute

  @doc """
  Runs `command` with `args` on a worker and returns its result.

      Snakepit.execute("python.math.sqrt", [16.0])
      #=> {:ok, 4.0}

      Snakepit.execute("python.json.loads", ["{"])
      #=> {:error, %Snakepit.Error{kind: :python_exception, type: "json.decoder.JSONDecodeError"}}
  """
  @spec execute(command(), args(), keyword()) :: result(term())
  def execute(command, args, opts \\ []) do
    with {:ok, request_opts} <- execute_opts(command, args, opts) do
      request = {:execute, command, args, daemon_opts(request_opts)}
      started = System.monotonic_time(:millisecond)

      request
      |> Connection.call(request_opts)
      |> retry_if_idempotent(request, request_opts, started)
      |> handle_session_reply(request_opts)
    end
  end

  @doc """
  Runs `command` in session `session_id`: the call goes to the node that holds the session, and
  the daemon routes it to the session's worker by the `:affinity` mode.

      {:ok, _session} = Snakepit.create_session("user-42")
      Snakepit.execute_in_session("user-42", "python.builtins.len", ["abc"])
      #=> {:ok, 3}
  """
  @spec execute_in_session(session_id(), command(), args(), keyword()) :: result(term())
  def execute_in_session(session_id, command, args, opts \\ []) when is_binary(session_id) do
    execute(command, args, Keyword.put(opts, :session_id, session_id))
  end

  ## Streams

  @doc """
  Runs a generator `command` and calls `callback` with each chunk it yields, in order.

  Returns `{:ok, result}` with the generator's return value once the stream is done, or the
  first error. The `:timeout` option bounds the whole stream, not each chunk. A daemon that
  cannot deliver chunks as fast as they come sends an `:overloaded` error instead of buffering
  without bound.

      Snakepit.execute_stream("python.builtins.range", [3], fn chunk -> IO.inspect(chunk) end)
      # prints 0, 1, 2
      #=> {:ok, nil}
  """
  @spec execute_stream(command(), args(), chunk_callback(), keyword()) :: result(term())
  def execute_stream(command, args, callback, opts \\ []) when is_function(callback, 1) do
    with {:ok, stream} <- open_stream(command, args, opts) do
      try do
        consume_stream(stream, callback)
      after
        StreamRelay.close(stream)
      end
    end
  end

  @doc """
  Returns a lazy `Stream` of the chunks that a generator `command` yields.

  The call starts when the stream is first enumerated. Because a stream has no place for an
  error tuple, an error (also one that opens the stream) raises `Snakepit.Error`. The
  generator's return value is dropped; use `execute_stream/4` when you need it.

      "python.builtins.range"
      |> Snakepit.stream([5])
      |> Enum.take(2)
      #=> [0, 1]

  Halting early (as `Enum.take/2` does) leaves no messages behind in the caller's mailbox: the
  stream is received by a relay process, which is stopped when the stream halts. The daemon
  still runs the generator to its end, because the protocol has no request to cancel a stream.
  """
  @spec stream(command(), args(), keyword()) :: Enumerable.t()
  def stream(command, args, opts \\ []) do
    Stream.resource(
      fn ->
        case open_stream(command, args, opts) do
          {:ok, stream} -> stream
          {:error, error} -> raise error
        end
      end,
      &next_chunk/1,
      &close_stream/1
    )
  end

  defp open_stream(command, args, opts) do
    with {:ok, opts} <- execute_opts(command, args, opts),
         {:ok, node} <- Connection.route(opts) do
      request = {:execute_stream, command, args, daemon_opts(opts)}
      StreamRelay.open(node, request, Connection.timeout(opts))
    end
  end

  defp consume_stream(stream, callback) do
    case StreamRelay.next(stream) do
      {{:chunk, chunk}, stream} ->
        callback.(chunk)
        consume_stream(stream, callback)

      {{:done, result}, _stream} ->
        {:ok, result}

      {{:error, error}, _stream} ->
        {:error, error}
    end
  end

  defp next_chunk({:done, stream}), do: {:halt, {:done, stream}}

  defp next_chunk(stream) do
    case StreamRelay.next(stream) do
      {{:chunk, chunk}, stream} ->
        {[chunk], stream}

      {{:done, _result}, stream} ->
        {:halt, {:done, stream}}

      # Stream.resource/3 runs close_stream/1 before the exception leaves the stream.
      {{:error, error}, _stream} ->
        raise error
    end
  end

  defp close_stream({:done, stream}), do: StreamRelay.close(stream)
  defp close_stream(stream), do: StreamRelay.close(stream)

  ## Sessions

  @doc """
  Creates session `id`, or returns it when it exists (creation is idempotent).

  Options: `:ttl` (seconds), `:owner` (the node whose disconnect drops the session; the daemon
  defaults it to the calling node, and `nil` keeps the session), `:node`, `:timeout`. The client remembers the node that holds the session and
  sends the session's later calls there.

      {:ok, %{id: "user-42"}} = Snakepit.create_session("user-42", ttl: 600)
  """
  @spec create_session(session_id(), keyword()) :: result(map())
  def create_session(id, opts \\ []) when is_binary(id) do
    with {:ok, opts} <- check_opts(opts, @call_keys ++ [:ttl, :owner]) do
      {session_opts, call_opts} = Keyword.split(opts, [:ttl, :owner])
      request = {:session, :create, id, Map.new(session_opts)}

      session_call(id, request, call_opts, fn node, reply ->
        with {:ok, _session} <- reply, do: Connection.remember_session(id, node)
      end)
    end
  end

  @doc """
  Returns session `id`, or a `:session_not_found` error. The session is a map with `id`,
  `created_ms`, `accessed_ms`, `ttl_s`, `owner` and `worker_id`.
  """
  @spec get_session(session_id(), keyword()) :: result(map())
  def get_session(id, opts \\ []) when is_binary(id) do
    with {:ok, opts} <- check_opts(opts, @call_keys) do
      session_call(id, {:session, :get, id}, opts)
    end
  end

  @doc """
  Stores `value` as variable `name` of session `id`.

      :ok = Snakepit.put_var("user-42", "model", %{layers: 3})
  """
  @spec put_var(session_id(), String.t(), term(), keyword()) :: :ok | {:error, Error.t()}
  def put_var(id, name, value, opts \\ []) when is_binary(id) and is_binary(name) do
    with {:ok, opts} <- check_opts(opts, @call_keys) do
      session_call(id, {:session, :put, id, name, value}, opts)
    end
  end

  @doc """
  Returns variable `name` of session `id`.

      {:ok, %{layers: 3}} = Snakepit.get_var("user-42", "model")
  """
  @spec get_var(session_id(), String.t(), keyword()) :: result(term())
  def get_var(id, name, opts \\ []) when is_binary(id) and is_binary(name) do
    with {:ok, opts} <- check_opts(opts, @call_keys) do
      session_call(id, {:session, :get, id, name}, opts)
    end
  end

  @doc """
  Deletes session `id` with its variables.
  """
  @spec delete_session(session_id(), keyword()) :: :ok | {:error, Error.t()}
  def delete_session(id, opts \\ []) when is_binary(id) do
    with {:ok, opts} <- check_opts(opts, @call_keys) do
      session_call(id, {:session, :delete, id}, opts, fn _node, reply ->
        if reply == :ok, do: Connection.forget_session(id)
      end)
    end
  end

  @doc """
  Renews the TTL of session `id`.
  """
  @spec touch_session(session_id(), keyword()) :: :ok | {:error, Error.t()}
  def touch_session(id, opts \\ []) when is_binary(id) do
    with {:ok, opts} <- check_opts(opts, @call_keys) do
      session_call(id, {:session, :touch, id}, opts)
    end
  end

  @doc """
  Lists session ids.

  Without `:node` it asks every healthy node and returns the union, sorted, so that sessions
  in per-node memory stores are all listed. `:limit` (default: the daemon's, 1000) bounds the
  ids each node returns, so the union may hold up to `limit` ids per node.
  """
  @spec list_sessions(keyword()) :: result([session_id()])
  def list_sessions(opts \\ []) do
    with {:ok, opts} <- check_opts(opts, @call_keys ++ [:limit]),
         {list_opts, call_opts} = Keyword.split(opts, [:limit]),
         {:ok, nodes} <- list_nodes(call_opts) do
      request = {:session, :list, Map.new(list_opts)}
      timeout = Connection.timeout(call_opts)

      nodes
      |> Task.async_stream(&{&1, Connection.call_node(&1, request, timeout)},
        timeout: :infinity,
        ordered: true
      )
      |> Enum.reduce_while({:ok, []}, &merge_session_lists/2)
      |> case do
        {:ok, ids} -> {:ok, ids |> Enum.uniq() |> Enum.sort()}
        error -> error
      end
    end
  end

  defp list_nodes(call_opts) do
    case {Keyword.fetch(call_opts, :node), Connection.routable_nodes()} do
      {:error, []} ->
        {:error, Error.new(:nodedown, "no Snakepit node is connected")}

      {:error, healthy} ->
        {:ok, healthy}

      {{:ok, node}, _healthy} ->
        with {:ok, node} <- Connection.route(node: node), do: {:ok, [node]}
    end
  end

  defp merge_session_lists({:ok, {node, {:ok, ids}}}, {:ok, acc}) when is_list(ids) do
    Enum.each(ids, fn id ->
      if Connection.session_node(id) == nil, do: Connection.remember_session(id, node)
    end)

    {:cont, {:ok, ids ++ acc}}
  end

  defp merge_session_lists({:ok, {_node, {:error, %Error{}} = error}}, _acc), do: {:halt, error}

  defp merge_session_lists({:ok, {node, other}}, _acc),
    do: {:halt, {:error, bad_reply(node, other)}}

  defp session_call(id, request, opts, on_reply \\ fn _node, _reply -> :ok end) do
    with {:ok, node} <- Connection.route(Keyword.put(opts, :session_id, id)) do
      reply = Connection.call_node(node, request, Connection.timeout(opts))
      on_reply.(node, reply)
      handle_session_reply(reply, session_id: id)
    end
  end

  # A session that the daemon no longer has (expired, deleted elsewhere, or lost with a
  # restarted node) must not keep its stale route.
  defp handle_session_reply({:error, %Error{kind: :session_not_found}} = reply, opts) do
    if id = Keyword.get(opts, :session_id), do: Connection.forget_session(id)
    reply
  end

  defp handle_session_reply(reply, _opts), do: reply

  ## Node information

  @doc """
  Returns the daemon's version, node name, pools, store and uptime.

      {:ok, %{version: _, pools: [_ | _], store: _, uptime_ms: _}} = Snakepit.info()
  """
  @spec info(keyword()) :: result(map())
  def info(opts \\ []), do: simple_call(:info, opts)

  @doc """
  Returns the daemon's health: `%{status: :ok | :degraded | :unhealthy, checks: map}`.
  """
  @spec health(keyword()) :: result(map())
  def health(opts \\ []), do: simple_call(:health, opts)

  @doc """
  Pings a daemon through its registered server, which checks more than `Node.ping/1`: the
  daemon's event loop is answering requests.
  """
  @spec ping(keyword()) :: :pong | {:error, Error.t()}
  def ping(opts \\ []), do: simple_call(:ping, opts)

  defp simple_call(request, opts) do
    with {:ok, opts} <- check_opts(opts, @call_keys) do
      Connection.call(request, opts)
    end
  end

  ## Options

  defp execute_opts(command, args, opts) do
    cond do
      not is_binary(command) ->
        {:error, Error.new(:bad_request, "command must be a binary, got: #{inspect(command)}")}

      not valid_args?(args) ->
        message = "args must be a map, a list or a {list, map} tuple, got: #{inspect(args)}"
        {:error, Error.new(:bad_request, message)}

      true ->
        with {:ok, opts} <- check_opts(opts, @execute_keys) do
          default_pool = Connection.config().pool
          opts = Keyword.put(opts, :timeout, Connection.timeout(opts))
          {:ok, if(default_pool, do: Keyword.put_new(opts, :pool, default_pool), else: opts)}
        end
    end
  end

  defp valid_args?(args) when is_map(args) or is_list(args), do: true
  defp valid_args?({positional, keywords}) when is_list(positional) and is_map(keywords), do: true
  defp valid_args?(_args), do: false

  defp check_opts(opts, allowed) when is_list(opts) do
    Enum.find_value(opts, {:ok, opts}, fn
      {key, value} when is_atom(key) ->
        cond do
          key not in allowed ->
            {:error, Error.new(:bad_request, "unknown option #{inspect(key)}")}

          not valid_option?(key, value) ->
            message = "invalid option #{inspect(key)}: #{inspect(value)}"
            {:error, Error.new(:bad_request, message)}

          true ->
            nil
        end

      other ->
        {:error,
         Error.new(:bad_request, "options must be a keyword list, got: #{inspect(other)}")}
    end)
  end

  defp check_opts(opts, _allowed) do
    {:error, Error.new(:bad_request, "options must be a keyword list, got: #{inspect(opts)}")}
  end

  defp valid_option?(:timeout, ms), do: is_integer(ms) and ms > 0
  defp valid_option?(:node, node), do: is_atom(node)
  defp valid_option?(:pool, pool), do: is_atom(pool) or is_binary(pool)
  defp valid_option?(:session_id, id), do: is_binary(id)
  defp valid_option?(:affinity, affinity), do: affinity in @affinities
  defp valid_option?(:idempotent, flag), do: is_boolean(flag)
  defp valid_option?(:ttl, ttl), do: is_integer(ttl) and ttl > 0
  defp valid_option?(:owner, owner), do: is_atom(owner)
  defp valid_option?(:limit, limit), do: is_integer(limit) and limit > 0

  defp daemon_opts(opts), do: opts |> Keyword.drop(@client_keys) |> Map.new()

  # The retry gets what is left of the call's deadline, so the whole call still ends in time.
  defp retry_if_idempotent(
         {:error, %Error{kind: :nodedown, node: lost}} = reply,
         request,
         opts,
         started
       )
       when lost != nil do
    routed? = Keyword.has_key?(opts, :node) or Keyword.has_key?(opts, :session_id)
    remaining = opts[:timeout] - (System.monotonic_time(:millisecond) - started)

    if Keyword.get(opts, :idempotent, false) and not routed? and remaining > 0 do
      {:execute, command, args, daemon_opts} = request
      retry = {:execute, command, args, %{daemon_opts | timeout: remaining}}

      case Connection.route(opts) do
        {:ok, node} when node != lost -> Connection.call_node(node, retry, remaining)
        _no_other_node -> reply
      end
    else
      reply
    end
  end

  defp retry_if_idempotent(reply, _request, _opts, _started), do: reply

  defp bad_reply(node, reply) do
    Error.new(:bad_reply, "unexpected reply from node #{node}: #{inspect(reply, limit: 20)}",
      node: node
    )
  end
end
