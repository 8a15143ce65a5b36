/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Calls and dispatch of a worker pool. A call is a PoolJob: queued FIFO while every worker is
 * busy, then run by one worker. Its timer is first the queue timeout (or the deadline, if that
 * comes sooner), then the deadline. Past the deadline the caller gets a timeout error at once and
 * the worker is interrupted with SIGINT. A worker that has not replied after a grace period is
 * killed.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dist_frame.h"
#include "error.h"
#include "log.h"
#include "worker_pool_internal.h"

static const char *const worker_state_names[WORKER_STATE_COUNT] = {
    [WORKER_FORKING] = "forking", [WORKER_STARTING] = "starting", [WORKER_IDLE] = "idle",
    [WORKER_BUSY] = "busy",       [WORKER_STOPPING] = "stopping",
};

static void pool_dispatch(WorkerPool *pool);
static void pool_top_up(WorkerPool *pool);
static Worker *find_worker_by_id(WorkerPool *pool, uint32_t id);

/* ---- Events ---- */

void worker_pool_emit(WorkerPool *pool, const PoolEvent *event)
{
    if (pool->hooks.on_event) {
        pool->hooks.on_event(pool->userdata, event);
    }
}

void worker_pool_emit_worker(WorkerPool *pool, PoolEventType type, const Worker *w,
                             const char *reason)
{
    PoolEvent event = {
        .type = type,
        .pool = pool->config.name,
        .worker_id = w->id,
        .os_pid = (int)w->pid,
        .uptime_s = w->started > 0 ? ev_now(pool->loop) - w->started : 0,
        .requests = w->requests,
        .reason = reason,
        .exit_status = w->exit_status,
        .signal = w->exit_signal,
        .duration_s = ev_now(pool->loop) - w->fork_requested,
        .correlation_id = w->job ? w->job->correlation_id : NULL,
    };
    worker_pool_emit(pool, &event);
}

/* The atom of the error kind in a reply {error, #{kind => K, ...}}, or "ok". */
static void reply_status(const char *term, size_t len, char *kind, size_t size,
                         char *error_type, size_t type_size)
{
    int index = 0;
    int arity;
    char atom[MAXATOMLEN_UTF8];

    snprintf(kind, size, "ok");
    error_type[0] = '\0';
    if (ei_decode_tuple_header(term, &index, &arity) < 0 || arity != 2 ||
        ei_decode_atom(term, &index, atom) < 0 || strcmp(atom, "error") != 0) {
        return;
    }
    snprintf(kind, size, "error");
    if (ei_decode_map_header(term, &index, &arity) < 0) {
        return;
    }
    for (int i = 0; i < arity && (size_t)index < len; i++) {
        int key_index = index;
        if (ei_decode_atom(term, &index, atom) < 0) {
            index = key_index;
            if (ei_skip_term(term, &index) < 0 || ei_skip_term(term, &index) < 0) {
                return;
            }
            continue;
        }
        int type;
        int n;
        if (strcmp(atom, "kind") == 0 && ei_decode_atom(term, &index, kind) == 0) {
            continue;
        }
        if (strcmp(atom, "type") == 0 && ei_get_type(term, &index, &type, &n) == 0 &&
            type == ERL_BINARY_EXT && (size_t)n < type_size) {
            long l;
            ei_decode_binary(term, &index, error_type, &l);
            error_type[l] = '\0';
            continue;
        }
        if (ei_skip_term(term, &index) < 0) {
            return;
        }
    }
}

/* Copy {error, Map} with correlation_id added to the map; other terms are copied unchanged. */
static int add_correlation_id(ei_x_buff *x, const char *term, size_t len, const char *id)
{
    int index = 0;
    int arity;
    int map_arity;
    char atom[MAXATOMLEN_UTF8];

    if (ei_decode_tuple_header(term, &index, &arity) == 0 && arity == 2 &&
        ei_decode_atom(term, &index, atom) == 0 && strcmp(atom, "error") == 0 &&
        (uint8_t)term[index] == ERL_MAP_EXT && ei_decode_map_header(term, &index, &map_arity) == 0) {
        ei_x_encode_tuple_header(x, 2);
        ei_x_encode_atom(x, "error");
        ei_x_encode_map_header(x, map_arity + 1);
        ei_x_append_buf(x, term + index, (int)(len - (size_t)index));
        ei_x_encode_atom(x, "correlation_id");
        return ei_x_encode_binary(x, id, (long)strlen(id));
    }
    return ei_x_append_buf(x, term, (int)len);
}

/* Report the end of a call: `status` is "ok", an error kind, or "cancelled". */
static void job_emit_status(PoolJob *job, const char *status, const char *error_type)
{
    WorkerPool *pool = job->pool;
    ev_tstamp now = ev_now(pool->loop);
    PoolEvent event = {
        .type = POOL_EVENT_CALL_DONE,
        .pool = pool->config.name,
        .worker_id = job->worker ? job->worker->id : 0,
        .os_pid = job->worker ? (int)job->worker->pid : 0,
        .correlation_id = job->correlation_id,
        .command = job->command,
        .duration_s = now - job->submitted,
        .queue_s = (job->started > 0 ? job->started : now) - job->submitted,
        .status = status,
        .error_type = error_type,
    };
    worker_pool_emit(pool, &event);
}

static void job_emit_done(PoolJob *job, const char *term, size_t len)
{
    char kind[MAXATOMLEN_UTF8];
    char error_type[256];

    reply_status(term, len, kind, sizeof(kind), error_type, sizeof(error_type));
    job_emit_status(job, kind, error_type[0] ? error_type : NULL);
}

/* ---- Replies ---- */

/* Wrap the last message of a stream: {snakepit_stream, Ref, Inner}. */
static int stream_message(const PoolJob *job, ei_x_buff *x, const char *inner, size_t len)
{
    if (ei_x_encode_tuple_header(x, 3) < 0 || ei_x_encode_atom(x, "snakepit_stream") < 0 ||
        ei_x_encode_ref(x, &job->stream_ref) < 0 || ei_x_append_buf(x, inner, (int)len) < 0) {
        return -ENOMEM;
    }
    return 0;
}

static void job_deliver(PoolJob *job, const char *term, size_t len);

/* Send the stream's caller nothing more, and stop probing it. A late probe reply is ignored. */
static void stream_close(PoolJob *job)
{
    ev_timer_stop(job->pool->loop, &job->probe_timer);
    job->stream_pid.node[0] = '\0';
}

/*
 * Deliver `term` (no version byte) as the call's reply or its stream's last message, with the
 * call's correlation id added to an error map.
 */
static void job_answer(PoolJob *job, const char *term, size_t len)
{
    ei_x_buff x;

    if (job->correlation_id[0] && ei_x_new(&x) == 0) {
        if (add_correlation_id(&x, term, len, job->correlation_id) == 0) {
            job_emit_done(job, x.buff, (size_t)x.index);
            job_deliver(job, x.buff, (size_t)x.index);
            ei_x_free(&x);
            return;
        }
        ei_x_free(&x);
    }
    job_emit_done(job, term, len);
    job_deliver(job, term, len);
}

static void job_deliver(PoolJob *job, const char *term, size_t len)
{
    WorkerPool *pool = job->pool;
    DistCaller *caller = job->caller;

    if (caller) {
        job->caller = NULL; /* the reply hook frees it */
        pool->hooks.reply(pool->userdata, caller, term, len);
        return;
    }
    if (job->stream && job->stream_pid.node[0]) {
        ei_x_buff x;
        if (ei_x_new(&x) == 0) {
            if (stream_message(job, &x, term, len) == 0) {
                pool->hooks.send(pool->userdata, &job->stream_pid, x.buff, (size_t)x.index);
            }
            ei_x_free(&x);
        }
        stream_close(job);
    }
}

static void job_answer_error(PoolJob *job, ErrorKind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void job_answer_error(PoolJob *job, ErrorKind kind, const char *fmt, ...)
{
    char message[512];
    va_list ap;
    ei_x_buff x;

    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    if (ei_x_new(&x) < 0) {
        return;
    }
    if (error_encode(&x, kind, 0, "%s", message) == 0) {
        job_answer(job, x.buff, (size_t)x.index);
    }
    ei_x_free(&x);
}

static bool job_answered(const PoolJob *job)
{
    return !job->caller && !(job->stream && job->stream_pid.node[0]);
}

/* ---- Jobs ---- */

static void queue_remove(WorkerPool *pool, PoolJob *job)
{
    if (job->prev) {
        job->prev->next = job->next;
    } else {
        pool->queue_head = job->next;
    }
    if (job->next) {
        job->next->prev = job->prev;
    } else {
        pool->queue_tail = job->prev;
    }
    job->next = job->prev = NULL;
    pool->queue_len--;
}

static void queue_push(WorkerPool *pool, PoolJob *job)
{
    job->prev = pool->queue_tail;
    job->next = NULL;
    if (pool->queue_tail) {
        pool->queue_tail->next = job;
    } else {
        pool->queue_head = job;
    }
    pool->queue_tail = job;
    pool->queue_len++;
}

static void job_free(PoolJob *job)
{
    if (job->caller) {
        job->pool->hooks.drop(job->pool->userdata, job->caller);
    }
    if (job->stream && job->stream_pid.node[0]) {
        stream_close(job);
    }
    ev_timer_stop(job->pool->loop, &job->timer);
    ev_timer_stop(job->pool->loop, &job->probe_timer);
    free(job->payload);
    free(job->session_id);
    free(job);
}

static void worker_kill_grace_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    PoolJob *job = w->data;

    if (!job->worker) {
        return;
    }
    if (job->cancelled) {
        worker_process_kill(job->worker, SIGKILL,
                            "it did not stop after its call was cancelled (the caller is gone)");
        return;
    }
    job->worker->crash_reason = "timeout";
    worker_process_kill(job->worker, SIGKILL, "it did not stop after its call timed out");
}

/*
 * Interrupt the running call with SIGINT (Python raises KeyboardInterrupt in it) and kill the
 * worker if it has not replied within the kill grace. The reply, if it comes, goes nowhere.
 */
static void job_interrupt(PoolJob *job)
{
    WorkerPool *pool = job->pool;
    Worker *worker = job->worker;

    if (worker->pidfd >= 0) {
        syscall(SYS_pidfd_send_signal, worker->pidfd, SIGINT, NULL, 0);
    }
    ev_timer_stop(pool->loop, &job->timer);
    ev_set_cb(&job->timer, worker_kill_grace_cb);
    ev_timer_set(&job->timer, pool->config.kill_grace_ms / 1000.0, 0.);
    ev_timer_start(pool->loop, &job->timer);
}

static bool job_interrupted(PoolJob *job)
{
    return ev_cb(&job->timer) == worker_kill_grace_cb;
}

static void job_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    PoolJob *job = w->data;
    WorkerPool *pool = job->pool;
    double waited_ms = (ev_now(loop) - job->submitted) * 1000.0;

    if (!job->worker) {
        bool deadline = ev_now(loop) >= job->deadline - 0.0005;
        queue_remove(pool, job);
        PoolEvent event = {.type = POOL_EVENT_QUEUE_TIMEOUT, .pool = pool->config.name,
                           .correlation_id = job->correlation_id, .command = job->command,
                           .queue_s = ev_now(loop) - job->submitted};
        worker_pool_emit(pool, &event);
        if (deadline) {
            job_answer_error(job, ERROR_TIMEOUT,
                             "the call timed out after %.0f ms in the queue of pool '%s' (timeout "
                             "%u ms)",
                             waited_ms, pool->config.name, job->timeout_ms);
        } else {
            job_answer_error(job, ERROR_QUEUE_TIMEOUT,
                             "no worker of pool '%s' was free within the queue timeout of %u ms",
                             pool->config.name, pool->config.queue_timeout_ms);
        }
        job_free(job);
        return;
    }
    Worker *worker = job->worker;
    job_answer_error(job, ERROR_TIMEOUT,
                     "the call exceeded its timeout of %u ms; worker %u (pid %d) was interrupted",
                     job->timeout_ms, worker->id, (int)worker->pid);
    log_warning("Pool '%s': call %llu timed out after %u ms, interrupting worker %u (pid %d)",
                pool->config.name, (unsigned long long)job->id, job->timeout_ms, worker->id,
                (int)worker->pid);
    job_interrupt(job);
}

/*
 * End a call whose caller is gone, sending it nothing: a queued call is freed at once, and a
 * running one is interrupted as at its deadline. `cause` completes the log line.
 */
static void job_cancel(PoolJob *job, const char *cause)
{
    WorkerPool *pool = job->pool;

    log_info("Pool '%s': cancelled %s %llu (%s, correlation_id %s) because %s", pool->config.name,
             job->stream ? "stream" : "call", (unsigned long long)job->id, job->command,
             job->correlation_id, cause);
    job_emit_status(job, "cancelled", NULL);
    if (job->caller) {
        pool->hooks.drop(pool->userdata, job->caller);
        job->caller = NULL;
    }
    stream_close(job);
    job->cancelled = true;
    if (job->worker) {
        job_interrupt(job);
        return;
    }
    if (job->prev || pool->queue_head == job) {
        queue_remove(pool, job);
    }
    job_free(job);
}

static void job_start(WorkerPool *pool, Worker *worker, PoolJob *job)
{
    double left = job->deadline - ev_now(pool->loop);

    worker->state = WORKER_BUSY;
    worker->job = job;
    job->worker = worker;
    job->started = ev_now(pool->loop);
    ev_timer_stop(pool->loop, &job->timer);
    ev_timer_set(&job->timer, left > 0 ? left : 0.001, 0.);
    ev_timer_start(pool->loop, &job->timer);
    if (job->session_id && job->want_worker != worker->id && pool->hooks.on_session_bound) {
        pool->hooks.on_session_bound(pool->userdata, job->session_id, job->session_id_len,
                                     worker->id);
    }
    int r = worker_process_send(worker, WORKER_FRAME_CALL, job->id, job->payload,
                                job->payload_len);
    if (r < 0) {
        worker_process_kill(worker, SIGKILL, "its request socket failed");
    }
    free(job->payload);
    job->payload = NULL;
}

static Worker *find_idle_worker(WorkerPool *pool)
{
    for (Worker *w = pool->workers; w; w = w->next) {
        if (w->state == WORKER_IDLE) {
            return w;
        }
    }
    return NULL;
}

static Worker *find_worker_by_id(WorkerPool *pool, uint32_t id)
{
    for (Worker *w = pool->workers; w; w = w->next) {
        if (w->id == id) {
            return w;
        }
    }
    return NULL;
}

bool worker_pool_owns_pid(const WorkerPool *pool, int pid)
{
    if (pool->zygote.pid == pid) {
        return true;
    }
    for (const Worker *w = pool->workers; w; w = w->next) {
        if (w->pid == pid) {
            return true;
        }
    }
    return false;
}

bool worker_pool_has_worker(const WorkerPool *pool, uint32_t id)
{
    Worker *w = find_worker_by_id((WorkerPool *)pool, id);

    return w && w->state != WORKER_STOPPING && w->state != WORKER_FORKING;
}

/* The first queued job this worker may run: FIFO, skipping jobs held for another worker. */
static PoolJob *next_job_for(WorkerPool *pool, const Worker *w)
{
    for (PoolJob *job = pool->queue_head; job; job = job->next) {
        if (!job->strict || job->want_worker == w->id) {
            return job;
        }
    }
    return NULL;
}

static void pool_dispatch(WorkerPool *pool)
{
    for (Worker *w = pool->workers; w && pool->queue_head; w = w->next) {
        if (w->state != WORKER_IDLE) {
            continue;
        }
        PoolJob *job = next_job_for(pool, w);
        if (job) {
            queue_remove(pool, job);
            job_start(pool, w, job);
        }
    }
}

/* Jobs held for a worker that is gone can never run: their session's state was lost. */
static void fail_jobs_held_for(WorkerPool *pool, uint32_t worker_id, const char *status)
{
    for (PoolJob *job = pool->queue_head, *next; job; job = next) {
        next = job->next;
        if (job->strict && job->want_worker == worker_id) {
            queue_remove(pool, job);
            job_answer_error(job, ERROR_SESSION_WORKER_UNAVAILABLE,
                             "the worker %u that held this session's state %s; the state is lost",
                             worker_id, status);
            job_free(job);
        }
    }
}

/* Ask the caller's node whether the stream's caller is alive. */
static int stream_probe(PoolJob *job)
{
    WorkerPool *pool = job->pool;
    int r = pool->hooks.probe(pool->userdata, &job->stream_pid, &job->probe_ref);

    if (r < 0) {
        log_debug_errno(r, "Pool '%s': probe of the caller of stream %llu failed",
                        pool->config.name, (unsigned long long)job->id);
        return r;
    }
    job->probes_sent++;
    log_debug("Pool '%s': sent probe %u of the caller of stream %llu", pool->config.name,
              job->probes_sent, (unsigned long long)job->id);
    return 0;
}

/* A failed probe changes nothing, because a node that is gone cancels its streams itself. */
static void probe_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)stream_probe(w->data);
}

/*
 * Reply {ok, Ref} to a stream's caller, keep where the stream goes, and probe the caller now and
 * then every WORKER_POOL_PROBE_INTERVAL_S while the stream is open, so that its exit cancels the
 * stream. Returns 0, or -ENOTCONN when the caller's node is gone.
 */
static int stream_open(WorkerPool *pool, PoolJob *job)
{
    ei_x_buff x;

    job->stream_pid = job->caller->pid;
    pool->hooks.make_ref(pool->userdata, &job->stream_ref);
    pool->hooks.make_ref(pool->userdata, &job->probe_ref);
    if (ei_x_new(&x) < 0) {
        return -ENOMEM;
    }
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "ok");
    ei_x_encode_ref(&x, &job->stream_ref);
    pool->hooks.reply(pool->userdata, job->caller, x.buff, (size_t)x.index);
    job->caller = NULL;
    ei_x_free(&x);
    /* The first probe goes out with the reply, so a caller dead on arrival is found at once. */
    if (stream_probe(job) == -ENOTCONN) {
        return -ENOTCONN;
    }
    job->probe_timer.repeat = WORKER_POOL_PROBE_INTERVAL_S;
    ev_timer_again(pool->loop, &job->probe_timer);
    return 0;
}

/* The worker to start a new call on now, or NULL to queue it. */
static Worker *pick_worker(WorkerPool *pool, const PoolJob *job, PoolAffinity affinity)
{
    if (job->want_worker) {
        Worker *w = find_worker_by_id(pool, job->want_worker);
        if (w && w->state == WORKER_IDLE) {
            return w;
        }
        if (affinity != POOL_AFFINITY_HINT) {
            return NULL;
        }
    }
    /* Queued calls go first, so a new call starts at once only when none waits. */
    return pool->queue_head ? NULL : find_idle_worker(pool);
}

void worker_pool_submit(WorkerPool *pool, PoolCallRequest *request)
{
    PoolJob *job = calloc(1, sizeof(*job));
    ev_tstamp now = ev_now(pool->loop);

    if (!job) {
        ei_x_buff x;
        if (ei_x_new(&x) == 0 && error_encode(&x, ERROR_OVERLOADED, 0, "out of memory") == 0) {
            pool->hooks.reply(pool->userdata, request->caller, x.buff, (size_t)x.index);
            ei_x_free(&x);
        }
        free(request->payload);
        return;
    }
    job->pool = pool;
    job->id = ++pool->next_job_id;
    job->caller = request->caller;
    job->payload = request->payload;
    job->payload_len = request->payload_len;
    job->submitted = now;
    job->timeout_ms = request->timeout_ms;
    job->deadline = now + request->timeout_ms / 1000.0;
    job->stream = request->stream;
    job->want_worker = request->worker_id;
    snprintf(job->correlation_id, sizeof(job->correlation_id), "%s",
             request->correlation_id ? request->correlation_id : "");
    snprintf(job->command, sizeof(job->command), "%s", request->command ? request->command : "");
    job->strict = request->worker_id != 0 && request->affinity != POOL_AFFINITY_HINT;
    if (request->session_id) {
        job->session_id = malloc(request->session_id_len + 1);
        if (job->session_id) {
            memcpy(job->session_id, request->session_id, request->session_id_len);
            job->session_id[request->session_id_len] = '\0';
            job->session_id_len = request->session_id_len;
        }
    }
    ev_init(&job->timer, job_timer_cb);
    job->timer.data = job;
    ev_init(&job->probe_timer, probe_timer_cb);
    job->probe_timer.data = job;

    if (pool->draining) {
        job_answer_error(job, ERROR_SHUTTING_DOWN, "pool '%s' is shutting down",
                         pool->config.name);
        job_free(job);
        return;
    }
    Worker *worker = pick_worker(pool, job, request->affinity);
    if (!worker && request->affinity == POOL_AFFINITY_STRICT_FAIL_FAST && job->want_worker) {
        job_answer_error(job, ERROR_WORKER_BUSY,
                         "worker %u of this session is busy (affinity strict_fail_fast)",
                         job->want_worker);
        job_free(job);
        return;
    }
    if (!worker && pool->queue_len >= pool->config.max_queue) {
        PoolEvent event = {.type = POOL_EVENT_QUEUE_FULL, .pool = pool->config.name,
                           .correlation_id = job->correlation_id, .command = job->command,
                           .queue_depth = pool->queue_len};
        worker_pool_emit(pool, &event);
        job_answer_error(job, ERROR_OVERLOADED,
                         "the queue of pool '%s' is full (max_queue = %u calls)",
                         pool->config.name, pool->config.max_queue);
        job_free(job);
        return;
    }
    if (job->stream) {
        int r = stream_open(pool, job);
        if (r == -ENOTCONN) {
            job_cancel(job, "the node of its caller disconnected before the stream opened");
            return;
        }
    }
    if (worker) {
        job_start(pool, worker, job);
        return;
    }
    double queue_timeout = pool->config.queue_timeout_ms / 1000.0;
    double until_deadline = job->deadline - now;
    ev_timer_set(&job->timer, queue_timeout < until_deadline ? queue_timeout : until_deadline,
                 0.);
    ev_timer_start(pool->loop, &job->timer);
    queue_push(pool, job);
    /* An idle worker may be free for it when the jobs ahead are held for other workers. */
    pool_dispatch(pool);
}

/* ---- Frames from workers ---- */

/* Why the worker should be recycled now: a code for metrics, or NULL, and a text for logs. */
static const char *recycle_reason(const WorkerPool *pool, const Worker *w, char *buf,
                                  size_t size)
{
    const PoolConfig *c = &pool->config;

    if (c->max_requests && w->requests >= c->max_requests) {
        snprintf(buf, size, "served %u calls (max_requests)", w->requests);
        return "max_requests";
    }
    if (c->max_age_s && ev_now(pool->loop) - w->started >= c->max_age_s) {
        snprintf(buf, size, "older than %u s (max_age_s)", c->max_age_s);
        return "max_age";
    }
    if (c->max_rss_mb) {
        unsigned long rss = worker_process_rss_mb(w);
        if (rss >= c->max_rss_mb) {
            snprintf(buf, size, "resident memory %lu MiB over %u MiB (max_rss_mb)", rss,
                     c->max_rss_mb);
            return "max_memory";
        }
    }
    return NULL;
}

/* Turn the worker's {ok, R} into a stream's {done, R}; {error, E} passes as it is. */
static void stream_finish(PoolJob *job, const char *term, size_t len)
{
    int index = 0;
    int arity;
    char atom[MAXATOMLEN_UTF8];

    if (ei_decode_tuple_header(term, &index, &arity) == 0 && arity == 2 &&
        ei_decode_atom(term, &index, atom) == 0 && strcmp(atom, "ok") == 0) {
        ei_x_buff x;
        if (ei_x_new(&x) == 0) {
            ei_x_encode_tuple_header(&x, 2);
            ei_x_encode_atom(&x, "done");
            ei_x_append_buf(&x, term + index, (int)(len - (size_t)index));
            job_answer(job, x.buff, (size_t)x.index);
            ei_x_free(&x);
        }
        return;
    }
    job_answer(job, term, len);
}

static void on_reply(WorkerPool *pool, Worker *w, uint64_t id, const char *term, size_t len)
{
    PoolJob *job = w->job;
    char reason[128];

    if (!job || job->id != id) {
        log_warning("Pool '%s': worker %u (pid %d) replied to call %llu, which it was not running",
                    pool->config.name, w->id, (int)w->pid, (unsigned long long)id);
        return;
    }
    /* A call that timed out or was cancelled has had its end: its late reply goes nowhere. */
    if (!job_answered(job)) {
        if (job->stream) {
            stream_finish(job, term, len);
        } else {
            job_answer(job, term, len);
        }
    }
    bool timed_out = job_interrupted(job);
    w->job = NULL;
    job->worker = NULL;
    job_free(job);
    w->requests++;
    if (!timed_out) {
        pool->consecutive_failures = 0;
    }
    if (w->state != WORKER_BUSY) {
        return;
    }
    const char *code = recycle_reason(pool, w, reason, sizeof(reason));
    if (code) {
        worker_process_recycle(w, code, reason);
        pool_top_up(pool);
        return;
    }
    w->state = WORKER_IDLE;
    pool_dispatch(pool);
}

/* Stop a stream whose caller got its last message, or cannot get more. */
static void stream_abort(PoolJob *job)
{
    stream_close(job);
    job_interrupt(job);
}

static void on_chunk(WorkerPool *pool, Worker *w, uint64_t id, const char *term, size_t len)
{
    PoolJob *job = w->job;
    ei_x_buff x;

    if (!job || job->id != id || !job->stream || !job->stream_pid.node[0]) {
        return;
    }
    /* The caller's connection is not draining: end the stream rather than buffer it all. */
    size_t pending = pool->hooks.pending_bytes(pool->userdata, job->stream_pid.node);
    if (pending > WORKER_POOL_STREAM_MAX_PENDING_BYTES) {
        job_answer_error(job, ERROR_OVERLOADED,
                         "the stream's caller is not keeping up: %zu bytes are waiting for its "
                         "node (the limit is %u)",
                         pending, WORKER_POOL_STREAM_MAX_PENDING_BYTES);
        stream_abort(job);
        return;
    }
    if (ei_x_new(&x) < 0) {
        return;
    }
    ei_x_encode_tuple_header(&x, 3);
    ei_x_encode_atom(&x, "snakepit_stream");
    ei_x_encode_ref(&x, &job->stream_ref);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "chunk");
    ei_x_append_buf(&x, term, (int)len);
    int r = pool->hooks.send(pool->userdata, &job->stream_pid, x.buff, (size_t)x.index);
    ei_x_free(&x);
    if (r < 0) {
        /* Closing the connection may have cancelled the stream already, with the node. */
        if (!job_answered(job)) {
            job_cancel(job, "the chunk could not be sent to the node of its caller");
        }
        return;
    }
    /* One chunk delivered to the connection: the worker may produce one more. */
    ei_x_buff credit;
    if (ei_x_new_with_version(&credit) == 0) {
        ei_x_encode_tuple_header(&credit, 2);
        ei_x_encode_atom(&credit, "credit");
        ei_x_encode_long(&credit, 1);
        worker_process_send(w, WORKER_FRAME_CREDIT, id, credit.buff, (size_t)credit.index);
        ei_x_free(&credit);
    }
}

static void on_session_request(WorkerPool *pool, Worker *w, uint64_t id, const char *term,
                               size_t len)
{
    PoolJob *job = w->job;
    ei_x_buff x;

    if (job && job->id == id && job->session_id && pool->hooks.on_session_request) {
        pool->hooks.on_session_request(pool->userdata, pool, w->id, id, job->session_id,
                                       job->session_id_len, term, len);
        return;
    }
    if (ei_x_new_with_version(&x) < 0) {
        return;
    }
    error_encode(&x, ERROR_SESSION_NOT_FOUND, 0,
                 "this call runs outside a session: pass session_id to use snakepit.session");
    worker_process_send(w, WORKER_FRAME_SESSION_RESP, id, x.buff, (size_t)x.index);
    ei_x_free(&x);
}

void worker_pool_session_reply(WorkerPool *pool, uint32_t worker_id, uint64_t call_id,
                               const char *payload, size_t len)
{
    Worker *w = find_worker_by_id(pool, worker_id);

    if (w && w->job && w->job->id == call_id) {
        worker_process_send(w, WORKER_FRAME_SESSION_RESP, call_id, payload, len);
    }
}

void worker_pool_on_frame(WorkerPool *pool, Worker *w, WorkerFrameType type, uint64_t id,
                          const char *payload, size_t len)
{
    int index = 0;
    int version;

    if (ei_decode_version(payload, &index, &version) < 0 || len < 1) {
        worker_process_kill(w, SIGKILL, "it sent a frame without a term");
        return;
    }
    int end = index;
    if (dist_term_skip(payload, len, &end) < 0 || (size_t)end != len) {
        worker_process_kill(w, SIGKILL, "it sent a malformed term");
        return;
    }
    const char *term = payload + index;
    size_t term_len = len - (size_t)index;

    switch (type) {
    case WORKER_FRAME_HELLO:
        /* The worker's socket and the zygote's control socket race: keep an early HELLO. */
        if (w->state == WORKER_STARTING) {
            worker_pool_on_worker_ready(pool, w);
        } else if (w->state == WORKER_FORKING) {
            w->hello_early = true;
        }
        break;
    case WORKER_FRAME_REPLY:
        on_reply(pool, w, id, term, term_len);
        break;
    case WORKER_FRAME_CHUNK:
        on_chunk(pool, w, id, term, term_len);
        break;
    case WORKER_FRAME_SESSION_REQ:
        on_session_request(pool, w, id, term, term_len);
        break;
    default:
        worker_process_kill(w, SIGKILL, "it sent a frame type only the daemon sends");
        break;
    }
}

/* ---- Worker lifecycle ---- */

void worker_pool_on_idle_tick(WorkerPool *pool, Worker *w)
{
    char reason[128];

    if (w->state != WORKER_IDLE) {
        return;
    }
    const char *code = recycle_reason(pool, w, reason, sizeof(reason));
    if (code) {
        worker_process_recycle(w, code, reason);
        pool_top_up(pool);
    }
}

void worker_pool_on_zygote_ready(WorkerPool *pool)
{
    pool_top_up(pool);
}

void worker_pool_on_worker_ready(WorkerPool *pool, Worker *w)
{
    w->state = WORKER_IDLE;
    log_info("Pool '%s': worker %u (pid %d) ready", pool->config.name, w->id, (int)w->pid);
    worker_pool_emit_worker(pool, POOL_EVENT_WORKER_STARTED, w, NULL);
    if (!pool->ready_reported) {
        pool->ready_reported = true;
        if (pool->hooks.on_ready) {
            pool->hooks.on_ready(pool->userdata, pool);
        }
    }
    pool_dispatch(pool);
}

static void record_death(WorkerPool *pool)
{
    ev_tstamp now = ev_now(pool->loop);

    pool->deaths[pool->death_index] = now;
    pool->death_index = (pool->death_index + 1) % WORKER_POOL_CRASH_LOOP_DEATHS;
    pool->consecutive_failures++;
    bool was_degraded = pool->degraded;
    pool->degraded = worker_pool_degraded(pool);
    if (pool->degraded && !was_degraded) {
        log_error("Pool '%s' is degraded: %d workers died within %.0f s; restarts back off",
                  pool->config.name, WORKER_POOL_CRASH_LOOP_DEATHS,
                  WORKER_POOL_CRASH_LOOP_WINDOW_S);
    }
}

static void remove_worker(WorkerPool *pool, Worker *worker)
{
    for (Worker **p = &pool->workers; *p; p = &(*p)->next) {
        if (*p == worker) {
            *p = worker->next;
            pool->worker_count--;
            break;
        }
    }
    worker_process_free(worker);
}

void worker_pool_on_worker_exit(WorkerPool *pool, Worker *w, const char *status)
{
    PoolJob *job = w->job;

    if (w->expected_exit || pool->freeing) {
        worker_pool_emit_worker(pool, POOL_EVENT_WORKER_STOPPED, w,
                                pool->freeing ? "shutdown" : "recycled");
    } else {
        const char *reason = w->crash_reason    ? w->crash_reason
                             : w->stop_reason[0] ? "killed"
                             : w->exit_signal >= 0 ? "killed"
                                                   : "exited";
        worker_pool_emit_worker(pool, POOL_EVENT_WORKER_CRASHED, w, reason);
    }
    if (job) {
        if (!job_answered(job)) {
            job_answer_error(job, ERROR_WORKER_CRASHED,
                             "worker %u (pid %d) of pool '%s' %s while running the call",
                             w->id, (int)w->pid, pool->config.name, status);
        }
        job->worker = NULL;
        w->job = NULL;
        job_free(job);
    }
    if (w->expected_exit) {
        log_info("Pool '%s': worker %u (pid %d) %s after being recycled (%s)", pool->config.name,
                 w->id, (int)w->pid, status, w->stop_reason);
    } else {
        log_warning("Pool '%s': worker %u (pid %d) %s%s%s", pool->config.name, w->id,
                    (int)w->pid, status, w->stop_reason[0] ? "; killed because " : "",
                    w->stop_reason);
        if (!pool->freeing) {
            record_death(pool);
        }
    }
    uint32_t id = w->id;
    remove_worker(pool, w);
    if (!pool->freeing) {
        fail_jobs_held_for(pool, id, status);
        pool_top_up(pool);
    }
}

static void spawn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    WorkerPool *pool = w->data;

    pool_top_up(pool);
}

static unsigned live_workers(const WorkerPool *pool)
{
    unsigned n = 0;

    for (Worker *w = pool->workers; w; w = w->next) {
        if (w->state != WORKER_STOPPING) {
            n++;
        }
    }
    return n;
}

/* Fork workers up to the pool size, after the backoff that recent crashes call for. */
static void pool_top_up(WorkerPool *pool)
{
    if (pool->freeing || pool->draining || !pool->zygote.ready ||
        ev_is_active(&pool->spawn_timer)) {
        return;
    }
    if (pool->consecutive_failures > 0) {
        double delay = WORKER_POOL_RESTART_BACKOFF_MIN_S;
        for (unsigned i = 1; i < pool->consecutive_failures; i++) {
            delay *= 2;
            if (delay >= WORKER_POOL_RESTART_BACKOFF_MAX_S) {
                delay = WORKER_POOL_RESTART_BACKOFF_MAX_S;
                break;
            }
        }
        static const double tolerance = 0.0001;
        ev_tstamp last = pool->deaths[(pool->death_index + WORKER_POOL_CRASH_LOOP_DEATHS - 1) %
                                      WORKER_POOL_CRASH_LOOP_DEATHS];
        double wait = last + delay - ev_now(pool->loop);
        if (wait > tolerance) {
            ev_timer_set(&pool->spawn_timer, wait, 0.);
            ev_timer_start(pool->loop, &pool->spawn_timer);
            return;
        }
    }
    while (live_workers(pool) < pool->config.size) {
        if (worker_process_fork(pool) < 0) {
            ev_timer_set(&pool->spawn_timer, 1.0, 0.);
            ev_timer_start(pool->loop, &pool->spawn_timer);
            return;
        }
    }
}

/* ---- Public ---- */

int worker_pool_new(struct ev_loop *loop, const PoolConfig *config,
                    const WorkerPoolSettings *settings, const WorkerPoolHooks *hooks,
                    void *userdata, WorkerPool **out)
{
    WorkerPool *pool = calloc(1, sizeof(*pool));

    if (!pool) {
        return -ENOMEM;
    }
    pool->loop = loop;
    pool->config = *config;
    pool->worker_binary = strdup(settings->worker_binary);
    pool->allow = strdup(settings->allow ? settings->allow : "");
    pool->max_message_bytes = settings->max_message_bytes;
    pool->max_depth = settings->max_depth;
    pool->log_level = settings->log_level;
    pool->log_format = settings->log_format;
    pool->hooks = *hooks;
    pool->userdata = userdata;
    pool->zygote.pidfd = -1;
    pool->zygote.control_fd = -1;
    worker_process_init_pool(pool);
    ev_init(&pool->spawn_timer, spawn_timer_cb);
    pool->spawn_timer.data = pool;
    if (!pool->worker_binary || !pool->allow) {
        worker_pool_free(pool);
        return -ENOMEM;
    }
    int r = worker_process_start_zygote(pool);
    if (r < 0) {
        worker_pool_free(pool);
        return r;
    }
    *out = pool;
    return 0;
}

const char *worker_pool_name(const WorkerPool *pool)
{
    return pool->config.name;
}

bool worker_pool_ready(const WorkerPool *pool)
{
    for (const Worker *w = pool->workers; w; w = w->next) {
        if (w->state == WORKER_IDLE || w->state == WORKER_BUSY) {
            return true;
        }
    }
    return false;
}

bool worker_pool_degraded(const WorkerPool *pool)
{
    ev_tstamp oldest = pool->deaths[pool->death_index];

    return oldest > 0 && ev_now(pool->loop) - oldest < WORKER_POOL_CRASH_LOOP_WINDOW_S;
}

void worker_pool_stats(const WorkerPool *pool, PoolStats *out)
{
    PoolStats s = {.queue_depth = pool->queue_len, .size = pool->config.size};

    for (const Worker *w = pool->workers; w; w = w->next) {
        switch (w->state) {
        case WORKER_FORKING:
            s.forking++;
            break;
        case WORKER_STARTING:
            s.starting++;
            break;
        case WORKER_IDLE:
            s.idle++;
            break;
        case WORKER_BUSY:
            s.busy++;
            break;
        default:
            s.stopping++;
            break;
        }
    }
    *out = s;
}

int worker_pool_encode_info(const WorkerPool *pool, ei_x_buff *x)
{
    unsigned counts[WORKER_STATE_COUNT] = {0};

    for (const Worker *w = pool->workers; w; w = w->next) {
        counts[w->state]++;
    }
    ei_x_encode_map_header(x, 6);
    ei_x_encode_atom(x, "name");
    ei_x_encode_binary(x, pool->config.name, (long)strlen(pool->config.name));
    ei_x_encode_atom(x, "size");
    ei_x_encode_ulong(x, pool->config.size);
    ei_x_encode_atom(x, "workers");
    ei_x_encode_map_header(x, WORKER_STATE_COUNT);
    for (int s = 0; s < WORKER_STATE_COUNT; s++) {
        ei_x_encode_atom(x, worker_state_names[s]);
        ei_x_encode_ulong(x, counts[s]);
    }
    ei_x_encode_atom(x, "queue_depth");
    ei_x_encode_ulong(x, pool->queue_len);
    ei_x_encode_atom(x, "degraded");
    ei_x_encode_boolean(x, worker_pool_degraded(pool));
    ei_x_encode_atom(x, "ready");
    return ei_x_encode_boolean(x, worker_pool_ready(pool));
}

/*
 * Whether the call's reply or stream goes to a process on `node`. For a call that a proxy node
 * forwarded, that is the From pid's node, not the proxy's.
 */
static bool job_is_from(const PoolJob *job, const char *node)
{
    const char *from = job->caller ? job->caller->pid.node : job->stream_pid.node;

    return from[0] && strcmp(from, node) == 0;
}

void worker_pool_cancel_node(WorkerPool *pool, const char *node)
{
    char cause[MAXNODELEN + 64];

    snprintf(cause, sizeof(cause), "the node of its caller, %s, disconnected", node);
    for (PoolJob *job = pool->queue_head, *next; job; job = next) {
        next = job->next;
        if (job_is_from(job, node)) {
            job_cancel(job, cause);
        }
    }
    for (Worker *w = pool->workers; w; w = w->next) {
        if (w->job && job_is_from(w->job, node)) {
            job_cancel(w->job, cause);
        }
    }
}

static bool ref_equal(const erlang_ref *a, const erlang_ref *b)
{
    if (a->len != b->len || a->len < 0 || (size_t)a->len > sizeof(a->n) / sizeof(a->n[0]) ||
        a->creation != b->creation || strcmp(a->node, b->node) != 0) {
        return false;
    }
    return memcmp(a->n, b->n, (size_t)a->len * sizeof(a->n[0])) == 0;
}

/* Whether `job` is an open stream whose probes carry `ref`. */
static bool job_has_probe(const PoolJob *job, const erlang_ref *ref)
{
    return job && job->stream && job->stream_pid.node[0] && ref_equal(&job->probe_ref, ref);
}

bool worker_pool_probe_reply(WorkerPool *pool, const erlang_ref *ref, DistProbeResult result)
{
    PoolJob *found = NULL;

    for (PoolJob *job = pool->queue_head; job && !found; job = job->next) {
        found = job_has_probe(job, ref) ? job : NULL;
    }
    for (Worker *w = pool->workers; w && !found; w = w->next) {
        found = job_has_probe(w->job, ref) ? w->job : NULL;
    }
    if (!found) {
        return false;
    }
    if (result != DIST_PROBE_EXITED) {
        /* A reply other than false, such as {badrpc, _}, proves nothing, so probing goes on. */
        log_debug("Pool '%s': the caller of stream %llu is %s", pool->config.name,
                  (unsigned long long)found->id,
                  result == DIST_PROBE_ALIVE ? "alive" : "in an unknown state (no boolean reply)");
        return true;
    }
    job_cancel(found, "its caller exited");
    return true;
}

void worker_pool_drain(WorkerPool *pool)
{
    pool->draining = true;
    while (pool->queue_head) {
        PoolJob *job = pool->queue_head;
        queue_remove(pool, job);
        job_answer_error(job, ERROR_SHUTTING_DOWN, "pool '%s' is shutting down",
                         pool->config.name);
        job_free(job);
    }
}

void worker_pool_abort_running(WorkerPool *pool)
{
    for (Worker *w = pool->workers; w; w = w->next) {
        if (w->job && !job_answered(w->job)) {
            job_answer_error(w->job, ERROR_SHUTTING_DOWN,
                             "pool '%s' is shutting down and the call did not finish within the "
                             "shutdown timeout",
                             pool->config.name);
        }
    }
}

void worker_pool_free(WorkerPool *pool)
{
    if (!pool) {
        return;
    }
    pool->freeing = true;
    worker_pool_drain(pool);
    for (Worker *w = pool->workers; w; w = w->next) {
        if (w->pidfd >= 0) {
            syscall(SYS_pidfd_send_signal, w->pidfd, SIGKILL, NULL, 0);
        }
    }
    while (pool->workers) {
        Worker *w = pool->workers;
        if (w->pidfd >= 0) {
            siginfo_t si;
            waitid(P_PIDFD, (id_t)w->pidfd, &si, WEXITED);
        }
        if (w->job) {
            w->job->worker = NULL;
            job_free(w->job);
            w->job = NULL;
        }
        pool->workers = w->next;
        worker_process_free(w);
    }
    worker_process_stop_zygote(pool);
    ev_timer_stop(pool->loop, &pool->spawn_timer);
    free(pool->worker_binary);
    free(pool->allow);
    free(pool);
}
