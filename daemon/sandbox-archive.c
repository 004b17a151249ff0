/* Archives of a sandbox's directories (daemon/archive.h), by libarchive.
 *
 * Who touches the sandbox's files: never the daemon's own threads. A
 * forked child does, after it has become the sandbox's root:
 *  - running (or paused) sandbox: the child enters the user and mount
 *    namespaces of its init (setns on a pidfd, the init checked by start
 *    time) and takes uid/gid 0 there. Its root directory is then the
 *    sandbox's, so every path, symlink and ".." resolves inside the
 *    sandbox whatever the sandbox plants or swaps meanwhile; its powers
 *    are the sandbox root's (no host file capabilities, /proc/sys and the
 *    like refuse it, mknod is refused), and its ids map into the
 *    sandbox's range like the sandbox's own processes;
 *  - stopped sandbox: nothing runs there, so the child unshares a user
 *    namespace that the parent maps onto the sandbox's id range (as the
 *    runtime maps the sandbox's own), and chroots into the writable layer
 *    (DATA/sandboxes/<id>/disk/upper). Same powers, same ids.
 * The child is made non-dumpable before it enters, so the sandbox's
 * processes cannot ptrace it, and it keeps only the fds it needs. It never
 * looks names up (no NSS: that would load libraries from the sandbox).
 * glibc's fork makes malloc usable in the child of a threaded process;
 * the child uses nothing else that another thread could hold locked.
 *
 * Unpacking reads the archive twice: once in the daemon, headers only,
 * to refuse a hostile archive before anything is written (absolute paths,
 * "..", writes through the archive's own symlinks, device nodes, sizes),
 * then in the child with libarchive's secure extraction flags as a second
 * line. Setuid/setgid bits are cleared on the way in and out. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sandbox-archive.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/util.h"
#include "resources.h"
#include "runtime/internal.h"

#define CHILD_TIMEOUT_MS (15 * 60 * 1000)
#define MSG_MAX 512
#define BLOCK 65536

/* Fds of the child, renumbered before everything else is closed. */
enum { FD_DATA = 3, FD_MSG, FD_SYNC_IN, FD_SYNC_OUT, FD_TARGET, FD_FIRST_FREE };

struct box {
    bool running;
    int target; /* running: pidfd of the init; stopped: O_PATH of disk/upper */
    uid_t base; /* the sandbox's root on the host */
};

static void box_close(struct box *b)
{
    if (b->target >= 0)
        close(b->target);
    b->target = -1;
}

static int box_open(pe_daemon *d, const char *id, struct box *b, pe_err *err)
{
    char *text = NULL;
    json_t *info;
    const char *status;
    uint64_t start;
    pid_t pid;

    b->target = -1;
    if (pe_runtime_inspect(&d->rt, id, &text, err) < 0)
        return pe_err_set(err, PE_ESTATE, 0, "the sandbox has no files (never made, or gone)");
    info = json_loads(text, 0, NULL);
    free(text);
    status = json_string_value(json_object_get(info, "status"));
    pid = (pid_t)json_integer_value(json_object_get(info, "pid"));
    start = (uint64_t)json_integer_value(json_object_get(info, "startTime"));
    b->base = (uid_t)json_integer_value(json_object_get(info, "idBase"));
    b->running =
        status && (strcmp(status, "running") == 0 || strcmp(status, "paused") == 0) && pid > 0;
    json_decref(info);
    if (b->base == 0)
        return pe_err_set(err, PE_ESTATE, 0, "the sandbox has no user namespace of its own");
    if (b->running) {
        b->target = (int)syscall(SYS_pidfd_open, pid, 0);
        /* Checked after the open: the pidfd is that very init's. */
        if (b->target < 0 || start == 0 || pe__proc_start_time(pid) != start) {
            box_close(b);
            return pe_err_set(err, PE_ESTATE, 0, "the sandbox stopped meanwhile");
        }
        return 0;
    }
    {
        cleanup_free char *upper = pe_xasprintf("%s/sandboxes/%s/disk/upper", d->rt.data_dir, id);
        b->target = open(upper, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (b->target < 0)
        return pe_err_set(err, PE_ESTATE, errno, "the sandbox has no writable layer");
    return 0;
}

/* ---- in the child ---- */

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

static int pack(struct archive *out, struct archive *disk, char *msg)
{
    struct archive_entry *e = archive_entry_new();
    char buf[BLOCK];
    int r;

    while ((r = archive_read_next_header2(disk, e)) != ARCHIVE_EOF) {
        if (r == ARCHIVE_FAILED) /* one unreadable entry: left out */
            continue;
        if (r < ARCHIVE_FAILED)
            break;
        if (archive_entry_filetype(e) == AE_IFDIR)
            archive_read_disk_descend(disk);
        if (!kept_type(archive_entry_filetype(e)) || strcmp(archive_entry_pathname(e), ".") == 0)
            continue;
        archive_entry_set_perm(e, archive_entry_perm(e) & 01777);
        archive_entry_set_uname(e, NULL);
        archive_entry_set_gname(e, NULL);
        if (archive_write_header(out, e) < ARCHIVE_OK)
            return child_err(msg, archive_error_string(out), 0);
        if (archive_entry_filetype(e) != AE_IFREG)
            continue;
        for (;;) {
            la_ssize_t n = archive_read_data(disk, buf, sizeof(buf));
            if (n == 0)
                break;
            if (n < 0) {
                r = ARCHIVE_FATAL;
                break;
            }
            if (archive_write_data(out, buf, (size_t)n) < 0) {
                archive_entry_free(e);
                return child_err(msg, archive_error_string(out), 0);
            }
        }
        if (r == ARCHIVE_FATAL)
            break;
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
};

static int pack_child(const struct pack_args *pa, char *msg)
{
    struct out_ctx o = {0, pa->max};
    struct archive *out = archive_write_new(), *disk = archive_read_disk_new();
    int r = -1;

    if (enter_dir(pa->dir, false, msg) < 0)
        return -1;
    archive_write_set_format_pax_restricted(out);
    /* No zero padding after the compressed stream: zstd calls it junk. */
    archive_write_set_bytes_in_last_block(out, 1);
    if (pa->fmt == PE_ARCHIVE_ZSTD)
        archive_write_add_filter_zstd(out);
    else
        archive_write_add_filter_gzip(out);
    archive_read_disk_set_symlink_physical(disk);
    archive_read_disk_set_behavior(disk, ARCHIVE_READDISK_NO_TRAVERSE_MOUNTS |
                                             ARCHIVE_READDISK_NO_XATTR | ARCHIVE_READDISK_NO_ACL |
                                             ARCHIVE_READDISK_NO_FFLAGS |
                                             ARCHIVE_READDISK_NO_SPARSE);
    if (archive_write_open2(out, &o, NULL, write_cb, NULL, NULL) != ARCHIVE_OK)
        child_err(msg, archive_error_string(out), 0);
    else if (archive_read_disk_open(disk, ".") != ARCHIVE_OK)
        child_err(msg, archive_error_string(disk), 0);
    else if (pack(out, disk, msg) == 0 && archive_write_close(out) == ARCHIVE_OK)
        r = 0;
    else if (msg[0] == '\0')
        child_err(msg, archive_error_string(out), 0);
    archive_read_free(disk);
    archive_write_free(out);
    return r;
}

struct unpack_args {
    const char *dir;
    bool keep_owner;
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

static int unpack_child(const struct unpack_args *ua, char *msg)
{
    const int flags = ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                      ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS | ARCHIVE_EXTRACT_PERM |
                      ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_OWNER;
    struct archive *in, *out;
    struct archive_entry *e;
    int r = 0, h = ARCHIVE_EOF;

    if (enter_dir(ua->dir, true, msg) < 0)
        return -1;
    umask(022);
    in = reader(FD_DATA);
    if (in == NULL)
        return child_err(msg, "cannot read the archive", 0);
    out = archive_write_disk_new();
    archive_write_disk_set_options(out, flags);
    while (r == 0 && (h = archive_read_next_header(in, &e)) == ARCHIVE_OK) {
        /* Checked before the child started; a second time here. */
        if (!kept_type(archive_entry_filetype(e))) {
            r = child_err(msg, "an entry is not a file, directory or symlink", 0);
            break;
        }
        archive_entry_set_perm(e, archive_entry_perm(e) & 01777);
        if (!ua->keep_owner) {
            archive_entry_set_uid(e, 0);
            archive_entry_set_gid(e, 0);
        }
        archive_entry_set_uname(e, NULL);
        archive_entry_set_gname(e, NULL);
        if (archive_write_header(out, e) < ARCHIVE_WARN ||
            (archive_entry_size(e) > 0 && copy_data(in, out) < 0) ||
            archive_write_finish_entry(out) < ARCHIVE_WARN)
            r = child_err(msg, archive_error_string(out), 0);
    }
    if (r == 0 && h != ARCHIVE_EOF)
        r = child_err(msg, "broken archive", 0);
    if (archive_write_close(out) < ARCHIVE_WARN && r == 0)
        r = child_err(msg, archive_error_string(out), 0);
    archive_write_free(out);
    archive_read_free(in);
    return r;
}

/* ---- the parent's side ---- */

static int write_maps(pid_t pid, uid_t base, pe_err *err)
{
    char path[64], line[64];

    snprintf(line, sizeof(line), "0 %u %u\n", (unsigned)base, PE_IDMAP_SIZE);
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, i ? "gid_map" : "uid_map");
        if (pe_fs_write_str(path, line, err) < 0)
            return -1;
    }
    return 0;
}

static _Noreturn void child_main(const struct box *b, int data, int msgp, int sync_in, int sync_out,
                                 const struct pack_args *pa, const struct unpack_args *ua)
{
    char msg[MSG_MAX] = "";
    int r;

    const int src[] = {data, msgp, sync_in, sync_out, b->target};
    int high[PE_ARRAY_LEN(src)];

    prctl(PR_SET_PDEATHSIG, SIGKILL);
    prctl(PR_SET_DUMPABLE, 0);
    /* Out of the way first: a source may sit on a target number. */
    for (size_t i = 0; i < PE_ARRAY_LEN(src); i++)
        if ((high[i] = fcntl(src[i], F_DUPFD, 64)) < 0)
            _exit(3);
    for (size_t i = 0; i < PE_ARRAY_LEN(src); i++)
        if (dup2(high[i], FD_DATA + (int)i) < 0)
            _exit(3);
    syscall(SYS_close_range, FD_FIRST_FREE, ~0U, 0);
    r = enter(b->running, msg);
    if (r == 0)
        r = pa ? pack_child(pa, msg) : unpack_child(ua, msg);
    if (r < 0) {
        ssize_t w = write(FD_MSG, msg, strlen(msg));
        (void)w;
    }
    _exit(r < 0 ? 1 : 0);
}

/* Run pack or unpack in a child inside sandbox id; data is the archive. */
static int run_child(pe_daemon *d, const char *id, int data, const struct pack_args *pa,
                     const struct unpack_args *ua, pe_err *err)
{
    struct box b = {.target = -1};
    int msgp[2] = {-1, -1}, to_child[2] = {-1, -1}, from_child[2] = {-1, -1};
    char msg[MSG_MAX + 1];
    size_t got = 0;
    int status = 0, r = -1, pidfd = -1;
    pid_t pid;
    char c = 1;

    if (box_open(d, id, &b, err) < 0)
        return -1;
    if (pipe2(msgp, O_CLOEXEC) < 0 || pipe2(to_child, O_CLOEXEC) < 0 ||
        pipe2(from_child, O_CLOEXEC) < 0) {
        pe_err_sys(err, "pipe");
        goto out;
    }
    pid = fork();
    if (pid < 0) {
        pe_err_sys(err, "fork");
        goto out;
    }
    if (pid == 0)
        child_main(&b, data, msgp[1], to_child[0], from_child[1], pa, ua);
    pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    close(msgp[1]);
    close(to_child[0]);
    close(from_child[1]);
    msgp[1] = to_child[0] = from_child[1] = -1;
    if (!b.running) {
        pe_err e2;
        pe_err_clear(&e2);
        if (read(from_child[0], &c, 1) != 1 || write_maps(pid, b.base, &e2) < 0)
            c = 0;
        else
            c = 1;
        if (write(to_child[1], &c, 1) != 1)
            c = 0;
    }
    /* The child's message, until it exits (bounded by the deadline). */
    for (;;) {
        struct pollfd p = {msgp[0], POLLIN, 0};
        int pr = poll(&p, 1, CHILD_TIMEOUT_MS);
        ssize_t n;

        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0) {
            syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
            got = (size_t)snprintf(msg, sizeof(msg), "took longer than %d s",
                                   CHILD_TIMEOUT_MS / 1000);
            break;
        }
        n = read(msgp[0], msg + got, MSG_MAX - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
        if (got == MSG_MAX)
            break;
    }
    msg[got] = '\0';
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        r = 0;
    else if (strstr(msg, "no such directory"))
        pe_err_set(err, PE_ENOENT, 0, "%s", msg);
    else
        pe_err_set(err, PE_EINVAL, 0, "%s", got ? msg : "the archive process failed");
out:
    for (int i = 0; i < 2; i++) {
        if (msgp[i] >= 0)
            close(msgp[i]);
        if (to_child[i] >= 0)
            close(to_child[i]);
        if (from_child[i] >= 0)
            close(from_child[i]);
    }
    if (pidfd >= 0)
        close(pidfd);
    box_close(&b);
    return r;
}

int pe_daemon_archive_dir(pe_daemon *d, const char *id, const char *dir, int fmt, int out_fd,
                          int64_t max_out, pe_err *err)
{
    struct pack_args pa = {dir, fmt, max_out};

    if (strcmp(dir, "/") != 0 && pe_daemon_check_sandbox_path("directory", dir, err) < 0)
        return -1;
    return run_child(d, id, out_fd, &pa, NULL, err);
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

int pe_daemon_archive_check(int in_fd, const pe_archive_limits *lim, pe_err *err)
{
    struct archive *a;
    struct archive_entry *e;
    json_t *links = json_object();
    int64_t bytes = 0, entries = 0;
    int r = 0, h = ARCHIVE_EOF;

    if (lseek(in_fd, 0, SEEK_SET) < 0 || (a = reader(in_fd)) == NULL) {
        json_decref(links);
        return pe_err_set(err, PE_EINVAL, 0, "not a tar archive (plain, gzip or zstd)");
    }
    while (r == 0 && (h = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
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

int pe_daemon_archive_unpack(pe_daemon *d, const char *id, const char *dir, int in_fd,
                             const pe_archive_limits *lim, bool keep_owner, pe_err *err)
{
    struct unpack_args ua = {dir, keep_owner};

    if (strcmp(dir, "/") != 0 && pe_daemon_check_sandbox_path("directory", dir, err) < 0)
        return -1;
    if (pe_daemon_archive_check(in_fd, lim, err) < 0)
        return -1;
    if (lseek(in_fd, 0, SEEK_SET) < 0)
        return pe_err_sys(err, "rewind the archive");
    return run_child(d, id, in_fd, NULL, &ua, err);
}
