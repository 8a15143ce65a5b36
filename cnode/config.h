/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The daemon's configuration: defaults, the INI file (parsed with libinih) and command-line
 * flags, which override the file. Unknown sections and keys are errors naming their line.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "log.h"

#define CONFIG_MAX_POOLS 16
#define CONFIG_MAX_LIBRARIES 256
#define CONFIG_MAX_PRELOAD 64
#define CONFIG_NAME_MAX 128
#define CONFIG_ERROR_MAX 512

typedef struct {
    char name[CONFIG_NAME_MAX];
    unsigned size;
    char python[1024];       /* interpreter or virtualenv prefix, "auto" for the linked one */
    char preload[1024];      /* comma-separated module names */
    char adapter[256];       /* package.module:Class, or empty */
    unsigned max_queue;
    unsigned queue_timeout_ms;
    unsigned request_timeout_ms;
    unsigned blas_threads;
    unsigned max_requests;   /* recycle a worker after this many calls; 0 = never */
    unsigned max_age_s;      /* recycle a worker older than this; 0 = never */
    unsigned max_rss_mb;     /* recycle a worker whose resident memory passes this; 0 = never */
    unsigned heartbeat_interval_ms;
    unsigned heartbeat_misses;
    unsigned kill_grace_ms;  /* after interrupting a call past its deadline, before SIGKILL */
} PoolConfig;

typedef struct {
    char name[CONFIG_NAME_MAX];
    char module[CONFIG_NAME_MAX];
    char pip_package[CONFIG_NAME_MAX];
    char pool[CONFIG_NAME_MAX];
} LibraryConfig;

typedef struct {
    /* [node] */
    char node_name[512];  /* sname or name as given; completed with the host at start */
    bool long_names;
    char cookie_file[1024];
    char registered_name[256];
    bool allow_client_libraries;
    char owner[512];
    unsigned owner_grace_ms;
    size_t max_message_bytes;
    unsigned max_connections;
    size_t max_output_bytes;
    unsigned handshake_timeout_ms;
    unsigned peer_idle_timeout_ms;
    unsigned max_depth;
    unsigned shutdown_timeout_ms;
    bool telemetry; /* false: no telemetry events and no event-driven metrics */

    /* [http] */
    char http_listen[256]; /* ADDR:PORT or "off" */

    /* [store] */
    char store_backend[32];
    char store_url[1024];
    char store_key_prefix[128];
    unsigned store_default_ttl_s;
    unsigned store_max_sessions;
    size_t store_max_value_bytes;
    unsigned store_max_vars;
    size_t store_max_memory_bytes;
    unsigned store_connect_timeout_ms;
    unsigned store_command_timeout_ms;
    unsigned session_owner_grace_ms;

    /* [log] */
    int log_level;
    LogFormat log_format;

    PoolConfig pools[CONFIG_MAX_POOLS];
    size_t pool_count;
    LibraryConfig libraries[CONFIG_MAX_LIBRARIES];
    size_t library_count;

    /* command line only */
    char config_file[1024];
    bool check_config;
} Config;

/* Fill `config` with the defaults: sname snakepit, one pool "default" with one worker per CPU. */
void config_init(Config *config);

/* Parse INI text. Returns 0, or -EINVAL with a message ("line N: ...") in err. */
int config_parse_string(Config *config, const char *text, char *err, size_t err_size);

/* Load an INI file. Returns 0, -errno when it cannot be read, -EINVAL on a bad line. */
int config_load_file(Config *config, const char *path, char *err, size_t err_size);

/* Apply one setting as the file would: section like "pool default", key and value. */
int config_set(Config *config, const char *section, const char *key, const char *value,
               char *err, size_t err_size);

/* Find a pool by name; NULL when there is none. */
PoolConfig *config_find_pool(Config *config, const char *name);

/* Check cross-field rules after everything is applied (libraries name existing pools, ...). */
int config_validate(Config *config, char *err, size_t err_size);
