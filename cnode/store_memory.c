/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The memory session store. Sessions live in a chained hash table keyed by id, hashed with
 * SipHash-2-4 under a random key so that peers cannot choose ids that collide. A binary min-heap
 * of expiry times finds the expired sessions without scanning all of them. Each session stores
 * its heap slot, so an access re-sorts it in O(log n). Every operation first drops the
 * sessions whose expiry has passed, so an expired session is never visible. Listing walks the
 * buckets with Redis's reverse-binary cursor, which stays valid while the table grows. Every
 * callback runs before the operation returns.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "log.h"
#include "store_memory.h"

#define MEMORY_INITIAL_BUCKETS 64u
/* Empty buckets one store_list() page may visit before it returns a short page. */
#define MEMORY_LIST_EMPTY_VISITS_PER_ID 10u

typedef struct MemoryVar {
    struct MemoryVar *next;
    size_t name_len;
    size_t value_len;
    uint8_t data[]; /* name, then value */
} MemoryVar;

typedef struct MemorySession {
    struct MemorySession *next; /* hash chain */
    uint64_t hash;
    size_t heap_slot;
    uint64_t created_ms;
    uint64_t accessed_ms;
    uint64_t expires_ms;
    uint32_t ttl_s;
    int64_t worker_id;
    char *owner; /* NULL: no owner */
    MemoryVar *vars;
    uint32_t var_count;
    uint64_t var_bytes; /* names and values of vars */
    size_t id_len;
    uint8_t id[];
} MemorySession;

typedef struct MemoryStore {
    Store base;
    StoreClockFn clock_ms;
    void *clock_data;
    uint64_t hash_key[2];
    MemorySession **buckets;
    size_t bucket_count; /* a power of two */
    size_t session_count;
    MemorySession **heap; /* min-heap on expires_ms, session_count entries */
    size_t heap_capacity;
    uint64_t expired_unreported; /* dropped since the last store_expire() */
    uint64_t var_bytes;          /* names and values of all sessions, for max_memory_bytes */
} MemoryStore;

static uint64_t rotl64(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

static void sip_round(uint64_t v[4])
{
    v[0] += v[1];
    v[1] = rotl64(v[1], 13);
    v[1] ^= v[0];
    v[0] = rotl64(v[0], 32);
    v[2] += v[3];
    v[3] = rotl64(v[3], 16);
    v[3] ^= v[2];
    v[0] += v[3];
    v[3] = rotl64(v[3], 21);
    v[3] ^= v[0];
    v[2] += v[1];
    v[1] = rotl64(v[1], 17);
    v[1] ^= v[2];
    v[2] = rotl64(v[2], 32);
}

static uint64_t load_le64(const uint8_t *p, size_t n)
{
    uint64_t x = 0;

    for (size_t i = 0; i < n; i++) {
        x |= (uint64_t)p[i] << (8 * i);
    }
    return x;
}

/* SipHash-2-4 (Aumasson and Bernstein, 2012) of `data` under the 128-bit key k[0], k[1]. */
static uint64_t siphash24(const uint64_t k[2], const uint8_t *data, size_t len)
{
    uint64_t v[4] = {
        k[0] ^ UINT64_C(0x736f6d6570736575),
        k[1] ^ UINT64_C(0x646f72616e646f6d),
        k[0] ^ UINT64_C(0x6c7967656e657261),
        k[1] ^ UINT64_C(0x7465646279746573),
    };
    size_t tail = len & 7;
    uint64_t m;

    for (size_t i = 0; i + 8 <= len; i += 8) {
        m = load_le64(data + i, 8);
        v[3] ^= m;
        sip_round(v);
        sip_round(v);
        v[0] ^= m;
    }
    m = load_le64(data + len - tail, tail) | ((uint64_t)len << 56);
    v[3] ^= m;
    sip_round(v);
    sip_round(v);
    v[0] ^= m;
    v[2] ^= 0xff;
    for (int i = 0; i < 4; i++) {
        sip_round(v);
    }
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

static MemoryStore *memory_from(Store *store)
{
    return (MemoryStore *)store;
}

static uint64_t memory_now(const MemoryStore *m)
{
    return m->clock_ms(m->clock_data);
}

static uint64_t default_clock_ms(void *clock_data)
{
    return log_now_ms();
}

/* Min-heap on expires_ms: each session's heap_slot is its index in m->heap. */

static void heap_place(MemoryStore *m, size_t slot, MemorySession *s)
{
    m->heap[slot] = s;
    s->heap_slot = slot;
}

static void heap_sift_up(MemoryStore *m, size_t slot)
{
    MemorySession *s = m->heap[slot];

    while (slot > 0) {
        size_t parent = (slot - 1) / 2;

        if (m->heap[parent]->expires_ms <= s->expires_ms) {
            break;
        }
        heap_place(m, slot, m->heap[parent]);
        slot = parent;
    }
    heap_place(m, slot, s);
}

static void heap_sift_down(MemoryStore *m, size_t slot, size_t count)
{
    MemorySession *s = m->heap[slot];

    for (;;) {
        size_t child = 2 * slot + 1;

        if (child >= count) {
            break;
        }
        if (child + 1 < count && m->heap[child + 1]->expires_ms < m->heap[child]->expires_ms) {
            child++;
        }
        if (s->expires_ms <= m->heap[child]->expires_ms) {
            break;
        }
        heap_place(m, slot, m->heap[child]);
        slot = child;
    }
    heap_place(m, slot, s);
}

/* Remove the session in `slot` from the heap, which contains `count` sessions before the call. */
static void heap_remove(MemoryStore *m, size_t slot, size_t count)
{
    MemorySession *last = m->heap[count - 1];

    if (slot == count - 1) {
        return;
    }
    heap_place(m, slot, last);
    heap_sift_up(m, slot);
    heap_sift_down(m, last->heap_slot, count - 1);
}

static int heap_reserve(MemoryStore *m, size_t count)
{
    MemorySession **heap;
    size_t capacity;

    if (count <= m->heap_capacity) {
        return 0;
    }
    capacity = m->heap_capacity != 0 ? m->heap_capacity * 2 : MEMORY_INITIAL_BUCKETS;
    heap = realloc(m->heap, capacity * sizeof(*heap));
    if (heap == NULL) {
        return -ENOMEM;
    }
    m->heap = heap;
    m->heap_capacity = capacity;
    return 0;
}

static void session_free(MemorySession *s)
{
    MemoryVar *var = s->vars;

    while (var != NULL) {
        MemoryVar *next = var->next;

        free(var);
        var = next;
    }
    free(s->owner);
    free(s);
}

static MemorySession **bucket_of(MemoryStore *m, uint64_t hash)
{
    return &m->buckets[hash & (m->bucket_count - 1)];
}

static MemorySession *session_find(MemoryStore *m, StoreBytes id)
{
    uint64_t hash = siphash24(m->hash_key, id.data, id.len);

    for (MemorySession *s = *bucket_of(m, hash); s != NULL; s = s->next) {
        if (s->hash == hash && s->id_len == id.len && memcmp(s->id, id.data, id.len) == 0) {
            return s;
        }
    }
    return NULL;
}

/* Unlink `s` from its chain and the heap and free it. */
static void session_remove(MemoryStore *m, MemorySession *s)
{
    MemorySession **link = bucket_of(m, s->hash);

    while (*link != s) {
        link = &(*link)->next;
    }
    *link = s->next;
    heap_remove(m, s->heap_slot, m->session_count);
    m->session_count--;
    m->var_bytes -= s->var_bytes;
    session_free(s);
}

/* Double the bucket array; on failure the table stays as it was, only fuller. */
static void table_grow(MemoryStore *m)
{
    size_t count = m->bucket_count * 2;
    MemorySession **buckets = calloc(count, sizeof(*buckets));

    if (buckets == NULL) {
        return;
    }
    for (size_t i = 0; i < m->bucket_count; i++) {
        MemorySession *s = m->buckets[i];

        while (s != NULL) {
            MemorySession *next = s->next;
            MemorySession **head = &buckets[s->hash & (count - 1)];

            s->next = *head;
            *head = s;
            s = next;
        }
    }
    free(m->buckets);
    m->buckets = buckets;
    m->bucket_count = count;
}

static void session_access(MemoryStore *m, MemorySession *s, uint64_t now)
{
    s->accessed_ms = now;
    s->expires_ms = now + (uint64_t)s->ttl_s * 1000;
    /* The clock never goes back, so an access only moves the expiry later: down the heap. */
    heap_sift_down(m, s->heap_slot, m->session_count);
}

/* Drop every session whose expiry is at or before now; they count for the next expire(). */
static uint64_t drop_expired(MemoryStore *m)
{
    uint64_t now = memory_now(m);

    while (m->session_count > 0 && m->heap[0]->expires_ms <= now) {
        session_remove(m, m->heap[0]);
        m->expired_unreported++;
    }
    return now;
}

/* Find a live session and record the access; NULL when there is none. */
static MemorySession *session_use(MemoryStore *m, StoreBytes id)
{
    uint64_t now = drop_expired(m);
    MemorySession *s = session_find(m, id);

    if (s != NULL) {
        session_access(m, s, now);
    }
    return s;
}

static StoreSession session_view(const MemorySession *s)
{
    return (StoreSession){
        .id = {.data = s->id, .len = s->id_len},
        .created_ms = s->created_ms,
        .accessed_ms = s->accessed_ms,
        .ttl_s = s->ttl_s,
        .owner = s->owner,
        .worker_id = s->worker_id,
    };
}

static MemorySession *session_new(StoreBytes id, uint64_t hash, uint32_t ttl_s,
                                  const char *owner, uint64_t now)
{
    MemorySession *s = calloc(1, sizeof(*s) + id.len);

    if (s == NULL) {
        return NULL;
    }
    if (owner != NULL) {
        s->owner = strdup(owner);
        if (s->owner == NULL) {
            free(s);
            return NULL;
        }
    }
    s->hash = hash;
    s->created_ms = now;
    s->accessed_ms = now;
    s->expires_ms = now + (uint64_t)ttl_s * 1000;
    s->ttl_s = ttl_s;
    s->worker_id = STORE_WORKER_NONE;
    s->id_len = id.len;
    memcpy(s->id, id.data, id.len);
    return s;
}

static void memory_create(Store *store, StoreBytes id, uint32_t ttl_s, const char *owner,
                          StoreSessionFn cb, void *userdata)
{
    MemoryStore *m = memory_from(store);
    MemorySession *s = session_use(m, id);
    MemorySession **head;
    StoreSession view;

    if (s == NULL) {
        if (m->session_count >= store->limits.max_sessions) {
            cb(-EDQUOT, NULL, userdata);
            return;
        }
        if (heap_reserve(m, m->session_count + 1) < 0) {
            cb(-ENOMEM, NULL, userdata);
            return;
        }
        s = session_new(id, siphash24(m->hash_key, id.data, id.len), ttl_s, owner,
                        memory_now(m));
        if (s == NULL) {
            cb(-ENOMEM, NULL, userdata);
            return;
        }
        head = bucket_of(m, s->hash);
        s->next = *head;
        *head = s;
        m->heap[m->session_count] = s;
        s->heap_slot = m->session_count;
        m->session_count++;
        heap_sift_up(m, s->heap_slot);
        if (m->session_count > m->bucket_count) {
            table_grow(m);
        }
    }
    view = session_view(s);
    cb(0, &view, userdata);
}

static void memory_get(Store *store, StoreBytes id, StoreSessionFn cb, void *userdata)
{
    MemorySession *s = session_use(memory_from(store), id);
    StoreSession view;

    if (s == NULL) {
        cb(-ENOENT, NULL, userdata);
        return;
    }
    view = session_view(s);
    cb(0, &view, userdata);
}

static MemoryVar **var_link(MemorySession *s, StoreBytes name)
{
    MemoryVar **link = &s->vars;

    while (*link != NULL) {
        MemoryVar *var = *link;

        if (var->name_len == name.len && memcmp(var->data, name.data, name.len) == 0) {
            break;
        }
        link = &var->next;
    }
    return link;
}

/* NOTE: variables are a linked list, so a lookup is linear in the session's variable count. */
static void memory_put_var(Store *store, StoreBytes id, StoreBytes name, StoreBytes value,
                           StoreDoneFn cb, void *userdata)
{
    MemoryStore *m = memory_from(store);
    MemorySession *s = session_use(m, id);
    uint64_t old_bytes = 0;
    uint64_t new_bytes = name.len + value.len;
    MemoryVar **link;
    MemoryVar *var;

    if (s == NULL) {
        cb(-ENOENT, userdata);
        return;
    }
    link = var_link(s, name);
    if (*link == NULL && s->var_count >= store->limits.max_vars) {
        cb(-EDQUOT, userdata);
        return;
    }
    if (*link != NULL) {
        old_bytes = (*link)->name_len + (*link)->value_len;
    }
    if (m->var_bytes - old_bytes + new_bytes > store->limits.max_memory_bytes) {
        cb(-EDQUOT, userdata);
        return;
    }
    var = malloc(sizeof(*var) + name.len + value.len);
    if (var == NULL) {
        cb(-ENOMEM, userdata);
        return;
    }
    var->name_len = name.len;
    var->value_len = value.len;
    memcpy(var->data, name.data, name.len);
    memcpy(var->data + name.len, value.data, value.len);
    if (*link != NULL) {
        var->next = (*link)->next;
        free(*link);
    } else {
        var->next = NULL;
        s->var_count++;
    }
    *link = var;
    s->var_bytes += new_bytes - old_bytes;
    m->var_bytes += new_bytes - old_bytes;
    cb(0, userdata);
}

static void memory_get_var(Store *store, StoreBytes id, StoreBytes name, StoreValueFn cb,
                           void *userdata)
{
    MemorySession *s = session_use(memory_from(store), id);
    MemoryVar *var;

    if (s == NULL || (var = *var_link(s, name)) == NULL) {
        cb(-ENOENT, (StoreBytes){0}, userdata);
        return;
    }
    cb(0, (StoreBytes){.data = var->data + var->name_len, .len = var->value_len}, userdata);
}

static void memory_dump(Store *store, StoreBytes id, StoreDumpFn cb, void *userdata)
{
    MemoryStore *m = memory_from(store);
    MemorySession *s;
    StoreSession view;
    StoreVar *vars;
    size_t count = 0;

    drop_expired(m);
    s = session_find(m, id);
    if (s == NULL) {
        cb(-ENOENT, NULL, NULL, 0, userdata);
        return;
    }
    vars = calloc(s->var_count + 1, sizeof(*vars));
    if (vars == NULL) {
        cb(-ENOMEM, NULL, NULL, 0, userdata);
        return;
    }
    for (const MemoryVar *var = s->vars; var != NULL; var = var->next) {
        vars[count++] = (StoreVar){
            .name = {.data = var->data, .len = var->name_len},
            .value = {.data = var->data + var->name_len, .len = var->value_len},
        };
    }
    view = session_view(s);
    cb(0, &view, vars, count, userdata);
    free(vars);
}

static void memory_delete(Store *store, StoreBytes id, StoreDoneFn cb, void *userdata)
{
    MemoryStore *m = memory_from(store);
    MemorySession *s;

    drop_expired(m);
    s = session_find(m, id);
    if (s == NULL) {
        cb(-ENOENT, userdata);
        return;
    }
    session_remove(m, s);
    cb(0, userdata);
}

static void memory_touch(Store *store, StoreBytes id, StoreDoneFn cb, void *userdata)
{
    cb(session_use(memory_from(store), id) != NULL ? 0 : -ENOENT, userdata);
}

static void memory_set_worker(Store *store, StoreBytes id, int64_t worker_id, StoreDoneFn cb,
                              void *userdata)
{
    MemorySession *s = session_use(memory_from(store), id);

    if (s == NULL) {
        cb(-ENOENT, userdata);
        return;
    }
    s->worker_id = worker_id;
    cb(0, userdata);
}

static uint64_t reverse_bits(uint64_t x)
{
    uint64_t r = 0;

    for (int i = 0; i < 64; i++) {
        r = (r << 1) | (x & 1);
        x >>= 1;
    }
    return r;
}

/*
 * Advance a cursor under `mask` by incrementing its bit-reversed value. Buckets are visited in
 * an order in which, after the table doubles, the buckets already visited map exactly to the
 * new buckets already visited; 0 means every bucket was visited.
 */
static uint64_t cursor_next(uint64_t cursor, uint64_t mask)
{
    cursor |= ~mask;
    cursor = reverse_bits(cursor);
    cursor++;
    return reverse_bits(cursor);
}

static size_t chain_length(const MemorySession *s)
{
    size_t n = 0;

    for (; s != NULL; s = s->next) {
        n++;
    }
    return n;
}

static void memory_list(Store *store, uint64_t cursor, uint32_t limit, StoreListFn cb,
                        void *userdata)
{
    MemoryStore *m = memory_from(store);
    uint64_t mask;
    size_t count = 0;
    size_t capacity = limit;
    size_t empty_budget = (size_t)limit * MEMORY_LIST_EMPTY_VISITS_PER_ID;
    StoreBytes *ids;

    drop_expired(m);
    mask = m->bucket_count - 1;
    ids = malloc(capacity * sizeof(*ids));
    if (ids == NULL) {
        cb(-ENOMEM, NULL, 0, 0, userdata);
        return;
    }
    do {
        MemorySession *s = m->buckets[cursor & mask];
        size_t length = chain_length(s);

        if (length == 0 && empty_budget-- == 0) {
            break;
        }
        /* A page ends before a bucket that would overflow it, unless the page is empty. */
        if (count > 0 && count + length > limit) {
            break;
        }
        if (count + length > capacity) {
            StoreBytes *grown = realloc(ids, (count + length) * sizeof(*ids));

            if (grown == NULL) {
                free(ids);
                cb(-ENOMEM, NULL, 0, 0, userdata);
                return;
            }
            ids = grown;
            capacity = count + length;
        }
        for (; s != NULL; s = s->next) {
            ids[count++] = (StoreBytes){.data = s->id, .len = s->id_len};
        }
        cursor = cursor_next(cursor, mask);
    } while (cursor != 0 && count < limit);
    cb(0, ids, count, cursor, userdata);
    free(ids);
}

static void memory_expire(Store *store, StoreCountFn cb, void *userdata)
{
    MemoryStore *m = memory_from(store);
    uint64_t expired;

    drop_expired(m);
    expired = m->expired_unreported;
    m->expired_unreported = 0;
    cb(0, expired, userdata);
}

static void memory_delete_by_owner(Store *store, const char *owner, StoreCountFn cb,
                                   void *userdata)
{
    MemoryStore *m = memory_from(store);
    uint64_t deleted = 0;

    drop_expired(m);
    for (size_t i = 0; i < m->bucket_count; i++) {
        MemorySession *s = m->buckets[i];

        while (s != NULL) {
            MemorySession *next = s->next;

            if (s->owner != NULL && strcmp(s->owner, owner) == 0) {
                session_remove(m, s);
                deleted++;
            }
            s = next;
        }
    }
    cb(0, deleted, userdata);
}

static void memory_count(Store *store, StoreCountFn cb, void *userdata)
{
    MemoryStore *m = memory_from(store);

    drop_expired(m);
    cb(0, m->session_count, userdata);
}

static bool memory_is_available(Store *store)
{
    return true;
}

static void memory_free(Store *store)
{
    MemoryStore *m = memory_from(store);

    for (size_t i = 0; i < m->bucket_count; i++) {
        MemorySession *s = m->buckets[i];

        while (s != NULL) {
            MemorySession *next = s->next;

            session_free(s);
            s = next;
        }
    }
    free(m->buckets);
    free(m->heap);
    free(m);
}

static const StoreOps memory_ops = {
    .name = "memory",
    .create = memory_create,
    .get = memory_get,
    .put_var = memory_put_var,
    .get_var = memory_get_var,
    .dump = memory_dump,
    .delete_session = memory_delete,
    .touch = memory_touch,
    .set_worker = memory_set_worker,
    .list = memory_list,
    .expire = memory_expire,
    .delete_by_owner = memory_delete_by_owner,
    .count = memory_count,
    .is_available = memory_is_available,
    .free = memory_free,
};

int store_memory_new(const StoreConfig *config, const StoreLimits *limits, Store **out)
{
    MemoryStore *m = calloc(1, sizeof(*m));

    if (m == NULL) {
        return -ENOMEM;
    }
    m->buckets = calloc(MEMORY_INITIAL_BUCKETS, sizeof(*m->buckets));
    if (m->buckets == NULL) {
        free(m);
        return -ENOMEM;
    }
    m->bucket_count = MEMORY_INITIAL_BUCKETS;
    /* A hash key that is not random only weakens flooding resistance, so a failure is not fatal. */
    if (getrandom(m->hash_key, sizeof(m->hash_key), GRND_NONBLOCK) != sizeof(m->hash_key)) {
        m->hash_key[0] = (uint64_t)(uintptr_t)m ^ log_now_ms();
        m->hash_key[1] = rotl64(m->hash_key[0], 29) ^ UINT64_C(0x9e3779b97f4a7c15);
    }
    m->base.ops = &memory_ops;
    m->base.limits = *limits;
    m->clock_ms = config->clock_ms != NULL ? config->clock_ms : default_clock_ms;
    m->clock_data = config->clock_data;
    *out = &m->base;
    return 0;
}
