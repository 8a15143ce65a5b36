/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Benchmark of the term codec: decode plus encode throughput for a 10 MB binary (as bytes and
 * as a UTF-8 str) and the rate for a small map with atom keys. Prints numbers, asserts nothing.
 * Usage: bench_etf_py [seconds per case]; the snakepit package is found through PYTHONPATH,
 * defaulting to the python/ folder of the source tree this was built from.
 */
#include <ei.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "etf_py.h"

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Decode and re-encode the term in x until `seconds` pass; returns the number of rounds. */
static long run_rounds(const ei_x_buff *x, double seconds, double *elapsed)
{
    EtfPyLimits limits = {.max_bytes = (size_t)x->index + 1};
    ei_x_buff out;
    long rounds = 0;
    double start = now_s();
    double t;

    if (ei_x_new(&out) < 0) {
        return -1;
    }
    do {
        EtfPyError err;
        int index = 0;
        PyObject *v = etf_py_decode(x->buff, (size_t)x->index, &index, &limits, &err);

        if (v == NULL) {
            fprintf(stderr, "decode failed: %s: %s\n", err.kind, err.message);
            rounds = -1;
            break;
        }
        out.index = 0;
        int r = etf_py_encode(&out, v, &limits, &err);
        Py_DECREF(v);
        if (r < 0) {
            fprintf(stderr, "encode failed: %s: %s\n", err.kind, err.message);
            rounds = -1;
            break;
        }
        rounds++;
        t = now_s() - start;
    } while (t < seconds);
    *elapsed = now_s() - start;
    ei_x_free(&out);
    return rounds;
}

static int bench_binary(const char *name, unsigned char fill, double seconds)
{
    size_t n = 10u << 20;
    char *data = malloc(n);
    ei_x_buff x;
    double elapsed;
    long rounds;

    if (data == NULL || ei_x_new(&x) < 0) {
        free(data);
        return -1;
    }
    memset(data, fill, n);
    ei_x_encode_binary(&x, data, (long)n);
    free(data);
    rounds = run_rounds(&x, seconds, &elapsed);
    ei_x_free(&x);
    if (rounds < 0) {
        return -1;
    }
    printf("%-34s %8.0f MB/s decode+encode (%ld rounds in %.2f s)\n", name,
           (double)n * (double)rounds / elapsed / 1e6, rounds, elapsed);
    return 0;
}

static int bench_small_map(double seconds)
{
    ei_x_buff x;
    double elapsed;
    long rounds;

    if (ei_x_new(&x) < 0) {
        return -1;
    }
    /* %{id: 12345, name: "widget", price: 9.99, tags: ["a", "b"], active: true} */
    ei_x_encode_map_header(&x, 5);
    ei_x_encode_atom(&x, "id");
    ei_x_encode_long(&x, 12345);
    ei_x_encode_atom(&x, "name");
    ei_x_encode_binary(&x, "widget", 6);
    ei_x_encode_atom(&x, "price");
    ei_x_encode_double(&x, 9.99);
    ei_x_encode_atom(&x, "tags");
    ei_x_encode_list_header(&x, 2);
    ei_x_encode_binary(&x, "a", 1);
    ei_x_encode_binary(&x, "b", 1);
    ei_x_encode_empty_list(&x);
    ei_x_encode_atom(&x, "active");
    ei_x_encode_atom(&x, "true");
    rounds = run_rounds(&x, seconds, &elapsed);
    if (rounds >= 0) {
        printf("%-34s %8.0f terms/s decode+encode (%d bytes each, %ld rounds in %.2f s)\n",
               "small map, 5 atom keys", (double)rounds / elapsed, x.index, rounds, elapsed);
    }
    ei_x_free(&x);
    return rounds < 0 ? -1 : 0;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 2.0;
    int r = 0;

    setenv("PYTHONPATH", SNAKEPIT_PYTHON_DIR, 0);
    Py_InitializeEx(0);
    if (etf_py_init() < 0) {
        PyErr_Print();
        return 1;
    }
    r |= bench_binary("10 MB binary, not UTF-8 (bytes)", 0xFF, seconds);
    r |= bench_binary("10 MB binary, ASCII (str)", 'a', seconds);
    r |= bench_small_map(seconds);
    return r < 0 ? 1 : 0;
}
