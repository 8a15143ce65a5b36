/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Lua scripts of the Redis session store and their status codes. Only store_redis.c uses
 * them. It calls each script with EVALSHA and the SHA1 that SCRIPT LOAD returned, or with EVAL
 * and the text. store_redis_script.c lists each script's keys and arguments.
 */
#pragma once

/* Script status codes, the first element of each session script's array reply. */
#define STORE_REDIS_LUA_OK 0
#define STORE_REDIS_LUA_NO_SESSION 1
#define STORE_REDIS_LUA_NO_VARIABLE 2
#define STORE_REDIS_LUA_QUOTA 3

typedef enum {
    STORE_REDIS_SCRIPT_CREATE,
    STORE_REDIS_SCRIPT_GET,
    STORE_REDIS_SCRIPT_PUT_VAR,
    STORE_REDIS_SCRIPT_GET_VAR,
    STORE_REDIS_SCRIPT_DUMP,
    STORE_REDIS_SCRIPT_DELETE,
    STORE_REDIS_SCRIPT_TOUCH,
    STORE_REDIS_SCRIPT_SET_WORKER,
    STORE_REDIS_SCRIPT_COUNT_SESSIONS,
    STORE_REDIS_SCRIPT_EXPIRE,
    STORE_REDIS_SCRIPT_DELETE_BY_OWNER,
    STORE_REDIS_SCRIPTS, /* the number of scripts */
} StoreRedisScript;

/* Returns the Lua text of `script` (static, NUL-terminated). */
const char *store_redis_script_text(StoreRedisScript script);
