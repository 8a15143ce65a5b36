# SPDX-License-Identifier: Apache-2.0
#
# Start-up and shutdown: exit statuses for bad usage, bad configuration and name clashes,
# SIGTERM, a second SIGTERM during a slow shutdown, and --owner.

defmodule Snakepit.Test.LifecycleTest do
  use ExUnit.Case, async: false
  alias Snakepit.Test.{Daemon, OsProcess, Peer, Proc}

  @ex_usage 64
  @ex_unavailable 69
  @ex_config 78

  defp cookie_env, do: [{"SNAKEPIT_COOKIE", Daemon.cookie()}]

  defp temp_path(name) do
    path = Path.join(System.tmp_dir!(), "snakepit-#{System.unique_integer([:positive])}-#{name}")
    on_exit(fn -> File.rm_rf(path) end)
    path
  end

  describe "exit statuses" do
    test "bad usage exits 64" do
      for {args, expected} <- [
            {["--bogus"], "unknown option '--bogus'"},
            {["-x"], "unknown option '-x'"},
            {["--sname"], "option '--sname' needs a value"},
            {["--sname", "a", "stray"], "unexpected argument 'stray'"},
            {["--pool-size", "0"], "'size' must be an integer from 1 to 1024"},
            {["--log-level", "loud"], "invalid log level 'loud'"}
          ] do
        {output, status} = Daemon.run(args, cookie_env())
        assert status == @ex_usage, "#{inspect(args)} exited #{status}: #{output}"
        assert output =~ expected, "#{inspect(args)}: #{output}"
      end
    end

    test "help, version and check-config exit 0" do
      assert {help, 0} = Daemon.run(["--help"])
      assert help =~ "Usage: snakepit-cnode"
      assert {version, 0} = Daemon.run(["--version"])
      assert version =~ ~r/^snakepit-cnode \d+\.\d+\.\d+$/
      assert {checked, 0} = Daemon.run(["--check-config", "--sname", "checked"], cookie_env())
      assert checked =~ "configuration valid: node checked@"
    end

    test "bad config file exits 78 naming the line" do
      path = temp_path("bad.ini")
      File.write!(path, "[node]\nsname = x\n[pool default]\nsize = many\n")
      {output, status} = Daemon.run(["--config", path], cookie_env())
      assert status == @ex_config, output
      assert output =~ path
      assert output =~ "line 4: invalid value 'many'"

      File.write!(path, "[node]\nsname = x\n\n[nodes]\nsname = y\n")
      {output, status} = Daemon.run(["--config", path], cookie_env())
      assert status == @ex_config, output
      assert output =~ "line 5: unknown section [nodes]"

      {output, status} = Daemon.run(["--config", path <> ".missing"], cookie_env())
      assert status == @ex_config, output
      assert output =~ path <> ".missing"
    end

    test "missing cookie exits 78 naming where it looked" do
      home = temp_path("home")
      credentials = temp_path("credentials")
      File.mkdir_p!(home)
      File.mkdir_p!(credentials)
      env = [{"SNAKEPIT_COOKIE", false}, {"HOME", home}, {"CREDENTIALS_DIRECTORY", credentials}]
      {output, status} = Daemon.run(["--sname", Daemon.unique_name("nocookie")], env)
      assert status == @ex_config, output
      assert output =~ "#{credentials}/cookie"
      assert output =~ "#{home}/.erlang.cookie"

      empty = Path.join(home, "empty-cookie")
      File.write!(empty, "\n")
      {output, status} = Daemon.run(["--cookie-file", empty], env)
      assert status == @ex_config, output
      assert output =~ "#{empty} (empty)"
    end

    test "epmd unreachable exits 69" do
      # Nothing listens on port 1 of the loopback interface.
      env = cookie_env() ++ [{"ERL_EPMD_PORT", "1"}]
      {output, status} = Daemon.run(["--sname", Daemon.unique_name("noepmd")], env)
      assert status == @ex_unavailable, output
      assert output =~ "Failed to reach epmd at 127.0.0.1:1"
    end

    test "second daemon with the same name exits 69 and the first keeps serving (C18)" do
      first = Daemon.start!()
      {output, status} = Daemon.run(["--sname", first.sname, "--http", "off"], cookie_env())
      assert status == @ex_unavailable, output
      assert output =~ "already registered"
      assert output =~ first.sname
      refute output =~ "READY"
      assert Proc.epmd_registered?(first.sname)
      assert GenServer.call({:snakepit, first.node}, :ping) == :pong
    end
  end

  describe "shutdown" do
    test "SIGTERM exits 0 within 5 s and leaves epmd" do
      {:ok, daemon} = Daemon.start()
      assert GenServer.call({:snakepit, daemon.node}, :ping) == :pong
      assert Proc.epmd_registered?(daemon.sname)
      OsProcess.signal(daemon.proc, "TERM")
      assert {:ok, 0} = OsProcess.await_exit(daemon.proc, 5000)
      refute Proc.epmd_registered?(daemon.sname)
      Daemon.stop(daemon)
    end

    test "SIGINT exits 0" do
      {:ok, daemon} = Daemon.start()
      OsProcess.signal(daemon.proc, "INT")
      assert {:ok, 0} = OsProcess.await_exit(daemon.proc, 5000)
      Daemon.stop(daemon)
    end

    test "a second SIGTERM during a slow shutdown exits at once" do
      {:ok, daemon} = Daemon.start(args: ["--library", "time", "--pool-size", "1"])

      # A call in flight keeps the graceful shutdown waiting for its reply.
      call =
        Task.async(fn ->
          GenServer.call(
            {:snakepit, daemon.node},
            {:execute, "python.time.sleep", [10], [timeout: 20_000]},
            30_000
          )
        end)

      Process.sleep(500)
      OsProcess.signal(daemon.proc, "TERM")
      Process.sleep(500)
      assert OsProcess.exit_status(daemon.proc) == nil, "the shutdown was not slow"

      OsProcess.signal(daemon.proc, "TERM")
      assert {:ok, status} = OsProcess.await_exit(daemon.proc, 1000)
      assert status != 0
      Task.shutdown(call, :brutal_kill)
      Daemon.stop(daemon)
    end

    test "--owner: exits when the owner node disconnects" do
      owner_name = Daemon.unique_name("owner")
      owner = :"#{owner_name}@#{Peer.host()}"
      {:ok, daemon} = Daemon.start(args: ["--owner", Atom.to_string(owner)])
      on_exit(fn -> Daemon.stop(daemon) end)
      {peer, ^owner} = Peer.start!("connect", [Atom.to_string(daemon.node)], name: owner_name)
      assert {:ok, _} = OsProcess.await_line(peer, ~r/^CALL :pong$/, 30_000)

      # Other nodes come and go without effect.
      assert GenServer.call({:snakepit, daemon.node}, :ping) == :pong
      Node.disconnect(daemon.node)
      Process.sleep(300)
      assert OsProcess.exit_status(daemon.proc) == nil

      OsProcess.signal(peer, "KILL")
      assert {:ok, 0} = OsProcess.await_exit(daemon.proc, 3000)
      assert Enum.any?(Daemon.lines(daemon), &(&1 =~ "Owner node #{owner} disconnected"))
      refute Proc.epmd_registered?(daemon.sname)
    end

    test "--owner: exits 69 when the owner never connects" do
      path = temp_path("owner.ini")
      File.write!(path, "[node]\nowner_grace_ms = 1000\n")
      {:ok, daemon} = Daemon.start(args: ["--config", path, "--owner", "nobody@nowhere"])
      on_exit(fn -> Daemon.stop(daemon) end)
      assert {:ok, @ex_unavailable} = OsProcess.await_exit(daemon.proc, 4000)
      assert Enum.any?(Daemon.lines(daemon), &(&1 =~ "did not connect within 1000 ms"))
    end
  end
end
