/* Directory copies (reference §3.6): the /cp transfer store and
 * io.pocketenv.sandbox.pushDirectory / pullDirectory.
 *
 * The daemon is the transfer store (upstream uses an R2 bucket):
 *   POST /cp          a tar.gz (raw body, or multipart/form-data field
 *                     "file" as upstream's CLI sends it) -> {"uuid"}
 *   GET  /cp/<uuid>   the object, once: it is gone after the download
 *   pushDirectory     {sandboxId, directoryPath}: the sandbox's directory
 *                     packed into a new object -> {"uuid"}
 *   pullDirectory     {sandboxId, uuid, directoryPath}: the object (used
 *                     up) unpacked into the sandbox's directory
 * An object is DATA/cp/<uuid>.tar.gz with DATA/cp/<uuid>.json ({owner,
 * expiresAt}); only its owner (the token's DID) may download or pull it,
 * anyone else gets 404 as for a missing one. Objects never used expire
 * after OBJECT_TTL (the housekeeping tick removes them). Both files are
 * written to temporary names and renamed, the data last, so a crash
 * leaves no half object; taking an object is a rename, so two downloads
 * of one object cannot both get it.
 *
 * An upload is checked like an unpack (sandbox-archive.c) before it is
 * kept: absolute or ".." paths, writes through the archive's own
 * symlinks, device nodes, FIFOs and more than the limits are refused with
 * 400 and nothing is stored. Pulls unpack in a child that is the
 * sandbox's root (no escape, setuid bits cleared, files owned by the
 * sandbox's root).
 *
 * Limits: lib/http hands a route the whole body in memory, so an upload
 * is capped at UPLOAD_MAX (413 beyond) until lib/http can stream a body to
 * a file. Threading: the route handlers run on the loop; disk work runs as
 * daemon jobs on workers; a download is the taken file, sent by
 * libmicrohttpd with its length (so clients can show progress) as the
 * client reads it. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/log.h"
#include "core/util.h"
#include "daemon.h"
#include "http/xrpc-internal.h"
#include "resource-limits.h"
#include "resources.h"
#include "sandbox-archive.h"
#include "transfer.h"

#define UPLOAD_MAX (32u << 20)   /* bytes of one POST /cp body */
#define OBJECT_MAX (256LL << 20) /* bytes of one object (pushDirectory) */
#define UNPACK_BYTES (1LL << 30) /* what one object may unpack to */
#define UNPACK_ENTRIES 100000    /* entries of one object */
#define OBJECT_TTL_S (3600)      /* an object nobody takes is removed after */
#define PER_OWNER_MAX 16         /* objects waiting per user */
#define UUID_LEN 36
#define SANDBOX_NOT_FOUND "SandboxNotFound"
#define OBJECT_NOT_FOUND "NotFound"

static char *cp_dir(pe_daemon *d)
{
    return pe_xasprintf("%s/cp", d->rt.data_dir);
}

static bool valid_uuid(const char *s)
{
    if (s == NULL || strlen(s) != UUID_LEN)
        return false;
    for (int i = 0; i < UUID_LEN; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        char c = s[i];
        if (dash ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    return true;
}

static void new_uuid(char out[UUID_LEN + 1])
{
    unsigned char b[16];

    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
        abort(); /* the kernel's CSPRNG does not fail once seeded */
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, UUID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
}

/* ---- objects on disk ---- */

/* Objects of owner waiting now; *bytes (may be NULL): their data's size. */
static int owner_count(const char *dir, const char *owner, int64_t *bytes)
{
    DIR *dh = opendir(dir);
    struct dirent *de;
    int n = 0;

    if (bytes)
        *bytes = 0;
    if (dh == NULL)
        return 0;
    while ((de = readdir(dh)) != NULL) {
        size_t l = strlen(de->d_name);
        cleanup_free char *path = NULL, *text = NULL;
        struct stat st;
        json_t *meta;
        bool mine;

        if (l != UUID_LEN + 5 || strcmp(de->d_name + UUID_LEN, ".json") != 0)
            continue;
        path = pe_xasprintf("%s/%s", dir, de->d_name);
        if (pe_fs_read_file(path, 4096, &text, NULL, NULL) < 0)
            continue;
        meta = json_loads(text, 0, NULL);
        mine = meta && strcmp(json_string_value(json_object_get(meta, "owner")) ?: "", owner) == 0;
        json_decref(meta);
        if (!mine)
            continue;
        n++;
        free(path);
        path = pe_xasprintf("%s/%.*s.tar.gz", dir, UUID_LEN, de->d_name);
        if (bytes && lstat(path, &st) == 0 && S_ISREG(st.st_mode))
            *bytes += st.st_size;
    }
    closedir(dh);
    return n;
}

int64_t pe_daemon_copy_usage(pe_daemon *d, const char *owner)
{
    cleanup_free char *dir = cp_dir(d);
    int64_t bytes;

    owner_count(dir, owner, &bytes);
    return bytes;
}

/* A new temporary data file in DATA/cp for a future object. */
static int new_object(pe_daemon *d, const char *owner, char uuid[UUID_LEN + 1], char **tmp,
                      pe_err *err)
{
    cleanup_free char *dir = cp_dir(d);
    int fd;

    if (pe_fs_mkdir_p(dir, 0700, err) < 0)
        return -1;
    if (owner_count(dir, owner, NULL) >= PER_OWNER_MAX)
        return pe_err_set(err, PE_EINVAL, 0,
                          "%d copies are waiting already: download or pull them first",
                          PER_OWNER_MAX);
    new_uuid(uuid);
    *tmp = pe_xasprintf("%s/.new-%s.tar.gz", dir, uuid);
    fd = open(*tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        pe_err_sys(err, "create %s", *tmp);
        free(*tmp);
        *tmp = NULL;
    }
    return fd;
}

static int commit_object_locked(pe_daemon *d, int fd, const char *tmp, const char *owner,
                                const char *uuid, pe_err *err);

/* Keep the data written to fd at tmp as object uuid of owner, if the
 * owner's disk quota has room for it (checked and kept under the quota
 * lock). */
static int commit_object(pe_daemon *d, pe_store *s, int fd, const char *tmp, const char *owner,
                         const char *uuid, pe_err *err)
{
    struct stat st;
    int r;

    if (fstat(fd, &st) < 0)
        return pe_err_sys(err, "keep the copy");
    pe_daemon_quota_lock();
    r = pe_daemon_quota_disk(d, s, owner, st.st_size, err);
    if (r == 0)
        r = commit_object_locked(d, fd, tmp, owner, uuid, err);
    pe_daemon_quota_unlock();
    return r;
}

static int commit_object_locked(pe_daemon *d, int fd, const char *tmp, const char *owner,
                                const char *uuid, pe_err *err)
{
    cleanup_free char *dir = cp_dir(d), *meta_path = NULL, *data_path = NULL, *text = NULL;
    json_t *meta = json_pack("{s:s, s:I}", "owner", owner, "expiresAt",
                             (json_int_t)(time(NULL) + OBJECT_TTL_S));

    text = json_dumps(meta, JSON_COMPACT);
    json_decref(meta);
    meta_path = pe_xasprintf("%s/%s.json", dir, uuid);
    data_path = pe_xasprintf("%s/%s.tar.gz", dir, uuid);
    if (fsync(fd) < 0 || pe_fs_write_atomic(meta_path, text, strlen(text), 0600, err) < 0) {
        if (err->code == PE_OK)
            pe_err_sys(err, "keep the copy");
        return -1;
    }
    if (rename(tmp, data_path) < 0) {
        unlink(meta_path);
        return pe_err_sys(err, "keep the copy");
    }
    return 0;
}

/* Take object uuid of owner: from then on it exists only as the returned
 * fd (read from offset 0). Another owner's object is PE_ENOENT. */
static int take_object(pe_daemon *d, const char *owner, const char *uuid, pe_err *err)
{
    cleanup_free char *dir = cp_dir(d), *meta_path = NULL, *data_path = NULL, *taken = NULL;
    cleanup_free char *text = NULL;
    json_t *meta;
    bool mine;
    int fd;

    if (!valid_uuid(uuid))
        return pe_err_set(err, PE_ENOENT, 0, "no such copy");
    meta_path = pe_xasprintf("%s/%s.json", dir, uuid);
    if (pe_fs_read_file(meta_path, 4096, &text, NULL, NULL) < 0)
        return pe_err_set(err, PE_ENOENT, 0, "no such copy");
    meta = json_loads(text, 0, NULL);
    mine = meta && strcmp(json_string_value(json_object_get(meta, "owner")) ?: "", owner) == 0 &&
           json_integer_value(json_object_get(meta, "expiresAt")) > time(NULL);
    json_decref(meta);
    if (!mine)
        return pe_err_set(err, PE_ENOENT, 0, "no such copy");
    data_path = pe_xasprintf("%s/%s.tar.gz", dir, uuid);
    taken = pe_xasprintf("%s/.taken-%s.tar.gz", dir, uuid);
    /* The rename is the single use: a second taker finds nothing. */
    if (rename(data_path, taken) < 0)
        return pe_err_set(err, PE_ENOENT, 0, "no such copy");
    unlink(meta_path);
    fd = open(taken, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    unlink(taken);
    if (fd < 0)
        return pe_err_sys(err, "open the copy");
    return fd;
}

void pe_daemon_copy_expire(pe_daemon *d)
{
    cleanup_free char *dir = cp_dir(d);
    DIR *dh = opendir(dir);
    struct dirent *de;
    time_t now = time(NULL);

    if (dh == NULL)
        return;
    while ((de = readdir(dh)) != NULL) {
        const char *n = de->d_name;
        size_t l = strlen(n);
        cleanup_free char *text = NULL, *path = NULL;
        struct stat st;
        json_t *meta;
        int64_t exp;

        if (fstatat(dirfd(dh), n, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
            continue;
        if (n[0] == '.') { /* a temporary left by a crash */
            if (now - st.st_mtime > OBJECT_TTL_S)
                unlinkat(dirfd(dh), n, 0);
            continue;
        }
        if (l != UUID_LEN + 5 || strcmp(n + UUID_LEN, ".json") != 0)
            continue;
        path = pe_xasprintf("%s/%s", dir, n);
        if (pe_fs_read_file(path, 4096, &text, NULL, NULL) < 0)
            continue;
        meta = json_loads(text, 0, NULL);
        exp = json_integer_value(json_object_get(meta, "expiresAt"));
        json_decref(meta);
        if (exp > now)
            continue;
        free(path);
        path = pe_xasprintf("%s/%.*s.tar.gz", dir, UUID_LEN, n);
        unlink(path);
        unlinkat(dirfd(dh), n, 0);
        pe_log_info("event=copy_expired uuid=%.*s", UUID_LEN, n);
    }
    closedir(dh);
}

/* ---- raw routes: auth and answers ---- */

static void respond_err(pe_http_request *req, const pe_err *err, const char *name)
{
    pe_xrpc_error x = pe__xrpc_error_for(err->code);

    if (x.status >= 500) {
        pe_log_warn("%s %s: %s", req->method, req->path, err->msg);
        pe_http_respond_error(req, x.status, x.name, "internal error");
        return;
    }
    pe_http_respond_error(req, x.status, name ? name : x.name, err->msg);
}

/* The caller's DID, or NULL after answering 401. */
static char *route_auth(pe_daemon *d, pe_http_request *req)
{
    const char *h = req->authorization, *jwt = NULL;
    enum pe_auth_result r;
    char *did = NULL;

    if (h && strncasecmp(h, "Bearer ", 7) == 0) {
        jwt = h + 7;
        while (*jwt == ' ')
            jwt++;
        if (*jwt == '\0' || strcmp(jwt, "null") == 0)
            jwt = NULL;
    }
    if (jwt == NULL) {
        pe_http_respond_error(req, 401, "AuthenticationRequired", "authentication required");
        return NULL;
    }
    r = pe_auth_token_verify(d->auth, jwt, PE_AUTH_SCOPE_API, &did, NULL);
    if (r == PE_AUTH_OK)
        return did;
    pe_log_info("auth %s: %s refused: %s", req->client_addr, req->path, pe_auth_result_name(r));
    if (r == PE_AUTH_EXPIRED)
        pe_http_respond_error(req, 401, "ExpiredToken", "token has expired");
    else
        pe_http_respond_error(req, 401, "InvalidToken", "invalid token");
    return NULL;
}

/* A raw request's failure: kept in the job for its after callback, but not
 * as job->failed, which the job machinery would log as a background
 * failure (these are the client's errors, answered to it). */
static void raw_fail(pe_daemon_job *job, const char *name)
{
    job->err_name = name;
    if (job->err.code == PE_OK)
        pe_err_set(&job->err, PE_EINVAL, 0, "failed");
}

static bool raw_failed(const pe_daemon_job *job)
{
    return job->failed || job->err.code != PE_OK;
}

/* Queue work for a raw request; answered by after. */
static void submit_raw(pe_daemon *d, pe_http_request *req, const char *did, pe_daemon_work_fn work,
                       void (*after)(pe_daemon_job *), const char *id, int kind)
{
    pe_daemon_job *job = pe_daemon_job_new(d, NULL, did, work);
    pe_err why;

    job->ud = req;
    job->after = after;
    job->id = id ? pe_xstrdup(id) : NULL;
    job->kind = kind;
    pe_http_defer(req);
    pe_err_clear(&why);
    if (pe_daemon_job_submit_why(job, &why) < 0 && why.code == PE_XRPC_EBUSY)
        pe_http_respond_error(req, 503, "NotEnoughResources", why.msg);
    else if (why.code != PE_OK)
        respond_err(req, &why, NULL);
}

/* ---- POST /cp ---- */

/* The bytes of the multipart part named "file", or the raw body. */
static int upload_bytes(pe_http_request *req, const char **data, size_t *len, pe_err *err)
{
    const char *ct = pe_http_header(req, "Content-Type"), *b, *p, *end = req->body + req->body_len;
    char delim[256];
    size_t dl;

    *data = req->body;
    *len = req->body_len;
    if (ct == NULL || strncasecmp(ct, "multipart/form-data", 19) != 0)
        return 0;
    b = strstr(ct, "boundary=");
    if (b == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "multipart body without a boundary");
    b += 9;
    dl = strcspn(b, "; \t");
    if (*b == '"')
        b++, dl = strcspn(b, "\"");
    if (dl == 0 || dl > 200)
        return pe_err_set(err, PE_EINVAL, 0, "bad multipart boundary");
    snprintf(delim, sizeof(delim), "--%.*s", (int)dl, b);
    dl = strlen(delim);
    for (p = memmem(req->body, req->body_len, delim, dl); p;) {
        const char *hdr = p + dl, *body, *next;

        body = memmem(hdr, (size_t)(end - hdr), "\r\n\r\n", 4);
        if (body == NULL)
            break;
        body += 4;
        next = memmem(body, (size_t)(end - body), delim, dl);
        if (next == NULL || next - body < 2)
            break;
        if (memmem(hdr, (size_t)(body - hdr), "name=\"file\"", 11)) {
            *data = body;
            *len = (size_t)(next - 2 - body); /* the part ends with CRLF */
            return 0;
        }
        p = next;
    }
    return pe_err_set(err, PE_EINVAL, 0, "multipart body without a \"file\" part");
}

static void upload_work(pe_daemon_job *job, pe_store *s)
{
    const pe_archive_limits lim = {UNPACK_BYTES, UNPACK_ENTRIES};
    pe_http_request *req = job->ud;
    cleanup_free char *tmp = NULL;
    char uuid[UUID_LEN + 1];
    const char *data;
    size_t len;
    int fd;

    if (upload_bytes(req, &data, &len, &job->err) < 0) {
        raw_fail(job, NULL);
        return;
    }
    fd = new_object(job->d, job->did, uuid, &tmp, &job->err);
    if (fd < 0) {
        raw_fail(job, NULL);
        return;
    }
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            pe_err_sys(&job->err, "store the upload");
            break;
        }
        off += (size_t)w;
    }
    if (job->err.code != PE_OK || pe_daemon_archive_check(job->d, fd, &lim, &job->err) < 0 ||
        commit_object(job->d, s, fd, tmp, job->did, uuid, &job->err) < 0) {
        unlink(tmp);
        raw_fail(job, job->err.code == PE_XRPC_EFORBIDDEN ? PE_DAEMON_QUOTA_ERROR : NULL);
    } else {
        job->out = json_pack("{s:s}", "uuid", uuid);
        pe_log_info("event=cp_upload uuid=%s bytes=%zu", uuid, len);
    }
    close(fd);
}

static void answer_json(pe_daemon_job *job)
{
    pe_http_request *req = job->ud;
    char *text;

    if (raw_failed(job)) {
        respond_err(req, &job->err, job->err_name);
        return;
    }
    text = json_dumps(job->out, JSON_COMPACT);
    pe_http_respond(req, 200, "application/json", text, strlen(text), NULL);
    free(text);
}

/* ---- GET /cp/<uuid> ---- */

static void take_work(pe_daemon_job *job, pe_store *s)
{
    int fd = take_object(job->d, job->did, job->id, &job->err);

    if (fd < 0) {
        raw_fail(job, OBJECT_NOT_FOUND);
        return;
    }
    job->out = json_integer(fd);
    pe_log_info("event=cp_download uuid=%s", job->id);
}

static void download_after(pe_daemon_job *job)
{
    pe_http_request *req = job->ud;
    char disp[128];
    const char *headers[] = {"Content-Disposition", disp, NULL};

    if (raw_failed(job)) {
        respond_err(req, &job->err, job->err_name);
        return;
    }
    snprintf(disp, sizeof(disp), "attachment; filename=\"%s.tar.gz\"", job->id);
    pe_http_respond_fd(req, 200, "application/gzip", (int)json_integer_value(job->out), headers);
}

static void cp_route(pe_http_request *req, void *ud)
{
    pe_daemon *d = ud;
    cleanup_free char *did = NULL;
    const char *rest = req->rest;

    if (strcmp(req->method, "OPTIONS") == 0) {
        pe_http_respond(req, 204, NULL, NULL, 0, NULL);
        return;
    }
    if (strcmp(rest, "") == 0 || strcmp(rest, "/") == 0) {
        if (strcmp(req->method, "POST") != 0) {
            pe_http_respond_error(req, 405, "InvalidRequest", "POST a tar.gz to /cp");
            return;
        }
        if ((did = route_auth(d, req)) == NULL)
            return;
        /* An upload is read through by the archive checker: long. */
        submit_raw(d, req, did, upload_work, answer_json, NULL, PE_JOB_LONG);
        return;
    }
    if (rest[0] != '/') {
        pe_http_respond_error(req, 404, "NotFound", "no such path");
        return;
    }
    if (strcmp(req->method, "GET") != 0) {
        pe_http_respond_error(req, 405, "InvalidRequest", "GET /cp/<uuid>");
        return;
    }
    if ((did = route_auth(d, req)) == NULL)
        return;
    if (!valid_uuid(rest + 1)) {
        pe_http_respond_error(req, 404, OBJECT_NOT_FOUND, "no such copy");
        return;
    }
    submit_raw(d, req, did, take_work, download_after, rest + 1, PE_JOB_SHORT);
}

/* ---- pushDirectory / pullDirectory ---- */

static bool running_sandbox(pe_daemon_job *job, pe_store *s, const char *id, pe_store_sandbox *sb)
{
    if (pe_daemon_transfer_sandbox(job->d, s, job->did, id, false, sb, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, job->err.code == PE_ENOENT ? SANDBOX_NOT_FOUND : NULL);
        return false;
    }
    if (sb->status != PE_STORE_RUNNING) {
        pe_store_sandbox_clear(sb);
        pe_err_set(&job->err, PE_ESTATE, 0, "the sandbox is not running");
        pe_daemon_job_fail(job, &job->err, NULL);
        return false;
    }
    return true;
}

static void push_work(pe_daemon_job *job, pe_store *s)
{
    const char *dir = json_string_value(json_object_get(job->in, "directoryPath"));
    cleanup_free char *tmp = NULL;
    char uuid[UUID_LEN + 1];
    pe_store_sandbox sb;
    int fd, r;

    if (!running_sandbox(job, s, job->id, &sb))
        return;
    fd = new_object(job->d, job->did, uuid, &tmp, &job->err);
    if (fd < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
        pe_store_sandbox_clear(&sb);
        return;
    }
    pe_daemon_hold(job->d, sb.id);
    r = pe_daemon_archive_dir(job->d, sb.id, dir, PE_ARCHIVE_GZIP, fd, OBJECT_MAX, &job->err);
    pe_daemon_release(job->d, sb.id);
    if (r < 0 || commit_object(job->d, s, fd, tmp, job->did, uuid, &job->err) < 0) {
        unlink(tmp);
        pe_err_prefix(&job->err, "push %s", dir);
        pe_daemon_job_fail(job, &job->err,
                           job->err.code == PE_ENOENT            ? "DirectoryNotFound"
                           : job->err.code == PE_XRPC_EFORBIDDEN ? PE_DAEMON_QUOTA_ERROR
                                                                 : NULL);
    } else {
        job->out = json_pack("{s:s}", "uuid", uuid);
        pe_log_info("event=push sandbox=%s directory=%s uuid=%s", sb.id, dir, uuid);
    }
    close(fd);
    pe_store_sandbox_clear(&sb);
}

static void pull_work(pe_daemon_job *job, pe_store *s)
{
    const pe_archive_limits lim = {UNPACK_BYTES, UNPACK_ENTRIES};
    const char *dir = json_string_value(json_object_get(job->in, "directoryPath"));
    const char *uuid = json_string_value(json_object_get(job->in, "uuid"));
    pe_store_sandbox sb;
    int fd;

    if (!running_sandbox(job, s, job->id, &sb))
        return;
    fd = take_object(job->d, job->did, uuid, &job->err);
    if (fd < 0) {
        pe_daemon_job_fail(job, &job->err, OBJECT_NOT_FOUND);
        pe_store_sandbox_clear(&sb);
        return;
    }
    pe_daemon_hold(job->d, sb.id);
    if (pe_daemon_archive_unpack(job->d, sb.id, dir, fd, &lim, false, &job->err) < 0) {
        pe_err_prefix(&job->err, "pull into %s", dir);
        pe_daemon_job_fail(job, &job->err, NULL);
    } else {
        pe_log_info("event=pull sandbox=%s directory=%s uuid=%s", sb.id, dir, uuid);
    }
    pe_daemon_release(job->d, sb.id);
    close(fd);
    pe_store_sandbox_clear(&sb);
}

static int check_dir(const json_t *body, pe_err *err)
{
    const char *dir = json_string_value(json_object_get(body, "directoryPath"));

    if (dir && strcmp(dir, "/") == 0)
        return 0;
    return pe_daemon_check_sandbox_path("directoryPath", dir ? dir : "", err);
}

static void dir_handler(pe_xrpc_request *req, pe_daemon *d, pe_daemon_work_fn work, bool pull)
{
    cleanup_free char *did = pe_daemon_auth(d, req);
    const char *uuid = json_string_value(json_object_get(req->body, "uuid"));
    pe_daemon_job *job;
    pe_err err;

    if (did == NULL)
        return;
    pe_err_clear(&err);
    if (check_dir(req->body, &err) < 0 ||
        (pull && uuid == NULL &&
         pe_err_set(&err, PE_EINVAL, 0, "uuid is required: the copy to pull") < 0)) {
        pe_xrpc_respond_err(req, &err);
        return;
    }
    job = pe_daemon_job_new(d, req, did, work);
    job->id = pe_xstrdup(json_string_value(json_object_get(req->body, "sandboxId")));
    job->in = json_deep_copy(req->body);
    job->kind = PE_JOB_LONG;
    pe_daemon_job_submit(job);
}

static void push_handler(pe_xrpc_request *req, void *ud)
{
    dir_handler(req, ud, push_work, false);
}

static void pull_handler(pe_xrpc_request *req, void *ud)
{
    dir_handler(req, ud, pull_work, true);
}

int pe_daemon_register_copy(pe_daemon *d, pe_err *err)
{
    if (pe_http_route(d->srv, "/cp", UPLOAD_MAX, cp_route, d, err) < 0 ||
        pe_xrpc_register(d->srv, "io.pocketenv.sandbox.pushDirectory", push_handler, d, err) < 0 ||
        pe_xrpc_register(d->srv, "io.pocketenv.sandbox.pullDirectory", pull_handler, d, err) < 0)
        return -1;
    return 0;
}
