import Config

# The client connects to no daemon unless the host application lists its nodes, for example:
#
#     config :snakepit, nodes: [:"snakepit@app-host"], python_libraries: [...]
#
# Tests start their own daemons and configure the application at run time.
if config_env() == :test do
  config :logger, level: :warning
end
