/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One peer connection after the handshake: non-blocking reads into a frame buffer, tick replies,
 * and a bounded write queue. Only the distribution layer (dist.c) uses it.
 */
#pragma once

#include <ei.h>
#include <ev.h>
#include <stddef.h>
#include <stdint.h>

/* Bytes of an oversized message kept to parse the call it carries, so it gets a reply. */
#define DIST_CONN_OVERSIZE_PREFIX (64u * 1024)

typedef struct DistConn DistConn;

/* The connections of one loop, whose queued messages are written together once per iteration. */
typedef struct DistConnGroup DistConnGroup;

typedef struct {
    /* A whole message frame body (starting with 'p'), borrowed for the callback. */
    void (*on_message)(void *userdata, DistConn *conn, const char *body, size_t len);
    /* A frame over the size limit, discarded: `prefix` contains its first bytes. */
    void (*on_oversize)(void *userdata, DistConn *conn, const char *prefix, size_t prefix_len,
                        size_t frame_len);
    /* The connection closed; `conn` is freed after this returns. `err` is a negative errno or 0
     * for an orderly close by the peer. */
    void (*on_close)(void *userdata, DistConn *conn, int err);
} DistConnHandlers;

typedef struct {
    size_t max_message_bytes;
    size_t max_output_bytes;
    unsigned idle_timeout_ms;
} DistConnLimits;

/* Start the group's flush on `loop`; returns NULL on out of memory. */
DistConnGroup *dist_conn_group_new(struct ev_loop *loop);

/* Stop the flush and free the group, after every connection of it has closed. */
void dist_conn_group_free(DistConnGroup *group);

/* Take over `fd` (non-blocking, close-on-exec); returns NULL on out of memory (fd is closed). */
DistConn *dist_conn_new(DistConnGroup *group, int fd, const char *node, uint64_t id,
                        const DistConnLimits *limits, const DistConnHandlers *handlers,
                        void *userdata);

uint64_t dist_conn_id(const DistConn *conn);
size_t dist_conn_pending_bytes(const DistConn *conn);
const char *dist_conn_node(const DistConn *conn);

/*
 * Queue one message frame: 'p', `control` and `message` (both with version bytes; `message` may
 * be NULL). It is written before the loop next waits for events, with the other messages of this
 * iteration. Returns 0, -ENOTCONN after a close, or -ENOBUFS when the peer's write queue is over
 * its limit, in which case the connection closes before the loop next waits.
 */
int dist_conn_send(DistConn *conn, const char *control, size_t control_len, const char *message,
                   size_t message_len);

/* Close the connection now: on_close runs, then the memory is released. */
void dist_conn_close(DistConn *conn, int err);
