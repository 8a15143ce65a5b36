#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Benchmark concurrent :ping callers on one connection: calls/s, and the daemon's on-CPU time and
# write syscalls per call. BASELINE (a snakepit-cnode binary, for example one built from the
# commit before a change) runs in alternating rounds with this build. A program that prints
# numbers, not a test: it is not part of test/suites.
#
# Usage: test/bench/burst_bench.sh [CALLERS [CALLS [ROUNDS [BASELINE]]]]
#   defaults: 16 callers, 200000 pings per round, 3 rounds, no baseline
# Environment: SNAKEPIT_BUILD_DIR (default build).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
build=${SNAKEPIT_BUILD_DIR:-$root/build}

echo "command: $0 $*"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"

if [ ! -x "$build/cnode/snakepit-cnode" ]; then
    echo "burst_bench: $build/cnode/snakepit-cnode is missing;" \
        "build with: meson setup build && ninja -C build" >&2
    exit 1
fi
baseline=${4:-}
if [ -n "$baseline" ] && [ ! -x "$baseline" ]; then
    echo "burst_bench: the baseline $baseline is not an executable" >&2
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

cookie=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
SNAKEPIT_CNODE=$build/cnode/snakepit-cnode \
BENCH_BASELINE_CNODE=$baseline \
BENCH_CALLERS=${1:-16} \
BENCH_CALLS=${2:-200000} \
BENCH_ROUNDS=${3:-3} \
    exec elixir --sname "burst_bench_$$" --cookie "$cookie" "$root/test/bench/burst_bench.exs"
