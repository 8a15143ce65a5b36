defmodule Snakepit.CNodeTest do
  use ExUnit.Case, async: false

  @moduletag :capture_log

  alias Snakepit.{CNode, Connection}
  alias SnakepitTest.{Daemon, Wait}

  defp opts(label, extra \\ []) do
    [
      executable: Daemon.executable(),
      sname: Daemon.unique_sname(label),
      args: ["--http", "off" | Daemon.default_args()],
      env: [{"SNAKEPIT_COOKIE", Atom.to_string(Node.get_cookie())}],
      ready_timeout: 30_000,
      stop_timeout: 5_000
    ]
    |> Keyword.merge(extra)
  end

  test "supervised daemon is ready, routed to, and stops with its supervisor" do
    {:ok, supervisor} = Supervisor.start_link([{CNode, opts("sup")}], strategy: :one_for_one)
    [{CNode, child, :worker, _modules}] = Supervisor.which_children(supervisor)
    %{node: node, os_pid: os_pid} = CNode.info(child)

    assert Daemon.os_process_alive?(os_pid)
    assert Connection.await_node(node, 10_000) == :ok
    assert Snakepit.ping(node: node) == :pong
    assert node in Node.list(:connected)

    :ok = Supervisor.stop(supervisor)
    assert Daemon.wait_gone(os_pid, 2_000)
    refute node in Connection.healthy_nodes()
    refute Map.has_key?(Connection.status(), node)
  end

  test "a daemon that dies is restarted by the supervisor" do
    {:ok, supervisor} = Supervisor.start_link([{CNode, opts("restart")}], strategy: :one_for_one)
    on_exit(fn -> if Process.alive?(supervisor), do: Supervisor.stop(supervisor) end)
    [{CNode, child, :worker, _modules}] = Supervisor.which_children(supervisor)
    %{node: node, os_pid: os_pid} = CNode.info(child)

    {_output, 0} = System.cmd("kill", ["-KILL", Integer.to_string(os_pid)])

    assert Wait.until(fn ->
             match?(
               [{CNode, pid, _, _}] when is_pid(pid) and pid != child,
               Supervisor.which_children(supervisor)
             )
           end)

    [{CNode, new_child, :worker, _modules}] = Supervisor.which_children(supervisor)
    %{node: ^node, os_pid: new_os_pid} = CNode.info(new_child)
    assert new_os_pid != os_pid
    assert Connection.await_node(node, 10_000) == :ok
    assert Snakepit.ping(node: node) == :pong

    Supervisor.stop(supervisor)
    assert Daemon.wait_gone(new_os_pid, 2_000)
  end

  test "terminating the child stops the daemon" do
    {:ok, supervisor} = Supervisor.start_link([{CNode, opts("child")}], strategy: :one_for_one)
    [{CNode, child, :worker, _modules}] = Supervisor.which_children(supervisor)
    %{os_pid: os_pid} = CNode.info(child)

    :ok = Supervisor.terminate_child(supervisor, CNode)
    assert Daemon.wait_gone(os_pid, 2_000)
    Supervisor.stop(supervisor)
  end

  test "a daemon that exits before READY fails the start with its output" do
    Process.flag(:trap_exit, true)
    bad = opts("bad", args: ["--http", "off", "--no-such-option"])

    assert {:error, {:cnode_exited, message}} = CNode.start_link(bad)
    assert message =~ "exited with status 64 before READY"
    assert message =~ "no-such-option"
  end

  @tag :tmp_dir
  test "a daemon that is not ready in time is stopped and fails the start", %{tmp_dir: dir} do
    Process.flag(:trap_exit, true)

    # The real daemon is ready well within a second, so this test runs a program that never
    # prints READY, like a daemon that hangs during start-up. It records its pid so the test can see it stopped.
    pidfile = Path.join(dir, "pid")
    hanging = Path.join(dir, "hanging-daemon")
    File.write!(hanging, "#!/bin/sh\necho starting\necho $$ > #{pidfile}\nexec sleep 60\n")
    File.chmod!(hanging, 0o755)

    assert {:error, {:cnode_ready_timeout, message}} =
             CNode.start_link(opts("slow", executable: hanging, ready_timeout: 500))

    assert message =~ "printed no READY line in time; its last output:\nstarting"
    os_pid = pidfile |> File.read!() |> String.trim() |> String.to_integer()
    assert Daemon.wait_gone(os_pid, 2_000)
  end

  test "a missing executable fails the start" do
    Process.flag(:trap_exit, true)

    assert {:error, {:cnode_not_found, message}} =
             CNode.start_link(opts("missing", executable: "/nonexistent/snakepit-cnode"))

    assert message == "snakepit-cnode executable not found: /nonexistent/snakepit-cnode"
  end

  test "the daemon gets this node as its owner" do
    {:ok, launcher} = CNode.start_link(opts("owner", connect: false))
    %{os_pid: os_pid, node: node} = CNode.info(launcher)
    {:ok, cmdline} = File.read("/proc/#{os_pid}/cmdline")

    assert ["--owner", owner | _rest] = cmdline |> String.split(<<0>>) |> Enum.drop(1)
    assert owner == Atom.to_string(node())
    refute Map.has_key?(Connection.status(), node)

    GenServer.stop(launcher)
    assert Daemon.wait_gone(os_pid, 2_000)
  end
end
