/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The lower bound of one pooled Python call without the Erlang distribution: this process sends
 * a small request in external term format over a socketpair to a forked child that embeds
 * CPython. The child decodes {Command, [A, B]} with ei, calls operator.add(A, B) and sends back
 * {ok, Sum}. Frames are a 4-byte big-endian length and the payload. The parent times each round
 * trip with CLOCK_MONOTONIC and prints key=value lines (microseconds) for pool_bench.exs,
 * with the on-CPU time of each process per call from /proc/PID/schedstat.
 *
 * Usage: bench_socketpair_floor [--samples] [CALLS]   (default 20000, after 1000 warm-up calls)
 * --samples also prints every round trip, one "sample_us=" line each, in call order.
 */
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ei.h>

#define FLOOR_WARMUP_CALLS 1000
#define FLOOR_DEFAULT_CALLS 20000
#define FLOOR_MAX_CALLS 10000000
#define FLOOR_FRAME_MAX 4096

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return n < 0 ? -errno : -EPIPE;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Read exactly `len` bytes. Returns 0, -ECONNRESET on end of file, or -errno. */
static int read_all(int fd, void *buf, size_t len)
{
    char *p = buf;

    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return n < 0 ? -errno : -ECONNRESET;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int send_frame(int fd, const char *payload, size_t len)
{
    char frame[4 + FLOOR_FRAME_MAX];
    uint32_t be = htonl((uint32_t)len);

    if (len > FLOOR_FRAME_MAX) {
        return -EMSGSIZE;
    }
    memcpy(frame, &be, 4);
    memcpy(frame + 4, payload, len);
    return write_all(fd, frame, 4 + len);
}

/* Read one frame into buf[FLOOR_FRAME_MAX]. Returns the payload length or -errno. */
static int recv_frame(int fd, char *buf)
{
    uint32_t be;
    int r = read_all(fd, &be, 4);

    if (r < 0) {
        return r;
    }
    uint32_t len = ntohl(be);
    if (len > FLOOR_FRAME_MAX) {
        return -EMSGSIZE;
    }
    r = read_all(fd, buf, len);
    return r < 0 ? r : (int)len;
}

/* Decode {Command :: binary, [A, B]} into the two integers. Returns 0 or -EBADMSG. */
static int decode_request(const char *buf, long *a, long *b)
{
    int index = 0;
    int version;
    int arity;
    int type;
    int size;

    if (ei_decode_version(buf, &index, &version) < 0 ||
        ei_decode_tuple_header(buf, &index, &arity) < 0 || arity != 2 ||
        ei_get_type(buf, &index, &type, &size) < 0 || type != ERL_BINARY_EXT ||
        ei_skip_term(buf, &index) < 0 || ei_decode_list_header(buf, &index, &arity) < 0 ||
        arity != 2 || ei_decode_long(buf, &index, a) < 0 || ei_decode_long(buf, &index, b) < 0) {
        return -EBADMSG;
    }
    return 0;
}

/* Serve requests on `fd` until the parent closes it. Runs in the child only. */
static int serve(int fd)
{
    char buf[FLOOR_FRAME_MAX];
    PyObject *module = NULL;
    PyObject *add = NULL;
    int status = 1;

    Py_InitializeEx(0);
    module = PyImport_ImportModule("operator");
    add = module ? PyObject_GetAttrString(module, "add") : NULL;
    if (!add) {
        PyErr_Print();
        goto out_python;
    }
    for (;;) {
        int n = recv_frame(fd, buf);
        long a;
        long b;
        if (n == -ECONNRESET) {
            status = 0;
            break;
        }
        if (n < 0 || decode_request(buf, &a, &b) < 0) {
            fprintf(stderr, "bench_socketpair_floor: bad request frame (%d)\n", n);
            break;
        }
        PyObject *args = Py_BuildValue("(ll)", a, b);
        PyObject *sum = args ? PyObject_Call(add, args, NULL) : NULL;
        Py_XDECREF(args);
        long result = sum ? PyLong_AsLong(sum) : -1;
        Py_XDECREF(sum);
        if (PyErr_Occurred()) {
            PyErr_Print();
            break;
        }
        ei_x_buff x;
        ei_x_new_with_version(&x);
        ei_x_encode_tuple_header(&x, 2);
        ei_x_encode_atom(&x, "ok");
        ei_x_encode_long(&x, result);
        int r = send_frame(fd, x.buff, (size_t)x.index);
        ei_x_free(&x);
        if (r < 0) {
            break;
        }
    }
out_python:
    Py_XDECREF(add);
    Py_XDECREF(module);
    Py_FinalizeEx();
    return status;
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;

    return (x > y) - (x < y);
}

/* On-CPU time of the main thread of `pid` in nanoseconds, or -1 where schedstat is missing. */
static long long cpu_ns(pid_t pid)
{
    char path[64];
    long long ns = -1;

    snprintf(path, sizeof(path), "/proc/%d/schedstat", (int)pid);
    FILE *f = fopen(path, "re");
    if (f) {
        if (fscanf(f, "%lld", &ns) != 1) {
            ns = -1;
        }
        fclose(f);
    }
    return ns;
}

/* Microseconds per call between two cpu_ns() readings. */
static double per_call_us(const long long ns[2], long calls)
{
    return (double)(ns[1] - ns[0]) / 1e3 / (double)calls;
}

static double now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* Time `calls` round trips (after the warm-up) and print the percentiles. */
static int measure(int fd, pid_t child, long calls, bool print_samples)
{
    long long parent_cpu[2] = {0, 0};
    long long child_cpu[2] = {0, 0};
    double *samples = calloc((size_t)calls, sizeof(*samples));
    char reply[FLOOR_FRAME_MAX];
    ei_x_buff request;
    double sum = 0;
    int r = 0;

    if (!samples) {
        return -ENOMEM;
    }
    ei_x_new_with_version(&request);
    ei_x_encode_tuple_header(&request, 2);
    ei_x_encode_binary(&request, "python.operator.add", 19);
    ei_x_encode_list_header(&request, 2);
    ei_x_encode_long(&request, 1);
    ei_x_encode_long(&request, 2);
    ei_x_encode_empty_list(&request);
    for (long i = -FLOOR_WARMUP_CALLS; i < calls && r >= 0; i++) {
        if (i == 0) {
            parent_cpu[0] = cpu_ns(getpid());
            child_cpu[0] = cpu_ns(child);
        }
        double start = now_us();
        r = send_frame(fd, request.buff, (size_t)request.index);
        if (r >= 0) {
            r = recv_frame(fd, reply);
        }
        if (i >= 0) {
            samples[i] = now_us() - start;
            sum += samples[i];
        }
    }
    parent_cpu[1] = cpu_ns(getpid());
    child_cpu[1] = cpu_ns(child);
    ei_x_free(&request);
    if (r >= 0 && print_samples) {
        for (long i = 0; i < calls; i++) {
            printf("sample_us=%.1f\n", samples[i]);
        }
    }
    if (r >= 0) {
        qsort(samples, (size_t)calls, sizeof(*samples), compare_double);
        printf("calls=%ld\n", calls);
        printf("p50_us=%.1f\n", samples[calls / 2]);
        printf("p99_us=%.1f\n", samples[calls * 99 / 100]);
        printf("mean_us=%.1f\n", sum / (double)calls);
        printf("parent_cpu_us=%.1f\n", per_call_us(parent_cpu, calls));
        printf("child_cpu_us=%.1f\n", per_call_us(child_cpu, calls));
    }
    free(samples);
    return r;
}

int main(int argc, char **argv)
{
    bool print_samples = argc > 1 && strcmp(argv[1], "--samples") == 0;
    int first = print_samples ? 2 : 1;
    long calls = argc > first ? strtol(argv[first], NULL, 10) : FLOOR_DEFAULT_CALLS;
    int sv[2];
    int status;

    if (argc > first + 1 || calls < 1 || calls > FLOOR_MAX_CALLS) {
        fprintf(stderr, "usage: %s [--samples] [CALLS], CALLS from 1 to %d\n", argv[0],
                FLOOR_MAX_CALLS);
        return 64;
    }
    ei_init();
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        perror("socketpair");
        return 1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        close(sv[0]);
        _exit(serve(sv[1]));
    }
    close(sv[1]);
    int r = measure(sv[0], pid, calls, print_samples);
    close(sv[0]);
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bench_socketpair_floor: the Python child failed\n");
        return 1;
    }
    if (r < 0) {
        fprintf(stderr, "bench_socketpair_floor: round trip failed: %s\n", strerror(-r));
        return 1;
    }
    return 0;
}
