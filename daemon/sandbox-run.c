/* A sandbox's view and its runtime work below the handlers: what a
 * create's background half and a start run (pe_daemon_sandbox_run), the
 * background half itself (pe_daemon_sandbox_resume: createSandbox's,
 * forkSandbox's, and the daemon's at start for a row it died while
 * making), and the view clients read (pe_daemon_sandbox_view). The
 * methods are handlers/sandbox.c's.
 *
 * Lifecycle (docs/design/daemon.md): create writes the row INITIALIZING and
 * answers; a background job then creates and starts the runtime sandbox
 * (named by the row's id) and moves the row to RUNNING, or FAILED with the
 * reason. A row deleted meanwhile makes that job remove what it made.
 * Workers, except where a function says loop thread. */
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "daemon.h"
#include "netpolicy.h"
#include "pause.h"
#include "providers.h"
#include "resource-limits.h"
#include "sandbox-env.h"
#include "sandbox-keys.h"
#include "sandbox-services.h"
#include "snapshots.h"
#include "supervise.h"
#include "templates.h"

/* ---- views ----
 *
 * Upstream's lexicons allow no null: a field without a value is left out
 * (clients read a missing field as unset), so every answer validates. */

static void set_int(json_t *o, const char *k, int64_t v)
{
    if (v)
        json_object_set_new(o, k, json_integer(v));
}

json_t *pe_daemon_sandbox_view(const pe_store_sandbox *sb)
{
    json_t *o = json_object();
    json_t *topics = sb->topics ? json_loads(sb->topics, 0, NULL) : NULL;

    pe_daemon_set_str(o, "id", sb->id);
    pe_daemon_set_str(o, "name", sb->name);
    pe_daemon_set_str(o, "provider", sb->provider ? sb->provider : PE_PROVIDER_DEFAULT);
    /* Where it really runs: our extension (lexicons/README.md). */
    pe_daemon_set_str(o, "backend", sb->backend ? sb->backend : PE_BACKEND_LOCAL);
    /* The provider's own id of a remote sandbox (our extension too). */
    if (pe_sandbox_is_remote(sb))
        pe_daemon_set_str(o, "remoteId", sb->provider_id);
    pe_daemon_set_str(o, "displayName", sb->display_name ? sb->display_name : sb->name);
    pe_daemon_set_str(o, "description", sb->description);
    json_object_set_new(o, "topics", json_is_array(topics) ? json_incref(topics) : json_array());
    json_decref(topics);
    pe_daemon_set_str(o, "baseSandbox", sb->base);
    pe_daemon_set_str(o, "status", pe_store_status_name(sb->status));
    if (sb->status_reason)
        pe_daemon_set_str(o, "statusReason", sb->status_reason);
    pe_daemon_set_str(o, "repo", sb->repo);
    pe_daemon_set_str(o, "logo", sb->logo);
    pe_daemon_set_str(o, "readme", sb->readme);
    json_object_set_new(o, "installs", json_integer(sb->installs));
    pe_daemon_set_str(o, "uri", sb->uri);
    set_int(o, "vcpus", sb->vcpus);
    set_int(o, "memory", sb->memory);
    set_int(o, "disk", sb->disk);
    json_object_set_new(o, "keepAlive", json_boolean(sb->keep_alive));
    pe_daemon_set_time(o, "createdAt", sb->created_at);
    pe_daemon_set_time(o, "startedAt", sb->started_at);
    pe_daemon_paused_view(sb, o);
    return o;
}

/* ---- runtime ---- */

/* A remote row with no provider id yet: a fork (forkSandbox's row, made
 * from its snapshot), or a create that a restart of the daemon interrupted
 * (housekeeping.c deleted what it had half made): made at its provider now,
 * in the background like a local one's first start. A plain base of ours
 * is the provider's default image, as createSandbox's. */
static int remote_create_later(pe_daemon *d, const pe_store_sandbox *sb, pe_err *err)
{
    cleanup_free char *rid = NULL;
    pe_store *s = pe_daemon_store(d, err);

    if (s == NULL)
        return -1;
    if (sb->base && strncmp(sb->base, PE_SNAPSHOT_BASE, strlen(PE_SNAPSHOT_BASE)) == 0)
        return pe_daemon_snapshot_remote_create(d, s, sb, &rid, err);
    if (sb->status != PE_STORE_INITIALIZING || sb->base == NULL)
        return pe_err_set(err, PE_ESTATE, 0, "sandbox %s was never made at %s", sb->name,
                          sb->backend);
    return pe_sandbox_create_remote(&d->sx, s, sb, pe_daemon_base_plain(sb->base) ? NULL : sb->base,
                                    &rid, err);
}

int pe_daemon_sandbox_run(pe_daemon *d, const pe_store_sandbox *sb, int *init_pidfd, pe_err *err)
{
    pe_sandbox_cfg cfg;
    pe_runtime_init init;
    int r;

    if (pe_sandbox_is_remote(sb) && sb->provider_id == NULL) /* not made there yet */
        return remote_create_later(d, sb, err);
    if (pe_sandbox_is_remote(sb)) { /* its provider starts it (lib/sandbox) */
        pe_store *s;
        pe_err e;
        if (pe_daemon_sandbox_start(d, sb, err) < 0)
            return -1;
        pe_err_clear(&e);
        if ((s = pe_daemon_store(d, &e)) != NULL) /* its services, through the provider */
            pe_daemon_services_start(d, s, sb);
        else
            pe_log_warn("sandbox %s: services not started: %s", sb->id, e.msg);
        return 0;
    }
    pe_sandbox_cfg_init(&cfg);
    cfg.name = pe_xstrdup(sb->id);
    cfg.image = pe_xstrdup(sb->base);
    cfg.net = d->sandbox_net;
    r = pe_daemon_limits_cfg(d, sb, &cfg, err);
    if (r == 0)
        r = pe_daemon_snapshot_runtime_create(d, sb, &cfg, err);
    pe_sandbox_cfg_clear(&cfg);
    if (r < 0 && err->code != PE_EEXIST) /* EEXIST: made by an earlier start */
        return -1;
    if (pe_daemon_netpolicy_before_start(d, sb, err) < 0) /* create's, before it runs */
        return -1;
    if (pe_daemon_sandbox_start(d, sb, err) < 0) /* with its variables, secrets, volumes */
        return -1;
    /* Keep a pidfd of the init we just cloned, to reap it when it exits. */
    if (pe_runtime_init_of(&d->rt, sb->id, &init, err) < 0)
        return 0;
    if (init.running)
        *init_pidfd = (int)syscall(SYS_pidfd_open, init.pid, 0);
    pe_daemon_sandbox_place_files(d, sb);
    pe_daemon_sandbox_started(d, sb); /* keys, tailscale, services */
    return 0;
}

/* A template's service that does not come up fails the create: its
 * services and the runtime sandbox go, nothing keeps running. */
static int template_ready(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb, pe_err *err)
{
    pe_err e;

    if (pe_daemon_template_ready(d, s, sb, err) == 0)
        return 0;
    pe_err_clear(&e);
    pe_daemon_unit_stop_sandbox(sb->id);
    if (pe_sandbox_stop(&d->sx, s, sb, &e) < 0 || pe_sandbox_remove(&d->sx, s, sb, &e) < 0)
        pe_log_warn("sandbox %s: remove after its failed start: %s", sb->id, e.msg);
    return -1;
}

/* Background: make the runtime sandbox of a new row and record the outcome. */
void pe_daemon_sandbox_run_work(pe_daemon_job *job, pe_store *s)
{
    pe_store_sandbox sb;
    pe_err err;

    if (pe_store_sandbox_get(s, job->id, &sb, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
        return;
    }
    if (sb.status != PE_STORE_INITIALIZING) { /* claimed from the pool: it runs */
        pe_store_sandbox_clear(&sb);
        return;
    }
    if (job->did == NULL) /* resumed at start: the clone after it is the owner's */
        job->did = pe_xstrdup(sb.owner_did);
    pe_err_clear(&err);
    if (pe_daemon_template_prepare(job->d, s, &sb, &err) < 0 ||
        pe_daemon_sandbox_run(job->d, &sb, &job->init_pidfd, &err) < 0 ||
        template_ready(job->d, s, &sb, &err) < 0) {
        pe_log_warn("sandbox %s failed to start: %s", sb.id, err.msg);
        if (pe_store_sandbox_set_status(s, sb.id, PE_STORE_FAILED, err.msg, PE_STORE_INITIALIZING,
                                        &job->err) < 0)
            pe_daemon_job_fail(job, &job->err, NULL);
    } else if (pe_store_sandbox_set_status(s, sb.id, PE_STORE_RUNNING, NULL, PE_STORE_INITIALIZING,
                                           &job->err) < 0) {
        /* Deleted (or changed) while we were starting it: undo. */
        pe_log_info("sandbox %s changed during create (%s): removing it", sb.id, job->err.msg);
        pe_sandbox_remove(&job->d->sx, s, &sb, &err);
    } else if (sb.repo) {
        job->in = json_pack("{s:s}", "repo", sb.repo); /* cloned by run_after */
    }
    pe_store_sandbox_clear(&sb);
}

/* Loop thread: a repo to clone now that the sandbox runs (sandbox-repo.c). */
void pe_daemon_sandbox_clone_after(pe_daemon_job *job)
{
    const char *repo = json_string_value(json_object_get(job->in, "repo"));

    if (!job->failed && repo && job->id)
        pe_daemon_repo_clone_later(job->d, job->did, job->id, repo);
}

void pe_daemon_sandbox_resume(pe_daemon *d, const char *owner, const char *id)
{
    pe_daemon_job *run = pe_daemon_job_new(d, NULL, owner, pe_daemon_sandbox_run_work);

    run->id = pe_xstrdup(id);
    run->after = pe_daemon_sandbox_clone_after;
    run->kind = PE_JOB_LIFECYCLE;
    run->background = true; /* the row waits for it: never refused */
    pe_daemon_job_submit(run);
}
