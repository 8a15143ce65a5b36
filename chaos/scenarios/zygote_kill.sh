#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# kill -9 the pool's template process (zygote): the workers it forked keep serving (they are the
# daemon's children and die only with the daemon), a new template starts, and it can fork.
set -u
source "$(dirname "$0")/../lib.sh"
chaos_init zygote_kill
start_daemon "chaos_zkill_$$" "[pool default]
size = 2

[library time]
module = time"
wait_pool_full 2

zygote=$(logged_pids template | tail -n 1)
[ -n "$zygote" ] && [ -e "/proc/$zygote" ] || fail "no running template pid in the daemon log"
mapfile -t workers < <(logged_pids worker)
[ "${#workers[@]}" -eq 2 ] || fail "expected 2 ready workers, the log has ${#workers[@]}"
for w in "${workers[@]}"; do track "$w"; done

client_bg "$chaos_work/load.out" "$chaos_node" load 2 30 python.time.sleep "[0.05]" 10000
wait_for 100 grep -q '^reply ' "$chaos_work/load.out" || fail "no call was answered"
kill -KILL "$zygote"
new_zygote() { local z; z=$(logged_pids template | tail -n 1); [ "$z" != "$zygote" ] && [ -e "/proc/$z" ]; }
wait_for 50 new_zygote || fail "no new template process within 5 s of killing $zygote"

wait "$client_pid"
summary=$(grep '^summary' "$chaos_work/load.out")
grep -q 'calls=60 ok=60 errors=0 missing=0 duplicates=0' <<<"$summary" \
    || fail "calls failed while the template was down: $summary"
for w in "${workers[@]}"; do
    [ -e "/proc/$w" ] || fail "worker $w died with the template"
done

# The new template must fork: kill a worker and wait for its replacement.
kill -KILL "${workers[0]}"
replaced() { [ "$(logged_pids worker | wc -l)" -ge 3 ]; }
wait_for 50 replaced || fail "the new template forked no replacement for worker ${workers[0]}"
result=$(client "$chaos_node" load 2 2 python.time.sleep "[0]" 5000 | tail -n 1)
grep -q 'ok=4 ' <<<"$result" || fail "calls after the replacement failed: $result"
pass "workers survived the template's death; new template $(logged_pids template | tail -n 1) forks; $summary"
