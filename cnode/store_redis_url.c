/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The parser of redis:// URLs for the Redis session store, declared in store_redis.h.
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "store_redis.h"

/* Parse decimal digits [begin, end) into 0..max; false when empty, not digits or too big. */
static bool parse_number(const char *begin, const char *end, long max, int *out)
{
    long v = 0;

    if (begin == end) {
        return false;
    }
    for (const char *p = begin; p < end; p++) {
        if (*p < '0' || *p > '9') {
            return false;
        }
        v = v * 10 + (*p - '0');
        if (v > max) {
            return false;
        }
    }
    *out = (int)v;
    return true;
}

static bool copy_span(char *dst, size_t size, const char *begin, const char *end)
{
    size_t len = (size_t)(end - begin);

    if (len >= size) {
        return false;
    }
    memcpy(dst, begin, len);
    dst[len] = '\0';
    return true;
}

/* Parse host[:port] from [p, end) into url. */
static bool parse_host_port(const char *p, const char *end, StoreRedisUrl *url)
{
    const char *host_end;
    const char *port = NULL;

    if (p < end && *p == '[') {
        host_end = memchr(p, ']', (size_t)(end - p));
        if (host_end == NULL) {
            return false;
        }
        p++;
        if (host_end + 1 < end) {
            if (host_end[1] != ':') {
                return false;
            }
            port = host_end + 2;
        }
    } else {
        host_end = memchr(p, ':', (size_t)(end - p));
        if (host_end != NULL) {
            port = host_end + 1;
        } else {
            host_end = end;
        }
    }
    if (host_end == p || !copy_span(url->host, sizeof(url->host), p, host_end)) {
        return false;
    }
    if (port != NULL) {
        return parse_number(port, end, 65535, &url->port) && url->port != 0;
    }
    return true;
}

int store_redis_url_parse(const char *url, StoreRedisUrl *out)
{
    static const char scheme[] = "redis://";
    StoreRedisUrl parsed = {.port = STORE_REDIS_DEFAULT_PORT, .db = 0};
    const char *p;
    const char *at;
    const char *slash;
    const char *end;

    if (url == NULL || strncmp(url, scheme, strlen(scheme)) != 0) {
        return -EINVAL;
    }
    p = url + strlen(scheme);
    end = p + strlen(p);
    slash = memchr(p, '/', (size_t)(end - p));
    if (slash != NULL) {
        if (!parse_number(slash + 1, end, 65535, &parsed.db)) {
            return -EINVAL;
        }
        end = slash;
    }
    /* The password is everything between the first ':' and the last '@' of the authority. */
    at = memrchr(p, '@', (size_t)(end - p));
    if (at != NULL) {
        if (*p != ':' || !copy_span(parsed.password, sizeof(parsed.password), p + 1, at) ||
            at == p + 1) {
            return -EINVAL;
        }
        p = at + 1;
    }
    if (!parse_host_port(p, end, &parsed)) {
        return -EINVAL;
    }
    *out = parsed;
    return 0;
}
