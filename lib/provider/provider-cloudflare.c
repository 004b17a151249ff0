/* Cloudflare, through the sandbox bridge Worker (reference §7): a
 * Worker the operator deploys to their own account, speaking HTTP + SSE +
 * WebSocket over the Worker-side SDK. base_url is that Worker's URL (no
 * public default exists); key is its SANDBOX_API_KEY.
 *
 * What the bridge lacks: stop/start (containers sleep by themselves and
 * lose their files), listing files, choosing resources or an image per
 * sandbox, an exec environment, files outside /workspace. Removing a file
 * goes through exec. Threading as provider.h; no state of our own. */
#include <string.h>
#include <wslay/wslay.h>

#include "core/util.h"
#include "provider-internal.h"

#define NAME "cloudflare"
#define WORKSPACE "/workspace"
#define SSE_LINE_MAX (4u << 20)

static int cf_open(pe_provider *p, pe_err *err)
{
    if (p->cfg.creds.base_url == NULL || p->cfg.creds.base_url[0] == '\0')
        return pe_err_set(err, PE_EINVAL, 0,
                          NAME ": the bridge Worker's URL is needed (there is no public API)");
    return 0;
}

/* method on /v1/sandbox/ID + suffix */
static int cf_call(pe_provider *p, const char *method, const char *id, const char *suffix,
                   bool idempotent, pe__presp *rs, const char *what, pe_err *err)
{
    char *eid = pe__url_escape(id), *url = pe__provider_url(p, "/v1/sandbox/%s%s", eid, suffix);
    pe__preq rq = {.method = method, .url = url, .idempotent = idempotent};
    int r = pe__provider_http(p, &rq, rs, what, err);

    free(eid);
    free(url);
    return r;
}

static int cf_running(pe_provider *p, const char *id, bool *running, pe_err *err)
{
    pe__presp rs;
    json_t *v;
    int r = cf_call(p, "GET", id, "/running", true, &rs, "check a sandbox", err);

    if (r == 0 && (v = pe__provider_json(p, &rs, JSON_OBJECT, "check a sandbox", err)) != NULL) {
        if (!json_is_boolean(json_object_get(v, "running")))
            r = pe__provider_fail(p, err, PE_EREMOTE,
                                  NAME " answered check a sandbox without 'running'");
        else
            *running = json_is_true(json_object_get(v, "running"));
        json_decref(v);
    } else if (r == 0) {
        r = -1;
    }
    pe__presp_free(&rs);
    return r;
}

static int cf_remove(pe_provider *p, const char *id, pe_err *err)
{
    pe__presp rs;
    int r = cf_call(p, "DELETE", id, "", true, &rs, "delete a sandbox", err);

    pe__presp_free(&rs);
    return r;
}

/* Wait until the container runs (the first check boots it). */
static int cf_wait(pe_provider *p, const char *id, pe_err *err)
{
    int64_t deadline = pe_monotonic_ms() + p->cfg.create_timeout_ms;
    bool running = false;

    for (int i = 0;; i++) {
        if (cf_running(p, id, &running, err) < 0)
            return -1;
        if (running)
            return 0;
        if (pe_monotonic_ms() > deadline)
            return pe_err_set(err, PE_ETIMEDOUT, 0, NAME ": sandbox %s did not start within %lld s",
                              id, (long long)p->cfg.create_timeout_ms / 1000);
        usleep(i < 5 ? 100000 : 500000);
    }
}

static int cf_create(pe_provider *p, const pe_provider_spec *spec, char **id, pe_err *err)
{
    pe__presp rs;
    pe__preq rq;
    json_t *v;
    char *url = pe__provider_url(p, "/v1/sandbox");
    const char *sid;
    pe_err ignored;

    /* not idempotent: a second POST would mint a second sandbox */
    rq = (pe__preq){.method = "POST",
                    .url = url,
                    .content_type = "application/json",
                    .body = "{}",
                    .body_len = 2};
    if (pe__provider_http(p, &rq, &rs, "create a sandbox", err) < 0) {
        free(url);
        pe__presp_free(&rs);
        return -1;
    }
    free(url);
    v = pe__provider_json(p, &rs, JSON_OBJECT, "create a sandbox", err);
    pe__presp_free(&rs);
    if (v == NULL)
        return -1;
    sid = json_string_value(json_object_get(v, "id"));
    if (sid == NULL || sid[0] == '\0' || strlen(sid) > 128) {
        json_decref(v);
        return pe__provider_fail(p, err, PE_EREMOTE, NAME " answered create without an id");
    }
    *id = pe_xstrdup(sid);
    json_decref(v);
    if (cf_wait(p, *id, err) < 0) {
        /* never leave a half-made sandbox behind */
        cf_remove(p, *id, &ignored);
        free(*id);
        *id = NULL;
        return pe_err_prefix(err, "create a sandbox");
    }
    return 0;
}

static int cf_start(pe_provider *p, const char *id, pe_err *err)
{
    return cf_wait(p, id, err);
}

/* The bridge has no stop: the container sleeps after its idle time. */
static int cf_stop(pe_provider *p, const char *id, pe_err *err)
{
    return 0;
}

static int cf_status(pe_provider *p, const char *id, pe_provider_status *st, pe_err *err)
{
    bool running = false;

    if (cf_running(p, id, &running, err) < 0)
        return -1;
    st->state = running ? PE_PSTATE_RUNNING : PE_PSTATE_CREATING;
    snprintf(st->raw, sizeof(st->raw), "%s", running ? "running" : "booting");
    return 0;
}

/* ---- exec: SSE (stdout/stderr base64, exit, error) ---- */

typedef struct cf_exec {
    char *url, *body;
    char *line; /* the line being read */
    size_t len, cap;
    char event[32];
    char *data; /* the event's data so far */
} cf_exec;

static void cf_exec_free(void *ud)
{
    cf_exec *x = ud;

    free(x->url);
    free(x->body);
    free(x->line);
    free(x->data);
    free(x);
}

static void sse_dispatch(struct pe_provider_stream *s, cf_exec *x)
{
    const char *d = x->data ? x->data : "";

    if (strcmp(x->event, "stdout") == 0 || strcmp(x->event, "stderr") == 0) {
        size_t n = 0;
        unsigned char *bytes = pe__b64_decode(d, strlen(d), &n);
        if (bytes)
            pe__stream_output(s, x->event[3] == 'o' ? 1 : 2, bytes, n);
        else
            snprintf(s->error, sizeof(s->error), NAME ": exec: output that is not base64");
        free(bytes);
    } else if (strcmp(x->event, "exit") == 0) {
        json_t *v = json_loads(d, 0, NULL);
        if (json_is_integer(json_object_get(v, "exit_code")))
            pe__stream_exit(s, (int)json_integer_value(json_object_get(v, "exit_code")));
        json_decref(v);
    } else if (strcmp(x->event, "error") == 0) {
        json_t *v = json_loads(d, 0, NULL);
        const char *m = json_string_value(json_object_get(v, "error"));
        snprintf(s->error, sizeof(s->error), NAME ": exec failed: %.300s", m ? m : "error event");
        json_decref(v);
    }
    x->event[0] = '\0';
    free(x->data);
    x->data = NULL;
}

static void sse_line(struct pe_provider_stream *s, cf_exec *x, char *line)
{
    if (line[0] == '\0') {
        sse_dispatch(s, x);
    } else if (strncmp(line, "event:", 6) == 0) {
        const char *v = line + 6 + (line[6] == ' ');
        snprintf(x->event, sizeof(x->event), "%s", v);
    } else if (strncmp(line, "data:", 5) == 0) {
        const char *v = line + 5 + (line[5] == ' ');
        char *joined = pe_xasprintf("%s%s%s", x->data ? x->data : "", x->data ? "\n" : "", v);
        free(x->data);
        x->data = joined;
    }
}

static bool sse_data(const char *data, size_t len, void *ud)
{
    struct pe_provider_stream *s = ud;
    cf_exec *x = s->ud;

    for (size_t i = 0; i < len; i++) {
        if (data[i] == '\n') {
            if (x->len && x->line[x->len - 1] == '\r')
                x->len--;
            x->line = x->line ? x->line : pe_xmalloc(1);
            x->line[x->len] = '\0';
            sse_line(s, x, x->line);
            x->len = 0;
            continue;
        }
        if (x->len + 2 > x->cap) {
            if (x->cap >= SSE_LINE_MAX) {
                snprintf(s->error, sizeof(s->error), NAME ": exec: an event line too long");
                return false;
            }
            x->cap = x->cap ? x->cap * 2 : 256;
            x->line = pe_xrealloc(x->line, x->cap);
        }
        x->line[x->len++] = data[i];
    }
    return !s->exited;
}

static int cf_run_exec(struct pe_provider_stream *s)
{
    cf_exec *x = s->ud;
    pe__preq rq = {.method = "POST",
                   .url = x->url,
                   .content_type = "application/json",
                   .body = x->body,
                   .body_len = strlen(x->body),
                   .on_data = sse_data,
                   .ud = s,
                   .cancel = &s->cancel,
                   .stream = true};
    pe__presp rs;
    pe_err err;

    if (pe__provider_http(s->p, &rq, &rs, "exec", &err) < 0 && !s->exited && !s->error[0])
        snprintf(s->error, sizeof(s->error), "%s", err.msg);
    pe__presp_free(&rs);
    return 0;
}

static const pe__stream_ops cf_exec_ops = {.run_http = cf_run_exec, .free_ud = cf_exec_free};

/* ---- PTY: WebSocket (binary both ways, JSON text control) ---- */

static void cf_pty_msg(struct pe_provider_stream *s, int opcode, const unsigned char *data,
                       size_t len)
{
    json_t *v;
    const char *type;

    if (opcode == WSLAY_BINARY_FRAME) {
        pe__stream_output(s, 1, data, len);
        return;
    }
    if (opcode != WSLAY_TEXT_FRAME)
        return;
    v = json_loadb((const char *)data, len, 0, NULL);
    type = json_string_value(json_object_get(v, "type"));
    if (type && strcmp(type, "exit") == 0)
        pe__stream_exit(s, (int)json_integer_value(json_object_get(v, "code")));
    else if (type && strcmp(type, "error") == 0)
        snprintf(s->error, sizeof(s->error), NAME ": terminal: %.300s",
                 json_string_value(json_object_get(v, "message")) ?: "error");
    json_decref(v);
}

static int cf_pty_input(struct pe_provider_stream *s, const unsigned char *data, size_t len)
{
    return len ? pe__ws_send(s->ws, WSLAY_BINARY_FRAME, data, len) : 0;
}

static int cf_pty_resize(struct pe_provider_stream *s, unsigned short cols, unsigned short rows)
{
    char msg[96];
    int n = snprintf(msg, sizeof(msg), "{\"type\":\"resize\",\"cols\":%u,\"rows\":%u}", cols, rows);

    return pe__ws_send(s->ws, WSLAY_TEXT_FRAME, msg, (size_t)n);
}

static void cf_pty_kill(struct pe_provider_stream *s)
{
    pe__ws_close(s->ws, 1000);
}

static const pe__stream_ops cf_pty_ops = {.on_msg = cf_pty_msg,
                                          .on_input = cf_pty_input,
                                          .on_resize = cf_pty_resize,
                                          .on_kill = cf_pty_kill};

static int cf_exec_start(pe_provider *p, const char *id, const pe_provider_exec_opts *o,
                         pe_provider_proc *proc, pe_err *err)
{
    char *eid;
    cf_exec *x;
    json_t *body, *argv;

    if (o->env && o->env[0])
        return pe_provider_unsupported(p, "exec environment", err);
    eid = pe__url_escape(id);
    if (o->tty) {
        pe__ws *ws = NULL;
        char *url =
            pe__provider_url(p, "/v1/sandbox/%s/pty?cols=%u&rows=%u&shell=%s", eid,
                             o->cols ? o->cols : 80, o->rows ? o->rows : 24, "%2Fbin%2Fbash");
        int r = pe__ws_open(p, url, NULL, "open a terminal", &ws, err);
        free(url);
        free(eid);
        if (r < 0)
            return -1;
        return pe__stream_start(p, &cf_pty_ops, NULL, ws, true, false, proc, err);
    }
    argv = json_array();
    for (char *const *a = o->argv; *a; a++)
        json_array_append_new(argv, json_string(*a));
    body = json_pack("{s:o}", "argv", argv);
    if (o->workdir)
        json_object_set_new(body, "cwd", json_string(o->workdir));
    if (o->timeout > 0)
        json_object_set_new(body, "timeout_ms", json_integer((json_int_t)(o->timeout * 1000)));
    x = pe_xcalloc(1, sizeof(*x));
    x->url = pe__provider_url(p, "/v1/sandbox/%s/exec", eid);
    x->body = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    free(eid);
    return pe__stream_start(p, &cf_exec_ops, x, NULL, false, false, proc, err);
}

/* ---- files: only inside /workspace ---- */

/* Path segments escaped, slashes kept; relative paths are in /workspace. */
static char *cf_file_url(pe_provider *p, const char *id, const char *path)
{
    char *abs = path[0] == '/' ? pe_xstrdup(path) : pe_xasprintf(WORKSPACE "/%s", path);
    char *e = pe__url_escape(abs + 1), *eid = pe__url_escape(id), *url, *w = e;

    for (const char *r = e; *r;) {
        if (strncmp(r, "%2F", 3) == 0) {
            *w++ = '/';
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
    url = pe__provider_url(p, "/v1/sandbox/%s/file/%s", eid, e);
    free(abs);
    free(e);
    free(eid);
    return url;
}

static int cf_file_read(pe_provider *p, const char *id, const char *path, size_t max, char **data,
                        size_t *len, pe_err *err)
{
    char *url = cf_file_url(p, id, path);
    pe__preq rq = {.url = url, .idempotent = true, .max = max};
    pe__presp rs;
    int r = pe__provider_http(p, &rq, &rs, "read a file", err);

    free(url);
    if (r < 0) {
        pe__presp_free(&rs);
        return pe_err_prefix(err, "%s", path);
    }
    *data = rs.body;
    *len = rs.len;
    return 0;
}

static int cf_file_write(pe_provider *p, const char *id, const char *path, const void *data,
                         size_t len, unsigned mode, pe_err *err)
{
    char *url = cf_file_url(p, id, path);
    pe__preq rq = {.method = "PUT",
                   .url = url,
                   .content_type = "application/octet-stream",
                   .body = data ? data : "",
                   .body_len = len,
                   .idempotent = true};
    pe__presp rs;
    int r = pe__provider_http(p, &rq, &rs, "write a file", err);

    free(url);
    pe__presp_free(&rs);
    return r < 0 ? pe_err_prefix(err, "%s", path) : 0;
}

/* The bridge has no delete: rm through exec. */
static int cf_file_remove(pe_provider *p, const char *id, const char *path, bool recursive,
                          pe_err *err)
{
    return pe__provider_remove_by_exec(p, id, path, recursive, err);
}

static int cf_tar_in(pe_provider *p, const char *id, const char *dir, const void *tar, size_t len,
                     pe_err *err)
{
    char *eid, *url;
    pe__preq rq;
    pe__presp rs;
    int r;

    if (strcmp(dir, WORKSPACE) != 0)
        return pe_err_set(err, PE_EINVAL, 0, NAME ": archives unpack into " WORKSPACE " only");
    eid = pe__url_escape(id);
    url = pe__provider_url(p, "/v1/sandbox/%s/hydrate", eid);
    rq = (pe__preq){.method = "POST",
                    .url = url,
                    .content_type = "application/x-tar",
                    .body = tar,
                    .body_len = len,
                    .idempotent = true};
    r = pe__provider_http(p, &rq, &rs, "unpack an archive", err);
    free(eid);
    free(url);
    pe__presp_free(&rs);
    return r;
}

static int cf_tar_out(pe_provider *p, const char *id, const char *dir, size_t max, char **tar,
                      size_t *len, pe_err *err)
{
    char *eid, *url;
    pe__preq rq;
    pe__presp rs;
    int r;

    if (strcmp(dir, WORKSPACE) != 0)
        return pe_err_set(err, PE_EINVAL, 0, NAME ": archives pack " WORKSPACE " only");
    eid = pe__url_escape(id);
    url = pe__provider_url(p, "/v1/sandbox/%s/persist", eid);
    rq = (pe__preq){.method = "POST", .url = url, .idempotent = true, .max = max};
    r = pe__provider_http(p, &rq, &rs, "pack an archive", err);
    free(eid);
    free(url);
    if (r < 0) {
        pe__presp_free(&rs);
        return -1;
    }
    *tar = rs.body;
    *len = rs.len;
    return 0;
}

static int cf_preview(pe_provider *p, const char *id, uint16_t port, pe_provider_preview_link *out,
                      pe_err *err)
{
    char *eid = pe__url_escape(id),
         *url = pe__provider_url(p, "/v1/sandbox/%s/tunnel/%u", eid, port);
    pe__preq rq = {.method = "POST",
                   .url = url,
                   .content_type = "application/json",
                   .body = "{}",
                   .body_len = 2,
                   .idempotent = true};
    pe__presp rs;
    json_t *v = NULL;
    const char *u;
    int r = pe__provider_http(p, &rq, &rs, "open a tunnel", err);

    free(eid);
    free(url);
    if (r == 0 && (v = pe__provider_json(p, &rs, JSON_OBJECT, "open a tunnel", err)) == NULL)
        r = -1;
    pe__presp_free(&rs);
    if (r < 0)
        return -1;
    u = json_string_value(json_object_get(v, "url"));
    if (u == NULL)
        r = pe__provider_fail(p, err, PE_EREMOTE, NAME " answered open a tunnel without a url");
    else
        snprintf(out->url, sizeof(out->url), "%s", u);
    json_decref(v);
    return r;
}

const pe_provider_ops pe__provider_cloudflare = {
    .name = NAME,
    .takes = 0,
    .caps = PE_CAP_PTY | PE_CAP_FILE_REMOVE | PE_CAP_TAR | PE_CAP_PREVIEW,
    .open = cf_open,
    .create = cf_create,
    .start = cf_start,
    .stop = cf_stop,
    .remove = cf_remove,
    .status = cf_status,
    .exec_start = cf_exec_start,
    .file_read = cf_file_read,
    .file_write = cf_file_write,
    .file_remove = cf_file_remove,
    .tar_in = cf_tar_in,
    .tar_out = cf_tar_out,
    .preview = cf_preview,
};
