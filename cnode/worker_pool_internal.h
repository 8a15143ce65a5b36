/* SPDX-License-Identifier: Apache-2.0 */
/* Structures shared by worker_pool.c (calls and dispatch) and worker_process.c (processes). */
#pragma once

#include <sys/types.h>

#include "outbuf.h"
#include "worker_pool.h"
#include "worker_proto.h"

#define WORKER_POOL_CRASH_LOOP_DEATHS 5
#define WORKER_POOL_CRASH_LOOP_WINDOW_S 10.0
#define WORKER_POOL_RESTART_BACKOFF_MIN_S 0.1
#define WORKER_POOL_RESTART_BACKOFF_MAX_S 30.0
/* Output waiting for a stream's caller past which the stream ends with overloaded. */
#define WORKER_POOL_STREAM_MAX_PENDING_BYTES (8u * 1024 * 1024)
/*
 * Seconds between liveness probes of an open stream's caller, so a stream whose caller exited
 * is cancelled within about this time plus a round trip to the caller's node.
 */
#define WORKER_POOL_PROBE_INTERVAL_S 1.0
/*
 * A forked worker replies to heartbeats once its intermediate has exited, after the other forks
 * of its batch. Until its HELLO, missed heartbeats count only after this long.
 */
#define WORKER_POOL_START_GRACE_S 30.0

typedef enum {
    WORKER_FORKING,  /* FORK sent to the zygote */
    WORKER_STARTING, /* forked, waiting for HELLO */
    WORKER_IDLE,
    WORKER_BUSY,
    WORKER_STOPPING, /* recycled or killed: takes no calls, replaced when it exits */
    WORKER_STATE_COUNT,
} WorkerState;

typedef struct Worker Worker;

typedef struct PoolJob {
    struct PoolJob *next; /* in the pool's queue */
    struct PoolJob *prev;
    WorkerPool *pool;
    uint64_t id;
    DistCaller *caller; /* NULL once replied to */
    bool stream;
    erlang_ref stream_ref;
    erlang_pid stream_pid; /* its node is "" once the stream's caller gets no more messages */
    erlang_ref probe_ref;  /* tag of the liveness probes of stream_pid */
    ev_timer probe_timer;  /* active while the stream is open */
    unsigned probes_sent;
    bool cancelled;        /* the caller went away: an interrupt is not a timeout */
    char *payload;
    size_t payload_len;
    ev_tstamp submitted;
    ev_tstamp deadline;
    unsigned timeout_ms;
    ev_timer timer;
    Worker *worker;
    char *session_id; /* NULL outside a session */
    size_t session_id_len;
    char correlation_id[40];
    char command[256];
    ev_tstamp started; /* when a worker took it; 0 while queued */
    uint32_t want_worker; /* 0: any worker */
    bool strict;          /* only want_worker may run it */
} PoolJob;

struct Worker {
    WorkerPool *pool;
    unsigned id;
    WorkerState state;
    pid_t pid;
    int pidfd;
    int request_fd;
    int heartbeat_fd;
    ev_io pidfd_watcher;
    ev_io request_read_watcher;
    ev_io request_write_watcher;
    ev_io heartbeat_watcher;
    ev_timer heartbeat_timer;
    ev_timer kill_timer;
    bool heartbeat_outstanding;
    unsigned heartbeats_missed;
    unsigned requests;
    ev_tstamp started;
    ev_tstamp fork_requested;
    char *in;
    size_t in_len;
    size_t in_cap;
    OutBuf out;
    PoolJob *job;         /* the call it runs, or NULL */
    uint64_t dropped_job; /* id of a timed-out call whose late reply is dropped */
    bool expected_exit;   /* recycled or stopped by us: not a crash */
    bool hello_early;         /* its HELLO arrived before the zygote's FORKED message */
    const char *crash_reason; /* "timeout" or "heartbeat" when we killed it for that */
    int exit_status;          /* after it exited, or -1 */
    int exit_signal;          /* after a signal ended it, or -1 */
    char stop_reason[64];
    Worker *next;
};

typedef struct {
    pid_t pid;
    int pidfd;
    int control_fd;
    ev_io control_watcher;
    ev_io pidfd_watcher;
    bool ready;
    unsigned restarts;
} Zygote;

struct WorkerPool {
    struct ev_loop *loop;
    PoolConfig config;
    char *worker_binary;
    char *allow;
    size_t max_message_bytes;
    unsigned max_depth;
    int log_level;
    LogFormat log_format;
    WorkerPoolHooks hooks;
    void *userdata;

    Zygote zygote;
    ev_timer zygote_restart_timer;
    ev_timer spawn_timer;
    Worker *workers;
    unsigned next_worker_id;
    unsigned worker_count; /* live Worker structs, any state */

    PoolJob *queue_head;
    PoolJob *queue_tail;
    unsigned queue_len;
    uint64_t next_job_id;

    ev_tstamp deaths[WORKER_POOL_CRASH_LOOP_DEATHS];
    unsigned death_index;
    unsigned consecutive_failures;
    bool degraded;
    bool ready_reported;
    bool draining;
    bool freeing;
};

/* worker_process.c */
void worker_process_init_pool(WorkerPool *pool);
int worker_process_start_zygote(WorkerPool *pool);
void worker_process_stop_zygote(WorkerPool *pool);
int worker_process_fork(WorkerPool *pool);
int worker_process_send(Worker *worker, WorkerFrameType type, uint64_t id, const char *payload,
                        size_t len);
void worker_process_kill(Worker *worker, int sig, const char *reason);
void worker_process_recycle(Worker *worker, const char *code, const char *reason);
unsigned long worker_process_rss_mb(const Worker *worker);
void worker_process_free(Worker *worker);

/* worker_pool.c, called by worker_process.c */
void worker_pool_emit(WorkerPool *pool, const PoolEvent *event);
void worker_pool_emit_worker(WorkerPool *pool, PoolEventType type, const Worker *worker,
                             const char *reason);
void worker_pool_on_zygote_ready(WorkerPool *pool);
/* A heartbeat tick of an idle worker: recycle it when it is too old or too large. */
void worker_pool_on_idle_tick(WorkerPool *pool, Worker *worker);
void worker_pool_on_worker_ready(WorkerPool *pool, Worker *worker);
void worker_pool_on_frame(WorkerPool *pool, Worker *worker, WorkerFrameType type, uint64_t id,
                          const char *payload, size_t len);
void worker_pool_on_worker_exit(WorkerPool *pool, Worker *worker, const char *status);
