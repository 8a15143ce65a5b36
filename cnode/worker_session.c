/* SPDX-License-Identifier: Apache-2.0 */
/*
 * _snakepit_worker: session_request(term) sends `term` as a SESSION_REQ for the running call and
 * returns the decoded SESSION_RESP; session_id() returns the running call's session id. A worker
 * runs one call at a time, so the running call is process state here.
 */
#include "worker_session.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>

#include "log.h"
#include "worker_proto.h"

typedef struct {
    WorkerConn *conn;      /* borrowed */
    uint64_t id;
    PyObject *session_id;  /* strong, or NULL outside a session call */
    EtfPyLimits limits;
    pthread_t thread;      /* the thread that runs the call */
    bool active;
} SessionCall;

static SessionCall session_call;

void worker_session_begin(WorkerConn *conn, uint64_t id, PyObject *session_id,
                          const EtfPyLimits *limits)
{
    session_call.conn = conn;
    session_call.id = id;
    session_call.limits = *limits;
    session_call.thread = pthread_self();
    session_call.active = true;
    Py_CLEAR(session_call.session_id);
    if (session_id && session_id != Py_None) {
        session_call.session_id = Py_NewRef(session_id);
    }
}

void worker_session_end(void)
{
    session_call.active = false;
    session_call.conn = NULL;
    Py_CLEAR(session_call.session_id);
}

static int check_session_call(void)
{
    if (!session_call.active || !session_call.session_id) {
        PyErr_SetString(PyExc_RuntimeError,
                        "snakepit.session is available only inside a call with a session_id");
        return -1;
    }
    if (!pthread_equal(session_call.thread, pthread_self())) {
        PyErr_SetString(PyExc_RuntimeError,
                        "snakepit.session is available only on the thread that runs the call");
        return -1;
    }
    return 0;
}

static PyObject *decode_response(const WorkerFrame *frame)
{
    EtfPyError err;
    int index = 1;

    if (frame->oversized) {
        PyErr_Format(PyExc_ValueError, "session response of %zu bytes exceeds the %zu byte limit",
                     frame->len, session_call.limits.max_bytes);
        return NULL;
    }
    if (frame->len < 2 || (unsigned char)frame->payload[0] != WORKER_PROTO_ETF_VERSION) {
        PyErr_SetString(PyExc_ValueError, "malformed session response from the daemon");
        return NULL;
    }
    PyObject *term = etf_py_decode(frame->payload, frame->len, &index, &session_call.limits, &err);
    if (!term) {
        PyErr_Format(PyExc_ValueError, "undecodable session response (%s): %s", err.kind,
                     err.message);
        return NULL;
    }
    return term;
}

static PyObject *session_request(PyObject *self, PyObject *request)
{
    ei_x_buff x;
    EtfPyError err;
    WorkerFrame frame;
    PyObject *result = NULL;
    int r;

    if (check_session_call() < 0) {
        return NULL;
    }
    if (ei_x_new_with_version(&x) < 0) {
        return PyErr_NoMemory();
    }
    if (etf_py_encode(&x, request, &session_call.limits, &err) < 0) {
        PyErr_Format(PyExc_ValueError, "cannot send the session request (%s): %s", err.kind,
                     err.message);
        goto out;
    }
    r = worker_conn_write(session_call.conn, WORKER_FRAME_SESSION_REQ, session_call.id, x.buff,
                          (size_t)x.index);
    if (r < 0) {
        errno = -r;
        PyErr_SetFromErrno(PyExc_OSError);
        goto out;
    }
    r = worker_conn_wait_session(session_call.conn, session_call.id, &frame);
    if (r == -EINTR) {
        goto out; /* the signal handler's exception, KeyboardInterrupt on a timeout */
    }
    if (r < 0) {
        log_error_errno(r, "Failed to read the session response of call %llu",
                        (unsigned long long)session_call.id);
        _exit(r == -EPIPE ? 0 : 1);
    }
    result = decode_response(&frame);
out:
    ei_x_free(&x);
    return result;
}

static PyObject *session_id(PyObject *self, PyObject *unused)
{
    if (session_call.active && session_call.session_id) {
        return Py_NewRef(session_call.session_id);
    }
    Py_RETURN_NONE;
}

static PyMethodDef session_methods[] = {
    {"session_request", session_request, METH_O,
     "Send a session request term for the running call and return the daemon's answer."},
    {"session_id", session_id, METH_NOARGS,
     "Return the running call's session id, or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef session_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_snakepit_worker",
    .m_doc = "Transport of snakepit.session inside a snakepit worker.",
    .m_size = -1,
    .m_methods = session_methods,
};

static PyObject *session_module_init(void)
{
    return PyModule_Create(&session_module);
}

int worker_session_register(void)
{
    return PyImport_AppendInittab("_snakepit_worker", session_module_init) < 0 ? -ENOMEM : 0;
}
