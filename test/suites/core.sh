#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Integration tests of the C node core against a real epmd and real Elixir nodes: ExUnit files
# in test/integration/, run by a plain distributed `elixir`. Extra arguments name test files.
# Prints "core: N passed, N failed" last and exits non-zero on failure.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${SNAKEPIT_BUILD_DIR:-$root/build}
daemon=$build/cnode/snakepit-cnode

if [ ! -x "$daemon" ]; then
    echo "core: $daemon is missing; build with: meson setup build && ninja -C build" >&2
    echo "core: 0 passed, 1 failed"
    exit 1
fi

# epmd has no pid file, so an epmd started here is left running. test/run_all.sh starts one
# for its run unless one already runs, and stops it at the end.
if ! epmd -names >/dev/null 2>&1; then
    epmd -daemon
    for _ in $(seq 50); do
        epmd -names >/dev/null 2>&1 && break
        sleep 0.1
    done
fi

# With a sanitizer build (SNAKEPIT_BUILD_DIR=build-asan), undefined behaviour stops the daemon
# too, so that a test fails on it.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

cookie=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
log=$(mktemp)
SNAKEPIT_CNODE=$daemon elixir --sname "runner_$$" --cookie "$cookie" \
    "$root/test/integration/run.exs" "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
if ! grep -qE '^core: [0-9]+ passed, [0-9]+ failed$' "$log"; then
    echo "core: 0 passed, 1 failed"
    rc=1
fi
rm -f "$log"
exit "$rc"
