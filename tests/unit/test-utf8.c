/* lib/core/utf8.c: incremental UTF-8 for terminal output. */
#include <stdbool.h>

#include "task.h"
#include "core/utf8.h"

static const char *sanitize(const char *in, size_t len, bool final, size_t *used)
{
    static char out[256];
    size_t n = pe_utf8_sanitize((const unsigned char *)in, len, final, out, used);

    out[n] = '\0';
    return out;
}

TEST_CASE(sequences)
{
    ASSERT_EQ_INT(pe_utf8_seq((const unsigned char *)"a", 1), 1);
    ASSERT_EQ_INT(pe_utf8_seq((const unsigned char *)"\xc3\xa9", 2), 2);
    ASSERT_EQ_INT(pe_utf8_seq((const unsigned char *)"\xe2\x82\xac", 3), 3);
    ASSERT_EQ_INT(pe_utf8_seq((const unsigned char *)"\xf0\x9f\x98\x80", 4), 4);
    ASSERT_EQ_INT(pe_utf8_seq((const unsigned char *)"\xf0\x9f\x98", 3), -1);
    ASSERT_EQ_INT(pe_utf8_seq((const unsigned char *)"\xc0\xaf", 2), 0);     /* overlong */
    ASSERT_EQ_INT(pe_utf8_seq((const unsigned char *)"\xe0\x80\xaf", 3), 0); /* overlong */
    ASSERT_EQ_INT(pe_utf8_seq((const unsigned char *)"\xed\xa0\x80", 3), 0); /* surrogate */
    ASSERT_EQ_INT(pe_utf8_seq((const unsigned char *)"\xf4\x90\x80\x80", 4), 0);
    ASSERT_EQ_INT(pe_utf8_seq((const unsigned char *)"\x80", 1), 0);
    ASSERT_EQ_INT(pe_utf8_seq((const unsigned char *)"\xff", 1), 0);
    ASSERT_EQ_INT(pe_utf8_seq((const unsigned char *)"\xc3(", 2), 0);
}

TEST_CASE(split_character_is_held_back)
{
    const char *euro = "a\xe2\x82\xac";
    size_t used;

    /* every cut of "a€" keeps the unfinished part for the next chunk */
    for (size_t cut = 2; cut < 4; cut++) {
        ASSERT_EQ_STR(sanitize(euro, cut, false, &used), "a");
        ASSERT_EQ_INT(used, 1);
        ASSERT_EQ_INT(pe_utf8_unfinished((const unsigned char *)euro, cut), cut - 1);
    }
    ASSERT_EQ_STR(sanitize(euro, 4, false, &used), euro);
    ASSERT_EQ_INT(used, 4);
    ASSERT_EQ_INT(pe_utf8_unfinished((const unsigned char *)euro, 4), 0);
    /* at the end of the stream it is invalid after all */
    ASSERT_EQ_STR(sanitize(euro, 3, true, &used), "a\xef\xbf\xbd\xef\xbf\xbd");
    ASSERT_EQ_INT(used, 3);
}

TEST_CASE(invalid_bytes_become_replacement)
{
    size_t used;

    ASSERT_EQ_STR(sanitize("x\xffy\xc3(z", 6, false, &used), "x\xef\xbf\xbdy\xef\xbf\xbd(z");
    ASSERT_EQ_INT(used, 6);
    /* an invalid tail is not "unfinished": it is replaced at once */
    ASSERT_EQ_INT(pe_utf8_unfinished((const unsigned char *)"ab\xff", 3), 0);
    ASSERT_EQ_INT(pe_utf8_unfinished((const unsigned char *)"\x80\x80\x80", 3), 0);
    ASSERT_EQ_STR(sanitize("", 0, false, &used), "");
}

/* Feeding a stream in every chunking gives the same text as at once. */
TEST_CASE(chunking_never_changes_the_text)
{
    const char stream[] = "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80 \xff end";
    size_t len = sizeof(stream) - 1, used;
    char whole[256], out[256];
    size_t wn = pe_utf8_sanitize((const unsigned char *)stream, len, true, whole, &used);

    for (size_t step = 1; step <= len; step++) {
        unsigned char carry[8 + 64];
        size_t clen = 0, on = 0;
        for (size_t i = 0; i < len; i += step) {
            size_t take = i + step <= len ? step : len - i;
            memcpy(carry + clen, stream + i, take);
            clen += take;
            on += pe_utf8_sanitize(carry, clen, i + take == len, out + on, &used);
            memmove(carry, carry + used, clen - used);
            clen -= used;
            ASSERT(clen <= 3);
        }
        ASSERT_EQ_INT(on, wn);
        ASSERT(memcmp(out, whole, wn) == 0);
    }
}

int main(void)
{
    return RUN_TESTS(sequences, split_character_is_held_back, invalid_bytes_become_replacement,
                     chunking_never_changes_the_text);
}
