/* SPDX-License-Identifier: Apache-2.0 */
/* Cookie lookup: an explicit file, systemd credentials, an environment variable, then $HOME. */
#include "cookie.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void strip_newline(char *s, size_t *len)
{
    if (*len > 0 && s[*len - 1] == '\n') {
        s[--*len] = '\0';
        if (*len > 0 && s[*len - 1] == '\r') {
            s[--*len] = '\0';
        }
    }
}

static int cookie_check(const char *value, size_t len, char *cookie, size_t cookie_size)
{
    if (len == 0) {
        return -ENODATA;
    }
    if (len > COOKIE_MAX || len >= cookie_size) {
        return -E2BIG;
    }
    memcpy(cookie, value, len);
    cookie[len] = '\0';
    return 0;
}

int cookie_read_file(const char *path, char *cookie, size_t cookie_size)
{
    char buf[COOKIE_MAX + 3];
    size_t len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        return -errno;
    }
    while (len < sizeof(buf) - 1) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            int r = -errno;
            close(fd);
            return r;
        }
        if (n == 0) {
            break;
        }
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    strip_newline(buf, &len);
    if (strlen(buf) != len) {
        return -EINVAL; /* a NUL byte inside */
    }
    return cookie_check(buf, len, cookie, cookie_size);
}

static const char *describe(int r)
{
    switch (r) {
    case -ENODATA:
        return "empty";
    case -E2BIG:
        return "longer than 255 bytes";
    case -EINVAL:
        return "contains a NUL byte";
    default:
        return strerror(-r);
    }
}

static void append(char *err, size_t size, const char *what, const char *detail)
{
    size_t len = strlen(err);

    if (len < size) {
        snprintf(err + len, size - len, "%s%s (%s)", len ? ", " : "", what, detail);
    }
}

int cookie_load(const char *cookie_file, char *cookie, size_t cookie_size, char *err,
                size_t err_size)
{
    char path[4096];
    const char *dir;
    const char *env;
    int r;

    err[0] = '\0';
    if (cookie_file && cookie_file[0]) {
        r = cookie_read_file(cookie_file, cookie, cookie_size);
        if (r < 0) {
            append(err, err_size, cookie_file, describe(r));
        }
        /* An explicit file is the only place looked at. */
        return r;
    }
    dir = getenv("CREDENTIALS_DIRECTORY");
    if (dir && dir[0]) {
        snprintf(path, sizeof(path), "%s/cookie", dir);
        r = cookie_read_file(path, cookie, cookie_size);
        if (r == 0) {
            return 0;
        }
        append(err, err_size, path, describe(r));
    } else {
        append(err, err_size, "$CREDENTIALS_DIRECTORY/cookie", "CREDENTIALS_DIRECTORY is not set");
    }
    env = getenv("SNAKEPIT_COOKIE");
    if (env) {
        r = cookie_check(env, strlen(env), cookie, cookie_size);
        if (r == 0) {
            return 0;
        }
        append(err, err_size, "$SNAKEPIT_COOKIE", describe(r));
    } else {
        append(err, err_size, "$SNAKEPIT_COOKIE", "not set");
    }
    env = getenv("HOME");
    if (env && env[0]) {
        snprintf(path, sizeof(path), "%s/.erlang.cookie", env);
        r = cookie_read_file(path, cookie, cookie_size);
        if (r == 0) {
            return 0;
        }
        append(err, err_size, path, describe(r));
        return r;
    }
    append(err, err_size, "$HOME/.erlang.cookie", "HOME is not set");
    return -ENOENT;
}
