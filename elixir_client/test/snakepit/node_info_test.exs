defmodule Snakepit.NodeInfoTest do
  use ExUnit.Case, async: true

  alias Snakepit.Error

  setup do
    %{node: :persistent_term.get(:snakepit_test_primary).node}
  end

  test "ping returns pong", %{node: node} do
    assert Snakepit.ping() == :pong
    assert Snakepit.ping(node: node, timeout: 1_000) == :pong
  end

  test "info describes the daemon", %{node: node} do
    assert {:ok, info} = Snakepit.info(node: node)
    assert info.node == node
    assert is_binary(info.version)
    assert is_list(info.pools)
    assert is_integer(info.uptime_ms)
    assert info.uptime_ms >= 0
  end

  test "health reports a status and checks", %{node: node} do
    assert {:ok, health} = Snakepit.health(node: node)
    assert health.status in [:ok, :degraded, :unhealthy]
    assert is_map(health.checks)
  end

  test "unknown request is a bad_request error", %{node: node} do
    assert {:error, %Error{} = error} =
             Snakepit.Connection.call_node(node, {:no_such_request, 1}, 2_000)

    assert error.kind == :bad_request
    assert error.retryable == false
    assert error.node == node
    assert error.message != ""
  end

  test "unknown option is rejected before any call" do
    assert {:error, %Error{kind: :bad_request, message: "unknown option :colour"}} =
             Snakepit.ping(colour: :red)
  end

  test "invalid option value is rejected" do
    assert {:error, %Error{kind: :bad_request} = error} = Snakepit.info(timeout: -1)
    assert error.message == "invalid option :timeout: -1"
  end

  test "unhealthy explicit node is a nodedown error" do
    assert {:error, %Error{kind: :nodedown, node: :nobody@nowhere}} =
             Snakepit.ping(node: :nobody@nowhere)
  end
end
