/* pocketenv cp|copy [-L] [-q] SRC DST, and pocketenv backup create|list|restore.
 *
 * cp behaves like docker cp. `NAME:/path` is a path in sandbox NAME,
 * anything else a local path. A copy is a tar.gz whose entries all lie
 * under one top entry, the source's base name: a file, a symlink (kept as
 * one; -L follows the source's own link) or a directory; where it lands
 * is docker cp's table (lib/core/cp-path.h), decided by whoever sees the
 * destination:
 *   local -> sandbox   packed here and streamed to POST /cp, then
 *                      pullDirectory {includeRoot} puts it in place
 *   sandbox -> local   pushDirectory {includeRoot}, GET /cp/<uuid> streamed
 *                      and unpacked here as it arrives
 *   sandbox -> sandbox pushDirectory on one, pullDirectory on the other
 * "SRC/." copies a directory's contents, "SRC/" must be a directory, a
 * DST ending in '/' must be a directory. "-" as SRC: a tar on standard
 * input, unpacked into the sandbox directory DST (upstream's pull); as
 * DST: the copy as a plain tar on standard output. Nothing is held in memory: the
 * archive streams through a pipe to (or from) the request's thread, so a
 * copy has no size limit here (the daemon's --cp-max is its own). On a
 * terminal, a progress line on stderr (-q: none).
 *
 * Archives are written and read with libarchive, names as bytes whatever
 * the locale (pax hdrcharset=BINARY; a name the locale cannot convert is
 * an ARCHIVE_WARN with its bytes intact). Unpacking refuses absolute
 * paths, '..' and writes through symlinks (ARCHIVE_EXTRACT_SECURE_*), and
 * keeps no owners, device nodes or setuid bits; modes and times are kept.
 *
 * A local directory is packed honouring the ignore files found at any depth
 * (.pocketenvignore, .gitignore, .npmignore, .dockerignore), as upstream's
 * CLI (reference §3.6): each file's patterns apply below its directory; a
 * pattern matches a path when it matches any of its trailing component
 * runs, with or without a trailing '/'; '#' lines are comments; '!'
 * negations are not supported (they are skipped). Hand-written over
 * fnmatch(3): no Debian library implements these rules. */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "cli.h"
#include "client.h"
#include "core/cp-path.h"
#include "core/fs.h"
#include "core/util.h"

#define EXIT_API 1
#define EXIT_USAGE 2

static const char *const ignore_files[] = {".pocketenvignore", ".gitignore", ".npmignore",
                                           ".dockerignore"};

/* ---- ignore rules ---- */

typedef struct rules {
    char **pat; /* patterns of this level */
    size_t n;
    size_t base; /* length of the relative path of this level's directory */
    struct rules *up;
} rules;

static void rules_load(rules *r, const char *dir)
{
    for (size_t i = 0; i < PE_ARRAY_LEN(ignore_files); i++) {
        cleanup_free char *p = pe_xasprintf("%s/%s", dir, ignore_files[i]);
        FILE *f = fopen(p, "re");
        char line[1024];

        if (f == NULL)
            continue;
        while (fgets(line, sizeof(line), f)) {
            size_t len = strcspn(line, "\r\n");
            line[len] = '\0';
            while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '/'))
                line[--len] = '\0';
            if (len == 0 || line[0] == '#' || line[0] == '!')
                continue;
            r->pat = pe_xrealloc(r->pat, (r->n + 1) * sizeof(char *));
            r->pat[r->n++] = pe_xstrdup(line[0] == '/' ? line + 1 : line);
        }
        fclose(f);
    }
}

static void rules_free(rules *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->pat[i]);
    free(r->pat);
}

/* Does rel (relative to the top) match a pattern of any level above? */
static bool ignored(const rules *r, const char *rel)
{
    for (; r; r = r->up) {
        const char *sub = rel + r->base; /* relative to the rules' directory */
        for (size_t i = 0; i < r->n; i++) {
            for (const char *s = sub; s; s = strchr(s, '/') ? strchr(s, '/') + 1 : NULL)
                if (fnmatch(r->pat[i], s, 0) == 0)
                    return true;
        }
    }
    return false;
}

/* ---- packing ---- */

/* What a local copy holds, listed before a byte is sent: the progress
 * line knows its total, and an unreadable tree fails before the upload. */
typedef struct item {
    char *path; /* on disk */
    char *name; /* in the archive */
    struct stat st;
} item;

typedef struct packlist {
    item *v;
    size_t n, cap;
    int64_t bytes; /* of the regular files */
} packlist;

static void list_add(packlist *l, const char *path, const char *name, const struct stat *st)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->v = pe_xrealloc(l->v, l->cap * sizeof(item));
    }
    l->v[l->n++] = (item){pe_xstrdup(path), pe_xstrdup(name), *st};
    if (S_ISREG(st->st_mode))
        l->bytes += st->st_size;
}

static void list_free(packlist *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].path);
        free(l->v[i].name);
    }
    free(l->v);
}

static bool kept(mode_t m)
{
    return S_ISREG(m) || S_ISDIR(m) || S_ISLNK(m);
}

static int list_dir(packlist *l, const char *path, const char *rel, rules *up, pe_err *err)
{
    rules r = {.up = up, .base = strlen(rel) + 1};
    struct dirent *de;
    DIR *d = opendir(path);
    int ret = 0;

    if (d == NULL)
        return pe_err_sys(err, "open %s", path);
    rules_load(&r, path);
    while (ret == 0 && (de = readdir(d)) != NULL) {
        cleanup_free char *full = NULL;
        cleanup_free char *name = NULL;
        struct stat st;

        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        full = pe_xasprintf("%s/%s", path, de->d_name);
        name = pe_xasprintf("%s/%s", rel, de->d_name);
        if (ignored(&r, name))
            continue;
        if (lstat(full, &st) < 0) {
            if (errno == ENOENT)
                continue; /* gone since readdir: not part of the copy */
            ret = pe_err_sys(err, "%s", full);
            break;
        }
        if (!kept(st.st_mode))
            continue; /* devices, sockets, FIFOs: not copied (as docker cp) */
        list_add(l, full, name, &st);
        if (S_ISDIR(st.st_mode))
            ret = list_dir(l, full, name, &r, err);
    }
    closedir(d);
    rules_free(&r);
    return ret;
}

static int write_entry(struct archive *a, const item *it, pe_progress *prog, int64_t *done,
                       int64_t total, pe_err *err)
{
    struct archive_entry *e = archive_entry_new();
    cleanup_fd int fd = -1;
    char target[PATH_MAX], buf[65536];
    ssize_t n = 0;
    int r = 0;

    archive_entry_copy_pathname(e, it->name);
    archive_entry_copy_stat(e, &it->st);
    archive_entry_set_uid(e, 0);
    archive_entry_set_gid(e, 0);
    if (S_ISLNK(it->st.st_mode)) {
        n = readlink(it->path, target, sizeof(target) - 1);
        if (n < 0) {
            archive_entry_free(e);
            return pe_err_sys(err, "read the link %s", it->path);
        }
        target[n] = '\0';
        archive_entry_copy_symlink(e, target);
    } else if (S_ISREG(it->st.st_mode)) {
        fd = open(it->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) {
            archive_entry_free(e);
            return pe_err_sys(err, "open %s", it->path);
        }
    }
    if (archive_write_header(a, e) < ARCHIVE_WARN)
        r = pe_err_set(err, PE_ESYS, 0, "pack %s: %s", it->path, archive_error_string(a));
    archive_entry_free(e);
    /* Exactly the size the header gave: a file growing meanwhile is cut,
     * one shrinking padded (libarchive pads), never a broken archive. */
    for (int64_t left = it->st.st_size; r == 0 && fd >= 0 && left > 0; left -= n) {
        n = read(fd, buf, left < (int64_t)sizeof(buf) ? (size_t)left : sizeof(buf));
        if (n < 0 && errno == EINTR) {
            n = 0;
            continue;
        }
        if (n <= 0)
            return n < 0 ? pe_err_sys(err, "read %s", it->path) : 0;
        if (archive_write_data(a, buf, (size_t)n) < 0)
            return pe_err_set(err, PE_ESYS, 0, "send %s: %s", it->path, archive_error_string(a));
        *done += n;
        pe_progress_show(prog, *done, total);
    }
    return r;
}

/* The archive of l, gzip, into fd (a pipe to the upload). */
static int pack(const packlist *l, int fd, pe_progress *prog, pe_err *err)
{
    struct archive *a = archive_write_new();
    int64_t done = 0;
    int r = 0;

    archive_write_set_format_pax_restricted(a);
    archive_write_set_format_option(a, "pax", "hdrcharset", "BINARY");
    archive_write_add_filter_gzip(a);
    archive_write_set_bytes_in_last_block(a, 1);
    if (archive_write_open_fd(a, fd) != ARCHIVE_OK)
        r = pe_err_set(err, PE_ESYS, 0, "archive: %s", archive_error_string(a));
    for (size_t i = 0; r == 0 && i < l->n; i++)
        r = write_entry(a, &l->v[i], prog, &done, l->bytes, err);
    if (archive_write_close(a) != ARCHIVE_OK && r == 0)
        r = pe_err_set(err, PE_ESYS, 0, "send: %s", archive_error_string(a));
    archive_write_free(a);
    if (r == 0)
        pe_progress_show(prog, l->bytes, l->bytes);
    return r;
}

/* ---- unpacking ---- */

/* What local path dest is, following its symlinks (the user's own). */
static int local_kind(const char *dest, enum pe_cp_dest *kind, pe_err *err)
{
    struct stat st;

    if (stat(dest, &st) == 0)
        *kind = S_ISDIR(st.st_mode) ? PE_CP_DEST_DIR : PE_CP_DEST_OTHER;
    else if (errno == ENOENT)
        *kind = PE_CP_DEST_MISSING;
    else
        return pe_err_set(err, PE_EINVAL, 0, "%s: %s", dest,
                          errno == ENOTDIR ? "not a directory" : strerror(errno));
    return 0;
}

typedef struct unpacker {
    struct archive *in, *out;
    pe_cp_plan plan;
    char top[PATH_MAX];
    int here; /* the working directory to return to */
} unpacker;

/* The first entry says what came; the plan says where it goes. */
static int unpack_plan(unpacker *u, struct archive_entry *e, const char *dest, bool contents,
                       pe_err *err)
{
    enum pe_cp_dest kind = PE_CP_DEST_MISSING;

    if (pe_cp_top(archive_entry_pathname(e) ?: "", u->top, sizeof(u->top)) < 0)
        return pe_err_set(err, PE_EINVAL, 0, "the daemon sent an archive that is not one copy");
    if (local_kind(dest, &kind, err) < 0 ||
        pe_cp_plan_make(u->top, archive_entry_filetype(e) == AE_IFDIR, contents, dest, kind,
                        &u->plan, err) < 0)
        return -1;
    if (chdir(u->plan.dir) < 0)
        return pe_err_sys(err, "%s", u->plan.dir);
    return 0;
}

static int unpack_entry(unpacker *u, struct archive_entry *e, pe_err *err)
{
    char name[PATH_MAX];
    const char *hl = archive_entry_hardlink(e);
    mode_t type = archive_entry_filetype(e);
    const void *buf;
    size_t size;
    la_int64_t off;
    int rc;

    if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK)
        return 0; /* no devices, fifos or sockets */
    if (pe_cp_rebase(archive_entry_pathname(e) ?: "", u->top, &u->plan, name, sizeof(name)) < 0)
        return pe_err_set(err, PE_EINVAL, 0, "the daemon sent an archive that is not one copy");
    if (name[0] == '\0')
        return 0; /* the top directory, whose contents go into the destination */
    archive_entry_copy_pathname(e, name);
    if (hl) {
        if (pe_cp_rebase(hl, u->top, &u->plan, name, sizeof(name)) < 0 || name[0] == '\0')
            return pe_err_set(err, PE_EINVAL, 0, "the daemon sent a link outside the copy");
        archive_entry_copy_hardlink(e, name);
    }
    archive_entry_set_perm(e, archive_entry_perm(e) & 01777); /* no setuid/setgid */
    if (archive_write_header(u->out, e) < ARCHIVE_WARN)
        return pe_err_set(err, PE_EINVAL, 0, "%s: %s", archive_entry_pathname(e),
                          archive_error_string(u->out));
    if (type == AE_IFREG)
        while ((rc = archive_read_data_block(u->in, &buf, &size, &off)) == ARCHIVE_OK)
            if (archive_write_data_block(u->out, buf, size, off) < ARCHIVE_WARN)
                return pe_err_set(err, PE_EINVAL, 0, "%s: %s", archive_entry_pathname(e),
                                  archive_error_string(u->out));
    if (archive_write_finish_entry(u->out) < ARCHIVE_WARN)
        return pe_err_set(err, PE_EINVAL, 0, "%s: %s", archive_entry_pathname(e),
                          archive_error_string(u->out));
    return 0;
}

/* Unpack the copy arriving on fd where docker cp puts it for dest. */
static int unpack(int fd, const char *dest, bool contents, pe_err *err)
{
    const int flags = ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM |
                      ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                      ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS;
    unpacker u = {.in = archive_read_new(), .out = archive_write_disk_new(), .here = -1};
    struct archive_entry *e;
    bool first = true;
    int r = 0, h;

    u.here = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    archive_read_support_filter_gzip(u.in);
    archive_read_support_format_tar(u.in);
    archive_write_disk_set_options(u.out, flags);
    if (archive_read_open_fd(u.in, fd, 65536) != ARCHIVE_OK)
        r = pe_err_set(err, PE_EINVAL, 0, "receive: %s", archive_error_string(u.in));
    while (r == 0 && (h = archive_read_next_header(u.in, &e)) != ARCHIVE_EOF) {
        if (h < ARCHIVE_WARN)
            r = pe_err_set(err, PE_EINVAL, 0, "receive: %s", archive_error_string(u.in));
        else if (first && unpack_plan(&u, e, dest, contents, err) < 0)
            r = -1;
        else
            r = unpack_entry(&u, e, err);
        first = false;
    }
    if (r == 0 && first)
        r = pe_err_set(err, PE_EINVAL, 0, "nothing came: the archive is empty");
    if (archive_write_close(u.out) < ARCHIVE_WARN && r == 0)
        r = pe_err_set(err, PE_EINVAL, 0, "%s", archive_error_string(u.out));
    archive_read_free(u.in);
    archive_write_free(u.out);
    pe_cp_plan_free(&u.plan);
    if (u.here >= 0 && fchdir(u.here) < 0 && r == 0)
        r = pe_err_sys(err, "back to the working directory");
    if (u.here >= 0)
        close(u.here);
    return r;
}

/* ---- cp ---- */

typedef struct cp_opts {
    bool follow, quiet;
} cp_opts;

/* "NAME:/path" -> sandbox NAME and path; else local. */
static bool sandbox_side(const char *arg, char **name, const char **path)
{
    const char *colon = strchr(arg, ':');

    if (colon == NULL || colon == arg || memchr(arg, '/', (size_t)(colon - arg)))
        return false;
    *name = pe_xasprintf("%.*s", (int)(colon - arg), arg);
    *path = colon + 1;
    return true;
}

static bool ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), t = strlen(tail);

    return n >= t && strcmp(s + n - t, tail) == 0;
}

/* "SRC/." (or "/", or "."): a directory's contents. */
static bool contents_of(const char *src)
{
    return ends_with(src, "/.") || strcmp(src, ".") == 0;
}

static int push(pe_api *a, const char *sb, const char *path, const cp_opts *o, char **uuid,
                pe_err *err)
{
    json_t *body = json_pack("{s:s, s:s, s:b, s:b}", "sandboxId", sb, "directoryPath", path,
                             "includeRoot", 1, "followLink", o->follow),
           *out = NULL;
    int r = pe_api_call(a, "io.pocketenv.sandbox.pushDirectory", NULL, body, &out, err);

    json_decref(body);
    if (r == 0)
        *uuid = pe_xstrdup(json_string_value(json_object_get(out, "uuid")) ?: "");
    json_decref(out);
    return r;
}

/* root: a docker cp copy (one top entry); else a tar of a directory's
 * contents (from standard input), unpacked into path as upstream does. */
static int pull(pe_api *a, const char *sb, const char *uuid, const char *path, bool root,
                bool contents, pe_err *err)
{
    json_t *body =
               root ? json_pack("{s:s, s:s, s:s, s:b, s:b}", "sandboxId", sb, "uuid", uuid,
                                "directoryPath", path, "includeRoot", 1, "contentsOnly", contents)
                    : json_pack("{s:s, s:s, s:s}", "sandboxId", sb, "uuid", uuid, "directoryPath",
                                path),
           *out = NULL;
    int r = pe_api_call(a, "io.pocketenv.sandbox.pullDirectory", NULL, body, &out, err);

    json_decref(body);
    json_decref(out);
    return r;
}

/* The local source's top entry: its base name ("." for "/" and "."). */
static char *top_name(const char *src)
{
    bool slash;
    cleanup_free char *t = pe_cp_trim(src, &slash);
    cleanup_free char *real = NULL;
    const char *base = strrchr(t, '/') ? strrchr(t, '/') + 1 : t;

    if (contents_of(src) || strcmp(t, "/") == 0 || strcmp(base, ".") == 0)
        return pe_xstrdup(".");
    if (strcmp(base, "..") == 0 && (real = realpath(t, NULL)) != NULL)
        return strcmp(real, "/") == 0 ? pe_xstrdup(".") : pe_xstrdup(strrchr(real, '/') + 1);
    return pe_xstrdup(base);
}

/* List the local source src: *l (the top entry and, for a directory,
 * what it holds). Errors a user acts on: missing, not a directory. */
static int list_source(const char *src, const cp_opts *o, packlist *l, pe_err *err)
{
    bool dir_wanted = ends_with(src, "/") || contents_of(src);
    cleanup_free char *top = top_name(src);
    struct stat st;

    if ((o->follow || dir_wanted ? stat(src, &st) : lstat(src, &st)) < 0)
        return pe_err_set(err, PE_EINVAL, 0, "%s: %s", src,
                          errno == ENOTDIR ? "not a directory" : strerror(errno));
    if (dir_wanted && !S_ISDIR(st.st_mode))
        return pe_err_set(err, PE_EINVAL, 0, "%s: not a directory", src);
    if (!kept(st.st_mode))
        return pe_err_set(err, PE_EINVAL, 0, "%s: not a file, directory or symlink", src);
    list_add(l, src, top, &st);
    return S_ISDIR(st.st_mode) ? list_dir(l, src, top, NULL, err) : 0;
}

static int upload(pe_api *a, const packlist *l, const cp_opts *o, char **uuid, pe_err *err)
{
    pe_api_stream *s = NULL;
    pe_progress prog;
    json_t *out = NULL;
    pe_err local;
    int fd = -1, r;

    pe_progress_init(&prog, "sent", o->quiet);
    pe_err_clear(&local);
    if (pe_api_upload_begin(a, "/cp", &s, &fd, err) < 0)
        return -1;
    r = pack(l, fd, &prog, &local);
    if (r < 0)
        pe_api_stream_abort(s);
    close(fd);
    pe_progress_end(&prog);
    /* A refusal by the daemon (too big, not logged in) explains a broken
     * pipe better than the pipe; else a local error is the one to tell. */
    if (pe_api_stream_end(s, &out, err) < 0 &&
        (r == 0 || err->code == PE_API_EHTTP || err->code == PE_API_ECUT))
        return -1;
    if (r < 0) {
        *err = local;
        json_decref(out);
        return -1;
    }
    *uuid = pe_xstrdup(json_string_value(json_object_get(out, "uuid")) ?: "");
    json_decref(out);
    return 0;
}

static int download(pe_api *a, const char *uuid, const char *dest, bool contents, const cp_opts *o,
                    pe_err *err)
{
    cleanup_free char *path = pe_xasprintf("/cp/%s", uuid);
    pe_api_stream *s = NULL;
    pe_progress prog;
    pe_err local;
    int fd = -1, r;

    pe_progress_init(&prog, "received", o->quiet);
    pe_err_clear(&local);
    if (pe_api_download_begin(a, path, &prog, &s, &fd, err) < 0)
        return -1;
    r = unpack(fd, dest, contents, &local);
    close(fd);
    if (pe_api_stream_end(s, NULL, err) < 0 && (r == 0 || a->status >= 300)) {
        pe_progress_end(&prog);
        return -1;
    }
    pe_progress_end(&prog);
    if (r < 0)
        *err = local;
    return r;
}

/* "cp - NAME:DIR": a tar (plain or compressed) read from standard input,
 * sent as it is; the daemon checks it like any upload. */
static int upload_stdin(pe_api *a, const cp_opts *o, char **uuid, pe_err *err)
{
    pe_api_stream *s = NULL;
    pe_progress prog;
    json_t *out = NULL;
    char buf[65536];
    int64_t sent = 0;
    int fd = -1, r = 0;
    ssize_t n;

    pe_progress_init(&prog, "sent", o->quiet);
    if (pe_api_upload_begin(a, "/cp", &s, &fd, err) < 0)
        return -1;
    while (r == 0 && (n = read(STDIN_FILENO, buf, sizeof(buf))) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || pe_fs_write_all(fd, buf, (size_t)n) < 0)
            r = -1;
        sent += n > 0 ? n : 0;
        pe_progress_show(&prog, sent, 0);
    }
    if (r < 0)
        pe_api_stream_abort(s);
    close(fd);
    pe_progress_end(&prog);
    if (pe_api_stream_end(s, &out, err) < 0)
        return -1;
    if (r < 0) {
        json_decref(out);
        return pe_err_sys(err, "read the archive from standard input");
    }
    *uuid = pe_xstrdup(json_string_value(json_object_get(out, "uuid")) ?: "");
    json_decref(out);
    return 0;
}

/* "cp NAME:SRC -": the copy as a plain tar on standard output, as docker
 * cp writes it (the daemon's object is gzip: inflated on the way). */
static int download_stdout(pe_api *a, const char *uuid, const cp_opts *o, pe_err *err)
{
    cleanup_free char *path = pe_xasprintf("/cp/%s", uuid);
    struct archive *in = archive_read_new();
    struct archive_entry *e;
    pe_api_stream *s = NULL;
    pe_progress prog;
    pe_err local;
    const void *buf;
    size_t len;
    la_int64_t off;
    int fd = -1, r = 0, rc = ARCHIVE_OK;

    pe_progress_init(&prog, "received", o->quiet);
    pe_err_clear(&local);
    archive_read_support_filter_gzip(in);
    archive_read_support_format_raw(in);
    if (pe_api_download_begin(a, path, &prog, &s, &fd, err) < 0) {
        archive_read_free(in);
        return -1;
    }
    if (archive_read_open_fd(in, fd, 65536) != ARCHIVE_OK ||
        archive_read_next_header(in, &e) != ARCHIVE_OK)
        r = pe_err_set(&local, PE_EINVAL, 0, "receive: %s", archive_error_string(in));
    while (r == 0 && (rc = archive_read_data_block(in, &buf, &len, &off)) == ARCHIVE_OK)
        if (pe_fs_write_all(STDOUT_FILENO, buf, len) < 0)
            r = pe_err_sys(&local, "write to standard output");
    if (r == 0 && rc != ARCHIVE_EOF)
        r = pe_err_set(&local, PE_EINVAL, 0, "receive: %s", archive_error_string(in));
    archive_read_free(in);
    close(fd);
    if (pe_api_stream_end(s, NULL, err) < 0 && (r == 0 || a->status >= 300)) {
        pe_progress_end(&prog);
        return -1;
    }
    pe_progress_end(&prog);
    if (r < 0)
        *err = local;
    return r;
}

static int cp(const char *src_arg, const char *dst_arg, const cp_opts *o)
{
    cleanup_free char *src_sb = NULL;
    cleanup_free char *dst_sb = NULL;
    cleanup_free char *uuid = NULL;
    const char *src = src_arg, *dst = dst_arg;
    packlist l = {0};
    pe_api a;
    pe_err err;
    int r = 0;

    bool from_sb = sandbox_side(src_arg, &src_sb, &src);
    bool to_sb = sandbox_side(dst_arg, &dst_sb, &dst);
    bool from_stdin = !from_sb && strcmp(src, "-") == 0;
    bool to_stdout = !to_sb && strcmp(dst, "-") == 0;

    if ((!from_sb && !to_sb) || (from_stdin && !to_sb) || (to_stdout && !from_sb)) {
        fprintf(stderr, "pocketenv: one side must be a sandbox path, NAME:/path\n");
        return EXIT_USAGE;
    }
    pe_err_clear(&err);
    if (!from_sb && !from_stdin && list_source(src, o, &l, &err) < 0) {
        list_free(&l);
        fprintf(stderr, "pocketenv: %s\n", err.msg);
        return EXIT_USAGE;
    }
    if (pe_api_open(&a, true, &err) < 0) {
        list_free(&l);
        fprintf(stderr, "pocketenv: %s\n", err.msg);
        return EXIT_API;
    }
    signal(SIGPIPE, SIG_IGN); /* a refused upload closes the pipe: an error, not a death */
    r = from_sb      ? push(&a, src_sb, src, o, &uuid, &err)
        : from_stdin ? upload_stdin(&a, o, &uuid, &err)
                     : upload(&a, &l, o, &uuid, &err);
    list_free(&l);
    if (r == 0 && to_sb)
        r = pull(&a, dst_sb, uuid, dst, !from_stdin, contents_of(src), &err);
    else if (r == 0 && to_stdout)
        r = download_stdout(&a, uuid, o, &err);
    else if (r == 0)
        r = download(&a, uuid, dst, contents_of(src), o, &err);
    if (r < 0 && strcmp(a.error_name, "SandboxNotFound") == 0)
        pe_err_set(&err, PE_API_EHTTP, 0, "sandbox %s not found",
                   from_sb && (!to_sb || strstr(err.msg, src_sb)) ? src_sb : dst_sb);
    pe_api_close(&a);
    if (r < 0) {
        fprintf(stderr, "pocketenv: %s\n", err.msg);
        return EXIT_API;
    }
    if (!to_stdout) /* there, stdout is the archive */
        printf("Copied files from %s to %s\n", src_arg, dst_arg);
    return 0;
}

/* ---- backup ---- */

static int ttl_seconds(const char *s, long long *out)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || end == s || v <= 0 || end[1] != '\0' || !strchr("mhd", *end))
        return -1;
    *out = v * (*end == 'm' ? 60 : *end == 'h' ? 3600 : 86400);
    return 0;
}

static int backup(int argc, char **argv)
{
    const char *verb = argc > 1 ? argv[1] : "";
    json_t *params = NULL, *body = NULL, *out = NULL, *b;
    const char *nsid, *sb = NULL;
    size_t i;
    int r;

    if (strcmp(verb, "create") == 0 && argc >= 4) {
        long long ttl = 3 * 86400;
        body = json_pack("{s:s}", "directory", argv[3]);
        for (int k = 4; k < argc; k++) {
            if ((strcmp(argv[k], "-d") == 0 || strcmp(argv[k], "--description") == 0) &&
                k + 1 < argc) {
                json_object_set_new(body, "description", json_string(argv[++k]));
            } else if ((strcmp(argv[k], "-t") == 0 || strcmp(argv[k], "--ttl") == 0) &&
                       k + 1 < argc) {
                if (ttl_seconds(argv[++k], &ttl) < 0) {
                    json_decref(body);
                    fprintf(stderr, "pocketenv: --ttl: a number with m, h or d, e.g. 3d\n");
                    return EXIT_USAGE;
                }
            } else {
                json_decref(body);
                fprintf(stderr, "pocketenv: unexpected argument '%s'\n", argv[k]);
                return EXIT_USAGE;
            }
        }
        json_object_set_new(body, "ttl", json_integer(ttl));
        sb = argv[2];
        params = json_pack("{s:s}", "id", sb);
        nsid = "io.pocketenv.sandbox.createBackup";
    } else if ((strcmp(verb, "list") == 0 || strcmp(verb, "ls") == 0) && argc == 3) {
        sb = argv[2];
        params = json_pack("{s:s}", "id", sb);
        nsid = "io.pocketenv.sandbox.getBackups";
    } else if (strcmp(verb, "restore") == 0 && argc == 3) {
        body = json_pack("{s:s}", "backupId", argv[2]);
        nsid = "io.pocketenv.sandbox.restoreBackup";
    } else {
        /* First what was wrong, then the usage. */
        if (argc < 2)
            pe_cli_why("missing COMMAND (create, list or restore)");
        else if (strcmp(verb, "create") == 0)
            pe_cli_bad_args(argc, argv, 2, "SANDBOX DIRECTORY", 2, 2);
        else if (strcmp(verb, "list") == 0 || strcmp(verb, "ls") == 0)
            pe_cli_bad_args(argc, argv, 2, "SANDBOX", 1, 1);
        else if (strcmp(verb, "restore") == 0)
            pe_cli_bad_args(argc, argv, 2, "BACKUP_ID", 1, 1);
        else
            pe_cli_why("unknown backup command '%s' (create, list or restore)", verb);
        return pe_cli_usage("backup create SANDBOX DIRECTORY [-d DESC] [-t TTL]\n"
                            "backup list|ls SANDBOX\n"
                            "backup restore BACKUP_ID");
    }
    r = pe_cli_call(nsid, params, body, &out, sb);
    json_decref(params);
    json_decref(body);
    if (r != 0)
        return r;
    if (strcmp(verb, "create") == 0) {
        const char *id =
            json_string_value(json_object_get(json_object_get(out, "backup"), "id")) ?: "";
        printf("Backup %s of %s:%s created\n", id, argv[2], argv[3]);
        printf("Run `pocketenv backup list %s` to see it.\n", argv[2]);
    } else if (strcmp(verb, "restore") == 0) {
        printf("Backup %s restored\n", argv[2]);
    } else if (pe_cli_json) {
        pe_cli_print_json(json_object_get(out, "backups"));
    } else {
        printf("%-28s %-24s %-26s %s\n", "BACKUP ID", "DIRECTORY", "CREATED AT", "EXPIRES AT");
        json_array_foreach(json_object_get(out, "backups"), i, b)
        {
            const char *exp = json_string_value(json_object_get(b, "expiresAt"));
            printf("%-28s %-24s %-26s %s\n", json_string_value(json_object_get(b, "id")) ?: "-",
                   json_string_value(json_object_get(b, "directory")) ?: "-",
                   json_string_value(json_object_get(b, "createdAt")) ?: "-", exp ? exp : "Never");
        }
    }
    json_decref(out);
    return 0;
}

static int cp_usage(const char *why, const char *arg)
{
    fprintf(stderr, "pocketenv: %s%s%s\n", why, arg ? arg : "", arg ? "'" : "");
    fprintf(stderr, "usage: pocketenv cp|copy [-L] [-q] SRC DST   (NAME:/path for a sandbox path,"
                    " - for a tar on stdin/stdout)\n"
                    "  -L, --follow-link  follow a symlink SRC\n"
                    "  -q, --quiet        no progress line\n");
    return EXIT_USAGE;
}

static int cp_main(int argc, char **argv)
{
    const char *paths[2];
    cp_opts o = {false, false};
    bool dashdash = false;
    int n = 0;

    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!dashdash && strcmp(s, "--") == 0)
            dashdash = true;
        else if (!dashdash && (strcmp(s, "-L") == 0 || strcmp(s, "--follow-link") == 0))
            o.follow = true;
        else if (!dashdash && (strcmp(s, "-q") == 0 || strcmp(s, "--quiet") == 0))
            o.quiet = true;
        else if (!dashdash && s[0] == '-' && s[1] != '\0')
            return cp_usage("unknown option '", s);
        else if (n == 2)
            return cp_usage("one source and one destination only; what is '", s);
        else
            paths[n++] = s;
    }
    if (n < 2)
        return cp_usage(
            n == 0 ? "a source and a destination are needed" : "a destination is needed", NULL);
    return cp(paths[0], paths[1], &o);
}

int pe_cmd_cp(int argc, char **argv)
{
    if (strcmp(argv[0], "backup") == 0)
        return backup(argc, argv);
    if (strcmp(argv[0], "cp") != 0 && strcmp(argv[0], "copy") != 0)
        return -1;
    return cp_main(argc, argv);
}
