/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the term codec with an embedded interpreter and the real snakepit package (the
 * test environment sets PYTHONPATH). Terms are built with ei_x_encode_*, decoded, checked in
 * Python, encoded again and compared byte for byte with the input.
 */
#include <criterion/criterion.h>
#include <ei.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "etf_py.h"

static PyObject *globals;

static void setup(void)
{
    Py_InitializeEx(0);
    cr_assert_eq(etf_py_init(), 0, "etf_py_init failed: is PYTHONPATH set to python/?");
    globals = PyDict_New();
    cr_assert_not_null(globals);
    cr_assert_eq(PyDict_SetItemString(globals, "__builtins__", PyEval_GetBuiltins()), 0);
    PyObject *name = PyUnicode_FromString("__main__");
    cr_assert_eq(PyDict_SetItemString(globals, "__name__", name), 0);
    Py_DECREF(name);
    PyObject *r = PyRun_String("import math, snakepit\nfrom snakepit import Atom\n",
                               Py_file_input, globals, globals);
    cr_assert_not_null(r);
    Py_DECREF(r);
}

static void teardown(void)
{
    Py_CLEAR(globals);
}

TestSuite(etf_py, .init = setup, .fini = teardown, .timeout = 120);

/* Evaluate a Python expression; returns a new reference. */
static PyObject *py_eval(const char *expr)
{
    PyObject *v = PyRun_String(expr, Py_eval_input, globals, globals);

    if (v == NULL) {
        PyErr_Print();
    }
    cr_assert_not_null(v, "Python expression failed: %s", expr);
    return v;
}

static void py_exec(const char *code)
{
    PyObject *v = PyRun_String(code, Py_file_input, globals, globals);

    if (v == NULL) {
        PyErr_Print();
    }
    cr_assert_not_null(v, "Python code failed: %s", code);
    Py_DECREF(v);
}

/* Check a Python predicate on `value`, bound to the name v. */
static void py_check(PyObject *value, const char *predicate)
{
    cr_assert_eq(PyDict_SetItemString(globals, "v", value), 0);
    PyObject *r = py_eval(predicate);
    int truth = PyObject_IsTrue(r);

    if (truth != 1) {
        PyObject *repr = PyObject_Repr(value);

        cr_expect_eq(truth, 1, "%s is false for v = %.200s", predicate,
                     repr != NULL ? PyUnicode_AsUTF8(repr) : "(repr failed)");
        Py_XDECREF(repr);
        PyErr_Clear();
    }
    Py_DECREF(r);
    PyDict_DelItemString(globals, "v");
}

static PyObject *decode_ok(const char *buf, size_t len, const EtfPyLimits *limits)
{
    EtfPyError err = {0};
    int index = 0;
    PyObject *v = etf_py_decode(buf, len, &index, limits, &err);

    cr_assert_not_null(v, "decode failed: %s: %s", err.kind, err.message);
    cr_assert_eq((size_t)index, len, "decode stopped at %d of %zu", index, len);
    cr_assert_null(PyErr_Occurred());
    return v;
}

static void decode_fails(const char *buf, size_t len, const EtfPyLimits *limits,
                         const char *kind)
{
    EtfPyError err = {0};
    int index = 0;
    PyObject *v = etf_py_decode(buf, len, &index, limits, &err);

    cr_assert_null(v, "decode of %zu bytes succeeded, expected %s", len, kind);
    cr_assert_eq(index, 0, "index moved to %d on failure", index);
    cr_assert_not_null(err.kind);
    cr_assert_str_eq(err.kind, kind, "kind %s (%s), expected %s", err.kind, err.message, kind);
    cr_assert_gt(strlen(err.message), 0);
    cr_assert_null(PyErr_Occurred(), "a Python exception was left set");
}

/* Encode obj (stolen) into a fresh buffer that the caller frees with ei_x_free. */
static void encode_ok(ei_x_buff *out, PyObject *obj, const EtfPyLimits *limits)
{
    EtfPyError err = {0};

    cr_assert_eq(ei_x_new(out), 0);
    cr_assert_eq(etf_py_encode(out, obj, limits, &err), 0, "encode failed: %s: %s", err.kind,
                 err.message);
    cr_assert_null(PyErr_Occurred());
    Py_DECREF(obj);
}

/* Encode obj (stolen), expecting failure of `kind` with `needle` in the message. */
static void encode_fails(PyObject *obj, const EtfPyLimits *limits, const char *kind,
                         const char *needle)
{
    EtfPyError err = {0};
    ei_x_buff out;

    cr_assert_eq(ei_x_new(&out), 0);
    ei_x_encode_atom(&out, "prefix");
    int before = out.index;
    cr_assert_eq(etf_py_encode(&out, obj, limits, &err), -1, "encode succeeded, expected %s",
                 kind);
    cr_assert_eq(out.index, before, "x->index moved on failure");
    cr_assert_str_eq(err.kind, kind, "kind %s (%s), expected %s", err.kind, err.message, kind);
    if (needle != NULL) {
        cr_assert_not_null(strstr(err.message, needle), "message \"%s\" lacks \"%s\"",
                           err.message, needle);
    }
    cr_assert_null(PyErr_Occurred(), "a Python exception was left set");
    ei_x_free(&out);
    Py_DECREF(obj);
}

/* Decode the term in x, check `predicate` on it, encode it back and compare the bytes. */
static void round_trip(ei_x_buff *x, const char *predicate)
{
    PyObject *v = decode_ok(x->buff, (size_t)x->index, NULL);
    ei_x_buff out;

    if (predicate != NULL) {
        py_check(v, predicate);
    }
    encode_ok(&out, v, NULL);
    cr_assert_eq(out.index, x->index, "re-encoded %d bytes, expected %d", out.index, x->index);
    cr_assert_eq(memcmp(out.buff, x->buff, (size_t)x->index), 0, "re-encoded bytes differ");
    ei_x_free(&out);
}

/* Encode the Python expression and compare with the term built in `expected`. */
static void encodes_as(const char *expr, ei_x_buff *expected)
{
    ei_x_buff out;

    encode_ok(&out, py_eval(expr), NULL);
    cr_assert_eq(out.index, expected->index, "%s: encoded %d bytes, expected %d", expr,
                 out.index, expected->index);
    cr_assert_eq(memcmp(out.buff, expected->buff, (size_t)out.index), 0,
                 "%s: encoded bytes differ", expr);
    ei_x_free(&out);
}

static void new_x(ei_x_buff *x)
{
    cr_assert_eq(ei_x_new(x), 0);
}

/* Write v as term_to_binary does: INTEGER_EXT for all of int32, where ei stops at 2^27. */
static void put_erlang_int(ei_x_buff *x, long long v)
{
    if ((v < 0 || v > 255) && v >= INT32_MIN && v <= INT32_MAX) {
        char buf[5] = {ERL_INTEGER_EXT, (char)(v >> 24), (char)(v >> 16), (char)(v >> 8), (char)v};

        ei_x_append_buf(x, buf, 5);
    } else {
        ei_x_encode_longlong(x, v);
    }
}

Test(etf_py, integers_round_trip)
{
    static const long long values[] = {
        0, 1, 255, 256, -1, -256, INT32_MAX, INT32_MIN, (long long)INT32_MAX + 1,
        (long long)INT32_MIN - 1, LLONG_MAX, LLONG_MIN,
    };
    char predicate[128];

    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        ei_x_buff x;

        new_x(&x);
        put_erlang_int(&x, values[i]);
        snprintf(predicate, sizeof(predicate), "type(v) is int and v == %lld", values[i]);
        round_trip(&x, predicate);
        ei_x_free(&x);

        /* ei writes 2^27 and over as a SMALL_BIG_EXT: that decodes to the same int. */
        new_x(&x);
        ei_x_encode_longlong(&x, values[i]);
        PyObject *v = decode_ok(x.buff, (size_t)x.index, NULL);
        py_check(v, predicate);
        Py_DECREF(v);
        ei_x_free(&x);
    }
    ei_x_buff x;
    new_x(&x);
    ei_x_encode_ulonglong(&x, ULLONG_MAX);
    round_trip(&x, "v == 2**64 - 1");
    ei_x_free(&x);
}

/* Build a SMALL_BIG_EXT or LARGE_BIG_EXT of n magnitude bytes 0xFF. */
static void put_big(ei_x_buff *x, size_t n, int negative)
{
    char header[6];
    char *digits = malloc(n);

    cr_assert_not_null(digits);
    memset(digits, 0xFF, n);
    if (n <= 255) {
        header[0] = ERL_SMALL_BIG_EXT;
        header[1] = (char)n;
        header[2] = (char)negative;
        ei_x_append_buf(x, header, 3);
    } else {
        header[0] = ERL_LARGE_BIG_EXT;
        header[1] = (char)(n >> 24);
        header[2] = (char)(n >> 16);
        header[3] = (char)(n >> 8);
        header[4] = (char)n;
        header[5] = (char)negative;
        ei_x_append_buf(x, header, 6);
    }
    ei_x_append_buf(x, digits, (int)n);
    free(digits);
}

Test(etf_py, bignums_round_trip)
{
    ei_x_buff x;

    new_x(&x);
    put_big(&x, 20, 0);
    round_trip(&x, "v == 2**160 - 1");
    ei_x_free(&x);

    new_x(&x);
    put_big(&x, 20, 1);
    round_trip(&x, "v == -(2**160 - 1)");
    ei_x_free(&x);

    new_x(&x);
    put_big(&x, 300, 1);
    round_trip(&x, "v == -(2**2400 - 1)");
    ei_x_free(&x);

    new_x(&x);
    put_big(&x, ETF_PY_MAX_BIG_BYTES, 0);
    round_trip(&x, "v.bit_length() == 33554368");
    ei_x_free(&x);
}

Test(etf_py, bignum_over_erlang_limit)
{
    ei_x_buff x;

    encode_fails(py_eval("2**33554368"), NULL, "encode_error", "33554369 bits");
    encode_fails(py_eval("-(2**33554368)"), NULL, "encode_error", "integer limit");
    new_x(&x);
    put_big(&x, ETF_PY_MAX_BIG_BYTES + 1, 0);
    decode_fails(x.buff, (size_t)x.index, NULL, "bad_request");
    ei_x_free(&x);
}

Test(etf_py, floats_bit_exact)
{
    static const char *const exprs[] = {
        "-0.0", "5e-324", "1.7976931348623157e308", "1.5", "-2.2250738585072014e-308", "0.1",
    };

    for (size_t i = 0; i < sizeof(exprs) / sizeof(exprs[0]); i++) {
        PyObject *f = py_eval(exprs[i]);
        double d = PyFloat_AsDouble(f);
        ei_x_buff x;
        char predicate[160];

        Py_DECREF(f);
        new_x(&x);
        ei_x_encode_double(&x, d);
        snprintf(predicate, sizeof(predicate),
                 "type(v) is float and v.hex() == (%s).hex() and "
                 "math.copysign(1, v) == math.copysign(1, %s)", exprs[i], exprs[i]);
        round_trip(&x, predicate);
        ei_x_free(&x);
    }
}

Test(etf_py, old_float_ext_decodes)
{
    /* FLOAT_EXT, as very old nodes send it: 31 bytes of "%.20e" text. */
    char buf[32] = {ERL_FLOAT_EXT};

    snprintf(buf + 1, 31, "%.20e", 1.25);
    PyObject *v = decode_ok(buf, sizeof(buf), NULL);
    py_check(v, "v == 1.25");
    Py_DECREF(v);
}

Test(etf_py, nan_and_infinity_nested)
{
    ei_x_buff x;

    /* [[[1.0, nan]], inf, -inf], with NaN and the infinities as atoms. */
    new_x(&x);
    ei_x_encode_list_header(&x, 3);
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_list_header(&x, 2);
    ei_x_encode_double(&x, 1.0);
    ei_x_encode_atom(&x, "nan");
    ei_x_encode_empty_list(&x);
    ei_x_encode_empty_list(&x);
    ei_x_encode_atom(&x, "infinity");
    ei_x_encode_atom(&x, "neg_infinity");
    ei_x_encode_empty_list(&x);
    encodes_as("[[[1.0, float('nan')]], float('inf'), -float('inf')]", &x);
    round_trip(&x, "math.isnan(v[0][0][1]) and v[1] == math.inf and v[2] == -math.inf");
    ei_x_free(&x);
}

Test(etf_py, constants_and_undefined)
{
    ei_x_buff x;

    new_x(&x);
    ei_x_encode_tuple_header(&x, 4);
    ei_x_encode_atom(&x, "true");
    ei_x_encode_atom(&x, "false");
    ei_x_encode_atom(&x, "nil");
    ei_x_encode_atom(&x, "undefined");
    round_trip(&x, "v[0] is True and v[1] is False and v[2] is None and "
                   "type(v[3]) is Atom and v[3] == 'undefined'");
    ei_x_free(&x);
}

/* Append n copies of the two-byte UTF-8 letter "я" to s. */
static void cyrillic(char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        memcpy(s + 2 * i, "\xd1\x8f", 2);
    }
    s[2 * n] = '\0';
}

Test(etf_py, atoms_utf8_round_trip)
{
    char long_name[2 * 255 + 1];
    ei_x_buff x;

    new_x(&x);
    ei_x_encode_atom_as(&x, "привет", ERLANG_UTF8, ERLANG_UTF8);
    round_trip(&x, "type(v) is Atom and v == 'привет'");
    ei_x_free(&x);

    cyrillic(long_name, 255);
    new_x(&x);
    ei_x_encode_atom_as(&x, long_name, ERLANG_UTF8, ERLANG_UTF8);
    cr_assert_eq((unsigned char)x.buff[0], ERL_ATOM_UTF8_EXT, "510 bytes need ATOM_UTF8_EXT");
    round_trip(&x, "type(v) is Atom and v == 'я' * 255");
    ei_x_free(&x);
}

Test(etf_py, atom_over_limit)
{
    char name[2 * 256 + 1];
    unsigned char buf[3 + sizeof(name)] = {ERL_ATOM_UTF8_EXT, 2, 0};

    encode_fails(py_eval("Atom('я' * 256)"), NULL, "encode_error", "256 characters");
    cyrillic(name, 256);
    memcpy(buf + 3, name, 512);
    decode_fails((const char *)buf, sizeof(buf), NULL, "bad_request");
}

Test(etf_py, latin1_atom_decodes)
{
    /* ATOM_EXT in Latin-1, as OTP 25 term_to_binary writes: 'é' is the single byte 0xE9. */
    const unsigned char buf[] = {ERL_ATOM_EXT, 0, 2, 'a', 0xE9};
    ei_x_buff x;

    PyObject *v = decode_ok((const char *)buf, sizeof(buf), NULL);
    py_check(v, "type(v) is Atom and v == 'a\\u00e9'");
    Py_DECREF(v);
    new_x(&x);
    ei_x_encode_atom_as(&x, "a\xc3\xa9", ERLANG_UTF8, ERLANG_UTF8);
    encodes_as("Atom('a\\u00e9')", &x);
    ei_x_free(&x);
}

Test(etf_py, binaries_str_and_bytes)
{
    ei_x_buff x;

    new_x(&x);
    ei_x_encode_binary(&x, "h\xc3\xa9llo", 6);
    round_trip(&x, "type(v) is str and v == 'h\\u00e9llo'");
    ei_x_free(&x);

    new_x(&x);
    ei_x_encode_binary(&x, "\xff\xfe", 2);
    round_trip(&x, "type(v) is bytes and v == b'\\xff\\xfe'");
    ei_x_free(&x);

    /* An encoded surrogate is not valid UTF-8 and must stay bytes. */
    new_x(&x);
    ei_x_encode_binary(&x, "\xed\xa0\x80", 3);
    round_trip(&x, "type(v) is bytes");
    ei_x_free(&x);

    new_x(&x);
    ei_x_encode_binary(&x, "", 0);
    round_trip(&x, "v == ''");
    encodes_as("bytearray()", &x);
    ei_x_free(&x);
}

Test(etf_py, buffers_encode_as_binaries)
{
    ei_x_buff x;

    new_x(&x);
    ei_x_encode_binary(&x, "abc", 3);
    encodes_as("b'abc'", &x);
    encodes_as("bytearray(b'abc')", &x);
    encodes_as("memoryview(b'abc')", &x);
    encodes_as("memoryview(b'aXbXcX')[::2]", &x);
    ei_x_free(&x);
    encode_fails(py_eval("'\\ud800'"), NULL, "encode_error", "UTF-8");
}

Test(etf_py, charlists_and_lists)
{
    ei_x_buff x;

    new_x(&x);
    ei_x_encode_string_len(&x, "\x01\x02\x03", 3);
    cr_assert_eq((unsigned char)x.buff[0], ERL_STRING_EXT);
    round_trip(&x, "type(v) is list and v == [1, 2, 3]");
    ei_x_free(&x);

    new_x(&x);
    ei_x_encode_string(&x, "abc");
    round_trip(&x, "v == [97, 98, 99]");
    ei_x_free(&x);

    new_x(&x);
    ei_x_encode_list_header(&x, 2);
    ei_x_encode_long(&x, 256);
    ei_x_encode_long(&x, 1);
    ei_x_encode_empty_list(&x);
    round_trip(&x, "v == [256, 1]");
    ei_x_free(&x);

    new_x(&x);
    ei_x_encode_empty_list(&x);
    round_trip(&x, "type(v) is list and v == []");
    ei_x_free(&x);

    /* [true] is a list of an atom, never the charlist [1]. */
    new_x(&x);
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_atom(&x, "true");
    ei_x_encode_empty_list(&x);
    round_trip(&x, "v == [True] and v[0] is True");
    ei_x_free(&x);
}

Test(etf_py, improper_list_rejected)
{
    ei_x_buff x;

    new_x(&x);
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_long(&x, 1);
    ei_x_encode_long(&x, 2);
    decode_fails(x.buff, (size_t)x.index, NULL, "bad_request");
    ei_x_free(&x);
}

Test(etf_py, tuples_round_trip)
{
    ei_x_buff x;

    new_x(&x);
    ei_x_encode_tuple_header(&x, 0);
    round_trip(&x, "v == ()");
    ei_x_free(&x);

    new_x(&x);
    ei_x_encode_tuple_header(&x, 300);
    for (int i = 0; i < 300; i++) {
        ei_x_encode_long(&x, i);
    }
    cr_assert_eq((unsigned char)x.buff[0], ERL_LARGE_TUPLE_EXT);
    round_trip(&x, "type(v) is tuple and v == tuple(range(300))");
    ei_x_free(&x);
}

Test(etf_py, maps_round_trip)
{
    ei_x_buff x;

    new_x(&x);
    ei_x_encode_map_header(&x, 3);
    ei_x_encode_atom(&x, "name");
    ei_x_encode_binary(&x, "x", 1);
    ei_x_encode_binary(&x, "key", 3);
    ei_x_encode_long(&x, 1);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_long(&x, 1);
    ei_x_encode_long(&x, 2);
    ei_x_encode_map_header(&x, 0);
    round_trip(&x, "type(v) is dict and v['name'] == 'x' and v['key'] == 1 and v[(1, 2)] == {}");
    ei_x_free(&x);
}

Test(etf_py, map_key_unhashable)
{
    ei_x_buff x;

    new_x(&x);
    ei_x_encode_map_header(&x, 1);
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_long(&x, 1);
    ei_x_encode_empty_list(&x);
    ei_x_encode_long(&x, 2);
    decode_fails(x.buff, (size_t)x.index, NULL, "bad_request");
    ei_x_free(&x);
}

Test(etf_py, map_keys_equal_in_python)
{
    ei_x_buff x;

    /* %{:a => 1, "a" => 2}: an Atom equals the str of the same text. */
    new_x(&x);
    ei_x_encode_map_header(&x, 2);
    ei_x_encode_atom(&x, "a");
    ei_x_encode_long(&x, 1);
    ei_x_encode_binary(&x, "a", 1);
    ei_x_encode_long(&x, 2);
    decode_fails(x.buff, (size_t)x.index, NULL, "bad_request");
    ei_x_free(&x);
}

/* Real terms from OTP 25 term_to_binary, without the version byte. */
static const unsigned char export_fun[] = {
    113, 100, 0, 5, 108, 105, 115, 116, 115, 100, 0, 3, 109, 97, 112, 97, 2,
};
static const unsigned char reference[] = {
    90, 0, 3, 100, 0, 13, 110, 111, 110, 111, 100, 101, 64, 110, 111, 104, 111, 115, 116, 0, 0,
    0, 0, 0, 0, 5, 44, 202, 156, 0, 1, 92, 238, 151, 208,
};
static const unsigned char port[] = {
    89, 100, 0, 13, 110, 111, 110, 111, 100, 101, 64, 110, 111, 104, 111, 115, 116, 0, 0, 0, 0,
    0, 0, 0, 0,
};
static const unsigned char closure[] = {
    112, 0, 0, 0, 189, 1, 6, 83, 97, 170, 70, 21, 144, 209, 189, 241, 235, 98, 209, 166, 235, 8,
    0, 0, 0, 42, 0, 0, 0, 1, 100, 0, 8, 101, 114, 108, 95, 101, 118, 97, 108, 97, 42, 98, 0, 50,
    155, 13, 88, 100, 0, 13, 110, 111, 110, 111, 100, 101, 64, 110, 111, 104, 111, 115, 116, 0, 0,
    0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 104, 6, 97, 1, 106, 100, 0, 4, 110, 111, 110, 101, 100, 0, 4,
    110, 111, 110, 101, 116, 0, 0, 0, 0, 108, 0, 0, 0, 1, 104, 5, 100, 0, 6, 99, 108, 97, 117,
    115, 101, 97, 1, 108, 0, 0, 0, 1, 104, 3, 100, 0, 3, 118, 97, 114, 97, 1, 100, 0, 1, 88, 106,
    106, 108, 0, 0, 0, 1, 104, 5, 100, 0, 2, 111, 112, 97, 1, 100, 0, 1, 43, 104, 3, 100, 0, 3,
    118, 97, 114, 97, 1, 100, 0, 1, 88, 104, 3, 100, 0, 7, 105, 110, 116, 101, 103, 101, 114, 97,
    1, 97, 1, 106, 106,
};

static void opaque_round_trip(const unsigned char *term, size_t len, const char *predicate)
{
    ei_x_buff x;

    new_x(&x);
    ei_x_append_buf(&x, (const char *)term, (int)len);
    round_trip(&x, predicate);
    ei_x_free(&x);
}

Test(etf_py, opaque_terms_round_trip)
{
    erlang_pid pid = {.num = 42, .serial = 7, .creation = 0x12345678};
    ei_x_buff x;

    strcpy(pid.node, "snakepit@127.0.0.1");
    new_x(&x);
    ei_x_encode_pid(&x, &pid);
    round_trip(&x, "type(v) is snakepit.Pid and v == snakepit.Pid(v.etf) and hash(v) == "
                   "hash(snakepit.Pid(v.etf))");
    ei_x_free(&x);

    opaque_round_trip(reference, sizeof(reference), "type(v) is snakepit.Reference");
    opaque_round_trip(port, sizeof(port), "type(v) is snakepit.Port");
    opaque_round_trip(closure, sizeof(closure), "type(v) is snakepit.Fun");
    opaque_round_trip(export_fun, sizeof(export_fun), "type(v) is snakepit.Fun");
}

Test(etf_py, opaque_with_bad_bytes)
{
    encode_fails(py_eval("snakepit.Pid(b'garbage')"), NULL, "encode_error", "snakepit.Pid");
    /* Valid reference bytes in a Pid object would change the term's type: rejected too. */
    PyObject *etf = PyBytes_FromStringAndSize((const char *)reference, sizeof(reference));
    PyObject *pid = PyObject_CallMethod(py_eval("snakepit"), "Pid", "O", etf);
    cr_assert_not_null(pid);
    Py_DECREF(etf);
    encode_fails(pid, NULL, "encode_error", "snakepit.Pid");
}

Test(etf_py, opaque_truncated_rejected)
{
    for (size_t n = 1; n < sizeof(closure); n++) {
        char *copy = malloc(n);

        cr_assert_not_null(copy);
        memcpy(copy, closure, n);
        decode_fails(copy, n, NULL, "bad_request");
        free(copy);
    }
}

Test(etf_py, sets_encode_as_lists)
{
    ei_x_buff x;

    new_x(&x);
    ei_x_encode_string_len(&x, "\x05", 1);
    encodes_as("{5}", &x);
    encodes_as("frozenset([5])", &x);
    ei_x_free(&x);
    new_x(&x);
    ei_x_encode_empty_list(&x);
    encodes_as("set()", &x);
    ei_x_free(&x);
}

Test(etf_py, subclasses_of_core_types)
{
    ei_x_buff x;

    py_exec("import collections, enum\n"
            "class Color(enum.IntEnum):\n"
            "    RED = 300\n"
            "Point = collections.namedtuple('Point', 'x y')\n");
    new_x(&x);
    ei_x_encode_tuple_header(&x, 3);
    ei_x_encode_long(&x, 300);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_long(&x, 1);
    ei_x_encode_long(&x, 2);
    ei_x_encode_map_header(&x, 1);
    ei_x_encode_binary(&x, "k", 1);
    ei_x_encode_empty_list(&x);
    encodes_as("(Color.RED, Point(1, 2), collections.OrderedDict(k=[]))", &x);
    ei_x_free(&x);
}

Test(etf_py, unknown_type_named)
{
    py_exec("class Widget:\n    pass\n");
    encode_fails(py_eval("Widget()"), NULL, "encode_error", "type __main__.Widget");
    encode_fails(py_eval("[1, {2: 1j}]"), NULL, "encode_error", "complex");
}

Test(etf_py, encode_error_names_path)
{
    encode_fails(py_eval("[1, {'k': [2, 1j]}]"), NULL, "encode_error", "(at [1]['k'][1])");
    encode_fails(py_eval("(0, {Atom('a'): {1: 1j}})"), NULL, "encode_error",
                 "(at [1][Atom('a')][1])");
    encode_fails(py_eval("{1j: 2}"), NULL, "encode_error", "(at {key})");
    encode_fails(py_eval("[0, 0, [1] * 300]"), &(EtfPyLimits){.max_bytes = 100}, "too_large",
                 "(at [2]");
}

Test(etf_py, registered_encoder_used)
{
    ei_x_buff x;

    py_exec("class Money:\n"
            "    def __init__(self, cents):\n"
            "        self.cents = cents\n"
            "snakepit.encoders.register(Money, lambda m: {Atom('cents'): m.cents})\n"
            "class Broken:\n"
            "    pass\n"
            "def fail(obj):\n"
            "    raise ValueError('no way')\n"
            "snakepit.encoders.register(Broken, fail)\n"
            "class Loop:\n"
            "    pass\n"
            "snakepit.encoders.register(Loop, lambda obj: obj)\n");
    new_x(&x);
    ei_x_encode_map_header(&x, 1);
    ei_x_encode_atom_as(&x, "cents", ERLANG_UTF8, ERLANG_UTF8);
    ei_x_encode_long(&x, 150);
    encodes_as("Money(150)", &x);
    ei_x_free(&x);
    encode_fails(py_eval("Broken()"), NULL, "encode_error", "ValueError: no way");
    encode_fails(py_eval("Loop()"), NULL, "encode_error", "too many times");
}

Test(etf_py, builtin_encoders)
{
    ei_x_buff x;

    py_exec("import datetime, decimal, numpy, pandas\n");

    new_x(&x);
    ei_x_encode_list_header(&x, 2);
    ei_x_encode_string_len(&x, "\x01\x02", 2);
    ei_x_encode_string_len(&x, "\x03\x04", 2);
    ei_x_encode_empty_list(&x);
    encodes_as("numpy.array([[1, 2], [3, 4]])", &x);
    ei_x_free(&x);

    new_x(&x);
    ei_x_encode_tuple_header(&x, 3);
    ei_x_encode_long(&x, 7);
    ei_x_encode_double(&x, 0.5);
    ei_x_encode_atom(&x, "true");
    encodes_as("(numpy.int64(7), numpy.float32(0.5), numpy.bool_(True))", &x);
    ei_x_free(&x);

    new_x(&x);
    ei_x_encode_list_header(&x, 2);
    ei_x_encode_map_header(&x, 2);
    ei_x_encode_binary(&x, "a", 1);
    ei_x_encode_long(&x, 1);
    ei_x_encode_binary(&x, "b", 1);
    ei_x_encode_binary(&x, "x", 1);
    ei_x_encode_map_header(&x, 2);
    ei_x_encode_binary(&x, "a", 1);
    ei_x_encode_long(&x, 2);
    ei_x_encode_binary(&x, "b", 1);
    ei_x_encode_atom(&x, "nil");
    ei_x_encode_empty_list(&x);
    encodes_as("pandas.DataFrame({'a': [1, 2], 'b': ['x', None]})", &x);
    ei_x_free(&x);

    new_x(&x);
    ei_x_encode_tuple_header(&x, 4);
    ei_x_encode_binary(&x, "2024-02-29T12:30:00+00:00", 25);
    ei_x_encode_binary(&x, "2024-02-29", 10);
    ei_x_encode_binary(&x, "12:30:00.000001", 15);
    ei_x_encode_binary(&x, "1.10", 4);
    encodes_as("(datetime.datetime(2024, 2, 29, 12, 30, tzinfo=datetime.timezone.utc), "
               "datetime.date(2024, 2, 29), datetime.time(12, 30, 0, 1), "
               "decimal.Decimal('1.10'))", &x);
    ei_x_free(&x);
}

/* Build n nested lists around an empty list: [[[...[]...]]], n levels in all. */
static void nested_lists(ei_x_buff *x, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        ei_x_encode_list_header(x, 1);
    }
    ei_x_encode_empty_list(x);
    for (size_t i = 1; i < n; i++) {
        ei_x_encode_empty_list(x);
    }
}

/* A Python list nested n levels, built without recursion; returns a new reference. */
static PyObject *nested_py_list(size_t n)
{
    PyObject *v = PyList_New(0);

    for (size_t i = 1; i < n; i++) {
        PyObject *outer = PyList_New(1);

        cr_assert_not_null(outer);
        PyList_SET_ITEM(outer, 0, v);
        v = outer;
    }
    return v;
}

Test(etf_py, decode_depth_limit)
{
    EtfPyLimits limits = {.max_depth = 20};
    ei_x_buff x;

    new_x(&x);
    nested_lists(&x, 20);
    Py_DECREF(decode_ok(x.buff, (size_t)x.index, &limits));
    ei_x_free(&x);

    new_x(&x);
    nested_lists(&x, 21);
    decode_fails(x.buff, (size_t)x.index, &limits, "too_deep");
    ei_x_free(&x);

    new_x(&x);
    nested_lists(&x, ETF_PY_MAX_DEPTH_DEFAULT);
    round_trip(&x, NULL);
    ei_x_free(&x);

    new_x(&x);
    nested_lists(&x, ETF_PY_MAX_DEPTH_DEFAULT + 1);
    decode_fails(x.buff, (size_t)x.index, NULL, "too_deep");
    ei_x_free(&x);
}

Test(etf_py, decode_depth_counts_tuples_maps_charlists)
{
    EtfPyLimits limits = {.max_depth = 2};
    ei_x_buff x;

    new_x(&x);
    ei_x_encode_tuple_header(&x, 1);
    ei_x_encode_map_header(&x, 1);
    ei_x_encode_long(&x, 1);
    ei_x_encode_string(&x, "a");
    decode_fails(x.buff, (size_t)x.index, &limits, "too_deep");
    limits.max_depth = 3;
    Py_DECREF(decode_ok(x.buff, (size_t)x.index, &limits));
    ei_x_free(&x);
}

Test(etf_py, argument_nested_10000_deep)
{
    ei_x_buff x;

    new_x(&x);
    nested_lists(&x, 10000);
    decode_fails(x.buff, (size_t)x.index, NULL, "too_deep");
    ei_x_free(&x);
}

Test(etf_py, encode_depth_limit)
{
    EtfPyLimits limits = {.max_depth = 20};
    ei_x_buff out;
    ei_x_buff expected;

    encode_ok(&out, nested_py_list(20), &limits);
    new_x(&expected);
    nested_lists(&expected, 20);
    cr_assert_eq(out.index, expected.index);
    cr_assert_eq(memcmp(out.buff, expected.buff, (size_t)out.index), 0);
    ei_x_free(&out);
    ei_x_free(&expected);
    encode_fails(nested_py_list(21), &limits, "too_deep", "20 levels");
    encode_fails(nested_py_list(ETF_PY_MAX_DEPTH_DEFAULT + 1), NULL, "too_deep", "256 levels");
}

Test(etf_py, python_list_nested_100000_deep)
{
    encode_fails(nested_py_list(100000), NULL, "too_deep", "256 levels");
    py_exec("deep = {}\n"
            "for _ in range(100000):\n"
            "    deep = {'k': (deep,)}\n");
    encode_fails(py_eval("deep"), NULL, "too_deep", NULL);
    py_exec("del deep\n");
}

Test(etf_py, encode_size_limit)
{
    /* A binary of n bytes takes n + 5: tag and 4-byte length. */
    EtfPyLimits limits = {.max_bytes = 1000};
    ei_x_buff out;

    encode_ok(&out, PyBytes_FromStringAndSize(NULL, 995), &limits);
    cr_assert_eq(out.index, 1000);
    ei_x_free(&out);
    encode_fails(PyBytes_FromStringAndSize(NULL, 996), &limits, "too_large", "1000 bytes");
    encode_fails(py_eval("['x' * 100] * 10"), &limits, "too_large", "1000 bytes");
}

Test(etf_py, decode_size_limit)
{
    EtfPyLimits limits = {.max_bytes = 1000};
    ei_x_buff x;

    new_x(&x);
    ei_x_encode_binary(&x, NULL, 0);
    ei_x_free(&x);

    char *data = calloc(1, 996);
    cr_assert_not_null(data);
    new_x(&x);
    ei_x_encode_binary(&x, data, 995);
    Py_DECREF(decode_ok(x.buff, (size_t)x.index, &limits));
    ei_x_free(&x);
    new_x(&x);
    ei_x_encode_binary(&x, data, 996);
    decode_fails(x.buff, (size_t)x.index, &limits, "too_large");
    ei_x_free(&x);
    free(data);
}

static void big_binary_round_trip(size_t n)
{
    EtfPyLimits limits = {.max_bytes = n + 5};
    unsigned char *data = malloc(n);
    ei_x_buff x;
    ei_x_buff out;
    struct timespec t0;
    struct timespec t1;

    cr_assert_not_null(data);
    for (size_t i = 0; i < n; i++) {
        data[i] = (unsigned char)(i * 7 + (i >> 13));
    }
    new_x(&x);
    ei_x_encode_binary(&x, data, (long)n);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    PyObject *v = decode_ok(x.buff, (size_t)x.index, &limits);
    cr_assert(PyBytes_CheckExact(v), "random bytes must decode to bytes");
    encode_ok(&out, v, &limits);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    cr_assert_eq(out.index, x.index);
    cr_assert_eq(memcmp(out.buff, x.buff, (size_t)x.index), 0);
    double seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    cr_log_info("%zu-byte binary round trip: %.3f s", n, seconds);
    /* Generous enough for ASan builds; a per-element slow path would take far longer. */
    cr_expect_lt(seconds, 10.0, "%zu-byte round trip took %.3f s", n, seconds);
    encode_fails(PyBytes_FromStringAndSize((const char *)data, (Py_ssize_t)n), &(EtfPyLimits){
        .max_bytes = n + 4}, "too_large", NULL);
    ei_x_free(&x);
    ei_x_free(&out);
    free(data);
}

Test(etf_py, binary_10mb_round_trip)
{
    big_binary_round_trip(10u << 20);
}

Test(etf_py, binary_100mb_round_trip)
{
    big_binary_round_trip(100u << 20);
}

Test(etf_py, utf8_binary_100mb_decodes_to_str)
{
    size_t n = 100u << 20;
    char *data = malloc(n);
    ei_x_buff x;
    ei_x_buff out;

    cr_assert_not_null(data);
    memset(data, 'a', n);
    memcpy(data + n - 2, "\xc3\xa9", 2);
    new_x(&x);
    ei_x_encode_binary(&x, data, (long)n);
    free(data);
    EtfPyLimits limits = {.max_bytes = n + 5};
    PyObject *v = decode_ok(x.buff, (size_t)x.index, &limits);
    cr_assert(PyUnicode_CheckExact(v));
    encode_ok(&out, v, &limits);
    cr_assert_eq(out.index, x.index);
    cr_assert_eq(memcmp(out.buff, x.buff, (size_t)x.index), 0);
    ei_x_free(&x);
    ei_x_free(&out);
}

/* A term with one of each kind of tag the decoder reads. */
static void every_kind_term(ei_x_buff *x)
{
    erlang_pid pid = {.num = 1, .serial = 2, .creation = 3};

    strcpy(pid.node, "a@b");
    ei_x_encode_map_header(x, 3);
    ei_x_encode_atom(x, "k");
    ei_x_encode_tuple_header(x, 6);
    ei_x_encode_long(x, 1);
    ei_x_encode_long(x, -100000);
    ei_x_encode_ulonglong(x, ULLONG_MAX);
    ei_x_encode_double(x, 2.5);
    ei_x_encode_binary(x, "h\xc3\xa9", 3);
    ei_x_encode_pid(x, &pid);
    ei_x_encode_binary(x, "list", 4);
    ei_x_encode_list_header(x, 3);
    ei_x_encode_string(x, "abc");
    ei_x_encode_atom_as(x, "\xd1\x8f", ERLANG_UTF8, ERLANG_UTF8);
    ei_x_append_buf(x, (const char *)export_fun, sizeof(export_fun));
    ei_x_encode_empty_list(x);
    ei_x_encode_long(x, 3);
    put_big(x, 12, 1);
}

Test(etf_py, truncated_at_every_length)
{
    ei_x_buff x;

    new_x(&x);
    every_kind_term(&x);
    round_trip(&x, NULL);
    /* Each prefix is copied to a buffer of exactly its size, so ASan reports any read past it. */
    for (int n = 0; n < x.index; n++) {
        char *copy = malloc(n > 0 ? (size_t)n : 1);

        cr_assert_not_null(copy);
        memcpy(copy, x.buff, (size_t)n);
        decode_fails(copy, (size_t)n, NULL, "bad_request");
        free(copy);
    }
    ei_x_free(&x);
}

Test(etf_py, garbage_at_every_length)
{
    ei_x_buff x;
    unsigned seed = 12345;

    new_x(&x);
    every_kind_term(&x);
    /* Flip one byte at a time: a decode may succeed or fail, but must stay in bounds. */
    for (int pos = 0; pos < x.index; pos++) {
        for (int flip = 0; flip < 8; flip++) {
            char *copy = malloc((size_t)x.index);
            EtfPyError err = {0};
            int index = 0;

            cr_assert_not_null(copy);
            memcpy(copy, x.buff, (size_t)x.index);
            seed = seed * 1103515245u + 12345u;
            copy[pos] = (char)(seed >> 16);
            for (int n = pos + 1; n <= x.index; n++) {
                PyObject *v = etf_py_decode(copy, (size_t)n, &index, NULL, &err);

                cr_assert_null(PyErr_Occurred());
                if (v == NULL) {
                    cr_assert_eq(index, 0);
                    cr_assert_not_null(err.kind);
                } else {
                    cr_assert_leq(index, n);
                    index = 0;
                    Py_DECREF(v);
                }
            }
            free(copy);
        }
    }
    ei_x_free(&x);
}

Test(etf_py, random_bytes_stay_in_bounds)
{
    unsigned seed = 99;

    for (int round = 0; round < 20000; round++) {
        size_t n = 1 + (size_t)(round % 64);
        unsigned char *buf = malloc(n);
        EtfPyError err = {0};
        int index = 0;

        cr_assert_not_null(buf);
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            buf[i] = (unsigned char)(seed >> 16);
        }
        /* Bias the first byte towards real tags so deeper paths are reached. */
        static const unsigned char tags[] = {'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k',
                                             'l', 'm', 'n', 'o', 'p', 'q', 'r', 's', 't', 'v', 'w',
                                             'x', 'F', 'M', 'X', 'Y', 'Z'};
        buf[0] = tags[buf[0] % sizeof(tags)];
        PyObject *v = etf_py_decode((const char *)buf, n, &index, NULL, &err);
        cr_assert_null(PyErr_Occurred());
        if (v != NULL) {
            cr_assert_leq((size_t)index, n);
            Py_DECREF(v);
        } else {
            cr_assert_eq(index, 0);
        }
        free(buf);
    }
}

Test(etf_py, decode_from_index)
{
    ei_x_buff x;
    EtfPyError err = {0};
    int index;

    new_x(&x);
    ei_x_encode_version(&x);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "ok");
    ei_x_encode_long(&x, 5);
    ei_x_encode_atom(&x, "after");
    index = 1;
    PyObject *v = etf_py_decode(x.buff, (size_t)x.index, &index, NULL, &err);
    cr_assert_not_null(v, "%s", err.message);
    py_check(v, "v == (Atom('ok'), 5)");
    Py_DECREF(v);
    cr_assert_eq(index, x.index - 7, "index must stop after the tuple, before 'after'");
    ei_x_free(&x);
}

static long allocated_blocks(void)
{
    PyObject *v = py_eval("sys.getallocatedblocks()");
    long n = PyLong_AsLong(v);

    Py_DECREF(v);
    return n;
}

/* Round trips and every kind of failure, repeated: Python's block count must stay flat. */
static void exercise_codec(void)
{
    ei_x_buff x;
    ei_x_buff out;
    EtfPyLimits shallow = {.max_depth = 2};

    new_x(&x);
    every_kind_term(&x);
    for (int n = 0; n <= x.index; n++) {
        EtfPyError err;
        int index = 0;
        PyObject *v = etf_py_decode(x.buff, (size_t)n, &index, NULL, &err);

        if (v != NULL) {
            encode_ok(&out, v, NULL);
            ei_x_free(&out);
        }
        index = 0;
        cr_assert_null(etf_py_decode(x.buff, (size_t)x.index, &index, &shallow, &err));
    }
    ei_x_free(&x);
    encode_fails(py_eval("[{'k': (1, 2.5, b'x', Atom('a'))}, [Widget()]]"), NULL, "encode_error",
                 NULL);
    encode_fails(py_eval("[[[[[1]]]]]"), &shallow, "too_deep", NULL);
    encode_fails(py_eval("[Broken()]"), NULL, "encode_error", NULL);
    encode_fails(py_eval("{1: ['x' * 2000]}"), &(EtfPyLimits){.max_bytes = 1000}, "too_large",
                 NULL);
}

Test(etf_py, no_reference_leaks)
{
    py_exec("import sys\n"
            "class Widget:\n"
            "    pass\n"
            "class Broken:\n"
            "    pass\n"
            "def fail(obj):\n"
            "    raise ValueError('no way')\n"
            "snakepit.encoders.register(Broken, fail)\n");
    for (int i = 0; i < 5; i++) {
        exercise_codec();
    }
    long before = allocated_blocks();
    for (int i = 0; i < 50; i++) {
        exercise_codec();
    }
    long after = allocated_blocks();
    cr_assert_lt(after - before, 20, "Python blocks grew from %ld to %ld over 50 rounds", before,
                 after);
}

/* Read a whole file into a malloc'd buffer; stores its size in *len. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *data;
    long size;

    cr_assert_not_null(f, "cannot open %s", path);
    cr_assert_eq(fseek(f, 0, SEEK_END), 0);
    size = ftell(f);
    cr_assert_geq(size, 0);
    rewind(f);
    data = malloc((size_t)size + 1);
    cr_assert_not_null(data);
    cr_assert_eq(fread(data, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    *len = (size_t)size;
    return data;
}

static void run_terms_script(const char *mode, const char *first, const char *second)
{
    const char *script = getenv("ETF_PY_TERMS_SCRIPT");
    char command[1024];

    cr_assert_not_null(script, "ETF_PY_TERMS_SCRIPT is not set: run the test through meson");
    snprintf(command, sizeof(command), "escript '%s' %s '%s' %s%s%s", script, mode, first,
             second != NULL ? "'" : "", second != NULL ? second : "", second != NULL ? "'" : "");
    cr_assert_eq(system(command), 0, "%s failed", command);
}

/* Echo each term that a real OTP node wrote and let that node check what came back. */
Test(etf_py, erlang_terms_round_trip)
{
    char dir[] = "/tmp/test_etf_py_XXXXXX";
    char original[64];
    char echoed[64];
    size_t len;
    size_t pos = 0;
    size_t count = 0;
    ei_x_buff frames;

    cr_assert_not_null(mkdtemp(dir));
    snprintf(original, sizeof(original), "%s/original.bin", dir);
    snprintf(echoed, sizeof(echoed), "%s/echoed.bin", dir);
    run_terms_script("generate", original, NULL);

    char *data = read_file(original, &len);
    new_x(&frames);
    while (pos < len) {
        cr_assert_geq(len - pos, 5);
        size_t n = (size_t)(unsigned char)data[pos] << 24 |
                   (size_t)(unsigned char)data[pos + 1] << 16 |
                   (size_t)(unsigned char)data[pos + 2] << 8 | (unsigned char)data[pos + 3];
        const char *term = data + pos + 4;
        ei_x_buff out;
        EtfPyError err;
        int index = 1;

        cr_assert_eq((unsigned char)term[0], 131, "term %zu has no version byte", count);
        PyObject *v = etf_py_decode(term, n, &index, NULL, &err);
        cr_assert_not_null(v, "term %zu: %s: %s", count, err.kind, err.message);
        cr_assert_eq((size_t)index, n, "term %zu: decoded %d of %zu bytes", count, index, n);
        cr_assert_eq(ei_x_new_with_version(&out), 0);
        cr_assert_eq(etf_py_encode(&out, v, NULL, &err), 0, "term %zu: %s: %s", count, err.kind,
                     err.message);
        Py_DECREF(v);
        char header[4] = {(char)(out.index >> 24), (char)(out.index >> 16),
                          (char)(out.index >> 8), (char)out.index};
        ei_x_append_buf(&frames, header, 4);
        ei_x_append_buf(&frames, out.buff, out.index);
        ei_x_free(&out);
        pos += 4 + n;
        count++;
    }
    free(data);
    cr_assert_gt(count, 40, "only %zu terms generated", count);

    FILE *f = fopen(echoed, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(frames.buff, 1, (size_t)frames.index, f), (size_t)frames.index);
    cr_assert_eq(fclose(f), 0);
    ei_x_free(&frames);
    run_terms_script("check", original, echoed);
    unlink(original);
    unlink(echoed);
    rmdir(dir);
}
