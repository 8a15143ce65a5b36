/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `{session, Op, ...}` requests on the session store. Store operations complete through
 * callbacks (at once for the memory store, later for Redis), so each request keeps its caller in
 * a small heap context until the callback replies. Variables are stored as external term format
 * with the version byte; the daemon never converts them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "dist_frame.h"
#include "log.h"
#include "store.h"

#define SESSION_LIST_DEFAULT_LIMIT 1000u
#define SESSION_ETF_VERSION 131 /* first byte of a term in external term format */

typedef struct {
    Daemon *daemon;
    DistCaller *caller;
    char id[STORE_ID_MAX_BYTES + 1];
    size_t id_len;
    char name[STORE_NAME_MAX_BYTES + 1];
    size_t name_len;
    /* list: ids gathered so far, and how many are still wanted */
    ei_x_buff ids;
    unsigned listed;
    unsigned limit;
} SessionOp;

static SessionOp *op_new(Daemon *d, DistCaller *caller)
{
    SessionOp *op = calloc(1, sizeof(*op));

    if (op) {
        op->daemon = d;
        op->caller = caller;
    }
    return op;
}

/* Map a store status to an error kind and reply with it. */
static void reply_store_error(Daemon *d, DistCaller *caller, int status, const SessionOp *op)
{
    char message[600];
    ErrorKind kind;

    switch (status) {
    case -ENOENT:
        kind = ERROR_SESSION_NOT_FOUND;
        if (op && op->name_len > 0) {
            snprintf(message, sizeof(message), "session '%.*s' or its variable '%.*s' not found",
                     (int)op->id_len, op->id, (int)op->name_len, op->name);
        } else {
            snprintf(message, sizeof(message), "session '%.*s' not found",
                     op ? (int)op->id_len : 0, op ? op->id : "");
        }
        break;
    case -EDQUOT:
        kind = ERROR_OVERLOADED;
        snprintf(message, sizeof(message),
                 "a session store quota is reached: max_sessions = %u sessions, max_vars = %u "
                 "variables per session, or max_memory_bytes = %zu bytes",
                 d->config->store_max_sessions, d->config->store_max_vars,
                 d->config->store_max_memory_bytes);
        break;
    case -E2BIG:
        kind = ERROR_TOO_LARGE;
        snprintf(message, sizeof(message), "the value is larger than max_value_bytes = %zu",
                 d->config->store_max_value_bytes);
        break;
    case -EINVAL:
        kind = ERROR_BAD_REQUEST;
        snprintf(message, sizeof(message),
                 "invalid session request: ids and names are 1 to %d bytes, TTLs at most %u s",
                 STORE_ID_MAX_BYTES, STORE_TTL_MAX_S);
        break;
    default:
        kind = ERROR_STORE_UNAVAILABLE;
        snprintf(message, sizeof(message), "the %s session store is unavailable: %s",
                 store_backend_name(d->store), strerror(-status));
        break;
    }
    request_reply_error(d, caller, kind, message);
}

static void reply_ok(Daemon *d, DistCaller *caller)
{
    ei_x_buff x;

    if (ei_x_new(&x) < 0) {
        request_reply_error(d, caller, ERROR_OVERLOADED, "out of memory");
        return;
    }
    ei_x_encode_atom(&x, "ok");
    request_reply(d, caller, x.buff, (size_t)x.index);
    ei_x_free(&x);
}

static void encode_session(ei_x_buff *x, const StoreSession *s)
{
    ei_x_encode_map_header(x, 6);
    ei_x_encode_atom(x, "id");
    ei_x_encode_binary(x, s->id.data, (long)s->id.len);
    ei_x_encode_atom(x, "created_ms");
    ei_x_encode_ulonglong(x, s->created_ms);
    ei_x_encode_atom(x, "accessed_ms");
    ei_x_encode_ulonglong(x, s->accessed_ms);
    ei_x_encode_atom(x, "ttl_s");
    ei_x_encode_ulong(x, s->ttl_s);
    ei_x_encode_atom(x, "owner");
    ei_x_encode_atom(x, s->owner ? s->owner : "nil");
    ei_x_encode_atom(x, "worker_id");
    if (s->worker_id == STORE_WORKER_NONE) {
        ei_x_encode_atom(x, "nil");
    } else {
        ei_x_encode_longlong(x, s->worker_id);
    }
}

static void on_session(int status, const StoreSession *session, void *userdata)
{
    SessionOp *op = userdata;
    Daemon *d = op->daemon;
    ei_x_buff x;

    if (status < 0) {
        reply_store_error(d, op->caller, status, op);
    } else if (ei_x_new(&x) < 0) {
        request_reply_error(d, op->caller, ERROR_OVERLOADED, "out of memory");
    } else {
        ei_x_encode_tuple_header(&x, 2);
        ei_x_encode_atom(&x, "ok");
        encode_session(&x, session);
        request_reply(d, op->caller, x.buff, (size_t)x.index);
        ei_x_free(&x);
    }
    free(op);
}

static void on_done(int status, void *userdata)
{
    SessionOp *op = userdata;

    if (status < 0) {
        reply_store_error(op->daemon, op->caller, status, op);
    } else {
        reply_ok(op->daemon, op->caller);
    }
    free(op);
}

/* delete is idempotent: a session that was not there is deleted all the same. */
static void on_deleted(int status, void *userdata)
{
    on_done(status == -ENOENT ? 0 : status, userdata);
}

static void on_value(int status, StoreBytes value, void *userdata)
{
    SessionOp *op = userdata;
    Daemon *d = op->daemon;
    ei_x_buff x;

    if (status < 0) {
        reply_store_error(d, op->caller, status, op);
    } else if (value.len < 2 || value.data[0] != SESSION_ETF_VERSION) {
        request_reply_error(d, op->caller, ERROR_ENCODE_ERROR,
                            "the stored value is not in external term format");
    } else if (ei_x_new(&x) < 0) {
        request_reply_error(d, op->caller, ERROR_OVERLOADED, "out of memory");
    } else {
        ei_x_encode_tuple_header(&x, 2);
        ei_x_encode_atom(&x, "ok");
        ei_x_append_buf(&x, (const char *)value.data + 1, (int)value.len - 1);
        request_reply(d, op->caller, x.buff, (size_t)x.index);
        ei_x_free(&x);
    }
    free(op);
}

/*
 * Compute the reply bytes of a dump's variables: each name is a binary (tag, 4-byte length,
 * bytes) and each value its stored term without the version byte. Returns -EPROTO when a value
 * is not a stored term.
 */
static int dump_vars_size(const StoreVar *vars, size_t var_count, size_t *size)
{
    size_t total = 0;

    for (size_t i = 0; i < var_count; i++) {
        if (vars[i].value.len < 2 || vars[i].value.data[0] != SESSION_ETF_VERSION) {
            return -EPROTO;
        }
        total += 5 + vars[i].name.len + vars[i].value.len - 1;
    }
    *size = total;
    return 0;
}

/*
 * Reply to a dump. The size is computed before the variables are encoded, so a dump over the
 * message size limit is rejected without building it.
 */
static void on_dump(int status, const StoreSession *session, const StoreVar *vars,
                    size_t var_count, void *userdata)
{
    SessionOp *op = userdata;
    Daemon *d = op->daemon;
    char message[600];
    size_t size = 0;
    ei_x_buff x;

    if (status < 0) {
        reply_store_error(d, op->caller, status, op);
    } else if (dump_vars_size(vars, var_count, &size) < 0) {
        log_warning("Failed to dump session '%.*s': a value is not in external term format",
                    (int)op->id_len, op->id);
        request_reply_error(d, op->caller, ERROR_ENCODE_ERROR,
                            "a stored value is not in external term format");
    } else if (ei_x_new(&x) < 0) {
        request_reply_error(d, op->caller, ERROR_OVERLOADED, "out of memory");
    } else {
        ei_x_encode_tuple_header(&x, 2);
        ei_x_encode_atom(&x, "ok");
        ei_x_encode_map_header(&x, 2);
        ei_x_encode_atom(&x, "session");
        encode_session(&x, session);
        ei_x_encode_atom(&x, "vars");
        ei_x_encode_map_header(&x, (long)var_count);
        size += (size_t)x.index;
        if (size > d->config->max_message_bytes) {
            snprintf(message, sizeof(message),
                     "the dump of session '%.*s' is %zu bytes, over the message size limit of "
                     "%zu bytes",
                     (int)op->id_len, op->id, size, d->config->max_message_bytes);
            log_warning("Rejected a dump for node %s: %s", op->caller->node, message);
            request_reply_error(d, op->caller, ERROR_TOO_LARGE, message);
        } else {
            for (size_t i = 0; i < var_count; i++) {
                ei_x_encode_binary(&x, vars[i].name.data, (long)vars[i].name.len);
                ei_x_append_buf(&x, (const char *)vars[i].value.data + 1,
                                (int)vars[i].value.len - 1);
            }
            request_reply(d, op->caller, x.buff, (size_t)x.index);
        }
        ei_x_free(&x);
    }
    free(op);
}

static void on_list(int status, const StoreBytes *ids, size_t count, uint64_t next_cursor,
                    void *userdata)
{
    SessionOp *op = userdata;
    Daemon *d = op->daemon;

    if (status < 0) {
        reply_store_error(d, op->caller, status, NULL);
        ei_x_free(&op->ids);
        free(op);
        return;
    }
    for (size_t i = 0; i < count && op->listed < op->limit; i++) {
        ei_x_encode_list_header(&op->ids, 1);
        ei_x_encode_binary(&op->ids, ids[i].data, (long)ids[i].len);
        op->listed++;
    }
    if (next_cursor != 0 && op->listed < op->limit) {
        uint32_t page = op->limit - op->listed;
        store_list(d->store, next_cursor, page < STORE_LIST_MAX_LIMIT ? page : STORE_LIST_MAX_LIMIT,
                   on_list, op);
        return;
    }
    ei_x_buff x;
    if (ei_x_new(&x) == 0) {
        ei_x_encode_empty_list(&op->ids);
        ei_x_encode_tuple_header(&x, 2);
        ei_x_encode_atom(&x, "ok");
        ei_x_append_buf(&x, op->ids.buff, op->ids.index);
        request_reply(d, op->caller, x.buff, (size_t)x.index);
        ei_x_free(&x);
    } else {
        request_reply_error(d, op->caller, ERROR_OVERLOADED, "out of memory");
    }
    ei_x_free(&op->ids);
    free(op);
}

/* Decode a binary (or an atom, by its text) of at most `max` bytes into out[max + 1]. */
static int decode_key(const char *buf, int *index, char *out, size_t max, size_t *len)
{
    int type;
    int size;

    if (ei_get_type(buf, index, &type, &size) < 0 || size < 0 || (size_t)size > max) {
        return -EINVAL;
    }
    if (type == ERL_BINARY_EXT) {
        long l;
        if (ei_decode_binary(buf, index, out, &l) < 0) {
            return -EINVAL;
        }
        out[l] = '\0';
        *len = (size_t)l;
        return 0;
    }
    char atom[MAXATOMLEN_UTF8];
    if (ei_decode_atom_as(buf, index, atom, sizeof(atom), ERLANG_UTF8, NULL, NULL) < 0 ||
        strlen(atom) > max) {
        return -EINVAL;
    }
    memcpy(out, atom, strlen(atom) + 1);
    *len = strlen(atom);
    return 0;
}

static StoreBytes bytes(const char *data, size_t len)
{
    return (StoreBytes){.data = (const uint8_t *)data, .len = len};
}

/* Options of create: ttl (seconds) and owner (a node name atom, or nil for no owner). */
static int parse_create_opts(const char *buf, int *index, const char *caller_node,
                             StoreCreateOpts *opts, char *owner, size_t owner_size)
{
    int type;
    int size;
    int arity;
    char key[MAXATOMLEN_UTF8];

    snprintf(owner, owner_size, "%s", caller_node);
    opts->owner = owner;
    opts->ttl_s = 0;
    ei_get_type(buf, index, &type, &size);
    bool is_map = type == ERL_MAP_EXT;
    if (is_map ? ei_decode_map_header(buf, index, &arity) < 0
               : ei_decode_list_header(buf, index, &arity) < 0) {
        return -EINVAL;
    }
    for (int i = 0; i < arity; i++) {
        int tuple;
        if ((!is_map && (ei_decode_tuple_header(buf, index, &tuple) < 0 || tuple != 2)) ||
            ei_decode_atom(buf, index, key) < 0) {
            return -EINVAL;
        }
        if (strcmp(key, "ttl") == 0) {
            long ttl;
            if (ei_decode_long(buf, index, &ttl) < 0 || ttl <= 0 || ttl > (long)STORE_TTL_MAX_S) {
                return -EINVAL;
            }
            opts->ttl_s = (uint32_t)ttl;
        } else if (strcmp(key, "owner") == 0) {
            if (ei_decode_atom(buf, index, owner) < 0) {
                return -EINVAL;
            }
            if (strcmp(owner, "nil") == 0) {
                opts->owner = NULL;
            }
        } else {
            return -EINVAL;
        }
    }
    return 0;
}

static int parse_list_opts(const char *buf, int *index, unsigned *limit)
{
    int type;
    int size;
    int arity;
    char key[MAXATOMLEN_UTF8];

    *limit = SESSION_LIST_DEFAULT_LIMIT;
    ei_get_type(buf, index, &type, &size);
    bool is_map = type == ERL_MAP_EXT;
    if (is_map ? ei_decode_map_header(buf, index, &arity) < 0
               : ei_decode_list_header(buf, index, &arity) < 0) {
        return -EINVAL;
    }
    for (int i = 0; i < arity; i++) {
        int tuple;
        long v;
        if ((!is_map && (ei_decode_tuple_header(buf, index, &tuple) < 0 || tuple != 2)) ||
            ei_decode_atom(buf, index, key) < 0 || strcmp(key, "limit") != 0 ||
            ei_decode_long(buf, index, &v) < 0 || v < 1 || v > 100000) {
            return -EINVAL;
        }
        *limit = (unsigned)v;
    }
    return 0;
}

static void bad_session_request(Daemon *d, DistCaller *caller, const char *op)
{
    char message[512];

    if (op[0] == '\0') {
        snprintf(message, sizeof(message),
                 "invalid session request: expected {:session, op, ...} with op one of create, "
                 "get, put, delete, touch, list or dump");
    } else {
        snprintf(message, sizeof(message),
                 "invalid {:session, :%s, ...} request: ids and names are binaries of 1 to %d "
                 "bytes; see the session request table in the documentation",
                 op, STORE_ID_MAX_BYTES);
    }
    request_reply_error(d, caller, ERROR_BAD_REQUEST, message);
}

void request_session(Daemon *d, DistCaller *caller, const char *request, size_t len, int index,
                     int arity)
{
    char op_name[MAXATOMLEN_UTF8] = "";
    char owner[MAXATOMLEN_UTF8];
    SessionOp *op;

    if (arity < 2 || ei_decode_atom(request, &index, op_name) < 0) {
        bad_session_request(d, caller, op_name);
        return;
    }
    op = op_new(d, caller);
    if (!op) {
        request_reply_error(d, caller, ERROR_OVERLOADED, "out of memory");
        return;
    }
    if (strcmp(op_name, "list") == 0 && arity == 2) {
        if (parse_list_opts(request, &index, &op->limit) < 0 || ei_x_new(&op->ids) < 0) {
            goto bad;
        }
        unsigned page = op->limit < STORE_LIST_MAX_LIMIT ? op->limit : STORE_LIST_MAX_LIMIT;
        store_list(d->store, 0, page, on_list, op);
        return;
    }
    if (decode_key(request, &index, op->id, STORE_ID_MAX_BYTES, &op->id_len) < 0) {
        goto bad;
    }
    StoreBytes id = bytes(op->id, op->id_len);

    if (strcmp(op_name, "create") == 0 && arity == 3) {
        StoreCreateOpts opts;
        if (parse_create_opts(request, &index, caller->node, &opts, owner, sizeof(owner)) < 0) {
            goto bad;
        }
        store_create(d->store, id, &opts, on_session, op);
    } else if (strcmp(op_name, "get") == 0 && arity == 2) {
        store_get(d->store, id, on_session, op);
    } else if (strcmp(op_name, "get") == 0 && arity == 3) {
        if (decode_key(request, &index, op->name, STORE_NAME_MAX_BYTES, &op->name_len) < 0) {
            goto bad;
        }
        store_get_var(d->store, id, bytes(op->name, op->name_len), on_value, op);
    } else if (strcmp(op_name, "put") == 0 && arity == 4) {
        if (decode_key(request, &index, op->name, STORE_NAME_MAX_BYTES, &op->name_len) < 0) {
            goto bad;
        }
        int end = index;
        if (dist_term_skip(request, len, &end) < 0) {
            goto bad;
        }
        /* Stored with a version byte so that it is a complete term on its own. */
        size_t value_len = (size_t)(end - index) + 1;
        char *value = malloc(value_len);
        if (!value) {
            free(op);
            request_reply_error(d, caller, ERROR_OVERLOADED, "out of memory");
            return;
        }
        value[0] = (char)SESSION_ETF_VERSION;
        memcpy(value + 1, request + index, value_len - 1);
        store_put_var(d->store, id, bytes(op->name, op->name_len), bytes(value, value_len),
                      on_done, op);
        free(value);
    } else if (strcmp(op_name, "delete") == 0 && arity == 2) {
        store_delete(d->store, id, on_deleted, op);
    } else if (strcmp(op_name, "touch") == 0 && arity == 2) {
        store_touch(d->store, id, on_done, op);
    } else if (strcmp(op_name, "dump") == 0 && arity == 2) {
        store_dump(d->store, id, on_dump, op);
    } else {
        goto bad;
    }
    return;
bad:
    free(op);
    bad_session_request(d, caller, op_name);
}

/* ---- Session variables read and written by Python code through snakepit.session ---- */

typedef struct {
    Daemon *daemon;
    WorkerPool *pool;
    uint32_t worker_id;
    uint64_t call_id;
    char session_id[STORE_ID_MAX_BYTES + 1];
    size_t session_id_len;
} WorkerSessionOp;

static void worker_session_answer(WorkerSessionOp *op, const ei_x_buff *x)
{
    worker_pool_session_reply(op->pool, op->worker_id, op->call_id, x->buff, (size_t)x->index);
}

static void worker_session_error(WorkerSessionOp *op, int status)
{
    ei_x_buff x;
    ErrorKind kind = status == -ENOENT  ? ERROR_SESSION_NOT_FOUND
                     : status == -E2BIG ? ERROR_TOO_LARGE
                     : status == -EDQUOT ? ERROR_OVERLOADED
                     : status == -EINVAL ? ERROR_BAD_REQUEST
                                         : ERROR_STORE_UNAVAILABLE;

    if (ei_x_new_with_version(&x) == 0) {
        error_encode(&x, kind, 0, "session store: %s", strerror(-status));
        worker_session_answer(op, &x);
        ei_x_free(&x);
    }
}

/* After a missed variable: the session exists, so the variable is what is missing. */
static void on_worker_session_checked(int status, const StoreSession *session, void *userdata)
{
    WorkerSessionOp *op = userdata;
    ei_x_buff x;

    if (status < 0) {
        worker_session_error(op, status);
    } else if (ei_x_new_with_version(&x) == 0) {
        /* snakepit.session.get() returns its default for kind not_found. */
        ei_x_encode_tuple_header(&x, 2);
        ei_x_encode_atom(&x, "error");
        ei_x_encode_map_header(&x, 2);
        ei_x_encode_atom(&x, "kind");
        ei_x_encode_atom(&x, "not_found");
        ei_x_encode_atom(&x, "message");
        ei_x_encode_binary(&x, "the session has no such variable", 32);
        worker_session_answer(op, &x);
        ei_x_free(&x);
    }
    free(op);
}

static void on_worker_value(int status, StoreBytes value, void *userdata)
{
    WorkerSessionOp *op = userdata;
    ei_x_buff x;

    if (status == -ENOENT) {
        StoreBytes id = {.data = (const uint8_t *)op->session_id, .len = op->session_id_len};
        store_get(op->daemon->store, id, on_worker_session_checked, op);
        return;
    }
    if (status < 0 || value.len < 2) {
        worker_session_error(op, status < 0 ? status : -EINVAL);
    } else if (ei_x_new_with_version(&x) == 0) {
        ei_x_encode_tuple_header(&x, 2);
        ei_x_encode_atom(&x, "ok");
        ei_x_append_buf(&x, (const char *)value.data + 1, (int)value.len - 1);
        worker_session_answer(op, &x);
        ei_x_free(&x);
    }
    free(op);
}

static void on_worker_done(int status, void *userdata)
{
    WorkerSessionOp *op = userdata;
    ei_x_buff x;

    if (status < 0) {
        worker_session_error(op, status);
    } else if (ei_x_new_with_version(&x) == 0) {
        ei_x_encode_atom(&x, "ok");
        worker_session_answer(op, &x);
        ei_x_free(&x);
    }
    free(op);
}

void request_worker_session(Daemon *d, WorkerPool *pool, uint32_t worker_id, uint64_t call_id,
                            const char *session_id, size_t session_id_len, const char *term,
                            size_t len)
{
    WorkerSessionOp *op = calloc(1, sizeof(*op));
    char verb[MAXATOMLEN_UTF8];
    char name[STORE_NAME_MAX_BYTES + 1];
    size_t name_len;
    int index = 0;
    int arity;

    if (!op) {
        return;
    }
    *op = (WorkerSessionOp){.daemon = d, .pool = pool, .worker_id = worker_id,
                            .call_id = call_id};
    if (session_id_len > STORE_ID_MAX_BYTES) {
        worker_session_error(op, -EINVAL);
        free(op);
        return;
    }
    memcpy(op->session_id, session_id, session_id_len);
    op->session_id_len = session_id_len;
    if (ei_decode_tuple_header(term, &index, &arity) < 0 || arity < 2 ||
        ei_decode_atom(term, &index, verb) < 0 ||
        decode_key(term, &index, name, STORE_NAME_MAX_BYTES, &name_len) < 0) {
        worker_session_error(op, -EINVAL);
        free(op);
        return;
    }
    StoreBytes id = bytes(session_id, session_id_len);
    if (strcmp(verb, "get") == 0 && arity == 2) {
        store_get_var(d->store, id, bytes(name, name_len), on_worker_value, op);
        return;
    }
    if (strcmp(verb, "put") == 0 && arity == 3 && (size_t)index < len) {
        size_t value_len = len - (size_t)index + 1;
        char *value = malloc(value_len);
        if (!value) {
            worker_session_error(op, -ENOMEM);
            free(op);
            return;
        }
        value[0] = (char)SESSION_ETF_VERSION;
        memcpy(value + 1, term + index, value_len - 1);
        store_put_var(d->store, id, bytes(name, name_len), bytes(value, value_len),
                      on_worker_done, op);
        free(value);
        return;
    }
    worker_session_error(op, -EINVAL);
    free(op);
}
