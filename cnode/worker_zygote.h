/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The zygote: the template interpreter of one pool. It starts CPython, imports the pool's preload
 * modules while single-threaded, reports READY on the control socket, and then forks one worker
 * per FORK message. Workers share the preloaded pages with the zygote copy-on-write.
 */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/* Exit status of a zygote whose setup failed (interpreter, version check or preload): EX_CONFIG. */
#define WORKER_ZYGOTE_EXIT_SETUP_FAILED 78

typedef struct {
    const char *pool;       /* borrowed, for log lines */
    pid_t daemon_pid;       /* the workers' parent after the double fork */
    const char *preload;    /* borrowed; comma-separated module names, or NULL */
    const char *allow;      /* borrowed; comma-separated module names, or NULL */
    const char *adapter;    /* borrowed; "package.module:Class", or NULL */
    unsigned blas_threads;  /* default for the BLAS and OpenMP thread variables */
    const char *python;     /* borrowed; interpreter, virtualenv or prefix, or NULL */
    const char *pythonpath; /* borrowed; the directory that holds the snakepit package */
    size_t max_depth;       /* term nesting limit, as EtfPyLimits.max_depth */
    size_t max_message_bytes; /* frame payload limit in both directions */
} WorkerZygoteOptions;

/*
 * Run the zygote with the control socket on ZYGOTE_CONTROL_FD. Returns the process exit status
 * when the control socket closes or setup fails; forked workers never return from it.
 */
int worker_zygote_run(const WorkerZygoteOptions *opts);
