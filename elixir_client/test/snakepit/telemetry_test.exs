defmodule Snakepit.TelemetryTest do
  use ExUnit.Case, async: false

  @moduletag :capture_log

  alias Snakepit.Telemetry

  setup do
    on_exit(fn ->
      for {id, _prefixes} <- Telemetry.list_handlers(), do: Telemetry.detach(id)
    end)
  end

  defp forward_to(pid) do
    fn event, measurements, metadata, config ->
      send(pid, {:event, event, measurements, metadata, config})
    end
  end

  test "attach and detach manage handlers" do
    assert Telemetry.attach("h1", [:snakepit, :worker], forward_to(self()), :cfg) == :ok

    assert Telemetry.attach("h1", [[:snakepit]], forward_to(self()), nil) ==
             {:error, :already_exists}

    assert Telemetry.list_handlers() == %{"h1" => [[:snakepit, :worker]]}
    assert Telemetry.detach("h1") == :ok
    assert Telemetry.detach("h1") == {:error, :not_found}
    assert Telemetry.list_handlers() == %{}
  end

  test "events reach the handlers whose prefix matches" do
    :ok = Telemetry.attach("workers", [[:snakepit, :worker]], forward_to(self()), :w)
    :ok = Telemetry.attach("sessions", [[:snakepit, :session]], forward_to(self()), :s)

    # The message a daemon sends to its subscribers.
    send(
      Telemetry,
      {:snakepit_telemetry, [:snakepit, :worker, :started], %{count: 1}, %{pool: "default"}}
    )

    assert_receive {:event, [:snakepit, :worker, :started], %{count: 1}, %{pool: "default"}, :w}
    refute_receive {:event, _event, _measurements, _metadata, :s}, 100
  end

  test "a raising handler is detached and the others keep running" do
    :ok = Telemetry.attach("bad", [[:snakepit]], fn _e, _m, _md, _c -> raise "boom" end, nil)
    :ok = Telemetry.attach("good", [[:snakepit]], forward_to(self()), :good)

    send(Telemetry, {:snakepit_telemetry, [:snakepit, :node, :up], %{}, %{}})

    assert_receive {:event, [:snakepit, :node, :up], %{}, %{}, :good}
    assert Map.keys(Telemetry.list_handlers()) == ["good"]
  end

  @tag :telemetry
  @tag :pool
  test "a daemon's request events arrive" do
    :ok = Telemetry.attach("requests", [[:snakepit, :request]], forward_to(self()), nil)
    assert {:ok, 2} = Snakepit.execute("python.builtins.len", ["ab"])
    assert_receive {:event, [:snakepit, :request, :stop], measurements, _metadata, nil}, 5_000
    assert is_map(measurements)
  end
end
