#!/usr/bin/env bash
# Criterion unit tests through meson; prints the "N passed, N failed" line from meson's counts.
set -u
build=${SNAKEPIT_BUILD_DIR:?}
out=$(mktemp)
meson test -C "$build" --suite unit --print-errorlogs 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
ok=$(sed -nE 's/^Ok: +([0-9]+).*/\1/p' "$out")
fail=$(sed -nE 's/^(Fail|Timeout|Unexpected Pass): +([0-9]+).*/\2/p' "$out" | paste -sd+ | bc)
rm -f "$out"
echo "unit: ${ok:-0} passed, ${fail:-0} failed"
exit "$rc"
