/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The wire protocol between the daemon (snakepit-cnode) and its Python processes.
 *
 * Request socket (SOCK_STREAM socketpair, one per worker), frames in both directions:
 *
 *     u32 length (big-endian, bytes after this field) | u8 type | u64 request id (big-endian)
 *     | payload: one term in external term format, starting with the version byte 131
 *
 * The daemon never decodes the payload of a CALL argument or a REPLY result: it copies the
 * bytes between the distribution connection and the worker, so only the worker converts terms.
 *
 *   HELLO        worker -> daemon, id 0, once, when the worker can take calls:
 *                {hello, OsPid :: integer, WorkerId :: integer}
 *   CALL         daemon -> worker: {Command :: binary, Args, Opts :: map}; Opts has atom keys
 *                stream (boolean), session_id (binary | nil), timeout_ms (integer).
 *                Args is a list (positional), a map (keyword) or {List, Map}.
 *   REPLY        worker -> daemon: {ok, Result} | {error, ErrorMap}; ends the call (and a stream).
 *   CHUNK        worker -> daemon: one term yielded by a streaming call.
 *   SESSION_REQ  worker -> daemon, id of the call in progress: {get, Name :: binary} or
 *                {put, Name :: binary, Value} on the call's session.
 *   SESSION_RESP daemon -> worker, same id: {ok, Value} | ok | {error, ErrorMap}. A get of a
 *                name the session does not contain gets {error, #{kind => not_found}}, which
 *                snakepit.session.get() turns into its default; session_not_found means the
 *                session itself is gone and raises in Python.
 *   CREDIT       daemon -> worker, same id: {credit, N}: the worker may send N more CHUNKs.
 *
 * Heartbeat socket (SOCK_STREAM socketpair, one per worker): the daemon writes one byte, a C
 * thread in the worker writes the same byte back. Python never runs on that thread.
 *
 * Zygote control socket (SOCK_SEQPACKET socketpair, fd ZYGOTE_CONTROL_FD in the zygote): fixed
 * ZygoteMsg records; FORK carries the worker's request and heartbeat fds as SCM_RIGHTS.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define WORKER_PROTO_VERSION 1
#define WORKER_FRAME_HEADER_SIZE 13 /* u32 length + u8 type + u64 id */
#define WORKER_FRAME_MIN_LENGTH 9   /* the length field counts type + id + payload */
#define WORKER_PROTO_ETF_VERSION 131 /* first byte of every payload */

typedef enum {
    WORKER_FRAME_HELLO = 1,
    WORKER_FRAME_CALL = 2,
    WORKER_FRAME_REPLY = 3,
    WORKER_FRAME_CHUNK = 4,
    WORKER_FRAME_SESSION_REQ = 5,
    WORKER_FRAME_SESSION_RESP = 6,
    WORKER_FRAME_CREDIT = 7,
} WorkerFrameType;

/* Stream chunks the worker may send before it must wait for CREDIT. */
#define WORKER_STREAM_INITIAL_CREDIT 16

/* Write a frame header for `payload_len` bytes of payload into out[WORKER_FRAME_HEADER_SIZE]. */
void worker_proto_header_encode(uint8_t out[WORKER_FRAME_HEADER_SIZE], WorkerFrameType type,
                                uint64_t id, size_t payload_len);

/*
 * Parse a frame header from `buf` of `len` bytes. Returns 0 and fills the out parameters, -EAGAIN
 * when fewer than WORKER_FRAME_HEADER_SIZE bytes are present, -EBADMSG on a length under
 * WORKER_FRAME_MIN_LENGTH or an unknown type, -EMSGSIZE when the payload exceeds `max_payload`.
 * Out parameters are written only on success.
 */
int worker_proto_header_decode(const uint8_t *buf, size_t len, size_t max_payload,
                               WorkerFrameType *type, uint64_t *id, size_t *payload_len);

/* The zygote's control socket is this fd in the zygote process (set up by the daemon). */
#define ZYGOTE_CONTROL_FD 3

typedef enum {
    ZYGOTE_MSG_READY = 1,          /* zygote -> daemon: preload finished; text = python version */
    ZYGOTE_MSG_PRELOAD_FAILED = 2, /* zygote -> daemon: text = the Python error; zygote exits 78 */
    ZYGOTE_MSG_FORK = 3,           /* daemon -> zygote: worker_id; SCM_RIGHTS request, heartbeat fd */
    ZYGOTE_MSG_FORKED = 4,         /* zygote -> daemon: worker_id, pid (a child of the daemon) */
    ZYGOTE_MSG_FORK_FAILED = 5,    /* zygote -> daemon: worker_id, error (errno), text */
} ZygoteMsgType;

#define ZYGOTE_MSG_TEXT_MAX 1024

typedef struct {
    uint32_t type; /* ZygoteMsgType */
    uint32_t worker_id;
    int32_t pid;
    int32_t error;
    char text[ZYGOTE_MSG_TEXT_MAX]; /* NUL-terminated */
} ZygoteMsg;
