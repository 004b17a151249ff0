/* The parent side of starting a sandbox, or a process in one.
 *
 * pe__spawn_sandbox: prepare everything the child needs (detached mounts
 * of the image, disk and volumes; argv/env; the seccomp program), clone
 * into new mount/pid/uts/ipc/net(/user) namespaces with a pidfd, in our
 * own memory (CLONE_VM, no copy of the caller: see init_clone), write the
 * id maps, idmap the image to the child's user namespace, attach the child
 * to its cgroup, then send GO and wait for STARTED (or a reported error).
 *
 * pe__spawn_exec: clone a helper in our own memory (CLONE_VM|CLONE_VFORK,
 * no copy of the caller), which joins the sandbox's cgroup, setns(pidfd)s
 * into it and starts the process the same way, as our child
 * (CLONE_PARENT), then exits: we reap the process ourselves.
 *
 * pe__wait_process: one poll loop for the caller's terminal, the PTY, the
 * process's pidfd, forwarded signals and the timeout.
 *
 * Processes are addressed by pidfd only, so a recycled pid is never
 * signalled. */
#include <errno.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <linux/sched.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

#include "core/fs.h"
#include "core/log.h"
#include "core/util.h"
#include "runtime/cgroup-internal.h"
#include "runtime/child.h"
#include "runtime/internal.h"
#include "runtime/security.h"
#include "runtime/sync.h"

int pe__send_fds(int fd, const void *buf, size_t len, const int *fds, int nfds)
{
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    struct msghdr mh;
    union {
        char buf[CMSG_SPACE(sizeof(int) * PE_SYNC_MAX_FDS)];
        struct cmsghdr align;
    } ctl;
    ssize_t r;

    if (nfds < 0 || nfds > PE_SYNC_MAX_FDS)
        return -1;
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (nfds > 0) {
        struct cmsghdr *c;
        memset(&ctl, 0, sizeof(ctl));
        mh.msg_control = ctl.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    do
        r = sendmsg(fd, &mh, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    return r == (ssize_t)len ? 0 : -1;
}

int pe__sync_send(int fd, int type, int errnum, int value, const char *text, const int *fds,
                  int nfds)
{
    pe_sync_msg m;

    memset(&m, 0, sizeof(m));
    m.type = type;
    m.errnum = errnum;
    m.value = value;
    if (text != NULL) {
        size_t n = strlen(text);
        if (n >= sizeof(m.text))
            n = sizeof(m.text) - 1;
        memcpy(m.text, text, n);
    }
    return pe__send_fds(fd, &m, sizeof(m), fds, nfds);
}

int pe__sync_recv_from(int fd, pe_sync_msg *m, int *fds, int max_fds, int *nfds, pid_t *pid)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * PE_SYNC_MAX_FDS) + CMSG_SPACE(sizeof(struct ucred))];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {.iov_base = m, .iov_len = sizeof(*m)};
    struct msghdr mh;
    ssize_t r;

    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctl.buf;
    mh.msg_controllen = sizeof(ctl.buf);
    *nfds = 0;
    do
        r = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
    while (r < 0 && errno == EINTR);
    if (r <= 0)
        return (int)r;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET)
            continue;
        if (c->cmsg_type == SCM_CREDENTIALS && pid != NULL) {
            struct ucred uc;
            memcpy(&uc, CMSG_DATA(c), sizeof(uc));
            *pid = uc.pid;
        }
        if (c->cmsg_type != SCM_RIGHTS)
            continue;
        for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
            int got;
            memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (fds != NULL && *nfds < max_fds)
                fds[(*nfds)++] = got;
            else
                close(got);
        }
    }
    if ((size_t)r != sizeof(*m) || (mh.msg_flags & MSG_CTRUNC)) {
        for (int i = 0; i < *nfds; i++)
            close(fds[i]);
        *nfds = 0;
        errno = EPROTO;
        return -1;
    }
    m->text[sizeof(m->text) - 1] = '\0';
    return 1;
}

bool pe__exec_failure(const pe_sync_msg *m, pe_err *err)
{
    if (m->type == PE_SYNC_ERROR)
        pe_err_set(err, PE_ESYS, m->errnum, "exec: %s", m->text);
    else if (m->type == PE_SYNC_EXEC_FAILED)
        pe_err_set(err, PE_ENOEXEC, m->errnum, "exec %s", m->text);
    else
        return false;
    return true;
}

int pe__sync_recv(int fd, pe_sync_msg *m, int *fds, int max_fds, int *nfds)
{
    return pe__sync_recv_from(fd, m, fds, max_fds, nfds, NULL);
}

uint64_t pe__proc_start_time(pid_t pid)
{
    char path[64], buf[1024];
    cleanup_fd int fd = -1;
    unsigned long long v = 0;
    ssize_t n;
    char *p;
    int field = 2;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof(buf) - 1);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    /* comm (field 2) may contain spaces and parens: skip to the last ')'. */
    p = strrchr(buf, ')');
    if (p == NULL)
        return 0;
    for (p++; *p && field < 22; p++)
        if (*p == ' ')
            field++;
    while (*p >= '0' && *p <= '9')
        v = v * 10 + (unsigned long long)(*p++ - '0');
    return v;
}

int pe__init_memfd(const char *init_path, pe_err *err)
{
    static int cached = -1;
    cleanup_fd int src = -1;
    cleanup_fd int mfd = -1;
    struct stat st;
    off_t off = 0;

    if (cached >= 0)
        return cached;
    src = open(init_path, O_RDONLY | O_CLOEXEC);
    if (src < 0 || fstat(src, &st) < 0)
        return pe_err_sys(err, "open %s", init_path);
    mfd = memfd_create("pocketenv-init", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (mfd < 0)
        return pe_err_sys(err, "memfd_create");
    while (off < st.st_size) {
        ssize_t r = sendfile(mfd, src, &off, (size_t)(st.st_size - off));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return pe_err_sys(err, "copy %s", init_path);
    }
    if (fcntl(mfd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0)
        return pe_err_sys(err, "seal init memfd");
    cached = pe_steal_fd(&mfd);
    return cached;
}

/* The caller's terminal size, for a PTY the process gets (0x0 if the
 * caller has no terminal). */
static void caller_winsize(struct winsize *ws)
{
    memset(ws, 0, sizeof(*ws));
    if (ioctl(STDIN_FILENO, TIOCGWINSZ, ws) < 0 && ioctl(STDOUT_FILENO, TIOCGWINSZ, ws) < 0)
        memset(ws, 0, sizeof(*ws));
}

static int write_map(pid_t pid, const char *which, uint32_t base, pe_err *err)
{
    char path[64], line[64];
    snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, which);
    snprintf(line, sizeof(line), "0 %u %u\n", base, PE_IDMAP_SIZE);
    return pe_fs_write_str(path, line, err);
}

static int set_mount_attr(int fd, uint64_t set, int userns_fd, bool recursive)
{
    struct mount_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.attr_set = set;
    if (userns_fd >= 0) {
        attr.attr_set |= MOUNT_ATTR_IDMAP;
        attr.userns_fd = (uint64_t)userns_fd;
    }
    return (int)syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0),
                        &attr, sizeof(attr));
}

static int clone_tree(const char *path, bool recursive)
{
    unsigned int flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (recursive ? AT_RECURSIVE : 0);
    return (int)syscall(SYS_open_tree, AT_FDCWD, path, flags);
}

static void close_fds(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0) {
            close(fds[i]);
            fds[i] = -1;
        }
}

/* Who a host bind (-v HOST:PATH) belongs to: its owner (the directory's,
 * or the file's), to be mapped to the sandbox's user on that mount only.
 *
 * The owner, not the invoking user: the runtime runs as root (id ranges,
 * cgroups), so the invoker is root; SUDO_UID is an environment variable
 * the kernel does not vouch for, absent under su, doas or a service. The
 * owner is also what "owned as expected" means: git's safe.directory and
 * every tool that compares a tree's owner with the current user then see
 * the mounted tree as the sandbox user's own, and what the sandbox creates
 * there belongs to the tree's owner on the host, as if they had made it.
 * The sandbox gains no id the tree does not already have as its owner.
 *
 * Never root: a mount mapped to host root would let the sandbox create
 * root-owned (setuid) files on the host. A root-owned tree keeps the old
 * behaviour (files appear as nobody; readable, not writable); a group of
 * root is replaced by the owner's own group from the host's passwd. */
struct bind_owner {
    bool mapped;
    uint32_t uid, gid;
};

static void bind_owner_of(const pe_bind *b, const struct stat *st, struct bind_owner *o)
{
    o->mapped = false;
    o->uid = st->st_uid;
    o->gid = st->st_gid;
    if (b->idmap || o->uid == 0)
        return;
    if (o->gid == 0) {
        struct passwd pw, *found = NULL;
        char buf[4096];
        if (getpwuid_r(o->uid, &pw, buf, sizeof(buf), &found) != 0 || found == NULL ||
            pw.pw_gid == 0)
            return;
        o->gid = pw.pw_gid;
    }
    o->mapped = true;
}

/* Where image layer i goes among the fds sent with GO (child.h). */
static int lower_slot(const pe_spawn_req *req, size_t i)
{
    return i == 0 ? PE_FD_LOWER : PE_FD_BINDS + (int)req->cfg->n_binds + (int)i - 1;
}

/* Read-only, and idmapped into userns (when >= 0), every image layer. */
static int set_lowers(const pe_spawn_req *req, const int *fds, int userns, pe_err *err)
{
    for (size_t i = 0; i < req->n_lowers; i++)
        if (set_mount_attr(fds[lower_slot(req, i)], MOUNT_ATTR_RDONLY, userns, false) < 0)
            return pe_err_sys(err, "%s image layer %s", userns >= 0 ? "idmap" : "protect",
                              req->lowers[i]);
    return 0;
}

/* Detached mounts for the child: image, disk dir, volumes. */
static int prepare_mounts(const pe_spawn_req *req, int *fds, bool *is_dir,
                          struct bind_owner *owners, pe_err *err)
{
    const pe_sandbox_cfg *cfg = req->cfg;

    for (size_t i = 0; i < req->n_lowers; i++) {
        int at = lower_slot(req, i);
        fds[at] = clone_tree(req->lowers[i], false);
        if (fds[at] < 0)
            return pe_err_sys(err, "open image layer %s", req->lowers[i]);
    }
    fds[PE_FD_DISK] = -1;
    if (req->disk_dir != NULL) {
        fds[PE_FD_DISK] = clone_tree(req->disk_dir, false);
        if (fds[PE_FD_DISK] < 0)
            return pe_err_sys(err, "open sandbox disk %s", req->disk_dir);
    } else {
        /* Keep the fd slots fixed: a harmless placeholder. */
        fds[PE_FD_DISK] = open("/", O_PATH | O_CLOEXEC);
    }
    for (size_t i = 0; i < cfg->n_binds; i++) {
        const pe_bind *b = &cfg->binds[i];
        struct stat st;
        int fd;

        if (stat(b->host, &st) < 0)
            return pe_err_set(err, PE_EINVAL, errno, "volume %s", b->host);
        is_dir[i] = S_ISDIR(st.st_mode);
        bind_owner_of(b, &st, &owners[i]);
        fd = clone_tree(b->host, true);
        if (fd < 0)
            return pe_err_sys(err, "open volume %s", b->host);
        fds[PE_FD_BINDS + i] = fd;
        /* Volumes never carry setuid binaries or device nodes into a
         * sandbox; read-only applies to every submount too. */
        if (set_mount_attr(fd,
                           MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (b->ro ? MOUNT_ATTR_RDONLY : 0),
                           -1, true) < 0)
            return pe_err_sys(err, "set volume %s options", b->host);
    }
    return 0;
}

/* Idmap each host bind with an owner (bind_owner_of) so that only that
 * owner is the sandbox's user (cfg->uid, root by default) there. A
 * filesystem that cannot be idmapped (EINVAL: NFS, FUSE...) keeps the
 * plain bind, with a warning: readable as before, not writable. */
static int map_bind_owners(const pe_sandbox_cfg *cfg, int *fds, const struct bind_owner *owners,
                           uint32_t base, pe_err *err)
{
    for (size_t i = 0; i < cfg->n_binds; i++) {
        cleanup_fd int ns = -1;

        if (!owners[i].mapped)
            continue;
        ns = pe__idmap_userns_single(owners[i].uid, owners[i].gid, base + cfg->uid, base + cfg->gid,
                                     err);
        if (ns < 0)
            return pe_err_prefix(err, "volume %s", cfg->binds[i].host);
        if (set_mount_attr(fds[PE_FD_BINDS + i], 0, ns, false) == 0)
            continue;
        if (errno != EINVAL && errno != EOPNOTSUPP)
            return pe_err_sys(err, "map the owner of volume %s", cfg->binds[i].host);
        pe_log_warn("volume %s: its filesystem cannot map owners (%s): its files appear as "
                    "nobody inside and cannot be written",
                    cfg->binds[i].host, strerror(errno));
    }
    return 0;
}

/* A hard open-files limit above ours is out of reach of the child (in its
 * user namespace it may only lower it): raise its hard limit from here,
 * as host root, before GO. The child sets the final values itself. */
static int raise_nofile(pid_t pid, uint64_t hard, pe_err *err)
{
    struct rlimit cur, r;

    if (hard == 0 || getrlimit(RLIMIT_NOFILE, &cur) < 0 || hard <= cur.rlim_max)
        return 0;
    r.rlim_cur = cur.rlim_cur;
    r.rlim_max = hard;
    if (prlimit(pid, RLIMIT_NOFILE, &r, NULL) < 0)
        return pe_err_sys(err, "raise the hard open-files limit from %llu to %llu",
                          (unsigned long long)cur.rlim_max, (unsigned long long)hard);
    return 0;
}

/* Read messages until STARTED (or failure). Keeps a PTY master if sent. */
static int await_started(int sync_fd, const char *what, int *pty, pe_err *err)
{
    for (;;) {
        pe_sync_msg m;
        int fds[1], nfds = 0;
        int r = pe__sync_recv(sync_fd, &m, fds, 1, &nfds);

        if (r < 0)
            return pe_err_sys(err, "%s: read from sandbox", what);
        if (r == 0)
            return pe_err_set(err, PE_ESYS, 0, "%s: sandbox setup ended unexpectedly", what);
        switch (m.type) {
        case PE_SYNC_PTY:
            if (nfds == 1)
                *pty = fds[0];
            break;
        case PE_SYNC_STARTED:
            return 0;
        case PE_SYNC_ERROR:
            return pe_err_set(err, PE_ESYS, m.errnum, "%s: %s", what, m.text);
        case PE_SYNC_EXEC_FAILED:
            return pe_err_set(err, PE_ENOEXEC, m.errnum, "%s: cannot run the command", what);
        default:
            for (int i = 0; i < nfds; i++)
                close(fds[i]);
            break;
        }
    }
}

/* The stack a sandbox's first process runs on until it execs
 * pocketenv-init, above a guard page. child.c's deepest path (a symlink
 * chain in make_in_root, 8 levels of 12 KiB) stays well inside it. */
#define INIT_STACK (512 * 1024)

struct init_stack {
    char *base; /* NULL: none (a sanitized build's copy) */
    size_t len;
    bool masked; /* the caller's signals are blocked until init_stack_free */
};

static int init_child(void *arg)
{
    const struct pe_child_ctx *ctx = arg;

    close(ctx->close_fd);
    pe__child_main(ctx);
}

/* Once the child has exec'd or is reaped: nothing runs on the stack any
 * more. Restores the caller's signal mask, blocked since the clone. */
static void init_stack_free(struct init_stack *st, const sigset_t *old_mask)
{
    if (st->base != NULL)
        munmap(st->base, st->len);
    st->base = NULL;
    if (st->masked)
        pthread_sigmask(SIG_SETMASK, old_mask, NULL);
    st->masked = false;
}

#if !defined(__SANITIZE_ADDRESS__)
/* Start a sandbox's first process without copying the caller: clone with
 * CLONE_VM onto its own stack, not CLONE_VFORK (the child must wait for
 * its id maps, idmapped mounts, cgroup and network while we make them).
 * A copy of the caller (for the daemon: its whole address space, until
 * the child execs pocketenv-init after its ~28 mounts) made every page
 * that any of the daemon's threads wrote meanwhile a copy-on-write fault
 * with a TLB shootdown on the other CPUs (bench/README.md).
 *
 * Sharing our memory is safe because the child writes nothing of it but
 * its own stack and, through the calling thread's TLS (no CLONE_SETTLS),
 * errno and child.c's g_sync_fd, and the calling thread never runs
 * alongside it in a way that could see those: until GO the child only
 * waits in recvmsg (no errno unless it fails, and it cannot: every signal
 * is blocked); after GO this thread only waits in recvmsg for the next
 * message, and the child's last write to our memory comes before the
 * message that wakes us (ERROR, then _exit; or PTY, then nothing of ours
 * that we read; STARTED is sent by pocketenv-init after the exec). So the
 * calling thread keeps every signal blocked until the child has exec'd or
 * been reaped (init_stack_free): no handler runs on it meanwhile, and the
 * child starts with all blocked (lock_down resets them before the exec).
 * Its own signal handlers and fd table are copies (no CLONE_SIGHAND, no
 * CLONE_FILES): fds are closed on exec as before, and the net lock's
 * guard still keeps a held flock out of the copy (pe__fork_guard).
 *
 * The kernel's OOM killer kills every process sharing its victim's memory,
 * and this child, unlike a vfork child, may be a victim: in its sandbox's
 * memory cgroup (attached before GO) it is the only process until it
 * execs, in a cgroup made fresh for this start with a limit of at least
 * 4 MiB, and only its setup's kernel objects are charged there (~0.1 MiB;
 * its user pages go to our cgroup, the memory's owner). So that OOM
 * killer cannot run before the exec; never attach the child to a cgroup
 * that may already be near its limit (docs/design/runtime.md).
 *
 * Returns the pid, with *pidfd set, or -1 with err set. */
static long init_clone(struct pe_child_ctx *ctx, bool userns, struct init_stack *st, int *pidfd,
                       sigset_t *old_mask, pe_err *err)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    int flags = CLONE_VM | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET |
                CLONE_PIDFD | SIGCHLD | (userns ? CLONE_NEWUSER : 0);
    sigset_t all;
    long pid;

    st->masked = false;
    st->len = page + INIT_STACK;
    st->base =
        mmap(NULL, st->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (st->base == MAP_FAILED) {
        st->base = NULL;
        return pe_err_sys(err, "mmap the sandbox's first stack");
    }
    if (mprotect(st->base, page, PROT_NONE) < 0) {
        pe_err_sys(err, "guard the sandbox's first stack");
        munmap(st->base, st->len);
        st->base = NULL;
        return -1;
    }
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, old_mask);
    st->masked = true;
    pe__fork_guard(true);
    pid = clone(init_child, st->base + st->len, flags, ctx, pidfd);
    pe__fork_guard(false);
    if (pid < 0) {
        pe_err_sys(err, "clone sandbox");
        init_stack_free(st, old_mask);
        return -1;
    }
    return pid;
}
#else
/* AddressSanitizer keeps the calling thread's stack bounds in memory that
 * a CLONE_VM child shares (its thread record): on its own stack the child
 * would make every noreturn call look like a jump of gigabytes, and ASan
 * prints a warning for it into the sandbox's stderr. The exec helper gets
 * away with it because it only makes such calls when it fails. Sanitized
 * builds start the first process as a copy of the caller, as before, on
 * the copied stack; the sanitizers still check everything the parent and
 * the child do, and the normal build runs the CLONE_VM path. */
static long init_clone(struct pe_child_ctx *ctx, bool userns, struct init_stack *st, int *pidfd,
                       sigset_t *old_mask, pe_err *err)
{
    struct clone_args args;
    long pid;

    (void)old_mask;
    st->base = NULL;
    st->masked = false;
    memset(&args, 0, sizeof(args));
    args.flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET |
                 CLONE_PIDFD | (userns ? CLONE_NEWUSER : 0);
    args.pidfd = (uint64_t)(uintptr_t)pidfd;
    args.exit_signal = SIGCHLD;
    pe__fork_guard(true);
    pid = syscall(SYS_clone3, &args, sizeof(args));
    if (pid == 0)
        init_child(ctx);
    pe__fork_guard(false);
    if (pid < 0)
        return pe_err_sys(err, "clone3 sandbox");
    return pid;
}
#endif

/* The files a process joins the sandbox's cgroups through by writing "0"
 * into each: a v1 hierarchy's `tasks`, else `cgroup.procs`. Moving a whole
 * thread group (cgroup.procs, or a pid other than the writer's) takes the
 * kernel's global cgroup_threadgroup_rwsem for writing, which waits for an
 * RCU grace period unless a writer came within the last one (or the host
 * runs cgroup2 with favordynmods): ~12 ms on this host for every exec or
 * start that came alone, 0 back to back (bench/README.md). The writer
 * moving itself by `tasks` skips that lock, and a process cloned for it has
 * one thread, so it is all that moves; what it starts inherits the cgroups. */
static int open_cgroup_join(pe_cgroup *cg, int *fds, int max, pe_err *err)
{
    int n = 0;

    for (size_t i = 0; cg != NULL && i < cg->ndirs && n < max; i++) {
        cleanup_free char *path = pe_xasprintf("%s/tasks", cg->dirs[i]);

        fds[n] = open(path, O_WRONLY | O_CLOEXEC);
        if (fds[n] < 0 && errno == ENOENT) {
            free(path);
            path = pe_xasprintf("%s/cgroup.procs", cg->dirs[i]);
            fds[n] = open(path, O_WRONLY | O_CLOEXEC);
        }
        if (fds[n] < 0) {
            pe_err_sys(err, "open %s", path);
            close_fds(fds, n);
            return -1;
        }
        n++;
    }
    return n;
}

int pe__spawn_sandbox(const pe_spawn_req *req, pe_spawn_res *res, pe_err *err)
{
    const pe_sandbox_cfg *cfg = req->cfg;
    const struct sock_fprog *prog = NULL;
    int fds[PE_SYNC_MAX_FDS];
    bool is_dir[PE_MAX_BINDS];
    struct bind_owner owners[PE_MAX_BINDS];
    char *dests[PE_MAX_BINDS + 1];
    int sp[2] = {-1, -1};
    int nfds = PE_FD_BINDS + (int)cfg->n_binds + (int)req->n_lowers - 1;
    cleanup_fd int pidfd = -1;
    struct pe_child_ctx ctx;
    struct init_stack stack = {NULL, 0, false};
    sigset_t old_mask;
    long pid = -1;
    int cg_fds[PE__CGROUP_MAX_DIRS];
    int n_cg = 0;

    memset(res, 0, sizeof(*res));
    res->pidfd = res->signal_pidfd = res->sync_fd = res->pty_master = res->init_conn = -1;
    res->relay[0] = res->relay[1] = res->relay[2] = -1;
    if (cfg->n_binds > PE_MAX_BINDS)
        return pe_err_set(err, PE_EINVAL, 0, "at most %d volumes", PE_MAX_BINDS);
    if (req->n_lowers < 1 || req->n_lowers > PE_MAX_LOWERS)
        return pe_err_set(err, PE_EINVAL, 0, "an image has 1 to %d layers", PE_MAX_LOWERS);
    for (int i = 0; i < nfds; i++)
        fds[i] = -1;
    if (pe_seccomp_default_prog(&prog, err) < 0)
        return -1;
    if (prepare_mounts(req, fds, is_dir, owners, err) < 0)
        goto fail;
    for (size_t i = 0; i < cfg->n_binds; i++)
        dests[i] = cfg->binds[i].dest;
    dests[cfg->n_binds] = NULL;

    memset(&ctx, 0, sizeof(ctx));
    ctx.userns = cfg->userns;
    ctx.persist = req->persist;
    ctx.tty = req->tty;
    ctx.has_disk = req->disk_dir != NULL;
    ctx.n_lowers = req->n_lowers;
    ctx.hostname = cfg->hostname;
    if (req->net != NULL) {
        ctx.net_addr = htonl(req->net->addr);
        ctx.net_gateway = htonl(req->net->gateway);
        ctx.net_prefix = req->net->prefix;
    }
    ctx.workdir = req->workdir;
    /* The staging tmpfs holds the writable layer of a sandbox without a
     * disk dir, and /dev (with /dev/shm) of every sandbox: its size. */
    ctx.disk_bytes = cfg->disk_bytes;
    ctx.nofile_soft = (uint64_t)cfg->nofile_soft;
    ctx.nofile_hard = (uint64_t)cfg->nofile_hard;
    ctx.n_binds = cfg->n_binds;
    ctx.bind_dests = dests;
    ctx.bind_is_dir = is_dir;
    ctx.seccomp = prog;
    ctx.caps = pe_caps_default_mask();
    pe_caps_prepare();
    memcpy(ctx.stdio, req->stdio, sizeof(ctx.stdio));
    if (req->tty)
        caller_winsize(&ctx.winsize);
    ctx.init_fd = req->init_fd;
    ctx.spawn_fd = req->persist ? req->spawn_fd : -1;
    ctx.init_argv = req->argv;
    ctx.envp = req->envp;
    n_cg = open_cgroup_join(req->cg, cg_fds, PE__CGROUP_MAX_DIRS, err);
    if (n_cg < 0)
        goto fail;
    ctx.cgroup_fds = cg_fds;
    ctx.n_cgroup_fds = n_cg;

    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0) {
        pe_err_sys(err, "socketpair");
        goto fail;
    }
    ctx.sync_fd = sp[1];
    ctx.close_fd = sp[0];
    pid = init_clone(&ctx, cfg->userns, &stack, &pidfd, &old_mask, err);
    if (pid < 0)
        goto fail;
    close(sp[1]);
    sp[1] = -1;

    if (cfg->userns) {
        char path[64];
        cleanup_fd int userns = -1;
        if (write_map((pid_t)pid, "uid_map", req->id_base, err) < 0 ||
            write_map((pid_t)pid, "gid_map", req->id_base, err) < 0)
            goto kill;
        snprintf(path, sizeof(path), "/proc/%ld/ns/user", pid);
        userns = open(path, O_RDONLY | O_CLOEXEC);
        if (userns < 0) {
            pe_err_sys(err, "open %s", path);
            goto kill;
        }
        if (set_lowers(req, fds, userns, err) < 0)
            goto kill;
        if (req->disk_idmap && set_mount_attr(fds[PE_FD_DISK], 0, userns, false) < 0) {
            pe_err_sys(err, "idmap the writable layer %s", req->disk_dir);
            goto kill;
        }
        for (size_t i = 0; i < cfg->n_binds; i++)
            if (cfg->binds[i].idmap && set_mount_attr(fds[PE_FD_BINDS + i], 0, userns, false) < 0) {
                pe_err_sys(err, "idmap volume %s", cfg->binds[i].host);
                goto kill;
            }
        if (map_bind_owners(cfg, fds, owners, req->id_base, err) < 0)
            goto kill;
    } else if (set_lowers(req, fds, -1, err) < 0) {
        goto kill;
    }
    if (raise_nofile((pid_t)pid, (uint64_t)cfg->nofile_hard, err) < 0)
        goto kill;
    if (req->net != NULL && pe__net_attach(req->net, (pid_t)pid, err) < 0)
        goto kill;
    if (req->net != NULL && req->egress != NULL &&
        pe__egress_attach(req->egress, (pid_t)pid, NULL, err) < 0)
        goto kill;
    if (pe__sync_send(sp[0], PE_SYNC_GO, 0, 0, NULL, fds, nfds) < 0) {
        pe_err_sys(err, "start sandbox");
        goto kill;
    }
    close_fds(fds, nfds);
    if (await_started(sp[0], "start sandbox", &res->pty_master, err) < 0)
        goto kill;

    /* STARTED comes from pocketenv-init: the child has exec'd, out of
     * our memory. */
    init_stack_free(&stack, &old_mask);
    close_fds(cg_fds, n_cg);
    res->pid = (pid_t)pid;
    res->pidfd = pe_steal_fd(&pidfd);
    res->start_time = pe__proc_start_time((pid_t)pid);
    if (req->persist)
        close(sp[0]);
    else
        res->sync_fd = sp[0];
    return 0;

kill:
    syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
    waitpid((pid_t)pid, NULL, 0);
    if (res->pty_master >= 0)
        close(res->pty_master);
    res->pty_master = -1;
fail:
    init_stack_free(&stack, &old_mask);
    close_fds(fds, nfds);
    close_fds(cg_fds, n_cg);
    if (sp[0] >= 0)
        close(sp[0]);
    if (sp[1] >= 0)
        close(sp[1]);
    return -1;
}

/* Stacks of an exec's helper and of its process, each above a guard page:
 * they run in the caller's memory until they exec (see below). */
#define EXEC_STACK (128 * 1024)

struct exec_stacks {
    char *base;
    size_t len;
};

static int exec_stacks_new(struct exec_stacks *st, void **helper_top, void **process_top,
                           pe_err *err)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);

    st->len = 2 * (page + EXEC_STACK);
    st->base =
        mmap(NULL, st->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (st->base == MAP_FAILED) {
        st->base = NULL;
        return pe_err_sys(err, "mmap exec stacks");
    }
    if (mprotect(st->base, page, PROT_NONE) < 0 ||
        mprotect(st->base + page + EXEC_STACK, page, PROT_NONE) < 0) {
        munmap(st->base, st->len);
        st->base = NULL;
        return pe_err_sys(err, "guard exec stacks");
    }
    *helper_top = st->base + page + EXEC_STACK;
    *process_top = st->base + st->len;
    return 0;
}

/* exec into a running sandbox without copying the caller: the helper is
 * cloned with CLONE_VM|CLONE_VFORK (this thread waits, as for vfork),
 * joins the sandbox's cgroup and namespaces, starts the process the same
 * way as our child (CLONE_PARENT; it returns once the process has exec'd
 * or died), sends us its pid and exits. When clone returns, neither runs
 * in our memory any more. The process's status is ours to reap (waitpid):
 * no waiter stands between it and us. Before, the helper exec'd
 * pocketenv-init --wait-child to wait for the process as its parent and
 * report its status, an exec and a process per exec (bench/README.md,
 * "The exec's waiter"); before that, the helper was a fork of the caller
 * (for the daemon: a copy of its whole address space per exec). */
int pe__spawn_exec(const pe_exec_req *req, pe_spawn_res *res, pe_err *err)
{
    const struct sock_fprog *prog = NULL;
    struct pe_exec_ctx ctx;
    struct exec_stacks stacks = {NULL, 0};
    int sp[2] = {-1, -1}, cg_fds[PE__CGROUP_MAX_DIRS], n_cg = 0;
    void *helper_top = NULL;
    sigset_t all, old;
    pid_t helper = -1, target = -1;
    bool failed = false; /* err says why */
    int status;

    memset(res, 0, sizeof(*res));
    res->pidfd = res->signal_pidfd = res->sync_fd = res->pty_master = res->init_conn = -1;
    res->relay[0] = res->relay[1] = res->relay[2] = -1;
    if (pe_seccomp_default_prog(&prog, err) < 0)
        return -1;
    memset(&ctx, 0, sizeof(ctx));
    ctx.target_pidfd = req->target_pidfd;
    ctx.userns = req->userns;
    ctx.tty = req->tty;
    if (req->tty)
        caller_winsize(&ctx.winsize);
    if (req->tty && req->tty_cols > 0 && req->tty_rows > 0) {
        ctx.winsize.ws_col = req->tty_cols;
        ctx.winsize.ws_row = req->tty_rows;
    }
    ctx.workdir = req->workdir;
    ctx.uid = req->uid;
    ctx.gid = req->gid;
    ctx.nofile_soft = req->nofile_soft;
    ctx.nofile_hard = req->nofile_hard;
    ctx.seccomp = prog;
    ctx.caps = pe_caps_default_mask();
    pe_caps_prepare();
    ctx.argv = req->argv;
    ctx.envp = req->envp;
    memcpy(ctx.stdio, req->stdio, sizeof(ctx.stdio));
    n_cg = open_cgroup_join(req->cg, cg_fds, PE__CGROUP_MAX_DIRS, err);
    if (n_cg < 0)
        return -1;
    ctx.cgroup_fds = cg_fds;
    ctx.n_cgroup_fds = n_cg;
    if (exec_stacks_new(&stacks, &helper_top, &ctx.process_stack, err) < 0)
        goto fail;
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0) {
        pe_err_sys(err, "socketpair");
        goto fail;
    }
    ctx.sync_fd = sp[1];
    /* No handler of ours may run on the helper's stack: every signal
     * blocked across the clone (the process unblocks them in lock_down). */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    helper = clone(pe__exec_helper_main, helper_top, CLONE_VM | CLONE_VFORK | SIGCHLD, &ctx);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (helper < 0) {
        pe_err_sys(err, "clone");
        goto fail;
    }
#if defined(__SANITIZE_ADDRESS__)
    /* The helper's frames poisoned shadow of these stacks, in our memory;
     * they exited without unwinding them. */
    __asan_unpoison_memory_region(stacks.base, stacks.len);
#endif
    munmap(stacks.base, stacks.len);
    stacks.base = NULL;
    close_fds(cg_fds, n_cg);
    n_cg = 0;
    close(sp[1]);
    sp[1] = -1;
    /* The helper has exited (vfork: clone returns once it let go of our
     * memory, after its last send), so every message it and the process
     * will ever send is in the socket: read them without waiting, all of
     * them, so that a process that said why it could not exec is still
     * reaped. EOF could be late: a copy of sp[1] may live on in a process
     * another thread was cloning meanwhile, until that one execs. */
    if (fcntl(sp[0], F_SETFL, O_NONBLOCK) < 0) {
        failed = true;
        pe_err_sys(err, "exec: sync socket");
    }
    for (;;) {
        pe_sync_msg m;
        int fds[1], nfds = 0;
        int r = pe__sync_recv(sp[0], &m, fds, 1, &nfds);

        if (r < 0 && errno != EAGAIN && !failed) {
            failed = true;
            pe_err_sys(err, "exec: read from sandbox");
        }
        if (r <= 0)
            break;
        if (m.type == PE_SYNC_PID) {
            target = (pid_t)m.value; /* the helper's last */
            break;
        }
        if (m.type == PE_SYNC_PTY && nfds == 1 && res->pty_master < 0) {
            res->pty_master = fds[0];
            nfds = 0;
        } else if (!failed && pe__exec_failure(&m, err)) {
            failed = true;
        }
        if (nfds == 1)
            close(fds[0]);
    }
    while (waitpid(helper, &status, 0) < 0 && errno == EINTR)
        ;
    if (!failed && target <= 0) {
        failed = true;
        pe_err_set(err, PE_ESYS, 0, "exec: the sandbox did not start the process");
    }
    if (failed)
        goto kill;
    res->pid = target;
    res->pidfd = (int)syscall(SYS_pidfd_open, target, 0);
    /* Readable once the process has ended, as pidfd is: for callers that
     * watch the end apart from the pidfd they signal by. */
    if (res->pidfd >= 0)
        res->sync_fd = fcntl(res->pidfd, F_DUPFD_CLOEXEC, 0);
    if (res->pidfd < 0 || res->sync_fd < 0) {
        pe_err_sys(err, "pidfd_open");
        goto kill;
    }
    close(sp[0]);
    return 0;

kill:
    if (target > 0) { /* our child, unreaped: its pid is still its own */
        kill(target, SIGKILL);
        while (waitpid(target, &status, 0) < 0 && errno == EINTR)
            ;
    }
fail:
    if (stacks.base != NULL)
        munmap(stacks.base, stacks.len);
    close_fds(cg_fds, n_cg);
    if (res->pidfd >= 0)
        close(res->pidfd);
    if (res->sync_fd >= 0)
        close(res->sync_fd);
    res->pidfd = res->sync_fd = -1;
    if (res->pty_master >= 0)
        close(res->pty_master);
    res->pty_master = -1;
    if (sp[0] >= 0)
        close(sp[0]);
    if (sp[1] >= 0)
        close(sp[1]);
    return -1;
}
