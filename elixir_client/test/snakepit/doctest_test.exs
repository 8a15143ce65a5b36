defmodule Snakepit.DoctestTest do
  use ExUnit.Case, async: true

  doctest Snakepit
  doctest Snakepit.Error
  doctest Snakepit.Config
  doctest Snakepit.Router
  doctest Snakepit.Telemetry
  doctest Snakepit.CNode
end
