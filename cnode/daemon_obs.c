/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Observability glue: turns pool events and request outcomes into Prometheus metrics and
 * telemetry events, serves /metrics and the health endpoints, and delivers telemetry to
 * subscribed BEAM processes as {snakepit_telemetry, Event, Measurements, Metadata} messages.
 */
#include "daemon_obs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_server.h"
#include "log.h"
#include "metrics.h"
#include "metrics_product.h"
#include "telemetry.h"
#include "text_buffer.h"

/* Crashes whose replacement worker is not up yet, per pool. The oldest is paired first. */
#define DAEMON_OBS_PENDING_RESTARTS_MAX 64

typedef struct {
    uint32_t worker_id;
    const char *reason; /* a string literal of the pool's crash reasons */
} PendingRestart;

typedef struct {
    PendingRestart ring[DAEMON_OBS_PENDING_RESTARTS_MAX];
    unsigned head;
    unsigned count;
    uint64_t restarts; /* restarted events of this pool so far */
} PoolRestarts;

typedef struct Subscription {
    struct Subscription *next;
    Daemon *daemon;
    erlang_pid pid;
    TelemetrySubscriber *subscriber;
} Subscription;

struct DaemonObs {
    MetricsRegistry *registry;
    MetricsProduct product;
    Telemetry *telemetry;
    HttpServer *http;
    Subscription *subscriptions;
    PoolRestarts restarts[CONFIG_MAX_POOLS];
};

static size_t pool_index(const Daemon *d, const char *name)
{
    for (size_t i = 0; i < d->pool_count; i++) {
        if (strcmp(worker_pool_name(d->pools[i]), name) == 0) {
            return i;
        }
    }
    return 0;
}

/* ---- Metrics ---- */

/* Gauges read from the pools and the node at scrape time. */
static void collect(void *userdata)
{
    Daemon *d = userdata;
    DaemonObs *o = d->obs;
    MetricsProduct *p = &o->product;

    for (size_t i = 0; i < d->pool_count; i++) {
        const char *name = worker_pool_name(d->pools[i]);
        PoolStats s;
        worker_pool_stats(d->pools[i], &s);
        metrics_gauge_set(metrics_gauge_get(p->workers, METRICS_LABELS(name, "idle")), s.idle);
        metrics_gauge_set(metrics_gauge_get(p->workers, METRICS_LABELS(name, "busy")), s.busy);
        metrics_gauge_set(metrics_gauge_get(p->workers, METRICS_LABELS(name, "starting")),
                          s.starting + s.forking);
        metrics_gauge_set(metrics_gauge_get(p->workers, METRICS_LABELS(name, "stopping")),
                          s.stopping);
        metrics_gauge_set(metrics_gauge_get(p->workers, METRICS_LABELS(name, "degraded")),
                          worker_pool_degraded(d->pools[i]) ? 1 : 0);
        metrics_gauge_set(metrics_gauge_get(p->queue_depth, METRICS_LABELS(name)), s.queue_depth);
    }
    metrics_gauge_set(p->peers, dist_peer_count(d->dist));
    const char *store = store_backend_name(d->store);
    metrics_gauge_set(metrics_gauge_get(p->store_up, METRICS_LABELS(store)),
                      store_is_available(d->store) ? 1 : 0);
    metrics_gauge_set(metrics_gauge_get(p->sessions, METRICS_LABELS(store)),
                      (double)d->session_count);
}

static void count_request(DaemonObs *o, const char *pool, const char *command, const char *status)
{
    metrics_counter_inc(
        metrics_counter_get(o->product.requests_total, METRICS_LABELS(pool, command, status)));
}

/* ---- Telemetry ---- */

static int beam_sink(const TelemetryEvent *event, void *userdata)
{
    Subscription *s = userdata;
    ei_x_buff x;

    if (ei_x_new(&x) < 0) {
        return -ENOMEM;
    }
    int r = telemetry_event_encode(&x, event);
    if (r == 0) {
        r = dist_send(s->daemon->dist, &s->pid, x.buff, (size_t)x.index);
    }
    ei_x_free(&x);
    return r;
}

static void emit(DaemonObs *o, const TelemetryName *name, const TelemetryField *m, size_t nm,
                 const TelemetryField *md, size_t nmd)
{
    int r = telemetry_emit(o->telemetry, name, m, nm, md, nmd);

    if (r < 0) {
        log_debug_errno(r, "Failed to emit telemetry event %s.%s", name->parts[1],
                        name->parts[2]);
    }
}

void daemon_obs_emit_simple(Daemon *d, const char *group, const char *name, const char *key,
                            const char *atom_value)
{
    TelemetryName event = TELEMETRY_NAME("snakepit", group, name);
    TelemetryField md[] = {TELEMETRY_ATOM(key, atom_value)};

    if (d->obs && d->config->telemetry) {
        emit(d->obs, &event, NULL, 0, md, 1);
    }
}

static int64_t us(double seconds)
{
    return (int64_t)(seconds * 1e6);
}

static void worker_event(DaemonObs *o, const char *name, const PoolEvent *e, bool with_reason)
{
    TelemetryName event = TELEMETRY_NAME("snakepit", "worker", name);
    TelemetryField m[] = {
        TELEMETRY_INT("uptime_us", us(e->uptime_s)),
        TELEMETRY_INT("requests", e->requests),
    };
    TelemetryField md[7] = {
        TELEMETRY_STRING("pool", e->pool),
        TELEMETRY_INT("worker_id", e->worker_id),
        TELEMETRY_INT("os_pid", e->os_pid),
    };
    size_t n = 3;

    if (with_reason && e->reason) {
        md[n++] = (TelemetryField)TELEMETRY_ATOM("reason", e->reason);
    }
    if (e->exit_status >= 0) {
        md[n++] = (TelemetryField)TELEMETRY_INT("exit_status", e->exit_status);
    } else if (e->signal >= 0) {
        md[n++] = (TelemetryField)TELEMETRY_INT("signal", e->signal);
    }
    if (e->correlation_id && e->correlation_id[0]) {
        md[n++] = (TelemetryField)TELEMETRY_STRING("correlation_id", e->correlation_id);
    }
    emit(o, &event, m, 2, md, n);
}

/* Remember a crash, so that the start of its replacement emits worker.restarted. */
static void push_pending_restart(PoolRestarts *r, const PoolEvent *e)
{
    if (r->count == DAEMON_OBS_PENDING_RESTARTS_MAX) {
        /* More crashes than this wait for a worker: the oldest loses its restarted event. */
        r->head = (r->head + 1) % DAEMON_OBS_PENDING_RESTARTS_MAX;
        r->count--;
    }
    r->ring[(r->head + r->count) % DAEMON_OBS_PENDING_RESTARTS_MAX] =
        (PendingRestart){.worker_id = e->worker_id, .reason = e->reason ? e->reason : "exited"};
    r->count++;
}

static void emit_restarted(DaemonObs *o, PoolRestarts *r, const PoolEvent *e)
{
    PendingRestart previous = r->ring[r->head];
    TelemetryName name = TELEMETRY_NAME("snakepit", "worker", "restarted");

    r->head = (r->head + 1) % DAEMON_OBS_PENDING_RESTARTS_MAX;
    r->count--;
    r->restarts++;
    TelemetryField m[] = {TELEMETRY_INT("restarts", (int64_t)r->restarts)};
    TelemetryField md[] = {
        TELEMETRY_STRING("pool", e->pool),
        TELEMETRY_INT("worker_id", e->worker_id),
        TELEMETRY_INT("previous_worker_id", previous.worker_id),
        TELEMETRY_ATOM("reason", previous.reason),
    };
    emit(o, &name, m, 1, md, 4);
}

static void on_worker_started(Daemon *d, const PoolEvent *e)
{
    DaemonObs *o = d->obs;
    PoolRestarts *restarts = &o->restarts[pool_index(d, e->pool)];
    TelemetryName started = TELEMETRY_NAME("snakepit", "worker", "started");
    TelemetryField m[] = {TELEMETRY_INT("startup_us", us(e->duration_s))};
    TelemetryField md[] = {
        TELEMETRY_STRING("pool", e->pool),
        TELEMETRY_INT("worker_id", e->worker_id),
        TELEMETRY_INT("os_pid", e->os_pid),
    };

    emit(o, &started, m, 1, md, 3);
    if (restarts->count > 0) {
        emit_restarted(o, restarts, e);
    }
}

/* Whether the error kind named `name` is retryable; false for a name that is no kind. */
static bool kind_name_retryable(const char *name)
{
    for (int k = 0; k < ERROR_KIND_COUNT; k++) {
        if (strcmp(error_kind_name((ErrorKind)k), name) == 0) {
            return error_kind_retryable((ErrorKind)k);
        }
    }
    return false;
}

static void on_call_done(Daemon *d, const PoolEvent *e)
{
    DaemonObs *o = d->obs;
    bool ok = strcmp(e->status, "ok") == 0;
    TelemetryName name = ok ? TELEMETRY_NAME("snakepit", "request", "stop")
                            : TELEMETRY_NAME("snakepit", "request", "exception");
    TelemetryField m[] = {
        TELEMETRY_INT("duration_us", us(e->duration_s)),
        TELEMETRY_INT("queue_time_us", us(e->queue_s)),
    };
    TelemetryField md[7] = {
        TELEMETRY_STRING("correlation_id", e->correlation_id ? e->correlation_id : ""),
        TELEMETRY_STRING("pool", e->pool),
        TELEMETRY_STRING("command", e->command ? e->command : ""),
        TELEMETRY_INT("worker_id", e->worker_id),
    };
    size_t n = 4;

    if (!ok) {
        md[n++] = (TelemetryField)TELEMETRY_ATOM("kind", e->status);
        md[n++] = (TelemetryField)TELEMETRY_BOOL("retryable", kind_name_retryable(e->status));
        if (e->error_type) {
            md[n++] = (TelemetryField)TELEMETRY_STRING("error_type", e->error_type);
        }
    }
    emit(o, &name, m, 2, md, n);
    count_request(o, e->pool, e->command ? e->command : "", e->status);
    metrics_histogram_observe(
        metrics_histogram_get(o->product.request_duration, METRICS_LABELS(e->pool)),
        e->duration_s);
    metrics_histogram_observe(metrics_histogram_get(o->product.queue_wait, METRICS_LABELS(e->pool)),
                              e->queue_s);
}

void daemon_obs_pool_event(Daemon *d, const PoolEvent *e)
{
    DaemonObs *o = d->obs;
    MetricsProduct *p = &o->product;

    if (!d->config->telemetry) {
        return;
    }
    switch (e->type) {
    case POOL_EVENT_WORKER_STARTED:
        on_worker_started(d, e);
        break;
    case POOL_EVENT_WORKER_CRASHED:
        worker_event(o, "crashed", e, true);
        metrics_counter_inc(metrics_counter_get(p->worker_restarts_total,
                                                METRICS_LABELS(e->pool, e->reason)));
        push_pending_restart(&o->restarts[pool_index(d, e->pool)], e);
        break;
    case POOL_EVENT_WORKER_RECYCLED: {
        worker_event(o, "recycled", e, true);
        metrics_counter_inc(metrics_counter_get(p->worker_restarts_total,
                                                METRICS_LABELS(e->pool, "recycled")));
        /* Its replacement's start is a restart too, with the reason the metric counts. */
        PoolEvent recycled = *e;
        recycled.reason = "recycled";
        push_pending_restart(&o->restarts[pool_index(d, e->pool)], &recycled);
        break;
    }
    case POOL_EVENT_WORKER_STOPPED:
        worker_event(o, "stopped", e, true);
        break;
    case POOL_EVENT_HEARTBEAT_MISSED: {
        TelemetryName name = TELEMETRY_NAME("snakepit", "worker", "heartbeat_missed");
        TelemetryField m[] = {TELEMETRY_INT("missed", e->missed)};
        TelemetryField md[] = {TELEMETRY_STRING("pool", e->pool),
                               TELEMETRY_INT("worker_id", e->worker_id),
                               TELEMETRY_INT("os_pid", e->os_pid)};
        emit(o, &name, m, 1, md, 3);
        metrics_counter_inc(metrics_counter_get(p->heartbeat_missed_total, METRICS_LABELS(e->pool)));
        break;
    }
    case POOL_EVENT_CALL_DONE:
        on_call_done(d, e);
        break;
    case POOL_EVENT_QUEUE_FULL:
    case POOL_EVENT_QUEUE_TIMEOUT: {
        bool full = e->type == POOL_EVENT_QUEUE_FULL;
        TelemetryName name = full ? TELEMETRY_NAME("snakepit", "queue", "full")
                                  : TELEMETRY_NAME("snakepit", "queue", "timeout");
        TelemetryField m[] = {full ? (TelemetryField)TELEMETRY_INT("queue_depth", e->queue_depth)
                                   : (TelemetryField)TELEMETRY_INT("queue_time_us",
                                                                   us(e->queue_s))};
        TelemetryField md[] = {
            TELEMETRY_STRING("correlation_id", e->correlation_id ? e->correlation_id : ""),
            TELEMETRY_STRING("pool", e->pool),
            TELEMETRY_STRING("command", e->command ? e->command : ""),
        };
        emit(o, &name, m, 1, md, 3);
        break;
    }
    }
}

void daemon_obs_request_start(Daemon *d, const char *correlation_id, const char *pool,
                              const char *command, const char *caller_node,
                              const char *session_id)
{
    TelemetryName name = TELEMETRY_NAME("snakepit", "request", "start");
    TelemetryField m[] = {TELEMETRY_INT("system_time_us", (int64_t)(ev_time() * 1e6))};
    TelemetryField md[5] = {
        TELEMETRY_STRING("correlation_id", correlation_id),
        TELEMETRY_STRING("pool", pool),
        TELEMETRY_STRING("command", command),
        TELEMETRY_ATOM("caller_node", caller_node),
    };
    size_t n = 4;

    if (!d->config->telemetry) {
        return;
    }
    if (session_id) {
        md[n++] = (TelemetryField)TELEMETRY_STRING("session_id", session_id);
    }
    emit(d->obs, &name, m, 1, md, n);
}

void daemon_obs_request_rejected(Daemon *d, const char *correlation_id, const char *pool,
                                 const char *command, ErrorKind kind)
{
    if (!d->config->telemetry) {
        return;
    }
    count_request(d->obs, pool, command, error_kind_name(kind));
    if (!correlation_id) {
        return;
    }
    /* request.start was emitted, so the request ends with its exception event. */
    TelemetryName name = TELEMETRY_NAME("snakepit", "request", "exception");
    TelemetryField m[] = {TELEMETRY_INT("duration_us", 0), TELEMETRY_INT("queue_time_us", 0)};
    TelemetryField md[] = {
        TELEMETRY_STRING("correlation_id", correlation_id),
        TELEMETRY_STRING("pool", pool),
        TELEMETRY_STRING("command", command),
        TELEMETRY_ATOM("kind", error_kind_name(kind)),
        TELEMETRY_BOOL("retryable", error_kind_retryable(kind)),
    };
    emit(d->obs, &name, m, 2, md, 5);
}

/* ---- Subscriptions ---- */

static void reply_atom_or_error(Daemon *d, DistCaller *caller, int r, const char *what)
{
    ei_x_buff x;
    char message[256];

    if (r < 0) {
        snprintf(message, sizeof(message), "%s: %s", what,
                 r == -EMFILE   ? "too many subscribers (the maximum is 256)"
                 : r == -EINVAL ? "expected {:subscribe, pid, [[atom, ...], ...]} with at most "
                                  "16 prefixes of at most 6 atoms"
                                : strerror(-r));
        request_reply_error(d, caller, r == -EMFILE ? ERROR_OVERLOADED : ERROR_BAD_REQUEST,
                            message);
        return;
    }
    if (ei_x_new(&x) < 0) {
        request_reply_error(d, caller, ERROR_OVERLOADED, "out of memory");
        return;
    }
    ei_x_encode_atom(&x, "ok");
    request_reply(d, caller, x.buff, (size_t)x.index);
    ei_x_free(&x);
}

/* Decode [[atom, ...], ...] into names whose parts point into `atoms`. */
static int decode_prefixes(const char *buf, int *index, TelemetryName *prefixes, size_t *count,
                           char atoms[][MAXATOMLEN_UTF8])
{
    int n;
    size_t used = 0;

    if (ei_decode_list_header(buf, index, &n) < 0 || n > TELEMETRY_PREFIXES_MAX) {
        return -EINVAL;
    }
    for (int i = 0; i < n; i++) {
        int parts;
        if (ei_decode_list_header(buf, index, &parts) < 0 || parts > TELEMETRY_NAME_PARTS_MAX) {
            return -EINVAL;
        }
        prefixes[i].n_parts = (size_t)parts;
        for (int j = 0; j < parts; j++) {
            if (ei_decode_atom(buf, index, atoms[used]) < 0) {
                return -EINVAL;
            }
            prefixes[i].parts[j] = atoms[used++];
        }
        /* The tail of a non-empty list. */
        if (parts > 0 && ei_decode_list_header(buf, index, &parts) < 0) {
            return -EINVAL;
        }
    }
    int tail;
    if (n > 0 && ei_decode_list_header(buf, index, &tail) < 0) {
        return -EINVAL;
    }
    *count = (size_t)n;
    return 0;
}

static Subscription *find_subscription(DaemonObs *o, const erlang_pid *pid)
{
    for (Subscription *s = o->subscriptions; s; s = s->next) {
        if (ei_cmp_pids(&s->pid, (erlang_pid *)pid) == 0) {
            return s;
        }
    }
    return NULL;
}

static void remove_subscription(DaemonObs *o, Subscription *s)
{
    for (Subscription **p = &o->subscriptions; *p; p = &(*p)->next) {
        if (*p == s) {
            *p = s->next;
            break;
        }
    }
    telemetry_unsubscribe(o->telemetry, s->subscriber);
    free(s);
}

void daemon_obs_subscribe(Daemon *d, DistCaller *caller, const char *request, int index,
                          int arity)
{
    DaemonObs *o = d->obs;
    TelemetryName prefixes[TELEMETRY_PREFIXES_MAX];
    static char atoms[TELEMETRY_PREFIXES_MAX * TELEMETRY_NAME_PARTS_MAX][MAXATOMLEN_UTF8];
    erlang_pid pid;
    size_t n = 0;

    if (!d->config->telemetry) {
        request_reply_error(d, caller, ERROR_BAD_REQUEST,
                            "telemetry is off: the config sets [node] telemetry = false");
        return;
    }
    if (arity != 2 || ei_decode_pid(request, &index, &pid) < 0 ||
        decode_prefixes(request, &index, prefixes, &n, atoms) < 0) {
        reply_atom_or_error(d, caller, -EINVAL, "invalid subscription");
        return;
    }
    Subscription *old = find_subscription(o, &pid);
    if (old) {
        remove_subscription(o, old);
    }
    Subscription *s = calloc(1, sizeof(*s));
    if (!s) {
        reply_atom_or_error(d, caller, -ENOMEM, "subscription failed");
        return;
    }
    s->daemon = d;
    s->pid = pid;
    int r = telemetry_subscribe(o->telemetry, prefixes, n, 0, beam_sink, s,
                                &s->subscriber);
    if (r < 0) {
        free(s);
        reply_atom_or_error(d, caller, r, "subscription failed");
        return;
    }
    s->next = o->subscriptions;
    o->subscriptions = s;
    reply_atom_or_error(d, caller, 0, NULL);
}

void daemon_obs_unsubscribe(Daemon *d, DistCaller *caller, const char *request, int index,
                            int arity)
{
    erlang_pid pid;

    if (arity != 1 || ei_decode_pid(request, &index, &pid) < 0) {
        reply_atom_or_error(d, caller, -EINVAL, "expected {:unsubscribe, pid}");
        return;
    }
    Subscription *s = find_subscription(d->obs, &pid);
    if (s) {
        remove_subscription(d->obs, s);
    }
    reply_atom_or_error(d, caller, 0, NULL);
}

void daemon_obs_node_down(Daemon *d, const char *node)
{
    DaemonObs *o = d->obs;

    for (Subscription *s = o->subscriptions, *next; s; s = next) {
        next = s->next;
        if (strcmp(s->pid.node, node) == 0) {
            remove_subscription(o, s);
        }
    }
}

/* ---- Health endpoints ---- */

static bool probe_live(void *userdata, char *reason, size_t size)
{
    return true;
}

static bool probe_ready(void *userdata, char *reason, size_t size)
{
    Daemon *d = userdata;

    if (d->shutting_down) {
        snprintf(reason, size, "shutting down");
        return false;
    }
    for (size_t i = 0; i < d->pool_count; i++) {
        if (!worker_pool_ready(d->pools[i])) {
            snprintf(reason, size, "pool '%s' has no ready worker", worker_pool_name(d->pools[i]));
            return false;
        }
        if (worker_pool_degraded(d->pools[i])) {
            snprintf(reason, size, "pool '%s' is degraded: its workers keep crashing",
                     worker_pool_name(d->pools[i]));
            return false;
        }
    }
    return true;
}

static bool probe_startup(void *userdata, char *reason, size_t size)
{
    Daemon *d = userdata;

    if (!d->ready_announced) {
        snprintf(reason, size, "starting: waiting for the first worker of every pool");
        return false;
    }
    return true;
}

static int write_health_json(void *userdata, TextBuffer *out)
{
    Daemon *d = userdata;
    char reason[256] = "";
    bool ready = probe_ready(d, reason, sizeof(reason));

    text_buffer_printf(out, "{\"status\":\"%s\",\"node\":\"", ready ? "ok" : "unavailable");
    text_buffer_append_json_string(out, dist_node_name(d->dist));
    text_buffer_append_char(out, '"');
    text_buffer_printf(out, ",\"peers\":%u,\"pools\":[", dist_peer_count(d->dist));
    for (size_t i = 0; i < d->pool_count; i++) {
        PoolStats s;
        worker_pool_stats(d->pools[i], &s);
        text_buffer_printf(out, "%s{\"name\":\"", i ? "," : "");
        text_buffer_append_json_string(out, worker_pool_name(d->pools[i]));
        text_buffer_printf(out,
                           "\",\"size\":%u,\"degraded\":%s,\"queue_depth\":%u,\"workers\":"
                           "{\"idle\":%u,\"busy\":%u,\"starting\":%u,\"stopping\":%u}}",
                           s.size, worker_pool_degraded(d->pools[i]) ? "true" : "false",
                           s.queue_depth, s.idle, s.busy, s.starting + s.forking, s.stopping);
    }
    text_buffer_printf(out, "],\"store\":{\"backend\":\"%s\",\"available\":%s}",
                       store_backend_name(d->store), store_is_available(d->store) ? "true" : "false");
    if (!ready) {
        text_buffer_append_str(out, ",\"reason\":\"");
        text_buffer_append_json_string(out, reason);
        text_buffer_append_char(out, '"');
    }
    text_buffer_append_char(out, '}');
    return ready ? 200 : 503;
}

/* ---- Start and stop ---- */

int daemon_obs_start(Daemon *d)
{
    DaemonObs *o = calloc(1, sizeof(*o));
    int r;

    if (!o) {
        return -ENOMEM;
    }
    d->obs = o;
    o->registry = metrics_registry_new();
    if (!o->registry) {
        return -ENOMEM;
    }
    r = metrics_product_register(o->registry, SNAKEPIT_VERSION, &o->product);
    if (r < 0) {
        return log_error_errno(r, "Failed to register the metrics");
    }
    r = metrics_registry_add_collector(o->registry, collect, NULL, d);
    if (r < 0) {
        return r;
    }
    r = telemetry_new(d->loop, o->product.telemetry_dropped_total, &o->telemetry);
    if (r < 0) {
        return r;
    }
    if (strcmp(d->config->http_listen, "off") == 0) {
        return 0;
    }
    HttpServerConfig http;
    http_server_config_init(&http);
    http.listen = d->config->http_listen;
    static HttpServerHealth health;
    health = (HttpServerHealth){.live = probe_live, .ready = probe_ready,
                                .startup = probe_startup, .write_json = write_health_json,
                                .userdata = d};
    r = http_server_start(d->loop, &http, o->registry, &health, &o->http);
    if (r < 0) {
        return r;
    }
    return 0;
}

void daemon_obs_stop(Daemon *d)
{
    DaemonObs *o = d->obs;

    if (!o) {
        return;
    }
    http_server_free(o->http);
    while (o->subscriptions) {
        remove_subscription(o, o->subscriptions);
    }
    telemetry_free(o->telemetry);
    metrics_registry_free(o->registry);
    free(o);
    d->obs = NULL;
}
