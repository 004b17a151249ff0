/* Deno Sandbox (reference §6): everything inside a sandbox is JSON-RPC 2.0
 * over a WebSocket (`/api/v3/sandbox/{id}/connect`); lifecycle is that
 * WebSocket's upgrade (create) and a few REST calls, all under base_url
 * (public default https://ord.sandbox-api.deno.net; the console's calls
 * are served there too by the sandbox host's DELETE, as the JS SDK does).
 *
 * A sandbox created over a WebSocket dies with it unless it has a stop
 * time: create sets one (PATCH stop_at_ms) before letting its WebSocket
 * go, so the sandbox outlives the call; the daemon's housekeeping will
 * renew it (not done in this step). No start after a stop (a stopped
 * sandbox is gone), no PTY (Deno's terminals are SSH only), no tar.
 * Each call opens its own WebSocket: calls on one sandbox never share
 * state. Threading as provider.h. */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <wslay/wslay.h>

#include "core/util.h"
#include "provider-internal.h"

#define NAME "deno"
#define DEFAULT_URL "https://ord.sandbox-api.deno.net"
/* How long a sandbox lives past its last renewal. */
#define LIFETIME_MS (30 * 60 * 1000)
#define STDIN_STREAM 1
#define CONTENT_STREAM 2

static int dn_open(pe_provider *p, pe_err *err)
{
    if (p->cfg.creds.base_url == NULL)
        p->cfg.creds.base_url = pe_xstrdup(DEFAULT_URL);
    return 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int dn_rest(pe_provider *p, const char *method, const char *id, const char *suffix,
                   json_t *body, json_t **out, const char *what, pe_err *err)
{
    char *eid = pe__url_escape(id), *url = pe__provider_url(p, "/api/v3/sandbox/%s%s", eid, suffix);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    pe__preq rq = {.method = method,
                   .url = url,
                   .content_type = text ? "application/json" : NULL,
                   .body = text,
                   .body_len = text ? strlen(text) : 0,
                   .idempotent = true};
    pe__presp rs;
    int r = pe__provider_http(p, &rq, &rs, what, err);

    if (r == 0 && out && (*out = pe__provider_json(p, &rs, JSON_OBJECT, what, err)) == NULL)
        r = -1;
    pe__presp_free(&rs);
    free(text);
    free(url);
    free(eid);
    return r;
}

static int dn_set_stop(pe_provider *p, const char *id, int64_t at, pe_err *err)
{
    json_t *body = json_pack("{s:I}", "stop_at_ms", (json_int_t)at), *ans = NULL;
    int r = dn_rest(p, "PATCH", id, "", body, &ans, "set a sandbox's stop time", err);

    json_decref(body);
    json_decref(ans);
    return r;
}

static int dn_remove(pe_provider *p, const char *id, pe_err *err)
{
    return dn_rest(p, "DELETE", id, "", NULL, NULL, "delete a sandbox", err);
}

static int dn_create(pe_provider *p, const pe_provider_spec *spec, char **id, pe_err *err)
{
    json_t *env = json_object(), *cfg;
    char *text, *b64, *hdr, *url, sid[160] = "";
    const char *hdrs[2];
    pe__ws *ws = NULL;
    pe_err ignored;
    int r;

    for (char *const *e = spec->env; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (eq) {
            char *k = pe_xasprintf("%.*s", (int)(eq - *e), *e);
            json_object_set_new(env, k, json_string(eq + 1));
            free(k);
        }
    }
    cfg = json_pack("{s:o, s:s}", "env", env, "timeout", "30m");
    if (spec->memory_bytes)
        json_object_set_new(cfg, "memory_mb", json_integer(spec->memory_bytes >> 20));
    text = json_dumps(cfg, JSON_COMPACT);
    b64 = pe__b64_encode(text, strlen(text));
    hdr = pe_xasprintf("x-deno-sandbox-config: %s", b64);
    hdrs[0] = hdr;
    hdrs[1] = NULL;
    url = pe__provider_url(p, "/api/v3/sandboxes/create");
    r = pe__ws_open(p, url, hdrs, "create a sandbox", &ws, err);
    free(url);
    free(hdr);
    free(b64);
    free(text);
    json_decref(cfg);
    if (r < 0)
        return -1;
    if (!pe__ws_header(ws, "x-deno-sandbox-id", sid, sizeof(sid)) || sid[0] == '\0') {
        pe__ws_free(ws);
        return pe__provider_fail(p, err, PE_EREMOTE, NAME " answered create without an id");
    }
    /* a stop time before the creating WebSocket goes: else the sandbox goes with it */
    r = dn_set_stop(p, sid, now_ms() + LIFETIME_MS, err);
    pe__ws_close(ws, 1000);
    pe__ws_free(ws);
    if (r < 0) {
        dn_remove(p, sid, &ignored);
        return pe_err_prefix(err, "create a sandbox");
    }
    *id = pe_xstrdup(sid);
    return 0;
}

/* Deno has no stop that keeps a sandbox: stop ends it (stop time now). */
static int dn_stop(pe_provider *p, const char *id, pe_err *err)
{
    return dn_set_stop(p, id, now_ms(), err);
}

static int dn_status(pe_provider *p, const char *id, pe_provider_status *st, pe_err *err)
{
    char *url = pe__provider_url(p, "/api/v3/sandboxes");
    pe__preq rq = {.url = url, .idempotent = true};
    pe__presp rs;
    json_t *v, *item;
    size_t i;
    int r = pe__provider_http(p, &rq, &rs, "list sandboxes", err);

    free(url);
    if (r < 0 || (v = pe__provider_json(p, &rs, JSON_ARRAY, "list sandboxes", err)) == NULL) {
        pe__presp_free(&rs);
        return -1;
    }
    pe__presp_free(&rs);
    r = pe_err_set(err, PE_ENOENT, 0, NAME ": sandbox %s: not found", id);
    json_array_foreach(v, i, item)
    {
        const char *s = json_string_value(json_object_get(item, "status"));
        if (strcmp(json_string_value(json_object_get(item, "id")) ?: "", id) != 0)
            continue;
        snprintf(st->raw, sizeof(st->raw), "%s", s ? s : "");
        st->state = s && strcmp(s, "running") == 0   ? PE_PSTATE_RUNNING
                    : s && strcmp(s, "stopped") == 0 ? PE_PSTATE_STOPPED
                                                     : PE_PSTATE_UNKNOWN;
        r = 0;
    }
    json_decref(v);
    return r;
}

/* ---- JSON-RPC ---- */

static int dn_connect(pe_provider *p, const char *id, const char *what, pe__ws **ws, pe_err *err)
{
    char *eid = pe__url_escape(id), *url = pe__provider_url(p, "/api/v3/sandbox/%s/connect", eid);
    int r = pe__ws_open(p, url, NULL, what, ws, err);

    free(eid);
    free(url);
    return r;
}

static int dn_send(pe__ws *ws, json_t *msg)
{
    char *text = json_dumps(msg, JSON_COMPACT);
    int r = pe__ws_send(ws, WSLAY_TEXT_FRAME, text, strlen(text));

    free(text);
    json_decref(msg);
    return r;
}

static int dn_call(pe__ws *ws, int id, const char *method, json_t *params)
{
    return dn_send(ws, json_pack("{s:s, s:i, s:s, s:o}", "jsonrpc", "2.0", "id", id, "method",
                                 method, "params", params));
}

static int dn_notify(pe__ws *ws, const char *method, json_t *params)
{
    return dn_send(
        ws, json_pack("{s:s, s:s, s:o}", "jsonrpc", "2.0", "method", method, "params", params));
}

/* A reply's outcome: 0 with *ok (borrowed), or the error it carries. */
static int dn_reply(pe_provider *p, json_t *reply, const char *what, json_t **ok, pe_err *err)
{
    json_t *result = json_object_get(reply, "result"), *e;

    if ((e = json_object_get(reply, "error")) != NULL)
        return pe__provider_fail(p, err, PE_EREMOTE, NAME ": %s: %.300s", what,
                                 json_string_value(json_object_get(e, "message")) ?: "RPC error");
    if ((e = json_object_get(result, "error")) != NULL) {
        const char *code = json_string_value(json_object_get(e, "code"));
        return pe__provider_fail(p, err,
                                 code && strcmp(code, "ENOENT") == 0 ? PE_ENOENT : PE_EINVAL,
                                 NAME ": %s: %.300s", what,
                                 json_string_value(json_object_get(e, "message")) ?: "failed");
    }
    if (!json_is_object(result) || (*ok = json_object_get(result, "ok")) == NULL)
        return pe__provider_fail(p, err, PE_EREMOTE,
                                 NAME " answered %s with something that is not its API", what);
    return 0;
}

typedef struct dn_wait {
    int want;
    json_t *reply;
} dn_wait;

static void dn_wait_msg(void *ud, int opcode, const unsigned char *data, size_t len)
{
    dn_wait *w = ud;
    json_t *v;

    if (opcode != WSLAY_TEXT_FRAME || w->reply)
        return;
    v = json_loadb((const char *)data, len, 0, NULL);
    if (json_integer_value(json_object_get(v, "id")) == w->want && json_object_get(v, "id"))
        w->reply = v;
    else
        json_decref(v);
}

/* One call on its own connection: *ok is the result (owned by *reply). */
static int dn_rpc(pe_provider *p, const char *id, const char *method, json_t *params,
                  const void *stream, size_t stream_len, json_t **reply, json_t **ok,
                  const char *what, pe_err *err)
{
    int64_t deadline = pe_monotonic_ms() + p->cfg.timeout_ms;
    dn_wait w = {.want = 1};
    pe__ws *ws = NULL;
    int r = 0;

    if (dn_connect(p, id, what, &ws, err) < 0) {
        json_decref(params);
        return -1;
    }
    if (stream) {
        /* bytes go as a client stream the call then names */
        char *b64 = pe__b64_encode(stream, stream_len);
        dn_notify(ws, "$sandbox.stream.start", json_pack("{s:i}", "streamId", CONTENT_STREAM));
        dn_notify(ws, "$sandbox.stream.enqueue",
                  json_pack("{s:i, s:s}", "streamId", CONTENT_STREAM, "data", b64));
        dn_notify(ws, "$sandbox.stream.end", json_pack("{s:i}", "streamId", CONTENT_STREAM));
        free(b64);
    }
    dn_call(ws, 1, method, params);
    while (w.reply == NULL && r >= 0)
        r = pe__ws_step(ws, deadline, dn_wait_msg, &w);
    pe__ws_free(ws);
    if (w.reply == NULL)
        return pe__provider_fail(
            p, err, r == -2 ? PE_ETIMEDOUT : PE_EREMOTE,
            r == -2 ? NAME " did not answer %s in time" : NAME ": %s: the connection broke", what);
    if (dn_reply(p, w.reply, what, ok, err) < 0) {
        json_decref(w.reply);
        return -1;
    }
    *reply = w.reply;
    return 0;
}

/* ---- exec: spawn, stream notifications, processWait ---- */

typedef struct dn_exec {
    json_int_t pid, out_id, err_id;
    bool spawned;
} dn_exec;

static void dn_exec_free(void *ud)
{
    free(ud);
}

static void dn_exec_msg(struct pe_provider_stream *s, int opcode, const unsigned char *data,
                        size_t len)
{
    dn_exec *x = s->ud;
    json_t *v, *ok = NULL, *params;
    const char *method;
    pe_err err;

    if (opcode != WSLAY_TEXT_FRAME)
        return;
    v = json_loadb((const char *)data, len, 0, NULL);
    method = json_string_value(json_object_get(v, "method"));
    params = json_object_get(v, "params");
    if (method && strcmp(method, "$sandbox.stream.enqueue") == 0) {
        json_int_t sid = json_integer_value(json_object_get(params, "streamId"));
        const char *b64 = json_string_value(json_object_get(params, "data")) ?: "";
        size_t n = 0;
        unsigned char *bytes = pe__b64_decode(b64, strlen(b64), &n);
        if (bytes && (sid == x->out_id || sid == x->err_id))
            pe__stream_output(s, sid == x->out_id ? 1 : 2, bytes, n);
        free(bytes);
    } else if (json_integer_value(json_object_get(v, "id")) == 1) {
        if (dn_reply(s->p, v, "exec", &ok, &err) < 0) {
            snprintf(s->error, sizeof(s->error), "%s", err.msg);
            pe__ws_close(s->ws, 1000);
        } else {
            x->pid = json_integer_value(json_object_get(ok, "pid"));
            x->out_id = json_integer_value(json_object_get(ok, "stdoutStreamId"));
            x->err_id = json_integer_value(json_object_get(ok, "stderrStreamId"));
            x->spawned = true;
            dn_call(s->ws, 2, "processWait", json_pack("{s:I}", "pid", x->pid));
        }
    } else if (json_integer_value(json_object_get(v, "id")) == 2) {
        if (dn_reply(s->p, v, "wait for a process", &ok, &err) < 0)
            snprintf(s->error, sizeof(s->error), "%s", err.msg);
        else
            pe__stream_exit(s, (int)json_integer_value(json_object_get(ok, "code")));
    }
    json_decref(v);
}

static int dn_exec_input(struct pe_provider_stream *s, const unsigned char *data, size_t len)
{
    char *b64;

    if (len == 0)
        return dn_notify(s->ws, "$sandbox.stream.end",
                         json_pack("{s:i}", "streamId", STDIN_STREAM));
    b64 = pe__b64_encode(data, len);
    dn_notify(s->ws, "$sandbox.stream.enqueue",
              json_pack("{s:i, s:s}", "streamId", STDIN_STREAM, "data", b64));
    free(b64);
    return 0;
}

static void dn_exec_kill(struct pe_provider_stream *s)
{
    dn_exec *x = s->ud;

    if (x->spawned)
        dn_call(s->ws, 3, "processKill",
                json_pack("{s:I, s:s}", "pid", x->pid, "signal", "SIGTERM"));
}

static const pe__stream_ops dn_exec_ops = {.on_msg = dn_exec_msg,
                                           .on_input = dn_exec_input,
                                           .on_kill = dn_exec_kill,
                                           .free_ud = dn_exec_free};

static json_t *dn_env(char *const *env)
{
    json_t *o = json_object();

    for (char *const *e = env; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (eq) {
            char *k = pe_xasprintf("%.*s", (int)(eq - *e), *e);
            json_object_set_new(o, k, json_string(eq + 1));
            free(k);
        }
    }
    return o;
}

static int dn_exec_start(pe_provider *p, const char *id, const pe_provider_exec_opts *o,
                         pe_provider_proc *proc, pe_err *err)
{
    json_t *args = json_array(), *params;
    pe__ws *ws = NULL;

    if (dn_connect(p, id, "exec", &ws, err) < 0) {
        json_decref(args);
        return -1;
    }
    for (char *const *a = o->argv + 1; *a; a++)
        json_array_append_new(args, json_string(*a));
    params = json_pack("{s:s, s:o, s:o, s:s, s:s, s:s}", "command", o->argv[0], "args", args, "env",
                       dn_env(o->env), "stdin", o->stdin_pipe ? "piped" : "null", "stdout", "piped",
                       "stderr", "piped");
    if (o->workdir)
        json_object_set_new(params, "cwd", json_string(o->workdir));
    if (o->stdin_pipe) {
        json_object_set_new(params, "stdinStreamId", json_integer(STDIN_STREAM));
        dn_notify(ws, "$sandbox.stream.start", json_pack("{s:i}", "streamId", STDIN_STREAM));
    }
    dn_call(ws, 1, "spawn", params);
    return pe__stream_start(p, &dn_exec_ops, pe_xcalloc(1, sizeof(dn_exec)), ws, false,
                            o->stdin_pipe, proc, err);
}

/* ---- files ---- */

static int dn_file_read(pe_provider *p, const char *id, const char *path, size_t max, char **data,
                        size_t *len, pe_err *err)
{
    json_t *reply = NULL, *ok = NULL;
    const char *b64;
    unsigned char *bytes;

    if (dn_rpc(p, id, "readFile", json_pack("{s:s}", "path", path), NULL, 0, &reply, &ok,
               "read a file", err) < 0)
        return pe_err_prefix(err, "%s", path);
    b64 = json_string_value(ok);
    bytes = b64 ? pe__b64_decode(b64, strlen(b64), len) : NULL;
    json_decref(reply);
    if (bytes == NULL)
        return pe__provider_fail(p, err, PE_EREMOTE,
                                 NAME " answered read a file with something that is not base64");
    if (*len > max) {
        free(bytes);
        return pe_err_set(err, PE_EINVAL, 0, NAME ": %s: larger than %zu bytes", path, max);
    }
    *data = (char *)bytes;
    return 0;
}

static int dn_file_write(pe_provider *p, const char *id, const char *path, const void *data,
                         size_t len, unsigned mode, pe_err *err)
{
    json_t *reply = NULL, *ok = NULL;
    const char *slash = strrchr(path, '/');

    if (slash && slash != path) {
        /* parents first, as the other providers' writes do */
        char *dir = pe_xasprintf("%.*s", (int)(slash - path), path);
        int r = dn_rpc(p, id, "mkdir",
                       json_pack("{s:s, s:{s:b}}", "path", dir, "options", "recursive", 1), NULL, 0,
                       &reply, &ok, "make a directory", err);
        free(dir);
        if (r < 0)
            return pe_err_prefix(err, "%s", path);
        json_decref(reply);
    }
    if (dn_rpc(p, id, "writeFile",
               json_pack("{s:s, s:i, s:{s:b, s:i}}", "path", path, "contentStreamId",
                         CONTENT_STREAM, "options", "create", 1, "mode",
                         mode ? mode & 07777 : 0644),
               data ? data : "", len, &reply, &ok, "write a file", err) < 0)
        return pe_err_prefix(err, "%s", path);
    json_decref(reply);
    return 0;
}

static int dn_file_list(pe_provider *p, const char *id, const char *path, pe_provider_dirent **ents,
                        size_t *n, pe_err *err)
{
    json_t *reply = NULL, *ok = NULL, *e;
    size_t i;

    if (dn_rpc(p, id, "readDir", json_pack("{s:s}", "path", path), NULL, 0, &reply, &ok,
               "list files", err) < 0)
        return pe_err_prefix(err, "%s", path);
    *ents = pe_xcalloc(json_array_size(ok) + 1, sizeof(**ents));
    json_array_foreach(ok, i, e)
    {
        const char *name = json_string_value(json_object_get(e, "name"));
        if (name == NULL)
            continue;
        snprintf((*ents)[*n].name, sizeof((*ents)[*n].name), "%s", name);
        (*ents)[*n].is_dir = json_is_true(json_object_get(e, "isDirectory"));
        (*n)++;
    }
    json_decref(reply);
    return 0;
}

static int dn_file_remove(pe_provider *p, const char *id, const char *path, bool recursive,
                          pe_err *err)
{
    json_t *reply = NULL, *ok = NULL;

    if (dn_rpc(p, id, "remove",
               json_pack("{s:s, s:{s:b}}", "path", path, "options", "recursive", recursive), NULL,
               0, &reply, &ok, "remove a file", err) < 0)
        return pe_err_prefix(err, "%s", path);
    json_decref(reply);
    return 0;
}

/* Exposed HTTP is public: no header. The URL takes the API's scheme. */
static int dn_preview(pe_provider *p, const char *id, uint16_t port, pe_provider_preview_link *out,
                      pe_err *err)
{
    json_t *body = json_pack("{s:i}", "port", port), *ans = NULL, *reply = NULL, *ok = NULL;
    const char *domain;
    bool plain = strncmp(p->cfg.creds.base_url, "http://", 7) == 0;
    int r = dn_rest(p, "POST", id, "/expose/http", body, &ans, "expose a port", err);

    json_decref(body);
    if (r < 0)
        return -1;
    domain = json_string_value(json_object_get(ans, "domain"));
    if (domain == NULL) {
        json_decref(ans);
        return pe__provider_fail(p, err, PE_EREMOTE,
                                 NAME " answered expose a port without a domain");
    }
    snprintf(out->url, sizeof(out->url), "%s%s/", plain ? "http://" : "https://", domain);
    r = dn_rpc(p, id, "exposeHttp", json_pack("{s:i, s:s}", "port", port, "domain", domain), NULL,
               0, &reply, &ok, "expose a port", err);
    json_decref(reply);
    json_decref(ans);
    return r;
}

const pe_provider_ops pe__provider_deno = {
    .name = NAME,
    .takes = PE_TAKES_MEMORY,
    .caps = PE_CAP_STDIN | PE_CAP_FILE_LIST | PE_CAP_FILE_REMOVE | PE_CAP_PREVIEW,
    .open = dn_open,
    .create = dn_create,
    .stop = dn_stop,
    .remove = dn_remove,
    .status = dn_status,
    .exec_start = dn_exec_start,
    .file_read = dn_file_read,
    .file_write = dn_file_write,
    .file_list = dn_file_list,
    .file_remove = dn_file_remove,
    .preview = dn_preview,
};
