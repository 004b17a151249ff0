/* A sandbox's keys inside it (below the handlers; handlers/keys.c takes
 * them in and shows them): the SSH pair installed at every start (a
 * default one generated at the first), Tailscale brought up where the
 * image has it, and what else follows a start (its egress policy's DNS,
 * its services). docs of the format and of the rules: handlers/keys.c.
 *
 * Threading: workers; a Tailscale bring-up on a thread of its own. */
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
#include "netpolicy.h"
#include "sandbox-env.h"
#include "sandbox-keys.h"
#include "sandbox-services.h"
#include "supervise.h"

#define SSH_DIR "/root/.ssh"
#define TS_KEY_FILE "/run/pocketenv/tailscale-authkey"
#define TS_UP_TIMEOUT 30.0

static const char OPENSSH_BEGIN[] = PE_OPENSSH_BEGIN;
static const char OPENSSH_END[] = PE_OPENSSH_END;

/* Upstream's redaction (§5): between the OpenSSH header and footer, every
 * character but newlines, the first 10 and the last 5 becomes '*' (when
 * there are more than 15); newlines are then written as the two
 * characters '\' 'n'. */
char *pe_daemon_ssh_redact(const char *priv)
{
    const char *begin = strstr(priv, OPENSSH_BEGIN),
               *end = begin ? strstr(begin, OPENSSH_END) : NULL;
    size_t n = strlen(priv), count = 0, k = 0, o = 0;
    char *out = pe_xmalloc(2 * n + 1);

    if (begin == NULL || end == NULL) { /* never stored: checked on put */
        free(out);
        return pe_xstrdup("");
    }
    begin += sizeof(OPENSSH_BEGIN) - 1;
    for (const char *p = begin; p < end; p++)
        count += *p != '\n' && *p != '\r';
    for (const char *p = priv; *p; p++) {
        bool body = p >= begin && p < end && *p != '\n' && *p != '\r';
        if (*p == '\r')
            continue;
        if (*p == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
            continue;
        }
        out[o++] = body && count > 15 && k >= 10 && k < count - 5 ? '*' : *p;
        k += body;
    }
    out[o] = '\0';
    return out;
}

/* ---- installing into a sandbox ---- */

int pe_daemon_ssh_install(pe_daemon *d, const char *id, const char *priv, size_t len,
                          const char *pub, pe_err *err)
{
    pe_sandbox_ssh_texts t;
    int r;

    pe_sandbox_ssh_texts_make(&t, priv, len, pub);
    r = pe_daemon_sandbox_place_file_mode(d, id, SSH_DIR "/id_ed25519", t.priv, t.priv_len, 0600,
                                          err);
    if (r == 0)
        r = pe_daemon_sandbox_place_file_mode(d, id, SSH_DIR "/id_ed25519.pub",
                                              (const unsigned char *)t.pub, strlen(t.pub), 0644,
                                              err);
    pe_sandbox_ssh_texts_free(&t);
    return r;
}

/* A new default pair with comment root@name: *priv the plain text (the
 * caller zeroes and frees it), a's parts as the store keeps them. */
static int new_pair(pe_daemon *d, const char *name, char **priv, pe_daemon_ssh_ahead *a,
                    pe_err *err)
{
    cleanup_free char *comment = pe_xasprintf("root@%s", name);

    *priv = NULL;
    memset(a, 0, sizeof(*a));
    if (pe_auth_ssh_generate(comment, priv, &a->pub) < 0)
        return pe_err_set(err, PE_ESYS, 0, "generate a key pair");
    a->redacted = pe_daemon_ssh_redact(*priv);
    if (pe_auth_seal(pe_auth_public_key_hex(d->auth), *priv, strlen(*priv), &a->sealed, err) < 0) {
        pe_daemon_ssh_ahead_clear(a);
        sodium_memzero(*priv, strlen(*priv));
        free(*priv);
        *priv = NULL;
        return -1;
    }
    return 0;
}

void pe_daemon_ssh_ahead_clear(pe_daemon_ssh_ahead *a)
{
    free(a->pub);
    free(a->sealed);
    free(a->redacted);
    memset(a, 0, sizeof(*a));
}

int pe_daemon_ssh_ahead_make(pe_daemon *d, const char *id, const char *name,
                             pe_daemon_ssh_ahead *out, pe_err *err)
{
    char *priv = NULL;
    int r;

    if (new_pair(d, name, &priv, out, err) < 0)
        return -1;
    r = pe_daemon_ssh_install(d, id, priv, strlen(priv), out->pub, err);
    sodium_memzero(priv, strlen(priv));
    free(priv);
    if (r < 0)
        pe_daemon_ssh_ahead_clear(out);
    return r;
}

/* A new default pair for sb: stored first (so the pair getSshKeys shows
 * is the one installed), then installed from the plain text in hand
 * rather than read back and unsealed. */
static int new_ssh(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb, pe_err *err)
{
    pe_daemon_ssh_ahead a;
    char *priv = NULL;
    int r;

    if (new_pair(d, sb->name, &priv, &a, err) < 0)
        return -1;
    r = pe_store_key_put(s, PE_STORE_SSH_KEY, sb->id, a.pub, a.sealed, a.redacted, err);
    if (r == 0) {
        pe_log_info("event=ssh_key sandbox=%s generated=1", sb->id);
        r = pe_daemon_ssh_install(d, sb->id, priv, strlen(priv), a.pub, err);
    }
    sodium_memzero(priv, strlen(priv));
    free(priv);
    pe_daemon_ssh_ahead_clear(&a);
    return r;
}

/* The sandbox's stored pair, or a new default one, into the sandbox. A
 * pair placed ahead (ahead, the pool's) is the default one when the
 * sandbox has none stored: it is stored, and not written again. */
static void place_ssh(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb,
                      const pe_daemon_ssh_ahead *ahead)
{
    pe_store_key k;
    unsigned char *plain = NULL;
    size_t len = 0;
    pe_err err;

    pe_err_clear(&err);
    if (pe_store_key_get(s, PE_STORE_SSH_KEY, sb->id, &k, &err) < 0) {
        if (err.code == PE_ENOENT && ahead && ahead->pub) {
            pe_err_clear(&err);
            if (pe_store_key_put(s, PE_STORE_SSH_KEY, sb->id, ahead->pub, ahead->sealed,
                                 ahead->redacted, &err) == 0)
                pe_log_info("event=ssh_key sandbox=%s generated=1 ahead=1", sb->id);
        } else if (err.code == PE_ENOENT) {
            pe_err_clear(&err);
            new_ssh(d, s, sb, &err);
        }
    } else {
        if (pe_auth_unseal(d->auth, k.sealed, &plain, &len, &err) == 0)
            pe_daemon_ssh_install(d, sb->id, (const char *)plain, len, k.public_key, &err);
        pe_auth_plain_free(plain);
        pe_store_key_clear(&k);
    }
    if (err.code != 0)
        pe_log_warn("sandbox %s: ssh key not installed: %s", sb->id, err.msg);
}

/* Run argv in the sandbox, output discarded, killed after timeout; its
 * exit code (127: not found, -1: not started). */
static int run_quiet(pe_daemon *d, const char *id, char **argv, double timeout)
{
    pe_proc_opts opts = {.argv = argv, .capture = true};
    double deadline = pe_monotonic_s() + timeout;
    char sink[4096];
    pe_proc p;
    pe_err err;
    int code = -1;

    pe_err_clear(&err);
    if (pe_runtime_exec_start(&d->rt, id, &opts, &p, &err) < 0)
        return err.errnum == ENOENT ? 127 : -1;
    close(p.stdin_fd);
    p.stdin_fd = -1;
    /* Nothing it says is kept: a stand-in could echo what it was given. */
    fcntl(p.stdout_fd, F_SETFL, O_NONBLOCK);
    fcntl(p.stderr_fd, F_SETFL, O_NONBLOCK);
    for (;;) {
        struct pollfd pf[3] = {
            {p.pidfd, POLLIN, 0}, {p.stdout_fd, POLLIN, 0}, {p.stderr_fd, POLLIN, 0}};
        double left = deadline - pe_monotonic_s();
        if (left <= 0) {
            pe_proc_signal(&p, SIGKILL);
            break;
        }
        if (poll(pf, 3, (int)(left * 1000) + 1) < 0 && errno != EINTR)
            break;
        for (int i = 1; i < 3; i++)
            if (pf[i].revents && read(pf[i].fd, sink, sizeof(sink)) <= 0)
                pf[i].fd = -1;
        if (pf[0].revents & POLLIN)
            break;
    }
    if (pe_proc_wait(&p, &code, &err) < 0)
        code = -1;
    pe_proc_close(&p);
    return code;
}

static void ts_up(pe_daemon *d, const pe_store_sandbox *sb, const unsigned char *key, size_t len)
{
    static char *tailscaled[] = {(char *)"tailscaled", (char *)"--tun=userspace-networking",
                                 (char *)"--statedir=/var/lib/tailscale", NULL};
    cleanup_free char *unit = pe_xasprintf("tailscaled:%s", sb->id);
    cleanup_free char *host = pe_xasprintf("--hostname=%s", sb->name);
    char *up[] = {(char *)"tailscale", (char *)"up", (char *)"--auth-key=file:" TS_KEY_FILE, host,
                  NULL};
    pe_err err;
    int code = -1;

    pe_err_clear(&err);
    if (pe_daemon_sandbox_write_file_mode(d, sb->id, TS_KEY_FILE, key, len, 0600, &err) < 0) {
        pe_log_warn("sandbox %s: tailscale not started: %s", sb->id, err.msg);
        return;
    }
    if (pe_daemon_unit_start(d, unit, sb->id, tailscaled, true, &err) < 0)
        pe_log_warn("sandbox %s: tailscaled: %s", sb->id, err.msg);
    /* tailscaled may take a moment to listen: a few tries. */
    for (int i = 0; i < 3 && code != 0 && code != 127; i++) {
        if (i > 0)
            sleep(1);
        code = run_quiet(d, sb->id, up, TS_UP_TIMEOUT);
    }
    if (pe_daemon_sandbox_remove_file(d, sb->id, TS_KEY_FILE, &err) < 0)
        pe_log_warn("sandbox %s: %s", sb->id, err.msg);
    if (code == 127) {
        pe_daemon_unit_forget(unit);
        pe_log_info("event=tailscale sandbox=%s outcome=\"no tailscale in the image\"", sb->id);
    } else {
        pe_log_info("event=tailscale sandbox=%s up_exit=%d", sb->id, code);
    }
}

/* Bringing Tailscale up can take `tailscale up`'s whole timeout (three
 * times): it runs on a thread of its own, so a start or a put is answered
 * without waiting; the outcome is logged. One bring-up at a time: two
 * would share the key file. The thread carries the sealed key and opens it
 * itself, so no plaintext waits in a queue. */
struct ts_job {
    pe_daemon *d;
    pe_store_sandbox sb; /* id and name only */
    char *sealed;
};

static pthread_mutex_t ts_mu = PTHREAD_MUTEX_INITIALIZER;
static bool ts_closed; /* the daemon exits: bring nothing more up (under ts_mu) */

void pe_daemon_tailscale_quiesce(void)
{
    pthread_mutex_lock(&ts_mu); /* waits for a bring-up in progress */
    ts_closed = true;
    pthread_mutex_unlock(&ts_mu);
}

static void *ts_thread(void *arg)
{
    struct ts_job *t = arg;
    unsigned char *plain = NULL;
    size_t len = 0;
    pe_err err;

    pe_err_clear(&err);
    pthread_mutex_lock(&ts_mu);
    if (ts_closed)
        ;
    else if (pe_auth_unseal(t->d->auth, t->sealed, &plain, &len, &err) < 0)
        pe_log_warn("sandbox %s: tailscale key does not open: %s", t->sb.id, err.msg);
    else
        ts_up(t->d, &t->sb, plain, len);
    pthread_mutex_unlock(&ts_mu);
    pe_auth_plain_free(plain);
    free((char *)t->sb.id);
    free((char *)t->sb.name);
    free(t->sealed);
    free(t);
    return NULL;
}

void pe_daemon_tailscale_up_later(pe_daemon *d, const pe_store_sandbox *sb, const char *sealed)
{
    struct ts_job *t = pe_xcalloc(1, sizeof(*t));
    pthread_attr_t attr;
    pthread_t th;

    t->d = d;
    t->sb.id = pe_xstrdup(sb->id);
    t->sb.name = pe_xstrdup(sb->name);
    t->sealed = pe_xstrdup(sealed);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&th, &attr, ts_thread, t) != 0) {
        pe_log_warn("sandbox %s: tailscale not started: no thread", sb->id);
        free((char *)t->sb.id);
        free((char *)t->sb.name);
        free(t->sealed);
        free(t);
    }
    pthread_attr_destroy(&attr);
}

static void place_tailscale(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb)
{
    pe_store_key k;
    pe_err err;

    pe_err_clear(&err);
    if (pe_store_key_get(s, PE_STORE_TAILSCALE_KEY, sb->id, &k, &err) < 0) {
        if (err.code != PE_ENOENT)
            pe_log_warn("sandbox %s: tailscale: %s", sb->id, err.msg);
        return;
    }
    pe_daemon_tailscale_up_later(d, sb, k.sealed);
    pe_store_key_clear(&k);
}

void pe_daemon_sandbox_started(pe_daemon *d, const pe_store_sandbox *sb)
{
    pe_daemon_netpolicy_started(d, sb);
    pe_daemon_sandbox_started_with(d, sb, NULL);
}

void pe_daemon_sandbox_started_with(pe_daemon *d, const pe_store_sandbox *sb,
                                    const pe_daemon_ssh_ahead *ssh)
{
    pe_store *s;
    pe_err err;

    pe_err_clear(&err);
    s = pe_daemon_store(d, &err);
    if (s == NULL) {
        pe_log_warn("sandbox %s: keys and services not started: %s", sb->id, err.msg);
        return;
    }
    place_ssh(d, s, sb, ssh);
    place_tailscale(d, s, sb);
    pe_daemon_services_start(d, s, sb);
}
