/* pocketenv-archive: the process that reads and writes a sandbox's files
 * for backups and copies (daemon/sandbox-archive.c starts it; see there
 * and docs/design/transfer.md).
 *
 * A program of its own, exec'd after fork, so that nothing of the daemon
 * (its token key, its sealing key, the store) is in the memory of a
 * process that parses archives a client sent or walks files a sandbox
 * controls. Its libraries are loaded from the host before it enters
 * anything.
 *
 *   pocketenv-archive pack running|stopped DIR zstd|gzip MAX_BYTES
 *   pocketenv-archive packtop running|stopped PATH gzip MAX_BYTES FLAGS
 *   pocketenv-archive unpack running|stopped DIR owners|root
 *   pocketenv-archive unpackto running|stopped DEST contents|whole
 *   pocketenv-archive check MAX_BYTES MAX_ENTRIES [onetop]
 *
 * fds: 3 the archive, 4 where a one-line error goes, 5/6 the handshake
 * with the daemon (stopped: it maps our new user namespace), 7 the
 * sandbox (running: its init's pidfd; stopped: O_PATH of its writable
 * layer). Exit 0 on success, else the reason is on fd 4.
 *
 * running: setns into the init's user and mount namespaces and become
 * uid/gid 0 there: the sandbox's root, with its root directory. stopped:
 * unshare a user namespace, wait for the daemon to map it onto the
 * sandbox's id range, become 0, chroot into the writable layer. check:
 * become nobody with no_new_privs; only the archive is read. The process
 * is non-dumpable throughout (the sandbox cannot ptrace it) and never
 * looks names up (no NSS: it would load the sandbox's libraries).
 *
 * pack and unpack: a directory's contents (backups, upstream's copies).
 * packtop and unpackto: docker cp's copies (lib/core/cp-path.h). packtop
 * archives PATH itself, its base name the top entry: a file, a symlink
 * (kept as one; FLAGS "follow" follows PATH's own last link, resolved
 * inside the sandbox like every path here) or a directory (FLAGS "dir":
 * it must be one). unpackto reads the top entry, looks at DEST and puts
 * the copy where docker cp would (the top renamed, or its contents merged
 * with "contents"), creating nothing above DEST.
 *
 * Names are bytes: whatever the locale (the helper has none), a name that
 * libarchive cannot convert comes with ARCHIVE_WARN and its bytes intact,
 * which is what is wanted; so warnings are not failures here. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <jansson.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "archive-proto.h"
#include "core/cp-path.h"
#include "core/util.h"
#include "pocketenv/err.h"

#define MSG_MAX 512
#define BLOCK 65536

enum { FD_DATA = 3, FD_MSG, FD_SYNC_IN, FD_SYNC_OUT, FD_TARGET };

/* msg = what (+ ": " + strerror(e) when e). */
static int child_err(char *msg, const char *what, int e)
{
    int n = snprintf(msg, MSG_MAX, "%s", what);

    if (e && n >= 0 && n < MSG_MAX)
        snprintf(msg + n, MSG_MAX - (size_t)n, ": %s", strerror(e));
    return -1;
}

static int become_root(void)
{
    if (setgroups(0, NULL) < 0 && errno != EPERM)
        return -1;
    if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
        return -1;
    return 0;
}

static int enter(bool running, char *msg)
{
    char c = 0;

    if (running) {
        if (setns(FD_TARGET, CLONE_NEWUSER | CLONE_NEWNS) < 0)
            return child_err(msg, "enter the sandbox", errno);
        return become_root() < 0 ? child_err(msg, "become the sandbox's root", errno) : 0;
    }
    if (unshare(CLONE_NEWUSER) < 0 || write(FD_SYNC_OUT, &c, 1) != 1 ||
        read(FD_SYNC_IN, &c, 1) != 1 || c != 1)
        return child_err(msg, "map the sandbox's ids", errno);
    if (become_root() < 0 || fchdir(FD_TARGET) < 0 || chroot(".") < 0 || chdir("/") < 0)
        return child_err(msg, "enter the writable layer", errno);
    return 0;
}

static int open_beneath_root(const char *path, bool create)
{
    struct open_how how = {.flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
                           .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
    cleanup_free char *p = pe_xstrdup(path);
    int fd;

    fd = (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof(how));
    if (fd >= 0 || errno != ENOENT || !create)
        return fd;
    /* Inside the sandbox's root with its powers: mkdir -p by path is
     * confined like everything else the child does. */
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char saved = *s;
        *s = '\0';
        if (mkdir(p, 0755) < 0 && errno != EEXIST)
            return -1;
        *s = saved;
        if (saved == '\0')
            break;
    }
    return (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof(how));
}

static bool pseudo_fs(int fd)
{
    static const long types[] = {PROC_SUPER_MAGIC, SYSFS_MAGIC,     CGROUP_SUPER_MAGIC,
                                 0x63677270,       DEBUGFS_MAGIC,   DEVPTS_SUPER_MAGIC,
                                 TRACEFS_MAGIC,    SECURITYFS_MAGIC};
    struct statfs sf;

    if (fstatfs(fd, &sf) < 0)
        return true;
    for (size_t i = 0; i < PE_ARRAY_LEN(types); i++)
        if ((long)sf.f_type == types[i])
            return true;
    return false;
}

/* chdir into dir of the sandbox. */
static int enter_dir(const char *dir, bool create, char *msg)
{
    int fd = open_beneath_root(dir, create);

    if (fd < 0)
        return child_err(msg,
                         errno == ENOENT ? "no such directory in the sandbox"
                                         : "cannot open the directory in the sandbox",
                         errno == ENOENT ? 0 : errno);
    if (pseudo_fs(fd)) {
        close(fd);
        return child_err(msg, "not a regular filesystem", 0);
    }
    if (fchdir(fd) < 0) {
        close(fd);
        return child_err(msg, "cannot enter the directory", errno);
    }
    close(fd);
    return 0;
}

struct out_ctx {
    int64_t written, max;
};

static la_ssize_t write_cb(struct archive *a, void *ud, const void *buf, size_t len)
{
    struct out_ctx *o = ud;
    const char *p = buf;
    size_t left = len;

    if (o->written + (int64_t)len > o->max) {
        archive_set_error(a, EFBIG, "archive larger than %lld bytes", (long long)o->max);
        return -1;
    }
    while (left > 0) {
        ssize_t w = write(FD_DATA, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            archive_set_error(a, errno, "write the archive");
            return -1;
        }
        p += w;
        left -= (size_t)w;
    }
    o->written += (int64_t)len;
    return (la_ssize_t)len;
}

static bool kept_type(mode_t type)
{
    return type == AE_IFREG || type == AE_IFDIR || type == AE_IFLNK;
}

/* The data of the current entry into out. The disk reader hands over the
 * file's data regions with their offsets (holes skipped, found with
 * SEEK_DATA/SEEK_HOLE); the pax writer was given the same map with the
 * header and takes the whole byte stream, dropping what falls into holes,
 * so a hole is passed as zeros it never stores: an 8 GiB file that is a
 * hole is a few bytes of archive, and reading it costs no 8 GiB. */
static int pack_data(struct archive *out, struct archive *disk, char *msg)
{
    static const char zeros[BLOCK];
    const void *buf;
    size_t len;
    la_int64_t off, at = 0;
    int r;

    while ((r = archive_read_data_block(disk, &buf, &len, &off)) == ARCHIVE_OK) {
        for (; at < off;) {
            size_t n = off - at < (la_int64_t)sizeof(zeros) ? (size_t)(off - at) : sizeof(zeros);
            la_ssize_t w = archive_write_data(out, zeros, n);
            if (w <= 0)
                return w < 0 ? child_err(msg, archive_error_string(out), 0) : 0;
            at += w;
        }
        if (len > 0 && archive_write_data(out, buf, len) < 0)
            return child_err(msg, archive_error_string(out), 0);
        at = off + (la_int64_t)len;
    }
    if (r != ARCHIVE_EOF)
        return child_err(msg, archive_error_string(disk), 0);
    return 0;
}

static int pack(struct archive *out, struct archive *disk, bool keep_dot, char *msg)
{
    struct archive_entry *e = archive_entry_new();
    int r;

    while ((r = archive_read_next_header2(disk, e)) != ARCHIVE_EOF) {
        if (r == ARCHIVE_FAILED) /* one unreadable entry: left out */
            continue;
        if (r < ARCHIVE_FAILED)
            break;
        if (archive_entry_filetype(e) == AE_IFDIR)
            archive_read_disk_descend(disk);
        if (!kept_type(archive_entry_filetype(e)) ||
            (!keep_dot && strcmp(archive_entry_pathname(e), ".") == 0))
            continue;
        archive_entry_set_perm(e, archive_entry_perm(e) & 01777);
        archive_entry_set_uname(e, NULL);
        archive_entry_set_gname(e, NULL);
        if (archive_write_header(out, e) < ARCHIVE_OK) {
            archive_entry_free(e);
            return child_err(msg, archive_error_string(out), 0);
        }
        if (archive_entry_filetype(e) == AE_IFREG && pack_data(out, disk, msg) < 0) {
            archive_entry_free(e);
            return -1;
        }
    }
    archive_entry_free(e);
    if (r != ARCHIVE_EOF)
        return child_err(msg, archive_error_string(disk), 0);
    return 0;
}

struct pack_args {
    const char *dir;
    int fmt;
    int64_t max;
    bool top;      /* packtop: dir is PATH, archived as itself */
    bool follow;   /* packtop: follow PATH's last symlink */
    bool must_dir; /* packtop: PATH must be a directory */
};

/* packtop: chdir to PATH's parent; *top is what to archive there ("."
 * for "/"). */
static int enter_top(const struct pack_args *pa, const char **top, char *msg)
{
    cleanup_free char *parent = NULL;
    const char *slash = strrchr(pa->dir, '/');
    struct stat st;

    if (strcmp(pa->dir, "/") == 0) {
        *top = ".";
        return enter_dir("/", false, msg);
    }
    parent =
        slash == pa->dir ? pe_xstrdup("/") : pe_xasprintf("%.*s", (int)(slash - pa->dir), pa->dir);
    *top = slash + 1;
    if (enter_dir(parent, false, msg) < 0)
        return -1;
    if (fstatat(AT_FDCWD, *top, &st, pa->follow ? 0 : AT_SYMLINK_NOFOLLOW) < 0)
        return child_err(msg,
                         errno == ENOENT ? "no such file or directory in the sandbox"
                                         : "cannot read the path in the sandbox",
                         errno == ENOENT ? 0 : errno);
    if (pa->must_dir && !S_ISDIR(st.st_mode))
        return child_err(msg, "not a directory", 0);
    if (!kept_type(st.st_mode & S_IFMT))
        return child_err(msg, "not a file, directory or symlink", 0);
    return 0;
}

static int pack_child(const struct pack_args *pa, char *msg)
{
    struct out_ctx o = {0, pa->max};
    struct archive *out, *disk;
    const char *top = ".";
    int r = -1;

    if ((pa->top ? enter_top(pa, &top, msg) : enter_dir(pa->dir, false, msg)) < 0)
        return -1;
    out = archive_write_new();
    disk = archive_read_disk_new();
    archive_write_set_format_pax_restricted(out);
    /* Names are bytes: kept as they are on disk, whatever their encoding,
     * rather than converted to UTF-8 (which fails for a name that is not
     * valid in the locale, and would change one that is). */
    archive_write_set_format_option(out, "pax", "hdrcharset", "BINARY");
    /* No zero padding after the compressed stream: zstd calls it junk. */
    archive_write_set_bytes_in_last_block(out, 1);
    if (pa->fmt == PE_ARCHIVE_ZSTD)
        archive_write_add_filter_zstd(out);
    else
        archive_write_add_filter_gzip(out);
    if (pa->follow) /* PATH's own link only, like `cp -H` */
        archive_read_disk_set_symlink_hybrid(disk);
    else
        archive_read_disk_set_symlink_physical(disk);
    archive_read_disk_set_behavior(disk, ARCHIVE_READDISK_NO_TRAVERSE_MOUNTS |
                                             ARCHIVE_READDISK_NO_XATTR | ARCHIVE_READDISK_NO_ACL |
                                             ARCHIVE_READDISK_NO_FFLAGS);
    if (archive_write_open2(out, &o, NULL, write_cb, NULL, NULL) != ARCHIVE_OK)
        child_err(msg, archive_error_string(out), 0);
    else if (archive_read_disk_open(disk, top) != ARCHIVE_OK)
        child_err(msg, archive_error_string(disk), 0);
    else if (pack(out, disk, pa->top, msg) == 0 && archive_write_close(out) == ARCHIVE_OK)
        r = 0;
    else if (msg[0] == '\0')
        child_err(msg, archive_error_string(out), 0);
    archive_read_free(disk);
    archive_write_free(out);
    return r;
}

struct unpack_args {
    const char *dir; /* unpackto: DEST as given */
    bool keep_owner;
    bool to;       /* unpackto */
    bool contents; /* unpackto: the source was "SRC/." */
};

static int copy_data(struct archive *in, struct archive *out)
{
    const void *buf;
    size_t len;
    la_int64_t off;
    int r;

    while ((r = archive_read_data_block(in, &buf, &len, &off)) == ARCHIVE_OK)
        if (archive_write_data_block(out, buf, len, off) < ARCHIVE_OK)
            return -1;
    return r == ARCHIVE_EOF ? 0 : -1;
}

/* A header was read: a warning is a name the locale cannot convert. */
static bool header_ok(int h)
{
    return h == ARCHIVE_OK || h == ARCHIVE_WARN;
}

static struct archive *reader(int fd)
{
    struct archive *a = archive_read_new();

    archive_read_support_filter_gzip(a);
    archive_read_support_filter_zstd(a);
    archive_read_support_format_tar(a);
    if (archive_read_open_fd(a, fd, BLOCK) != ARCHIVE_OK) {
        archive_read_free(a);
        return NULL;
    }
    return a;
}

/* What DEST (absolute, maybe with a trailing '/') is in the sandbox; cwd
 * is its root. -1 (msg set) when it cannot be told. */
static int dest_kind(const char *dest, enum pe_cp_dest *kind, char *msg)
{
    struct open_how how = {.flags = O_PATH | O_CLOEXEC,
                           .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
    struct stat st;
    int fd = (int)syscall(SYS_openat2, AT_FDCWD, dest, &how, sizeof(how));

    if (fd < 0 && errno == ENOENT) {
        *kind = PE_CP_DEST_MISSING;
        return 0;
    }
    if (fd < 0)
        return child_err(msg, errno == ENOTDIR ? "not a directory" : "cannot open the destination",
                         errno == ENOTDIR ? 0 : errno);
    if (fstat(fd, &st) < 0) {
        close(fd);
        return child_err(msg, "cannot read the destination", errno);
    }
    close(fd);
    *kind = S_ISDIR(st.st_mode) ? PE_CP_DEST_DIR : PE_CP_DEST_OTHER;
    return 0;
}

/* unpackto: the plan for the archive whose first entry is e; cwd moves
 * to where it goes. */
static int enter_plan(const struct unpack_args *ua, struct archive_entry *e, char *top,
                      pe_cp_plan *plan, char *msg)
{
    enum pe_cp_dest kind = PE_CP_DEST_MISSING;
    pe_err err;

    if (pe_cp_top(archive_entry_pathname(e) ? archive_entry_pathname(e) : "", top, PATH_MAX) < 0)
        return child_err(msg, "the archive is not one copy (its first entry has a path)", 0);
    if (dest_kind(ua->dir, &kind, msg) < 0)
        return -1;
    pe_err_clear(&err);
    if (pe_cp_plan_make(top, archive_entry_filetype(e) == AE_IFDIR, ua->contents, ua->dir, kind,
                        plan, &err) < 0) {
        snprintf(msg, MSG_MAX, "%.*s", MSG_MAX - 1, err.msg);
        return -1;
    }
    return enter_dir(plan->dir, false, msg);
}

/* One entry from in to out, as the sandbox root's unless keep_owner. */
static int write_entry(struct archive *in, struct archive *out, struct archive_entry *e,
                       bool keep_owner, char *msg)
{
    /* Checked before the child started; a second time here. */
    if (!kept_type(archive_entry_filetype(e)))
        return child_err(msg, "an entry is not a file, directory or symlink", 0);
    archive_entry_set_perm(e, archive_entry_perm(e) & 01777);
    if (!keep_owner) {
        archive_entry_set_uid(e, 0);
        archive_entry_set_gid(e, 0);
    }
    archive_entry_set_uname(e, NULL);
    archive_entry_set_gname(e, NULL);
    if (archive_write_header(out, e) < ARCHIVE_WARN ||
        (archive_entry_size(e) > 0 && copy_data(in, out) < 0) ||
        archive_write_finish_entry(out) < ARCHIVE_WARN)
        return child_err(msg, archive_error_string(out), 0);
    return 0;
}

/* unpackto: e's names as the plan has them; *skip for the top entry when
 * its contents go into the plan's directory. */
static int rebase_entry(struct archive_entry *e, const char *top, const pe_cp_plan *plan,
                        bool *skip, char *msg)
{
    char name[PATH_MAX];
    const char *hl = archive_entry_hardlink(e);

    if (pe_cp_rebase(archive_entry_pathname(e) ? archive_entry_pathname(e) : "", top, plan, name,
                     sizeof(name)) < 0)
        return child_err(msg, "the archive is not one copy (an entry lies outside its top)", 0);
    *skip = name[0] == '\0';
    archive_entry_copy_pathname(e, name);
    if (hl) {
        if (pe_cp_rebase(hl, top, plan, name, sizeof(name)) < 0 || name[0] == '\0')
            return child_err(msg, "the archive is not one copy (a link lies outside its top)", 0);
        archive_entry_copy_hardlink(e, name);
    }
    return 0;
}

static int unpack_child(const struct unpack_args *ua, char *msg)
{
    /* SPARSE: runs of zeros are left as holes, so a sparse file (and a
     * file of zeros from an archive without a sparse map) takes the disk
     * its data takes, not its size. */
    const int flags = ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                      ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS | ARCHIVE_EXTRACT_PERM |
                      ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_OWNER | ARCHIVE_EXTRACT_SPARSE;
    struct archive *in, *out;
    struct archive_entry *e;
    pe_cp_plan plan = {NULL, NULL};
    char top[PATH_MAX] = "";
    int r = 0, h = ARCHIVE_EOF;
    bool first = true;

    if (!ua->to && enter_dir(ua->dir, true, msg) < 0)
        return -1;
    umask(022);
    in = reader(FD_DATA);
    if (in == NULL)
        return child_err(msg, "cannot read the archive", 0);
    out = archive_write_disk_new();
    archive_write_disk_set_options(out, flags);
    while (r == 0 && header_ok(h = archive_read_next_header(in, &e))) {
        bool skip = false;
        if (ua->to && first && enter_plan(ua, e, top, &plan, msg) < 0)
            r = -1;
        else if (ua->to && rebase_entry(e, top, &plan, &skip, msg) < 0)
            r = -1;
        else if (!skip)
            r = write_entry(in, out, e, ua->keep_owner, msg);
        first = false;
    }
    if (r == 0 && h != ARCHIVE_EOF)
        r = child_err(msg, "broken archive", 0);
    if (r == 0 && ua->to && first)
        r = child_err(msg, "nothing to copy: the archive is empty", 0);
    if (archive_write_close(out) < ARCHIVE_WARN && r == 0)
        r = child_err(msg, archive_error_string(out), 0);
    archive_write_free(out);
    archive_read_free(in);
    pe_cp_plan_free(&plan);
    return r;
}

/* ---- the task ---- */

enum task_kind { TASK_PACK, TASK_UNPACK, TASK_CHECK };

struct task {
    int kind;
    const struct pack_args *pa;
    const struct unpack_args *ua;
    const pe_archive_limits *lim;
    bool one_top; /* check: a docker cp copy */
};

static int check_archive(int fd, const pe_archive_limits *lim, bool one_top, pe_err *err);

/* For reading an untrusted archive: nobody, nothing to gain by exec. */
static int drop_to_nobody(char *msg)
{
    if (setgroups(0, NULL) < 0 || setresgid(65534, 65534, 65534) < 0 ||
        setresuid(65534, 65534, 65534) < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return child_err(msg, "drop privileges", errno);
    return 0;
}

static int child_task(bool running, const struct task *t, char *msg)
{
    pe_err err;

    if (t->kind == TASK_CHECK) {
        if (drop_to_nobody(msg) < 0)
            return -1;
        pe_err_clear(&err);
        if (check_archive(FD_DATA, t->lim, t->one_top, &err) == 0)
            return 0;
        snprintf(msg, MSG_MAX, "%.*s", MSG_MAX - 1, err.msg);
        return -1;
    }
    if (enter(running, msg) < 0)
        return -1;
    return t->kind == TASK_PACK ? pack_child(t->pa, msg) : unpack_child(t->ua, msg);
}

/* A relative path with no "..", no empty component and no absolute start
 * ("./" prefixes and a trailing '/' allowed). */
static bool safe_name(const char *p)
{
    size_t comp = 0;

    if (p == NULL || p[0] == '/' || p[0] == '\0')
        return false;
    for (const char *s = p;; s++) {
        if (*s != '/' && *s != '\0') {
            comp++;
            continue;
        }
        if (comp == 2 && s[-1] == '.' && s[-2] == '.')
            return false;
        comp = 0;
        if (*s == '\0')
            return true;
    }
}

/* Is some proper prefix of path (components) a symlink of the archive? */
static const char *under_link(json_t *links, const char *path)
{
    cleanup_free char *p = pe_xstrdup(path);
    const char *k;
    json_t *v;

    json_object_foreach(links, k, v)
    {
        size_t n = strlen(k);
        if (strncmp(p, k, n) == 0 && p[n] == '/')
            return k;
    }
    return NULL;
}

/* "./a/b/" -> "a/b" for comparisons. */
static char *norm(const char *p)
{
    while (p[0] == '.' && p[1] == '/')
        p += 2;
    char *s = pe_xstrdup(p);
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/')
        s[--n] = '\0';
    return s;
}

/* A docker cp copy: the first entry names the top (kept in top), every
 * other lies under it. */
static bool under_top(char *top, const char *name, bool first)
{
    pe_cp_plan keep = {NULL, (char *)"t"};
    char out[PATH_MAX];

    if (first)
        return pe_cp_top(name, top, PATH_MAX) == 0;
    return pe_cp_rebase(name, top, &keep, out, sizeof(out)) == 0;
}

static int check_archive(int in_fd, const pe_archive_limits *lim, bool one_top, pe_err *err)
{
    struct archive *a;
    struct archive_entry *e;
    json_t *links = json_object();
    int64_t bytes = 0, entries = 0;
    int r = 0, h = ARCHIVE_EOF;
    char top[PATH_MAX] = "";

    if (lseek(in_fd, 0, SEEK_SET) < 0 || (a = reader(in_fd)) == NULL) {
        json_decref(links);
        return pe_err_set(err, PE_EINVAL, 0, "not a tar archive (plain, gzip or zstd)");
    }
    while (r == 0 && header_ok(h = archive_read_next_header(a, &e))) {
        const char *name = archive_entry_pathname(e), *hl = archive_entry_hardlink(e);
        mode_t type = archive_entry_filetype(e);
        cleanup_free char *n = name ? norm(name) : NULL;
        cleanup_free char *hn = hl ? norm(hl) : NULL;
        const char *link;

        if (++entries > lim->max_entries)
            r = pe_err_set(err, PE_EINVAL, 0, "the archive has more than %lld entries",
                           (long long)lim->max_entries);
        else if (!safe_name(name) || (hl && !safe_name(hl)))
            r = pe_err_set(err, PE_EINVAL, 0,
                           "archive entry %.200s: absolute paths and '..' are refused",
                           name ? name : "(no name)");
        else if (!kept_type(type))
            r = pe_err_set(err, PE_EINVAL, 0,
                           "archive entry %.200s: device nodes, FIFOs and sockets are refused",
                           name);
        else if (one_top && !under_top(top, name, entries == 1))
            r = pe_err_set(err, PE_EINVAL, 0,
                           "archive entry %.200s: the archive is not one copy (one top entry)",
                           name);
        else if ((link = under_link(links, n)) != NULL ||
                 (hl && (link = under_link(links, hn)) != NULL))
            r = pe_err_set(err, PE_EINVAL, 0,
                           "archive entry %.200s: lies under the archive's symlink %.200s", name,
                           link);
        else if (type == AE_IFREG && (bytes += archive_entry_size(e)) > lim->max_bytes)
            r = pe_err_set(err, PE_EINVAL, 0, "the archive holds more than %lld bytes",
                           (long long)lim->max_bytes);
        else if (type == AE_IFLNK)
            json_object_set_new(links, n, json_true());
        else
            json_object_del(links, n);
        if (r == 0 && archive_read_data_skip(a) != ARCHIVE_OK)
            r = pe_err_set(err, PE_EINVAL, 0, "broken archive: %s", archive_error_string(a));
    }
    if (r == 0 && h != ARCHIVE_EOF)
        r = pe_err_set(err, PE_EINVAL, 0, "broken archive: %s",
                       archive_error_string(a) ? archive_error_string(a) : "unreadable");
    archive_read_free(a);
    json_decref(links);
    return r;
}

static bool parse_i64(const char *s, int64_t *out)
{
    char *end;

    errno = 0;
    *out = strtoll(s, &end, 10);
    return errno == 0 && end != s && *end == '\0' && *out > 0;
}

static int parse(int argc, char **argv, struct task *t, struct pack_args *pa,
                 struct unpack_args *ua, pe_archive_limits *lim, bool *running)
{
    if ((argc == 4 || (argc == 5 && strcmp(argv[4], "onetop") == 0)) &&
        strcmp(argv[1], "check") == 0) {
        t->kind = TASK_CHECK;
        t->lim = lim;
        t->one_top = argc == 5;
        return parse_i64(argv[2], &lim->max_bytes) && parse_i64(argv[3], &lim->max_entries) ? 0
                                                                                            : -1;
    }
    if (argc < 5 || (strcmp(argv[2], "running") != 0 && strcmp(argv[2], "stopped") != 0))
        return -1;
    *running = strcmp(argv[2], "running") == 0;
    if (argc == 6 && strcmp(argv[1], "pack") == 0) {
        t->kind = TASK_PACK;
        t->pa = pa;
        pa->dir = argv[3];
        pa->fmt = strcmp(argv[4], "zstd") == 0 ? PE_ARCHIVE_ZSTD : PE_ARCHIVE_GZIP;
        return parse_i64(argv[5], &pa->max) ? 0 : -1;
    }
    if (argc == 7 && strcmp(argv[1], "packtop") == 0) {
        t->kind = TASK_PACK;
        t->pa = pa;
        pa->dir = argv[3];
        pa->fmt = PE_ARCHIVE_GZIP;
        pa->top = true;
        pa->follow = strstr(argv[6], "follow") != NULL;
        pa->must_dir = strstr(argv[6], "dir") != NULL;
        return strcmp(argv[4], "gzip") == 0 && parse_i64(argv[5], &pa->max) ? 0 : -1;
    }
    if (argc == 5 && strcmp(argv[1], "unpackto") == 0) {
        t->kind = TASK_UNPACK;
        t->ua = ua;
        ua->dir = argv[3];
        ua->to = true;
        ua->contents = strcmp(argv[4], "contents") == 0;
        return 0;
    }
    if (argc == 5 && strcmp(argv[1], "unpack") == 0) {
        t->kind = TASK_UNPACK;
        t->ua = ua;
        ua->dir = argv[3];
        ua->keep_owner = strcmp(argv[4], "owners") == 0;
        return 0;
    }
    return -1;
}

int main(int argc, char **argv)
{
    struct task t = {0};
    struct pack_args pa = {0};
    struct unpack_args ua = {0};
    pe_archive_limits lim = {0};
    bool running = false;
    char msg[MSG_MAX] = "";

    int r = -1;

    prctl(PR_SET_DUMPABLE, 0);
    if (parse(argc, argv, &t, &pa, &ua, &lim, &running) < 0)
        snprintf(msg, sizeof(msg), "pocketenv-archive: bad arguments");
    else
        r = child_task(running, &t, msg);
    if (r < 0 && write(FD_MSG, msg, strlen(msg)) < 0)
        r = -2;
    /* Inside the sandbox's mount namespace the host's /proc is out of
     * sight, and exit-time machinery that reads it (LeakSanitizer's) would
     * fail: leave without it. Nothing is buffered. */
    if (t.kind != TASK_CHECK)
        _exit(r == 0 ? 0 : r == -1 ? 1 : 2);
    return r == 0 ? 0 : r == -1 ? 1 : 2;
}
