# SPDX-License-Identifier: Apache-2.0
#
# Requests to the daemon's registered name: reply tags, the core requests, error replies and
# the message size limit.

defmodule Snakepit.Test.RequestsTest do
  use ExUnit.Case, async: false
  alias Snakepit.Test.Daemon

  setup do
    daemon = Daemon.start!()
    true = Node.connect(daemon.node)
    %{daemon: daemon, node: daemon.node}
  end

  # Send a `$gen_call` by hand with the given tag and return the reply message as received.
  defp raw_call(node, name, tag, request, timeout \\ 2000) do
    :erlang.send({name, node}, {:"$gen_call", {self(), tag}, request})

    receive do
      {reply_tag, reply} when reply_tag == tag -> {:reply, reply_tag, reply}
    after
      timeout -> :no_reply
    end
  end

  describe "reply tags (C1)" do
    test "ref tag comes back byte for byte", %{node: node} do
      tag = make_ref()
      assert {:reply, reply_tag, :pong} = raw_call(node, :snakepit, tag, :ping)
      assert :erlang.term_to_binary(reply_tag) == :erlang.term_to_binary(tag)
    end

    test "alias tag comes back byte for byte", %{node: node} do
      alias_ref = :erlang.alias()
      tag = [:alias | alias_ref]
      assert {:reply, reply_tag, :pong} = raw_call(node, :snakepit, tag, :ping)
      assert :erlang.term_to_binary(reply_tag) == :erlang.term_to_binary(tag)
      :erlang.unalias(alias_ref)
    end

    test "reply to an alias tag goes through the alias", %{node: node} do
      # After unalias the VM drops messages sent to the alias, but not those sent to the pid:
      # no reply proves the daemon used ALIAS_SEND.
      alias_ref = :erlang.alias()
      :erlang.unalias(alias_ref)
      assert :no_reply = raw_call(node, :snakepit, [:alias | alias_ref], :ping, 500)
      assert GenServer.call({:snakepit, node}, :ping) == :pong
    end

    test "other tag terms come back unchanged", %{node: node} do
      for tag <- [{:my, make_ref()}, "binary tag", [1, 2, 3], [:alias, make_ref()], 42] do
        assert {:reply, reply_tag, :pong} = raw_call(node, :snakepit, tag, :ping)
        assert :erlang.term_to_binary(reply_tag) == :erlang.term_to_binary(tag)
      end
    end

    test "GenServer.call ping from OTP 25", %{node: node} do
      assert GenServer.call({:snakepit, node}, :ping, 1000) == :pong
    end
  end

  describe "core requests" do
    test "info shape", %{node: node} do
      assert {:ok, info} = GenServer.call({:snakepit, node}, :info)
      assert %{version: version, node: ^node, pools: pools, store: _, uptime_ms: uptime} = info
      assert is_binary(version)
      assert version =~ ~r/^\d+\.\d+\.\d+/
      assert is_list(pools)
      assert is_integer(uptime)
      assert uptime >= 0
      Process.sleep(50)
      assert {:ok, %{uptime_ms: later}} = GenServer.call({:snakepit, node}, :info)
      assert later >= uptime + 50
    end

    test "health shape", %{node: node} do
      assert {:ok, %{status: :ok, checks: checks}} = GenServer.call({:snakepit, node}, :health)
      assert is_map(checks)
      assert %{distribution: %{status: :ok, peers: peers}} = checks
      assert peers >= 1
    end

    test "Node.ping gives pong through net_kernel is_auth", %{node: node} do
      assert Node.ping(node) == :pong
      assert GenServer.call({:net_kernel, node}, {:is_auth, node()}) == :yes
    end
  end

  describe "error replies" do
    test "unknown atom request", %{node: node} do
      assert {:error, error} = GenServer.call({:snakepit, node}, :no_such_request)
      assert %{kind: :bad_request, message: message, retryable: false} = error
      assert message =~ "no_such_request"
    end

    test "unknown tuple and other terms", %{node: node} do
      assert {:error, %{kind: :bad_request, message: m1}} =
               GenServer.call({:snakepit, node}, {:frobnicate, 1, 2})

      assert m1 =~ "frobnicate"

      for request <- ["a binary", 12, [1, 2], %{a: 1}, {}, {1, 2}, make_ref()] do
        assert {:error, %{kind: :bad_request, retryable: false, message: m}} =
                 GenServer.call({:snakepit, node}, request)

        assert is_binary(m)
      end

      assert GenServer.call({:snakepit, node}, :ping) == :pong
    end

    test "deep and wide requests get bad_request", %{node: node} do
      deep = Enum.reduce(1..1_000_000, [], fn _, acc -> [acc] end)
      wide = Map.new(1..100_000, &{&1, &1})

      for request <- [deep, {:execute, deep}, wide, List.to_tuple(Enum.to_list(1..70_000))] do
        assert {:error, %{kind: :bad_request}} =
                 GenServer.call({:snakepit, node}, request, 10_000)
      end

      assert GenServer.call({:snakepit, node}, :ping) == :pong
    end

    test "calls to other registered names", %{node: node} do
      assert {:error, %{kind: :bad_request, message: message, retryable: false}} =
               GenServer.call({:some_other_name, node}, :ping)

      assert message =~ "some_other_name"
      assert message =~ "snakepit"
      assert GenServer.call({:snakepit, node}, :ping) == :pong
    end

    test "casts and plain messages get no reply and break nothing", %{node: node} do
      GenServer.cast({:snakepit, node}, :ping)
      send({:snakepit, node}, {:plain, :message})
      send({:other_name, node}, :hello)
      refute_receive _, 300
      assert GenServer.call({:snakepit, node}, :ping) == :pong
    end
  end

  describe "message size limit" do
    test "a 70 MB call gets too_large and the connection stays", %{node: node} do
      big = :binary.copy("x", 70_000_000)

      assert {:error, error} =
               GenServer.call({:snakepit, node}, {:execute, "x", [big], []}, 30_000)

      assert %{kind: :too_large, retryable: false, message: message} = error
      assert message =~ "67108864"
      assert node in Node.list(:hidden)
      assert GenServer.call({:snakepit, node}, :ping) == :pong
    end

    test "too_large reply keeps the alias tag", %{node: node} do
      alias_ref = :erlang.alias()
      tag = [:alias | alias_ref]
      big = :binary.copy("y", 70_000_000)

      assert {:reply, reply_tag, {:error, %{kind: :too_large}}} =
               raw_call(node, :snakepit, tag, {:echo, big}, 30_000)

      assert :erlang.term_to_binary(reply_tag) == :erlang.term_to_binary(tag)
    end
  end
end

defmodule Snakepit.Test.SizeLimitTest do
  use ExUnit.Case, async: false
  alias Snakepit.Test.{Daemon, OsProcess}

  @limit 4096

  setup do
    path =
      Path.join(System.tmp_dir!(), "snakepit-limit-#{System.unique_integer([:positive])}.ini")

    File.write!(path, "[node]\nmax_message_bytes = #{@limit}\n")
    on_exit(fn -> File.rm(path) end)
    daemon = Daemon.start!(args: ["--config", path])
    true = Node.connect(daemon.node)
    %{daemon: daemon, node: daemon.node}
  end

  defp call_with(node, size) do
    GenServer.call({:snakepit, node}, {:echo, :binary.copy("z", size)}, 5000)
  end

  test "limit and limit + 1", %{daemon: daemon, node: node} do
    # The daemon logs the frame size of a dropped message. The length field of a binary has a
    # fixed width, so frame size and binary size move together, and one over-limit probe gives
    # the binary size that makes the frame exactly the limit.
    probe = 2 * @limit
    assert {:error, %{kind: :too_large}} = call_with(node, probe)

    {:ok, [_, frame]} =
      OsProcess.await_line(daemon.proc, ~r/Dropped a (\d+)-byte message from node/, 2000)

    at_limit = probe - (String.to_integer(frame) - @limit)
    assert {:error, %{kind: :bad_request}} = call_with(node, at_limit)
    assert {:error, %{kind: :too_large, message: message}} = call_with(node, at_limit + 1)
    assert message =~ "#{@limit + 1} bytes"
    assert GenServer.call({:snakepit, node}, :ping) == :pong
  end
end
