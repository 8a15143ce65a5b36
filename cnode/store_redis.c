/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Redis session store: one hiredis asynchronous connection on the daemon's libev loop.
 *
 * Key layout, under the configured prefix P:
 *   P session:<id>  a hash per session: "created", "accessed" (Unix ms from Redis TIME), "ttl"
 *                   (seconds), "owner" and "worker" when set, and "v:<name>" per variable.
 *                   Redis expires the hash itself: every access sets EXPIRE to the TTL.
 *   P expiry        a sorted set of session ids scored by expiry time (Unix ms). It makes the
 *                   count and the quota O(log n) without scanning keys; store_expire() prunes
 *                   the entries whose hash Redis has already expired.
 *
 * Each operation is one Lua script, so the check and the write are atomic even with several
 * daemons on the same prefix, and binary ids, names and values travel as arguments. The
 * handshake loads every script with SCRIPT LOAD, and calls send EVALSHA with the SHA1 that Redis
 * returned, so Redis neither receives nor hashes the script text on each call. A NOSCRIPT reply
 * (the cache was emptied by a restart behind a proxy, SCRIPT FLUSH or a failover) is retried
 * once as EVAL with the text, which cannot fail with NOSCRIPT and caches the script again.
 * NOTE: a retried call runs after the calls sent behind it. Two calls in flight together can
 * therefore run out of order, but only when another client cached the later call's script
 * again in between, so that it did not fail with NOSCRIPT as well.
 *
 * Connection life: DOWN -> CONNECTING (TCP connect, AUTH, SELECT, SCRIPT LOAD, PING, all within
 * the connect timeout) -> UP. Any failure goes back to DOWN and schedules a reconnect with
 * exponential backoff. While not UP every operation fails at once with -ENOTCONN. Each command
 * has a timer. When it fires, the command fails with -ETIMEDOUT and the connection is dropped,
 * because Redis replies in order and every later reply is stuck behind the missing one.
 *
 * NOTE: hiredis 0.14 resolves a host name with a blocking getaddrinfo() in redisAsyncConnect(),
 * so a URL should name an IP address or a name in /etc/hosts to keep the loop responsive.
 */
#include <errno.h>
#include <ev.h>
#include <hiredis/adapters/libev.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "store_redis.h"
#include "store_redis_command.h"
#include "store_redis_reply.h"
#include "store_redis_script.h"

#define REDIS_KEY_PREFIX_MAX_BYTES 256
#define REDIS_BACKOFF_INITIAL_MS 100
#define REDIS_BACKOFF_MAX_MS 5000
/* SCAN COUNT of one store_delete_by_owner() batch: bounds the time one script blocks Redis. */
#define REDIS_OWNER_SCAN_COUNT 256

typedef enum {
    REDIS_STATE_DOWN,
    REDIS_STATE_CONNECTING,
    REDIS_STATE_UP,
} RedisState;

typedef enum {
    OP_HANDSHAKE,
    OP_SESSION, /* create, get: the reply is a session */
    OP_DUMP,    /* dump: the reply is every field of the session hash */
    OP_DONE,    /* put_var, delete, touch, set_worker: the reply is a status */
    OP_VALUE,   /* get_var */
    OP_COUNT,   /* count, expire: an integer reply */
    OP_LIST,
    OP_DELETE_BY_OWNER,
} RedisOpKind;

typedef struct RedisStore RedisStore;

/* One operation in flight. hiredis keeps its callback from op_submit() until on_reply(). */
typedef struct RedisOp {
    RedisStore *store; /* NULL once store_free() completed the op */
    struct RedisOp *prev;
    struct RedisOp *next;
    ev_timer timer;
    RedisOpKind kind;
    bool completed; /* the user callback already ran (timeout): drop the late reply */
    bool handshake_last;
    bool loads_script;       /* OP_HANDSHAKE: SCRIPT LOAD of `script` */
    bool by_sha;             /* the script call in flight is an EVALSHA */
    StoreRedisScript script; /* the script that this op loads or calls */
    /*
     * A script call's encoded arguments, or a zeroed struct for other commands. They stay
     * until the reply so that a NOSCRIPT reply can be retried with EVAL, which means that a
     * put keeps a copy of its value while it is in flight.
     */
    StoreRedisCommandArgs script_args;
    union {
        StoreSessionFn session;
        StoreDoneFn done;
        StoreValueFn value;
        StoreCountFn count;
        StoreListFn list;
        StoreDumpFn dump;
    } cb;
    void *userdata;
    char *owner;     /* OP_DELETE_BY_OWNER: new copy */
    uint64_t total;  /* OP_DELETE_BY_OWNER: sessions deleted so far */
} RedisOp;

struct RedisStore {
    Store base;
    struct ev_loop *loop;
    StoreRedisUrl url;
    char *prefix;          /* new copy */
    char *session_prefix;  /* prefix + "session:" */
    char *index_key;       /* prefix + "expiry" */
    char *session_pattern; /* SCAN MATCH pattern: the session prefix, glob-escaped, then "*" */
    uint32_t connect_timeout_ms;
    uint32_t command_timeout_ms;
    StoreEventFn on_event;
    void *event_data;
    redisAsyncContext *ac; /* NULL when DOWN */
    RedisState state;
    bool freeing;
    uint32_t backoff_ms;
    ev_timer connect_timer;   /* connect timeout while CONNECTING */
    ev_timer reconnect_timer; /* backoff while DOWN */
    RedisOp *ops;             /* pending operations, a doubly linked list */
    /* The SHA1 of each script from SCRIPT LOAD, empty (calls use EVAL) until a load works. */
    char script_sha[STORE_REDIS_SCRIPTS][STORE_REDIS_COMMAND_SHA1_HEX_LEN + 1];
};

static RedisStore *redis_from(Store *store)
{
    return (RedisStore *)store;
}

/* hiredis's error code of a failed context, as a negative errno. */
static int hiredis_error(int err)
{
    switch (err) {
    case REDIS_ERR_IO:
        return errno > 0 ? -errno : -EIO;
    case REDIS_ERR_EOF:
        return -ECONNRESET;
    case REDIS_ERR_PROTOCOL:
        return -EPROTO;
    case REDIS_ERR_OOM:
        return -ENOMEM;
    default:
        return -EIO;
    }
}

static const char *event_name(StoreEvent event)
{
    switch (event) {
    case STORE_EVENT_UP:
        return "up";
    case STORE_EVENT_DOWN:
        return "down";
    case STORE_EVENT_CONNECT_FAILED:
        return "connect failed";
    }
    return "unknown";
}

static void report(RedisStore *s, StoreEvent event, int error, const char *detail)
{
    log_debug_errno(error, "Redis store at %s:%d %s (%s)", s->url.host, s->url.port,
                    event_name(event), detail != NULL ? detail : "no detail");
    if (s->on_event != NULL) {
        s->on_event(event, error, detail, s->event_data);
    }
}

/* Completion of operations. */

static void op_destroy(RedisOp *op)
{
    free(op->owner);
    store_redis_command_args_free(&op->script_args);
    free(op);
}

static void op_unlink(RedisStore *s, RedisOp *op)
{
    if (op->prev != NULL) {
        op->prev->next = op->next;
    } else {
        s->ops = op->next;
    }
    if (op->next != NULL) {
        op->next->prev = op->prev;
    }
    op->prev = NULL;
    op->next = NULL;
}

/* Invoke the user callback of `op` with a failure status and no result. */
static void op_call_error(RedisOp *op, int status)
{
    switch (op->kind) {
    case OP_HANDSHAKE:
        break;
    case OP_SESSION:
        op->cb.session(status, NULL, op->userdata);
        break;
    case OP_DUMP:
        op->cb.dump(status, NULL, NULL, 0, op->userdata);
        break;
    case OP_DONE:
        op->cb.done(status, op->userdata);
        break;
    case OP_VALUE:
        op->cb.value(status, (StoreBytes){0}, op->userdata);
        break;
    case OP_COUNT:
    case OP_DELETE_BY_OWNER:
        op->cb.count(status, 0, op->userdata);
        break;
    case OP_LIST:
        op->cb.list(status, NULL, 0, 0, op->userdata);
        break;
    }
}

static void op_fail(RedisOp *op, int status)
{
    op_call_error(op, status);
    op_destroy(op);
}

static RedisOp *op_new(RedisStore *s, RedisOpKind kind, void *userdata);
static void teardown(RedisStore *s, int error, const char *detail);

static void on_command_timeout(struct ev_loop *loop, ev_timer *timer, int revents)
{
    RedisOp *op = timer->data;
    RedisStore *s = op->store;

    ev_timer_stop(loop, timer);
    if (op->kind != OP_HANDSHAKE && !op->completed) {
        op->completed = true;
        op_call_error(op, -ETIMEDOUT);
    }
    /* The op stays with hiredis, which hands it back (with no reply) while tearing down. */
    teardown(s, -ETIMEDOUT, "Redis command timed out");
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata);

/* Link `op`, whose command hiredis has queued, into the pending list and start its timer. */
static void op_start(RedisStore *s, RedisOp *op)
{
    op->next = s->ops;
    if (s->ops != NULL) {
        s->ops->prev = op;
    }
    s->ops = op;
    ev_timer_init(&op->timer, on_command_timeout, s->command_timeout_ms / 1000.0, 0.0);
    op->timer.data = op;
    ev_timer_start(s->loop, &op->timer);
}

/*
 * Send one command for `op` and start its timer. On failure the op fails with -ENOTCONN and is
 * freed. The strings in argv are copied by hiredis.
 */
static void op_submit(RedisStore *s, RedisOp *op, int argc, const char **argv,
                      const size_t *lens)
{
    if (s->ac == NULL ||
        redisAsyncCommandArgv(s->ac, on_reply, op, argc, argv, lens) != REDIS_OK) {
        op_fail(op, s->freeing ? -ECANCELED : -ENOTCONN);
        return;
    }
    op_start(s, op);
}

/* op_submit() for a command already in RESP form; hiredis copies `command`. */
static void op_submit_formatted(RedisStore *s, RedisOp *op, const char *command, size_t len)
{
    if (s->ac == NULL ||
        redisAsyncFormattedCommand(s->ac, on_reply, op, command, len) != REDIS_OK) {
        op_fail(op, s->freeing ? -ECANCELED : -ENOTCONN);
        return;
    }
    op_start(s, op);
}

/* Script calls: EVALSHA, or EVAL when the SHA1 is unknown or Redis replied NOSCRIPT. */

/* Send EVALSHA from the buffer of the encoded arguments, which copies none of them. */
static void send_evalsha(RedisStore *s, RedisOp *op)
{
    size_t len;
    const char *command =
        store_redis_command_evalsha(&op->script_args, s->script_sha[op->script], &len);

    op->by_sha = true;
    op_submit_formatted(s, op, command, len);
}

/* Send EVAL with the script text: when the SHA1 is unknown, or to retry after NOSCRIPT. */
static void send_eval(RedisStore *s, RedisOp *op)
{
    size_t len;
    char *command =
        store_redis_command_eval(&op->script_args, store_redis_script_text(op->script), &len);

    if (command == NULL) {
        op_fail(op, -ENOMEM);
        return;
    }
    op->by_sha = false;
    op_submit_formatted(s, op, command, len);
    free(command);
}

/*
 * Call `script` for `op` with `argc` arguments after the script: numkeys, the keys, then ARGV.
 * On failure the op fails and is freed.
 */
static void op_submit_script(RedisStore *s, RedisOp *op, StoreRedisScript script, int argc,
                             const StoreBytes *args)
{
    StoreRedisCommandArgs encoded;

    if (store_redis_command_args_encode(argc, args, &encoded) < 0) {
        op_fail(op, -ENOMEM);
        return;
    }
    /* A store_delete_by_owner() op calls its script once per batch. */
    store_redis_command_args_free(&op->script_args);
    op->script_args = encoded;
    op->script = script;
    if (s->script_sha[script][0] != '\0') {
        send_evalsha(s, op);
    } else {
        send_eval(s, op);
    }
}

static bool is_noscript(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0;
}

static RedisOp *op_new(RedisStore *s, RedisOpKind kind, void *userdata)
{
    RedisOp *op = calloc(1, sizeof(*op));

    if (op == NULL) {
        return NULL;
    }
    op->store = s;
    op->kind = kind;
    op->userdata = userdata;
    return op;
}

/*
 * The session id of a create, get or dump is not in its reply: the op keeps it at the end of
 * its allocation. See redis_session_op().
 */
typedef struct RedisSessionOp {
    RedisOp op;
    size_t id_len;
    uint8_t id[];
} RedisSessionOp;

static StoreBytes session_op_id(const RedisOp *op)
{
    const RedisSessionOp *sop = (const RedisSessionOp *)op;

    return (StoreBytes){.data = sop->id, .len = sop->id_len};
}

static void complete_session(RedisOp *op, const redisReply *r)
{
    StoreSession session;
    int status = store_redis_reply_session(r, session_op_id(op), &session);

    op->cb.session(status, status == 0 ? &session : NULL, op->userdata);
}

static void complete_dump(RedisOp *op, const redisReply *r)
{
    StoreSession session;
    StoreVar *vars = NULL;
    size_t var_count = 0;
    int status = store_redis_reply_dump(r, session_op_id(op), &session, &vars, &var_count);

    if (status < 0) {
        op->cb.dump(status, NULL, NULL, 0, op->userdata);
        return;
    }
    op->cb.dump(0, &session, vars, var_count, op->userdata);
    free(vars);
}

static void complete_value(RedisOp *op, const redisReply *r)
{
    StoreBytes value = {0};
    int status = store_redis_reply_value(r, &value);

    op->cb.value(status, value, op->userdata);
}

static void complete_count(RedisOp *op, const redisReply *r)
{
    uint64_t count = 0;

    if (r->type == REDIS_REPLY_ERROR) {
        op->cb.count(store_redis_reply_error(r), 0, op->userdata);
        return;
    }
    if (!store_redis_reply_u64(r, &count)) {
        op->cb.count(-EPROTO, 0, op->userdata);
        return;
    }
    op->cb.count(0, count, op->userdata);
}

static void complete_list(RedisStore *s, RedisOp *op, const redisReply *r)
{
    StoreBytes *ids = NULL;
    size_t count = 0;
    uint64_t cursor = 0;
    int status = store_redis_reply_scan(r, s->session_prefix, &cursor, &ids, &count);

    if (status < 0) {
        op->cb.list(status, NULL, 0, 0, op->userdata);
        return;
    }
    op->cb.list(0, ids, count, cursor, op->userdata);
    free(ids);
}

static void submit_owner_batch(RedisStore *s, RedisOp *op, uint64_t cursor);

/* A batch reply: {next cursor, deleted}. Returns true when the op went on with a new batch. */
static bool continue_delete_by_owner(RedisStore *s, RedisOp *op, const redisReply *r)
{
    uint64_t cursor;
    uint64_t deleted;

    if (r->type == REDIS_REPLY_ERROR) {
        op->cb.count(store_redis_reply_error(r), 0, op->userdata);
        return false;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        !store_redis_reply_u64(r->element[0], &cursor) ||
        !store_redis_reply_u64(r->element[1], &deleted)) {
        op->cb.count(-EPROTO, 0, op->userdata);
        return false;
    }
    op->total += deleted;
    if (cursor == 0) {
        op->cb.count(0, op->total, op->userdata);
        return false;
    }
    submit_owner_batch(s, op, cursor);
    return true;
}

static void go_up(RedisStore *s)
{
    s->state = REDIS_STATE_UP;
    s->backoff_ms = REDIS_BACKOFF_INITIAL_MS;
    ev_timer_stop(s->loop, &s->connect_timer);
    report(s, STORE_EVENT_UP, 0, NULL);
}

/*
 * Keep the SHA1 from the reply to a SCRIPT LOAD. After any other reply (SCRIPT renamed away,
 * say) the script's calls use EVAL, and the PING that follows decides whether the store is up.
 */
static void keep_script_sha(RedisStore *s, StoreRedisScript script, const redisReply *r)
{
    if (r->type == REDIS_REPLY_STRING && r->len == STORE_REDIS_COMMAND_SHA1_HEX_LEN) {
        memcpy(s->script_sha[script], r->str, STORE_REDIS_COMMAND_SHA1_HEX_LEN);
        s->script_sha[script][STORE_REDIS_COMMAND_SHA1_HEX_LEN] = '\0';
        return;
    }
    log_debug("Redis store: SCRIPT LOAD of script %d failed (%s), its calls use EVAL",
              (int)script, r->type == REDIS_REPLY_ERROR ? r->str : "not a SHA1");
}

static void handshake_reply(RedisStore *s, RedisOp *op, const redisReply *r)
{
    if (r == NULL || s->state != REDIS_STATE_CONNECTING) {
        return;
    }
    if (op->loads_script) {
        keep_script_sha(s, op->script, r);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        int error = store_redis_reply_error(r);

        /* AUTH, SELECT or PING was rejected: a wrong password or db index, or a busy server. */
        if (error == -EPROTO) {
            error = strncmp(r->str, "ERR DB", 6) == 0 ? -EINVAL : -EACCES;
        }
        teardown(s, error, r->str);
        return;
    }
    if (op->handshake_last) {
        go_up(s);
    }
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    RedisOp *op = privdata;
    RedisStore *s = op->store;
    const redisReply *r = reply;

    if (s == NULL) {
        op_destroy(op);
        return;
    }
    ev_timer_stop(s->loop, &op->timer);
    op_unlink(s, op);
    if (op->completed) {
        op_destroy(op);
        return;
    }
    if (op->kind == OP_HANDSHAKE) {
        handshake_reply(s, op, r);
        op_destroy(op);
        return;
    }
    if (r == NULL) {
        op_fail(op, s->freeing ? -ECANCELED : -ENOTCONN);
        return;
    }
    if (op->by_sha && is_noscript(r)) {
        log_debug("Redis store: NOSCRIPT for script %d, retrying with EVAL", (int)op->script);
        send_eval(s, op);
        return;
    }
    switch (op->kind) {
    case OP_SESSION:
        complete_session(op, r);
        break;
    case OP_DUMP:
        complete_dump(op, r);
        break;
    case OP_DONE:
        op->cb.done(store_redis_reply_status(r), op->userdata);
        break;
    case OP_VALUE:
        complete_value(op, r);
        break;
    case OP_COUNT:
        complete_count(op, r);
        break;
    case OP_LIST:
        complete_list(s, op, r);
        break;
    case OP_DELETE_BY_OWNER:
        if (continue_delete_by_owner(s, op, r)) {
            return;
        }
        break;
    case OP_HANDSHAKE:
        break;
    }
    op_destroy(op);
}

/* Connection management. */

static void schedule_reconnect(RedisStore *s)
{
    ev_timer_stop(s->loop, &s->reconnect_timer);
    ev_timer_set(&s->reconnect_timer, s->backoff_ms / 1000.0, 0.0);
    ev_timer_start(s->loop, &s->reconnect_timer);
    s->backoff_ms = s->backoff_ms * 2 > REDIS_BACKOFF_MAX_MS ? REDIS_BACKOFF_MAX_MS
                                                             : s->backoff_ms * 2;
}

/*
 * Drop the connection we own: pending operations complete with -ENOTCONN (now, or right after
 * the hiredis callback we are in returns), then a reconnect is scheduled.
 */
static void teardown(RedisStore *s, int error, const char *detail)
{
    redisAsyncContext *ac = s->ac;
    bool was_up = s->state == REDIS_STATE_UP;

    s->ac = NULL;
    s->state = REDIS_STATE_DOWN;
    ev_timer_stop(s->loop, &s->connect_timer);
    report(s, was_up ? STORE_EVENT_DOWN : STORE_EVENT_CONNECT_FAILED, error, detail);
    if (ac != NULL) {
        ac->data = NULL;
        redisAsyncFree(ac);
    }
    schedule_reconnect(s);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    RedisStore *s = ac->data;

    if (s == NULL || status == REDIS_OK) {
        return;
    }
    /* hiredis frees the context after this returns. */
    ((redisAsyncContext *)ac)->data = NULL;
    s->ac = NULL;
    s->state = REDIS_STATE_DOWN;
    ev_timer_stop(s->loop, &s->connect_timer);
    report(s, STORE_EVENT_CONNECT_FAILED, hiredis_error(ac->c.err), ac->c.errstr);
    schedule_reconnect(s);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    RedisStore *s = ac->data;
    bool was_up;

    if (s == NULL) {
        return;
    }
    /* hiredis frees the context after this returns; pending operations already failed. */
    was_up = s->state == REDIS_STATE_UP;
    s->ac = NULL;
    s->state = REDIS_STATE_DOWN;
    ev_timer_stop(s->loop, &s->connect_timer);
    report(s, was_up ? STORE_EVENT_DOWN : STORE_EVENT_CONNECT_FAILED,
           ac->c.err != 0 ? hiredis_error(ac->c.err) : -ECONNRESET, ac->c.errstr);
    schedule_reconnect(s);
}

/* Send one handshake command; `load` selects a SCRIPT LOAD whose reply is the SHA1 of `script`. */
static void send_handshake_command(RedisStore *s, int argc, const char **argv, bool last,
                                   bool load, StoreRedisScript script)
{
    RedisOp *op = op_new(s, OP_HANDSHAKE, NULL);
    size_t lens[3];

    if (op == NULL) {
        return;
    }
    op->handshake_last = last;
    op->loads_script = load;
    op->script = script;
    for (int i = 0; i < argc; i++) {
        lens[i] = strlen(argv[i]);
    }
    op_submit(s, op, argc, argv, lens);
}

/*
 * Send AUTH and SELECT when the URL sets a password or db, SCRIPT LOAD of every script, then
 * PING, whose reply means UP. hiredis pipelines them: the handshake takes one round trip.
 */
static void send_handshake(RedisStore *s)
{
    char db[16];

    if (s->url.password[0] != '\0') {
        send_handshake_command(s, 2, (const char *[]){"AUTH", s->url.password}, false, false,
                               0);
    }
    if (s->url.db != 0) {
        snprintf(db, sizeof(db), "%d", s->url.db);
        send_handshake_command(s, 2, (const char *[]){"SELECT", db}, false, false, 0);
    }
    for (int i = 0; i < STORE_REDIS_SCRIPTS; i++) {
        const char *load[] = {"SCRIPT", "LOAD", store_redis_script_text((StoreRedisScript)i)};

        send_handshake_command(s, 3, load, false, true, (StoreRedisScript)i);
    }
    send_handshake_command(s, 1, (const char *[]){"PING"}, true, false, 0);
}

static void connect_now(RedisStore *s)
{
    redisAsyncContext *ac = redisAsyncConnect(s->url.host, s->url.port);

    if (ac == NULL) {
        report(s, STORE_EVENT_CONNECT_FAILED, -ENOMEM, NULL);
        schedule_reconnect(s);
        return;
    }
    if (ac->err != 0) {
        report(s, STORE_EVENT_CONNECT_FAILED, hiredis_error(ac->err), ac->errstr);
        redisAsyncFree(ac);
        schedule_reconnect(s);
        return;
    }
    if (redisLibevAttach(s->loop, ac) != REDIS_OK) {
        report(s, STORE_EVENT_CONNECT_FAILED, -ENOMEM, NULL);
        redisAsyncFree(ac);
        schedule_reconnect(s);
        return;
    }
    ac->data = s;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    s->ac = ac;
    s->state = REDIS_STATE_CONNECTING;
    ev_timer_set(&s->connect_timer, s->connect_timeout_ms / 1000.0, 0.0);
    ev_timer_start(s->loop, &s->connect_timer);
    /* hiredis queues these until the socket is connected. */
    send_handshake(s);
}

static void on_reconnect_timer(struct ev_loop *loop, ev_timer *timer, int revents)
{
    connect_now(timer->data);
}

static void on_connect_timeout(struct ev_loop *loop, ev_timer *timer, int revents)
{
    RedisStore *s = timer->data;

    if (s->state == REDIS_STATE_CONNECTING) {
        teardown(s, -ETIMEDOUT, "Redis connect timed out");
    }
}

/* Operations. */

/* Build P session:<id> into a new buffer; returns NULL when out of memory. */
static char *session_key(const RedisStore *s, StoreBytes id, size_t *len)
{
    size_t prefix_len = strlen(s->session_prefix);
    char *key = malloc(prefix_len + id.len);

    if (key == NULL) {
        return NULL;
    }
    memcpy(key, s->session_prefix, prefix_len);
    memcpy(key + prefix_len, id.data, id.len);
    *len = prefix_len + id.len;
    return key;
}

/*
 * Call `script` for `op` on session `id` with KEYS = <session key> <index key> and ARGV = id,
 * then up to 3 more arguments from `extra`.
 */
static void call_session_script(RedisStore *s, RedisOp *op, StoreRedisScript script,
                                StoreBytes id, int extra_count, const StoreBytes *extra)
{
    StoreBytes args[7];
    size_t key_len;
    char *key = session_key(s, id, &key_len);
    int argc = 0;

    if (key == NULL) {
        op_fail(op, -ENOMEM);
        return;
    }
    args[argc++] = store_bytes_str("2");
    args[argc++] = (StoreBytes){.data = (const uint8_t *)key, .len = key_len};
    args[argc++] = store_bytes_str(s->index_key);
    args[argc++] = id;
    for (int i = 0; i < extra_count; i++) {
        args[argc++] = extra[i];
    }
    op_submit_script(s, op, script, argc, args);
    free(key);
}

/* Returns true when the store is not UP: the caller then fails the call with -ENOTCONN. */
static bool reject_when_down(RedisStore *s)
{
    return s->state != REDIS_STATE_UP;
}

/* Start an op that keeps the session id; the caller sets its callback. */
static RedisOp *redis_session_op(RedisStore *s, RedisOpKind kind, StoreBytes id, void *userdata)
{
    RedisSessionOp *sop = calloc(1, sizeof(*sop) + id.len);

    if (sop == NULL) {
        return NULL;
    }
    sop->op.store = s;
    sop->op.kind = kind;
    sop->op.userdata = userdata;
    sop->id_len = id.len;
    memcpy(sop->id, id.data, id.len);
    return &sop->op;
}

static void redis_create(Store *store, StoreBytes id, uint32_t ttl_s, const char *owner,
                         StoreSessionFn cb, void *userdata)
{
    RedisStore *s = redis_from(store);
    char ttl[16];
    char max[24];
    RedisOp *op;

    if (reject_when_down(s)) {
        cb(-ENOTCONN, NULL, userdata);
        return;
    }
    op = redis_session_op(s, OP_SESSION, id, userdata);
    if (op == NULL) {
        cb(-ENOMEM, NULL, userdata);
        return;
    }
    op->cb.session = cb;
    snprintf(ttl, sizeof(ttl), "%" PRIu32, ttl_s);
    snprintf(max, sizeof(max), "%" PRIu64, store->limits.max_sessions);
    call_session_script(s, op, STORE_REDIS_SCRIPT_CREATE, id, 3,
                        (StoreBytes[]){store_bytes_str(ttl),
                                       store_bytes_str(owner != NULL ? owner : ""),
                                       store_bytes_str(max)});
}

static void redis_get(Store *store, StoreBytes id, StoreSessionFn cb, void *userdata)
{
    RedisStore *s = redis_from(store);
    RedisOp *op;

    if (reject_when_down(s)) {
        cb(-ENOTCONN, NULL, userdata);
        return;
    }
    op = redis_session_op(s, OP_SESSION, id, userdata);
    if (op == NULL) {
        cb(-ENOMEM, NULL, userdata);
        return;
    }
    op->cb.session = cb;
    call_session_script(s, op, STORE_REDIS_SCRIPT_GET, id, 0, NULL);
}

static void redis_dump(Store *store, StoreBytes id, StoreDumpFn cb, void *userdata)
{
    RedisStore *s = redis_from(store);
    RedisOp *op;

    if (reject_when_down(s)) {
        cb(-ENOTCONN, NULL, NULL, 0, userdata);
        return;
    }
    op = redis_session_op(s, OP_DUMP, id, userdata);
    if (op == NULL) {
        cb(-ENOMEM, NULL, NULL, 0, userdata);
        return;
    }
    op->cb.dump = cb;
    call_session_script(s, op, STORE_REDIS_SCRIPT_DUMP, id, 0, NULL);
}

/* Start an OP_DONE operation; NULL (after failing the call) when down or out of memory. */
static RedisOp *done_op(RedisStore *s, StoreDoneFn cb, void *userdata)
{
    RedisOp *op;

    if (reject_when_down(s)) {
        cb(-ENOTCONN, userdata);
        return NULL;
    }
    op = op_new(s, OP_DONE, userdata);
    if (op == NULL) {
        cb(-ENOMEM, userdata);
        return NULL;
    }
    op->cb.done = cb;
    return op;
}

/* Build "v:" + name into a new buffer. */
static uint8_t *var_field(StoreBytes name, StoreBytes *out)
{
    uint8_t *field = malloc(name.len + 2);

    if (field == NULL) {
        return NULL;
    }
    memcpy(field, "v:", 2);
    memcpy(field + 2, name.data, name.len);
    *out = (StoreBytes){.data = field, .len = name.len + 2};
    return field;
}

static void redis_put_var(Store *store, StoreBytes id, StoreBytes name, StoreBytes value,
                          StoreDoneFn cb, void *userdata)
{
    RedisStore *s = redis_from(store);
    RedisOp *op = done_op(s, cb, userdata);
    StoreBytes field;
    uint8_t *field_buf;
    char max[16];

    if (op == NULL) {
        return;
    }
    field_buf = var_field(name, &field);
    if (field_buf == NULL) {
        op_fail(op, -ENOMEM);
        return;
    }
    snprintf(max, sizeof(max), "%" PRIu32, store->limits.max_vars);
    call_session_script(s, op, STORE_REDIS_SCRIPT_PUT_VAR, id, 3,
                        (StoreBytes[]){field, value, store_bytes_str(max)});
    free(field_buf);
}

static void redis_get_var(Store *store, StoreBytes id, StoreBytes name, StoreValueFn cb,
                          void *userdata)
{
    RedisStore *s = redis_from(store);
    StoreBytes field;
    uint8_t *field_buf;
    RedisOp *op;

    if (reject_when_down(s)) {
        cb(-ENOTCONN, (StoreBytes){0}, userdata);
        return;
    }
    op = op_new(s, OP_VALUE, userdata);
    field_buf = op != NULL ? var_field(name, &field) : NULL;
    if (field_buf == NULL) {
        free(op);
        cb(-ENOMEM, (StoreBytes){0}, userdata);
        return;
    }
    op->cb.value = cb;
    call_session_script(s, op, STORE_REDIS_SCRIPT_GET_VAR, id, 1, &field);
    free(field_buf);
}

static void redis_delete(Store *store, StoreBytes id, StoreDoneFn cb, void *userdata)
{
    RedisStore *s = redis_from(store);
    RedisOp *op = done_op(s, cb, userdata);

    if (op != NULL) {
        call_session_script(s, op, STORE_REDIS_SCRIPT_DELETE, id, 0, NULL);
    }
}

static void redis_touch(Store *store, StoreBytes id, StoreDoneFn cb, void *userdata)
{
    RedisStore *s = redis_from(store);
    RedisOp *op = done_op(s, cb, userdata);

    if (op != NULL) {
        call_session_script(s, op, STORE_REDIS_SCRIPT_TOUCH, id, 0, NULL);
    }
}

static void redis_set_worker(Store *store, StoreBytes id, int64_t worker_id, StoreDoneFn cb,
                             void *userdata)
{
    RedisStore *s = redis_from(store);
    RedisOp *op = done_op(s, cb, userdata);
    char worker[24] = "";

    if (op == NULL) {
        return;
    }
    if (worker_id != STORE_WORKER_NONE) {
        snprintf(worker, sizeof(worker), "%" PRId64, worker_id);
    }
    call_session_script(s, op, STORE_REDIS_SCRIPT_SET_WORKER, id, 1,
                        (StoreBytes[]){store_bytes_str(worker)});
}

static void redis_list(Store *store, uint64_t cursor, uint32_t limit, StoreListFn cb,
                       void *userdata)
{
    RedisStore *s = redis_from(store);
    char cursor_text[24];
    char count_text[16];
    const char *argv[6];
    size_t lens[6];
    RedisOp *op;

    if (reject_when_down(s)) {
        cb(-ENOTCONN, NULL, 0, 0, userdata);
        return;
    }
    op = op_new(s, OP_LIST, userdata);
    if (op == NULL) {
        cb(-ENOMEM, NULL, 0, 0, userdata);
        return;
    }
    op->cb.list = cb;
    snprintf(cursor_text, sizeof(cursor_text), "%" PRIu64, cursor);
    snprintf(count_text, sizeof(count_text), "%" PRIu32, limit);
    argv[0] = "SCAN";
    argv[1] = cursor_text;
    argv[2] = "MATCH";
    argv[3] = s->session_pattern;
    argv[4] = "COUNT";
    argv[5] = count_text;
    for (int i = 0; i < 6; i++) {
        lens[i] = strlen(argv[i]);
    }
    op_submit(s, op, 6, argv, lens);
}

/* Call `script` with KEYS = <index key>: the count and expire operations. */
static void call_index_script(RedisStore *s, StoreRedisScript script, StoreCountFn cb,
                              void *userdata)
{
    RedisOp *op;

    if (reject_when_down(s)) {
        cb(-ENOTCONN, 0, userdata);
        return;
    }
    op = op_new(s, OP_COUNT, userdata);
    if (op == NULL) {
        cb(-ENOMEM, 0, userdata);
        return;
    }
    op->cb.count = cb;
    op_submit_script(s, op, script, 2,
                     (StoreBytes[]){store_bytes_str("1"), store_bytes_str(s->index_key)});
}

static void redis_expire(Store *store, StoreCountFn cb, void *userdata)
{
    call_index_script(redis_from(store), STORE_REDIS_SCRIPT_EXPIRE, cb, userdata);
}

static void redis_count(Store *store, StoreCountFn cb, void *userdata)
{
    call_index_script(redis_from(store), STORE_REDIS_SCRIPT_COUNT_SESSIONS, cb, userdata);
}

static void submit_owner_batch(RedisStore *s, RedisOp *op, uint64_t cursor)
{
    char cursor_text[24];
    char count_text[16];
    char prefix_len[24];

    snprintf(cursor_text, sizeof(cursor_text), "%" PRIu64, cursor);
    snprintf(count_text, sizeof(count_text), "%d", REDIS_OWNER_SCAN_COUNT);
    snprintf(prefix_len, sizeof(prefix_len), "%zu", strlen(s->session_prefix));
    op_submit_script(s, op, STORE_REDIS_SCRIPT_DELETE_BY_OWNER, 7,
                     (StoreBytes[]){store_bytes_str("1"), store_bytes_str(s->index_key),
                                    store_bytes_str(cursor_text),
                                    store_bytes_str(s->session_pattern),
                                    store_bytes_str(count_text), store_bytes_str(op->owner),
                                    store_bytes_str(prefix_len)});
}

static void redis_delete_by_owner(Store *store, const char *owner, StoreCountFn cb,
                                  void *userdata)
{
    RedisStore *s = redis_from(store);
    RedisOp *op;

    if (reject_when_down(s)) {
        cb(-ENOTCONN, 0, userdata);
        return;
    }
    op = op_new(s, OP_DELETE_BY_OWNER, userdata);
    if (op != NULL) {
        op->owner = strdup(owner);
    }
    if (op == NULL || op->owner == NULL) {
        free(op);
        cb(-ENOMEM, 0, userdata);
        return;
    }
    op->cb.count = cb;
    submit_owner_batch(s, op, 0);
}

static bool redis_is_available(Store *store)
{
    return redis_from(store)->state == REDIS_STATE_UP;
}

static void redis_free(Store *store)
{
    RedisStore *s = redis_from(store);
    redisAsyncContext *ac = s->ac;

    s->freeing = true;
    s->state = REDIS_STATE_DOWN;
    s->ac = NULL;
    ev_timer_stop(s->loop, &s->connect_timer);
    ev_timer_stop(s->loop, &s->reconnect_timer);
    /* Complete every pending operation, then let hiredis hand back (and free) the ops. */
    for (RedisOp *op = s->ops; op != NULL; op = op->next) {
        ev_timer_stop(s->loop, &op->timer);
        if (!op->completed) {
            op->completed = true;
            op_call_error(op, -ECANCELED);
        }
        op->store = NULL;
    }
    s->ops = NULL;
    if (ac != NULL) {
        ac->data = NULL;
        redisAsyncFree(ac);
    }
    free(s->prefix);
    free(s->session_prefix);
    free(s->index_key);
    free(s->session_pattern);
    free(s);
}

static const StoreOps redis_ops = {
    .name = "redis",
    .create = redis_create,
    .get = redis_get,
    .put_var = redis_put_var,
    .get_var = redis_get_var,
    .dump = redis_dump,
    .delete_session = redis_delete,
    .touch = redis_touch,
    .set_worker = redis_set_worker,
    .list = redis_list,
    .expire = redis_expire,
    .delete_by_owner = redis_delete_by_owner,
    .count = redis_count,
    .is_available = redis_is_available,
    .free = redis_free,
};

/* Escape the glob characters of `text` for a SCAN MATCH pattern and append "*". */
static char *glob_pattern(const char *text)
{
    char *pattern = malloc(strlen(text) * 2 + 2);
    char *q = pattern;

    if (pattern == NULL) {
        return NULL;
    }
    for (const char *p = text; *p != '\0'; p++) {
        if (strchr("*?[]\\", *p) != NULL) {
            *q++ = '\\';
        }
        *q++ = *p;
    }
    *q++ = '*';
    *q = '\0';
    return pattern;
}

static char *concat(const char *a, const char *b)
{
    char *s;

    return asprintf(&s, "%s%s", a, b) < 0 ? NULL : s;
}

int store_redis_new(const StoreConfig *config, const StoreLimits *limits, struct ev_loop *loop,
                    Store **out)
{
    const char *prefix = config->key_prefix != NULL ? config->key_prefix
                                                    : STORE_DEFAULT_KEY_PREFIX;
    RedisStore *s;
    StoreRedisUrl url;
    int r;

    if (loop == NULL || strlen(prefix) > REDIS_KEY_PREFIX_MAX_BYTES) {
        return -EINVAL;
    }
    r = store_redis_url_parse(config->url, &url);
    if (r < 0) {
        return r;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return -ENOMEM;
    }
    s->base.ops = &redis_ops;
    s->base.limits = *limits;
    s->loop = loop;
    s->url = url;
    s->prefix = strdup(prefix);
    s->session_prefix = concat(prefix, "session:");
    s->index_key = concat(prefix, "expiry");
    s->session_pattern = s->session_prefix != NULL ? glob_pattern(s->session_prefix) : NULL;
    if (s->prefix == NULL || s->session_prefix == NULL || s->index_key == NULL ||
        s->session_pattern == NULL) {
        redis_free(&s->base);
        return -ENOMEM;
    }
    s->connect_timeout_ms = config->connect_timeout_ms != 0 ? config->connect_timeout_ms
                                                            : STORE_DEFAULT_CONNECT_TIMEOUT_MS;
    s->command_timeout_ms = config->command_timeout_ms != 0 ? config->command_timeout_ms
                                                            : STORE_DEFAULT_COMMAND_TIMEOUT_MS;
    s->on_event = config->on_event;
    s->event_data = config->event_data;
    s->backoff_ms = REDIS_BACKOFF_INITIAL_MS;
    ev_init(&s->connect_timer, on_connect_timeout);
    s->connect_timer.data = s;
    /* The first connect runs from the loop, so store_new() never reports events itself. */
    ev_timer_init(&s->reconnect_timer, on_reconnect_timer, 0.0, 0.0);
    s->reconnect_timer.data = s;
    ev_timer_start(loop, &s->reconnect_timer);
    *out = &s->base;
    return 0;
}
