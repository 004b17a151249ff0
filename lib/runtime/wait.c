/* Waiting for a process started in a sandbox, from the caller's side.
 *
 * One poll loop watches the process's pidfd, a signalfd for the signals a
 * user sends to the command (SIGINT, SIGTERM, SIGHUP, SIGQUIT: forwarded
 * to the process; SIGWINCH: the caller's window size is copied to the
 * PTY), the PTY master and the caller's stdin when the process has a PTY,
 * and the timeout. The caller's terminal is put in raw mode only while a
 * PTY is relayed, and restored on every way out of this function.
 *
 * Without a PTY, the caller's terminals reach the process only through
 * pipes (pe__stdio_guard) that the same loop copies: output as it comes,
 * input while the caller is in the foreground of its terminal (a
 * background job reading it would be stopped by SIGTTIN; SIGCONT, which
 * fg sends, makes the loop look again). */
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

#include "core/fs.h"
#include "core/util.h"
#include "runtime/internal.h"

int pe__stdio_guard(int stdio[3], int relay[3], bool own[3], pe_err *err)
{
    for (int i = 0; i < 3; i++) {
        int p[2];

        if (relay != NULL)
            relay[i] = -1;
        own[i] = false;
        if (stdio[i] >= 0 || !isatty(i))
            continue;
        if (relay == NULL) {
            stdio[i] = open("/dev/null", O_RDWR | O_CLOEXEC);
            if (stdio[i] < 0)
                goto fail;
            own[i] = true;
            continue;
        }
        if (pipe2(p, O_CLOEXEC) < 0)
            goto fail;
        /* The process reads fd 0 and writes 1 and 2. */
        stdio[i] = p[i == 0 ? 0 : 1];
        relay[i] = p[i == 0 ? 1 : 0];
        own[i] = true;
        fcntl(relay[i], F_SETFL, O_NONBLOCK);
    }
    return 0;
fail:
    pe_err_sys(err, "replace the caller's terminal by a pipe");
    pe__stdio_guard_close(stdio, relay, own);
    return -1;
}

void pe__stdio_guard_close(int stdio[3], int relay[3], bool own[3])
{
    for (int i = 0; i < 3; i++) {
        if (own[i] && stdio[i] >= 0)
            close(stdio[i]);
        if (own[i])
            stdio[i] = -1;
        own[i] = false;
        if (relay != NULL && relay[i] >= 0)
            close(relay[i]);
        if (relay != NULL)
            relay[i] = -1;
    }
}

/* May we read our stdin now? Not when it is our controlling terminal and
 * we are a background job of it. */
static bool stdin_foreground(void)
{
    pid_t fg = tcgetpgrp(STDIN_FILENO);
    return fg < 0 || fg == getpgrp();
}

/* Reads per pump: a writer faster than the caller's output cannot keep
 * one pump going forever. */
#define PUMP_MAX_READS 64

/* Copy what a relay pipe holds to fd `to`; 0 once it is closed (or `to`
 * fails: the process then gets EPIPE). */
static int pump_out(int from, int to)
{
    char buf[16384];
    for (int n = 0; n < PUMP_MAX_READS; n++) {
        ssize_t r = read(from, buf, sizeof(buf));
        if (r > 0) {
            if (pe_fs_write_all(to, buf, (size_t)r) < 0)
                return 0;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        return r < 0 && errno == EAGAIN;
    }
    return 1;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
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
    for (int n = 0; n < PUMP_MAX_READS; n++) {
        ssize_t r = read(master, buf, sizeof(buf));
        if (r > 0) {
            if (pe_fs_write_all(STDOUT_FILENO, buf, (size_t)r) < 0)
                return 0;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return 1;
        return 0; /* EIO: every peer closed */
    }
    return 1;
}

static int status_code(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return 255;
}

/* One wait: what is polled and where the caller's input goes. */
struct waiter {
    pe_spawn_res *sp;
    int sfd;       /* signalfd */
    int sig_fd;    /* where forwarded signals go */
    int in_to;     /* PTY master or relay[0]: where stdin goes; -1 once closed */
    bool stdin_ok; /* stdin not at EOF */
    bool guarded;  /* stdin is a terminal relayed through a pipe */
    bool paused;   /* a background job of that terminal: stdin not read */
    char in_buf[4096];
    size_t in_len; /* read from stdin, not yet written to in_to */
};

static void stop_input(struct waiter *w)
{
    w->stdin_ok = false;
    w->in_len = 0;
    /* A relay pipe closes (EOF for the process); a PTY master stays. */
    if (w->in_to >= 0 && w->in_to == w->sp->relay[0])
        close_fd(&w->sp->relay[0]);
    w->in_to = -1;
}

static void on_signals(struct waiter *w)
{
    struct signalfd_siginfo si;

    while (read(w->sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGWINCH) {
            if (w->sp->pty_master >= 0)
                copy_winsize(w->sp->pty_master);
        } else if (si.ssi_signo == SIGCONT) {
            if (w->guarded)
                w->paused = !stdin_foreground();
        } else {
            syscall(SYS_pidfd_send_signal, w->sig_fd, (int)si.ssi_signo, NULL, 0);
        }
    }
}

/* stdin readable: take what it has; in_to writable: pass it on. */
static void on_input(struct waiter *w, bool readable, bool writable)
{
    ssize_t r;

    if (readable && w->in_len == 0) {
        r = read(STDIN_FILENO, w->in_buf, sizeof(w->in_buf));
        if (r <= 0 && !(r < 0 && (errno == EINTR || errno == EAGAIN))) {
            stop_input(w);
            return;
        }
        w->in_len = r > 0 ? (size_t)r : 0;
        writable = true;
    }
    if (writable && w->in_len > 0 && w->in_to >= 0) {
        r = write(w->in_to, w->in_buf, w->in_len);
        if (r < 0 && errno != EAGAIN && errno != EINTR) {
            stop_input(w); /* the process closed its input */
            return;
        }
        if (r > 0) {
            memmove(w->in_buf, w->in_buf + r, w->in_len - (size_t)r);
            w->in_len -= (size_t)r;
        }
    }
}

static void on_output(pe_spawn_res *sp, int i, short revents)
{
    if (revents == 0)
        return;
    if (i == 0) {
        if (!pump_pty(sp->pty_master))
            close_fd(&sp->pty_master);
    } else if (!pump_out(sp->relay[i], i)) {
        close_fd(&sp->relay[i]);
    }
}

/* Poll once and handle what is ready; 1 when the process has exited. */
static int wait_step(struct waiter *w, double deadline, pe_proc_result *res, int *status,
                     pe_err *err)
{
    pe_spawn_res *sp = w->sp;
    struct pollfd p[6];
    int n = 0, ms = -1, i_in = -1, i_out[3] = {-1, -1, -1};

    p[n++] = (struct pollfd){.fd = sp->pidfd, .events = POLLIN};
    p[n++] = (struct pollfd){.fd = w->sfd, .events = POLLIN};
    for (int i = 0; i < 3; i++) {
        int fd = i == 0 ? sp->pty_master : sp->relay[i];
        if (fd >= 0)
            i_out[i] = n, p[n++] = (struct pollfd){.fd = fd, .events = POLLIN};
    }
    if (w->in_len > 0 && w->in_to >= 0)
        i_in = n, p[n++] = (struct pollfd){.fd = w->in_to, .events = POLLOUT};
    else if (w->stdin_ok && w->in_to >= 0 && !w->paused)
        i_in = n, p[n++] = (struct pollfd){.fd = STDIN_FILENO, .events = POLLIN};
    if (deadline > 0 && !res->timed_out) {
        double left = deadline - pe_monotonic_s();
        ms = left > 0 ? (int)(left * 1000) + 1 : 0;
    }
    if (poll(p, (nfds_t)n, ms) < 0)
        return errno == EINTR ? 0 : pe_err_sys(err, "poll");
    if (deadline > 0 && !res->timed_out && pe_monotonic_s() >= deadline) {
        res->timed_out = true;
        syscall(SYS_pidfd_send_signal, w->sig_fd, SIGKILL, NULL, 0);
    }
    if (p[1].revents & POLLIN)
        on_signals(w);
    for (int i = 0; i < 3; i++)
        if (i_out[i] >= 0)
            on_output(sp, i, p[i_out[i]].revents);
    if (i_in >= 0 && p[i_in].revents) {
        bool to_stdin = p[i_in].fd == STDIN_FILENO;
        on_input(w, to_stdin, !to_stdin);
    }
    if (p[0].revents & POLLIN) {
        if (pe__spawn_reap(sp->pid, sp->pidfd, sp->init_conn, status) < 0)
            return pe_err_sys(err, "wait for process");
        return 1;
    }
    return 0;
}

int pe__wait_process(pe_spawn_res *sp, double timeout, pe_proc_result *res, pe_err *err)
{
    struct termios saved;
    struct waiter w = {.sp = sp, .sfd = -1, .in_to = -1};
    bool raw = false;
    sigset_t mask, oldmask;
    double deadline = timeout > 0 ? pe_monotonic_s() + timeout : 0;
    int status = 0, ret = 0, r = 0;
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGWINCH, SIGCONT};

    w.sig_fd = sp->signal_pidfd >= 0 ? sp->signal_pidfd : sp->pidfd;
    w.in_to = sp->pty_master >= 0 ? sp->pty_master : sp->relay[0];
    w.stdin_ok = w.in_to >= 0;
    w.guarded = sp->relay[0] >= 0;
    w.paused = w.guarded && !stdin_foreground();
    res->exit_code = -1;
    res->timed_out = false;
    sigemptyset(&mask);
    for (size_t i = 0; i < PE_ARRAY_LEN(sigs); i++)
        sigaddset(&mask, sigs[i]);
    sigprocmask(SIG_BLOCK, &mask, &oldmask);
    w.sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (w.sfd < 0) {
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
    while (r == 0)
        r = wait_step(&w, deadline, res, &status, err);
    if (r < 0) {
        ret = -1;
        goto out;
    }
    /* What the process wrote before it ended (bounded: a process left
     * behind by an exec may keep writing). */
    if (sp->pty_master >= 0)
        pump_pty(sp->pty_master);
    for (int i = 1; i < 3; i++)
        if (sp->relay[i] >= 0)
            pump_out(sp->relay[i], i);
    res->exit_code = status_code(status);
out:
    if (raw)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    if (w.sfd >= 0)
        close(w.sfd);
    sigprocmask(SIG_SETMASK, &oldmask, NULL);
    close_fd(&sp->pty_master);
    close_fd(&sp->pidfd);
    close_fd(&sp->signal_pidfd);
    close_fd(&sp->sync_fd);
    close_fd(&sp->init_conn);
    for (int i = 0; i < 3; i++)
        close_fd(&sp->relay[i]);
    return ret;
}
