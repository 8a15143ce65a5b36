#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The Elixir client's suite: format check, warning-free compile, then ExUnit against real
# snakepit-cnode daemons started by the tests. ExUnit runs in a distributed node with a cookie
# made for this run. Prints "elixir_client: N passed, N failed" from ExUnit's summary.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
export SNAKEPIT_BUILD_DIR=${SNAKEPIT_BUILD_DIR:-$root/build}
cd "$root/elixir_client" || exit 1

fail() {
    echo "elixir_client: 0 passed, 1 failed"
    exit 1
}

# epmd has no pid file, so it is started only when none responds, and left running.
# test/run_all.sh starts one for its run unless one already runs, and stops it at the end.
# The marker records that this suite started it.
if ! epmd -names >/dev/null 2>&1; then
    epmd -daemon || fail
    mkdir -p "$SNAKEPIT_BUILD_DIR"
    echo "elixir_client" >"$SNAKEPIT_BUILD_DIR/epmd-started-by"
    echo "started epmd (no epmd answered); marker: $SNAKEPIT_BUILD_DIR/epmd-started-by"
fi

mix format --check-formatted || { echo "mix format --check-formatted failed"; fail; }
mix compile --warnings-as-errors || fail
MIX_ENV=test mix compile --warnings-as-errors || fail

run_id="$$_$(date +%s)"
cookie="snakepit_test_$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
out=$(mktemp)
SNAKEPIT_TEST_RUN=$run_id MIX_ENV=test \
    elixir --sname "snakepit_test_$run_id" --cookie "$cookie" -S mix test "$@" 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}

# ExUnit's summary line: "3 doctests, 20 tests, 1 failure, 4 excluded" (parts may be absent).
summary=$(grep -E '^[0-9]+ (doctests?|tests?)' "$out" | tail -n 1)
rm -f "$out"
number() { sed -nE "s/.*(^|, )([0-9]+) $1.*/\2/p" <<<"$summary"; }
doctests=$(number 'doctests?')
tests=$(number 'tests?,')
tests=${tests:-$(number 'tests?$')}
failures=$(number 'failures?')
excluded=$(number 'excluded')
invalid=$(number 'invalid')
total=$(( ${doctests:-0} + ${tests:-0} ))
failed=$(( ${failures:-0} + ${invalid:-0} ))
passed=$(( total - failed - ${excluded:-0} ))
if [ -z "$summary" ] || { [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; }; then
    failed=$((failed + 1))
fi
echo "elixir_client: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
