# SPDX-License-Identifier: Apache-2.0
#
# The BEAM-to-BEAM baseline of the benchmark: a node with one trivial GenServer, registered as
# :bench_echo, that replies :pong to :ping. Prints "READY node" once it is registered.

defmodule Bench.EchoServer do
  use GenServer

  @impl true
  def init(state), do: {:ok, state}

  @impl true
  def handle_call(:ping, _from, state), do: {:reply, :pong, state}
end

{:ok, _} = GenServer.start_link(Bench.EchoServer, nil, name: :bench_echo)
IO.puts("READY #{node()}")
Process.sleep(:infinity)
