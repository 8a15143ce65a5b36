/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The error kinds of the reply contract and the encoder of `{error, #{kind, message, retryable}}`.
 * Transient kinds are retryable; all others are permanent.
 */
#pragma once

#include <ei.h>
#include <stdbool.h>

typedef enum {
    ERROR_PYTHON_EXCEPTION,
    ERROR_TIMEOUT,
    ERROR_QUEUE_TIMEOUT,
    ERROR_OVERLOADED,
    ERROR_WORKER_CRASHED,
    ERROR_WORKER_BUSY,
    ERROR_SESSION_WORKER_UNAVAILABLE,
    ERROR_SESSION_NOT_FOUND,
    ERROR_NOT_ALLOWED,
    ERROR_BAD_REQUEST,
    ERROR_ENCODE_ERROR,
    ERROR_TOO_LARGE,
    ERROR_TOO_DEEP,
    ERROR_CIRCUIT_OPEN,
    ERROR_STORE_UNAVAILABLE,
    ERROR_SHUTTING_DOWN,
    ERROR_KIND_COUNT,
} ErrorKind;

/* The atom of a kind, e.g. "queue_timeout". */
const char *error_kind_name(ErrorKind kind);
bool error_kind_retryable(ErrorKind kind);

/*
 * Append `{error, #{kind => K, message => <<Msg>>, retryable => B}}` plus `extra_pairs` more map
 * entries that the caller appends right after this returns (0 for none). Returns 0 or -ENOMEM.
 */
int error_encode(ei_x_buff *x, ErrorKind kind, unsigned extra_pairs, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
