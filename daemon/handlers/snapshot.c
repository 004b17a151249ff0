/* io.pocketenv.sandbox.createSnapshot, getSnapshots, getSnapshot,
 * deleteSnapshot, forkSandbox, restoreSnapshot (our lexicons): parse, call the snapshots
 * below the handlers (sandbox-snapshots.c: taking, recording, removing,
 * their views) and answer. A snapshot belongs to its owner, not to its
 * sandbox; another user's snapshot answers exactly as a missing one.
 * Handlers on the loop thread; store and runtime work on workers. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core/fs.h"
#include "core/log.h"
#include "core/util.h"
#include "daemon.h"
#include "pocketenv/store-snapshots.h"
#include "resource-limits.h"
#include "sandbox-find.h"
#include "snapshots.h"

#define TTL_MAX (365LL * 24 * 3600)
#define DESCRIPTION_MAX 1000
#define SANDBOX_NOT_FOUND "SandboxNotFound"
#define SNAPSHOT_NOT_FOUND "SnapshotNotFound"
#define FORK_MAX 100
#define FORK_TTL 3600 /* the snapshot a fork makes: long enough to make more */

/* Can snapshots hold memory (docs/design/checkpoint.md)? Asked of the
 * host once (`criu check`, up to 10 s), on the worker of the first call
 * that reports it; never, so far, since no checkpoint is built: a host
 * that passes the check is reported as such, still unavailable. */
static pthread_once_t ckpt_once = PTHREAD_ONCE_INIT;
static bool ckpt_host;
static char *ckpt_reason; /* kept for the daemon's life */

static void ckpt_probe(void)
{
    ckpt_host = pe_sandboxes_checkpoint_probe(&ckpt_reason) == 1;
    pe_log_info("event=checkpoint_probe host_supported=%d reason=\"%s\"", ckpt_host, ckpt_reason);
}

static json_t *memory_checkpoint(void)
{
    pthread_once(&ckpt_once, ckpt_probe);
    return json_pack("{s:b, s:b, s:s}", "available", 0, "hostSupported", ckpt_host, "reason",
                     ckpt_host ? "this host passes criu check, but pocketenv does not "
                                 "checkpoint memory yet"
                               : ckpt_reason);
}

/* A job's after: its work may have evicted or deleted snapshots. */
static void purge_after(pe_daemon_job *job)
{
    pe_daemon_snapshots_purge_soon(job->d);
}

static bool check_sandbox(pe_daemon_job *job, pe_store *s, pe_store_sandbox *sb)
{
    int r = 0;

    if (pe_daemon_transfer_sandbox(job->d, s, job->did, job->id, true, sb, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, job->err.code == PE_ENOENT ? SANDBOX_NOT_FOUND : NULL);
        return false;
    }
    /* Snapshots are the local runtime's layers; a remote sandbox's are its
     * provider's, where its adapter declares them. */
    if (pe_sandbox_is_remote(sb) && !(pe_sandbox_caps(&job->d->sx, sb) & PE_CAP_SNAPSHOT))
        r = pe_err_set(&job->err, PE_ENOTCAP, 0, "not supported by %s: snapshot", sb->backend);
    else if (pe_sandbox_is_remote(sb) && sb->provider_id == NULL)
        r = pe_err_set(&job->err, PE_ESTATE, 0, "the sandbox is still being created");
    else if (!pe_sandbox_is_remote(sb) && !pe_daemon_is_mine(job->d, sb))
        r = pe_err_set(&job->err, PE_ESTATE, 0, "the sandbox is not run by this daemon");
    else if (sb->status == PE_STORE_INITIALIZING)
        r = pe_err_set(&job->err, PE_ESTATE, 0, "the sandbox is still being created");
    if (r < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
        pe_store_sandbox_clear(sb);
        return false;
    }
    if (sb->status == PE_STORE_FAILED) {
        pe_err_set(&job->err, PE_ESTATE, 0, "sandbox %s has FAILED: it has no state to snapshot",
                   sb->name);
        pe_daemon_job_fail(job, &job->err, NULL);
        pe_store_sandbox_clear(sb);
        return false;
    }
    return true;
}

static void create_work(pe_daemon_job *job, pe_store *s)
{
    const char *name = json_string_value(json_object_get(job->in, "name"));
    json_int_t ttl = json_integer_value(json_object_get(job->in, "ttl"));
    pe_store_snapshot old;
    pe_store_sandbox sb;
    json_t *v = NULL;
    pe_err e2;

    if (!check_sandbox(job, s, &sb))
        return;
    pe_err_clear(&e2);
    if (pe_store_snapshot_get(s, job->did, name, &old, &e2) == 0) {
        pe_store_snapshot_clear(&old);
        pe_err_set(&job->err, PE_EEXIST, 0, "a snapshot named %s exists", name);
        pe_daemon_job_fail(job, &job->err, NULL);
        pe_store_sandbox_clear(&sb);
        return;
    }
    if (pe_daemon_snapshot_take(job, s, &sb, name, ttl > 0 ? ttl : PE_SNAPSHOT_TTL_DEFAULT,
                                json_string_value(json_object_get(job->in, "description")),
                                &v) == 0)
        job->out = json_pack("{s:o}", "snapshot", v);
    pe_store_sandbox_clear(&sb);
}

/* A snapshot's name: 1-63 of [A-Za-z0-9_.-] starting with a letter or
 * digit, never shaped as an id (a lookup takes either). */
static int check_name(const char *name, pe_err *err)
{
    if (name == NULL || !pe_name_valid(name) || strncmp(name, "snp_", 4) == 0)
        return pe_err_set(err, PE_EINVAL, 0,
                          "invalid snapshot name: use 1-63 of [A-Za-z0-9_.-], starting with a "
                          "letter or digit (not snp_)");
    return 0;
}

static void create_handler(pe_xrpc_request *req, void *ud)
{
    pe_daemon *d = ud;
    cleanup_free char *did = pe_daemon_auth(d, req);
    const char *desc = json_string_value(json_object_get(req->body, "description"));
    json_t *ttl = json_object_get(req->body, "ttl");
    pe_daemon_job *job;
    pe_err err;

    if (did == NULL)
        return;
    pe_err_clear(&err);
    if (check_name(json_string_value(json_object_get(req->body, "name")), &err) < 0 ||
        (desc && strlen(desc) > DESCRIPTION_MAX &&
         pe_err_set(&err, PE_EINVAL, 0, "description longer than %d bytes", DESCRIPTION_MAX)) ||
        (ttl && (json_integer_value(ttl) <= 0 || json_integer_value(ttl) > TTL_MAX) &&
         pe_err_set(&err, PE_EINVAL, 0, "ttl must be 1 to %lld seconds", TTL_MAX))) {
        pe_xrpc_respond_err(req, &err);
        return;
    }
    job = pe_daemon_job_new(d, req, did, create_work);
    job->id = pe_xstrdup(json_string_value(json_object_get(req->params, "id")));
    job->in = json_deep_copy(req->body);
    job->kind = PE_JOB_LONG;
    job->after = purge_after; /* retention may have evicted one */
    pe_daemon_job_submit(job);
}

/* ---- getSnapshots, getSnapshot ---- */

static void list_work(pe_daemon_job *job, pe_store *s)
{
    pe_store_snapshot *list = NULL;
    size_t n = 0;
    json_t *arr;

    if (pe_store_snapshot_list(s, job->did, &list, &n, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
        return;
    }
    arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, pe_daemon_snapshot_view(job->d, &list[i]));
    job->out = json_pack("{s:o, s:o}", "snapshots", arr, "memoryCheckpoint", memory_checkpoint());
    pe_store_snapshot_list_free(list, n);
}

static bool lookup(pe_daemon_job *job, pe_store *s, pe_store_snapshot *v)
{
    if (pe_store_snapshot_get(s, job->did, job->id, v, &job->err) == 0)
        return true;
    pe_daemon_job_fail(job, &job->err, job->err.code == PE_ENOENT ? SNAPSHOT_NOT_FOUND : NULL);
    return false;
}

static void get_work(pe_daemon_job *job, pe_store *s)
{
    pe_store_snapshot v;

    if (!lookup(job, s, &v))
        return;
    job->out = json_pack("{s:o, s:o}", "snapshot", pe_daemon_snapshot_view(job->d, &v),
                         "memoryCheckpoint", memory_checkpoint());
    pe_store_snapshot_clear(&v);
}

static void delete_work(pe_daemon_job *job, pe_store *s)
{
    pe_store_snapshot v;

    if (!lookup(job, s, &v))
        return;
    if (pe_daemon_snapshot_remove(job->d, s, &v, &job->err) < 0)
        pe_daemon_job_fail(job, &job->err, job->err.code == PE_ENOENT ? SNAPSHOT_NOT_FOUND : NULL);
    else
        pe_log_info("event=snapshot_deleted snapshot=%s", v.id);
    pe_store_snapshot_clear(&v);
}

static void with_id(pe_xrpc_request *req, void *ud, pe_daemon_work_fn work)
{
    pe_daemon *d = ud;
    cleanup_free char *did = pe_daemon_auth(d, req);

    if (did)
        pe_daemon_submit(d, req, did, work, json_string_value(json_object_get(req->params, "id")),
                         NULL);
}

static void list_handler(pe_xrpc_request *req, void *ud)
{
    with_id(req, ud, list_work);
}

static void get_handler(pe_xrpc_request *req, void *ud)
{
    with_id(req, ud, get_work);
}

static void delete_handler(pe_xrpc_request *req, void *ud)
{
    pe_daemon *d = ud;
    cleanup_free char *did = pe_daemon_auth(d, req);
    pe_daemon_job *job;

    if (did == NULL)
        return;
    job = pe_daemon_job_new(d, req, did, delete_work);
    job->id = pe_xstrdup(json_string_value(json_object_get(req->params, "id")));
    job->after = purge_after;
    pe_daemon_job_submit(job);
}

/* ---- forkSandbox ---- */

/* A short random tag, lower-case letters and digits (sandbox names). */
static void random_tag(char out[5])
{
    static const char b36[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    unsigned char r[4];

    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
        abort(); /* the kernel's CSPRNG does not fail once booted */
    for (int i = 0; i < 4; i++)
        out[i] = b36[r[i] % 36];
    out[4] = '\0';
}

/* Rows of count new sandboxes on snapshot snid, sized and placed as src,
 * within the owner's quotas: all or none. Their views in arr. */
static int insert_forks(pe_daemon_job *job, pe_store *s, const pe_store_sandbox *src,
                        const char *snid, const char *tag, json_int_t count, json_t *arr)
{
    cleanup_free char *base = pe_xasprintf(PE_SNAPSHOT_BASE "%s", snid);
    char **ids = pe_xcalloc((size_t)count, sizeof(char *));
    json_int_t made = 0;
    cleanup_free char *cred = NULL, *cred_shown = NULL;
    int r = 0;

    /* Each remote fork runs with the credential its source runs with. */
    if (pe_sandbox_is_remote(src) &&
        pe_sandbox_cred_copy(s, src, &cred, &cred_shown, &job->err) < 0)
        return -1;
    pe_daemon_quota_lock();
    for (; made < count && r == 0; made++) {
        cleanup_free char *name =
            pe_xasprintf("%.40s-%s-%lld", src->name, tag, (long long)made + 1);
        pe_store_sandbox sb = *src, got;
        sb.id = ids[made] = pe_store_new_id("sbx_");
        sb.name = name;
        sb.base = base;
        /* a remote fork is made by its provider (run_work): no node */
        sb.provider_id = pe_sandbox_is_remote(src) ? NULL : job->d->node;
        sb.node = job->d->node; /* supervises it, if remote (housekeeping.c) */
        sb.status = PE_STORE_INITIALIZING;
        sb.status_reason = NULL;
        sb.repo = NULL;
        sb.uri = NULL;
        sb.started_at = sb.created_at = sb.updated_at = 0;
        r = pe_daemon_quota_new_sandbox(job->d, s, &sb, &job->err);
        if (r == 0)
            r = pe_store_sandbox_insert(s, &sb, &job->err);
        if (r == 0 && cred)
            r = pe_store_cred_put(s, sb.id, job->did, src->backend, cred, cred_shown, &job->err);
        if (r == 0 && (r = pe_store_sandbox_get(s, sb.id, &got, &job->err)) == 0) {
            json_array_append_new(arr, pe_daemon_sandbox_view(&got));
            pe_store_sandbox_clear(&got);
        }
    }
    pe_daemon_quota_unlock();
    for (json_int_t i = 0; i < made; i++) {
        if (r < 0) /* all or nothing */
            pe_store_sandbox_delete(s, ids[i], NULL);
        free(ids[i]);
    }
    free(ids);
    return r;
}

static void fork_work(pe_daemon_job *job, pe_store *s)
{
    json_int_t count = json_integer_value(json_object_get(job->in, "count"));
    json_int_t ttl = json_integer_value(json_object_get(job->in, "ttl"));
    cleanup_free char *name = NULL;
    pe_store_sandbox sb;
    json_t *v = NULL, *arr;
    char tag[5];

    if (!check_sandbox(job, s, &sb))
        return;
    /* a fork is sandboxes made from a snapshot: where the provider can
     * (Sprites' checkpoints restore their own sprite only) */
    if (pe_sandbox_is_remote(&sb) && !(pe_sandbox_caps(&job->d->sx, &sb) & PE_CAP_SNAPSHOT_BASE)) {
        pe_err_set(&job->err, PE_ENOTCAP, 0, "not supported by %s: snapshot-base (%s)", sb.backend,
                   PE_SNAPSHOT_BASE_WHY);
        pe_daemon_job_fail(job, &job->err, NULL);
        pe_store_sandbox_clear(&sb);
        return;
    }
    random_tag(tag);
    name = pe_xasprintf("%.40s-fork-%s", sb.name, tag);
    if (pe_daemon_snapshot_take(job, s, &sb, name, ttl > 0 ? ttl : FORK_TTL, "made by forkSandbox",
                                &v) < 0) {
        pe_store_sandbox_clear(&sb);
        return;
    }
    arr = json_array();
    if (insert_forks(job, s, &sb, json_string_value(json_object_get(v, "id")), tag,
                     count > 0 ? count : 1, arr) < 0) {
        pe_store_snapshot row = {.id = (char *)json_string_value(json_object_get(v, "id"))};
        pe_store_snapshot_get(s, job->did, row.id, &row, NULL);
        pe_daemon_snapshot_remove(job->d, s, &row, &(pe_err){0});
        pe_store_snapshot_clear(&row);
        pe_daemon_job_fail(job, &job->err,
                           job->err.code == PE_XRPC_EFORBIDDEN ? PE_DAEMON_QUOTA_ERROR : NULL);
        json_decref(arr);
    } else {
        job->out = json_pack("{s:O, s:O, s:o}", "snapshot", json_object_get(v, "id"), "frozenMs",
                             json_object_get(v, "frozenMs"), "sandboxes", arr);
        /* For fork_after: the answer (job->out) is sent before it runs. */
        json_object_set(job->in, "forks", arr);
        pe_log_info("event=fork sandbox=%s count=%lld", sb.id, (long long)json_array_size(arr));
    }
    json_decref(v);
    pe_store_sandbox_clear(&sb);
}

/* Loop thread, the answer sent: start every fork (as createSandbox's). */
static void fork_after(pe_daemon_job *job)
{
    json_t *e;
    size_t i;

    pe_daemon_snapshots_purge_soon(
        job->d); /* retention may have evicted one; a failed fork removed its own */
    if (job->failed)
        return;
    json_array_foreach(json_object_get(job->in, "forks"), i, e)
    {
        pe_daemon_sandbox_resume(job->d, job->did, json_string_value(json_object_get(e, "id")));
    }
}

static void fork_handler(pe_xrpc_request *req, void *ud)
{
    pe_daemon *d = ud;
    cleanup_free char *did = pe_daemon_auth(d, req);
    json_t *count = json_object_get(req->body, "count");
    json_t *ttl = json_object_get(req->body, "ttl");
    pe_daemon_job *job;
    pe_err err;

    if (did == NULL)
        return;
    pe_err_clear(&err);
    if ((count &&
         (!json_is_integer(count) || json_integer_value(count) < 1 ||
          json_integer_value(count) > FORK_MAX) &&
         pe_err_set(&err, PE_EINVAL, 0, "count must be 1 to %d", FORK_MAX)) ||
        (ttl && (json_integer_value(ttl) <= 0 || json_integer_value(ttl) > TTL_MAX) &&
         pe_err_set(&err, PE_EINVAL, 0, "ttl must be 1 to %lld seconds", TTL_MAX))) {
        pe_xrpc_respond_err(req, &err);
        return;
    }
    job = pe_daemon_job_new(d, req, did, fork_work);
    job->id = pe_xstrdup(json_string_value(json_object_get(req->params, "id")));
    job->in = json_deep_copy(req->body);
    job->kind = PE_JOB_LONG;
    job->after = fork_after;
    pe_daemon_job_submit(job);
}

/* ---- restoreSnapshot ---- */

/* The sandbox back to one of its own snapshots, in place, where its
 * provider can (PE_CAP_SNAPSHOT_RESTORE: Blaxel, Sprites). A local
 * sandbox's snapshots are layers a new sandbox is made on, never put back
 * under a running one: 501 saying what to do instead. */
static int restore_check(pe_daemon_job *job, const pe_store_sandbox *sb, const pe_store_snapshot *v)
{
    if (v->sandbox_id == NULL || strcmp(v->sandbox_id, sb->id) != 0)
        return pe_err_set(&job->err, PE_EINVAL, 0,
                          "snapshot %s was taken of another sandbox: a snapshot is restored onto "
                          "the sandbox it was taken of (make a new sandbox from it: base "
                          "snapshot:%s)",
                          v->name, v->name);
    if (!pe_sandbox_is_remote(sb))
        return pe_err_set(&job->err, PE_ENOTCAP, 0,
                          "not supported by local: snapshot-restore (make a new sandbox from it: "
                          "base snapshot:%s)",
                          v->name);
    if (!(pe_sandbox_caps(&job->d->sx, sb) & PE_CAP_SNAPSHOT_RESTORE))
        return pe_err_set(&job->err, PE_ENOTCAP, 0,
                          "not supported by %s: snapshot-restore (make a new sandbox from it: "
                          "base snapshot:%s)",
                          sb->backend, v->name);
    if (sb->provider_id == NULL || sb->status == PE_STORE_INITIALIZING)
        return pe_err_set(&job->err, PE_ESTATE, 0, "the sandbox is still being created");
    if (sb->status == PE_STORE_FAILED)
        return pe_err_set(&job->err, PE_ESTATE, 0, "sandbox %s has FAILED", sb->name);
    return 0;
}

static void restore_work(pe_daemon_job *job, pe_store *s)
{
    const char *key = json_string_value(json_object_get(job->in, "snapshot"));
    pe_store_snapshot v;
    pe_store_sandbox sb;
    int r;

    if (pe_daemon_transfer_sandbox(job->d, s, job->did, job->id, true, &sb, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, job->err.code == PE_ENOENT ? SANDBOX_NOT_FOUND : NULL);
        return;
    }
    if (pe_store_snapshot_get(s, job->did, key, &v, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, job->err.code == PE_ENOENT ? SNAPSHOT_NOT_FOUND : NULL);
        pe_store_sandbox_clear(&sb);
        return;
    }
    r = restore_check(job, &sb, &v);
    if (r == 0) {
        pe_daemon_hold(job->d, sb.id);
        r = pe_sandbox_snapshot_restore(&job->d->sx, s, &sb, v.layer, &job->err);
        pe_daemon_release(job->d, sb.id);
    }
    if (r < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
    } else {
        job->out = json_pack("{s:o, s:s}", "snapshot", pe_daemon_snapshot_view(job->d, &v),
                             "sandboxId", sb.id);
        pe_log_info("event=snapshot_restored sandbox=%s snapshot=%s", sb.id, v.id);
    }
    pe_store_snapshot_clear(&v);
    pe_store_sandbox_clear(&sb);
}

static void restore_handler(pe_xrpc_request *req, void *ud)
{
    pe_daemon *d = ud;
    cleanup_free char *did = pe_daemon_auth(d, req);
    const char *key = json_string_value(json_object_get(req->body, "snapshot"));
    pe_daemon_job *job;
    pe_err err;

    if (did == NULL)
        return;
    pe_err_clear(&err);
    if (key == NULL || key[0] == '\0' || strlen(key) > 63) {
        pe_err_set(&err, PE_EINVAL, 0, "snapshot must be a snapshot's name or id");
        pe_xrpc_respond_err(req, &err);
        return;
    }
    job = pe_daemon_job_new(d, req, did, restore_work);
    job->id = pe_xstrdup(json_string_value(json_object_get(req->params, "id")));
    job->in = json_deep_copy(req->body);
    job->kind = PE_JOB_LONG;
    pe_daemon_job_submit(job);
}

int pe_daemon_register_snapshots(pe_daemon *d, pe_err *err)
{
    if (pe_xrpc_register(d->srv, "io.pocketenv.sandbox.createSnapshot", create_handler, d, err) <
            0 ||
        pe_xrpc_register(d->srv, "io.pocketenv.sandbox.getSnapshots", list_handler, d, err) < 0 ||
        pe_xrpc_register(d->srv, "io.pocketenv.sandbox.getSnapshot", get_handler, d, err) < 0 ||
        pe_xrpc_register(d->srv, "io.pocketenv.sandbox.deleteSnapshot", delete_handler, d, err) <
            0 ||
        pe_xrpc_register(d->srv, "io.pocketenv.sandbox.forkSandbox", fork_handler, d, err) < 0 ||
        pe_xrpc_register(d->srv, "io.pocketenv.sandbox.restoreSnapshot", restore_handler, d, err) <
            0)
        return -1;
    return 0;
}
