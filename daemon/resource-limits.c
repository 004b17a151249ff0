/* Sandbox sizes and per-user quotas (daemon/resource-limits.h,
 * docs/design/resources.md).
 *
 * Sizes: createSandbox's vcpus, memory and disk (lexicon units: vCPUs and
 * GB) are checked against the operator's maximums before anything is
 * stored, and a row always records the sizes its sandbox runs with, so
 * getSandbox shows the limits in force. Turning them into the runtime's
 * bytes and millis happens here only, on values that are bounded first
 * (MAX_GB, MAX_VCPUS), with checked multiplication anyway.
 *
 * Quotas: what a user holds is read from the store (their rows, the sizes
 * recorded in them, their backups' archives) and the disk (those archives
 * and their /cp objects); starts in progress are kept here, since their
 * rows say STOPPED until the sandbox runs. One mutex covers each check and
 * the write it allows, so a user's concurrent requests on this daemon
 * cannot both take the last of a quota. Daemons sharing one PostgreSQL
 * store check independently: two creates on two daemons in the same
 * moment may overshoot by one sandbox.
 *
 * Threading: the flag functions run at start; the rest on worker threads
 * (the reservations have their own lock). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/log.h"
#include "core/util.h"
#include "resource-limits.h"
#include "pocketenv/store-usage.h"
#include "transfer.h"

#define GIB (1LL << 30)
#define MAX_GB (1LL << 20) /* 1 PiB: no flag or request goes past it */
#define MAX_VCPUS 4096LL
#define MIN_DISK_GB 3 /* the lexicon's minimum */

/* Whether the runtime holds a persistent sandbox to cfg.disk_bytes: it
 * does where its layers filesystem can be made (pe_runtime_disk_limits,
 * asked once at start). This is the one place that decides whether the
 * daemon passes the limit on; the sizes are checked, recorded and counted
 * against the user's disk quota either way. */
static bool runtime_limits_disk(const pe_daemon_limits *l)
{
    return l->disk_enforced;
}

/* ---- flags ---- */

void pe_daemon_limits_defaults(pe_daemon_limits *l)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);

    memset(l, 0, sizeof(*l));
    l->max_vcpus = cpus > 0 ? cpus : 1;
    l->default_vcpus = l->max_vcpus < 2 ? l->max_vcpus : 2; /* upstream's 2 */
    l->default_memory = 4;                                  /* upstream's 4 GB */
    l->max_memory = 16;
    l->default_disk = 10;
    l->max_disk = 100;
    l->pids = 1024;
    l->user_sandboxes = 10;
    l->user_snapshots = 20;
    l->user_memory = 32 * GIB;
    l->user_disk = 200 * GIB;
    l->user_jobs = 4;
    l->user_queue = 8;
    l->long_jobs = 64;
}

static int parse_count(const char *name, const char *arg, long long min, long long max,
                       long long *out, pe_err *err)
{
    char *end;

    errno = 0;
    *out = strtoll(arg, &end, 10);
    if (errno || end == arg || *end || *out < min || *out > max)
        return pe_err_set(err, PE_EINVAL, 0, "--%s: a whole number from %lld to %lld, not '%s'",
                          name, min, max, arg);
    return 0;
}

/* A size: "16g", "512m", or a bare number of GB as the API counts. */
static int parse_bytes(const char *name, const char *arg, long long *out, pe_err *err)
{
    bool bare = arg[0] != '\0' && strspn(arg, "0123456789") == strlen(arg);

    if (bare && parse_count(name, arg, 0, MAX_GB, out, err) == 0) {
        *out *= GIB; /* at most 2^50: no overflow */
        return 0;
    }
    if (!bare && pe_parse_size(arg, out) == 0 && *out <= MAX_GB * GIB)
        return 0;
    return pe_err_set(err, PE_EINVAL, 0,
                      "--%s: a size such as 16g or 512m (a bare number is GB), not '%s'", name,
                      arg);
}

/* A sandbox's size: whole GB from 1 to MAX_GB. */
static int parse_gb(const char *name, const char *arg, int64_t *out, pe_err *err)
{
    long long b;

    if (parse_bytes(name, arg, &b, err) < 0)
        return -1;
    if (b < GIB || b % GIB != 0)
        return pe_err_set(err, PE_EINVAL, 0, "--%s: whole GB, at least 1 (such as 4g), not '%s'",
                          name, arg);
    *out = b / GIB;
    return 0;
}

int pe_daemon_limits_flag(pe_daemon_limits *l, const char *name, const char *arg, pe_err *err)
{
    long long v = 0;
    int r;

    if (strcmp(name, "default-vcpus") == 0 || strcmp(name, "max-vcpus") == 0) {
        r = parse_count(name, arg, 1, MAX_VCPUS, &v, err);
        *(name[0] == 'd' ? &l->default_vcpus : &l->max_vcpus) = v;
        return r;
    }
    if (strcmp(name, "default-memory") == 0)
        return parse_gb(name, arg, &l->default_memory, err);
    if (strcmp(name, "max-memory") == 0)
        return parse_gb(name, arg, &l->max_memory, err);
    if (strcmp(name, "default-disk") == 0)
        return parse_gb(name, arg, &l->default_disk, err);
    if (strcmp(name, "max-disk") == 0)
        return parse_gb(name, arg, &l->max_disk, err);
    if (strcmp(name, "default-pids") == 0) {
        r = parse_count(name, arg, 0, 4194304, &v, err); /* the kernel's pid_max ceiling */
        l->pids = v;
        return r;
    }
    if (strcmp(name, "user-sandboxes") == 0) {
        r = parse_count(name, arg, 0, 1000000, &v, err);
        l->user_sandboxes = v;
        return r;
    }
    if (strcmp(name, "user-snapshots") == 0) {
        r = parse_count(name, arg, 1, 10000, &v, err);
        l->user_snapshots = v;
        return r;
    }
    if (strcmp(name, "user-memory") == 0 || strcmp(name, "user-disk") == 0) {
        r = parse_bytes(name, arg, &v, err);
        *(name[5] == 'm' ? &l->user_memory : &l->user_disk) = v;
        return r;
    }
    if (strcmp(name, "user-jobs") == 0 || strcmp(name, "long-jobs") == 0) {
        r = parse_count(name, arg, 1, 4096, &v, err);
        *(name[0] == 'u' ? &l->user_jobs : &l->long_jobs) = (unsigned)v;
        return r;
    }
    if (strcmp(name, "user-queue") == 0) {
        r = parse_count(name, arg, 0, 4096, &v, err);
        l->user_queue = (unsigned)v;
        return r;
    }
    return pe_err_set(err, PE_EINVAL, 0, "unknown limit --%s", name);
}

int pe_daemon_limits_check(const pe_daemon_limits *l, pe_err *err)
{
    if (l->default_vcpus > l->max_vcpus)
        return pe_err_set(err, PE_EINVAL, 0, "--default-vcpus %lld is above --max-vcpus %lld",
                          (long long)l->default_vcpus, (long long)l->max_vcpus);
    if (l->default_memory > l->max_memory)
        return pe_err_set(err, PE_EINVAL, 0, "--default-memory %lldg is above --max-memory %lldg",
                          (long long)l->default_memory, (long long)l->max_memory);
    if (l->max_disk < MIN_DISK_GB || l->default_disk < MIN_DISK_GB)
        return pe_err_set(err, PE_EINVAL, 0, "--default-disk and --max-disk: at least %dg",
                          MIN_DISK_GB);
    if (l->default_disk > l->max_disk)
        return pe_err_set(err, PE_EINVAL, 0, "--default-disk %lldg is above --max-disk %lldg",
                          (long long)l->default_disk, (long long)l->max_disk);
    return 0;
}

void pe_daemon_limits_log(const pe_daemon *d)
{
    const pe_daemon_limits *l = &d->lim;

    pe_log_info("event=limits vcpus=%lld/%lld memory_gb=%lld/%lld disk_gb=%lld/%lld "
                "disk_enforced=%s pids=%lld user_sandboxes=%lld user_memory=%lld "
                "user_disk=%lld user_jobs=%u user_queue=%u long_jobs=%u",
                (long long)l->default_vcpus, (long long)l->max_vcpus, (long long)l->default_memory,
                (long long)l->max_memory, (long long)l->default_disk, (long long)l->max_disk,
                runtime_limits_disk(&d->lim) ? "yes" : "no", (long long)l->pids,
                (long long)l->user_sandboxes, (long long)l->user_memory, (long long)l->user_disk,
                l->user_jobs, l->user_queue, l->long_jobs);
}

/* ---- a sandbox's sizes ---- */

static int request_one(const json_t *in, const char *key, int64_t min, int64_t max, int64_t def,
                       const char *unit, int64_t *out, pe_err *err)
{
    const json_t *v = json_object_get(in, key);
    json_int_t x;

    if (v == NULL || json_is_null(v)) {
        *out = def;
        return 0;
    }
    x = json_is_integer(v) ? json_integer_value(v) : min - 1;
    if (x < min || x > max)
        return pe_err_set(err, PE_EINVAL, 0,
                          "%s must be a whole number from %lld to %lld%s (the most this daemon "
                          "allows a sandbox is %lld)",
                          key, (long long)min, (long long)max, unit, (long long)max);
    *out = x;
    return 0;
}

int pe_daemon_limits_request(const pe_daemon_limits *l, const json_t *in, pe_store_sandbox *sb,
                             pe_err *err)
{
    if (request_one(in, "vcpus", 1, l->max_vcpus, l->default_vcpus, "", &sb->vcpus, err) < 0 ||
        request_one(in, "memory", 1, l->max_memory, l->default_memory, " (GB)", &sb->memory, err) <
            0 ||
        request_one(in, "disk", MIN_DISK_GB, l->max_disk, l->default_disk, " (GB)", &sb->disk,
                    err) < 0)
        return -1;
    return 0;
}

/* A recorded size within [1, max]: unset is the default; above today's
 * maximum (the operator lowered it since) is cut to it. */
static int64_t bounded(const char *what, const char *id, int64_t v, int64_t def, int64_t max)
{
    if (v <= 0)
        return def;
    if (v > max) {
        pe_log_warn("sandbox %s: %s %lld is above this daemon's maximum, %lld: using that", id,
                    what, (long long)v, (long long)max);
        return max;
    }
    return v;
}

int pe_daemon_limits_cfg(const pe_daemon *d, const pe_store_sandbox *sb, pe_sandbox_cfg *cfg,
                         pe_err *err)
{
    const pe_daemon_limits *l = &d->lim;
    int64_t vcpus = bounded("vcpus", sb->id, sb->vcpus, l->default_vcpus, l->max_vcpus);
    int64_t memory = bounded("memory", sb->id, sb->memory, l->default_memory, l->max_memory);
    int64_t disk = bounded("disk", sb->id, sb->disk, l->default_disk, l->max_disk);

    if (__builtin_mul_overflow(vcpus, (int64_t)1000, &cfg->cpu_millis) ||
        __builtin_mul_overflow(memory, (int64_t)GIB, &cfg->memory_bytes))
        return pe_err_set(err, PE_EINVAL, 0, "sandbox %s: sizes out of range", sb->id);
    cfg->pids_max = l->pids;
    if (runtime_limits_disk(l) && __builtin_mul_overflow(disk, (int64_t)GIB, &cfg->disk_bytes))
        return pe_err_set(err, PE_EINVAL, 0, "sandbox %s: disk out of range", sb->id);
    return 0;
}

void pe_daemon_oom_note(int64_t limit, char *out, size_t len)
{
    char size[32];

    if (limit <= 0) {
        snprintf(out, len,
                 "pocketenv: out of memory: the kernel's OOM killer killed the "
                 "command\n");
        return;
    }
    pe_runtime_size_text(limit, size, sizeof(size));
    snprintf(out, len,
             "pocketenv: out of memory: the kernel's OOM killer killed the command at the "
             "sandbox's memory limit of %s\n",
             size);
}

/* ---- quotas ---- */

static pthread_mutex_t quota_mu = PTHREAD_MUTEX_INITIALIZER;

/* Starts in progress: memory that counts as running though the row does
 * not say so yet. Guarded by quota_mu. */
struct starting {
    char *id, *owner;
    int64_t memory; /* GB */
    struct starting *next;
};
static struct starting *starts;

void pe_daemon_quota_lock(void)
{
    pthread_mutex_lock(&quota_mu);
}

void pe_daemon_quota_unlock(void)
{
    pthread_mutex_unlock(&quota_mu);
}

/* The daemon's owner runs the machine: quotas share it among the users the
 * owner let in, and the owner can change any flag anyway. */
bool pe_daemon_quota_applies(const pe_daemon *d, const char *did)
{
    const char *owner = d->auth ? pe_auth_owner_did(d->auth) : NULL;

    return did && !(owner && strcmp(owner, did) == 0);
}

/* "32 GB", "3073 MB", "3.50 GB", "700 KB": for messages. */
static void human(int64_t bytes, char *out, size_t size)
{
    if (bytes >= GIB && bytes % GIB == 0)
        snprintf(out, size, "%lld GB", (long long)(bytes / GIB));
    else if (bytes >= (1 << 20) && bytes % (1 << 20) == 0)
        snprintf(out, size, "%lld MB", (long long)(bytes >> 20));
    else if (bytes >= GIB)
        snprintf(out, size, "%.2f GB", (double)bytes / (double)GIB);
    else if (bytes >= (1 << 20))
        snprintf(out, size, "%.1f MB", (double)bytes / (double)(1 << 20));
    else
        snprintf(out, size, "%lld KB", (long long)((bytes + 1023) / 1024));
}

static int refuse(pe_err *err, const char *what, int64_t used, int64_t more, int64_t quota,
                  const char *hint)
{
    char u[32], m[32], q[32];

    human(used, u, sizeof(u));
    human(more, m, sizeof(m));
    human(quota, q, sizeof(q));
    return pe_err_set(err, PE_XRPC_EFORBIDDEN, 0,
                      "quota exceeded: %s is %s per user; you use %s of %s and this needs %s "
                      "more: %s",
                      what, q, u, q, m, hint);
}

static int64_t starting_memory(const char *owner, const char *except_id)
{
    int64_t gb = 0;

    for (struct starting *st = starts; st; st = st->next)
        if (strcmp(st->owner, owner) == 0 && strcmp(st->id, except_id ? except_id : "") != 0)
            gb += st->memory;
    return gb;
}

/* Bytes of a user's backups' archives and /cp objects on disk. */
static int files_usage(pe_daemon *d, pe_store *s, const char *did, int64_t *bytes, pe_err *err)
{
    char **names = NULL;
    size_t n = 0;

    *bytes = pe_daemon_copy_usage(d, did);
    if (pe_store_user_backup_archives(s, did, &names, &n, err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        cleanup_free char *path = pe_xasprintf("%s/backups/%s", d->rt.data_dir, names[i]);
        struct stat st;

        if (strchr(names[i], '/') == NULL && lstat(path, &st) == 0 && S_ISREG(st.st_mode))
            *bytes += st.st_size;
    }
    pe_store_names_free(names, n);
    return 0;
}

static int usage(pe_daemon *d, pe_store *s, const char *did, const char *except_id,
                 pe_store_usage *u, pe_err *err)
{
    if (pe_store_user_usage(s, did, d->lim.default_memory, d->lim.default_disk, except_id, u, err) <
        0)
        return -1;
    u->memory += starting_memory(did, except_id);
    return 0;
}

static int check_memory(pe_daemon *d, int64_t used_gb, int64_t more_gb, pe_err *err)
{
    int64_t q = d->lim.user_memory;

    if (q == 0 || (used_gb + more_gb) * GIB <= q)
        return 0;
    return refuse(err, "memory of running sandboxes", used_gb * GIB, more_gb * GIB, q,
                  "stop one of your sandboxes, or ask for less memory");
}

static int check_disk(pe_daemon *d, pe_store *s, const char *did, int64_t sandbox_gb, int64_t more,
                      pe_err *err)
{
    int64_t files = 0, q = d->lim.user_disk, used;

    if (q == 0)
        return 0;
    if (files_usage(d, s, did, &files, err) < 0)
        return -1;
    used = sandbox_gb * GIB + files;
    if (used + more <= q)
        return 0;
    return refuse(err, "disk (your sandboxes' disk sizes, backups and copies)", used, more, q,
                  "delete a sandbox or a backup, or ask for less disk");
}

int pe_daemon_quota_new_sandbox(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb, pe_err *err)
{
    const pe_daemon_limits *l = &d->lim;
    pe_store_usage u;

    if (!pe_daemon_quota_applies(d, sb->owner_did))
        return 0;
    if (usage(d, s, sb->owner_did, NULL, &u, err) < 0)
        return -1;
    if (l->user_sandboxes && u.sandboxes >= l->user_sandboxes)
        return pe_err_set(err, PE_XRPC_EFORBIDDEN, 0,
                          "quota exceeded: at most %lld sandboxes per user, and you have %lld of "
                          "%lld: delete one first",
                          (long long)l->user_sandboxes, (long long)u.sandboxes,
                          (long long)l->user_sandboxes);
    if (check_memory(d, u.memory, sb->memory, err) < 0)
        return -1;
    return check_disk(d, s, sb->owner_did, u.disk, sb->disk * GIB, err);
}

int pe_daemon_quota_start(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb, pe_err *err)
{
    int64_t memory = sb->memory > 0 ? sb->memory : d->lim.default_memory;
    struct starting *st;
    pe_store_usage u;

    if (!pe_daemon_quota_applies(d, sb->owner_did))
        return 0;
    if (usage(d, s, sb->owner_did, sb->id, &u, err) < 0 ||
        check_memory(d, u.memory, memory, err) < 0)
        return -1;
    st = pe_xcalloc(1, sizeof(*st));
    st->id = pe_xstrdup(sb->id);
    st->owner = pe_xstrdup(sb->owner_did);
    st->memory = memory;
    st->next = starts;
    starts = st;
    return 0;
}

void pe_daemon_quota_started(const pe_store_sandbox *sb)
{
    pe_daemon_quota_lock();
    for (struct starting **pp = &starts; *pp; pp = &(*pp)->next) {
        struct starting *st = *pp;
        if (strcmp(st->id, sb->id) == 0) {
            *pp = st->next;
            free(st->id);
            free(st->owner);
            free(st);
            break;
        }
    }
    pe_daemon_quota_unlock();
}

int pe_daemon_quota_disk(pe_daemon *d, pe_store *s, const char *did, int64_t more, pe_err *err)
{
    pe_store_usage u;

    if (!pe_daemon_quota_applies(d, did))
        return 0;
    if (pe_store_user_usage(s, did, d->lim.default_memory, d->lim.default_disk, NULL, &u, err) < 0)
        return -1;
    return check_disk(d, s, did, u.disk, more, err);
}
