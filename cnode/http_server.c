/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The HTTP endpoint: listen socket setup, libmicrohttpd driven from libev, the request deadline
 * that MHD lacks, and the routes. MHD calls every callback here from inside MHD_run(), which
 * only our watchers call, so all of it runs on the daemon's loop thread.
 */
#include "http_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"

#define HTTP_LISTEN_BACKLOG 128
#define HTTP_ALLOW_METHODS "GET, HEAD"
#define HTTP_CONTENT_TYPE_METRICS "text/plain; version=0.0.4; charset=utf-8"
#define HTTP_CONTENT_TYPE_TEXT "text/plain; charset=utf-8"
#define HTTP_CONTENT_TYPE_JSON "application/json"

/* One TCP connection, tracked for the request deadline. */
typedef struct HttpConnection {
    HttpServer *server;
    int fd;
    ev_tstamp deadline; /* loop time by which the headers must be in; 0 while a request runs */
    size_t body_bytes;  /* of the current request, read and dropped */
    struct HttpConnection *prev;
    struct HttpConnection *next;
} HttpConnection;

struct HttpServer {
    struct ev_loop *loop;
    struct MHD_Daemon *daemon;
    ev_io epoll_watcher;
    ev_timer mhd_timer;      /* follows MHD_get_timeout() */
    ev_timer deadline_timer; /* runs while connections exist */
    MetricsRegistry *registry;
    HttpServerHealth health;
    HttpServerConfig config;
    char *listen;
    uint16_t port;
    HttpConnection *connections;
    bool connection_closed; /* during the last MHD_run() */
    uint64_t deadline_drops;
    LogRateLimit log_limit;
};

typedef enum {
    ROUTE_NONE,
    ROUTE_METRICS,
    ROUTE_HEALTH,
    ROUTE_LIVE,
    ROUTE_READY,
    ROUTE_STARTUP,
} HttpRoute;

void http_server_config_init(HttpServerConfig *config)
{
    *config = (HttpServerConfig){
        .listen = HTTP_SERVER_LISTEN_DEFAULT,
        .connection_limit = HTTP_SERVER_CONNECTION_LIMIT_DEFAULT,
        .per_ip_connection_limit = HTTP_SERVER_PER_IP_CONNECTION_LIMIT_DEFAULT,
        .connection_memory_limit = HTTP_SERVER_CONNECTION_MEMORY_LIMIT_DEFAULT,
        .connection_timeout_s = HTTP_SERVER_CONNECTION_TIMEOUT_S_DEFAULT,
        .request_timeout_ms = HTTP_SERVER_REQUEST_TIMEOUT_MS_DEFAULT,
    };
}

/* Split "host:port" or "[host]:port" into its parts; `host` has `host_size` bytes. */
static int split_host_port(const char *listen, char *host, size_t host_size, const char **port)
{
    const char *colon;
    size_t len;

    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');

        if (!close || close[1] != ':') {
            return -EINVAL;
        }
        len = (size_t)(close - listen - 1);
        listen++;
        colon = close + 1;
    } else {
        colon = strrchr(listen, ':');
        if (!colon || memchr(listen, ':', (size_t)(colon - listen))) {
            return -EINVAL;
        }
        len = (size_t)(colon - listen);
    }
    if (len == 0 || len >= host_size) {
        return -EINVAL;
    }
    memcpy(host, listen, len);
    host[len] = '\0';
    *port = colon + 1;
    return 0;
}

static int parse_port(const char *text, uint16_t *out)
{
    unsigned long value;
    char *end;

    if (text[0] < '0' || text[0] > '9') {
        return -EINVAL;
    }
    errno = 0;
    value = strtoul(text, &end, 10);
    if (errno != 0 || *end != '\0' || value > 65535) {
        return -EINVAL;
    }
    *out = (uint16_t)value;
    return 0;
}

int http_server_parse_listen(const char *listen, struct sockaddr_storage *addr, socklen_t *addr_len)
{
    struct sockaddr_storage storage = {0};
    char host[INET6_ADDRSTRLEN];
    const char *port_text;
    uint16_t port;
    bool bracketed;

    if (!listen) {
        return -EINVAL;
    }
    bracketed = listen[0] == '[';
    if (split_host_port(listen, host, sizeof(host), &port_text) < 0 ||
        parse_port(port_text, &port) < 0) {
        return -EINVAL;
    }
    if (bracketed) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&storage;

        if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1) {
            return -EINVAL;
        }
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        *addr_len = sizeof(*in6);
    } else {
        struct sockaddr_in *in4 = (struct sockaddr_in *)&storage;

        if (inet_pton(AF_INET, host, &in4->sin_addr) != 1) {
            return -EINVAL;
        }
        in4->sin_family = AF_INET;
        in4->sin_port = htons(port);
        *addr_len = sizeof(*in4);
    }
    *addr = storage;
    return 0;
}

static uint16_t bound_port(int fd)
{
    struct sockaddr_storage addr;
    socklen_t len = sizeof(addr);

    if (getsockname(fd, (struct sockaddr *)&addr, &len) < 0) {
        return 0;
    }
    if (addr.ss_family == AF_INET6) {
        return ntohs(((struct sockaddr_in6 *)&addr)->sin6_port);
    }
    return ntohs(((struct sockaddr_in *)&addr)->sin_port);
}

/* Returns the listening socket, or a negative errno after logging which address failed. */
static int open_listen_socket(const char *listen_text, const struct sockaddr_storage *addr,
                              socklen_t addr_len)
{
    int one = 1;
    int fd, r;

    fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return log_error_errno(errno, "Failed to create a socket for %s", listen_text);
    }
    /* A restarted daemon must not wait for TIME_WAIT connections of its predecessor. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        (addr->ss_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)) {
        r = log_error_errno(errno, "Failed to set socket options for %s", listen_text);
        goto close_fd;
    }
    if (bind(fd, (const struct sockaddr *)addr, addr_len) < 0 ||
        listen(fd, HTTP_LISTEN_BACKLOG) < 0) {
        r = log_error_errno(errno, "Failed to listen on %s", listen_text);
        goto close_fd;
    }
    return fd;

close_fd:
    close(fd);
    return r;
}

static void reschedule_mhd(HttpServer *server)
{
    MHD_UNSIGNED_LONG_LONG timeout_ms;

    ev_timer_stop(server->loop, &server->mhd_timer);
    /*
     * At the connection limit MHD 0.9.75 stops watching the listening socket and starts again
     * only in a later MHD_run(), without asking for an early one. Observed: with no other
     * traffic, clients waiting in the backlog were served only at the next idle timeout. So
     * after a connection closed, run MHD again on the next loop iteration.
     */
    if (server->connection_closed) {
        server->connection_closed = false;
        ev_timer_set(&server->mhd_timer, 0, 0);
        ev_timer_start(server->loop, &server->mhd_timer);
        return;
    }
    if (MHD_get_timeout(server->daemon, &timeout_ms) == MHD_YES) {
        ev_timer_set(&server->mhd_timer, (ev_tstamp)timeout_ms / 1000.0, 0);
        ev_timer_start(server->loop, &server->mhd_timer);
    }
}

static void run_mhd(HttpServer *server)
{
    MHD_run(server->daemon);
    reschedule_mhd(server);
}

static void epoll_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    run_mhd(w->data);
}

static void mhd_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    run_mhd(w->data);
}

/*
 * Shut down connections whose headers are overdue. shutdown(2) leaves the descriptor to MHD,
 * which reads end-of-file next and closes the connection itself.
 */
static void deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    HttpServer *server = w->data;
    ev_tstamp now = ev_now(loop);

    for (HttpConnection *conn = server->connections; conn; conn = conn->next) {
        if (conn->deadline > 0 && now >= conn->deadline) {
            log_debug("Closing HTTP connection fd=%d: request headers not received within %u ms",
                      conn->fd, server->config.request_timeout_ms);
            shutdown(conn->fd, SHUT_RDWR);
            conn->deadline = 0;
            server->deadline_drops++;
        }
    }
}

static ev_tstamp request_timeout(const HttpServer *server)
{
    return (ev_tstamp)server->config.request_timeout_ms / 1000.0;
}

static void connection_started(HttpServer *server, struct MHD_Connection *connection,
                               void **socket_context)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
    HttpConnection *conn;

    *socket_context = NULL;
    conn = calloc(1, sizeof(*conn));
    if (!conn || !info) {
        /* NOTE: without memory for the record, this one connection has no request deadline. */
        free(conn);
        return;
    }
    conn->server = server;
    conn->fd = info->connect_fd;
    conn->deadline = ev_now(server->loop) + request_timeout(server);
    conn->next = server->connections;
    if (conn->next) {
        conn->next->prev = conn;
    }
    server->connections = conn;
    *socket_context = conn;
    if (!ev_is_active(&server->deadline_timer)) {
        ev_timer_again(server->loop, &server->deadline_timer);
    }
}

static void connection_closed(HttpServer *server, HttpConnection *conn)
{
    if (!conn) {
        return;
    }
    if (conn->prev) {
        conn->prev->next = conn->next;
    } else {
        server->connections = conn->next;
    }
    if (conn->next) {
        conn->next->prev = conn->prev;
    }
    free(conn);
    if (!server->connections) {
        ev_timer_stop(server->loop, &server->deadline_timer);
    }
}

static void notify_connection_cb(void *cls, struct MHD_Connection *connection,
                                 void **socket_context, enum MHD_ConnectionNotificationCode toe)
{
    HttpServer *server = cls;

    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        connection_started(server, connection, socket_context);
    } else {
        server->connection_closed = true;
        connection_closed(server, *socket_context);
        *socket_context = NULL;
    }
}

static HttpConnection *connection_record(struct MHD_Connection *connection)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

    return info ? info->socket_context : NULL;
}

/* After a response, the next request on a kept-alive connection gets a fresh deadline. */
static void request_completed_cb(void *cls, struct MHD_Connection *connection, void **con_cls,
                                 enum MHD_RequestTerminationCode toe)
{
    HttpServer *server = cls;
    HttpConnection *conn = connection_record(connection);

    if (conn) {
        conn->deadline = ev_now(server->loop) + request_timeout(server);
    }
}

static void mhd_log_cb(void *cls, const char *fmt, va_list ap)
{
    HttpServer *server = cls;
    char message[512];
    unsigned dropped = 0;
    size_t len;

    vsnprintf(message, sizeof(message), fmt, ap);
    len = strlen(message);
    while (len > 0 && (message[len - 1] == '\n' || message[len - 1] == '\r')) {
        message[--len] = '\0';
    }
    /* Clients cause most of these (limits, malformed requests), so repeats are rate limited. */
    if (!log_ratelimit_check(&server->log_limit, log_now_ms(), &dropped)) {
        return;
    }
    if (dropped > 0) {
        log_notice("libmicrohttpd: %u similar messages suppressed", dropped);
    }
    log_notice("libmicrohttpd: %s", message);
}

static HttpRoute route_for(const char *url)
{
    static const struct {
        const char *path;
        HttpRoute route;
    } routes[] = {
        {"/metrics", ROUTE_METRICS},        {"/health", ROUTE_HEALTH},
        {"/health/live", ROUTE_LIVE},       {"/health/ready", ROUTE_READY},
        {"/health/startup", ROUTE_STARTUP},
    };

    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (strcmp(url, routes[i].path) == 0) {
            return routes[i].route;
        }
    }
    return ROUTE_NONE;
}

/* Queue `len` bytes of `body` (stolen, freed with free()) with `status` and `content_type`. */
static enum MHD_Result queue_owned(struct MHD_Connection *connection, unsigned status,
                                   const char *content_type, char *body, size_t len,
                                   const char *allow)
{
    struct MHD_Response *response;
    enum MHD_Result result;

    response = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!response) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (allow) {
        MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, allow);
    }
    result = MHD_queue_response(connection, status, response);
    MHD_destroy_response(response);
    return result;
}

static enum MHD_Result queue_text(struct MHD_Connection *connection, unsigned status,
                                  const char *text, const char *allow)
{
    char *body = strdup(text);

    if (!body) {
        return MHD_NO;
    }
    return queue_owned(connection, status, HTTP_CONTENT_TYPE_TEXT, body, strlen(body), allow);
}

static enum MHD_Result queue_buffer(struct MHD_Connection *connection, unsigned status,
                                    const char *content_type, TextBuffer *buf)
{
    size_t len;
    char *body = text_buffer_steal(buf, &len);

    if (!body) {
        return MHD_NO;
    }
    return queue_owned(connection, status, content_type, body, len, NULL);
}

static enum MHD_Result serve_metrics(HttpServer *server, struct MHD_Connection *connection)
{
    TextBuffer buf = TEXT_BUFFER_INIT;

    if (!server->registry) {
        return queue_text(connection, MHD_HTTP_NOT_FOUND, "metrics are disabled\n", NULL);
    }
    if (metrics_render(server->registry, &buf) < 0) {
        text_buffer_free(&buf);
        return queue_text(connection, MHD_HTTP_INTERNAL_SERVER_ERROR,
                          "out of memory while rendering metrics\n", NULL);
    }
    return queue_buffer(connection, MHD_HTTP_OK, HTTP_CONTENT_TYPE_METRICS, &buf);
}

/* Run a probe; a NULL probe passes. Fills `reason` with one line ending in a newline. */
static bool run_probe(HttpServerProbeFn probe, void *userdata, char *reason, size_t size)
{
    bool ok = true;

    reason[0] = '\0';
    if (probe) {
        ok = probe(userdata, reason, size - 1);
        reason[size - 2] = '\0';
    }
    for (char *p = reason; *p; p++) {
        if (*p == '\n' || *p == '\r') {
            *p = ' ';
        }
    }
    if (reason[0] == '\0') {
        snprintf(reason, size - 1, "%s", ok ? "ok" : "unavailable");
    }
    strcat(reason, "\n");
    return ok;
}

static HttpServerProbeFn probe_for(const HttpServer *server, HttpRoute route)
{
    switch (route) {
    case ROUTE_LIVE:
        return server->health.live;
    case ROUTE_READY:
        return server->health.ready;
    case ROUTE_STARTUP:
        return server->health.startup;
    default:
        return NULL;
    }
}

static enum MHD_Result serve_probe(HttpServer *server, struct MHD_Connection *connection,
                                   HttpRoute route)
{
    char reason[HTTP_SERVER_REASON_MAX + 2];
    bool ok = run_probe(probe_for(server, route), server->health.userdata, reason, sizeof(reason));

    return queue_text(connection, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, reason, NULL);
}

/* The /health document when the daemon gives no JSON writer: each probe with its reason. */
static int write_probe_summary(HttpServer *server, TextBuffer *out)
{
    static const struct {
        const char *name;
        HttpRoute route;
    } probes[] = {{"live", ROUTE_LIVE}, {"ready", ROUTE_READY}, {"startup", ROUTE_STARTUP}};
    char reason[HTTP_SERVER_REASON_MAX + 2];
    bool all_ok = true;
    int r;

    r = text_buffer_append_str(out, "{\"checks\":{");
    for (size_t i = 0; i < 3 && r == 0; i++) {
        bool ok = run_probe(probe_for(server, probes[i].route), server->health.userdata, reason,
                            sizeof(reason));

        all_ok = all_ok && ok;
        reason[strlen(reason) - 1] = '\0';
        r = text_buffer_printf(out, "%s\"%s\":{\"ok\":%s,\"reason\":\"", i ? "," : "",
                               probes[i].name, ok ? "true" : "false");
        if (r == 0) {
            r = text_buffer_append_json_string(out, reason);
        }
        if (r == 0) {
            r = text_buffer_append_str(out, "\"}");
        }
    }
    if (r == 0) {
        r = text_buffer_printf(out, "},\"status\":\"%s\"}\n", all_ok ? "ok" : "unhealthy");
    }
    return r < 0 ? r : (all_ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE);
}

static enum MHD_Result serve_health_json(HttpServer *server, struct MHD_Connection *connection)
{
    TextBuffer buf = TEXT_BUFFER_INIT;
    int status;

    if (server->health.write_json) {
        status = server->health.write_json(server->health.userdata, &buf);
    } else {
        status = write_probe_summary(server, &buf);
    }
    if (status < 100 || status > 599) {
        text_buffer_free(&buf);
        return queue_text(connection, MHD_HTTP_INTERNAL_SERVER_ERROR,
                          "failed to write the health document\n", NULL);
    }
    return queue_buffer(connection, (unsigned)status, HTTP_CONTENT_TYPE_JSON, &buf);
}

static enum MHD_Result respond(HttpServer *server, struct MHD_Connection *connection,
                               const char *url, const char *method)
{
    HttpRoute route = route_for(url);

    if (route == ROUTE_NONE) {
        return queue_text(connection, MHD_HTTP_NOT_FOUND, "not found\n", NULL);
    }
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        return queue_text(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n",
                          HTTP_ALLOW_METHODS);
    }
    switch (route) {
    case ROUTE_METRICS:
        return serve_metrics(server, connection);
    case ROUTE_HEALTH:
        return serve_health_json(server, connection);
    default:
        return serve_probe(server, connection, route);
    }
}

/*
 * MHD calls this once when the headers are in, then once per chunk of body, then once more
 * with no data. Answering only in that last call lets MHD keep the connection alive: a response
 * queued before the request is fully read makes MHD 0.9.75 close the connection after it.
 */
static enum MHD_Result access_cb(void *cls, struct MHD_Connection *connection, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    static size_t untracked_body_bytes; /* for a connection without a record */
    HttpServer *server = cls;
    HttpConnection *conn = connection_record(connection);
    size_t *body_bytes = conn ? &conn->body_bytes : &untracked_body_bytes;

    if (!*con_cls) {
        /* The headers are complete: the request deadline no longer applies. */
        if (conn) {
            conn->deadline = 0;
        }
        *body_bytes = 0;
        *con_cls = body_bytes;
        return MHD_YES;
    }
    /* No route takes a body: it is read and dropped, and a large one ends the connection. */
    if (*upload_data_size > 0) {
        *body_bytes += *upload_data_size;
        *upload_data_size = 0;
        return *body_bytes > HTTP_SERVER_BODY_MAX ? MHD_NO : MHD_YES;
    }
    return respond(server, connection, url, method);
}

static int start_daemon(HttpServer *server, int listen_fd, bool ipv6)
{
    const union MHD_DaemonInfo *info;
    unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG | (ipv6 ? MHD_USE_IPv6 : 0);

    server->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, access_cb, server,
        /* The logger comes first, so MHD's messages about the other options go through it too. */
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log_cb, server, MHD_OPTION_LISTEN_SOCKET, listen_fd,
        MHD_OPTION_CONNECTION_LIMIT, server->config.connection_limit,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, server->config.per_ip_connection_limit,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, server->config.connection_memory_limit,
        MHD_OPTION_CONNECTION_TIMEOUT, server->config.connection_timeout_s,
        MHD_OPTION_NOTIFY_CONNECTION, notify_connection_cb, server, MHD_OPTION_NOTIFY_COMPLETED,
        request_completed_cb, server, MHD_OPTION_END);
    if (!server->daemon) {
        return log_error_errno(EIO, "Failed to start the HTTP server on %s", server->listen);
    }
    info = MHD_get_daemon_info(server->daemon, MHD_DAEMON_INFO_EPOLL_FD);
    if (!info) {
        return log_error_errno(EIO, "Failed to get the epoll descriptor of the HTTP server");
    }
    ev_io_init(&server->epoll_watcher, epoll_cb, info->epoll_fd, EV_READ);
    server->epoll_watcher.data = server;
    ev_io_start(server->loop, &server->epoll_watcher);
    return 0;
}

static int config_validate(const HttpServerConfig *config)
{
    if (config->connection_limit == 0 || config->per_ip_connection_limit == 0 ||
        config->connection_memory_limit < 1024 || config->connection_timeout_s == 0 ||
        config->request_timeout_ms == 0) {
        return -EINVAL;
    }
    return 0;
}

static void init_timers(HttpServer *server)
{
    ev_tstamp sweep = request_timeout(server) / 4;

    /* Check deadlines often enough to be late by at most a quarter, and at most by 1 s. */
    sweep = sweep < 0.05 ? 0.05 : (sweep > 1.0 ? 1.0 : sweep);
    ev_timer_init(&server->mhd_timer, mhd_timer_cb, 0, 0);
    server->mhd_timer.data = server;
    ev_init(&server->deadline_timer, deadline_cb);
    server->deadline_timer.repeat = sweep;
    server->deadline_timer.data = server;
}

int http_server_start(struct ev_loop *loop, const HttpServerConfig *config,
                      MetricsRegistry *registry, const HttpServerHealth *health, HttpServer **out)
{
    struct sockaddr_storage addr;
    socklen_t addr_len;
    HttpServer *server;
    int fd, r;

    if (http_server_parse_listen(config->listen, &addr, &addr_len) < 0) {
        return log_error_errno(EINVAL,
                               "Invalid HTTP listen address \"%s\": expected IPv4:PORT or "
                               "[IPv6]:PORT with a numeric address",
                               config->listen ? config->listen : "");
    }
    if (config_validate(config) < 0) {
        return log_error_errno(EINVAL, "Invalid HTTP server limits: connection limits and "
                                       "timeouts must be positive, the memory limit 1024 bytes "
                                       "or more");
    }
    server = calloc(1, sizeof(*server));
    if (!server || !(server->listen = strdup(config->listen))) {
        free(server);
        return -ENOMEM;
    }
    server->loop = loop;
    server->registry = registry;
    server->health = health ? *health : (HttpServerHealth){0};
    server->config = *config;
    server->config.listen = server->listen;
    server->log_limit = (LogRateLimit)LOG_RATELIMIT_INIT(10000, 10);
    init_timers(server);

    fd = open_listen_socket(server->listen, &addr, addr_len);
    if (fd < 0) {
        r = fd;
        goto free_server;
    }
    server->port = bound_port(fd);
    r = start_daemon(server, fd, addr.ss_family == AF_INET6);
    if (r < 0) {
        /* NOTE: MHD does not document whether a failed start closes a socket it was given, so
         * close it only if it is still open (nothing else runs on this thread meanwhile). */
        if (!server->daemon && fcntl(fd, F_GETFD) >= 0) {
            close(fd);
        }
        goto free_server;
    }
    reschedule_mhd(server);
    log_info("Serving HTTP on %s (port %u)", server->listen, server->port);
    *out = server;
    return 0;

free_server:
    http_server_free(server);
    return r;
}

void http_server_free(HttpServer *server)
{
    if (!server) {
        return;
    }
    ev_io_stop(server->loop, &server->epoll_watcher);
    ev_timer_stop(server->loop, &server->mhd_timer);
    ev_timer_stop(server->loop, &server->deadline_timer);
    if (server->daemon) {
        /* Closes every connection (each through notify_connection_cb) and the listen socket. */
        MHD_stop_daemon(server->daemon);
    }
    ev_timer_stop(server->loop, &server->deadline_timer);
    free(server->listen);
    free(server);
}

uint16_t http_server_port(const HttpServer *server)
{
    return server->port;
}

uint64_t http_server_deadline_drops(const HttpServer *server)
{
    return server->deadline_drops;
}
