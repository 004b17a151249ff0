/* What the egress proxy reads of a connection before it lets it through
 * (docs/design/network.md, "The name-checking proxy"): the server name of
 * a TLS ClientHello (SNI) and the Host of each HTTP/1.x request, with the
 * request's framing so that every request on a kept-alive connection is
 * checked, not only the first.
 *
 * Pure codecs over {ptr, len}: no sockets, no allocation, bounded input;
 * tests/unit/test-egress.c feeds them malformed bytes. */
#ifndef POCKETENV_EGRESS_SNIFF_H
#define POCKETENV_EGRESS_SNIFF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The most a ClientHello or a request head may take (bytes): the proxy
 * buffers this much at most before it decides. */
#define PE_SNIFF_MAX (16 * 1024)
#define PE_SNIFF_NAME_MAX 253

enum {
    PE_SNIFF_BAD = -2,  /* not what it should be: refuse the connection */
    PE_SNIFF_MORE = -1, /* complete so far: read more (if PE_SNIFF_MAX allows) */
    PE_SNIFF_NONE = 0,  /* complete, without a name */
    PE_SNIFF_NAME = 1,  /* complete, with a name */
};

/* Does buf start like a TLS handshake record? (1 byte is enough) */
bool pe_sniff_is_tls(const uint8_t *buf, size_t n);
/* Does buf start like an HTTP/1.x request ("TOKEN ")? PE_SNIFF_MORE if
 * too short to say. */
int pe_sniff_is_http(const uint8_t *buf, size_t n);

/* The SNI host name of the ClientHello at buf (it may span TLS records),
 * lower-cased into name (PE_SNIFF_NAME_MAX + 1 bytes). */
int pe_sniff_tls_sni(const uint8_t *buf, size_t n, char *name);

typedef struct pe_sniff_http {
    size_t head_len;                  /* request line and headers, the blank line included */
    char host[PE_SNIFF_NAME_MAX + 1]; /* lower-case, no port; "" when is_ip */
    bool is_ip;                       /* Host is an address literal */
    int64_t content_length;           /* -1: none */
    bool chunked;                     /* Transfer-Encoding: chunked */
    bool upgrade;                     /* Upgrade (WebSocket...): raw bytes follow the head */
} pe_sniff_http;

/* The request head at buf: PE_SNIFF_NAME with out filled (PE_SNIFF_NONE:
 * an HTTP/1.0 request without Host, host ""), PE_SNIFF_MORE,
 * or PE_SNIFF_BAD (no or several Host, CONNECT, a body it cannot frame,
 * an absolute target naming another host...). */
int pe_sniff_http_head(const uint8_t *buf, size_t n, pe_sniff_http *out);

/* A chunked body, fed as it comes. */
typedef struct pe_sniff_chunked {
    int state;
    uint64_t left;
    size_t line;
} pe_sniff_chunked;

/* How many bytes of buf belong to the body (all of them unless it ends
 * inside buf, when *done is set), or -1 if it is malformed. */
ssize_t pe_sniff_chunked_feed(pe_sniff_chunked *c, const uint8_t *buf, size_t n, bool *done);

#endif
