/* The one HTTP client of lib/auth's AT Protocol code: a libcurl easy handle
 * per request, a bounded answer, a deadline, no redirects (a handle host or
 * an authorization server redirecting elsewhere is not followed), https
 * only unless the configuration allows http for a local PDS. The
 * DPoP-Nonce answer header is kept for the OAuth client's retries.
 * Blocking: worker threads only.
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include "auth/atproto-internal.h"

#define CONNECT_TIMEOUT_MS 5000L

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

typedef struct body {
    char *buf;
    size_t len, max;
    bool too_big;
} body;

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    body *b = arg;
    size_t add = size * n;
    char *grown;

    if (add > b->max - b->len) {
        b->too_big = true;
        return 0; /* aborts the transfer */
    }
    grown = realloc(b->buf, b->len + add + 1);
    if (grown == NULL)
        return 0;
    b->buf = grown;
    memcpy(b->buf + b->len, p, add);
    b->len += add;
    b->buf[b->len] = '\0';
    return add;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    pe__atproto_resp *rs = arg;
    size_t len = size * n;
    static const char name[] = "dpop-nonce:";

    if (len > sizeof name - 1 && strncasecmp(p, name, sizeof name - 1) == 0) {
        size_t i = sizeof name - 1, end = len;
        while (i < end && (p[i] == ' ' || p[i] == '\t'))
            i++;
        while (end > i && (p[end - 1] == '\r' || p[end - 1] == '\n' || p[end - 1] == ' '))
            end--;
        if (end - i < sizeof rs->nonce) {
            memcpy(rs->nonce, p + i, end - i);
            rs->nonce[end - i] = '\0';
        }
    }
    return len;
}

static struct curl_slist *list_of(const char *const *items, struct curl_slist *l)
{
    for (size_t i = 0; items != NULL && items[i] != NULL; i++) {
        struct curl_slist *n = curl_slist_append(l, items[i]);
        if (n == NULL) {
            curl_slist_free_all(l);
            return NULL;
        }
        l = n;
    }
    return l;
}

static int fail(const pe__atproto_req *rq, CURLcode rc, const body *b, const char *cerr,
                pe_err *err)
{
    if (b->too_big)
        return pe_err_set(err, PE_EREMOTE, 0, "%s %s: answer larger than %zu bytes", rq->method,
                          rq->url, b->max);
    if (rc == CURLE_OPERATION_TIMEDOUT)
        return pe_err_set(err, PE_ETIMEDOUT, 0, "%s %s: no answer in time", rq->method, rq->url);
    if (rc == CURLE_UNSUPPORTED_PROTOCOL)
        return pe_err_set(err, PE_EINVAL, 0, "%s %s: only https is allowed", rq->method, rq->url);
    return pe_err_set(err, PE_EREMOTE, 0, "%s %s: %s", rq->method, rq->url,
                      cerr[0] ? cerr : curl_easy_strerror(rc));
}

/* ---- the private-address guard ----
 *
 * A handle, a did:web or a DID document is anyone's to write: without a
 * guard, naming "localhost" or 169.254.169.254 as one's PDS would turn the
 * daemon into a client of services only this host can reach. The address
 * curl is about to connect to (whatever the name resolved to, after any
 * CONNECT_TO) is checked before the socket exists; the operator can allow
 * private addresses (a PDS on the LAN, the tests' loopback PDS). */

static bool v4_private(const unsigned char a[4])
{
    return a[0] == 0 || a[0] == 10 || a[0] == 127 || a[0] >= 224 || /* this, private, multicast */
           (a[0] == 100 && (a[1] & 0xc0) == 64) ||                  /* 100.64/10, CGNAT */
           (a[0] == 169 && a[1] == 254) ||                          /* link-local, metadata */
           (a[0] == 172 && (a[1] & 0xf0) == 16) || (a[0] == 192 && a[1] == 168) ||
           (a[0] == 192 && a[1] == 0 && a[2] == 0) || (a[0] == 198 && (a[1] & 0xfe) == 18);
}

bool pe__atproto_addr_private(const char *ip)
{
    unsigned char a[16];
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const unsigned char zero[15] = {0};

    if (inet_pton(AF_INET, ip, a) == 1)
        return v4_private(a);
    if (inet_pton(AF_INET6, ip, a) != 1)
        return true; /* not an address we can judge: refused */
    if (memcmp(a, mapped, sizeof mapped) == 0)
        return v4_private(a + 12);
    return memcmp(a, zero, sizeof zero) == 0 ||                     /* :: and ::1 */
           (a[0] & 0xfe) == 0xfc ||                                 /* fc00::/7, unique local */
           (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) || a[0] == 0xff; /* link-local, multicast */
}

typedef struct guard {
    bool allow;   /* the operator allows private addresses */
    bool refused; /* a connection was refused for its address */
} guard;

/* Every socket curl opens, before it connects: a private address never
 * even sees a SYN (no probing of internal ports through a handle). */
static curl_socket_t open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    guard *g = ud;
    char ip[INET6_ADDRSTRLEN] = "";

    (void)purpose;
    if (!g->allow) {
        if (a->family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&a->addr)->sin_addr, ip, sizeof ip);
        else if (a->family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&a->addr)->sin6_addr, ip, sizeof ip);
        if (pe__atproto_addr_private(ip)) {
            g->refused = true;
            return CURL_SOCKET_BAD;
        }
    }
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

int pe__atproto_http(const pe_atproto_cfg *cfg, const pe__atproto_req *rq, pe__atproto_resp *rs,
                     pe_err *err)
{
    char cerr[CURL_ERROR_SIZE] = "";
    guard g = {.allow = cfg->allow_private};
    body b = {.max = rq->max};
    struct curl_slist *conn = list_of(cfg->connect_to, NULL), *hdrs = list_of(rq->headers, NULL);
    long timeout = cfg->timeout_ms > 0 ? cfg->timeout_ms : PE_ATPROTO_TIMEOUT_MS_DEFAULT;
    CURLcode rc;
    CURL *c;

    pthread_once(&curl_once, curl_init);
    memset(rs, 0, sizeof *rs);
    if ((c = curl_easy_init()) == NULL) {
        curl_slist_free_all(conn);
        curl_slist_free_all(hdrs);
        return pe_err_set(err, PE_ESYS, ENOMEM, "curl");
    }
    curl_easy_setopt(c, CURLOPT_URL, rq->url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, cfg->allow_http ? "http,https" : "https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, rs);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "pocketenv-atproto");
    if (conn != NULL)
        curl_easy_setopt(c, CURLOPT_CONNECT_TO, conn);
    if (hdrs != NULL)
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, &g);
    if (rq->body != NULL)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, rq->body);
    rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &rs->status);
    curl_easy_cleanup(c);
    curl_slist_free_all(conn);
    curl_slist_free_all(hdrs);
    if (g.refused) {
        free(b.buf);
        return pe_err_set(err, PE_EAUTH, 0,
                          "%s %s: refused, its host has a private address (the operator may "
                          "allow private addresses)",
                          rq->method, rq->url);
    }
    if (rc != CURLE_OK) {
        fail(rq, rc, &b, cerr, err);
        free(b.buf);
        return -1;
    }
    rs->body = b.buf ? b.buf : strdup("");
    return rs->body ? 0 : pe_err_set(err, PE_ESYS, ENOMEM, "%s %s", rq->method, rq->url);
}
