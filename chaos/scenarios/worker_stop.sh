#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# SIGSTOP one worker under load. The daemon detects heartbeat_misses missed heartbeats, kills
# and replaces it, and every call still gets one reply (the call it was running: worker_crashed).
set -u
source "$(dirname "$0")/../lib.sh"
chaos_init worker_stop
start_daemon "chaos_stop_$$" "[pool default]
size = 2
heartbeat_interval_ms = 200
heartbeat_misses = 3

[library time]
module = time"
wait_pool_full 2

client_bg "$chaos_work/load.out" "$chaos_node" load 4 40 python.time.sleep "[0.05]" 10000
wait_for 100 grep -q '^reply ' "$chaos_work/load.out" || fail "no call was answered: $(cat "$chaos_work/load.out")"
victim=$(logged_pids worker | head -n 1)
[ -n "$victim" ] || fail "no worker pid in the daemon log"
track "$victim"
kill -STOP "$victim"
stopped_at=$EPOCHREALTIME
detected() { grep -q "killing worker [0-9]* (pid $victim) .*stopped answering heartbeats" "$chaos_work/daemon.log"; }
wait_for 30 detected || fail "worker $victim stopped with SIGSTOP was not killed within 3 s"
detect_ms=$(bc <<<"($EPOCHREALTIME - $stopped_at) * 1000 / 1")
wait_for 20 test ! -e "/proc/$victim" || fail "worker $victim is still there after it was killed"

wait "$client_pid"
summary=$(grep '^summary' "$chaos_work/load.out")
[ -n "$summary" ] || fail "the load client printed no summary: $(tail -n 5 "$chaos_work/load.out")"
grep -q 'calls=160 ' <<<"$summary" || fail "expected 160 calls: $summary"
grep -q 'missing=0 duplicates=0' <<<"$summary" || fail "calls without exactly one answer: $summary"
bad=$(grep '^reply .* error ' "$chaos_work/load.out" | grep -v ' error worker_crashed ')
[ -z "$bad" ] || fail "errors other than worker_crashed: $bad"
crashed=$(grep -c ' error worker_crashed ' "$chaos_work/load.out")
[ "$crashed" -le 1 ] || fail "$crashed calls failed, at most the stopped worker's call may"
wait_for 50 info_is idle 2 || fail "the pool did not get back to 2 idle workers: $(client "$chaos_node" info)"
pass "stopped worker killed after ${detect_ms} ms; $summary"
