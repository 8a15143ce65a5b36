defmodule Mix.Tasks.Snakepit.Doctor do
  @shortdoc "Checks that this application can reach its Snakepit daemons"

  @moduledoc """
  Checks, in order, what a call to a Snakepit daemon depends on, and prints what to fix for
  each failure:

    1. the `:snakepit` configuration is valid;
    2. epmd answers on each daemon's host (`:erl_epmd.names/1`) and lists the daemon;
    3. this node is distributed and has a cookie (the task starts distribution itself, with a
       random short name, when it runs in a plain `mix` shell);
    4. each node accepts a connection (`Node.connect/1`), which also proves the cookie;
    5. each daemon answers `:ping` and `:info`;
    6. each configured library imports on each daemon, through
       `python.importlib.import_module`.

  ## Usage

      mix snakepit.doctor [--node NODE]... [--cookie COOKIE] [--timeout MS]

  `--node` checks the given nodes instead of the configured `nodes`, and `--cookie` overrides
  the configured cookie. The task exits with status 1 when a check fails.
  """

  use Mix.Task

  alias Snakepit.{Config, Error}

  @switches [node: :keep, cookie: :string, timeout: :integer]

  @impl Mix.Task
  def run(argv) do
    {opts, _rest, invalid} = OptionParser.parse(argv, strict: @switches)
    if invalid != [], do: Mix.raise("Invalid options: #{inspect(invalid)}")

    Mix.Task.run("app.config")
    failures = check_all(opts)

    if failures == 0 do
      Mix.shell().info("All checks passed.")
    else
      Mix.raise("snakepit.doctor: #{failures} check(s) failed")
    end
  end

  defp check_all(opts) do
    case Config.load() do
      {:ok, config} ->
        report(:ok, "configuration is valid")
        config = override(config, opts)
        timeout = Keyword.get(opts, :timeout, 10_000)

        if config.nodes == [] do
          report(
            :fail,
            "no nodes to check",
            "set `config :snakepit, nodes: [...]` or pass --node"
          )
        else
          check_nodes(config, timeout)
        end

      {:error, message} ->
        report(:fail, message, "correct the value in config/*.exs")
    end
  end

  defp override(config, opts) do
    nodes =
      case Keyword.get_values(opts, :node) do
        [] -> config.nodes
        names -> Enum.map(names, &String.to_atom/1)
      end

    cookie = if c = opts[:cookie], do: String.to_atom(c), else: config.cookie
    %{config | nodes: nodes, cookie: cookie}
  end

  defp check_nodes(config, timeout) do
    epmd_failures = config.nodes |> Enum.map(&check_epmd/1) |> Enum.sum()

    case ensure_distributed(config) do
      :ok ->
        cookie_failures = check_cookie(config)
        node_failures = config.nodes |> Enum.map(&check_node(&1, config, timeout)) |> Enum.sum()
        epmd_failures + cookie_failures + node_failures

      :error ->
        epmd_failures + 1
    end
  end

  defp check_epmd(node) do
    [name, host] = node |> Atom.to_string() |> String.split("@")

    case :erl_epmd.names(String.to_charlist(host)) do
      {:ok, names} ->
        if Enum.any?(names, fn {registered, _port} -> to_string(registered) == name end) do
          report(:ok, "epmd on #{host} lists #{name}")
        else
          listed = Enum.map_join(names, ", ", fn {n, _port} -> to_string(n) end)

          report(
            :fail,
            "epmd on #{host} does not list #{name} (it lists: #{listed})",
            "start the daemon, or correct the node name in the config"
          )
        end

      {:error, reason} ->
        report(
          :fail,
          "epmd on #{host} does not answer (#{inspect(reason)})",
          "run `epmd -daemon` on #{host}, or start the daemon, which starts epmd"
        )
    end
  end

  defp ensure_distributed(config) do
    if Node.alive?() do
      report(:ok, "this node is distributed as #{node()}")
      :ok
    else
      mode = if Enum.any?(config.nodes, &long_name?/1), do: :longnames, else: :shortnames
      name = :"snakepit_doctor_#{System.unique_integer([:positive])}"

      case Node.start(name, mode) do
        {:ok, _pid} ->
          report(:ok, "started distribution as #{node()}")
          :ok

        {:error, reason} ->
          report(
            :fail,
            "cannot start distribution (#{inspect(reason)})",
            "run epmd (`epmd -daemon`), or start this node with --sname"
          )

          :error
      end
    end
  end

  defp check_cookie(config) do
    if config.cookie, do: Enum.each(config.nodes, &Node.set_cookie(&1, config.cookie))

    case Node.get_cookie() do
      :nocookie ->
        report(:fail, "this node has no cookie", "set `cookie` in the config or ~/.erlang.cookie")

      _cookie ->
        source = if config.cookie, do: "the configured cookie", else: "this node's own cookie"
        report(:ok, "using #{source} for the daemons")
    end
  end

  defp check_node(node, config, timeout) do
    if Node.connect(node) == true do
      report(:ok, "connected to #{node}")
      check_daemon(node, config, timeout)
    else
      report(
        :fail,
        "cannot connect to #{node}",
        "check that the daemon runs and that its cookie matches this node's " <>
          "(a cookie mismatch is logged by the daemon, naming this node)"
      )
    end
  end

  defp check_daemon(node, config, timeout) do
    server = {config.registered_name, node}

    case call(server, :ping, timeout) do
      :pong ->
        report(:ok, "#{node} answers :ping")
        check_info(server, node, timeout) + check_libraries(server, node, config, timeout)

      other ->
        report(
          :fail,
          "#{node} does not answer :ping: #{describe(other)}",
          "check that the daemon registers its server as #{inspect(config.registered_name)} " <>
            "(--registered-name) and that it is not overloaded"
        )
    end
  end

  defp check_info(server, node, timeout) do
    case call(server, :info, timeout) do
      {:ok, %{} = info} ->
        report(:ok, "#{node} info: #{inspect(Map.take(info, [:version, :pools, :store]))}")

      other ->
        report(
          :fail,
          "#{node} does not answer :info: #{describe(other)}",
          "read the daemon's log"
        )
    end
  end

  defp check_libraries(server, node, config, timeout) do
    config.python_libraries
    |> Enum.map(fn library ->
      request =
        {:execute, "python.importlib.import_module", [library.module], %{timeout: timeout}}

      case call(server, request, timeout) do
        {:ok, _module} ->
          report(:ok, "#{node} imports #{library.module}")

        # The module imported, but a module object has no term form, so the daemon replies
        # :encode_error instead of returning it.
        {:error, %{kind: :encode_error}} ->
          report(:ok, "#{node} imports #{library.module}")

        {:error, %{kind: :not_allowed}} = reply ->
          report(
            :fail,
            "#{node} cannot check #{library.module}: #{describe(reply)}",
            "allow importlib in the daemon's config ([library importlib] or --library " <>
              "importlib) so that this task can import modules"
          )

        other ->
          report(
            :fail,
            "#{node} cannot import #{library.module}: #{describe(other)}",
            "install #{library.pip_package} into the Python of the daemon's pool " <>
              "and allow the module in its config ([library #{library.name}])"
          )
      end
    end)
    |> Enum.sum()
  end

  defp call(server, request, timeout) do
    GenServer.call(server, request, timeout)
  catch
    :exit, reason -> {:exit, reason}
  end

  defp describe({:error, %{} = map}), do: Exception.message(Error.from_map(map))
  defp describe({:exit, {reason, _call}}), do: "exit #{inspect(reason)}"
  defp describe(other), do: inspect(other)

  defp long_name?(node), do: node |> Atom.to_string() |> String.contains?(".")

  defp report(:ok, check) do
    Mix.shell().info("[ok]   #{check}")
    0
  end

  defp report(:fail, check, fix) do
    Mix.shell().error("[FAIL] #{check}\n       fix: #{fix}")
    1
  end
end
