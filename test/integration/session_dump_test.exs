# SPDX-License-Identifier: Apache-2.0
#
# The {:session, :dump, id} request on both stores (memory and a real redis-server): its reply,
# its bad inputs, and that it is not an access. The limits against the message size are in
# test/suites/migrate.sh.

defmodule Snakepit.Test.SessionDumpCases do
  @moduledoc "The same dump tests for each store backend."

  defmacro __using__(backend: backend) do
    quote do
      use ExUnit.Case, async: false
      alias Snakepit.Test.{Pool, Redis}

      setup_all do
        store =
          case unquote(backend) do
            :memory -> "backend = memory"
            :redis -> "backend = redis\nurl = #{Redis.start_linked!().url}"
          end

        daemon = Pool.start_daemon!(Pool.pool_ini([size: 1], "[store]\n#{store}\n"))
        %{node: daemon.node}
      end

      defp call(node, request), do: GenServer.call({:snakepit, node}, request, 5000)

      defp assert_bad_request(reply) do
        assert {:error, %{kind: :bad_request, message: message}} = reply
        assert message =~ "{:session, :dump, ...}"
      end

      test "dump returns session and decoded variables", %{node: node} do
        {:ok, session} = call(node, {:session, :create, "d1", [ttl: 60, owner: nil]})
        value = %{"nested" => [[1, 2.5], {:tuple, -3}], atom: :yes, float: -0.0}
        :ok = call(node, {:session, :put, "d1", "v", value})
        :ok = call(node, {:session, :put, "d1", "raw", <<255, 0, 1>>})

        assert {:ok, %{session: dumped, vars: vars}} = call(node, {:session, :dump, "d1"})
        assert Map.drop(dumped, [:accessed_ms]) == Map.drop(session, [:accessed_ms])
        assert vars == %{"v" => value, "raw" => <<255, 0, 1>>}
      end

      test "dump is not an access", %{node: node} do
        {:ok, _} = call(node, {:session, :create, "d2", []})
        {:ok, %{session: before}} = call(node, {:session, :dump, "d2"})
        Process.sleep(30)

        {:ok, %{session: later}} = call(node, {:session, :dump, "d2"})
        assert later.accessed_ms == before.accessed_ms
        {:ok, touched} = call(node, {:session, :get, "d2"})
        assert touched.accessed_ms > before.accessed_ms
      end

      test "dump of unknown session is not found", %{node: node} do
        assert {:error, %{kind: :session_not_found, message: message}} =
                 call(node, {:session, :dump, "missing"})

        assert message =~ "missing"
      end

      test "dump id of 256 bytes is valid", %{node: node} do
        id = String.duplicate("i", 256)
        {:ok, _} = call(node, {:session, :create, id, []})
        assert {:ok, %{session: %{id: ^id}, vars: %{}}} = call(node, {:session, :dump, id})
      end

      test "dump id of 257 bytes is rejected", %{node: node} do
        assert_bad_request(call(node, {:session, :dump, String.duplicate("i", 257)}))
      end

      test "dump id of wrong types is rejected", %{node: node} do
        for id <- [42, {:id}, ["d1"], 1.5, self()] do
          assert_bad_request(call(node, {:session, :dump, id}))
        end
      end

      test "dump with extra argument is rejected", %{node: node} do
        {:ok, _} = call(node, {:session, :create, "d3", []})
        assert_bad_request(call(node, {:session, :dump, "d3", "name"}))
        assert {:error, %{kind: :bad_request}} = call(node, {:session, :dump})
        assert {:ok, %{session: %{id: "d3"}}} = call(node, {:session, :dump, "d3"})
      end
    end
  end
end

defmodule Snakepit.Test.SessionDumpMemoryTest do
  use Snakepit.Test.SessionDumpCases, backend: :memory
end

defmodule Snakepit.Test.SessionDumpRedisTest do
  use Snakepit.Test.SessionDumpCases, backend: :redis
end
