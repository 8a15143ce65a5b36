/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Calling into Python and encoding what comes back: {ok, Result} replies, stream chunks and the
 * {error, ErrorMap} replies for Python exceptions and the worker's own errors. Command
 * resolution, the module allowlist and the adapter live in snakepit._runtime. All functions run
 * with the GIL held. Every encoder writes a whole payload from the start of `x`, version byte
 * included, so `x` may hold an earlier, abandoned encoding.
 */
#pragma once

#include <Python.h>
#include <ei.h>

#include "etf_py.h"

/*
 * Import snakepit._runtime and configure it with the allowlist and the adapter (both borrowed,
 * comma-separated and "package.module:Class", each may be NULL). Runs in the zygote, so the
 * adapter's module is imported before workers fork. Returns 0, or -1 with a Python exception set.
 */
int worker_call_init(const char *allow, const char *adapter);

/*
 * Run `command` (borrowed str) with `args` (borrowed: list, dict or (list, dict)). Returns a new
 * reference to the result, or NULL with a Python exception set.
 */
PyObject *worker_call_invoke(PyObject *command, PyObject *args);

/* Encode {ok, Result} for `result` (borrowed), or the codec's error reply when it cannot travel. */
int worker_call_encode_ok(ei_x_buff *x, PyObject *result, const EtfPyLimits *limits);

/* Encode one stream chunk. Returns 0, or -1 with *err filled when `item` (borrowed) cannot be
 * encoded. */
int worker_call_encode_chunk(ei_x_buff *x, PyObject *item, const EtfPyLimits *limits,
                             EtfPyError *err);

/*
 * Encode {error, ErrorMap} for the Python exception that is set, and clear it. The map has kind,
 * message, type, traceback, args and retryable; the request errors of snakepit._runtime (such as
 * not_allowed) have kind, message and retryable only.
 */
int worker_call_encode_exception(ei_x_buff *x, const EtfPyLimits *limits);

/*
 * Take the raised Python exception out of the error indicator, normalized and with its
 * traceback attached. Returns a new reference, or NULL when no exception is set.
 */
PyObject *worker_call_take_exception(void);

/* Encode {error, #{kind, message, retryable}}; `kind` and `message` are borrowed C strings. */
int worker_call_encode_error(ei_x_buff *x, const char *kind, const char *message);
