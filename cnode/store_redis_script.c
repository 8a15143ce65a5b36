/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Lua scripts of the Redis session store, one per operation. Each runs atomically in Redis,
 * so a check and its write cannot interleave with another daemon's. Every session script takes
 * KEYS[1] = the session hash and KEYS[2] = the expiry index, ARGV[1] = the session id, and
 * returns an array whose first element is a STORE_REDIS_LUA_* status.
 */
#include "store_redis_script.h"

/* Lua helpers shared by the scripts. KEYS[1] is the session hash, KEYS[2] the expiry index. */
#define LUA_PRELUDE                                                                           \
    "local function now_ms()\n"                                                               \
    "  local t = redis.call('TIME')\n"                                                        \
    "  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"                    \
    "end\n"                                                                                   \
    "local function access(id, now)\n"                                                        \
    "  local ttl = tonumber(redis.call('HGET', KEYS[1], 'ttl'))\n"                            \
    "  redis.call('HSET', KEYS[1], 'accessed', string.format('%d', now))\n"                   \
    "  redis.call('PEXPIRE', KEYS[1], ttl * 1000)\n"                                          \
    "  redis.call('ZADD', KEYS[2], string.format('%d', now + ttl * 1000), id)\n"              \
    "end\n"                                                                                   \
    "local function session()\n"                                                              \
    "  local f = redis.call('HMGET', KEYS[1], 'created', 'accessed', 'ttl', 'owner', 'worker')\n" \
    "  return {0, f[1], f[2], f[3], f[4], f[5]}\n"                                            \
    "end\n"

/* ARGV: id, ttl_s, owner ("" for none), max_sessions. */
const char store_redis_script_create[] = LUA_PRELUDE
    "local now = now_ms()\n"
    "if redis.call('EXISTS', KEYS[1]) == 0 then\n"
    "  local live = redis.call('ZCOUNT', KEYS[2], '(' .. string.format('%d', now), '+inf')\n"
    "  if live >= tonumber(ARGV[4]) then return {3} end\n"
    "  redis.call('HSET', KEYS[1], 'created', string.format('%d', now), 'ttl', ARGV[2])\n"
    "  if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'owner', ARGV[3]) end\n"
    "end\n"
    "access(ARGV[1], now)\n"
    "return session()\n";

/* ARGV: id. */
const char store_redis_script_get[] = LUA_PRELUDE
    "if redis.call('EXISTS', KEYS[1]) == 0 then return {1} end\n"
    "access(ARGV[1], now_ms())\n"
    "return session()\n";

/* ARGV: id, field ("v:" + name), value, max_vars. Three metadata fields are always present. */
const char store_redis_script_put_var[] = LUA_PRELUDE
    "if redis.call('EXISTS', KEYS[1]) == 0 then return {1} end\n"
    "if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0 then\n"
    "  local vars = redis.call('HLEN', KEYS[1]) - 3 - redis.call('HEXISTS', KEYS[1], 'owner')\n"
    "               - redis.call('HEXISTS', KEYS[1], 'worker')\n"
    "  if vars >= tonumber(ARGV[4]) then return {3} end\n"
    "end\n"
    "redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])\n"
    "access(ARGV[1], now_ms())\n"
    "return {0}\n";

/* ARGV: id, field. */
const char store_redis_script_get_var[] = LUA_PRELUDE
    "if redis.call('EXISTS', KEYS[1]) == 0 then return {1} end\n"
    "access(ARGV[1], now_ms())\n"
    "local v = redis.call('HGET', KEYS[1], ARGV[2])\n"
    "if not v then return {2} end\n"
    "return {0, v}\n";

/* ARGV: id. Reads every field without counting as an access. */
const char store_redis_script_dump[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then return {1} end\n"
    "return {0, redis.call('HGETALL', KEYS[1])}\n";

/* ARGV: id. */
const char store_redis_script_delete[] = LUA_PRELUDE
    "redis.call('ZREM', KEYS[2], ARGV[1])\n"
    "if redis.call('DEL', KEYS[1]) == 0 then return {1} end\n"
    "return {0}\n";

/* ARGV: id. */
const char store_redis_script_touch[] = LUA_PRELUDE
    "if redis.call('EXISTS', KEYS[1]) == 0 then return {1} end\n"
    "access(ARGV[1], now_ms())\n"
    "return {0}\n";

/* ARGV: id, worker id ("" for none). */
const char store_redis_script_set_worker[] = LUA_PRELUDE
    "if redis.call('EXISTS', KEYS[1]) == 0 then return {1} end\n"
    "if ARGV[2] == '' then redis.call('HDEL', KEYS[1], 'worker')\n"
    "else redis.call('HSET', KEYS[1], 'worker', ARGV[2]) end\n"
    "access(ARGV[1], now_ms())\n"
    "return {0}\n";

/* KEYS[1]: the expiry index. */
const char store_redis_script_count[] = LUA_PRELUDE
    "return redis.call('ZCOUNT', KEYS[1], '(' .. string.format('%d', now_ms()), '+inf')\n";

/* KEYS[1]: the expiry index. An entry at or before now belongs to a hash Redis expired. */
const char store_redis_script_expire[] = LUA_PRELUDE
    "return redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now_ms()))\n";

/*
 * One batch of store_delete_by_owner(). KEYS[1]: the expiry index. ARGV: SCAN cursor, MATCH
 * pattern, COUNT, owner, length of the session key prefix. Returns {next cursor, deleted}.
 */
const char store_redis_script_delete_by_owner[] =
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
