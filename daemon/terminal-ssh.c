/* Upstream's SSH gateway (reference §4.3), served by our terminal sessions.
 *
 *   POST   /ssh/connect                {cols?, rows?}, X-Sandbox-Id -> {sessionId}
 *   GET    /ssh/stream/:sessionId      SSE: event: connected, data: <base64>,
 *                                      event: close, event: error
 *   POST   /ssh/input/:sessionId       {data}         -> {ok: true}
 *   POST   /ssh/resize/:sessionId      {cols, rows}   -> {ok: true}
 *   DELETE /ssh/disconnect/:sessionId                 -> {ok: true}
 *   GET    /ssh/:sessionId/ws          WebSocket: text frames of base64 out,
 *                                      raw text or {"type":"resize",...} in
 *
 * Upstream's CLI takes this path for its daytona and deno sandboxes; there
 * it is an SSH client to the provider. Here there is no SSH: connect starts
 * a shell in the caller's running sandbox as a terminal session
 * (terminal.c: scrollback, viewers, backpressure, per-user caps, idle end,
 * revocation), and the rest of the routes are views of that session.
 *
 * Sessions are named by a random UUID (122 bits: not guessable) and keyed
 * by their user as well, so a session id is worth nothing with another
 * user's token: it answers 404 "Session not found", exactly as an unknown
 * one. Unlike upstream, every request needs a token (terminal-http.c's
 * rules: a header, or in the URL a terminal token, or an API token on a
 * WebSocket handshake without Origin, which is upstream's CLI). The store
 * is read only by connect (the sandbox must be the caller's and running);
 * a session dies with its sandbox's processes, so later requests need only
 * find it.
 *
 * Across nodes (docs/cluster.md): connect about a sandbox another node
 * runs is relayed there (cluster-relay.c), and this node remembers the
 * session id that node answered, with its user, so that the session's
 * later requests (stream, input, resize, disconnect, WebSocket) made here
 * are relayed to it too. At most RELAYED_MAX are remembered (the oldest
 * is forgotten first: its requests then answer 404 here); disconnect
 * forgets one. Loop thread only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "core/log.h"
#include "core/util.h"
#include "terminal.h"

#define BODY_MAX (64 * 1024)
#define ID_MAX 100
#define UUID_LEN 36
/* No sandbox id contains '/': the sessions of this gateway cannot meet
 * those of /tty, /pty or Cloudflare, whose keys name a sandbox there. */
#define SSH_NAMESPACE "/ssh"

enum op { OP_CONNECT, OP_STREAM, OP_INPUT, OP_RESIZE, OP_DISCONNECT, OP_WS };

static const struct {
    const char *method;
    const char *prefix; /* of req->rest; OP_WS is "<id>/ws" */
} OPS[] = {
    [OP_CONNECT] = {"POST", "connect"},
    [OP_STREAM] = {"GET", "stream/"},
    [OP_INPUT] = {"POST", "input/"},
    [OP_RESIZE] = {"POST", "resize/"},
    [OP_DISCONNECT] = {"DELETE", "disconnect/"},
    [OP_WS] = {"GET", NULL},
};

/* A session id as we make them: lower-case 8-4-4-4-12 hex. */
static bool uuid_ok(const char *s, size_t n)
{
    if (n != UUID_LEN)
        return false;
    for (size_t i = 0; i < n; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    }
    return true;
}

/* A random (version 4) UUID into out[UUID_LEN + 1]. */
static void new_uuid(char out[UUID_LEN + 1])
{
    unsigned char b[16];
    size_t o = 0;

    randombytes_buf(b, sizeof(b));
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    for (size_t i = 0; i < sizeof(b); i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        o += (size_t)snprintf(out + o, UUID_LEN + 1 - o, "%02x", b[i]);
    }
}

/* Which operation req->rest names, and its session id (into id). */
static int parse_op(const char *rest, char id[UUID_LEN + 1])
{
    size_t n;

    id[0] = '\0';
    if (strcmp(rest, OPS[OP_CONNECT].prefix) == 0)
        return OP_CONNECT;
    for (int op = OP_STREAM; op <= OP_DISCONNECT; op++) {
        size_t p = strlen(OPS[op].prefix);
        if (strncmp(rest, OPS[op].prefix, p) == 0) {
            n = strlen(rest + p);
            if (!uuid_ok(rest + p, n))
                return -1;
            memcpy(id, rest + p, n + 1);
            return op;
        }
    }
    n = strcspn(rest, "/");
    if (strcmp(rest + n, "/ws") != 0 || !uuid_ok(rest, n))
        return -1;
    memcpy(id, rest, n);
    id[n] = '\0';
    return OP_WS;
}

static void respond_json(pe_http_request *req, unsigned status, json_t *o)
{
    char *text = json_dumps(o, JSON_COMPACT);

    json_decref(o);
    if (text == NULL)
        abort(); /* allocation failure */
    pe_http_respond(req, status, "application/json; charset=utf-8", text, strlen(text), NULL);
    free(text);
}

static void respond_ok(pe_http_request *req)
{
    respond_json(req, 200, json_pack("{s:b}", "ok", 1));
}

/* ---- sessions on other nodes ---- */

#define RELAYED_MAX 256

struct relayed {
    char *key; /* pe__term_session_key(did, SSH_NAMESPACE, id) */
    pe_cluster_target t;
    struct relayed *next;
};

static struct relayed *relayed; /* newest first */

static void relayed_free(struct relayed *r)
{
    free(r->key);
    pe_cluster_target_clear(&r->t);
    free(r);
}

static struct relayed **relayed_at(const char *key)
{
    struct relayed **p = &relayed;

    while (*p && strcmp((*p)->key, key) != 0)
        p = &(*p)->next;
    return p;
}

static void relayed_forget(const char *key)
{
    struct relayed **p = relayed_at(key), *r = *p;

    if (r) {
        *p = r->next;
        relayed_free(r);
    }
}

/* The other node's answer to a relayed connect: its session id. */
static void relayed_connect(pe_daemon *d, const char *did, const pe_cluster_target *t, long status,
                            const char *body, size_t len)
{
    json_t *o = status == 200 ? json_loadb(body, len, 0, NULL) : NULL;
    const char *id = json_string_value(json_object_get(o, "sessionId"));
    struct relayed *r, **p;
    size_t n = 0;

    (void)d;
    if (id && uuid_ok(id, strlen(id))) {
        r = pe_xcalloc(1, sizeof(*r));
        r->key = pe__term_session_key(did, SSH_NAMESPACE, id);
        r->t.node_id = pe_xstrdup(t->node_id);
        r->t.node_name = pe_xstrdup(t->node_name);
        r->t.address = pe_xstrdup(t->address);
        r->next = relayed;
        relayed = r;
        for (p = &relayed; *p && ++n <= RELAYED_MAX;)
            p = &(*p)->next;
        while (*p) { /* past the cap: the oldest go */
            r = *p;
            *p = r->next;
            relayed_free(r);
        }
    }
    json_decref(o);
}

void pe__term_ssh_shutdown(pe_daemon *d)
{
    (void)d;
    while (relayed)
        relayed_forget(relayed->key);
}

/* ---- connect ---- */

struct connect {
    char *did;
    unsigned cols, rows;
};

/* A size from the body: absent or below 1 is the default (a client with
 * no terminal says 0), above the maximum is clamped. */
static unsigned dim(const json_t *o, const char *key, unsigned def, unsigned max)
{
    const json_t *v = json_object_get(o, key);
    json_int_t n = json_is_integer(v) ? json_integer_value(v) : 0;

    return n < 1 ? def : n > (json_int_t)max ? max : (unsigned)n;
}

static void connect_found(pe_daemon *d, pe_http_request *req, const char *sandbox_id, void *ud)
{
    struct connect *c = ud;
    char id[UUID_LEN + 1];
    cleanup_free char *key = NULL;
    pe_term_session *s;
    pe_err err;

    if (sandbox_id) {
        new_uuid(id);
        key = pe__term_session_key(c->did, SSH_NAMESPACE, id);
        pe_err_clear(&err);
        s = pe__term_create(d, key, c->did, sandbox_id, c->cols, c->rows, &err);
        if (s == NULL)
            pe_http_respond_error(
                req, err.code == PE_XRPC_ERATE ? 429 : 503,
                err.code == PE_XRPC_ERATE ? "RateLimitExceeded" : "ServiceUnavailable", err.msg);
        else
            respond_json(req, 200, json_pack("{s:s}", "sessionId", id));
    }
    free(c->did);
    free(c);
}

static void do_connect(pe_daemon *d, pe_http_request *req, char *did)
{
    const char *sandbox = pe_http_header(req, "X-Sandbox-Id");
    json_t *body = NULL;
    struct connect *c;
    size_t n = sandbox ? strlen(sandbox) : 0;

    if (n == 0 || n > ID_MAX ||
        strspn(sandbox, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                        "0123456789_-") != n) {
        pe_http_respond_error(req, 400, "InvalidRequest",
                              "X-Sandbox-Id: the id or name of a sandbox is required");
        free(did);
        return;
    }
    /* json_is_object is a macro that evaluates its argument twice. */
    if (req->body_len > 0)
        body = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, NULL);
    if (req->body_len > 0 && !json_is_object(body)) {
        json_decref(body);
        pe_http_respond_error(req, 400, "InvalidRequest", "expected {\"cols\"?, \"rows\"?}");
        free(did);
        return;
    }
    c = pe_xcalloc(1, sizeof(*c));
    c->did = did;
    c->cols = dim(body, "cols", 80, PE_TERM_COLS_MAX);
    c->rows = dim(body, "rows", 24, PE_TERM_ROWS_MAX);
    json_decref(body);
    pe__term_find_sandbox_then(d, req, did, sandbox, connect_found, c, relayed_connect);
}

/* ---- the session's own routes ---- */

static void do_input(pe_http_request *req, pe_term_session *s)
{
    json_t *o = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, NULL);
    const json_t *data = json_object_get(o, "data");
    pe_err err;

    pe_err_clear(&err);
    if (!json_is_string(data))
        pe_http_respond_error(req, 400, "InvalidRequest", "expected {\"data\": string}");
    else if (pe__term_input(s, json_string_value(data), json_string_length(data), &err) < 0)
        pe_http_respond_error(req, 503, "ServiceUnavailable", err.msg);
    else
        respond_ok(req);
    json_decref(o);
}

static void do_session(pe_daemon *d, pe_http_request *req, int op, const char *did, const char *id,
                       int64_t iat)
{
    cleanup_free char *key = pe__term_session_key(did, SSH_NAMESPACE, id);
    pe_term_session *s = pe__term_find(d, key);
    const char *upgrade = pe_http_header(req, "Upgrade");
    unsigned cols, rows;

    struct relayed *r = s ? NULL : *relayed_at(key);

    if (s == NULL && r && !pe_cluster_is_node_request(req)) {
        pe_cluster_relay_route(d, req, did, &r->t); /* copies what it needs */
        if (op == OP_DISCONNECT)
            relayed_forget(key);
        return;
    }
    if (s == NULL) {
        pe_http_respond_error(req, 404, "SessionNotFound", "Session not found");
        return;
    }
    switch (op) {
    case OP_STREAM:
        pe__term_attach(s, req, PE_TERM_SSE_B64, iat);
        return;
    case OP_WS:
        if (upgrade == NULL || strcasecmp(upgrade, "websocket") != 0) {
            static const char *const need[] = {"Upgrade", "websocket", NULL};
            static const char m[] =
                "{\"error\":\"UpgradeRequired\",\"message\":\"WebSocket only\"}";
            pe_http_respond(req, 426, "application/json; charset=utf-8", m, sizeof(m) - 1, need);
            return;
        }
        pe__term_attach(s, req, PE_TERM_WS_B64, iat);
        return;
    case OP_INPUT:
        do_input(req, s);
        return;
    case OP_RESIZE:
        if (!pe__term_parse_resize(req->body, req->body_len, false, &cols, &rows)) {
            pe_http_respond_error(req, 400, "InvalidRequest", "Invalid cols/rows");
            return;
        }
        pe__term_resize(s, cols, rows);
        respond_ok(req);
        return;
    default: /* OP_DISCONNECT */
        pe__term_close(s);
        respond_ok(req);
        return;
    }
}

static void on_ssh(pe_http_request *req, void *ud)
{
    pe_daemon *d = ud;
    char id[UUID_LEN + 1];
    int op = parse_op(req->rest, id);
    char *did;
    int64_t iat = 0;

    if (op < 0) {
        /* A malformed id is no session of anyone's. */
        pe_http_respond_error(req, 404, "SessionNotFound", "Session not found");
        return;
    }
    if (strcmp(req->method, OPS[op].method) != 0) {
        const char *const allow[] = {"Allow", OPS[op].method, NULL};
        static const char m[] =
            "{\"error\":\"MethodNotAllowed\",\"message\":\"Method Not Allowed\"}";
        pe_http_respond(req, 405, "application/json; charset=utf-8", m, sizeof(m) - 1, allow);
        return;
    }
    if ((did = pe__term_authenticate(d, req, op == OP_WS, &iat)) == NULL)
        return;
    if (d->draining) {
        pe_http_respond_error(req, 503, "ServiceUnavailable", "the daemon is shutting down");
        free(did);
        return;
    }
    if (op == OP_CONNECT) {
        do_connect(d, req, did); /* takes did */
        return;
    }
    do_session(d, req, op, did, id, iat);
    free(did);
}

int pe__term_register_ssh(pe_daemon *d, pe_err *err)
{
    return pe_http_route(d->srv, "/ssh/", BODY_MAX, on_ssh, d, err);
}
