/* The one HTTP client of lib/auth's AT Protocol code: a libcurl easy handle
 * per request, a bounded answer, a deadline, no redirects (a handle host or
 * an authorization server redirecting elsewhere is not followed), https
 * only unless the configuration allows http for a local PDS. The
 * DPoP-Nonce answer header is kept for the OAuth client's retries.
 * Blocking: worker threads only.
 */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

int pe__atproto_http(const pe_atproto_cfg *cfg, const pe__atproto_req *rq, pe__atproto_resp *rs,
                     pe_err *err)
{
    char cerr[CURL_ERROR_SIZE] = "";
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
    if (rq->body != NULL)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, rq->body);
    rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &rs->status);
    curl_easy_cleanup(c);
    curl_slist_free_all(conn);
    curl_slist_free_all(hdrs);
    if (rc != CURLE_OK) {
        fail(rq, rc, &b, cerr, err);
        free(b.buf);
        return -1;
    }
    rs->body = b.buf ? b.buf : strdup("");
    return rs->body ? 0 : pe_err_set(err, PE_ESYS, ENOMEM, "%s %s", rq->method, rq->url);
}
