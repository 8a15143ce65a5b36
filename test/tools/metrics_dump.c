/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Register the product's metric families, fill them with samples of every kind (several pools,
 * commands and statuses, label values that need escaping, an overflowing family), and print
 * the /metrics page on stdout. With --serve ADDR:PORT it serves the same registry over HTTP
 * until SIGTERM or SIGINT instead, printing "LISTENING <port>" once it is bound.
 * test/suites/promtool.sh checks the output with `promtool check metrics`.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_server.h"
#include "log.h"
#include "metrics_product.h"

static const char *const pools[] = {"default", "gpu"};
static const char *const commands[] = {"python.os.getcwd", "python.pandas.read_csv",
                                       "python.weird\"name\\with\nescapes"};
static const char *const statuses[] = {"ok", "python_exception", "timeout"};
static const char *const worker_states[] = {"starting", "idle", "busy", "degraded"};

static void fill_pool(const MetricsProduct *m, const char *pool)
{
    for (size_t c = 0; c < sizeof(commands) / sizeof(commands[0]); c++) {
        for (size_t s = 0; s < sizeof(statuses) / sizeof(statuses[0]); s++) {
            metrics_counter_add(metrics_counter_get(m->requests_total,
                                                    METRICS_LABELS(pool, commands[c], statuses[s])),
                                (double)(c * 10 + s + 1));
        }
    }
    for (int i = 0; i < 100; i++) {
        metrics_histogram_observe(metrics_histogram_get(m->request_duration, METRICS_LABELS(pool)),
                                  0.0007 * i * i);
        metrics_histogram_observe(metrics_histogram_get(m->queue_wait, METRICS_LABELS(pool)),
                                  0.00005 * i);
    }
    for (size_t s = 0; s < sizeof(worker_states) / sizeof(worker_states[0]); s++) {
        metrics_gauge_set(metrics_gauge_get(m->workers, METRICS_LABELS(pool, worker_states[s])),
                          (double)s);
    }
    metrics_counter_add(
        metrics_counter_get(m->worker_restarts_total, METRICS_LABELS(pool, "crashed")), 2);
    metrics_counter_add(
        metrics_counter_get(m->worker_restarts_total, METRICS_LABELS(pool, "recycled")), 5);
    metrics_gauge_set(metrics_gauge_get(m->queue_depth, METRICS_LABELS(pool)), 3);
    metrics_counter_inc(metrics_counter_get(m->heartbeat_missed_total, METRICS_LABELS(pool)));
}

static void fill(const MetricsProduct *m)
{
    for (size_t p = 0; p < sizeof(pools) / sizeof(pools[0]); p++) {
        fill_pool(m, pools[p]);
    }
    metrics_gauge_set(metrics_gauge_get(m->sessions, METRICS_LABELS("memory")), 42);
    metrics_gauge_set(metrics_gauge_get(m->store_up, METRICS_LABELS("memory")), 1);
    metrics_gauge_set(m->peers, 2);
    metrics_counter_add(m->telemetry_dropped_total, 7);
    /* Past the series limit of snakepit_requests_total, so "other" and the overflow count show. */
    for (int i = 0; i <= METRICS_PRODUCT_REQUEST_SERIES_MAX; i++) {
        char command[32];

        snprintf(command, sizeof(command), "python.generated.f%d", i);
        metrics_counter_inc(
            metrics_counter_get(m->requests_total, METRICS_LABELS("default", command, "ok")));
    }
}

static void stop_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    ev_break(loop, EVBREAK_ALL);
}

static int serve(MetricsRegistry *registry, const char *listen)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    HttpServerConfig config;
    ev_signal sigterm, sigint;
    HttpServer *server;
    int r;

    if (!loop) {
        return -ENOMEM;
    }
    http_server_config_init(&config);
    config.listen = listen;
    r = http_server_start(loop, &config, registry, NULL, &server);
    if (r < 0) {
        ev_loop_destroy(loop);
        return r;
    }
    printf("LISTENING %u\n", http_server_port(server));
    fflush(stdout);
    ev_signal_init(&sigterm, stop_cb, SIGTERM);
    ev_signal_init(&sigint, stop_cb, SIGINT);
    ev_signal_start(loop, &sigterm);
    ev_signal_start(loop, &sigint);
    ev_run(loop, 0);
    http_server_free(server);
    ev_loop_destroy(loop);
    return 0;
}

int main(int argc, char **argv)
{
    MetricsRegistry *registry = metrics_registry_new();
    TextBuffer page = TEXT_BUFFER_INIT;
    MetricsProduct m;
    int r;

    log_setup("metrics_dump", LOG_INFO, LOG_FORMAT_TEXT);
    if (!registry || metrics_product_register(registry, "0.1.0", &m) < 0) {
        fprintf(stderr, "metrics_dump: failed to register the metric families\n");
        return 1;
    }
    fill(&m);
    if (argc == 3 && strcmp(argv[1], "--serve") == 0) {
        r = serve(registry, argv[2]);
    } else if (argc == 1) {
        r = metrics_render(registry, &page);
        if (r == 0) {
            fwrite(page.data, 1, page.len, stdout);
        }
    } else {
        fprintf(stderr, "usage: metrics_dump [--serve ADDR:PORT]\n");
        r = -EINVAL;
    }
    text_buffer_free(&page);
    metrics_registry_free(registry);
    return r < 0 ? 1 : 0;
}
