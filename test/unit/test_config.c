/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the configuration: the INI file with every documented section, errors that name
 * their line, bad values, and the command line (flags override the file, --help, --version,
 * usage errors).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "config.h"

/* The sample file of the README's configuration section, with its inline comments. */
static const char full_config[] =
    "[node]\n"
    "sname = snakepit                 ; or: name = snakepit@host.example.com\n"
    "cookie_file = /etc/snakepit/cookie\n"
    "registered_name = snakepit\n"
    "allow_client_libraries = false   ; may clients add libraries with {:register_libraries, ...}\n"
    "\n"
    "[http]\n"
    "listen = 127.0.0.1:9568          ; or: off\n"
    "\n"
    "[store]\n"
    "backend = memory                 ; or: redis\n"
    "url = redis://127.0.0.1:6379/0\n"
    "default_ttl_s = 3600\n"
    "max_sessions = 10000\n"
    "\n"
    "[pool default]\n"
    "size = 4\n"
    "python = /usr/bin/python3        ; or a virtualenv/conda prefix, or: auto\n"
    "preload = numpy, pandas\n"
    "max_queue = 1000\n"
    "queue_timeout_ms = 5000\n"
    "request_timeout_ms = 30000\n"
    "\n"
    "[library pandas]\n"
    "module = pandas\n"
    "pip_package = pandas>=1.5\n"
    "pool = default\n";

static int parse(Config *c, const char *text, char *err, size_t size)
{
    config_init(c);
    return config_parse_string(c, text, err, size);
}

Test(config, defaults)
{
    Config c;

    config_init(&c);
    cr_assert_str_eq(c.node_name, "snakepit");
    cr_assert_not(c.long_names);
    cr_assert_str_eq(c.registered_name, "snakepit");
    cr_assert_str_eq(c.http_listen, "127.0.0.1:9568");
    cr_assert_str_eq(c.store_backend, "memory");
    cr_assert_eq(c.max_message_bytes, 64u * 1024 * 1024);
    cr_assert_eq(c.max_depth, 256);
    cr_assert_eq(c.pool_count, 1);
    cr_assert_str_eq(c.pools[0].name, "default");
    cr_assert_eq(c.pools[0].size, (unsigned)sysconf(_SC_NPROCESSORS_ONLN));
    cr_assert_eq(c.library_count, 0);
}

Test(config, every_documented_section)
{
    Config c;
    char err[CONFIG_ERROR_MAX];

    cr_assert_eq(parse(&c, full_config, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(c.node_name, "snakepit");
    cr_assert_not(c.long_names);
    cr_assert_str_eq(c.cookie_file, "/etc/snakepit/cookie");
    cr_assert_str_eq(c.registered_name, "snakepit");
    cr_assert_not(c.allow_client_libraries);
    cr_assert_str_eq(c.http_listen, "127.0.0.1:9568");
    cr_assert_str_eq(c.store_backend, "memory");
    cr_assert_str_eq(c.store_url, "redis://127.0.0.1:6379/0");
    cr_assert_eq(c.store_default_ttl_s, 3600);
    cr_assert_eq(c.store_max_sessions, 10000);

    cr_assert_eq(c.pool_count, 1);
    PoolConfig *pool = config_find_pool(&c, "default");
    cr_assert_not_null(pool);
    cr_assert_eq(pool->size, 4);
    cr_assert_str_eq(pool->python, "/usr/bin/python3");
    cr_assert_str_eq(pool->preload, "numpy, pandas");
    cr_assert_eq(pool->max_queue, 1000);
    cr_assert_eq(pool->queue_timeout_ms, 5000);
    cr_assert_eq(pool->request_timeout_ms, 30000);

    cr_assert_eq(c.library_count, 1);
    cr_assert_str_eq(c.libraries[0].name, "pandas");
    cr_assert_str_eq(c.libraries[0].module, "pandas");
    cr_assert_str_eq(c.libraries[0].pip_package, "pandas>=1.5");
    cr_assert_str_eq(c.libraries[0].pool, "default");
    cr_assert_eq(config_validate(&c, err, sizeof(err)), 0, "%s", err);
}

Test(config, long_name_and_more_pools)
{
    Config c;
    char err[CONFIG_ERROR_MAX];
    const char text[] = "[node]\n"
                        "name = snakepit@host.example.com\n"
                        "allow_client_libraries = yes\n"
                        "max_message_bytes = 1048576\n"
                        "[store]\n"
                        "backend = redis\n"
                        "session_owner_grace_ms = 0\n"
                        "[log]\n"
                        "level = debug\n"
                        "format = json\n"
                        "[pool gpu]\n"
                        "size = 1\n"
                        "max_requests = 4000000000\n"
                        "[library torch]\n"
                        "pool = gpu\n";

    cr_assert_eq(parse(&c, text, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(c.node_name, "snakepit@host.example.com");
    cr_assert(c.long_names);
    cr_assert(c.allow_client_libraries);
    cr_assert_eq(c.max_message_bytes, 1048576);
    cr_assert_str_eq(c.store_backend, "redis");
    cr_assert_eq(c.session_owner_grace_ms, 0);
    cr_assert_eq(c.log_level, LOG_DEBUG);
    cr_assert_eq(c.log_format, LOG_FORMAT_JSON);
    cr_assert_eq(c.pool_count, 2);
    PoolConfig *gpu = config_find_pool(&c, "gpu");
    cr_assert_not_null(gpu);
    cr_assert_eq(gpu->size, 1);
    cr_assert_eq(gpu->max_requests, 4000000000u);
    cr_assert_eq(gpu->max_queue, 1000, "a new pool starts from the defaults");
    cr_assert_eq(c.library_count, 1);
    cr_assert_str_eq(c.libraries[0].module, "torch", "module defaults to the section name");
    cr_assert_str_eq(c.libraries[0].pool, "gpu");
    cr_assert_eq(config_validate(&c, err, sizeof(err)), 0, "%s", err);
}

Test(config, unknown_key_names_its_line)
{
    Config c;
    char err[CONFIG_ERROR_MAX];
    const char text[] = "[node]\n"
                        "sname = a\n"
                        "\n"
                        "colour = blue\n";

    cr_assert_eq(parse(&c, text, err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "line 4") != NULL, "err: %s", err);
    cr_assert(strstr(err, "'colour'") != NULL, "err: %s", err);
    cr_assert(strstr(err, "[node]") != NULL, "err: %s", err);
}

Test(config, unknown_key_in_each_section)
{
    static const char *const texts[] = {
        "[http]\nport = 1\n",
        "[store]\nbackend_url = x\n",
        "[store]\nstore_backend = memory\n",
        "[pool default]\nworkers = 2\n",
        "[library x]\nversion = 1\n",
        "[log]\ncolour = yes\n",
    };

    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        Config c;
        char err[CONFIG_ERROR_MAX];
        cr_assert_eq(parse(&c, texts[i], err, sizeof(err)), -EINVAL, "%s", texts[i]);
        cr_assert(strstr(err, "line 2: unknown key") != NULL, "%s gave: %s", texts[i], err);
    }
}

Test(config, unknown_section_names_its_line)
{
    Config c;
    char err[CONFIG_ERROR_MAX];
    const char text[] = "[node]\nsname = a\n[nodes]\nsname = b\n";

    cr_assert_eq(parse(&c, text, err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "line 4") != NULL, "err: %s", err);
    cr_assert(strstr(err, "unknown section [nodes]") != NULL, "err: %s", err);

    /* "pool" and "library" need a name after them. */
    cr_assert_eq(parse(&c, "[pool]\nsize = 1\n", err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "unknown section [pool]") != NULL, "err: %s", err);
    cr_assert_eq(parse(&c, "[library]\nmodule = x\n", err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "unknown section [library]") != NULL, "err: %s", err);
}

Test(config, syntax_error_names_its_line)
{
    Config c;
    char err[CONFIG_ERROR_MAX];

    cr_assert_eq(parse(&c, "[node]\nsname = a\nno equals sign here\n", err, sizeof(err)),
                 -EINVAL);
    cr_assert(strstr(err, "line 3") != NULL, "err: %s", err);
}

static void expect_bad_value(const char *text, const char *fragment)
{
    Config c;
    char err[CONFIG_ERROR_MAX];

    cr_assert_eq(parse(&c, text, err, sizeof(err)), -EINVAL, "accepted: %s", text);
    cr_assert(strstr(err, "line 2") != NULL, "%s gave: %s", text, err);
    cr_assert(strstr(err, fragment) != NULL, "%s gave: %s (expected '%s')", text, err, fragment);
}

Test(config, bad_numbers)
{
    expect_bad_value("[pool default]\nsize = -1\n", "'size' must be an integer from 1 to 1024");
    expect_bad_value("[pool default]\nsize = 0\n", "from 1 to 1024");
    expect_bad_value("[pool default]\nsize = 1025\n", "from 1 to 1024");
    expect_bad_value("[pool default]\nsize = four\n", "invalid value 'four'");
    expect_bad_value("[pool default]\nsize = 4x\n", "invalid value '4x'");
    expect_bad_value("[pool default]\nsize = 2.5\n", "invalid value '2.5'");
    expect_bad_value("[pool default]\nsize =\n", "invalid value ''");
    expect_bad_value("[pool default]\nmax_requests = 4000000001\n", "from 0 to 4000000000");
    expect_bad_value("[pool default]\nheartbeat_interval_ms = 49\n", "from 50 to 600000");
    expect_bad_value("[store]\ndefault_ttl_s = 0\n", "'default_ttl_s' must be an integer from 1");
    expect_bad_value("[store]\nmax_sessions = 99999999999999999999999\n", "invalid value");
    expect_bad_value("[node]\nmax_message_bytes = 1023\n", "from 1024 to 2147483648");
    expect_bad_value("[node]\nmax_message_bytes = 2147483649\n", "from 1024 to 2147483648");
    expect_bad_value("[node]\nmax_connections = -5\n", "invalid value '-5'");
}

Test(config, numbers_at_their_limits)
{
    Config c;
    char err[CONFIG_ERROR_MAX];

    cr_assert_eq(parse(&c, "[pool default]\nsize = 1024\n", err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(c.pools[0].size, 1024);
    cr_assert_eq(parse(&c, "[pool default]\nsize = 1\n", err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(c.pools[0].size, 1);
    cr_assert_eq(parse(&c, "[node]\nmax_message_bytes = 2147483648\n", err, sizeof(err)), 0,
                 "%s", err);
    cr_assert_eq(c.max_message_bytes, 2147483648u);
    cr_assert_eq(parse(&c, "[node]\nmax_message_bytes = 1024\n", err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(c.max_message_bytes, 1024);
}

Test(config, bad_bool)
{
    expect_bad_value("[node]\nallow_client_libraries = maybe\n", "expected true or false");
    expect_bad_value("[node]\nallow_client_libraries = TRUE1\n", "expected true or false");
    expect_bad_value("[node]\nallow_client_libraries =\n", "expected true or false");
}

Test(config, good_bools)
{
    static const struct {
        const char *text;
        bool expected;
    } cases[] = {
        {"true", true}, {"yes", true}, {"1", true}, {"false", false}, {"no", false}, {"0", false},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        Config c;
        char err[CONFIG_ERROR_MAX];
        char text[128];
        snprintf(text, sizeof(text), "[node]\nallow_client_libraries = %s\n", cases[i].text);
        cr_assert_eq(parse(&c, text, err, sizeof(err)), 0, "%s: %s", cases[i].text, err);
        cr_assert_eq(c.allow_client_libraries, cases[i].expected, "%s", cases[i].text);
    }
}

Test(config, bad_log_settings)
{
    expect_bad_value("[log]\nlevel = verbose\n", "invalid log level 'verbose'");
    expect_bad_value("[log]\nlevel =\n", "invalid log level");
    expect_bad_value("[log]\nformat = xml\n", "invalid log format 'xml'");
}

Test(config, string_too_long)
{
    Config c;
    char err[CONFIG_ERROR_MAX];

    /* store_backend has room for 31 bytes, and the line is well under the INI line length. */
    const char text[] = "[store]\nbackend = memorymemorymemorymemorymemorymemory\n";
    cr_assert_eq(parse(&c, text, err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "line 2: value of 'backend' in [store] is too long") != NULL,
              "err: %s", err);
    cr_assert_str_eq(c.store_backend, "memory", "field changed by a rejected value");
}

/* libinih reads lines into a 200-byte buffer: 199 bytes fit, a longer line is named. */
Test(config, line_length_limit)
{
    Config c;
    char err[CONFIG_ERROR_MAX];
    char text[1200];
    char line[256];
    const char key[] = "python = ";

    memset(line, 'p', sizeof(line));
    memcpy(line, key, strlen(key));
    line[strlen(key)] = '/';
    line[199] = '\0';
    snprintf(text, sizeof(text), "[pool default]\n%s\nsize = 2\n", line);
    cr_assert_eq(parse(&c, text, err, sizeof(err)), 0, "a 199-byte line gave: %s", err);
    cr_assert_str_eq(c.pools[0].python, line + strlen(key));
    cr_assert_eq(c.pools[0].size, 2, "the line after it is parsed whole");

    /* Without a final newline, too. */
    snprintf(text, sizeof(text), "[pool default]\n%s", line);
    cr_assert_eq(parse(&c, text, err, sizeof(err)), 0, "a 199-byte last line gave: %s", err);

    line[199] = 'p';
    line[200] = '\0';
    snprintf(text, sizeof(text), "[pool default]\n%s\nsize = 2\n", line);
    cr_assert_eq(parse(&c, text, err, sizeof(err)), -EINVAL);
    cr_assert_str_eq(err, "line 2: the line is longer than 199 bytes, the maximum");
}

/* With several bad lines, the message is the one of the line it names. */
Test(config, first_error_keeps_its_message)
{
    Config c;
    char err[CONFIG_ERROR_MAX];
    const char text[] = "[node]\n"
                        "colour = blue\n"
                        "[pool default]\n"
                        "size = 0\n";

    cr_assert_eq(parse(&c, text, err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "line 2: unknown key 'colour'") != NULL, "err: %s", err);

    const char syntax_first[] = "[node]\n"
                                "no equals sign\n"
                                "colour = blue\n";
    cr_assert_eq(parse(&c, syntax_first, err, sizeof(err)), -EINVAL);
    cr_assert_str_eq(err, "line 2: syntax error");
}

Test(config, empty_node_name)
{
    expect_bad_value("[node]\nsname =\n", "invalid node name ''");
}

Test(config, validate_cross_field_rules)
{
    Config c;
    char err[CONFIG_ERROR_MAX];

    cr_assert_eq(parse(&c, "[library torch]\npool = gpu\n", err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(config_validate(&c, err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "library 'torch' names pool 'gpu'") != NULL, "err: %s", err);

    cr_assert_eq(parse(&c, "[store]\nbackend = etcd\n", err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(config_validate(&c, err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "invalid store backend 'etcd'") != NULL, "err: %s", err);

    cr_assert_eq(parse(&c, "[library x]\nmodule =\n", err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(config_validate(&c, err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "library 'x' has an empty module") != NULL, "err: %s", err);
}

Test(config, load_missing_file)
{
    Config c;
    char err[CONFIG_ERROR_MAX];

    config_init(&c);
    cr_assert_eq(config_load_file(&c, "/nonexistent/snakepit.ini", err, sizeof(err)), -ENOENT);
    cr_assert(strstr(err, "/nonexistent/snakepit.ini") != NULL, "err: %s", err);
}

/* ---- command line ---- */

typedef struct {
    char *argv[32];
    int argc;
    char *out_text;
    size_t out_len;
    char *err_text;
    size_t err_len;
    FILE *out;
    FILE *err;
} Cli;

/* Run cli_parse on a NULL-terminated list of arguments (after the program name). */
static CliResult run_cli(Cli *cli, Config *c, const char *const *args)
{
    memset(cli, 0, sizeof(*cli));
    cli->argv[cli->argc++] = strdup("snakepit-cnode");
    for (; *args; args++) {
        cr_assert_lt(cli->argc, 31);
        cli->argv[cli->argc++] = strdup(*args);
    }
    cli->out = open_memstream(&cli->out_text, &cli->out_len);
    cli->err = open_memstream(&cli->err_text, &cli->err_len);
    cr_assert_not_null(cli->out);
    cr_assert_not_null(cli->err);
    config_init(c);
    CliResult r = cli_parse(cli->argc, cli->argv, c, cli->out, cli->err);
    fclose(cli->out);
    fclose(cli->err);
    return r;
}

static void free_cli(Cli *cli)
{
    for (int i = 0; i < cli->argc; i++) {
        free(cli->argv[i]);
    }
    free(cli->out_text);
    free(cli->err_text);
}

/* Write `text` to a new temporary file; the caller unlinks `path`. */
static void write_temp(char *path, size_t size, const char *text)
{
    snprintf(path, size, "/tmp/snakepit-test-config-XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

Test(cli, missing_python_path)
{
    Cli cli;
    Config c;
    const char *args[] = {"--python", "/nonexistent/snakepit-test/python3", NULL};

    cr_assert_eq(run_cli(&cli, &c, args), CLI_EXIT_CONFIG);
    cr_assert(strstr(cli.err_text, "does not exist"), "stderr: %s", cli.err_text);
}

Test(cli, flags_only)
{
    Cli cli;
    Config c;
    const char *args[] = {"--sname", "worker1", "--http", "off", "--pool-size", "3",
                          "--log-level", "debug", "--library", "numpy", "--library", "scipy",
                          "--store", "redis://127.0.0.1:6380/2", "--owner", "app@host",
                          "--registered-name", "py", "--python", "/usr/bin/python3", NULL};

    cr_assert_eq(run_cli(&cli, &c, args), CLI_RUN, "stderr: %s", cli.err_text);
    cr_assert_str_eq(c.node_name, "worker1");
    cr_assert_not(c.long_names);
    cr_assert_str_eq(c.http_listen, "off");
    cr_assert_eq(c.pools[0].size, 3);
    cr_assert_str_eq(c.pools[0].python, "/usr/bin/python3");
    cr_assert_eq(c.log_level, LOG_DEBUG);
    cr_assert_eq(c.library_count, 2);
    cr_assert_str_eq(c.libraries[0].module, "numpy");
    cr_assert_str_eq(c.libraries[1].module, "scipy");
    cr_assert_str_eq(c.store_backend, "redis");
    cr_assert_str_eq(c.store_url, "redis://127.0.0.1:6380/2");
    cr_assert_str_eq(c.owner, "app@host");
    cr_assert_str_eq(c.registered_name, "py");
    cr_assert_eq(cli.out_len, 0);
    cr_assert_eq(cli.err_len, 0);
    free_cli(&cli);
}

Test(cli, flags_override_file)
{
    char path[64];
    Cli cli;
    Config c;

    write_temp(path, sizeof(path),
               "[node]\nsname = from_file\nregistered_name = file_name\n"
               "[pool default]\nsize = 2\nmax_queue = 7\n[log]\nlevel = error\n");
    /* Flags before and after --config both win over the file. */
    const char *args[] = {"--sname", "from_flag", "--config", path, "--pool-size", "5", NULL};
    cr_assert_eq(run_cli(&cli, &c, args), CLI_RUN, "stderr: %s", cli.err_text);
    cr_assert_str_eq(c.node_name, "from_flag");
    cr_assert_eq(c.pools[0].size, 5);
    cr_assert_str_eq(c.registered_name, "file_name", "file values without a flag stay");
    cr_assert_eq(c.pools[0].max_queue, 7);
    cr_assert_eq(c.log_level, LOG_ERR);
    cr_assert_str_eq(c.config_file, path);
    free_cli(&cli);
    unlink(path);
}

Test(cli, name_flag_sets_long_names)
{
    Cli cli;
    Config c;
    const char *args[] = {"--name", "snakepit@host.example.com", NULL};

    cr_assert_eq(run_cli(&cli, &c, args), CLI_RUN);
    cr_assert(c.long_names);
    cr_assert_str_eq(c.node_name, "snakepit@host.example.com");
    free_cli(&cli);
}

Test(cli, help)
{
    Cli cli;
    Config c;
    const char *args[] = {"--sname", "x", "--help", NULL};

    cr_assert_eq(run_cli(&cli, &c, args), CLI_EXIT_OK);
    cr_assert(strstr(cli.out_text, "Usage: snakepit-cnode") != NULL, "out: %s", cli.out_text);
    cr_assert(strstr(cli.out_text, "--cookie-file FILE") != NULL);
    cr_assert(strstr(cli.out_text, "64 bad usage, 78 bad configuration") != NULL);
    cr_assert_eq(cli.err_len, 0);
    free_cli(&cli);
}

Test(cli, version)
{
    Cli cli;
    Config c;
    const char *args[] = {"--version", NULL};

    cr_assert_eq(run_cli(&cli, &c, args), CLI_EXIT_OK);
    cr_assert_str_eq(cli.out_text, "snakepit-cnode 0.1.0\n");
    free_cli(&cli);
}

Test(cli, unknown_long_option)
{
    Cli cli;
    Config c;
    const char *args[] = {"--sname", "x", "--colour", "blue", NULL};

    cr_assert_eq(run_cli(&cli, &c, args), CLI_EXIT_USAGE);
    cr_assert(strstr(cli.err_text, "unknown option '--colour'") != NULL, "err: %s",
              cli.err_text);
    cr_assert(strstr(cli.err_text, "Try 'snakepit-cnode --help'") != NULL);
    free_cli(&cli);
}

Test(cli, unknown_short_option)
{
    Cli cli;
    Config c;
    const char *args[] = {"-x", NULL};

    cr_assert_eq(run_cli(&cli, &c, args), CLI_EXIT_USAGE);
    cr_assert(strstr(cli.err_text, "unknown option '-x'") != NULL, "err: %s", cli.err_text);
    free_cli(&cli);
}

Test(cli, missing_value)
{
    Cli cli;
    Config c;
    const char *args[] = {"--sname", NULL};

    cr_assert_eq(run_cli(&cli, &c, args), CLI_EXIT_USAGE);
    cr_assert(strstr(cli.err_text, "option '--sname' needs a value") != NULL, "err: %s",
              cli.err_text);
    free_cli(&cli);
}

Test(cli, unexpected_argument)
{
    Cli cli;
    Config c;
    const char *args[] = {"--sname", "x", "stray", NULL};

    cr_assert_eq(run_cli(&cli, &c, args), CLI_EXIT_USAGE);
    cr_assert(strstr(cli.err_text, "unexpected argument 'stray'") != NULL, "err: %s",
              cli.err_text);
    free_cli(&cli);
}

Test(cli, bad_flag_values_are_usage_errors)
{
    static const char *const cases[][3] = {
        {"--pool-size", "0", "from 1 to 1024"},
        {"--pool-size", "many", "invalid value 'many'"},
        {"--log-level", "loud", "invalid log level 'loud'"},
        {"--log-format", "yaml", "invalid log format 'yaml'"},
        {"--store", "etcd://x", "invalid --store 'etcd://x'"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        Cli cli;
        Config c;
        const char *args[] = {cases[i][0], cases[i][1], NULL};
        cr_assert_eq(run_cli(&cli, &c, args), CLI_EXIT_USAGE, "%s %s", cases[i][0], cases[i][1]);
        cr_assert(strstr(cli.err_text, cases[i][2]) != NULL, "%s %s gave: %s", cases[i][0],
                  cases[i][1], cli.err_text);
        free_cli(&cli);
    }
}

Test(cli, bad_config_file)
{
    char path[64];
    Cli cli;
    Config c;

    write_temp(path, sizeof(path), "[node]\nsname = a\n[pool default]\nsize = 0\n");
    const char *args[] = {"--config", path, NULL};
    cr_assert_eq(run_cli(&cli, &c, args), CLI_EXIT_CONFIG);
    cr_assert(strstr(cli.err_text, path) != NULL, "err: %s", cli.err_text);
    cr_assert(strstr(cli.err_text, "line 4") != NULL, "err: %s", cli.err_text);
    free_cli(&cli);
    unlink(path);
}

Test(cli, missing_config_file)
{
    Cli cli;
    Config c;
    const char *args[] = {"--config", "/nonexistent/snakepit.ini", NULL};

    cr_assert_eq(run_cli(&cli, &c, args), CLI_EXIT_CONFIG);
    cr_assert(strstr(cli.err_text, "/nonexistent/snakepit.ini") != NULL, "err: %s",
              cli.err_text);
    free_cli(&cli);
}

Test(cli, invalid_cross_field_config)
{
    Cli cli;
    Config c;
    char path[64];

    write_temp(path, sizeof(path), "[library torch]\npool = gpu\n");
    const char *args[] = {"--config", path, NULL};
    cr_assert_eq(run_cli(&cli, &c, args), CLI_EXIT_CONFIG);
    cr_assert(strstr(cli.err_text, "pool 'gpu'") != NULL, "err: %s", cli.err_text);
    free_cli(&cli);
    unlink(path);
}

Test(cli, check_config_flag)
{
    Cli cli;
    Config c;
    const char *args[] = {"--check-config", NULL};

    cr_assert_eq(run_cli(&cli, &c, args), CLI_RUN);
    cr_assert(c.check_config);
    free_cli(&cli);
}
