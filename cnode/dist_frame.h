/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Parsing of the Erlang distribution byte stream after the handshake, with no I/O:
 * 4-byte big-endian length, then that many bytes. A zero length is a tick. A message is
 * 'p' (pass-through), a control tuple, and an optional payload term, each with version byte 131.
 * Then the control message and gen_server call inside it, and the reply to the liveness probe
 * that the daemon sends to rex.
 */
#pragma once

#include <ei.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DIST_FRAME_HEADER_SIZE 4
#define DIST_PASS_THROUGH 'p'

typedef enum {
    DIST_FRAME_TICK,
    DIST_FRAME_MESSAGE,
} DistFrameKind;

/*
 * Find the first frame in buf[0..len). Returns 0 with *kind and *body_len (bytes after the
 * 4-byte length) when the length field is complete, -EAGAIN when fewer than 4 bytes are present.
 * It does not check that the body is complete or within a limit: the caller compares *body_len.
 */
int dist_frame_peek(const uint8_t *buf, size_t len, DistFrameKind *kind, size_t *body_len);

/* Control message operations used here (the distribution protocol's numbers). */
#define DIST_OP_LINK 1
#define DIST_OP_SEND 2
#define DIST_OP_EXIT 3
#define DIST_OP_UNLINK 4
#define DIST_OP_REG_SEND 6
#define DIST_OP_SEND_TT 12
#define DIST_OP_REG_SEND_TT 16
#define DIST_OP_MONITOR_P 19
#define DIST_OP_DEMONITOR_P 20
#define DIST_OP_SEND_SENDER 22
#define DIST_OP_SEND_SENDER_TT 23
#define DIST_OP_ALIAS_SEND 33

/* A message frame split into its control part and payload; pointers borrow the frame buffer. */
typedef struct {
    long op;
    bool has_from;
    erlang_pid from;
    char to_name[MAXATOMLEN_UTF8]; /* REG_SEND and REG_SEND_TT */
    erlang_pid to;                 /* SEND, SEND_TT, SEND_SENDER and SEND_SENDER_TT */
    const char *payload;           /* message term with its version byte, or NULL */
    size_t payload_len;
} DistMessage;

/*
 * Parse a message body (starting with 'p'): a send to a registered name (REG_SEND, REG_SEND_TT)
 * or to a pid (SEND, SEND_TT, SEND_SENDER, SEND_SENDER_TT). Returns 0, -EBADMSG for malformed
 * input, or -ENOTSUP for another control message (links, monitors and the like, which callers
 * ignore).
 */
int dist_message_parse(const char *body, size_t len, DistMessage *out);

/* Read the operation of a message body's control tuple. Returns 0 or -EBADMSG. */
int dist_message_op(const char *body, size_t len, long *op);

/*
 * Parse the control part of a message whose payload may be cut short (the kept prefix of an
 * oversized frame): payload and payload_len then cover whatever bytes follow the control term.
 */
int dist_message_head_parse(const char *body, size_t len, DistMessage *out);

/* A decoded `{'$gen_call, {Pid, Tag}, Request}` or `{'$gen_cast', Request}`. Borrows the payload. */
typedef struct {
    bool is_cast;
    erlang_pid pid;
    const char *tag; /* raw encoded tag term, copied into the reply byte for byte */
    size_t tag_len;
    bool has_alias; /* tag is [alias | Ref]: reply to Ref with ALIAS_SEND */
    erlang_ref alias;
    const char *request; /* encoded request term, without version byte */
    size_t request_len;
} DistCall;

/* Parse a gen_server call or cast from a message payload. Returns 0 or -EBADMSG. */
int dist_call_parse(const char *payload, size_t len, DistCall *out);

/* Parse the caller and tag of a call whose request term may be cut short; request is NULL. */
int dist_call_head_parse(const char *payload, size_t len, DistCall *out);

/* What rex replied to a liveness probe. */
typedef enum {
    DIST_PROBE_ALIVE,   /* true: the process runs */
    DIST_PROBE_EXITED,  /* false: the process has exited */
    DIST_PROBE_UNKNOWN, /* anything else, such as {badrpc, Reason} */
} DistProbeResult;

/*
 * Append to `control` and `message` (each started with its version byte) a REG_SEND from `self`
 * to rex, the rpc server of every Erlang node, that queries whether `pid` is alive:
 * {'$gen_call', {Self, Ref}, {call, erlang, is_process_alive, [Pid], user}}. rex replies
 * {Ref, true | false} to `self`, or {Ref, {badrpc, Reason}}. Returns 0 or -ENOMEM.
 */
int dist_probe_encode(ei_x_buff *control, ei_x_buff *message, const erlang_pid *self,
                      const erlang_ref *ref, const erlang_pid *pid);

/*
 * Parse a reply to dist_probe_encode()'s request: a payload (with its version byte) of the form
 * {Ref, Reply}. Returns 0 with the reference and the result, or -EBADMSG for another term.
 */
int dist_probe_reply_parse(const char *payload, size_t len, erlang_ref *ref,
                           DistProbeResult *result);

/*
 * Skip the term at buf[*index], reading nothing at or past buf[len]. ei_skip_term takes no
 * length, so this walks the term's headers itself first. Returns 0 or -EBADMSG; *index moves
 * only on success.
 */
int dist_term_skip(const char *buf, size_t len, int *index);
