/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Decoder from external term format to Python objects. It parses the tags itself and checks
 * every length against the bytes left before reading, so no input makes it read past the
 * buffer. The lists, tuples and maps being filled sit on an explicit stack bounded by the
 * depth limit, so no input makes it recurse on the C stack either.
 */
#include "etf_py_internal.h"

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

typedef enum {
    FRAME_LIST,
    FRAME_TUPLE,
    FRAME_MAP,
} FrameKind;

/* A container being filled: `size` items (keys and values both count for a map). */
typedef struct {
    PyObject *container; /* new reference */
    PyObject *key;       /* new reference: a map key waiting for its value, or NULL */
    Py_ssize_t size;
    Py_ssize_t filled;
    FrameKind kind;
} DecodeFrame;

#define DECODE_STACK_INLINE 32

typedef struct {
    const unsigned char *buf;
    size_t len;
    size_t pos;
    size_t start;
    size_t max_depth;
    size_t max_bytes;
    EtfPyError *err;
    DecodeFrame *frames;
    size_t depth;
    size_t capacity;
    DecodeFrame inline_frames[DECODE_STACK_INLINE];
} Decoder;

static int fail_truncated(Decoder *d)
{
    return etf_py_error_set(d->err, "bad_request",
                            "invalid term: truncated at byte %zu of %zu", d->pos - d->start,
                            d->len - d->start);
}

static int fail_exception(Decoder *d, const char *what)
{
    char prefix[128];

    snprintf(prefix, sizeof(prefix), "failed to decode %s at byte %zu", what, d->pos - d->start);
    return etf_py_error_from_exception(d->err, "bad_request", prefix);
}

/* Check that n more bytes follow the cursor. */
static int need(Decoder *d, size_t n)
{
    if (d->len - d->pos < n) {
        return fail_truncated(d);
    }
    return 0;
}

static int check_depth(Decoder *d)
{
    if (d->depth + 1 > d->max_depth) {
        return etf_py_error_set(d->err, "too_deep",
                                "term nested deeper than the limit of %zu levels", d->max_depth);
    }
    return 0;
}

static int push_frame(Decoder *d, FrameKind kind, PyObject *container, Py_ssize_t size)
{
    if (d->depth == d->capacity) {
        size_t capacity = d->capacity * 2;
        DecodeFrame *frames = PyMem_Malloc(capacity * sizeof(*frames));

        if (frames == NULL) {
            Py_DECREF(container);
            return etf_py_error_set(d->err, "too_large", "out of memory for the decode stack");
        }
        memcpy(frames, d->frames, d->depth * sizeof(*frames));
        if (d->frames != d->inline_frames) {
            PyMem_Free(d->frames);
        }
        d->frames = frames;
        d->capacity = capacity;
    }
    d->frames[d->depth++] = (DecodeFrame){
        .container = container,
        .size = size,
        .kind = kind,
    };
    return 0;
}

/* Check that `count` items of at least `min_size` bytes each can still follow. */
static int check_count(Decoder *d, size_t count, size_t min_size)
{
    if (count > (d->len - d->pos) / min_size) {
        return etf_py_error_set(d->err, "bad_request",
                                "invalid term: %zu elements at byte %zu exceed the %zu bytes left",
                                count, d->pos - d->start, d->len - d->pos);
    }
    return 0;
}

/* Start a tuple, list or map of `count` items that follow; `count` is already checked. */
static int start_container(Decoder *d, FrameKind kind, size_t count)
{
    PyObject *container;

    if (check_depth(d) < 0) {
        return -1;
    }
    switch (kind) {
    case FRAME_TUPLE:
        container = PyTuple_New((Py_ssize_t)count);
        break;
    case FRAME_LIST:
        container = PyList_New((Py_ssize_t)count);
        break;
    default:
        container = PyDict_New();
        count *= 2;
        break;
    }
    if (container == NULL) {
        return fail_exception(d, "a container");
    }
    return push_frame(d, kind, container, (Py_ssize_t)count);
}

static PyObject *decode_charlist(Decoder *d)
{
    size_t n;
    PyObject *list;

    if (check_depth(d) < 0 || need(d, 3) < 0) {
        return NULL;
    }
    n = etf_py_get_be16(d->buf + d->pos + 1);
    if (d->len - d->pos - 3 < n) {
        fail_truncated(d);
        return NULL;
    }
    list = PyList_New((Py_ssize_t)n);
    if (list == NULL) {
        fail_exception(d, "a charlist");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        /* CPython 3.11 preallocates the ints -5 to 256, so this returns one of them. */
        PyList_SET_ITEM(list, (Py_ssize_t)i, PyLong_FromLong(d->buf[d->pos + 3 + i]));
    }
    d->pos += 3 + n;
    return list;
}

static PyObject *decode_big(Decoder *d)
{
    bool large = d->buf[d->pos] == ERL_LARGE_BIG_EXT;
    size_t header = large ? 6 : 3;
    size_t n;
    unsigned sign;
    const unsigned char *digits;
    PyObject *magnitude;
    PyObject *value;

    if (need(d, header) < 0) {
        return NULL;
    }
    n = large ? etf_py_get_be32(d->buf + d->pos + 1) : d->buf[d->pos + 1];
    sign = d->buf[d->pos + header - 1];
    if (n > ETF_PY_MAX_BIG_BYTES || sign > 1) {
        etf_py_error_set(d->err, "bad_request",
                         "invalid term: integer of %zu bytes with sign %u at byte %zu", n, sign,
                         d->pos - d->start);
        return NULL;
    }
    if (d->len - d->pos - header < n) {
        fail_truncated(d);
        return NULL;
    }
    digits = d->buf + d->pos + header;
    if (n <= 8) {
        unsigned long long v = 0;

        for (size_t i = n; i > 0; i--) {
            v = v << 8 | digits[i - 1];
        }
        magnitude = PyLong_FromUnsignedLongLong(v);
    } else {
        /* Private but stable in 3.11; PyLong_FromUnsignedNativeBytes arrives only in 3.13. */
        magnitude = _PyLong_FromByteArray(digits, n, 1, 0);
    }
    if (magnitude == NULL) {
        fail_exception(d, "an integer");
        return NULL;
    }
    d->pos += header + n;
    if (!sign) {
        return magnitude;
    }
    value = PyNumber_Negative(magnitude);
    Py_DECREF(magnitude);
    if (value == NULL) {
        fail_exception(d, "an integer");
    }
    return value;
}

static PyObject *decode_old_float(Decoder *d)
{
    char text[32];
    char *end;
    double v;

    if (need(d, 32) < 0) {
        return NULL;
    }
    /* FLOAT_EXT: 31 bytes of "%.20e" text, NUL padded. */
    memcpy(text, d->buf + d->pos + 1, 31);
    text[31] = '\0';
    v = PyOS_string_to_double(text, &end, NULL);
    if (v == -1.0 && PyErr_Occurred()) {
        fail_exception(d, "a float");
        return NULL;
    }
    d->pos += 32;
    return PyFloat_FromDouble(v);
}

static PyObject *decode_new_float(Decoder *d)
{
    uint64_t bits;
    double v;

    if (need(d, 9) < 0) {
        return NULL;
    }
    bits = (uint64_t)etf_py_get_be32(d->buf + d->pos + 1) << 32 |
           etf_py_get_be32(d->buf + d->pos + 5);
    memcpy(&v, &bits, sizeof(v));
    d->pos += 9;
    return PyFloat_FromDouble(v);
}

static PyObject *make_atom(Decoder *d, PyObject *name)
{
    PyObject *cache = etf_py_state.atom_cache;
    PyObject *atom = PyDict_GetItemWithError(cache, name);

    if (atom != NULL) {
        Py_INCREF(atom);
        return atom;
    }
    if (PyErr_Occurred()) {
        fail_exception(d, "an atom");
        return NULL;
    }
    atom = PyObject_CallOneArg(etf_py_state.atom_type, name);
    if (atom == NULL) {
        fail_exception(d, "an atom");
        return NULL;
    }
    if (PyDict_GET_SIZE(cache) < ETF_PY_ATOM_CACHE_MAX && PyDict_SetItem(cache, name, atom) < 0) {
        PyErr_Clear();
    }
    return atom;
}

/* The atoms that decode to Python constants; every other atom becomes a snakepit.Atom. */
static PyObject *special_atom(const unsigned char *text, size_t n)
{
    static const struct {
        const char *name;
        size_t len;
    } names[] = {
        {"true", 4}, {"false", 5}, {"nil", 3}, {"nan", 3}, {"infinity", 8}, {"neg_infinity", 12},
    };
    size_t i;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (n == names[i].len && memcmp(text, names[i].name, n) == 0) {
            break;
        }
    }
    switch (i) {
    case 0:
        Py_RETURN_TRUE;
    case 1:
        Py_RETURN_FALSE;
    case 2:
        Py_RETURN_NONE;
    case 3:
        return PyFloat_FromDouble(Py_NAN);
    case 4:
        return PyFloat_FromDouble(Py_HUGE_VAL);
    case 5:
        return PyFloat_FromDouble(-Py_HUGE_VAL);
    default:
        return NULL;
    }
}

static PyObject *decode_atom(Decoder *d)
{
    unsigned char tag = d->buf[d->pos];
    bool small = tag == ERL_SMALL_ATOM_EXT || tag == ERL_SMALL_ATOM_UTF8_EXT;
    bool utf8 = tag == ERL_ATOM_UTF8_EXT || tag == ERL_SMALL_ATOM_UTF8_EXT;
    size_t header = small ? 2 : 3;
    size_t n;
    const char *text;
    PyObject *name;
    PyObject *value;

    if (need(d, header) < 0) {
        return NULL;
    }
    n = small ? d->buf[d->pos + 1] : etf_py_get_be16(d->buf + d->pos + 1);
    if (d->len - d->pos - header < n) {
        fail_truncated(d);
        return NULL;
    }
    text = (const char *)d->buf + d->pos + header;
    value = special_atom((const unsigned char *)text, n);
    if (value != NULL) {
        d->pos += header + n;
        return value;
    }
    name = utf8 ? PyUnicode_DecodeUTF8(text, (Py_ssize_t)n, "strict")
                : PyUnicode_DecodeLatin1(text, (Py_ssize_t)n, "strict");
    if (name == NULL) {
        fail_exception(d, "an atom");
        return NULL;
    }
    if (PyUnicode_GET_LENGTH(name) > ETF_PY_MAX_ATOM_CHARS) {
        etf_py_error_set(d->err, "bad_request",
                         "invalid term: atom of %zd characters at byte %zu exceeds the limit "
                         "of %d", PyUnicode_GET_LENGTH(name), d->pos - d->start,
                         ETF_PY_MAX_ATOM_CHARS);
        Py_DECREF(name);
        return NULL;
    }
    value = make_atom(d, name);
    Py_DECREF(name);
    if (value != NULL) {
        d->pos += header + n;
    }
    return value;
}

static PyObject *decode_binary(Decoder *d)
{
    size_t n;
    const char *data;
    PyObject *value;

    if (need(d, 5) < 0) {
        return NULL;
    }
    n = etf_py_get_be32(d->buf + d->pos + 1);
    if (n > d->max_bytes) {
        etf_py_error_set(d->err, "too_large", "binary of %zu bytes exceeds the limit of %zu", n,
                         d->max_bytes);
        return NULL;
    }
    if (d->len - d->pos - 5 < n) {
        fail_truncated(d);
        return NULL;
    }
    data = (const char *)d->buf + d->pos + 5;
    value = PyUnicode_DecodeUTF8(data, (Py_ssize_t)n, "strict");
    if (value == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
        value = PyBytes_FromStringAndSize(data, (Py_ssize_t)n);
    }
    if (value == NULL) {
        fail_exception(d, "a binary");
        return NULL;
    }
    d->pos += 5 + n;
    return value;
}

static PyObject *decode_opaque(Decoder *d)
{
    size_t end;
    PyObject *type = etf_py_opaque_extent(d->buf, d->len, d->pos, &end);
    PyObject *etf;
    PyObject *value;

    if (type == NULL) {
        etf_py_error_set(d->err, "bad_request",
                         "invalid term: malformed or truncated pid, port, reference or fun at "
                         "byte %zu", d->pos - d->start);
        return NULL;
    }
    etf = PyBytes_FromStringAndSize((const char *)d->buf + d->pos, (Py_ssize_t)(end - d->pos));
    if (etf == NULL) {
        fail_exception(d, "an opaque term");
        return NULL;
    }
    value = PyObject_CallOneArg(type, etf);
    Py_DECREF(etf);
    if (value == NULL) {
        fail_exception(d, "an opaque term");
        return NULL;
    }
    d->pos = end;
    return value;
}

static PyObject *decode_small_int(Decoder *d)
{
    if (need(d, 2) < 0) {
        return NULL;
    }
    d->pos += 2;
    return PyLong_FromLong(d->buf[d->pos - 1]);
}

static PyObject *decode_int(Decoder *d)
{
    if (need(d, 5) < 0) {
        return NULL;
    }
    d->pos += 5;
    return PyLong_FromLong((int32_t)etf_py_get_be32(d->buf + d->pos - 4));
}

/* Read the count after the tag (1 or 4 bytes), check it against the bytes left, start a frame. */
static int decode_container_header(Decoder *d, FrameKind kind, size_t header, size_t min_size)
{
    size_t count;

    if (need(d, header) < 0) {
        return -1;
    }
    count = header == 2 ? d->buf[d->pos + 1] : etf_py_get_be32(d->buf + d->pos + 1);
    d->pos += header;
    if (check_count(d, count, min_size) < 0 || start_container(d, kind, count) < 0) {
        d->pos -= header;
        return -1;
    }
    return 0;
}

/*
 * Decode the term at the cursor. A scalar, charlist or empty list is stored in *value (new
 * reference). A tuple, map or LIST_EXT is pushed as a frame, even when empty, and *value
 * stays NULL.
 */
static int decode_one(Decoder *d, PyObject **value)
{
    unsigned char tag;
    PyObject *v = NULL;

    if (need(d, 1) < 0) {
        return -1;
    }
    tag = d->buf[d->pos];
    switch (tag) {
    case ERL_SMALL_INTEGER_EXT:
        v = decode_small_int(d);
        break;
    case ERL_INTEGER_EXT:
        v = decode_int(d);
        break;
    case ERL_SMALL_BIG_EXT:
    case ERL_LARGE_BIG_EXT:
        v = decode_big(d);
        break;
    case NEW_FLOAT_EXT:
        v = decode_new_float(d);
        break;
    case ERL_FLOAT_EXT:
        v = decode_old_float(d);
        break;
    case ERL_ATOM_EXT:
    case ERL_SMALL_ATOM_EXT:
    case ERL_ATOM_UTF8_EXT:
    case ERL_SMALL_ATOM_UTF8_EXT:
        v = decode_atom(d);
        break;
    case ERL_BINARY_EXT:
        v = decode_binary(d);
        break;
    case ERL_STRING_EXT:
        v = decode_charlist(d);
        break;
    case ERL_NIL_EXT:
        if (check_depth(d) < 0) {
            return -1;
        }
        v = PyList_New(0);
        d->pos++;
        break;
    case ERL_SMALL_TUPLE_EXT:
        return decode_container_header(d, FRAME_TUPLE, 2, 1);
    case ERL_LARGE_TUPLE_EXT:
        return decode_container_header(d, FRAME_TUPLE, 5, 1);
    case ERL_LIST_EXT:
        return decode_container_header(d, FRAME_LIST, 5, 1);
    case ERL_MAP_EXT:
        return decode_container_header(d, FRAME_MAP, 5, 2);
    case ERL_PID_EXT:
    case ERL_NEW_PID_EXT:
    case ERL_PORT_EXT:
    case ERL_NEW_PORT_EXT:
    case ERL_V4_PORT_EXT:
    case ERL_REFERENCE_EXT:
    case ERL_NEW_REFERENCE_EXT:
    case ERL_NEWER_REFERENCE_EXT:
    case ERL_NEW_FUN_EXT:
    case ERL_EXPORT_EXT:
        v = decode_opaque(d);
        break;
    case ERL_BIT_BINARY_EXT:
        return etf_py_error_set(d->err, "bad_request",
                                "unsupported term at byte %zu: bitstrings whose size is not a "
                                "whole number of bytes have no Python equivalent",
                                d->pos - d->start);
    default:
        return etf_py_error_set(d->err, "bad_request",
                                "invalid term: unknown or unsupported tag %u at byte %zu", tag,
                                d->pos - d->start);
    }
    if (v == NULL) {
        if (d->err->kind == NULL) {
            fail_exception(d, "a term");
        }
        return -1;
    }
    *value = v;
    return 0;
}

/* Store `value` (stolen) as the next item of the frame on top of the stack. */
static int frame_add(Decoder *d, DecodeFrame *f, PyObject *value)
{
    Py_ssize_t before;
    int r;

    switch (f->kind) {
    case FRAME_LIST:
        PyList_SET_ITEM(f->container, f->filled++, value);
        return 0;
    case FRAME_TUPLE:
        PyTuple_SET_ITEM(f->container, f->filled++, value);
        return 0;
    default:
        break;
    }
    if (f->key == NULL) {
        f->key = value;
        f->filled++;
        return 0;
    }
    before = PyDict_GET_SIZE(f->container);
    r = PyDict_SetItem(f->container, f->key, value);
    Py_DECREF(value);
    if (r < 0) {
        char type_name[128];

        etf_py_type_name(Py_TYPE(f->key), type_name, sizeof(type_name));
        PyErr_Clear();
        return etf_py_error_set(d->err, "bad_request",
                                "map key of type %s has no Python equivalent: it is unhashable",
                                type_name);
    }
    if (PyDict_GET_SIZE(f->container) == before) {
        return etf_py_error_set(d->err, "bad_request",
                                "map has two keys that are equal in Python (such as 1 and 1.0, "
                                "or an atom and a binary of the same text)");
    }
    Py_CLEAR(f->key);
    f->filled++;
    return 0;
}

/* Pop the full frame on top, checking a list's tail; stores the container (new) in *value. */
static int frame_finish(Decoder *d, PyObject **value)
{
    DecodeFrame *f = &d->frames[d->depth - 1];

    if (f->kind == FRAME_LIST) {
        if (need(d, 1) < 0) {
            return -1;
        }
        if (d->buf[d->pos] != ERL_NIL_EXT) {
            return etf_py_error_set(d->err, "bad_request",
                                    "improper list at byte %zu: Python lists have no tail",
                                    d->pos - d->start);
        }
        d->pos++;
    }
    *value = f->container;
    f->container = NULL;
    d->depth--;
    return 0;
}

static void decoder_release(Decoder *d)
{
    for (size_t i = 0; i < d->depth; i++) {
        Py_XDECREF(d->frames[i].container);
        Py_XDECREF(d->frames[i].key);
    }
    d->depth = 0;
    if (d->frames != d->inline_frames) {
        PyMem_Free(d->frames);
    }
}

static PyObject *decode_loop(Decoder *d)
{
    PyObject *value = NULL;

    for (;;) {
        if (decode_one(d, &value) < 0) {
            return NULL;
        }
        for (;;) {
            if (value != NULL) {
                if (d->depth == 0) {
                    return value;
                }
                if (frame_add(d, &d->frames[d->depth - 1], value) < 0) {
                    return NULL;
                }
                value = NULL;
            }
            DecodeFrame *top = &d->frames[d->depth - 1];
            if (top->filled < top->size) {
                break;
            }
            if (frame_finish(d, &value) < 0) {
                return NULL;
            }
        }
    }
}

PyObject *etf_py_decode(const char *buf, size_t len, int *index, const EtfPyLimits *limits,
                        EtfPyError *err)
{
    Decoder d = {
        .buf = (const unsigned char *)buf,
        .len = len,
        .max_depth = ETF_PY_MAX_DEPTH_DEFAULT,
        .max_bytes = ETF_PY_MAX_BYTES_DEFAULT,
        .err = err,
        .capacity = DECODE_STACK_INLINE,
    };
    PyObject *value;

    d.frames = d.inline_frames;
    if (d.len > INT_MAX) {
        d.len = INT_MAX; /* *index is an int: no term can end past INT_MAX */
    }
    if (limits != NULL && limits->max_depth != 0) {
        d.max_depth = limits->max_depth;
    }
    if (limits != NULL && limits->max_bytes != 0) {
        d.max_bytes = limits->max_bytes;
    }
    err->kind = NULL;
    err->message[0] = '\0';
    if (*index < 0 || (size_t)*index > len) {
        etf_py_error_set(err, "bad_request", "invalid term: index %d outside a buffer of %zu bytes",
                         *index, len);
        return NULL;
    }
    d.pos = d.start = (size_t)*index;
    value = decode_loop(&d);
    decoder_release(&d);
    if (value != NULL && d.pos - d.start > d.max_bytes) {
        etf_py_error_set(err, "too_large", "term of %zu bytes exceeds the limit of %zu",
                         d.pos - d.start, d.max_bytes);
        Py_CLEAR(value);
    }
    if (value == NULL) {
        if (err->kind == NULL) {
            etf_py_error_set(err, "bad_request", "invalid term");
        }
        PyErr_Clear();
        return NULL;
    }
    *index = (int)d.pos;
    return value;
}
