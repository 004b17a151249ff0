/* Shared by lib/auth's files: the pe_auth layout and the base58 encoder
 * (exposed to tests/unit/test-auth.c for its vectors). */
#ifndef PE_AUTH_INTERNAL_H
#define PE_AUTH_INTERNAL_H

#include <stddef.h>

#include <sodium.h>

#include "pocketenv/auth.h"

#define PE__AUTH_JWT_SECRET_BYTES 32

/* Key bytes: one sodium_malloc'd block, read-only once loaded. */
struct pe__auth_keys {
    unsigned char jwt_secret[PE__AUTH_JWT_SECRET_BYTES];
    unsigned char sign_sk[crypto_sign_SECRETKEYBYTES]; /* seed || pk */
    unsigned char box_sk[crypto_box_SECRETKEYBYTES];
    unsigned char box_pk[crypto_box_PUBLICKEYBYTES];
};

/* Tokens already verified (token.c). */
struct pe__auth_cache;
struct pe__auth_cache *pe__auth_cache_new(void);
void pe__auth_cache_free(struct pe__auth_cache *c);

struct pe_auth {
    struct pe__auth_keys *keys;
    struct pe__auth_cache *cache;
    char did[PE_AUTH_DID_MAX];
    char box_pk_hex[crypto_box_PUBLICKEYBYTES * 2 + 1];
};

/* base58btc (Bitcoin alphabet) of len bytes into out (cap bytes, NUL
 * included). Returns the string length, or -1 if cap is too small. */
int pe__auth_base58_encode(const unsigned char *in, size_t len, char *out, size_t cap);

#endif
