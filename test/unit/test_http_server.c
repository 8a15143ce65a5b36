/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The HTTP server runs on its own libev loop in a thread; the tests talk to it over real
 * loopback sockets. Connections from 127.0.0.2 stand for a second client address.
 */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http_server.h"
#include "metrics_product.h"

typedef struct {
    struct ev_loop *loop;
    ev_async stop;
    pthread_t thread;
    HttpServer *server;
    MetricsRegistry *registry;
    HttpServerHealth health;
    atomic_bool ready;
} Fixture;

static bool probe_live(void *userdata, char *reason, size_t size)
{
    return true;
}

static bool probe_ready(void *userdata, char *reason, size_t size)
{
    Fixture *f = userdata;

    if (!atomic_load(&f->ready)) {
        snprintf(reason, size, "pool \"default\" has no ready worker\nsecond line");
        return false;
    }
    return true;
}

static bool probe_startup(void *userdata, char *reason, size_t size)
{
    return probe_ready(userdata, reason, size);
}

static int write_json(void *userdata, TextBuffer *out)
{
    Fixture *f = userdata;
    bool ready = atomic_load(&f->ready);

    text_buffer_printf(out, "{\"status\":\"%s\"}", ready ? "ok" : "unhealthy");
    return ready ? 200 : 503;
}

static void stop_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    ev_break(loop, EVBREAK_ALL);
}

static void *loop_thread(void *arg)
{
    Fixture *f = arg;

    ev_run(f->loop, 0);
    return NULL;
}

static void fixture_start(Fixture *f, const HttpServerConfig *config, bool custom_json)
{
    MetricsProduct product;

    memset(f, 0, sizeof(*f));
    f->loop = ev_loop_new(EVFLAG_AUTO);
    cr_assert_not_null(f->loop);
    f->registry = metrics_registry_new();
    cr_assert_eq(metrics_product_register(f->registry, "test", &product), 0);
    metrics_counter_inc(metrics_counter_get(product.requests_total,
                                            METRICS_LABELS("default", "python.os.getcwd", "ok")));
    f->health = (HttpServerHealth){probe_live, probe_ready, probe_startup, NULL, f};
    if (custom_json) {
        f->health.write_json = write_json;
    }
    cr_assert_eq(http_server_start(f->loop, config, f->registry, &f->health, &f->server), 0);
    ev_async_init(&f->stop, stop_cb);
    ev_async_start(f->loop, &f->stop);
    cr_assert_eq(pthread_create(&f->thread, NULL, loop_thread, f), 0);
}

static void fixture_start_default(Fixture *f)
{
    HttpServerConfig config;

    http_server_config_init(&config);
    config.listen = "127.0.0.1:0";
    fixture_start(f, &config, false);
}

/* Stop the loop thread but keep the server, so the test can read its counters. */
static void fixture_stop_keep(Fixture *f)
{
    ev_async_send(f->loop, &f->stop);
    pthread_join(f->thread, NULL);
}

static void fixture_free(Fixture *f)
{
    http_server_free(f->server);
    metrics_registry_free(f->registry);
    ev_loop_destroy(f->loop);
}

static void fixture_stop(Fixture *f)
{
    fixture_stop_keep(f);
    fixture_free(f);
}

static int connect_from(const char *source, uint16_t port)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    struct timeval tv = {.tv_sec = 5};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    cr_assert_geq(fd, 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (source) {
        struct sockaddr_in src = {.sin_family = AF_INET};

        inet_pton(AF_INET, source, &src.sin_addr);
        cr_assert_eq(bind(fd, (struct sockaddr *)&src, sizeof(src)), 0, "bind %s: %s", source,
                     strerror(errno));
    }
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    cr_assert_eq(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0, "connect: %s",
                 strerror(errno));
    return fd;
}

static void send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);

        if (n < 0) {
            return; /* the server may close early, and the response shows why */
        }
        data += n;
        len -= (size_t)n;
    }
}

/* Read until end of file into a new string; returns NULL if nothing was read. */
static char *read_all(int fd)
{
    TextBuffer buf = TEXT_BUFFER_INIT;
    char chunk[4096];
    size_t len;
    ssize_t n;

    while ((n = recv(fd, chunk, sizeof(chunk), 0)) > 0) {
        text_buffer_append(&buf, chunk, (size_t)n);
    }
    if (buf.len == 0) {
        text_buffer_free(&buf);
        return NULL;
    }
    return text_buffer_steal(&buf, &len);
}

/* Send one raw request on a new connection and return the whole response (new string). */
static char *exchange(uint16_t port, const char *request)
{
    int fd = connect_from(NULL, port);
    char *response;

    send_all(fd, request, strlen(request));
    response = read_all(fd);
    close(fd);
    return response;
}

static char *request(uint16_t port, const char *method, const char *path)
{
    char text[512];

    snprintf(text, sizeof(text), "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
             method, path);
    return exchange(port, text);
}

static int status_of(const char *response)
{
    int status = 0;

    cr_assert_not_null(response, "no response");
    cr_assert_eq(sscanf(response, "HTTP/1.%*d %d", &status), 1, "%s", response);
    return status;
}

static const char *body_of(const char *response)
{
    const char *p = strstr(response, "\r\n\r\n");

    cr_assert_not_null(p, "%s", response);
    return p + 4;
}

/* Find a header case-insensitively; returns a pointer to its value. */
static const char *header_of(const char *response, const char *name)
{
    size_t len = strlen(name);

    for (const char *p = strstr(response, "\r\n"); p && p[2] != '\r'; p = strstr(p + 2, "\r\n")) {
        if (strncasecmp(p + 2, name, len) == 0 && p[2 + len] == ':') {
            return p + 3 + len + strspn(p + 3 + len, " ");
        }
    }
    return NULL;
}

Test(http_server, metrics_route)
{
    Fixture f;
    char *response;
    const char *type;

    fixture_start_default(&f);
    response = request(http_server_port(f.server), "GET", "/metrics");
    cr_assert_eq(status_of(response), 200, "%s", response);
    type = header_of(response, "Content-Type");
    cr_assert_not_null(type);
    cr_assert_eq(strncmp(type, "text/plain; version=0.0.4", 25), 0, "%s", type);
    cr_assert(strstr(body_of(response), "# TYPE snakepit_requests_total counter\n"));
    cr_assert(strstr(body_of(response),
                     "snakepit_requests_total{pool=\"default\",command=\"python.os.getcwd\","
                     "status=\"ok\"} 1\n"));
    cr_assert(strstr(body_of(response), "\nprocess_open_fds "));
    free(response);
    fixture_stop(&f);
}

Test(http_server, head_has_no_body)
{
    Fixture f;
    char *response;
    const char *length;

    fixture_start_default(&f);
    response = request(http_server_port(f.server), "HEAD", "/metrics");
    cr_assert_eq(status_of(response), 200, "%s", response);
    length = header_of(response, "Content-Length");
    cr_assert_not_null(length, "%s", response);
    cr_assert_gt(atol(length), 100);
    cr_assert_str_eq(body_of(response), "");
    free(response);
    fixture_stop(&f);
}

Test(http_server, probes_follow_callbacks)
{
    Fixture f;
    uint16_t port;
    char *response;

    fixture_start_default(&f);
    port = http_server_port(f.server);

    response = request(port, "GET", "/health/live");
    cr_assert_eq(status_of(response), 200);
    cr_assert_str_eq(body_of(response), "ok\n");
    free(response);

    response = request(port, "GET", "/health/ready");
    cr_assert_eq(status_of(response), 503);
    cr_assert_str_eq(body_of(response), "pool \"default\" has no ready worker second line\n",
                     "the reason is one line");
    free(response);

    response = request(port, "GET", "/health/startup");
    cr_assert_eq(status_of(response), 503);
    free(response);

    atomic_store(&f.ready, true);
    response = request(port, "GET", "/health/ready");
    cr_assert_eq(status_of(response), 200);
    cr_assert_str_eq(body_of(response), "ok\n");
    free(response);
    response = request(port, "HEAD", "/health/startup");
    cr_assert_eq(status_of(response), 200);
    cr_assert_str_eq(body_of(response), "");
    free(response);
    fixture_stop(&f);
}

static bool has_prefix(const char *s, const char *prefix)
{
    return s && strncmp(s, prefix, strlen(prefix)) == 0;
}

Test(http_server, health_json_summary)
{
    Fixture f;
    uint16_t port;
    char *response;

    fixture_start_default(&f);
    port = http_server_port(f.server);
    response = request(port, "GET", "/health");
    cr_assert_eq(status_of(response), 503);
    cr_assert(has_prefix(header_of(response, "Content-Type"), "application/json"), "%s", response);
    cr_assert_str_eq(body_of(response),
                     "{\"checks\":{\"live\":{\"ok\":true,\"reason\":\"ok\"},"
                     "\"ready\":{\"ok\":false,\"reason\":\"pool \\\"default\\\" has no ready "
                     "worker second line\"},"
                     "\"startup\":{\"ok\":false,\"reason\":\"pool \\\"default\\\" has no ready "
                     "worker second line\"}},\"status\":\"unhealthy\"}\n");
    free(response);
    atomic_store(&f.ready, true);
    response = request(port, "GET", "/health");
    cr_assert_eq(status_of(response), 200);
    cr_assert(strstr(body_of(response), "\"status\":\"ok\""), "%s", response);
    free(response);
    fixture_stop(&f);
}

Test(http_server, health_json_from_callback)
{
    HttpServerConfig config;
    Fixture f;
    uint16_t port;
    char *response;

    http_server_config_init(&config);
    config.listen = "127.0.0.1:0";
    fixture_start(&f, &config, true);
    port = http_server_port(f.server);
    response = request(port, "GET", "/health");
    cr_assert_eq(status_of(response), 503);
    cr_assert_str_eq(body_of(response), "{\"status\":\"unhealthy\"}");
    free(response);
    atomic_store(&f.ready, true);
    response = request(port, "GET", "/health");
    cr_assert_eq(status_of(response), 200);
    cr_assert_str_eq(body_of(response), "{\"status\":\"ok\"}");
    free(response);
    fixture_stop(&f);
}

Test(http_server, other_methods_get_405)
{
    static const char *const methods[] = {"POST", "PUT", "DELETE", "OPTIONS", "PATCH"};
    Fixture f;
    char *response;

    fixture_start_default(&f);
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        response = request(http_server_port(f.server), methods[i], "/metrics");
        cr_assert_eq(status_of(response), 405, "%s: %s", methods[i], response);
        cr_assert(has_prefix(header_of(response, "Allow"), "GET, HEAD\r\n"), "%s", response);
        free(response);
    }
    response = exchange(http_server_port(f.server),
                        "POST /health/live HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                        "Connection: close\r\n\r\nhello");
    cr_assert_eq(status_of(response), 405, "%s", response);
    free(response);
    fixture_stop(&f);
}

Test(http_server, unknown_path_gets_404)
{
    static const char *const paths[] = {"/",         "/metrics/", "/health/", "/health/other",
                                        "/metricsx", "/HEALTH"};
    Fixture f;
    char *response;

    fixture_start_default(&f);
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        response = request(http_server_port(f.server), "GET", paths[i]);
        cr_assert_eq(status_of(response), 404, "%s: %s", paths[i], response);
        free(response);
    }
    response = request(http_server_port(f.server), "POST", "/nowhere");
    cr_assert_eq(status_of(response), 404, "%s", response);
    free(response);
    response = request(http_server_port(f.server), "GET", "/metrics?x=1");
    cr_assert_eq(status_of(response), 200, "a query string does not change the route");
    free(response);
    fixture_stop(&f);
}

Test(http_server, huge_request_line_rejected)
{
    size_t path_len = 1024 * 1024;
    char *line = malloc(path_len + 64);
    Fixture f;
    char *response;
    int status;

    cr_assert_not_null(line);
    fixture_start_default(&f);
    strcpy(line, "GET /");
    memset(line + 5, 'a', path_len);
    strcpy(line + 5 + path_len, " HTTP/1.1\r\nHost: x\r\n\r\n");
    response = exchange(http_server_port(f.server), line);
    status = status_of(response);
    cr_assert_eq(status, 414, "a request line over the memory limit: URI Too Long");
    free(response);
    free(line);

    response = request(http_server_port(f.server), "GET", "/health/live");
    cr_assert_eq(status_of(response), 200, "the server goes on serving");
    free(response);
    fixture_stop(&f);
}

Test(http_server, body_over_limit_closes)
{
    size_t body_len = HTTP_SERVER_BODY_MAX + 1;
    TextBuffer req = TEXT_BUFFER_INIT;
    Fixture f;
    char *response;

    fixture_start_default(&f);
    text_buffer_printf(&req, "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n",
                       body_len);
    text_buffer_reserve(&req, body_len);
    memset(req.data + req.len, 'b', body_len);
    req.len += body_len;
    req.data[req.len] = '\0';
    response = exchange(http_server_port(f.server), req.data);
    cr_assert_null(response, "the connection closes without a response: %s", response);
    text_buffer_free(&req);

    response = request(http_server_port(f.server), "POST", "/metrics");
    cr_assert_eq(status_of(response), 405, "a body-less request still gets its answer");
    free(response);
    fixture_stop(&f);
}

Test(http_server, header_block_over_memory_limit)
{
    HttpServerConfig config;
    TextBuffer req = TEXT_BUFFER_INIT;
    Fixture f;
    char *response;
    int status;

    http_server_config_init(&config);
    config.listen = "127.0.0.1:0";
    config.connection_memory_limit = 8 * 1024;
    fixture_start(&f, &config, false);
    text_buffer_append_str(&req, "GET /metrics HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 200; i++) {
        text_buffer_printf(&req, "X-Filler-%d: %060d\r\n", i, i);
    }
    text_buffer_append_str(&req, "\r\n");
    response = exchange(http_server_port(f.server), req.data);
    status = status_of(response);
    cr_assert_eq(status, 431, "headers over the memory limit: Request Header Fields Too Large");
    free(response);
    text_buffer_free(&req);

    response = request(http_server_port(f.server), "GET", "/metrics");
    cr_assert_eq(status_of(response), 200, "an ordinary request fits in the same limit");
    free(response);
    fixture_stop(&f);
}

/* Wait until `n` of `fds` see end of file or an error, for at most `timeout_ms`. */
static size_t count_closed(const int *fds, size_t n, int timeout_ms)
{
    struct pollfd *pfds = calloc(n, sizeof(*pfds));
    size_t closed = 0;

    cr_assert_not_null(pfds);
    for (size_t i = 0; i < n; i++) {
        pfds[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
    }
    if (poll(pfds, n, timeout_ms) > 0) {
        for (size_t i = 0; i < n; i++) {
            closed += (pfds[i].revents & (POLLIN | POLLHUP | POLLERR)) != 0;
        }
    }
    free(pfds);
    return closed;
}

Test(http_server, idle_connections_capped_per_ip)
{
    enum { IDLE = 500 };
    size_t allowed = HTTP_SERVER_PER_IP_CONNECTION_LIMIT_DEFAULT;
    int fds[IDLE];
    size_t closed = 0;
    Fixture f;
    char *response;

    fixture_start_default(&f);
    for (int i = 0; i < IDLE; i++) {
        fds[i] = connect_from("127.0.0.2", http_server_port(f.server));
    }
    /* The server accepts each connection and closes those past the per-address limit. */
    for (int attempt = 0; attempt < 50 && closed < IDLE - allowed; attempt++) {
        usleep(100 * 1000);
        closed = count_closed(fds, IDLE, 0);
    }
    cr_assert_eq(closed, IDLE - allowed, "%zu of %d idle connections closed", closed, IDLE);

    response = request(http_server_port(f.server), "GET", "/metrics");
    cr_assert_eq(status_of(response), 200, "another client still gets /metrics");
    free(response);
    cr_assert_eq(count_closed(fds, IDLE, 0), IDLE - allowed, "the admitted ones stay open");
    for (int i = 0; i < IDLE; i++) {
        close(fds[i]);
    }
    fixture_stop(&f);
}

Test(http_server, connection_limit_plus_one)
{
    enum { LIMIT = 4 };
    HttpServerConfig config;
    int fds[LIMIT];
    Fixture f;
    char *response;
    int extra;

    http_server_config_init(&config);
    config.listen = "127.0.0.1:0";
    config.connection_limit = LIMIT;
    fixture_start(&f, &config, false);
    for (int i = 0; i < LIMIT; i++) {
        fds[i] = connect_from(NULL, http_server_port(f.server));
    }
    usleep(200 * 1000);
    cr_assert_eq(count_closed(fds, LIMIT, 0), 0, "connections up to the limit are kept");

    /* The connection past the limit gets no response while the others are held. */
    extra = connect_from(NULL, http_server_port(f.server));
    send_all(extra, "GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 57);
    {
        struct pollfd pfd = {.fd = extra, .events = POLLIN};
        char byte;

        if (poll(&pfd, 1, 500) > 0) {
            cr_assert_leq(recv(extra, &byte, 1, 0), 0, "no response past the limit");
        }
    }
    close(extra);

    close(fds[0]);
    usleep(200 * 1000);
    response = request(http_server_port(f.server), "GET", "/health/live");
    cr_assert_eq(status_of(response), 200, "a freed slot serves again");
    free(response);
    for (int i = 1; i < LIMIT; i++) {
        close(fds[i]);
    }
    fixture_stop(&f);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Send `text` one byte per `interval_ms` until the server closes; returns the seconds taken. */
static double trickle_until_closed(int fd, const char *text, int interval_ms, double limit_s)
{
    double start = now_s();
    size_t i = 0;

    while (now_s() - start < limit_s) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        char byte;

        if (send(fd, &text[i % strlen(text)], 1, MSG_NOSIGNAL) < 0) {
            break;
        }
        i++;
        if (poll(&pfd, 1, interval_ms) > 0 && recv(fd, &byte, 1, MSG_DONTWAIT) <= 0) {
            break;
        }
    }
    return now_s() - start;
}

Test(http_server, slow_client_dropped_at_deadline)
{
    HttpServerConfig config;
    Fixture f;
    double elapsed;
    int fd;

    http_server_config_init(&config);
    config.listen = "127.0.0.1:0";
    config.request_timeout_ms = 1000;
    config.connection_timeout_s = 2;
    fixture_start(&f, &config, false);
    fd = connect_from(NULL, http_server_port(f.server));
    /* A byte every 200 ms: MHD's idle timeout of 2 s alone would never fire. */
    elapsed = trickle_until_closed(fd, "GET /metrics HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaa",
                                   200, 6.0);
    close(fd);
    cr_assert_geq(elapsed, 0.9, "closed too early: %.2f s", elapsed);
    cr_assert_lt(elapsed, 2.0, "not closed by the 1 s deadline: %.2f s", elapsed);
    fixture_stop_keep(&f);
    cr_assert_eq(http_server_deadline_drops(f.server), 1);
    fixture_free(&f);
}

Test(http_server, idle_client_dropped_after_timeout)
{
    HttpServerConfig config;
    struct pollfd pfd;
    Fixture f;
    double start, elapsed;
    int fd;

    http_server_config_init(&config);
    config.listen = "127.0.0.1:0";
    config.connection_timeout_s = 1;
    fixture_start(&f, &config, false);
    fd = connect_from(NULL, http_server_port(f.server));
    start = now_s();
    pfd = (struct pollfd){.fd = fd, .events = POLLIN};
    cr_assert_eq(poll(&pfd, 1, 4000), 1, "the idle connection is closed");
    elapsed = now_s() - start;
    cr_assert_geq(elapsed, 0.9, "%.2f s", elapsed);
    cr_assert_lt(elapsed, 2.5, "%.2f s", elapsed);
    close(fd);
    fixture_stop(&f);
}

/* Read one response that ends with `tail`; returns it as a new string. */
static char *read_until(int fd, const char *tail)
{
    TextBuffer buf = TEXT_BUFFER_INIT;
    char chunk[4096];
    size_t len;
    ssize_t n;

    while (!(buf.len >= strlen(tail) && strcmp(buf.data + buf.len - strlen(tail), tail) == 0) &&
           (n = recv(fd, chunk, sizeof(chunk), 0)) > 0) {
        text_buffer_append(&buf, chunk, (size_t)n);
    }
    return text_buffer_steal(&buf, &len);
}

Test(http_server, keep_alive_serves_two_requests)
{
    static const char get[] = "GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n";
    Fixture f;
    char *response;
    int fd;

    fixture_start_default(&f);
    fd = connect_from(NULL, http_server_port(f.server));
    for (int i = 0; i < 2; i++) {
        send_all(fd, get, strlen(get));
        response = read_until(fd, "\r\n\r\nok\n");
        cr_assert_eq(status_of(response), 200, "request %d: %s", i, response);
        cr_assert_null(strstr(response, "Connection: close"), "%s", response);
        free(response);
    }
    close(fd);
    fixture_stop(&f);
}

static int count_fds(void)
{
    DIR *dir = opendir("/proc/self/fd");
    struct dirent *entry;
    int n = 0;

    cr_assert_not_null(dir);
    while ((entry = readdir(dir))) {
        n += entry->d_name[0] != '.';
    }
    closedir(dir);
    return n;
}

Test(http_server, bind_failure_reported, .init = cr_redirect_stderr)
{
    HttpServerConfig config;
    HttpServer *second = NULL;
    char listen[64], expected[128], line[512];
    bool found = false;
    Fixture f;
    FILE *err;
    int fds_before;

    fixture_start_default(&f);
    snprintf(listen, sizeof(listen), "127.0.0.1:%u", http_server_port(f.server));
    http_server_config_init(&config);
    config.listen = listen;
    fds_before = count_fds();
    cr_assert_eq(http_server_start(f.loop, &config, NULL, NULL, &second), -EADDRINUSE);
    cr_assert_null(second);
    cr_assert_eq(count_fds(), fds_before, "no descriptor leaks on failure");
    fixture_stop(&f);

    fflush(stderr);
    snprintf(expected, sizeof(expected), "Failed to listen on %s: Address already in use", listen);
    err = cr_get_redirected_stderr();
    while (fgets(line, sizeof(line), err)) {
        found = found || strstr(line, expected);
    }
    cr_assert(found, "stderr has \"%s\"", expected);
}

Test(http_server, free_closes_descriptors)
{
    int before = count_fds();
    Fixture f;
    char *response;

    fixture_start_default(&f);
    response = request(http_server_port(f.server), "GET", "/metrics");
    cr_assert_eq(status_of(response), 200);
    free(response);
    fixture_stop(&f);
    cr_assert_eq(count_fds(), before);
}

static bool ipv6_loopback_available(void)
{
    struct sockaddr_in6 addr = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok = fd >= 0 && bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0;

    if (fd >= 0) {
        close(fd);
    }
    return ok;
}

Test(http_server, ipv6_loopback)
{
    struct sockaddr_in6 addr = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    static const char get[] = "GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    HttpServerConfig config;
    Fixture f;
    char *response;
    int fd;

    if (!ipv6_loopback_available()) {
        cr_skip_test("no IPv6 loopback here");
    }
    http_server_config_init(&config);
    config.listen = "[::1]:0";
    fixture_start(&f, &config, false);
    addr.sin6_port = htons(http_server_port(f.server));
    fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    cr_assert_eq(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0, "%s", strerror(errno));
    send_all(fd, get, strlen(get));
    response = read_all(fd);
    cr_assert_eq(status_of(response), 200, "%s", response);
    free(response);
    close(fd);
    fixture_stop(&f);
}

Test(http_server, parse_listen)
{
    static const char *const valid[] = {"127.0.0.1:9568", "0.0.0.0:0", "[::1]:9568", "[::]:80",
                                        "10.1.2.3:65535"};
    static const char *const invalid[] = {"127.0.0.1",    "127.0.0.1:",     "127.0.0.1:65536",
                                          "127.0.0.1:-1", "localhost:9568", "::1:9568",
                                          "[::1]9568",    "[127.0.0.1]:80", ":9568",
                                          "1.2.3.4:9x",   "[::1]:",         ""};
    struct sockaddr_storage addr;
    socklen_t len = 0;

    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        cr_assert_eq(http_server_parse_listen(valid[i], &addr, &len), 0, "%s", valid[i]);
    }
    cr_assert_eq(http_server_parse_listen("[::1]:9568", &addr, &len), 0);
    cr_assert_eq(addr.ss_family, AF_INET6);
    cr_assert_eq(ntohs(((struct sockaddr_in6 *)&addr)->sin6_port), 9568);
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        len = 7;
        cr_assert_eq(http_server_parse_listen(invalid[i], &addr, &len), -EINVAL, "%s", invalid[i]);
        cr_assert_eq(len, 7, "output untouched on failure");
    }
}

Test(http_server, invalid_config_rejected)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    HttpServerConfig config;
    HttpServer *server = NULL;

    http_server_config_init(&config);
    config.listen = "localhost:1";
    cr_assert_eq(http_server_start(loop, &config, NULL, NULL, &server), -EINVAL);
    http_server_config_init(&config);
    config.listen = "127.0.0.1:0";
    config.connection_limit = 0;
    cr_assert_eq(http_server_start(loop, &config, NULL, NULL, &server), -EINVAL);
    cr_assert_null(server);
    ev_loop_destroy(loop);
}

/* Fill `fds` (up to `max`) with the open descriptors of this process; returns how many. */
static size_t list_fds(int *fds, size_t max)
{
    DIR *dir = opendir("/proc/self/fd");
    struct dirent *entry;
    size_t n = 0;

    cr_assert_not_null(dir);
    while ((entry = readdir(dir)) && n < max) {
        if (entry->d_name[0] != '.' && atoi(entry->d_name) != dirfd(dir)) {
            fds[n++] = atoi(entry->d_name);
        }
    }
    closedir(dir);
    return n;
}

static bool fd_in(int fd, const int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (fds[i] == fd) {
            return true;
        }
    }
    return false;
}

Test(http_server, descriptors_close_on_exec)
{
    int before[256], during[256];
    size_t n_before, n_during, checked = 0;
    Fixture f;
    int client;

    n_before = list_fds(before, 256);
    fixture_start_default(&f);
    client = connect_from(NULL, http_server_port(f.server));
    usleep(200 * 1000); /* let the server accept the connection */
    n_during = list_fds(during, 256);
    for (size_t i = 0; i < n_during; i++) {
        int flags;

        if (fd_in(during[i], before, n_before) || during[i] == client) {
            continue;
        }
        /* The new descriptors include libev's (its epoll and eventfd), which must pass too. */
        flags = fcntl(during[i], F_GETFD);
        cr_assert_geq(flags, 0);
        checked++;
        cr_assert(flags & FD_CLOEXEC, "fd %d is inherited by exec'd children", during[i]);
    }
    /* The listening socket, the MHD epoll descriptor and the accepted connection at least. */
    cr_assert_geq(checked, 3, "only %zu new descriptors", checked);
    close(client);
    fixture_stop(&f);
}
