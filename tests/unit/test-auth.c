/* lib/auth: keys on disk, did:key, HS256 tokens, sealed values.
 *
 * Token attacks are built by hand: headers and payloads are base64url-encoded
 * here and, where a test needs a valid signature over a crafted payload,
 * signed with crypto_auth_hmacsha256 using the secret read back from the
 * key file. So each refusal is shown to come from the check it names, not
 * from a broken signature. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "auth/atproto-internal.h"
#include "auth/auth-internal.h"
#include "pocketenv/atproto.h"
#include "core/fs.h"
#include "core/util.h"
#include "pocketenv/auth.h"
#include "task.h"

#define NOW ((time_t)1750000000)
#define OWNER "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"
#define OTHER "did:plc:ewvi7nxzyoun6zhxrhs64oiz"

static char *tmp_dir(void)
{
    char *d = pe_xstrdup("/tmp/pe-test-auth-XXXXXX");

    if (mkdtemp(d) == NULL)
        TEST_FAIL("mkdtemp: %s", strerror(errno));
    return d;
}

static pe_auth *open_ok(const char *dir)
{
    pe_auth *a = NULL;
    pe_err err = {0};

    if (pe_auth_open(dir, &a, &err) < 0)
        TEST_FAIL("pe_auth_open %s: %s", dir, err.msg);
    return a;
}

static void expect_open_fails(const char *dir, const char *needle)
{
    pe_auth *a = NULL;
    pe_err err = {0};

    ASSERT_EQ_INT(pe_auth_open(dir, &a, &err), -1);
    ASSERT(a == NULL);
    ASSERT_CONTAINS(err.msg, needle);
}

static char *b64url(const void *data, size_t len)
{
    size_t cap = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *s = pe_xmalloc(cap);

    sodium_bin2base64(s, cap, data, len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return s;
}

static void read_jwt_secret(const char *dir, unsigned char key[32])
{
    cleanup_free char *path = pe_xasprintf("%s/keys/jwt-hs256.key", dir);
    cleanup_free char *buf = NULL;
    size_t len = 0;
    pe_err err = {0};

    if (pe_fs_read_file(path, 64, &buf, &len, &err) < 0)
        TEST_FAIL("%s", err.msg);
    ASSERT_EQ_INT(len, 32);
    memcpy(key, buf, 32);
}

/* header.payload.HMAC-SHA256(key) from raw JSON texts. */
static char *sign_token(const unsigned char key[32], const char *header, const char *payload)
{
    cleanup_free char *h = b64url(header, strlen(header));
    cleanup_free char *p = b64url(payload, strlen(payload));
    cleanup_free char *input = pe_xasprintf("%s.%s", h, p);
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    cleanup_free char *sig = NULL;

    crypto_auth_hmacsha256(mac, (const unsigned char *)input, strlen(input), key);
    sig = b64url(mac, sizeof(mac));
    return pe_xasprintf("%s.%s", input, sig);
}

static enum pe_auth_result verify(const pe_auth *a, const char *jwt, int scopes)
{
    pe_err err = {0};
    char *did = NULL;
    enum pe_auth_result r = pe_auth_token_verify_at(a, jwt, scopes, NOW, &did, &err);

    if (r == PE_AUTH_OK) {
        ASSERT(did != NULL);
        ASSERT_EQ_STR(err.msg, "");
    } else {
        ASSERT(did == NULL);
        ASSERT_CONTAINS(err.msg, pe_auth_result_name(r));
        ASSERT_EQ_INT(err.code, PE_EINVAL);
    }
    free(did);
    return r;
}

static char *mint_ok(const pe_auth *a, const char *did, long long ttl, int scope, time_t now)
{
    char *jwt = NULL;
    pe_err err = {0};

    if (pe_auth_token_mint_at(a, did, ttl, scope, now, &jwt, &err) < 0)
        TEST_FAIL("mint: %s", err.msg);
    return jwt;
}

TEST_CASE(base58_vectors)
{
    /* Bitcoin Core's base58_encode_decode.json. */
    static const struct {
        const char *hex, *b58;
    } v[] = {
        {"", ""},
        {"61", "2g"},
        {"626262", "a3gV"},
        {"636363", "aPEr"},
        {"73696d706c792061206c6f6e6720737472696e67", "2cFupjhnEsSn59qHXstmK2ffpLv2"},
        {"00eb15231dfceb60925886b67d065299925915aeb172c06647",
         "1NS17iag9jJgTHD1VXjvLCEnZuQ3rJDE9L"},
        {"516b6fcd0f", "ABnLTmg"},
        {"bf4f89001e670274dd", "3SEo3LWLoPntC"},
        {"572e4794", "3EFU7m"},
        {"ecac89cad93923c02321", "EJDM8drfXA6uyA"},
        {"10c8511e", "Rt5zm"},
        {"00000000000000000000", "1111111111"},
    };
    unsigned char bin[64];
    char out[128];

    for (size_t i = 0; i < PE_ARRAY_LEN(v); i++) {
        size_t n = 0;
        ASSERT_EQ_INT(sodium_hex2bin(bin, sizeof(bin), v[i].hex, strlen(v[i].hex), NULL, &n, NULL),
                      0);
        ASSERT_EQ_INT(pe__auth_base58_encode(bin, n, out, sizeof(out)), strlen(v[i].b58));
        ASSERT_EQ_STR(out, v[i].b58);
    }
    /* Output that does not fit is an error, not a truncation. */
    ASSERT_EQ_INT(pe__auth_base58_encode((const unsigned char *)"bbb", 3, out, 4), -1);
    ASSERT_EQ_INT(pe__auth_base58_encode((const unsigned char *)"bbb", 3, out, 5), 4);
}

TEST_CASE(did_key_vectors)
{
    /* The did:key spec's example key is the Ed25519 key of the all-zero
     * seed; RFC 8032's test 1 key checked against an independent encoder. */
    static const struct {
        const char *seed_hex, *did;
    } v[] = {
        {"0000000000000000000000000000000000000000000000000000000000000000", OWNER},
        {"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
         "did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw"},
    };
    unsigned char seed[32], pk[32], sk[64];
    char did[PE_AUTH_DID_MAX];

    for (size_t i = 0; i < PE_ARRAY_LEN(v); i++) {
        ASSERT_EQ_INT(sodium_hex2bin(seed, 32, v[i].seed_hex, 64, NULL, NULL, NULL), 0);
        crypto_sign_seed_keypair(pk, sk, seed);
        pe_auth_did_key_from_ed25519(pk, did);
        ASSERT_EQ_STR(did, v[i].did);
    }
}

static void assert_mode(const char *path, unsigned mode)
{
    struct stat st;

    if (lstat(path, &st) < 0)
        TEST_FAIL("stat %s: %s", path, strerror(errno));
    ASSERT_EQ_INT(st.st_mode & 07777, mode);
}

TEST_CASE(keys_created_once_and_reloaded)
{
    cleanup_free char *dir = tmp_dir();
    cleanup_free char *data = pe_xasprintf("%s/data", dir);
    cleanup_free char *did = NULL, *pk = NULL;
    pe_auth *a = open_ok(data);
    const char *files[] = {"jwt-hs256.key", "owner-ed25519.key", "seal-x25519.key"};

    did = pe_xstrdup(pe_auth_owner_did(a));
    pk = pe_xstrdup(pe_auth_public_key_hex(a));
    ASSERT_EQ_INT(strncmp(did, "did:key:z6Mk", 12), 0);
    ASSERT_EQ_INT(strlen(did), strlen(OWNER));
    ASSERT_EQ_INT(strlen(pk), 64);
    ASSERT_EQ_INT(strspn(pk, "0123456789abcdef"), 64);
    pe_auth_close(a);

    assert_mode(data, 0700);
    cleanup_free char *keys = pe_xasprintf("%s/keys", data);
    assert_mode(keys, 0700);
    for (size_t i = 0; i < PE_ARRAY_LEN(files); i++) {
        cleanup_free char *p = pe_xasprintf("%s/%s", keys, files[i]);
        assert_mode(p, 0600);
    }
    /* Only the keys directory: no temporary left behind. */
    cleanup_free char *ls = pe_xasprintf("test \"$(ls -A %s)\" = keys", data);
    ASSERT_EQ_INT(system(ls), 0);

    a = open_ok(data);
    ASSERT_EQ_STR(pe_auth_owner_did(a), did);
    ASSERT_EQ_STR(pe_auth_public_key_hex(a), pk);
    pe_auth_close(a);

    /* A second data directory is a different identity. */
    cleanup_free char *other = pe_xasprintf("%s/other", dir);
    a = open_ok(other);
    ASSERT(strcmp(pe_auth_owner_did(a), did) != 0);
    ASSERT(strcmp(pe_auth_public_key_hex(a), pk) != 0);
    pe_auth_close(a);
    pe_fs_rm_rf(dir, NULL);
}

TEST_CASE(keys_created_once_under_a_race)
{
    cleanup_free char *dir = tmp_dir();
    cleanup_free char *out = pe_xasprintf("%s/dids", dir);
    cleanup_free char *data = pe_xasprintf("%s/data", dir);
    pid_t pids[8];

    for (size_t i = 0; i < PE_ARRAY_LEN(pids); i++) {
        pids[i] = fork();
        ASSERT(pids[i] >= 0);
        if (pids[i] == 0) {
            pe_auth *a = NULL;
            pe_err err = {0};
            FILE *f;
            if (pe_auth_open(data, &a, &err) < 0) {
                fprintf(stderr, "%s\n", err.msg);
                _exit(1);
            }
            f = fopen(out, "a");
            fprintf(f, "%s %s\n", pe_auth_owner_did(a), pe_auth_public_key_hex(a));
            fclose(f);
            pe_auth_close(a);
            _exit(0);
        }
    }
    for (size_t i = 0; i < PE_ARRAY_LEN(pids); i++) {
        int st = 0;
        ASSERT_EQ_INT(waitpid(pids[i], &st, 0), pids[i]);
        ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    cleanup_free char *cmd = pe_xasprintf("test $(sort -u %s | wc -l) = 1", out);
    ASSERT_EQ_INT(system(cmd), 0);
    cleanup_free char *ls = pe_xasprintf("test \"$(ls -A %s)\" = keys", data);
    ASSERT_EQ_INT(system(ls), 0);
    pe_fs_rm_rf(dir, NULL);
}

TEST_CASE(key_files_with_loose_permissions_refused)
{
    cleanup_free char *dir = tmp_dir();
    cleanup_free char *key = pe_xasprintf("%s/keys/jwt-hs256.key", dir);
    cleanup_free char *keys = pe_xasprintf("%s/keys", dir);

    pe_auth_close(open_ok(dir));
    ASSERT_EQ_INT(chmod(key, 0640), 0);
    expect_open_fails(dir, "jwt-hs256.key has mode 0640");
    ASSERT_EQ_INT(chmod(key, 0604), 0);
    expect_open_fails(dir, "must not be accessible to group or others");
    ASSERT_EQ_INT(chmod(key, 0600), 0);
    pe_auth_close(open_ok(dir));

    ASSERT_EQ_INT(chmod(keys, 0755), 0);
    expect_open_fails(dir, "keys has mode 0755");
    ASSERT_EQ_INT(chmod(keys, 0700), 0);

    /* A symlink to a private file is still refused: we read what we checked. */
    cleanup_free char *seal = pe_xasprintf("%s/keys/seal-x25519.key", dir);
    cleanup_free char *moved = pe_xasprintf("%s/elsewhere.key", dir);
    ASSERT_EQ_INT(rename(seal, moved), 0);
    ASSERT_EQ_INT(symlink(moved, seal), 0);
    expect_open_fails(dir, "seal-x25519.key is a symlink");
    pe_fs_rm_rf(dir, NULL);
}

TEST_CASE(key_files_of_another_user_refused)
{
    cleanup_free char *dir = tmp_dir();
    cleanup_free char *key = pe_xasprintf("%s/keys/owner-ed25519.key", dir);

    if (geteuid() != 0) {
        pe_fs_rm_rf(dir, NULL);
        TEST_SKIP("needs root to chown a file to another user");
    }
    pe_auth_close(open_ok(dir));
    ASSERT_EQ_INT(chown(key, 65534, 65534), 0);
    expect_open_fails(dir, "is owned by uid 65534, not by the daemon's uid 0");
    pe_fs_rm_rf(dir, NULL);
}

TEST_CASE(corrupt_key_files_refused)
{
    cleanup_free char *dir = tmp_dir();
    cleanup_free char *seal = pe_xasprintf("%s/keys/seal-x25519.key", dir);
    cleanup_free char *sign = pe_xasprintf("%s/keys/owner-ed25519.key", dir);
    cleanup_free char *buf = NULL;
    size_t len = 0;
    pe_err err = {0};

    pe_auth_close(open_ok(dir));
    ASSERT_EQ_INT(pe_fs_read_file(seal, 64, &buf, &len, &err), 0);
    ASSERT_EQ_INT(len, 64);
    ASSERT_EQ_INT(pe_fs_write_atomic(seal, buf, 63, 0600, &err), 0);
    expect_open_fails(dir, "has 63 bytes, expected 64");
    buf[40] ^= 1; /* public half no longer matches the secret half */
    ASSERT_EQ_INT(pe_fs_write_atomic(seal, buf, 64, 0600, &err), 0);
    expect_open_fails(dir, "seal-x25519.key: public key does not match");
    buf[40] ^= 1;
    ASSERT_EQ_INT(pe_fs_write_atomic(seal, buf, 64, 0600, &err), 0);
    pe_auth_close(open_ok(dir));

    free(buf);
    buf = NULL;
    ASSERT_EQ_INT(pe_fs_read_file(sign, 64, &buf, &len, &err), 0);
    buf[63] ^= 0x80;
    ASSERT_EQ_INT(pe_fs_write_atomic(sign, buf, 64, 0600, &err), 0);
    expect_open_fails(dir, "owner-ed25519.key: public key does not match");
    pe_fs_rm_rf(dir, NULL);
}

TEST_CASE(token_round_trip)
{
    cleanup_free char *dir = tmp_dir();
    pe_auth *a = open_ok(dir);
    cleanup_free char *jwt = mint_ok(a, pe_auth_owner_did(a), 3600, PE_AUTH_SCOPE_API, NOW);
    cleanup_free char *term = mint_ok(a, "did:plc:abc123", 60, PE_AUTH_SCOPE_TERMINAL, NOW);
    cleanup_free char *did = NULL;
    pe_err err = {0};

    ASSERT_EQ_INT(pe_auth_token_verify_at(a, jwt, PE_AUTH_SCOPE_API, NOW, &did, &err), PE_AUTH_OK);
    ASSERT_EQ_STR(did, pe_auth_owner_did(a));
    ASSERT_EQ_INT(verify(a, term, PE_AUTH_SCOPE_TERMINAL), PE_AUTH_OK);
    ASSERT_EQ_INT(verify(a, term, PE_AUTH_SCOPE_API | PE_AUTH_SCOPE_TERMINAL), PE_AUTH_OK);
    ASSERT_EQ_INT(verify(a, jwt, PE_AUTH_SCOPE_API | PE_AUTH_SCOPE_TERMINAL), PE_AUTH_OK);
    /* did_out is optional. */
    ASSERT_EQ_INT(pe_auth_token_verify_at(a, jwt, PE_AUTH_SCOPE_API, NOW, NULL, NULL), PE_AUTH_OK);

    /* The claims upstream's clients and our HTTP layer read. */
    cleanup_free char *payload = pe_xstrdup(strchr(jwt, '.') + 1);
    unsigned char raw[1024];
    size_t n = 0;
    *strchr(payload, '.') = '\0';
    ASSERT_EQ_INT(sodium_base642bin(raw, sizeof(raw), payload, strlen(payload), NULL, &n, NULL,
                                    sodium_base64_VARIANT_URLSAFE_NO_PADDING),
                  0);
    json_t *claims = json_loadb((const char *)raw, n, 0, NULL);
    ASSERT(claims != NULL);
    ASSERT_EQ_STR(json_string_value(json_object_get(claims, "did")), pe_auth_owner_did(a));
    ASSERT_EQ_STR(json_string_value(json_object_get(claims, "sub")), pe_auth_owner_did(a));
    ASSERT_EQ_STR(json_string_value(json_object_get(claims, "scope")), "api");
    ASSERT_EQ_INT(json_integer_value(json_object_get(claims, "iat")), NOW);
    ASSERT_EQ_INT(json_integer_value(json_object_get(claims, "exp")), NOW + 3600);
    json_decref(claims);

    /* Against the real clock too. */
    free(jwt);
    jwt = NULL;
    ASSERT_EQ_INT(pe_auth_token_mint(a, OWNER, 60, PE_AUTH_SCOPE_API, &jwt, &err), 0);
    ASSERT_EQ_INT(pe_auth_token_verify(a, jwt, PE_AUTH_SCOPE_API, NULL, &err), PE_AUTH_OK);
    pe_auth_close(a);
    pe_fs_rm_rf(dir, NULL);
}

TEST_CASE(token_expiry_enforced)
{
    cleanup_free char *dir = tmp_dir();
    pe_auth *a = open_ok(dir);
    /* exp = NOW - 30: still inside the 30 s skew one second before it ends. */
    cleanup_free char *jwt = mint_ok(a, OWNER, 1, PE_AUTH_SCOPE_API, NOW - 31);
    pe_err err = {0};

    ASSERT_EQ_INT(pe_auth_token_verify_at(a, jwt, PE_AUTH_SCOPE_API, NOW - 1, NULL, &err),
                  PE_AUTH_OK);
    ASSERT_EQ_INT(pe_auth_token_verify_at(a, jwt, PE_AUTH_SCOPE_API, NOW, NULL, &err),
                  PE_AUTH_EXPIRED);
    ASSERT_CONTAINS(err.msg, "expired");
    ASSERT_EQ_INT(verify(a, jwt, PE_AUTH_SCOPE_API), PE_AUTH_EXPIRED);
    ASSERT_EQ_INT(pe_auth_token_verify_at(a, jwt, PE_AUTH_SCOPE_API, NOW + 86400 * 365, NULL, &err),
                  PE_AUTH_EXPIRED);
    /* An expired token of the wrong scope says expired. */
    ASSERT_EQ_INT(verify(a, jwt, PE_AUTH_SCOPE_TERMINAL), PE_AUTH_EXPIRED);
    pe_auth_close(a);
    pe_fs_rm_rf(dir, NULL);
}

/* A verified token is remembered (token.c); every use is still checked
 * for time and scope, and a token that differs in one byte is not it. */
TEST_CASE(token_cache_keeps_every_check)
{
    cleanup_free char *dir = tmp_dir();
    pe_auth *a = open_ok(dir);
    cleanup_free char *api = mint_ok(a, OWNER, 600, PE_AUTH_SCOPE_API, NOW);
    cleanup_free char *other = mint_ok(a, OTHER, 600, PE_AUTH_SCOPE_API, NOW);
    cleanup_free char *forged = pe_xstrdup(api);
    char *did = NULL;
    size_t n = strlen(forged);

    for (int round = 0; round < 3; round++) { /* the first verifies, the others hit */
        ASSERT_EQ_INT(pe_auth_token_verify_at(a, api, PE_AUTH_SCOPE_API, NOW, &did, NULL),
                      PE_AUTH_OK);
        ASSERT_EQ_STR(did, OWNER);
        free(did);
        ASSERT_EQ_INT(pe_auth_token_verify_at(a, other, PE_AUTH_SCOPE_API, NOW, &did, NULL),
                      PE_AUTH_OK);
        ASSERT_EQ_STR(did, OTHER);
        free(did);
        did = NULL;
        ASSERT_EQ_INT(verify(a, api, PE_AUTH_SCOPE_TERMINAL), PE_AUTH_WRONG_SCOPE);
        ASSERT_EQ_INT(pe_auth_token_verify_at(a, api, PE_AUTH_SCOPE_API, NOW + 631, NULL, NULL),
                      PE_AUTH_EXPIRED);
        ASSERT_EQ_INT(pe_auth_token_verify_at(a, api, PE_AUTH_SCOPE_API, NOW - 3600, NULL, NULL),
                      PE_AUTH_NOT_YET_VALID);
    }
    /* a character inside the signature, changed: same length, same
     * everything else, and never taken for the cached token. (Not the last
     * one: of its 6 bits, 2 are the encoding's padding, and 'A' -> 'B'
     * may change only those.) */
    forged[n - 10] = forged[n - 10] == 'A' ? 'Q' : 'A';
    ASSERT_EQ_INT(verify(a, forged, PE_AUTH_SCOPE_API), PE_AUTH_BAD_SIGNATURE);
    forged[n - 1] = '\0';
    ASSERT(verify(a, forged, PE_AUTH_SCOPE_API) != PE_AUTH_OK);
    pe_auth_close(a);
    pe_fs_rm_rf(dir, NULL);
}

TEST_CASE(token_issued_in_the_future_refused)
{
    cleanup_free char *dir = tmp_dir();
    pe_auth *a = open_ok(dir);
    cleanup_free char *edge = mint_ok(a, OWNER, 3600, PE_AUTH_SCOPE_API, NOW + 30);
    cleanup_free char *future = mint_ok(a, OWNER, 3600, PE_AUTH_SCOPE_API, NOW + 31);

    ASSERT_EQ_INT(verify(a, edge, PE_AUTH_SCOPE_API), PE_AUTH_OK);
    ASSERT_EQ_INT(verify(a, future, PE_AUTH_SCOPE_API), PE_AUTH_NOT_YET_VALID);
    pe_auth_close(a);
    pe_fs_rm_rf(dir, NULL);
}

TEST_CASE(token_tampering_refused)
{
    cleanup_free char *dir = tmp_dir();
    pe_auth *a = open_ok(dir);
    cleanup_free char *jwt = mint_ok(a, "did:plc:alice", 3600, PE_AUTH_SCOPE_API, NOW);
    cleanup_free char *mallory = mint_ok(a, "did:plc:mallory", 3600, PE_AUTH_SCOPE_API, NOW);
    cleanup_free char *t = NULL;
    char *p1 = strchr(jwt, '.'), *p2 = strrchr(jwt, '.');
    char *m1 = strchr(mallory, '.'), *m2 = strrchr(mallory, '.');

    /* Alice's payload under mallory's signature and the reverse. */
    t = pe_xasprintf("%.*s%.*s%s", (int)(p1 - jwt), jwt, (int)(p2 - p1), p1, m2);
    ASSERT_EQ_INT(verify(a, t, PE_AUTH_SCOPE_API), PE_AUTH_BAD_SIGNATURE);
    free(t);
    t = pe_xasprintf("%.*s%.*s%s", (int)(m1 - mallory), mallory, (int)(p2 - p1), p1, m2);
    ASSERT_EQ_INT(verify(a, t, PE_AUTH_SCOPE_API), PE_AUTH_BAD_SIGNATURE);
    free(t);

    /* A payload re-encoded with another did, signature kept. */
    const char *forged =
        "{\"did\":\"did:plc:mallory\",\"sub\":\"did:plc:mallory\",\"scope\":\"api\","
        "\"iat\":1750000000,\"exp\":1750003600}";
    cleanup_free char *fp = b64url(forged, strlen(forged));
    t = pe_xasprintf("%.*s.%s%s", (int)(p1 - jwt), jwt, fp, p2);
    ASSERT_EQ_INT(verify(a, t, PE_AUTH_SCOPE_API), PE_AUTH_BAD_SIGNATURE);
    free(t);

    /* Every single-character change of the signature. */
    t = pe_xstrdup(jwt);
    for (char *c = t + (p2 - jwt) + 1; *c; c++) {
        char saved = *c;
        *c = saved == 'A' ? 'B' : 'A';
        ASSERT_NE_INT(verify(a, t, PE_AUTH_SCOPE_API), PE_AUTH_OK);
        *c = saved;
    }
    ASSERT_EQ_INT(verify(a, t, PE_AUTH_SCOPE_API), PE_AUTH_OK);
    /* Signature dropped or truncated. */
    t[p2 - jwt + 1] = '\0';
    ASSERT_NE_INT(verify(a, t, PE_AUTH_SCOPE_API), PE_AUTH_OK);
    t[p2 - jwt] = '\0';
    ASSERT_EQ_INT(verify(a, t, PE_AUTH_SCOPE_API), PE_AUTH_MALFORMED);
    pe_auth_close(a);
    pe_fs_rm_rf(dir, NULL);
}

TEST_CASE(token_alg_none_and_others_refused)
{
    cleanup_free char *dir = tmp_dir();
    pe_auth *a = open_ok(dir);
    unsigned char key[32];
    const char *payload = "{\"did\":\"" OWNER "\",\"sub\":\"" OWNER "\",\"scope\":\"api\","
                          "\"iat\":1750000000,\"exp\":1750003600}";
    static const char *const headers[] = {
        "{\"alg\":\"none\",\"typ\":\"JWT\"}",
        "{\"alg\":\"none\"}",
        "{\"alg\":\"None\"}",
        "{\"alg\":\"NONE\"}",
        "{\"alg\":\"hs256\"}",
        "{\"alg\":\"HS256 \"}",
        "{\"alg\":\"HS384\"}",
        "{\"alg\":\"HS512\"}",
        "{\"alg\":\"RS256\"}",
        "{\"alg\":\"ES256\"}",
        "{\"alg\":null}",
        "{\"typ\":\"JWT\"}",
        "{\"alg\":[\"HS256\"]}",
    };
    cleanup_free char *p = b64url(payload, strlen(payload));

    read_jwt_secret(dir, key);
    /* The control: this payload, HS256 and our key, is accepted. */
    cleanup_free char *good = sign_token(key, "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload);
    ASSERT_EQ_INT(verify(a, good, PE_AUTH_SCOPE_API), PE_AUTH_OK);

    for (size_t i = 0; i < PE_ARRAY_LEN(headers); i++) {
        cleanup_free char *h = b64url(headers[i], strlen(headers[i]));
        cleanup_free char *unsigned_tok = pe_xasprintf("%s.%s.", h, p);
        cleanup_free char *signed_tok = sign_token(key, headers[i], payload);
        cleanup_free char *two_parts = pe_xasprintf("%s.%s", h, p);
        ASSERT_EQ_INT(verify(a, unsigned_tok, PE_AUTH_SCOPE_API), PE_AUTH_MALFORMED);
        ASSERT_EQ_INT(verify(a, signed_tok, PE_AUTH_SCOPE_API), PE_AUTH_BAD_ALG);
        ASSERT_EQ_INT(verify(a, two_parts, PE_AUTH_SCOPE_API), PE_AUTH_MALFORMED);
    }
    /* alg none with a non-empty signature part: refused on alg. */
    cleanup_free char *hn = b64url("{\"alg\":\"none\"}", 14);
    cleanup_free char *none_sig = pe_xasprintf("%s.%s.AAAA", hn, p);
    ASSERT_EQ_INT(verify(a, none_sig, PE_AUTH_SCOPE_API), PE_AUTH_BAD_ALG);

    /* Duplicate alg keys, crit and an odd typ are refused before libjwt. */
    cleanup_free char *dup = sign_token(key, "{\"alg\":\"HS256\",\"alg\":\"none\"}", payload);
    ASSERT_EQ_INT(verify(a, dup, PE_AUTH_SCOPE_API), PE_AUTH_MALFORMED);
    cleanup_free char *crit = sign_token(key, "{\"alg\":\"HS256\",\"crit\":[\"b64\"]}", payload);
    ASSERT_EQ_INT(verify(a, crit, PE_AUTH_SCOPE_API), PE_AUTH_MALFORMED);
    cleanup_free char *typ = sign_token(key, "{\"alg\":\"HS256\",\"typ\":\"JWE\"}", payload);
    ASSERT_EQ_INT(verify(a, typ, PE_AUTH_SCOPE_API), PE_AUTH_MALFORMED);
    pe_auth_close(a);
    pe_fs_rm_rf(dir, NULL);
}

TEST_CASE(token_of_another_secret_refused)
{
    cleanup_free char *dir = tmp_dir();
    cleanup_free char *d1 = pe_xasprintf("%s/one", dir);
    cleanup_free char *d2 = pe_xasprintf("%s/two", dir);
    pe_auth *a = open_ok(d1), *b = open_ok(d2);
    cleanup_free char *jwt = mint_ok(b, pe_auth_owner_did(a), 3600, PE_AUTH_SCOPE_API, NOW);
    unsigned char zero[32] = {0};
    const char *payload = "{\"did\":\"" OWNER "\",\"scope\":\"api\",\"iat\":1750000000,"
                          "\"exp\":1750003600}";
    cleanup_free char *z = sign_token(zero, "{\"alg\":\"HS256\"}", payload);

    ASSERT_EQ_INT(verify(b, jwt, PE_AUTH_SCOPE_API), PE_AUTH_OK);
    ASSERT_EQ_INT(verify(a, jwt, PE_AUTH_SCOPE_API), PE_AUTH_BAD_SIGNATURE);
    ASSERT_EQ_INT(verify(a, z, PE_AUTH_SCOPE_API), PE_AUTH_BAD_SIGNATURE);
    pe_auth_close(a);
    pe_auth_close(b);
    pe_fs_rm_rf(dir, NULL);
}

TEST_CASE(token_wrong_scope_refused)
{
    cleanup_free char *dir = tmp_dir();
    pe_auth *a = open_ok(dir);
    cleanup_free char *term = mint_ok(a, OWNER, 60, PE_AUTH_SCOPE_TERMINAL, NOW);
    cleanup_free char *api = mint_ok(a, OWNER, 60, PE_AUTH_SCOPE_API, NOW);

    ASSERT_EQ_INT(verify(a, term, PE_AUTH_SCOPE_API), PE_AUTH_WRONG_SCOPE);
    ASSERT_EQ_INT(verify(a, api, PE_AUTH_SCOPE_TERMINAL), PE_AUTH_WRONG_SCOPE);
    ASSERT_EQ_INT(verify(a, api, 0), PE_AUTH_WRONG_SCOPE);
    pe_auth_close(a);
    pe_fs_rm_rf(dir, NULL);
}

/* Preview tokens: bound to one audience, never taken as another kind,
 * codes good once. */
TEST_CASE(token_bound_to_an_audience)
{
    cleanup_free char *dir = tmp_dir();
    pe_auth *a = open_ok(dir);
    cleanup_free char *cookie = NULL, *code = NULL, *did = NULL, *api = NULL;
    pe_err err = {0};

    ASSERT_EQ_INT(
        pe_auth_token_mint_aud(a, OWNER, 600, PE_AUTH_SCOPE_PREVIEW, "sbx_A:8080", &cookie, &err),
        0);
    ASSERT_EQ_INT(
        pe_auth_token_mint_aud(a, OWNER, 60, PE_AUTH_SCOPE_PREVIEW_CODE, "sbx_A:8080", &code, &err),
        0);
    ASSERT_EQ_INT(
        pe_auth_token_verify_aud(a, cookie, PE_AUTH_SCOPE_PREVIEW, "sbx_A:8080", false, &did, &err),
        PE_AUTH_OK);
    ASSERT_EQ_STR(did, OWNER);
    /* Another port, another sandbox, another kind of token: refused. */
    ASSERT_EQ_INT(
        pe_auth_token_verify_aud(a, cookie, PE_AUTH_SCOPE_PREVIEW, "sbx_A:8081", false, NULL, &err),
        PE_AUTH_WRONG_SCOPE);
    ASSERT_EQ_INT(
        pe_auth_token_verify_aud(a, cookie, PE_AUTH_SCOPE_PREVIEW, "sbx_B:8080", false, NULL, &err),
        PE_AUTH_WRONG_SCOPE);
    ASSERT_EQ_INT(pe_auth_token_verify_aud(a, cookie, PE_AUTH_SCOPE_PREVIEW_CODE, "sbx_A:8080",
                                           true, NULL, &err),
                  PE_AUTH_WRONG_SCOPE);
    /* Never an API or terminal token, even to a verifier taking every scope. */
    ASSERT_EQ_INT(
        pe_auth_token_verify(a, cookie, PE_AUTH_SCOPE_API | PE_AUTH_SCOPE_TERMINAL, NULL, &err),
        PE_AUTH_WRONG_SCOPE);
    ASSERT_EQ_INT(pe_auth_token_verify(a, cookie, -1, NULL, &err), PE_AUTH_WRONG_SCOPE);
    /* An API token is not a preview token. */
    api = mint_ok(a, OWNER, 60, PE_AUTH_SCOPE_API, time(NULL));
    ASSERT_EQ_INT(pe_auth_token_verify_aud(a, api, PE_AUTH_SCOPE_PREVIEW | PE_AUTH_SCOPE_API,
                                           "sbx_A:8080", false, NULL, &err),
                  PE_AUTH_WRONG_SCOPE);
    /* A code is good once; the cookie as often as wanted. */
    ASSERT_EQ_INT(pe_auth_token_verify_aud(a, code, PE_AUTH_SCOPE_PREVIEW_CODE, "sbx_A:8080", true,
                                           NULL, &err),
                  PE_AUTH_OK);
    ASSERT_EQ_INT(pe_auth_token_verify_aud(a, code, PE_AUTH_SCOPE_PREVIEW_CODE, "sbx_A:8080", true,
                                           NULL, &err),
                  PE_AUTH_REVOKED);
    ASSERT_CONTAINS(err.msg, "used before");
    for (int i = 0; i < 3; i++)
        ASSERT_EQ_INT(pe_auth_token_verify_aud(a, cookie, PE_AUTH_SCOPE_PREVIEW, "sbx_A:8080",
                                               false, NULL, &err),
                      PE_AUTH_OK);
    /* Bound scopes need an audience; others take none. */
    free(code);
    code = NULL;
    ASSERT(pe_auth_token_mint_aud(a, OWNER, 60, PE_AUTH_SCOPE_API, "sbx_A:8080", &code, &err) < 0);
    ASSERT(pe_auth_token_mint(a, OWNER, 60, PE_AUTH_SCOPE_PREVIEW, &code, &err) < 0);
    ASSERT(pe_auth_token_mint_aud(a, OWNER, 60, PE_AUTH_SCOPE_PREVIEW, "a b", &code, &err) < 0);
    ASSERT(code == NULL);
    /* What a connection keeps to end when its token is revoked. */
    int64_t iat = 0;
    free(did);
    did = NULL;
    ASSERT_EQ_INT(
        pe_auth_token_verify_iat(a, cookie, PE_AUTH_SCOPE_PREVIEW, "sbx_A:8080", &did, &iat, &err),
        PE_AUTH_OK);
    ASSERT(iat > 0 && iat <= (int64_t)time(NULL));
    ASSERT(!pe_auth_revoked(a, OWNER, iat));
    /* Revoking the user ends their preview cookies too. */
    pe_auth_revoke_before(a, OWNER, (int64_t)time(NULL) + 1);
    ASSERT(pe_auth_revoked(a, OWNER, iat));
    ASSERT(!pe_auth_revoked(a, "did:plc:someoneelse", iat));
    ASSERT_EQ_INT(
        pe_auth_token_verify_aud(a, cookie, PE_AUTH_SCOPE_PREVIEW, "sbx_A:8080", false, NULL, &err),
        PE_AUTH_REVOKED);
    pe_auth_close(a);
    pe_fs_rm_rf(dir, NULL);
}

TEST_CASE(token_bad_claims_refused)
{
    cleanup_free char *dir = tmp_dir();
    pe_auth *a = open_ok(dir);
    unsigned char key[32];
    static const char *const payloads[] = {
        /* upstream's own token shapes: no exp, no scope */
        "{\"did\":\"" OWNER "\",\"iat\":1750000000}",
        "{\"sub\":\"" OWNER "\",\"iat\":1750000000}",
        "{\"did\":\"" OWNER "\",\"iat\":1750000000,\"exp\":1750003600}",
        "{\"did\":\"" OWNER "\",\"scope\":\"api\",\"iat\":1750000000}",
        "{\"did\":\"" OWNER "\",\"scope\":\"api\",\"exp\":1750003600}",
        "{\"did\":\"" OWNER "\",\"scope\":\"api\",\"iat\":1750000000,\"exp\":\"1750003600\"}",
        "{\"did\":\"" OWNER "\",\"scope\":\"api\",\"iat\":1750000000,\"exp\":1750003600.5}",
        "{\"did\":\"" OWNER "\",\"scope\":\"api\",\"iat\":1750000000,\"exp\":1750000000}",
        "{\"did\":\"" OWNER "\",\"scope\":\"api\",\"iat\":-5,\"exp\":1750003600}",
        "{\"did\":\"" OWNER "\",\"scope\":\"admin\",\"iat\":1750000000,\"exp\":1750003600}",
        "{\"did\":\"" OWNER "\",\"scope\":[\"api\"],\"iat\":1750000000,\"exp\":1750003600}",
        "{\"did\":\"" OWNER "\",\"sub\":\"did:plc:x\",\"scope\":\"api\",\"iat\":1750000000,"
        "\"exp\":1750003600}",
        "{\"did\":\"" OWNER "\",\"sub\":7,\"scope\":\"api\",\"iat\":1750000000,\"exp\":1750003600}",
        "{\"did\":7,\"scope\":\"api\",\"iat\":1750000000,\"exp\":1750003600}",
        "{\"did\":\"alice\",\"scope\":\"api\",\"iat\":1750000000,\"exp\":1750003600}",
        "{\"did\":\"did:plc:a b\",\"scope\":\"api\",\"iat\":1750000000,\"exp\":1750003600}",
        /* an audience is for preview scopes only, and they need one */
        "{\"did\":\"" OWNER "\",\"scope\":\"api\",\"iat\":1750000000,\"exp\":1750003600,"
        "\"aud\":\"sbx_1:8080\",\"jti\":\"00000000000000000000000000000000\"}",
        "{\"did\":\"" OWNER "\",\"scope\":\"preview\",\"iat\":1750000000,\"exp\":1750003600}",
        "{\"did\":\"" OWNER "\",\"scope\":\"preview\",\"iat\":1750000000,\"exp\":1750003600,"
        "\"aud\":\"sbx_1:8080\"}",
        "{\"did\":\"" OWNER "\",\"scope\":\"preview\",\"iat\":1750000000,\"exp\":1750003600,"
        "\"aud\":7,\"jti\":\"00000000000000000000000000000000\"}",
        "{\"did\":\"" OWNER "\",\"scope\":\"preview\",\"iat\":1750000000,\"exp\":1750003600,"
        "\"aud\":\"sbx_1:8080\",\"jti\":\"short\"}",
    };

    read_jwt_secret(dir, key);
    for (size_t i = 0; i < PE_ARRAY_LEN(payloads); i++) {
        cleanup_free char *t = sign_token(key, "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payloads[i]);
        if (verify(a, t, PE_AUTH_SCOPE_API) != PE_AUTH_BAD_CLAIMS)
            TEST_FAIL("payload %zu accepted or refused for another reason: %s", i, payloads[i]);
    }
    /* Huge exp and iat values cannot overflow the checks. */
    cleanup_free char *big = sign_token(key, "{\"alg\":\"HS256\"}",
                                        "{\"did\":\"" OWNER "\",\"scope\":\"api\",\"iat\":"
                                        "9223372036854775806,\"exp\":9223372036854775807}");
    ASSERT_EQ_INT(verify(a, big, PE_AUTH_SCOPE_API), PE_AUTH_NOT_YET_VALID);
    cleanup_free char *old = sign_token(key, "{\"alg\":\"HS256\"}",
                                        "{\"did\":\"" OWNER "\",\"scope\":\"api\",\"iat\":0,"
                                        "\"exp\":1}");
    ASSERT_EQ_INT(verify(a, old, PE_AUTH_SCOPE_API), PE_AUTH_EXPIRED);
    pe_auth_close(a);
    pe_fs_rm_rf(dir, NULL);
}

TEST_CASE(token_garbage_refused)
{
    cleanup_free char *dir = tmp_dir();
    pe_auth *a = open_ok(dir);
    unsigned char key[32];
    static const char *const garbage[] = {
        "",
        ".",
        "..",
        "...",
        "a.b.c",
        "null",
        "Bearer x.y.z",
        "eyJ",
        "eyJhbGciOiJIUzI1NiJ9",
        "eyJhbGciOiJIUzI1NiJ9..",
        "eyJhbGciOiJIUzI1NiJ9.e30",
        "eyJhbGciOiJIUzI1NiJ9.e30.",
        "eyJhbGciOiJIUzI1NiJ9.e30.x.y",
        "eyJhbGciOiJIUzI1NiJ9=.e30.AAAA",
        "%%%.%%%.%%%",
        "eyJhbGciOiJIUzI1NiJ9.W10.AAAA", /* payload [] */
        "W10.e30.AAAA",                  /* header [] */
        "eyJhbGciOiJIUzI1NiJ9.eyJ.AAAA", /* payload truncated JSON */
        "eyJhbGciOiJIUzI1NiJ9 .e30.AAAA",
        "eyJhbGciOiJIUzI1NiJ9.e30.AAAA\n",
        "eyJhbGciOiJIUzI1NiJ9.e30.AAAA ",
    };

    for (size_t i = 0; i < PE_ARRAY_LEN(garbage); i++) {
        enum pe_auth_result r = verify(a, garbage[i], PE_AUTH_SCOPE_API);
        if (r != PE_AUTH_MALFORMED && r != PE_AUTH_BAD_SIGNATURE)
            TEST_FAIL("\"%s\": %s", garbage[i], pe_auth_result_name(r));
    }
    ASSERT_EQ_INT(verify(a, NULL, PE_AUTH_SCOPE_API), PE_AUTH_MALFORMED);

    /* 100 KB, and one byte over the limit, refused before decoding; a real
     * token padded with a huge claim to just under the limit is fine. */
    char *huge = pe_xmalloc(100 * 1024 + 1);
    memset(huge, 'A', 100 * 1024);
    huge[100 * 1024] = '\0';
    huge[20] = '.';
    huge[50000] = '.';
    ASSERT_EQ_INT(verify(a, huge, PE_AUTH_SCOPE_API), PE_AUTH_MALFORMED);
    free(huge);

    read_jwt_secret(dir, key);
    enum pe_auth_result last = PE_AUTH_MALFORMED;
    for (size_t pad = 2900;; pad++) {
        cleanup_free char *fill = pe_xcalloc(1, pad + 1);
        memset(fill, 'x', pad);
        cleanup_free char *payload = pe_xasprintf("{\"did\":\"" OWNER "\",\"scope\":\"api\","
                                                  "\"iat\":1750000000,\"exp\":1750003600,"
                                                  "\"pad\":\"%s\"}",
                                                  fill);
        cleanup_free char *t = sign_token(key, "{\"alg\":\"HS256\"}", payload);
        enum pe_auth_result r = verify(a, t, PE_AUTH_SCOPE_API);
        if (strlen(t) > PE_AUTH_TOKEN_MAX) {
            ASSERT_EQ_INT(last, PE_AUTH_OK);
            ASSERT_EQ_INT(r, PE_AUTH_MALFORMED);
            break;
        }
        ASSERT_EQ_INT(r, PE_AUTH_OK);
        last = r;
    }
    pe_auth_close(a);
    pe_fs_rm_rf(dir, NULL);
}

TEST_CASE(token_revocation_per_user)
{
    cleanup_free char *dir = tmp_dir();
    pe_auth *a = open_ok(dir);
    cleanup_free char *old = mint_ok(a, OWNER, 600, PE_AUTH_SCOPE_API, NOW);
    cleanup_free char *other = mint_ok(a, OTHER, 600, PE_AUTH_SCOPE_API, NOW);
    cleanup_free char *uncached = mint_ok(a, OWNER, 600, PE_AUTH_SCOPE_TERMINAL, NOW - 1);
    char *fresh = NULL;

    ASSERT_EQ_INT(pe_auth_token_verify_at(a, old, PE_AUTH_SCOPE_API, NOW, NULL, NULL), PE_AUTH_OK);
    pe_auth_revoke_before(a, OWNER, NOW + 1); /* everything of second NOW and before */
    /* refused from the cache and when verified for the first time */
    ASSERT_EQ_INT(pe_auth_token_verify_at(a, old, PE_AUTH_SCOPE_API, NOW, NULL, NULL),
                  PE_AUTH_REVOKED);
    ASSERT_EQ_INT(pe_auth_token_verify_at(a, uncached, PE_AUTH_SCOPE_TERMINAL, NOW, NULL, NULL),
                  PE_AUTH_REVOKED);
    ASSERT_EQ_INT(pe_auth_token_verify_at(a, other, PE_AUTH_SCOPE_API, NOW, NULL, NULL),
                  PE_AUTH_OK);
    /* minted in the same second, after the revocation: valid at once */
    fresh = mint_ok(a, OWNER, 600, PE_AUTH_SCOPE_API, NOW);
    ASSERT_EQ_INT(pe_auth_token_verify_at(a, fresh, PE_AUTH_SCOPE_API, NOW, NULL, NULL),
                  PE_AUTH_OK);
    free(fresh);
    /* a later revocation moves the line; 0 lifts it */
    fresh = mint_ok(a, OWNER, 600, PE_AUTH_SCOPE_API, NOW + 5);
    pe_auth_revoke_before(a, OWNER, NOW + 6);
    ASSERT_EQ_INT(pe_auth_token_verify_at(a, fresh, PE_AUTH_SCOPE_API, NOW + 5, NULL, NULL),
                  PE_AUTH_REVOKED);
    pe_auth_revoke_before(a, OWNER, 0);
    ASSERT_EQ_INT(pe_auth_token_verify_at(a, old, PE_AUTH_SCOPE_API, NOW, NULL, NULL), PE_AUTH_OK);
    free(fresh);
    pe_auth_close(a);
    pe_fs_rm_rf(dir, NULL);
}

TEST_CASE(token_mint_rejects_bad_input)
{
    cleanup_free char *dir = tmp_dir();
    pe_auth *a = open_ok(dir);
    char *jwt = NULL;
    pe_err err = {0};
    char long_did[PE_AUTH_DID_MAX + 1];

    memset(long_did, 'a', sizeof(long_did) - 1);
    memcpy(long_did, "did:", 4);
    long_did[sizeof(long_did) - 1] = '\0';
    ASSERT_EQ_INT(pe_auth_token_mint_at(a, "alice", 60, PE_AUTH_SCOPE_API, NOW, &jwt, &err), -1);
    ASSERT_EQ_INT(pe_auth_token_mint_at(a, "did:", 60, PE_AUTH_SCOPE_API, NOW, &jwt, &err), -1);
    ASSERT_EQ_INT(pe_auth_token_mint_at(a, "did:x\ny", 60, PE_AUTH_SCOPE_API, NOW, &jwt, &err), -1);
    ASSERT_EQ_INT(pe_auth_token_mint_at(a, long_did, 60, PE_AUTH_SCOPE_API, NOW, &jwt, &err), -1);
    ASSERT_EQ_INT(pe_auth_token_mint_at(a, NULL, 60, PE_AUTH_SCOPE_API, NOW, &jwt, &err), -1);
    ASSERT_EQ_INT(pe_auth_token_mint_at(a, OWNER, 0, PE_AUTH_SCOPE_API, NOW, &jwt, &err), -1);
    ASSERT_EQ_INT(pe_auth_token_mint_at(a, OWNER, -5, PE_AUTH_SCOPE_API, NOW, &jwt, &err), -1);
    ASSERT_EQ_INT(
        pe_auth_token_mint_at(a, OWNER, PE_AUTH_TTL_MAX + 1, PE_AUTH_SCOPE_API, NOW, &jwt, &err),
        -1);
    ASSERT_EQ_INT(pe_auth_token_mint_at(a, OWNER, 60, 3, NOW, &jwt, &err), -1);
    ASSERT_CONTAINS(err.msg, "unknown scope");
    ASSERT_EQ_INT(pe_auth_token_mint_at(a, OWNER, 60, 0, NOW, &jwt, &err), -1);
    ASSERT(jwt == NULL);
    long_did[PE_AUTH_DID_MAX - 1] = '\0';
    jwt = mint_ok(a, long_did, PE_AUTH_TTL_MAX, PE_AUTH_SCOPE_API, NOW);
    ASSERT_EQ_INT(verify(a, jwt, PE_AUTH_SCOPE_API), PE_AUTH_OK);
    free(jwt);
    pe_auth_close(a);
    pe_fs_rm_rf(dir, NULL);
}

TEST_CASE(token_file_private_and_atomic)
{
    cleanup_free char *dir = tmp_dir();
    cleanup_free char *parent = pe_xasprintf("%s/home/.pocketenv", dir);
    cleanup_free char *path = pe_xasprintf("%s/token.json", parent);
    cleanup_free char *text = NULL;
    pe_err err = {0};
    mode_t old = umask(0022);

    ASSERT_EQ_INT(pe_auth_write_token_file(path, "first.token.x", &err), 0);
    ASSERT_EQ_INT(pe_auth_write_token_file(path, "aaa.bbb.ccc", &err), 0);
    umask(old);
    assert_mode(parent, 0700);
    assert_mode(path, 0600);
    ASSERT_EQ_INT(pe_fs_read_file(path, 4096, &text, NULL, &err), 0);
    ASSERT_EQ_STR(text, "{\"token\": \"aaa.bbb.ccc\"}");
    cleanup_free char *ls = pe_xasprintf("test \"$(ls -A %s)\" = token.json", parent);
    ASSERT_EQ_INT(system(ls), 0);
    /* Not a string jansson can encode: refused, file untouched. */
    ASSERT_EQ_INT(pe_auth_write_token_file(path, "\xff\xfe", &err), -1);
    free(text);
    text = NULL;
    ASSERT_EQ_INT(pe_fs_read_file(path, 4096, &text, NULL, &err), 0);
    ASSERT_CONTAINS(text, "aaa.bbb.ccc");
    pe_fs_rm_rf(dir, NULL);
}

TEST_CASE(seal_round_trip)
{
    cleanup_free char *dir = tmp_dir();
    pe_auth *a = open_ok(dir);
    static const char secret[] = "sk-live-0123456789";
    const unsigned char bin[] = {0, 1, 2, 0, 255, 0};
    unsigned char *plain = NULL;
    size_t len = 99;
    char *sealed = NULL;
    pe_err err = {0};

    ASSERT_EQ_INT(pe_auth_seal(pe_auth_public_key_hex(a), secret, strlen(secret), &sealed, &err),
                  0);
    ASSERT_EQ_INT(
        strspn(sealed, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
        strlen(sealed));
    ASSERT_EQ_INT(pe_auth_unseal(a, sealed, &plain, &len, &err), 0);
    ASSERT_EQ_INT(len, strlen(secret));
    ASSERT_EQ_STR((char *)plain, secret);
    pe_auth_plain_free(plain);

    /* Padded base64url is accepted too. */
    size_t n = strlen(sealed);
    char *padded = pe_xasprintf("%s%s", sealed, n % 4 == 2 ? "==" : n % 4 == 3 ? "=" : "");
    ASSERT_EQ_INT(pe_auth_unseal(a, padded, &plain, &len, &err), 0);
    ASSERT_EQ_STR((char *)plain, secret);
    pe_auth_plain_free(plain);
    free(padded);
    free(sealed);

    /* Binary with NULs, and the empty value. */
    ASSERT_EQ_INT(pe_auth_seal(pe_auth_public_key_hex(a), bin, sizeof(bin), &sealed, &err), 0);
    ASSERT_EQ_INT(pe_auth_unseal(a, sealed, &plain, &len, &err), 0);
    ASSERT_EQ_INT(len, sizeof(bin));
    ASSERT_EQ_INT(memcmp(plain, bin, sizeof(bin)), 0);
    pe_auth_plain_free(plain);
    free(sealed);
    ASSERT_EQ_INT(pe_auth_seal(pe_auth_public_key_hex(a), "", 0, &sealed, &err), 0);
    ASSERT_EQ_INT(pe_auth_unseal(a, sealed, &plain, &len, &err), 0);
    ASSERT_EQ_INT(len, 0);
    ASSERT_EQ_STR((char *)plain, "");
    pe_auth_plain_free(plain);
    free(sealed);
    pe_auth_plain_free(NULL);

    /* The largest value that fits. */
    size_t big = PE_AUTH_SEALED_MAX - crypto_box_SEALBYTES;
    unsigned char *bigbuf = pe_xcalloc(1, big + 1);
    ASSERT_EQ_INT(pe_auth_seal(pe_auth_public_key_hex(a), bigbuf, big + 1, &sealed, &err), -1);
    ASSERT_EQ_INT(pe_auth_seal(pe_auth_public_key_hex(a), bigbuf, big, &sealed, &err), 0);
    ASSERT_EQ_INT(pe_auth_unseal(a, sealed, &plain, &len, &err), 0);
    ASSERT_EQ_INT(len, big);
    pe_auth_plain_free(plain);
    free(sealed);
    free(bigbuf);
    pe_auth_close(a);
    pe_fs_rm_rf(dir, NULL);
}

static void expect_unseal_fails(const pe_auth *a, const char *in, const char *needle)
{
    unsigned char *plain = NULL;
    size_t len = 0;
    pe_err err = {0};

    ASSERT_EQ_INT(pe_auth_unseal(a, in, &plain, &len, &err), -1);
    ASSERT(plain == NULL);
    ASSERT_EQ_INT(err.code, PE_EINVAL);
    ASSERT_CONTAINS(err.msg, needle);
    if (strstr(err.msg, "hunter2") != NULL)
        TEST_FAIL("plaintext in error: %s", err.msg);
    if (in != NULL && strlen(in) > 8 && strstr(err.msg, in) != NULL)
        TEST_FAIL("input in error: %s", err.msg);
}

TEST_CASE(unseal_bad_input_fails_cleanly)
{
    cleanup_free char *dir = tmp_dir();
    cleanup_free char *d2 = pe_xasprintf("%s/other", dir);
    pe_auth *a = open_ok(dir), *b = open_ok(d2);
    cleanup_free char *sealed = NULL, *t = NULL;
    pe_err err = {0};

    ASSERT_EQ_INT(pe_auth_seal(pe_auth_public_key_hex(a), "hunter2", 7, &sealed, &err), 0);
    /* Sealed to another server. */
    expect_unseal_fails(b, sealed, "not sealed to this server's key or was altered");
    /* Each character changed in turn (some changes only touch the unused
     * low bits of the last character: those are refused as non-canonical). */
    t = pe_xstrdup(sealed);
    for (size_t i = 0; t[i]; i++) {
        char saved = t[i];
        unsigned char *plain = NULL;
        size_t len = 0;
        t[i] = saved == 'A' ? 'B' : 'A';
        ASSERT_EQ_INT(pe_auth_unseal(a, t, &plain, &len, &err), -1);
        t[i] = saved;
    }
    /* Truncated: shorter ciphertext, then shorter than the box overhead. */
    unsigned char raw[64];
    size_t n_raw = 0;
    ASSERT_EQ_INT(sodium_base642bin(raw, sizeof(raw), sealed, strlen(sealed), NULL, &n_raw, NULL,
                                    sodium_base64_VARIANT_URLSAFE_NO_PADDING),
                  0);
    ASSERT_EQ_INT(n_raw, crypto_box_SEALBYTES + 7);
    free(t);
    t = b64url(raw, n_raw - 1);
    expect_unseal_fails(a, t, "not sealed to this server's key or was altered");
    free(t);
    t = b64url(raw, crypto_box_SEALBYTES - 1);
    expect_unseal_fails(a, t, "too short to be a sealed box");
    expect_unseal_fails(a, "", "empty value");
    expect_unseal_fails(a, NULL, "empty value");
    expect_unseal_fails(a, "not base64!", "not base64url");
    expect_unseal_fails(a, "abc+def/ghi", "not base64url");
    expect_unseal_fails(a, "A", "not base64url");
    /* Over the limit: refused before decoding. */
    size_t n = ((size_t)PE_AUTH_SEALED_MAX + 2) / 3 * 4 + 1;
    char *huge = pe_xmalloc(n + 1);
    memset(huge, 'A', n);
    huge[n] = '\0';
    expect_unseal_fails(a, huge, "larger than 1048576 bytes");
    /* Just over 1 MiB once decoded, within the base64 length bound. */
    huge[((size_t)PE_AUTH_SEALED_MAX + 3) / 3 * 4] = '\0';
    expect_unseal_fails(a, huge, "larger than 1048576 bytes");
    free(huge);
    pe_auth_close(a);
    pe_auth_close(b);
    pe_fs_rm_rf(dir, NULL);
}

TEST_CASE(seal_rejects_bad_public_keys)
{
    char *out = NULL;
    pe_err err = {0};
    static const char *const keys[] = {
        NULL,
        "",
        "2bf96e12d109e6948046a7803ef1696e12c11f04f20a6ce64dbd4bcd93db934",
        "2bf96e12d109e6948046a7803ef1696e12c11f04f20a6ce64dbd4bcd93db93411",
        "2bf96e12d109e6948046a7803ef1696e12c11f04f20a6ce64dbd4bcd93db934g",
        "2bf96e12d109e6948046a7803ef1696e12c11f04f20a6ce64dbd4bcd93db934 ",
    };

    for (size_t i = 0; i < PE_ARRAY_LEN(keys); i++) {
        ASSERT_EQ_INT(pe_auth_seal(keys[i], "x", 1, &out, &err), -1);
        ASSERT_CONTAINS(err.msg, "64 hex characters");
    }
    /* Upstream's published platform key (reference §5) is a valid key. */
    ASSERT_EQ_INT(pe_auth_seal("2bf96e12d109e6948046a7803ef1696e12c11f04f20a6ce64dbd4bcd93db9341",
                               "x", 1, &out, &err),
                  0);
    ASSERT_EQ_INT(strlen(out), 66); /* 49 bytes, unpadded */
    free(out);
    /* The all-zero point: crypto_box refuses the shared secret. */
    ASSERT_EQ_INT(pe_auth_seal("0000000000000000000000000000000000000000000000000000000000000000",
                               "x", 1, &out, &err),
                  -1);
}

/* AT Protocol names: what include/pocketenv/atproto.h promises to refuse
 * before any request is made. */
TEST_CASE(atproto_handle_and_did_syntax)
{
    char long_label[80], long_handle[300];
    const char *good_handles[] = {"alice.test", "Alice.Example.COM", "a-b.c-d.io", "x.y",
                                  "1.example"};
    const char *bad_handles[] = {
        "",        "alice",     ".alice.test", "alice.test.", "a..test",      "-a.test",
        "a-.test", "alice.123", "al ice.test", "al_ice.test", "alice.test/x", "did:plc:x"};
    const char *good_dids[] = {"did:plc:ewvi7nxzyoun6zhxrhs64oiz", "did:web:example.com",
                               "did:web:localhost%3A2583"};
    const char *bad_dids[] = {"did:plc:ewvi7nxzyoun6zhxrhs64oi",
                              "did:plc:EWVI7NXZYOUN6ZHXRHS64OIZ",
                              "did:plc:ewvi7nxzyoun6zhxrhs64oi1",
                              "did:key:z6MkhaXgBZDvotDkL5257",
                              "did:web:",
                              "did:web:example.com%3A",
                              "did:web:exa%2Fmple.com",
                              "did:web:example.com:path",
                              "did:web:localhost%3A123456",
                              "did:plc"};

    for (size_t i = 0; i < sizeof good_handles / sizeof good_handles[0]; i++)
        ASSERT(pe_atproto_handle_valid(good_handles[i]));
    for (size_t i = 0; i < sizeof bad_handles / sizeof bad_handles[0]; i++)
        ASSERT(!pe_atproto_handle_valid(bad_handles[i]));
    memset(long_label, 'a', 64);
    memcpy(long_label + 64, ".test", 6);
    ASSERT(!pe_atproto_handle_valid(long_label)); /* a 64-character label */
    for (size_t i = 0; i < sizeof long_handle - 1; i += 2)
        memcpy(long_handle + i, "a.", 2);
    memcpy(long_handle + 250, "test", 5); /* 254 characters */
    ASSERT(!pe_atproto_handle_valid(long_handle));
    long_handle[249] = '\0'; /* "a.a. ... a.a": 249 characters */
    ASSERT(pe_atproto_handle_valid(long_handle));
    for (size_t i = 0; i < sizeof good_dids / sizeof good_dids[0]; i++)
        ASSERT(pe_atproto_did_valid(good_dids[i]));
    for (size_t i = 0; i < sizeof bad_dids / sizeof bad_dids[0]; i++)
        ASSERT(!pe_atproto_did_valid(bad_dids[i]));
}

/* The private-address guard's judgement (lib/auth/atproto-http.c). */
TEST_CASE(atproto_private_addresses)
{
    static const char *const priv[] = {"127.0.0.1",
                                       "127.9.9.9",
                                       "10.0.0.1",
                                       "172.16.0.1",
                                       "172.31.255.255",
                                       "192.168.1.1",
                                       "169.254.169.254",
                                       "100.64.0.1",
                                       "100.127.255.255",
                                       "0.0.0.0",
                                       "224.0.0.1",
                                       "255.255.255.255",
                                       "192.0.0.8",
                                       "198.18.0.1",
                                       "::",
                                       "::1",
                                       "fc00::1",
                                       "fd12:3456::1",
                                       "fe80::1",
                                       "ff02::1",
                                       "::ffff:127.0.0.1",
                                       "::ffff:10.0.0.1",
                                       "not an address",
                                       ""};
    static const char *const pub[] = {
        "8.8.8.8",       "1.1.1.1",     "172.32.0.1",           "100.128.0.1",
        "192.169.0.1",   "169.253.0.1", "2001:4860:4860::8888", "2606:4700::1111",
        "::ffff:8.8.8.8"};

    for (size_t i = 0; i < sizeof priv / sizeof priv[0]; i++)
        if (!pe__atproto_addr_private(priv[i]))
            TEST_FAIL("%s should be private", priv[i]);
    for (size_t i = 0; i < sizeof pub / sizeof pub[0]; i++)
        if (pe__atproto_addr_private(pub[i]))
            TEST_FAIL("%s should be public", pub[i]);
}

/* Read a big-endian uint32 and a string(...) of the OpenSSH key format. */
static uint32_t be32(const unsigned char **p)
{
    uint32_t v =
        (uint32_t)(*p)[0] << 24 | (uint32_t)(*p)[1] << 16 | (uint32_t)(*p)[2] << 8 | (*p)[3];
    *p += 4;
    return v;
}

static const unsigned char *sshstr(const unsigned char **p, uint32_t *len)
{
    const unsigned char *s;

    *len = be32(p);
    s = *p;
    *p += *len;
    return s;
}

/* The key file's layout for comments of every padding length and a long
 * one (its buffers are sized up front): the container, the public blob
 * in both files, the check words, the seed that makes the public key,
 * the comment and the padding 1, 2, 3, ... */
TEST_CASE(ssh_key_file_layout)
{
    static const char B[] = "-----BEGIN OPENSSH PRIVATE KEY-----\n",
                      E[] = "-----END OPENSSH PRIVATE KEY-----\n";
    char comment[301];

    for (size_t clen = 0; clen <= 300; clen += clen < 16 ? 1 : 142) {
        char *priv = NULL, *pub = NULL, body[2048], pubb64[128];
        unsigned char raw[1536], pk[32], sk[64];
        const unsigned char *p = raw, *blob, *sec, *q, *s;
        size_t o = 0, rawlen = 0;
        uint32_t n, blen, slen, k;

        memset(comment, 'c', clen);
        comment[clen] = '\0';
        ASSERT_EQ_INT(pe_auth_ssh_generate(comment, &priv, &pub), 0);
        ASSERT_EQ_INT(strncmp(priv, B, strlen(B)), 0);
        ASSERT_EQ_STR(priv + strlen(priv) - strlen(E), E);
        for (const char *c = priv + strlen(B); c < priv + strlen(priv) - strlen(E); c++)
            if (*c != '\n' && o < sizeof(body) - 1)
                body[o++] = *c;
        body[o] = '\0';
        ASSERT_EQ_INT(sodium_base642bin(raw, sizeof(raw), body, o, NULL, &rawlen, NULL,
                                        sodium_base64_VARIANT_ORIGINAL),
                      0);
        ASSERT_EQ_INT(memcmp(p, "openssh-key-v1", 15), 0);
        p += 15;
        ASSERT_EQ_INT(memcmp(sshstr(&p, &n), "none", 4), 0);
        ASSERT_EQ_INT(memcmp(sshstr(&p, &n), "none", 4), 0);
        sshstr(&p, &n);
        ASSERT_EQ_INT(n, 0);
        ASSERT_EQ_INT(be32(&p), 1);
        blob = sshstr(&p, &blen);
        sec = sshstr(&p, &slen);
        ASSERT_EQ_INT((size_t)(p - raw), rawlen);
        ASSERT_EQ_INT(slen % 8, 0);
        q = blob;
        ASSERT_EQ_INT(memcmp(sshstr(&q, &n), "ssh-ed25519", 11), 0);
        memcpy(pk, sshstr(&q, &n), 32);
        ASSERT_EQ_INT(n, 32);
        q = sec;
        k = be32(&q);
        ASSERT_EQ_INT(be32(&q), k);
        ASSERT_EQ_INT(memcmp(sshstr(&q, &n), "ssh-ed25519", 11), 0);
        ASSERT_EQ_INT(memcmp(sshstr(&q, &n), pk, 32), 0);
        s = sshstr(&q, &n);
        ASSERT_EQ_INT(n, 64);
        crypto_sign_seed_keypair(pk, sk, s); /* the seed makes the same pair */
        ASSERT_EQ_INT(memcmp(sk, s, 64), 0);
        s = sshstr(&q, &n);
        ASSERT_EQ_INT(n, clen);
        ASSERT_EQ_INT(memcmp(s, comment, clen), 0);
        for (unsigned char pad = 1; q < sec + slen; pad++, q++)
            ASSERT_EQ_INT(*q, pad);
        sodium_bin2base64(pubb64, sizeof(pubb64), blob, blen, sodium_base64_VARIANT_ORIGINAL);
        char *want = pe_xasprintf("ssh-ed25519 %s %s", pubb64, comment);
        ASSERT_EQ_STR(pub, want);
        free(want);
        sodium_memzero(priv, strlen(priv));
        free(priv);
        free(pub);
    }
}

int main(void)
{
    int failed = 0;

    if (sodium_init() < 0)
        return 1;
    failed |= RUN_TESTS(base58_vectors, did_key_vectors, keys_created_once_and_reloaded,
                        keys_created_once_under_a_race, key_files_with_loose_permissions_refused,
                        key_files_of_another_user_refused, corrupt_key_files_refused,
                        token_round_trip, token_expiry_enforced, token_issued_in_the_future_refused,
                        token_tampering_refused, token_alg_none_and_others_refused,
                        token_of_another_secret_refused, token_wrong_scope_refused,
                        token_bad_claims_refused, token_garbage_refused);
    failed |= RUN_TESTS(
        token_cache_keeps_every_check, token_revocation_per_user, token_bound_to_an_audience,
        token_mint_rejects_bad_input, token_file_private_and_atomic, seal_round_trip,
        unseal_bad_input_fails_cleanly, seal_rejects_bad_public_keys, atproto_handle_and_did_syntax,
        atproto_private_addresses, ssh_key_file_layout);
    return failed;
}
