/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Telemetry events: a name such as ["snakepit", "worker", "crashed"], numeric measurements and
 * typed metadata, delivered to subscribers whose prefixes match the name.
 *
 * telemetry_emit() copies the event once into the queue of every matching subscriber and returns
 * at once. The queues are drained from an ev_prepare watcher on the daemon's loop, so a sink runs
 * after the emitting callback has returned, never inside it. Each queue has a limit: an event
 * that finds a queue full is dropped for that subscriber and counted (per subscriber, in total,
 * and in the counter given at creation, snakepit_telemetry_dropped_total), so a slow sink costs
 * events, never unbounded memory.
 *
 * A sink returns 0 when it took the event, or another negative errno to drop it (counted as
 * failed). It returns -EAGAIN to keep the event and pause the subscriber until
 * telemetry_subscriber_resume(). A BEAM sink does that when its peer's send buffer is full, and
 * resumes the subscriber when the socket drains.
 * The event passed to a sink is borrowed for the duration of the call.
 *
 * Metadata key "correlation_id" carries the id of the request an event belongs to.
 * Not thread-safe: everything runs on the loop's thread.
 */
#pragma once

#include <ei.h>
#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics.h"

#define TELEMETRY_NAME_PARTS_MAX 6
#define TELEMETRY_FIELDS_MAX 16      /* measurements, and separately metadata, per event */
#define TELEMETRY_ATOM_CHARS_MAX 255 /* Erlang's atom length limit, in characters */
/* Metadata strings longer than this many bytes are cut at a UTF-8 character boundary. */
#define TELEMETRY_STRING_MAX 4096
#define TELEMETRY_QUEUE_LIMIT_DEFAULT 1024
#define TELEMETRY_SUBSCRIBERS_MAX 256
#define TELEMETRY_PREFIXES_MAX 16

typedef struct Telemetry Telemetry;
typedef struct TelemetrySubscriber TelemetrySubscriber;

/* An event name, or a subscription prefix (zero parts match every event). Parts are atoms. */
typedef struct {
    size_t n_parts;
    const char *parts[TELEMETRY_NAME_PARTS_MAX];
} TelemetryName;

#define TELEMETRY_NAME(...)                                                                        \
    ((TelemetryName){                                                                              \
        .n_parts = sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *),                   \
        .parts = {__VA_ARGS__},                                                                    \
    })

typedef enum {
    TELEMETRY_VALUE_INT,
    TELEMETRY_VALUE_DOUBLE,
    TELEMETRY_VALUE_STRING, /* a binary in Erlang */
    TELEMETRY_VALUE_ATOM,
    TELEMETRY_VALUE_BOOL,
} TelemetryValueType;

/* One (key, value) pair of measurements (INT or DOUBLE only) or metadata. Keys are atoms. */
typedef struct {
    const char *key;
    TelemetryValueType type;
    union {
        int64_t i;
        double d;
        const char *s; /* STRING and ATOM */
        bool b;
    } v;
} TelemetryField;

#define TELEMETRY_INT(k, x)                                                                        \
    {                                                                                              \
        .key = (k), .type = TELEMETRY_VALUE_INT, .v.i = (x)                                        \
    }
#define TELEMETRY_DOUBLE(k, x)                                                                     \
    {                                                                                              \
        .key = (k), .type = TELEMETRY_VALUE_DOUBLE, .v.d = (x)                                     \
    }
#define TELEMETRY_STRING(k, x)                                                                     \
    {                                                                                              \
        .key = (k), .type = TELEMETRY_VALUE_STRING, .v.s = (x)                                     \
    }
#define TELEMETRY_ATOM(k, x)                                                                       \
    {                                                                                              \
        .key = (k), .type = TELEMETRY_VALUE_ATOM, .v.s = (x)                                       \
    }
#define TELEMETRY_BOOL(k, x)                                                                       \
    {                                                                                              \
        .key = (k), .type = TELEMETRY_VALUE_BOOL, .v.b = (x)                                       \
    }

typedef struct {
    TelemetryName name;
    const TelemetryField *measurements;
    size_t n_measurements;
    const TelemetryField *metadata;
    size_t n_metadata;
} TelemetryEvent;

/* See the file comment for the meaning of the return value. */
typedef int (*TelemetrySinkFn)(const TelemetryEvent *event, void *userdata);

/*
 * Create the event core. With a `loop`, queues drain from an ev_prepare watcher, which keeps
 * ev_run() from returning only while events wait for delivery. With NULL, the owner calls
 * telemetry_dispatch(). `dropped_counter`
 * (borrowed, may be NULL) is incremented for every dropped event. Returns 0 or -ENOMEM.
 */
int telemetry_new(struct ev_loop *loop, MetricsCounter *dropped_counter, Telemetry **out);
/* Stop the watcher and free every subscriber and queued event. Accepts NULL. */
void telemetry_free(Telemetry *telemetry);

/*
 * Queue a copy of the event for each matching subscriber. The name, keys and strings are copied.
 * Returns 0 (also when no subscriber matched or a queue was full), -EINVAL for a malformed
 * event (an empty or over-long name or key or atom, a non-numeric measurement, a duplicate key,
 * more than TELEMETRY_FIELDS_MAX fields), or -ENOMEM (counted as dropped).
 */
int telemetry_emit(Telemetry *telemetry, const TelemetryName *name,
                   const TelemetryField *measurements, size_t n_measurements,
                   const TelemetryField *metadata, size_t n_metadata);

/*
 * Add a subscriber for events whose name starts with one of `prefixes` (copied; none means all
 * events). `queue_limit` 0 means TELEMETRY_QUEUE_LIMIT_DEFAULT. *out is owned by `telemetry`
 * until telemetry_unsubscribe(). Returns 0, -EINVAL for a bad prefix or too many prefixes,
 * -EMFILE past TELEMETRY_SUBSCRIBERS_MAX subscribers, or -ENOMEM.
 */
int telemetry_subscribe(Telemetry *telemetry, const TelemetryName *prefixes, size_t n_prefixes,
                        size_t queue_limit, TelemetrySinkFn sink, void *userdata,
                        TelemetrySubscriber **out);
/* Remove a subscriber and drop its queue; safe to call from inside any sink. */
void telemetry_unsubscribe(Telemetry *telemetry, TelemetrySubscriber *subscriber);
/* Let a subscriber paused by -EAGAIN receive events again from the next dispatch. */
void telemetry_subscriber_resume(TelemetrySubscriber *subscriber);

/* Deliver the queued events of every subscriber that is not paused. */
void telemetry_dispatch(Telemetry *telemetry);

size_t telemetry_subscriber_count(const Telemetry *telemetry);
size_t telemetry_subscriber_queued(const TelemetrySubscriber *subscriber);
uint64_t telemetry_subscriber_dropped(const TelemetrySubscriber *subscriber);
uint64_t telemetry_subscriber_failed(const TelemetrySubscriber *subscriber);
uint64_t telemetry_dropped_total(const Telemetry *telemetry);

/* Whether `name` starts with `prefix`. */
bool telemetry_name_has_prefix(const TelemetryName *name, const TelemetryName *prefix);

/*
 * Append {snakepit_telemetry, Event, Measurements, Metadata} to `x`: Event is the list of name
 * atoms, Measurements and Metadata are maps with atom keys. Doubles that are NaN or infinite
 * become the atoms nan, infinity and neg_infinity. The caller writes the version byte (for
 * example with ei_x_new_with_version). Returns 0, -EINVAL for a malformed event, or -ENOMEM;
 * on failure `x` may hold a partial term.
 */
int telemetry_event_encode(ei_x_buff *x, const TelemetryEvent *event);
