/* Per-sandbox cgroups: backend detection, key checks and everything both
 * cgroup versions do the same way (attach, count, kill, remove, list).
 *
 * The backend is detected on every create/open/list (a few statfs calls)
 * instead of cached, so there is no global state and PE_CGROUP_ROOT may
 * differ between calls (tests). A pe_cgroup owns its strings only; it never
 * holds an fd, so it can be kept for the whole life of a sandbox.
 *
 * Several calls wait, bounded (freeze 5 s, kill 2 s, rmdir 1 s), with short
 * nanosleeps: call them from a worker, never from the event loop. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <linux/magic.h>

#include "core/fs.h"
#include "core/util.h"
#include "runtime/cgroup-internal.h"

#define KEY_MAX 100
#define DIR_PREFIX "pocketenv-"
/* Small knob files (memory.stat is the largest we read, ~2 KiB). */
#define KNOB_MAX (64 * 1024)

/* ---- small helpers shared with the backends ---------------------------- */

static void backoff(unsigned attempt)
{
    long us = 250L << (attempt < 6 ? attempt : 6);
    struct timespec ts = {0, (us > 10000 ? 10000 : us) * 1000};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

int pe__cgroup_poll(int (*cond)(pe_cgroup *cg, void *arg, pe_err *err), pe_cgroup *cg, void *arg,
                    int64_t timeout_ms, pe_err *err)
{
    int64_t deadline = pe_monotonic_ms() + timeout_ms;

    for (unsigned attempt = 0;; attempt++) {
        int r = cond(cg, arg, err);
        if (r != 0)
            return r;
        if (pe_monotonic_ms() >= deadline)
            return 0;
        backoff(attempt);
    }
}

int pe__cgroup_write(const char *dir, const char *file, const char *val, pe_err *err)
{
    cleanup_free char *path = pe_xasprintf("%s/%s", dir, file);
    cleanup_fd int fd = open(path, O_WRONLY | O_CLOEXEC);
    size_t len = strlen(val);
    ssize_t w;

    if (fd < 0) {
        int e = errno;
        pe_err_sys(err, "write %s to %s", val, path);
        return -e;
    }
    do
        w = write(fd, val, len);
    while (w < 0 && errno == EINTR);
    if (w < 0) {
        int e = errno;
        pe_err_sys(err, "write %s to %s", val, path);
        return -e;
    }
    if ((size_t)w != len) {
        pe_err_set(err, PE_ESYS, EIO, "write %s to %s: short write", val, path);
        return -EIO;
    }
    return 0;
}

int pe__cgroup_write_i64(const char *dir, const char *file, int64_t v, pe_err *err)
{
    char buf[32];

    snprintf(buf, sizeof(buf), "%" PRId64, v);
    return pe__cgroup_write(dir, file, buf, err);
}

int pe__cgroup_read(const char *dir, const char *file, char **out, pe_err *err)
{
    cleanup_free char *path = pe_xasprintf("%s/%s", dir, file);
    pe_err tmp;

    if (pe_fs_read_file(path, KNOB_MAX, out, NULL, &tmp) < 0) {
        if (err != NULL)
            *err = tmp;
        return tmp.errnum != 0 ? -tmp.errnum : -EIO;
    }
    return 0;
}

/* Parse a decimal integer from the slice [p, p+n); no sign but a leading
 * '-' (v1 writes -1 for "no limit"). */
static bool parse_i64(const char *p, size_t n, int64_t *out)
{
    bool neg = n > 0 && p[0] == '-';
    uint64_t v = 0;
    size_t i = neg ? 1 : 0;

    if (i == n)
        return false;
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        if (v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    if (v > (uint64_t)INT64_MAX)
        return false;
    *out = neg ? -(int64_t)v : (int64_t)v;
    return true;
}

static size_t trim_len(const char *s)
{
    size_t n = strlen(s);

    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' '))
        n--;
    return n;
}

int pe__cgroup_read_i64(const char *dir, const char *file, int64_t *out, pe_err *err)
{
    cleanup_free char *s = NULL;
    size_t n;
    int r = pe__cgroup_read(dir, file, &s, err);

    if (r < 0)
        return r;
    n = trim_len(s);
    if (n == 3 && memcmp(s, "max", 3) == 0) {
        *out = -1;
        return 0;
    }
    if (!parse_i64(s, n, out)) {
        pe_err_set(err, PE_ESYS, EINVAL, "parse %s/%s", dir, file);
        return -EINVAL;
    }
    return 0;
}

int pe__cgroup_read_keyed(const char *dir, const char *file, const char *key, int64_t *out,
                          pe_err *err)
{
    cleanup_free char *s = NULL;
    size_t klen = strlen(key);
    int r = pe__cgroup_read(dir, file, &s, err);

    if (r < 0)
        return r;
    for (const char *line = s; *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t n = end != NULL ? (size_t)(end - line) : strlen(line);

        if (n > klen + 1 && memcmp(line, key, klen) == 0 && line[klen] == ' ') {
            if (!parse_i64(line + klen + 1, n - klen - 1, out)) {
                pe_err_set(err, PE_ESYS, EINVAL, "parse %s in %s/%s", key, dir, file);
                return -EINVAL;
            }
            return 0;
        }
        line += n + (end != NULL ? 1 : 0);
    }
    pe_err_set(err, PE_ESYS, ENOENT, "no %s in %s/%s", key, dir, file);
    return -ENOENT;
}

bool pe__cgroup_has_word(const char *list, const char *word)
{
    size_t wlen = strlen(word);

    for (const char *p = list; *p != '\0';) {
        size_t n = strcspn(p, " \n");
        if (n == wlen && memcmp(p, word, n) == 0)
            return true;
        p += n;
        p += strspn(p, " \n");
    }
    return false;
}

bool pe__cgroup_is_fs(const char *path, int64_t magic)
{
    struct statfs sfs;

    return statfs(path, &sfs) == 0 && (int64_t)sfs.f_type == magic;
}

int pe__cgroup_mkdir(const char *path, bool *created, pe_err *err)
{
    *created = false;
    if (mkdir(path, 0755) == 0) {
        *created = true;
        return 0;
    }
    if (errno == EEXIST)
        return 0;
    {
        int e = errno;
        pe_err_sys(err, "mkdir %s", path);
        return -e;
    }
}

/* ---- keys and detection ------------------------------------------------ */

/* Keys become one path component: [A-Za-z0-9_.-], not starting with '.'
 * (so never "." or ".." and never hidden), at most KEY_MAX bytes. */
static bool key_valid(const char *key)
{
    size_t n = 0;

    if (key == NULL || key[0] == '\0' || key[0] == '.')
        return false;
    for (; key[n] != '\0'; n++) {
        char c = key[n];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == '-';
        if (!ok || n >= KEY_MAX)
            return false;
    }
    return true;
}

static int check_key(const char *key, pe_err *err)
{
    if (key_valid(key))
        return 0;
    return pe_err_set(err, PE_EINVAL, 0,
                      "invalid cgroup key \"%.*s\": use 1..%d of [A-Za-z0-9_.-], not starting "
                      "with '.'",
                      KEY_MAX, key != NULL ? key : "(null)", KEY_MAX);
}

/* Pick the backend for root: a cgroup2 mount is v2; a directory holding a v1
 * memory hierarchy is v1 (hybrid hosts included: the v1 controllers are the
 * ones that enforce there); a directory whose only cgroup is "unified" is v2
 * on that. *hroot gets the directory the backend works below. */
static const pe__cgroup_ops *detect(char **hroot, pe_err *err)
{
    const char *root = getenv("PE_CGROUP_ROOT");
    cleanup_free char *sub = NULL;
    const pe__cgroup_ops *ops = NULL;

    if (root == NULL || root[0] == '\0')
        root = "/sys/fs/cgroup";
    sub = pe_xasprintf("%s/memory", root);
    if (pe__cgroup_is_fs(root, CGROUP2_SUPER_MAGIC)) {
        ops = &pe__cgroup_v2_ops;
        *hroot = pe_xstrdup(root);
    } else if (pe__cgroup_is_fs(sub, CGROUP_SUPER_MAGIC)) {
        ops = &pe__cgroup_v1_ops;
        *hroot = pe_xstrdup(root);
    } else {
        free(sub);
        sub = pe_xasprintf("%s/unified", root);
        if (!pe__cgroup_is_fs(sub, CGROUP2_SUPER_MAGIC)) {
            pe_err_set(err, PE_EUNSUP, 0, "cgroup: no cgroup2 mount or v1 memory hierarchy at %s",
                       root);
            return NULL;
        }
        ops = &pe__cgroup_v2_ops;
        *hroot = pe_steal_ptr(&sub);
    }
    return ops;
}

static pe_cgroup *cg_new(const pe__cgroup_ops *ops, char *hroot, const char *key)
{
    pe_cgroup *cg = pe_xcalloc(1, sizeof(*cg));

    cg->ops = ops;
    cg->root = hroot;
    cg->key = pe_xstrdup(key);
    for (int i = 0; i < PE__CG_NCTL; i++)
        cg->ctl_dir[i] = -1;
    return cg;
}

/* Detect, validate and set up a cgroup object for key; with create the
 * directories are made. */
static int cg_setup(const char *key, bool create, unsigned skip, bool *existed, pe_cgroup **out,
                    pe_err *err)
{
    cleanup_free char *hroot = NULL;
    const pe__cgroup_ops *ops;
    pe_cgroup *cg;

    if (check_key(key, err) < 0)
        return -1;
    ops = detect(&hroot, err);
    if (ops == NULL)
        return -1;
    cg = cg_new(ops, pe_steal_ptr(&hroot), key);
    cg->skip = skip;
    if (ops->setup(cg, create, existed, err) < 0) {
        pe_cgroup_free(cg);
        return pe_err_prefix(err, "cgroup %s", ops->name);
    }
    *out = cg;
    return 0;
}

const char *pe_cgroup_backend_name(pe_err *err)
{
    cleanup_free char *hroot = NULL;
    cleanup_free char *main_root = NULL;
    const pe__cgroup_ops *ops = detect(&hroot, err);

    if (ops == NULL)
        return NULL;
    /* Where the "pocketenv" parent of the main hierarchy is made. */
    main_root = ops == &pe__cgroup_v1_ops ? pe_xasprintf("%s/memory", hroot) : pe_xstrdup(hroot);
    if (access(main_root, W_OK) < 0) {
        pe_err_set(err, PE_EUNSUP, errno, "cgroup %s: %s is not writable", ops->name, main_root);
        return NULL;
    }
    return ops->name;
}

/* ---- processes ----------------------------------------------------------- */

/* One line of cgroup.procs: [p, p+n). */
static int one_pid(const char *p, size_t n, void (*fn)(pid_t pid, void *arg), void *arg)
{
    int64_t pid;

    if (n == 0 || !parse_i64(p, n, &pid) || pid <= 0 || pid > INT32_MAX)
        return 0;
    if (fn != NULL)
        fn((pid_t)pid, arg);
    return 1;
}

/* Call fn for every pid in dir/cgroup.procs. The file is streamed in small
 * chunks, so a cgroup full of processes costs no unbounded buffer. Returns
 * the number of pids seen, or -errno. */
static int for_each_pid(const char *dir, void (*fn)(pid_t pid, void *arg), void *arg, pe_err *err)
{
    cleanup_free char *path = pe_xasprintf("%s/cgroup.procs", dir);
    cleanup_fd int fd = open(path, O_RDONLY | O_CLOEXEC);
    char buf[4096];
    size_t have = 0;
    int count = 0;

    if (fd < 0) {
        int e = errno;
        pe_err_sys(err, "open %s", path);
        return -e;
    }
    for (;;) {
        ssize_t r = read(fd, buf + have, sizeof(buf) - have);
        char *p = buf, *nl;
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            pe_err_sys(err, "read %s", path);
            return -e;
        }
        if (r == 0) /* a last line without '\n' */
            return count + one_pid(buf, have, fn, arg);
        have += (size_t)r;
        while ((nl = memchr(p, '\n', have - (size_t)(p - buf))) != NULL) {
            count += one_pid(p, (size_t)(nl - p), fn, arg);
            p = nl + 1;
        }
        have -= (size_t)(p - buf);
        memmove(buf, p, have);
        if (have == sizeof(buf)) {
            pe_err_set(err, PE_ESYS, EINVAL, "parse %s", path);
            return -EINVAL;
        }
    }
}

int pe_cgroup_attach(pe_cgroup *cg, pid_t pid, pe_err *err)
{
    for (size_t i = 0; i < cg->ndirs; i++) {
        if (pe__cgroup_write_i64(cg->dirs[i], "cgroup.procs", pid, err) < 0)
            return pe_err_prefix(err, "cgroup %s: attach pid %d", cg->ops->name, (int)pid);
    }
    return 0;
}

int pe_cgroup_count_procs(pe_cgroup *cg, pe_err *err)
{
    int n = for_each_pid(cg->dirs[0], NULL, NULL, err);

    if (n < 0)
        return pe_err_prefix(err, "cgroup %s", cg->ops->name);
    return n;
}

static void sigkill_pid(pid_t pid, void *arg)
{
    (void)arg;
    /* The pid was in cgroup.procs a moment ago. It may have exited and, in
     * the window since the read, been reused by an unrelated process; with
     * pid_max 32768+ and a window of microseconds that is accepted (as in
     * runc and crun). cgroup.kill on v2 has no such window. */
    kill(pid, SIGKILL);
}

/* SIGKILL every pid in every hierarchy; 1 if any was there, 0 if all are
 * empty. A missing directory counts as empty (destroy after a partial
 * create or a concurrent destroy). */
static int signal_all(pe_cgroup *cg, void *arg, pe_err *err)
{
    int seen = 0;

    (void)arg;
    for (size_t i = 0; i < cg->ndirs; i++) {
        int n = for_each_pid(cg->dirs[i], sigkill_pid, NULL, err);
        if (n == -ENOENT)
            continue;
        if (n < 0)
            return n;
        seen += n;
    }
    return seen > 0 ? 0 : 1;
}

/* Kill order: on v2 cgroup.kill does it atomically. Otherwise freeze first
 * when a freezer is there, so nothing can fork while we walk cgroup.procs,
 * signal everything, then thaw: on v1 a frozen task only acts on SIGKILL
 * once thawed, and with the signal already pending it dies before running
 * another user instruction. Then signal until empty, bounded, for whatever
 * slipped through (no freezer, or the freeze timed out). The cgroup is left
 * thawed so a leftover can be reused. */
static int kill_procs(pe_cgroup *cg, pe_err *err)
{
    bool freezer = cg->ctl_dir[PE__CG_FREEZER] >= 0;
    pe_err tmp;
    int r = cg->ops->kill_fast(cg, err);

    if (r < 0)
        return r;
    if (r == 0 && freezer)
        cg->ops->freeze(cg, true, PE__CGROUP_KILL_TIMEOUT_MS / 2, &tmp);
    r = signal_all(cg, NULL, err);
    if (r < 0)
        return r;
    if (freezer && cg->ops->freeze(cg, false, PE__CGROUP_FREEZE_TIMEOUT_MS, &tmp) < 0 &&
        tmp.errnum != ENOENT) {
        *err = tmp;
        return -1;
    }
    if (r == 1)
        return 0;
    r = pe__cgroup_poll(signal_all, cg, NULL, PE__CGROUP_KILL_TIMEOUT_MS, err);
    if (r < 0)
        return r;
    if (r == 0)
        return pe_err_set(err, PE_ESYS, ETIMEDOUT, "kill %s: processes left after %d ms",
                          cg->dirs[0], PE__CGROUP_KILL_TIMEOUT_MS);
    return 0;
}

int pe_cgroup_kill_all(pe_cgroup *cg, pe_err *err)
{
    struct stat st;

    if (stat(cg->dirs[0], &st) < 0)
        return pe_err_set(err, PE_ENOENT, errno, "cgroup %s: kill %s", cg->ops->name, cg->dirs[0]);
    if (kill_procs(cg, err) < 0)
        return pe_err_prefix(err, "cgroup %s", cg->ops->name);
    return 0;
}

/* ---- limits, freezing, stats --------------------------------------------- */

static int check_limits(const pe_cgroup_limits *lim, pe_err *err)
{
    /* 10 millicpus is the kernel's minimum quota (1 ms per 100 ms period);
     * the upper bound only keeps cpu_millis * 100 far from overflowing. */
    if (lim->memory_bytes < 0 || lim->cpu_millis < 0 || lim->pids_max < 0)
        return pe_err_set(err, PE_EINVAL, 0, "cgroup limits must not be negative");
    if (lim->cpu_millis != 0 && (lim->cpu_millis < 10 || lim->cpu_millis > 1000000000))
        return pe_err_set(err, PE_EINVAL, 0, "cpu limit %" PRId64 " millicpus out of range",
                          lim->cpu_millis);
    return 0;
}

int pe_cgroup_set_limits(pe_cgroup *cg, const pe_cgroup_limits *limits, pe_err *err)
{
    if (check_limits(limits, err) < 0)
        return -1;
    if (cg->ops->set_limits(cg, limits, err) < 0)
        return pe_err_prefix(err, "cgroup %s", cg->ops->name);
    return 0;
}

int pe_cgroup_freeze(pe_cgroup *cg, bool frozen, pe_err *err)
{
    if (cg->ctl_dir[PE__CG_FREEZER] < 0)
        return pe_err_set(err, PE_EUNSUP, 0, "cgroup %s: no freezer for %s", cg->ops->name,
                          cg->dirs[0]);
    if (cg->ops->freeze(cg, frozen, PE__CGROUP_FREEZE_TIMEOUT_MS, err) < 0)
        return pe_err_prefix(err, "cgroup %s", cg->ops->name);
    return 0;
}

int pe_cgroup_stats_read(pe_cgroup *cg, pe_cgroup_stats *st, pe_err *err)
{
    st->memory_current = -1;
    st->memory_max = -1;
    st->oom_kills = -1;
    st->pids_current = -1;
    st->cpu_usage_usec = -1;
    st->nr_throttled = -1;
    if (cg->ops->stats(cg, st, err) < 0)
        return pe_err_prefix(err, "cgroup %s", cg->ops->name);
    return 0;
}

void pe_cgroup_oom_read(pe_cgroup *cg, int64_t *kills, int64_t *limit)
{
    *kills = -1;
    *limit = -1;
    cg->ops->oom(cg, kills, limit);
}

/* ---- lifetime ------------------------------------------------------------ */

static int rmdir_done(pe_cgroup *cg, void *arg, pe_err *err)
{
    const char *dir = arg;

    (void)cg;
    if (rmdir(dir) == 0 || errno == ENOENT)
        return 1;
    /* EBUSY right after the kill: the last tasks are still exiting. */
    if (errno == EBUSY)
        return 0;
    return pe_err_sys(err, "rmdir %s", dir);
}

static int remove_dirs(pe_cgroup *cg, pe_err *err)
{
    for (size_t i = cg->ndirs; i-- > 0;) {
        int r = pe__cgroup_poll(rmdir_done, cg, cg->dirs[i], PE__CGROUP_RMDIR_TIMEOUT_MS, err);
        if (r < 0)
            return -1;
        if (r == 0)
            return pe_err_set(err, PE_ESYS, EBUSY, "rmdir %s", cg->dirs[i]);
    }
    return 0;
}

/* The common case, a sandbox whose processes are all gone: the directories
 * go at once, without freezing and signalling an empty cgroup. */
static bool remove_dirs_if_empty(pe_cgroup *cg)
{
    for (size_t i = cg->ndirs; i-- > 0;)
        if (rmdir(cg->dirs[i]) < 0 && errno != ENOENT)
            return false;
    return true;
}

int pe_cgroup_destroy(pe_cgroup *cg, pe_err *err)
{
    if (remove_dirs_if_empty(cg))
        return 0;
    if (kill_procs(cg, err) < 0 || remove_dirs(cg, err) < 0)
        return pe_err_prefix(err, "cgroup %s: destroy %s", cg->ops->name, cg->key);
    return 0;
}

static int create(const char *key, const pe_cgroup_limits *limits, unsigned skip, pe_cgroup **out,
                  pe_err *err)
{
    pe_cgroup *cg = NULL;
    bool existed = false;
    pe_err tmp;

    if (check_limits(limits, err) < 0)
        return -1;
    if (cg_setup(key, true, skip, &existed, &cg, err) < 0)
        return -1;
    /* A leftover from a crash may still hold processes, a freeze or limits
     * of its own: empty it; set_limits below rewrites every knob. */
    if (existed && kill_procs(cg, err) < 0)
        goto fail;
    /* A new cgroup starts unlimited: writing "unlimited" again costs ~6
     * kernfs writes on every sandbox start for nothing. */
    if ((existed || limits->memory_bytes || limits->cpu_millis || limits->pids_max) &&
        cg->ops->set_limits(cg, limits, err) < 0)
        goto fail;
    cg->fresh = false;
    *out = cg;
    return 0;
fail:
    pe_err_prefix(err, "cgroup %s", cg->ops->name);
    pe_cgroup_destroy(cg, &tmp);
    pe_cgroup_free(cg);
    return -1;
}

int pe_cgroup_create(const char *key, const pe_cgroup_limits *limits, pe_cgroup **out, pe_err *err)
{
    return create(key, limits, 0, out, err);
}

int pe_cgroup_create_lean(const char *key, const pe_cgroup_limits *limits, pe_cgroup **out,
                          pe_err *err)
{
    unsigned skip = 1u << PE__CG_CPUACCT | 1u << PE__CG_FREEZER;

    if (limits->cpu_millis == 0)
        skip |= 1u << PE__CG_CPU;
    return create(key, limits, skip, out, err);
}

int pe_cgroup_open(const char *key, pe_cgroup **out, pe_err *err)
{
    bool existed = false;
    pe_cgroup *cg = NULL;
    struct stat st;

    if (cg_setup(key, false, 0, &existed, &cg, err) < 0)
        return -1;
    if (stat(cg->dirs[0], &st) < 0) {
        pe_err_set(err, errno == ENOENT ? PE_ENOENT : PE_ESYS, errno, "cgroup %s: open %s",
                   cg->ops->name, cg->dirs[0]);
        pe_cgroup_free(cg);
        return -1;
    }
    *out = cg;
    return 0;
}

int pe_cgroup_destroy_key(const char *key, pe_err *err)
{
    pe_cgroup *cg = NULL;
    bool existed = false;
    int r;

    if (cg_setup(key, false, 0, &existed, &cg, err) < 0)
        return -1;
    r = pe_cgroup_destroy(cg, err);
    pe_cgroup_free(cg);
    return r;
}

int pe_cgroup_list_keys(void (*fn)(const char *key, void *arg), void *arg, pe_err *err)
{
    pe_cgroup *cg = NULL;
    cleanup_free char *parent = NULL;
    bool existed = false;
    struct dirent *de;
    DIR *d;

    /* Any valid key gives the paths; only its parent is read. */
    if (cg_setup("x", false, 0, &existed, &cg, err) < 0)
        return -1;
    parent = pe_xstrdup(cg->dirs[0]);
    *strrchr(parent, '/') = '\0';
    d = opendir(parent);
    if (d == NULL) {
        int e = errno;
        pe_err_set(err, PE_ESYS, e, "cgroup %s: list %s", cg->ops->name, parent);
        pe_cgroup_free(cg);
        return e == ENOENT ? 0 : -1;
    }
    pe_cgroup_free(cg);
    while ((de = readdir(d)) != NULL) {
        const char *key = de->d_name + strlen(DIR_PREFIX);
        if (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN)
            continue;
        if (strncmp(de->d_name, DIR_PREFIX, strlen(DIR_PREFIX)) != 0 || !key_valid(key))
            continue;
        fn(key, arg);
    }
    closedir(d);
    return 0;
}

const char *pe_cgroup_path(const pe_cgroup *cg)
{
    return cg->dirs[0];
}

const char *pe_cgroup_controller_path(const pe_cgroup *cg, const char *controller)
{
    static const char *const names[PE__CG_NCTL] = {
        [PE__CG_MEMORY] = "memory",   [PE__CG_PIDS] = "pids",       [PE__CG_CPU] = "cpu",
        [PE__CG_CPUACCT] = "cpuacct", [PE__CG_FREEZER] = "freezer",
    };

    for (int i = 0; i < PE__CG_NCTL; i++) {
        if (strcmp(names[i], controller) == 0)
            return cg->ctl_dir[i] >= 0 ? cg->dirs[cg->ctl_dir[i]] : NULL;
    }
    return NULL;
}

void pe_cgroup_free(pe_cgroup *cg)
{
    if (cg == NULL)
        return;
    for (size_t i = 0; i < cg->ndirs; i++)
        free(cg->dirs[i]);
    free(cg->key);
    free(cg->root);
    free(cg);
}
