/* SPDX-License-Identifier: Apache-2.0 */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "telemetry.h"

#define RECORD_MAX 64

typedef struct {
    size_t count;
    char names[RECORD_MAX][128]; /* parts joined with '.' */
    int64_t first_int[RECORD_MAX];
    int result; /* what the sink returns */
    Telemetry *telemetry;
    TelemetrySubscriber *self;
    bool unsubscribe_self;
} Recorder;

static int record_sink(const TelemetryEvent *event, void *userdata)
{
    Recorder *rec = userdata;
    char *out;

    if (rec->result == -EAGAIN) {
        return -EAGAIN;
    }
    cr_assert_lt(rec->count, RECORD_MAX);
    out = rec->names[rec->count];
    out[0] = '\0';
    for (size_t i = 0; i < event->name.n_parts; i++) {
        strcat(out, i ? "." : "");
        strcat(out, event->name.parts[i]);
    }
    rec->first_int[rec->count] =
        event->n_measurements > 0 && event->measurements[0].type == TELEMETRY_VALUE_INT
            ? event->measurements[0].v.i
            : -1;
    rec->count++;
    if (rec->unsubscribe_self) {
        telemetry_unsubscribe(rec->telemetry, rec->self);
    }
    return rec->result;
}

static void emit_simple(Telemetry *t, TelemetryName name, int64_t n)
{
    TelemetryField m[] = {TELEMETRY_INT("n", n)};

    cr_assert_eq(telemetry_emit(t, &name, m, 1, NULL, 0), 0);
}

Test(telemetry, prefix_matching)
{
    TelemetryName worker[] = {TELEMETRY_NAME("snakepit", "worker")};
    TelemetryName snakepit[] = {TELEMETRY_NAME("snakepit")};
    TelemetryName stop_or_full[] = {TELEMETRY_NAME("snakepit", "request", "stop"),
                                    TELEMETRY_NAME("snakepit", "queue", "full")};
    Recorder a = {0}, b = {0}, all = {0}, c = {0};
    TelemetrySubscriber *sub;
    Telemetry *t;

    cr_assert_eq(telemetry_new(NULL, NULL, &t), 0);
    cr_assert_eq(telemetry_subscribe(t, worker, 1, 0, record_sink, &a, &sub), 0);
    cr_assert_eq(telemetry_subscribe(t, snakepit, 1, 0, record_sink, &b, &sub), 0);
    cr_assert_eq(telemetry_subscribe(t, NULL, 0, 0, record_sink, &all, &sub), 0);
    cr_assert_eq(telemetry_subscribe(t, stop_or_full, 2, 0, record_sink, &c, &sub), 0);

    emit_simple(t, TELEMETRY_NAME("snakepit", "worker", "crashed"), 1);
    emit_simple(t, TELEMETRY_NAME("snakepit", "request", "stop"), 2);
    emit_simple(t, TELEMETRY_NAME("snakepit", "request", "start"), 3);
    emit_simple(t, TELEMETRY_NAME("snakepit", "queue", "full"), 4);
    emit_simple(t, TELEMETRY_NAME("snakepit", "workers"), 5); /* "workers" is not "worker" */
    emit_simple(t, TELEMETRY_NAME("other", "worker"), 6);
    telemetry_dispatch(t);

    cr_assert_eq(a.count, 1);
    cr_assert_str_eq(a.names[0], "snakepit.worker.crashed");
    cr_assert_eq(b.count, 5);
    cr_assert_eq(all.count, 6);
    cr_assert_str_eq(all.names[5], "other.worker");
    cr_assert_eq(c.count, 2);
    cr_assert_str_eq(c.names[0], "snakepit.request.stop");
    cr_assert_str_eq(c.names[1], "snakepit.queue.full");
    telemetry_free(t);
}

Test(telemetry, name_has_prefix)
{
    TelemetryName name = TELEMETRY_NAME("snakepit", "worker", "started");
    TelemetryName exact = TELEMETRY_NAME("snakepit", "worker", "started");
    TelemetryName longer = TELEMETRY_NAME("snakepit", "worker", "started", "x");
    TelemetryName empty = {0};

    cr_assert(telemetry_name_has_prefix(&name, &exact));
    cr_assert(telemetry_name_has_prefix(&name, &empty));
    cr_assert_not(telemetry_name_has_prefix(&name, &longer));
}

Test(telemetry, queue_drops_at_limit_plus_one)
{
    MetricsRegistry *reg = metrics_registry_new();
    MetricsFamilyOptions options = {
        .type = METRICS_COUNTER, .name = "t_dropped_total", .help = "h"};
    Recorder slow = {0}, fast = {0};
    TelemetrySubscriber *slow_sub, *fast_sub;
    MetricsCounter *dropped;
    MetricsFamily *family;
    Telemetry *t;

    cr_assert_eq(metrics_register(reg, &options, &family), 0);
    dropped = metrics_counter_get(family, NULL, 0);
    cr_assert_eq(telemetry_new(NULL, dropped, &t), 0);
    cr_assert_eq(telemetry_subscribe(t, NULL, 0, 4, record_sink, &slow, &slow_sub), 0);
    cr_assert_eq(telemetry_subscribe(t, NULL, 0, 5, record_sink, &fast, &fast_sub), 0);

    for (int i = 0; i < 4; i++) {
        emit_simple(t, TELEMETRY_NAME("snakepit", "request", "start"), i);
    }
    cr_assert_eq(telemetry_subscriber_queued(slow_sub), 4);
    cr_assert_eq(telemetry_subscriber_dropped(slow_sub), 0);
    emit_simple(t, TELEMETRY_NAME("snakepit", "request", "start"), 4);
    cr_assert_eq(telemetry_subscriber_queued(slow_sub), 4);
    cr_assert_eq(telemetry_subscriber_dropped(slow_sub), 1);
    cr_assert_eq(telemetry_subscriber_queued(fast_sub), 5, "the other queue is not affected");
    cr_assert_eq(telemetry_subscriber_dropped(fast_sub), 0);
    cr_assert_eq(telemetry_dropped_total(t), 1);
    cr_assert_eq(dropped->value, 1);

    telemetry_dispatch(t);
    cr_assert_eq(slow.count, 4);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(slow.first_int[i], i, "events keep their order, the newest is dropped");
    }
    cr_assert_eq(fast.count, 5);
    cr_assert_eq(telemetry_subscriber_queued(slow_sub), 0);
    telemetry_free(t);
    metrics_registry_free(reg);
}

Test(telemetry, paused_sink_keeps_events)
{
    Recorder rec = {.result = -EAGAIN};
    TelemetrySubscriber *sub;
    Telemetry *t;

    cr_assert_eq(telemetry_new(NULL, NULL, &t), 0);
    cr_assert_eq(telemetry_subscribe(t, NULL, 0, 2, record_sink, &rec, &sub), 0);
    emit_simple(t, TELEMETRY_NAME("snakepit", "a"), 1);
    emit_simple(t, TELEMETRY_NAME("snakepit", "b"), 2);
    telemetry_dispatch(t);
    cr_assert_eq(telemetry_subscriber_queued(sub), 2);
    emit_simple(t, TELEMETRY_NAME("snakepit", "c"), 3);
    cr_assert_eq(telemetry_subscriber_dropped(sub), 1);

    rec.result = 0;
    telemetry_dispatch(t);
    cr_assert_eq(rec.count, 0, "a paused subscriber waits for resume");
    telemetry_subscriber_resume(sub);
    telemetry_dispatch(t);
    cr_assert_eq(rec.count, 2);
    cr_assert_str_eq(rec.names[0], "snakepit.a");
    cr_assert_str_eq(rec.names[1], "snakepit.b");
    telemetry_free(t);
}

Test(telemetry, sink_error_counts_failed)
{
    Recorder rec = {.result = -EPIPE};
    TelemetrySubscriber *sub;
    Telemetry *t;

    cr_assert_eq(telemetry_new(NULL, NULL, &t), 0);
    cr_assert_eq(telemetry_subscribe(t, NULL, 0, 0, record_sink, &rec, &sub), 0);
    emit_simple(t, TELEMETRY_NAME("snakepit", "a"), 1);
    emit_simple(t, TELEMETRY_NAME("snakepit", "b"), 2);
    telemetry_dispatch(t);
    cr_assert_eq(rec.count, 2);
    cr_assert_eq(telemetry_subscriber_failed(sub), 2);
    cr_assert_eq(telemetry_subscriber_queued(sub), 0);
    telemetry_free(t);
}

Test(telemetry, unsubscribe_inside_sink)
{
    Recorder rec = {.unsubscribe_self = true};
    Recorder other = {0};
    TelemetrySubscriber *sub;
    Telemetry *t;

    cr_assert_eq(telemetry_new(NULL, NULL, &t), 0);
    rec.telemetry = t;
    cr_assert_eq(telemetry_subscribe(t, NULL, 0, 0, record_sink, &rec, &rec.self), 0);
    cr_assert_eq(telemetry_subscribe(t, NULL, 0, 0, record_sink, &other, &sub), 0);
    emit_simple(t, TELEMETRY_NAME("snakepit", "a"), 1);
    emit_simple(t, TELEMETRY_NAME("snakepit", "b"), 2);
    telemetry_dispatch(t);
    cr_assert_eq(rec.count, 1, "no delivery after unsubscribing");
    cr_assert_eq(other.count, 2);
    cr_assert_eq(telemetry_subscriber_count(t), 1);
    emit_simple(t, TELEMETRY_NAME("snakepit", "c"), 3);
    telemetry_dispatch(t);
    cr_assert_eq(rec.count, 1);
    cr_assert_eq(other.count, 3);
    telemetry_unsubscribe(t, sub);
    cr_assert_eq(telemetry_subscriber_count(t), 0);
    telemetry_free(t);
}

Test(telemetry, emit_rejects_malformed_events)
{
    char long_atom[TELEMETRY_ATOM_CHARS_MAX * 2 + 3];
    TelemetryName name = TELEMETRY_NAME("snakepit", "a");
    TelemetryName empty = {0};
    TelemetryName too_long = {.n_parts = TELEMETRY_NAME_PARTS_MAX + 1};
    TelemetryName empty_part = TELEMETRY_NAME("snakepit", "");
    TelemetryField string_measurement[] = {TELEMETRY_STRING("x", "1")};
    TelemetryField duplicate[] = {TELEMETRY_INT("x", 1), TELEMETRY_BOOL("x", true)};
    TelemetryField long_key[] = {TELEMETRY_INT(long_atom, 1)};
    TelemetryField null_string[] = {TELEMETRY_STRING("s", NULL)};
    TelemetryField many[TELEMETRY_FIELDS_MAX + 1];
    Recorder rec = {0};
    TelemetrySubscriber *sub;
    Telemetry *t;

    cr_assert_eq(telemetry_new(NULL, NULL, &t), 0);
    cr_assert_eq(telemetry_subscribe(t, NULL, 0, 0, record_sink, &rec, &sub), 0);
    memset(long_atom, 0, sizeof(long_atom));
    /* 256 two-byte characters: one past the atom limit. */
    for (int i = 0; i < TELEMETRY_ATOM_CHARS_MAX + 1; i++) {
        memcpy(long_atom + 2 * i, "\xd0\xb6", 2);
    }
    for (size_t i = 0; i < TELEMETRY_FIELDS_MAX + 1; i++) {
        many[i] = (TelemetryField)TELEMETRY_INT("k", (int64_t)i);
    }

    cr_assert_eq(telemetry_emit(t, &empty, NULL, 0, NULL, 0), -EINVAL);
    cr_assert_eq(telemetry_emit(t, &too_long, NULL, 0, NULL, 0), -EINVAL);
    cr_assert_eq(telemetry_emit(t, &empty_part, NULL, 0, NULL, 0), -EINVAL);
    cr_assert_eq(telemetry_emit(t, &name, string_measurement, 1, NULL, 0), -EINVAL);
    cr_assert_eq(telemetry_emit(t, &name, NULL, 0, duplicate, 2), -EINVAL);
    cr_assert_eq(telemetry_emit(t, &name, long_key, 1, NULL, 0), -EINVAL);
    cr_assert_eq(telemetry_emit(t, &name, NULL, 0, null_string, 1), -EINVAL);
    cr_assert_eq(telemetry_emit(t, &name, NULL, 0, many, TELEMETRY_FIELDS_MAX + 1), -EINVAL);
    cr_assert_eq(telemetry_subscriber_queued(sub), 0);

    /* 255 characters is the limit itself and passes. */
    long_atom[2 * TELEMETRY_ATOM_CHARS_MAX] = '\0';
    cr_assert_eq(telemetry_emit(t, &name, long_key, 1, NULL, 0), 0);
    cr_assert_eq(telemetry_subscriber_queued(sub), 1);
    telemetry_free(t);
}

Test(telemetry, subscribe_limits)
{
    TelemetryName prefixes[TELEMETRY_PREFIXES_MAX + 1];
    TelemetryName bad = TELEMETRY_NAME("snakepit", "");
    TelemetrySubscriber *sub = NULL;
    Recorder rec = {0};
    Telemetry *t;

    for (size_t i = 0; i < TELEMETRY_PREFIXES_MAX + 1; i++) {
        prefixes[i] = TELEMETRY_NAME("snakepit");
    }
    cr_assert_eq(telemetry_new(NULL, NULL, &t), 0);
    cr_assert_eq(
        telemetry_subscribe(t, prefixes, TELEMETRY_PREFIXES_MAX + 1, 0, record_sink, &rec, &sub),
        -EINVAL);
    cr_assert_eq(telemetry_subscribe(t, &bad, 1, 0, record_sink, &rec, &sub), -EINVAL);
    cr_assert_null(sub);
    for (size_t i = 0; i < TELEMETRY_SUBSCRIBERS_MAX; i++) {
        cr_assert_eq(
            telemetry_subscribe(t, prefixes, TELEMETRY_PREFIXES_MAX, 1, record_sink, &rec, &sub),
            0);
    }
    cr_assert_eq(telemetry_subscribe(t, NULL, 0, 1, record_sink, &rec, &sub), -EMFILE);
    cr_assert_eq(telemetry_subscriber_count(t), TELEMETRY_SUBSCRIBERS_MAX);
    telemetry_free(t);
}

typedef struct {
    char pool[64];
    char message[TELEMETRY_STRING_MAX + 8];
    size_t message_len;
} CopySink;

static int copy_sink(const TelemetryEvent *event, void *userdata)
{
    CopySink *out = userdata;

    cr_assert_eq(event->n_metadata, 2);
    snprintf(out->pool, sizeof(out->pool), "%s", event->metadata[0].v.s);
    out->message_len = strlen(event->metadata[1].v.s);
    memcpy(out->message, event->metadata[1].v.s, out->message_len + 1);
    return 0;
}

Test(telemetry, event_is_copied_and_truncated)
{
    static char message[TELEMETRY_STRING_MAX + 2];
    TelemetryName name = TELEMETRY_NAME("snakepit", "worker", "crashed");
    char pool[] = "default";
    TelemetrySubscriber *sub;
    CopySink out = {0};
    Telemetry *t;

    /* An 'a' then two-byte characters, so byte TELEMETRY_STRING_MAX starts no character. */
    message[0] = 'a';
    for (size_t i = 1; i + 1 < sizeof(message); i += 2) {
        memcpy(message + i, "\xc3\xa9", 2);
    }
    message[sizeof(message) - 1] = '\0';
    TelemetryField meta[] = {TELEMETRY_STRING("pool", pool), TELEMETRY_STRING("message", message)};

    cr_assert_eq(telemetry_new(NULL, NULL, &t), 0);
    cr_assert_eq(telemetry_subscribe(t, NULL, 0, 0, copy_sink, &out, &sub), 0);
    cr_assert_eq(telemetry_emit(t, &name, NULL, 0, meta, 2), 0);
    strcpy(pool, "changed");
    telemetry_dispatch(t);
    cr_assert_str_eq(out.pool, "default", "strings are copied at emit time");
    cr_assert_eq(out.message_len, TELEMETRY_STRING_MAX - 1, "cut before a partial character");
    cr_assert_eq(memcmp(out.message, message, out.message_len), 0);
    telemetry_free(t);
}

static void emit_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    emit_simple(w->data, TELEMETRY_NAME("snakepit", "node", "up"), 7);
}

Test(telemetry, loop_dispatches_after_callback)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    TelemetrySubscriber *sub;
    Recorder rec = {0};
    ev_timer timer;
    Telemetry *t;

    cr_assert_not_null(loop);
    cr_assert_eq(telemetry_new(loop, NULL, &t), 0);
    cr_assert_eq(telemetry_subscribe(t, NULL, 0, 0, record_sink, &rec, &sub), 0);
    ev_timer_init(&timer, emit_timer_cb, 0.01, 0);
    timer.data = t;
    ev_timer_start(loop, &timer);
    /*
     * The timer is the only active watcher, so the loop would end right after it fired. The
     * queued event holds the loop for one more iteration, in which the prepare watcher runs.
     */
    ev_run(loop, 0);
    cr_assert_eq(rec.count, 1);
    cr_assert_str_eq(rec.names[0], "snakepit.node.up");
    cr_assert_eq(rec.first_int[0], 7);
    telemetry_free(t);
    ev_loop_destroy(loop);
}

static void decode_atom(const char *buf, int *index, const char *expected)
{
    char atom[MAXATOMLEN_UTF8];
    erlang_char_encoding enc;

    cr_assert_eq(ei_decode_atom_as(buf, index, atom, sizeof(atom), ERLANG_UTF8, &enc, NULL), 0,
                 "expected atom %s", expected);
    cr_assert_str_eq(atom, expected);
}

Test(telemetry, encode_decodes_back)
{
    TelemetryName name = TELEMETRY_NAME("snakepit", "request", "stop");
    TelemetryField measurements[] = {
        TELEMETRY_INT("duration", -42),
        TELEMETRY_DOUBLE("ratio", 0.5),
        TELEMETRY_DOUBLE("bad", NAN),
        TELEMETRY_DOUBLE("big", -INFINITY),
    };
    TelemetryField metadata[] = {
        TELEMETRY_STRING("correlation_id", "req-1"),
        TELEMETRY_ATOM("status", "ok"),
        TELEMETRY_BOOL("retried", true),
        TELEMETRY_INT("worker_id", 3),
        TELEMETRY_ATOM("pool", "привет"),
    };
    TelemetryEvent event = {name, measurements, 4, metadata, 5};
    int index = 0, arity, type, size;
    char binary[16];
    long long value;
    long binary_len;
    double d;
    ei_x_buff x;

    cr_assert_eq(ei_x_new_with_version(&x), 0);
    cr_assert_eq(telemetry_event_encode(&x, &event), 0);
    cr_assert_eq(ei_decode_version(x.buff, &index, &arity), 0);
    cr_assert_eq(ei_decode_tuple_header(x.buff, &index, &arity), 0);
    cr_assert_eq(arity, 4);
    decode_atom(x.buff, &index, "snakepit_telemetry");

    cr_assert_eq(ei_decode_list_header(x.buff, &index, &arity), 0);
    cr_assert_eq(arity, 3);
    decode_atom(x.buff, &index, "snakepit");
    decode_atom(x.buff, &index, "request");
    decode_atom(x.buff, &index, "stop");
    cr_assert_eq(ei_decode_list_header(x.buff, &index, &arity), 0);
    cr_assert_eq(arity, 0, "a proper list");

    cr_assert_eq(ei_decode_map_header(x.buff, &index, &arity), 0);
    cr_assert_eq(arity, 4);
    decode_atom(x.buff, &index, "duration");
    cr_assert_eq(ei_decode_longlong(x.buff, &index, &value), 0);
    cr_assert_eq(value, -42);
    decode_atom(x.buff, &index, "ratio");
    cr_assert_eq(ei_decode_double(x.buff, &index, &d), 0);
    cr_assert_eq(d, 0.5);
    decode_atom(x.buff, &index, "bad");
    decode_atom(x.buff, &index, "nan");
    decode_atom(x.buff, &index, "big");
    decode_atom(x.buff, &index, "neg_infinity");

    cr_assert_eq(ei_decode_map_header(x.buff, &index, &arity), 0);
    cr_assert_eq(arity, 5);
    decode_atom(x.buff, &index, "correlation_id");
    cr_assert_eq(ei_get_type(x.buff, &index, &type, &size), 0);
    cr_assert_eq(type, ERL_BINARY_EXT);
    cr_assert_eq(size, 5);
    cr_assert_eq(ei_decode_binary(x.buff, &index, binary, &binary_len), 0);
    cr_assert_eq(binary_len, 5);
    cr_assert_eq(memcmp(binary, "req-1", 5), 0);
    decode_atom(x.buff, &index, "status");
    decode_atom(x.buff, &index, "ok");
    decode_atom(x.buff, &index, "retried");
    decode_atom(x.buff, &index, "true");
    decode_atom(x.buff, &index, "worker_id");
    cr_assert_eq(ei_decode_longlong(x.buff, &index, &value), 0);
    cr_assert_eq(value, 3);
    decode_atom(x.buff, &index, "pool");
    decode_atom(x.buff, &index, "привет");
    cr_assert_eq(index, x.index, "the whole buffer is one term");
    ei_x_free(&x);
}

Test(telemetry, encode_rejects_malformed_event)
{
    TelemetryField measurements[] = {TELEMETRY_ATOM("status", "ok")};
    TelemetryEvent event = {TELEMETRY_NAME("snakepit"), measurements, 1, NULL, 0};
    ei_x_buff x;

    cr_assert_eq(ei_x_new_with_version(&x), 0);
    cr_assert_eq(telemetry_event_encode(&x, &event), -EINVAL);
    ei_x_free(&x);
}

typedef struct {
    Telemetry *telemetry;
    size_t count;
} EchoSink;

/* A sink that emits a matching event for every event it receives. */
static int echo_sink(const TelemetryEvent *event, void *userdata)
{
    EchoSink *sink = userdata;

    sink->count++;
    emit_simple(sink->telemetry, TELEMETRY_NAME("snakepit", "echo"), (int64_t)sink->count);
    return 0;
}

Test(telemetry, sink_emitting_events_terminates)
{
    TelemetrySubscriber *sub;
    EchoSink sink = {0};
    Telemetry *t;

    cr_assert_eq(telemetry_new(NULL, NULL, &t), 0);
    sink.telemetry = t;
    cr_assert_eq(telemetry_subscribe(t, NULL, 0, 0, echo_sink, &sink, &sub), 0);
    emit_simple(t, TELEMETRY_NAME("snakepit", "first"), 0);
    telemetry_dispatch(t);
    cr_assert_eq(sink.count, 1, "events emitted by a sink wait for the next dispatch");
    cr_assert_eq(telemetry_subscriber_queued(sub), 1);
    telemetry_dispatch(t);
    cr_assert_eq(sink.count, 2);
    telemetry_free(t);
}

/* Decode the encoder's output with a real Erlang VM: binary_to_term must accept it. */
Test(telemetry, erlang_decodes_encoding)
{
    TelemetryName name = TELEMETRY_NAME("snakepit", "worker", "crashed");
    TelemetryField measurements[] = {TELEMETRY_INT("uptime_us", 1500000),
                                     TELEMETRY_DOUBLE("load", INFINITY)};
    TelemetryField metadata[] = {
        TELEMETRY_STRING("pool", "default"), TELEMETRY_INT("signal", 9),
        TELEMETRY_ATOM("reason", "killed"),  TELEMETRY_STRING("correlation_id", "c-1"),
        TELEMETRY_ATOM("node", "ноль@host"), TELEMETRY_BOOL("session_bound", false),
    };
    TelemetryEvent event = {name, measurements, 2, metadata, 6};
    char path[] = "/tmp/test_telemetry_XXXXXX";
    char command[512], output[1024] = {0};
    size_t n;
    ei_x_buff x;
    FILE *out;
    int fd;

    cr_assert_eq(ei_x_new_with_version(&x), 0);
    cr_assert_eq(telemetry_event_encode(&x, &event), 0);
    fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, x.buff, (size_t)x.index), x.index);
    close(fd);
    ei_x_free(&x);

    snprintf(command, sizeof(command),
             "erl -noshell -eval '{ok, B} = file:read_file(\"%s\"), "
             "{snakepit_telemetry, E, M, D} = binary_to_term(B), "
             "Node = list_to_atom([1085, 1086, 1083, 1100] ++ \"@host\"), "
             "Node = maps:get(node, D), "
             "io:format(\"~p ~p ~p ~p ~p ~p ~p ~p ~p~n\", [E, maps:get(uptime_us, M), "
             "maps:get(load, M), maps:get(pool, D), maps:get(signal, D), maps:get(reason, D), "
             "maps:get(correlation_id, D), maps:get(session_bound, D), "
             "map_size(D)]), halt().' 2>&1",
             path);
    out = popen(command, "r");
    cr_assert_not_null(out);
    n = fread(output, 1, sizeof(output) - 1, out);
    output[n] = '\0';
    cr_assert_eq(pclose(out), 0, "erl failed: %s", output);
    unlink(path);
    cr_assert_str_eq(output, "[snakepit,worker,crashed] 1500000 infinity <<\"default\">> 9 killed "
                             "<<\"c-1\">> false 6\n");
}
