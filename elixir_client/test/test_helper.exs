# The tests run against real snakepit-cnode daemons, so this node must be distributed:
# test/suites/elixir_client.sh runs `elixir --sname ... --cookie ... -S mix test`.
unless Node.alive?() do
  IO.puts(:stderr, "The Snakepit tests need a distributed node: run test/suites/elixir_client.sh")
  System.halt(1)
end

alias SnakepitTest.{App, Daemon}

# One daemon serves the tests that need no daemon of their own; it is stopped at the end.
primary = Daemon.start!(sname: Daemon.unique_sname("primary"))
:persistent_term.put(:snakepit_test_primary, primary)
App.restart!(nodes: [primary.node])

# The daemon's features are probed here. Tests that need a feature the daemon lacks (a build
# without pools, store or telemetry) are excluded, and the reason is printed.
{:ok, info} = Snakepit.info(node: primary.node)

probe_subscribe =
  Snakepit.Connection.call_node(primary.node, {:subscribe, self(), [[:snakepit]]}, 5_000)

Snakepit.Connection.call_node(primary.node, {:unsubscribe, self()}, 5_000)

describe = fn
  {:error, %Snakepit.Error{} = error} -> Exception.message(error)
  other -> inspect(other)
end

features = [
  pool: {Map.get(info, :pools, []) != [], ":info lists no pools"},
  sessions:
    {Map.get(info, :store) not in [nil, :none], ":info reports store #{inspect(info[:store])}"},
  telemetry: {probe_subscribe == :ok, "{:subscribe, ...} replied #{describe.(probe_subscribe)}"}
]

excluded =
  for {tag, {present?, reason}} <- features, not present? do
    IO.puts("Excluding tests tagged @tag :#{tag}: #{reason} (daemon #{primary.node})")
    tag
  end

if excluded == [] do
  IO.puts("Daemon #{primary.node} has pools, a session store and telemetry: no tests excluded")
end

ExUnit.after_suite(fn _result ->
  Application.stop(:snakepit)
  Daemon.stop(primary)
end)

ExUnit.start(exclude: excluded)
