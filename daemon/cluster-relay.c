/* The streaming routes of a sandbox another node runs (docs/cluster.md):
 * streaming exec (/exec/:id/ws), the terminals (/tty, /pty, Cloudflare's
 * and the root WebSocket routes, their SSE streams, input and resize) and
 * the /ssh gateway find their sandbox through pe__term_find_sandbox (the
 * E2B API's control plane through its own lookup, daemon/e2b.c); when
 * the store says another node runs it, the request is relayed there, one
 * hop, with a node credential for the request's path instead of the
 * user's token (which never leaves this node):
 *
 *   WebSocket  this node upgrades the client only once the other node
 *              upgraded its own connection (libcurl connects, wslay frames:
 *              provider/ws-client.h, the provider adapters' client), then
 *              every message goes across as it came, both ways; a close on
 *              either side closes the other (with its code).
 *   otherwise  (an SSE stream, a POST of input or a resize, the E2B API's
 *              envd and control-plane calls) libcurl makes the same request
 *              on a thread of its own, with the request's E2B and Connect
 *              headers (never a credential of the user's) and its body
 *              (or the file a route wrote it to); an event stream's or a
 *              Connect stream's bytes are relayed as they come, any other
 *              answer once whole (which the caller may edit: the E2B API
 *              puts back the key it kept).
 *
 * A refused upgrade or request is answered with the other node's status
 * and body. Backpressure: while the client has more than HIGH_WATER
 * unsent, the other node's socket is not read (WebSocket), or the stream
 * is ended as too slow (SSE, as a terminal drops a slow viewer).
 *
 * Threading: the WebSocket relay is the loop's (the connect is a worker's
 * job); an HTTP relay's transfer runs on its own thread and hands its
 * bytes to the loop with pe_ev_post, in order. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>
#include <poll.h>
#include <sodium.h>
#include <wslay/wslay.h>

#include "cluster.h"
#include "core/log.h"
#include "core/util.h"
#include "providers.h"
#include "provider/ws-client.h"

#define CONNECT_TIMEOUT_MS 5000
#define MESSAGE_MAX (8u * 1024 * 1024)
#define HIGH_WATER (1024 * 1024)
#define ANSWER_MAX (1024 * 1024) /* a non-stream answer (input, resize: tiny) */
/* E2B's /files download, gathered whole as the owning node holds it */
#define FILES_ANSWER_MAX (64u * 1024 * 1024 + 4096)

/* Request headers a relayed call keeps: which sandbox /ssh/connect and
 * the E2B API mean (and its port), Connect's protocol and keepalive.
 * Credentials (X-API-Key, X-Access-Token, Authorization, cookies) stay
 * here. */
static const char *const FORWARDED_HEADERS[] = {"X-Sandbox-Id",
                                                "E2b-Sandbox-Id",
                                                "E2b-Sandbox-Port",
                                                "Connect-Protocol-Version",
                                                "Connect-Timeout-Ms",
                                                "Keepalive-Ping-Interval",
                                                "Accept"};

/* ---- where: a worker's look at the store ---- */

int pe_cluster_where(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb, pe_cluster_target *t)
{
    pe_store_node node = {0};
    pe_err err;

    memset(t, 0, sizeof(*t));
    if (!pe_cluster_has_key(d->cluster) || sb->provider_id == NULL || pe_daemon_is_mine(d, sb) ||
        (sb->backend && strcmp(sb->backend, PE_BACKEND_LOCAL) != 0))
        return 0;
    pe_err_clear(&err);
    if (pe_store_node_get(s, sb->provider_id, &node, &err) < 0) {
        t->node_name = pe_xstrdup(sb->provider_id);
        t->down = true;
        return 1;
    }
    t->node_id = pe_xstrdup(node.id);
    t->node_name = pe_xstrdup(node.name);
    t->address = pe_xstrdup(node.address);
    t->down = !pe_cluster_node_up(&node, pe_store_now_ms());
    pe_store_node_clear(&node);
    return 1;
}

void pe_cluster_target_clear(pe_cluster_target *t)
{
    free(t->node_id);
    free(t->node_name);
    free(t->address);
    memset(t, 0, sizeof(*t));
}

bool pe_cluster_is_node_request(const pe_http_request *req)
{
    return req->authorization &&
           strncmp(req->authorization, PE_CLUSTER_SCHEME, strlen(PE_CLUSTER_SCHEME)) == 0;
}

char *pe_cluster_route_auth(pe_daemon *d, pe_http_request *req)
{
    const char *cred = req->authorization + strlen(PE_CLUSTER_SCHEME);
    enum pe_cluster_cred_result r;
    char *did = NULL, nonce[33];
    char msg[128];

    r = pe_cluster_cred_verify(d, cred, req->path, true, &did, nonce);
    if (r == PE_CLUSTER_CRED_OK)
        return did;
    pe_log_warn("auth %s: %s node credential refused: %s", req->client_addr, req->path,
                pe_cluster_cred_result_name(r));
    snprintf(msg, sizeof(msg), "node credential refused: %s", pe_cluster_cred_result_name(r));
    pe_http_respond_error(req, 401, "InvalidNodeCredential", msg);
    return NULL;
}

/* ---- the request there ---- */

struct url_buf {
    char *s;
    size_t len, cap;
};

static void url_add(struct url_buf *u, const char *s, size_t n)
{
    if (u->len + n + 1 > u->cap) {
        u->cap = (u->len + n + 1) * 2;
        u->s = pe_xrealloc(u->s, u->cap);
    }
    memcpy(u->s + u->len, s, n);
    u->len += n;
    u->s[u->len] = '\0';
}

static void url_escaped(struct url_buf *u, const char *s, bool path)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char hex[4];

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            strchr("-._~", c) || (path && c == '/')) {
            url_add(u, s, 1);
            continue;
        }
        snprintf(hex, sizeof(hex), "%%%02X", c);
        url_add(u, hex, 3);
    }
}

static void put_arg(const char *name, const char *value, void *ud)
{
    struct url_buf *u = ud;

    /* The user's token stays here: the node credential replaces it. */
    if (strcmp(name, "token") == 0 || strcmp(name, "t") == 0)
        return;
    url_add(u, strchr(u->s, '?') ? "&" : "?", 1);
    url_escaped(u, name, false);
    if (value) {
        url_add(u, "=", 1);
        url_escaped(u, value, false);
    }
}

/* address + the request's path and query (without a token). */
static char *url_of(const char *address, pe_http_request *req)
{
    struct url_buf u = {0};

    url_add(&u, address, strlen(address));
    url_escaped(&u, req->path, true);
    pe_http_query_each(req, put_arg, &u);
    return u.s;
}

static void respond_relayed(pe_http_request *req, long status, const char *ctype, const char *body,
                            size_t len)
{
    if (status < 200 || status > 599) {
        pe_http_respond_error(req, 502, "NodeUnreachable",
                              "the node that runs the sandbox answered something else than HTTP");
        return;
    }
    pe_http_respond(req, (unsigned)status, ctype, body, len, NULL);
}

/* ---- WebSocket ---- */

struct wsrelay {
    pe_daemon *d;
    pe_http_request *req; /* until the upgrade */
    char *url, *cred, *node_name;
    /* the connect job's outcome */
    pe__ws *up;
    long status;
    char *body;
    pe_err err;
    /* then */
    pe_http_ws *client;
    pe_ev_io *io;
    uint32_t events;
    bool up_gone;
    char reason[124]; /* of the other node's close frame */
    struct wsrelay *next, *prev;
};

static struct wsrelay *relays; /* live WebSocket relays (loop thread) */

static void ws_unlink(struct wsrelay *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else if (relays == r)
        relays = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->next = r->prev = NULL;
}

static void ws_free(struct wsrelay *r)
{
    ws_unlink(r);
    if (r->io)
        pe_ev_io_stop(r->io);
    pe__ws_free(r->up);
    free(r->url);
    if (r->cred) {
        sodium_memzero(r->cred, strlen(r->cred));
        free(r->cred);
    }
    free(r->node_name);
    free(r->body);
    free(r);
}

/* Tell the other node we are done (best effort, the socket is
 * non-blocking) and let go. */
static void ws_end(struct wsrelay *r, unsigned code)
{
    if (r->up && !r->up_gone) {
        (void)pe__ws_close(
            r->up,
            (uint16_t)(code >= 1000 && code < 5000 && code != 1005 && code != 1006 ? code : 1000));
    }
    if (r->client) {
        pe_http_ws_close(r->client, code == 1005 || code == 1006 ? 1011 : code,
                         code == 1006   ? "the node that runs the sandbox went away"
                         : r->reason[0] ? r->reason
                                        : NULL);
        r->client = NULL;
    }
    ws_free(r);
}

static void up_message(void *ud, int opcode, const unsigned char *data, size_t len)
{
    struct wsrelay *r = ud;

    if (opcode == WSLAY_TEXT_FRAME || opcode == WSLAY_BINARY_FRAME) {
        if (r->client)
            pe_http_ws_send(r->client, opcode == WSLAY_BINARY_FRAME, data, len);
    } else if (opcode == WSLAY_CONNECTION_CLOSE) {
        r->status = len >= 2 ? (long)((data[0] << 8) | data[1]) : 1005;
        if (len > 2)
            snprintf(r->reason, sizeof(r->reason), "%.*s", (int)(len - 2), data + 2);
    }
}

static void ws_watch(struct wsrelay *r)
{
    uint32_t ev = 0;
    pe_err err;

    if (r->client == NULL || pe_http_ws_pending(r->client) < HIGH_WATER)
        ev |= EPOLLIN;
    if (pe__ws_want_write(r->up))
        ev |= EPOLLOUT;
    if (ev == r->events)
        return;
    r->events = ev;
    pe_err_clear(&err);
    if (pe_ev_io_modify(r->io, ev, &err) < 0)
        pe_log_warn("cluster relay: %s", err.msg);
}

/* One round of the other node's I/O; false once the relay is over. */
static bool up_io(struct wsrelay *r, short revents)
{
    r->status = 0;
    if (pe__ws_io(r->up, revents, up_message, r) < 0 || r->status) {
        unsigned code = r->status ? (unsigned)r->status : 1006;
        r->up_gone = true;
        ws_end(r, code);
        return false;
    }
    ws_watch(r);
    return true;
}

static void on_up(pe_ev_io *io, int fd, uint32_t events, void *ud)
{
    struct wsrelay *r = ud;
    short rev = 0;

    (void)io, (void)fd;
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        rev |= POLLIN;
    if (events & EPOLLOUT)
        rev |= POLLOUT;
    /* bytes that came with the handshake first, then whatever is there */
    while (up_io(r, rev) && pe__ws_buffered(r->up))
        rev = POLLIN;
}

static void client_message(pe_http_ws *ws, bool binary, const char *data, size_t len, void *ud)
{
    struct wsrelay *r = ud;

    (void)ws;
    if (pe__ws_send(r->up, binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME, data, len) < 0 &&
        !pe__ws_want_write(r->up)) {
        r->up_gone = true;
        ws_end(r, 1006);
        return;
    }
    ws_watch(r);
}

static void client_drain(pe_http_ws *ws, void *ud)
{
    (void)ws;
    ws_watch(ud);
}

static void client_close(pe_http_ws *ws, unsigned code, void *ud)
{
    struct wsrelay *r = ud;

    (void)ws;
    r->client = NULL;
    ws_end(r, code);
}

static void ws_connect_work(void *ud)
{
    struct wsrelay *r = ud;
    const char *hdrs[] = {r->cred, NULL};

    pe_err_clear(&r->err);
    (void)pe_ws_client_open(r->url, hdrs, CONNECT_TIMEOUT_MS, NULL, NULL, &r->up, &r->status,
                            &r->body, &r->err);
}

static void ws_connect_done(void *ud)
{
    static const pe_http_ws_callbacks cb = {
        .on_message = client_message, .on_drain = client_drain, .on_close = client_close};
    struct wsrelay *r = ud;
    pe_daemon *d = r->d;
    pe_err err;

    if (r->up == NULL) {
        if (r->body) {
            respond_relayed(r->req, r->status, "application/json; charset=utf-8", r->body,
                            strlen(r->body));
        } else {
            char msg[256];
            pe_log_warn("event=relay_failed path=%s node=%s reason=\"%s\"", r->req->path,
                        r->node_name, r->err.msg);
            snprintf(msg, sizeof(msg), "node %s, which runs the sandbox, did not answer",
                     r->node_name);
            pe_http_respond_error(r->req, 502, "NodeUnreachable", msg);
        }
        ws_free(r);
    } else if (d->draining) {
        pe_http_respond_error(r->req, 503, "ServiceUnavailable", "the daemon is shutting down");
        ws_end(r, 1001);
    } else if ((r->client = pe_http_upgrade_ws(r->req, &cb, MESSAGE_MAX, r)) == NULL) {
        ws_end(r, 1000);
    } else {
        r->req = NULL;
        pe_err_clear(&err);
        r->events = EPOLLIN;
        r->io = pe_ev_io_start(d->loop, pe__ws_fd(r->up), EPOLLIN, on_up, r, &err);
        if (r->io == NULL) {
            pe_log_warn("cluster relay: %s", err.msg);
            ws_end(r, 1011);
        } else {
            r->next = relays;
            if (relays)
                relays->prev = r;
            relays = r;
            if (pe__ws_buffered(r->up))
                on_up(r->io, pe__ws_fd(r->up), EPOLLIN, r);
        }
    }
    if (--d->inflight == 0 && d->draining)
        pe_ev_stop(d->loop);
}

static void relay_ws(pe_daemon *d, pe_http_request *req, struct wsrelay *r)
{
    pe_err err;

    pe_err_clear(&err);
    if (pe_ev_submit(d->loop, ws_connect_work, ws_connect_done, r, &err) < 0) {
        pe_http_respond_error(req, 503, "ServiceUnavailable", "the daemon is busy");
        ws_free(r);
        return;
    }
    d->inflight++;
    pe_http_defer(req);
}

/* ---- plain HTTP (SSE streams, input, resize) ---- */

struct hrelay {
    pe_daemon *d;
    pe_http_request *req; /* until answered */
    pe_http_stream *st;   /* an event stream, once started */
    char *url, *cred, *node_name, *ctype_in, *body;
    size_t body_len;
    const char *method; /* DELETE (a literal), else NULL: GET, or POST when post */
    int body_fd;        /* the body as a route wrote it to a file (dup), or -1 */
    off_t body_off;     /* read so far */
    struct curl_slist *headers;
    size_t answer_max;
    bool post;
    pe_cluster_relay_then_fn then; /* with then_did and then_t */
    char *then_did;
    pe_cluster_target then_t;
    pe_cluster_relay_edit_fn edit; /* with edit_ud, freed by edit_free */
    void *edit_ud;
    void (*edit_free)(void *);
    pthread_t thread;
    atomic_bool cancel;
    /* the answer as the thread saw it */
    long status;
    char *ctype;
    bool head_sent;    /* the thread posted the head */
    char *answer;      /* a non-stream answer, gathered on the loop */
    size_t answer_len; /* (ANSWER_MAX at most) */
    bool too_big;
    struct hrelay *next, *prev;
};

static struct hrelay *hrelays;

struct hevent {
    struct hrelay *h;
    enum { EV_HEAD, EV_DATA, EV_END } kind;
    long status;
    char *ctype;
    char *data;
    size_t len;
    char why[160];
};

static void h_unlink(struct hrelay *h)
{
    if (h->prev)
        h->prev->next = h->next;
    else if (hrelays == h)
        hrelays = h->next;
    if (h->next)
        h->next->prev = h->prev;
}

static void h_free(struct hrelay *h)
{
    h_unlink(h);
    free(h->url);
    if (h->cred) {
        sodium_memzero(h->cred, strlen(h->cred));
        free(h->cred);
    }
    free(h->node_name);
    free(h->ctype_in);
    free(h->body);
    if (h->body_fd >= 0)
        close(h->body_fd);
    free(h->then_did);
    pe_cluster_target_clear(&h->then_t);
    if (h->edit_free)
        h->edit_free(h->edit_ud);
    curl_slist_free_all(h->headers);
    free(h->ctype);
    free(h->answer);
    free(h);
}

static bool is_stream(const char *ctype)
{
    return ctype && (strncasecmp(ctype, "text/event-stream", 17) == 0 ||
                     strncasecmp(ctype, "application/connect+", 20) == 0 ||
                     strncasecmp(ctype, "application/x-ndjson", 20) == 0);
}

static void st_gone(pe_http_stream *st, void *ud)
{
    struct hrelay *h = ud;

    (void)st;
    h->st = NULL;
    atomic_store(&h->cancel, true);
}

static void on_hevent(void *ud)
{
    static const pe_http_stream_callbacks cb = {.on_close = st_gone};
    struct hevent *e = ud;
    struct hrelay *h = e->h;
    pe_daemon *d = h->d;

    switch (e->kind) {
    case EV_HEAD:
        h->status = e->status;
        h->ctype = e->ctype, e->ctype = NULL;
        if (h->req && is_stream(h->ctype) && h->status == 200) {
            h->st = pe_http_respond_stream(h->req, 200, h->ctype, NULL, &cb, h);
            h->req = NULL;
        }
        break;
    case EV_DATA:
        if (h->st) {
            if (pe_http_stream_pending(h->st) > HIGH_WATER) {
                /* as a terminal drops a viewer that does not keep up */
                pe_http_stream_close(h->st);
                h->st = NULL;
                atomic_store(&h->cancel, true);
            } else {
                pe_http_stream_write(h->st, e->data, e->len);
            }
        } else if (h->req && !h->too_big) {
            if (h->answer_len + e->len > h->answer_max) {
                h->too_big = true;
                atomic_store(&h->cancel, true);
            } else {
                h->answer = pe_xrealloc(h->answer, h->answer_len + e->len + 1);
                memcpy(h->answer + h->answer_len, e->data, e->len);
                h->answer_len += e->len;
            }
        }
        break;
    case EV_END:
        pthread_join(h->thread, NULL);
        if (e->status)
            h->status = e->status;
        if (h->req) {
            if (h->too_big || (e->why[0] && h->status == 0)) {
                char msg[256];
                if (e->why[0])
                    pe_log_warn("event=relay_failed path=%s node=%s reason=\"%s\"", h->req->path,
                                h->node_name, e->why);
                snprintf(msg, sizeof(msg), "node %s, which runs the sandbox, did not answer",
                         h->node_name);
                pe_http_respond_error(h->req, 502, "NodeUnreachable", msg);
            } else {
                size_t elen = 0;
                char *edited = h->edit ? h->edit(h->status, h->answer ? h->answer : "",
                                                 h->answer_len, &elen, h->edit_ud)
                                       : NULL;
                if (h->then)
                    h->then(d, h->then_did, &h->then_t, h->status, h->answer ? h->answer : "",
                            h->answer_len);
                if (edited)
                    respond_relayed(h->req, h->status, h->ctype, edited, elen);
                else
                    respond_relayed(h->req, h->status, h->ctype, h->answer ? h->answer : "",
                                    h->answer_len);
                free(edited);
            }
        }
        if (h->st)
            pe_http_stream_close(h->st);
        h_free(h);
        if (--d->inflight == 0 && d->draining)
            pe_ev_stop(d->loop);
        break;
    }
    free(e->ctype);
    free(e->data);
    free(e);
}

static void post_event(struct hrelay *h, struct hevent *e)
{
    e->h = h;
    pe_ev_post(h->d->loop, on_hevent, e);
}

static void post_head(struct hrelay *h, CURL *c)
{
    struct hevent *e = pe_xcalloc(1, sizeof(*e));
    const char *ct = NULL;

    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &e->status);
    curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
    e->kind = EV_HEAD;
    e->ctype = ct ? pe_xstrdup(ct) : NULL;
    h->head_sent = true;
    post_event(h, e);
}

struct hthread {
    struct hrelay *h;
    CURL *c;
};

static size_t h_body(char *data, size_t size, size_t nmemb, void *ud)
{
    struct hthread *t = ud;
    struct hevent *e;
    size_t n = size * nmemb;

    if (atomic_load(&t->h->cancel))
        return 0;
    if (!t->h->head_sent)
        post_head(t->h, t->c);
    e = pe_xcalloc(1, sizeof(*e));
    e->kind = EV_DATA;
    e->data = pe_xmalloc(n ? n : 1);
    memcpy(e->data, data, n);
    e->len = n;
    post_event(t->h, e);
    return n;
}

static int h_progress(void *ud, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    struct hthread *t = ud;

    (void)a, (void)b, (void)c, (void)d;
    return atomic_load(&t->h->cancel) ? 1 : 0;
}

static size_t h_read_body(char *buf, size_t size, size_t nmemb, void *ud)
{
    struct hrelay *h = ud;
    ssize_t n;

    if (atomic_load(&h->cancel))
        return CURL_READFUNC_ABORT;
    do
        n = pread(h->body_fd, buf, size * nmemb, h->body_off);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return CURL_READFUNC_ABORT;
    h->body_off += n;
    return (size_t)n;
}

static void *h_run(void *ud)
{
    struct hrelay *h = ud;
    struct hthread t = {.h = h, .c = curl_easy_init()};
    struct curl_slist *hdrs = NULL;
    struct hevent *end = pe_xcalloc(1, sizeof(*end));
    cleanup_free char *ct = h->ctype_in ? pe_xasprintf("Content-Type: %s", h->ctype_in) : NULL;
    CURLcode rc;

    end->kind = EV_END;
    if (t.c == NULL) {
        snprintf(end->why, sizeof(end->why), "libcurl: no handle");
        post_event(h, end);
        return NULL;
    }
    hdrs = curl_slist_append(hdrs, h->cred);
    hdrs = curl_slist_append(hdrs, "Expect:");
    if (ct)
        hdrs = curl_slist_append(hdrs, ct);
    for (struct curl_slist *x = h->headers; x; x = x->next)
        hdrs = curl_slist_append(hdrs, x->data);
    curl_easy_setopt(t.c, CURLOPT_URL, h->url);
    curl_easy_setopt(t.c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(t.c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(t.c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(t.c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(t.c, CURLOPT_CONNECTTIMEOUT_MS, (long)CONNECT_TIMEOUT_MS);
    curl_easy_setopt(t.c, CURLOPT_WRITEFUNCTION, h_body);
    curl_easy_setopt(t.c, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(t.c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(t.c, CURLOPT_XFERINFOFUNCTION, h_progress);
    curl_easy_setopt(t.c, CURLOPT_XFERINFODATA, &t);
    if (h->post && h->body_fd >= 0) {
        curl_easy_setopt(t.c, CURLOPT_POST, 1L);
        curl_easy_setopt(t.c, CURLOPT_READFUNCTION, h_read_body);
        curl_easy_setopt(t.c, CURLOPT_READDATA, h);
        curl_easy_setopt(t.c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)h->body_len);
    } else if (h->post) {
        curl_easy_setopt(t.c, CURLOPT_POST, 1L);
        curl_easy_setopt(t.c, CURLOPT_POSTFIELDS, h->body ? h->body : "");
        curl_easy_setopt(t.c, CURLOPT_POSTFIELDSIZE, (long)h->body_len);
    } else if (h->method) {
        curl_easy_setopt(t.c, CURLOPT_CUSTOMREQUEST, h->method); /* DELETE */
    }
    rc = curl_easy_perform(t.c);
    if (rc == CURLE_OK || rc == CURLE_WRITE_ERROR || rc == CURLE_ABORTED_BY_CALLBACK)
        curl_easy_getinfo(t.c, CURLINFO_RESPONSE_CODE, &end->status);
    if (rc == CURLE_OK && !h->head_sent)
        post_head(h, t.c);
    if (rc != CURLE_OK && !atomic_load(&h->cancel))
        snprintf(end->why, sizeof(end->why), "%s", curl_easy_strerror(rc));
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(t.c);
    post_event(h, end);
    return NULL;
}

static void relay_http(pe_daemon *d, pe_http_request *req, struct hrelay *h)
{
    const char *ct = pe_http_header(req, "Content-Type");
    sigset_t all, old;
    int rc;

    struct stat st;
    int bfd = pe_http_body_fd(req);

    h->post = strcmp(req->method, "POST") == 0;
    h->method = strcmp(req->method, "DELETE") == 0 ? "DELETE" : NULL;
    h->answer_max = strcmp(req->path, "/files") == 0 ? FILES_ANSWER_MAX : ANSWER_MAX;
    for (size_t i = 0; i < PE_ARRAY_LEN(FORWARDED_HEADERS); i++) {
        const char *v = pe_http_header(req, FORWARDED_HEADERS[i]);
        cleanup_free char *line = v ? pe_xasprintf("%s: %s", FORWARDED_HEADERS[i], v) : NULL;
        if (line)
            h->headers = curl_slist_append(h->headers, line);
    }
    if (h->post && bfd >= 0 && fstat(bfd, &st) == 0 &&
        (h->body_fd = fcntl(bfd, F_DUPFD_CLOEXEC, 0)) >= 0) {
        /* a body a route wrote to a file (a decoded multipart part): as it is */
        h->body_len = (size_t)st.st_size;
        h->ctype_in = pe_xstrdup("application/octet-stream");
    } else if (h->post) {
        h->body = pe_xmalloc(req->body_len + 1);
        memcpy(h->body, req->body, req->body_len);
        h->body_len = req->body_len;
        h->ctype_in = ct ? pe_xstrdup(ct) : NULL;
    }
    /* the thread must not take the signals the loop's signalfd waits for */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&h->thread, NULL, h_run, h);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        pe_http_respond_error(req, 503, "ServiceUnavailable", "the daemon is busy");
        h_free(h);
        return;
    }
    h->next = hrelays;
    if (hrelays)
        hrelays->prev = h;
    hrelays = h;
    d->inflight++;
    pe_http_defer(req);
}

/* ---- the entry ---- */

void pe_cluster_relay_route(pe_daemon *d, pe_http_request *req, const char *did,
                            const pe_cluster_target *t)
{
    pe_cluster_relay_route_then(d, req, did, t, NULL);
}

struct edit {
    pe_cluster_relay_edit_fn fn;
    void *ud;
    void (*ud_free)(void *);
};

static void relay_route(pe_daemon *d, pe_http_request *req, const char *did,
                        const pe_cluster_target *t, pe_cluster_relay_then_fn then,
                        const struct edit *edit)
{
    const char *upgrade = pe_http_header(req, "Upgrade");
    char nonce[33];
    char *cred, *url;

    if (t->down) {
        char msg[512];

        snprintf(msg, sizeof(msg),
                 "node %s is down: the sandbox runs there and cannot be reached until it is back",
                 t->node_name);
        pe_http_respond_error(req, 503, "NodeDown", msg);
        if (edit->ud_free)
            edit->ud_free(edit->ud);
        return;
    }
    cred = pe_cluster_cred_mint(d->cluster, t->node_id, did, req->path, nonce);
    url = url_of(t->address, req);
    if (upgrade && strcasecmp(upgrade, "websocket") == 0) {
        struct wsrelay *r = pe_xcalloc(1, sizeof(*r));

        r->d = d;
        r->req = req;
        r->url = url;
        r->cred = pe_xasprintf("Authorization: %s", cred);
        r->node_name = pe_xstrdup(t->node_name);
        if (edit->ud_free) /* a WebSocket's messages are not edited */
            edit->ud_free(edit->ud);
        relay_ws(d, req, r);
    } else {
        struct hrelay *h = pe_xcalloc(1, sizeof(*h));

        h->body_fd = -1;
        h->d = d;
        if (then) {
            h->then = then;
            h->then_did = pe_xstrdup(did);
            h->then_t.node_id = pe_xstrdup(t->node_id);
            h->then_t.node_name = pe_xstrdup(t->node_name);
            h->then_t.address = pe_xstrdup(t->address);
        }
        h->edit = edit->fn;
        h->edit_ud = edit->ud;
        h->edit_free = edit->ud_free;
        h->req = req;
        h->url = url;
        h->cred = pe_xasprintf("Authorization: %s", cred);
        h->node_name = pe_xstrdup(t->node_name);
        relay_http(d, req, h);
    }
    sodium_memzero(cred, strlen(cred));
    free(cred);
}

void pe_cluster_relay_route_then(pe_daemon *d, pe_http_request *req, const char *did,
                                 const pe_cluster_target *t, pe_cluster_relay_then_fn then)
{
    static const struct edit none = {0};

    relay_route(d, req, did, t, then, &none);
}

void pe_cluster_relay_route_edit(pe_daemon *d, pe_http_request *req, const char *did,
                                 const pe_cluster_target *t, pe_cluster_relay_edit_fn edit,
                                 void *ud, void (*ud_free)(void *))
{
    const struct edit e = {.fn = edit, .ud = ud, .ud_free = ud_free};

    relay_route(d, req, did, t, NULL, &e);
}

void pe_cluster_relay_drain(pe_daemon *d)
{
    struct wsrelay *next;

    (void)d;
    for (struct wsrelay *r = relays; r; r = next) {
        next = r->next;
        ws_end(r, 1001);
    }
    for (struct hrelay *h = hrelays; h; h = h->next)
        atomic_store(&h->cancel, true);
}
