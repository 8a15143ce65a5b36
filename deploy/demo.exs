# The demo program of deploy/demo.sh: an Elixir node calling pandas, numpy and the standard
# library through the snakepit C node with plain GenServer.call. pandas reads the iris CSV file
# that Debian's python3-sklearn ships; scikit-learn itself is not called.
[node_arg] = System.argv()
node = String.to_atom(node_arg)
server = {:snakepit, node}

call = fn command, args ->
  case GenServer.call(server, {:execute, command, args, [timeout: 20_000]}, 25_000) do
    {:ok, result} ->
      result

    {:error, error} ->
      IO.puts(:stderr, "#{command} failed: #{inspect(error, pretty: true)}")
      System.halt(1)
  end
end

true = Node.connect(node)
{:ok, info} = GenServer.call(server, :info)
IO.puts("Connected to #{info.node} (snakepit #{info.version})")

# The iris data set as Debian's python3-sklearn ships it: a count line, then 150 rows.
iris = "/usr/lib/python3/dist-packages/sklearn/datasets/data/iris.csv"

frame =
  call.("python.pandas.read_csv", %{
    filepath_or_buffer: iris,
    skiprows: 1,
    header: nil,
    names: ["sepal_length", "sepal_width", "petal_length", "petal_width", "species"]
  })

IO.puts("pandas.read_csv(#{iris}) returned #{length(frame)} rows; the first two:")
frame |> Enum.take(2) |> Enum.each(&IO.puts("  #{inspect(&1)}"))

matrix = [[2.0, 1.0], [1.0, 3.0]]
IO.puts("numpy.linalg.det(#{inspect(matrix)}) = #{call.("python.numpy.linalg.det", [matrix])}")
IO.puts("numpy.linalg.inv(#{inspect(matrix)}) = #{inspect(call.("python.numpy.linalg.inv", [matrix]))}")

lengths = [5.1, 4.9, 4.7, 4.6, 5.0]
IO.puts("statistics.mean(#{inspect(lengths)}) = #{call.("python.statistics.mean", [lengths])}")
IO.puts("statistics.stdev(#{inspect(lengths)}) = #{call.("python.statistics.stdev", [lengths])}")
