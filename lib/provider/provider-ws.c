/* An outbound WebSocket to a provider (provider-internal.h).
 *
 * Debian 12's libcurl (7.88) has no usable WebSocket API, so curl only
 * connects (CURLOPT_CONNECT_ONLY: TCP, TLS, proxies), the upgrade request
 * is written here (custom headers: the Authorization a provider wants on
 * the upgrade), and wslay frames the messages. One WebSocket belongs to
 * one pump thread (provider-stream.c); nothing here is shared. */
#include <errno.h>
#include <nettle/sha1.h>
#include <poll.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <wslay/wslay.h>

#include "core/util.h"
#include "provider-internal.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define HANDSHAKE_MAX 16384

struct pe__ws {
    CURL *curl;
    int fd;
    wslay_event_context_ptr ctx;
    unsigned char pre[HANDSHAKE_MAX]; /* bytes read past the handshake's answer */
    size_t pre_len, pre_off;
    size_t head_len; /* the handshake answer's head, at the start of pre */
    bool closed;
    void (*on_msg)(void *, int, const unsigned char *, size_t);
    void *ud;
};

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *ud)
{
    pe__ws *w = ud;
    size_t n = 0;
    CURLcode rc;

    if (w->pre_off < w->pre_len) {
        n = w->pre_len - w->pre_off < len ? w->pre_len - w->pre_off : len;
        memcpy(buf, w->pre + w->pre_off, n);
        w->pre_off += n;
        return (ssize_t)n;
    }
    rc = curl_easy_recv(w->curl, buf, len, &n);
    if (rc == CURLE_AGAIN) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (rc != CURLE_OK || n == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)n;
}

static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *ud)
{
    pe__ws *w = ud;
    size_t n = 0;
    CURLcode rc = curl_easy_send(w->curl, data, len, &n);

    if (rc == CURLE_AGAIN) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (rc != CURLE_OK) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)n;
}

static int ws_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *ud)
{
    randombytes_buf(buf, len);
    return 0;
}

static void ws_on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *a,
                      void *ud)
{
    pe__ws *w = ud;

    if (a->opcode == WSLAY_CONNECTION_CLOSE)
        w->closed = true;
    if (w->on_msg)
        w->on_msg(w->ud, a->opcode, a->msg, a->msg_length);
}

/* Wait for the socket (POLLIN/POLLOUT) until deadline. */
static int wait_fd(int fd, short ev, int64_t deadline)
{
    struct pollfd pfd = {.fd = fd, .events = ev};
    int64_t left = deadline - pe_monotonic_ms();

    if (left <= 0)
        return 0;
    return poll(&pfd, 1, (int)left);
}

static int send_all(pe__ws *w, const char *buf, size_t len, int64_t deadline)
{
    while (len > 0) {
        size_t n = 0;
        CURLcode rc = curl_easy_send(w->curl, buf, len, &n);
        if (rc == CURLE_AGAIN) {
            if (wait_fd(w->fd, POLLOUT, deadline) <= 0)
                return -1;
            continue;
        }
        if (rc != CURLE_OK)
            return -1;
        buf += n;
        len -= n;
    }
    return 0;
}

/* Read the answer's head into w->pre; *head_len: its length (up to the
 * blank line). 0, or -1 with errno-ish meaning: 1 = timeout, 2 = broken. */
static int read_head(pe__ws *w, size_t *head_len, int64_t deadline)
{
    for (;;) {
        size_t n = 0;
        CURLcode rc;
        char *end;

        w->pre[w->pre_len] = '\0';
        end = strstr((char *)w->pre, "\r\n\r\n");
        if (end) {
            *head_len = (size_t)(end - (char *)w->pre) + 4;
            return 0;
        }
        if (w->pre_len >= sizeof(w->pre) - 1)
            return 2;
        rc = curl_easy_recv(w->curl, w->pre + w->pre_len, sizeof(w->pre) - 1 - w->pre_len, &n);
        if (rc == CURLE_AGAIN) {
            if (wait_fd(w->fd, POLLIN, deadline) <= 0)
                return 1;
            continue;
        }
        if (rc != CURLE_OK || n == 0)
            return 2;
        w->pre_len += n;
    }
}

static bool head_value(const char *head, size_t len, const char *name, char *out, size_t size);

/* A refused upgrade's body (its Content-Length, as much as fits in pre):
 * the provider's words for why. Best effort until deadline. */
static void read_body(pe__ws *w, size_t head_len, int64_t deadline)
{
    char cl[32];
    size_t want;

    if (!head_value((char *)w->pre, head_len, "Content-Length", cl, sizeof(cl)))
        return;
    want = head_len + strtoul(cl, NULL, 10);
    if (want > sizeof(w->pre) - 1)
        want = sizeof(w->pre) - 1;
    while (w->pre_len < want) {
        size_t n = 0;
        CURLcode rc = curl_easy_recv(w->curl, w->pre + w->pre_len, want - w->pre_len, &n);
        if (rc == CURLE_AGAIN) {
            if (wait_fd(w->fd, POLLIN, deadline) <= 0)
                break;
            continue;
        }
        if (rc != CURLE_OK || n == 0)
            break;
        w->pre_len += n;
    }
    w->pre[w->pre_len] = '\0';
}

/* The value of header `name` in head (NUL-terminated copy in out). */
static bool head_value(const char *head, size_t len, const char *name, char *out, size_t size)
{
    size_t nlen = strlen(name);

    for (const char *l = strstr(head, "\r\n"); l && (size_t)(l - head) < len;
         l = strstr(l + 2, "\r\n")) {
        const char *v = l + 2, *e;
        if (strncasecmp(v, name, nlen) != 0 || v[nlen] != ':')
            continue;
        v += nlen + 1;
        while (*v == ' ')
            v++;
        e = strstr(v, "\r\n");
        snprintf(out, size, "%.*s", (int)(e ? e - v : 0), v);
        return true;
    }
    return false;
}

static void accept_of(const char *key, char *out, size_t size)
{
    struct sha1_ctx sha;
    uint8_t digest[SHA1_DIGEST_SIZE];
    char *b;

    sha1_init(&sha);
    sha1_update(&sha, strlen(key), (const uint8_t *)key);
    sha1_update(&sha, strlen(WS_GUID), (const uint8_t *)WS_GUID);
    sha1_digest(&sha, sizeof(digest), digest);
    b = pe__b64_encode(digest, sizeof(digest));
    snprintf(out, size, "%s", b);
    free(b);
}

/* host[:port] and the path of url (after the scheme). */
static int split_url(const char *url, char *http_url, size_t hsize, const char **path)
{
    const char *rest;
    bool tls;

    if (strncmp(url, "ws://", 5) == 0 || strncmp(url, "http://", 7) == 0)
        tls = false;
    else if (strncmp(url, "wss://", 6) == 0 || strncmp(url, "https://", 8) == 0)
        tls = true;
    else
        return -1;
    rest = strstr(url, "://") + 3;
    *path = strchr(rest, '/');
    if (*path == NULL)
        *path = "/";
    snprintf(http_url, hsize, "%s://%.*s/", tls ? "https" : "http",
             (int)(strchr(rest, '/') ? strchr(rest, '/') - rest : (ptrdiff_t)strlen(rest)), rest);
    return 0;
}

/* The upgrade of w (connected to host_url) at path with headers. A refused
 * upgrade: -1 with *status (0: not HTTP) and *body (malloc'd, its start)
 * set and err PE_EREMOTE; a broken connection or a timeout: -1, *status 0. */
static int handshake(pe__ws *w, const char *host_url, const char *path, const char *const *headers,
                     int64_t deadline, long *status, char **body, pe_err *err)
{
    unsigned char nonce[16];
    char *key = NULL, *req, expect[64], got[128];
    const char *host = strstr(host_url, "://") + 3;
    size_t head_len = 0, extra = 0;
    char extra_hdrs[4096] = "";
    int r;

    for (const char *const *h = headers; h && *h; h++)
        extra += (size_t)snprintf(extra_hdrs + extra, sizeof(extra_hdrs) - extra, "%s\r\n", *h);
    randombytes_buf(nonce, sizeof(nonce));
    key = pe__b64_encode(nonce, sizeof(nonce));
    req = pe_xasprintf("GET %s HTTP/1.1\r\nHost: %.*s\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                       "Sec-WebSocket-Version: 13\r\n%s\r\n",
                       path, (int)(strlen(host) - 1), host, key, extra_hdrs);
    sodium_memzero(extra_hdrs, sizeof(extra_hdrs)); /* may hold a credential */
    r = send_all(w, req, strlen(req), deadline);
    pe__secret_free(req);
    if (r < 0) {
        free(key);
        return pe_err_set(err, PE_EREMOTE, 0, "the connection broke");
    }
    r = read_head(w, &head_len, deadline);
    if (r != 0) {
        free(key);
        return pe_err_set(err, r == 1 ? PE_ETIMEDOUT : PE_EREMOTE, 0,
                          r == 1 ? "no answer in time" : "the connection broke");
    }
    if (strncmp((char *)w->pre, "HTTP/1.", 7) == 0 && memchr(w->pre, ' ', head_len))
        *status = strtol((char *)memchr(w->pre, ' ', head_len) + 1, NULL, 10);
    if (*status != 101) {
        free(key);
        read_body(w, head_len, deadline);
        /* the body that came with the head: enough for the peer's message */
        *body = pe_xstrdup((char *)w->pre + head_len);
        return pe_err_set(err, PE_EREMOTE, 0, "the upgrade was refused (HTTP %ld)", *status);
    }
    accept_of(key, expect, sizeof(expect));
    free(key);
    if (!head_value((char *)w->pre, head_len, "Sec-WebSocket-Accept", got, sizeof(got)) ||
        strcmp(got, expect) != 0)
        return pe_err_set(err, PE_EREMOTE, 0, "bad WebSocket handshake");
    w->pre_off = w->head_len = head_len;
    return 0;
}

bool pe__ws_header(const pe__ws *w, const char *name, char *out, size_t size)
{
    return head_value((const char *)w->pre, w->head_len, name, out, size);
}

int pe_ws_client_open(const char *url, const char *const *headers, int64_t timeout_ms,
                      void (*curl_setup)(void *ud, CURL *c), void *setup_ud, pe__ws **out,
                      long *status, char **body, pe_err *err)
{
    int64_t deadline = pe_monotonic_ms() + timeout_ms;
    struct wslay_event_callbacks cb = {.recv_callback = ws_recv,
                                       .send_callback = ws_send,
                                       .genmask_callback = ws_genmask,
                                       .on_msg_recv_callback = ws_on_msg};
    char host_url[1024];
    const char *path;
    curl_socket_t sock = CURL_SOCKET_BAD;
    pe__ws *w;
    CURLcode rc;

    *status = 0;
    *body = NULL;
    if (split_url(url, host_url, sizeof(host_url), &path) < 0)
        return pe_err_set(err, PE_EINVAL, 0, "not an http(s) or ws(s) URL");
    w = pe_xcalloc(1, sizeof(*w));
    w->fd = -1;
    w->curl = curl_easy_init();
    curl_easy_setopt(w->curl, CURLOPT_URL, host_url);
    curl_easy_setopt(w->curl, CURLOPT_CONNECT_ONLY, 1L);
    curl_easy_setopt(w->curl, CURLOPT_NOSIGNAL, 1L);
    pe__curl_cloexec(w->curl);
    if (curl_setup)
        curl_setup(setup_ud, w->curl);
    curl_easy_setopt(w->curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(w->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
    rc = curl_easy_perform(w->curl);
    if (rc == CURLE_OK)
        rc = curl_easy_getinfo(w->curl, CURLINFO_ACTIVESOCKET, &sock);
    if (rc != CURLE_OK || sock == CURL_SOCKET_BAD) {
        pe__ws_free(w);
        return pe_err_set(err, rc == CURLE_OPERATION_TIMEDOUT ? PE_ETIMEDOUT : PE_EREMOTE, 0, "%s",
                          curl_easy_strerror(rc));
    }
    w->fd = (int)sock;
    if (handshake(w, host_url, path, headers, deadline, status, body, err) < 0) {
        pe__ws_free(w);
        return -1;
    }
    if (wslay_event_context_client_init(&w->ctx, &cb, w) != 0)
        abort();
    /* a message larger than this ends the connection (wslay answers 1009) */
    wslay_event_config_set_max_recv_msg_length(w->ctx, 8u << 20);
    *out = w;
    return 0;
}

static void provider_curl_setup(void *ud, CURL *c)
{
    pe_provider *p = ud;

    if (p->ops->curl_setup)
        p->ops->curl_setup(p, c);
}

int pe__ws_open(pe_provider *p, const char *url, const char *const *headers, const char *what,
                pe__ws **out, pe_err *err)
{
    const char *hdrs[34];
    size_t n = 0;
    bool own_auth = false;
    char *auth = NULL, *body = NULL;
    long status = 0;
    pe_err why;
    int r;

    for (const char *const *h = headers; h && *h && n < PE_ARRAY_LEN(hdrs) - 2; h++) {
        own_auth |= strncasecmp(*h, "Authorization:", 14) == 0;
        hdrs[n++] = *h;
    }
    /* a caller's own Authorization (a sandbox's token) replaces the key */
    auth = own_auth || p->cfg.creds.key == NULL ? NULL : pe__bearer(p);
    if (auth)
        hdrs[n++] = auth;
    hdrs[n] = NULL;
    pe_err_clear(&why);
    r = pe_ws_client_open(url, hdrs, p->cfg.timeout_ms, provider_curl_setup, p, out, &status, &body,
                          &why);
    pe__secret_free(auth);
    if (r == 0)
        return 0;
    if (why.code == PE_EINVAL)
        r = pe__provider_fail(p, err, PE_EINVAL, "%s: %s: not an http(s) or ws(s) URL",
                              p->ops->name, what);
    else if (body == NULL && strcmp(why.msg, "no answer in time") == 0)
        r = pe__provider_fail(p, err, PE_ETIMEDOUT, "%s did not answer %s in time", p->ops->name,
                              what);
    else if (body == NULL)
        r = pe__provider_fail(p, err, why.code, "%s: %s: %s", p->ops->name, what, why.msg);
    else if (status == 0 || (status >= 200 && status < 300))
        r = pe__provider_fail(p, err, PE_EREMOTE,
                              "%s answered %s with something that is not its API", p->ops->name,
                              what);
    else {
        pe__presp rs = {.status = status, .body = body, .len = strlen(body)};
        body = NULL;
        r = pe__provider_status_error(p, &rs, what, err);
        pe__presp_free(&rs);
    }
    free(body);
    return r;
}

int pe__ws_send(pe__ws *w, int opcode, const void *data, size_t len)
{
    struct wslay_event_msg m = {.opcode = (uint8_t)opcode, .msg = data, .msg_length = len};

    if (wslay_event_queue_msg(w->ctx, &m) != 0)
        return -1;
    return wslay_event_send(w->ctx) == 0 ? 0 : -1;
}

int pe__ws_close(pe__ws *w, uint16_t code)
{
    if (wslay_event_queue_close(w->ctx, code, NULL, 0) != 0)
        return -1;
    return wslay_event_send(w->ctx) == 0 ? 0 : -1;
}

bool pe__ws_buffered(const pe__ws *w)
{
    return w->pre_off < w->pre_len;
}

int pe__ws_fd(const pe__ws *w)
{
    return w->fd;
}

bool pe__ws_want_write(const pe__ws *w)
{
    return wslay_event_want_write(w->ctx);
}

int pe__ws_io(pe__ws *w, short revents,
              void (*on_msg)(void *ud, int opcode, const unsigned char *data, size_t len), void *ud)
{
    w->on_msg = on_msg;
    w->ud = ud;
    /* bytes that came with the handshake are not signalled by poll */
    if ((revents & (POLLIN | POLLHUP | POLLERR)) || w->pre_off < w->pre_len) {
        if (wslay_event_recv(w->ctx) != 0)
            return -1;
    }
    if (wslay_event_want_write(w->ctx) && wslay_event_send(w->ctx) != 0)
        return -1;
    if (!wslay_event_want_read(w->ctx) && !wslay_event_want_write(w->ctx))
        return -1;
    return 0;
}

int pe__ws_step(pe__ws *w, int64_t deadline,
                void (*on_msg)(void *ud, int opcode, const unsigned char *data, size_t len),
                void *ud)
{
    struct pollfd pfd = {.fd = w->fd, .events = POLLIN | (pe__ws_want_write(w) ? POLLOUT : 0)};
    int64_t left = deadline - pe_monotonic_ms();
    int r;

    if (w->pre_off < w->pre_len)
        pfd.revents = POLLIN; /* bytes that came with the handshake */
    else if (left <= 0)
        return -2;
    else if ((r = poll(&pfd, 1, (int)left)) == 0)
        return -2;
    else if (r < 0)
        return errno == EINTR ? 0 : -1;
    return pe__ws_io(w, pfd.revents, on_msg, ud);
}

bool pe__ws_closed(const pe__ws *w)
{
    return w->closed;
}

void pe__ws_free(pe__ws *w)
{
    if (w == NULL)
        return;
    if (w->ctx)
        wslay_event_context_free(w->ctx);
    if (w->curl)
        curl_easy_cleanup(w->curl);
    free(w);
}
