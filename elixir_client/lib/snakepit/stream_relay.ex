defmodule Snakepit.StreamRelay do
  @moduledoc false

  # Receives one daemon stream in a process of its own and forwards its messages to the
  # consumer. The daemon sends the chunks to the process that made the `:execute_stream` call,
  # and the protocol has no request to cancel a stream. With the relay as that process, a
  # consumer that stops early (as `Enum.take/2` does) kills the relay, so the VM drops the
  # chunks that arrive later instead of leaving them in the consumer's mailbox. The daemon
  # checks every second whether the relay, as the stream's caller, is alive, so the relay's exit
  # also cancels the stream and frees its worker.

  alias Snakepit.{Connection, Error}

  @enforce_keys [:relay, :ref, :monitor, :node, :deadline]
  defstruct [:relay, :ref, :monitor, :node, :deadline]

  @type t :: %__MODULE__{
          relay: pid(),
          ref: reference(),
          monitor: reference(),
          node: node(),
          deadline: integer()
        }

  @doc """
  Starts the stream on `node` and returns once the daemon accepted it.
  """
  @spec open(node(), tuple(), pos_integer()) :: {:ok, t()} | {:error, Error.t()}
  def open(node, request, timeout) do
    consumer = self()
    ref = make_ref()
    wait_ms = timeout + Connection.reply_margin_ms()
    deadline = System.monotonic_time(:millisecond) + wait_ms
    {relay, monitor} = spawn_monitor(fn -> start(consumer, ref, node, request, timeout) end)
    stream = %__MODULE__{relay: relay, ref: ref, monitor: monitor, node: node, deadline: deadline}

    receive do
      {^ref, :opened} ->
        {:ok, stream}

      {^ref, {:failed, error}} ->
        close(stream)
        {:error, error}

      {:DOWN, ^monitor, :process, ^relay, reason} ->
        flush(ref)
        {:error, relay_crashed(node, reason)}
    end
  end

  @doc """
  Waits for the next message of the stream: `{:chunk, term}`, `{:done, result}` or
  `{:error, error}`. The stream's deadline bounds the wait.
  """
  @spec next(t()) :: {{:chunk, term()} | {:done, term()} | {:error, Error.t()}, t()}
  def next(%__MODULE__{ref: ref, monitor: monitor, relay: relay, node: node} = stream) do
    wait_ms = max(stream.deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {^ref, message} ->
        {message, stream}

      {:DOWN, ^monitor, :process, ^relay, reason} ->
        {{:error, relay_crashed(node, reason)}, stream}
    after
      wait_ms ->
        error = Error.new(:timeout, "stream from node #{node} timed out", node: node)
        {{:error, error}, stream}
    end
  end

  @doc """
  Stops the relay and removes the stream's messages from the caller's mailbox. Closing a
  stream twice is harmless.
  """
  @spec close(t()) :: :ok
  def close(%__MODULE__{relay: relay} = stream) do
    # A fresh monitor, because the stream's own DOWN may already have been received. Signals
    # between two processes arrive in order, so once this DOWN is here, every message the relay
    # sent is here too, and the flush below gets them all.
    monitor = Process.monitor(relay)
    Process.exit(relay, :kill)

    receive do
      {:DOWN, ^monitor, :process, ^relay, _reason} -> :ok
    end

    Process.demonitor(stream.monitor, [:flush])
    flush(stream.ref)
  end

  defp flush(ref) do
    receive do
      {^ref, _message} -> flush(ref)
    after
      0 -> :ok
    end
  end

  ## Relay process

  defp start(consumer, ref, node, request, timeout) do
    consumer_monitor = Process.monitor(consumer)

    # Monitor before the call, so that a node lost between the reply and the first chunk
    # is noticed.
    server_monitor = Process.monitor({Connection.registered_name(), node})

    case Connection.call_node(node, request, timeout) do
      {:ok, stream_ref} ->
        send(consumer, {ref, :opened})

        relay(%{
          consumer: consumer,
          ref: ref,
          node: node,
          stream_ref: stream_ref,
          consumer_monitor: consumer_monitor,
          server_monitor: server_monitor
        })

      {:error, %Error{} = error} ->
        send(consumer, {ref, {:failed, error}})

      other ->
        send(consumer, {ref, {:failed, bad_reply(node, other)}})
    end
  end

  defp relay(%{stream_ref: stream_ref, consumer_monitor: consumer_monitor} = state) do
    server_monitor = state.server_monitor

    receive do
      {:snakepit_stream, ^stream_ref, {:chunk, _chunk} = message} ->
        send(state.consumer, {state.ref, message})
        relay(state)

      {:snakepit_stream, ^stream_ref, {:done, _result} = message} ->
        send(state.consumer, {state.ref, message})

      {:snakepit_stream, ^stream_ref, {:error, %{} = map}} ->
        send(state.consumer, {state.ref, {:error, Error.from_map(map, state.node)}})

      {:snakepit_stream, ^stream_ref, other} ->
        send(state.consumer, {state.ref, {:error, bad_reply(state.node, other)}})

      {:DOWN, ^server_monitor, :process, _server, reason} ->
        message = "node #{state.node} went down during the stream (#{inspect(reason)})"
        error = Error.new(:nodedown, message, node: state.node)
        send(state.consumer, {state.ref, {:error, error}})

      {:DOWN, ^consumer_monitor, :process, _consumer, _reason} ->
        :ok
    end
  end

  defp relay_crashed(node, reason) do
    Error.new(:bad_reply, "the stream relay for node #{node} exited: #{inspect(reason)}",
      node: node
    )
  end

  defp bad_reply(node, reply) do
    Error.new(
      :bad_reply,
      "unexpected stream message from node #{node}: #{inspect(reply, limit: 20)}",
      node: node
    )
  end
end
