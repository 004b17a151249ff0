/* pocketenv-init: PID 1 of every sandbox.
 *
 * A pid namespace's first process must reap orphans (or zombies pile up)
 * and gets only the signals it installs handlers for, so a workload run
 * directly as PID 1 would ignore SIGTERM and leak zombies. This small
 * static program stands in for it:
 *
 *   pocketenv-init --sync FD [--uid U --gid G] [--tty] [--persist] [-- CMD...]
 *
 * One-shot mode runs CMD as its child, forwards signals to it, reports
 * STARTED / EXEC_FAILED / EXIT {wait status} on the sync socket and exits
 * with CMD's status when CMD ends (taking the rest of the namespace with
 * it). Persistent mode runs nothing itself: it reaps the orphans of what
 * `exec` starts (the processes themselves are their caller's children) and, on
 * SIGTERM/SIGINT/SIGHUP, passes SIGTERM to every process in the sandbox and exits once they are
 * gone.
 *
 * It is exec'd from a sealed memfd by the runtime after the sandbox is
 * fully set up (mounts, credentials, seccomp), so it can do nothing the
 * sandbox could not. Single-threaded; all waiting happens in sigwaitinfo. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/sync.h"

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

/* Reap every exited child; returns 1 once no child is left. Sets *main_status
 * when main_pid is among them. */
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
    }
}

int main(int argc, char **argv)
{
    static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};
    sigset_t mask, oldmask;
    long uid = -1, gid = -1;
    int tty = 0, persist = 0, stopping = 0;
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

    for (;;) {
        siginfo_t si;
        int sig = sigwaitinfo(&mask, &si);

        if (sig < 0)
            continue;
        if (sig == SIGCHLD) {
            int none_left = reap(main_pid, &main_status, &main_done);
            if (!persist && main_done) {
                send_msg(PE_SYNC_EXIT, 0, main_status);
                /* kill(-1) walks every process on the host, not just this
                 * namespace's (0.2 ms of CPU per run on a busy host): skip
                 * it when nothing is left. Either way our exit ends the pid
                 * namespace, and the kernel SIGKILLs whatever is in it. */
                if (!none_left)
                    kill(-1, SIGKILL);
                return status_to_code(main_status);
            }
            if (persist && stopping && none_left)
                return 0;
            continue;
        }
        if (!persist) {
            kill(main_pid, sig);
            continue;
        }
        if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) {
            stopping = 1;
            kill(-1, SIGTERM);
            if (reap(main_pid, &main_status, &main_done))
                return 0;
        }
    }
}
