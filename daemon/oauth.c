/* Sign in with an AT Protocol handle (issue 18): the daemon as an OAuth
 * client of the user's PDS, giving the user our own API token bound to
 * their DID.
 *
 *   POST /oauth/login    {"handle"} -> {"url", "pickup", "expiresIn"}
 *                        open url in a browser; keep pickup secret
 *   GET  /oauth/callback where the PDS sends the browser back
 *   POST /oauth/token    {"pickup"} -> 202 while the user has not
 *                        finished, then {"token", "did", "handle"} once
 *   POST /oauth/logout   (Bearer: our token) revoke the user's PDS session
 *                        at their authorization server and forget it
 *
 * The pickup secret, not the browser, carries the token to whoever
 * started the sign-in (the CLI polls with it): a token never travels in a
 * URL, and the callback page shows nothing worth stealing. It is compared
 * in constant time and works once.
 *
 * The client is the spec's loopback client (lib/auth/atproto-oauth.c),
 * with redirect URI http://127.0.0.1:PORT/oauth/callback: right for a
 * daemon its users reach on this machine. The PDS's refresh token and the
 * session's DPoP key are kept sealed to the daemon's own X25519 key in
 * DATA/atproto/ (0700 directory, 0600 files), never in the clear.
 *
 * Threading: the table of sign-ins in progress belongs to the loop thread;
 * network work runs on the loop's worker pool with the slot marked busy
 * (a busy slot is neither reused nor freed until its work is done).
 */
#include <errno.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/log.h"
#include "core/util.h"
#include "daemon.h"
#include "oauth.h"
#include "pocketenv/atproto.h"

#define PENDING_MAX 32            /* sign-ins in progress at once */
#define PENDING_TTL_S 600         /* the user has 10 minutes to finish */
#define TOKEN_TTL_S (30L * 86400) /* our API token: 30 days, as the owner's */
#define OAUTH_BODY_MAX 4096
#define SCOPE "atproto transition:generic"

enum slot_state { S_FREE = 0, S_STARTING, S_WAITING, S_FINISHING, S_DONE, S_FAILED };

typedef struct slot {
    enum slot_state state;
    time_t born;
    char pickup[48];
    pe_atproto_login *login;
    char *token; /* ours, once S_DONE */
    char message[256];
} slot;

struct pe_oauth {
    pe_daemon *d;
    pe_atproto_client client;
    char plc[PE_ATPROTO_URL_MAX], dns[64];
    char redirect[96];
    slot slots[PENDING_MAX];
};

/* One piece of network work for a slot (or, for logout, a DID). */
typedef struct work {
    struct pe_oauth *o;
    slot *s;
    pe_http_request *req;
    char arg[PE_ATPROTO_HANDLE_MAX]; /* the handle; the DID for logout */
    char *state, *iss, *code;        /* the callback's */
    char *token;
    pe_err err;
} work;

static void slot_clear(slot *s)
{
    pe_atproto_login_free(s->login);
    if (s->token)
        sodium_memzero(s->token, strlen(s->token));
    free(s->token);
    memset(s, 0, sizeof *s);
}

/* Free the slots whose time is up (not while their work runs). */
static void expire(struct pe_oauth *o)
{
    time_t now = time(NULL);
    for (size_t i = 0; i < PENDING_MAX; i++) {
        slot *s = &o->slots[i];
        if (s->state != S_FREE && s->state != S_STARTING && s->state != S_FINISHING &&
            now - s->born > PENDING_TTL_S)
            slot_clear(s);
    }
}

static void respond_json(pe_http_request *req, unsigned status, json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT);
    const char *const headers[] = {"Cache-Control", "no-store", NULL};
    pe_http_respond(req, status, "application/json", s ? s : "{}", s ? strlen(s) : 2, headers);
    free(s);
    json_decref(v);
}

static unsigned status_of(const pe_err *err)
{
    switch (err->code) {
    case PE_EINVAL:
        return 400;
    case PE_ENOENT:
        return 404;
    case PE_EAUTH:
        return 401;
    case PE_ETIMEDOUT:
        return 504;
    default:
        return 502;
    }
}

/* ---- POST /oauth/login ---- */

static void login_work(void *ud)
{
    work *w = ud;
    pe_atproto_login *l = NULL;

    if (pe_atproto_login_start(&w->o->client, w->arg, &l, &w->err) == 0)
        w->s->login = l;
}

static void login_done(void *ud)
{
    work *w = ud;
    slot *s = w->s;

    w->o->d->inflight--;
    if (s->login == NULL) {
        pe_log_info("event=oauth-login-failed handle=%s error=%s", w->arg, w->err.msg);
        slot_clear(s);
        pe_http_respond_error(w->req, status_of(&w->err), "SignInFailed", w->err.msg);
    } else {
        s->state = S_WAITING;
        s->born = time(NULL);
        respond_json(w->req, 200,
                     json_pack("{s:s, s:s, s:s, s:i}", "url", s->login->authorize_url, "pickup",
                               s->pickup, "did", s->login->id.did, "expiresIn", PENDING_TTL_S));
    }
    free(w);
}

static slot *free_slot(struct pe_oauth *o)
{
    expire(o);
    for (size_t i = 0; i < PENDING_MAX; i++)
        if (o->slots[i].state == S_FREE)
            return &o->slots[i];
    return NULL;
}

static void submit(struct pe_oauth *o, work *w, void (*fn)(void *), void (*done)(void *))
{
    pe_err err = {0};

    pe_http_defer(w->req);
    if (pe_ev_submit(o->d->loop, fn, done, w, &err) < 0) {
        w->s->state = S_FAILED;
        pe_http_respond_error(w->req, 503, "Unavailable", "the daemon is busy");
        free(w->state);
        free(w->iss);
        free(w->code);
        free(w);
        return;
    }
    o->d->inflight++;
}

static void on_login(struct pe_oauth *o, pe_http_request *req)
{
    json_t *in = json_loads(req->body, 0, NULL);
    const char *h = json_string_value(json_object_get(in, "handle"));
    work *w;
    slot *s;

    if (h == NULL || !(pe_atproto_handle_valid(h) || pe_atproto_did_valid(h))) {
        json_decref(in);
        pe_http_respond_error(req, 400, "InvalidRequest",
                              "want {\"handle\": \"alice.example.com\"} (a handle or a DID)");
        return;
    }
    if ((s = free_slot(o)) == NULL) {
        json_decref(in);
        pe_http_respond_error(req, 503, "Unavailable", "too many sign-ins in progress");
        return;
    }
    w = pe_xcalloc(1, sizeof *w);
    *w = (work){.o = o, .s = s, .req = req};
    snprintf(w->arg, sizeof w->arg, "%s", h);
    json_decref(in);
    s->state = S_STARTING;
    s->born = time(NULL);
    {
        unsigned char raw[32];
        randombytes_buf(raw, sizeof raw);
        sodium_bin2base64(s->pickup, sizeof s->pickup, raw, sizeof raw,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    }
    submit(o, w, login_work, login_done);
}

/* ---- GET /oauth/callback ---- */

/* DATA/atproto and the sealed session file of did in it (named by the
 * DID's SHA-256: a DID is not a safe file name). */
static void session_path(struct pe_oauth *o, const char *did, char *dir, size_t dn, char *path,
                         size_t pn)
{
    unsigned char h[crypto_hash_sha256_BYTES];
    char hex[2 * sizeof h + 1];

    crypto_hash_sha256(h, (const unsigned char *)did, strlen(did));
    sodium_bin2hex(hex, sizeof hex, h, sizeof h);
    snprintf(dir, dn, "%s/atproto", o->d->rt.data_dir);
    snprintf(path, pn, "%s/%s.sealed", dir, hex);
}

/* The PDS session, sealed to our own key: DPoP key and refresh token. */
static int keep_session(struct pe_oauth *o, const pe_atproto_login *l, const pe_atproto_session *ps,
                        pe_err *err)
{
    char dir[4096], path[4200];
    cleanup_free char *pem = NULL, *plain = NULL, *sealed = NULL;
    json_t *v;

    if (pe_atproto_dpop_pem(l->dpop, &pem, err) < 0)
        return -1;
    v = json_pack("{s:s, s:s, s:s, s:s, s:s?, s:I}", "did", ps->did, "pds", l->id.pds, "issuer",
                  l->as.issuer, "dpopKey", pem, "refreshToken", ps->refresh_token, "savedAt",
                  (json_int_t)time(NULL));
    plain = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    sodium_memzero(pem, strlen(pem));
    if (plain == NULL)
        return pe_err_set(err, PE_ESYS, ENOMEM, "session");
    session_path(o, ps->did, dir, sizeof dir, path, sizeof path);
    if (pe_auth_seal(pe_auth_public_key_hex(o->d->auth), plain, strlen(plain), &sealed, err) < 0 ||
        pe_fs_mkdir_p(dir, 0700, err) < 0 ||
        pe_fs_write_atomic(path, sealed, strlen(sealed), 0600, err) < 0) {
        sodium_memzero(plain, strlen(plain));
        return -1;
    }
    sodium_memzero(plain, strlen(plain));
    return 0;
}

static void callback_work(void *ud)
{
    work *w = ud;
    pe_atproto_session ps = {0};
    pe_atproto_login *l = w->s->login;

    if (pe_atproto_login_finish(&w->o->client, l, w->state, w->iss, w->code, &ps, &w->err) < 0)
        return;
    if (keep_session(w->o, l, &ps, &w->err) == 0)
        pe_auth_token_mint(w->o->d->auth, ps.did, TOKEN_TTL_S, PE_AUTH_SCOPE_API, &w->token,
                           &w->err);
    pe_atproto_session_clear(&ps);
}

static void answer_page(pe_http_request *req, unsigned status, const char *text)
{
    char page[1024];
    const char *const headers[] = {"Cache-Control",
                                   "no-store",
                                   "Referrer-Policy",
                                   "no-referrer",
                                   "Content-Security-Policy",
                                   "default-src 'none'",
                                   NULL};
    int n = snprintf(page, sizeof page,
                     "<!doctype html><meta charset=utf-8><title>Pocketenv sign-in</title>"
                     "<p>%s</p>\n",
                     text);
    pe_http_respond(req, status, "text/html; charset=utf-8", page, (size_t)n, headers);
}

static void callback_done(void *ud)
{
    work *w = ud;
    slot *s = w->s;
    char text[PE_ATPROTO_HANDLE_MAX + 128];

    w->o->d->inflight--;
    if (w->token != NULL) {
        s->state = S_DONE;
        s->token = w->token;
        pe_log_info("event=oauth-signed-in did=%s handle=%s", s->login->id.did,
                    s->login->id.handle);
        snprintf(text, sizeof text, "Signed in as @%s. You can close this window.",
                 s->login->id.handle);
        answer_page(w->req, 200, text);
    } else {
        s->state = S_FAILED;
        snprintf(s->message, sizeof s->message, "%.200s", w->err.msg);
        pe_log_info("event=oauth-callback-failed error=%s", w->err.msg);
        answer_page(w->req, status_of(&w->err), "Sign-in failed. Start again from Pocketenv.");
    }
    free(w->state);
    free(w->iss);
    free(w->code);
    free(w);
}

static void on_callback(struct pe_oauth *o, pe_http_request *req)
{
    const char *state = pe_http_query(req, "state");
    slot *s = NULL;
    work *w;

    expire(o);
    for (size_t i = 0; state != NULL && i < PENDING_MAX; i++) {
        slot *c = &o->slots[i];
        if (c->state == S_WAITING && strlen(state) == strlen(c->login->state) &&
            sodium_memcmp(state, c->login->state, strlen(state)) == 0)
            s = c;
    }
    if (s == NULL) {
        answer_page(req, 400, "This sign-in is unknown or has expired. Start again.");
        return;
    }
    if (pe_http_query(req, "error") != NULL || pe_http_query(req, "code") == NULL) {
        s->state = S_FAILED;
        snprintf(s->message, sizeof s->message, "the sign-in was refused or cancelled");
        answer_page(req, 401, "Sign-in refused or cancelled.");
        return;
    }
    w = pe_xcalloc(1, sizeof *w);
    *w = (work){.o = o, .s = s, .req = req};
    w->state = pe_xstrdup(state);
    w->iss = pe_http_query(req, "iss") ? pe_xstrdup(pe_http_query(req, "iss")) : NULL;
    w->code = pe_xstrdup(pe_http_query(req, "code"));
    s->state = S_FINISHING;
    submit(o, w, callback_work, callback_done);
}

/* ---- POST /oauth/token ---- */

static void on_token(struct pe_oauth *o, pe_http_request *req)
{
    json_t *in = json_loads(req->body, 0, NULL);
    const char *p = json_string_value(json_object_get(in, "pickup"));
    slot *s = NULL;

    expire(o);
    for (size_t i = 0; p != NULL && i < PENDING_MAX; i++) {
        slot *c = &o->slots[i];
        if (c->state != S_FREE && strlen(p) == strlen(c->pickup) &&
            sodium_memcmp(p, c->pickup, strlen(p)) == 0)
            s = c;
    }
    json_decref(in);
    if (s == NULL) {
        pe_http_respond_error(req, 404, "NotFound", "no sign-in in progress for this pickup");
    } else if (s->state == S_DONE) {
        respond_json(req, 200,
                     json_pack("{s:s, s:s, s:s}", "token", s->token, "did", s->login->id.did,
                               "handle", s->login->id.handle));
        slot_clear(s); /* once */
    } else if (s->state == S_FAILED) {
        pe_http_respond_error(req, 401, "AuthenticationFailed", s->message);
        slot_clear(s);
    } else {
        respond_json(req, 202, json_pack("{s:s}", "status", "pending"));
    }
}

/* ---- POST /oauth/logout ---- */

#define SEALED_FILE_MAX (64 * 1024)

/* Unseal did's stored session, revoke its refresh token at the
 * authorization server, then forget it. */
static int end_session(struct pe_oauth *o, const char *did, pe_err *err)
{
    char dir[4096], path[4200];
    cleanup_free char *sealed = NULL;
    unsigned char *plain = NULL;
    pe_atproto_login *l = NULL;
    pe_atproto_session ps = {0};
    size_t len = 0;
    json_t *v;
    int rc;

    session_path(o, did, dir, sizeof dir, path, sizeof path);
    if (pe_fs_read_file(path, SEALED_FILE_MAX, &sealed, &len, err) < 0)
        return errno == ENOENT || err->errnum == ENOENT
                   ? pe_err_set(err, PE_ENOENT, 0, "no AT Protocol session for %s", did)
                   : -1;
    if (pe_auth_unseal(o->d->auth, sealed, &plain, &len, err) < 0)
        return pe_err_prefix(err, "session of %s", did);
    v = json_loadb((const char *)plain, len, 0, NULL);
    pe_auth_plain_free(plain);
    rc = pe_atproto_login_restore(&o->client, did, json_string_value(json_object_get(v, "pds")),
                                  json_string_value(json_object_get(v, "issuer")),
                                  json_string_value(json_object_get(v, "dpopKey")), &l, err);
    if (rc == 0) {
        const char *rt = json_string_value(json_object_get(v, "refreshToken"));
        ps.refresh_token = rt ? strdup(rt) : NULL;
        rc = ps.refresh_token ? pe_atproto_revoke(&o->client, l, &ps, err)
                              : 0; /* nothing to revoke: an access token alone expires */
    }
    pe_atproto_session_clear(&ps);
    pe_atproto_login_free(l);
    json_decref(v);
    if (rc == 0 && unlink(path) < 0 && errno != ENOENT)
        return pe_err_sys(err, "remove %s", path);
    return rc;
}

static void logout_work(void *ud)
{
    work *w = ud;
    if (end_session(w->o, w->arg, &w->err) < 0)
        w->token = NULL;
    else
        w->token = pe_xstrdup("");
}

static void logout_done(void *ud)
{
    work *w = ud;

    w->o->d->inflight--;
    if (w->token != NULL) {
        pe_log_info("event=oauth-logout did=%s", w->arg);
        respond_json(w->req, 200, json_object());
    } else {
        pe_log_info("event=oauth-logout-failed did=%s error=%s", w->arg, w->err.msg);
        pe_http_respond_error(w->req, status_of(&w->err),
                              w->err.code == PE_ENOENT ? "NotFound" : "SignOutFailed", w->err.msg);
    }
    free(w->token);
    free(w);
}

static void on_logout(struct pe_oauth *o, pe_http_request *req)
{
    const char *auth = req->authorization;
    cleanup_free char *did = NULL;
    pe_err err = {0};
    work *w;

    if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0 ||
        pe_auth_token_verify(o->d->auth, auth + 7, PE_AUTH_SCOPE_API, &did, &err) != PE_AUTH_OK) {
        pe_http_respond_error(req, 401, "AuthenticationRequired", "a valid API token is needed");
        return;
    }
    w = pe_xcalloc(1, sizeof *w);
    *w = (work){.o = o, .req = req};
    snprintf(w->arg, sizeof w->arg, "%s", did);
    pe_http_defer(req);
    if (pe_ev_submit(o->d->loop, logout_work, logout_done, w, &err) < 0) {
        pe_http_respond_error(req, 503, "Unavailable", "the daemon is busy");
        free(w);
        return;
    }
    o->d->inflight++;
}

static void on_oauth(pe_http_request *req, void *ud)
{
    struct pe_oauth *o = ud;
    bool post = strcmp(req->method, "POST") == 0;

    if (strcmp(req->rest, "login") == 0 && post)
        on_login(o, req);
    else if (strcmp(req->rest, "token") == 0 && post)
        on_token(o, req);
    else if (strcmp(req->rest, "logout") == 0 && post)
        on_logout(o, req);
    else if (strcmp(req->rest, "callback") == 0 && strcmp(req->method, "GET") == 0)
        on_callback(o, req);
    else
        pe_http_respond_error(req, 404, "NotFound", "no such sign-in route");
}

int pe_daemon_register_oauth(pe_daemon *d, const pe_oauth_cfg *cfg, pe_err *err)
{
    struct pe_oauth *o = pe_xcalloc(1, sizeof *o);

    o->d = d;
    snprintf(o->plc, sizeof o->plc, "%s", cfg->plc_url ? cfg->plc_url : PE_ATPROTO_PLC_DEFAULT);
    snprintf(o->redirect, sizeof o->redirect, "http://127.0.0.1:%u/oauth/callback",
             pe_http_server_port(d->srv));
    o->client.net.plc_url = o->plc;
    if (cfg->dns_server) {
        snprintf(o->dns, sizeof o->dns, "%s", cfg->dns_server);
        o->client.net.dns_server = o->dns;
    }
    o->client.net.allow_http = cfg->insecure_http;
    o->client.redirect_uri = o->redirect;
    o->client.scope = SCOPE;
    d->oauth = o;
    return pe_http_route(d->srv, "/oauth/", OAUTH_BODY_MAX, on_oauth, o, err);
}

void pe_daemon_oauth_free(pe_daemon *d)
{
    if (d->oauth == NULL)
        return;
    for (size_t i = 0; i < PENDING_MAX; i++)
        slot_clear(&d->oauth->slots[i]);
    free(d->oauth);
    d->oauth = NULL;
}
