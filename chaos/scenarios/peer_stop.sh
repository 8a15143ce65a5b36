#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# SIGSTOP a peer node in the middle of a call, with thousands of replies queued for it: another
# node's calls are not delayed, and the stopped node gets every reply after SIGCONT.
set -u
source "$(dirname "$0")/../lib.sh"
chaos_init peer_stop
start_daemon "chaos_peer_$$" "[pool default]
size = 2

[library time]
module = time"
wait_pool_full 2

client_bg "$chaos_work/held.out" "$chaos_node" hold python.time.sleep "[2]" 10000 20000
held_pid=$client_pid
wait_for 300 grep -q '^holding' "$chaos_work/held.out" || fail "the held node never sent its calls"
# The elixir launcher execs the VM, so the client's pid is the BEAM itself.
kill -STOP "$held_pid"
probe=$(client "$chaos_node" probe 50)
kill -CONT "$held_pid"
max_us=$(sed -nE 's/^probe calls=50 max_us=([0-9]+)$/\1/p' <<<"$probe")
[ -n "$max_us" ] || fail "the probe node failed: $probe"
[ "$max_us" -lt 250000 ] || fail "a :ping took $max_us us while another peer was stopped"

wait "$held_pid"
grep -q '^call ok' "$chaos_work/held.out" || fail "the stopped node's call: $(cat "$chaos_work/held.out")"
grep -q '^info_replies 20000 of 20000' "$chaos_work/held.out" \
    || fail "the stopped node lost replies: $(cat "$chaos_work/held.out")"
pass "slowest :ping ${max_us} us while a peer was stopped; it got all 20001 replies after SIGCONT"
