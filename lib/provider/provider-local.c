/* The local Linux runtime (lib/runtime) as a provider: one implementation
 * of pe_provider_ops among the remote ones, so that the sandbox layer
 * above never asks where a sandbox runs before calling.
 *
 * Every call is the runtime's own, without a hop: exec_start hands the
 * caller pe_runtime_exec_start's fds as they are (a direct stream: no
 * pipe, thread or copy of ours in between), so an exec through here costs
 * what it costs the daemon today plus one function-pointer call.
 *
 * Files are read and written as the sandbox sees them: from
 * /proc/<init>/root (its mount namespace's root: the overlay, volumes and
 * read-only mounts as its own processes have them), every path resolved
 * with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) so that a symlink
 * of the sandbox's never leads out of it, by a thread whose fsuid/fsgid
 * are the sandbox's root (what the overlay accepts, none of host root's
 * file powers). The init is identified by pid and start time, checked
 * after its root is opened, so a recycled pid cannot redirect a call.
 * Pseudo filesystems (proc, sysfs...) are refused: their files are kernel
 * interfaces. A write goes to a fresh temporary name (O_EXCL|O_NOFOLLOW)
 * renamed over the target: a link or device at the name is replaced,
 * never followed or opened. Tar in/out goes through these file calls
 * (provider-tar.c), with its checks on names. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/util.h"
#include "pocketenv/runtime.h"
#include "provider-internal.h"
#include "runtime/internal.h"

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

/* Seconds a stop waits for the sandbox's processes before killing them. */
#define LOCAL_STOP_TIMEOUT 10.0

typedef struct local {
    pe_runtime own; /* opened here when the caller gave no runtime */
    pe_runtime *rt;
} local;

static pe_runtime *rt_of(pe_provider *p)
{
    return ((local *)p->impl)->rt;
}

/* The runtime's message, naming the provider as every provider's does. */
static int fail(pe_err *err)
{
    return pe_err_prefix(err, "local");
}

static int lc_open(pe_provider *p, pe_err *err)
{
    local *l = pe_xcalloc(1, sizeof(*l));

    p->impl = l;
    if (p->cfg.runtime) {
        l->rt = p->cfg.runtime;
        return 0;
    }
    if (pe_runtime_open(&l->own, p->cfg.data_dir, err) < 0)
        return fail(err);
    l->rt = &l->own;
    return 0;
}

static void lc_close(pe_provider *p)
{
    local *l = p->impl;

    if (l && l->rt == &l->own)
        pe_runtime_close(&l->own);
    free(l);
    p->impl = NULL;
}

/* ---- lifecycle ---- */

static int lc_create(pe_provider *p, const pe_provider_spec *spec, char **id, pe_err *err)
{
    pe_sandbox_cfg cfg;
    pe_port ports[16];
    pe_err e2 = {0};

    if (spec->n_ports > PE_ARRAY_LEN(ports))
        return pe_err_set(err, PE_EINVAL, 0, "local: at most %zu ports", PE_ARRAY_LEN(ports));
    pe_sandbox_cfg_init(&cfg);
    cfg.name = (char *)spec->name;
    cfg.image = (char *)spec->image;
    cfg.env = (char **)spec->env;
    cfg.memory_bytes = spec->memory_bytes;
    cfg.cpu_millis = spec->cpu_millis;
    cfg.disk_bytes = spec->disk_bytes;
    for (size_t i = 0; i < spec->n_ports; i++)
        ports[i] = (pe_port){.host_port = 0, .port = spec->ports[i]};
    if (spec->n_ports) { /* a port reachable from the host needs the bridge */
        cfg.net = PE_NET_NAT;
        cfg.ports = ports;
        cfg.n_ports = spec->n_ports;
    }
    if (pe_runtime_create(rt_of(p), &cfg, err) < 0)
        return fail(err);
    if (pe_runtime_start(rt_of(p), spec->name, err) < 0) {
        /* nothing half-made is left: the create is undone */
        pe_runtime_remove(rt_of(p), spec->name, &e2);
        return fail(err);
    }
    *id = pe_xstrdup(spec->name);
    return 0;
}

static int lc_start(pe_provider *p, const char *id, pe_err *err)
{
    return pe_runtime_start(rt_of(p), id, err) < 0 ? fail(err) : 0;
}

static int lc_stop(pe_provider *p, const char *id, pe_err *err)
{
    return pe_runtime_stop(rt_of(p), id, LOCAL_STOP_TIMEOUT, err) < 0 ? fail(err) : 0;
}

static int lc_remove(pe_provider *p, const char *id, pe_err *err)
{
    /* a running sandbox's processes are killed first (the runtime's) */
    return pe_runtime_remove(rt_of(p), id, err) < 0 ? fail(err) : 0;
}

/* The run's extras are handed to the runtime for this start only: none of
 * them is written to the sandbox's state file (secrets must not rest on
 * disk). Mounts are idmapped like the image. */
static int lc_start_with(pe_provider *p, const char *id, const pe_provider_start_opts *o,
                         pe_err *err)
{
    pe_start_extra x = {.env = (char **)o->env, .n_binds = o->n_mounts};
    pe_bind *binds = o->n_mounts ? pe_xcalloc(o->n_mounts, sizeof(*binds)) : NULL;
    int r;

    for (size_t i = 0; i < o->n_mounts; i++)
        binds[i] = (pe_bind){.host = (char *)o->mounts[i].host_dir,
                             .dest = (char *)o->mounts[i].path,
                             .ro = o->mounts[i].ro,
                             .idmap = true};
    x.binds = binds;
    r = pe_runtime_start_with(rt_of(p), id, &x, err);
    free(binds);
    return r < 0 ? fail(err) : 0;
}

static json_t *inspect(pe_provider *p, const char *id, pe_err *err)
{
    char *text = NULL;
    json_t *o;

    if (pe_runtime_inspect(rt_of(p), id, &text, err) < 0) {
        fail(err);
        return NULL;
    }
    o = json_loads(text, 0, NULL);
    free(text);
    if (o == NULL)
        pe_err_set(err, PE_ESYS, 0, "local: sandbox %s: unreadable state", id);
    return o;
}

static int lc_status(pe_provider *p, const char *id, pe_provider_status *st, pe_err *err)
{
    json_t *o = inspect(p, id, err);
    const char *s;

    if (o == NULL)
        return -1;
    s = json_string_value(json_object_get(o, "status"));
    snprintf(st->raw, sizeof(st->raw), "%s", s ? s : "");
    st->state = !s                                                       ? PE_PSTATE_UNKNOWN
                : strcmp(s, "running") == 0                              ? PE_PSTATE_RUNNING
                : strcmp(s, "paused") == 0                               ? PE_PSTATE_PAUSED
                : strcmp(s, "creating") == 0                             ? PE_PSTATE_CREATING
                : strcmp(s, "stopped") == 0 || strcmp(s, "created") == 0 ? PE_PSTATE_STOPPED
                                                                         : PE_PSTATE_UNKNOWN;
    json_decref(o);
    return 0;
}

static int lc_pause(pe_provider *p, const char *id, pe_err *err)
{
    return pe_runtime_pause(rt_of(p), id, err) < 0 ? fail(err) : 0;
}

static int lc_resume(pe_provider *p, const char *id, pe_err *err)
{
    return pe_runtime_resume(rt_of(p), id, err) < 0 ? fail(err) : 0;
}

/* ---- processes ---- */

/* What the stream keeps of the pe_proc: the fds the caller's proc does
 * not hold (the pidfds), and the waiter. status_fd is the caller's. */
typedef struct local_proc {
    pe_proc proc;
    bool waited;
} local_proc;

static int lp_wait(struct pe_provider_stream *s, int *exit_code, pe_err *err)
{
    local_proc *lp = s->ud;

    if (lp->waited) {
        *exit_code = s->exit_code;
        return 0;
    }
    if (pe_proc_wait(&lp->proc, exit_code, err) < 0)
        return fail(err);
    lp->waited = true;
    s->exit_code = *exit_code;
    s->exited = true;
    return 0;
}

static void lp_kill(struct pe_provider_stream *s)
{
    local_proc *lp = s->ud;

    /* the whole group: a shell's children end with it */
    pe_proc_signal_group(&lp->proc, SIGTERM);
}

static void lp_kill_now(struct pe_provider_stream *s)
{
    local_proc *lp = s->ud;

    pe_proc_signal_group(&lp->proc, SIGKILL);
}

static int lp_resize(struct pe_provider_stream *s, unsigned short cols, unsigned short rows)
{
    local_proc *lp = s->ud;
    struct winsize ws = {.ws_row = rows, .ws_col = cols};

    return lp->proc.pty_fd >= 0 && ioctl(lp->proc.pty_fd, TIOCSWINSZ, &ws) == 0 ? 0 : -1;
}

/* The caller closes its fds first (pe_provider_proc_close), then this: a
 * process still running is killed and reaped, so nothing outlives the
 * proc and no waiter is left a zombie. status_fd is still open here. */
static void lp_free(void *ud)
{
    local_proc *lp = ud;
    int code;

    if (!lp->waited) {
        pe_proc_signal_group(&lp->proc, SIGKILL);
        pe_proc_wait(&lp->proc, &code, NULL);
    }
    lp->proc.status_fd = -1; /* the caller's */
    lp->proc.pty_fd = -1;
    pe_proc_close(&lp->proc);
    free(lp);
}

static const pe__stream_ops local_stream = {
    .on_kill = lp_kill,
    .kill_now = lp_kill_now,
    .on_resize = lp_resize,
    .wait = lp_wait,
    .free_ud = lp_free,
};

static int lc_exec_start(pe_provider *p, const char *id, const pe_provider_exec_opts *o,
                         pe_provider_proc *proc, pe_err *err)
{
    pe_proc_opts po = {
        .argv = (char **)o->argv,
        .env = (char **)o->env,
        .workdir = o->workdir,
        .tty = o->tty,
        .tty_cols = o->cols ? o->cols : 80,
        .tty_rows = o->rows ? o->rows : 24,
        .capture = !o->tty,
    };
    local_proc *lp = pe_xcalloc(1, sizeof(*lp));

    if (pe_runtime_exec_start(rt_of(p), id, &po, &lp->proc, err) < 0) {
        free(lp);
        return fail(err);
    }
    if (!o->tty && !o->stdin_pipe && lp->proc.stdin_fd >= 0) {
        close(lp->proc.stdin_fd); /* the process reads EOF */
        lp->proc.stdin_fd = -1;
    }
    *proc = (pe_provider_proc){
        .stdin_fd = lp->proc.stdin_fd,
        .stdout_fd = lp->proc.stdout_fd,
        .stderr_fd = lp->proc.stderr_fd,
        .pty_fd = lp->proc.pty_fd,
        .status_fd = lp->proc.status_fd,
        .oom_known = lp->proc.oom_kills >= 0,
        .oom_kills = lp->proc.oom_kills,
        .oom_limit = lp->proc.oom_limit,
    };
    /* the caller's now: pe_provider_proc_close closes them */
    lp->proc.stdin_fd = lp->proc.stdout_fd = lp->proc.stderr_fd = -1;
    proc->stream = pe__stream_direct(p, &local_stream, lp, o->tty);
    return 0;
}

/* ---- files ---- */

/* The sandbox's root as its init sees it, and the host ids of its root. */
typedef struct in_root {
    int fd;
    uid_t uid;
} in_root;

static int open_root(pe_provider *p, const char *id, in_root *r, pe_err *err)
{
    json_t *o = inspect(p, id, err);
    const char *status;
    char path[64];
    uint64_t start;
    pid_t pid;

    r->fd = -1;
    if (o == NULL)
        return -1;
    status = json_string_value(json_object_get(o, "status"));
    pid = (pid_t)json_integer_value(json_object_get(o, "pid"));
    start = (uint64_t)json_integer_value(json_object_get(o, "startTime"));
    r->uid = (uid_t)json_integer_value(json_object_get(o, "idBase"));
    if (status == NULL || (strcmp(status, "running") != 0 && strcmp(status, "paused") != 0) ||
        pid <= 0) {
        json_decref(o);
        return pe_err_set(err, PE_ESTATE, 0, "local: sandbox %s is not running", id);
    }
    json_decref(o);
    snprintf(path, sizeof(path), "/proc/%d/root", (int)pid);
    r->fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    /* checked after the open: the fd is the root of that very init */
    if (r->fd < 0 || start == 0 || pe__proc_start_time(pid) != start) {
        if (r->fd >= 0)
            close(r->fd);
        r->fd = -1;
        return pe_err_set(err, PE_ESTATE, 0, "local: sandbox %s is not running", id);
    }
    return 0;
}

static int openat_in(int dirfd, const char *path, int flags)
{
    struct open_how how = {.flags = (uint64_t)flags | O_CLOEXEC,
                           .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
    int fd;

    do
        fd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
    while (fd < 0 && errno == EAGAIN);
    return fd;
}

static bool pseudo_fs(int fd)
{
    static const long types[] = {PROC_SUPER_MAGIC,    SYSFS_MAGIC,        CGROUP_SUPER_MAGIC,
                                 CGROUP2_SUPER_MAGIC, DEVPTS_SUPER_MAGIC, DEBUGFS_MAGIC,
                                 TRACEFS_MAGIC,       SECURITYFS_MAGIC,   BPF_FS_MAGIC,
                                 EFIVARFS_MAGIC,      PSTOREFS_MAGIC};
    struct statfs sf;

    if (fstatfs(fd, &sf) < 0)
        return true;
    for (size_t i = 0; i < PE_ARRAY_LEN(types); i++)
        if ((long)sf.f_type == types[i])
            return true;
    return false;
}

/* An absolute path: where every file call starts. */
static int check_path(const char *path, pe_err *err)
{
    if (path == NULL || path[0] != '/' || strlen(path) > 4096)
        return pe_err_set(err, PE_EINVAL, 0, "local: %s: not an absolute path",
                          path ? path : "(none)");
    return 0;
}

static int path_error(pe_err *err, int e, const char *what, const char *path)
{
    return pe_err_set(err, e == ENOENT || e == ENOTDIR ? PE_ENOENT : PE_EINVAL, e, "local: %s %s",
                      what, path);
}

/* The thread's file ids become the sandbox root's for the call (setfsuid
 * is per thread) and are restored after. */
typedef struct fsids {
    int uid, gid;
} fsids;

static fsids fs_enter(uid_t uid)
{
    fsids old = {setfsuid(uid), setfsgid(uid)};
    return old;
}

static void fs_leave(fsids old)
{
    setfsuid((uid_t)old.uid);
    setfsgid((gid_t)old.gid);
}

static int lc_file_read(pe_provider *p, const char *id, const char *path, size_t max, char **data,
                        size_t *len, pe_err *err)
{
    in_root r;
    struct stat sb;
    fsids old;
    char *buf = NULL;
    size_t n = 0;
    int fd, e, rc = -1;

    if (check_path(path, err) < 0 || open_root(p, id, &r, err) < 0)
        return -1;
    old = fs_enter(r.uid);
    /* O_NONBLOCK: a FIFO planted at the name must not hang the call */
    fd = openat_in(r.fd, path, O_RDONLY | O_NOCTTY | O_NONBLOCK);
    e = errno;
    if (fd < 0) {
        path_error(err, e, "read", path);
        goto out;
    }
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) || pseudo_fs(fd)) {
        pe_err_set(err, PE_EINVAL, 0, "local: read %s: not a regular file", path);
        goto out;
    }
    if ((uint64_t)sb.st_size > max) {
        pe_err_set(err, PE_EINVAL, 0, "local: read %s: larger than %zu bytes", path, max);
        goto out;
    }
    buf = pe_xmalloc((size_t)sb.st_size + 1);
    for (;;) {
        ssize_t got = read(fd, buf + n, (size_t)sb.st_size + 1 - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            pe_err_set(err, PE_ESYS, errno, "local: read %s", path);
            goto out;
        }
        if (got == 0 || n + (size_t)got > (size_t)sb.st_size) {
            if (got > 0) { /* it grew while we read: what it was is enough */
                pe_err_set(err, PE_EINVAL, 0, "local: read %s: it changed while read", path);
                goto out;
            }
            break;
        }
        n += (size_t)got;
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    buf = NULL;
    rc = 0;
out:
    fs_leave(old);
    free(buf);
    if (fd >= 0)
        close(fd);
    close(r.fd);
    return rc;
}

/* The parent directory of path opened inside the root, missing
 * directories made (0755); *base points into path at the last name. */
static int open_parent(int root, const char *path, const char **base, pe_err *err)
{
    cleanup_free char *dir = pe_xstrdup(path);
    char *slash = strrchr(dir, '/');
    int fd;

    *base = path + (slash - dir) + 1;
    if (**base == '\0')
        return pe_err_set(err, PE_EINVAL, 0, "local: %s: names a directory", path);
    if (slash == dir)
        return openat_in(root, "/", O_PATH | O_DIRECTORY);
    *slash = '\0';
    fd = openat_in(root, dir, O_PATH | O_DIRECTORY);
    if (fd >= 0 || errno != ENOENT)
        return fd >= 0 ? fd : path_error(err, errno, "open directory", dir);
    /* each missing component, every prefix resolved from the root again */
    for (char *c = dir + 1;; c++) {
        if (*c != '/' && *c != '\0')
            continue;
        char saved = *c, *name;
        int parent;
        *c = '\0';
        name = strrchr(dir, '/');
        *name = '\0';
        parent = openat_in(root, name == dir ? "/" : dir, O_PATH | O_DIRECTORY);
        *name = '/';
        if (parent < 0)
            return path_error(err, errno, "open directory", dir);
        if (mkdirat(parent, name + 1, 0755) < 0 && errno != EEXIST) {
            int e = errno;
            close(parent);
            return path_error(err, e, "create directory", dir);
        }
        close(parent);
        *c = saved;
        if (saved == '\0')
            break;
    }
    fd = openat_in(root, dir, O_PATH | O_DIRECTORY);
    return fd >= 0 ? fd : path_error(err, errno, "open directory", dir);
}

static int lc_file_write(pe_provider *p, const char *id, const char *path, const void *data,
                         size_t len, unsigned mode, pe_err *err)
{
    const char *base;
    char tmp[64];
    unsigned char rnd[8];
    in_root r;
    fsids old;
    int dir = -1, fd = -1, rc = -1;

    if (check_path(path, err) < 0 || open_root(p, id, &r, err) < 0)
        return -1;
    old = fs_enter(r.uid);
    dir = open_parent(r.fd, path, &base, err);
    if (dir < 0)
        goto out;
    if (pseudo_fs(dir)) {
        pe_err_set(err, PE_EINVAL, 0, "local: write %s: not a file system for files", path);
        goto out;
    }
    if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd)) {
        pe_err_sys(err, "local: getrandom");
        goto out;
    }
    snprintf(tmp, sizeof(tmp), ".pe-write-%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2],
             rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    fd = openat(dir, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                (mode_t)(mode ? mode : 0644) & 0777);
    if (fd < 0) {
        path_error(err, errno, "write", path);
        goto out;
    }
    if (pe_fs_write_all(fd, data, len) < 0 || fchmod(fd, (mode_t)(mode ? mode : 0644) & 0777) < 0 ||
        renameat(dir, tmp, dir, base) < 0) {
        int e = errno;
        unlinkat(dir, tmp, 0);
        path_error(err, e, "write", path);
        goto out;
    }
    rc = 0;
out:
    fs_leave(old);
    if (fd >= 0)
        close(fd);
    if (dir >= 0)
        close(dir);
    close(r.fd);
    return rc;
}

static int lc_file_list(pe_provider *p, const char *id, const char *path, pe_provider_dirent **ents,
                        size_t *n, pe_err *err)
{
    in_root r;
    fsids old;
    DIR *dp = NULL;
    struct dirent *de;
    size_t cap = 0;
    int fd, rc = -1;

    if (check_path(path, err) < 0 || open_root(p, id, &r, err) < 0)
        return -1;
    old = fs_enter(r.uid);
    fd = openat_in(r.fd, path, O_RDONLY | O_DIRECTORY);
    if (fd < 0) {
        path_error(err, errno, "list", path);
        goto out;
    }
    if (pseudo_fs(fd) || (dp = fdopendir(fd)) == NULL) {
        close(fd);
        pe_err_set(err, PE_EINVAL, 0, "local: list %s: not a directory of files", path);
        goto out;
    }
    while ((de = readdir(dp)) != NULL) {
        struct stat sb;
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
            strlen(de->d_name) >= sizeof((*ents)->name) ||
            fstatat(dirfd(dp), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            *ents = pe_xrealloc(*ents, cap * sizeof(**ents));
        }
        pe_provider_dirent *e = &(*ents)[(*n)++];
        memset(e, 0, sizeof(*e));
        snprintf(e->name, sizeof(e->name), "%s", de->d_name);
        e->is_dir = S_ISDIR(sb.st_mode);
        e->size = S_ISREG(sb.st_mode) ? (uint64_t)sb.st_size : 0;
        e->mode = sb.st_mode & 07777;
    }
    rc = 0;
out:
    fs_leave(old);
    if (dp)
        closedir(dp);
    close(r.fd);
    return rc;
}

static int lc_file_remove(pe_provider *p, const char *id, const char *path, bool recursive,
                          pe_err *err)
{
    const char *base;
    in_root r;
    fsids old;
    int dir, rc = -1;

    if (check_path(path, err) < 0)
        return -1;
    if (recursive) /* a tree: the sandbox's own rm, inside it */
        return pe__provider_remove_by_exec(p, id, path, true, err);
    if (open_root(p, id, &r, err) < 0)
        return -1;
    old = fs_enter(r.uid);
    dir = openat_in(r.fd, path, O_PATH); /* it must exist: a missing one is ENOENT */
    if (dir < 0) {
        path_error(err, errno, "remove", path);
        goto out;
    }
    close(dir);
    dir = open_parent(r.fd, path, &base, err);
    if (dir < 0)
        goto out;
    if (pseudo_fs(dir))
        pe_err_set(err, PE_EINVAL, 0, "local: remove %s: not a file system for files", path);
    else if (unlinkat(dir, base, 0) < 0 && (errno != EISDIR || unlinkat(dir, base, AT_REMOVEDIR)))
        path_error(err, errno, "remove", path);
    else
        rc = 0;
    close(dir);
out:
    fs_leave(old);
    close(r.fd);
    return rc;
}

/* ---- ports ---- */

/* The host port published for port: the URL the host reaches it at. */
static int lc_preview(pe_provider *p, const char *id, uint16_t port, pe_provider_preview_link *out,
                      pe_err *err)
{
    json_t *o = inspect(p, id, err), *ports, *e;
    size_t i;
    int host = 0;

    if (o == NULL)
        return -1;
    ports = json_object_get(json_object_get(o, "network"), "ports");
    json_array_foreach(ports, i, e)
    {
        if (json_integer_value(json_object_get(e, "port")) == port)
            host = (int)json_integer_value(json_object_get(e, "host"));
    }
    json_decref(o);
    if (host <= 0)
        return pe_err_set(err, PE_ENOENT, 0, "local: port %u of %s is not published", port, id);
    snprintf(out->url, sizeof(out->url), "http://127.0.0.1:%d/", host);
    return 0;
}

const pe_provider_ops pe__provider_local = {
    .name = "local",
    /* tar through the file calls: provider.c adds PE_CAP_TAR */
    .takes = PE_TAKES_IMAGE | PE_TAKES_CPU | PE_TAKES_MEMORY | PE_TAKES_DISK,
    .caps = PE_CAP_STOP | PE_CAP_PTY | PE_CAP_STDIN | PE_CAP_FILE_LIST | PE_CAP_FILE_REMOVE |
            PE_CAP_PREVIEW | PE_CAP_PAUSE | PE_CAP_VOLUMES,
    .keyless = true,
    .open = lc_open,
    .close = lc_close,
    .create = lc_create,
    .start = lc_start,
    .start_with = lc_start_with,
    .stop = lc_stop,
    .remove = lc_remove,
    .status = lc_status,
    .exec_start = lc_exec_start,
    .file_read = lc_file_read,
    .file_write = lc_file_write,
    .file_list = lc_file_list,
    .file_remove = lc_file_remove,
    .preview = lc_preview,
    .pause = lc_pause,
    .resume = lc_resume,
};
