/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Encoder from Python objects to external term format, appending to an ei_x_buff. Containers
 * are walked with an explicit stack bounded by the depth limit, so a Python list nested
 * 100,000 deep costs no C or Python recursion. Every write is checked against the size limit
 * before it is made, so a 100 MB bytes object over the limit is never copied.
 */
#include "etf_py_internal.h"

#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* An encoder may return an object that needs an encoder again, this many times per object. */
#define ENCODER_CHAIN_MAX 8

/* Erlang encodes a list of integers 0..255 with at most this many elements as a STRING_EXT. */
#define STRING_EXT_MAX_LEN 65535

typedef enum {
    FRAME_LIST,
    FRAME_TUPLE,
    FRAME_DICT,
} FrameKind;

/* A container being written: `next` of `size` items (dict pairs) are done. */
typedef struct {
    PyObject *container; /* new reference */
    PyObject *key;       /* new reference: the key of the dict pair being written, or NULL */
    PyObject *value;     /* new reference: the value of the dict key just written, or NULL */
    Py_ssize_t size;
    Py_ssize_t next;
    Py_ssize_t dict_pos; /* PyDict_Next position */
    FrameKind kind;
} EncodeFrame;

#define ENCODE_STACK_INLINE 32

typedef struct {
    ei_x_buff *x;
    size_t start;
    size_t max_depth;
    size_t max_bytes;
    EtfPyError *err;
    EncodeFrame *frames;
    size_t depth;
    size_t capacity;
    EncodeFrame inline_frames[ENCODE_STACK_INLINE];
} Encoder;

static int fail_type(Encoder *e, const char *what, PyObject *obj)
{
    char type_name[128];

    etf_py_type_name(Py_TYPE(obj), type_name, sizeof(type_name));
    return etf_py_error_set(e->err, "encode_error", "%s %s", what, type_name);
}

/* Make room for n more bytes and return where they go, or NULL when over the size limit. */
static unsigned char *reserve(Encoder *e, size_t n)
{
    ei_x_buff *x = e->x;
    size_t used = (size_t)x->index - e->start;
    size_t needed;

    if (n > e->max_bytes || used > e->max_bytes - n) {
        etf_py_error_set(e->err, "too_large", "encoded term exceeds the limit of %zu bytes",
                         e->max_bytes);
        return NULL;
    }
    needed = (size_t)x->index + n;
    if (needed > (size_t)x->buffsz) {
        size_t size = (size_t)x->buffsz * 2;
        char *buff;

        if (size < needed) {
            size = needed;
        }
        if (size < 256) {
            size = 256;
        }
        if (size > INT_MAX) {
            size = INT_MAX;
        }
        if (needed > size) {
            etf_py_error_set(e->err, "too_large", "encoded term exceeds the %d bytes of ei_x_buff",
                             INT_MAX);
            return NULL;
        }
        /* ei_x_buff memory comes from malloc and goes back to free in ei_x_free(). */
        buff = realloc(x->buff, size);
        if (buff == NULL) {
            etf_py_error_set(e->err, "too_large", "out of memory for an encoded term of %zu bytes",
                             needed - e->start);
            return NULL;
        }
        x->buff = buff;
        x->buffsz = (int)size;
    }
    unsigned char *p = (unsigned char *)x->buff + x->index;
    x->index += (int)n;
    return p;
}

static void put_be16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static int put_tag(Encoder *e, unsigned char tag)
{
    unsigned char *p = reserve(e, 1);

    if (p == NULL) {
        return -1;
    }
    p[0] = tag;
    return 0;
}

/* Write a tag followed by a 4-byte big-endian count: lists, large tuples, maps, binaries. */
static unsigned char *put_tag32(Encoder *e, unsigned char tag, size_t count, size_t extra)
{
    unsigned char *p;

    if (count > UINT32_MAX) {
        etf_py_error_set(e->err, "too_large", "%zu elements exceed the 2^32 limit of a term",
                         count);
        return NULL;
    }
    p = reserve(e, 5 + extra);
    if (p == NULL) {
        return NULL;
    }
    p[0] = tag;
    put_be32(p + 1, (uint32_t)count);
    return p + 5;
}

static int put_atom_text(Encoder *e, const char *text, size_t n)
{
    unsigned char *p;

    if (n <= 255) {
        p = reserve(e, 2 + n);
        if (p == NULL) {
            return -1;
        }
        p[0] = ERL_SMALL_ATOM_UTF8_EXT;
        p[1] = (unsigned char)n;
        memcpy(p + 2, text, n);
    } else {
        p = reserve(e, 3 + n);
        if (p == NULL) {
            return -1;
        }
        p[0] = ERL_ATOM_UTF8_EXT;
        put_be16(p + 1, (uint16_t)n);
        memcpy(p + 3, text, n);
    }
    return 0;
}

/* Write an integer the way term_to_binary does: the smallest of the three integer forms. */
static int put_long_long(Encoder *e, long long v)
{
    unsigned char *p;

    if (v >= 0 && v <= 255) {
        p = reserve(e, 2);
        if (p == NULL) {
            return -1;
        }
        p[0] = ERL_SMALL_INTEGER_EXT;
        p[1] = (unsigned char)v;
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
        p = reserve(e, 5);
        if (p == NULL) {
            return -1;
        }
        p[0] = ERL_INTEGER_EXT;
        put_be32(p + 1, (uint32_t)(int32_t)v);
    } else {
        unsigned long long magnitude = v < 0 ? -(unsigned long long)v : (unsigned long long)v;
        unsigned char digits[8];
        size_t n = 0;

        while (magnitude != 0) {
            digits[n++] = (unsigned char)magnitude;
            magnitude >>= 8;
        }
        p = reserve(e, 3 + n);
        if (p == NULL) {
            return -1;
        }
        p[0] = ERL_SMALL_BIG_EXT;
        p[1] = (unsigned char)n;
        p[2] = v < 0;
        memcpy(p + 3, digits, n);
    }
    return 0;
}

static int encode_bignum(Encoder *e, PyObject *obj)
{
    size_t bits = _PyLong_NumBits(obj);
    size_t n = (bits + 7) / 8;
    bool negative = _PyLong_Sign(obj) < 0;
    PyObject *magnitude;
    unsigned char *p;
    int r;

    if (bits == (size_t)-1 && PyErr_Occurred()) {
        return etf_py_error_from_exception(e->err, "encode_error", "failed to encode an int");
    }
    if (n > ETF_PY_MAX_BIG_BYTES) {
        return etf_py_error_set(e->err, "encode_error",
                                "int of %zu bits exceeds the Erlang integer limit of %zu bits",
                                bits, ETF_PY_MAX_BIG_BYTES * 8);
    }
    if (n <= 255) {
        p = reserve(e, 3 + n);
        if (p == NULL) {
            return -1;
        }
        p[0] = ERL_SMALL_BIG_EXT;
        p[1] = (unsigned char)n;
        p += 2;
    } else {
        p = put_tag32(e, ERL_LARGE_BIG_EXT, n, 1 + n);
        if (p == NULL) {
            return -1;
        }
    }
    p[0] = negative;
    magnitude = PyNumber_Absolute(obj);
    if (magnitude == NULL) {
        return etf_py_error_from_exception(e->err, "encode_error", "failed to encode an int");
    }
    /* Private but stable in 3.11; PyLong_AsNativeBytes arrives only in 3.13. */
    r = _PyLong_AsByteArray((PyLongObject *)magnitude, p + 1, n, 1, 0);
    Py_DECREF(magnitude);
    if (r < 0) {
        return etf_py_error_from_exception(e->err, "encode_error", "failed to encode an int");
    }
    return 0;
}

static int encode_int(Encoder *e, PyObject *obj)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);

    if (overflow != 0) {
        return encode_bignum(e, obj);
    }
    if (v == -1 && PyErr_Occurred()) {
        return etf_py_error_from_exception(e->err, "encode_error", "failed to encode an int");
    }
    return put_long_long(e, v);
}

static int encode_float(Encoder *e, double v)
{
    uint64_t bits;
    unsigned char *p;

    if (isnan(v)) {
        return put_atom_text(e, "nan", 3);
    }
    if (isinf(v)) {
        return v > 0 ? put_atom_text(e, "infinity", 8) : put_atom_text(e, "neg_infinity", 12);
    }
    p = reserve(e, 9);
    if (p == NULL) {
        return -1;
    }
    memcpy(&bits, &v, sizeof(bits));
    p[0] = NEW_FLOAT_EXT;
    put_be32(p + 1, (uint32_t)(bits >> 32));
    put_be32(p + 5, (uint32_t)bits);
    return 0;
}

static int put_binary(Encoder *e, const void *data, size_t n)
{
    unsigned char *p = put_tag32(e, ERL_BINARY_EXT, n, n);

    if (p == NULL) {
        return -1;
    }
    memcpy(p, data, n);
    return 0;
}

static int encode_str(Encoder *e, PyObject *obj)
{
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(obj, &n);

    if (utf8 == NULL) {
        return etf_py_error_from_exception(e->err, "encode_error",
                                           "str cannot be encoded as UTF-8");
    }
    return put_binary(e, utf8, (size_t)n);
}

static int encode_buffer(Encoder *e, PyObject *obj)
{
    Py_buffer view;
    unsigned char *p;
    int r = -1;

    if (PyObject_GetBuffer(obj, &view, PyBUF_FULL_RO) < 0) {
        return etf_py_error_from_exception(e->err, "encode_error",
                                           "failed to read the buffer of a memoryview");
    }
    p = put_tag32(e, ERL_BINARY_EXT, (size_t)view.len, (size_t)view.len);
    if (p != NULL) {
        if (PyBuffer_ToContiguous(p, &view, view.len, 'C') < 0) {
            etf_py_error_from_exception(e->err, "encode_error",
                                        "failed to copy the buffer of a memoryview");
        } else {
            r = 0;
        }
    }
    PyBuffer_Release(&view);
    return r;
}

static int encode_atom(Encoder *e, PyObject *obj)
{
    Py_ssize_t chars = PyUnicode_GET_LENGTH(obj);
    Py_ssize_t n;
    const char *utf8;

    if (chars > ETF_PY_MAX_ATOM_CHARS) {
        return etf_py_error_set(e->err, "encode_error",
                                "Atom of %zd characters exceeds the Erlang limit of %d", chars,
                                ETF_PY_MAX_ATOM_CHARS);
    }
    utf8 = PyUnicode_AsUTF8AndSize(obj, &n);
    if (utf8 == NULL) {
        return etf_py_error_from_exception(e->err, "encode_error",
                                           "Atom cannot be encoded as UTF-8");
    }
    return put_atom_text(e, utf8, (size_t)n);
}

/* Write the raw bytes of a Pid, Reference, Port or Fun after checking they are that term. */
static int encode_opaque(Encoder *e, PyObject *obj)
{
    PyObject *etf = PyObject_GetAttr(obj, etf_py_state.etf_attr);
    PyObject *type;
    size_t end;
    int r = -1;

    if (etf == NULL || !PyBytes_Check(etf)) {
        PyErr_Clear();
        fail_type(e, "opaque term without its bytes:", obj);
        goto out_release;
    }
    type = etf_py_opaque_extent((const unsigned char *)PyBytes_AS_STRING(etf),
                                (size_t)PyBytes_GET_SIZE(etf), 0, &end);
    if (type == NULL || end != (size_t)PyBytes_GET_SIZE(etf) ||
        !PyObject_TypeCheck(obj, (PyTypeObject *)type)) {
        fail_type(e, "invalid external term format bytes in", obj);
        goto out_release;
    }
    unsigned char *p = reserve(e, end);
    if (p != NULL) {
        memcpy(p, PyBytes_AS_STRING(etf), end);
        r = 0;
    }

out_release:
    Py_XDECREF(etf);
    return r;
}

static int push_frame(Encoder *e, FrameKind kind, PyObject *container, Py_ssize_t size)
{
    if (e->depth == e->capacity) {
        size_t capacity = e->capacity * 2;
        EncodeFrame *frames = PyMem_Malloc(capacity * sizeof(*frames));

        if (frames == NULL) {
            return etf_py_error_set(e->err, "too_large", "out of memory for the encode stack");
        }
        memcpy(frames, e->frames, e->depth * sizeof(*frames));
        if (e->frames != e->inline_frames) {
            PyMem_Free(e->frames);
        }
        e->frames = frames;
        e->capacity = capacity;
    }
    Py_INCREF(container);
    e->frames[e->depth++] = (EncodeFrame){
        .container = container,
        .size = size,
        .kind = kind,
    };
    return 0;
}

static int check_depth(Encoder *e)
{
    if (e->depth + 1 > e->max_depth) {
        return etf_py_error_set(e->err, "too_deep",
                                "value nested deeper than the limit of %zu levels", e->max_depth);
    }
    return 0;
}

/* Whether Erlang would write this list as a STRING_EXT: 1..65535 exact ints of 0..255. */
static bool is_byte_list(PyObject *list)
{
    Py_ssize_t n = PyList_GET_SIZE(list);

    if (n == 0 || n > STRING_EXT_MAX_LEN) {
        return false;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        int overflow;
        long v;

        if (!PyLong_CheckExact(item)) {
            return false;
        }
        v = PyLong_AsLongAndOverflow(item, &overflow);
        if (overflow != 0 || v < 0 || v > 255) {
            return false;
        }
    }
    return true;
}

static int encode_list(Encoder *e, PyObject *list)
{
    Py_ssize_t n = PyList_GET_SIZE(list);
    unsigned char *p;

    if (check_depth(e) < 0) {
        return -1;
    }
    if (n == 0) {
        return put_tag(e, ERL_NIL_EXT);
    }
    if (is_byte_list(list)) {
        p = reserve(e, 3 + (size_t)n);
        if (p == NULL) {
            return -1;
        }
        p[0] = ERL_STRING_EXT;
        put_be16(p + 1, (uint16_t)n);
        for (Py_ssize_t i = 0; i < n; i++) {
            p[3 + i] = (unsigned char)PyLong_AsLong(PyList_GET_ITEM(list, i));
        }
        return 0;
    }
    if (put_tag32(e, ERL_LIST_EXT, (size_t)n, 0) == NULL) {
        return -1;
    }
    return push_frame(e, FRAME_LIST, list, n);
}

static int encode_set(Encoder *e, PyObject *set)
{
    PyObject *list = PySequence_List(set);
    int r;

    if (list == NULL) {
        return etf_py_error_from_exception(e->err, "encode_error", "failed to encode a set");
    }
    r = encode_list(e, list);
    Py_DECREF(list);
    return r;
}

static int encode_tuple(Encoder *e, PyObject *tuple)
{
    Py_ssize_t n = PyTuple_GET_SIZE(tuple);
    unsigned char *p;

    if (check_depth(e) < 0) {
        return -1;
    }
    if (n <= 255) {
        p = reserve(e, 2);
        if (p == NULL) {
            return -1;
        }
        p[0] = ERL_SMALL_TUPLE_EXT;
        p[1] = (unsigned char)n;
    } else if (put_tag32(e, ERL_LARGE_TUPLE_EXT, (size_t)n, 0) == NULL) {
        return -1;
    }
    return n == 0 ? 0 : push_frame(e, FRAME_TUPLE, tuple, n);
}

static int encode_dict(Encoder *e, PyObject *dict)
{
    Py_ssize_t n = PyDict_GET_SIZE(dict);

    if (check_depth(e) < 0 || put_tag32(e, ERL_MAP_EXT, (size_t)n, 0) == NULL) {
        return -1;
    }
    return n == 0 ? 0 : push_frame(e, FRAME_DICT, dict, n);
}

/*
 * Encode the exact core types, Atom and the opaque types. Returns 1 when obj was one of them,
 * 0 for any other object, -1 on failure.
 */
static int encode_known(Encoder *e, PyObject *obj)
{
    PyTypeObject *type = Py_TYPE(obj);
    int r;

    if (obj == Py_None) {
        r = put_atom_text(e, "nil", 3);
    } else if (obj == Py_True) {
        r = put_atom_text(e, "true", 4);
    } else if (obj == Py_False) {
        r = put_atom_text(e, "false", 5);
    } else if (type == &PyLong_Type) {
        r = encode_int(e, obj);
    } else if (type == &PyFloat_Type) {
        r = encode_float(e, PyFloat_AS_DOUBLE(obj));
    } else if (type == &PyUnicode_Type) {
        r = encode_str(e, obj);
    } else if (type == (PyTypeObject *)etf_py_state.atom_type ||
               PyObject_TypeCheck(obj, (PyTypeObject *)etf_py_state.atom_type)) {
        r = encode_atom(e, obj);
    } else if (type == &PyBytes_Type) {
        r = put_binary(e, PyBytes_AS_STRING(obj), (size_t)PyBytes_GET_SIZE(obj));
    } else if (type == &PyByteArray_Type) {
        r = put_binary(e, PyByteArray_AS_STRING(obj), (size_t)PyByteArray_GET_SIZE(obj));
    } else if (type == &PyMemoryView_Type) {
        r = encode_buffer(e, obj);
    } else if (type == &PyList_Type) {
        r = encode_list(e, obj);
    } else if (type == &PyTuple_Type) {
        r = encode_tuple(e, obj);
    } else if (type == &PyDict_Type) {
        r = encode_dict(e, obj);
    } else if (type == &PySet_Type || type == &PyFrozenSet_Type) {
        r = encode_set(e, obj);
    } else if (PyObject_TypeCheck(obj, (PyTypeObject *)etf_py_state.opaque_type)) {
        r = encode_opaque(e, obj);
    } else {
        return 0;
    }
    return r < 0 ? -1 : 1;
}

/* Encode subclasses of the core types that have no encoder; returns 1, 0 or -1 as above. */
static int encode_subclass(Encoder *e, PyObject *obj)
{
    int r;

    if (PyLong_Check(obj)) {
        r = encode_int(e, obj);
    } else if (PyFloat_Check(obj)) {
        r = encode_float(e, PyFloat_AS_DOUBLE(obj));
    } else if (PyUnicode_Check(obj)) {
        r = encode_str(e, obj);
    } else if (PyBytes_Check(obj)) {
        r = put_binary(e, PyBytes_AS_STRING(obj), (size_t)PyBytes_GET_SIZE(obj));
    } else if (PyByteArray_Check(obj)) {
        r = put_binary(e, PyByteArray_AS_STRING(obj), (size_t)PyByteArray_GET_SIZE(obj));
    } else if (PyList_Check(obj)) {
        r = encode_list(e, obj);
    } else if (PyTuple_Check(obj)) {
        r = encode_tuple(e, obj);
    } else if (PyDict_Check(obj)) {
        r = encode_dict(e, obj);
    } else if (PyAnySet_Check(obj)) {
        r = encode_set(e, obj);
    } else {
        return 0;
    }
    return r < 0 ? -1 : 1;
}

/* Find the registered encoder for obj's type: stores a new reference or NULL in *fn. */
static int find_encoder(Encoder *e, PyObject *obj, PyObject **fn)
{
    PyObject *found = PyObject_CallOneArg(etf_py_state.encoder_lookup, (PyObject *)Py_TYPE(obj));

    if (found == NULL) {
        return etf_py_error_from_exception(e->err, "encode_error",
                                           "snakepit.encoders.lookup failed");
    }
    if (found == Py_None) {
        Py_DECREF(found);
        found = NULL;
    }
    *fn = found;
    return 0;
}

/* Apply the encoder fn to obj; returns its result (new reference), or NULL with *err filled. */
static PyObject *call_encoder(Encoder *e, PyObject *fn, PyObject *obj)
{
    PyObject *value = PyObject_CallOneArg(fn, obj);

    if (value == NULL) {
        char type_name[128];
        char prefix[192];

        etf_py_type_name(Py_TYPE(obj), type_name, sizeof(type_name));
        snprintf(prefix, sizeof(prefix), "encoder for %s failed", type_name);
        etf_py_error_from_exception(e->err, "encode_error", prefix);
    }
    return value;
}

/* Encode one object (borrowed): a scalar in full, a container's header plus a pushed frame. */
static int encode_object(Encoder *e, PyObject *obj)
{
    PyObject *owned = NULL;
    PyObject *fn = NULL;
    int r = -1;

    for (int step = 0;; step++) {
        int handled = encode_known(e, obj);

        if (handled != 0) {
            r = handled < 0 ? -1 : 0;
            break;
        }
        if (step == ENCODER_CHAIN_MAX) {
            fail_type(e, "encoders returned objects that need an encoder too many times, last",
                      obj);
            break;
        }
        if (find_encoder(e, obj, &fn) < 0) {
            break;
        }
        if (fn == NULL) {
            handled = encode_subclass(e, obj);
            if (handled == 0) {
                char type_name[128];

                etf_py_type_name(Py_TYPE(obj), type_name, sizeof(type_name));
                etf_py_error_set(e->err, "encode_error",
                                 "no term mapping for Python type %s: register an encoder with "
                                 "snakepit.encoders.register()", type_name);
            }
            r = handled > 0 ? 0 : -1;
            break;
        }
        PyObject *result = call_encoder(e, fn, obj);
        Py_CLEAR(fn);
        if (result == NULL) {
            break;
        }
        Py_XDECREF(owned);
        owned = obj = result;
    }
    Py_XDECREF(fn);
    Py_XDECREF(owned);
    return r;
}

/*
 * Take the next item of the top frame: stores a new reference in *item, or NULL when the
 * frame is done. Lists and dicts changed by an encoder while being written are an error.
 */
static int frame_next(Encoder *e, EncodeFrame *f, PyObject **item)
{
    PyObject *key;
    PyObject *value;

    *item = NULL;
    switch (f->kind) {
    case FRAME_LIST:
        if (PyList_GET_SIZE(f->container) != f->size) {
            return etf_py_error_set(e->err, "encode_error", "list changed size during encoding");
        }
        if (f->next < f->size) {
            *item = Py_NewRef(PyList_GET_ITEM(f->container, f->next++));
        }
        return 0;
    case FRAME_TUPLE:
        if (f->next < f->size) {
            *item = Py_NewRef(PyTuple_GET_ITEM(f->container, f->next++));
        }
        return 0;
    default:
        break;
    }
    if (f->value != NULL) {
        *item = f->value;
        f->value = NULL;
        return 0;
    }
    if (PyDict_GET_SIZE(f->container) != f->size) {
        return etf_py_error_set(e->err, "encode_error", "dict changed size during encoding");
    }
    if (f->next == f->size) {
        return 0;
    }
    if (!PyDict_Next(f->container, &f->dict_pos, &key, &value)) {
        return etf_py_error_set(e->err, "encode_error", "dict changed during encoding");
    }
    f->next++;
    f->value = Py_NewRef(value);
    Py_XSETREF(f->key, Py_NewRef(key));
    *item = Py_NewRef(key);
    return 0;
}

static void pop_frame(Encoder *e)
{
    EncodeFrame *f = &e->frames[--e->depth];

    Py_CLEAR(f->container);
    Py_CLEAR(f->key);
    Py_CLEAR(f->value);
}

/* Append one step of the error path: "[index]", "[key]", or "{key}" while a key is written. */
static size_t append_path_step(char *path, size_t size, size_t used, const EncodeFrame *f)
{
    PyObject *repr = NULL;
    const char *text = NULL;
    int n;

    if (f->kind != FRAME_DICT) {
        n = snprintf(path + used, size - used, "[%zd]", f->next - 1);
    } else if (f->value != NULL) {
        n = snprintf(path + used, size - used, "{key}");
    } else {
        /* Only keys whose repr runs no user code are shown. */
        PyTypeObject *type = Py_TYPE(f->key);

        if (type == &PyUnicode_Type || type == &PyLong_Type || type == &PyBytes_Type ||
            type == (PyTypeObject *)etf_py_state.atom_type) {
            repr = PyObject_Repr(f->key);
            text = repr != NULL ? PyUnicode_AsUTF8(repr) : NULL;
        }
        PyErr_Clear();
        n = snprintf(path + used, size - used, "[%.60s]", text != NULL ? text : "...");
        Py_XDECREF(repr);
    }
    if (n < 0 || (size_t)n >= size - used) {
        return size - 1;
    }
    return used + (size_t)n;
}

/* Append " (at [1]['key'])" to the error message: where in the value the encoding failed. */
static void append_error_path(Encoder *e)
{
    char path[160];
    size_t used = 0;
    size_t length = strlen(e->err->message);

    if (e->depth == 0) {
        return;
    }
    path[0] = '\0';
    for (size_t i = 0; i < e->depth && used < sizeof(path) - 1; i++) {
        used = append_path_step(path, sizeof(path), used, &e->frames[i]);
    }
    snprintf(e->err->message + length, sizeof(e->err->message) - length, " (at %s)", path);
}

static int encode_loop(Encoder *e, PyObject *root)
{
    PyObject *item = Py_NewRef(root);

    while (item != NULL) {
        int r = encode_object(e, item);

        Py_CLEAR(item);
        if (r < 0) {
            return -1;
        }
        while (e->depth > 0) {
            EncodeFrame *top = &e->frames[e->depth - 1];

            if (frame_next(e, top, &item) < 0) {
                return -1;
            }
            if (item != NULL) {
                break;
            }
            if (top->kind == FRAME_LIST && put_tag(e, ERL_NIL_EXT) < 0) {
                return -1;
            }
            pop_frame(e);
        }
    }
    return 0;
}

int etf_py_encode(ei_x_buff *x, PyObject *obj, const EtfPyLimits *limits, EtfPyError *err)
{
    Encoder e = {
        .x = x,
        .start = (size_t)x->index,
        .max_depth = ETF_PY_MAX_DEPTH_DEFAULT,
        .max_bytes = ETF_PY_MAX_BYTES_DEFAULT,
        .err = err,
        .capacity = ENCODE_STACK_INLINE,
    };
    int r;

    e.frames = e.inline_frames;
    if (limits != NULL && limits->max_depth != 0) {
        e.max_depth = limits->max_depth;
    }
    if (limits != NULL && limits->max_bytes != 0) {
        e.max_bytes = limits->max_bytes;
    }
    err->kind = NULL;
    err->message[0] = '\0';
    r = encode_loop(&e, obj);
    if (r < 0 && err->kind != NULL) {
        append_error_path(&e);
    }
    while (e.depth > 0) {
        pop_frame(&e);
    }
    if (e.frames != e.inline_frames) {
        PyMem_Free(e.frames);
    }
    if (r < 0) {
        if (err->kind == NULL) {
            etf_py_error_set(err, "encode_error", "failed to encode a value");
        }
        PyErr_Clear();
        x->index = (int)e.start;
        return -1;
    }
    return 0;
}
