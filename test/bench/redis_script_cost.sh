#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Count the instructions that redis-server executes per call of the session store's get-variable
# and put-variable scripts, sent as EVAL and as EVALSHA. Unlike a time, the count does not depend
# on the load of a shared machine. For each case it runs redis-server under valgrind's callgrind
# twice, with 500 and with 1500 calls from redis-benchmark, and prints the difference divided by
# 1000, so the start-up work cancels out. The count covers everything under readQueryFromClient:
# reading and parsing the command, finding the script, running it and its commands, and queuing
# the reply. This is a program that prints numbers, not a test: it is not part of test/suites.
# It stops each redis-server it started by its pid.
#
# Usage: test/bench/redis_script_cost.sh [SCRIPTS_C]
#   SCRIPTS_C  the C file that contains the Lua scripts (default cnode/store_redis_script.c).
#              To compare with an older version, pass the output of
#              git show COMMIT:cnode/store_redis_script.c saved to a file.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
scripts_c=${1:-$root/cnode/store_redis_script.c}

for tool in valgrind redis-server redis-cli redis-benchmark; do
    if ! command -v "$tool" >/dev/null; then
        echo "redis_script_cost: $tool is missing; install valgrind and redis-server" >&2
        exit 1
    fi
done

work=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# Write the Lua text of each script in $scripts_c to $work/<name>.lua, where <name> is get_var or
# put_var. The C file joins string literals, and the scripts that use LUA_PRELUDE start with it.
/usr/bin/python3 - "$scripts_c" "$work" <<'EOF'
import codecs, re, sys

source = open(sys.argv[1]).read()

def literals(text):
    return "".join(codecs.decode(m, "unicode_escape")
                   for m in re.findall(r'"((?:[^"\\]|\\.)*)"', text))

prelude = literals(re.search(r"#define LUA_PRELUDE(.*?)\n\n", source, re.S).group(1))
for name in ("get_var", "put_var"):
    body = re.search(r"const char (?:store_redis_)?script_%s\[\] =(.*?);\n" % name,
                     source, re.S).group(1)
    text = (prelude if "LUA_PRELUDE" in body else "") + literals(body.replace("LUA_PRELUDE", ""))
    open("%s/%s.lua" % (sys.argv[2], name), "w").write(text)
EOF

port=$(/usr/bin/python3 -c \
    'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cli=(redis-cli -p "$port")

# Print the instructions under readQueryFromClient for `calls` calls of `mode` (EVAL or EVALSHA)
# with the Lua file `lua` and the arguments after it.
total_instructions() {
    local calls=$1 mode=$2 lua=$3
    shift 3
    local text ref
    valgrind --tool=callgrind --toggle-collect=readQueryFromClient \
        --callgrind-out-file="$work/callgrind.out" \
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        >"$work/redis.log" 2>&1 &
    pid=$!
    for _ in $(seq 300); do
        "${cli[@]}" PING >/dev/null 2>&1 && break
        sleep 0.1
    done
    # One session hash as the store writes it, and an expiry index of 1000 other sessions.
    "${cli[@]}" HSET k:session:s created 1733300000000 accessed 1733300000000 ttl 3600 \
        v:a 01234567 v:b 0123456789abcdef >/dev/null
    for i in $(seq 1000); do
        echo "ZADD k:expiry $((1733303600000 + i)) s$i"
    done | "${cli[@]}" >/dev/null
    text=$(cat "$lua")
    ref=$text
    if [ "$mode" = EVALSHA ]; then
        ref=$("${cli[@]}" SCRIPT LOAD "$text")
    fi
    redis-benchmark -p "$port" -n "$calls" -c 1 -q "$mode" "$ref" "$@" >/dev/null
    kill "$pid"
    wait "$pid" || true
    pid=
    awk '/^(summary|totals):/ { print $2; exit }' "$work/callgrind.out"
}

per_call() {
    local before after
    before=$(total_instructions 500 "$@")
    after=$(total_instructions 1500 "$@")
    echo $(((after - before) / 1000))
}

echo "scripts: $scripts_c"
echo "redis: $(redis-server --version | awk '{ print $3 }'), valgrind: $(valgrind --version)"
printf '%-8s %-8s %s\n' script command instructions_per_call
get_args=(2 k:session:s k:expiry s v:a)
put_args=(2 k:session:s k:expiry s v:c fedcba9876543210 1024)
for mode in EVAL EVALSHA; do
    get=$(per_call "$mode" "$work/get_var.lua" "${get_args[@]}")
    printf '%-8s %-8s %s\n' get_var "$mode" "$get"
    put=$(per_call "$mode" "$work/put_var.lua" "${put_args[@]}")
    printf '%-8s %-8s %s\n' put_var "$mode" "$put"
done
