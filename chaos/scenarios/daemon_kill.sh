#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# kill -9 the daemon while 8 workers are busy in python.time.sleep. Every process of its tree
# must be gone within 1 s, because workers have a parent-death signal and watch the daemon's
# pidfd. None may be left running with parent 1, and a daemon started again under the same
# name must start clean.
set -u
source "$(dirname "$0")/../lib.sh"
chaos_init daemon_kill
sname="chaos_kill_$$"
ini="[pool default]
size = 8

[library time]
module = time"

start_daemon "$sname" "$ini"
wait_pool_full 8
client_bg "$chaos_work/load.out" "$chaos_node" load 8 1 python.time.sleep "[30]" 60000
wait_for 200 info_is busy 8 || fail "8 workers never became busy: $(client "$chaos_node" info)"

mapfile -t tree < <(process_tree "$chaos_daemon_pid")
[ "${#tree[@]}" -ge 10 ] || fail "expected the daemon, a template and 8 workers, found ${#tree[@]} processes"
for entry in "${tree[@]}"; do
    chaos_tracked+=("${entry% *}:${entry#* }")
done

# kill and wait share one redirection because bash may print its "Killed" job message as soon
# as it reaps the daemon, before wait runs. The exit status still shows how the daemon ended.
killed_at=$EPOCHREALTIME
{ kill -KILL "$chaos_daemon_pid"; wait "$chaos_daemon_pid"; } 2>/dev/null
status=$?
chaos_daemon_pid=
[ "$status" -eq 137 ] || fail "the daemon ended with status $status, expected 137 (SIGKILL)"

left=()
for _ in $(seq 10); do
    left=()
    for entry in "${tree[@]:1}"; do
        proc_alive "${entry% *}" "${entry#* }" && left+=("${entry% *}")
    done
    [ "${#left[@]}" -eq 0 ] && break
    sleep 0.1
done
gone_ms=$(bc <<<"($EPOCHREALTIME - $killed_at) * 1000 / 1")
if [ "${#left[@]}" -ne 0 ]; then
    details=$(for p in "${left[@]}"; do echo "pid $p ppid $(proc_ppid "$p")"; done | paste -sd, -)
    fail "${#left[@]} of $((${#tree[@]} - 1)) processes still run 1 s after the kill: $details"
fi
orphans=0
for entry in "${tree[@]:1}"; do
    pid=${entry% *}
    if proc_alive "$pid" "${entry#* }" && [ "$(proc_ppid "$pid")" = 1 ]; then
        orphans=$((orphans + 1))
    fi
done
[ "$orphans" -eq 0 ] || fail "$orphans processes of the old daemon run with parent 1"
kill "$client_pid" 2>/dev/null

mv "$chaos_work/daemon.log" "$chaos_work/daemon.first.log"
start_daemon "$sname" "$ini"
wait_pool_full 8
[ "$(info_count busy)" = 0 ] || fail "the restarted daemon has busy workers"
result=$(client "$chaos_node" load 1 1 python.time.sleep "[0]" 5000 | tail -n 1)
grep -q 'ok=1 ' <<<"$result" || fail "a call to the restarted daemon failed: $result"
pass "$((${#tree[@]} - 1)) processes gone ${gone_ms} ms after kill -9 of the daemon; restart is clean"
