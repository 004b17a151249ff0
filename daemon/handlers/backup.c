/* io.pocketenv.sandbox.createBackup, getBackups, restoreBackup
 * (reference §1.4, §3.7): a directory of a sandbox kept as a tar + zstd
 * archive under DATA/backups/<id>.tar.zst, with a description and an
 * expiry (default 3 days, as upstream), restorable into the sandbox
 * whether it runs or not.
 *
 * Handlers check their input on the loop thread; the archive is made or
 * unpacked on a worker by daemon/sandbox-archive.c, which alone touches
 * the sandbox's files. A backup is written to a temporary name, synced,
 * renamed, and only then recorded in the store: a failed or interrupted
 * backup leaves neither a row nor a file (a stray temporary file is
 * removed by the next tick). The sandbox is held busy meanwhile so the
 * idle stop does not pull it away. Ownership: another user's sandbox or
 * backup answers exactly as a missing one. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/log.h"
#include "core/util.h"
#include "daemon.h"
#include "resource-limits.h"
#include "pocketenv/store-backups.h"
#include "sandbox-env.h"
#include "sandbox-find.h"
#include "sandbox-archive.h"
#include "backups.h"

#define TTL_DEFAULT (3 * 24 * 3600) /* upstream's default */
#define TTL_MAX (365LL * 24 * 3600)
#define DESCRIPTION_MAX 1000
#define PER_SANDBOX_MAX 32
#define ARCHIVE_MAX (2LL << 30)    /* compressed size of one backup */
#define RESTORE_BYTES (64LL << 30) /* what one restore may unpack */
/* A remote sandbox's backup is packed and unpacked in memory by its
 * adapter (lib/provider has tars as buffers): a smaller bound. */
#define REMOTE_MAX ((size_t)256 << 20)
#define RESTORE_ENTRIES 2000000
#define STRAY_AGE_S 3600 /* temporary files older than this are leftovers */
#define SWEEP_EVERY_S 60 /* how often the tick looks for archives without a row */
#define SANDBOX_NOT_FOUND "SandboxNotFound"
#define BACKUP_NOT_FOUND "BackupNotFound"

static char *backups_dir(pe_daemon *d)
{
    return pe_xasprintf("%s/backups", d->rt.data_dir);
}

static bool lookup_sandbox(pe_daemon_job *job, pe_store *s, const char *id, bool any_state,
                           pe_store_sandbox *sb)
{
    if (pe_daemon_transfer_sandbox(job->d, s, job->did, id, any_state, sb, &job->err) == 0)
        return true;
    pe_daemon_job_fail(job, &job->err, job->err.code == PE_ENOENT ? SANDBOX_NOT_FOUND : NULL);
    return false;
}

static json_t *view(const pe_store_backup *b)
{
    json_t *o = json_object();

    json_object_set_new(o, "id", json_string(b->id));
    json_object_set_new(o, "sandboxId", json_string(b->sandbox_id));
    json_object_set_new(o, "directory", json_string(b->directory));
    pe_daemon_set_str(o, "description", b->description);
    pe_daemon_set_time(o, "expiresAt", b->expires_at);
    pe_daemon_set_time(o, "createdAt", b->created_at);
    return o;
}

/* ---- createBackup ---- */

/* A fresh temporary file in DATA/backups. */
static int new_temp(const char *dir, const char *id, char **path, pe_err *err)
{
    int fd;

    if (pe_fs_mkdir_p(dir, 0700, err) < 0)
        return -1;
    *path = pe_xasprintf("%s/.new-%s", dir, id);
    fd = open(*path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        pe_err_sys(err, "create %s", *path);
        free(*path);
        *path = NULL;
    }
    return fd;
}

/* The archive of dir, synced, at a temporary name (*tmp); its size. A
 * remote sandbox's is the plain tar its provider packs (lib/sandbox). */
static int make_archive(pe_daemon_job *job, pe_store *s, const pe_store_sandbox *sb,
                        const char *dir, const char *id, char **tmp, int64_t *size)
{
    cleanup_free char *bdir = backups_dir(job->d);
    int fd = new_temp(bdir, id, tmp, &job->err), r;
    struct stat st;

    if (fd < 0)
        return -1;
    pe_daemon_hold(job->d, sb->id);
    if (pe_sandbox_is_remote(sb))
        r = pe_sandbox_tar_out_fd(&job->d->sx, s, sb, dir, REMOTE_MAX, fd, &job->err);
    else
        r = pe_daemon_archive_dir(job->d, sb->id, dir, PE_ARCHIVE_ZSTD, fd, ARCHIVE_MAX, &job->err);
    pe_daemon_release(job->d, sb->id);
    if (r == 0 && (fsync(fd) < 0 || fstat(fd, &st) < 0))
        r = pe_err_sys(&job->err, "keep the backup");
    close(fd);
    if (r < 0) {
        unlink(*tmp);
        return -1;
    }
    *size = st.st_size;
    return 0;
}

/* Keep the archive at tmp as backup b, if the owner's disk quota has room
 * for it: the check, the rename and the row under the quota lock. */
static int keep_backup(pe_daemon_job *job, pe_store *s, const char *tmp, int64_t size,
                       const pe_store_backup *b)
{
    cleanup_free char *bdir = backups_dir(job->d);
    cleanup_free char *final = pe_xasprintf("%s/%s", bdir, b->archive);
    int r;

    pe_daemon_quota_lock();
    r = pe_daemon_quota_disk(job->d, s, job->did, size, &job->err);
    if (r == 0 && rename(tmp, final) < 0)
        r = pe_err_sys(&job->err, "keep the backup");
    if (r == 0 && (r = pe_store_backup_add(s, b, &job->err)) < 0)
        unlink(final);
    pe_daemon_quota_unlock();
    if (r < 0)
        unlink(tmp);
    return r;
}

static const char *error_name(const pe_err *err)
{
    switch (err->code) {
    case PE_ENOENT:
        return SANDBOX_NOT_FOUND;
    case PE_XRPC_EFORBIDDEN:
        return PE_DAEMON_QUOTA_ERROR;
    default:
        return NULL;
    }
}

static void create_work(pe_daemon_job *job, pe_store *s)
{
    const char *dir = json_string_value(json_object_get(job->in, "directory"));
    json_t *desc = json_object_get(job->in, "description");
    json_int_t ttl = json_integer_value(json_object_get(job->in, "ttl"));
    cleanup_free char *id = pe_store_new_id("bak_"), *tmp = NULL, *name = NULL;
    pe_store_sandbox sb;
    pe_store_backup b = {0};
    int64_t count = 0, size = 0, now = pe_store_now_ms();

    if (!lookup_sandbox(job, s, job->id, false, &sb))
        return;
    if (pe_store_backup_count(s, sb.id, &count, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
    } else if (count >= PER_SANDBOX_MAX) {
        pe_err_set(&job->err, PE_EINVAL, 0, "a sandbox keeps at most %d backups", PER_SANDBOX_MAX);
        pe_daemon_job_fail(job, &job->err, NULL);
    } else if (make_archive(job, s, &sb, dir, id, &tmp, &size) < 0) {
        pe_err_prefix(&job->err, "backup of %s", dir);
        pe_daemon_job_fail(job, &job->err, job->err.code == PE_ENOENT ? "DirectoryNotFound" : NULL);
    }
    if (job->failed) {
        pe_store_sandbox_clear(&sb);
        return;
    }
    name = pe_xasprintf("%s%s", id, pe_sandbox_is_remote(&sb) ? ".tar" : ".tar.zst");
    b = (pe_store_backup){.id = id,
                          .sandbox_id = sb.id,
                          .archive = name,
                          .directory = dir,
                          .description = json_string_value(desc),
                          .expires_at = now + (int64_t)(ttl > 0 ? ttl : TTL_DEFAULT) * 1000,
                          .created_at = now};
    if (keep_backup(job, s, tmp, size, &b) < 0) {
        pe_daemon_job_fail(job, &job->err, error_name(&job->err));
    } else {
        job->out = json_pack("{s:o}", "backup", view(&b));
        pe_log_info("event=backup sandbox=%s backup=%s directory=%s bytes=%lld", sb.id, id, dir,
                    (long long)size);
    }
    pe_store_sandbox_clear(&sb);
}

/* A job that moves a directory's worth of data: a long one. */
static void submit_long(pe_daemon *d, pe_xrpc_request *req, const char *did, pe_daemon_work_fn work,
                        const char *id, json_t *in)
{
    pe_daemon_job *job = pe_daemon_job_new(d, req, did, work);

    job->id = id ? pe_xstrdup(id) : NULL;
    job->in = in;
    job->kind = PE_JOB_LONG;
    pe_daemon_job_submit(job);
}

static int check_directory(const char *dir, pe_err *err)
{
    if (dir && strcmp(dir, "/") == 0)
        return 0;
    return pe_daemon_check_sandbox_path("directory", dir ? dir : "", err);
}

static void create_handler(pe_xrpc_request *req, void *ud)
{
    pe_daemon *d = ud;
    cleanup_free char *did = pe_daemon_auth(d, req);
    const char *dir = json_string_value(json_object_get(req->body, "directory"));
    const char *desc = json_string_value(json_object_get(req->body, "description"));
    json_t *ttl = json_object_get(req->body, "ttl");
    pe_err err;

    if (did == NULL)
        return;
    pe_err_clear(&err);
    if (check_directory(dir, &err) < 0 ||
        (desc && strlen(desc) > DESCRIPTION_MAX &&
         pe_err_set(&err, PE_EINVAL, 0, "description longer than %d bytes", DESCRIPTION_MAX)) ||
        (ttl && (json_integer_value(ttl) <= 0 || json_integer_value(ttl) > TTL_MAX) &&
         pe_err_set(&err, PE_EINVAL, 0, "ttl must be 1 to %lld seconds", TTL_MAX))) {
        pe_xrpc_respond_err(req, &err);
        return;
    }
    submit_long(d, req, did, create_work, json_string_value(json_object_get(req->params, "id")),
                json_deep_copy(req->body));
}

/* ---- getBackups ---- */

static void list_work(pe_daemon_job *job, pe_store *s)
{
    pe_store_backup *list = NULL;
    pe_store_sandbox sb;
    size_t n = 0;
    json_t *arr;

    if (!lookup_sandbox(job, s, job->id, true, &sb))
        return;
    if (pe_store_backup_list(s, sb.id, &list, &n, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
        pe_store_sandbox_clear(&sb);
        return;
    }
    arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, view(&list[i]));
    job->out = json_pack("{s:o}", "backups", arr);
    pe_store_backup_list_free(list, n);
    pe_store_sandbox_clear(&sb);
}

static void list_handler(pe_xrpc_request *req, void *ud)
{
    pe_daemon *d = ud;
    cleanup_free char *did = pe_daemon_auth(d, req);

    if (did)
        pe_daemon_submit(d, req, did, list_work,
                         json_string_value(json_object_get(req->params, "id")), NULL);
}

/* ---- restoreBackup ---- */

static void restore_work(pe_daemon_job *job, pe_store *s)
{
    const pe_archive_limits lim = {RESTORE_BYTES, RESTORE_ENTRIES};
    cleanup_free char *bdir = backups_dir(job->d), *path = NULL;
    pe_store_backup b;
    pe_store_sandbox sb;
    int fd;

    if (pe_store_backup_get(s, job->did, job->id, &b, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, job->err.code == PE_ENOENT ? BACKUP_NOT_FOUND : NULL);
        return;
    }
    if (!lookup_sandbox(job, s, b.sandbox_id, false, &sb)) {
        pe_store_backup_clear(&b);
        return;
    }
    path = pe_xasprintf("%s/%s", bdir, b.archive);
    fd = strchr(b.archive, '/') ? -1 : open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        pe_err_set(&job->err, PE_ENOENT, errno, "the backup's archive is gone");
        pe_daemon_job_fail(job, &job->err, BACKUP_NOT_FOUND);
    } else {
        int r;
        pe_daemon_hold(job->d, sb.id);
        if (pe_sandbox_is_remote(&sb)) /* through its provider, whatever it was taken from */
            r = pe_sandbox_tar_in_fd(&job->d->sx, s, &sb, b.directory, fd, REMOTE_MAX, &job->err);
        else
            r = pe_daemon_archive_unpack(job->d, sb.id, b.directory, fd, &lim, true, &job->err);
        if (r < 0) {
            pe_err_prefix(&job->err, "restore %s into %s", b.id, b.directory);
            pe_daemon_job_fail(job, &job->err,
                               job->err.code == PE_ENOENT ? "DirectoryNotFound" : NULL);
        } else {
            pe_log_info("event=restore sandbox=%s backup=%s directory=%s", sb.id, b.id,
                        b.directory);
        }
        pe_daemon_release(job->d, sb.id);
        close(fd);
    }
    pe_store_sandbox_clear(&sb);
    pe_store_backup_clear(&b);
}

static void restore_handler(pe_xrpc_request *req, void *ud)
{
    pe_daemon *d = ud;
    cleanup_free char *did = pe_daemon_auth(d, req);
    pe_daemon_job *job;

    if (did == NULL)
        return;
    job = pe_daemon_job_new(d, req, did, restore_work);
    job->id = pe_xstrdup(json_string_value(json_object_get(req->body, "backupId")));
    job->kind = PE_JOB_LONG;
    pe_daemon_job_submit(job);
}

/* ---- expiry (the tick) ---- */

static void remove_archive(pe_daemon *d, const char *name)
{
    cleanup_free char *path = pe_xasprintf("%s/backups/%s", d->rt.data_dir, name);

    if (unlink(path) < 0 && errno != ENOENT)
        pe_log_warn("remove backup %s: %s", name, strerror(errno));
}

/* Archives with no row (their sandbox was deleted) and old temporaries. */
static void sweep_files(pe_daemon *d, pe_store *s)
{
    cleanup_free char *dir = backups_dir(d);
    DIR *dh = opendir(dir);
    struct dirent *de;
    time_t now = time(NULL);

    if (dh == NULL)
        return;
    while ((de = readdir(dh)) != NULL) {
        size_t n = strlen(de->d_name);
        struct stat st;
        pe_store_backup b;
        pe_err err;
        char *id;

        if (fstatat(dirfd(dh), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
            continue;
        if (strncmp(de->d_name, ".new-", 5) == 0) {
            if (now - st.st_mtime > STRAY_AGE_S)
                unlinkat(dirfd(dh), de->d_name, 0);
            continue;
        }
        /* Young archives may be between their rename and their row. */
        if (n < 9 || strcmp(de->d_name + n - 8, ".tar.zst") != 0 || now - st.st_mtime < 300)
            continue;
        id = pe_xasprintf("%.*s", (int)(n - 8), de->d_name);
        pe_err_clear(&err);
        if (pe_store_backup_get(s, NULL, id, &b, &err) == 0)
            pe_store_backup_clear(&b);
        else if (err.code == PE_ENOENT)
            unlinkat(dirfd(dh), de->d_name, 0);
        free(id);
    }
    closedir(dh);
}

static time_t last_sweep;

void pe_daemon_backups_expire(pe_daemon *d, pe_store *s)
{
    pe_store_backup *list = NULL;
    size_t n = 0;
    pe_err err;

    pe_err_clear(&err);
    if (pe_store_backup_expired(s, pe_store_now_ms(), 100, &list, &n, &err) < 0) {
        pe_log_warn("expire backups: %s", err.msg);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        /* Row first: a restore that already holds the file still reads it. */
        if (pe_store_backup_delete(s, list[i].id, &err) < 0 && err.code != PE_ENOENT) {
            pe_log_warn("expire backup %s: %s", list[i].id, err.msg);
            continue;
        }
        remove_archive(d, list[i].archive);
        pe_log_info("event=backup_expired backup=%s sandbox=%s", list[i].id, list[i].sandbox_id);
    }
    pe_store_backup_list_free(list, n);
    /* One store query per archive: not at every tick. Only the tick's
     * job calls this, one at a time. */
    if (time(NULL) - last_sweep >= SWEEP_EVERY_S) {
        last_sweep = time(NULL);
        sweep_files(d, s);
    }
}

int pe_daemon_register_backups(pe_daemon *d, pe_err *err)
{
    if (pe_xrpc_register(d->srv, "io.pocketenv.sandbox.createBackup", create_handler, d, err) < 0 ||
        pe_xrpc_register(d->srv, "io.pocketenv.sandbox.getBackups", list_handler, d, err) < 0 ||
        pe_xrpc_register(d->srv, "io.pocketenv.sandbox.restoreBackup", restore_handler, d, err) < 0)
        return -1;
    return 0;
}
