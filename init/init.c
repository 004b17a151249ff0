/* pocketenv-init: PID 1 of every sandbox.
 *
 * A pid namespace's first process must reap orphans (or zombies pile up)
 * and gets only the signals it installs handlers for, so a workload run
 * directly as PID 1 would ignore SIGTERM and leak zombies. This small
 * static program stands in for it:
 *
 *   pocketenv-init --sync FD [--uid U --gid G] [--tty] [--persist]
 *                  [--spawn FD] [-- CMD...]
 *
 * One-shot mode runs CMD as its child, forwards signals to it, reports
 * STARTED / EXEC_FAILED / EXIT {wait status} on the sync socket and exits
 * with CMD's status when CMD ends (taking the rest of the namespace with
 * it). Persistent mode runs nothing itself: it reaps orphans, starts the
 * processes the runtime asks for on the spawn socket (--spawn, sync.h) and
 * reports their ends there, and, on SIGTERM/SIGINT/SIGHUP, stops taking
 * requests, passes SIGTERM to every process in the sandbox and exits once
 * they are gone.
 *
 * It is exec'd from a sealed memfd by the runtime after the sandbox is
 * fully set up (mounts, credentials, seccomp), so it can do nothing the
 * sandbox could not, and neither can what it starts. Single-threaded; all
 * waiting happens in sigwaitinfo (one-shot) or poll (persistent). */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "runtime/proc-common.h"
#include "runtime/sync.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

static int sync_fd = -1;

static void send_msg(int type, int errnum, int value)
{
    pe_sync_msg m;

    if (sync_fd < 0)
        return;
    memset(&m, 0, sizeof(m));
    m.type = type;
    m.errnum = errnum;
    m.value = value;
    if (send(sync_fd, &m, sizeof(m), MSG_NOSIGNAL) < 0 && errno == EPIPE) {
        close(sync_fd);
        sync_fd = -1;
    }
}

static long parse_num(const char *s)
{
    char *end = NULL;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 0) {
        fprintf(stderr, "pocketenv-init: bad number '%s'\n", s);
        exit(125);
    }
    return v;
}

static pid_t spawn_command(char **argv, const sigset_t *oldmask, int tty, long uid, long gid)
{
    int pfd[2];
    int child_errno = 0;
    ssize_t r;
    pid_t pid;

    if (pipe2(pfd, O_CLOEXEC) < 0)
        return -1;
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int e;
        close(pfd[0]);
        sigprocmask(SIG_SETMASK, oldmask, NULL);
        signal(SIGPIPE, SIG_DFL); /* ignored by init, not by its command */
        setsid();
        if (tty)
            ioctl(0, TIOCSCTTY, 0);
        if (gid >= 0 &&
            (setgroups(0, NULL) < 0 || setresgid((gid_t)gid, (gid_t)gid, (gid_t)gid) < 0))
            goto fail;
        if (uid >= 0 && setresuid((uid_t)uid, (uid_t)uid, (uid_t)uid) < 0)
            goto fail;
        execvp(argv[0], argv);
    fail:
        e = errno;
        if (write(pfd[1], &e, sizeof(e)) < 0)
            _exit(126);
        _exit(127);
    }
    close(pfd[1]);
    do
        r = read(pfd[0], &child_errno, sizeof(child_errno));
    while (r < 0 && errno == EINTR);
    close(pfd[0]);
    if (r == (ssize_t)sizeof(child_errno)) {
        int status;
        waitpid(pid, &status, 0);
        errno = child_errno;
        return -2;
    }
    return pid;
}

static int status_to_code(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return 255;
}

/* ---- the spawner (sync.h): processes started for the runtime ----
 *
 * What the runtime's exec helper does for a process (join the sandbox's
 * cgroups and namespaces, load the seccomp filter, drop capabilities),
 * init has done once for itself: a child of init inherits all of it. So
 * the child only switches ids, places its stdio and working directory and
 * execs (bench/README.md, "A spawner in init"). It runs in init's memory
 * on a stack of its own (CLONE_VM|CLONE_VFORK: init waits until it has
 * exec'd or died), and changes nothing there. */

struct kid {
    pid_t pid;
    int conn; /* where its EXIT goes */
};

/* No malloc in init: it would add musl's allocator to a binary copied at
 * every sandbox start. Static tables instead, in pages that cost nothing
 * until touched: the running processes init reports on (past KIDS_MAX at
 * once, requests are declined and take the runtime's other path), and the
 * argv and envp pointers of one request (a string is at least its NUL). */
#define KIDS_MAX 65536
static struct kid kids[KIDS_MAX];
static size_t n_kids;
static char *strv[PE_SPAWN_STRINGS_MAX + 2];

struct spawn {
    const pe_spawn_hdr *h;
    char **argv, **envp;
    const char *workdir;
    int conn;
    int fds[3];
};

static char child_stack[64 * 1024] __attribute__((aligned(16)));

/* One message on fd, with fd_out (>= 0) as SCM_RIGHTS and, if creds, our
 * pid and ids as SCM_CREDENTIALS (the kernel gives the receiver the pid
 * as its own namespace numbers it). */
static int send_on(int fd, int type, int errnum, int value, const char *text, int fd_out, int creds)
{
    union {
        char buf[CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(struct ucred))];
        struct cmsghdr align;
    } u;
    pe_sync_msg m;
    struct iovec iov = {&m, sizeof(m)};
    struct msghdr mh;
    struct cmsghdr *c;
    size_t clen = 0;

    memset(&m, 0, sizeof(m));
    m.type = type;
    m.errnum = errnum;
    m.value = value;
    if (text)
        snprintf(m.text, sizeof(m.text), "%s", text);
    memset(&mh, 0, sizeof(mh));
    memset(&u, 0, sizeof(u));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = u.buf;
    mh.msg_controllen = sizeof(u.buf);
    c = CMSG_FIRSTHDR(&mh);
    if (fd_out >= 0) {
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd_out, sizeof(int));
        clen += CMSG_SPACE(sizeof(int));
        c = CMSG_NXTHDR(&mh, c);
    }
    if (creds) {
        struct ucred uc = {getpid(), getuid(), getgid()};
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_CREDENTIALS;
        c->cmsg_len = CMSG_LEN(sizeof(uc));
        memcpy(CMSG_DATA(c), &uc, sizeof(uc));
        clen += CMSG_SPACE(sizeof(uc));
    }
    mh.msg_controllen = clen;
    if (clen == 0)
        mh.msg_control = NULL;
    return sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 ? -1 : 0;
}

/* The runtime words the error (what, then errnum's text). */
_Noreturn static void child_fail(int conn, int errnum, const char *what)
{
    send_on(conn, PE_SYNC_ERROR, errnum, 0, what, -1, 0);
    _exit(126);
}

/* chdir, making the directory (as root of the sandbox) if it is missing,
 * as a sandbox's start does. */
static int enter_workdir(const char *dir)
{
    char buf[4096];
    size_t len = strlen(dir);

    if (chdir(dir) == 0)
        return 0;
    if (errno != ENOENT || len >= sizeof(buf))
        return -1;
    memcpy(buf, dir, len + 1);
    for (size_t i = 1; i <= len; i++) {
        char saved = buf[i];
        if (saved != '/' && saved != '\0')
            continue;
        buf[i] = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return -1;
        buf[i] = saved;
    }
    return chdir(dir);
}

static int spawn_child(void *arg)
{
    const struct spawn *sp = arg;
    const pe_spawn_hdr *h = sp->h;
    struct rlimit rl = {h->nofile_soft, h->nofile_hard};
    sigset_t none;
    int pidfd;

    /* Init ignores SIGPIPE; the command starts with it at its default. The
     * rest of init's signals are blocked, not handled: unblocked below. */
    signal(SIGPIPE, SIG_DFL);
    pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    if (pidfd < 0)
        child_fail(sp->conn, errno, "pidfd_open");
    if (send_on(sp->conn, PE_SYNC_PID, 0, (int)getpid(), NULL, pidfd, 1) < 0)
        _exit(126);
    close(pidfd);
    setsid();
    if (h->flags & PE_SPAWN_TTY) {
        struct winsize ws = {h->tty_rows, h->tty_cols, 0, 0};
        struct termios t;
        int master = pe__pty_open_master(), peer;

        if (master < 0)
            child_fail(sp->conn, -master, "open /dev/ptmx");
        peer = pe__pty_open_peer(master);
        if (peer < 0)
            child_fail(sp->conn, -peer, "open pty peer");
        if (ws.ws_row > 0 && ws.ws_col > 0 && ioctl(master, TIOCSWINSZ, &ws) < 0)
            child_fail(sp->conn, errno, "set window size");
        if (tcgetattr(peer, &t) == 0) {
            t.c_iflag |= IUTF8;
            tcsetattr(peer, TCSANOW, &t);
        }
        if (send_on(sp->conn, PE_SYNC_PTY, 0, 0, NULL, master, 0) < 0)
            child_fail(sp->conn, errno, "send pty");
        close(master);
        if (ioctl(peer, TIOCSCTTY, 0) < 0)
            child_fail(sp->conn, errno, "set controlling terminal");
        for (int i = 0; i < 3; i++)
            if (dup2(peer, i) < 0)
                child_fail(sp->conn, errno, "dup2 pty");
    } else {
        for (int i = 0; i < 3; i++)
            if (dup2(sp->fds[i], i) < 0)
                child_fail(sp->conn, errno, "dup2 stdio");
    }
    if (enter_workdir(sp->workdir) < 0)
        child_fail(sp->conn, errno, "working directory");
    if (h->gid >= 0 &&
        (setgroups(0, NULL) < 0 || setresgid((gid_t)h->gid, (gid_t)h->gid, (gid_t)h->gid) < 0))
        child_fail(sp->conn, errno, "setgid");
    if (h->uid >= 0 && setresuid((uid_t)h->uid, (uid_t)h->uid, (uid_t)h->uid) < 0)
        child_fail(sp->conn, errno, "setuid");
    if (h->nofile_hard > 0 && setrlimit(RLIMIT_NOFILE, &rl) < 0)
        child_fail(sp->conn, errno, "open-files limit");
    if (syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
        child_fail(sp->conn, errno, "close_range");
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    pe__exec_path(sp->argv, sp->envp);
    send_on(sp->conn, PE_SYNC_EXEC_FAILED, errno, 0, sp->argv[0], -1, 0);
    _exit(127);
}

/* Point out[0..n) at the next n strings of *p (before end); 0 if short. */
static int take_strings(char **p, const char *end, char **out, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        char *z = memchr(*p, '\0', (size_t)(end - *p));
        if (z == NULL)
            return 0;
        out[i] = *p;
        *p = z + 1;
    }
    out[n] = NULL;
    return 1;
}

static void kid_add(pid_t pid, int conn)
{
    kids[n_kids].pid = pid;
    kids[n_kids].conn = conn;
    n_kids++;
}

/* pid has ended with status: tell whoever asked for it, if anyone. */
static void kid_done(pid_t pid, int status)
{
    for (size_t i = 0; i < n_kids; i++) {
        if (kids[i].pid != pid)
            continue;
        send_on(kids[i].conn, PE_SYNC_EXIT, 0, status, NULL, -1, 0);
        close(kids[i].conn);
        kids[i] = kids[--n_kids];
        return;
    }
}

/* Reap every exited child; returns 1 once no child is left. Sets
 * *main_status when main_pid (one-shot) is among them; tells whoever asked
 * for a spawned one how it ended (kid_done). */
static int reap(pid_t main_pid, int *main_status, int *main_done)
{
    for (;;) {
        int status;
        pid_t p = waitpid(-1, &status, WNOHANG);
        if (p == 0)
            return 0;
        if (p < 0)
            return errno == ECHILD;
        if (p == main_pid) {
            *main_status = status;
            *main_done = 1;
        }
        kid_done(p, status);
    }
}

/* One connection to the spawn socket: read its request, start the
 * process. The runtime sends the request as soon as it has connected; a
 * stalled peer costs at most the receive timeout. */
static void serve_one(int lfd)
{
    static char buf[sizeof(pe_spawn_hdr) + PE_SPAWN_STRINGS_MAX];
    union {
        char b[CMSG_SPACE(3 * sizeof(int))];
        struct cmsghdr align;
    } u;
    struct timeval tv = {2, 0};
    struct iovec iov = {buf, sizeof(buf)};
    struct msghdr mh;
    struct cmsghdr *c;
    struct spawn sp;
    struct rlimit ours;
    const pe_spawn_hdr *h = (const pe_spawn_hdr *)buf;
    char **argv = strv, **envp, *p, *end;
    int conn, nfds = 0;
    ssize_t n;
    pid_t pid;

    conn = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (conn < 0)
        return;
    setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = u.b;
    mh.msg_controllen = sizeof(u.b);
    sp.fds[0] = sp.fds[1] = sp.fds[2] = -1;
    n = recvmsg(conn, &mh, MSG_CMSG_CLOEXEC);
    for (c = n >= 0 ? CMSG_FIRSTHDR(&mh) : NULL; c; c = CMSG_NXTHDR(&mh, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
            for (size_t k = 0; k < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); k++) {
                int fd;
                memcpy(&fd, CMSG_DATA(c) + k * sizeof(int), sizeof(int));
                if (nfds < 3)
                    sp.fds[nfds++] = fd;
                else
                    close(fd);
            }
    /* Anything we cannot do exactly as the exec helper would is declined:
     * the runtime then takes that path. */
    if (n < (ssize_t)sizeof(*h) || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) ||
        h->version != PE_SPAWN_VERSION || h->len != (size_t)n - sizeof(*h) || h->argc == 0 ||
        h->argc > h->len || h->envc > h->len - h->argc || n_kids == KIDS_MAX ||
        ((h->flags & PE_SPAWN_TTY) ? nfds != 0 : nfds != 3) ||
        getrlimit(RLIMIT_NOFILE, &ours) < 0 || h->nofile_hard > ours.rlim_max ||
        h->nofile_soft > h->nofile_hard) {
        send_on(conn, PE_SYNC_DECLINED, 0, 0, NULL, -1, 0);
        goto out;
    }
    envp = strv + h->argc + 1;
    p = buf + sizeof(*h);
    end = buf + n;
    if (!take_strings(&p, end, argv, h->argc) || !take_strings(&p, end, envp, h->envc) ||
        memchr(p, '\0', (size_t)(end - p)) == NULL) {
        send_on(conn, PE_SYNC_DECLINED, 0, 0, NULL, -1, 0);
        goto out;
    }
    sp.h = h;
    sp.argv = argv;
    sp.envp = envp;
    sp.workdir = p;
    sp.conn = conn;
    pid = clone(spawn_child, child_stack + sizeof(child_stack), CLONE_VM | CLONE_VFORK | SIGCHLD,
                &sp);
    if (pid < 0) {
        send_on(conn, PE_SYNC_ERROR, errno, 0, "start the process", -1, 0);
        goto out;
    }
    /* It has exec'd or died: whatever it sent is queued before this. */
    send_on(conn, PE_SYNC_STARTED, 0, (int)pid, NULL, -1, 0);
    kid_add(pid, conn);
    conn = -1;
out:
    for (int i = 0; i < nfds; i++)
        close(sp.fds[i]);
    if (conn >= 0)
        close(conn);
}

/* Persistent mode: reap, spawn on request, stop on SIGTERM/INT/HUP. */
static int persist_loop(const sigset_t *mask, int lfd)
{
    int sfd = signalfd(-1, mask, SFD_CLOEXEC | SFD_NONBLOCK);
    int stopping = 0;

    if (sfd < 0) {
        fprintf(stderr, "pocketenv-init: signalfd: %s\n", strerror(errno));
        return 125;
    }
    for (;;) {
        struct pollfd pf[2] = {{sfd, POLLIN, 0}, {lfd, POLLIN, 0}};
        struct signalfd_siginfo si;

        if (poll(pf, lfd >= 0 ? 2 : 1, -1) < 0)
            continue;
        while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
            int sig = (int)si.ssi_signo;
            if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) {
                if (!stopping) {
                    stopping = 1;
                    if (lfd >= 0) /* no new process from here on */
                        close(lfd);
                    lfd = -1;
                    kill(-1, SIGTERM);
                }
            }
        }
        /* SIGCHLD may have been merged with another: always reap. */
        if (reap(-1, NULL, NULL) && stopping)
            return 0;
        if (lfd >= 0 && (pf[1].revents & POLLIN))
            serve_one(lfd);
    }
}

int main(int argc, char **argv)
{
    static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};
    sigset_t mask, oldmask;
    long uid = -1, gid = -1;
    int tty = 0, persist = 0, spawn_fd = -1;
    int main_status = 0, main_done = 0;
    pid_t main_pid = -1;
    int i;

    /* Exec'd from a memfd, our comm would be the fd number. */
    prctl(PR_SET_NAME, "pocketenv-init", 0, 0, 0);
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--sync") == 0 && i + 1 < argc)
            sync_fd = (int)parse_num(argv[++i]);
        else if (strcmp(argv[i], "--uid") == 0 && i + 1 < argc)
            uid = parse_num(argv[++i]);
        else if (strcmp(argv[i], "--gid") == 0 && i + 1 < argc)
            gid = parse_num(argv[++i]);
        else if (strcmp(argv[i], "--spawn") == 0 && i + 1 < argc)
            spawn_fd = (int)parse_num(argv[++i]);
        else if (strcmp(argv[i], "--tty") == 0)
            tty = 1;
        else if (strcmp(argv[i], "--persist") == 0)
            persist = 1;
        else if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        } else {
            fprintf(stderr, "pocketenv-init: unknown argument '%s'\n", argv[i]);
            return 125;
        }
    }
    /* The sync socket is ours alone: never inherited by what we run. */
    if (sync_fd >= 0)
        fcntl(sync_fd, F_SETFD, FD_CLOEXEC);
    if (spawn_fd >= 0)
        fcntl(spawn_fd, F_SETFD, FD_CLOEXEC);
    if (!persist && i >= argc) {
        fprintf(stderr, "pocketenv-init: no command\n");
        return 125;
    }

    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    for (size_t k = 0; k < sizeof(forwarded) / sizeof(forwarded[0]); k++)
        sigaddset(&mask, forwarded[k]);
    sigprocmask(SIG_BLOCK, &mask, &oldmask);
    signal(SIGPIPE, SIG_IGN);

    if (!persist) {
        main_pid = spawn_command(argv + i, &oldmask, tty, uid, gid);
        if (main_pid < 0) {
            int e = errno;
            send_msg(PE_SYNC_EXEC_FAILED, e, 0);
            if (sync_fd < 0)
                fprintf(stderr, "pocketenv: %s: %s\n", argv[i], strerror(e));
            return main_pid == -2 && e == ENOENT ? 127 : 126;
        }
        /* The command owns the terminal now; init must not hold it open,
         * or the PTY would never report hang-up when the command ends. */
        if (tty) {
            int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
            if (devnull >= 0) {
                dup2(devnull, 0);
                dup2(devnull, 1);
                dup2(devnull, 2);
                close(devnull);
            }
        }
    }
    send_msg(PE_SYNC_STARTED, 0, 0);
    if (persist)
        return persist_loop(&mask, spawn_fd);

    /* One-shot mode: the command's signals go to it; its end is ours. */
    for (;;) {
        siginfo_t si;
        int sig = sigwaitinfo(&mask, &si);

        if (sig < 0)
            continue;
        if (sig != SIGCHLD) {
            kill(main_pid, sig);
            continue;
        }
        int none_left = reap(main_pid, &main_status, &main_done);
        if (main_done) {
            send_msg(PE_SYNC_EXIT, 0, main_status);
            /* kill(-1) walks every process on the host, not just this
             * namespace's (0.2 ms of CPU per run on a busy host): skip
             * it when nothing is left. Either way our exit ends the pid
             * namespace, and the kernel SIGKILLs whatever is in it. */
            if (!none_left)
                kill(-1, SIGKILL);
            return status_to_code(main_status);
        }
    }
}
