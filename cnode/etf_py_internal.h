/* SPDX-License-Identifier: Apache-2.0 */
/*
 * State and helpers shared by the three files of the term codec: etf_py.c (set-up and errors),
 * etf_py_decode.c and etf_py_encode.c. Not part of the codec's interface; include etf_py.h.
 */
#pragma once

#include "etf_py.h"

#include <stdint.h>

/* Python objects the codec needs, filled by etf_py_init(); all are new (owned) references. */
typedef struct {
    PyObject *atom_type;      /* snakepit.Atom */
    PyObject *opaque_type;    /* snakepit.Opaque, the base of the four below */
    PyObject *pid_type;       /* snakepit.Pid */
    PyObject *reference_type; /* snakepit.Reference */
    PyObject *port_type;      /* snakepit.Port */
    PyObject *fun_type;       /* snakepit.Fun */
    PyObject *encoder_lookup; /* snakepit.encoders.lookup */
    PyObject *etf_attr;       /* the interned str "_etf", the bytes slot of an opaque object */
    PyObject *module_attr;    /* the interned str "__module__" */
    PyObject *atom_cache;     /* dict: str -> Atom, bounded by ETF_PY_ATOM_CACHE_MAX */
} EtfPyState;

/* Decoded atoms are shared through the cache up to this many distinct names. */
#define ETF_PY_ATOM_CACHE_MAX 4096

extern EtfPyState etf_py_state;

/* Fill *err with `kind` (a static string) and a formatted message; returns -1. */
int etf_py_error_set(EtfPyError *err, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Fill *err with `kind` and "<prefix>: <exception type>: <message>" from the pending Python
 * exception, then clear it; returns -1. A MemoryError becomes "too_large" whatever `kind` is.
 */
int etf_py_error_from_exception(EtfPyError *err, const char *kind, const char *prefix);

/*
 * Write "module.QualName" of `type` (borrowed) to out, "QualName" for builtins. A pending
 * Python exception stays pending.
 */
void etf_py_type_name(PyTypeObject *type, char *out, size_t size);

/*
 * Find the end of the pid, port, reference or fun starting at buf[at], reading only below
 * buf[len]. Returns the opaque type for it (borrowed) and stores the end in *end, or returns
 * NULL for a tag that is not opaque or a term that is truncated or malformed.
 */
PyObject *etf_py_opaque_extent(const unsigned char *buf, size_t len, size_t at, size_t *end);

static inline uint16_t etf_py_get_be16(const unsigned char *p)
{
    return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static inline uint32_t etf_py_get_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
