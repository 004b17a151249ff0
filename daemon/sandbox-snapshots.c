/* Snapshots below the methods (createSnapshot, getSnapshots, getSnapshot,
 * deleteSnapshot, forkSandbox: handlers/snapshot.c): taking and recording
 * one, its view, its removal, the idle policy's snapshot, the sandboxes
 * made from one, expiry. Named, read-only snapshots of a sandbox's
 * filesystem, kept by the runtime on the layers filesystem
 * (pe_runtime_snapshot, docs/design/runtime.md "Snapshots") or by a
 * remote sandbox's provider, and recorded in the store's snapshots table.
 *
 * Deleting one (deleteSnapshot, eviction, expiry) moves its row to the
 * store's deletions and answers; a background job then removes the layer
 * and forgets the deletion. The deletions are in the store, so a daemon
 * stopped meanwhile finishes them at its first tick; while a snapshot is
 * being deleted it cannot be a sandbox's base (409, saying so).
 *
 * A snapshot belongs to its owner, not to its sandbox: deleting the
 * sandbox keeps it. Each has an expiry (default 7 days) and an owner keeps
 * at most the daemon's --user-snapshots: a new one beyond removes the
 * owner's oldest. Another user's snapshot answers exactly as a missing
 * one. The runtime snapshot is made first and recorded after; a failed
 * record removes it, so a snapshot without a row exists only while its
 * job runs (or after a crash, when it stays until an operator removes
 * it: see the report in docs). Store and runtime work run on workers. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/util.h"
#include "daemon.h"
#include "pocketenv/store-ports.h"
#include "pocketenv/store-snapshots.h"
#include "ports.h"
#include "providers.h"
#include "snapshots.h"

#define SNAPSHOT_NOT_FOUND "SnapshotNotFound"
#define SNAPSHOT_DELETING "SnapshotDeleting"

json_t *pe_daemon_snapshot_view(pe_daemon *d, const pe_store_snapshot *v)
{
    json_t *o = json_object();
    int64_t excl = -1;

    json_object_set_new(o, "id", json_string(v->id));
    json_object_set_new(o, "name", json_string(v->name));
    json_object_set_new(o, "sandboxId", json_string(v->sandbox_id));
    json_object_set_new(o, "image", json_string(v->image));
    pe_daemon_set_str(o, "description", v->description);
    json_object_set_new(o, "sizeBytes", json_integer(v->size_bytes));
    pe_daemon_set_str(o, "provider", v->provider);
    if (v->provider == NULL && pe_runtime_snapshot_usage(&d->rt, v->layer, &excl, NULL) == 0 &&
        excl >= 0)
        json_object_set_new(o, "exclusiveBytes", json_integer(excl));
    json_object_set_new(o, "memory", json_false()); /* files only: memoryCheckpoint */
    json_object_set_new(o, "frozenMs", json_integer((v->frozen_us + 999) / 1000));
    pe_daemon_set_time(o, "expiresAt", v->expires_at);
    pe_daemon_set_time(o, "createdAt", v->created_at);
    return o;
}

/* To the deletions: the layer goes in the background (purge). A sandbox
 * being made from it has its own copy already, and a layer whose row is
 * gone is never used again. */
int pe_daemon_snapshot_remove(pe_daemon *d, pe_store *s, const pe_store_snapshot *v, pe_err *err)
{
    (void)d;
    if (pe_store_snapshot_delete_later(s, v, err) < 0)
        return -1;
    pe_log_info("event=snapshot_delete_queued snapshot=%s layer=%s", v->id, v->layer);
    return 0;
}

/* One purge at a time (the tick's and a delete's may meet): a layer is
 * removed once, and the deletion forgotten after. */
static pthread_mutex_t purge_lock = PTHREAD_MUTEX_INITIALIZER;

/* Remove what deletion v names: a layer of the runtime, or a remote
 * sandbox's snapshot at its provider, with the credential it keeps
 * (the sandbox that made it may be gone). */
static int remove_kept(pe_daemon *d, const pe_store_snapshot *v, pe_err *err)
{
    cleanup_free char *label = NULL;

    if (v->provider == NULL)
        return pe_runtime_snapshot_remove(&d->rt, v->layer, err) < 0 && err->code != PE_ENOENT ? -1
                                                                                               : 0;
    label = pe_xasprintf("snapshot %s", v->id);
    return pe_sandbox_snapshot_delete(&d->sx, v->provider, label, v->credential,
                                      v->credential_shown, v->layer, err);
}

/* Remove the layers of the deletions, then forget them; one that fails
 * stays for the next tick (a provider that refused, or did not answer,
 * is asked again then). Worker thread. */
static void purge(pe_daemon *d, pe_store *s)
{
    pe_store_snapshot *list = NULL;
    size_t n = 0;
    pe_err err;

    pe_err_clear(&err);
    pthread_mutex_lock(&purge_lock);
    /* On a cluster, only the layers this node has: another node's purge
     * would find none here and forget the deletion, leaving its layer. */
    if (pe_store_snapshot_deletions(s, d->cluster ? d->node : NULL, 100, &list, &n, &err) < 0)
        pe_log_warn("snapshot deletions: %s", err.msg);
    for (size_t i = 0; i < n; i++) {
        const pe_store_snapshot *v = &list[i];
        int64_t t0 = pe_store_now_ms();
        pe_err_clear(&err);
        /* err.msg names the provider, never its credential (provider.h) */
        if (remove_kept(d, v, &err) < 0 || pe_store_snapshot_deletion_done(s, v, &err) < 0) {
            pe_log_warn("event=snapshot_remove_failed snapshot=%s layer=%s provider=%s "
                        "reason=\"%s\"",
                        v->id, v->layer, v->provider ? v->provider : "local", err.msg);
            continue;
        }
        pe_log_info("event=snapshot_layer_removed snapshot=%s layer=%s provider=%s ms=%lld", v->id,
                    v->layer, v->provider ? v->provider : "local",
                    (long long)(pe_store_now_ms() - t0));
    }
    pthread_mutex_unlock(&purge_lock);
    pe_store_snapshot_list_free(list, n);
}

static void purge_work(pe_daemon_job *job, pe_store *s)
{
    purge(job->d, s);
}

/* Loop thread: purge now, in the background. A refused job (a full queue,
 * a draining daemon) leaves the deletions to the next tick. */
void pe_daemon_snapshots_purge_soon(pe_daemon *d)
{
    pe_daemon_job *job = pe_daemon_job_new(d, NULL, NULL, purge_work);

    job->kind = PE_JOB_LONG;
    job->background = true;
    pe_daemon_job_submit(job);
}

/* Make room for one more of did's snapshots: remove the oldest beyond
 * the daemon's retention count. */
static int retain(pe_daemon *d, pe_store *s, const char *did, pe_err *err)
{
    pe_store_snapshot *list = NULL;
    size_t n = 0;
    int64_t keep = d->lim.user_snapshots > 0 ? d->lim.user_snapshots : 1;

    if (pe_store_snapshot_list(s, did, &list, &n, err) < 0)
        return -1;
    for (size_t i = n; i > 0 && (int64_t)i >= keep; i--) {
        const pe_store_snapshot *v = &list[i - 1]; /* newest first: the oldest is last */
        pe_err e2;
        if (pe_daemon_snapshot_remove(d, s, v, &e2) == 0)
            pe_log_info("event=snapshot_evicted snapshot=%s owner=%s keep=%lld", v->id, did,
                        (long long)keep);
    }
    pe_store_snapshot_list_free(list, n);
    return 0;
}

/* The parts of a sandbox's definition a snapshot carries: variables,
 * secrets (sealed, as stored) and files (sealed content), as JSON text
 * {"envs":[{name,value}],"secrets":[...],"files":[{name: path, value}],
 * "services":[...],"ports":[...]} (services_and_ports; snapshots made
 * before those were carried have neither). */
static const struct {
    const char *key;
    int kind;
} carried[] = {{"envs", PE_STORE_VARIABLE}, {"secrets", PE_STORE_SECRET}, {"files", PE_STORE_FILE}};

/* The sandbox's services ({name, command, description, running, ports})
 * and the ports it exposes itself, not through a service ({port,
 * description, public}), into o's "services" and "ports". */
static int services_and_ports(pe_store *s, const char *sandbox_id, json_t *o, pe_err *err)
{
    pe_store_service *svc = NULL;
    pe_store_port *ports = NULL;
    size_t nsvc = 0, nports = 0;
    json_t *sa = json_array(), *pa = json_array(), *taken = json_object();
    int r = -1;

    json_object_set_new(o, "services", sa);
    json_object_set_new(o, "ports", pa);
    if (pe_store_service_list(s, sandbox_id, 1000, 0, &svc, &nsvc, NULL, err) < 0 ||
        pe_store_port_list(s, sandbox_id, &ports, &nports, err) < 0)
        goto out;
    for (size_t i = 0; i < nsvc; i++) {
        int64_t *sp = NULL;
        size_t n = 0;
        json_t *list = json_array();
        if (pe_store_service_ports(s, svc[i].id, &sp, &n, err) < 0) {
            json_decref(list);
            goto out;
        }
        for (size_t k = 0; k < n; k++) {
            char key[24];
            snprintf(key, sizeof(key), "%lld", (long long)sp[k]);
            json_object_set_new(taken, key, json_true());
            json_array_append_new(list, json_integer(sp[k]));
        }
        free(sp);
        json_array_append_new(sa, json_pack("{s:s, s:s, s:s?, s:b, s:o}", "name", svc[i].name,
                                            "command", svc[i].command, "description",
                                            svc[i].description, "running",
                                            svc[i].status == PE_STORE_RUNNING, "ports", list));
    }
    for (size_t i = 0; i < nports; i++) {
        char key[24];
        snprintf(key, sizeof(key), "%d", ports[i].port);
        if (json_object_get(taken, key) == NULL) /* a service's: made with it */
            json_array_append_new(pa, json_pack("{s:i, s:s?, s:b}", "port", ports[i].port,
                                                "description", ports[i].description, "public",
                                                ports[i].public_access));
    }
    r = 0;
out:
    pe_store_service_list_free(svc, nsvc);
    pe_store_port_list_free(ports, nports);
    json_decref(taken);
    return r;
}

static char *definition_of(pe_store *s, const char *sandbox_id, pe_err *err)
{
    json_t *o = json_object();
    char *text = NULL;

    for (size_t k = 0; k < PE_ARRAY_LEN(carried); k++) {
        pe_store_kv *list = NULL;
        size_t n = 0;
        json_t *arr = json_array();
        if (pe_store_kv_list(s, carried[k].kind, sandbox_id, &list, &n, err) < 0) {
            json_decref(arr);
            json_decref(o);
            return NULL;
        }
        for (size_t i = 0; i < n; i++)
            json_array_append_new(arr, json_pack("{s:s, s:s}", "name", list[i].key, "value",
                                                 list[i].value ? list[i].value : ""));
        pe_store_kv_list_free(list, n);
        json_object_set_new(o, carried[k].key, arr);
    }
    if (services_and_ports(s, sandbox_id, o, err) < 0) {
        json_decref(o);
        return NULL;
    }
    text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

/* The services and exposed ports a snapshot carries, onto new sandbox sb:
 * a service or port sb has already (its create's) is kept. Exposed ports
 * get sb's own preview URL and a fresh secret: the source's link does not
 * open the copy. */
static int apply_services_and_ports(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb,
                                    const json_t *o, pe_err *err)
{
    cleanup_free char *tag = NULL;
    const json_t *e;
    size_t i;

    json_array_foreach(json_object_get(o, "services"), i, e)
    {
        const char *name = json_string_value(json_object_get(e, "name"));
        const json_t *pl = json_object_get(e, "ports"), *p;
        int64_t ports[64];
        size_t n = 0, k;
        cleanup_free char *id = NULL;
        pe_err e2;
        if (name == NULL || json_string_value(json_object_get(e, "command")) == NULL)
            continue;
        pe_err_clear(&e2);
        if (pe_store_service_add(s, sb->id, name, json_string_value(json_object_get(e, "command")),
                                 json_string_value(json_object_get(e, "description")),
                                 json_is_false(json_object_get(e, "running")) ? PE_STORE_STOPPED
                                                                              : PE_STORE_RUNNING,
                                 &id, &e2) < 0) {
            if (e2.code == PE_EEXIST)
                continue;
            *err = e2;
            return -1;
        }
        json_array_foreach(pl, k, p) if (n < PE_ARRAY_LEN(ports) && json_is_integer(p)) ports[n++] =
            json_integer_value(p);
        if (n > 0 && pe_store_service_set_ports(s, sb->id, id, name, ports, n, &e2) < 0 &&
            e2.code != PE_EEXIST) {
            *err = e2;
            return -1;
        }
    }
    json_array_foreach(json_object_get(o, "ports"), i, e)
    {
        int port = (int)json_integer_value(json_object_get(e, "port"));
        cleanup_free char *pid = pe_store_new_id("port_"), *secret = pe_daemon_preview_secret();
        cleanup_free char *url = NULL;
        pe_store_port row = {.id = pid,
                             .sandbox_id = sb->id,
                             .port = port,
                             .description = json_string_value(json_object_get(e, "description")),
                             .public_access = json_is_true(json_object_get(e, "public")),
                             .secret = secret};
        pe_err e2;
        if (port < 1 || port > 65535)
            continue;
        if (tag == NULL && pe_store_preview_tag(s, sb->id, &tag, err) < 0)
            return -1;
        url = pe_daemon_preview_url(d, sb->name, tag, port);
        row.preview_url = url;
        pe_err_clear(&e2);
        if (pe_store_port_add(s, &row, &e2) < 0 && e2.code != PE_EEXIST) {
            *err = e2;
            return -1;
        }
    }
    return 0;
}

/* Give sandbox sb (a new row) the definition a snapshot carries; a name
 * the sandbox has already (given by its create) is kept. */
static int apply_definition(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb,
                            const char *definition, pe_err *err)
{
    json_t *o = definition ? json_loads(definition, 0, NULL) : NULL;
    const char *sandbox_id = sb->id;
    int r = 0;

    for (size_t k = 0; o && k < PE_ARRAY_LEN(carried) && r == 0; k++) {
        json_t *e;
        size_t i;
        json_array_foreach(json_object_get(o, carried[k].key), i, e)
        {
            pe_store_kv old;
            const char *name = json_string_value(json_object_get(e, "name"));
            if (name == NULL)
                continue;
            if (pe_store_kv_get(s, carried[k].kind, sandbox_id, name, &old, NULL) == 0) {
                pe_store_kv_clear(&old);
                continue;
            }
            r = pe_store_kv_put(s, carried[k].kind, sandbox_id, name,
                                json_string_value(json_object_get(e, "value")), err);
            if (r < 0)
                break;
        }
    }
    if (r == 0 && o)
        r = apply_services_and_ports(d, s, sb, o, err);
    json_decref(o);
    return r;
}

/* Record snapshot v (its id, layer, image, sizes, where it is kept set by
 * the caller) as job->did's snapshot name; the row's view in *view_out.
 * On failure the job is failed and the caller removes what v names. */
static int record(pe_daemon_job *job, pe_store *s, const pe_store_sandbox *sb, pe_store_snapshot *v,
                  const char *name, int64_t ttl, const char *description, json_t **view_out)
{
    cleanup_free char *definition = definition_of(s, sb->id, &job->err);
    int64_t now = pe_store_now_ms();

    v->owner_did = job->did;
    v->name = name;
    v->sandbox_id = sb->id;
    v->definition = definition;
    v->description = description;
    v->expires_at = now + ttl * 1000;
    v->created_at = now;
    if (definition == NULL || retain(job->d, s, job->did, &job->err) < 0 ||
        pe_store_snapshot_add(s, v, &job->err) < 0)
        return pe_daemon_job_fail(job, &job->err, NULL);
    *view_out = pe_daemon_snapshot_view(job->d, v);
    pe_log_info("event=snapshot sandbox=%s snapshot=%s layer=%s provider=%s frozen_ms=%.3f "
                "bytes=%lld",
                sb->id, v->id, v->layer, v->provider ? v->provider : "local",
                (double)v->frozen_us / 1000.0, (long long)v->size_bytes);
    return 0;
}

/* A remote sandbox's snapshot, taken by its provider (named there by our
 * id); the row keeps its own copy of the sandbox's credential, to delete
 * it there after the sandbox is gone (docs/providers.md "Snapshots"). */
static int take_remote(pe_daemon_job *job, pe_store *s, const pe_store_sandbox *sb,
                       const char *name, int64_t ttl, const char *description, json_t **view_out)
{
    cleanup_free char *id = pe_store_new_id("snp_");
    pe_sandbox_remote_snapshot rs;
    pe_store_snapshot v = {0};
    pe_err e2;
    int r;

    pe_daemon_hold(job->d, sb->id);
    r = pe_sandbox_snapshot_create(&job->d->sx, s, sb, id, &rs, &job->err);
    pe_daemon_release(job->d, sb->id);
    if (r < 0)
        return pe_daemon_job_fail(job, &job->err, NULL);
    v.id = id;
    v.layer = rs.snap_id;
    v.image = sb->base ? sb->base : "";
    v.provider = sb->backend;
    v.credential = rs.cred_sealed;
    v.credential_shown = rs.cred_redacted;
    r = record(job, s, sb, &v, name, ttl, description, view_out);
    pe_err_clear(&e2);
    if (r < 0 && pe_sandbox_snapshot_delete(&job->d->sx, sb->backend, "a snapshot not recorded",
                                            rs.cred_sealed, rs.cred_redacted, rs.snap_id, &e2) < 0)
        pe_log_warn("snapshot %s: left at %s after a failed record: %s", id, sb->backend, e2.msg);
    pe_sandbox_remote_snapshot_clear(&rs);
    return r;
}

/* Snapshot sandbox sb (held busy meanwhile) and record it. */
int pe_daemon_snapshot_take(pe_daemon_job *job, pe_store *s, const pe_store_sandbox *sb,
                            const char *name, int64_t ttl, const char *description,
                            json_t **view_out)
{
    cleanup_free char *id = NULL;
    pe_runtime_snapshot_info info;
    pe_store_snapshot v = {0};
    int r;

    if (pe_sandbox_is_remote(sb))
        return take_remote(job, s, sb, name, ttl, description, view_out);
    pe_daemon_hold(job->d, sb->id);
    r = pe_runtime_snapshot(&job->d->rt, sb->id, &info, &job->err);
    pe_daemon_release(job->d, sb->id);
    if (r < 0)
        return pe_daemon_job_fail(job, &job->err, NULL);
    id = pe_store_new_id("snp_");
    v.id = id;
    v.layer = info.id;
    v.image = info.image;
    v.size_bytes = info.size_bytes;
    v.frozen_us = (int64_t)(info.frozen_ms * 1000.0);
    v.node = job->d->cluster ? job->d->node : NULL; /* the layer is in this node's runtime only */
    r = record(job, s, sb, &v, name, ttl, description, view_out);
    if (r < 0)
        pe_runtime_snapshot_remove(&job->d->rt, info.id, NULL);
    free(info.image);
    return r;
}

int pe_daemon_snapshot_idle(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb, pe_err *err)
{
    pe_daemon_job job = {.d = d, .did = (char *)sb->owner_did, .init_pidfd = -1};
    char name[64], when[16];
    struct tm tm;
    time_t now = time(NULL);
    json_t *v = NULL;

    gmtime_r(&now, &tm);
    if (strftime(when, sizeof(when), "%Y%m%d-%H%M%S", &tm) == 0)
        when[0] = '\0';
    /* sandbox names are slugs: the result is a valid snapshot name */
    snprintf(name, sizeof(name), "%.40s-idle-%.15s", sb->name, when);
    pe_err_clear(&job.err);
    if (pe_daemon_snapshot_take(&job, s, sb, name, PE_SNAPSHOT_TTL_DEFAULT,
                                "taken by the sandbox's idle policy", &v) < 0) {
        *err = job.err;
        return -1;
    }
    json_decref(v);
    return 0;
}

/* ---- sandboxes made from a snapshot ---- */

/* A snapshot is kept where its sandbox ran (the layers here, or a
 * provider): a sandbox made from it runs there too. false, with the job
 * failed, for a create that asks for another place. */
static bool same_backend(pe_daemon_job *job, const json_t *in, const pe_store_snapshot *v)
{
    const char *provider = NULL, *backend = NULL;
    const char *kept = v->provider ? v->provider : PE_BACKEND_LOCAL;
    pe_err e;

    pe_err_clear(&e);
    if (pe_daemon_provider_route(&job->d->providers,
                                 json_string_value(json_object_get(in, "provider")), &provider,
                                 &backend, &e) < 0)
        return true; /* plan_sandbox answers that */
    if (strcmp(backend, kept) == 0)
        return true;
    if (v->provider)
        pe_err_set(&job->err, PE_EINVAL, 0,
                   "snapshot %s is kept by %s: make its sandboxes there (provider %s)", v->name,
                   v->provider, v->provider);
    else
        pe_err_set(&job->err, PE_EINVAL, 0,
                   "snapshot %s is kept by this daemon: %s cannot make a sandbox from it", v->name,
                   backend);
    pe_daemon_job_fail(job, &job->err, NULL);
    return false;
}

int pe_daemon_snapshot_base(pe_daemon_job *job, pe_store *s, json_t *in)
{
    const char *base = json_string_value(json_object_get(in, "base"));
    size_t n = strlen(PE_SNAPSHOT_BASE);
    pe_store_snapshot v;

    if (base == NULL || strncmp(base, PE_SNAPSHOT_BASE, n) != 0)
        return 0;
    if (pe_store_snapshot_get(s, job->did, base + n, &v, &job->err) < 0) {
        if (job->err.code == PE_ENOENT &&
            pe_store_snapshot_deletion_get(s, job->did, base + n, &v, NULL) == 0) {
            pe_err_set(&job->err, PE_ESTATE, 0,
                       "snapshot %s is being deleted: it cannot be a base any more", v.name);
            pe_store_snapshot_clear(&v);
            return pe_daemon_job_fail(job, &job->err, SNAPSHOT_DELETING);
        }
        return pe_daemon_job_fail(job, &job->err,
                                  job->err.code == PE_ENOENT ? SNAPSHOT_NOT_FOUND : NULL);
    }
    if (!same_backend(job, in, &v)) {
        pe_store_snapshot_clear(&v);
        return -1;
    }
    if (v.provider && pe_provider_lookup(v.provider) &&
        !(pe_provider_lookup(v.provider)->caps & PE_CAP_SNAPSHOT_BASE)) {
        pe_err_set(&job->err, PE_ENOTCAP, 0, "not supported by %s: snapshot-base (%s)", v.provider,
                   PE_SNAPSHOT_BASE_WHY);
        pe_store_snapshot_clear(&v);
        return pe_daemon_job_fail(job, &job->err, NULL);
    }
    json_object_set_new(in, "base", json_sprintf(PE_SNAPSHOT_BASE "%s", v.id));
    pe_store_snapshot_clear(&v);
    return 0;
}

/* The snapshot sb was made from (its base "snapshot:NAME") into *v;
 * -1 saying it is gone or being deleted. */
static int base_snapshot(pe_store *s, const pe_store_sandbox *sb, pe_store_snapshot *v, pe_err *err)
{
    const char *name = sb->base + strlen(PE_SNAPSHOT_BASE);

    if (pe_store_snapshot_get(s, sb->owner_did, name, v, err) == 0)
        return 0;
    if (err->code == PE_ENOENT &&
        pe_store_snapshot_deletion_get(s, sb->owner_did, name, v, NULL) == 0) {
        pe_err_set(err, PE_ESTATE, 0, "its snapshot %s is being deleted", v->name);
        pe_store_snapshot_clear(v);
        return -1;
    }
    return err->code == PE_ENOENT ? pe_err_set(err, PE_ENOENT, 0, "its snapshot %s is gone", name)
                                  : -1;
}

int pe_daemon_snapshot_runtime_create(pe_daemon *d, const pe_store_sandbox *sb,
                                      const pe_sandbox_cfg *cfg, pe_err *err)
{
    size_t n = strlen(PE_SNAPSHOT_BASE);
    pe_store_snapshot v;
    pe_store *s;
    int r;

    if (sb->base == NULL || strncmp(sb->base, PE_SNAPSHOT_BASE, n) != 0)
        return pe_runtime_create(&d->rt, cfg, err);
    s = pe_daemon_store(d, err);
    if (s == NULL)
        return -1;
    if (base_snapshot(s, sb, &v, err) < 0)
        return -1;
    r = pe_runtime_create_from(&d->rt, cfg, v.layer, err);
    /* Once, when its runtime sandbox is made: at a later start the
     * variables are the sandbox's own, deleted ones staying deleted. */
    if (r == 0 && apply_definition(d, s, sb, v.definition, err) < 0)
        r = pe_err_prefix(err, "its snapshot's variables, secrets, files, services and ports");
    pe_store_snapshot_clear(&v);
    return r;
}

int pe_daemon_snapshot_remote_create(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb,
                                     char **remote_id, pe_err *err)
{
    pe_store_snapshot v;
    int r;

    if (base_snapshot(s, sb, &v, err) < 0)
        return -1;
    if (v.provider == NULL || strcmp(v.provider, sb->backend) != 0) {
        r = pe_err_set(err, PE_EINVAL, 0, "its snapshot %s is not kept by %s", v.name, sb->backend);
        pe_store_snapshot_clear(&v);
        return r;
    }
    /* Before the create: its variables and secrets are the new sandbox's
     * environment there, and its files are written as it is made. */
    r = apply_definition(d, s, sb, v.definition, err);
    if (r < 0)
        pe_err_prefix(err, "its snapshot's variables, secrets, files, services and ports");
    else
        r = pe_sandbox_create_remote_from(&d->sx, s, sb, NULL, v.layer, remote_id, err);
    pe_store_snapshot_clear(&v);
    return r;
}

void pe_daemon_snapshots_gone_with(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb)
{
    pe_store_snapshot *list = NULL;
    size_t n = 0;
    unsigned caps;
    pe_err err;

    if (!pe_sandbox_is_remote(sb))
        return;
    caps = pe_sandbox_caps(&d->sx, sb);
    if (!(caps & PE_CAP_SNAPSHOT) || (caps & PE_CAP_SNAPSHOT_BASE))
        return; /* its snapshots outlive it there (or it has none) */
    pe_err_clear(&err);
    if (pe_store_snapshot_list(s, sb->owner_did, &list, &n, &err) < 0) {
        pe_log_warn("sandbox %s: its snapshots: %s", sb->id, err.msg);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const pe_store_snapshot *v = &list[i];
        if (v->sandbox_id == NULL || strcmp(v->sandbox_id, sb->id) != 0 || v->provider == NULL)
            continue;
        if (pe_daemon_snapshot_remove(d, s, v, &err) == 0)
            pe_log_info("event=snapshot_gone_with_sandbox snapshot=%s sandbox=%s provider=%s",
                        v->id, sb->id, v->provider);
    }
    pe_store_snapshot_list_free(list, n);
}

/* ---- expiry (the tick) ---- */

void pe_daemon_snapshots_expire(pe_daemon *d, pe_store *s)
{
    pe_store_snapshot *list = NULL;
    size_t n = 0;
    pe_err err;

    pe_err_clear(&err);
    if (pe_store_snapshot_expired(s, pe_store_now_ms(), 100, &list, &n, &err) < 0) {
        pe_log_warn("expire snapshots: %s", err.msg);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (pe_daemon_snapshot_remove(d, s, &list[i], &err) < 0 && err.code != PE_ENOENT)
            pe_log_warn("expire snapshot %s: %s", list[i].id, err.msg);
        else
            pe_log_info("event=snapshot_expired snapshot=%s", list[i].id);
    }
    pe_store_snapshot_list_free(list, n);
    /* what expired now, what a delete's purge could not remove, and what
     * a daemon stopped before its purge left */
    purge(d, s);
}
