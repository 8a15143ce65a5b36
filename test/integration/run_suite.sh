#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Run ExUnit files of test/integration with a plain distributed `elixir` as suite NAME, then
# check that no process of the run is left behind (each one left counts as one more failure).
# Usage: run_suite.sh NAME TEST_FILE...   Prints "NAME: N passed, N failed" last.
set -u
name=$1
shift
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${SNAKEPIT_BUILD_DIR:-$root/build}
daemon=$build/cnode/snakepit-cnode
worker=${SNAKEPIT_WORKER_BINARY:-$build/cnode/snakepit-worker}

for binary in "$daemon" "$worker"; do
    if [ ! -x "$binary" ]; then
        echo "$name: $binary is missing; build with: meson setup build && ninja -C build" >&2
        echo "$name: 0 passed, 1 failed"
        exit 1
    fi
done

# epmd has no pid file, so an epmd started here is left running. test/run_all.sh starts one
# for its run unless one already runs, and stops it at the end.
if ! epmd -names >/dev/null 2>&1; then
    epmd -daemon
    for _ in $(seq 50); do
        epmd -names >/dev/null 2>&1 && break
        sleep 0.1
    done
fi

cookie=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
# Every process this run starts inherits this marker, so the check below finds any left behind.
run_marker="SNAKEPIT_TEST_RUN=$name-$$-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
log=$(mktemp)
summary="^$name: [0-9]+ passed, [0-9]+ failed\$"
# The runner's own summary line goes only to the log, because the line echoed at the end also
# counts the processes left behind.
env "$run_marker" SNAKEPIT_SUITE="$name" SNAKEPIT_CNODE="$daemon" SNAKEPIT_WORKER_BINARY="$worker" \
    elixir --sname "${name}_runner_$$" --cookie "$cookie" \
    "$root/test/integration/run.exs" "$@" 2>&1 | tee "$log" | grep --line-buffered -vE "$summary"
rc=${PIPESTATUS[0]}
counts=$(grep -E "$summary" "$log" | tail -n 1)
rm -f "$log"
if [ -z "$counts" ]; then
    counts="$name: 0 passed, 1 failed"
    rc=1
fi

# Processes of this run that still run. Zombies do not count because the init process reaps them.
sleep 1
leftovers=()
for environ in /proc/[0-9]*/environ; do
    pid=${environ#/proc/}
    pid=${pid%/environ}
    state=$(awk '{ sub(/.*\) /, ""); print $1 }' "/proc/$pid/stat" 2>/dev/null) || continue
    if [ "$state" != Z ] && { tr '\0' '\n' <"$environ"; } 2>/dev/null | grep -qxF "$run_marker"; then
        leftovers+=("$pid")
    fi
done
if [ ${#leftovers[@]} -ne 0 ]; then
    echo "$name: processes of this run left behind:" >&2
    for pid in "${leftovers[@]}"; do
        echo "  $pid $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" >&2
        kill -KILL "$pid" 2>/dev/null
    done
    passed=$(sed -E "s/^$name: ([0-9]+) passed.*/\\1/" <<<"$counts")
    failed=$(sed -E 's/.* ([0-9]+) failed$/\1/' <<<"$counts")
    counts="$name: $passed passed, $((failed + 1)) failed"
    rc=1
fi
echo "$counts"
exit "$rc"
