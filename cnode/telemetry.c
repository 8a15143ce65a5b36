/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The telemetry event core: validation and one shared, reference-counted copy per emitted event,
 * a bounded ring of event pointers per subscriber, dispatch from ev_prepare, and the ETF encoder
 * of {snakepit_telemetry, Event, Measurements, Metadata}.
 */
#include "telemetry.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* One emitted event with its fields and strings in the same allocation. */
typedef struct {
    unsigned refs; /* queues that still hold it */
    TelemetryEvent event;
} QueuedEvent;

struct TelemetrySubscriber {
    Telemetry *owner;
    TelemetrySinkFn sink;
    void *userdata;
    TelemetryName prefixes[TELEMETRY_PREFIXES_MAX]; /* parts point into prefix_strings */
    size_t n_prefixes;
    char *prefix_strings;
    QueuedEvent **ring; /* queue_limit slots */
    size_t queue_limit;
    size_t head;
    size_t count;
    bool paused;
    bool removed; /* unsubscribed while a dispatch was running; freed after it */
    uint64_t dropped;
    uint64_t failed;
    TelemetrySubscriber *next;
};

struct Telemetry {
    struct ev_loop *loop;
    ev_prepare prepare;
    MetricsCounter *dropped_counter;
    TelemetrySubscriber *subscribers;
    size_t n_subscribers;
    bool dispatching;
    bool holding_loop; /* an ev_ref() taken for events waiting for the next dispatch */
    uint64_t dropped;
};

/*
 * Keep ev_run() going until the next prepare has delivered what was just queued. Without this,
 * events emitted in the last iteration before the loop runs out of watchers would never arrive.
 */
static void hold_loop(Telemetry *t)
{
    if (t->loop && !t->holding_loop) {
        ev_ref(t->loop);
        t->holding_loop = true;
    }
}

static void release_loop(Telemetry *t)
{
    if (t->holding_loop) {
        ev_unref(t->loop);
        t->holding_loop = false;
    }
}

static void prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    telemetry_dispatch(w->data);
}

int telemetry_new(struct ev_loop *loop, MetricsCounter *dropped_counter, Telemetry **out)
{
    Telemetry *t = calloc(1, sizeof(*t));

    if (!t) {
        return -ENOMEM;
    }
    t->loop = loop;
    t->dropped_counter = dropped_counter;
    if (loop) {
        ev_prepare_init(&t->prepare, prepare_cb);
        t->prepare.data = t;
        ev_prepare_start(loop, &t->prepare);
        /* An idle telemetry core must not keep ev_run() from returning. */
        ev_unref(loop);
    }
    *out = t;
    return 0;
}

static void event_unref(QueuedEvent *queued)
{
    if (--queued->refs == 0) {
        free(queued);
    }
}

static void subscriber_free(TelemetrySubscriber *sub)
{
    while (sub->count > 0) {
        event_unref(sub->ring[sub->head]);
        sub->head = (sub->head + 1) % sub->queue_limit;
        sub->count--;
    }
    free(sub->ring);
    free(sub->prefix_strings);
    free(sub);
}

void telemetry_free(Telemetry *t)
{
    if (!t) {
        return;
    }
    release_loop(t);
    if (t->loop) {
        ev_ref(t->loop);
        ev_prepare_stop(t->loop, &t->prepare);
    }
    while (t->subscribers) {
        TelemetrySubscriber *next = t->subscribers->next;

        subscriber_free(t->subscribers);
        t->subscribers = next;
    }
    free(t);
}

bool telemetry_name_has_prefix(const TelemetryName *name, const TelemetryName *prefix)
{
    if (prefix->n_parts > name->n_parts) {
        return false;
    }
    for (size_t i = 0; i < prefix->n_parts; i++) {
        if (strcmp(name->parts[i], prefix->parts[i]) != 0) {
            return false;
        }
    }
    return true;
}

static bool subscriber_matches(const TelemetrySubscriber *sub, const TelemetryName *name)
{
    if (sub->removed) {
        return false;
    }
    if (sub->n_prefixes == 0) {
        return true;
    }
    for (size_t i = 0; i < sub->n_prefixes; i++) {
        if (telemetry_name_has_prefix(name, &sub->prefixes[i])) {
            return true;
        }
    }
    return false;
}

/* Characters in a UTF-8 string: the bytes that do not continue a sequence. */
static size_t utf8_chars(const char *s)
{
    size_t n = 0;

    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        n += (*p & 0xc0) != 0x80;
    }
    return n;
}

static bool atom_is_valid(const char *s)
{
    return s && *s && utf8_chars(s) <= TELEMETRY_ATOM_CHARS_MAX;
}

static bool name_is_valid(const TelemetryName *name, bool allow_empty)
{
    if (name->n_parts > TELEMETRY_NAME_PARTS_MAX || (!allow_empty && name->n_parts == 0)) {
        return false;
    }
    for (size_t i = 0; i < name->n_parts; i++) {
        if (!atom_is_valid(name->parts[i])) {
            return false;
        }
    }
    return true;
}

static bool fields_are_valid(const TelemetryField *fields, size_t n, bool numbers_only)
{
    if (n > TELEMETRY_FIELDS_MAX || (n > 0 && !fields)) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        const TelemetryField *f = &fields[i];
        bool number = f->type == TELEMETRY_VALUE_INT || f->type == TELEMETRY_VALUE_DOUBLE;

        if (!atom_is_valid(f->key) || (numbers_only && !number)) {
            return false;
        }
        if (f->type == TELEMETRY_VALUE_STRING && !f->v.s) {
            return false;
        }
        if (f->type == TELEMETRY_VALUE_ATOM && !atom_is_valid(f->v.s)) {
            return false;
        }
        if (f->type > TELEMETRY_VALUE_BOOL) {
            return false;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(f->key, fields[j].key) == 0) {
                return false;
            }
        }
    }
    return true;
}

static bool event_is_valid(const TelemetryEvent *event)
{
    return name_is_valid(&event->name, false) &&
           fields_are_valid(event->measurements, event->n_measurements, true) &&
           fields_are_valid(event->metadata, event->n_metadata, false);
}

/* Bytes of `s` kept in a copy: all of it, or TELEMETRY_STRING_MAX cut at a character start. */
static size_t string_copy_len(const char *s)
{
    size_t len = strlen(s);

    if (len <= TELEMETRY_STRING_MAX) {
        return len;
    }
    len = TELEMETRY_STRING_MAX;
    while (len > 0 && ((unsigned char)s[len] & 0xc0) == 0x80) {
        len--;
    }
    return len;
}

/* A bump allocator over the string area of a QueuedEvent. */
static const char *copy_string(char **cursor, const char *s, size_t len)
{
    char *copy = *cursor;

    memcpy(copy, s, len);
    copy[len] = '\0';
    *cursor += len + 1;
    return copy;
}

static size_t fields_string_bytes(const TelemetryField *fields, size_t n)
{
    size_t bytes = 0;

    for (size_t i = 0; i < n; i++) {
        bytes += strlen(fields[i].key) + 1;
        if (fields[i].type == TELEMETRY_VALUE_STRING || fields[i].type == TELEMETRY_VALUE_ATOM) {
            bytes += string_copy_len(fields[i].v.s) + 1;
        }
    }
    return bytes;
}

static void copy_fields(TelemetryField *dst, const TelemetryField *src, size_t n, char **cursor)
{
    for (size_t i = 0; i < n; i++) {
        dst[i] = src[i];
        dst[i].key = copy_string(cursor, src[i].key, strlen(src[i].key));
        if (src[i].type == TELEMETRY_VALUE_STRING || src[i].type == TELEMETRY_VALUE_ATOM) {
            dst[i].v.s = copy_string(cursor, src[i].v.s, string_copy_len(src[i].v.s));
        }
    }
}

static QueuedEvent *event_copy(const TelemetryEvent *event)
{
    size_t n_fields = event->n_measurements + event->n_metadata;
    size_t size = sizeof(QueuedEvent) + n_fields * sizeof(TelemetryField);
    TelemetryField *fields;
    QueuedEvent *queued;
    char *cursor;

    for (size_t i = 0; i < event->name.n_parts; i++) {
        size += strlen(event->name.parts[i]) + 1;
    }
    size += fields_string_bytes(event->measurements, event->n_measurements);
    size += fields_string_bytes(event->metadata, event->n_metadata);
    queued = malloc(size);
    if (!queued) {
        return NULL;
    }
    queued->refs = 0;
    fields = (TelemetryField *)(queued + 1);
    cursor = (char *)(fields + n_fields);
    queued->event.name.n_parts = event->name.n_parts;
    for (size_t i = 0; i < event->name.n_parts; i++) {
        queued->event.name.parts[i] =
            copy_string(&cursor, event->name.parts[i], strlen(event->name.parts[i]));
    }
    copy_fields(fields, event->measurements, event->n_measurements, &cursor);
    copy_fields(fields + event->n_measurements, event->metadata, event->n_metadata, &cursor);
    queued->event.measurements = fields;
    queued->event.n_measurements = event->n_measurements;
    queued->event.metadata = fields + event->n_measurements;
    queued->event.n_metadata = event->n_metadata;
    return queued;
}

static void count_drop(Telemetry *t, TelemetrySubscriber *sub)
{
    sub->dropped++;
    t->dropped++;
    metrics_counter_inc(t->dropped_counter);
}

int telemetry_emit(Telemetry *t, const TelemetryName *name, const TelemetryField *measurements,
                   size_t n_measurements, const TelemetryField *metadata, size_t n_metadata)
{
    TelemetryEvent event = {
        .name = *name,
        .measurements = measurements,
        .n_measurements = n_measurements,
        .metadata = metadata,
        .n_metadata = n_metadata,
    };
    QueuedEvent *queued = NULL;
    bool out_of_memory = false;

    if (!event_is_valid(&event)) {
        return -EINVAL;
    }
    for (TelemetrySubscriber *sub = t->subscribers; sub; sub = sub->next) {
        if (!subscriber_matches(sub, name)) {
            continue;
        }
        if (sub->count == sub->queue_limit) {
            count_drop(t, sub);
            continue;
        }
        if (!queued) {
            queued = event_copy(&event);
        }
        if (!queued) {
            out_of_memory = true;
            count_drop(t, sub);
            continue;
        }
        queued->refs++;
        sub->ring[(sub->head + sub->count) % sub->queue_limit] = queued;
        sub->count++;
        if (!sub->paused) {
            hold_loop(t);
        }
    }
    return out_of_memory ? -ENOMEM : 0;
}

static int copy_prefixes(TelemetrySubscriber *sub, const TelemetryName *prefixes, size_t n)
{
    size_t bytes = 0;
    char *cursor;

    for (size_t i = 0; i < n; i++) {
        if (!name_is_valid(&prefixes[i], true)) {
            return -EINVAL;
        }
        for (size_t j = 0; j < prefixes[i].n_parts; j++) {
            bytes += strlen(prefixes[i].parts[j]) + 1;
        }
    }
    sub->prefix_strings = malloc(bytes ? bytes : 1);
    if (!sub->prefix_strings) {
        return -ENOMEM;
    }
    cursor = sub->prefix_strings;
    for (size_t i = 0; i < n; i++) {
        sub->prefixes[i].n_parts = prefixes[i].n_parts;
        for (size_t j = 0; j < prefixes[i].n_parts; j++) {
            const char *part = prefixes[i].parts[j];

            sub->prefixes[i].parts[j] = copy_string(&cursor, part, strlen(part));
        }
    }
    sub->n_prefixes = n;
    return 0;
}

int telemetry_subscribe(Telemetry *t, const TelemetryName *prefixes, size_t n_prefixes,
                        size_t queue_limit, TelemetrySinkFn sink, void *userdata,
                        TelemetrySubscriber **out)
{
    TelemetrySubscriber *sub, **tail;
    int r;

    if (n_prefixes > TELEMETRY_PREFIXES_MAX || !sink) {
        return -EINVAL;
    }
    if (t->n_subscribers >= TELEMETRY_SUBSCRIBERS_MAX) {
        return -EMFILE;
    }
    sub = calloc(1, sizeof(*sub));
    if (!sub) {
        return -ENOMEM;
    }
    sub->queue_limit = queue_limit ? queue_limit : TELEMETRY_QUEUE_LIMIT_DEFAULT;
    sub->ring = calloc(sub->queue_limit, sizeof(*sub->ring));
    if (!sub->ring) {
        r = -ENOMEM;
        goto fail;
    }
    r = copy_prefixes(sub, prefixes, n_prefixes);
    if (r < 0) {
        goto fail;
    }
    sub->owner = t;
    sub->sink = sink;
    sub->userdata = userdata;
    /* Append, so subscribers receive each event in subscription order. */
    for (tail = &t->subscribers; *tail; tail = &(*tail)->next) {
    }
    *tail = sub;
    t->n_subscribers++;
    *out = sub;
    return 0;

fail:
    subscriber_free(sub);
    return r;
}

static void unlink_subscriber(Telemetry *t, TelemetrySubscriber *sub)
{
    for (TelemetrySubscriber **p = &t->subscribers; *p; p = &(*p)->next) {
        if (*p == sub) {
            *p = sub->next;
            subscriber_free(sub);
            return;
        }
    }
}

void telemetry_unsubscribe(Telemetry *t, TelemetrySubscriber *sub)
{
    if (!sub || sub->removed) {
        return;
    }
    t->n_subscribers--;
    if (t->dispatching) {
        sub->removed = true;
        return;
    }
    unlink_subscriber(t, sub);
}

void telemetry_subscriber_resume(TelemetrySubscriber *sub)
{
    sub->paused = false;
    if (sub->count > 0) {
        hold_loop(sub->owner);
    }
}

static void subscriber_drain(TelemetrySubscriber *sub)
{
    /* Events that sinks emit while we drain wait for the next dispatch, so this loop ends. */
    size_t budget = sub->count;

    while (budget-- > 0 && sub->count > 0 && !sub->paused && !sub->removed) {
        QueuedEvent *queued = sub->ring[sub->head];
        int r = sub->sink(&queued->event, sub->userdata);

        if (r == -EAGAIN) {
            sub->paused = true;
            break;
        }
        if (r < 0) {
            sub->failed++;
        }
        /* The sink may have unsubscribed itself: the ring stays valid until dispatch ends. */
        sub->ring[sub->head] = NULL;
        sub->head = (sub->head + 1) % sub->queue_limit;
        sub->count--;
        event_unref(queued);
    }
}

void telemetry_dispatch(Telemetry *t)
{
    TelemetrySubscriber **p;

    if (t->dispatching) {
        return;
    }
    t->dispatching = true;
    release_loop(t);
    for (TelemetrySubscriber *sub = t->subscribers; sub; sub = sub->next) {
        subscriber_drain(sub);
    }
    t->dispatching = false;
    p = &t->subscribers;
    while (*p) {
        TelemetrySubscriber *sub = *p;

        if (sub->removed) {
            *p = sub->next;
            subscriber_free(sub);
        } else {
            p = &sub->next;
        }
    }
}

size_t telemetry_subscriber_count(const Telemetry *t)
{
    return t->n_subscribers;
}

size_t telemetry_subscriber_queued(const TelemetrySubscriber *sub)
{
    return sub->count;
}

uint64_t telemetry_subscriber_dropped(const TelemetrySubscriber *sub)
{
    return sub->dropped;
}

uint64_t telemetry_subscriber_failed(const TelemetrySubscriber *sub)
{
    return sub->failed;
}

uint64_t telemetry_dropped_total(const Telemetry *t)
{
    return t->dropped;
}

static int encode_atom(ei_x_buff *x, const char *s)
{
    return ei_x_encode_atom_len_as(x, s, (int)strlen(s), ERLANG_UTF8, ERLANG_UTF8);
}

static int encode_double(ei_x_buff *x, double d)
{
    if (isnan(d)) {
        return encode_atom(x, "nan");
    }
    if (isinf(d)) {
        return encode_atom(x, d > 0 ? "infinity" : "neg_infinity");
    }
    return ei_x_encode_double(x, d);
}

static int encode_value(ei_x_buff *x, const TelemetryField *f)
{
    switch (f->type) {
    case TELEMETRY_VALUE_INT:
        return ei_x_encode_longlong(x, f->v.i);
    case TELEMETRY_VALUE_DOUBLE:
        return encode_double(x, f->v.d);
    case TELEMETRY_VALUE_STRING:
        return ei_x_encode_binary(x, f->v.s, (long)string_copy_len(f->v.s));
    case TELEMETRY_VALUE_ATOM:
        return encode_atom(x, f->v.s);
    case TELEMETRY_VALUE_BOOL:
        return ei_x_encode_boolean(x, f->v.b);
    }
    return -1;
}

static int encode_map(ei_x_buff *x, const TelemetryField *fields, size_t n)
{
    if (ei_x_encode_map_header(x, (long)n) < 0) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (encode_atom(x, fields[i].key) < 0 || encode_value(x, &fields[i]) < 0) {
            return -1;
        }
    }
    return 0;
}

int telemetry_event_encode(ei_x_buff *x, const TelemetryEvent *event)
{
    if (!event_is_valid(event)) {
        return -EINVAL;
    }
    /* Input is validated above, so a failure of ei_x_* here can only be a failed realloc. */
    if (ei_x_encode_tuple_header(x, 4) < 0 || encode_atom(x, "snakepit_telemetry") < 0 ||
        ei_x_encode_list_header(x, (long)event->name.n_parts) < 0) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < event->name.n_parts; i++) {
        if (encode_atom(x, event->name.parts[i]) < 0) {
            return -ENOMEM;
        }
    }
    if (ei_x_encode_empty_list(x) < 0 ||
        encode_map(x, event->measurements, event->n_measurements) < 0 ||
        encode_map(x, event->metadata, event->n_metadata) < 0) {
        return -ENOMEM;
    }
    return 0;
}
