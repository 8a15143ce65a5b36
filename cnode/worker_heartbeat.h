/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The worker's heartbeat thread: a plain C thread that echoes every byte the daemon writes on
 * the heartbeat socket and ends the worker process when that socket closes or the daemon exits.
 * It never takes the GIL, so it answers while Python is busy, and only a frozen process misses.
 */
#pragma once

/*
 * Start the thread. Takes ownership of `heartbeat_fd` and `daemon_pidfd` (a pidfd of the
 * daemon). Blocks every signal in the thread, so signals reach the main thread. Returns 0 or a
 * negative errno; on failure the fds are closed.
 */
int worker_heartbeat_start(int heartbeat_fd, int daemon_pidfd);
