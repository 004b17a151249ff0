/* Fly.io Sprites (reference §3): REST under base_url (public default
 * https://api.sprites.dev) and exec over a WebSocket whose binary frames
 * start with a stream byte (0 stdin, 1 stdout, 2 stderr, 3 exit, 4 stdin
 * EOF); with tty the frames are raw bytes and control is JSON text.
 *
 * A sprite has no stop or start (it idles warm, then cold, and any call
 * wakes it): stop and start succeed and do nothing, and the disk stays.
 * One HTTP port (8080) is routed, and its URL wants the Sprites token:
 * preview says so (needs_credential) instead of handing the token out.
 * Snapshots are checkpoints, restored onto their own sprite only (below).
 * Threading as provider.h; nothing kept between calls. */
#include <stdio.h>
#include <string.h>
#include <sodium.h>
#include <wslay/wslay.h>

#include "core/util.h"
#include "provider-internal.h"

#define NAME "sprites"
#define DEFAULT_URL "https://api.sprites.dev"
#define PREVIEW_PORT 8080

static int sp_open(pe_provider *p, pe_err *err)
{
    if (p->cfg.creds.base_url == NULL)
        p->cfg.creds.base_url = pe_xstrdup(DEFAULT_URL);
    return 0;
}

static int sp_json(pe_provider *p, const char *method, const char *url, json_t *body,
                   bool idempotent, int type, json_t **out, const char *what, pe_err *err)
{
    return pe__provider_json_call(p, method, url, NULL, body, idempotent, type, out, what, err);
}

static int sp_get(pe_provider *p, const char *id, json_t **sprite, pe_err *err)
{
    char *eid = pe__url_escape(id), *url = pe__provider_url(p, "/v1/sprites/%s", eid);
    int r = sp_json(p, "GET", url, NULL, true, JSON_OBJECT, sprite, "get a sprite", err);

    free(eid);
    free(url);
    return r;
}

static int sp_remove(pe_provider *p, const char *id, pe_err *err)
{
    char *eid = pe__url_escape(id), *url = pe__provider_url(p, "/v1/sprites/%s", eid);
    int r = sp_json(p, "DELETE", url, NULL, true, 0, NULL, "delete a sprite", err);

    free(eid);
    free(url);
    return r;
}

/* Sprite names are the id: ours, made unique (a retry after a lost answer
 * must not collide with the sprite the first attempt made). */
static char *sp_name(const pe_provider_spec *spec)
{
    unsigned char b[4];
    char hex[9], *name;

    randombytes_buf(b, sizeof(b));
    sodium_bin2hex(hex, sizeof(hex), b, sizeof(b));
    name = pe_xasprintf("pe-%.40s-%s", spec->name ? spec->name : "sandbox", hex);
    for (char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-'))
            *c = '-';
    return name;
}

static int sp_create(pe_provider *p, const pe_provider_spec *spec, char **id, pe_err *err)
{
    char *name = sp_name(spec), *url = pe__provider_url(p, "/v1/sprites");
    json_t *env = pe__env_object(spec->env), *body, *sprite = NULL;
    pe_err ignored;
    int r;

    body = json_pack("{s:s, s:o, s:{s:s}}", "name", name, "environment", env, "url_settings",
                     "auth", "sprite");
    /* sizes in the create's config (ref §3.2: the platform may scale past them) */
    if (spec->cpu_millis || spec->memory_bytes || spec->disk_bytes) {
        json_t *config = json_object();
        if (spec->cpu_millis)
            json_object_set_new(config, "cpus", json_integer((spec->cpu_millis + 999) / 1000));
        if (spec->memory_bytes)
            json_object_set_new(config, "ram_mb",
                                json_integer((spec->memory_bytes + (1 << 20) - 1) >> 20));
        if (spec->disk_bytes)
            json_object_set_new(config, "storage_gb",
                                json_integer((spec->disk_bytes + (1 << 30) - 1) >> 30));
        json_object_set_new(body, "config", config);
    }
    r = sp_json(p, "POST", url, body, false, JSON_OBJECT, &sprite, "create a sprite", err);
    json_decref(body);
    json_decref(sprite);
    free(url);
    if (r < 0) {
        free(name);
        return -1;
    }
    /* the sprite exists once the API shows it: there is nothing else to wait for */
    sprite = NULL;
    if (sp_get(p, name, &sprite, err) < 0) {
        sp_remove(p, name, &ignored); /* never leave a half-made sprite behind */
        free(name);
        return pe_err_prefix(err, "create a sprite");
    }
    json_decref(sprite);
    *id = name;
    return 0;
}

/* No stop or start on Sprites: any call wakes a sprite; idle ones sleep. */
static int sp_start(pe_provider *p, const char *id, pe_err *err)
{
    json_t *sprite = NULL;
    int r = sp_get(p, id, &sprite, err);

    json_decref(sprite);
    return r;
}

static int sp_stop(pe_provider *p, const char *id, pe_err *err)
{
    return sp_start(p, id, err);
}

static int sp_status(pe_provider *p, const char *id, pe_provider_status *st, pe_err *err)
{
    json_t *sprite = NULL;
    const char *s;

    if (sp_get(p, id, &sprite, err) < 0)
        return -1;
    s = json_string_value(json_object_get(sprite, "status"));
    snprintf(st->raw, sizeof(st->raw), "%s", s ? s : "");
    /* warm and cold sprites wake on the next call: usable, so running */
    if (s && (strcmp(s, "running") == 0 || strcmp(s, "warm") == 0 || strcmp(s, "cold") == 0))
        st->state = PE_PSTATE_RUNNING;
    json_decref(sprite);
    return 0;
}

/* ---- exec and PTY over the exec WebSocket ---- */

static void sp_msg(struct pe_provider_stream *s, int opcode, const unsigned char *data, size_t len)
{
    json_t *v;
    const char *type;

    if (opcode == WSLAY_BINARY_FRAME) {
        if (s->tty) {
            pe__stream_output(s, 1, data, len);
        } else if (len >= 1 && (data[0] == 1 || data[0] == 2)) {
            pe__stream_output(s, data[0], data + 1, len - 1);
        } else if (len >= 2 && data[0] == 3) {
            pe__stream_exit(s, data[1]);
        }
        return;
    }
    if (opcode != WSLAY_TEXT_FRAME)
        return;
    v = json_loadb((const char *)data, len, 0, NULL);
    type = json_string_value(json_object_get(v, "type"));
    if (type && strcmp(type, "exit") == 0 && json_is_integer(json_object_get(v, "exit_code")))
        pe__stream_exit(s, (int)json_integer_value(json_object_get(v, "exit_code")));
    json_decref(v);
}

static int sp_input(struct pe_provider_stream *s, const unsigned char *data, size_t len)
{
    unsigned char *frame;
    int r;

    if (s->tty)
        return len ? pe__ws_send(s->ws, WSLAY_BINARY_FRAME, data, len) : 0;
    if (len == 0)
        return pe__ws_send(s->ws, WSLAY_BINARY_FRAME, "\x04", 1);
    frame = pe_xmalloc(len + 1);
    frame[0] = 0;
    memcpy(frame + 1, data, len);
    r = pe__ws_send(s->ws, WSLAY_BINARY_FRAME, frame, len + 1);
    free(frame);
    return r;
}

static int sp_resize(struct pe_provider_stream *s, unsigned short cols, unsigned short rows)
{
    char msg[96];
    int n = snprintf(msg, sizeof(msg), "{\"type\":\"resize\",\"cols\":%u,\"rows\":%u}", cols, rows);

    return pe__ws_send(s->ws, WSLAY_TEXT_FRAME, msg, (size_t)n);
}

static void sp_kill(struct pe_provider_stream *s)
{
    static const char msg[] = "{\"type\":\"signal\",\"signal\":\"SIGTERM\"}";

    pe__ws_send(s->ws, WSLAY_TEXT_FRAME, msg, sizeof(msg) - 1);
}

static const pe__stream_ops sp_ops = {
    .on_msg = sp_msg, .on_input = sp_input, .on_resize = sp_resize, .on_kill = sp_kill};

static void add_param(char **q, const char *name, const char *value)
{
    char *e = pe__url_escape(value), *j = pe_xasprintf("%s%s%s=%s", *q, **q ? "&" : "?", name, e);

    free(e);
    free(*q);
    *q = j;
}

static int sp_exec_start(pe_provider *p, const char *id, const pe_provider_exec_opts *o,
                         pe_provider_proc *proc, pe_err *err)
{
    char *q = pe_xstrdup(""), *eid = pe__url_escape(id), *url, num[16];
    pe__ws *ws = NULL;
    int r;

    for (char *const *a = o->argv; *a; a++)
        add_param(&q, "cmd", *a);
    add_param(&q, "path", o->argv[0]);
    for (char *const *e = o->env; e && *e; e++)
        add_param(&q, "env", *e);
    if (o->workdir)
        add_param(&q, "dir", o->workdir);
    add_param(&q, "stdin", o->stdin_pipe || o->tty ? "true" : "false");
    if (o->tty) {
        add_param(&q, "tty", "true");
        snprintf(num, sizeof(num), "%u", o->cols ? o->cols : 80);
        add_param(&q, "cols", num);
        snprintf(num, sizeof(num), "%u", o->rows ? o->rows : 24);
        add_param(&q, "rows", num);
    }
    url = pe__provider_url(p, "/v1/sprites/%s/exec%s", eid, q);
    free(q);
    free(eid);
    r = pe__ws_open(p, url, NULL, o->tty ? "open a terminal" : "exec", &ws, err);
    free(url);
    if (r < 0)
        return -1;
    /* without stdin, its EOF at once (what the service expects) */
    if (!o->tty && !o->stdin_pipe)
        pe__ws_send(ws, WSLAY_BINARY_FRAME, "\x04", 1);
    return pe__stream_start(p, &sp_ops, NULL, ws, o->tty, o->stdin_pipe, proc, err);
}

/* ---- files ---- */

static char *sp_fs_url(pe_provider *p, const char *id, const char *op, const char *path,
                       const char *extra)
{
    char *eid = pe__url_escape(id), *ep = pe__url_escape(path);
    char *url = pe__provider_url(p, "/v1/sprites/%s/fs/%s?path=%s&workingDir=%%2F%s", eid, op, ep,
                                 extra ? extra : "");

    free(eid);
    free(ep);
    return url;
}

static int sp_file_read(pe_provider *p, const char *id, const char *path, size_t max, char **data,
                        size_t *len, pe_err *err)
{
    char *url = sp_fs_url(p, id, "read", path, NULL);
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

static int sp_file_write(pe_provider *p, const char *id, const char *path, const void *data,
                         size_t len, unsigned mode, pe_err *err)
{
    char extra[64];
    char *url;
    pe__preq rq;
    pe__presp rs;
    int r;

    snprintf(extra, sizeof(extra), "&mode=%04o&mkdirParents=true", mode ? mode & 07777 : 0644);
    url = sp_fs_url(p, id, "write", path, extra);
    rq = (pe__preq){.method = "PUT",
                    .url = url,
                    .content_type = "application/octet-stream",
                    .body = data ? data : "",
                    .body_len = len,
                    .idempotent = true};
    r = pe__provider_http(p, &rq, &rs, "write a file", err);
    free(url);
    pe__presp_free(&rs);
    return r < 0 ? pe_err_prefix(err, "%s", path) : 0;
}

static int sp_file_list(pe_provider *p, const char *id, const char *path, pe_provider_dirent **ents,
                        size_t *n, pe_err *err)
{
    char *url = sp_fs_url(p, id, "list", path, NULL);
    json_t *v = NULL, *arr, *e;
    size_t i;

    if (sp_json(p, "GET", url, NULL, true, JSON_OBJECT, &v, "list files", err) < 0) {
        free(url);
        return pe_err_prefix(err, "%s", path);
    }
    free(url);
    arr = json_object_get(v, "entries");
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
    json_decref(v);
    return 0;
}

static int sp_file_remove(pe_provider *p, const char *id, const char *path, bool recursive,
                          pe_err *err)
{
    char *url = sp_fs_url(p, id, "delete", path, recursive ? "&recursive=true" : "");
    int r = sp_json(p, "DELETE", url, NULL, true, 0, NULL, "remove a file", err);

    free(url);
    return r < 0 ? pe_err_prefix(err, "%s", path) : 0;
}

static int sp_preview(pe_provider *p, const char *id, uint16_t port, pe_provider_preview_link *out,
                      pe_err *err)
{
    json_t *sprite = NULL;
    const char *url, *auth;

    if (port != PREVIEW_PORT)
        return pe_err_set(err, PE_ENOTCAP, 0,
                          "not supported by " NAME ": preview of port %u (it routes 8080 only)",
                          port);
    if (sp_get(p, id, &sprite, err) < 0)
        return -1;
    url = json_string_value(json_object_get(sprite, "url"));
    auth = json_string_value(json_object_get(json_object_get(sprite, "url_settings"), "auth"));
    if (url == NULL) {
        json_decref(sprite);
        return pe__provider_fail(p, err, PE_EREMOTE, NAME " reported no URL for sprite %s", id);
    }
    snprintf(out->url, sizeof(out->url), "%s", url);
    out->needs_credential = auth == NULL || strcmp(auth, "public") != 0;
    json_decref(sprite);
    return 0;
}

/* ---- checkpoints (reference 3.6, the SDK's createCheckpoint,
 * listCheckpoints, restoreCheckpoint) ----
 *
 * A checkpoint is a copy of one sprite's disk that restores that sprite
 * only, in place: POST /v1/sprites/{n}/checkpoint {comment} answers NDJSON
 * progress ending in "complete" (or "error"); its id ("v3") is read back
 * from GET …/checkpoints by the comment we gave it (the stream's text is
 * prose, not an API). There is no sprite made from a checkpoint (so no
 * sandbox from a snapshot, no fork) and no call to delete one: it goes
 * with its sprite. Our snapshot id is "SPRITE/CHECKPOINT", so a restore
 * can refuse another sprite's. */

#define CKPT_BODY_MAX (1u << 20)

/* The NDJSON answer of a checkpoint or a restore: ok once "complete" is
 * there, else the "error" line's text (or that it never completed). */
static int sp_ndjson_done(pe_provider *p, const pe__presp *rs, const char *what, pe_err *err)
{
    const char *line = rs->body, *end = rs->body + rs->len;
    bool complete = false;

    while (line < end) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        size_t n = nl ? (size_t)(nl - line) : (size_t)(end - line);
        json_t *v = json_loadb(line, n, 0, NULL);
        const char *type = json_string_value(json_object_get(v, "type"));
        if (type && strcmp(type, "error") == 0) {
            const char *e = json_string_value(json_object_get(v, "error"));
            pe__provider_fail(p, err, PE_EREMOTE, NAME ": %s: %.200s", what, e ? e : "failed");
            json_decref(v);
            return -1;
        }
        complete = complete || (type && strcmp(type, "complete") == 0);
        json_decref(v);
        line += n + 1;
    }
    return complete ? 0
                    : pe__provider_fail(p, err, PE_EREMOTE,
                                        NAME ": %s: the answer ended unfinished", what);
}

static int sp_ndjson_post(pe_provider *p, const char *url, const char *body, const char *what,
                          pe_err *err)
{
    pe__preq rq = {.method = "POST",
                   .url = url,
                   .content_type = "application/json",
                   .body = body,
                   .body_len = strlen(body),
                   .max = CKPT_BODY_MAX};
    pe__presp rs;
    int r = pe__provider_http(p, &rq, &rs, what, err);

    if (r == 0)
        r = sp_ndjson_done(p, &rs, what, err);
    pe__presp_free(&rs);
    return r;
}

/* The id of sprite id's checkpoint whose comment is comment. */
static char *sp_checkpoint_by_comment(pe_provider *p, const char *id, const char *comment,
                                      pe_err *err)
{
    char *eid = pe__url_escape(id), *url = pe__provider_url(p, "/v1/sprites/%s/checkpoints", eid);
    json_t *arr = NULL, *e;
    char *found = NULL;
    size_t i;

    if (sp_json(p, "GET", url, NULL, true, JSON_ARRAY, &arr, "list checkpoints", err) == 0) {
        json_array_foreach(arr, i, e)
        {
            const char *c = json_string_value(json_object_get(e, "comment"));
            const char *cid = json_string_value(json_object_get(e, "id"));
            if (c && cid && strcmp(c, comment) == 0 && cid[0] && strlen(cid) <= 128 &&
                !strchr(cid, '/'))
                found = pe_xstrdup(cid);
        }
        if (found == NULL)
            pe__provider_fail(p, err, PE_EREMOTE, NAME " did not list the checkpoint it made");
    }
    json_decref(arr);
    free(eid);
    free(url);
    return found;
}

static int sp_snapshot_create(pe_provider *p, const char *id, const char *name, char **snap_id,
                              pe_err *err)
{
    char *eid = pe__url_escape(id), *url = pe__provider_url(p, "/v1/sprites/%s/checkpoint", eid);
    char *comment = pe_xasprintf("pocketenv %s", name), *body, *cid = NULL;
    json_t *b = json_pack("{s:s}", "comment", comment);
    int r;

    body = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    /* not idempotent: a second POST makes a second checkpoint */
    r = sp_ndjson_post(p, url, body, "checkpoint a sprite", err);
    if (r == 0 && (cid = sp_checkpoint_by_comment(p, id, comment, err)) == NULL)
        r = -1;
    if (r == 0)
        *snap_id = pe_xasprintf("%s/%s", id, cid);
    free(cid);
    free(body);
    free(comment);
    free(eid);
    free(url);
    return r;
}

/* Sprites has no call to delete one checkpoint: it is kept with its
 * sprite, and goes when the sprite is deleted (docs/providers.md). */
static int sp_snapshot_delete(pe_provider *p, const char *snap_id, pe_err *err)
{
    (void)p;
    (void)snap_id;
    (void)err;
    return 0;
}

static int sp_snapshot_restore(pe_provider *p, const char *id, const char *snap_id, pe_err *err)
{
    size_t n = strlen(id);
    char *eid, *ec, *url;
    int r;

    if (strncmp(snap_id, id, n) != 0 || snap_id[n] != '/' || snap_id[n + 1] == '\0')
        return pe_err_set(err, PE_EINVAL, 0,
                          NAME ": a checkpoint restores only the sprite it was taken of");
    eid = pe__url_escape(id);
    ec = pe__url_escape(snap_id + n + 1);
    url = pe__provider_url(p, "/v1/sprites/%s/checkpoints/%s/restore", eid, ec);
    r = sp_ndjson_post(p, url, "", "restore a checkpoint", err);
    free(eid);
    free(ec);
    free(url);
    return r;
}

const pe_provider_ops pe__provider_sprites = {
    .name = NAME,
    .takes = PE_TAKES_CPU | PE_TAKES_MEMORY | PE_TAKES_DISK,
    .caps = PE_CAP_STOP | PE_CAP_PTY | PE_CAP_STDIN | PE_CAP_FILE_LIST | PE_CAP_FILE_REMOVE |
            PE_CAP_PREVIEW | PE_CAP_SNAPSHOT | PE_CAP_SNAPSHOT_RESTORE,
    .open = sp_open,
    .create = sp_create,
    .start = sp_start,
    .stop = sp_stop,
    .remove = sp_remove,
    .status = sp_status,
    .exec_start = sp_exec_start,
    .file_read = sp_file_read,
    .file_write = sp_file_write,
    .file_list = sp_file_list,
    .file_remove = sp_file_remove,
    .preview = sp_preview,
    .snapshot_create = sp_snapshot_create,
    .snapshot_delete = sp_snapshot_delete,
    .snapshot_restore = sp_snapshot_restore,
};
