/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The metrics registry: families in registration order, each with its series in creation order
 * and a chained hash index on the label values, plus the renderer for the text format 0.0.4
 * (https://prometheus.io/docs/instrumenting/exposition_formats/).
 */
#include "metrics.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text_utf8.h"

#define METRICS_HASH_INITIAL 16

typedef struct MetricsSeries MetricsSeries;

struct MetricsSeries {
    union {
        MetricsCounter counter;
        MetricsGauge gauge;
        MetricsHistogram histogram;
    } u;
    MetricsSeries *hash_next;
    uint64_t hash;
    const char **values; /* n_labels strings, stored in the same allocation */
};

typedef struct MetricsCollector {
    MetricsCollectFn collect;
    MetricsFreeFn free_userdata;
    void *userdata;
    struct MetricsCollector *next;
} MetricsCollector;

struct MetricsFamily {
    MetricsRegistry *registry;
    MetricsType type;
    char *name;
    char *help;
    size_t n_labels;
    char *label_names[METRICS_LABELS_MAX];
    double *bounds;
    size_t n_bounds;
    size_t max_series;
    MetricsSeries **series; /* creation order, without the overflow series */
    size_t n_series;
    size_t series_cap;
    MetricsSeries **hash; /* hash_size chains; hash_size is a power of two */
    size_t hash_size;
    MetricsSeries *overflow; /* NULL for a family without labels */
    bool overflow_used;      /* the overflow series was handed out at least once */
    uint64_t overflow_count;
    MetricsFamily *next;
};

struct MetricsRegistry {
    MetricsFamily *families;
    MetricsFamily **families_tail;
    MetricsCollector *collectors;
    MetricsCollector **collectors_tail;
    MetricsFamily *overflow_family;
};

MetricsRegistry *metrics_registry_new(void)
{
    MetricsRegistry *registry = calloc(1, sizeof(*registry));

    if (!registry) {
        return NULL;
    }
    registry->families_tail = &registry->families;
    registry->collectors_tail = &registry->collectors;
    return registry;
}

static void family_free(MetricsFamily *family)
{
    if (!family) {
        return;
    }
    for (size_t i = 0; i < family->n_series; i++) {
        free(family->series[i]);
    }
    free(family->overflow);
    free(family->series);
    free(family->hash);
    free(family->bounds);
    for (size_t i = 0; i < family->n_labels; i++) {
        free(family->label_names[i]);
    }
    free(family->name);
    free(family->help);
    free(family);
}

void metrics_registry_free(MetricsRegistry *registry)
{
    if (!registry) {
        return;
    }
    while (registry->families) {
        MetricsFamily *next = registry->families->next;

        family_free(registry->families);
        registry->families = next;
    }
    while (registry->collectors) {
        MetricsCollector *next = registry->collectors->next;

        if (registry->collectors->free_userdata) {
            registry->collectors->free_userdata(registry->collectors->userdata);
        }
        free(registry->collectors);
        registry->collectors = next;
    }
    free(registry);
}

static bool name_is_valid(const char *name, bool allow_colon)
{
    if (!name || !*name) {
        return false;
    }
    for (const char *p = name; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (allow_colon && c == ':') || (p != name && c >= '0' && c <= '9');

        if (!ok) {
            return false;
        }
    }
    return true;
}

static bool label_name_is_valid(const char *name, MetricsType type)
{
    if (!name_is_valid(name, false) || strncmp(name, "__", 2) == 0) {
        return false;
    }
    return !(type == METRICS_HISTOGRAM && strcmp(name, "le") == 0);
}

static int options_validate(const MetricsFamilyOptions *options)
{
    if (!name_is_valid(options->name, true) || !options->help ||
        options->n_labels > METRICS_LABELS_MAX || strchr(options->help, '\n')) {
        return -EINVAL;
    }
    for (size_t i = 0; i < options->n_labels; i++) {
        if (!label_name_is_valid(options->label_names[i], options->type)) {
            return -EINVAL;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(options->label_names[i], options->label_names[j]) == 0) {
                return -EINVAL;
            }
        }
    }
    if (options->type != METRICS_HISTOGRAM) {
        return options->n_buckets == 0 ? 0 : -EINVAL;
    }
    if (options->n_buckets == 0 || options->n_buckets > METRICS_BUCKETS_MAX) {
        return -EINVAL;
    }
    for (size_t i = 0; i < options->n_buckets; i++) {
        if (!isfinite(options->buckets[i]) ||
            (i > 0 && options->buckets[i] <= options->buckets[i - 1])) {
            return -EINVAL;
        }
    }
    return 0;
}

static MetricsFamily *registry_find(MetricsRegistry *registry, const char *name)
{
    for (MetricsFamily *f = registry->families; f; f = f->next) {
        if (strcmp(f->name, name) == 0) {
            return f;
        }
    }
    return NULL;
}

/* Allocate a series with room for its label values and bucket counts in one block. */
static MetricsSeries *series_new(const MetricsFamily *family, const char *const *values,
                                 uint64_t hash)
{
    size_t n_counts = family->type == METRICS_HISTOGRAM ? family->n_bounds + 1 : 0;
    size_t size =
        sizeof(MetricsSeries) + n_counts * sizeof(uint64_t) + family->n_labels * sizeof(char *);
    MetricsSeries *series;
    char *strings;

    for (size_t i = 0; i < family->n_labels; i++) {
        size += strlen(values[i]) + 1;
    }
    series = calloc(1, size);
    if (!series) {
        return NULL;
    }
    series->hash = hash;
    if (family->type == METRICS_HISTOGRAM) {
        series->u.histogram.bucket_counts = (uint64_t *)(series + 1);
        series->u.histogram.upper_bounds = family->bounds;
        series->u.histogram.n_bounds = family->n_bounds;
    }
    series->values = (const char **)((char *)(series + 1) + n_counts * sizeof(uint64_t));
    strings = (char *)(series->values + family->n_labels);
    for (size_t i = 0; i < family->n_labels; i++) {
        size_t len = strlen(values[i]);

        memcpy(strings, values[i], len + 1);
        series->values[i] = strings;
        strings += len + 1;
    }
    return series;
}

static int family_alloc(const MetricsFamilyOptions *options, MetricsFamily **out)
{
    MetricsFamily *family = calloc(1, sizeof(*family));

    if (!family) {
        return -ENOMEM;
    }
    family->type = options->type;
    family->max_series = options->max_series ? options->max_series : METRICS_SERIES_MAX_DEFAULT;
    family->name = strdup(options->name);
    family->help = strdup(options->help);
    if (!family->name || !family->help) {
        goto fail;
    }
    for (size_t i = 0; i < options->n_labels; i++) {
        family->label_names[i] = strdup(options->label_names[i]);
        if (!family->label_names[i]) {
            goto fail;
        }
        family->n_labels++;
    }
    if (options->n_buckets > 0) {
        family->bounds = malloc(options->n_buckets * sizeof(double));
        if (!family->bounds) {
            goto fail;
        }
        memcpy(family->bounds, options->buckets, options->n_buckets * sizeof(double));
        family->n_bounds = options->n_buckets;
    }
    *out = family;
    return 0;

fail:
    family_free(family);
    return -ENOMEM;
}

/*
 * Create the series that exists from the start: the only one of a family without labels, or the
 * overflow series of a family with labels.
 */
static int family_add_fixed_series(MetricsFamily *family)
{
    const char *others[METRICS_LABELS_MAX];
    MetricsSeries *series;

    for (size_t i = 0; i < family->n_labels; i++) {
        others[i] = METRICS_OVERFLOW_VALUE;
    }
    series = series_new(family, others, 0);
    if (!series) {
        return -ENOMEM;
    }
    if (family->n_labels > 0) {
        family->overflow = series;
        return 0;
    }
    family->series = malloc(sizeof(MetricsSeries *));
    if (!family->series) {
        free(series);
        return -ENOMEM;
    }
    family->series[0] = series;
    family->n_series = 1;
    family->series_cap = 1;
    return 0;
}

int metrics_register(MetricsRegistry *registry, const MetricsFamilyOptions *options,
                     MetricsFamily **family_out)
{
    MetricsFamily *family;
    int r;

    r = options_validate(options);
    if (r < 0) {
        return r;
    }
    if (registry_find(registry, options->name)) {
        return -EEXIST;
    }
    r = family_alloc(options, &family);
    if (r < 0) {
        return r;
    }
    r = family_add_fixed_series(family);
    if (r < 0) {
        family_free(family);
        return r;
    }
    family->registry = registry;
    *registry->families_tail = family;
    registry->families_tail = &family->next;
    *family_out = family;
    return 0;
}

int metrics_registry_add_collector(MetricsRegistry *registry, MetricsCollectFn collect,
                                   MetricsFreeFn free_userdata, void *userdata)
{
    MetricsCollector *collector = calloc(1, sizeof(*collector));

    if (!collector) {
        if (free_userdata) {
            free_userdata(userdata);
        }
        return -ENOMEM;
    }
    collector->collect = collect;
    collector->free_userdata = free_userdata;
    collector->userdata = userdata;
    *registry->collectors_tail = collector;
    registry->collectors_tail = &collector->next;
    return 0;
}

int metrics_registry_set_overflow_family(MetricsRegistry *registry, MetricsFamily *family)
{
    if (family->registry != registry || family->type != METRICS_COUNTER || family->n_labels != 1) {
        return -EINVAL;
    }
    registry->overflow_family = family;
    return 0;
}

const char *metrics_family_name(const MetricsFamily *family)
{
    return family->name;
}

size_t metrics_family_series_count(const MetricsFamily *family)
{
    return family->n_series;
}

uint64_t metrics_family_overflow_count(const MetricsFamily *family)
{
    return family->overflow_count;
}

/* FNV-1a over the values, with a 0xff byte (never in UTF-8) between them. */
static uint64_t values_hash(const char *const *values, size_t n)
{
    uint64_t h = 14695981039346656037ull;

    for (size_t i = 0; i < n; i++) {
        for (const unsigned char *p = (const unsigned char *)values[i]; *p; p++) {
            h = (h ^ *p) * 1099511628211ull;
        }
        h = (h ^ 0xff) * 1099511628211ull;
    }
    return h;
}

static bool values_equal(const MetricsSeries *series, const char *const *values, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(series->values[i], values[i]) != 0) {
            return false;
        }
    }
    return true;
}

static bool utf8_is_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;

    for (size_t i = 0; i < len;) {
        size_t n = text_utf8_sequence_length(p + i, len - i);

        if (n == 0) {
            return false;
        }
        i += n;
    }
    return true;
}

/* Copy `value` into `out` (3 * len + 1 bytes) with each malformed byte replaced by U+FFFD. */
static void utf8_sanitize(const char *value, size_t len, char *out)
{
    const unsigned char *p = (const unsigned char *)value;
    size_t o = 0;

    for (size_t i = 0; i < len;) {
        size_t n = text_utf8_sequence_length(p + i, len - i);

        if (n == 0) {
            memcpy(out + o, TEXT_UTF8_REPLACEMENT, 3);
            o += 3;
            i++;
        } else {
            memcpy(out + o, value + i, n);
            o += n;
            i += n;
        }
    }
    out[o] = '\0';
}

/* A lookup of ("other", ...) itself must share the overflow series, never duplicate it. */
static bool values_are_overflow(const char *const *values, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(values[i], METRICS_OVERFLOW_VALUE) != 0) {
            return false;
        }
    }
    return true;
}

static void family_count_overflow(MetricsFamily *family)
{
    MetricsFamily *counting = family->registry->overflow_family;

    family->overflow_count++;
    if (counting && counting != family) {
        metrics_counter_inc(metrics_counter_get(counting, (const char *const *)&family->name, 1));
    }
}

static int family_grow_hash(MetricsFamily *family)
{
    size_t size = family->hash_size ? family->hash_size * 2 : METRICS_HASH_INITIAL;
    MetricsSeries **hash = calloc(size, sizeof(*hash));

    if (!hash) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < family->n_series; i++) {
        MetricsSeries *series = family->series[i];

        series->hash_next = hash[series->hash & (size - 1)];
        hash[series->hash & (size - 1)] = series;
    }
    free(family->hash);
    family->hash = hash;
    family->hash_size = size;
    return 0;
}

static MetricsSeries *family_insert(MetricsFamily *family, const char *const *values, uint64_t hash)
{
    MetricsSeries *series;

    if (family->n_series == family->series_cap) {
        size_t cap = family->series_cap ? family->series_cap * 2 : 8;
        MetricsSeries **grown = realloc(family->series, cap * sizeof(*grown));

        if (!grown) {
            return NULL;
        }
        family->series = grown;
        family->series_cap = cap;
    }
    if (family->n_series + 1 > family->hash_size && family_grow_hash(family) < 0) {
        return NULL;
    }
    series = series_new(family, values, hash);
    if (!series) {
        return NULL;
    }
    series->hash_next = family->hash[hash & (family->hash_size - 1)];
    family->hash[hash & (family->hash_size - 1)] = series;
    family->series[family->n_series++] = series;
    return series;
}

static MetricsSeries *family_lookup(MetricsFamily *family, const char *const *values)
{
    char *clean[METRICS_LABELS_MAX] = {NULL};
    const char *use[METRICS_LABELS_MAX];
    MetricsSeries *series = NULL;
    uint64_t hash;

    for (size_t i = 0; i < family->n_labels; i++) {
        size_t len = strlen(values[i]);

        use[i] = values[i];
        if (len > METRICS_LABEL_VALUE_MAX) {
            goto overflow;
        }
        if (!utf8_is_valid(values[i], len)) {
            clean[i] = malloc(3 * len + 1);
            if (!clean[i]) {
                goto overflow;
            }
            utf8_sanitize(values[i], len, clean[i]);
            use[i] = clean[i];
        }
    }
    if (values_are_overflow(use, family->n_labels)) {
        family->overflow_used = true;
        series = family->overflow;
        goto done;
    }
    hash = values_hash(use, family->n_labels);
    if (family->hash_size > 0) {
        series = family->hash[hash & (family->hash_size - 1)];
    }
    for (; series; series = series->hash_next) {
        if (series->hash == hash && values_equal(series, use, family->n_labels)) {
            goto done;
        }
    }
    if (family->n_series < family->max_series) {
        series = family_insert(family, use, hash);
    }
    if (series) {
        goto done;
    }

overflow:
    family_count_overflow(family);
    family->overflow_used = true;
    series = family->overflow;
done:
    for (size_t i = 0; i < family->n_labels; i++) {
        free(clean[i]);
    }
    return series;
}

static MetricsSeries *series_get(MetricsFamily *family, MetricsType type, const char *const *values,
                                 size_t n_values)
{
    if (!family || family->type != type || n_values != family->n_labels) {
        return NULL;
    }
    if (family->n_labels == 0) {
        return family->series[0];
    }
    return family_lookup(family, values);
}

MetricsCounter *metrics_counter_get(MetricsFamily *family, const char *const *values,
                                    size_t n_values)
{
    MetricsSeries *series = series_get(family, METRICS_COUNTER, values, n_values);

    return series ? &series->u.counter : NULL;
}

MetricsGauge *metrics_gauge_get(MetricsFamily *family, const char *const *values, size_t n_values)
{
    MetricsSeries *series = series_get(family, METRICS_GAUGE, values, n_values);

    return series ? &series->u.gauge : NULL;
}

MetricsHistogram *metrics_histogram_get(MetricsFamily *family, const char *const *values,
                                        size_t n_values)
{
    MetricsSeries *series = series_get(family, METRICS_HISTOGRAM, values, n_values);

    return series ? &series->u.histogram : NULL;
}

void metrics_histogram_observe(MetricsHistogram *histogram, double value)
{
    size_t i = 0;

    if (!histogram || isnan(value)) {
        return;
    }
    while (i < histogram->n_bounds && value > histogram->upper_bounds[i]) {
        i++;
    }
    histogram->bucket_counts[i]++;
    histogram->sum += value;
    histogram->count++;
}

/* Write the decimal digits of `value` into `out`, which has room for 21 bytes and the NUL. */
static void format_integer(char out[32], int64_t value)
{
    char digits[24];
    uint64_t magnitude = value < 0 ? (uint64_t)0 - (uint64_t)value : (uint64_t)value;
    size_t n = 0, o = 0;

    do {
        digits[n++] = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude > 0);
    if (value < 0) {
        out[o++] = '-';
    }
    while (n > 0) {
        out[o++] = digits[--n];
    }
    out[o] = '\0';
}

void metrics_format_double(char out[32], double value)
{
    /* Counters and bucket counts are whole numbers: print them without the cost of printf. */
    if (value == floor(value) && fabs(value) < 1e15) {
        format_integer(out, (int64_t)value);
        return;
    }
    if (isnan(value)) {
        snprintf(out, 32, "NaN");
        return;
    }
    if (isinf(value)) {
        snprintf(out, 32, value > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int precision = 15; precision <= 17; precision++) {
        snprintf(out, 32, "%.*g", precision, value);
        if (strtod(out, NULL) == value) {
            return;
        }
    }
}

/* HELP text escapes backslash and newline; label values also escape the double quote. */
static int append_escaped(TextBuffer *out, const char *s, bool quote)
{
    int r = 0;

    if (!strpbrk(s, quote ? "\\\n\"" : "\\\n")) {
        return text_buffer_append_str(out, s);
    }
    for (const char *p = s; *p && r == 0; p++) {
        if (*p == '\\') {
            r = text_buffer_append(out, "\\\\", 2);
        } else if (*p == '\n') {
            r = text_buffer_append(out, "\\n", 2);
        } else if (quote && *p == '"') {
            r = text_buffer_append(out, "\\\"", 2);
        } else {
            r = text_buffer_append_char(out, *p);
        }
    }
    return r;
}

/* Write `{a="x",b="y"` plus an optional `le`, then `}`; nothing when there are no labels. */
static int append_labels(TextBuffer *out, const MetricsFamily *family, const MetricsSeries *series,
                         const char *le)
{
    int r = 0;

    if (family->n_labels == 0 && !le) {
        return 0;
    }
    r = text_buffer_append_char(out, '{');
    for (size_t i = 0; i < family->n_labels && r == 0; i++) {
        if (i > 0) {
            r = text_buffer_append_char(out, ',');
        }
        if (r == 0) {
            r = text_buffer_append_str(out, family->label_names[i]);
        }
        if (r == 0) {
            r = text_buffer_append(out, "=\"", 2);
        }
        if (r == 0) {
            r = append_escaped(out, series->values[i], true);
        }
        if (r == 0) {
            r = text_buffer_append_char(out, '"');
        }
    }
    if (r == 0 && le) {
        r = text_buffer_append_str(out, family->n_labels ? ",le=\"" : "le=\"");
    }
    if (r == 0 && le) {
        r = text_buffer_append_str(out, le);
    }
    if (r == 0 && le) {
        r = text_buffer_append_char(out, '"');
    }
    if (r == 0) {
        r = text_buffer_append_char(out, '}');
    }
    return r;
}

static int append_sample(TextBuffer *out, const MetricsFamily *family, const MetricsSeries *series,
                         const char *suffix, const char *le, double value)
{
    char number[32];
    int r;

    r = text_buffer_append_str(out, family->name);
    if (r == 0) {
        r = text_buffer_append_str(out, suffix);
    }
    if (r == 0) {
        r = append_labels(out, family, series, le);
    }
    metrics_format_double(number, value);
    if (r == 0) {
        r = text_buffer_append_char(out, ' ');
    }
    if (r == 0) {
        r = text_buffer_append_str(out, number);
    }
    if (r == 0) {
        r = text_buffer_append_char(out, '\n');
    }
    return r;
}

static int render_histogram(TextBuffer *out, const MetricsFamily *family,
                            const MetricsSeries *series)
{
    const MetricsHistogram *h = &series->u.histogram;
    uint64_t cumulative = 0;
    char le[32];
    int r = 0;

    for (size_t i = 0; i <= h->n_bounds && r == 0; i++) {
        cumulative += h->bucket_counts[i];
        if (i < h->n_bounds) {
            metrics_format_double(le, h->upper_bounds[i]);
        } else {
            snprintf(le, sizeof(le), "+Inf");
        }
        r = append_sample(out, family, series, "_bucket", le, (double)cumulative);
    }
    if (r == 0) {
        r = append_sample(out, family, series, "_sum", NULL, h->sum);
    }
    if (r == 0) {
        r = append_sample(out, family, series, "_count", NULL, (double)h->count);
    }
    return r;
}

static int render_series(TextBuffer *out, const MetricsFamily *family, const MetricsSeries *series)
{
    switch (family->type) {
    case METRICS_COUNTER:
        return append_sample(out, family, series, "", NULL, series->u.counter.value);
    case METRICS_GAUGE:
        return append_sample(out, family, series, "", NULL, series->u.gauge.value);
    case METRICS_HISTOGRAM:
        return render_histogram(out, family, series);
    }
    return -EINVAL;
}

static int render_family(TextBuffer *out, const MetricsFamily *family)
{
    static const char *const type_names[] = {
        [METRICS_COUNTER] = "counter",
        [METRICS_GAUGE] = "gauge",
        [METRICS_HISTOGRAM] = "histogram",
    };
    int r;

    r = text_buffer_printf(out, "# HELP %s ", family->name);
    if (r == 0) {
        r = append_escaped(out, family->help, false);
    }
    if (r == 0) {
        r = text_buffer_printf(out, "\n# TYPE %s %s\n", family->name, type_names[family->type]);
    }
    for (size_t i = 0; i < family->n_series && r == 0; i++) {
        r = render_series(out, family, family->series[i]);
    }
    /* The overflow series appears once it was used, so dashboards can see the loss. */
    if (r == 0 && family->overflow_used) {
        r = render_series(out, family, family->overflow);
    }
    return r;
}

int metrics_render(MetricsRegistry *registry, TextBuffer *out)
{
    int r = 0;

    for (MetricsCollector *c = registry->collectors; c; c = c->next) {
        c->collect(c->userdata);
    }
    for (MetricsFamily *f = registry->families; f && r == 0; f = f->next) {
        r = render_family(out, f);
    }
    return r;
}
