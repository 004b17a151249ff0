/* The warm pool (pool.h): one filler thread keeps, per base, the
 * operator's number of runtime sandboxes started; a create takes one and
 * adopts it under its row.
 *
 * Why a runtime sandbox named by a store id: the row a claim inserts
 * takes that id, so the running sandbox needs no rename, and a daemon
 * killed with a full pool leaves runtime sandboxes shaped like store ids
 * with no row, which the next daemon's reconcile removes as orphans
 * (housekeeping.c) before its own filler starts.
 *
 * What a pooled sandbox is started with is what every create gets
 * without asking: the base, the daemon's network mode, the default
 * sizes, its template's egress policy if it has one, no volumes. A
 * create asking for anything a running sandbox cannot take (other sizes,
 * another network policy, another backend) starts its own. Variables and
 * secrets need nothing here: every exec reads them from the store
 * (lib/sandbox).
 *
 * Memory: pooled sandboxes are real sandboxes and cost the host what an
 * idle one costs (bench/README.md: ~0.5 MiB). The filler adds one only
 * while MemAvailable is above --pool-min-available and removes them,
 * newest first, while it is below. POCKETENV_POOL_MEMINFO names another
 * file in /proc/meminfo's format, for tests to play the pressure. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "pocketenv/egress.h"
#include "pool.h"
#include "providers.h"
#include "resource-limits.h"
#include "netpolicy.h"
#include "sandbox-env.h"
#include "sandbox-keys.h"
#include "supervise.h"
#include "templates.h"

#define RETRY_S 5.0     /* after a failed fill of a base */
#define PRESSURE_S 0.25 /* how often MemAvailable is read while idle */
#define WARM_MS 5000    /* a pooled sandbox's warm-up exec, at most */
/* After a claim, the refill waits this long since the base's last claim
 * while at least half its pool is ready: a refill clones a sandbox's
 * first process from the daemon (copy-on-write faults and TLB flushes
 * across its threads) and competes for the CPUs with the claimed
 * sandbox's first exec, which usually comes within milliseconds
 * (bench/README.md: create -> first exec 0.43-0.69 x without it). */
#define REFILL_QUIET_S 0.1
#define DEFAULT_MIN_AVAILABLE_MIB 1024
#define NAME_CHARS "abcdefghijklmnopqrstuvwxyz0123456789._-" /* a base's name */

struct pool_base {
    char *name;
    unsigned size;
    pe_daemon_pooled **ready; /* oldest first */
    size_t n_ready;
    double retry_at;
    double quiet_until; /* no refill before, while half the pool is ready */
    uint64_t made, claimed, shrunk, failed;
};

struct pe_daemon_pool {
    pe_daemon *d;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    size_t n;
    struct pool_base b[PE_POOL_BASES_MAX];
    int64_t min_mib;
    pe_sandbox_cfg sizes; /* the limits pooled sandboxes run with */
    bool niced;           /* the filler runs at nice 19 */
};

/* ---- configuration ---- */

int pe_daemon_pool_parse(pe_daemon_pool_cfg *c, const char *arg, pe_err *err)
{
    cleanup_free char *copy = pe_xstrdup(arg);
    char *save = NULL;

    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '='), *end;
        unsigned long n;
        size_t i;

        if (eq == NULL || eq == tok || eq - tok > 64 ||
            strspn(tok, NAME_CHARS) != (size_t)(eq - tok))
            return pe_err_set(err, PE_EINVAL, 0, "--pool: BASE=N[,BASE=N...], not '%s'", arg);
        *eq = '\0';
        errno = 0;
        n = strtoul(eq + 1, &end, 10);
        if (errno || end == eq + 1 || *end || eq[1] == '-' || n > PE_POOL_SIZE_MAX)
            return pe_err_set(err, PE_EINVAL, 0, "--pool %s: a size from 0 to %d, not '%s'", tok,
                              PE_POOL_SIZE_MAX, eq + 1);
        for (i = 0; i < c->n && strcmp(c->base[i], tok) != 0; i++)
            ;
        if (i == c->n) {
            if (c->n == PE_POOL_BASES_MAX)
                return pe_err_set(err, PE_EINVAL, 0, "--pool: at most %d bases", PE_POOL_BASES_MAX);
            c->base[c->n++] = pe_xstrdup(tok);
        }
        c->size[i] = (unsigned)n;
    }
    return 0;
}

int pe_daemon_pool_parse_min(pe_daemon_pool_cfg *c, const char *arg, pe_err *err)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(arg, &end, 10);
    if (errno || end == arg || *end || v < 0)
        return pe_err_set(err, PE_EINVAL, 0, "--pool-min-available: MiB, 0 or more, not '%s'", arg);
    c->min_available_mib = v + 1; /* 0 in the struct: not given */
    return 0;
}

void pe_daemon_pool_cfg_clear(pe_daemon_pool_cfg *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->base[i]);
    memset(c, 0, sizeof(*c));
}

/* ---- memory ---- */

/* MemAvailable in MiB, -1 if unknown (then the pool neither grows nor
 * shrinks for memory). */
static int64_t mem_available_mib(void)
{
    const char *path = getenv("POCKETENV_POOL_MEMINFO");
    char line[256];
    long long kib = -1;
    FILE *f = fopen(path && path[0] ? path : "/proc/meminfo", "re");

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "MemAvailable: %lld kB", &kib) == 1)
            break;
    fclose(f);
    return kib < 0 ? -1 : kib / 1024;
}

/* ---- one pooled sandbox ---- */

static int init_pidfd(pe_daemon *d, const char *id, bool *running)
{
    pe_runtime_init init;
    pe_err e;

    pe_err_clear(&e);
    *running = false;
    if (pe_runtime_init_of(&d->rt, id, &init, &e) < 0)
        return -1;
    *running = init.running;
    return init.running ? (int)syscall(SYS_pidfd_open, init.pid, 0) : -1;
}

/* Remove a pooled (or taken) sandbox and reap its init, which the filler
 * cloned: nothing else watches it. */
static void remove_one(pe_daemon *d, const char *id)
{
    bool running;
    int fd = init_pidfd(d, id, &running);
    siginfo_t si;
    pe_err e;

    pe_err_clear(&e);
    if (pe_runtime_remove(&d->rt, id, &e) < 0 && e.code != PE_ENOENT)
        pe_log_warn("pool: remove %s: %s", id, e.msg);
    if (fd >= 0) {
        /* ECHILD: not ours to reap (reaped already, or a daemon's before) */
        while (waitid(P_PIDFD, (id_t)fd, &si, WEXITED) < 0 && errno == EINTR)
            ;
        close(fd);
    }
}

void pe_daemon_pooled_free(pe_daemon_pooled *p)
{
    if (p == NULL)
        return;
    if (p->pidfd >= 0)
        close(p->pidfd);
    free(p->id);
    free(p->name);
    pe_daemon_ssh_ahead_clear(&p->ssh);
    free(p);
}

/* The per-user work a claim can have done ahead: a name drawn as a create
 * without one draws it, and a default SSH pair named after it, installed
 * (two file writes, the largest step of a claim otherwise). It is no
 * user's data: the sandbox and its pair go to the one claim that takes
 * them, or are removed. Without the pair (logged), the claim makes one. */
static void ahead_of_claim(pe_daemon *d, pe_daemon_pooled *pd)
{
    pe_err e;

    pe_err_clear(&e);
    pd->name = pe_sandbox_slug_name();
    if (pe_daemon_ssh_ahead_make(d, pd->id, pd->name, &pd->ssh, &e) < 0)
        pe_log_warn("pool: %s: ssh key not placed ahead: %s", pd->id, e.msg);
}

/* The filler runs at the lowest priority (filler()); the init it just
 * started inherited that and gets the default back before any claim. */
static int init_nice_0(pe_daemon *d, const char *id, pe_err *err)
{
    pe_runtime_init init;

    if (pe_runtime_init_of(&d->rt, id, &init, err) < 0)
        return -1;
    if (init.running && setpriority(PRIO_PROCESS, (id_t)init.pid, 0) < 0)
        return pe_err_sys(err, "set the priority of %s's init", id);
    return 0;
}

/* One `sh -c true` through the sandbox's init before a claim can take it
 * (bench/README.md, "The first exec of a claim"): a claim's first exec
 * otherwise pays for init's first request (the pages of its spawner),
 * the overlay's first lookups of the shell and its libraries and the new
 * memory cgroup's first charges. Its output goes to pipes nobody reads; it
 * gets WARM_MS (less if the daemon stops), then SIGKILL. It changes nothing a user can see: an
 * image without /bin/sh, or a failure, only skips it. */
static void warm_up(pe_daemon *d, const char *id)
{
    char *argv[] = {(char *)"/bin/sh", (char *)"-c", (char *)"true", NULL};
    pe_proc_opts o = {.argv = argv, .capture = true};
    struct pollfd pf[2];
    pe_proc proc;
    int code = -1;
    pe_err e;

    pe_err_clear(&e);
    if (pe_runtime_exec_start(&d->rt, id, &o, &proc, &e) < 0)
        return;
    pf[0] = (struct pollfd){proc.status_fd, POLLIN, 0};
    pf[1] = (struct pollfd){d->stop_fd, POLLIN, 0}; /* the daemon stops: not a moment longer */
    if (poll(pf, 2, WARM_MS) < 1 || !(pf[0].revents & POLLIN))
        pe_proc_signal(&proc, SIGKILL);
    if (pe_proc_wait(&proc, &code, &e) < 0 || code != 0)
        pe_log_info("pool: %s: the warm-up exec ended %d", id, code);
    pe_proc_close(&proc);
}

/* Create and start one sandbox of base as a create without options would. */
static pe_daemon_pooled *make_one(pe_daemon_pool *p, const char *base, pe_err *err)
{
    pe_daemon *d = p->d;
    pe_daemon_pooled *pd;
    char *id = pe_store_new_id("sbx_");
    pe_sandbox_cfg cfg;
    json_t *policy;
    bool running;
    int r;

    pe_sandbox_cfg_init(&cfg);
    cfg.name = pe_xstrdup(id);
    cfg.image = pe_xstrdup(base);
    cfg.net = d->sandbox_net;
    cfg.cpu_millis = p->sizes.cpu_millis;
    cfg.memory_bytes = p->sizes.memory_bytes;
    cfg.disk_bytes = p->sizes.disk_bytes;
    cfg.pids_max = p->sizes.pids_max;
    r = pe_runtime_create(&d->rt, &cfg, err);
    pe_sandbox_cfg_clear(&cfg);
    /* The template's egress policy before it first runs, as a create's. */
    policy = pe_daemon_netpolicy_default(base);
    if (r == 0 && ((policy != NULL && pe_runtime_egress_put(&d->rt, id, policy, NULL, err) < 0) ||
                   pe_runtime_start(&d->rt, id, err) < 0)) {
        remove_one(d, id);
        r = -1;
    }
    /* Its resolver and egress proxy, as a start's (a claim does not): their
     * threads get the default priority, not the filler's. */
    if (r == 0 && policy != NULL) {
        pid_t self = (pid_t)syscall(SYS_gettid);
        if (p->niced)
            setpriority(PRIO_PROCESS, (id_t)self, 0);
        pe_daemon_netpolicy_started(d, &(pe_store_sandbox){.id = id});
        if (p->niced)
            setpriority(PRIO_PROCESS, (id_t)self, 19);
    }
    json_decref(policy);
    if (r == 0)
        warm_up(d, id); /* before init_nice_0: at the filler's priority */
    if (r == 0 && p->niced && init_nice_0(d, id, err) < 0) {
        remove_one(d, id);
        r = -1;
    }
    if (r < 0) {
        free(id);
        return NULL;
    }
    pd = pe_xcalloc(1, sizeof(*pd));
    pd->id = id;
    pd->pidfd = init_pidfd(d, id, &running); /* a take then only polls it */
    ahead_of_claim(d, pd);
    return pd;
}

/* ---- the filler ---- */

static bool may_fill(const struct pool_base *b, double now)
{
    return b->n_ready < b->size && b->retry_at <= now &&
           (b->quiet_until <= now || 2 * b->n_ready < b->size);
}

static struct pool_base *to_fill(pe_daemon_pool *p, double now)
{
    for (size_t i = 0; i < p->n; i++)
        if (may_fill(&p->b[i], now))
            return &p->b[i];
    return NULL;
}

/* Seconds to wait for: the pressure check's period, or less when a quiet
 * time after a claim ends sooner. */
static double idle_wait(const pe_daemon_pool *p, double now)
{
    double wait = PRESSURE_S;

    for (size_t i = 0; i < p->n; i++) {
        const struct pool_base *b = &p->b[i];
        if (b->n_ready < b->size && b->quiet_until > now && b->quiet_until - now < wait)
            wait = b->quiet_until - now;
    }
    return wait;
}

static struct pool_base *fullest(pe_daemon_pool *p)
{
    struct pool_base *best = NULL;

    for (size_t i = 0; i < p->n; i++)
        if (p->b[i].n_ready > 0 && (best == NULL || p->b[i].n_ready > best->n_ready))
            best = &p->b[i];
    return best;
}

static void wait_a_while(pe_daemon_pool *p)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += (long)(idle_wait(p, pe_monotonic_s()) * 1e9) + 1000000; /* +1 ms: past it */
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&p->cv, &p->mu, &ts);
}

/* Called with p->mu held; returns with it held. */
static void fill_one(pe_daemon_pool *p, struct pool_base *b)
{
    cleanup_free char *base = pe_xstrdup(b->name);
    pe_daemon_pooled *pd;
    pe_err e;

    pthread_mutex_unlock(&p->mu);
    pe_err_clear(&e);
    pd = make_one(p, base, &e);
    pthread_mutex_lock(&p->mu);
    if (pd == NULL) {
        b->failed++;
        b->retry_at = pe_monotonic_s() + RETRY_S;
        pe_log_warn("pool: start a %s sandbox: %s (again in %.0f s)", base, e.msg, RETRY_S);
        return;
    }
    b->ready = pe_xrealloc(b->ready, (b->n_ready + 1) * sizeof(*b->ready));
    b->ready[b->n_ready++] = pd;
    b->made++;
}

/* Called with p->mu held; returns with it held. The newest goes first. */
static void shrink_one(pe_daemon_pool *p, struct pool_base *b, int64_t avail)
{
    pe_daemon_pooled *pd = b->ready[--b->n_ready];

    b->shrunk++;
    pthread_mutex_unlock(&p->mu);
    pe_log_info("event=pool_shrink base=%s sandbox=%s mem_available_mib=%lld", b->name, pd->id,
                (long long)avail);
    pe_daemon_pool_discard(p->d, pd);
    pthread_mutex_lock(&p->mu);
}

static void *filler(void *arg)
{
    pe_daemon_pool *p = arg;

    /* Nice 19 for this thread only (and what it clones until the init
     * gets 0 back): a refill is background work, and on a small host it
     * would otherwise take a CPU from the create and the first exec it
     * follows (bench/README.md). Only where the init's priority can be
     * raised again, i.e. with CAP_SYS_NICE. */
    p->niced = geteuid() == 0 && setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19) == 0;
    pthread_mutex_lock(&p->mu);
    while (!p->stop) {
        int64_t avail = mem_available_mib();
        struct pool_base *b;

        if (avail >= 0 && avail < p->min_mib && (b = fullest(p)) != NULL)
            shrink_one(p, b, avail);
        else if ((avail < 0 || avail >= p->min_mib) && (b = to_fill(p, pe_monotonic_s())) != NULL)
            fill_one(p, b);
        else
            wait_a_while(p);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int pe_daemon_pool_start(pe_daemon *d, const pe_daemon_pool_cfg *c, pe_err *err)
{
    pe_store_sandbox none = {.id = "pool"}; /* no sizes: the defaults */
    pe_daemon_pool *p;
    unsigned total = 0;
    int r;

    for (size_t i = 0; i < c->n; i++)
        total += c->size[i];
    if (total == 0)
        return 0; /* no pool: 0 or absent disables it */
    p = pe_xcalloc(1, sizeof(*p));
    p->d = d;
    pthread_mutex_init(&p->mu, NULL);
    {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&p->cv, &ca);
        pthread_condattr_destroy(&ca);
    }
    p->min_mib = c->min_available_mib ? c->min_available_mib - 1 : DEFAULT_MIN_AVAILABLE_MIB;
    pe_sandbox_cfg_init(&p->sizes);
    if (pe_daemon_limits_cfg(d, &none, &p->sizes, err) < 0) {
        free(p);
        return pe_err_prefix(err, "pool");
    }
    for (size_t i = 0; i < c->n; i++) {
        if (c->size[i] == 0)
            continue;
        p->b[p->n].name = pe_xstrdup(c->base[i]);
        p->b[p->n++].size = c->size[i];
        pe_log_info("event=pool base=%s size=%u min_available_mib=%lld", c->base[i], c->size[i],
                    (long long)p->min_mib);
    }
    r = pthread_create(&p->thread, NULL, filler, p);
    if (r != 0) {
        for (size_t i = 0; i < p->n; i++)
            free(p->b[i].name);
        free(p);
        return pe_err_set(err, PE_ESYS, r, "pool: start its thread");
    }
    d->pool = p;
    return 0;
}

void pe_daemon_pool_stop(pe_daemon *d)
{
    pe_daemon_pool *p = d->pool;

    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    d->pool = NULL;
    for (size_t i = 0; i < p->n; i++) {
        for (size_t k = 0; k < p->b[i].n_ready; k++) {
            pe_daemon_pool_discard(d, p->b[i].ready[k]);
        }
        free(p->b[i].ready);
        free(p->b[i].name);
    }
    pe_sandbox_cfg_clear(&p->sizes);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

/* ---- claims ---- */

/* Would a sandbox with these sizes run with the pool's limits? */
static bool same_sizes(pe_daemon_pool *p, const pe_store_sandbox *sizes)
{
    pe_sandbox_cfg c;
    pe_err e;
    bool same;

    pe_sandbox_cfg_init(&c);
    pe_err_clear(&e);
    same = pe_daemon_limits_cfg(p->d, sizes, &c, &e) == 0 && c.cpu_millis == p->sizes.cpu_millis &&
           c.memory_bytes == p->sizes.memory_bytes && c.disk_bytes == p->sizes.disk_bytes &&
           c.pids_max == p->sizes.pids_max;
    pe_sandbox_cfg_clear(&c);
    return same;
}

/* Is policy (a create's, parsed; JSON null: the open network) what base's
 * pooled sandboxes run with: its template's own (make_one), else none? */
static bool default_policy(const char *base, const json_t *policy)
{
    json_t *def = pe_daemon_netpolicy_default(base);
    bool open = policy == NULL || json_is_null(policy);
    bool same = def != NULL ? !open && json_equal(def, policy) : open;

    json_decref(def);
    return same;
}

/* Has the process of pidfd exited? (its pidfd turns readable) */
static bool exited(int pidfd)
{
    struct pollfd pf = {pidfd, POLLIN, 0};

    return poll(&pf, 1, 0) == 1;
}

pe_daemon_pooled *pe_daemon_pool_take(pe_daemon *d, const json_t *in, const pe_store_sandbox *sizes)
{
    pe_daemon_pool *p = d->pool;
    const char *base = json_string_value(json_object_get(in, "base"));
    const json_t *policy = json_object_get(in, "networkPolicy");
    pe_daemon_pooled *pd = NULL;
    bool running;

    if (p == NULL || base == NULL || !default_policy(base, policy) ||
        (sizes->backend && strcmp(sizes->backend, PE_BACKEND_LOCAL) != 0) || !same_sizes(p, sizes))
        return NULL;
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < p->n && pd == NULL; i++) {
        struct pool_base *b = &p->b[i];
        if (strcmp(b->name, base) != 0 || b->n_ready == 0)
            continue;
        pd = b->ready[0]; /* the oldest: it has settled */
        memmove(b->ready, b->ready + 1, --b->n_ready * sizeof(*b->ready));
        b->claimed++;
        b->quiet_until = pe_monotonic_s() + REFILL_QUIET_S;
        pthread_cond_signal(&p->cv); /* replace it (now, or after the quiet time) */
    }
    pthread_mutex_unlock(&p->mu);
    if (pd == NULL)
        return NULL;
    /* One that died in the pool (killed by hand, the OOM killer) is not
     * handed out: the create starts its own. The pidfd, opened as it was
     * made, is kept for the adopt. */
    if (pd->pidfd >= 0)
        running = !exited(pd->pidfd);
    else
        pd->pidfd = init_pidfd(d, pd->id, &running);
    if (!running) {
        pe_log_warn("pool: %s is not running any more: removed", pd->id);
        pe_daemon_pool_discard(d, pd);
        return NULL;
    }
    return pd;
}

int pe_daemon_pool_adopt(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb,
                         pe_daemon_pooled *pd, int *init_pidfd_out, pe_err *err)
{
    /* The pair placed ahead names the drawn name in its comment: it is the
     * default pair of a sandbox that got that name, and of no other. A
     * stored file may be written where the pair is (it is placed first,
     * and a start writes the pair over it): then the pair is made anew. */
    const pe_daemon_ssh_ahead *ssh =
        pd->ssh.pub && pd->name && strcmp(sb->name, pd->name) == 0 ? &pd->ssh : NULL;
    bool running;

    /* The template's service row (its image exists: the pool runs it). */
    if (pe_daemon_template_prepare(d, s, sb, err) < 0 ||
        pe_daemon_netpolicy_before_start(d, sb, err) < 0) /* a put since the insert */
        return -1;
    /* The init's pidfd opened at the take, unless it could not be. */
    if (pd->pidfd >= 0) {
        running = !exited(pd->pidfd);
        *init_pidfd_out = pe_steal_fd(&pd->pidfd);
    } else {
        *init_pidfd_out = init_pidfd(d, sb->id, &running);
    }
    if (!running)
        return pe_err_set(err, PE_ESTATE, 0, "pooled sandbox %s is not running", sb->id);
    if (pe_daemon_sandbox_place_files(d, sb) > 0)
        ssh = NULL;
    pe_daemon_sandbox_started_with(d, sb, ssh); /* keys, tailscale, services (not the policy) */
    return pe_daemon_template_ready(d, s, sb, err);
}

int pe_daemon_pool_claim(pe_daemon *d, pe_store *s, pe_daemon_pooled *pd, int *init_pidfd_out)
{
    const char *id = pd->id;
    pe_store_sandbox sb;
    pe_err e;
    int r;

    pe_err_clear(&e);
    if (pe_store_sandbox_get(s, id, &sb, &e) < 0) {
        pe_log_warn("pool: claim %s: %s", id, e.msg);
        pe_daemon_pool_discard(d, pd);
        return -1;
    }
    r = pe_daemon_pool_adopt(d, s, &sb, pd, init_pidfd_out, &e);
    if (r == 0)
        r = pe_store_sandbox_set_status(s, id, PE_STORE_RUNNING, NULL, PE_STORE_INITIALIZING, &e);
    if (r < 0) {
        pe_log_warn("pool: claim %s: %s; starting a fresh one", id, e.msg);
        pe_daemon_unit_stop_sandbox(id);
        if (*init_pidfd_out >= 0) {
            close(*init_pidfd_out);
            *init_pidfd_out = -1;
        }
        pe_store_sandbox_clear(&sb);
        pe_daemon_pool_discard(d, pd);
        return -1;
    }
    pe_log_info("event=pool_claim base=%s sandbox=%s", sb.base, id);
    pe_store_sandbox_clear(&sb);
    pe_daemon_pooled_free(pd);
    return 0;
}

void pe_daemon_pool_discard(pe_daemon *d, pe_daemon_pooled *pd)
{
    remove_one(d, pd->id);
    pe_daemon_pooled_free(pd);
}

void pe_daemon_pool_metrics(pe_daemon *d, FILE *out)
{
    pe_daemon_pool *p = d->pool;

    if (p == NULL)
        return;
    fputs("# HELP pocketenv_pool_ready Started sandboxes waiting in the warm pool, by base.\n"
          "# TYPE pocketenv_pool_ready gauge\n"
          "# HELP pocketenv_pool_size The warm pool's size the operator set, by base.\n"
          "# TYPE pocketenv_pool_size gauge\n"
          "# HELP pocketenv_pool_events_total Pooled sandboxes made, claimed, removed under "
          "memory pressure, and failed starts, by base.\n"
          "# TYPE pocketenv_pool_events_total counter\n",
          out);
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < p->n; i++) {
        const struct pool_base *b = &p->b[i];
        fprintf(out,
                "pocketenv_pool_ready{base=\"%s\"} %zu\n"
                "pocketenv_pool_size{base=\"%s\"} %u\n"
                "pocketenv_pool_events_total{base=\"%s\",event=\"made\"} %llu\n"
                "pocketenv_pool_events_total{base=\"%s\",event=\"claimed\"} %llu\n"
                "pocketenv_pool_events_total{base=\"%s\",event=\"shrunk\"} %llu\n"
                "pocketenv_pool_events_total{base=\"%s\",event=\"failed\"} %llu\n",
                b->name, b->n_ready, b->name, b->size, b->name, (unsigned long long)b->made,
                b->name, (unsigned long long)b->claimed, b->name, (unsigned long long)b->shrunk,
                b->name, (unsigned long long)b->failed);
    }
    pthread_mutex_unlock(&p->mu);
}
