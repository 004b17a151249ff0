/* Incremental UTF-8 for text that arrives in pieces (terminal output).
 *
 * Pure functions, no allocation: a stream is made valid UTF-8 chunk by
 * chunk, holding back at most 3 bytes of a character cut by the end of a
 * chunk, so a split character is never mangled and an invalid byte never
 * reaches a consumer that requires UTF-8 (WebSocket text frames, JSON). */
#ifndef PE_CORE_UTF8_H
#define PE_CORE_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* Length of the well-formed sequence at p (1..4), 0 if it is invalid
 * (overlong, surrogate, above U+10FFFF, stray continuation byte), -1 if it
 * is a valid beginning cut short by avail. avail >= 1. */
int pe_utf8_seq(const unsigned char *p, size_t avail);

/* Valid UTF-8 from data: every invalid sequence becomes U+FFFD. Unless
 * final, an unfinished character at the end is left out (*used stops
 * before it), for the caller to prepend to the next chunk. out needs
 * 3 * len bytes. Returns the bytes written to out. */
size_t pe_utf8_sanitize(const unsigned char *data, size_t len, bool final, char *out, size_t *used);

/* Bytes at the end of data that begin a character not finished yet
 * (0..3); what pe_utf8_sanitize would hold back, without the copy. */
size_t pe_utf8_unfinished(const unsigned char *data, size_t len);

#endif
