/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Peer connection I/O on the libev loop. Reads are bounded per callback so a fast peer cannot
 * starve others. Messages to a peer are queued and written once per loop iteration, so the
 * replies that one iteration makes share one writev(2) and wake the peer once. The group's
 * prepare watcher writes them just before the loop waits again. It has the lowest priority, so it
 * runs after other prepare watchers, which may queue messages too (telemetry dispatch does). A full
 * socket buffer leaves the rest queued for the write watcher. A peer whose queue passes the
 * limit, or that sends nothing for the idle timeout, is dropped.
 */
#include "dist_conn.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "dist_frame.h"
#include "log.h"
#include "outbuf.h"

/* Bytes read per callback before yielding to other watchers. */
#define DIST_CONN_READ_BUDGET (1u << 20)
#define DIST_CONN_READ_CHUNK (64u * 1024)

struct DistConnGroup {
    struct ev_loop *loop;
    ev_prepare flush_watcher;
    DistConn *dirty; /* connections with messages queued in this iteration */
};

struct DistConn {
    ev_io read_watcher;
    ev_io write_watcher;
    ev_timer idle_timer;
    struct ev_loop *loop;
    DistConnGroup *group;
    DistConn *dirty_next;
    DistConn **dirty_prev; /* NULL while not on the group's dirty list */
    int fd;
    uint64_t id;
    char node[MAXNODELEN + 1];
    DistConnLimits limits;
    const DistConnHandlers *handlers;
    void *userdata;

    char *in;
    size_t in_len;
    size_t in_cap;

    /* Discarding an oversized frame: bytes still to drop, and its kept prefix. */
    size_t discard_left;
    size_t discard_frame_len;
    char *discard_prefix;
    size_t discard_prefix_len;

    OutBuf out;

    ev_tstamp last_read;
    bool closed;
    int close_err; /* set when the queue passed its limit: the flush closes the connection */
    unsigned depth; /* callbacks on the stack; memory is freed when it drops to 0 */
};

static void conn_release(DistConn *c)
{
    outbuf_clear(&c->out);
    free(c->in);
    free(c->discard_prefix);
    free(c);
}

static void conn_mark_dirty(DistConn *c)
{
    DistConnGroup *g = c->group;

    if (c->dirty_prev) {
        return;
    }
    c->dirty_next = g->dirty;
    if (g->dirty) {
        g->dirty->dirty_prev = &c->dirty_next;
    }
    g->dirty = c;
    c->dirty_prev = &g->dirty;
}

static void conn_unmark_dirty(DistConn *c)
{
    *c->dirty_prev = c->dirty_next;
    if (c->dirty_next) {
        c->dirty_next->dirty_prev = c->dirty_prev;
    }
    c->dirty_next = NULL;
    c->dirty_prev = NULL;
}

void dist_conn_close(DistConn *c, int err)
{
    if (c->closed) {
        return;
    }
    c->closed = true;
    if (c->dirty_prev) {
        /* Replies queued in this iteration still go out if the socket takes them. */
        conn_unmark_dirty(c);
        (void)outbuf_flush(&c->out, c->fd);
    }
    ev_io_stop(c->loop, &c->read_watcher);
    ev_io_stop(c->loop, &c->write_watcher);
    ev_timer_stop(c->loop, &c->idle_timer);
    ei_close_connection(c->fd);
    c->fd = -1;
    c->depth++;
    c->handlers->on_close(c->userdata, c, err);
    c->depth--;
    if (c->depth == 0) {
        conn_release(c);
    }
}

uint64_t dist_conn_id(const DistConn *c)
{
    return c->id;
}

size_t dist_conn_pending_bytes(const DistConn *c)
{
    return c->out.bytes;
}

const char *dist_conn_node(const DistConn *c)
{
    return c->node;
}

static void conn_update_write_watcher(DistConn *c)
{
    if (!outbuf_empty(&c->out)) {
        ev_io_start(c->loop, &c->write_watcher);
    } else {
        ev_io_stop(c->loop, &c->write_watcher);
    }
}

static int conn_queue(DistConn *c, const struct iovec *parts, int count, size_t total)
{
    if (c->closed || c->close_err) {
        return -ENOTCONN;
    }
    /*
     * The close waits for the flush, so the connection's on_close handler never runs inside a
     * sender that is in the middle of a reply.
     */
    if (c->out.bytes + total > c->limits.max_output_bytes) {
        log_warning("Disconnecting node %s: its output queue would pass %zu bytes (it is not "
                    "reading)",
                    c->node, c->limits.max_output_bytes);
        c->close_err = -ENOBUFS;
        conn_mark_dirty(c);
        return -ENOBUFS;
    }
    if (outbuf_append(&c->out, parts, count) < 0) {
        return -ENOMEM;
    }
    /* While the write watcher waits for room, it writes this message too. */
    if (!ev_is_active(&c->write_watcher)) {
        conn_mark_dirty(c);
    }
    return 0;
}

static void conn_flush(DistConn *c)
{
    if (c->close_err) {
        dist_conn_close(c, c->close_err);
        return;
    }
    int r = outbuf_flush(&c->out, c->fd);

    if (r < 0) {
        log_debug_errno(r, "Write to node %s failed", c->node);
        dist_conn_close(c, r);
        return;
    }
    conn_update_write_watcher(c);
}

/* A flush that closes a connection may queue messages to others: they are taken in turn. */
static void group_flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    DistConnGroup *g = w->data;
    DistConn *c;

    while ((c = g->dirty)) {
        conn_unmark_dirty(c);
        conn_flush(c);
    }
}

DistConnGroup *dist_conn_group_new(struct ev_loop *loop)
{
    DistConnGroup *g = calloc(1, sizeof(*g));

    if (!g) {
        return NULL;
    }
    g->loop = loop;
    ev_prepare_init(&g->flush_watcher, group_flush_cb);
    ev_set_priority(&g->flush_watcher, EV_MINPRI);
    g->flush_watcher.data = g;
    ev_prepare_start(loop, &g->flush_watcher);
    /* The watcher alone must not keep ev_run() from returning. */
    ev_unref(loop);
    return g;
}

void dist_conn_group_free(DistConnGroup *g)
{
    if (!g) {
        return;
    }
    ev_ref(g->loop);
    ev_prepare_stop(g->loop, &g->flush_watcher);
    free(g);
}

int dist_conn_send(DistConn *c, const char *control, size_t control_len, const char *message,
                   size_t message_len)
{
    size_t body = 1 + control_len + (message ? message_len : 0);
    uint8_t header[5] = {(uint8_t)(body >> 24), (uint8_t)(body >> 16), (uint8_t)(body >> 8),
                         (uint8_t)body, DIST_PASS_THROUGH};
    struct iovec parts[3] = {
        {.iov_base = header, .iov_len = sizeof(header)},
        {.iov_base = (void *)control, .iov_len = control_len},
        {.iov_base = (void *)message, .iov_len = message ? message_len : 0},
    };

    if (body > UINT32_MAX) {
        return -EMSGSIZE;
    }
    return conn_queue(c, parts, 3, 4 + body);
}

static void conn_send_tick(DistConn *c)
{
    static const uint8_t tick[4] = {0, 0, 0, 0};
    struct iovec part = {.iov_base = (void *)tick, .iov_len = sizeof(tick)};

    conn_queue(c, &part, 1, sizeof(tick));
}

static int conn_reserve(DistConn *c, size_t need)
{
    if (c->in_cap - c->in_len >= need) {
        return 0;
    }
    size_t cap = c->in_cap ? c->in_cap : DIST_CONN_READ_CHUNK;
    while (cap - c->in_len < need) {
        cap *= 2;
    }
    char *in = realloc(c->in, cap);
    if (!in) {
        return -ENOMEM;
    }
    c->in = in;
    c->in_cap = cap;
    return 0;
}

/* Drop bytes of an oversized frame, keeping its prefix; report the frame when it is all gone. */
static size_t conn_discard(DistConn *c, const char *data, size_t len)
{
    size_t take = len < c->discard_left ? len : c->discard_left;
    size_t keep = DIST_CONN_OVERSIZE_PREFIX - c->discard_prefix_len;

    if (keep > take) {
        keep = take;
    }
    if (keep > 0 && c->discard_prefix) {
        memcpy(c->discard_prefix + c->discard_prefix_len, data, keep);
        c->discard_prefix_len += keep;
    }
    c->discard_left -= take;
    if (c->discard_left == 0) {
        c->handlers->on_oversize(c->userdata, c, c->discard_prefix, c->discard_prefix_len,
                                 c->discard_frame_len);
        free(c->discard_prefix);
        c->discard_prefix = NULL;
        c->discard_prefix_len = 0;
    }
    return take;
}

/* Handle every complete frame in the input buffer, then keep the incomplete rest. */
static void conn_process_input(DistConn *c)
{
    size_t at = 0;

    while (!c->closed && at < c->in_len) {
        if (c->discard_left > 0) {
            at += conn_discard(c, c->in + at, c->in_len - at);
            continue;
        }
        DistFrameKind kind;
        size_t body_len;
        if (dist_frame_peek((const uint8_t *)c->in + at, c->in_len - at, &kind, &body_len) < 0) {
            break;
        }
        if (kind == DIST_FRAME_TICK) {
            at += DIST_FRAME_HEADER_SIZE;
            conn_send_tick(c);
            continue;
        }
        if (body_len > c->limits.max_message_bytes) {
            at += DIST_FRAME_HEADER_SIZE;
            c->discard_left = body_len;
            c->discard_frame_len = body_len;
            c->discard_prefix = malloc(DIST_CONN_OVERSIZE_PREFIX);
            c->discard_prefix_len = 0;
            continue;
        }
        if (c->in_len - at - DIST_FRAME_HEADER_SIZE < body_len) {
            /* Make room for the rest of this frame in one allocation. */
            if (at > 0) {
                memmove(c->in, c->in + at, c->in_len - at);
                c->in_len -= at;
                at = 0;
            }
            if (conn_reserve(c, DIST_FRAME_HEADER_SIZE + body_len - c->in_len) < 0) {
                log_error("Out of memory for a %zu-byte message from node %s", body_len,
                          c->node);
                dist_conn_close(c, -ENOMEM);
            }
            return;
        }
        c->handlers->on_message(c->userdata, c, c->in + at + DIST_FRAME_HEADER_SIZE, body_len);
        at += DIST_FRAME_HEADER_SIZE + body_len;
    }
    if (c->closed) {
        return;
    }
    memmove(c->in, c->in + at, c->in_len - at);
    c->in_len -= at;
}

static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    DistConn *c = w->data;
    size_t budget = DIST_CONN_READ_BUDGET;

    c->depth++;
    c->last_read = ev_now(loop);
    while (!c->closed && budget > 0) {
        if (conn_reserve(c, DIST_CONN_READ_CHUNK) < 0) {
            log_error("Out of memory reading from node %s", c->node);
            dist_conn_close(c, -ENOMEM);
            break;
        }
        ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
        if (n == 0) {
            dist_conn_close(c, 0);
            break;
        }
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                dist_conn_close(c, -errno);
            }
            break;
        }
        c->in_len += (size_t)n;
        budget -= (size_t)n < budget ? (size_t)n : budget;
        conn_process_input(c);
    }
    c->depth--;
    if (c->closed && c->depth == 0) {
        conn_release(c);
    }
}

static void conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    conn_flush(w->data);
}

/* libev's documented way to run a timeout that activity keeps pushing back. */
static void conn_idle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    DistConn *c = w->data;
    ev_tstamp timeout = c->limits.idle_timeout_ms / 1000.0;
    ev_tstamp after = c->last_read + timeout - ev_now(loop);

    if (after <= 0) {
        log_warning("Disconnecting node %s: nothing received for %u ms", c->node,
                    c->limits.idle_timeout_ms);
        dist_conn_close(c, -ETIMEDOUT);
        return;
    }
    w->repeat = after;
    ev_timer_again(loop, w);
}

DistConn *dist_conn_new(DistConnGroup *group, int fd, const char *node, uint64_t id,
                        const DistConnLimits *limits, const DistConnHandlers *handlers,
                        void *userdata)
{
    struct ev_loop *loop = group->loop;
    DistConn *c = calloc(1, sizeof(*c));

    if (!c) {
        ei_close_connection(fd);
        return NULL;
    }
    c->loop = loop;
    c->group = group;
    c->fd = fd;
    c->id = id;
    snprintf(c->node, sizeof(c->node), "%s", node);
    c->limits = *limits;
    c->handlers = handlers;
    c->userdata = userdata;
    c->last_read = ev_now(loop);

    ev_io_init(&c->read_watcher, conn_read_cb, fd, EV_READ);
    ev_io_init(&c->write_watcher, conn_write_cb, fd, EV_WRITE);
    ev_init(&c->idle_timer, conn_idle_cb);
    c->read_watcher.data = c;
    c->write_watcher.data = c;
    c->idle_timer.data = c;
    c->idle_timer.repeat = limits->idle_timeout_ms / 1000.0;
    ev_io_start(loop, &c->read_watcher);
    ev_timer_again(loop, &c->idle_timer);
    return c;
}
