# SPDX-License-Identifier: Apache-2.0
#
# Peer connections: pings right after start, concurrent handshakes, wrong cookies, peers that
# vanish, idle peers with a short tick time, and peers that stop reading.

defmodule Snakepit.Test.ConnectionsTest do
  use ExUnit.Case, async: false
  alias Snakepit.Test.{Daemon, OsProcess, Peer, Proc}

  defp ping_ms(node) do
    {us, result} = :timer.tc(fn -> Node.ping(node) end)
    {result, us / 1000}
  end

  defp call_ms(node) do
    {us, result} = :timer.tc(fn -> GenServer.call({:snakepit, node}, :ping, 5000) end)
    {result, us / 1000}
  end

  defp await!(proc, regex, timeout) do
    case OsProcess.await_line(proc, regex, timeout) do
      {:ok, captures} ->
        captures

      other ->
        flunk(
          "waited for #{inspect(regex)}: #{inspect(other)}\n#{Enum.join(OsProcess.lines(proc), "\n")}"
        )
    end
  end

  test "100 Node.ping right after start (C2)" do
    daemon = Daemon.start!()
    results = for _ <- 1..100, do: ping_ms(daemon.node)

    for {{result, ms}, i} <- Enum.with_index(results, 1) do
      assert result == :pong, "ping #{i} gave #{result}"
      assert ms < 50, "ping #{i} took #{ms} ms"
    end

    assert daemon.node in Node.list(:hidden)
    refute daemon.node in Node.list()
  end

  test "two nodes connect and call at the same moment (C3)" do
    daemon = Daemon.start!()
    Process.register(self(), :peer_barrier)
    on_exit(fn -> if Process.whereis(:peer_barrier), do: Process.unregister(:peer_barrier) end)

    peers =
      for _ <- 1..2 do
        Peer.start!("calls", [Atom.to_string(daemon.node), Atom.to_string(node()), "50"])
      end

    ready =
      for _ <- peers do
        assert_receive {:ready, pid, _node}, 30_000
        pid
      end

    Enum.each(ready, &send(&1, :go))

    for _ <- peers do
      assert_receive {:done, peer_node, results}, 30_000
      assert length(results) == 50
      assert Enum.all?(results, &(&1 == :pong)), "#{peer_node}: #{inspect(Enum.uniq(results))}"
    end

    assert GenServer.call({:snakepit, daemon.node}, :ping) == :pong
  end

  # Connections that send nothing keep their handshake threads in ei_accept_tmo until the
  # handshake timeout (5 s by default).
  defp stall_handshakes(daemon, count) do
    sockets =
      for _ <- 1..count do
        {:ok, socket} =
          :gen_tcp.connect(~c"127.0.0.1", Daemon.dist_port(daemon), [:binary, active: false])

        socket
      end

    on_exit(fn -> Enum.each(sockets, &:gen_tcp.close/1) end)
    Process.sleep(200)
    sockets
  end

  test "handshakes over the limit of 64 are rejected" do
    daemon = Daemon.start!()
    sockets = stall_handshakes(daemon, 64)
    assert Node.ping(daemon.node) == :pang
    # The daemon logs the rejection as it happens; its output may reach the test a little later.
    await!(daemon.proc, ~r/64 handshakes are in progress/, 5000)

    Enum.each(sockets, &:gen_tcp.close/1)
    Process.sleep(300)
    assert Node.ping(daemon.node) == :pong
  end

  test "a stalled handshake does not delay a new peer" do
    daemon = Daemon.start!()
    stall_handshakes(daemon, 1)
    assert {:pong, ms} = ping_ms(daemon.node)
    assert ms < 1000, "connecting took #{ms} ms"
  end

  # Each handshake has a thread of its own, up to 64 at once, so stalled ones delay no one.
  test "32 stalled handshakes do not delay a new peer" do
    daemon = Daemon.start!()
    stall_handshakes(daemon, 32)
    assert {:pong, ms} = ping_ms(daemon.node)
    assert ms < 1000, "connecting took #{ms} ms"
  end

  test "wrong cookie: pang each time, few log lines, flat fd count (C19)" do
    # One worker: READY waits only for the first worker of a pool, and a second one starting
    # later would open fds of its own during the test.
    daemon = Daemon.start!(args: ["--pool-size", "1"])
    os_pid = Daemon.os_pid(daemon)
    fds_before = Proc.fd_count(os_pid)

    {peer, peer_node} =
      Peer.start!("pings", [Atom.to_string(daemon.node), "1000"], cookie: "wrong")

    assert [_, "0", "1000"] = await!(peer, ~r/^PINGS pong=(\d+) pang=(\d+)$/, 90_000)

    # Handshakes run on threads of their own: give the last one a moment to finish closing.
    Process.sleep(200)
    assert Proc.fd_count(os_pid) <= fds_before, "fds grew from #{fds_before}"

    failures = Enum.filter(Daemon.lines(daemon), &(&1 =~ "Handshake"))
    assert length(failures) in 1..3, "#{length(failures)} lines:\n#{Enum.join(failures, "\n")}"
    assert Enum.all?(failures, &(&1 =~ Atom.to_string(peer_node)))
    refute Enum.any?(failures, &(&1 =~ "at 0.0.0.0")), "an unknown address shown as 0.0.0.0"

    # The daemon still serves a node with the right cookie.
    assert GenServer.call({:snakepit, daemon.node}, :ping) == :pong
  end

  # A $gen_call that reaches the daemon through another node carries a From pid of this node:
  # the reply comes here directly, with the tag unchanged, as from a BEAM server.
  test "a call forwarded by another node is answered to its caller" do
    daemon = Daemon.start!()
    {peer, peer_node} = Peer.start!("forward", [Atom.to_string(daemon.node)])
    await!(peer, ~r/^FORWARDING$/, 30_000)
    assert Node.ping(daemon.node) == :pong

    for request <- [:ping, :nonsense] do
      tag = make_ref()
      send({:forwarder, peer_node}, {:forward, {:"$gen_call", {self(), tag}, request}})
      assert_receive {^tag, reply}, 5000
      if request == :ping, do: assert(reply == :pong)
      if request == :nonsense, do: assert({:error, %{kind: :bad_request}} = reply)
    end

    # An alias tag, as GenServer.call makes it since OTP 24, gets its reply the same way.
    alias_ref = :erlang.alias()

    send(
      {:forwarder, peer_node},
      {:forward, {:"$gen_call", {self(), [:alias | alias_ref]}, :ping}}
    )

    assert_receive {[:alias | ^alias_ref], :pong}, 5000
  end

  test "peer killed abruptly: disconnect logged, still registered, idle CPU (C21)" do
    daemon = Daemon.start!()
    os_pid = Daemon.os_pid(daemon)
    {peer, peer_node} = Peer.start!("connect", [Atom.to_string(daemon.node)])
    await!(peer, ~r/^CALL :pong$/, 30_000)
    await!(daemon.proc, ~r/Node #{peer_node} connected/, 1000)

    OsProcess.signal(peer, "KILL")

    {us, result} =
      :timer.tc(fn ->
        OsProcess.await_line(daemon.proc, ~r/Node #{peer_node} disconnected/, 1000)
      end)

    assert {:ok, _} = result, "no disconnect line within 1 s"
    assert us < 1_000_000
    assert Proc.epmd_registered?(daemon.sname)

    ticks_before = Proc.cpu_ticks(os_pid)
    Process.sleep(2000)
    ticks = Proc.cpu_ticks(os_pid) - ticks_before
    # Clock ticks are 10 ms: an idle loop uses none, a busy one about 200 over 2 s.
    assert ticks <= 5, "#{ticks} CPU ticks in 2 s"
    assert GenServer.call({:snakepit, daemon.node}, :ping) == :pong
  end

  test "peer halting itself: disconnect logged" do
    daemon = Daemon.start!()
    {peer, peer_node} = Peer.start!("pings", [Atom.to_string(daemon.node), "1"])
    await!(peer, ~r/^PINGS pong=1 pang=0$/, 30_000)
    assert {:ok, _} = OsProcess.await_exit(peer, 10_000)
    assert {:ok, _} = OsProcess.await_line(daemon.proc, ~r/Node #{peer_node} disconnected/, 1000)
    assert Proc.epmd_registered?(daemon.sname)
  end

  @tag timeout: 60_000
  test "peer with net_ticktime 4 stays connected while idle for 12 s" do
    daemon = Daemon.start!()

    {peer, peer_node} =
      Peer.start!("idle", [Atom.to_string(daemon.node), "12"], erl: "-kernel net_ticktime 4")

    await!(peer, ~r/^CONNECTED ticktime=4$/, 30_000)
    result = await!(peer, ~r/^IDLE (.*)$/, 30_000)

    assert result == [
             "IDLE nodedown=false connected=true call=:pong",
             "nodedown=false connected=true call=:pong"
           ]

    refute Enum.any?(Daemon.lines(daemon), &(&1 =~ "Node #{peer_node} disconnected"))
  end

  @tag timeout: 60_000
  test "peer with net_ticktime 4 that only casts stays connected for 12 s" do
    daemon = Daemon.start!()

    {peer, peer_node} =
      Peer.start!("casts", [Atom.to_string(daemon.node), "12"], erl: "-kernel net_ticktime 4")

    await!(peer, ~r/^CONNECTED ticktime=4$/, 30_000)
    assert ["CASTS nodedown=false", "false"] = await!(peer, ~r/^CASTS nodedown=(.*)$/, 30_000)
    refute Enum.any?(Daemon.lines(daemon), &(&1 =~ "Node #{peer_node} disconnected"))
  end

  test "a stopped peer does not delay another peer's calls" do
    daemon = Daemon.start!()
    {flooder, flooder_node} = Peer.start!("flood", [Atom.to_string(daemon.node)])
    await!(flooder, ~r/^FLOODING$/, 30_000)
    Process.sleep(500)
    OsProcess.signal(flooder, "STOP")

    # Calls from the flooder are still in the daemon's socket, and the daemon sends their
    # replies into a connection that no process reads.
    Process.sleep(300)
    results = for _ <- 1..200, do: call_ms(daemon.node)

    # The daemon reads up to 1 MiB from one peer per callback, so a call may wait behind that
    # much of the flooder's backlog: tens of ms in a sanitizer build, under 20 ms otherwise.
    for {{result, ms}, i} <- Enum.with_index(results, 1) do
      assert result == :pong
      assert ms < 100, "call #{i} took #{ms} ms while #{flooder_node} was stopped"
    end

    median = results |> Enum.map(&elem(&1, 1)) |> Enum.sort() |> Enum.at(100)
    assert median < 5, "median call took #{median} ms while #{flooder_node} was stopped"

    OsProcess.signal(flooder, "CONT")
  end

  defp config_file(text) do
    path = Path.join(System.tmp_dir!(), "snakepit-#{System.unique_integer([:positive])}.ini")
    File.write!(path, text)
    on_exit(fn -> File.rm(path) end)
    path
  end

  test "connection limit and limit + 1" do
    daemon = Daemon.start!(args: ["--config", config_file("[node]\nmax_connections = 1\n")])
    assert GenServer.call({:snakepit, daemon.node}, :ping) == :pong

    # The second peer completes its handshake and is then closed by the daemon.
    {peer, peer_node} = Peer.start!("connect", [Atom.to_string(daemon.node)])

    assert {:ok, _} =
             OsProcess.await_line(
               daemon.proc,
               ~r/Rejected node #{peer_node}: already 1 connections, the maximum/,
               30_000
             )

    refute Enum.any?(OsProcess.lines(peer), &(&1 == "CALL :pong"))
    assert GenServer.call({:snakepit, daemon.node}, :ping) == :pong
  end

  test "a peer that sends nothing for the idle timeout is dropped" do
    daemon =
      Daemon.start!(args: ["--config", config_file("[node]\npeer_idle_timeout_ms = 1000\n")])

    # A BEAM node with the default net_ticktime of 60 s sends a tick every 15 s when idle.
    assert GenServer.call({:snakepit, daemon.node}, :ping) == :pong

    assert {:ok, _} =
             OsProcess.await_line(
               daemon.proc,
               ~r/Disconnecting node #{node()}: nothing received for 1000 ms/,
               3000
             )

    # Once this node has seen the connection go down, a new call connects again.
    assert Enum.any?(1..100, fn _ ->
             Process.sleep(20)
             daemon.node not in Node.list(:hidden)
           end)

    assert GenServer.call({:snakepit, daemon.node}, :ping) == :pong
  end

  test "a peer that stops reading is dropped at the output limit" do
    path = Path.join(System.tmp_dir!(), "snakepit-out-#{System.unique_integer([:positive])}.ini")
    File.write!(path, "[node]\nmax_output_bytes = 65536\n")
    on_exit(fn -> File.rm(path) end)
    daemon = Daemon.start!(args: ["--config", path])
    # A small receive buffer on the flooder keeps the kernel from absorbing megabytes of
    # replies, so the daemon's own queue reaches its limit soon after the flooder stops.
    {flooder, flooder_node} =
      Peer.start!("flood", [Atom.to_string(daemon.node)],
        erl: "-kernel inet_dist_connect_options [{recbuf,4096}]"
      )

    await!(flooder, ~r/^FLOODING$/, 30_000)
    Process.sleep(500)
    OsProcess.signal(flooder, "STOP")

    assert {:ok, _} =
             OsProcess.await_line(
               daemon.proc,
               ~r/Disconnecting node #{flooder_node}: its output queue would pass 65536 bytes/,
               10_000
             )

    assert {:ok, _} =
             OsProcess.await_line(daemon.proc, ~r/Node #{flooder_node} disconnected/, 1000)

    assert GenServer.call({:snakepit, daemon.node}, :ping) == :pong
    OsProcess.signal(flooder, "CONT")
  end
end
