# SPDX-License-Identifier: Apache-2.0
#
# Copies every session from one running snakepit-cnode daemon to another, whatever their stores
# (memory or Redis). It lists the source's sessions, reads each with {:session, :dump, id}, and on
# the target creates the session with the source's TTL and owner and puts each variable that is
# missing or different. Running it again changes nothing. Plain `elixir`, no Mix:
#
#   elixir --sname migrate_$$ --cookie COOKIE deploy/snakepit-migrate.exs \
#       --from snakepit@host1 --to snakepit@host2 [--dry-run] [--registered-name NAME]
#
# Exit status: 0 when every session was copied or already equal, 1 when a session failed (each
# failure is named), 64 for bad usage, 69 when a daemon is unreachable.

defmodule Snakepit.Migrate do
  @moduledoc false

  @usage """
  usage: elixir --sname migrate_$$ --cookie COOKIE snakepit-migrate.exs \\
             --from NODE --to NODE [--dry-run] [--registered-name NAME]

  Copies every session from the daemon NODE of --from to the daemon NODE of --to.
    --from NODE             source daemon, name@host (a bare name gets this host)
    --to NODE               target daemon, name@host
    --dry-run               print what would be copied and write nothing
    --registered-name NAME  the daemons' registered name (default: snakepit)
  """

  # The largest limit of {:session, :list, opts}, so a listing that fills it may be incomplete.
  @list_limit 100_000
  @call_timeout_ms 15_000

  def main(argv) do
    opts = parse_args(argv)
    source = connect!(opts.from, "--from")
    target = connect!(opts.to, "--to")
    name = opts.registered_name

    {ids, complete?} = list_sessions!(name, source)
    results = Enum.map(ids, &{&1, migrate_session(name, source, target, &1, opts.dry_run)})
    report(results, length(ids), complete?, opts.dry_run)
  end

  defp parse_args(argv) do
    switches = [from: :string, to: :string, dry_run: :boolean, registered_name: :string]

    case OptionParser.parse(argv, strict: switches) do
      {parsed, [], []} ->
        from = parsed[:from] || usage!("--from is missing")
        to = parsed[:to] || usage!("--to is missing")
        registered_name = parsed[:registered_name] || "snakepit"

        if node() == :nonode@nohost do
          usage!("this script must run on a distributed node: start elixir with --sname")
        end

        if registered_name == "" do
          usage!("--registered-name is empty")
        end

        opts = %{
          from: node_name(from),
          to: node_name(to),
          dry_run: Keyword.get(parsed, :dry_run, false),
          registered_name: String.to_atom(registered_name)
        }

        if opts.from == opts.to do
          usage!("--from and --to name the same node #{opts.from}")
        end

        opts

      {_, [extra | _], []} ->
        usage!("unexpected argument '#{extra}'")

      {_, _, [{flag, _} | _]} ->
        usage!("invalid option '#{flag}'")
    end
  end

  defp usage!(message) do
    IO.puts(:stderr, "snakepit-migrate: #{message}\n\n" <> @usage)
    System.halt(64)
  end

  defp node_name(text) do
    if String.contains?(text, "@") do
      String.to_atom(text)
    else
      [_, host] = node() |> Atom.to_string() |> String.split("@", parts: 2)
      String.to_atom("#{text}@#{host}")
    end
  end

  defp connect!(node, flag) do
    if Node.connect(node) != true do
      IO.puts(
        :stderr,
        "snakepit-migrate: failed to connect to #{flag} node #{node}: check that the daemon " <>
          "runs and that the cookie matches"
      )

      System.halt(69)
    end

    node
  end

  defp call(name, node, request) do
    GenServer.call({name, node}, request, @call_timeout_ms)
  catch
    :exit, reason -> {:error, %{kind: :call_failed, message: inspect(reason)}}
  end

  defp list_sessions!(name, source) do
    case call(name, source, {:session, :list, [limit: @list_limit]}) do
      {:ok, ids} ->
        # A page may repeat an id, so only the raw count shows whether the limit was reached.
        {Enum.uniq(ids), length(ids) < @list_limit}

      {:error, error} ->
        IO.puts(
          :stderr,
          "snakepit-migrate: failed to list the sessions of #{source}: " <>
            describe(error)
        )

        System.halt(1)
    end
  end

  # Returns {:created | :updated | :unchanged | :skipped, detail} or {:failed, reason}.
  defp migrate_session(name, source, target, id, dry_run) do
    with {:ok, dump} <- dump(name, source, id, "source"),
         {:ok, existing} <- target_state(name, target, id),
         {:ok, outcome, changed} <- plan(dump, existing) do
      apply_plan(name, target, id, dump, outcome, changed, dry_run)
    else
      {:skip, why} -> {:skipped, why}
      {:error, why} -> {:failed, why}
    end
  end

  defp dump(name, node, id, side) do
    case call(name, node, {:session, :dump, id}) do
      {:ok, %{session: _, vars: _} = dump} ->
        {:ok, dump}

      {:error, %{kind: :session_not_found}} when side == "source" ->
        {:skip, "gone from the source"}

      {:error, %{kind: :session_not_found}} ->
        {:ok, nil}

      {:error, error} ->
        {:error, "failed to dump it from the #{side}: " <> describe(error)}

      other ->
        {:error, "unexpected reply to a dump from the #{side}: #{inspect(other)}"}
    end
  end

  defp target_state(name, target, id), do: dump(name, target, id, "target")

  # The variables to put: all of them for a new session, else the missing or different ones.
  defp plan(dump, nil), do: {:ok, :created, Map.keys(dump.vars)}

  defp plan(dump, existing) do
    src = dump.session
    dst = existing.session

    if src.ttl_s != dst.ttl_s or src.owner != dst.owner do
      {:error,
       "a session with this id exists on the target with ttl_s #{dst.ttl_s} and owner " <>
         "#{inspect(dst.owner)}, the source has ttl_s #{src.ttl_s} and owner " <>
         "#{inspect(src.owner)}; it was left unchanged"}
    else
      changed =
        for {var, value} <- dump.vars,
            not (Map.has_key?(existing.vars, var) and same?(existing.vars[var], value)),
            do: var

      {:ok, if(changed == [], do: :unchanged, else: :updated), changed}
    end
  end

  # Compares the encodings, because === treats 0.0 and -0.0 as equal in OTP 25.
  defp same?(a, b),
    do: :erlang.term_to_binary(a, [:deterministic]) == :erlang.term_to_binary(b, [:deterministic])

  defp apply_plan(_name, _target, _id, _dump, :unchanged, _changed, _dry_run),
    do: {:unchanged, ""}

  defp apply_plan(_name, _target, _id, _dump, outcome, changed, true),
    do: {outcome, "#{length(changed)} variables"}

  defp apply_plan(name, target, id, dump, outcome, changed, false) do
    with :ok <- create(name, target, id, dump.session, outcome),
         :ok <- put_vars(name, target, id, dump.vars, changed) do
      {outcome, "#{length(changed)} variables"}
    end
  end

  defp create(_name, _target, _id, _session, :updated), do: :ok

  defp create(name, target, id, session, :created) do
    # The owner is passed even when nil: without it the target would make this script's node
    # the owner and drop the session when the script disconnects.
    opts = [ttl: session.ttl_s, owner: session.owner]

    case call(name, target, {:session, :create, id, opts}) do
      {:ok, _} -> :ok
      {:error, error} -> {:failed, "failed to create it on the target: " <> describe(error)}
    end
  end

  defp put_vars(name, target, id, vars, changed) do
    Enum.reduce_while(changed, :ok, fn var, :ok ->
      case call(name, target, {:session, :put, id, var, Map.fetch!(vars, var)}) do
        :ok ->
          {:cont, :ok}

        {:error, error} ->
          {:halt, {:failed, "failed to put variable #{inspect(var)}: " <> describe(error)}}
      end
    end)
  end

  defp describe(%{kind: kind, message: message}), do: "#{kind}: #{message}"
  defp describe(other), do: inspect(other)

  defp report(results, listed, complete?, dry_run) do
    verb = if dry_run, do: "would be ", else: ""

    for {id, {outcome, detail}} <- results, outcome != :unchanged do
      label =
        case outcome do
          :created -> "#{verb}created"
          :updated -> "#{verb}updated"
          :skipped -> "skipped"
          :failed -> "FAILED"
        end

      IO.puts("session #{inspect(id)}: #{label}: #{detail}")
    end

    counts = Enum.frequencies_by(results, fn {_, {outcome, _}} -> outcome end)
    count = &Map.get(counts, &1, 0)

    IO.puts(
      "#{if dry_run, do: "dry run: ", else: ""}#{listed} sessions on the source: " <>
        "#{count.(:created)} #{verb}created, #{count.(:updated)} #{verb}updated, " <>
        "#{count.(:unchanged)} unchanged, #{count.(:skipped)} skipped, " <>
        "#{count.(:failed)} failed"
    )

    unless complete? do
      IO.puts(
        "FAILED: the source listed #{@list_limit} sessions, the most one list request " <>
          "returns, so sessions past them were not copied"
      )
    end

    System.halt(if count.(:failed) == 0 and complete?, do: 0, else: 1)
  end
end

Snakepit.Migrate.main(System.argv())
