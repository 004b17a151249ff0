/* Sign in with an AT Protocol handle (daemon/oauth.c): /oauth/login,
 * /oauth/callback and /oauth/token. */
#ifndef PE_DAEMON_OAUTH_H
#define PE_DAEMON_OAUTH_H

#include <stdbool.h>

#include "pocketenv/err.h"

struct pe_daemon;

typedef struct pe_oauth_cfg {
    const char *plc_url;    /* --atproto-plc (https://plc.directory) */
    const char *dns_server; /* --atproto-dns IPV4:PORT|off (resolv.conf) */
    bool insecure_http;     /* --atproto-insecure-http: a local dev PDS */
    bool allow_private;     /* --atproto-allow-private: hosts on private addresses */
    /* --atproto-public-url https://...: be a confidential web client whose
     * metadata document and JWKS are served under this URL; NULL: the
     * loopback client. */
    const char *public_url;
} pe_oauth_cfg;

/* Register the routes (after the server exists: the redirect URI carries
 * its port). The state is freed by pe_daemon_oauth_free. */
int pe_daemon_register_oauth(struct pe_daemon *d, const pe_oauth_cfg *cfg, pe_err *err);
void pe_daemon_oauth_free(struct pe_daemon *d);

/* The daemon's own call to the PDS of did, a signed-in user, with their
 * DPoP-bound session (restored from its sealed file, refreshed before it
 * expires, refreshed once more on a 401): a GET of "NSID?QUERY" when
 * json_body is NULL, else a POST of json_body, whose "repo" must be did
 * (PE_EAUTH otherwise: the daemon writes to no other repository). Blocks:
 * worker threads only. PE_ENOENT when did has no session. */
int pe_daemon_oauth_pds_call(struct pe_daemon *d, const char *did, const char *nsid,
                             const char *json_body, long *status, char **body, pe_err *err);
/* Read did's profile (app.bsky.actor.profile/self) from their repository
 * into their user row: handle (when given, else the row's), display name,
 * avatar (a getBlob URL on their PDS). No profile record: handle only.
 * Worker threads only. */
struct pe_store;
int pe_daemon_oauth_profile_sync(struct pe_daemon *d, struct pe_store *s, const char *did,
                                 const char *handle, pe_err *err);
/* How the daemon reaches AT Protocol services (serve's --atproto-* flags),
 * or NULL without the sign-in routes. */
struct pe_atproto_cfg;
const struct pe_atproto_cfg *pe_daemon_oauth_net(struct pe_daemon *d);
/* POST /login {handle, cli: true}, as upstream's CLI sends it: starts a
 * sign-in and answers the URL to open as text; the callback page then
 * gives the token to the CLI's listener (http://localhost:6997/token).
 * false (nothing answered) without the sign-in routes. */
struct pe_http_request;
bool pe_daemon_oauth_upstream_login(struct pe_daemon *d, struct pe_http_request *req);
/* did signed in with AT Protocol here (a sealed session exists). */
bool pe_daemon_oauth_signed_in(struct pe_daemon *d, const char *did);

#endif
