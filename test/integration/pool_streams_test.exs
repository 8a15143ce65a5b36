# SPDX-License-Identifier: Apache-2.0
#
# Streaming calls: chunks in order and one final message, errors mid-stream, a caller that reads
# late, and several streams at once.

defmodule Snakepit.Test.PoolStreamsTest do
  use ExUnit.Case, async: false
  alias Snakepit.Test.Pool

  setup_all do
    daemon = Pool.start_daemon!(Pool.pool_ini(size: 2))
    %{daemon: daemon, node: daemon.node}
  end

  test "100 chunks in order then done", %{node: node} do
    assert {:ok, chunks, final} = Pool.stream(node, "python.pool_fixtures.count", [100])
    assert chunks == Enum.to_list(0..99)
    assert final == {:done, 100}
    refute_receive {:snakepit_stream, _, _}, 200
  end

  test "an exception mid-stream gives one error", %{node: node} do
    assert {:ok, chunks, final} = Pool.stream(node, "python.pool_fixtures.fail_after", [5])
    assert chunks == [0, 1, 2, 3, 4]

    assert {:error,
            %{kind: :python_exception, type: "builtins.ValueError", message: "stream broke"}} =
             final

    refute_receive {:snakepit_stream, _, _}, 200
    assert {:ok, :after} = Pool.fixture(node, "echo", [:after])
  end

  test "a stream that is not allowed does not open", %{node: node} do
    assert {:error, {:error, %{kind: :not_allowed}}} =
             Pool.stream(node, "python.os.listdir", ["/"])
  end

  test "a caller that reads late gets every chunk", %{node: node} do
    {:ok, ref} =
      GenServer.call(
        {:snakepit, node},
        {:execute_stream, "python.pool_fixtures.count", [1000], []}
      )

    # The stream's credit bounds what is in flight; the rest waits in the worker.
    Process.sleep(1000)
    chunks = collect(ref, [])
    assert chunks == Enum.to_list(0..999) ++ [{:done, 1000}]
  end

  test "four streams at once each stay in order", %{node: node} do
    tasks =
      for n <- [50, 60, 70, 80] do
        Task.async(fn -> {n, Pool.stream(node, "python.pool_fixtures.count", [n])} end)
      end

    for {n, result} <- Enum.map(tasks, &Task.await(&1, 30_000)) do
      assert {:ok, chunks, {:done, ^n}} = result
      assert chunks == Enum.to_list(0..(n - 1))
    end
  end

  defp collect(ref, acc) do
    receive do
      {:snakepit_stream, ^ref, {:chunk, term}} -> collect(ref, [term | acc])
      {:snakepit_stream, ^ref, final} -> Enum.reverse([final | acc])
    after
      10_000 -> Enum.reverse([:no_final_message | acc])
    end
  end
end

