/* Per-sandbox resource control with cgroups.
 *
 * Two backends behind one table: cgroup-v2.c (pure unified hierarchy, the
 * common case on modern hosts) and cgroup-v1.c (v1 / hybrid, as on our CI
 * machines, where memory, pids, cpu and freezer each live under
 * /sys/fs/cgroup/<controller>). pe_cgroup_open_manager() picks one by looking
 * at the host.
 *
 * Every sandbox gets one cgroup named "pocketenv-<key>" (key is the
 * sandbox's unique state key) below a "pocketenv" parent in each hierarchy
 * used; nothing outside that parent is ever created, written or removed.
 * The root for the hierarchies can be overridden with PE_CGROUP_ROOT for
 * tests (defaults to /sys/fs/cgroup).
 *
 * Not thread-safe per object; distinct objects may be used from distinct
 * threads. */
#ifndef PE_RUNTIME_CGROUP_H
#define PE_RUNTIME_CGROUP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "pocketenv/err.h"

typedef struct pe_cgroup_limits {
    int64_t memory_bytes; /* 0 = unlimited; hard limit, swap not allowed above it */
    int64_t cpu_millis;   /* 0 = unlimited; 1500 = 1.5 CPUs (quota/period) */
    int64_t pids_max;     /* 0 = unlimited */
} pe_cgroup_limits;

typedef struct pe_cgroup_stats {
    int64_t memory_current; /* bytes, -1 if unknown */
    int64_t memory_max;     /* bytes, -1 unlimited */
    int64_t oom_kills;      /* OOM kills inside this cgroup, -1 if unknown */
    int64_t pids_current;   /* -1 if unknown */
    int64_t cpu_usage_usec; /* -1 if unknown */
    int64_t nr_throttled;   /* CFS periods throttled, -1 if unknown */
} pe_cgroup_stats;

typedef struct pe_cgroup pe_cgroup;

/* "v1" or "v2" for the backend this host uses; NULL with err if neither
 * can hold sandboxes (e.g. no write access to the hierarchies). */
const char *pe_cgroup_backend_name(pe_err *err);

/* Create the cgroup for key and apply limits. An existing leftover cgroup
 * with that key (after a crash) is emptied and reused. */
int pe_cgroup_create(const char *key, const pe_cgroup_limits *limits, pe_cgroup **out, pe_err *err);

/* pe_cgroup_create for a process tree that is never frozen and whose CPU
 * time is never read (a one-shot run): on v1, only the hierarchies its
 * limits need (memory, the main one with the OOM count; pids; cpu with a
 * CPU limit), each of which costs the start and the end a few kernfs
 * operations. The same single directory on v2. Destroyed like any. */
int pe_cgroup_create_lean(const char *key, const pe_cgroup_limits *limits, pe_cgroup **out,
                          pe_err *err);

/* Open the cgroup of an existing sandbox; ENOENT-coded error if missing. */
int pe_cgroup_open(const char *key, pe_cgroup **out, pe_err *err);

/* Move pid (a whole thread group) into the cgroup, in every hierarchy. */
int pe_cgroup_attach(pe_cgroup *cg, pid_t pid, pe_err *err);

/* Change limits of a live cgroup (0 = unlimited, as above). */
int pe_cgroup_set_limits(pe_cgroup *cg, const pe_cgroup_limits *limits, pe_err *err);

/* Freeze / thaw every process inside; returns when the state is reached
 * (or err after a bounded wait). */
int pe_cgroup_freeze(pe_cgroup *cg, bool frozen, pe_err *err);

/* SIGKILL every process inside (thawing first if frozen) and wait, bounded,
 * until the cgroup is empty. */
int pe_cgroup_kill_all(pe_cgroup *cg, pe_err *err);

/* Number of processes inside, or < 0 with err. */
int pe_cgroup_count_procs(pe_cgroup *cg, pe_err *err);

int pe_cgroup_stats_read(pe_cgroup *cg, pe_cgroup_stats *st, pe_err *err);

/* The OOM kills counted in cg and its memory limit, as in
 * pe_cgroup_stats_read (-1 each when unknown, limit -1 when none), read
 * without the other counters. */
void pe_cgroup_oom_read(pe_cgroup *cg, int64_t *kills, int64_t *limit);

/* Kill what is left and remove the cgroup from every hierarchy. Idempotent:
 * a missing cgroup is not an error. Does not free cg. */
int pe_cgroup_destroy(pe_cgroup *cg, pe_err *err);

/* Remove the cgroup for key if it exists (used by crash cleanup). */
int pe_cgroup_destroy_key(const char *key, pe_err *err);

/* Call fn for the key of every pocketenv-<key> cgroup that exists. */
int pe_cgroup_list_keys(void (*fn)(const char *key, void *arg), void *arg, pe_err *err);

/* Path of the cgroup directory in the "main" hierarchy (memory on v1, the
 * unified one on v2), e.g. for tests and inspect output. Owned by cg. */
const char *pe_cgroup_path(const pe_cgroup *cg);

/* Directory holding the files of one controller ("memory", "pids", "cpu",
 * "cpuacct", "freezer") for this cgroup: its own hierarchy on v1, the single
 * cgroup dir on v2. NULL if the host cannot use that controller here.
 * Owned by cg. */
const char *pe_cgroup_controller_path(const pe_cgroup *cg, const char *controller);

void pe_cgroup_free(pe_cgroup *cg);

/* Query (enable < 0) or set the host-wide cgroup2 "favordynmods" option that
 * removes the RCU wait from every cgroup attach (cgroup-tune.c). Returns the
 * resulting state (0/1) or -1 with err. Never called implicitly. */
int pe_cgroup_favordynmods(int enable, pe_err *err);

#endif
