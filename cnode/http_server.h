/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The daemon's HTTP endpoint: GET/HEAD /metrics (Prometheus text format 0.0.4) and the
 * Kubernetes probes /health/live, /health/ready and /health/startup (200, or 503 with a one-line
 * reason), plus /health with JSON details. Other methods get 405 with "Allow: GET, HEAD", other
 * paths 404.
 *
 * Built on libmicrohttpd without its threads: MHD runs in epoll mode, one ev_io watches its epoll
 * descriptor and one ev_timer follows MHD_get_timeout(), and both call MHD_run() on the daemon's
 * loop. Every callback (probes, JSON writer, metric collectors) therefore runs on that loop.
 *
 * Limits, all configurable: total connections, connections per client address, memory per
 * connection (a request line or header block that does not fit gets an error status from MHD),
 * an idle timeout, and a deadline for a request's headers. The deadline drops clients that send
 * a byte at a time, because MHD's own timeout restarts with every byte received.
 */
#pragma once

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "metrics.h"
#include "text_buffer.h"

#define HTTP_SERVER_LISTEN_DEFAULT "127.0.0.1:9568"
#define HTTP_SERVER_CONNECTION_LIMIT_DEFAULT 128
/* Below the total, so one client address cannot take every connection. */
#define HTTP_SERVER_PER_IP_CONNECTION_LIMIT_DEFAULT 32
#define HTTP_SERVER_CONNECTION_MEMORY_LIMIT_DEFAULT (32 * 1024)
#define HTTP_SERVER_CONNECTION_TIMEOUT_S_DEFAULT 10
#define HTTP_SERVER_REQUEST_TIMEOUT_MS_DEFAULT 10000
/* No route takes a request body; one longer than this many bytes closes the connection. */
#define HTTP_SERVER_BODY_MAX (64 * 1024)
/* Probe reasons longer than this are cut. */
#define HTTP_SERVER_REASON_MAX 256

typedef struct HttpServer HttpServer;

typedef struct {
    /* "IPv4:port" or "[IPv6]:port", numeric only; port 0 picks a free port. Copied. */
    const char *listen;
    unsigned connection_limit;
    unsigned per_ip_connection_limit;
    size_t connection_memory_limit; /* bytes per connection for the request line and headers */
    unsigned connection_timeout_s;  /* an idle connection is closed after this many seconds */
    /* Milliseconds from the connection opening, or from the previous response on it, within
     * which a request's headers must be complete. Past it the connection is shut down. */
    unsigned request_timeout_ms;
} HttpServerConfig;

/*
 * A probe: returns true when it passes. On failure it may write a one-line reason (NUL
 * terminated) into `reason`, which has `reason_size` bytes; line breaks are replaced by spaces.
 */
typedef bool (*HttpServerProbeFn)(void *userdata, char *reason, size_t reason_size);

/*
 * Appends the JSON document of /health to `out` and returns the HTTP status to send (200 or 503),
 * or a negative errno, which turns into 500.
 */
typedef int (*HttpServerHealthJsonFn)(void *userdata, TextBuffer *out);

/* The daemon's health callbacks. A NULL probe passes; a NULL JSON writer gives a summary. */
typedef struct {
    HttpServerProbeFn live;
    HttpServerProbeFn ready;
    HttpServerProbeFn startup;
    HttpServerHealthJsonFn write_json;
    void *userdata; /* borrowed, passed to every callback */
} HttpServerHealth;

/* Fill `config` with the defaults above. */
void http_server_config_init(HttpServerConfig *config);

/*
 * Parse a listen address as the config accepts it. Returns 0 and fills the out parameters, or
 * -EINVAL for anything but a numeric IPv4 or bracketed IPv6 address with a port 0 to 65535.
 */
int http_server_parse_listen(const char *listen, struct sockaddr_storage *addr,
                             socklen_t *addr_len);

/*
 * Bind, listen and start serving on `loop`. `registry` (borrowed, may be NULL for no /metrics)
 * and the callbacks in `health` must outlive the server. Logs and returns -errno when the socket
 * cannot be set up ("Failed to listen on 127.0.0.1:9568: Address already in use"), -EINVAL for a
 * bad config, -ENOMEM, or -EIO when libmicrohttpd fails to start.
 */
int http_server_start(struct ev_loop *loop, const HttpServerConfig *config,
                      MetricsRegistry *registry, const HttpServerHealth *health, HttpServer **out);

/* Close every connection and the listening socket, and free the server. Accepts NULL. */
void http_server_free(HttpServer *server);

/* The port actually bound, useful after listening on port 0. */
uint16_t http_server_port(const HttpServer *server);

/* Connections shut down because their request headers missed the deadline. */
uint64_t http_server_deadline_drops(const HttpServer *server);
