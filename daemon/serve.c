/* `pocketenv serve`: start-up, the loop, and shutdown of the daemon.
 *
 * Start-up opens the runtime, the store (migrating it), the keys; makes
 * sure the owner exists and writes the owner's API token where upstream's
 * CLI reads it. Then one loop thread serves HTTP until SIGTERM/SIGINT,
 * which drains: new requests get 503, and the loop stops once every
 * accepted request (and background job) has finished, so no answer is
 * lost and no sandbox is left half-made by us. Exit status 0 then. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <systemd/sd-daemon.h>

#include "cli.h"
#include "cluster.h"
#include "core/fs.h"
#include "core/install.h"
#include "core/log.h"
#include "core/util.h"
#include "daemon.h"
#include "idle.h"
#include "oauth.h"
#include "records.h"
#include "pool.h"
#include "resource-limits.h"
#include "ports.h"
#include "providers.h"
#include "proxy-tls.h"
#include "sandbox-keys.h"
#include "snapshots.h"
#include "backups.h"
#include "transfer.h"
#include "runtime/security.h"
#include "supervise.h"
#include "terminal.h"
#include "web.h"

#define DEFAULT_LISTEN "127.0.0.1:8789"
#define DEFAULT_TOKEN_TTL (30LL * 24 * 3600)
#define DEFAULT_EXEC_TIMEOUT 300.0
#define DEFAULT_TERMINAL_IDLE 300.0
#define DEFAULT_IDLE_TIMEOUT 1800.0
#define DEFAULT_TICK 10.0
#define MAX_CORS_ORIGINS 32

enum {
    O_LISTEN = 1,
    O_DATA,
    O_STORE,
    O_HANDLE,
    O_TOKEN_FILE,
    O_TOKEN_TTL,
    O_EXEC_TIMEOUT,
    O_WEB,
    O_TERMINAL_IDLE,
    O_IDLE_TIMEOUT,
    O_TICK,
    O_RATE_LIMIT,
    O_SANDBOX_NET,
    O_TERMINALS_PER_USER,
    O_CORS_ORIGIN,
    O_METRICS_PUBLIC,
    O_CP_MAX,
    O_PROVIDER,
    O_PROVIDER_CONFIG,
    O_ATPROTO_PLC,
    O_ATPROTO_DNS,
    O_ATPROTO_INSECURE_HTTP,
    O_ATPROTO_ALLOW_PRIVATE,
    O_ATPROTO_PUBLIC_URL,
    O_CLUSTER, /* from here to O_CLUSTER_END: daemon/cluster.c's, by name */
    O_CLUSTER_KEY_FILE = O_CLUSTER,
    O_NODE_NAME,
    O_NODE_ADDRESS,
    O_NODE_LEASE,
    O_NODE_SLOTS,
    O_NODE_LABEL,
    O_PLACE_LABEL,
    O_CLUSTER_END = O_PLACE_LABEL,
    O_POOL,
    O_POOL_MIN_AVAILABLE,
    O_LIMITS, /* from here on: daemon/resource-limits.c's, by name */
    O_DEFAULT_VCPUS = O_LIMITS,
    O_MAX_VCPUS,
    O_DEFAULT_MEMORY,
    O_MAX_MEMORY,
    O_DEFAULT_DISK,
    O_MAX_DISK,
    O_DEFAULT_PIDS,
    O_USER_SANDBOXES,
    O_USER_MEMORY,
    O_USER_DISK,
    O_USER_JOBS,
    O_USER_QUEUE,
    O_USER_SNAPSHOTS,
    O_LONG_JOBS,
    O_HELP,
};

static const pe_opt serve_opts[] = {
    {"listen", 'l', true, O_LISTEN, "HOST:PORT", "address to listen on (" DEFAULT_LISTEN ")"},
    {"data", 0, true, O_DATA, "DIR", "state directory (as the global --data)"},
    {"store", 0, true, O_STORE, "URL", "sqlite:PATH or postgres://... (DATA/pocketenv.db)"},
    {"handle", 0, true, O_HANDLE, "HANDLE", "the owner's handle (owner.local)"},
    {"token-file", 0, true, O_TOKEN_FILE, "PATH",
     "where to write the owner's token (~/.pocketenv/token.json)"},
    {"token-ttl", 0, true, O_TOKEN_TTL, "S", "lifetime of that token in seconds (30 days)"},
    {"exec-timeout", 0, true, O_EXEC_TIMEOUT, "S", "kill exec commands after S seconds (300)"},
    {"web", 0, true, O_WEB, "DIR",
     "the web page's files (default: the build tree's web/, or the installed share/pocketenv/web)"},
    {"terminal-idle", 0, true, O_TERMINAL_IDLE, "S",
     "end a terminal session S seconds after its last viewer left (300)"},
    {"idle-timeout", 0, true, O_IDLE_TIMEOUT, "S",
     "stop sandboxes unused for S seconds unless keepAlive; 0 = never (1800)"},
    {"tick", 0, true, O_TICK, "S", "housekeeping period: idle stops, dead sandboxes (10)"},
    {"rate-limit", 0, true, O_RATE_LIMIT, "N",
     "requests per 30 s per token or client address; 0 = unlimited (500)"},
    {"sandbox-net", 0, true, O_SANDBOX_NET, "nat|none",
     "network of the sandboxes: NAT egress, or loopback only (nat)"},
    {"terminals-per-user", 0, true, O_TERMINALS_PER_USER, "N",
     "terminal sessions a user may have; their oldest unwatched one makes room (64)"},
    {"cors-origin", 0, true, O_CORS_ORIGIN, "ORIGIN",
     "a web origin (https://app.example.com) whose pages may call the API; repeatable (none)"},
    {"metrics-public", 0, false, O_METRICS_PUBLIC, NULL,
     "serve /metrics without the owner's token"},
    {"cp-max", 0, true, O_CP_MAX, "SIZE", "largest upload to /cp (1G)"},
    {"provider", 0, true, O_PROVIDER, "NAME=local|remote|off",
     "who serves creates for upstream provider NAME: this daemon, the provider itself, or "
     "nobody; repeatable (every name: local)"},
    {"provider-config", 0, true, O_PROVIDER_CONFIG, "FILE",
     "remote providers' URLs and operator-wide keys, JSON (mode 600); each name in it is served "
     "remotely; hopx and runloop also take previewUrl and previewCaFile (PEM CAs the preview "
     "proxy trusts for their https preview hosts, besides the system's) (docs/providers.md)"},
    {"atproto-plc", 0, true, O_ATPROTO_PLC, "URL",
     "PLC directory for did:plc at sign-in (https://plc.directory)"},
    {"atproto-dns", 0, true, O_ATPROTO_DNS, "IPV4:PORT|off",
     "DNS server for handles' _atproto TXT records (the system's)"},
    {"atproto-insecure-http", 0, false, O_ATPROTO_INSECURE_HTTP, NULL,
     "development only: let sign-in reach handles, did:web and PDSes over plain http"},
    {"atproto-allow-private", 0, false, O_ATPROTO_ALLOW_PRIVATE, NULL,
     "let AT Protocol requests reach hosts on private addresses (a PDS on the LAN or loopback)"},
    {"atproto-public-url", 0, true, O_ATPROTO_PUBLIC_URL, "URL",
     "https URL where the daemon is reached: sign in as a web client with private_key_jwt, its "
     "metadata at URL/oauth/client-metadata.json (none: a loopback client)"},
    {"cluster-key-file", 0, true, O_CLUSTER_KEY_FILE, "PATH",
     "the key nodes of one PostgreSQL store share to call each other (docs/cluster.md)"},
    {"node-name", 0, true, O_NODE_NAME, "NAME", "this node's name in the store (HOST-NODEID)"},
    {"node-address", 0, true, O_NODE_ADDRESS, "URL",
     "the base URL other nodes call this one at (http://LISTEN)"},
    {"node-lease", 0, true, O_NODE_LEASE, "S",
     "seconds without a renewal after which other nodes count this one down (15)"},
    {"node-slots", 0, true, O_NODE_SLOTS, "N", "sandboxes placement may put here (64)"},
    {"node-label", 0, true, O_NODE_LABEL, "KEY=VALUE",
     "a label placement can pin sandboxes to; repeatable"},
    {"place-label", 0, true, O_PLACE_LABEL, "KEY=VALUE",
     "place the sandboxes created through this node only on nodes with this label"},
    {"pool", 0, true, O_POOL, "BASE=N[,...]",
     "keep N sandboxes of BASE started for creates to claim; repeatable; 0 = none (none)"},
    {"pool-min-available", 0, true, O_POOL_MIN_AVAILABLE, "MIB",
     "grow the pool only while MemAvailable is above MIB, shrink it below (1024)"},
    {"default-vcpus", 0, true, O_DEFAULT_VCPUS, "N",
     "vCPUs of a sandbox made without vcpus (2, at most --max-vcpus)"},
    {"max-vcpus", 0, true, O_MAX_VCPUS, "N", "most vCPUs a sandbox may ask for (the host's CPUs)"},
    {"default-memory", 0, true, O_DEFAULT_MEMORY, "SIZE",
     "memory of a sandbox made without memory (4g)"},
    {"max-memory", 0, true, O_MAX_MEMORY, "SIZE", "most memory a sandbox may ask for (16g)"},
    {"default-disk", 0, true, O_DEFAULT_DISK, "SIZE",
     "disk of a sandbox made without disk (10g; enforced where the runtime can)"},
    {"max-disk", 0, true, O_MAX_DISK, "SIZE", "most disk a sandbox may ask for (100g)"},
    {"default-pids", 0, true, O_DEFAULT_PIDS, "N",
     "processes a sandbox may have at once; 0 = no limit (1024)"},
    {"user-sandboxes", 0, true, O_USER_SANDBOXES, "N",
     "sandboxes per user, whatever their state; 0 = no quota (10)"},
    {"user-memory", 0, true, O_USER_MEMORY, "SIZE",
     "memory of a user's running sandboxes together; 0 = no quota (32g)"},
    {"user-disk", 0, true, O_USER_DISK, "SIZE",
     "disk of a user's sandboxes, backups and copies together; 0 = no quota (200g)"},
    {"user-jobs", 0, true, O_USER_JOBS, "N",
     "long jobs (execs, clones, backups, copies; and apart, starts and stops) of one user at "
     "once (4)"},
    {"user-snapshots", 0, true, O_USER_SNAPSHOTS, "N",
     "snapshots a user keeps; a new one beyond removes their oldest (20)"},
    {"user-queue", 0, true, O_USER_QUEUE, "N",
     "long jobs of one user waiting for a turn; more are refused with 429 (8)"},
    {"long-jobs", 0, true, O_LONG_JOBS, "N", "long jobs of all users at once (64)"},
    {"help", 'h', false, O_HELP, NULL, "show this help"},
    {NULL, 0, false, 0, NULL, NULL},
};

struct serve_args {
    const char *listen, *data, *store, *handle, *token_file, *web;
    long long token_ttl;
    double exec_timeout, terminal_idle, idle_timeout, tick;
    long rate_limit, terminals_per_user;
    int sandbox_net;
    const char *cors[MAX_CORS_ORIGINS + 1];
    size_t n_cors;
    bool metrics_public;
    unsigned long long cp_max;
    bool help;
    pe_daemon_limits lim;
    pe_daemon_providers providers;
    const char *provider_config;
    pe_oauth_cfg oauth;
    pe_cluster_cfg cluster;
    pe_daemon_pool_cfg pool;
};

/* An origin as a browser sends it: scheme "://" host, maybe ":" port, no
 * path; exact matching against the Origin header is all the check does. */
static int parse_origin(const char *arg, pe_err *err)
{
    const char *host = strstr(arg, "://");

    if (host == NULL || host == arg || host[3] == '\0' || strpbrk(host + 3, "/?# \t") ||
        strcmp(arg, "null") == 0)
        return pe_err_set(err, PE_EINVAL, 0,
                          "--cors-origin: an origin like https://app.example.com, not '%s'", arg);
    return 0;
}

static const char *opt_name(int id)
{
    for (const pe_opt *o = serve_opts; o->name; o++)
        if (o->id == id)
            return o->name;
    return "?";
}

static int on_opt(int id, const char *arg, void *ctx, pe_err *err)
{
    struct serve_args *a = ctx;
    char *end;

    switch (id) {
    case O_LISTEN:
        a->listen = arg;
        return 0;
    case O_DATA:
        a->data = arg;
        return 0;
    case O_STORE:
        a->store = arg;
        return 0;
    case O_HANDLE:
        a->handle = arg;
        return 0;
    case O_TOKEN_FILE:
        a->token_file = arg;
        return 0;
    case O_TOKEN_TTL:
        errno = 0;
        a->token_ttl = strtoll(arg, &end, 10);
        if (errno || end == arg || *end || a->token_ttl <= 0 || a->token_ttl > PE_AUTH_TTL_MAX)
            return pe_err_set(err, PE_EINVAL, 0, "--token-ttl: seconds in 1..%lld",
                              (long long)PE_AUTH_TTL_MAX);
        return 0;
    case O_EXEC_TIMEOUT:
        return pe_cli_parse_seconds(arg, &a->exec_timeout, err);
    case O_WEB:
        a->web = arg;
        return 0;
    case O_TERMINAL_IDLE:
        return pe_cli_parse_seconds(arg, &a->terminal_idle, err);
    case O_IDLE_TIMEOUT:
        return pe_cli_parse_seconds(arg, &a->idle_timeout, err);
    case O_TICK:
        if (pe_cli_parse_seconds(arg, &a->tick, err) < 0)
            return -1;
        if (a->tick < 0.05)
            return pe_err_set(err, PE_EINVAL, 0, "--tick: at least 0.05 seconds");
        return 0;
    case O_RATE_LIMIT:
        errno = 0;
        a->rate_limit = strtol(arg, &end, 10);
        if (errno || end == arg || *end || a->rate_limit < 0)
            return pe_err_set(err, PE_EINVAL, 0, "--rate-limit: a count of requests, 0 or more");
        return 0;
    case O_SANDBOX_NET:
        if (strcmp(arg, "nat") == 0)
            a->sandbox_net = PE_NET_NAT;
        else if (strcmp(arg, "none") == 0)
            a->sandbox_net = PE_NET_NONE;
        else
            return pe_err_set(err, PE_EINVAL, 0, "--sandbox-net: nat or none, not '%s'", arg);
        return 0;
    case O_TERMINALS_PER_USER:
        errno = 0;
        a->terminals_per_user = strtol(arg, &end, 10);
        if (errno || end == arg || *end || a->terminals_per_user < 1 ||
            a->terminals_per_user > PE_TERM_MAX)
            return pe_err_set(err, PE_EINVAL, 0, "--terminals-per-user: 1..%d", PE_TERM_MAX);
        return 0;
    case O_CORS_ORIGIN:
        if (parse_origin(arg, err) < 0)
            return -1;
        if (a->n_cors == MAX_CORS_ORIGINS)
            return pe_err_set(err, PE_EINVAL, 0, "--cors-origin: at most %d", MAX_CORS_ORIGINS);
        a->cors[a->n_cors++] = arg;
        return 0;
    case O_METRICS_PUBLIC:
        a->metrics_public = true;
        return 0;
    case O_POOL:
        return pe_daemon_pool_parse(&a->pool, arg, err);
    case O_POOL_MIN_AVAILABLE:
        return pe_daemon_pool_parse_min(&a->pool, arg, err);
    case O_CP_MAX: {
        long long size;
        if (pe_parse_size(arg, &size) < 0 || size <= 0)
            return pe_err_set(err, PE_EINVAL, 0, "--cp-max: a size like 512m or 2g, not '%s'", arg);
        a->cp_max = (unsigned long long)size;
        return 0;
    }
    case O_PROVIDER:
        return pe_daemon_providers_flag(&a->providers, arg, err);
    case O_PROVIDER_CONFIG:
        a->provider_config = arg;
        return 0;
    case O_ATPROTO_PLC:
        a->oauth.plc_url = arg;
        return 0;
    case O_ATPROTO_DNS:
        a->oauth.dns_server = arg;
        return 0;
    case O_ATPROTO_INSECURE_HTTP:
        a->oauth.insecure_http = true;
        return 0;
    case O_ATPROTO_ALLOW_PRIVATE:
        a->oauth.allow_private = true;
        return 0;
    case O_ATPROTO_PUBLIC_URL:
        a->oauth.public_url = arg;
        return 0;
    case O_HELP:
        a->help = true;
        return 0;
    case O_CLUSTER ... O_CLUSTER_END:
        return pe_cluster_flag(&a->cluster, opt_name(id), arg, err);
    case O_DEFAULT_VCPUS ... O_LONG_JOBS:
        return pe_daemon_limits_flag(&a->lim, opt_name(id), arg, err);
    default:
        return pe_err_set(err, PE_EINVAL, 0, "unexpected argument '%s'", arg);
    }
}

/* "HOST:PORT" or "[V6]:PORT" into cfg (host points into buf). */
static int parse_listen(const char *s, char *buf, size_t size, pe_http_config *cfg, pe_err *err)
{
    const char *colon = strrchr(s, ':');
    char *end;
    unsigned long port;
    size_t hl;

    if (colon == NULL || colon == s)
        return pe_err_set(err, PE_EINVAL, 0, "--listen: want HOST:PORT, got '%s'", s);
    port = strtoul(colon + 1, &end, 10);
    if (*end || end == colon + 1 || port > 65535)
        return pe_err_set(err, PE_EINVAL, 0, "--listen: bad port in '%s'", s);
    hl = (size_t)(colon - s);
    if (s[0] == '[' && hl >= 2 && s[hl - 1] == ']')
        s++, hl -= 2;
    if (hl >= size)
        return pe_err_set(err, PE_EINVAL, 0, "--listen: host too long");
    memcpy(buf, s, hl);
    buf[hl] = '\0';
    cfg->host = buf;
    cfg->port = (unsigned)port;
    return 0;
}

/* GET /metrics: the daemon owner's API token only (request counts and
 * sandbox states are the operator's business), unless --metrics-public. */
static int metrics_auth(const char *authorization, void *ud)
{
    pe_daemon *d = ud;
    char did[512];

    /* pe_daemon_rate_key gives the verified subject of an API token. */
    if (pe_daemon_rate_key(authorization, did, sizeof(did), d) != 1)
        return PE_XRPC_EAUTH;
    return strcmp(did, pe_auth_owner_did(d->auth)) == 0 ? 0 : PE_XRPC_EFORBIDDEN;
}

static void on_signal(pe_ev_signal *s, int signo, void *ud)
{
    pe_daemon *d = ud;

    if (!d->draining)
        pe_log_info("event=shutdown signal=%s inflight=%u", signo == SIGTERM ? "TERM" : "INT",
                    d->inflight);
    d->draining = true;
    pe_daemon_jobs_drain(d); /* long jobs still waiting for a turn: 503 now */
    /* Running execs end now rather than at their timeout: the one-shot
     * ones (workers poll stop_fd) and the streams get SIGTERM, then
     * SIGKILL, and their clients an answer that says why. */
    if (d->stop_fd >= 0)
        (void)!write(d->stop_fd, &(uint64_t){1}, sizeof(uint64_t));
    pe_daemon_exec_stream_drain(d);
    pe_cluster_relay_drain(d);
    pe_daemon_cluster_leave(d);
    sd_notify(0, "STOPPING=1");
    if (d->inflight == 0)
        pe_ev_stop(d->loop);
}

/* The owner's row and a fresh owner token in the token file. */
static int setup_owner(pe_daemon *d, const struct serve_args *a, pe_err *err)
{
    const char *did = pe_auth_owner_did(d->auth);
    pe_store_user u = {.did = did, .handle = a->handle ? a->handle : "owner.local"};
    cleanup_free char *path = NULL;
    char *jwt = NULL;
    pe_store *s;
    int r;

    s = pe_store_open(d->store_url, err);
    if (s == NULL)
        return pe_err_prefix(err, "open store");
    r = pe_store_user_upsert(s, &u, err);
    if (r == 0)
        r = pe_daemon_auth_refresh(d->auth, s, err);
    pe_store_close(s);
    if (r < 0)
        return pe_err_prefix(err, "owner %s", did);
    if (a->token_file)
        path = pe_xstrdup(a->token_file);
    else if (getenv("HOME"))
        path = pe_xasprintf("%s/.pocketenv/token.json", getenv("HOME"));
    else
        return pe_err_set(err, PE_EINVAL, 0, "HOME is not set: pass --token-file");
    if (pe_auth_token_mint(d->auth, did, a->token_ttl, PE_AUTH_SCOPE_API, &jwt, err) < 0)
        return -1;
    r = pe_auth_write_token_file(path, jwt, err);
    free(jwt);
    if (r < 0)
        return -1;
    pe_log_info("event=owner did=%s handle=%s token_file=%s", did, u.handle, path);
    return 0;
}

/* Sandboxes are held to their disk limit where the runtime can (its
 * layers filesystem); elsewhere the daemon says so once and goes on: the
 * sizes are still recorded and counted against quotas. */
static void probe_disk_limits(pe_daemon *d)
{
    pe_err why;

    pe_err_clear(&why);
    d->lim.disk_enforced = pe_runtime_disk_limits(&d->rt, &why) == 0;
    if (!d->lim.disk_enforced)
        pe_log_warn("event=no_disk_limits reason=\"%s\"", why.msg);
}

static int open_all(pe_daemon *d, const struct serve_args *a, pe_err *err)
{
    cleanup_free char *cache = NULL;

    if (pe_runtime_open(&d->rt, a->data, err) < 0)
        return -1;
    cache = pe_xasprintf("%s/cache", d->rt.data_dir);
    if (pe_fs_mkdir_p(cache, 0700, NULL) == 0)
        pe_seccomp_set_cache_dir(cache);
    d->store_url =
        a->store ? pe_xstrdup(a->store) : pe_xasprintf("sqlite:%s/pocketenv.db", d->rt.data_dir);
    if (pe_auth_open(d->rt.data_dir, &d->auth, err) < 0 || pe_daemon_node_id(d, err) < 0 ||
        pe_sandboxes_open(&d->sx, d->auth, &d->rt, err) < 0)
        return -1;
    d->sx.unit_start = pe_daemon_unit_start_starting; /* tailscaled in a remote sandbox */
    d->sx.unit_ud = d;
    if (a->provider_config) {
        if (pe_sandboxes_load_remotes(&d->sx, a->provider_config, err) < 0)
            return -1;
        for (size_t i = 0; i < d->sx.n_remotes; i++) {
            const pe_sandbox_remote *r = &d->sx.remotes[i];
            if (pe_daemon_providers_remote(&d->providers, r->name, err) < 0 ||
                (r->preview_ca_file && pe_proxy_tls_ca_check(r->preview_ca_file, err) < 0))
                return pe_err_prefix(err, "--provider-config: %s", r->name);
        }
    }
    probe_disk_limits(d);
    return setup_owner(d, a, err);
}

/* Never log the store URL itself: a PostgreSQL one may hold a password. */
static const char *backend_name(const char *url)
{
    return strncmp(url, "postgres", 8) == 0 ? "postgres" : "sqlite";
}

/* The web page: --web DIR must load; without it, the installation's (the
 * build tree's web/ or DATADIR/pocketenv/web, core/install.h), and a
 * daemon without one serves only the text banner at / (and says why). */
static int load_web(pe_daemon *d, const struct serve_args *a, const char *banner, pe_err *err)
{
    cleanup_free char *dir = NULL;

    if (a->web) {
        d->web = pe_web_load(a->web, banner, err);
        return d->web ? 0 : pe_err_prefix(err, "--web");
    }
    dir = pe_install_data("web", err);
    d->web = dir ? pe_web_load(dir, banner, err) : NULL;
    if (d->web == NULL) {
        pe_log_warn("event=no_web_page reason=\"%s\"", err->msg);
        pe_err_clear(err);
    }
    return 0;
}

static int serve(pe_daemon *d, const struct serve_args *a, pe_err *err)
{
    char host[256];
    cleanup_free char *banner = NULL;
    json_t *resume = json_array();
    pe_http_config cfg;
    size_t i;
    json_t *v;

    pe_http_config_init(&cfg);
    cfg.cors_origins = a->cors;
    cfg.metrics_public = a->metrics_public;
    if (a->rate_limit >= 0) {
        cfg.rate_burst = (double)a->rate_limit;
        cfg.rate_per_s = (double)a->rate_limit / 30.0;
    }
    if (parse_listen(a->listen, host, sizeof(host), &cfg, err) < 0 || open_all(d, a, err) < 0 ||
        pe_daemon_reconcile(d, resume, err) < 0) {
        json_decref(resume);
        return -1;
    }
    d->loop = pe_ev_loop_new(0, 0, err);
    d->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (d->stop_fd < 0) {
        json_decref(resume);
        return pe_err_set(err, PE_ESYS, errno, "eventfd");
    }
    if (d->loop == NULL || pe_daemon_jobs_init(d, err) < 0) {
        json_decref(resume);
        return -1;
    }
    /* Before any thread exists: the signals must stay blocked everywhere. */
    if (pe_ev_signal_start(d->loop, SIGTERM, on_signal, d, err) == NULL ||
        pe_ev_signal_start(d->loop, SIGINT, on_signal, d, err) == NULL)
        return -1;
    signal(SIGPIPE, SIG_IGN);
    banner = pe_xasprintf("pocketenv %s\nowner: %s\npublic key: %s\n", "0.1.0",
                          pe_auth_owner_did(d->auth), pe_auth_public_key_hex(d->auth));
    cfg.banner = banner;
    if (load_web(d, a, banner, err) < 0)
        return -1;
    d->srv = pe_http_server_new(d->loop, &cfg, err);
    if (d->srv == NULL)
        return -1;
    pe_http_set_rate_key(d->srv, pe_daemon_rate_key, d);
    pe_http_set_metrics_auth(d->srv, metrics_auth, d);
    /* Volumes and idle policies, kin of resources and snapshots, apart:
     * no handler file registers another's methods. */
    if (pe_daemon_register_volumes(d, err) < 0 || pe_daemon_register_idle(d, err) < 0) {
        json_decref(resume);
        return -1;
    }
    if (pe_daemon_register_actor(d, err) < 0 || pe_daemon_register_sandbox(d, err) < 0 ||
        pe_daemon_register_resources(d, err) < 0 || pe_daemon_register_backups(d, err) < 0 ||
        pe_daemon_register_snapshots(d, err) < 0 ||
        pe_daemon_register_copy(d, a->cp_max, err) < 0 || pe_daemon_register_keys(d, err) < 0 ||
        pe_daemon_register_prefs(d, err) < 0 || pe_daemon_register_services(d, err) < 0 ||
        pe_daemon_register_ports(d, err) < 0 || pe_daemon_register_terminal(d, err) < 0 ||
        pe_daemon_register_exec_stream(d, err) < 0 || pe_daemon_register_e2b(d, err) < 0 ||
        pe_daemon_register_web(d, err) < 0 || pe_daemon_register_mcp(d, err) < 0 ||
        pe_daemon_register_netpolicy(d, err) < 0 ||
        pe_daemon_register_oauth(d, &a->oauth, err) < 0 || pe_daemon_records_start(d, err) < 0 ||
        pe_daemon_register_nodes(d, err) < 0 ||
        pe_daemon_cluster_start(d, &a->cluster, cfg.host, pe_http_server_port(d->srv), err) < 0 ||
        pe_daemon_housekeeping_start(d, err) < 0 ||
        pe_daemon_pool_start(d, &a->pool, err) < 0) { /* after reconcile: it removes orphans */
        json_decref(resume);
        return -1;
    }
    json_array_foreach(resume, i, v) pe_daemon_sandbox_resume(d, NULL, json_string_value(v));
    json_decref(resume);
    pe_daemon_reconcile_remote(d);
    pe_daemon_limits_log(d);
    pe_daemon_providers_log(&d->providers);
    pe_log_info("event=listening addr=%s:%u data=%s store=%s node=%s", cfg.host,
                pe_http_server_port(d->srv), d->rt.data_dir, backend_name(d->store_url), d->node);
    /* Under systemd (Type=notify): ready once the socket is bound and the
     * store reconciled. Without NOTIFY_SOCKET this does nothing. */
    sd_notifyf(0, "READY=1\nSTATUS=serving on %s:%u", cfg.host, pe_http_server_port(d->srv));
    if (pe_ev_run(d->loop, err) < 0)
        return -1;
    pe_log_info("event=stopped");
    return 0;
}

static void teardown(pe_daemon *d)
{
    /* Server first (no deferred request is left after a drain), then the
     * pool (its threads close their stores), then what they used. */
    pe_daemon_terminal_shutdown(d);
    pe_daemon_exec_stream_shutdown(d);
    pe_daemon_e2b_shutdown(d);
    pe_daemon_mcp_shutdown(d);
    pe_daemon_cluster_free(d);
    pe_daemon_units_detach();
    pe_daemon_tailscale_quiesce();
    if (d->srv)
        pe_http_server_free(d->srv);
    pe_daemon_pool_stop(d); /* its sandboxes go: no row will own them */
    if (d->loop)
        pe_daemon_watch_free_all(d);
    if (d->loop)
        pe_ev_loop_free(d->loop);
    pe_daemon_oauth_free(d);
    pe_web_free(d->web);
    if (d->stop_fd >= 0)
        close(d->stop_fd);
    pe_sandboxes_close(&d->sx);
    pe_auth_close(d->auth);
    if (d->rt.data_dir)
        pe_runtime_close(&d->rt);
    free(d->store_url);
    free(d->node);
    pe_daemon_housekeeping_free();
}

int pe_daemon_serve_main(int argc, char **argv)
{
    struct serve_args a = {.listen = DEFAULT_LISTEN,
                           .token_ttl = DEFAULT_TOKEN_TTL,
                           .exec_timeout = DEFAULT_EXEC_TIMEOUT,
                           .terminal_idle = DEFAULT_TERMINAL_IDLE,
                           .idle_timeout = DEFAULT_IDLE_TIMEOUT,
                           .tick = DEFAULT_TICK,
                           .rate_limit = -1,
                           .terminals_per_user = PE_TERM_PER_USER,
                           .sandbox_net = PE_NET_NAT};
    pe_daemon d;
    pe_err err;
    int idx = 1, r;

    memset(&d, 0, sizeof(d));
    d.stop_fd = -1;
    pe_err_clear(&err);
    pe_daemon_limits_defaults(&a.lim);
    pe_daemon_providers_defaults(&a.providers);
    pe_cluster_cfg_defaults(&a.cluster);
    if (pe_opts_parse(serve_opts, argc, argv, &idx, false, on_opt, &a, &err) < 0 ||
        pe_daemon_limits_check(&a.lim, &err) < 0) {
        pe_daemon_pool_cfg_clear(&a.pool);
        return pe_cli_fail(&err);
    }
    if (a.help) {
        printf("usage: pocketenv serve [OPTIONS]\n\nServe the io.pocketenv.* XRPC API.\n\n");
        pe_opts_help(serve_opts);
        printf("\nExamples:\n"
               "  pocketenv serve\n"
               "  pocketenv serve --listen 0.0.0.0:8789 --idle-timeout 600\n"
               "  pocketenv serve --provider daytona=off --provider e2b=off\n"
               "  pocketenv serve --store postgres://pocketenv@db/pocketenv   # daemons sharing "
               "a store\n");
        return 0;
    }
    if (a.data == NULL)
        a.data = pe_cli_data_dir;
    d.exec_timeout = a.exec_timeout > 0 ? a.exec_timeout : DEFAULT_EXEC_TIMEOUT;
    d.terminal_idle = a.terminal_idle > 0 ? a.terminal_idle : DEFAULT_TERMINAL_IDLE;
    d.idle_timeout = a.idle_timeout;
    d.tick_s = a.tick;
    d.sandbox_net = a.sandbox_net;
    d.terminals_per_user = (unsigned)a.terminals_per_user;
    d.lim = a.lim;
    d.providers = a.providers;
    r = serve(&d, &a, &err);
    teardown(&d);
    pe_cluster_cfg_free(&a.cluster);
    pe_daemon_pool_cfg_clear(&a.pool);
    if (r < 0)
        return pe_cli_fail(&err);
    return 0;
}
