# SPDX-License-Identifier: Apache-2.0
#
# A peer node for the pool and session tests, run as its own OS process:
#   elixir --sname NAME --cookie COOKIE pool_peer.exs MODE ARGS...
# Each mode prints one line per step so the test can follow it.

defmodule Snakepit.Test.PoolPeerMain do
  defp call_forever(server, request, parent) do
    {:ok, _blob} = GenServer.call(server, request, 60_000)
    send(parent, :replied)
    call_forever(server, request, parent)
  end

  # Create one session owned by this node and one without an owner, then halt at once.
  def main(["sessions", daemon, owned, unowned]) do
    daemon = String.to_atom(daemon)
    {:ok, _} = GenServer.call({:snakepit, daemon}, {:session, :create, owned, []})
    {:ok, _} = GenServer.call({:snakepit, daemon}, {:session, :create, unowned, [owner: nil]})
    IO.puts("CREATED")
    System.halt(0)
  end

  # Keep 40 calls of python.pool_fixtures.blob(4_000_000) running, print CALLING once replies
  # arrive, and go on until the test stops this node.
  def main(["blobs", daemon]) do
    daemon = String.to_atom(daemon)
    parent = self()
    request = {:execute, "python.pool_fixtures.blob", [4_000_000], [timeout: 60_000]}

    for _ <- 1..40 do
      spawn(fn -> call_forever({:snakepit, daemon}, request, parent) end)
    end

    receive do
      :replied -> IO.puts("CALLING")
    end

    Process.sleep(:infinity)
  end

  # Connect to the daemon and stay connected until the test stops this node.
  def main(["connect", daemon]) do
    daemon = String.to_atom(daemon)
    IO.puts("CONNECTED #{Node.ping(daemon)}")
    Process.sleep(:infinity)
  end

  # Open a stream of one item every 100 ms for 60 s, print STREAMING after its first chunk, and
  # keep reading until the test stops this node.
  def main(["stream", daemon]) do
    daemon = String.to_atom(daemon)

    {:ok, ref} =
      GenServer.call(
        {:snakepit, daemon},
        {:execute_stream, "python.pool_fixtures.tick", [600, 0.1], [timeout: 60_000]}
      )

    receive do
      {:snakepit_stream, ^ref, {:chunk, 0}} -> IO.puts("STREAMING")
    after
      10_000 -> IO.puts("NO CHUNK")
    end

    drain(ref)
  end

  # Run python.time.sleep(SECONDS) and report the result, the time it took and whether the
  # connection to the daemon went down meanwhile.
  def main(["long_call", daemon, seconds]) do
    daemon = String.to_atom(daemon)
    :pong = Node.ping(daemon)
    Node.monitor(daemon, true)
    IO.puts("CONNECTED ticktime=#{:net_kernel.get_net_ticktime()}")
    seconds = String.to_integer(seconds)
    start = System.monotonic_time(:millisecond)

    result =
      try do
        GenServer.call(
          {:snakepit, daemon},
          {:execute, "python.time.sleep", [seconds], [timeout: (seconds + 10) * 1000]},
          (seconds + 20) * 1000
        )
      catch
        :exit, reason -> {:exit, reason}
      end

    elapsed = System.monotonic_time(:millisecond) - start

    nodedown =
      receive do
        {:nodedown, ^daemon} -> true
      after
        0 -> false
      end

    connected = daemon in Node.list(:hidden)
    IO.puts("RESULT #{inspect(result)} ms=#{elapsed} nodedown=#{nodedown} connected=#{connected}")
  end

  defp drain(ref) do
    receive do
      {:snakepit_stream, ^ref, _} -> drain(ref)
    end
  end
end

Snakepit.Test.PoolPeerMain.main(System.argv())
