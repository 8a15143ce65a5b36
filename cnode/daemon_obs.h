/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The daemon's observability: the metrics registry and the HTTP endpoint, telemetry events and
 * their BEAM subscribers, fed from the pools' events and the request handlers.
 */
#pragma once

#include "daemon.h"

/* Set up metrics, telemetry and, unless [http] listen = off, the HTTP endpoint. */
int daemon_obs_start(Daemon *daemon);
void daemon_obs_stop(Daemon *daemon);

/* A pool reported an event (WorkerPoolHooks.on_event). */
void daemon_obs_pool_event(Daemon *daemon, const PoolEvent *event);

/* An execute request was accepted: emit request.start. */
void daemon_obs_request_start(Daemon *daemon, const char *correlation_id, const char *pool,
                              const char *command, const char *caller_node,
                              const char *session_id);

/*
 * A request got an error reply before it reached a pool: count it, and when its
 * request.start was emitted (`correlation_id` not NULL), emit its request.exception.
 */
void daemon_obs_request_rejected(Daemon *daemon, const char *correlation_id, const char *pool,
                                 const char *command, ErrorKind kind);

/* `{subscribe, Pid, Prefixes}` and `{unsubscribe, Pid}`; `index` is after the tag atom. */
void daemon_obs_subscribe(Daemon *daemon, DistCaller *caller, const char *request, int index,
                          int arity);
void daemon_obs_unsubscribe(Daemon *daemon, DistCaller *caller, const char *request, int index,
                            int arity);

/* A node went down: drop its subscriptions. */
void daemon_obs_node_down(Daemon *daemon, const char *node);

/* Emit a simple event with one metadata pair, e.g. node up/down or store up/down. */
void daemon_obs_emit_simple(Daemon *daemon, const char *group, const char *name, const char *key,
                            const char *atom_value);
