/* The runtime's side of the spawner (sync.h): a persistent sandbox's init
 * starts exec'd processes, so that an exec costs no cgroup joins, no
 * setns, no seccomp filter of its own and no helper (bench/README.md, "A
 * spawner in init"). pe__spawn_exec remains for what init declines and
 * for sandboxes started before it had a spawn socket.
 *
 * The socket: PE_RUN_DIR/<dev>-<ino>.sock (state.c; DATA/sandboxes/<name>/
 * spawn.sock where that cannot be had, and for sandboxes started by builds
 * before it), bound and listened on by
 * the runtime before the sandbox is cloned (init gets the fd), mode 0600
 * from before the bind, so that only host root can connect; nothing in the
 * sandbox can name a host path. A sandbox's root that took over its init
 * (ptrace) gets requests for processes in that same sandbox and nothing
 * else: every answer is checked, and all of it is bounded by a deadline. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "runtime/internal.h"
#include "runtime/sync.h"

#define SPAWN_SOCK "spawn.sock"
#define ANSWER_MS 10000 /* from the request to STARTED */
#define EXIT_MS 5000    /* from the process's end to init's report of it */
#ifndef PID_FS_MAGIC
#define PID_FS_MAGIC 0x50494446 /* Linux 6.9: pidfds live on pidfs */
#endif
#ifndef ANON_INODE_FS_MAGIC
#define ANON_INODE_FS_MAGIC 0x09041934
#endif

/* path as an address; through /proc/self/fd/N of its directory when it
 * is longer than sun_path holds (*dfd, closed by the caller, is N). */
static int sock_addr(const char *path, struct sockaddr_un *a, int *dfd)
{
    cleanup_free char *dir = NULL;
    const char *base = strrchr(path, '/');
    int n;

    *dfd = -1;
    memset(a, 0, sizeof(*a));
    a->sun_family = AF_UNIX;
    n = snprintf(a->sun_path, sizeof(a->sun_path), "%s", path);
    if (n > 0 && (size_t)n < sizeof(a->sun_path))
        return 0;
    if (base == NULL)
        return -1;
    dir = pe_xasprintf("%.*s", (int)(base - path), path);
    *dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (*dfd < 0)
        return -1;
    n = snprintf(a->sun_path, sizeof(a->sun_path), "/proc/self/fd/%d%s", *dfd, base);
    return n > 0 && (size_t)n < sizeof(a->sun_path) ? 0 : -1;
}

/* The spawn socket's path for the sandbox in dir: in the run directory,
 * or (old, 1) in dir itself. */
static char *sock_path(const char *dir, int old)
{
    char *p = old ? NULL : pe__run_file(dir, "sock");

    return p != NULL ? p : pe_xasprintf("%s/%s", dir, SPAWN_SOCK);
}

int pe__spawn_listen(const char *dir, pe_err *err)
{
    cleanup_free char *path = sock_path(dir, 0);
    struct sockaddr_un a;
    cleanup_fd int dfd = -1;
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return pe_err_sys(err, "spawn socket");
    /* The mode a bind gives the socket's file is the socket's own (less
     * the umask): 0600 before the name exists, so there is no moment in
     * which another user could connect. */
    if (fchmod(fd, 0600) < 0 || sock_addr(path, &a, &dfd) < 0) {
        pe_err_sys(err, "spawn socket %s", path);
        close(fd);
        return -1;
    }
    unlink(a.sun_path); /* a stopped sandbox's, or one left by a crash */
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 64) < 0) {
        pe_err_sys(err, "spawn socket %s", path);
        close(fd);
        return -1;
    }
    return fd;
}

void pe__spawn_unlink(const char *dir)
{
    for (int old = 0; old < 2; old++) {
        cleanup_free char *path = sock_path(dir, old);
        struct sockaddr_un a;
        cleanup_fd int dfd = -1;

        if (sock_addr(path, &a, &dfd) == 0)
            unlink(a.sun_path);
    }
}

/* One message of init's or the process's, with its fd (-1: none) and the
 * sender's pid as we see it, if it sent them. 1, 0 at EOF, -1 on error. */
static int recv_msg(int fd, pe_sync_msg *m, int *fd_out, pid_t *pid)
{
    int n = 0, r = pe__sync_recv_from(fd, m, fd_out, 1, &n, pid);

    if (n == 0)
        *fd_out = -1;
    return r;
}

/* fd is a pidfd: what the process sent as its own must be one (it is
 * what we signal and watch); one of any process it can name is of one in
 * its sandbox. Before pidfs (6.9) a pidfd is an anonymous inode whose
 * fdinfo has a Pid line. */
static bool is_pidfd(int fd)
{
    struct statfs sf;
    char path[64], buf[512];
    cleanup_fd int info = -1;
    ssize_t n;

    if (fstatfs(fd, &sf) < 0)
        return false;
    if ((unsigned long)sf.f_type == PID_FS_MAGIC)
        return true;
    if ((unsigned long)sf.f_type != ANON_INODE_FS_MAGIC)
        return false;
    snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
    info = open(path, O_RDONLY | O_CLOEXEC);
    if (info < 0 || (n = read(info, buf, sizeof(buf) - 1)) <= 0)
        return false;
    buf[n] = '\0';
    return strstr(buf, "\nPid:") != NULL;
}

static size_t strv_len(char *const *v, size_t *bytes)
{
    size_t n = 0;

    for (; v && v[n]; n++)
        *bytes += strlen(v[n]) + 1;
    return n;
}

static char *put_strv(char *p, char *const *v)
{
    for (; v && *v; v++) {
        size_t n = strlen(*v) + 1;
        memcpy(p, *v, n);
        p += n;
    }
    return p;
}

/* The request, or NULL if it is larger than init takes. */
static char *build_request(const pe_exec_req *req, size_t *len)
{
    size_t bytes = strlen(req->workdir) + 1, argc, envc;
    pe_spawn_hdr h;
    char *buf, *p;

    argc = strv_len(req->argv, &bytes);
    envc = strv_len(req->envp, &bytes);
    if (bytes > PE_SPAWN_STRINGS_MAX)
        return NULL;
    memset(&h, 0, sizeof(h));
    h.version = PE_SPAWN_VERSION;
    h.flags = req->tty ? PE_SPAWN_TTY : 0;
    h.uid = req->uid;
    h.gid = req->gid;
    h.nofile_soft = req->nofile_soft;
    h.nofile_hard = req->nofile_hard;
    h.tty_cols = req->tty_cols;
    h.tty_rows = req->tty_rows;
    h.argc = (uint32_t)argc;
    h.envc = (uint32_t)envc;
    h.len = (uint32_t)bytes;
    buf = pe_xmalloc(sizeof(h) + bytes);
    memcpy(buf, &h, sizeof(h));
    p = put_strv(buf + sizeof(h), req->argv);
    p = put_strv(p, req->envp);
    memcpy(p, req->workdir, strlen(req->workdir) + 1);
    *len = sizeof(h) + bytes;
    return buf;
}

/* Connected to dir's spawner, with our credentials asked for; -1 when the
 * sandbox has none (started by an older build) or it does not answer. */
static int connect_spawner(const char *dir)
{
    int one = 1;

    for (int old = 0; old < 2; old++) {
        cleanup_free char *path = sock_path(dir, old);
        struct sockaddr_un a;
        cleanup_fd int dfd = -1;
        int s, e;

        if (sock_addr(path, &a, &dfd) < 0)
            continue;
        s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (s < 0)
            return -1;
        if (setsockopt(s, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) == 0 &&
            connect(s, (struct sockaddr *)&a, sizeof(a)) == 0)
            return s;
        e = errno;
        close(s);
        /* Only a socket that is not there sends us to the old place. */
        if (e != ENOENT)
            return -1;
    }
    return -1;
}

int pe__spawn_via_init(const char *dir, const pe_exec_req *req, pe_spawn_res *res, pe_err *err)
{
    cleanup_free char *buf = NULL;
    int64_t deadline = pe_monotonic_ms() + ANSWER_MS;
    int fds[3], nfds = 0, s = -1;
    pid_t pid = 0;
    bool failed = false, started = false;
    size_t len = 0;

    memset(res, 0, sizeof(*res));
    res->pidfd = res->signal_pidfd = res->sync_fd = res->pty_master = res->init_conn = -1;
    res->relay[0] = res->relay[1] = res->relay[2] = -1;
    buf = build_request(req, &len);
    if (buf == NULL)
        return 1;
    /* The process's 0, 1, 2: where the request leaves one to the caller,
     * the caller's own (as a helper's process inherits it). */
    for (int i = 0; !req->tty && i < 3; i++) {
        fds[nfds] = req->stdio[i] >= 0 ? req->stdio[i] : i;
        if (fcntl(fds[nfds], F_GETFD) < 0)
            return 1;
        nfds++;
    }
    s = connect_spawner(dir);
    if (s < 0)
        return 1;
    if (pe__send_fds(s, buf, len, fds, nfds) < 0) {
        close(s);
        return 1;
    }
    while (!started) {
        struct pollfd p = {.fd = s, .events = POLLIN};
        int64_t left = deadline - pe_monotonic_ms();
        pe_sync_msg m;
        int fd = -1, r;

        r = left > 0 ? poll(&p, 1, (int)left) : 0;
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0) {
            if (!failed)
                pe_err_set(err, PE_ESYS, ETIMEDOUT,
                           "exec: the sandbox's init did not start the process in %d ms",
                           ANSWER_MS);
            failed = true;
            break;
        }
        r = r < 0 ? -1 : recv_msg(s, &m, &fd, &pid);
        if (r <= 0) {
            if (!failed)
                pe_err_set(err, PE_ESYS, r < 0 ? errno : EPIPE,
                           "exec: the sandbox's init went away (is the sandbox stopping?)");
            failed = true;
            break;
        }
        if (m.type == PE_SYNC_DECLINED && !failed && res->pidfd < 0) {
            close(s);
            return 1;
        } else if (m.type == PE_SYNC_PID && fd >= 0 && res->pidfd < 0 && pid > 0 && is_pidfd(fd)) {
            res->pidfd = pe_steal_fd(&fd);
            res->pid = pid;
        } else if (m.type == PE_SYNC_PTY && fd >= 0 && res->pty_master < 0 && req->tty) {
            res->pty_master = pe_steal_fd(&fd);
        } else if (m.type == PE_SYNC_ERROR || m.type == PE_SYNC_EXEC_FAILED) {
            if (!failed)
                failed = pe__exec_failure(&m, err);
        } else if (m.type == PE_SYNC_STARTED) {
            started = true;
        } else if (!failed) {
            failed = true;
            pe_err_set(err, PE_ESYS, EPROTO, "exec: the sandbox's init answered out of turn");
        }
        if (fd >= 0)
            close(fd);
    }
    if (!failed && res->pidfd < 0) {
        failed = true;
        pe_err_set(err, PE_ESYS, EPROTO, "exec: the sandbox's init named no process");
    }
    /* Readable once the process has ended, as pe__spawn_exec's: a second
     * pidfd, not init's word (which may never come: pe__spawn_reap). */
    if (!failed && (res->sync_fd = fcntl(res->pidfd, F_DUPFD_CLOEXEC, 0)) < 0) {
        failed = true;
        pe_err_sys(err, "exec: dup pidfd");
    }
    if (failed) {
        /* Whatever it is, it does not run on: init reaps it. */
        if (res->pidfd >= 0) {
            syscall(SYS_pidfd_send_signal, res->pidfd, SIGKILL, NULL, 0);
            close(res->pidfd);
        }
        if (res->pty_master >= 0)
            close(res->pty_master);
        res->pidfd = res->pty_master = -1;
        close(s);
        return -1;
    }
    /* EXIT {wait status} arrives here when init has reaped it. */
    res->init_conn = s;
    return 0;
}

int pe__spawn_reap(pid_t pid, int pidfd, int init_status_fd, int *status)
{
    int64_t deadline = -1; /* set once the process has ended */

    if (init_status_fd < 0) {
        while (waitpid(pid, status, 0) < 0)
            if (errno != EINTR)
                return -1;
        return 0;
    }
    for (;;) {
        struct pollfd p[2] = {{init_status_fd, POLLIN, 0}, {pidfd, POLLIN, 0}};
        int ms = deadline < 0 ? -1 : (int)(deadline - pe_monotonic_ms());
        pe_sync_msg m;
        int fd, r;

        r = poll(p, pidfd >= 0 && deadline < 0 ? 2 : 1, ms < 0 && deadline >= 0 ? 0 : ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            if (deadline >= 0 && pe_monotonic_ms() >= deadline)
                break;
            if (p[1].revents) /* ended: init reaps it at once */
                deadline = pe_monotonic_ms() + EXIT_MS;
            continue;
        }
        r = recv_msg(init_status_fd, &m, &fd, NULL);
        if (fd >= 0)
            close(fd);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (r == 0) {
            /* init is gone, and with it everything in its namespace: the
             * kernel killed the process, if it still ran. */
            *status = SIGKILL;
            return 0;
        }
        if (r > 0 && m.type == PE_SYNC_EXIT) {
            *status = m.value;
            return 0;
        }
        break; /* after STARTED, init sends EXIT and nothing else */
    }
    /* An init that does not say (it never fails to on its own: the
     * sandbox's root may have taken it over) leaves the status unknown. */
    pe_log_warn("process %d: its sandbox's init did not report how it ended", (int)pid);
    *status = 255 << 8;
    return 0;
}
