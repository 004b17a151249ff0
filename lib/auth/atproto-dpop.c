/* DPoP keys and proofs (RFC 9449) for the AT Protocol OAuth client: a
 * P-256 key per session, its public JWK, and ES256-signed proofs.
 *
 * OpenSSL does the elliptic-curve work (libsodium has no P-256, and ES256
 * is the one algorithm every AT Protocol authorization server accepts);
 * libsodium does base64url and randomness. A key is an EVP_PKEY; its
 * private part leaves this file only as PKCS#8 PEM for sealed storage.
 */
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth/atproto-internal.h"
#include "core/util.h"

struct pe_atproto_dpop {
    EVP_PKEY *key;
    char jwk_x[48], jwk_y[48]; /* base64url of the 32-byte coordinates */
};

int pe__atproto_b64url(const unsigned char *bin, size_t len, char **out)
{
    size_t n = sodium_base64_encoded_len(len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    if ((*out = malloc(n)) == NULL)
        return -1;
    sodium_bin2base64(*out, n, bin, len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return 0;
}

static int coords(pe_atproto_dpop *d)
{
    unsigned char pub[65];
    size_t len = 0;

    /* Uncompressed point: 0x04 || X (32) || Y (32). */
    if (EVP_PKEY_get_octet_string_param(d->key, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof pub, &len) !=
            1 ||
        len != 65 || pub[0] != 0x04)
        return -1;
    sodium_bin2base64(d->jwk_x, sizeof d->jwk_x, pub + 1, 32,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_bin2base64(d->jwk_y, sizeof d->jwk_y, pub + 33, 32,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return 0;
}

int pe_atproto_dpop_new(pe_atproto_dpop **out, pe_err *err)
{
    pe_atproto_dpop *d = calloc(1, sizeof *d);

    if (d == NULL)
        return pe_err_set(err, PE_ESYS, 12 /* ENOMEM */, "DPoP key");
    d->key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (d->key == NULL || coords(d) < 0) {
        pe_atproto_dpop_free(d);
        return pe_err_set(err, PE_ESYS, 0, "DPoP key: P-256 key generation failed");
    }
    *out = d;
    return 0;
}

int pe_atproto_dpop_load(const char *pem, pe_atproto_dpop **out, pe_err *err)
{
    pe_atproto_dpop *d = calloc(1, sizeof *d);
    BIO *b = BIO_new_mem_buf(pem, -1);

    if (d == NULL || b == NULL) {
        BIO_free(b);
        free(d);
        return pe_err_set(err, PE_ESYS, 12, "DPoP key");
    }
    d->key = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIO_free(b);
    if (d->key == NULL || !EVP_PKEY_is_a(d->key, "EC") || coords(d) < 0) {
        pe_atproto_dpop_free(d);
        return pe_err_set(err, PE_EINVAL, 0, "DPoP key: not a P-256 private key");
    }
    *out = d;
    return 0;
}

int pe_atproto_dpop_pem(const pe_atproto_dpop *d, char **pem, pe_err *err)
{
    BIO *b = BIO_new(BIO_s_secmem());
    char *p = NULL;
    long n;

    if (b == NULL || PEM_write_bio_PrivateKey(b, d->key, NULL, NULL, 0, NULL, NULL) != 1 ||
        (n = BIO_get_mem_data(b, &p)) <= 0 || (*pem = malloc((size_t)n + 1)) == NULL) {
        BIO_free(b);
        return pe_err_set(err, PE_ESYS, 0, "DPoP key: cannot export");
    }
    memcpy(*pem, p, (size_t)n);
    (*pem)[n] = '\0';
    BIO_free(b);
    return 0;
}

void pe_atproto_dpop_free(pe_atproto_dpop *d)
{
    if (d == NULL)
        return;
    EVP_PKEY_free(d->key);
    free(d);
}

json_t *pe__atproto_dpop_jwk(const pe_atproto_dpop *d)
{
    return json_pack("{s:s, s:s, s:s, s:s}", "kty", "EC", "crv", "P-256", "x", d->jwk_x, "y",
                     d->jwk_y);
}

/* DER ECDSA-Sig-Value -> the 64-byte r || s a JWS carries. */
static int der_to_raw(const unsigned char *der, size_t len, unsigned char raw[64])
{
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &der, (long)len);
    const BIGNUM *r = NULL, *s = NULL;
    int ok;

    if (sig == NULL)
        return -1;
    ECDSA_SIG_get0(sig, &r, &s);
    ok = BN_bn2binpad(r, raw, 32) == 32 && BN_bn2binpad(s, raw + 32, 32) == 32;
    ECDSA_SIG_free(sig);
    return ok ? 0 : -1;
}

static char *b64_json(json_t *v)
{
    cleanup_free char *s = json_dumps(v, JSON_COMPACT);
    char *out = NULL;
    if (s == NULL || pe__atproto_b64url((const unsigned char *)s, strlen(s), &out) < 0)
        return NULL;
    return out;
}

/* ES256 over "header.payload"; returns the whole JWS. */
static char *sign_jws(const pe_atproto_dpop *d, json_t *header, json_t *payload)
{
    cleanup_free char *h = b64_json(header), *p = b64_json(payload), *input = NULL, *sig64 = NULL;
    unsigned char der[80], raw[64];
    size_t der_len = sizeof der, n;
    EVP_MD_CTX *ctx = NULL;
    char *jws = NULL;
    int ok;

    if (h == NULL || p == NULL || (input = malloc(strlen(h) + strlen(p) + 2)) == NULL)
        return NULL;
    n = (size_t)snprintf(input, strlen(h) + strlen(p) + 2, "%s.%s", h, p);
    ctx = EVP_MD_CTX_new();
    ok = ctx != NULL && EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, d->key) == 1 &&
         EVP_DigestSign(ctx, der, &der_len, (const unsigned char *)input, n) == 1 &&
         der_to_raw(der, der_len, raw) == 0 && pe__atproto_b64url(raw, sizeof raw, &sig64) == 0;
    EVP_MD_CTX_free(ctx);
    if (!ok || (jws = malloc(n + strlen(sig64) + 2)) == NULL)
        return NULL;
    snprintf(jws, n + strlen(sig64) + 2, "%s.%s", input, sig64);
    return jws;
}

int pe__atproto_dpop_proof(const pe_atproto_dpop *d, const char *method, const char *url,
                           const char *nonce, const char *access_token, char **proof, pe_err *err)
{
    unsigned char jti[16], ath[crypto_hash_sha256_BYTES];
    cleanup_free char *jti64 = NULL, *ath64 = NULL;
    json_t *header = NULL, *payload = NULL;
    const char *q = strpbrk(url, "?#");

    randombytes_buf(jti, sizeof jti);
    if (pe__atproto_b64url(jti, sizeof jti, &jti64) < 0)
        return pe_err_set(err, PE_ESYS, 12, "DPoP proof");
    header = json_pack("{s:s, s:s, s:o}", "typ", "dpop+jwt", "alg", "ES256", "jwk",
                       pe__atproto_dpop_jwk(d));
    /* htu is the URL without query and fragment (RFC 9449 4.2). */
    payload = json_pack("{s:s, s:s, s:s%, s:I}", "jti", jti64, "htm", method, "htu", url,
                        q ? (size_t)(q - url) : strlen(url), "iat", (json_int_t)time(NULL));
    if (payload != NULL && nonce != NULL)
        json_object_set_new(payload, "nonce", json_string(nonce));
    if (payload != NULL && access_token != NULL) {
        crypto_hash_sha256(ath, (const unsigned char *)access_token, strlen(access_token));
        if (pe__atproto_b64url(ath, sizeof ath, &ath64) == 0)
            json_object_set_new(payload, "ath", json_string(ath64));
    }
    *proof = header && payload ? sign_jws(d, header, payload) : NULL;
    json_decref(header);
    json_decref(payload);
    return *proof ? 0 : pe_err_set(err, PE_ESYS, 0, "DPoP proof: signing failed");
}

int pe_atproto_key_thumbprint(const pe_atproto_dpop *d, char out[48])
{
    unsigned char h[crypto_hash_sha256_BYTES];
    char members[160];
    /* RFC 7638: the required members, lexicographic order, no spaces. */
    int n = snprintf(members, sizeof members,
                     "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", d->jwk_x,
                     d->jwk_y);

    if (n < 0 || (size_t)n >= sizeof members)
        return -1;
    crypto_hash_sha256(h, (const unsigned char *)members, (size_t)n);
    sodium_bin2base64(out, 48, h, sizeof h, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return 0;
}

json_t *pe_atproto_key_jwks(const pe_atproto_dpop *d)
{
    char kid[48];
    json_t *jwk = pe__atproto_dpop_jwk(d);

    if (jwk == NULL || pe_atproto_key_thumbprint(d, kid) < 0) {
        json_decref(jwk);
        return NULL;
    }
    json_object_set_new(jwk, "kid", json_string(kid));
    json_object_set_new(jwk, "alg", json_string("ES256"));
    json_object_set_new(jwk, "use", json_string("sig"));
    return json_pack("{s:[o]}", "keys", jwk);
}

int pe__atproto_client_assertion(const pe_atproto_dpop *key, const char *client_id,
                                 const char *audience, char **jwt, pe_err *err)
{
    unsigned char jti[16];
    cleanup_free char *jti64 = NULL;
    char kid[48];
    json_t *header, *payload;
    time_t now = time(NULL);

    randombytes_buf(jti, sizeof jti);
    if (pe__atproto_b64url(jti, sizeof jti, &jti64) < 0 || pe_atproto_key_thumbprint(key, kid) < 0)
        return pe_err_set(err, PE_ESYS, 12, "client assertion");
    /* RFC 7523 3: iss = sub = our client_id, aud = the authorization
     * server's issuer; short-lived, and a jti the server may remember. */
    header = json_pack("{s:s, s:s, s:s}", "typ", "JWT", "alg", "ES256", "kid", kid);
    payload = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "iss", client_id, "sub", client_id, "aud",
                        audience, "jti", jti64, "iat", (json_int_t)now, "exp",
                        (json_int_t)(now + PE_ATPROTO_ASSERTION_TTL_S));
    *jwt = header && payload ? sign_jws(key, header, payload) : NULL;
    json_decref(header);
    json_decref(payload);
    return *jwt ? 0 : pe_err_set(err, PE_ESYS, 0, "client assertion: signing failed");
}
