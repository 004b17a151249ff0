/* The daemon's auth middleware: "Authorization: Bearer <jwt>" to a DID.
 *
 * Runs on the loop thread (an HS256 check costs microseconds). Every XRPC
 * handler calls pe_daemon_auth first, so no method is served anonymously.
 * Unlike upstream (reference §1.2), expiry is enforced and a bad signature
 * is a clean 401, never a server error. The token itself is never logged.
 * Also the caller's user row (pe_daemon_user_ensure), which handlers and
 * oauth.c share. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cluster.h"
#include "core/log.h"
#include "daemon.h"

/* The JWT in an Authorization header value, or NULL. */
static const char *bearer(const char *authorization)
{
    if (authorization == NULL || strncasecmp(authorization, "Bearer ", 7) != 0)
        return NULL;
    authorization += 7;
    while (*authorization == ' ')
        authorization++;
    /* upstream's clients send "Bearer null" when logged out */
    if (*authorization == '\0' || strcmp(authorization, "null") == 0)
        return NULL;
    return authorization;
}

/* A call another node forwarded (daemon/cluster.c): the caller is the
 * DID its credential carries, once the credential checks out for this
 * node and this call, and was never used before. */
static char *node_auth(pe_daemon *d, pe_xrpc_request *req)
{
    const char *cred = req->authorization + strlen(PE_CLUSTER_SCHEME);
    char *did = NULL, nonce[33], proof[65];
    enum pe_cluster_cred_result r;
    pe_err err;

    r = pe_cluster_cred_verify(d, cred, req->nsid, true, &did, nonce);
    if (r == PE_CLUSTER_CRED_OK) {
        pe_cluster_proof(d->cluster, nonce, proof);
        pe_xrpc_set_reply_header(req, PE_CLUSTER_PROOF_HEADER, proof);
        return did;
    }
    pe_log_warn("auth %s: %s node credential refused: %s", req->client_addr, req->nsid,
                pe_cluster_cred_result_name(r));
    pe_err_set(&err, PE_XRPC_EAUTH, 0, "node credential refused: %s",
               pe_cluster_cred_result_name(r));
    pe_xrpc_respond_err_named(req, &err, "InvalidNodeCredential");
    return NULL;
}

char *pe_daemon_auth(pe_daemon *d, pe_xrpc_request *req)
{
    const char *jwt = bearer(req->authorization);
    enum pe_auth_result r;
    char *did = NULL;
    pe_err err;

    pe_err_clear(&err);
    if (req->authorization &&
        strncmp(req->authorization, PE_CLUSTER_SCHEME, strlen(PE_CLUSTER_SCHEME)) == 0)
        return node_auth(d, req);
    if (jwt == NULL) {
        pe_err_set(&err, PE_XRPC_EAUTH, 0, "authentication required");
        pe_xrpc_respond_err(req, &err);
        return NULL;
    }
    r = pe_auth_token_verify(d->auth, jwt, PE_AUTH_SCOPE_API, &did, &err);
    if (r == PE_AUTH_OK)
        return did;
    pe_log_info("auth %s: %s refused: %s", req->client_addr, req->nsid, pe_auth_result_name(r));
    if (r == PE_AUTH_EXPIRED) {
        pe_err_set(&err, PE_XRPC_EAUTH, 0, "token has expired");
        pe_xrpc_respond_err_named(req, &err, "ExpiredToken");
    } else if (r == PE_AUTH_REVOKED) {
        pe_err_set(&err, PE_XRPC_EAUTH, 0, "token has been revoked");
        pe_xrpc_respond_err_named(req, &err, "InvalidToken");
    } else {
        pe_err_set(&err, PE_XRPC_EAUTH, 0, "invalid token");
        pe_xrpc_respond_err_named(req, &err, "InvalidToken");
    }
    return NULL;
}

int pe_daemon_rate_key(const char *authorization, char *key, size_t key_size, void *ud)
{
    pe_daemon *d = ud;
    const char *jwt = bearer(authorization);
    char *did = NULL, nonce[33];

    /* A forwarded call counts against its user, as it would have on the
     * node it came through (checked, not taken: the handler takes it). */
    if (authorization &&
        strncmp(authorization, PE_CLUSTER_SCHEME, strlen(PE_CLUSTER_SCHEME)) == 0) {
        if (pe_cluster_cred_verify(d, authorization + strlen(PE_CLUSTER_SCHEME), NULL, false, &did,
                                   nonce) != PE_CLUSTER_CRED_OK)
            return 0;
        snprintf(key, key_size, "%s", did);
        free(did);
        return 1;
    }
    if (jwt == NULL || pe_auth_token_verify(d->auth, jwt, PE_AUTH_SCOPE_API, &did, NULL) != 0)
        return 0;
    snprintf(key, key_size, "%s", did);
    free(did);
    return 1;
}

static void revoke_one(const char *did, int64_t valid_after_ms, void *ud)
{
    /* iat is in seconds: a token of second t was issued before
     * valid_after_ms unless t * 1000 >= valid_after_ms. */
    pe_auth_revoke_before(ud, did, (valid_after_ms + 999) / 1000);
}

int pe_daemon_auth_refresh(pe_auth *auth, pe_store *s, pe_err *err)
{
    return pe_store_user_revocations(s, revoke_one, auth, err);
}

int pe_daemon_user_ensure(pe_store *s, const char *did, pe_store_user *out, pe_err *err)
{
    pe_store_user u = {.did = did, .handle = "handle.invalid"};

    memset(out, 0, sizeof(*out));
    if (pe_store_user_get(s, did, out, err) == 0)
        return 0;
    if (err->code != PE_ENOENT)
        return -1;
    if (pe_store_user_upsert(s, &u, err) < 0)
        return -1;
    return pe_store_user_get(s, did, out, err);
}

int pe_daemon_seal_if_plain(pe_daemon *d, json_t *obj, const char *field, size_t max, pe_err *err)
{
    json_t *v = json_object_get(obj, field);
    const char *text = json_string_value(v);
    unsigned char *plain = NULL;
    char *sealed = NULL;
    size_t len = 0;
    pe_err ignored;

    if (text == NULL) /* absent or not a string: the caller's checks say so */
        return 0;
    if (pe_auth_unseal(d->auth, text, &plain, &len, &ignored) == 0) {
        pe_auth_plain_free(plain);
        return 0;
    }
    len = json_string_length(v);
    if (len > max || strlen(text) != len)
        return pe_err_set(err, PE_EINVAL, 0,
                          "%s: a value is at most %zu bytes of text, or sealed to this server's "
                          "key",
                          field, max);
    if (pe_auth_seal(pe_auth_public_key_hex(d->auth), text, len, &sealed, err) < 0)
        return pe_err_prefix(err, "%s", field);
    json_object_set_new(obj, field, json_string(sealed));
    free(sealed);
    return 0;
}
