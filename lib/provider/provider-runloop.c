/* Runloop (reference §10): devboxes under base_url (public default
 * https://api.runloop.ai, /v1, Bearer key).
 *
 * Exec is an asynchronous execution (a shell line: Runloop runs commands
 * in a shell) whose stdout and stderr are two SSE tails; the pump thread
 * reads stdout, a thread of its own reads stderr, and the exit status is
 * then long-polled (`wait_for_status`, which answers 408 when its hold
 * ran out: asked again). stdin (text: Runloop's send_std_in takes a
 * string) and kill are calls of their own on the stream's side thread.
 *
 * Stop is suspend, start resume (the disk stays); pause is suspend too,
 * which keeps the disk but not memory (Runloop has nothing that keeps
 * processes): the daemon resumes a paused devbox on its next use, and its
 * services start again then. Remove is shutdown (a
 * shut down devbox stays listed: status on it answers ENOENT). Files are
 * upload_file/download_file; there is no listing call (so no tar), and
 * removal runs `rm`. No PTY (Runloop's PTY tunnel speaks a WebSocket whose
 * frames are not in the sources). A port's preview is the devbox's tunnel
 * (reference §10.6: one key for every port, {port}-{key}.tunnel.runloop.ai),
 * enabled on first use in authenticated mode: its token goes only to our
 * preview proxy (link.proxy), which decides who may open which port. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/util.h"
#include "provider-internal.h"

#define NAME "runloop"
#define DEFAULT_URL "https://api.runloop.ai"
#define IDLE_SUSPEND_S 3600
#define SSE_LINE_MAX (1u << 20)

static int rl_open(pe_provider *p, pe_err *err)
{
    if (p->cfg.creds.base_url == NULL)
        p->cfg.creds.base_url = pe_xstrdup(DEFAULT_URL);
    return 0;
}

/* POST/GET /v1/devboxes/ID/SUFFIX with a JSON body; *out the answer. */
static int rl_call(pe_provider *p, const char *method, const char *id, const char *suffix,
                   json_t *body, bool idempotent, json_t **out, const char *what, pe_err *err)
{
    char *eid = pe__url_escape(id), *url = pe__provider_url(p, "/v1/devboxes/%s%s", eid, suffix);
    int r =
        pe__provider_json_call(p, method, url, NULL, body, idempotent, JSON_OBJECT, out, what, err);

    free(eid);
    free(url);
    return r;
}

static const char *rl_status_of(json_t *v)
{
    const char *s = json_string_value(json_object_get(v, "status"));
    return s ? s : "";
}

static int rl_remove(pe_provider *p, const char *id, pe_err *err)
{
    return rl_call(p, "POST", id, "/shutdown", NULL, true, NULL, "shut down a devbox", err);
}

/* probe of pe__provider_poll: is the devbox in state `ud`? failure and
 * shutdown end the wait. */
static int rl_probe(pe_provider *p, const char *id, void *ud, pe_err *err)
{
    const char *want = ud, *st;
    json_t *v = NULL;
    int r = 0;

    if (rl_call(p, "GET", id, "", NULL, true, &v, "get a devbox", err) < 0)
        return -1;
    st = rl_status_of(v);
    if (strcmp(st, want) == 0) {
        r = 1;
    } else if (strcmp(st, "failure") == 0 || strcmp(st, "shutdown") == 0) {
        const char *why = json_string_value(json_object_get(v, "failure_reason"));
        r = pe__provider_fail(p, err, PE_EREMOTE, NAME ": devbox %s is %s%s%.100s", id, st,
                              why ? ": " : "", why ? why : "");
    }
    json_decref(v);
    return r;
}

static json_t *rl_launch(const pe_provider_spec *spec)
{
    /* an idle devbox suspends (files kept) rather than shutting down */
    json_t *l = json_pack("{s:{s:i, s:s}}", "after_idle", "idle_time_seconds", IDLE_SUSPEND_S,
                          "on_idle", "suspend");

    if (spec->cpu_millis || spec->memory_bytes || spec->disk_bytes) {
        json_object_set_new(l, "resource_size_request", json_string("CUSTOM_SIZE"));
        if (spec->cpu_millis)
            json_object_set_new(l, "custom_cpu_cores",
                                json_integer((spec->cpu_millis + 999) / 1000));
        if (spec->memory_bytes)
            json_object_set_new(l, "custom_gb_memory",
                                json_integer((spec->memory_bytes + (1 << 30) - 1) >> 30));
        if (spec->disk_bytes)
            json_object_set_new(l, "custom_disk_size",
                                json_integer((spec->disk_bytes + (1 << 30) - 1) >> 30));
    }
    return l;
}

static int rl_create(pe_provider *p, const pe_provider_spec *spec, char **id, pe_err *err)
{
    json_t *body, *v = NULL;
    char *url = pe__provider_url(p, "/v1/devboxes");
    const char *sid;
    int r;

    body = json_pack("{s:o, s:{s:s}, s:o}", "environment_variables", pe__env_object(spec->env),
                     "metadata", "pocketenv", spec->name ? spec->name : "", "launch_parameters",
                     rl_launch(spec));
    if (spec->name)
        json_object_set_new(body, "name", json_string(spec->name));
    if (spec->image) /* Runloop's images are blueprints */
        json_object_set_new(body, "blueprint_name", json_string(spec->image));
    /* not idempotent: a second POST makes a second devbox */
    r = pe__provider_json_call(p, "POST", url, NULL, body, false, JSON_OBJECT, &v,
                               "create a devbox", err);
    free(url);
    json_decref(body);
    if (r < 0)
        return -1;
    sid = json_string_value(json_object_get(v, "id"));
    if (sid == NULL || sid[0] == '\0' || strlen(sid) > 128) {
        json_decref(v);
        return pe__provider_fail(p, err, PE_EREMOTE, NAME " answered create without an id");
    }
    *id = pe_xstrdup(sid);
    json_decref(v);
    return pe__provider_create_settle(p, spec, id, "running", rl_probe, (void *)"running", err);
}

static int rl_action(pe_provider *p, const char *id, const char *action, const char *want,
                     pe_err *err)
{
    char suffix[32], what[48];

    snprintf(suffix, sizeof(suffix), "/%s", action);
    snprintf(what, sizeof(what), "%s a devbox", action);
    if (rl_call(p, "POST", id, suffix, NULL, true, NULL, what, err) < 0)
        return -1;
    return pe__provider_poll(p, id, want, rl_probe, (void *)want, err);
}

static int rl_stop(pe_provider *p, const char *id, pe_err *err)
{
    return rl_action(p, id, "suspend", "suspended", err);
}

static int rl_start(pe_provider *p, const char *id, pe_err *err)
{
    return rl_action(p, id, "resume", "running", err);
}

static int rl_status(pe_provider *p, const char *id, pe_provider_status *st, pe_err *err)
{
    static const struct {
        const char *raw;
        int state;
    } map[] = {{"running", PE_PSTATE_RUNNING},       {"suspended", PE_PSTATE_STOPPED},
               {"suspending", PE_PSTATE_STOPPED},    {"provisioning", PE_PSTATE_CREATING},
               {"initializing", PE_PSTATE_CREATING}, {"queued", PE_PSTATE_CREATING},
               {"scheduled", PE_PSTATE_CREATING},    {"resuming", PE_PSTATE_CREATING},
               {"failure", PE_PSTATE_ERROR}};
    json_t *v = NULL;

    if (rl_call(p, "GET", id, "", NULL, true, &v, "get a devbox", err) < 0)
        return -1;
    snprintf(st->raw, sizeof(st->raw), "%s", rl_status_of(v));
    json_decref(v);
    /* shut down is gone: what remove made, reported as a missing sandbox */
    if (strcmp(st->raw, "shutdown") == 0)
        return pe_err_set(err, PE_ENOENT, 0, NAME ": devbox %s was shut down", id);
    for (size_t i = 0; i < PE_ARRAY_LEN(map); i++)
        if (strcmp(st->raw, map[i].raw) == 0)
            st->state = map[i].state;
    return 0;
}

/* ---- exec ---- */

typedef struct rl_tail {
    struct pe_provider_stream *s;
    int fd;
    char *line;
    size_t len, cap;
    bool bad;
    char error[PE_ERR_MSG_MAX];
} rl_tail;

typedef struct rl_exec {
    char *id, *eid;
    rl_tail tail[2]; /* stdout, stderr */
} rl_exec;

static void rl_exec_free(void *ud)
{
    rl_exec *x = ud;

    free(x->id);
    free(x->eid);
    free(x->tail[0].line);
    free(x->tail[1].line);
    free(x);
}

/* One SSE line: `data: {"output", "offset"}` carries output. */
static void rl_sse_line(rl_tail *t, const char *line, size_t len)
{
    json_t *v, *o;

    if (len < 5 || strncmp(line, "data:", 5) != 0)
        return;
    line += 5;
    len -= 5;
    if (len && *line == ' ') {
        line++;
        len--;
    }
    v = json_loadb(line, len, 0, NULL);
    o = json_object_get(v, "output");
    if (json_is_string(o))
        pe__stream_output(t->s, t->fd, json_string_value(o), json_string_length(o));
    else
        t->bad = true;
    json_decref(v);
}

static bool rl_sse_data(const char *data, size_t len, void *ud)
{
    rl_tail *t = ud;

    for (size_t i = 0; i < len; i++) {
        if (data[i] == '\n') {
            if (t->len && t->line[t->len - 1] == '\r')
                t->len--;
            rl_sse_line(t, t->line ? t->line : "", t->len);
            t->len = 0;
            continue;
        }
        if (t->len + 1 > t->cap) {
            if (t->cap >= SSE_LINE_MAX) {
                t->bad = true;
                return false;
            }
            t->cap = t->cap ? t->cap * 2 : 256;
            t->line = pe_xrealloc(t->line, t->cap);
        }
        t->line[t->len++] = data[i];
    }
    return true;
}

/* Follow one tail to its end. 0, or -1 with t->error. */
static int rl_follow(rl_tail *t)
{
    struct pe_provider_stream *s = t->s;
    rl_exec *x = s->ud;
    char *eid = pe__url_escape(x->id), *url;
    const char *hdrs[] = {"Accept: text/event-stream", NULL};
    pe__preq rq;
    pe__presp rs;
    pe_err err;
    int r;

    url = pe__provider_url(s->p, "/v1/devboxes/%s/executions/%s/stream_%s_updates?offset=0", eid,
                           x->eid, t->fd == 1 ? "stdout" : "stderr");
    rq = (pe__preq){.url = url,
                    .headers = hdrs,
                    .on_data = rl_sse_data,
                    .ud = t,
                    .cancel = &s->cancel,
                    .stream = true};
    r = pe__provider_http(s->p, &rq, &rs, "follow an exec's output", &err);
    pe__presp_free(&rs);
    free(url);
    free(eid);
    if (r < 0)
        snprintf(t->error, sizeof(t->error), "%s", err.msg);
    else if (t->bad)
        snprintf(t->error, sizeof(t->error), NAME ": exec: an output event that is not its API");
    return t->error[0] ? -1 : 0;
}

static void *rl_follow_thread(void *arg)
{
    rl_follow(arg);
    return NULL;
}

/* The execution's exit status, long-polled. */
static int rl_exit(struct pe_provider_stream *s, pe_err *err)
{
    rl_exec *x = s->ud;
    char *suffix = pe_xasprintf("/executions/%s/wait_for_status", x->eid);
    json_t *body = json_pack("{s:[s]}", "statuses", "completed");
    int r = -1;

    while (!s->cancel) {
        json_t *v = NULL;
        char *eid = pe__url_escape(x->id), *url;
        pe__preq rq;
        pe__presp rs;
        char *text = json_dumps(body, JSON_COMPACT);
        url = pe__provider_url(s->p, "/v1/devboxes/%s%s", eid, suffix);
        rq = (pe__preq){.method = "POST",
                        .url = url,
                        .content_type = "application/json",
                        .body = text,
                        .body_len = strlen(text),
                        .idempotent = true};
        r = pe__provider_http(s->p, &rq, &rs, "wait for an exec", err);
        free(text);
        free(url);
        free(eid);
        if (r < 0 && rs.status == 408) { /* the hold ran out: ask again */
            pe__presp_free(&rs);
            continue;
        }
        if (r == 0 && (v = pe__provider_json(s->p, &rs, JSON_OBJECT, "wait for an exec", err)))
            r = 0;
        else
            r = -1;
        pe__presp_free(&rs);
        if (r == 0 && json_is_integer(json_object_get(v, "exit_status")))
            pe__stream_exit(s, (int)json_integer_value(json_object_get(v, "exit_status")));
        else if (r == 0)
            r = pe__provider_fail(s->p, err, PE_EREMOTE,
                                  NAME ": exec ended without an exit status");
        json_decref(v);
        break;
    }
    json_decref(body);
    free(suffix);
    return r;
}

static int rl_run(struct pe_provider_stream *s)
{
    rl_exec *x = s->ud;
    pthread_t t;
    bool two;
    pe_err err;

    x->tail[0] = (rl_tail){.s = s, .fd = 1};
    x->tail[1] = (rl_tail){.s = s, .fd = 2};
    two = pthread_create(&t, NULL, rl_follow_thread, &x->tail[1]) == 0;
    if (!two)
        snprintf(x->tail[1].error, sizeof(x->tail[1].error), NAME ": exec: no thread for stderr");
    rl_follow(&x->tail[0]);
    if (two)
        pthread_join(t, NULL);
    /* a tail that broke may have lost output: no exit code then */
    if (x->tail[0].error[0] || x->tail[1].error[0]) {
        snprintf(s->error, sizeof(s->error), "%s",
                 x->tail[0].error[0] ? x->tail[0].error : x->tail[1].error);
        return -1;
    }
    if (rl_exit(s, &err) < 0 && !s->cancel)
        snprintf(s->error, sizeof(s->error), "%s", err.msg);
    return 0;
}

static void rl_exec_post(struct pe_provider_stream *s, const char *action, json_t *body,
                         const char *what)
{
    rl_exec *x = s->ud;
    char *suffix = pe_xasprintf("/executions/%s/%s", x->eid, action);
    pe_err err;

    rl_call(s->p, "POST", x->id, suffix, body, false, NULL, what, &err);
    json_decref(body);
    free(suffix);
}

static int rl_input(struct pe_provider_stream *s, const unsigned char *data, size_t len)
{
    json_t *body = len ? json_pack("{s:s%}", "text", (const char *)data, len)
                       : json_pack("{s:s, s:s}", "text", "", "signal", "EOF");

    if (body == NULL) /* not UTF-8: Runloop's stdin is text */
        return -1;
    rl_exec_post(s, "send_std_in", body, len ? "send stdin" : "close stdin");
    return 0;
}

static void rl_kill(struct pe_provider_stream *s)
{
    rl_exec_post(s, "kill", json_object(), "kill an exec");
}

static const pe__stream_ops rl_exec_ops = {.run_http = rl_run,
                                           .on_input = rl_input,
                                           .on_kill = rl_kill,
                                           .free_ud = rl_exec_free,
                                           .http_side = true};

static int rl_exec_start(pe_provider *p, const char *id, const pe_provider_exec_opts *o,
                         pe_provider_proc *proc, pe_err *err)
{
    char *cmd = pe__shell_line(o);
    json_t *body = json_pack("{s:s, s:b}", "command", cmd, "attach_stdin", o->stdin_pipe),
           *v = NULL;
    const char *eid;
    rl_exec *x;
    int r;

    r = rl_call(p, "POST", id, "/execute_async", body, false, &v, "exec", err);
    json_decref(body);
    free(cmd);
    if (r < 0)
        return -1;
    eid = json_string_value(json_object_get(v, "execution_id"));
    if (eid == NULL || strlen(eid) > 128) {
        json_decref(v);
        return pe__provider_fail(p, err, PE_EREMOTE, NAME " answered exec without an execution_id");
    }
    x = pe_xcalloc(1, sizeof(*x));
    x->id = pe_xstrdup(id);
    x->eid = pe__url_escape(eid);
    json_decref(v);
    return pe__stream_start(p, &rl_exec_ops, x, NULL, false, o->stdin_pipe, proc, err);
}

/* ---- files ---- */

static int rl_file_read(pe_provider *p, const char *id, const char *path, size_t max, char **data,
                        size_t *len, pe_err *err)
{
    char *eid = pe__url_escape(id),
         *url = pe__provider_url(p, "/v1/devboxes/%s/download_file", eid);
    json_t *body = json_pack("{s:s}", "path", path);
    char *text = json_dumps(body, JSON_COMPACT);
    const char *hdrs[] = {"Accept: application/octet-stream", NULL};
    pe__preq rq = {.method = "POST",
                   .url = url,
                   .content_type = "application/json",
                   .body = text,
                   .body_len = strlen(text),
                   .headers = hdrs,
                   .idempotent = true,
                   .max = max};
    pe__presp rs;
    int r = pe__provider_http(p, &rq, &rs, "read a file", err);

    json_decref(body);
    free(text);
    free(url);
    free(eid);
    if (r < 0) {
        pe__presp_free(&rs);
        return pe_err_prefix(err, "%s", path);
    }
    *data = rs.body;
    *len = rs.len;
    return 0;
}

static int rl_file_write(pe_provider *p, const char *id, const char *path, const void *data,
                         size_t len, unsigned mode, pe_err *err)
{
    char *eid = pe__url_escape(id), *url = pe__provider_url(p, "/v1/devboxes/%s/upload_file", eid);
    CURL *c = curl_easy_init();
    curl_mime *mime = curl_mime_init(c);
    curl_mimepart *part = curl_mime_addpart(mime);
    pe__preq rq;
    pe__presp rs;
    int r;

    curl_mime_name(part, "path");
    curl_mime_data(part, path, CURL_ZERO_TERMINATED);
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
    free(eid);
    return r < 0 ? pe_err_prefix(err, "%s", path) : 0;
}

#define TUNNEL_URL "https://{port}-{key}.tunnel.runloop.ai/"
#define TUNNEL_HEADER "X-Runloop-Tunnel-Authorization"

static int rl_preview(pe_provider *p, const char *id, uint16_t port, pe_provider_preview_link *out,
                      pe_err *err)
{
    json_t *v = NULL, *t, *body = NULL;
    const char *key, *token;
    int r;

    if (rl_call(p, "GET", id, "", NULL, true, &v, "get a devbox", err) < 0)
        return -1;
    t = json_object_get(v, "tunnel");
    if (!json_is_string(json_object_get(t, "tunnel_key"))) {
        /* idempotent: enabling an enabled tunnel answers the same one */
        json_decref(v);
        v = NULL;
        body = json_pack("{s:s}", "auth_mode", "authenticated");
        r = rl_call(p, "POST", id, "/enable_tunnel", body, true, &v, "enable a tunnel", err);
        json_decref(body);
        if (r < 0)
            return -1;
        t = v;
    }
    key = json_string_value(json_object_get(t, "tunnel_key"));
    token = json_string_value(json_object_get(t, "auth_token"));
    r = pe__preview_fill(p, p->cfg.preview_url ? p->cfg.preview_url : TUNNEL_URL, id, key, port,
                         out, err);
    if (r == 0 && token && token[0] && !strpbrk(token, "\r\n")) {
        snprintf(out->header_name, sizeof(out->header_name), TUNNEL_HEADER);
        if ((size_t)snprintf(out->header_value, sizeof(out->header_value), "Bearer %s", token) >=
            sizeof(out->header_value))
            r = pe__provider_fail(p, err, PE_EREMOTE, NAME ": a tunnel token too long");
    }
    json_decref(v);
    return r;
}

const pe_provider_ops pe__provider_runloop = {
    .name = NAME,
    .takes = PE_TAKES_IMAGE | PE_TAKES_CPU | PE_TAKES_MEMORY | PE_TAKES_DISK,
    .caps = PE_CAP_STOP | PE_CAP_STDIN | PE_CAP_FILE_REMOVE | PE_CAP_PREVIEW | PE_CAP_PAUSE,
    .open = rl_open,
    .create = rl_create,
    .start = rl_start,
    .stop = rl_stop,
    .remove = rl_remove,
    .status = rl_status,
    .exec_start = rl_exec_start,
    .file_read = rl_file_read,
    .file_write = rl_file_write,
    .file_remove = pe__provider_remove_by_exec,
    .preview = rl_preview,
    .pause = rl_stop,
    .resume = rl_start,
};
