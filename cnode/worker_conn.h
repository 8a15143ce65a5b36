/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The worker's end of the request socket: reads and writes the frames of worker_proto.h with
 * blocking I/O, releasing the GIL while it waits, and keeps the credit of the running stream.
 * All functions are called on the worker's main thread with the GIL held.
 */
#pragma once

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

/* Set up `conn` on `fd`, taking ownership of the fd. */
void worker_conn_init(WorkerConn *conn, int fd, size_t max_payload);

/*
 * Read the next frame into *frame. Returns 0; -EINTR when a signal handler raised a Python
 * exception (it is left set, and the partial frame is kept for the next call); -EPIPE at end of
 * stream; -EBADMSG on a malformed header; another negative errno on a read error.
 */
int worker_conn_read(WorkerConn *conn, WorkerFrame *frame);

/* Send one frame, whole, even when signals arrive. Returns 0, -EMSGSIZE, or -errno. */
int worker_conn_write(WorkerConn *conn, WorkerFrameType type, uint64_t id, const char *payload,
                      size_t len);

/*
 * Read frames until a SESSION_RESP for call `id` arrives. Meanwhile CREDIT frames of the running
 * stream add credit, a CALL is answered with a worker_busy error, and stale frames are dropped.
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
