/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The processes of a pool: the zygote (exec'd here, one per pool) and the workers it forks.
 * Every fd is close-on-exec; the zygote's child closes all fds but its control socket before
 * exec. Workers are reparented to the daemon, a child subreaper, and reaped through pidfds.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "worker_pool_internal.h"

#define WORKER_READ_CHUNK (64u * 1024)

static int pidfd_open_checked(pid_t pid)
{
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);

    return fd < 0 ? -errno : fd;
}

static void set_nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);

    if (flags >= 0) {
        fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    }
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* Describe how a process ended, as in "exited with status 3" or "was killed by signal 9". */
static void describe_status(const siginfo_t *si, char *buf, size_t size)
{
    if (si->si_code == CLD_EXITED) {
        snprintf(buf, size, "exited with status %d", si->si_status);
    } else if (si->si_code == CLD_KILLED || si->si_code == CLD_DUMPED) {
        snprintf(buf, size, "was killed by signal %d (%s)%s", si->si_status,
                 strsignal(si->si_status), si->si_code == CLD_DUMPED ? ", core dumped" : "");
    } else {
        snprintf(buf, size, "ended with code %d, status %d", si->si_code, si->si_status);
    }
}

/* Reap a child through its pidfd. Returns 1 reaped, 0 still running, -errno. */
static int reap_pidfd(int pidfd, char *status, size_t size, int *exit_status, int *exit_signal)
{
    siginfo_t si;

    memset(&si, 0, sizeof(si));
    if (waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED | WNOHANG) < 0) {
        return -errno;
    }
    if (si.si_pid == 0) {
        return 0;
    }
    describe_status(&si, status, size);
    *exit_status = si.si_code == CLD_EXITED ? si.si_status : -1;
    *exit_signal = si.si_code == CLD_EXITED ? -1 : si.si_status;
    return 1;
}

/* ---- Zygote ---- */

static void zygote_on_exit(WorkerPool *pool, const char *status);

static void zygote_pidfd_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    WorkerPool *pool = w->data;
    char status[128];
    int code;
    int sig;

    if (reap_pidfd(pool->zygote.pidfd, status, sizeof(status), &code, &sig) == 0) {
        return;
    }
    zygote_on_exit(pool, status);
}

static Worker *find_worker(WorkerPool *pool, unsigned id)
{
    for (Worker *w = pool->workers; w; w = w->next) {
        if (w->id == id) {
            return w;
        }
    }
    return NULL;
}

static void worker_pidfd_cb(struct ev_loop *loop, ev_io *w, int revents);
static void worker_request_read_cb(struct ev_loop *loop, ev_io *w, int revents);
static void worker_request_write_cb(struct ev_loop *loop, ev_io *w, int revents);
static void worker_heartbeat_read_cb(struct ev_loop *loop, ev_io *w, int revents);
static void worker_heartbeat_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);

static void worker_on_forked(WorkerPool *pool, Worker *worker, pid_t pid)
{
    int pidfd = pidfd_open_checked(pid);

    if (pidfd < 0) {
        log_error_errno(pidfd, "Failed to open a pidfd for worker %u (pid %d) of pool '%s'",
                        worker->id, (int)pid, pool->config.name);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        worker_pool_on_worker_exit(pool, worker, "could not be watched");
        return;
    }
    worker->pid = pid;
    worker->pidfd = pidfd;
    worker->state = WORKER_STARTING;
    worker->started = ev_now(pool->loop);
    ev_io_init(&worker->pidfd_watcher, worker_pidfd_cb, pidfd, EV_READ);
    worker->pidfd_watcher.data = worker;
    ev_io_start(pool->loop, &worker->pidfd_watcher);
    log_debug("Forked worker %u (pid %d) of pool '%s'", worker->id, (int)pid, pool->config.name);
    if (worker->hello_early) {
        worker->hello_early = false;
        worker_pool_on_worker_ready(pool, worker);
    }
}

static void zygote_handle_message(WorkerPool *pool, const ZygoteMsg *msg)
{
    Worker *worker;

    switch (msg->type) {
    case ZYGOTE_MSG_READY:
        pool->zygote.ready = true;
        log_info("Pool '%s': template interpreter ready (pid %d, %s)", pool->config.name,
                 (int)pool->zygote.pid, msg->text);
        worker_pool_on_zygote_ready(pool);
        break;
    case ZYGOTE_MSG_PRELOAD_FAILED:
        log_error("Pool '%s': the template interpreter failed to start: %s",
                  pool->config.name, msg->text);
        break;
    case ZYGOTE_MSG_FORKED:
        worker = find_worker(pool, msg->worker_id);
        if (worker && worker->state == WORKER_FORKING) {
            worker_on_forked(pool, worker, msg->pid);
        }
        break;
    case ZYGOTE_MSG_FORK_FAILED:
        worker = find_worker(pool, msg->worker_id);
        log_error("Pool '%s': fork of worker %u failed: %s", pool->config.name, msg->worker_id,
                  msg->text);
        if (worker && worker->state == WORKER_FORKING) {
            worker_pool_on_worker_exit(pool, worker, "could not be forked");
        }
        break;
    default:
        log_warning("Pool '%s': unknown message type %u from the template interpreter",
                    pool->config.name, msg->type);
        break;
    }
}

static void zygote_control_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    WorkerPool *pool = w->data;
    ZygoteMsg msg;

    for (;;) {
        ssize_t n = recv(pool->zygote.control_fd, &msg, sizeof(msg), MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        if (n <= 0) {
            /* The zygote closed its end; its pidfd reports the exit. */
            ev_io_stop(loop, w);
            return;
        }
        if ((size_t)n < offsetof(ZygoteMsg, text)) {
            log_warning("Pool '%s': short message from the template interpreter",
                        pool->config.name);
            continue;
        }
        msg.text[sizeof(msg.text) - 1] = '\0';
        if ((size_t)n < sizeof(msg)) {
            msg.text[(size_t)n > offsetof(ZygoteMsg, text) ? (size_t)n - offsetof(ZygoteMsg, text)
                                                           : 0] = '\0';
        }
        zygote_handle_message(pool, &msg);
    }
}

/* Build the zygote's argv; strings live in `storage`. */
static void zygote_argv(const WorkerPool *pool, char **argv, char storage[][64])
{
    int i = 0;

    snprintf(storage[0], 64, "%d", (int)getpid());
    snprintf(storage[1], 64, "%u", pool->config.blas_threads);
    snprintf(storage[2], 64, "%zu", pool->max_message_bytes);
    snprintf(storage[3], 64, "%u", pool->max_depth);
    argv[i++] = pool->worker_binary;
    argv[i++] = (char *)"--zygote";
    argv[i++] = (char *)"--pool";
    argv[i++] = (char *)pool->config.name;
    argv[i++] = (char *)"--daemon-pid";
    argv[i++] = storage[0];
    argv[i++] = (char *)"--blas-threads";
    argv[i++] = storage[1];
    argv[i++] = (char *)"--max-message-bytes";
    argv[i++] = storage[2];
    argv[i++] = (char *)"--max-depth";
    argv[i++] = storage[3];
    argv[i++] = (char *)"--log-level";
    argv[i++] = (char *)(pool->log_level >= LOG_DEBUG ? "debug" : "info");
    argv[i++] = (char *)"--log-format";
    argv[i++] = (char *)(pool->log_format == LOG_FORMAT_JSON ? "json" : "text");
    if (pool->config.preload[0]) {
        argv[i++] = (char *)"--preload";
        argv[i++] = (char *)pool->config.preload;
    }
    if (pool->allow[0]) {
        argv[i++] = (char *)"--allow";
        argv[i++] = pool->allow;
    }
    if (pool->config.adapter[0]) {
        argv[i++] = (char *)"--adapter";
        argv[i++] = (char *)pool->config.adapter;
    }
    if (pool->config.python[0] && strcmp(pool->config.python, "auto") != 0) {
        argv[i++] = (char *)"--python";
        argv[i++] = (char *)pool->config.python;
    }
    argv[i] = NULL;
}

/* In the forked child before exec: only async-signal-safe calls, then exec or _exit. */
static void zygote_child_exec(int control_fd, char **argv)
{
    sigset_t none;

    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGCHLD, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    /* A process group of its own: a terminal's Ctrl-C or `timeout` signalling the daemon's
     * group must not interrupt the calls in flight. The daemon stops its workers itself. */
    setpgid(0, 0);
    if (control_fd != ZYGOTE_CONTROL_FD) {
        if (dup2(control_fd, ZYGOTE_CONTROL_FD) < 0) {
            _exit(127);
        }
    } else {
        fcntl(ZYGOTE_CONTROL_FD, F_SETFD, 0);
    }
    close_range(ZYGOTE_CONTROL_FD + 1, ~0u, 0);
    execv(argv[0], argv);
    log_signal_safe("snakepit-cnode: failed to exec the worker binary\n");
    _exit(127);
}

int worker_process_start_zygote(WorkerPool *pool)
{
    int sv[2];
    char *argv[32];
    char storage[4][64];
    Zygote *z = &pool->zygote;

    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        return log_error_errno(-errno, "Failed to create the control socket of pool '%s'",
                               pool->config.name);
    }
    zygote_argv(pool, argv, storage);
    pid_t pid = fork();
    if (pid < 0) {
        int r = -errno;
        close(sv[0]);
        close(sv[1]);
        return log_error_errno(r, "Failed to fork the template interpreter of pool '%s'",
                               pool->config.name);
    }
    if (pid == 0) {
        zygote_child_exec(sv[1], argv);
    }
    close(sv[1]);
    int pidfd = pidfd_open_checked(pid);
    if (pidfd < 0) {
        close(sv[0]);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return log_error_errno(pidfd, "Failed to open a pidfd for the template of pool '%s'",
                               pool->config.name);
    }
    z->pid = pid;
    z->pidfd = pidfd;
    z->control_fd = sv[0];
    z->ready = false;
    set_nonblocking(z->control_fd);
    ev_io_init(&z->control_watcher, zygote_control_cb, z->control_fd, EV_READ);
    ev_io_init(&z->pidfd_watcher, zygote_pidfd_cb, pidfd, EV_READ);
    z->control_watcher.data = pool;
    z->pidfd_watcher.data = pool;
    ev_io_start(pool->loop, &z->control_watcher);
    ev_io_start(pool->loop, &z->pidfd_watcher);
    log_info("Pool '%s': started the template interpreter %s (pid %d)", pool->config.name,
             pool->worker_binary, (int)pid);
    return 0;
}

static void zygote_release(WorkerPool *pool)
{
    Zygote *z = &pool->zygote;

    ev_io_stop(pool->loop, &z->control_watcher);
    ev_io_stop(pool->loop, &z->pidfd_watcher);
    close_fd(&z->control_fd);
    close_fd(&z->pidfd);
    z->pid = 0;
    z->ready = false;
}

static void zygote_restart_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    WorkerPool *pool = w->data;

    if (worker_process_start_zygote(pool) < 0) {
        ev_timer_set(w, WORKER_POOL_RESTART_BACKOFF_MAX_S, 0.);
        ev_timer_start(loop, w);
    }
}

static void zygote_on_exit(WorkerPool *pool, const char *status)
{
    Zygote *z = &pool->zygote;
    double delay = WORKER_POOL_RESTART_BACKOFF_MIN_S;

    log_warning("Pool '%s': the template interpreter (pid %d) %s", pool->config.name, (int)z->pid,
                status);
    zygote_release(pool);
    if (pool->freeing) {
        return;
    }
    /* Forks the old zygote never confirmed are lost, so their slots are forked again. */
    for (Worker *w = pool->workers, *next; w; w = next) {
        next = w->next;
        if (w->state == WORKER_FORKING) {
            worker_pool_on_worker_exit(pool, w, "was never forked");
        }
    }
    for (unsigned i = 0; i < z->restarts && delay < WORKER_POOL_RESTART_BACKOFF_MAX_S; i++) {
        delay *= 2;
    }
    if (delay > WORKER_POOL_RESTART_BACKOFF_MAX_S) {
        delay = WORKER_POOL_RESTART_BACKOFF_MAX_S;
    }
    z->restarts++;
    ev_timer_set(&pool->zygote_restart_timer, delay, 0.);
    ev_timer_start(pool->loop, &pool->zygote_restart_timer);
}

void worker_process_init_pool(WorkerPool *pool)
{
    ev_init(&pool->zygote_restart_timer, zygote_restart_cb);
    pool->zygote_restart_timer.data = pool;
}

void worker_process_stop_zygote(WorkerPool *pool)
{
    Zygote *z = &pool->zygote;

    ev_timer_stop(pool->loop, &pool->zygote_restart_timer);
    if (z->pid > 0) {
        kill(z->pid, SIGKILL);
        siginfo_t si;
        waitid(P_PIDFD, (id_t)z->pidfd, &si, WEXITED);
    }
    zygote_release(pool);
}

/* ---- Workers ---- */

/*
 * Worker ids are unique across the pools of this daemon and, with high probability, across its
 * restarts: a session kept in Redis names its worker by id, and a new daemon must not mistake
 * one of its own workers for that one.
 */
static uint32_t next_worker_id(void)
{
    static uint32_t next;

    if (next == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        next = ((uint32_t)ts.tv_sec * 1000u + (uint32_t)(ts.tv_nsec / 1000000)) ^
               ((uint32_t)getpid() << 16);
    }
    if (++next == 0) {
        next = 1;
    }
    return next;
}

int worker_process_fork(WorkerPool *pool)
{
    int request[2] = {-1, -1};
    int heartbeat[2] = {-1, -1};
    ZygoteMsg msg;
    int r;

    if (!pool->zygote.ready) {
        return -EAGAIN;
    }
    Worker *w = calloc(1, sizeof(*w));
    if (!w) {
        return -ENOMEM;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, request) < 0 ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, heartbeat) < 0) {
        r = -errno;
        goto fail;
    }

    memset(&msg, 0, sizeof(msg));
    msg.type = ZYGOTE_MSG_FORK;
    msg.worker_id = next_worker_id();

    char control[CMSG_SPACE(2 * sizeof(int))];
    struct iovec iov = {.iov_base = &msg, .iov_len = sizeof(msg)};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                        .msg_controllen = sizeof(control)};
    memset(control, 0, sizeof(control));
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(2 * sizeof(int));
    int child_fds[2] = {request[1], heartbeat[1]};
    memcpy(CMSG_DATA(cm), child_fds, sizeof(child_fds));
    if (sendmsg(pool->zygote.control_fd, &mh, MSG_NOSIGNAL) < 0) {
        r = -errno;
        goto fail;
    }
    close(request[1]);
    close(heartbeat[1]);

    w->pool = pool;
    w->id = msg.worker_id;
    w->state = WORKER_FORKING;
    w->exit_status = -1;
    w->exit_signal = -1;
    w->fork_requested = ev_now(pool->loop);
    w->pid = 0;
    w->pidfd = -1;
    w->request_fd = request[0];
    w->heartbeat_fd = heartbeat[0];
    set_nonblocking(w->request_fd);
    set_nonblocking(w->heartbeat_fd);
    ev_io_init(&w->request_read_watcher, worker_request_read_cb, w->request_fd, EV_READ);
    ev_io_init(&w->request_write_watcher, worker_request_write_cb, w->request_fd, EV_WRITE);
    ev_io_init(&w->heartbeat_watcher, worker_heartbeat_read_cb, w->heartbeat_fd, EV_READ);
    ev_init(&w->heartbeat_timer, worker_heartbeat_timer_cb);
    w->heartbeat_timer.repeat = pool->config.heartbeat_interval_ms / 1000.0;
    w->request_read_watcher.data = w;
    w->request_write_watcher.data = w;
    w->heartbeat_watcher.data = w;
    w->heartbeat_timer.data = w;
    ev_io_start(pool->loop, &w->request_read_watcher);
    ev_io_start(pool->loop, &w->heartbeat_watcher);
    ev_timer_again(pool->loop, &w->heartbeat_timer);

    w->next = pool->workers;
    pool->workers = w;
    pool->worker_count++;
    return 0;
fail:
    for (int i = 0; i < 2; i++) {
        close_fd(&request[i]);
        close_fd(&heartbeat[i]);
    }
    free(w);
    return log_error_errno(r, "Pool '%s': failed to request a worker fork", pool->config.name);
}

int worker_process_send(Worker *w, WorkerFrameType type, uint64_t id, const char *payload,
                        size_t len)
{
    uint8_t header[WORKER_FRAME_HEADER_SIZE];
    struct iovec parts[2] = {
        {.iov_base = header, .iov_len = sizeof(header)},
        {.iov_base = (void *)payload, .iov_len = len},
    };

    if (w->request_fd < 0) {
        return -ENOTCONN;
    }
    worker_proto_header_encode(header, type, id, len);
    if (outbuf_append(&w->out, parts, 2) < 0) {
        return -ENOMEM;
    }
    int r = outbuf_flush(&w->out, w->request_fd);
    if (r < 0) {
        return r;
    }
    if (!outbuf_empty(&w->out)) {
        ev_io_start(w->pool->loop, &w->request_write_watcher);
    }
    return 0;
}

static void worker_request_write_cb(struct ev_loop *loop, ev_io *watcher, int revents)
{
    Worker *w = watcher->data;
    int r = outbuf_flush(&w->out, w->request_fd);

    if (r < 0 || outbuf_empty(&w->out)) {
        ev_io_stop(loop, watcher);
    }
    if (r < 0) {
        worker_process_kill(w, SIGKILL, "its request socket failed");
    }
}

static int worker_reserve(Worker *w, size_t need)
{
    if (w->in_cap - w->in_len >= need) {
        return 0;
    }
    size_t cap = w->in_cap ? w->in_cap : WORKER_READ_CHUNK;
    while (cap - w->in_len < need) {
        cap *= 2;
    }
    char *in = realloc(w->in, cap);
    if (!in) {
        return -ENOMEM;
    }
    w->in = in;
    w->in_cap = cap;
    return 0;
}

/* Pass every complete frame to the pool. Returns 0, or -EBADMSG after a protocol error. */
static int worker_process_input(Worker *w)
{
    size_t at = 0;
    int r = 0;

    while (w->request_fd >= 0) {
        WorkerFrameType type;
        uint64_t id;
        size_t payload_len;
        r = worker_proto_header_decode((const uint8_t *)w->in + at, w->in_len - at,
                                       w->pool->max_message_bytes + 4096, &type, &id,
                                       &payload_len);
        if (r == -EAGAIN) {
            r = 0;
            break;
        }
        if (r < 0) {
            break;
        }
        if (w->in_len - at - WORKER_FRAME_HEADER_SIZE < payload_len) {
            memmove(w->in, w->in + at, w->in_len - at);
            w->in_len -= at;
            at = 0;
            r = worker_reserve(w, WORKER_FRAME_HEADER_SIZE + payload_len - w->in_len);
            break;
        }
        worker_pool_on_frame(w->pool, w, type, id, w->in + at + WORKER_FRAME_HEADER_SIZE,
                             payload_len);
        at += WORKER_FRAME_HEADER_SIZE + payload_len;
    }
    if (at > 0) {
        memmove(w->in, w->in + at, w->in_len - at);
        w->in_len -= at;
    }
    return r;
}

static void worker_request_read_cb(struct ev_loop *loop, ev_io *watcher, int revents)
{
    Worker *w = watcher->data;

    if (worker_reserve(w, WORKER_READ_CHUNK) < 0) {
        worker_process_kill(w, SIGKILL, "out of memory for its output");
        return;
    }
    ssize_t n = read(w->request_fd, w->in + w->in_len, w->in_cap - w->in_len);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        return;
    }
    if (n <= 0) {
        /* The worker closed its socket: it is exiting; its pidfd reports how. */
        ev_io_stop(loop, watcher);
        return;
    }
    w->in_len += (size_t)n;
    int r = worker_process_input(w);
    if (r < 0) {
        log_error_errno(r, "Pool '%s': worker %u (pid %d) sent an invalid frame",
                        w->pool->config.name, w->id, (int)w->pid);
        worker_process_kill(w, SIGKILL, "it broke the frame protocol");
    }
}

static void worker_heartbeat_read_cb(struct ev_loop *loop, ev_io *watcher, int revents)
{
    Worker *w = watcher->data;
    char buf[64];
    ssize_t n = read(w->heartbeat_fd, buf, sizeof(buf));

    if (n > 0) {
        w->heartbeat_outstanding = false;
        w->heartbeats_missed = 0;
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        ev_io_stop(loop, watcher);
    }
}

static void worker_heartbeat_timer_cb(struct ev_loop *loop, ev_timer *timer, int revents)
{
    Worker *w = timer->data;
    static const char ping = 'h';

    if (w->state == WORKER_FORKING || w->state == WORKER_STOPPING) {
        return;
    }
    if (w->state == WORKER_STARTING
        && ev_now(loop) - w->fork_requested < WORKER_POOL_START_GRACE_S) {
        return;
    }
    if (w->heartbeat_outstanding) {
        w->heartbeats_missed++;
        log_warning("Pool '%s': worker %u (pid %d) missed heartbeat %u of %u",
                    w->pool->config.name, w->id, (int)w->pid, w->heartbeats_missed,
                    w->pool->config.heartbeat_misses);
        PoolEvent event = {.type = POOL_EVENT_HEARTBEAT_MISSED, .pool = w->pool->config.name,
                           .worker_id = w->id, .os_pid = (int)w->pid,
                           .missed = w->heartbeats_missed};
        worker_pool_emit(w->pool, &event);
        if (w->heartbeats_missed >= w->pool->config.heartbeat_misses) {
            w->crash_reason = "heartbeat";
            worker_process_kill(w, SIGKILL, "it stopped answering heartbeats");
            return;
        }
    }
    if (write(w->heartbeat_fd, &ping, 1) == 1) {
        w->heartbeat_outstanding = true;
    }
    worker_pool_on_idle_tick(w->pool, w);
}

void worker_process_kill(Worker *w, int sig, const char *reason)
{
    if (w->state != WORKER_STOPPING) {
        snprintf(w->stop_reason, sizeof(w->stop_reason), "%s", reason);
    }
    log_warning("Pool '%s': killing worker %u (pid %d) with signal %d because %s",
                w->pool->config.name, w->id, (int)w->pid, sig, reason);
    w->state = WORKER_STOPPING;
    if (w->pidfd >= 0) {
        syscall(SYS_pidfd_send_signal, w->pidfd, sig, NULL, 0);
    }
}

static void worker_kill_timer_cb(struct ev_loop *loop, ev_timer *timer, int revents)
{
    Worker *w = timer->data;

    worker_process_kill(w, SIGKILL, "it did not exit after being recycled");
}

void worker_process_recycle(Worker *w, const char *code, const char *reason)
{
    worker_pool_emit_worker(w->pool, POOL_EVENT_WORKER_RECYCLED, w, code);
    log_info("Pool '%s': recycling worker %u (pid %d): %s", w->pool->config.name, w->id,
             (int)w->pid, reason);
    snprintf(w->stop_reason, sizeof(w->stop_reason), "%s", reason);
    w->state = WORKER_STOPPING;
    w->expected_exit = true;
    /* Closing its sockets makes the worker exit. SIGTERM and then SIGKILL make sure it does. */
    ev_io_stop(w->pool->loop, &w->request_read_watcher);
    ev_io_stop(w->pool->loop, &w->request_write_watcher);
    ev_io_stop(w->pool->loop, &w->heartbeat_watcher);
    close_fd(&w->request_fd);
    close_fd(&w->heartbeat_fd);
    if (w->pidfd >= 0) {
        syscall(SYS_pidfd_send_signal, w->pidfd, SIGTERM, NULL, 0);
    }
    ev_timer_init(&w->kill_timer, worker_kill_timer_cb, 2.0, 0.);
    w->kill_timer.data = w;
    ev_timer_start(w->pool->loop, &w->kill_timer);
}

unsigned long worker_process_rss_mb(const Worker *w)
{
    char path[64];
    unsigned long size_pages = 0;
    unsigned long resident_pages = 0;

    snprintf(path, sizeof(path), "/proc/%d/statm", (int)w->pid);
    FILE *f = fopen(path, "re");
    if (!f) {
        return 0;
    }
    if (fscanf(f, "%lu %lu", &size_pages, &resident_pages) != 2) {
        resident_pages = 0;
    }
    fclose(f);
    return resident_pages * (unsigned long)sysconf(_SC_PAGESIZE) / (1024ul * 1024ul);
}

static void worker_pidfd_cb(struct ev_loop *loop, ev_io *watcher, int revents)
{
    Worker *w = watcher->data;
    char status[128];
    int r = reap_pidfd(w->pidfd, status, sizeof(status), &w->exit_status, &w->exit_signal);

    if (r == 0) {
        return;
    }
    if (r < 0) {
        /* ECHILD: it died while still the intermediate's child. Its zombie passes to the
         * daemon, a child subreaper, when the intermediate exits, and the orphan reaper
         * collects it. */
        snprintf(status, sizeof(status), "exited before it became the daemon's child (%s)",
                 strerror(-r));
        w->exit_status = -1;
        w->exit_signal = -1;
    }
    worker_pool_on_worker_exit(w->pool, w, status);
}

void worker_process_free(Worker *w)
{
    struct ev_loop *loop = w->pool->loop;

    ev_io_stop(loop, &w->pidfd_watcher);
    ev_io_stop(loop, &w->request_read_watcher);
    ev_io_stop(loop, &w->request_write_watcher);
    ev_io_stop(loop, &w->heartbeat_watcher);
    ev_timer_stop(loop, &w->heartbeat_timer);
    ev_timer_stop(loop, &w->kill_timer);
    close_fd(&w->request_fd);
    close_fd(&w->heartbeat_fd);
    close_fd(&w->pidfd);
    outbuf_clear(&w->out);
    free(w->in);
    free(w);
}
