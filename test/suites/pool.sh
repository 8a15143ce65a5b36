#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Integration tests of the worker pool and the sessions: test/integration/pool_*_test.exs and
# session_*_test.exs, run by a plain distributed `elixir`. They use a real epmd, real Elixir nodes,
# the real snakepit-worker with the Python fixtures of test/fixtures/python, and a redis-server
# that the tests start on loopback. Extra arguments name test files (FILE or FILE:LINE).
# Prints "pool: N passed, N failed" last and exits non-zero on failure.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)

if ! command -v redis-server >/dev/null; then
    echo "pool: redis-server is not installed (Debian package redis-server)" >&2
    echo "pool: 0 passed, 1 failed"
    exit 1
fi
if [ $# -eq 0 ]; then
    set -- "$root"/test/integration/pool_*_test.exs "$root"/test/integration/session_*_test.exs
fi
exec "$root/test/integration/run_suite.sh" pool "$@"
