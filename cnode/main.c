/* SPDX-License-Identifier: Apache-2.0 */
/*
 * snakepit-cnode: start-up, signals and shutdown. The daemon runs one non-default libev loop
 * (the default loop would reap child processes behind the worker pool's back).
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cookie.h"
#include "daemon.h"
#include "daemon_obs.h"
#include "log.h"
#include "sd_notify.h"

/* libev's fatal errors go through our logger before the abort. */
static void on_ev_syserr(const char *msg)
{
    log_error_errno(-errno, "libev: %s", msg);
    abort();
}

static void on_call(void *userdata, DistCaller *caller, const char *request, size_t len)
{
    request_handle(userdata, caller, request, len);
}

static void on_cast(void *userdata, const char *node, const char *request, size_t len)
{
    request_handle_cast(userdata, node, request, len);
}

static void on_node_up(void *userdata, const char *node)
{
    Daemon *d = userdata;

    daemon_store_node_up(d, node);
    daemon_obs_emit_simple(d, "node", "up", "node", node);
    if (d->config->owner[0] && strcmp(node, d->config->owner) == 0) {
        d->owner_seen = true;
        ev_timer_stop(d->loop, &d->owner_timer);
    }
}

static void on_node_down(void *userdata, const char *node)
{
    Daemon *d = userdata;

    for (size_t i = 0; i < d->pool_count; i++) {
        worker_pool_cancel_node(d->pools[i], node);
    }
    daemon_store_node_down(d, node);
    daemon_obs_node_down(d, node);
    daemon_obs_emit_simple(d, "node", "down", "node", node);
    if (d->config->owner[0] && strcmp(node, d->config->owner) == 0) {
        log_notice("Owner node %s disconnected, shutting down", node);
        daemon_shutdown(d, "owner node disconnected");
    }
}

/* rex replied to a liveness probe of a stream's caller. */
static void on_probe_reply(void *userdata, const erlang_ref *ref, DistProbeResult result)
{
    Daemon *d = userdata;

    for (size_t i = 0; i < d->pool_count; i++) {
        if (worker_pool_probe_reply(d->pools[i], ref, result)) {
            return;
        }
    }
    log_debug("Ignored a probe reply for a stream that has ended");
}

static const DistHandlers dist_handlers = {
    .on_call = on_call,
    .on_cast = on_cast,
    .on_node_up = on_node_up,
    .on_node_down = on_node_down,
    .on_probe_reply = on_probe_reply,
};

void daemon_announce_ready(Daemon *d)
{
    if (d->ready_announced || !d->dist) {
        return;
    }
    for (size_t i = 0; i < d->pool_count; i++) {
        if (!worker_pool_ready(d->pools[i])) {
            return;
        }
    }
    d->ready_announced = true;
    printf("READY %s\n", dist_node_name(d->dist));
    fflush(stdout);
    int r = sd_notify_send("READY=1");
    if (r < 0) {
        log_warning_errno(r, "Failed to notify systemd of readiness");
    }
}

static void shutdown_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    Daemon *d = w->data;

    log_warning("Shutdown timed out, calls still in flight: %u; exiting", d->calls_in_flight);
    /* Every call gets a reply, so the running ones get shutting_down before the workers go. */
    for (size_t i = 0; i < d->pool_count; i++) {
        worker_pool_abort_running(d->pools[i]);
    }
    ev_break(loop, EVBREAK_ALL);
}

/* When the shutdown began, in CLOCK_MONOTONIC ms, read by the signal handler. */
static volatile sig_atomic_t shutdown_started_ms;

static sig_atomic_t monotonic_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts); /* async-signal-safe */
    return (sig_atomic_t)(ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

/*
 * A second signal within 200 ms is the same request sent twice: GNU timeout and shells signal
 * both the process and its process group.
 */
static void on_second_signal(int signum)
{
    if (monotonic_ms() - shutdown_started_ms < 200) {
        return;
    }
    log_signal_safe("snakepit-cnode: second termination signal, exiting now\n");
    _exit(1);
}

/*
 * From here on SIGTERM and SIGINT exit at once through a plain handler, so they work even while
 * the loop waits in dist_stop_accepting() for handshake threads to end. The watchers stop first,
 * since stopping one resets the signal.
 */
static void exit_on_next_signal(Daemon *d)
{
    struct sigaction sa = {.sa_handler = on_second_signal};

    shutdown_started_ms = monotonic_ms();
    ev_signal_stop(d->loop, &d->sigterm_watcher);
    ev_signal_stop(d->loop, &d->sigint_watcher);
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

void daemon_shutdown(Daemon *d, const char *reason)
{
    if (d->shutting_down) {
        return;
    }
    d->shutting_down = true;
    exit_on_next_signal(d);
    log_notice("Shutting down (%s), calls in flight: %u", reason, d->calls_in_flight);
    sd_notify_send("STOPPING=1");
    dist_stop_accepting(d->dist);
    for (size_t i = 0; i < d->pool_count; i++) {
        worker_pool_drain(d->pools[i]);
    }
    if (d->calls_in_flight == 0) {
        ev_break(d->loop, EVBREAK_ALL);
        return;
    }
    ev_timer_init(&d->shutdown_timer, shutdown_timeout_cb, d->config->shutdown_timeout_ms / 1000.0,
                  0.);
    d->shutdown_timer.data = d;
    ev_timer_start(d->loop, &d->shutdown_timer);
}

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    Daemon *d = w->data;

    daemon_shutdown(d, w->signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void owner_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    Daemon *d = w->data;

    if (!d->owner_seen) {
        log_error("Owner node %s did not connect within %u ms, shutting down", d->config->owner,
                  d->config->owner_grace_ms);
        d->exit_status = EX_UNAVAILABLE;
        daemon_shutdown(d, "owner never connected");
    }
}

/*
 * As a child subreaper the daemon inherits the orphans of its workers, for example a process
 * that Python code started in the background. Those are reaped here; the zygotes and workers
 * are left to their pools, which reap them through pidfds.
 */
static void reap_orphans(Daemon *d)
{
    char path[64];
    char buf[4096];
    DIR *tasks = opendir("/proc/self/task");
    struct dirent *task;

    if (!tasks) {
        return;
    }
    while ((task = readdir(tasks))) {
        if (task->d_name[0] == '.') {
            continue;
        }
        snprintf(path, sizeof(path), "/proc/self/task/%s/children", task->d_name);
        FILE *f = fopen(path, "re");
        if (!f) {
            continue;
        }
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        for (char *p = buf, *end; *p; p = end) {
            long pid = strtol(p, &end, 10);
            if (end == p) {
                break;
            }
            bool owned = false;
            for (size_t i = 0; i < d->pool_count && !owned; i++) {
                owned = worker_pool_owns_pid(d->pools[i], (int)pid);
            }
            int status;
            if (!owned && waitpid((pid_t)pid, &status, WNOHANG) == (pid_t)pid) {
                log_debug("Reaped orphan process %ld", pid);
            }
        }
    }
    closedir(tasks);
}

static void sigchld_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    reap_orphans(w->data);
}

/* SIGCHLD can coalesce, so a slow timer catches what a merged signal missed. */
static void reap_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    reap_orphans(w->data);
}

static void watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    sd_notify_send("WATCHDOG=1");
}

static void pool_reply(void *userdata, DistCaller *caller, const char *reply, size_t len)
{
    request_reply(userdata, caller, reply, len);
}

static void pool_drop(void *userdata, DistCaller *caller)
{
    request_drop(userdata, caller);
}

static int pool_send(void *userdata, const erlang_pid *to, const char *message, size_t len)
{
    Daemon *d = userdata;

    return dist_send(d->dist, to, message, len);
}

static size_t pool_pending_bytes(void *userdata, const char *node)
{
    Daemon *d = userdata;

    return dist_pending_bytes(d->dist, node);
}

static void pool_make_ref(void *userdata, erlang_ref *out)
{
    Daemon *d = userdata;

    dist_make_ref(d->dist, out);
}

static int pool_probe(void *userdata, const erlang_pid *pid, const erlang_ref *ref)
{
    Daemon *d = userdata;

    return dist_probe(d->dist, pid, ref);
}

static void pool_ready(void *userdata, WorkerPool *pool)
{
    daemon_announce_ready(userdata);
}

static void pool_session_bound(void *userdata, const char *session_id, size_t len,
                               uint32_t worker_id)
{
    daemon_store_bind(userdata, session_id, len, worker_id);
}

static void pool_session_request(void *userdata, WorkerPool *pool, uint32_t worker_id,
                                 uint64_t call_id, const char *session_id, size_t session_id_len,
                                 const char *term, size_t len)
{
    request_worker_session(userdata, pool, worker_id, call_id, session_id, session_id_len, term,
                           len);
}

static void pool_event(void *userdata, const PoolEvent *event)
{
    daemon_obs_pool_event(userdata, event);
}

static const WorkerPoolHooks pool_hooks = {
    .on_event = pool_event,
    .reply = pool_reply,
    .drop = pool_drop,
    .send = pool_send,
    .make_ref = pool_make_ref,
    .probe = pool_probe,
    .pending_bytes = pool_pending_bytes,
    .on_ready = pool_ready,
    .on_session_bound = pool_session_bound,
    .on_session_request = pool_session_request,
};

/* snakepit-worker sits next to this binary unless $SNAKEPIT_WORKER_BINARY names another. */
static int find_worker_binary(char *out, size_t size)
{
    const char *env = getenv("SNAKEPIT_WORKER_BINARY");
    char self[4096];

    if (env && env[0]) {
        snprintf(out, size, "%s", env);
        return 0;
    }
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n < 0) {
        return -errno;
    }
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (slash) {
        *slash = '\0';
    }
    snprintf(out, size, "%s/snakepit-worker", self);
    return access(out, X_OK) < 0 ? -errno : 0;
}

/* Collect the allowed modules of each pool and join them for the worker's --allow flag. */
static void build_allowlist(Daemon *d, size_t pool_index, char *allow, size_t size)
{
    const Config *c = d->config;
    size_t len = 0;

    allow[0] = '\0';
    for (size_t i = 0; i < c->library_count; i++) {
        if (strcmp(c->libraries[i].pool, c->pools[pool_index].name) != 0 ||
            d->allowed_count == DAEMON_MAX_ALLOWED) {
            continue;
        }
        AllowedModule *a = &d->allowed[d->allowed_count++];
        a->pool_index = pool_index;
        snprintf(a->module, sizeof(a->module), "%s", c->libraries[i].module);
        len += (size_t)snprintf(allow + len, len < size ? size - len : 0, "%s%s",
                                len ? "," : "", a->module);
    }
}

static int start_pools(Daemon *d)
{
    /* With client registration the daemon's allowlist is the only one: workers accept any. */
    bool any = d->config->allow_client_libraries;
    char worker[4096];
    char allow[8192];
    int r = find_worker_binary(worker, sizeof(worker));

    if (r < 0) {
        return log_error_errno(r, "Failed to find snakepit-worker at '%s'", worker);
    }
    for (size_t i = 0; i < d->config->pool_count; i++) {
        build_allowlist(d, i, allow, sizeof(allow));
        WorkerPoolSettings settings = {
            .worker_binary = worker,
            .allow = any ? "*" : allow,
            .max_message_bytes = d->config->max_message_bytes,
            .max_depth = d->config->max_depth,
            .log_level = d->config->log_level,
            .log_format = d->config->log_format,
        };
        r = worker_pool_new(d->loop, &d->config->pools[i], &settings, &pool_hooks, d,
                            &d->pools[i]);
        if (r < 0) {
            return r;
        }
        d->pool_count++;
    }
    return 0;
}

/* Complete "name" into "name@host": the short host name for sname, the full one for name. */
static int complete_node_name(const Config *c, char *out, size_t size)
{
    char host[256];

    if (strchr(c->node_name, '@')) {
        int n = snprintf(out, size, "%s", c->node_name);
        return n > 0 && (size_t)n < size ? 0 : -ENAMETOOLONG;
    }
    if (gethostname(host, sizeof(host)) < 0) {
        return -errno;
    }
    host[sizeof(host) - 1] = '\0';
    if (!c->long_names) {
        char *dot = strchr(host, '.');
        if (dot) {
            *dot = '\0';
        }
    }
    int n = snprintf(out, size, "%s@%s", c->node_name, host);
    return n > 0 && (size_t)n < size ? 0 : -ENAMETOOLONG;
}

static void start_timers(Daemon *d)
{
    uint64_t watchdog_us = sd_notify_watchdog_interval_us();

    if (d->config->owner[0]) {
        ev_timer_init(&d->owner_timer, owner_timeout_cb, d->config->owner_grace_ms / 1000.0, 0.);
        d->owner_timer.data = d;
        ev_timer_start(d->loop, &d->owner_timer);
    }
    if (watchdog_us > 0) {
        ev_timer_init(&d->watchdog_timer, watchdog_cb, watchdog_us / 1e6, watchdog_us / 1e6);
        d->watchdog_timer.data = d;
        ev_timer_start(d->loop, &d->watchdog_timer);
    }
}

static void start_signals(Daemon *d)
{
    ev_signal_init(&d->sigterm_watcher, signal_cb, SIGTERM);
    ev_signal_init(&d->sigint_watcher, signal_cb, SIGINT);
    d->sigterm_watcher.data = d;
    d->sigint_watcher.data = d;
    ev_signal_start(d->loop, &d->sigterm_watcher);
    ev_signal_start(d->loop, &d->sigint_watcher);
    ev_signal_init(&d->sigchld_watcher, sigchld_cb, SIGCHLD);
    d->sigchld_watcher.data = d;
    ev_signal_start(d->loop, &d->sigchld_watcher);
    ev_timer_init(&d->reap_timer, reap_timer_cb, 5.0, 5.0);
    d->reap_timer.data = d;
    ev_timer_start(d->loop, &d->reap_timer);
}

static int run(Config *config)
{
    static Daemon daemon;
    Daemon *d = &daemon;
    char cookie[COOKIE_MAX + 1];
    char err[1024];
    char node[1024];
    int r;

    if (cookie_load(config->cookie_file, cookie, sizeof(cookie), err, sizeof(err)) < 0) {
        log_error("Failed to read the distribution cookie; looked at: %s", err);
        return EX_CONFIG;
    }
    r = complete_node_name(config, node, sizeof(node));
    if (r < 0 || strlen(node) > MAXNODELEN) {
        log_error("Invalid node name '%s': NAME@HOST must be at most %d bytes", config->node_name,
                  MAXNODELEN);
        return EX_CONFIG;
    }
    if (config->check_config) {
        printf("configuration valid: node %s, %zu pools, %zu libraries\n", node,
               config->pool_count, config->library_count);
        return 0;
    }

    d->config = config;
    d->start_ms = log_now_ms();
    ev_set_syserr_cb(on_ev_syserr);
    d->loop = ev_loop_new(EVFLAG_AUTO);
    if (!d->loop) {
        log_error("Failed to create the event loop");
        return EX_OSERR;
    }
    start_signals(d);

    DistConfig dist_config = {
        .node_name = node,
        .cookie = cookie,
        .registered_name = config->registered_name,
        .max_message_bytes = config->max_message_bytes,
        .max_connections = config->max_connections,
        .max_output_bytes = config->max_output_bytes,
        .handshake_timeout_ms = config->handshake_timeout_ms,
        .peer_idle_timeout_ms = config->peer_idle_timeout_ms,
    };
    r = dist_start(d->loop, &dist_config, &dist_handlers, d, &d->dist);
    explicit_bzero(cookie, sizeof(cookie));
    if (r < 0) {
        return EX_UNAVAILABLE;
    }
    log_info("Started snakepit-cnode %s as node %s on port %d, pid %d, registered name '%s'",
             SNAKEPIT_VERSION, dist_node_name(d->dist), dist_port(d->dist), (int)getpid(),
             config->registered_name);
    start_timers(d);
    if (daemon_obs_start(d) < 0 || daemon_store_start(d) < 0 || start_pools(d) < 0) {
        d->exit_status = EX_CONFIG;
        goto out;
    }
    daemon_announce_ready(d);

    ev_run(d->loop, 0);

out:
    log_notice("Stopped node %s", dist_node_name(d->dist));
    /* Closing the peers runs on_node_down, which uses the pools, the store and obs. */
    dist_free(d->dist);
    d->dist = NULL;
    for (size_t i = 0; i < d->pool_count; i++) {
        worker_pool_free(d->pools[i]);
    }
    if (d->store) {
        daemon_store_stop(d);
    }
    daemon_obs_stop(d);
    ev_loop_destroy(d->loop);
    return d->exit_status;
}

int main(int argc, char **argv)
{
    static Config config;

    signal(SIGPIPE, SIG_IGN);
    /* Workers are forked by the zygote and reparented here, so the daemon reaps them itself. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    config_init(&config);
    log_setup("snakepit-cnode", LOG_INFO, LOG_FORMAT_TEXT);

    switch (cli_parse(argc, argv, &config, stdout, stderr)) {
    case CLI_EXIT_OK:
        return 0;
    case CLI_EXIT_USAGE:
        return EX_USAGE;
    case CLI_EXIT_CONFIG:
        return EX_CONFIG;
    case CLI_RUN:
        break;
    }
    log_setup("snakepit-cnode", config.log_level, config.log_format);
    return run(&config);
}
