#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Benchmark of the C node core against two baselines measured in the same run: a blocking echo
# C node (echo_cnode.c) and a trivial GenServer on a second BEAM node. Prints a table and the
# ratios to the echo floor. A program that prints numbers, not a test.
#   test/bench/core_bench.sh            (BENCH_ROUNDS, BENCH_SAMPLES, BENCH_WINDOW_MS tune it)
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${SNAKEPIT_BUILD_DIR:-$root/build}

if [ ! -d "$build" ]; then
    meson setup "$build"
fi
ninja -C "$build" cnode/snakepit-cnode test/bench/echo_cnode >/dev/null

# epmd has no pid file: it is started when missing and left running.
if ! epmd -names >/dev/null 2>&1; then
    epmd -daemon
    for _ in $(seq 50); do
        epmd -names >/dev/null 2>&1 && break
        sleep 0.1
    done
fi

cookie=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
SNAKEPIT_CNODE=$build/cnode/snakepit-cnode SNAKEPIT_ECHO_CNODE=$build/test/bench/echo_cnode \
    exec elixir --sname "bench_$$" --cookie "$cookie" "$root/test/bench/core_bench.exs"
