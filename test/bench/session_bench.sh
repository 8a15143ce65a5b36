#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Benchmark session calls against a plain ping, in one run. It measures p50/p95/p99 of :ping and
# of session put and get on a memory daemon and on a Redis daemon, and Redis's own GET latency as
# the floor. It also reads the resident memory that 100,000 small sessions take in the memory
# store. Prints a table with the targets. This is a program that prints numbers, not a test: it is not part of
# test/suites. It starts its own redis-server and daemons and stops each by its pid.
#
# Usage: test/bench/session_bench.sh [CALLS [SESSIONS]]
#   CALLS     calls per latency series (default 10000, at least 5000 for the documented numbers)
#   SESSIONS  sessions created for the memory reading (default 100000)
# Environment: SNAKEPIT_BUILD_DIR (default build).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
build=${SNAKEPIT_BUILD_DIR:-$root/build}
calls=${1:-10000}
sessions=${2:-100000}

echo "command: $0 $*"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')," \
    "$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "redis: $(redis-server --version | awk '{ print $3 }')"

if [ ! -x "$build/cnode/snakepit-cnode" ]; then
    echo "session_bench: $build/cnode/snakepit-cnode is missing;" \
        "build with: meson setup build && ninja -C build" >&2
    exit 1
fi
for tool in redis-server redis-benchmark; do
    if ! command -v "$tool" >/dev/null; then
        echo "session_bench: $tool is not on PATH" >&2
        exit 1
    fi
done

# epmd has no pid file, so one started here is left running, as the test suites do.
if ! epmd -names >/dev/null 2>&1; then
    epmd -daemon
    for _ in $(seq 50); do
        epmd -names >/dev/null 2>&1 && break
        sleep 0.1
    done
fi

cookie=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
SNAKEPIT_CNODE=$build/cnode/snakepit-cnode \
BENCH_REDIS_SERVER=$(command -v redis-server) \
BENCH_REDIS_BENCHMARK=$(command -v redis-benchmark) \
BENCH_CALLS=$calls \
BENCH_SESSIONS=$sessions \
    exec elixir --sname "session_bench_$$" --cookie "$cookie" "$root/test/bench/session_bench.exs"
