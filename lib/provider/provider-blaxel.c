/* Blaxel (reference §12): a control plane under base_url (public default
 * https://api.blaxel.ai/v0) and, per sandbox, its API at the sandbox's
 * metadata.url (read each time: nothing cached between calls). Both take
 * `X-Blaxel-Authorization: Bearer KEY` and `X-Blaxel-Workspace` (the
 * account's workspace: creds.org, required).
 *
 * A sandbox has no stop or start: an idle one drops to standby and the
 * next request wakes it (the disk stays), so stop and start only check it
 * exists. Exec is a process (a shell line: Blaxel runs it with `sh -c`)
 * whose output is the prefixed-line log stream (`stdout:`/`stderr:` lines), then the process's exit
 * code; a kill is Blaxel's, on the stream's side thread. Files are /filesystem/{path} with the path
 * encoded (so absolute), bytes written as multipart. No PTY (its terminal WebSocket is not used
 * yet), no stdin. A port's preview is a Blaxel preview object of its own
 * (`port-N`, public: how a token is sent to a private one is not in the
 * sources), made on first use and read back after: docs/providers.md.
 * Snapshots are workspace objects: taken, deleted, forked into a new
 * sandbox, and restored onto their own sandbox in place. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sodium.h>

#include "core/util.h"
#include "provider-internal.h"

#define NAME "blaxel"
#define DEFAULT_URL "https://api.blaxel.ai/v0"
#define DEFAULT_IMAGE "blaxel/base-image:latest"
#define DEFAULT_MEMORY_MB 4096
#define LOG_LINE_MAX (1u << 20)

static int bl_open(pe_provider *p, pe_err *err)
{
    const char *ws = p->cfg.creds.org;

    if (ws == NULL || ws[0] == '\0' || strpbrk(ws, "\r\n"))
        return pe_err_set(err, PE_EINVAL, 0, NAME ": no workspace given (the account's org)");
    if (p->cfg.creds.base_url == NULL)
        p->cfg.creds.base_url = pe_xstrdup(DEFAULT_URL);
    return 0;
}

/* The two headers of every call (the first is a secret: bl_hdrs_free). */
typedef struct bl_hdrs {
    char *h[4];
} bl_hdrs;

static void bl_hdrs_init(pe_provider *p, bl_hdrs *h, const char *extra)
{
    memset(h, 0, sizeof(*h));
    h->h[0] = pe_xasprintf("X-Blaxel-Authorization: Bearer %s", p->cfg.creds.key);
    h->h[1] = pe_xasprintf("X-Blaxel-Workspace: %s", p->cfg.creds.org);
    h->h[2] = extra ? pe_xstrdup(extra) : NULL;
}

static void bl_hdrs_free(bl_hdrs *h)
{
    pe__secret_free(h->h[0]);
    free(h->h[1]);
    free(h->h[2]);
    memset(h, 0, sizeof(*h));
}

/* Any request with the account's headers: rq's headers are set here. */
static int bl_http(pe_provider *p, pe__preq *rq, const char *accept, pe__presp *rs,
                   const char *what, pe_err *err)
{
    bl_hdrs h;
    int r;

    bl_hdrs_init(p, &h, accept);
    rq->headers = (const char *const *)h.h;
    rq->no_key = true;
    r = pe__provider_http(p, rq, rs, what, err);
    bl_hdrs_free(&h);
    return r;
}

static int bl_json(pe_provider *p, const char *method, const char *url, json_t *body,
                   bool idempotent, int type, json_t **out, const char *what, pe_err *err)
{
    bl_hdrs h;
    pe__preq rq = {.method = method, .url = url, .idempotent = idempotent, .no_key = true};
    int r;

    bl_hdrs_init(p, &h, "Accept: application/json");
    rq.headers = (const char *const *)h.h;
    r = pe__provider_json_req(p, &rq, body, type, out, what, err);
    bl_hdrs_free(&h);
    return r;
}

static int bl_get(pe_provider *p, const char *name, json_t **sb, pe_err *err)
{
    char *en = pe__url_escape(name), *url = pe__provider_url(p, "/sandboxes/%s", en);
    int r = bl_json(p, "GET", url, NULL, true, JSON_OBJECT, sb, "get a sandbox", err);

    free(en);
    free(url);
    return r;
}

static const char *bl_status_of(json_t *sb)
{
    const char *s = json_string_value(json_object_get(sb, "status"));
    return s ? s : "";
}

static int bl_remove(pe_provider *p, const char *name, pe_err *err)
{
    char *en = pe__url_escape(name), *url = pe__provider_url(p, "/sandboxes/%s", en);
    int r = bl_json(p, "DELETE", url, NULL, true, JSON_OBJECT, NULL, "delete a sandbox", err);

    free(en);
    free(url);
    return r;
}

static int bl_probe(pe_provider *p, const char *name, void *ud, pe_err *err)
{
    json_t *sb = NULL;
    const char *st;
    int r = 0;

    if (bl_get(p, name, &sb, err) < 0)
        return -1;
    st = bl_status_of(sb);
    if (strcmp(st, "DEPLOYED") == 0)
        r = 1;
    else if (strcmp(st, "FAILED") == 0 || strcmp(st, "TERMINATED") == 0 ||
             strcmp(st, "DELETING") == 0)
        r = pe__provider_fail(p, err, PE_EREMOTE, NAME ": sandbox %s is %s", name, st);
    json_decref(sb);
    return r;
}

/* Sandbox names are the id: ours, made unique (a retry after a lost
 * answer must not meet the sandbox the first attempt made). */
static char *bl_name(const pe_provider_spec *spec)
{
    unsigned char b[4];
    char hex[9], *name;

    randombytes_buf(b, sizeof(b));
    sodium_bin2hex(hex, sizeof(hex), b, sizeof(b));
    name = pe_xasprintf("pe-%.40s-%s", spec->name ? spec->name : "sandbox", hex);
    for (char *c = name; *c; c++) {
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-'))
            *c = '-';
    }
    return name;
}

/* The environment as Blaxel's [{name, value}]. */
static json_t *bl_envs(char *const *env)
{
    json_t *envs = json_array();

    for (char *const *e = env; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (eq)
            json_array_append_new(
                envs, json_pack("{s:s%, s:s}", "name", *e, (size_t)(eq - *e), "value", eq + 1));
    }
    return envs;
}

static int bl_create_from(pe_provider *p, const pe_provider_spec *spec, char **id, pe_err *err);

static int bl_create(pe_provider *p, const pe_provider_spec *spec, char **id, pe_err *err)
{
    json_t *envs, *ports, *runtime, *body, *v = NULL;
    char *url;
    int r;

    if (spec->snapshot)
        return bl_create_from(p, spec, id, err);
    envs = bl_envs(spec->env);
    ports = json_array();
    url = pe__provider_url(p, "/sandboxes");
    for (size_t i = 0; i < spec->n_ports; i++)
        json_array_append_new(
            ports, json_pack("{s:i, s:s}", "target", spec->ports[i], "protocol", "HTTP"));
    runtime = json_pack("{s:s, s:I, s:o, s:o}", "image", spec->image ? spec->image : DEFAULT_IMAGE,
                        "memory",
                        (json_int_t)(spec->memory_bytes ? (spec->memory_bytes + (1 << 20) - 1) >> 20
                                                        : DEFAULT_MEMORY_MB),
                        "envs", envs, "ports", ports);
    *id = bl_name(spec);
    body = json_pack("{s:{s:s, s:{s:s}}, s:{s:o}}", "metadata", "name", *id, "labels", "pocketenv",
                     spec->name ? spec->name : "", "spec", "runtime", runtime);
    /* not idempotent: the name is new, and a second POST would fail on it */
    r = bl_json(p, "POST", url, body, false, JSON_OBJECT, &v, "create a sandbox", err);
    json_decref(body);
    json_decref(v); /* parsed: an answer that is not the API fails here */
    free(url);
    if (r < 0) {
        free(*id);
        *id = NULL;
        return -1;
    }
    return pe__provider_create_settle(p, spec, id, "DEPLOYED", bl_probe, NULL, err);
}

/* No stop or start on Blaxel: an idle sandbox goes to standby by itself,
 * any request wakes it. Both check the sandbox is there. */
static int bl_start(pe_provider *p, const char *name, pe_err *err)
{
    json_t *sb = NULL;
    int r = bl_get(p, name, &sb, err);

    json_decref(sb);
    return r;
}

static int bl_status(pe_provider *p, const char *name, pe_provider_status *st, pe_err *err)
{
    json_t *sb = NULL;
    const char *s;

    if (bl_get(p, name, &sb, err) < 0)
        return -1;
    s = bl_status_of(sb);
    snprintf(st->raw, sizeof(st->raw), "%s", s);
    /* standby wakes on the next request: usable, so running */
    if (strcmp(s, "DEPLOYED") == 0)
        st->state = PE_PSTATE_RUNNING;
    else if (strcmp(s, "DEPLOYING") == 0 || strcmp(s, "BUILDING") == 0 ||
             strcmp(s, "UPLOADING") == 0)
        st->state = PE_PSTATE_CREATING;
    else if (strcmp(s, "FAILED") == 0)
        st->state = PE_PSTATE_ERROR;
    json_decref(sb);
    return 0;
}

/* The sandbox API's base: metadata.url, no trailing slash. */
static char *bl_sbx(pe_provider *p, const char *name, pe_err *err)
{
    json_t *sb = NULL;
    const char *u;
    char *url;
    size_t n;

    if (bl_get(p, name, &sb, err) < 0)
        return NULL;
    u = json_string_value(json_object_get(json_object_get(sb, "metadata"), "url"));
    if (u == NULL || (strncmp(u, "https://", 8) != 0 && strncmp(u, "http://", 7) != 0)) {
        json_decref(sb);
        pe__provider_fail(p, err, PE_EREMOTE, NAME " reported no URL for sandbox %s", name);
        return NULL;
    }
    n = strlen(u);
    while (n > 0 && u[n - 1] == '/')
        n--;
    url = pe_xasprintf("%.*s", (int)n, u);
    json_decref(sb);
    return url;
}

/* ---- exec: a process and its log stream ---- */

typedef struct bl_exec {
    char *sbx, *pid;
    char *line;
    size_t len, cap;
} bl_exec;

static void bl_exec_free(void *ud)
{
    bl_exec *x = ud;

    free(x->sbx);
    free(x->pid);
    free(x->line);
    free(x);
}

static void bl_log_line(struct pe_provider_stream *s, char *line, size_t len)
{
    int fd = 0;

    if (len >= 7 && memcmp(line, "stdout:", 7) == 0)
        fd = 1;
    else if (len >= 7 && memcmp(line, "stderr:", 7) == 0)
        fd = 2;
    if (fd == 0) {
        snprintf(s->error, sizeof(s->error), NAME ": exec: a log line that is not its API");
        return;
    }
    line[len] = '\n'; /* the line's own newline, which the stream took */
    pe__stream_output(s, fd, line + 7, len - 7 + 1);
}

static void bl_log_line_partial(struct pe_provider_stream *s, bl_exec *x)
{
    size_t len = x->len;

    x->len = 0;
    if (len >= 7 && (memcmp(x->line, "stdout:", 7) == 0 || memcmp(x->line, "stderr:", 7) == 0))
        pe__stream_output(s, x->line[3] == 'o' ? 1 : 2, x->line + 7, len - 7);
}

static bool bl_log_data(const char *data, size_t len, void *ud)
{
    struct pe_provider_stream *s = ud;
    bl_exec *x = s->ud;

    for (size_t i = 0; i < len; i++) {
        if (data[i] == '\n') {
            if (x->line == NULL)
                x->line = pe_xmalloc(x->cap = 256);
            bl_log_line(s, x->line, x->len);
            x->len = 0;
            continue;
        }
        if (x->len + 2 > x->cap) {
            if (x->cap >= LOG_LINE_MAX) {
                snprintf(s->error, sizeof(s->error), NAME ": exec: a log line too long");
                return false;
            }
            x->cap = x->cap ? x->cap * 2 : 256;
            x->line = pe_xrealloc(x->line, x->cap);
        }
        x->line[x->len++] = data[i];
    }
    return s->error[0] == '\0';
}

/* The process's exit code once it is not running any more. */
static int bl_exit(struct pe_provider_stream *s, pe_err *err)
{
    bl_exec *x = s->ud;
    char *url = pe_xasprintf("%s/process/%s", x->sbx, x->pid);
    int64_t deadline = pe_monotonic_ms() + s->p->cfg.timeout_ms;
    int r = -1;

    for (int i = 0; !s->cancel; i++) {
        /* still running well after its log ended: the stream was cut short
         * (the edge's own limit), which is no exit */
        if (pe_monotonic_ms() > deadline) {
            pe__provider_fail(s->p, err, PE_EREMOTE,
                              NAME ": exec: the log stream ended before the process did");
            break;
        }
        json_t *v = NULL;
        const char *st;
        if (bl_json(s->p, "GET", url, NULL, true, JSON_OBJECT, &v, "get a process", err) < 0)
            break;
        st = json_string_value(json_object_get(v, "status"));
        if (st && strcmp(st, "running") != 0) {
            if (json_is_integer(json_object_get(v, "exitCode")))
                pe__stream_exit(s, (int)json_integer_value(json_object_get(v, "exitCode")));
            else
                pe__provider_fail(s->p, err, PE_EREMOTE,
                                  NAME ": process %s is %s without an exit code", x->pid, st);
            r = s->exited ? 0 : -1;
            json_decref(v);
            break;
        }
        json_decref(v);
        /* the log ended a moment before the process's record did */
        usleep(i < 10 ? 20000 : 200000);
    }
    free(url);
    return r;
}

static int bl_run(struct pe_provider_stream *s)
{
    bl_exec *x = s->ud;
    char *url = pe_xasprintf("%s/process/%s/logs/stream", x->sbx, x->pid);
    pe__preq rq = {
        .url = url, .on_data = bl_log_data, .ud = s, .cancel = &s->cancel, .stream = true};
    pe__presp rs;
    pe_err err;
    int r = bl_http(s->p, &rq, NULL, &rs, "follow an exec's output", &err);

    pe__presp_free(&rs);
    free(url);
    if (r < 0 && !s->error[0])
        snprintf(s->error, sizeof(s->error), "%s", err.msg);
    if (s->error[0])
        return -1;
    if (x->len) /* a last line without its newline: what there is */
        bl_log_line_partial(s, x);
    if (bl_exit(s, &err) < 0 && !s->cancel && !s->exited)
        snprintf(s->error, sizeof(s->error), "%s", err.msg);
    return 0;
}

static void bl_kill(struct pe_provider_stream *s)
{
    bl_exec *x = s->ud;
    char *url = pe_xasprintf("%s/process/%s/kill", x->sbx, x->pid);
    pe_err err;

    bl_json(s->p, "DELETE", url, NULL, true, JSON_OBJECT, NULL, "kill a process", &err);
    free(url);
}

static const pe__stream_ops bl_exec_ops = {
    .run_http = bl_run, .on_kill = bl_kill, .free_ud = bl_exec_free, .http_side = true};

static int bl_exec_start(pe_provider *p, const char *id, const pe_provider_exec_opts *o,
                         pe_provider_proc *proc, pe_err *err)
{
    char *sbx = bl_sbx(p, id, err), *cmd, *url;
    json_t *body, *v = NULL;
    const char *pid;
    bl_exec *x;
    int r;

    if (sbx == NULL)
        return -1;
    cmd = pe__shell_line(o);
    body = json_pack("{s:s, s:b}", "command", cmd, "waitForCompletion", 0);
    free(cmd);
    url = pe_xasprintf("%s/process", sbx);
    r = bl_json(p, "POST", url, body, false, JSON_OBJECT, &v, "exec", err);
    json_decref(body);
    free(url);
    pid = json_string_value(json_object_get(v, "pid"));
    if (r == 0 && (pid == NULL || strlen(pid) > 128 || strchr(pid, '/')))
        r = pe__provider_fail(p, err, PE_EREMOTE, NAME " answered exec without a pid");
    if (r < 0) {
        json_decref(v);
        free(sbx);
        return -1;
    }
    x = pe_xcalloc(1, sizeof(*x));
    x->sbx = sbx;
    x->pid = pe__url_escape(pid);
    json_decref(v);
    return pe__stream_start(p, &bl_exec_ops, x, NULL, false, false, proc, err);
}

/* ---- files ---- */

static char *bl_fs_url(pe_provider *p, const char *id, const char *path, const char *query,
                       pe_err *err)
{
    char *sbx = bl_sbx(p, id, err), *ep, *url;

    if (sbx == NULL)
        return NULL;
    /* encoded, so an absolute path stays absolute (a bare one is relative) */
    ep = pe__url_escape(path);
    url = pe_xasprintf("%s/filesystem/%s%s", sbx, ep, query ? query : "");
    free(ep);
    free(sbx);
    return url;
}

static int bl_file_read(pe_provider *p, const char *id, const char *path, size_t max, char **data,
                        size_t *len, pe_err *err)
{
    char *url = bl_fs_url(p, id, path, NULL, err);
    pe__preq rq;
    pe__presp rs;

    if (url == NULL)
        return -1;
    rq = (pe__preq){.url = url, .idempotent = true, .max = max};
    if (bl_http(p, &rq, "Accept: application/octet-stream", &rs, "read a file", err) < 0) {
        free(url);
        pe__presp_free(&rs);
        return pe_err_prefix(err, "%s", path);
    }
    free(url);
    *data = rs.body;
    *len = rs.len;
    return 0;
}

static int bl_file_write(pe_provider *p, const char *id, const char *path, const void *data,
                         size_t len, unsigned mode, pe_err *err)
{
    char *url = bl_fs_url(p, id, path, NULL, err), perm[8];
    CURL *c;
    curl_mime *mime;
    curl_mimepart *part;
    pe__preq rq;
    pe__presp rs;
    int r;

    if (url == NULL)
        return -1;
    snprintf(perm, sizeof(perm), "%04o", mode ? mode & 07777 : 0644);
    c = curl_easy_init();
    mime = curl_mime_init(c);
    part = curl_mime_addpart(mime);
    curl_mime_name(part, "file");
    curl_mime_filename(part, "file");
    curl_mime_type(part, "application/octet-stream");
    curl_mime_data(part, data ? data : "", len);
    part = curl_mime_addpart(mime);
    curl_mime_name(part, "permissions");
    curl_mime_data(part, perm, CURL_ZERO_TERMINATED);
    part = curl_mime_addpart(mime);
    curl_mime_name(part, "path");
    curl_mime_data(part, path, CURL_ZERO_TERMINATED);
    /* the same bytes to the same path: idempotent */
    rq = (pe__preq){.method = "PUT", .url = url, .mime = mime, .idempotent = true};
    r = bl_http(p, &rq, NULL, &rs, "write a file", err);
    pe__presp_free(&rs);
    curl_mime_free(mime);
    curl_easy_cleanup(c);
    free(url);
    return r < 0 ? pe_err_prefix(err, "%s", path) : 0;
}

static void bl_dirents(json_t *arr, bool dirs, pe_provider_dirent *ents, size_t *n)
{
    size_t i;
    json_t *e;

    json_array_foreach(arr, i, e)
    {
        const char *name = json_string_value(json_object_get(e, "name"));
        if (name == NULL)
            continue;
        snprintf(ents[*n].name, sizeof(ents[*n].name), "%s", name);
        ents[*n].is_dir = dirs;
        ents[*n].size = (uint64_t)json_integer_value(json_object_get(e, "size"));
        (*n)++;
    }
}

static int bl_file_list(pe_provider *p, const char *id, const char *path, pe_provider_dirent **ents,
                        size_t *n, pe_err *err)
{
    char *url = bl_fs_url(p, id, path, NULL, err);
    json_t *v = NULL, *files, *subdirs;

    if (url == NULL)
        return -1;
    if (bl_json(p, "GET", url, NULL, true, JSON_OBJECT, &v, "list files", err) < 0) {
        free(url);
        return pe_err_prefix(err, "%s", path);
    }
    free(url);
    files = json_object_get(v, "files");
    subdirs = json_object_get(v, "subdirectories");
    if (!json_is_array(files) && !json_is_array(subdirs)) {
        json_decref(v);
        return pe_err_set(err, PE_EINVAL, 0, NAME ": %s: not a directory", path);
    }
    *ents = pe_xcalloc(json_array_size(files) + json_array_size(subdirs) + 1, sizeof(**ents));
    bl_dirents(subdirs, true, *ents, n);
    bl_dirents(files, false, *ents, n);
    json_decref(v);
    return 0;
}

static int bl_file_remove(pe_provider *p, const char *id, const char *path, bool recursive,
                          pe_err *err)
{
    char *url = bl_fs_url(p, id, path, recursive ? "?recursive=true" : "?recursive=false", err);
    int r;

    if (url == NULL)
        return -1;
    r = bl_json(p, "DELETE", url, NULL, true, JSON_OBJECT, NULL, "remove a file", err);
    free(url);
    return r < 0 ? pe_err_prefix(err, "%s", path) : 0;
}

/* The preview object port-N of sandbox name: read it, else make it (a
 * create that lost a race to another reads it again). */
static int bl_preview_object(pe_provider *p, const char *name, uint16_t port, json_t **out,
                             pe_err *err)
{
    char *en = pe__url_escape(name);
    char *get = pe__provider_url(p, "/sandboxes/%s/previews/port-%u", en, port);
    char *post = pe__provider_url(p, "/sandboxes/%s/previews", en);
    json_t *body = NULL;
    int r = bl_json(p, "GET", get, NULL, true, JSON_OBJECT, out, "get a preview", err);

    if (r < 0 && err->code == PE_ENOENT) {
        char label[16];
        snprintf(label, sizeof(label), "port-%u", port);
        body = json_pack("{s:{s:s}, s:{s:i, s:b}}", "metadata", "name", label, "spec", "port",
                         (int)port, "public", 1);
        pe_err_clear(err);
        r = bl_json(p, "POST", post, body, false, JSON_OBJECT, out, "create a preview", err);
        if (r < 0 && err->code == PE_EINVAL) { /* made meanwhile: 409 */
            pe_err_clear(err);
            r = bl_json(p, "GET", get, NULL, true, JSON_OBJECT, out, "get a preview", err);
        }
    }
    json_decref(body);
    free(en);
    free(get);
    free(post);
    return r;
}

static int bl_preview(pe_provider *p, const char *id, uint16_t port, pe_provider_preview_link *out,
                      pe_err *err)
{
    json_t *v = NULL;
    const char *u;

    if (bl_preview_object(p, id, port, &v, err) < 0)
        return -1;
    u = json_string_value(json_object_get(json_object_get(v, "spec"), "url"));
    if (u == NULL || strlen(u) >= sizeof(out->url) ||
        (strncmp(u, "https://", 8) != 0 && strncmp(u, "http://", 7) != 0)) {
        json_decref(v);
        return pe__provider_fail(p, err, PE_EREMOTE, NAME " answered a preview without a url");
    }
    snprintf(out->url, sizeof(out->url), "%s", u);
    json_decref(v);
    return 0;
}

/* ---- snapshots (the SDK's sandbox.snapshots, Snapshot.fork; docs
 * "Snapshots and forking") ----
 *
 * A snapshot is a workspace object that outlives its sandbox: taken with
 * POST /sandboxes/{name}/snapshots (the nested call names it itself),
 * usable once GET /snapshots/{id} says "ready"; its id is what the
 * workspace calls take (the SDK's Snapshot.get/delete/fork pass the id).
 * A sandbox from one is POST /snapshots/{id}/fork {targetName,
 * targetType: "sandbox", envs}: it runs the snapshot's image, memory and
 * ports, with envs on top. A restore (POST /sandboxes/{name}/snapshots/
 * {id}/restore) rebuilds the same sandbox from one of its snapshots; it
 * answers before the sandbox is back, so we wait for DEPLOYED. */

static int bl_snap_probe(pe_provider *p, const char *snap, void *ud, pe_err *err)
{
    char *es = pe__url_escape(snap), *url = pe__provider_url(p, "/snapshots/%s", es);
    json_t *v = NULL;
    const char *st;
    int r;

    (void)ud;
    r = bl_json(p, "GET", url, NULL, true, JSON_OBJECT, &v, "get a snapshot", err);
    free(es);
    free(url);
    if (r < 0)
        return -1;
    st = json_string_value(json_object_get(v, "status"));
    r = st && strcmp(st, "ready") == 0 ? 1 : 0;
    if (st && strcmp(st, "failed") == 0)
        r = pe__provider_fail(p, err, PE_EREMOTE, NAME ": snapshot %s failed", snap);
    json_decref(v);
    return r;
}

static int bl_snapshot_create(pe_provider *p, const char *id, const char *name, char **snap_id,
                              pe_err *err)
{
    char *en = pe__url_escape(id), *url = pe__provider_url(p, "/sandboxes/%s/snapshots", en);
    json_t *body = json_object(), *v = NULL;
    const char *sid;
    int r;

    (void)name; /* the nested call names the snapshot itself; we keep its id */
    /* not idempotent: a second POST makes a second snapshot */
    r = bl_json(p, "POST", url, body, false, JSON_OBJECT, &v, "snapshot a sandbox", err);
    json_decref(body);
    free(en);
    free(url);
    if (r < 0)
        return -1;
    sid = json_string_value(json_object_get(v, "id"));
    if (sid == NULL || sid[0] == '\0' || strlen(sid) > 128 || strchr(sid, '/')) {
        json_decref(v);
        return pe__provider_fail(p, err, PE_EREMOTE, NAME " answered a snapshot without an id");
    }
    *snap_id = pe_xstrdup(sid);
    json_decref(v);
    if (pe__provider_poll(p, *snap_id, "ready", bl_snap_probe, NULL, err) < 0) {
        free(*snap_id);
        *snap_id = NULL;
        return pe_err_prefix(err, "snapshot a sandbox");
    }
    return 0;
}

static int bl_snapshot_delete(pe_provider *p, const char *snap_id, pe_err *err)
{
    char *es = pe__url_escape(snap_id), *url = pe__provider_url(p, "/snapshots/%s", es);
    int r = bl_json(p, "DELETE", url, NULL, true, 0, NULL, "delete a snapshot", err);

    free(es);
    free(url);
    return r;
}

/* A fork runs with the memory its snapshot records (spec.memory, MB):
 * asking another is refused, never dropped; asking the same is what it
 * gets. true (err set) when it differs or cannot be read. */
static bool bl_snap_memory_differs(pe_provider *p, const pe_provider_spec *spec, pe_err *err)
{
    char *es = pe__url_escape(spec->snapshot), *url = pe__provider_url(p, "/snapshots/%s", es);
    json_int_t want = (json_int_t)((spec->memory_bytes + (1 << 20) - 1) >> 20), has;
    json_t *v = NULL;
    int r = bl_json(p, "GET", url, NULL, true, JSON_OBJECT, &v, "get a snapshot", err);

    free(es);
    free(url);
    if (r < 0)
        return true;
    has = json_integer_value(json_object_get(json_object_get(v, "spec"), "memory"));
    json_decref(v);
    if (has == want)
        return false;
    pe_err_set(err, PE_ENOTCAP, 0,
               "not supported by " NAME ": memory size of a sandbox from a snapshot (it runs with "
               "its snapshot's, %lld MB)",
               (long long)has);
    return true;
}

static int bl_create_from(pe_provider *p, const pe_provider_spec *spec, char **id, pe_err *err)
{
    char *es, *url;
    json_t *body, *v = NULL;
    int r;

    /* a fork runs with its snapshot's image and memory: none can be asked */
    if (spec->image)
        return pe_err_set(err, PE_ENOTCAP, 0,
                          "not supported by " NAME ": choice of image of a sandbox from a "
                          "snapshot (it runs its snapshot's)");
    if (spec->memory_bytes && bl_snap_memory_differs(p, spec, err))
        return -1;
    es = pe__url_escape(spec->snapshot);
    url = pe__provider_url(p, "/snapshots/%s/fork", es);
    *id = bl_name(spec);
    body = json_pack("{s:s, s:s, s:o}", "targetName", *id, "targetType", "sandbox", "envs",
                     bl_envs(spec->env));
    /* not idempotent: the name is new, and a second POST would fail on it */
    r = bl_json(p, "POST", url, body, false, JSON_OBJECT, &v, "create a sandbox from a snapshot",
                err);
    json_decref(body);
    json_decref(v);
    free(es);
    free(url);
    if (r < 0) {
        free(*id);
        *id = NULL;
        return -1;
    }
    return pe__provider_create_settle(p, spec, id, "DEPLOYED", bl_probe, NULL, err);
}

static int bl_snapshot_restore(pe_provider *p, const char *id, const char *snap_id, pe_err *err)
{
    char *en = pe__url_escape(id), *es = pe__url_escape(snap_id);
    char *url = pe__provider_url(p, "/sandboxes/%s/snapshots/%s/restore", en, es);
    int r = bl_json(p, "POST", url, NULL, false, JSON_OBJECT, NULL, "restore a snapshot", err);

    free(en);
    free(es);
    free(url);
    if (r < 0)
        return -1;
    return pe__provider_poll(p, id, "DEPLOYED", bl_probe, NULL, err) < 0
               ? pe_err_prefix(err, "restore a snapshot")
               : 0;
}

const pe_provider_ops pe__provider_blaxel = {
    .name = NAME,
    .takes = PE_TAKES_IMAGE | PE_TAKES_MEMORY,
    .caps = PE_CAP_STOP | PE_CAP_FILE_LIST | PE_CAP_FILE_REMOVE | PE_CAP_PREVIEW | PE_CAP_SNAPSHOT |
            PE_CAP_SNAPSHOT_BASE | PE_CAP_SNAPSHOT_RESTORE,
    .open = bl_open,
    .create = bl_create,
    .start = bl_start,
    .stop = bl_start,
    .remove = bl_remove,
    .status = bl_status,
    .exec_start = bl_exec_start,
    .file_read = bl_file_read,
    .file_write = bl_file_write,
    .file_list = bl_file_list,
    .file_remove = bl_file_remove,
    .preview = bl_preview,
    .snapshot_create = bl_snapshot_create,
    .snapshot_delete = bl_snapshot_delete,
    .snapshot_restore = bl_snapshot_restore,
};
