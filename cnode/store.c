/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The session store front end. store_new() picks the backend named in the config. Each store_*
 * operation checks its arguments against the limits in store.h before it dispatches to the
 * backend's function table, so both backends reject bad input the same way.
 */
#include <errno.h>
#include <string.h>

#include "store.h"
#include "store_memory.h"
#include "store_redis.h"

static uint32_t pick_u32(uint32_t value, uint32_t fallback)
{
    return value != 0 ? value : fallback;
}

static int resolve_limits(const StoreConfig *config, StoreLimits *out)
{
    StoreLimits limits = {
        .default_ttl_s = pick_u32(config->default_ttl_s, STORE_DEFAULT_TTL_S),
        .max_sessions = config->max_sessions != 0 ? config->max_sessions
                                                  : STORE_DEFAULT_MAX_SESSIONS,
        .max_value_bytes = config->max_value_bytes != 0 ? config->max_value_bytes
                                                        : STORE_DEFAULT_MAX_VALUE_BYTES,
        .max_vars = pick_u32(config->max_vars, STORE_DEFAULT_MAX_VARS),
        .max_memory_bytes = config->max_memory_bytes != 0 ? config->max_memory_bytes
                                                          : STORE_DEFAULT_MAX_MEMORY_BYTES,
    };

    if (limits.default_ttl_s > STORE_TTL_MAX_S) {
        return -EINVAL;
    }
    *out = limits;
    return 0;
}

int store_new(const StoreConfig *config, struct ev_loop *loop, Store **out)
{
    const char *backend = config->backend != NULL ? config->backend : "memory";
    StoreLimits limits;
    int r;

    r = resolve_limits(config, &limits);
    if (r < 0) {
        return r;
    }
    if (strcmp(backend, "memory") == 0) {
        return store_memory_new(config, &limits, out);
    }
    if (strcmp(backend, "redis") == 0) {
        return store_redis_new(config, &limits, loop, out);
    }
    return -EINVAL;
}

void store_free(Store *store)
{
    if (store != NULL) {
        store->ops->free(store);
    }
}

const char *store_backend_name(const Store *store)
{
    return store->ops->name;
}

bool store_is_available(Store *store)
{
    return store->ops->is_available(store);
}

StoreBytes store_bytes_str(const char *s)
{
    return (StoreBytes){.data = (const uint8_t *)s, .len = strlen(s)};
}

static bool bytes_valid(StoreBytes bytes, size_t max_len)
{
    return bytes.data != NULL && bytes.len >= 1 && bytes.len <= max_len;
}

static bool owner_valid(const char *owner)
{
    size_t len;

    if (owner == NULL) {
        return true;
    }
    len = strnlen(owner, STORE_OWNER_MAX_BYTES + 1);
    return len >= 1 && len <= STORE_OWNER_MAX_BYTES;
}

void store_create(Store *store, StoreBytes id, const StoreCreateOpts *opts, StoreSessionFn cb,
                  void *userdata)
{
    uint32_t ttl_s = opts != NULL ? opts->ttl_s : 0;
    const char *owner = opts != NULL ? opts->owner : NULL;

    if (ttl_s == 0) {
        ttl_s = store->limits.default_ttl_s;
    }
    if (!bytes_valid(id, STORE_ID_MAX_BYTES) || ttl_s > STORE_TTL_MAX_S || !owner_valid(owner)) {
        cb(-EINVAL, NULL, userdata);
        return;
    }
    store->ops->create(store, id, ttl_s, owner, cb, userdata);
}

void store_get(Store *store, StoreBytes id, StoreSessionFn cb, void *userdata)
{
    if (!bytes_valid(id, STORE_ID_MAX_BYTES)) {
        cb(-EINVAL, NULL, userdata);
        return;
    }
    store->ops->get(store, id, cb, userdata);
}

void store_put_var(Store *store, StoreBytes id, StoreBytes name, StoreBytes value,
                   StoreDoneFn cb, void *userdata)
{
    if (!bytes_valid(id, STORE_ID_MAX_BYTES) || !bytes_valid(name, STORE_NAME_MAX_BYTES) ||
        (value.data == NULL && value.len != 0)) {
        cb(-EINVAL, userdata);
        return;
    }
    if (value.len > store->limits.max_value_bytes) {
        cb(-E2BIG, userdata);
        return;
    }
    if (value.data == NULL) {
        value.data = (const uint8_t *)"";
    }
    store->ops->put_var(store, id, name, value, cb, userdata);
}

void store_get_var(Store *store, StoreBytes id, StoreBytes name, StoreValueFn cb, void *userdata)
{
    if (!bytes_valid(id, STORE_ID_MAX_BYTES) || !bytes_valid(name, STORE_NAME_MAX_BYTES)) {
        cb(-EINVAL, (StoreBytes){0}, userdata);
        return;
    }
    store->ops->get_var(store, id, name, cb, userdata);
}

void store_dump(Store *store, StoreBytes id, StoreDumpFn cb, void *userdata)
{
    if (!bytes_valid(id, STORE_ID_MAX_BYTES)) {
        cb(-EINVAL, NULL, NULL, 0, userdata);
        return;
    }
    store->ops->dump(store, id, cb, userdata);
}

void store_delete(Store *store, StoreBytes id, StoreDoneFn cb, void *userdata)
{
    if (!bytes_valid(id, STORE_ID_MAX_BYTES)) {
        cb(-EINVAL, userdata);
        return;
    }
    store->ops->delete_session(store, id, cb, userdata);
}

void store_touch(Store *store, StoreBytes id, StoreDoneFn cb, void *userdata)
{
    if (!bytes_valid(id, STORE_ID_MAX_BYTES)) {
        cb(-EINVAL, userdata);
        return;
    }
    store->ops->touch(store, id, cb, userdata);
}

void store_set_worker(Store *store, StoreBytes id, int64_t worker_id, StoreDoneFn cb,
                      void *userdata)
{
    if (!bytes_valid(id, STORE_ID_MAX_BYTES) || worker_id < STORE_WORKER_NONE) {
        cb(-EINVAL, userdata);
        return;
    }
    store->ops->set_worker(store, id, worker_id, cb, userdata);
}

void store_list(Store *store, uint64_t cursor, uint32_t limit, StoreListFn cb, void *userdata)
{
    if (limit == 0 || limit > STORE_LIST_MAX_LIMIT) {
        cb(-EINVAL, NULL, 0, 0, userdata);
        return;
    }
    store->ops->list(store, cursor, limit, cb, userdata);
}

void store_expire(Store *store, StoreCountFn cb, void *userdata)
{
    store->ops->expire(store, cb, userdata);
}

void store_delete_by_owner(Store *store, const char *owner, StoreCountFn cb, void *userdata)
{
    if (owner == NULL || !owner_valid(owner)) {
        cb(-EINVAL, 0, userdata);
        return;
    }
    store->ops->delete_by_owner(store, owner, cb, userdata);
}

void store_count(Store *store, StoreCountFn cb, void *userdata)
{
    store->ops->count(store, cb, userdata);
}
