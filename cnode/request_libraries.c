/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `{register_libraries, [#{name, module, pip_package}]}`: clients add modules to a pool's
 * allowlist, when the config allows it ([node] allow_client_libraries). Nothing is installed:
 * the module must already be importable by the pool's interpreter.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "daemon.h"

/* A dotted Python module path: identifiers of letters, digits and underscores. */
static bool module_name_valid(const char *name)
{
    bool start = true;

    if (name[0] == '\0') {
        return false;
    }
    for (const char *p = name; *p; p++) {
        if (*p == '.') {
            if (start) {
                return false;
            }
            start = true;
            continue;
        }
        if (!(isalnum((unsigned char)*p) || *p == '_') || (start && isdigit((unsigned char)*p))) {
            return false;
        }
        start = false;
    }
    return !start;
}

static bool already_allowed(const Daemon *d, size_t pool_index, const char *module)
{
    for (size_t i = 0; i < d->allowed_count; i++) {
        if (d->allowed[i].pool_index == pool_index && strcmp(d->allowed[i].module, module) == 0) {
            return true;
        }
    }
    return false;
}

/* Decode one library map; fills module and pool (default "default"). Returns 0 or -1. */
static int decode_library(const char *buf, int *index, char *module, size_t module_size,
                          char *pool, size_t pool_size)
{
    int arity;
    char key[MAXATOMLEN_UTF8];

    module[0] = '\0';
    snprintf(pool, pool_size, "default");
    if (ei_decode_map_header(buf, index, &arity) < 0) {
        return -1;
    }
    for (int i = 0; i < arity; i++) {
        int type;
        int size;
        if (ei_decode_atom(buf, index, key) < 0 || ei_get_type(buf, index, &type, &size) < 0) {
            return -1;
        }
        char *target = strcmp(key, "module") == 0 ? module : strcmp(key, "pool") == 0 ? pool : NULL;
        size_t target_size = target == module ? module_size : pool_size;
        if (!target) {
            if (ei_skip_term(buf, index) < 0) {
                return -1;
            }
            continue;
        }
        long len;
        if (type != ERL_BINARY_EXT || size < 1 || (size_t)size >= target_size ||
            ei_decode_binary(buf, index, target, &len) < 0) {
            return -1;
        }
        target[len] = '\0';
        if (strlen(target) != (size_t)len) {
            return -1; /* a NUL byte inside */
        }
    }
    return module[0] ? 0 : -1;
}

void request_register_libraries(Daemon *d, DistCaller *caller, const char *request, int index,
                                int arity)
{
    char module[CONFIG_NAME_MAX];
    char pool[CONFIG_NAME_MAX];
    char message[512];
    int count;

    if (!d->config->allow_client_libraries) {
        request_reply_error(d, caller, ERROR_NOT_ALLOWED,
                            "client library registration is disabled; set "
                            "allow_client_libraries = true in [node] to enable it");
        return;
    }
    if (arity != 1 || ei_decode_list_header(request, &index, &count) < 0) {
        request_reply_error(d, caller, ERROR_BAD_REQUEST,
                            "expected {:register_libraries, [%{name:, module:, pip_package:}]}");
        return;
    }
    size_t first = d->allowed_count;

    for (int i = 0; i < count; i++) {
        if (decode_library(request, &index, module, sizeof(module), pool, sizeof(pool)) < 0 ||
            !module_name_valid(module)) {
            d->allowed_count = first;
            request_reply_error(d, caller, ERROR_BAD_REQUEST,
                                "each library must be a map with a binary module, a dotted "
                                "Python module path (and optionally a binary pool)");
            return;
        }
        size_t pool_index = SIZE_MAX;
        for (size_t p = 0; p < d->pool_count; p++) {
            if (strcmp(worker_pool_name(d->pools[p]), pool) == 0) {
                pool_index = p;
            }
        }
        if (pool_index == SIZE_MAX) {
            snprintf(message, sizeof(message), "unknown pool '%s' for library '%s'", pool,
                     module);
            d->allowed_count = first;
            request_reply_error(d, caller, ERROR_BAD_REQUEST, message);
            return;
        }
        if (already_allowed(d, pool_index, module)) {
            continue;
        }
        if (d->allowed_count == DAEMON_MAX_ALLOWED) {
            snprintf(message, sizeof(message), "too many libraries: the maximum is %d",
                     DAEMON_MAX_ALLOWED);
            d->allowed_count = first;
            request_reply_error(d, caller, ERROR_OVERLOADED, message);
            return;
        }
        AllowedModule *a = &d->allowed[d->allowed_count++];
        a->pool_index = pool_index;
        snprintf(a->module, sizeof(a->module), "%s", module);
    }
    /* All or nothing: the list is applied only when every entry is valid. */
    for (size_t i = first; i < d->allowed_count; i++) {
        log_info("Node %s registered library '%s' in pool '%s'", caller->node,
                 d->allowed[i].module, worker_pool_name(d->pools[d->allowed[i].pool_index]));
    }
    ei_x_buff x;
    if (ei_x_new(&x) < 0) {
        request_reply_error(d, caller, ERROR_OVERLOADED, "out of memory");
        return;
    }
    ei_x_encode_atom(&x, "ok");
    request_reply(d, caller, x.buff, (size_t)x.index);
    ei_x_free(&x);
}
