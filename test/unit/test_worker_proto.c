/* SPDX-License-Identifier: Apache-2.0 */
#include <criterion/criterion.h>
#include <errno.h>

#include "worker_proto.h"

Test(worker_proto, header_round_trip)
{
    uint8_t buf[WORKER_FRAME_HEADER_SIZE];
    WorkerFrameType type;
    uint64_t id;
    size_t payload_len;

    worker_proto_header_encode(buf, WORKER_FRAME_REPLY, 0x0102030405060708ull, 1234);
    cr_assert_eq(worker_proto_header_decode(buf, sizeof(buf), 4096, &type, &id, &payload_len), 0);
    cr_assert_eq(type, WORKER_FRAME_REPLY);
    cr_assert_eq(id, 0x0102030405060708ull);
    cr_assert_eq(payload_len, 1234);
}

Test(worker_proto, short_header_needs_more)
{
    uint8_t buf[WORKER_FRAME_HEADER_SIZE];
    WorkerFrameType type = WORKER_FRAME_HELLO;
    uint64_t id = 7;
    size_t payload_len = 9;

    worker_proto_header_encode(buf, WORKER_FRAME_CALL, 1, 0);
    cr_assert_eq(worker_proto_header_decode(buf, sizeof(buf) - 1, 4096, &type, &id, &payload_len),
                 -EAGAIN);
    cr_assert_eq(type, WORKER_FRAME_HELLO, "type must be untouched on failure");
    cr_assert_eq(id, 7);
    cr_assert_eq(payload_len, 9);
}

Test(worker_proto, payload_over_limit)
{
    uint8_t buf[WORKER_FRAME_HEADER_SIZE];
    WorkerFrameType type;
    uint64_t id;
    size_t payload_len;

    worker_proto_header_encode(buf, WORKER_FRAME_CALL, 1, 4097);
    cr_assert_eq(worker_proto_header_decode(buf, sizeof(buf), 4096, &type, &id, &payload_len),
                 -EMSGSIZE);
    worker_proto_header_encode(buf, WORKER_FRAME_CALL, 1, 4096);
    cr_assert_eq(worker_proto_header_decode(buf, sizeof(buf), 4096, &type, &id, &payload_len), 0);
}

Test(worker_proto, bad_type_and_length)
{
    uint8_t buf[WORKER_FRAME_HEADER_SIZE];
    WorkerFrameType type;
    uint64_t id;
    size_t payload_len;

    worker_proto_header_encode(buf, WORKER_FRAME_CALL, 1, 0);
    buf[4] = 99;
    cr_assert_eq(worker_proto_header_decode(buf, sizeof(buf), 4096, &type, &id, &payload_len),
                 -EBADMSG);
    worker_proto_header_encode(buf, WORKER_FRAME_CALL, 1, 0);
    buf[3] = 3; /* length 3 cannot hold type and id */
    cr_assert_eq(worker_proto_header_decode(buf, sizeof(buf), 4096, &type, &id, &payload_len),
                 -EBADMSG);
}
