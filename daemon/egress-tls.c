/* TLS for egress-only secrets (issue 20; docs/design/network.md, "Secrets
 * as placeholders"), with OpenSSL.
 *
 * Each sandbox whose policy binds a secret gets its own CA: a P-256 key
 * made here and kept only in this process's memory (never written, never
 * in the sandbox), and a certificate the sandbox trusts (installed into
 * its trust store at start). The proxy terminates TLS with a leaf minted
 * by that CA for the host the client named, but only for hosts a secret
 * is bound to; the leaf is cached per (sandbox, host). Towards the real
 * host it is a client with full verification: the system's roots, or
 * POCKETENV_EGRESS_CA_FILE (an operator's extra CAs, in PEM), and the
 * host name checked against the certificate.
 *
 * A daemon that restarts makes new CAs: a running sandbox's trust store
 * names the old one, so interception fails there (its clients refuse the
 * new leaf) until the sandbox starts again: fail closed. */
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "egress-tls.h"

#define LEAVES_MAX 64 /* per sandbox; the oldest goes */
#define CA_DAYS 3650
#define LEAF_DAYS 30

typedef struct leaf {
    char *host;
    SSL_CTX *ctx;
} leaf;

typedef struct ca {
    struct ca *next;
    char *id;
    EVP_PKEY *key;
    X509 *cert;
    char *pem;
    leaf leaves[LEAVES_MAX];
    size_t n_leaves, next_leaf;
} ca;

static pthread_mutex_t ca_mu = PTHREAD_MUTEX_INITIALIZER;
static ca *ca_list;
static SSL_CTX *client_ctx;
static pthread_once_t client_once = PTHREAD_ONCE_INIT;

static X509 *new_cert(EVP_PKEY *pub, const char *cn, int days)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    unsigned char serial[16];
    BIGNUM *bn;

    if (x == NULL || name == NULL || RAND_bytes(serial, sizeof(serial)) != 1) {
        X509_free(x);
        X509_NAME_free(name);
        return NULL;
    }
    serial[0] &= 0x7f; /* positive */
    bn = BN_bin2bn(serial, sizeof(serial), NULL);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    BN_free(bn);
    X509_set_version(x, 2);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), (long)days * 86400);
    X509_set_pubkey(x, pub);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
    X509_set_subject_name(x, name);
    X509_NAME_free(name);
    return x;
}

static bool add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509_EXTENSION *e;
    bool ok;

    X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
    e = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    ok = e != NULL && X509_add_ext(x, e, -1) == 1;
    X509_EXTENSION_free(e);
    return ok;
}

static ca *ca_make(const char *id)
{
    ca *c = pe_xcalloc(1, sizeof(*c));
    char *cn = pe_xasprintf("Pocketenv egress CA %.40s", id);
    BIO *b = NULL;
    BUF_MEM *m = NULL;

    c->id = pe_xstrdup(id);
    c->key = EVP_EC_gen("P-256");
    c->cert = c->key ? new_cert(c->key, cn, CA_DAYS) : NULL;
    free(cn);
    if (c->cert == NULL || X509_set_issuer_name(c->cert, X509_get_subject_name(c->cert)) != 1 ||
        !add_ext(c->cert, c->cert, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
        !add_ext(c->cert, c->cert, NID_key_usage, "critical,keyCertSign,cRLSign") ||
        !add_ext(c->cert, c->cert, NID_subject_key_identifier, "hash") ||
        X509_sign(c->cert, c->key, EVP_sha256()) <= 0 || (b = BIO_new(BIO_s_mem())) == NULL ||
        PEM_write_bio_X509(b, c->cert) != 1) {
        BIO_free(b);
        X509_free(c->cert);
        EVP_PKEY_free(c->key);
        free(c->id);
        free(c);
        return NULL;
    }
    BIO_get_mem_ptr(b, &m);
    c->pem = pe_xmalloc(m->length + 1);
    memcpy(c->pem, m->data, m->length);
    c->pem[m->length] = '\0';
    BIO_free(b);
    return c;
}

/* The CA of sandbox id, made at the first call (under ca_mu). */
static ca *ca_get_locked(const char *id)
{
    ca *c;

    for (c = ca_list; c; c = c->next)
        if (strcmp(c->id, id) == 0)
            return c;
    c = ca_make(id);
    if (c == NULL)
        return NULL;
    c->next = ca_list;
    ca_list = c;
    return c;
}

char *pe_egress_tls_ca_pem(const char *id)
{
    char *pem = NULL;
    ca *c;

    pthread_mutex_lock(&ca_mu);
    c = ca_get_locked(id);
    if (c != NULL)
        pem = pe_xstrdup(c->pem);
    pthread_mutex_unlock(&ca_mu);
    return pem;
}

static SSL_CTX *leaf_ctx(ca *c, const char *host)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = key ? new_cert(key, host, LEAF_DAYS) : NULL;
    char *san = pe_xasprintf("DNS:%s", host);
    SSL_CTX *ctx = NULL;
    bool ok;

    ok = x != NULL && X509_set_issuer_name(x, X509_get_subject_name(c->cert)) == 1 &&
         add_ext(x, c->cert, NID_basic_constraints, "critical,CA:FALSE") &&
         add_ext(x, c->cert, NID_key_usage, "critical,digitalSignature") &&
         add_ext(x, c->cert, NID_ext_key_usage, "serverAuth") &&
         add_ext(x, c->cert, NID_subject_alt_name, san) &&
         add_ext(x, c->cert, NID_authority_key_identifier, "keyid") &&
         X509_sign(x, c->key, EVP_sha256()) > 0 && (ctx = SSL_CTX_new(TLS_server_method())) &&
         SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1 &&
         SSL_CTX_use_certificate(ctx, x) == 1 && SSL_CTX_use_PrivateKey(ctx, key) == 1 &&
         SSL_CTX_add1_chain_cert(ctx, c->cert) == 1;
    free(san);
    X509_free(x);
    EVP_PKEY_free(key);
    if (!ok) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

SSL *pe_egress_tls_server(const char *id, const char *host)
{
    SSL_CTX *ctx = NULL;
    SSL *ssl = NULL;
    ca *c;

    pthread_mutex_lock(&ca_mu);
    c = ca_get_locked(id);
    for (size_t i = 0; c && i < c->n_leaves && ctx == NULL; i++)
        if (strcmp(c->leaves[i].host, host) == 0)
            ctx = c->leaves[i].ctx;
    if (c != NULL && ctx == NULL && (ctx = leaf_ctx(c, host)) != NULL) {
        leaf *l = &c->leaves[c->n_leaves < LEAVES_MAX ? c->n_leaves++ : c->next_leaf];
        if (c->n_leaves == LEAVES_MAX && l == &c->leaves[c->next_leaf]) {
            c->next_leaf = (c->next_leaf + 1) % LEAVES_MAX;
            free(l->host);
            SSL_CTX_free(l->ctx); /* an SSL made from it keeps its own reference */
        }
        l->host = pe_xstrdup(host);
        l->ctx = ctx;
    }
    if (ctx != NULL)
        ssl = SSL_new(ctx);
    pthread_mutex_unlock(&ca_mu);
    return ssl;
}

static void client_init(void)
{
    const char *extra = getenv("POCKETENV_EGRESS_CA_FILE");
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    if (ctx == NULL)
        return;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_set_default_verify_paths(ctx) != 1)
        pe_log_warn("egress TLS: no system trust store");
    if (extra != NULL && extra[0] != '\0' && SSL_CTX_load_verify_locations(ctx, extra, NULL) != 1)
        pe_log_warn("egress TLS: POCKETENV_EGRESS_CA_FILE %s not loaded", extra);
    client_ctx = ctx;
}

SSL *pe_egress_tls_client(const char *host)
{
    SSL *ssl;

    pthread_once(&client_once, client_init);
    if (client_ctx == NULL || (ssl = SSL_new(client_ctx)) == NULL)
        return NULL;
    /* the name the sandbox asked for is the one the certificate must carry */
    if (SSL_set_tlsext_host_name(ssl, host) != 1 || SSL_set1_host(ssl, host) != 1) {
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}
