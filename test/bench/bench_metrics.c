/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Benchmark of the metrics registry: the time to render /metrics with 100 commands in each of
 * 4 pools (with 3 statuses each, plus both histograms per pool and the process metrics), and
 * the cost of one counter increment through a kept handle and through a label lookup.
 * Prints the numbers; it asserts nothing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "metrics_product.h"

#define POOLS 4
#define COMMANDS 100
#define RENDERS 200
#define INCREMENTS 100000000L
#define LOOKUPS 2000000L

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void fill(const MetricsProduct *m, char names[COMMANDS][48])
{
    static const char *const statuses[] = {"ok", "python_exception", "timeout"};
    char pool[16];

    for (int p = 0; p < POOLS; p++) {
        snprintf(pool, sizeof(pool), "pool%d", p);
        for (int c = 0; c < COMMANDS; c++) {
            for (int s = 0; s < 3; s++) {
                metrics_counter_add(
                    metrics_counter_get(m->requests_total,
                                        METRICS_LABELS(pool, names[c], statuses[s])),
                    c + s);
            }
        }
        for (int i = 0; i < 1000; i++) {
            metrics_histogram_observe(
                metrics_histogram_get(m->request_duration, METRICS_LABELS(pool)), i * 1e-4);
            metrics_histogram_observe(metrics_histogram_get(m->queue_wait, METRICS_LABELS(pool)),
                                      i * 1e-5);
        }
    }
}

int main(void)
{
    static char names[COMMANDS][48];
    MetricsRegistry *registry = metrics_registry_new();
    TextBuffer page = TEXT_BUFFER_INIT;
    volatile MetricsCounter *sink;
    MetricsCounter *counter;
    MetricsProduct m;
    double start, elapsed;

    if (!registry || metrics_product_register(registry, "bench", &m) < 0) {
        fprintf(stderr, "bench_metrics: failed to register the metric families\n");
        return 1;
    }
    for (int c = 0; c < COMMANDS; c++) {
        snprintf(names[c], sizeof(names[c]), "python.module%d.function%d", c / 10, c);
    }
    fill(&m, names);

    start = now_s();
    for (int i = 0; i < RENDERS; i++) {
        text_buffer_reset(&page);
        metrics_render(registry, &page);
    }
    elapsed = now_s() - start;
    printf("render: %d pools x %d commands x 3 statuses, %zu bytes, %.1f us per render\n", POOLS,
           COMMANDS, page.len, elapsed / RENDERS * 1e6);

    counter = metrics_counter_get(m.requests_total, METRICS_LABELS("pool0", names[0], "ok"));
    start = now_s();
    for (long i = 0; i < INCREMENTS; i++) {
        metrics_counter_inc(counter);
        __asm__ volatile("" ::: "memory"); /* keep the compiler from folding the loop */
    }
    elapsed = now_s() - start;
    printf("counter increment through a kept handle: %.2f ns\n", elapsed / INCREMENTS * 1e9);

    start = now_s();
    for (long i = 0; i < LOOKUPS; i++) {
        sink = metrics_counter_get(m.requests_total,
                                   METRICS_LABELS("pool1", names[i % COMMANDS], "ok"));
        metrics_counter_inc((MetricsCounter *)sink);
    }
    elapsed = now_s() - start;
    printf("counter increment with a label lookup (3 labels): %.1f ns\n", elapsed / LOOKUPS * 1e9);

    text_buffer_free(&page);
    metrics_registry_free(registry);
    return 0;
}
