/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `{execute, Command, Args, Opts}` and `{execute_stream, ...}`: check the command against the
 * pool's allowed modules, then hand the call to the pool. Args are copied to the worker as raw
 * bytes: the daemon never converts them, the worker's codec does.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "daemon_obs.h"
#include "dist_frame.h"
#include "error.h"
#include "log.h"
#include "store.h"

#define EXECUTE_COMMAND_MAX 1024
#define EXECUTE_CORRELATION_ID_MAX 40
#define EXECUTE_SESSION_ID_MAX (STORE_ID_MAX_BYTES + 1) /* bytes, with the NUL */

typedef struct {
    unsigned timeout_ms;
    char pool[CONFIG_NAME_MAX];
    bool has_session;
    char session_id[EXECUTE_SESSION_ID_MAX];
    long session_id_len;
    PoolAffinity affinity;
} ExecuteOpts;

static int decode_binary_or_atom(const char *buf, int *index, char *out, size_t size, long *len)
{
    int type;
    int n;

    if (ei_get_type(buf, index, &type, &n) < 0 || n < 0 || (size_t)n >= size) {
        return -EINVAL;
    }
    if (type == ERL_BINARY_EXT) {
        long l;
        if (ei_decode_binary(buf, index, out, &l) < 0) {
            return -EINVAL;
        }
        out[l] = '\0';
        if (len) {
            *len = l;
        }
        return 0;
    }
    if (type == ERL_ATOM_EXT || type == ERL_SMALL_ATOM_EXT || type == ERL_ATOM_UTF8_EXT ||
        type == ERL_SMALL_ATOM_UTF8_EXT) {
        if (ei_decode_atom_as(buf, index, out, (int)size, ERLANG_UTF8, NULL, NULL) < 0) {
            return -EINVAL;
        }
        if (len) {
            *len = (long)strlen(out);
        }
        return 0;
    }
    return -EINVAL;
}

/* Apply one option; unknown keys are rejected so that typos do not pass silently. */
static int apply_opt(const char *buf, int *index, const char *key, ExecuteOpts *o, char *err,
                     size_t size)
{
    if (strcmp(key, "timeout") == 0) {
        long v;
        if (ei_decode_long(buf, index, &v) < 0 || v <= 0 || v > 86400000) {
            snprintf(err, size, "option timeout must be an integer from 1 to 86400000 (ms)");
            return -EINVAL;
        }
        o->timeout_ms = (unsigned)v;
        return 0;
    }
    if (strcmp(key, "pool") == 0) {
        if (decode_binary_or_atom(buf, index, o->pool, sizeof(o->pool), NULL) < 0) {
            snprintf(err, size, "option pool must be a pool name (binary or atom)");
            return -EINVAL;
        }
        return 0;
    }
    if (strcmp(key, "session_id") == 0) {
        char atom[MAXATOMLEN_UTF8];
        int at = *index;
        if (ei_decode_atom(buf, &at, atom) == 0 && strcmp(atom, "nil") == 0) {
            *index = at;
            o->has_session = false;
            return 0;
        }
        if (decode_binary_or_atom(buf, index, o->session_id, sizeof(o->session_id),
                                  &o->session_id_len) < 0) {
            snprintf(err, size, "option session_id must be a binary of at most %d bytes",
                     EXECUTE_SESSION_ID_MAX - 1);
            return -EINVAL;
        }
        o->has_session = true;
        return 0;
    }
    if (strcmp(key, "affinity") == 0) {
        char mode[MAXATOMLEN_UTF8];
        if (ei_decode_atom(buf, index, mode) == 0) {
            if (strcmp(mode, "hint") == 0) {
                o->affinity = POOL_AFFINITY_HINT;
                return 0;
            }
            if (strcmp(mode, "strict_queue") == 0) {
                o->affinity = POOL_AFFINITY_STRICT_QUEUE;
                return 0;
            }
            if (strcmp(mode, "strict_fail_fast") == 0) {
                o->affinity = POOL_AFFINITY_STRICT_FAIL_FAST;
                return 0;
            }
        }
        snprintf(err, size, "option affinity must be :hint, :strict_queue or :strict_fail_fast");
        return -EINVAL;
    }
    if (strcmp(key, "idempotent") == 0) {
        return ei_skip_term(buf, index) < 0 ? -EINVAL : 0;
    }
    snprintf(err, size,
             "unknown option '%s'; expected timeout, pool, session_id, affinity or idempotent",
             key);
    return -EINVAL;
}

/* Options are a keyword list or a map with atom keys. */
static int parse_opts(const char *buf, int *index, ExecuteOpts *o, char *err, size_t size)
{
    int type;
    int n;
    int arity;
    char key[MAXATOMLEN_UTF8];

    ei_get_type(buf, index, &type, &n);
    bool is_map = type == ERL_MAP_EXT;
    if (is_map ? ei_decode_map_header(buf, index, &arity) < 0
               : ei_decode_list_header(buf, index, &arity) < 0) {
        snprintf(err, size, "options must be a keyword list or a map");
        return -EINVAL;
    }
    for (int i = 0; i < arity; i++) {
        int tuple;
        if (!is_map && (ei_decode_tuple_header(buf, index, &tuple) < 0 || tuple != 2)) {
            snprintf(err, size, "options must be a keyword list or a map");
            return -EINVAL;
        }
        if (ei_decode_atom(buf, index, key) < 0) {
            snprintf(err, size, "option keys must be atoms");
            return -EINVAL;
        }
        if (apply_opt(buf, index, key, o, err, size) < 0) {
            return -EINVAL;
        }
    }
    if (!is_map && arity > 0 && ei_decode_list_header(buf, index, &arity) < 0) {
        snprintf(err, size, "options must be a proper keyword list");
        return -EINVAL;
    }
    return 0;
}

/* Whether `module_path` (after "python.") starts with an allowed module and names an attribute. */
static bool module_allowed(const Daemon *d, size_t pool_index, const char *path)
{
    for (size_t i = 0; i < d->allowed_count; i++) {
        const AllowedModule *a = &d->allowed[i];
        size_t len = strlen(a->module);
        if (a->pool_index == pool_index && strncmp(path, a->module, len) == 0 &&
            path[len] == '.' && path[len + 1] != '\0') {
            return true;
        }
    }
    return false;
}

static size_t find_pool(const Daemon *d, const char *name)
{
    for (size_t i = 0; i < d->pool_count; i++) {
        if (strcmp(worker_pool_name(d->pools[i]), name) == 0) {
            return i;
        }
    }
    return SIZE_MAX;
}

/* Build the CALL payload {Command, Args, #{stream, session_id, timeout_ms}} with version byte. */
static int build_payload(const char *command, long command_len, const char *args,
                         size_t args_len, const ExecuteOpts *o, bool stream, ei_x_buff *x)
{
    if (ei_x_new_with_version(x) < 0) {
        return -ENOMEM;
    }
    ei_x_encode_tuple_header(x, 3);
    ei_x_encode_binary(x, command, command_len);
    ei_x_append_buf(x, args, (int)args_len);
    ei_x_encode_map_header(x, 3);
    ei_x_encode_atom(x, "stream");
    ei_x_encode_boolean(x, stream);
    ei_x_encode_atom(x, "session_id");
    if (o->has_session) {
        ei_x_encode_binary(x, o->session_id, o->session_id_len);
    } else {
        ei_x_encode_atom(x, "nil");
    }
    ei_x_encode_atom(x, "timeout_ms");
    return ei_x_encode_ulong(x, o->timeout_ms);
}

static bool args_shape_valid(const char *buf, int index)
{
    int type;
    int n;
    int arity;

    ei_get_type(buf, &index, &type, &n);
    if (type == ERL_LIST_EXT || type == ERL_NIL_EXT || type == ERL_STRING_EXT ||
        type == ERL_MAP_EXT) {
        return true;
    }
    if (ei_decode_tuple_header(buf, &index, &arity) < 0 || arity != 2) {
        return false;
    }
    ei_get_type(buf, &index, &type, &n);
    if (type != ERL_LIST_EXT && type != ERL_NIL_EXT && type != ERL_STRING_EXT) {
        return false;
    }
    ei_skip_term(buf, &index);
    ei_get_type(buf, &index, &type, &n);
    return type == ERL_MAP_EXT;
}

/* A session call waiting for the store to return its session. */
typedef struct {
    Daemon *daemon;
    size_t pool_index;
    PoolCallRequest call; /* its strings point into this struct, which outlives the lookup */
    char session_id[EXECUTE_SESSION_ID_MAX];
    char command[EXECUTE_COMMAND_MAX];
    char correlation_id[EXECUTE_CORRELATION_ID_MAX];
} SessionCall;

/* Count a call rejected before it reached a pool, and reply with its error. */
static void reject(Daemon *d, DistCaller *caller, const char *pool, const char *command,
                   const char *correlation_id, ErrorKind kind, const char *message)
{
    daemon_obs_request_rejected(d, correlation_id, pool, command, kind);
    request_reply_error(d, caller, kind, message);
}

static void on_call_session(int status, const StoreSession *session, void *userdata)
{
    SessionCall *sc = userdata;
    Daemon *d = sc->daemon;
    WorkerPool *pool = d->pools[sc->pool_index];
    char message[512];

    if (status < 0) {
        if (status == -ENOENT) {
            snprintf(message, sizeof(message),
                     "session '%s' not found: create it with {:session, :create, id, opts}",
                     sc->session_id);
            reject(d, sc->call.caller, worker_pool_name(pool), sc->command, sc->correlation_id,
                   ERROR_SESSION_NOT_FOUND, message);
        } else {
            snprintf(message, sizeof(message), "the %s session store is unavailable: %s",
                     store_backend_name(d->store), strerror(-status));
            reject(d, sc->call.caller, worker_pool_name(pool), sc->command, sc->correlation_id,
                   ERROR_STORE_UNAVAILABLE, message);
        }
        goto out;
    }
    if (session->worker_id != STORE_WORKER_NONE &&
        !worker_pool_has_worker(pool, (uint32_t)session->worker_id)) {
        /* Reported once: the binding is cleared, so the next call starts on a fresh worker. */
        snprintf(message, sizeof(message),
                 "the worker %lld that held the state of session '%s' is gone (it crashed, "
                 "timed out or was recycled); its Python state is lost",
                 (long long)session->worker_id, sc->session_id);
        store_set_worker(d->store, session->id, STORE_WORKER_NONE, request_ignore_status, NULL);
        reject(d, sc->call.caller, worker_pool_name(pool), sc->command, sc->correlation_id,
               ERROR_SESSION_WORKER_UNAVAILABLE, message);
        goto out;
    }
    sc->call.worker_id =
        session->worker_id == STORE_WORKER_NONE ? 0 : (uint32_t)session->worker_id;
    sc->call.session_id = sc->session_id;
    sc->call.session_id_len = strlen(sc->session_id);
    worker_pool_submit(pool, &sc->call);
    sc->call.payload = NULL;
out:
    free(sc->call.payload);
    free(sc);
}

void request_ignore_status(int status, void *userdata)
{
    if (status < 0) {
        log_debug_errno(status, "Failed to update a session's worker binding");
    }
}

void request_execute(Daemon *d, DistCaller *caller, const char *request, size_t len, int index,
                     int arity, bool stream)
{
    char command[EXECUTE_COMMAND_MAX];
    char err[512];
    long command_len = 0;
    ExecuteOpts opts = {0};

    if (arity != 3 ||
        decode_binary_or_atom(request, &index, command, sizeof(command), &command_len) < 0) {
        request_reply_error(d, caller, ERROR_BAD_REQUEST,
                            "expected {:execute, command, args, opts} with the command a binary "
                            "of at most 1023 bytes");
        return;
    }
    int args_start = index;
    if (dist_term_skip(request, len, &index) < 0 || !args_shape_valid(request, args_start)) {
        reject(d, caller, opts.pool, command, NULL, ERROR_BAD_REQUEST,
                            "args must be a list (positional), a map (keyword) or {list, map}");
        return;
    }
    size_t args_len = (size_t)(index - args_start);
    snprintf(opts.pool, sizeof(opts.pool), "default");
    if (parse_opts(request, &index, &opts, err, sizeof(err)) < 0) {
        reject(d, caller, opts.pool, command, NULL, ERROR_BAD_REQUEST, err);
        return;
    }
    size_t pool_index = find_pool(d, opts.pool);
    if (pool_index == SIZE_MAX) {
        snprintf(err, sizeof(err), "unknown pool '%s'", opts.pool);
        reject(d, caller, opts.pool, command, NULL, ERROR_BAD_REQUEST, err);
        return;
    }
    if (opts.timeout_ms == 0) {
        opts.timeout_ms = d->config->pools[pool_index].request_timeout_ms;
    }
    if (strncmp(command, "python.", 7) == 0) {
        if (!module_allowed(d, pool_index, command + 7)) {
            snprintf(err, sizeof(err),
                     "command '%s' is not allowed: its module is not a configured library of "
                     "pool '%s'",
                     command, opts.pool);
            reject(d, caller, opts.pool, command, NULL, ERROR_NOT_ALLOWED, err);
            return;
        }
    } else if (!d->config->pools[pool_index].adapter[0]) {
        snprintf(err, sizeof(err),
                 "unknown command '%s': expected python.<module>.<attribute>, and pool '%s' has "
                 "no adapter with tools",
                 command, opts.pool);
        reject(d, caller, opts.pool, command, NULL, ERROR_BAD_REQUEST, err);
        return;
    }

    ei_x_buff payload;
    if (build_payload(command, command_len, request + args_start, args_len, &opts, stream,
                      &payload) < 0) {
        ei_x_free(&payload);
        reject(d, caller, opts.pool, command, NULL, ERROR_OVERLOADED, "out of memory");
        return;
    }
    /* The correlation id: unique per call and, with the node name, across the cluster. */
    char correlation_id[EXECUTE_CORRELATION_ID_MAX];
    snprintf(correlation_id, sizeof(correlation_id), "%llx-%llx",
             (unsigned long long)d->start_ms, (unsigned long long)++d->next_correlation);
    daemon_obs_request_start(d, correlation_id, opts.pool, command, caller->node,
                             opts.has_session ? opts.session_id : NULL);
    PoolCallRequest call = {
        .correlation_id = correlation_id,
        .command = command,
        .caller = caller,
        .payload = payload.buff,
        .payload_len = (size_t)payload.index,
        .timeout_ms = opts.timeout_ms,
        .stream = stream,
        .affinity = opts.affinity,
    };
    if (!opts.has_session) {
        worker_pool_submit(d->pools[pool_index], &call);
        return;
    }
    if (memchr(opts.session_id, '\0', (size_t)opts.session_id_len)) {
        free(payload.buff);
        reject(d, caller, opts.pool, command, correlation_id, ERROR_BAD_REQUEST,
               "session_id must not contain NUL bytes");
        return;
    }
    SessionCall *sc = calloc(1, sizeof(*sc));
    if (!sc) {
        free(payload.buff);
        request_reply_error(d, caller, ERROR_OVERLOADED, "out of memory");
        return;
    }
    sc->daemon = d;
    sc->pool_index = pool_index;
    sc->call = call;
    memcpy(sc->session_id, opts.session_id, (size_t)opts.session_id_len + 1);
    snprintf(sc->command, sizeof(sc->command), "%s", command);
    snprintf(sc->correlation_id, sizeof(sc->correlation_id), "%s", correlation_id);
    sc->call.command = sc->command;
    sc->call.correlation_id = sc->correlation_id;
    StoreBytes id = {.data = (const uint8_t *)sc->session_id, .len = (size_t)opts.session_id_len};
    store_get(d->store, id, on_call_session, sc);
}
