/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The C side of a call: invoke snakepit._runtime.call and turn its result or exception into the
 * payload of a REPLY or CHUNK frame. The error map follows the product's error contract: kind,
 * message and retryable always; type, traceback and args for Python exceptions.
 */
#include "worker_call.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>


/* Error replies hold no more than this much of the exception's args. */
#define WORKER_CALL_ERROR_ARGS_MAX_BYTES 65536

/* Strong references taken by worker_call_init() and kept for the life of the process. */
static PyObject *runtime_call;
static PyObject *runtime_describe;

int worker_call_init(const char *allow, const char *adapter)
{
    PyObject *module = NULL, *configure = NULL, *result = NULL;
    int r = -1;

    module = PyImport_ImportModule("snakepit._runtime");
    if (!module) {
        goto out;
    }
    configure = PyObject_GetAttrString(module, "configure");
    if (!configure) {
        goto out;
    }
    result = PyObject_CallFunction(configure, "zz", allow, adapter);
    if (!result) {
        goto out;
    }
    runtime_call = PyObject_GetAttrString(module, "call");
    runtime_describe = PyObject_GetAttrString(module, "describe");
    if (!runtime_call || !runtime_describe) {
        Py_CLEAR(runtime_call);
        Py_CLEAR(runtime_describe);
        goto out;
    }
    r = 0;
out:
    Py_XDECREF(result);
    Py_XDECREF(configure);
    Py_XDECREF(module);
    return r;
}

PyObject *worker_call_invoke(PyObject *command, PyObject *args)
{
    PyObject *argv[2] = {command, args};

    return PyObject_Vectorcall(runtime_call, argv, 2, NULL);
}

/* Kinds a caller may retry: the failure was in the system, not in the request. */
static bool kind_is_retryable(const char *kind)
{
    static const char *const transient[] = {
        "timeout", "queue_timeout", "overloaded", "worker_crashed", "worker_busy",
        "session_worker_unavailable", "store_unavailable", "circuit_open", "shutting_down",
    };

    for (size_t i = 0; i < sizeof(transient) / sizeof(transient[0]); i++) {
        if (strcmp(kind, transient[i]) == 0) {
            return true;
        }
    }
    return false;
}

static int encode_reply_start(ei_x_buff *x, const char *tag)
{
    x->index = 0;
    if (ei_x_encode_version(x) < 0 || ei_x_encode_tuple_header(x, 2) < 0
        || ei_x_encode_atom(x, tag) < 0) {
        return -ENOMEM;
    }
    return 0;
}

static int encode_key_binary(ei_x_buff *x, const char *key, const char *data, size_t len)
{
    if (ei_x_encode_atom(x, key) < 0 || ei_x_encode_binary(x, data, (long)len) < 0) {
        return -ENOMEM;
    }
    return 0;
}

int worker_call_encode_error(ei_x_buff *x, const char *kind, const char *message)
{
    if (encode_reply_start(x, "error") < 0 || ei_x_encode_map_header(x, 3) < 0
        || ei_x_encode_atom(x, "kind") < 0 || ei_x_encode_atom(x, kind) < 0
        || encode_key_binary(x, "message", message, strlen(message)) < 0
        || ei_x_encode_atom(x, "retryable") < 0
        || ei_x_encode_boolean(x, kind_is_retryable(kind)) < 0) {
        return -ENOMEM;
    }
    return 0;
}

static size_t payload_budget(const EtfPyLimits *limits, const ei_x_buff *x)
{
    size_t used = (size_t)x->index;

    return limits->max_bytes > used ? limits->max_bytes - used : 0;
}

int worker_call_encode_ok(ei_x_buff *x, PyObject *result, const EtfPyLimits *limits)
{
    EtfPyError err;

    if (encode_reply_start(x, "ok") < 0) {
        return -ENOMEM;
    }
    EtfPyLimits term_limits = {.max_depth = limits->max_depth,
                               .max_bytes = payload_budget(limits, x)};
    if (term_limits.max_bytes == 0 || etf_py_encode(x, result, &term_limits, &err) < 0) {
        if (term_limits.max_bytes == 0) {
            err.kind = "too_large";
            strcpy(err.message, "the message size limit leaves no room for a result");
        }
        return worker_call_encode_error(x, err.kind, err.message);
    }
    return 0;
}

int worker_call_encode_chunk(ei_x_buff *x, PyObject *item, const EtfPyLimits *limits,
                             EtfPyError *err)
{
    x->index = 0;
    if (ei_x_encode_version(x) < 0) {
        err->kind = "encode_error";
        strcpy(err->message, "out of memory");
        return -1;
    }
    EtfPyLimits term_limits = {.max_depth = limits->max_depth,
                               .max_bytes = payload_budget(limits, x)};
    return etf_py_encode(x, item, &term_limits, err);
}

/* The describe() result: (kind, message, type or None, traceback or None, args or None). */
typedef struct {
    const char *kind;
    PyObject *message;   /* borrowed bytes */
    PyObject *type;      /* borrowed bytes, or NULL */
    PyObject *traceback; /* borrowed list of bytes, or NULL */
    PyObject *args;      /* borrowed, or NULL */
} ExceptionFields;

static int unpack_description(PyObject *desc, ExceptionFields *out)
{
    ExceptionFields f = {0};

    if (!PyTuple_Check(desc) || PyTuple_GET_SIZE(desc) != 5) {
        return -EINVAL;
    }
    PyObject *kind = PyTuple_GET_ITEM(desc, 0);
    f.message = PyTuple_GET_ITEM(desc, 1);
    f.type = PyTuple_GET_ITEM(desc, 2);
    f.traceback = PyTuple_GET_ITEM(desc, 3);
    f.args = PyTuple_GET_ITEM(desc, 4);
    f.kind = PyUnicode_Check(kind) ? PyUnicode_AsUTF8(kind) : NULL;
    if (!f.kind || !PyBytes_Check(f.message)) {
        PyErr_Clear();
        return -EINVAL;
    }
    f.type = PyBytes_Check(f.type) ? f.type : NULL;
    f.traceback = PyList_Check(f.traceback) ? f.traceback : NULL;
    f.args = f.args == Py_None ? NULL : f.args;
    *out = f;
    return 0;
}

/* Encode `args` alone into `out`; returns 0 when it fits the error reply's budget. */
static int encode_args(ei_x_buff *out, PyObject *args, const EtfPyLimits *limits)
{
    EtfPyLimits args_limits = {.max_depth = limits->max_depth,
                               .max_bytes = WORKER_CALL_ERROR_ARGS_MAX_BYTES};
    EtfPyError err;

    if (ei_x_new(out) < 0) {
        return -ENOMEM;
    }
    if (etf_py_encode(out, args, &args_limits, &err) < 0) {
        ei_x_free(out);
        return -EINVAL;
    }
    return 0;
}

static int encode_traceback(ei_x_buff *x, PyObject *lines)
{
    Py_ssize_t n = PyList_GET_SIZE(lines);

    if (ei_x_encode_atom(x, "traceback") < 0 || (n > 0 && ei_x_encode_list_header(x, n) < 0)) {
        return -ENOMEM;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *line = PyList_GET_ITEM(lines, i);
        const char *data = PyBytes_Check(line) ? PyBytes_AS_STRING(line) : "";
        size_t len = PyBytes_Check(line) ? (size_t)PyBytes_GET_SIZE(line) : 0;
        if (ei_x_encode_binary(x, data, (long)len) < 0) {
            return -ENOMEM;
        }
    }
    return ei_x_encode_empty_list(x) < 0 ? -ENOMEM : 0;
}

static int encode_fields(ei_x_buff *x, const ExceptionFields *f, const EtfPyLimits *limits)
{
    ei_x_buff args = {0};
    bool have_args = f->args && encode_args(&args, f->args, limits) == 0;
    int keys = 3 + (f->type != NULL) + (f->traceback != NULL) + have_args;
    int r = -ENOMEM;

    if (encode_reply_start(x, "error") < 0 || ei_x_encode_map_header(x, keys) < 0
        || ei_x_encode_atom(x, "kind") < 0 || ei_x_encode_atom(x, f->kind) < 0
        || encode_key_binary(x, "message", PyBytes_AS_STRING(f->message),
                             (size_t)PyBytes_GET_SIZE(f->message)) < 0) {
        goto out;
    }
    if (f->type && encode_key_binary(x, "type", PyBytes_AS_STRING(f->type),
                                     (size_t)PyBytes_GET_SIZE(f->type)) < 0) {
        goto out;
    }
    if (f->traceback && encode_traceback(x, f->traceback) < 0) {
        goto out;
    }
    if (have_args && (ei_x_encode_atom(x, "args") < 0
                      || ei_x_append_buf(x, args.buff, args.index) < 0)) {
        goto out;
    }
    if (ei_x_encode_atom(x, "retryable") < 0
        || ei_x_encode_boolean(x, kind_is_retryable(f->kind)) < 0) {
        goto out;
    }
    r = 0;
out:
    if (have_args) {
        ei_x_free(&args);
    }
    return r;
}

/* The error reply when describe() itself failed: only the exception's C type name is safe. */
static int encode_undescribed(ei_x_buff *x, PyObject *exc)
{
    const char *name = exc ? Py_TYPE(exc)->tp_name : "unknown exception";
    char message[256];

    snprintf(message, sizeof(message), "%s raised, and describing it failed", name);
    return worker_call_encode_error(x, "python_exception", message);
}

PyObject *worker_call_take_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type = NULL, *value = NULL, *tb = NULL;

    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value && tb) {
        PyException_SetTraceback(value, tb);
    }
    Py_XDECREF(tb);
    Py_XDECREF(type);
    return value;
#endif
}

int worker_call_encode_exception(ei_x_buff *x, const EtfPyLimits *limits)
{
    PyObject *exc = worker_call_take_exception();
    PyObject *desc = exc ? PyObject_CallOneArg(runtime_describe, exc) : NULL;
    ExceptionFields fields;
    int r;

    if (desc && unpack_description(desc, &fields) == 0) {
        r = encode_fields(x, &fields, limits);
    } else {
        PyErr_Clear();
        r = encode_undescribed(x, exc);
    }
    Py_XDECREF(desc);
    Py_XDECREF(exc);
    return r;
}
