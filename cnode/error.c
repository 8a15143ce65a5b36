/* SPDX-License-Identifier: Apache-2.0 */
/* Error kinds and the error-reply encoder shared by every request handler. */
#include "error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    bool retryable;
} error_kinds[ERROR_KIND_COUNT] = {
    [ERROR_PYTHON_EXCEPTION] = {"python_exception", false},
    [ERROR_TIMEOUT] = {"timeout", true},
    [ERROR_QUEUE_TIMEOUT] = {"queue_timeout", true},
    [ERROR_OVERLOADED] = {"overloaded", true},
    [ERROR_WORKER_CRASHED] = {"worker_crashed", true},
    [ERROR_WORKER_BUSY] = {"worker_busy", true},
    [ERROR_SESSION_WORKER_UNAVAILABLE] = {"session_worker_unavailable", false},
    [ERROR_SESSION_NOT_FOUND] = {"session_not_found", false},
    [ERROR_NOT_ALLOWED] = {"not_allowed", false},
    [ERROR_BAD_REQUEST] = {"bad_request", false},
    [ERROR_ENCODE_ERROR] = {"encode_error", false},
    [ERROR_TOO_LARGE] = {"too_large", false},
    [ERROR_TOO_DEEP] = {"too_deep", false},
    [ERROR_CIRCUIT_OPEN] = {"circuit_open", true},
    [ERROR_STORE_UNAVAILABLE] = {"store_unavailable", true},
    [ERROR_SHUTTING_DOWN] = {"shutting_down", true},
};

const char *error_kind_name(ErrorKind kind)
{
    return kind < ERROR_KIND_COUNT ? error_kinds[kind].name : "bad_request";
}

bool error_kind_retryable(ErrorKind kind)
{
    return kind < ERROR_KIND_COUNT && error_kinds[kind].retryable;
}

int error_encode(ei_x_buff *x, ErrorKind kind, unsigned extra_pairs, const char *fmt, ...)
{
    char message[1024];
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    if (n < 0) {
        n = 0;
        message[0] = '\0';
    } else if ((size_t)n >= sizeof(message)) {
        n = (int)sizeof(message) - 1;
    }

    if (ei_x_encode_tuple_header(x, 2) < 0 || ei_x_encode_atom(x, "error") < 0 ||
        ei_x_encode_map_header(x, 3 + (long)extra_pairs) < 0 ||
        ei_x_encode_atom(x, "kind") < 0 || ei_x_encode_atom(x, error_kind_name(kind)) < 0 ||
        ei_x_encode_atom(x, "message") < 0 || ei_x_encode_binary(x, message, n) < 0 ||
        ei_x_encode_atom(x, "retryable") < 0 ||
        ei_x_encode_boolean(x, error_kind_retryable(kind)) < 0) {
        return -ENOMEM;
    }
    return 0;
}
