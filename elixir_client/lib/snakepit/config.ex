defmodule Snakepit.Config do
  @moduledoc """
  The client's configuration, read from the `:snakepit` application environment and
  validated once when the application starts.

  | key | type | default | meaning |
  |---|---|---|---|
  | `nodes` | list of node names | `[]` | daemons to connect to, e.g. `[:"snakepit@host"]` |
  | `registered_name` | atom | `:snakepit` | name the daemons register their server under |
  | `default_timeout` | positive integer (ms) | `30000` | deadline of a call without `:timeout` |
  | `pool` | atom, binary or `nil` | `nil` | pool for calls without `:pool`; `nil` lets the daemon pick |
  | `python_libraries` | list of maps | `[]` | registered with each node on connect |
  | `cookie` | atom, binary or `nil` | `nil` | cookie for the configured nodes; `nil` keeps the node's own |
  | `reconnect_min_ms` | positive integer (ms) | `100` | first reconnect delay |
  | `reconnect_max_ms` | positive integer (ms) | `10000` | reconnect delays double up to this |

  Each entry of `python_libraries` is a map (or keyword list) with `name`, `module` and
  `pip_package`, all binaries, and optionally `pool` (a binary, default: the daemon's `default`
  pool). The list is sent to every node as
  `{:register_libraries, [%{name: ..., module: ..., pip_package: ...}]}` when the node connects.
  The daemon accepts it only when its config sets `allow_client_libraries = true`. It never
  installs packages: the module must already import in the pool's Python.

  An invalid value stops the application from starting, with a message that names the key and
  the value:

      iex> Snakepit.Config.validate(nodes: [:"snakepit@host"], default_timeout: 0)
      {:error, "invalid :snakepit config default_timeout: 0 (expected a positive integer of milliseconds)"}
  """

  @type library :: %{
          required(:name) => String.t(),
          required(:module) => String.t(),
          required(:pip_package) => String.t(),
          optional(:pool) => String.t()
        }

  @type t :: %__MODULE__{
          nodes: [node()],
          registered_name: atom(),
          default_timeout: pos_integer(),
          pool: atom() | String.t() | nil,
          python_libraries: [library()],
          cookie: atom() | nil,
          reconnect_min_ms: pos_integer(),
          reconnect_max_ms: pos_integer()
        }

  defstruct nodes: [],
            registered_name: :snakepit,
            default_timeout: 30_000,
            pool: nil,
            python_libraries: [],
            cookie: nil,
            reconnect_min_ms: 100,
            reconnect_max_ms: 10_000

  @keys [
    :nodes,
    :registered_name,
    :default_timeout,
    :pool,
    :python_libraries,
    :cookie,
    :reconnect_min_ms,
    :reconnect_max_ms
  ]

  @doc """
  Reads and validates the `:snakepit` application environment.
  """
  @spec load() :: {:ok, t()} | {:error, String.t()}
  def load do
    :snakepit
    |> Application.get_all_env()
    |> Keyword.take(@keys)
    |> validate()
  end

  @doc """
  Validates a keyword list of settings and fills in the defaults.

  Keys that are not listed in the moduledoc are ignored, so a host application may keep its own
  keys under `:snakepit`.

      iex> {:ok, config} = Snakepit.Config.validate(nodes: [:"a@h", :"b@h"], cookie: "secret")
      iex> {config.nodes, config.cookie, config.registered_name}
      {[:"a@h", :"b@h"], :secret, :snakepit}

      iex> Snakepit.Config.validate(nodes: [:nohost])
      {:error, "invalid :snakepit config nodes: [:nohost] (expected a list of node names like :\\"snakepit@host\\")"}

      iex> Snakepit.Config.validate(python_libraries: [%{name: "pandas", module: "pandas"}])
      {:error, "invalid :snakepit config python_libraries: [%{module: \\"pandas\\", name: \\"pandas\\"}] (expected a list of %{name: binary, module: binary, pip_package: binary})"}

      iex> Snakepit.Config.validate(reconnect_min_ms: 500, reconnect_max_ms: 100)
      {:error, "invalid :snakepit config reconnect_max_ms: 100 (expected a positive integer of milliseconds, at least reconnect_min_ms 500)"}
  """
  @spec validate(keyword()) :: {:ok, t()} | {:error, String.t()}
  def validate(settings) when is_list(settings) do
    Enum.reduce_while(settings, {:ok, %__MODULE__{}}, fn {key, value}, {:ok, config} ->
      case check(key, value) do
        {:ok, checked} -> {:cont, {:ok, Map.put(config, key, checked)}}
        :ignore -> {:cont, {:ok, config}}
        {:error, expected} -> {:halt, {:error, invalid(key, value, expected)}}
      end
    end)
    |> check_backoff()
  end

  @doc """
  Validates settings like `validate/1` and raises `ArgumentError` on an invalid value.
  """
  @spec validate!(keyword()) :: t()
  def validate!(settings) do
    case validate(settings) do
      {:ok, config} -> config
      {:error, message} -> raise ArgumentError, message
    end
  end

  defp check(:nodes, nodes) do
    if is_list(nodes) and Enum.all?(nodes, &node_name?/1) do
      {:ok, Enum.uniq(nodes)}
    else
      {:error, "expected a list of node names like :\"snakepit@host\""}
    end
  end

  defp check(:registered_name, name) when is_atom(name) and name not in [nil, true, false],
    do: {:ok, name}

  defp check(:registered_name, _name), do: {:error, "expected an atom"}

  defp check(key, ms) when key in [:default_timeout, :reconnect_min_ms, :reconnect_max_ms] do
    if is_integer(ms) and ms > 0,
      do: {:ok, ms},
      else: {:error, "expected a positive integer of milliseconds"}
  end

  defp check(:pool, pool) when is_atom(pool) or is_binary(pool), do: {:ok, pool}
  defp check(:pool, _pool), do: {:error, "expected an atom, a binary or nil"}

  defp check(:python_libraries, libraries) when is_list(libraries) do
    normalized = Enum.map(libraries, &normalize_library/1)

    if Enum.all?(normalized, &is_map/1),
      do: {:ok, normalized},
      else: {:error, library_expected()}
  end

  defp check(:python_libraries, _libraries), do: {:error, library_expected()}

  defp check(:cookie, nil), do: {:ok, nil}

  defp check(:cookie, cookie) when is_binary(cookie) and cookie != "",
    do: {:ok, cookie_atom(cookie)}

  defp check(:cookie, cookie) when is_atom(cookie), do: {:ok, cookie}
  defp check(:cookie, _cookie), do: {:error, "expected a non-empty binary, an atom or nil"}

  defp check(_unknown, _value), do: :ignore

  defp check_backoff({:ok, config}) do
    if config.reconnect_max_ms >= config.reconnect_min_ms do
      {:ok, config}
    else
      expected =
        "expected a positive integer of milliseconds, at least reconnect_min_ms " <>
          Integer.to_string(config.reconnect_min_ms)

      {:error, invalid(:reconnect_max_ms, config.reconnect_max_ms, expected)}
    end
  end

  defp check_backoff(error), do: error

  defp node_name?(node) when is_atom(node) do
    case String.split(Atom.to_string(node), "@") do
      [name, host] -> name != "" and host != ""
      _parts -> false
    end
  end

  defp node_name?(_node), do: false

  defp normalize_library(library) when is_list(library) do
    if Keyword.keyword?(library), do: normalize_library(Map.new(library)), else: :invalid
  end

  defp normalize_library(%{name: name, module: module, pip_package: pip_package} = library)
       when is_binary(name) and is_binary(module) and is_binary(pip_package) do
    case Map.get(library, :pool) do
      nil ->
        %{name: name, module: module, pip_package: pip_package}

      pool when is_binary(pool) ->
        %{name: name, module: module, pip_package: pip_package, pool: pool}

      _invalid ->
        :invalid
    end
  end

  defp normalize_library(_library), do: :invalid

  defp library_expected,
    do: "expected a list of %{name: binary, module: binary, pip_package: binary}"

  # Cookies are atoms in the distribution API. The config has one cookie, so this makes one atom.
  defp cookie_atom(cookie), do: String.to_atom(cookie)

  defp invalid(key, value, expected),
    do: "invalid :snakepit config #{key}: #{inspect(value)} (#{expected})"
end
