/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The request loop. One call runs at a time on the main thread: decode the CALL term, invoke
 * snakepit._runtime.call, and write one REPLY; a streaming call writes a CHUNK per item first,
 * pausing when the daemon's credit runs out. A reply never exceeds the message size limit: a
 * result that does not fit becomes a too_large error. The daemon interrupts a call past its
 * deadline with SIGINT, which Python raises as KeyboardInterrupt. An interrupt that lands between
 * calls belonged to a call that already replied, so it is dropped.
 */
#include "worker_serve.h"

#include <Python.h>
#include <ei.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <unistd.h>

#include "etf_py.h"
#include "log.h"
#include "worker_call.h"
#include "worker_conn.h"
#include "worker_proto.h"
#include "worker_session.h"

#define WORKER_SERVE_EXIT_NO_MEMORY 70 /* EX_SOFTWARE */
/* An encode buffer larger than this is freed after its call instead of kept. */
#define WORKER_SERVE_KEEP_BUFFER_BYTES ((int)1 << 20)

/* Term tags of the tuple header of a CALL payload. */
#define ETF_SMALL_TUPLE_EXT 104
#define ETF_LARGE_TUPLE_EXT 105

typedef struct {
    WorkerConn conn;
    EtfPyLimits limits; /* max_bytes: the frame payload limit */
    ei_x_buff reply;    /* reused for every REPLY payload */
    ei_x_buff chunk;    /* reused for every CHUNK payload */
} Server;

/* A decoded CALL: {Command, Args, Opts}; strong references. */
typedef struct {
    PyObject *command;
    PyObject *args;
    PyObject *opts;
    PyObject *session_id; /* borrowed from opts, or NULL */
    bool stream;
} CallRequest;

/* Flush what Python code printed before the process exits without finalizing Python. */
static void flush_python_stdio(void)
{
    PyErr_Clear();
    PyRun_SimpleString("import sys\n"
                       "for s in (sys.stdout, sys.stderr):\n"
                       "    try:\n"
                       "        s.flush()\n"
                       "    except Exception:\n"
                       "        pass\n");
}

_Noreturn void worker_serve_exit_on_error(int r)
{
    if (r == -EPIPE || r == -ECONNRESET) {
        log_debug("Request socket closed, stopping the worker");
        flush_python_stdio();
        _exit(0);
    }
    log_error_errno(r, "Request socket failed, stopping the worker");
    _exit(WORKER_SERVE_EXIT_PROTOCOL);
}

/* Exit after an allocation failed while encoding for call `id` (0: no call). */
static _Noreturn void exit_out_of_memory(uint64_t id)
{
    log_error("Out of memory encoding a frame of call %llu, stopping the worker",
              (unsigned long long)id);
    _exit(WORKER_SERVE_EXIT_NO_MEMORY);
}

static void send_frame(Server *s, WorkerFrameType type, uint64_t id, const ei_x_buff *x)
{
    int r = worker_conn_write(&s->conn, type, id, x->buff, (size_t)x->index);

    if (r < 0) {
        worker_serve_exit_on_error(r);
    }
}

static void send_error(Server *s, uint64_t id, const char *kind, const char *message)
{
    if (worker_call_encode_error(&s->reply, kind, message) < 0) {
        exit_out_of_memory(id);
    }
    send_frame(s, WORKER_FRAME_REPLY, id, &s->reply);
}

/* Send the REPLY in s->reply, which an encoder filled with result `r`. */
static void send_reply(Server *s, uint64_t id, int r)
{
    if (r < 0) {
        exit_out_of_memory(id);
    }
    if ((size_t)s->reply.index > s->conn.max_payload) {
        /* The codec keeps results within the limit; this catches an oversized error map. */
        send_error(s, id, "too_large", "the reply exceeds the message size limit");
        return;
    }
    send_frame(s, WORKER_FRAME_REPLY, id, &s->reply);
}

static void send_hello(Server *s, uint32_t worker_id)
{
    ei_x_buff *x = &s->reply;

    x->index = 0;
    if (ei_x_encode_version(x) < 0 || ei_x_encode_tuple_header(x, 3) < 0
        || ei_x_encode_atom(x, "hello") < 0 || ei_x_encode_long(x, (long)getpid()) < 0
        || ei_x_encode_ulong(x, worker_id) < 0) {
        exit_out_of_memory(0);
    }
    send_frame(s, WORKER_FRAME_HELLO, 0, x);
}

static void call_request_clear(CallRequest *req)
{
    Py_CLEAR(req->command);
    Py_CLEAR(req->args);
    Py_CLEAR(req->opts);
    req->session_id = NULL;
}

static void set_error(EtfPyError *err, const char *kind, const char *message)
{
    err->kind = kind;
    snprintf(err->message, sizeof(err->message), "%s", message);
}

/* Find the index after the {_, _, _} tuple header, or -1. */
static int call_tuple_start(const char *buf, size_t len)
{
    const unsigned char *p = (const unsigned char *)buf;

    if (len >= 3 && p[0] == WORKER_PROTO_ETF_VERSION && p[1] == ETF_SMALL_TUPLE_EXT && p[2] == 3) {
        return 3;
    }
    if (len >= 6 && p[0] == WORKER_PROTO_ETF_VERSION && p[1] == ETF_LARGE_TUPLE_EXT && p[2] == 0
        && p[3] == 0 && p[4] == 0 && p[5] == 3) {
        return 6;
    }
    return -1;
}

/* Look up an atom key of the options map; returns a borrowed value or NULL. */
static PyObject *opts_get(PyObject *opts, const char *key)
{
    PyObject *k, *v;
    Py_ssize_t pos = 0;

    while (PyDict_Next(opts, &pos, &k, &v)) {
        if (PyUnicode_Check(k) && PyUnicode_CompareWithASCIIString(k, key) == 0) {
            return v;
        }
    }
    return NULL;
}

static int decode_options(CallRequest *req, EtfPyError *err)
{
    if (!PyDict_Check(req->opts)) {
        set_error(err, "bad_request", "the options of a call must be a map");
        return -EINVAL;
    }
    PyObject *stream = opts_get(req->opts, "stream");
    if (stream && stream != Py_True && stream != Py_False) {
        set_error(err, "bad_request", "the stream option must be true or false");
        return -EINVAL;
    }
    req->stream = stream == Py_True;
    PyObject *session_id = opts_get(req->opts, "session_id");
    if (session_id && session_id != Py_None && !PyUnicode_Check(session_id)
        && !PyBytes_Check(session_id)) {
        set_error(err, "bad_request", "the session_id option must be a binary or nil");
        return -EINVAL;
    }
    req->session_id = session_id;
    return 0;
}

static int decode_call(const Server *s, const WorkerFrame *f, CallRequest *out, EtfPyError *err)
{
    CallRequest req = {0};
    int index = call_tuple_start(f->payload, f->len);

    if (index < 0) {
        set_error(err, "bad_request", "a call must be the tuple {Command, Args, Opts}");
        return -EINVAL;
    }
    req.command = etf_py_decode(f->payload, f->len, &index, &s->limits, err);
    if (req.command && !PyUnicode_Check(req.command)) {
        set_error(err, "bad_request", "the command must be a UTF-8 binary");
        goto fail;
    }
    req.args = req.command ? etf_py_decode(f->payload, f->len, &index, &s->limits, err) : NULL;
    req.opts = req.args ? etf_py_decode(f->payload, f->len, &index, &s->limits, err) : NULL;
    if (!req.opts) {
        goto fail;
    }
    if ((size_t)index != f->len) {
        set_error(err, "bad_request", "trailing bytes after the call term");
        goto fail;
    }
    if (decode_options(&req, err) < 0) {
        goto fail;
    }
    *out = req;
    return 0;
fail:
    call_request_clear(&req);
    return -EINVAL;
}

static void run_plain(Server *s, uint64_t id, const CallRequest *req)
{
    PyObject *result = worker_call_invoke(req->command, req->args);
    int r;

    if (result) {
        r = worker_call_encode_ok(&s->reply, result, &s->limits);
        Py_DECREF(result);
    } else {
        r = worker_call_encode_exception(&s->reply, &s->limits);
    }
    send_reply(s, id, r);
}

/* Send the next item of a stream as a CHUNK; returns 0, or -1 with s->reply holding the end. */
static int send_chunk(Server *s, uint64_t id, PyObject *item)
{
    EtfPyError err;
    int r;

    if (worker_call_encode_chunk(&s->chunk, item, &s->limits, &err) < 0) {
        r = worker_call_encode_error(&s->reply, err.kind, err.message);
        if (r < 0) {
            exit_out_of_memory(id);
        }
        return -1;
    }
    r = worker_conn_take_credit(&s->conn);
    if (r == -EINTR) {
        if (worker_call_encode_exception(&s->reply, &s->limits) < 0) {
            exit_out_of_memory(id);
        }
        return -1;
    }
    if (r < 0) {
        worker_serve_exit_on_error(r);
    }
    send_frame(s, WORKER_FRAME_CHUNK, id, &s->chunk);
    return 0;
}

static void run_stream(Server *s, uint64_t id, const CallRequest *req)
{
    PyObject *result = NULL, *iter = NULL, *item = NULL;
    int r = 0;

    worker_conn_stream_begin(&s->conn, id);
    result = worker_call_invoke(req->command, req->args);
    iter = result ? PyObject_GetIter(result) : NULL;
    if (!iter) {
        r = worker_call_encode_exception(&s->reply, &s->limits);
        goto out;
    }
    for (;;) {
        PySendResult sent = PyIter_Send(iter, Py_None, &item);
        if (sent == PYGEN_ERROR) {
            r = worker_call_encode_exception(&s->reply, &s->limits);
            break;
        }
        if (sent == PYGEN_RETURN) {
            /* The generator's return value, None for other iterators. */
            r = worker_call_encode_ok(&s->reply, item, &s->limits);
            break;
        }
        int sent_chunk = send_chunk(s, id, item);
        Py_CLEAR(item);
        if (sent_chunk < 0) {
            break;
        }
    }
out:
    worker_conn_stream_end(&s->conn);
    Py_XDECREF(item);
    Py_XDECREF(iter);
    Py_XDECREF(result);
    send_reply(s, id, r);
}

static void serve_call(Server *s, const WorkerFrame *f)
{
    CallRequest req = {0};
    EtfPyError err;
    char message[160];

    if (f->oversized) {
        snprintf(message, sizeof(message), "the call of %zu bytes exceeds the %zu byte limit",
                 f->len, s->conn.max_payload);
        send_error(s, f->id, "too_large", message);
        return;
    }
    if (decode_call(s, f, &req, &err) < 0) {
        send_error(s, f->id, err.kind, err.message);
        return;
    }
    uint64_t id = f->id; /* f's payload is reused by reads during the call */
    worker_session_begin(&s->conn, id, req.session_id, &s->limits);
    if (req.stream) {
        run_stream(s, id, &req);
    } else {
        run_plain(s, id, &req);
    }
    worker_session_end();
    call_request_clear(&req);
}

/* Drop the exception a signal handler raised between calls. */
static void drop_signal_exception(void)
{
    if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
        log_debug("Ignoring an interrupt that arrived after its call replied");
    } else {
        log_warning("Ignoring an exception raised by a signal handler between calls");
    }
    PyErr_Clear();
}

/* Give a buffer grown by a large reply back to the allocator, so the worker's RSS shrinks. */
static void release_large_buffer(ei_x_buff *x)
{
    if (x->buffsz <= WORKER_SERVE_KEEP_BUFFER_BYTES) {
        return;
    }
    ei_x_free(x);
    if (ei_x_new(x) < 0) {
        exit_out_of_memory(0);
    }
}

_Noreturn void worker_serve_run(const WorkerServeParams *params)
{
    static Server s;

    worker_conn_init(&s.conn, params->request_fd, params->max_message_bytes);
    s.limits = (EtfPyLimits){.max_depth = params->max_depth,
                             .max_bytes = params->max_message_bytes};
    if (ei_x_new(&s.reply) < 0 || ei_x_new(&s.chunk) < 0) {
        exit_out_of_memory(0);
    }
    send_hello(&s, params->worker_id);
    log_debug("Worker %u is serving calls", (unsigned)params->worker_id);

    for (;;) {
        WorkerFrame f;
        int r = worker_conn_read(&s.conn, &f);
        if (r == -EINTR) {
            drop_signal_exception();
            continue;
        }
        if (r < 0) {
            worker_serve_exit_on_error(r);
        }
        if (f.type != WORKER_FRAME_CALL) {
            log_debug("Dropping a stale frame of type %d for call %llu", (int)f.type,
                      (unsigned long long)f.id);
            continue;
        }
        serve_call(&s, &f);
        release_large_buffer(&s.reply);
        release_large_buffer(&s.chunk);
        if (PyErr_CheckSignals() < 0) {
            drop_signal_exception();
        }
    }
}
