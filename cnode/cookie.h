/* SPDX-License-Identifier: Apache-2.0 */
/* Finding and reading the Erlang distribution cookie. */
#pragma once

#include <stddef.h>

#define COOKIE_MAX 255

/*
 * Read the cookie from, in order: `cookie_file` when not NULL or empty,
 * $CREDENTIALS_DIRECTORY/cookie (systemd LoadCredential=), $SNAKEPIT_COOKIE (for tests),
 * $HOME/.erlang.cookie. One trailing newline (and carriage return) is stripped. Returns 0, or a
 * negative errno with `err` naming every place that was looked at.
 */
int cookie_load(const char *cookie_file, char *cookie, size_t cookie_size, char *err,
                size_t err_size);

/* Read and check one cookie file. Returns 0, -errno, -ENODATA (empty) or -E2BIG. */
int cookie_read_file(const char *path, char *cookie, size_t cookie_size);
