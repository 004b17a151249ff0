/* A process in a sandbox watched by the loop (daemon/sandbox-proc.h): the
 * start on a worker, the output, stdin and exit plumbing that the
 * streaming exec and envd's process service share. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "sandbox-env.h"
#include "sandbox-proc.h"

#define READ_CHUNK (64 * 1024)
#define LAST_READS                                                                                 \
    1024 /* after the exit: a grandchild holding the pipe open does not hold it back */

struct pe_sbproc {
    pe_daemon *d;
    char *sandbox_id;
    const pe_sbproc_callbacks *cb;
    void *ud;
    bool tty, starting, have_proc, reaped, orphan;
    pe_proc proc;
    /* A sandbox on a remote provider: the adapter's process (lib/sandbox),
     * its fds copied into proc's so the plumbing below is the same (its
     * status fd as the pidfd). */
    bool remote;
    pe_provider_proc rproc;
    pe_ev_io *out_io, *err_io, *in_io, *pid_io;
    bool out_eof, err_eof, reading;
    char *in; /* stdin not yet written */
    size_t in_len;
    bool in_close; /* close stdin once what is queued is written */
    int64_t oom_kills, oom_limit;
};

/* ---- starting (worker) ---- */

struct start {
    pe_sbproc *p;
    pe_sbproc_spec spec;
    pe_proc proc;
    bool remote;
    pe_provider_proc rproc;
    int64_t oom_kills, oom_limit;
    bool ok;
    pe_err err;
};

static void free_strv(char **v)
{
    for (char **s = v; s && *s; s++)
        free(*s);
    free(v);
}

static void spec_free(pe_sbproc_spec *s)
{
    free_strv(s->argv);
    free_strv(s->remote_argv);
    free_strv(s->env);
    free(s->workdir);
}

/* A remote sandbox's process, through its provider (the sandbox's
 * variables and secrets, then the caller's). false: the sandbox is local. */
static bool start_remote(struct start *j, pe_store *s)
{
    pe_provider_exec_opts o = {.argv = j->spec.remote_argv ? j->spec.remote_argv : j->spec.argv,
                               .env = j->spec.env,
                               .workdir = j->spec.workdir,
                               .tty = j->spec.tty,
                               .cols = (unsigned short)j->spec.cols,
                               .rows = (unsigned short)j->spec.rows};
    pe_daemon *d = j->p->d;
    pe_store_sandbox sb;
    pe_err e;

    pe_err_clear(&e);
    if (pe_store_sandbox_get(s, j->p->sandbox_id, &sb, &e) < 0)
        return false; /* the local start says what is wrong */
    if (!pe_sandbox_is_remote(&sb)) {
        pe_store_sandbox_clear(&sb);
        return false;
    }
    /* stdin where the provider takes it; else the process reads EOF */
    o.stdin_pipe = !o.tty && (pe_sandbox_caps(&d->sx, &sb) & PE_CAP_STDIN);
    j->remote = true;
    if (!o.tty && !o.stdin_pipe && j->spec.stdin_required)
        pe_err_set(&j->err, PE_ENOTCAP, 0, "not supported by %s: %s", sb.backend,
                   pe_provider_cap_name(PE_CAP_STDIN));
    else
        j->ok = pe_sandbox_exec_start(&d->sx, s, &sb, &o, &j->rproc, &j->err) == 0;
    pe_store_sandbox_clear(&sb);
    return true;
}

static void start_work(void *ud)
{
    struct start *j = ud;
    pe_daemon *d = j->p->d;
    pe_proc_opts opts = {.argv = j->spec.argv,
                         .workdir = j->spec.workdir,
                         .tty = j->spec.tty,
                         .tty_cols = (unsigned short)j->spec.cols,
                         .tty_rows = (unsigned short)j->spec.rows,
                         .capture = !j->spec.tty};
    char **senv = NULL, **all;
    size_t ns = 0, ne = 0;
    pe_store *s = pe_daemon_store(d, &j->err);

    j->oom_kills = -1;
    if (s == NULL || start_remote(j, s))
        return;
    if (pe_daemon_sandbox_env(d, s, j->p->sandbox_id, &senv, &j->err) < 0)
        return;
    /* The sandbox's variables and secrets, then the caller's (which win). */
    while (senv[ns])
        ns++;
    while (j->spec.env && j->spec.env[ne])
        ne++;
    all = pe_xcalloc(ns + ne + 1, sizeof(*all));
    memcpy(all, senv, ns * sizeof(*all));
    if (ne)
        memcpy(all + ns, j->spec.env, ne * sizeof(*all));
    opts.env = all;
    j->ok = pe_runtime_exec_start(&d->rt, j->p->sandbox_id, &opts, &j->proc, &j->err) == 0;
    if (j->ok) {
        j->oom_kills = j->proc.oom_kills;
        j->oom_limit = j->proc.oom_limit;
    }
    free(all); /* the strings are senv's and the spec's */
    pe_daemon_env_free(senv);
}

/* ---- output ---- */

static void watch_output(pe_sbproc *p)
{
    if (p->out_io)
        pe_ev_io_modify(p->out_io, p->reading && !p->out_eof ? EPOLLIN : 0, NULL);
    if (p->err_io)
        pe_ev_io_modify(p->err_io, p->reading && !p->err_eof ? EPOLLIN : 0, NULL);
}

/* Read one chunk of fd for the owner. false at end of file (EIO on a PTY
 * whose every slave is closed). */
static bool pump(pe_sbproc *p, int fd, int which)
{
    unsigned char buf[READ_CHUNK];
    ssize_t n;

    do
        n = read(fd, buf, sizeof(buf));
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EAGAIN)
        return true;
    if (n <= 0)
        return false;
    p->cb->output(p, which, buf, (size_t)n, p->ud);
    return true;
}

static void on_output(pe_ev_io *io, int fd, uint32_t events, void *ud)
{
    pe_sbproc *p = ud;
    bool is_err = io == p->err_io;

    (void)events;
    if (!pump(p, fd, is_err ? 2 : 1)) {
        pe_ev_io_modify(io, 0, NULL);
        *(is_err ? &p->err_eof : &p->out_eof) = true;
    }
    watch_output(p);
}

/* ---- input ---- */

static int stdin_fd(const pe_sbproc *p)
{
    return p->tty ? p->proc.pty_fd : p->proc.stdin_fd;
}

static void flush_input(pe_sbproc *p)
{
    size_t wrote = 0;
    int fd = p->have_proc && !p->reaped ? stdin_fd(p) : -1;

    while (p->in_len > wrote && fd >= 0) {
        ssize_t n = write(fd, p->in + wrote, p->in_len - wrote);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN)
            p->in_len = wrote = 0; /* it closed its stdin: the rest is dropped */
        if (n <= 0)
            break;
        wrote += (size_t)n;
    }
    if (wrote) {
        memmove(p->in, p->in + wrote, p->in_len - wrote);
        p->in_len -= wrote;
        if (p->cb->wrote)
            p->cb->wrote(p, wrote, p->ud);
    }
    if (p->have_proc && p->in_len == 0 && p->in_close && !p->tty && p->proc.stdin_fd >= 0) {
        pe_ev_io_stop(p->in_io);
        p->in_io = NULL;
        close(p->proc.stdin_fd); /* the process reads end of file */
        p->proc.stdin_fd = -1;
        p->rproc.stdin_fd = -1; /* the same fd, if remote */
        return;
    }
    if (p->in_io)
        pe_ev_io_modify(p->in_io, p->in_len ? EPOLLOUT : 0, NULL);
}

static void on_input_ready(pe_ev_io *io, int fd, uint32_t events, void *ud)
{
    (void)io, (void)fd, (void)events;
    flush_input(ud);
}

/* ---- the end ---- */

static void on_exit_ready(pe_ev_io *io, int fd, uint32_t events, void *ud)
{
    pe_sbproc *p = ud;
    int code = -1, out_fd = p->tty ? p->proc.pty_fd : p->proc.stdout_fd;
    pe_err err;
    int r;

    (void)io, (void)fd, (void)events;
    /* Its last words first: what is left in the pipes comes before the exit. */
    for (int i = 0; i < LAST_READS && p->out_io && !p->out_eof && pump(p, out_fd, 1); i++)
        ;
    for (int i = 0; i < LAST_READS && p->err_io && !p->err_eof && pump(p, p->proc.stderr_fd, 2);
         i++)
        ;
    pe_ev_io_stop(p->pid_io);
    p->pid_io = NULL;
    r = p->remote ? pe_provider_proc_wait(&p->rproc, &code, &err)
                  : pe_proc_wait(&p->proc, &code, &err);
    if (r < 0)
        pe_log_warn("process in %s: %s", p->sandbox_id, err.msg);
    p->reaped = true;
    p->cb->exited(p, code, p->ud);
}

/* ---- the start's end (loop) ---- */

static pe_ev_io *watch(pe_sbproc *p, int fd, uint32_t events, pe_ev_io_cb cb, pe_err *err)
{
    return fd >= 0 ? pe_ev_io_start(p->d->loop, fd, events, cb, p, err) : NULL;
}

static void start_done(void *ud)
{
    struct start *j = ud;
    pe_sbproc *p = j->p;
    pe_daemon *d = p->d;
    pe_err err;

    p->starting = false;
    p->oom_kills = j->oom_kills;
    p->oom_limit = j->oom_limit;
    if (j->ok && j->remote) {
        p->remote = true;
        p->rproc = j->rproc;
        memset(&p->proc, 0, sizeof(p->proc));
        p->proc.stdin_fd = p->rproc.stdin_fd;
        p->proc.stdout_fd = p->rproc.stdout_fd;
        p->proc.stderr_fd = p->rproc.stderr_fd;
        p->proc.pty_fd = p->rproc.pty_fd;
        p->proc.pidfd = p->rproc.status_fd;
        p->proc.signal_pidfd = -1;
    } else if (j->ok) {
        p->proc = j->proc;
    }
    if (j->ok) {
        p->have_proc = true;
        /* The loop never blocks on the process's pipes. */
        int fds[] = {p->proc.stdin_fd, p->proc.stdout_fd, p->proc.stderr_fd, p->proc.pty_fd};
        for (size_t i = 0; i < PE_ARRAY_LEN(fds); i++)
            if (fds[i] >= 0)
                fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
        pe_err_clear(&err);
        if (p->tty) {
            p->out_io = watch(p, p->proc.pty_fd, p->reading ? EPOLLIN : 0, on_output, &err);
            p->in_io = watch(p, p->proc.pty_fd, 0, on_input_ready, &err);
        } else {
            p->out_io = watch(p, p->proc.stdout_fd, p->reading ? EPOLLIN : 0, on_output, &err);
            p->err_io = watch(p, p->proc.stderr_fd, p->reading ? EPOLLIN : 0, on_output, &err);
            p->in_io = watch(p, p->proc.stdin_fd, 0, on_input_ready, &err);
        }
        p->pid_io = watch(p, p->proc.pidfd, EPOLLIN, on_exit_ready, &err);
        if (p->pid_io == NULL) {
            pe_log_warn("process in %s: %s", p->sandbox_id, err.msg);
            pe_sbproc_signal(p, SIGKILL);
        }
    }
    spec_free(&j->spec);
    if (p->orphan) {
        pe_sbproc_free(p);
    } else if (!j->ok) {
        p->cb->started(p, &j->err, p->ud);
    } else {
        p->cb->started(p, NULL, p->ud);
        flush_input(p); /* p may be freed by started only after a failed start */
    }
    free(j);
    if (--d->inflight == 0 && d->draining)
        pe_ev_stop(d->loop);
}

/* ---- the owner's calls ---- */

pe_sbproc *pe_sbproc_start(pe_daemon *d, pe_sbproc_spec *spec, const pe_sbproc_callbacks *cb,
                           void *ud, pe_err *err)
{
    pe_sbproc *p = pe_xcalloc(1, sizeof(*p));
    struct start *j = pe_xcalloc(1, sizeof(*j));

    p->d = d;
    p->sandbox_id = pe_xstrdup(spec->sandbox_id);
    p->cb = cb;
    p->ud = ud;
    p->tty = spec->tty;
    p->reading = true;
    p->oom_kills = -1;
    p->proc = (pe_proc){.pid = -1,
                        .pidfd = -1,
                        .signal_pidfd = -1,
                        .stdin_fd = -1,
                        .stdout_fd = -1,
                        .stderr_fd = -1,
                        .pty_fd = -1,
                        .status_fd = -1};
    j->p = p;
    j->spec = *spec;
    j->spec.sandbox_id = p->sandbox_id;
    j->proc = p->proc;
    *spec = (pe_sbproc_spec){0};
    p->starting = true;
    if (pe_ev_submit(d->loop, start_work, start_done, j, err) < 0) {
        spec_free(&j->spec);
        free(j);
        free(p->sandbox_id);
        free(p);
        return NULL;
    }
    d->inflight++;
    return p;
}

bool pe_sbproc_running(const pe_sbproc *p)
{
    return p->have_proc && !p->reaped;
}

void pe_sbproc_read(pe_sbproc *p, bool on)
{
    p->reading = on;
    watch_output(p);
}

void pe_sbproc_write(pe_sbproc *p, const void *buf, size_t n)
{
    if (n == 0)
        return;
    p->in = pe_xrealloc(p->in, p->in_len + n);
    memcpy(p->in + p->in_len, buf, n);
    p->in_len += n;
    flush_input(p);
}

size_t pe_sbproc_queued(const pe_sbproc *p)
{
    return p->in_len;
}

void pe_sbproc_close_stdin(pe_sbproc *p)
{
    p->in_close = true;
    flush_input(p);
}

bool pe_sbproc_stdin_open(const pe_sbproc *p)
{
    return !p->in_close && !p->reaped && (p->starting || stdin_fd(p) >= 0);
}

void pe_sbproc_signal(pe_sbproc *p, int sig)
{
    if (!pe_sbproc_running(p))
        return;
    /* a provider knows "end" and "end now", not every signal */
    if (p->remote && sig == SIGKILL)
        pe_provider_proc_kill_now(&p->rproc);
    else if (p->remote)
        pe_provider_proc_kill(&p->rproc);
    else
        pe_proc_signal_group(&p->proc, sig);
}

void pe_sbproc_resize(pe_sbproc *p, unsigned cols, unsigned rows)
{
    struct winsize wsz = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};

    if (p->tty && pe_sbproc_running(p) && p->remote) {
        pe_err err;
        if (pe_provider_proc_resize(&p->rproc, (unsigned short)cols, (unsigned short)rows, &err) <
            0)
            pe_log_warn("process in %s: resize: %s", p->sandbox_id, err.msg);
    } else if (p->tty && pe_sbproc_running(p)) {
        ioctl(p->proc.pty_fd, TIOCSWINSZ, &wsz); /* SIGWINCH to its foreground */
    }
}

void pe_sbproc_oom_before(const pe_sbproc *p, int64_t *kills, int64_t *limit)
{
    *kills = p->oom_kills;
    *limit = p->oom_limit;
}

void pe_sbproc_free(pe_sbproc *p)
{
    if (p == NULL)
        return;
    if (p->starting) {
        p->orphan = true;
        return;
    }
    if (pe_sbproc_running(p) && p->remote) {
        /* closing its pump below ends it; no wait on the provider here */
        pe_provider_proc_kill(&p->rproc);
        p->reaped = true;
    } else if (pe_sbproc_running(p)) {
        int code;
        pe_err err;
        pe_proc_signal_group(&p->proc, SIGKILL);
        pe_proc_wait(&p->proc, &code, &err);
        p->reaped = true;
    }
    pe_ev_io_stop(p->out_io);
    pe_ev_io_stop(p->err_io);
    pe_ev_io_stop(p->in_io);
    pe_ev_io_stop(p->pid_io);
    if (p->have_proc && p->remote)
        pe_provider_proc_close(&p->rproc); /* its fds are proc's too */
    else if (p->have_proc)
        pe_proc_close(&p->proc);
    free(p->in);
    free(p->sandbox_id);
    free(p);
}
