/* SPDX-License-Identifier: Apache-2.0 */
/* Configuration defaults, INI parsing through libinih, and validation. */
#include "config.h"

#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dist.h"

static void pool_init(PoolConfig *pool, const char *name)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);

    memset(pool, 0, sizeof(*pool));
    snprintf(pool->name, sizeof(pool->name), "%s", name);
    pool->size = cpus > 0 ? (unsigned)cpus : 1;
    snprintf(pool->python, sizeof(pool->python), "auto");
    pool->max_queue = 1000;
    pool->queue_timeout_ms = 5000;
    pool->request_timeout_ms = 30000;
    pool->blas_threads = 1;
    pool->heartbeat_interval_ms = 1000;
    pool->heartbeat_misses = 3;
    pool->kill_grace_ms = 500;
}

void config_init(Config *c)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->node_name, sizeof(c->node_name), "snakepit");
    snprintf(c->registered_name, sizeof(c->registered_name), "snakepit");
    c->owner_grace_ms = 30000;
    c->max_message_bytes = DIST_MAX_MESSAGE_BYTES_DEFAULT;
    c->max_connections = DIST_MAX_CONNECTIONS_DEFAULT;
    c->max_output_bytes = DIST_MAX_OUTPUT_BYTES_DEFAULT;
    c->handshake_timeout_ms = DIST_HANDSHAKE_TIMEOUT_MS_DEFAULT;
    c->peer_idle_timeout_ms = DIST_PEER_IDLE_TIMEOUT_MS_DEFAULT;
    c->max_depth = 256;
    c->shutdown_timeout_ms = 10000;
    c->telemetry = true;
    snprintf(c->http_listen, sizeof(c->http_listen), "127.0.0.1:9568");
    snprintf(c->store_backend, sizeof(c->store_backend), "memory");
    snprintf(c->store_url, sizeof(c->store_url), "redis://127.0.0.1:6379/0");
    snprintf(c->store_key_prefix, sizeof(c->store_key_prefix), "snakepit:");
    c->store_default_ttl_s = 3600;
    c->store_max_sessions = 10000;
    c->store_max_value_bytes = 16u * 1024 * 1024;
    c->store_max_vars = 1024;
    c->store_max_memory_bytes = 1024ull * 1024 * 1024;
    c->store_connect_timeout_ms = 2000;
    c->store_command_timeout_ms = 5000;
    c->session_owner_grace_ms = 5000;
    c->log_level = LOG_INFO;
    c->log_format = LOG_FORMAT_TEXT;
    pool_init(&c->pools[0], "default");
    c->pool_count = 1;
}

static int set_error(char *err, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int set_error(char *err, size_t size, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, size, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

static int parse_uint(const char *value, unsigned long long max, unsigned long long *out)
{
    char *end;

    if (value[0] == '\0' || value[0] == '-') {
        return -EINVAL;
    }
    errno = 0;
    unsigned long long v = strtoull(value, &end, 10);
    if (errno != 0 || *end != '\0' || v > max) {
        return -EINVAL;
    }
    *out = v;
    return 0;
}

static int parse_bool(const char *value, bool *out)
{
    if (strcmp(value, "true") == 0 || strcmp(value, "yes") == 0 || strcmp(value, "1") == 0) {
        *out = true;
        return 0;
    }
    if (strcmp(value, "false") == 0 || strcmp(value, "no") == 0 || strcmp(value, "0") == 0) {
        *out = false;
        return 0;
    }
    return -EINVAL;
}

static int copy_string(char *dst, size_t size, const char *value)
{
    if (strlen(value) >= size) {
        return -ENAMETOOLONG;
    }
    memcpy(dst, value, strlen(value) + 1);
    return 0;
}

typedef enum { KEY_STRING, KEY_UINT, KEY_SIZE, KEY_BOOL } KeyType;

typedef struct {
    const char *key;
    KeyType type;
    size_t offset;
    size_t size; /* string buffer size */
    unsigned long long min;
    unsigned long long max;
} KeySpec;

#define STR(s, f) {#f, KEY_STRING, offsetof(s, f), sizeof(((s *)0)->f), 0, 0}
#define UINT(s, f, lo, hi) {#f, KEY_UINT, offsetof(s, f), 0, lo, hi}
#define SIZE(s, f, lo, hi) {#f, KEY_SIZE, offsetof(s, f), 0, lo, hi}
#define BOOL(s, f) {#f, KEY_BOOL, offsetof(s, f), 0, 0, 1}

static const KeySpec node_keys[] = {
    STR(Config, cookie_file),
    STR(Config, registered_name),
    BOOL(Config, allow_client_libraries),
    STR(Config, owner),
    UINT(Config, owner_grace_ms, 0, 86400000),
    SIZE(Config, max_message_bytes, 1024, 1ull << 31),
    UINT(Config, max_connections, 1, 65536),
    SIZE(Config, max_output_bytes, 65536, 1ull << 34),
    UINT(Config, handshake_timeout_ms, 100, 600000),
    UINT(Config, peer_idle_timeout_ms, 1000, 86400000),
    UINT(Config, max_depth, 2, 100000),
    UINT(Config, shutdown_timeout_ms, 0, 600000),
    BOOL(Config, telemetry),
    {NULL, KEY_STRING, 0, 0, 0, 0},
};

static const KeySpec store_keys[] = {
    STR(Config, store_backend),
    STR(Config, store_url),
    STR(Config, store_key_prefix),
    UINT(Config, store_default_ttl_s, 1, 31536000),
    UINT(Config, store_max_sessions, 1, 100000000),
    SIZE(Config, store_max_value_bytes, 1, 1ull << 31),
    UINT(Config, store_max_vars, 1, 1000000),
    SIZE(Config, store_max_memory_bytes, 1024 * 1024, 1ull << 40),
    UINT(Config, store_connect_timeout_ms, 10, 600000),
    UINT(Config, store_command_timeout_ms, 10, 600000),
    UINT(Config, session_owner_grace_ms, 0, 86400000),
    {NULL, KEY_STRING, 0, 0, 0, 0},
};

static const KeySpec pool_keys[] = {
    UINT(PoolConfig, size, 1, 1024),
    STR(PoolConfig, python),
    STR(PoolConfig, preload),
    STR(PoolConfig, adapter),
    UINT(PoolConfig, max_queue, 0, 10000000),
    UINT(PoolConfig, queue_timeout_ms, 1, 86400000),
    UINT(PoolConfig, request_timeout_ms, 1, 86400000),
    UINT(PoolConfig, blas_threads, 1, 1024),
    UINT(PoolConfig, max_requests, 0, 4000000000u),
    UINT(PoolConfig, max_age_s, 0, 31536000),
    UINT(PoolConfig, max_rss_mb, 0, 1048576),
    UINT(PoolConfig, heartbeat_interval_ms, 50, 600000),
    UINT(PoolConfig, heartbeat_misses, 1, 1000),
    UINT(PoolConfig, kill_grace_ms, 0, 600000),
    {NULL, KEY_STRING, 0, 0, 0, 0},
};

static const KeySpec library_keys[] = {
    STR(LibraryConfig, module),
    STR(LibraryConfig, pip_package),
    STR(LibraryConfig, pool),
    {NULL, KEY_STRING, 0, 0, 0, 0},
};

/* Store keys are written with their section's name: [store] backend = ... */
static const char *store_key_alias(const char *key, char *buf, size_t size)
{
    if (strcmp(key, "session_owner_grace_ms") == 0) {
        return key;
    }
    snprintf(buf, size, "store_%s", key);
    return buf;
}

/* Set the field that `specs` names `spec_key`; messages name the key as the file spells it. */
static int apply_key(const KeySpec *specs, void *base, const char *section, const char *spec_key,
                     const char *key, const char *value, char *err, size_t size)
{
    for (const KeySpec *k = specs; k->key; k++) {
        if (strcmp(k->key, spec_key) != 0) {
            continue;
        }
        char *field = (char *)base + k->offset;
        unsigned long long v;
        switch (k->type) {
        case KEY_STRING:
            if (copy_string(field, k->size, value) < 0) {
                return set_error(err, size, "value of '%s' in [%s] is too long", key, section);
            }
            return 0;
        case KEY_BOOL:
            if (parse_bool(value, (bool *)field) < 0) {
                return set_error(err, size, "invalid value for '%s' in [%s]: expected true or "
                                 "false", key, section);
            }
            return 0;
        case KEY_UINT:
        case KEY_SIZE:
            if (parse_uint(value, k->max, &v) < 0 || v < k->min) {
                char range[128];
                snprintf(range, sizeof(range), "'%s' must be an integer from %llu to %llu", key,
                         k->min, k->max);
                return set_error(err, size, "invalid value '%s': %s", value, range);
            }
            if (k->type == KEY_UINT) {
                *(unsigned *)field = (unsigned)v;
            } else {
                *(size_t *)field = (size_t)v;
            }
            return 0;
        }
    }
    return set_error(err, size, "unknown key '%s' in section [%s]", key, section);
}

PoolConfig *config_find_pool(Config *c, const char *name)
{
    for (size_t i = 0; i < c->pool_count; i++) {
        if (strcmp(c->pools[i].name, name) == 0) {
            return &c->pools[i];
        }
    }
    return NULL;
}

static LibraryConfig *find_or_add_library(Config *c, const char *name)
{
    for (size_t i = 0; i < c->library_count; i++) {
        if (strcmp(c->libraries[i].name, name) == 0) {
            return &c->libraries[i];
        }
    }
    if (c->library_count == CONFIG_MAX_LIBRARIES || strlen(name) >= CONFIG_NAME_MAX) {
        return NULL;
    }
    LibraryConfig *lib = &c->libraries[c->library_count++];
    memset(lib, 0, sizeof(*lib));
    snprintf(lib->name, sizeof(lib->name), "%s", name);
    snprintf(lib->module, sizeof(lib->module), "%s", name);
    snprintf(lib->pool, sizeof(lib->pool), "default");
    return lib;
}

static PoolConfig *find_or_add_pool(Config *c, const char *name)
{
    PoolConfig *pool = config_find_pool(c, name);

    if (pool || c->pool_count == CONFIG_MAX_POOLS || strlen(name) >= CONFIG_NAME_MAX) {
        return pool;
    }
    pool = &c->pools[c->pool_count++];
    pool_init(pool, name);
    return pool;
}

static int set_node_key(Config *c, const char *key, const char *value, char *err, size_t size)
{
    if (strcmp(key, "sname") == 0 || strcmp(key, "name") == 0) {
        c->long_names = strcmp(key, "name") == 0;
        if (copy_string(c->node_name, sizeof(c->node_name), value) < 0 || value[0] == '\0') {
            return set_error(err, size, "invalid node name '%s' for '%s'", value, key);
        }
        return 0;
    }
    return apply_key(node_keys, c, "node", key, key, value, err, size);
}

static int set_log_key(Config *c, const char *key, const char *value, char *err, size_t size)
{
    if (strcmp(key, "level") == 0) {
        int level = log_level_from_string(value);
        if (level < 0) {
            return set_error(err, size, "invalid log level '%s' for '%s': expected error, "
                             "warning, notice, info or debug", value, key);
        }
        c->log_level = level;
        return 0;
    }
    if (strcmp(key, "format") == 0) {
        if (strcmp(value, "text") == 0) {
            c->log_format = LOG_FORMAT_TEXT;
        } else if (strcmp(value, "json") == 0) {
            c->log_format = LOG_FORMAT_JSON;
        } else {
            return set_error(err, size, "invalid log format '%s' for '%s': expected text or "
                             "json", value, key);
        }
        return 0;
    }
    return set_error(err, size, "unknown key '%s' in section [%s]", key, "log");
}

int config_set(Config *c, const char *section, const char *key, const char *value, char *err,
               size_t size)
{
    char alias[160];

    if (strcmp(section, "node") == 0) {
        return set_node_key(c, key, value, err, size);
    }
    if (strcmp(section, "http") == 0) {
        if (strcmp(key, "listen") != 0) {
            return set_error(err, size, "unknown key '%s' in section [%s]", key, section);
        }
        return copy_string(c->http_listen, sizeof(c->http_listen), value) < 0
                   ? set_error(err, size, "value of '%s' in [%s] is too long", key, section)
                   : 0;
    }
    if (strcmp(section, "store") == 0) {
        return apply_key(store_keys, c, section, store_key_alias(key, alias, sizeof(alias)),
                         key, value, err, size);
    }
    if (strcmp(section, "log") == 0) {
        return set_log_key(c, key, value, err, size);
    }
    if (strncmp(section, "pool ", 5) == 0 && section[5] != '\0') {
        PoolConfig *pool = find_or_add_pool(c, section + 5);
        if (!pool) {
            return set_error(err, size, "too many pools or pool name too long in [%s]",
                             section);
        }
        return apply_key(pool_keys, pool, section, key, key, value, err, size);
    }
    if (strncmp(section, "library ", 8) == 0 && section[8] != '\0') {
        LibraryConfig *lib = find_or_add_library(c, section + 8);
        if (!lib) {
            return set_error(err, size, "too many libraries or library name too long in [%s]",
                             section);
        }
        return apply_key(library_keys, lib, section, key, key, value, err, size);
    }
    return set_error(err, size, "unknown section [%s]", section);
}

/*
 * libinih reports the first bad line but goes on parsing, and it passes the handler no line
 * number. Our reader gives inih one whole line per call, so the handler knows its line and the
 * message kept is the one of the first bad line. A line longer than inih's fixed buffer is
 * reported as too long instead of being parsed in pieces.
 */
typedef struct {
    Config *config;
    char *err;
    size_t err_size;
    FILE *file;       /* the source: a file, or else `text` */
    const char *text;
    int line;         /* the line inih is working on */
    int error_line;   /* the first line that failed in the handler or was too long; 0 for none */
} ParseState;

static int source_next(ParseState *st)
{
    if (st->file) {
        return getc(st->file);
    }
    return *st->text ? (unsigned char)*st->text++ : EOF;
}

static int source_peek(ParseState *st)
{
    if (st->file) {
        int ch = getc(st->file);
        return ch == EOF ? EOF : ungetc(ch, st->file);
    }
    return *st->text ? (unsigned char)*st->text : EOF;
}

/* An ini_reader: copy one line into str[0..num), dropping the rest of a line that is too long. */
static char *read_line(char *str, int num, void *stream)
{
    ParseState *st = stream;
    int n = 0;
    int ch = EOF;

    while (n < num - 1 && (ch = source_next(st)) != EOF) {
        str[n++] = (char)ch;
        if (ch == '\n') {
            break;
        }
    }
    if (n == 0) {
        return NULL;
    }
    str[n] = '\0';
    st->line++;
    if (ch != '\n' && ch != EOF && source_peek(st) == '\n') {
        source_next(st); /* the line fits exactly without its newline */
    } else if (ch != '\n' && ch != EOF && source_peek(st) != EOF) {
        while ((ch = source_next(st)) != EOF && ch != '\n') {
        }
        if (!st->error_line) {
            st->error_line = st->line;
            set_error(st->err, st->err_size, "the line is longer than %d bytes, the maximum",
                      num - 1);
        }
    }
    return str;
}

static int config_ini_handler(void *user, const char *section, const char *name, const char *value)
{
    ParseState *st = user;

    if (!name || st->error_line) {
        /* Keep the first error's message: inih reports the first bad line. */
        return 1;
    }
    if (config_set(st->config, section, name, value, st->err, st->err_size) != 0) {
        st->error_line = st->line;
        return 0;
    }
    return 1;
}

/* Turn inih's result (first line with a syntax error, or a negative code) into ours. */
static int finish_parse(ParseState *st, int line)
{
    char copy[CONFIG_ERROR_MAX];

    if (line < 0) {
        snprintf(st->err, st->err_size, "%s",
                 line == -2 ? "out of memory" : "cannot read the file");
        return line == -2 ? -ENOMEM : -EIO;
    }
    if (line > 0 && (st->error_line == 0 || line < st->error_line)) {
        snprintf(st->err, st->err_size, "line %d: syntax error", line);
        return -EINVAL;
    }
    if (st->error_line == 0) {
        return 0;
    }
    snprintf(copy, sizeof(copy), "%s", st->err);
    snprintf(st->err, st->err_size, "line %d: %s", st->error_line, copy);
    return -EINVAL;
}

int config_parse_string(Config *c, const char *text, char *err, size_t size)
{
    ParseState st = {.config = c, .err = err, .err_size = size, .text = text};

    err[0] = '\0';
    return finish_parse(&st, ini_parse_stream(read_line, &st, config_ini_handler, &st));
}

int config_load_file(Config *c, const char *path, char *err, size_t size)
{
    ParseState st = {.config = c, .err = err, .err_size = size};
    FILE *f = fopen(path, "re");

    err[0] = '\0';
    if (!f) {
        int r = -errno;
        snprintf(err, size, "cannot open %s: %s", path, strerror(errno));
        return r;
    }
    st.file = f;
    int line = ini_parse_stream(read_line, &st, config_ini_handler, &st);
    fclose(f);
    return finish_parse(&st, line);
}

int config_validate(Config *c, char *err, size_t size)
{
    if (strcmp(c->store_backend, "memory") != 0 && strcmp(c->store_backend, "redis") != 0) {
        return set_error(err, size, "invalid store backend '%s': expected memory or redis",
                         c->store_backend);
    }
    for (size_t i = 0; i < c->pool_count; i++) {
        const char *python = c->pools[i].python;
        struct stat st;
        if (python[0] && strcmp(python, "auto") != 0 && stat(python, &st) < 0) {
            return set_error(err, size,
                             "pool '%s': python = %s does not exist (%s); give an interpreter, "
                             "a virtualenv directory, or auto",
                             c->pools[i].name, python, strerror(errno));
        }
    }
    for (size_t i = 0; i < c->library_count; i++) {
        if (!config_find_pool(c, c->libraries[i].pool)) {
            return set_error(err, size, "library '%s' names pool '%s', which is not configured",
                             c->libraries[i].name, c->libraries[i].pool);
        }
        if (c->libraries[i].module[0] == '\0') {
            return set_error(err, size, "library '%s' has an empty module",
                             c->libraries[i].name);
        }
    }
    return 0;
}
