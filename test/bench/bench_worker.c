/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Benchmark of one worker's call path: plays the daemon (a child subreaper that execs
 * snakepit-worker --zygote and forks one worker), then sends python.operator.add(1, 2) calls
 * back to back and prints the round trips per second and the latency percentiles. Prints
 * numbers and asserts nothing. Usage: bench_worker [calls]; the worker binary comes from
 * $SNAKEPIT_WORKER or the build tree this was built from.
 */
#include <ei.h>
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "worker_proto.h"

#define BENCH_DEFAULT_CALLS 20000

static double now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_worker: %s: %s\n", what, errno ? strerror(errno) : "failed");
    exit(1);
}

static void write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n <= 0) {
            die("write");
        }
        p += n;
        len -= (size_t)n;
    }
}

static void read_all(int fd, void *buf, size_t len)
{
    char *p = buf;

    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n <= 0) {
            die("read");
        }
        p += n;
        len -= (size_t)n;
    }
}

/* Read one frame and return its type; the payload goes into buf (up to size bytes). */
static WorkerFrameType read_frame(int fd, char *buf, size_t size)
{
    uint8_t header[WORKER_FRAME_HEADER_SIZE];
    WorkerFrameType type;
    uint64_t id;
    size_t len;

    read_all(fd, header, sizeof(header));
    if (worker_proto_header_decode(header, sizeof(header), size, &type, &id, &len) < 0) {
        die("frame header");
    }
    read_all(fd, buf, len);
    return type;
}

static void recv_message(int control, ZygoteMsg *msg, ZygoteMsgType expected)
{
    if (recv(control, msg, sizeof(*msg), 0) != (ssize_t)sizeof(*msg) || msg->type != expected) {
        die("zygote message");
    }
}

/* Start the zygote, fork worker 1, consume its HELLO; returns the request socket. */
static int start_worker(const char *binary)
{
    char pid_text[16];
    int control[2], request[2], heartbeat[2];
    ZygoteMsg msg;
    char buf[256];

    snprintf(pid_text, sizeof(pid_text), "%d", (int)getpid());
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, control) < 0
        || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, request) < 0
        || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, heartbeat) < 0) {
        die("socketpair");
    }
    pid_t pid = fork();
    if (pid == 0) {
        dup2(control[1], ZYGOTE_CONTROL_FD);
        execl(binary, binary, "--zygote", "--pool", "bench", "--daemon-pid", pid_text, "--allow",
              "operator", "--log-level", "warning", (char *)NULL);
        _exit(127);
    }
    recv_message(control[0], &msg, ZYGOTE_MSG_READY);

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
        die("cmsg");
    }
    *c = (struct cmsghdr){.cmsg_level = SOL_SOCKET, .cmsg_type = SCM_RIGHTS,
                          .cmsg_len = CMSG_LEN(2 * sizeof(int))};
    memcpy(CMSG_DATA(c), (int[2]){request[1], heartbeat[1]}, 2 * sizeof(int));
    if (sendmsg(control[0], &mh, 0) != (ssize_t)sizeof(msg)) {
        die("sendmsg");
    }
    recv_message(control[0], &msg, ZYGOTE_MSG_FORKED);
    close(request[1]);
    close(heartbeat[1]);
    if (read_frame(request[0], buf, sizeof(buf)) != WORKER_FRAME_HELLO) {
        die("HELLO");
    }
    return request[0];
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    const char *binary = getenv("SNAKEPIT_WORKER");
    long calls = argc > 1 ? strtol(argv[1], NULL, 10) : BENCH_DEFAULT_CALLS;
    uint8_t header[WORKER_FRAME_HEADER_SIZE];
    char reply[256];
    ei_x_buff x;

    if (!binary) {
        binary = SNAKEPIT_WORKER_BINARY;
    }
    if (calls <= 0 || prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) {
        die("arguments");
    }
    int request = start_worker(binary);

    /* One CALL payload, reused: {<<"python.operator.add">>, [1, 2], #{}}. */
    ei_x_new_with_version(&x);
    ei_x_encode_tuple_header(&x, 3);
    ei_x_encode_binary(&x, "python.operator.add", 19);
    ei_x_encode_list_header(&x, 2);
    ei_x_encode_long(&x, 1);
    ei_x_encode_long(&x, 2);
    ei_x_encode_empty_list(&x);
    ei_x_encode_map_header(&x, 0);

    double *latency = malloc(sizeof(double) * (size_t)calls);
    if (!latency) {
        die("malloc");
    }
    double start = now_us();
    for (long i = 0; i < calls; i++) {
        double t = now_us();
        worker_proto_header_encode(header, WORKER_FRAME_CALL, (uint64_t)i + 1, (size_t)x.index);
        write_all(request, header, sizeof(header));
        write_all(request, x.buff, (size_t)x.index);
        if (read_frame(request, reply, sizeof(reply)) != WORKER_FRAME_REPLY) {
            die("REPLY");
        }
        latency[i] = now_us() - t;
    }
    double total = now_us() - start;
    qsort(latency, (size_t)calls, sizeof(double), compare_doubles);
    printf("python.operator.add through one worker: %ld calls in %.3f s\n", calls, total / 1e6);
    printf("  %.0f calls/s, latency p50 %.1f us, p99 %.1f us, max %.1f us\n",
           (double)calls / (total / 1e6), latency[calls / 2], latency[calls * 99 / 100],
           latency[calls - 1]);

    close(request); /* the worker exits at end of stream; the zygote exits when we do */
    free(latency);
    ei_x_free(&x);
    return 0;
}
