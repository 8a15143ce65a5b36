/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Benchmark of the session store: put and get latency percentiles (one operation at a time) for
 * both backends, and the bytes each session costs with two small variables. Memory bytes come
 * from malloc's own count (mallinfo2), Redis bytes from INFO memory's used_memory. For Redis it
 * also prints, per timed put and get, the EVAL and EVALSHA calls, the commands the scripts ran
 * and Redis's own time, from INFO commandstats after a CONFIG RESETSTAT. Without --redis-url it
 * starts its own redis-server on a free loopback port and kills it at the end. With --redis-url
 * the Redis must be otherwise idle, or the commandstats count other clients' commands too.
 *
 *   bench_store [--sessions N] [--ops N] [--redis-url URL | --no-redis]
 */
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <getopt.h>
#include <hiredis/hiredis.h>
#include <malloc.h>
#include <netinet/in.h>
#include <signal.h>
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

/* Operations in flight while the Redis store is filled. */
#define BENCH_FILL_WINDOW 256

typedef struct Bench {
    struct ev_loop *loop;
    Store *store;
    redisContext *admin; /* blocking connection for INFO; NULL for the memory backend */
    size_t sessions;
    size_t ops;
    size_t pending;
    int failures;
    bool done;
} Bench;

static double now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;

    return (x > y) - (x < y);
}

static void print_percentiles(const char *backend, const char *op, double *samples, size_t n)
{
    qsort(samples, n, sizeof(*samples), compare_double);
    printf("%-8s %-4s %8zu %10.2f %10.2f %10.2f\n", backend, op, n, samples[n / 2],
           samples[n * 95 / 100], samples[n * 99 / 100]);
}

static void session_id(size_t i, char *buf, size_t size)
{
    snprintf(buf, size, "bench-session-%zu", i);
}

/* Completions: each decrements the pending count and records failures. */

static void on_session(int status, const StoreSession *session, void *userdata)
{
    Bench *b = userdata;

    b->failures += status != 0;
    b->pending--;
}

static void on_done(int status, void *userdata)
{
    Bench *b = userdata;

    b->failures += status != 0;
    b->pending--;
}

static void on_value(int status, StoreBytes value, void *userdata)
{
    Bench *b = userdata;

    b->failures += status != 0;
    b->pending--;
}

static void wait_pending(Bench *b, size_t max_pending)
{
    while (b->pending > max_pending) {
        ev_run(b->loop, EVRUN_ONCE);
    }
}

/* Create `sessions` sessions with two small variables each, BENCH_FILL_WINDOW at a time. */
static void fill(Bench *b)
{
    static const char small_a[8] = "01234567";
    static const char small_b[16] = "0123456789abcdef";
    char id[64];

    for (size_t i = 0; i < b->sessions; i++) {
        session_id(i, id, sizeof(id));
        b->pending += 3;
        store_create(b->store, store_bytes_str(id), NULL, on_session, b);
        store_put_var(b->store, store_bytes_str(id), store_bytes_str("a"),
                      (StoreBytes){(const uint8_t *)small_a, sizeof(small_a)}, on_done, b);
        store_put_var(b->store, store_bytes_str(id), store_bytes_str("b"),
                      (StoreBytes){(const uint8_t *)small_b, sizeof(small_b)}, on_done, b);
        wait_pending(b, BENCH_FILL_WINDOW);
    }
    wait_pending(b, 0);
}

/* Send `command` on the blocking connection; returns its reply (free it) or NULL on failure. */
static redisReply *admin_command(redisContext *admin, const char *command)
{
    redisReply *reply = redisCommand(admin, command);

    if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "Redis returned an error for \"%s\": %s\n", command, reply->str);
        freeReplyObject(reply);
        return NULL;
    }
    return reply;
}

/* used_memory from INFO memory, or -1. */
static long long redis_used_memory(redisContext *admin)
{
    redisReply *reply = admin_command(admin, "INFO memory");
    long long used = -1;
    const char *field;

    if (reply != NULL && reply->type == REDIS_REPLY_STRING &&
        (field = strstr(reply->str, "used_memory:")) != NULL) {
        used = atoll(field + strlen("used_memory:"));
    }
    freeReplyObject(reply);
    return used;
}

/* Totals of one timed series from INFO commandstats. */
typedef struct CommandStats {
    unsigned long long eval_calls;
    unsigned long long evalsha_calls;
    unsigned long long inner_calls; /* every other command: the ones the scripts ran */
    unsigned long long script_usec; /* Redis's time in EVAL and EVALSHA, inner commands included */
} CommandStats;

/*
 * Add one "cmdstat_NAME:calls=N,usec=U,..." line to `stats`. CONFIG RESETSTAT and INFO are the
 * benchmark's own commands and are left out. Redis 7 names subcommands "config|resetstat".
 */
static void add_command_line(const char *line, CommandStats *stats)
{
    char name[64];
    unsigned long long calls;
    unsigned long long usec;

    if (sscanf(line, "cmdstat_%63[^:]:calls=%llu,usec=%llu", name, &calls, &usec) != 3) {
        return;
    }
    name[strcspn(name, "|")] = '\0';
    if (strcmp(name, "config") == 0 || strcmp(name, "info") == 0) {
        return;
    }
    if (strcmp(name, "eval") == 0) {
        stats->eval_calls += calls;
        stats->script_usec += usec;
    } else if (strcmp(name, "evalsha") == 0) {
        stats->evalsha_calls += calls;
        stats->script_usec += usec;
    } else {
        stats->inner_calls += calls;
    }
}

/* Read INFO commandstats into *out; false when the command failed. */
static bool read_command_stats(redisContext *admin, CommandStats *out)
{
    redisReply *reply = admin_command(admin, "INFO commandstats");
    CommandStats stats = {0};

    if (reply == NULL || reply->type != REDIS_REPLY_STRING) {
        freeReplyObject(reply);
        return false;
    }
    for (const char *line = reply->str; line != NULL && *line != '\0';) {
        add_command_line(line, &stats);
        line = strchr(line, '\n');
        line = line != NULL ? line + 1 : NULL;
    }
    freeReplyObject(reply);
    *out = stats;
    return true;
}

static void reset_command_stats(redisContext *admin)
{
    freeReplyObject(admin_command(admin, "CONFIG RESETSTAT"));
}

static void print_command_stats(redisContext *admin, const char *op, size_t ops)
{
    CommandStats stats;
    double n = (double)ops;

    if (!read_command_stats(admin, &stats)) {
        fprintf(stderr, "Failed to read INFO commandstats\n");
        return;
    }
    printf("redis    %-4s per call: %.2f EVALSHA, %.2f EVAL, %.2f commands inside, "
           "%.2f us in Redis\n",
           op, (double)stats.evalsha_calls / n, (double)stats.eval_calls / n,
           (double)stats.inner_calls / n, (double)stats.script_usec / n);
}

/* Time `ops` puts and `ops` gets on random sessions, one operation at a time. */
static void measure_latency(Bench *b, const char *backend)
{
    static const char value[16] = "fedcba9876543210";
    double *samples = malloc(b->ops * sizeof(*samples));
    char id[64];

    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < b->ops; i++) {
            double start;

            if (i == 0 && b->admin != NULL) {
                reset_command_stats(b->admin);
            }
            session_id((size_t)rand() % b->sessions, id, sizeof(id));
            b->pending = 1;
            start = now_us();
            if (pass == 0) {
                store_put_var(b->store, store_bytes_str(id), store_bytes_str("c"),
                              (StoreBytes){(const uint8_t *)value, sizeof(value)}, on_done, b);
            } else {
                store_get_var(b->store, store_bytes_str(id), store_bytes_str("a"), on_value, b);
            }
            wait_pending(b, 0);
            samples[i] = now_us() - start;
        }
        print_percentiles(backend, pass == 0 ? "put" : "get", samples, b->ops);
        if (b->admin != NULL) {
            print_command_stats(b->admin, pass == 0 ? "put" : "get", b->ops);
        }
    }
    free(samples);
}

/* Bytes malloc has handed out, block headers included: heap chunks plus mmap()ed blocks. */
static size_t heap_in_use(void)
{
    struct mallinfo2 info = mallinfo2();

    return info.uordblks + info.hblkhd;
}

static int bench_memory(Bench *b)
{
    StoreConfig config = {.backend = "memory", .max_sessions = b->sessions};
    size_t before = heap_in_use();
    size_t after;

    if (store_new(&config, b->loop, &b->store) < 0) {
        fprintf(stderr, "Failed to create the memory store\n");
        return -1;
    }
    fill(b);
    after = heap_in_use();
    measure_latency(b, "memory");
    printf("memory   bytes per session: %.0f (%zu sessions, variables of 8 and 16 bytes)\n",
           (double)(after - before) / (double)b->sessions, b->sessions);
    store_free(b->store);
    return 0;
}

static void on_event(StoreEvent event, int error, const char *detail, void *data)
{
    if (event == STORE_EVENT_UP) {
        ((Bench *)data)->done = true;
    }
}

static int run_redis(Bench *b, const char *url)
{
    StoreConfig config = {
        .backend = "redis",
        .url = url,
        .key_prefix = "snakepit-bench:",
        .max_sessions = b->sessions,
        .on_event = on_event,
        .event_data = b,
    };
    long long before = redis_used_memory(b->admin);
    long long after;

    if (store_new(&config, b->loop, &b->store) < 0) {
        fprintf(stderr, "Failed to create the Redis store for \"%s\"\n", url);
        return -1;
    }
    for (double start = now_us(); !b->done && now_us() - start < 5e6;) {
        ev_run(b->loop, EVRUN_ONCE);
    }
    if (!b->done) {
        fprintf(stderr, "Failed to connect to Redis at \"%s\" within 5 s\n", url);
        store_free(b->store);
        return -1;
    }
    fill(b);
    after = redis_used_memory(b->admin);
    measure_latency(b, "redis");
    if (before >= 0 && after >= 0) {
        printf("redis    bytes per session: %.0f (%zu sessions, used_memory delta)\n",
               (double)(after - before) / (double)b->sessions, b->sessions);
    }
    store_free(b->store);
    return 0;
}

/* Benchmark the Redis store at `url`; INFO goes to `host`:`port`, the same server. */
static int bench_redis(Bench *b, const char *url, const char *host, int port)
{
    int r;

    b->admin = redisConnect(host, port);
    if (b->admin == NULL || b->admin->err != 0) {
        fprintf(stderr, "Failed to connect to Redis at %s:%d: %s\n", host, port,
                b->admin != NULL ? b->admin->errstr : "out of memory");
        redisFree(b->admin);
        b->admin = NULL;
        return -1;
    }
    r = run_redis(b, url);
    redisFree(b->admin);
    b->admin = NULL;
    return r;
}

static int free_port(void)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int port = -1;

    if (fd >= 0 && bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0 &&
        getsockname(fd, (struct sockaddr *)&addr, &len) == 0) {
        port = ntohs(addr.sin_port);
    }
    if (fd >= 0) {
        close(fd);
    }
    return port;
}

/* Start redis-server on loopback `port`; returns its pid once it accepts connections, or -1. */
static pid_t start_redis(int port)
{
    char port_text[16];
    pid_t pid;

    snprintf(port_text, sizeof(port_text), "%d", port);
    pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);

        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (devnull >= 0) {
            dup2(devnull, STDOUT_FILENO);
        }
        execlp("redis-server", "redis-server", "--port", port_text, "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "no", "--daemonize", "no", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; pid > 0 && i < 500; i++) {
        redisContext *c = redisConnect("127.0.0.1", port);
        bool up = c != NULL && c->err == 0;

        redisFree(c);
        if (up) {
            return pid;
        }
        usleep(10000);
    }
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    return -1;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: bench_store [--sessions N] [--ops N] [--redis-url URL | --no-redis]\n"
                 "  --sessions N     sessions to create per backend (default 100000)\n"
                 "  --ops N          timed puts and gets per backend (default 10000)\n"
                 "  --redis-url URL  benchmark this Redis instead of starting one\n"
                 "  --no-redis       benchmark the memory backend only\n");
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"sessions", required_argument, NULL, 's'}, {"ops", required_argument, NULL, 'o'},
        {"redis-url", required_argument, NULL, 'r'}, {"no-redis", no_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
    };
    Bench b = {.sessions = 100000, .ops = 10000};
    const char *redis_url = NULL;
    bool no_redis = false;
    char url[64];
    int port = -1;
    pid_t redis_pid = -1;
    int opt;
    int r = 0;

    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 's':
            b.sessions = strtoul(optarg, NULL, 10);
            break;
        case 'o':
            b.ops = strtoul(optarg, NULL, 10);
            break;
        case 'r':
            redis_url = optarg;
            break;
        case 'n':
            no_redis = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 64;
        }
    }
    if (b.sessions == 0 || b.ops == 0) {
        usage(stderr);
        return 64;
    }
    signal(SIGPIPE, SIG_IGN);
    srand(1);
    b.loop = ev_loop_new(EVFLAG_AUTO);
    printf("%-8s %-4s %8s %10s %10s %10s\n", "backend", "op", "n", "p50_us", "p95_us", "p99_us");
    r = bench_memory(&b);
    if (r == 0 && !no_redis) {
        StoreRedisUrl parsed = {.host = "127.0.0.1"};

        if (redis_url == NULL) {
            port = free_port();
            redis_pid = port > 0 ? start_redis(port) : -1;
            if (redis_pid < 0) {
                fprintf(stderr, "Failed to start redis-server on 127.0.0.1:%d\n", port);
                ev_loop_destroy(b.loop);
                return 69;
            }
            snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", port);
            redis_url = url;
        } else if (store_redis_url_parse(redis_url, &parsed) < 0) {
            fprintf(stderr, "Invalid Redis URL \"%s\"\n", redis_url);
            ev_loop_destroy(b.loop);
            return 64;
        } else {
            port = parsed.port;
        }
        b.done = false;
        b.failures = 0;
        r = bench_redis(&b, redis_url, parsed.host, port);
    }
    if (b.failures != 0) {
        fprintf(stderr, "%d operations failed\n", b.failures);
        r = -1;
    }
    if (redis_pid > 0) {
        kill(redis_pid, SIGTERM);
        waitpid(redis_pid, NULL, 0);
    }
    ev_loop_destroy(b.loop);
    return r == 0 ? 0 : 1;
}
