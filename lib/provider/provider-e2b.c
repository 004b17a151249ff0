/* E2B (reference §9): a REST control plane under base_url (public default
 * https://api.e2b.app, key in X-API-Key) and, per sandbox, envd: Connect-RPC
 * with the JSON codec plus an HTTP /files API.
 *
 * envd is reached the way E2B's shared sandbox host wants it: one host
 * (https://sandbox.DOMAIN for an https://api.DOMAIN base, else base_url
 * itself: a self-hosted E2B or a double) and the headers E2b-Sandbox-Id and
 * E2b-Sandbox-Port naming the sandbox. envd calls carry the sandbox's
 * envdAccessToken (sandboxes are created secure), never the API key: the
 * key stays with the control plane. The token is read from the sandbox
 * each time (nothing cached between calls), like Daytona's toolbox URL.
 *
 * Exec is process.Process/Start, a server stream of 5-byte envelopes
 * (flags, big-endian length, JSON) read on the pump thread; its stdin, a
 * PTY's keys and size, and a kill are unary calls (SendInput, CloseStdin,
 * Update, SendSignal) on the stream's side thread, naming the process by a
 * tag of ours (known before envd answered its pid).
 *
 * Stop is E2B's pause (files and memory kept), start its connect. CPU,
 * memory and disk are the template's: create takes none. A port's preview
 * is https://{port}-{id}.DOMAIN/ for an https://api.DOMAIN base (public:
 * sandboxes are made without allowPublicTraffic=false), else the shared
 * host with the headers naming sandbox and port, as envd is reached. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sodium.h>

#include "core/util.h"
#include "provider-internal.h"

#define NAME "e2b"
#define DEFAULT_URL "https://api.e2b.app"
#define ENVD_PORT "49983"
/* sandboxes end at their timeout; autoPause makes that a pause, so a
 * forgotten sandbox keeps its files instead of vanishing */
#define SANDBOX_TIMEOUT_S 3600
#define ENVELOPE_MAX (4u << 20)
#define KEY_HEADER "X-API-Key"

static int e2_open(pe_provider *p, pe_err *err)
{
    if (p->cfg.creds.base_url == NULL)
        p->cfg.creds.base_url = pe_xstrdup(DEFAULT_URL);
    return 0;
}

static int e2_api(pe_provider *p, const char *method, const char *url, json_t *body,
                  bool idempotent, json_t **out, const char *what, pe_err *err)
{
    pe__preq rq = {
        .method = method, .url = url, .idempotent = idempotent, .key_header = KEY_HEADER};

    return pe__provider_json_req(p, &rq, body, JSON_OBJECT, out, what, err);
}

static int e2_get(pe_provider *p, const char *id, json_t **sb, pe_err *err)
{
    char *eid = pe__url_escape(id), *url = pe__provider_url(p, "/sandboxes/%s", eid);
    int r = e2_api(p, "GET", url, NULL, true, sb, "get a sandbox", err);

    free(eid);
    free(url);
    return r;
}

static const char *e2_state(json_t *sb)
{
    const char *s = json_string_value(json_object_get(sb, "state"));
    return s ? s : "";
}

static int e2_remove(pe_provider *p, const char *id, pe_err *err)
{
    char *eid = pe__url_escape(id), *url = pe__provider_url(p, "/sandboxes/%s", eid);
    int r = e2_api(p, "DELETE", url, NULL, true, NULL, "delete a sandbox", err);

    free(eid);
    free(url);
    return r;
}

static int e2_probe_running(pe_provider *p, const char *id, void *ud, pe_err *err)
{
    json_t *sb = NULL;
    int r;

    if (e2_get(p, id, &sb, err) < 0)
        return -1;
    r = strcmp(e2_state(sb), "running") == 0;
    json_decref(sb);
    return r;
}

static int e2_create(pe_provider *p, const pe_provider_spec *spec, char **id, pe_err *err)
{
    json_t *body, *sb = NULL;
    char *url = pe__provider_url(p, "/sandboxes");
    const char *sid;
    int r;

    /* a snapshot is a template to E2B (reference 9.6) */
    body =
        json_pack("{s:s, s:i, s:b, s:b, s:o, s:{s:s}}", "templateID",
                  spec->snapshot ? spec->snapshot
                  : spec->image  ? spec->image
                                 : "base",
                  "timeout", SANDBOX_TIMEOUT_S, "secure", 1, "autoPause", 1, "envVars",
                  pe__env_object(spec->env), "metadata", "pocketenv", spec->name ? spec->name : "");
    /* not idempotent: a second POST makes a second sandbox */
    r = e2_api(p, "POST", url, body, false, &sb, "create a sandbox", err);
    free(url);
    json_decref(body);
    if (r < 0)
        return -1;
    sid = json_string_value(json_object_get(sb, "sandboxID"));
    if (sid == NULL || sid[0] == '\0' || strlen(sid) > 128) {
        json_decref(sb);
        return pe__provider_fail(p, err, PE_EREMOTE, NAME " answered create without a sandboxID");
    }
    *id = pe_xstrdup(sid);
    json_decref(sb);
    return pe__provider_create_settle(p, spec, id, "running", e2_probe_running, NULL, err);
}

static int e2_stop(pe_provider *p, const char *id, pe_err *err)
{
    char *eid = pe__url_escape(id), *url = pe__provider_url(p, "/sandboxes/%s/pause", eid);
    pe__preq rq = {.method = "POST", .url = url, .idempotent = true, .key_header = KEY_HEADER};
    pe__presp rs;
    int r = pe__provider_http(p, &rq, &rs, "pause a sandbox", err);

    /* 409: paused already, which is what was asked */
    if (r < 0 && rs.status == 409) {
        pe_err_clear(err);
        r = 0;
    }
    pe__presp_free(&rs);
    free(eid);
    free(url);
    return r;
}

static int e2_start(pe_provider *p, const char *id, pe_err *err)
{
    char *eid = pe__url_escape(id), *url = pe__provider_url(p, "/sandboxes/%s/connect", eid);
    json_t *body = json_pack("{s:i}", "timeout", SANDBOX_TIMEOUT_S), *sb = NULL;
    int r = e2_api(p, "POST", url, body, true, &sb, "resume a sandbox", err);

    json_decref(body);
    json_decref(sb);
    free(eid);
    free(url);
    return r < 0 ? -1 : pe__provider_poll(p, id, "running", e2_probe_running, NULL, err);
}

static int e2_status(pe_provider *p, const char *id, pe_provider_status *st, pe_err *err)
{
    json_t *sb = NULL;

    if (e2_get(p, id, &sb, err) < 0)
        return -1;
    snprintf(st->raw, sizeof(st->raw), "%s", e2_state(sb));
    if (strcmp(st->raw, "running") == 0)
        st->state = PE_PSTATE_RUNNING;
    else if (strcmp(st->raw, "paused") == 0)
        st->state = PE_PSTATE_STOPPED; /* our stop is its pause */
    json_decref(sb);
    return 0;
}

/* ---- envd ---- */

/* How to reach one sandbox's envd: its URL and headers (the token is a
 * secret: wiped at e2_envd_free). */
typedef struct e2_envd {
    char *url;
    char *hdr[5]; /* sandbox id, port, access token, user; NULL-terminated */
} e2_envd;

static void e2_envd_free(e2_envd *e)
{
    free(e->url);
    for (size_t i = 0; i < PE_ARRAY_LEN(e->hdr); i++)
        pe__secret_free(e->hdr[i]);
    memset(e, 0, sizeof(*e));
}

/* The shared sandbox host of base_url: https://api.X -> https://sandbox.X. */
static char *e2_envd_base(pe_provider *p)
{
    const char *b = p->cfg.creds.base_url;
    size_t n = strlen(b);

    while (n > 0 && b[n - 1] == '/')
        n--;
    if (strncmp(b, "https://api.", 12) == 0)
        return pe_xasprintf("https://sandbox.%.*s", (int)(n - 12), b + 12);
    return pe_xasprintf("%.*s", (int)n, b);
}

static int e2_envd_get(pe_provider *p, const char *id, e2_envd *e, pe_err *err)
{
    json_t *sb = NULL;
    const char *tok;
    size_t k = 0;

    memset(e, 0, sizeof(*e));
    if (e2_get(p, id, &sb, err) < 0)
        return -1;
    if (strcmp(e2_state(sb), "running") != 0) {
        pe_err_set(err, PE_EINVAL, 0, NAME ": sandbox %s is %s, not running", id, e2_state(sb));
        json_decref(sb);
        return -1;
    }
    tok = json_string_value(json_object_get(sb, "envdAccessToken"));
    e->url = e2_envd_base(p);
    e->hdr[k++] = pe_xasprintf("E2b-Sandbox-Id: %s", id);
    e->hdr[k++] = pe_xstrdup("E2b-Sandbox-Port: " ENVD_PORT);
    if (tok)
        e->hdr[k++] = pe_xasprintf("X-Access-Token: %s", tok);
    /* the Linux user, as the SDK picks it: "user" (Basic "user:") */
    e->hdr[k++] = pe_xstrdup("Authorization: Basic dXNlcjo=");
    json_decref(sb);
    return 0;
}

/* A unary Connect call (JSON codec) to envd. */
static int e2_rpc(pe_provider *p, const e2_envd *e, const char *method, json_t *body, json_t **out,
                  const char *what, pe_err *err)
{
    char *url = pe_xasprintf("%s/%s", e->url, method);
    const char *hdrs[PE_ARRAY_LEN(e->hdr) + 1] = {"Connect-Protocol-Version: 1"};
    pe__preq rq = {.method = "POST", .url = url, .headers = hdrs, .no_key = true};
    int r;

    for (size_t i = 0; i < PE_ARRAY_LEN(e->hdr) && e->hdr[i]; i++)
        hdrs[i + 1] = e->hdr[i];
    /* reads are safe to send again; Remove and SendInput are not */
    rq.idempotent = strstr(method, "/ListDir") || strstr(method, "/Stat");
    r = pe__provider_json_req(p, &rq, body, JSON_OBJECT, out, what, err);
    free(url);
    return r;
}

/* ---- exec: the Start stream ---- */

typedef struct e2_exec {
    e2_envd envd;
    char *body; /* the request envelope */
    size_t body_len;
    char tag[24];
    unsigned char *buf; /* envelope being read */
    size_t len, cap;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool started, over; /* envd said start / the stream ended */
} e2_exec;

static void e2_exec_free(void *ud)
{
    e2_exec *x = ud;

    e2_envd_free(&x->envd);
    free(x->body);
    free(x->buf);
    pthread_mutex_destroy(&x->mu);
    pthread_cond_destroy(&x->cv);
    free(x);
}

static void e2_mark(e2_exec *x, bool *flag)
{
    pthread_mutex_lock(&x->mu);
    *flag = true;
    pthread_cond_broadcast(&x->cv);
    pthread_mutex_unlock(&x->mu);
}

/* Side-thread calls name the process by our tag, which envd knows once it
 * answered start: wait for that (or the stream's end). */
static bool e2_wait_started(e2_exec *x)
{
    bool ok;

    pthread_mutex_lock(&x->mu);
    while (!x->started && !x->over)
        pthread_cond_wait(&x->cv, &x->mu);
    ok = x->started && !x->over;
    pthread_mutex_unlock(&x->mu);
    return ok;
}

/* "signal: killed" -> 137, as a shell reports a signalled child. */
static int e2_signal_code(const char *status)
{
    static const struct {
        const char *name;
        int sig;
    } sigs[] = {{"hangup", 1},  {"interrupt", 2}, {"quit", 3},
                {"aborted", 6}, {"killed", 9},    {"terminated", 15}};

    if (status && strncmp(status, "signal: ", 8) == 0)
        for (size_t i = 0; i < PE_ARRAY_LEN(sigs); i++)
            if (strcmp(status + 8, sigs[i].name) == 0)
                return 128 + sigs[i].sig;
    return 137;
}

static void e2_data(struct pe_provider_stream *s, json_t *data)
{
    static const struct {
        const char *key;
        int fd;
    } keys[] = {{"stdout", 1}, {"stderr", 2}, {"pty", 1}};

    for (size_t i = 0; i < PE_ARRAY_LEN(keys); i++) {
        json_t *v = json_object_get(data, keys[i].key);
        size_t n;
        unsigned char *bytes;
        if (!json_is_string(v))
            continue;
        bytes = pe__b64_decode(json_string_value(v), json_string_length(v), &n);
        if (bytes == NULL) {
            snprintf(s->error, sizeof(s->error), NAME ": exec: output that is not base64");
            continue;
        }
        pe__stream_output(s, keys[i].fd, bytes, n);
        free(bytes);
    }
}

/* One whole envelope: an event, or the end of the stream. */
static void e2_envelope(struct pe_provider_stream *s, unsigned flags, const unsigned char *msg,
                        size_t len)
{
    e2_exec *x = s->ud;
    json_t *v = json_loadb((const char *)msg, len, 0, NULL), *ev, *end;

    if (!json_is_object(v)) {
        snprintf(s->error, sizeof(s->error), NAME ": exec: an envelope that is not its API");
    } else if (flags & 0x02) {
        json_t *e = json_object_get(v, "error");
        if (e && !s->exited)
            snprintf(s->error, sizeof(s->error), NAME ": exec: %.300s",
                     json_string_value(json_object_get(e, "message"))
                         ?: json_string_value(json_object_get(e, "code")) ?: "failed");
    } else if ((ev = json_object_get(v, "event")) != NULL) {
        if (json_object_get(ev, "start"))
            e2_mark(x, &x->started);
        if (json_is_object(json_object_get(ev, "data")))
            e2_data(s, json_object_get(ev, "data"));
        if (json_is_object(end = json_object_get(ev, "end"))) {
            /* proto3 JSON leaves out zero values: no exitCode is 0 */
            json_t *code = json_object_get(end, "exitCode");
            if (json_is_true(json_object_get(end, "exited")))
                pe__stream_exit(s, json_is_integer(code) ? (int)json_integer_value(code) : 0);
            else
                pe__stream_exit(s,
                                e2_signal_code(json_string_value(json_object_get(end, "status"))));
        }
    }
    json_decref(v);
}

static bool e2_stream_data(const char *data, size_t len, void *ud)
{
    struct pe_provider_stream *s = ud;
    e2_exec *x = s->ud;

    while (len > 0) {
        size_t want = 5, take;
        if (x->len >= 5) {
            uint32_t n = (uint32_t)x->buf[1] << 24 | (uint32_t)x->buf[2] << 16 |
                         (uint32_t)x->buf[3] << 8 | x->buf[4];
            if (n > ENVELOPE_MAX) {
                snprintf(s->error, sizeof(s->error), NAME ": exec: an envelope of %u bytes", n);
                return false;
            }
            want = 5 + n;
        }
        take = want - x->len < len ? want - x->len : len;
        if (x->len + take > x->cap) {
            x->cap = x->len + take > 4096 ? x->len + take : 4096;
            x->buf = pe_xrealloc(x->buf, x->cap);
        }
        memcpy(x->buf + x->len, data, take);
        x->len += take;
        data += take;
        len -= take;
        if (x->len == want && want > 5) {
            e2_envelope(s, x->buf[0], x->buf + 5, x->len - 5);
            x->len = 0;
        } else if (x->len == 5 && want == 5 && x->buf[1] == 0 && x->buf[2] == 0 && x->buf[3] == 0 &&
                   x->buf[4] == 0) {
            e2_envelope(s, x->buf[0], (const unsigned char *)"{}", 2);
            x->len = 0;
        }
    }
    return true;
}

static int e2_run(struct pe_provider_stream *s)
{
    e2_exec *x = s->ud;
    char *url = pe_xasprintf("%s/process.Process/Start", x->envd.url);
    const char *hdrs[PE_ARRAY_LEN(x->envd.hdr) + 3] = {"Connect-Protocol-Version: 1",
                                                       "Keepalive-Ping-Interval: 50"};
    pe__preq rq = {.method = "POST",
                   .url = url,
                   .content_type = "application/connect+json",
                   .body = x->body,
                   .body_len = x->body_len,
                   .headers = hdrs,
                   .no_key = true,
                   .on_data = e2_stream_data,
                   .ud = s,
                   .cancel = &s->cancel,
                   .stream = true};
    pe__presp rs;
    pe_err err;

    for (size_t i = 0; i < PE_ARRAY_LEN(x->envd.hdr) && x->envd.hdr[i]; i++)
        hdrs[i + 2] = x->envd.hdr[i];
    if (pe__provider_http(s->p, &rq, &rs, "exec", &err) < 0 && !s->exited && !s->error[0])
        snprintf(s->error, sizeof(s->error), "%s", err.msg);
    if (!s->exited && !s->error[0] && x->len)
        snprintf(s->error, sizeof(s->error), NAME ": exec: the stream ended inside an envelope");
    pe__presp_free(&rs);
    free(url);
    e2_mark(x, &x->over);
    return 0;
}

static void e2_proc_call(struct pe_provider_stream *s, const char *method, json_t *body,
                         const char *what)
{
    e2_exec *x = s->ud;
    pe_err err;

    json_object_set_new(body, "process", json_pack("{s:s}", "tag", x->tag));
    if (e2_wait_started(x))
        e2_rpc(s->p, &x->envd, method, body, NULL, what, &err);
    json_decref(body);
}

static int e2_input(struct pe_provider_stream *s, const unsigned char *data, size_t len)
{
    char *b;

    if (len == 0) {
        if (!s->tty)
            e2_proc_call(s, "process.Process/CloseStdin", json_object(), "close stdin");
        return 0;
    }
    b = pe__b64_encode(data, len);
    e2_proc_call(s, "process.Process/SendInput",
                 json_pack("{s:{s:s}}", "input", s->tty ? "pty" : "stdin", b), "send input");
    free(b);
    return 0;
}

static int e2_resize(struct pe_provider_stream *s, unsigned short cols, unsigned short rows)
{
    e2_proc_call(s, "process.Process/Update",
                 json_pack("{s:{s:{s:i, s:i}}}", "pty", "size", "cols", cols, "rows", rows),
                 "resize a terminal");
    return 0;
}

static void e2_kill(struct pe_provider_stream *s)
{
    e2_proc_call(s, "process.Process/SendSignal", json_pack("{s:s}", "signal", "SIGNAL_SIGTERM"),
                 "signal a process");
}

static const pe__stream_ops e2_exec_ops = {.run_http = e2_run,
                                           .on_input = e2_input,
                                           .on_resize = e2_resize,
                                           .on_kill = e2_kill,
                                           .free_ud = e2_exec_free,
                                           .http_side = true};

static json_t *e2_start_msg(const pe_provider_exec_opts *o, const char *tag)
{
    json_t *args = json_array(), *proc, *msg;

    for (char *const *a = o->argv + 1; *a; a++)
        json_array_append_new(args, json_string(*a));
    proc = json_pack("{s:s, s:o, s:o}", "cmd", o->argv[0], "args", args, "envs",
                     pe__env_object(o->env));
    if (o->tty && o->env == NULL)
        json_object_set_new(json_object_get(proc, "envs"), "TERM", json_string("xterm-256color"));
    if (o->workdir)
        json_object_set_new(proc, "cwd", json_string(o->workdir));
    msg = json_pack("{s:o, s:s, s:b}", "process", proc, "tag", tag, "stdin", o->stdin_pipe);
    if (o->tty)
        json_object_set_new(msg, "pty",
                            json_pack("{s:{s:i, s:i}}", "size", "cols", o->cols ? o->cols : 80,
                                      "rows", o->rows ? o->rows : 24));
    return msg;
}

static int e2_exec_start(pe_provider *p, const char *id, const pe_provider_exec_opts *o,
                         pe_provider_proc *proc, pe_err *err)
{
    e2_exec *x = pe_xcalloc(1, sizeof(*x));
    unsigned char rnd[8];
    char hex[17], *text;
    json_t *msg;
    size_t n;

    pthread_mutex_init(&x->mu, NULL);
    pthread_cond_init(&x->cv, NULL);
    if (e2_envd_get(p, id, &x->envd, err) < 0) {
        e2_exec_free(x);
        return -1;
    }
    randombytes_buf(rnd, sizeof(rnd));
    sodium_bin2hex(hex, sizeof(hex), rnd, sizeof(rnd));
    snprintf(x->tag, sizeof(x->tag), "pe-%s", hex);
    msg = e2_start_msg(o, x->tag);
    text = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    n = strlen(text);
    /* the request is one envelope: flags 0, big-endian length, JSON */
    x->body = pe_xmalloc(n + 5);
    x->body[0] = 0;
    x->body[1] = (char)(n >> 24);
    x->body[2] = (char)(n >> 16);
    x->body[3] = (char)(n >> 8);
    x->body[4] = (char)n;
    memcpy(x->body + 5, text, n);
    x->body_len = n + 5;
    free(text);
    return pe__stream_start(p, &e2_exec_ops, x, NULL, o->tty, o->stdin_pipe, proc, err);
}

/* ---- files ---- */

static char *e2_files_url(const e2_envd *e, const char *path)
{
    char *ep = pe__url_escape(path),
         *url = pe_xasprintf("%s/files?path=%s&username=user", e->url, ep);

    free(ep);
    return url;
}

static int e2_file_read(pe_provider *p, const char *id, const char *path, size_t max, char **data,
                        size_t *len, pe_err *err)
{
    e2_envd e;
    char *url;
    pe__preq rq;
    pe__presp rs;
    int r;

    if (e2_envd_get(p, id, &e, err) < 0)
        return -1;
    url = e2_files_url(&e, path);
    rq = (pe__preq){.url = url,
                    .headers = (const char *const *)e.hdr,
                    .no_key = true,
                    .idempotent = true,
                    .max = max};
    r = pe__provider_http(p, &rq, &rs, "read a file", err);
    free(url);
    e2_envd_free(&e);
    if (r < 0) {
        pe__presp_free(&rs);
        return pe_err_prefix(err, "%s", path);
    }
    *data = rs.body;
    *len = rs.len;
    return 0;
}

static int e2_file_write(pe_provider *p, const char *id, const char *path, const void *data,
                         size_t len, unsigned mode, pe_err *err)
{
    e2_envd e;
    char *url;
    pe__preq rq;
    pe__presp rs;
    int r;

    if (e2_envd_get(p, id, &e, err) < 0)
        return -1;
    url = e2_files_url(&e, path);
    /* a whole file sent again is the same file: idempotent */
    rq = (pe__preq){.method = "POST",
                    .url = url,
                    .content_type = "application/octet-stream",
                    .body = data ? data : "",
                    .body_len = len,
                    .headers = (const char *const *)e.hdr,
                    .no_key = true,
                    .idempotent = true};
    r = pe__provider_http(p, &rq, &rs, "write a file", err);
    pe__presp_free(&rs);
    free(url);
    e2_envd_free(&e);
    return r < 0 ? pe_err_prefix(err, "%s", path) : 0;
}

static int e2_file_list(pe_provider *p, const char *id, const char *path, pe_provider_dirent **ents,
                        size_t *n, pe_err *err)
{
    e2_envd e;
    json_t *body = json_pack("{s:s, s:i}", "path", path, "depth", 1), *v = NULL, *arr, *x;
    size_t i;
    int r = e2_envd_get(p, id, &e, err);

    if (r == 0)
        r = e2_rpc(p, &e, "filesystem.Filesystem/ListDir", body, &v, "list files", err);
    json_decref(body);
    e2_envd_free(&e);
    if (r < 0)
        return pe_err_prefix(err, "%s", path);
    arr = json_object_get(v, "entries");
    *ents = pe_xcalloc(json_array_size(arr) + 1, sizeof(**ents));
    json_array_foreach(arr, i, x)
    {
        pe_provider_dirent *d = &(*ents)[*n];
        const char *name = json_string_value(json_object_get(x, "name"));
        const char *type = json_string_value(json_object_get(x, "type"));
        json_t *size = json_object_get(x, "size"); /* int64: a string in proto3 JSON */
        if (name == NULL)
            continue;
        snprintf(d->name, sizeof(d->name), "%s", name);
        d->is_dir = type && strcmp(type, "FILE_TYPE_DIRECTORY") == 0;
        d->size = json_is_string(size)    ? strtoull(json_string_value(size), NULL, 10)
                  : json_is_integer(size) ? (uint64_t)json_integer_value(size)
                                          : 0;
        d->mode = (unsigned)json_integer_value(json_object_get(x, "mode")) & 07777;
        (*n)++;
    }
    json_decref(v);
    return 0;
}

/* envd's Remove removes a directory with what it holds: a removal that
 * was not asked to be recursive looks first. */
static int e2_file_remove(pe_provider *p, const char *id, const char *path, bool recursive,
                          pe_err *err)
{
    e2_envd e;
    json_t *body = json_pack("{s:s}", "path", path), *v = NULL;
    int r = e2_envd_get(p, id, &e, err);

    if (r == 0 && !recursive) {
        json_t *ls = json_pack("{s:s, s:i}", "path", path, "depth", 1), *entry;
        const char *type;
        r = e2_rpc(p, &e, "filesystem.Filesystem/Stat", body, &v, "remove a file", err);
        entry = json_object_get(v, "entry");
        type = json_string_value(json_object_get(entry, "type"));
        if (r == 0 && type && strcmp(type, "FILE_TYPE_DIRECTORY") == 0) {
            json_decref(v);
            v = NULL;
            r = e2_rpc(p, &e, "filesystem.Filesystem/ListDir", ls, &v, "remove a file", err);
            if (r == 0 && json_array_size(json_object_get(v, "entries")) > 0)
                r = pe_err_set(err, PE_EINVAL, 0, NAME ": remove a file: directory not empty");
        }
        json_decref(ls);
        json_decref(v);
        v = NULL;
    }
    if (r == 0)
        r = e2_rpc(p, &e, "filesystem.Filesystem/Remove", body, NULL, "remove a file", err);
    json_decref(body);
    e2_envd_free(&e);
    return r < 0 ? pe_err_prefix(err, "%s", path) : 0;
}

static int e2_preview(pe_provider *p, const char *id, uint16_t port, pe_provider_preview_link *out,
                      pe_err *err)
{
    const char *b = p->cfg.creds.base_url;
    json_t *sb = NULL;
    char *host;

    if (e2_get(p, id, &sb, err) < 0) /* a sandbox that is not there has no preview */
        return -1;
    json_decref(sb);
    if (strncmp(b, "https://api.", 12) == 0) {
        size_t n = strlen(b + 12);
        while (n > 0 && b[12 + n - 1] == '/')
            n--;
        snprintf(out->url, sizeof(out->url), "https://%u-%s.%.*s/", port, id, (int)n, b + 12);
        return 0;
    }
    host = e2_envd_base(p);
    snprintf(out->url, sizeof(out->url), "%s/", host);
    free(host);
    snprintf(out->header_name, sizeof(out->header_name), "E2b-Sandbox-Id");
    snprintf(out->header_value, sizeof(out->header_value), "%s", id);
    snprintf(out->header2_name, sizeof(out->header2_name), "E2b-Sandbox-Port");
    snprintf(out->header2_value, sizeof(out->header2_value), "%u", port);
    return 0;
}

/* ---- snapshots (reference 9.6, the SDK's Sandbox.createSnapshot) ----
 *
 * POST /sandboxes/{id}/snapshots answers {snapshotID, names}: a template
 * a create names as its templateID, deleted as a template. No name is
 * sent: E2B's names are template aliases with rules of their own, and the
 * id is all we keep. */

static int e2_snapshot_create(pe_provider *p, const char *id, const char *name, char **snap_id,
                              pe_err *err)
{
    char *eid = pe__url_escape(id), *url = pe__provider_url(p, "/sandboxes/%s/snapshots", eid);
    json_t *body = json_object(), *v = NULL;
    const char *sid;
    int r;

    (void)name;
    /* not idempotent: a second POST makes a second snapshot */
    r = e2_api(p, "POST", url, body, false, &v, "snapshot a sandbox", err);
    free(eid);
    free(url);
    json_decref(body);
    if (r < 0)
        return -1;
    sid = json_string_value(json_object_get(v, "snapshotID"));
    if (sid == NULL || sid[0] == '\0' || strlen(sid) > 128)
        r = pe__provider_fail(p, err, PE_EREMOTE, NAME " answered a snapshot without a snapshotID");
    else
        *snap_id = pe_xstrdup(sid);
    json_decref(v);
    return r;
}

static int e2_snapshot_delete(pe_provider *p, const char *snap_id, pe_err *err)
{
    char *eid = pe__url_escape(snap_id), *url = pe__provider_url(p, "/templates/%s", eid);
    int r = e2_api(p, "DELETE", url, NULL, true, NULL, "delete a snapshot", err);

    free(eid);
    free(url);
    return r;
}

const pe_provider_ops pe__provider_e2b = {
    .name = NAME,
    .takes = PE_TAKES_IMAGE,
    .caps = PE_CAP_STOP | PE_CAP_PTY | PE_CAP_STDIN | PE_CAP_FILE_LIST | PE_CAP_FILE_REMOVE |
            PE_CAP_PREVIEW | PE_CAP_SNAPSHOT | PE_CAP_SNAPSHOT_BASE | PE_CAP_PAUSE,
    .open = e2_open,
    .create = e2_create,
    .start = e2_start,
    .stop = e2_stop,
    .remove = e2_remove,
    .status = e2_status,
    .exec_start = e2_exec_start,
    .file_read = e2_file_read,
    .file_write = e2_file_write,
    .file_list = e2_file_list,
    .file_remove = e2_file_remove,
    .preview = e2_preview,
    /* E2B's pause keeps memory (reference 9): it is our stop and our
     * pause; connect resumes either */
    .pause = e2_stop,
    .resume = e2_start,
    .snapshot_create = e2_snapshot_create,
    .snapshot_delete = e2_snapshot_delete,
};
