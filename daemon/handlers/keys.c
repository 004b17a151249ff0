/* io.pocketenv.sandbox.putSshKeys / getSshKeys and putTailscaleAuthKey /
 * getTailscaleAuthKey (reference §1.4, §5), and what they do to a sandbox.
 *
 * SSH: one key pair per sandbox. The private key arrives sealed, is
 * opened once on the loop thread to check it (an OpenSSH private key whose
 * embedded public key is the publicKey given) and stored as sent; the
 * redacted copy that listings show is computed here from the plaintext by
 * upstream's rule (§5), never taken from the client, whose "redacted"
 * could carry anything. The pair is installed as /root/.ssh/id_ed25519
 * (0600) and id_ed25519.pub (0644): every process the daemon runs in a
 * sandbox (exec, services, PID 1) runs as its root with HOME=/root. It is
 * installed at every start and at once when put on a running sandbox,
 * through the same file placement as files (sandbox-env.c: openat2
 * RESOLVE_IN_ROOT under /proc/<init>/root, no shell). A sandbox without a
 * key gets one at its first start: an Ed25519 pair generated here with
 * libsodium, written in OpenSSH's format (below), and stored sealed to
 * our own key like a client's, so getSshKeys shows its public half.
 *
 * Tailscale: the auth key arrives sealed, must start with "tskey-auth-",
 * is stored sealed with upstream's redaction. At start (and at once when
 * put on a running sandbox) an image that has tailscale gets tailscaled
 * (userspace networking, supervised, supervise.c) and `tailscale up
 * --auth-key=file:PATH`: the key travels in a 0600 file that is removed
 * when `up` returns, never on a command line or in an environment.
 *
 * What a start does with them (installing the pair, bringing Tailscale
 * up) is sandbox-keys.c's, below the handlers.
 *
 * Threading: handlers on the loop thread, jobs on workers. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "daemon.h"
#include "sandbox-env.h"
#include "sandbox-find.h"
#include "sandbox-keys.h"

#define SSH_PRIV_MAX (16 * 1024)
#define SSH_PUB_MAX 8192
#define TS_KEY_MAX 256
#define SANDBOX_NOT_FOUND "SandboxNotFound"

static const char OPENSSH_BEGIN[] = PE_OPENSSH_BEGIN;
static const char OPENSSH_END[] = PE_OPENSSH_END;
static const char OPENSSH_MAGIC[] = "openssh-key-v1"; /* and its NUL */

/* Read string i of an SSH wire buffer at *off; false if it runs past n. */
static bool wire_str(const unsigned char *p, size_t n, size_t *off, const unsigned char **s,
                     size_t *len)
{
    uint32_t l;

    if (n - *off < 4)
        return false;
    l = (uint32_t)p[*off] << 24 | (uint32_t)p[*off + 1] << 16 | (uint32_t)p[*off + 2] << 8 |
        p[*off + 3];
    *off += 4;
    if (n - *off < l)
        return false;
    *s = p + *off;
    *len = l;
    *off += l;
    return true;
}

/* The public key blob inside an OpenSSH private key (it is not encrypted
 * even when the private part is). *blob points into *raw (sodium_malloc'd,
 * the caller frees it). */
static int ssh_priv_blob(const char *priv, size_t len, unsigned char **raw,
                         const unsigned char **blob, size_t *blen, pe_err *err)
{
    const char *begin = strstr(priv, OPENSSH_BEGIN), *end;
    const unsigned char *s;
    size_t rlen = 0, off = sizeof(OPENSSH_MAGIC), l;
    unsigned char *r;

    *raw = NULL;
    if (begin == NULL || (end = strstr(begin, OPENSSH_END)) == NULL)
        return pe_err_set(err, PE_EINVAL, 0,
                          "privateKey must be an OpenSSH private key (-----BEGIN OPENSSH "
                          "PRIVATE KEY-----)");
    begin += sizeof(OPENSSH_BEGIN) - 1;
    r = sodium_malloc(len + 1);
    if (r == NULL)
        abort();
    if (sodium_base642bin(r, len, begin, (size_t)(end - begin), " \t\r\n", &rlen, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        rlen < off || memcmp(r, OPENSSH_MAGIC, sizeof(OPENSSH_MAGIC)) != 0) {
        sodium_free(r);
        return pe_err_set(err, PE_EINVAL, 0, "privateKey is not a readable OpenSSH private key");
    }
    for (int i = 0; i < 3; i++) /* cipher, kdf, kdf options */
        if (!wire_str(r, rlen, &off, &s, &l))
            goto bad;
    if (rlen - off < 4 || r[off] || r[off + 1] || r[off + 2] || r[off + 3] != 1)
        goto bad; /* one key */
    off += 4;
    if (!wire_str(r, rlen, &off, blob, blen))
        goto bad;
    *raw = r;
    return 0;
bad:
    sodium_free(r);
    return pe_err_set(err, PE_EINVAL, 0, "privateKey must hold exactly one OpenSSH key");
}

/* privateKey (plaintext) and publicKey: an OpenSSH private key whose
 * embedded public key is publicKey's. */
static int check_ssh_pair(const char *priv, size_t len, const char *pub, pe_err *err)
{
    const unsigned char *blob;
    unsigned char *raw = NULL, pubbin[SSH_PUB_MAX];
    const char *sp, *b, *e;
    size_t blen, plen = strlen(pub), bin = 0;
    int r = 0;

    if (len > SSH_PRIV_MAX || strlen(priv) != len)
        return pe_err_set(err, PE_EINVAL, 0, "privateKey must be at most %d bytes of text",
                          SSH_PRIV_MAX);
    while (plen > 0 && (pub[plen - 1] == '\n' || pub[plen - 1] == '\r'))
        plen--;
    if (plen == 0 || plen > SSH_PUB_MAX)
        return pe_err_set(err, PE_EINVAL, 0, "publicKey must be one line of at most %d bytes",
                          SSH_PUB_MAX);
    for (size_t i = 0; i < plen; i++)
        if ((unsigned char)pub[i] < 0x20 || pub[i] == 0x7f)
            return pe_err_set(err, PE_EINVAL, 0, "publicKey must be one line of text");
    sp = memchr(pub, ' ', plen);
    if (sp == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "publicKey must be \"TYPE BASE64 [COMMENT]\"");
    b = sp + 1;
    e = memchr(b, ' ', plen - (size_t)(b - pub));
    e = e ? e : pub + plen;
    if (sodium_base642bin(pubbin, sizeof(pubbin), b, (size_t)(e - b), NULL, &bin, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0)
        return pe_err_set(err, PE_EINVAL, 0, "publicKey is not base64");
    if (ssh_priv_blob(priv, len, &raw, &blob, &blen, err) < 0)
        return -1;
    if (blen < 4 || blen != bin || memcmp(blob, pubbin, bin) != 0 ||
        (size_t)(sp - pub) != (size_t)blob[3] || memcmp(pub, blob + 4, (size_t)(sp - pub)) != 0)
        r = pe_err_set(err, PE_EINVAL, 0, "publicKey is not the public half of privateKey");
    sodium_free(raw);
    return r;
}

/* Tailscale's (and the generic) rule: first 11, a '*' for each of the
 * middle characters, last 3. */
static char *ts_redact(const char *key)
{
    size_t n = strlen(key);
    char *out = pe_xstrdup(key);

    for (size_t i = 11; n > 14 && i < n - 3; i++)
        out[i] = '*';
    return out;
}

static int check_ts_key(const char *key, size_t len, pe_err *err)
{
    static const char prefix[] = "tskey-auth-";

    if (len < sizeof(prefix) + 8 || len > TS_KEY_MAX || strlen(key) != len ||
        strncmp(key, prefix, sizeof(prefix) - 1) != 0)
        return pe_err_set(err, PE_EINVAL, 0,
                          "authKey must be a Tailscale auth key (tskey-auth-...), at most %d "
                          "bytes",
                          TS_KEY_MAX);
    for (size_t i = 0; i < len; i++)
        if (!(key[i] >= 'a' && key[i] <= 'z') && !(key[i] >= 'A' && key[i] <= 'Z') &&
            !(key[i] >= '0' && key[i] <= '9') && key[i] != '-' && key[i] != '_')
            return pe_err_set(err, PE_EINVAL, 0,
                              "authKey must be letters, digits, '-' and '_' only");
    return 0;
}
/* ---- views ---- */

static json_t *ssh_view(const pe_store_key *k)
{
    return json_pack("{s:s, s:s, s:s, s:o, s:o}", "id", k->id, "publicKey", k->public_key,
                     "privateKey", k->redacted ? k->redacted : "", "createdAt",
                     pe_daemon_time_json(k->created_at), "updatedAt",
                     pe_daemon_time_json(k->updated_at));
}

static json_t *ts_view(const pe_store_key *k)
{
    return json_pack("{s:s, s:s, s:s, s:o, s:o}", "id", k->id, "authKey", k->redacted, "redacted",
                     k->redacted, "createdAt", pe_daemon_time_json(k->created_at), "updatedAt",
                     pe_daemon_time_json(k->updated_at));
}

/* ---- jobs ---- */

static void reply_key(pe_daemon_job *job, pe_store *s, int kind, const char *sandbox_id)
{
    pe_store_key k;

    if (pe_store_key_get(s, kind, sandbox_id, &k, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err,
                           job->err.code != PE_ENOENT ? NULL
                           : kind == PE_STORE_SSH_KEY ? "SshKeysNotFound"
                                                      : "TailscaleAuthKeyNotFound");
        return;
    }
    job->out = kind == PE_STORE_SSH_KEY ? ssh_view(&k) : ts_view(&k);
    pe_store_key_clear(&k);
}

static void get_ssh_work(pe_daemon_job *job, pe_store *s)
{
    pe_store_sandbox sb;

    if (!pe_daemon_job_sandbox(job, s, job->id, &sb))
        return;
    reply_key(job, s, PE_STORE_SSH_KEY, sb.id);
    pe_store_sandbox_clear(&sb);
}

static void get_ts_work(pe_daemon_job *job, pe_store *s)
{
    pe_store_sandbox sb;

    if (!pe_daemon_job_sandbox(job, s, job->id, &sb))
        return;
    reply_key(job, s, PE_STORE_TAILSCALE_KEY, sb.id);
    pe_store_sandbox_clear(&sb);
}

/* Installed first when the sandbox runs (a key that cannot be installed
 * is the answer, and nothing is stored), then stored. */
static void put_ssh_work(pe_daemon_job *job, pe_store *s)
{
    const char *sealed = json_string_value(json_object_get(job->in, "privateKey"));
    const char *pub = json_string_value(json_object_get(job->in, "publicKey"));
    unsigned char *plain = NULL;
    cleanup_free char *red = NULL;
    pe_store_sandbox sb;
    size_t len = 0;
    int r = 0;

    if (!pe_daemon_job_sandbox(job, s, job->id, &sb))
        return;
    if (pe_auth_unseal(job->d->auth, sealed, &plain, &len, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
        pe_store_sandbox_clear(&sb);
        return;
    }
    red = pe_daemon_ssh_redact((const char *)plain);
    if (sb.status == PE_STORE_RUNNING && pe_sandbox_is_remote(&sb)) {
        r = pe_sandbox_ssh_install(&job->d->sx, s, &sb, (const char *)plain, len, pub, &job->err);
    } else if (sb.status == PE_STORE_RUNNING) {
        r = pe_daemon_ssh_install(job->d, sb.id, (const char *)plain, len, pub, &job->err);
        if (r < 0 && job->err.code == PE_ESTATE) /* stopped meanwhile: at its next start */
            r = 0;
    }
    pe_auth_plain_free(plain);
    if (r < 0 || pe_store_key_put(s, PE_STORE_SSH_KEY, sb.id, pub, sealed, red, &job->err) < 0)
        pe_daemon_job_fail(job, &job->err, NULL);
    else
        reply_key(job, s, PE_STORE_SSH_KEY, sb.id);
    pe_store_sandbox_clear(&sb);
}

static void put_ts_work(pe_daemon_job *job, pe_store *s)
{
    const char *sealed = json_string_value(json_object_get(job->in, "authKey"));
    unsigned char *plain = NULL;
    cleanup_free char *red = NULL;
    pe_store_sandbox sb;
    size_t len = 0;

    if (!pe_daemon_job_sandbox(job, s, job->id, &sb))
        return;
    if (pe_auth_unseal(job->d->auth, sealed, &plain, &len, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
        pe_store_sandbox_clear(&sb);
        return;
    }
    red = ts_redact((const char *)plain);
    if (pe_store_key_put(s, PE_STORE_TAILSCALE_KEY, sb.id, NULL, sealed, red, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
    } else {
        /* outcome in the log, as a clone's; a remote sandbox's through
         * its provider, now, and in its record when it is not applied */
        if (sb.status == PE_STORE_RUNNING && !pe_sandbox_is_remote(&sb)) {
            pe_daemon_tailscale_up_later(job->d, &sb, sealed);
        } else if (sb.status == PE_STORE_RUNNING) {
            cleanup_free char *note = pe_sandbox_started_note(&job->d->sx, s, &sb);
            pe_err e;
            pe_err_clear(&e);
            if (pe_store_sandbox_set_status(s, sb.id, PE_STORE_RUNNING, note, PE_STORE_RUNNING,
                                            &e) < 0)
                pe_log_warn("sandbox %s: %s", sb.id, e.msg);
        }
        reply_key(job, s, PE_STORE_TAILSCALE_KEY, sb.id);
    }
    pe_auth_plain_free(plain);
    pe_store_sandbox_clear(&sb);
}

/* ---- handlers ---- */

static void get_ssh(pe_xrpc_request *req, void *ud)
{
    cleanup_free char *did = pe_daemon_auth(ud, req);

    if (did)
        pe_daemon_submit(ud, req, did, get_ssh_work,
                         json_string_value(json_object_get(req->params, "id")), NULL);
}

static void get_ts(pe_xrpc_request *req, void *ud)
{
    cleanup_free char *did = pe_daemon_auth(ud, req);

    if (did)
        pe_daemon_submit(ud, req, did, get_ts_work,
                         json_string_value(json_object_get(req->params, "id")), NULL);
}

/* The sealed value of field opened, checked by check, wiped. */
static int check_sealed(pe_daemon *d, const json_t *body, const char *field,
                        int (*check)(const char *plain, size_t len, const json_t *body,
                                     pe_err *err),
                        pe_err *err)
{
    const char *sealed = json_string_value(json_object_get(body, field));
    unsigned char *plain = NULL;
    size_t len = 0;
    int r;

    if (sealed == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "%s is required", field);
    if (pe_auth_unseal(d->auth, sealed, &plain, &len, err) < 0)
        return pe_err_prefix(err, "%s must be sealed to this server's public key", field);
    r = check((const char *)plain, len, body, err);
    pe_auth_plain_free(plain);
    return r;
}

static int ssh_check(const char *plain, size_t len, const json_t *body, pe_err *err)
{
    return check_ssh_pair(plain, len, json_string_value(json_object_get(body, "publicKey")), err);
}

static int ts_check(const char *plain, size_t len, const json_t *body, pe_err *err)
{
    return check_ts_key(plain, len, err);
}

static void put_handler(pe_xrpc_request *req, pe_daemon *d, const char *field,
                        int (*check)(const char *, size_t, const json_t *, pe_err *),
                        pe_daemon_work_fn work)
{
    cleanup_free char *did = pe_daemon_auth(d, req);
    const char *id = json_string_value(json_object_get(req->body, "id"));
    pe_err err;

    if (did == NULL)
        return;
    pe_err_clear(&err);
    if (id == NULL || id[0] == '\0')
        pe_err_set(&err, PE_EINVAL, 0, "id is required");
    else if (check_sealed(d, req->body, field, check, &err) == 0) {
        pe_daemon_submit(d, req, did, work, id, json_deep_copy(req->body));
        return;
    }
    pe_xrpc_respond_err(req, &err);
}

static void put_ssh(pe_xrpc_request *req, void *ud)
{
    put_handler(req, ud, "privateKey", ssh_check, put_ssh_work);
}

static void put_ts(pe_xrpc_request *req, void *ud)
{
    put_handler(req, ud, "authKey", ts_check, put_ts_work);
}

int pe_daemon_register_keys(pe_daemon *d, pe_err *err)
{
    static const struct {
        const char *nsid;
        pe_xrpc_handler fn;
    } routes[] = {
        {"io.pocketenv.sandbox.putSshKeys", put_ssh},
        {"io.pocketenv.sandbox.getSshKeys", get_ssh},
        {"io.pocketenv.sandbox.putTailscaleAuthKey", put_ts},
        {"io.pocketenv.sandbox.getTailscaleAuthKey", get_ts},
    };

    for (size_t i = 0; i < PE_ARRAY_LEN(routes); i++)
        if (pe_xrpc_register(d->srv, routes[i].nsid, routes[i].fn, d, err) < 0)
            return -1;
    return 0;
}
