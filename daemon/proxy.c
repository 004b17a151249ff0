/* The preview proxy: HTTP and WebSocket from a preview URL to a port of a
 * sandbox (issue 5; docs/design/ports.md, docs/design/threat-model.md).
 *
 *   http://<port>-[<name>-]<tag>.localhost:<daemon port>/<path>  (Host form, previewUrl)
 *   http://<daemon host:port>/p/<sandbox id or tag>/<port>/<path>   (path form)
 *
 * The tag (preview_hosts) is unique across users, so a preview can never
 * resolve to another user's sandbox (names are unique per owner only).
 *
 * Who may open a private preview: the owner's API token as a Bearer
 * header (programs), the owner's preview cookie (browsers), or the port's
 * share secret. API tokens are never taken from a URL: a page served from
 * the sandbox would read it from location.href and every subresource
 * would send it in Referer. A browser gets the cookie from a one-time
 * sign-in code (io.pocketenv.port.createPreviewLink, which the web page's
 * preview.html calls with the token it keeps), exchanged at
 * <scope>__pocketenv/auth?pe_code=...&to=PATH: the answer sets the cookie
 * and redirects to PATH, so the code is out of the address bar before any
 * sandbox content is served. A share URL's ?pe_secret= is swapped for its
 * cookie the same way for browsers. The cookie is a token bound to this
 * port of this sandbox (lib/auth: scope "preview", aud "<id>:<port>"),
 * HttpOnly, never forwarded: it opens this preview and nothing else.
 * Every answer carries Referrer-Policy: no-referrer.
 *
 * One struct preq per request, on the loop thread throughout:
 *   handler: parse the target, read credentials (Bearer, the preview
 *            cookie, a sign-in code, ?pe_secret= or its cookie), build the
 *            upstream request head
 *   worker:  the store says which exposed port that is and whether these
 *            credentials open it; the runtime gives the sandbox's address
 *            (a provider's sandbox whose preview is ours, kubernetes:
 *            its adapter opens a stream to the port, port-forward, and
 *            that socket stands for the connection)
 *   loop:    non-blocking connect, write the request, read the answer's
 *            head, then stream the body back (pe_http_respond_stream) or,
 *            on 101, splice both directions (pe_http_upgrade_raw).
 *
 * Why a hand-written HTTP/1.1 client: libmicrohttpd serves but does not
 * proxy, and libcurl's easy/multi interface does not hand over the socket
 * after a 101. We parse only the answer's head (status line and header
 * lines, at most HEAD_MAX bytes). Requests go out as HTTP/1.0 with
 * Connection: close (what nginx's proxy does by default), so the answer's
 * body is delimited by Content-Length or by the close and never chunked;
 * WebSocket upgrades go out as HTTP/1.1, as they must, and a non-101
 * answer to them that is chunked is refused with 502.
 *
 * A provider's https:// preview host (Hopx, Runloop) is reached over TLS
 * on the same socket (daemon/proxy-tls.c: verified against the system's
 * CAs and the provider's previewCaFile, host name checked, SNI sent): a
 * PH_TLS handshake after the connect, then every upstream read and write
 * goes through up_recv / up_send, whose rd_want / wr_want say which event
 * the next try waits for. A failed handshake is a 502 naming the host and
 * the reason, before a byte of the request (and its tunnel token) left.
 *
 * Limits: the request body is read only once the credentials opened the
 * port (the head callback holds it meanwhile), into memory up to BODY_MAX (413
 * beyond); the answer's head up to HEAD_MAX (502 beyond); the answer's
 * body is streamed with backpressure (upstream reads stop while more than
 * PENDING_MAX bytes wait for the client); connect + head within
 * HEAD_TIMEOUT_S (504). Nothing here can take the daemon down: every
 * failure ends this request only. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>
#include <fcntl.h>

#include "cluster.h"
#include "core/log.h"
#include "core/util.h"
#include "daemon.h"
#include "pause.h"
#include "ports.h"
#include "pocketenv/store-ports.h"
#include "proxy-tls.h"

#define BODY_MAX (10 * 1024 * 1024)
#define HEAD_MAX (64 * 1024)
#define READ_BLOCK (64 * 1024)
#define PENDING_MAX (1024 * 1024)
#define HEAD_TIMEOUT_S 60
#define MAX_RESP_HEADERS 100
#define HOST_SUFFIX ".localhost"
#define TOKEN_PARAM "pe_token"      /* refused: API tokens never ride in URLs */
#define SECRET_PARAM "pe_secret"    /* a share URL's secret; also its cookie */
#define CODE_PARAM "pe_code"        /* one-time sign-in code */
#define TO_PARAM "to"               /* where the sign-in redirects, a path */
#define PREVIEW_COOKIE "pe_preview" /* the owner's preview session */
#define AUTH_PATH "__pocketenv/auth"
#define SESSION_TTL (12 * 3600)
#define SIGNIN_PAGE "/preview.html"
#define NODE_HEADER "X-Pocketenv-Node-Credential" /* another node's (daemon/cluster.h) */
#define PATH_FORM_CSP "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"

static char *xstrndup(const char *s, size_t n)
{
    char *r = pe_xmalloc(n + 1);

    memcpy(r, s, n);
    r[n] = '\0';
    return r;
}

struct buf {
    char *data;
    size_t len, off, cap;
};

enum phase { PH_CONNECT, PH_TLS, PH_SEND, PH_HEAD, PH_BODY, PH_RELAY };

struct preq {
    pe_daemon *d;
    enum phase phase;
    pe_http_request *req; /* NULL once answered */
    char *ident;          /* sandbox id or preview tag from the URL */
    char *name_hint;      /* the name part of a Host form, or NULL */
    int port;
    char *scope; /* cookie Path: "/" (Host form) or "/p/<ident>/<port>/" */
    char *did;   /* a verified API token's subject (Bearer), or NULL */
    int64_t did_iat;
    bool bad_token;
    char *cookie;   /* the preview cookie presented, or NULL */
    char *code;     /* a sign-in code (AUTH_PATH only), or NULL */
    char *to;       /* where AUTH_PATH redirects, or NULL */
    bool auth_path; /* the request is for <scope>AUTH_PATH */
    bool browser;   /* a navigation: GET/HEAD of an HTML page, no upgrade */
    char *secret;   /* presented secret, or NULL */
    bool secret_in_url;
    char *self_url; /* this request's URL without our parameters */
    char *signin;   /* the web page's sign-in URL for this preview, or NULL */
    char *set_cookie;
    char *location; /* a rewritten Location of the answer, or the redirect of a verdict */
    bool upgrade;
    bool head_only;       /* HEAD: no body whatever the headers say */
    const char *fwd_path; /* the path the app sees (in the request's strings) */
    bool via_bearer;      /* the Authorization header is our token: not forwarded */
    struct buf out;       /* the request to send upstream */
    /* the worker's verdict */
    unsigned status; /* 0: go ahead */
    char *err_name, *err_msg;
    char *addr;
    char *sandbox_id; /* held busy (no idle stop) while connected */
    bool resumed;     /* it was paused: this request resumed it (pause.c) */
    /* who opened it, if a user's token or cookie did: revoking the user's
     * tokens ends the connection (pe_daemon_proxy_recheck) */
    char *opener;
    int64_t opener_iat;
    /* Another node runs the sandbox: the request goes to that node's proxy
     * (its address up_host:up_port), in the path form, with a node
     * credential for that path carrying the owner's DID (this node checked
     * the caller); or it came that way (via_node: the owner's, one hop). */
    bool remote, via_node, bad_node_cred;
    char *node_cred, *remote_path;
    /* A provider runs the sandbox and its preview is ours to serve
     * (pe_provider_preview_link.proxy): the request goes to the provider's
     * URL (remote set too: addr, up_port, remote_path), with its Host and
     * the headers the link wants (a tunnel token: never handed out). */
    bool provider;
    char *up_host, *link_headers;
    int up_port;
    /* An https:// link: TLS over fd (daemon/proxy-tls.c), verified for
     * tls_host. rd_want / wr_want: the event the last read / write on fd
     * waits for (EPOLLIN / EPOLLOUT but for TLS, which may need to write
     * to read or the reverse). */
    SSL *ssl;
    char *tls_host;
    uint32_t rd_want, wr_want;
    struct preq *lnext, *lprev; /* live: connected upstream */
    bool linked;
    /* upstream */
    int fd;
    pe_ev_io *io;
    pe_ev_timer *timer;
    struct buf in;     /* answer head, then body bytes read with it */
    int64_t remaining; /* body bytes still due; -1: until close */
    pe_http_stream *st;
    /* raw upgrade */
    pe_http_raw *raw;
    int cfd; /* the client's socket after the 101 */
    pe_ev_io *cio;
    struct buf to_up, to_client;
    bool up_eof, client_eof;
};

static void buf_add(struct buf *b, const void *data, size_t len)
{
    if (len == 0)
        return;
    if (b->len + len > b->cap) {
        b->cap = (b->len + len) * 2 + 256;
        b->data = pe_xrealloc(b->data, b->cap);
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
}

static void buf_str(struct buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

static void buf_free(struct buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

/* Requests connected upstream, for pe_daemon_proxy_recheck. Loop thread
 * only, like every preq. */
static struct preq *live;

static void live_unlink(struct preq *p)
{
    if (!p->linked)
        return;
    if (p->lprev)
        p->lprev->lnext = p->lnext;
    else
        live = p->lnext;
    if (p->lnext)
        p->lnext->lprev = p->lprev;
    p->linked = false;
}

static void preq_free(struct preq *p)
{
    live_unlink(p);
    free(p->opener);
    if (p->sandbox_id)
        pe_daemon_release(p->d, p->sandbox_id);
    free(p->sandbox_id);
    pe_ev_io_stop(p->io);
    pe_ev_io_stop(p->cio);
    pe_ev_timer_stop(p->timer);
    SSL_free(p->ssl);
    if (p->fd >= 0)
        close(p->fd);
    if (p->raw)
        pe_http_raw_close(p->raw);
    free(p->ident);
    free(p->name_hint);
    free(p->scope);
    free(p->did);
    if (p->cookie)
        explicit_bzero(p->cookie, strlen(p->cookie));
    free(p->cookie);
    free(p->code);
    free(p->to);
    free(p->secret);
    free(p->self_url);
    free(p->signin);
    free(p->set_cookie);
    free(p->location);
    free(p->err_name);
    free(p->err_msg);
    free(p->addr);
    if (p->node_cred)
        explicit_bzero(p->node_cred, strlen(p->node_cred));
    free(p->node_cred);
    free(p->remote_path);
    free(p->up_host);
    free(p->tls_host);
    if (p->link_headers)
        explicit_bzero(p->link_headers, strlen(p->link_headers));
    free(p->link_headers);
    buf_free(&p->out);
    buf_free(&p->in);
    buf_free(&p->to_up);
    buf_free(&p->to_client);
    free(p);
}

/* Headers of every answer the proxy makes itself: never tell a URL on. */
static const char *const OWN_HEADERS[] = {"Referrer-Policy", "no-referrer", "Cache-Control",
                                          "no-store", NULL};

/* A JSON error {"error", "message"} with OWN_HEADERS. */
static void send_error(pe_http_request *req, unsigned status, const char *name, const char *msg)
{
    json_t *m = json_string(msg);
    json_t *v = json_pack("{s:s,s:o}", "error", name, "message",
                          m ? m : json_string("request contains invalid UTF-8"));
    char *text = json_dumps(v, JSON_COMPACT);

    json_decref(v);
    if (text == NULL)
        abort(); /* allocation failure */
    pe_http_respond(req, status, "application/json; charset=utf-8", text, strlen(text),
                    OWN_HEADERS);
    free(text);
}

/* Answer with a JSON error and end the request (before any stream). */
static void fail(struct preq *p, unsigned status, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail(struct preq *p, unsigned status, const char *name, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (p->req)
        send_error(p->req, status, name, msg);
    p->req = NULL;
    preq_free(p);
}

/* Answer with a redirect (and a cookie) and end the request. */
static void redirect(struct preq *p, unsigned status, const char *location, const char *cookie)
{
    const char *const headers[] = {"Location",
                                   location,
                                   "Referrer-Policy",
                                   "no-referrer",
                                   "Cache-Control",
                                   "no-store",
                                   cookie ? "Set-Cookie" : NULL,
                                   cookie,
                                   NULL};

    if (p->req)
        pe_http_respond(p->req, status, NULL, NULL, 0, headers);
    p->req = NULL;
    preq_free(p);
}

/* ---- the request: target and credentials -------------------------------- */

/* Characters sent as they are in a path or query; everything else is
 * percent-encoded again (lib/http hands us the decoded path). */
static void put_encoded(struct buf *b, const char *s, bool path)
{
    static const char hex[] = "0123456789ABCDEF";

    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            strchr("-._~!$'()*,;:@", c) ||
            (path && (c == '/' || c == '&' || c == '=' || c == '+'))) {
            buf_add(b, s, 1);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            buf_add(b, e, 3);
        }
    }
}

struct query_ctx {
    struct buf *b;
    bool first;
};

static void put_arg(const char *name, const char *value, void *ud)
{
    struct query_ctx *q = ud;

    if (strcmp(name, TOKEN_PARAM) == 0 || strcmp(name, SECRET_PARAM) == 0 ||
        strcmp(name, CODE_PARAM) == 0)
        return; /* ours: never forwarded */
    buf_str(q->b, q->first ? "?" : "&");
    q->first = false;
    put_encoded(q->b, name, false);
    if (value) {
        buf_str(q->b, "=");
        put_encoded(q->b, value, false);
    }
}

/* The value of cookie name in a Cookie header, malloc'd, or NULL. */
static char *cookie_get(const char *header, const char *name)
{
    size_t nl = strlen(name);

    for (const char *c = header; c && *c;) {
        while (*c == ' ' || *c == ';')
            c++;
        const char *end = strchr(c, ';');
        size_t len = end ? (size_t)(end - c) : strlen(c);
        if (len > nl && strncmp(c, name, nl) == 0 && c[nl] == '=')
            return xstrndup(c + nl + 1, len - nl - 1);
        c = end;
    }
    return NULL;
}

/* The Cookie header without our cookies; NULL if nothing is left. */
static char *cookie_filter(const char *header)
{
    struct buf b = {0};
    char nul = '\0';

    for (const char *c = header; c && *c;) {
        while (*c == ' ' || *c == ';')
            c++;
        const char *end = strchr(c, ';');
        size_t len = end ? (size_t)(end - c) : strlen(c);
        if (len && strncmp(c, TOKEN_PARAM "=", strlen(TOKEN_PARAM) + 1) != 0 &&
            strncmp(c, SECRET_PARAM "=", strlen(SECRET_PARAM) + 1) != 0 &&
            strncmp(c, PREVIEW_COOKIE "=", strlen(PREVIEW_COOKIE) + 1) != 0) {
            if (b.len)
                buf_str(&b, "; ");
            buf_add(&b, c, len);
        }
        c = end;
    }
    if (b.len == 0) {
        buf_free(&b);
        return NULL;
    }
    buf_add(&b, &nul, 1);
    return b.data;
}

static bool hop_by_hop(const char *name, const char *connection)
{
    static const char *const hop[] = {"Connection",          "Keep-Alive", "Proxy-Authenticate",
                                      "Proxy-Authorization", "TE",         "Trailer",
                                      "Transfer-Encoding",   "Upgrade",    "Proxy-Connection"};
    size_t nl = strlen(name);

    for (size_t i = 0; i < PE_ARRAY_LEN(hop); i++)
        if (strcasecmp(name, hop[i]) == 0)
            return true;
    /* and every header the Connection header names */
    for (const char *c = connection; c && *c;) {
        while (*c == ' ' || *c == ',')
            c++;
        if (strncasecmp(c, name, nl) == 0 && (c[nl] == '\0' || c[nl] == ',' || c[nl] == ' '))
            return true;
        c = strchr(c, ',');
    }
    return false;
}

struct head_ctx {
    struct preq *p;
    const char *connection;
    bool via_bearer;
    const char *xff;
};

static void put_header(const char *name, const char *value, void *ud)
{
    struct head_ctx *h = ud;
    struct buf *b = &h->p->out;
    cleanup_free char *kept = NULL;

    if (hop_by_hop(name, h->connection) || strcasecmp(name, "Content-Length") == 0 ||
        strncasecmp(name, "X-Forwarded-", 12) == 0 || strcasecmp(name, "Forwarded") == 0 ||
        strcasecmp(name, NODE_HEADER) == 0 || (h->p->remote && strcasecmp(name, "Host") == 0) ||
        (h->via_bearer && strcasecmp(name, "Authorization") == 0))
        return;
    if (strcasecmp(name, "Cookie") == 0) {
        kept = cookie_filter(value);
        if (kept == NULL)
            return;
        value = kept;
    }
    if (strpbrk(value, "\r\n") || strpbrk(name, "\r\n: "))
        return; /* MHD refuses these already; never let one split the head */
    buf_str(b, name);
    buf_str(b, ": ");
    buf_str(b, value);
    buf_str(b, "\r\n");
}

/* Credentials, read here and checked against the port's row by the
 * worker: an API token as Bearer (an Authorization header that is not
 * one of our tokens belongs to the app and is passed on), the preview
 * cookie, a sign-in code on AUTH_PATH, the share secret from the URL or
 * its cookie. */
static void read_credentials(struct preq *p, pe_http_request *req, bool *via_bearer)
{
    const char *auth = req->authorization, *cookies = pe_http_header(req, "Cookie");
    const char *qsec = pe_http_query(req, SECRET_PARAM), *v;
    cleanup_free char *csec = cookie_get(cookies, SECRET_PARAM);

    *via_bearer = false;
    if ((v = pe_http_header(req, NODE_HEADER)) != NULL) {
        /* another node checked the caller: the owner's, for this path */
        char nonce[33];
        enum pe_cluster_cred_result r =
            pe_cluster_cred_verify(p->d, v, req->path, true, &p->did, nonce);
        if (r == PE_CLUSTER_CRED_OK) {
            p->via_node = true;
            p->did_iat = pe_store_now_ms() / 1000;
            return;
        }
        pe_log_warn("auth %s: preview %s node credential refused: %s", req->client_addr, req->path,
                    pe_cluster_cred_result_name(r));
        p->bad_node_cred = true;
        return;
    }
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
        if (pe_auth_token_verify_iat(p->d->auth, auth + 7, PE_AUTH_SCOPE_API, NULL, &p->did,
                                     &p->did_iat, NULL) == PE_AUTH_OK)
            *via_bearer = true;
        else
            p->bad_token = true;
    }
    p->cookie = cookie_get(cookies, PREVIEW_COOKIE);
    if (p->auth_path) {
        if ((v = pe_http_query(req, CODE_PARAM)) != NULL)
            p->code = pe_xstrdup(v);
        if ((v = pe_http_query(req, TO_PARAM)) != NULL)
            p->to = pe_xstrdup(v);
    }
    if (qsec || csec) {
        p->secret = pe_xstrdup(qsec ? qsec : csec);
        p->secret_in_url = qsec != NULL;
    }
}

/* This request's path and query, encoded, without our parameters: where a
 * browser goes once a secret in its URL became a cookie. */
static char *self_url(pe_http_request *req)
{
    struct buf b = {0};
    struct query_ctx q = {&b, true};
    char nul = '\0';

    put_encoded(&b, req->path[0] == '/' ? req->path : "/", true);
    pe_http_query_each(req, put_arg, &q);
    buf_add(&b, &nul, 1);
    return b.data;
}

static void build_request(struct preq *p, pe_http_request *req, const char *path, bool via_bearer)
{
    struct query_ctx q = {&p->out, true};
    struct head_ctx h = {p, pe_http_header(req, "Connection"), via_bearer,
                         pe_http_header(req, "X-Forwarded-For")};
    const char *host = pe_http_header(req, "Host");
    const char *up = pe_http_header(req, "Upgrade");
    char num[32];

    buf_str(&p->out, req->method);
    buf_str(&p->out, " ");
    put_encoded(&p->out, path[0] == '/' ? path : "/", true);
    if (path[0] != '/' && path[0])
        put_encoded(&p->out, path, true);
    pe_http_query_each(req, put_arg, &q);
    buf_str(&p->out, p->upgrade ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n");
    pe_http_header_each(req, put_header, &h);
    if (p->upgrade) {
        buf_str(&p->out, "Connection: Upgrade\r\nUpgrade: ");
        buf_str(&p->out, up);
        buf_str(&p->out, "\r\n");
    } else {
        buf_str(&p->out, "Connection: close\r\n");
    }
    buf_str(&p->out, "X-Forwarded-For: ");
    if (h.xff && !strpbrk(h.xff, "\r\n")) {
        buf_str(&p->out, h.xff);
        buf_str(&p->out, ", ");
    }
    buf_str(&p->out, req->client_addr);
    buf_str(&p->out, "\r\nX-Forwarded-Proto: http\r\n");
    if (p->provider) {
        buf_str(&p->out, "Host: ");
        buf_str(&p->out, p->up_host);
        buf_str(&p->out, "\r\n");
        if (p->link_headers)
            buf_str(&p->out, p->link_headers);
    } else if (p->remote) {
        buf_str(&p->out, "Host: ");
        buf_str(&p->out, p->addr);
        buf_str(&p->out, "\r\n" NODE_HEADER ": ");
        buf_str(&p->out, p->node_cred);
        buf_str(&p->out, "\r\n");
    }
    if (host && !strpbrk(host, "\r\n")) {
        buf_str(&p->out, "X-Forwarded-Host: ");
        buf_str(&p->out, host);
        buf_str(&p->out, "\r\n");
    }
    if (strcmp(p->scope, "/") != 0 && !p->via_node) {
        buf_str(&p->out, "X-Forwarded-Prefix: ");
        buf_add(&p->out, p->scope, strlen(p->scope) - 1);
        buf_str(&p->out, "\r\n");
    }
    if (req->body_len > 0 || !strcmp(req->method, "POST") || !strcmp(req->method, "PUT") ||
        !strcmp(req->method, "PATCH")) {
        snprintf(num, sizeof(num), "Content-Length: %zu\r\n", req->body_len);
        buf_str(&p->out, num);
    }
    buf_str(&p->out, "\r\n");
    buf_add(&p->out, req->body, req->body_len);
}

/* ---- the worker: which port, may this caller, where is it --------------- */

static bool secret_eq(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = (unsigned char)(la != lb);

    for (size_t i = 0; i < la && i < lb; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

static void verdict(struct preq *p, unsigned status, const char *name, const char *msg)
{
    p->status = status;
    p->err_name = pe_xstrdup(name);
    p->err_msg = pe_xstrdup(msg);
}

/* A redirect as the verdict (status 302/303), with p->set_cookie if set. */
static void verdict_redirect(struct preq *p, unsigned status, const char *location)
{
    p->status = status;
    free(p->location);
    p->location = pe_xstrdup(location);
}

/* The name part of a Host form is cosmetic (the tag decides), but it must
 * be the sandbox's: no http://8080-bank-<tag>.localhost for a sandbox
 * named web. Host names arrive lower-cased by browsers. */
static bool name_matches(const char *name, const char *hint)
{
    return name && strlen(name) == strlen(hint) && strcasecmp(name, hint) == 0;
}

/* Where AUTH_PATH may send the browser: a path under this preview's scope,
 * not "//host" (another site) nor anything a browser reads as such. */
static bool to_ok(const struct preq *p, const char *to)
{
    size_t sl = strlen(p->scope);

    if (to == NULL || strncmp(to, p->scope, sl) != 0 || to[1] == '/' || to[1] == '\\')
        return false;
    for (const char *c = to; *c; c++)
        if ((unsigned char)*c < 0x21 || *c == '\\' || *c == 0x7f)
            return false;
    return true;
}

/* <scope>AUTH_PATH?pe_code=&to=: a one-time code of the owner for this
 * port becomes the preview cookie, and the browser goes to `to`. */
static void exchange(pe_daemon_job *job, struct preq *p, const pe_store_port *row, const char *aud)
{
    cleanup_free char *did = NULL, *jwt = NULL;
    pe_err err;

    pe_err_clear(&err);
    if (p->code == NULL || !to_ok(p, p->to)) {
        verdict(p, 400, "InvalidRequest",
                "a preview sign-in link takes ?" CODE_PARAM "= and ?" TO_PARAM
                "= (a path of this preview): open the preview again");
        return;
    }
    if (pe_auth_token_verify_aud(job->d->auth, p->code, PE_AUTH_SCOPE_PREVIEW_CODE, aud, true, &did,
                                 &err) != PE_AUTH_OK ||
        strcmp(did, row->owner_did) != 0) {
        pe_log_info("event=preview_signin_refused sandbox=%s port=%d why=\"%s\"", row->sandbox_id,
                    p->port, err.msg);
        verdict(p, 403, "Forbidden",
                "this sign-in link has expired, was used already or is for another preview: "
                "open the preview again");
        return;
    }
    if (pe_auth_token_mint_aud(job->d->auth, did, SESSION_TTL, PE_AUTH_SCOPE_PREVIEW, aud, &jwt,
                               &err) < 0) {
        pe_log_error("proxy: %s", err.msg);
        verdict(p, 500, "InternalServerError", "Internal Server Error");
        return;
    }
    p->set_cookie = pe_xasprintf(PREVIEW_COOKIE "=%s; Path=%s; Max-Age=%d; HttpOnly; SameSite=Lax",
                                 jwt, p->scope, SESSION_TTL);
    explicit_bzero(jwt, strlen(jwt));
    verdict_redirect(p, 303, p->to);
}

/* Does the preview cookie open this port for its owner? Then it is the
 * connection's opener. */
static bool cookie_opens(struct preq *p, const char *aud, const char *owner)
{
    cleanup_free char *did = NULL;
    int64_t iat = 0;

    if (pe_auth_token_verify_iat(p->d->auth, p->cookie, PE_AUTH_SCOPE_PREVIEW, aud, &did, &iat,
                                 NULL) != PE_AUTH_OK ||
        strcmp(did, owner) != 0)
        return false;
    p->opener = pe_steal_ptr(&did);
    p->opener_iat = iat;
    return true;
}

/* No credential opened the port: say why, or send a browser to sign in. */
static void refuse(struct preq *p, bool other_user)
{
    if (other_user)
        verdict(p, 404, "NotFound", "no such exposed port"); /* another user's: as missing */
    else if (p->secret)
        verdict(p, 403, "Forbidden", "wrong secret for this port");
    else if (p->bad_token)
        verdict(p, 401, "InvalidToken", "invalid or expired token");
    else if (p->browser && p->signin)
        verdict_redirect(p, 302, p->signin);
    else
        verdict(p, 401, "AuthenticationRequired",
                "this preview is private: send the owner's API token (Authorization: Bearer), "
                "open it in a browser signed in to the daemon's web page, or use its share URL");
}

/* Another node runs row's sandbox: 1 with p set to go there, -1 with
 * p->err_msg when that node is down, 0 when it is ours. */
static int remote_target(pe_daemon_job *job, pe_store *s, struct preq *p, const pe_store_port *row)
{
    pe_store_sandbox sb = {0};
    pe_cluster_target t;
    const char *host;
    char nonce[33], *cred, *colon;
    pe_err err;

    pe_err_clear(&err);
    if (pe_store_sandbox_get(s, row->sandbox_id, &sb, &err) < 0 ||
        pe_cluster_where(job->d, s, &sb, &t) == 0) {
        pe_store_sandbox_clear(&sb);
        return 0;
    }
    pe_store_sandbox_clear(&sb);
    host = t.address ? strstr(t.address, "://") : NULL;
    if (t.down || host == NULL || strncmp(t.address, "http://", 7) != 0) {
        free(p->err_msg);
        p->err_msg = pe_xasprintf(
            t.down
                ? "node %s is down: the sandbox runs there and cannot be reached until it is back"
                : "node %s has no http:// address the preview can reach",
            t.node_name);
        pe_cluster_target_clear(&t);
        return -1;
    }
    /* host[:port] of the node's address: the proxy speaks plain HTTP */
    host += 3;
    p->addr = xstrndup(host, strcspn(host, "/"));
    colon = strrchr(p->addr, ':');
    p->up_port = colon ? atoi(colon + 1) : 80;
    p->remote_path = pe_xasprintf("/p/%s/%d%s", row->sandbox_id, p->port, p->fwd_path);
    cred = pe_cluster_cred_mint(job->d->cluster, t.node_id, row->owner_did, p->remote_path, nonce);
    p->node_cred = pe_xstrdup(cred + strlen(PE_CLUSTER_SCHEME));
    explicit_bzero(cred, strlen(cred));
    free(cred);
    p->remote = true;
    pe_cluster_target_clear(&t);
    return 1;
}

/* "Name: value\r\n" of one of link's headers into b (none: nothing). */
static void link_header(struct buf *b, const char *name, const char *value)
{
    if (name[0] == '\0' || strpbrk(name, "\r\n: ") || strpbrk(value, "\r\n"))
        return;
    buf_str(b, name);
    buf_str(b, ": ");
    buf_str(b, value);
    buf_str(b, "\r\n");
}

/* 1 with *sb set when a provider runs row's sandbox, 0 when this node's
 * runtime or another node does, -1 when the store failed. */
static int provider_sandbox(pe_daemon_job *job, pe_store *s, const pe_store_port *row,
                            pe_store_sandbox *sb)
{
    pe_err err;

    (void)job;
    pe_err_clear(&err);
    if (pe_store_sandbox_get(s, row->sandbox_id, sb, &err) < 0) {
        pe_log_error("proxy: %s", err.msg);
        return -1;
    }
    if (pe_sandbox_is_remote(sb))
        return 1;
    pe_store_sandbox_clear(sb);
    return 0;
}

/* A provider runs sb (a remote sandbox): set p to reach the port through
 * the provider's link (or p->fd to a stream the adapter opened to it), 0;
 * -1 with the verdict given. The link's URL and
 * headers stay in p (they may hold a tunnel key or token): no answer or
 * log line names them. */
static int provider_target(pe_daemon_job *job, pe_store *s, struct preq *p,
                           const pe_store_sandbox *sb)
{
    pe_provider_preview_link link = {0};
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    struct buf hb = {0};
    char ip[INET_ADDRSTRLEN], nul = '\0';
    cleanup_free char *host = NULL, *path = NULL, *name = NULL;
    const char *rest, *slash, *colon;
    const pe_sandbox_remote *op;
    bool tls;
    int port, r = -1;
    pe_err err;

    pe_err_clear(&err);
    if (pe_sandbox_preview(&job->d->sx, s, sb, (uint16_t)p->port, &link, &err) < 0) {
        verdict(p, err.code == PE_ETIMEDOUT ? 504 : 502, "UpstreamFailure", err.msg);
        goto out;
    }
    if (link.forward) { /* the adapter opens the port itself (kubernetes' port-forward) */
        if (pe_sandbox_port_open(&job->d->sx, s, sb, (uint16_t)p->port, &p->fd, &err) < 0)
            verdict(p, 502, "SandboxNotRunning", err.msg);
        else
            r = 0;
        goto out;
    }
    if (!link.proxy) { /* the provider serves it: exposePort answered its URL */
        verdict(p, 404, "NotFound", "this preview is served at its provider's URL (previewUrl)");
        goto out;
    }
    tls = strncmp(link.url, "https://", 8) == 0;
    if (!tls && strncmp(link.url, "http://", 7) != 0) {
        verdict(p, 502, "UpstreamFailure", "the provider's preview URL is not http:// or https://");
        goto out;
    }
    rest = link.url + (tls ? 8 : 7);
    slash = rest + strcspn(rest, "/");
    host = xstrndup(rest, (size_t)(slash - rest));
    colon = strrchr(host, ':');
    port = colon ? atoi(colon + 1) : tls ? 443 : 80;
    name = xstrndup(host, colon ? (size_t)(colon - host) : strlen(host));
    if (port <= 0 || port > 65535 || name[0] == '\0' || getaddrinfo(name, NULL, &hints, &ai) != 0 ||
        ai == NULL ||
        inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, ip, sizeof(ip)) ==
            NULL) {
        verdict(p, 502, "UpstreamFailure", "the provider's preview host does not resolve");
        goto out;
    }
    op = pe_sandboxes_remote(&job->d->sx, sb->backend);
    if (tls && (p->ssl = pe_proxy_tls_new(name, op ? op->preview_ca_file : NULL, &err)) == NULL) {
        pe_log_error("proxy: preview host %s: %s", name, err.msg);
        verdict(p, 502, "UpstreamFailure",
                "TLS to the provider's preview host cannot be set up: the daemon's log says why");
        goto out;
    }
    if (tls)
        p->tls_host = pe_xstrdup(name);
    /* the link's path, then the app's path without its leading '/' */
    path = xstrndup(slash, strlen(slash) - (slash[0] && slash[strlen(slash) - 1] == '/'));
    p->remote_path = pe_xasprintf("%s/%s", path, p->fwd_path + (p->fwd_path[0] == '/'));
    p->addr = pe_xasprintf("%s:%d", ip, port);
    p->up_port = port;
    p->up_host = pe_xstrdup(host);
    link_header(&hb, link.header_name, link.header_value);
    link_header(&hb, link.header2_name, link.header2_value);
    if (hb.len) {
        buf_add(&hb, &nul, 1);
        p->link_headers = hb.data;
        hb.data = NULL;
    }
    p->remote = p->provider = true;
    r = 0;
out:
    if (ai)
        freeaddrinfo(ai);
    buf_free(&hb);
    explicit_bzero(&link, sizeof(link));
    return r;
}

static void check_work(pe_daemon_job *job, pe_store *s)
{
    struct preq *p = job->ud;
    pe_store_port row;
    pe_store_sandbox sb = {0};
    char aud[PE_AUTH_AUD_MAX];
    bool ok = false, other_user = false;
    pe_err err;
    int r;

    pe_err_clear(&err);
    if (pe_store_port_find(s, p->ident, p->port, &row, &err) < 0) {
        if (err.code != PE_ENOENT)
            pe_log_error("proxy: %s", err.msg);
        if (err.code == PE_ENOENT)
            verdict(p, 404, "NotFound", "no such exposed port");
        else
            verdict(p, 500, "InternalServerError", "Internal Server Error");
        return;
    }
    if ((p->name_hint && !name_matches(row.sandbox_name, p->name_hint)) ||
        snprintf(aud, sizeof(aud), "%s:%d", row.sandbox_id, p->port) >= (int)sizeof(aud)) {
        verdict(p, 404, "NotFound", "no such exposed port");
        goto out;
    }
    if (p->bad_node_cred) {
        verdict(p, 401, "InvalidNodeCredential", "node credential refused");
        goto out;
    }
    if (p->auth_path && !p->via_node) {
        exchange(job, p, &row, aud);
        goto out;
    }
    if (p->did) {
        ok = strcmp(p->did, row.owner_did) == 0;
        other_user = !ok;
        if (ok) {
            p->opener = pe_xstrdup(p->did);
            p->opener_iat = p->did_iat;
        }
    }
    if (!ok && p->cookie)
        ok = cookie_opens(p, aud, row.owner_did);
    if (!ok && p->secret && row.secret && secret_eq(row.secret, p->secret)) {
        ok = true;
        if (p->secret_in_url) {
            p->set_cookie = pe_xasprintf(SECRET_PARAM "=%s; Path=%s; HttpOnly; SameSite=Lax",
                                         row.secret, p->scope);
            if (p->browser) { /* out of the address bar before the page runs */
                verdict_redirect(p, 303, p->self_url);
                goto out;
            }
        }
    }
    if (!ok && row.public_access)
        ok = true;
    if (!ok)
        refuse(p, other_user);
    else if ((r = provider_sandbox(job, s, &row, &sb)) != 0) {
        int woke = 0;

        /* paused at its provider (by this node or another): resumed for
         * the request, as a local one is thawed */
        if (r > 0 && (woke = pe_daemon_wake_row(job->d, &sb, "preview", &err)) < 0) {
            verdict(p, 502, "SandboxNotRunning", err.msg);
        } else if (r > 0 && provider_target(job, s, p, &sb) == 0) {
            p->resumed = woke > 0;
            pe_daemon_touch(job->d, row.sandbox_id);
            p->sandbox_id = pe_xstrdup(row.sandbox_id);
            pe_daemon_hold(job->d, p->sandbox_id); /* released by preq_free */
        } else if (r < 0)
            verdict(p, 500, "InternalServerError", "Internal Server Error");
        pe_store_sandbox_clear(&sb);
    } else if (!p->via_node && (r = remote_target(job, s, p, &row)) != 0) {
        if (r < 0)
            verdict(p, 503, "NodeDown", p->err_msg);
    } else if ((r = pe_daemon_wake(job->d, row.sandbox_id, "preview", &err)) < 0 ||
               pe_daemon_sandbox_address(job->d, row.sandbox_id, &p->addr, &err) < 0)
        verdict(p, 502, "SandboxNotRunning", err.msg);
    else {
        p->resumed = r > 0;
        pe_daemon_touch(job->d, row.sandbox_id);
        p->sandbox_id = pe_xstrdup(row.sandbox_id);
        pe_daemon_hold(job->d, p->sandbox_id); /* released by preq_free */
    }
out:
    pe_store_port_clear(&row);
}

/* ---- upstream: connect, send, read the head ----------------------------- */

/* recv(2) and send(2) to the upstream, over TLS for an https:// link;
 * p->rd_want / wr_want: the event the next try waits for (TLS may need
 * to write to read, or the reverse). */
static ssize_t up_recv(struct preq *p, void *buf, size_t len)
{
    uint32_t want = EPOLLIN;
    ssize_t r = p->ssl ? pe_proxy_tls_recv(p->ssl, buf, len, &want) : recv(p->fd, buf, len, 0);

    p->rd_want = r < 0 && errno == EAGAIN ? want : EPOLLIN;
    return r;
}

static ssize_t up_send(struct preq *p, const void *buf, size_t len)
{
    uint32_t want = EPOLLOUT;
    ssize_t r =
        p->ssl ? pe_proxy_tls_send(p->ssl, buf, len, &want) : send(p->fd, buf, len, MSG_NOSIGNAL);

    p->wr_want = r < 0 && errno == EAGAIN ? want : EPOLLOUT;
    return r;
}

static void on_upstream(pe_ev_io *io, int fd, uint32_t events, void *ud);
static void raw_socket(pe_http_raw *raw, int fd, const char *extra, size_t extra_len, void *ud);
static void raw_gone(pe_http_raw *raw, void *ud);

static void on_head_timeout(pe_ev_timer *t, void *ud)
{
    struct preq *p = ud;

    fail(p, 504, "UpstreamTimeout", "port %d of %s did not answer within %d s", p->port, p->ident,
         HEAD_TIMEOUT_S);
}

static void connect_upstream(struct preq *p)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)(p->remote ? p->up_port : p->port))};
    cleanup_free char *ip = p->remote ? xstrndup(p->addr, strcspn(p->addr, ":")) : NULL;
    pe_err err;

    pe_err_clear(&err);
    if (p->fd >= 0) /* the adapter's stream to the port (provider_target) */
        goto watch;
    if (inet_pton(AF_INET, ip ? ip : p->addr, &sa.sin_addr) != 1) {
        fail(p, 502, "UpstreamFailure", "sandbox %s has no network address", p->ident);
        return;
    }
    p->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (p->fd < 0 ||
        (connect(p->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS)) {
        fail(p, 502, "UpstreamFailure", "connect to port %d of %s: %s", p->port, p->ident,
             strerror(errno));
        return;
    }
watch:
    p->io = pe_ev_io_start(p->d->loop, p->fd, EPOLLOUT, on_upstream, p, &err);
    p->timer = p->io ? pe_ev_timer_start(p->d->loop, (uint64_t)HEAD_TIMEOUT_S * 1000000000ull, 0,
                                         on_head_timeout, p, &err)
                     : NULL;
    if (p->timer == NULL)
        fail(p, 502, "UpstreamFailure", "%s", err.msg);
}

/* The verdict is in: an answer now (the request's body was never read:
 * the proxy's head callback held it), or the body may come in, and then
 * on_body forwards the request. */
static void check_done(pe_daemon_job *job)
{
    struct preq *p = job->ud;

    if (p->status == 0) {
        pe_http_continue(p->req);
        return;
    }
    pe_http_take_data(p->req); /* p is ours again: answered and freed here */
    if (p->location)
        redirect(p, p->status, p->location, p->set_cookie);
    else
        fail(p, p->status, p->err_name, "%s", p->err_msg);
}

static void finish_stream(struct preq *p);

void pe_daemon_proxy_recheck(pe_daemon *d)
{
    struct preq *p, *next;

    for (p = live; p; p = next) {
        next = p->lnext;
        if (!pe_auth_revoked(d->auth, p->opener, p->opener_iat))
            continue;
        pe_log_info("event=preview_closed sandbox=%s port=%d why=revoked", p->sandbox_id, p->port);
        if (p->req)
            fail(p, 401, "InvalidToken", "token has been revoked");
        else if (p->st)
            finish_stream(p);
        else
            preq_free(p); /* a relay: both sockets close */
    }
}

/* Parse the answer's head in p->in (ending at head_len). Fills status and
 * a NULL-terminated {name, value, ...} list pointing into p->in (lines
 * are cut in place). Returns false on a malformed head. */
static bool parse_head(struct preq *p, size_t head_len, unsigned *status, const char **hdrs,
                       size_t max, int64_t *clen, bool *chunked)
{
    char *s = p->in.data, *end = s + head_len, *line, *eol, *colon;
    size_t n = 0;

    *clen = -1;
    *chunked = false;
    eol = memchr(s, '\n', (size_t)(end - s));
    if (eol == NULL || end - s < 12 || strncmp(s, "HTTP/1.", 7) != 0 || s[8] != ' ')
        return false;
    if (s[9] < '1' || s[9] > '5' || s[10] < '0' || s[10] > '9' || s[11] < '0' || s[11] > '9')
        return false;
    *status = (unsigned)((s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0'));
    for (line = eol + 1; line < end; line = eol + 1) {
        eol = memchr(line, '\n', (size_t)(end - line));
        if (eol == NULL)
            break;
        *eol = '\0';
        if (eol > line && eol[-1] == '\r')
            eol[-1] = '\0';
        if (*line == '\0')
            break;
        colon = strchr(line, ':');
        if (colon == NULL || colon == line)
            return false;
        *colon = '\0';
        for (colon++; *colon == ' ' || *colon == '\t'; colon++)
            ;
        if (strcasecmp(line, "Content-Length") == 0) {
            char *e;
            errno = 0;
            long long v = strtoll(colon, &e, 10);
            if (errno || e == colon || *e || v < 0)
                return false;
            *clen = v;
        } else if (strcasecmp(line, "Transfer-Encoding") == 0) {
            *chunked = true;
        }
        if (n + 2 < max) {
            hdrs[n++] = line;
            hdrs[n++] = colon;
        }
    }
    hdrs[n] = NULL;
    return true;
}

static void stream_drain(pe_http_stream *st, void *ud)
{
    struct preq *p = ud;

    if (p->io)
        pe_ev_io_modify(p->io, p->rd_want, NULL);
}

static void stream_gone(pe_http_stream *st, void *ud)
{
    struct preq *p = ud;

    p->st = NULL;
    preq_free(p); /* the client left: drop the upstream connection */
}

static void finish_stream(struct preq *p)
{
    pe_http_stream_close(p->st);
    p->st = NULL;
    preq_free(p);
}

/* Body bytes from upstream to the client, within what is still due. */
static bool relay_body(struct preq *p, const char *data, size_t len)
{
    if (p->remaining >= 0 && (int64_t)len > p->remaining)
        len = (size_t)p->remaining;
    if (len && pe_http_stream_write(p->st, data, len) < 0)
        return false;
    if (p->remaining >= 0)
        p->remaining -= (int64_t)len;
    return p->remaining != 0;
}

static void on_head(struct preq *p, size_t head_len)
{
    const char *hdrs[2 * MAX_RESP_HEADERS + 4];
    const char
        *out[2 * MAX_RESP_HEADERS + 10]; /* + Set-Cookie, resumed, Referrer-Policy, CSP, NULL */
    unsigned status;
    int64_t clen;
    bool chunked;
    size_t n = 0;
    static const pe_http_stream_callbacks cb = {.on_drain = stream_drain, .on_close = stream_gone};

    pe_ev_timer_stop(p->timer);
    p->timer = NULL;
    if (!parse_head(p, head_len, &status, hdrs, PE_ARRAY_LEN(hdrs) - 2, &clen, &chunked)) {
        fail(p, 502, "UpstreamFailure", "port %d of %s answered something that is not HTTP",
             p->port, p->ident);
        return;
    }
    for (size_t i = 0; hdrs[i]; i += 2) {
        if (strcasecmp(hdrs[i], "Content-Length") == 0 ||
            strcasecmp(hdrs[i], "Referrer-Policy") == 0 ||
            (hop_by_hop(hdrs[i], NULL) && !(status == 101 && !strcasecmp(hdrs[i], "Upgrade"))))
            continue;
        out[n++] = hdrs[i];
        out[n++] = hdrs[i + 1];
        /* path form: an absolute-path redirect stays under the prefix */
        if (strcasecmp(hdrs[i], "Location") == 0 && strcmp(p->scope, "/") != 0 && !p->via_node &&
            hdrs[i + 1][0] == '/' && hdrs[i + 1][1] != '/' && p->location == NULL) {
            p->location = pe_xasprintf("%.*s%s", (int)strlen(p->scope) - 1, p->scope, hdrs[i + 1]);
            out[n - 1] = p->location;
        }
    }
    if (p->set_cookie) {
        out[n++] = "Set-Cookie";
        out[n++] = p->set_cookie;
    }
    if (p->resumed) { /* the sandbox was paused: this request woke it */
        out[n++] = PE_RESUMED_HEADER;
        out[n++] = "preview";
    }
    /* No URL of a preview is told on: a share link's or an app's own. */
    out[n++] = "Referrer-Policy";
    out[n++] = "no-referrer";
    if (strcmp(p->scope, "/") != 0 && !p->via_node) {
        /* The path form shares the daemon's origin, where the web page
         * keeps the API token: its pages run in an opaque origin. */
        out[n++] = "Content-Security-Policy";
        out[n++] = PATH_FORM_CSP;
    }
    out[n] = NULL;
    if (status == 101 && p->upgrade) {
        static const pe_http_raw_callbacks rcb = {.on_socket = raw_socket, .on_close = raw_gone};
        buf_add(&p->to_client, p->in.data + head_len, p->in.len - head_len);
        p->phase = PH_RELAY;
        pe_ev_io_modify(p->io, 0, NULL); /* until the client's socket comes */
        p->raw = pe_http_upgrade_raw(p->req, out, &rcb, p);
        p->req = NULL;
        if (p->raw == NULL)
            preq_free(p);
        return;
    }
    if (chunked || status < 200) {
        fail(p, 502, "UpstreamFailure",
             "port %d of %s answered %u with a framing the proxy "
             "does not relay",
             p->port, p->ident, status);
        return;
    }
    p->remaining = (p->head_only || status == 204 || status == 304) ? 0 : clen;
    p->phase = PH_BODY;
    p->st = pe_http_respond_stream(p->req, status, NULL, out, &cb, p);
    p->req = NULL;
    /* body bytes that came with the head */
    size_t extra = p->in.len - head_len;
    if (!relay_body(p, p->in.data + head_len, extra)) {
        finish_stream(p);
        return;
    }
    p->in.len = 0;
    pe_ev_io_modify(p->io, EPOLLIN, NULL);
}

/* ---- upstream I/O by phase ---------------------------------------------- */

static void upstream_send(struct preq *p)
{
    while (p->out.off < p->out.len) {
        ssize_t w = up_send(p, p->out.data + p->out.off, p->out.len - p->out.off);
        if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (p->ssl)
                pe_ev_io_modify(p->io, p->wr_want, NULL);
            return;
        }
        if (w < 0) {
            fail(p, 502, "UpstreamFailure", "send to port %d of %s: %s", p->port, p->ident,
                 strerror(errno));
            return;
        }
        p->out.off += (size_t)w;
    }
    p->phase = PH_HEAD;
    pe_ev_io_modify(p->io, EPOLLIN, NULL);
}

static void upstream_head(struct preq *p)
{
    char tmp[READ_BLOCK];
    ssize_t r = up_recv(p, tmp, sizeof(tmp));
    char *end;

    if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
        if (p->ssl)
            pe_ev_io_modify(p->io, p->rd_want, NULL);
        return;
    }
    if (r <= 0) {
        fail(p, 502, "UpstreamFailure", "port %d of %s closed the connection without an answer",
             p->port, p->ident);
        return;
    }
    buf_add(&p->in, tmp, (size_t)r);
    end = memmem(p->in.data, p->in.len, "\r\n\r\n", 4);
    if (end) {
        on_head(p, (size_t)(end - p->in.data) + 4);
        return;
    }
    end = memmem(p->in.data, p->in.len, "\n\n", 2);
    if (end)
        on_head(p, (size_t)(end - p->in.data) + 2);
    else if (p->in.len > HEAD_MAX)
        fail(p, 502, "UpstreamFailure", "the answer of port %d of %s has a head over %d bytes",
             p->port, p->ident, HEAD_MAX);
}

static void upstream_body(struct preq *p)
{
    char tmp[READ_BLOCK];
    ssize_t r = up_recv(p, tmp, sizeof(tmp));

    if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
        if (p->ssl)
            pe_ev_io_modify(p->io, p->rd_want, NULL);
        return;
    }
    if (r <= 0 || !relay_body(p, tmp, (size_t)r)) {
        finish_stream(p);
        return;
    }
    if (pe_http_stream_pending(p->st) > PENDING_MAX)
        pe_ev_io_modify(p->io, 0, NULL); /* resumed by stream_drain */
}

static void relay_update(struct preq *p);

/* The TLS handshake with an https:// link's host, one step per event. */
static void upstream_tls(struct preq *p)
{
    char why[256];
    uint32_t want = 0;
    int r = pe_proxy_tls_handshake(p->ssl, &want, why, sizeof(why));

    if (r == 0) {
        pe_ev_io_modify(p->io, want, NULL);
        return;
    }
    if (r < 0) {
        /* the host and the reason; never the link's path or headers */
        pe_log_warn("event=preview_tls_failed sandbox=%s port=%d host=%s why=\"%s\"", p->sandbox_id,
                    p->port, p->tls_host, why);
        fail(p, 502, "UpstreamFailure", "TLS to the provider's preview host %s failed: %s",
             p->tls_host, why);
        return;
    }
    p->phase = PH_SEND;
    pe_ev_io_modify(p->io, EPOLLOUT, NULL);
    upstream_send(p);
}

static void on_upstream(pe_ev_io *io, int fd, uint32_t events, void *ud)
{
    struct preq *p = ud;
    int soerr = 0;
    socklen_t sl = sizeof(soerr);

    switch (p->phase) {
    case PH_CONNECT:
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        if (soerr) {
            fail(p, 502, "UpstreamFailure", "port %d of %s: %s%s", p->port, p->ident,
                 strerror(soerr),
                 soerr == ECONNREFUSED ? " (is a server listening on 0.0.0.0 there?)" : "");
            return;
        }
        if (p->ssl && SSL_set_fd(p->ssl, fd) == 1) {
            p->phase = PH_TLS;
            upstream_tls(p);
            return;
        }
        if (p->ssl) {
            fail(p, 502, "UpstreamFailure", "TLS to the provider's preview host %s: no session",
                 p->tls_host);
            return;
        }
        p->phase = PH_SEND;
        upstream_send(p);
        return;
    case PH_TLS:
        upstream_tls(p);
        return;
    case PH_SEND:
        upstream_send(p);
        return;
    case PH_HEAD:
        upstream_head(p);
        return;
    case PH_BODY:
        upstream_body(p);
        return;
    case PH_RELAY:
        relay_update(p);
        return;
    }
}

/* ---- WebSocket (any upgrade) pass-through ------------------------------- *
 *
 * After the upstream's 101 the two sockets are spliced: bytes read from
 * one wait in a buffer of at most READ_BLOCK until the other takes them,
 * and a side is read only while its buffer is empty (backpressure). When
 * either side ends or fails, what is buffered is dropped and both close:
 * a WebSocket's own close handshake has gone through as data by then. */

static ssize_t side_recv(struct preq *p, int fd, void *buf, size_t len)
{
    return fd == p->fd ? up_recv(p, buf, len) : recv(fd, buf, len, 0);
}

static ssize_t side_send(struct preq *p, int fd, const void *buf, size_t len)
{
    return fd == p->fd ? up_send(p, buf, len) : send(fd, buf, len, MSG_NOSIGNAL);
}

static bool pump(struct preq *p, int from, int to, struct buf *b, bool *eof)
{
    ssize_t r;

    for (;;) {
        if (b->off < b->len) {
            r = side_send(p, to, b->data + b->off, b->len - b->off);
            if (r < 0)
                return errno == EAGAIN || errno == EINTR;
            b->off += (size_t)r;
            continue;
        }
        b->off = b->len = 0;
        if (*eof)
            return false;
        if (b->cap < READ_BLOCK) {
            b->cap = READ_BLOCK;
            b->data = pe_xrealloc(b->data, b->cap);
        }
        r = side_recv(p, from, b->data, b->cap);
        if (r == 0) {
            *eof = true;
            return false;
        }
        if (r < 0)
            return errno == EAGAIN || errno == EINTR;
        b->len = (size_t)r;
    }
}

static void relay_update(struct preq *p)
{
    uint32_t up_ev, c_ev;

    if (p->cfd < 0)
        return; /* the client's socket has not come yet */
    if (!pump(p, p->cfd, p->fd, &p->to_up, &p->client_eof) ||
        !pump(p, p->fd, p->cfd, &p->to_client, &p->up_eof)) {
        preq_free(p);
        return;
    }
    up_ev = (p->to_up.len > p->to_up.off ? p->wr_want : 0) |
            (p->to_client.len > p->to_client.off ? 0 : p->rd_want);
    c_ev = (p->to_client.len > p->to_client.off ? EPOLLOUT : 0) |
           (p->to_up.len > p->to_up.off ? 0 : EPOLLIN);
    pe_ev_io_modify(p->io, up_ev, NULL);
    pe_ev_io_modify(p->cio, c_ev, NULL);
}

static void on_client(pe_ev_io *io, int fd, uint32_t events, void *ud)
{
    relay_update(ud);
}

static void raw_socket(pe_http_raw *raw, int fd, const char *extra, size_t extra_len, void *ud)
{
    struct preq *p = ud;
    pe_err err;

    pe_err_clear(&err);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    p->cfd = fd;
    buf_add(&p->to_up, extra, extra_len);
    /* Both watched for writing first: the first round runs from the loop,
     * not inside libmicrohttpd's callback. */
    p->cio = pe_ev_io_start(p->d->loop, fd, EPOLLOUT, on_client, p, &err);
    if (p->cio == NULL) {
        pe_log_warn("proxy: %s", err.msg);
        p->cfd = -1;
        preq_free(p);
        return;
    }
    pe_ev_io_modify(p->io, EPOLLOUT, NULL);
}

static void raw_gone(pe_http_raw *raw, void *ud)
{
    struct preq *p = ud;

    p->raw = NULL; /* the server takes the socket back itself */
    p->cfd = -1;
    preq_free(p);
}

/* ---- entry points ------------------------------------------------------- */

/* The web page's sign-in for this preview (NULL without a web page):
 * preview.html on the daemon's own origin, which holds the API token,
 * asks for a sign-in code and comes back. Host form: that origin is the
 * preview host without its first label (8080-web-x.localhost:8789 ->
 * localhost:8789); path form: this origin. */
static char *signin_url(pe_daemon *d, pe_http_request *req, const char *self, bool host_form)
{
    const char *host = pe_http_header(req, "Host");
    const char *parent = host && host_form ? strchr(host, '.') : NULL;
    struct buf b = {0};
    char nul = '\0';

    if (d->web == NULL || host == NULL || strpbrk(host, "/\\@?#") || (host_form && !parent))
        return NULL;
    if (host_form) {
        buf_str(&b, "http://");
        buf_str(&b, parent + 1);
    }
    buf_str(&b, SIGNIN_PAGE "?" TO_PARAM "=");
    cleanup_free char *to = pe_xasprintf("http://%s%s", host, self);
    put_encoded(&b, to, false);
    buf_add(&b, &nul, 1);
    return b.data;
}

static bool wants_html(pe_http_request *req)
{
    const char *accept = pe_http_header(req, "Accept");

    return accept && strstr(accept, "text/html");
}

static void preq_free_cb(void *p)
{
    preq_free(p);
}

/* The head callback's half: who is asking and may they, decided before a
 * byte of the body is read (a stranger's body costs nothing). */
static void start(pe_daemon *d, pe_http_request *req, const char *ident, size_t ident_len,
                  char *name_hint, int port, const char *path, char *scope)
{
    struct preq *p = pe_xcalloc(1, sizeof(*p));
    const char *up = pe_http_header(req, "Upgrade");
    size_t sl = strlen(scope);
    pe_daemon_job *job;

    p->d = d;
    p->rd_want = EPOLLIN;
    p->wr_want = EPOLLOUT;
    p->req = req;
    p->fd = p->cfd = -1;
    p->ident = xstrndup(ident, ident_len);
    p->name_hint = name_hint;
    p->port = port;
    p->scope = scope;
    p->fwd_path = path;
    p->head_only = strcmp(req->method, "HEAD") == 0;
    p->upgrade = up && *up && !strpbrk(up, "\r\n");
    if (pe_http_query(req, TOKEN_PARAM) != NULL) {
        fail(p, 400, "InvalidRequest",
             "API tokens are never taken from a URL (a page of the sandbox could read it): "
             "send Authorization: Bearer, or open the preview in a browser signed in to the "
             "daemon's web page");
        return;
    }
    p->auth_path = strncmp(req->path, scope, sl) == 0 && strcmp(req->path + sl, AUTH_PATH) == 0;
    p->browser =
        !p->upgrade && (p->head_only || strcmp(req->method, "GET") == 0) && wants_html(req);
    p->self_url = self_url(req);
    p->signin = signin_url(d, req, p->self_url, strcmp(scope, "/") == 0);
    read_credentials(p, req, &p->via_bearer);
    pe_http_set_data(req, p, preq_free_cb);
    job = pe_daemon_job_new(d, NULL, NULL, check_work);
    job->ud = p;
    job->after = check_done;
    pe_http_defer(req);
    if (pe_daemon_job_submit(job) < 0) {
        pe_http_take_data(req);
        fail(p, 503, "ServiceUnavailable", "the daemon is busy or shutting down");
    }
}

/* The route handler: the body is in; forward the request. Every request
 * reaching it was let through by check_done (the head callback answers
 * all the others). */
static void on_body(pe_http_request *req, void *ud)
{
    struct preq *p = pe_http_take_data(req);

    if (p == NULL) {
        send_error(req, 500, "InternalServerError", "Internal Server Error");
        return;
    }
    build_request(p, req, p->remote ? p->remote_path : p->fwd_path, p->via_bearer);
    pe_http_defer(req); /* answered once upstream answers (or fails) */
    if (p->opener) {
        p->lnext = live;
        if (live)
            live->lprev = p;
        live = p;
        p->linked = true;
    }
    connect_upstream(p);
}

static bool parse_port(const char *s, size_t len, int *port)
{
    int v = 0;

    if (len == 0 || len > 5)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *port = v;
    return v >= 1 && v <= 65535;
}

bool pe_daemon_preview_label(const char *label, size_t len, int *port, char **tag, char **name_hint)
{
    const char *dash = memchr(label, '-', len), *last = NULL;

    if (dash == NULL || !parse_port(label, (size_t)(dash - label), port))
        return false;
    for (const char *c = dash + 1; c < label + len; c++)
        if (*c == '-')
            last = c;
    if (last == NULL) /* <port>-<tag> */
        last = dash;
    if (last + 1 == label + len || (last > dash && last == dash + 1))
        return false;
    *tag = xstrndup(last + 1, (size_t)(label + len - last - 1));
    *name_hint = last > dash ? xstrndup(dash + 1, (size_t)(last - dash - 1)) : NULL;
    return true;
}

/* /p/<ident>/<port>/<path>: the head callback */
static void on_path(pe_http_request *req, void *ud)
{
    const char *rest = req->rest, *slash = strchr(rest, '/'), *pend;
    int port;

    if (slash == NULL || slash == rest) {
        send_error(req, 404, "NotFound", "preview paths are /p/<sandbox id>/<port>/");
        return;
    }
    pend = strchr(slash + 1, '/');
    if (!parse_port(slash + 1, pend ? (size_t)(pend - slash - 1) : strlen(slash + 1), &port)) {
        send_error(req, 404, "NotFound", "preview paths are /p/<sandbox id>/<port>/");
        return;
    }
    if (pend == NULL) { /* relative links of the page need the slash */
        cleanup_free char *loc = pe_xasprintf("%s/", req->path);
        const char *hdr[] = {"Location", loc, "Referrer-Policy", "no-referrer", NULL};
        pe_http_respond(req, 308, NULL, NULL, 0, hdr);
        return;
    }
    start(ud, req, rest, (size_t)(slash - rest), NULL, port, pend,
          pe_xasprintf("/p/%.*s/%d/", (int)(slash - rest), rest, port));
}

/* Host: <port>-[<name>-]<tag>.localhost[:daemon port]: the head callback */
static void on_host(pe_http_request *req, void *ud)
{
    const char *host = pe_http_header(req, "Host"), *dot;
    char *tag = NULL, *name_hint = NULL;
    int port;

    dot = host ? strstr(host, HOST_SUFFIX) : NULL;
    if (dot == NULL ||
        !pe_daemon_preview_label(host, (size_t)(dot - host), &port, &tag, &name_hint)) {
        send_error(req, 404, "NotFound",
                   "preview hosts are <port>-<sandbox>-<tag>" HOST_SUFFIX
                   ": see previewUrl in getExposedPorts");
        return;
    }
    start(ud, req, tag, strlen(tag), name_hint, port, req->path, pe_xstrdup("/"));
    free(tag);
}

void pe_daemon_preview_target_clear(pe_preview_target *t)
{
    free(t->origin);
    free(t->ident);
    free(t->name_hint);
    free(t->scope);
    free(t->path);
    memset(t, 0, sizeof(*t));
}

int pe_daemon_preview_parse(const char *url, pe_preview_target *t, pe_err *err)
{
    const char *host, *hend, *path, *dot, *slash, *pend;
    size_t skip = strncmp(url, "http://", 7) == 0 ? 7 : strncmp(url, "https://", 8) == 0 ? 8 : 0;

    memset(t, 0, sizeof(*t));
    host = url + skip;
    hend = host + strcspn(host, "/?#");
    if (skip == 0 || hend == host || memchr(host, '@', (size_t)(hend - host)) ||
        strpbrk(url, " \t\r\n\\"))
        return pe_err_set(err, PE_EINVAL, 0, "not a preview URL: want http://HOST/...");
    path = *hend == '/' ? hend : "/";
    t->origin = xstrndup(url, (size_t)(hend - url));
    t->path = xstrndup(path, strcspn(path, "#"));
    dot = memmem(host, (size_t)(hend - host), HOST_SUFFIX, strlen(HOST_SUFFIX));
    if (dot &&
        pe_daemon_preview_label(host, (size_t)(dot - host), &t->port, &t->ident, &t->name_hint)) {
        t->scope = pe_xstrdup("/");
        return 0;
    }
    if (strncmp(t->path, "/p/", 3) == 0 && (slash = strchr(t->path + 3, '/')) != NULL &&
        slash > t->path + 3) {
        pend = slash + 1 + strcspn(slash + 1, "/?");
        if (parse_port(slash + 1, (size_t)(pend - slash - 1), &t->port)) {
            t->ident = xstrndup(t->path + 3, (size_t)(slash - t->path - 3));
            t->scope = pe_xasprintf("/p/%s/%d/", t->ident, t->port);
            if (*pend != '/') { /* /p/x/8080 or /p/x/8080?q */
                char *fixed = pe_xasprintf("%s%s", t->scope, pend);
                free(t->path);
                t->path = fixed;
            }
            return 0;
        }
    }
    pe_daemon_preview_target_clear(t);
    return pe_err_set(err, PE_EINVAL, 0,
                      "not a preview URL: want http://<port>-...localhost:PORT/ or "
                      "http://HOST/p/<sandbox id>/<port>/");
}

char *pe_daemon_preview_signin_link(const pe_preview_target *t, const char *code)
{
    struct buf b = {0};
    char nul = '\0';

    buf_str(&b, t->origin);
    buf_str(&b, t->scope);
    buf_str(&b, AUTH_PATH "?" CODE_PARAM "=");
    buf_str(&b, code); /* base64url and dots: nothing to encode */
    buf_str(&b, "&" TO_PARAM "=");
    put_encoded(&b, t->path, false);
    buf_add(&b, &nul, 1);
    return b.data;
}

int pe_daemon_register_proxy(pe_daemon *d, pe_err *err)
{
    if (pe_http_route(d->srv, "/p/", BODY_MAX, on_body, d, err) < 0 ||
        pe_http_route_host(d->srv, HOST_SUFFIX, BODY_MAX, on_body, d, err) < 0 ||
        pe_http_route_head(d->srv, "/p/", on_path, err) < 0 ||
        pe_http_route_head(d->srv, HOST_SUFFIX, on_host, err) < 0)
        return -1;
    return 0;
}

int pe_daemon_sandbox_address(pe_daemon *d, const char *id, char **addr, pe_err *err)
{
    char *text = NULL;
    json_t *info;
    const char *status, *a;

    *addr = NULL;
    if (pe_sandbox_inspect(&d->sx, id, &text, err) < 0)
        return err->code == PE_ENOENT ? pe_err_set(err, PE_ESTATE, 0, "sandbox is not running")
                                      : -1;
    info = json_loads(text, 0, NULL);
    free(text);
    status = json_string_value(json_object_get(info, "status"));
    a = json_string_value(json_object_get(json_object_get(info, "network"), "address"));
    if (status == NULL || strcmp(status, "running") != 0)
        pe_err_set(err, PE_ESTATE, 0, "sandbox is not running");
    else if (a == NULL)
        pe_err_set(err, PE_ESTATE, 0, "sandbox has no network of its own (--sandbox-net none)");
    else
        *addr = pe_xstrdup(a);
    json_decref(info);
    return *addr ? 0 : -1;
}

#define NAME_IN_HOST_MAX 40 /* keeps <port>-<name>-<tag> a host label (<= 63) */

/* Names that can stand in a host label as they are: letters, digits and
 * inner dashes (a dot would split the label, '_' is not for host names). */
static bool name_fits_host(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n > NAME_IN_HOST_MAX || name[0] == '-' || name[n - 1] == '-')
        return false;
    for (const char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '-'))
            return false;
    return true;
}

char *pe_daemon_preview_secret(void)
{
    unsigned char raw[16];
    char *hex = pe_xmalloc(sizeof(raw) * 2 + 1);

    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
        abort(); /* the kernel's CSPRNG does not fail for 16 bytes */
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    return hex;
}

char *pe_daemon_preview_url(pe_daemon *d, const char *name, const char *tag, int port)
{
    unsigned dport = pe_http_server_port(d->srv);

    if (!name_fits_host(name))
        return pe_xasprintf("http://%d-%s.localhost:%u/", port, tag, dport);
    cleanup_free char *lower = pe_xstrdup(name);
    for (char *c = lower; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    return pe_xasprintf("http://%d-%s-%s.localhost:%u/", port, lower, tag, dport);
}
