/* The daemon's keys on disk and the owner's did:key.
 *
 * Owns DATA/keys/ (see pocketenv/auth.h for its files). The keys are made
 * once, in a private directory renamed into place, and then only read: a
 * pe_auth is immutable after pe_auth_open and safe to share between threads.
 *
 * Loading works relative to the keys directory's fd with O_NOFOLLOW, and
 * checks owner, mode, type and size with fstat on the fd it then reads, so
 * what is checked is what is read. A file with group/other bits or another
 * owner is refused: someone else could have read the secret (or planted a
 * key of theirs), and silently chmod'ing it would hide that.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "auth/auth-internal.h"
#include "core/fs.h"
#include "core/util.h"

#define KEYS_DIR "keys"
#define JWT_KEY_FILE "jwt-hs256.key"
#define SIGN_KEY_FILE "owner-ed25519.key"
#define BOX_KEY_FILE "seal-x25519.key"
#define BOX_FILE_BYTES (crypto_box_SECRETKEYBYTES + crypto_box_PUBLICKEYBYTES)

/* Longest input pe__auth_base58_encode takes: did:key needs 34 bytes. */
#define B58_MAX_IN 128

/* base58btc by hand: Debian ships no C library for it (libbase58 is not
 * packaged), and the algorithm is twenty lines. Quadratic schoolbook
 * conversion of a big-endian number to base 58; each leading zero byte
 * becomes a leading '1', as Bitcoin and multibase define it. Inputs here are
 * short and public (public keys), so neither speed nor constant time
 * matters. */
int pe__auth_base58_encode(const unsigned char *in, size_t len, char *out, size_t cap)
{
    static const char alphabet[] = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    /* log(256) / log(58) < 1.37: digits needed per input byte. */
    unsigned char digits[B58_MAX_IN * 137 / 100 + 1];
    size_t zeros = 0, ndig = 0, pos = 0;

    if (len > B58_MAX_IN)
        return -1;
    while (zeros < len && in[zeros] == 0)
        zeros++;
    for (size_t i = zeros; i < len; i++) {
        unsigned int carry = in[i];
        for (size_t j = 0; j < ndig; j++) {
            carry += (unsigned int)digits[j] << 8;
            digits[j] = (unsigned char)(carry % 58);
            carry /= 58;
        }
        while (carry > 0) {
            digits[ndig++] = (unsigned char)(carry % 58);
            carry /= 58;
        }
    }
    if (zeros + ndig + 1 > cap)
        return -1;
    for (size_t i = 0; i < zeros; i++)
        out[pos++] = '1';
    while (ndig > 0)
        out[pos++] = alphabet[digits[--ndig]];
    out[pos] = '\0';
    return (int)pos;
}

void pe_auth_did_key_from_ed25519(const unsigned char pk[32], char *out)
{
    /* Multicodec ed25519-pub is 0xed, as an unsigned varint: 0xed 0x01. */
    unsigned char buf[2 + crypto_sign_PUBLICKEYBYTES] = {0xed, 0x01};
    static const char prefix[] = "did:key:z";

    memcpy(buf + 2, pk, crypto_sign_PUBLICKEYBYTES);
    memcpy(out, prefix, sizeof(prefix));
    if (pe__auth_base58_encode(buf, sizeof(buf), out + sizeof(prefix) - 1,
                               PE_AUTH_DID_MAX - (sizeof(prefix) - 1)) < 0)
        abort(); /* 34 bytes always fit in PE_AUTH_DID_MAX */
}

/* Owned by us and no bits for group or others. */
static int check_private(const struct stat *st, const char *path, pe_err *err)
{
    if (st->st_uid != geteuid())
        return pe_err_set(err, PE_EINVAL, 0,
                          "%s is owned by uid %u, not by the daemon's uid %u: refusing to use it",
                          path, (unsigned)st->st_uid, (unsigned)geteuid());
    if ((st->st_mode & 077) != 0)
        return pe_err_set(err, PE_EINVAL, 0,
                          "%s has mode %04o: key material must not be accessible to group or "
                          "others (expected %s)",
                          path, (unsigned)(st->st_mode & 07777),
                          S_ISDIR(st->st_mode) ? "0700" : "0600");
    return 0;
}

static int read_key(int dfd, const char *dir, const char *name, unsigned char *buf, size_t len,
                    pe_err *err)
{
    cleanup_free char *path = pe_xasprintf("%s/%s", dir, name);
    cleanup_fd int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
    struct stat st;
    size_t got = 0;

    if (fd < 0 && errno == ELOOP)
        return pe_err_set(err, PE_EINVAL, 0, "%s is a symlink: refusing to use it", path);
    if (fd < 0)
        return pe_err_sys(err, "open %s", path);
    if (fstat(fd, &st) < 0)
        return pe_err_sys(err, "stat %s", path);
    if (!S_ISREG(st.st_mode))
        return pe_err_set(err, PE_EINVAL, 0, "%s is not a regular file", path);
    if (check_private(&st, path, err) < 0)
        return -1;
    if (st.st_size != (off_t)len)
        return pe_err_set(err, PE_EINVAL, 0, "%s has %lld bytes, expected %zu: corrupt key file",
                          path, (long long)st.st_size, len);
    while (got < len) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return pe_err_sys(err, "read %s", path);
        if (r == 0)
            return pe_err_set(err, PE_EINVAL, 0, "%s: short read", path);
        got += (size_t)r;
    }
    return 0;
}

static int fsync_dir(const char *path)
{
    cleanup_fd int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd < 0 || fsync(fd) < 0)
        return -1;
    return 0;
}

static int write_keys(const char *dir, struct pe__auth_keys *k, pe_err *err)
{
    unsigned char sign_pk[crypto_sign_PUBLICKEYBYTES];
    unsigned char box[BOX_FILE_BYTES];
    cleanup_free char *jwt_path = pe_xasprintf("%s/%s", dir, JWT_KEY_FILE);
    cleanup_free char *sign_path = pe_xasprintf("%s/%s", dir, SIGN_KEY_FILE);
    cleanup_free char *box_path = pe_xasprintf("%s/%s", dir, BOX_KEY_FILE);
    int ret = -1;

    randombytes_buf(k->jwt_secret, sizeof(k->jwt_secret));
    if (crypto_sign_keypair(sign_pk, k->sign_sk) < 0 ||
        crypto_box_keypair(k->box_pk, k->box_sk) < 0) {
        pe_err_set(err, PE_ESYS, 0, "generate keys");
        goto out;
    }
    memcpy(box, k->box_sk, crypto_box_SECRETKEYBYTES);
    memcpy(box + crypto_box_SECRETKEYBYTES, k->box_pk, crypto_box_PUBLICKEYBYTES);
    if (pe_fs_write_atomic(jwt_path, k->jwt_secret, sizeof(k->jwt_secret), 0600, err) < 0 ||
        pe_fs_write_atomic(sign_path, k->sign_sk, sizeof(k->sign_sk), 0600, err) < 0 ||
        pe_fs_write_atomic(box_path, box, sizeof(box), 0600, err) < 0)
        goto out;
    ret = 0;
out:
    sodium_memzero(box, sizeof(box));
    return ret;
}

/* First start: make all keys in a fresh 0700 directory, then rename it to
 * DATA/keys. rename(2) of a directory onto an existing non-empty one fails,
 * so if another process won the race we drop ours and load theirs. */
static int create_keys(const char *data_dir, const char *keys_dir, pe_err *err)
{
    cleanup_free char *tmp = pe_xasprintf("%s/.keys-XXXXXX", data_dir);
    struct pe__auth_keys *k = NULL;
    int ret = -1;

    if (mkdtemp(tmp) == NULL)
        return pe_err_sys(err, "create %s", tmp);
    k = sodium_malloc(sizeof(*k));
    if (k == NULL) {
        pe_err_sys(err, "allocate key memory");
        goto out;
    }
    if (write_keys(tmp, k, err) < 0)
        goto out;
    if (rename(tmp, keys_dir) < 0) {
        if (errno != EEXIST && errno != ENOTEMPTY) {
            pe_err_sys(err, "rename %s to %s", tmp, keys_dir);
            goto out;
        }
    } else {
        if (fsync_dir(data_dir) < 0) {
            pe_err_sys(err, "fsync %s", data_dir);
            goto out;
        }
        tmp[0] = '\0'; /* renamed: nothing to clean up */
    }
    ret = 0;
out:
    if (tmp[0] != '\0')
        pe_fs_rm_rf(tmp, NULL);
    sodium_free(k);
    return ret;
}

/* A key whose public half does not follow from its secret half is a
 * corrupt file: catch it here rather than minting a different identity. */
static int check_key_pairs(const struct pe__auth_keys *k, const unsigned char *box_pk_file,
                           const char *keys_dir, pe_err *err)
{
    unsigned char pk[crypto_sign_PUBLICKEYBYTES];
    unsigned char sk[crypto_sign_SECRETKEYBYTES];
    unsigned char bpk[crypto_box_PUBLICKEYBYTES];
    int bad_sign, bad_box;

    crypto_sign_seed_keypair(pk, sk, k->sign_sk);
    bad_sign = sodium_memcmp(sk, k->sign_sk, sizeof(sk));
    sodium_memzero(sk, sizeof(sk));
    bad_box = crypto_scalarmult_base(bpk, k->box_sk) != 0 ||
              sodium_memcmp(bpk, box_pk_file, sizeof(bpk)) != 0;
    if (bad_sign)
        return pe_err_set(err, PE_EINVAL, 0, "%s/%s: public key does not match secret key",
                          keys_dir, SIGN_KEY_FILE);
    if (bad_box)
        return pe_err_set(err, PE_EINVAL, 0, "%s/%s: public key does not match secret key",
                          keys_dir, BOX_KEY_FILE);
    return 0;
}

static int load_keys(const char *keys_dir, struct pe__auth_keys *k, pe_err *err)
{
    cleanup_fd int dfd = open(keys_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    unsigned char box[BOX_FILE_BYTES];
    struct stat st;
    int ret = -1;

    if (dfd < 0)
        return pe_err_sys(err, "open %s", keys_dir);
    if (fstat(dfd, &st) < 0)
        return pe_err_sys(err, "stat %s", keys_dir);
    if (check_private(&st, keys_dir, err) < 0)
        return -1;
    if (read_key(dfd, keys_dir, JWT_KEY_FILE, k->jwt_secret, sizeof(k->jwt_secret), err) < 0 ||
        read_key(dfd, keys_dir, SIGN_KEY_FILE, k->sign_sk, sizeof(k->sign_sk), err) < 0 ||
        read_key(dfd, keys_dir, BOX_KEY_FILE, box, sizeof(box), err) < 0)
        goto out;
    memcpy(k->box_sk, box, crypto_box_SECRETKEYBYTES);
    memcpy(k->box_pk, box + crypto_box_SECRETKEYBYTES, crypto_box_PUBLICKEYBYTES);
    ret = check_key_pairs(k, box + crypto_box_SECRETKEYBYTES, keys_dir, err);
out:
    sodium_memzero(box, sizeof(box));
    return ret;
}

int pe_auth_open(const char *data_dir, pe_auth **out, pe_err *err)
{
    cleanup_free char *keys_dir = pe_xasprintf("%s/%s", data_dir, KEYS_DIR);
    pe_auth *a = NULL;
    struct stat st;

    if (sodium_init() < 0)
        return pe_err_set(err, PE_ESYS, 0, "initialize libsodium");
    if (pe_fs_mkdir_p(data_dir, 0700, err) < 0)
        return -1;
    if (lstat(keys_dir, &st) < 0) {
        if (errno != ENOENT)
            return pe_err_sys(err, "stat %s", keys_dir);
        if (create_keys(data_dir, keys_dir, err) < 0)
            return pe_err_prefix(err, "create keys in %s", keys_dir);
    }
    a = pe_xcalloc(1, sizeof(*a));
    a->keys = sodium_malloc(sizeof(*a->keys));
    if (a->keys == NULL) {
        free(a);
        return pe_err_sys(err, "allocate key memory");
    }
    if (load_keys(keys_dir, a->keys, err) < 0) {
        pe_auth_close(a);
        return pe_err_prefix(err, "load keys");
    }
    /* Public key of libsodium's Ed25519 secret key: its last 32 bytes. */
    pe_auth_did_key_from_ed25519(a->keys->sign_sk + crypto_sign_SEEDBYTES, a->did);
    sodium_bin2hex(a->box_pk_hex, sizeof(a->box_pk_hex), a->keys->box_pk, sizeof(a->keys->box_pk));
    sodium_mprotect_readonly(a->keys);
    a->cache = pe__auth_cache_new();
    *out = a;
    return 0;
}

void pe_auth_close(pe_auth *auth)
{
    if (auth == NULL)
        return;
    sodium_free(auth->keys); /* wipes, and lifts the read-only protection */
    pe__auth_cache_free(auth->cache);
    free(auth);
}

const char *pe_auth_owner_did(const pe_auth *auth)
{
    return auth->did;
}

const char *pe_auth_public_key_hex(const pe_auth *auth)
{
    return auth->box_pk_hex;
}
