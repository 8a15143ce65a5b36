/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Set-up of the term codec and what its decoder and encoder share: the snakepit types it
 * creates and recognises, error reporting into EtfPyError, and the byte extent of the opaque
 * terms (pids, ports, references, funs) that travel through Python unchanged.
 */
#include "etf_py_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

EtfPyState etf_py_state;

int etf_py_error_set(EtfPyError *err, const char *kind, const char *fmt, ...)
{
    va_list ap;

    err->kind = kind;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return -1;
}

int etf_py_error_from_exception(EtfPyError *err, const char *kind, const char *prefix)
{
    PyObject *exc_type = NULL;
    PyObject *exc = NULL;
    PyObject *traceback = NULL;
    PyObject *text = NULL;
    const char *message = NULL;
    char type_name[128];

    /* PyErr_GetRaisedException() is new in 3.12; the worker embeds 3.11. */
    PyErr_Fetch(&exc_type, &exc, &traceback);
    PyErr_NormalizeException(&exc_type, &exc, &traceback);
    Py_XDECREF(exc_type);
    Py_XDECREF(traceback);
    if (exc == NULL) {
        return etf_py_error_set(err, kind, "%s", prefix);
    }
    if (PyErr_GivenExceptionMatches(exc, PyExc_MemoryError)) {
        kind = "too_large";
    }
    etf_py_type_name(Py_TYPE(exc), type_name, sizeof(type_name));
    text = PyObject_Str(exc);
    if (text != NULL) {
        message = PyUnicode_AsUTF8(text);
    }
    if (message == NULL) {
        PyErr_Clear();
        message = "(message not printable)";
    }
    if (message[0] == '\0') {
        etf_py_error_set(err, kind, "%s: %s", prefix, type_name);
    } else {
        etf_py_error_set(err, kind, "%s: %s: %s", prefix, type_name, message);
    }
    Py_XDECREF(text);
    Py_DECREF(exc);
    return -1;
}

void etf_py_type_name(PyTypeObject *type, char *out, size_t size)
{
    PyObject *exc_type;
    PyObject *exc;
    PyObject *traceback;

    /* Keep the pending exception, if any, for the caller's error message. */
    PyErr_Fetch(&exc_type, &exc, &traceback);

    PyObject *module = PyObject_GetAttr((PyObject *)type, etf_py_state.module_attr);
    PyObject *qualname = PyType_GetQualName(type);
    const char *module_str = NULL;
    const char *qualname_str = NULL;

    if (module != NULL && PyUnicode_Check(module)) {
        module_str = PyUnicode_AsUTF8(module);
    }
    if (qualname != NULL) {
        qualname_str = PyUnicode_AsUTF8(qualname);
    }
    PyErr_Clear();
    if (qualname_str == NULL) {
        qualname_str = type->tp_name;
    }
    if (module_str == NULL || strcmp(module_str, "builtins") == 0) {
        snprintf(out, size, "%s", qualname_str);
    } else {
        snprintf(out, size, "%s.%s", module_str, qualname_str);
    }
    Py_XDECREF(module);
    Py_XDECREF(qualname);
    PyErr_Restore(exc_type, exc, traceback);
}

/* Find the end of the atom at buf[at]; returns 0, or -1 if it is no atom or is truncated. */
static int atom_extent(const unsigned char *buf, size_t len, size_t at, size_t *end)
{
    size_t header;
    size_t chars_len;

    if (at >= len) {
        return -1;
    }
    switch (buf[at]) {
    case ERL_SMALL_ATOM_EXT:
    case ERL_SMALL_ATOM_UTF8_EXT:
        header = 2;
        if (len - at < header) {
            return -1;
        }
        chars_len = buf[at + 1];
        break;
    case ERL_ATOM_EXT:
    case ERL_ATOM_UTF8_EXT:
        header = 3;
        if (len - at < header) {
            return -1;
        }
        chars_len = etf_py_get_be16(buf + at + 1);
        break;
    default:
        return -1;
    }
    if (len - at - header < chars_len) {
        return -1;
    }
    *end = at + header + chars_len;
    return 0;
}

/*
 * Find the end of a pid, port or reference: the tag, for new references a 2-byte count of ID
 * words, the node atom, then fixed-size fields (ID, serial, creation, the ID words).
 */
static PyObject *node_term_extent(const unsigned char *buf, size_t len, size_t at, size_t *end)
{
    size_t node_end;
    size_t after_node;
    size_t words = 0;
    size_t node_at = at + 1;
    PyObject *type;

    switch (buf[at]) {
    case ERL_PID_EXT:
        type = etf_py_state.pid_type;
        after_node = 9;
        break;
    case ERL_NEW_PID_EXT:
        type = etf_py_state.pid_type;
        after_node = 12;
        break;
    case ERL_PORT_EXT:
        type = etf_py_state.port_type;
        after_node = 5;
        break;
    case ERL_NEW_PORT_EXT:
        type = etf_py_state.port_type;
        after_node = 8;
        break;
    case ERL_V4_PORT_EXT:
        type = etf_py_state.port_type;
        after_node = 12;
        break;
    case ERL_REFERENCE_EXT:
        type = etf_py_state.reference_type;
        after_node = 5;
        break;
    case ERL_NEW_REFERENCE_EXT:
    case ERL_NEWER_REFERENCE_EXT:
        type = etf_py_state.reference_type;
        if (len - at < 3) {
            return NULL;
        }
        words = etf_py_get_be16(buf + at + 1);
        node_at = at + 3;
        after_node = (buf[at] == ERL_NEW_REFERENCE_EXT ? 1 : 4) + 4 * words;
        break;
    default:
        return NULL;
    }
    if (atom_extent(buf, len, node_at, &node_end) < 0 || len - node_end < after_node) {
        return NULL;
    }
    *end = node_end + after_node;
    return type;
}

PyObject *etf_py_opaque_extent(const unsigned char *buf, size_t len, size_t at, size_t *end)
{
    size_t pos;

    if (at >= len) {
        return NULL;
    }
    switch (buf[at]) {
    case ERL_NEW_FUN_EXT: {
        /* Size counts itself and everything after it, up to the end of the free variables. */
        if (len - at < 5) {
            return NULL;
        }
        size_t size = etf_py_get_be32(buf + at + 1);
        if (size < 4 || len - at - 1 < size) {
            return NULL;
        }
        *end = at + 1 + size;
        return etf_py_state.fun_type;
    }
    case ERL_EXPORT_EXT:
        /* Module atom, function atom, arity as a small integer. */
        if (atom_extent(buf, len, at + 1, &pos) < 0 || atom_extent(buf, len, pos, &pos) < 0) {
            return NULL;
        }
        if (len - pos < 2 || buf[pos] != ERL_SMALL_INTEGER_EXT) {
            return NULL;
        }
        *end = pos + 2;
        return etf_py_state.fun_type;
    default:
        return node_term_extent(buf, len, at, end);
    }
}

static int import_type(PyObject *module, const char *name, PyObject **out)
{
    PyObject *obj = PyObject_GetAttrString(module, name);

    if (obj == NULL) {
        return -1;
    }
    if (!PyType_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "snakepit.%s is not a type", name);
        Py_DECREF(obj);
        return -1;
    }
    *out = obj;
    return 0;
}

int etf_py_init(void)
{
    EtfPyState state = {0};
    PyObject *snakepit = NULL;
    PyObject *encoders = NULL;
    int r = -1;

    if (etf_py_state.atom_type != NULL) {
        return 0;
    }
    snakepit = PyImport_ImportModule("snakepit");
    if (snakepit == NULL) {
        goto out_release;
    }
    encoders = PyImport_ImportModule("snakepit.encoders");
    if (encoders == NULL) {
        goto out_release;
    }
    if (import_type(snakepit, "Atom", &state.atom_type) < 0 ||
        import_type(snakepit, "Opaque", &state.opaque_type) < 0 ||
        import_type(snakepit, "Pid", &state.pid_type) < 0 ||
        import_type(snakepit, "Reference", &state.reference_type) < 0 ||
        import_type(snakepit, "Port", &state.port_type) < 0 ||
        import_type(snakepit, "Fun", &state.fun_type) < 0) {
        goto out_release;
    }
    state.encoder_lookup = PyObject_GetAttrString(encoders, "lookup");
    state.etf_attr = PyUnicode_InternFromString("_etf");
    state.module_attr = PyUnicode_InternFromString("__module__");
    state.atom_cache = PyDict_New();
    if (state.encoder_lookup == NULL || state.etf_attr == NULL || state.module_attr == NULL ||
        state.atom_cache == NULL) {
        goto out_release;
    }
    etf_py_state = state;
    r = 0;

out_release:
    if (r < 0) {
        Py_XDECREF(state.atom_type);
        Py_XDECREF(state.opaque_type);
        Py_XDECREF(state.pid_type);
        Py_XDECREF(state.reference_type);
        Py_XDECREF(state.port_type);
        Py_XDECREF(state.fun_type);
        Py_XDECREF(state.encoder_lookup);
        Py_XDECREF(state.etf_attr);
        Py_XDECREF(state.module_attr);
        Py_XDECREF(state.atom_cache);
    }
    Py_XDECREF(encoders);
    Py_XDECREF(snakepit);
    return r;
}
