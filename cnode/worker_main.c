/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The command line of snakepit-worker. The daemon execs it once per pool in zygote mode with the
 * control socket on fd 3; everything else happens in worker_zygote.c.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "etf_py.h"
#include "log.h"
#include "worker_proto.h"
#include "worker_zygote.h"

#ifndef SNAKEPIT_PYTHONPATH
#error "SNAKEPIT_PYTHONPATH must name the directory of the snakepit Python package"
#endif

#define WORKER_EXIT_USAGE 64 /* EX_USAGE */
#define WORKER_BLAS_THREADS_MAX 1024
#define WORKER_MAX_DEPTH_MAX 100000
#define WORKER_MESSAGE_BYTES_MIN 1024
/* The frame length is a u32 that also counts the type byte and the request id. */
#define WORKER_MESSAGE_BYTES_MAX ((size_t)INT32_MAX)

enum {
    OPT_ZYGOTE = 256,
    OPT_POOL,
    OPT_DAEMON_PID,
    OPT_PRELOAD,
    OPT_ALLOW,
    OPT_ADAPTER,
    OPT_BLAS_THREADS,
    OPT_PYTHON,
    OPT_PYTHONPATH,
    OPT_MAX_DEPTH,
    OPT_MAX_MESSAGE_BYTES,
    OPT_LOG_LEVEL,
    OPT_LOG_FORMAT,
    OPT_HELP,
    OPT_VERSION,
};

static const struct option worker_options[] = {
    {"zygote", no_argument, NULL, OPT_ZYGOTE},
    {"pool", required_argument, NULL, OPT_POOL},
    {"daemon-pid", required_argument, NULL, OPT_DAEMON_PID},
    {"preload", required_argument, NULL, OPT_PRELOAD},
    {"allow", required_argument, NULL, OPT_ALLOW},
    {"adapter", required_argument, NULL, OPT_ADAPTER},
    {"blas-threads", required_argument, NULL, OPT_BLAS_THREADS},
    {"python", required_argument, NULL, OPT_PYTHON},
    {"pythonpath", required_argument, NULL, OPT_PYTHONPATH},
    {"max-depth", required_argument, NULL, OPT_MAX_DEPTH},
    {"max-message-bytes", required_argument, NULL, OPT_MAX_MESSAGE_BYTES},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

static void print_usage(FILE *out)
{
    fprintf(out,
            "Usage: snakepit-worker --zygote --pool NAME --daemon-pid PID [OPTION]...\n"
            "Start the Python template interpreter of one snakepit-cnode pool. The control\n"
            "socket (SOCK_SEQPACKET) must be open on fd %d.\n"
            "\n"
            "  --zygote                  run as the pool's zygote (the only mode)\n"
            "  --pool NAME               pool name, used in log lines\n"
            "  --daemon-pid PID          pid of snakepit-cnode, the workers' parent\n"
            "  --preload M1,M2           modules to import before forking workers\n"
            "  --allow M1,M2             modules (with submodules) that python.* calls may use;\n"
            "                            '*' allows all, for a daemon that checks commands itself\n"
            "  --adapter PKG.MOD:CLASS   adapter class whose tools serve other commands\n"
            "  --blas-threads N          default for OPENBLAS/OMP/MKL/NUMEXPR_NUM_THREADS"
            " (default 1)\n"
            "  --python PATH             interpreter, virtualenv or prefix to run\n"
            "  --pythonpath DIR          directory of the snakepit package (default %s)\n"
            "  --max-depth N             term nesting limit (default %d)\n"
            "  --max-message-bytes N     message size limit in bytes (default %zu)\n"
            "  --log-level LEVEL         error, warning, notice, info or debug (default info)\n"
            "  --log-format FORMAT       text or json (default text), as the daemon's\n"
            "  --help                    print this help and exit\n"
            "  --version                 print the version and exit\n",
            ZYGOTE_CONTROL_FD, SNAKEPIT_PYTHONPATH, ETF_PY_MAX_DEPTH_DEFAULT,
            ETF_PY_MAX_BYTES_DEFAULT);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs("snakepit-worker: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry 'snakepit-worker --help' for more information.\n", stderr);
    return WORKER_EXIT_USAGE;
}

/* Parse a decimal integer in [min, max]; returns 0 or -EINVAL. */
static int parse_bounded(const char *text, unsigned long long min, unsigned long long max,
                         unsigned long long *out)
{
    char *end;
    unsigned long long v;

    if (text[0] < '0' || text[0] > '9') {
        return -EINVAL;
    }
    errno = 0;
    v = strtoull(text, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max) {
        return -EINVAL;
    }
    *out = v;
    return 0;
}

/* Parse one option into `opts`; returns 0, or the exit status to stop with. */
static LogFormat worker_log_format = LOG_FORMAT_TEXT;

static int parse_option(int opt, const char *arg, WorkerZygoteOptions *opts, int *log_level)
{
    unsigned long long v;

    switch (opt) {
    case OPT_POOL:
        opts->pool = arg;
        return 0;
    case OPT_DAEMON_PID:
        if (parse_bounded(arg, 2, INT32_MAX, &v) < 0) {
            return usage_error("invalid --daemon-pid '%s': expected a pid greater than 1", arg);
        }
        opts->daemon_pid = (pid_t)v;
        return 0;
    case OPT_PRELOAD:
        opts->preload = arg;
        return 0;
    case OPT_ALLOW:
        opts->allow = arg;
        return 0;
    case OPT_ADAPTER:
        if (!strchr(arg, ':')) {
            return usage_error("invalid --adapter '%s': expected package.module:Class", arg);
        }
        opts->adapter = arg;
        return 0;
    case OPT_BLAS_THREADS:
        if (parse_bounded(arg, 1, WORKER_BLAS_THREADS_MAX, &v) < 0) {
            return usage_error("invalid --blas-threads '%s': expected 1 to 1024", arg);
        }
        opts->blas_threads = (unsigned)v;
        return 0;
    case OPT_PYTHON:
        opts->python = arg;
        return 0;
    case OPT_PYTHONPATH:
        opts->pythonpath = arg;
        return 0;
    case OPT_MAX_DEPTH:
        if (parse_bounded(arg, 1, WORKER_MAX_DEPTH_MAX, &v) < 0) {
            return usage_error("invalid --max-depth '%s': expected 1 to 100000", arg);
        }
        opts->max_depth = (size_t)v;
        return 0;
    case OPT_MAX_MESSAGE_BYTES:
        if (parse_bounded(arg, WORKER_MESSAGE_BYTES_MIN, WORKER_MESSAGE_BYTES_MAX, &v) < 0) {
            return usage_error("invalid --max-message-bytes '%s': expected 1024 to 2147483647",
                               arg);
        }
        opts->max_message_bytes = (size_t)v;
        return 0;
    case OPT_LOG_LEVEL:
        *log_level = log_level_from_string(arg);
        if (*log_level < 0) {
            return usage_error("invalid --log-level '%s': expected error, warning, notice, info"
                               " or debug", arg);
        }
        return 0;
    case OPT_LOG_FORMAT:
        if (strcmp(arg, "text") == 0) {
            worker_log_format = LOG_FORMAT_TEXT;
        } else if (strcmp(arg, "json") == 0) {
            worker_log_format = LOG_FORMAT_JSON;
        } else {
            return usage_error("invalid --log-format '%s': expected text or json", arg);
        }
        return 0;
    default:
        return usage_error("%s", "invalid option");
    }
}

int main(int argc, char **argv)
{
    WorkerZygoteOptions opts = {
        .blas_threads = 1,
        .pythonpath = SNAKEPIT_PYTHONPATH,
        .max_depth = ETF_PY_MAX_DEPTH_DEFAULT,
        .max_message_bytes = ETF_PY_MAX_BYTES_DEFAULT,
    };
    int log_level = LOG_INFO;
    bool zygote = false;
    int opt;

    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", worker_options, NULL)) != -1) {
        if (opt == OPT_HELP) {
            print_usage(stdout);
            return 0;
        }
        if (opt == OPT_VERSION) {
            printf("snakepit-worker %s\n", SNAKEPIT_VERSION);
            return 0;
        }
        if (opt == OPT_ZYGOTE) {
            zygote = true;
            continue;
        }
        if (opt == '?' || opt == ':') {
            const char *bad = argv[optind - 1];
            if (optopt) {
                return usage_error("option '%s' requires an argument", bad);
            }
            return usage_error("unknown option '%s'", bad);
        }
        int r = parse_option(opt, optarg, &opts, &log_level);
        if (r != 0) {
            return r;
        }
    }
    if (optind < argc) {
        return usage_error("unexpected argument '%s'", argv[optind]);
    }
    if (!zygote) {
        return usage_error("%s", "missing --zygote: the zygote is the only mode");
    }
    if (!opts.pool || opts.pool[0] == '\0') {
        return usage_error("%s", "missing --pool NAME");
    }
    if (opts.daemon_pid == 0) {
        return usage_error("%s", "missing --daemon-pid PID");
    }

    log_setup("snakepit-worker", log_level, worker_log_format);
    return worker_zygote_run(&opts);
}
