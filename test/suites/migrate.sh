#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Tests deploy/snakepit-migrate.exs and the limits of the {:session, :dump, id} request against
# a real redis-server on a free loopback port and five daemons: a memory one filled with
# sessions, a Redis target, an empty Redis target for the dry run, a fresh memory daemon to
# migrate back to, and a memory daemon with a small max_message_bytes. The checks themselves
# are in test/integration/migrate_checks.exs. Prints "migrate: N passed, N failed" last.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${SNAKEPIT_BUILD_DIR:-$root/build}
daemon=$build/cnode/snakepit-cnode
small_limit=4096

fail() {
    echo "migrate: $*" >&2
    echo "migrate: 0 passed, 1 failed"
    exit 1
}

[ -x "$daemon" ] || fail "$daemon is missing; build with: meson setup build && ninja -C build"
command -v redis-server >/dev/null || fail "redis-server is missing; run deploy/install-deps.sh"

work=$(mktemp -d)
pids=()
# Stop every process this script started, by its pid.
stop_all() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null
    done
    pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT

if ! epmd -names >/dev/null 2>&1; then
    epmd >/dev/null 2>&1 &
    pids+=($!)
    for _ in $(seq 50); do
        epmd -names >/dev/null 2>&1 && break
        sleep 0.1
    done
fi

port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0));
print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
    [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ] && break
    sleep 0.1
done
[ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ] ||
    fail "redis-server did not start on port $port: $(tail -n 5 "$work/redis.log")"

export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$root/test/lsan.supp}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

cookie=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
printf '[node]\nmax_message_bytes = %d\n' "$small_limit" >"$work/small.ini"

# Start a daemon with a unique sname and print its node name once it is READY.
start_daemon() {
    local sname="mig_$1_$$_$RANDOM" log="$work/$1.log"
    shift
    SNAKEPIT_COOKIE=$cookie "$daemon" --sname "$sname" --http off --pool-size 1 "$@" \
        >"$log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do
        if grep -qE '^READY ' "$log"; then
            sed -nE 's/^READY (.*)$/\1/p' "$log"
            return 0
        fi
        sleep 0.1
    done
    echo "migrate: the daemon $sname did not print READY:" >&2
    tail -n 20 "$log" >&2
    return 1
}

# Each daemon starts in this shell, not in a subshell, so that its pid lands in pids.
start_into() {
    local var=$1
    shift
    start_daemon "$@" >"$work/node" || fail "a daemon failed to start"
    printf -v "$var" '%s' "$(cat "$work/node")"
}
start_into memory_node memory --store memory
start_into redis_node redis --store "redis://127.0.0.1:$port/0"
start_into empty_node empty --store "redis://127.0.0.1:$port/1"
start_into back_node back --store memory
start_into small_node small --store memory --config "$work/small.ini"

log=$work/checks.out
MIGRATE_MEMORY=$memory_node MIGRATE_REDIS=$redis_node MIGRATE_EMPTY=$empty_node \
    MIGRATE_BACK=$back_node MIGRATE_SMALL=$small_node MIGRATE_SMALL_LIMIT=$small_limit \
    REDIS_PORT=$port elixir --sname "migrate_runner_$$" --cookie "$cookie" \
    "$root/test/integration/migrate_checks.exs" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}

# The daemons stop first, so that a leak report at their exit is in their logs too.
stop_all
summary=$(grep -E '^migrate: [0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
passed=$(sed -E 's/^migrate: ([0-9]+) passed.*/\1/' <<<"${summary:-migrate: 0 passed}")
failed=$(sed -E 's/.* ([0-9]+) failed$/\1/' <<<"${summary:-x 1 failed}")
if grep -qE 'runtime error:|Sanitizer' "$work"/*.log; then
    echo "migrate: a daemon printed a sanitizer report" >&2
    failed=$((failed + 1))
    rc=1
fi
if [ -z "$summary" ] || [ "$rc" -ne 0 ]; then
    [ "$failed" -eq 0 ] && failed=1
    rc=1
    echo "migrate: $passed passed, $failed failed"
fi
exit "$rc"
