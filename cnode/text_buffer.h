/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A growing byte buffer for rendered text (the /metrics page, JSON bodies). It keeps a NUL after
 * the last byte so the contents can be used as a C string, and it never shrinks until freed.
 * Every append returns 0 or -ENOMEM; after -ENOMEM the contents written so far stay valid.
 */
#pragma once

#include <stdarg.h>
#include <stddef.h>

typedef struct {
    char *data; /* owned; NULL until the first append */
    size_t len; /* bytes in use, not counting the trailing NUL */
    size_t cap; /* bytes allocated */
} TextBuffer;

#define TEXT_BUFFER_INIT                                                                           \
    {                                                                                              \
        .data = NULL, .len = 0, .cap = 0                                                           \
    }

/* Release the storage; the buffer is empty and reusable afterwards. Accepts a zeroed buffer. */
void text_buffer_free(TextBuffer *buf);

/* Empty the buffer but keep its storage for the next render. */
void text_buffer_reset(TextBuffer *buf);

/* Make room for `extra` more bytes (plus the NUL). */
int text_buffer_reserve(TextBuffer *buf, size_t extra);

int text_buffer_append(TextBuffer *buf, const char *data, size_t len);
int text_buffer_append_str(TextBuffer *buf, const char *str);
int text_buffer_append_char(TextBuffer *buf, char c);
int text_buffer_printf(TextBuffer *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Append `str` as the inside of a JSON string (no surrounding quotes): quotes, backslashes and
 * control characters are escaped, and bytes that are not valid UTF-8 become U+FFFD.
 */
int text_buffer_append_json_string(TextBuffer *buf, const char *str);

/*
 * Take the contents out of the buffer: returns the data (new, free with free()) and its length in
 * *len, and leaves the buffer empty. Returns NULL only when the buffer is empty and an empty
 * string cannot be allocated.
 */
char *text_buffer_steal(TextBuffer *buf, size_t *len);
