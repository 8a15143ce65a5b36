/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The session store: one asynchronous interface with two backends, "memory" (a hash table in
 * the daemon, the default) and "redis" (one Redis hash per session, shared by several daemons).
 *
 * A session has a binary id, created and last-access times in milliseconds, a TTL in seconds,
 * an optional owner node name, the id of the worker it prefers, and variables: binary name ->
 * value. Values are opaque bytes (the daemon stores external term format); the store never
 * decodes them.
 *
 * Every operation takes a completion callback and a userdata pointer and invokes the callback
 * exactly once. The memory backend invokes it before the call returns. The Redis backend invokes
 * it later from the libev loop, or before the call returns when it rejects the call at once
 * (invalid arguments, store disconnected, out of memory). No operation blocks the loop.
 * A process with a Redis store must ignore SIGPIPE: hiredis 0.14 writes with write(2), so a
 * connection that Redis closed would otherwise kill the process instead of failing the call.
 *
 * Status codes passed to callbacks are 0 or a negative errno:
 *   -ENOENT     the session (or, for store_get_var(), the variable) does not exist or has expired
 *   -EDQUOT     a quota is reached: StoreConfig.max_sessions on create, StoreConfig.max_vars
 *               on store_put_var() of a new variable, or (memory backend only)
 *               StoreConfig.max_memory_bytes on store_put_var()
 *   -E2BIG      the value is longer than StoreConfig.max_value_bytes
 *   -EINVAL     an id, name, owner, TTL, page limit or worker id is out of range (limits below)
 *   -ENOTCONN   the store is unavailable (Redis disconnected); it reconnects on its own
 *   -ETIMEDOUT  Redis did not reply within StoreConfig.command_timeout_ms
 *   -ENOMEM     out of memory, in the daemon or in Redis (used_memory over maxmemory)
 *   -EBUSY      Redis is loading its dataset or running a long script; retry later
 *   -EROFS      the Redis URL names a read-only replica
 *   -ECANCELED  the store was freed while the operation was pending
 *   -EPROTO     Redis sent a reply this code does not understand (a bug or a foreign key)
 *
 * Ownership: every pointer passed into a store function is borrowed for the duration of the
 * call only, and the store copies what it keeps. store_new() states its two exceptions. Every pointer passed to a callback is borrowed and
 * valid until the callback returns or until the next call into the same store, whichever comes
 * first: copy what you need. A callback may start new store operations. Neither an operation's
 * callback nor StoreConfig.on_event may call store_free().
 *
 * Access rule: every operation on one session except delete and dump counts as an access. It
 * sets the last-access time to now and the expiry to now + TTL (a sliding TTL).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ev_loop;

/* Limits on the inputs a peer controls. store.c checks each one before it calls the backend. */
#define STORE_ID_MAX_BYTES 256       /* session id: 1 to 256 bytes, any byte values */
#define STORE_NAME_MAX_BYTES 256     /* variable name: 1 to 256 bytes, any byte values */
#define STORE_OWNER_MAX_BYTES 1023   /* owner node name: 1 to 1023 bytes, a C string */
#define STORE_TTL_MAX_S 31536000u    /* TTL: at most 365 days */
#define STORE_LIST_MAX_LIMIT 1000u   /* store_list() page size: 1 to 1000 */

/* Defaults that a zero in StoreConfig selects. */
#define STORE_DEFAULT_TTL_S 3600u
#define STORE_DEFAULT_MAX_SESSIONS 10000u
/* 8 MiB: far below the 64 MiB default message limit, so a stored value always fits a reply. */
#define STORE_DEFAULT_MAX_VALUE_BYTES (8u * 1024u * 1024u)
#define STORE_DEFAULT_MAX_VARS 1024u
/* 1 GiB of variable names and values in the memory backend, all sessions together. */
#define STORE_DEFAULT_MAX_MEMORY_BYTES (UINT64_C(1) << 30)
#define STORE_DEFAULT_CONNECT_TIMEOUT_MS 2000u
#define STORE_DEFAULT_COMMAND_TIMEOUT_MS 5000u
#define STORE_DEFAULT_KEY_PREFIX "snakepit:"

/* StoreSession.worker_id and store_set_worker() value meaning "no preferred worker". */
#define STORE_WORKER_NONE INT64_C(-1)

/* A byte string that is not NUL-terminated: ids, variable names and values. */
typedef struct StoreBytes {
    const uint8_t *data; /* borrowed */
    size_t len;
} StoreBytes;

/* A view of one session, passed to StoreSessionFn. */
typedef struct StoreSession {
    StoreBytes id;        /* borrowed */
    uint64_t created_ms;  /* in the backend's clock, see StoreConfig.clock_ms */
    uint64_t accessed_ms; /* last access, same clock */
    uint32_t ttl_s;       /* idle time after which the session expires */
    const char *owner;    /* borrowed, NUL-terminated; NULL when the session has no owner */
    int64_t worker_id;    /* STORE_WORKER_NONE when no worker is recorded */
} StoreSession;

/* One variable of a session, passed to StoreDumpFn. */
typedef struct StoreVar {
    StoreBytes name;  /* borrowed */
    StoreBytes value; /* borrowed */
} StoreVar;

/* Options of store_create(); a NULL pointer selects all defaults. */
typedef struct StoreCreateOpts {
    uint32_t ttl_s;    /* 0: StoreConfig.default_ttl_s; at most STORE_TTL_MAX_S */
    const char *owner; /* borrowed; NULL: no owner, the session survives every node-down */
} StoreCreateOpts;

/* Backend connection events, see StoreConfig.on_event. */
typedef enum {
    STORE_EVENT_UP,             /* connected and ready: operations work */
    STORE_EVENT_DOWN,           /* the connection was lost; operations fail with -ENOTCONN */
    STORE_EVENT_CONNECT_FAILED, /* one reconnect attempt failed; the next comes with backoff */
} StoreEvent;

typedef struct Store Store;

typedef void (*StoreSessionFn)(int status, const StoreSession *session, void *userdata);
typedef void (*StoreDoneFn)(int status, void *userdata);
typedef void (*StoreValueFn)(int status, StoreBytes value, void *userdata);
typedef void (*StoreCountFn)(int status, uint64_t count, void *userdata);
/* `ids` is a borrowed array of `count` borrowed ids; next_cursor 0 means the listing is done. */
typedef void (*StoreListFn)(int status, const StoreBytes *ids, size_t count, uint64_t next_cursor,
                            void *userdata);
/* `vars` is a borrowed array of `var_count` variables, in no particular order. */
typedef void (*StoreDumpFn)(int status, const StoreSession *session, const StoreVar *vars,
                            size_t var_count, void *userdata);
/* Milliseconds of a monotonic clock. */
typedef uint64_t (*StoreClockFn)(void *clock_data);
/* `detail` is a borrowed human-readable cause (for example hiredis's message) or NULL. */
typedef void (*StoreEventFn)(StoreEvent event, int error, const char *detail, void *event_data);

/*
 * Store configuration. Zero or NULL fields select the defaults above. All pointers are borrowed
 * by store_new() (it copies the strings), except the callbacks' data pointers, which must stay
 * valid until store_free().
 */
typedef struct StoreConfig {
    const char *backend;    /* "memory" or "redis"; NULL: "memory" */
    const char *url;        /* redis: redis://[:password@]host[:port][/db]; port 6379, db 0 */
    const char *key_prefix; /* redis: prefix of every key; NULL: STORE_DEFAULT_KEY_PREFIX */
    uint32_t default_ttl_s;
    uint64_t max_sessions; /* live sessions; redis counts all daemons sharing the prefix */
    size_t max_value_bytes;
    uint32_t max_vars; /* variables per session */
    /* Memory backend: bytes of variable names and values of all sessions together. Redis
     * ignores it: bound Redis with its maxmemory setting. */
    uint64_t max_memory_bytes;
    uint32_t connect_timeout_ms;
    uint32_t command_timeout_ms;
    /*
     * Memory backend clock; NULL: CLOCK_MONOTONIC in ms. Tests pass their own to move time.
     * Memory timestamps are in this clock. Redis timestamps are Unix time in ms from the
     * Redis server's TIME.
     */
    StoreClockFn clock_ms;
    void *clock_data;
    /* Redis connection events (memory never reports any); NULL: not reported. */
    StoreEventFn on_event;
    void *event_data;
} StoreConfig;

/*
 * The store handle. Backends embed it as their first member; callers use only the functions
 * below. `limits` contains the resolved values of the config (defaults applied).
 */
typedef struct StoreLimits {
    uint32_t default_ttl_s;
    uint64_t max_sessions;
    size_t max_value_bytes;
    uint32_t max_vars;
    uint64_t max_memory_bytes;
} StoreLimits;

typedef struct StoreOps StoreOps;

struct Store {
    const StoreOps *ops; /* borrowed, static */
    StoreLimits limits;
};

/*
 * A backend's function table. store.c has already checked every argument against the limits
 * above and against `limits`, so a backend only implements the operation.
 */
struct StoreOps {
    const char *name; /* "memory" or "redis" */
    void (*create)(Store *store, StoreBytes id, uint32_t ttl_s, const char *owner,
                   StoreSessionFn cb, void *userdata);
    void (*get)(Store *store, StoreBytes id, StoreSessionFn cb, void *userdata);
    void (*put_var)(Store *store, StoreBytes id, StoreBytes name, StoreBytes value, StoreDoneFn cb,
                    void *userdata);
    void (*get_var)(Store *store, StoreBytes id, StoreBytes name, StoreValueFn cb, void *userdata);
    void (*dump)(Store *store, StoreBytes id, StoreDumpFn cb, void *userdata);
    void (*delete_session)(Store *store, StoreBytes id, StoreDoneFn cb, void *userdata);
    void (*touch)(Store *store, StoreBytes id, StoreDoneFn cb, void *userdata);
    void (*set_worker)(Store *store, StoreBytes id, int64_t worker_id, StoreDoneFn cb,
                       void *userdata);
    void (*list)(Store *store, uint64_t cursor, uint32_t limit, StoreListFn cb, void *userdata);
    void (*expire)(Store *store, StoreCountFn cb, void *userdata);
    void (*delete_by_owner)(Store *store, const char *owner, StoreCountFn cb, void *userdata);
    void (*count)(Store *store, StoreCountFn cb, void *userdata);
    bool (*is_available)(Store *store);
    void (*free)(Store *store);
};

/*
 * Create a store for `config` on `loop` (borrowed; it must outlive the store). Returns 0 and
 * sets *out to a new store, -EINVAL for an unknown backend, a bad Redis URL or a config value
 * out of range, or -ENOMEM. A Redis store starts disconnected and connects from the loop: until
 * it reports STORE_EVENT_UP, operations fail with -ENOTCONN. *out is written only on success.
 */
int store_new(const StoreConfig *config, struct ev_loop *loop, Store **out);

/*
 * Free the store. Pending operations complete with -ECANCELED before this returns. Accepts
 * NULL. Must not be called from inside a store callback.
 */
void store_free(Store *store);

/* Returns the backend name, "memory" or "redis" (static). */
const char *store_backend_name(const Store *store);

/* Returns true when operations can reach the backend (memory: always). */
bool store_is_available(Store *store);

/*
 * Create a session, or find the one with this id: creating twice is not an error, and the
 * second call returns the existing session unchanged apart from the access (its TTL and owner
 * stay). -EDQUOT when max_sessions live sessions exist and this id is not one of them.
 */
void store_create(Store *store, StoreBytes id, const StoreCreateOpts *opts, StoreSessionFn cb,
                  void *userdata);

/* Look up a session; -ENOENT when there is none. */
void store_get(Store *store, StoreBytes id, StoreSessionFn cb, void *userdata);

/* Set variable `name` to `value` (copied; an empty value is allowed). -ENOENT: no session. */
void store_put_var(Store *store, StoreBytes id, StoreBytes name, StoreBytes value,
                   StoreDoneFn cb, void *userdata);

/* Read variable `name`; -ENOENT when the session or the variable does not exist. */
void store_get_var(Store *store, StoreBytes id, StoreBytes name, StoreValueFn cb, void *userdata);

/*
 * Read a session with all its variables, for export and migration; -ENOENT when there is none.
 * Unlike every other operation on one session this is not an access: the expiry stays.
 */
void store_dump(Store *store, StoreBytes id, StoreDumpFn cb, void *userdata);

/* Delete a session and its variables; -ENOENT when there was none (callers may treat it as ok). */
void store_delete(Store *store, StoreBytes id, StoreDoneFn cb, void *userdata);

/* Record an access without reading anything; -ENOENT when there is no session. */
void store_touch(Store *store, StoreBytes id, StoreDoneFn cb, void *userdata);

/* Record the session's preferred worker, or STORE_WORKER_NONE to clear it (>= -1). */
void store_set_worker(Store *store, StoreBytes id, int64_t worker_id, StoreDoneFn cb,
                      void *userdata);

/*
 * List session ids a page at a time, in no particular order: pass cursor 0 first, then the
 * next_cursor of the previous page, until next_cursor is 0. These are Redis SCAN semantics for
 * both backends. `limit` (1 to STORE_LIST_MAX_LIMIT) is the target page size: a page may
 * contain a few ids more or fewer, and may be empty before the end. A session that exists
 * during the whole listing is returned at least once. One created or deleted meanwhile may be
 * missed, and an id may repeat when the store grew meanwhile. Listing is not an access.
 */
void store_list(Store *store, uint64_t cursor, uint32_t limit, StoreListFn cb, void *userdata);

/*
 * Drop the sessions that are idle past their TTL and report how many were dropped. Call it
 * periodically (each second, say) for both backends. Memory: frees them; expired sessions are
 * never returned even before this runs. Redis: Redis itself deletes the expired hashes, and
 * this prunes the expiry index kept for counting and quotas. Each expired session is counted
 * by the one daemon that prunes it.
 */
void store_expire(Store *store, StoreCountFn cb, void *userdata);

/*
 * Delete every session whose owner is `owner` (for cleanup after a node went down and its
 * grace period passed) and report how many were deleted. Takes time linear in the number of
 * sessions; Redis runs it as a series of SCAN batches, so sessions created meanwhile may stay.
 */
void store_delete_by_owner(Store *store, const char *owner, StoreCountFn cb, void *userdata);

/* Report the number of live sessions (not yet expired). */
void store_count(Store *store, StoreCountFn cb, void *userdata);

/* Returns a StoreBytes over the NUL-terminated string `s` (borrowed, without the NUL). */
StoreBytes store_bytes_str(const char *s);
