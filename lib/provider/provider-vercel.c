/* Vercel Sandbox, v1 API (what upstream drives; reference §5): REST under
 * base_url (public default https://vercel.com/api), every call with
 * ?teamId= (creds.org) and the project (creds.project) at create.
 *
 * v1 has no delete (stop is the end of a sandbox's life, it stays listed
 * as stopped), no restart, no PTY (v2's interactive WebSocket is a later
 * step), no file list or delete (remove goes through exec), and routes
 * only the ports declared at create (at most 4). Writes are gzip'd tars
 * (libarchive). Exec: the command is started detached, its NDJSON log is
 * followed on the pump thread, then its exit code is read.
 * Threading as provider.h; nothing kept between calls. */
#include <archive.h>
#include <archive_entry.h>
#include <stdio.h>
#include <string.h>

#include "core/util.h"
#include "provider-internal.h"

#define NAME "vercel"
#define DEFAULT_URL "https://vercel.com/api"
#define MAX_PORTS 4
#define NDJSON_LINE_MAX (4u << 20)

static int vc_open(pe_provider *p, pe_err *err)
{
    if (p->cfg.creds.project == NULL || p->cfg.creds.project[0] == '\0')
        return pe_err_set(err, PE_EINVAL, 0, NAME ": a project id is needed");
    if (p->cfg.creds.base_url == NULL)
        p->cfg.creds.base_url = pe_xstrdup(DEFAULT_URL);
    return 0;
}

/* base + /v1/sandboxes + suffix + ?teamId= */
static char *vc_url(pe_provider *p, const char *id, const char *suffix)
{
    char *eid = id ? pe__url_escape(id) : NULL;
    char *team = p->cfg.creds.org ? pe__url_escape(p->cfg.creds.org) : NULL;
    char *url = pe__provider_url(p, "/v1/sandboxes%s%s%s%s%s", eid ? "/" : "", eid ? eid : "",
                                 suffix, team ? "?teamId=" : "", team ? team : "");

    free(eid);
    free(team);
    return url;
}

static int vc_json(pe_provider *p, const char *method, const char *url, json_t *body,
                   bool idempotent, json_t **out, const char *what, pe_err *err)
{
    return pe__provider_json_call(p, method, url, NULL, body, idempotent, JSON_OBJECT, out, what,
                                  err);
}

/* GET the sandbox: {sandbox, routes}. */
static int vc_get(pe_provider *p, const char *id, json_t **out, pe_err *err)
{
    char *url = vc_url(p, id, "");
    int r = vc_json(p, "GET", url, NULL, true, out, "get a sandbox", err);

    free(url);
    return r;
}

static const char *vc_status_of(json_t *v)
{
    const char *s = json_string_value(json_object_get(json_object_get(v, "sandbox"), "status"));
    return s ? s : "";
}

/* probe of pe__provider_poll: is the sandbox in state `ud`? */
static int vc_probe(pe_provider *p, const char *id, void *ud, pe_err *err)
{
    const char *want = ud, *st;
    json_t *v = NULL;
    int r = 0;

    if (vc_get(p, id, &v, err) < 0)
        return -1;
    st = vc_status_of(v);
    if (strcmp(st, want) == 0)
        r = 1;
    else if (strcmp(st, "failed") == 0 || strcmp(st, "aborted") == 0 ||
             (strcmp(want, "running") == 0 && strcmp(st, "stopped") == 0))
        r = pe__provider_fail(p, err, PE_EREMOTE, NAME ": sandbox %s is %s", id, st);
    json_decref(v);
    return r;
}

static int vc_wait(pe_provider *p, const char *id, const char *want, pe_err *err)
{
    return pe__provider_poll(p, id, want, vc_probe, (void *)want, err);
}

/* v1's stop is its delete: the sandbox ends and cannot run again. */
static int vc_stop(pe_provider *p, const char *id, pe_err *err)
{
    char *url = vc_url(p, id, "/stop");
    int r = vc_json(p, "POST", url, NULL, true, NULL, "stop a sandbox", err);

    free(url);
    return r < 0 ? -1 : vc_wait(p, id, "stopped", err);
}

static json_t *vc_env(char *const *env)
{
    return pe__env_object(env);
}

static int vc_create(pe_provider *p, const pe_provider_spec *spec, char **id, pe_err *err)
{
    json_t *ports = json_array(), *body, *v = NULL;
    char *url;
    const char *sid;
    int r;

    if (spec->n_ports > MAX_PORTS)
        return pe_err_set(err, PE_EINVAL, 0, NAME " routes at most %d ports, not %zu", MAX_PORTS,
                          spec->n_ports);
    for (size_t i = 0; i < spec->n_ports; i++)
        json_array_append_new(ports, json_integer(spec->ports[i]));
    body = json_pack("{s:s, s:o, s:o}", "projectId", p->cfg.creds.project, "ports", ports, "env",
                     vc_env(spec->env));
    if (spec->snapshot) /* reference 5.6: restore = a create from it */
        json_object_set_new(
            body, "source",
            json_pack("{s:s, s:s}", "type", "snapshot", "snapshotId", spec->snapshot));
    if (spec->cpu_millis)
        json_object_set_new(
            body, "resources",
            json_pack("{s:I}", "vcpus", (json_int_t)(spec->cpu_millis + 999) / 1000));
    url = vc_url(p, NULL, "");
    r = vc_json(p, "POST", url, body, false, &v, "create a sandbox", err);
    free(url);
    json_decref(body);
    if (r < 0)
        return -1;
    sid = json_string_value(json_object_get(json_object_get(v, "sandbox"), "id"));
    if (sid == NULL || sid[0] == '\0' || strlen(sid) > 128) {
        json_decref(v);
        return pe__provider_fail(p, err, PE_EREMOTE, NAME " answered create without an id");
    }
    *id = pe_xstrdup(sid);
    json_decref(v);
    /* remove is v1's stop: a half-made sandbox is not left running */
    return pe__provider_create_settle(p, spec, id, "running", vc_probe, (void *)"running", err);
}

static int vc_remove(pe_provider *p, const char *id, pe_err *err)
{
    return vc_stop(p, id, err);
}

static int vc_status(pe_provider *p, const char *id, pe_provider_status *st, pe_err *err)
{
    static const struct {
        const char *raw;
        int state;
    } map[] = {{"pending", PE_PSTATE_CREATING}, {"running", PE_PSTATE_RUNNING},
               {"stopping", PE_PSTATE_STOPPED}, {"stopped", PE_PSTATE_STOPPED},
               {"failed", PE_PSTATE_ERROR},     {"aborted", PE_PSTATE_ERROR}};
    json_t *v = NULL;

    if (vc_get(p, id, &v, err) < 0)
        return -1;
    snprintf(st->raw, sizeof(st->raw), "%s", vc_status_of(v));
    for (size_t i = 0; i < PE_ARRAY_LEN(map); i++)
        if (strcmp(st->raw, map[i].raw) == 0)
            st->state = map[i].state;
    json_decref(v);
    return 0;
}

/* ---- exec: a detached command, its NDJSON log, then its exit code ---- */

typedef struct vc_exec {
    char *id, *cmd_id;
    char *line;
    size_t len, cap;
} vc_exec;

static void vc_exec_free(void *ud)
{
    vc_exec *x = ud;

    free(x->id);
    free(x->cmd_id);
    free(x->line);
    free(x);
}

static void vc_log_line(struct pe_provider_stream *s, const char *line, size_t len)
{
    json_t *v = json_loadb(line, len, 0, NULL);
    const char *stream = json_string_value(json_object_get(v, "stream"));
    json_t *data = json_object_get(v, "data");

    if (stream && json_is_string(data) &&
        (strcmp(stream, "stdout") == 0 || strcmp(stream, "stderr") == 0))
        pe__stream_output(s, stream[3] == 'o' ? 1 : 2, json_string_value(data),
                          json_string_length(data));
    else if (stream && strcmp(stream, "error") == 0)
        snprintf(s->error, sizeof(s->error), NAME ": exec: %.300s",
                 json_string_value(json_object_get(data, "message")) ?: "the log stream failed");
    else if (len > 0)
        snprintf(s->error, sizeof(s->error), NAME ": exec: a log line that is not its API");
    json_decref(v);
}

static bool vc_log_data(const char *data, size_t len, void *ud)
{
    struct pe_provider_stream *s = ud;
    vc_exec *x = s->ud;

    for (size_t i = 0; i < len; i++) {
        if (data[i] == '\n') {
            vc_log_line(s, x->line ? x->line : "", x->len);
            x->len = 0;
            continue;
        }
        if (x->len + 1 > x->cap) {
            if (x->cap >= NDJSON_LINE_MAX) {
                snprintf(s->error, sizeof(s->error), NAME ": exec: a log line too long");
                return false;
            }
            x->cap = x->cap ? x->cap * 2 : 256;
            x->line = pe_xrealloc(x->line, x->cap);
        }
        x->line[x->len++] = data[i];
    }
    return true;
}

static int vc_run_exec(struct pe_provider_stream *s)
{
    vc_exec *x = s->ud;
    char *path = pe_xasprintf("/cmd/%s/logs", x->cmd_id), *url = vc_url(s->p, x->id, path);
    pe__preq rq = {
        .url = url, .on_data = vc_log_data, .ud = s, .cancel = &s->cancel, .stream = true};
    pe__presp rs;
    json_t *v = NULL, *code;
    pe_err err;
    int r = pe__provider_http(s->p, &rq, &rs, "follow an exec's output", &err);

    pe__presp_free(&rs);
    free(url);
    free(path);
    if (r < 0) {
        snprintf(s->error, sizeof(s->error), "%s", err.msg);
        return -1;
    }
    if (s->error[0])
        return -1;
    /* the log ended: the command's end, waited for */
    path = pe_xasprintf("/cmd/%s", x->cmd_id);
    url = vc_url(s->p, x->id, path);
    free(path);
    path = pe_xasprintf("%s%swait=true", url, strchr(url, '?') ? "&" : "?");
    r = vc_json(s->p, "GET", path, NULL, true, &v, "wait for a command", &err);
    free(url);
    free(path);
    code = json_object_get(json_object_get(v, "command"), "exitCode");
    if (r < 0)
        snprintf(s->error, sizeof(s->error), "%s", err.msg);
    else if (json_is_integer(code))
        pe__stream_exit(s, (int)json_integer_value(code));
    json_decref(v);
    return r;
}

static void vc_kill(struct pe_provider_stream *s)
{
    vc_exec *x = s->ud;
    char *path = pe_xasprintf("/%s/kill", x->cmd_id), *url = vc_url(s->p, x->id, path);
    json_t *body = json_pack("{s:i}", "signal", 15);
    pe_err err;

    vc_json(s->p, "POST", url, body, true, NULL, "kill a command", &err);
    json_decref(body);
    free(url);
    free(path);
}

static const pe__stream_ops vc_exec_ops = {
    .run_http = vc_run_exec, .on_kill = vc_kill, .free_ud = vc_exec_free};

static int vc_exec_start(pe_provider *p, const char *id, const pe_provider_exec_opts *o,
                         pe_provider_proc *proc, pe_err *err)
{
    json_t *args = json_array(), *body, *v = NULL;
    const char *cid;
    char *url;
    vc_exec *x;
    int r;

    for (char *const *a = o->argv + 1; *a; a++)
        json_array_append_new(args, json_string(*a));
    body = json_pack("{s:s, s:o, s:o, s:b}", "command", o->argv[0], "args", args, "env",
                     vc_env(o->env), "sudo", 0);
    if (o->workdir)
        json_object_set_new(body, "cwd", json_string(o->workdir));
    url = vc_url(p, id, "/cmd");
    r = vc_json(p, "POST", url, body, false, &v, "exec", err);
    free(url);
    json_decref(body);
    if (r < 0)
        return -1;
    cid = json_string_value(json_object_get(json_object_get(v, "command"), "id"));
    if (cid == NULL) {
        json_decref(v);
        return pe__provider_fail(p, err, PE_EREMOTE, NAME " answered exec without a command id");
    }
    x = pe_xcalloc(1, sizeof(*x));
    x->id = pe_xstrdup(id);
    x->cmd_id = pe_xstrdup(cid);
    json_decref(v);
    return pe__stream_start(p, &vc_exec_ops, x, NULL, false, false, proc, err);
}

/* ---- files ---- */

static int vc_file_read(pe_provider *p, const char *id, const char *path, size_t max, char **data,
                        size_t *len, pe_err *err)
{
    char *url = vc_url(p, id, "/fs/read");
    json_t *body = json_pack("{s:s}", "path", path);
    char *text = json_dumps(body, JSON_COMPACT);
    pe__preq rq = {.method = "POST",
                   .url = url,
                   .content_type = "application/json",
                   .body = text,
                   .body_len = strlen(text),
                   .idempotent = true,
                   .max = max};
    pe__presp rs;
    int r = pe__provider_http(p, &rq, &rs, "read a file", err);

    free(url);
    free(text);
    json_decref(body);
    if (r < 0) {
        pe__presp_free(&rs);
        return pe_err_prefix(err, "%s", path);
    }
    *data = rs.body;
    *len = rs.len;
    return 0;
}

typedef struct membuf {
    char *buf;
    size_t len;
} membuf;

static la_ssize_t mem_write(struct archive *a, void *ud, const void *data, size_t len)
{
    membuf *m = ud;

    m->buf = pe_xrealloc(m->buf, m->len + len);
    memcpy(m->buf + m->len, data, len);
    m->len += len;
    return (la_ssize_t)len;
}

/* One file as a gzip'd tar whose entry is path relative to / (x-cwd). */
static int vc_targz(const char *path, const void *data, size_t len, unsigned mode, membuf *out)
{
    struct archive *a = archive_write_new();
    struct archive_entry *e = archive_entry_new();
    int r = -1;

    while (*path == '/')
        path++;
    archive_write_set_format_pax_restricted(a);
    archive_write_add_filter_gzip(a);
    if (archive_write_open(a, out, NULL, mem_write, NULL) != ARCHIVE_OK)
        goto out;
    archive_entry_set_pathname(e, path);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, mode ? mode & 07777 : 0644);
    archive_entry_set_size(e, (la_int64_t)len);
    if (archive_write_header(a, e) != ARCHIVE_OK ||
        (len && archive_write_data(a, data, len) != (la_ssize_t)len) ||
        archive_write_close(a) != ARCHIVE_OK)
        goto out;
    r = 0;
out:
    archive_entry_free(e);
    archive_write_free(a);
    return r;
}

static int vc_file_write(pe_provider *p, const char *id, const char *path, const void *data,
                         size_t len, unsigned mode, pe_err *err)
{
    static const char *const hdrs[] = {"x-cwd: /", NULL};
    membuf tgz = {0};
    char *url;
    pe__preq rq;
    pe__presp rs;
    int r;

    if (path[0] != '/')
        return pe_err_set(err, PE_EINVAL, 0, NAME ": write %s: the path must be absolute", path);
    if (vc_targz(path, data, len, mode, &tgz) < 0) {
        free(tgz.buf);
        return pe_err_set(err, PE_ESYS, 0, NAME ": write %s: could not pack it", path);
    }
    url = vc_url(p, id, "/fs/write");
    rq = (pe__preq){.method = "POST",
                    .url = url,
                    .content_type = "application/gzip",
                    .body = tgz.buf,
                    .body_len = tgz.len,
                    .headers = hdrs,
                    .idempotent = true};
    r = pe__provider_http(p, &rq, &rs, "write a file", err);
    pe__presp_free(&rs);
    free(url);
    free(tgz.buf);
    return r < 0 ? pe_err_prefix(err, "%s", path) : 0;
}

static int vc_preview(pe_provider *p, const char *id, uint16_t port, pe_provider_preview_link *out,
                      pe_err *err)
{
    json_t *v = NULL, *route;
    size_t i;
    int r = -1;

    if (vc_get(p, id, &v, err) < 0)
        return -1;
    json_array_foreach(json_object_get(v, "routes"), i, route)
    {
        const char *u = json_string_value(json_object_get(route, "url"));
        if (json_integer_value(json_object_get(route, "port")) == port && u) {
            snprintf(out->url, sizeof(out->url), "%s", u);
            r = 0;
        }
    }
    json_decref(v);
    if (r < 0)
        return pe_err_set(err, PE_EINVAL, 0,
                          NAME ": port %u has no route (ports are declared at create)", port);
    return 0;
}

/* ---- snapshots (reference 5.6, the SDK's sandbox.snapshot()) ----
 *
 * POST /v1/sandboxes/{id}/snapshot answers {snapshot, sandbox}; the
 * snapshot is usable once "created", and Vercel stops the sandbox to take
 * it (the SDK says so): we wait for "stopped", which the sandbox layer
 * then records. v1 cannot start it again: a Vercel snapshot (and a fork)
 * ends its source. */

static char *vc_snap_url(pe_provider *p, const char *snap_id)
{
    char *esc = pe__url_escape(snap_id), *suffix = pe_xasprintf("/%s", esc);
    char *url = vc_url(p, "snapshots", suffix);

    free(esc);
    free(suffix);
    return url;
}

/* probe: is snapshot id "created"? */
static int vc_snap_probe(pe_provider *p, const char *id, void *ud, pe_err *err)
{
    char *url = vc_snap_url(p, id);
    json_t *v = NULL;
    const char *st;
    int r;

    (void)ud;
    r = vc_json(p, "GET", url, NULL, true, &v, "get a snapshot", err);
    free(url);
    if (r < 0)
        return -1;
    st = json_string_value(json_object_get(json_object_get(v, "snapshot"), "status"));
    r = st && strcmp(st, "created") == 0;
    if (st && strcmp(st, "failed") == 0)
        r = pe__provider_fail(p, err, PE_EREMOTE, NAME ": snapshot %s failed", id);
    json_decref(v);
    return r;
}

static int vc_snapshot_create(pe_provider *p, const char *id, const char *name, char **snap_id,
                              pe_err *err)
{
    char *url = vc_url(p, id, "/snapshot");
    json_t *body = json_object(), *v = NULL;
    const char *sid;
    int r;

    (void)name; /* Vercel does not name snapshots */
    /* not idempotent: a second POST makes a second snapshot */
    r = vc_json(p, "POST", url, body, false, &v, "snapshot a sandbox", err);
    json_decref(body);
    free(url);
    if (r < 0)
        return -1;
    sid = json_string_value(json_object_get(json_object_get(v, "snapshot"), "id"));
    if (sid == NULL || sid[0] == '\0' || strlen(sid) > 128) {
        json_decref(v);
        return pe__provider_fail(p, err, PE_EREMOTE, NAME " answered a snapshot without an id");
    }
    *snap_id = pe_xstrdup(sid);
    json_decref(v);
    if (pe__provider_poll(p, *snap_id, "created", vc_snap_probe, NULL, err) < 0 ||
        vc_wait(p, id, "stopped", err) < 0) {
        free(*snap_id);
        *snap_id = NULL;
        return -1;
    }
    return 0;
}

static int vc_snapshot_delete(pe_provider *p, const char *snap_id, pe_err *err)
{
    char *url = vc_snap_url(p, snap_id);
    int r = vc_json(p, "DELETE", url, NULL, true, NULL, "delete a snapshot", err);

    free(url);
    return r;
}

const pe_provider_ops pe__provider_vercel = {
    .name = NAME,
    .takes = PE_TAKES_CPU,
    .caps = PE_CAP_FILE_REMOVE | PE_CAP_PREVIEW | PE_CAP_SNAPSHOT | PE_CAP_SNAPSHOT_BASE,
    .open = vc_open,
    .create = vc_create,
    .stop = vc_stop,
    .remove = vc_remove,
    .status = vc_status,
    .exec_start = vc_exec_start,
    .file_read = vc_file_read,
    .file_write = vc_file_write,
    .file_remove = pe__provider_remove_by_exec,
    .preview = vc_preview,
    .snapshot_create = vc_snapshot_create,
    .snapshot_delete = vc_snapshot_delete,
};
