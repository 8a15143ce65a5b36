/* SPDX-License-Identifier: Apache-2.0 */
/* Output queues for the distribution connections and the worker sockets. */
#include "outbuf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define OUTBUF_IOV_MAX 64

struct OutChunk {
    OutChunk *next;
    size_t len;
    size_t sent;
    char data[];
};

int outbuf_append(OutBuf *buf, const struct iovec *parts, int count)
{
    size_t total = 0;

    for (int i = 0; i < count; i++) {
        total += parts[i].iov_len;
    }
    OutChunk *chunk = malloc(sizeof(*chunk) + total);
    if (!chunk) {
        return -ENOMEM;
    }
    chunk->next = NULL;
    chunk->len = total;
    chunk->sent = 0;
    size_t at = 0;
    for (int i = 0; i < count; i++) {
        if (parts[i].iov_len > 0) {
            memcpy(chunk->data + at, parts[i].iov_base, parts[i].iov_len);
        }
        at += parts[i].iov_len;
    }
    if (buf->tail) {
        buf->tail->next = chunk;
    } else {
        buf->head = chunk;
    }
    buf->tail = chunk;
    buf->bytes += total;
    return 0;
}

/* Account for `written` bytes: free the chunks they finish and advance into the next one. */
static void outbuf_consume(OutBuf *buf, size_t written)
{
    buf->bytes -= written;
    while (written > 0 && buf->head) {
        OutChunk *chunk = buf->head;
        size_t avail = chunk->len - chunk->sent;
        if (written < avail) {
            chunk->sent += written;
            return;
        }
        written -= avail;
        buf->head = chunk->next;
        free(chunk);
    }
    if (!buf->head) {
        buf->tail = NULL;
    }
}

int outbuf_flush(OutBuf *buf, int fd)
{
    while (buf->head) {
        struct iovec iov[OUTBUF_IOV_MAX];
        int n = 0;

        for (OutChunk *chunk = buf->head; chunk && n < OUTBUF_IOV_MAX; chunk = chunk->next) {
            iov[n].iov_base = chunk->data + chunk->sent;
            iov[n].iov_len = chunk->len - chunk->sent;
            n++;
        }
        ssize_t w = writev(fd, iov, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
        }
        outbuf_consume(buf, (size_t)w);
    }
    return 0;
}

void outbuf_clear(OutBuf *buf)
{
    OutChunk *chunk = buf->head;

    while (chunk) {
        OutChunk *next = chunk->next;
        free(chunk);
        chunk = next;
    }
    buf->head = NULL;
    buf->tail = NULL;
    buf->bytes = 0;
}
