/* The terminal gateways' HTTP side (reference §4): routes, auth, ownership.
 *
 *   GET  /tty/:id/stream, /pty/:id/stream   SSE viewer
 *   POST /tty/:id/input,  /pty/:id/input    raw body -> keystrokes, 204
 *   POST /tty/:id/resize, /pty/:id/resize   {"cols","rows"} -> 204 (400 if bad)
 *   GET  /tty/:id/ws,     /pty/:id/ws       WebSocket, text frames
 *   GET  /v1/sandboxes/:id/ws/terminal      WebSocket, Cloudflare protocol
 *   GET  /:id/ws, ... (id sbx_...)          /tty's routes at the root
 *
 * :id is a sandbox id or name. Unlike upstream, every request needs a token
 * (Authorization: Bearer, ?token= or ?t=; API or terminal scope) whose user
 * owns the sandbox, checked before any shell starts. An API token is taken
 * from the URL only on a WebSocket handshake without an Origin header: that
 * is upstream's CLI (?token=), which no browser can pass for, while a page
 * (which could read its own URL, and whose requests carry Referer) must
 * use a 120 s terminal token there. 401 without a valid
 * token, 404 SandboxNotFound for a sandbox that is missing or someone
 * else's (the two look the same), 400 SandboxNotRunning when it is not
 * running. The store is read on a worker; a request for a live session of
 * the same user and sandbox id skips it, since that session was made after
 * the same check (and dies with the sandbox). Session key: the user, the
 * sandbox and ?sessionId= (/tty, /pty) or ?session= (Cloudflare); absent,
 * one session per sandbox and user. The /ssh gateway (terminal-ssh.c)
 * shares the authentication and the sandbox lookup. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cluster.h"
#include "core/log.h"
#include "core/util.h"
#include "terminal.h"

#define INPUT_BODY_MAX (64 * 1024)
/* /<sandbox id>/ws and the rest of /tty's routes at the root: upstream's
 * CLI appends "/<id>/ws" to POCKETENV_TTY_URL and POCKETENV_PTY_URL, so
 * with this the daemon's own URL serves for both (docs/compat.md). Ids
 * are sbx_...; nothing else of ours starts so. */
#define ROOT_PREFIX "/sbx_"
#define ID_MAX 100
#define SESSION_MAX 64

enum op { OP_STREAM, OP_INPUT, OP_RESIZE, OP_WS };

struct target {
    int op, proto;
    char ident[ID_MAX + 1];
    const char *session;
    unsigned cols, rows; /* resize body, or the initial size (0: default) */
};

/* A /tty, /pty or Cloudflare request waiting for its sandbox lookup. */
struct pending {
    struct target t;
    char *did, *session;
    int64_t iat; /* of the token: the viewer ends if it is revoked */
};

struct lookup {
    pe_daemon *d;
    pe_http_request *req;
    char ident[ID_MAX + 1];
    char *did;
    pe_term_found_fn found;
    void *ud;
    bool may_relay; /* not a node's request (one hop), not /ssh (sessions of its own) */
    pe_cluster_relay_then_fn then; /* /ssh/connect: relayed, then told */
    /* result */
    char *sandbox_id;
    bool remote; /* another node runs it: target */
    pe_cluster_target target;
    unsigned status;
    const char *name;
    char msg[128];
};

static bool id_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

/* "<id>/<op>" (tty, pty, and /sbx_...: the id is the whole first part) or
 * "<id>/ws/terminal" (Cloudflare). */
static bool parse_target(pe_http_request *req, struct target *t)
{
    bool cf = strncmp(req->path, "/v1/", 4) == 0;
    const char *p =
        strncmp(req->path, ROOT_PREFIX, strlen(ROOT_PREFIX)) == 0 ? req->path + 1 : req->rest;
    const char *slash = strchr(p, '/');
    size_t n = slash ? (size_t)(slash - p) : 0;

    if (n == 0 || n > ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!id_char(p[i]))
            return false;
    memcpy(t->ident, p, n);
    t->ident[n] = '\0';
    slash++;
    if (cf) {
        t->proto = PE_TERM_WS_CF;
        t->op = OP_WS;
        return strcmp(slash, "ws/terminal") == 0;
    }
    t->proto = PE_TERM_WS_TEXT;
    if (strcmp(slash, "ws") == 0)
        t->op = OP_WS;
    else if (strcmp(slash, "stream") == 0)
        t->op = OP_STREAM, t->proto = PE_TERM_SSE;
    else if (strcmp(slash, "input") == 0)
        t->op = OP_INPUT;
    else if (strcmp(slash, "resize") == 0)
        t->op = OP_RESIZE;
    else
        return false;
    return true;
}

/* The token, from the header first, then ?token=, then ?t=; *in_url says
 * whether it came from the URL. */
static const char *request_token(pe_http_request *req, bool *in_url)
{
    const char *a = req->authorization, *q;

    *in_url = false;
    if (a && strncasecmp(a, "Bearer ", 7) == 0) {
        for (a += 7; *a == ' ';)
            a++;
        if (*a && strcmp(a, "null") != 0)
            return a;
    }
    *in_url = true;
    q = pe_http_query(req, "token");
    if (q && *q)
        return q;
    q = pe_http_query(req, "t");
    return q && *q ? q : NULL;
}

char *pe__term_authenticate(pe_daemon *d, pe_http_request *req, bool websocket, int64_t *iat)
{
    bool in_url;
    const char *jwt = request_token(req, &in_url);
    int scopes = PE_AUTH_SCOPE_TERMINAL;
    enum pe_auth_result r;
    char *did = NULL;
    pe_err err;

    if (pe_cluster_is_node_request(req)) {
        /* another node relays its client's request (daemon/cluster-relay.c) */
        did = pe_cluster_route_auth(d, req);
        *iat = pe_store_now_ms() / 1000;
        return did;
    }
    if (jwt == NULL) {
        pe_http_respond_error(req, 401, "AuthenticationRequired", "authentication required");
        return NULL;
    }
    if (!in_url || (websocket && pe_http_header(req, "Origin") == NULL))
        scopes |= PE_AUTH_SCOPE_API;
    pe_err_clear(&err);
    r = pe_auth_token_verify_iat(d->auth, jwt, scopes, NULL, &did, iat, &err);
    if (r == PE_AUTH_OK)
        return did;
    pe_log_info("auth %s: terminal %s refused: %s", req->client_addr, req->path,
                pe_auth_result_name(r));
    if (r == PE_AUTH_EXPIRED)
        pe_http_respond_error(req, 401, "ExpiredToken", "token has expired");
    else if (r == PE_AUTH_WRONG_SCOPE && in_url)
        pe_http_respond_error(req, 401, "InvalidToken",
                              "in a URL, only a terminal token (actor.getTerminalToken) is "
                              "taken: send an API token as Authorization: Bearer");
    else
        pe_http_respond_error(req, 401, "InvalidToken", "invalid token");
    return NULL;
}

static bool session_name_ok(const char *s)
{
    size_t n = strlen(s);

    if (n > SESSION_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!id_char(s[i]) && s[i] != '.' && s[i] != ':')
            return false;
    return true;
}

static unsigned query_dim(pe_http_request *req, const char *key, unsigned max)
{
    const char *v = pe_http_query(req, key);
    char *end;
    unsigned long n;

    if (v == NULL || *v == '\0')
        return 0;
    n = strtoul(v, &end, 10);
    return *end == '\0' && n >= 1 && n <= max ? (unsigned)n : 0;
}

char *pe__term_session_key(const char *did, const char *sandbox_id, const char *session)
{
    return pe_xasprintf("%s\x1f%s\x1f%s", did, sandbox_id, session);
}

/* The sandbox is the caller's and running: serve the request. */
static void serve(pe_daemon *d, pe_http_request *req, const struct target *t, const char *did,
                  int64_t iat, const char *sandbox_id)
{
    cleanup_free char *key = pe__term_session_key(did, sandbox_id, t->session);
    pe_term_session *s = pe__term_find(d, key);
    pe_err err;

    pe_err_clear(&err);
    if (s == NULL && (t->op == OP_INPUT || t->op == OP_RESIZE)) {
        pe_http_respond_error(req, 404, "SessionNotFound", "Session not found");
        return;
    }
    switch (t->op) {
    case OP_WS:
    case OP_STREAM:
        if (s == NULL)
            s = pe__term_create(d, key, did, sandbox_id, t->cols, t->rows, &err);
        if (s == NULL)
            pe_http_respond_error(
                req, err.code == PE_XRPC_ERATE ? 429 : 503,
                err.code == PE_XRPC_ERATE ? "RateLimitExceeded" : "ServiceUnavailable", err.msg);
        else
            pe__term_attach(s, req, t->proto, iat);
        return;
    case OP_INPUT:
        if (pe__term_input(s, req->body, req->body_len, &err) < 0)
            pe_http_respond_error(req, 503, "ServiceUnavailable", err.msg);
        else
            pe_http_respond(req, 204, NULL, NULL, 0, NULL);
        return;
    default:
        pe__term_resize(s, t->cols, t->rows);
        pe_http_respond(req, 204, NULL, NULL, 0, NULL);
        return;
    }
}

/* ---- the ownership check (worker) ---- */

static void lookup_work(void *ud)
{
    struct lookup *j = ud;
    pe_store_sandbox sb;
    pe_store *st;
    pe_err err;
    int r;

    pe_err_clear(&err);
    memset(&sb, 0, sizeof(sb));
    st = pe_daemon_store(j->d, &err);
    if (st == NULL) {
        pe_log_warn("terminal: %s", err.msg);
        j->status = 503, j->name = "ServiceUnavailable";
        snprintf(j->msg, sizeof(j->msg), "store unavailable");
        return;
    }
    if (strncmp(j->ident, "sbx_", 4) == 0) {
        r = pe_store_sandbox_get(st, j->ident, &sb, &err);
        if (r == 0 && strcmp(sb.owner_did, j->did) != 0) {
            pe_store_sandbox_clear(&sb);
            r = -1, err.code = PE_ENOENT;
        }
    } else {
        r = pe_store_sandbox_get_by_name(st, j->did, j->ident, &sb, &err);
    }
    if (r < 0) {
        if (err.code != PE_ENOENT)
            pe_log_warn("terminal: %s", err.msg);
        j->status = err.code == PE_ENOENT ? 404 : 500;
        j->name = err.code == PE_ENOENT ? "SandboxNotFound" : "InternalServerError";
        snprintf(j->msg, sizeof(j->msg), "%s",
                 err.code == PE_ENOENT ? "sandbox not found" : "Internal Server Error");
        return;
    }
    if (j->may_relay && pe_cluster_where(j->d, st, &sb, &j->target) == 1) {
        j->remote = true; /* the node that runs it says whether it runs */
        pe_store_sandbox_clear(&sb);
        return;
    }
    if (sb.status != PE_STORE_RUNNING) {
        j->status = 400, j->name = "SandboxNotRunning";
        snprintf(j->msg, sizeof(j->msg), "Sandbox not started");
    } else {
        j->sandbox_id = pe_xstrdup(sb.id);
    }
    pe_store_sandbox_clear(&sb);
}

static void lookup_done(void *ud)
{
    struct lookup *j = ud;
    pe_daemon *d = j->d;

    if (j->remote)
        pe_cluster_relay_route_then(d, j->req, j->did, &j->target, j->then);
    else if (j->status)
        pe_http_respond_error(j->req, j->status, j->name, j->msg);
    j->found(d, j->req, j->status || j->remote ? NULL : j->sandbox_id, j->ud);
    pe_cluster_target_clear(&j->target);
    free(j->did);
    free(j->sandbox_id);
    free(j);
    if (--d->inflight == 0 && d->draining)
        pe_ev_stop(d->loop);
}

void pe__term_find_sandbox(pe_daemon *d, pe_http_request *req, const char *did, const char *ident,
                           pe_term_found_fn found, void *ud)
{
    pe__term_find_sandbox_then(d, req, did, ident, found, ud, NULL);
}

void pe__term_find_sandbox_then(pe_daemon *d, pe_http_request *req, const char *did,
                                const char *ident, pe_term_found_fn found, void *ud,
                                pe_cluster_relay_then_fn then)
{
    struct lookup *j = pe_xcalloc(1, sizeof(*j));
    pe_err err;

    j->d = d;
    j->req = req;
    snprintf(j->ident, sizeof(j->ident), "%s", ident);
    j->did = pe_xstrdup(did);
    j->found = found;
    j->ud = ud;
    j->then = then;
    j->may_relay =
        !pe_cluster_is_node_request(req) && (then || strncmp(req->path, "/ssh/", 5) != 0);
    pe_err_clear(&err);
    if (pe_ev_submit(d->loop, lookup_work, lookup_done, j, &err) < 0) {
        pe_http_respond_error(req, 503, "ServiceUnavailable", "the daemon is busy");
        found(d, req, NULL, ud);
        free(j->did);
        free(j);
        return;
    }
    d->inflight++;
    pe_http_defer(req);
}

static void pending_found(pe_daemon *d, pe_http_request *req, const char *sandbox_id, void *ud)
{
    struct pending *p = ud;

    if (sandbox_id)
        serve(d, req, &p->t, p->did, p->iat, sandbox_id);
    free(p->did);
    free(p->session);
    free(p);
}

/* ---- the handler ---- */

static bool method_ok(pe_http_request *req, const struct target *t)
{
    static const char *const allow_get[] = {"Allow", "GET", NULL};
    static const char *const allow_post[] = {"Allow", "POST", NULL};
    static const char msg[] = "{\"error\":\"MethodNotAllowed\",\"message\":\"Method Not Allowed\"}";
    bool post = t->op == OP_INPUT || t->op == OP_RESIZE;

    if (strcmp(req->method, post ? "POST" : "GET") == 0)
        return true;
    pe_http_respond(req, 405, "application/json; charset=utf-8", msg, sizeof(msg) - 1,
                    post ? allow_post : allow_get);
    return false;
}

/* What can be refused without the store: the body, the session name, a
 * plain GET on a WebSocket route. */
static bool check_request(pe_http_request *req, struct target *t)
{
    const char *upgrade = pe_http_header(req, "Upgrade");

    t->session = pe_http_query(req, t->proto == PE_TERM_WS_CF ? "session" : "sessionId");
    if (t->session == NULL)
        t->session = "";
    if (!session_name_ok(t->session)) {
        pe_http_respond_error(req, 400, "InvalidRequest",
                              "session: up to 64 letters, digits, '_', '-', '.', ':'");
        return false;
    }
    if (t->op == OP_RESIZE) {
        if (!pe__term_parse_resize(req->body, req->body_len, false, &t->cols, &t->rows)) {
            pe_http_respond_error(req, 400, "InvalidRequest", "Invalid cols/rows");
            return false;
        }
        return true;
    }
    t->cols = query_dim(req, "cols", PE_TERM_COLS_MAX);
    t->rows = query_dim(req, "rows", PE_TERM_ROWS_MAX);
    if (t->op == OP_WS && (upgrade == NULL || strcasecmp(upgrade, "websocket") != 0)) {
        static const char *const need[] = {"Upgrade", "websocket", NULL};
        static const char m[] = "{\"error\":\"UpgradeRequired\",\"message\":\"WebSocket only\"}";
        pe_http_respond(req, 426, "application/json; charset=utf-8", m, sizeof(m) - 1, need);
        return false;
    }
    return true;
}

static void on_request(pe_http_request *req, void *ud)
{
    pe_daemon *d = ud;
    struct target t;
    struct pending *p;
    cleanup_free char *did = NULL;
    cleanup_free char *key = NULL;
    int64_t iat = 0;

    memset(&t, 0, sizeof(t));
    if (!parse_target(req, &t)) {
        pe_http_respond_error(req, 404, "NotFound", "Not Found");
        return;
    }
    if (!method_ok(req, &t) || (did = pe__term_authenticate(d, req, t.op == OP_WS, &iat)) == NULL ||
        !check_request(req, &t))
        return;
    if (d->draining) {
        pe_http_respond_error(req, 503, "ServiceUnavailable", "the daemon is shutting down");
        return;
    }
    if (strncmp(t.ident, "sbx_", 4) == 0) {
        key = pe__term_session_key(did, t.ident, t.session);
        if (pe__term_find(d, key)) {
            serve(d, req, &t, did, iat, t.ident);
            return;
        }
    }
    p = pe_xcalloc(1, sizeof(*p));
    p->t = t;
    p->did = pe_steal_ptr(&did);
    p->iat = iat;
    p->session = pe_xstrdup(t.session);
    p->t.session = p->session;
    pe__term_find_sandbox(d, req, p->did, t.ident, pending_found, p);
}

int pe_daemon_register_terminal(pe_daemon *d, pe_err *err)
{
    static const char *const prefixes[] = {"/tty/", "/pty/", "/v1/sandboxes/", ROOT_PREFIX};

    for (size_t i = 0; i < PE_ARRAY_LEN(prefixes); i++)
        if (pe_http_route(d->srv, prefixes[i], INPUT_BODY_MAX, on_request, d, err) < 0)
            return -1;
    return pe__term_register_ssh(d, err);
}
