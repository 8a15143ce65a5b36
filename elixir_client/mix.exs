defmodule Snakepit.MixProject do
  use Mix.Project

  @version "0.1.0"

  def project do
    [
      app: :snakepit,
      version: @version,
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      elixirc_paths: elixirc_paths(Mix.env()),
      deps: [],
      docs: [main: "Snakepit", extras: ["README.md", "docs/migration.md"]]
    ]
  end

  def application do
    [
      extra_applications: [:logger],
      mod: {Snakepit.Application, []},
      env: [
        nodes: [],
        registered_name: :snakepit,
        default_timeout: 30_000,
        pool: nil,
        python_libraries: [],
        cookie: nil,
        reconnect_min_ms: 100,
        reconnect_max_ms: 10_000
      ]
    ]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_env), do: ["lib"]
end
