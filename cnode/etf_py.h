/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Conversion between Erlang external term format and Python objects, with no intermediate
 * format. Runs only in snakepit-worker, with the GIL held. The mapping:
 *
 *   integer (any size) <-> int        (ints beyond the bignum limit: encode_error)
 *   float <-> float                    (NaN, +inf, -inf <-> atoms nan, infinity, neg_infinity)
 *   true, false, nil <-> True, False, None   (the atom undefined stays an atom)
 *   other atom <-> snakepit.Atom (a str subclass); a plain str never becomes an atom
 *   binary -> str when valid UTF-8, else bytes; bytes, bytearray, memoryview -> binary
 *   list, string (charlist) -> list; improper list: bad_request
 *   tuple <-> tuple; map <-> dict (unhashable key: bad_request; keys that are equal in Python,
 *   such as 1 and 1.0 or :a and "a", also bad_request rather than a silently smaller dict)
 *   pid, reference, port, fun <-> opaque snakepit objects that round-trip byte for byte
 *   set, frozenset -> list; objects with an encoder in snakepit.encoders -> the encoder's result
 *   anything else: encode_error naming the Python type
 */
#pragma once

#include <Python.h>
#include <ei.h>
#include <stddef.h>

#define ETF_PY_MAX_DEPTH_DEFAULT 256
#define ETF_PY_MAX_BYTES_DEFAULT ((size_t)64 << 20) /* the default message size limit */
#define ETF_PY_MAX_ATOM_CHARS 255 /* characters (code points), the Erlang limit */
/* Magnitude bytes of the largest integer a 64-bit OTP 25 node accepts: 2^19 - 1 words. */
#define ETF_PY_MAX_BIG_BYTES ((size_t)((1 << 19) - 1) * 8)

/*
 * A zero field, or a NULL limits pointer, means the default. Lists, tuples and maps count as a
 * level of nesting, empty ones too, and charlists are lists. Over max_depth is too_deep, over
 * max_bytes too_large, in both directions.
 *
 * The encoder writes what term_to_binary writes, so decoded terms re-encode byte for byte:
 * the smallest integer form, NEW_FLOAT_EXT, STRING_EXT for a list of 1 to 65535 ints in 0..255.
 * Atoms are always UTF-8 atoms (SMALL_ATOM_UTF8_EXT, ATOM_UTF8_EXT), as the distribution and
 * OTP 26 write them; a Latin-1 ATOM_EXT decodes to the same Atom.
 */
typedef struct {
    size_t max_depth; /* nesting depth of lists, tuples, maps; the top term is depth 1 */
    size_t max_bytes; /* size of one encoded term; at most INT_MAX, the limit of ei_x_buff */
} EtfPyLimits;

/* The error kinds of the error map: "bad_request", "too_deep", "too_large", "encode_error". */
typedef struct {
    const char *kind; /* static string */
    char message[512];
} EtfPyError;

/*
 * Set up the codec: import the snakepit package for its Atom, opaque and encoder types.
 * Returns 0, or -1 with a Python exception set.
 */
int etf_py_init(void);

/*
 * Decode the term at buf[*index], reading no byte at or past buf[len]. Returns a new reference
 * and advances *index past the term; on failure returns NULL, fills *err, sets no Python
 * exception, and leaves *index unchanged.
 */
PyObject *etf_py_decode(const char *buf, size_t len, int *index, const EtfPyLimits *limits,
                        EtfPyError *err);

/*
 * Append the encoding of `obj` (borrowed) to `x`, without a version byte. Returns 0, or -1 with
 * *err filled, no Python exception set, and x->index back where it was.
 */
int etf_py_encode(ei_x_buff *x, PyObject *obj, const EtfPyLimits *limits, EtfPyError *err);
