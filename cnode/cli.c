/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Command-line parsing in two passes: the first finds --config and loads the file, the second
 * applies every flag on top, so flags override the file whatever their order.
 */
#include "cli.h"

#include <getopt.h>
#include <string.h>

#include "daemon.h"

enum {
    OPT_CONFIG = 256,
    OPT_SNAME,
    OPT_NAME,
    OPT_COOKIE_FILE,
    OPT_REGISTERED_NAME,
    OPT_HTTP,
    OPT_STORE,
    OPT_POOL_SIZE,
    OPT_PYTHON,
    OPT_LIBRARY,
    OPT_OWNER,
    OPT_LOG_LEVEL,
    OPT_LOG_FORMAT,
    OPT_CHECK_CONFIG,
    OPT_VERSION,
    OPT_HELP,
};

static const struct option cli_options[] = {
    {"config", required_argument, NULL, OPT_CONFIG},
    {"sname", required_argument, NULL, OPT_SNAME},
    {"name", required_argument, NULL, OPT_NAME},
    {"cookie-file", required_argument, NULL, OPT_COOKIE_FILE},
    {"registered-name", required_argument, NULL, OPT_REGISTERED_NAME},
    {"http", required_argument, NULL, OPT_HTTP},
    {"store", required_argument, NULL, OPT_STORE},
    {"pool-size", required_argument, NULL, OPT_POOL_SIZE},
    {"python", required_argument, NULL, OPT_PYTHON},
    {"library", required_argument, NULL, OPT_LIBRARY},
    {"owner", required_argument, NULL, OPT_OWNER},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
    {"check-config", no_argument, NULL, OPT_CHECK_CONFIG},
    {"version", no_argument, NULL, OPT_VERSION},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static void usage(FILE *out)
{
    fputs("Usage: snakepit-cnode [OPTION]...\n"
          "Run Python for Erlang and Elixir nodes as a C node of their cluster.\n"
          "\n"
          "  --config FILE            read settings from an INI file (flags override it)\n"
          "  --sname NAME             short node name (default: snakepit)\n"
          "  --name NAME@HOST         long node name\n"
          "  --cookie-file FILE       file with the distribution cookie\n"
          "                           (default: $CREDENTIALS_DIRECTORY/cookie, then\n"
          "                           $SNAKEPIT_COOKIE, then $HOME/.erlang.cookie)\n"
          "  --registered-name NAME   name callers send requests to (default: snakepit)\n"
          "  --http ADDR:PORT|off     metrics and health endpoint (default: 127.0.0.1:9568)\n"
          "  --store memory|redis://HOST:PORT/DB\n"
          "                           session store (default: memory)\n"
          "  --pool-size N            workers in the default pool (default: CPU count)\n"
          "  --python PATH            interpreter or virtualenv of the default pool\n"
          "  --library MODULE         allow MODULE in the default pool (repeatable)\n"
          "  --owner NODE             exit when NODE disconnects or never connects\n"
          "  --log-level LEVEL        error, warning, notice, info (default) or debug\n"
          "  --log-format text|json   log line format (default: text)\n"
          "  --check-config           validate the configuration and exit\n"
          "  --version                print the version and exit\n"
          "  --help                   print this help and exit\n"
          "\n"
          "Exit status: 0 after SIGTERM or SIGINT, 1 after a second signal more than\n"
          "200 ms into the shutdown, 64 bad usage, 78 bad configuration, 69 epmd\n"
          "unreachable, node name already registered, or the --owner node never\n"
          "connected, 71 the event loop could not be created.\n",
          out);
}

static int apply_store(Config *c, const char *value, char *err, size_t size)
{
    if (strcmp(value, "memory") == 0) {
        return config_set(c, "store", "backend", "memory", err, size);
    }
    if (strncmp(value, "redis://", 8) == 0) {
        int r = config_set(c, "store", "backend", "redis", err, size);
        return r < 0 ? r : config_set(c, "store", "url", value, err, size);
    }
    snprintf(err, size, "invalid --store '%s': expected memory or redis://HOST:PORT/DB", value);
    return -1;
}

static int apply_library(Config *c, const char *module, char *err, size_t size)
{
    char section[CONFIG_NAME_MAX + 16];

    snprintf(section, sizeof(section), "library %s", module);
    return config_set(c, section, "module", module, err, size);
}

static int apply_option(Config *c, int opt, const char *arg, char *err, size_t size)
{
    switch (opt) {
    case OPT_SNAME:
        return config_set(c, "node", "sname", arg, err, size);
    case OPT_NAME:
        return config_set(c, "node", "name", arg, err, size);
    case OPT_COOKIE_FILE:
        return config_set(c, "node", "cookie_file", arg, err, size);
    case OPT_REGISTERED_NAME:
        return config_set(c, "node", "registered_name", arg, err, size);
    case OPT_OWNER:
        return config_set(c, "node", "owner", arg, err, size);
    case OPT_HTTP:
        return config_set(c, "http", "listen", arg, err, size);
    case OPT_STORE:
        return apply_store(c, arg, err, size);
    case OPT_POOL_SIZE:
        return config_set(c, "pool default", "size", arg, err, size);
    case OPT_PYTHON:
        return config_set(c, "pool default", "python", arg, err, size);
    case OPT_LIBRARY:
        return apply_library(c, arg, err, size);
    case OPT_LOG_LEVEL:
        return config_set(c, "log", "level", arg, err, size);
    case OPT_LOG_FORMAT:
        return config_set(c, "log", "format", arg, err, size);
    case OPT_CHECK_CONFIG:
        c->check_config = true;
        return 0;
    default:
        return 0;
    }
}

CliResult cli_parse(int argc, char **argv, Config *c, FILE *out, FILE *err_out)
{
    char err[CONFIG_ERROR_MAX];
    int opt;

    /* First pass: --help, --version, --config and unknown flags. */
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", cli_options, NULL)) != -1) {
        switch (opt) {
        case OPT_HELP:
            usage(out);
            return CLI_EXIT_OK;
        case OPT_VERSION:
            fprintf(out, "snakepit-cnode %s\n", SNAKEPIT_VERSION);
            return CLI_EXIT_OK;
        case OPT_CONFIG:
            snprintf(c->config_file, sizeof(c->config_file), "%s", optarg);
            break;
        case '?':
            /* getopt sets optopt to a long option's value when its argument is missing, to
             * the character of an unknown short option, and to 0 for an unknown long one. */
            if (optopt >= OPT_CONFIG) {
                fprintf(err_out, "snakepit-cnode: option '%s' needs a value\n", argv[optind - 1]);
            } else {
                fprintf(err_out, "snakepit-cnode: unknown option '%s'\n", argv[optind - 1]);
            }
            fputs("Try 'snakepit-cnode --help'.\n", err_out);
            return CLI_EXIT_USAGE;
        default:
            break;
        }
    }
    if (optind < argc) {
        fprintf(err_out, "snakepit-cnode: unexpected argument '%s'\nTry 'snakepit-cnode --help'.\n",
                argv[optind]);
        return CLI_EXIT_USAGE;
    }
    if (c->config_file[0] && config_load_file(c, c->config_file, err, sizeof(err)) < 0) {
        fprintf(err_out, "snakepit-cnode: invalid configuration in %s: %s\n", c->config_file, err);
        return CLI_EXIT_CONFIG;
    }

    /* Second pass: flags override the file. */
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", cli_options, NULL)) != -1) {
        if (apply_option(c, opt, optarg, err, sizeof(err)) < 0) {
            fprintf(err_out, "snakepit-cnode: %s\n", err);
            return CLI_EXIT_USAGE;
        }
    }
    if (config_validate(c, err, sizeof(err)) < 0) {
        fprintf(err_out, "snakepit-cnode: invalid configuration: %s\n", err);
        return CLI_EXIT_CONFIG;
    }
    return CLI_RUN;
}
