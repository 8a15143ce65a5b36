defmodule Snakepit.ErrorTest do
  use ExUnit.Case, async: true

  alias Snakepit.Error

  # Every kind the daemon may send, with whether it is transient when the map has no
  # `retryable` key.
  @daemon_kinds [
    python_exception: false,
    timeout: true,
    queue_timeout: true,
    overloaded: true,
    worker_crashed: true,
    worker_busy: true,
    session_worker_unavailable: false,
    session_not_found: false,
    not_allowed: false,
    bad_request: false,
    encode_error: false,
    too_large: false,
    too_deep: false,
    circuit_open: true,
    store_unavailable: true,
    shutting_down: true
  ]

  @client_kinds [nodedown: true, noproc: true, bad_reply: false]

  test "each daemon kind builds an error with its retryable default" do
    for {kind, transient} <- @daemon_kinds do
      error = Error.from_map(%{kind: kind, message: "m"}, :sp@h)
      assert error.kind == kind
      assert error.retryable == transient, "retryable default of #{kind}"
      assert error.node == :sp@h
      assert Exception.message(error) == "#{kind}: m (node sp@h)"
    end
  end

  test "daemon's retryable flag wins over the default" do
    for {kind, transient} <- @daemon_kinds do
      error = Error.from_map(%{kind: kind, message: "m", retryable: not transient})
      assert error.retryable == not transient, "explicit retryable of #{kind}"
    end
  end

  test "each client kind builds an error" do
    for {kind, transient} <- @client_kinds do
      error = Error.new(kind, "m", node: :sp@h)
      assert error.kind == kind
      assert error.retryable == transient
      assert error.node == :sp@h
    end

    assert Error.new(:nodedown, "m", retryable: false).retryable == false
  end

  test "python exception keeps type, traceback and extra keys" do
    error =
      Error.from_map(%{
        kind: :python_exception,
        message: "bad",
        type: "builtins.TypeError",
        traceback: ["Traceback (most recent call last):", "TypeError: bad"],
        correlation_id: "c1",
        retryable: false,
        args: ["bad"],
        exit_code: nil
      })

    assert error.type == "builtins.TypeError"
    assert error.traceback == ["Traceback (most recent call last):", "TypeError: bad"]
    assert error.correlation_id == "c1"
    assert error.details == %{args: ["bad"], exit_code: nil}

    assert Exception.message(error) ==
             "python_exception: builtins.TypeError: bad (correlation_id c1)"
  end

  test "malformed maps still build an error" do
    error = Error.from_map(%{})
    assert error.kind == :unknown
    assert error.message == ""
    assert error.retryable == false

    error = Error.from_map(%{kind: "not an atom", message: :atom_message, traceback: "a\nb\n"})
    assert error.kind == :unknown
    assert error.message == "atom_message"
    assert error.traceback == ["a", "b"]

    assert Error.from_map(%{kind: :timeout, message: 42}).message == "42"
  end

  test "error can be raised" do
    error = Error.new(:nodedown, "no Snakepit node is connected")
    assert_raise Error, "nodedown: no Snakepit node is connected", fn -> raise error end
  end
end
