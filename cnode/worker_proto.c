/* SPDX-License-Identifier: Apache-2.0 */
/* Frame headers of the daemon-worker request socket; the layout is described in worker_proto.h. */
#include "worker_proto.h"

#include <errno.h>

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

void worker_proto_header_encode(uint8_t out[WORKER_FRAME_HEADER_SIZE], WorkerFrameType type,
                                uint64_t id, size_t payload_len)
{
    put_be32(out, (uint32_t)(payload_len + WORKER_FRAME_MIN_LENGTH));
    out[4] = (uint8_t)type;
    put_be32(out + 5, (uint32_t)(id >> 32));
    put_be32(out + 9, (uint32_t)id);
}

int worker_proto_header_decode(const uint8_t *buf, size_t len, size_t max_payload,
                               WorkerFrameType *type, uint64_t *id, size_t *payload_len)
{
    if (len < WORKER_FRAME_HEADER_SIZE) {
        return -EAGAIN;
    }

    uint32_t length = get_be32(buf);
    uint8_t t = buf[4];

    if (length < WORKER_FRAME_MIN_LENGTH || t < WORKER_FRAME_HELLO || t > WORKER_FRAME_CREDIT) {
        return -EBADMSG;
    }
    if (length - WORKER_FRAME_MIN_LENGTH > max_payload) {
        return -EMSGSIZE;
    }
    *type = (WorkerFrameType)t;
    *id = (uint64_t)get_be32(buf + 5) << 32 | get_be32(buf + 9);
    *payload_len = length - WORKER_FRAME_MIN_LENGTH;
    return 0;
}
