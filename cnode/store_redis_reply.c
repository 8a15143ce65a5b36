/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Parsers of the Redis session store's replies: the array replies of the Lua scripts in
 * store_redis_script.c and SCAN replies, turned into StoreSession, StoreVar and StoreBytes views
 * of the reply. Any reply of another shape is -EPROTO, never a crash or a partial result.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store_redis_reply.h"
#include "store_redis_script.h"

bool store_redis_reply_u64(const redisReply *r, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (r->type == REDIS_REPLY_INTEGER && r->integer >= 0) {
        *out = (uint64_t)r->integer;
        return true;
    }
    if (r->type != REDIS_REPLY_STRING || r->len == 0 || r->str[0] < '0' || r->str[0] > '9') {
        return false;
    }
    errno = 0;
    v = strtoull(r->str, &end, 10);
    if (errno != 0 || end != r->str + r->len) {
        return false;
    }
    *out = v;
    return true;
}

int store_redis_reply_error(const redisReply *r)
{
    static const struct {
        const char *prefix;
        int error;
    } errors[] = {
        {"OOM ", -ENOMEM},       /* used_memory is over maxmemory */
        {"LOADING ", -EBUSY},    /* loading its dataset after a restart */
        {"BUSY ", -EBUSY},       /* running a long script */
        {"MASTERDOWN ", -EBUSY}, /* a replica that lost its master */
        {"READONLY ", -EROFS},   /* a read-only replica */
    };

    for (size_t i = 0; i < sizeof(errors) / sizeof(errors[0]); i++) {
        if (strncmp(r->str, errors[i].prefix, strlen(errors[i].prefix)) == 0) {
            return errors[i].error;
        }
    }
    return -EPROTO;
}

int store_redis_reply_status(const redisReply *r)
{
    if (r->type == REDIS_REPLY_ERROR) {
        return store_redis_reply_error(r);
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_INTEGER) {
        return -EPROTO;
    }
    switch (r->element[0]->integer) {
    case STORE_REDIS_LUA_OK:
        return 0;
    case STORE_REDIS_LUA_NO_SESSION:
    case STORE_REDIS_LUA_NO_VARIABLE:
        return -ENOENT;
    case STORE_REDIS_LUA_QUOTA:
        return -EDQUOT;
    default:
        return -EPROTO;
    }
}

static bool parse_ttl(const redisReply *r, uint32_t *out)
{
    uint64_t ttl_s;

    if (!store_redis_reply_u64(r, &ttl_s) || ttl_s > STORE_TTL_MAX_S) {
        return false;
    }
    *out = (uint32_t)ttl_s;
    return true;
}

static bool parse_worker(const redisReply *r, int64_t *out)
{
    uint64_t worker;

    if (!store_redis_reply_u64(r, &worker) || worker > INT64_MAX) {
        return false;
    }
    *out = (int64_t)worker;
    return true;
}

int store_redis_reply_session(const redisReply *r, StoreBytes id, StoreSession *out)
{
    StoreSession session = {.id = id, .worker_id = STORE_WORKER_NONE};
    const redisReply *owner;
    const redisReply *worker;
    int status = store_redis_reply_status(r);

    if (status < 0) {
        return status;
    }
    if (r->elements != 6 || !store_redis_reply_u64(r->element[1], &session.created_ms) ||
        !store_redis_reply_u64(r->element[2], &session.accessed_ms) ||
        !parse_ttl(r->element[3], &session.ttl_s)) {
        return -EPROTO;
    }
    owner = r->element[4];
    if (owner->type == REDIS_REPLY_STRING) {
        session.owner = owner->str;
    } else if (owner->type != REDIS_REPLY_NIL) {
        return -EPROTO;
    }
    worker = r->element[5];
    if (worker->type != REDIS_REPLY_NIL && !parse_worker(worker, &session.worker_id)) {
        return -EPROTO;
    }
    *out = session;
    return 0;
}

static bool field_is(const redisReply *field, const char *name)
{
    return field->len == strlen(name) && memcmp(field->str, name, field->len) == 0;
}

/* Fill `session` or the next of `vars` from one field of a session hash; false if malformed. */
static bool dump_field(const redisReply *field, const redisReply *value, StoreSession *session,
                       StoreVar *vars, size_t *var_count)
{
    if (field->len > 2 && memcmp(field->str, "v:", 2) == 0) {
        vars[(*var_count)++] = (StoreVar){
            .name = {.data = (const uint8_t *)field->str + 2, .len = field->len - 2},
            .value = {.data = (const uint8_t *)value->str, .len = value->len},
        };
        return true;
    }
    if (field_is(field, "owner")) {
        session->owner = value->str;
        return true;
    }
    if (field_is(field, "created")) {
        return store_redis_reply_u64(value, &session->created_ms);
    }
    if (field_is(field, "accessed")) {
        return store_redis_reply_u64(value, &session->accessed_ms);
    }
    if (field_is(field, "ttl")) {
        return parse_ttl(value, &session->ttl_s);
    }
    if (field_is(field, "worker")) {
        return parse_worker(value, &session->worker_id);
    }
    return true;
}

int store_redis_reply_dump(const redisReply *r, StoreBytes id, StoreSession *session,
                           StoreVar **vars, size_t *var_count)
{
    StoreSession parsed = {.id = id, .worker_id = STORE_WORKER_NONE};
    const redisReply *fields;
    StoreVar *parsed_vars;
    size_t count = 0;
    int status = store_redis_reply_status(r);

    if (status < 0) {
        return status;
    }
    if (r->elements != 2 || r->element[1]->type != REDIS_REPLY_ARRAY ||
        r->element[1]->elements % 2 != 0) {
        return -EPROTO;
    }
    fields = r->element[1];
    parsed_vars = calloc(fields->elements / 2 + 1, sizeof(*parsed_vars));
    if (parsed_vars == NULL) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < fields->elements; i += 2) {
        const redisReply *field = fields->element[i];
        const redisReply *value = fields->element[i + 1];

        if (field->type != REDIS_REPLY_STRING || value->type != REDIS_REPLY_STRING ||
            !dump_field(field, value, &parsed, parsed_vars, &count)) {
            free(parsed_vars);
            return -EPROTO;
        }
    }
    *session = parsed;
    *vars = parsed_vars;
    *var_count = count;
    return 0;
}

int store_redis_reply_value(const redisReply *r, StoreBytes *out)
{
    const redisReply *value;
    int status = store_redis_reply_status(r);

    if (status < 0) {
        return status;
    }
    if (r->elements != 2 || r->element[1]->type != REDIS_REPLY_STRING) {
        return -EPROTO;
    }
    value = r->element[1];
    *out = (StoreBytes){.data = (const uint8_t *)value->str, .len = value->len};
    return 0;
}

int store_redis_reply_scan(const redisReply *r, const char *prefix, uint64_t *cursor,
                           StoreBytes **ids, size_t *count)
{
    size_t prefix_len = strlen(prefix);
    const redisReply *keys;
    StoreBytes *parsed;
    uint64_t next;
    size_t n = 0;

    if (r->type == REDIS_REPLY_ERROR) {
        return store_redis_reply_error(r);
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        !store_redis_reply_u64(r->element[0], &next) ||
        r->element[1]->type != REDIS_REPLY_ARRAY) {
        return -EPROTO;
    }
    keys = r->element[1];
    parsed = calloc(keys->elements + 1, sizeof(*parsed));
    if (parsed == NULL) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < keys->elements; i++) {
        const redisReply *key = keys->element[i];

        /* The MATCH pattern already selects the prefix; this check guards the arithmetic. */
        if (key->type != REDIS_REPLY_STRING || key->len <= prefix_len ||
            memcmp(key->str, prefix, prefix_len) != 0) {
            continue;
        }
        parsed[n++] = (StoreBytes){.data = (const uint8_t *)key->str + prefix_len,
                                   .len = key->len - prefix_len};
    }
    *cursor = next;
    *ids = parsed;
    *count = n;
    return 0;
}
