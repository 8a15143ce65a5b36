defmodule Snakepit.Application do
  @moduledoc false

  use Application
  require Logger

  @impl true
  def start(_type, _args) do
    with {:ok, config} <- Snakepit.Config.load(),
         :ok <- check_distribution(config) do
      children = [
        {Snakepit.Connection, config},
        Snakepit.Telemetry
      ]

      Supervisor.start_link(children, strategy: :one_for_all, name: Snakepit.Supervisor)
    else
      {:error, message} ->
        Logger.error("Snakepit failed to start: #{message}")
        {:error, {:invalid_config, message}}
    end
  end

  defp check_distribution(%{nodes: []}), do: :ok

  defp check_distribution(config) do
    if Node.alive?() do
      :ok
    else
      {:error,
       "invalid :snakepit config nodes: #{inspect(config.nodes)} (this node is not " <>
         "distributed, so it cannot connect to them: start it with --sname or --name)"}
    end
  end
end
