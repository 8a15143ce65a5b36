#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Run chaos scenarios (all of chaos/scenarios/*.sh, or the ones named) one after the other and
# count them. Each scenario starts and cleans up its own daemon; this runner only makes sure
# epmd runs and stops an epmd it started.
#
#   chaos/run.sh [--budget SECONDS] [SCENARIO...]
#
# A scenario that would start after the budget is spent counts as failed, so a slow run is
# never mistaken for a green one. Exit status: 0 when none failed.
set -u
here=$(cd "$(dirname "$0")" && pwd)
budget=${CHAOS_BUDGET_S:-600}
if [ "${1:-}" = --budget ]; then
    budget=$2
    shift 2
fi
if [ $# -eq 0 ]; then
    set -- daemon_kill worker_stop worker_kill zygote_kill peer_stop
fi

epmd_pid=
if ! epmd -names >/dev/null 2>&1; then
    epmd &
    epmd_pid=$!
    for _ in $(seq 50); do epmd -names >/dev/null 2>&1 && break; sleep 0.1; done
fi
trap '[ -n "$epmd_pid" ] && kill "$epmd_pid" 2>/dev/null' EXIT

passed=0
failed=0
skipped=0
started=$SECONDS
for scenario in "$@"; do
    script=$here/scenarios/$scenario.sh
    if [ ! -f "$script" ]; then
        echo "FAIL $scenario: no such scenario ($script)"
        failed=$((failed + 1))
        continue
    fi
    left=$((budget - (SECONDS - started)))
    if [ "$left" -le 0 ]; then
        echo "FAIL $scenario: not run, the time budget of $budget s is spent"
        failed=$((failed + 1))
        continue
    fi
    per=$((left < 120 ? left : 120))
    echo "=== chaos $scenario (time limit $per s)"
    timeout --signal=TERM --kill-after=10 "$per" bash "$script"
    rc=$?
    case $rc in
    0) passed=$((passed + 1)) ;;
    77) skipped=$((skipped + 1)) ;;
    124) echo "FAIL $scenario: timed out after $per s"; failed=$((failed + 1)) ;;
    *) failed=$((failed + 1)) ;;
    esac
done
echo "chaos: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
