/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The request loop of a forked worker: send HELLO, then run one CALL at a time and answer it
 * with a REPLY (and CHUNKs for a stream) until the daemon closes the request socket.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define WORKER_SERVE_EXIT_PROTOCOL 76 /* EX_PROTOCOL: the request socket broke or went bad */

typedef struct {
    int request_fd;           /* owned by the loop from then on */
    uint32_t worker_id;
    size_t max_depth;
    size_t max_message_bytes;
} WorkerServeParams;

/* Serve calls until the request socket closes, then exit the process. Needs the GIL. */
_Noreturn void worker_serve_run(const WorkerServeParams *params);

/* Exit after the request socket failed with `r`: status 0 at end of stream, else 76. */
_Noreturn void worker_serve_exit_on_error(int r);
