#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# pytest tests of the snakepit Python package, with Debian's interpreter (numpy and pandas come
# from python3-numpy and python3-pandas); prints the "N passed, N failed" line from pytest's.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=$(mktemp)
PYTHONPATH="$root/python" /usr/bin/python3 -m pytest -q -p no:cacheprovider python/tests 2>&1 |
    tee "$out"
rc=${PIPESTATUS[0]}
summary=$(tail -n 1 "$out")
passed=$(grep -oE '[0-9]+ passed' <<<"$summary" | grep -oE '[0-9]+')
failed=$(grep -oE '[0-9]+ (failed|error|errors)' <<<"$summary" | grep -oE '[0-9]+' | paste -sd+ |
    bc)
rm -f "$out"
if [ "$rc" -ne 0 ] && [ "${failed:-0}" -eq 0 ]; then
    failed=1
fi
echo "pytest: ${passed:-0} passed, ${failed:-0} failed"
exit "$rc"
