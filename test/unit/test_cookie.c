/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the cookie lookup: newline stripping, the 255-byte limit, empty and missing
 * files, the order of the places looked at, and error text that names each of them. Criterion
 * runs every test in its own process, so the environment changes stay inside one test.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cookie.h"

#define ERR_MAX 2048

/* A fresh temporary directory; removed with its files by remove_dir(). */
static void make_dir(char *dir, size_t size)
{
    snprintf(dir, size, "/tmp/snakepit-test-cookie-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void write_file(const char *dir, const char *name, const void *data, size_t len,
                       char *path, size_t path_size)
{
    snprintf(path, path_size, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static void remove_dir(const char *dir)
{
    static const char *const names[] = {"cookie", ".erlang.cookie", "explicit"};
    char path[512];

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

/* No ambient cookie source: each test sets only the places it means to test. */
static void clear_env(void)
{
    unsetenv("CREDENTIALS_DIRECTORY");
    unsetenv("SNAKEPIT_COOKIE");
    unsetenv("HOME");
}

static int read_text(const char *dir, const char *content, char *cookie, size_t size)
{
    char path[512];

    write_file(dir, "explicit", content, strlen(content), path, sizeof(path));
    return cookie_read_file(path, cookie, size);
}

Test(cookie, trailing_newline_stripped)
{
    char dir[64];
    char cookie[COOKIE_MAX + 1];

    make_dir(dir, sizeof(dir));
    cr_assert_eq(read_text(dir, "secret\n", cookie, sizeof(cookie)), 0);
    cr_assert_str_eq(cookie, "secret");
    cr_assert_eq(read_text(dir, "secret\r\n", cookie, sizeof(cookie)), 0);
    cr_assert_str_eq(cookie, "secret");
    cr_assert_eq(read_text(dir, "secret", cookie, sizeof(cookie)), 0);
    cr_assert_str_eq(cookie, "secret");
    /* Only one newline goes, and a lone carriage return is part of the cookie. */
    cr_assert_eq(read_text(dir, "secret\n\n", cookie, sizeof(cookie)), 0);
    cr_assert_str_eq(cookie, "secret\n");
    cr_assert_eq(read_text(dir, "secret\r", cookie, sizeof(cookie)), 0);
    cr_assert_str_eq(cookie, "secret\r");
    remove_dir(dir);
}

Test(cookie, empty_file)
{
    char dir[64];
    char cookie[COOKIE_MAX + 1] = "unchanged";

    make_dir(dir, sizeof(dir));
    cr_assert_eq(read_text(dir, "", cookie, sizeof(cookie)), -ENODATA);
    cr_assert_eq(read_text(dir, "\n", cookie, sizeof(cookie)), -ENODATA);
    cr_assert_eq(read_text(dir, "\r\n", cookie, sizeof(cookie)), -ENODATA);
    cr_assert_str_eq(cookie, "unchanged");
    remove_dir(dir);
}

Test(cookie, missing_file)
{
    char cookie[COOKIE_MAX + 1];

    cr_assert_eq(cookie_read_file("/nonexistent/cookie", cookie, sizeof(cookie)), -ENOENT);
}

Test(cookie, nul_byte_rejected)
{
    char dir[64];
    char path[512];
    char cookie[COOKIE_MAX + 1];

    make_dir(dir, sizeof(dir));
    write_file(dir, "explicit", "ab\0cd", 5, path, sizeof(path));
    cr_assert_eq(cookie_read_file(path, cookie, sizeof(cookie)), -EINVAL);
    remove_dir(dir);
}

Test(cookie, length_limit)
{
    char dir[64];
    char text[COOKIE_MAX + 8];
    char cookie[COOKIE_MAX + 1];

    make_dir(dir, sizeof(dir));
    memset(text, 'k', sizeof(text));

    /* 255 bytes: accepted, with or without a newline. */
    text[COOKIE_MAX] = '\0';
    cr_assert_eq(read_text(dir, text, cookie, sizeof(cookie)), 0);
    cr_assert_eq(strlen(cookie), COOKIE_MAX);
    text[COOKIE_MAX] = '\n';
    text[COOKIE_MAX + 1] = '\0';
    cr_assert_eq(read_text(dir, text, cookie, sizeof(cookie)), 0);
    cr_assert_eq(strlen(cookie), COOKIE_MAX);
    text[COOKIE_MAX] = '\r';
    text[COOKIE_MAX + 1] = '\n';
    text[COOKIE_MAX + 2] = '\0';
    cr_assert_eq(read_text(dir, text, cookie, sizeof(cookie)), 0);
    cr_assert_eq(strlen(cookie), COOKIE_MAX);

    /* 256 bytes: rejected, with or without a newline. */
    memset(text, 'k', sizeof(text));
    text[COOKIE_MAX + 1] = '\0';
    cr_assert_eq(read_text(dir, text, cookie, sizeof(cookie)), -E2BIG);
    text[COOKIE_MAX + 1] = '\n';
    text[COOKIE_MAX + 2] = '\0';
    cr_assert_eq(read_text(dir, text, cookie, sizeof(cookie)), -E2BIG);

    /* Far longer than the read buffer. */
    char *huge = malloc(100000);
    cr_assert_not_null(huge);
    memset(huge, 'k', 99999);
    huge[99999] = '\0';
    cr_assert_eq(read_text(dir, huge, cookie, sizeof(cookie)), -E2BIG);
    free(huge);
    remove_dir(dir);
}

Test(cookie, small_output_buffer)
{
    char dir[64];
    char cookie[8];

    make_dir(dir, sizeof(dir));
    cr_assert_eq(read_text(dir, "1234567", cookie, sizeof(cookie)), 0);
    cr_assert_str_eq(cookie, "1234567");
    cr_assert_eq(read_text(dir, "12345678", cookie, sizeof(cookie)), -E2BIG);
    remove_dir(dir);
}

Test(cookie, explicit_file_is_the_only_place)
{
    char dir[64];
    char path[512];
    char cookie[COOKIE_MAX + 1];
    char err[ERR_MAX];

    clear_env();
    make_dir(dir, sizeof(dir));
    write_file(dir, "cookie", "from_credentials", 16, path, sizeof(path));
    setenv("CREDENTIALS_DIRECTORY", dir, 1);
    setenv("SNAKEPIT_COOKIE", "from_env", 1);
    write_file(dir, "explicit", "from_flag\n", 10, path, sizeof(path));

    cr_assert_eq(cookie_load(path, cookie, sizeof(cookie), err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(cookie, "from_flag");

    /* A missing explicit file is an error even though other places have a cookie. */
    cr_assert_eq(cookie_load("/nonexistent/flag-cookie", cookie, sizeof(cookie), err,
                             sizeof(err)),
                 -ENOENT);
    cr_assert(strstr(err, "/nonexistent/flag-cookie") != NULL, "err: %s", err);
    cr_assert(strstr(err, "No such file or directory") != NULL, "err: %s", err);
    remove_dir(dir);
}

Test(cookie, credentials_directory_first)
{
    char dir[64];
    char path[512];
    char cookie[COOKIE_MAX + 1];
    char err[ERR_MAX];

    clear_env();
    make_dir(dir, sizeof(dir));
    write_file(dir, "cookie", "from_credentials\n", 17, path, sizeof(path));
    write_file(dir, ".erlang.cookie", "from_home", 9, path, sizeof(path));
    setenv("CREDENTIALS_DIRECTORY", dir, 1);
    setenv("SNAKEPIT_COOKIE", "from_env", 1);
    setenv("HOME", dir, 1);

    cr_assert_eq(cookie_load(NULL, cookie, sizeof(cookie), err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(cookie, "from_credentials");
    cr_assert_eq(cookie_load("", cookie, sizeof(cookie), err, sizeof(err)), 0,
                 "an empty --cookie-file means none");
    cr_assert_str_eq(cookie, "from_credentials");
    remove_dir(dir);
}

Test(cookie, env_var_before_home)
{
    char dir[64];
    char path[512];
    char cookie[COOKIE_MAX + 1];
    char err[ERR_MAX];

    clear_env();
    make_dir(dir, sizeof(dir));
    write_file(dir, ".erlang.cookie", "from_home", 9, path, sizeof(path));
    /* A credentials directory without a cookie file falls through to the next place. */
    setenv("CREDENTIALS_DIRECTORY", dir, 1);
    setenv("SNAKEPIT_COOKIE", "from_env", 1);
    setenv("HOME", dir, 1);

    cr_assert_eq(cookie_load(NULL, cookie, sizeof(cookie), err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(cookie, "from_env");
    remove_dir(dir);
}

Test(cookie, home_last)
{
    char dir[64];
    char path[512];
    char cookie[COOKIE_MAX + 1];
    char err[ERR_MAX];

    clear_env();
    make_dir(dir, sizeof(dir));
    write_file(dir, ".erlang.cookie", "from_home\n", 10, path, sizeof(path));
    setenv("HOME", dir, 1);

    cr_assert_eq(cookie_load(NULL, cookie, sizeof(cookie), err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(cookie, "from_home");
    remove_dir(dir);
}

Test(cookie, env_var_limit)
{
    char cookie[COOKIE_MAX + 1];
    char err[ERR_MAX];
    char value[COOKIE_MAX + 2];

    clear_env();
    memset(value, 'e', sizeof(value));
    value[COOKIE_MAX] = '\0';
    setenv("SNAKEPIT_COOKIE", value, 1);
    cr_assert_eq(cookie_load(NULL, cookie, sizeof(cookie), err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(strlen(cookie), COOKIE_MAX);

    value[COOKIE_MAX] = 'e';
    value[COOKIE_MAX + 1] = '\0';
    setenv("SNAKEPIT_COOKIE", value, 1);
    cr_assert_lt(cookie_load(NULL, cookie, sizeof(cookie), err, sizeof(err)), 0);
    cr_assert(strstr(err, "$SNAKEPIT_COOKIE (longer than 255 bytes)") != NULL, "err: %s", err);
}

Test(cookie, error_names_every_place)
{
    char dir[64];
    char path[512];
    char cookie[COOKIE_MAX + 1];
    char err[ERR_MAX];
    char expected[1024];

    clear_env();
    make_dir(dir, sizeof(dir));
    write_file(dir, "cookie", "", 0, path, sizeof(path));
    setenv("CREDENTIALS_DIRECTORY", dir, 1);
    setenv("SNAKEPIT_COOKIE", "", 1);
    setenv("HOME", "/nonexistent-home", 1);

    cr_assert_lt(cookie_load(NULL, cookie, sizeof(cookie), err, sizeof(err)), 0);
    snprintf(expected, sizeof(expected), "%s/cookie (empty)", dir);
    cr_assert(strstr(err, expected) != NULL, "err: %s", err);
    cr_assert(strstr(err, "$SNAKEPIT_COOKIE (empty)") != NULL, "err: %s", err);
    cr_assert(strstr(err, "/nonexistent-home/.erlang.cookie (No such file or directory)") !=
                  NULL,
              "err: %s", err);
    remove_dir(dir);
}

Test(cookie, error_without_home)
{
    char cookie[COOKIE_MAX + 1];
    char err[ERR_MAX];

    clear_env();
    cr_assert_eq(cookie_load(NULL, cookie, sizeof(cookie), err, sizeof(err)), -ENOENT);
    cr_assert(strstr(err, "$HOME/.erlang.cookie (HOME is not set)") != NULL, "err: %s", err);
}
