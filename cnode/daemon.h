/* SPDX-License-Identifier: Apache-2.0 */
/* The daemon's state shared by its parts: the loop, the configuration and the node. */
#pragma once

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "dist.h"
#include "error.h"
#include "store.h"
#include "worker_pool.h"

#define SNAKEPIT_VERSION "0.1.0"

/* A module callable through the generic adapter in one pool. */
typedef struct {
    size_t pool_index;
    char module[CONFIG_NAME_MAX];
} AllowedModule;

#define DAEMON_MAX_ALLOWED (CONFIG_MAX_LIBRARIES * 2)

typedef struct DaemonObs DaemonObs;

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
    ev_signal sigchld_watcher;
    ev_timer reap_timer;
    int exit_status;

    WorkerPool *pools[CONFIG_MAX_POOLS];
    size_t pool_count;
    AllowedModule allowed[DAEMON_MAX_ALLOWED];
    size_t allowed_count;

    Store *store;
    uint64_t session_count; /* from the last expiry pass */
    uint64_t store_clock_offset_ms; /* Unix time minus CLOCK_MONOTONIC, in ms, at start */
    DaemonObs *obs;
    uint64_t next_correlation;
    ev_timer expire_timer;
} Daemon;

/* Handle one `$gen_call` to the registered name; takes ownership of `caller`. */
void request_handle(Daemon *daemon, DistCaller *caller, const char *request, size_t len);

/* Release a caller that gets no reply (its node is gone) and account for the finished call. */
void request_drop(Daemon *daemon, DistCaller *caller);

/* Reply `{error, #{kind, message, retryable}}` and account for the finished call. */
void request_reply_error(Daemon *daemon, DistCaller *caller, ErrorKind kind, const char *message);

/* Handle `{execute | execute_stream, Command, Args, Opts}`; `index` is after the tag atom. */
void request_execute(Daemon *daemon, DistCaller *caller, const char *request, size_t len,
                     int index, int arity, bool stream);

/* Handle `{register_libraries, [Library]}`; `index` is after the tag atom. */
void request_register_libraries(Daemon *daemon, DistCaller *caller, const char *request,
                                int index, int arity);

/* Handle `{session, Op, ...}`; `index` is after the tag atom, `arity` counts what follows. */
void request_session(Daemon *daemon, DistCaller *caller, const char *request, size_t len,
                     int index, int arity);

/* Reply to a worker's snakepit.session request of call `call_id`. */
void request_worker_session(Daemon *daemon, WorkerPool *pool, uint32_t worker_id,
                            uint64_t call_id, const char *session_id, size_t session_id_len,
                            const char *term, size_t len);

/* daemon_store.c: the session store's life in the daemon. */
int daemon_store_start(Daemon *daemon);
void daemon_store_node_up(Daemon *daemon, const char *node);
void daemon_store_node_down(Daemon *daemon, const char *node);
void daemon_store_bind(Daemon *daemon, const char *session_id, size_t len, uint32_t worker_id);
void daemon_store_stop(Daemon *daemon);

/* A StoreDoneFn for updates whose failure only matters to the log. */
void request_ignore_status(int status, void *userdata);

/* Handle a `$gen_cast` or plain message to the registered name. */
void request_handle_cast(Daemon *daemon, const char *node, const char *request, size_t len);

/* Send the reply term in `x` (no version byte) to `caller` and account for the finished call. */
void request_reply(Daemon *daemon, DistCaller *caller, const char *reply, size_t len);

/* Begin a graceful shutdown: stop accepting, let calls finish, then leave the loop. */
void daemon_shutdown(Daemon *daemon, const char *reason);

/* Print READY and notify systemd once the node is published and every pool has a worker. */
void daemon_announce_ready(Daemon *daemon);
