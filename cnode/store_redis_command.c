/* SPDX-License-Identifier: Apache-2.0 */
/*
 * RESP encoding of the Redis session store's script calls. A command is an array of bulk
 * strings: "*<count>\r\n", then "$<length>\r\n<bytes>\r\n" for each element. The arguments are
 * encoded behind free room that fits the longest EVALSHA header, so the usual call is sent from
 * that buffer without a copy, and only a retry with EVAL copies them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_redis_command.h"

/* The longest EVALSHA header: "*<count>\r\n$7\r\nEVALSHA\r\n$40\r\n<SHA1>\r\n" is 73 bytes. */
#define COMMAND_HEADER_ROOM 80

static size_t bulk_size(size_t len)
{
    char digits[24];

    return 1 + (size_t)snprintf(digits, sizeof(digits), "%zu", len) + 2 + len + 2;
}

/* Write one bulk string at `p`; returns the end of what it wrote. */
static char *put_bulk(char *p, const void *data, size_t len)
{
    char header[32];
    int n = snprintf(header, sizeof(header), "$%zu\r\n", len);

    memcpy(p, header, (size_t)n);
    p += n;
    if (len > 0) {
        memcpy(p, data, len);
    }
    memcpy(p + len, "\r\n", 2);
    return p + len + 2;
}

int store_redis_command_args_encode(int count, const StoreBytes *args,
                                    StoreRedisCommandArgs *out)
{
    size_t len = 0;
    char *buffer;
    char *p;

    for (int i = 0; i < count; i++) {
        len += bulk_size(args[i].len);
    }
    buffer = malloc(COMMAND_HEADER_ROOM + len);
    if (buffer == NULL) {
        return -ENOMEM;
    }
    p = buffer + COMMAND_HEADER_ROOM;
    for (int i = 0; i < count; i++) {
        p = put_bulk(p, args[i].data, args[i].len);
    }
    *out = (StoreRedisCommandArgs){.buffer = buffer, .len = len, .count = count};
    return 0;
}

void store_redis_command_args_free(StoreRedisCommandArgs *args)
{
    free(args->buffer);
    *args = (StoreRedisCommandArgs){0};
}

const char *store_redis_command_evalsha(StoreRedisCommandArgs *args, const char *sha,
                                        size_t *len)
{
    char *encoded = args->buffer + COMMAND_HEADER_ROOM;
    char header[COMMAND_HEADER_ROOM + 1];
    int n = snprintf(header, sizeof(header), "*%d\r\n$7\r\nEVALSHA\r\n$%d\r\n%.*s\r\n",
                     args->count + 2, STORE_REDIS_COMMAND_SHA1_HEX_LEN,
                     STORE_REDIS_COMMAND_SHA1_HEX_LEN, sha);

    memcpy(encoded - n, header, (size_t)n);
    *len = (size_t)n + args->len;
    return encoded - n;
}

char *store_redis_command_eval(const StoreRedisCommandArgs *args, const char *text, size_t *len)
{
    size_t text_len = strlen(text);
    char header[32];
    int n = snprintf(header, sizeof(header), "*%d\r\n$4\r\nEVAL\r\n", args->count + 2);
    size_t total = (size_t)n + bulk_size(text_len) + args->len;
    char *command = malloc(total);
    char *p;

    if (command == NULL) {
        return NULL;
    }
    memcpy(command, header, (size_t)n);
    p = put_bulk(command + n, text, text_len);
    memcpy(p, args->buffer + COMMAND_HEADER_ROOM, args->len);
    *len = total;
    return command;
}
