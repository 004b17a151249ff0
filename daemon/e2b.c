/* The E2B API on the daemon's own URL (docs/e2b.md): E2B's SDKs, pointed
 * here by E2B_API_URL and E2B_SANDBOX_URL, make and drive ordinary
 * Pocketenv sandboxes.
 *
 * Control plane (E2B's REST, key in X-API-Key):
 *   POST /sandboxes, GET /sandboxes, GET /v2/sandboxes,
 *   GET|DELETE /sandboxes/:id, POST /sandboxes/:id/{timeout,connect,
 *   pause,resume,refreshes}
 * envd of each sandbox (the SDK sends E2b-Sandbox-Id and the create's
 * envdAccessToken as X-Access-Token):
 *   POST /process.Process/<method> (e2b-process.c), POST /filesystem.Filesystem/<method>
 *   (Connect, JSON codec; WatchDir in e2b-watch.c), GET|POST /files, GET /health.
 * The code interpreter (the same headers, port 49999; e2b-interp.c):
 *   POST /execute, GET|POST /contexts, DELETE /contexts/:id, POST /contexts/:id/restart.
 * None of these paths is one of ours (/xrpc, /tty, /pty, /v1/sandboxes,
 * /exec, /cp, /ssh, /p, /login, the page at /), so no prefix is needed.
 *
 * The key is our API token, as it is or as E2B's SDK insists keys look:
 * "e2b_" and the token's bytes in hex (`pocketenv token` prints it).
 * Whose sandbox it is is checked like the XRPC API does: another user's
 * answers as a missing one. The create's envdAccessToken is the key the
 * caller presented; envd takes it (or X-API-Key) and checks it the same
 * way, so nothing is stored and a revoked token stops both.
 *
 * What E2B keeps that our rows have no column for (metadata, the end of a
 * timeout) lives here, on the loop thread, and in DATA/e2b-boxes.json,
 * so that a restarted daemon has both again; a timeout kills (deletes)
 * the sandbox as E2B does, also one that ran out while the daemon was
 * down (at once after the restart). The works also write both to the
 * store (e2b_sandboxes), which the other nodes of a cluster read.
 *
 * On a cluster (docs/cluster.md) a call about a sandbox another node runs
 * is relayed there (daemon/cluster-relay.c), and a create is placed
 * (pe_cluster_place) and relayed to the node chosen; a call relayed here
 * carries a node credential for its path instead of a key and is served
 * here, never relayed again. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/log.h"
#include "cluster.h"
#include "core/util.h"
#include "e2b.h"
#include "handlers/sandbox.h"
#include "pause.h"
#include "pocketenv/store-e2b.h"
#include "resource-limits.h"
#include "sandbox-env.h"
#include "terminal.h"
#include "templates.h"

#define KEY_MAX 8192                    /* a token, hex-encoded */
#define META_MAX 8192                   /* a sandbox's metadata, as JSON text */
#define TIMEOUT_MAX (24 * 3600)         /* seconds, as E2B's Pro tier */
#define TIMEOUT_DEFAULT 15              /* E2B's API default (the SDK sends 300) */
#define FILE_MAX (64ull * 1024 * 1024)  /* one /files upload or download */
#define LIST_OUT_MAX (4u * 1024 * 1024) /* a ListDir's raw output */
#define ENVD_BODY_MAX (1024 * 1024)     /* a Connect request */
#define LIST_PAGE_MAX 100               /* GET /v2/sandboxes' limit, as E2B's */
#define PATH_MAX_LEN 4096

/* ---- keys ---- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* The token inside a key: "e2b_" + hex of the token's bytes, or the token. */
static char *key_token(const char *key)
{
    size_t n = key ? strlen(key) : 0;
    char *t;

    if (n == 0 || n > KEY_MAX)
        return NULL;
    if (strncmp(key, "e2b_", 4) != 0)
        return pe_xstrdup(key);
    key += 4;
    n -= 4;
    if (n % 2)
        return NULL;
    t = pe_xcalloc(n / 2 + 1, 1);
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hexval(key[2 * i]), lo = hexval(key[2 * i + 1]);
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            free(t);
            return NULL;
        }
        t[i] = (char)(hi * 16 + lo);
    }
    return t;
}

static void api_error(pe_http_request *req, unsigned status, const char *message)
{
    json_t *o = json_pack("{s:i,s:s}", "code", (int)status, "message", message);
    char *text = json_dumps(o, JSON_COMPACT);

    pe_http_respond(req, status, "application/json", text, strlen(text), NULL);
    free(text);
    json_decref(o);
}

/* The caller's DID, or NULL after a 401 (the control plane's shape, or
 * Connect's for envd). *key: the key as presented (for envdAccessToken). */
static char *authenticate(pe_daemon *d, pe_http_request *req, bool envd, const char **key)
{
    const char *k = pe_http_header(req, "X-API-Key");
    cleanup_free char *token = NULL;
    enum pe_auth_result r = PE_AUTH_MALFORMED;
    char *did = NULL;
    int64_t iat;
    pe_err err;

    if (k == NULL && envd)
        k = pe_http_header(req, "X-Access-Token");
    /* The code interpreter's context calls carry only the traffic token. */
    if (k == NULL && envd)
        k = pe_http_header(req, "E2B-Traffic-Access-Token");
    token = key_token(k);
    pe_err_clear(&err);
    if (token)
        r = pe_auth_token_verify_iat(d->auth, token, PE_AUTH_SCOPE_API, NULL, &did, &iat, &err);
    if (r == PE_AUTH_OK) {
        if (key)
            *key = k;
        return did;
    }
    pe_log_info("auth %s: e2b %s refused: %s", req->client_addr, req->path,
                k ? pe_auth_result_name(r) : "no key");
    if (envd)
        pe__e2b_connect_error(req, "unauthenticated", "invalid or missing access token");
    else
        api_error(req, 401, k ? "Invalid API key" : "API key required (X-API-Key)");
    return NULL;
}

/* The caller of an envd call: the user's key, or, from another node that
 * relays it (docs/cluster.md), the node credential made for this path,
 * which carries the user it checked (and is spent: a replay is refused).
 * NULL after answering 401. */
static char *envd_caller(pe_daemon *d, pe_http_request *req)
{
    if (pe_cluster_is_node_request(req))
        return pe_cluster_route_auth(d, req);
    return authenticate(d, req, true, NULL);
}

/* ---- Connect errors ---- */

const char *pe__e2b_connect_code(int code)
{
    switch (code) {
    case PE_ENOENT:
        return "not_found";
    case PE_EINVAL:
        return "invalid_argument";
    case PE_EEXIST:
        return "already_exists";
    case PE_ESTATE:
        return "failed_precondition";
    case PE_XRPC_EAUTH:
        return "unauthenticated";
    case PE_XRPC_EFORBIDDEN:
        return "permission_denied";
    case PE_XRPC_ERATE:
    case PE_XRPC_ETOOBIG:
        return "resource_exhausted";
    case PE_XRPC_EBUSY:
        return "unavailable";
    case PE_EUNSUP:
    case PE_ENOTCAP: /* a remote provider lacks it: the message names both */
        return "unimplemented";
    case PE_ETIMEDOUT:
        return "deadline_exceeded";
    case PE_EAUTH:
    case PE_EREMOTE:
        return "unavailable";
    default:
        return "internal";
    }
}

static unsigned connect_status(const char *code)
{
    static const struct {
        const char *code;
        unsigned status;
    } map[] = {{"invalid_argument", 400},    {"unauthenticated", 401}, {"permission_denied", 403},
               {"not_found", 404},           {"already_exists", 409},  {"resource_exhausted", 429},
               {"failed_precondition", 412}, {"unimplemented", 501},   {"unavailable", 503},
               {"deadline_exceeded", 504}};

    for (size_t i = 0; i < PE_ARRAY_LEN(map); i++)
        if (strcmp(map[i].code, code) == 0)
            return map[i].status;
    return 500;
}

void pe__e2b_connect_error(pe_http_request *req, const char *code, const char *message)
{
    json_t *o = json_pack("{s:s,s:s}", "code", code, "message", message);
    char *text = json_dumps(o, JSON_COMPACT);

    pe_http_respond(req, connect_status(code), "application/json", text, strlen(text), NULL);
    free(text);
    json_decref(o);
}

/* ---- what E2B keeps per sandbox: metadata, the end of its timeout ---- */

typedef struct e2b_box {
    char *id, *owner;
    json_t *metadata;
    int64_t end_ms;
    pe_ev_timer *timer;
    pe_daemon *d;
    struct e2b_box *next;
} e2b_box;

static e2b_box *boxes;

#define BOXES_FILE "e2b-boxes.json"
#define BOXES_MAX_BYTES (16 * 1024 * 1024)
#define RESTART_GRACE_S 1 /* a timeout that ran out while the daemon was down */

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static e2b_box *box_find(const char *id)
{
    for (e2b_box *b = boxes; b; b = b->next)
        if (strcmp(b->id, id) == 0)
            return b;
    return NULL;
}

static void box_forget(const char *id)
{
    for (e2b_box **p = &boxes; *p; p = &(*p)->next) {
        if (strcmp((*p)->id, id) == 0) {
            e2b_box *b = *p;
            *p = b->next;
            pe_ev_timer_stop(b->timer);
            json_decref(b->metadata);
            free(b->id);
            free(b->owner);
            free(b);
            return;
        }
    }
}

static void expired_after(pe_daemon_job *job)
{
    if (job->failed && job->err.code != PE_ENOENT)
        pe_log_warn("e2b: sandbox %s: kill at its timeout: %s", job->id, job->err.msg);
}

static void boxes_save(pe_daemon *d);

static void on_timeout(pe_ev_timer *t, void *ud)
{
    e2b_box *b = ud;
    pe_daemon_job *job;

    (void)t;
    pe_log_info("e2b: sandbox %s reached its timeout: killing it", b->id);
    job = pe_daemon_job_new(b->d, NULL, b->owner, pe_daemon_sandbox_delete_work);
    job->id = pe_xstrdup(b->id);
    job->kind = PE_JOB_LIFECYCLE;
    job->background = true;
    job->after = expired_after;
    box_forget(b->id);
    boxes_save(job->d);
    pe_daemon_job_submit(job);
}

/* Write every box to DATA/BOXES_FILE. Loop thread: a small file,
 * replaced without fsync (a crash may lose the last change, never the
 * file). */
static void boxes_save(pe_daemon *d)
{
    json_t *a = json_array();
    cleanup_free char *path = pe_xasprintf("%s/%s", d->rt.data_dir, BOXES_FILE);
    char *text;
    pe_err err;

    for (e2b_box *b = boxes; b; b = b->next)
        json_array_append_new(a,
                              json_pack("{s:s,s:s,s:O?,s:I}", "id", b->id, "owner", b->owner,
                                        "metadata", b->metadata, "endMs", (json_int_t)b->end_ms));
    text = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    if (pe_fs_write_replace(path, text, strlen(text), 0600, &err) < 0)
        pe_log_warn("e2b: cannot keep sandboxes' metadata and timeouts: %s", err.msg);
    free(text);
}

static void box_arm(e2b_box *b, int64_t in_s)
{
    pe_err err;

    pe_ev_timer_stop(b->timer);
    b->timer = NULL;
    if (b->end_ms == 0)
        return;
    b->timer =
        pe_ev_timer_start(b->d->loop, (uint64_t)in_s * 1000000000ull, 0, on_timeout, b, &err);
    if (b->timer == NULL)
        pe_log_warn("e2b: sandbox %s: no timeout timer: %s", b->id, err.msg);
}

/* Kill sandbox id (of owner) timeout_s seconds from now; 0: never (the
 * daemon's idle stop still applies). */
static void box_set_timeout(pe_daemon *d, const char *id, const char *owner, int64_t timeout_s)
{
    e2b_box *b = box_find(id);

    if (b == NULL) {
        b = pe_xcalloc(1, sizeof(*b));
        b->id = pe_xstrdup(id);
        b->owner = pe_xstrdup(owner);
        b->d = d;
        b->next = boxes;
        boxes = b;
    }
    b->end_ms = timeout_s ? now_ms() + timeout_s * 1000 : 0;
    box_arm(b, timeout_s);
    boxes_save(d);
}

/* At start, the boxes into the store's e2b_sandboxes too, where the other
 * nodes of a cluster read them: those kept before the store had them
 * (migration 12), and any whose write failed. Before the loop runs, with
 * a handle of its own, as the start's reconciliation. A failure is only
 * logged: this node has them. */
static void boxes_mirror(pe_daemon *d)
{
    pe_store *s;
    size_t n = 0;
    pe_err err;

    if (boxes == NULL)
        return;
    pe_err_clear(&err);
    if ((s = pe_store_open(d->store_url, &err)) == NULL) {
        pe_log_warn("e2b: cannot keep sandboxes' metadata and timeouts in the store: %s", err.msg);
        return;
    }
    for (e2b_box *b = boxes; b; b = b->next) {
        cleanup_free char *meta = b->metadata ? json_dumps(b->metadata, JSON_COMPACT) : NULL;
        if (pe_store_e2b_put(s, b->id, meta, b->end_ms, &err) < 0 && err.code != PE_ENOENT) {
            pe_log_warn("e2b: cannot keep sandboxes' metadata and timeouts in the store: %s",
                        err.msg);
            break;
        }
        pe_err_clear(&err);
        n++;
    }
    pe_store_close(s);
    pe_log_info("event=e2b_boxes_kept_in_store count=%zu", n);
}

/* The boxes a former run of the daemon kept (at start). A file that
 * cannot be read is said and left as it is. */
static void boxes_load(pe_daemon *d)
{
    cleanup_free char *path = pe_xasprintf("%s/%s", d->rt.data_dir, BOXES_FILE);
    cleanup_free char *text = NULL;
    size_t len, i;
    json_t *a, *v;
    pe_err err;

    if (access(path, F_OK) < 0)
        return;
    /* json_is_array is a macro that reads its argument twice: load first. */
    a = pe_fs_read_file(path, BOXES_MAX_BYTES, &text, &len, &err) < 0
            ? NULL
            : json_loadb(text, len, 0, NULL);
    if (!json_is_array(a)) {
        json_decref(a);
        pe_log_warn("e2b: %s: unreadable, sandboxes' metadata and timeouts are lost", path);
        return;
    }
    json_array_foreach(a, i, v)
    {
        const char *id = json_string_value(json_object_get(v, "id"));
        const char *owner = json_string_value(json_object_get(v, "owner"));
        const json_t *meta = json_object_get(v, "metadata");
        if (json_is_null(meta)) /* saved without metadata ("s:O?") */
            meta = NULL;
        json_int_t end = json_integer_value(json_object_get(v, "endMs"));
        if (id == NULL || owner == NULL || box_find(id) || (meta && !json_is_object(meta)))
            continue;
        e2b_box *b = pe_xcalloc(1, sizeof(*b));
        b->id = pe_xstrdup(id);
        b->owner = pe_xstrdup(owner);
        b->d = d;
        b->metadata = meta ? json_deep_copy(meta) : NULL;
        b->end_ms = end > 0 ? end : 0;
        b->next = boxes;
        boxes = b;
        int64_t left = b->end_ms ? (b->end_ms - now_ms() + 999) / 1000 : 0;
        box_arm(b, left < RESTART_GRACE_S ? RESTART_GRACE_S : left);
    }
    json_decref(a);
    boxes_mirror(d);
}

/* ---- views ---- */

/* The template a sandbox says it was made from: E2B's name for ours. */
static const char *template_of(const char *base)
{
    return base && strcmp(base, "debian") == 0 ? "base" : base ? base : "base";
}

static void set_time_iso(json_t *o, const char *key, int64_t ms)
{
    json_t *t = pe_daemon_time_json(ms);

    json_object_set_new(o, key, t ? t : json_null());
}

/* The key of a view under which a work put what the store keeps of a
 * sandbox another node runs (attach_rows): {"metadata", "endMs"}. */
#define E2B_ROW "e2bRow"

/* E2B's ListedSandbox / SandboxDetail from our view. */
static json_t *detail_of(const json_t *view, const char *key)
{
    const char *id = json_string_value(json_object_get(view, "id"));
    const char *status = json_string_value(json_object_get(view, "status"));
    e2b_box *b = id ? box_find(id) : NULL;
    const json_t *row = json_object_get(view, E2B_ROW);
    json_t *meta = b ? b->metadata : json_object_get(row, "metadata");
    int64_t end = b ? b->end_ms : (int64_t)json_integer_value(json_object_get(row, "endMs"));
    json_int_t vcpus = json_integer_value(json_object_get(view, "vcpus"));
    json_int_t mem = json_integer_value(json_object_get(view, "memory"));
    json_int_t disk = json_integer_value(json_object_get(view, "disk"));
    json_t *o = json_object();

    json_object_set_new(o, "sandboxID", json_string(id ? id : ""));
    json_object_set_new(
        o, "templateID",
        json_string(template_of(json_string_value(json_object_get(view, "baseSandbox")))));
    json_object_set_new(o, "alias", json_string(json_string_value(json_object_get(view, "name"))));
    json_object_set_new(o, "clientID", json_string("pocketenv"));
    json_object_set_new(o, "state",
                        json_string(status && strcmp(status, "RUNNING") == 0 &&
                                            !json_is_true(json_object_get(view, "paused"))
                                        ? "running"
                                        : "paused"));
    json_object_set_new(o, "startedAt",
                        json_string(json_string_value(json_object_get(view, "startedAt"))
                                        ? json_string_value(json_object_get(view, "startedAt"))
                                        : json_string_value(json_object_get(view, "createdAt"))));
    set_time_iso(o, "endAt", end);
    if (json_is_null(json_object_get(o, "endAt")))
        json_object_set_new(o, "endAt", json_string("9999-12-31T23:59:59.000Z"));
    json_object_set_new(o, "cpuCount", json_integer(vcpus ? vcpus : 1));
    json_object_set_new(o, "memoryMB", json_integer(mem ? mem * 1024 : 512));
    json_object_set_new(o, "diskSizeMB", json_integer(disk ? disk * 1024 : 0));
    json_object_set_new(o, "envdVersion", json_string(PE_E2B_ENVD_VERSION));
    json_object_set_new(o, "metadata", json_is_object(meta) ? json_incref(meta) : json_object());
    if (key) {
        json_object_set_new(o, "envdAccessToken", json_string(key));
        json_object_set_new(o, "trafficAccessToken", json_string(key));
    }
    return o;
}

static json_t *created_of(const json_t *view, const char *key)
{
    json_t *o = detail_of(view, key);

    /* What create and connect answer: the Sandbox object. */
    json_t *out = json_pack("{s:O,s:O,s:O*,s:s,s:s}", "sandboxID", json_object_get(o, "sandboxID"),
                            "templateID", json_object_get(o, "templateID"), "alias",
                            json_object_get(o, "alias"), "clientID", "pocketenv", "envdVersion",
                            PE_E2B_ENVD_VERSION);
    /* The same key as the traffic token: the code interpreter's SDK sends
     * only that one with its context calls (E2B-Traffic-Access-Token). */
    if (key) {
        json_object_set_new(out, "envdAccessToken", json_string(key));
        json_object_set_new(out, "trafficAccessToken", json_string(key));
    }
    json_decref(o);
    return out;
}

static void respond_json(pe_http_request *req, unsigned status, json_t *o)
{
    char *text = json_dumps(o, JSON_COMPACT);

    pe_http_respond(req, status, "application/json", text, strlen(text), NULL);
    free(text);
    json_decref(o);
}

/* ---- control plane: jobs for raw requests ---- */

struct call {
    pe_http_request *req;
    json_t *filter; /* a list's: {"state": [..], "metadata": {..}, "template"} */
    char *key;      /* as presented: the envdAccessToken we answer with (NULL: from a node) */
    json_t *metadata;
    int64_t timeout;
    int op;
    size_t limit, offset; /* a v2 list's page (limit 0: everything) */
    bool from_node;       /* relayed here by another node: ours to serve, never relayed on */
    bool relay;           /* the sandbox is another node's (there): the call goes there */
    pe_cluster_target there;
    char *no_room; /* a create no node has room for: why */
};

enum {
    OP_CREATE,
    OP_GET,
    OP_KILL,
    OP_TIMEOUT,
    OP_CONNECT,
    OP_PAUSE,
    OP_RESUME,
    OP_REFRESH,
    OP_LIST
};

static void call_free(struct call *c)
{
    json_decref(c->filter);
    free(c->key);
    json_decref(c->metadata);
    pe_cluster_target_clear(&c->there);
    free(c->no_room);
    free(c);
}

static unsigned status_of(const pe_err *err)
{
    switch (err->code) {
    case PE_ENOENT:
        return 404;
    case PE_EINVAL:
    case PE_EUNSUP:
        return 400;
    case PE_EEXIST:
    case PE_ESTATE:
        return 409;
    case PE_XRPC_EFORBIDDEN:
        return 403;
    case PE_XRPC_ERATE:
        return 429;
    case PE_XRPC_EBUSY:
        return 503;
    case PE_ENOTCAP:
        return 501; /* "not supported by NAME: CAPABILITY" */
    case PE_EAUTH:
    case PE_EREMOTE:
        return 502; /* the provider's answer, said without a credential */
    case PE_ETIMEDOUT:
        return 504;
    default:
        return 500;
    }
}

static void call_fail(pe_http_request *req, const pe_err *err, const char *id)
{
    char msg[PE_ERR_MSG_MAX + 64];
    unsigned st = status_of(err);

    if (st == 404 && id)
        snprintf(msg, sizeof(msg), "sandbox \"%.100s\" doesn't exist", id);
    else if (st >= 500)
        snprintf(msg, sizeof(msg), "internal error"); /* details in the log only */
    else
        snprintf(msg, sizeof(msg), "%s", err->msg);
    if (st >= 500)
        pe_log_warn("e2b %s: %s", req->path, err->msg);
    api_error(req, st, msg);
}

/* Does sandbox e (E2B's view) pass a list's filter? */
static bool listed(const json_t *filter, const json_t *e)
{
    const json_t *states = json_object_get(filter, "state"),
                 *meta = json_object_get(filter, "metadata");
    const char *tmpl = json_string_value(json_object_get(filter, "template"));
    const json_t *have = json_object_get(e, "metadata"), *v;
    const char *k;
    bool state_ok = json_array_size(states) == 0;
    size_t i;

    json_array_foreach(states, i, v) state_ok =
        state_ok || json_equal(v, json_object_get(e, "state"));
    if (!state_ok ||
        (tmpl && strcmp(tmpl, json_string_value(json_object_get(e, "templateID")) ?: "") != 0))
        return false;
    json_object_foreach((json_t *)meta, k,
                        v) if (!json_equal(v, json_object_get(have, k))) return false;
    return true;
}

/* One page of list (taken): limit items from offset, and in x-next-token
 * where the next page starts if there is one. The token is an offset in
 * the owner's list: a sandbox made or deleted between pages shifts it. */
static void list_page(pe_http_request *req, json_t *list, size_t offset, size_t limit)
{
    json_t *page = json_array();
    char next[24];
    const char *headers[] = {"x-next-token", next, NULL};
    char *text;

    for (size_t i = offset; i < json_array_size(list) && i < offset + limit; i++)
        json_array_append(page, json_array_get(list, i));
    snprintf(next, sizeof(next), "%zu", offset + limit);
    text = json_dumps(page, JSON_COMPACT);
    pe_http_respond(req, 200, "application/json", text, strlen(text),
                    offset + limit < json_array_size(list) ? headers : NULL);
    free(text);
    json_decref(page);
    json_decref(list);
}

/* A relayed answer (loop thread). The other node may have changed the
 * sandbox: its notification can reach this node after the caller's next
 * read, which must not be answered from the read cache (read-cache.h), as
 * for a forwarded XRPC call. One that is a sandbox (create, connect,
 * resume, get): with the key the caller presented here as its envd
 * tokens, as this node would answer (the other node never had the key). */
static char *put_key_back(long status, const char *body, size_t len, size_t *out_len, void *ud)
{
    json_t *o = status == 200 || status == 201 ? json_loadb(body, len, 0, NULL) : NULL;
    char *text = NULL;

    pe_store_write_gen_bump();

    if (json_is_object(o) && json_object_get(o, "sandboxID")) {
        json_object_set_new(o, "envdAccessToken", json_string(ud));
        json_object_set_new(o, "trafficAccessToken", json_string(ud));
        text = json_dumps(o, JSON_COMPACT);
        *out_len = strlen(text);
    }
    json_decref(o);
    return text;
}

/* The call of a sandbox another node runs, or a create placed there:
 * relayed as it came (the request's path, method and body), with a node
 * credential for the caller in place of the key (daemon/cluster-relay.c).
 * Or why it cannot be. */
static void relay_call(pe_daemon *d, pe_http_request *req, const char *did, struct call *c)
{
    char msg[PE_ERR_MSG_MAX + 128];

    if (c->no_room) {
        api_error(req, 503, c->no_room);
    } else if (c->there.down) {
        snprintf(msg, sizeof(msg),
                 "node %s is down: the %s there and cannot be reached until it is back",
                 c->there.node_name, c->op == OP_CREATE ? "snapshot is" : "sandbox runs");
        api_error(req, 503, msg);
    } else {
        pe_cluster_relay_route_edit(d, req, did, &c->there, put_key_back, pe_steal_ptr(&c->key),
                                    free);
    }
}

static void call_after(pe_daemon_job *job)
{
    struct call *c = job->ud;
    pe_http_request *req = c->req;
    const json_t *view = json_object_get(job->out, "sandbox");
    const char *id = NULL;

    if (view == NULL)
        view = job->out;
    id = json_string_value(json_object_get(view, "id"));
    if (!job->failed && (c->relay || c->no_room)) {
        relay_call(job->d, req, job->did, c);
        call_free(c);
        return;
    }
    /* failed, not err: sandbox.c's work may leave a tolerated error there */
    if (job->failed) {
        call_fail(req, &job->err, job->id);
        call_free(c);
        return;
    }
    switch (c->op) {
    case OP_CREATE:
        if (id) {
            box_set_timeout(job->d, id, job->did, c->timeout);
            box_find(id)->metadata = json_incref(c->metadata);
            boxes_save(job->d);
        }
        respond_json(req, 201, created_of(view, c->key));
        break;
    case OP_GET:
        respond_json(req, 200, detail_of(view, c->key));
        break;
    case OP_KILL:
        box_forget(job->id);
        boxes_save(job->d);
        pe_http_respond(req, 204, NULL, "", 0, NULL);
        break;
    case OP_TIMEOUT:
    case OP_REFRESH:
        if (id && c->op == OP_TIMEOUT)
            box_set_timeout(job->d, id, job->did, c->timeout);
        pe_http_respond(req, 204, NULL, "", 0, NULL);
        break;
    case OP_PAUSE:
        pe_http_respond(req, 204, NULL, "", 0, NULL);
        break;
    case OP_CONNECT:
    case OP_RESUME:
        if (id && c->timeout > 0)
            box_set_timeout(job->d, id, job->did, c->timeout);
        respond_json(req, json_is_true(json_object_get(job->in, "started")) ? 201 : 200,
                     created_of(view, c->key));
        break;
    case OP_LIST: {
        json_t *list = json_array(), *v;
        size_t i;
        json_array_foreach(json_object_get(job->out, "sandboxes"), i, v)
        {
            json_t *e = detail_of(v, NULL);
            if (listed(c->filter, e))
                json_array_append(list, e);
            json_decref(e);
        }
        if (c->limit) {
            list_page(req, list, c->offset, c->limit);
            break;
        }
        respond_json(req, 200, list);
        break;
    }
    }
    call_free(c);
}

static void submit_call(pe_daemon *d, pe_http_request *req, const char *did, struct call *c,
                        pe_daemon_work_fn work, const char *id, json_t *in, int kind)
{
    pe_daemon_job *job = pe_daemon_job_new(d, NULL, did, work);
    pe_err why;

    c->req = req;
    job->ud = c;
    job->after = call_after;
    job->id = id ? pe_xstrdup(id) : NULL;
    job->in = in;
    job->kind = kind;
    pe_http_defer(req);
    pe_err_clear(&why);
    if (pe_daemon_job_submit_why(job, &why) < 0) {
        call_fail(req, &why, NULL);
        call_free(c);
    }
}

/* Get, then the sandbox's view as job->out (pause, connect, resume chain
 * a start or stop first). */
static void view_again(pe_daemon_job *job, pe_store *s)
{
    json_t *in = job->in;

    job->in = NULL;
    json_decref(job->out);
    job->out = NULL;
    pe_daemon_sandbox_get_work(job, s);
    job->in = in;
}

/* Is the caller's sandbox job->id another node's? Then the call goes
 * there (call_after relays it): its runtime, its E2B timeout and metadata
 * are there. Not for a call another node relayed here (one hop). A read
 * (get, refreshes) of a sandbox whose node is down is answered here from
 * the store instead, as any node can. Another user's sandbox is left to
 * the work, which answers 404 as for a missing one. */
static bool elsewhere(pe_daemon_job *job, pe_store *s, bool read)
{
    struct call *c = job->ud;
    pe_store_sandbox sb;
    pe_err e;

    pe_err_clear(&e);
    if (c->from_node || job->id == NULL || pe_store_sandbox_get(s, job->id, &sb, &e) < 0)
        return false; /* the work answers 404 */
    c->relay = sb.owner_did && job->did && strcmp(sb.owner_did, job->did) == 0 &&
               pe_cluster_where(job->d, s, &sb, &c->there) == 1;
    pe_store_sandbox_clear(&sb);
    if (c->relay && read && c->there.down) {
        pe_cluster_target_clear(&c->there);
        c->relay = false;
    }
    return c->relay;
}

/* The id of the sandbox whose view a work left in job->out. */
static const char *out_id(const pe_daemon_job *job)
{
    const json_t *view = json_object_get(job->out, "sandbox");

    return json_string_value(json_object_get(view ? view : job->out, "id"));
}

/* What E2B keeps of sandbox id, in the store too (worker): this node
 * keeps it (boxes) and arms the timer, the others read it for their lists
 * (attach_rows). A failure is only logged: this node's own answers and
 * timer do not need the row. with_metadata false: the end only. */
static void row_put(pe_store *s, const char *id, const json_t *metadata, int64_t timeout_s,
                    bool with_metadata)
{
    int64_t end = timeout_s ? now_ms() + timeout_s * 1000 : 0;
    cleanup_free char *text = json_is_object(metadata) ? json_dumps(metadata, JSON_COMPACT) : NULL;
    pe_err err;
    int r;

    if (id == NULL)
        return;
    pe_err_clear(&err);
    r = with_metadata ? pe_store_e2b_put(s, id, text, end, &err)
                      : pe_store_e2b_set_end(s, id, end, &err);
    if (r < 0)
        pe_log_warn("e2b: sandbox %s: keep its metadata and timeout in the store: %s", id, err.msg);
}

/* Put into each view of views (an array) what the store keeps of it, under
 * E2B_ROW, for detail_of: the metadata and timeout of a sandbox another
 * node runs (this node's own are in its boxes). */
static void attach_rows(pe_daemon_job *job, pe_store *s, json_t *views)
{
    pe_store_e2b *rows = NULL;
    size_t n = 0, i;
    json_t *v;
    pe_err err;

    pe_err_clear(&err);
    if (pe_store_e2b_list(s, job->did, &rows, &n, &err) < 0) {
        pe_log_warn("e2b: %s", err.msg);
        return;
    }
    json_array_foreach(views, i, v)
    {
        const char *id = json_string_value(json_object_get(v, "id"));
        for (size_t k = 0; id && k < n; k++) {
            if (strcmp(rows[k].sandbox_id, id) != 0)
                continue;
            json_t *meta = rows[k].metadata ? json_loads(rows[k].metadata, 0, NULL) : NULL;
            json_object_set_new(
                v, E2B_ROW,
                json_pack("{s:o*,s:I}", "metadata", meta, "endMs", (json_int_t)rows[k].end_ms));
            break;
        }
    }
    pe_store_e2b_list_free(rows, n);
}

static void get_or_404(pe_daemon_job *job, pe_store *s)
{
    json_t *view;

    if (elsewhere(job, s, true))
        return;
    pe_daemon_sandbox_get_work(job, s);
    view = json_object_get(job->out, "sandbox");
    if (!job->failed && view) {
        json_t *one = json_pack("[O]", view);
        attach_rows(job, s, one);
        json_decref(one);
    }
}

static void timeout_work(pe_daemon_job *job, pe_store *s)
{
    struct call *c = job->ud;

    if (elsewhere(job, s, false))
        return;
    pe_daemon_sandbox_get_work(job, s);
    if (!job->failed)
        row_put(s, out_id(job), NULL, c->timeout, false);
}

static void kill_work(pe_daemon_job *job, pe_store *s)
{
    if (!elsewhere(job, s, false))
        pe_daemon_sandbox_delete_work(job, s);
}

/* A create: placed as createSandbox is (most room, --place-label, a
 * snapshot's node), unless another node placed it here already. */
static void create_work(pe_daemon_job *job, pe_store *s)
{
    struct call *c = job->ud;
    const char *base = json_string_value(json_object_get(job->in, "base"));
    int r = c->from_node ? 0 : pe_cluster_place(job->d, s, job->did, base, &c->there, &job->err);

    if (r < 0 && job->err.code == PE_ESTATE) {
        c->no_room = pe_xstrdup(job->err.msg);
        pe_err_clear(&job->err);
    } else if (r < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
    } else if (r == 1) {
        c->relay = true;
    } else {
        pe_daemon_sandbox_create_now_work(job, s);
        if (!job->failed)
            row_put(s, out_id(job), c->metadata, c->timeout, true);
    }
}

static const char *view_status(const pe_daemon_job *job)
{
    return json_string_value(json_object_get(json_object_get(job->out, "sandbox"), "status"));
}

/* E2B's pause keeps processes and memory: a freeze (pause.c), not a stop.
 * A stopped sandbox counts as paused already (its files are kept). */
static void pause_work(pe_daemon_job *job, pe_store *s)
{
    const char *id;

    if (elsewhere(job, s, false))
        return;
    pe_daemon_sandbox_get_work(job, s);
    if (job->failed)
        return;
    id = json_string_value(json_object_get(json_object_get(job->out, "sandbox"), "id"));
    if ((view_status(job) && strcmp(view_status(job), "RUNNING") != 0) || id == NULL ||
        pe_daemon_paused(id)) {
        pe_err_set(&job->err, PE_ESTATE, 0, "sandbox %s is already paused", job->id);
        pe_daemon_job_fail(job, &job->err, NULL);
        return;
    }
    if (pe_daemon_pause(job->d, id, "paused through the E2B API", &job->err) < 0)
        pe_daemon_job_fail(job, &job->err, NULL);
}

static void resume_work(pe_daemon_job *job, pe_store *s)
{
    struct call *c = job->ud;
    bool started;

    if (elsewhere(job, s, false))
        return;
    pe_daemon_sandbox_get_work(job, s);
    if (job->failed)
        return;
    started = view_status(job) && strcmp(view_status(job), "RUNNING") != 0;
    if (!started) { /* frozen: thaw, its processes carry on */
        const char *id =
            json_string_value(json_object_get(json_object_get(job->out, "sandbox"), "id"));
        int r = id ? pe_daemon_wake(job->d, id, "e2b", &job->err) : 0;

        if (r < 0) {
            pe_daemon_job_fail(job, &job->err, NULL);
            return;
        }
        started = r > 0;
    }
    if (started && view_status(job) && strcmp(view_status(job), "RUNNING") != 0) {
        json_t *in = job->in;
        json_decref(job->out);
        job->out = NULL;
        job->in = NULL;
        pe_daemon_sandbox_start_work(job, s);
        job->in = in;
        if (job->failed)
            return;
    }
    view_again(job, s);
    if (!job->failed)
        json_object_set_new(job->in, "started", json_boolean(started));
    if (!job->failed && c->timeout > 0)
        row_put(s, out_id(job), NULL, c->timeout, false);
}

static void list_work(pe_daemon_job *job, pe_store *s)
{
    pe_store_sandbox *list = NULL;
    size_t n = 0;
    int64_t total = 0;
    json_t *a = json_array();

    if (pe_store_sandbox_list(s, job->did, 1000, 0, &list, &n, &total, &job->err) < 0) {
        json_decref(a);
        pe_daemon_job_fail(job, &job->err, NULL);
        return;
    }
    for (size_t i = 0; i < n; i++)
        if (list[i].status == PE_STORE_RUNNING || list[i].status == PE_STORE_STOPPED)
            json_array_append_new(a, pe_daemon_sandbox_view(&list[i]));
    pe_store_sandbox_list_free(list, n);
    attach_rows(job, s, a);
    job->out = json_pack("{s:o}", "sandboxes", a);
}

/* Percent-decode s[0..n) into a new string; NULL if malformed or NUL. */
static char *unescape(const char *s, size_t n)
{
    char *out = pe_xcalloc(n + 1, 1), *o = out;

    for (size_t i = 0; i < n; i++) {
        int hi = -1, lo = -1;

        if (s[i] != '%') {
            *o++ = s[i] == '+' ? ' ' : s[i];
            continue;
        }
        if (i + 2 < n) { /* | 0x20: A-F as a-f; digits stay */
            hi = hexval((char)(s[i + 1] | 0x20));
            lo = hexval((char)(s[i + 2] | 0x20));
        }
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            free(out);
            return NULL;
        }
        *o++ = (char)(hi * 16 + lo);
        i += 2;
    }
    return out;
}

static char *unescape_twice(const char *s, size_t n)
{
    char *once = unescape(s, n), *twice = once ? unescape(once, strlen(once)) : NULL;

    free(once);
    return twice;
}

/* A list's filter from its query: state=running,paused; metadata= the
 * "k=v&k2=v2" E2B's SDK sends (keys and values escaped, then the whole);
 * template=. NULL after a 400. */
static json_t *list_filter(pe_http_request *req)
{
    const char *state = pe_http_query(req, "state"), *meta = pe_http_query(req, "metadata");
    const char *tmpl = pe_http_query(req, "template");
    json_t *f = json_pack("{s:[],s:{}}", "state", "metadata");

    for (const char *p = state; p && *p;) {
        size_t n = strcspn(p, ",");
        json_array_append_new(json_object_get(f, "state"), json_stringn(p, n));
        p += n + (p[n] == ',');
    }
    for (const char *p = meta; p && *p;) {
        size_t n = strcspn(p, "&"), eq = strcspn(p, "=");
        /* Twice: the SDK escapes each key and value, then the pairs. */
        char *k = eq < n ? unescape_twice(p, eq) : NULL;
        char *v = eq < n ? unescape_twice(p + eq + 1, n - eq - 1) : NULL;
        if (k == NULL || v == NULL) {
            free(k);
            free(v);
            json_decref(f);
            api_error(req, 400, "metadata: key=value pairs, URL-encoded");
            return NULL;
        }
        json_object_set_new(json_object_get(f, "metadata"), k, json_string(v));
        free(k);
        free(v);
        p += n + (p[n] == '&');
    }
    if (tmpl && tmpl[0])
        json_object_set_new(f, "template", json_string(tmpl));
    return f;
}

/* ---- control plane: the requests ---- */

static int64_t timeout_of(const json_t *body, int64_t dflt, pe_err *err)
{
    const json_t *t = json_object_get(body, "timeout");

    if (t == NULL || json_is_null(t))
        return dflt;
    if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) > TIMEOUT_MAX)
        return pe_err_set(err, PE_EINVAL, 0, "timeout: seconds in 0..%d", TIMEOUT_MAX);
    return json_integer_value(t);
}

/* E2B's create body into createSandbox's input, on the loop thread. */
static json_t *create_input(pe_daemon *d, const json_t *body, pe_err *err)
{
    const char *tmpl = json_string_value(json_object_get(body, "templateID"));
    const json_t *envs = json_object_get(body, "envVars"),
                 *meta = json_object_get(body, "metadata");
    cleanup_free char *base = NULL;
    pe_store_sandbox sizes = {0};
    json_t *in, *list = json_array(), *v;
    const char *k;

    if (tmpl == NULL || tmpl[0] == '\0') {
        json_decref(list);
        pe_err_set(err, PE_EINVAL, 0, "templateID: a template name, e.g. base");
        return NULL;
    }
    if ((envs && !json_is_null(envs) && !json_is_object(envs)) ||
        (meta && !json_is_null(meta) && !json_is_object(meta))) {
        json_decref(list);
        pe_err_set(err, PE_EINVAL, 0, "envVars and metadata: objects of strings");
        return NULL;
    }
    json_object_foreach((json_t *)envs, k, v)
    {
        if (!json_is_string(v)) {
            json_decref(list);
            pe_err_set(err, PE_EINVAL, 0, "envVars.%.64s: a string", k);
            return NULL;
        }
        json_array_append_new(list, json_pack("{s:s,s:O}", "name", k, "value", v));
    }
    /* E2B's base image is our Debian; every other name is one of ours. */
    if (pe_daemon_base_name(strcmp(tmpl, "base") == 0 ? "debian" : tmpl, &base, err) < 0) {
        json_decref(list);
        return NULL;
    }
    in = json_pack("{s:s,s:o}", "base", base, "envs", list);
    if (pe_daemon_create_resources_check(d, in, err) < 0 ||
        pe_daemon_limits_request(&d->lim, in, &sizes, err) < 0) {
        json_decref(in);
        return NULL;
    }
    return in;
}

static void on_create(pe_daemon *d, pe_http_request *req, const char *did, const char *key,
                      bool from_node)
{
    json_t *body = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, NULL);
    const json_t *meta = json_object_get(body, "metadata");
    cleanup_free char *meta_text = NULL;
    struct call *c;
    json_t *in;
    pe_err err;

    pe_err_clear(&err);
    if (!json_is_object(body)) {
        json_decref(body);
        api_error(req, 400, "the body must be a JSON object");
        return;
    }
    meta_text = json_is_object(meta) ? json_dumps(meta, JSON_COMPACT) : NULL;
    c = pe_xcalloc(1, sizeof(*c));
    c->op = OP_CREATE;
    c->key = key ? pe_xstrdup(key) : NULL;
    c->from_node = from_node;
    c->timeout = timeout_of(body, TIMEOUT_DEFAULT, &err);
    in = c->timeout < 0 ? NULL : create_input(d, body, &err);
    if (in == NULL || (meta_text && strlen(meta_text) > META_MAX)) {
        if (in)
            pe_err_set(&err, PE_EINVAL, 0, "metadata: at most %d bytes", META_MAX);
        json_decref(in);
        json_decref(body);
        call_free(c);
        api_error(req, 400, err.msg);
        return;
    }
    if (json_is_object(meta))
        c->metadata = json_deep_copy(meta);
    json_decref(body);
    submit_call(d, req, did, c, create_work, NULL, in, PE_JOB_LIFECYCLE);
}

static void on_sandboxes(pe_http_request *req, void *ud)
{
    pe_daemon *d = ud;
    const char *rest = req->rest, *key = NULL;
    cleanup_free char *did = NULL, *id = NULL;
    const char *action = NULL;
    json_t *body = NULL;
    struct call *c;
    bool from_node;
    pe_err err;
    int op;

    if (pe_http_header(req, "E2b-Sandbox-Id")) {
        pe__e2b_connect_error(req, "not_found", "no such envd path");
        return;
    }
    /* From another node: the caller its node credential (made for this
     * path) carries; the key stays on that node, which puts it back into
     * the answer. */
    from_node = pe_cluster_is_node_request(req);
    did = from_node ? pe_cluster_route_auth(d, req) : authenticate(d, req, false, &key);
    if (did == NULL)
        return;
    if (d->draining) {
        api_error(req, 503, "the daemon is shutting down");
        return;
    }
    if (rest[0] == '\0' || strcmp(rest, "/") == 0) { /* the collection */
        if (strcmp(req->method, "POST") == 0)
            on_create(d, req, did, key, from_node);
        else if (strcmp(req->method, "GET") == 0) {
            json_t *f = list_filter(req);
            if (f == NULL)
                return;
            c = pe_xcalloc(1, sizeof(*c));
            c->op = OP_LIST;
            c->filter = f;
            submit_call(d, req, did, c, list_work, NULL, NULL, PE_JOB_SHORT);
        } else
            api_error(req, 405, "GET or POST");
        return;
    }
    if (rest[0] != '/') {
        api_error(req, 404, "not found");
        return;
    }
    rest++;
    action = strchr(rest, '/');
    id = action ? pe_xasprintf("%.*s", (int)(action - rest), rest) : pe_xstrdup(rest);
    if (strlen(id) == 0 || strlen(id) > 100) {
        api_error(req, 404, "not found");
        return;
    }
    if (action == NULL && strcmp(req->method, "GET") == 0)
        op = OP_GET;
    else if (action == NULL && strcmp(req->method, "DELETE") == 0)
        op = OP_KILL;
    else if (action && strcmp(req->method, "POST") == 0 && strcmp(action, "/timeout") == 0)
        op = OP_TIMEOUT;
    else if (action && strcmp(req->method, "POST") == 0 && strcmp(action, "/connect") == 0)
        op = OP_CONNECT;
    else if (action && strcmp(req->method, "POST") == 0 && strcmp(action, "/pause") == 0)
        op = OP_PAUSE;
    else if (action && strcmp(req->method, "POST") == 0 && strcmp(action, "/resume") == 0)
        op = OP_RESUME;
    else if (action && strcmp(req->method, "POST") == 0 && strcmp(action, "/refreshes") == 0)
        op = OP_REFRESH;
    else {
        api_error(req, 404, "not served here (docs/e2b.md)");
        return;
    }
    pe_err_clear(&err);
    if (req->body_len) {
        body = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(body)) {
            json_decref(body);
            api_error(req, 400, "the body must be a JSON object");
            return;
        }
    }
    c = pe_xcalloc(1, sizeof(*c));
    c->op = op;
    c->key = key ? pe_xstrdup(key) : NULL;
    c->from_node = from_node;
    c->timeout = timeout_of(body, op == OP_TIMEOUT ? -1 : 0, &err);
    if (err.code != PE_OK || (op == OP_TIMEOUT && c->timeout < 0)) {
        json_decref(body);
        call_free(c);
        api_error(req, 400, err.code != PE_OK ? err.msg : "timeout: required");
        return;
    }
    json_decref(body);
    switch (op) {
    case OP_GET:
    case OP_REFRESH:
        submit_call(d, req, did, c, get_or_404, id, NULL, PE_JOB_SHORT);
        break;
    case OP_TIMEOUT:
        submit_call(d, req, did, c, timeout_work, id, NULL, PE_JOB_SHORT);
        break;
    case OP_KILL:
        submit_call(d, req, did, c, kill_work, id, NULL, PE_JOB_LIFECYCLE);
        break;
    case OP_PAUSE:
        submit_call(d, req, did, c, pause_work, id, NULL, PE_JOB_LIFECYCLE);
        break;
    default:
        submit_call(d, req, did, c, resume_work, id, json_object(), PE_JOB_LIFECYCLE);
    }
}

/* A number of at most 9 digits, or -1. */
static long small_number(const char *s)
{
    long n = 0;

    if (s == NULL || s[0] == '\0' || strlen(s) > 9 || strspn(s, "0123456789") != strlen(s))
        return -1;
    for (; *s; s++)
        n = n * 10 + (*s - '0');
    return n;
}

/* The v2 list's page: limit (1..LIST_PAGE_MAX, LIST_PAGE_MAX if absent)
 * and nextToken (what x-next-token said). -1 after a 400. */
static int page_of(pe_http_request *req, size_t *limit, size_t *offset)
{
    const char *l = pe_http_query(req, "limit"), *t = pe_http_query(req, "nextToken");
    long lim = l ? small_number(l) : LIST_PAGE_MAX, off = t && t[0] ? small_number(t) : 0;

    if (lim < 1 || lim > LIST_PAGE_MAX || off < 0) {
        api_error(req, 400, "limit: 1 to 100; nextToken: as x-next-token said");
        return -1;
    }
    *limit = (size_t)lim;
    *offset = (size_t)off;
    return 0;
}

static void on_v2_sandboxes(pe_http_request *req, void *ud)
{
    pe_daemon *d = ud;
    cleanup_free char *did = NULL;
    struct call *c;
    size_t limit, offset;
    json_t *f;

    if (req->rest[0] != '\0') {
        api_error(req, 404, "not served here (docs/e2b.md)");
        return;
    }
    if ((did = authenticate(d, req, false, NULL)) == NULL || (f = list_filter(req)) == NULL)
        return;
    if (page_of(req, &limit, &offset) < 0) {
        json_decref(f);
        return;
    }
    c = pe_xcalloc(1, sizeof(*c));
    c->op = OP_LIST;
    c->filter = f;
    c->limit = limit;
    c->offset = offset;
    submit_call(d, req, did, c, list_work, NULL, NULL, PE_JOB_SHORT);
}

/* ---- envd: which sandbox, then the service ---- */

struct envd {
    char *did;
    char *method; /* after the service's prefix */
    int service;
};

enum { SVC_PROCESS, SVC_FS, SVC_FILES, SVC_HEALTH, SVC_INTERP };

static void fs_call(pe_daemon *d, pe_http_request *req, const char *did, const char *sandbox_id,
                    const char *method);
static void files_call(pe_daemon *d, pe_http_request *req, const char *did, const char *sandbox_id);

static void envd_found(pe_daemon *d, pe_http_request *req, const char *sandbox_id, void *ud)
{
    struct envd *e = ud;

    if (sandbox_id) {
        pe_err werr;

        pe_daemon_touch(d, sandbox_id);
        /* A frozen sandbox would hang the call: thaw it (a cgroup write,
         * quick enough for the loop thread, and only when paused). */
        if (pe_daemon_wake(d, sandbox_id, "e2b-envd", &werr) < 0)
            pe_log_warn("e2b: resume %s: %s", sandbox_id, werr.msg);
        switch (e->service) {
        case SVC_PROCESS:
            pe__e2b_process(d, req, e->did, sandbox_id, e->method);
            break;
        case SVC_FS:
            fs_call(d, req, e->did, sandbox_id, e->method);
            break;
        case SVC_FILES:
            files_call(d, req, e->did, sandbox_id);
            break;
        case SVC_INTERP:
            pe__e2b_interp(d, req, e->did, sandbox_id);
            break;
        default:
            pe_http_respond(req, 204, NULL, "", 0, NULL);
        }
    }
    free(e->did);
    free(e->method);
    free(e);
}

struct xfer {
    int fd;    /* the upload's body, or the download's file */
    char *did; /* a node credential's caller, checked (and spent) in the head */
};

static void envd_request(pe_daemon *d, pe_http_request *req, int service)
{
    const char *id = pe_http_header(req, "E2b-Sandbox-Id");
    struct xfer *x = service == SVC_FILES ? pe_http_data(req) : NULL;
    struct envd *e;
    char *did;

    if (id == NULL || id[0] == '\0' || strlen(id) > 100) {
        pe__e2b_connect_error(req, "invalid_argument",
                              "envd requests name their sandbox in E2b-Sandbox-Id");
        return;
    }
    if (x && x->did)
        did = pe_steal_ptr(&x->did);
    else if ((did = envd_caller(d, req)) == NULL)
        return;
    if (d->draining) {
        free(did);
        pe__e2b_connect_error(req, "unavailable", "the daemon is shutting down");
        return;
    }
    e = pe_xcalloc(1, sizeof(*e));
    e->did = did;
    e->method = pe_xstrdup(req->rest);
    e->service = service;
    pe__term_find_sandbox(d, req, did, id, envd_found, e);
}

static void on_process(pe_http_request *req, void *ud)
{
    envd_request(ud, req, SVC_PROCESS);
}

static void on_filesystem(pe_http_request *req, void *ud)
{
    envd_request(ud, req, SVC_FS);
}

static void on_files(pe_http_request *req, void *ud)
{
    if (req->rest[0] != '\0') {
        pe__e2b_connect_error(req, "not_found", "no such envd path");
        return;
    }
    envd_request(ud, req, SVC_FILES);
}

static void on_health(pe_http_request *req, void *ud)
{
    if (req->rest[0] != '\0') {
        pe__e2b_connect_error(req, "not_found", "no such envd path");
        return;
    }
    envd_request(ud, req, SVC_HEALTH);
}

/* The code interpreter's paths (e2b-interp.c); without a sandbox they are
 * no path of ours (not the web page's 405). */
static void on_interpreter(pe_http_request *req, void *ud)
{
    if (pe_http_header(req, "E2b-Sandbox-Id") == NULL) {
        api_error(req, 404, "not found");
        return;
    }
    envd_request(ud, req, SVC_INTERP);
}

/* ---- running a helper command in a sandbox (worker threads) ---- */

/* ---- sandboxes on remote providers ---- */

int pe__e2b_remote_row(pe_daemon *d, const char *sandbox_id, pe_store_sandbox *sb, pe_err *err)
{
    pe_store *s = pe_daemon_store(d, err);
    pe_err e;

    memset(sb, 0, sizeof(*sb));
    if (s == NULL)
        return -1;
    pe_err_clear(&e);
    if (pe_store_sandbox_get(s, sandbox_id, sb, &e) < 0)
        return 0; /* the local path says what is wrong */
    if (pe_sandbox_is_remote(sb))
        return 1;
    pe_store_sandbox_clear(sb);
    return 0;
}

/* The helper command started where sandbox sb runs, through its provider
 * (the same argv: a remote sandbox's own shell resolves its paths). */
static int run_start_remote(pe_daemon *d, const pe_store_sandbox *sb, struct pe__e2b_run *r,
                            pe_provider_proc *rp, pe_err *err)
{
    pe_provider_exec_opts o = {.argv = (char *const *)r->argv, .stdin_pipe = r->in_fd >= 0};
    pe_store *s = pe_daemon_store(d, err);

    if (s == NULL)
        return -1;
    if (o.stdin_pipe && !(pe_sandbox_caps(&d->sx, sb) & PE_CAP_STDIN))
        return pe_err_set(err, PE_ENOTCAP, 0, "not supported by %s: %s", sb->backend,
                          pe_provider_cap_name(PE_CAP_STDIN));
    return pe_sandbox_exec_start(&d->sx, s, sb, &o, rp, err);
}

/* Copy in_fd to the process's stdin while reading its output (no
 * deadlock on full pipes), until it exits. A sandbox on a remote provider
 * runs it through the provider (lib/sandbox), its stream's fds read the
 * same way. */
int pe__e2b_run_in(pe_daemon *d, struct pe__e2b_run *r, pe_err *err)
{
    pe_proc_opts opts = {.argv = (char **)r->argv, .capture = true};
    pe_proc p = {.stdin_fd = -1, .stdout_fd = -1, .stderr_fd = -1, .pidfd = -1};
    pe_provider_proc rp = {
        .stdin_fd = -1, .stdout_fd = -1, .stderr_fd = -1, .pty_fd = -1, .status_fd = -1};
    pe_store_sandbox sb;
    char buf[65536];
    size_t in_have = 0, in_off = 0, err_max = 4096;
    bool in_eof = r->in_fd < 0, out_eof = false, err_eof = false, too_big = false;
    int remote, rc, *in, out_fd, err_fd;

    r->out = pe_xcalloc(1, 1);
    r->errout = pe_xcalloc(1, 1);
    if ((remote = pe__e2b_remote_row(d, r->sandbox_id, &sb, err)) < 0)
        return -1;
    if (remote) {
        rc = run_start_remote(d, &sb, r, &rp, err);
        pe_store_sandbox_clear(&sb);
        if (rc < 0)
            return -1;
        in = &rp.stdin_fd, out_fd = rp.stdout_fd, err_fd = rp.stderr_fd;
    } else {
        if (pe_runtime_exec_start(&d->rt, r->sandbox_id, &opts, &p, err) < 0)
            return -1;
        in = &p.stdin_fd, out_fd = p.stdout_fd, err_fd = p.stderr_fd;
    }
    out_eof = out_fd < 0;
    err_eof = err_fd < 0;
    if (in_eof && *in >= 0) {
        close(*in);
        *in = -1;
    }
    while (!out_eof || !err_eof) {
        struct pollfd fds[3] = {{.fd = out_eof ? -1 : out_fd, .events = POLLIN},
                                {.fd = err_eof ? -1 : err_fd, .events = POLLIN},
                                {.fd = *in, .events = POLLOUT}};
        if (poll(fds, 3, -1) < 0 && errno != EINTR)
            break;
        for (int i = 0; i < 2; i++) {
            if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t n = read(fds[i].fd, buf, sizeof(buf));
            char **dst = i ? &r->errout : &r->out;
            size_t *len = i ? &r->err_len : &r->out_len, max = i ? err_max : r->out_max;
            if (n <= 0) {
                *(i ? &err_eof : &out_eof) = n == 0 || errno != EINTR;
                continue;
            }
            if (*len + (size_t)n > max) {
                too_big = too_big || i == 0;
                continue; /* read and dropped: the process never blocks */
            }
            *dst = pe_xrealloc(*dst, *len + (size_t)n + 1);
            memcpy(*dst + *len, buf, (size_t)n);
            *len += (size_t)n;
            (*dst)[*len] = '\0';
        }
        if (*in >= 0 && (fds[2].revents & (POLLOUT | POLLERR | POLLHUP))) {
            static _Thread_local char ibuf[65536];
            if (in_off == in_have && !in_eof) {
                ssize_t n = read(r->in_fd, ibuf, sizeof(ibuf));
                in_eof = n <= 0;
                in_have = n > 0 ? (size_t)n : 0;
                in_off = 0;
            }
            if (in_off < in_have) {
                ssize_t n = write(*in, ibuf + in_off, in_have - in_off);
                if (n > 0)
                    in_off += (size_t)n;
                else if (errno != EAGAIN && errno != EINTR)
                    in_eof = true, in_off = in_have;
            }
            if (in_eof && in_off == in_have) {
                close(*in);
                *in = -1;
            }
        }
    }
    if (*in >= 0) {
        close(*in);
        *in = -1;
    }
    rc = remote ? pe_provider_proc_wait(&rp, &r->code, err) : pe_proc_wait(&p, &r->code, err);
    if (remote)
        pe_provider_proc_close(&rp);
    else
        pe_proc_close(&p);
    if (rc < 0)
        return -1;
    if (too_big)
        return pe_err_set(err, PE_XRPC_ETOOBIG, 0, "more than %zu bytes", r->out_max);
    return 0;
}

void pe__e2b_run_clear(struct pe__e2b_run *r)
{
    free(r->out);
    free(r->errout);
    r->out = r->errout = NULL;
}

/* ---- the filesystem service (Connect unary, JSON) ---- */

/* A path as envd takes it: absolute, or relative to the user's home. */
static char *envd_path(const char *p, pe_err *err)
{
    if (p == NULL || p[0] == '\0' || strlen(p) > PATH_MAX_LEN || strlen(p) != strcspn(p, "\n"))
        return pe_err_set(err, PE_EINVAL, 0, "path: a non-empty path without newlines"), NULL;
    if (p[0] == '/')
        return pe_xstrdup(p);
    return pe_xasprintf("/root/%s", p);
}

/* One entry per line from the helper: type, size, mode (octal), owner,
 * group, mtime, path. The shell's stat is busybox's or coreutils'. */
static const char STAT_FMT[] = "%F|%s|%a|%U|%G|%Y|%n";

static json_t *entry_of(const char *line)
{
    const char *f[7];
    size_t n = 0;
    const char *p = line;
    char *end;
    const char *type;
    json_t *o;

    while (n < 6 && (f[n] = p) && (p = strchr(p, '|')))
        p++, n++;
    if (n < 6 || p == NULL)
        return NULL;
    f[6] = p;
    if (strncmp(f[0], "directory", 9) == 0)
        type = "FILE_TYPE_DIRECTORY";
    else if (strncmp(f[0], "regular", 7) == 0)
        type = "FILE_TYPE_FILE";
    else if (strncmp(f[0], "symbolic link", 13) == 0)
        type = "FILE_TYPE_SYMLINK";
    else
        type = "FILE_TYPE_UNSPECIFIED";
    const char *slash = strrchr(f[6], '/');
    unsigned long mode = strtoul(f[2], &end, 8);
    time_t mt = (time_t)strtoll(f[5], &end, 10);
    struct tm tm;
    char when[32], perms[11];
    gmtime_r(&mt, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    perms[0] = type[10] == 'D' ? 'd' : type[10] == 'S' ? 'l' : '-';
    for (int i = 0; i < 9; i++)
        perms[1 + i] = (mode >> (8 - i)) & 1 ? "rwxrwxrwx"[i] : '-';
    perms[10] = '\0';
    o = json_pack("{s:s,s:s,s:s,s:i,s:s,s:s#,s:s#,s:s}", "name", slash ? slash + 1 : f[6], "type",
                  type, "path", f[6], "mode", (int)mode, "permissions", perms, "owner", f[3],
                  (size_t)(f[4] - f[3] - 1), "group", f[4], (size_t)(f[5] - f[4] - 1),
                  "modifiedTime", when);
    /* size is an int64: proto3 JSON writes it as a string */
    json_object_set_new(o, "size", json_sprintf("%lld", strtoll(f[1], &end, 10)));
    return o;
}

struct fsop {
    pe_http_request *req;
    char *sandbox_id, *method;
    json_t *in;
};

/* ---- the filesystem service of a sandbox on a remote provider ----
 *
 * Through the provider interface (lib/sandbox): ListDir from its file
 * listing, Stat from its parent's, Remove from its file removal, MakeDir
 * as `mkdir -p` through its exec (the interface has no call of its own);
 * Move runs the same helper as a local sandbox's, through its exec. What
 * the provider lacks answers "not supported by NAME: CAPABILITY". The
 * interface knows no owner, group or time of a file: those are left out. */

#define REMOTE_LIST_MAX 10000 /* entries of one remote ListDir */

static json_t *entry_remote(const char *dir, const pe_provider_dirent *e)
{
    size_t dl = strlen(dir);
    cleanup_free char *path =
        strcmp(e->name, "/") == 0
            ? pe_xstrdup("/")
            : pe_xasprintf("%.*s/%s", (int)(dl && dir[dl - 1] == '/' ? dl - 1 : dl), dir, e->name);
    unsigned mode = e->mode & 0777;
    char perms[11];
    json_t *o;

    if (mode == 0)
        mode = e->is_dir ? 0755 : 0644; /* the provider did not say */
    perms[0] = e->is_dir ? 'd' : '-';
    for (int i = 0; i < 9; i++)
        perms[1 + i] = (mode >> (8 - i)) & 1 ? "rwxrwxrwx"[i] : '-';
    perms[10] = '\0';
    o = json_pack("{s:s,s:s,s:s,s:i,s:s}", "name", e->name, "type",
                  e->is_dir ? "FILE_TYPE_DIRECTORY" : "FILE_TYPE_FILE", "path", path, "mode",
                  (int)mode, "permissions", perms);
    json_object_set_new(o, "size", json_sprintf("%llu", (unsigned long long)e->size));
    return o;
}

/* dir's entries down to depth levels, appended to entries. */
static int list_remote(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb, const char *dir,
                       long depth, json_t *entries, pe_err *err)
{
    pe_provider_dirent *ents = NULL;
    size_t n = 0;
    int r = 0;

    if (pe_sandbox_file_list(&d->sx, s, sb, dir, &ents, &n, err) < 0)
        return -1;
    for (size_t i = 0; i < n && r == 0; i++) {
        json_t *e;
        if (strcmp(ents[i].name, ".") == 0 || strcmp(ents[i].name, "..") == 0)
            continue;
        if (json_array_size(entries) >= REMOTE_LIST_MAX) {
            r = pe_err_set(err, PE_XRPC_ETOOBIG, 0, "more than %d entries", REMOTE_LIST_MAX);
            break;
        }
        e = entry_remote(dir, &ents[i]);
        json_array_append_new(entries, e);
        if (ents[i].is_dir && depth > 1)
            r = list_remote(d, s, sb, json_string_value(json_object_get(e, "path")), depth - 1,
                            entries, err);
    }
    free(ents);
    return r;
}

/* path's entry, from its parent's listing: NULL and PE_ENOENT if absent. */
static json_t *stat_remote(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb, const char *path,
                           pe_err *err)
{
    cleanup_free char *parent = pe_xstrdup(path);
    char *slash;
    size_t len = strlen(parent);
    pe_provider_dirent *ents = NULL;
    size_t n = 0;
    json_t *found = NULL;

    while (len > 1 && parent[len - 1] == '/')
        parent[--len] = '\0';
    if (strcmp(parent, "/") == 0) {
        pe_provider_dirent root = {.name = "/", .is_dir = true};
        return entry_remote("/", &root);
    }
    slash = strrchr(parent, '/');
    *slash = '\0';
    if (pe_sandbox_file_list(&d->sx, s, sb, parent[0] ? parent : "/", &ents, &n, err) < 0) {
        if (err->code == PE_ENOENT)
            pe_err_set(err, PE_ENOENT, 0, "path '%s' does not exist", path);
        return NULL;
    }
    for (size_t i = 0; i < n && found == NULL; i++)
        if (strcmp(ents[i].name, slash + 1) == 0)
            found = entry_remote(parent[0] ? parent : "/", &ents[i]);
    free(ents);
    if (found == NULL)
        pe_err_set(err, PE_ENOENT, 0, "path '%s' does not exist", path);
    return found;
}

static json_t *mkdir_remote(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb, const char *path,
                            pe_err *err)
{
    char *const argv[] = {(char *)"mkdir", (char *)"-p", (char *)path, NULL};
    pe_provider_exec_opts o = {.argv = argv, .timeout = 60};
    pe_provider_exec_result res;
    json_t *e = stat_remote(d, s, sb, path, err);

    if (e) {
        json_decref(e);
        pe_err_set(err, PE_EEXIST, 0, "path '%s' already exists", path);
        return NULL;
    }
    if (err->code != PE_ENOENT)
        return NULL;
    pe_err_clear(err);
    if (pe_sandbox_exec(&d->sx, s, sb, &o, 4096, &res, err) < 0)
        return NULL;
    if (res.exit_code != 0)
        pe_err_set(err, PE_EINVAL, 0, "MakeDir %s: %.200s", path, res.err_len ? res.err : "failed");
    pe_provider_exec_free(&res);
    return err->code == PE_OK ? stat_remote(d, s, sb, path, err) : NULL;
}

/* 1 once op was answered in job (a remote sandbox's call); 0: run the
 * helper command (a local sandbox, or Move). */
static int fs_remote(pe_daemon_job *job, pe_store *s, const char *m, const char *path, long depth)
{
    pe_store_sandbox sb;
    struct fsop *op = job->ud;
    json_t *e = NULL;
    int r = pe__e2b_remote_row(job->d, op->sandbox_id, &sb, &job->err);

    if (r <= 0 || strcmp(m, "Move") == 0) {
        if (r > 0)
            pe_store_sandbox_clear(&sb);
        return r < 0 ? 1 : 0;
    }
    if (strcmp(m, "ListDir") == 0) {
        json_t *entries = json_array();
        if (list_remote(job->d, s, &sb, path, depth, entries, &job->err) == 0)
            job->out = json_pack("{s:O}", "entries", entries);
        json_decref(entries);
    } else if (strcmp(m, "Stat") == 0 || strcmp(m, "MakeDir") == 0) {
        e = m[0] == 'S' ? stat_remote(job->d, s, &sb, path, &job->err)
                        : mkdir_remote(job->d, s, &sb, path, &job->err);
        if (e)
            job->out = json_pack("{s:o}", "entry", e);
    } else if (pe_sandbox_file_remove(&job->d->sx, s, &sb, path, true, &job->err) == 0) {
        job->out = json_object();
    }
    pe_store_sandbox_clear(&sb);
    return 1;
}

/* Errors stay in job->err, the job not failed: fs_after answers them (a
 * failed job without a request is logged as a background failure). */
static void fs_work(pe_daemon_job *job, pe_store *s)
{
    struct fsop *op = job->ud;
    const char *m = op->method;
    cleanup_free char *path = NULL, *dest = NULL, *depth = NULL;
    const char *argv[16] = {0};
    struct pe__e2b_run r = {.sandbox_id = op->sandbox_id, .in_fd = -1, .out_max = LIST_OUT_MAX};
    json_int_t dep = json_integer_value(json_object_get(op->in, "depth"));
    bool list = strcmp(m, "ListDir") == 0;

    path = envd_path(
        json_string_value(json_object_get(op->in, strcmp(m, "Move") == 0 ? "source" : "path")),
        &job->err);
    if (path == NULL) {
        return;
    }
    if (fs_remote(job, s, m, path, dep < 1 ? 1 : dep > 64 ? 64 : dep))
        return;
    if (strcmp(m, "Stat") == 0) {
        const char *a[] = {"stat", "-c", STAT_FMT, "--", path, NULL};
        memcpy(argv, a, sizeof(a));
    } else if (list) {
        depth = pe_xasprintf("%lld", (long long)(dep < 1 ? 1 : dep > 64 ? 64 : dep));
        const char *a[] = {"find", path, "-mindepth", "1",  "-maxdepth", depth, "-exec",
                           "stat", "-c", STAT_FMT,    "{}", "+",         NULL};
        memcpy(argv, a, sizeof(a));
    } else if (strcmp(m, "MakeDir") == 0) {
        /* envd: false (already_exists) for a directory that is there */
        const char *a[] = {
            "sh", "-c", "[ -e \"$1\" ] && exit 17; mkdir -p -- \"$1\" && stat -c \"$2\" -- \"$1\"",
            "sh", path, STAT_FMT,
            NULL};
        memcpy(argv, a, sizeof(a));
    } else if (strcmp(m, "Remove") == 0) {
        const char *a[] = {"sh", "-c", "[ -e \"$1\" ] || [ -L \"$1\" ] || exit 2; rm -rf -- \"$1\"",
                           "sh", path, NULL};
        memcpy(argv, a, sizeof(a));
    } else if (strcmp(m, "Move") == 0) {
        dest = envd_path(json_string_value(json_object_get(op->in, "destination")), &job->err);
        if (dest == NULL) {
            return;
        }
        const char *a[] = {
            "sh",
            "-c",
            "[ -e \"$1\" ] || exit 2; mv -- \"$1\" \"$2\" && stat -c \"$3\" -- \"$2\"",
            "sh",
            path,
            dest,
            STAT_FMT,
            NULL};
        memcpy(argv, a, sizeof(a));
    } else {
        pe_err_set(&job->err, PE_EUNSUP, 0,
                   "filesystem.Filesystem/%.40s is not served (docs/e2b.md)", m);
        return;
    }
    r.argv = argv;
    if (pe__e2b_run_in(job->d, &r, &job->err) < 0) {
        pe__e2b_run_clear(&r);
        return;
    }
    if (r.code == 17) {
        pe_err_set(&job->err, PE_EEXIST, 0, "path '%s' already exists", path);
    } else if (r.code != 0 && (list || strcmp(m, "Stat") == 0) && strstr(r.errout, "No such")) {
        pe_err_set(&job->err, PE_ENOENT, 0, "path '%s' does not exist", path);
    } else if (r.code == 2 && (strcmp(m, "Remove") == 0 || strcmp(m, "Move") == 0)) {
        pe_err_set(&job->err, PE_ENOENT, 0, "path '%s' does not exist", path);
    } else if (r.code != 0) {
        pe_err_set(&job->err, PE_EINVAL, 0, "%s %s: %.200s", m, path,
                   r.err_len ? r.errout : "failed");
    }
    if (job->err.code != PE_OK) {
        pe__e2b_run_clear(&r);
        return;
    }
    json_t *entries = json_array();
    for (char *line = r.out, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        json_t *e = entry_of(line);
        if (e)
            json_array_append_new(entries, e);
    }
    json_t *first = json_array_get(entries, 0);
    if (list)
        job->out = json_pack("{s:O}", "entries", entries);
    else if (first && (strcmp(m, "Stat") == 0 || strcmp(m, "Move") == 0))
        job->out = json_pack("{s:O}", "entry", first);
    else
        job->out = json_object(); /* Remove, MakeDir: nothing to say */
    json_decref(entries);
    pe__e2b_run_clear(&r);
}

static void fs_after(pe_daemon_job *job)
{
    struct fsop *op = job->ud;

    if (job->failed || job->err.code != PE_OK) {
        if (job->err.code == PE_ESYS)
            pe_log_warn("e2b fs %s: %s", op->method, job->err.msg);
        pe__e2b_connect_error(op->req, pe__e2b_connect_code(job->err.code),
                              job->err.code == PE_ESYS ? "internal error" : job->err.msg);
    } else {
        char *text = json_dumps(job->out ? job->out : json_object(), JSON_COMPACT);
        pe_http_respond(op->req, 200, "application/json", text, strlen(text), NULL);
        free(text);
    }
    free(op->sandbox_id);
    free(op->method);
    json_decref(op->in);
    free(op);
}

static void fs_call(pe_daemon *d, pe_http_request *req, const char *did, const char *sandbox_id,
                    const char *method)
{
    const char *ct = pe_http_header(req, "Content-Type");
    json_t *in;
    struct fsop *op;
    pe_daemon_job *job;
    pe_err why;

    if (strcmp(req->method, "POST") == 0 && strcmp(method, "WatchDir") == 0) {
        pe__e2b_watch(d, req, sandbox_id);
        return;
    }
    if (strcmp(req->method, "POST") != 0 || ct == NULL ||
        strncmp(ct, "application/json", 16) != 0) {
        pe__e2b_connect_error(req, "invalid_argument",
                              "Connect unary calls: POST with Content-Type application/json");
        return;
    }
    if (strcmp(method, "Stat") != 0 && strcmp(method, "ListDir") != 0 &&
        strcmp(method, "MakeDir") != 0 && strcmp(method, "Move") != 0 &&
        strcmp(method, "Remove") != 0) {
        pe__e2b_connect_error(req, "unimplemented",
                              "this method of filesystem.Filesystem is not served (docs/e2b.md)");
        return;
    }
    in = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(in)) {
        json_decref(in);
        pe__e2b_connect_error(req, "invalid_argument", "the request must be a JSON object");
        return;
    }
    op = pe_xcalloc(1, sizeof(*op));
    op->req = req;
    op->sandbox_id = pe_xstrdup(sandbox_id);
    op->method = pe_xstrdup(method);
    op->in = in;
    job = pe_daemon_job_new(d, NULL, did, fs_work);
    job->ud = op;
    job->after = fs_after;
    job->kind = PE_JOB_LONG;
    pe_http_defer(req);
    pe_err_clear(&why);
    if (pe_daemon_job_submit_why(job, &why) < 0) {
        pe__e2b_connect_error(req, pe__e2b_connect_code(why.code), why.msg);
        free(op->sandbox_id);
        free(op->method);
        json_decref(op->in);
        free(op);
    }
}

/* ---- /files: upload and download ---- */

static void xfer_free(void *p)
{
    struct xfer *x = p;

    if (x->fd >= 0)
        close(x->fd);
    free(x->did);
    free(x);
}

/* Uploads go to an unnamed file, not memory: up to FILE_MAX each. */
static void files_head(pe_http_request *req, void *ud)
{
    pe_daemon *d = ud;
    const char *ct = pe_http_header(req, "Content-Type");
    struct xfer *x;
    pe_err err;

    if (strcmp(req->method, "POST") != 0)
        return; /* no body to take */
    cleanup_free char *did = envd_caller(d, req);
    if (did == NULL)
        return; /* answered: nothing of an unknown caller is stored */
    x = pe_xcalloc(1, sizeof(*x));
    if (pe_cluster_is_node_request(req))
        x->did = pe_steal_ptr(&did); /* its nonce is spent: the handler takes it from here */
    x->fd = open(d->rt.data_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (x->fd < 0) {
        free(x);
        pe__e2b_connect_error(req, "internal", "no room for the upload");
        return;
    }
    pe_http_set_data(req, x, xfer_free);
    pe_err_clear(&err);
    if (pe_http_body_to_fd(req, x->fd, FILE_MAX,
                           ct && strncmp(ct, "multipart/form-data", 19) == 0 ? "file" : NULL,
                           &err) < 0) {
        pe__e2b_connect_error(req, "invalid_argument", err.msg);
        return;
    }
    pe_http_continue(req);
}

struct fileop {
    pe_http_request *req;
    char *sandbox_id, *path;
    bool upload;
    int fd;     /* upload: the body (the request's); download: the copy */
    char *data; /* download: the bytes */
    size_t len;
};

/* /files of a sandbox on a remote provider: its file read and write
 * (lib/sandbox). 1 once done (job->err says how), 0: a local sandbox. */
static int files_remote(pe_daemon_job *job, pe_store *s, struct fileop *op)
{
    pe_store_sandbox sb;
    cleanup_free char *data = NULL;
    struct stat st;
    int r = pe__e2b_remote_row(job->d, op->sandbox_id, &sb, &job->err);

    if (r <= 0)
        return r < 0;
    if (!op->upload) {
        (void)pe_sandbox_file_read(&job->d->sx, s, &sb, op->path, FILE_MAX, &op->data, &op->len,
                                   &job->err);
    } else if (op->fd < 0 || fstat(op->fd, &st) < 0 || (uint64_t)st.st_size > FILE_MAX) {
        pe_err_set(&job->err, PE_EINVAL, 0, "no upload to write");
    } else {
        size_t len = (size_t)st.st_size;
        data = pe_xmalloc(len ? len : 1);
        if (pread(op->fd, data, len, 0) != (ssize_t)len)
            pe_err_sys(&job->err, "read the upload");
        else
            (void)pe_sandbox_file_write(&job->d->sx, s, &sb, op->path, data, len, 0644, &job->err);
    }
    pe_store_sandbox_clear(&sb);
    return 1;
}

static void files_work(pe_daemon_job *job, pe_store *s)
{
    struct fileop *op = job->ud;
    struct pe__e2b_run r = {.sandbox_id = op->sandbox_id, .in_fd = -1, .out_max = FILE_MAX};

    static const char put[] = "mkdir -p -- \"$(dirname -- \"$1\")\" && cat > \"$1\"";
    static const char get[] = "[ -e \"$1\" ] || exit 2; [ -d \"$1\" ] && exit 21; cat -- \"$1\"";
    const char *argv[] = {"sh", "-c", op->upload ? put : get, "sh", op->path, NULL};

    if (files_remote(job, s, op))
        return;
    r.argv = argv;
    if (op->upload) {
        lseek(op->fd, 0, SEEK_SET);
        r.in_fd = op->fd;
    }
    if (pe__e2b_run_in(job->d, &r, &job->err) < 0) {
        pe__e2b_run_clear(&r);
        return;
    }
    if (r.code == 2)
        pe_err_set(&job->err, PE_ENOENT, 0, "path '%s' does not exist", op->path);
    else if (r.code == 21)
        pe_err_set(&job->err, PE_EINVAL, 0, "path '%s' is a directory", op->path);
    else if (r.code != 0)
        pe_err_set(&job->err, PE_EINVAL, 0, "%s: %.200s", op->path,
                   r.err_len ? r.errout : "failed");
    if (job->err.code == PE_OK && !op->upload)
        op->data = pe_steal_ptr(&r.out), op->len = r.out_len;
    pe__e2b_run_clear(&r);
}

static void files_after(pe_daemon_job *job)
{
    struct fileop *op = job->ud;

    if (job->failed || job->err.code != PE_OK) {
        unsigned st = status_of(&job->err);
        api_error(op->req, st, st == 500 ? "internal error" : job->err.msg);
    } else if (op->upload) {
        const char *slash = strrchr(op->path, '/');
        respond_json(op->req, 200,
                     json_pack("[{s:s,s:s,s:s}]", "path", op->path, "name",
                               slash ? slash + 1 : op->path, "type", "file"));
    } else {
        pe_http_respond(op->req, 200, "application/octet-stream", op->data, op->len, NULL);
    }
    free(op->data);
    free(op->sandbox_id);
    free(op->path);
    free(op);
}

static void files_call(pe_daemon *d, pe_http_request *req, const char *did, const char *sandbox_id)
{
    struct xfer *x = pe_http_data(req);
    struct fileop *op;
    pe_daemon_job *job;
    pe_err why;
    char *path;
    bool upload = strcmp(req->method, "POST") == 0;

    pe_err_clear(&why);
    if (!upload && strcmp(req->method, "GET") != 0) {
        api_error(req, 405, "GET or POST");
        return;
    }
    if (upload && req->form_part_missing) {
        api_error(req, 400, "a multipart upload needs a part named file");
        return;
    }
    if ((path = envd_path(pe_http_query(req, "path"), &why)) == NULL) {
        api_error(req, 400, why.msg);
        return;
    }
    op = pe_xcalloc(1, sizeof(*op));
    op->req = req;
    op->sandbox_id = pe_xstrdup(sandbox_id);
    op->path = path;
    op->upload = upload;
    op->fd = upload && x ? x->fd : -1;
    job = pe_daemon_job_new(d, NULL, did, files_work);
    job->ud = op;
    job->after = files_after;
    job->kind = PE_JOB_LONG;
    pe_http_defer(req);
    if (pe_daemon_job_submit_why(job, &why) < 0) {
        api_error(req, 503, why.msg);
        free(op->sandbox_id);
        free(op->path);
        free(op);
    }
}

/* ---- registration ---- */

int pe_daemon_register_e2b(pe_daemon *d, pe_err *err)
{
    boxes_load(d);
    if (pe_http_route(d->srv, "/sandboxes", 0, on_sandboxes, d, err) < 0 ||
        pe_http_route(d->srv, "/v2/sandboxes", 0, on_v2_sandboxes, d, err) < 0 ||
        pe_http_route(d->srv, "/process.Process/", ENVD_BODY_MAX, on_process, d, err) < 0 ||
        pe_http_route(d->srv, "/filesystem.Filesystem/", ENVD_BODY_MAX, on_filesystem, d, err) <
            0 ||
        pe_http_route(d->srv, "/files", 0, on_files, d, err) < 0 ||
        pe_http_route_head(d->srv, "/files", files_head, err) < 0 ||
        pe_http_route(d->srv, "/health", 0, on_health, d, err) < 0 ||
        pe_http_route(d->srv, "/execute", 0, on_interpreter, d, err) < 0 ||
        pe_http_route(d->srv, "/contexts", 0, on_interpreter, d, err) < 0)
        return -1;
    return 0;
}

void pe_daemon_e2b_shutdown(pe_daemon *d)
{
    pe__e2b_process_shutdown(d);
    pe__e2b_interp_shutdown(d);
    pe__e2b_watch_shutdown(d);
    while (boxes)
        box_forget(boxes->id);
}
