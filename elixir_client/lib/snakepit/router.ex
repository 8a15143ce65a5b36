defmodule Snakepit.Router do
  @moduledoc """
  Pure routing and backoff rules of the connection manager.

  A call goes to, in this order of precedence:

    1. the node named by the `:node` option, when it is healthy;
    2. the node that holds the call's session (`:session_id`), when the client knows it;
    3. the next healthy node in round-robin order.

  A call never waits for a node to come up: with no healthy node the result is an error at
  once, which `Snakepit.Connection` turns into a `:nodedown` `Snakepit.Error`.
  """

  @typedoc "Why no node can take a call."
  @type no_route ::
          :no_healthy_node | {:node_not_connected, node()} | {:session_node_down, node()}

  @doc """
  Picks the node for one call.

  `explicit` is the `:node` option (or `nil`), `session_node` the node remembered for the call's
  session (or `nil`), `healthy` the healthy nodes in a stable order and `counter` a number that
  grows by one per call.

      iex> Snakepit.Router.route(nil, nil, [:"a@h", :"b@h"], 0)
      {:ok, :"a@h"}
      iex> Snakepit.Router.route(nil, nil, [:"a@h", :"b@h"], 3)
      {:ok, :"b@h"}
      iex> Snakepit.Router.route(nil, :"b@h", [:"a@h", :"b@h"], 0)
      {:ok, :"b@h"}
      iex> Snakepit.Router.route(nil, :"c@h", [:"a@h", :"b@h"], 0)
      {:error, {:session_node_down, :"c@h"}}
      iex> Snakepit.Router.route(:"c@h", nil, [:"a@h"], 0)
      {:error, {:node_not_connected, :"c@h"}}
      iex> Snakepit.Router.route(nil, nil, [], 0)
      {:error, :no_healthy_node}
  """
  @spec route(node() | nil, node() | nil, [node()], non_neg_integer()) ::
          {:ok, node()} | {:error, no_route()}
  def route(explicit, session_node, healthy, counter)

  def route(nil, nil, [], _counter), do: {:error, :no_healthy_node}

  def route(nil, nil, healthy, counter) do
    {:ok, Enum.at(healthy, rem(counter, length(healthy)))}
  end

  def route(nil, session_node, healthy, _counter) do
    if session_node in healthy,
      do: {:ok, session_node},
      else: {:error, {:session_node_down, session_node}}
  end

  def route(explicit, _session_node, healthy, _counter) do
    if explicit in healthy,
      do: {:ok, explicit},
      else: {:error, {:node_not_connected, explicit}}
  end

  @doc """
  Returns the delay before reconnect attempt number `attempt` (0 is the first retry): `min_ms`
  doubled per attempt, at most `max_ms`.

      iex> Enum.map(0..5, &Snakepit.Router.backoff(&1, 100, 1_000))
      [100, 200, 400, 800, 1000, 1000]
  """
  @spec backoff(non_neg_integer(), pos_integer(), pos_integer()) :: pos_integer()
  def backoff(attempt, min_ms, max_ms) do
    # Bound the exponent so a node that stays down for days cannot build a huge integer.
    min(min_ms * Integer.pow(2, min(attempt, 32)), max_ms)
  end

  @doc """
  Adds up to 20% random jitter to a delay, so that clients that lost the same node do not all
  reconnect in the same millisecond.

      iex> delay = Snakepit.Router.jitter(1_000)
      iex> delay >= 1_000 and delay <= 1_200
      true
  """
  @spec jitter(pos_integer()) :: pos_integer()
  def jitter(delay_ms), do: delay_ms + :rand.uniform(div(delay_ms, 5) + 1) - 1
end
