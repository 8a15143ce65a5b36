/* SPDX-License-Identifier: Apache-2.0 */
/*
 * snakepit-store-migrate: copy every session, with its owner, TTL and variables, from one Redis
 * store (URL and key prefix) to another through the store interface. Sessions are copied one
 * at a time: list a page of the source, dump each session, create it in the target and put each
 * variable. Copying again is harmless, because create finds an existing session and put
 * overwrites a variable, so an interrupted run can simply be repeated.
 *
 * What is not copied: the created and last-access times (the copy starts a fresh TTL period),
 * and the preferred worker, because worker ids belong to one daemon's pool. Variables that exist
 * only in the target stay. Memory stores live inside a daemon and cannot be reached from here.
 *
 * Exit status: 0 when every session was copied, 1 when some failed, 64 bad usage, 69 a store
 * was unreachable or became unreachable.
 */
#include <errno.h>
#include <ev.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

#define MIGRATE_EXIT_FAILED 1
#define MIGRATE_EXIT_USAGE 64
#define MIGRATE_EXIT_UNAVAILABLE 69
#define MIGRATE_CONNECT_WAIT_S 5.0
#define MIGRATE_PAGE_LIMIT 100

/* A deep copy of one dumped session. */
typedef struct SessionCopy {
    StoreBytes id;
    uint32_t ttl_s;
    char *owner;
    StoreVar *vars;
    size_t var_count;
} SessionCopy;

typedef struct Migration {
    struct ev_loop *loop;
    Store *source;
    Store *target;
    const char *source_url;
    const char *target_url;
    bool dry_run;
    bool verbose;
    uint64_t cursor;
    StoreBytes *page; /* ids of the current page, new copies */
    size_t page_count;
    size_t page_index;
    SessionCopy session;
    size_t var_index;
    uint64_t copied_sessions;
    uint64_t copied_vars;
    uint64_t skipped;
    uint64_t failed;
    int exit_status;
    bool finished;
} Migration;

static void next_session(Migration *m);
static void next_page(Migration *m);

/* Print `bytes` to `out`, escaping bytes that are not printable ASCII as \xNN. */
static void print_bytes(FILE *out, StoreBytes bytes)
{
    for (size_t i = 0; i < bytes.len; i++) {
        uint8_t c = bytes.data[i];

        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"') {
            fputc(c, out);
        } else {
            fprintf(out, "\\x%02x", c);
        }
    }
}

static bool bytes_copy(StoreBytes from, StoreBytes *to)
{
    uint8_t *data = malloc(from.len + 1);

    if (data == NULL) {
        return false;
    }
    memcpy(data, from.data, from.len);
    *to = (StoreBytes){.data = data, .len = from.len};
    return true;
}

static void session_copy_clear(SessionCopy *copy)
{
    free((void *)copy->id.data);
    free(copy->owner);
    for (size_t i = 0; i < copy->var_count; i++) {
        free((void *)copy->vars[i].name.data);
        free((void *)copy->vars[i].value.data);
    }
    free(copy->vars);
    memset(copy, 0, sizeof(*copy));
}

static void page_clear(Migration *m)
{
    for (size_t i = 0; i < m->page_count; i++) {
        free((void *)m->page[i].data);
    }
    free(m->page);
    m->page = NULL;
    m->page_count = 0;
    m->page_index = 0;
}

static void finish(Migration *m, int exit_status)
{
    if (exit_status > m->exit_status) {
        m->exit_status = exit_status;
    }
    m->finished = true;
}

/* Report a failed operation. Returns true when the migration cannot go on. */
static bool report_failure(Migration *m, const char *what, StoreBytes id, int status)
{
    fprintf(stderr, "Failed to %s session \"", what);
    print_bytes(stderr, id);
    fprintf(stderr, "\": %s\n", strerror(-status));
    if (status == -ENOTCONN || status == -ETIMEDOUT) {
        fprintf(stderr, "Stopping: a store is unavailable. Run the migration again to resume.\n");
        finish(m, MIGRATE_EXIT_UNAVAILABLE);
        return true;
    }
    m->failed++;
    return false;
}

static void on_put(int status, void *userdata);

/* Put the next variable of the current session into the target, or move to the next session. */
static void put_next_var(Migration *m)
{
    const StoreVar *var;

    if (m->var_index == m->session.var_count) {
        m->copied_sessions++;
        m->copied_vars += m->session.var_count;
        session_copy_clear(&m->session);
        m->page_index++;
        next_session(m);
        return;
    }
    var = &m->session.vars[m->var_index++];
    store_put_var(m->target, m->session.id, var->name, var->value, on_put, m);
}

static void on_put(int status, void *userdata)
{
    Migration *m = userdata;

    if (status < 0) {
        bool stop = report_failure(m, "copy a variable of", m->session.id, status);

        session_copy_clear(&m->session);
        if (stop) {
            return;
        }
        m->page_index++;
        next_session(m);
        return;
    }
    put_next_var(m);
}

static void on_create(int status, const StoreSession *session, void *userdata)
{
    Migration *m = userdata;

    if (status < 0) {
        bool stop = report_failure(m, "create", m->session.id, status);

        session_copy_clear(&m->session);
        if (!stop) {
            m->page_index++;
            next_session(m);
        }
        return;
    }
    m->var_index = 0;
    put_next_var(m);
}

/* Copy what the dump callback borrowed into m->session. Returns -ENOMEM or 0. */
static int keep_dump(Migration *m, const StoreSession *session, const StoreVar *vars,
                     size_t var_count)
{
    SessionCopy *copy = &m->session;

    copy->ttl_s = session->ttl_s;
    copy->vars = calloc(var_count + 1, sizeof(*copy->vars));
    if (!bytes_copy(session->id, &copy->id) || copy->vars == NULL ||
        (session->owner != NULL && (copy->owner = strdup(session->owner)) == NULL)) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < var_count; i++) {
        if (!bytes_copy(vars[i].name, &copy->vars[i].name) ||
            !bytes_copy(vars[i].value, &copy->vars[i].value)) {
            return -ENOMEM;
        }
        copy->var_count++;
    }
    return 0;
}

static void on_dump(int status, const StoreSession *session, const StoreVar *vars,
                    size_t var_count, void *userdata)
{
    Migration *m = userdata;
    StoreBytes id = m->page[m->page_index];
    StoreCreateOpts opts;

    if (status == -ENOENT) {
        /* The session expired or was deleted after it was listed. */
        m->skipped++;
        m->page_index++;
        next_session(m);
        return;
    }
    if (status == 0) {
        status = keep_dump(m, session, vars, var_count);
    }
    if (status < 0) {
        session_copy_clear(&m->session);
        if (!report_failure(m, "read", id, status)) {
            m->page_index++;
            next_session(m);
        }
        return;
    }
    if (m->verbose || m->dry_run) {
        printf("%s \"", m->dry_run ? "would copy" : "copying");
        print_bytes(stdout, id);
        printf("\" ttl=%us variables=%zu owner=%s\n", session->ttl_s, var_count,
               session->owner != NULL ? session->owner : "none");
    }
    if (m->dry_run) {
        m->copied_sessions++;
        m->copied_vars += var_count;
        session_copy_clear(&m->session);
        m->page_index++;
        next_session(m);
        return;
    }
    opts = (StoreCreateOpts){.ttl_s = m->session.ttl_s, .owner = m->session.owner};
    store_create(m->target, m->session.id, &opts, on_create, m);
}

/* Dump the next id of the page, or list the next page. */
static void next_session(Migration *m)
{
    if (m->finished) {
        return;
    }
    if (m->page_index == m->page_count) {
        page_clear(m);
        if (m->cursor == 0) {
            finish(m, m->failed != 0 ? MIGRATE_EXIT_FAILED : 0);
            return;
        }
        next_page(m);
        return;
    }
    store_dump(m->source, m->page[m->page_index], on_dump, m);
}

static void on_list(int status, const StoreBytes *ids, size_t count, uint64_t next_cursor,
                    void *userdata)
{
    Migration *m = userdata;

    if (status < 0) {
        fprintf(stderr, "Failed to list the sessions of %s: %s\n", m->source_url,
                strerror(-status));
        finish(m, status == -ENOMEM ? MIGRATE_EXIT_FAILED : MIGRATE_EXIT_UNAVAILABLE);
        return;
    }
    m->page = calloc(count + 1, sizeof(*m->page));
    if (m->page == NULL) {
        finish(m, MIGRATE_EXIT_FAILED);
        return;
    }
    for (size_t i = 0; i < count; i++) {
        if (!bytes_copy(ids[i], &m->page[i])) {
            finish(m, MIGRATE_EXIT_FAILED);
            return;
        }
        m->page_count++;
    }
    m->cursor = next_cursor;
    /* The page callback may run before store_list() returns; the loop continues the chain. */
    next_session(m);
}

static void next_page(Migration *m)
{
    store_list(m->source, m->cursor, MIGRATE_PAGE_LIMIT, on_list, m);
}

static void on_wait_limit(struct ev_loop *loop, ev_timer *timer, int revents)
{
    *(bool *)timer->data = true;
}

/* Run the loop until both stores are up; false after MIGRATE_CONNECT_WAIT_S. */
static bool wait_available(Migration *m)
{
    bool expired = false;
    ev_timer limit;

    ev_timer_init(&limit, on_wait_limit, MIGRATE_CONNECT_WAIT_S, 0.0);
    limit.data = &expired;
    ev_timer_start(m->loop, &limit);
    /* A store comes up in a loop callback, after which EVRUN_ONCE returns to this check. */
    while (!expired && !(store_is_available(m->source) && store_is_available(m->target))) {
        ev_run(m->loop, EVRUN_ONCE);
    }
    ev_timer_stop(m->loop, &limit);
    if (!store_is_available(m->source)) {
        fprintf(stderr, "Failed to connect to the source store at %s within %.0f s\n",
                m->source_url, MIGRATE_CONNECT_WAIT_S);
        return false;
    }
    if (!store_is_available(m->target)) {
        fprintf(stderr, "Failed to connect to the target store at %s within %.0f s\n",
                m->target_url, MIGRATE_CONNECT_WAIT_S);
        return false;
    }
    return true;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: snakepit-store-migrate --from URL --to URL [options]\n"
            "Copy every session from one Redis session store to another.\n"
            "  --from URL             source, redis://[:password@]host[:port][/db]\n"
            "  --from-prefix PREFIX   key prefix of the source (default %s)\n"
            "  --to URL               target, same form\n"
            "  --to-prefix PREFIX     key prefix of the target (default %s)\n"
            "  --max-sessions N       session quota of the target (default %u)\n"
            "  --max-value-bytes N    largest variable value to copy (default %u)\n"
            "  --max-vars N           variables per session in the target (default %u)\n"
            "  --dry-run              list what would be copied, write nothing\n"
            "  --verbose              print each session as it is copied\n"
            "  --help                 print this help\n",
            STORE_DEFAULT_KEY_PREFIX, STORE_DEFAULT_KEY_PREFIX, STORE_DEFAULT_MAX_SESSIONS,
            STORE_DEFAULT_MAX_VALUE_BYTES, STORE_DEFAULT_MAX_VARS);
}

/* Parse a positive decimal option value; false when invalid. */
static bool parse_count(const char *text, unsigned long long max, unsigned long long *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v == 0 || v > max || text[0] == '-') {
        return false;
    }
    *out = v;
    return true;
}

typedef struct MigrateArgs {
    StoreConfig source;
    StoreConfig target;
    bool dry_run;
    bool verbose;
} MigrateArgs;

static int parse_args(int argc, char **argv, MigrateArgs *args)
{
    static const struct option options[] = {
        {"from", required_argument, NULL, 'f'},
        {"from-prefix", required_argument, NULL, 'F'},
        {"to", required_argument, NULL, 't'},
        {"to-prefix", required_argument, NULL, 'T'},
        {"max-sessions", required_argument, NULL, 's'},
        {"max-value-bytes", required_argument, NULL, 'b'},
        {"max-vars", required_argument, NULL, 'v'},
        {"dry-run", no_argument, NULL, 'n'},
        {"verbose", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    unsigned long long value;
    int opt;

    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'f':
            args->source.url = optarg;
            break;
        case 'F':
            args->source.key_prefix = optarg;
            break;
        case 't':
            args->target.url = optarg;
            break;
        case 'T':
            args->target.key_prefix = optarg;
            break;
        case 's':
            if (!parse_count(optarg, UINT64_MAX, &value)) {
                fprintf(stderr, "Invalid --max-sessions \"%s\": expected a positive integer\n",
                        optarg);
                return -EINVAL;
            }
            args->target.max_sessions = value;
            break;
        case 'b':
            if (!parse_count(optarg, SIZE_MAX, &value)) {
                fprintf(stderr, "Invalid --max-value-bytes \"%s\": expected a positive integer\n",
                        optarg);
                return -EINVAL;
            }
            args->target.max_value_bytes = value;
            break;
        case 'v':
            if (!parse_count(optarg, UINT32_MAX, &value)) {
                fprintf(stderr, "Invalid --max-vars \"%s\": expected a positive integer\n",
                        optarg);
                return -EINVAL;
            }
            args->target.max_vars = (uint32_t)value;
            break;
        case 'n':
            args->dry_run = true;
            break;
        case 'V':
            args->verbose = true;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -EINVAL;
        }
    }
    if (optind != argc || args->source.url == NULL || args->target.url == NULL) {
        fprintf(stderr, "Missing --from or --to, or an extra argument: see --help\n");
        return -EINVAL;
    }
    return 0;
}

static bool same_store(const StoreConfig *a, const StoreConfig *b)
{
    const char *prefix_a = a->key_prefix != NULL ? a->key_prefix : STORE_DEFAULT_KEY_PREFIX;
    const char *prefix_b = b->key_prefix != NULL ? b->key_prefix : STORE_DEFAULT_KEY_PREFIX;

    return strcmp(a->url, b->url) == 0 && strcmp(prefix_a, prefix_b) == 0;
}

static int open_store(StoreConfig *config, const char *role, struct ev_loop *loop, Store **out)
{
    int r;

    config->backend = "redis";
    r = store_new(config, loop, out);
    if (r < 0) {
        fprintf(stderr, "Invalid %s store URL \"%s\" or prefix: %s\n", role, config->url,
                strerror(-r));
    }
    return r;
}

int main(int argc, char **argv)
{
    MigrateArgs args = {0};
    Migration m = {0};
    int exit_status;

    if (parse_args(argc, argv, &args) < 0) {
        return MIGRATE_EXIT_USAGE;
    }
    if (same_store(&args.source, &args.target)) {
        fprintf(stderr, "The source and the target are the same store: nothing to copy\n");
        return MIGRATE_EXIT_USAGE;
    }
    /* hiredis writes with write(2): a closed connection must be an error, not a signal. */
    signal(SIGPIPE, SIG_IGN);
    m.loop = ev_loop_new(EVFLAG_AUTO);
    m.source_url = args.source.url;
    m.target_url = args.target.url;
    m.dry_run = args.dry_run;
    m.verbose = args.verbose;
    if (m.loop == NULL || open_store(&args.source, "source", m.loop, &m.source) < 0 ||
        open_store(&args.target, "target", m.loop, &m.target) < 0) {
        exit_status = MIGRATE_EXIT_USAGE;
        goto out_free;
    }
    if (!wait_available(&m)) {
        exit_status = MIGRATE_EXIT_UNAVAILABLE;
        goto out_free;
    }
    next_page(&m);
    while (!m.finished) {
        ev_run(m.loop, EVRUN_ONCE);
    }
    printf("%s %llu sessions with %llu variables; %llu skipped (gone since listed), %llu failed\n",
           m.dry_run ? "would copy" : "copied", (unsigned long long)m.copied_sessions,
           (unsigned long long)m.copied_vars, (unsigned long long)m.skipped,
           (unsigned long long)m.failed);
    exit_status = m.exit_status;
out_free:
    session_copy_clear(&m.session);
    page_clear(&m);
    store_free(m.source);
    store_free(m.target);
    if (m.loop != NULL) {
        ev_loop_destroy(m.loop);
    }
    return exit_status;
}
