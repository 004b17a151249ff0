/* Keeping the store true to the runtime: reconciliation at start, and a
 * periodic tick that stops idle sandboxes and notices dead ones.
 *
 * The daemon may be restarted, or killed -9, at any moment. Sandboxes keep
 * running without it (their inits are reparented), so on start it joins
 * the store's rows of this node with the runtime's list:
 *
 *   row             runtime       becomes
 *   INITIALIZING    any           create resumed (run job queued again)
 *   RUNNING         not up        STOPPED, with the reason
 *   RUNNING         up            adopted: RUNNING, idle clock restarts
 *   STOPPED/FAILED  up            RUNNING (a start got that far)
 *   (no row)        sbx_* any     removed (a delete got that far)
 *
 * Remote rows have no runtime here: their providers are asked instead, in
 * a job of their own (below, "remote sandboxes at start").
 *
 * Runtime sandboxes whose names are not store ids belong to someone using
 * `pocketenv runtime` with the same data directory and are left alone.
 *
 * "This node": rows of the local backend (whatever provider name their
 * client asked for) carry the node id (DATA/node-id) as provider_id,
 * so daemons sharing one PostgreSQL store each reconcile only their own.
 * Rows from before node ids (provider_id NULL) count as this node's.
 *
 * The tick runs the same join on a worker every tick_s seconds, minus the
 * start-only moves (a start or create in flight would look the same), plus
 * idle policies: a RUNNING sandbox without keepAlive whose last activity (its
 * start, an exec, a terminal, preview traffic; pe_daemon_touch) is older
 * than its policy's timeout (or the daemon's --idle-timeout) is stopped,
 * paused, or snapshotted then stopped, as its policy says (handlers/idle.c;
 * stopped without one). A paused sandbox is left alone. It also counts
 * sandboxes by status for /metrics. */
#include <errno.h>
#include <pthread.h>
#include <search.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/log.h"
#include "cluster.h"
#include "core/util.h"
#include "pool.h"
#include "daemon.h"
#include "pause.h"
#include "pocketenv/store-idle.h"
#include "read-cache.h"
#include "providers.h"
#include "sandbox-services.h"
#include "snapshots.h"
#include "backups.h"
#include "transfer.h"
#include "supervise.h"

#define PAGE 500

/* ---- activity: last use of each sandbox, in memory ----
 *
 * Keyed by sandbox id in a binary tree (libc's tsearch): an exec looks its
 * sandbox up twice (hold, release), so the lookup must not grow with the
 * sandboxes a daemon has seen. Deleted sandboxes leave: delete_work forgets
 * its own at once, and each tick's pass drops the entries of rows no longer
 * in the store (deleted by another path or node) that nobody holds. Before
 * this, entries were never dropped and every exec scanned all of them:
 * bench/README.md, "The activity table". */

struct activity {
    char *id;
    int64_t ms;
    unsigned busy;  /* execs and terminals in progress: never idle */
    unsigned seen;  /* the last tick pass that found its row */
    bool forgotten; /* its sandbox was deleted while busy: dropped on release */
};

static pthread_mutex_t activity_lock = PTHREAD_MUTEX_INITIALIZER;
static void *activity;        /* tree of struct activity * */
static size_t activity_n;     /* entries in it, for /metrics */
static unsigned activity_gen; /* the tick pass under way */

static int activity_cmp(const void *a, const void *b)
{
    return strcmp(((const struct activity *)a)->id, ((const struct activity *)b)->id);
}

static struct activity *activity_find(const char *id)
{
    struct activity key = {.id = (char *)id};
    struct activity **a = tfind(&key, &activity, activity_cmp);

    return a ? *a : NULL;
}

static void activity_drop(struct activity *a)
{
    tdelete(a, &activity, activity_cmp);
    activity_n--;
    free(a->id);
    free(a);
}

static void activity_update(const char *id, int busy_delta)
{
    struct activity *a;

    pthread_mutex_lock(&activity_lock);
    a = activity_find(id);
    if (a == NULL && busy_delta < 0) { /* forgotten and dropped: its sandbox is gone */
        pthread_mutex_unlock(&activity_lock);
        return;
    }
    if (a == NULL) {
        a = pe_xcalloc(1, sizeof(*a));
        a->id = pe_xstrdup(id);
        a->seen = activity_gen;
        tsearch(a, &activity, activity_cmp);
        activity_n++;
    }
    a->ms = pe_store_now_ms();
    if (busy_delta > 0 || a->busy > 0)
        a->busy += (unsigned)busy_delta;
    if (a->busy == 0 && a->forgotten)
        activity_drop(a);
    pthread_mutex_unlock(&activity_lock);
}

void pe_daemon_touch(pe_daemon *d, const char *id)
{
    activity_update(id, 0);
}

void pe_daemon_hold(pe_daemon *d, const char *id)
{
    activity_update(id, 1);
}

void pe_daemon_release(pe_daemon *d, const char *id)
{
    activity_update(id, -1);
}

/* Last use in ms, or INT64_MAX while in use. */
static int64_t last_activity(const char *id)
{
    struct activity *a;
    int64_t ms;

    pthread_mutex_lock(&activity_lock);
    a = activity_find(id);
    ms = a == NULL ? 0 : a->busy ? INT64_MAX : a->ms;
    pthread_mutex_unlock(&activity_lock);
    return ms;
}

/* Drop sandbox id's entry: stopped (its idle clock restarts with its next
 * start), or deleted (deleted: also once the execs holding it end). */
static void forget(const char *id, bool deleted)
{
    struct activity *a;

    pthread_mutex_lock(&activity_lock);
    a = activity_find(id);
    if (a != NULL && a->busy == 0)
        activity_drop(a);
    else if (a != NULL && deleted)
        a->forgotten = true;
    pthread_mutex_unlock(&activity_lock);
}

void pe_daemon_forget(pe_daemon *d, const char *id)
{
    forget(id, true);
}

/* The tick's pass found sandbox id's row. */
static void activity_seen(const char *id)
{
    struct activity *a;

    pthread_mutex_lock(&activity_lock);
    a = activity_find(id);
    if (a != NULL)
        a->seen = activity_gen;
    pthread_mutex_unlock(&activity_lock);
}

struct activity_sweep {
    unsigned gen;
    int64_t since; /* the pass's start: a newer entry's row may postdate its list */
    char **ids;
    size_t n, cap;
};

static void activity_collect(const void *node, VISIT v, void *ud)
{
    const struct activity *a = *(struct activity *const *)node;
    struct activity_sweep *sw = ud;

    if (v != postorder && v != leaf)
        return;
    if (a->seen == sw->gen || a->busy > 0 || a->ms >= sw->since)
        return;
    if (sw->n == sw->cap) {
        sw->cap = sw->cap ? sw->cap * 2 : 64;
        sw->ids = pe_xrealloc(sw->ids, sw->cap * sizeof(*sw->ids));
    }
    sw->ids[sw->n++] = pe_xstrdup(a->id);
}

/* After a pass over the store's rows that began at since: drop the entries
 * of sandboxes whose rows it did not find and the store no longer has,
 * unless held or used since. Asked one by one: the pass's pages (LIMIT,
 * OFFSET) can miss a row while others are deleted, and a sandbox in use
 * must keep its idle clock. */
static void activity_sweep(pe_store *s, int64_t since)
{
    struct activity_sweep sw = {.since = since};

    pthread_mutex_lock(&activity_lock);
    sw.gen = activity_gen;
    twalk_r(activity, activity_collect, &sw);
    pthread_mutex_unlock(&activity_lock);
    for (size_t i = 0; i < sw.n; i++) {
        pe_store_sandbox sb;
        pe_err err;
        struct activity *a;

        pe_err_clear(&err);
        if (pe_store_sandbox_get(s, sw.ids[i], &sb, &err) == 0)
            pe_store_sandbox_clear(&sb);
        else if (err.code == PE_ENOENT) {
            pthread_mutex_lock(&activity_lock);
            a = activity_find(sw.ids[i]);
            if (a != NULL && a->busy == 0 && a->ms < since)
                activity_drop(a);
            pthread_mutex_unlock(&activity_lock);
        }
        free(sw.ids[i]);
    }
    free(sw.ids);
}

static void free_activity(void *p)
{
    struct activity *a = p;

    free(a->id);
    free(a);
}

static void activity_free(void)
{
    tdestroy(activity, free_activity);
    activity = NULL;
    activity_n = 0;
}

/* ---- counts for /metrics ---- */

static pthread_mutex_t counts_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t counts[PE_STORE_FAILED + 1];
static bool counts_known;

static void on_metrics(FILE *out, void *ud)
{
    int64_t c[PE_STORE_FAILED + 1];
    bool known;
    size_t tracked;

    pthread_mutex_lock(&counts_lock);
    memcpy(c, counts, sizeof(c));
    known = counts_known;
    pthread_mutex_unlock(&counts_lock);
    pthread_mutex_lock(&activity_lock);
    tracked = activity_n;
    pthread_mutex_unlock(&activity_lock);
    fprintf(out,
            "# HELP pocketenv_activity_tracked Sandboxes whose last use this daemon keeps in "
            "memory for the idle policies.\n"
            "# TYPE pocketenv_activity_tracked gauge\npocketenv_activity_tracked %zu\n",
            tracked);
    pe_daemon_jobs_metrics(ud, out);
    pe_daemon_read_cache_metrics(out);
    pe_daemon_cluster_metrics(ud, out);
    pe_daemon_pool_metrics(ud, out);
    if (!known)
        return;
    fputs("# HELP pocketenv_sandboxes Sandboxes of this node by status (as of the last tick).\n"
          "# TYPE pocketenv_sandboxes gauge\n",
          out);
    for (int st = 0; st <= PE_STORE_FAILED; st++)
        fprintf(out, "pocketenv_sandboxes{status=\"%s\"} %lld\n", pe_store_status_name(st),
                (long long)c[st]);
}

/* ---- node id ---- */

int pe_daemon_node_id(pe_daemon *d, pe_err *err)
{
    cleanup_free char *path = pe_xasprintf("%s/node-id", d->rt.data_dir);
    char *text = NULL, buf[17];
    unsigned char r[8];

    if (pe_fs_read_file(path, 64, &text, NULL, err) == 0) {
        text[strcspn(text, "\n")] = '\0';
        if (strlen(text) < 8) {
            free(text);
            return pe_err_set(err, PE_EINVAL, 0, "%s: not a node id", path);
        }
        d->node = text;
        return 0;
    }
    if (err->errnum != ENOENT)
        return -1;
    pe_err_clear(err);
    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
        return pe_err_sys(err, "getrandom");
    for (size_t i = 0; i < sizeof(r); i++)
        snprintf(buf + 2 * i, 3, "%02x", r[i]);
    if (pe_fs_write_atomic(path, buf, strlen(buf), 0600, err) < 0)
        return -1;
    d->node = pe_xstrdup(buf);
    return 0;
}

/* ---- the join ---- */

bool pe_daemon_is_mine(const pe_daemon *d, const pe_store_sandbox *sb)
{
    if (sb->backend && strcmp(sb->backend, PE_BACKEND_LOCAL) != 0)
        return false;
    return sb->provider_id == NULL || strcmp(sb->provider_id, d->node) == 0;
}

/* The runtime's sandboxes as {name: status}. */
static json_t *runtime_states(pe_daemon *d, pe_err *err)
{
    char *text = NULL;
    json_t *list, *map, *v;
    size_t i;

    if (pe_sandboxes_local_list(&d->sx, &text, err) < 0)
        return NULL;
    list = json_loads(text, 0, NULL);
    free(text);
    if (!json_is_array(list)) {
        json_decref(list);
        pe_err_set(err, PE_ESYS, 0, "runtime list: not a JSON array");
        return NULL;
    }
    map = json_object();
    json_array_foreach(list, i, v)
    {
        const char *name = json_string_value(json_object_get(v, "name"));
        if (name && json_is_string(json_object_get(v, "status")))
            json_object_set(map, name, v);
    }
    json_decref(list);
    return map;
}

static bool up(json_t *states, const char *id)
{
    const char *st = json_string_value(json_object_get(json_object_get(states, id), "status"));

    return st && (strcmp(st, "running") == 0 || strcmp(st, "paused") == 0);
}

static bool frozen(json_t *states, const char *id)
{
    const char *st = json_string_value(json_object_get(json_object_get(states, id), "status"));

    return st && strcmp(st, "paused") == 0;
}

/* The list is taken before the rows are read: a create or start that
 * finished in between has a RUNNING row and no entry yet. Before a row is
 * called dead, ask the runtime about that one sandbox now (issue 21: under
 * load, half of 2,000 API creates were marked STOPPED while running). */
static bool up_now(pe_daemon *d, json_t *states, const char *id)
{
    char *text = NULL;
    json_t *info;
    bool r;
    pe_err err;

    if (up(states, id))
        return true;
    pe_err_clear(&err);
    if (pe_sandbox_inspect(&d->sx, id, &text, &err) < 0)
        return false;
    info = json_loads(text, 0, NULL);
    free(text);
    r = json_is_object(info) && json_object_set(states, id, info) == 0 && up(states, id);
    json_decref(info);
    return r;
}

/* The runtime's word on why a sandbox's init is gone, when it was the
 * memory limit (the runtime's list's "error"; malloc'd), else NULL. */
static char *oom_reason(json_t *states, const char *id)
{
    const char *e = json_string_value(json_object_get(json_object_get(states, id), "error"));

    return e && strncmp(e, "out of memory", 13) == 0 ? pe_xstrdup(e) : NULL;
}

static void set_status(pe_store *s, const pe_store_sandbox *sb, int status, const char *reason)
{
    pe_err err;

    pe_err_clear(&err);
    /* Compare-and-set: a request that moved the row meanwhile wins. */
    if (pe_store_sandbox_set_status(s, sb->id, status, reason, sb->status, &err) == 0)
        pe_log_info("event=reconcile sandbox=%s from=%s to=%s%s%s", sb->id,
                    pe_store_status_name(sb->status), pe_store_status_name(status),
                    reason ? " reason=" : "", reason ? reason : "");
    else if (err.code != PE_ESTATE)
        pe_log_warn("reconcile %s: %s", sb->id, err.msg);
}

/* The policy of sandbox id in list (n of them), or NULL: stop after the
 * row's or the daemon's timeout. */
static const pe_store_idle *policy_of(const pe_store_idle *list, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i].sandbox_id, id) == 0)
            return &list[i];
    return NULL;
}

/* Seconds without activity after which sb's idle action runs: its policy's,
 * else its own create-time timeout, else the daemon's. */
static int64_t idle_timeout_of(const pe_daemon *d, const pe_store_sandbox *sb,
                               const pe_store_idle *pol)
{
    return pol && pol->timeout > 0 ? pol->timeout
           : sb->idle_timeout > 0  ? sb->idle_timeout
                                   : (int64_t)d->idle_timeout;
}

/* What the idle policy (pol, or none) says to do with sb, if it has been
 * idle long enough: stop, pause, or snapshot then stop. */
static void idle_act(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb,
                     const pe_store_idle *pol, int64_t now)
{
    int64_t timeout = idle_timeout_of(d, sb, pol);
    const char *action = pol ? pol->action : PE_IDLE_STOP;
    int64_t last = last_activity(sb->id);
    char reason[80];
    pe_err err;

    /* Paused: nothing runs, memory is kept on purpose (E2B's pause, the
     * idle policy's pause); a stop would lose what the pause keeps. */
    if (sb->keep_alive || timeout <= 0 || pe_daemon_paused(sb->id))
        return;
    if (sb->started_at > last)
        last = sb->started_at;
    if (last == INT64_MAX || now - last < timeout * 1000)
        return;
    pe_err_clear(&err);
    if (strcmp(action, PE_IDLE_PAUSE) == 0) {
        snprintf(reason, sizeof(reason), "paused after %llds without activity", (long long)timeout);
        if (pe_daemon_pause(d, sb->id, reason, &err) < 0 && err.code != PE_ESTATE)
            pe_log_warn("idle pause %s: %s", sb->id, err.msg);
        return;
    }
    /* A failed snapshot still stops: the stop loses nothing (the
     * writable layer stays), and the snapshot is retried at no later
     * time since the sandbox no longer runs. */
    if (strcmp(action, PE_IDLE_SNAPSHOT_STOP) == 0 && pe_daemon_snapshot_idle(d, s, sb, &err) < 0)
        pe_log_warn("idle snapshot %s: %s", sb->id, err.msg);
    pe_err_clear(&err);
    pe_daemon_unit_stop_sandbox(sb->id); /* its services first, as stopSandbox does */
    if (pe_sandbox_stop(&d->sx, s, sb, &err) < 0 && err.code != PE_ESTATE) {
        pe_log_warn("idle stop %s: %s", sb->id, err.msg);
        return;
    }
    pe_daemon_paused_note(s, sb, false);
    snprintf(reason, sizeof(reason), "%s after %llds without activity",
             strcmp(action, PE_IDLE_STOP) == 0 ? "stopped" : "snapshot taken and stopped",
             (long long)timeout);
    set_status(s, sb, PE_STORE_STOPPED, reason);
    forget(sb->id, false);
}

/* A remote sandbox left idle: its provider pauses it where the adapter
 * declares pause (E2B) and the policy asks for it; else its provider
 * stops it. Its files stay with the provider, so stop is what the other
 * actions come to there, after a snapshot for snapshot-then-stop where
 * the adapter takes them, and the reason says what was not done. Only a sandbox this daemon has
 * served since it started (its activity is known here): another daemon sharing the store may be the
 * one serving it, and a restart forgets nothing it could not see again. */
static void remote_idle_act(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb,
                            const pe_store_idle *pol, int64_t now)
{
    int64_t timeout = idle_timeout_of(d, sb, pol);
    const char *action = pol ? pol->action : PE_IDLE_STOP;
    int64_t last;
    bool known;
    char reason[160];
    bool snap = strcmp(action, PE_IDLE_SNAPSHOT_STOP) == 0 &&
                (pe_sandbox_caps(&d->sx, sb) & PE_CAP_SNAPSHOT);
    pe_err err;

    pthread_mutex_lock(&activity_lock);
    known = activity_find(sb->id) != NULL;
    pthread_mutex_unlock(&activity_lock);
    last = last_activity(sb->id);
    if (!known || sb->keep_alive || timeout <= 0 || pe_daemon_paused(sb->id))
        return;
    if (sb->started_at > last)
        last = sb->started_at;
    if (last == INT64_MAX || now - last < timeout * 1000)
        return;
    pe_err_clear(&err);
    /* its provider pauses it, memory kept; the next exec, terminal or
     * preview resumes it (pause.c); one that fails comes to the stop */
    if (strcmp(action, PE_IDLE_PAUSE) == 0 && (pe_sandbox_caps(&d->sx, sb) & PE_CAP_PAUSE)) {
        snprintf(reason, sizeof(reason), "paused after %llds without activity", (long long)timeout);
        if (pe_daemon_pause(d, sb->id, reason, &err) == 0)
            return;
        pe_log_warn("idle pause %s on %s: %s", sb->id, sb->backend, err.msg);
        pe_err_clear(&err);
    }
    /* as a local one's: a failed snapshot still stops */
    if (snap && pe_daemon_snapshot_idle(d, s, sb, &err) < 0) {
        pe_log_warn("idle snapshot %s on %s: %s", sb->id, sb->backend, err.msg);
        snap = false;
    }
    pe_err_clear(&err);
    if (pe_sandbox_stop(&d->sx, s, sb, &err) < 0 && err.code != PE_ESTATE) {
        pe_log_warn("idle stop %s on %s: %s", sb->id, sb->backend, err.msg);
        return;
    }
    if (snap)
        snprintf(reason, sizeof(reason), "snapshot taken and stopped after %llds without activity",
                 (long long)timeout);
    else if (strcmp(action, PE_IDLE_STOP) == 0)
        snprintf(reason, sizeof(reason), "stopped after %llds without activity",
                 (long long)timeout);
    else
        snprintf(reason, sizeof(reason), "stopped after %llds without activity (%s cannot %s)",
                 (long long)timeout, sb->backend,
                 strcmp(action, PE_IDLE_PAUSE) == 0 ? "pause" : "snapshot");
    pe_log_info("event=idle_stop sandbox=%s backend=%s action=%s", sb->id, sb->backend, action);
    set_status(s, sb, PE_STORE_STOPPED, reason);
    forget(sb->id, false);
}

/* The remote rows to settle at start (below), listed by the start's pass
 * before the daemon serves anything: a row a client makes after that is
 * its create's, never taken for an interrupted one. Main thread, then the
 * job's. */
static json_t *remote_at_start;

/* Does this node supervise remote sandbox sb (its services at start, its
 * idle policy, the settling of its row at start)? One node does: the one
 * that made it (sb->node), or for a row without one (made before nodes
 * recorded it) the first node to claim it. A down node's stay its own
 * until it is back (docs/cluster.md). */
static bool supervised_here(pe_daemon *d, pe_store *s, pe_store_sandbox *sb)
{
    pe_err err;
    int r;

    if (sb->node)
        return strcmp(sb->node, d->node) == 0;
    pe_err_clear(&err);
    r = pe_store_sandbox_claim_node(s, sb->id, d->node, &err);
    if (r < 0 && err.code != PE_ENOENT)
        pe_log_warn("claim %s: %s", sb->id, err.msg);
    if (r == 1)
        sb->node = pe_xstrdup(d->node);
    return r == 1;
}

/* One pass over this node's rows. resume (start only) collects the ids of
 * INITIALIZING rows, whose creates must be run again. */
static int sync_store(pe_daemon *d, pe_store *s, bool at_start, json_t *resume, pe_err *err)
{
    int64_t c[PE_STORE_FAILED + 1] = {0};
    int64_t now = pe_store_now_ms(), total = 0;
    json_t *states = runtime_states(d, err);
    pe_store_idle *pols = NULL;
    size_t npols = 0;
    pe_err perr;

    if (states == NULL)
        return -1;
    pthread_mutex_lock(&activity_lock);
    activity_gen++;
    pthread_mutex_unlock(&activity_lock);
    pe_err_clear(&perr);
    if (!at_start && pe_store_idle_list(s, &pols, &npols, &perr) < 0)
        pe_log_warn("tick: %s (idle policies: stop after the default)", perr.msg);
    for (int64_t off = 0;; off += PAGE) {
        pe_store_sandbox *list = NULL;
        size_t n = 0;

        if (pe_store_sandbox_list(s, NULL, PAGE, off, &list, &n, &total, err) < 0) {
            json_decref(states);
            pe_store_idle_list_free(pols, npols);
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            pe_store_sandbox *sb = &list[i];
            bool is_up =
                sb->status == PE_STORE_RUNNING ? up_now(d, states, sb->id) : up(states, sb->id);
            cleanup_free char *oom = is_up ? NULL : oom_reason(states, sb->id);

            activity_seen(sb->id);
            if (!pe_daemon_is_mine(d, sb)) {
                json_object_del(states, sb->id); /* seen: not an orphan */
                if (!pe_sandbox_is_remote(sb) || !supervised_here(d, s, sb))
                    continue; /* another node's */
                if (at_start && pe_sandbox_is_remote(sb) &&
                    (sb->status == PE_STORE_INITIALIZING || sb->status == PE_STORE_RUNNING))
                    json_array_append_new(remote_at_start, json_string(sb->id));
                if (!at_start && sb->status == PE_STORE_RUNNING && pe_sandbox_is_remote(sb))
                    remote_idle_act(d, s, sb, policy_of(pols, npols, sb->id), now);
                continue;
            }
            pe_daemon_paused_note(s, sb, is_up && frozen(states, sb->id));
            json_object_del(states, sb->id); /* seen: not an orphan */
            if (sb->status == PE_STORE_INITIALIZING && at_start) {
                json_array_append_new(resume, json_string(sb->id));
            } else if (sb->status == PE_STORE_RUNNING && !is_up && oom != NULL) {
                set_status(s, sb, PE_STORE_FAILED, oom);
                sb->status = PE_STORE_FAILED;
            } else if (sb->status == PE_STORE_RUNNING && !is_up) {
                set_status(s, sb, PE_STORE_STOPPED,
                           at_start ? "stopped while pocketenv serve was not running"
                                    : "its init process exited");
                sb->status = PE_STORE_STOPPED;
            } else if (sb->status == PE_STORE_RUNNING && at_start) {
                pe_daemon_touch(d, sb->id); /* adopted: the idle clock restarts */
            } else if (sb->status == PE_STORE_RUNNING) {
                idle_act(d, s, sb, policy_of(pols, npols, sb->id), now);
            } else if (is_up && at_start) {
                set_status(s, sb, PE_STORE_RUNNING, NULL);
                sb->status = PE_STORE_RUNNING;
            }
            if (sb->status >= 0 && sb->status <= PE_STORE_FAILED)
                c[sb->status]++;
        }
        pe_store_sandbox_list_free(list, n);
        if ((int64_t)n < PAGE)
            break;
    }
    if (at_start) {
        const char *name;
        json_t *v;
        pe_err rerr;

        /* Left in states: runtime sandboxes with no row. Only names shaped
         * like store ids are ours to remove. */
        json_object_foreach(states, name, v)
        {
            if (strncmp(name, "sbx_", 4) != 0)
                continue;
            pe_err_clear(&rerr);
            if (pe_sandboxes_local_remove(&d->sx, name, &rerr) < 0)
                pe_log_warn("reconcile: remove orphan %s: %s", name, rerr.msg);
            else
                pe_log_info("event=reconcile sandbox=%s orphan=removed", name);
        }
    }
    json_decref(states);
    pe_store_idle_list_free(pols, npols);
    activity_sweep(s, now);
    pthread_mutex_lock(&counts_lock);
    memcpy(counts, c, sizeof(c));
    counts_known = true;
    pthread_mutex_unlock(&counts_lock);
    return 0;
}

/* ---- start ---- */

int pe_daemon_reconcile(pe_daemon *d, json_t *resume, pe_err *err)
{
    pe_store *s = pe_store_open(d->store_url, err);
    int r;

    if (s == NULL)
        return pe_err_prefix(err, "open store");
    json_decref(remote_at_start);
    remote_at_start = json_array();
    r = sync_store(d, s, true, resume, err);
    pe_store_close(s);
    if (r < 0)
        return pe_err_prefix(err, "reconcile");
    pe_log_info("event=reconciled resumed=%zu", json_array_size(resume));
    return 0;
}

/* ---- remote sandboxes at start ----
 *
 * The join above skips remote rows: no runtime here knows them. Their
 * providers do, so a background job (provider calls take seconds) asks:
 *
 *   row             provider says         becomes
 *   INITIALIZING    anything              the half-made sandbox (if the row
 *                                         names one) deleted there, the
 *                                         create run again (RUNNING, or
 *                                         FAILED saying why)
 *   RUNNING         running               adopted: services started again,
 *                                         the idle clock restarts
 *   RUNNING         stopped or paused     paused (resumed on its next use)
 *                                         where the adapter pauses, else
 *                                         STOPPED, saying so
 *   RUNNING         no such sandbox       FAILED, saying so
 *
 * An interrupted create is made again rather than adopted: the steps after
 * the provider's create (files, SSH keys) may not have run, and a fork's
 * or a create's row promised a whole sandbox; making it again is the one
 * path known to give one, and deleting the half-made one first leaves
 * nothing behind there. Only the row's node does this (supervised_here):
 * on a shared PostgreSQL store another node may be making or serving one
 * of its own remote sandboxes right now. */

/* One-shot in the sandbox: end what an earlier daemon's units left
 * running there (their output streams died with it), found by the marker
 * every unit's environment carries (supervise.c). Best effort. */
static void remote_kill_leftovers(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb)
{
    static char *const argv[] = {
        (char *)"/bin/sh", (char *)"-c",
        (char *)"for p in /proc/[0-9]*; do tr '\\0' '\\n' < $p/environ 2>/dev/null | "
                "grep -q '^POCKETENV_UNIT=' && kill -9 ${p#/proc/} 2>/dev/null; done; true",
        NULL};
    pe_provider_exec_opts o = {.argv = argv, .timeout = 10};
    pe_provider_exec_result res = {0};
    pe_err err;

    pe_err_clear(&err);
    if (pe_sandbox_exec(&d->sx, s, sb, &o, 4096, &res, &err) < 0)
        pe_log_warn("sandbox %s: leftovers of the last daemon not ended on %s: %s", sb->id,
                    sb->backend, err.msg);
    pe_provider_exec_free(&res);
}

static void remote_interrupted(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb)
{
    pe_provider_status st;
    char reason[PE_ERR_MSG_MAX + 160];
    pe_err err;

    pe_err_clear(&err);
    /* gone there already (ENOENT): nothing to delete */
    if (sb->provider_id &&
        (pe_sandbox_status(&d->sx, s, sb, &st, &err) == 0 || err.code != PE_ENOENT)) {
        pe_err_clear(&err);
        if (pe_sandbox_remove(&d->sx, s, sb, &err) < 0 && err.code != PE_ENOENT) {
            snprintf(reason, sizeof(reason),
                     "create interrupted by a restart of pocketenv serve; its half-made %s "
                     "sandbox %s could not be deleted: %s",
                     sb->backend, sb->provider_id, err.msg);
            set_status(s, sb, PE_STORE_FAILED, reason);
            return;
        }
        pe_log_info("event=reconcile sandbox=%s backend=%s half_made=%s removed", sb->id,
                    sb->backend, sb->provider_id);
    }
    pe_err_clear(&err);
    if (sb->provider_id && pe_store_sandbox_set_provider(s, sb->id, sb->provider, NULL, &err) < 0) {
        pe_log_warn("reconcile %s: %s", sb->id, err.msg);
        return;
    }
    pe_log_info("event=reconcile sandbox=%s backend=%s create=again", sb->id, sb->backend);
    pe_daemon_sandbox_resume(d, NULL, sb->id);
}

static void remote_adopt(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb)
{
    pe_provider_status st;
    char reason[PE_ERR_MSG_MAX + 160];
    pe_err err;

    pe_err_clear(&err);
    if (pe_sandbox_status(&d->sx, s, sb, &st, &err) < 0) {
        if (err.code != PE_ENOENT) { /* unreachable now: the next use will say */
            pe_log_warn("reconcile %s on %s: %s", sb->id, sb->backend, err.msg);
            return;
        }
        snprintf(reason, sizeof(reason), "%s has no sandbox %s any more", sb->backend,
                 sb->provider_id);
        set_status(s, sb, PE_STORE_FAILED, reason);
        return;
    }
    if (st.state == PE_PSTATE_STOPPED || st.state == PE_PSTATE_PAUSED) {
        if (pe_sandbox_caps(&d->sx, sb) & PE_CAP_PAUSE) {
            pe_daemon_paused_note(s, sb, true); /* its next use resumes it */
            pe_daemon_touch(d, sb->id);
            return;
        }
        snprintf(reason, sizeof(reason), "stopped at %s while pocketenv serve was not running",
                 sb->backend);
        set_status(s, sb, PE_STORE_STOPPED, reason);
        return;
    }
    if (st.state != PE_PSTATE_RUNNING)
        return;
    pe_daemon_touch(d, sb->id); /* adopted: the idle clock restarts */
    remote_kill_leftovers(d, s, sb);
    pe_daemon_services_start(d, s, sb);
    pe_log_info("event=adopt sandbox=%s backend=%s", sb->id, sb->backend);
}

static void remote_reconcile_work(pe_daemon_job *job, pe_store *s)
{
    size_t i;
    json_t *v;

    json_array_foreach(job->in, i, v)
    {
        pe_store_sandbox sb;
        pe_err err;

        pe_err_clear(&err);
        if (pe_store_sandbox_get(s, json_string_value(v), &sb, &err) < 0)
            continue; /* deleted meanwhile */
        if (sb.status == PE_STORE_INITIALIZING)
            remote_interrupted(job->d, s, &sb);
        else if (sb.status == PE_STORE_RUNNING)
            remote_adopt(job->d, s, &sb);
        pe_store_sandbox_clear(&sb);
    }
}

void pe_daemon_reconcile_remote(pe_daemon *d)
{
    json_t *ids = remote_at_start;
    pe_daemon_job *job;

    remote_at_start = NULL;
    /* how many of this node's remote rows it settles (tests wait for it) */
    pe_log_info("event=reconcile_remote sandboxes=%zu", ids ? json_array_size(ids) : 0);
    if (ids == NULL || json_array_size(ids) == 0 || d->sx.n_remotes == 0) {
        json_decref(ids);
        return;
    }
    job = pe_daemon_job_new(d, NULL, NULL, remote_reconcile_work);
    job->in = ids;
    job->kind = PE_JOB_LIFECYCLE; /* provider calls, services started */
    job->background = true;
    pe_daemon_job_submit(job);
}

/* ---- the tick ---- */

static void tick_work(pe_daemon_job *job, pe_store *s)
{
    pe_err rerr;

    if (sync_store(job->d, s, false, NULL, &job->err) < 0)
        pe_daemon_job_fail(job, &job->err, NULL);
    if (pe_daemon_auth_refresh(job->d->auth, s, &rerr) < 0)
        pe_log_warn("tick: %s", rerr.msg);
    pe_daemon_backups_expire(job->d, s);
    pe_daemon_snapshots_expire(job->d, s);
    pe_daemon_copy_expire(job->d);
}

/* The tick's worker read the store's revocations into auth: end what a
 * revoked token opened, in this same tick. */
static void tick_after(pe_daemon_job *job)
{
    job->d->tick_busy = false;
    pe_daemon_terminal_recheck(job->d);
    pe_daemon_proxy_recheck(job->d);
    pe_daemon_exec_stream_recheck(job->d);
}

static void on_tick(pe_ev_timer *t, void *ud)
{
    pe_daemon *d = ud;
    pe_daemon_job *job;

    if (d->tick_busy || d->draining)
        return; /* the last pass is still going (slow stops) */
    d->tick_busy = true;
    job = pe_daemon_job_new(d, NULL, NULL, tick_work);
    job->after = tick_after;
    job->kind = PE_JOB_LIFECYCLE; /* idle stops wait for sandboxes to stop */
    if (pe_daemon_job_submit(job) < 0)
        d->tick_busy = false;
}

int pe_daemon_housekeeping_start(pe_daemon *d, pe_err *err)
{
    uint64_t ns = (uint64_t)(d->tick_s * 1e9);

    pe_http_set_metrics_hook(d->srv, on_metrics, d);
    if (pe_ev_timer_start(d->loop, ns, ns, on_tick, d, err) == NULL)
        return -1;
    return 0;
}

void pe_daemon_housekeeping_free(void)
{
    json_decref(remote_at_start); /* a start that never served */
    remote_at_start = NULL;
    pe_daemon_paused_free();
    pthread_mutex_lock(&activity_lock);
    activity_free();
    pthread_mutex_unlock(&activity_lock);
}
