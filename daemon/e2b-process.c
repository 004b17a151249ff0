/* envd's process service (process.Process, Connect with the JSON codec),
 * answered by the daemon for each sandbox: no agent runs inside.
 *
 *   Start       server stream: one request envelope in; envelopes out:
 *               {"event":{"start":{"pid"}}}, {"event":{"data":{"stdout"|
 *               "stderr"|"pty": base64}}}, {"event":{"end":{"exitCode",
 *               "exited","status"}}}, {"event":{"keepalive":{}}}, and the
 *               end-of-stream envelope (flag 0x02): {} or {"error":{...}}.
 *   SendInput, CloseStdin, SendSignal, Update (PTY size), List: unary.
 *
 * An envelope is a flag byte, a 4-byte big-endian length and that many
 * bytes of JSON (Connect's streaming framing); a request with a broken or
 * compressed envelope, or one over ENVELOPE_MAX, ends with a Connect
 * error and nothing runs.
 *
 * A process is ours to find by (sandbox, pid): pids are this daemon's
 * numbers, not the kernel's. It outlives its stream, as envd's do: when
 * the client goes, the output is read and dropped (the process never
 * blocks on a full pipe) and SendInput/SendSignal still reach it. The
 * SDK runs every command as /bin/bash -l -c; in a sandbox without bash
 * (busybox) that is sh.
 *
 * Loop thread, but for starting the process (a worker: it enters the
 * sandbox). Backpressure as exec-stream.c: past HIGH_WATER unsent, the
 * output is not read. Shutdown kills every process. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "e2b.h"
#include "resources.h"
#include "terminal.h"

#define ENVELOPE_MAX (256 * 1024) /* a Start request */
#define ARGS_MAX 4096
#define STDIN_MAX (1024 * 1024) /* stdin queued, not yet read by the process */
#define HIGH_WATER (1024 * 1024)
#define READ_CHUNK (48 * 1024)
#define KEEPALIVE_MAX 3600
#define PROCS_PER_SANDBOX 256
#define LISTENERS_MAX 8 /* streams of one process: Start's and Connect's */

typedef struct eproc {
    pe_daemon *d;
    char *sandbox_id, *tag;
    unsigned pid;
    json_t *config; /* {cmd, args, envs, cwd} as asked: List's */
    bool tty, starting, have_proc, reaped;
    pe_proc proc;
    /* Who listens: Start's stream, then Connect's (re-attached clients);
     * none once they are gone. */
    pe_http_stream *st[LISTENERS_MAX];
    unsigned n_st;
    pe_ev_io *out_io, *err_io, *in_io, *pid_io;
    pe_ev_timer *keepalive;
    char *in;
    size_t in_len;
    bool in_close; /* close stdin once what is queued is written */
    bool out_eof, err_eof;
    struct eproc *next;
} eproc;

static eproc *procs;
static unsigned next_pid = 1;

/* ---- the envelope codec (pure) ---- */

int pe__e2b_envelope_parse(const unsigned char *buf, size_t len, size_t max, const char **payload,
                           size_t *plen)
{
    size_t n;

    if (len < 5)
        return ENV_SHORT;
    if (buf[0] & 0x01)
        return ENV_COMPRESSED;
    n = (size_t)buf[1] << 24 | (size_t)buf[2] << 16 | (size_t)buf[3] << 8 | buf[4];
    if (n > max)
        return ENV_TOO_BIG;
    if (n != len - 5)
        return ENV_LENGTH;
    *payload = (const char *)buf + 5;
    *plen = n;
    return ENV_OK;
}

void pe__e2b_envelope_send(pe_http_stream *st, unsigned char flags, json_t *msg)
{
    char *text = json_dumps(msg, JSON_COMPACT);
    size_t n = strlen(text);
    unsigned char head[5] = {flags, (unsigned char)(n >> 24), (unsigned char)(n >> 16),
                             (unsigned char)(n >> 8), (unsigned char)n};

    json_decref(msg);
    if (st) {
        pe_http_stream_write(st, head, sizeof(head));
        pe_http_stream_write(st, text, n);
    }
    free(text);
}

static void send_envelope(eproc *x, unsigned char flags, json_t *msg)
{
    for (unsigned i = 0; i < x->n_st; i++)
        pe__e2b_envelope_send(x->st[i], flags, json_incref(msg));
    json_decref(msg);
}

static void send_event(eproc *x, json_t *event)
{
    send_envelope(x, 0, json_pack("{s:o}", "event", event));
}

/* The end of the stream: {} or a Connect error; the stream is let go. */
static void end_stream(eproc *x, const char *code, const char *message)
{
    if (x->n_st == 0)
        return;
    send_envelope(x, 0x02,
                  code ? json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message)
                       : json_object());
    while (x->n_st)
        pe_http_stream_close(x->st[--x->n_st]);
    pe_ev_timer_stop(x->keepalive);
    x->keepalive = NULL;
}

void pe__e2b_refuse_stream(pe_http_request *req, const char *code, const char *message)
{
    json_t *o = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message);
    char *text = json_dumps(o, JSON_COMPACT);
    size_t n = strlen(text);
    unsigned char *buf = pe_xcalloc(1, n + 5);

    buf[0] = 0x02;
    buf[1] = (unsigned char)(n >> 24), buf[2] = (unsigned char)(n >> 16);
    buf[3] = (unsigned char)(n >> 8), buf[4] = (unsigned char)n;
    memcpy(buf + 5, text, n);
    pe_http_respond(req, 200, "application/connect+json", buf, n + 5, NULL);
    free(buf);
    free(text);
    json_decref(o);
}

/* ---- the table ---- */

static void unlink_proc(eproc *x)
{
    for (eproc **p = &procs; *p; p = &(*p)->next)
        if (*p == x) {
            *p = x->next;
            return;
        }
}

static void maybe_free(eproc *x)
{
    if (x->n_st || x->starting || (x->have_proc && !x->reaped))
        return;
    unlink_proc(x);
    pe_ev_io_stop(x->out_io);
    pe_ev_io_stop(x->err_io);
    pe_ev_io_stop(x->in_io);
    pe_ev_io_stop(x->pid_io);
    pe_ev_timer_stop(x->keepalive);
    if (x->have_proc)
        pe_proc_close(&x->proc);
    pe_daemon_release(x->d, x->sandbox_id);
    json_decref(x->config);
    free(x->in);
    free(x->tag);
    free(x->sandbox_id);
    free(x);
}

static eproc *find(const char *sandbox_id, const json_t *sel)
{
    const json_t *pid = json_object_get(sel, "pid");
    const char *tag = json_string_value(json_object_get(sel, "tag"));

    for (eproc *x = procs; x; x = x->next) {
        if (strcmp(x->sandbox_id, sandbox_id) != 0 || !x->have_proc || x->reaped)
            continue;
        if (pid && json_is_integer(pid) && json_integer_value(pid) == (json_int_t)x->pid)
            return x;
        if (tag && x->tag && strcmp(tag, x->tag) == 0)
            return x;
    }
    return NULL;
}

/* ---- output ---- */

static void watch_output(eproc *x)
{
    bool room = true;

    for (unsigned i = 0; i < x->n_st; i++) /* the slowest listener sets the pace */
        room = room && pe_http_stream_pending(x->st[i]) < HIGH_WATER;

    if (x->out_io)
        pe_ev_io_modify(x->out_io, room && !x->out_eof ? EPOLLIN : 0, NULL);
    if (x->err_io)
        pe_ev_io_modify(x->err_io, room && !x->err_eof ? EPOLLIN : 0, NULL);
}

static bool pump(eproc *x, int fd, const char *which)
{
    unsigned char buf[READ_CHUNK];
    char b64[READ_CHUNK * 4 / 3 + 8];
    ssize_t n;

    do
        n = read(fd, buf, sizeof(buf));
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EAGAIN)
        return true;
    if (n <= 0)
        return false;
    if (x->n_st) {
        sodium_bin2base64(b64, sizeof(b64), buf, (size_t)n, sodium_base64_VARIANT_ORIGINAL);
        send_event(x, json_pack("{s:{s:s}}", "data", which, b64));
    }
    return true;
}

static void on_output(pe_ev_io *io, int fd, uint32_t events, void *ud)
{
    eproc *x = ud;
    bool is_err = io == x->err_io;

    (void)events;
    if (!pump(x, fd, x->tty ? "pty" : is_err ? "stderr" : "stdout")) {
        pe_ev_io_modify(io, 0, NULL);
        *(is_err ? &x->err_eof : &x->out_eof) = true;
    }
    watch_output(x);
}

static void on_drain(pe_http_stream *st, void *ud)
{
    (void)st;
    watch_output(ud);
}

static void on_stream_close(pe_http_stream *st, void *ud)
{
    eproc *x = ud;

    for (unsigned i = 0; i < x->n_st; i++)
        if (x->st[i] == st)
            x->st[i] = x->st[--x->n_st];
    /* With nobody left the process stays (envd's do); its output is dropped. */
    if (x->n_st == 0) {
        pe_ev_timer_stop(x->keepalive);
        x->keepalive = NULL;
    }
    watch_output(x);
    maybe_free(x);
}

static void on_keepalive(pe_ev_timer *t, void *ud)
{
    eproc *x = ud;

    (void)t;
    send_event(x, json_pack("{s:{}}", "keepalive"));
}

/* ---- input ---- */

static int stdin_fd(const eproc *x)
{
    return x->tty ? x->proc.pty_fd : x->proc.stdin_fd;
}

static void flush_input(eproc *x)
{
    size_t wrote = 0;
    int fd = stdin_fd(x);

    while (x->in_len > wrote && fd >= 0) {
        ssize_t n = write(fd, x->in + wrote, x->in_len - wrote);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN)
            x->in_len = wrote = 0; /* it closed its stdin: the rest is dropped */
        if (n <= 0)
            break;
        wrote += (size_t)n;
    }
    if (wrote) {
        memmove(x->in, x->in + wrote, x->in_len - wrote);
        x->in_len -= wrote;
    }
    if (x->in_len == 0 && x->in_close && !x->tty && x->proc.stdin_fd >= 0) {
        pe_ev_io_stop(x->in_io);
        x->in_io = NULL;
        close(x->proc.stdin_fd);
        x->proc.stdin_fd = -1;
        return;
    }
    if (x->in_io)
        pe_ev_io_modify(x->in_io, x->in_len ? EPOLLOUT : 0, NULL);
}

static void on_input_ready(pe_ev_io *io, int fd, uint32_t events, void *ud)
{
    (void)io, (void)fd, (void)events;
    flush_input(ud);
}

/* ---- the end ---- */

static void on_exit_ready(pe_ev_io *io, int fd, uint32_t events, void *ud)
{
    eproc *x = ud;
    int code = -1, out_fd = x->tty ? x->proc.pty_fd : x->proc.stdout_fd;
    char status[48];
    pe_err err;

    (void)io, (void)fd, (void)events;
    /* What is left in the pipes goes before the end (at most 1024 reads:
     * a grandchild holding the pipe open does not hold the end back). */
    for (int i = 0;
         i < 1024 && x->out_io && !x->out_eof && pump(x, out_fd, x->tty ? "pty" : "stdout"); i++)
        ;
    for (int i = 0; i < 1024 && x->err_io && !x->err_eof && pump(x, x->proc.stderr_fd, "stderr");
         i++)
        ;
    pe_ev_io_stop(x->pid_io);
    x->pid_io = NULL;
    if (pe_proc_wait(&x->proc, &code, &err) < 0)
        pe_log_warn("e2b process %s/%u: %s", x->sandbox_id, x->pid, err.msg);
    x->reaped = true;
    if (code > 128)
        snprintf(status, sizeof(status), "signal: %d", code - 128);
    else
        snprintf(status, sizeof(status), "exit status %d", code);
    send_event(x, json_pack("{s:{s:i,s:b,s:s}}", "end", "exitCode", code, "exited", code <= 128,
                            "status", status));
    end_stream(x, NULL, NULL);
    maybe_free(x);
}

/* ---- starting (worker) ---- */

struct start {
    eproc *x;
    char **argv, **env;
    char *cwd;
    unsigned cols, rows;
    bool stdin_open;
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
                         .workdir = j->cwd,
                         .tty = j->x->tty,
                         .tty_cols = (unsigned short)j->cols,
                         .tty_rows = (unsigned short)j->rows,
                         .capture = !j->x->tty};
    char **senv = NULL, **all;
    size_t ns = 0, ne = 0;
    pe_store *s = pe_daemon_store(d, &j->err);

    if (s == NULL || pe_daemon_sandbox_env(d, s, j->x->sandbox_id, &senv, &j->err) < 0)
        return;
    while (senv[ns])
        ns++;
    while (j->env && j->env[ne])
        ne++;
    all = pe_xcalloc(ns + ne + 1, sizeof(*all));
    memcpy(all, senv, ns * sizeof(*all));
    if (ne)
        memcpy(all + ns, j->env, ne * sizeof(*all));
    opts.env = all;
    j->ok = pe_runtime_exec_start(&d->rt, j->x->sandbox_id, &opts, &j->proc, &j->err) == 0;
    free(all);
    pe_daemon_env_free(senv);
}

static pe_ev_io *watch(eproc *x, int fd, uint32_t events, pe_ev_io_cb cb, pe_err *err)
{
    return fd >= 0 ? pe_ev_io_start(x->d->loop, fd, events, cb, x, err) : NULL;
}

static void start_done(void *ud)
{
    struct start *j = ud;
    eproc *x = j->x;
    pe_daemon *d = x->d;
    pe_err err;

    x->starting = false;
    if (!j->ok) {
        char why[PE_ERR_MSG_MAX + 32];
        pe_log_info("e2b process %s: %s", x->sandbox_id, j->err.msg);
        snprintf(why, sizeof(why), "cannot start the command: %.200s", j->err.msg);
        end_stream(x, "internal", why);
    } else {
        x->proc = j->proc;
        x->have_proc = true;
        int fds[] = {x->proc.stdin_fd, x->proc.stdout_fd, x->proc.stderr_fd, x->proc.pty_fd};
        for (size_t i = 0; i < PE_ARRAY_LEN(fds); i++)
            if (fds[i] >= 0)
                fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
        pe_err_clear(&err);
        if (x->tty) {
            x->out_io = watch(x, x->proc.pty_fd, EPOLLIN, on_output, &err);
            x->in_io = watch(x, x->proc.pty_fd, 0, on_input_ready, &err);
        } else {
            x->out_io = watch(x, x->proc.stdout_fd, EPOLLIN, on_output, &err);
            x->err_io = watch(x, x->proc.stderr_fd, EPOLLIN, on_output, &err);
            x->in_io = watch(x, x->proc.stdin_fd, 0, on_input_ready, &err);
            if (!j->stdin_open)
                x->in_close = true;
        }
        x->pid_io = watch(x, x->proc.pidfd, EPOLLIN, on_exit_ready, &err);
        if (x->pid_io == NULL) {
            pe_log_warn("e2b process %s: %s", x->sandbox_id, err.msg);
            pe_proc_signal_group(&x->proc, SIGKILL);
        }
        send_event(x, json_pack("{s:{s:i}}", "start", "pid", (int)x->pid));
        flush_input(x);
    }
    free_strv(j->argv);
    free_strv(j->env);
    free(j->cwd);
    free(j);
    if (--d->inflight == 0 && d->draining)
        pe_ev_stop(d->loop);
    maybe_free(x);
}

/* ---- Start ---- */

/* The SDK's /bin/bash where there may be no bash: bash if the sandbox has
 * it, else sh with the same arguments. */
static char **argv_of(const char *cmd, const json_t *args)
{
    size_t n = json_array_size(args), k = 0, i;
    bool bash = strcmp(cmd, "/bin/bash") == 0;
    char **argv = pe_xcalloc(n + 6, sizeof(char *));
    json_t *v;

    if (bash) {
        argv[k++] = pe_xstrdup("/bin/sh");
        argv[k++] = pe_xstrdup("-c");
        argv[k++] = pe_xstrdup("[ -x /bin/bash ] && exec /bin/bash \"$@\"; exec /bin/sh \"$@\"");
    }
    argv[k++] = pe_xstrdup(cmd);
    json_array_foreach(args, i, v) argv[k++] = pe_xstrdup(json_string_value(v));
    return argv;
}

static bool strings_ok(const json_t *v, bool object)
{
    const char *k;
    json_t *e;
    size_t i;

    if (object) {
        json_object_foreach((json_t *)v, k,
                            e) if (!json_is_string(e) ||
                                   strlen(json_string_value(e)) != json_string_length(e) ||
                                   pe_daemon_check_env_name("envs", k, NULL) < 0) return false;
        return true;
    }
    json_array_foreach(v, i, e) if (!json_is_string(e) || strlen(json_string_value(e)) !=
                                                              json_string_length(e)) return false;
    return true;
}

static unsigned count_in(const char *sandbox_id)
{
    unsigned n = 0;

    for (eproc *x = procs; x; x = x->next)
        n += strcmp(x->sandbox_id, sandbox_id) == 0;
    return n;
}

json_t *pe__e2b_stream_request(pe_http_request *req, size_t max)
{
    const char *payload = NULL, *ct = pe_http_header(req, "Content-Type");
    size_t plen = 0;
    int r = pe__e2b_envelope_parse((const unsigned char *)req->body, req->body_len, max, &payload,
                                   &plen);
    json_t *in;

    if (ct == NULL || strncmp(ct, "application/connect+json", 24) != 0) {
        pe__e2b_connect_error(req, "invalid_argument",
                              "a server stream: Content-Type application/connect+json");
        return NULL;
    }
    if (r != ENV_OK) {
        pe__e2b_refuse_stream(req,
                              r == ENV_COMPRESSED ? "unimplemented"
                              : r == ENV_TOO_BIG  ? "resource_exhausted"
                                                  : "invalid_argument",
                              r == ENV_COMPRESSED ? "compressed envelopes are not supported"
                              : r == ENV_TOO_BIG  ? "the request envelope is too big"
                                                  : "the body must be exactly one envelope "
                                                    "(flags, 4-byte big-endian length, JSON)");
        return NULL;
    }
    in = json_loadb(payload, plen, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(in)) {
        json_decref(in);
        pe__e2b_refuse_stream(req, "invalid_argument", "the request must be a JSON object");
        return NULL;
    }
    return in;
}

static const pe_http_stream_callbacks stream_cb = {.on_drain = on_drain,
                                                   .on_close = on_stream_close};

/* Answer req with a stream of x's events; keepalives every ka seconds
 * (the Keepalive-Ping-Interval header) while anyone listens. */
static void listen_to(eproc *x, pe_http_request *req, const char *ka)
{
    char *end;
    long secs = ka ? strtol(ka, &end, 10) : 0;
    pe_err err;

    x->st[x->n_st++] =
        pe_http_respond_stream(req, 200, "application/connect+json", NULL, &stream_cb, x);
    if (ka && *end == '\0' && secs > 0 && secs <= KEEPALIVE_MAX && x->keepalive == NULL)
        x->keepalive = pe_ev_timer_start(x->d->loop, (uint64_t)secs * 1000000000ull,
                                         (uint64_t)secs * 1000000000ull, on_keepalive, x, &err);
}

static eproc *find(const char *sandbox_id, const json_t *sel);

/* Connect: one more listener of a running process, from now on. */
static void connect_to(pe_http_request *req, const char *sandbox_id)
{
    json_t *in = pe__e2b_stream_request(req, ENVELOPE_MAX);
    eproc *x;

    if (in == NULL)
        return;
    x = find(sandbox_id, json_object_get(in, "process"));
    json_decref(in);
    if (x == NULL) {
        pe__e2b_refuse_stream(req, "not_found", "process not found");
        return;
    }
    if (x->n_st == LISTENERS_MAX) {
        pe__e2b_refuse_stream(req, "resource_exhausted", "too many clients on this process");
        return;
    }
    listen_to(x, req, pe_http_header(req, "Keepalive-Ping-Interval"));
    pe__e2b_envelope_send(x->st[x->n_st - 1], 0,
                          json_pack("{s:{s:{s:i}}}", "event", "start", "pid", (int)x->pid));
    watch_output(x);
}

static void start(pe_daemon *d, pe_http_request *req, const char *sandbox_id)
{
    const char *ka = pe_http_header(req, "Keepalive-Ping-Interval");
    json_t *in, *p, *args, *envs, *size;
    const char *cmd, *cwd, *tag, *k;
    struct start *j;
    eproc *x;
    json_t *v;
    pe_err err;

    if ((in = pe__e2b_stream_request(req, ENVELOPE_MAX)) == NULL)
        return;
    p = json_object_get(in, "process");
    cmd = json_string_value(json_object_get(p, "cmd"));
    args = json_object_get(p, "args");
    envs = json_object_get(p, "envs");
    cwd = json_string_value(json_object_get(p, "cwd"));
    tag = json_string_value(json_object_get(in, "tag"));
    size = json_object_get(json_object_get(in, "pty"), "size");
    if (!json_is_object(p) || cmd == NULL || cmd[0] == '\0' ||
        (args &&
         (!json_is_array(args) || json_array_size(args) > ARGS_MAX || !strings_ok(args, false))) ||
        (envs && (!json_is_object(envs) || !strings_ok(envs, true))) ||
        (json_object_get(p, "cwd") && (cwd == NULL || (cwd[0] != '/' && cwd[0] != '\0')))) {
        json_decref(in);
        pe__e2b_refuse_stream(
            req, "invalid_argument",
            "expected {\"process\": {\"cmd\", \"args\": [strings], \"envs\": {NAME: "
            "string}, \"cwd\": \"/...\"}}");
        return;
    }
    if (count_in(sandbox_id) >= PROCS_PER_SANDBOX) {
        json_decref(in);
        pe__e2b_refuse_stream(req, "resource_exhausted", "too many processes in this sandbox");
        return;
    }
    x = pe_xcalloc(1, sizeof(*x));
    x->d = d;
    x->sandbox_id = pe_xstrdup(sandbox_id);
    x->tag = tag ? pe_xstrdup(tag) : NULL;
    x->pid = next_pid++;
    x->tty = json_is_object(json_object_get(in, "pty"));
    /* "o": the fresh defaults are taken, the request's values shared */
    x->config =
        json_pack("{s:s,s:o,s:o,s:s}", "cmd", cmd, "args", args ? json_incref(args) : json_array(),
                  "envs", envs ? json_incref(envs) : json_object(), "cwd", cwd ? cwd : "");
    x->proc.pid = -1;
    x->proc.pidfd = x->proc.signal_pidfd = x->proc.stdin_fd = x->proc.stdout_fd = -1;
    x->proc.stderr_fd = x->proc.pty_fd = x->proc.status_fd = -1;
    j = pe_xcalloc(1, sizeof(*j));
    j->x = x;
    j->argv = argv_of(cmd, args);
    j->cwd = cwd && cwd[0] ? pe_xstrdup(cwd) : NULL;
    j->stdin_open = json_is_true(json_object_get(in, "stdin"));
    j->cols = (unsigned)json_integer_value(json_object_get(size, "cols"));
    j->rows = (unsigned)json_integer_value(json_object_get(size, "rows"));
    if (j->cols < 1 || j->cols > PE_TERM_COLS_MAX || j->rows < 1 || j->rows > PE_TERM_ROWS_MAX)
        j->cols = 80, j->rows = 24;
    if (envs) {
        size_t i = 0;
        j->env = pe_xcalloc(json_object_size(envs) + 1, sizeof(char *));
        json_object_foreach(envs, k, v) j->env[i++] =
            pe_xasprintf("%s=%s", k, json_string_value(v));
    }
    json_decref(in);
    x->next = procs;
    procs = x;
    pe_daemon_hold(d, sandbox_id);
    x->starting = true;
    listen_to(x, req, ka);
    pe_err_clear(&err);
    if (pe_ev_submit(d->loop, start_work, start_done, j, &err) < 0) {
        x->starting = false;
        free_strv(j->argv);
        free_strv(j->env);
        free(j->cwd);
        free(j);
        end_stream(x, "unavailable", "the daemon is busy");
        maybe_free(x);
        return;
    }
    d->inflight++;
}

/* ---- the unary calls ---- */

static void respond_empty(pe_http_request *req)
{
    pe_http_respond(req, 200, "application/json", "{}", 2, NULL);
}

static eproc *selected(pe_http_request *req, const char *sandbox_id, const json_t *in)
{
    eproc *x = find(sandbox_id, json_object_get(in, "process"));

    if (x == NULL)
        pe__e2b_connect_error(req, "not_found", "process not found");
    return x;
}

static void send_input(pe_http_request *req, const char *sandbox_id, const json_t *in)
{
    const json_t *input = json_object_get(in, "input");
    const char *b64 = json_string_value(json_object_get(input, "stdin"));
    eproc *x;
    size_t len = 0;

    if (b64 == NULL)
        b64 = json_string_value(json_object_get(input, "pty"));
    if (b64 == NULL) {
        pe__e2b_connect_error(req, "invalid_argument", "input: {\"stdin\" | \"pty\": base64}");
        return;
    }
    if ((x = selected(req, sandbox_id, in)) == NULL)
        return;
    if (x->in_close || stdin_fd(x) < 0) {
        pe__e2b_connect_error(req, "failed_precondition", "the process's stdin is closed");
        return;
    }
    if (x->in_len + strlen(b64) / 4 * 3 > STDIN_MAX) {
        pe__e2b_connect_error(req, "resource_exhausted",
                              "the process has not read its earlier input yet");
        return;
    }
    x->in = pe_xrealloc(x->in, x->in_len + strlen(b64) / 4 * 3 + 3);
    if (sodium_base642bin((unsigned char *)x->in + x->in_len, strlen(b64) / 4 * 3 + 3, b64,
                          strlen(b64), NULL, &len, NULL, sodium_base64_VARIANT_ORIGINAL) != 0) {
        pe__e2b_connect_error(req, "invalid_argument", "input: not base64");
        return;
    }
    x->in_len += len;
    pe_daemon_touch(x->d, sandbox_id);
    flush_input(x);
    respond_empty(req);
}

static int signal_of(const char *s)
{
    if (s && strcmp(s, "SIGNAL_SIGKILL") == 0)
        return SIGKILL;
    if (s && strcmp(s, "SIGNAL_SIGTERM") == 0)
        return SIGTERM;
    return 0;
}

static void list(pe_http_request *req, const char *sandbox_id)
{
    json_t *a = json_array(), *o;
    char *text;

    for (eproc *x = procs; x; x = x->next) {
        if (strcmp(x->sandbox_id, sandbox_id) != 0 || !x->have_proc || x->reaped)
            continue;
        o = json_pack("{s:O,s:i}", "config", x->config, "pid", (int)x->pid);
        if (x->tag)
            json_object_set_new(o, "tag", json_string(x->tag));
        json_array_append_new(a, o);
    }
    o = json_pack("{s:o}", "processes", a);
    text = json_dumps(o, JSON_COMPACT);
    pe_http_respond(req, 200, "application/json", text, strlen(text), NULL);
    free(text);
    json_decref(o);
}

void pe__e2b_process(pe_daemon *d, pe_http_request *req, const char *did, const char *sandbox_id,
                     const char *method)
{
    const char *ct = pe_http_header(req, "Content-Type");
    json_t *in;
    eproc *x;
    int sig;

    (void)did; /* the sandbox is the caller's: checked; its processes are */
    if (strcmp(req->method, "POST") != 0) {
        pe__e2b_connect_error(req, "invalid_argument", "Connect calls are POSTs");
        return;
    }
    if (strcmp(method, "Start") == 0) {
        start(d, req, sandbox_id);
        return;
    }
    if (strcmp(method, "Connect") == 0) {
        connect_to(req, sandbox_id);
        return;
    }
    if (strcmp(method, "StreamInput") == 0) {
        pe__e2b_connect_error(req, "unimplemented",
                              "process.Process/StreamInput is not served: use SendInput");
        return;
    }
    if (ct == NULL || strncmp(ct, "application/json", 16) != 0) {
        pe__e2b_connect_error(req, "invalid_argument",
                              "Connect unary calls: Content-Type application/json");
        return;
    }
    in = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(in)) {
        json_decref(in);
        pe__e2b_connect_error(req, "invalid_argument", "the request must be a JSON object");
        return;
    }
    if (strcmp(method, "List") == 0) {
        list(req, sandbox_id);
    } else if (strcmp(method, "SendInput") == 0) {
        send_input(req, sandbox_id, in);
    } else if (strcmp(method, "CloseStdin") == 0) {
        if ((x = selected(req, sandbox_id, in)) != NULL) {
            x->in_close = true;
            flush_input(x);
            respond_empty(req);
        }
    } else if (strcmp(method, "SendSignal") == 0) {
        if ((sig = signal_of(json_string_value(json_object_get(in, "signal")))) == 0)
            pe__e2b_connect_error(req, "invalid_argument",
                                  "signal: SIGNAL_SIGKILL or SIGNAL_SIGTERM");
        else if ((x = selected(req, sandbox_id, in)) != NULL) {
            pe_proc_signal_group(&x->proc, sig);
            respond_empty(req);
        }
    } else if (strcmp(method, "Update") == 0) {
        const json_t *size = json_object_get(json_object_get(in, "pty"), "size");
        json_int_t cols = json_integer_value(json_object_get(size, "cols"));
        json_int_t rows = json_integer_value(json_object_get(size, "rows"));
        if (cols < 1 || cols > PE_TERM_COLS_MAX || rows < 1 || rows > PE_TERM_ROWS_MAX)
            pe__e2b_connect_error(req, "invalid_argument", "pty.size: cols and rows in range");
        else if ((x = selected(req, sandbox_id, in)) != NULL) {
            struct winsize wsz = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
            if (x->tty)
                ioctl(x->proc.pty_fd, TIOCSWINSZ, &wsz);
            respond_empty(req);
        }
    } else {
        pe__e2b_connect_error(req, "unimplemented", "no such method of process.Process");
    }
    json_decref(in);
}

void pe__e2b_process_shutdown(pe_daemon *d)
{
    (void)d;
    while (procs) {
        eproc *x = procs;
        end_stream(x, "unavailable", "the daemon is shutting down");
        if (x->have_proc && !x->reaped) {
            int code;
            pe_err err;
            pe_proc_signal_group(&x->proc, SIGKILL);
            pe_proc_wait(&x->proc, &code, &err);
            x->reaped = true;
        }
        x->starting = false;
        maybe_free(x);
        if (procs == x) /* not freeable: never happens, but never loop */
            unlink_proc(x);
    }
}
