/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A pool of Python workers. One zygote process per pool forks the workers. Calls wait in a FIFO
 * queue with a maximum length and a queue timeout, and each has a deadline. Workers get
 * heartbeats, restarts with backoff, and recycling by request count, age and resident memory.
 *
 * Workers are children of the daemon (the zygote double-forks and the daemon is a child
 * subreaper), watched and reaped through pidfds on the daemon's loop.
 */
#pragma once

#include <ei.h>
#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "dist.h"

typedef struct WorkerPool WorkerPool;

typedef enum {
    POOL_EVENT_WORKER_STARTED,   /* HELLO received; duration_s = fork to HELLO */
    POOL_EVENT_WORKER_CRASHED,   /* unexpected exit; reason, exit_status or signal */
    POOL_EVENT_WORKER_RECYCLED,  /* recycling started; reason */
    POOL_EVENT_WORKER_STOPPED,   /* expected exit after recycling or shutdown */
    POOL_EVENT_HEARTBEAT_MISSED, /* missed = consecutive misses */
    POOL_EVENT_CALL_DONE,        /* a call's reply (or its stream's end) was delivered */
    POOL_EVENT_QUEUE_FULL,
    POOL_EVENT_QUEUE_TIMEOUT,
} PoolEventType;

/* What happened in a pool, for telemetry, metrics and logs. Strings are borrowed. */
typedef struct {
    PoolEventType type;
    const char *pool;
    uint32_t worker_id;
    int os_pid;
    double uptime_s;
    unsigned requests;
    const char *reason;
    int exit_status; /* -1 unless the worker exited */
    int signal;      /* -1 unless a signal ended it */
    unsigned missed;
    /* calls */
    const char *correlation_id;
    const char *command;
    double duration_s;   /* from submission to the reply */
    double queue_s;      /* time in the queue */
    const char *status;  /* "ok" or the error kind */
    const char *error_type; /* the Python class of a python_exception, or NULL */
    unsigned queue_depth;
} PoolEvent;

typedef struct {
    /* Deliver the reply to a call (`reply` encoded without version byte, borrowed). */
    void (*reply)(void *userdata, DistCaller *caller, const char *reply, size_t len);
    /* Release a caller that will get no reply because its node went away. */
    void (*drop)(void *userdata, DistCaller *caller);
    /* Send a message (no version byte, borrowed) to a pid; returns 0 or -ENOTCONN. */
    int (*send)(void *userdata, const erlang_pid *to, const char *message, size_t len);
    /* Report an event; may be NULL. */
    void (*on_event)(void *userdata, const PoolEvent *event);
    /* Bytes queued for `node` on its connection, for stream backpressure. */
    size_t (*pending_bytes)(void *userdata, const char *node);
    /* Make a new reference of this node, for a stream's id. */
    void (*make_ref)(void *userdata, erlang_ref *out);
    /* Ask the node of a stream's caller whether the caller is alive, tagged with `ref`
     * (see dist_probe()): 0, or -ENOTCONN when the caller's node is gone, or -ENOMEM. The
     * reply goes to worker_pool_probe_reply(), and a node that goes down to
     * worker_pool_cancel_node(). */
    int (*probe)(void *userdata, const erlang_pid *pid, const erlang_ref *ref);
    /* The pool's first worker is ready (called once per pool). */
    void (*on_ready)(void *userdata, WorkerPool *pool);
    /* A session call started on a worker the session was not bound to: record the binding. */
    void (*on_session_bound)(void *userdata, const char *session_id, size_t len,
                             uint32_t worker_id);
    /* Python code of a session call reads or writes a variable: `term` is {get, Name} or
     * {put, Name, Value} (borrowed). Reply with worker_pool_session_reply(). */
    void (*on_session_request)(void *userdata, WorkerPool *pool, uint32_t worker_id,
                               uint64_t call_id, const char *session_id, size_t session_id_len,
                               const char *term, size_t len);
} WorkerPoolHooks;

typedef struct {
    const char *worker_binary; /* path of snakepit-worker; borrowed for worker_pool_new */
    const char *allow;         /* comma-separated allowed modules; borrowed for worker_pool_new */
    size_t max_message_bytes;
    unsigned max_depth;
    int log_level;
    LogFormat log_format;
} WorkerPoolSettings;

typedef enum {
    POOL_AFFINITY_HINT,             /* prefer the session's worker, else any idle worker */
    POOL_AFFINITY_STRICT_QUEUE,     /* wait for the session's worker */
    POOL_AFFINITY_STRICT_FAIL_FAST, /* the session's worker or a worker_busy error */
} PoolAffinity;

/* A call ready to run: the CALL payload (a term with version byte) and where the result goes. */
typedef struct {
    DistCaller *caller;   /* new: the pool replies to it exactly once */
    char *payload;        /* new, malloc'ed: the pool frees it */
    size_t payload_len;
    unsigned timeout_ms;  /* deadline of the whole call, queue time included */
    bool stream;          /* reply {ok, Ref} now, then stream messages to the caller's pid */
    const char *session_id; /* borrowed; NULL for a call outside a session */
    size_t session_id_len;
    uint32_t worker_id;   /* the session's worker, 0 when it has none yet */
    PoolAffinity affinity;
    const char *correlation_id; /* borrowed; added to error maps and events */
    const char *command;        /* borrowed; for events and metrics */
} PoolCallRequest;

int worker_pool_new(struct ev_loop *loop, const PoolConfig *config,
                    const WorkerPoolSettings *settings, const WorkerPoolHooks *hooks,
                    void *userdata, WorkerPool **out);

/* Queue or start a call. Replies to the caller exactly once, at once (overloaded) or later. */
void worker_pool_submit(WorkerPool *pool, PoolCallRequest *request);

const char *worker_pool_name(const WorkerPool *pool);
bool worker_pool_ready(const WorkerPool *pool);
bool worker_pool_degraded(const WorkerPool *pool);

/* Workers by state and queue length, for metrics and health. */
typedef struct {
    unsigned forking;
    unsigned starting;
    unsigned idle;
    unsigned busy;
    unsigned stopping;
    unsigned queue_depth;
    unsigned size;
} PoolStats;

void worker_pool_stats(const WorkerPool *pool, PoolStats *out);

/* Whether `pid` is this pool's zygote or one of its workers (which the pool reaps itself). */
bool worker_pool_owns_pid(const WorkerPool *pool, int pid);

/* Whether worker `worker_id` is alive in this pool and can still take calls. */
bool worker_pool_has_worker(const WorkerPool *pool, uint32_t worker_id);

/* Append the pool's state as a map: name, size, workers by state, queue depth, degraded. */
int worker_pool_encode_info(const WorkerPool *pool, ei_x_buff *x);

/*
 * Reply to a session request of call `call_id` on worker `worker_id` with `payload` (a term with
 * version byte, borrowed). Dropped when that worker no longer runs that call.
 */
void worker_pool_session_reply(WorkerPool *pool, uint32_t worker_id, uint64_t call_id,
                               const char *payload, size_t len);

/*
 * Cancel the calls and streams of callers on `node` (the node went down): queued ones are
 * dropped, and running ones are interrupted and their workers killed after the kill grace if
 * they do not stop. Nothing is sent to the node.
 */
void worker_pool_cancel_node(WorkerPool *pool, const char *node);

/*
 * Take rex's reply to the liveness probe tagged `ref` (borrowed): when the reply is false (the
 * caller exited), cancel its open stream in the same way. Returns whether this pool has an open
 * stream with that tag.
 */
bool worker_pool_probe_reply(WorkerPool *pool, const erlang_ref *ref, DistProbeResult result);

/* Stop taking calls: queued calls get shutting_down; running calls go on. */
void worker_pool_drain(WorkerPool *pool);

/* Reply shutting_down to every running call; the workers go on until the pool is freed. */
void worker_pool_abort_running(WorkerPool *pool);

/* Kill every worker and the zygote, reap them, and free the pool. Accepts NULL. */
void worker_pool_free(WorkerPool *pool);
