# SPDX-License-Identifier: Apache-2.0
# Shared helpers of the chaos scenarios, sourced by chaos/scenarios/*.sh. A scenario starts its
# own daemon under a unique node name. It records the pid and start time of every process it
# starts or finds in the daemon's tree. On exit it kills only the recorded processes whose start
# time still matches, so a reused pid is never hit.
#
# A scenario ends with pass, fail or skip, which print one line and exit 0, 1 or 77.

chaos_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
chaos_build=${SNAKEPIT_BUILD_DIR:-$chaos_root/build}
chaos_daemon_bin=$chaos_build/cnode/snakepit-cnode
chaos_python=/usr/bin/python3

chaos_name=
chaos_work=
chaos_cookie=
chaos_daemon_pid=
chaos_tracked=()   # "pid:starttime" of every process to clean up

# Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat), or nothing.
proc_starttime() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    # After "comm) " the fields start at 3 (state), so start time is the 20th.
    set -- $stat
    echo "${20}"
}

# Whether pid $1 with start time $2 still runs (a zombie counts as exited).
proc_alive() {
    local stat state
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    set -- "$2" $stat
    state=$2
    [ "$state" != Z ] && [ "${21}" = "$1" ]
}

proc_ppid() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    set -- $stat
    echo "$2"
}

track() {
    local start
    start=$(proc_starttime "$1") && chaos_tracked+=("$1:$start")
}

# Print "pid starttime" for $1 and all its descendants, found by walking /proc.
process_tree() {
    "$chaos_python" - "$1" <<'EOF'
import os, sys
root = int(sys.argv[1])
children = {}
for entry in os.listdir("/proc"):
    if not entry.isdigit():
        continue
    try:
        with open(f"/proc/{entry}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    children.setdefault(int(fields[1]), []).append((int(entry), fields[19]))
todo = [root]
try:
    with open(f"/proc/{root}/stat") as f:
        print(root, f.read().rsplit(")", 1)[1].split()[19])
except OSError:
    sys.exit(0)
while todo:
    for pid, start in children.get(todo.pop(), []):
        print(pid, start)
        todo.append(pid)
EOF
}

chaos_cleanup() {
    local entry pid start
    # Workers first die with the daemon; anything recorded that is still the same process
    # gets SIGKILL by its pid.
    if [ -n "$chaos_daemon_pid" ] && kill -0 "$chaos_daemon_pid" 2>/dev/null; then
        kill -TERM "$chaos_daemon_pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$chaos_daemon_pid" 2>/dev/null || break; sleep 0.1; done
    fi
    for entry in "${chaos_tracked[@]}"; do
        pid=${entry%%:*}
        start=${entry#*:}
        if proc_alive "$pid" "$start"; then
            kill -KILL "$pid" 2>/dev/null
        fi
    done
    wait 2>/dev/null
    if [ -n "$chaos_work" ] && [ -z "${CHAOS_KEEP:-}" ]; then
        rm -rf "$chaos_work"
    fi
}

pass() {
    echo "PASS $chaos_name: $*"
    exit 0
}

fail() {
    echo "FAIL $chaos_name: $*"
    if [ -n "$chaos_work" ] && [ -f "$chaos_work/daemon.log" ]; then
        echo "--- last lines of the daemon log ($chaos_work/daemon.log):"
        tail -n 25 "$chaos_work/daemon.log"
    fi
    exit 1
}

skip() {
    echo "SKIP $chaos_name: skipped: $*"
    exit 77
}

# chaos_init NAME: a work directory, a cookie and a node name unique to this run.
chaos_init() {
    chaos_name=$1
    chaos_work=$(mktemp -d "/tmp/snakepit-chaos-$1.XXXXXX")
    chaos_cookie="chaos_${RANDOM}${RANDOM}"
    trap chaos_cleanup EXIT
    trap 'exit 143' TERM INT
    [ -x "$chaos_daemon_bin" ] || fail "$chaos_daemon_bin is not built (run: ninja -C build)"
}

# Run the Elixir client (chaos/client.exs) against node $1 with mode and arguments.
client() {
    local node=$1
    shift
    elixir --sname "chaos_client_${RANDOM}_$$" --cookie "$chaos_cookie" \
        "$chaos_root/chaos/client.exs" "$node" "$@"
}

# Same, in the background; its pid is in $client_pid and it is tracked.
client_bg() {
    local out=$1
    shift
    client "$@" >"$out" 2>&1 &
    client_pid=$!
    track "$client_pid"
}

# start_daemon SNAME INI_TEXT: write the config, start the daemon, wait for its READY line.
# Sets $chaos_daemon_pid and $chaos_node. Skips the scenario when snakepit-worker is not built.
start_daemon() {
    local sname=$1 ini=$2 status node
    printf '%s\n' "$ini" >"$chaos_work/$sname.ini"
    rm -f "$chaos_work/stdout"
    : >"$chaos_work/stdout"
    SNAKEPIT_COOKIE=$chaos_cookie "$chaos_daemon_bin" --config "$chaos_work/$sname.ini" \
        --sname "$sname" --http off >>"$chaos_work/stdout" 2>>"$chaos_work/daemon.log" &
    chaos_daemon_pid=$!
    track "$chaos_daemon_pid"
    for _ in $(seq 600); do
        if read -r status node <"$chaos_work/stdout" && [ "$status" = READY ]; then
            chaos_node=$node
            return 0
        fi
        if ! kill -0 "$chaos_daemon_pid" 2>/dev/null; then
            wait "$chaos_daemon_pid"
            local rc=$?
            if grep -q 'Failed to find snakepit-worker' "$chaos_work/daemon.log"; then
                skip "worker pool not available (snakepit-worker is not built)"
            fi
            fail "the daemon exited with status $rc before it was ready"
        fi
        sleep 0.1
    done
    # No READY within 60 s: ask the daemon why through :info.
    chaos_node="$sname@$(hostname -s)"
    local info
    info=$(client "$chaos_node" info 2>&1)
    if grep -q 'ready=false' <<<"$info"; then
        if [ ! -x "$chaos_build/cnode/snakepit-worker" ]; then
            skip "worker pool not available (:info: $(head -n 1 <<<"$info"))"
        fi
        fail "pools not ready after 60 s although snakepit-worker is built: $info"
    fi
    fail "no READY line within 60 s; :info gave: $info"
}

# Pids logged for the pool's processes: "worker" (ready workers) or "template" (zygotes).
logged_pids() {
    case $1 in
    worker) sed -nE 's/.*worker [0-9]+ \(pid ([0-9]+)\) ready$/\1/p' "$chaos_work/daemon.log" ;;
    template) sed -nE 's/.*started the template interpreter .* \(pid ([0-9]+)\)$/\1/p' \
        "$chaos_work/daemon.log" ;;
    esac
}

# Wait up to $1 tenths of a second for the command in the remaining arguments to succeed,
# trying it every 0.1 s (a try that itself takes long counts against the same deadline).
wait_for() {
    local deadline
    deadline=$(( ${EPOCHREALTIME/./} / 1000 + $1 * 100 ))
    shift
    until "$@"; do
        [ $(( ${EPOCHREALTIME/./} / 1000 )) -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

# Print the number of workers in state $1 (idle, busy, ...) from the client's info mode.
info_count() {
    client "$chaos_node" info | sed -nE "s/.* $1=([0-9]+).*/\1/p" | head -n 1
}

# wait_pool_full SIZE: every worker of the pool idle (ready) within 10 s, else fail.
wait_pool_full() {
    wait_for 100 info_is idle $1 ||
        fail "only $(info_count idle) of $1 workers became ready within 10 s: $(client "$chaos_node" info)"
}

# info_is STATE N: :info reports N workers in STATE (idle, busy, starting, ...).
info_is() {
    [ "$(info_count "$1")" = "$2" ]
}
