/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The daemon's session store: created from the config, expired each second, and cleaned up
 * after a node that owns sessions goes down and stays down for the grace period.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon.h"
#include "daemon_obs.h"
#include "log.h"

#define DAEMON_STORE_EXPIRE_INTERVAL_S 1.0

typedef struct OwnerGrace {
    struct OwnerGrace *next;
    Daemon *daemon;
    ev_timer timer;
    char node[MAXNODELEN + 1];
} OwnerGrace;

static OwnerGrace *owner_graces;

static void on_store_event(StoreEvent event, int error, const char *detail, void *data)
{
    Daemon *d = data;

    switch (event) {
    case STORE_EVENT_UP:
        daemon_obs_emit_simple(d, "store", "up", "store", store_backend_name(d->store));
        log_info("Session store %s is up", store_backend_name(d->store));
        break;
    case STORE_EVENT_DOWN:
        daemon_obs_emit_simple(d, "store", "down", "store", store_backend_name(d->store));
        log_error("Session store %s is down: %s; reconnecting", store_backend_name(d->store),
                  detail ? detail : strerror(-error));
        break;
    case STORE_EVENT_CONNECT_FAILED:
        log_debug("Failed to connect to the session store: %s", detail ? detail : "");
        break;
    }
}

static void on_counted(int status, uint64_t count, void *userdata)
{
    Daemon *d = userdata;

    if (status == 0) {
        d->session_count = count;
    }
}

static void on_expired(int status, uint64_t count, void *userdata)
{
    Daemon *d = userdata;

    if (status == 0 && count > 0) {
        log_debug("Expired %llu sessions", (unsigned long long)count);
        daemon_obs_emit_simple(d, "session", "expired", "store", store_backend_name(d->store));
    }
    store_count(d->store, on_counted, d);
}

static void expire_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    Daemon *d = w->data;

    store_expire(d->store, on_expired, d);
}

int daemon_store_start(Daemon *d)
{
    const Config *c = d->config;
    StoreConfig sc = {
        .backend = c->store_backend,
        .url = c->store_url,
        .key_prefix = c->store_key_prefix,
        .default_ttl_s = c->store_default_ttl_s,
        .max_sessions = c->store_max_sessions,
        .max_value_bytes = c->store_max_value_bytes,
        .max_vars = c->store_max_vars,
        .max_memory_bytes = c->store_max_memory_bytes,
        .connect_timeout_ms = c->store_connect_timeout_ms,
        .command_timeout_ms = c->store_command_timeout_ms,
        .on_event = on_store_event,
        .event_data = d,
    };
    int r = store_new(&sc, d->loop, &d->store);

    if (r < 0) {
        return log_error_errno(r, "Failed to set up the %s session store (url %s)",
                               c->store_backend, c->store_url);
    }
    struct timespec real;
    clock_gettime(CLOCK_REALTIME, &real);
    d->store_clock_offset_ms =
        (uint64_t)real.tv_sec * 1000u + (uint64_t)real.tv_nsec / 1000000u - log_now_ms();
    ev_timer_init(&d->expire_timer, expire_cb, DAEMON_STORE_EXPIRE_INTERVAL_S,
                  DAEMON_STORE_EXPIRE_INTERVAL_S);
    d->expire_timer.data = d;
    ev_timer_start(d->loop, &d->expire_timer);
    return 0;
}

static void on_owner_sessions_deleted(int status, uint64_t count, void *userdata)
{
    OwnerGrace *g = userdata;

    if (status < 0) {
        log_warning_errno(status, "Failed to delete the sessions of node %s", g->node);
    } else {
        log_emit(count > 0 ? LOG_INFO : LOG_DEBUG, 0,
                 "Deleted %llu sessions owned by node %s, down for its grace period",
                 (unsigned long long)count, g->node);
    }
    free(g);
}

static void unlink_grace(OwnerGrace *g)
{
    for (OwnerGrace **p = &owner_graces; *p; p = &(*p)->next) {
        if (*p == g) {
            *p = g->next;
            return;
        }
    }
}

static void grace_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    OwnerGrace *g = w->data;

    unlink_grace(g);
    store_delete_by_owner(g->daemon->store, g->node, on_owner_sessions_deleted, g);
}

void daemon_store_node_down(Daemon *d, const char *node)
{
    OwnerGrace *g = calloc(1, sizeof(*g));

    if (!g) {
        return;
    }
    g->daemon = d;
    snprintf(g->node, sizeof(g->node), "%s", node);
    ev_timer_init(&g->timer, grace_cb, d->config->session_owner_grace_ms / 1000.0, 0.);
    g->timer.data = g;
    ev_timer_start(d->loop, &g->timer);
    g->next = owner_graces;
    owner_graces = g;
}

void daemon_store_node_up(Daemon *d, const char *node)
{
    for (OwnerGrace *g = owner_graces, *next; g; g = next) {
        next = g->next;
        if (strcmp(g->node, node) == 0) {
            ev_timer_stop(d->loop, &g->timer);
            unlink_grace(g);
            free(g);
        }
    }
}

void daemon_store_stop(Daemon *d)
{
    while (owner_graces) {
        OwnerGrace *g = owner_graces;
        owner_graces = g->next;
        ev_timer_stop(d->loop, &g->timer);
        free(g);
    }
    ev_timer_stop(d->loop, &d->expire_timer);
    store_free(d->store);
    d->store = NULL;
}

void daemon_store_bind(Daemon *d, const char *session_id, size_t len, uint32_t worker_id)
{
    StoreBytes id = {.data = (const uint8_t *)session_id, .len = len};

    store_set_worker(d->store, id, worker_id, request_ignore_status, NULL);
}
