defmodule Snakepit.ConfigTest do
  use ExUnit.Case, async: true

  alias Snakepit.Config

  @invalid [
    nodes: :sp@h,
    nodes: ["sp@h"],
    nodes: [:"@h"],
    nodes: [:sp@],
    registered_name: "snakepit",
    registered_name: nil,
    default_timeout: 0,
    default_timeout: 1.5,
    default_timeout: :infinity,
    pool: 1,
    python_libraries: %{name: "a"},
    python_libraries: [%{name: "a", module: "a", pip_package: :a}],
    python_libraries: [[name: "a", module: "a"]],
    python_libraries: [%{name: "a", module: "a", pip_package: "a", pool: :default}],
    cookie: "",
    cookie: 1,
    reconnect_min_ms: -1,
    reconnect_max_ms: 0
  ]

  test "each invalid value names its key and value" do
    for {key, value} <- @invalid do
      assert {:error, message} = Config.validate([{key, value}])
      assert message =~ "invalid :snakepit config #{key}: #{inspect(value)} (expected "
    end
  end

  test "defaults fill what is not set" do
    assert {:ok, config} = Config.validate([])
    assert config == %Config{}
    assert config.registered_name == :snakepit
    assert config.default_timeout == 30_000
    assert config.nodes == []
  end

  test "valid values are normalized" do
    libraries = [
      [name: "pd", module: "pandas", pip_package: "pandas>=1.5"],
      %{name: "np", module: "numpy", pip_package: "numpy", pool: "ml"}
    ]

    assert {:ok, config} =
             Config.validate(
               nodes: [:a@h, :a@h, :b@h],
               python_libraries: libraries,
               cookie: :secret,
               pool: "default",
               unrelated_key: 1
             )

    assert config.nodes == [:a@h, :b@h]

    assert config.python_libraries == [
             %{name: "pd", module: "pandas", pip_package: "pandas>=1.5"},
             %{name: "np", module: "numpy", pip_package: "numpy", pool: "ml"}
           ]

    assert config.cookie == :secret
    assert config.pool == "default"
  end

  test "validate! raises with the message" do
    assert_raise ArgumentError, ~r/invalid :snakepit config pool: 1/, fn ->
      Config.validate!(pool: 1)
    end

    assert %Config{default_timeout: 5} = Config.validate!(default_timeout: 5)
  end
end
