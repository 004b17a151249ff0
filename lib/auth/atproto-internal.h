/* Shared by lib/auth/atproto-*.c: the DNS step of handle resolution. */
#ifndef PE_ATPROTO_INTERNAL_H
#define PE_ATPROTO_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>

#include "pocketenv/atproto.h"

/* Look up the TXT records of "_atproto.HANDLE" and copy the DID of its one
 * "did=" record into did. Returns 1 when found, 0 when the name has no
 * such record (NXDOMAIN, no TXT, no "did=", DNS step "off" or the server
 * unreachable: the caller then tries HTTPS), -1 with err set when the
 * answer is unusable (two different DIDs, a DID that is not one). */
int pe__atproto_dns_did(const pe_atproto_cfg *cfg, const char *handle, char did[PE_AUTH_DID_MAX],
                        pe_err *err);

/* One HTTP request (atproto-http.c). body: a form for POST, NULL for GET;
 * headers: NULL-terminated "Name: value" lines; max: largest answer. */
typedef struct pe__atproto_req {
    const char *method;
    const char *url;
    const char *body;
    const char *const *headers;
    size_t max;
} pe__atproto_req;

#define PE__ATPROTO_NONCE_MAX 256

typedef struct pe__atproto_resp {
    long status;
    char *body;                        /* NUL-terminated, caller frees */
    char nonce[PE__ATPROTO_NONCE_MAX]; /* the DPoP-Nonce header, "" if none */
} pe__atproto_resp;

/* Any status is a success here (the caller judges it); fails with err set
 * on transport errors, an answer larger than max (PE_EREMOTE) and the
 * deadline (PE_ETIMEDOUT). */
int pe__atproto_http(const pe_atproto_cfg *cfg, const pe__atproto_req *rq, pe__atproto_resp *rs,
                     pe_err *err);

/* An address the private-address guard refuses (loopback, private,
 * link-local, CGNAT, multicast, unspecified; v4-mapped v6 as v4). */
bool pe__atproto_addr_private(const char *ip);

/* base64url without padding of len bytes; *out malloc'd. -1 on ENOMEM. */
int pe__atproto_b64url(const unsigned char *bin, size_t len, char **out);

/* The public JWK of a DPoP key (new reference). */
json_t *pe__atproto_dpop_jwk(const pe_atproto_dpop *d);

/* A DPoP proof for method + url, with the server's nonce and, towards a
 * resource server, the access token's hash ("ath") when access_token is
 * given. *proof malloc'd. */
int pe__atproto_dpop_proof(const pe_atproto_dpop *d, const char *method, const char *url,
                           const char *nonce, const char *access_token, char **proof, pe_err *err);

/* A client assertion (RFC 7523) for client_id towards the authorization
 * server whose issuer is audience: ES256 with key, kid its thumbprint,
 * a fresh jti, valid PE_ATPROTO_ASSERTION_TTL_S. *jwt malloc'd. */
int pe__atproto_client_assertion(const pe_atproto_dpop *key, const char *client_id,
                                 const char *audience, char **jwt, pe_err *err);

#endif
