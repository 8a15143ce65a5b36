/* SPDX-License-Identifier: Apache-2.0 */
/* The logger: formats one line in a stack buffer and writes it to stderr with one write(2). */
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 4096

static const char *log_ident = "snakepit";
static int log_max_level = LOG_INFO;
static LogFormat log_format = LOG_FORMAT_TEXT;
static bool log_to_journal;

static const char *const log_level_names[] = {
    [LOG_EMERG] = "emerg",   [LOG_ALERT] = "alert",   [LOG_CRIT] = "crit",
    [LOG_ERR] = "error",     [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
    [LOG_INFO] = "info",     [LOG_DEBUG] = "debug",
};

/* systemd sets JOURNAL_STREAM to "dev:inode" of the stream it connected to stderr. */
static bool stderr_is_journal(void)
{
    const char *env = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;

    if (!env || sscanf(env, "%llu:%llu", &dev, &ino) != 2) {
        return false;
    }
    if (fstat(STDERR_FILENO, &st) < 0) {
        return false;
    }
    return st.st_dev == dev && st.st_ino == ino;
}

void log_setup(const char *ident, int max_level, LogFormat format)
{
    log_ident = ident;
    log_max_level = max_level;
    log_format = format;
    log_to_journal = stderr_is_journal();
}

void log_set_max_level(int level)
{
    log_max_level = level;
}

int log_get_max_level(void)
{
    return log_max_level;
}

void log_set_format(LogFormat format)
{
    log_format = format;
}

int log_level_from_string(const char *name)
{
    for (int i = 0; i <= LOG_DEBUG; i++) {
        if (strcmp(name, log_level_names[i]) == 0) {
            return i;
        }
    }
    if (strcmp(name, "warn") == 0) {
        return LOG_WARNING;
    }
    if (strcmp(name, "err") == 0) {
        return LOG_ERR;
    }
    return -EINVAL;
}

uint64_t log_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Append `s` to buf[*len..size) as the body of a JSON string, escaping as RFC 8259 requires. */
static void json_escape_append(char *buf, size_t size, size_t *len, const char *s)
{
    static const char hex[] = "0123456789abcdef";

    for (; *s && *len + 7 < size; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == '"' || c == '\\') {
            buf[(*len)++] = '\\';
            buf[(*len)++] = (char)c;
        } else if (c < 0x20) {
            buf[(*len)++] = '\\';
            buf[(*len)++] = 'u';
            buf[(*len)++] = '0';
            buf[(*len)++] = '0';
            buf[(*len)++] = hex[c >> 4];
            buf[(*len)++] = hex[c & 0xf];
        } else {
            buf[(*len)++] = (char)c;
        }
    }
}

static size_t format_timestamp(char *buf, size_t size)
{
    struct timespec ts;
    struct tm tm;
    size_t n;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(buf + n, size - n, ".%03ldZ", ts.tv_nsec / 1000000);
    return n;
}

int log_emitv(int level, int err, const char *fmt, va_list ap)
{
    char msg[LOG_LINE_MAX];
    char line[LOG_LINE_MAX * 2];
    char ts[64];
    size_t len = 0;
    int saved_errno = errno;
    int abs_err = err < 0 ? -err : err;

    if (level > log_max_level) {
        errno = saved_errno;
        return -abs_err;
    }
    if (level < 0 || level > LOG_DEBUG) {
        level = LOG_ERR;
    }

    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    if (n < 0) {
        n = 0;
        msg[0] = '\0';
    }
    if (abs_err != 0 && (size_t)n < sizeof(msg)) {
        char errbuf[128];
        const char *e = strerror_r(abs_err, errbuf, sizeof(errbuf));
        snprintf(msg + n, sizeof(msg) - (size_t)n, ": %s", e);
    }
    format_timestamp(ts, sizeof(ts));

    if (log_to_journal) {
        len += (size_t)snprintf(line, sizeof(line), "<%d>", level);
    }
    if (log_format == LOG_FORMAT_JSON) {
        len += (size_t)snprintf(line + len, sizeof(line) - len,
                                "{\"ts\":\"%s\",\"level\":\"%s\",\"ident\":\"%s\",\"pid\":%d,"
                                "\"msg\":\"",
                                ts, log_level_names[level], log_ident, (int)getpid());
        json_escape_append(line, sizeof(line) - 3, &len, msg);
        line[len++] = '"';
        line[len++] = '}';
    } else {
        len += (size_t)snprintf(line + len, sizeof(line) - len, "%s %s[%d] %s: %s", ts,
                                log_ident, (int)getpid(), log_level_names[level], msg);
    }
    if (len > sizeof(line) - 1) {
        len = sizeof(line) - 1;
    }
    line[len++] = '\n';

    /* One write(2) per line, so lines of concurrent threads and processes never interleave. */
    ssize_t r = write(STDERR_FILENO, line, len);
    (void)r;
    errno = saved_errno;
    return -abs_err;
}

int log_emit(int level, int err, const char *fmt, ...)
{
    va_list ap;
    int r;

    va_start(ap, fmt);
    r = log_emitv(level, err, fmt, ap);
    va_end(ap);
    return r;
}

void log_signal_safe(const char *msg)
{
    ssize_t r = write(STDERR_FILENO, msg, strlen(msg));
    (void)r;
}

bool log_ratelimit_check(LogRateLimit *rl, uint64_t now_ms, unsigned *dropped)
{
    *dropped = 0;
    if (rl->begin_ms == 0 || now_ms - rl->begin_ms >= rl->interval_ms) {
        *dropped = rl->dropped;
        rl->begin_ms = now_ms;
        rl->count = 0;
        rl->dropped = 0;
    }
    if (rl->count < rl->burst) {
        rl->count++;
        return true;
    }
    rl->dropped++;
    return false;
}
