/* Hopx (reference §11): a control plane under base_url (public default
 * https://api.hopx.dev, key in X-API-Key) and, per sandbox, an agent at
 * the sandbox's public_host, called with a per-sandbox JWT.
 *
 * Two credentials, kept apart: the API key goes only to the control
 * plane; the agent gets the JWT that token/refresh hands out, asked for
 * each time (nothing cached between calls, like the agent's host, which
 * is read from the sandbox). Exec is the agent's /execute/stream
 * WebSocket (a shell line; stdout/stderr/result messages), the terminal
 * its /terminal WebSocket (JSON frames; the agent's own shell: argv is
 * not chosen). Stop is pause, start resume. CPU, memory and disk are the
 * template's. No stdin (the stream takes none). A port's preview is the
 * agent's host with the port in place of 7777 (reference §11.6:
 * {port}-{id}.{region}.vms.hopx.dev), public at Hopx: so it goes through
 * our preview proxy (link.proxy), which keeps private ports private. */
#include <stdio.h>
#include <string.h>
#include <wslay/wslay.h>

#include "core/util.h"
#include "provider-internal.h"

#define NAME "hopx"
#define DEFAULT_URL "https://api.hopx.dev"
#define DEFAULT_TEMPLATE "code-interpreter"
#define KEY_HEADER "X-API-Key"
/* the stream's own limit when the caller set none: a day */
#define STREAM_TIMEOUT_S 86400

static int hx_open(pe_provider *p, pe_err *err)
{
    if (p->cfg.creds.base_url == NULL)
        p->cfg.creds.base_url = pe_xstrdup(DEFAULT_URL);
    return 0;
}

static int hx_api(pe_provider *p, const char *method, const char *id, const char *suffix,
                  json_t *body, bool idempotent, json_t **out, const char *what, pe_err *err)
{
    char *eid = id ? pe__url_escape(id) : NULL;
    char *url = id ? pe__provider_url(p, "/v1/sandboxes/%s%s", eid, suffix)
                   : pe__provider_url(p, "/v1/sandboxes");
    pe__preq rq = {
        .method = method, .url = url, .idempotent = idempotent, .key_header = KEY_HEADER};
    int r = pe__provider_json_req(p, &rq, body, JSON_OBJECT, out, what, err);

    free(eid);
    free(url);
    return r;
}

static const char *hx_status_of(json_t *v)
{
    const char *s = json_string_value(json_object_get(v, "status"));
    return s ? s : "";
}

static int hx_remove(pe_provider *p, const char *id, pe_err *err)
{
    return hx_api(p, "DELETE", id, "", NULL, true, NULL, "delete a sandbox", err);
}

static int hx_probe(pe_provider *p, const char *id, void *ud, pe_err *err)
{
    const char *want = ud, *st;
    json_t *v = NULL;
    int r = 0;

    if (hx_api(p, "GET", id, "", NULL, true, &v, "get a sandbox", err) < 0)
        return -1;
    st = hx_status_of(v);
    if (strcmp(st, want) == 0)
        r = 1;
    else if (strcmp(st, "error") == 0 || strcmp(st, "stopped") == 0)
        r = pe__provider_fail(p, err, PE_EREMOTE, NAME ": sandbox %s is %s", id, st);
    json_decref(v);
    return r;
}

/* ---- the agent ---- */

typedef struct hx_agent {
    char *url;    /* public_host, no trailing slash */
    char *hdr[2]; /* "Authorization: Bearer JWT" (secret), NULL */
} hx_agent;

static void hx_agent_free(hx_agent *a)
{
    free(a->url);
    pe__secret_free(a->hdr[0]);
    memset(a, 0, sizeof(*a));
}

static int hx_agent_get(pe_provider *p, const char *id, hx_agent *a, pe_err *err)
{
    json_t *sb = NULL, *tok = NULL;
    const char *host, *jwt;
    size_t n;

    memset(a, 0, sizeof(*a));
    if (hx_api(p, "GET", id, "", NULL, true, &sb, "get a sandbox", err) < 0)
        return -1;
    host = json_string_value(json_object_get(sb, "public_host"));
    if (strcmp(hx_status_of(sb), "running") != 0) {
        pe_err_set(err, PE_EINVAL, 0, NAME ": sandbox %s is %s, not running", id, hx_status_of(sb));
        json_decref(sb);
        return -1;
    }
    if (host == NULL || (strncmp(host, "https://", 8) != 0 && strncmp(host, "http://", 7) != 0)) {
        json_decref(sb);
        return pe__provider_fail(p, err, PE_EREMOTE, NAME " reported no agent host for sandbox %s",
                                 id);
    }
    n = strlen(host);
    while (n > 0 && host[n - 1] == '/')
        n--;
    a->url = pe_xasprintf("%.*s", (int)n, host);
    json_decref(sb);
    /* refreshing is idempotent: any token it hands out is good */
    if (hx_api(p, "POST", id, "/token/refresh", NULL, true, &tok, "get an agent token", err) < 0) {
        hx_agent_free(a);
        return -1;
    }
    jwt = json_string_value(json_object_get(tok, "auth_token"));
    if (jwt == NULL || strchr(jwt, '\r') || strchr(jwt, '\n')) {
        json_decref(tok);
        hx_agent_free(a);
        return pe__provider_fail(p, err, PE_EREMOTE,
                                 NAME " answered a token refresh without a token");
    }
    a->hdr[0] = pe_xasprintf("Authorization: Bearer %s", jwt);
    json_decref(tok);
    return 0;
}

/* A JSON call to the agent: `path` already holds its query. */
static int hx_agent_json(pe_provider *p, const hx_agent *a, const char *method, const char *path,
                         json_t *body, bool idempotent, json_t **out, const char *what, pe_err *err)
{
    char *url = pe_xasprintf("%s%s", a->url, path);
    pe__preq rq = {.method = method,
                   .url = url,
                   .headers = (const char *const *)a->hdr,
                   .no_key = true,
                   .idempotent = idempotent};
    int r = pe__provider_json_req(p, &rq, body, JSON_OBJECT, out, what, err);

    free(url);
    return r;
}

static int hx_create(pe_provider *p, const pe_provider_spec *spec, char **id, pe_err *err)
{
    json_t *body, *v = NULL;
    const char *sid;
    hx_agent a;
    pe_err ignored;
    int r;

    body =
        json_pack("{s:s, s:o, s:b}", "template_name", spec->image ? spec->image : DEFAULT_TEMPLATE,
                  "env_vars", pe__env_object(spec->env), "internet_access", 1);
    /* not idempotent: a second POST makes a second sandbox */
    r = hx_api(p, "POST", NULL, NULL, body, false, &v, "create a sandbox", err);
    json_decref(body);
    if (r < 0)
        return -1;
    sid = json_string_value(json_object_get(v, "id"));
    if (sid == NULL)
        sid = json_string_value(json_object_get(v, "sandbox_id"));
    if (sid == NULL || sid[0] == '\0' || strlen(sid) > 128) {
        json_decref(v);
        return pe__provider_fail(p, err, PE_EREMOTE, NAME " answered create without an id");
    }
    *id = pe_xstrdup(sid);
    json_decref(v);
    if (pe__provider_create_settle(p, spec, id, "running", hx_probe, (void *)"running", err) < 0)
        return -1;
    if (spec->env == NULL || spec->env[0] == NULL)
        return 0;
    /* the API does not apply env_vars to the running agent: set them there
     * too, as the SDK does */
    body = json_pack("{s:o, s:b}", "env_vars", pe__env_object(spec->env), "merge", 1);
    r = hx_agent_get(p, *id, &a, err);
    if (r == 0)
        r = hx_agent_json(p, &a, "PATCH", "/env", body, true, NULL, "set the environment", err);
    hx_agent_free(&a);
    json_decref(body);
    if (r < 0) {
        hx_remove(p, *id, &ignored);
        free(*id);
        *id = NULL;
        return pe_err_prefix(err, "create a sandbox");
    }
    return 0;
}

static int hx_action(pe_provider *p, const char *id, const char *action, const char *want,
                     pe_err *err)
{
    char suffix[16], what[32];

    snprintf(suffix, sizeof(suffix), "/%s", action);
    snprintf(what, sizeof(what), "%s a sandbox", action);
    if (hx_api(p, "POST", id, suffix, NULL, true, NULL, what, err) < 0)
        return -1;
    return pe__provider_poll(p, id, want, hx_probe, (void *)want, err);
}

static int hx_stop(pe_provider *p, const char *id, pe_err *err)
{
    return hx_action(p, id, "pause", "paused", err);
}

static int hx_start(pe_provider *p, const char *id, pe_err *err)
{
    return hx_action(p, id, "resume", "running", err);
}

static int hx_status(pe_provider *p, const char *id, pe_provider_status *st, pe_err *err)
{
    static const struct {
        const char *raw;
        int state;
    } map[] = {{"running", PE_PSTATE_RUNNING},
               {"paused", PE_PSTATE_STOPPED},
               {"creating", PE_PSTATE_CREATING},
               {"stopped", PE_PSTATE_ERROR},
               {"error", PE_PSTATE_ERROR}};
    json_t *v = NULL;

    if (hx_api(p, "GET", id, "", NULL, true, &v, "get a sandbox", err) < 0)
        return -1;
    snprintf(st->raw, sizeof(st->raw), "%s", hx_status_of(v));
    for (size_t i = 0; i < PE_ARRAY_LEN(map); i++)
        if (strcmp(st->raw, map[i].raw) == 0)
            st->state = map[i].state;
    json_decref(v);
    return 0;
}

/* ---- exec and the terminal (agent WebSockets, JSON text frames) ---- */

static void hx_msg(struct pe_provider_stream *s, int opcode, const unsigned char *data, size_t len)
{
    json_t *v;
    const char *type, *text;

    if (opcode != WSLAY_TEXT_FRAME)
        return;
    v = json_loadb((const char *)data, len, 0, NULL);
    type = json_string_value(json_object_get(v, "type"));
    text = json_string_value(json_object_get(v, "data"));
    if (type == NULL) {
        snprintf(s->error, sizeof(s->error), NAME ": exec: a message that is not its API");
    } else if (text && (strcmp(type, "stdout") == 0 || strcmp(type, "output") == 0)) {
        pe__stream_output(s, 1, text, json_string_length(json_object_get(v, "data")));
    } else if (text && strcmp(type, "stderr") == 0) {
        pe__stream_output(s, 2, text, json_string_length(json_object_get(v, "data")));
    } else if (strcmp(type, "result") == 0 && json_is_integer(json_object_get(v, "exit_code"))) {
        pe__stream_exit(s, (int)json_integer_value(json_object_get(v, "exit_code")));
    } else if (strcmp(type, "exit") == 0 && json_is_integer(json_object_get(v, "code"))) {
        pe__stream_exit(s, (int)json_integer_value(json_object_get(v, "code")));
    } else if (strcmp(type, "error") == 0) {
        snprintf(s->error, sizeof(s->error), NAME ": exec: %.300s",
                 json_string_value(json_object_get(v, "error")) ?: "failed");
    }
    json_decref(v);
}

static int hx_send_json(struct pe_provider_stream *s, json_t *m)
{
    char *text = m ? json_dumps(m, JSON_COMPACT) : NULL;
    int r = text ? pe__ws_send(s->ws, WSLAY_TEXT_FRAME, text, strlen(text)) : -1;

    free(text);
    json_decref(m);
    return r;
}

static int hx_input(struct pe_provider_stream *s, const unsigned char *data, size_t len)
{
    /* the terminal takes text: input that is not UTF-8 cannot be sent */
    return len ? hx_send_json(
                     s, json_pack("{s:s, s:s%}", "type", "input", "data", (const char *)data, len))
               : 0;
}

static int hx_resize(struct pe_provider_stream *s, unsigned short cols, unsigned short rows)
{
    return hx_send_json(s,
                        json_pack("{s:s, s:i, s:i}", "type", "resize", "cols", cols, "rows", rows));
}

/* Neither socket has a kill message: closing it ends the command. */
static void hx_kill(struct pe_provider_stream *s)
{
    pe__ws_close(s->ws, 1000);
}

static const pe__stream_ops hx_exec_ops = {.on_msg = hx_msg, .on_kill = hx_kill};
static const pe__stream_ops hx_pty_ops = {
    .on_msg = hx_msg, .on_input = hx_input, .on_resize = hx_resize, .on_kill = hx_kill};

static int hx_exec_start(pe_provider *p, const char *id, const pe_provider_exec_opts *o,
                         pe_provider_proc *proc, pe_err *err)
{
    hx_agent a;
    pe__ws *ws = NULL;
    char *url, *code, *text;
    json_t *m;
    int r;

    if (hx_agent_get(p, id, &a, err) < 0)
        return -1;
    url = pe_xasprintf("%s%s", a.url, o->tty ? "/terminal" : "/execute/stream");
    r = pe__ws_open(p, url, (const char *const *)a.hdr, o->tty ? "open a terminal" : "exec", &ws,
                    err);
    free(url);
    hx_agent_free(&a);
    if (r < 0)
        return -1;
    if (o->tty) {
        char msg[96];
        int n = snprintf(msg, sizeof(msg), "{\"type\":\"resize\",\"cols\":%u,\"rows\":%u}",
                         o->cols ? o->cols : 80, o->rows ? o->rows : 24);
        pe__ws_send(ws, WSLAY_TEXT_FRAME, msg, (size_t)n);
        return pe__stream_start(p, &hx_pty_ops, NULL, ws, true, false, proc, err);
    }
    code = pe__shell_line(o);
    m = json_pack("{s:s, s:s, s:s, s:i}", "type", "execute", "code", code, "language", "bash",
                  "timeout", o->timeout > 0 ? (int)(o->timeout + 1) : STREAM_TIMEOUT_S);
    free(code);
    if (o->workdir)
        json_object_set_new(m, "workdir", json_string(o->workdir));
    text = json_dumps(m, JSON_COMPACT);
    pe__ws_send(ws, WSLAY_TEXT_FRAME, text, strlen(text));
    free(text);
    json_decref(m);
    return pe__stream_start(p, &hx_exec_ops, NULL, ws, false, false, proc, err);
}

/* ---- files ---- */

static char *hx_path_query(const char *op, const char *path)
{
    char *ep = pe__url_escape(path), *q = pe_xasprintf("/files/%s?path=%s", op, ep);

    free(ep);
    return q;
}

static int hx_file_read(pe_provider *p, const char *id, const char *path, size_t max, char **data,
                        size_t *len, pe_err *err)
{
    hx_agent a;
    char *q, *url;
    pe__preq rq;
    pe__presp rs;
    int r;

    if (hx_agent_get(p, id, &a, err) < 0)
        return -1;
    q = hx_path_query("download", path);
    url = pe_xasprintf("%s%s", a.url, q);
    rq = (pe__preq){.url = url,
                    .headers = (const char *const *)a.hdr,
                    .no_key = true,
                    .idempotent = true,
                    .max = max};
    r = pe__provider_http(p, &rq, &rs, "read a file", err);
    free(q);
    free(url);
    hx_agent_free(&a);
    if (r < 0) {
        pe__presp_free(&rs);
        return pe_err_prefix(err, "%s", path);
    }
    *data = rs.body;
    *len = rs.len;
    return 0;
}

static int hx_file_write(pe_provider *p, const char *id, const char *path, const void *data,
                         size_t len, unsigned mode, pe_err *err)
{
    char *b64 = pe__b64_encode(data ? data : "", len), perm[8];
    json_t *body;
    hx_agent a;
    int r;

    snprintf(perm, sizeof(perm), "%04o", mode ? mode & 07777 : 0644);
    body = json_pack("{s:s, s:s, s:s, s:b, s:s}", "path", path, "content", b64, "encoding",
                     "base64", "overwrite", 1, "mode", perm);
    free(b64);
    r = hx_agent_get(p, id, &a, err);
    if (r == 0)
        r = hx_agent_json(p, &a, "POST", "/files/write", body, true, NULL, "write a file", err);
    hx_agent_free(&a);
    json_decref(body);
    return r < 0 ? pe_err_prefix(err, "%s", path) : 0;
}

static int hx_list(pe_provider *p, const hx_agent *a, const char *path, json_t **v, pe_err *err)
{
    char *q = hx_path_query("list", path);
    int r = hx_agent_json(p, a, "GET", q, NULL, true, v, "list files", err);

    free(q);
    return r;
}

static int hx_file_list(pe_provider *p, const char *id, const char *path, pe_provider_dirent **ents,
                        size_t *n, pe_err *err)
{
    hx_agent a;
    json_t *v = NULL, *e;
    size_t i;
    int r = hx_agent_get(p, id, &a, err);

    if (r == 0)
        r = hx_list(p, &a, path, &v, err);
    hx_agent_free(&a);
    if (r < 0)
        return pe_err_prefix(err, "%s", path);
    *ents = pe_xcalloc(json_array_size(json_object_get(v, "files")) + 1, sizeof(**ents));
    json_array_foreach(json_object_get(v, "files"), i, e)
    {
        pe_provider_dirent *d = &(*ents)[*n];
        const char *name = json_string_value(json_object_get(e, "name"));
        if (name == NULL)
            continue;
        snprintf(d->name, sizeof(d->name), "%s", name);
        d->is_dir = json_is_true(json_object_get(e, "is_directory"));
        d->size = (uint64_t)json_integer_value(json_object_get(e, "size"));
        (*n)++;
    }
    json_decref(v);
    return 0;
}

/* The agent's remove takes a directory with what it holds: a removal not
 * asked to be recursive looks first (a file does not list). */
static int hx_file_remove(pe_provider *p, const char *id, const char *path, bool recursive,
                          pe_err *err)
{
    hx_agent a;
    json_t *v = NULL;
    char *q;
    int r = hx_agent_get(p, id, &a, err);

    if (r == 0 && !recursive) {
        pe_err lerr = {0};
        int lr = hx_list(p, &a, path, &v, &lerr);
        if (lr == 0 && json_array_size(json_object_get(v, "files")) > 0)
            r = pe_err_set(err, PE_EINVAL, 0, NAME ": remove a file: directory not empty");
        else if (lr < 0 && lerr.code == PE_ENOENT)
            r = (*err = lerr, -1);
        json_decref(v);
    }
    if (r == 0) {
        q = hx_path_query("remove", path);
        r = hx_agent_json(p, &a, "DELETE", q, NULL, true, NULL, "remove a file", err);
        free(q);
    }
    hx_agent_free(&a);
    return r < 0 ? pe_err_prefix(err, "%s", path) : 0;
}

#define AGENT_PREFIX "7777-"

static int hx_preview(pe_provider *p, const char *id, uint16_t port, pe_provider_preview_link *out,
                      pe_err *err)
{
    json_t *sb = NULL;
    const char *host, *rest;
    cleanup_free char *tmpl = NULL;
    size_t n;

    if (hx_api(p, "GET", id, "", NULL, true, &sb, "get a sandbox", err) < 0)
        return -1; /* a sandbox that is not there has no preview */
    if (p->cfg.preview_url) {
        json_decref(sb);
        return pe__preview_fill(p, p->cfg.preview_url, id, NULL, port, out, err);
    }
    host = json_string_value(json_object_get(sb, "public_host"));
    rest = host && strncmp(host, "https://", 8) == 0 ? host + 8 : NULL;
    n = rest ? strcspn(rest, "/") : 0;
    /* a plain host name after the prefix: nothing of a template in it */
    if (rest == NULL || strncmp(rest, AGENT_PREFIX, strlen(AGENT_PREFIX)) != 0 ||
        n == strlen(AGENT_PREFIX) || strcspn(rest, "{}?#@") < n ||
        strspn(rest + n, "/") != strlen(rest + n)) {
        json_decref(sb);
        return pe__provider_fail(p, err, PE_EREMOTE,
                                 NAME ": the agent host of sandbox %s is not "
                                      "https://" AGENT_PREFIX "HOST: no preview host to derive",
                                 id);
    }
    tmpl = pe_xasprintf("https://{port}-%.*s/", (int)(n - strlen(AGENT_PREFIX)),
                        rest + strlen(AGENT_PREFIX));
    json_decref(sb);
    return pe__preview_fill(p, tmpl, id, NULL, port, out, err);
}

const pe_provider_ops pe__provider_hopx = {
    .name = NAME,
    .takes = PE_TAKES_IMAGE,
    .caps = PE_CAP_STOP | PE_CAP_PTY | PE_CAP_FILE_LIST | PE_CAP_FILE_REMOVE | PE_CAP_PREVIEW,
    .open = hx_open,
    .create = hx_create,
    .start = hx_start,
    .stop = hx_stop,
    .remove = hx_remove,
    .status = hx_status,
    .exec_start = hx_exec_start,
    .file_read = hx_file_read,
    .file_write = hx_file_write,
    .file_list = hx_file_list,
    .file_remove = hx_file_remove,
    .preview = hx_preview,
};
