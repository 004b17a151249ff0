/* Identity, API tokens and sealed secrets of the daemon.
 *
 * pe_auth holds the daemon's three long-lived keys, created in
 * DATA/keys/ on first start and reloaded on every later one:
 *
 *   jwt-hs256.key      32 random bytes: the HS256 secret that signs tokens
 *   owner-ed25519.key  64 bytes, libsodium's Ed25519 secret key (seed || pk):
 *                      the owner's identity, did:key:z6Mk...
 *   seal-x25519.key    64 bytes, X25519 secret key || public key: opens the
 *                      values clients seal with crypto_box_seal (reference §5)
 *
 * The directory is 0700 and the files 0600, owned by the daemon's user; a
 * key file anyone else could read or replace is refused at load, never
 * "fixed". Key bytes live in sodium_malloc'd memory (guard pages, locked,
 * read-only after load) and are never logged nor put in error messages.
 *
 * Threading: a pe_auth is immutable after pe_auth_open, so every function
 * below may run concurrently on worker threads with the same pe_auth.
 */
#ifndef POCKETENV_AUTH_H
#define POCKETENV_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "pocketenv/err.h"

typedef struct pe_auth pe_auth;

/* A did:key of an Ed25519 key is "did:key:z" + 48 base58 chars. Other DIDs
 * (did:plc, did:web) may be longer: token claims accept up to
 * PE_AUTH_DID_MAX - 1 characters. */
#define PE_AUTH_DID_MAX 256

/* Longest token pe_auth_token_verify reads; longer input is refused before
 * any decoding, so a client cannot make the daemon parse megabytes. */
#define PE_AUTH_TOKEN_MAX 4096

/* Clock skew tolerated on exp and iat, in seconds. Tokens are minted and
 * checked by the same host, so only a clock step between the two (NTP
 * correction, VM resume) needs covering; 30 s keeps an expired token's
 * afterlife short. */
#define PE_AUTH_CLOCK_SKEW 30

/* Longest lifetime pe_auth_token_mint accepts: 10 years. Upstream's CLI
 * tokens claim 1000 years; ours always expire. */
#define PE_AUTH_TTL_MAX (10LL * 365 * 24 * 3600)

/* Largest sealed value pe_auth_unseal accepts (decoded bytes). */
#define PE_AUTH_SEALED_MAX (1024 * 1024)

/* Token scopes, carried in the "scope" claim as "api", "terminal",
 * "preview" or "preview-code". They are bits so a verifier can accept
 * several: a terminal endpoint that also takes a user's API token passes
 * PE_AUTH_SCOPE_API | PE_AUTH_SCOPE_TERMINAL. The two preview scopes are
 * bound to one exposed port of one sandbox by an "aud" claim (mint and
 * verify them with the _aud functions): a preview's cookie or sign-in code
 * opens that preview and nothing else, so a page served from a sandbox
 * that gets hold of one cannot call the API or open another preview. */
enum pe_auth_scope {
    PE_AUTH_SCOPE_API = 1 << 0,          /* user token: every XRPC method */
    PE_AUTH_SCOPE_TERMINAL = 1 << 1,     /* short-lived, terminals only */
    PE_AUTH_SCOPE_PREVIEW = 1 << 2,      /* a preview's session cookie (aud) */
    PE_AUTH_SCOPE_PREVIEW_CODE = 1 << 3, /* one-time sign-in code of a preview (aud) */
};

/* Longest "aud" claim: "<sandbox id>:<port>" and the like. */
#define PE_AUTH_AUD_MAX 64

/* Why a token was refused. The HTTP layer maps every value other than
 * PE_AUTH_OK to 401: PE_AUTH_EXPIRED to {"error": "ExpiredToken"} so a
 * client knows to log in again, all others to "InvalidToken" /
 * "AuthenticationRequired". The detail stays in err->msg (code PE_EINVAL)
 * for the daemon's log; it never contains the token or a secret. */
enum pe_auth_result {
    PE_AUTH_OK = 0,
    PE_AUTH_MALFORMED,     /* too long, not three base64url parts, bad JSON */
    PE_AUTH_BAD_ALG,       /* header alg other than HS256 (none, RS256, ...) */
    PE_AUTH_BAD_SIGNATURE, /* HMAC does not match our secret */
    PE_AUTH_BAD_CLAIMS,    /* did/sub/iat/exp/scope missing or mistyped */
    PE_AUTH_EXPIRED,       /* now >= exp + skew */
    PE_AUTH_NOT_YET_VALID, /* iat > now + skew */
    PE_AUTH_WRONG_SCOPE,   /* valid token, scope not accepted here */
    PE_AUTH_REVOKED,       /* issued before its user's tokens were revoked */
};

/* Short lower-case name of a result, for logs and metrics labels. */
const char *pe_auth_result_name(enum pe_auth_result r);

/* Load the keys from DATA/keys/, creating data_dir (0700) and all three keys
 * on first start. Creation is all or nothing: the keys are written
 * (tmp + fsync + rename each) into a fresh private directory that is then
 * renamed to DATA/keys, so a crash never leaves a half-made set and two
 * daemons starting at once end up with the same keys. A keys directory or
 * key file that is not ours, has group/other permission bits, is a symlink
 * or has the wrong size is an error naming the file. *out is freed with
 * pe_auth_close. */
int pe_auth_open(const char *data_dir, pe_auth **out, pe_err *err);

/* Wipe the keys and free. NULL is fine. */
void pe_auth_close(pe_auth *auth);

/* The owner's did:key, valid as long as auth. */
const char *pe_auth_owner_did(const pe_auth *auth);

/* The X25519 public key as 64 lowercase hex characters, what
 * io.pocketenv.server.getPublicKey returns. Valid as long as auth. */
const char *pe_auth_public_key_hex(const pe_auth *auth);

/* "did:key:z" + base58btc(0xed 0x01 || pk) for an Ed25519 public key. out
 * needs PE_AUTH_DID_MAX bytes. */
void pe_auth_did_key_from_ed25519(const unsigned char pk[32], char *out);

/* Mint an HS256 JWT {did, sub: did, scope, iat: now, exp: now + ttl}.
 * did must start with "did:" and be printable ASCII, shorter than
 * PE_AUTH_DID_MAX; ttl_seconds in 1..PE_AUTH_TTL_MAX; scope exactly one
 * enum pe_auth_scope value. *jwt is malloc'd; it is a credential: never log
 * it. */
int pe_auth_token_mint(const pe_auth *auth, const char *did, long long ttl_seconds, int scope,
                       char **jwt, pe_err *err);

/* pe_auth_token_mint with "now" given: tests, and tokens minted in a batch. */
int pe_auth_token_mint_at(const pe_auth *auth, const char *did, long long ttl_seconds, int scope,
                          time_t now, char **jwt, pe_err *err);

/* Check a token: size, header alg exactly HS256 (checked by us before libjwt
 * sees the token, and again after), signature, claims (did string, sub equal
 * to did when present, integer iat and exp, exp > iat), expiry and iat with
 * PE_AUTH_CLOCK_SKEW of tolerance, and scope within accepted_scopes (a mask
 * of enum pe_auth_scope). On PE_AUTH_OK, *did_out (if did_out is not NULL)
 * is the malloc'd did claim; on any other result it is untouched and err
 * (may be NULL) says why. */
enum pe_auth_result pe_auth_token_verify(const pe_auth *auth, const char *jwt, int accepted_scopes,
                                         char **did_out, pe_err *err);

/* Mint a token bound to aud (printable ASCII, shorter than
 * PE_AUTH_AUD_MAX): the claims of pe_auth_token_mint plus "aud" and a
 * random "jti". scope is PE_AUTH_SCOPE_PREVIEW or PE_AUTH_SCOPE_PREVIEW_CODE,
 * the scopes that must carry an aud (every other scope must not). */
int pe_auth_token_mint_aud(const pe_auth *auth, const char *did, long long ttl_seconds, int scope,
                           const char *aud, char **jwt, pe_err *err);

/* pe_auth_token_verify for a bound token: also its aud must equal aud. With
 * consume, the token is good once: its jti is remembered until it expires
 * and a second use is PE_AUTH_REVOKED (a sign-in code replayed from a
 * browser's history, a log or a Referer). The memory is bounded: when it is
 * full of unexpired codes, consuming fails (PE_AUTH_REVOKED, "too many")
 * rather than forgetting one. A plain pe_auth_token_verify refuses every
 * token that carries an aud. */
enum pe_auth_result pe_auth_token_verify_aud(const pe_auth *auth, const char *jwt,
                                             int accepted_scopes, const char *aud, bool consume,
                                             char **did_out, pe_err *err);

/* pe_auth_token_verify (aud NULL) or pe_auth_token_verify_aud (aud set,
 * never consumed) that also gives the token's iat: a connection a token
 * opened (a terminal, a stream, a proxied WebSocket) keeps its did and iat
 * and ends once pe_auth_revoked says so. */
enum pe_auth_result pe_auth_token_verify_iat(const pe_auth *auth, const char *jwt,
                                             int accepted_scopes, const char *aud, char **did_out,
                                             int64_t *iat_out, pe_err *err);

/* Are did's tokens issued at iat revoked (pe_auth_revoke_before)? */
bool pe_auth_revoked(const pe_auth *auth, const char *did, int64_t iat);

/* Revocation: refuse every token of did issued (iat) before before_s, a
 * Unix time in seconds; 0 lifts it. Tokens minted for did afterwards get
 * an iat of at least before_s, so they are valid at once. The list lives
 * in this pe_auth only: the daemon fills it from the store's users
 * (tokens_valid_after) at start and on every tick. Thread-safe. */
void pe_auth_revoke_before(pe_auth *auth, const char *did, int64_t before_s);

/* pe_auth_token_verify against a given clock, so tests need no sleeping. */
enum pe_auth_result pe_auth_token_verify_at(const pe_auth *auth, const char *jwt,
                                            int accepted_scopes, time_t now, char **did_out,
                                            pe_err *err);

/* Write {"token": jwt} to path (upstream's CLI reads ~/.pocketenv/token.json)
 * with mode 0600, atomically, creating missing parent directories 0700. */
int pe_auth_write_token_file(const char *path, const char *jwt, pe_err *err);

/* Open a value sealed to our X25519 key: base64url without padding, as
 * upstream's clients send it (padded base64url is accepted too), at most
 * PE_AUTH_SEALED_MAX bytes once decoded. *plain is sodium_malloc'd,
 * NUL-terminated after *len bytes, and must be released with
 * pe_auth_plain_free, which wipes it. Errors (PE_EINVAL) never quote the
 * input or the plaintext. */
int pe_auth_unseal(const pe_auth *auth, const char *b64url, unsigned char **plain, size_t *len,
                   pe_err *err);

/* Wipe and free a plaintext from pe_auth_unseal. NULL is fine. */
void pe_auth_plain_free(unsigned char *plain);

/* Seal len bytes to a recipient's X25519 public key (64 hex chars) with
 * crypto_box_seal; *b64url is malloc'd base64url without padding. For the
 * CLI and tests: the daemon itself only opens. */
int pe_auth_seal(const char *public_key_hex, const void *plain, size_t len, char **b64url,
                 pe_err *err);

/* A new Ed25519 key pair in OpenSSH's formats: *priv_out the private key
 * file (PEM-armoured "openssh-key-v1", unencrypted), *pub_out the
 * authorized_keys line with comment. Both malloc'd; wipe priv after use. */
int pe_auth_ssh_generate(const char *comment, char **priv_out, char **pub_out);

#endif
