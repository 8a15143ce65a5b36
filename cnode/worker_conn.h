/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The worker's end of the request socket: reads and writes the frames of worker_proto.h with
 * blocking I/O, releasing the GIL while it waits, and keeps the credit of the running stream.
 * All functions are called on the worker's main thread with the GIL held.
 */
#pragma once

#include <Python.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "worker_proto.h"

typedef struct {
    WorkerFrameType type;
    uint64_t id;
    const char *payload; /* borrowed from the connection, valid until its next read */
    size_t len;          /* payload bytes; for an oversized frame, the size it announced */
    bool oversized;      /* the payload exceeded the limit and was read and discarded */
} WorkerFrame;

typedef struct {
    int fd;                /* owned */
    int wakeup_read;       /* owned: Python's signal wakeup pipe, read end */
    int wakeup_write;      /* owned: write end, given to signal.set_wakeup_fd() */
    PyObject *set_wakeup_fd; /* strong reference to signal.set_wakeup_fd */
    size_t max_payload;    /* limit of a frame payload in both directions */
    /* The frame being read; a read interrupted by a signal resumes here. */
    uint8_t header[WORKER_FRAME_HEADER_SIZE];
    size_t header_have;
    bool in_payload;
    WorkerFrame pending;
    size_t payload_have;
    char *buf;             /* owned payload buffer */
    size_t buf_cap;
    /* Credit of the stream in progress: CHUNKs the worker may still send. */
    bool streaming;
    uint64_t stream_id;
    uint64_t credit;
} WorkerConn;

/*
 * Set up `conn` on `fd`, taking ownership of the fd, with a pipe that becomes Python's signal
 * wakeup fd while the connection waits. Returns 0 or -errno.
 */
int worker_conn_init(WorkerConn *conn, int fd, size_t max_payload);

/*
 * Make the connection's pipe Python's signal wakeup fd again. Python code may replace it
 * (asyncio does), so the request loop calls this after every call, and the waits inside a call
 * call it before they block. The C setter is not exported by libpython 3.11, so this goes
 * through signal.set_wakeup_fd().
 */
void worker_conn_claim_wakeup_fd(const WorkerConn *conn);

/*
 * Read the next frame into *frame. The wakeup fd must be ours (see above), or a signal that
 * arrives just before the read is noticed only by the next one. Returns 0 on success.
 * Returns -EINTR when a signal handler raised a Python exception, which is left set, and keeps
 * the partial frame for the next call. Returns -EPIPE at end of stream, -EBADMSG for a
 * malformed header and another negative errno when the read fails.
 */
int worker_conn_read(WorkerConn *conn, WorkerFrame *frame);

/* Send one frame, whole, even when signals arrive. Returns 0, -EMSGSIZE, or -errno. */
int worker_conn_write(WorkerConn *conn, WorkerFrameType type, uint64_t id, const char *payload,
                      size_t len);

/*
 * Read frames until a SESSION_RESP for call `id` arrives. Meanwhile CREDIT frames of the running
 * stream add credit, a CALL gets a worker_busy error reply, and stale frames are dropped.
 * Returns 0 or an error of worker_conn_read().
 */
int worker_conn_wait_session(WorkerConn *conn, uint64_t id, WorkerFrame *frame);

/* Start counting credit for the stream of call `id`, with WORKER_STREAM_INITIAL_CREDIT. */
void worker_conn_stream_begin(WorkerConn *conn, uint64_t id);
void worker_conn_stream_end(WorkerConn *conn);

/*
 * Take one unit of stream credit, reading frames until CREDIT arrives when there is none.
 * Returns 0 or an error of worker_conn_read().
 */
int worker_conn_take_credit(WorkerConn *conn);
