/* SPDX-License-Identifier: Apache-2.0 */
/* Registration of the snakepit_* metric families and the process_* metrics. */
#include "metrics_product.h"

#include <stddef.h>

#include "metrics_process.h"

/* Seconds: from a 1 ms echo call up to the default 30 s request timeout and beyond. */
static const double request_buckets[] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
};

/* Seconds: queue waits are short when the pool keeps up; the default queue timeout is 5 s. */
static const double queue_buckets[] = {
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10,
};

static const char *const labels_pool[] = {"pool"};
static const char *const labels_request[] = {"pool", "command", "status"};
static const char *const labels_workers[] = {"pool", "state"};
static const char *const labels_restarts[] = {"pool", "reason"};
static const char *const labels_store[] = {"store"};
static const char *const labels_version[] = {"version"};
static const char *const labels_family[] = {"family"};

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

typedef struct {
    size_t offset; /* of the MetricsFamily * field in MetricsProduct */
    MetricsFamilyOptions options;
} ProductFamily;

static const ProductFamily product_families[] = {
    {offsetof(MetricsProduct, series_overflow_total),
     {METRICS_COUNTER, "snakepit_metrics_series_overflow_total",
      "Label sets that exceeded a family's series limit and were counted as \"other\".",
      labels_family, 1, 0, NULL, 0}},
    {offsetof(MetricsProduct, requests_total),
     {METRICS_COUNTER, "snakepit_requests_total",
      "Requests answered, by pool, command and status (ok or the error kind).", labels_request, 3,
      METRICS_PRODUCT_REQUEST_SERIES_MAX, NULL, 0}},
    {offsetof(MetricsProduct, request_duration),
     {METRICS_HISTOGRAM, "snakepit_request_duration_seconds",
      "Time from receiving a request to sending its reply, in seconds.", labels_pool, 1, 0,
      request_buckets, ARRAY_LEN(request_buckets)}},
    {offsetof(MetricsProduct, queue_wait),
     {METRICS_HISTOGRAM, "snakepit_queue_wait_seconds",
      "Time a request waited in its pool's queue for a worker, in seconds.", labels_pool, 1, 0,
      queue_buckets, ARRAY_LEN(queue_buckets)}},
    {offsetof(MetricsProduct, workers),
     {METRICS_GAUGE, "snakepit_workers", "Workers by pool and state.", labels_workers, 2, 0, NULL,
      0}},
    {offsetof(MetricsProduct, worker_restarts_total),
     {METRICS_COUNTER, "snakepit_worker_restarts_total", "Workers replaced, by pool and reason.",
      labels_restarts, 2, 0, NULL, 0}},
    {offsetof(MetricsProduct, queue_depth),
     {METRICS_GAUGE, "snakepit_queue_depth", "Requests waiting for a worker, by pool.", labels_pool,
      1, 0, NULL, 0}},
    {offsetof(MetricsProduct, sessions),
     {METRICS_GAUGE, "snakepit_sessions", "Sessions held by the session store.", labels_store, 1, 0,
      NULL, 0}},
    {offsetof(MetricsProduct, store_up),
     {METRICS_GAUGE, "snakepit_store_up", "1 when the session store is reachable, else 0.",
      labels_store, 1, 0, NULL, 0}},
    {offsetof(MetricsProduct, heartbeat_missed_total),
     {METRICS_COUNTER, "snakepit_heartbeat_missed_total",
      "Worker heartbeats not answered in time, by pool.", labels_pool, 1, 0, NULL, 0}},
    {offsetof(MetricsProduct, info),
     {METRICS_GAUGE, "snakepit_info", "Build information; the value is always 1.", labels_version,
      1, 0, NULL, 0}},
};

static int register_unlabeled(MetricsRegistry *registry, MetricsProduct *product)
{
    MetricsFamilyOptions peers = {
        .type = METRICS_GAUGE,
        .name = "snakepit_peers",
        .help = "Erlang nodes connected to this C node.",
    };
    MetricsFamilyOptions dropped = {
        .type = METRICS_COUNTER,
        .name = "snakepit_telemetry_dropped_total",
        .help = "Telemetry events dropped because a subscriber's queue was full.",
    };
    MetricsFamily *family;
    int r;

    r = metrics_register(registry, &peers, &family);
    if (r < 0) {
        return r;
    }
    product->peers = metrics_gauge_get(family, NULL, 0);
    r = metrics_register(registry, &dropped, &family);
    if (r < 0) {
        return r;
    }
    product->telemetry_dropped_total = metrics_counter_get(family, NULL, 0);
    return 0;
}

int metrics_product_register(MetricsRegistry *registry, const char *version, MetricsProduct *out)
{
    MetricsProduct product = {0};
    MetricsGauge *info;
    int r;

    r = metrics_process_register(registry);
    if (r < 0) {
        return r;
    }
    for (size_t i = 0; i < ARRAY_LEN(product_families); i++) {
        const ProductFamily *pf = &product_families[i];
        MetricsFamily **slot = (MetricsFamily **)((char *)&product + pf->offset);

        r = metrics_register(registry, &pf->options, slot);
        if (r < 0) {
            return r;
        }
    }
    r = register_unlabeled(registry, &product);
    if (r < 0) {
        return r;
    }
    r = metrics_registry_set_overflow_family(registry, product.series_overflow_total);
    if (r < 0) {
        return r;
    }
    info = metrics_gauge_get(product.info, METRICS_LABELS(version));
    metrics_gauge_set(info, 1);
    *out = product;
    return 0;
}
