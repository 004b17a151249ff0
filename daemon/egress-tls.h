/* TLS for egress-only secrets (daemon/egress-tls.c): a CA per sandbox,
 * kept in memory, leaves minted per bound host, and the verifying client
 * towards the real host. */
#ifndef PE_DAEMON_EGRESS_TLS_H
#define PE_DAEMON_EGRESS_TLS_H

#include <openssl/ssl.h>

/* The PEM certificate of sandbox id's CA (made at the first call), or
 * NULL if it cannot be made. Free it. */
char *pe_egress_tls_ca_pem(const char *id);
/* A server-side SSL presenting a leaf for host from id's CA, or NULL. */
SSL *pe_egress_tls_server(const char *id, const char *host);
/* A client-side SSL that sends host as SNI and accepts only a certificate
 * for host that chains to the trusted roots, or NULL. */
SSL *pe_egress_tls_client(const char *host);

#endif
