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
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "e2b.h"
#include "sandbox-env.h"
#include "sandbox-proc.h"
#include "terminal.h"

#define ENVELOPE_MAX (256 * 1024) /* a Start request */
#define ARGS_MAX 4096
#define STDIN_MAX (1024 * 1024) /* stdin queued, not yet read by the process */
#define HIGH_WATER (1024 * 1024)
#define KEEPALIVE_MAX 3600
#define PROCS_PER_SANDBOX 256
#define LISTENERS_MAX 8 /* streams of one process: Start's and Connect's */

typedef struct eproc {
    pe_daemon *d;
    char *sandbox_id, *tag;
    unsigned pid;
    json_t *config; /* {cmd, args, envs, cwd} as asked: List's */
    bool tty, starting;
    pe_sbproc *p; /* NULL once it could not start */
    /* Who listens: Start's stream, then Connect's (re-attached clients);
     * none once they are gone. */
    pe_http_stream *st[LISTENERS_MAX];
    unsigned n_st;
    pe_ev_timer *keepalive;
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
    if (x->n_st || x->starting || (x->p && pe_sbproc_running(x->p)))
        return;
    unlink_proc(x);
    pe_ev_timer_stop(x->keepalive);
    pe_sbproc_free(x->p);
    pe_daemon_release(x->d, x->sandbox_id);
    json_decref(x->config);
    free(x->tag);
    free(x->sandbox_id);
    free(x);
}

static eproc *find(const char *sandbox_id, const json_t *sel)
{
    const json_t *pid = json_object_get(sel, "pid");
    const char *tag = json_string_value(json_object_get(sel, "tag"));

    for (eproc *x = procs; x; x = x->next) {
        if (strcmp(x->sandbox_id, sandbox_id) != 0 || x->p == NULL || !pe_sbproc_running(x->p))
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
    if (x->p)
        pe_sbproc_read(x->p, room);
}

static void on_output(pe_sbproc *p, int which, const unsigned char *buf, size_t n, void *ud)
{
    eproc *x = ud;
    size_t len = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
    char *b64;

    if (x->n_st) {
        b64 = pe_xmalloc(len);
        sodium_bin2base64(b64, len, buf, n, sodium_base64_VARIANT_ORIGINAL);
        send_event(x, json_pack("{s:{s:s}}", "data",
                                x->tty       ? "pty"
                                : which == 2 ? "stderr"
                                             : "stdout",
                                b64));
        free(b64);
    }
    (void)p;
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

/* ---- the start and the end ---- */

static void on_started(pe_sbproc *p, const pe_err *err, void *ud)
{
    eproc *x = ud;

    x->starting = false;
    if (err) {
        char why[PE_ERR_MSG_MAX + 32];
        pe_log_info("e2b process %s: %s", x->sandbox_id, err->msg);
        snprintf(why, sizeof(why), "cannot start the command: %.200s", err->msg);
        end_stream(x, pe__e2b_connect_code(err->code), why);
        pe_sbproc_free(p);
        x->p = NULL;
    } else {
        send_event(x, json_pack("{s:{s:i}}", "start", "pid", (int)x->pid));
        watch_output(x);
    }
    maybe_free(x);
}

static void on_exited(pe_sbproc *p, int code, void *ud)
{
    eproc *x = ud;
    char status[48];

    (void)p;
    if (code > 128)
        snprintf(status, sizeof(status), "signal: %d", code - 128);
    else
        snprintf(status, sizeof(status), "exit status %d", code);
    send_event(x, json_pack("{s:{s:i,s:b,s:s}}", "end", "exitCode", code, "exited", code <= 128,
                            "status", status));
    end_stream(x, NULL, NULL);
    maybe_free(x);
}

static const pe_sbproc_callbacks proc_cb = {
    .started = on_started, .output = on_output, .exited = on_exited};

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

/* cmd and args as the SDK sent them. */
static char **argv_plain(const char *cmd, const json_t *args)
{
    size_t n = json_array_size(args), k = 0, i;
    char **argv = pe_xcalloc(n + 2, sizeof(char *));
    json_t *v;

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
    pe_sbproc_spec j = {0};
    bool stdin_open;
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
    stdin_open = json_is_true(json_object_get(in, "stdin"));
    /* "o": the fresh defaults are taken, the request's values shared */
    x->config =
        json_pack("{s:s,s:o,s:o,s:s}", "cmd", cmd, "args", args ? json_incref(args) : json_array(),
                  "envs", envs ? json_incref(envs) : json_object(), "cwd", cwd ? cwd : "");
    j.sandbox_id = sandbox_id;
    j.tty = x->tty;
    j.stdin_required = stdin_open;
    j.argv = argv_of(cmd, args);
    /* A remote provider's image is its own: the SDK's command as it is. */
    j.remote_argv = argv_plain(cmd, args);
    j.workdir = cwd && cwd[0] ? pe_xstrdup(cwd) : NULL;
    j.cols = (unsigned)json_integer_value(json_object_get(size, "cols"));
    j.rows = (unsigned)json_integer_value(json_object_get(size, "rows"));
    if (j.cols < 1 || j.cols > PE_TERM_COLS_MAX || j.rows < 1 || j.rows > PE_TERM_ROWS_MAX)
        j.cols = 80, j.rows = 24;
    if (envs) {
        size_t i = 0;
        j.env = pe_xcalloc(json_object_size(envs) + 1, sizeof(char *));
        json_object_foreach(envs, k, v) j.env[i++] = pe_xasprintf("%s=%s", k, json_string_value(v));
    }
    json_decref(in);
    x->next = procs;
    procs = x;
    pe_daemon_hold(d, sandbox_id);
    x->starting = true;
    listen_to(x, req, ka);
    pe_err_clear(&err);
    if ((x->p = pe_sbproc_start(d, &j, &proc_cb, x, &err)) == NULL) {
        x->starting = false;
        end_stream(x, "unavailable", "the daemon is busy");
        maybe_free(x);
        return;
    }
    if (!stdin_open && !x->tty)
        pe_sbproc_close_stdin(x->p); /* once it starts */
    watch_output(x);
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
    unsigned char *buf;
    size_t len = 0;

    if (b64 == NULL)
        b64 = json_string_value(json_object_get(input, "pty"));
    if (b64 == NULL) {
        pe__e2b_connect_error(req, "invalid_argument", "input: {\"stdin\" | \"pty\": base64}");
        return;
    }
    if ((x = selected(req, sandbox_id, in)) == NULL)
        return;
    if (!pe_sbproc_stdin_open(x->p)) {
        pe__e2b_connect_error(req, "failed_precondition", "the process's stdin is closed");
        return;
    }
    if (pe_sbproc_queued(x->p) + strlen(b64) / 4 * 3 > STDIN_MAX) {
        pe__e2b_connect_error(req, "resource_exhausted",
                              "the process has not read its earlier input yet");
        return;
    }
    buf = pe_xmalloc(strlen(b64) / 4 * 3 + 3);
    if (sodium_base642bin(buf, strlen(b64) / 4 * 3 + 3, b64, strlen(b64), NULL, &len, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0) {
        free(buf);
        pe__e2b_connect_error(req, "invalid_argument", "input: not base64");
        return;
    }
    pe_sbproc_write(x->p, buf, len);
    free(buf);
    pe_daemon_touch(x->d, sandbox_id);
    respond_empty(req);
}

/* SendSignal's signal: E2B's enum names SIGNAL_SIGKILL and SIGNAL_SIGTERM
 * only; the other common signals are taken by the same shape of name
 * (SIGNAL_SIGINT…), and any as its number (protobuf's JSON allows an
 * enum's number), so that an interrupt or a reload reaches the process. */
static int signal_of(const json_t *v)
{
    static const struct {
        const char *name;
        int sig;
    } names[] = {
        {"SIGNAL_SIGKILL", SIGKILL}, {"SIGNAL_SIGTERM", SIGTERM},   {"SIGNAL_SIGINT", SIGINT},
        {"SIGNAL_SIGHUP", SIGHUP},   {"SIGNAL_SIGQUIT", SIGQUIT},   {"SIGNAL_SIGUSR1", SIGUSR1},
        {"SIGNAL_SIGUSR2", SIGUSR2}, {"SIGNAL_SIGSTOP", SIGSTOP},   {"SIGNAL_SIGCONT", SIGCONT},
        {"SIGNAL_SIGTSTP", SIGTSTP}, {"SIGNAL_SIGWINCH", SIGWINCH}, {"SIGNAL_SIGALRM", SIGALRM}};
    const char *s = json_string_value(v);

    if (json_is_integer(v))
        return json_integer_value(v) > 0 && json_integer_value(v) < 65 ? (int)json_integer_value(v)
                                                                       : 0;
    for (size_t i = 0; s && i < PE_ARRAY_LEN(names); i++)
        if (strcmp(s, names[i].name) == 0)
            return names[i].sig;
    return 0;
}

static void list(pe_http_request *req, const char *sandbox_id)
{
    json_t *a = json_array(), *o;
    char *text;

    for (eproc *x = procs; x; x = x->next) {
        if (strcmp(x->sandbox_id, sandbox_id) != 0 || x->p == NULL || !pe_sbproc_running(x->p))
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
            pe_sbproc_close_stdin(x->p);
            respond_empty(req);
        }
    } else if (strcmp(method, "SendSignal") == 0) {
        if ((sig = signal_of(json_object_get(in, "signal"))) == 0)
            pe__e2b_connect_error(req, "invalid_argument",
                                  "signal: SIGNAL_SIGKILL, SIGNAL_SIGTERM, SIGNAL_SIGINT (or "
                                  "another SIGNAL_SIG<NAME>), or a number 1 to 64");
        else if ((x = selected(req, sandbox_id, in)) != NULL) {
            pe_sbproc_signal(x->p, sig);
            respond_empty(req);
        }
    } else if (strcmp(method, "Update") == 0) {
        const json_t *size = json_object_get(json_object_get(in, "pty"), "size");
        json_int_t cols = json_integer_value(json_object_get(size, "cols"));
        json_int_t rows = json_integer_value(json_object_get(size, "rows"));
        if (cols < 1 || cols > PE_TERM_COLS_MAX || rows < 1 || rows > PE_TERM_ROWS_MAX)
            pe__e2b_connect_error(req, "invalid_argument", "pty.size: cols and rows in range");
        else if ((x = selected(req, sandbox_id, in)) != NULL) {
            pe_sbproc_resize(x->p, (unsigned)cols, (unsigned)rows);
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
        pe_sbproc_free(x->p); /* killed and reaped (freed when a start ends) */
        x->p = NULL;
        x->starting = false;
        maybe_free(x);
        if (procs == x) /* not freeable: never happens, but never loop */
            unlink_proc(x);
    }
}
