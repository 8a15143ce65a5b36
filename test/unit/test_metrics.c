/* SPDX-License-Identifier: Apache-2.0 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "metrics.h"
#include "metrics_process.h"
#include "metrics_product.h"

static const char *const pool_command[] = {"pool", "command"};

static MetricsFamily *register_family(MetricsRegistry *reg, MetricsType type, const char *name,
                                      const char *const *labels, size_t n_labels, size_t max_series)
{
    MetricsFamilyOptions options = {
        .type = type,
        .name = name,
        .help = "Test family.",
        .label_names = labels,
        .n_labels = n_labels,
        .max_series = max_series,
    };
    MetricsFamily *family = NULL;

    cr_assert_eq(metrics_register(reg, &options, &family), 0, "registering %s", name);
    return family;
}

static char *render(MetricsRegistry *reg)
{
    TextBuffer buf = TEXT_BUFFER_INIT;
    size_t len;

    cr_assert_eq(metrics_render(reg, &buf), 0);
    return text_buffer_steal(&buf, &len);
}

Test(metrics, render_counter_and_gauge)
{
    MetricsRegistry *reg = metrics_registry_new();
    MetricsFamily *requests =
        register_family(reg, METRICS_COUNTER, "t_requests_total", pool_command, 2, 0);
    MetricsFamily *peers = register_family(reg, METRICS_GAUGE, "t_peers", NULL, 0, 0);
    char *text;

    metrics_counter_add(metrics_counter_get(requests, METRICS_LABELS("default", "echo")), 3);
    metrics_counter_inc(metrics_counter_get(requests, METRICS_LABELS("gpu", "echo")));
    metrics_gauge_set(metrics_gauge_get(peers, NULL, 0), 2.5);
    text = render(reg);
    cr_assert_str_eq(text, "# HELP t_requests_total Test family.\n"
                           "# TYPE t_requests_total counter\n"
                           "t_requests_total{pool=\"default\",command=\"echo\"} 3\n"
                           "t_requests_total{pool=\"gpu\",command=\"echo\"} 1\n"
                           "# HELP t_peers Test family.\n"
                           "# TYPE t_peers gauge\n"
                           "t_peers 2.5\n");
    free(text);
    metrics_registry_free(reg);
}

Test(metrics, same_labels_same_handle)
{
    MetricsRegistry *reg = metrics_registry_new();
    MetricsFamily *f = register_family(reg, METRICS_COUNTER, "t_total", pool_command, 2, 0);
    MetricsCounter *a = metrics_counter_get(f, METRICS_LABELS("p", "c"));
    MetricsCounter *b = metrics_counter_get(f, METRICS_LABELS("p", "c"));
    MetricsCounter *c = metrics_counter_get(f, METRICS_LABELS("p", "d"));

    cr_assert_not_null(a);
    cr_assert_eq(a, b);
    cr_assert_neq(a, c);
    cr_assert_eq(metrics_family_series_count(f), 2);
    metrics_registry_free(reg);
}

Test(metrics, label_and_help_escaping)
{
    MetricsRegistry *reg = metrics_registry_new();
    static const char *const labels[] = {"command"};
    MetricsFamilyOptions options = {
        .type = METRICS_GAUGE,
        .name = "t_escape",
        .help = "Back\\slash help.",
        .label_names = labels,
        .n_labels = 1,
    };
    MetricsFamily *f;
    char *text;

    cr_assert_eq(metrics_register(reg, &options, &f), 0);
    metrics_gauge_set(metrics_gauge_get(f, METRICS_LABELS("a\"b\\c\nd")), 1);
    text = render(reg);
    cr_assert(strstr(text, "# HELP t_escape Back\\\\slash help.\n"), "%s", text);
    cr_assert(strstr(text, "t_escape{command=\"a\\\"b\\\\c\\nd\"} 1\n"), "%s", text);
    free(text);
    metrics_registry_free(reg);
}

Test(metrics, invalid_utf8_label_replaced)
{
    MetricsRegistry *reg = metrics_registry_new();
    static const char *const labels[] = {"command"};
    MetricsFamily *f = register_family(reg, METRICS_GAUGE, "t_utf8", labels, 1, 0);
    MetricsGauge *bad = metrics_gauge_get(f, METRICS_LABELS("x\xff"));
    MetricsGauge *replaced = metrics_gauge_get(f, METRICS_LABELS("x\xef\xbf\xbd"));
    char *text;

    cr_assert_eq(bad, replaced, "a malformed value and its sanitized form share one series");
    metrics_gauge_set(bad, 1);
    text = render(reg);
    cr_assert(strstr(text, "t_utf8{command=\"x\xef\xbf\xbd\"} 1\n"), "%s", text);
    free(text);
    metrics_registry_free(reg);
}

Test(metrics, histogram_buckets)
{
    MetricsRegistry *reg = metrics_registry_new();
    static const char *const labels[] = {"pool"};
    static const double buckets[] = {0.05, 0.5, 1};
    MetricsFamilyOptions options = {
        .type = METRICS_HISTOGRAM,
        .name = "t_seconds",
        .help = "Durations.",
        .label_names = labels,
        .n_labels = 1,
        .buckets = buckets,
        .n_buckets = 3,
    };
    MetricsHistogram *h;
    MetricsFamily *f;
    char *text;

    cr_assert_eq(metrics_register(reg, &options, &f), 0);
    h = metrics_histogram_get(f, METRICS_LABELS("default"));
    metrics_histogram_observe(h, 0.01);
    metrics_histogram_observe(h, 0.05); /* on the bound: counts in le="0.05" */
    metrics_histogram_observe(h, 0.75);
    metrics_histogram_observe(h, 100);
    metrics_histogram_observe(h, NAN);
    text = render(reg);
    cr_assert_str_eq(text, "# HELP t_seconds Durations.\n"
                           "# TYPE t_seconds histogram\n"
                           "t_seconds_bucket{pool=\"default\",le=\"0.05\"} 2\n"
                           "t_seconds_bucket{pool=\"default\",le=\"0.5\"} 2\n"
                           "t_seconds_bucket{pool=\"default\",le=\"1\"} 3\n"
                           "t_seconds_bucket{pool=\"default\",le=\"+Inf\"} 4\n"
                           "t_seconds_sum{pool=\"default\"} 100.81\n"
                           "t_seconds_count{pool=\"default\"} 4\n");
    free(text);
    metrics_registry_free(reg);
}

Test(metrics, histogram_without_labels)
{
    MetricsRegistry *reg = metrics_registry_new();
    static const double buckets[] = {1};
    MetricsFamilyOptions options = {
        .type = METRICS_HISTOGRAM,
        .name = "t_plain",
        .help = "Plain.",
        .buckets = buckets,
        .n_buckets = 1,
    };
    MetricsFamily *f;
    char *text;

    cr_assert_eq(metrics_register(reg, &options, &f), 0);
    metrics_histogram_observe(metrics_histogram_get(f, NULL, 0), 2);
    text = render(reg);
    cr_assert(strstr(text, "t_plain_bucket{le=\"1\"} 0\nt_plain_bucket{le=\"+Inf\"} 1\n"), "%s",
              text);
    cr_assert(strstr(text, "t_plain_sum 2\nt_plain_count 1\n"), "%s", text);
    free(text);
    metrics_registry_free(reg);
}

Test(metrics, overflow_at_limit_plus_one)
{
    MetricsRegistry *reg = metrics_registry_new();
    static const char *const family_label[] = {"family"};
    MetricsFamily *overflow =
        register_family(reg, METRICS_COUNTER, "t_overflow_total", family_label, 1, 0);
    MetricsFamily *f = register_family(reg, METRICS_COUNTER, "t_limited_total", pool_command, 2, 3);
    MetricsCounter *first[3];
    MetricsCounter *extra, *extra2;
    char *text;

    cr_assert_eq(metrics_registry_set_overflow_family(reg, overflow), 0);
    first[0] = metrics_counter_get(f, METRICS_LABELS("p", "a"));
    first[1] = metrics_counter_get(f, METRICS_LABELS("p", "b"));
    first[2] = metrics_counter_get(f, METRICS_LABELS("p", "c"));
    cr_assert_eq(metrics_family_overflow_count(f), 0);
    cr_assert_eq(metrics_family_series_count(f), 3);

    extra = metrics_counter_get(f, METRICS_LABELS("p", "d"));
    extra2 = metrics_counter_get(f, METRICS_LABELS("p", "e"));
    cr_assert_not_null(extra);
    cr_assert_eq(extra, extra2, "every series past the limit shares the overflow series");
    for (int i = 0; i < 3; i++) {
        cr_assert_neq(extra, first[i]);
    }
    cr_assert_eq(metrics_family_series_count(f), 3);
    cr_assert_eq(metrics_family_overflow_count(f), 2);
    cr_assert_eq(metrics_counter_get(f, METRICS_LABELS("p", "b")), first[1],
                 "existing series still resolve after the limit");
    cr_assert_eq(metrics_counter_get(f, METRICS_LABELS("other", "other")), extra,
                 "the literal overflow values map to the overflow series");
    cr_assert_eq(metrics_family_overflow_count(f), 2);

    metrics_counter_add(extra, 5);
    text = render(reg);
    cr_assert(strstr(text, "t_limited_total{pool=\"other\",command=\"other\"} 5\n"), "%s", text);
    cr_assert(strstr(text, "t_overflow_total{family=\"t_limited_total\"} 2\n"), "%s", text);
    free(text);
    metrics_registry_free(reg);
}

Test(metrics, overflow_series_hidden_until_used)
{
    MetricsRegistry *reg = metrics_registry_new();
    MetricsFamily *f = register_family(reg, METRICS_COUNTER, "t_total", pool_command, 2, 1);
    char *text;

    metrics_counter_inc(metrics_counter_get(f, METRICS_LABELS("p", "a")));
    text = render(reg);
    cr_assert_null(strstr(text, "other"), "%s", text);
    free(text);
    metrics_registry_free(reg);
}

Test(metrics, long_label_value_overflows)
{
    MetricsRegistry *reg = metrics_registry_new();
    MetricsFamily *f = register_family(reg, METRICS_COUNTER, "t_total", pool_command, 2, 0);
    char at_limit[METRICS_LABEL_VALUE_MAX + 1];
    char over_limit[METRICS_LABEL_VALUE_MAX + 2];
    MetricsCounter *ok, *over;

    memset(at_limit, 'a', sizeof(at_limit) - 1);
    at_limit[sizeof(at_limit) - 1] = '\0';
    memset(over_limit, 'a', sizeof(over_limit) - 1);
    over_limit[sizeof(over_limit) - 1] = '\0';
    ok = metrics_counter_get(f, METRICS_LABELS("p", at_limit));
    over = metrics_counter_get(f, METRICS_LABELS("p", over_limit));
    cr_assert_eq(metrics_family_series_count(f), 1);
    cr_assert_eq(metrics_family_overflow_count(f), 1);
    cr_assert_neq(ok, over);
    metrics_registry_free(reg);
}

Test(metrics, wrong_type_or_arity_is_null)
{
    MetricsRegistry *reg = metrics_registry_new();
    MetricsFamily *f = register_family(reg, METRICS_COUNTER, "t_total", pool_command, 2, 0);

    cr_assert_null(metrics_counter_get(f, METRICS_LABELS("only-one")));
    cr_assert_null(metrics_gauge_get(f, METRICS_LABELS("p", "c")));
    cr_assert_null(metrics_histogram_get(f, METRICS_LABELS("p", "c")));
    metrics_counter_inc(NULL); /* a failed lookup stays harmless */
    metrics_gauge_set(NULL, 1);
    metrics_histogram_observe(NULL, 1);
    metrics_registry_free(reg);
}

Test(metrics, counter_ignores_negative)
{
    MetricsRegistry *reg = metrics_registry_new();
    MetricsFamily *f = register_family(reg, METRICS_COUNTER, "t_total", NULL, 0, 0);
    MetricsCounter *c = metrics_counter_get(f, NULL, 0);

    metrics_counter_add(c, 2);
    metrics_counter_add(c, -1);
    metrics_counter_add(c, NAN);
    cr_assert_eq(c->value, 2);
    metrics_registry_free(reg);
}

Test(metrics, registration_rejects_bad_options)
{
    MetricsRegistry *reg = metrics_registry_new();
    static const char *const le[] = {"le"};
    static const char *const reserved[] = {"__name"};
    static const char *const dup[] = {"a", "a"};
    static const char *const bad_label[] = {"1a"};
    static const double unsorted[] = {1, 0.5};
    static const double with_inf[] = {1, INFINITY};
    static const double one[] = {1};
    MetricsFamilyOptions cases[] = {
        {METRICS_COUNTER, "bad-name", "h", NULL, 0, 0, NULL, 0},
        {METRICS_COUNTER, "9starts_with_digit", "h", NULL, 0, 0, NULL, 0},
        {METRICS_COUNTER, "", "h", NULL, 0, 0, NULL, 0},
        {METRICS_COUNTER, "t_help", "two\nlines", NULL, 0, 0, NULL, 0},
        {METRICS_COUNTER, "t_reserved", "h", reserved, 1, 0, NULL, 0},
        {METRICS_COUNTER, "t_dup", "h", dup, 2, 0, NULL, 0},
        {METRICS_COUNTER, "t_bad_label", "h", bad_label, 1, 0, NULL, 0},
        {METRICS_COUNTER, "t_buckets_on_counter", "h", NULL, 0, 0, one, 1},
        {METRICS_HISTOGRAM, "t_le", "h", le, 1, 0, one, 1},
        {METRICS_HISTOGRAM, "t_unsorted", "h", NULL, 0, 0, unsorted, 2},
        {METRICS_HISTOGRAM, "t_inf", "h", NULL, 0, 0, with_inf, 2},
        {METRICS_HISTOGRAM, "t_no_buckets", "h", NULL, 0, 0, NULL, 0},
        {METRICS_COUNTER, "t_labels", "h", NULL, METRICS_LABELS_MAX + 1, 0, NULL, 0},
    };
    MetricsFamilyOptions ok = {METRICS_COUNTER, "ns:t_ok_total", "h", NULL, 0, 0, NULL, 0};
    MetricsFamily *f = NULL;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cr_assert_eq(metrics_register(reg, &cases[i], &f), -EINVAL, "case %zu (%s)", i,
                     cases[i].name);
        cr_assert_null(f, "output untouched on failure, case %zu", i);
    }
    cr_assert_eq(metrics_register(reg, &ok, &f), 0);
    cr_assert_eq(metrics_register(reg, &ok, &f), -EEXIST);
    metrics_registry_free(reg);
}

Test(metrics, format_double)
{
    static const struct {
        double value;
        const char *text;
    } cases[] = {
        {0, "0"},
        {42, "42"},
        {-3, "-3"},
        {0.1, "0.1"},
        {0.0025, "0.0025"},
        {1e-7, "1e-07"},
        {1e300, "1e+300"},
        {INFINITY, "+Inf"},
        {-INFINITY, "-Inf"},
        {NAN, "NaN"},
        {123456.789, "123456.789"},
        {0.1 + 0.2, "0.30000000000000004"},
    };
    char out[32];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        metrics_format_double(out, cases[i].value);
        cr_assert_str_eq(out, cases[i].text);
    }
}

Test(metrics, process_metrics_plausible)
{
    MetricsRegistry *reg = metrics_registry_new();
    double start = 0, open_fds = 0, rss = 0, max_fds = 0;
    char *text, *p;

    cr_assert_eq(metrics_process_register(reg), 0);
    cr_assert_eq(metrics_process_register(reg), -EEXIST);
    text = render(reg);
    p = strstr(text, "\nprocess_start_time_seconds ");
    cr_assert_not_null(p, "%s", text);
    start = strtod(p + strlen("\nprocess_start_time_seconds "), NULL);
    cr_assert(fabs(start - (double)time(NULL)) < 3600, "start time %f", start);
    p = strstr(text, "\nprocess_open_fds ");
    cr_assert_not_null(p);
    open_fds = strtod(p + strlen("\nprocess_open_fds "), NULL);
    cr_assert_geq(open_fds, 3);
    p = strstr(text, "\nprocess_resident_memory_bytes ");
    cr_assert_not_null(p);
    rss = strtod(p + strlen("\nprocess_resident_memory_bytes "), NULL);
    cr_assert_gt(rss, 100000);
    p = strstr(text, "\nprocess_max_fds ");
    cr_assert_not_null(p);
    max_fds = strtod(p + strlen("\nprocess_max_fds "), NULL);
    cr_assert_geq(max_fds, open_fds);
    cr_assert(strstr(text, "# TYPE process_cpu_seconds_total counter\n"));
    cr_assert(strstr(text, "\nprocess_virtual_memory_bytes "));
    free(text);
    metrics_registry_free(reg);
}

Test(metrics, product_families_registered)
{
    static const char *const names[] = {
        "snakepit_requests_total",
        "snakepit_request_duration_seconds",
        "snakepit_queue_wait_seconds",
        "snakepit_workers",
        "snakepit_worker_restarts_total",
        "snakepit_queue_depth",
        "snakepit_sessions",
        "snakepit_peers",
        "snakepit_telemetry_dropped_total",
        "snakepit_store_up",
        "snakepit_heartbeat_missed_total",
        "snakepit_info",
        "snakepit_metrics_series_overflow_total",
        "process_cpu_seconds_total",
    };
    MetricsRegistry *reg = metrics_registry_new();
    MetricsProduct m;
    char needle[128];
    char *text;

    cr_assert_eq(metrics_product_register(reg, "0.1.0", &m), 0);
    metrics_gauge_set(m.peers, 2);
    metrics_counter_inc(m.telemetry_dropped_total);
    text = render(reg);
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(needle, sizeof(needle), "# TYPE %s ", names[i]);
        cr_assert(strstr(text, needle), "missing %s", names[i]);
    }
    cr_assert(strstr(text, "\nsnakepit_info{version=\"0.1.0\"} 1\n"), "%s", text);
    cr_assert(strstr(text, "\nsnakepit_peers 2\n"));
    cr_assert(strstr(text, "\nsnakepit_telemetry_dropped_total 1\n"));
    free(text);
    metrics_registry_free(reg);
}

Test(metrics, json_string_escaping)
{
    TextBuffer buf = TEXT_BUFFER_INIT;

    cr_assert_eq(text_buffer_append_json_string(&buf, "a\"b\\c\n\x01\xff\xc3\xa9"), 0);
    cr_assert_str_eq(buf.data, "a\\\"b\\\\c\\n\\u0001\xef\xbf\xbd\xc3\xa9");
    text_buffer_free(&buf);
}

Test(metrics, many_series_survive_hash_growth)
{
    enum { SERIES = 3000 };
    static MetricsCounter *handles[SERIES];
    MetricsRegistry *reg = metrics_registry_new();
    MetricsFamily *f = register_family(reg, METRICS_COUNTER, "t_total", pool_command, 2, SERIES);
    char command[32];

    for (int i = 0; i < SERIES; i++) {
        snprintf(command, sizeof(command), "cmd%d", i);
        handles[i] = metrics_counter_get(f, METRICS_LABELS("p", command));
        metrics_counter_add(handles[i], i);
    }
    cr_assert_eq(metrics_family_series_count(f), SERIES);
    cr_assert_eq(metrics_family_overflow_count(f), 0);
    for (int i = 0; i < SERIES; i++) {
        snprintf(command, sizeof(command), "cmd%d", i);
        cr_assert_eq(metrics_counter_get(f, METRICS_LABELS("p", command)), handles[i], "%s",
                     command);
        cr_assert_eq(handles[i]->value, i);
    }
    metrics_registry_free(reg);
}

static double sample_value(MetricsRegistry *reg, const char *name)
{
    char needle[128];
    double value;
    char *text = render(reg);
    char *p;

    snprintf(needle, sizeof(needle), "\n%s ", name);
    p = strstr(text, needle);
    cr_assert_not_null(p, "no sample %s", name);
    value = strtod(p + strlen(needle), NULL);
    free(text);
    return value;
}

Test(metrics, open_fds_follows_process)
{
    MetricsRegistry *reg = metrics_registry_new();
    int fds[10];
    double before, during, after;

    cr_assert_eq(metrics_process_register(reg), 0);
    before = sample_value(reg, "process_open_fds");
    for (int i = 0; i < 10; i++) {
        fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
        cr_assert_geq(fds[i], 0);
    }
    during = sample_value(reg, "process_open_fds");
    for (int i = 0; i < 10; i++) {
        close(fds[i]);
    }
    after = sample_value(reg, "process_open_fds");
    cr_assert_eq(during, before + 10);
    cr_assert_eq(after, before);
    metrics_registry_free(reg);
}
