/* SPDX-License-Identifier: Apache-2.0 */
/* UTF-8 validation shared by the metrics label sanitizer, the JSON writer and telemetry. */
#pragma once

#include <stddef.h>

/* U+FFFD REPLACEMENT CHARACTER, encoded: the stand-in for bytes that are not valid UTF-8. */
#define TEXT_UTF8_REPLACEMENT "\xef\xbf\xbd"

/*
 * Return the length (1 to 4) of the well-formed UTF-8 sequence at the start of `p`, which has
 * `len` bytes left. Returns 0 when it is malformed. Malformed means a bad lead byte, a truncated
 * or overlong sequence, a surrogate, or a code point over U+10FFFF.
 */
static inline size_t text_utf8_sequence_length(const unsigned char *p, size_t len)
{
    size_t n;
    unsigned cp;

    if (len == 0) {
        return 0;
    }
    if (p[0] < 0x80) {
        return 1;
    }
    if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        n = 2;
        cp = p[0] & 0x1f;
    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        n = 3;
        cp = p[0] & 0x0f;
    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        n = 4;
        cp = p[0] & 0x07;
    } else {
        return 0;
    }
    if (len < n) {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
        return 0;
    }
    return n;
}
