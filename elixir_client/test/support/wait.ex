defmodule SnakepitTest.Wait do
  @moduledoc "Polling helpers for conditions that change asynchronously."

  @doc "Polls `fun` every 20 ms until it returns true or `timeout_ms` passes; returns its last value."
  def until(fun, timeout_ms \\ 5_000) do
    deadline = System.monotonic_time(:millisecond) + timeout_ms
    poll(fun, deadline)
  end

  defp poll(fun, deadline) do
    cond do
      fun.() -> true
      System.monotonic_time(:millisecond) > deadline -> false
      true -> Process.sleep(20) && poll(fun, deadline)
    end
  end

  @doc "Runs `fun` and returns `{elapsed_ms, result}`."
  def timed(fun) do
    started = System.monotonic_time(:millisecond)
    result = fun.()
    {System.monotonic_time(:millisecond) - started, result}
  end
end
