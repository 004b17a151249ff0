/* Shared between cgroup.c and its backends (cgroup-v1.c, cgroup-v2.c); not
 * part of the library's interface.
 *
 * cgroup.c owns everything that is the same on both versions: key checks,
 * backend detection, attach, counting and killing processes, removal. A
 * backend only knows where its directories are and how its knobs are
 * spelled. Internal helpers return -errno (so a caller can tell an ignorable
 * ENOENT/EINVAL from a real failure) and fill err without the "cgroup vN"
 * tag; the public functions add the tag once on the way out. */
#ifndef PE_RUNTIME_CGROUP_INTERNAL_H
#define PE_RUNTIME_CGROUP_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "runtime/cgroup.h"

/* Controllers a sandbox cgroup may use. On v1 each may live in its own
 * hierarchy (or share one, like "cpu,cpuacct"); on v2 all share one dir. */
enum pe__cgroup_ctl {
    PE__CG_MEMORY,
    PE__CG_PIDS,
    PE__CG_CPU,
    PE__CG_CPUACCT, /* v1 usage accounting; v2 has cpu.stat in every cgroup */
    PE__CG_FREEZER, /* v1 freezer hierarchy; v2 core cgroup.freeze */
    PE__CG_NCTL,
};

#define PE__CGROUP_MAX_DIRS PE__CG_NCTL

/* Bounded waits. Freezing normally completes in well under a millisecond;
 * the bounds only stop a stuck task (e.g. in uninterruptible I/O) from
 * hanging the caller forever. */
#define PE__CGROUP_FREEZE_TIMEOUT_MS 5000
#define PE__CGROUP_KILL_TIMEOUT_MS 2000
#define PE__CGROUP_RMDIR_TIMEOUT_MS 1000

typedef struct pe__cgroup_ops pe__cgroup_ops;

struct pe_cgroup {
    const pe__cgroup_ops *ops;
    char *key;
    char *root;                      /* v1: dir of the hierarchies; v2: the cgroup2 mount */
    char *dirs[PE__CGROUP_MAX_DIRS]; /* this cgroup, one per hierarchy; dirs[0] is main */
    size_t ndirs;
    int ctl_dir[PE__CG_NCTL]; /* index into dirs, -1 if the controller is unusable */
    bool has_kill;            /* v2 cgroup.kill */
    /* v1: controllers (1 << PE__CG_*) whose hierarchies setup leaves out
     * (pe_cgroup_create_lean); memory, the main one, is never left out */
    unsigned skip;
    /* v1: every dir made by this setup (no crash's leftover): each knob is
     * still at the kernel's default, unlimited, so set_limits writes only
     * the limits asked for; cleared once the limits are set */
    bool fresh;
};

struct pe__cgroup_ops {
    const char *name; /* "v1" / "v2", also the error tag */

    /* Fill cg->dirs and cg->ctl_dir for cg->key below cg->root. With create,
     * make the parents and the cgroup (an existing one is fine) and set
     * *existed when the main dir was already there. */
    int (*setup)(pe_cgroup *cg, bool create, bool *existed, pe_err *err);

    /* Write every limit (0 = unlimited), already validated. */
    int (*set_limits)(pe_cgroup *cg, const pe_cgroup_limits *lim, pe_err *err);

    /* Freeze or thaw and wait until the state is reached or timeout_ms
     * passed (ETIMEDOUT; a freeze that timed out is undone). */
    int (*freeze)(pe_cgroup *cg, bool frozen, int64_t timeout_ms, pe_err *err);

    /* Kill every process at once if the kernel can (v2 cgroup.kill).
     * Returns 1 when done that way, 0 when the caller must signal pids. */
    int (*kill_fast)(pe_cgroup *cg, pe_err *err);

    int (*stats)(pe_cgroup *cg, pe_cgroup_stats *st, pe_err *err);

    /* The OOM kill count and memory limit alone (two files of stats'
     * six): what every exec reads before its command starts. */
    void (*oom)(pe_cgroup *cg, int64_t *kills, int64_t *limit);
};

extern const pe__cgroup_ops pe__cgroup_v1_ops;
extern const pe__cgroup_ops pe__cgroup_v2_ops;

/* File helpers; dir and file are joined with '/'. Return 0 or -errno. */
int pe__cgroup_write(const char *dir, const char *file, const char *val, pe_err *err);
int pe__cgroup_write_i64(const char *dir, const char *file, int64_t v, pe_err *err);
int pe__cgroup_read(const char *dir, const char *file, char **out, pe_err *err);
/* A file holding one number, or "max" (read as -1). */
int pe__cgroup_read_i64(const char *dir, const char *file, int64_t *out, pe_err *err);
/* The value of the "key value" line for key in a flat-keyed file (cpu.stat,
 * memory.events, memory.oom_control); -ENOENT if the key is not there. */
int pe__cgroup_read_keyed(const char *dir, const char *file, const char *key, int64_t *out,
                          pe_err *err);
/* Whether the space-separated list (cgroup.controllers) holds word. */
bool pe__cgroup_has_word(const char *list, const char *word);
/* Whether path is a mount of the given filesystem magic. */
bool pe__cgroup_is_fs(const char *path, int64_t magic);

/* mkdir, EEXIST is fine; *created tells whether this call made it. */
int pe__cgroup_mkdir(const char *path, bool *created, pe_err *err);

/* Poll cond until it returns != 0 or timeout_ms passed; sleeps grow from
 * 0.25 ms to 10 ms so a quick state change costs little and a slow one does
 * not spin. Returns cond's value (1 reached, < 0 error) or 0 on timeout. */
int pe__cgroup_poll(int (*cond)(pe_cgroup *cg, void *arg, pe_err *err), pe_cgroup *cg, void *arg,
                    int64_t timeout_ms, pe_err *err);

#endif
