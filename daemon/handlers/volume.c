/* io.pocketenv.volume.*: a user's named, persistent directories, mounted
 * into sandboxes at a path (reference §1.8).
 *
 * A volume belongs to its user, not to a sandbox: its data lives in
 * DATA/volumes/<volume id>/ and survives stop/start and the deletion of
 * every sandbox that mounted it, until the volume itself is deleted. A
 * mount (sandbox, path, readOnly) is applied when the sandbox starts: the
 * runtime binds the directory idmapped into the sandbox's user namespace,
 * nosuid and nodev, read-only when asked. Mounting into a running sandbox
 * takes effect at its next start.
 *
 * API shape (docs/design/resources.md): ids are the volume's ("vol_...").
 * addVolume {name, sandboxId?, path?, readOnly?} creates the caller's
 * volume of that name, or, with a sandbox and path, reuses it if it exists
 * and mounts it there (so a new sandbox can mount an old volume).
 * getVolumes with a sandboxId lists that sandbox's mounts, without one the
 * caller's volumes. getVolume answers the lexicon's volumeView: the
 * volume's path and readOnly are those of its mount (the oldest, if it is
 * mounted in several sandboxes; "mounts" lists them all). updateVolume
 * renames, and with a sandboxId mounts (path given) or unmounts (no path)
 * in that sandbox; without one (the SDK's volume.update(id, name, {path,
 * readOnly}) never sends it) a path or readOnly changes the volume's one
 * mount. deleteVolume deletes the volume and its data at once, also while
 * a running sandbox mounts it: the runtime cannot take a mount out of a
 * running sandbox, so that sandbox keeps an empty mount point until it
 * stops and its next start no longer mounts it; the answer
 * (unmountAtNextStart) and the log say which sandboxes.
 *
 * Threading as the other handlers: checks on the loop thread, store and
 * filesystem work in jobs on workers. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/fs.h"
#include "core/log.h"
#include "core/util.h"
#include "daemon.h"
#include "pocketenv/store-nodes.h"
#include "sandbox-env.h"
#include "sandbox-find.h"

#define VOLUME_NAME_MAX 63
#define MOUNTS_MAX PE_SANDBOX_MOUNTS_MAX
#define LIMIT_DEFAULT 20
#define LIMIT_MAX 100
#define NOT_FOUND "VolumeNotFound"
#define SANDBOX_NOT_FOUND "SandboxNotFound"

static char *volume_dir(pe_daemon *d, const char *id)
{
    return pe_sandbox_volume_dir(&d->sx, id);
}

/* ---- checks (loop thread) ---- */

static int check_name(const char *name, pe_err *err)
{
    size_t n = strlen(name);

    if (n == 0 || n > VOLUME_NAME_MAX)
        return pe_err_set(err, PE_EINVAL, 0, "volume name must be 1 to %d characters",
                          VOLUME_NAME_MAX);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              (i > 0 && (c == '-' || c == '_' || c == '.'))))
            return pe_err_set(err, PE_EINVAL, 0,
                              "volume name must be lower-case letters, digits, '-', '_' and '.', "
                              "starting with a letter or digit");
    }
    return 0;
}

static int check_mount_path(const char *path, pe_err *err)
{
    static const char *const reserved[] = {"/proc", "/sys", "/dev"};

    if (pe_daemon_check_sandbox_path("volume path", path, err) < 0)
        return -1;
    for (size_t i = 0; i < PE_ARRAY_LEN(reserved); i++) {
        size_t n = strlen(reserved[i]);
        if (strncmp(path, reserved[i], n) == 0 && (path[n] == '/' || path[n] == '\0'))
            return pe_err_set(err, PE_EINVAL, 0, "a volume cannot be mounted on %s", reserved[i]);
    }
    return 0;
}

/* The {volume: {...}} object of add and update, checked. */
static const json_t *checked_volume(const json_t *body, bool add, pe_err *err)
{
    const json_t *o = json_object_get(body, "volume");
    const char *name = json_string_value(json_object_get(o, "name"));
    const char *sandbox = json_string_value(json_object_get(o, "sandboxId"));
    const char *path = json_string_value(json_object_get(o, "path"));

    if (name == NULL) {
        pe_err_set(err, PE_EINVAL, 0, "volume.name is required");
        return NULL;
    }
    if (check_name(name, err) < 0 || (path && check_mount_path(path, err) < 0))
        return NULL;
    if (add && path && sandbox == NULL) {
        pe_err_set(err, PE_EINVAL, 0, "volume.path needs volume.sandboxId");
        return NULL;
    }
    if (add && sandbox && path == NULL) {
        pe_err_set(err, PE_EINVAL, 0, "volume.path is required to mount in a sandbox");
        return NULL;
    }
    return o;
}

/* ---- views ---- */

static json_t *volume_view(const pe_store_volume *v)
{
    return json_pack("{s:s, s:s, s:o, s:o}", "id", v->id, "name", v->name, "createdAt",
                     pe_daemon_time_json(v->created_at), "updatedAt",
                     pe_daemon_time_json(v->updated_at));
}

static json_t *mount_view(const pe_store_mount *m)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:b, s:o, s:o}", "id", m->volume_id, "name",
                     m->volume_name, "sandboxId", m->sandbox_id, "path", m->path, "readOnly",
                     m->read_only, "createdAt", pe_daemon_time_json(m->created_at), "updatedAt",
                     pe_daemon_time_json(m->updated_at));
}

/* ---- jobs ---- */

static bool lookup_volume(pe_daemon_job *job, pe_store *s, pe_store_volume *v)
{
    if (pe_store_volume_get(s, job->did, job->id, v, &job->err) == 0)
        return true;
    pe_daemon_job_fail(job, &job->err, job->err.code == PE_ENOENT ? NOT_FOUND : NULL);
    return false;
}

/* A new volume row and its directory, or neither. */
static int create_volume(pe_daemon_job *job, pe_store *s, const char *name, pe_store_volume *v)
{
    cleanup_free char *id = NULL;
    cleanup_free char *dir = NULL;
    cleanup_free char *parent = pe_xasprintf("%s/volumes", job->d->rt.data_dir);
    pe_store_user u;

    /* A caller's first call may be this one: volumes need their user row. */
    if (pe_daemon_user_ensure(s, job->did, &u, &job->err) < 0)
        return -1;
    pe_store_user_clear(&u);
    if (pe_store_volume_add(s, job->did, name, &id, &job->err) < 0)
        return -1;
    /* On a cluster its data is in this node's data directory only. */
    if (job->d->cluster && pe_store_volume_set_node(s, id, job->d->node, &job->err) < 0) {
        pe_store_volume_delete(s, id, NULL);
        return -1;
    }
    dir = volume_dir(job->d, id);
    pe_err_clear(&job->err);
    if (pe_fs_mkdir_p(parent, 0700, &job->err) < 0 || mkdir(dir, 0755) < 0) {
        if (job->err.code == PE_OK)
            pe_err_sys(&job->err, "create volume directory");
        pe_store_volume_delete(s, id, NULL);
        return -1;
    }
    return pe_store_volume_get(s, job->did, id, v, &job->err);
}

/* A node's name for a message (its id if it has no row), in a per-thread
 * ring of two: one message names two nodes. */
static const char *node_name(pe_store *s, const char *id)
{
    static __thread char ring[2][128];
    static __thread int at;
    pe_store_node n = {0};
    pe_err ignored;
    char *out = ring[at++ % 2];

    snprintf(out, sizeof(ring[0]), "%s", id);
    if (pe_store_node_get(s, id, &n, &ignored) == 0)
        snprintf(out, sizeof(ring[0]), "%s", n.name);
    pe_store_node_clear(&n);
    return out;
}

static int mount_at(pe_daemon_job *job, pe_store *s, const pe_store_sandbox *sb,
                    const pe_store_volume *v, const char *path, bool read_only)
{
    pe_store_mount *list = NULL;
    int64_t total = 0;
    size_t n = 0;
    bool again = false;

    /* Its data is on one node: only a sandbox that node runs can mount it
     * (a sandbox of a volume on another node would need the two in one). */
    if (v->node && sb->provider_id && strcmp(v->node, sb->provider_id) != 0 &&
        (sb->backend == NULL || strcmp(sb->backend, "local") == 0))
        return pe_err_set(&job->err, PE_EEXIST, 0,
                          "volume %s lives on node %s and sandbox %s runs on node %s: a sandbox "
                          "mounts only volumes of its own node",
                          v->name, node_name(s, v->node), sb->name, node_name(s, sb->provider_id));
    if (pe_store_mount_list_sandbox(s, sb->id, MOUNTS_MAX + 1, 0, &list, &n, &total, &job->err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        again |= strcmp(list[i].volume_id, v->id) == 0;
    pe_store_mount_list_free(list, n);
    if (total >= MOUNTS_MAX && !again)
        return pe_err_set(&job->err, PE_EINVAL, 0, "a sandbox mounts at most %d volumes",
                          MOUNTS_MAX);
    return pe_store_mount_put(s, sb->id, v->id, path, read_only, &job->err);
}

/* The mount {volume: {path, readOnly}} asks for. */
static int mount_in(pe_daemon_job *job, pe_store *s, const pe_store_sandbox *sb,
                    const pe_store_volume *v, const json_t *o)
{
    return mount_at(job, s, sb, v, json_string_value(json_object_get(o, "path")),
                    json_is_true(json_object_get(o, "readOnly")));
}

static void add_work(pe_daemon_job *job, pe_store *s)
{
    const char *name = json_string_value(json_object_get(job->in, "name"));
    pe_store_sandbox sb = {0};
    pe_store_volume v = {0};
    pe_err lookup;
    json_t *view;

    if (job->id && !pe_daemon_job_sandbox(job, s, job->id, &sb))
        return;
    int r = 0;

    pe_err_clear(&lookup);
    if (pe_store_volume_get_by_name(s, job->did, name, &v, &lookup) == 0) {
        if (job->id == NULL)
            r = pe_err_set(&job->err, PE_EEXIST, 0, "you already have a volume named %s", name);
    } else if (lookup.code != PE_ENOENT) {
        job->err = lookup;
        r = -1;
    } else {
        r = create_volume(job, s, name, &v);
    }
    if (r < 0 || (job->id && mount_in(job, s, &sb, &v, job->in) < 0)) {
        pe_daemon_job_fail(job, &job->err, NULL);
    } else {
        view = volume_view(&v);
        if (job->id) {
            json_object_set_new(view, "sandboxId", json_string(sb.id));
            json_object_set(view, "path", json_object_get(job->in, "path"));
            json_object_set_new(view, "readOnly",
                                json_boolean(json_is_true(json_object_get(job->in, "readOnly"))));
        }
        job->out = json_pack("{s:o}", "volume", view);
    }
    pe_store_volume_clear(&v);
    pe_store_sandbox_clear(&sb);
}

static int64_t param_int(const pe_daemon_job *job, const char *k, int64_t def, int64_t max)
{
    json_t *v = json_object_get(job->in, k);
    int64_t i = json_is_integer(v) ? json_integer_value(v) : def;
    return i > max ? max : i;
}

static void list_work(pe_daemon_job *job, pe_store *s)
{
    int64_t limit = param_int(job, "limit", LIMIT_DEFAULT, LIMIT_MAX);
    int64_t offset = param_int(job, "offset", 0, INT64_MAX);
    json_t *arr = json_array();
    pe_store_sandbox sb = {0};
    int64_t total = 0;
    size_t n = 0;
    int r;

    if (job->id) {
        pe_store_mount *ml = NULL;
        if (!pe_daemon_job_sandbox(job, s, job->id, &sb)) {
            json_decref(arr);
            return;
        }
        r = pe_store_mount_list_sandbox(s, sb.id, limit, offset, &ml, &n, &total, &job->err);
        for (size_t i = 0; r == 0 && i < n; i++)
            json_array_append_new(arr, mount_view(&ml[i]));
        pe_store_mount_list_free(ml, n);
    } else {
        pe_store_volume *vl = NULL;
        r = pe_store_volume_list(s, job->did, limit, offset, &vl, &n, &total, &job->err);
        for (size_t i = 0; r == 0 && i < n; i++)
            json_array_append_new(arr, volume_view(&vl[i]));
        pe_store_volume_list_free(vl, n);
    }
    pe_store_sandbox_clear(&sb);
    if (r < 0) {
        json_decref(arr);
        pe_daemon_job_fail(job, &job->err, NULL);
        return;
    }
    job->out = json_pack("{s:o, s:I}", "volumes", arr, "total", (json_int_t)total);
}

/* The mount a volume's view shows: the oldest, if several. */
static const pe_store_mount *first_mount(const pe_store_mount *ml, size_t n)
{
    const pe_store_mount *first = NULL;

    for (size_t i = 0; i < n; i++)
        if (first == NULL || ml[i].created_at < first->created_at)
            first = &ml[i];
    return first;
}

static void get_work(pe_daemon_job *job, pe_store *s)
{
    pe_store_mount *ml = NULL;
    const pe_store_mount *first;
    pe_store_volume v;
    json_t *view, *mounts;
    size_t n = 0;

    if (!lookup_volume(job, s, &v))
        return;
    if (pe_store_mount_list_volume(s, v.id, &ml, &n, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
        pe_store_volume_clear(&v);
        return;
    }
    view = volume_view(&v);
    if ((first = first_mount(ml, n)) != NULL) {
        json_object_set_new(view, "sandboxId", json_string(first->sandbox_id));
        json_object_set_new(view, "path", json_string(first->path));
        json_object_set_new(view, "readOnly", json_boolean(first->read_only));
    }
    mounts = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(mounts, json_pack("{s:s, s:s, s:b}", "sandboxId", ml[i].sandbox_id,
                                                "path", ml[i].path, "readOnly", ml[i].read_only));
    json_object_set_new(view, "mounts", mounts);
    job->out = json_pack("{s:o}", "volume", view);
    pe_store_mount_list_free(ml, n);
    pe_store_volume_clear(&v);
}

/* A path or readOnly without a sandboxId (the SDK's volume.update): the
 * change is to the volume's one mount; with none or several, the caller
 * must say which sandbox. */
static int update_own_mount(pe_daemon_job *job, pe_store *s, const pe_store_volume *v,
                            const json_t *o)
{
    const json_t *path = json_object_get(o, "path"), *ro = json_object_get(o, "readOnly");
    pe_store_sandbox sb = {0};
    pe_store_mount *ml = NULL;
    size_t n = 0;
    int r;

    if (pe_store_mount_list_volume(s, v->id, &ml, &n, &job->err) < 0)
        return -1;
    if (n != 1) {
        pe_store_mount_list_free(ml, n);
        return pe_err_set(&job->err, PE_EINVAL, 0,
                          n == 0 ? "volume %s is not mounted in a sandbox: give volume.sandboxId "
                                   "to mount it"
                                 : "volume %s is mounted in several sandboxes: give "
                                   "volume.sandboxId to say which mount to change",
                          v->name);
    }
    if (!pe_daemon_job_sandbox(job, s, ml[0].sandbox_id, &sb)) {
        pe_store_mount_list_free(ml, n);
        return 1; /* answered */
    }
    r = mount_at(job, s, &sb, v, path ? json_string_value(path) : ml[0].path,
                 ro ? json_is_true(ro) : ml[0].read_only != 0);
    pe_store_mount_list_free(ml, n);
    pe_store_sandbox_clear(&sb);
    return r;
}

static void update_work(pe_daemon_job *job, pe_store *s)
{
    const json_t *o = json_object_get(job->in, "volume");
    const char *name = json_string_value(json_object_get(o, "name"));
    const char *sandbox = json_string_value(json_object_get(o, "sandboxId"));
    bool mount_change = json_object_get(o, "path") || json_object_get(o, "readOnly");
    pe_store_sandbox sb = {0};
    pe_store_volume v;
    int r = 0;

    if (!lookup_volume(job, s, &v))
        return;
    if (sandbox && !pe_daemon_job_sandbox(job, s, sandbox, &sb)) {
        pe_store_volume_clear(&v);
        return;
    }
    if (strcmp(name, v.name) != 0)
        r = pe_store_volume_rename(s, v.id, name, &job->err);
    if (r == 0 && sandbox && json_object_get(o, "path"))
        r = mount_in(job, s, &sb, &v, o);
    else if (r == 0 && sandbox)
        r = pe_store_mount_delete(s, sb.id, v.id, &job->err);
    else if (r == 0 && mount_change)
        r = update_own_mount(job, s, &v, o);
    if (r < 0)
        pe_daemon_job_fail(job, &job->err, NULL);
    pe_store_volume_clear(&v);
    pe_store_sandbox_clear(&sb);
    if (r == 0)
        get_work(job, s);
}

/* The running sandboxes that mount the volume, as the delete's answer
 * lists them: each keeps its (now empty) mount point until it stops. */
static json_t *running_mounts(const pe_store_volume *v, const pe_store_mount *ml, size_t n)
{
    json_t *arr = json_array();

    for (size_t i = 0; i < n; i++) {
        if (ml[i].sandbox_status != PE_STORE_RUNNING &&
            ml[i].sandbox_status != PE_STORE_INITIALIZING)
            continue;
        pe_log_info("volume %s (%s) deleted while sandbox %s runs with it at %s: its mount "
                    "point stays there, empty, until the sandbox stops; the next start does not "
                    "mount it",
                    v->name, v->id, ml[i].sandbox_id, ml[i].path);
        json_array_append_new(
            arr, json_pack("{s:s, s:s}", "sandboxId", ml[i].sandbox_id, "path", ml[i].path));
    }
    return arr;
}

static void delete_work(pe_daemon_job *job, pe_store *s)
{
    cleanup_free char *dir = NULL;
    cleanup_free char *gone = NULL;
    pe_store_mount *ml = NULL;
    pe_store_volume v;
    json_t *later;
    size_t n = 0;

    if (!lookup_volume(job, s, &v))
        return;
    /* Row first: a directory left behind is garbage, a row without its
     * directory would be a volume that lost its data. */
    if (pe_store_mount_list_volume(s, v.id, &ml, &n, &job->err) < 0 ||
        pe_store_volume_delete(s, v.id, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
        pe_store_mount_list_free(ml, n);
        pe_store_volume_clear(&v);
        return;
    }
    later = running_mounts(&v, ml, n);
    pe_store_mount_list_free(ml, n);
    /* Out of the way under a name no volume has, then removed: a sandbox
     * still writing into it can make the removal give up, and what is
     * left must not look like a volume. */
    dir = volume_dir(job->d, v.id);
    gone = pe_xasprintf("%s/volumes/.deleted-%s", job->d->rt.data_dir, v.id);
    if (rename(dir, gone) < 0 && errno != ENOENT)
        pe_log_warn("volume %s deleted, rename its directory: %s", v.id, strerror(errno));
    else if (pe_fs_rm_rf(gone, &job->err) < 0)
        pe_log_warn("volume %s deleted, its directory left: %s", v.id, job->err.msg);
    job->out = json_pack("{s:o}", "unmountAtNextStart", later);
    pe_store_volume_clear(&v);
}

/* ---- start ---- */

/* ---- handlers ---- */

static void add_volume(pe_xrpc_request *req, void *ud)
{
    cleanup_free char *did = pe_daemon_auth(ud, req);
    const json_t *o;
    pe_err err;

    if (did == NULL)
        return;
    pe_err_clear(&err);
    o = checked_volume(req->body, true, &err);
    if (o == NULL) {
        pe_xrpc_respond_err(req, &err);
        return;
    }
    pe_daemon_submit(ud, req, did, add_work, json_string_value(json_object_get(o, "sandboxId")),
                     json_deep_copy(o));
}

static void get_volumes(pe_xrpc_request *req, void *ud)
{
    cleanup_free char *did = pe_daemon_auth(ud, req);

    if (did == NULL)
        return;
    pe_daemon_submit(ud, req, did, list_work,
                     json_string_value(json_object_get(req->params, "sandboxId")),
                     json_deep_copy(req->params));
}

/* kind: deleting a volume removes its directory, which may take long. */
static void by_id(pe_xrpc_request *req, pe_daemon *d, pe_daemon_work_fn work, int kind)
{
    cleanup_free char *did = pe_daemon_auth(d, req);

    if (did)
        pe_daemon_submit_kind(d, req, did, work,
                              json_string_value(json_object_get(req->params, "id")), NULL, kind);
}

static void get_volume(pe_xrpc_request *req, void *ud)
{
    by_id(req, ud, get_work, PE_JOB_SHORT);
}

static void delete_volume(pe_xrpc_request *req, void *ud)
{
    by_id(req, ud, delete_work, PE_JOB_LONG);
}

static void update_volume(pe_xrpc_request *req, void *ud)
{
    cleanup_free char *did = pe_daemon_auth(ud, req);
    pe_err err;

    if (did == NULL)
        return;
    pe_err_clear(&err);
    if (checked_volume(req->body, false, &err) == NULL) {
        pe_xrpc_respond_err(req, &err);
        return;
    }
    pe_daemon_submit(ud, req, did, update_work, json_string_value(json_object_get(req->body, "id")),
                     json_deep_copy(req->body));
}

int pe_daemon_register_volumes(pe_daemon *d, pe_err *err)
{
    static const struct {
        const char *nsid;
        pe_xrpc_handler fn;
    } routes[] = {
        {"io.pocketenv.volume.addVolume", add_volume},
        {"io.pocketenv.volume.getVolumes", get_volumes},
        {"io.pocketenv.volume.getVolume", get_volume},
        {"io.pocketenv.volume.updateVolume", update_volume},
        {"io.pocketenv.volume.deleteVolume", delete_volume},
    };

    for (size_t i = 0; i < PE_ARRAY_LEN(routes); i++)
        if (pe_xrpc_register(d->srv, routes[i].nsid, routes[i].fn, d, err) < 0)
            return -1;
    return 0;
}
