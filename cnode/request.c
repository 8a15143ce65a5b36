/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Dispatch of the requests sent to the registered name. Each call gets exactly one reply:
 * handlers either reply at once or hand the caller to a part (pool, store) that replies later.
 * The request term was bounds-checked by the distribution layer, so ei_decode_* stay inside it.
 */
#include <errno.h>
#include <string.h>

#include "daemon.h"
#include "daemon_obs.h"
#include "error.h"
#include "log.h"

void request_reply(Daemon *d, DistCaller *caller, const char *reply, size_t len)
{
    dist_reply(d->dist, caller, reply, len);
    d->calls_in_flight--;
    if (d->shutting_down && d->calls_in_flight == 0) {
        ev_break(d->loop, EVBREAK_ALL);
    }
}

void request_drop(Daemon *d, DistCaller *caller)
{
    dist_caller_free(caller);
    d->calls_in_flight--;
    if (d->shutting_down && d->calls_in_flight == 0) {
        ev_break(d->loop, EVBREAK_ALL);
    }
}

static void reply_buffer(Daemon *d, DistCaller *caller, ei_x_buff *x)
{
    request_reply(d, caller, x->buff, (size_t)x->index);
    ei_x_free(x);
}

void request_reply_error(Daemon *d, DistCaller *caller, ErrorKind kind, const char *message)
{
    ei_x_buff x;

    if (ei_x_new(&x) < 0) {
        log_error("Out of memory replying to node %s", caller->node);
        request_drop(d, caller);
        return;
    }
    error_encode(&x, kind, 0, "%s", message);
    reply_buffer(d, caller, &x);
}

static void reply_atom(Daemon *d, DistCaller *caller, const char *atom)
{
    ei_x_buff x;

    if (ei_x_new(&x) < 0 || ei_x_encode_atom(&x, atom) < 0) {
        request_reply_error(d, caller, ERROR_OVERLOADED, "out of memory");
        return;
    }
    reply_buffer(d, caller, &x);
}

static void encode_pools(const Daemon *d, ei_x_buff *x)
{
    if (d->pool_count > 0) {
        ei_x_encode_list_header(x, (long)d->pool_count);
        for (size_t i = 0; i < d->pool_count; i++) {
            worker_pool_encode_info(d->pools[i], x);
        }
    }
    ei_x_encode_empty_list(x);
}

/* ok when every pool has a worker and none is crash looping; unhealthy with no worker at all. */
static const char *health_status(Daemon *d)
{
    bool degraded = false;

    if (d->shutting_down) {
        return "unhealthy";
    }
    for (size_t i = 0; i < d->pool_count; i++) {
        if (!worker_pool_ready(d->pools[i])) {
            return "unhealthy";
        }
        degraded = degraded || worker_pool_degraded(d->pools[i]);
    }
    return degraded || !store_is_available(d->store) ? "degraded" : "ok";
}

static void encode_store(Daemon *d, ei_x_buff *x)
{
    ei_x_encode_map_header(x, 2);
    ei_x_encode_atom(x, "backend");
    ei_x_encode_atom(x, store_backend_name(d->store));
    ei_x_encode_atom(x, "available");
    ei_x_encode_boolean(x, store_is_available(d->store));
}

static void handle_info(Daemon *d, DistCaller *caller)
{
    ei_x_buff x;

    if (ei_x_new(&x) < 0) {
        request_reply_error(d, caller, ERROR_OVERLOADED, "out of memory");
        return;
    }
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "ok");
    ei_x_encode_map_header(&x, 5);
    ei_x_encode_atom(&x, "version");
    ei_x_encode_binary(&x, SNAKEPIT_VERSION, (long)strlen(SNAKEPIT_VERSION));
    ei_x_encode_atom(&x, "node");
    ei_x_encode_atom(&x, dist_node_name(d->dist));
    ei_x_encode_atom(&x, "pools");
    encode_pools(d, &x);
    ei_x_encode_atom(&x, "store");
    encode_store(d, &x);
    ei_x_encode_atom(&x, "uptime_ms");
    ei_x_encode_ulonglong(&x, log_now_ms() - d->start_ms);
    reply_buffer(d, caller, &x);
}

static void handle_health(Daemon *d, DistCaller *caller)
{
    ei_x_buff x;
    const char *status = health_status(d);

    if (ei_x_new(&x) < 0) {
        request_reply_error(d, caller, ERROR_OVERLOADED, "out of memory");
        return;
    }
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "ok");
    ei_x_encode_map_header(&x, 2);
    ei_x_encode_atom(&x, "status");
    ei_x_encode_atom(&x, status);
    ei_x_encode_atom(&x, "checks");
    ei_x_encode_map_header(&x, 3);
    ei_x_encode_atom(&x, "store");
    encode_store(d, &x);
    ei_x_encode_atom(&x, "distribution");
    ei_x_encode_map_header(&x, 2);
    ei_x_encode_atom(&x, "status");
    ei_x_encode_atom(&x, d->shutting_down ? "shutting_down" : "ok");
    ei_x_encode_atom(&x, "peers");
    ei_x_encode_ulong(&x, dist_peer_count(d->dist));
    ei_x_encode_atom(&x, "pools");
    encode_pools(d, &x);
    reply_buffer(d, caller, &x);
}

/* Name the request's shape in the error, so the caller sees what was not understood. */
static void reply_unknown(Daemon *d, DistCaller *caller, const char *request, size_t len)
{
    char message[512];
    char atom[MAXATOMLEN_UTF8];
    int index = 0;
    int type;
    int size;
    int arity;

    ei_get_type(request, &index, &type, &size);
    if (ei_decode_atom(request, &index, atom) == 0) {
        snprintf(message, sizeof(message), "unknown request :%s; see the request table in the "
                 "documentation (ping, info, health, execute, session, ...)", atom);
    } else if (index = 0, ei_decode_tuple_header(request, &index, &arity) == 0 && arity > 0 &&
               ei_decode_atom(request, &index, atom) == 0) {
        snprintf(message, sizeof(message), "unknown request {:%s, ...} with %d elements", atom,
                 arity);
    } else {
        snprintf(message, sizeof(message), "unknown request: expected an atom or a tuple "
                 "starting with an atom, got a term of type '%c'", type);
    }
    (void)len;
    request_reply_error(d, caller, ERROR_BAD_REQUEST, message);
}

void request_handle(Daemon *d, DistCaller *caller, const char *request, size_t len)
{
    char atom[MAXATOMLEN_UTF8];
    int index = 0;
    int arity;

    d->calls_in_flight++;
    if (d->shutting_down) {
        request_reply_error(d, caller, ERROR_SHUTTING_DOWN, "the daemon is shutting down");
        return;
    }
    if (ei_decode_atom(request, &index, atom) == 0) {
        if (strcmp(atom, "ping") == 0) {
            reply_atom(d, caller, "pong");
            return;
        }
        if (strcmp(atom, "info") == 0) {
            handle_info(d, caller);
            return;
        }
        if (strcmp(atom, "health") == 0) {
            handle_health(d, caller);
            return;
        }
    }
    index = 0;
    if (ei_decode_tuple_header(request, &index, &arity) == 0 && arity > 0 &&
        ei_decode_atom(request, &index, atom) == 0) {
        if (strcmp(atom, "execute") == 0 || strcmp(atom, "execute_stream") == 0) {
            request_execute(d, caller, request, len, index, arity - 1,
                            strcmp(atom, "execute_stream") == 0);
            return;
        }
        if (strcmp(atom, "subscribe") == 0) {
            daemon_obs_subscribe(d, caller, request, index, arity - 1);
            return;
        }
        if (strcmp(atom, "unsubscribe") == 0) {
            daemon_obs_unsubscribe(d, caller, request, index, arity - 1);
            return;
        }
        if (strcmp(atom, "register_libraries") == 0) {
            request_register_libraries(d, caller, request, index, arity - 1);
            return;
        }
        if (strcmp(atom, "session") == 0) {
            request_session(d, caller, request, len, index, arity - 1);
            return;
        }
    }
    reply_unknown(d, caller, request, len);
}

void request_handle_cast(Daemon *d, const char *node, const char *request, size_t len)
{
    log_debug("Received a cast of %zu bytes from node %s", len, node);
}
