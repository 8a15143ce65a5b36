/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Parsing of the Erlang distribution byte stream after the handshake, with no I/O:
 * 4-byte big-endian length, then that many bytes. A zero length is a tick. A message is
 * 'p' (pass-through), a control tuple, and an optional payload term, each with version byte 131.
 * Then the control message and gen_server call inside it. Also the one change the daemon makes
 * to a handshake message that ei builds: the distribution flags it advertises.
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

/* Distribution flags (erts' DFLAG_* values) that the daemon adds to ei's. */
#define DIST_DFLAG_DIST_MONITOR_NAME 0x20u

/*
 * OR `flags` into the 8-byte flags field of `packet` when it is the challenge message of a
 * handshake as the accepting side writes it: 2-byte length, 'N', flags, challenge, creation,
 * 2-byte name length, name. Returns 0 when `packet` (len bytes) has that layout and was changed,
 * or -EINVAL, leaving it unchanged.
 */
int dist_challenge_add_flags(char *packet, size_t len, uint64_t flags);

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
#define DIST_OP_MONITOR_P_EXIT 21
#define DIST_OP_PAYLOAD_MONITOR_P_EXIT 28 /* with DFLAG_EXIT_PAYLOAD: the reason is the payload */
#define DIST_OP_ALIAS_SEND 33

/* A message frame split into its control part and payload; pointers borrow the frame buffer. */
typedef struct {
    long op;
    bool has_from;
    erlang_pid from;
    char to_name[MAXATOMLEN_UTF8]; /* REG_SEND only */
    const char *payload;           /* message term with its version byte, or NULL */
    size_t payload_len;
    erlang_ref ref;     /* MONITOR_P_EXIT and PAYLOAD_MONITOR_P_EXIT: the monitor's reference */
    const char *reason; /* the same two: the exit reason term, without version byte */
    size_t reason_len;
} DistMessage;

/*
 * Parse a message body (starting with 'p'). Returns 0, -EBADMSG for malformed input, -ENOTSUP for
 * a control message this node does not handle (links, monitors of this node's processes and the
 * like, which callers ignore). Besides sends, it parses the monitor exits that erts sends for
 * this node's own MONITOR_P.
 */
int dist_message_parse(const char *body, size_t len, DistMessage *out);

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

/*
 * Append the control tuple {Op, FromPid, ToPid, Ref} of MONITOR_P (op 19) or DEMONITOR_P (op 20)
 * to `x`, which the caller started with its version byte. Returns 0, -EINVAL for another op, or
 * -ENOMEM.
 */
int dist_monitor_control_encode(ei_x_buff *x, long op, const erlang_pid *from,
                                const erlang_pid *to, const erlang_ref *ref);

/* Parse a gen_server call or cast from a message payload. Returns 0 or -EBADMSG. */
int dist_call_parse(const char *payload, size_t len, DistCall *out);

/* Parse the caller and tag of a call whose request term may be cut short; request is NULL. */
int dist_call_head_parse(const char *payload, size_t len, DistCall *out);

/*
 * Skip the term at buf[*index], reading nothing at or past buf[len]. ei_skip_term takes no
 * length, so this walks the term's headers itself first. Returns 0 or -EBADMSG; *index moves
 * only on success.
 */
int dist_term_skip(const char *buf, size_t len, int *index);
