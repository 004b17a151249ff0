/* The egress proxy's codecs (lib/runtime/egress-sniff.c): SNI from
 * ClientHellos, whole or split across records, and malformed ones by the
 * thousand; HTTP request heads and chunked bodies. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pocketenv/egress-sniff.h"
#include "task.h"

/* A ClientHello with the given SNI extension body (NULL: none), in one
 * record; returns its length. */
static size_t hello(uint8_t *out, const uint8_t *sni, size_t sni_len)
{
    uint8_t body[2048];
    size_t n = 0, ext_start;

    body[n++] = 3, body[n++] = 3;
    memset(body + n, 0x42, 32), n += 32;
    body[n++] = 0;                                                 /* session id */
    body[n++] = 0, body[n++] = 2, body[n++] = 0x13, body[n++] = 1; /* one suite */
    body[n++] = 1, body[n++] = 0;                                  /* null compression */
    ext_start = n;
    n += 2;
    /* an unrelated extension first (supported_versions) */
    body[n++] = 0, body[n++] = 43, body[n++] = 0, body[n++] = 3;
    body[n++] = 2, body[n++] = 3, body[n++] = 4;
    if (sni) {
        body[n++] = 0, body[n++] = 0;
        body[n++] = (uint8_t)(sni_len >> 8), body[n++] = (uint8_t)sni_len;
        memcpy(body + n, sni, sni_len), n += sni_len;
    }
    body[ext_start] = (uint8_t)((n - ext_start - 2) >> 8);
    body[ext_start + 1] = (uint8_t)(n - ext_start - 2);
    out[0] = 0x16, out[1] = 3, out[2] = 1;
    out[3] = (uint8_t)((n + 4) >> 8), out[4] = (uint8_t)(n + 4);
    out[5] = 1, out[6] = 0, out[7] = (uint8_t)(n >> 8), out[8] = (uint8_t)n;
    memcpy(out + 9, body, n);
    return n + 9;
}

/* The server_name extension's body for one host name. */
static size_t sni_for(uint8_t *out, const char *name)
{
    size_t l = strlen(name);

    out[0] = (uint8_t)((l + 3) >> 8), out[1] = (uint8_t)(l + 3);
    out[2] = 0, out[3] = (uint8_t)(l >> 8), out[4] = (uint8_t)l;
    memcpy(out + 5, name, l);
    return l + 5;
}

TEST_CASE(sni_found_lower_cased_and_trailing_dot_dropped)
{
    uint8_t sni[300], buf[4096];
    char name[PE_SNIFF_NAME_MAX + 1];
    size_t n = hello(buf, sni, sni_for(sni, "API.Example.ORG."));

    ASSERT(pe_sniff_is_tls(buf, n));
    ASSERT_EQ_INT(pe_sniff_tls_sni(buf, n, name), PE_SNIFF_NAME);
    ASSERT_EQ_STR(name, "api.example.org");
    /* every shorter prefix asks for more, never answers */
    for (size_t k = 0; k < n; k++)
        ASSERT_EQ_INT(pe_sniff_tls_sni(buf, k, name), PE_SNIFF_MORE);
}

TEST_CASE(sni_absent_is_none)
{
    uint8_t buf[4096];
    char name[PE_SNIFF_NAME_MAX + 1];
    size_t n = hello(buf, NULL, 0);

    ASSERT_EQ_INT(pe_sniff_tls_sni(buf, n, name), PE_SNIFF_NONE);
    ASSERT_EQ_STR(name, "");
}

TEST_CASE(sni_across_two_records)
{
    uint8_t sni[300], one[4096], two[4096];
    char name[PE_SNIFF_NAME_MAX + 1];
    size_t n = hello(one, sni, sni_for(sni, "split.example.org")), hs = n - 5, cut = 20, m = 0;

    /* records of cut and hs - cut bytes of the same handshake message */
    memcpy(two, one, 3);
    two[3] = 0, two[4] = (uint8_t)cut;
    memcpy(two + 5, one + 5, cut);
    m = 5 + cut;
    memcpy(two + m, one, 3);
    two[m + 3] = (uint8_t)((hs - cut) >> 8), two[m + 4] = (uint8_t)(hs - cut);
    memcpy(two + m + 5, one + 5 + cut, hs - cut);
    m += 5 + hs - cut;
    ASSERT_EQ_INT(pe_sniff_tls_sni(two, m, name), PE_SNIFF_NAME);
    ASSERT_EQ_STR(name, "split.example.org");
}

TEST_CASE(sni_odd_names_and_two_names_are_refused)
{
    static const char *const bad[] = {"a..b", "a b.org", "a\\.b.org", ".", "", "x/y", "a%2eb"};
    uint8_t sni[600], buf[4096];
    char name[PE_SNIFF_NAME_MAX + 1], big[300];
    size_t l;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ASSERT_EQ_INT(pe_sniff_tls_sni(buf, hello(buf, sni, sni_for(sni, bad[i])), name),
                      PE_SNIFF_BAD);
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    ASSERT_EQ_INT(pe_sniff_tls_sni(buf, hello(buf, sni, sni_for(sni, big)), name), PE_SNIFF_BAD);
    /* a NUL inside: "allowed.org\0.evil" */
    l = sni_for(sni, "allowed.orgX.evil.org");
    sni[5 + 11] = 0;
    ASSERT_EQ_INT(pe_sniff_tls_sni(buf, hello(buf, sni, l), name), PE_SNIFF_BAD);
    /* two host names in one list */
    l = sni_for(sni, "a.org");
    memcpy(sni + l, sni + 2, l - 2);
    l += l - 2;
    sni[0] = (uint8_t)((l - 2) >> 8), sni[1] = (uint8_t)(l - 2);
    ASSERT_EQ_INT(pe_sniff_tls_sni(buf, hello(buf, sni, l), name), PE_SNIFF_BAD);
}

TEST_CASE(not_a_client_hello_is_refused)
{
    uint8_t sni[300], buf[4096];
    char name[PE_SNIFF_NAME_MAX + 1];
    size_t n = hello(buf, sni, sni_for(sni, "a.org"));

    buf[5] = 2; /* a ServerHello */
    ASSERT_EQ_INT(pe_sniff_tls_sni(buf, n, name), PE_SNIFF_BAD);
    buf[5] = 1;
    buf[0] = 0x17; /* application data */
    ASSERT_EQ_INT(pe_sniff_tls_sni(buf, n, name), PE_SNIFF_BAD);
    buf[0] = 0x16;
    buf[3] = 0x7f, buf[4] = 0xff; /* a record over 16 KiB */
    ASSERT_EQ_INT(pe_sniff_tls_sni(buf, n, name), PE_SNIFF_BAD);
}

/* Malformed hellos: random bytes changed, cut, lengths blown up. The
 * codec must stay in bounds (the ASan run watches) and whatever name it
 * answers must be a clean host name. */
TEST_CASE(sni_fuzz_malformed_hellos)
{
    uint8_t sni[300], orig[4096], buf[4096];
    char name[PE_SNIFF_NAME_MAX + 1];
    size_t n = hello(orig, sni, sni_for(sni, "fuzz.example.org"));
    unsigned seed = 20;

    for (int round = 0; round < 200000; round++) {
        size_t len = n, flips = 1 + (size_t)(rand_r(&seed) % 4);
        int r;
        memcpy(buf, orig, n);
        for (size_t f = 0; f < flips; f++)
            buf[(size_t)rand_r(&seed) % n] = (uint8_t)rand_r(&seed);
        if (rand_r(&seed) % 4 == 0)
            len = (size_t)rand_r(&seed) % n;
        r = pe_sniff_tls_sni(buf, len, name);
        ASSERT(r >= PE_SNIFF_BAD && r <= PE_SNIFF_NAME);
        if (r == PE_SNIFF_NAME)
            for (const char *c = name; *c; c++)
                ASSERT((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-' ||
                       *c == '_' || *c == '.');
    }
    /* and pure noise */
    for (int round = 0; round < 50000; round++) {
        size_t len = (size_t)rand_r(&seed) % sizeof(buf);
        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)rand_r(&seed);
        buf[0] = 0x16;
        buf[1] = 3;
        (void)pe_sniff_tls_sni(buf, len, name);
    }
}

#define HEAD(s) (const uint8_t *)(s), strlen(s)

TEST_CASE(http_host_port_and_framing)
{
    pe_sniff_http h;
    const char *req = "POST /x HTTP/1.1\r\nHost: API.Example.org:8080\r\nContent-Length: 5\r\n"
                      "\r\nhello";

    ASSERT_EQ_INT(pe_sniff_is_http(HEAD("GET / HTTP/1.1")), PE_SNIFF_NAME);
    ASSERT_EQ_INT(pe_sniff_is_http(HEAD("GE")), PE_SNIFF_MORE);
    ASSERT_EQ_INT(pe_sniff_is_http(HEAD("\x16\x03")), PE_SNIFF_BAD);
    ASSERT_EQ_INT(pe_sniff_http_head(HEAD(req), &h), PE_SNIFF_NAME);
    ASSERT_EQ_STR(h.host, "api.example.org");
    ASSERT_EQ_INT(h.content_length, 5);
    ASSERT_EQ_INT(h.head_len, strlen(req) - 5);
    ASSERT_EQ_INT(pe_sniff_http_head(HEAD("GET / HTTP/1.1\r\nHost: a.org\r\n"), &h), PE_SNIFF_MORE);
    ASSERT_EQ_INT(pe_sniff_http_head(HEAD("GET / HTTP/1.0\r\nHost: 10.1.2.3\r\n\r\n"), &h),
                  PE_SNIFF_NAME);
    ASSERT(h.is_ip && h.host[0] == '\0');
    ASSERT_EQ_INT(pe_sniff_http_head(HEAD("GET / HTTP/1.0\r\n\r\n"), &h), PE_SNIFF_NONE);
    ASSERT(!h.is_ip && h.host[0] == '\0');
    ASSERT_EQ_INT(pe_sniff_http_head(HEAD("GET / HTTP/1.1\r\nHost: a.org\r\nConnection: "
                                          "keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n"),
                                     &h),
                  PE_SNIFF_NAME);
    ASSERT(h.upgrade);
    ASSERT_EQ_INT(
        pe_sniff_http_head(HEAD("GET http://a.org/x HTTP/1.1\r\nHost: a.org\r\n\r\n"), &h),
        PE_SNIFF_NAME);
}

TEST_CASE(http_ambiguous_heads_are_refused)
{
    static const char *const bad[] = {
        "GET / HTTP/1.1\r\n\r\n",                               /* no Host */
        "GET / HTTP/1.1\r\nHost: a.org\r\nHost: b.org\r\n\r\n", /* two */
        "GET / HTTP/1.1\r\nHost : b.org\r\n\r\n",               /* space before : */
        "GET / HTTP/1.1\r\nHost: a.org\r\n b.org\r\n\r\n",      /* folding */
        "GET / HTTP/1.1\nHost: a.org\n\n",                      /* bare LF */
        "GET / HTTP/1.1\r\nHost: a.org@b.org\r\n\r\n",          /* userinfo */
        "GET / HTTP/1.1\r\nHost: a.org:x\r\n\r\n",              /* port */
        "GET http://b.org/ HTTP/1.1\r\nHost: a.org\r\n\r\n",    /* target's host */
        "CONNECT b.org:443 HTTP/1.1\r\nHost: b.org\r\n\r\n",    /* a forward proxy */
        "GET / HTTP/2.0\r\nHost: a.org\r\n\r\n",                /* version */
        "POST / HTTP/1.1\r\nHost: a.org\r\nContent-Length: 3\r\nTransfer-Encoding: chunked"
        "\r\n\r\n", /* both */
        "POST / HTTP/1.1\r\nHost: a.org\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a.org\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a.org\r\nContent-Length: -3\r\n\r\n",
    };
    pe_sniff_http h;
    uint8_t big[PE_SNIFF_MAX + 10];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (pe_sniff_http_head(HEAD(bad[i]), &h) != PE_SNIFF_BAD)
            TEST_FAIL("accepted: %s", bad[i]);
    memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
    memset(big + 19, 'a', sizeof(big) - 19);
    ASSERT_EQ_INT(pe_sniff_http_head(big, sizeof(big), &h), PE_SNIFF_BAD);
}

TEST_CASE(chunked_body_ends_where_it_says)
{
    const char *body = "5;x=y\r\nhello\r\n0\r\nTrailer: 1\r\n\r\nGET / HTTP/1.1\r\n";
    pe_sniff_chunked c = {0};
    bool done = false;
    size_t total = 0, end = strlen(body) - strlen("GET / HTTP/1.1\r\n");

    /* byte by byte: the state carries over */
    for (size_t i = 0; i < strlen(body) && !done; i++) {
        ssize_t k = pe_sniff_chunked_feed(&c, (const uint8_t *)body + i, 1, &done);
        ASSERT_EQ_INT(k, 1);
        total += (size_t)k;
    }
    ASSERT(done);
    ASSERT_EQ_INT(total, end);
    /* at once */
    ASSERT_EQ_INT(pe_sniff_chunked_feed(&c, (const uint8_t *)body, strlen(body), &done), end);
    ASSERT(done);
    memset(&c, 0, sizeof(c));
    ASSERT_EQ_INT(pe_sniff_chunked_feed(&c, (const uint8_t *)"zz\r\n", 4, &done), -1);
    memset(&c, 0, sizeof(c));
    ASSERT_EQ_INT(pe_sniff_chunked_feed(&c, (const uint8_t *)"3\r\nabcX", 7, &done), -1);
}

/* Request heads and chunked bodies with random bytes changed or cut. */
TEST_CASE(http_fuzz_malformed_heads_and_bodies)
{
    const char *orig = "POST /a HTTP/1.1\r\nHost: api.example.org:443\r\nTransfer-Encoding: "
                       "chunked\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"
                       "4\r\nabcd\r\n0\r\nT: 1\r\n\r\n";
    size_t n = strlen(orig);
    uint8_t buf[512];
    unsigned seed = 21;
    pe_sniff_http h;

    for (int round = 0; round < 200000; round++) {
        size_t len = n;
        pe_sniff_chunked c = {0};
        bool done;
        int r;
        memcpy(buf, orig, n);
        for (size_t f = 1 + (size_t)(rand_r(&seed) % 3); f > 0; f--)
            buf[(size_t)rand_r(&seed) % n] = (uint8_t)rand_r(&seed);
        if (rand_r(&seed) % 4 == 0)
            len = (size_t)rand_r(&seed) % n;
        r = pe_sniff_http_head(buf, len, &h);
        ASSERT(r >= PE_SNIFF_BAD && r <= PE_SNIFF_NAME);
        if (r >= PE_SNIFF_NONE) {
            ASSERT(h.head_len <= len);
            for (const char *p = h.host; *p; p++)
                ASSERT((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' ||
                       *p == '_' || *p == '.');
            ssize_t k = pe_sniff_chunked_feed(&c, buf + h.head_len, len - h.head_len, &done);
            ASSERT(k >= -1 && k <= (ssize_t)(len - h.head_len));
        }
    }
}

int main(void)
{
    return RUN_TESTS(sni_found_lower_cased_and_trailing_dot_dropped, sni_absent_is_none,
                     sni_across_two_records, sni_odd_names_and_two_names_are_refused,
                     not_a_client_hello_is_refused, sni_fuzz_malformed_hellos,
                     http_host_port_and_framing, http_ambiguous_heads_are_refused,
                     chunked_body_ends_where_it_says, http_fuzz_malformed_heads_and_bodies);
}
