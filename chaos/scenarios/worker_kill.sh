#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# kill -9 a busy worker while 6 callers share 3 workers: each call gets exactly one reply
# (the killed worker's call: worker_crashed), and the pool forks a replacement.
set -u
source "$(dirname "$0")/../lib.sh"
chaos_init worker_kill
start_daemon "chaos_wkill_$$" "[pool default]
size = 3

[library time]
module = time"
wait_pool_full 3

client_bg "$chaos_work/load.out" "$chaos_node" load 6 30 python.time.sleep "[0.1]" 10000
wait_for 100 grep -q '^reply ' "$chaos_work/load.out" || fail "no call was answered: $(cat "$chaos_work/load.out")"
victim=$(logged_pids worker | head -n 1)
[ -n "$victim" ] || fail "no worker pid in the daemon log"
kill -KILL "$victim"
replaced() { [ "$(logged_pids worker | wc -l)" -ge 4 ]; }
wait_for 50 replaced || fail "no replacement worker was ready within 5 s of killing $victim"

wait "$client_pid"
summary=$(grep '^summary' "$chaos_work/load.out")
[ -n "$summary" ] || fail "the load client printed no summary: $(tail -n 5 "$chaos_work/load.out")"
grep -q 'calls=180 ' <<<"$summary" || fail "expected 180 calls: $summary"
grep -q 'missing=0 duplicates=0' <<<"$summary" || fail "calls without exactly one answer: $summary"
bad=$(grep '^reply .* error ' "$chaos_work/load.out" | grep -v ' error worker_crashed ')
[ -z "$bad" ] || fail "errors other than worker_crashed: $bad"
crashed=$(grep -c ' error worker_crashed ' "$chaos_work/load.out")
[ "$crashed" -le 1 ] || fail "$crashed calls got worker_crashed, only the killed worker's call may"
wait_for 50 info_is idle 3 || fail "the pool did not get back to 3 idle workers: $(client "$chaos_node" info)"
pass "$crashed call(s) got worker_crashed; $summary"
