defmodule Snakepit.SessionTest do
  use ExUnit.Case, async: false

  @moduletag :sessions
  @moduletag :capture_log

  alias Snakepit.{Connection, Error}
  alias SnakepitTest.{App, Daemon, Wait}

  setup do
    primary = :persistent_term.get(:snakepit_test_primary)
    on_exit(fn -> App.restart!(nodes: [primary.node]) end)
    %{primary: primary}
  end

  defp session_id(label), do: "#{label}-#{System.unique_integer([:positive])}"

  test "session life cycle on one node", %{primary: primary} do
    id = session_id("life")

    assert {:ok, session} = Snakepit.create_session(id, ttl: 60)
    assert session.id == id
    assert Connection.session_node(id) == primary.node
    assert {:ok, again} = Snakepit.create_session(id, ttl: 60)
    assert again.id == id
    assert again.created_ms == session.created_ms

    assert {:ok, %{id: ^id}} = Snakepit.get_session(id)
    assert Snakepit.put_var(id, "model", %{layers: 3, name: "héllo"}) == :ok
    assert {:ok, %{layers: 3, name: "héllo"}} = Snakepit.get_var(id, "model")
    assert Snakepit.touch_session(id) == :ok
    assert {:ok, ids} = Snakepit.list_sessions()
    assert id in ids
    assert {:ok, [_one]} = Snakepit.list_sessions(limit: 1)

    assert Snakepit.delete_session(id) == :ok
    assert Connection.session_node(id) == nil
    assert {:error, %Error{kind: :session_not_found, retryable: false}} = Snakepit.get_session(id)
  end

  test "missing session errors name the kind" do
    id = session_id("missing")

    for reply <- [
          Snakepit.get_session(id),
          Snakepit.get_var(id, "x"),
          Snakepit.put_var(id, "x", 1),
          Snakepit.touch_session(id)
        ] do
      assert {:error, %Error{kind: :session_not_found} = error} = reply
      assert error.retryable == false
      assert is_binary(error.message)
    end

    assert Connection.session_node(id) == nil
  end

  test "session options are checked before the call" do
    assert {:error, %Error{kind: :bad_request, message: "invalid option :ttl: 0"}} =
             Snakepit.create_session(session_id("ttl"), ttl: 0)
  end

  test "calls of a session go to the node that holds it" do
    a = Daemon.start!(sname: Daemon.unique_sname("sess_a"))
    b = Daemon.start!(sname: Daemon.unique_sname("sess_b"))
    on_exit(fn -> Enum.each([a, b], &Daemon.stop/1) end)
    App.restart!(nodes: [a.node, b.node])

    on_a = session_id("on-a")
    on_b = session_id("on-b")
    assert {:ok, _session} = Snakepit.create_session(on_a, node: a.node)
    assert {:ok, _session} = Snakepit.create_session(on_b, node: b.node)
    assert Connection.session_node(on_a) == a.node
    assert Connection.session_node(on_b) == b.node

    # Each daemon has its own memory store, so a call routed to the other node would fail.
    for round <- 1..6 do
      assert Snakepit.put_var(on_a, "round", round) == :ok
      assert {:ok, ^round} = Snakepit.get_var(on_a, "round")
      assert {:ok, %{id: ^on_b}} = Snakepit.get_session(on_b)
    end

    assert {:error, %Error{kind: :session_not_found}} = Snakepit.get_session(on_a, node: b.node)

    # A session the client has not seen is found by asking the healthy nodes.
    :ok = Connection.forget_session(on_a)
    assert {:ok, %{id: ^on_a}} = Snakepit.get_session(on_a)
    assert Connection.session_node(on_a) == a.node

    assert {:ok, ids} = Snakepit.list_sessions()
    assert on_a in ids
    assert on_b in ids
    assert {:ok, only_b} = Snakepit.list_sessions(node: b.node)
    refute on_a in only_b

    # The session's node is down: its calls fail at once instead of going elsewhere.
    :ok = Daemon.signal(a, "KILL")
    assert Wait.until(fn -> Connection.healthy_nodes() == [b.node] end)
    assert {:error, %Error{kind: :nodedown, node: node} = error} = Snakepit.get_var(on_a, "round")
    assert node == a.node
    assert error.message =~ on_a
    assert {:ok, %{id: ^on_b}} = Snakepit.get_session(on_b)
  end
end
