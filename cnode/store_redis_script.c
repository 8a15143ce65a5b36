/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Lua scripts of the Redis session store, one per operation. Each runs atomically in Redis,
 * so a check and its write cannot interleave with another daemon's. Every session script takes
 * KEYS[1] = the session hash and KEYS[2] = the expiry index, ARGV[1] = the session id, and
 * returns an array whose first element is a STORE_REDIS_LUA_* status.
 *
 * Each script runs as few commands as its contract allows, because Redis's time per call grows
 * with them. A session hash always contains "ttl", so reading "ttl" (nil: no session) replaces a
 * separate EXISTS. Writes to the same hash share one HSET, and the session reply takes the
 * access time it has just written instead of reading it back.
 */
#include "store_redis_script.h"

/*
 * Lua helpers shared by the scripts. renew() moves the expiry of the session to `now` + `ttl`
 * seconds. `ttl` is the decimal string of the "ttl" field, which EXPIRE takes as it is, because
 * a Lua number argument costs Redis a conversion of a double to text. access() records an
 * access: it writes "accessed", renews, and returns the time as the decimal string it wrote.
 */
#define LUA_PRELUDE                                                                           \
    "local function now_ms()\n"                                                               \
    "  local t = redis.call('TIME')\n"                                                        \
    "  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"                    \
    "end\n"                                                                                   \
    "local function renew(ttl, now)\n"                                                        \
    "  redis.call('EXPIRE', KEYS[1], ttl)\n"                                                  \
    "  local expiry = string.format('%d', now + tonumber(ttl) * 1000)\n"                       \
    "  redis.call('ZADD', KEYS[2], expiry, ARGV[1])\n"                                         \
    "end\n"                                                                                   \
    "local function access(ttl)\n"                                                            \
    "  local now = now_ms()\n"                                                                \
    "  local stamp = string.format('%d', now)\n"                                              \
    "  redis.call('HSET', KEYS[1], 'accessed', stamp)\n"                                      \
    "  renew(ttl, now)\n"                                                                     \
    "  return stamp\n"                                                                        \
    "end\n"

/*
 * ARGV: id, ttl_s, owner ("" for none), max_sessions. Returns {0, created, accessed, ttl,
 * owner | nil, worker | nil}; a new session has no worker.
 */
static const char script_create[] = LUA_PRELUDE
    "local f = redis.call('HMGET', KEYS[1], 'created', 'ttl', 'owner', 'worker')\n"
    "if f[2] then\n"
    "  local stamp = access(f[2])\n"
    "  return {0, f[1], stamp, f[2], f[3], f[4]}\n"
    "end\n"
    "local now = now_ms()\n"
    "local stamp = string.format('%d', now)\n"
    "if redis.call('ZCOUNT', KEYS[2], '(' .. stamp, '+inf') >= tonumber(ARGV[4]) then\n"
    "  return {3}\n"
    "end\n"
    "if ARGV[3] == '' then\n"
    "  redis.call('HSET', KEYS[1], 'created', stamp, 'accessed', stamp, 'ttl', ARGV[2])\n"
    "else\n"
    "  redis.call('HSET', KEYS[1], 'created', stamp, 'accessed', stamp, 'ttl', ARGV[2],\n"
    "             'owner', ARGV[3])\n"
    "end\n"
    "renew(ARGV[2], now)\n"
    "return {0, stamp, stamp, ARGV[2], ARGV[3] ~= '' and ARGV[3], false}\n";

/* ARGV: id. Returns the same array as the create script. */
static const char script_get[] = LUA_PRELUDE
    "local f = redis.call('HMGET', KEYS[1], 'created', 'ttl', 'owner', 'worker')\n"
    "if not f[2] then return {1} end\n"
    "local stamp = access(f[2])\n"
    "return {0, f[1], stamp, f[2], f[3], f[4]}\n";

/*
 * ARGV: id, field ("v:" + name), value, max_vars. Three metadata fields are always present, and
 * "owner" and "worker" when set. HEXISTS runs only at the quota, where a new field would be one
 * too many but an overwrite is allowed. The field starts with "v:", so it is never "accessed".
 */
static const char script_put_var[] = LUA_PRELUDE
    "local f = redis.call('HMGET', KEYS[1], 'ttl', 'owner', 'worker')\n"
    "if not f[1] then return {1} end\n"
    "local meta = 3\n"
    "if f[2] then meta = meta + 1 end\n"
    "if f[3] then meta = meta + 1 end\n"
    "if redis.call('HLEN', KEYS[1]) - meta >= tonumber(ARGV[4])\n"
    "   and redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0 then\n"
    "  return {3}\n"
    "end\n"
    "local now = now_ms()\n"
    "redis.call('HSET', KEYS[1], ARGV[2], ARGV[3], 'accessed', string.format('%d', now))\n"
    "renew(f[1], now)\n"
    "return {0}\n";

/* ARGV: id, field. A read of a missing variable still counts as an access. */
static const char script_get_var[] = LUA_PRELUDE
    "local f = redis.call('HMGET', KEYS[1], 'ttl', ARGV[2])\n"
    "if not f[1] then return {1} end\n"
    "access(f[1])\n"
    "if not f[2] then return {2} end\n"
    "return {0, f[2]}\n";

/* ARGV: id. Reads every field without counting as an access. A session hash is never empty. */
static const char script_dump[] =
    "local fields = redis.call('HGETALL', KEYS[1])\n"
    "if #fields == 0 then return {1} end\n"
    "return {0, fields}\n";

/* ARGV: id. */
static const char script_delete[] =
    "redis.call('ZREM', KEYS[2], ARGV[1])\n"
    "if redis.call('DEL', KEYS[1]) == 0 then return {1} end\n"
    "return {0}\n";

/* ARGV: id. */
static const char script_touch[] = LUA_PRELUDE
    "local ttl = redis.call('HGET', KEYS[1], 'ttl')\n"
    "if not ttl then return {1} end\n"
    "access(ttl)\n"
    "return {0}\n";

/* ARGV: id, worker id ("" for none). */
static const char script_set_worker[] = LUA_PRELUDE
    "local ttl = redis.call('HGET', KEYS[1], 'ttl')\n"
    "if not ttl then return {1} end\n"
    "if ARGV[2] == '' then\n"
    "  redis.call('HDEL', KEYS[1], 'worker')\n"
    "  access(ttl)\n"
    "  return {0}\n"
    "end\n"
    "local now = now_ms()\n"
    "redis.call('HSET', KEYS[1], 'worker', ARGV[2], 'accessed', string.format('%d', now))\n"
    "renew(ttl, now)\n"
    "return {0}\n";

/* KEYS[1]: the expiry index. */
static const char script_count_sessions[] = LUA_PRELUDE
    "return redis.call('ZCOUNT', KEYS[1], '(' .. string.format('%d', now_ms()), '+inf')\n";

/* KEYS[1]: the expiry index. An entry at or before now belongs to a hash Redis expired. */
static const char script_expire[] = LUA_PRELUDE
    "return redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now_ms()))\n";

/*
 * One batch of store_delete_by_owner(). KEYS[1]: the expiry index. ARGV: SCAN cursor, MATCH
 * pattern, COUNT, owner, length of the session key prefix. Returns {next cursor, deleted}.
 */
static const char script_delete_by_owner[] =
    "local r = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])\n"
    "local n = 0\n"
    "for _, key in ipairs(r[2]) do\n"
    "  local owner = redis.pcall('HGET', key, 'owner')\n"
    "  if owner == ARGV[4] then\n"
    "    redis.call('DEL', key)\n"
    "    redis.call('ZREM', KEYS[1], string.sub(key, tonumber(ARGV[5]) + 1))\n"
    "    n = n + 1\n"
    "  end\n"
    "end\n"
    "return {r[1], n}\n";

static const char *const scripts[STORE_REDIS_SCRIPTS] = {
    [STORE_REDIS_SCRIPT_CREATE] = script_create,
    [STORE_REDIS_SCRIPT_GET] = script_get,
    [STORE_REDIS_SCRIPT_PUT_VAR] = script_put_var,
    [STORE_REDIS_SCRIPT_GET_VAR] = script_get_var,
    [STORE_REDIS_SCRIPT_DUMP] = script_dump,
    [STORE_REDIS_SCRIPT_DELETE] = script_delete,
    [STORE_REDIS_SCRIPT_TOUCH] = script_touch,
    [STORE_REDIS_SCRIPT_SET_WORKER] = script_set_worker,
    [STORE_REDIS_SCRIPT_COUNT_SESSIONS] = script_count_sessions,
    [STORE_REDIS_SCRIPT_EXPIRE] = script_expire,
    [STORE_REDIS_SCRIPT_DELETE_BY_OWNER] = script_delete_by_owner,
};

const char *store_redis_script_text(StoreRedisScript script)
{
    return scripts[script];
}
