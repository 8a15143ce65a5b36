# SPDX-License-Identifier: Apache-2.0
#
# Runs integration tests with a plain `elixir` (no Mix):
#   elixir --sname runner --cookie COOKIE test/integration/run.exs [TEST_FILE[:LINE]...]
# The runner must be a distributed node: the tests call the daemon over the distribution.
# $SNAKEPIT_SUITE names the suite (default core). Without TEST_FILE arguments the pool suite runs
# pool_*_test.exs and session_*_test.exs, the observability suite obs_*_test.exs, and the core
# suite every other *_test.exs here.
# The last line is "SUITE: N passed, N failed"; the exit status is 1 when a test failed.

Code.require_file("support/daemon.exs", __DIR__)
Code.require_file("support/pool.exs", __DIR__)
Code.require_file("support/obs.exs", __DIR__)

suite = System.get_env("SNAKEPIT_SUITE", "core")

if node() == :nonode@nohost do
  IO.puts(:stderr, "run.exs needs a distributed node: start elixir with --sname and --cookie")
  IO.puts("#{suite}: 0 passed, 1 failed")
  System.halt(1)
end

# Tests tagged :known_bug describe a bug that is still open, so they fail until it is fixed.
include_known_bugs = System.get_env("INCLUDE_KNOWN_BUGS") == "1"

ExUnit.start(
  autorun: false,
  timeout: 120_000,
  trace: System.get_env("TRACE") == "1",
  exclude: if(include_known_bugs, do: [], else: [:known_bug])
)

suite_of = fn file ->
  cond do
    String.starts_with?(Path.basename(file), ["pool_", "session_"]) -> "pool"
    String.starts_with?(Path.basename(file), "obs_") -> "observability"
    true -> "core"
  end
end

files =
  case System.argv() do
    [] ->
      Path.wildcard(Path.join(__DIR__, "*_test.exs"))
      |> Enum.filter(&(suite_of.(&1) == suite))

    given ->
      given
  end

# FILE:LINE runs only the test at that line, as `mix test` does.
{files, locations} =
  Enum.map_reduce(files, [], fn arg, acc ->
    case Regex.run(~r/^(.*_test\.exs):(\d+)$/, arg) do
      [_, file, line] -> {file, [{:line, line} | acc]}
      nil -> {arg, acc}
    end
  end)

if locations != [] do
  known_bugs = if include_known_bugs, do: [], else: [:known_bug]
  ExUnit.configure(exclude: [:test | known_bugs], include: locations)
end

Enum.each(files, &Code.require_file/1)
result = ExUnit.run()
passed = result.total - result.failures - result.skipped - result.excluded

if result.excluded > 0 and locations == [] do
  IO.puts("#{suite}: #{result.excluded} known-bug tests excluded; run them with INCLUDE_KNOWN_BUGS=1")
end

IO.puts("#{suite}: #{passed} passed, #{result.failures} failed")
System.halt(if result.failures > 0, do: 1, else: 0)
