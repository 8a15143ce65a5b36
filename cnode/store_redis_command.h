/* SPDX-License-Identifier: Apache-2.0 */
/*
 * RESP encoding of the Redis session store's script calls, EVALSHA and EVAL. The arguments after
 * the script are encoded once, so that a call sent as EVALSHA can be sent again as EVAL after a
 * NOSCRIPT reply without its caller's buffers. Only store_redis.c uses this; it is public for
 * its tests.
 */
#pragma once

#include <stddef.h>

#include "store.h"

/* A script's SHA1 in hex, as SCRIPT LOAD returns it and EVALSHA takes it. */
#define STORE_REDIS_COMMAND_SHA1_HEX_LEN 40

/* The arguments of a script call after the script (numkeys, the keys, then ARGV). */
typedef struct StoreRedisCommandArgs {
    char *buffer; /* new: free room for the EVALSHA header, then `len` bytes of bulk strings */
    size_t len;
    int count;
} StoreRedisCommandArgs;

/*
 * Encode `count` arguments (each borrowed for the call) as RESP bulk strings into *out. Returns
 * 0, or -ENOMEM with *out unchanged. Release *out with store_redis_command_args_free().
 */
int store_redis_command_args_encode(int count, const StoreBytes *args,
                                    StoreRedisCommandArgs *out);

/* Free the buffer of `args` and zero it. Accepts a zeroed struct. */
void store_redis_command_args_free(StoreRedisCommandArgs *args);

/*
 * Write the EVALSHA header for `sha` (STORE_REDIS_COMMAND_SHA1_HEX_LEN hex digits) into the free
 * room in front of the arguments. Returns the whole command, borrowed from args->buffer and
 * valid until the next call on `args`, and sets *len to its length.
 */
const char *store_redis_command_evalsha(StoreRedisCommandArgs *args, const char *sha,
                                        size_t *len);

/*
 * Build EVAL with the script `text` and the arguments in a new buffer (free it) and set *len.
 * Returns the buffer, or NULL when out of memory.
 */
char *store_redis_command_eval(const StoreRedisCommandArgs *args, const char *text, size_t *len);
