/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Parsers of the Redis session store's replies into store views. Only store_redis.c uses them.
 * Every view points into the hiredis reply (borrowed, valid while the reply lives). Each parser
 * returns 0 or a negative errno: a script status (-ENOENT, -EDQUOT) or -EPROTO for a reply of
 * an unexpected shape, and writes its outputs only on success.
 */
#pragma once

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdint.h>

#include "store.h"

/* Parse an integer reply, or a string of decimal digits, into *out; false when it is neither. */
bool store_redis_reply_u64(const redisReply *r, uint64_t *out);

/*
 * Returns the negative errno for an error reply: -ENOMEM (OOM), -EBUSY (LOADING, BUSY,
 * MASTERDOWN), -EROFS (READONLY), else -EPROTO.
 */
int store_redis_reply_error(const redisReply *r);

/*
 * Returns the status that starts a session script's array reply, as 0 or a negative errno, or
 * the store_redis_reply_error() of an error reply.
 */
int store_redis_reply_status(const redisReply *r);

/* Parse {status, created, accessed, ttl, owner | nil, worker | nil} for the session `id`. */
int store_redis_reply_session(const redisReply *r, StoreBytes id, StoreSession *out);

/*
 * Parse {status, {field, value, ...}} (HGETALL of a session hash) for the session `id`. *vars is
 * set to a new array of *var_count variables that the caller frees.
 */
int store_redis_reply_dump(const redisReply *r, StoreBytes id, StoreSession *session,
                           StoreVar **vars, size_t *var_count);

/* Parse {status, value}. */
int store_redis_reply_value(const redisReply *r, StoreBytes *out);

/*
 * Parse a SCAN reply {cursor, {key, ...}} into the ids after `prefix`. *ids is set to a new
 * array of *count ids that the caller frees. Keys without the prefix are left out.
 */
int store_redis_reply_scan(const redisReply *r, const char *prefix, uint64_t *cursor,
                           StoreBytes **ids, size_t *count);
