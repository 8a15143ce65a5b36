# SPDX-License-Identifier: Apache-2.0
#
# A peer node for the integration tests, run as its own OS process:
#   elixir --sname NAME --cookie COOKIE peer.exs MODE ARGS...
# Each mode prints one line per step ("CONNECTED", "DONE", ...) so the test can follow it.

defmodule Snakepit.Test.PeerMain do
  defp forward(daemon) do
    receive do
      {:forward, message} -> send({:snakepit, daemon}, message)
    end

    forward(daemon)
  end

  def main(["calls", daemon, runner, n]) do
    daemon = String.to_atom(daemon)
    runner = String.to_atom(runner)
    true = Node.connect(runner)
    send({:peer_barrier, runner}, {:ready, self(), node()})

    receive do
      :go -> :ok
    after
      30_000 -> raise "no :go message from #{runner} within 30 s"
    end

    results =
      for _ <- 1..String.to_integer(n) do
        try do
          GenServer.call({:snakepit, daemon}, :ping, 5000)
        catch
          :exit, reason -> {:exit, reason}
        end
      end

    send({:peer_barrier, runner}, {:done, node(), results})
    IO.puts("DONE")
    # Let the message reach the runner before this VM halts.
    Process.sleep(1000)
  end

  def main(["connect", daemon]) do
    daemon = String.to_atom(daemon)
    IO.puts("CONNECTED #{Node.ping(daemon)}")
    IO.puts("CALL #{inspect(GenServer.call({:snakepit, daemon}, :ping))}")
    Process.sleep(:infinity)
  end

  # Register :forwarder, which sends each {:forward, message} on to the daemon's registered
  # process unchanged, as a proxy between a caller and the daemon would.
  def main(["forward", daemon]) do
    daemon = String.to_atom(daemon)
    :pong = Node.ping(daemon)
    Process.register(self(), :forwarder)
    IO.puts("FORWARDING")
    forward(daemon)
  end

  def main(["pings", daemon, n]) do
    daemon = String.to_atom(daemon)
    counts = Enum.frequencies(for _ <- 1..String.to_integer(n), do: Node.ping(daemon))
    IO.puts("PINGS pong=#{Map.get(counts, :pong, 0)} pang=#{Map.get(counts, :pang, 0)}")
  end

  def main(["idle", daemon, seconds]) do
    daemon = String.to_atom(daemon)
    :pong = Node.ping(daemon)
    Node.monitor(daemon, true)
    IO.puts("CONNECTED ticktime=#{:net_kernel.get_net_ticktime()}")
    Process.sleep(String.to_integer(seconds) * 1000)

    nodedown =
      receive do
        {:nodedown, ^daemon} -> true
      after
        0 -> false
      end

    connected = daemon in Node.list(:hidden)
    reply = GenServer.call({:snakepit, daemon}, :ping)
    IO.puts("IDLE nodedown=#{nodedown} connected=#{connected} call=#{inspect(reply)}")
    # Stay up, so that a disconnect in the daemon's log can only come from the idle time.
    Process.sleep(:infinity)
  end

  # Subscribe N processes to every telemetry event. The first prints one line per event.
  def main(["subscribe", daemon, n]) do
    daemon = String.to_atom(daemon)
    :ok = GenServer.call({:snakepit, daemon}, {:subscribe, self(), [[:snakepit]]})

    for _ <- 2..String.to_integer(n)//1 do
      parent = self()

      spawn(fn ->
        send(parent, GenServer.call({:snakepit, daemon}, {:subscribe, self(), [[:snakepit]]}))
        Process.sleep(:infinity)
      end)

      receive do
        :ok -> :ok
      end
    end

    IO.puts("SUBSCRIBED #{n}")
    print_events()
  end

  def main(["casts", daemon, seconds]) do
    daemon = String.to_atom(daemon)
    :pong = Node.ping(daemon)
    Node.monitor(daemon, true)
    IO.puts("CONNECTED ticktime=#{:net_kernel.get_net_ticktime()}")
    deadline = System.monotonic_time(:millisecond) + String.to_integer(seconds) * 1000
    IO.puts("CASTS nodedown=#{cast_until(daemon, deadline, 0)}")
    Process.sleep(:infinity)
  end

  def main(["flood", daemon]) do
    daemon = String.to_atom(daemon)
    :pong = Node.ping(daemon)
    IO.puts("FLOODING")
    flood({:snakepit, daemon})
  end

  defp print_events do
    receive do
      {:snakepit_telemetry, event, _measurements, _metadata} ->
        IO.puts("EVENT #{inspect(event)}")
        print_events()
    end
  end

  # Casts every 5 ms, which get no reply, so the daemon sends this node nothing but ticks.
  defp cast_until(daemon, deadline, count) do
    receive do
      {:nodedown, ^daemon} -> "true after #{count} casts"
    after
      5 ->
        if System.monotonic_time(:millisecond) < deadline do
          GenServer.cast({:snakepit, daemon}, {:noop, count})
          cast_until(daemon, deadline, count + 1)
        else
          "false"
        end
    end
  end

  # Calls in batches of 1000. Once this VM is stopped, their replies pile up in the daemon.
  defp flood(dest) do
    for _ <- 1..1000 do
      :erlang.send(dest, {:"$gen_call", {self(), make_ref()}, :info})
    end

    # Drop the replies so this VM's memory stays flat while it runs.
    flush()
    flood(dest)
  end

  defp flush do
    receive do
      _ -> flush()
    after
      0 -> :ok
    end
  end
end

Snakepit.Test.PeerMain.main(System.argv())
