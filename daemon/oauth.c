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
 *                        at their authorization server, forget it, and
 *                        revoke every API token of that DID issued so far
 *   GET  /oauth/client-metadata.json, /oauth/jwks.json
 *                        the web client's metadata document and public key
 *   POST /login          {"handle", "cli": true}: upstream's CLI; the URL to
 *                        open as text, the token later posted by the
 *                        callback page to the CLI's localhost:6997 listener
 *
 * The pickup secret, not the browser, carries the token to whoever
 * started the sign-in (the CLI polls with it): a token never travels in a
 * URL, and the callback page shows nothing worth stealing. It is compared
 * in constant time and works once.
 *
 * Without --atproto-public-url the client is the spec's loopback client
 * (lib/auth/atproto-oauth.c), with redirect URI
 * http://127.0.0.1:PORT/oauth/callback: right for a daemon its users
 * reach on this machine. With it, a confidential web client: GET
 * /oauth/client-metadata.json and /oauth/jwks.json are its metadata
 * document and public key, every call to the authorization server carries
 * a client assertion signed with DATA/atproto-client-key.sealed (made
 * once, sealed, 0600), the redirect URI is URL/oauth/callback. The PDS's
 * refresh token and the
 * session's DPoP key are kept sealed to the daemon's own X25519 key in
 * DATA/atproto/ (0700 directory, 0600 files), never in the clear.
 *
 * Threading: the table of sign-ins in progress belongs to the loop thread;
 * network work runs on the loop's worker pool with the slot marked busy
 * (a busy slot is neither reused nor freed until its work is done).
 */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
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
#include "pocketenv/store.h"

#define PENDING_MAX 32            /* sign-ins in progress at once */
#define PENDING_TTL_S 600         /* the user has 10 minutes to finish */
#define TOKEN_TTL_S (30L * 86400) /* our API token: 30 days, as the owner's */
#define OAUTH_BODY_MAX 4096
/* What the daemon does in a user's repository: writes its own
 * io.pocketenv.* records (granular scopes), nothing else. */
#define SCOPE "atproto repo:io.pocketenv.sandbox"
#define CLIENT_KEY_FILE "atproto-client-key.sealed" /* in DATA: not a session */
#define CLIENT_KEY_MAX (16 * 1024)
/* Where upstream's CLI waits for the token (`pocketenv login HANDLE` in
 * apps/cli: a listener on port 6997 of the user's machine). */
#define UPSTREAM_CLI_URL "http://localhost:6997/token"

enum slot_state { S_FREE = 0, S_STARTING, S_WAITING, S_FINISHING, S_DONE, S_FAILED };

typedef struct slot {
    enum slot_state state;
    time_t born;
    char pickup[48];
    pe_atproto_login *login;
    char *token; /* ours, once S_DONE */
    char message[256];
    /* Started by upstream's CLI (POST /login {handle, cli: true}): the
     * callback page hands the token to the CLI's listener on this
     * machine (UPSTREAM_CLI_URL). */
    bool upstream_cli;
} slot;

/* A signed-in user's PDS session in memory, for the daemon's own calls to
 * their PDS (records, profile): restored from the sealed file on first
 * use, its access token refreshed before it expires. */
#define LIVE_MAX 64
/* Refresh when less than this is left of the access token, or a quarter
 * of its lifetime when that is shorter (a server issuing short tokens
 * must not make every call a refresh). */
#define REFRESH_MARGIN_S 120

typedef struct live {
    char did[PE_AUTH_DID_MAX]; /* "" when free */
    pe_atproto_login *login;
    pe_atproto_session ps;
    time_t expires_at; /* of ps.access_token; 0: none yet */
    long margin;       /* refresh when less than this is left of it */
    time_t used;
} live;

struct pe_oauth {
    pe_daemon *d;
    /* Serializes every use of the stored sessions (PDS calls, refresh,
     * logout): a refresh rotates the refresh token, and two threads
     * refreshing the same one at once would lose the session. */
    pthread_mutex_t lock;
    live live[LIVE_MAX];
    pe_atproto_client client;
    char plc[PE_ATPROTO_URL_MAX], dns[64];
    char redirect[PE_ATPROTO_URL_MAX];
    /* The confidential web client (--atproto-public-url): its public URL,
     * client_id (its metadata document's URL) and signing key. */
    char public_url[PE_ATPROTO_URL_MAX - 64]; /* room for /oauth/client-metadata.json */
    char client_id[PE_ATPROTO_URL_MAX];
    pe_atproto_dpop *client_key;
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
    } else if (s->upstream_cli) {
        /* Upstream's CLI reads the answer as the URL to open. */
        const char *const headers[] = {"Cache-Control", "no-store", NULL};
        s->state = S_WAITING;
        s->born = time(NULL);
        pe_http_respond(w->req, 200, "text/plain; charset=utf-8", s->login->authorize_url,
                        strlen(s->login->authorize_url), headers);
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

static void on_login(struct pe_oauth *o, pe_http_request *req, bool upstream)
{
    json_t *in = json_loads(req->body, 0, NULL);
    const char *h = json_string_value(json_object_get(in, "handle"));
    work *w;
    slot *s;

    if (upstream && json_object_get(in, "password") != NULL) {
        json_decref(in);
        pe_http_respond_error(req, 501, "MethodNotImplemented",
                              "this daemon takes no passwords: sign in with the handle alone, "
                              "on your PDS's own page");
        return;
    }
    if (upstream && !json_is_true(json_object_get(in, "cli"))) {
        json_decref(in);
        pe_http_respond_error(req, 400, "InvalidRequest",
                              "POST /login is for upstream's CLI ({\"handle\", \"cli\": true}); "
                              "a web page signs in with POST /oauth/login");
        return;
    }
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
    s->upstream_cli = upstream;
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
    /* clientId: a session is bound to the client it was issued to, and a
     * loopback client's id carries the daemon's port of the day. */
    v = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s?, s:I}", "did", ps->did, "pds", l->id.pds,
                  "issuer", l->as.issuer, "clientId", l->client_id, "dpopKey", pem, "refreshToken",
                  ps->refresh_token, "savedAt", (json_int_t)time(NULL));
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
    if (keep_session(w->o, l, &ps, &w->err) == 0 &&
        pe_auth_token_mint(w->o->d->auth, ps.did, TOKEN_TTL_S, PE_AUTH_SCOPE_API, &w->token,
                           &w->err) == 0) {
        /* Who they are, from their repository: handle (verified both
         * ways), display name, avatar. A profile that cannot be read now
         * is read again by getProfile; the sign-in stands. */
        pe_err perr;
        pe_store *s = pe_daemon_store(w->o->d, &perr);
        pe_err_clear(&perr);
        if (s == NULL || pe_daemon_oauth_profile_sync(w->o->d, s, ps.did, l->id.handle, &perr) < 0)
            pe_log_warn("profile of %s: %s", ps.did, perr.msg);
    }
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

/* The callback page of a sign-in upstream's CLI started: its script takes
 * the token with the pickup (once) and gives it to the CLI's listener,
 * as upstream's web app does; nothing else may run or be reached. The
 * pickup is in the page, not in any URL; the page is not cached. */
static void answer_cli_page(pe_http_request *req, const slot *s, const char *text)
{
    char nonce[32], csp[256], page[4096]; /* the handle, twice, is 253 characters at most */
    unsigned char raw[16];

    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(nonce, sizeof nonce, raw, sizeof raw, sodium_base64_VARIANT_ORIGINAL);
    snprintf(csp, sizeof csp,
             "default-src 'none'; script-src 'nonce-%s'; connect-src 'self' %s; "
             "form-action 'none'; frame-ancestors 'none'",
             nonce, UPSTREAM_CLI_URL);
    const char *const headers[] = {"Cache-Control",
                                   "no-store",
                                   "Referrer-Policy",
                                   "no-referrer",
                                   "Content-Security-Policy",
                                   csp,
                                   NULL};
    int n = snprintf(
        page, sizeof page,
        "<!doctype html><meta charset=utf-8><title>Pocketenv sign-in</title>"
        "<p id=m>%s Handing the token to the Pocketenv CLI&hellip;</p>"
        "<script nonce=\"%s\">(async () => {"
        "const m = document.getElementById('m');"
        "try {"
        "const r = await fetch('token', {method: 'POST', headers: {'Content-Type': "
        "'application/json'}, body: JSON.stringify({pickup: '%s'})});"
        "const t = await r.json();"
        "if (!r.ok) throw new Error(t.message || r.status);"
        "const c = await fetch('%s', {method: 'POST', headers: {'Content-Type': "
        "'application/json'}, body: JSON.stringify({token: t.token})});"
        "if (!c.ok) throw new Error('the CLI answered ' + c.status);"
        "m.textContent = '%s The Pocketenv CLI has your token.';"
        "} catch (e) { m.textContent = 'The Pocketenv CLI did not get the token: ' + e.message "
        "+ '. Is pocketenv login still running?'; }"
        "})();</script>\n",
        text, nonce, s->pickup, UPSTREAM_CLI_URL, text);
    if (n < 0 || (size_t)n >= sizeof page) {
        answer_page(req, 500, "Sign-in page too large.");
        return;
    }
    pe_http_respond(req, 200, "text/html; charset=utf-8", page, (size_t)n, headers);
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
        if (s->upstream_cli)
            answer_cli_page(w->req, s, text);
        else
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

/* did's stored session, unsealed: its login brought back (the
 * authorization server discovered again) and its refresh token. */
static int load_session(struct pe_oauth *o, const char *did, pe_atproto_login **l,
                        pe_atproto_session *ps, pe_err *err)
{
    char dir[4096], path[4200];
    cleanup_free char *sealed = NULL;
    unsigned char *plain = NULL;
    size_t len = 0;
    json_t *v;
    int rc;

    session_path(o, did, dir, sizeof dir, path, sizeof path);
    if (pe_fs_read_file(path, SEALED_FILE_MAX, &sealed, &len, err) < 0)
        return errno == ENOENT || err->errnum == ENOENT
                   ? pe_err_set(err, PE_ENOENT, 0, "no AT Protocol session for %s: sign in again",
                                did)
                   : -1;
    if (pe_auth_unseal(o->d->auth, sealed, &plain, &len, err) < 0)
        return pe_err_prefix(err, "session of %s", did);
    v = json_loadb((const char *)plain, len, 0, NULL);
    pe_auth_plain_free(plain);
    rc = pe_atproto_login_restore(&o->client, did, json_string_value(json_object_get(v, "pds")),
                                  json_string_value(json_object_get(v, "issuer")),
                                  json_string_value(json_object_get(v, "dpopKey")), l, err);
    if (rc == 0) {
        const char *rt = json_string_value(json_object_get(v, "refreshToken"));
        const char *cid = json_string_value(json_object_get(v, "clientId"));
        if (cid != NULL && strlen(cid) < sizeof(*l)->client_id)
            snprintf((*l)->client_id, sizeof(*l)->client_id, "%s", cid);
        memset(ps, 0, sizeof *ps);
        snprintf(ps->did, sizeof ps->did, "%s", did);
        ps->refresh_token = rt ? strdup(rt) : NULL;
    }
    json_decref(v);
    return rc;
}

static void live_clear(live *e)
{
    pe_atproto_login_free(e->login);
    pe_atproto_session_clear(&e->ps);
    memset(e, 0, sizeof *e);
}

/* did's entry, or NULL (under o->lock). */
static live *live_find(struct pe_oauth *o, const char *did)
{
    for (size_t i = 0; i < LIVE_MAX; i++)
        if (o->live[i].did[0] && strcmp(o->live[i].did, did) == 0)
            return &o->live[i];
    return NULL;
}

/* The session of did is over at its authorization server (its refresh
 * token refused: revoked, expired, the app removed by its user): its
 * sealed file goes, so nothing asks the server again until the user signs
 * in again (the record writer then finds no session: no network). */
static void session_ended(struct pe_oauth *o, const char *did, pe_err *err)
{
    char dir[4096], path[4200], why[200];

    snprintf(why, sizeof why, "%.199s", err->msg);
    session_path(o, did, dir, sizeof dir, path, sizeof path);
    if (unlink(path) < 0 && errno != ENOENT)
        pe_log_warn("remove %s: %s", path, strerror(errno));
    pe_log_info("event=atproto-session-ended did=%s error=%s", did, why);
    pe_err_set(err, PE_EAUTH, 0, "the AT Protocol session of %s ended (%s): sign in again", did,
               why);
}

/* New tokens for e, the rotated refresh token sealed again at once (the
 * old one is dead: losing the new one would lose the session). why: for
 * the log (expiring, or refused by the PDS). */
static int live_refresh(struct pe_oauth *o, live *e, const char *why, pe_err *err)
{
    if (pe_atproto_refresh(&o->client, e->login, &e->ps, err) < 0) {
        if (err->code == PE_EAUTH)
            session_ended(o, e->did, err);
        return pe_err_prefix(err, "session of %s", e->did);
    }
    long life = e->ps.expires_in > 0 ? e->ps.expires_in : 60;
    e->expires_at = time(NULL) + life;
    e->margin = life / 4 < REFRESH_MARGIN_S ? life / 4 : REFRESH_MARGIN_S;
    pe_log_info("event=atproto-session-refreshed did=%s why=%s expires_in=%ld", e->did, why,
                e->ps.expires_in);
    return keep_session(o, e->login, &e->ps, err);
}

/* did's live session with an access token good for REFRESH_MARGIN_S more
 * (under o->lock): restored and refreshed as needed. */
static live *live_get(struct pe_oauth *o, const char *did, pe_err *err)
{
    live *e = live_find(o, did);
    time_t now = time(NULL);

    if (e == NULL) {
        live *oldest = &o->live[0];
        for (size_t i = 0; i < LIVE_MAX && oldest->did[0]; i++)
            if (o->live[i].did[0] == '\0' || o->live[i].used < oldest->used)
                oldest = &o->live[i];
        live_clear(oldest);
        if (load_session(o, did, &oldest->login, &oldest->ps, err) < 0) {
            live_clear(oldest);
            return NULL;
        }
        snprintf(oldest->did, sizeof oldest->did, "%s", did);
        e = oldest;
    }
    e->used = now;
    if ((e->ps.access_token == NULL || e->expires_at - now < e->margin) &&
        live_refresh(o, e, e->ps.access_token ? "expiring" : "restored", err) < 0) {
        live_clear(e);
        return NULL;
    }
    return e;
}

int pe_daemon_oauth_pds_call(pe_daemon *d, const char *did, const char *nsid, const char *json_body,
                             long *status, char **body, pe_err *err)
{
    struct pe_oauth *o = d->oauth;
    int rc = -1;
    live *e;

    *body = NULL;
    if (o == NULL)
        return pe_err_set(err, PE_ENOENT, 0, "no AT Protocol sign-in on this daemon");
    pthread_mutex_lock(&o->lock);
    if ((e = live_get(o, did, err)) == NULL)
        goto out;
    /* Only ever the session's own repository: a write names it as repo. */
    if (json_body != NULL) {
        json_t *v = json_loads(json_body, 0, NULL);
        const char *repo = json_string_value(json_object_get(v, "repo"));
        bool own = repo && strcmp(repo, e->ps.did) == 0 && strcmp(e->ps.did, did) == 0;
        json_decref(v);
        if (!own) {
            pe_err_set(err, PE_EAUTH, 0, "%s: a write to another repository than %s's", nsid, did);
            goto out;
        }
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        rc = json_body ? pe_atproto_pds_post(&o->client, e->login, &e->ps, nsid, json_body, status,
                                             body, err)
                       : pe_atproto_pds_get(&o->client, e->login, &e->ps, nsid, status, body, err);
        /* Refused although we thought it fresh (revoked, a clock off):
         * refresh once and try again. */
        if (rc < 0 || *status != 401 || attempt == 1)
            break;
        free(*body);
        *body = NULL;
        if (live_refresh(o, e, "refused", err) < 0) {
            live_clear(e);
            rc = -1;
            break;
        }
    }
out:
    pthread_mutex_unlock(&o->lock);
    return rc;
}

/* An avatar blob's URL on the user's own PDS (any client can fetch it;
 * no Bluesky CDN assumed), or NULL. */
static char *avatar_url(const char *pds, const char *did, const json_t *avatar)
{
    const char *cid = json_string_value(json_object_get(json_object_get(avatar, "ref"), "$link"));

    if (cid == NULL || strspn(cid, "abcdefghijklmnopqrstuvwxyz234567") != strlen(cid) ||
        strlen(cid) > 128)
        return NULL; /* a base32 CID, nothing else goes into the URL */
    return pe_xasprintf("%s/xrpc/com.atproto.sync.getBlob?did=%s&cid=%s", pds, did, cid);
}

int pe_daemon_oauth_profile_sync(pe_daemon *d, pe_store *s, const char *did, const char *handle,
                                 pe_err *err)
{
    char q[PE_AUTH_DID_MAX + 128], pds[PE_ATPROTO_URL_MAX] = "";
    cleanup_free char *body = NULL, *avatar = NULL;
    pe_store_user u = {0}, had = {0};
    long status = 0;
    json_t *v = NULL, *value;
    int rc;

    snprintf(q, sizeof q,
             "com.atproto.repo.getRecord?repo=%s&collection=app.bsky.actor.profile&rkey=self", did);
    if (pe_daemon_oauth_pds_call(d, did, q, NULL, &status, &body, err) < 0)
        return -1;
    pthread_mutex_lock(&d->oauth->lock);
    {
        live *e = live_find(d->oauth, did);
        if (e)
            snprintf(pds, sizeof pds, "%s", e->login->id.pds);
    }
    pthread_mutex_unlock(&d->oauth->lock);
    if (status == 200 && (v = json_loads(body, 0, NULL)) == NULL)
        return pe_err_set(err, PE_EREMOTE, 0, "profile of %s: the PDS answered garbage", did);
    if (status != 200 && status != 400 && status != 404) /* 400: RecordNotFound, no profile */
        return pe_err_set(err, PE_EREMOTE, 0, "profile of %s: status %ld", did, status);
    value = json_object_get(v, "value");
    if (pe_store_user_get(s, did, &had, err) < 0 && err->code != PE_ENOENT) {
        json_decref(v);
        return -1;
    }
    u.did = did;
    u.handle = handle ? handle : had.handle ? had.handle : "handle.invalid";
    u.display_name = json_string_value(json_object_get(value, "displayName"));
    if (u.display_name && strlen(u.display_name) > 640)
        u.display_name = NULL; /* the lexicon's maxLength; longer is not a profile */
    if (pds[0])
        u.avatar = avatar = avatar_url(pds, did, json_object_get(value, "avatar"));
    rc = pe_store_user_upsert(s, &u, err);
    json_decref(v);
    pe_store_user_clear(&had);
    return rc;
}

bool pe_daemon_oauth_upstream_login(pe_daemon *d, pe_http_request *req)
{
    if (d->oauth == NULL)
        return false;
    on_login(d->oauth, req, true);
    return true;
}

const pe_atproto_cfg *pe_daemon_oauth_net(pe_daemon *d)
{
    return d->oauth ? &d->oauth->client.net : NULL;
}

bool pe_daemon_oauth_signed_in(pe_daemon *d, const char *did)
{
    char dir[4096], path[4200];

    if (d->oauth == NULL || !pe_atproto_did_valid(did))
        return false;
    session_path(d->oauth, did, dir, sizeof dir, path, sizeof path);
    return access(path, F_OK) == 0;
}

/* Revoke did's refresh token at the authorization server, then forget
 * the session (memory and file). */
static int end_session(struct pe_oauth *o, const char *did, pe_err *err)
{
    char dir[4096], path[4200];
    live *e;
    int rc;

    pthread_mutex_lock(&o->lock);
    if ((e = live_find(o, did)) != NULL)
        live_clear(e);
    e = &(live){0};
    rc = load_session(o, did, &e->login, &e->ps, err);
    if (rc == 0)
        rc = e->ps.refresh_token ? pe_atproto_revoke(&o->client, e->login, &e->ps, err)
                                 : 0; /* nothing to revoke: an access token alone expires */
    live_clear(e);
    session_path(o, did, dir, sizeof dir, path, sizeof path);
    if (rc == 0 && unlink(path) < 0 && errno != ENOENT)
        rc = pe_err_sys(err, "remove %s", path);
    pthread_mutex_unlock(&o->lock);
    return rc;
}

/* Our API tokens of did issued up to this second are refused from now on
 * (the next second's are valid: iat has a second's resolution), here at
 * once and in every daemon on this store at its next tick (at once on a
 * PostgreSQL store: its nodes hear the change, daemon/cluster-listen.c). */
static int revoke_api_tokens(pe_daemon *d, const char *did, pe_err *err)
{
    pe_store *s = pe_daemon_store(d, err);
    pe_store_user u;

    if (s == NULL || pe_daemon_user_ensure(s, did, &u, err) < 0)
        return -1;
    pe_store_user_clear(&u);
    if (pe_store_user_revoke_tokens(s, did, (time(NULL) + 1) * 1000LL, err) < 0)
        return -1;
    return pe_daemon_auth_refresh(d->auth, s, err);
}

static void logout_work(void *ud)
{
    work *w = ud;
    if (end_session(w->o, w->arg, &w->err) < 0 || revoke_api_tokens(w->o->d, w->arg, &w->err) < 0)
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

/* ---- the web client's metadata document and JWKS ---- */

static void on_client_metadata(struct pe_oauth *o, pe_http_request *req)
{
    char jwks[PE_ATPROTO_URL_MAX + 32];

    snprintf(jwks, sizeof jwks, "%s/oauth/jwks.json", o->public_url);
    respond_json(req, 200,
                 json_pack("{s:s, s:s, s:s, s:s, s:[s,s], s:[s], s:[s], s:s, s:b, s:s, s:s, s:s}",
                           "client_id", o->client_id, "client_name", "Pocketenv", "client_uri",
                           o->public_url, "application_type", "web", "grant_types",
                           "authorization_code", "refresh_token", "response_types", "code",
                           "redirect_uris", o->redirect, "scope", SCOPE, "dpop_bound_access_tokens",
                           1, "token_endpoint_auth_method", "private_key_jwt",
                           "token_endpoint_auth_signing_alg", "ES256", "jwks_uri", jwks));
}

static void on_oauth(pe_http_request *req, void *ud)
{
    struct pe_oauth *o = ud;
    bool post = strcmp(req->method, "POST") == 0;
    bool get = strcmp(req->method, "GET") == 0;

    if (o->client_key != NULL && get && strcmp(req->rest, "client-metadata.json") == 0)
        on_client_metadata(o, req);
    else if (o->client_key != NULL && get && strcmp(req->rest, "jwks.json") == 0)
        respond_json(req, 200, pe_atproto_key_jwks(o->client_key));
    else if (strcmp(req->rest, "login") == 0 && post)
        on_login(o, req, false);
    else if (strcmp(req->rest, "token") == 0 && post)
        on_token(o, req);
    else if (strcmp(req->rest, "logout") == 0 && post)
        on_logout(o, req);
    else if (strcmp(req->rest, "callback") == 0 && strcmp(req->method, "GET") == 0)
        on_callback(o, req);
    else
        pe_http_respond_error(req, 404, "NotFound", "no such sign-in route");
}

/* The web client's signing key: made once, kept sealed to the daemon's
 * own key in DATA (mode 0600), so its JWKS stays the same across
 * restarts and the sessions it signed for keep working. */
static int client_key_load(struct pe_oauth *o, pe_err *err)
{
    char path[4200];
    cleanup_free char *sealed = NULL, *pem = NULL, *resealed = NULL;
    unsigned char *plain = NULL;
    size_t len = 0;
    int rc;

    snprintf(path, sizeof path, "%s/" CLIENT_KEY_FILE, o->d->rt.data_dir);
    if (pe_fs_read_file(path, CLIENT_KEY_MAX, &sealed, &len, err) == 0) {
        if (pe_auth_unseal(o->d->auth, sealed, &plain, &len, err) < 0)
            return pe_err_prefix(err, "web client key %s", path);
        pem = pe_xcalloc(1, len + 1);
        memcpy(pem, plain, len);
        pe_auth_plain_free(plain);
        rc = pe_atproto_dpop_load(pem, &o->client_key, err);
        sodium_memzero(pem, len);
        return rc < 0 ? pe_err_prefix(err, "web client key %s", path) : 0;
    }
    if (errno != ENOENT && err->errnum != ENOENT)
        return -1;
    pe_err_clear(err);
    if (pe_atproto_dpop_new(&o->client_key, err) < 0 ||
        pe_atproto_dpop_pem(o->client_key, &pem, err) < 0)
        return -1;
    rc = pe_auth_seal(pe_auth_public_key_hex(o->d->auth), pem, strlen(pem), &resealed, err);
    sodium_memzero(pem, strlen(pem));
    if (rc < 0 || pe_fs_write_atomic(path, resealed, strlen(resealed), 0600, err) < 0)
        return pe_err_prefix(err, "web client key %s", path);
    pe_log_info("event=atproto-client-key-created path=%s", path);
    return 0;
}

/* --atproto-public-url: https://HOST[:PORT][/PATH], where the daemon's
 * /oauth/ routes are reached from the Internet (a TLS proxy in front). */
static int public_url_set(struct pe_oauth *o, const char *url, pe_err *err)
{
    size_t n = strlen(url);

    while (n > 8 && url[n - 1] == '/')
        n--;
    if (strncmp(url, "https://", 8) != 0 || n <= 8 || strpbrk(url, "?#@ \t\r\n") != NULL ||
        n >= sizeof o->public_url)
        return pe_err_set(err, PE_EINVAL, 0,
                          "--atproto-public-url: want https://HOST[:PORT][/PATH] (no query, no "
                          "user, at most %zu characters)",
                          sizeof o->public_url - 1);
    snprintf(o->public_url, sizeof o->public_url, "%.*s", (int)n, url);
    snprintf(o->client_id, sizeof o->client_id, "%s/oauth/client-metadata.json", o->public_url);
    snprintf(o->redirect, sizeof o->redirect, "%s/oauth/callback", o->public_url);
    return client_key_load(o, err);
}

int pe_daemon_register_oauth(pe_daemon *d, const pe_oauth_cfg *cfg, pe_err *err)
{
    struct pe_oauth *o = pe_xcalloc(1, sizeof *o);

    o->d = d;
    pthread_mutex_init(&o->lock, NULL);
    snprintf(o->plc, sizeof o->plc, "%s", cfg->plc_url ? cfg->plc_url : PE_ATPROTO_PLC_DEFAULT);
    snprintf(o->redirect, sizeof o->redirect, "http://127.0.0.1:%u/oauth/callback",
             pe_http_server_port(d->srv));
    o->client.net.plc_url = o->plc;
    if (cfg->dns_server) {
        snprintf(o->dns, sizeof o->dns, "%s", cfg->dns_server);
        o->client.net.dns_server = o->dns;
    }
    o->client.net.allow_http = cfg->insecure_http;
    o->client.net.allow_private = cfg->allow_private;
    o->client.redirect_uri = o->redirect;
    o->client.scope = SCOPE;
    d->oauth = o;
    if (cfg->public_url != NULL) {
        if (public_url_set(o, cfg->public_url, err) < 0)
            return -1;
        o->client.client_id = o->client_id;
        o->client.client_key = o->client_key;
        pe_log_info("event=atproto-web-client client_id=%s", o->client_id);
    }
    return pe_http_route(d->srv, "/oauth/", OAUTH_BODY_MAX, on_oauth, o, err);
}

void pe_daemon_oauth_free(pe_daemon *d)
{
    if (d->oauth == NULL)
        return;
    for (size_t i = 0; i < PENDING_MAX; i++)
        slot_clear(&d->oauth->slots[i]);
    for (size_t i = 0; i < LIVE_MAX; i++)
        live_clear(&d->oauth->live[i]);
    pe_atproto_dpop_free(d->oauth->client_key);
    pthread_mutex_destroy(&d->oauth->lock);
    free(d->oauth);
    d->oauth = NULL;
}
