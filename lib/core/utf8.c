/* Incremental UTF-8 (utf8.h): validation by the table of well-formed byte
 * sequences of Unicode 15 §3.9 (D92), one sequence at a time. */
#include <string.h>

#include "core/utf8.h"

int pe_utf8_seq(const unsigned char *p, size_t avail)
{
    unsigned char c = p[0];
    int n = c < 0x80                 ? 1
            : c >= 0xc2 && c <= 0xdf ? 2
            : (c & 0xf0) == 0xe0     ? 3
            : c >= 0xf0 && c <= 0xf4 ? 4
                                     : 0;

    if (n <= 1)
        return n;
    for (int k = 1; k < n; k++) {
        unsigned char ck;
        if ((size_t)k >= avail)
            return -1;
        ck = p[k];
        if ((ck & 0xc0) != 0x80)
            return 0;
        /* The second byte's narrower ranges: no overlongs, no surrogates,
         * nothing above U+10FFFF. */
        if (k == 1 && ((c == 0xe0 && ck < 0xa0) || (c == 0xed && ck >= 0xa0) ||
                       (c == 0xf0 && ck < 0x90) || (c == 0xf4 && ck >= 0x90)))
            return 0;
    }
    return n;
}

size_t pe_utf8_sanitize(const unsigned char *data, size_t len, bool final, char *out, size_t *used)
{
    size_t i = 0, o = 0;

    while (i < len) {
        int n = pe_utf8_seq(data + i, len - i);
        if (n < 0 && !final)
            break;
        if (n > 0) {
            memcpy(out + o, data + i, (size_t)n);
            o += (size_t)n;
            i += (size_t)n;
        } else {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    *used = i;
    return o;
}

size_t pe_utf8_unfinished(const unsigned char *data, size_t len)
{
    for (size_t back = 1; back <= 3 && back <= len; back++) {
        if ((data[len - back] & 0xc0) == 0x80)
            continue;
        return pe_utf8_seq(data + len - back, back) < 0 ? back : 0;
    }
    return 0;
}
