#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The systemd integration: systemd-analyze verify of the unit, the syscall filter and W^X
# settings against what the daemon and CPython really do, the sample config, the exit codes the
# unit's restart policy relies on, and the sd_notify messages (READY=1, WATCHDOG=1, STOPPING=1)
# received by a real AF_UNIX datagram listener standing in for systemd.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${SNAKEPIT_BUILD_DIR:-$root/build}
daemon=$build/cnode/snakepit-cnode
unit=$root/systemd/snakepit-cnode.service
python=/usr/bin/python3
work=$(mktemp -d /tmp/snakepit-systemd.XXXXXX)
export SNAKEPIT_COOKIE="systemd_suite_${RANDOM}${RANDOM}"

passed=0
failed=0
skipped=0
pids=()

cleanup() {
    for pid in "${pids[@]}"; do
        kill -KILL "$pid" 2>/dev/null
    done
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

ok() { echo "PASS $1"; passed=$((passed + 1)); }
not_ok() { echo "FAIL $1: $2"; failed=$((failed + 1)); }
skip() { echo "SKIP $1: $2"; skipped=$((skipped + 1)); }

# The daemon stays up only with a worker binary to exec. Before snakepit-worker is built,
# /bin/false stands in: its pool never gets ready, which the notify tests below allow for.
if [ -x "$build/cnode/snakepit-worker" ]; then
    worker_note=
    export SNAKEPIT_WORKER_BINARY=$build/cnode/snakepit-worker
else
    worker_note=" (snakepit-worker is not built: the pool's template is /bin/false)"
    export SNAKEPIT_WORKER_BINARY=/bin/false
fi

# ---- the unit file ----

# systemd-analyze checks that ExecStart exists, so verify a copy that points at this build.
sed "s#^ExecStart=/usr/local/bin/snakepit-cnode#ExecStart=$daemon#" "$unit" \
    >"$work/snakepit-cnode.service"
printf '[Service]\nExecStart=/bin/true\n' >"$work/probe-known-good.service"
if ! (cd "$work" && systemd-analyze verify probe-known-good.service) >"$work/probe.out" 2>&1; then
    skip "unit verify" "systemd-analyze cannot verify even a trivial unit here: $(head -n 2 "$work/probe.out")"
elif (cd "$work" && systemd-analyze verify snakepit-cnode.service) >"$work/verify.out" 2>&1 &&
     [ ! -s "$work/verify.out" ]; then
    ok "unit verify"
else
    not_ok "unit verify" "$(cat "$work/verify.out")"
fi

missing=()
for directive in Type=notify NotifyAccess=main LoadCredential=cookie:/etc/snakepit/cookie \
    Restart=on-failure "RestartPreventExitStatus=64 78" KillMode=mixed WatchdogSec= \
    TimeoutStopSec= NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes \
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6" LockPersonality=yes \
    MemoryDenyWriteExecute=yes Wants=epmd.socket After=epmd.socket \
    "ExecStart=/usr/local/bin/snakepit-cnode --config /etc/snakepit/snakepit.ini"; do
    grep -q "^${directive}" "$unit" || missing+=("$directive")
done
if [ ${#missing[@]} -eq 0 ]; then
    ok "unit directives"
else
    not_ok "unit directives" "missing: ${missing[*]}"
fi

# The epmd units the unit orders itself after must be what Debian's erlang-base ships.
if dpkg -L erlang-base 2>/dev/null | grep -q '/epmd.socket$'; then
    ok "epmd.socket from erlang-base"
else
    not_ok "epmd.socket from erlang-base" "dpkg -L erlang-base lists no epmd.socket"
fi

# ---- syscall filter and W^X ----

# Expand a systemd syscall group (@name) recursively into syscall names.
expand_group() {
    systemd-analyze syscall-filter "$1" 2>/dev/null | sed -n '2,$p' | sed -E 's/^ +//' |
        grep -v '^#' | while read -r entry; do
        if [ "${entry#@}" != "$entry" ]; then
            expand_group "$entry"
        elif [ -n "$entry" ]; then
            echo "$entry"
        fi
    done
}
filter=$(sed -n 's/^SystemCallFilter=//p' "$unit")
expand_group "$filter" | sort -u >"$work/allowed"
if [ ! -s "$work/allowed" ]; then
    skip "syscall filter" "systemd-analyze syscall-filter printed nothing"
elif ! strace -f -qq -o /dev/null /bin/true 2>/dev/null; then
    skip "syscall filter" "strace cannot trace here (ptrace not permitted)"
else
    # Trace a real start: node registration, pool start, READY or 3 s, then SIGTERM.
    strace -f -qq -o "$work/trace" "$daemon" --sname "sd_strace_$$" --http off --pool-size 1 \
        --library statistics >"$work/strace.stdout" 2>"$work/strace.log" &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 30); do grep -q '^READY' "$work/strace.stdout" && break; sleep 0.1; done
    # strace does not pass SIGTERM on, so signal the traced daemon, its first child.
    traced=$(cut -d' ' -f1 "/proc/$pid/task/$pid/children" 2>/dev/null)
    kill -TERM "${traced:-$pid}" 2>/dev/null
    wait "$pid"
    sed -nE 's/^[0-9]+ +([a-z0-9_]+)\(.*/\1/p; s/^[0-9]+ +<\.\.\. ([a-z0-9_]+) resumed>.*/\1/p' \
        "$work/trace" | sort -u >"$work/used"
    outside=$(comm -23 "$work/used" "$work/allowed" | paste -sd' ' -)
    if [ ! -s "$work/used" ]; then
        not_ok "syscall filter" "the trace recorded no syscalls"
    elif [ -z "$outside" ]; then
        ok "syscall filter covers $(wc -l <"$work/used") syscalls used$worker_note"
    else
        not_ok "syscall filter" "$filter does not allow: $outside"
    fi
fi

# systemd 252 implements MemoryDenyWriteExecute with seccomp; the kernel's PR_SET_MDWE (Linux
# 6.3+) enforces the same W^X rule for the process and its children, so Python runs under it.
mdwe_probe() {
    "$python" - "$@" <<'EOF'
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    print("prctl(PR_SET_MDWE) failed:", os.strerror(ctypes.get_errno()))
    sys.exit(77)
os.execv("/usr/bin/python3", ["/usr/bin/python3", "-c", sys.argv[1]])
EOF
}
out=$(mdwe_probe 'import mmap; mmap.mmap(-1, 4096, prot=7); print("rwx mapping allowed")' 2>&1)
rc=$?
if [ "$rc" -eq 77 ]; then
    skip "W^X under PR_SET_MDWE" "$out"
elif ! grep -q PermissionError <<<"$out"; then
    not_ok "W^X under PR_SET_MDWE" "a writable and executable mapping was not refused: $out"
else
    out=$(mdwe_probe '
import ctypes, numpy, pandas
m = numpy.linalg.inv(numpy.array([[2.0, 1.0], [1.0, 3.0]]))
f = pandas.DataFrame({"a": [1, 2, 3]})
callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)
print(round(m[0][0], 3), int(f["a"].sum()), callback(41))' 2>&1)
    if [ "$out" = "0.6 6 42" ]; then
        ok "numpy, pandas and ctypes callbacks under W^X"
    else
        not_ok "numpy, pandas and ctypes callbacks under W^X" "$out"
    fi
fi

# ---- sample config and exit codes ----

out=$("$daemon" --check-config --config "$root/systemd/snakepit.ini" 2>&1)
rc=$?
if [ "$rc" -eq 0 ] && grep -q '^configuration valid: node snakepit@' <<<"$out"; then
    ok "sample config valid"
else
    not_ok "sample config valid" "exit $rc: $out"
fi

# Every commented-out default of the sample must be a valid setting too. cookie_file is left
# out because it names a file that exists only on an installed host.
sed -E 's/^; ([a-z_]+ =.*)$/\1/' "$root/systemd/snakepit.ini" | grep -v '^cookie_file' \
    >"$work/all-keys.ini"
out=$("$daemon" --check-config --config "$work/all-keys.ini" 2>&1)
rc=$?
if [ "$rc" -eq 0 ]; then
    ok "sample defaults uncommented valid"
else
    not_ok "sample defaults uncommented valid" "exit $rc: $out"
fi

sed 's/^; max_depth = 256$/max_dept = 256/' "$root/systemd/snakepit.ini" >"$work/typo.ini"
line=$(grep -n '^max_dept' "$work/typo.ini" | cut -d: -f1)
out=$("$daemon" --check-config --config "$work/typo.ini" 2>&1)
rc=$?
if [ "$rc" -eq 78 ] && grep -q "line $line: unknown key 'max_dept' in section \[node\]" <<<"$out"; then
    ok "unknown key exits 78"
else
    not_ok "unknown key exits 78" "exit $rc: $out"
fi

out=$("$daemon" --no-such-flag 2>&1)
rc=$?
if [ "$rc" -eq 64 ]; then ok "bad flag exits 64"; else not_ok "bad flag exits 64" "exit $rc: $out"; fi

out=$(env -u SNAKEPIT_COOKIE HOME="$work/nohome" "$daemon" --check-config 2>&1)
rc=$?
if [ "$rc" -eq 78 ] && grep -q 'Failed to read the distribution cookie' <<<"$out"; then
    ok "missing cookie exits 78"
else
    not_ok "missing cookie exits 78" "exit $rc: $out"
fi

# ---- sd_notify ----

listener_pid=
start_listener() {
    rm -f "$work/notify.log"
    "$python" "$root/test/tools/notify_listener.py" "$1" "$work/notify.log" \
        --watch "$work/daemon.stdout" &
    listener_pid=$!
    pids+=("$listener_pid")
    for _ in $(seq 50); do grep -q LISTENING "$work/notify.log" 2>/dev/null && return 0; sleep 0.1; done
    return 1
}
stop_listener() {
    kill "$listener_pid" 2>/dev/null
    wait "$listener_pid" 2>/dev/null
}

# start_notified SOCKET [ENV...]: the daemon under $NOTIFY_SOCKET, its pid as WATCHDOG_PID.
start_notified() {
    local socket=$1
    shift
    : >"$work/daemon.stdout"
    env NOTIFY_SOCKET="$socket" "$@" bash -c 'export WATCHDOG_PID=${WATCHDOG_PID:-$$}; exec "$0" "$@"' \
        "$daemon" --sname "sd_notify_$$_$RANDOM" --http off --pool-size 1 --library statistics \
        >"$work/daemon.stdout" 2>"$work/daemon.log" &
    daemon_pid=$!
    pids+=("$daemon_pid")
}

stop_daemon() {
    kill -TERM "$daemon_pid" 2>/dev/null
    wait "$daemon_pid"
    daemon_rc=$?
}

if ! start_listener "$work/notify"; then
    not_ok "notify listener" "it did not start"
else
    start_notified "$work/notify" WATCHDOG_USEC=1000000
    # Without snakepit-worker the daemon is never ready: wait 3 s for the record, not 30.
    for _ in $(seq "$([ -n "$worker_note" ] && echo 30 || echo 300)"); do
        grep -q '^READY ' "$work/daemon.stdout" && break
        sleep 0.1
    done
    sleep 1.6
    if grep -q '^READY ' "$work/daemon.stdout"; then
        node=$(awk '$1 == "READY" {print $2}' "$work/daemon.stdout")
        sleep 0.2
        if grep -q " READY=1 ready-line$" "$work/notify.log"; then
            ok "READY=1 after the READY $node line"
        else
            not_ok "READY=1 after the READY line" "$(cat "$work/notify.log")"
        fi
        if [ "$(grep -c '^READY ' "$work/daemon.stdout")" -eq 1 ]; then
            ok "one READY line"
        else
            not_ok "one READY line" "$(cat "$work/daemon.stdout")"
        fi
    elif [ -n "$worker_note" ]; then
        skip "READY=1 after the READY line" "no worker pool, so the daemon is never ready$worker_note"
    else
        not_ok "READY=1 after the READY line" "no READY line within 30 s: $(tail -n 5 "$work/daemon.log")"
    fi
    # WATCHDOG_USEC=1 s: a ping every 0.5 s, at least 3 in the 1.6 s above.
    pings=$(grep -c " $daemon_pid WATCHDOG=1 " "$work/notify.log")
    others=$(grep ' WATCHDOG=1 ' "$work/notify.log" | grep -vc " $daemon_pid WATCHDOG=1 ")
    if [ "$pings" -ge 3 ] && [ "$others" -eq 0 ]; then
        ok "WATCHDOG=1 every 0.5 s from the daemon ($pings pings)$worker_note"
    else
        not_ok "WATCHDOG=1 every 0.5 s" "$pings from pid $daemon_pid, $others from others: $(cat "$work/notify.log")"
    fi
    stop_daemon
    sleep 0.2
    if grep -q " $daemon_pid STOPPING=1 " "$work/notify.log" && [ "$daemon_rc" -eq 0 ]; then
        ok "STOPPING=1 on SIGTERM, exit 0"
    else
        not_ok "STOPPING=1 on SIGTERM, exit 0" "exit $daemon_rc: $(cat "$work/notify.log")"
    fi
    stop_listener
fi

# WATCHDOG_PID naming another process: the watchdog is not for this daemon.
abstract="@snakepit-systemd-suite-$$"
if start_listener "$abstract"; then
    start_notified "$abstract" WATCHDOG_USEC=200000 WATCHDOG_PID=1
    sleep 1
    stop_daemon
    sleep 0.2
    if grep -q ' WATCHDOG=1 ' "$work/notify.log"; then
        not_ok "no WATCHDOG=1 for another WATCHDOG_PID" "$(cat "$work/notify.log")"
    else
        ok "no WATCHDOG=1 for another WATCHDOG_PID"
    fi
    if grep -q " $daemon_pid STOPPING=1 " "$work/notify.log"; then
        ok "abstract NOTIFY_SOCKET $abstract"
    else
        not_ok "abstract NOTIFY_SOCKET" "no STOPPING=1: $(cat "$work/notify.log")"
    fi
    stop_listener
else
    not_ok "abstract notify listener" "it did not start"
fi

# ---- name clash: exit 69, which the unit retries ----

http_port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$daemon" --sname "sd_clash_$$" --http "127.0.0.1:$http_port" --pool-size 1 \
    >"$work/first.stdout" 2>"$work/first.log" &
first=$!
pids+=("$first")
for _ in $(seq 50); do grep -q 'Started snakepit-cnode' "$work/first.log" && break; sleep 0.1; done
out=$("$daemon" --sname "sd_clash_$$" --http off --pool-size 1 2>&1)
rc=$?
if [ "$rc" -eq 69 ] && grep -q 'already registered' <<<"$out"; then
    ok "node name clash exits 69"
else
    not_ok "node name clash exits 69" "exit $rc: $out"
fi
# The HTTP port taken by the first daemon: exit 78, which the unit does not retry.
out=$("$daemon" --sname "sd_http_$$" --http "127.0.0.1:$http_port" --pool-size 1 2>&1)
rc=$?
if [ "$rc" -eq 78 ] && grep -q "Failed to listen on 127.0.0.1:$http_port" <<<"$out"; then
    ok "HTTP port in use exits 78"
else
    not_ok "HTTP port in use exits 78" "exit $rc: $out"
fi
kill -TERM "$first" 2>/dev/null
wait "$first"

echo "systemd: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
