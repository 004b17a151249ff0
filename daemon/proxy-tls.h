/* TLS from the preview proxy to a provider's https:// preview host
 * (daemon/proxy-tls.c): a verifying, non-blocking OpenSSL client. */
#ifndef PE_DAEMON_PROXY_TLS_H
#define PE_DAEMON_PROXY_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "pocketenv/err.h"

/* A client SSL for host (a name or an IPv4 literal, no port) that sends
 * host as SNI (a name only) and accepts only a certificate for host that
 * chains to the system's roots or to ca_file's (PEM; NULL: none). Any
 * thread. NULL with err set when the context or ca_file cannot be made. */
SSL *pe_proxy_tls_new(const char *host, const char *ca_file, pe_err *err);

/* Load ca_file (PEM) as pe_proxy_tls_new will: 0, or -1 with err saying
 * why (the daemon refuses to start with a CA file it cannot use). */
int pe_proxy_tls_ca_check(const char *ca_file, pe_err *err);

/* One step of the handshake on ssl (its fd set, non-blocking). 1: done;
 * 0: call again once *want (EPOLLIN or EPOLLOUT) is ready; -1: failed,
 * why (size n) says why in a user's words ("untrusted certificate (...)",
 * "the certificate is not for HOST"). Loop thread. */
int pe_proxy_tls_handshake(SSL *ssl, uint32_t *want, char *why, size_t n);

/* recv(2) and send(2) over ssl: bytes moved, 0 at the end of the stream
 * (recv), or -1 with errno EAGAIN (*want says for which event: EPOLLIN or
 * EPOLLOUT) or EIO. Partial writes are allowed; a write that answered
 * EAGAIN may be retried with another buffer. */
ssize_t pe_proxy_tls_recv(SSL *ssl, void *buf, size_t len, uint32_t *want);
ssize_t pe_proxy_tls_send(SSL *ssl, const void *buf, size_t len, uint32_t *want);

#endif
