/* TLS from the preview proxy to a provider's https:// preview host (issue
 * 15: Hopx's and Runloop's preview hosts are https only), with OpenSSL.
 *
 * A client with full verification, never skipped: the system's roots plus,
 * for one provider, the operator's previewCaFile (--provider-config; a
 * private or test CA that vouches for that provider's hosts only, so each
 * CA file has its own context), the host name checked against the
 * certificate, SNI sent. The proxy runs the SSL non-blocking on the
 * daemon's loop, as it runs its plain sockets (daemon/proxy.c): these
 * helpers turn OpenSSL's WANT_READ / WANT_WRITE into EAGAIN and the event
 * to wait for.
 *
 * Threads: contexts are made under ctx_mu by whichever thread asks first
 * (the proxy's worker) and live until exit; an SSL is used by one thread
 * at a time (made on the worker, then the loop's). OpenSSL's error queue
 * is per thread: each call clears it first so a reason is this call's. */
#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>

#include "core/log.h"
#include "core/util.h"
#include "proxy-tls.h"

#define CTX_MAX 8 /* the system's and one per provider's CA file */

static pthread_mutex_t ctx_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char *ca_file; /* NULL: the system's roots only */
    SSL_CTX *ctx;
} ctxs[CTX_MAX];
static size_t n_ctxs;

static SSL_CTX *ctx_make(const char *ca_file, pe_err *err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    char reason[160] = "";

    if (ctx == NULL) {
        pe_err_set(err, PE_ESYS, 0, "TLS: no client context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    /* a body delimited by the close (HTTP/1.0) ends as over plain TCP */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (SSL_CTX_set_default_verify_paths(ctx) != 1)
        pe_log_warn("preview proxy TLS: no system trust store");
    if (ca_file && SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
        ERR_error_string_n(ERR_peek_last_error(), reason, sizeof(reason));
        SSL_CTX_free(ctx);
        pe_err_set(err, PE_EINVAL, 0, "previewCaFile %s: not a PEM certificate file (%s)", ca_file,
                   reason);
        return NULL;
    }
    return ctx;
}

static SSL_CTX *ctx_get(const char *ca_file, pe_err *err)
{
    SSL_CTX *ctx = NULL;

    pthread_mutex_lock(&ctx_mu);
    for (size_t i = 0; i < n_ctxs && ctx == NULL; i++)
        if (ca_file ? ctxs[i].ca_file && strcmp(ctxs[i].ca_file, ca_file) == 0
                    : ctxs[i].ca_file == NULL)
            ctx = ctxs[i].ctx;
    if (ctx == NULL && n_ctxs == CTX_MAX)
        pe_err_set(err, PE_EINVAL, 0, "TLS: over %d CA files", CTX_MAX);
    else if (ctx == NULL && (ctx = ctx_make(ca_file, err)) != NULL) {
        ctxs[n_ctxs].ca_file = ca_file ? pe_xstrdup(ca_file) : NULL;
        ctxs[n_ctxs++].ctx = ctx;
    }
    pthread_mutex_unlock(&ctx_mu);
    return ctx;
}

int pe_proxy_tls_ca_check(const char *ca_file, pe_err *err)
{
    ERR_clear_error();
    return ctx_get(ca_file, err) ? 0 : -1;
}

SSL *pe_proxy_tls_new(const char *host, const char *ca_file, pe_err *err)
{
    struct in_addr ip;
    SSL_CTX *ctx;
    SSL *ssl;
    bool ok;

    ERR_clear_error();
    if ((ctx = ctx_get(ca_file, err)) == NULL)
        return NULL;
    if ((ssl = SSL_new(ctx)) == NULL) {
        pe_err_set(err, PE_ESYS, 0, "TLS: no connection object");
        return NULL;
    }
    /* an address is checked against the certificate's IP entries and is no
     * SNI name (RFC 6066 3); a name is both */
    if (inet_pton(AF_INET, host, &ip) == 1)
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) == 1;
    else
        ok = SSL_set_tlsext_host_name(ssl, host) == 1 && SSL_set1_host(ssl, host) == 1;
    if (!ok) {
        SSL_free(ssl);
        pe_err_set(err, PE_EINVAL, 0, "TLS: %s is not a host name a certificate can carry", host);
        return NULL;
    }
    return ssl;
}

/* Why the handshake failed, for the user: the certificate check's verdict
 * when that was it, else OpenSSL's reason. */
static void failure(SSL *ssl, int e, char *why, size_t n)
{
    long v = SSL_get_verify_result(ssl);
    unsigned long q = ERR_peek_last_error();
    char reason[160] = "";

    switch (v) {
    case X509_V_OK:
        break;
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
        snprintf(why, n, "the certificate is for another host (hostname mismatch)");
        return;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        snprintf(why, n,
                 "untrusted certificate (%s; an operator adds a private CA with "
                 "previewCaFile)",
                 X509_verify_cert_error_string(v));
        return;
    default:
        snprintf(why, n, "certificate refused (%s)", X509_verify_cert_error_string(v));
        return;
    }
    if (q != 0) {
        ERR_error_string_n(q, reason, sizeof(reason));
        snprintf(why, n, "handshake failed (%s)", reason);
    } else if (e == SSL_ERROR_SYSCALL && errno != 0) {
        snprintf(why, n, "handshake failed (%s)", strerror(errno));
    } else {
        snprintf(why, n, "the host closed the connection during the handshake");
    }
}

int pe_proxy_tls_handshake(SSL *ssl, uint32_t *want, char *why, size_t n)
{
    int r, e;

    ERR_clear_error();
    errno = 0;
    r = SSL_connect(ssl);
    if (r == 1)
        return 1;
    e = SSL_get_error(ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        *want = e == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT;
        return 0;
    }
    failure(ssl, e, why, n);
    return -1;
}

/* errno for an SSL call that moved nothing: EAGAIN with *want, or EIO */
static ssize_t again_or_fail(SSL *ssl, int r, uint32_t *want)
{
    int e = SSL_get_error(ssl, r);

    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        *want = e == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT;
        errno = EAGAIN;
        return -1;
    }
    if (e == SSL_ERROR_ZERO_RETURN)
        return 0;
    errno = EIO;
    return -1;
}

ssize_t pe_proxy_tls_recv(SSL *ssl, void *buf, size_t len, uint32_t *want)
{
    size_t got = 0;
    int r;

    ERR_clear_error();
    /* the proxy reads 64 KiB at a time, more than a record (16 KiB), so
     * nothing decrypted waits in ssl while the loop waits on the socket */
    r = SSL_read_ex(ssl, buf, len, &got);
    if (r == 1)
        return (ssize_t)got;
    return again_or_fail(ssl, r, want);
}

ssize_t pe_proxy_tls_send(SSL *ssl, const void *buf, size_t len, uint32_t *want)
{
    size_t put = 0;
    int r;

    ERR_clear_error();
    r = SSL_write_ex(ssl, buf, len, &put);
    if (r == 1)
        return (ssize_t)put;
    return again_or_fail(ssl, r, want);
}
