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

#endif
