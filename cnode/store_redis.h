/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Redis session store backend: one hiredis asynchronous connection on the daemon's libev
 * loop. Use it through store.h; store_new() calls this. The URL parser is public for its tests.
 */
#pragma once

#include "store.h"

#define STORE_REDIS_DEFAULT_PORT 6379
#define STORE_REDIS_HOST_MAX_BYTES 255
#define STORE_REDIS_PASSWORD_MAX_BYTES 512

/* A parsed redis:// URL. */
typedef struct StoreRedisUrl {
    char host[STORE_REDIS_HOST_MAX_BYTES + 1];
    int port;
    char password[STORE_REDIS_PASSWORD_MAX_BYTES + 1]; /* empty: no AUTH */
    int db;
} StoreRedisUrl;

/*
 * Parse `url` of the form redis://[:password@]host[:port][/db] (an IPv6 host in brackets).
 * Port 1 to 65535 (default 6379), db 0 to 65535 (default 0). Returns 0 and fills *out, or
 * -EINVAL; *out is written only on success.
 */
int store_redis_url_parse(const char *url, StoreRedisUrl *out);

/*
 * Create a Redis store on `loop` (borrowed; it must outlive the store). `config` is borrowed for
 * the call; `limits` contains its resolved values. Returns 0 and sets *out to a new store that
 * starts connecting, -EINVAL for a bad URL or prefix, or -ENOMEM.
 */
int store_redis_new(const StoreConfig *config, const StoreLimits *limits, struct ev_loop *loop,
                    Store **out);
