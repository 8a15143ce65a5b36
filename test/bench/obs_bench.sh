#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Benchmark the cost of observability, in one run: the p50 of a trivial call with metrics and
# telemetry on (HTTP endpoint scraped every second, one subscriber to every event) against the
# same build with them off ([http] listen = off, [node] telemetry = false), and the time to
# serve /metrics with 4 pools and 100 commands in each. Prints numbers; it is not a test and
# not part of test/suites.
#
# Usage: test/bench/obs_bench.sh [CALLS [ROUNDS [RENDERS]]]
#   CALLS    calls per daemon per round (default 2000)
#   ROUNDS   alternating rounds (default 10)
#   RENDERS  GET /metrics requests timed (default 500)
# Environment: SNAKEPIT_BUILD_DIR (default build); BENCH_PIN=1 runs this Elixir node on CPU 0
# and the daemons with their workers on CPU 1 (taskset), which narrows the spread between
# daemons that the kernel would otherwise place differently.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
build=${SNAKEPIT_BUILD_DIR:-$root/build}

echo "command: $0 $*"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')," \
    "$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"

if [ ! -x "$build/cnode/snakepit-cnode" ]; then
    echo "obs_bench: $build/cnode/snakepit-cnode is missing; build with:" \
        "meson setup build && ninja -C build" >&2
    exit 1
fi

# epmd has no pid file, so one started here is left running, as the test suites do.
if ! epmd -names >/dev/null 2>&1; then
    epmd -daemon
    for _ in $(seq 50); do
        epmd -names >/dev/null 2>&1 && break
        sleep 0.1
    done
fi

daemon=$build/cnode/snakepit-cnode
pin=()
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ "${BENCH_PIN:-0}" = 1 ]; then
    # exec keeps the pid, so the benchmark still stops each daemon by its own pid.
    printf '#!/bin/sh\nexec taskset -c 1 %q "$@"\n' "$daemon" >"$tmp/pinned-cnode"
    chmod +x "$tmp/pinned-cnode"
    daemon=$tmp/pinned-cnode
    pin=(taskset -c 0)
fi
echo "pinned: ${BENCH_PIN:-0}"

cookie=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
SNAKEPIT_CNODE=$daemon \
BENCH_CALLS=${1:-2000} \
BENCH_ROUNDS=${2:-10} \
BENCH_RENDERS=${3:-500} \
    "${pin[@]}" elixir --sname "obs_bench_$$" --cookie "$cookie" "$root/test/bench/obs_bench.exs"
