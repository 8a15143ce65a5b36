/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Node publication, handshakes and message dispatch.
 *
 * The loop accepts connections itself and runs each handshake (ei_accept_tmo is blocking) on a
 * thread of its own, at most DIST_MAX_HANDSHAKES at once. So a peer that stalls mid-handshake
 * occupies one thread for at most the handshake timeout, and never the loop or another peer's
 * handshake. ei gets the accepted socket through a socket callback set whose accept returns it.
 * A finished handshake hands its socket to the loop through a mutex-protected queue and an
 * ev_async. From then on only the loop thread touches it.
 */
#include "dist.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "dist_conn.h"
#include "dist_frame.h"
#include "error.h"
#include "log.h"

#define DIST_PENDING_MAX 256

typedef struct ConnEntry {
    struct ConnEntry *next;
    DistConn *conn;
} ConnEntry;

typedef struct {
    int fd;
    char node[MAXNODELEN + 1];
} PendingConn;

struct Dist {
    struct ev_loop *loop;
    ei_cnode ec;
    DistConfig config;
    DistHandlers handlers;
    void *userdata;
    int listen_fd;
    int port;
    int epmd_fd;
    atomic_bool stopping;
    ev_io listen_watcher;

    /* Sockets in a handshake, so that a shutdown can cut them short. */
    pthread_mutex_t handshake_lock;
    pthread_cond_t handshake_done;
    int handshake_fds[DIST_MAX_HANDSHAKES];
    unsigned handshake_count;
    LogRateLimit reject_ratelimit;

    pthread_mutex_t pending_lock;
    PendingConn pending[DIST_PENDING_MAX];
    unsigned pending_count;
    ev_async pending_async;

    DistConnGroup *conn_group;
    ConnEntry *conns;
    unsigned conn_count;
    uint64_t next_conn_id;
    DistConnLimits conn_limits;
    LogRateLimit handshake_ratelimit;
    pthread_mutex_t ratelimit_lock;
};

static void set_cloexec(int fd)
{
    int flags = fcntl(fd, F_GETFD);

    if (flags >= 0) {
        fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
    }
}

static void set_nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);

    if (flags >= 0) {
        fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    }
}

const char *dist_node_name(const Dist *d)
{
    return d->ec.thisnodename;
}

int dist_port(const Dist *d)
{
    return d->port;
}

unsigned dist_peer_count(const Dist *d)
{
    return d->conn_count;
}

static DistConn *find_conn_by_node(const Dist *d, const char *node)
{
    for (ConnEntry *e = d->conns; e; e = e->next) {
        if (strcmp(dist_conn_node(e->conn), node) == 0) {
            return e->conn;
        }
    }
    return NULL;
}

static DistConn *find_conn_by_id(const Dist *d, uint64_t id)
{
    for (ConnEntry *e = d->conns; e; e = e->next) {
        if (dist_conn_id(e->conn) == id) {
            return e->conn;
        }
    }
    return NULL;
}

bool dist_node_connected(const Dist *d, const char *node)
{
    return find_conn_by_node(d, node) != NULL;
}

/* ---- Sending ---- */

/* Send `{Tag, Reply}` to a pid (SEND) or an alias (ALIAS_SEND) over `conn`. */
static int send_reply_frame(Dist *d, DistConn *conn, const DistCaller *caller, const char *reply,
                            size_t len)
{
    ei_x_buff control;
    ei_x_buff message;
    int r = -ENOMEM;

    if (ei_x_new_with_version(&control) < 0) {
        return -ENOMEM;
    }
    if (ei_x_new_with_version(&message) < 0) {
        ei_x_free(&control);
        return -ENOMEM;
    }
    if (caller->has_alias) {
        if (ei_x_encode_tuple_header(&control, 3) < 0 ||
            ei_x_encode_long(&control, DIST_OP_ALIAS_SEND) < 0 ||
            ei_x_encode_pid(&control, ei_self(&d->ec)) < 0 ||
            ei_x_encode_ref(&control, &caller->alias) < 0) {
            goto out;
        }
    } else if (ei_x_encode_tuple_header(&control, 3) < 0 ||
               ei_x_encode_long(&control, DIST_OP_SEND) < 0 ||
               ei_x_encode_atom(&control, "") < 0 ||
               ei_x_encode_pid(&control, &caller->pid) < 0) {
        goto out;
    }
    if (ei_x_encode_tuple_header(&message, 2) < 0 ||
        ei_x_append_buf(&message, caller->tag, (int)caller->tag_len) < 0 ||
        ei_x_append_buf(&message, reply, (int)len) < 0) {
        goto out;
    }
    r = dist_conn_send(conn, control.buff, (size_t)control.index, message.buff,
                       (size_t)message.index);
out:
    ei_x_free(&message);
    ei_x_free(&control);
    return r;
}

/*
 * The connection for a reply: the one the call came over, unless its From pid lives on another
 * node (a $gen_call that a process there sent through a proxy). A BEAM peer drops a message for
 * a pid that is not its own, so such a reply goes to the pid's node, when connected.
 */
static DistConn *reply_conn(const Dist *d, const DistCaller *caller)
{
    if (strcmp(caller->pid.node, caller->node) == 0) {
        return find_conn_by_id(d, caller->conn_id);
    }
    return find_conn_by_node(d, caller->pid.node);
}

int dist_reply(Dist *d, DistCaller *caller, const char *reply, size_t len)
{
    DistConn *conn = d ? reply_conn(d, caller) : NULL;
    int r = -ENOTCONN;

    if (conn) {
        r = send_reply_frame(d, conn, caller, reply, len);
    }
    if (r < 0) {
        log_debug_errno(r, "Dropped the reply to a call from node %s for a process on node %s",
                        caller->node, caller->pid.node);
    }
    dist_caller_free(caller);
    return r;
}

void dist_caller_free(DistCaller *caller)
{
    free(caller);
}

int dist_send(Dist *d, const erlang_pid *to, const char *message, size_t len)
{
    DistConn *conn = d ? find_conn_by_node(d, to->node) : NULL;
    ei_x_buff control;
    ei_x_buff body;
    int r = -ENOMEM;

    if (!conn) {
        return -ENOTCONN;
    }
    if (ei_x_new_with_version(&control) < 0) {
        return -ENOMEM;
    }
    if (ei_x_new_with_version(&body) < 0) {
        ei_x_free(&control);
        return -ENOMEM;
    }
    if (ei_x_encode_tuple_header(&control, 3) < 0 ||
        ei_x_encode_long(&control, DIST_OP_SEND) < 0 || ei_x_encode_atom(&control, "") < 0 ||
        ei_x_encode_pid(&control, to) < 0 || ei_x_append_buf(&body, message, (int)len) < 0) {
        goto out;
    }
    r = dist_conn_send(conn, control.buff, (size_t)control.index, body.buff, (size_t)body.index);
out:
    ei_x_free(&body);
    ei_x_free(&control);
    return r;
}

int dist_probe(Dist *d, const erlang_pid *pid, const erlang_ref *ref)
{
    DistConn *conn = d ? find_conn_by_node(d, pid->node) : NULL;
    ei_x_buff control;
    ei_x_buff message;
    int r = -ENOMEM;

    if (!conn) {
        return -ENOTCONN;
    }
    if (ei_x_new_with_version(&control) < 0) {
        return -ENOMEM;
    }
    if (ei_x_new_with_version(&message) < 0) {
        ei_x_free(&control);
        return -ENOMEM;
    }
    if (dist_probe_encode(&control, &message, ei_self(&d->ec), ref, pid) == 0) {
        r = dist_conn_send(conn, control.buff, (size_t)control.index, message.buff,
                           (size_t)message.index);
    }
    ei_x_free(&message);
    ei_x_free(&control);
    return r;
}

/* ---- Receiving ---- */

static DistCaller *caller_new(DistConn *conn, const DistCall *call)
{
    DistCaller *caller = malloc(sizeof(*caller) + call->tag_len);

    if (!caller) {
        return NULL;
    }
    caller->conn_id = dist_conn_id(conn);
    snprintf(caller->node, sizeof(caller->node), "%s", dist_conn_node(conn));
    caller->pid = call->pid;
    caller->has_alias = call->has_alias;
    caller->alias = call->alias;
    caller->tag_len = call->tag_len;
    memcpy(caller->tag, call->tag, call->tag_len);
    return caller;
}

/* Reply to a call that this layer handles itself; the caller builds `reply`. */
static void reply_now(Dist *d, DistConn *conn, const DistCall *call, const ei_x_buff *reply)
{
    DistCaller *caller = caller_new(conn, call);

    if (caller) {
        dist_reply(d, caller, reply->buff, (size_t)reply->index);
    }
}

static void reply_error_now(Dist *d, DistConn *conn, const DistCall *call, ErrorKind kind,
                            const char *message)
{
    ei_x_buff x;

    if (ei_x_new(&x) < 0) {
        return;
    }
    if (error_encode(&x, kind, 0, "%s", message) == 0) {
        reply_now(d, conn, call, &x);
    }
    ei_x_free(&x);
}

/* net_kernel's {is_auth, Node}: the handshake already checked the cookie, so the reply is yes. */
static void handle_net_kernel(Dist *d, DistConn *conn, const DistCall *call)
{
    ei_x_buff x;

    if (call->is_cast || ei_x_new(&x) < 0) {
        return;
    }
    ei_x_encode_atom(&x, "yes");
    reply_now(d, conn, call, &x);
    ei_x_free(&x);
}

static void handle_reg_send(Dist *d, DistConn *conn, const DistMessage *m)
{
    DistCall call;

    if (dist_call_parse(m->payload, m->payload_len, &call) < 0) {
        if (strcmp(m->to_name, d->config.registered_name) == 0 && d->handlers.on_cast) {
            /* A plain message: pass it on without its version byte. */
            d->handlers.on_cast(d->userdata, dist_conn_node(conn), m->payload + 1,
                                m->payload_len - 1);
        } else {
            log_debug("Ignored a message from node %s to '%s' that is no gen_server call",
                      dist_conn_node(conn), m->to_name);
        }
        return;
    }
    if (strcmp(m->to_name, "net_kernel") == 0) {
        handle_net_kernel(d, conn, &call);
        return;
    }
    if (strcmp(m->to_name, d->config.registered_name) != 0) {
        if (!call.is_cast) {
            char message[2 * MAXATOMLEN_UTF8 + 128];
            snprintf(message, sizeof(message),
                     "no process is registered as '%s' on this node; send requests to '%s'",
                     m->to_name, d->config.registered_name);
            reply_error_now(d, conn, &call, ERROR_BAD_REQUEST, message);
        }
        return;
    }
    if (call.is_cast) {
        if (d->handlers.on_cast) {
            d->handlers.on_cast(d->userdata, dist_conn_node(conn), call.request,
                                call.request_len);
        }
        return;
    }
    DistCaller *caller = caller_new(conn, &call);
    if (!caller) {
        log_error("Out of memory for a call from node %s", dist_conn_node(conn));
        return;
    }
    d->handlers.on_call(d->userdata, caller, call.request, call.request_len);
}

static bool pid_equal(const erlang_pid *a, const erlang_pid *b)
{
    return a->num == b->num && a->serial == b->serial && a->creation == b->creation &&
           strcmp(a->node, b->node) == 0;
}

/* A send to this node's pid: rex's reply to a liveness probe, or another message, dropped. */
static void handle_send(Dist *d, DistConn *conn, const DistMessage *m)
{
    erlang_ref ref;
    DistProbeResult result;

    if (!pid_equal(&m->to, ei_self(&d->ec)) ||
        dist_probe_reply_parse(m->payload, m->payload_len, &ref, &result) < 0) {
        log_debug("Dropped a %zu-byte message from node %s that is not a probe reply",
                  m->payload_len, dist_conn_node(conn));
        return;
    }
    log_debug("Received a probe reply from node %s (operation %ld): %s", dist_conn_node(conn),
              m->op,
              result == DIST_PROBE_ALIVE    ? "alive"
              : result == DIST_PROBE_EXITED ? "exited"
                                            : "unknown");
    if (d->handlers.on_probe_reply) {
        d->handlers.on_probe_reply(d->userdata, &ref, result);
    }
}

static void on_conn_message(void *userdata, DistConn *conn, const char *body, size_t len)
{
    Dist *d = userdata;
    DistMessage m;
    int r = dist_message_parse(body, len, &m);

    if (r == -ENOTSUP) {
        /* Links and monitors: this node has no processes that use them. */
        long op;
        if (log_get_max_level() >= LOG_DEBUG && dist_message_op(body, len, &op) == 0) {
            log_debug("Ignored a control message with operation %ld from node %s", op,
                      dist_conn_node(conn));
        }
        return;
    }
    if (r < 0) {
        log_warning("Ignored a malformed %zu-byte message from node %s", len,
                    dist_conn_node(conn));
        return;
    }
    if (m.op == DIST_OP_REG_SEND || m.op == DIST_OP_REG_SEND_TT) {
        handle_reg_send(d, conn, &m);
    } else {
        handle_send(d, conn, &m);
    }
}

/*
 * The call inside an oversized frame gets a too_large error when its head fits in the kept
 * prefix. The rest of the frame was dropped without being buffered.
 */
static void on_conn_oversize(void *userdata, DistConn *conn, const char *prefix,
                             size_t prefix_len, size_t frame_len)
{
    Dist *d = userdata;
    DistMessage m;
    DistCall call;
    char message[160];

    log_warning("Dropped a %zu-byte message from node %s: over the limit of %zu bytes", frame_len,
                dist_conn_node(conn), d->config.max_message_bytes);
    if (!prefix || dist_message_head_parse(prefix, prefix_len, &m) < 0 ||
        dist_call_head_parse(m.payload, m.payload_len, &call) < 0 || call.is_cast) {
        return;
    }
    snprintf(message, sizeof(message),
             "the request is %zu bytes, over the message size limit of %zu bytes", frame_len,
             d->config.max_message_bytes);
    reply_error_now(d, conn, &call, ERROR_TOO_LARGE, message);
}

static void on_conn_close(void *userdata, DistConn *conn, int err)
{
    Dist *d = userdata;
    const char *node = dist_conn_node(conn);

    for (ConnEntry **p = &d->conns; *p; p = &(*p)->next) {
        if ((*p)->conn == conn) {
            ConnEntry *e = *p;
            *p = e->next;
            free(e);
            d->conn_count--;
            break;
        }
    }
    if (err == 0) {
        log_info("Node %s disconnected", node);
    } else {
        log_info("Node %s disconnected: %s", node, strerror(-err));
    }
    if (!find_conn_by_node(d, node) && d->handlers.on_node_down) {
        d->handlers.on_node_down(d->userdata, node);
    }
}

static const DistConnHandlers conn_handlers = {
    .on_message = on_conn_message,
    .on_oversize = on_conn_oversize,
    .on_close = on_conn_close,
};

static void adopt_connection(Dist *d, int fd, const char *node)
{
    if (d->conn_count >= d->config.max_connections) {
        log_warning("Rejected node %s: already %u connections, the maximum", node,
                    d->conn_count);
        ei_close_connection(fd);
        return;
    }
    bool first = !find_conn_by_node(d, node);
    ConnEntry *e = malloc(sizeof(*e));
    DistConn *conn = e ? dist_conn_new(d->conn_group, fd, node, ++d->next_conn_id,
                                       &d->conn_limits, &conn_handlers, d)
                       : NULL;
    if (!conn) {
        free(e);
        if (!e) {
            ei_close_connection(fd);
        }
        log_error("Out of memory for a connection from node %s", node);
        return;
    }
    e->conn = conn;
    e->next = d->conns;
    d->conns = e;
    d->conn_count++;
    log_info("Node %s connected", node);
    if (first && d->handlers.on_node_up) {
        d->handlers.on_node_up(d->userdata, node);
    }
}

static void pending_async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    Dist *d = w->data;
    PendingConn batch[DIST_PENDING_MAX];
    unsigned count;

    pthread_mutex_lock(&d->pending_lock);
    count = d->pending_count;
    memcpy(batch, d->pending, count * sizeof(batch[0]));
    d->pending_count = 0;
    pthread_mutex_unlock(&d->pending_lock);

    for (unsigned i = 0; i < count; i++) {
        adopt_connection(d, batch[i].fd, batch[i].node);
    }
}

/* ---- Acceptor threads ---- */

/* `peer` is the address of the accepted socket; ei fills conp's only after a success. */
static void log_handshake_failure(Dist *d, const ErlConnect *conp, const char *peer, int err)
{
    unsigned dropped = 0;
    bool emit;
    char more[64] = "";

    pthread_mutex_lock(&d->ratelimit_lock);
    emit = log_ratelimit_check(&d->handshake_ratelimit, log_now_ms(), &dropped);
    pthread_mutex_unlock(&d->ratelimit_lock);
    if (!emit) {
        return;
    }
    if (dropped > 0) {
        snprintf(more, sizeof(more), "; %u similar failures since the last one not logged",
                 dropped);
    }
    log_warning("Handshake with a peer at %s (node '%s') failed, wrong cookie or protocol "
                "error (ei error %d%s)",
                peer, conp->nodename[0] ? conp->nodename : "unknown", err, more);
}

/* Format the address of the peer of socket `fd` as ADDRESS:PORT, or "unknown address". */
static void peer_address(int fd, char *out, size_t size)
{
    struct sockaddr_storage sa;
    socklen_t len = sizeof(sa);
    char host[INET6_ADDRSTRLEN] = "";
    unsigned port = 0;

    snprintf(out, size, "unknown address");
    if (getpeername(fd, (struct sockaddr *)&sa, &len) < 0) {
        return;
    }
    if (sa.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
    } else if (sa.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
    }
    if (host[0]) {
        snprintf(out, size, "%s:%u", host, port);
    }
}

/*
 * ei's socket callbacks with accept replaced: it returns the socket the loop accepted for this
 * thread's handshake. Everything else is ei's default TCP code, and a socket's ctx is its fd as
 * in the default set. EI_SCLBK_FLG_FULL_IMPL makes ei call accept at once instead of waiting for
 * the listen socket; reads and writes are bounded by SO_RCVTIMEO and SO_SNDTIMEO instead.
 */
/*
 * NOTE: libei exports its default callback set but ei.h does not declare it (OTP 25's
 * erl_interface 5.3). It is linked from the same libei.a as the rest of ei.
 */
extern ei_socket_callbacks ei_default_socket_callbacks;

static __thread int handshake_fd = -1;
static Dist *handshake_dist; /* the one Dist of the process, for the close callback */
static ei_socket_callbacks handshake_callbacks;

static int handshake_accept(void **ctx, void *addr, int *len, unsigned tmo)
{
    socklen_t addr_len = (socklen_t)*len;

    if (handshake_fd < 0) {
        return EBADF;
    }
    if (getpeername(handshake_fd, addr, &addr_len) == 0) {
        *len = (int)addr_len;
    }
    *ctx = (void *)(long)handshake_fd;
    return 0;
}

static void handshake_forget(Dist *d, int fd)
{
    pthread_mutex_lock(&d->handshake_lock);
    for (unsigned i = 0; i < d->handshake_count; i++) {
        if (d->handshake_fds[i] == fd) {
            d->handshake_fds[i] = d->handshake_fds[--d->handshake_count];
            break;
        }
    }
    pthread_cond_broadcast(&d->handshake_done);
    pthread_mutex_unlock(&d->handshake_lock);
}

/* Close under the lock, so a shutdown never calls shutdown(2) on a reused fd number. */
static int handshake_close(void *ctx)
{
    int fd = (int)(long)ctx;
    Dist *d = handshake_dist;

    if (d) {
        pthread_mutex_lock(&d->handshake_lock);
        for (unsigned i = 0; i < d->handshake_count; i++) {
            if (d->handshake_fds[i] == fd) {
                d->handshake_fds[i] = -1;
            }
        }
        int r = ei_default_socket_callbacks.close(ctx);
        pthread_mutex_unlock(&d->handshake_lock);
        return r;
    }
    return ei_default_socket_callbacks.close(ctx);
}

static void set_io_timeout(int fd, unsigned ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

typedef struct {
    Dist *dist;
    int fd;
} HandshakeJob;

static void *handshake_main(void *arg)
{
    HandshakeJob job = *(HandshakeJob *)arg;
    Dist *d = job.dist;
    ei_cnode ec = d->ec; /* a private copy: ei_accept writes per-call state into it */
    ErlConnect conp;

    free(arg);
    memset(&conp, 0, sizeof(conp));
    char peer[INET6_ADDRSTRLEN + 8];
    peer_address(job.fd, peer, sizeof(peer));
    handshake_fd = job.fd;
    int fd = ei_accept_tmo(&ec, d->listen_fd, &conp, d->config.handshake_timeout_ms);
    int err = erl_errno;
    handshake_fd = -1;
    if (fd < 0) {
        if (!atomic_load(&d->stopping)) {
            log_handshake_failure(d, &conp, peer, err);
        }
        handshake_forget(d, -1);
        handshake_forget(d, job.fd);
        return NULL;
    }
    set_io_timeout(fd, 0);
    set_nonblocking(fd);

    pthread_mutex_lock(&d->pending_lock);
    bool queued = !atomic_load(&d->stopping) && d->pending_count < DIST_PENDING_MAX;
    if (queued) {
        PendingConn *p = &d->pending[d->pending_count++];
        p->fd = fd;
        snprintf(p->node, sizeof(p->node), "%s", conp.nodename);
        ev_async_send(d->loop, &d->pending_async);
    }
    pthread_mutex_unlock(&d->pending_lock);
    if (!queued) {
        log_warning("Rejected node %s: too many connections waiting for the loop",
                    conp.nodename);
        ei_close_connection(fd);
    }
    handshake_forget(d, fd);
    return NULL;
}

/* Start a handshake thread for an accepted socket, unless too many are running. */
static void handshake_start(Dist *d, int fd)
{
    pthread_attr_t attr;
    pthread_t thread;
    unsigned dropped;
    HandshakeJob *job = malloc(sizeof(*job));

    pthread_mutex_lock(&d->handshake_lock);
    bool full = d->handshake_count >= DIST_MAX_HANDSHAKES;
    if (!full && job) {
        d->handshake_fds[d->handshake_count++] = fd;
    }
    pthread_mutex_unlock(&d->handshake_lock);
    if (full || !job) {
        if (log_ratelimit_check(&d->reject_ratelimit, log_now_ms(), &dropped)) {
            log_warning("Rejected a connection: %u handshakes are in progress, the maximum "
                        "(%u similar rejections not logged)",
                        DIST_MAX_HANDSHAKES, dropped);
        }
        free(job);
        close(fd);
        return;
    }
    set_io_timeout(fd, d->config.handshake_timeout_ms);
    job->dist = d;
    job->fd = fd;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    int r = pthread_create(&thread, &attr, handshake_main, job);
    pthread_attr_destroy(&attr);
    if (r != 0) {
        log_error_errno(-r, "Failed to start a handshake thread");
        free(job);
        handshake_forget(d, fd);
        close(fd);
    }
}

static void listen_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    Dist *d = w->data;

    for (;;) {
        int fd = accept4(d->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                log_warning_errno(-errno, "Failed to accept a connection");
            }
            return;
        }
        handshake_start(d, fd);
    }
}

/* ---- Start and stop ---- */

static int epmd_port(void)
{
    const char *env = getenv("ERL_EPMD_PORT");
    int port = env ? atoi(env) : 0;

    return port > 0 && port < 65536 ? port : 4369;
}

/*
 * Tell "epmd is down" from "the name is taken" before publishing, for a precise message. The
 * probe is a real NAMES request, so epmd does not log a connection that sent nothing.
 */
static int check_epmd_reachable(void)
{
    static const uint8_t names_request[3] = {0, 1, 'n'}; /* 2-byte length, then EPMD_NAMES_REQ */
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)epmd_port())};
    uint8_t reply[4];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int r = 0;

    if (fd < 0) {
        return -errno;
    }
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    set_io_timeout(fd, 2000);
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        r = -errno;
    } else if (write(fd, names_request, sizeof(names_request)) != sizeof(names_request) ||
               recv(fd, reply, sizeof(reply), MSG_WAITALL) != sizeof(reply)) {
        r = -EPROTO;
    }
    close(fd);
    return r;
}

static int split_node_name(const char *node, char *alive, size_t alive_size, char *host,
                           size_t host_size)
{
    const char *at = strchr(node, '@');

    if (!at || at == node || at[1] == '\0' || (size_t)(at - node) >= alive_size ||
        strlen(at + 1) >= host_size) {
        return -EINVAL;
    }
    memcpy(alive, node, (size_t)(at - node));
    alive[at - node] = '\0';
    snprintf(host, host_size, "%s", at + 1);
    return 0;
}

static int dist_listen_and_publish(Dist *d)
{
    int r = check_epmd_reachable();

    if (r < 0) {
        return log_error_errno(r,
                               "Failed to reach epmd at 127.0.0.1:%d (start it with 'epmd "
                               "-daemon')",
                               epmd_port());
    }
    d->port = 0;
    d->listen_fd = ei_listen(&d->ec, &d->port, 128);
    if (d->listen_fd < 0) {
        return log_error_errno(-EIO, "Failed to open the distribution listen socket");
    }
    set_cloexec(d->listen_fd);
    set_nonblocking(d->listen_fd);
    d->epmd_fd = ei_publish(&d->ec, d->port);
    if (d->epmd_fd < 0) {
        log_error("Failed to register node %s with epmd: the name '%s' is already registered "
                  "(another node runs with that name)",
                  d->ec.thisnodename, d->ec.thisalivename);
        return -EADDRINUSE;
    }
    set_cloexec(d->epmd_fd);
    return 0;
}

int dist_start(struct ev_loop *loop, const DistConfig *config, const DistHandlers *handlers,
               void *userdata, Dist **out)
{
    char alive[EI_MAXALIVELEN + 1];
    char host[EI_MAXHOSTNAMELEN + 1];
    Dist *d;
    int r;

    if (split_node_name(config->node_name, alive, sizeof(alive), host, sizeof(host)) < 0) {
        return log_error_errno(-EINVAL, "Invalid node name '%s': expected NAME@HOST",
                               config->node_name);
    }
    d = calloc(1, sizeof(*d));
    if (!d) {
        return -ENOMEM;
    }
    d->loop = loop;
    d->config = *config;
    d->handlers = *handlers;
    d->userdata = userdata;
    d->listen_fd = -1;
    d->epmd_fd = -1;
    d->conn_limits = (DistConnLimits){
        .max_message_bytes = config->max_message_bytes,
        .max_output_bytes = config->max_output_bytes,
        .idle_timeout_ms = config->peer_idle_timeout_ms,
    };
    d->handshake_ratelimit = (LogRateLimit)LOG_RATELIMIT_INIT(10000, 1);
    d->reject_ratelimit = (LogRateLimit)LOG_RATELIMIT_INIT(10000, 1);
    pthread_mutex_init(&d->handshake_lock, NULL);
    pthread_cond_init(&d->handshake_done, NULL);
    pthread_mutex_init(&d->pending_lock, NULL);
    pthread_mutex_init(&d->ratelimit_lock, NULL);
    ev_async_init(&d->pending_async, pending_async_cb);
    d->pending_async.data = d;
    ev_async_start(loop, &d->pending_async);
    d->conn_group = dist_conn_group_new(loop);
    if (!d->conn_group) {
        r = -ENOMEM;
        goto fail;
    }

    ei_init();
    handshake_callbacks = ei_default_socket_callbacks;
    handshake_callbacks.flags = EI_SCLBK_FLG_FULL_IMPL;
    handshake_callbacks.EI_ACCEPT_NAME = handshake_accept;
    handshake_callbacks.close = handshake_close;
    handshake_dist = d;
    if (ei_connect_xinit_ussi(&d->ec, host, alive, config->node_name, NULL, config->cookie, 0,
                              &handshake_callbacks, sizeof(handshake_callbacks), NULL) < 0) {
        r = log_error_errno(-EINVAL, "Failed to initialise node %s", config->node_name);
        goto fail;
    }
    r = dist_listen_and_publish(d);
    if (r < 0) {
        goto fail;
    }
    ev_io_init(&d->listen_watcher, listen_cb, d->listen_fd, EV_READ);
    d->listen_watcher.data = d;
    ev_io_start(loop, &d->listen_watcher);
    *out = d;
    return 0;
fail:
    dist_free(d);
    return r;
}

size_t dist_pending_bytes(const Dist *d, const char *node)
{
    DistConn *conn = d ? find_conn_by_node(d, node) : NULL;

    return conn ? dist_conn_pending_bytes(conn) : 0;
}

void dist_make_ref(Dist *d, erlang_ref *out)
{
    ei_make_ref(&d->ec, out);
}

void dist_stop_accepting(Dist *d)
{
    if (!d || atomic_exchange(&d->stopping, true)) {
        return;
    }
    ev_io_stop(d->loop, &d->listen_watcher);
    /* Cut handshakes in progress short and wait for their threads, which use the Dist. */
    pthread_mutex_lock(&d->handshake_lock);
    for (unsigned i = 0; i < d->handshake_count; i++) {
        if (d->handshake_fds[i] >= 0) {
            shutdown(d->handshake_fds[i], SHUT_RDWR);
        }
    }
    while (d->handshake_count > 0) {
        pthread_cond_wait(&d->handshake_done, &d->handshake_lock);
    }
    pthread_mutex_unlock(&d->handshake_lock);
    if (d->epmd_fd >= 0) {
        close(d->epmd_fd);
        d->epmd_fd = -1;
    }
    if (d->listen_fd >= 0) {
        close(d->listen_fd);
        d->listen_fd = -1;
    }
    /* Handshakes that finished during the shutdown never reach the loop. */
    pthread_mutex_lock(&d->pending_lock);
    for (unsigned i = 0; i < d->pending_count; i++) {
        ei_close_connection(d->pending[i].fd);
    }
    d->pending_count = 0;
    pthread_mutex_unlock(&d->pending_lock);
}

void dist_free(Dist *d)
{
    if (!d) {
        return;
    }
    dist_stop_accepting(d);
    while (d->conns) {
        dist_conn_close(d->conns->conn, -ESHUTDOWN);
    }
    dist_conn_group_free(d->conn_group);
    ev_async_stop(d->loop, &d->pending_async);
    pthread_mutex_destroy(&d->pending_lock);
    pthread_mutex_destroy(&d->ratelimit_lock);
    pthread_mutex_destroy(&d->handshake_lock);
    pthread_cond_destroy(&d->handshake_done);
    handshake_dist = NULL;
    free(d);
}
