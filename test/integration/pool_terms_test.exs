# SPDX-License-Identifier: Apache-2.0
#
# Terms through a real worker: special floats, atoms, lists, strings and bytes, bit-exact
# floats, the nesting depth limit and large binaries up to the message size limit.

defmodule Snakepit.Test.PoolTermsTest do
  use ExUnit.Case, async: false
  alias Snakepit.Test.Pool

  # Room for a 100 MB binary and the call around it.
  @message_limit 110 * 1024 * 1024

  setup_all do
    ini =
      Pool.pool_ini([size: 2], """
      [library builtins]
      module = builtins

      [node]
      max_message_bytes = #{@message_limit}
      """)

    daemon = Pool.start_daemon!(ini)
    %{daemon: daemon, node: daemon.node}
  end

  defp echo(node, value, timeout \\ 30_000), do: Pool.fixture(node, "echo", [value], [], timeout)

  describe "special floats" do
    test "nan and infinities become atoms", %{node: node} do
      assert {:ok, :nan} = Pool.execute(node, "python.builtins.float", ["nan"])
      assert {:ok, :infinity} = Pool.execute(node, "python.builtins.float", ["inf"])
      assert {:ok, :neg_infinity} = Pool.execute(node, "python.builtins.float", ["-inf"])
      assert {:ok, [:nan, :infinity, :neg_infinity]} = Pool.fixture(node, "special_floats", [])
    end

    test "nan nested three deep", %{node: node} do
      assert {:ok, [[[1.0, :nan]]]} = Pool.fixture(node, "nan_nested", [])
    end

    test "concurrent calls are unaffected", %{node: node} do
      echoes =
        for i <- 1..20 do
          Task.async(fn -> echo(node, %{"i" => i, "xs" => [i, i * 1.5]}) end)
        end

      specials = for _ <- 1..20, do: Task.async(fn -> Pool.fixture(node, "nan_nested", []) end)

      for {task, i} <- Enum.zip(echoes, 1..20) do
        assert Task.await(task, 30_000) == {:ok, %{"i" => i, "xs" => [i, i * 1.5]}}
      end

      for task <- specials, do: assert(Task.await(task, 30_000) == {:ok, [[[1.0, :nan]]]})
      assert node in Node.list(:hidden)
    end
  end

  describe "atoms" do
    test "Cyrillic atom round trip", %{node: node} do
      assert {:ok, :привет} = echo(node, :привет)
    end

    test "255 Cyrillic letters round trip", %{node: node} do
      atom = String.to_atom(String.duplicate("я", 255))
      assert {:ok, ^atom} = echo(node, atom)
      assert {:ok, ^atom} = Pool.fixture(node, "cyrillic_atom", [255])
    end

    test "a 256-letter atom from Python is an error", %{node: node} do
      assert {:error, error} = Pool.fixture(node, "cyrillic_atom", [256])
      assert %{kind: :encode_error, message: message, retryable: false} = error
      assert message =~ "256"
      assert {:ok, :still_serving} = echo(node, :still_serving)
    end
  end

  describe "lists" do
    test "Python sees lists and terms come back identical", %{node: node} do
      values = [[1, 2, 3], ~c"abc", [256, 1], []]
      assert {:ok, typed} = Pool.fixture(node, "echo_types", values)
      assert Enum.map(typed, &hd/1) == ["list", "list", "list", "list"]

      for value <- values do
        assert {:ok, back} = echo(node, value)
        assert :erlang.term_to_binary(back) == :erlang.term_to_binary(value)
      end
    end
  end

  describe "strings and bytes" do
    test "UTF-8 becomes str and other binaries bytes", %{node: node} do
      assert {:ok, [["str", "héllo"], ["bytes", <<0xFF, 0xFE>>]]} =
               Pool.fixture(node, "echo_types", ["héllo", <<0xFF, 0xFE>>])

      assert {:ok, "héllo"} = echo(node, "héllo")
      assert {:ok, <<0xFF, 0xFE>>} = echo(node, <<0xFF, 0xFE>>)
    end
  end

  describe "floats" do
    test "bit-exact round trip", %{node: node} do
      <<negative_zero::float>> = <<0x80, 0, 0, 0, 0, 0, 0, 0>>

      for value <- [negative_zero, 5.0e-324, 1.7976931348623157e308] do
        assert {:ok, back} = echo(node, value)
        assert <<back::float>> == <<value::float>>
      end
    end
  end

  describe "nesting depth" do
    defp nested(0, acc), do: acc
    defp nested(n, acc), do: nested(n - 1, [acc])

    # A list nested n levels deep: [] is one level, [[]] two.
    defp nested(depth), do: nested(depth - 1, [])

    test "argument at the limit and at limit + 1", %{node: node} do
      assert {:ok, back} = echo(node, nested(255))
      assert back == nested(255)
      # The argument list around the value adds one level.
      assert {:error, %{kind: :too_deep, retryable: false}} = echo(node, nested(256))
    end

    test "argument 10,000 deep gives too_deep and the worker serves on", %{node: node} do
      {:ok, pids_before} = pids(node)
      assert {:error, %{kind: :too_deep, message: message}} = echo(node, nested(10_000))
      assert message =~ "256"
      assert {:ok, :after} = echo(node, :after)
      assert {:ok, ^pids_before} = pids(node)
    end

    test "Python result at the limit and at limit + 1", %{node: node} do
      assert {:ok, back} = Pool.fixture(node, "nested_list", [256])
      assert back == nested(256)
      assert {:error, %{kind: :too_deep}} = Pool.fixture(node, "nested_list", [257])
    end

    test "Python result 100,000 deep gives too_deep", %{node: node} do
      {:ok, pids_before} = pids(node)

      assert {:error, %{kind: :too_deep, retryable: false}} =
               Pool.fixture(node, "nested_list", [100_000])

      assert {:ok, :after} = echo(node, :after)
      assert {:ok, ^pids_before} = pids(node)
    end
  end

  # The pids of both workers of the pool: two concurrent calls that each hold a worker briefly.
  defp pids(node) do
    tasks = for _ <- 1..2, do: Task.async(fn -> Pool.fixture(node, "pid_after", [0.3]) end)

    {:ok,
     tasks
     |> Enum.map(&Task.await(&1, 10_000))
     |> Enum.map(fn {:ok, pid} -> pid end)
     |> Enum.sort()}
  end

  describe "large binaries" do
    test "10 MB round trip byte-exact", %{node: node} do
      data = :crypto.strong_rand_bytes(10_000_000)
      assert {:ok, back} = echo(node, data)
      assert byte_size(back) == byte_size(data)
      assert back == data
    end

    test "100 MB round trip byte-exact", %{node: node} do
      data = :crypto.strong_rand_bytes(100_000_000)
      assert {:ok, ["bytes", 100_000_000]} = Pool.fixture(node, "binary_info", [data], [], 60_000)
      assert {:ok, back} = echo(node, data, 60_000)
      assert byte_size(back) == byte_size(data)
      assert :crypto.hash(:sha256, back) == :crypto.hash(:sha256, data)
    end

    test "one byte over the message limit gives too_large", %{node: node} do
      data = :binary.copy(<<0xFF>>, @message_limit + 1)
      assert {:error, error} = echo(node, data, 60_000)
      assert %{kind: :too_large, retryable: false, message: message} = error
      assert message =~ Integer.to_string(@message_limit)
      assert {:ok, :after} = echo(node, :after)
      assert node in Node.list(:hidden)
    end
  end
end

