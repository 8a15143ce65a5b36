/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of dist_conn: when queued messages reach the socket. */
#include <criterion/criterion.h>
#include <ei.h>
#include <errno.h>
#include <ev.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dist_conn.h"

static int closed_count;

static void on_message(void *userdata, DistConn *conn, const char *body, size_t len)
{
    (void)userdata, (void)conn, (void)body, (void)len;
}

static void on_oversize(void *userdata, DistConn *conn, const char *prefix, size_t prefix_len,
                        size_t frame_len)
{
    (void)userdata, (void)conn, (void)prefix, (void)prefix_len, (void)frame_len;
}

static void on_close(void *userdata, DistConn *conn, int err)
{
    (void)userdata, (void)conn, (void)err;
    closed_count++;
}

static const DistConnHandlers handlers = {on_message, on_oversize, on_close};

/* dist_conn_close hands the socket to ei_close_connection, which needs ei's tables. */
static void init_ei(void)
{
    cr_assert_eq(ei_init(), 0);
}

TestSuite(dist_conn, .init = init_ei);
static const DistConnLimits limits = {
    .max_message_bytes = 1 << 20, .max_output_bytes = 1 << 20, .idle_timeout_ms = 60000};

/* A connection on one end of a socketpair; `peer` is the other end. */
static DistConn *conn_pair(DistConnGroup *group, int *peer)
{
    int sv[2];

    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    *peer = sv[1];
    DistConn *c = dist_conn_new(group, sv[0], "peer@localhost", 1, &limits, &handlers, NULL);
    cr_assert_not_null(c);
    return c;
}

static void send_message(DistConn *c, const char *text)
{
    cr_assert_eq(dist_conn_send(c, text, strlen(text), NULL, 0), 0);
}

/* Read what the peer has received so far, without waiting. */
static size_t peer_read(int peer, char *buf, size_t size)
{
    ssize_t n = recv(peer, buf, size, MSG_DONTWAIT);

    if (n < 0) {
        cr_assert(errno == EAGAIN || errno == EWOULDBLOCK, "recv failed: %s", strerror(errno));
        return 0;
    }
    return (size_t)n;
}

/* The frame dist_conn_send writes for `control`: 4-byte length, 'p', control. */
static size_t frame(char *out, const char *control)
{
    size_t len = strlen(control);
    uint32_t body = (uint32_t)len + 1;

    out[0] = (char)(body >> 24);
    out[1] = (char)(body >> 16);
    out[2] = (char)(body >> 8);
    out[3] = (char)body;
    out[4] = 'p';
    memcpy(out + 5, control, len);
    return 5 + len;
}

Test(dist_conn, one_write_per_iteration)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    DistConnGroup *group = dist_conn_group_new(loop);
    int peer;
    DistConn *c = conn_pair(group, &peer);
    char got[256], want[256];
    size_t want_len = 0;

    send_message(c, "first");
    send_message(c, "second");
    send_message(c, "third");
    cr_assert_eq(peer_read(peer, got, sizeof(got)), 0, "a message was written before the loop ran");

    ev_run(loop, EVRUN_NOWAIT);
    want_len += frame(want + want_len, "first");
    want_len += frame(want + want_len, "second");
    want_len += frame(want + want_len, "third");
    size_t got_len = peer_read(peer, got, sizeof(got));
    cr_assert_eq(got_len, want_len, "the peer received %zu bytes, expected %zu", got_len,
                 want_len);
    cr_assert_eq(memcmp(got, want, want_len), 0, "the frames differ or are out of order");

    dist_conn_close(c, 0);
    close(peer);
    dist_conn_group_free(group);
    ev_loop_destroy(loop);
}

static void queue_from_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    DistConn **c = w->data;

    (void)revents;
    send_message(*c, "from a prepare watcher");
    ev_prepare_stop(loop, w);
}

/*
 * Telemetry queues its events from a prepare watcher that starts before the group's: they go
 * out before the loop blocks. libev runs pending watchers of one priority last-started first, so
 * only the group's lower priority puts its flush after this watcher.
 */
Test(dist_conn, message_from_prepare_watcher)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    ev_prepare prepare;
    DistConn *c = NULL;

    ev_prepare_init(&prepare, queue_from_prepare);
    prepare.data = &c;
    ev_prepare_start(loop, &prepare);
    DistConnGroup *group = dist_conn_group_new(loop);
    int peer;
    char got[64], want[64];

    c = conn_pair(group, &peer);
    ev_run(loop, EVRUN_NOWAIT);

    size_t want_len = frame(want, "from a prepare watcher");
    cr_assert_eq(peer_read(peer, got, sizeof(got)), want_len,
                 "the message waited for a later iteration");
    cr_assert_eq(memcmp(got, want, want_len), 0);
    dist_conn_close(c, 0);
    close(peer);
    dist_conn_group_free(group);
    ev_loop_destroy(loop);
}

Test(dist_conn, close_writes_queued_messages)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    DistConnGroup *group = dist_conn_group_new(loop);
    int peer;
    DistConn *c = conn_pair(group, &peer);
    char got[64], want[64];

    closed_count = 0;
    send_message(c, "last");
    dist_conn_close(c, 0);
    cr_assert_eq(closed_count, 1);

    size_t want_len = frame(want, "last");
    cr_assert_eq(peer_read(peer, got, sizeof(got)), want_len, "the queued message was lost");
    cr_assert_eq(memcmp(got, want, want_len), 0);
    cr_assert_eq(recv(peer, got, sizeof(got), MSG_DONTWAIT), 0, "the socket is still open");
    close(peer);
    dist_conn_group_free(group);
    ev_loop_destroy(loop);
}

/* Three frames of 15, 15 and 5 bytes queued in one iteration against `max_output_bytes`. */
static int queue_three(size_t max_output_bytes)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    DistConnGroup *group = dist_conn_group_new(loop);
    const DistConnLimits queue_limits = {.max_message_bytes = 1 << 20,
                                         .max_output_bytes = max_output_bytes,
                                         .idle_timeout_ms = 60000};
    int sv[2];

    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    DistConn *c = dist_conn_new(group, sv[0], "peer@localhost", 1, &queue_limits, &handlers, NULL);
    cr_assert_not_null(c);
    closed_count = 0;
    cr_assert_eq(dist_conn_send(c, "0123456789", 10, NULL, 0), 0);
    cr_assert_eq(dist_conn_send(c, "0123456789", 10, NULL, 0), 0);
    int r = dist_conn_send(c, "", 0, NULL, 0);
    if (r == 0) {
        dist_conn_close(c, 0);
    } else {
        cr_assert_eq(closed_count, 0, "the connection closed inside the send");
        ev_run(loop, EVRUN_NOWAIT); /* the flush closes it */
    }
    close(sv[1]);
    dist_conn_group_free(group);
    ev_loop_destroy(loop);
    return r;
}

Test(dist_conn, queue_limit)
{
    cr_assert_eq(queue_three(35), 0, "35 queued bytes passed a 35-byte limit");
    cr_assert_eq(queue_three(34), -ENOBUFS, "35 queued bytes fit a 34-byte limit");
    cr_assert_eq(closed_count, 1, "the connection over its limit was not closed");
}
