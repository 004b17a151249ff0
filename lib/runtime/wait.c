/* Waiting for a process started in a sandbox, from the caller's side.
 *
 * One poll loop watches the process's pidfd, a signalfd for the signals a
 * user sends to the command (SIGINT, SIGTERM, SIGHUP, SIGQUIT: forwarded
 * to the process; SIGWINCH: the caller's window size is copied to the
 * PTY), the PTY master and the caller's stdin when the process has a PTY,
 * and the timeout. The caller's terminal is put in raw mode only while a
 * PTY is relayed, and restored on every way out of this function. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "core/util.h"
#include "runtime/internal.h"

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void copy_winsize(int master)
{
    struct winsize ws;
    if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        ioctl(master, TIOCSWINSZ, &ws);
}

/* Move what the PTY has to stdout; returns 0 once the PTY is closed. */
static int pump_pty(int master)
{
    char buf[16384];
    for (;;) {
        ssize_t r = read(master, buf, sizeof(buf));
        if (r > 0) {
            if (write_all(STDOUT_FILENO, buf, (size_t)r) < 0)
                return 0;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return 1;
        return 0; /* EIO: every peer closed */
    }
}

static int status_code(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return 255;
}

int pe__wait_process(pe_spawn_res *sp, double timeout, pe_proc_result *res, pe_err *err)
{
    struct termios saved;
    bool raw = false, exited = false, stdin_open = sp->pty_master >= 0;
    sigset_t mask, oldmask;
    double deadline = timeout > 0 ? pe_monotonic_s() + timeout : 0;
    int sfd, status = 0, ret = 0;
    int sig_fd = sp->signal_pidfd >= 0 ? sp->signal_pidfd : sp->pidfd;

    res->exit_code = -1;
    res->timed_out = false;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGQUIT);
    sigaddset(&mask, SIGWINCH);
    sigprocmask(SIG_BLOCK, &mask, &oldmask);
    sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) {
        ret = pe_err_sys(err, "signalfd");
        goto out;
    }
    if (sp->pty_master >= 0) {
        fcntl(sp->pty_master, F_SETFL, fcntl(sp->pty_master, F_GETFL) | O_NONBLOCK);
        if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0) {
            struct termios t = saved;
            cfmakeraw(&t);
            raw = tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0;
            copy_winsize(sp->pty_master);
        }
    }

    while (!exited) {
        struct pollfd p[4];
        int n = 0, ms = -1, i_pid, i_sig, i_pty = -1, i_in = -1;

        p[n].fd = sp->pidfd, p[n].events = POLLIN, i_pid = n++;
        p[n].fd = sfd, p[n].events = POLLIN, i_sig = n++;
        if (sp->pty_master >= 0)
            p[n].fd = sp->pty_master, p[n].events = POLLIN, i_pty = n++;
        if (stdin_open)
            p[n].fd = STDIN_FILENO, p[n].events = POLLIN, i_in = n++;
        if (deadline > 0 && !res->timed_out) {
            double left = deadline - pe_monotonic_s();
            ms = left > 0 ? (int)(left * 1000) + 1 : 0;
        }
        if (poll(p, (nfds_t)n, ms) < 0) {
            if (errno == EINTR)
                continue;
            ret = pe_err_sys(err, "poll");
            goto out;
        }
        if (deadline > 0 && !res->timed_out && pe_monotonic_s() >= deadline) {
            res->timed_out = true;
            syscall(SYS_pidfd_send_signal, sig_fd, SIGKILL, NULL, 0);
        }
        if (p[i_sig].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
                if (si.ssi_signo == SIGWINCH && sp->pty_master >= 0)
                    copy_winsize(sp->pty_master);
                else if (si.ssi_signo != SIGWINCH)
                    syscall(SYS_pidfd_send_signal, sig_fd, (int)si.ssi_signo, NULL, 0);
            }
        }
        if (i_pty >= 0 && p[i_pty].revents) {
            if (!pump_pty(sp->pty_master)) {
                close(sp->pty_master);
                sp->pty_master = -1;
            }
        }
        if (i_in >= 0 && p[i_in].revents) {
            char buf[4096];
            ssize_t r = read(STDIN_FILENO, buf, sizeof(buf));
            if (r <= 0 || sp->pty_master < 0 || write_all(sp->pty_master, buf, (size_t)r) < 0)
                stdin_open = false;
        }
        if (p[i_pid].revents & POLLIN) {
            if (waitpid(sp->pid, &status, 0) < 0) {
                ret = pe_err_sys(err, "wait for process");
                goto out;
            }
            exited = true;
        }
    }
    if (sp->pty_master >= 0)
        pump_pty(sp->pty_master);
    res->exit_code = status_code(status);
out:
    if (raw)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    if (sfd >= 0)
        close(sfd);
    sigprocmask(SIG_SETMASK, &oldmask, NULL);
    if (sp->pty_master >= 0)
        close(sp->pty_master);
    if (sp->pidfd >= 0)
        close(sp->pidfd);
    if (sp->signal_pidfd >= 0)
        close(sp->signal_pidfd);
    if (sp->sync_fd >= 0)
        close(sp->sync_fd);
    sp->pty_master = sp->pidfd = sp->signal_pidfd = sp->sync_fd = -1;
    return ret;
}
