/* HS256 API and terminal tokens, and the CLI's token file.
 *
 * Tokens are minted and verified with libjwt 1.10 (Debian bookworm). That
 * version has no validation API (jwt_valid_* came in 1.12), so expiry, iat
 * and scope are checked here, and it picks the algorithm from the token's
 * own header, so before libjwt sees a token we decode the header ourselves
 * and refuse anything but "alg": "HS256": "none" (which libjwt 1.10 would
 * accept without a key), RS256/ES256 with our secret passed as a "public
 * key", and HS384/HS512 never reach it. jwt_get_alg is checked again after
 * decoding. Debian's 1.10.2-1+deb12u1 compares the HMAC in constant time
 * (CVE-2024-25189).
 *
 * Upstream ignores expiry and signs every token kind with one secret, so a
 * leaked terminal token works forever as a user token (reference §4.1,
 * §9.2). Here every token carries exp and a "scope" claim, and the verifier
 * is told which scopes an endpoint accepts.
 *
 * Thread-safe: all state is in the caller's pe_auth. That includes a
 * cache of verified tokens (below), because every client sends the same
 * token with every call and a full check costs three JSON parses and an
 * HMAC: about a sixth of the daemon's loop time per request.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include <jansson.h>
#include <jwt.h>
#include <sodium.h>

#include "auth/auth-internal.h"
#include "core/fs.h"
#include "core/util.h"

static const struct {
    int bit;
    const char *name;
} scopes[] = {
    {PE_AUTH_SCOPE_API, "api"},
    {PE_AUTH_SCOPE_TERMINAL, "terminal"},
    {PE_AUTH_SCOPE_PREVIEW, "preview"},
    {PE_AUTH_SCOPE_PREVIEW_CODE, "preview-code"},
};

/* The scopes whose tokens are bound to an audience (and carry a jti). */
#define BOUND_SCOPES (PE_AUTH_SCOPE_PREVIEW | PE_AUTH_SCOPE_PREVIEW_CODE)
#define JTI_HEX 32

static const char *const result_names[] = {
    [PE_AUTH_OK] = "ok",
    [PE_AUTH_MALFORMED] = "malformed",
    [PE_AUTH_BAD_ALG] = "bad_alg",
    [PE_AUTH_BAD_SIGNATURE] = "bad_signature",
    [PE_AUTH_BAD_CLAIMS] = "bad_claims",
    [PE_AUTH_EXPIRED] = "expired",
    [PE_AUTH_NOT_YET_VALID] = "not_yet_valid",
    [PE_AUTH_WRONG_SCOPE] = "wrong_scope",
    [PE_AUTH_REVOKED] = "revoked",
};

const char *pe_auth_result_name(enum pe_auth_result r)
{
    if ((size_t)r >= PE_ARRAY_LEN(result_names) || result_names[r] == NULL)
        return "unknown";
    return result_names[r];
}

static const char *scope_name(int bit)
{
    for (size_t i = 0; i < PE_ARRAY_LEN(scopes); i++)
        if (scopes[i].bit == bit)
            return scopes[i].name;
    return NULL;
}

static int scope_bit(const char *name)
{
    for (size_t i = 0; i < PE_ARRAY_LEN(scopes); i++)
        if (strcmp(scopes[i].name, name) == 0)
            return scopes[i].bit;
    return 0;
}

/* "did:" then printable ASCII without spaces: enough to keep log lines and
 * SQL parameters sane; the DID method itself is not our business here. */
static int did_valid(const char *did)
{
    size_t n = strnlen(did, PE_AUTH_DID_MAX);

    if (n >= PE_AUTH_DID_MAX || n <= 4 || strncmp(did, "did:", 4) != 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (did[i] <= ' ' || did[i] > '~')
            return 0;
    return 1;
}

static int64_t revoked_before(struct pe__auth_cache *c, const char *did);

/* Printable ASCII without spaces, like a DID. */
static bool aud_valid(const char *aud)
{
    size_t n = strnlen(aud, PE_AUTH_AUD_MAX);

    if (n == 0 || n >= PE_AUTH_AUD_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (aud[i] <= ' ' || aud[i] > '~')
            return false;
    return true;
}

static int mint(const pe_auth *auth, const char *did, long long ttl_seconds, int scope,
                const char *aud, time_t now, char **jwt, pe_err *err)
{
    int64_t before;
    char jti[JTI_HEX + 1];
    unsigned char raw[JTI_HEX / 2];
    const char *sname = scope_name(scope);
    jwt_t *j = NULL;
    char *s = NULL;

    if (did == NULL || !did_valid(did))
        return pe_err_set(err, PE_EINVAL, 0, "mint token: invalid did");
    if (sname == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "mint token: unknown scope %d", scope);
    if ((aud != NULL) != ((scope & BOUND_SCOPES) != 0) || (aud && !aud_valid(aud)))
        return pe_err_set(err, PE_EINVAL, 0, "mint token: scope %s %s", sname,
                          aud ? "takes no audience, or an invalid one" : "needs an audience");
    if (ttl_seconds <= 0 || ttl_seconds > PE_AUTH_TTL_MAX)
        return pe_err_set(err, PE_EINVAL, 0, "mint token: ttl %lld s not in 1..%lld", ttl_seconds,
                          (long long)PE_AUTH_TTL_MAX);
    if (now < 0)
        return pe_err_set(err, PE_EINVAL, 0, "mint token: clock before 1970");
    before = revoked_before(auth->cache, did);
    if (now < before)
        now = (time_t)before; /* at most a second ahead */
    if (jwt_new(&j) != 0)
        return pe_err_set(err, PE_ESYS, ENOMEM, "mint token");
    if (jwt_add_grant(j, "did", did) != 0 || jwt_add_grant(j, "sub", did) != 0 ||
        jwt_add_grant(j, "scope", sname) != 0 || jwt_add_grant_int(j, "iat", (long)now) != 0 ||
        jwt_add_grant_int(j, "exp", (long)(now + ttl_seconds)) != 0 ||
        jwt_set_alg(j, JWT_ALG_HS256, auth->keys->jwt_secret, PE__AUTH_JWT_SECRET_BYTES) != 0)
        goto fail;
    if (aud != NULL) {
        randombytes_buf(raw, sizeof(raw));
        sodium_bin2hex(jti, sizeof(jti), raw, sizeof(raw));
        if (jwt_add_grant(j, "aud", aud) != 0 || jwt_add_grant(j, "jti", jti) != 0)
            goto fail;
    }
    s = jwt_encode_str(j);
    if (s == NULL)
        goto fail;
    jwt_free(j);
    *jwt = s;
    return 0;
fail:
    jwt_free(j);
    return pe_err_set(err, PE_ESYS, ENOMEM, "mint token");
}

int pe_auth_token_mint_at(const pe_auth *auth, const char *did, long long ttl_seconds, int scope,
                          time_t now, char **jwt, pe_err *err)
{
    return mint(auth, did, ttl_seconds, scope, NULL, now, jwt, err);
}

int pe_auth_token_mint(const pe_auth *auth, const char *did, long long ttl_seconds, int scope,
                       char **jwt, pe_err *err)
{
    return mint(auth, did, ttl_seconds, scope, NULL, time(NULL), jwt, err);
}

int pe_auth_token_mint_aud(const pe_auth *auth, const char *did, long long ttl_seconds, int scope,
                           const char *aud, char **jwt, pe_err *err)
{
    if (aud == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "mint token: no audience");
    return mint(auth, did, ttl_seconds, scope, aud, time(NULL), jwt, err);
}

static enum pe_auth_result reject(pe_err *err, enum pe_auth_result r, const char *why)
{
    pe_err_set(err, PE_EINVAL, 0, "token rejected (%s): %s", pe_auth_result_name(r), why);
    return r;
}

/* Decode one base64url part (no padding, canonical, as every JWT encoder
 * writes it) and parse it as a JSON object with no duplicate keys. */
static json_t *decode_part(const char *b64, size_t len)
{
    unsigned char buf[PE_AUTH_TOKEN_MAX];
    size_t n = 0;

    if (len == 0 || sodium_base642bin(buf, sizeof(buf), b64, len, NULL, &n, NULL,
                                      sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
        return NULL;
    json_t *obj = json_loadb((const char *)buf, n, JSON_REJECT_DUPLICATES, NULL);
    if (obj != NULL && !json_is_object(obj)) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

/* Our own look at the token before libjwt's: shape, header, payload.
 * *payload is set on PE_AUTH_OK. */
static enum pe_auth_result precheck(const char *jwt, json_t **payload, pe_err *err)
{
    size_t len = strnlen(jwt, PE_AUTH_TOKEN_MAX + 1);
    const char *dot1, *dot2;
    json_t *head;
    const char *alg, *typ;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    size_t mac_len = 0;

    if (len > PE_AUTH_TOKEN_MAX)
        return reject(err, PE_AUTH_MALFORMED, "longer than 4096 bytes");
    dot1 = memchr(jwt, '.', len);
    dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - jwt)) : NULL;
    if (dot2 == NULL || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - jwt)) != NULL ||
        dot2 + 1 == jwt + len)
        return reject(err, PE_AUTH_MALFORMED, "not three non-empty parts");
    head = decode_part(jwt, (size_t)(dot1 - jwt));
    if (head == NULL)
        return reject(err, PE_AUTH_MALFORMED, "header is not base64url JSON");
    alg = json_string_value(json_object_get(head, "alg"));
    typ = json_string_value(json_object_get(head, "typ"));
    if (alg == NULL || strcmp(alg, "HS256") != 0) {
        json_decref(head);
        return reject(err, PE_AUTH_BAD_ALG, "alg is not HS256");
    }
    if ((json_object_get(head, "typ") != NULL && (typ == NULL || strcmp(typ, "JWT") != 0)) ||
        json_object_get(head, "crit") != NULL) {
        json_decref(head);
        return reject(err, PE_AUTH_MALFORMED, "unsupported typ or crit header");
    }
    json_decref(head);
    /* libjwt compares base64 text; decoding here as well pins the signature
     * to its one canonical 32-byte encoding. */
    if (sodium_base642bin(mac, sizeof(mac), dot2 + 1, len - (size_t)(dot2 + 1 - jwt), NULL,
                          &mac_len, NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        mac_len != sizeof(mac))
        return reject(err, PE_AUTH_MALFORMED, "signature is not 32 bytes of base64url");
    *payload = decode_part(dot1 + 1, (size_t)(dot2 - dot1 - 1));
    if (*payload == NULL)
        return reject(err, PE_AUTH_MALFORMED, "payload is not base64url JSON");
    return PE_AUTH_OK;
}

/* A claim that must be a non-negative JSON integer. */
static int int_claim(jwt_t *j, const char *name, long *out)
{
    long v = jwt_get_grant_int(j, name);

    if (errno != 0 || v < 0)
        return -1;
    *out = v;
    return 0;
}

/* The claims of a signed token that every use is checked against. */
typedef struct claims {
    const char *did;
    long iat, exp;
    int bit;                   /* its scope */
    char aud[PE_AUTH_AUD_MAX]; /* "" for unbound scopes */
    char jti[JTI_HEX + 1];     /* "" for unbound scopes */
} claims;

/* aud and jti: both present (strings of the right shape) exactly for the
 * bound scopes, so no other token can pass for a preview's and a preview's
 * can never pass for an API token. */
static enum pe_auth_result get_binding(json_t *payload, claims *c, pe_err *err)
{
    json_t *aud = json_object_get(payload, "aud"), *jti = json_object_get(payload, "jti");
    const char *a = json_string_value(aud), *t = json_string_value(jti);

    c->aud[0] = c->jti[0] = '\0';
    if ((c->bit & BOUND_SCOPES) == 0)
        return aud || jti ? reject(err, PE_AUTH_BAD_CLAIMS, "aud/jti on an unbound scope")
                          : PE_AUTH_OK;
    if (a == NULL || !aud_valid(a) || t == NULL || strlen(t) != JTI_HEX ||
        strspn(t, "0123456789abcdef") != JTI_HEX)
        return reject(err, PE_AUTH_BAD_CLAIMS, "aud/jti missing or invalid");
    memcpy(c->aud, a, strlen(a) + 1);
    memcpy(c->jti, t, JTI_HEX + 1);
    return PE_AUTH_OK;
}

static enum pe_auth_result get_claims(jwt_t *j, json_t *payload, claims *c, pe_err *err)
{
    const char *scope = jwt_get_grant(j, "scope");
    json_t *sub = json_object_get(payload, "sub");

    c->did = jwt_get_grant(j, "did");
    c->iat = c->exp = 0;
    if (c->did == NULL || !did_valid(c->did))
        return reject(err, PE_AUTH_BAD_CLAIMS, "did missing or invalid");
    if (sub != NULL && (!json_is_string(sub) || strcmp(json_string_value(sub), c->did) != 0))
        return reject(err, PE_AUTH_BAD_CLAIMS, "sub differs from did");
    if (int_claim(j, "iat", &c->iat) < 0 || int_claim(j, "exp", &c->exp) < 0 || c->exp <= c->iat)
        return reject(err, PE_AUTH_BAD_CLAIMS, "iat/exp missing or invalid");
    c->bit = scope ? scope_bit(scope) : 0;
    if (c->bit == 0)
        return reject(err, PE_AUTH_BAD_CLAIMS, "scope missing or unknown");
    return get_binding(payload, c, err);
}

/* Checked at every use, cached or not. */
static enum pe_auth_result check_use(const claims *c, int accepted, time_t now, pe_err *err)
{
    /* Written so that no sum can overflow: exp and iat come from the token. */
    if (now - PE_AUTH_CLOCK_SKEW >= c->exp)
        return reject(err, PE_AUTH_EXPIRED, "expired");
    if (c->iat > now + PE_AUTH_CLOCK_SKEW)
        return reject(err, PE_AUTH_NOT_YET_VALID, "issued in the future");
    if ((c->bit & accepted) == 0)
        return reject(err, PE_AUTH_WRONG_SCOPE, "scope not accepted here");
    return PE_AUTH_OK;
}

/* ---- verified tokens ----
 *
 * A token whose signature and claims checked out, with those claims. The
 * slot is chosen by a keyed hash (SipHash, random key) and the token is
 * compared in constant time, so neither which slot is looked at nor how
 * long the comparison takes says anything about a cached token. Tokens
 * are wiped when evicted. Expiry and scope are checked at every use. */

#define VERIFIED_SLOTS 256

struct verified {
    char *jwt; /* NULL: empty slot */
    size_t len;
    char *did;
    claims c;
};

/* Users whose tokens issued before a time are revoked (few: a linear
 * scan). It shares the cache's lock. */
struct revoked {
    char *did;
    int64_t before_s;
};

/* One-time tokens already used, until they expire (then a replay fails
 * on its expiry anyway). A fixed table: see pe_auth_token_verify_aud. */
#define USED_MAX 4096

struct used {
    char jti[JTI_HEX + 1];
    long exp;
};

struct pe__auth_cache {
    pthread_mutex_t lock;
    unsigned char key[crypto_shorthash_KEYBYTES];
    struct verified slot[VERIFIED_SLOTS];
    struct revoked *revoked;
    size_t nrevoked;
    struct used used[USED_MAX];
    size_t nused;
};

struct pe__auth_cache *pe__auth_cache_new(void)
{
    struct pe__auth_cache *c = pe_xcalloc(1, sizeof(*c));

    pthread_mutex_init(&c->lock, NULL);
    crypto_shorthash_keygen(c->key);
    return c;
}

static void slot_clear(struct verified *v)
{
    if (v->jwt) {
        sodium_memzero(v->jwt, v->len);
        free(v->jwt);
    }
    free(v->did);
    memset(v, 0, sizeof(*v));
}

void pe__auth_cache_free(struct pe__auth_cache *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < VERIFIED_SLOTS; i++)
        slot_clear(&c->slot[i]);
    for (size_t i = 0; i < c->nrevoked; i++)
        free(c->revoked[i].did);
    free(c->revoked);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static struct verified *slot_of(struct pe__auth_cache *c, const char *jwt, size_t len)
{
    unsigned char h[crypto_shorthash_BYTES];
    uint64_t n;

    crypto_shorthash(h, (const unsigned char *)jwt, len, c->key);
    memcpy(&n, h, sizeof(n));
    return &c->slot[n % VERIFIED_SLOTS];
}

/* The cached claims of jwt into *out (did malloc'd); false if none. */
static int64_t revoked_locked(const struct pe__auth_cache *c, const char *did);

/* A cached token's claims, and (under the same lock) its user's
 * revocation time. */
static bool cache_get(struct pe__auth_cache *c, const char *jwt, claims *out, char **did,
                      int64_t *before)
{
    size_t len = strlen(jwt);
    struct verified *v;
    bool hit;

    pthread_mutex_lock(&c->lock);
    v = slot_of(c, jwt, len);
    hit = v->jwt && v->len == len && sodium_memcmp(v->jwt, jwt, len) == 0;
    if (hit) {
        *out = v->c;
        *did = pe_xstrdup(v->did);
        out->did = *did;
        *before = revoked_locked(c, v->did);
    }
    pthread_mutex_unlock(&c->lock);
    return hit;
}

static void cache_put(struct pe__auth_cache *c, const char *jwt, const claims *cl)
{
    size_t len = strlen(jwt);
    struct verified *v;

    pthread_mutex_lock(&c->lock);
    v = slot_of(c, jwt, len);
    slot_clear(v);
    v->jwt = pe_xstrdup(jwt);
    v->len = len;
    v->did = pe_xstrdup(cl->did);
    v->c = *cl;
    v->c.did = NULL; /* v->did */
    pthread_mutex_unlock(&c->lock);
}

void pe_auth_revoke_before(pe_auth *auth, const char *did, int64_t before_s)
{
    struct pe__auth_cache *c = auth->cache;
    size_t i;

    pthread_mutex_lock(&c->lock);
    for (i = 0; i < c->nrevoked && strcmp(c->revoked[i].did, did) != 0; i++)
        ;
    if (i == c->nrevoked && before_s > 0) {
        c->revoked = pe_xrealloc(c->revoked, (c->nrevoked + 1) * sizeof(*c->revoked));
        c->revoked[c->nrevoked++] = (struct revoked){pe_xstrdup(did), before_s};
    } else if (i < c->nrevoked && before_s > 0) {
        c->revoked[i].before_s = before_s;
    } else if (i < c->nrevoked) {
        free(c->revoked[i].did);
        c->revoked[i] = c->revoked[--c->nrevoked];
    }
    pthread_mutex_unlock(&c->lock);
}

/* The time before which did's tokens are revoked; 0 if none. */
static int64_t revoked_locked(const struct pe__auth_cache *c, const char *did)
{
    for (size_t i = 0; i < c->nrevoked; i++)
        if (strcmp(c->revoked[i].did, did) == 0)
            return c->revoked[i].before_s;
    return 0;
}

static int64_t revoked_before(struct pe__auth_cache *c, const char *did)
{
    int64_t before;

    pthread_mutex_lock(&c->lock);
    before = revoked_locked(c, did);
    pthread_mutex_unlock(&c->lock);
    return before;
}

/* Mark c's jti used; PE_AUTH_REVOKED if it was, or if the table is full
 * of codes that have not expired. Expired entries are dropped first. */
static enum pe_auth_result consume(struct pe__auth_cache *k, const claims *c, time_t now,
                                   pe_err *err)
{
    enum pe_auth_result r = PE_AUTH_OK;
    size_t i;

    pthread_mutex_lock(&k->lock);
    for (i = 0; i < k->nused;) {
        if (now - PE_AUTH_CLOCK_SKEW >= k->used[i].exp)
            k->used[i] = k->used[--k->nused];
        else if (strcmp(k->used[i].jti, c->jti) == 0)
            break;
        else
            i++;
    }
    if (i < k->nused)
        r = reject(err, PE_AUTH_REVOKED, "one-time token used before");
    else if (k->nused == USED_MAX)
        r = reject(err, PE_AUTH_REVOKED, "too many one-time tokens in use at once");
    else
        k->used[k->nused++] = (struct used){.exp = c->exp};
    if (r == PE_AUTH_OK)
        memcpy(k->used[k->nused - 1].jti, c->jti, sizeof(c->jti));
    pthread_mutex_unlock(&k->lock);
    return r;
}

/* The audience a bound token must have (aud NULL: the caller takes no
 * bound token, so none passes), then its single use. */
static enum pe_auth_result check_binding(const pe_auth *auth, const claims *c, const char *aud,
                                         bool once, time_t now, pe_err *err)
{
    if (aud == NULL)
        return c->aud[0] ? reject(err, PE_AUTH_WRONG_SCOPE, "bound token where none is taken")
                         : PE_AUTH_OK;
    if (c->aud[0] == '\0' || strcmp(c->aud, aud) != 0)
        return reject(err, PE_AUTH_WRONG_SCOPE, "token is for another audience");
    return once ? consume(auth->cache, c, now, err) : PE_AUTH_OK;
}

/* check_use, then revocation (before: the user's revocation time). */
static enum pe_auth_result check_all(const claims *c, int64_t before, int accepted, time_t now,
                                     pe_err *err)
{
    enum pe_auth_result r = check_use(c, accepted, now, err);

    if (r == PE_AUTH_OK && c->iat < before)
        r = reject(err, PE_AUTH_REVOKED,
                   "the user's tokens were revoked after this one was issued");
    return r;
}

/* The whole check; aud NULL for unbound tokens (which then must not carry
 * one). */
static enum pe_auth_result verify(const pe_auth *auth, const char *jwt, int accepted_scopes,
                                  const char *aud, bool once, time_t now, char **did_out,
                                  int64_t *iat_out, pe_err *err)
{
    json_t *payload = NULL;
    jwt_t *j = NULL;
    char *cached_did = NULL;
    enum pe_auth_result r;
    int64_t before;
    claims c;

    if (jwt == NULL)
        return reject(err, PE_AUTH_MALFORMED, "no token");
    if (cache_get(auth->cache, jwt, &c, &cached_did, &before)) {
        r = check_all(&c, before, accepted_scopes, now, err);
        if (r == PE_AUTH_OK)
            r = check_binding(auth, &c, aud, once, now, err);
        if (r == PE_AUTH_OK && iat_out != NULL)
            *iat_out = c.iat;
        if (r == PE_AUTH_OK && did_out != NULL)
            *did_out = pe_steal_ptr(&cached_did);
        free(cached_did);
        return r;
    }
    r = precheck(jwt, &payload, err);
    if (r != PE_AUTH_OK)
        return r;
    if (jwt_decode(&j, jwt, auth->keys->jwt_secret, PE__AUTH_JWT_SECRET_BYTES) != 0) {
        /* Shape, header and payload passed precheck: what is left is the
         * signature (or something libjwt finds stricter than we do). */
        json_decref(payload);
        return reject(err, PE_AUTH_BAD_SIGNATURE, "signature does not verify");
    }
    if (jwt_get_alg(j) != JWT_ALG_HS256)
        r = reject(err, PE_AUTH_BAD_ALG, "alg is not HS256");
    else
        r = get_claims(j, payload, &c, err);
    if (r == PE_AUTH_OK) /* signed and well formed: whatever the time */
        cache_put(auth->cache, jwt, &c);
    if (r == PE_AUTH_OK)
        r = check_all(&c, revoked_before(auth->cache, c.did), accepted_scopes, now, err);
    if (r == PE_AUTH_OK)
        r = check_binding(auth, &c, aud, once, now, err);
    if (r == PE_AUTH_OK && iat_out != NULL)
        *iat_out = c.iat;
    if (r == PE_AUTH_OK && did_out != NULL)
        *did_out = pe_xstrdup(c.did);
    jwt_free(j);
    json_decref(payload);
    return r;
}

enum pe_auth_result pe_auth_token_verify_at(const pe_auth *auth, const char *jwt,
                                            int accepted_scopes, time_t now, char **did_out,
                                            pe_err *err)
{
    return verify(auth, jwt, accepted_scopes, NULL, false, now, did_out, NULL, err);
}

enum pe_auth_result pe_auth_token_verify(const pe_auth *auth, const char *jwt, int accepted_scopes,
                                         char **did_out, pe_err *err)
{
    return verify(auth, jwt, accepted_scopes, NULL, false, time(NULL), did_out, NULL, err);
}

enum pe_auth_result pe_auth_token_verify_aud(const pe_auth *auth, const char *jwt,
                                             int accepted_scopes, const char *aud, bool once,
                                             char **did_out, pe_err *err)
{
    if (aud == NULL)
        return reject(err, PE_AUTH_BAD_CLAIMS, "no audience to check");
    return verify(auth, jwt, accepted_scopes, aud, once, time(NULL), did_out, NULL, err);
}

enum pe_auth_result pe_auth_token_verify_iat(const pe_auth *auth, const char *jwt,
                                             int accepted_scopes, const char *aud, char **did_out,
                                             int64_t *iat_out, pe_err *err)
{
    return verify(auth, jwt, accepted_scopes, aud, false, time(NULL), did_out, iat_out, err);
}

bool pe_auth_revoked(const pe_auth *auth, const char *did, int64_t iat)
{
    return iat < revoked_before(auth->cache, did);
}

int pe_auth_write_token_file(const char *path, const char *jwt, pe_err *err)
{
    cleanup_free char *dir = pe_xstrdup(path);
    char *slash = strrchr(dir, '/');
    json_t *obj;
    char *text;
    int ret;

    if (slash != NULL && slash != dir) {
        *slash = '\0';
        if (pe_fs_mkdir_p(dir, 0700, err) < 0)
            return pe_err_prefix(err, "write token file");
    }
    obj = json_pack("{s:s}", "token", jwt);
    if (obj == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "write token file %s: token is not a string", path);
    text = json_dumps(obj, 0);
    json_decref(obj);
    if (text == NULL)
        return pe_err_set(err, PE_ESYS, ENOMEM, "write token file %s", path);
    ret = pe_fs_write_atomic(path, text, strlen(text), 0600, err);
    sodium_memzero(text, strlen(text));
    free(text);
    return ret;
}
