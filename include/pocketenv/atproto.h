/* AT Protocol identity resolution (issue 18): handle -> DID -> DID document
 * -> PDS endpoint, as the daemon does it before an OAuth sign-in.
 *
 *   handle -> DID   DNS TXT "_atproto.HANDLE" ("did=..."), then
 *                   https://HANDLE/.well-known/atproto-did
 *   DID -> document did:plc through the PLC directory the operator
 *                   configures (default https://plc.directory), did:web
 *                   through https://HOST/.well-known/did.json
 *   document -> PDS the "#atproto_pds" service of type
 *                   AtprotoPersonalDataServer
 *
 * Every answer is distrusted: a name or DID that is not syntactically one
 * is refused before any request, bodies have a maximum size, every request
 * has a deadline, no redirect is followed, and a document whose "id" is not
 * the DID asked for is refused (a PDS or directory answering for someone
 * else must not get their sign-in). A handle is only reported when the
 * resolution holds both ways: the handle names the DID and the DID's
 * document names the handle.
 *
 * Threading: the functions block (network) and keep no state between
 * calls; run them on a worker thread, never on the event loop.
 */
#ifndef POCKETENV_ATPROTO_H
#define POCKETENV_ATPROTO_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "pocketenv/auth.h"
#include "pocketenv/err.h"

#define PE_ATPROTO_HANDLE_MAX 254 /* 253 characters and the NUL */
#define PE_ATPROTO_URL_MAX 512
#define PE_ATPROTO_PLC_DEFAULT "https://plc.directory"

/* Largest DID document accepted, and largest atproto-did answer. */
#define PE_ATPROTO_DOC_MAX (64 * 1024)
#define PE_ATPROTO_WELLKNOWN_MAX 2048

/* Deadline of one resolution step when the configuration says 0. */
#define PE_ATPROTO_TIMEOUT_MS_DEFAULT 10000

typedef struct pe_atproto_cfg {
    const char *plc_url; /* NULL: PE_ATPROTO_PLC_DEFAULT; no trailing '/' */
    long timeout_ms;     /* per request (HTTP) or per DNS query; 0: default */
    /* Development and tests only: accept http:// for handles, did:web and
     * PDS endpoints (a local PDS in dev mode serves plain HTTP). */
    bool allow_http;
    /* Connect to hosts on private addresses too (loopback, RFC 1918,
     * link-local, CGNAT, ULA, ...). Off: such a host is refused before any
     * request is sent, whatever name led there. For a PDS on the LAN, and
     * the tests' PDS on loopback. */
    bool allow_private;
    /* Tests only: libcurl CONNECT_TO entries ("HOST:PORT:ADDR:PORT"),
     * NULL-terminated, so a handle's host reaches a server on loopback. */
    const char *const *connect_to;
    /* DNS server for the TXT lookup, "IPV4:PORT"; NULL: the system's
     * resolver (resolv.conf). "off" skips the DNS step. */
    const char *dns_server;
} pe_atproto_cfg;

typedef struct pe_atproto_identity {
    char did[PE_AUTH_DID_MAX];
    /* Verified both ways, lower case; "handle.invalid" when the document's
     * handle does not resolve back to the DID (the spec's marker). */
    char handle[PE_ATPROTO_HANDLE_MAX];
    char pds[PE_ATPROTO_URL_MAX]; /* no trailing '/' */
} pe_atproto_identity;

/* Syntax checks, no I/O. A handle: 2+ dot-separated labels of [A-Za-z0-9-]
 * (1-63 chars, no leading or trailing '-'), 253 chars at most, last label
 * starting with a letter. A DID: did:plc (24 chars of base32 [a-z2-7]) or
 * did:web (a hostname, "%3A" before a port); other methods are refused. */
bool pe_atproto_handle_valid(const char *handle);
bool pe_atproto_did_valid(const char *did);

/* handle -> DID (DNS TXT first, then the well-known URL). did gets the
 * DID; PE_ENOENT when neither method names one, PE_EREMOTE for garbage,
 * PE_ETIMEDOUT past the deadline, PE_EINVAL for a malformed handle. */
int pe_atproto_resolve_handle(const pe_atproto_cfg *cfg, const char *handle,
                              char did[PE_AUTH_DID_MAX], pe_err *err);

/* DID -> its document's PDS endpoint and the handle it claims (unverified;
 * empty when it claims none). The document's id must be did. */
int pe_atproto_resolve_did(const pe_atproto_cfg *cfg, const char *did, char pds[PE_ATPROTO_URL_MAX],
                           char handle[PE_ATPROTO_HANDLE_MAX], pe_err *err);

/* A handle or a DID -> the verified identity (see the top of the file).
 * Given a handle whose DID's document does not name it back, fails. */
int pe_atproto_resolve(const pe_atproto_cfg *cfg, const char *handle_or_did,
                       pe_atproto_identity *out, pe_err *err);

/* ---- public records (atproto-repo.c) ---- */

typedef struct pe_atproto_uri {
    char authority[PE_ATPROTO_HANDLE_MAX]; /* a DID or a handle */
    char collection[320];
    char rkey[513];
} pe_atproto_uri;

/* at://AUTHORITY/COLLECTION/RKEY, each part checked (PE_EINVAL). */
int pe_atproto_uri_parse(const char *uri, pe_atproto_uri *out, pe_err *err);

typedef struct pe_atproto_record {
    char uri[PE_ATPROTO_URL_MAX * 2]; /* at://DID/COLLECTION/RKEY, the DID resolved */
    char cid[130];
    json_t *value; /* a reference: json_decref it */
} pe_atproto_record;

/* The record at uri, from the PDS of its repository (resolved as above),
 * unauthenticated. The answer must name exactly the record asked for (not
 * another repository's), have a CID, and a value whose $type is the
 * collection; otherwise PE_EREMOTE. A record the repository does not
 * have: PE_ENOENT. Blocks: worker threads. */
int pe_atproto_get_record(const pe_atproto_cfg *cfg, const char *uri, pe_atproto_record *out,
                          pe_err *err);

/* ---- OAuth client (atproto-oauth.c, atproto-dpop.c) ----
 *
 * The daemon signs a user in as an AT Protocol OAuth client: discovery of
 * the PDS's authorization server, PKCE (S256), a pushed authorization
 * request, DPoP-bound tokens with server nonces, then refresh and revoke.
 * Two kinds of client (the spec's):
 *  - the loopback (development) client: client_id
 *    "http://localhost?redirect_uri=...&scope=...", accepted without any
 *    metadata fetched and without client authentication ("none");
 *  - a confidential web client: client_id is the https URL of its metadata
 *    document, which the authorization server fetches, and every PAR,
 *    token, refresh and revoke call carries a client assertion (RFC 7523,
 *    private_key_jwt) signed ES256 with the client's key, whose public
 *    part the metadata's JWKS publishes. */

/* Lifetime of a client assertion: it is made for one request. */
#define PE_ATPROTO_ASSERTION_TTL_S 60

/* A DPoP key pair (P-256, ES256), one per signed-in session. */
typedef struct pe_atproto_dpop pe_atproto_dpop;

int pe_atproto_dpop_new(pe_atproto_dpop **out, pe_err *err);
/* From / to PKCS#8 PEM (the caller seals what it stores). */
int pe_atproto_dpop_load(const char *pem, pe_atproto_dpop **out, pe_err *err);
int pe_atproto_dpop_pem(const pe_atproto_dpop *d, char **pem, pe_err *err);
void pe_atproto_dpop_free(pe_atproto_dpop *d);

/* A confidential client's signing key is a P-256 key too (same type).
 * Its RFC 7638 thumbprint (base64url of a SHA-256), used as "kid"; and
 * {"keys": [its public JWK with kid, alg ES256, use sig]} (new reference,
 * NULL on ENOMEM): what the client's jwks_uri serves. */
int pe_atproto_key_thumbprint(const pe_atproto_dpop *d, char out[48]);
json_t *pe_atproto_key_jwks(const pe_atproto_dpop *d);

typedef struct pe_atproto_client {
    pe_atproto_cfg net;
    const char *redirect_uri; /* http://127.0.0.1:PORT/PATH for a loopback client */
    const char *scope;        /* space-separated; must contain "atproto" */
    /* A confidential web client: client_id is the https URL of its
     * metadata document, client_key the key of its client assertions.
     * NULL: the loopback client. A session keeps the client_id it was
     * issued to (pe_atproto_login.client_id): an https one authenticates
     * with client_key. */
    const char *client_id;
    const pe_atproto_dpop *client_key;
} pe_atproto_client;

/* An authorization server's endpoints, from its metadata. */
typedef struct pe_atproto_authz {
    char issuer[PE_ATPROTO_URL_MAX];
    char par[PE_ATPROTO_URL_MAX];
    char authorize[PE_ATPROTO_URL_MAX];
    char token[PE_ATPROTO_URL_MAX];
    char revoke[PE_ATPROTO_URL_MAX]; /* "" when the server has none */
} pe_atproto_authz;

/* One sign-in in progress: created by pe_atproto_login_start, finished by
 * pe_atproto_login_finish with what the redirect brought back. */
typedef struct pe_atproto_login {
    pe_atproto_identity id;
    pe_atproto_authz as;
    char state[48];      /* random, base64url: binds the redirect to us */
    char verifier[48];   /* PKCE code verifier */
    char nonce[256];     /* the authorization server's last DPoP nonce */
    char pds_nonce[256]; /* the PDS's last DPoP nonce (resource server) */
    char client_id[PE_ATPROTO_URL_MAX * 2];
    char *authorize_url; /* open this in a browser */
    pe_atproto_dpop *dpop;
} pe_atproto_login;

typedef struct pe_atproto_session {
    char did[PE_AUTH_DID_MAX]; /* "sub" of the token answer, checked */
    char *access_token;
    char *refresh_token; /* NULL when the server issued none */
    char scope[512];
    long expires_in; /* seconds, from the token answer */
} pe_atproto_session;

/* Resolve handle_or_did, discover its PDS's authorization server (the
 * PDS's oauth-protected-resource must name it, and its metadata's issuer
 * must be itself), push the authorization request (PAR, with login_hint)
 * and build the URL to open. *out is freed with pe_atproto_login_free. */
int pe_atproto_login_start(const pe_atproto_client *c, const char *handle_or_did,
                           pe_atproto_login **out, pe_err *err);

/* The redirect's state, iss and code: state and iss must match the login
 * (a code from another server or sign-in is refused); exchanges the code
 * (PKCE, DPoP) and checks the answer's sub is the DID the login resolved.
 * Fills *s (free its strings with pe_atproto_session_clear). */
int pe_atproto_login_finish(const pe_atproto_client *c, pe_atproto_login *l, const char *state,
                            const char *iss, const char *code, pe_atproto_session *s, pe_err *err);

/* New tokens for s->refresh_token (DPoP-bound to the same key). */
int pe_atproto_refresh(const pe_atproto_client *c, pe_atproto_login *l, pe_atproto_session *s,
                       pe_err *err);

/* Revoke s's refresh token (or its access token when it has none). */
int pe_atproto_revoke(const pe_atproto_client *c, pe_atproto_login *l, const pe_atproto_session *s,
                      pe_err *err);

/* A GET of /xrpc/NSID?QUERY on the user's PDS with the DPoP-bound access
 * token (the PDS's own DPoP nonce handled). *body malloc'd; *status set. */
int pe_atproto_pds_get(const pe_atproto_client *c, pe_atproto_login *l, const pe_atproto_session *s,
                       const char *nsid_and_query, long *status, char **body, pe_err *err);

/* A POST of json_body to /xrpc/NSID on the user's PDS, as pe_atproto_pds_get
 * (the repository writes: createRecord, putRecord, deleteRecord). */
int pe_atproto_pds_post(const pe_atproto_client *c, pe_atproto_login *l,
                        const pe_atproto_session *s, const char *nsid, const char *json_body,
                        long *status, char **body, pe_err *err);

/* A signed-in session brought back from storage (its DPoP key as PEM):
 * the authorization server is discovered again from pds and must still be
 * issuer. *out is a login with no authorize_url, for refresh, revoke and
 * PDS calls; free it with pe_atproto_login_free. */
int pe_atproto_login_restore(const pe_atproto_client *c, const char *did, const char *pds,
                             const char *issuer, const char *dpop_pem, pe_atproto_login **out,
                             pe_err *err);

void pe_atproto_login_free(pe_atproto_login *l);
void pe_atproto_session_clear(pe_atproto_session *s);

#endif
