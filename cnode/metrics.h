/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A registry of Prometheus metric families (counters, gauges, histograms) and its renderer in the
 * text exposition format 0.0.4.
 *
 * A family fixes its label names at registration; each distinct tuple of label values is a series.
 * A family has at most `max_series` series: a lookup with new values past that limit, or with a
 * value longer than METRICS_LABEL_VALUE_MAX bytes, returns the family's overflow series, whose
 * label values are all METRICS_OVERFLOW_VALUE, and counts the overflow. So label values taken
 * from requests can never grow the daemon's memory without bound.
 *
 * Series handles are stable pointers owned by the registry and valid until it is freed: look a
 * series up once and keep the handle, so the hot path is one addition on a double. The increment
 * functions accept NULL (the result of a failed lookup) and then do nothing.
 *
 * Not thread-safe: the daemon calls everything here from its one event-loop thread.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "text_buffer.h"

#define METRICS_LABELS_MAX 8
#define METRICS_BUCKETS_MAX 32
#define METRICS_SERIES_MAX_DEFAULT 1000
/* Label values longer than this many bytes go to the overflow series. */
#define METRICS_LABEL_VALUE_MAX 256
#define METRICS_OVERFLOW_VALUE "other"

typedef enum {
    METRICS_COUNTER,
    METRICS_GAUGE,
    METRICS_HISTOGRAM,
} MetricsType;

typedef struct MetricsRegistry MetricsRegistry;
typedef struct MetricsFamily MetricsFamily;

typedef struct {
    double value;
} MetricsCounter;

typedef struct {
    double value;
} MetricsGauge;

typedef struct {
    const double *upper_bounds; /* borrowed from the family, n_bounds finite bounds, ascending */
    uint64_t *bucket_counts;    /* n_bounds + 1 slots, the last for +Inf; not cumulative */
    size_t n_bounds;
    double sum;
    uint64_t count;
} MetricsHistogram;

typedef struct {
    MetricsType type;
    const char *name;               /* [a-zA-Z_:][a-zA-Z0-9_:]*; counters should end in _total */
    const char *help;               /* one line; copied */
    const char *const *label_names; /* n_labels names, [a-zA-Z_][a-zA-Z0-9_]*, no "__" prefix */
    size_t n_labels;
    size_t max_series;     /* 0 means METRICS_SERIES_MAX_DEFAULT */
    const double *buckets; /* histograms only: finite upper bounds, strictly increasing */
    size_t n_buckets;
} MetricsFamilyOptions;

/* Callback run at the start of each render, to refresh values read from elsewhere. */
typedef void (*MetricsCollectFn)(void *userdata);
/* Destructor for a collector's userdata, run when the registry is freed. */
typedef void (*MetricsFreeFn)(void *userdata);

/* Returns a new, empty registry (free with metrics_registry_free), or NULL when out of memory. */
MetricsRegistry *metrics_registry_new(void);
/* Free the registry, its families and every series handle. Accepts NULL. */
void metrics_registry_free(MetricsRegistry *registry);

/*
 * Register a family. The strings and buckets are copied. *family_out is borrowed from the
 * registry. Returns -EINVAL on an invalid name, label name, bucket list or label count (a
 * histogram may not use the label "le"), -EEXIST when the name is taken, -ENOMEM.
 * A family without labels gets its one series at once.
 */
int metrics_register(MetricsRegistry *registry, const MetricsFamilyOptions *options,
                     MetricsFamily **family_out);

/*
 * Run `collect` at the start of every render, in the order added. `userdata` is stolen when
 * `free_userdata` is set: the registry frees it with that function, also when this fails.
 * Returns 0 or -ENOMEM.
 */
int metrics_registry_add_collector(MetricsRegistry *registry, MetricsCollectFn collect,
                                   MetricsFreeFn free_userdata, void *userdata);

/*
 * Count every overflow of another family in `family` (a counter family with one label, which
 * receives the overflowing family's name). Returns -EINVAL if `family` does not fit.
 */
int metrics_registry_set_overflow_family(MetricsRegistry *registry, MetricsFamily *family);

/*
 * Return the series of `family` for `values` (n_values must equal the family's label count;
 * values are copied, and bytes that are not valid UTF-8 are stored as U+FFFD). The series is
 * created on first use; past max_series, or when out of memory, the overflow series is returned.
 * Returns NULL (borrowed) only when the family has another type or `n_values` is wrong.
 */
MetricsCounter *metrics_counter_get(MetricsFamily *family, const char *const *values,
                                    size_t n_values);
MetricsGauge *metrics_gauge_get(MetricsFamily *family, const char *const *values, size_t n_values);
MetricsHistogram *metrics_histogram_get(MetricsFamily *family, const char *const *values,
                                        size_t n_values);

/* Expand to the `values, n_values` arguments of the getters: METRICS_LABELS("default", "ok"). */
#define METRICS_LABELS(...)                                                                        \
    (const char *const[]){__VA_ARGS__},                                                            \
        (sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *))

const char *metrics_family_name(const MetricsFamily *family);
/* Distinct series created, not counting the overflow series. */
size_t metrics_family_series_count(const MetricsFamily *family);
/* Lookups that were sent to the overflow series. */
uint64_t metrics_family_overflow_count(const MetricsFamily *family);

/* Add `delta` to a counter; negative and NaN deltas are ignored, because counters never fall. */
static inline void metrics_counter_add(MetricsCounter *counter, double delta)
{
    if (counter && delta >= 0) {
        counter->value += delta;
    }
}

static inline void metrics_counter_inc(MetricsCounter *counter)
{
    if (counter) {
        counter->value += 1;
    }
}

static inline void metrics_gauge_set(MetricsGauge *gauge, double value)
{
    if (gauge) {
        gauge->value = value;
    }
}

static inline void metrics_gauge_add(MetricsGauge *gauge, double delta)
{
    if (gauge) {
        gauge->value += delta;
    }
}

/* Record one observation; NaN is ignored so the sum stays usable. */
void metrics_histogram_observe(MetricsHistogram *histogram, double value);

/*
 * Run the collectors, then append every family in registration order to `out` in the text
 * exposition format 0.0.4. Returns 0 or -ENOMEM (with `out` holding a partial page).
 */
int metrics_render(MetricsRegistry *registry, TextBuffer *out);

/*
 * Format `value` as Prometheus expects a sample value: "NaN", "+Inf", "-Inf", integers without a
 * fraction, others with the fewest digits that read back as the same double. `out` has 32 bytes.
 */
void metrics_format_double(char out[32], double value);
