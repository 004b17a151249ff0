/* cgroup v1 backend: one directory per controller hierarchy.
 *
 * Layout: <root>/<controller>/pocketenv/pocketenv-<key> for memory (the
 * "main" hierarchy, required), pids, cpu, cpuacct and freezer (each used
 * when mounted). The "pocketenv" parent sits at the root of each hierarchy,
 * not below our own cgroup: a daemon started inside a limited memory cgroup
 * must not pass that limit on to every sandbox. Controllers mounted
 * together ("cpu,cpuacct") share one directory; it is made once.
 *
 * Hybrid hosts (v1 controllers plus a controller-less cgroup2 at
 * <root>/unified) use this backend too: only the v1 hierarchies enforce
 * anything there. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/magic.h>

#include "core/util.h"
#include "runtime/cgroup-internal.h"

static const char *const hier_names[PE__CG_NCTL] = {
    [PE__CG_MEMORY] = "memory",   [PE__CG_PIDS] = "pids",       [PE__CG_CPU] = "cpu",
    [PE__CG_CPUACCT] = "cpuacct", [PE__CG_FREEZER] = "freezer",
};

/* memory.limit_in_bytes reads back PAGE_COUNTER_MAX pages when unlimited
 * (9223372036854771712 with 4 KiB pages); anything this large is "none". */
#define V1_UNLIMITED_MIN (INT64_C(1) << 62)
#define CFS_PERIOD_US 100000

/* Add the cgroup dir for hierarchy i; with create make it (and the parent).
 * Hierarchies that are not mounted are skipped; one already added under
 * another name (same mount) is shared. */
static int add_hierarchy(pe_cgroup *cg, int i, bool create, bool *created, dev_t *devs, pe_err *err)
{
    cleanup_free char *hroot = pe_xasprintf("%s/%s", cg->root, hier_names[i]);
    cleanup_free char *parent = NULL;
    bool made_parent;
    struct stat st;
    int r;

    *created = false;
    if (!pe__cgroup_is_fs(hroot, CGROUP_SUPER_MAGIC) || stat(hroot, &st) < 0) {
        if (i == PE__CG_MEMORY)
            return pe_err_set(err, PE_EUNSUP, 0, "no memory hierarchy at %s", hroot);
        return 0;
    }
    for (size_t j = 0; j < cg->ndirs; j++) {
        if (devs[j] == st.st_dev) {
            cg->ctl_dir[i] = (int)j;
            return 0;
        }
    }
    parent = pe_xasprintf("%s/pocketenv", hroot);
    cg->dirs[cg->ndirs] = pe_xasprintf("%s/pocketenv-%s", parent, cg->key);
    if (create) {
        r = pe__cgroup_mkdir(parent, &made_parent, err);
        if (r == 0)
            r = pe__cgroup_mkdir(cg->dirs[cg->ndirs], created, err);
        if (r < 0) {
            free(cg->dirs[cg->ndirs]);
            cg->dirs[cg->ndirs] = NULL;
            return -1;
        }
    }
    devs[cg->ndirs] = st.st_dev;
    cg->ctl_dir[i] = (int)cg->ndirs++;
    return 0;
}

static int v1_setup(pe_cgroup *cg, bool create, bool *existed, pe_err *err)
{
    dev_t devs[PE__CGROUP_MAX_DIRS];
    bool created[PE__CGROUP_MAX_DIRS] = {false};

    /* PE__CG_MEMORY is 0, so the main hierarchy becomes dirs[0]. */
    for (int i = 0; i < PE__CG_NCTL; i++) {
        size_t before = cg->ndirs;
        bool made = false;

        if (i != PE__CG_MEMORY && (cg->skip & (1u << i)))
            continue;
        if (add_hierarchy(cg, i, create, &made, devs, err) < 0)
            goto rollback;
        if (cg->ndirs > before)
            created[before] = made;
        if (i == PE__CG_MEMORY)
            *existed = !made;
    }
    /* fresh only if no hierarchy's dir was there before (a leftover in
     * any of them may carry a limit of its own) */
    cg->fresh = create;
    for (size_t j = 0; j < cg->ndirs; j++)
        cg->fresh = cg->fresh && created[j];
    return 0;
rollback:
    /* Remove only what this call made; a leftover is not ours to drop here. */
    for (size_t j = 0; j < cg->ndirs; j++) {
        if (created[j])
            rmdir(cg->dirs[j]);
    }
    return -1;
}

static int set_memory(pe_cgroup *cg, int64_t bytes, pe_err *err)
{
    const char *dir = cg->dirs[cg->ctl_dir[PE__CG_MEMORY]];
    int64_t v = bytes > 0 ? bytes : -1;
    pe_err tmp;
    int r;

    /* The kernel keeps memsw >= limit, so when raising, memsw must move
     * first and when lowering, last: try it before (errors ignored) and
     * after (the write that counts). */
    pe__cgroup_write_i64(dir, "memory.memsw.limit_in_bytes", v, &tmp);
    if (pe__cgroup_write_i64(dir, "memory.limit_in_bytes", v, err) < 0)
        return -1;
    r = pe__cgroup_write_i64(dir, "memory.memsw.limit_in_bytes", v, err);
    if (r == -EINVAL || r == -ENOENT || r == -EOPNOTSUPP) {
        /* No swap accounting (as on our CI hosts): memsw cannot cap swap, so
         * at least keep limit reclaim from swapping this cgroup out. */
        if (bytes > 0)
            pe__cgroup_write(dir, "memory.swappiness", "0", &tmp);
        return 0;
    }
    return r < 0 ? -1 : 0;
}

static int set_cpu(pe_cgroup *cg, int64_t millis, pe_err *err)
{
    const char *dir;

    if (cg->ctl_dir[PE__CG_CPU] < 0) {
        if (millis == 0)
            return 0;
        return pe_err_set(err, PE_EUNSUP, 0, "cpu limit requested but no cpu hierarchy under %s",
                          cg->root);
    }
    dir = cg->dirs[cg->ctl_dir[PE__CG_CPU]];
    if (pe__cgroup_write_i64(dir, "cpu.cfs_period_us", CFS_PERIOD_US, err) < 0)
        return -1;
    /* cpu_millis / 1000 CPUs = quota / period, so quota = millis * 100. */
    if (pe__cgroup_write_i64(dir, "cpu.cfs_quota_us", millis > 0 ? millis * 100 : -1, err) < 0)
        return -1;
    return 0;
}

static int set_pids(pe_cgroup *cg, int64_t max, pe_err *err)
{
    const char *dir;

    if (cg->ctl_dir[PE__CG_PIDS] < 0) {
        if (max == 0)
            return 0;
        return pe_err_set(err, PE_EUNSUP, 0, "pids limit requested but no pids hierarchy under %s",
                          cg->root);
    }
    dir = cg->dirs[cg->ctl_dir[PE__CG_PIDS]];
    if (max == 0)
        return pe__cgroup_write(dir, "pids.max", "max", err) < 0 ? -1 : 0;
    return pe__cgroup_write_i64(dir, "pids.max", max, err) < 0 ? -1 : 0;
}

static int v1_set_limits(pe_cgroup *cg, const pe_cgroup_limits *lim, pe_err *err)
{
    /* On a fresh cgroup "unlimited" is already there: the pids default alone
     * would otherwise cost three memory and two cpu knob writes per start. */
    if (!(cg->fresh && lim->memory_bytes == 0) && set_memory(cg, lim->memory_bytes, err) < 0)
        return -1;
    if (!(cg->fresh && lim->cpu_millis == 0) && set_cpu(cg, lim->cpu_millis, err) < 0)
        return -1;
    if (set_pids(cg, lim->pids_max, err) < 0)
        return -1;
    return 0;
}

static int state_reached(pe_cgroup *cg, void *arg, pe_err *err)
{
    cleanup_free char *s = NULL;
    const char *want = arg;
    size_t n;
    int r = pe__cgroup_read(cg->dirs[cg->ctl_dir[PE__CG_FREEZER]], "freezer.state", &s, err);

    if (r < 0)
        return r;
    n = strcspn(s, "\n");
    return n == strlen(want) && memcmp(s, want, n) == 0;
}

/* Writing FROZEN only starts the freeze: the state reads FREEZING until every
 * task has stopped, which a task in uninterruptible sleep can delay. */
static int v1_freeze(pe_cgroup *cg, bool frozen, int64_t timeout_ms, pe_err *err)
{
    const char *dir = cg->dirs[cg->ctl_dir[PE__CG_FREEZER]];
    const char *want = frozen ? "FROZEN" : "THAWED";
    pe_err tmp;
    int r;

    if (pe__cgroup_write(dir, "freezer.state", want, err) < 0)
        return -1;
    r = pe__cgroup_poll(state_reached, cg, (void *)want, timeout_ms, err);
    if (r < 0)
        return -1;
    if (r == 0) {
        if (frozen)
            pe__cgroup_write(dir, "freezer.state", "THAWED", &tmp);
        return pe_err_set(err, PE_ESYS, ETIMEDOUT, "freeze %s: not %s after %lld ms", dir, want,
                          (long long)timeout_ms);
    }
    return 0;
}

static int v1_kill_fast(pe_cgroup *cg, pe_err *err)
{
    return 0;
}

/* Optional statistic: a missing file or key leaves *out at -1. */
static void stat_opt(pe_cgroup *cg, int ctl, const char *file, const char *key, int64_t *out)
{
    int64_t v;
    int r;

    if (cg->ctl_dir[ctl] < 0)
        return;
    if (key != NULL)
        r = pe__cgroup_read_keyed(cg->dirs[cg->ctl_dir[ctl]], file, key, &v, NULL);
    else
        r = pe__cgroup_read_i64(cg->dirs[cg->ctl_dir[ctl]], file, &v, NULL);
    if (r == 0)
        *out = v;
}

static int v1_stats(pe_cgroup *cg, pe_cgroup_stats *st, pe_err *err)
{
    const char *mem = cg->dirs[cg->ctl_dir[PE__CG_MEMORY]];

    if (pe__cgroup_read_i64(mem, "memory.usage_in_bytes", &st->memory_current, err) < 0)
        return -1;
    stat_opt(cg, PE__CG_MEMORY, "memory.limit_in_bytes", NULL, &st->memory_max);
    if (st->memory_max >= V1_UNLIMITED_MIN)
        st->memory_max = -1;
    stat_opt(cg, PE__CG_MEMORY, "memory.oom_control", "oom_kill", &st->oom_kills);
    stat_opt(cg, PE__CG_PIDS, "pids.current", NULL, &st->pids_current);
    stat_opt(cg, PE__CG_CPUACCT, "cpuacct.usage", NULL, &st->cpu_usage_usec);
    if (st->cpu_usage_usec > 0)
        st->cpu_usage_usec /= 1000; /* ns */
    stat_opt(cg, PE__CG_CPU, "cpu.stat", "nr_throttled", &st->nr_throttled);
    return 0;
}

static void v1_oom(pe_cgroup *cg, int64_t *kills, int64_t *limit)
{
    stat_opt(cg, PE__CG_MEMORY, "memory.limit_in_bytes", NULL, limit);
    if (*limit >= V1_UNLIMITED_MIN)
        *limit = -1;
    stat_opt(cg, PE__CG_MEMORY, "memory.oom_control", "oom_kill", kills);
}

const pe__cgroup_ops pe__cgroup_v1_ops = {
    .name = "v1",
    .setup = v1_setup,
    .set_limits = v1_set_limits,
    .freeze = v1_freeze,
    .kill_fast = v1_kill_fast,
    .stats = v1_stats,
    .oom = v1_oom,
};
