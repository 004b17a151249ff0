/* cgroup v2 backend: one unified hierarchy.
 *
 * Layout: <root>/pocketenv/pocketenv-<key>. The "pocketenv" parent only
 * ever holds child cgroups (v2's no-internal-processes rule), and memory,
 * pids and cpu are enabled in its and the root's cgroup.subtree_control when
 * the kernel offers them. A controller can be missing (bound to v1 on a
 * hybrid host, or not delegated): the cgroup still works for attach, freeze
 * and kill, and only a non-zero limit for that controller is an error
 * (PE_EUNSUP). The child's own cgroup.controllers is the truth about what
 * is enabled, so failed enable writes are not errors by themselves. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/util.h"
#include "runtime/cgroup-internal.h"

#define CFS_PERIOD_US 100000

static const char *const ctl_names[] = {
    [PE__CG_MEMORY] = "memory",
    [PE__CG_PIDS] = "pids",
    [PE__CG_CPU] = "cpu",
};

/* Enable our controllers for the children of dir where available and not
 * yet on. One write per controller, so one refusal does not block the rest. */
static void enable_controllers(const char *dir)
{
    cleanup_free char *avail = NULL;
    cleanup_free char *on = NULL;

    if (pe__cgroup_read(dir, "cgroup.controllers", &avail, NULL) < 0 ||
        pe__cgroup_read(dir, "cgroup.subtree_control", &on, NULL) < 0)
        return;
    for (size_t i = 0; i < PE_ARRAY_LEN(ctl_names); i++) {
        char buf[32];
        if (!pe__cgroup_has_word(avail, ctl_names[i]) || pe__cgroup_has_word(on, ctl_names[i]))
            continue;
        snprintf(buf, sizeof(buf), "+%s", ctl_names[i]);
        pe__cgroup_write(dir, "cgroup.subtree_control", buf, NULL);
    }
}

static bool has_file(const char *dir, const char *file)
{
    cleanup_free char *path = pe_xasprintf("%s/%s", dir, file);

    return access(path, F_OK) == 0;
}

static int v2_setup(pe_cgroup *cg, bool create, bool *existed, pe_err *err)
{
    cleanup_free char *parent = pe_xasprintf("%s/pocketenv", cg->root);
    cleanup_free char *ctls = NULL;
    const char *dir;
    bool made = false;

    cg->dirs[0] = pe_xasprintf("%s/pocketenv-%s", parent, cg->key);
    cg->ndirs = 1;
    dir = cg->dirs[0];
    if (create) {
        if (pe__cgroup_mkdir(parent, &made, err) < 0)
            return -1;
        enable_controllers(cg->root);
        enable_controllers(parent);
        if (pe__cgroup_mkdir(dir, &made, err) < 0)
            return -1;
        *existed = !made;
    }
    /* A missing cgroup (open of a stale key, destroy_key) keeps every
     * controller off; the caller decides whether that is an error. */
    if (pe__cgroup_read(dir, "cgroup.controllers", &ctls, NULL) == 0) {
        for (size_t i = 0; i < PE_ARRAY_LEN(ctl_names); i++) {
            if (pe__cgroup_has_word(ctls, ctl_names[i]))
                cg->ctl_dir[i] = 0;
        }
    }
    /* cpu.stat (usage_usec) and cgroup.freeze are core files (5.2+). */
    if (has_file(dir, "cpu.stat"))
        cg->ctl_dir[PE__CG_CPUACCT] = 0;
    if (has_file(dir, "cgroup.freeze"))
        cg->ctl_dir[PE__CG_FREEZER] = 0;
    cg->has_kill = has_file(dir, "cgroup.kill"); /* 5.14+ */
    return 0;
}

static int need(pe_cgroup *cg, int ctl, int64_t v, pe_err *err)
{
    if (cg->ctl_dir[ctl] >= 0)
        return 1;
    if (v == 0)
        return 0;
    return pe_err_set(err, PE_EUNSUP, 0,
                      "%s limit requested but the %s controller is not enabled in %s "
                      "(see cgroup.controllers under %s)",
                      ctl_names[ctl], ctl_names[ctl], cg->dirs[0], cg->root);
}

static int write_max(const char *dir, const char *file, int64_t v, pe_err *err)
{
    if (v == 0)
        return pe__cgroup_write(dir, file, "max", err);
    return pe__cgroup_write_i64(dir, file, v, err);
}

static int v2_set_limits(pe_cgroup *cg, const pe_cgroup_limits *lim, pe_err *err)
{
    const char *dir = cg->dirs[0];
    char buf[64];
    int r;

    if ((r = need(cg, PE__CG_MEMORY, lim->memory_bytes, err)) < 0)
        return -1;
    if (r > 0) {
        if (write_max(dir, "memory.max", lim->memory_bytes, err) < 0)
            return -1;
        /* No swap above the hard limit. memory.swap.max is absent without
         * swap accounting (CONFIG_MEMCG_SWAP / swapaccount=0). */
        r = pe__cgroup_write(dir, "memory.swap.max", lim->memory_bytes > 0 ? "0" : "max", err);
        if (r < 0 && r != -ENOENT)
            return -1;
    }
    if ((r = need(cg, PE__CG_CPU, lim->cpu_millis, err)) < 0)
        return -1;
    if (r > 0) {
        if (lim->cpu_millis > 0)
            snprintf(buf, sizeof(buf), "%lld %d", (long long)lim->cpu_millis * 100, CFS_PERIOD_US);
        else
            snprintf(buf, sizeof(buf), "max %d", CFS_PERIOD_US);
        if (pe__cgroup_write(dir, "cpu.max", buf, err) < 0)
            return -1;
    }
    if ((r = need(cg, PE__CG_PIDS, lim->pids_max, err)) < 0)
        return -1;
    if (r > 0 && write_max(dir, "pids.max", lim->pids_max, err) < 0)
        return -1;
    return 0;
}

static int frozen_is(pe_cgroup *cg, void *arg, pe_err *err)
{
    int64_t want = *(const int64_t *)arg, v = -1;
    int r = pe__cgroup_read_keyed(cg->dirs[0], "cgroup.events", "frozen", &v, err);

    if (r < 0)
        return r;
    return v == want;
}

static int v2_freeze(pe_cgroup *cg, bool frozen, int64_t timeout_ms, pe_err *err)
{
    int64_t want = frozen ? 1 : 0;
    pe_err tmp;
    int r;

    if (pe__cgroup_write(cg->dirs[0], "cgroup.freeze", frozen ? "1" : "0", err) < 0)
        return -1;
    r = pe__cgroup_poll(frozen_is, cg, &want, timeout_ms, err);
    if (r < 0)
        return -1;
    if (r == 0) {
        if (frozen)
            pe__cgroup_write(cg->dirs[0], "cgroup.freeze", "0", &tmp);
        return pe_err_set(
            err, PE_ESYS, ETIMEDOUT, "%s %s: cgroup.events not frozen %lld after %lld ms",
            frozen ? "freeze" : "thaw", cg->dirs[0], (long long)want, (long long)timeout_ms);
    }
    return 0;
}

/* cgroup.kill signals every process, including ones forked meanwhile, in
 * one kernel walk, so no pid can be reused under us. */
static int v2_kill_fast(pe_cgroup *cg, pe_err *err)
{
    int r;

    if (!cg->has_kill)
        return 0;
    r = pe__cgroup_write(cg->dirs[0], "cgroup.kill", "1", err);
    if (r == 0 || r == -ENOENT)
        return 1;
    return -1;
}

static void stat_opt(const char *dir, const char *file, const char *key, int64_t *out)
{
    int64_t v;
    int r;

    if (key != NULL)
        r = pe__cgroup_read_keyed(dir, file, key, &v, NULL);
    else
        r = pe__cgroup_read_i64(dir, file, &v, NULL);
    if (r == 0)
        *out = v;
}

static int v2_stats(pe_cgroup *cg, pe_cgroup_stats *st, pe_err *err)
{
    const char *dir = cg->dirs[0];
    int64_t populated;

    /* cgroup.events is in every non-root cgroup: it tells "gone" from "no
     * data". */
    if (pe__cgroup_read_keyed(dir, "cgroup.events", "populated", &populated, err) < 0)
        return -1;
    if (cg->ctl_dir[PE__CG_MEMORY] >= 0) {
        stat_opt(dir, "memory.current", NULL, &st->memory_current);
        stat_opt(dir, "memory.max", NULL, &st->memory_max);
        stat_opt(dir, "memory.events", "oom_kill", &st->oom_kills);
    }
    if (cg->ctl_dir[PE__CG_PIDS] >= 0)
        stat_opt(dir, "pids.current", NULL, &st->pids_current);
    stat_opt(dir, "cpu.stat", "usage_usec", &st->cpu_usage_usec);
    if (cg->ctl_dir[PE__CG_CPU] >= 0)
        stat_opt(dir, "cpu.stat", "nr_throttled", &st->nr_throttled);
    return 0;
}

static void v2_oom(pe_cgroup *cg, int64_t *kills, int64_t *limit)
{
    if (cg->ctl_dir[PE__CG_MEMORY] < 0)
        return;
    stat_opt(cg->dirs[0], "memory.max", NULL, limit);
    stat_opt(cg->dirs[0], "memory.events", "oom_kill", kills);
}

const pe__cgroup_ops pe__cgroup_v2_ops = {
    .name = "v2",
    .setup = v2_setup,
    .set_limits = v2_set_limits,
    .freeze = v2_freeze,
    .kill_fast = v2_kill_fast,
    .stats = v2_stats,
    .oom = v2_oom,
};
