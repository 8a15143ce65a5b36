/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One logger for the daemon and the worker: syslog levels, one line per event on stderr, text
 * ("level=info msg=...") or JSON, with journald priority prefixes when stderr is the journal.
 * Library-like modules (codec, store, pool) return errors and log only at debug level.
 */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <syslog.h>

typedef enum {
    LOG_FORMAT_TEXT,
    LOG_FORMAT_JSON,
} LogFormat;

/* Set up the logger once at start; `ident` is borrowed and must outlive the process. */
void log_setup(const char *ident, int max_level, LogFormat format);
void log_set_max_level(int level);
int log_get_max_level(void);
void log_set_format(LogFormat format);

/* Parse "error", "warning", "notice", "info" or "debug"; returns the syslog level or -EINVAL. */
int log_level_from_string(const char *name);

/*
 * Write one line at `level` unless the level is filtered out. `err`, when non-zero, is an errno
 * value appended as ": <strerror>". Returns -abs(err), so error paths can `return log_...`.
 */
int log_emit(int level, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int log_emitv(int level, int err, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

#define log_error(...) log_emit(LOG_ERR, 0, __VA_ARGS__)
#define log_warning(...) log_emit(LOG_WARNING, 0, __VA_ARGS__)
#define log_notice(...) log_emit(LOG_NOTICE, 0, __VA_ARGS__)
#define log_info(...) log_emit(LOG_INFO, 0, __VA_ARGS__)
#define log_debug(...) log_emit(LOG_DEBUG, 0, __VA_ARGS__)
#define log_error_errno(r, ...) log_emit(LOG_ERR, (r), __VA_ARGS__)
#define log_warning_errno(r, ...) log_emit(LOG_WARNING, (r), __VA_ARGS__)
#define log_debug_errno(r, ...) log_emit(LOG_DEBUG, (r), __VA_ARGS__)

/* Write `msg` to stderr with write(2) only: the one logging path safe in a signal handler. */
void log_signal_safe(const char *msg);

/*
 * A rate limiter for repeated log lines: at most `burst` lines per `interval_ms`. When a new
 * interval starts, log_ratelimit_check() stores in *dropped how many lines the last one dropped.
 */
typedef struct {
    uint64_t interval_ms;
    unsigned burst;
    uint64_t begin_ms;
    unsigned count;
    unsigned dropped;
} LogRateLimit;

#define LOG_RATELIMIT_INIT(interval, max_burst) \
    { .interval_ms = (interval), .burst = (max_burst), .begin_ms = 0, .count = 0, .dropped = 0 }

bool log_ratelimit_check(LogRateLimit *rl, uint64_t now_ms, unsigned *dropped);

/* Milliseconds of CLOCK_MONOTONIC. */
uint64_t log_now_ms(void);
