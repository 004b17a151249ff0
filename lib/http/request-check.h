/* Strict checks on a request head, before any route sees it, and the
 * accounting of request bodies held in memory. Pure code over strings and
 * counters: no socket, no MHD, so both are unit-tested directly
 * (tests/unit/test-http-xrpc.c) and server.c only wires them in.
 *
 * Why these checks exist: libmicrohttpd 0.9.75 lets through header names
 * with spaces, header values with NUL or CR, and leaves a request whose
 * Transfer-Encoding it does not know hanging; two parsers that disagree on
 * where a request ends are how requests get smuggled past a proxy, so any
 * framing we cannot be sure of is refused and its connection closed. */
#ifndef PE_HTTP_REQUEST_CHECK_H
#define PE_HTTP_REQUEST_CHECK_H

#include <stdbool.h>
#include <stddef.h>

/* The raw request-target (as received, before percent-decoding): 0, or
 * 400 with msg filled for "%00" (a NUL once decoded, which C strings cut
 * short) or a control character. */
int pe__http_check_target(const char *target, char *msg, size_t msg_size);

/* What the framing headers of one request say, accumulated header by
 * header with pe__http_check_header. */
typedef struct pe_http_framing {
    unsigned n_content_length, n_transfer_encoding, n_host;
    const char *transfer_encoding; /* the last value seen */
    const char *content_length;
} pe_http_framing;

/* One header as libmicrohttpd parsed it (lengths from
 * MHD_get_connection_values_n, so an embedded NUL is visible): 0, or 400
 * with msg filled for a name that is not an RFC 9110 token, or a value
 * with a control character other than HTAB. Counts the framing headers. */
int pe__http_check_header(pe_http_framing *f, const char *name, size_t name_len, const char *value,
                          size_t value_len, char *msg, size_t msg_size);

/* After every header: 0, 400 (two Content-Lengths, two Transfer-Encodings,
 * two Hosts, Transfer-Encoding with Content-Length or in HTTP/1.0) or 501
 * (a transfer coding other than "chunked"), with msg filled. A non-zero
 * answer means the end of the request cannot be trusted: close after it. */
int pe__http_check_framing(const pe_http_framing *f, bool http10, char *msg, size_t msg_size);

/* One string libmicrohttpd cut out of the head in place: [off, off + len)
 * of the head's bytes, and what follows it up to the next one. */
typedef struct pe_http_span {
    size_t off, len;
    bool name; /* a header name (then ':' may follow), else a value or the target */
} pe_http_span;

/* libmicrohttpd 0.9.75 parses the request head in place and cuts a header
 * name or value (or the target) at a NUL byte without saying so, and it
 * drops an obs-fold continuation line: either way bytes the client sent
 * are hidden from us. Between the end of each span and the start of the
 * next (or the end of the head) there must be only separators: NUL (what
 * MHD wrote over ':' and CR LF), CR, LF, SP, HT, and ':' after a name.
 * spans are sorted here. 0, or 400 with msg filled. */
int pe__http_check_hidden(const char *head, size_t head_len, pe_http_span *spans, size_t n,
                          char *msg, size_t msg_size);

/* Bytes of request bodies held in memory, per client address and in
 * total (STYLE rule 8). An entry exists only while its client holds bytes,
 * so the table is bounded by the open connections. */
typedef struct pe_http_budget pe_http_budget;

enum pe_http_budget_result {
    PE_HTTP_BUDGET_OK = 0,
    PE_HTTP_BUDGET_CLIENT, /* the client's share would go over */
    PE_HTTP_BUDGET_TOTAL,  /* the server's total would go over */
};

pe_http_budget *pe__http_budget_new(size_t total_max, size_t per_client_max);
void pe__http_budget_free(pe_http_budget *b);
/* Reserve n bytes for client, or nothing and say which limit is in the way. */
enum pe_http_budget_result pe__http_budget_take(pe_http_budget *b, const char *client, size_t n);
/* Give back n bytes reserved for client. */
void pe__http_budget_give(pe_http_budget *b, const char *client, size_t n);
size_t pe__http_budget_total(const pe_http_budget *b);

#endif
