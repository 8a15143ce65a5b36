# SPDX-License-Identifier: Apache-2.0
#
# The checks of test/suites/migrate.sh, which starts Redis and the daemons and passes their node
# names in the environment: MIGRATE_MEMORY (filled here), MIGRATE_REDIS (target, Redis db 0),
# MIGRATE_EMPTY (Redis db 1, for the dry run), MIGRATE_BACK (a fresh memory daemon) and
# MIGRATE_SMALL (memory, max_message_bytes = MIGRATE_SMALL_LIMIT). REDIS_PORT is the Redis port.
# Prints "ok"/"FAIL" per check and "migrate: N passed, N failed" last.

defmodule Snakepit.Test.MigrateChecks do
  @sessions 200
  @script Path.expand("../../deploy/snakepit-migrate.exs", __DIR__)

  def run do
    nodes = %{
      memory: env_node("MIGRATE_MEMORY"),
      redis: env_node("MIGRATE_REDIS"),
      empty: env_node("MIGRATE_EMPTY"),
      back: env_node("MIGRATE_BACK"),
      small: env_node("MIGRATE_SMALL")
    }

    Process.put(:counts, {0, 0})
    expected = fill(nodes.memory)
    check_usage(nodes)
    check_migrate(nodes, expected)
    check_dry_run(nodes)
    check_conflict(nodes)
    check_back(nodes, expected)
    check_dump_limits(nodes.small, String.to_integer(System.fetch_env!("MIGRATE_SMALL_LIMIT")))

    {passed, failed} = Process.get(:counts)
    IO.puts("migrate: #{passed} passed, #{failed} failed")
    System.halt(if failed == 0, do: 0, else: 1)
  end

  defp env_node(var), do: var |> System.fetch_env!() |> String.to_atom()

  defp check(name, condition, detail \\ "") do
    {passed, failed} = Process.get(:counts)

    if condition do
      IO.puts("ok - #{name}")
      Process.put(:counts, {passed + 1, failed})
    else
      IO.puts("FAIL - #{name} #{String.slice(detail, 0, 2000)}")
      Process.put(:counts, {passed, failed + 1})
    end
  end

  defp call(node, request), do: GenServer.call({:snakepit, node}, request, 15_000)

  defp migrate(args) do
    sname = "migrate_#{System.unique_integer([:positive])}_#{System.os_time(:millisecond)}"
    cookie = Atom.to_string(Node.get_cookie())
    argv = ["--sname", sname, "--cookie", cookie, @script | args]
    System.cmd("elixir", argv, stderr_to_stdout: true)
  end

  defp migrate_nodes(from, to, extra \\ []) do
    migrate(["--from", Atom.to_string(from), "--to", Atom.to_string(to) | extra])
  end

  @summary Regex.compile!(
             ~S"(\d+) sessions on the source: (\d+) [a-z ]*created, (\d+) [a-z ]*updated, " <>
               ~S"(\d+) unchanged, (\d+) skipped, (\d+) failed"
           )

  # Returns [listed, created, updated, unchanged, skipped, failed] from the last line.
  defp summary(output) do
    case Regex.run(@summary, output) do
      [_ | counts] -> Enum.map(counts, &String.to_integer/1)
      nil -> :no_summary
    end
  end

  # The variables of session i: one of each term type that travels, a 1 MiB binary in one.
  defp vars(i) do
    base = %{
      "binary" => "value #{i} héllo",
      "bytes" => <<255, 0, rem(i, 256)>>,
      "map" => %{"i" => i, nested: %{list: [i, [i + 1, [i + 2]]], tuple: {:a, i}}},
      "list" => [[1, 2, [3, [4, []]]], ~c"abc", [256, 1]],
      "floats" => [i / 7, -0.0, 5.0e-324, 1.7976931348623157e308],
      "atoms" => [:ok, nil, true, :привет, :"atom_#{i}"],
      "integers" => [0, -1, 2 ** 70 + i, -(2 ** 64)],
      "empty" => ""
    }

    if i == 1, do: Map.put(base, "large", :binary.copy(<<i, 7>>, 512 * 1024)), else: base
  end

  defp meta(i) do
    owner = if rem(i, 3) == 0, do: nil, else: :"app#{rem(i, 2)}@nowhere"
    %{ttl_s: 600 + i, owner: owner}
  end

  defp fill(node) do
    for i <- 1..@sessions, into: %{} do
      id = "session-#{i}"
      m = meta(i)
      {:ok, _} = call(node, {:session, :create, id, [ttl: m.ttl_s, owner: m.owner]})
      for {name, value} <- vars(i), do: :ok = call(node, {:session, :put, id, name, value})
      {id, {m, vars(i)}}
    end
  end

  defp encoded(term), do: :erlang.term_to_binary(term, [:deterministic])

  # Each session of `expected` is on `node` with the same ttl, owner and variables, byte-exact.
  defp mismatches(node, expected) do
    for {id, {m, vars}} <- expected,
        reason = mismatch(call(node, {:session, :dump, id}), m, vars),
        do: {id, reason}
  end

  defp mismatch({:ok, %{session: s, vars: got}}, m, vars) do
    cond do
      s.ttl_s != m.ttl_s -> {:ttl_s, s.ttl_s}
      s.owner != m.owner -> {:owner, s.owner}
      Map.keys(got) != Map.keys(vars) -> {:names, Map.keys(got)}
      encoded(got) != encoded(vars) -> :values
      true -> nil
    end
  end

  defp mismatch(other, _m, _vars), do: other

  defp list(node) do
    {:ok, ids} = call(node, {:session, :list, [limit: 100_000]})
    Enum.sort(ids)
  end

  defp check_usage(nodes) do
    {out, status} = migrate(["--from", Atom.to_string(nodes.memory)])
    check("missing --to exits 64", status == 64, out)
    check("missing --to is named", out =~ "--to is missing", out)

    {out, status} = migrate_nodes(nodes.memory, nodes.redis, ["--bogus"])
    check("unknown option exits 64", status == 64, out)

    {out, status} = migrate_nodes(nodes.memory, nodes.memory)
    check("same source and target exits 64", status == 64, out)

    {out, status} = migrate_nodes(nodes.memory, :"nodaemon_#{System.os_time()}@localhost")
    check("unreachable target exits 69", status == 69, out)
  end

  defp check_migrate(nodes, expected) do
    {out, status} = migrate_nodes(nodes.memory, nodes.redis)
    check("memory to redis exits 0", status == 0, out)
    check("memory to redis creates all", summary(out) == [@sessions, @sessions, 0, 0, 0, 0], out)
    bad = mismatches(nodes.redis, expected)
    check("redis has every variable identical", bad == [], inspect(Enum.take(bad, 3)))
    check("redis has no other sessions", list(nodes.redis) == Enum.sort(Map.keys(expected)))

    {out, status} = migrate_nodes(nodes.memory, nodes.redis)
    check("second run exits 0", status == 0, out)
    check("second run changes nothing", summary(out) == [@sessions, 0, 0, @sessions, 0, 0], out)

    # A changed source variable is put again, and only in its session.
    :ok = call(nodes.memory, {:session, :put, "session-5", "binary", "changed"})
    {out, status} = migrate_nodes(nodes.memory, nodes.redis)
    check("changed variable run exits 0", status == 0, out)

    check(
      "changed variable updates one",
      summary(out) == [@sessions, 0, 1, @sessions - 1, 0, 0],
      out
    )

    check("changed variable is named", out =~ ~s(session "session-5": updated: 1 variables), out)
    got = call(nodes.redis, {:session, :get, "session-5", "binary"})
    check("changed variable reached redis", got == {:ok, "changed"}, inspect(got))
    :ok = call(nodes.memory, {:session, :put, "session-5", "binary", vars(5)["binary"]})
    {out, status} = migrate_nodes(nodes.memory, nodes.redis)
    check("restored variable run exits 0", status == 0, out)
  end

  defp redis_dbsize(db) do
    port = System.fetch_env!("REDIS_PORT")
    {out, 0} = System.cmd("redis-cli", ["-h", "127.0.0.1", "-p", port, "-n", "#{db}", "DBSIZE"])
    String.trim(out)
  end

  defp check_dry_run(nodes) do
    {out, status} = migrate_nodes(nodes.memory, nodes.empty, ["--dry-run"])
    check("dry run exits 0", status == 0, out)
    check("dry run counts all", summary(out) == [@sessions, @sessions, 0, 0, 0, 0], out)
    check("dry run says would be", out =~ ~s(session "session-1": would be created: 9 variables))
    check("dry run lists nothing on target", list(nodes.empty) == [])
    check("dry run leaves redis db empty", redis_dbsize(1) == "0", redis_dbsize(1))

    {out, status} = migrate_nodes(nodes.redis, nodes.back, ["--dry-run"])
    check("dry run redis to memory exits 0", status == 0, out)
    check("dry run leaves memory empty", list(nodes.back) == [])
  end

  # A target session with the same id but another TTL fails by name, and the others go on.
  defp check_conflict(nodes) do
    {:ok, _} = call(nodes.empty, {:session, :create, "session-7", [ttl: 5, owner: nil]})
    {out, status} = migrate_nodes(nodes.memory, nodes.empty)
    check("conflict exits 1", status == 1, out)

    check(
      "conflict is named",
      out =~ ~s(session "session-7": FAILED: a session with this id),
      out
    )

    check("conflict spares the rest", summary(out) == [@sessions, @sessions - 1, 0, 0, 0, 1], out)
    {:ok, %{session: s, vars: v}} = call(nodes.empty, {:session, :dump, "session-7"})
    check("conflict leaves target session", s.ttl_s == 5 and v == %{}, inspect(s))
  end

  defp check_back(nodes, expected) do
    {out, status} = migrate_nodes(nodes.redis, nodes.back)
    check("redis to memory exits 0", status == 0, out)
    check("redis to memory creates all", summary(out) == [@sessions, @sessions, 0, 0, 0, 0], out)
    bad = mismatches(nodes.back, expected)
    check("memory has every variable identical", bad == [], inspect(Enum.take(bad, 3)))

    {out, status} = migrate_nodes(nodes.redis, nodes.back)
    check("redis to memory second run", summary(out) == [@sessions, 0, 0, @sessions, 0, 0], out)
    check("redis to memory second exits 0", status == 0, out)
  end

  defp too_large_size(reply) do
    with {:error, %{kind: :too_large, message: message}} <- reply,
         [_, size] <- Regex.run(~r/is (\d+) bytes, over the message size limit/, message) do
      String.to_integer(size)
    else
      _ -> nil
    end
  end

  # The dump of one session with variables "a" and "b" is sized by the length of "b".
  defp check_dump_limits(node, limit) do
    unknown = call(node, {:session, :dump, "no-such-session"})

    check(
      "dump unknown session not found",
      match?({:error, %{kind: :session_not_found}}, unknown)
    )

    {:ok, _} = call(node, {:session, :create, "big", [ttl: 60, owner: nil]})
    :ok = call(node, {:session, :put, "big", "a", :binary.copy("a", div(limit, 2))})
    probe = div(limit, 2) + 400
    :ok = call(node, {:session, :put, "big", "b", :binary.copy("b", probe)})
    size = too_large_size(call(node, {:session, :dump, "big"}))
    check("dump over limit is too_large", is_integer(size) and size > limit, inspect(size))

    # The reply grows by one byte per byte of "b", so this length makes it exactly `limit`.
    at_limit = probe - (size - limit)
    :ok = call(node, {:session, :put, "big", "b", :binary.copy("b", at_limit)})
    reply = call(node, {:session, :dump, "big"})
    check("dump at limit succeeds", match?({:ok, %{vars: %{"b" => _}}}, reply))
    reply_size = byte_size(:erlang.term_to_binary(reply)) - 1
    check("dump at limit size is near", abs(reply_size - limit) < 64, "#{reply_size}")

    :ok = call(node, {:session, :put, "big", "b", :binary.copy("b", at_limit + 1)})
    reply = call(node, {:session, :dump, "big"})
    check("dump at limit + 1 is too_large", too_large_size(reply) == limit + 1, inspect(reply))
    check("daemon serves after too_large", call(node, :ping) == :pong)

    {out, status} = migrate_nodes(node, env_node("MIGRATE_BACK"))
    check("too_large source exits 1", status == 1, out)
    check("too_large source is named", out =~ ~s(session "big": FAILED: failed to dump), out)
  end
end

Snakepit.Test.MigrateChecks.run()
