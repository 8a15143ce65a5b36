#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The main job: install the Debian packages, build with meson, start epmd and the daemon with the
# in-memory store, and run an Elixir program that calls pandas, numpy and the standard library.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${SNAKEPIT_BUILD_DIR:-$root/build}
cd "$root"

./deploy/install-deps.sh
[ -d "$build" ] || meson setup "$build"
ninja -C "$build"

work=$(mktemp -d)
epmd_pid=
daemon_pid=
cleanup() {
    [ -n "$daemon_pid" ] && kill -TERM "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
    [ -n "$epmd_pid" ] && kill "$epmd_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

if ! epmd -names >/dev/null 2>&1; then
    epmd &
    epmd_pid=$!
    for _ in $(seq 50); do epmd -names >/dev/null 2>&1 && break; sleep 0.1; done
fi

export SNAKEPIT_COOKIE=${SNAKEPIT_COOKIE:-snakepit_demo_$RANDOM$RANDOM}
mkfifo "$work/ready"
"$build/cnode/snakepit-cnode" --config deploy/demo.ini >"$work/ready" 2>"$work/daemon.log" &
daemon_pid=$!
if ! read -r -t 60 status node <"$work/ready" || [ "$status" != READY ]; then
    echo "snakepit-cnode did not become ready; its log:" >&2
    cat "$work/daemon.log" >&2
    exit 1
fi
echo "snakepit-cnode is ready as $node (pid $daemon_pid)"

elixir --sname "demo_$$" --cookie "$SNAKEPIT_COOKIE" deploy/demo.exs "$node"
