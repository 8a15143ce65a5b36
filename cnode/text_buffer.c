/* SPDX-License-Identifier: Apache-2.0 */
/* The growing text buffer behind the metrics renderer and the HTTP bodies. */
#include "text_buffer.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text_utf8.h"

#define TEXT_BUFFER_MIN_CAP 256

void text_buffer_free(TextBuffer *buf)
{
    free(buf->data);
    *buf = (TextBuffer)TEXT_BUFFER_INIT;
}

void text_buffer_reset(TextBuffer *buf)
{
    buf->len = 0;
    if (buf->data) {
        buf->data[0] = '\0';
    }
}

int text_buffer_reserve(TextBuffer *buf, size_t extra)
{
    size_t need, cap;
    char *data;

    if (extra > SIZE_MAX - buf->len - 1) {
        return -ENOMEM;
    }
    need = buf->len + extra + 1;
    if (need <= buf->cap) {
        return 0;
    }
    cap = buf->cap ? buf->cap : TEXT_BUFFER_MIN_CAP;
    while (cap < need) {
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    }
    data = realloc(buf->data, cap);
    if (!data) {
        return -ENOMEM;
    }
    buf->data = data;
    buf->cap = cap;
    return 0;
}

int text_buffer_append(TextBuffer *buf, const char *data, size_t len)
{
    int r = text_buffer_reserve(buf, len);

    if (r < 0) {
        return r;
    }
    if (len > 0) {
        memcpy(buf->data + buf->len, data, len);
    }
    buf->len += len;
    buf->data[buf->len] = '\0';
    return 0;
}

int text_buffer_append_str(TextBuffer *buf, const char *str)
{
    return text_buffer_append(buf, str, strlen(str));
}

int text_buffer_append_char(TextBuffer *buf, char c)
{
    return text_buffer_append(buf, &c, 1);
}

int text_buffer_printf(TextBuffer *buf, const char *fmt, ...)
{
    va_list ap;
    int n, r;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return -EINVAL;
    }
    r = text_buffer_reserve(buf, (size_t)n);
    if (r < 0) {
        return r;
    }
    va_start(ap, fmt);
    vsnprintf(buf->data + buf->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    buf->len += (size_t)n;
    return 0;
}

static int json_escape_char(TextBuffer *buf, unsigned char c)
{
    switch (c) {
    case '"':
        return text_buffer_append(buf, "\\\"", 2);
    case '\\':
        return text_buffer_append(buf, "\\\\", 2);
    case '\n':
        return text_buffer_append(buf, "\\n", 2);
    case '\r':
        return text_buffer_append(buf, "\\r", 2);
    case '\t':
        return text_buffer_append(buf, "\\t", 2);
    default:
        return text_buffer_printf(buf, "\\u%04x", c);
    }
}

int text_buffer_append_json_string(TextBuffer *buf, const char *str)
{
    const unsigned char *p = (const unsigned char *)str;
    size_t len = strlen(str);
    size_t i = 0;
    int r = 0;

    while (i < len && r == 0) {
        size_t n = text_utf8_sequence_length(p + i, len - i);

        if (n == 0) {
            r = text_buffer_append(buf, TEXT_UTF8_REPLACEMENT, 3);
            i++;
        } else if (n == 1 && (p[i] < 0x20 || p[i] == '"' || p[i] == '\\')) {
            r = json_escape_char(buf, p[i]);
            i++;
        } else {
            r = text_buffer_append(buf, (const char *)p + i, n);
            i += n;
        }
    }
    return r;
}

char *text_buffer_steal(TextBuffer *buf, size_t *len)
{
    char *data = buf->data;

    if (!data) {
        data = strdup("");
        if (!data) {
            return NULL;
        }
    }
    *len = buf->len;
    *buf = (TextBuffer)TEXT_BUFFER_INIT;
    return data;
}
