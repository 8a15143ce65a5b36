/* SPDX-License-Identifier: Apache-2.0 */
/* The daemon's state shared by its parts: the loop, the configuration and the node. */
#pragma once

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "dist.h"

#define SNAKEPIT_VERSION "0.1.0"

typedef struct Daemon {
    struct ev_loop *loop;
    Config *config;
    Dist *dist;
    uint64_t start_ms;
    bool shutting_down;
    bool ready_announced;
    unsigned calls_in_flight;
    bool owner_seen;

    ev_signal sigterm_watcher;
    ev_signal sigint_watcher;
    ev_timer shutdown_timer;
    ev_timer owner_timer;
    ev_timer watchdog_timer;
    int exit_status;
} Daemon;

/* Handle one `$gen_call` to the registered name; takes ownership of `caller`. */
void request_handle(Daemon *daemon, DistCaller *caller, const char *request, size_t len);

/* Handle a `$gen_cast` or plain message to the registered name. */
void request_handle_cast(Daemon *daemon, const char *node, const char *request, size_t len);

/* Send the reply term in `x` (no version byte) to `caller` and account for the finished call. */
void request_reply(Daemon *daemon, DistCaller *caller, const char *reply, size_t len);

/* Begin a graceful shutdown: stop accepting, let calls finish, then leave the loop. */
void daemon_shutdown(Daemon *daemon, const char *reason);

/* Print READY and notify systemd once every pool is ready (now: once the node is published). */
void daemon_announce_ready(Daemon *daemon);
