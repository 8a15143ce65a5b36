#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Benchmark the worker pool against its floor and against hand-written baselines, in one run:
# call latency (echo C node + socketpair floor, a plain Port to python3), calls/s, the start of
# 8 workers with numpy and pandas preloaded, worker memory (PSS), and a 10 MB round trip.
# Prints a table of numbers with their units and the ratios against the targets. This is a
# program that prints numbers, not a test: it is not part of test/suites.
#
# Usage: test/bench/pool_bench.sh [CALLS [STARTS]]
#   CALLS   calls per latency series (default 10000, at least 5000 for the documented numbers)
#   STARTS  repetitions of each start measurement (default 5); medians are printed
# Environment: SNAKEPIT_BUILD_DIR (default build), BENCH_PYTHON (default /usr/bin/python3).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
build=${SNAKEPIT_BUILD_DIR:-$root/build}
calls=${1:-10000}
starts=${2:-5}

echo "command: $0 $*"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')," \
    "$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE-<unset>}"

for exe in cnode/snakepit-cnode cnode/snakepit-worker test/bench/bench_socketpair_floor \
           test/bench/echo_cnode; do
    if [ ! -x "$build/$exe" ]; then
        echo "pool_bench: $build/$exe is missing; build with: meson setup build && ninja -C build" >&2
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
BENCH_FLOOR=$build/test/bench/bench_socketpair_floor \
BENCH_ECHO_CNODE=$build/test/bench/echo_cnode \
BENCH_PORT_WORKER=$root/test/bench/port_worker.py \
BENCH_PYTHON=${BENCH_PYTHON:-/usr/bin/python3} \
BENCH_CALLS=$calls \
BENCH_STARTS=$starts \
    exec elixir --sname "pool_bench_$$" --cookie "$cookie" "$root/test/bench/pool_bench.exs"
