defmodule Mix.Tasks.Snakepit.DoctorTest do
  use ExUnit.Case, async: false

  alias SnakepitTest.App

  setup do
    primary = :persistent_term.get(:snakepit_test_primary)
    Mix.shell(Mix.Shell.Process)

    on_exit(fn ->
      Mix.shell(Mix.Shell.IO)
      App.restart!(nodes: [primary.node])
    end)

    %{primary: primary}
  end

  defp output do
    Stream.repeatedly(fn ->
      receive do
        {:mix_shell, _stream, [line]} -> line
      after
        0 -> nil
      end
    end)
    |> Enum.take_while(& &1)
    |> Enum.join("\n")
  end

  test "all checks pass against a running daemon", %{primary: primary} do
    Mix.Tasks.Snakepit.Doctor.run(["--node", Atom.to_string(primary.node)])
    text = output()

    assert text =~ "[ok]   configuration is valid"
    assert text =~ "[ok]   epmd on "
    assert text =~ "[ok]   connected to #{primary.node}"
    assert text =~ "[ok]   #{primary.node} answers :ping"
    assert text =~ "[ok]   #{primary.node} info: "
    assert text =~ "All checks passed."
    refute text =~ "[FAIL]"
  end

  test "missing node fails with what to fix" do
    {:ok, host} = :inet.gethostname()
    missing = "sp_absent_#{System.unique_integer([:positive])}@#{host}"

    assert_raise Mix.Error, ~r/check\(s\) failed/, fn ->
      Mix.Tasks.Snakepit.Doctor.run(["--node", missing, "--timeout", "1000"])
    end

    text = output()
    assert text =~ "[FAIL] epmd on #{host} does not list sp_absent_"
    assert text =~ "[FAIL] cannot connect to #{missing}"
    assert text =~ "fix: "
  end

  test "invalid configuration is reported" do
    Application.put_env(:snakepit, :default_timeout, -5)

    assert_raise Mix.Error, fn -> Mix.Tasks.Snakepit.Doctor.run([]) end
    assert output() =~ "[FAIL] invalid :snakepit config default_timeout: -5"
  end

  @tag :pool
  test "library that does not import is reported", %{primary: primary} do
    libraries = [
      %{name: "json", module: "json", pip_package: "json"},
      %{name: "nope", module: "snakepit_no_such_module", pip_package: "nope"}
    ]

    Application.put_env(:snakepit, :python_libraries, libraries)

    assert_raise Mix.Error, fn ->
      Mix.Tasks.Snakepit.Doctor.run(["--node", Atom.to_string(primary.node)])
    end

    text = output()
    assert text =~ "[ok]   #{primary.node} imports json"
    assert text =~ "[FAIL] #{primary.node} cannot import snakepit_no_such_module"
    assert text =~ "install nope"
  end
end
