# SPDX-License-Identifier: Apache-2.0
#
# The daemon's processes over its life: a long call from a caller with a short net_ticktime,
# and no process left behind after a clean stop or a SIGKILL of the daemon.

defmodule Snakepit.Test.PoolLongCallTest do
  use ExUnit.Case, async: false
  alias Snakepit.Test.{OsProcess, Peer, Pool}

  test "12 s call from a caller with net_ticktime 4" do
    daemon = Pool.start_daemon!(Pool.pool_ini([size: 1], "[library time]\nmodule = time\n"))
    script = Path.expand("support/pool_peer.exs", __DIR__)

    {peer, _} =
      Peer.start!("long_call", [Atom.to_string(daemon.node), "12"],
        script: script,
        erl: "-kernel net_ticktime 4"
      )

    assert {:ok, [_, "4"]} = OsProcess.await_line(peer, ~r/^CONNECTED ticktime=(\d+)/, 20_000)

    assert {:ok, [_, result, ms, nodedown, connected]} =
             OsProcess.await_line(
               peer,
               ~r/^RESULT (.*) ms=(\d+) nodedown=(\w+) connected=(\w+)$/,
               40_000
             )

    assert result == "{:ok, nil}"
    assert String.to_integer(ms) >= 12_000
    assert String.to_integer(ms) < 13_500
    assert nodedown == "false"
    assert connected == "true"
  end
end

defmodule Snakepit.Test.PoolCleanupTest do
  use ExUnit.Case, async: false
  alias Snakepit.Test.{Daemon, OsProcess, Pool, ProcTree}

  # The daemon with three busy workers, the tags of their calls, and every process below it.
  defp busy_daemon(ini) do
    daemon = Pool.start_daemon!(ini, stop: false)
    node = daemon.node

    tags =
      for _ <- 1..3, do: Pool.send_call(node, {:execute, "python.pool_fixtures.sleep", [30], []})

    assert Pool.wait_until(fn -> length(Pool.worker_pids(daemon)) == 3 end)
    Process.sleep(200)
    descendants = ProcTree.descendants(Daemon.os_pid(daemon)) |> Enum.map(& &1.pid)
    # The template interpreter and three workers.
    assert length(descendants) == 4
    {daemon, tags, descendants}
  end

  test "SIGTERM with calls in flight: answers, exit 0, every child reaped" do
    ini = Pool.pool_ini([size: 3], "[node]\nshutdown_timeout_ms = 500\n")
    {daemon, tags, descendants} = busy_daemon(ini)
    OsProcess.signal(daemon.proc, "TERM")
    assert {:ok, 0} = OsProcess.await_exit(daemon.proc, 3000)

    for tag <- tags do
      assert {:error, %{kind: :shutting_down}} = Pool.await_reply(tag, 1000)
    end

    # The daemon reaped them all: none is left, not even as a zombie.
    assert Enum.filter(ProcTree.all(), &(&1.pid in descendants)) == []
    Pool.stop_quietly(daemon)
  end

  test "every worker gone within 1 s of a SIGKILL of the daemon" do
    {daemon, _tags, descendants} = busy_daemon(Pool.pool_ini(size: 3))
    OsProcess.signal(daemon.proc, "KILL")
    Process.sleep(1000)
    # Killed with the daemon; the init process reaps them, so they may still show as zombies.
    assert Enum.filter(descendants, &ProcTree.alive?/1) == []
    Pool.stop_quietly(daemon)

    # A restart under the same name starts clean.
    again = Pool.start_daemon!(Pool.pool_ini(size: 1), sname: daemon.sname)
    assert {:ok, :clean} = Pool.fixture(again.node, "echo", [:clean])
  end
end

