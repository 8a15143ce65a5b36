#!/usr/bin/env bash
# Criterion unit tests through meson. Counts the Criterion tests inside every binary, from the
# "Synthesis" lines meson keeps in its test log, so one binary with 40 tests counts as 40.
set -u
build=${SNAKEPIT_BUILD_DIR:?}
out=$(mktemp)
meson test -C "$build" --suite unit --print-errorlogs 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
log="$build/meson-logs/testlog.txt"
read -r passed failed < <(sed -nE \
    's/.*Synthesis: Tested: [0-9]+ \| Passing: ([0-9]+) \| Failing: ([0-9]+) \| Crashing: ([0-9]+).*/\1 \2 \3/p' \
    "$log" | awk '{p += $1; f += $2 + $3} END {print p + 0, f + 0}')
binaries_failed=$(sed -nE 's/^(Fail|Timeout|Unexpected Pass): +([0-9]+).*/\2/p' "$out" | paste -sd+ | bc)
rm -f "$out"
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
    failed=${binaries_failed:-1}
fi
echo "unit: $passed passed, $failed failed"
exit "$rc"
