# SPDX-License-Identifier: Apache-2.0
#
# Helpers for the observability tests: the daemon with its HTTP endpoint on a free loopback port,
# raw HTTP requests over :gen_tcp, the /metrics page as samples, JSON checked by /usr/bin/python3,
# and a real Prometheus server. Raw requests let the tests control every byte they send.

defmodule Snakepit.Test.Obs do
  alias Snakepit.Test.{Daemon, OsProcess, Pool, Redis}

  @python "/usr/bin/python3"

  @doc """
  Start the daemon with the config `ini` (see `Pool.start_daemon!/2`) and its HTTP endpoint on
  a free loopback port. Returns `{daemon, http_port}`.
  """
  def start_daemon!(ini, opts \\ []) do
    port = Redis.free_port()
    args = ["--http", "127.0.0.1:#{port}"] ++ Keyword.get(opts, :args, [])
    daemon = Pool.start_daemon!(ini, Keyword.put(opts, :args, args))
    {daemon, port}
  end

  @doc "INI text of a pool of `size` workers that allows pool_fixtures, operator and time."
  def ini(size, settings \\ []) do
    Pool.pool_ini([size: size] ++ settings, """
    [library operator]
    module = operator

    [library time]
    module = time
    """)
  end

  @doc """
  Send `request` (iodata) on a new connection and read until the server closes it or `timeout`
  ms pass. Returns `{:ok, status, body}`, `{:closed, bytes_read}` when the server closed without
  a status line, `:reset` when it reset the connection before any byte arrived, or
  `{:error, reason}` when the connection failed.
  """
  def raw_request(port, request, timeout \\ 5000) do
    case :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false], timeout) do
      {:ok, socket} ->
        result =
          case :gen_tcp.send(socket, request) do
            :ok -> read_response(socket, "", deadline(timeout))
            {:error, reason} -> read_after_send_error(socket, reason)
          end

        :gen_tcp.close(socket)
        result

      {:error, reason} ->
        {:error, reason}
    end
  end

  # A server that rejects a request early may close before the client finished sending, but
  # its response can still be in the socket's receive buffer.
  defp read_after_send_error(socket, reason) do
    case read_response(socket, "", deadline(1000)) do
      {:closed, ""} -> {:error, {:send, reason}}
      :reset -> {:error, {:send, reason}}
      other -> other
    end
  end

  defp deadline(timeout), do: System.monotonic_time(:millisecond) + timeout

  defp read_response(socket, acc, deadline) do
    left = max(deadline - System.monotonic_time(:millisecond), 0)

    case :gen_tcp.recv(socket, 0, left) do
      {:ok, data} -> read_response(socket, acc <> data, deadline)
      {:error, :econnreset} when acc == "" -> :reset
      {:error, _} -> parse_response(acc)
    end
  end

  defp parse_response(data) do
    case Regex.run(~r/\AHTTP\/1\.[01] (\d{3})[^\r\n]*\r\n(.*?)\r\n\r\n(.*)\z/s, data) do
      [_, status, _headers, body] -> {:ok, String.to_integer(status), body}
      nil -> {:closed, data}
    end
  end

  @doc "GET `path` with a well-formed HTTP/1.1 request: `{status, body}`."
  def get(port, path, timeout \\ 5000) do
    request = "GET #{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    {:ok, status, body} = raw_request(port, request, timeout)
    {status, body}
  end

  @doc """
  Wait until `count` workers of `pool` are idle, read from the snakepit_workers gauge: READY
  comes with the first worker of each pool, and the others may still be starting.
  """
  def await_idle(port, count, pool \\ "default") do
    idle = fn -> sample_sum(scrape(port), "snakepit_workers", pool: pool, state: "idle") end

    Pool.wait_until(fn -> idle.() == count end, 10_000) ||
      raise "pool #{pool} has #{idle.()} idle workers, expected #{count}"
  end

  @doc "The /metrics page."
  def scrape(port) do
    {200, body} = get(port, "/metrics")
    body
  end

  @doc """
  Sum of the samples of `name` on the page `text` whose labels include every pair of `labels`
  (a keyword list or map of strings).
  """
  def sample_sum(text, name, labels \\ []) do
    text
    |> String.split("\n")
    |> Enum.flat_map(&parse_sample(&1, name))
    |> Enum.filter(fn {sample_labels, _} ->
      Enum.all?(labels, fn {k, v} -> sample_labels[to_string(k)] == v end)
    end)
    |> Enum.map(fn {_, value} -> value end)
    |> Enum.sum()
  end

  defp parse_sample(line, name) do
    case Regex.run(~r/^#{name}(?:\{(.*)\})? (\S+)$/, line) do
      [_, labels, value] -> [{parse_labels(labels), parse_number(value)}]
      _ -> []
    end
  end

  defp parse_labels(text) do
    Regex.scan(~r/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/, text)
    |> Map.new(fn [_, k, v] -> {k, v} end)
  end

  defp parse_number(text) do
    case Float.parse(text) do
      {value, ""} -> value
      _ -> raise "the sample value #{inspect(text)} is not a number"
    end
  end

  @doc """
  Run a Python snippet on `input` (given as sys.argv[1]) with /usr/bin/python3: `{output,
  exit_status}`.
  """
  def python(code, input) do
    System.cmd(@python, ["-c", code, input], stderr_to_stdout: true)
  end

  @doc """
  Metric names in the text of `file`: words starting with snakepit_ or process_ that are not
  part of a recording rule's name (level:metric:operation).
  """
  def metric_names_in(file) do
    Regex.scan(~r/(?:^|[^:A-Za-z0-9_])((?:snakepit|process)_[A-Za-z0-9_]+)/m, File.read!(file))
    |> Enum.map(fn [_, name] -> name end)
    |> Enum.uniq()
    |> Enum.sort()
  end

  @doc "Whether the page `text` has a sample or a TYPE line of the metric `name`."
  def exported?(text, name) do
    Regex.match?(~r/^(#{name}[{ ]|# TYPE #{name} )/m, text)
  end

  @doc """
  Start a Prometheus server on a free loopback port that scrapes `target` ("host:port") every
  second, with its config and storage in a fresh temporary directory. It is stopped by its pid
  when the test ends. Returns its HTTP port.
  """
  def start_prometheus!(target) do
    binary = System.find_executable("prometheus") || raise "prometheus is not installed"
    dir = Path.join(System.tmp_dir!(), "snakepit-prom-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    config = Path.join(dir, "prometheus.yml")

    File.write!(config, """
    global:
      scrape_interval: 1s
      evaluation_interval: 1s
    scrape_configs:
      - job_name: snakepit
        static_configs:
          - targets: ['#{target}']
    """)

    port = Redis.free_port()

    args = [
      "--config.file=#{config}",
      "--storage.tsdb.path=#{Path.join(dir, "data")}",
      "--web.listen-address=127.0.0.1:#{port}"
    ]

    proc = OsProcess.start(binary, args)

    ExUnit.Callbacks.on_exit(fn ->
      OsProcess.stop(proc)
      File.rm_rf!(dir)
    end)

    case OsProcess.await_line(proc, ~r/Server is ready to receive web requests/, 20_000) do
      {:ok, _} ->
        port

      other ->
        raise "prometheus did not start: #{inspect(other)} #{inspect(OsProcess.lines(proc))}"
    end
  end

  @doc """
  Run the PromQL `query` through Prometheus' HTTP API: the value of the first sample as a float,
  or nil when the result is empty.
  """
  def promql(port, query) do
    body = "query=" <> URI.encode_www_form(query)

    request =
      "POST /api/v1/query HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" <>
        "Content-Type: application/x-www-form-urlencoded\r\n" <>
        "Content-Length: #{byte_size(body)}\r\n\r\n" <> body

    {:ok, 200, response} = raw_request(port, request)

    code = """
    import json, sys
    text = sys.argv[1]
    # The response may be sent with chunked transfer encoding.
    start, end = text.find("{"), text.rfind("}")
    doc = json.loads(text[start:end + 1])
    assert doc["status"] == "success", doc
    result = doc["data"]["result"]
    print(result[0]["value"][1] if result else "none")
    """

    {out, 0} = python(code, response)

    case String.trim(out) do
      "none" -> nil
      value -> parse_number(value)
    end
  end

  @doc "The daemon's log lines that match `regex`."
  def log_lines(daemon, regex), do: Enum.filter(Daemon.lines(daemon), &Regex.match?(regex, &1))
end
