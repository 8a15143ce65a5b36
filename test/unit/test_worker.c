/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests of snakepit-worker through its real protocol. Each test plays the daemon: it becomes a
 * child subreaper, execs the built binary as a zygote with the control socket on fd 3, forks
 * workers through FORK messages and sends CALL frames encoded with ei. Nothing is mocked: the
 * worker runs the real interpreter and the fixture modules in test/fixtures/python.
 */
#include <criterion/criterion.h>
#include <ei.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "worker_proto.h"

#define IO_TIMEOUT_MS 10000
#define ALLOW "operator,os,time,worker_fixtures,c20_matmul"

typedef struct {
    pid_t pid;
    int control; /* the daemon's end of the SEQPACKET control socket */
} Zygote;

typedef struct {
    pid_t pid;
    uint32_t id;
    int request;   /* the daemon's end of the request socket */
    int heartbeat; /* the daemon's end of the heartbeat socket */
} Worker;

typedef struct {
    WorkerFrameType type;
    uint64_t id;
    char *payload; /* malloc'd */
    size_t len;
} Frame;

static void become_subreaper(void)
{
    cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
}

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const char *worker_binary(void)
{
    const char *path = getenv("SNAKEPIT_WORKER");

    cr_assert_not_null(path, "SNAKEPIT_WORKER must name the snakepit-worker binary");
    return path;
}

/* Exec the zygote with `extra` arguments (NULL-terminated) after the common ones. */
static void zygote_start_as(Zygote *z, pid_t daemon_pid, const char *const *extra)
{
    const char *argv[32];
    char pid_text[16];
    int sv[2], n = 0;

    cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    snprintf(pid_text, sizeof(pid_text), "%d", (int)daemon_pid);
    argv[n++] = worker_binary();
    argv[n++] = "--zygote";
    argv[n++] = "--pool";
    argv[n++] = "test";
    argv[n++] = "--daemon-pid";
    argv[n++] = pid_text;
    argv[n++] = "--log-level";
    argv[n++] = "warning";
    for (; extra && *extra; extra++) {
        argv[n++] = *extra;
    }
    argv[n] = NULL;

    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        if (dup2(sv[1], ZYGOTE_CONTROL_FD) < 0) {
            _exit(127);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(sv[1]);
    z->pid = pid;
    z->control = sv[0];
}

static void zygote_start(Zygote *z, const char *const *extra)
{
    zygote_start_as(z, getpid(), extra);
}

static bool wait_readable(int fd, int timeout_ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};

    return poll(&pfd, 1, timeout_ms) == 1;
}

static ZygoteMsg zygote_recv(Zygote *z)
{
    ZygoteMsg msg;

    cr_assert(wait_readable(z->control, IO_TIMEOUT_MS), "no message from the zygote");
    cr_assert_eq(recv(z->control, &msg, sizeof(msg), 0), (ssize_t)sizeof(msg));
    return msg;
}

static void zygote_expect_ready(Zygote *z)
{
    ZygoteMsg msg = zygote_recv(z);

    cr_assert_eq(msg.type, ZYGOTE_MSG_READY, "expected READY, got %u: %s", msg.type, msg.text);
    cr_assert_eq(strncmp(msg.text, "3.", 2), 0, "READY text is the Python version: %s",
                 msg.text);
}

/* Wait for `pid` to exit within `timeout_ms`; returns its wait status, or -1 on timeout. */
static int wait_exit(pid_t pid, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    int status;

    while (now_ms() < deadline) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            return status;
        }
        cr_assert_geq(r, 0, "waitpid(%d) failed: %s", (int)pid, strerror(errno));
        nanosleep(&(struct timespec){.tv_nsec = 5 * 1000 * 1000}, NULL);
    }
    return -1;
}

/* Close the control socket and expect the zygote to exit 0. */
static void zygote_stop(Zygote *z)
{
    close(z->control);
    int status = wait_exit(z->pid, 5000);
    cr_assert(status != -1, "zygote did not exit after the control socket closed");
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "zygote exit status %d", status);
}

static void write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = write(fd, p, len);
        cr_assert_gt(n, 0, "write failed: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
}

static bool read_all(int fd, void *buf, size_t len, int timeout_ms)
{
    char *p = buf;

    while (len > 0) {
        if (!wait_readable(fd, timeout_ms)) {
            return false;
        }
        ssize_t n = read(fd, p, len);
        if (n <= 0) {
            return false;
        }
        p += n;
        len -= (size_t)n;
    }
    return true;
}

static void send_frame(int fd, WorkerFrameType type, uint64_t id, const ei_x_buff *x)
{
    uint8_t header[WORKER_FRAME_HEADER_SIZE];

    worker_proto_header_encode(header, type, id, (size_t)x->index);
    write_all(fd, header, sizeof(header));
    write_all(fd, x->buff, (size_t)x->index);
}

/* Read one frame; returns false on timeout or end of stream. */
static bool try_read_frame(int fd, Frame *f, int timeout_ms)
{
    uint8_t header[WORKER_FRAME_HEADER_SIZE];

    if (!read_all(fd, header, sizeof(header), timeout_ms)) {
        return false;
    }
    cr_assert_eq(worker_proto_header_decode(header, sizeof(header), SIZE_MAX, &f->type, &f->id,
                                            &f->len), 0);
    f->payload = malloc(f->len ? f->len : 1);
    cr_assert_not_null(f->payload);
    cr_assert(read_all(fd, f->payload, f->len, IO_TIMEOUT_MS), "truncated frame payload");
    return true;
}

static Frame read_frame(int fd)
{
    Frame f;

    cr_assert(try_read_frame(fd, &f, IO_TIMEOUT_MS), "no frame from the worker");
    return f;
}

static void frame_free(Frame *f)
{
    free(f->payload);
    f->payload = NULL;
}

/* Send FORK for worker `id`; `w` keeps the daemon's ends of its sockets. */
static void worker_fork_send(Zygote *z, Worker *w, uint32_t id)
{
    int request[2], heartbeat[2];
    union {
        char buf[CMSG_SPACE(2 * sizeof(int))];
        struct cmsghdr align;
    } control;
    ZygoteMsg msg = {.type = ZYGOTE_MSG_FORK, .worker_id = id};
    struct iovec iov = {.iov_base = &msg, .iov_len = sizeof(msg)};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                        .msg_controllen = sizeof(control.buf)};

    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, request), 0);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, heartbeat), 0);
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    cr_assert_not_null(c);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(2 * sizeof(int));
    int fds[2] = {request[1], heartbeat[1]};
    memcpy(CMSG_DATA(c), fds, sizeof(fds));
    cr_assert_eq(sendmsg(z->control, &mh, 0), (ssize_t)sizeof(msg));
    close(request[1]);
    close(heartbeat[1]);
    *w = (Worker){.id = id, .request = request[0], .heartbeat = heartbeat[0]};
}

/* Expect FORKED for `w` from the zygote, then the worker's HELLO. */
static void worker_fork_expect(Zygote *z, Worker *w)
{
    ZygoteMsg reply = zygote_recv(z);
    cr_assert_eq(reply.type, ZYGOTE_MSG_FORKED, "expected FORKED, got %u: %s", reply.type,
                 reply.text);
    cr_assert_eq(reply.worker_id, w->id);
    cr_assert_gt(reply.pid, 0);
    w->pid = reply.pid;

    /* HELLO: {hello, OsPid, WorkerId}. */
    Frame f = read_frame(w->request);
    int index = 0, version, arity;
    long pid;
    unsigned long wid;
    char atom[MAXATOMLEN_UTF8];
    cr_assert_eq(f.type, WORKER_FRAME_HELLO);
    cr_assert_eq(f.id, 0);
    cr_assert_eq(ei_decode_version(f.payload, &index, &version), 0);
    cr_assert_eq(ei_decode_tuple_header(f.payload, &index, &arity), 0);
    cr_assert_eq(arity, 3);
    cr_assert_eq(ei_decode_atom(f.payload, &index, atom), 0);
    cr_assert_str_eq(atom, "hello");
    cr_assert_eq(ei_decode_long(f.payload, &index, &pid), 0);
    cr_assert_eq(pid, reply.pid, "HELLO pid %ld, FORKED pid %d", pid, reply.pid);
    cr_assert_eq(ei_decode_ulong(f.payload, &index, &wid), 0);
    cr_assert_eq(wid, w->id);
    frame_free(&f);
}

static void worker_fork(Zygote *z, Worker *w, uint32_t id)
{
    worker_fork_send(z, w, id);
    worker_fork_expect(z, w);
}

/* Close the worker's sockets and expect it to exit 0 (the daemon stopped it). */
static void worker_stop(Worker *w)
{
    close(w->request);
    close(w->heartbeat);
    int status = wait_exit(w->pid, 5000);
    cr_assert(status != -1, "worker %d did not exit after its sockets closed", (int)w->pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "worker exit status %d", status);
}

/* Start a zygote with the common allowlist and fork worker 1. */
static void start_one(Zygote *z, Worker *w, const char *const *extra)
{
    const char *args[24] = {"--allow", ALLOW};
    int n = 2;

    for (; extra && *extra; extra++) {
        args[n++] = *extra;
    }
    args[n] = NULL;
    zygote_start(z, args);
    zygote_expect_ready(z);
    worker_fork(z, w, 1);
}

static void stop_all(Zygote *z, Worker *w)
{
    worker_stop(w);
    zygote_stop(z);
}

/* Begin a CALL payload: {Command, Args, ...}; the caller encodes Args, then call_finish. */
static void call_begin(ei_x_buff *x, const char *command)
{
    cr_assert_eq(ei_x_new_with_version(x), 0);
    ei_x_encode_tuple_header(x, 3);
    ei_x_encode_binary(x, command, (long)strlen(command));
}

static void call_finish(ei_x_buff *x, bool stream, const char *session_id)
{
    ei_x_encode_map_header(x, 3);
    ei_x_encode_atom(x, "stream");
    ei_x_encode_boolean(x, stream);
    ei_x_encode_atom(x, "session_id");
    if (session_id) {
        ei_x_encode_binary(x, session_id, (long)strlen(session_id));
    } else {
        ei_x_encode_atom(x, "nil");
    }
    ei_x_encode_atom(x, "timeout_ms");
    ei_x_encode_long(x, 30000);
}

static void send_call(Worker *w, uint64_t id, ei_x_buff *x)
{
    send_frame(w->request, WORKER_FRAME_CALL, id, x);
    ei_x_free(x);
}

/* Send a call with no arguments. */
static void send_call0(Worker *w, uint64_t id, const char *command)
{
    ei_x_buff x;

    call_begin(&x, command);
    ei_x_encode_empty_list(&x);
    call_finish(&x, false, NULL);
    send_call(w, id, &x);
}

/* Send a call with one integer argument. */
static void send_call_long(Worker *w, uint64_t id, const char *command, long arg)
{
    ei_x_buff x;

    call_begin(&x, command);
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_long(&x, arg);
    ei_x_encode_empty_list(&x);
    call_finish(&x, false, NULL);
    send_call(w, id, &x);
}

/* Read the REPLY of call `id`; *index points after the ok/error tag. Returns true for ok. */
static bool read_reply(Worker *w, uint64_t id, Frame *f, int *index)
{
    int version, arity;
    char tag[MAXATOMLEN_UTF8];

    *f = read_frame(w->request);
    cr_assert_eq(f->type, WORKER_FRAME_REPLY, "expected REPLY, got frame type %d", f->type);
    cr_assert_eq(f->id, id, "REPLY for call %llu, expected %llu", (unsigned long long)f->id,
                 (unsigned long long)id);
    *index = 0;
    cr_assert_eq(ei_decode_version(f->payload, index, &version), 0);
    cr_assert_eq(ei_decode_tuple_header(f->payload, index, &arity), 0);
    cr_assert_eq(arity, 2);
    cr_assert_eq(ei_decode_atom(f->payload, index, tag), 0);
    cr_assert(strcmp(tag, "ok") == 0 || strcmp(tag, "error") == 0, "reply tag %s", tag);
    return strcmp(tag, "ok") == 0;
}

static long expect_ok_long(Worker *w, uint64_t id)
{
    Frame f;
    int index;
    long value;

    cr_assert(read_reply(w, id, &f, &index), "call %llu failed", (unsigned long long)id);
    cr_assert_eq(ei_decode_long(f.payload, &index, &value), 0);
    frame_free(&f);
    return value;
}

/* Decode a binary at *index into a malloc'd NUL-terminated string. */
static char *decode_binary(const char *buf, int *index)
{
    int type, size;
    long len;

    cr_assert_eq(ei_get_type(buf, index, &type, &size), 0);
    cr_assert_eq(type, ERL_BINARY_EXT, "expected a binary, got type %c", type);
    char *out = malloc((size_t)size + 1);
    cr_assert_not_null(out);
    cr_assert_eq(ei_decode_binary(buf, index, out, &len), 0);
    out[len] = '\0';
    return out;
}

/* The fields of an error map that the tests check. */
typedef struct {
    char kind[MAXATOMLEN_UTF8];
    char *message;
    char *type;           /* NULL when absent */
    int traceback_lines;  /* -1 when absent */
    bool has_args;
    bool retryable;
    bool has_retryable;
} ErrorMap;

static void error_map_free(ErrorMap *e)
{
    free(e->message);
    free(e->type);
}

static ErrorMap decode_error_map(const char *buf, int *index)
{
    ErrorMap e = {.traceback_lines = -1};
    int arity;

    cr_assert_eq(ei_decode_map_header(buf, index, &arity), 0);
    for (int i = 0; i < arity; i++) {
        char key[MAXATOMLEN_UTF8];
        cr_assert_eq(ei_decode_atom(buf, index, key), 0);
        if (strcmp(key, "kind") == 0) {
            cr_assert_eq(ei_decode_atom(buf, index, e.kind), 0);
        } else if (strcmp(key, "message") == 0) {
            e.message = decode_binary(buf, index);
        } else if (strcmp(key, "type") == 0) {
            e.type = decode_binary(buf, index);
        } else if (strcmp(key, "traceback") == 0) {
            int n;
            cr_assert_eq(ei_decode_list_header(buf, index, &n), 0);
            for (int j = 0; j < n; j++) {
                free(decode_binary(buf, index));
            }
            if (n > 0) {
                int tail;
                cr_assert_eq(ei_decode_list_header(buf, index, &tail), 0);
                cr_assert_eq(tail, 0, "the traceback is a proper list");
            }
            e.traceback_lines = n;
        } else if (strcmp(key, "retryable") == 0) {
            int b;
            cr_assert_eq(ei_decode_boolean(buf, index, &b), 0);
            e.retryable = b;
            e.has_retryable = true;
        } else {
            cr_assert_str_eq(key, "args", "unexpected error map key %s", key);
            e.has_args = true;
            cr_assert_eq(ei_skip_term(buf, index), 0);
        }
    }
    cr_assert_not_null(e.message, "error map without message");
    cr_assert(e.has_retryable, "error map without retryable");
    return e;
}

static ErrorMap expect_error(Worker *w, uint64_t id)
{
    Frame f;
    int index;

    cr_assert_not(read_reply(w, id, &f, &index), "call %llu succeeded", (unsigned long long)id);
    ErrorMap e = decode_error_map(f.payload, &index);
    frame_free(&f);
    return e;
}

static void expect_python_exception(Worker *w, uint64_t id, const char *type,
                                    const char *message)
{
    ErrorMap e = expect_error(w, id);

    cr_assert_str_eq(e.kind, "python_exception");
    cr_assert_not_null(e.type, "python_exception without type");
    cr_assert_str_eq(e.type, type);
    if (message) {
        cr_assert_str_eq(e.message, message);
    }
    cr_assert_gt(e.traceback_lines, 0, "traceback of %s is empty", type);
    cr_assert(e.has_args);
    cr_assert_not(e.retryable);
    error_map_free(&e);
}

static void expect_no_frame_within(Worker *w, int wait_ms)
{
    Frame f;

    cr_assert_not(try_read_frame(w->request, &f, wait_ms), "unexpected frame of type %d",
                  f.type);
}

/* The worker still serves: operator.add(20, 22). */
static void expect_serving(Worker *w, uint64_t id)
{
    ei_x_buff x;

    call_begin(&x, "python.operator.add");
    ei_x_encode_list_header(&x, 2);
    ei_x_encode_long(&x, 20);
    ei_x_encode_long(&x, 22);
    ei_x_encode_empty_list(&x);
    call_finish(&x, false, NULL);
    send_call(w, id, &x);
    cr_assert_eq(expect_ok_long(w, id), 42);
}

TestSuite(worker, .init = become_subreaper, .timeout = 60);

Test(worker, operator_add)
{
    Zygote z;
    Worker w;

    start_one(&z, &w, NULL);
    expect_serving(&w, 1);
    stop_all(&z, &w);
}

Test(worker, os_path_join)
{
    Zygote z;
    Worker w;
    ei_x_buff x;
    Frame f;
    int index;

    start_one(&z, &w, NULL);
    call_begin(&x, "python.os.path.join");
    ei_x_encode_list_header(&x, 2);
    ei_x_encode_binary(&x, "usr", 3);
    ei_x_encode_binary(&x, "lib", 3);
    ei_x_encode_empty_list(&x);
    call_finish(&x, false, NULL);
    send_call(&w, 7, &x);
    cr_assert(read_reply(&w, 7, &f, &index));
    char *joined = decode_binary(f.payload, &index);
    cr_assert_str_eq(joined, "usr/lib");
    free(joined);
    frame_free(&f);
    stop_all(&z, &w);
}

Test(worker, keyword_and_mixed_args)
{
    Zygote z;
    Worker w;
    ei_x_buff x;
    Frame f;
    int index;

    start_one(&z, &w, NULL);
    /* os.getenv(key, default=None) takes both forms: {[Key], #{default => D}} and a map. */
    call_begin(&x, "python.os.getenv");
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_binary(&x, "SNAKEPIT_NO_SUCH_VARIABLE", 25);
    ei_x_encode_empty_list(&x);
    ei_x_encode_map_header(&x, 1);
    ei_x_encode_atom(&x, "default");
    ei_x_encode_binary(&x, "fallback", 8);
    call_finish(&x, false, NULL);
    send_call(&w, 1, &x);
    cr_assert(read_reply(&w, 1, &f, &index));
    char *value = decode_binary(f.payload, &index);
    cr_assert_str_eq(value, "fallback");
    free(value);
    frame_free(&f);

    call_begin(&x, "python.os.getenv");
    ei_x_encode_map_header(&x, 2);
    ei_x_encode_atom(&x, "key");
    ei_x_encode_binary(&x, "SNAKEPIT_NO_SUCH_VARIABLE", 25);
    ei_x_encode_atom(&x, "default");
    ei_x_encode_binary(&x, "kw", 2);
    call_finish(&x, false, NULL);
    send_call(&w, 2, &x);
    cr_assert(read_reply(&w, 2, &f, &index));
    value = decode_binary(f.payload, &index);
    cr_assert_str_eq(value, "kw");
    free(value);
    frame_free(&f);
    stop_all(&z, &w);
}

Test(worker, bad_args_and_commands)
{
    Zygote z;
    Worker w;
    ei_x_buff x;
    ErrorMap e;

    start_one(&z, &w, NULL);
    /* Args that are neither a list, a map nor {list, map}. */
    call_begin(&x, "python.operator.add");
    ei_x_encode_long(&x, 5);
    call_finish(&x, false, NULL);
    send_call(&w, 1, &x);
    e = expect_error(&w, 1);
    cr_assert_str_eq(e.kind, "bad_request");
    cr_assert_null(e.type, "a bad_request has no Python type");
    error_map_free(&e);

    /* A keyword map with an integer key. */
    call_begin(&x, "python.os.getenv");
    ei_x_encode_map_header(&x, 1);
    ei_x_encode_long(&x, 1);
    ei_x_encode_long(&x, 2);
    call_finish(&x, false, NULL);
    send_call(&w, 2, &x);
    e = expect_error(&w, 2);
    cr_assert_str_eq(e.kind, "bad_request");
    error_map_free(&e);

    send_call0(&w, 3, "python.os.no_such_function");
    e = expect_error(&w, 3);
    cr_assert_str_eq(e.kind, "bad_request");
    error_map_free(&e);

    send_call0(&w, 4, "no_adapter_tool");
    e = expect_error(&w, 4);
    cr_assert_str_eq(e.kind, "bad_request");
    error_map_free(&e);

    /* A payload that is not {Command, Args, Opts}. */
    cr_assert_eq(ei_x_new_with_version(&x), 0);
    ei_x_encode_atom(&x, "garbage");
    send_call(&w, 5, &x);
    e = expect_error(&w, 5);
    cr_assert_str_eq(e.kind, "bad_request");
    error_map_free(&e);

    expect_serving(&w, 6);
    stop_all(&z, &w);
}

Test(worker, unencodable_result)
{
    Zygote z;
    Worker w;

    start_one(&z, &w, NULL);
    send_call0(&w, 1, "python.worker_fixtures.unencodable");
    ErrorMap e = expect_error(&w, 1);
    cr_assert_str_eq(e.kind, "encode_error");
    cr_assert(strstr(e.message, "object") != NULL, "the message names the type: %s", e.message);
    cr_assert_not(e.retryable);
    error_map_free(&e);
    expect_serving(&w, 2);
    stop_all(&z, &w);
}

Test(worker, forked_child_never_replies)
{
    Zygote z;
    Worker w;
    Frame f;
    int index, arity;
    long status;

    start_one(&z, &w, NULL);
    send_call0(&w, 1, "python.worker_fixtures.fork_child_returns");
    cr_assert(read_reply(&w, 1, &f, &index), "the forking call failed");
    cr_assert_eq(ei_decode_list_header(f.payload, &index, &arity), 0);
    cr_assert_eq(arity, 2);
    char *who = decode_binary(f.payload, &index);
    cr_assert_str_eq(who, "parent", "the child's reply reached the daemon");
    free(who);
    cr_assert_eq(ei_decode_long(f.payload, &index, &status), 0);
    cr_assert_eq(status, 0, "the child exited with %ld", status);
    frame_free(&f);
    expect_no_frame_within(&w, 200);
    expect_serving(&w, 2);
    stop_all(&z, &w);
}

Test(worker, sys_executable_runs_python)
{
    Zygote z;
    Worker w;
    Frame f;
    int index, arity;

    start_one(&z, &w, NULL);
    send_call0(&w, 1, "python.worker_fixtures.interpreter");
    cr_assert(read_reply(&w, 1, &f, &index), "running sys.executable failed");
    cr_assert_eq(ei_decode_list_header(f.payload, &index, &arity), 0);
    cr_assert_eq(arity, 2);
    char *executable = decode_binary(f.payload, &index);
    char *prefix = decode_binary(f.payload, &index);
    cr_assert(strstr(executable, "python") != NULL, "sys.executable is %s", executable);
    cr_assert_str_eq(prefix, "/usr", "%s printed the prefix %s", executable, prefix);
    free(executable);
    free(prefix);
    frame_free(&f);
    stop_all(&z, &w);
}

/* Check what worker `w` inherited from the zygote (worker_fixtures.inherited_state). */
static void expect_own_inheritance(Worker *w)
{
    Frame f;
    int index, arity, pipe_default, chld_default, gc_enabled, frozen;
    long seqpacket, streams, pidfds, ppid;

    send_call0(w, 1, "python.worker_fixtures.inherited_state");
    cr_assert(read_reply(w, 1, &f, &index));
    cr_assert_eq(ei_decode_list_header(f.payload, &index, &arity), 0);
    cr_assert_eq(arity, 8);
    cr_assert_eq(ei_decode_boolean(f.payload, &index, &pipe_default), 0);
    cr_assert(pipe_default, "SIGPIPE is not SIG_DFL in the worker");
    cr_assert_eq(ei_decode_boolean(f.payload, &index, &chld_default), 0);
    cr_assert(chld_default, "SIGCHLD is not SIG_DFL in the worker");
    cr_assert_eq(ei_decode_long(f.payload, &index, &seqpacket), 0);
    cr_assert_eq(seqpacket, 0, "the worker kept the zygote's control socket");
    cr_assert_eq(ei_decode_long(f.payload, &index, &streams), 0);
    cr_assert_eq(streams, 2, "worker %u has %ld stream sockets, expected its request and "
                 "heartbeat sockets only", w->id, streams);
    cr_assert_eq(ei_decode_long(f.payload, &index, &pidfds), 0);
    cr_assert_eq(pidfds, 1, "the worker has %ld pidfds, expected only its daemon's", pidfds);
    cr_assert_eq(ei_decode_long(f.payload, &index, &ppid), 0);
    cr_assert_eq(ppid, (long)getpid(), "the worker's parent is %ld, not the daemon", ppid);
    cr_assert_eq(ei_decode_boolean(f.payload, &index, &gc_enabled), 0);
    cr_assert(gc_enabled, "the garbage collector is off in the worker");
    cr_assert_eq(ei_decode_boolean(f.payload, &index, &frozen), 0);
    cr_assert(frozen, "the zygote did not freeze its objects before forking");
    frame_free(&f);
}

Test(worker, worker_inherits_only_its_own)
{
    Zygote z;
    Worker w;

    start_one(&z, &w, NULL);
    expect_own_inheritance(&w);
    stop_all(&z, &w);
}

/*
 * FORKs queued together are served by intermediates of up to 8 workers (10 make two batches);
 * each worker still has only its fds.
 */
Test(worker, batch_of_forks)
{
    enum { COUNT = 10 };
    Zygote z;
    Worker w[COUNT];
    const char *args[] = {"--allow", ALLOW, NULL};

    zygote_start(&z, args);
    zygote_expect_ready(&z);
    for (int i = 0; i < COUNT; i++) {
        worker_fork_send(&z, &w[i], 10 + (uint32_t)i);
    }
    for (int i = 0; i < COUNT; i++) {
        worker_fork_expect(&z, &w[i]);
    }
    for (int i = 0; i < COUNT; i++) {
        expect_own_inheritance(&w[i]);
    }
    /* Stopping one worker of the batch leaves the others serving. */
    close(w[2].heartbeat);
    close(w[2].request);
    int status = wait_exit(w[2].pid, 5000);
    cr_assert(status != -1 && WIFEXITED(status));
    expect_serving(&w[3], 2);
    for (int i = 0; i < COUNT; i++) {
        if (i != 2) {
            worker_stop(&w[i]);
        }
    }
    zygote_stop(&z);
}

Test(worker, not_allowed_imports_nothing)
{
    Zygote z;
    Worker w;
    ei_x_buff x;
    Frame f;
    int index, imported;

    start_one(&z, &w, NULL);
    send_call0(&w, 1, "python.xml.dom.minidom.parseString");
    ErrorMap e = expect_error(&w, 1);
    cr_assert_str_eq(e.kind, "not_allowed");
    cr_assert_not(e.retryable);
    cr_assert_null(e.type);
    cr_assert(strstr(e.message, "xml") != NULL, "message names the module: %s", e.message);
    error_map_free(&e);

    call_begin(&x, "python.worker_fixtures.is_imported");
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_binary(&x, "xml.dom.minidom", 15);
    ei_x_encode_empty_list(&x);
    call_finish(&x, false, NULL);
    send_call(&w, 2, &x);
    cr_assert(read_reply(&w, 2, &f, &index));
    cr_assert_eq(ei_decode_boolean(f.payload, &index, &imported), 0);
    cr_assert_not(imported, "a rejected call imported its module");
    frame_free(&f);
    stop_all(&z, &w);
}

Test(worker, python_exceptions_keep_serving)
{
    Zygote z;
    Worker w;

    start_one(&z, &w, NULL);
    send_call0(&w, 1, "python.worker_fixtures.raise_type_error");
    expect_python_exception(&w, 1, "builtins.TypeError", "bad");
    send_call0(&w, 2, "python.worker_fixtures.raise_key_error");
    expect_python_exception(&w, 2, "builtins.KeyError", "'k'");
    send_call0(&w, 3, "python.worker_fixtures.raise_system_exit");
    expect_python_exception(&w, 3, "builtins.SystemExit", "3");
    send_call0(&w, 4, "python.worker_fixtures.raise_keyboard_interrupt");
    expect_python_exception(&w, 4, "builtins.KeyboardInterrupt", "");
    send_call0(&w, 5, "python.worker_fixtures.recurse");
    expect_python_exception(&w, 5, "builtins.RecursionError", NULL);
    expect_serving(&w, 6);
    stop_all(&z, &w);
}

Test(worker, os_exit_status_reaped)
{
    Zygote z;
    Worker w;
    Frame f;

    start_one(&z, &w, NULL);
    send_call_long(&w, 1, "python.os._exit", 3);
    int status = wait_exit(w.pid, 5000);
    cr_assert(status != -1, "worker did not exit");
    cr_assert(WIFEXITED(status), "worker status %d", status);
    cr_assert_eq(WEXITSTATUS(status), 3);
    cr_assert_not(try_read_frame(w.request, &f, 1000), "a worker that exited sent a frame");
    close(w.request);
    close(w.heartbeat);
    zygote_stop(&z);
}

Test(worker, sigint_interrupts_sleep)
{
    Zygote z;
    Worker w;

    start_one(&z, &w, NULL);
    send_call_long(&w, 1, "python.time.sleep", 5);
    nanosleep(&(struct timespec){.tv_nsec = 300 * 1000 * 1000}, NULL);
    uint64_t start = now_ms();
    cr_assert_eq(kill(w.pid, SIGINT), 0);
    expect_python_exception(&w, 1, "builtins.KeyboardInterrupt", NULL);
    cr_assert_lt(now_ms() - start, 1000, "the interrupted call took %llu ms",
                 (unsigned long long)(now_ms() - start));

    /* An interrupt between calls is dropped: the next call still succeeds. */
    cr_assert_eq(kill(w.pid, SIGINT), 0);
    nanosleep(&(struct timespec){.tv_nsec = 100 * 1000 * 1000}, NULL);
    expect_serving(&w, 2);
    stop_all(&z, &w);
}

Test(worker, heartbeat_while_gil_held)
{
    Zygote z;
    Worker w;
    ei_x_buff x;

    start_one(&z, &w, NULL);
    call_begin(&x, "python.worker_fixtures.spin");
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_double(&x, 1.5);
    ei_x_encode_empty_list(&x);
    call_finish(&x, false, NULL);
    send_call(&w, 1, &x);
    nanosleep(&(struct timespec){.tv_nsec = 300 * 1000 * 1000}, NULL);
    for (int i = 0; i < 5; i++) {
        unsigned char ping = (unsigned char)(0xA0 + i), pong = 0;
        uint64_t start = now_ms();
        write_all(w.heartbeat, &ping, 1);
        cr_assert(read_all(w.heartbeat, &pong, 1, 200), "no heartbeat echo within 200 ms");
        cr_assert_eq(pong, ping);
        cr_assert_lt(now_ms() - start, 200);
    }
    Frame f;
    int index;
    cr_assert_not(try_read_frame(w.request, &f, 0), "the busy call replied before it ended");
    cr_assert(read_reply(&w, 1, &f, &index), "the busy call failed");
    frame_free(&f);
    stop_all(&z, &w);
}

/*
 * The stand-in daemon of exits_when_daemon_dies, a child of the test process. Criterion's
 * asserts work only in the test process itself, so this uses plain checks and exits non-zero.
 */
static _Noreturn void run_standin_daemon(int report_fd)
{
    const char *argv[] = {worker_binary(), "--zygote", "--pool", "test", "--daemon-pid", NULL,
                          "--allow", ALLOW, "--log-level", "warning", NULL};
    char pid_text[16];
    int control[2], request[2], heartbeat[2];
    ZygoteMsg msg;

    snprintf(pid_text, sizeof(pid_text), "%d", (int)getpid());
    argv[5] = pid_text;
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0
        || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, control) < 0
        || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, request) < 0
        || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, heartbeat) < 0) {
        _exit(1);
    }
    pid_t zygote = fork();
    if (zygote == 0) {
        dup2(control[1], ZYGOTE_CONTROL_FD);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    if (zygote < 0 || !wait_readable(control[0], IO_TIMEOUT_MS)
        || recv(control[0], &msg, sizeof(msg), 0) != (ssize_t)sizeof(msg)
        || msg.type != ZYGOTE_MSG_READY) {
        _exit(1);
    }
    union {
        char buf[CMSG_SPACE(2 * sizeof(int))];
        struct cmsghdr align;
    } cmsg_buf;
    msg = (ZygoteMsg){.type = ZYGOTE_MSG_FORK, .worker_id = 1};
    struct iovec iov = {.iov_base = &msg, .iov_len = sizeof(msg)};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cmsg_buf.buf,
                        .msg_controllen = sizeof(cmsg_buf.buf)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    if (!c) {
        _exit(1);
    }
    *c = (struct cmsghdr){.cmsg_level = SOL_SOCKET, .cmsg_type = SCM_RIGHTS,
                          .cmsg_len = CMSG_LEN(2 * sizeof(int))};
    memcpy(CMSG_DATA(c), (int[2]){request[1], heartbeat[1]}, 2 * sizeof(int));
    if (sendmsg(control[0], &mh, 0) != (ssize_t)sizeof(msg)
        || !wait_readable(control[0], IO_TIMEOUT_MS)
        || recv(control[0], &msg, sizeof(msg), 0) != (ssize_t)sizeof(msg)
        || msg.type != ZYGOTE_MSG_FORKED) {
        _exit(1);
    }
    pid_t pids[2] = {zygote, msg.pid};
    if (write(report_fd, pids, sizeof(pids)) != (ssize_t)sizeof(pids)) {
        _exit(1);
    }
    for (;;) {
        pause();
    }
}

Test(worker, exits_when_daemon_dies)
{
    int report[2];

    cr_assert_eq(pipe(report), 0);
    pid_t daemon = fork();
    cr_assert_neq(daemon, -1);
    if (daemon == 0) {
        close(report[0]);
        run_standin_daemon(report[1]);
    }
    close(report[1]);
    pid_t pids[2];
    cr_assert(read_all(report[0], pids, sizeof(pids), IO_TIMEOUT_MS), "stand-in daemon failed");
    close(report[0]);

    cr_assert_eq(kill(daemon, SIGKILL), 0);
    uint64_t killed = now_ms();
    cr_assert_neq(wait_exit(daemon, 1000), -1);
    /* Orphans of the stand-in reparent to this test process, also a subreaper. */
    int status = wait_exit(pids[1], 1000);
    cr_assert(status != -1, "worker %d still alive 1 s after its daemon died", (int)pids[1]);
    cr_assert_lt(now_ms() - killed, 1000);
    cr_assert_neq(wait_exit(pids[0], 2000), -1, "zygote still alive after its daemon died");
}

Test(worker, preload_failure_exits_78)
{
    Zygote z;
    const char *args[] = {"--preload", "os,snakepit_no_such_module", NULL};

    zygote_start(&z, args);
    ZygoteMsg msg = zygote_recv(&z);
    cr_assert_eq(msg.type, ZYGOTE_MSG_PRELOAD_FAILED, "expected PRELOAD_FAILED, got %u",
                 msg.type);
    cr_assert(strstr(msg.text, "No module named 'snakepit_no_such_module'") != NULL,
              "the text names the module: %s", msg.text);
    int status = wait_exit(z.pid, 5000);
    cr_assert(status != -1);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 78, "zygote exit status %d", status);
    close(z.control);
}

Test(worker, numpy_matmul_after_fork)
{
    Zygote z;
    Worker w;
    Frame f;
    int index, arity;
    double seconds, checksum;
    const char *args[] = {"--preload", "c20_matmul", NULL};

    start_one(&z, &w, args);
    uint64_t start = now_ms();
    send_call0(&w, 1, "python.c20_matmul.matmul");
    cr_assert(read_reply(&w, 1, &f, &index), "matmul failed in the worker");
    uint64_t elapsed = now_ms() - start;
    cr_assert_eq(ei_decode_list_header(f.payload, &index, &arity), 0);
    cr_assert_eq(arity, 2);
    cr_assert_eq(ei_decode_double(f.payload, &index, &seconds), 0);
    cr_assert_eq(ei_decode_double(f.payload, &index, &checksum), 0);
    cr_assert_float_eq(checksum, 250.0, 1e-9);
    /* The product must take under 2 s of CPU. The wall-clock bound only catches a hang,
     * because other processes on a small machine can stretch the wall time of one call. */
    cr_assert_lt(seconds, 2.0, "matmul took %.3f s of CPU in the worker", seconds);
    cr_assert_lt(elapsed, 10000, "matmul call took %llu ms", (unsigned long long)elapsed);
    frame_free(&f);

    /* The BLAS thread cap reached the worker's environment. */
    ei_x_buff x;
    call_begin(&x, "python.os.getenv");
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_binary(&x, "OPENBLAS_NUM_THREADS", 20);
    ei_x_encode_empty_list(&x);
    call_finish(&x, false, NULL);
    send_call(&w, 2, &x);
    cr_assert(read_reply(&w, 2, &f, &index));
    char *threads = decode_binary(f.payload, &index);
    cr_assert_str_eq(threads, "1");
    free(threads);
    frame_free(&f);
    stop_all(&z, &w);
}

static void send_credit(Worker *w, uint64_t id, long n)
{
    ei_x_buff x;

    cr_assert_eq(ei_x_new_with_version(&x), 0);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "credit");
    ei_x_encode_long(&x, n);
    send_frame(w->request, WORKER_FRAME_CREDIT, id, &x);
    ei_x_free(&x);
}

/* Read `n` CHUNK frames of call `id` holding the integers from *next on. */
static void read_chunks(Worker *w, uint64_t id, int n, long *next)
{
    for (int i = 0; i < n; i++) {
        Frame f = read_frame(w->request);
        int index = 0, version;
        long value;
        cr_assert_eq(f.type, WORKER_FRAME_CHUNK, "expected CHUNK %ld, got type %d", *next,
                     f.type);
        cr_assert_eq(f.id, id);
        cr_assert_eq(ei_decode_version(f.payload, &index, &version), 0);
        cr_assert_eq(ei_decode_long(f.payload, &index, &value), 0);
        cr_assert_eq(value, *next);
        (*next)++;
        frame_free(&f);
    }
}

Test(worker, stream_with_credit)
{
    Zygote z;
    Worker w;
    ei_x_buff x;
    Frame f;
    int index;
    long next = 0;

    start_one(&z, &w, NULL);
    call_begin(&x, "python.worker_fixtures.count");
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_long(&x, 100);
    ei_x_encode_empty_list(&x);
    call_finish(&x, true, NULL);
    send_call(&w, 9, &x);

    read_chunks(&w, 9, WORKER_STREAM_INITIAL_CREDIT, &next);
    expect_no_frame_within(&w, 300);
    send_credit(&w, 8, 1000); /* credit for another call is not ours */
    expect_no_frame_within(&w, 200);
    send_credit(&w, 9, 50);
    read_chunks(&w, 9, 50, &next);
    expect_no_frame_within(&w, 200);
    send_credit(&w, 9, 34);
    read_chunks(&w, 9, 34, &next);
    cr_assert_eq(next, 100);
    cr_assert(read_reply(&w, 9, &f, &index), "the stream ended with an error");
    char *ret = decode_binary(f.payload, &index);
    cr_assert_str_eq(ret, "done", "REPLY carries the generator's return value");
    free(ret);
    frame_free(&f);
    expect_serving(&w, 10);
    stop_all(&z, &w);
}

Test(worker, stream_errors)
{
    Zygote z;
    Worker w;
    ei_x_buff x;
    long next = 0;

    start_one(&z, &w, NULL);
    call_begin(&x, "python.worker_fixtures.fail_after");
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_long(&x, 3);
    ei_x_encode_empty_list(&x);
    call_finish(&x, true, NULL);
    send_call(&w, 1, &x);
    read_chunks(&w, 1, 3, &next);
    expect_python_exception(&w, 1, "builtins.ValueError", "stream broke");

    call_begin(&x, "python.worker_fixtures.unencodable_item");
    ei_x_encode_empty_list(&x);
    call_finish(&x, true, NULL);
    send_call(&w, 2, &x);
    next = 1;
    read_chunks(&w, 2, 1, &next);
    ErrorMap e = expect_error(&w, 2);
    cr_assert_str_eq(e.kind, "encode_error");
    error_map_free(&e);

    /* A result that is not iterable. */
    call_begin(&x, "python.operator.add");
    ei_x_encode_list_header(&x, 2);
    ei_x_encode_long(&x, 1);
    ei_x_encode_long(&x, 2);
    ei_x_encode_empty_list(&x);
    call_finish(&x, true, NULL);
    send_call(&w, 3, &x);
    expect_python_exception(&w, 3, "builtins.TypeError", NULL);
    expect_serving(&w, 4);
    stop_all(&z, &w);
}

/* Expect a SESSION_REQ of call `id`; returns the frame for the caller to check. */
static Frame expect_session_request(Worker *w, uint64_t id)
{
    Frame f = read_frame(w->request);

    cr_assert_eq(f.type, WORKER_FRAME_SESSION_REQ, "expected SESSION_REQ, got type %d", f.type);
    cr_assert_eq(f.id, id);
    return f;
}

static void check_session_op(const Frame *f, const char *op, const char *name, int *index)
{
    int version, arity;
    char atom[MAXATOMLEN_UTF8];

    *index = 0;
    cr_assert_eq(ei_decode_version(f->payload, index, &version), 0);
    cr_assert_eq(ei_decode_tuple_header(f->payload, index, &arity), 0);
    cr_assert_eq(arity, strcmp(op, "put") == 0 ? 3 : 2);
    cr_assert_eq(ei_decode_atom(f->payload, index, atom), 0);
    cr_assert_str_eq(atom, op);
    char *got = decode_binary(f->payload, index);
    cr_assert_str_eq(got, name);
    free(got);
}

static void call_begin_session_get(Worker *w, uint64_t id)
{
    ei_x_buff x;

    call_begin(&x, "python.worker_fixtures.session_get");
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_binary(&x, "n", 1);
    ei_x_encode_empty_list(&x);
    call_finish(&x, false, "session-3");
    send_call(w, id, &x);
}

static void session_respond_ok(Worker *w, uint64_t id, long value)
{
    ei_x_buff x;

    cr_assert_eq(ei_x_new_with_version(&x), 0);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "ok");
    ei_x_encode_long(&x, value);
    send_frame(w->request, WORKER_FRAME_SESSION_RESP, id, &x);
    ei_x_free(&x);
}

static void expect_serving_busy(Worker *w, uint64_t id)
{
    send_call0(w, id, "python.os.getpid");
    ErrorMap e = expect_error(w, id);
    cr_assert_str_eq(e.kind, "worker_busy");
    cr_assert(e.retryable, "worker_busy is retryable");
    error_map_free(&e);
}

Test(worker, session_round_trip)
{
    Zygote z;
    Worker w;
    ei_x_buff x;
    Frame f;
    int index, arity;
    long value;

    start_one(&z, &w, NULL);
    call_begin(&x, "python.worker_fixtures.session_round_trip");
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_long(&x, 42);
    ei_x_encode_empty_list(&x);
    call_finish(&x, false, "session-1");
    send_call(&w, 5, &x);

    f = expect_session_request(&w, 5);
    check_session_op(&f, "put", "x", &index);
    cr_assert_eq(ei_decode_long(f.payload, &index, &value), 0);
    cr_assert_eq(value, 42);
    frame_free(&f);
    /* A stale response for another call comes first and must be ignored. */
    cr_assert_eq(ei_x_new_with_version(&x), 0);
    ei_x_encode_atom(&x, "ok");
    send_frame(w.request, WORKER_FRAME_SESSION_RESP, 4, &x);
    send_frame(w.request, WORKER_FRAME_SESSION_RESP, 5, &x);
    ei_x_free(&x);

    f = expect_session_request(&w, 5);
    check_session_op(&f, "get", "x", &index);
    frame_free(&f);
    cr_assert_eq(ei_x_new_with_version(&x), 0);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "ok");
    ei_x_encode_long(&x, 42);
    send_frame(w.request, WORKER_FRAME_SESSION_RESP, 5, &x);
    ei_x_free(&x);

    f = expect_session_request(&w, 5);
    check_session_op(&f, "get", "missing", &index);
    frame_free(&f);
    cr_assert_eq(ei_x_new_with_version(&x), 0);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "error");
    ei_x_encode_map_header(&x, 2);
    ei_x_encode_atom(&x, "kind");
    ei_x_encode_atom(&x, "not_found");
    ei_x_encode_atom(&x, "message");
    ei_x_encode_binary(&x, "no such variable", 16);
    send_frame(w.request, WORKER_FRAME_SESSION_RESP, 5, &x);
    ei_x_free(&x);

    cr_assert(read_reply(&w, 5, &f, &index), "the session call failed");
    cr_assert_eq(ei_decode_list_header(f.payload, &index, &arity), 0);
    cr_assert_eq(arity, 2);
    cr_assert_eq(ei_decode_long(f.payload, &index, &value), 0);
    cr_assert_eq(value, 42);
    char *fallback = decode_binary(f.payload, &index);
    cr_assert_str_eq(fallback, "default");
    free(fallback);
    frame_free(&f);

    /* An error response raises SessionError in Python. */
    call_begin(&x, "python.worker_fixtures.session_get");
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_binary(&x, "y", 1);
    ei_x_encode_empty_list(&x);
    call_finish(&x, false, "session-1");
    send_call(&w, 6, &x);
    f = expect_session_request(&w, 6);
    frame_free(&f);
    cr_assert_eq(ei_x_new_with_version(&x), 0);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "error");
    ei_x_encode_map_header(&x, 1);
    ei_x_encode_atom(&x, "kind");
    ei_x_encode_atom(&x, "store_unavailable");
    send_frame(w.request, WORKER_FRAME_SESSION_RESP, 6, &x);
    ei_x_free(&x);
    expect_python_exception(&w, 6, "snakepit.session.SessionError", "store_unavailable");

    /* Outside a session call, session access raises RuntimeError. */
    call_begin(&x, "python.worker_fixtures.session_get");
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_binary(&x, "x", 1);
    ei_x_encode_empty_list(&x);
    call_finish(&x, false, NULL);
    send_call(&w, 7, &x);
    expect_python_exception(&w, 7, "builtins.RuntimeError", NULL);
    stop_all(&z, &w);
}

Test(worker, interrupt_while_waiting_for_daemon)
{
    Zygote z;
    Worker w;
    ei_x_buff x;
    long next = 0;

    start_one(&z, &w, NULL);
    /* A session request that the daemon never responds to: SIGINT ends the call. */
    call_begin(&x, "python.worker_fixtures.session_get");
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_binary(&x, "x", 1);
    ei_x_encode_empty_list(&x);
    call_finish(&x, false, "session-2");
    send_call(&w, 1, &x);
    Frame f = expect_session_request(&w, 1);
    frame_free(&f);
    cr_assert_eq(kill(w.pid, SIGINT), 0);
    expect_python_exception(&w, 1, "builtins.KeyboardInterrupt", NULL);

    /* The late response is dropped, and the worker serves the next call. */
    cr_assert_eq(ei_x_new_with_version(&x), 0);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "ok");
    ei_x_encode_long(&x, 1);
    send_frame(w.request, WORKER_FRAME_SESSION_RESP, 1, &x);
    ei_x_free(&x);
    expect_serving(&w, 2);

    /* A stream that waits for credit: SIGINT ends it with an error reply. */
    call_begin(&x, "python.worker_fixtures.count");
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_long(&x, 1000);
    ei_x_encode_empty_list(&x);
    call_finish(&x, true, NULL);
    send_call(&w, 3, &x);
    read_chunks(&w, 3, WORKER_STREAM_INITIAL_CREDIT, &next);
    expect_no_frame_within(&w, 100);
    cr_assert_eq(kill(w.pid, SIGINT), 0);
    expect_python_exception(&w, 3, "builtins.KeyboardInterrupt", NULL);
    send_credit(&w, 3, 10); /* late credit for the ended stream */
    expect_serving(&w, 4);
    expect_no_frame_within(&w, 100);
    stop_all(&z, &w);
}

Test(worker, call_during_call_is_busy)
{
    Zygote z;
    Worker w;

    start_one(&z, &w, NULL);
    call_begin_session_get(&w, 1);
    Frame f = expect_session_request(&w, 1);
    frame_free(&f);
    /* A second call while the first waits for the daemon gets worker_busy at once. */
    expect_serving_busy(&w, 2);
    session_respond_ok(&w, 1, 5);
    cr_assert_eq(expect_ok_long(&w, 1), 5);
    expect_serving(&w, 3);
    stop_all(&z, &w);
}

Test(worker, echo_10_megabytes)
{
    Zygote z;
    Worker w;
    ei_x_buff x;
    Frame f;
    int index, type, size;
    const size_t len = 10 * 1024 * 1024;
    char *blob = malloc(len);

    cr_assert_not_null(blob);
    for (size_t i = 0; i < len; i++) {
        blob[i] = (char)(i * 7 + (i >> 13));
    }
    start_one(&z, &w, NULL);
    call_begin(&x, "python.worker_fixtures.echo");
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_binary(&x, blob, (long)len);
    ei_x_encode_empty_list(&x);
    call_finish(&x, false, NULL);
    send_call(&w, 1, &x);
    cr_assert(read_reply(&w, 1, &f, &index));
    cr_assert_eq(ei_get_type(f.payload, &index, &type, &size), 0);
    cr_assert_eq(type, ERL_BINARY_EXT);
    cr_assert_eq((size_t)size, len);
    /* A binary is tag, u32 length, then the bytes. */
    cr_assert_eq(memcmp(f.payload + index + 5, blob, len), 0, "echoed bytes differ");
    frame_free(&f);
    free(blob);
    stop_all(&z, &w);
}

Test(worker, message_size_limit)
{
    Zygote z;
    Worker w;
    ei_x_buff x;
    Frame f;
    int index, type, size;
    const long limit = 65536;
    const char *args[] = {"--max-message-bytes", "65536", NULL};

    start_one(&z, &w, args);
    /* A reply of exactly the limit: {ok, Binary} is 1 + 2 + 4 + 5 bytes of framing. */
    send_call_long(&w, 1, "python.worker_fixtures.blob", limit - 12);
    cr_assert(read_reply(&w, 1, &f, &index), "a reply of exactly the limit failed");
    cr_assert_eq(f.len, (size_t)limit);
    cr_assert_eq(ei_get_type(f.payload, &index, &type, &size), 0);
    cr_assert_eq(size, limit - 12);
    frame_free(&f);

    send_call_long(&w, 2, "python.worker_fixtures.blob", limit - 11);
    ErrorMap e = expect_error(&w, 2);
    cr_assert_str_eq(e.kind, "too_large");
    error_map_free(&e);

    /* A CALL over the limit is read and discarded, and its reply is too_large. */
    char *big = calloc(1, (size_t)limit);
    cr_assert_not_null(big);
    call_begin(&x, "python.worker_fixtures.echo");
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_binary(&x, big, limit);
    ei_x_encode_empty_list(&x);
    call_finish(&x, false, NULL);
    send_call(&w, 3, &x);
    free(big);
    e = expect_error(&w, 3);
    cr_assert_str_eq(e.kind, "too_large");
    error_map_free(&e);
    expect_serving(&w, 4);

    /* A session put over the limit raises in Python; no oversized SESSION_REQ goes out. */
    call_begin(&x, "python.worker_fixtures.session_put_blob");
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_long(&x, limit);
    ei_x_encode_empty_list(&x);
    call_finish(&x, false, "session-4");
    send_call(&w, 5, &x);
    e = expect_error(&w, 5);
    cr_assert_str_eq(e.kind, "python_exception");
    cr_assert_str_eq(e.type, "builtins.ValueError");
    cr_assert(strstr(e.message, "too_large") != NULL, "message: %s", e.message);
    error_map_free(&e);
    stop_all(&z, &w);
}

Test(worker, depth_limit)
{
    Zygote z;
    Worker w;
    ei_x_buff x;
    Frame f;
    int index;
    const char *args[] = {"--max-depth", "32", NULL};

    start_one(&z, &w, args);
    /* Args at depth 1 plus an argument nested 32 deep is 33 levels: one over. */
    call_begin(&x, "python.worker_fixtures.echo");
    ei_x_encode_list_header(&x, 1);
    for (int i = 0; i < 31; i++) {
        ei_x_encode_list_header(&x, 1);
    }
    ei_x_encode_empty_list(&x);
    for (int i = 0; i < 32; i++) {
        ei_x_encode_empty_list(&x);
    }
    call_finish(&x, false, NULL);
    send_call(&w, 1, &x);
    ErrorMap e = expect_error(&w, 1);
    cr_assert_str_eq(e.kind, "too_deep");
    error_map_free(&e);

    /* Args plus an argument nested 31 deep is exactly the limit. */
    call_begin(&x, "python.worker_fixtures.echo");
    ei_x_encode_list_header(&x, 1);
    for (int i = 0; i < 30; i++) {
        ei_x_encode_list_header(&x, 1);
    }
    ei_x_encode_empty_list(&x);
    for (int i = 0; i < 31; i++) {
        ei_x_encode_empty_list(&x);
    }
    call_finish(&x, false, NULL);
    send_call(&w, 6, &x);
    cr_assert(read_reply(&w, 6, &f, &index), "args at the depth limit failed");
    frame_free(&f);

    /* Results: a list nested 32 deep fits, 33 does not. */
    send_call_long(&w, 2, "python.worker_fixtures.nested", 32);
    cr_assert(read_reply(&w, 2, &f, &index), "a result at the depth limit failed");
    frame_free(&f);
    send_call_long(&w, 3, "python.worker_fixtures.nested", 33);
    e = expect_error(&w, 3);
    cr_assert_str_eq(e.kind, "too_deep");
    error_map_free(&e);
    send_call_long(&w, 4, "python.worker_fixtures.nested", 100000);
    e = expect_error(&w, 4);
    cr_assert_str_eq(e.kind, "too_deep");
    error_map_free(&e);
    expect_serving(&w, 5);
    stop_all(&z, &w);
}

Test(worker, adapter_tools)
{
    Zygote z;
    Worker w;
    ei_x_buff x;
    Frame f;
    int index;
    const char *args[] = {"--adapter", "worker_fixtures:FixtureAdapter", NULL};

    start_one(&z, &w, args);
    call_begin(&x, "shout");
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_binary(&x, "hey", 3);
    ei_x_encode_empty_list(&x);
    call_finish(&x, false, NULL);
    send_call(&w, 1, &x);
    cr_assert(read_reply(&w, 1, &f, &index));
    char *text = decode_binary(f.payload, &index);
    cr_assert_str_eq(text, "HEY");
    free(text);
    frame_free(&f);

    /* One adapter instance per worker, so the named tool counts the earlier call. */
    send_call0(&w, 2, "calls");
    cr_assert_eq(expect_ok_long(&w, 2), 1);

    send_call0(&w, 3, "no_such_tool");
    ErrorMap e = expect_error(&w, 3);
    cr_assert_str_eq(e.kind, "bad_request");
    error_map_free(&e);
    expect_serving(&w, 4);
    stop_all(&z, &w);
}

Test(worker, two_workers_from_one_zygote)
{
    Zygote z;
    Worker a, b;
    const char *args[] = {"--allow", ALLOW, NULL};

    zygote_start(&z, args);
    zygote_expect_ready(&z);
    worker_fork(&z, &a, 1);
    worker_fork(&z, &b, 2);
    cr_assert_neq(a.pid, b.pid);
    expect_serving(&a, 1);
    expect_serving(&b, 1);
    /* Both are children of this process, the daemon, not of the zygote. */
    char path[64], stat[256];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)b.pid);
    FILE *fp = fopen(path, "r");
    cr_assert_not_null(fp);
    cr_assert_not_null(fgets(stat, sizeof(stat), fp));
    fclose(fp);
    int ppid = 0;
    cr_assert_eq(sscanf(strrchr(stat, ')') + 2, "%*c %d", &ppid), 1);
    cr_assert_eq(ppid, (int)getpid());
    worker_stop(&a);
    worker_stop(&b);
    zygote_stop(&z);
}

Test(worker, fork_without_fds_fails)
{
    Zygote z;
    const char *args[] = {"--allow", ALLOW, NULL};
    ZygoteMsg msg = {.type = ZYGOTE_MSG_FORK, .worker_id = 3};

    zygote_start(&z, args);
    zygote_expect_ready(&z);
    cr_assert_eq(send(z.control, &msg, sizeof(msg), 0), (ssize_t)sizeof(msg));
    ZygoteMsg reply = zygote_recv(&z);
    cr_assert_eq(reply.type, ZYGOTE_MSG_FORK_FAILED);
    cr_assert_eq(reply.worker_id, 3);
    cr_assert_eq(reply.error, EBADMSG);
    zygote_stop(&z);
}

/* Run the binary with `argv` (NULL-terminated after argv[0]) and return its exit status. */
static int run_worker_binary(const char *const *args)
{
    const char *argv[16] = {worker_binary()};
    int n = 1;

    for (; *args; args++) {
        argv[n++] = *args;
    }
    argv[n] = NULL;
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, STDERR_FILENO);
        dup2(devnull, STDOUT_FILENO);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int status = wait_exit(pid, 5000);
    cr_assert(status != -1 && WIFEXITED(status));
    return WEXITSTATUS(status);
}

Test(worker, usage_errors_exit_64)
{
    const char *none[] = {NULL};
    const char *no_zygote[] = {"--pool", "p", "--daemon-pid", "10", NULL};
    const char *no_pid[] = {"--zygote", "--pool", "p", NULL};
    const char *bad_pid[] = {"--zygote", "--pool", "p", "--daemon-pid", "12x", NULL};
    const char *bad_blas[] = {"--zygote", "--pool", "p", "--daemon-pid", "10",
                              "--blas-threads", "0", NULL};
    const char *bad_option[] = {"--zygote", "--frobnicate", NULL};
    const char *missing_value[] = {"--zygote", "--pool", NULL};
    const char *bad_size[] = {"--zygote", "--pool", "p", "--daemon-pid", "10",
                              "--max-message-bytes", "1023", NULL};
    const char *big_blas[] = {"--zygote", "--pool", "p", "--daemon-pid", "10",
                              "--blas-threads", "1025", NULL};
    const char *zero_depth[] = {"--zygote", "--pool", "p", "--daemon-pid", "10",
                                "--max-depth", "0", NULL};
    const char *big_depth[] = {"--zygote", "--pool", "p", "--daemon-pid", "10",
                               "--max-depth", "100001", NULL};
    const char *bad_adapter[] = {"--zygote", "--pool", "p", "--daemon-pid", "10",
                                 "--adapter", "no_colon", NULL};
    const char *help[] = {"--help", NULL};

    cr_assert_eq(run_worker_binary(none), 64);
    cr_assert_eq(run_worker_binary(no_zygote), 64);
    cr_assert_eq(run_worker_binary(no_pid), 64);
    cr_assert_eq(run_worker_binary(bad_pid), 64);
    cr_assert_eq(run_worker_binary(bad_blas), 64);
    cr_assert_eq(run_worker_binary(bad_option), 64);
    cr_assert_eq(run_worker_binary(missing_value), 64);
    cr_assert_eq(run_worker_binary(bad_size), 64);
    cr_assert_eq(run_worker_binary(big_blas), 64);
    cr_assert_eq(run_worker_binary(zero_depth), 64);
    cr_assert_eq(run_worker_binary(big_depth), 64);
    cr_assert_eq(run_worker_binary(bad_adapter), 64);
    cr_assert_eq(run_worker_binary(help), 0);
}

/* Create a virtualenv under a fresh temporary directory; returns its malloc'd path. */
static char *make_venv(void)
{
    char tmpl[] = "/tmp/snakepit-venv-XXXXXX";
    char *dir = mkdtemp(tmpl);
    char command[512];

    cr_assert_not_null(dir);
    snprintf(command, sizeof(command),
             "/usr/bin/python3 -m venv --without-pip %s/venv && "
             "site=$(%s/venv/bin/python -c "
             "'import sysconfig; print(sysconfig.get_path(\"purelib\"))') && "
             "echo 'MARK = 1' > \"$site/venv_only.py\"",
             dir, dir);
    cr_assert_eq(system(command), 0, "creating a venv failed: %s", command);
    char *path = malloc(strlen(dir) + 8);
    cr_assert_not_null(path);
    sprintf(path, "%s/venv", dir);
    return path;
}

static void remove_tree(const char *venv)
{
    char command[512];

    /* venv is <tmpdir>/venv under /tmp, made by make_venv. */
    snprintf(command, sizeof(command), "rm -rf -- \"$(dirname '%s')\"", venv);
    cr_assert_eq(system(command), 0);
}

Test(worker, python_virtualenv)
{
    Zygote z;
    char *venv = make_venv();
    const char *args[] = {"--python", venv, "--preload", "venv_only", NULL};

    zygote_start(&z, args);
    zygote_expect_ready(&z);
    zygote_stop(&z);

    /* The same venv claiming another Python version is rejected with both versions. */
    char command[512];
    snprintf(command, sizeof(command),
             "sed -i 's/^version *=.*/version = 3.99.0/' %s/pyvenv.cfg", venv);
    cr_assert_eq(system(command), 0);
    zygote_start(&z, args);
    ZygoteMsg msg = zygote_recv(&z);
    cr_assert_eq(msg.type, ZYGOTE_MSG_PRELOAD_FAILED);
    cr_assert(strstr(msg.text, "3.99") && strstr(msg.text, "linked with libpython 3."),
              "the text names both versions: %s", msg.text);
    int status = wait_exit(z.pid, 5000);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 78);
    close(z.control);
    remove_tree(venv);
    free(venv);
}

/* Start a zygote with --python `python` and expect PRELOAD_FAILED containing `text`. */
static void write_executable(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    cr_assert_not_null(f, "cannot write %s", path);
    cr_assert_geq(fputs(text, f), 0);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(chmod(path, 0755), 0);
}

static void expect_python_rejected(const char *python, const char *text)
{
    Zygote z;
    const char *args[] = {"--python", python, NULL};

    zygote_start(&z, args);
    ZygoteMsg msg = zygote_recv(&z);
    cr_assert_eq(msg.type, ZYGOTE_MSG_PRELOAD_FAILED, "--python %s was accepted", python);
    cr_assert(strstr(msg.text, text) != NULL, "expected '%s' in: %s", text, msg.text);
    int status = wait_exit(z.pid, 5000);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 78);
    close(z.control);
}

Test(worker, python_interpreter_paths)
{
    Zygote z;
    const char *interpreter[] = {"--python", "/usr/bin/python3", "--allow", ALLOW, NULL};
    const char *prefix[] = {"--python", "/usr", NULL};

    /* The interpreter that ships the linked libpython is taken as it is. */
    zygote_start(&z, interpreter);
    zygote_expect_ready(&z);
    Worker w;
    worker_fork(&z, &w, 1);
    expect_serving(&w, 1);
    stop_all(&z, &w);
    /* Any other interpreter outside a venv is asked for its version by running it. */
    char dir[] = "/tmp/snakepit-python-XXXXXX", wrapper[64], script[128];
    cr_assert_not_null(mkdtemp(dir));
    const char *wrapper_args[] = {"--python", wrapper, NULL};
    snprintf(wrapper, sizeof(wrapper), "%s/python3", dir);
    snprintf(script, sizeof(script), "#!/bin/sh\nexec %s \"$@\"\n", SNAKEPIT_LINKED_PYTHON);
    write_executable(wrapper, script);
    zygote_start(&z, wrapper_args);
    zygote_expect_ready(&z);
    zygote_stop(&z);
    write_executable(wrapper, "#!/bin/sh\necho 3.99\n");
    expect_python_rejected(wrapper, "is version 3.99");
    unlink(wrapper);
    rmdir(dir);
    /* A prefix directory means its bin/python3. */
    zygote_start(&z, prefix);
    zygote_expect_ready(&z);
    zygote_stop(&z);

    expect_python_rejected("/nonexistent/python3", "not found");
    expect_python_rejected("/bin/false", "Failed to find the version");
    expect_python_rejected("/tmp", "without bin/python3");
}
