# SPDX-License-Identifier: Apache-2.0
#
# `--log-format json`: every line that the daemon and its workers write to stderr during a run
# with calls, errors, a killed worker, a peer that disconnects and a SIGTERM is one JSON object
# with a level and a message.

defmodule Snakepit.Test.ObsLogTest do
  use ExUnit.Case, async: false
  alias Snakepit.Test.{Daemon, Obs, OsProcess, Peer, Pool}

  # Print "lines bad_lines levels" and, for each bad line, "BAD <line>". With "daemon" as the
  # second argument, the text lines of snakepit-worker processes are left out.
  @check_lines """
  import json, re, sys
  lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
  if sys.argv[2] == "daemon":
      lines = [l for l in lines if not re.match(r"^\\S+ snakepit-worker\\[\\d+\\] ", l)]
  levels = set()
  bad = []
  for line in lines:
      try:
          doc = json.loads(line)
      except ValueError:
          bad.append(line)
          continue
      if not isinstance(doc, dict) or not isinstance(doc.get("level"), str) \\
              or not isinstance(doc.get("msg"), str):
          bad.append(line)
          continue
      levels.add(doc["level"])
  print(len(lines), len(bad), ",".join(sorted(levels)))
  for line in bad:
      print("BAD", line)
  """

  # Run the daemon with JSON logs through calls, errors, crashes and a peer: its stderr file.
  defp run_daemon do
    dir = Path.join(System.tmp_dir!(), "snakepit-log-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    stderr = Path.join(dir, "stderr.log")
    config = Pool.write_config(Obs.ini(2))
    sname = Daemon.unique_name("jsonlog")

    # stdout (the READY line) stays on the port; stderr goes to the file.
    args = [
      "-c",
      ~s(exec "$0" "$@" 2>"#{stderr}"),
      Daemon.binary(),
      "--sname",
      sname,
      "--http",
      "off",
      "--config",
      config,
      "--log-format",
      "json",
      "--log-level",
      "debug"
    ]

    proc =
      OsProcess.start("/bin/sh", args, [
        {"SNAKEPIT_COOKIE", Daemon.cookie()},
        {"PYTHONPATH", Pool.fixtures_dir()}
      ])

    on_exit(fn ->
      OsProcess.stop(proc)
      File.rm(config)
      File.rm_rf!(dir)
    end)

    assert {:ok, [_, node]} = OsProcess.await_line(proc, ~r/^READY (\S+)$/, 10_000)
    node = String.to_atom(node)
    true = Node.connect(node)

    assert {:ok, 3} = Pool.execute(node, "python.operator.add", [1, 2])
    assert {:error, %{kind: :python_exception}} = Pool.fixture(node, "raise_key_error", [])
    assert {:error, %{kind: :timeout}} = Pool.fixture(node, "sleep", [5], timeout: 200)
    assert {:error, %{kind: :not_allowed}} = Pool.execute(node, "python.subprocess.run", [["id"]])
    assert {:error, %{kind: :worker_crashed}} = Pool.fixture(node, "exit_now", [1])

    # Pool.worker_pids/1 reads the template's pid from the port's output, which has no log lines
    # here, so the worker is asked for its own pid.
    {:ok, victim} = Pool.fixture(node, "pid", [])
    {_, 0} = System.cmd("kill", ["-KILL", Integer.to_string(victim)])
    assert Pool.wait_until(fn -> not Snakepit.Test.ProcTree.alive?(victim) end, 5000)

    {peer, _} = Peer.start!("connect", [Atom.to_string(node)])
    assert {:ok, _} = OsProcess.await_line(peer, ~r/^CALL :pong$/, 20_000)
    OsProcess.stop_process(peer)
    assert {:ok, 3} = Pool.execute(node, "python.operator.add", [1, 2])

    assert OsProcess.stop_process(proc) == 0
    stderr
  end

  # Check the lines of `stderr` (all, or "daemon" for those of snakepit-cnode only).
  defp check_lines(stderr, which) do
    {out, 0} = System.cmd("/usr/bin/python3", ["-c", @check_lines, stderr, which])
    [summary | bad] = String.split(out, "\n", trim: true)
    [count, bad_count, levels] = String.split(summary, " ")
    assert String.to_integer(count) > 10, "only #{count} lines on stderr"

    assert bad_count == "0",
           "lines that are not JSON with level and msg:\n" <> Enum.join(bad, "\n")

    levels = String.split(levels, ",")

    for level <- ["debug", "info", "notice", "warning"] do
      assert level in levels, "no #{level} line; levels: #{inspect(levels)}"
    end

    # The events of the run, as JSON strings.
    text = File.read!(stderr)

    for message <- [
          "killed by signal 9",
          "exited with status 1",
          "timed out after 200 ms",
          "disconnected\"",
          "Stopped node"
        ] do
      assert text =~ message, "no line with #{inspect(message)}"
    end
  end

  test "every daemon stderr line is JSON" do
    check_lines(run_daemon(), "daemon")
  end

  # The daemon passes its --log-format on to snakepit-worker.
  test "every worker stderr line is JSON" do
    check_lines(run_daemon(), "all")
  end
end
