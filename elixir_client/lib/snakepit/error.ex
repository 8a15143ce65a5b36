defmodule Snakepit.Error do
  @moduledoc """
  The error of a failed Snakepit call, as an exception struct.

  The daemon replies `{:error, map}` where the map has at least `kind` (an atom),
  `message` (a binary) and `retryable` (a boolean). Python exceptions add `type` (the
  qualified class name), `traceback` (a list of lines) and sometimes `args`.
  `from_map/2` turns that map into this struct. The client builds its own errors with
  `new/3` for failures that happen before or around the daemon: no node is up (`:nodedown`),
  no reply arrived in time (`:timeout`), no process is registered under the configured name
  (`:noproc`), or the reply did not follow the protocol (`:bad_reply`).

  Every result of the `Snakepit` API is `{:ok, value}` or `{:error, %Snakepit.Error{}}`, and
  the struct can be raised:

      iex> error = Snakepit.Error.from_map(%{kind: :bad_request, message: "args must be a map"})
      iex> error.retryable
      false
      iex> Exception.message(error)
      "bad_request: args must be a map"
  """

  @typedoc "Error kinds the daemon sends, plus the client-side kinds listed in the moduledoc."
  @type kind ::
          :python_exception
          | :timeout
          | :queue_timeout
          | :overloaded
          | :worker_crashed
          | :worker_busy
          | :session_worker_unavailable
          | :session_not_found
          | :not_allowed
          | :bad_request
          | :encode_error
          | :too_large
          | :too_deep
          | :circuit_open
          | :store_unavailable
          | :shutting_down
          | :nodedown
          | :noproc
          | :bad_reply
          | atom()

  @type t :: %__MODULE__{
          kind: kind(),
          message: String.t(),
          retryable: boolean(),
          type: String.t() | nil,
          traceback: [String.t()],
          correlation_id: String.t() | nil,
          node: node() | nil,
          details: map()
        }

  defexception kind: :unknown,
               message: "",
               retryable: false,
               type: nil,
               traceback: [],
               correlation_id: nil,
               node: nil,
               details: %{}

  # Kinds that describe a passing condition of the daemon, its workers or the network: the
  # same call may succeed later. Used only when the daemon's map carries no `retryable` key.
  @transient_kinds [
    :timeout,
    :queue_timeout,
    :overloaded,
    :worker_crashed,
    :worker_busy,
    :circuit_open,
    :store_unavailable,
    :shutting_down,
    :nodedown,
    :noproc
  ]

  @known_keys [:kind, :message, :retryable, :type, :traceback, :correlation_id]

  @doc """
  Builds an error from the daemon's error map.

  Keys other than the known fields (for example `args`, or an exit code of a crashed worker)
  are kept in `details`. A missing `retryable` key takes the default of the kind (see
  `transient?/1`). `node` records which daemon replied.

      iex> error =
      ...>   Snakepit.Error.from_map(
      ...>     %{
      ...>       kind: :python_exception,
      ...>       message: "bad",
      ...>       type: "builtins.TypeError",
      ...>       traceback: ["Traceback (most recent call last):", "TypeError: bad"],
      ...>       retryable: false,
      ...>       args: ["bad"]
      ...>     },
      ...>     :"snakepit@host"
      ...>   )
      iex> {error.kind, error.type, error.details, error.node}
      {:python_exception, "builtins.TypeError", %{args: ["bad"]}, :"snakepit@host"}

      iex> Snakepit.Error.from_map(%{kind: :overloaded, message: "queue full"}).retryable
      true
  """
  @spec from_map(map(), node() | nil) :: t()
  def from_map(map, node \\ nil) when is_map(map) do
    kind = atom_or_unknown(Map.get(map, :kind))

    %__MODULE__{
      kind: kind,
      message: to_text(Map.get(map, :message, "")),
      retryable: retryable(Map.get(map, :retryable), kind),
      type: optional_text(Map.get(map, :type)),
      traceback: traceback(Map.get(map, :traceback)),
      correlation_id: optional_text(Map.get(map, :correlation_id)),
      node: node,
      details: Map.drop(map, @known_keys)
    }
  end

  @doc """
  Builds a client-side error of `kind`.

  Options: `:node`, `:retryable` (default: that of the kind) and `:details` (a map).

      iex> error = Snakepit.Error.new(:nodedown, "no Snakepit node is connected")
      iex> {error.kind, error.retryable}
      {:nodedown, true}
  """
  @spec new(kind(), String.t(), keyword()) :: t()
  def new(kind, message, opts \\ []) when is_atom(kind) and is_binary(message) do
    %__MODULE__{
      kind: kind,
      message: message,
      retryable: Keyword.get(opts, :retryable, kind in @transient_kinds),
      node: Keyword.get(opts, :node),
      details: Keyword.get(opts, :details, %{})
    }
  end

  @doc """
  Tells whether errors of `kind` are transient by default.

      iex> Snakepit.Error.transient?(:queue_timeout)
      true
      iex> Snakepit.Error.transient?(:too_large)
      false
  """
  @spec transient?(atom()) :: boolean()
  def transient?(kind), do: kind in @transient_kinds

  @doc """
  Formats the error as one line: kind, Python type, message, node and correlation id.

  The traceback is left out because it spans many lines. Read it from `traceback`.

      iex> Snakepit.Error.from_map(
      ...>   %{
      ...>     kind: :python_exception,
      ...>     type: "builtins.KeyError",
      ...>     message: "'k'",
      ...>     correlation_id: "c-17",
      ...>     retryable: false
      ...>   },
      ...>   :"snakepit@h"
      ...> )
      ...> |> Exception.message()
      "python_exception: builtins.KeyError: 'k' (node snakepit@h, correlation_id c-17)"
  """
  @impl true
  @spec message(t()) :: String.t()
  def message(%__MODULE__{} = error) do
    head =
      [Atom.to_string(error.kind), error.type, error.message]
      |> Enum.reject(&(&1 in [nil, ""]))
      |> Enum.join(": ")

    context =
      [node: error.node, correlation_id: error.correlation_id]
      |> Enum.reject(fn {_key, value} -> is_nil(value) end)
      |> Enum.map_join(", ", fn {key, value} -> "#{key} #{value}" end)

    if context == "", do: head, else: "#{head} (#{context})"
  end

  defp atom_or_unknown(kind) when is_atom(kind) and not is_nil(kind), do: kind
  defp atom_or_unknown(_kind), do: :unknown

  defp retryable(value, _kind) when is_boolean(value), do: value
  defp retryable(_value, kind), do: transient?(kind)

  defp traceback(lines) when is_list(lines), do: Enum.map(lines, &to_text/1)
  defp traceback(text) when is_binary(text), do: String.split(text, "\n", trim: true)
  defp traceback(_other), do: []

  defp optional_text(nil), do: nil
  defp optional_text(value), do: to_text(value)

  defp to_text(value) when is_binary(value), do: value
  defp to_text(value) when is_atom(value), do: Atom.to_string(value)
  defp to_text(value), do: inspect(value)
end
