defmodule SnakepitTest.App do
  @moduledoc """
  Restarts the `:snakepit` application with a given configuration.
  """

  @doc """
  Stops `:snakepit`, replaces its settings with `settings` (on top of the test defaults) and
  starts it again. Returns what `Application.ensure_all_started/1` returns.
  """
  def restart(settings) do
    Application.stop(:snakepit)

    for {key, _value} <- Application.get_all_env(:snakepit),
        do: Application.delete_env(:snakepit, key)

    defaults = [registered_name: :snakepit, reconnect_min_ms: 50, reconnect_max_ms: 400]

    for {key, value} <- Keyword.merge(defaults, settings),
        do: Application.put_env(:snakepit, key, value)

    Application.ensure_all_started(:snakepit)
  end

  @doc "Restarts the application with `settings` and waits until each node is healthy."
  def restart!(settings) do
    {:ok, _apps} = restart(settings)

    for node <- Keyword.get(settings, :nodes, []) do
      :ok = Snakepit.Connection.await_node(node, 10_000)
    end

    :ok
  end
end
