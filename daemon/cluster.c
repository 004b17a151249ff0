/* Nodes, leases and node credentials (daemon/cluster.h, docs/cluster.md).
 *
 * A node credential is what one node sends another in place of a user's
 * token when it forwards that user's call:
 *
 *   Authorization: PocketenvNode v1.FROM.TO.MS.NONCE.DID64.WHAT64.MAC64
 *
 * MAC is HMAC-SHA-512-256 (libsodium's crypto_auth) under the cluster key
 * of "pocketenv-node-v1", FROM, TO, MS, NONCE, DID and WHAT (the call's
 * name), one per line; DID64 and WHAT64 are DID and WHAT in base64url. So a credential names the
 * node it was made for and the call it is for, lives PE_CLUSTER_SKEW_S seconds either side of its
 * time, and is taken once (the nonce is remembered as long as the credential could be valid). The
 * DID in it is who the forwarding node found the caller to be; no header a client sends is ever
 * read as an identity. The node that takes it answers with PE_CLUSTER_PROOF_HEADER, a MAC of the
 * nonce, and the forwarder relays nothing whose proof is wrong: each side
 * shows the other it holds the key.
 *
 * Threading: the replay memory and the lease timer are the loop thread's;
 * minting and proofs only read the key and run on any thread. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sodium.h>
#include <sys/stat.h>

#include "cluster.h"
#include "core/log.h"
#include "core/util.h"
#include "providers.h"

#define KEY_FILE_MAX 4096
#define SEEN_MAX 65536
#define CRED_MAX 1024

struct seen {
    char nonce[33];
    int64_t ms; /* the credential's time: forgotten once it is past the skew */
};

struct pe_cluster {
    unsigned char *key; /* sodium_malloc'd crypto_auth_KEYBYTES; NULL: no key */
    char *node;         /* d->node, borrowed */
    char *name, *address, *labels, *place;
    double lease_s;
    int64_t slots;
    pe_ev_timer *timer;
    bool renewing; /* a renewal job is queued or running */
    bool renew_failed;
    bool left; /* pe_daemon_cluster_leave ran: renew no more */
    struct pe_cluster_listen *listen;
    struct seen *seen;
    size_t nseen;
};

/* ---- flags ---- */

void pe_cluster_cfg_defaults(pe_cluster_cfg *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->lease_s = PE_CLUSTER_DEFAULT_LEASE;
    cfg->slots = PE_CLUSTER_DEFAULT_SLOTS;
}

void pe_cluster_cfg_free(pe_cluster_cfg *cfg)
{
    free(cfg->labels);
    cfg->labels = NULL;
}

static bool label_part_ok(const char *s, size_t n)
{
    if (n == 0 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(s[i] >= 'a' && s[i] <= 'z') && !(s[i] >= 'A' && s[i] <= 'Z') &&
            !(s[i] >= '0' && s[i] <= '9') && !strchr("-_.", s[i]))
            return false;
    return true;
}

static int add_label(pe_cluster_cfg *cfg, const char *arg, pe_err *err)
{
    const char *eq = strchr(arg, '=');
    json_t *o;
    char *k;

    if (eq == NULL || !label_part_ok(arg, (size_t)(eq - arg)) ||
        !label_part_ok(eq + 1, strlen(eq + 1)))
        return pe_err_set(err, PE_EINVAL, 0,
                          "--node-label: KEY=VALUE of letters, digits, '-', '_' and '.' (63 "
                          "each at most), not '%s'",
                          arg);
    o = cfg->labels ? json_loads(cfg->labels, 0, NULL) : json_object();
    k = strndup(arg, (size_t)(eq - arg));
    json_object_set_new(o, k, json_string(eq + 1));
    free(k);
    free(cfg->labels);
    cfg->labels = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return 0;
}

int pe_cluster_flag(pe_cluster_cfg *cfg, const char *name, const char *arg, pe_err *err)
{
    char *end;

    if (strcmp(name, "cluster-key-file") == 0) {
        cfg->key_file = arg;
    } else if (strcmp(name, "node-name") == 0) {
        if (!label_part_ok(arg, strlen(arg)))
            return pe_err_set(err, PE_EINVAL, 0,
                              "--node-name: letters, digits, '-', '_' and '.', 63 at most");
        cfg->name = arg;
    } else if (strcmp(name, "node-address") == 0) {
        if ((strncmp(arg, "http://", 7) != 0 && strncmp(arg, "https://", 8) != 0) ||
            strpbrk(arg, " \t\r\n?#") || strlen(arg) > 200)
            return pe_err_set(err, PE_EINVAL, 0,
                              "--node-address: a base URL like http://10.0.0.2:8789, not '%s'",
                              arg);
        cfg->address = arg;
    } else if (strcmp(name, "node-lease") == 0) {
        errno = 0;
        cfg->lease_s = strtod(arg, &end);
        if (errno || end == arg || *end || !(cfg->lease_s >= 0.5 && cfg->lease_s <= 3600))
            return pe_err_set(err, PE_EINVAL, 0, "--node-lease: seconds in 0.5..3600");
    } else if (strcmp(name, "node-slots") == 0) {
        errno = 0;
        cfg->slots = strtoll(arg, &end, 10);
        if (errno || end == arg || *end || cfg->slots < 0 || cfg->slots > 100000)
            return pe_err_set(err, PE_EINVAL, 0, "--node-slots: sandboxes in 0..100000");
    } else if (strcmp(name, "node-label") == 0) {
        return add_label(cfg, arg, err);
    } else if (strcmp(name, "place-label") == 0) {
        const char *eq = strchr(arg, '=');
        if (eq == NULL || !label_part_ok(arg, (size_t)(eq - arg)) ||
            !label_part_ok(eq + 1, strlen(eq + 1)))
            return pe_err_set(err, PE_EINVAL, 0, "--place-label: KEY=VALUE, not '%s'", arg);
        cfg->place = arg;
    } else {
        return pe_err_set(err, PE_EINVAL, 0, "unknown cluster flag %s", name);
    }
    return 0;
}

/* ---- the key ---- */

/* The key is a hash of the file's bytes (at least 32 of them, whitespace
 * at the end left out), so any way of writing 32 random bytes works
 * (`head -c 48 /dev/urandom | base64`). The file must be the daemon's and
 * private, like DATA/keys. */
static int load_key(struct pe_cluster *cl, const char *path, pe_err *err)
{
    unsigned char buf[KEY_FILE_MAX];
    struct stat st;
    ssize_t n;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

    if (fd < 0)
        return pe_err_set(err, PE_ESYS, errno, "--cluster-key-file %s", path);
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
        (st.st_mode & 077)) {
        close(fd);
        return pe_err_set(err, PE_EINVAL, 0,
                          "--cluster-key-file %s: must be a regular file of this user, mode "
                          "0600 or stricter",
                          path);
    }
    n = read(fd, buf, sizeof(buf));
    close(fd);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ' || buf[n - 1] == '\r'))
        n--;
    if (n < 32) {
        sodium_memzero(buf, sizeof(buf));
        return pe_err_set(err, PE_EINVAL, 0, "--cluster-key-file %s: at least 32 bytes", path);
    }
    cl->key = sodium_malloc(crypto_auth_KEYBYTES);
    if (cl->key == NULL)
        abort();
    crypto_generichash(cl->key, crypto_auth_KEYBYTES, buf, (size_t)n,
                       (const unsigned char *)"pocketenv-cluster", 17);
    sodium_memzero(buf, sizeof(buf));
    sodium_mprotect_readonly(cl->key);
    return 0;
}

/* ---- credentials ---- */

static void mac_of(const struct pe_cluster *cl, const char *from, const char *to, const char *ms,
                   const char *nonce, const char *did, const char *what,
                   unsigned char out[crypto_auth_BYTES])
{
    crypto_auth_hmacsha512256_state st;
    const char *parts[] = {"pocketenv-node-v1", from, to, ms, nonce, did, what};

    crypto_auth_hmacsha512256_init(&st, cl->key, crypto_auth_KEYBYTES);
    for (size_t i = 0; i < PE_ARRAY_LEN(parts); i++) {
        crypto_auth_hmacsha512256_update(&st, (const unsigned char *)parts[i], strlen(parts[i]));
        crypto_auth_hmacsha512256_update(&st, (const unsigned char *)"\n", 1);
    }
    crypto_auth_hmacsha512256_final(&st, out);
}

static void b64(const char *in, char *out, size_t size)
{
    sodium_bin2base64(out, size, (const unsigned char *)in, strlen(in),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

char *pe_cluster_cred_mint(struct pe_cluster *cl, const char *to_node, const char *did,
                           const char *what, char nonce_out[33])
{
    unsigned char rnd[16], mac[crypto_auth_BYTES];
    char ms[24], did64[512], what64[512], mac64[64];

    randombytes_buf(rnd, sizeof(rnd));
    sodium_bin2hex(nonce_out, 33, rnd, sizeof(rnd));
    snprintf(ms, sizeof(ms), "%lld", (long long)pe_store_now_ms());
    mac_of(cl, cl->node, to_node, ms, nonce_out, did, what, mac);
    b64(did, did64, sizeof(did64));
    b64(what, what64, sizeof(what64));
    sodium_bin2base64(mac64, sizeof(mac64), mac, sizeof(mac),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return pe_xasprintf(PE_CLUSTER_SCHEME "v1.%s.%s.%s.%s.%s.%s.%s", cl->node, to_node, ms,
                        nonce_out, did64, what64, mac64);
}

const char *pe_cluster_cred_result_name(enum pe_cluster_cred_result r)
{
    switch (r) {
    case PE_CLUSTER_CRED_OK:
        return "ok";
    case PE_CLUSTER_CRED_MALFORMED:
        return "malformed";
    case PE_CLUSTER_CRED_BAD_MAC:
        return "bad_mac";
    case PE_CLUSTER_CRED_WRONG_NODE:
        return "wrong_node";
    case PE_CLUSTER_CRED_EXPIRED:
        return "expired";
    case PE_CLUSTER_CRED_REPLAYED:
        return "replayed";
    case PE_CLUSTER_CRED_NO_KEY:
        return "no_key";
    }
    return "?";
}

/* Remember nonce until its credential is past the skew; false if it was
 * seen (or the memory is full of live nonces: refused, never forgotten
 * early, so a flood cannot open a window for a replay). */
static bool seen_add(struct pe_cluster *cl, const char *nonce, int64_t ms, int64_t now)
{
    size_t w = 0;

    for (size_t i = 0; i < cl->nseen; i++) {
        if (cl->seen[i].ms + 2000LL * PE_CLUSTER_SKEW_S < now)
            continue; /* expired: drop it */
        if (strcmp(cl->seen[i].nonce, nonce) == 0)
            return false;
        cl->seen[w++] = cl->seen[i];
    }
    cl->nseen = w;
    if (cl->nseen == SEEN_MAX)
        return false;
    if (cl->seen == NULL)
        cl->seen = pe_xcalloc(SEEN_MAX, sizeof(*cl->seen));
    snprintf(cl->seen[cl->nseen].nonce, sizeof(cl->seen[0].nonce), "%s", nonce);
    cl->seen[cl->nseen++].ms = ms;
    return true;
}

static bool hex_ok(const char *s, size_t n)
{
    if (strlen(s) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!strchr("0123456789abcdef", s[i]))
            return false;
    return true;
}

/* base64url text into buf as a C string without NULs; false if not. */
static bool unb64(const char *in, char *buf, size_t size)
{
    size_t len = 0;

    if (sodium_base642bin((unsigned char *)buf, size - 1, in, strlen(in), NULL, &len, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
        return false;
    buf[len] = '\0';
    return strlen(buf) == len && len > 0;
}

enum pe_cluster_cred_result pe_cluster_cred_verify(pe_daemon *d, const char *cred, const char *what,
                                                   bool consume, char **did, char nonce_out[33])
{
    struct pe_cluster *cl = d->cluster;
    char copy[CRED_MAX], *parts[9], *save = NULL, *p;
    unsigned char mac[crypto_auth_BYTES], want[crypto_auth_BYTES];
    char didbuf[PE_AUTH_DID_MAX], whatbuf[256];
    size_t n = 0, maclen = 0;
    long long ms;
    int64_t now = pe_store_now_ms();
    char *end;

    *did = NULL;
    if (cl == NULL || cl->key == NULL)
        return PE_CLUSTER_CRED_NO_KEY;
    if (strlen(cred) >= sizeof(copy))
        return PE_CLUSTER_CRED_MALFORMED;
    snprintf(copy, sizeof(copy), "%s", cred);
    for (p = strtok_r(copy, ".", &save); p && n < PE_ARRAY_LEN(parts);
         p = strtok_r(NULL, ".", &save))
        parts[n++] = p;
    if (n != 8 || p != NULL || strcmp(parts[0], "v1") != 0 || !hex_ok(parts[4], 32))
        return PE_CLUSTER_CRED_MALFORMED;
    errno = 0;
    ms = strtoll(parts[3], &end, 10);
    if (errno || *end || end == parts[3])
        return PE_CLUSTER_CRED_MALFORMED;
    if (!unb64(parts[5], didbuf, sizeof(didbuf)) || strncmp(didbuf, "did:", 4) != 0 ||
        !unb64(parts[6], whatbuf, sizeof(whatbuf)) ||
        sodium_base642bin(mac, sizeof(mac), parts[7], strlen(parts[7]), NULL, &maclen, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        maclen != sizeof(mac))
        return PE_CLUSTER_CRED_MALFORMED;
    mac_of(cl, parts[1], parts[2], parts[3], parts[4], didbuf, whatbuf, want);
    if (sodium_memcmp(mac, want, sizeof(mac)) != 0)
        return PE_CLUSTER_CRED_BAD_MAC;
    /* Made with the key, for another node or another call. */
    if (strcmp(parts[2], cl->node) != 0 || (what && strcmp(whatbuf, what) != 0))
        return PE_CLUSTER_CRED_WRONG_NODE;
    if (ms < now - 1000LL * PE_CLUSTER_SKEW_S || ms > now + 1000LL * PE_CLUSTER_SKEW_S)
        return PE_CLUSTER_CRED_EXPIRED;
    if (consume && !seen_add(cl, parts[4], ms, now))
        return PE_CLUSTER_CRED_REPLAYED;
    snprintf(nonce_out, 33, "%s", parts[4]);
    *did = pe_xstrdup(didbuf);
    return PE_CLUSTER_CRED_OK;
}

bool pe_cluster_has_key(const struct pe_cluster *cl)
{
    return cl && cl->key;
}

const char *pe_cluster_place_label(const struct pe_cluster *cl)
{
    return cl ? cl->place : NULL;
}

void pe_cluster_proof(struct pe_cluster *cl, const char *nonce, char out[65])
{
    unsigned char mac[crypto_auth_BYTES];
    crypto_auth_hmacsha512256_state st;

    crypto_auth_hmacsha512256_init(&st, cl->key, crypto_auth_KEYBYTES);
    crypto_auth_hmacsha512256_update(&st, (const unsigned char *)"pocketenv-node-reply-v1\n", 24);
    crypto_auth_hmacsha512256_update(&st, (const unsigned char *)nonce, strlen(nonce));
    crypto_auth_hmacsha512256_final(&st, mac);
    sodium_bin2hex(out, 65, mac, sizeof(mac));
}

/* ---- the node's row and its lease ---- */

static int64_t mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "re");
    char line[128];
    long long kb = 0;

    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1)
            break;
    fclose(f);
    return (int64_t)kb * 1024;
}

static int node_put(pe_daemon *d, pe_store *s, bool restart, pe_err *err)
{
    struct pe_cluster *cl = d->cluster;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    pe_store_node n = {
        .id = d->node,
        .name = cl->name,
        .address = cl->address,
        .version = "0.1.0",
        .labels = cl->labels,
        .mem_free = mem_available(),
        .cpus = cpus > 0 ? cpus : 1,
        .slots_free = cl->slots,
        .lease_until = pe_store_now_ms() + (int64_t)(cl->lease_s * 1000),
    };

    return pe_store_node_put(s, &n, restart, err);
}

static void renew_work(pe_daemon_job *job, pe_store *s)
{
    if (node_put(job->d, s, false, &job->err) < 0)
        pe_daemon_job_fail(job, &job->err, NULL);
}

static void renew_after(pe_daemon_job *job)
{
    struct pe_cluster *cl = job->d->cluster;

    cl->renewing = false;
    /* A failed renewal is logged once per run of failures (job.c logs
     * every failed background job; the lease lapsing is the signal). */
    if (job->failed && !cl->renew_failed)
        pe_log_warn("event=node_lease_renew_failed node=%s", cl->name);
    cl->renew_failed = job->failed;
}

static void on_lease_timer(pe_ev_timer *t, void *ud)
{
    pe_daemon *d = ud;
    pe_daemon_job *job;

    if (d->cluster->renewing || d->cluster->left || d->draining)
        return;
    job = pe_daemon_job_new(d, NULL, NULL, renew_work);
    job->after = renew_after;
    d->cluster->renewing = true;
    if (pe_daemon_job_submit(job) < 0)
        d->cluster->renewing = false;
}

static char *default_name(const pe_daemon *d)
{
    char host[64] = "node";

    gethostname(host, sizeof(host) - 1);
    host[strcspn(host, ".")] = '\0';
    return pe_xasprintf("%s-%.8s", host, d->node);
}

int pe_daemon_cluster_start(pe_daemon *d, const pe_cluster_cfg *cfg, const char *listen_host,
                            unsigned port, pe_err *err)
{
    struct pe_cluster *cl;
    pe_store *s;
    uint64_t every;
    int r;

    if (strncmp(d->store_url, "postgres", 8) != 0) {
        if (cfg->key_file)
            return pe_err_set(err, PE_EINVAL, 0,
                              "--cluster-key-file: nodes share a PostgreSQL store (--store "
                              "postgresql://...); this one is SQLite");
        return 0;
    }
    if (strspn(d->node, "0123456789abcdefABCDEFGHIJKLMNOPQRSTUVWXYZghijklmnopqrstuvwxyz_-") !=
        strlen(d->node))
        return pe_err_set(err, PE_EINVAL, 0, "node id %s: letters, digits, '_' and '-' only",
                          d->node);
    cl = pe_xcalloc(1, sizeof(*cl));
    d->cluster = cl;
    cl->node = d->node;
    cl->lease_s = cfg->lease_s;
    cl->slots = cfg->slots;
    cl->labels = pe_xstrdup(cfg->labels ? cfg->labels : "{}");
    cl->place = cfg->place ? pe_xstrdup(cfg->place) : NULL;
    cl->name = cfg->name ? pe_xstrdup(cfg->name) : default_name(d);
    if (cfg->address)
        cl->address = pe_xstrdup(cfg->address);
    else if (strchr(listen_host, ':'))
        cl->address = pe_xasprintf("http://[%s]:%u", listen_host, port);
    else
        cl->address = pe_xasprintf("http://%s:%u", listen_host, port);
    if (cfg->key_file && load_key(cl, cfg->key_file, err) < 0)
        return -1;
    s = pe_store_open(d->store_url, err);
    if (s == NULL)
        return pe_err_prefix(err, "open store");
    r = node_put(d, s, true, err);
    /* The name of a node that is gone (a host rebuilt with a new data
     * directory): taken over, the old row kept under NAME~ID. */
    if (r < 0 && err->code == PE_EEXIST &&
        pe_store_node_free_name(s, cl->name, pe_store_now_ms(), err) == 1) {
        pe_log_info("event=node_name_taken_over name=%s", cl->name);
        r = node_put(d, s, true, err);
    }
    pe_store_close(s);
    if (r < 0)
        return err->code == PE_EEXIST
                   ? pe_err_set(err, PE_EEXIST, 0,
                                "--node-name %s: another node of this store, up, has that name",
                                cl->name)
                   : -1;
    cl->listen = pe__cluster_listen_start(d, cl->name);
    every = (uint64_t)(cl->lease_s * 1e9 / 3);
    cl->timer = pe_ev_timer_start(d->loop, every, every, on_lease_timer, d, err);
    if (cl->timer == NULL)
        return -1;
    pe_log_info("event=node_registered node=%s name=%s address=%s lease_s=%g key=%s", d->node,
                cl->name, cl->address, cl->lease_s, cl->key ? "yes" : "no");
    return pe_daemon_cluster_wrap(d, err);
}

void pe_daemon_cluster_leave(pe_daemon *d)
{
    struct pe_cluster *cl = d->cluster;
    pe_store *s;
    pe_err err;

    if (cl == NULL || cl->left)
        return;
    cl->left = true;
    /* Once, as the daemon stops: a short query on the loop rather than a
     * job, since the pool turns jobs away from here on. */
    s = pe_store_open(d->store_url, &err);
    if (s == NULL || pe_store_node_leave(s, d->node, &err) < 0)
        pe_log_warn("event=node_leave_failed node=%s reason=\"%s\"", cl->name, err.msg);
    else
        pe_log_info("event=node_left node=%s", cl->name);
    pe_store_close(s);
}

void pe_daemon_cluster_free(pe_daemon *d)
{
    struct pe_cluster *cl = d->cluster;

    if (cl == NULL)
        return;
    if (cl->timer)
        pe_ev_timer_stop(cl->timer);
    pe__cluster_listen_free(cl->listen);
    sodium_free(cl->key);
    free(cl->name);
    free(cl->address);
    free(cl->labels);
    free(cl->place);
    free(cl->seen);
    free(cl);
    d->cluster = NULL;
}

bool pe_daemon_cluster_listening(const pe_daemon *d)
{
    return d->cluster && pe__cluster_listen_up(d->cluster->listen);
}

void pe_daemon_cluster_metrics(const pe_daemon *d, FILE *out)
{
    if (d->cluster)
        pe__cluster_listen_metrics(d->cluster->listen, out);
}

/* ---- what views say of sandboxes on a node that is down ---- */

json_t *pe_daemon_cluster_view(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb)
{
    json_t *view = pe_daemon_sandbox_view(sb);
    pe_store_node n = {0};
    pe_err err;
    char msg[128];

    if (d->cluster == NULL || pe_daemon_is_mine(d, sb) || sb->provider_id == NULL ||
        (sb->backend && strcmp(sb->backend, PE_BACKEND_LOCAL) != 0))
        return view;
    if (pe_store_node_get(s, sb->provider_id, &n, &err) == 0 &&
        pe_cluster_node_up(&n, pe_store_now_ms())) {
        pe_store_node_clear(&n);
        return view;
    }
    /* The row keeps its status (what it was when the node left): the
     * reason says why nothing about it can be done now. */
    snprintf(msg, sizeof(msg), "node %s is down", n.name ? n.name : sb->provider_id);
    json_object_set_new(view, "statusReason", json_string(msg));
    pe_store_node_clear(&n);
    return view;
}

/* ---- listNodes, drainNode: the daemon owner's ---- */

static char *owner_only(pe_daemon *d, pe_xrpc_request *req)
{
    char *did = pe_daemon_auth(d, req);
    pe_err err;

    if (did == NULL)
        return NULL;
    if (strcmp(did, pe_auth_owner_did(d->auth)) != 0) {
        free(did);
        pe_err_set(&err, PE_XRPC_EFORBIDDEN, 0, "nodes are the daemon owner's to see and drain");
        pe_xrpc_respond_err(req, &err);
        return NULL;
    }
    return did;
}

static void list_work(pe_daemon_job *job, pe_store *s)
{
    pe_store_node *nodes = NULL;
    size_t n = 0;
    int64_t now = pe_store_now_ms();
    json_t *arr;

    if (pe_store_node_list(s, &nodes, &n, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
        return;
    }
    arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_object(), *labels = json_loads(nodes[i].labels, 0, NULL);

        json_object_set_new(o, "id", json_string(nodes[i].id));
        json_object_set_new(o, "name", json_string(nodes[i].name));
        json_object_set_new(o, "address", json_string(nodes[i].address));
        json_object_set_new(o, "version", json_string(nodes[i].version));
        json_object_set_new(o, "labels", json_is_object(labels) ? labels : json_object());
        if (!json_is_object(labels))
            json_decref(labels);
        json_object_set_new(o, "status",
                            json_string(pe_cluster_node_up(&nodes[i], now) ? "UP" : "DOWN"));
        json_object_set_new(o, "draining", json_boolean(nodes[i].draining));
        json_object_set_new(o, "self", json_boolean(strcmp(nodes[i].id, job->d->node) == 0));
        json_object_set_new(o, "memFree", json_integer(nodes[i].mem_free));
        json_object_set_new(o, "cpus", json_integer(nodes[i].cpus));
        json_object_set_new(o, "slotsFree", json_integer(nodes[i].slots_free));
        json_object_set_new(o, "sandboxes", json_integer(nodes[i].sandboxes));
        pe_daemon_set_time(o, "leaseUntil", nodes[i].lease_until);
        pe_daemon_set_time(o, "startedAt", nodes[i].started_at);
        json_array_append_new(arr, o);
    }
    pe_store_node_list_free(nodes, n);
    job->out = json_pack("{s:o}", "nodes", arr);
}

static void on_list(pe_xrpc_request *req, void *ud)
{
    pe_daemon *d = ud;
    char *did = owner_only(d, req);

    if (did == NULL)
        return;
    if (pe_daemon_submit(d, req, did, list_work, NULL, NULL) == 0)
        pe_http_response_defer(req);
    free(did);
}

static void drain_work(pe_daemon_job *job, pe_store *s)
{
    json_t *v = json_object_get(job->in, "draining");
    bool draining = v == NULL || json_is_true(v);
    char *id = NULL;

    if (pe_store_node_set_draining(s, job->id, draining, &id, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, job->err.code == PE_ENOENT ? "NodeNotFound" : NULL);
        return;
    }
    pe_log_info("event=node_drain node=%s draining=%d", id, draining);
    job->out = json_pack("{s:s,s:b}", "id", id, "draining", draining);
    free(id);
}

static void on_drain(pe_xrpc_request *req, void *ud)
{
    pe_daemon *d = ud;
    char *did = owner_only(d, req);

    if (did == NULL)
        return;
    if (pe_daemon_submit(d, req, did, drain_work,
                         json_string_value(json_object_get(req->body, "name")),
                         json_deep_copy(req->body)) == 0)
        pe_http_response_defer(req);
    free(did);
}

int pe_daemon_register_nodes(pe_daemon *d, pe_err *err)
{
    if (pe_xrpc_register(d->srv, "io.pocketenv.node.listNodes", on_list, d, err) < 0 ||
        pe_xrpc_register(d->srv, "io.pocketenv.node.drainNode", on_drain, d, err) < 0)
        return -1;
    return 0;
}
