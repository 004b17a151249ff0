/* Daytona (v0 API, reference §4): a control plane under base_url (public
 * default https://app.daytona.io/api) and, per sandbox, a toolbox reached
 * through the URL the sandbox reports (toolboxProxyUrl + "/" + id).
 *
 * Exec runs in a session of its own (created, used once, deleted): it is
 * the only toolbox call that keeps stdout and stderr apart (the output is
 * multiplexed with 3-byte stream markers) and can be followed live over a
 * WebSocket. The PTY is a toolbox PTY session behind a WebSocket whose
 * close reason carries the exit code; its resize is an HTTP call.
 * Threading as provider.h; nothing cached between calls (the toolbox URL
 * is read from the sandbox each time: it can change with a restart). */
#include <stdio.h>
#include <string.h>
#include <sodium.h>
#include <wslay/wslay.h>

#include "core/util.h"
#include "provider-internal.h"

#define NAME "daytona"
#define DEFAULT_URL "https://app.daytona.io/api"

static int dt_open(pe_provider *p, pe_err *err)
{
    if (p->cfg.creds.base_url == NULL)
        p->cfg.creds.base_url = pe_xstrdup(DEFAULT_URL);
    return 0;
}

/* One JSON call to url, with the organization header when there is one. */
static int dt_json(pe_provider *p, const char *method, const char *url, json_t *body,
                   bool idempotent, int type, json_t **out, const char *what, pe_err *err)
{
    const char *org = p->cfg.creds.org;
    char *org_hdr = org ? pe_xasprintf("X-Daytona-Organization-ID: %s", org) : NULL;
    const char *hdrs[] = {org_hdr, NULL};
    int r = pe__provider_json_call(p, method, url, hdrs, body, idempotent, type, out, what, err);

    free(org_hdr);
    return r;
}

static int dt_sandbox(pe_provider *p, const char *id, json_t **sb, pe_err *err)
{
    char *eid = pe__url_escape(id), *url = pe__provider_url(p, "/sandbox/%s", eid);
    int r = dt_json(p, "GET", url, NULL, true, JSON_OBJECT, sb, "get a sandbox", err);

    free(eid);
    free(url);
    return r;
}

static const char *dt_state(json_t *sb)
{
    const char *s = json_string_value(json_object_get(sb, "state"));
    return s ? s : "";
}

/* probe of pe__provider_poll: is the sandbox in state `ud`? "error" and
 * "build_failed" end the wait. */
static int dt_probe(pe_provider *p, const char *id, void *ud, pe_err *err)
{
    const char *want = ud, *st;
    json_t *sb = NULL;
    int r = 0;

    if (dt_sandbox(p, id, &sb, err) < 0)
        return -1;
    st = dt_state(sb);
    if (strcmp(st, want) == 0) {
        r = 1;
    } else if (strcmp(st, "error") == 0 || strcmp(st, "build_failed") == 0) {
        const char *why = json_string_value(json_object_get(sb, "errorReason"));
        r = pe__provider_fail(p, err, PE_EREMOTE, NAME ": sandbox %s is in state %s%s%.200s", id,
                              st, why ? ": " : "", why ? why : "");
    }
    json_decref(sb);
    return r;
}

static int dt_remove(pe_provider *p, const char *id, pe_err *err)
{
    char *eid = pe__url_escape(id), *url = pe__provider_url(p, "/sandbox/%s", eid);
    int r = dt_json(p, "DELETE", url, NULL, true, 0, NULL, "delete a sandbox", err);

    free(eid);
    free(url);
    return r;
}

static json_t *dt_create_body(const pe_provider_spec *spec)
{
    json_t *env = pe__env_object(spec->env), *body;

    /* autoStopInterval 0: our housekeeping decides when it stops */
    body = json_pack("{s:o, s:{s:s}, s:i}", "env", env, "labels", "pocketenv",
                     spec->name ? spec->name : "", "autoStopInterval", 0);
    /* Daytona's images are snapshots too: a sandbox's snapshot is named
     * as one (reference 4.6) */
    if (spec->snapshot || spec->image)
        json_object_set_new(body, "snapshot",
                            json_string(spec->snapshot ? spec->snapshot : spec->image));
    if (spec->cpu_millis)
        json_object_set_new(body, "cpu", json_integer((spec->cpu_millis + 999) / 1000));
    if (spec->memory_bytes)
        json_object_set_new(body, "memory",
                            json_integer((spec->memory_bytes + (1 << 30) - 1) >> 30));
    if (spec->disk_bytes)
        json_object_set_new(body, "disk", json_integer((spec->disk_bytes + (1 << 30) - 1) >> 30));
    return body;
}

static int dt_create(pe_provider *p, const pe_provider_spec *spec, char **id, pe_err *err)
{
    json_t *body = dt_create_body(spec), *sb = NULL;
    char *url = pe__provider_url(p, "/sandbox");
    const char *sid;
    int r;

    /* not idempotent: a second POST makes a second sandbox */
    r = dt_json(p, "POST", url, body, false, JSON_OBJECT, &sb, "create a sandbox", err);
    free(url);
    json_decref(body);
    if (r < 0)
        return -1;
    sid = json_string_value(json_object_get(sb, "id"));
    if (sid == NULL || sid[0] == '\0' || strlen(sid) > 128) {
        json_decref(sb);
        return pe__provider_fail(p, err, PE_EREMOTE, NAME " answered create without an id");
    }
    *id = pe_xstrdup(sid);
    json_decref(sb);
    return pe__provider_create_settle(p, spec, id, "started", dt_probe, (void *)"started", err);
}

static int dt_action(pe_provider *p, const char *id, const char *action, const char *want,
                     pe_err *err)
{
    char *eid = pe__url_escape(id), *url = pe__provider_url(p, "/sandbox/%s/%s", eid, action);
    char what[32];
    int r;

    snprintf(what, sizeof(what), "%s a sandbox", action);
    r = dt_json(p, "POST", url, NULL, true, 0, NULL, what, err);
    free(eid);
    free(url);
    return r < 0 ? -1 : pe__provider_poll(p, id, want, dt_probe, (void *)want, err);
}

static int dt_start(pe_provider *p, const char *id, pe_err *err)
{
    return dt_action(p, id, "start", "started", err);
}

static int dt_stop(pe_provider *p, const char *id, pe_err *err)
{
    return dt_action(p, id, "stop", "stopped", err);
}

/* Daytona's pause keeps memory and processes (reference 4.2: POST
 * /sandbox/{id}/pause, state "paused"; its docs' memory persistence), and
 * its start resumes a paused sandbox as it starts a stopped one. */
static int dt_pause(pe_provider *p, const char *id, pe_err *err)
{
    return dt_action(p, id, "pause", "paused", err);
}

static int dt_status(pe_provider *p, const char *id, pe_provider_status *st, pe_err *err)
{
    static const struct {
        const char *raw;
        int state;
    } map[] = {{"started", PE_PSTATE_RUNNING},   {"stopped", PE_PSTATE_STOPPED},
               {"creating", PE_PSTATE_CREATING}, {"starting", PE_PSTATE_CREATING},
               {"paused", PE_PSTATE_PAUSED},     {"pausing", PE_PSTATE_PAUSED},
               {"resuming", PE_PSTATE_CREATING}, {"error", PE_PSTATE_ERROR},
               {"build_failed", PE_PSTATE_ERROR}};
    json_t *sb = NULL;

    if (dt_sandbox(p, id, &sb, err) < 0)
        return -1;
    snprintf(st->raw, sizeof(st->raw), "%s", dt_state(sb));
    for (size_t i = 0; i < PE_ARRAY_LEN(map); i++)
        if (strcmp(st->raw, map[i].raw) == 0)
            st->state = map[i].state;
    json_decref(sb);
    return 0;
}

/* The sandbox's toolbox base URL (malloc'd). */
static char *dt_toolbox(pe_provider *p, const char *id, pe_err *err)
{
    json_t *sb = NULL;
    const char *tb;
    char *eid, *url;

    if (dt_sandbox(p, id, &sb, err) < 0)
        return NULL;
    tb = json_string_value(json_object_get(sb, "toolboxProxyUrl"));
    if (tb == NULL || (strncmp(tb, "http://", 7) != 0 && strncmp(tb, "https://", 8) != 0)) {
        json_decref(sb);
        pe__provider_fail(p, err, PE_EREMOTE, NAME " reported no toolbox URL for sandbox %s", id);
        return NULL;
    }
    eid = pe__url_escape(id);
    url = pe_xasprintf("%s%s%s", tb, tb[strlen(tb) - 1] == '/' ? "" : "/", eid);
    free(eid);
    json_decref(sb);
    return url;
}

/* ---- exec ---- */

void pe__daytona_demux(pe__demux *d, const unsigned char *data, size_t len,
                       void (*out)(void *, int, const unsigned char *, size_t), void *ud)
{
    size_t start = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = data[i];
        if (c != 1 && c != 2 && d->npend == 0)
            continue;
        if (d->npend == 0 || c == d->pend[0]) {
            if (d->npend == 0 && i > start)
                out(ud, d->fd, data + start, i - start);
            d->pend[d->npend++] = c;
            start = i + 1;
            if (d->npend == 3) {
                d->fd = c;
                d->npend = 0;
            }
            continue;
        }
        /* not a marker after all: what was held is output */
        out(ud, d->fd, d->pend, d->npend);
        d->npend = 0;
        start = i;
        i--;
    }
    if (len > start && d->npend == 0)
        out(ud, d->fd, data + start, len - start);
}

void pe__daytona_demux_end(pe__demux *d, void (*out)(void *, int, const unsigned char *, size_t),
                           void *ud)
{
    if (d->npend)
        out(ud, d->fd, d->pend, d->npend);
    d->npend = 0;
}

typedef struct dt_exec {
    char *tb, *session, *cmd_id;
    pe__demux dm;
    bool pty;
    char *pty_id;
} dt_exec;

static void dt_exec_free(void *ud)
{
    dt_exec *x = ud;

    free(x->tb);
    free(x->session);
    free(x->cmd_id);
    free(x->pty_id);
    free(x);
}

static void dt_out(void *ud, int fd, const unsigned char *data, size_t len)
{
    pe__stream_output(ud, fd, data, len);
}

static void dt_delete_session(pe_provider *p, const char *tb, const char *session)
{
    char *url = pe_xasprintf("%s/process/session/%s", tb, session);
    pe_err ignored;

    dt_json(p, "DELETE", url, NULL, true, 0, NULL, "delete a session", &ignored);
    free(url);
}

static void dt_log_msg(struct pe_provider_stream *s, int opcode, const unsigned char *data,
                       size_t len)
{
    dt_exec *x = s->ud;

    if (opcode == WSLAY_BINARY_FRAME || opcode == WSLAY_TEXT_FRAME)
        pe__daytona_demux(&x->dm, data, len, dt_out, s);
}

/* The logs ended: the command's exit code, then the session goes. */
static void dt_log_end(struct pe_provider_stream *s)
{
    dt_exec *x = s->ud;
    char *url = pe_xasprintf("%s/process/session/%s/command/%s", x->tb, x->session, x->cmd_id);
    json_t *c = NULL;
    pe_err err;

    pe__daytona_demux_end(&x->dm, dt_out, s);
    if (!pe__ws_closed(s->ws)) {
        snprintf(s->error, sizeof(s->error), NAME ": exec: the output stream broke");
    } else if (dt_json(s->p, "GET", url, NULL, true, JSON_OBJECT, &c, "get a command", &err) < 0) {
        snprintf(s->error, sizeof(s->error), "%s", err.msg);
    } else if (json_is_integer(json_object_get(c, "exitCode"))) {
        pe__stream_exit(s, (int)json_integer_value(json_object_get(c, "exitCode")));
    }
    json_decref(c);
    free(url);
    dt_delete_session(s->p, x->tb, x->session);
}

static const pe__stream_ops dt_exec_ops = {
    .on_msg = dt_log_msg, .on_end = dt_log_end, .free_ud = dt_exec_free};

static char *random_id(const char *prefix)
{
    unsigned char b[8];
    char hex[17];

    randombytes_buf(b, sizeof(b));
    sodium_bin2hex(hex, sizeof(hex), b, sizeof(b));
    return pe_xasprintf("%s%s", prefix, hex);
}

/* ---- PTY ---- */

static void dt_pty_msg(struct pe_provider_stream *s, int opcode, const unsigned char *data,
                       size_t len)
{
    json_t *v;

    if (opcode == WSLAY_CONNECTION_CLOSE) {
        /* the exit code travels in the close reason */
        v = len > 2 ? json_loadb((const char *)data + 2, len - 2, 0, NULL) : NULL;
        if (json_is_integer(json_object_get(v, "exitCode")))
            pe__stream_exit(s, (int)json_integer_value(json_object_get(v, "exitCode")));
        json_decref(v);
        return;
    }
    if (opcode == WSLAY_TEXT_FRAME) {
        v = json_loadb((const char *)data, len, 0, NULL);
        const char *type = json_string_value(json_object_get(v, "type"));
        bool control = type && strcmp(type, "control") == 0;
        if (control && json_string_value(json_object_get(v, "error")))
            snprintf(s->error, sizeof(s->error), NAME ": terminal: %.300s",
                     json_string_value(json_object_get(v, "error")));
        json_decref(v);
        if (control)
            return;
    }
    if (opcode == WSLAY_BINARY_FRAME || opcode == WSLAY_TEXT_FRAME)
        pe__stream_output(s, 1, data, len);
}

static int dt_pty_input(struct pe_provider_stream *s, const unsigned char *data, size_t len)
{
    return len ? pe__ws_send(s->ws, WSLAY_BINARY_FRAME, data, len) : 0;
}

static int dt_pty_resize(struct pe_provider_stream *s, unsigned short cols, unsigned short rows)
{
    dt_exec *x = s->ud;
    char *url = pe_xasprintf("%s/process/pty/%s/resize", x->tb, x->pty_id);
    json_t *body = json_pack("{s:i, s:i}", "cols", cols, "rows", rows);
    pe_err err;
    int r = dt_json(s->p, "POST", url, body, true, 0, NULL, "resize a terminal", &err);

    json_decref(body);
    free(url);
    return r;
}

static void dt_pty_kill(struct pe_provider_stream *s)
{
    dt_exec *x = s->ud;
    char *url = pe_xasprintf("%s/process/pty/%s", x->tb, x->pty_id);
    pe_err err;

    dt_json(s->p, "DELETE", url, NULL, true, 0, NULL, "end a terminal", &err);
    free(url);
}

static const pe__stream_ops dt_pty_ops = {.on_msg = dt_pty_msg,
                                          .on_input = dt_pty_input,
                                          .on_resize = dt_pty_resize,
                                          .on_kill = dt_pty_kill,
                                          .free_ud = dt_exec_free};

static int dt_pty_start(pe_provider *p, dt_exec *x, const pe_provider_exec_opts *o,
                        pe_provider_proc *proc, pe_err *err)
{
    char *url = pe_xasprintf("%s/process/pty", x->tb);
    json_t *body, *ans = NULL;
    pe__ws *ws = NULL;
    int r;

    x->pty_id = random_id("pe-pty-");
    body = json_pack("{s:s, s:i, s:i}", "id", x->pty_id, "cols", o->cols ? o->cols : 80, "rows",
                     o->rows ? o->rows : 24);
    if (o->workdir)
        json_object_set_new(body, "cwd", json_string(o->workdir));
    r = dt_json(p, "POST", url, body, false, JSON_OBJECT, &ans, "open a terminal", err);
    json_decref(body);
    json_decref(ans);
    free(url);
    if (r < 0) {
        dt_exec_free(x);
        return -1;
    }
    url = pe_xasprintf("%s/process/pty/%s/connect", x->tb, x->pty_id);
    r = pe__ws_open(p, url, NULL, "connect a terminal", &ws, err);
    free(url);
    if (r < 0) {
        dt_exec_free(x);
        return -1;
    }
    return pe__stream_start(p, &dt_pty_ops, x, ws, true, false, proc, err);
}

static int dt_exec_start(pe_provider *p, const char *id, const pe_provider_exec_opts *o,
                         pe_provider_proc *proc, pe_err *err)
{
    dt_exec *x = pe_xcalloc(1, sizeof(*x));
    json_t *body, *ans = NULL;
    char *url, *cmd;
    pe__ws *ws = NULL;
    int r;

    x->dm.fd = 1;
    if ((x->tb = dt_toolbox(p, id, err)) == NULL) {
        dt_exec_free(x);
        return -1;
    }
    if (o->tty)
        return dt_pty_start(p, x, o, proc, err);
    x->session = random_id("pe-exec-");
    url = pe_xasprintf("%s/process/session", x->tb);
    body = json_pack("{s:s}", "sessionId", x->session);
    r = dt_json(p, "POST", url, body, false, 0, NULL, "open an exec session", err);
    json_decref(body);
    free(url);
    if (r < 0) {
        dt_exec_free(x);
        return -1;
    }
    cmd = pe__shell_line(o);
    url = pe_xasprintf("%s/process/session/%s/exec", x->tb, x->session);
    body = json_pack("{s:s, s:b}", "command", cmd, "runAsync", 1);
    r = dt_json(p, "POST", url, body, false, JSON_OBJECT, &ans, "exec", err);
    json_decref(body);
    free(url);
    free(cmd);
    if (r == 0 && json_string_value(json_object_get(ans, "cmdId")) == NULL)
        r = pe__provider_fail(p, err, PE_EREMOTE, NAME " answered exec without a command id");
    if (r == 0)
        x->cmd_id = pe_xstrdup(json_string_value(json_object_get(ans, "cmdId")));
    json_decref(ans);
    if (r == 0) {
        url = pe_xasprintf("%s/process/session/%s/command/%s/logs?follow=true", x->tb, x->session,
                           x->cmd_id);
        r = pe__ws_open(p, url, NULL, "follow an exec's output", &ws, err);
        free(url);
    }
    if (r < 0) {
        dt_delete_session(p, x->tb, x->session);
        dt_exec_free(x);
        return -1;
    }
    return pe__stream_start(p, &dt_exec_ops, x, ws, false, false, proc, err);
}

/* ---- files ---- */

static char *dt_file_url(pe_provider *p, const char *id, const char *op, const char *path,
                         pe_err *err)
{
    char *tb = dt_toolbox(p, id, err), *ep, *url;

    if (tb == NULL)
        return NULL;
    ep = pe__url_escape(path);
    url = pe_xasprintf("%s/files%s?path=%s", tb, op, ep);
    free(ep);
    free(tb);
    return url;
}

static int dt_file_read(pe_provider *p, const char *id, const char *path, size_t max, char **data,
                        size_t *len, pe_err *err)
{
    char *url = dt_file_url(p, id, "/download", path, err);
    pe__preq rq = {.url = url, .idempotent = true, .max = max};
    pe__presp rs;

    if (url == NULL)
        return -1;
    if (pe__provider_http(p, &rq, &rs, "read a file", err) < 0) {
        free(url);
        pe__presp_free(&rs);
        return pe_err_prefix(err, "%s", path);
    }
    free(url);
    *data = rs.body;
    *len = rs.len;
    return 0;
}

static int dt_file_write(pe_provider *p, const char *id, const char *path, const void *data,
                         size_t len, unsigned mode, pe_err *err)
{
    char *url = dt_file_url(p, id, "/upload", path, err);
    CURL *c;
    curl_mime *mime;
    curl_mimepart *part;
    pe__preq rq;
    pe__presp rs;
    int r;

    if (url == NULL)
        return -1;
    c = curl_easy_init();
    mime = curl_mime_init(c);
    part = curl_mime_addpart(mime);
    curl_mime_name(part, "file");
    curl_mime_filename(part, "file");
    curl_mime_type(part, "application/octet-stream");
    curl_mime_data(part, data ? data : "", len);
    rq = (pe__preq){.method = "POST", .url = url, .mime = mime, .idempotent = true};
    r = pe__provider_http(p, &rq, &rs, "write a file", err);
    pe__presp_free(&rs);
    curl_mime_free(mime);
    curl_easy_cleanup(c);
    free(url);
    return r < 0 ? pe_err_prefix(err, "%s", path) : 0;
}

static int dt_file_list(pe_provider *p, const char *id, const char *path, pe_provider_dirent **ents,
                        size_t *n, pe_err *err)
{
    char *url = dt_file_url(p, id, "", path, err);
    json_t *arr = NULL, *e;
    size_t i;

    if (url == NULL)
        return -1;
    if (dt_json(p, "GET", url, NULL, true, JSON_ARRAY, &arr, "list files", err) < 0) {
        free(url);
        return pe_err_prefix(err, "%s", path);
    }
    free(url);
    *ents = pe_xcalloc(json_array_size(arr) + 1, sizeof(**ents));
    json_array_foreach(arr, i, e)
    {
        pe_provider_dirent *d = &(*ents)[*n];
        const char *name = json_string_value(json_object_get(e, "name"));
        if (name == NULL)
            continue;
        snprintf(d->name, sizeof(d->name), "%s", name);
        d->is_dir = json_is_true(json_object_get(e, "isDir"));
        d->size = (uint64_t)json_integer_value(json_object_get(e, "size"));
        (*n)++;
    }
    json_decref(arr);
    return 0;
}

static int dt_file_remove(pe_provider *p, const char *id, const char *path, bool recursive,
                          pe_err *err)
{
    char *url = dt_file_url(p, id, "", path, err), *full;
    int r;

    if (url == NULL)
        return -1;
    full = pe_xasprintf("%s&recursive=%s", url, recursive ? "true" : "false");
    r = dt_json(p, "DELETE", full, NULL, true, 0, NULL, "remove a file", err);
    free(url);
    free(full);
    return r < 0 ? pe_err_prefix(err, "%s", path) : 0;
}

static int dt_preview(pe_provider *p, const char *id, uint16_t port, pe_provider_preview_link *out,
                      pe_err *err)
{
    char *eid = pe__url_escape(id);
    char *url = pe__provider_url(p, "/sandbox/%s/ports/%u/preview-url", eid, port);
    json_t *v = NULL;
    const char *u, *token;
    int r = dt_json(p, "GET", url, NULL, true, JSON_OBJECT, &v, "get a preview URL", err);

    free(eid);
    free(url);
    if (r < 0)
        return -1;
    u = json_string_value(json_object_get(v, "url"));
    token = json_string_value(json_object_get(v, "token"));
    if (u == NULL) {
        json_decref(v);
        return pe__provider_fail(p, err, PE_EREMOTE, NAME " answered a preview without a url");
    }
    snprintf(out->url, sizeof(out->url), "%s", u);
    if (token) {
        snprintf(out->header_name, sizeof(out->header_name), "x-daytona-preview-token");
        snprintf(out->header_value, sizeof(out->header_value), "%s", token);
    }
    json_decref(v);
    return 0;
}

/* ---- snapshots (reference 4.6) ----
 *
 * POST /sandbox/{id}/snapshot {name} starts one; it is a snapshot like the
 * images (GET /snapshots/{id or name}), usable once "active". Its id from
 * that answer is what create's snapshot and the delete take (the name
 * would do for create; the delete is documented by id). */

static int dt_snap_get(pe_provider *p, const char *key, json_t **out, pe_err *err)
{
    char *ek = pe__url_escape(key), *url = pe__provider_url(p, "/snapshots/%s", ek);
    int r = dt_json(p, "GET", url, NULL, true, JSON_OBJECT, out, "get a snapshot", err);

    free(ek);
    free(url);
    return r;
}

/* probe: is snapshot `id` (a name here) active? */
static int dt_snap_probe(pe_provider *p, const char *id, void *ud, pe_err *err)
{
    char **snap_id = ud;
    json_t *v = NULL;
    const char *st, *sid;
    int r = 0;

    if (dt_snap_get(p, id, &v, err) < 0)
        return -1;
    st = json_string_value(json_object_get(v, "state"));
    sid = json_string_value(json_object_get(v, "id"));
    if (st && strcmp(st, "active") == 0) {
        if (sid == NULL || sid[0] == '\0' || strlen(sid) > 128)
            r = pe__provider_fail(p, err, PE_EREMOTE, NAME ": snapshot %s has no id", id);
        else
            *snap_id = pe_xstrdup(sid), r = 1;
    } else if (st && (strcmp(st, "error") == 0 || strcmp(st, "build_failed") == 0)) {
        r = pe__provider_fail(p, err, PE_EREMOTE, NAME ": snapshot %s is in state %s", id, st);
    }
    json_decref(v);
    return r;
}

static int dt_snapshot_create(pe_provider *p, const char *id, const char *name, char **snap_id,
                              pe_err *err)
{
    char *eid = pe__url_escape(id), *url = pe__provider_url(p, "/sandbox/%s/snapshot", eid);
    json_t *body = json_pack("{s:s}", "name", name);
    int r;

    /* not idempotent: a second POST is refused (the name is taken) */
    r = dt_json(p, "POST", url, body, false, 0, NULL, "snapshot a sandbox", err);
    free(eid);
    free(url);
    json_decref(body);
    if (r < 0)
        return -1;
    return pe__provider_poll(p, name, "active", dt_snap_probe, snap_id, err);
}

static int dt_snapshot_delete(pe_provider *p, const char *snap_id, pe_err *err)
{
    char *eid = pe__url_escape(snap_id), *url = pe__provider_url(p, "/snapshots/%s", eid);
    int r = dt_json(p, "DELETE", url, NULL, true, 0, NULL, "delete a snapshot", err);

    free(eid);
    free(url);
    return r;
}

const pe_provider_ops pe__provider_daytona = {
    .name = NAME,
    .takes = PE_TAKES_IMAGE | PE_TAKES_CPU | PE_TAKES_MEMORY | PE_TAKES_DISK,
    .caps = PE_CAP_STOP | PE_CAP_PTY | PE_CAP_FILE_LIST | PE_CAP_FILE_REMOVE | PE_CAP_PREVIEW |
            PE_CAP_SNAPSHOT | PE_CAP_SNAPSHOT_BASE | PE_CAP_PAUSE,
    .open = dt_open,
    .create = dt_create,
    .start = dt_start,
    .stop = dt_stop,
    .remove = dt_remove,
    .status = dt_status,
    .exec_start = dt_exec_start,
    .file_read = dt_file_read,
    .file_write = dt_file_write,
    .file_list = dt_file_list,
    .file_remove = dt_file_remove,
    .preview = dt_preview,
    .pause = dt_pause,
    .resume = dt_start,
    .snapshot_create = dt_snapshot_create,
    .snapshot_delete = dt_snapshot_delete,
};
