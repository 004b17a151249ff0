/* OpenSSH Ed25519 key pairs, for the daemon (a sandbox's default key) and
 * the CLI (sshkeys put --generate). See include/pocketenv/auth.h. */
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "pocketenv/auth.h"

static const char OPENSSH_BEGIN[] = "-----BEGIN OPENSSH PRIVATE KEY-----";
static const char OPENSSH_END[] = "-----END OPENSSH PRIVATE KEY-----";
static const char OPENSSH_MAGIC[] = "openssh-key-v1"; /* and its NUL */

/* ---- OpenSSH key format ----
 *
 * Written by hand: libsodium makes the Ed25519 pair, but no library in
 * Debian writes OpenSSH's "openssh-key-v1" container short of linking
 * libssh or running ssh-keygen (which an image may lack). The format
 * (OpenSSH's PROTOCOL.key) is a few length-prefixed strings:
 *   "openssh-key-v1\0" string(cipher "none") string(kdf "none")
 *   string(kdf options "") uint32(1 key) string(public key blob)
 *   string(private section)
 * public key blob: string("ssh-ed25519") string(32-byte public key)
 * private section: uint32 check, the same uint32 again, string(key type),
 *   string(public key), string(64-byte seed || public key),
 *   string(comment), then 1, 2, 3, ... up to a multiple of 8 bytes.
 * The whole is base64 (with padding) in lines of 70 between the BEGIN and
 * END lines. */

/* A fixed-size buffer: pe_auth_ssh_generate sizes them all up front.
 * Growing one here would mean another sodium_malloc (an mmap, mprotects
 * and an mlock, then an munmap: each a TLB flush across every thread of
 * the daemon), which made key generation cost ~1.7 ms of CPU per create. */
typedef struct buf {
    unsigned char *p;
    size_t len, cap;
} buf;

static void buf_put(buf *b, const void *data, size_t n)
{
    if (n > b->cap - b->len)
        abort(); /* broken invariant: the sizes below are wrong */
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void buf_u32(buf *b, uint32_t v)
{
    unsigned char be[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                           (unsigned char)(v >> 8), (unsigned char)v};
    buf_put(b, be, 4);
}

static void buf_str(buf *b, const void *data, size_t n)
{
    buf_u32(b, (uint32_t)n);
    buf_put(b, data, n);
}

static char *b64(const unsigned char *p, size_t n)
{
    size_t size = sodium_base64_encoded_len(n, sodium_base64_VARIANT_ORIGINAL);
    char *out = pe_xmalloc(size);

    sodium_bin2base64(out, size, p, n, sodium_base64_VARIANT_ORIGINAL);
    return out;
}

/* The largest each part of the key file can be, for a comment of clen
 * bytes (the layout above; padding at most 7). */
#define BLOB_MAX (4 + 11 + 4 + crypto_sign_PUBLICKEYBYTES)
#define SEC_MAX(clen)                                                                              \
    (4 + 4 + 4 + 11 + 4 + crypto_sign_PUBLICKEYBYTES + 4 + crypto_sign_SECRETKEYBYTES + 4 +        \
     (clen) + 7)
#define ALL_MAX(clen) (sizeof(OPENSSH_MAGIC) + 3 * 4 + 4 + 4 + 4 + BLOB_MAX + 4 + SEC_MAX(clen) + 4)

int pe_auth_ssh_generate(const char *comment, char **priv_out, char **pub_out)
{
    unsigned char pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    unsigned char blob_mem[BLOB_MAX]; /* public */
    size_t clen = strlen(comment);
    buf blob = {blob_mem, 0, sizeof(blob_mem)}, sec = {0}, all = {0};
    uint32_t check = randombytes_random();
    unsigned char *secret;
    char *text, *pem;
    size_t n, o = 0;

    if (sodium_init() < 0)
        return -1;
    /* One guarded block for both secret parts (see buf). */
    secret = sodium_malloc(SEC_MAX(clen) + ALL_MAX(clen));
    if (secret == NULL)
        abort();
    sec = (buf){secret, 0, SEC_MAX(clen)};
    all = (buf){secret + SEC_MAX(clen), 0, ALL_MAX(clen)};
    crypto_sign_keypair(pk, sk); /* sk = seed || pk, as OpenSSH stores it */
    buf_str(&blob, "ssh-ed25519", 11);
    buf_str(&blob, pk, sizeof(pk));
    buf_u32(&sec, check);
    buf_u32(&sec, check);
    buf_str(&sec, "ssh-ed25519", 11);
    buf_str(&sec, pk, sizeof(pk));
    buf_str(&sec, sk, sizeof(sk));
    buf_str(&sec, comment, clen);
    for (unsigned char pad = 1; sec.len % 8; pad++)
        buf_put(&sec, &pad, 1);
    buf_put(&all, OPENSSH_MAGIC, sizeof(OPENSSH_MAGIC));
    buf_str(&all, "none", 4);
    buf_str(&all, "none", 4);
    buf_str(&all, "", 0);
    buf_u32(&all, 1);
    buf_str(&all, blob.p, blob.len);
    buf_str(&all, sec.p, sec.len);
    sodium_memzero(sk, sizeof(sk));
    text = b64(all.p, all.len);
    n = strlen(text);
    pem = pe_xmalloc(sizeof(OPENSSH_BEGIN) + sizeof(OPENSSH_END) + n + n / 70 + 4);
    memcpy(pem, OPENSSH_BEGIN, sizeof(OPENSSH_BEGIN) - 1);
    o = sizeof(OPENSSH_BEGIN) - 1;
    pem[o++] = '\n';
    for (size_t i = 0; i < n; i += 70) {
        size_t k = n - i < 70 ? n - i : 70;
        memcpy(pem + o, text + i, k);
        o += k;
        pem[o++] = '\n';
    }
    memcpy(pem + o, OPENSSH_END, sizeof(OPENSSH_END) - 1);
    o += sizeof(OPENSSH_END) - 1;
    pem[o++] = '\n';
    pem[o] = '\0';
    sodium_memzero(text, n);
    free(text);
    text = b64(blob.p, blob.len);
    *pub_out = pe_xasprintf("ssh-ed25519 %s %s", text, comment);
    *priv_out = pem;
    free(text);
    sodium_free(secret); /* wipes */
    return 0;
}
