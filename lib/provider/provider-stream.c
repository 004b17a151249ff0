/* The pump behind a remote process (provider-internal.h).
 *
 * The daemon's loop watches a local process through fds (pe_proc); a
 * remote one gets the same shape: pipes (or a socketpair for a PTY) whose
 * far ends a thread of ours serves, moving bytes between them and the
 * provider's WebSocket or HTTP stream. Writes to the output pipes block
 * while the loop is slow to read, so the thread stops reading the remote
 * side and TCP carries the backpressure to the provider. The thread owns
 * the WebSocket; the caller talks to it only through the control pipe. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <wslay/wslay.h>

#include "core/util.h"
#include "provider-internal.h"

static int pipe_pair(int fds[2]);

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static void write_all(int fd, const void *data, size_t len)
{
    const char *p = data;

    while (len > 0 && fd >= 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* the reader went away: output is dropped, the process goes on */
        p += n;
        len -= (size_t)n;
    }
}

void pe__stream_output(struct pe_provider_stream *s, int fd, const void *data, size_t len)
{
    write_all(fd == 2 && !s->tty ? s->err_fd : s->out_fd, data, len);
}

void pe__stream_exit(struct pe_provider_stream *s, int code)
{
    s->exit_code = code;
    s->exited = true;
}

static void on_ws_msg(void *ud, int opcode, const unsigned char *data, size_t len)
{
    struct pe_provider_stream *s = ud;

    s->ops->on_msg(s, opcode, data, len);
}

/* One control byte from the caller. false: leave the loop. */
static bool control(struct pe_provider_stream *s)
{
    char c;

    if (read(s->ctl[0], &c, 1) != 1 || c == 'q')
        return false;
    if (c == 'k' && s->ops->on_kill)
        s->ops->on_kill(s);
    if (c == 'r' && s->ops->on_resize)
        s->ops->on_resize(s, s->cols, s->rows);
    return true;
}

/* Input from the caller: forwarded; EOF once. */
static void input(struct pe_provider_stream *s)
{
    unsigned char buf[16384];
    ssize_t n = read(s->in_fd, buf, sizeof(buf));

    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n > 0) {
        s->ops->on_input(s, buf, (size_t)n);
        return;
    }
    if (s->ops->on_input)
        s->ops->on_input(s, buf, 0);
    if (!s->tty)
        close_fd(&s->in_fd);
    else
        s->in_fd = -1; /* the pty socket is out_fd too: closed at the end */
}

static void pump_ws(struct pe_provider_stream *s)
{
    for (;;) {
        struct pollfd pfd[3] = {
            {.fd = pe__ws_fd(s->ws), .events = POLLIN | (pe__ws_want_write(s->ws) ? POLLOUT : 0)},
            {.fd = s->ctl[0], .events = POLLIN},
            {.fd = s->in_fd, .events = POLLIN},
        };
        /* frames that came with the handshake are not on the socket any more */
        int timeout = pe__ws_buffered(s->ws) ? 0 : -1;
        if (poll(pfd, s->in_fd >= 0 && s->ops->on_input ? 3 : 2, timeout) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (pfd[1].revents && !control(s))
            break;
        if (s->in_fd >= 0 && s->ops->on_input && pfd[2].revents)
            input(s);
        if (pe__ws_io(s->ws, pfd[0].revents, on_ws_msg, s) < 0 || s->exited)
            break;
    }
    if (!s->exited && s->ops->on_end)
        s->ops->on_end(s);
}

/* The side thread of an http_side stream: control and input, until the
 * transfer ended (done pipe) or the caller quit. */
static void *side(void *arg)
{
    struct pe_provider_stream *s = arg;

    for (;;) {
        struct pollfd pfd[3] = {
            {.fd = s->done[0], .events = POLLIN},
            {.fd = s->ctl[0], .events = POLLIN},
            {.fd = s->in_fd, .events = POLLIN},
        };
        if (poll(pfd, s->in_fd >= 0 && s->ops->on_input ? 3 : 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (pfd[0].revents)
            break;
        if (pfd[1].revents && !control(s))
            break;
        if (s->in_fd >= 0 && s->ops->on_input && pfd[2].revents)
            input(s);
    }
    return NULL;
}

static void run_http(struct pe_provider_stream *s)
{
    pthread_t t;
    bool side_started = false;

    if (s->ops->http_side && pipe_pair(s->done) == 0)
        side_started = pthread_create(&t, NULL, side, s) == 0;
    s->ops->run_http(s);
    if (side_started) {
        close_fd(&s->done[1]); /* the side thread sees EOF and ends */
        pthread_join(t, NULL);
    }
    close_fd(&s->done[0]);
    close_fd(&s->done[1]);
}

static void *pump(void *arg)
{
    struct pe_provider_stream *s = arg;

    if (s->ops->run_http)
        run_http(s);
    else
        pump_ws(s);
    if (!s->exited && s->error[0] == '\0')
        snprintf(s->error, sizeof(s->error),
                 "%s: the stream ended before the process's exit code arrived", s->p->ops->name);
    /* EOF on the output, then the status: the order pe_proc has */
    if (!s->tty)
        close_fd(&s->err_fd);
    close_fd(&s->out_fd);
    close_fd(&s->status_w);
    return NULL;
}

static int pipe_pair(int fds[2])
{
    return pipe2(fds, O_CLOEXEC);
}

int pe__stream_start(pe_provider *p, const pe__stream_ops *ops, void *ud, pe__ws *ws, bool tty,
                     bool stdin_pipe, pe_provider_proc *proc, pe_err *err)
{
    struct pe_provider_stream *s = pe_xcalloc(1, sizeof(*s));
    int out[2] = {-1, -1}, errp[2] = {-1, -1}, in[2] = {-1, -1}, st[2] = {-1, -1};

    *proc = (pe_provider_proc){-1, -1, -1, -1, -1, NULL, NULL, false, 0, 0};
    s->p = p;
    s->ops = ops;
    s->ud = ud;
    s->ws = ws;
    s->tty = tty;
    s->ctl[0] = s->ctl[1] = s->in_fd = s->out_fd = s->err_fd = s->status_w = -1;
    s->done[0] = s->done[1] = -1;
    if (pipe_pair(s->ctl) < 0 || pipe_pair(st) < 0)
        goto fail;
    if (tty) {
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, out) < 0)
            goto fail;
        proc->pty_fd = out[0];
        s->out_fd = s->in_fd = out[1];
    } else {
        if (pipe_pair(out) < 0 || pipe_pair(errp) < 0 || (stdin_pipe && pipe_pair(in) < 0))
            goto fail;
        proc->stdout_fd = out[0];
        proc->stderr_fd = errp[0];
        s->out_fd = out[1];
        s->err_fd = errp[1];
        proc->stdin_fd = in[1];
        s->in_fd = in[0];
    }
    proc->status_fd = st[0];
    s->status_w = st[1];
    if (pthread_create(&s->thread, NULL, pump, s) != 0)
        goto fail;
    s->started = true;
    proc->stream = s;
    return 0;
fail:
    pe_err_sys(err, "%s: start a stream", p->ops->name);
    for (int *f = (int[]){out[0], errp[0], in[1], st[0]}, i = 0; i < 4; i++)
        if (f[i] >= 0)
            close(f[i]);
    if (!tty)
        close_fd(&s->in_fd);
    if (!tty)
        close_fd(&s->err_fd);
    close_fd(&s->out_fd);
    close_fd(&s->status_w);
    close_fd(&s->ctl[0]);
    close_fd(&s->ctl[1]);
    if (ops->free_ud)
        ops->free_ud(ud);
    pe__ws_free(ws);
    free(s);
    *proc = (pe_provider_proc){-1, -1, -1, -1, -1, NULL, NULL, false, 0, 0};
    return -1;
}

struct pe_provider_stream *pe__stream_direct(pe_provider *p, const pe__stream_ops *ops, void *ud,
                                             bool tty)
{
    struct pe_provider_stream *s = pe_xcalloc(1, sizeof(*s));

    s->p = p;
    s->ops = ops;
    s->ud = ud;
    s->tty = tty;
    s->direct = true;
    s->ctl[0] = s->ctl[1] = s->in_fd = s->out_fd = s->err_fd = s->status_w = -1;
    return s;
}

static void ctl(pe_provider_proc *proc, char c)
{
    if (proc->stream && proc->stream->ctl[1] >= 0) {
        ssize_t r = write(proc->stream->ctl[1], &c, 1);
        (void)r;
    }
}

int pe_provider_proc_resize(pe_provider_proc *proc, unsigned short cols, unsigned short rows,
                            pe_err *err)
{
    if (proc->stream == NULL || !proc->stream->tty)
        return pe_err_set(err, PE_EINVAL, 0, "resize: not a terminal");
    proc->stream->cols = cols;
    proc->stream->rows = rows;
    if (proc->stream->direct)
        return proc->stream->ops->on_resize(proc->stream, cols, rows);
    ctl(proc, 'r');
    return 0;
}

void pe_provider_proc_kill(pe_provider_proc *proc)
{
    if (proc->stream && proc->stream->direct)
        proc->stream->ops->on_kill(proc->stream);
    else if (proc->stream) {
        if (!proc->stream->ops->http_side)
            proc->stream->cancel = 1;
        ctl(proc, 'k');
    }
}

void pe_provider_proc_kill_now(pe_provider_proc *proc)
{
    if (proc->stream && proc->stream->direct && proc->stream->ops->kill_now)
        proc->stream->ops->kill_now(proc->stream);
    else
        pe_provider_proc_kill(proc);
}

int pe_provider_proc_wait(pe_provider_proc *proc, int *exit_code, pe_err *err)
{
    struct pe_provider_stream *s = proc->stream;
    char c;

    if (s == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "wait: no process");
    if (s->direct)
        return s->ops->wait(s, exit_code, err);
    while (read(proc->status_fd, &c, 1) < 0 && errno == EINTR)
        ;
    if (s->started) {
        pthread_join(s->thread, NULL);
        s->started = false;
    }
    if (!s->exited)
        return pe_err_set(err, PE_EREMOTE, 0, "%s", s->error);
    *exit_code = s->exit_code;
    return 0;
}

void pe_provider_proc_close(pe_provider_proc *proc)
{
    struct pe_provider_stream *s = proc->stream;

    if (s) {
        if (s->started) {
            s->cancel = 1;
            ctl(proc, 'q');
        }
    }
    /* closing our ends first unblocks a pump writing output */
    close_fd(&proc->stdin_fd);
    close_fd(&proc->stdout_fd);
    close_fd(&proc->stderr_fd);
    close_fd(&proc->pty_fd);
    if (s) {
        if (s->started)
            pthread_join(s->thread, NULL);
        if (!s->tty)
            close_fd(&s->in_fd);
        close_fd(&s->ctl[0]);
        close_fd(&s->ctl[1]);
        if (s->ws)
            pe__ws_free(s->ws);
        if (s->ops->free_ud)
            s->ops->free_ud(s->ud);
        free(s);
    }
    close_fd(&proc->status_fd);
    proc->stream = NULL;
    /* last: the pump above may have used it until it ended */
    pe_provider_close(proc->owner);
    proc->owner = NULL;
}
