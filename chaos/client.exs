# SPDX-License-Identifier: Apache-2.0
# The Erlang side of the chaos scenarios: an Elixir node that calls the daemon and prints one
# line per result, so the shell scenario can check them.
#
#   elixir --sname S --cookie C chaos/client.exs NODE MODE ARG...
#
# Modes:
#   wait_ready TIMEOUT_MS          poll :info until every pool reports ready: true.
#                                  Prints "ready", or "not_ready" with the last pools (exit 2).
#   info                           print the pools of :info, one "pool NAME KEY=VALUE..." line each.
#   load CALLERS CALLS COMMAND ARGS TIMEOUT_MS
#                                  CALLERS processes each make CALLS calls one after the other.
#                                  ARGS is an Elixir literal, e.g. "[0.2]".
#   hold COMMAND ARGS TIMEOUT_MS PINGS
#                                  start one call and PINGS :info requests without reading their
#                                  replies, print "holding", then read everything and print it.
#   probe CALLS                    time CALLS :ping calls one after the other.
#   call COMMAND ARGS              one call; prints "result TERM" or "error KIND MESSAGE".
#
# Calls are raw `$gen_call` messages with a plain reference as the tag, not GenServer.call.
# The daemon then replies to the pid, so a second reply to the same call stays visible in the
# mailbox. With an alias tag the VM would drop it silently.
# Output lines of load:
#   reply CALLER SEQ ok|error KIND LATENCY_MS     one per answered call
#   missing CALLER SEQ                            no reply within TIMEOUT_MS + 5 s
#   duplicate CALLER SEQ                          a second reply to one call
#   summary calls=N ok=N errors=N missing=N duplicates=N max_ms=N
[node_arg, mode | rest] = System.argv()
node = String.to_atom(node_arg)
server = {:snakepit, node}

unless Node.connect(node) do
  IO.puts("connect_failed #{node_arg}")
  System.halt(3)
end

defmodule Chaos do
  def call_async(server, request) do
    ref = make_ref()
    send(server, {:"$gen_call", {self(), ref}, request})
    ref
  end

  def await(ref, timeout_ms) do
    receive do
      {^ref, reply} -> {:ok, reply}
    after
      timeout_ms -> :missing
    end
  end

  def call(server, request, timeout_ms) do
    server |> call_async(request) |> await(timeout_ms)
  end

  # Count the replies that arrived after a call's first reply (duplicates), flushing them.
  def count_late(refs) do
    receive do
      {ref, _reply} when is_reference(ref) ->
        if MapSet.member?(refs, ref), do: 1 + count_late(refs), else: count_late(refs)
    after
      0 -> 0
    end
  end

  def describe({:ok, {:ok, _}}), do: "ok -"
  def describe({:ok, {:error, %{kind: kind}}}), do: "error #{kind}"
  def describe({:ok, other}), do: "error unexpected:#{inspect(other, limit: 5)}"

  def pools_ready?({:ok, {:ok, %{pools: pools}}}) do
    pools != [] and Enum.all?(pools, & &1.ready)
  end

  def pools_ready?(_), do: false

  def print_pools({:ok, {:ok, %{pools: pools}}}) do
    for p <- pools do
      workers = Enum.map_join(p.workers, " ", fn {state, n} -> "#{state}=#{n}" end)
      IO.puts("pool #{p.name} size=#{p.size} ready=#{p.ready} degraded=#{p.degraded} " <>
                "queue_depth=#{p.queue_depth} #{workers}")
    end
  end

  def print_pools(other), do: IO.puts("info_failed #{inspect(other)}")
end

case mode do
  "wait_ready" ->
    [timeout] = rest
    deadline = System.monotonic_time(:millisecond) + String.to_integer(timeout)

    result =
      Stream.repeatedly(fn ->
        info = Chaos.call(server, :info, 2_000)
        ready = Chaos.pools_ready?(info)
        unless ready, do: Process.sleep(100)
        {ready, info}
      end)
      |> Enum.find(fn {ready, _} -> ready or System.monotonic_time(:millisecond) > deadline end)

    case result do
      {true, _} ->
        IO.puts("ready")

      {false, info} ->
        IO.puts("not_ready")
        Chaos.print_pools(info)
        System.halt(2)
    end

  "info" ->
    Chaos.print_pools(Chaos.call(server, :info, 5_000))

  "load" ->
    [callers, calls, command, args, timeout] = rest
    {args_term, _} = Code.eval_string(args)
    timeout = String.to_integer(timeout)
    request = {:execute, command, args_term, [timeout: timeout]}
    parent = self()

    tasks =
      for caller <- 1..String.to_integer(callers) do
        spawn_link(fn ->
          {lines, refs} =
            Enum.map_reduce(1..String.to_integer(calls), MapSet.new(), fn seq, refs ->
              started = System.monotonic_time(:millisecond)
              ref = Chaos.call_async(server, request)

              line =
                case Chaos.await(ref, timeout + 5_000) do
                  :missing ->
                    "missing #{caller} #{seq}"

                  reply ->
                    ms = System.monotonic_time(:millisecond) - started
                    "reply #{caller} #{seq} #{Chaos.describe(reply)} #{ms}"
                end

              IO.puts(line)
              {line, MapSet.put(refs, ref)}
            end)

          Process.sleep(1_000)
          send(parent, {:done, lines, Chaos.count_late(refs)})
        end)
      end

    results = for _ <- tasks, do: receive(do: ({:done, lines, late} -> {lines, late}))
    lines = Enum.flat_map(results, &elem(&1, 0))
    duplicates = results |> Enum.map(&elem(&1, 1)) |> Enum.sum()
    replies = Enum.filter(lines, &String.starts_with?(&1, "reply "))
    ok = Enum.count(replies, &String.contains?(&1, " ok "))

    max_ms =
      replies
      |> Enum.map(fn l -> l |> String.split(" ") |> List.last() |> String.to_integer() end)
      |> Enum.max(fn -> 0 end)

    IO.puts("summary calls=#{length(lines)} ok=#{ok} errors=#{length(replies) - ok} " <>
              "missing=#{length(lines) - length(replies)} duplicates=#{duplicates} max_ms=#{max_ms}")

  "hold" ->
    [command, args, timeout, pings] = rest
    {args_term, _} = Code.eval_string(args)
    timeout = String.to_integer(timeout)
    call_ref = Chaos.call_async(server, {:execute, command, args_term, [timeout: timeout]})
    refs = for _ <- 1..String.to_integer(pings), do: Chaos.call_async(server, :info)
    IO.puts("holding")
    IO.puts("call #{Chaos.describe(Chaos.await(call_ref, timeout + 30_000))}")
    answered = Enum.count(refs, &(Chaos.await(&1, 30_000) != :missing))
    IO.puts("info_replies #{answered} of #{length(refs)}")

  "call" ->
    [command, args] = rest
    {args_term, _} = Code.eval_string(args)

    case Chaos.call(server, {:execute, command, args_term, [timeout: 10_000]}, 15_000) do
      {:ok, {:ok, result}} -> IO.puts("result #{inspect(result, limit: :infinity)}")
      {:ok, {:error, %{kind: kind, message: message}}} -> IO.puts("error #{kind} #{message}")
      other -> IO.puts("error unexpected #{inspect(other)}")
    end

  "probe" ->
    [calls] = rest

    latencies =
      for _ <- 1..String.to_integer(calls) do
        started = System.monotonic_time(:microsecond)
        {:ok, :pong} = Chaos.call(server, :ping, 5_000)
        latency = System.monotonic_time(:microsecond) - started
        Process.sleep(20)
        latency
      end

    IO.puts("probe calls=#{length(latencies)} max_us=#{Enum.max(latencies)}")
end
