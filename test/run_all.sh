#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Build with meson and run every test suite: Criterion unit tests, pytest, integration tests
# against real epmd/erl/elixir nodes, and the Elixir client's ExUnit tests. Each suite reports
# "N passed, N failed"; the last line adds them up.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
build=${SNAKEPIT_BUILD_DIR:-$root/build}
export SNAKEPIT_BUILD_DIR=$build
cd "$root"

total_passed=0
total_failed=0
failed_suites=()

# Add one suite's counts; a suite that prints no count but fails counts as one failure.
count() {
    local name=$1 log=$2 rc=$3 line p f
    line=$(grep -E '^[A-Za-z_-]*:? ?[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
    if [ -n "$line" ]; then
        p=$(sed -E 's/^[^0-9]*([0-9]+) passed.*/\1/' <<<"$line")
        f=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")
    else
        p=0
        f=0
    fi
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
    fi
    total_passed=$((total_passed + p))
    total_failed=$((total_failed + f))
    if [ "$f" -ne 0 ]; then
        failed_suites+=("$name")
    fi
    echo "suite $name: $p passed, $f failed (exit $rc)"
}

run_suite() {
    local name=$1
    shift
    local log
    log=$(mktemp)
    echo "=== suite $name: $*"
    "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    count "$name" "$log" "$rc"
    rm -f "$log"
}

"$root/deploy/install-deps.sh" || { echo "0 passed, 1 failed"; exit 1; }

# The integration suites need epmd, so start one for this run unless one already responds.
epmd_pid=
if ! epmd -names >/dev/null 2>&1; then
    epmd &
    epmd_pid=$!
    for _ in $(seq 50); do epmd -names >/dev/null 2>&1 && break; sleep 0.1; done
fi
trap '[ -n "$epmd_pid" ] && kill "$epmd_pid" 2>/dev/null' EXIT

if [ ! -d "$build" ]; then
    meson setup "$build" || exit 1
fi
ninja -C "$build" || { echo "0 passed, 1 failed"; exit 1; }

for suite in "$root"/test/suites/*.sh; do
    run_suite "$(basename "$suite" .sh)" bash "$suite"
done

if [ ${#failed_suites[@]} -ne 0 ]; then
    echo "failed suites: ${failed_suites[*]}"
fi
echo "$total_passed passed, $total_failed failed"
[ "$total_failed" -eq 0 ]
