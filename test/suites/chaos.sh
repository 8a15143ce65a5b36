#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The chaos scenarios of chaos/run.sh within a 4-minute budget. Scenarios that need the worker
# pool report "skipped" while snakepit-worker is not built.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
exec "$root/chaos/run.sh" --budget 240
