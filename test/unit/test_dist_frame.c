/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the distribution frame parser: frame headers, the bounded term walker on every
 * term type and every truncated prefix, hostile arities, deep nesting, control messages and
 * gen_server calls. Inputs are copied into heap buffers of their exact length, so a read past
 * the end is caught when the suite runs under AddressSanitizer.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dist_frame.h"

/*
 * A copy of `len` bytes that ends right before an inaccessible page, so that any read past the
 * end faults, also inside ei (a static library that ASan does not instrument). Free it with
 * free_exact().
 */
static char *dup_exact(const void *src, size_t len)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t data_pages = (len + page - 1) / page;
    char *map = mmap(NULL, (data_pages + 1) * page, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    cr_assert_neq(map, MAP_FAILED);
    cr_assert_eq(mprotect(map + data_pages * page, page, PROT_NONE), 0);
    char *data = map + data_pages * page - len;
    if (len > 0) {
        memcpy(data, src, len);
    }
    return data;
}

static void free_exact(char *data, size_t len)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t data_pages = (len + page - 1) / page;

    munmap(data + len - data_pages * page, (data_pages + 1) * page);
}

static void put_be32(char *p, uint32_t v)
{
    p[0] = (char)(v >> 24);
    p[1] = (char)(v >> 16);
    p[2] = (char)(v >> 8);
    p[3] = (char)v;
}

static erlang_pid make_pid(const char *node, unsigned num)
{
    erlang_pid pid;

    memset(&pid, 0, sizeof(pid));
    snprintf(pid.node, sizeof(pid.node), "%s", node);
    pid.num = num;
    pid.serial = 3;
    pid.creation = 0x5eed;
    return pid;
}

static erlang_ref make_ref(const char *node, unsigned seed)
{
    erlang_ref ref;

    memset(&ref, 0, sizeof(ref));
    snprintf(ref.node, sizeof(ref.node), "%s", node);
    ref.len = 3;
    ref.n[0] = seed;
    ref.n[1] = seed * 7 + 1;
    ref.n[2] = seed * 13 + 2;
    ref.creation = 0x5eed;
    return ref;
}

/* ---- dist_frame_peek ---- */

Test(dist_frame, peek_partial_header)
{
    const uint8_t buf[4] = {0, 0, 0, 9};

    for (size_t len = 0; len < DIST_FRAME_HEADER_SIZE; len++) {
        DistFrameKind kind = (DistFrameKind)77;
        size_t body_len = 12345;
        char *copy = dup_exact(buf, len);
        cr_assert_eq(dist_frame_peek((const uint8_t *)copy, len, &kind, &body_len), -EAGAIN,
                     "len %zu", len);
        cr_assert_eq(kind, (DistFrameKind)77, "kind written on failure");
        cr_assert_eq(body_len, 12345, "body_len written on failure");
        free_exact(copy, len);
    }
}

Test(dist_frame, peek_tick)
{
    const uint8_t buf[4] = {0, 0, 0, 0};
    DistFrameKind kind;
    size_t body_len = 99;

    cr_assert_eq(dist_frame_peek(buf, sizeof(buf), &kind, &body_len), 0);
    cr_assert_eq(kind, DIST_FRAME_TICK);
    cr_assert_eq(body_len, 0);
}

Test(dist_frame, peek_lengths)
{
    static const struct {
        uint8_t header[4];
        size_t expected;
    } cases[] = {
        {{0, 0, 0, 1}, 1},
        {{0, 0, 1, 0}, 256},
        {{0x01, 0x02, 0x03, 0x04}, 0x01020304},
        {{0x7f, 0xff, 0xff, 0xff}, 0x7fffffff},
        {{0xff, 0xff, 0xff, 0xff}, 0xffffffffu},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        DistFrameKind kind;
        size_t body_len;
        /* Extra bytes after the header belong to the body and do not change the result. */
        uint8_t buf[8] = {0};
        memcpy(buf, cases[i].header, 4);
        cr_assert_eq(dist_frame_peek(buf, sizeof(buf), &kind, &body_len), 0);
        cr_assert_eq(kind, DIST_FRAME_MESSAGE, "case %zu", i);
        cr_assert_eq(body_len, cases[i].expected, "case %zu", i);
        cr_assert_eq(dist_frame_peek(buf, 4, &kind, &body_len), 0);
        cr_assert_eq(body_len, cases[i].expected, "case %zu with header only", i);
    }
}

/* ---- dist_term_skip on every term type ---- */

typedef struct {
    const char *name;
    char *bytes; /* encoded term without version byte */
    size_t len;
} Sample;

#define SAMPLE_MAX 64

typedef struct {
    Sample items[SAMPLE_MAX];
    size_t count;
} SampleSet;

static void add_sample(SampleSet *set, const char *name, const void *bytes, size_t len)
{
    cr_assert_lt(set->count, SAMPLE_MAX);
    Sample *s = &set->items[set->count++];
    s->name = name;
    s->bytes = malloc(len);
    cr_assert_not_null(s->bytes);
    memcpy(s->bytes, bytes, len);
    s->len = len;
}

/* Encode with ei: start a buffer, let `x` be filled by the statements, then add it. */
#define ADD_EI(set, name, ...)                                                                     \
    do {                                                                                           \
        ei_x_buff x;                                                                               \
        cr_assert_eq(ei_x_new(&x), 0);                                                             \
        cr_assert_eq((__VA_ARGS__), 0, "encoding %s", name);                                      \
        add_sample(set, name, x.buff, (size_t)x.index);                                           \
        ei_x_free(&x);                                                                             \
    } while (0)

static int encode_nested(ei_x_buff *x)
{
    erlang_pid pid = make_pid("nested@host", 5);
    char bin[3] = {1, 2, 3};

    /* {1, [a, "b" | c], #{k => <<1,2,3>>, 2.5 => {}}, Pid} */
    if (ei_x_encode_tuple_header(x, 4) < 0 || ei_x_encode_long(x, 1) < 0 ||
        ei_x_encode_list_header(x, 2) < 0 || ei_x_encode_atom(x, "a") < 0 ||
        ei_x_encode_string(x, "b") < 0 || ei_x_encode_atom(x, "c") < 0 ||
        ei_x_encode_map_header(x, 2) < 0 || ei_x_encode_atom(x, "k") < 0 ||
        ei_x_encode_binary(x, bin, 3) < 0 || ei_x_encode_double(x, 2.5) < 0 ||
        ei_x_encode_tuple_header(x, 0) < 0 || ei_x_encode_pid(x, &pid) < 0) {
        return -1;
    }
    return 0;
}

static int encode_large_tuple(ei_x_buff *x)
{
    if (ei_x_encode_tuple_header(x, 300) < 0) {
        return -1;
    }
    for (int i = 0; i < 300; i++) {
        if (ei_x_encode_long(x, i) < 0) {
            return -1;
        }
    }
    return 0;
}

static int encode_fun(ei_x_buff *x)
{
    erlang_fun fun;
    erlang_pid pid = make_pid("fun@host", 9);
    char free_var[2] = {ERL_SMALL_INTEGER_EXT, 42};

    memset(&fun, 0, sizeof(fun));
    fun.arity = 1;
    snprintf(fun.module, sizeof(fun.module), "%s", "mod");
    fun.type = EI_FUN_CLOSURE;
    memset(fun.u.closure.md5, 0xab, sizeof(fun.u.closure.md5));
    fun.u.closure.index = 4;
    fun.u.closure.old_index = 4;
    fun.u.closure.uniq = 77;
    fun.u.closure.n_free_vars = 1;
    fun.u.closure.pid = pid;
    fun.u.closure.free_var_len = sizeof(free_var);
    fun.u.closure.free_vars = free_var;
    return ei_x_encode_fun(x, &fun);
}

static int encode_export(ei_x_buff *x)
{
    erlang_fun fun;

    memset(&fun, 0, sizeof(fun));
    fun.arity = 2;
    snprintf(fun.module, sizeof(fun.module), "%s", "lists");
    fun.type = EI_FUN_EXPORT;
    fun.u.exprt.func = (char *)"map";
    fun.u.exprt.func_allocated = 0;
    return ei_x_encode_fun(x, &fun);
}

/* Terms in the old or rare encodings that ei does not produce, written byte by byte. */
static void add_handmade_samples(SampleSet *set)
{
    char buf[64];

    /* FLOAT_EXT: 31 bytes of "%.20e" text, NUL padded. */
    memset(buf, 0, sizeof(buf));
    buf[0] = ERL_FLOAT_EXT;
    snprintf(buf + 1, 31, "%.20e", 1.5);
    add_sample(set, "FLOAT_EXT", buf, 32);

    const char atom_ext[] = {ERL_ATOM_EXT, 0, 3, 'a', 'b', 'c'};
    add_sample(set, "ATOM_EXT", atom_ext, sizeof(atom_ext));
    const char small_atom_ext[] = {ERL_SMALL_ATOM_EXT, 2, 'o', 'k'};
    add_sample(set, "SMALL_ATOM_EXT", small_atom_ext, sizeof(small_atom_ext));
    const char atom_utf8_ext[] = {ERL_ATOM_UTF8_EXT, 0, 2, (char)0xc3, (char)0xa9};
    add_sample(set, "ATOM_UTF8_EXT", atom_utf8_ext, sizeof(atom_utf8_ext));

    /* LARGE_BIG_EXT: 4-byte digit count, sign, digits. */
    const char large_big[] = {ERL_LARGE_BIG_EXT, 0, 0, 0, 3, 1, 1, 2, 3};
    add_sample(set, "LARGE_BIG_EXT", large_big, sizeof(large_big));

    /* PID_EXT: node atom, id, serial, one-byte creation. */
    const char pid_ext[] = {ERL_PID_EXT, ERL_SMALL_ATOM_UTF8_EXT, 3, 'n', '@', 'h',
                            0, 0, 0, 1, 0, 0, 0, 2, 3};
    add_sample(set, "PID_EXT", pid_ext, sizeof(pid_ext));
    /* PORT_EXT: node atom, id, one-byte creation. */
    const char port_ext[] = {ERL_PORT_EXT, ERL_ATOM_EXT, 0, 3, 'n', '@', 'h', 0, 0, 0, 7, 1};
    add_sample(set, "PORT_EXT", port_ext, sizeof(port_ext));
    /* NEW_PORT_EXT: node atom, id, four-byte creation. */
    const char new_port_ext[] = {ERL_NEW_PORT_EXT, ERL_SMALL_ATOM_EXT, 3, 'n', '@', 'h',
                                 0, 0, 0, 7, 0, 0, 0, 1};
    add_sample(set, "NEW_PORT_EXT", new_port_ext, sizeof(new_port_ext));
    /* V4_PORT_EXT: node atom, 8-byte id, four-byte creation. */
    const char v4_port_ext[] = {ERL_V4_PORT_EXT, ERL_SMALL_ATOM_UTF8_EXT, 3, 'n', '@', 'h',
                                0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 1};
    add_sample(set, "V4_PORT_EXT", v4_port_ext, sizeof(v4_port_ext));
    /* NEW_REFERENCE_EXT: word count, node atom, one-byte creation, words. */
    const char new_ref_ext[] = {ERL_NEW_REFERENCE_EXT, 0, 2, ERL_SMALL_ATOM_UTF8_EXT, 3,
                                'n', '@', 'h', 1, 0, 0, 0, 1, 0, 0, 0, 2};
    add_sample(set, "NEW_REFERENCE_EXT", new_ref_ext, sizeof(new_ref_ext));
    /* BIT_BINARY_EXT: length, bits in the last byte, data. */
    const char bit_binary[] = {ERL_BIT_BINARY_EXT, 0, 0, 0, 2, 3, (char)0xff, (char)0xe0};
    add_sample(set, "BIT_BINARY_EXT", bit_binary, sizeof(bit_binary));
}

static void build_samples(SampleSet *set)
{
    erlang_pid pid = make_pid("peer@host", 42);
    erlang_ref ref = make_ref("peer@host", 1);
    erlang_port port;
    char big_bin[300];

    memset(set, 0, sizeof(*set));
    memset(&port, 0, sizeof(port));
    snprintf(port.node, sizeof(port.node), "%s", "peer@host");
    port.id = 1234;
    port.creation = 7;
    memset(big_bin, 'z', sizeof(big_bin));

    ADD_EI(set, "SMALL_INTEGER_EXT", ei_x_encode_long(&x, 200));
    ADD_EI(set, "INTEGER_EXT", ei_x_encode_long(&x, -70000));
    ADD_EI(set, "SMALL_BIG_EXT", ei_x_encode_ulonglong(&x, 0xffffffffffffull));
    ADD_EI(set, "NEW_FLOAT_EXT", ei_x_encode_double(&x, -0.25));
    ADD_EI(set, "SMALL_ATOM_UTF8_EXT", ei_x_encode_atom(&x, "hello"));
    ADD_EI(set, "empty atom", ei_x_encode_atom(&x, ""));
    ADD_EI(set, "STRING_EXT", ei_x_encode_string(&x, "abc"));
    ADD_EI(set, "NIL_EXT", ei_x_encode_empty_list(&x));
    ADD_EI(set, "empty SMALL_TUPLE_EXT", ei_x_encode_tuple_header(&x, 0));
    ADD_EI(set, "LARGE_TUPLE_EXT", encode_large_tuple(&x));
    ADD_EI(set, "empty MAP_EXT", ei_x_encode_map_header(&x, 0));
    ADD_EI(set, "BINARY_EXT", ei_x_encode_binary(&x, big_bin, sizeof(big_bin)));
    ADD_EI(set, "empty BINARY_EXT", ei_x_encode_binary(&x, "", 0));
    ADD_EI(set, "NEW_PID_EXT", ei_x_encode_pid(&x, &pid));
    ADD_EI(set, "port", ei_x_encode_port(&x, &port));
    ADD_EI(set, "NEWER_REFERENCE_EXT", ei_x_encode_ref(&x, &ref));
    ADD_EI(set, "NEW_FUN_EXT", encode_fun(&x));
    ADD_EI(set, "EXPORT_EXT", encode_export(&x));
    ADD_EI(set, "nested tuple, list, map, pid", encode_nested(&x));
    ADD_EI(set, "improper list", ei_x_encode_list_header(&x, 1) || ei_x_encode_atom(&x, "alias")
                                     || ei_x_encode_ref(&x, &ref));
    add_handmade_samples(set);
}

static void free_samples(SampleSet *set)
{
    for (size_t i = 0; i < set->count; i++) {
        free(set->items[i].bytes);
    }
}

Test(dist_frame, skip_every_term_type)
{
    SampleSet set;

    build_samples(&set);
    for (size_t i = 0; i < set.count; i++) {
        const Sample *s = &set.items[i];
        char *copy = dup_exact(s->bytes, s->len);
        int index = 0;
        cr_assert_eq(dist_term_skip(copy, s->len, &index), 0, "%s", s->name);
        cr_assert_eq((size_t)index, s->len, "%s: skipped %d of %zu bytes", s->name, index,
                     s->len);
        free_exact(copy, s->len);
    }
    free_samples(&set);
}

/* dist_term_skip and ei_skip_term agree on where each valid term ends. */
Test(dist_frame, skip_agrees_with_ei)
{
    SampleSet set;

    build_samples(&set);
    for (size_t i = 0; i < set.count; i++) {
        const Sample *s = &set.items[i];
        int ours = 0;
        int theirs = 0;
        cr_assert_eq(dist_term_skip(s->bytes, s->len, &ours), 0, "%s", s->name);
        cr_assert_eq(ei_skip_term(s->bytes, &theirs), 0, "%s", s->name);
        cr_assert_eq(ours, theirs, "%s: ours %d, ei %d", s->name, ours, theirs);
    }
    free_samples(&set);
}

Test(dist_frame, skip_at_offset)
{
    char buf[16] = {'x', 'x', ERL_SMALL_INTEGER_EXT, 5, ERL_NIL_EXT};
    int index = 2;

    cr_assert_eq(dist_term_skip(buf, 5, &index), 0);
    cr_assert_eq(index, 4);
    cr_assert_eq(dist_term_skip(buf, 5, &index), 0);
    cr_assert_eq(index, 5);
    cr_assert_eq(dist_term_skip(buf, 5, &index), -EBADMSG, "nothing left at the end");
    cr_assert_eq(index, 5);
    index = 6;
    cr_assert_eq(dist_term_skip(buf, 5, &index), -EBADMSG, "index past the length");
    cr_assert_eq(index, 6);
}

Test(dist_frame, skip_every_truncated_prefix)
{
    SampleSet set;

    build_samples(&set);
    for (size_t i = 0; i < set.count; i++) {
        const Sample *s = &set.items[i];
        for (size_t len = 0; len < s->len; len++) {
            char *copy = dup_exact(s->bytes, len);
            int index = 0;
            cr_assert_eq(dist_term_skip(copy, len, &index), -EBADMSG, "%s cut to %zu of %zu",
                         s->name, len, s->len);
            cr_assert_eq(index, 0, "%s: index moved on failure", s->name);
            free_exact(copy, len);
        }
    }
    free_samples(&set);
}

/* A small deterministic generator, so a failure reproduces. */
static uint32_t next_random(uint32_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    return *state;
}

Test(dist_frame, skip_garbage_stays_in_bounds)
{
    uint32_t state = 0x12345678;
    char raw[64];

    for (int round = 0; round < 200000; round++) {
        size_t len = 1 + next_random(&state) % sizeof(raw);
        for (size_t k = 0; k < len; k++) {
            raw[k] = (char)next_random(&state);
        }
        /* Bias the first byte towards real tags so the walker goes deep, not just rejects. */
        static const char tags[] = "abcdhijklmnopqstvwxXYZMfgr";
        raw[0] = tags[next_random(&state) % (sizeof(tags) - 1)];
        char *copy = dup_exact(raw, len);
        int index = 0;
        int r = dist_term_skip(copy, len, &index);
        cr_assert(r == 0 || r == -EBADMSG, "unexpected result %d", r);
        if (r == 0) {
            cr_assert_leq((size_t)index, len);
            cr_assert_gt(index, 0);
        } else {
            cr_assert_eq(index, 0);
        }
        free_exact(copy, len);
    }
}

Test(dist_frame, skip_rejects_unknown_tags)
{
    /* Atom cache references (82), compressed terms (80), the old FUN_EXT and REFERENCE_EXT. */
    static const char tags[] = {82, 80, ERL_FUN_EXT, ERL_REFERENCE_EXT, 0, 1, (char)131,
                                (char)255};

    for (size_t i = 0; i < sizeof(tags); i++) {
        char buf[16] = {tags[i]};
        int index = 0;
        cr_assert_eq(dist_term_skip(buf, sizeof(buf), &index), -EBADMSG, "tag %d",
                     (unsigned char)tags[i]);
        cr_assert_eq(index, 0);
    }
}

Test(dist_frame, skip_hostile_arities)
{
    static const char tags[] = {ERL_LIST_EXT, ERL_LARGE_TUPLE_EXT, ERL_MAP_EXT, ERL_BINARY_EXT,
                                ERL_LARGE_BIG_EXT, ERL_BIT_BINARY_EXT, ERL_NEW_FUN_EXT};

    for (size_t i = 0; i < sizeof(tags); i++) {
        /* 2^32-1 elements or bytes claimed in a 10-byte buffer. */
        char buf[10];
        memset(buf, ERL_NIL_EXT, sizeof(buf));
        buf[0] = tags[i];
        put_be32(buf + 1, 0xffffffffu);
        char *copy = dup_exact(buf, sizeof(buf));
        int index = 0;
        cr_assert_eq(dist_term_skip(copy, sizeof(buf), &index), -EBADMSG, "tag '%c'", tags[i]);
        cr_assert_eq(index, 0);
        free_exact(copy, sizeof(buf));
    }

    /* A small tuple claiming 255 elements with 8 present. */
    char small[10] = {ERL_SMALL_TUPLE_EXT, (char)255};
    memset(small + 2, ERL_NIL_EXT, 8);
    int index = 0;
    cr_assert_eq(dist_term_skip(small, sizeof(small), &index), -EBADMSG);

    /* Atom and string lengths past the buffer. */
    const char atom[] = {ERL_ATOM_UTF8_EXT, (char)0xff, (char)0xff, 'a'};
    index = 0;
    cr_assert_eq(dist_term_skip(atom, sizeof(atom), &index), -EBADMSG);
    const char string[] = {ERL_STRING_EXT, 0, 9, 'a', 'b'};
    index = 0;
    cr_assert_eq(dist_term_skip(string, sizeof(string), &index), -EBADMSG);
    /* A fun whose size field is smaller than itself. */
    const char fun[] = {ERL_NEW_FUN_EXT, 0, 0, 0, 3, 0, 0, 0};
    index = 0;
    cr_assert_eq(dist_term_skip(fun, sizeof(fun), &index), -EBADMSG);
    /* A pid whose node is not an atom. */
    const char pid[] = {ERL_NEW_PID_EXT, ERL_SMALL_INTEGER_EXT, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                        0, 0, 0};
    index = 0;
    cr_assert_eq(dist_term_skip(pid, sizeof(pid), &index), -EBADMSG);
}

#define DEEP 1000000

Test(dist_frame, skip_deep_lists_without_recursion)
{
    /* [[[...[]...]]] one million deep: 5 bytes per level, the innermost [], then the tails. */
    size_t len = (size_t)DEEP * 5 + 1 + DEEP;
    char *buf = malloc(len);
    size_t at = 0;

    cr_assert_not_null(buf);
    for (int i = 0; i < DEEP; i++) {
        buf[at++] = ERL_LIST_EXT;
        put_be32(buf + at, 1);
        at += 4;
    }
    buf[at++] = ERL_NIL_EXT;
    for (int i = 0; i < DEEP; i++) {
        buf[at++] = ERL_NIL_EXT;
    }
    cr_assert_eq(at, len);

    int index = 0;
    cr_assert_eq(dist_term_skip(buf, len, &index), 0);
    cr_assert_eq((size_t)index, len);
    index = 0;
    cr_assert_eq(dist_term_skip(buf, len - 1, &index), -EBADMSG, "one tail missing");
    cr_assert_eq(index, 0);
    free(buf);
}

Test(dist_frame, skip_deep_tuples_without_recursion)
{
    /* {{{...{}...}}} one million deep: 2 bytes per level, then the empty tuple. */
    size_t len = (size_t)DEEP * 2 + 2;
    char *buf = malloc(len);

    cr_assert_not_null(buf);
    for (size_t i = 0; i < (size_t)DEEP; i++) {
        buf[2 * i] = ERL_SMALL_TUPLE_EXT;
        buf[2 * i + 1] = 1;
    }
    buf[len - 2] = ERL_SMALL_TUPLE_EXT;
    buf[len - 1] = 0;

    int index = 0;
    cr_assert_eq(dist_term_skip(buf, len, &index), 0);
    cr_assert_eq((size_t)index, len);
    index = 0;
    cr_assert_eq(dist_term_skip(buf, len - 1, &index), -EBADMSG);
    free(buf);
}

/* ---- dist_message_parse ---- */

/* Build 'p', 131, control, and (when `payload` is not NULL) 131, payload. */
static char *build_message(const ei_x_buff *control, const ei_x_buff *payload, size_t *len)
{
    size_t n = 1 + (size_t)control->index + (payload ? (size_t)payload->index : 0);
    char *body = malloc(n);

    cr_assert_not_null(body);
    body[0] = DIST_PASS_THROUGH;
    memcpy(body + 1, control->buff, (size_t)control->index);
    if (payload) {
        memcpy(body + 1 + control->index, payload->buff, (size_t)payload->index);
    }
    *len = n;
    return body;
}

static void encode_payload(ei_x_buff *x)
{
    cr_assert_eq(ei_x_new_with_version(x), 0);
    cr_assert_eq(ei_x_encode_tuple_header(x, 2), 0);
    cr_assert_eq(ei_x_encode_atom(x, "hello"), 0);
    cr_assert_eq(ei_x_encode_long(x, 7), 0);
}

static void encode_reg_send(ei_x_buff *x, long op, const erlang_pid *from, const char *to)
{
    cr_assert_eq(ei_x_new_with_version(x), 0);
    cr_assert_eq(ei_x_encode_tuple_header(x, op == DIST_OP_REG_SEND_TT ? 5 : 4), 0);
    cr_assert_eq(ei_x_encode_long(x, op), 0);
    cr_assert_eq(ei_x_encode_pid(x, from), 0);
    cr_assert_eq(ei_x_encode_atom(x, ""), 0);
    cr_assert_eq(ei_x_encode_atom(x, to), 0);
    if (op == DIST_OP_REG_SEND_TT) {
        cr_assert_eq(ei_x_encode_atom(x, "trace_token"), 0);
    }
}

static void check_reg_send(long op)
{
    erlang_pid from = make_pid("caller@host", 77);
    ei_x_buff control;
    ei_x_buff payload;
    size_t len;
    DistMessage m;

    encode_reg_send(&control, op, &from, "snakepit");
    encode_payload(&payload);
    char *body = build_message(&control, &payload, &len);

    cr_assert_eq(dist_message_parse(body, len, &m), 0);
    cr_assert_eq(m.op, op);
    cr_assert(m.has_from);
    cr_assert_str_eq(m.from.node, "caller@host");
    cr_assert_eq(m.from.num, 77);
    cr_assert_str_eq(m.to_name, "snakepit");
    cr_assert_eq(m.payload, body + 1 + control.index);
    cr_assert_eq(m.payload_len, (size_t)payload.index);
    cr_assert_eq(memcmp(m.payload, payload.buff, m.payload_len), 0);

    free(body);
    ei_x_free(&control);
    ei_x_free(&payload);
}

Test(dist_frame, message_reg_send)
{
    check_reg_send(DIST_OP_REG_SEND);
}

Test(dist_frame, message_reg_send_tt)
{
    check_reg_send(DIST_OP_REG_SEND_TT);
}

static bool send_is_traced(long op)
{
    return op == DIST_OP_SEND_TT || op == DIST_OP_SEND_SENDER_TT;
}

static bool send_has_sender(long op)
{
    return op == DIST_OP_SEND_SENDER || op == DIST_OP_SEND_SENDER_TT;
}

/* {2, '', To}, {12, '', To, Token}, {22, From, To} or {23, From, To, Token}. */
static void encode_send(ei_x_buff *x, long op, const erlang_pid *from, const erlang_pid *to)
{
    cr_assert_eq(ei_x_new_with_version(x), 0);
    cr_assert_eq(ei_x_encode_tuple_header(x, send_is_traced(op) ? 4 : 3), 0);
    cr_assert_eq(ei_x_encode_long(x, op), 0);
    if (send_has_sender(op)) {
        cr_assert_eq(ei_x_encode_pid(x, from), 0);
    } else {
        cr_assert_eq(ei_x_encode_atom(x, ""), 0);
    }
    cr_assert_eq(ei_x_encode_pid(x, to), 0);
    if (send_is_traced(op)) {
        cr_assert_eq(ei_x_encode_atom(x, "trace_token"), 0);
    }
}

static const long send_ops[] = {DIST_OP_SEND, DIST_OP_SEND_TT, DIST_OP_SEND_SENDER,
                                DIST_OP_SEND_SENDER_TT};

static void check_send(long op)
{
    erlang_pid from = make_pid("caller@host", 9);
    erlang_pid to = make_pid("daemon@host", 1);
    ei_x_buff control;
    ei_x_buff payload;
    size_t len;
    DistMessage m;

    encode_send(&control, op, &from, &to);
    encode_payload(&payload);
    char *body = build_message(&control, &payload, &len);
    char *copy = dup_exact(body, len);

    cr_assert_eq(dist_message_parse(copy, len, &m), 0, "op %ld", op);
    cr_assert_eq(m.op, op);
    cr_assert_eq(m.has_from, send_has_sender(op), "op %ld", op);
    if (send_has_sender(op)) {
        cr_assert_str_eq(m.from.node, "caller@host");
        cr_assert_eq(m.from.num, 9);
    }
    cr_assert_str_eq(m.to.node, "daemon@host");
    cr_assert_eq(m.to.num, 1);
    cr_assert_eq(m.to.serial, to.serial);
    cr_assert_eq(m.to.creation, to.creation);
    cr_assert_eq(m.payload_len, (size_t)payload.index);
    cr_assert_eq(memcmp(m.payload, payload.buff, m.payload_len), 0);

    free_exact(copy, len);
    free(body);
    ei_x_free(&control);
    ei_x_free(&payload);
}

Test(dist_frame, message_send)
{
    for (size_t i = 0; i < sizeof(send_ops) / sizeof(send_ops[0]); i++) {
        check_send(send_ops[i]);
    }
}

Test(dist_frame, message_send_every_truncated_prefix)
{
    erlang_pid from = make_pid("caller@host", 9);
    erlang_pid to = make_pid("daemon@host", 1);

    for (size_t i = 0; i < sizeof(send_ops) / sizeof(send_ops[0]); i++) {
        ei_x_buff control;
        ei_x_buff payload;
        size_t len;
        encode_send(&control, send_ops[i], &from, &to);
        encode_payload(&payload);
        char *body = build_message(&control, &payload, &len);
        for (size_t cut = 0; cut < len; cut++) {
            char *copy = dup_exact(body, cut);
            DistMessage m;
            m.op = -1;
            cr_assert_eq(dist_message_parse(copy, cut, &m), -EBADMSG, "op %ld cut to %zu",
                         send_ops[i], cut);
            cr_assert_eq(m.op, -1, "output written on failure");
            free_exact(copy, cut);
        }
        free(body);
        ei_x_free(&control);
        ei_x_free(&payload);
    }
}

Test(dist_frame, message_send_malformed)
{
    erlang_pid to = make_pid("daemon@host", 1);
    ei_x_buff control;
    ei_x_buff payload;
    size_t len;
    DistMessage m;

    encode_payload(&payload);

    /* SEND with the four elements of SEND_TT. */
    cr_assert_eq(ei_x_new_with_version(&control), 0);
    cr_assert_eq(ei_x_encode_tuple_header(&control, 4), 0);
    cr_assert_eq(ei_x_encode_long(&control, DIST_OP_SEND), 0);
    cr_assert_eq(ei_x_encode_atom(&control, ""), 0);
    cr_assert_eq(ei_x_encode_pid(&control, &to), 0);
    cr_assert_eq(ei_x_encode_atom(&control, "trace_token"), 0);
    char *body = build_message(&control, &payload, &len);
    cr_assert_eq(dist_message_parse(body, len, &m), -EBADMSG);
    free(body);
    ei_x_free(&control);

    /* SEND whose ToPid is a registered name. */
    cr_assert_eq(ei_x_new_with_version(&control), 0);
    cr_assert_eq(ei_x_encode_tuple_header(&control, 3), 0);
    cr_assert_eq(ei_x_encode_long(&control, DIST_OP_SEND), 0);
    cr_assert_eq(ei_x_encode_atom(&control, ""), 0);
    cr_assert_eq(ei_x_encode_atom(&control, "snakepit"), 0);
    body = build_message(&control, &payload, &len);
    cr_assert_eq(dist_message_parse(body, len, &m), -EBADMSG);
    free(body);
    ei_x_free(&control);

    /* SEND_SENDER whose FromPid is an atom. */
    cr_assert_eq(ei_x_new_with_version(&control), 0);
    cr_assert_eq(ei_x_encode_tuple_header(&control, 3), 0);
    cr_assert_eq(ei_x_encode_long(&control, DIST_OP_SEND_SENDER), 0);
    cr_assert_eq(ei_x_encode_atom(&control, "nobody"), 0);
    cr_assert_eq(ei_x_encode_pid(&control, &to), 0);
    body = build_message(&control, &payload, &len);
    cr_assert_eq(dist_message_parse(body, len, &m), -EBADMSG);
    free(body);
    ei_x_free(&control);

    /* SEND_SENDER_TT without its trace token. */
    cr_assert_eq(ei_x_new_with_version(&control), 0);
    cr_assert_eq(ei_x_encode_tuple_header(&control, 3), 0);
    cr_assert_eq(ei_x_encode_long(&control, DIST_OP_SEND_SENDER_TT), 0);
    cr_assert_eq(ei_x_encode_pid(&control, &to), 0);
    cr_assert_eq(ei_x_encode_pid(&control, &to), 0);
    body = build_message(&control, &payload, &len);
    cr_assert_eq(dist_message_parse(body, len, &m), -EBADMSG);
    free(body);
    ei_x_free(&control);
    ei_x_free(&payload);
}

Test(dist_frame, message_unsupported_ops)
{
    erlang_pid a = make_pid("a@host", 1);
    erlang_pid b = make_pid("b@host", 2);
    erlang_ref ref = make_ref("a@host", 3);
    /* 21 and 28 are MONITOR_P_EXIT and PAYLOAD_MONITOR_P_EXIT. */
    static const long ops[] = {DIST_OP_LINK,      DIST_OP_EXIT,        DIST_OP_UNLINK,
                               DIST_OP_MONITOR_P, DIST_OP_DEMONITOR_P, 21,
                               28,                DIST_OP_ALIAS_SEND,  99};

    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        ei_x_buff control;
        ei_x_buff payload;
        size_t len;
        DistMessage m;
        m.op = -1;
        cr_assert_eq(ei_x_new_with_version(&control), 0);
        cr_assert_eq(ei_x_encode_tuple_header(&control, 4), 0);
        cr_assert_eq(ei_x_encode_long(&control, ops[i]), 0);
        cr_assert_eq(ei_x_encode_pid(&control, &a), 0);
        cr_assert_eq(ei_x_encode_pid(&control, &b), 0);
        cr_assert_eq(ei_x_encode_ref(&control, &ref), 0);
        encode_payload(&payload);
        char *body = build_message(&control, &payload, &len);
        cr_assert_eq(dist_message_parse(body, len, &m), -ENOTSUP, "op %ld", ops[i]);
        cr_assert_eq(m.op, -1, "output written on failure");
        long op = -1;
        cr_assert_eq(dist_message_op(body, len, &op), 0, "op %ld", ops[i]);
        cr_assert_eq(op, ops[i]);
        free(body);
        ei_x_free(&control);
        ei_x_free(&payload);
    }
}

Test(dist_frame, message_malformed)
{
    erlang_pid from = make_pid("caller@host", 77);
    ei_x_buff control;
    ei_x_buff payload;
    size_t len;
    DistMessage m;

    encode_reg_send(&control, DIST_OP_REG_SEND, &from, "snakepit");
    encode_payload(&payload);
    char *body = build_message(&control, &payload, &len);

    /* Not a pass-through message. */
    body[0] = 'q';
    cr_assert_eq(dist_message_parse(body, len, &m), -EBADMSG);
    body[0] = DIST_PASS_THROUGH;
    /* A wrong version byte on the control term. */
    body[1] = (char)130;
    cr_assert_eq(dist_message_parse(body, len, &m), -EBADMSG);
    body[1] = (char)131;
    /* A wrong version byte on the payload. */
    body[1 + control.index] = 0;
    cr_assert_eq(dist_message_parse(body, len, &m), -EBADMSG);
    free(body);
    ei_x_free(&control);

    /* REG_SEND with a control tuple of three elements. */
    cr_assert_eq(ei_x_new_with_version(&control), 0);
    cr_assert_eq(ei_x_encode_tuple_header(&control, 3), 0);
    cr_assert_eq(ei_x_encode_long(&control, DIST_OP_REG_SEND), 0);
    cr_assert_eq(ei_x_encode_pid(&control, &from), 0);
    cr_assert_eq(ei_x_encode_atom(&control, ""), 0);
    body = build_message(&control, &payload, &len);
    cr_assert_eq(dist_message_parse(body, len, &m), -EBADMSG);
    free(body);
    ei_x_free(&control);

    /* REG_SEND whose ToName is not an atom. */
    cr_assert_eq(ei_x_new_with_version(&control), 0);
    cr_assert_eq(ei_x_encode_tuple_header(&control, 4), 0);
    cr_assert_eq(ei_x_encode_long(&control, DIST_OP_REG_SEND), 0);
    cr_assert_eq(ei_x_encode_pid(&control, &from), 0);
    cr_assert_eq(ei_x_encode_atom(&control, ""), 0);
    cr_assert_eq(ei_x_encode_string(&control, "snakepit"), 0);
    body = build_message(&control, &payload, &len);
    cr_assert_eq(dist_message_parse(body, len, &m), -EBADMSG);
    free(body);
    ei_x_free(&control);

    /* REG_SEND whose FromPid is an atom. */
    cr_assert_eq(ei_x_new_with_version(&control), 0);
    cr_assert_eq(ei_x_encode_tuple_header(&control, 4), 0);
    cr_assert_eq(ei_x_encode_long(&control, DIST_OP_REG_SEND), 0);
    cr_assert_eq(ei_x_encode_atom(&control, "nobody"), 0);
    cr_assert_eq(ei_x_encode_atom(&control, ""), 0);
    cr_assert_eq(ei_x_encode_atom(&control, "snakepit"), 0);
    body = build_message(&control, &payload, &len);
    cr_assert_eq(dist_message_parse(body, len, &m), -EBADMSG);
    free(body);
    ei_x_free(&control);

    /* A control term that is not a tuple. */
    cr_assert_eq(ei_x_new_with_version(&control), 0);
    cr_assert_eq(ei_x_encode_long(&control, DIST_OP_REG_SEND), 0);
    body = build_message(&control, &payload, &len);
    cr_assert_eq(dist_message_parse(body, len, &m), -EBADMSG);
    free(body);
    ei_x_free(&control);
    ei_x_free(&payload);
}

Test(dist_frame, message_without_payload)
{
    erlang_pid from = make_pid("caller@host", 77);
    ei_x_buff control;
    size_t len;
    DistMessage m;

    encode_reg_send(&control, DIST_OP_REG_SEND, &from, "snakepit");
    char *body = build_message(&control, NULL, &len);
    char *copy = dup_exact(body, len);
    cr_assert_eq(dist_message_parse(copy, len, &m), -EBADMSG);
    free_exact(copy, len);
    free(body);
    ei_x_free(&control);
}

Test(dist_frame, message_every_truncated_prefix)
{
    erlang_pid from = make_pid("caller@host", 77);
    ei_x_buff control;
    ei_x_buff payload;
    size_t len;

    encode_reg_send(&control, DIST_OP_REG_SEND_TT, &from, "snakepit");
    encode_payload(&payload);
    char *body = build_message(&control, &payload, &len);
    for (size_t cut = 0; cut < len; cut++) {
        char *copy = dup_exact(body, cut);
        DistMessage m;
        m.op = -1;
        cr_assert_eq(dist_message_parse(copy, cut, &m), -EBADMSG, "cut to %zu of %zu", cut, len);
        cr_assert_eq(m.op, -1);
        free_exact(copy, cut);
    }
    free(body);
    ei_x_free(&control);
    ei_x_free(&payload);
}

Test(dist_frame, message_head_of_truncated_frame)
{
    erlang_pid from = make_pid("caller@host", 77);
    ei_x_buff control;
    ei_x_buff payload;
    size_t len;
    DistMessage m;

    encode_reg_send(&control, DIST_OP_REG_SEND, &from, "snakepit");
    encode_payload(&payload);
    char *body = build_message(&control, &payload, &len);
    size_t control_end = 1 + (size_t)control.index;

    for (size_t cut = 0; cut <= len; cut++) {
        char *copy = dup_exact(body, cut);
        int r = dist_message_head_parse(copy, cut, &m);
        if (cut < control_end) {
            cr_assert_eq(r, -EBADMSG, "cut to %zu inside the control term", cut);
        } else {
            cr_assert_eq(r, 0, "cut to %zu after the control term", cut);
            cr_assert_str_eq(m.to_name, "snakepit");
            cr_assert_eq(m.payload_len, cut - control_end);
        }
        free_exact(copy, cut);
    }
    free(body);
    ei_x_free(&control);
    ei_x_free(&payload);
}

Test(dist_frame, message_op_every_truncated_prefix)
{
    erlang_pid from = make_pid("caller@host", 77);
    ei_x_buff control;
    ei_x_buff payload;
    size_t len;
    long op;

    encode_reg_send(&control, DIST_OP_REG_SEND, &from, "snakepit");
    encode_payload(&payload);
    char *body = build_message(&control, &payload, &len);
    size_t control_end = 1 + (size_t)control.index;

    for (size_t cut = 0; cut <= len; cut++) {
        char *copy = dup_exact(body, cut);
        op = -1;
        int r = dist_message_op(copy, cut, &op);
        if (cut < control_end) {
            cr_assert_eq(r, -EBADMSG, "cut to %zu inside the control term", cut);
            cr_assert_eq(op, -1, "output written on failure");
        } else {
            cr_assert_eq(r, 0, "cut to %zu after the control term", cut);
            cr_assert_eq(op, DIST_OP_REG_SEND);
        }
        free_exact(copy, cut);
    }
    free(body);
    ei_x_free(&control);
    ei_x_free(&payload);
}

/* ---- Liveness probes ---- */

Test(dist_frame, probe_encode)
{
    erlang_pid self = make_pid("daemon@host", 0);
    erlang_pid caller = make_pid("caller@host", 42);
    erlang_ref ref = make_ref("daemon@host", 8);
    ei_x_buff control;
    ei_x_buff message;
    char *printed = NULL;
    int index = 0;
    DistMessage m;
    size_t len;

    cr_assert_eq(ei_x_new_with_version(&control), 0);
    cr_assert_eq(ei_x_new_with_version(&message), 0);
    cr_assert_eq(dist_probe_encode(&control, &message, &self, &ref, &caller), 0);

    /* The control message parses as a REG_SEND from the daemon to rex. */
    char *body = build_message(&control, &message, &len);
    cr_assert_eq(dist_message_parse(body, len, &m), 0);
    cr_assert_eq(m.op, DIST_OP_REG_SEND);
    cr_assert_str_eq(m.from.node, "daemon@host");
    cr_assert_str_eq(m.to_name, "rex");

    /* The message is a gen_server call that rex runs as rpc:call/4 does. */
    DistCall call;
    cr_assert_eq(dist_call_parse(m.payload, m.payload_len, &call), 0);
    cr_assert_not(call.is_cast);
    cr_assert_not(call.has_alias);
    cr_assert_str_eq(call.pid.node, "daemon@host");
    erlang_ref tag;
    cr_assert_eq(ei_decode_ref(call.tag, &index, &tag), 0);
    cr_assert_eq(tag.n[0], ref.n[0]);
    index = 0;
    cr_assert_geq(ei_s_print_term(&printed, call.request, &index), 0);
    cr_assert_eq((size_t)index, call.request_len);
    cr_assert_str_eq(printed, "{call, erlang, is_process_alive, [<caller@host.42.3>], user}");
    free(printed);
    free(body);
    ei_x_free(&control);
    ei_x_free(&message);
}

/* {Ref, Reply} with its version byte, where `encode_reply` writes Reply. */
static char *build_probe_reply(const erlang_ref *ref, void (*encode_reply)(ei_x_buff *),
                               size_t *len)
{
    ei_x_buff x;

    cr_assert_eq(ei_x_new_with_version(&x), 0);
    cr_assert_eq(ei_x_encode_tuple_header(&x, 2), 0);
    cr_assert_eq(ei_x_encode_ref(&x, ref), 0);
    encode_reply(&x);
    char *copy = dup_exact(x.buff, (size_t)x.index);
    *len = (size_t)x.index;
    ei_x_free(&x);
    return copy;
}

static void encode_true(ei_x_buff *x)
{
    cr_assert_eq(ei_x_encode_atom(x, "true"), 0);
}

static void encode_false(ei_x_buff *x)
{
    cr_assert_eq(ei_x_encode_atom(x, "false"), 0);
}

static void encode_badrpc(ei_x_buff *x)
{
    cr_assert_eq(ei_x_encode_tuple_header(x, 2), 0);
    cr_assert_eq(ei_x_encode_atom(x, "badrpc"), 0);
    cr_assert_eq(ei_x_encode_atom(x, "nodedown"), 0);
}

static void encode_other_atom(ei_x_buff *x)
{
    cr_assert_eq(ei_x_encode_atom(x, "maybe"), 0);
}

Test(dist_frame, probe_reply_results)
{
    static const struct {
        void (*encode_reply)(ei_x_buff *);
        DistProbeResult expected;
    } cases[] = {
        {encode_true, DIST_PROBE_ALIVE},
        {encode_false, DIST_PROBE_EXITED},
        {encode_badrpc, DIST_PROBE_UNKNOWN},
        {encode_other_atom, DIST_PROBE_UNKNOWN},
    };
    erlang_ref ref = make_ref("daemon@host", 8);

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len;
        char *payload = build_probe_reply(&ref, cases[i].encode_reply, &len);
        erlang_ref out;
        DistProbeResult result = DIST_PROBE_ALIVE;
        memset(&out, 0, sizeof(out));
        cr_assert_eq(dist_probe_reply_parse(payload, len, &out, &result), 0, "case %zu", i);
        cr_assert_eq(result, cases[i].expected, "case %zu", i);
        cr_assert_str_eq(out.node, "daemon@host");
        cr_assert_eq(out.len, ref.len);
        cr_assert_eq(memcmp(out.n, ref.n, sizeof(ref.n[0]) * (size_t)ref.len), 0);
        free_exact(payload, len);
    }
}

Test(dist_frame, probe_reply_every_truncated_prefix)
{
    erlang_ref ref = make_ref("daemon@host", 8);
    void (*replies[])(ei_x_buff *) = {encode_false, encode_badrpc};

    for (size_t i = 0; i < sizeof(replies) / sizeof(replies[0]); i++) {
        size_t len;
        char *payload = build_probe_reply(&ref, replies[i], &len);
        for (size_t cut = 0; cut < len; cut++) {
            char *copy = dup_exact(payload, cut);
            erlang_ref out;
            DistProbeResult result = DIST_PROBE_ALIVE;
            out.len = -1;
            cr_assert_eq(dist_probe_reply_parse(copy, cut, &out, &result), -EBADMSG,
                         "reply %zu cut to %zu", i, cut);
            cr_assert_eq(out.len, -1, "output written on failure");
            cr_assert_eq(result, DIST_PROBE_ALIVE, "output written on failure");
            free_exact(copy, cut);
        }
        free_exact(payload, len);
    }
}

Test(dist_frame, probe_reply_malformed)
{
    erlang_ref ref = make_ref("daemon@host", 8);
    erlang_pid pid = make_pid("daemon@host", 0);
    erlang_ref out;
    DistProbeResult result;
    ei_x_buff x;

    /* A three-tuple. */
    cr_assert_eq(ei_x_new_with_version(&x), 0);
    cr_assert_eq(ei_x_encode_tuple_header(&x, 3), 0);
    cr_assert_eq(ei_x_encode_ref(&x, &ref), 0);
    cr_assert_eq(ei_x_encode_atom(&x, "false"), 0);
    cr_assert_eq(ei_x_encode_atom(&x, "false"), 0);
    cr_assert_eq(dist_probe_reply_parse(x.buff, (size_t)x.index, &out, &result), -EBADMSG);
    ei_x_free(&x);

    /* A pid where the reference belongs. */
    cr_assert_eq(ei_x_new_with_version(&x), 0);
    cr_assert_eq(ei_x_encode_tuple_header(&x, 2), 0);
    cr_assert_eq(ei_x_encode_pid(&x, &pid), 0);
    cr_assert_eq(ei_x_encode_atom(&x, "false"), 0);
    cr_assert_eq(dist_probe_reply_parse(x.buff, (size_t)x.index, &out, &result), -EBADMSG);
    ei_x_free(&x);

    /* A list, and a reply followed by another term. */
    cr_assert_eq(ei_x_new_with_version(&x), 0);
    cr_assert_eq(ei_x_encode_list_header(&x, 1), 0);
    cr_assert_eq(ei_x_encode_ref(&x, &ref), 0);
    cr_assert_eq(ei_x_encode_empty_list(&x), 0);
    cr_assert_eq(dist_probe_reply_parse(x.buff, (size_t)x.index, &out, &result), -EBADMSG);
    ei_x_free(&x);
    cr_assert_eq(ei_x_new_with_version(&x), 0);
    cr_assert_eq(ei_x_encode_tuple_header(&x, 2), 0);
    cr_assert_eq(ei_x_encode_ref(&x, &ref), 0);
    cr_assert_eq(ei_x_encode_atom(&x, "false"), 0);
    cr_assert_eq(ei_x_encode_atom(&x, "extra"), 0);
    cr_assert_eq(dist_probe_reply_parse(x.buff, (size_t)x.index, &out, &result), -EBADMSG);
    ei_x_free(&x);
}

/* ---- dist_call_parse ---- */

typedef struct {
    ei_x_buff payload;  /* whole {'$gen_call', {Pid, Tag}, Request} with version byte */
    int tag_start;
    int tag_end;
    int request_start;
} CallSample;

/* Encode a call whose tag is a plain ref (`alias` false) or [alias | Ref]. */
static void encode_call(CallSample *s, const erlang_pid *pid, const erlang_ref *ref, bool alias)
{
    ei_x_buff *x = &s->payload;

    cr_assert_eq(ei_x_new_with_version(x), 0);
    cr_assert_eq(ei_x_encode_tuple_header(x, 3), 0);
    cr_assert_eq(ei_x_encode_atom(x, "$gen_call"), 0);
    cr_assert_eq(ei_x_encode_tuple_header(x, 2), 0);
    cr_assert_eq(ei_x_encode_pid(x, pid), 0);
    s->tag_start = x->index;
    if (alias) {
        cr_assert_eq(ei_x_encode_list_header(x, 1), 0);
        cr_assert_eq(ei_x_encode_atom(x, "alias"), 0);
    }
    cr_assert_eq(ei_x_encode_ref(x, ref), 0);
    s->tag_end = x->index;
    s->request_start = x->index;
    cr_assert_eq(ei_x_encode_tuple_header(x, 2), 0);
    cr_assert_eq(ei_x_encode_atom(x, "execute"), 0);
    cr_assert_eq(ei_x_encode_binary(x, "payload", 7), 0);
}

static void check_call(bool alias)
{
    erlang_pid pid = make_pid("caller@host", 9);
    erlang_ref ref = make_ref("caller@host", 11);
    CallSample s;
    DistCall call;

    encode_call(&s, &pid, &ref, alias);
    size_t len = (size_t)s.payload.index;
    char *copy = dup_exact(s.payload.buff, len);

    cr_assert_eq(dist_call_parse(copy, len, &call), 0);
    cr_assert_not(call.is_cast);
    cr_assert_str_eq(call.pid.node, "caller@host");
    cr_assert_eq(call.pid.num, 9);
    cr_assert_eq(call.tag, copy + s.tag_start);
    cr_assert_eq(call.tag_len, (size_t)(s.tag_end - s.tag_start));
    cr_assert_eq(memcmp(call.tag, s.payload.buff + s.tag_start, call.tag_len), 0,
                 "tag bytes differ");
    cr_assert_eq(call.has_alias, alias);
    if (alias) {
        cr_assert_str_eq(call.alias.node, "caller@host");
        cr_assert_eq(call.alias.len, ref.len);
        cr_assert_eq(memcmp(call.alias.n, ref.n, sizeof(ref.n[0]) * (size_t)ref.len), 0);
        cr_assert_eq(call.alias.creation, ref.creation);
    }
    cr_assert_eq(call.request, copy + s.request_start);
    cr_assert_eq(call.request_len, len - (size_t)s.request_start);

    free_exact(copy, len);
    ei_x_free(&s.payload);
}

Test(dist_frame, call_with_ref_tag)
{
    check_call(false);
}

Test(dist_frame, call_with_alias_tag)
{
    check_call(true);
}

Test(dist_frame, call_alias_lookalikes_are_plain_tags)
{
    erlang_pid pid = make_pid("caller@host", 9);
    erlang_ref ref = make_ref("caller@host", 11);
    /* [alias, Ref] (proper), [other | Ref], [alias | 5]: tags copied back but with no alias. */
    for (int variant = 0; variant < 3; variant++) {
        ei_x_buff x;
        DistCall call;
        cr_assert_eq(ei_x_new_with_version(&x), 0);
        cr_assert_eq(ei_x_encode_tuple_header(&x, 3), 0);
        cr_assert_eq(ei_x_encode_atom(&x, "$gen_call"), 0);
        cr_assert_eq(ei_x_encode_tuple_header(&x, 2), 0);
        cr_assert_eq(ei_x_encode_pid(&x, &pid), 0);
        int tag_start = x.index;
        cr_assert_eq(ei_x_encode_list_header(&x, variant == 0 ? 2 : 1), 0);
        cr_assert_eq(ei_x_encode_atom(&x, variant == 1 ? "other" : "alias"), 0);
        if (variant == 2) {
            cr_assert_eq(ei_x_encode_long(&x, 5), 0);
        } else {
            cr_assert_eq(ei_x_encode_ref(&x, &ref), 0);
        }
        if (variant == 0) {
            cr_assert_eq(ei_x_encode_empty_list(&x), 0);
        }
        int tag_end = x.index;
        cr_assert_eq(ei_x_encode_atom(&x, "ping"), 0);

        cr_assert_eq(dist_call_parse(x.buff, (size_t)x.index, &call), 0, "variant %d", variant);
        cr_assert_not(call.has_alias, "variant %d", variant);
        cr_assert_eq(call.tag_len, (size_t)(tag_end - tag_start));
        cr_assert_eq(memcmp(call.tag, x.buff + tag_start, call.tag_len), 0);
        ei_x_free(&x);
    }
}

Test(dist_frame, call_cast)
{
    ei_x_buff x;
    DistCall call;

    cr_assert_eq(ei_x_new_with_version(&x), 0);
    cr_assert_eq(ei_x_encode_tuple_header(&x, 2), 0);
    cr_assert_eq(ei_x_encode_atom(&x, "$gen_cast"), 0);
    int request_start = x.index;
    cr_assert_eq(ei_x_encode_atom(&x, "ping"), 0);
    cr_assert_eq(dist_call_parse(x.buff, (size_t)x.index, &call), 0);
    cr_assert(call.is_cast);
    cr_assert_eq(call.request, x.buff + request_start);
    cr_assert_eq(call.request_len, (size_t)(x.index - request_start));
    ei_x_free(&x);
}

Test(dist_frame, call_malformed)
{
    erlang_pid pid = make_pid("caller@host", 9);
    erlang_ref ref = make_ref("caller@host", 11);
    ei_x_buff x;
    DistCall call;

    /* {'$gen_call', Pid, ping}: the caller is not a {Pid, Tag} pair. */
    cr_assert_eq(ei_x_new_with_version(&x), 0);
    ei_x_encode_tuple_header(&x, 3);
    ei_x_encode_atom(&x, "$gen_call");
    ei_x_encode_pid(&x, &pid);
    ei_x_encode_atom(&x, "ping");
    cr_assert_eq(dist_call_parse(x.buff, (size_t)x.index, &call), -EBADMSG);
    ei_x_free(&x);

    /* {'$gen_call', {Pid, Ref}}: two elements. */
    cr_assert_eq(ei_x_new_with_version(&x), 0);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "$gen_call");
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_pid(&x, &pid);
    ei_x_encode_ref(&x, &ref);
    cr_assert_eq(dist_call_parse(x.buff, (size_t)x.index, &call), -EBADMSG);
    ei_x_free(&x);

    /* {'$gen_call', {notapid, Ref}, ping}. */
    cr_assert_eq(ei_x_new_with_version(&x), 0);
    ei_x_encode_tuple_header(&x, 3);
    ei_x_encode_atom(&x, "$gen_call");
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "notapid");
    ei_x_encode_ref(&x, &ref);
    ei_x_encode_atom(&x, "ping");
    cr_assert_eq(dist_call_parse(x.buff, (size_t)x.index, &call), -EBADMSG);
    ei_x_free(&x);

    /* {other, ping} and a bare atom. */
    cr_assert_eq(ei_x_new_with_version(&x), 0);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "other");
    ei_x_encode_atom(&x, "ping");
    cr_assert_eq(dist_call_parse(x.buff, (size_t)x.index, &call), -EBADMSG);
    ei_x_free(&x);
    cr_assert_eq(ei_x_new_with_version(&x), 0);
    ei_x_encode_atom(&x, "ping");
    cr_assert_eq(dist_call_parse(x.buff, (size_t)x.index, &call), -EBADMSG);
    ei_x_free(&x);

    /* A valid call followed by a stray byte. */
    CallSample s;
    encode_call(&s, &pid, &ref, true);
    ei_x_append_buf(&s.payload, "j", 1);
    cr_assert_eq(dist_call_parse(s.payload.buff, (size_t)s.payload.index, &call), -EBADMSG);
    ei_x_free(&s.payload);
}

Test(dist_frame, call_every_truncated_prefix)
{
    erlang_pid pid = make_pid("caller@host", 9);
    erlang_ref ref = make_ref("caller@host", 11);
    CallSample s;

    encode_call(&s, &pid, &ref, true);
    size_t len = (size_t)s.payload.index;
    for (size_t cut = 0; cut < len; cut++) {
        char *copy = dup_exact(s.payload.buff, cut);
        DistCall call;
        call.tag_len = 12345;
        cr_assert_eq(dist_call_parse(copy, cut, &call), -EBADMSG, "cut to %zu of %zu", cut, len);
        cr_assert_eq(call.tag_len, 12345, "output written on failure");
        free_exact(copy, cut);
    }
    ei_x_free(&s.payload);
}

Test(dist_frame, call_head_of_truncated_call)
{
    erlang_pid pid = make_pid("caller@host", 9);
    erlang_ref ref = make_ref("caller@host", 11);

    for (int alias = 0; alias <= 1; alias++) {
        CallSample s;
        encode_call(&s, &pid, &ref, alias);
        size_t len = (size_t)s.payload.index;
        for (size_t cut = 0; cut <= len; cut++) {
            char *copy = dup_exact(s.payload.buff, cut);
            DistCall call;
            int r = dist_call_head_parse(copy, cut, &call);
            if (cut < (size_t)s.tag_end) {
                cr_assert_eq(r, -EBADMSG, "cut to %zu, before the tag ends at %d", cut,
                             s.tag_end);
            } else {
                cr_assert_eq(r, 0, "cut to %zu, after the tag", cut);
                cr_assert_not(call.is_cast);
                cr_assert_eq(call.has_alias, alias);
                cr_assert_null(call.request);
                cr_assert_eq(call.tag_len, (size_t)(s.tag_end - s.tag_start));
                cr_assert_eq(memcmp(call.tag, s.payload.buff + s.tag_start, call.tag_len), 0);
            }
            free_exact(copy, cut);
        }
        ei_x_free(&s.payload);
    }
}
