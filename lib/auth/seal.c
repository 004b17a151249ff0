/* Sealed values: libsodium sealed boxes to the daemon's X25519 key.
 *
 * Clients seal secrets, files and provider credentials with crypto_box_seal
 * to the public key the daemon publishes and send them base64url without
 * padding (reference §5); the store keeps that ciphertext as is and the
 * daemon opens it only at the point of use. Plaintext goes into
 * sodium_malloc'd memory (guard pages, locked, wiped by sodium_free), and
 * no error message here quotes the input or the output.
 *
 * Stateless and thread-safe; the key is read-only in the caller's pe_auth.
 */
#include <errno.h>
#include <string.h>

#include <sodium.h>

#include "auth/auth-internal.h"
#include "core/util.h"

/* Longest base64 text of PE_AUTH_SEALED_MAX bytes, with padding. */
#define SEALED_B64_MAX (((size_t)PE_AUTH_SEALED_MAX + 2) / 3 * 4)

/* base64url, unpadded first (what clients send), then padded. Returns the
 * decoded length or -1; buf holds cap bytes. */
static long decode_b64url(const char *b64, size_t len, unsigned char *buf, size_t cap)
{
    static const int variants[] = {sodium_base64_VARIANT_URLSAFE_NO_PADDING,
                                   sodium_base64_VARIANT_URLSAFE};
    size_t n = 0;

    for (size_t i = 0; i < PE_ARRAY_LEN(variants); i++)
        if (sodium_base642bin(buf, cap, b64, len, NULL, &n, NULL, variants[i]) == 0)
            return (long)n;
    return -1;
}

int pe_auth_unseal(const pe_auth *auth, const char *b64url, unsigned char **plain, size_t *len,
                   pe_err *err)
{
    size_t b64_len = b64url ? strnlen(b64url, SEALED_B64_MAX + 1) : 0;
    cleanup_free unsigned char *sealed = NULL;
    unsigned char *out = NULL;
    size_t plain_len;
    long n;

    if (b64_len == 0)
        return pe_err_set(err, PE_EINVAL, 0, "unseal: empty value");
    if (b64_len > SEALED_B64_MAX)
        return pe_err_set(err, PE_EINVAL, E2BIG, "unseal: sealed value larger than %d bytes",
                          PE_AUTH_SEALED_MAX);
    sealed = pe_xmalloc(b64_len / 4 * 3 + 3);
    n = decode_b64url(b64url, b64_len, sealed, b64_len / 4 * 3 + 3);
    if (n < 0)
        return pe_err_set(err, PE_EINVAL, 0, "unseal: value is not base64url");
    if ((size_t)n > PE_AUTH_SEALED_MAX)
        return pe_err_set(err, PE_EINVAL, E2BIG, "unseal: sealed value larger than %d bytes",
                          PE_AUTH_SEALED_MAX);
    if ((size_t)n < crypto_box_SEALBYTES)
        return pe_err_set(err, PE_EINVAL, 0, "unseal: value too short to be a sealed box");
    plain_len = (size_t)n - crypto_box_SEALBYTES;
    out = sodium_malloc(plain_len + 1);
    if (out == NULL)
        return pe_err_sys(err, "unseal: allocate");
    if (crypto_box_seal_open(out, sealed, (unsigned long long)n, auth->keys->box_pk,
                             auth->keys->box_sk) != 0) {
        sodium_free(out);
        return pe_err_set(err, PE_EINVAL, 0,
                          "unseal: value was not sealed to this server's key or was altered");
    }
    out[plain_len] = '\0';
    *plain = out;
    *len = plain_len;
    return 0;
}

void pe_auth_plain_free(unsigned char *plain)
{
    sodium_free(plain);
}

int pe_auth_seal(const char *public_key_hex, const void *plain, size_t len, char **b64url,
                 pe_err *err)
{
    unsigned char pk[crypto_box_PUBLICKEYBYTES];
    size_t pk_len = 0, sealed_len, b64_cap;
    const char *end = NULL;
    cleanup_free unsigned char *sealed = NULL;
    char *out;

    if (sodium_init() < 0)
        return pe_err_set(err, PE_ESYS, 0, "initialize libsodium");
    if (public_key_hex == NULL || strlen(public_key_hex) != 2 * sizeof(pk) ||
        sodium_hex2bin(pk, sizeof(pk), public_key_hex, 2 * sizeof(pk), NULL, &pk_len, &end) != 0 ||
        pk_len != sizeof(pk) || *end != '\0')
        return pe_err_set(err, PE_EINVAL, 0, "seal: public key is not 64 hex characters");
    if (len > PE_AUTH_SEALED_MAX - crypto_box_SEALBYTES)
        return pe_err_set(err, PE_EINVAL, E2BIG, "seal: value larger than %d bytes",
                          PE_AUTH_SEALED_MAX - crypto_box_SEALBYTES);
    sealed_len = len + crypto_box_SEALBYTES;
    sealed = pe_xmalloc(sealed_len);
    if (crypto_box_seal(sealed, plain, len, pk) != 0)
        return pe_err_set(err, PE_EINVAL, 0, "seal: invalid public key");
    b64_cap = sodium_base64_ENCODED_LEN(sealed_len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    out = pe_xmalloc(b64_cap);
    sodium_bin2base64(out, b64_cap, sealed, sealed_len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    *b64url = out;
    return 0;
}
