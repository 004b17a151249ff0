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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "resource-limits.h"
#include "sandbox-env.h"
#include "sandbox-proc.h"
#include "terminal.h"

#define PREFIX "/exec/"
#define SPEC_MAX (256 * 1024)     /* the command message */
#define MESSAGE_MAX (1024 * 1024) /* a stdin message */
#define WINDOW (1024 * 1024)      /* stdin bytes in flight */
#define HIGH_WATER (1024 * 1024)  /* output queued for the client */
#define ARGS_MAX 4096
#define KILL_GRACE_NS (2ull * 1000000000ull)

enum { ST_SPEC, ST_STARTING, ST_RUNNING, ST_DONE };

typedef struct xstream {
    pe_daemon *d;
    pe_http_ws *ws; /* NULL once the client is gone */
    char *did, *sandbox_id;
    int64_t iat;
    int state;
    pe_sbproc *p;  /* from the spec on */
    bool stopping; /* the daemon is stopping: it waits (one inflight) for this end */
    pe_ev_timer *kill_timer;
    size_t window; /* stdin bytes the client may still send */
    bool in_eof;   /* the client said stdin ends */
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
    if (x->ws || x->state == ST_STARTING || (x->p && pe_sbproc_running(x->p)))
        return;
    unlink_stream(x);
    pe_ev_timer_stop(x->kill_timer);
    pe_sbproc_free(x->p);
    if (x->sandbox_id)
        pe_daemon_release(x->d, x->sandbox_id);
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

    if (x->p)
        pe_sbproc_signal(x->p, SIGKILL);
}

/* The client is gone (or must be): end the process, HUP then KILL. */
static void end_process(xstream *x)
{
    pe_err err;

    if (x->p == NULL || !pe_sbproc_running(x->p) || x->kill_timer)
        return;
    pe_sbproc_signal(x->p, SIGHUP);
    x->kill_timer = pe_ev_timer_start(x->d->loop, KILL_GRACE_NS, 0, on_kill_timer, x, &err);
    if (x->kill_timer == NULL)
        pe_sbproc_signal(x->p, SIGKILL);
}

/* The daemon is stopping: SIGTERM now, SIGKILL after the grace, and the
 * daemon waits for the end (one inflight each) so that the client hears
 * why rather than a dropped connection. */
static void stop_process(xstream *x)
{
    pe_err err;

    if (x->p == NULL || !pe_sbproc_running(x->p) || x->stopping)
        return;
    x->stopping = true;
    x->d->inflight++;
    pe_sbproc_signal(x->p, SIGTERM);
    if (x->kill_timer == NULL)
        x->kill_timer = pe_ev_timer_start(x->d->loop, KILL_GRACE_NS, 0, on_kill_timer, x, &err);
    if (x->kill_timer == NULL)
        pe_sbproc_signal(x->p, SIGKILL);
}

/* ---- output ---- */

static void watch_output(xstream *x)
{
    if (x->p)
        pe_sbproc_read(x->p, x->ws && pe_http_ws_pending(x->ws) < HIGH_WATER);
}

/* Output on stream `which` (1 stdout or the PTY, 2 stderr): one binary
 * message, the stream's byte first. */
static void on_output(pe_sbproc *p, int which, const unsigned char *buf, size_t n, void *ud)
{
    static unsigned char msg[1 + 64 * 1024]; /* loop thread */
    xstream *x = ud;

    (void)p;
    for (size_t off = 0; off < n && x->ws;) {
        size_t k = n - off < sizeof(msg) - 1 ? n - off : sizeof(msg) - 1;
        msg[0] = (unsigned char)which;
        memcpy(msg + 1, buf + off, k);
        pe_http_ws_send(x->ws, true, msg, k + 1);
        off += k;
    }
    watch_output(x);
}

static void on_drain(pe_http_ws *ws, void *ud)
{
    watch_output(ud);
}

/* ---- input ---- */

/* stdin was written: grant the client the room it made. */
static void on_wrote(pe_sbproc *p, size_t n, void *ud)
{
    xstream *x = ud;

    (void)p;
    x->window += n;
    control(x, json_pack("{s:s,s:I}", "type", "window", "bytes", (json_int_t)n));
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
        pe_sbproc_close_stdin(x->p);
    } else if (type && strcmp(type, "signal") == 0 &&
               (sig = signal_of(json_object_get(o, "signal"))) > 0) {
        pe_sbproc_signal(x->p, sig);
    } else if (type && strcmp(type, "resize") == 0) {
        if (pe__term_resize_message(data, len, true, &cols, &rows) == PE_TERM_RESIZE_OK)
            pe_sbproc_resize(x->p, cols, rows);
    } else {
        finish(x, 1008, "expected {\"type\": \"eof\" | \"signal\" | \"resize\", ...}");
        end_process(x);
    }
    json_decref(o);
}

/* ---- start and end ---- */

static void free_strv(char **v)
{
    for (char **p = v; p && *p; p++)
        free(*p);
    free(v);
}

static void on_started(pe_sbproc *p, const pe_err *err, void *ud)
{
    xstream *x = ud;
    pe_daemon *d = x->d;

    x->state = ST_RUNNING;
    if (err) {
        char why[PE_ERR_MSG_MAX + 32];
        pe_log_info("exec stream %s: %s", x->sandbox_id, err->msg);
        snprintf(why, sizeof(why), "cannot start the command: %.200s", err->msg);
        finish(x, 1011, why);
        x->state = ST_DONE;
        pe_sbproc_free(p);
        x->p = NULL;
    } else {
        control(x, json_pack("{s:s}", "type", "started"));
        control(x, json_pack("{s:s,s:I}", "type", "window", "bytes", (json_int_t)x->window));
        if (d->draining)
            stop_process(x);
        else if (x->ws == NULL) /* the client left while it started */
            end_process(x);
        watch_output(x);
    }
    maybe_free(x);
}

/* A SIGKILL the OOM killer dealt (the sandbox's count went up while the
 * command ran) is said on stderr before the exit code: 137 alone reads
 * as "killed by someone". Reads two small cgroup files on the loop
 * thread, only after a SIGKILL. */
static void say_if_oom(xstream *x, int code)
{
    unsigned char msg[1 + 192];
    int64_t kills = -1, limit = 0, before, before_limit;

    pe_sbproc_oom_before(x->p, &before, &before_limit);
    if (code != 128 + SIGKILL || before < 0 || x->ws == NULL ||
        pe_runtime_oom_kills(&x->d->rt, x->sandbox_id, &kills, &limit, NULL) < 0 || kills <= before)
        return;
    msg[0] = 2;
    pe_daemon_oom_note(limit > 0 ? limit : before_limit, (char *)msg + 1, sizeof(msg) - 1);
    pe_http_ws_send(x->ws, true, msg, 1 + strlen((char *)msg + 1));
}

static void on_exited(pe_sbproc *p, int code, void *ud)
{
    xstream *x = ud;
    char reason[32];

    (void)p;
    x->state = ST_DONE;
    if (x->stopping) {
        pe_daemon *d = x->d;
        finish(x, 1001, "the daemon is shutting down: the command was stopped");
        maybe_free(x);
        if (--d->inflight == 0 && d->draining)
            pe_ev_stop(d->loop);
        return;
    }
    say_if_oom(x, code);
    if (x->ws) {
        control(x, json_pack("{s:s,s:i}", "type", "exit", "code", code));
        snprintf(reason, sizeof(reason), "exit %d", code);
        finish(x, 1000, reason);
    }
    maybe_free(x);
}

static const pe_sbproc_callbacks proc_cb = {
    .started = on_started, .output = on_output, .wrote = on_wrote, .exited = on_exited};

/* ---- the WebSocket ---- */

/* The first message: what to run. */
static void on_spec(xstream *x, const char *data, size_t len)
{
    json_t *o = json_loadb(data, len, JSON_REJECT_DUPLICATES, NULL);
    const json_t *argv = json_object_get(o, "argv"), *command = json_object_get(o, "command");
    const json_t *env = json_object_get(o, "env"), *tty = json_object_get(o, "tty");
    const char *workdir = json_string_value(json_object_get(o, "workdir"));
    pe_sbproc_spec j = {0};
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
    j.sandbox_id = x->sandbox_id;
    j.tty = json_is_true(tty);
    j.cols = (unsigned)json_integer_value(json_object_get(o, "cols"));
    j.rows = (unsigned)json_integer_value(json_object_get(o, "rows"));
    if (j.cols < 1 || j.cols > PE_TERM_COLS_MAX || j.rows < 1 || j.rows > PE_TERM_ROWS_MAX)
        j.cols = 80, j.rows = 24;
    j.workdir = workdir ? pe_xstrdup(workdir) : NULL;
    if (argv) {
        j.argv = pe_xcalloc(json_array_size(argv) + 1, sizeof(char *));
        json_array_foreach(argv, i, v)
        {
            if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
                break;
            j.argv[n++] = pe_xstrdup(json_string_value(v));
        }
    } else {
        j.argv = pe_xcalloc(4, sizeof(char *));
        j.argv[0] = pe_xstrdup("/bin/sh");
        j.argv[1] = pe_xstrdup("-c");
        j.argv[2] = pe_xstrdup(json_string_value(command));
        n = 3;
    }
    if (env) {
        j.env = pe_xcalloc(json_object_size(env) + 1, sizeof(char *));
        i = 0;
        json_object_foreach((json_t *)env, k, v)
        {
            if (!json_is_string(v) || pe_daemon_check_env_name("env", k, NULL) < 0)
                break;
            j.env[i++] = pe_xasprintf("%s=%s", k, json_string_value(v));
        }
        if (i != json_object_size(env))
            n = 0; /* refused below */
    }
    bad = (argv && n != json_array_size(argv)) || n == 0;
    json_decref(o); /* argv, env: o's */
    if (bad) {
        free_strv(j.argv);
        free_strv(j.env);
        free(j.workdir);
        finish(x, 1008, "argv and env values must be strings without NUL, env names shell names");
        return;
    }
    pe_err_clear(&err);
    x->state = ST_STARTING;
    if ((x->p = pe_sbproc_start(x->d, &j, &proc_cb, x, &err)) == NULL) {
        x->state = ST_DONE;
        finish(x, 1011, "the daemon is busy");
        return;
    }
    watch_output(x);
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
    pe_daemon_touch(x->d, x->sandbox_id);
    if (x->p)
        pe_sbproc_write(x->p, data, len);
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
        pe_sbproc_free(x->p); /* killed and reaped */
        x->p = NULL;
        x->state = ST_DONE;
        maybe_free(x);
    }
}
