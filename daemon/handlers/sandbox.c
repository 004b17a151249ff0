/* io.pocketenv.sandbox.*: create, get, start, stop, delete, exec.
 *
 * Handlers run on the loop thread: they authenticate, copy what the work
 * needs out of the request and queue a job; the store and the runtime are
 * only touched on worker threads. Ownership is checked in every job:
 * another user's sandbox (by id or by name) answers exactly as a missing
 * one does, SandboxNotFound, so ids cannot be probed.
 *
 * Lifecycle (docs/design/daemon.md): create writes the row INITIALIZING and
 * answers; a background job then creates and starts the runtime sandbox
 * (named by the row's id) and moves the row to RUNNING, or FAILED with the
 * reason. A row deleted meanwhile makes that job remove what it made.
 * That background half, and the view, are sandbox-run.c's.
 *
 * What upstream's clients send is taken as they mean it (docs/compat.md):
 * a sandbox keeps the provider name it was asked for and says which
 * backend runs it (providers.h); a base may be a template's at-uri, and a
 * base this daemon does not have is refused before anything is made
 * (templates.h); a secret may come in plain text and is sealed on
 * arrival; startSandbox's keepAlive is kept on the row. */
#include <stdbool.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "cluster.h"
#include "daemon.h"
#include "sandbox.h"
#include "resource-limits.h"
#include "idle.h"
#include "pause.h"
#include "pool.h"
#include "providers.h"
#include "records.h"
#include "read-cache.h"
#include "netpolicy.h"
#include "sandbox-env.h"
#include "sandbox-find.h"
#include "sandbox-keys.h"
#include "sandbox-services.h"
#include "snapshots.h"
#include "supervise.h"
#include "templates.h"

#define NAME_MAX_LEN 50
#define EXEC_OUTPUT_MAX (1024 * 1024) /* per stream */
#define SECRET_MAX (8 * 1024)         /* a secret sent in plain text, as addSecret's */
#define STOP_TIMEOUT 10.0
#define NOT_FOUND "SandboxNotFound"

static const char TRUNCATED[] = "\n[output truncated]\n";

/* ---- names ---- */

/* Names are slugs: they end up in hostnames, URLs and log lines. */
static int check_name(const char *name, pe_err *err)
{
    size_t n = strlen(name);

    if (n == 0 || n > NAME_MAX_LEN)
        return pe_err_set(err, PE_EINVAL, 0, "name must be 1 to %d characters", NAME_MAX_LEN);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c == '-' && i > 0)))
            return pe_err_set(err, PE_EINVAL, 0,
                              "name must be lower-case letters, digits and '-', "
                              "starting with a letter or digit");
    }
    return 0;
}

/* ---- createSandbox ---- */

/* The row of a new sandbox, if the owner's quotas allow it: the check and
 * the insert under the quota lock. Without a given name, drawn is tried
 * first (a pooled sandbox's, NULL: none), then a generated name, which can
 * collide: drawn again a few times. *name is the name tried last. */
static int insert_within_quota(pe_daemon_job *job, pe_store *s, pe_store_sandbox *sb,
                               const char *given, const char *drawn, char **name)
{
    int r;

    pe_daemon_quota_lock();
    r = pe_daemon_quota_new_sandbox(job->d, s, sb, &job->err);
    for (int tries = 0; r == 0; tries++) {
        free(*name);
        *name = given                 ? pe_xstrdup(given)
                : tries == 0 && drawn ? pe_xstrdup(drawn)
                                      : pe_sandbox_slug_name();
        sb->name = *name;
        r = pe_store_sandbox_insert(s, sb, &job->err);
        if (r == 0 || given || job->err.code != PE_EEXIST || tries == 8)
            break;
        r = 0;
    }
    pe_daemon_quota_unlock();
    return r;
}

/* The base of a remote create: a plain base of ours (busybox, debian) is
 * the provider's default image; another base of this daemon (a template
 * it builds, an import) no provider has, so it is refused; any other name
 * is the provider's image, template, snapshot or blueprint
 * (remote_image). */
static bool remote_base(pe_daemon_job *job, const char *base, const char *backend)
{
    pe_err e;

    pe_err_clear(&e);
    /* a snapshot its provider keeps (pe_daemon_snapshot_base checked) */
    if (strncmp(base, PE_SNAPSHOT_BASE, strlen(PE_SNAPSHOT_BASE)) == 0)
        return true;
    if (pe_daemon_base_plain(base) || (pe_daemon_base_check(job->d, base, &e) < 0 &&
                                       e.code == PE_EINVAL && pe_sandbox_image_valid(base)))
        return true;
    pe_err_set(&job->err, PE_EINVAL, 0,
               "base %s is a template of this daemon, which %s does not have: name an image or "
               "template of %s, or busybox or debian for its default image",
               base, backend, backend);
    pe_daemon_job_fail(job, &job->err, NULL);
    return false;
}

/* What a remote sandbox's provider makes it from (remote_base): NULL for
 * its default image. */
static const char *remote_image(const char *base)
{
    return pe_daemon_base_plain(base) ? NULL : base;
}

/* The row a create makes, from its input (checked by the handler): false,
 * with the job failed, if this daemon will not make it. sb's strings point
 * into in; *topics is the caller's to free. */
static bool plan_sandbox(pe_daemon_job *job, const json_t *in, pe_store_sandbox *sb, char **topics)
{
    const char *provider = json_string_value(json_object_get(in, "provider"));

    /* Which backend serves that provider name is decided here, once. */
    if (pe_daemon_provider_route(&job->d->providers, provider, &sb->provider, &sb->backend,
                                 &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err,
                           job->err.code == PE_EUNSUP ? PE_PROVIDER_OFF_ERROR : NULL);
        return false;
    }
    sb->base = json_string_value(json_object_get(in, "base"));
    if (pe_sandbox_is_remote(sb)) {
        if (!remote_base(job, sb->base, sb->backend))
            return false;
        if (!json_is_null(json_object_get(in, "networkPolicy")) &&
            json_object_get(in, "networkPolicy")) {
            pe_err_set(&job->err, PE_ENOTCAP, 0, "not supported by %s: %s", sb->backend,
                       PE_DAEMON_NETPOLICY_REMOTE_WHY);
            pe_daemon_job_fail(job, &job->err, NULL);
            return false;
        }
    } else if (pe_daemon_base_check(job->d, sb->base, &job->err) < 0) {
        /* A base we cannot run is refused now, not accepted and then FAILED. */
        pe_daemon_job_fail(job, &job->err,
                           job->err.code == PE_EUNSUP ? PE_TEMPLATE_MISSING_ERROR : NULL);
        return false;
    }
    if (json_object_get(in, "topics"))
        *topics = json_dumps(json_object_get(in, "topics"), JSON_COMPACT);
    sb->owner_did = job->did;
    sb->description = json_string_value(json_object_get(in, "description"));
    sb->repo = json_string_value(json_object_get(in, "repo"));
    sb->readme = json_string_value(json_object_get(in, "readme"));
    sb->topics = *topics;
    sb->provider_id = job->d->node; /* which daemon runs it: housekeeping.c */
    sb->node = job->d->node;        /* and supervises it, if remote (the same) */
    sb->status = PE_STORE_INITIALIZING;
    sb->keep_alive = json_is_true(json_object_get(in, "keepAlive"));
    /* The sizes it runs with, checked by the handler already. */
    if (pe_daemon_limits_request(&job->d->lim, in, sb, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
        return false;
    }
    /* A remote provider's defaults are its own: only the sizes asked for
     * go to it (0: unset). */
    if (pe_sandbox_is_remote(sb)) {
        sb->vcpus = json_object_get(in, "vcpus") ? sb->vcpus : 0;
        sb->memory = json_object_get(in, "memory") ? sb->memory : 0;
        sb->disk = json_object_get(in, "disk") ? sb->disk : 0;
    }
    return true;
}

/* A base given as an at:// URI whose record key names no base here: the
 * record it points to says which (records.c); the new sandbox's record
 * then refers to it by uri and cid (in.baseRef). Upstream's convention,
 * the record key naming the template, needs no request. */
static bool base_from_record(pe_daemon_job *job, json_t *in)
{
    const char *uri = json_string_value(json_object_get(in, "baseUri"));
    const char *base = json_string_value(json_object_get(in, "base"));
    cleanup_free char *name = NULL;
    json_t *ref = NULL;
    pe_err e;

    pe_err_clear(&e);
    if (uri == NULL || pe_daemon_base_check(job->d, base, &e) == 0 || e.code == PE_EUNSUP)
        return true;
    if (pe_daemon_record_template(job->d, uri, &name, &ref, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
        return false;
    }
    json_object_set_new(in, "base", json_string(name));
    json_object_set_new(in, "baseRef", ref);
    return true;
}

/* A remote sandbox is made before createSandbox answers, so that what
 * the provider says (its key refused, no answer) is the answer, and a
 * failure leaves no row (and, the adapter's promise, nothing remote). */
static int create_remote_now(pe_daemon_job *job, pe_store *s, const char *id, pe_store_sandbox *got)
{
    cleanup_free char *note = NULL;
    pe_store_sandbox sb;
    char *rid = NULL;
    pe_err e2;

    memset(got, 0, sizeof(*got));
    if (pe_store_sandbox_get(s, id, &sb, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
        return -1;
    }
    if ((strncmp(sb.base, PE_SNAPSHOT_BASE, strlen(PE_SNAPSHOT_BASE)) == 0
             ? pe_daemon_snapshot_remote_create(job->d, s, &sb, &rid, &job->err)
             : pe_sandbox_create_remote(&job->d->sx, s, &sb, remote_image(sb.base), &rid,
                                        &job->err)) < 0) {
        pe_log_warn("sandbox %s: create on %s failed: %s", sb.id, sb.backend, job->err.msg);
        pe_store_sandbox_delete(s, id, NULL);
        pe_daemon_job_fail(job, &job->err, NULL);
        pe_store_sandbox_clear(&sb);
        return -1;
    }
    free((char *)sb.provider_id);
    sb.provider_id = rid;                                /* where it now is, for the undo below */
    note = pe_sandbox_started_note(&job->d->sx, s, &sb); /* what it runs without */
    if (pe_store_sandbox_set_status(s, id, PE_STORE_RUNNING, note, PE_STORE_INITIALIZING,
                                    &job->err) < 0 ||
        pe_store_sandbox_get(s, id, got, &job->err) < 0) {
        /* deleted while it was being made: undo there too */
        pe_err_clear(&e2);
        if (pe_sandbox_remove(&job->d->sx, s, &sb, &e2) < 0)
            pe_log_warn("sandbox %s: %s sandbox %s left after a delete during its create: %s",
                        sb.id, sb.backend, rid, e2.msg);
        pe_store_sandbox_delete(s, id, NULL);
        pe_store_sandbox_clear(&sb);
        pe_daemon_job_fail(job, &job->err, NULL);
        return -1;
    }
    pe_store_sandbox_clear(&sb);
    return 0;
}

static void create_work(pe_daemon_job *job, pe_store *s)
{
    json_t *in = job->in;
    cleanup_free char *id = pe_store_new_id("sbx_");
    cleanup_free char *name = NULL;
    cleanup_free char *topics = NULL, *uri = NULL;
    const char *given = json_string_value(json_object_get(in, "name"));
    cleanup_free char *cred = NULL;
    cleanup_free char *cred_shown = NULL;
    pe_store_sandbox sb = {0}, got;
    pe_store_user u;
    pe_daemon_pooled *pooled;
    int r;

    if (pe_daemon_snapshot_base(job, s, in) < 0 || !base_from_record(job, in) ||
        !plan_sandbox(job, in, &sb, &topics))
        return;
    /* A remote sandbox: its credential as sent (or the operator's), and
     * no node: its provider runs it. */
    if (pe_sandbox_is_remote(&sb)) {
        sb.provider_id = NULL;
        if (pe_sandbox_creds_from_request(&job->d->sx, sb.backend, in, &cred, &cred_shown,
                                          &job->err) < 0) {
            pe_daemon_job_fail(job, &job->err, NULL);
            return;
        }
    }
    if (pe_daemon_user_ensure(s, job->did, &u, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
        return;
    }
    pe_store_user_clear(&u);
    pooled = pe_daemon_pool_take(job->d, in, &sb); /* a warm sandbox, under its id */
    if (pooled) {
        free(id);
        id = pe_xstrdup(pooled->id);
    }
    sb.id = id;
    sb.uri = uri = pe_daemon_record_new_uri(job->d, job->did); /* a record's, if signed in */
    r = insert_within_quota(job, s, &sb, given, pooled ? pooled->name : NULL, &name);
    if (r < 0) {
        if (pooled) /* used once or never: it does not go back */
            pe_daemon_pool_discard(job->d, pooled);
        if (job->err.code == PE_EEXIST)
            pe_err_set(&job->err, PE_EEXIST, 0, "you already have a sandbox named %s", name);
        pe_daemon_job_fail(job, &job->err,
                           job->err.code == PE_XRPC_EFORBIDDEN ? PE_DAEMON_QUOTA_ERROR : NULL);
        return;
    }
    /* A pooled sandbox already runs with the policy asked for (pool.c
     * takes no create with another), which its runtime state keeps. */
    if (pe_daemon_create_resources_store(s, id, in, &job->err) < 0 ||
        (!pooled && pe_daemon_netpolicy_create_store(job->d, id, in, &job->err) < 0) ||
        (cred && pe_store_cred_put(s, id, job->did, sb.backend, cred, cred_shown, &job->err) < 0) ||
        pe_daemon_idle_create_store(s, id, in, &job->err) < 0) {
        pe_store_sandbox_delete(s, id, NULL); /* all or nothing */
        if (pooled)
            pe_daemon_pool_discard(job->d, pooled);
        pe_daemon_job_fail(job, &job->err, NULL);
        return;
    }
    pe_daemon_record_sync_base(job->d, s, id, json_object_get(in, "baseRef"));
    /* Claimed: RUNNING now, no background start (create_after). */
    job->claimed = pooled && pe_daemon_pool_claim(job->d, s, pooled, &job->init_pidfd) == 0;
    if (pe_store_sandbox_get(s, id, &got, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
        return;
    }
    if (pe_sandbox_is_remote(&got)) {
        pe_store_sandbox_clear(&got);
        if (create_remote_now(job, s, id, &got) < 0)
            return;
        job->out = pe_daemon_sandbox_view(&got);
        pe_store_sandbox_clear(&got);
        if (sb.repo) /* in the background, as a local sandbox's first start does */
            pe_daemon_repo_clone_later(job->d, job->did, id, sb.repo);
        return; /* job->id stays NULL: nothing runs after it here */
    }
    job->out = pe_daemon_sandbox_view(&got);
    pe_store_sandbox_clear(&got);
    free(job->id);
    job->id = pe_steal_ptr(&id);
}

static void create_after(pe_daemon_job *job)
{
    if (!job->failed && job->id != NULL && job->claimed)
        pe_daemon_sandbox_clone_after(job); /* a warm sandbox runs already: its repo, if any */
    else if (!job->failed && job->id != NULL)
        pe_daemon_sandbox_resume(job->d, job->did, job->id);
}

/* createSandbox's secrets as the SDK's builder sends them: {name, value}
 * with the value in plain text, sealed on arrival (pe_daemon_seal_if_plain). */
static int seal_plain_secrets(pe_daemon *d, json_t *body, pe_err *err)
{
    json_t *list = json_object_get(body, "secrets"), *e;
    size_t i;

    json_array_foreach(list, i, e)
    {
        if (pe_daemon_seal_if_plain(d, e, "value", SECRET_MAX, err) < 0)
            return pe_err_prefix(err, "secrets[%zu]", i);
    }
    return 0;
}

/* The body a create works from: base as the name of a base (for a
 * remote provider, also an image reference of its), secrets sealed. NULL
 * with err set if it cannot be. */
static json_t *create_input(pe_daemon *d, const json_t *body, bool remote, pe_err *err)
{
    json_t *in = json_deep_copy(body);
    const char *given = json_string_value(json_object_get(in, "base"));
    cleanup_free char *base = NULL;

    if (remote && strncmp(given, "at://", 5) != 0 && pe_sandbox_image_valid(given) &&
        pe_daemon_base_name(given, &base, err) < 0) {
        pe_err_clear(err);
        base = pe_xstrdup(given); /* "ubuntu:22.04": the provider's image */
    }
    if ((base == NULL && pe_daemon_base_name(given, &base, err) < 0) ||
        seal_plain_secrets(d, in, err) < 0) {
        json_decref(in);
        return NULL;
    }
    if (strncmp(json_string_value(json_object_get(in, "base")), "at://", 5) == 0)
        json_object_set(in, "baseUri", json_object_get(in, "base")); /* base_from_record's */
    json_object_set_new(in, "base", json_string(base));
    return in;
}

/* The create goes to a remote provider (the job then waits on it). */
static bool remote_route(pe_daemon *d, const json_t *in)
{
    const char *provider = NULL, *backend = NULL;
    pe_err e;

    pe_err_clear(&e);
    return pe_daemon_provider_route(&d->providers,
                                    json_string_value(json_object_get(in, "provider")), &provider,
                                    &backend, &e) == 0 &&
           strcmp(backend, PE_BACKEND_LOCAL) != 0;
}

static void create_sandbox(pe_xrpc_request *req, void *ud)
{
    pe_daemon *d = ud;
    cleanup_free char *did = pe_daemon_auth(d, req);
    const char *name = json_string_value(json_object_get(req->body, "name"));
    const char *repo = json_string_value(json_object_get(req->body, "repo"));
    pe_store_sandbox sizes = {0};
    pe_daemon_job *job;
    json_t *in;
    pe_err err;

    if (did == NULL)
        return;
    pe_err_clear(&err);
    if (name && check_name(name, &err) < 0) {
        pe_xrpc_respond_err(req, &err);
        return;
    }
    if (repo && !pe_daemon_repo_check(repo, &err)) {
        pe_xrpc_respond_err(req, &err);
        return;
    }
    in = create_input(d, req->body, remote_route(d, req->body), &err);
    if (in == NULL || pe_daemon_netpolicy_create_check(in, &err) < 0 ||
        pe_daemon_idle_create_check(in, &err) < 0 ||
        pe_daemon_create_resources_check(d, in, &err) < 0 ||
        pe_daemon_limits_request(&d->lim, in, &sizes, &err) < 0) {
        json_decref(in);
        pe_xrpc_respond_err(req, &err);
        return;
    }
    job = pe_daemon_job_new(d, req, did, create_work);
    job->in = in;
    job->after = create_after;
    if (remote_route(d, in))
        job->kind = PE_JOB_LIFECYCLE; /* waits for the provider to make it */
    pe_daemon_job_submit(job);
}

/* ---- getSandbox, startSandbox, stopSandbox, deleteSandbox ---- */

static bool lookup(pe_daemon_job *job, pe_store *s, pe_store_sandbox *sb)
{
    return pe_daemon_job_sandbox(job, s, job->id, sb);
}

static void get_work(pe_daemon_job *job, pe_store *s)
{
    pe_store_sandbox sb;
    json_t *view, *rec;

    if (!lookup(job, s, &sb))
        return;
    view = pe_daemon_cluster_view(job->d, s, &sb);
    if ((rec = pe_daemon_record_view(s, sb.id)) != NULL) /* its record's state in the repository */
        json_object_set_new(view, "record", rec);
    job->out = json_pack("{s:o}", "sandbox", view);
    pe_store_sandbox_clear(&sb);
}

/* getSandbox's answer to keep in the read cache (read-cache.h): a copy,
 * since a local caller (pe_xrpc_call) owns the answer it is given. The
 * job's ud, set by get_sandbox (get_work is shared: the E2B API runs it
 * with a ud of its own). */
struct get_kept {
    uint64_t gen;
    json_t *out;
};

static void get_cached_work(pe_daemon_job *job, pe_store *s)
{
    struct get_kept *kept = job->ud;

    kept->gen = pe_store_write_gen(); /* before the read, see read-cache.h */
    get_work(job, s);
    if (!job->failed && job->out)
        kept->out = json_deep_copy(job->out);
}

static void get_kept_free(struct get_kept *kept)
{
    json_decref(kept->out);
    free(kept);
}

static void get_after(pe_daemon_job *job)
{
    struct get_kept *kept = job->ud;

    /* Only this daemon writes an SQLite store; a PostgreSQL one may be
     * shared by other daemons (nodes), whose writes reach the generation
     * through the store's notifications: its answers are kept only while
     * this node hears them (daemon/cluster-listen.c). */
    if (kept->out &&
        (strncmp(job->d->store_url, "postgres", 8) != 0 || pe_daemon_cluster_listening(job->d)))
        pe_daemon_read_cache_put(job->did, job->id, kept->gen, kept->out);
    get_kept_free(kept);
    job->ud = NULL;
}

/* getSandbox: from the read cache on the loop thread when it can be,
 * else read by a worker, whose answer is then kept. */
static void get_sandbox(pe_xrpc_request *req, void *ud)
{
    pe_daemon *d = ud;
    cleanup_free char *did = pe_daemon_auth(d, req);
    const char *id = json_string_value(json_object_get(req->params, "id"));
    struct get_kept *kept;
    pe_daemon_job *job;
    const char *text;
    size_t len;
    json_t *hit;

    if (did == NULL)
        return;
    hit = pe_daemon_read_cache_get(did, id, &text, &len);
    if (hit) {
        /* Over HTTP, the text dumped when the answer was kept: a hit then
         * costs a copy, not a JSON dump (issue 21's hot read). */
        if (req->call)
            pe_xrpc_respond(req, json_deep_copy(hit));
        else
            pe_xrpc_respond_relayed(req, 200, text, len);
        json_decref(hit);
        return;
    }
    kept = pe_xcalloc(1, sizeof(*kept));
    job = pe_daemon_job_new(d, req, did, get_cached_work);
    job->id = id ? pe_xstrdup(id) : NULL;
    job->ud = kept;
    job->after = get_after;
    if (pe_daemon_job_submit(job) < 0) /* answered and freed, without after */
        get_kept_free(kept);
}

/* Start and stop wait until create has finished with the sandbox. */
static bool still_creating(pe_daemon_job *job, const pe_store_sandbox *sb)
{
    if (sb->status != PE_STORE_INITIALIZING)
        return false;
    pe_err_set(&job->err, PE_ESTATE, 0, "sandbox %s is still being created", sb->name);
    pe_daemon_job_fail(job, &job->err, NULL);
    return true;
}

/* Start stopped sb if its owner's memory quota allows it. */
static void start_within_quota(pe_daemon_job *job, pe_store *s, const pe_store_sandbox *sb)
{
    int r;

    pe_daemon_quota_lock();
    r = pe_daemon_quota_start(job->d, s, sb, &job->err);
    pe_daemon_quota_unlock();
    if (r < 0) {
        pe_daemon_job_fail(job, &job->err,
                           job->err.code == PE_XRPC_EFORBIDDEN ? PE_DAEMON_QUOTA_ERROR : NULL);
        return;
    }
    if (pe_daemon_sandbox_run(job->d, sb, &job->init_pidfd, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
    } else {
        cleanup_free char *note = pe_sandbox_started_note(&job->d->sx, s, sb); /* what it lacks */
        if (pe_store_sandbox_set_status(s, sb->id, PE_STORE_RUNNING, note, -1, &job->err) < 0)
            pe_daemon_job_fail(job, &job->err, NULL);
    }
    pe_daemon_quota_started(sb);
}

/* startSandbox's keepAlive (upstream's `start --keep-alive`, the SDK's
 * start({keepAlive})), when given, replaces the row's: kept before the
 * start, so the idle stop never sees the sandbox running without it, and
 * put back if the start fails. Absent, the row's stays. */
static bool keep_alive_set(pe_daemon_job *job, pe_store *s, const char *id, bool on)
{
    if (pe_store_sandbox_set_keep_alive(s, id, on, &job->err) == 0)
        return true;
    pe_daemon_job_fail(job, &job->err, NULL);
    return false;
}

static void start_work(pe_daemon_job *job, pe_store *s)
{
    json_t *keep = json_object_get(job->in, "keepAlive");
    pe_store_sandbox sb;

    if (!lookup(job, s, &sb))
        return;
    job->out = json_object();
    if (!still_creating(job, &sb) &&
        (!json_is_boolean(keep) || keep_alive_set(job, s, sb.id, json_is_true(keep))) &&
        sb.status != PE_STORE_RUNNING) {
        start_within_quota(job, s, &sb);
        if (job->failed && json_is_boolean(keep))
            pe_store_sandbox_set_keep_alive(s, sb.id, sb.keep_alive, NULL);
    }
    free(job->id); /* the id, not the name, for clone_after */
    job->id = pe_xstrdup(sb.id);
    pe_store_sandbox_clear(&sb);
}

static void stop_work(pe_daemon_job *job, pe_store *s)
{
    pe_store_sandbox sb;

    if (!lookup(job, s, &sb))
        return;
    job->out = json_object();
    if (!still_creating(job, &sb) && sb.status == PE_STORE_RUNNING) {
        pe_daemon_unit_stop_sandbox(sb.id); /* its services, before the sandbox */
        if ((pe_sandbox_stop(&job->d->sx, s, &sb, &job->err) < 0 && job->err.code != PE_ESTATE) ||
            pe_store_sandbox_set_status(s, sb.id, PE_STORE_STOPPED, NULL, -1, &job->err) < 0)
            pe_daemon_job_fail(job, &job->err, NULL);
        pe_daemon_paused_note(s, &sb, false); /* the runtime thaws before it stops */
    }
    pe_store_sandbox_clear(&sb);
}

static void delete_work(pe_daemon_job *job, pe_store *s)
{
    pe_store_sandbox sb;
    int64_t t0, t1;
    bool removed;

    if (!lookup(job, s, &sb))
        return;
    pe_daemon_unit_forget_sandbox(sb.id); /* its services' processes and logs */
    pe_daemon_paused_forget(sb.id);
    pe_daemon_forget(job->d, sb.id);
    /* Runtime first: a row must never vanish while its processes live. */
    t0 = pe_monotonic_ms();
    removed = pe_sandbox_remove(&job->d->sx, s, &sb, &job->err) == 0 || job->err.code == PE_ENOENT;
    t1 = pe_monotonic_ms();
    if (removed)
        removed = pe_store_sandbox_delete(s, sb.id, &job->err) == 0;
    /* Which part, when a delete stalls (job.c logs the whole job). */
    if (pe_monotonic_ms() - t0 >= 2000)
        pe_log_info("delete sandbox %s: %lld ms removing it, %lld ms deleting its row", sb.id,
                    (long long)(t1 - t0), (long long)(pe_monotonic_ms() - t1));
    if (!removed) {
        pe_daemon_job_fail(job, &job->err, NULL);
    } else {
        pe_daemon_record_forget(job->d, s, sb.id); /* upstream leaves it behind */
        pe_daemon_snapshots_gone_with(job->d, s, &sb);
        job->out = json_object();
    }
    pe_store_sandbox_clear(&sb);
}

/* ---- exec ---- */

typedef struct outbuf {
    char *data;
    size_t len;
    bool cut;
    int fd;
} outbuf;

/* Read what fd has now; false at EOF or error. Past the cap, output is
 * read and dropped so the process never blocks on a full pipe. */
static bool drain(outbuf *b)
{
    char tmp[16384];

    for (;;) {
        ssize_t n = read(b->fd, tmp, sizeof(tmp));
        if (n == 0)
            return false;
        if (n < 0)
            return errno == EAGAIN || errno == EINTR;
        size_t room = EXEC_OUTPUT_MAX - b->len, take = (size_t)n < room ? (size_t)n : room;
        if (take < (size_t)n)
            b->cut = true;
        if (take > 0) {
            b->data = pe_xrealloc(b->data, b->len + take + 1);
            memcpy(b->data + b->len, tmp, take);
            b->len += take;
        }
    }
}

/* How a one-shot exec ended early, if it did. */
enum cut_short { RAN = 0, TIMED_OUT, STOPPED };

/* Collect both streams until the process ends (then what is left in the
 * pipes: a background child holding them open does not stall us). At the
 * deadline the process group is killed; when the daemon stops (stop_fd
 * readable) it gets SIGTERM, and SIGKILL STOP_GRACE_S later, so that the
 * daemon's exit never waits for an exec's timeout. */
#define STOP_GRACE_S 3.0
static void collect(pe_provider_proc *p, double timeout, int stop_fd, outbuf *out, outbuf *errb,
                    enum cut_short *why)
{
    double deadline = pe_monotonic_s() + timeout;
    bool killed = false;

    out->fd = p->stdout_fd;
    errb->fd = p->stderr_fd;
    fcntl(out->fd, F_SETFL, O_NONBLOCK);
    fcntl(errb->fd, F_SETFL, O_NONBLOCK);
    for (;;) {
        /* status_fd: the process has ended (a pidfd of it) */
        struct pollfd fds[4] = {
            {p->status_fd, POLLIN, 0},
            {out->fd, POLLIN, 0},
            {errb->fd, POLLIN, 0},
            {*why == RAN ? stop_fd : -1, POLLIN, 0},
        };
        double left = deadline - pe_monotonic_s();
        int ms;

        if (left <= 0 && !killed) {
            if (*why == RAN)
                *why = TIMED_OUT;
            killed = true;
            pe_provider_proc_kill_now(p);
            deadline = pe_monotonic_s() + 5; /* the kill is prompt; bound the wait anyway */
            left = 5;
        } else if (left <= 0) {
            break;
        }
        ms = (int)(left * 1000) + 1;
        if (poll(fds, 4, ms) < 0 && errno != EINTR)
            break;
        if (fds[3].revents & POLLIN) {
            *why = STOPPED;
            pe_provider_proc_kill(p);
            if (deadline - pe_monotonic_s() > STOP_GRACE_S)
                deadline = pe_monotonic_s() + STOP_GRACE_S;
        }
        if (fds[1].revents && out->fd >= 0 && !drain(out))
            out->fd = -1;
        if (fds[2].revents && errb->fd >= 0 && !drain(errb))
            errb->fd = -1;
        if (fds[0].revents & (POLLIN | POLLHUP)) {
            if (out->fd >= 0)
                drain(out);
            if (errb->fd >= 0)
                drain(errb);
            break;
        }
    }
}

/* Valid UTF-8 for JSON: each byte that does not start a well-formed
 * sequence becomes U+FFFD. */
static json_t *text_json(const char *s, size_t len, bool cut, const char *extra)
{
    size_t cap = len * 3 + sizeof(TRUNCATED) + (extra ? strlen(extra) : 0) + 1, o = 0;
    char *buf = pe_xmalloc(cap);
    json_t *j;

    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        bool ok = n > 0 && i + n <= len && !(n == 2 && c < 0xc2) && !(n == 4 && c > 0xf4);
        for (size_t k = 1; ok && k < n; k++)
            ok = ((unsigned char)s[i + k] >> 6) == 2;
        if (ok && n == 3) {
            unsigned char c1 = (unsigned char)s[i + 1];
            ok = !(c == 0xe0 && c1 < 0xa0) && !(c == 0xed && c1 >= 0xa0);
        }
        if (ok && n == 4) {
            unsigned char c1 = (unsigned char)s[i + 1];
            ok = !(c == 0xf0 && c1 < 0x90) && !(c == 0xf4 && c1 >= 0x90);
        }
        if (ok) {
            memcpy(buf + o, s + i, n);
            o += n;
            i += n;
        } else {
            memcpy(buf + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    if (cut) {
        memcpy(buf + o, TRUNCATED, sizeof(TRUNCATED) - 1);
        o += sizeof(TRUNCATED) - 1;
    }
    if (extra) {
        memcpy(buf + o, extra, strlen(extra));
        o += strlen(extra);
    }
    j = json_stringn(buf, o);
    free(buf);
    return j;
}

static void exec_work(pe_daemon_job *job, pe_store *s)
{
    const char *cmd = json_string_value(json_object_get(job->in, "command"));
    char *argv[] = {(char *)"/bin/sh", (char *)"-c", (char *)cmd, NULL};
    /* no stdin_pipe: the API has no stdin, the command reads EOF */
    pe_provider_exec_opts opts = {.argv = argv};
    outbuf out = {.fd = -1}, errb = {.fd = -1};
    char note[64], oom[160] = "";
    enum cut_short why = RAN;
    int64_t kills0 = -1, kills1 = -1, limit = 0;
    pe_store_sandbox sb;
    pe_provider_proc p;
    int code = -1, resumed;

    if (!lookup(job, s, &sb))
        return;
    if (sb.status != PE_STORE_RUNNING) {
        pe_err_set(&job->err, PE_ESTATE, 0, "sandbox %s is not running", sb.name);
        pe_daemon_job_fail(job, &job->err, NULL);
        pe_store_sandbox_clear(&sb);
        return;
    }
    pe_daemon_hold(job->d, sb.id);
    /* A paused sandbox thaws for the command (a frozen one would hang it). */
    resumed = pe_daemon_wake_row(job->d, &sb, "exec", &job->err);
    if (resumed < 0) {
        pe_daemon_release(job->d, sb.id);
        pe_daemon_job_fail(job, &job->err, NULL);
        pe_store_sandbox_clear(&sb);
        return;
    }
    if (pe_sandbox_exec_start(&job->d->sx, s, &sb, &opts, &p, &job->err) < 0) {
        pe_daemon_release(job->d, sb.id);
        pe_daemon_job_fail(job, &job->err, NULL);
        pe_store_sandbox_clear(&sb);
        return;
    }
    if (p.oom_known) /* read as it started, from the state it loaded anyway */
        kills0 = p.oom_kills;
    collect(&p, job->d->exec_timeout, job->d->stop_fd, &out, &errb, &why);
    if (pe_provider_proc_wait(&p, &code, &job->err) < 0)
        pe_daemon_job_fail(job, &job->err, NULL);
    pe_provider_proc_close(&p);
    if (code == 128 + SIGKILL && why == RAN &&
        pe_sandbox_oom_kills(&job->d->sx, &sb, &kills1, &limit, NULL) == 0 && kills0 >= 0 &&
        kills1 > kills0) {
        /* on a line of its own, after what the command said */
        bool nl = errb.len > 0 && !errb.cut && errb.data[errb.len - 1] != '\n';
        oom[0] = '\n';
        pe_daemon_oom_note(limit, oom + nl, sizeof(oom) - 1);
    }
    pe_daemon_release(job->d, sb.id);
    pe_store_sandbox_clear(&sb);
    if (!job->failed) {
        if (why == TIMED_OUT)
            snprintf(note, sizeof(note), "\n[timed out after %g s]\n", job->d->exec_timeout);
        else
            snprintf(note, sizeof(note), "\n[stopped: the daemon is shutting down]\n");
        job->out = json_pack("{s:o, s:o, s:i}", "stdout",
                             text_json(out.data, out.len, out.cut, NULL), "stderr",
                             text_json(errb.data, errb.len, errb.cut,
                                       why != RAN ? note
                                       : oom[0]   ? oom
                                                  : NULL),
                             "exitCode", why == TIMED_OUT ? 124 : code);
        /* Our extension: the answer says it was cut (the streaming exec at
         * /exec/:id/ws has no cap). */
        if (out.cut || errb.cut)
            json_object_set_new(job->out, "truncated", json_true());
        if (resumed > 0) /* ours too: it was paused, this request resumed it */
            json_object_set_new(job->out, "resumed", json_true());
    }
    free(out.data);
    free(errb.data);
}

/* ---- getSandboxes: the template catalog ----
 *
 * Upstream lists the sandboxes of its catalog account. Locally the
 * templates are the bases a sandbox can be made from (templates.c); the
 * id of one is what createSandbox's base takes. */

static void catalog_work(pe_daemon_job *job, pe_store *s)
{
    json_t *all = NULL, *page;
    json_int_t limit = json_integer_value(json_object_get(job->in, "limit"));
    json_int_t offset = json_integer_value(json_object_get(job->in, "offset"));

    if (pe_daemon_catalog(job->d, &all, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
        return;
    }
    page = json_array();
    for (size_t i = (size_t)offset; i < json_array_size(all) && i < (size_t)(offset + limit); i++)
        json_array_append(page, json_array_get(all, i));
    job->out =
        json_pack("{s:o, s:I}", "sandboxes", page, "total", (json_int_t)json_array_size(all));
    json_decref(all);
}

static void get_sandboxes(pe_xrpc_request *req, void *ud)
{
    pe_daemon *d = ud;
    cleanup_free char *did = pe_daemon_auth(d, req);
    json_t *limit = json_object_get(req->params, "limit");
    json_t *offset = json_object_get(req->params, "offset");
    json_int_t l = limit ? json_integer_value(limit) : 30;
    pe_daemon_job *job;

    if (did == NULL)
        return;
    job = pe_daemon_job_new(d, req, did, catalog_work);
    job->in = json_pack("{s:I, s:I}", "limit", l > 100 ? (json_int_t)100 : l, "offset",
                        offset ? json_integer_value(offset) : (json_int_t)0);
    pe_daemon_job_submit(job);
}

static void start_sandbox(pe_xrpc_request *req, void *ud)
{
    pe_daemon *d = ud;
    cleanup_free char *did = NULL;
    const char *repo = json_string_value(json_object_get(req->body, "repo"));
    pe_daemon_job *job;
    pe_err err;

    pe_err_clear(&err);
    if (repo && !pe_daemon_repo_check(repo, &err)) {
        pe_xrpc_respond_err(req, &err);
        return;
    }
    did = pe_daemon_auth(d, req);
    if (did == NULL)
        return;
    job = pe_daemon_job_new(d, req, did, start_work);
    job->id = pe_xstrdup(json_string_value(json_object_get(req->params, "id")));
    if (req->body)
        job->in = json_deep_copy(req->body);
    job->after = pe_daemon_sandbox_clone_after;
    job->kind = PE_JOB_LIFECYCLE;
    pe_daemon_job_submit(job);
}

/* ---- the same work for other front ends (daemon.h; the E2B API) ---- */

void pe_daemon_sandbox_get_work(pe_daemon_job *job, pe_store *s)
{
    get_work(job, s);
}

void pe_daemon_sandbox_start_work(pe_daemon_job *job, pe_store *s)
{
    start_work(job, s);
}

void pe_daemon_sandbox_stop_work(pe_daemon_job *job, pe_store *s)
{
    stop_work(job, s);
}

void pe_daemon_sandbox_delete_work(pe_daemon_job *job, pe_store *s)
{
    delete_work(job, s);
}

/* Create and run at once: the row (as createSandbox), then in the same
 * job what its background half does, so the answer comes once the
 * sandbox runs (or failed: then it is removed, row and all). */
void pe_daemon_sandbox_create_now_work(pe_daemon_job *job, pe_store *s)
{
    pe_store_sandbox sb;

    create_work(job, s);
    if (job->failed || job->id == NULL) /* failed, or made on its provider already */
        return;
    json_decref(job->in);
    job->in = NULL;
    json_decref(job->out);
    job->out = NULL;
    pe_daemon_sandbox_run_work(job, s);
    json_decref(job->in); /* a repo to clone: the E2B API takes none */
    job->in = NULL;
    if (job->failed || pe_store_sandbox_get(s, job->id, &sb, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
        return;
    }
    if (sb.status != PE_STORE_RUNNING) {
        pe_err_set(&job->err, PE_ESYS, 0, "sandbox %s failed to start: %s", sb.id,
                   sb.status_reason ? sb.status_reason : "unknown reason");
        pe_daemon_job_fail(job, &job->err, NULL);
        pe_sandbox_remove(&job->d->sx, s, &sb, &job->err);
        pe_store_sandbox_delete(s, sb.id, NULL);
    } else {
        job->out = pe_daemon_sandbox_view(&sb);
    }
    pe_store_sandbox_clear(&sb);
}

/* ---- registration ---- */

/* Handlers that take the sandbox from the id parameter. */
static void by_id(pe_xrpc_request *req, pe_daemon *d, pe_daemon_work_fn work, int kind)
{
    cleanup_free char *did = pe_daemon_auth(d, req);

    if (did)
        pe_daemon_submit_kind(d, req, did, work,
                              json_string_value(json_object_get(req->params, "id")),
                              req->body ? json_deep_copy(req->body) : NULL, kind);
}

#define BY_ID(fn, work, kind)                                                                      \
    static void fn(pe_xrpc_request *req, void *ud)                                                 \
    {                                                                                              \
        by_id(req, ud, work, kind);                                                                \
    }
BY_ID(stop_sandbox, stop_work, PE_JOB_LIFECYCLE)
BY_ID(delete_sandbox, delete_work, PE_JOB_LIFECYCLE)
BY_ID(exec_sandbox, exec_work, PE_JOB_LONG)

int pe_daemon_register_sandbox(pe_daemon *d, pe_err *err)
{
    static const struct {
        const char *nsid;
        pe_xrpc_handler fn;
    } routes[] = {
        {"io.pocketenv.sandbox.createSandbox", create_sandbox},
        {"io.pocketenv.sandbox.getSandbox", get_sandbox},
        {"io.pocketenv.sandbox.startSandbox", start_sandbox},
        {"io.pocketenv.sandbox.stopSandbox", stop_sandbox},
        {"io.pocketenv.sandbox.deleteSandbox", delete_sandbox},
        {"io.pocketenv.sandbox.exec", exec_sandbox},
        {"io.pocketenv.sandbox.getSandboxes", get_sandboxes},
    };

    for (size_t i = 0; i < PE_ARRAY_LEN(routes); i++)
        if (pe_xrpc_register(d->srv, routes[i].nsid, routes[i].fn, d, err) < 0)
            return -1;
    return 0;
}
