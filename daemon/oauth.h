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
} pe_oauth_cfg;

/* Register the routes (after the server exists: the redirect URI carries
 * its port). The state is freed by pe_daemon_oauth_free. */
int pe_daemon_register_oauth(struct pe_daemon *d, const pe_oauth_cfg *cfg, pe_err *err);
void pe_daemon_oauth_free(struct pe_daemon *d);

#endif
