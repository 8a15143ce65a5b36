/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests of the session store. The cases common to both backends run once per backend through
 * one parameterized test each. Redis tests start their own redis-server on a free loopback port
 * (fork/exec, killed by pid at the end and by the parent-death signal if the test dies), so
 * nothing needs to run beforehand. The memory tests move a test clock instead of sleeping.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store.h"
#include "store_redis.h"
#include "store_redis_command.h"
#include "store_redis_reply.h"
#include "store_redis_script.h"

/* How long a test waits for one asynchronous completion before it fails. */
#define WAIT_LIMIT_S 5.0

typedef enum {
    BACKEND_MEMORY,
    BACKEND_REDIS,
} Backend;

typedef struct RedisServer {
    pid_t pid;
    int port;
} RedisServer;

typedef struct Harness {
    Backend backend;
    struct ev_loop *loop;
    Store *store;
    RedisServer redis;
    uint64_t clock_ms; /* the memory store's clock */
    int ups;
    int downs;
    int connect_failures;
    int last_event_error;
} Harness;

/* One completion, with copies of what the callback borrowed. */
typedef struct Result {
    bool done;
    int status;
    StoreSession session;
    uint8_t id[STORE_ID_MAX_BYTES];
    char owner[STORE_OWNER_MAX_BYTES + 1];
    bool has_owner;
    uint8_t *value;
    size_t value_len;
    uint64_t count;
    uint64_t cursor;
    char **ids; /* NUL-terminated copies; ids in these tests are text */
    size_t id_count;
    char **var_names; /* store_dump(): NUL-terminated copies of names and values */
    char **var_values;
    size_t var_count;
} Result;

static void result_clear(Result *r)
{
    free(r->value);
    for (size_t i = 0; i < r->id_count; i++) {
        free(r->ids[i]);
    }
    free(r->ids);
    for (size_t i = 0; i < r->var_count; i++) {
        free(r->var_names[i]);
        free(r->var_values[i]);
    }
    free(r->var_names);
    free(r->var_values);
    memset(r, 0, sizeof(*r));
}

/* redis-server on loopback. */

static int free_port(void)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    cr_assert_geq(fd, 0);
    cr_assert_eq(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
    close(fd);
    return ntohs(addr.sin_port);
}

static bool port_accepts(int port)
{
    struct sockaddr_in addr = {
        .sin_family = AF_INET,
        .sin_port = htons((uint16_t)port),
        .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
    };
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    bool ok = connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0;

    close(fd);
    return ok;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/*
 * Start redis-server on `port` with up to 4 more arguments in `extra` (NULL-terminated, or NULL
 * for none). Waits until it accepts connections.
 */
static void redis_start_with(RedisServer *server, int port, const char *const *extra)
{
    char port_text[16];
    pid_t pid;

    snprintf(port_text, sizeof(port_text), "%d", port);
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        const char *argv[20] = {
            "redis-server", "--port", port_text, "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning",
        };

        int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
        int argc = 13;

        for (int i = 0; extra != NULL && extra[i] != NULL && i < 4; i++) {
            argv[argc++] = extra[i];
        }
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        /* redis-server logs to stdout; its warnings stay on stderr. */
        if (devnull >= 0) {
            dup2(devnull, STDOUT_FILENO);
        }
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    server->pid = pid;
    server->port = port;
    for (int i = 0; i < 500; i++) {
        int wstatus;

        if (port_accepts(port)) {
            return;
        }
        cr_assert_eq(waitpid(pid, &wstatus, WNOHANG), 0, "redis-server exited at start");
        sleep_ms(10);
    }
    cr_assert_fail("redis-server did not listen on port %d within 5 s", port);
}

/* Start redis-server on `port`; `password` NULL for none. */
static void redis_start(RedisServer *server, int port, const char *password)
{
    const char *const with_password[] = {"--requirepass", password, NULL};

    redis_start_with(server, port, password != NULL ? with_password : NULL);
}

static void redis_kill(RedisServer *server)
{
    if (server->pid > 0) {
        kill(server->pid, SIGKILL);
        waitpid(server->pid, NULL, 0);
        server->pid = 0;
    }
}

/* The harness: a loop, a store and, for Redis, a server. */

static uint64_t test_clock(void *data)
{
    return ((Harness *)data)->clock_ms;
}

static void on_event(StoreEvent event, int error, const char *detail, void *data)
{
    Harness *h = data;

    h->last_event_error = error;
    if (event == STORE_EVENT_UP) {
        h->ups++;
    } else if (event == STORE_EVENT_DOWN) {
        h->downs++;
    } else {
        h->connect_failures++;
    }
}

static void on_wait_limit(struct ev_loop *loop, ev_timer *timer, int revents)
{
    *(bool *)timer->data = true;
}

/* Run the loop until *flag is true or `limit_s` passed; returns *flag. */
static bool run_until(Harness *h, const bool *flag, double limit_s)
{
    bool expired = false;
    ev_timer limit;

    ev_timer_init(&limit, on_wait_limit, limit_s, 0.0);
    limit.data = &expired;
    ev_timer_start(h->loop, &limit);
    while (!*flag && !expired) {
        ev_run(h->loop, EVRUN_ONCE);
    }
    ev_timer_stop(h->loop, &limit);
    return *flag;
}

static bool is_up(Harness *h)
{
    return h->ups > 0 && store_is_available(h->store);
}

/* Run the loop until the Redis store reports it is up. */
static void wait_up(Harness *h, double limit_s)
{
    bool up = false;

    for (double waited = 0; waited < limit_s && !(up = is_up(h)); waited += 0.01) {
        ev_run(h->loop, EVRUN_NOWAIT);
        sleep_ms(10);
    }
    cr_assert(up, "the Redis store did not come up within %.1f s", limit_s);
}

static void redis_url(const Harness *h, char *url, size_t size, const char *password, int db)
{
    snprintf(url, size, "redis://%s%s%s127.0.0.1:%d/%d", password != NULL ? ":" : "",
             password != NULL ? password : "", password != NULL ? "@" : "", h->redis.port, db);
}

/* Create the store of `config` (backend and url are filled in) and wait until it is usable. */
static void harness_open(Harness *h, StoreConfig *config)
{
    char url[128];

    config->backend = h->backend == BACKEND_MEMORY ? "memory" : "redis";
    config->clock_ms = test_clock;
    config->clock_data = h;
    config->on_event = on_event;
    config->event_data = h;
    if (h->backend == BACKEND_REDIS && config->url == NULL) {
        redis_url(h, url, sizeof(url), NULL, 0);
        config->url = url;
    }
    cr_assert_eq(store_new(config, h->loop, &h->store), 0);
    if (h->backend == BACKEND_REDIS) {
        wait_up(h, WAIT_LIMIT_S);
    }
}

static void harness_start(Harness *h, Backend backend, StoreConfig *config)
{
    StoreConfig defaults = {0};

    memset(h, 0, sizeof(*h));
    signal(SIGPIPE, SIG_IGN);
    h->backend = backend;
    h->clock_ms = 1000000;
    h->loop = ev_loop_new(EVFLAG_AUTO);
    cr_assert_not_null(h->loop);
    if (backend == BACKEND_REDIS) {
        redis_start(&h->redis, free_port(), NULL);
    }
    harness_open(h, config != NULL ? config : &defaults);
}

static void harness_stop(Harness *h)
{
    store_free(h->store);
    redis_kill(&h->redis);
    ev_loop_destroy(h->loop);
}

/* Callbacks that copy the results, and blocking wrappers around each operation. */

static void copy_session(Result *r, const StoreSession *session)
{
    r->session = *session;
    memcpy(r->id, session->id.data, session->id.len);
    r->session.id.data = r->id;
    r->has_owner = session->owner != NULL;
    if (session->owner != NULL) {
        snprintf(r->owner, sizeof(r->owner), "%s", session->owner);
    }
    r->session.owner = NULL;
}

static void on_session(int status, const StoreSession *session, void *userdata)
{
    Result *r = userdata;

    cr_assert_not(r->done, "callback invoked twice");
    r->status = status;
    if (status == 0) {
        copy_session(r, session);
    }
    r->done = true;
}

static void on_done(int status, void *userdata)
{
    Result *r = userdata;

    cr_assert_not(r->done, "callback invoked twice");
    r->status = status;
    r->done = true;
}

static void on_value(int status, StoreBytes value, void *userdata)
{
    Result *r = userdata;

    cr_assert_not(r->done, "callback invoked twice");
    r->status = status;
    if (status == 0) {
        r->value = malloc(value.len + 1);
        memcpy(r->value, value.data, value.len);
        r->value_len = value.len;
    }
    r->done = true;
}

static void on_count(int status, uint64_t count, void *userdata)
{
    Result *r = userdata;

    cr_assert_not(r->done, "callback invoked twice");
    r->status = status;
    r->count = count;
    r->done = true;
}

static void on_list(int status, const StoreBytes *ids, size_t count, uint64_t next_cursor,
                    void *userdata)
{
    Result *r = userdata;

    cr_assert_not(r->done, "callback invoked twice");
    r->status = status;
    r->cursor = next_cursor;
    r->ids = calloc(count + 1, sizeof(*r->ids));
    for (size_t i = 0; i < count; i++) {
        r->ids[i] = strndup((const char *)ids[i].data, ids[i].len);
    }
    r->id_count = count;
    r->done = true;
}

static void on_dump(int status, const StoreSession *session, const StoreVar *vars,
                    size_t var_count, void *userdata)
{
    Result *r = userdata;

    cr_assert_not(r->done, "callback invoked twice");
    r->status = status;
    if (status == 0) {
        copy_session(r, session);
        r->var_names = calloc(var_count + 1, sizeof(char *));
        r->var_values = calloc(var_count + 1, sizeof(char *));
        for (size_t i = 0; i < var_count; i++) {
            r->var_names[i] = strndup((const char *)vars[i].name.data, vars[i].name.len);
            r->var_values[i] = strndup((const char *)vars[i].value.data, vars[i].value.len);
        }
        r->var_count = var_count;
    }
    r->done = true;
}

/* Returns the value of variable `name` in a dump result, or NULL. */
static const char *dumped_var(const Result *r, const char *name)
{
    for (size_t i = 0; i < r->var_count; i++) {
        if (strcmp(r->var_names[i], name) == 0) {
            return r->var_values[i];
        }
    }
    return NULL;
}

static void wait_done(Harness *h, Result *r)
{
    cr_assert(run_until(h, &r->done, WAIT_LIMIT_S), "operation did not complete within %.0f s",
              WAIT_LIMIT_S);
}

static StoreBytes B(const char *s)
{
    return store_bytes_str(s);
}

/* `len` (at most 63) bytes of filler for values of a given size. */
static StoreBytes filler(size_t len)
{
    static const char digits[64] = "0123456789012345678901234567890123456789"
                                   "01234567890123456789012";

    cr_assert_leq(len, sizeof(digits) - 1);
    return (StoreBytes){.data = (const uint8_t *)digits, .len = len};
}

static int do_create(Harness *h, StoreBytes id, uint32_t ttl_s, const char *owner, Result *r)
{
    StoreCreateOpts opts = {.ttl_s = ttl_s, .owner = owner};

    result_clear(r);
    store_create(h->store, id, &opts, on_session, r);
    wait_done(h, r);
    return r->status;
}

static int do_get(Harness *h, StoreBytes id, Result *r)
{
    result_clear(r);
    store_get(h->store, id, on_session, r);
    wait_done(h, r);
    return r->status;
}

static int do_put(Harness *h, StoreBytes id, StoreBytes name, StoreBytes value)
{
    Result r = {0};

    store_put_var(h->store, id, name, value, on_done, &r);
    wait_done(h, &r);
    return r.status;
}

static int do_dump(Harness *h, StoreBytes id, Result *r)
{
    result_clear(r);
    store_dump(h->store, id, on_dump, r);
    wait_done(h, r);
    return r->status;
}

static int do_get_var(Harness *h, StoreBytes id, StoreBytes name, Result *r)
{
    result_clear(r);
    store_get_var(h->store, id, name, on_value, r);
    wait_done(h, r);
    return r->status;
}

static int do_done_op(Harness *h, void (*op)(Store *, StoreBytes, StoreDoneFn, void *),
                      StoreBytes id)
{
    Result r = {0};

    op(h->store, id, on_done, &r);
    wait_done(h, &r);
    return r.status;
}

static int do_set_worker(Harness *h, StoreBytes id, int64_t worker_id)
{
    Result r = {0};

    store_set_worker(h->store, id, worker_id, on_done, &r);
    wait_done(h, &r);
    return r.status;
}

static int do_count_op(Harness *h, void (*op)(Store *, StoreCountFn, void *), uint64_t *count)
{
    Result r = {0};

    op(h->store, on_count, &r);
    wait_done(h, &r);
    *count = r.count;
    return r.status;
}

static uint64_t count_sessions(Harness *h)
{
    uint64_t count = 0;

    cr_assert_eq(do_count_op(h, store_count, &count), 0);
    return count;
}

static int do_delete_by_owner(Harness *h, const char *owner, uint64_t *count)
{
    Result r = {0};

    store_delete_by_owner(h->store, owner, on_count, &r);
    wait_done(h, &r);
    *count = r.count;
    return r.status;
}

/* Cases run against both backends. */

static Backend backends[] = {BACKEND_MEMORY, BACKEND_REDIS};

#define BACKEND_TEST(name)                                                                    \
    ParameterizedTestParameters(store, name)                                                  \
    {                                                                                         \
        return cr_make_param_array(Backend, backends, 2);                                     \
    }                                                                                         \
    ParameterizedTest(Backend *backend, store, name)

BACKEND_TEST(create_get_delete)
{
    Harness h;
    Result r = {0};

    harness_start(&h, *backend, NULL);
    cr_assert_str_eq(store_backend_name(h.store), *backend == BACKEND_MEMORY ? "memory" : "redis");
    cr_assert_eq(do_create(&h, B("s1"), 60, "app@host", &r), 0);
    cr_assert_eq(r.session.id.len, 2);
    cr_assert_eq(memcmp(r.session.id.data, "s1", 2), 0);
    cr_assert_eq(r.session.ttl_s, 60);
    cr_assert(r.has_owner);
    cr_assert_str_eq(r.owner, "app@host");
    cr_assert_eq(r.session.worker_id, STORE_WORKER_NONE);
    cr_assert_eq(r.session.created_ms, r.session.accessed_ms);

    cr_assert_eq(do_get(&h, B("s1"), &r), 0);
    cr_assert_eq(r.session.ttl_s, 60);
    cr_assert_str_eq(r.owner, "app@host");

    /* Creating again returns the existing session; its TTL and owner stay. */
    cr_assert_eq(do_create(&h, B("s1"), 99, NULL, &r), 0);
    cr_assert_eq(r.session.ttl_s, 60);
    cr_assert(r.has_owner);
    cr_assert_eq(count_sessions(&h), 1);

    cr_assert_eq(do_create(&h, B("s2"), 0, NULL, &r), 0);
    cr_assert_eq(r.session.ttl_s, STORE_DEFAULT_TTL_S);
    cr_assert_not(r.has_owner);
    cr_assert_eq(count_sessions(&h), 2);

    cr_assert_eq(do_done_op(&h, store_delete, B("s1")), 0);
    cr_assert_eq(do_get(&h, B("s1"), &r), -ENOENT);
    cr_assert_eq(do_done_op(&h, store_delete, B("s1")), -ENOENT);
    cr_assert_eq(count_sessions(&h), 1);
    result_clear(&r);
    harness_stop(&h);
}

BACKEND_TEST(variables)
{
    static const uint8_t bin_id[] = {0x00, 0xff, 's', 0x00};
    static const uint8_t bin_name[] = {'v', 0x00, 0x80};
    static const uint8_t bin_value[] = {131, 109, 0, 0, 0, 2, 0x00, 0xfe};
    StoreBytes id = {bin_id, sizeof(bin_id)};
    StoreBytes name = {bin_name, sizeof(bin_name)};
    Harness h;
    Result r = {0};

    harness_start(&h, *backend, NULL);
    cr_assert_eq(do_put(&h, B("none"), B("x"), B("1")), -ENOENT);
    cr_assert_eq(do_get_var(&h, B("none"), B("x"), &r), -ENOENT);

    cr_assert_eq(do_create(&h, id, 0, NULL, &r), 0);
    cr_assert_eq(r.session.id.len, sizeof(bin_id));
    cr_assert_eq(memcmp(r.session.id.data, bin_id, sizeof(bin_id)), 0);
    cr_assert_eq(do_get_var(&h, id, name, &r), -ENOENT, "a variable never put is not found");
    cr_assert_eq(do_put(&h, id, name, (StoreBytes){bin_value, sizeof(bin_value)}), 0);
    cr_assert_eq(do_get_var(&h, id, name, &r), 0);
    cr_assert_eq(r.value_len, sizeof(bin_value));
    cr_assert_eq(memcmp(r.value, bin_value, sizeof(bin_value)), 0);

    cr_assert_eq(do_put(&h, id, name, B("second")), 0);
    cr_assert_eq(do_get_var(&h, id, name, &r), 0);
    cr_assert_eq(r.value_len, 6);
    cr_assert_eq(memcmp(r.value, "second", 6), 0);

    cr_assert_eq(do_put(&h, id, B("empty"), (StoreBytes){NULL, 0}), 0);
    cr_assert_eq(do_get_var(&h, id, B("empty"), &r), 0);
    cr_assert_eq(r.value_len, 0);

    /* Variables named like the metadata fields do not clash with them. */
    cr_assert_eq(do_put(&h, id, B("ttl"), B("not a number")), 0);
    cr_assert_eq(do_get(&h, id, &r), 0);
    cr_assert_eq(r.session.ttl_s, STORE_DEFAULT_TTL_S);

    cr_assert_eq(do_done_op(&h, store_delete, id), 0);
    cr_assert_eq(do_get_var(&h, id, name, &r), -ENOENT);
    result_clear(&r);
    harness_stop(&h);
}

BACKEND_TEST(dump_all_variables)
{
    Harness h;
    Result r = {0};
    uint64_t accessed;

    harness_start(&h, *backend, NULL);
    cr_assert_eq(do_dump(&h, B("none"), &r), -ENOENT);
    cr_assert_eq(do_create(&h, B("s"), 30, "node@host", &r), 0);
    cr_assert_eq(do_dump(&h, B("s"), &r), 0);
    cr_assert_eq(r.var_count, 0);
    cr_assert_eq(do_put(&h, B("s"), B("a"), B("1")), 0);
    cr_assert_eq(do_put(&h, B("s"), B("b"), B("22")), 0);
    cr_assert_eq(do_put(&h, B("s"), B("v:c"), B("")), 0);
    cr_assert_eq(do_set_worker(&h, B("s"), 5), 0);
    cr_assert_eq(do_get(&h, B("s"), &r), 0);
    accessed = r.session.accessed_ms;

    h.clock_ms += 5000;
    cr_assert_eq(do_dump(&h, B("s"), &r), 0);
    cr_assert_eq(r.session.id.len, 1);
    cr_assert_eq(r.session.ttl_s, 30);
    cr_assert_str_eq(r.owner, "node@host");
    cr_assert_eq(r.session.worker_id, 5);
    cr_assert_eq(r.session.accessed_ms, accessed, "a dump is not an access");
    cr_assert_eq(r.var_count, 3);
    cr_assert_str_eq(dumped_var(&r, "a"), "1");
    cr_assert_str_eq(dumped_var(&r, "b"), "22");
    cr_assert_str_eq(dumped_var(&r, "v:c"), "");
    result_clear(&r);
    harness_stop(&h);
}

BACKEND_TEST(touch_and_worker)
{
    Harness h;
    Result r = {0};

    harness_start(&h, *backend, NULL);
    cr_assert_eq(do_done_op(&h, store_touch, B("s")), -ENOENT);
    cr_assert_eq(do_set_worker(&h, B("s"), 3), -ENOENT);
    cr_assert_eq(do_create(&h, B("s"), 0, NULL, &r), 0);
    cr_assert_eq(do_done_op(&h, store_touch, B("s")), 0);
    cr_assert_eq(do_set_worker(&h, B("s"), 7), 0);
    cr_assert_eq(do_get(&h, B("s"), &r), 0);
    cr_assert_eq(r.session.worker_id, 7);
    cr_assert_eq(do_set_worker(&h, B("s"), 0), 0);
    cr_assert_eq(do_get(&h, B("s"), &r), 0);
    cr_assert_eq(r.session.worker_id, 0);
    cr_assert_eq(do_set_worker(&h, B("s"), STORE_WORKER_NONE), 0);
    cr_assert_eq(do_get(&h, B("s"), &r), 0);
    cr_assert_eq(r.session.worker_id, STORE_WORKER_NONE);
    cr_assert_eq(do_set_worker(&h, B("s"), -2), -EINVAL);
    result_clear(&r);
    harness_stop(&h);
}

BACKEND_TEST(value_size_limit)
{
    StoreConfig config = {.max_value_bytes = 1024};
    uint8_t value[1025];
    Harness h;
    Result r = {0};

    memset(value, 'x', sizeof(value));
    harness_start(&h, *backend, &config);
    cr_assert_eq(do_create(&h, B("s"), 0, NULL, &r), 0);
    cr_assert_eq(do_put(&h, B("s"), B("v"), (StoreBytes){value, 1024}), 0);
    cr_assert_eq(do_put(&h, B("s"), B("v"), (StoreBytes){value, 1025}), -E2BIG);
    cr_assert_eq(do_get_var(&h, B("s"), B("v"), &r), 0);
    cr_assert_eq(r.value_len, 1024, "the rejected put left the old value");
    result_clear(&r);
    harness_stop(&h);
}

BACKEND_TEST(session_quota)
{
    StoreConfig config = {.max_sessions = 3};
    Harness h;
    Result r = {0};

    harness_start(&h, *backend, &config);
    cr_assert_eq(do_create(&h, B("a"), 0, NULL, &r), 0);
    cr_assert_eq(do_create(&h, B("b"), 0, NULL, &r), 0);
    cr_assert_eq(do_create(&h, B("c"), 0, NULL, &r), 0);
    cr_assert_eq(do_create(&h, B("d"), 0, NULL, &r), -EDQUOT);
    cr_assert_eq(do_create(&h, B("a"), 0, NULL, &r), 0, "an existing id is not a new session");
    cr_assert_eq(count_sessions(&h), 3);
    cr_assert_eq(do_done_op(&h, store_delete, B("b")), 0);
    cr_assert_eq(do_create(&h, B("d"), 0, NULL, &r), 0);
    cr_assert_eq(count_sessions(&h), 3);
    result_clear(&r);
    harness_stop(&h);
}

BACKEND_TEST(variable_quota)
{
    StoreConfig config = {.max_vars = 3};
    Harness h;
    Result r = {0};

    harness_start(&h, *backend, &config);
    cr_assert_eq(do_create(&h, B("s"), 0, NULL, &r), 0);
    cr_assert_eq(do_set_worker(&h, B("s"), 1), 0, "metadata fields do not count as variables");
    cr_assert_eq(do_put(&h, B("s"), B("v1"), B("1")), 0);
    cr_assert_eq(do_put(&h, B("s"), B("v2"), B("2")), 0);
    cr_assert_eq(do_put(&h, B("s"), B("v3"), B("3")), 0);
    cr_assert_eq(do_put(&h, B("s"), B("v4"), B("4")), -EDQUOT);
    cr_assert_eq(do_put(&h, B("s"), B("v3"), B("three")), 0, "overwriting adds no variable");
    cr_assert_eq(do_get_var(&h, B("s"), B("v4"), &r), -ENOENT);
    result_clear(&r);
    harness_stop(&h);
}

BACKEND_TEST(variable_quota_with_owner)
{
    StoreConfig config = {.max_vars = 2};
    Harness h;
    Result r = {0};

    harness_start(&h, *backend, &config);
    cr_assert_eq(do_create(&h, B("s"), 0, "node@host", &r), 0);
    cr_assert_eq(do_set_worker(&h, B("s"), 4), 0);
    cr_assert_eq(do_put(&h, B("s"), B("a"), B("1")), 0);
    cr_assert_eq(do_put(&h, B("s"), B("b"), B("2")), 0);
    cr_assert_eq(do_put(&h, B("s"), B("c"), B("3")), -EDQUOT);
    cr_assert_eq(do_put(&h, B("s"), B("b"), B("two")), 0, "overwriting at the quota works");
    cr_assert_eq(do_set_worker(&h, B("s"), STORE_WORKER_NONE), 0);
    cr_assert_eq(do_put(&h, B("s"), B("c"), B("3")), -EDQUOT, "a cleared worker frees no room");
    cr_assert_eq(do_get_var(&h, B("s"), B("b"), &r), 0);
    cr_assert_eq(r.value_len, 3);
    cr_assert_eq(memcmp(r.value, "two", 3), 0);
    result_clear(&r);
    harness_stop(&h);
}

Test(store, memory_byte_quota)
{
    StoreConfig config = {.max_memory_bytes = 100};
    Harness h;
    Result r = {0};

    harness_start(&h, BACKEND_MEMORY, &config);
    cr_assert_eq(do_create(&h, B("a"), 0, NULL, &r), 0);
    cr_assert_eq(do_create(&h, B("b"), 0, NULL, &r), 0);
    /* Names and values count: 1 + 49 and 1 + 49 bytes make exactly 100. */
    cr_assert_eq(do_put(&h, B("a"), B("x"), filler(49)), 0);
    cr_assert_eq(do_put(&h, B("b"), B("y"), filler(49)), 0);
    cr_assert_eq(do_put(&h, B("b"), B("z"), B("")), -EDQUOT, "101 bytes");
    cr_assert_eq(do_put(&h, B("b"), B("y"), filler(50)), -EDQUOT,
                 "an overwrite counts the difference");
    cr_assert_eq(do_put(&h, B("b"), B("y"), B("short")), 0);
    cr_assert_eq(do_put(&h, B("b"), B("z"), B("1")), 0, "the shorter value freed room");
    cr_assert_eq(do_done_op(&h, store_delete, B("a")), 0);
    cr_assert_eq(do_put(&h, B("b"), B("w"), filler(49)), 0, "a deleted session frees its bytes");
    h.clock_ms += (uint64_t)STORE_DEFAULT_TTL_S * 1000;
    cr_assert_eq(do_create(&h, B("c"), 0, NULL, &r), 0);
    cr_assert_eq(do_put(&h, B("c"), B("x"), filler(49)), 0);
    cr_assert_eq(do_put(&h, B("c"), B("y"), filler(49)), 0,
                 "an expired session frees its bytes");
    result_clear(&r);
    harness_stop(&h);
}

static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);

    memset(s, c, n);
    s[n] = '\0';
    return s;
}

BACKEND_TEST(input_limits)
{
    char *id_max = repeat('i', STORE_ID_MAX_BYTES);
    char *id_over = repeat('i', STORE_ID_MAX_BYTES + 1);
    char *name_max = repeat('n', STORE_NAME_MAX_BYTES);
    char *name_over = repeat('n', STORE_NAME_MAX_BYTES + 1);
    char *owner_max = repeat('o', STORE_OWNER_MAX_BYTES);
    char *owner_over = repeat('o', STORE_OWNER_MAX_BYTES + 1);
    Harness h;
    Result r = {0};

    harness_start(&h, *backend, NULL);
    cr_assert_eq(do_create(&h, B(id_max), 0, NULL, &r), 0);
    cr_assert_eq(do_create(&h, B(id_over), 0, NULL, &r), -EINVAL);
    cr_assert_eq(do_get(&h, B(id_over), &r), -EINVAL);
    cr_assert_eq(do_create(&h, B(""), 0, NULL, &r), -EINVAL);
    cr_assert_eq(do_put(&h, B(id_max), B(name_max), B("v")), 0);
    cr_assert_eq(do_put(&h, B(id_max), B(name_over), B("v")), -EINVAL);
    cr_assert_eq(do_put(&h, B(id_max), B(""), B("v")), -EINVAL);
    cr_assert_eq(do_get_var(&h, B(id_max), B(name_over), &r), -EINVAL);
    cr_assert_eq(do_create(&h, B("owned"), 0, owner_max, &r), 0);
    cr_assert_str_eq(r.owner, owner_max);
    cr_assert_eq(do_create(&h, B("owned2"), 0, owner_over, &r), -EINVAL);
    cr_assert_eq(do_create(&h, B("owned3"), 0, "", &r), -EINVAL);
    cr_assert_eq(do_create(&h, B("ttl"), STORE_TTL_MAX_S, NULL, &r), 0);
    cr_assert_eq(r.session.ttl_s, STORE_TTL_MAX_S);
    cr_assert_eq(do_create(&h, B("ttl2"), STORE_TTL_MAX_S + 1, NULL, &r), -EINVAL);
    cr_assert_eq(count_sessions(&h), 3);

    result_clear(&r);
    store_list(h.store, 0, STORE_LIST_MAX_LIMIT + 1, on_list, &r);
    wait_done(&h, &r);
    cr_assert_eq(r.status, -EINVAL);
    result_clear(&r);
    store_list(h.store, 0, 0, on_list, &r);
    wait_done(&h, &r);
    cr_assert_eq(r.status, -EINVAL);
    result_clear(&r);
    store_list(h.store, 0, STORE_LIST_MAX_LIMIT, on_list, &r);
    wait_done(&h, &r);
    cr_assert_eq(r.status, 0);

    result_clear(&r);
    free(id_max);
    free(id_over);
    free(name_max);
    free(name_over);
    free(owner_max);
    free(owner_over);
    harness_stop(&h);
}

BACKEND_TEST(list_paging)
{
    enum { SESSIONS = 300, LIMIT = 16 };
    bool seen[SESSIONS] = {false};
    Harness h;
    Result r = {0};
    uint64_t cursor = 0;
    int pages = 0;
    char id[32];

    harness_start(&h, *backend, NULL);
    for (int i = 0; i < SESSIONS; i++) {
        snprintf(id, sizeof(id), "session-%d", i);
        cr_assert_eq(do_create(&h, B(id), 0, NULL, &r), 0);
    }
    do {
        result_clear(&r);
        store_list(h.store, cursor, LIMIT, on_list, &r);
        wait_done(&h, &r);
        cr_assert_eq(r.status, 0);
        /* Redis SCAN may return a few more than COUNT; a page never comes near twice it. */
        cr_assert_leq(r.id_count, 2 * LIMIT, "page %d holds %zu ids", pages, r.id_count);
        for (size_t i = 0; i < r.id_count; i++) {
            int n = -1;

            cr_assert_eq(sscanf(r.ids[i], "session-%d", &n), 1, "unexpected id %s", r.ids[i]);
            cr_assert(n >= 0 && n < SESSIONS);
            seen[n] = true;
        }
        cursor = r.cursor;
        pages++;
        cr_assert_lt(pages, 10 * SESSIONS, "the listing does not end");
    } while (cursor != 0);
    for (int i = 0; i < SESSIONS; i++) {
        cr_assert(seen[i], "session-%d was never listed", i);
    }
    cr_assert_geq(pages, SESSIONS / (2 * LIMIT), "only %d pages", pages);
    result_clear(&r);
    harness_stop(&h);
}

BACKEND_TEST(list_while_growing)
{
    enum { FIRST = 50, ADDED = 2000, LIMIT = 10 };
    bool seen[FIRST] = {false};
    StoreConfig config = {.max_sessions = FIRST + ADDED};
    Harness h;
    Result r = {0};
    uint64_t cursor = 0;
    int pages = 0;
    char id[32];

    harness_start(&h, *backend, &config);
    for (int i = 0; i < FIRST; i++) {
        snprintf(id, sizeof(id), "first-%d", i);
        cr_assert_eq(do_create(&h, B(id), 0, NULL, &r), 0);
    }
    do {
        result_clear(&r);
        store_list(h.store, cursor, LIMIT, on_list, &r);
        wait_done(&h, &r);
        cr_assert_eq(r.status, 0);
        for (size_t i = 0; i < r.id_count; i++) {
            int n = -1;

            if (sscanf(r.ids[i], "first-%d", &n) == 1) {
                cr_assert(n >= 0 && n < FIRST);
                seen[n] = true;
            }
        }
        cursor = r.cursor;
        /* After the first page the store grows far past its table size. */
        for (int i = 0; pages == 0 && i < ADDED; i++) {
            snprintf(id, sizeof(id), "added-%d", i);
            cr_assert_eq(do_create(&h, B(id), 0, NULL, &r), 0);
        }
        pages++;
        cr_assert_lt(pages, 100000, "the listing does not end");
    } while (cursor != 0);
    for (int i = 0; i < FIRST; i++) {
        cr_assert(seen[i], "first-%d, present during the whole listing, was never listed", i);
    }
    result_clear(&r);
    harness_stop(&h);
}

BACKEND_TEST(delete_by_owner)
{
    Harness h;
    Result r = {0};
    uint64_t deleted = 0;
    char id[32];

    harness_start(&h, *backend, NULL);
    for (int i = 0; i < 600; i++) {
        static const char *const owners[] = {"a@host", "b@host", NULL};
        const char *owner = owners[i % 3];

        snprintf(id, sizeof(id), "s%d", i);
        cr_assert_eq(do_create(&h, B(id), 0, owner, &r), 0);
    }
    cr_assert_eq(do_create(&h, B("a-prefix"), 0, "a@host2", &r), 0);
    cr_assert_eq(do_delete_by_owner(&h, "a@host", &deleted), 0);
    cr_assert_eq(deleted, 200);
    cr_assert_eq(count_sessions(&h), 401);
    cr_assert_eq(do_get(&h, B("s0"), &r), -ENOENT);
    cr_assert_eq(do_get(&h, B("s1"), &r), 0);
    cr_assert_str_eq(r.owner, "b@host");
    cr_assert_eq(do_get(&h, B("s2"), &r), 0);
    cr_assert_not(r.has_owner);
    cr_assert_eq(do_get(&h, B("a-prefix"), &r), 0, "only an exact owner match is deleted");
    cr_assert_eq(do_delete_by_owner(&h, "a@host", &deleted), 0);
    cr_assert_eq(deleted, 0);
    cr_assert_eq(do_delete_by_owner(&h, "", &deleted), -EINVAL);
    result_clear(&r);
    harness_stop(&h);
}

/* Memory backend: expiry with the test clock. */

Test(store, memory_ttl_expiry)
{
    Harness h;
    Result r = {0};
    uint64_t expired = 0;

    harness_start(&h, BACKEND_MEMORY, NULL);
    cr_assert_eq(do_create(&h, B("s"), 10, NULL, &r), 0);
    h.clock_ms += 9999;
    cr_assert_eq(do_get(&h, B("s"), &r), 0, "alive 1 ms before its TTL");
    cr_assert_eq(r.session.accessed_ms, h.clock_ms);
    h.clock_ms += 9999;
    cr_assert_eq(do_done_op(&h, store_touch, B("s")), 0, "the get extended the TTL");
    h.clock_ms += 10000;
    cr_assert_eq(do_get(&h, B("s"), &r), -ENOENT, "expired exactly at its TTL");
    cr_assert_eq(do_count_op(&h, store_expire, &expired), 0);
    cr_assert_eq(expired, 1, "a session dropped on access still counts as expired once");
    cr_assert_eq(do_count_op(&h, store_expire, &expired), 0);
    cr_assert_eq(expired, 0);
    result_clear(&r);
    harness_stop(&h);
}

Test(store, memory_expiry_order)
{
    Harness h;
    Result r = {0};
    uint64_t expired = 0;
    char id[32];

    harness_start(&h, BACKEND_MEMORY, NULL);
    /* TTLs 1..100 s, created in an order unrelated to their expiry. */
    for (int i = 0; i < 100; i++) {
        snprintf(id, sizeof(id), "s%d", (i * 37) % 100);
        cr_assert_eq(do_create(&h, B(id), (uint32_t)((i * 37) % 100) + 1, NULL, &r), 0);
    }
    /* Touching s0 (TTL 1 s) at 0.5 s moves its expiry to 1.5 s. */
    h.clock_ms += 500;
    cr_assert_eq(do_done_op(&h, store_touch, B("s0")), 0);
    h.clock_ms += 500;
    cr_assert_eq(do_count_op(&h, store_expire, &expired), 0);
    cr_assert_eq(expired, 0);
    h.clock_ms += 49000; /* 50 s after creation */
    cr_assert_eq(do_count_op(&h, store_expire, &expired), 0);
    cr_assert_eq(expired, 50);
    cr_assert_eq(count_sessions(&h), 50);
    cr_assert_eq(do_get(&h, B("s49"), &r), -ENOENT);
    cr_assert_eq(do_get(&h, B("s50"), &r), 0);
    h.clock_ms += 1000000;
    cr_assert_eq(count_sessions(&h), 0);
    cr_assert_eq(do_count_op(&h, store_expire, &expired), 0);
    cr_assert_eq(expired, 50);
    result_clear(&r);
    harness_stop(&h);
}

Test(store, memory_touch_reorders_expiry)
{
    Harness h;
    Result r = {0};
    uint64_t expired = 0;

    harness_start(&h, BACKEND_MEMORY, NULL);
    cr_assert_eq(do_create(&h, B("first"), 100, NULL, &r), 0);
    cr_assert_eq(do_create(&h, B("second"), 101, NULL, &r), 0);
    /* The touch moves "first" to 150 s, behind "second" at 101 s. */
    h.clock_ms += 50000;
    cr_assert_eq(do_done_op(&h, store_touch, B("first")), 0);
    h.clock_ms += 51000;
    cr_assert_eq(do_count_op(&h, store_expire, &expired), 0);
    cr_assert_eq(expired, 1);
    cr_assert_eq(do_get(&h, B("second"), &r), -ENOENT);
    cr_assert_eq(do_get(&h, B("first"), &r), 0);
    result_clear(&r);
    harness_stop(&h);
}

Test(store, memory_many_sessions)
{
    StoreConfig config = {.max_sessions = 20000};
    Harness h;
    Result r = {0};
    char id[32];

    harness_start(&h, BACKEND_MEMORY, &config);
    for (int i = 0; i < 20000; i++) {
        snprintf(id, sizeof(id), "%d", i);
        cr_assert_eq(do_create(&h, B(id), (uint32_t)(i % 50) + 1, NULL, &r), 0);
    }
    cr_assert_eq(do_create(&h, B("one more"), 0, NULL, &r), -EDQUOT);
    for (int i = 0; i < 20000; i += 7) {
        snprintf(id, sizeof(id), "%d", i);
        cr_assert_eq(do_get(&h, B(id), &r), 0);
        cr_assert_eq(r.session.ttl_s, (uint32_t)(i % 50) + 1);
    }
    h.clock_ms += 25000;
    cr_assert_eq(count_sessions(&h), 20000 / 2);
    result_clear(&r);
    harness_stop(&h);
}

/* Redis backend: real TTLs, connection loss, timeouts and URLs. */

Test(store, redis_ttl_expiry)
{
    Harness h;
    Result r = {0};
    bool never = false;
    uint64_t expired = 0;

    harness_start(&h, BACKEND_REDIS, NULL);
    cr_assert_eq(do_create(&h, B("short"), 1, NULL, &r), 0);
    cr_assert_eq(do_create(&h, B("long"), 60, NULL, &r), 0);
    cr_assert_eq(do_put(&h, B("short"), B("v"), B("1")), 0);
    cr_assert_eq(count_sessions(&h), 2);
    run_until(&h, &never, 1.3);
    cr_assert_eq(do_get(&h, B("short"), &r), -ENOENT);
    cr_assert_eq(do_get_var(&h, B("short"), B("v"), &r), -ENOENT);
    cr_assert_eq(do_get(&h, B("long"), &r), 0);
    cr_assert_eq(count_sessions(&h), 1);
    cr_assert_eq(do_count_op(&h, store_expire, &expired), 0);
    cr_assert_eq(expired, 1);
    cr_assert_eq(do_count_op(&h, store_expire, &expired), 0);
    cr_assert_eq(expired, 0);
    result_clear(&r);
    harness_stop(&h);
}

Test(store, redis_unreachable_fails_at_once)
{
    Harness h = {0};
    StoreConfig config = {.backend = "redis", .on_event = on_event, .event_data = &h};
    char url[64];
    Result r = {0};
    bool never = false;

    h.loop = ev_loop_new(EVFLAG_AUTO);
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", free_port());
    config.url = url;
    cr_assert_eq(store_new(&config, h.loop, &h.store), 0);
    store_get(h.store, B("s"), on_session, &r);
    cr_assert(r.done, "the callback ran before store_get returned");
    cr_assert_eq(r.status, -ENOTCONN);
    run_until(&h, &never, 0.5);
    cr_assert_geq(h.connect_failures, 2, "reconnects with backoff, got %d", h.connect_failures);
    cr_assert_eq(h.last_event_error, -ECONNREFUSED);
    cr_assert_eq(h.ups, 0);
    cr_assert_not(store_is_available(h.store));
    store_free(h.store);
    ev_loop_destroy(h.loop);
}

typedef struct WriteBatch {
    Result results[16];
    int completed;
} WriteBatch;

static void on_batch_done(int status, void *userdata)
{
    Result *r = userdata;

    r->status = status;
    r->done = true;
}

/* Redis killed during 16 parallel 1 MB writes, then restarted. */
Test(store, redis_killed_mid_write)
{
    StoreConfig config = {.max_value_bytes = 2 * 1024 * 1024, .command_timeout_ms = 2000};
    size_t value_len = 1024 * 1024;
    uint8_t *value = malloc(value_len);
    WriteBatch batch = {0};
    Harness h;
    Result r = {0};
    bool all_done = false;
    int failed = 0;
    char id[16];
    int port;

    memset(value, 'v', value_len);
    harness_start(&h, BACKEND_REDIS, &config);
    port = h.redis.port;
    for (int i = 0; i < 16; i++) {
        snprintf(id, sizeof(id), "w%d", i);
        cr_assert_eq(do_create(&h, B(id), 0, NULL, &r), 0);
    }
    for (int i = 0; i < 16; i++) {
        snprintf(id, sizeof(id), "w%d", i);
        store_put_var(h.store, B(id), B("big"), (StoreBytes){value, value_len}, on_batch_done,
                      &batch.results[i]);
    }
    /* One loop iteration writes the first part of 16 MB; then the server dies. */
    ev_run(h.loop, EVRUN_NOWAIT);
    redis_kill(&h.redis);
    for (double waited = 0; waited < 1.0 && !all_done; waited += 0.01) {
        ev_run(h.loop, EVRUN_NOWAIT);
        sleep_ms(10);
        all_done = true;
        for (int i = 0; i < 16; i++) {
            all_done = all_done && batch.results[i].done;
        }
    }
    cr_assert(all_done, "every write completes within 1 s of the kill");
    for (int i = 0; i < 16; i++) {
        int status = batch.results[i].status;

        cr_assert(status == 0 || status == -ENOTCONN || status == -ETIMEDOUT,
                  "write %d: status %d", i, status);
        failed += status != 0;
    }
    cr_assert_gt(failed, 0, "the kill interrupted no write");
    cr_assert_eq(h.downs, 1);

    /* While down, operations fail before the call returns. */
    result_clear(&r);
    store_get(h.store, B("w0"), on_session, &r);
    cr_assert(r.done);
    cr_assert_eq(r.status, -ENOTCONN);

    /* Back within the reconnect interval (at most 5 s) after the restart. */
    redis_start(&h.redis, port, NULL);
    h.ups = 0;
    wait_up(&h, 6.0);
    cr_assert_eq(do_create(&h, B("w0"), 0, NULL, &r), 0);
    cr_assert_eq(do_put(&h, B("w0"), B("big"), (StoreBytes){value, value_len}), 0);
    cr_assert_eq(do_get_var(&h, B("w0"), B("big"), &r), 0);
    cr_assert_eq(r.value_len, value_len);
    result_clear(&r);
    free(value);
    harness_stop(&h);
}

Test(store, redis_command_timeout)
{
    StoreConfig config = {.command_timeout_ms = 300};
    Harness h;
    Result r = {0};
    struct timespec start;
    struct timespec end;
    double elapsed;

    harness_start(&h, BACKEND_REDIS, &config);
    cr_assert_eq(do_create(&h, B("s"), 0, NULL, &r), 0);
    kill(h.redis.pid, SIGSTOP);
    clock_gettime(CLOCK_MONOTONIC, &start);
    cr_assert_eq(do_get(&h, B("s"), &r), -ETIMEDOUT);
    clock_gettime(CLOCK_MONOTONIC, &end);
    elapsed = (double)(end.tv_sec - start.tv_sec) + (end.tv_nsec - start.tv_nsec) / 1e9;
    cr_assert(elapsed >= 0.25 && elapsed < 1.0, "timed out after %.3f s", elapsed);
    cr_assert_eq(h.downs, 1, "a timeout drops the connection");
    kill(h.redis.pid, SIGCONT);
    h.ups = 0;
    wait_up(&h, 6.0);
    cr_assert_eq(do_get(&h, B("s"), &r), 0);
    result_clear(&r);
    harness_stop(&h);
}

Test(store, redis_free_cancels_pending)
{
    Harness h;
    Result r = {0};

    harness_start(&h, BACKEND_REDIS, NULL);
    store_create(h.store, B("s"), NULL, on_session, &r);
    cr_assert_not(r.done);
    store_free(h.store);
    h.store = NULL;
    cr_assert(r.done);
    cr_assert_eq(r.status, -ECANCELED);
    harness_stop(&h);
}

Test(store, redis_password_and_db)
{
    Harness h;
    StoreConfig config = {0};
    Store *db0;
    StoreConfig db0_config = {.backend = "redis"};
    char url[128];
    Result r = {0};

    memset(&h, 0, sizeof(h));
    signal(SIGPIPE, SIG_IGN);
    h.backend = BACKEND_REDIS;
    h.loop = ev_loop_new(EVFLAG_AUTO);
    redis_start(&h.redis, free_port(), "s3cret:@x");
    redis_url(&h, url, sizeof(url), "s3cret:@x", 3);
    config.url = url;
    harness_open(&h, &config);
    cr_assert_eq(do_create(&h, B("in-db-3"), 0, NULL, &r), 0);

    /* The same server's db 0 contains no such session. */
    redis_url(&h, url, sizeof(url), "s3cret:@x", 0);
    db0_config.url = url;
    cr_assert_eq(store_new(&db0_config, h.loop, &db0), 0);
    for (int i = 0; i < 500 && !store_is_available(db0); i++) {
        ev_run(h.loop, EVRUN_NOWAIT);
        sleep_ms(10);
    }
    cr_assert(store_is_available(db0));
    result_clear(&r);
    store_get(db0, B("in-db-3"), on_session, &r);
    wait_done(&h, &r);
    cr_assert_eq(r.status, -ENOENT);
    store_free(db0);
    result_clear(&r);
    harness_stop(&h);
}

Test(store, redis_out_of_memory)
{
    const char *const small_memory[] = {"--maxmemory", "4mb", "--maxmemory-policy", "noeviction",
                                        NULL};
    StoreConfig config = {.max_value_bytes = 1024 * 1024};
    size_t value_len = 1024 * 1024;
    uint8_t *value = calloc(1, value_len);
    Harness h;
    Result r = {0};
    int status = 0;
    char name[16];
    int puts = 0;

    memset(&h, 0, sizeof(h));
    signal(SIGPIPE, SIG_IGN);
    h.backend = BACKEND_REDIS;
    h.loop = ev_loop_new(EVFLAG_AUTO);
    redis_start_with(&h.redis, free_port(), small_memory);
    harness_open(&h, &config);
    cr_assert_eq(do_create(&h, B("s"), 0, NULL, &r), 0);
    for (; puts < 16 && status == 0; puts++) {
        snprintf(name, sizeof(name), "v%d", puts);
        status = do_put(&h, B("s"), B(name), (StoreBytes){value, value_len});
    }
    cr_assert_eq(status, -ENOMEM, "put %d of 1 MiB into a 4 MiB Redis: status %d", puts, status);
    cr_assert_eq(do_get_var(&h, B("s"), B("v0"), &r), 0, "reads still work");
    cr_assert_eq(r.value_len, value_len);
    cr_assert(store_is_available(h.store), "an error reply keeps the connection");
    free(value);
    result_clear(&r);
    harness_stop(&h);
}

Test(store, redis_wrong_password)
{
    Harness h;
    StoreConfig config = {.backend = "redis"};
    char url[128];
    bool never = false;

    memset(&h, 0, sizeof(h));
    h.loop = ev_loop_new(EVFLAG_AUTO);
    redis_start(&h.redis, free_port(), "right");
    redis_url(&h, url, sizeof(url), "wrong", 0);
    config.url = url;
    config.on_event = on_event;
    config.event_data = &h;
    cr_assert_eq(store_new(&config, h.loop, &h.store), 0);
    run_until(&h, &never, 0.5);
    cr_assert_eq(h.ups, 0);
    cr_assert_geq(h.connect_failures, 1);
    cr_assert_eq(h.last_event_error, -EACCES);
    harness_stop(&h);
}

Test(store, redis_key_prefix)
{
    StoreConfig config = {.key_prefix = "app*[1]:"};
    Harness h;
    Store *other;
    StoreConfig other_config = {.backend = "redis", .key_prefix = "app"};
    char url[128];
    Result r = {0};

    harness_start(&h, BACKEND_REDIS, &config);
    cr_assert_eq(do_create(&h, B("s"), 0, NULL, &r), 0);
    redis_url(&h, url, sizeof(url), NULL, 0);
    other_config.url = url;
    cr_assert_eq(store_new(&other_config, h.loop, &other), 0);
    for (int i = 0; i < 500 && !store_is_available(other); i++) {
        ev_run(h.loop, EVRUN_NOWAIT);
        sleep_ms(10);
    }
    result_clear(&r);
    store_list(other, 0, 100, on_list, &r);
    wait_done(&h, &r);
    cr_assert_eq(r.status, 0);
    cr_assert_eq(r.id_count, 0, "a glob in a prefix matches only itself");
    result_clear(&r);
    store_list(h.store, 0, 100, on_list, &r);
    wait_done(&h, &r);
    cr_assert_eq(r.id_count, 1);
    cr_assert_str_eq(r.ids[0], "s");
    store_free(other);
    result_clear(&r);
    harness_stop(&h);
}

/* INFO and admin commands for the Redis tests, on a blocking connection of the test's own. */

static redisReply *admin_command(const Harness *h, const char *command)
{
    redisContext *c = redisConnect("127.0.0.1", h->redis.port);
    redisReply *reply;

    cr_assert(c != NULL && c->err == 0, "connect to redis-server on port %d", h->redis.port);
    reply = redisCommand(c, command);
    cr_assert_not_null(reply, "%s: no reply", command);
    cr_assert_neq(reply->type, REDIS_REPLY_ERROR, "%s: %s", command, reply->str);
    redisFree(c);
    return reply;
}

static void admin_run(const Harness *h, const char *command)
{
    freeReplyObject(admin_command(h, command));
}

/* Returns the number after `key` (say "cmdstat_eval:calls=") in INFO `section`, 0 if absent. */
static unsigned long long info_number(const Harness *h, const char *section, const char *key)
{
    char command[64];
    redisReply *reply;
    const char *at;
    unsigned long long n = 0;

    snprintf(command, sizeof(command), "INFO %s", section);
    reply = admin_command(h, command);
    cr_assert_eq(reply->type, REDIS_REPLY_STRING);
    at = strstr(reply->str, key);
    if (at != NULL) {
        n = strtoull(at + strlen(key), NULL, 10);
    }
    freeReplyObject(reply);
    return n;
}

static unsigned long long eval_calls(const Harness *h)
{
    return info_number(h, "commandstats", "cmdstat_eval:calls=");
}

static unsigned long long evalsha_calls(const Harness *h)
{
    return info_number(h, "commandstats", "cmdstat_evalsha:calls=");
}

static unsigned long long noscript_errors(const Harness *h)
{
    return info_number(h, "errorstats", "errorstat_NOSCRIPT:count=");
}

/*
 * Call every script of the Redis store at least once on session "s" (owner "node@host", one
 * variable "v") and check each result. The create script runs twice, on "s" and on "d".
 */
static void run_every_script(Harness *h)
{
    Result r = {0};
    uint64_t count = 0;

    cr_assert_eq(do_create(h, B("s"), 0, "node@host", &r), 0);
    cr_assert_str_eq(r.owner, "node@host");
    cr_assert_eq(do_get(h, B("s"), &r), 0);
    cr_assert_eq(r.session.ttl_s, STORE_DEFAULT_TTL_S);
    cr_assert_eq(do_put(h, B("s"), B("v"), B("value")), 0);
    cr_assert_eq(do_get_var(h, B("s"), B("v"), &r), 0);
    cr_assert_eq(r.value_len, 5);
    cr_assert_eq(memcmp(r.value, "value", 5), 0);
    cr_assert_eq(do_dump(h, B("s"), &r), 0);
    cr_assert_eq(r.var_count, 1);
    cr_assert_eq(do_done_op(h, store_touch, B("s")), 0);
    cr_assert_eq(do_set_worker(h, B("s"), 2), 0);
    cr_assert_eq(do_create(h, B("d"), 0, NULL, &r), 0);
    cr_assert_eq(do_done_op(h, store_delete, B("d")), 0);
    cr_assert_eq(do_count_op(h, store_count, &count), 0);
    cr_assert_eq(count, 1);
    cr_assert_eq(do_count_op(h, store_expire, &count), 0);
    cr_assert_eq(count, 0);
    cr_assert_eq(do_delete_by_owner(h, "other@host", &count), 0);
    cr_assert_eq(count, 0);
    result_clear(&r);
}

Test(store, redis_calls_use_evalsha)
{
    Harness h;

    harness_start(&h, BACKEND_REDIS, NULL);
    run_every_script(&h);
    cr_assert_eq(eval_calls(&h), 0, "the handshake loaded every script");
    cr_assert_geq(evalsha_calls(&h), STORE_REDIS_SCRIPTS + 1);
    cr_assert_eq(noscript_errors(&h), 0);
    harness_stop(&h);
}

Test(store, redis_script_flush_retried)
{
    Harness h;

    harness_start(&h, BACKEND_REDIS, NULL);
    run_every_script(&h);
    admin_run(&h, "SCRIPT FLUSH");
    admin_run(&h, "CONFIG RESETSTAT");
    run_every_script(&h);
    cr_assert_eq(noscript_errors(&h), STORE_REDIS_SCRIPTS, "one NOSCRIPT per script");
    cr_assert_eq(eval_calls(&h), STORE_REDIS_SCRIPTS, "one EVAL per script caches it again");
    cr_assert(store_is_available(h.store), "a NOSCRIPT reply keeps the connection");
    run_every_script(&h);
    cr_assert_eq(eval_calls(&h), STORE_REDIS_SCRIPTS, "later calls use EVALSHA again");
    harness_stop(&h);
}

/* 20 puts in flight when the script cache is empty: each retry runs, in the order sent. */
Test(store, redis_script_flush_pipelined)
{
    Result results[20] = {0};
    char values[20][4];
    Harness h;
    Result r = {0};
    bool all_done = false;
    unsigned long long evals;

    harness_start(&h, BACKEND_REDIS, NULL);
    cr_assert_eq(do_create(&h, B("s"), 0, NULL, &r), 0);
    admin_run(&h, "SCRIPT FLUSH");
    admin_run(&h, "CONFIG RESETSTAT");
    for (int i = 0; i < 20; i++) {
        snprintf(values[i], sizeof(values[i]), "%d", i + 1);
        store_put_var(h.store, B("s"), B("v"), B(values[i]), on_batch_done, &results[i]);
    }
    for (double waited = 0; waited < WAIT_LIMIT_S && !all_done; waited += 0.01) {
        ev_run(h.loop, EVRUN_NOWAIT);
        sleep_ms(10);
        all_done = true;
        for (int i = 0; i < 20; i++) {
            all_done = all_done && results[i].done;
        }
    }
    cr_assert(all_done, "every put completes");
    for (int i = 0; i < 20; i++) {
        cr_assert_eq(results[i].status, 0, "put %d: status %d", i + 1, results[i].status);
    }
    evals = eval_calls(&h);
    cr_assert_geq(evals, 1);
    cr_assert_leq(evals, 20);
    cr_assert_eq(noscript_errors(&h), evals);
    cr_assert_eq(do_get_var(&h, B("s"), B("v"), &r), 0);
    cr_assert_eq(r.value_len, 2);
    cr_assert_eq(memcmp(r.value, "20", 2), 0, "the last put sent is the last one run");
    result_clear(&r);
    harness_stop(&h);
}

Test(store, redis_restart_reloads_scripts)
{
    Harness h;
    Result r = {0};
    int port;

    harness_start(&h, BACKEND_REDIS, NULL);
    port = h.redis.port;
    run_every_script(&h);
    redis_kill(&h.redis);
    redis_start(&h.redis, port, NULL);
    h.ups = 0;
    wait_up(&h, 6.0);
    cr_assert_eq(do_get(&h, B("s"), &r), -ENOENT, "the new server has no data");
    run_every_script(&h);
    cr_assert_eq(eval_calls(&h), 0, "the reconnect loaded every script");
    cr_assert_eq(noscript_errors(&h), 0);
    cr_assert_geq(evalsha_calls(&h), STORE_REDIS_SCRIPTS + 2);
    result_clear(&r);
    harness_stop(&h);
}

/* A Redis that renamed SCRIPT away rejects SCRIPT LOAD: every call uses EVAL. */
Test(store, redis_without_script_command)
{
    const char *const no_script[] = {"--rename-command", "SCRIPT", "", NULL};
    StoreConfig config = {0};
    Harness h;

    memset(&h, 0, sizeof(h));
    signal(SIGPIPE, SIG_IGN);
    h.backend = BACKEND_REDIS;
    h.loop = ev_loop_new(EVFLAG_AUTO);
    redis_start_with(&h.redis, free_port(), no_script);
    harness_open(&h, &config);
    run_every_script(&h);
    cr_assert_eq(evalsha_calls(&h), 0);
    cr_assert_geq(eval_calls(&h), STORE_REDIS_SCRIPTS + 1);
    harness_stop(&h);
}

/*
 * Wait 1.3 s, more than half of a 2 s TTL, so that a call that did not renew the TTL or the
 * expiry index leaves the session expired at the next check. 0.7 s are left for a slow machine.
 */
static void wait_renewal_gap(Harness *h)
{
    bool never = false;

    run_until(h, &never, 1.3);
    cr_assert_eq(count_sessions(h), 1, "the last call renewed the expiry index entry");
}

/* Every operation on a session but dump renews its Redis TTL and its expiry index entry. */
Test(store, redis_access_renews_ttl)
{
    Harness h;
    Result r = {0};
    bool never = false;
    uint64_t accessed;

    harness_start(&h, BACKEND_REDIS, NULL);
    cr_assert_eq(do_create(&h, B("s"), 2, NULL, &r), 0);
    wait_renewal_gap(&h);
    cr_assert_eq(do_get(&h, B("s"), &r), 0);
    wait_renewal_gap(&h);
    cr_assert_eq(do_get_var(&h, B("s"), B("missing"), &r), -ENOENT);
    wait_renewal_gap(&h);
    cr_assert_eq(do_put(&h, B("s"), B("v"), B("1")), 0);
    wait_renewal_gap(&h);
    cr_assert_eq(do_done_op(&h, store_touch, B("s")), 0);
    wait_renewal_gap(&h);
    cr_assert_eq(do_set_worker(&h, B("s"), 4), 0);
    wait_renewal_gap(&h);
    cr_assert_eq(do_set_worker(&h, B("s"), STORE_WORKER_NONE), 0);
    wait_renewal_gap(&h);
    cr_assert_eq(do_create(&h, B("s"), 2, NULL, &r), 0, "creating again is an access");
    wait_renewal_gap(&h);
    cr_assert_eq(do_get(&h, B("s"), &r), 0, "alive 10 s after a create with a 2 s TTL");
    accessed = r.session.accessed_ms;

    cr_assert_eq(do_dump(&h, B("s"), &r), 0);
    cr_assert_eq(r.session.accessed_ms, accessed, "get returns the access time it stored");
    cr_assert_eq(r.session.worker_id, STORE_WORKER_NONE);
    run_until(&h, &never, 1.3);
    cr_assert_eq(do_dump(&h, B("s"), &r), 0);
    run_until(&h, &never, 1.0);
    cr_assert_eq(do_dump(&h, B("s"), &r), -ENOENT, "a dump is not an access");
    cr_assert_eq(count_sessions(&h), 0);
    result_clear(&r);
    harness_stop(&h);
}

/* Run snakepit-store-migrate with `args`; returns its exit status and its stdout in `out`. */
static int run_migrate(const char *const *args, char *out, size_t size)
{
    const char *path = getenv("SNAKEPIT_STORE_MIGRATE");
    const char *argv[16] = {"snakepit-store-migrate"};
    size_t used = 0;
    int fds[2];
    int wstatus;
    pid_t pid;
    ssize_t n;

    cr_assert_not_null(path, "SNAKEPIT_STORE_MIGRATE is not set: run the test through meson");
    for (int i = 0; args[i] != NULL; i++) {
        cr_assert_lt(i, 14);
        argv[i + 1] = args[i];
    }
    cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        execv(path, (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    while (used + 1 < size && (n = read(fds[0], out + used, size - used - 1)) > 0) {
        used += (size_t)n;
    }
    out[used] = '\0';
    close(fds[0]);
    cr_assert_eq(waitpid(pid, &wstatus, 0), pid);
    cr_assert(WIFEXITED(wstatus));
    return WEXITSTATUS(wstatus);
}

/* Open a second Redis store on the harness's server with `prefix` and wait until it is up. */
static Store *open_prefix(Harness *h, const char *prefix)
{
    StoreConfig config = {.backend = "redis", .key_prefix = prefix};
    char url[128];
    Store *store;

    redis_url(h, url, sizeof(url), NULL, 0);
    config.url = url;
    cr_assert_eq(store_new(&config, h->loop, &store), 0);
    for (int i = 0; i < 500 && !store_is_available(store); i++) {
        ev_run(h->loop, EVRUN_NOWAIT);
        sleep_ms(10);
    }
    cr_assert(store_is_available(store));
    return store;
}

Test(store, migrate_between_prefixes)
{
    static const uint8_t bin_value[] = {131, 0, 0xff};
    Harness h;
    Result r = {0};
    Store *source;
    char url[128];
    char out[4096];

    harness_start(&h, BACKEND_REDIS, NULL);
    redis_url(&h, url, sizeof(url), NULL, 0);
    cr_assert_eq(do_create(&h, B("s1"), 120, "a@host", &r), 0);
    cr_assert_eq(do_put(&h, B("s1"), B("x"), B("1")), 0);
    cr_assert_eq(do_put(&h, B("s1"), B("bin"), (StoreBytes){bin_value, sizeof(bin_value)}), 0);
    cr_assert_eq(do_create(&h, B("s2"), 0, NULL, &r), 0);
    cr_assert_eq(do_create(&h, B("s3"), 0, NULL, &r), 0);
    cr_assert_eq(do_put(&h, B("s3"), B("y"), B("2")), 0);
    cr_assert_eq(do_put(&h, B("s3"), B("z"), B("3")), 0);

    /* The target is another prefix on the same server: open it as the harness store. */
    source = h.store;
    h.store = open_prefix(&h, "copy:");

    cr_assert_eq(run_migrate((const char *[]){"--from", url, "--to", url, "--to-prefix", "copy:",
                                              "--dry-run", NULL},
                             out, sizeof(out)),
                 0);
    cr_assert(strstr(out, "would copy 3 sessions with 4 variables") != NULL, "output: %s", out);
    cr_assert_eq(count_sessions(&h), 0, "a dry run writes nothing");

    for (int run = 0; run < 2; run++) {
        cr_assert_eq(run_migrate((const char *[]){"--from", url, "--to", url, "--to-prefix",
                                                  "copy:", NULL},
                                 out, sizeof(out)),
                     0, "run %d", run);
        cr_assert(strstr(out, "copied 3 sessions with 4 variables") != NULL, "output: %s", out);
        cr_assert_eq(count_sessions(&h), 3, "run %d", run);
    }
    cr_assert_eq(do_dump(&h, B("s1"), &r), 0);
    cr_assert_eq(r.session.ttl_s, 120);
    cr_assert_str_eq(r.owner, "a@host");
    cr_assert_eq(r.var_count, 2);
    cr_assert_str_eq(dumped_var(&r, "x"), "1");
    cr_assert_eq(do_get_var(&h, B("s1"), B("bin"), &r), 0);
    cr_assert_eq(r.value_len, sizeof(bin_value));
    cr_assert_eq(memcmp(r.value, bin_value, sizeof(bin_value)), 0);
    cr_assert_eq(do_dump(&h, B("s2"), &r), 0);
    cr_assert_not(r.has_owner);
    cr_assert_eq(r.var_count, 0);

    /* A value over the target's limit fails that session only. */
    cr_assert_eq(run_migrate((const char *[]){"--from", url, "--to", url, "--to-prefix", "small:",
                                              "--max-value-bytes", "1", NULL},
                             out, sizeof(out)),
                 1);
    cr_assert(strstr(out, "copied 2 sessions with 2 variables; 0 skipped (gone since listed), "
                          "1 failed") != NULL,
              "output: %s", out);

    cr_assert_eq(run_migrate((const char *[]){"--from", url, "--to", url, NULL}, out, sizeof(out)),
                 64, "the source and the target are the same store");
    cr_assert_eq(run_migrate((const char *[]){"--from", url, NULL}, out, sizeof(out)), 64);
    store_free(source);
    result_clear(&r);
    harness_stop(&h);
}

/* Hand-built hiredis replies for the parser tests; reply_free() frees a whole tree. */

static redisReply *reply_new(int type)
{
    redisReply *r = calloc(1, sizeof(*r));

    r->type = type;
    return r;
}

static redisReply *reply_int(long long value)
{
    redisReply *r = reply_new(REDIS_REPLY_INTEGER);

    r->integer = value;
    return r;
}

static redisReply *reply_str(const char *s)
{
    redisReply *r = reply_new(REDIS_REPLY_STRING);

    r->str = strdup(s);
    r->len = strlen(s);
    return r;
}

static redisReply *reply_error(const char *s)
{
    redisReply *r = reply_str(s);

    r->type = REDIS_REPLY_ERROR;
    return r;
}

/* An array of `n` replies (stolen). */
static redisReply *reply_array(size_t n, ...)
{
    redisReply *r = reply_new(REDIS_REPLY_ARRAY);
    va_list ap;

    r->elements = n;
    r->element = calloc(n + 1, sizeof(*r->element));
    va_start(ap, n);
    for (size_t i = 0; i < n; i++) {
        r->element[i] = va_arg(ap, redisReply *);
    }
    va_end(ap);
    return r;
}

static void reply_free(redisReply *r)
{
    for (size_t i = 0; i < r->elements; i++) {
        reply_free(r->element[i]);
    }
    free(r->element);
    free(r->str);
    free(r);
}

static int parse_session_reply(redisReply *r)
{
    StoreSession session = {.ttl_s = 7};
    int status = store_redis_reply_session(r, B("id"), &session);

    if (status != 0) {
        cr_assert_eq(session.ttl_s, 7, "output written on failure");
    }
    reply_free(r);
    return status;
}

Test(store, redis_reply_session_shapes)
{
    StoreSession session;
    redisReply *r;

    r = reply_array(6, reply_int(0), reply_str("10"), reply_str("20"), reply_str("30"),
                    reply_str("node@h"), reply_str("4"));
    cr_assert_eq(store_redis_reply_session(r, B("id"), &session), 0);
    cr_assert_eq(session.created_ms, 10);
    cr_assert_eq(session.accessed_ms, 20);
    cr_assert_eq(session.ttl_s, 30);
    cr_assert_str_eq(session.owner, "node@h");
    cr_assert_eq(session.worker_id, 4);
    reply_free(r);

    cr_assert_eq(parse_session_reply(reply_array(1, reply_int(1))), -ENOENT);
    cr_assert_eq(parse_session_reply(reply_array(1, reply_int(3))), -EDQUOT);
    cr_assert_eq(parse_session_reply(reply_array(1, reply_int(9))), -EPROTO);
    cr_assert_eq(parse_session_reply(reply_array(0)), -EPROTO);
    cr_assert_eq(parse_session_reply(reply_array(1, reply_str("0"))), -EPROTO);
    cr_assert_eq(parse_session_reply(reply_int(0)), -EPROTO);
    cr_assert_eq(parse_session_reply(reply_error("ERR something")), -EPROTO);
    cr_assert_eq(parse_session_reply(reply_error("OOM command not allowed")), -ENOMEM);
    cr_assert_eq(parse_session_reply(reply_error("LOADING Redis is loading")), -EBUSY);
    cr_assert_eq(parse_session_reply(reply_error("READONLY You can't write")), -EROFS);
    cr_assert_eq(parse_session_reply(reply_array(5, reply_int(0), reply_str("1"), reply_str("2"),
                                                 reply_str("3"), reply_new(REDIS_REPLY_NIL))),
                 -EPROTO, "five elements");
    cr_assert_eq(parse_session_reply(reply_array(6, reply_int(0), reply_str("1"), reply_str("x"),
                                                 reply_str("3"), reply_new(REDIS_REPLY_NIL),
                                                 reply_new(REDIS_REPLY_NIL))),
                 -EPROTO, "accessed is not a number");
    cr_assert_eq(parse_session_reply(reply_array(6, reply_int(0), reply_str("1"), reply_str("2"),
                                                 reply_str("31536001"),
                                                 reply_new(REDIS_REPLY_NIL),
                                                 reply_new(REDIS_REPLY_NIL))),
                 -EPROTO, "TTL over the limit");
    cr_assert_eq(parse_session_reply(reply_array(6, reply_int(0), reply_str("1"), reply_str("2"),
                                                 reply_str("3"), reply_int(5),
                                                 reply_new(REDIS_REPLY_NIL))),
                 -EPROTO, "owner is an integer");
    cr_assert_eq(parse_session_reply(reply_array(6, reply_int(0), reply_str("1"), reply_str("2"),
                                                 reply_str("3"), reply_new(REDIS_REPLY_NIL),
                                                 reply_str("-1"))),
                 -EPROTO, "negative worker");
    cr_assert_eq(parse_session_reply(reply_array(6, reply_int(0), reply_str("1"), reply_str("2"),
                                                 reply_str("3"), reply_new(REDIS_REPLY_NIL),
                                                 reply_str("99999999999999999999"))),
                 -EPROTO, "worker over 64 bits");
}

Test(store, redis_reply_dump_and_scan_shapes)
{
    StoreSession session;
    StoreVar *vars = NULL;
    StoreBytes *ids = NULL;
    size_t count = 0;
    uint64_t cursor = 0;
    redisReply *r;

    r = reply_array(2, reply_int(0),
                    reply_array(8, reply_str("ttl"), reply_str("5"), reply_str("v:a"),
                                reply_str("1"), reply_str("ownerx"), reply_str("ignored"),
                                reply_str("v:"), reply_str("not a variable")));
    cr_assert_eq(store_redis_reply_dump(r, B("id"), &session, &vars, &count), 0);
    cr_assert_eq(session.ttl_s, 5);
    cr_assert_null(session.owner, "only the exact field name \"owner\" is the owner");
    cr_assert_eq(count, 1);
    cr_assert_eq(vars[0].name.len, 1);
    cr_assert_eq(vars[0].name.data[0], 'a');
    free(vars);
    reply_free(r);

    vars = NULL;
    r = reply_array(2, reply_int(0), reply_array(3, reply_str("ttl"), reply_str("5"),
                                                 reply_str("v:a")));
    cr_assert_eq(store_redis_reply_dump(r, B("id"), &session, &vars, &count), -EPROTO,
                 "odd field count");
    cr_assert_null(vars);
    reply_free(r);
    r = reply_array(2, reply_int(0), reply_array(2, reply_str("v:a"), reply_int(1)));
    cr_assert_eq(store_redis_reply_dump(r, B("id"), &session, &vars, &count), -EPROTO,
                 "integer value");
    cr_assert_null(vars);
    reply_free(r);

    r = reply_array(2, reply_str("17"),
                    reply_array(4, reply_str("p:session:a"), reply_str("p:session:"),
                                reply_int(3), reply_str("other:b")));
    cr_assert_eq(store_redis_reply_scan(r, "p:session:", &cursor, &ids, &count), 0);
    cr_assert_eq(cursor, 17);
    cr_assert_eq(count, 1, "keys without an id after the prefix are left out");
    cr_assert_eq(ids[0].len, 1);
    cr_assert_eq(ids[0].data[0], 'a');
    free(ids);
    reply_free(r);

    ids = NULL;
    r = reply_array(2, reply_str("x"), reply_array(0));
    cr_assert_eq(store_redis_reply_scan(r, "p:", &cursor, &ids, &count), -EPROTO);
    cr_assert_null(ids);
    reply_free(r);
    r = reply_error("LOADING Redis is loading");
    cr_assert_eq(store_redis_reply_scan(r, "p:", &cursor, &ids, &count), -EBUSY);
    reply_free(r);
}

typedef struct UrlCase {
    const char *url;
    int status;
    const char *host;
    int port;
    const char *password;
    int db;
} UrlCase;

/* The script call encoding must match hiredis's own, byte for byte. */
Test(store, redis_command_encoding)
{
    static const uint8_t binary[] = {'a', '\r', '\n', 0x00, 0xff};
    static const char sha[] = "0123456789abcdef0123456789abcdef01234567";
    const StoreBytes args[] = {
        store_bytes_str("2"),
        store_bytes_str("P session:s"),
        {.data = binary, .len = sizeof(binary)},
        {.data = NULL, .len = 0},
    };
    const char *argv[6] = {"EVALSHA", sha};
    size_t lens[6] = {strlen("EVALSHA"), strlen(sha)};
    StoreRedisCommandArgs encoded = {0};
    const char *command;
    char *expected;
    char *eval;
    int expected_len;
    size_t len;

    for (int i = 0; i < 4; i++) {
        argv[i + 2] = args[i].data != NULL ? (const char *)args[i].data : "";
        lens[i + 2] = args[i].len;
    }
    cr_assert_eq(store_redis_command_args_encode(4, args, &encoded), 0);
    cr_assert_eq(encoded.count, 4);
    command = store_redis_command_evalsha(&encoded, sha, &len);
    expected_len = redisFormatCommandArgv(&expected, 6, argv, lens);
    cr_assert_gt(expected_len, 0);
    cr_assert_eq(len, (size_t)expected_len);
    cr_assert_eq(memcmp(command, expected, len), 0, "EVALSHA differs from hiredis's encoding");
    redisFreeCommand(expected);

    argv[0] = "EVAL";
    lens[0] = strlen("EVAL");
    argv[1] = "return 1";
    lens[1] = strlen("return 1");
    eval = store_redis_command_eval(&encoded, "return 1", &len);
    cr_assert_not_null(eval);
    expected_len = redisFormatCommandArgv(&expected, 6, argv, lens);
    cr_assert_eq(len, (size_t)expected_len);
    cr_assert_eq(memcmp(eval, expected, len), 0, "EVAL differs from hiredis's encoding");
    redisFreeCommand(expected);
    free(eval);

    store_redis_command_args_free(&encoded);
    cr_assert_null(encoded.buffer);
    store_redis_command_args_free(&encoded);
}

Test(store, redis_url_parse)
{
    static const UrlCase cases[] = {
        {"redis://127.0.0.1:6380/2", 0, "127.0.0.1", 6380, "", 2},
        {"redis://localhost", 0, "localhost", 6379, "", 0},
        {"redis://localhost/", -EINVAL, NULL, 0, NULL, 0},
        {"redis://h:1/0", 0, "h", 1, "", 0},
        {"redis://h:65535", 0, "h", 65535, "", 0},
        {"redis://:pw@h:7000/15", 0, "h", 7000, "pw", 15},
        {"redis://:p:w@x@h", 0, "h", 6379, "p:w@x", 0},
        {"redis://[::1]:6390/1", 0, "::1", 6390, "", 1},
        {"redis://[::1]", 0, "::1", 6379, "", 0},
        {"redis://h:0", -EINVAL, NULL, 0, NULL, 0},
        {"redis://h:65536", -EINVAL, NULL, 0, NULL, 0},
        {"redis://h:port", -EINVAL, NULL, 0, NULL, 0},
        {"redis://h:", -EINVAL, NULL, 0, NULL, 0},
        {"redis://h:-1", -EINVAL, NULL, 0, NULL, 0},
        {"redis://h/x", -EINVAL, NULL, 0, NULL, 0},
        {"redis://h/65536", -EINVAL, NULL, 0, NULL, 0},
        {"redis://:@h", -EINVAL, NULL, 0, NULL, 0},
        {"redis://user:pw@h", -EINVAL, NULL, 0, NULL, 0},
        {"redis://", -EINVAL, NULL, 0, NULL, 0},
        {"redis://:6379", -EINVAL, NULL, 0, NULL, 0},
        {"redis://[::1", -EINVAL, NULL, 0, NULL, 0},
        {"redis://[::1]x", -EINVAL, NULL, 0, NULL, 0},
        {"http://h:6379", -EINVAL, NULL, 0, NULL, 0},
        {"", -EINVAL, NULL, 0, NULL, 0},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const UrlCase *c = &cases[i];
        StoreRedisUrl url = {.port = -7};

        cr_assert_eq(store_redis_url_parse(c->url, &url), c->status, "url \"%s\"", c->url);
        if (c->status != 0) {
            cr_assert_eq(url.port, -7, "url \"%s\": output written on failure", c->url);
            continue;
        }
        cr_assert_str_eq(url.host, c->host, "url \"%s\"", c->url);
        cr_assert_eq(url.port, c->port, "url \"%s\"", c->url);
        cr_assert_str_eq(url.password, c->password, "url \"%s\"", c->url);
        cr_assert_eq(url.db, c->db, "url \"%s\"", c->url);
    }
    cr_assert_eq(store_redis_url_parse(NULL, &(StoreRedisUrl){0}), -EINVAL);
}

Test(store, config_errors)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    Store *store = NULL;

    cr_assert_eq(store_new(&(StoreConfig){.backend = "sqlite"}, loop, &store), -EINVAL);
    cr_assert_eq(store_new(&(StoreConfig){.backend = "redis", .url = "redis://h:0"}, loop, &store),
                 -EINVAL);
    cr_assert_eq(store_new(&(StoreConfig){.backend = "redis"}, loop, &store), -EINVAL);
    cr_assert_eq(store_new(&(StoreConfig){.default_ttl_s = STORE_TTL_MAX_S + 1}, loop, &store),
                 -EINVAL);
    cr_assert_null(store, "no store is returned on failure");
    cr_assert_eq(store_new(&(StoreConfig){.default_ttl_s = STORE_TTL_MAX_S}, loop, &store), 0);
    cr_assert_str_eq(store_backend_name(store), "memory");
    cr_assert(store_is_available(store));
    store_free(store);
    store_free(NULL);
    ev_loop_destroy(loop);
}
