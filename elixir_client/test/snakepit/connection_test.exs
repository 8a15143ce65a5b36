defmodule Snakepit.ConnectionTest do
  # Restarts the application and kills daemons, so it runs alone.
  use ExUnit.Case, async: false

  @moduletag :capture_log

  import ExUnit.CaptureLog

  alias Snakepit.{Connection, Error}
  alias SnakepitTest.{App, Daemon, Wait}

  setup do
    primary = :persistent_term.get(:snakepit_test_primary)
    on_exit(fn -> App.restart!(nodes: [primary.node]) end)
    %{primary: primary}
  end

  defp start_daemon(label) do
    daemon = Daemon.start!(sname: Daemon.unique_sname(label))
    on_exit(fn -> Daemon.stop(daemon) end)
    daemon
  end

  test "no node configured gives nodedown at once" do
    App.restart!(nodes: [])
    {ms, reply} = Wait.timed(fn -> Snakepit.ping(timeout: 10_000) end)

    assert {:error, %Error{kind: :nodedown, retryable: true}} = reply
    assert ms < 100
    assert {:error, %Error{kind: :nodedown}} = Snakepit.info()
    assert {:error, %Error{kind: :nodedown}} = Snakepit.execute("python.os.getcwd", [])
    assert {:error, %Error{kind: :nodedown}} = Snakepit.create_session("s")
    assert {:error, %Error{kind: :nodedown}} = Snakepit.get_var("s", "x")
    assert {:error, %Error{kind: :nodedown}} = Snakepit.list_sessions()

    assert_raise Error, ~r/^nodedown: /, fn ->
      Enum.to_list(Snakepit.stream("python.builtins.iter", [[1]]))
    end

    assert {:error, %Error{kind: :nodedown}} =
             Snakepit.execute_stream("python.builtins.iter", [[1]], fn _chunk -> :ok end)
  end

  test "the first call after the start waits for the first connection" do
    daemon = start_daemon("first_call")

    for _round <- 1..5 do
      {:ok, _apps} = App.restart(nodes: [daemon.node])
      assert {:ok, %{node: node}} = Snakepit.info()
      assert node == daemon.node
    end
  end

  # A stopped daemon's connection attempt hangs (Node.connect waits for net_setuptime), so
  # the first calls must go to the node that is up as soon as it is.
  test "the first call does not wait for a hung node once another is up" do
    hung = start_daemon("first_hung")
    up = start_daemon("first_up")
    Daemon.signal(hung, "STOP")
    on_exit(fn -> Daemon.signal(hung, "CONT") end)

    {:ok, _apps} = App.restart(nodes: [hung.node, up.node])
    {ms, reply} = Wait.timed(fn -> Snakepit.info() end)

    assert {:ok, %{node: node}} = reply
    assert node == up.node
    assert ms < 2_000, "the first call waited #{ms} ms"
  end

  test "the first call after the start gets nodedown soon when no daemon runs" do
    absent = :"snakepit_absent_#{System.unique_integer([:positive])}@127.0.0.1"
    {:ok, _apps} = App.restart(nodes: [absent])
    {ms, reply} = Wait.timed(fn -> Snakepit.ping(timeout: 10_000) end)

    assert {:error, %Error{kind: :nodedown}} = reply
    assert ms < 2_000, "the call waited #{ms} ms"
  end

  test "calls round-robin over healthy nodes" do
    a = start_daemon("rr_a")
    b = start_daemon("rr_b")
    App.restart!(nodes: [a.node, b.node])
    assert Connection.healthy_nodes() == [a.node, b.node]

    nodes =
      for _call <- 1..10 do
        assert {:ok, %{node: node}} = Snakepit.info()
        node
      end

    assert Enum.frequencies(nodes) == %{a.node => 5, b.node => 5}
  end

  test "in-flight calls get nodedown when the daemon is killed" do
    daemon = start_daemon("inflight")
    App.restart!(nodes: [daemon.node])

    # A stopped daemon's socket accepts the calls, but the daemon cannot reply to them.
    :ok = Daemon.signal(daemon, "STOP")
    tasks = for _call <- 1..10, do: Task.async(fn -> Snakepit.ping(timeout: 20_000) end)
    Process.sleep(300)

    {ms, replies} =
      Wait.timed(fn ->
        :ok = Daemon.signal(daemon, "KILL")
        Enum.map(tasks, &Task.await(&1, 5_000))
      end)

    for reply <- replies do
      assert {:error, %Error{kind: :nodedown, node: node, retryable: true}} = reply
      assert node == daemon.node
    end

    assert ms < 3_000
  end

  test "a daemon that does not answer times out at the deadline" do
    daemon = start_daemon("frozen")
    App.restart!(nodes: [daemon.node])
    :ok = Daemon.signal(daemon, "STOP")

    {ms, reply} = Wait.timed(fn -> Snakepit.ping(timeout: 300) end)
    :ok = Daemon.signal(daemon, "CONT")

    assert {:error, %Error{kind: :timeout, retryable: true} = error} = reply
    assert error.node == daemon.node
    assert ms >= 300
    assert ms < 1_500
    assert Snakepit.ping(timeout: 2_000) == :pong
  end

  test "reconnects to a restarted daemon" do
    daemon = start_daemon("restart")
    App.restart!(nodes: [daemon.node])
    assert Snakepit.ping() == :pong

    log =
      capture_log(fn ->
        :ok = Daemon.signal(daemon, "KILL")
        assert Wait.until(fn -> Connection.healthy_nodes() == [] end)
      end)

    assert log =~ "went down"
    {ms, reply} = Wait.timed(fn -> Snakepit.ping(timeout: 10_000) end)
    assert {:error, %Error{kind: :nodedown}} = reply
    assert ms < 100
    assert Connection.status()[daemon.node] in [:down, :connecting]

    # epmd frees the name when it sees the dead daemon's socket close, which can be after the
    # distribution's nodedown; a daemon started before that exits on the name clash.
    assert Wait.until(fn -> not Daemon.registered?(daemon.sname) end)
    restarted = start_daemon_named(daemon.sname)
    assert restarted.node == daemon.node
    assert Connection.await_node(daemon.node, 10_000) == :ok
    assert Snakepit.ping() == :pong
    assert Connection.status() == %{daemon.node => :up}
  end

  test "add_node and remove_node change the routed set", %{primary: primary} do
    extra = start_daemon("added")
    :ok = Connection.add_node(extra.node)
    assert Connection.await_node(extra.node, 10_000) == :ok
    assert Connection.healthy_nodes() == [primary.node, extra.node]
    assert Snakepit.ping(node: extra.node) == :pong

    :ok = Connection.remove_node(extra.node)
    assert Connection.healthy_nodes() == [primary.node]
    assert {:error, %Error{kind: :nodedown}} = Snakepit.ping(node: extra.node)
    refute Map.has_key?(Connection.status(), extra.node)
  end

  test "unreachable node stays down without blocking calls", %{primary: primary} do
    {:ok, host} = :inet.gethostname()
    missing = :"sp_missing_#{System.unique_integer([:positive])}@#{host}"

    capture_log(fn ->
      {:ok, _apps} = App.restart(nodes: [primary.node, missing])
      assert Connection.await_node(primary.node, 10_000) == :ok
      assert {:error, %Error{kind: :nodedown}} = Connection.await_node(missing, 300)
    end)

    assert Connection.status()[missing] in [:down, :connecting]
    assert Connection.healthy_nodes() == [primary.node]

    for _call <- 1..4, do: assert(Snakepit.ping() == :pong)
  end

  test "cookie setting is used for the configured nodes" do
    daemon = start_daemon("cookie")
    right = Node.get_cookie()
    on_exit(fn -> Node.set_cookie(daemon.node, right) end)

    {:ok, _apps} = App.restart(nodes: [daemon.node], cookie: "snakepit_wrong_cookie")
    assert {:error, %Error{kind: :nodedown}} = Connection.await_node(daemon.node, 1_000)
    assert Connection.status()[daemon.node] in [:down, :connecting]
    refute daemon.node in Node.list(:hidden)

    App.restart!(nodes: [daemon.node], cookie: Atom.to_string(right))
    assert Snakepit.ping() == :pong
  end

  test "await_node rejects a node that is not managed" do
    assert {:error, %Error{kind: :nodedown} = error} = Connection.await_node(:other@host, 1_000)
    assert error.message =~ "is not managed"
  end

  test "configured libraries do not keep a node from being healthy", %{primary: primary} do
    libraries = [%{name: "json", module: "json", pip_package: "json"}]
    log = capture_log(fn -> App.restart!(nodes: [primary.node], python_libraries: libraries) end)

    # The test daemons do not allow client libraries, so the registration is rejected.
    assert log =~ "rejected register_libraries: not_allowed: "
    assert Snakepit.ping() == :pong
  end

  test "invalid configuration stops the application from starting", %{primary: primary} do
    capture_log(fn ->
      assert {:error, reason} = App.restart(nodes: [primary.node], default_timeout: 0)
      assert inspect(reason) =~ "invalid :snakepit config default_timeout: 0"
    end)

    capture_log(fn ->
      assert {:error, reason} = App.restart(nodes: ["not-an-atom"])
      assert inspect(reason) =~ "invalid :snakepit config nodes"
    end)

    refute Process.whereis(Snakepit.Connection)
  end

  defp start_daemon_named(sname) do
    daemon = Daemon.start!(sname: sname)
    on_exit(fn -> Daemon.stop(daemon) end)
    daemon
  end
end
