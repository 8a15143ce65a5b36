/* SPDX-License-Identifier: Apache-2.0 */
/* A queue of bytes waiting for a non-blocking socket, flushed with writev(2). */
#pragma once

#include <stddef.h>
#include <sys/uio.h>

typedef struct OutChunk OutChunk;

typedef struct {
    OutChunk *head;
    OutChunk *tail;
    size_t bytes; /* queued and not yet written */
} OutBuf;

/* Copy `count` parts into one new chunk at the tail. Returns 0 or -ENOMEM. */
int outbuf_append(OutBuf *buf, const struct iovec *parts, int count);

/* Write queued bytes to `fd` until it would block. Returns 0, or -errno of a failed write. */
int outbuf_flush(OutBuf *buf, int fd);

static inline int outbuf_empty(const OutBuf *buf)
{
    return buf->head == NULL;
}

/* Drop everything queued. */
void outbuf_clear(OutBuf *buf);
