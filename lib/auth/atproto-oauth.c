/* The AT Protocol OAuth client (contract in include/pocketenv/atproto.h):
 * discovery, PAR + PKCE, DPoP-bound token exchange, refresh, revoke, and
 * a DPoP-authenticated GET on the user's PDS.
 *
 * Every answer is checked against what the login resolved: the PDS must
 * name the authorization server, whose metadata must name itself as
 * issuer; the redirect's state and iss must be this login's; the token
 * answer's sub must be the DID resolved from the handle (a server that
 * signs someone else in is refused). Tokens and codes never reach an error
 * message. Blocking: worker threads only.
 */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/atproto-internal.h"
#include "core/util.h"

#define META_MAX (64 * 1024)
#define TOKEN_ANSWER_MAX (64 * 1024)
#define FORM_MAX 8192

static void random_b64(char *out, size_t n)
{
    unsigned char raw[32];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(out, n, raw, sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

/* "k=v&k=v" with values percent-encoded; NULL-terminated pairs. */
static char *form(const char *const *kv)
{
    char *out = calloc(1, FORM_MAX);
    size_t used = 0;

    for (size_t i = 0; out != NULL && kv[i] != NULL; i += 2) {
        char *v = curl_easy_escape(NULL, kv[i + 1], 0);
        int n =
            v ? snprintf(out + used, FORM_MAX - used, "%s%s=%s", used ? "&" : "", kv[i], v) : -1;
        curl_free(v);
        if (n < 0 || (size_t)n >= FORM_MAX - used) {
            free(out);
            return NULL;
        }
        used += (size_t)n;
    }
    return out;
}

#define ASSERTION_TYPE "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#define FORM_PAIRS 12

/* A session of a confidential client: its client_id is an https URL. */
static bool confidential(const pe_atproto_login *l)
{
    return strncmp(l->client_id, "https://", 8) == 0;
}

/* form(kv) and the client's identity: its client_id, and for a
 * confidential client a client assertion made for this one request. */
static char *auth_form(const pe_atproto_client *c, const pe_atproto_login *l, const char *const *kv,
                       pe_err *err)
{
    const char *all[2 * FORM_PAIRS + 1];
    cleanup_free char *jwt = NULL;
    char *out;
    size_t n = 0;

    for (; kv[n] != NULL; n += 2) {
        if (n >= 2 * (FORM_PAIRS - 3)) { /* room for client_id and the assertion */
            pe_err_set(err, PE_EINVAL, 0, "OAuth request: too many parameters");
            return NULL;
        }
        all[n] = kv[n];
        all[n + 1] = kv[n + 1];
    }
    all[n++] = "client_id";
    all[n++] = l->client_id;
    if (confidential(l)) {
        if (c->client_key == NULL) {
            pe_err_set(err, PE_ESTATE, 0,
                       "a session of the web client %s, but this daemon has no client key "
                       "(started without --atproto-public-url?)",
                       l->client_id);
            return NULL;
        }
        if (pe__atproto_client_assertion(c->client_key, l->client_id, l->as.issuer, &jwt, err) < 0)
            return NULL;
        all[n++] = "client_assertion_type";
        all[n++] = ASSERTION_TYPE;
        all[n++] = "client_assertion";
        all[n++] = jwt;
    }
    all[n] = NULL;
    if ((out = form(all)) == NULL)
        pe_err_set(err, PE_EINVAL, 0, "OAuth request too large");
    return out;
}

static bool url_ok(const pe_atproto_client *c, const char *u)
{
    return u != NULL && strlen(u) < PE_ATPROTO_URL_MAX &&
           (strncmp(u, "https://", 8) == 0 || (c->net.allow_http && strncmp(u, "http://", 7) == 0));
}

static int get_json(const pe_atproto_client *c, const char *url, json_t **out, pe_err *err)
{
    pe__atproto_req rq = {.method = "GET", .url = url, .max = META_MAX};
    pe__atproto_resp rs = {0};

    if (pe__atproto_http(&c->net, &rq, &rs, err) < 0)
        return -1;
    *out = rs.status == 200 ? json_loads(rs.body, JSON_REJECT_DUPLICATES, NULL) : NULL;
    free(rs.body);
    if (!json_is_object(*out)) {
        json_decref(*out);
        return pe_err_set(err, PE_EREMOTE, 0, "GET %s: status %ld, not a JSON object", url,
                          rs.status);
    }
    return 0;
}

static int copy_endpoint(const pe_atproto_client *c, json_t *meta, const char *key, char *dst,
                         bool required, pe_err *err)
{
    const char *v = json_string_value(json_object_get(meta, key));

    if (v == NULL && !required)
        return 0;
    if (!url_ok(c, v))
        return pe_err_set(err, PE_EREMOTE, 0, "authorization server metadata: bad %s", key);
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

/* PDS -> its authorization server's endpoints. */
static int discover(const pe_atproto_client *c, const char *pds, pe_atproto_authz *as, pe_err *err)
{
    char url[PE_ATPROTO_URL_MAX + 64];
    json_t *res = NULL, *meta = NULL;
    const char *issuer, *asurl;
    int rc = -1;

    snprintf(url, sizeof url, "%s/.well-known/oauth-protected-resource", pds);
    if (get_json(c, url, &res, err) < 0)
        return -1;
    asurl = json_string_value(json_array_get(json_object_get(res, "authorization_servers"), 0));
    if (!url_ok(c, asurl)) {
        pe_err_set(err, PE_EREMOTE, 0, "%s names no authorization server", url);
        goto out;
    }
    snprintf(url, sizeof url, "%s/.well-known/oauth-authorization-server", asurl);
    if (get_json(c, url, &meta, err) < 0)
        goto out;
    issuer = json_string_value(json_object_get(meta, "issuer"));
    if (issuer == NULL || strcmp(issuer, asurl) != 0) {
        pe_err_set(err, PE_EREMOTE, 0, "%s: its issuer is not %s", url, asurl);
        goto out;
    }
    memcpy(as->issuer, issuer, strlen(issuer) + 1);
    if (copy_endpoint(c, meta, "pushed_authorization_request_endpoint", as->par, true, err) < 0 ||
        copy_endpoint(c, meta, "authorization_endpoint", as->authorize, true, err) < 0 ||
        copy_endpoint(c, meta, "token_endpoint", as->token, true, err) < 0 ||
        copy_endpoint(c, meta, "revocation_endpoint", as->revoke, false, err) < 0)
        goto out;
    rc = 0;
out:
    json_decref(res);
    json_decref(meta);
    return rc;
}

/* POST a form (or GET when form is NULL) with a DPoP proof; once more with
 * the server's new nonce when it asks for one (RFC 9449 8, 9). */
static int dpop_call_as(const pe_atproto_client *c, const pe_atproto_dpop *key, const char *method,
                        const char *url, const char *body, const char *ctype, const char *access,
                        char *nonce, pe__atproto_resp *rs, pe_err *err)
{
    for (int attempt = 0;; attempt++) {
        cleanup_free char *proof = NULL, *dpop_h = NULL, *auth_h = NULL;
        const char *headers[4] = {0};
        size_t h = 0;

        if (pe__atproto_dpop_proof(key, method, url, nonce[0] ? nonce : NULL, access, &proof, err) <
                0 ||
            asprintf(&dpop_h, "DPoP: %s", proof) < 0 ||
            (access && asprintf(&auth_h, "Authorization: DPoP %s", access) < 0))
            return pe_err_set(err, PE_ESYS, ENOMEM, "%s %s", method, url);
        headers[h++] = dpop_h;
        if (auth_h != NULL)
            headers[h++] = auth_h;
        if (body != NULL)
            headers[h++] = ctype;
        pe__atproto_req rq = {.method = method,
                              .url = url,
                              .body = body,
                              .headers = headers,
                              .max = TOKEN_ANSWER_MAX};
        if (pe__atproto_http(&c->net, &rq, rs, err) < 0)
            return -1;
        bool fresh = rs->nonce[0] && strcmp(rs->nonce, nonce) != 0;
        if (rs->nonce[0])
            memcpy(nonce, rs->nonce, sizeof rs->nonce);
        if (attempt == 0 && fresh && (rs->status == 400 || rs->status == 401) &&
            strstr(rs->body, "use_dpop_nonce") != NULL) {
            free(rs->body);
            rs->body = NULL;
            continue;
        }
        return 0;
    }
}

static int dpop_call(const pe_atproto_client *c, const pe_atproto_dpop *key, const char *method,
                     const char *url, const char *body, const char *access, char *nonce,
                     pe__atproto_resp *rs, pe_err *err)
{
    return dpop_call_as(c, key, method, url, body,
                        "Content-Type: application/x-www-form-urlencoded", access, nonce, rs, err);
}

/* The OAuth error of an answer, for messages: its "error" code only (the
 * description may echo what was sent). */
static int oauth_error(const char *what, const pe__atproto_resp *rs, pe_err *err)
{
    json_t *v = json_loads(rs->body ? rs->body : "", 0, NULL);
    const char *code = json_string_value(json_object_get(v, "error"));
    int status = rs->status == 401 || rs->status == 400 ? PE_EAUTH : PE_EREMOTE;

    pe_err_set(err, status, 0, "%s: status %ld%s%s%s", what, rs->status, code ? ", " : "",
               code ? code : "",
               code && strcmp(code, "invalid_client") == 0
                   ? " (the authorization server refused this client: for a web client, is the "
                     "key the daemon signs with the one its JWKS publishes?)"
                   : "");
    json_decref(v);
    return -1;
}

static int push_request(const pe_atproto_client *c, pe_atproto_login *l, const char *hint,
                        pe_err *err)
{
    unsigned char challenge[crypto_hash_sha256_BYTES];
    char challenge64[48];
    cleanup_free char *body = NULL, *cid = NULL, *ruri = NULL;
    pe__atproto_resp rs = {0};
    json_t *v = NULL;
    const char *request_uri;

    crypto_hash_sha256(challenge, (const unsigned char *)l->verifier, strlen(l->verifier));
    sodium_bin2base64(challenge64, sizeof challenge64, challenge, sizeof challenge,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    body = auth_form(c, l,
                     (const char *const[]){"redirect_uri", c->redirect_uri, "response_type", "code",
                                           "scope", c->scope, "state", l->state, "code_challenge",
                                           challenge64, "code_challenge_method", "S256",
                                           "login_hint", hint, NULL},
                     err);
    if (body == NULL)
        return pe_err_prefix(err, "pushed authorization request");
    if (dpop_call(c, l->dpop, "POST", l->as.par, body, NULL, l->nonce, &rs, err) < 0)
        return -1;
    if (rs.status != 201 && rs.status != 200) {
        oauth_error("pushed authorization request", &rs, err);
        free(rs.body);
        return -1;
    }
    v = json_loads(rs.body, 0, NULL);
    free(rs.body);
    request_uri = json_string_value(json_object_get(v, "request_uri"));
    cid = curl_easy_escape(NULL, l->client_id, 0);
    ruri = request_uri ? curl_easy_escape(NULL, request_uri, 0) : NULL;
    if (ruri == NULL || cid == NULL ||
        asprintf(&l->authorize_url, "%s?client_id=%s&request_uri=%s", l->as.authorize, cid, ruri) <
            0) {
        l->authorize_url = NULL;
        json_decref(v);
        return pe_err_set(err, PE_EREMOTE, 0, "pushed authorization request: no request_uri");
    }
    json_decref(v);
    return 0;
}

/* A new login with the client's client_id: the web client's URL, or the
 * loopback client's, which says its redirect URI and scope. */
static pe_atproto_login *login_new(const pe_atproto_client *c, pe_err *err)
{
    pe_atproto_login *l = calloc(1, sizeof *l);
    cleanup_free char *ru = NULL, *sc = NULL;

    if (l == NULL) {
        pe_err_set(err, PE_ESYS, ENOMEM, "login");
        return NULL;
    }
    if (c->scope == NULL || strstr(c->scope, "atproto") == NULL) {
        free(l);
        pe_err_set(err, PE_EINVAL, 0, "the OAuth scope must contain \"atproto\"");
        return NULL;
    }
    if (c->client_id != NULL) {
        if (strncmp(c->client_id, "https://", 8) != 0 || c->client_key == NULL ||
            (size_t)snprintf(l->client_id, sizeof l->client_id, "%s", c->client_id) >=
                sizeof l->client_id) {
            free(l);
            pe_err_set(err, PE_EINVAL, 0, "a web client needs an https client_id and a key");
            return NULL;
        }
        return l;
    }
    ru = curl_easy_escape(NULL, c->redirect_uri, 0);
    sc = curl_easy_escape(NULL, c->scope, 0);
    if (ru == NULL || sc == NULL ||
        (size_t)snprintf(l->client_id, sizeof l->client_id,
                         "http://localhost?redirect_uri=%s&scope=%s", ru,
                         sc) >= sizeof l->client_id) {
        free(l);
        pe_err_set(err, PE_EINVAL, 0, "redirect URI or scope too long");
        return NULL;
    }
    return l;
}

int pe_atproto_login_restore(const pe_atproto_client *c, const char *did, const char *pds,
                             const char *issuer, const char *dpop_pem, pe_atproto_login **out,
                             pe_err *err)
{
    pe_atproto_login *l = login_new(c, err);

    if (l == NULL)
        return -1;
    if (!pe_atproto_did_valid(did) || !url_ok(c, pds) || issuer == NULL) {
        pe_atproto_login_free(l);
        return pe_err_set(err, PE_EINVAL, 0, "restore session: bad DID, PDS or issuer");
    }
    snprintf(l->id.did, sizeof l->id.did, "%s", did);
    snprintf(l->id.pds, sizeof l->id.pds, "%s", pds);
    if (discover(c, pds, &l->as, err) < 0 || pe_atproto_dpop_load(dpop_pem, &l->dpop, err) < 0) {
        pe_atproto_login_free(l);
        return pe_err_prefix(err, "restore session of %s", did);
    }
    if (strcmp(l->as.issuer, issuer) != 0) {
        pe_atproto_login_free(l);
        return pe_err_set(err, PE_EAUTH, 0,
                          "restore session of %s: its PDS now names another authorization server",
                          did);
    }
    *out = l;
    return 0;
}

int pe_atproto_login_start(const pe_atproto_client *c, const char *handle_or_did,
                           pe_atproto_login **out, pe_err *err)
{
    pe_atproto_login *l = login_new(c, err);

    if (l == NULL)
        return -1;
    random_b64(l->state, sizeof l->state);
    random_b64(l->verifier, sizeof l->verifier);
    if (pe_atproto_resolve(&c->net, handle_or_did, &l->id, err) < 0 ||
        discover(c, l->id.pds, &l->as, err) < 0 || pe_atproto_dpop_new(&l->dpop, err) < 0 ||
        push_request(c, l, handle_or_did, err) < 0) {
        pe_atproto_login_free(l);
        return pe_err_prefix(err, "sign in %.64s", handle_or_did);
    }
    *out = l;
    return 0;
}

/* A token answer: DPoP-bound, for the DID the login resolved. */
static int take_tokens(pe_atproto_login *l, const pe__atproto_resp *rs, pe_atproto_session *s,
                       pe_err *err)
{
    json_t *v = json_loads(rs->body, 0, NULL);
    const char *access = json_string_value(json_object_get(v, "access_token"));
    const char *type = json_string_value(json_object_get(v, "token_type"));
    const char *sub = json_string_value(json_object_get(v, "sub"));
    const char *scope = json_string_value(json_object_get(v, "scope"));
    const char *refresh = json_string_value(json_object_get(v, "refresh_token"));
    int rc = -1;

    if (access == NULL || type == NULL || strcasecmp(type, "DPoP") != 0 || scope == NULL ||
        strstr(scope, "atproto") == NULL) {
        pe_err_set(err, PE_EREMOTE, 0, "token answer: not a DPoP token with the atproto scope");
    } else if (sub == NULL || strcmp(sub, l->id.did) != 0) {
        pe_err_set(err, PE_EAUTH, 0, "token answer: issued for %.64s, not %s", sub ? sub : "nobody",
                   l->id.did);
    } else {
        pe_atproto_session_clear(s);
        snprintf(s->did, sizeof s->did, "%s", sub);
        snprintf(s->scope, sizeof s->scope, "%s", scope);
        s->access_token = strdup(access);
        s->refresh_token = refresh ? strdup(refresh) : NULL;
        s->expires_in = (long)json_integer_value(json_object_get(v, "expires_in"));
        rc = s->access_token && (refresh == NULL || s->refresh_token)
                 ? 0
                 : pe_err_set(err, PE_ESYS, ENOMEM, "token answer");
    }
    json_decref(v);
    return rc;
}

static int token_call(const pe_atproto_client *c, pe_atproto_login *l, const char *body,
                      pe_atproto_session *s, const char *what, pe_err *err)
{
    pe__atproto_resp rs = {0};
    int rc;

    if (body == NULL)
        return pe_err_prefix(err, "%s", what);
    if (dpop_call(c, l->dpop, "POST", l->as.token, body, NULL, l->nonce, &rs, err) < 0)
        return -1;
    rc = rs.status == 200 ? take_tokens(l, &rs, s, err) : oauth_error(what, &rs, err);
    free(rs.body);
    return rc;
}

int pe_atproto_login_finish(const pe_atproto_client *c, pe_atproto_login *l, const char *state,
                            const char *iss, const char *code, pe_atproto_session *s, pe_err *err)
{
    cleanup_free char *body = NULL;

    if (state == NULL || strlen(state) != strlen(l->state) ||
        sodium_memcmp(state, l->state, strlen(l->state)) != 0)
        return pe_err_set(err, PE_EAUTH, 0, "sign-in answer: not for this sign-in (state)");
    if (iss == NULL || strcmp(iss, l->as.issuer) != 0)
        return pe_err_set(err, PE_EAUTH, 0, "sign-in answer: from another server than %s",
                          l->as.issuer);
    if (code == NULL || code[0] == '\0')
        return pe_err_set(err, PE_EAUTH, 0, "sign-in answer: no code");
    body = auth_form(c, l,
                     (const char *const[]){"grant_type", "authorization_code", "code", code,
                                           "redirect_uri", c->redirect_uri, "code_verifier",
                                           l->verifier, NULL},
                     err);
    return token_call(c, l, body, s, "token exchange", err);
}

int pe_atproto_refresh(const pe_atproto_client *c, pe_atproto_login *l, pe_atproto_session *s,
                       pe_err *err)
{
    cleanup_free char *body = NULL;

    if (s->refresh_token == NULL)
        return pe_err_set(err, PE_ESTATE, 0, "refresh: the session has no refresh token");
    body = auth_form(c, l,
                     (const char *const[]){"grant_type", "refresh_token", "refresh_token",
                                           s->refresh_token, NULL},
                     err);
    return token_call(c, l, body, s, "token refresh", err);
}

int pe_atproto_revoke(const pe_atproto_client *c, pe_atproto_login *l, const pe_atproto_session *s,
                      pe_err *err)
{
    const char *token = s->refresh_token ? s->refresh_token : s->access_token;
    cleanup_free char *body = NULL;
    pe__atproto_resp rs = {0};
    int rc = 0;

    if (l->as.revoke[0] == '\0')
        return pe_err_set(err, PE_ENOTCAP, 0, "%s has no revocation endpoint", l->as.issuer);
    body = auth_form(c, l, (const char *const[]){"token", token, NULL}, err);
    if (body == NULL)
        return pe_err_prefix(err, "revoke");
    if (dpop_call(c, l->dpop, "POST", l->as.revoke, body, NULL, l->nonce, &rs, err) < 0)
        return -1;
    if (rs.status != 200)
        rc = oauth_error("revoke", &rs, err);
    free(rs.body);
    return rc;
}

int pe_atproto_pds_get(const pe_atproto_client *c, pe_atproto_login *l, const pe_atproto_session *s,
                       const char *nsid_and_query, long *status, char **body, pe_err *err)
{
    cleanup_free char *url = NULL;
    pe__atproto_resp rs = {0};

    if (asprintf(&url, "%s/xrpc/%s", l->id.pds, nsid_and_query) < 0)
        return pe_err_set(err, PE_ESYS, ENOMEM, "PDS call");
    if (dpop_call(c, l->dpop, "GET", url, NULL, s->access_token, l->pds_nonce, &rs, err) < 0)
        return -1;
    *status = rs.status;
    *body = rs.body;
    return 0;
}

int pe_atproto_pds_post(const pe_atproto_client *c, pe_atproto_login *l,
                        const pe_atproto_session *s, const char *nsid, const char *json_body,
                        long *status, char **body, pe_err *err)
{
    cleanup_free char *url = NULL;
    pe__atproto_resp rs = {0};

    if (asprintf(&url, "%s/xrpc/%s", l->id.pds, nsid) < 0)
        return pe_err_set(err, PE_ESYS, ENOMEM, "PDS call");
    if (dpop_call_as(c, l->dpop, "POST", url, json_body, "Content-Type: application/json",
                     s->access_token, l->pds_nonce, &rs, err) < 0)
        return -1;
    *status = rs.status;
    *body = rs.body;
    return 0;
}

void pe_atproto_login_free(pe_atproto_login *l)
{
    if (l == NULL)
        return;
    pe_atproto_dpop_free(l->dpop);
    free(l->authorize_url);
    sodium_memzero(l, sizeof *l);
    free(l);
}

void pe_atproto_session_clear(pe_atproto_session *s)
{
    if (s->access_token)
        sodium_memzero(s->access_token, strlen(s->access_token));
    if (s->refresh_token)
        sodium_memzero(s->refresh_token, strlen(s->refresh_token));
    free(s->access_token);
    free(s->refresh_token);
    memset(s, 0, sizeof *s);
}
