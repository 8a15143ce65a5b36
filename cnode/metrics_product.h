/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The metric families of snakepit-cnode, registered in one call, with the handles the daemon
 * keeps. docs/telemetry.md lists each metric with its labels and their values.
 */
#pragma once

#include "metrics.h"

/* Series limit of snakepit_requests_total: pools x allowed commands x statuses. */
#define METRICS_PRODUCT_REQUEST_SERIES_MAX 5000

typedef struct {
    MetricsFamily *requests_total;         /* counter {pool, command, status} */
    MetricsFamily *request_duration;       /* histogram {pool}, seconds */
    MetricsFamily *queue_wait;             /* histogram {pool}, seconds */
    MetricsFamily *workers;                /* gauge {pool, state} */
    MetricsFamily *worker_restarts_total;  /* counter {pool, reason} */
    MetricsFamily *queue_depth;            /* gauge {pool} */
    MetricsFamily *sessions;               /* gauge {store} */
    MetricsFamily *store_up;               /* gauge {store}, 1 or 0 */
    MetricsFamily *heartbeat_missed_total; /* counter {pool} */
    MetricsFamily *info;                   /* gauge {version}, always 1 */
    MetricsFamily *series_overflow_total;  /* counter {family} */
    MetricsGauge *peers;                   /* connected Erlang nodes */
    MetricsCounter *telemetry_dropped_total;
} MetricsProduct;

/*
 * Register the process_* metrics and every snakepit_* family in `registry`, set
 * snakepit_info{version="<version>"} to 1, and fill *out with borrowed handles (valid until the
 * registry is freed). Returns 0, -EEXIST when a name is already registered, or -ENOMEM.
 */
int metrics_product_register(MetricsRegistry *registry, const char *version, MetricsProduct *out);
