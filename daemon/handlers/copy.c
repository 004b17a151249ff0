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
 * An upload never sits in memory: the route's head callback (cp_head)
 * runs before a byte of the body is read, answers 401 to a caller without
 * a valid token (the body is then never read), has a worker make the
 * temporary file (DATA/cp/.new-<uuid>.tar.gz; the per-user count is
 * checked there) while libmicrohttpd holds the request, and then lets the
 * body stream into that file as it arrives (lib/http decodes a multipart
 * body's "file" part on the way). Only then does the handler run: the
 * archive is checked and renamed into place on a worker. A request that
 * ends any other way (client gone, refused, too big) takes its temporary
 * file with it (upload_free).
 *
 * Limits: an upload is at most upload_max bytes (PE_CP_UPLOAD_MAX_DEFAULT,
 * --cp-max; 413 beyond, before a byte is read when the length is
 * declared). Threading: the route callbacks run on the loop; disk work
 * runs as daemon jobs on workers, except the upload's own writes, which
 * lib/http makes on the loop as the bytes arrive (plain writes to a new
 * regular file, into the page cache); a download is the taken file, sent
 * by libmicrohttpd with its length (so clients can show progress) as the
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

#include <curl/curl.h>

#include "cluster.h"
#include "core/cp-path.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/util.h"
#include "daemon.h"
#include "http/xrpc-internal.h"
#include "resource-limits.h"
#include "sandbox-env.h"
#include "sandbox-archive.h"
#include "sandbox-find.h"
#include "transfer.h"

#define UNPACK_BYTES_MIN (1LL << 30) /* what one object may unpack to, at least */
#define UNPACK_ENTRIES 100000        /* entries of one object */
#define OBJECT_TTL_S (3600)          /* an object nobody takes is removed after */
#define PER_OWNER_MAX 16             /* objects waiting per user */
#define UUID_LEN PE_DAEMON_COPY_UUID_LEN
#define SANDBOX_NOT_FOUND "SandboxNotFound"
#define OBJECT_NOT_FOUND "NotFound"

static unsigned long long upload_max = PE_CP_UPLOAD_MAX_DEFAULT;
#define UPLOAD_SLACK (1ULL << 20) /* multipart framing lib/http allows on top */

/* One object (an upload or a push) is at most --cp-max bytes; what it may
 * unpack to grows with it (gzip makes real files 2 to 10 times smaller), so
 * the operator's one setting is the copy size users see, and a gzip bomb
 * still meets a bound. */
static pe_archive_limits unpack_limits(void)
{
    long long bytes = (long long)upload_max * 16;
    pe_archive_limits lim = {bytes > UNPACK_BYTES_MIN ? bytes : UNPACK_BYTES_MIN, UNPACK_ENTRIES};

    return lim;
}

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

/* A new temporary data file in DATA/cp for a future object (uuid: a new
 * one, unless keep_uuid). */
static int new_object_as(pe_daemon *d, const char *owner, char uuid[UUID_LEN + 1], bool keep_uuid,
                         char **tmp, pe_err *err);

static int new_object(pe_daemon *d, const char *owner, char uuid[UUID_LEN + 1], char **tmp,
                      pe_err *err)
{
    return new_object_as(d, owner, uuid, false, tmp, err);
}

static int new_object_as(pe_daemon *d, const char *owner, char uuid[UUID_LEN + 1], bool keep_uuid,
                         char **tmp, pe_err *err)
{
    cleanup_free char *dir = cp_dir(d);
    int fd;

    if (pe_fs_mkdir_p(dir, 0700, err) < 0)
        return -1;
    if (owner_count(dir, owner, NULL) >= PER_OWNER_MAX)
        return pe_err_set(err, PE_EINVAL, 0,
                          "%d copies are waiting already: download or pull them first",
                          PER_OWNER_MAX);
    if (!keep_uuid)
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

int pe_daemon_copy_put(pe_daemon *d, pe_store *s, const char *owner, const void *data, size_t len,
                       char uuid[PE_DAEMON_COPY_UUID_LEN + 1], pe_err *err)
{
    const pe_archive_limits lim = unpack_limits();
    cleanup_free char *tmp = NULL;
    cleanup_fd int fd = -1;
    const char *p = data;
    size_t left = len;

    if (len > upload_max)
        return pe_err_set(err, PE_EINVAL, 0, "the archive is %zu bytes, at most %llu", len,
                          upload_max);
    fd = new_object(d, owner, uuid, &tmp, err);
    if (fd < 0)
        return -1;
    while (left > 0) {
        ssize_t n = write(fd, p, left);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            unlink(tmp);
            return pe_err_sys(err, "keep the copy");
        }
        p += n;
        left -= (size_t)n;
    }
    if (lseek(fd, 0, SEEK_SET) < 0 || pe_daemon_archive_check(d, fd, &lim, err) < 0 ||
        commit_object(d, s, fd, tmp, owner, uuid, err) < 0) {
        if (err->code == PE_OK)
            pe_err_sys(err, "keep the copy");
        unlink(tmp);
        return -1;
    }
    pe_log_info("event=cp_upload uuid=%s bytes=%zu via=mcp", uuid, len);
    return 0;
}

int pe_daemon_copy_take(pe_daemon *d, const char *owner, const char *uuid, size_t max, char **data,
                        size_t *len, pe_err *err)
{
    cleanup_fd int fd = take_object(d, owner, uuid, err);
    struct stat st;
    size_t got = 0;
    char *buf;

    if (fd < 0)
        return -1;
    if (fstat(fd, &st) < 0)
        return pe_err_sys(err, "read the copy");
    if ((uint64_t)st.st_size > max)
        return pe_err_set(err, PE_EINVAL, 0,
                          "the archive is %lld bytes, over the %zu bytes allowed",
                          (long long)st.st_size, max);
    buf = pe_xmalloc((size_t)st.st_size + 1);
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            free(buf);
            return pe_err_sys(err, "read the copy");
        }
        got += (size_t)n;
    }
    *data = buf;
    *len = got;
    pe_log_info("event=cp_download uuid=%s via=mcp", uuid);
    return 0;
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

    if (pe_cluster_is_node_request(req)) /* another node moves its user's copy */
        return pe_cluster_route_auth(d, req);
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

/* One upload, from its head to its end; the request's data (lib/http
 * frees it when the request is over, whichever way it ends). */
struct upload {
    pe_http_request *req;
    char *did;
    char uuid[UUID_LEN + 1];
    char *tmp; /* the temporary file, until kept */
    int fd;
    bool kept;
};

/* No object after all: the temporary file goes before the answer does, so
 * a client that is told "refused" never finds a leftover. */
static void upload_discard(struct upload *u)
{
    if (u->tmp && !u->kept)
        unlink(u->tmp);
    free(u->tmp);
    u->tmp = NULL;
}

static void upload_free(void *p)
{
    struct upload *u = p;

    if (u->fd >= 0)
        close(u->fd);
    upload_discard(u); /* cut short, or refused by lib/http (too big, client gone) */
    free(u->did);
    free(u);
}

static bool is_upload(const pe_http_request *req)
{
    return strcmp(req->method, "POST") == 0 &&
           (strcmp(req->rest, "") == 0 || strcmp(req->rest, "/") == 0);
}

/* Worker: the temporary file the body will stream into. */
static void prepare_work(pe_daemon_job *job, pe_store *s)
{
    struct upload *u = job->ud;

    u->fd = new_object(job->d, u->did, u->uuid, &u->tmp, &job->err);
    if (u->fd < 0)
        raw_fail(job, NULL);
}

/* Loop: let the body in, into the file. */
static void prepare_after(pe_daemon_job *job)
{
    struct upload *u = job->ud;
    pe_err err;

    pe_err_clear(&err);
    if (raw_failed(job)) {
        respond_err(u->req, &job->err, job->err_name);
        return;
    }
    if (pe_http_body_to_fd(u->req, u->fd, upload_max, "file", &err) < 0) {
        upload_discard(u);
        respond_err(u->req, &err, NULL);
        return;
    }
    pe_http_continue(u->req);
}

/* Head callback: who is uploading is settled before the body is read, so
 * a stranger's upload costs neither memory nor disk. Every other request
 * (GET /cp/<uuid>, a wrong method) goes on to cp_route as it is; their
 * bodies, if any, are small (the route's memory limit). */
static void cp_head(pe_http_request *req, void *ud)
{
    pe_daemon *d = ud;
    struct upload *u;
    pe_daemon_job *job;
    char *did;

    if (!is_upload(req) || (did = route_auth(d, req)) == NULL)
        return;
    /* Plainly too big: no file for it. (lib/http enforces the exact cap:
     * a multipart body may carry up to 1 MiB of other parts on top.) */
    if (req->content_length >= 0 &&
        (unsigned long long)req->content_length > upload_max + UPLOAD_SLACK) {
        free(did);
        pe_http_respond_error(req, 413, "PayloadTooLarge",
                              "the upload is larger than this daemon takes");
        return;
    }
    u = pe_xcalloc(1, sizeof(*u));
    u->req = req;
    u->did = did;
    u->fd = -1;
    pe_http_set_data(req, u, upload_free);
    job = pe_daemon_job_new(d, NULL, did, prepare_work);
    job->ud = u;
    job->after = prepare_after;
    pe_http_defer(req);
    if (pe_daemon_job_submit(job) < 0)
        pe_http_respond_error(req, 503, "NotEnoughResources", "the daemon is busy");
}

/* Worker: the upload is in its file; check it as an unpack would, keep it. */
static void upload_work(pe_daemon_job *job, pe_store *s)
{
    const pe_archive_limits lim = unpack_limits();
    struct upload *u = job->ud;
    struct stat st;

    if (pe_daemon_archive_check(job->d, u->fd, &lim, &job->err) < 0 ||
        commit_object(job->d, s, u->fd, u->tmp, u->did, u->uuid, &job->err) < 0) {
        upload_discard(u); /* the request waits for this job: nothing else touches u */
        raw_fail(job, job->err.code == PE_XRPC_EFORBIDDEN ? PE_DAEMON_QUOTA_ERROR : NULL);
        return;
    }
    u->kept = true;
    job->out = json_pack("{s:s}", "uuid", u->uuid);
    pe_log_info("event=cp_upload uuid=%s bytes=%lld", u->uuid,
                fstat(u->fd, &st) == 0 ? (long long)st.st_size : -1LL);
}

static void upload_after(pe_daemon_job *job)
{
    struct upload *u = job->ud;
    char *text;

    if (raw_failed(job)) {
        respond_err(u->req, &job->err, job->err_name);
        return;
    }
    text = json_dumps(job->out, JSON_COMPACT);
    pe_http_respond(u->req, 200, "application/json", text, strlen(text), NULL);
    free(text);
}

/* Handler: the body is in the file. */
static void upload_done(pe_daemon *d, pe_http_request *req)
{
    struct upload *u = pe_http_data(req);
    pe_daemon_job *job;
    pe_err why;

    if (u == NULL) { /* cp_head answers every upload it does not prepare */
        pe_http_respond_error(req, 500, "InternalServerError", "internal error");
        return;
    }
    if (req->form_part_missing) {
        upload_discard(u);
        pe_http_respond_error(req, 400, "InvalidRequest", "multipart body without a \"file\" part");
        return;
    }
    job = pe_daemon_job_new(d, NULL, u->did, upload_work);
    job->ud = u;
    job->after = upload_after;
    job->kind = PE_JOB_LONG; /* read through by the archive checker */
    pe_http_defer(req);
    pe_err_clear(&why);
    if (pe_daemon_job_submit_why(job, &why) < 0) {
        upload_discard(u);
        if (why.code == PE_XRPC_EBUSY)
            pe_http_respond_error(req, 503, "NotEnoughResources", why.msg);
        else
            respond_err(req, &why, NULL);
    }
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
    if (is_upload(req)) {
        upload_done(d, req);
        return;
    }
    if (strcmp(rest, "") == 0 || strcmp(rest, "/") == 0) {
        pe_http_respond_error(req, 405, "InvalidRequest", "POST a tar.gz to /cp");
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

/* ---- objects between nodes (daemon/cluster-forward.c) ---- */

static int write_full(int fd, const char *buf, size_t len);

struct node_io {
    int fd;
    char *answer;
    size_t len;
};

static size_t read_fd(char *buf, size_t size, size_t n, void *ud)
{
    struct node_io *io = ud;
    ssize_t r = read(io->fd, buf, size * n);

    return r < 0 ? CURL_READFUNC_ABORT : (size_t)r;
}

static size_t keep_answer(char *data, size_t size, size_t n, void *ud)
{
    struct node_io *io = ud;

    if (io->len + size * n > 4096)
        return 0;
    io->answer = pe_xrealloc(io->answer, io->len + size * n + 1);
    memcpy(io->answer + io->len, data, size * n);
    io->len += size * n;
    io->answer[io->len] = '\0';
    return size * n;
}

static size_t write_fd(char *data, size_t size, size_t n, void *ud)
{
    struct node_io *io = ud;

    return write_full(io->fd, data, size * n) < 0 ? 0 : size * n;
}

/* One transfer to or from another node's /cp, streamed from or to fd. */
static long node_transfer(const char *url, const char *cred, int fd, bool upload,
                          struct node_io *io, pe_err *err)
{
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    cleanup_free char *auth = pe_xasprintf("Authorization: %s", cred);
    struct stat st;
    long status = 0;
    CURLcode rc;

    if (c == NULL)
        return pe_err_set(err, PE_EREMOTE, 0, "libcurl: no handle");
    io->fd = fd;
    h = curl_slist_append(h, auth);
    h = curl_slist_append(h, "Expect:");
    h = curl_slist_append(h, "Content-Type: application/gzip");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    if (upload) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, read_fd);
        curl_easy_setopt(c, CURLOPT_READDATA, io);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)(fstat(fd, &st) == 0 ? st.st_size : 0));
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, keep_answer);
    } else {
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_fd);
    }
    curl_easy_setopt(c, CURLOPT_WRITEDATA, io);
    rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK)
        return pe_err_set(err, PE_EREMOTE, 0, "the node did not answer: %s",
                          curl_easy_strerror(rc));
    if (status != 200)
        return pe_err_set(err, PE_EREMOTE, 0, "the node answered %ld", status);
    return 0;
}

int pe_daemon_copy_send(pe_daemon *d, const char *owner, const char *uuid, const char *address,
                        const char *cred, char out[PE_DAEMON_COPY_UUID_LEN + 1], pe_err *err)
{
    cleanup_free char *url = pe_xasprintf("%s/cp", address);
    struct node_io io = {0};
    json_t *o;
    int fd;

    pe_err clear;
    pe_err_clear(&clear);
    fd = take_object(d, owner, uuid, &clear);
    if (fd < 0)
        return 0; /* not here: maybe uploaded to that node, which will say */
    if (node_transfer(url, cred, fd, true, &io, err) < 0) {
        close(fd);
        free(io.answer);
        return -1;
    }
    close(fd);
    o = io.answer ? json_loads(io.answer, 0, NULL) : NULL;
    free(io.answer);
    if (!json_is_string(json_object_get(o, "uuid")) ||
        !valid_uuid(json_string_value(json_object_get(o, "uuid")))) {
        json_decref(o);
        return pe_err_set(err, PE_EREMOTE, 0, "the node's answer has no uuid");
    }
    snprintf(out, PE_DAEMON_COPY_UUID_LEN + 1, "%s", json_string_value(json_object_get(o, "uuid")));
    json_decref(o);
    return 1;
}

int pe_daemon_copy_fetch(pe_daemon *d, pe_store *s, const char *owner, const char *uuid,
                         const char *address, const char *cred, pe_err *err)
{
    cleanup_free char *url = pe_xasprintf("%s/cp/%s", address, uuid);
    cleanup_free char *tmp = NULL;
    struct node_io io = {0};
    char id[UUID_LEN + 1];
    int fd, r;

    if (!valid_uuid(uuid))
        return pe_err_set(err, PE_EREMOTE, 0, "the node's answer has no uuid");
    snprintf(id, sizeof(id), "%s", uuid);
    if ((fd = new_object_as(d, owner, id, true, &tmp, err)) < 0)
        return -1;
    r = node_transfer(url, cred, fd, false, &io, err);
    if (r == 0)
        r = commit_object(d, s, fd, tmp, owner, id, err);
    if (r < 0)
        unlink(tmp);
    close(fd);
    return r;
}

/* ---- pushDirectory / pullDirectory ---- */

static bool running_sandbox(pe_daemon_job *job, pe_store *s, const char *id, pe_store_sandbox *sb)
{
    /* a remote sandbox is no node's: its provider runs it */
    if (pe_daemon_transfer_sandbox(job->d, s, job->did, id, true, sb, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, job->err.code == PE_ENOENT ? SANDBOX_NOT_FOUND : NULL);
        return false;
    }
    if (!pe_sandbox_is_remote(sb)) {
        pe_store_sandbox_clear(sb);
        if (pe_daemon_transfer_sandbox(job->d, s, job->did, id, false, sb, &job->err) < 0) {
            pe_daemon_job_fail(job, &job->err,
                               job->err.code == PE_ENOENT ? SANDBOX_NOT_FOUND : NULL);
            return false;
        }
    }
    if (sb->status != PE_STORE_RUNNING) {
        pe_store_sandbox_clear(sb);
        pe_err_set(&job->err, PE_ESTATE, 0, "the sandbox is not running");
        pe_daemon_job_fail(job, &job->err, NULL);
        return false;
    }
    return true;
}

/* docker cp's source path (includeRoot): "P/." and "P/" mean "P, which
 * must be a directory" (its own link followed); *path is P (malloc'd). */
static int source_path(const char *given, char **path, bool *must_dir, pe_err *err)
{
    size_t n = strlen(given);
    bool slash;

    *must_dir = false;
    if (n >= 2 && strcmp(given + n - 2, "/.") == 0) {
        *must_dir = true;
        *path = n == 2 ? pe_xstrdup("/") : pe_xasprintf("%.*s", (int)(n - 2), given);
    } else {
        *path = pe_cp_trim(given, &slash);
        *must_dir = slash && strcmp(*path, "/") != 0;
    }
    if (strcmp(*path, "/") != 0 && pe_daemon_check_sandbox_path("directoryPath", *path, err) < 0) {
        free(pe_steal_ptr(path));
        return -1;
    }
    return 0;
}

static bool flag(const json_t *in, const char *name)
{
    return json_is_true(json_object_get(in, name));
}

/* All of buf to fd / len bytes of fd into buf (from its start): -1 with errno. */
static int write_full(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static int read_full(int fd, char *buf, size_t len)
{
    size_t got = 0;

    if (lseek(fd, 0, SEEK_SET) < 0)
        return -1;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return 0;
}

/* A remote sandbox's copy: its provider packs and unpacks (lib/sandbox);
 * docker cp's forms (includeRoot) are this daemon's own, local only. */
static int remote_only_plain(pe_daemon_job *job, const pe_store_sandbox *sb)
{
    if (!flag(job->in, "includeRoot"))
        return 0;
    return pe_err_set(&job->err, PE_ENOTCAP, 0, "not supported by %s: copy with includeRoot",
                      sb->backend);
}

static int push_remote(pe_daemon_job *job, pe_store *s, const pe_store_sandbox *sb, const char *dir,
                       int fd)
{
    cleanup_free char *tar = NULL;
    size_t len = 0;

    if (remote_only_plain(job, sb) < 0 ||
        pe_sandbox_tar_out(&job->d->sx, s, sb, dir, (size_t)upload_max, &tar, &len, &job->err) < 0)
        return -1;
    if (write_full(fd, tar, len) < 0)
        return pe_err_sys(&job->err, "write the copy");
    return 0;
}

static int pull_remote(pe_daemon_job *job, pe_store *s, const pe_store_sandbox *sb, const char *dir,
                       int fd)
{
    cleanup_free char *tar = NULL;
    size_t len = 0;
    struct stat st;

    if (remote_only_plain(job, sb) < 0)
        return -1;
    if (fstat(fd, &st) < 0 || (unsigned long long)st.st_size > upload_max)
        return pe_err_set(&job->err, PE_EINVAL, 0, "the copy is larger than %llu bytes",
                          upload_max);
    tar = pe_xmalloc((size_t)st.st_size + 1);
    len = (size_t)st.st_size;
    if (read_full(fd, tar, len) < 0)
        return pe_err_sys(&job->err, "read the copy");
    return pe_sandbox_tar_in(&job->d->sx, s, sb, dir, tar, len, &job->err);
}

static int push_archive(pe_daemon_job *job, const char *id, const char *dir, int fd)
{
    cleanup_free char *path = NULL;
    bool must_dir;

    if (!flag(job->in, "includeRoot"))
        return pe_daemon_archive_dir(job->d, id, dir, PE_ARCHIVE_GZIP, fd, (int64_t)upload_max,
                                     &job->err);
    if (source_path(dir, &path, &must_dir, &job->err) < 0)
        return -1;
    return pe_daemon_archive_path(job->d, id, path, must_dir || flag(job->in, "followLink"),
                                  must_dir, fd, (int64_t)upload_max, &job->err);
}

static void push_work(pe_daemon_job *job, pe_store *s)
{
    const char *dir = json_string_value(json_object_get(job->in, "directoryPath"));
    bool root = flag(job->in, "includeRoot");
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
    r = pe_sandbox_is_remote(&sb) ? push_remote(job, s, &sb, dir, fd)
                                  : push_archive(job, sb.id, dir, fd);
    pe_daemon_release(job->d, sb.id);
    if (r < 0 || commit_object(job->d, s, fd, tmp, job->did, uuid, &job->err) < 0) {
        unlink(tmp);
        pe_err_prefix(&job->err, "push %s", dir);
        pe_daemon_job_fail(job, &job->err,
                           job->err.code == PE_ENOENT
                               ? (root ? "FileNotFound" : "DirectoryNotFound")
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
    const pe_archive_limits lim = unpack_limits();
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
    if ((pe_sandbox_is_remote(&sb) ? pull_remote(job, s, &sb, dir, fd)
         : flag(job->in, "includeRoot")
             ? pe_daemon_archive_unpack_to(job->d, sb.id, dir, flag(job->in, "contentsOnly"), fd,
                                           &lim, &job->err)
             : pe_daemon_archive_unpack(job->d, sb.id, dir, fd, &lim, false, &job->err)) < 0) {
        pe_err_prefix(&job->err, "copy into %s", dir);
        pe_daemon_job_fail(job, &job->err, job->err.code == PE_ENOENT ? "DirectoryNotFound" : NULL);
    } else {
        pe_log_info("event=pull sandbox=%s directory=%s uuid=%s", sb.id, dir, uuid);
    }
    pe_daemon_release(job->d, sb.id);
    close(fd);
    pe_store_sandbox_clear(&sb);
}

/* Our extension fields (lexicons/README.md): booleans, and followLink /
 * contentsOnly only with includeRoot (the docker cp copies). */
static int check_flags(const json_t *body, bool pull, pe_err *err)
{
    const char *names[] = {"includeRoot", pull ? "contentsOnly" : "followLink"};
    const char *other = pull ? "followLink" : "contentsOnly";

    for (size_t i = 0; i < PE_ARRAY_LEN(names); i++) {
        const json_t *v = json_object_get(body, names[i]);
        if (v && !json_is_boolean(v))
            return pe_err_set(err, PE_EINVAL, 0, "%s must be a boolean", names[i]);
    }
    if (json_object_get(body, other))
        return pe_err_set(err, PE_EINVAL, 0, "%s is not a field of this method", other);
    if (flag(body, names[1]) && !flag(body, "includeRoot"))
        return pe_err_set(err, PE_EINVAL, 0, "%s needs includeRoot", names[1]);
    return 0;
}

static int check_dir(const json_t *body, bool pull, pe_err *err)
{
    const char *dir = json_string_value(json_object_get(body, "directoryPath"));
    cleanup_free char *path = NULL;
    bool slash;

    if (check_flags(body, pull, err) < 0)
        return -1;
    if (dir && flag(body, "includeRoot") && !pull) /* "P/" and "P/." mean something */
        return source_path(dir, &path, &slash, err);
    if (dir && flag(body, "includeRoot")) /* a trailing '/': a directory */
        dir = path = pe_cp_trim(dir, &slash);
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
    if (check_dir(req->body, pull, &err) < 0 ||
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

int pe_daemon_register_copy(pe_daemon *d, unsigned long long max, pe_err *err)
{
    upload_max = max ? max : PE_CP_UPLOAD_MAX_DEFAULT;
    /* max_body 0: other requests' bodies in memory stay small; uploads go
     * to a file (cp_head). */
    if (pe_http_route(d->srv, "/cp", 0, cp_route, d, err) < 0 ||
        pe_http_route_head(d->srv, "/cp", cp_head, err) < 0 ||
        pe_xrpc_register(d->srv, "io.pocketenv.sandbox.pushDirectory", push_handler, d, err) < 0 ||
        pe_xrpc_register(d->srv, "io.pocketenv.sandbox.pullDirectory", pull_handler, d, err) < 0)
        return -1;
    return 0;
}
