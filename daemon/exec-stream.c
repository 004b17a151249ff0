/* Streaming exec (our extension; docs/design/daemon.md, "Streaming exec"):
 * a command in a sandbox over one WebSocket, with its stdin, its stdout and
 * stderr as they come (any bytes, no size cap), a PTY on request, resizes,
 * signals and the exit code. The one-shot JSON exec stays for upstream's
 * clients; our CLI uses this.
 *
 *   GET /exec/:id/ws   (id: a sandbox id or name; auth as terminals)
 *
 * Client to server: first a text message, the command:
 *   {"argv": [...]} or {"command": "a shell line"}, and optionally
 *   "tty": bool, "cols", "rows", "env": {"K": "V"}, "workdir": "/path"
 * then binary messages of stdin bytes (keystrokes with a PTY), and text
 * messages {"type": "eof"} (stdin ends), {"type": "resize", "cols", "rows"},
 * {"type": "signal", "signal": "INT"} (or a number).
 * Server to client: text {"type": "started"}, then binary messages whose
 * first byte is the stream (1 stdout, 2 stderr; a PTY's output is 1) and
 * the rest its bytes; text {"type": "window", "bytes": N}: how many more
 * stdin bytes the client may send (flow control: the server grants more as
 * the process reads); finally {"type": "exit", "code": N} and close 1000.
 * Errors: {"type": "error", "message"} and close 1008 (the client's fault)
 * or 1011.
 *
 * Threading: loop thread, but for starting the process (it enters the
 * sandbox's namespaces and reads the store for the environment), done by
 * a worker. The process's pipes (or PTY) and pidfd are non-blocking and
 * watched by the loop. Backpressure: while the client has more than
 * HIGH_WATER unsent, the process's output is not read (it blocks on its
 * pipe, as it would on a slow terminal); stdin is bounded by the window.
 *
 * Lifetime: the stream holds its sandbox busy (no idle stop). When the
 * client goes, the process group gets SIGHUP then SIGKILL; when the token
 * that opened the stream is revoked, the same. When the daemon stops, it
 * gets SIGTERM then SIGKILL, the client a close 1001 saying so, and the
 * daemon waits for that (at most the grace) before it exits. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "resources.h"
#include "terminal.h"

#define PREFIX "/exec/"
#define SPEC_MAX (256 * 1024)     /* the command message */
#define MESSAGE_MAX (1024 * 1024) /* a stdin message */
#define WINDOW (1024 * 1024)      /* stdin bytes in flight */
#define HIGH_WATER (1024 * 1024)  /* output queued for the client */
#define READ_CHUNK (64 * 1024)
#define ARGS_MAX 4096
#define KILL_GRACE_NS (2ull * 1000000000ull)

enum { ST_SPEC, ST_STARTING, ST_RUNNING, ST_DONE };

typedef struct xstream {
    pe_daemon *d;
    pe_http_ws *ws; /* NULL once the client is gone */
    char *did, *sandbox_id;
    int64_t iat;
    int state;
    bool tty;
    pe_proc proc;
    bool have_proc, reaped;
    bool stopping; /* the daemon is stopping: it waits (one inflight) for this end */
    pe_ev_io *out_io, *err_io, *in_io, *pid_io;
    pe_ev_timer *kill_timer;
    char *in; /* stdin not yet written */
    size_t in_len;
    size_t window; /* stdin bytes the client may still send */
    bool in_eof;   /* the client said stdin ends */
    bool out_eof, err_eof;
    int exit_code;
    struct xstream *next, *prev;
} xstream;

static xstream *streams; /* live, for recheck and shutdown (loop thread) */

static void unlink_stream(xstream *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else if (streams == x)
        streams = x->next;
    if (x->next)
        x->next->prev = x->prev;
    x->next = x->prev = NULL;
}

static void control(xstream *x, json_t *msg)
{
    char *text = json_dumps(msg, JSON_COMPACT);

    json_decref(msg);
    if (text == NULL)
        abort(); /* allocation failure: the values are ours */
    if (x->ws)
        pe_http_ws_send(x->ws, false, text, strlen(text));
    free(text);
}

/* Free once the client is gone and the process reaped (or never began). */
static void maybe_free(xstream *x)
{
    if (x->ws || x->state == ST_STARTING || (x->have_proc && !x->reaped))
        return;
    unlink_stream(x);
    pe_ev_io_stop(x->out_io);
    pe_ev_io_stop(x->err_io);
    pe_ev_io_stop(x->in_io);
    pe_ev_io_stop(x->pid_io);
    pe_ev_timer_stop(x->kill_timer);
    if (x->have_proc)
        pe_proc_close(&x->proc);
    if (x->sandbox_id)
        pe_daemon_release(x->d, x->sandbox_id);
    free(x->in);
    free(x->did);
    free(x->sandbox_id);
    free(x);
}

/* Close the client's side with code and reason (after a last error
 * message for codes other than 1000). */
static void finish(xstream *x, unsigned code, const char *why)
{
    if (x->ws == NULL)
        return;
    if (code != 1000)
        control(x, json_pack("{s:s,s:s}", "type", "error", "message", why));
    pe_http_ws_close(x->ws, code, code == 1000 ? why : "error");
    x->ws = NULL;
}

static void on_kill_timer(pe_ev_timer *t, void *ud)
{
    xstream *x = ud;

    if (x->have_proc && !x->reaped)
        pe_proc_signal_group(&x->proc, SIGKILL);
}

/* The client is gone (or must be): end the process, HUP then KILL. */
static void end_process(xstream *x)
{
    pe_err err;

    if (!x->have_proc || x->reaped || x->kill_timer)
        return;
    pe_proc_signal_group(&x->proc, SIGHUP);
    x->kill_timer = pe_ev_timer_start(x->d->loop, KILL_GRACE_NS, 0, on_kill_timer, x, &err);
    if (x->kill_timer == NULL)
        pe_proc_signal_group(&x->proc, SIGKILL);
}

/* The daemon is stopping: SIGTERM now, SIGKILL after the grace, and the
 * daemon waits for the end (one inflight each) so that the client hears
 * why rather than a dropped connection. */
static void stop_process(xstream *x)
{
    pe_err err;

    if (!x->have_proc || x->reaped || x->stopping)
        return;
    x->stopping = true;
    x->d->inflight++;
    pe_proc_signal_group(&x->proc, SIGTERM);
    if (x->kill_timer == NULL)
        x->kill_timer = pe_ev_timer_start(x->d->loop, KILL_GRACE_NS, 0, on_kill_timer, x, &err);
    if (x->kill_timer == NULL)
        pe_proc_signal_group(&x->proc, SIGKILL);
}

/* ---- output ---- */

static void watch_output(xstream *x)
{
    bool room = x->ws && pe_http_ws_pending(x->ws) < HIGH_WATER;

    if (x->out_io)
        pe_ev_io_modify(x->out_io, room && !x->out_eof ? EPOLLIN : 0, NULL);
    if (x->err_io)
        pe_ev_io_modify(x->err_io, room && !x->err_eof ? EPOLLIN : 0, NULL);
}

/* Read what fd has (one chunk) and send it on stream `which`. false at
 * end of file (EIO on a PTY whose every slave is closed). */
static bool pump(xstream *x, int fd, unsigned char which)
{
    unsigned char buf[1 + READ_CHUNK];
    ssize_t n;

    buf[0] = which;
    do
        n = read(fd, buf + 1, READ_CHUNK);
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EAGAIN)
        return true;
    if (n <= 0)
        return false;
    if (x->ws)
        pe_http_ws_send(x->ws, true, buf, (size_t)n + 1);
    return true;
}

static void on_output(pe_ev_io *io, int fd, uint32_t events, void *ud)
{
    xstream *x = ud;
    bool is_err = io == x->err_io;

    if (!pump(x, fd, is_err ? 2 : 1)) {
        pe_ev_io_modify(io, 0, NULL);
        *(is_err ? &x->err_eof : &x->out_eof) = true;
    }
    watch_output(x);
}

static void on_drain(pe_http_ws *ws, void *ud)
{
    watch_output(ud);
}

/* ---- input ---- */

static int stdin_fd(const xstream *x)
{
    return x->tty ? x->proc.pty_fd : x->proc.stdin_fd;
}

/* Write what is queued; grant the client the room it made. */
static void flush_input(xstream *x)
{
    size_t wrote = 0;
    int fd = stdin_fd(x);

    while (x->in_len > wrote && fd >= 0) {
        ssize_t n = write(fd, x->in + wrote, x->in_len - wrote);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN)
            x->in_len = wrote = 0; /* the process closed its stdin: drop the rest */
        if (n <= 0)
            break;
        wrote += (size_t)n;
    }
    if (wrote) {
        memmove(x->in, x->in + wrote, x->in_len - wrote);
        x->in_len -= wrote;
        x->window += wrote;
        control(x, json_pack("{s:s,s:I}", "type", "window", "bytes", (json_int_t)wrote));
    }
    if (x->in_len == 0 && x->in_eof && !x->tty && x->proc.stdin_fd >= 0) {
        pe_ev_io_stop(x->in_io);
        x->in_io = NULL;
        close(x->proc.stdin_fd); /* the process reads end of file */
        x->proc.stdin_fd = -1;
        return;
    }
    if (x->in_io)
        pe_ev_io_modify(x->in_io, x->in_len ? EPOLLOUT : 0, NULL);
}

static void on_input_ready(pe_ev_io *io, int fd, uint32_t events, void *ud)
{
    flush_input(ud);
}

static int signal_of(const json_t *v)
{
    static const struct {
        const char *name;
        int sig;
    } names[] = {{"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"KILL", SIGKILL},
                 {"TERM", SIGTERM}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"WINCH", SIGWINCH},
                 {"STOP", SIGSTOP}, {"CONT", SIGCONT}, {"TSTP", SIGTSTP}};
    const char *s = json_string_value(v);

    if (json_is_integer(v) && json_integer_value(v) > 0 && json_integer_value(v) < 65)
        return (int)json_integer_value(v);
    if (s && strncasecmp(s, "SIG", 3) == 0)
        s += 3;
    for (size_t i = 0; s && i < PE_ARRAY_LEN(names); i++)
        if (strcasecmp(s, names[i].name) == 0)
            return names[i].sig;
    return 0;
}

static void on_control(xstream *x, const char *data, size_t len)
{
    json_t *o = json_loadb(data, len, JSON_REJECT_DUPLICATES, NULL);
    const char *type = json_string_value(json_object_get(o, "type"));
    unsigned cols, rows;
    int sig;

    if (type && strcmp(type, "eof") == 0) {
        x->in_eof = true;
        flush_input(x);
    } else if (type && strcmp(type, "signal") == 0 &&
               (sig = signal_of(json_object_get(o, "signal"))) > 0) {
        pe_proc_signal_group(&x->proc, sig);
    } else if (type && strcmp(type, "resize") == 0) {
        int kind = pe__term_resize_message(data, len, true, &cols, &rows);
        struct winsize wsz = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
        if (kind == PE_TERM_RESIZE_OK && x->tty)
            ioctl(x->proc.pty_fd, TIOCSWINSZ, &wsz); /* SIGWINCH to its foreground */
    } else {
        finish(x, 1008, "expected {\"type\": \"eof\" | \"signal\" | \"resize\", ...}");
        end_process(x);
    }
    json_decref(o);
}

/* ---- starting (worker) ---- */

struct start {
    xstream *x;
    char **argv, **env;
    char *workdir;
    unsigned cols, rows;
    bool tty;
    pe_proc proc;
    bool ok;
    pe_err err;
};

static void free_strv(char **v)
{
    for (char **p = v; p && *p; p++)
        free(*p);
    free(v);
}

static void start_work(void *ud)
{
    struct start *j = ud;
    pe_daemon *d = j->x->d;
    pe_proc_opts opts = {.argv = j->argv,
                         .workdir = j->workdir,
                         .tty = j->tty,
                         .tty_cols = (unsigned short)j->cols,
                         .tty_rows = (unsigned short)j->rows,
                         .capture = !j->tty};
    char **senv = NULL, **all;
    size_t ns = 0, ne = 0;
    pe_store *s = pe_daemon_store(d, &j->err);

    if (s == NULL || pe_daemon_sandbox_env(d, s, j->x->sandbox_id, &senv, &j->err) < 0)
        return;
    /* The sandbox's variables and secrets, then the caller's (which win). */
    while (senv[ns])
        ns++;
    while (j->env && j->env[ne])
        ne++;
    all = pe_xcalloc(ns + ne + 1, sizeof(*all));
    memcpy(all, senv, ns * sizeof(*all));
    if (ne)
        memcpy(all + ns, j->env, ne * sizeof(*all));
    opts.env = all;
    j->proc = (pe_proc){.pid = -1,
                        .pidfd = -1,
                        .signal_pidfd = -1,
                        .stdin_fd = -1,
                        .stdout_fd = -1,
                        .stderr_fd = -1,
                        .pty_fd = -1,
                        .status_fd = -1};
    j->ok = pe_runtime_exec_start(&d->rt, j->x->sandbox_id, &opts, &j->proc, &j->err) == 0;
    free(all); /* the strings are senv's and j->env's */
    pe_daemon_env_free(senv);
}

static void on_exit_ready(pe_ev_io *io, int fd, uint32_t events, void *ud);

static pe_ev_io *watch(xstream *x, int fd, uint32_t events, pe_ev_io_cb cb, pe_err *err)
{
    return fd >= 0 ? pe_ev_io_start(x->d->loop, fd, events, cb, x, err) : NULL;
}

static void start_done(void *ud)
{
    struct start *j = ud;
    xstream *x = j->x;
    pe_daemon *d = x->d;
    pe_err err;

    pe_err_clear(&err);
    x->state = ST_RUNNING;
    if (!j->ok) {
        char why[PE_ERR_MSG_MAX + 32];
        pe_log_info("exec stream %s: %s", x->sandbox_id, j->err.msg);
        snprintf(why, sizeof(why), "cannot start the command: %.200s", j->err.msg);
        finish(x, 1011, why);
        x->state = ST_DONE;
    } else {
        x->proc = j->proc;
        x->have_proc = true;
        x->tty = j->tty;
        /* The loop never blocks on the process's pipes. */
        int fds[] = {x->proc.stdin_fd, x->proc.stdout_fd, x->proc.stderr_fd, x->proc.pty_fd};
        for (size_t i = 0; i < PE_ARRAY_LEN(fds); i++)
            if (fds[i] >= 0)
                fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
        if (x->tty) {
            x->out_io = watch(x, x->proc.pty_fd, EPOLLIN, on_output, &err);
            x->in_io = watch(x, x->proc.pty_fd, 0, on_input_ready, &err);
        } else {
            x->out_io = watch(x, x->proc.stdout_fd, EPOLLIN, on_output, &err);
            x->err_io = watch(x, x->proc.stderr_fd, EPOLLIN, on_output, &err);
            x->in_io = watch(x, x->proc.stdin_fd, 0, on_input_ready, &err);
        }
        x->pid_io = watch(x, x->proc.pidfd, EPOLLIN, on_exit_ready, &err);
        if (x->pid_io == NULL) {
            pe_log_warn("exec stream %s: %s", x->sandbox_id, err.msg);
            pe_proc_signal_group(&x->proc, SIGKILL);
        }
        control(x, json_pack("{s:s}", "type", "started"));
        control(x, json_pack("{s:s,s:I}", "type", "window", "bytes", (json_int_t)x->window));
        if (d->draining)
            stop_process(x);
        else if (x->ws == NULL) /* the client left while it started */
            end_process(x);
        else
            flush_input(x);
    }
    free_strv(j->argv);
    free_strv(j->env);
    free(j->workdir);
    free(j);
    if (--d->inflight == 0 && d->draining)
        pe_ev_stop(d->loop);
    maybe_free(x);
}

/* ---- the process's end ---- */

static void on_exit_ready(pe_ev_io *io, int fd, uint32_t events, void *ud)
{
    xstream *x = ud;
    char reason[32];
    pe_err err;
    int code = -1;
    int out_fd = x->tty ? x->proc.pty_fd : x->proc.stdout_fd;

    /* Its last words first: what is left in the pipes comes before the
     * exit (every writer has exited; a grandchild that kept the pipe open
     * does not hold the exit back: at most 1024 reads). */

    for (int i = 0; i < 1024 && x->out_io && !x->out_eof && pump(x, out_fd, 1); i++)
        ;
    for (int i = 0; i < 1024 && x->err_io && !x->err_eof && pump(x, x->proc.stderr_fd, 2); i++)
        ;
    pe_ev_io_stop(x->pid_io);
    x->pid_io = NULL;
    if (pe_proc_wait(&x->proc, &code, &err) < 0)
        pe_log_warn("exec stream %s: %s", x->sandbox_id, err.msg);
    x->reaped = true;
    x->exit_code = code;
    x->state = ST_DONE;
    if (x->stopping) {
        pe_daemon *d = x->d;
        finish(x, 1001, "the daemon is shutting down: the command was stopped");
        maybe_free(x);
        if (--d->inflight == 0 && d->draining)
            pe_ev_stop(d->loop);
        return;
    }
    if (x->ws) {
        control(x, json_pack("{s:s,s:i}", "type", "exit", "code", code));
        snprintf(reason, sizeof(reason), "exit %d", code);
        finish(x, 1000, reason);
    }
    maybe_free(x);
}

/* ---- the WebSocket ---- */

/* The first message: what to run. */
static void on_spec(xstream *x, const char *data, size_t len)
{
    json_t *o = json_loadb(data, len, JSON_REJECT_DUPLICATES, NULL);
    const json_t *argv = json_object_get(o, "argv"), *command = json_object_get(o, "command");
    const json_t *env = json_object_get(o, "env"), *tty = json_object_get(o, "tty");
    const char *workdir = json_string_value(json_object_get(o, "workdir"));
    struct start *j;
    const char *k;
    json_t *v;
    size_t i, n = 0;
    bool bad;
    pe_err err;

    if (!json_is_object(o) || (argv == NULL) == (command == NULL) ||
        (argv && (!json_is_array(argv) || json_array_size(argv) == 0 ||
                  json_array_size(argv) > ARGS_MAX)) ||
        (command && (!json_is_string(command) || json_string_length(command) == 0)) ||
        (env && !json_is_object(env)) || (tty && !json_is_boolean(tty)) ||
        (json_object_get(o, "workdir") && (workdir == NULL || workdir[0] != '/'))) {
        json_decref(o);
        finish(x, 1008,
               "expected {\"argv\": [...]} or {\"command\": \"...\"}, and optionally "
               "\"tty\", \"cols\", \"rows\", \"env\": {}, \"workdir\": \"/...\"");
        return;
    }
    j = pe_xcalloc(1, sizeof(*j));
    j->x = x;
    j->tty = json_is_true(tty);
    j->cols = (unsigned)json_integer_value(json_object_get(o, "cols"));
    j->rows = (unsigned)json_integer_value(json_object_get(o, "rows"));
    if (j->cols < 1 || j->cols > PE_TERM_COLS_MAX || j->rows < 1 || j->rows > PE_TERM_ROWS_MAX)
        j->cols = 80, j->rows = 24;
    j->workdir = workdir ? pe_xstrdup(workdir) : NULL;
    if (argv) {
        j->argv = pe_xcalloc(json_array_size(argv) + 1, sizeof(char *));
        json_array_foreach(argv, i, v)
        {
            if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
                break;
            j->argv[n++] = pe_xstrdup(json_string_value(v));
        }
    } else {
        j->argv = pe_xcalloc(4, sizeof(char *));
        j->argv[0] = pe_xstrdup("/bin/sh");
        j->argv[1] = pe_xstrdup("-c");
        j->argv[2] = pe_xstrdup(json_string_value(command));
        n = 3;
    }
    if (env) {
        j->env = pe_xcalloc(json_object_size(env) + 1, sizeof(char *));
        i = 0;
        json_object_foreach((json_t *)env, k, v)
        {
            if (!json_is_string(v) || pe_daemon_check_env_name("env", k, NULL) < 0)
                break;
            j->env[i++] = pe_xasprintf("%s=%s", k, json_string_value(v));
        }
        if (i != json_object_size(env))
            n = 0; /* refused below */
    }
    bad = (argv && n != json_array_size(argv)) || n == 0;
    json_decref(o); /* argv, env: o's */
    if (bad) {
        free_strv(j->argv);
        free_strv(j->env);
        free(j->workdir);
        free(j);
        finish(x, 1008, "argv and env values must be strings without NUL, env names shell names");
        return;
    }
    pe_err_clear(&err);
    x->state = ST_STARTING;
    if (pe_ev_submit(x->d->loop, start_work, start_done, j, &err) < 0) {
        x->state = ST_DONE;
        free_strv(j->argv);
        free_strv(j->env);
        free(j->workdir);
        free(j);
        finish(x, 1011, "the daemon is busy");
        return;
    }
    x->d->inflight++;
}

static void on_message(pe_http_ws *ws, bool binary, const char *data, size_t len, void *ud)
{
    xstream *x = ud;

    if (x->state == ST_SPEC) {
        if (binary)
            finish(x, 1008, "the first message is the command, as JSON text");
        else
            on_spec(x, data, len);
        return;
    }
    if (!binary) {
        if (x->state == ST_RUNNING)
            on_control(x, data, len);
        return;
    }
    if (len > x->window) { /* the client ignored the window: it cannot be trusted with more */
        finish(x, 1008, "stdin past the window the server granted");
        end_process(x);
        return;
    }
    if (len == 0 || x->in_eof)
        return;
    x->window -= len;
    x->in = pe_xrealloc(x->in, x->in_len + len);
    memcpy(x->in + x->in_len, data, len);
    x->in_len += len;
    pe_daemon_touch(x->d, x->sandbox_id);
    if (x->state == ST_RUNNING)
        flush_input(x);
}

static void on_close(pe_http_ws *ws, unsigned code, void *ud)
{
    xstream *x = ud;

    x->ws = NULL;
    end_process(x);
    maybe_free(x);
}

static void found(pe_daemon *d, pe_http_request *req, const char *sandbox_id, void *ud)
{
    static const pe_http_ws_callbacks cb = {
        .on_message = on_message, .on_drain = on_drain, .on_close = on_close};
    xstream *x = ud;

    if (sandbox_id == NULL) { /* answered */
        free(x->did);
        free(x);
        return;
    }
    x->sandbox_id = pe_xstrdup(sandbox_id);
    pe_daemon_hold(d, sandbox_id);
    x->ws = pe_http_upgrade_ws(req, &cb, MESSAGE_MAX > SPEC_MAX ? MESSAGE_MAX : SPEC_MAX, x);
    if (x->ws == NULL) {
        maybe_free(x);
        return;
    }
    x->next = streams;
    if (streams)
        streams->prev = x;
    streams = x;
}

static void on_request(pe_http_request *req, void *ud)
{
    pe_daemon *d = ud;
    const char *rest = req->rest, *slash = strchr(rest, '/');
    cleanup_free char *ident = NULL;
    xstream *x;
    int64_t iat = 0;
    char *did;

    if (slash == NULL || slash == rest || strcmp(slash, "/ws") != 0 ||
        (size_t)(slash - rest) > 100) {
        pe_http_respond_error(req, 404, "NotFound", "streaming exec is at /exec/<sandbox>/ws");
        return;
    }
    if (strcmp(req->method, "GET") != 0) {
        pe_http_respond_error(req, 405, "MethodNotAllowed", "a WebSocket: GET with Upgrade");
        return;
    }
    if ((did = pe__term_authenticate(d, req, true, &iat)) == NULL)
        return;
    if (d->draining) {
        free(did);
        pe_http_respond_error(req, 503, "ServiceUnavailable", "the daemon is shutting down");
        return;
    }
    ident = pe_xasprintf("%.*s", (int)(slash - rest), rest);
    x = pe_xcalloc(1, sizeof(*x));
    x->d = d;
    x->did = did;
    x->iat = iat;
    x->window = WINDOW;
    x->proc.pid = -1;
    x->proc.pidfd = x->proc.signal_pidfd = x->proc.stdin_fd = x->proc.stdout_fd = -1;
    x->proc.stderr_fd = x->proc.pty_fd = x->proc.status_fd = -1;
    pe__term_find_sandbox(d, req, did, ident, found, x);
}

int pe_daemon_register_exec_stream(pe_daemon *d, pe_err *err)
{
    return pe_http_route(d->srv, PREFIX, 0, on_request, d, err);
}

void pe_daemon_exec_stream_recheck(pe_daemon *d)
{
    xstream *next;

    for (xstream *x = streams; x; x = next) {
        next = x->next;
        if (x->ws && pe_auth_revoked(d->auth, x->did, x->iat)) {
            pe_log_info("exec stream %s: closed: its token was revoked", x->sandbox_id);
            finish(x, 1008, "token revoked");
            end_process(x);
            maybe_free(x);
        }
    }
}

void pe_daemon_exec_stream_drain(pe_daemon *d)
{
    (void)d;
    for (xstream *x = streams; x; x = x->next)
        stop_process(x);
}

void pe_daemon_exec_stream_shutdown(pe_daemon *d)
{
    while (streams) {
        xstream *x = streams;
        unlink_stream(x);
        finish(x, 1001, "daemon shutting down");
        if (x->have_proc && !x->reaped) {
            int code;
            pe_err err;
            pe_proc_signal_group(&x->proc, SIGKILL);
            pe_proc_wait(&x->proc, &code, &err);
            x->reaped = true;
        }
        x->state = ST_DONE;
        maybe_free(x);
    }
}
