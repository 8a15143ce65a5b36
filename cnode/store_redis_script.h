/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Lua scripts of the Redis session store (texts for EVAL) and their status codes. Only
 * store_redis.c uses them; see store_redis_script.c for each script's keys and arguments.
 */
#pragma once

/* Script status codes, the first element of each session script's array reply. */
#define STORE_REDIS_LUA_OK 0
#define STORE_REDIS_LUA_NO_SESSION 1
#define STORE_REDIS_LUA_NO_VARIABLE 2
#define STORE_REDIS_LUA_QUOTA 3

extern const char store_redis_script_create[];
extern const char store_redis_script_get[];
extern const char store_redis_script_put_var[];
extern const char store_redis_script_get_var[];
extern const char store_redis_script_dump[];
extern const char store_redis_script_delete[];
extern const char store_redis_script_touch[];
extern const char store_redis_script_set_worker[];
extern const char store_redis_script_count[];
extern const char store_redis_script_expire[];
extern const char store_redis_script_delete_by_owner[];
