#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Integration tests of the daemon's metrics, health endpoints and telemetry:
# test/integration/obs_*_test.exs, run by a plain distributed `elixir`. They use a real epmd, real
# Elixir nodes, the real snakepit-worker with the Python fixtures of test/fixtures/python,
# promtool, and a Prometheus server that the tests start on loopback. Extra arguments name test
# files (FILE or FILE:LINE).
# Prints "observability: N passed, N failed" last and exits non-zero on failure.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)

for tool in promtool prometheus; do
    if ! command -v "$tool" >/dev/null; then
        echo "observability: $tool is not installed (Debian package prometheus)" >&2
        echo "observability: 0 passed, 1 failed"
        exit 1
    fi
done
if [ $# -eq 0 ]; then
    set -- "$root"/test/integration/obs_*_test.exs
fi
exec "$root/test/integration/run_suite.sh" observability "$@"
