/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Distribution frames, control messages and gen_server calls, parsed from buffers the
 * connection layer owns. Every read is bounded by the buffer length: ei_decode_* take no length,
 * so each term is first walked by dist_term_skip() before ei decodes it.
 */
#include "dist_frame.h"

#include <errno.h>
#include <string.h>

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static uint16_t get_be16(const uint8_t *p)
{
    return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

int dist_frame_peek(const uint8_t *buf, size_t len, DistFrameKind *kind, size_t *body_len)
{
    if (len < DIST_FRAME_HEADER_SIZE) {
        return -EAGAIN;
    }
    uint32_t n = get_be32(buf);
    *kind = n == 0 ? DIST_FRAME_TICK : DIST_FRAME_MESSAGE;
    *body_len = n;
    return 0;
}

/* Bytes of fixed-size data after the tag, for tags whose size does not depend on the content. */
static int fixed_size(uint8_t tag)
{
    switch (tag) {
    case ERL_SMALL_INTEGER_EXT:
        return 1;
    case ERL_INTEGER_EXT:
        return 4;
    case ERL_FLOAT_EXT:
        return 31;
    case NEW_FLOAT_EXT:
        return 8;
    case ERL_NIL_EXT:
        return 0;
    default:
        return -1;
    }
}

/* Skip the atom at p[*i]; node names inside pids, ports and references must be atoms. */
static int skip_atom(const uint8_t *p, size_t len, size_t *i)
{
    size_t at = *i;
    size_t n;

    if (at >= len) {
        return -EBADMSG;
    }
    switch (p[at]) {
    case ERL_ATOM_EXT:
    case ERL_ATOM_UTF8_EXT:
        if (len - at < 3) {
            return -EBADMSG;
        }
        n = 3 + get_be16(p + at + 1);
        break;
    case ERL_SMALL_ATOM_EXT:
    case ERL_SMALL_ATOM_UTF8_EXT:
        if (len - at < 2) {
            return -EBADMSG;
        }
        n = 2 + (size_t)p[at + 1];
        break;
    default:
        return -EBADMSG;
    }
    if (len - at < n) {
        return -EBADMSG;
    }
    *i = at + n;
    return 0;
}

/*
 * Walks terms without recursion: `pending` counts the terms still to skip, so a container adds
 * its element count and nesting depth costs no stack.
 */
int dist_term_skip(const char *buf, size_t len, int *index)
{
    const uint8_t *p = (const uint8_t *)buf;
    size_t i = (size_t)*index;
    uint64_t pending = 1;

#define NEED(n)                                                                                    \
    do {                                                                                           \
        if (len - i < (size_t)(n)) {                                                               \
            return -EBADMSG;                                                                       \
        }                                                                                          \
    } while (0)

    if (i > len) {
        return -EBADMSG;
    }
    while (pending > 0) {
        /* Every pending term needs at least one byte, which bounds hostile arities. */
        if (pending > len - i) {
            return -EBADMSG;
        }
        pending--;
        NEED(1);
        uint8_t tag = p[i++];
        int fixed = fixed_size(tag);
        if (fixed >= 0) {
            NEED(fixed);
            i += (size_t)fixed;
            continue;
        }
        switch (tag) {
        case ERL_ATOM_EXT:
        case ERL_ATOM_UTF8_EXT:
        case ERL_STRING_EXT:
            NEED(2);
            NEED(2 + (size_t)get_be16(p + i));
            i += 2 + (size_t)get_be16(p + i);
            break;
        case ERL_SMALL_ATOM_EXT:
        case ERL_SMALL_ATOM_UTF8_EXT:
            NEED(1);
            NEED(1 + (size_t)p[i]);
            i += 1 + (size_t)p[i];
            break;
        case ERL_SMALL_TUPLE_EXT:
            NEED(1);
            pending += p[i];
            i += 1;
            break;
        case ERL_LARGE_TUPLE_EXT:
            NEED(4);
            pending += get_be32(p + i);
            i += 4;
            break;
        case ERL_MAP_EXT:
            NEED(4);
            pending += 2 * (uint64_t)get_be32(p + i);
            i += 4;
            break;
        case ERL_LIST_EXT:
            NEED(4);
            pending += (uint64_t)get_be32(p + i) + 1; /* elements and the tail */
            i += 4;
            break;
        case ERL_BINARY_EXT:
            NEED(4);
            NEED(4 + (size_t)get_be32(p + i));
            i += 4 + (size_t)get_be32(p + i);
            break;
        case ERL_BIT_BINARY_EXT:
            NEED(5);
            NEED(5 + (size_t)get_be32(p + i));
            i += 5 + (size_t)get_be32(p + i);
            break;
        case ERL_SMALL_BIG_EXT:
            NEED(2);
            NEED(2 + (size_t)p[i]);
            i += 2 + (size_t)p[i];
            break;
        case ERL_LARGE_BIG_EXT:
            NEED(5);
            NEED(5 + (size_t)get_be32(p + i));
            i += 5 + (size_t)get_be32(p + i);
            break;
        case ERL_PID_EXT:
        case ERL_NEW_PID_EXT:
        case ERL_PORT_EXT:
        case ERL_NEW_PORT_EXT:
        case ERL_V4_PORT_EXT: {
            if (skip_atom(p, len, &i) < 0) {
                return -EBADMSG;
            }
            size_t rest = tag == ERL_PID_EXT       ? 9
                          : tag == ERL_NEW_PID_EXT ? 12
                          : tag == ERL_PORT_EXT    ? 5
                          : tag == ERL_NEW_PORT_EXT ? 8
                                                    : 12;
            NEED(rest);
            i += rest;
            break;
        }
        case ERL_NEW_REFERENCE_EXT:
        case ERL_NEWER_REFERENCE_EXT: {
            NEED(2);
            size_t words = get_be16(p + i);
            i += 2;
            if (skip_atom(p, len, &i) < 0) {
                return -EBADMSG;
            }
            size_t rest = (tag == ERL_NEW_REFERENCE_EXT ? 1 : 4) + 4 * words;
            NEED(rest);
            i += rest;
            break;
        }
        case ERL_NEW_FUN_EXT:
            /* The size field counts itself and everything after the tag. */
            NEED(4);
            if (get_be32(p + i) < 4) {
                return -EBADMSG;
            }
            NEED(get_be32(p + i));
            i += get_be32(p + i);
            break;
        case ERL_EXPORT_EXT:
            pending += 3;
            break;
        default:
            /* Atom cache references, compressed terms and the obsolete FUN_EXT never appear on a
             * connection that did not negotiate them. */
            return -EBADMSG;
        }
    }
#undef NEED
    if (i > (size_t)INT32_MAX) {
        return -EBADMSG;
    }
    *index = (int)i;
    return 0;
}

/* Decode the version byte and check that one whole term follows within len. */
static int term_start(const char *buf, size_t len, int *index, int *end)
{
    int i = *index;
    int version;

    /* ei_decode_version reads its byte unchecked: an empty rest must not get that far. */
    if (i < 0 || (size_t)i >= len || ei_decode_version(buf, &i, &version) < 0) {
        return -EBADMSG;
    }
    int e = i;
    if (dist_term_skip(buf, len, &e) < 0) {
        return -EBADMSG;
    }
    *index = i;
    *end = e;
    return 0;
}

static int decode_pid_checked(const char *buf, int *index, int end, erlang_pid *pid)
{
    int i = *index;
    int e = i;

    if (dist_term_skip(buf, (size_t)end, &e) < 0 || ei_decode_pid(buf, &i, pid) < 0 || i != e) {
        return -EBADMSG;
    }
    *index = i;
    return 0;
}

static int decode_ref_checked(const char *buf, int *index, int end, erlang_ref *ref)
{
    int i = *index;
    int e = i;

    if (dist_term_skip(buf, (size_t)end, &e) < 0 || ei_decode_ref(buf, &i, ref) < 0 || i != e) {
        return -EBADMSG;
    }
    *index = i;
    return 0;
}

/*
 * The rest of {2, Unused, ToPid}, {12, Unused, ToPid, TraceToken}, {22, FromPid, ToPid} or
 * {23, FromPid, ToPid, TraceToken} from `index` on, which must fill the control term.
 */
static int send_parse(const char *body, int index, int end, int arity, DistMessage *m)
{
    bool traced = m->op == DIST_OP_SEND_TT || m->op == DIST_OP_SEND_SENDER_TT;
    bool has_sender = m->op == DIST_OP_SEND_SENDER || m->op == DIST_OP_SEND_SENDER_TT;

    if (arity != (traced ? 4 : 3)) {
        return -EBADMSG;
    }
    if (has_sender) {
        if (decode_pid_checked(body, &index, end, &m->from) < 0) {
            return -EBADMSG;
        }
        m->has_from = true;
    } else if (dist_term_skip(body, (size_t)end, &index) < 0) {
        return -EBADMSG;
    }
    if (decode_pid_checked(body, &index, end, &m->to) < 0) {
        return -EBADMSG;
    }
    if (traced && dist_term_skip(body, (size_t)end, &index) < 0) {
        return -EBADMSG;
    }
    return index == end ? 0 : -EBADMSG;
}

static int message_parse(const char *body, size_t len, bool whole, DistMessage *out)
{
    int index = 1;
    int end;
    int arity;
    long op;
    DistMessage m = {0};

    if (len < 1 || body[0] != DIST_PASS_THROUGH) {
        return -EBADMSG;
    }
    if (term_start(body, len, &index, &end) < 0) {
        return -EBADMSG;
    }
    if (ei_decode_tuple_header(body, &index, &arity) < 0 || arity < 1 ||
        ei_decode_long(body, &index, &op) < 0 || index > end) {
        return -EBADMSG;
    }
    m.op = op;

    switch (op) {
    case DIST_OP_SEND:
    case DIST_OP_SEND_TT:
    case DIST_OP_SEND_SENDER:
    case DIST_OP_SEND_SENDER_TT:
        if (send_parse(body, index, end, arity, &m) < 0) {
            return -EBADMSG;
        }
        break;
    case DIST_OP_REG_SEND:
    case DIST_OP_REG_SEND_TT: {
        /* {6, FromPid, Unused, ToName} or {16, FromPid, Unused, ToName, TraceToken}. */
        int skip_index;
        if (arity < 4 || decode_pid_checked(body, &index, end, &m.from) < 0) {
            return -EBADMSG;
        }
        m.has_from = true;
        skip_index = index;
        if (dist_term_skip(body, (size_t)end, &skip_index) < 0) {
            return -EBADMSG;
        }
        index = skip_index;
        int atom_end = index;
        if (dist_term_skip(body, (size_t)end, &atom_end) < 0 ||
            ei_decode_atom(body, &index, m.to_name) < 0 || index != atom_end) {
            return -EBADMSG;
        }
        break;
    }
    default:
        return -ENOTSUP;
    }

    /* The payload term follows the control term. */
    int payload_start = end;
    int payload_end = (int)len;
    int version_index = end;
    if (whole && term_start(body, len, &version_index, &payload_end) < 0) {
        return -EBADMSG;
    }
    m.payload = body + payload_start;
    m.payload_len = (size_t)(payload_end - payload_start);
    *out = m;
    return 0;
}

int dist_message_parse(const char *body, size_t len, DistMessage *out)
{
    return message_parse(body, len, true, out);
}

int dist_message_op(const char *body, size_t len, long *op)
{
    int index = 1;
    int end;
    int arity;
    long value;

    if (len < 1 || body[0] != DIST_PASS_THROUGH || term_start(body, len, &index, &end) < 0 ||
        ei_decode_tuple_header(body, &index, &arity) < 0 || arity < 1 ||
        ei_decode_long(body, &index, &value) < 0) {
        return -EBADMSG;
    }
    *op = value;
    return 0;
}

int dist_message_head_parse(const char *body, size_t len, DistMessage *out)
{
    return message_parse(body, len, false, out);
}

/* Decode `[alias | Ref]`, the tag of gen_server calls since OTP 24. */
static bool decode_alias_tag(const char *buf, int index, int end, erlang_ref *ref)
{
    int arity;
    char atom[MAXATOMLEN_UTF8];

    if ((uint8_t)buf[index] != ERL_LIST_EXT || ei_decode_list_header(buf, &index, &arity) < 0 ||
        arity != 1) {
        return false;
    }
    int e = index;
    if (dist_term_skip(buf, (size_t)end, &e) < 0 || ei_decode_atom(buf, &index, atom) < 0 ||
        strcmp(atom, "alias") != 0) {
        return false;
    }
    e = index;
    if (dist_term_skip(buf, (size_t)end, &e) < 0 || e != end ||
        ei_decode_ref(buf, &index, ref) < 0) {
        return false;
    }
    return true;
}

static int call_parse(const char *payload, size_t len, bool whole, DistCall *out)
{
    int index = 0;
    int arity;
    int inner;
    char atom[MAXATOMLEN_UTF8];
    DistCall c = {0};
    int version;

    if (whole) {
        int end;
        if (term_start(payload, len, &index, &end) < 0 || (size_t)end != len) {
            return -EBADMSG;
        }
    } else if (len < 3 || ei_decode_version(payload, &index, &version) < 0 ||
               (uint8_t)payload[index] != ERL_SMALL_TUPLE_EXT) {
        return -EBADMSG;
    }
    if (ei_decode_tuple_header(payload, &index, &arity) < 0) {
        return -EBADMSG;
    }
    int atom_end = index;
    if (dist_term_skip(payload, len, &atom_end) < 0 ||
        ei_decode_atom(payload, &index, atom) < 0) {
        return -EBADMSG;
    }
    if (arity == 2 && strcmp(atom, "$gen_cast") == 0) {
        c.is_cast = true;
    } else if (arity == 3 && strcmp(atom, "$gen_call") == 0) {
        /* A cut-short payload may end inside {Pid, Tag}: bound it before ei reads its header. */
        int pair_end = index;
        if (dist_term_skip(payload, len, &pair_end) < 0 ||
            ei_decode_tuple_header(payload, &index, &inner) < 0 || inner != 2 ||
            decode_pid_checked(payload, &index, (int)len, &c.pid) < 0) {
            return -EBADMSG;
        }
        int tag_end = index;
        if (dist_term_skip(payload, len, &tag_end) < 0) {
            return -EBADMSG;
        }
        c.tag = payload + index;
        c.tag_len = (size_t)(tag_end - index);
        c.has_alias = decode_alias_tag(payload, index, tag_end, &c.alias);
        index = tag_end;
    } else {
        return -EBADMSG;
    }

    int request_end = index;
    if (whole && (dist_term_skip(payload, len, &request_end) < 0 || (size_t)request_end != len)) {
        return -EBADMSG;
    }
    c.request = whole ? payload + index : NULL;
    c.request_len = whole ? (size_t)(request_end - index) : 0;
    *out = c;
    return 0;
}

int dist_call_parse(const char *payload, size_t len, DistCall *out)
{
    return call_parse(payload, len, true, out);
}

int dist_call_head_parse(const char *payload, size_t len, DistCall *out)
{
    return call_parse(payload, len, false, out);
}

int dist_probe_encode(ei_x_buff *control, ei_x_buff *message, const erlang_pid *self,
                      const erlang_ref *ref, const erlang_pid *pid)
{
    if (ei_x_encode_tuple_header(control, 4) < 0 ||
        ei_x_encode_long(control, DIST_OP_REG_SEND) < 0 || ei_x_encode_pid(control, self) < 0 ||
        ei_x_encode_atom(control, "") < 0 || ei_x_encode_atom(control, "rex") < 0) {
        return -ENOMEM;
    }
    if (ei_x_encode_tuple_header(message, 3) < 0 ||
        ei_x_encode_atom(message, "$gen_call") < 0 ||
        ei_x_encode_tuple_header(message, 2) < 0 || ei_x_encode_pid(message, self) < 0 ||
        ei_x_encode_ref(message, ref) < 0 || ei_x_encode_tuple_header(message, 5) < 0 ||
        ei_x_encode_atom(message, "call") < 0 || ei_x_encode_atom(message, "erlang") < 0 ||
        ei_x_encode_atom(message, "is_process_alive") < 0 ||
        ei_x_encode_list_header(message, 1) < 0 || ei_x_encode_pid(message, pid) < 0 ||
        ei_x_encode_empty_list(message) < 0 || ei_x_encode_atom(message, "user") < 0) {
        return -ENOMEM;
    }
    return 0;
}

int dist_probe_reply_parse(const char *payload, size_t len, erlang_ref *ref,
                           DistProbeResult *result)
{
    int index = 0;
    int end;
    int arity;
    erlang_ref value;
    char atom[MAXATOMLEN_UTF8];

    if (term_start(payload, len, &index, &end) < 0 || (size_t)end != len ||
        (uint8_t)payload[index] != ERL_SMALL_TUPLE_EXT ||
        ei_decode_tuple_header(payload, &index, &arity) < 0 || arity != 2 ||
        decode_ref_checked(payload, &index, end, &value) < 0) {
        return -EBADMSG;
    }
    /* term_start() walked the whole tuple, so one more term ends exactly at `end`. */
    DistProbeResult r = DIST_PROBE_UNKNOWN;
    int atom_end = index;
    if (dist_term_skip(payload, (size_t)end, &atom_end) == 0 && atom_end == end &&
        ei_decode_atom(payload, &index, atom) == 0) {
        r = strcmp(atom, "true") == 0    ? DIST_PROBE_ALIVE
            : strcmp(atom, "false") == 0 ? DIST_PROBE_EXITED
                                         : DIST_PROBE_UNKNOWN;
    }
    *ref = value;
    *result = r;
    return 0;
}
