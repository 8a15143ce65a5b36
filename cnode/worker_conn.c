/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Framed blocking I/O on the worker's request socket. Reads release the GIL, so other Python
 * threads run while the worker waits, and return to Python when a signal handler raises (the
 * daemon interrupts a call past its deadline with SIGINT). Writes always finish the frame, so an
 * interrupt never leaves half a frame on the socket.
 */
#include "worker_conn.h"

#include <Python.h>
#include <ei.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "etf_py.h"
#include "log.h"
#include "worker_call.h"

/* A payload buffer larger than this is freed after use instead of kept for the next frame. */
#define WORKER_CONN_KEEP_BUFFER_BYTES ((size_t)1 << 20)
#define WORKER_CONN_DISCARD_CHUNK 65536

void worker_conn_init(WorkerConn *conn, int fd, size_t max_payload)
{
    *conn = (WorkerConn){.fd = fd, .max_payload = max_payload};
}

/* One read(2) with the GIL released. Returns bytes read, 0 at end of stream, or -errno. */
static ssize_t conn_recv(WorkerConn *conn, void *buf, size_t len)
{
    for (;;) {
        ssize_t n;
        int saved_errno;

        Py_BEGIN_ALLOW_THREADS
        n = read(conn->fd, buf, len);
        saved_errno = errno;
        Py_END_ALLOW_THREADS

        if (n >= 0) {
            return n;
        }
        if (saved_errno != EINTR) {
            return -saved_errno;
        }
        if (PyErr_CheckSignals() < 0) {
            return -EINTR;
        }
    }
}

static int conn_reserve(WorkerConn *conn, size_t len)
{
    if (len <= conn->buf_cap) {
        return 0;
    }
    char *buf = malloc(len);
    if (!buf) {
        return -ENOMEM;
    }
    free(conn->buf);
    conn->buf = buf;
    conn->buf_cap = len;
    return 0;
}

/* Read the rest of the frame header; returns 1 when complete, 0 or -errno as conn_recv. */
static int conn_read_header(WorkerConn *conn)
{
    while (conn->header_have < WORKER_FRAME_HEADER_SIZE) {
        ssize_t n = conn_recv(conn, conn->header + conn->header_have,
                              WORKER_FRAME_HEADER_SIZE - conn->header_have);
        if (n <= 0) {
            return n == 0 ? -EPIPE : (int)n;
        }
        conn->header_have += (size_t)n;
    }

    WorkerFrame *f = &conn->pending;
    int r = worker_proto_header_decode(conn->header, WORKER_FRAME_HEADER_SIZE, SIZE_MAX, &f->type,
                                       &f->id, &f->len);
    if (r < 0) {
        return r;
    }
    f->oversized = f->len > conn->max_payload;
    if (!f->oversized) {
        r = conn_reserve(conn, f->len ? f->len : 1);
        if (r < 0) {
            return r;
        }
    }
    conn->in_payload = true;
    conn->payload_have = 0;
    return 1;
}

/* Read the rest of the payload, or discard it when oversized; returns 1 when complete. */
static int conn_read_payload(WorkerConn *conn)
{
    char discard[WORKER_CONN_DISCARD_CHUNK];
    WorkerFrame *f = &conn->pending;

    while (conn->payload_have < f->len) {
        size_t want = f->len - conn->payload_have;
        char *dst = conn->buf + conn->payload_have;
        if (f->oversized) {
            dst = discard;
            want = want < sizeof(discard) ? want : sizeof(discard);
        }
        ssize_t n = conn_recv(conn, dst, want);
        if (n <= 0) {
            return n == 0 ? -EPIPE : (int)n;
        }
        conn->payload_have += (size_t)n;
    }
    return 1;
}

int worker_conn_read(WorkerConn *conn, WorkerFrame *frame)
{
    bool between_frames = !conn->in_payload && conn->header_have == 0;
    int r;

    if (between_frames && conn->buf_cap > WORKER_CONN_KEEP_BUFFER_BYTES) {
        free(conn->buf);
        conn->buf = NULL;
        conn->buf_cap = 0;
    }
    if (!conn->in_payload) {
        r = conn_read_header(conn);
        if (r < 0) {
            return r;
        }
    }
    r = conn_read_payload(conn);
    if (r < 0) {
        return r;
    }

    conn->pending.payload = conn->pending.oversized ? NULL : conn->buf;
    *frame = conn->pending;
    conn->header_have = 0;
    conn->in_payload = false;
    return 0;
}

int worker_conn_write(WorkerConn *conn, WorkerFrameType type, uint64_t id, const char *payload,
                      size_t len)
{
    uint8_t header[WORKER_FRAME_HEADER_SIZE];
    struct iovec iov[2];
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
    int r = 0;

    if (len > conn->max_payload) {
        return -EMSGSIZE;
    }
    worker_proto_header_encode(header, type, id, len);
    iov[0] = (struct iovec){.iov_base = header, .iov_len = sizeof(header)};
    iov[1] = (struct iovec){.iov_base = (void *)payload, .iov_len = len};

    Py_BEGIN_ALLOW_THREADS
    while (msg.msg_iovlen > 0) {
        ssize_t n = sendmsg(conn->fd, &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            r = -errno;
            break;
        }
        while (msg.msg_iovlen > 0 && (size_t)n >= msg.msg_iov->iov_len) {
            n -= (ssize_t)msg.msg_iov->iov_len;
            msg.msg_iov++;
            msg.msg_iovlen--;
        }
        if (msg.msg_iovlen > 0) {
            msg.msg_iov->iov_base = (char *)msg.msg_iov->iov_base + n;
            msg.msg_iov->iov_len -= (size_t)n;
        }
    }
    Py_END_ALLOW_THREADS
    return r;
}

/* Decode the payload {credit, N}; returns N, or 0 for a malformed frame. */
static uint64_t decode_credit(const WorkerFrame *f)
{
    const EtfPyLimits limits = {.max_depth = 2, .max_bytes = 64};
    EtfPyError err;
    int index = 1;
    uint64_t n = 0;

    if (f->oversized || f->len < 2 || (unsigned char)f->payload[0] != WORKER_PROTO_ETF_VERSION) {
        return 0;
    }
    PyObject *term = etf_py_decode(f->payload, f->len, &index, &limits, &err);
    if (!term) {
        return 0;
    }
    if (PyTuple_Check(term) && PyTuple_GET_SIZE(term) == 2
        && PyUnicode_Check(PyTuple_GET_ITEM(term, 0))
        && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(term, 0), "credit") == 0
        && PyLong_Check(PyTuple_GET_ITEM(term, 1))) {
        n = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(term, 1));
        if (PyErr_Occurred()) {
            PyErr_Clear();
            n = 0;
        }
    }
    Py_DECREF(term);
    return n;
}

static void reply_busy(WorkerConn *conn, uint64_t id)
{
    ei_x_buff x;

    if (ei_x_new(&x) < 0) {
        return;
    }
    if (worker_call_encode_error(&x, "worker_busy", "the worker is running another call") == 0) {
        int r = worker_conn_write(conn, WORKER_FRAME_REPLY, id, x.buff, (size_t)x.index);
        if (r < 0) {
            log_debug_errno(r, "Failed to reply worker_busy to call %llu", (unsigned long long)id);
        }
    }
    ei_x_free(&x);
}

/* Handle a frame that arrived while waiting for something else. */
static void conn_handle_other(WorkerConn *conn, const WorkerFrame *f)
{
    if (f->type == WORKER_FRAME_CREDIT && conn->streaming && f->id == conn->stream_id) {
        uint64_t n = decode_credit(f);
        if (n == 0) {
            log_warning("Ignoring a malformed CREDIT frame for call %llu",
                        (unsigned long long)f->id);
        }
        conn->credit = n > UINT64_MAX - conn->credit ? UINT64_MAX : conn->credit + n;
        return;
    }
    if (f->type == WORKER_FRAME_CALL) {
        log_warning("Call %llu arrived while call %llu is running; replying worker_busy",
                    (unsigned long long)f->id, (unsigned long long)conn->stream_id);
        reply_busy(conn, f->id);
        return;
    }
    log_debug("Dropping a stale frame of type %d for call %llu", (int)f->type,
              (unsigned long long)f->id);
}

int worker_conn_wait_session(WorkerConn *conn, uint64_t id, WorkerFrame *frame)
{
    for (;;) {
        WorkerFrame f;
        int r = worker_conn_read(conn, &f);
        if (r < 0) {
            return r;
        }
        if (f.type == WORKER_FRAME_SESSION_RESP && f.id == id) {
            *frame = f;
            return 0;
        }
        conn_handle_other(conn, &f);
    }
}

void worker_conn_stream_begin(WorkerConn *conn, uint64_t id)
{
    conn->streaming = true;
    conn->stream_id = id;
    conn->credit = WORKER_STREAM_INITIAL_CREDIT;
}

void worker_conn_stream_end(WorkerConn *conn)
{
    conn->streaming = false;
    conn->credit = 0;
}

int worker_conn_take_credit(WorkerConn *conn)
{
    while (conn->credit == 0) {
        WorkerFrame f;
        int r = worker_conn_read(conn, &f);
        if (r < 0) {
            return r;
        }
        conn_handle_other(conn, &f);
    }
    conn->credit--;
    return 0;
}
