/* Any daemon answers any call: XRPC calls about a sandbox that another
 * node runs are forwarded to that node (daemon/cluster.h, docs/cluster.md).
 *
 * The handlers of the calls that act on a running sandbox are wrapped at
 * start. The wrapper authenticates the caller (the user's token, as the
 * handler would), then a short job looks the sandbox up in the store:
 *
 *   not found, not the caller's, or this node's  -> the handler, as before
 *   another node's, lease running                -> a long job sends the
 *        same call there (libcurl) with a node credential carrying the
 *        caller's DID, and relays the answer as it came
 *   another node's, lease lapsed                 -> 503 NodeDown
 *
 * A call that arrives with a node credential is never forwarded again:
 * one hop, whatever the receiving node thinks of the row. Reads the store
 * alone answers (getSandbox, lists, variables...) are not wrapped: any
 * node answers them from the shared store.
 *
 * Threading: the wrapper and the after callbacks run on the loop; the
 * lookup and the HTTP call on pool threads, with copies of what they
 * need. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <curl/curl.h>
#include <sodium.h>

#include "cluster.h"
#include "core/log.h"
#include "core/util.h"
#include "pocketenv/store-backups.h"
#include "pocketenv/store-snapshots.h"
#include "snapshots.h"
#include "transfer.h"

/* An answer bigger than this is not relayed (exec's output is cut at
 * 1 MiB; nothing of the API comes near). */
#define FORWARD_MAX_BODY (16u * 1024 * 1024)

/* Where the call names its sandbox: its id (or name) in the parameters
 * or the body, or a resource of it whose row names the sandbox. */
enum where {
    IN_PARAMS,
    IN_BODY,
    SERVICE_IN_PARAMS,
    BACKUP_IN_BODY,
    SNAPSHOT_IN_PARAMS,
    VOLUME_IN_PARAMS,
    IN_BODY_VOLUME, /* body.volume.<field> */
};

struct wrapped {
    const char *nsid;
    enum where where;
    const char *field;
    pe_xrpc_handler fn; /* the handler it wraps */
    void *ud;
    pe_daemon *d;
};

/* Calls that touch the sandbox's processes, files or network: they must
 * run on its node. */
#define CALL(n, w, f)                                                                              \
    {                                                                                              \
        .nsid = (n), .where = (w), .field = (f)                                                    \
    }
static struct wrapped calls[] = {
    CALL("io.pocketenv.sandbox.exec", IN_PARAMS, "id"),
    CALL("io.pocketenv.sandbox.startSandbox", IN_PARAMS, "id"),
    CALL("io.pocketenv.sandbox.stopSandbox", IN_PARAMS, "id"),
    CALL("io.pocketenv.sandbox.deleteSandbox", IN_PARAMS, "id"),
    CALL("io.pocketenv.sandbox.exposePort", IN_PARAMS, "id"),
    CALL("io.pocketenv.sandbox.unexposePort", IN_PARAMS, "id"),
    CALL("io.pocketenv.sandbox.exposeVscode", IN_PARAMS, "id"),
    CALL("io.pocketenv.sandbox.createBackup", IN_PARAMS, "id"),
    /* the archive is in the data directory of the node that made it:
     * its sandbox's node, where the restore unpacks it */
    CALL("io.pocketenv.sandbox.restoreBackup", BACKUP_IN_BODY, "backupId"),
    CALL("io.pocketenv.sandbox.createSnapshot", IN_PARAMS, "id"),
    CALL("io.pocketenv.sandbox.forkSandbox", IN_PARAMS, "id"),
    CALL("io.pocketenv.sandbox.restoreSnapshot", IN_PARAMS, "id"),
    CALL("io.pocketenv.sandbox.getNetworkPolicy", IN_PARAMS, "id"),
    CALL("io.pocketenv.sandbox.putNetworkPolicy", IN_PARAMS, "id"),
    /* kept by the node's resolver and proxy, in its runtime */
    CALL("io.pocketenv.sandbox.getNetworkDenials", IN_PARAMS, "id"),
    CALL("io.pocketenv.sandbox.pushDirectory", IN_BODY, "sandboxId"),
    CALL("io.pocketenv.sandbox.pullDirectory", IN_BODY, "sandboxId"),
    CALL("io.pocketenv.sandbox.putTailscaleAuthKey", IN_BODY, "id"),
    /* installed at once in a running sandbox */
    CALL("io.pocketenv.sandbox.putSshKeys", IN_BODY, "id"),
    /* the layer is in the runtime of the node that took it: its size
     * there, and its removal (the list is the store's, any node) */
    CALL("io.pocketenv.sandbox.getSnapshot", SNAPSHOT_IN_PARAMS, "id"),
    CALL("io.pocketenv.sandbox.deleteSnapshot", SNAPSHOT_IN_PARAMS, "id"),
    /* a volume's data is in the data directory of the node that made it:
     * made on its sandbox's node, removed on its own */
    CALL("io.pocketenv.volume.addVolume", IN_BODY_VOLUME, "sandboxId"),
    CALL("io.pocketenv.volume.deleteVolume", VOLUME_IN_PARAMS, "id"),
    CALL("io.pocketenv.service.addService", IN_PARAMS, "sandboxId"),
    CALL("io.pocketenv.service.startService", SERVICE_IN_PARAMS, "serviceId"),
    CALL("io.pocketenv.service.stopService", SERVICE_IN_PARAMS, "serviceId"),
    CALL("io.pocketenv.service.restartService", SERVICE_IN_PARAMS, "serviceId"),
    CALL("io.pocketenv.service.deleteService", SERVICE_IN_PARAMS, "serviceId"),
    CALL("io.pocketenv.service.updateService", SERVICE_IN_PARAMS, "serviceId"),
    CALL("io.pocketenv.service.getServiceLogs", SERVICE_IN_PARAMS, "serviceId"),
};

enum verdict { LOCAL = 0, FORWARD, DOWN, NO_ROOM };

/* One forwarded call, from the wrapper to the relayed answer. */
struct fwd {
    pe_xrpc_request *req;
    struct wrapped *w;
    enum verdict verdict;
    char *node_id, *node_name, *address;
    /* the call, made on the loop */
    char *url, *body, *cred;
    bool post;
    char nonce[33];
    /* the answer, filled on the worker */
    long status;
    char *answer;
    size_t answer_len;
    char proof[65];
    bool proof_ok;
    char why[PE_ERR_MSG_MAX]; /* NO_ROOM's */
    const char *what;         /* what is on the node: the sandbox (NULL), "snapshot", "volume" */
};

static void fwd_free(struct fwd *f)
{
    free(f->node_id);
    free(f->node_name);
    free(f->address);
    free(f->url);
    free(f->body);
    free(f->cred);
    free(f->answer);
    free(f);
}

/* ---- which node: a short job ---- */

/* f's verdict for a thing on node id (another node's): FORWARD there, or
 * DOWN. 0, or -1 with the job failed. */
static int target_of(pe_store *s, const char *id, pe_cluster_target *t, pe_err *err);

static int to_node(pe_daemon_job *job, pe_store *s, struct fwd *f, const char *id)
{
    pe_cluster_target t;

    if (target_of(s, id, &t, &job->err) < 0)
        return pe_daemon_job_fail(job, &job->err, NULL);
    f->verdict = t.down ? DOWN : FORWARD;
    f->node_id = pe_steal_ptr(&t.node_id);
    f->node_name = pe_steal_ptr(&t.node_name);
    f->address = pe_steal_ptr(&t.address);
    return 0;
}

/* A snapshot's calls: to the node that has its layer. Another user's is
 * not found (the handler says so); one of no recorded node is here. */
static void locate_snapshot(pe_daemon_job *job, pe_store *s, struct fwd *f)
{
    pe_store_snapshot v = {0};
    pe_err ignored;

    if (pe_store_snapshot_get(s, job->did, job->id, &v, &ignored) == 0 && v.node &&
        strcmp(v.node, job->d->node) != 0) {
        f->what = "snapshot";
        to_node(job, s, f, v.node);
    }
    pe_store_snapshot_clear(&v);
}

static void locate_volume(pe_daemon_job *job, pe_store *s, struct fwd *f)
{
    pe_store_volume v = {0};
    pe_err ignored;

    if (pe_store_volume_get(s, job->did, job->id, &v, &ignored) == 0 && v.node &&
        strcmp(v.node, job->d->node) != 0) {
        f->what = "volume";
        to_node(job, s, f, v.node);
    }
    pe_store_volume_clear(&v);
}

static void locate_work(pe_daemon_job *job, pe_store *s)
{
    struct fwd *f = job->ud;
    pe_store_sandbox sb = {0};
    pe_store_service svc = {0};
    pe_store_backup b = {0};
    const char *sandbox = job->id;
    pe_err ignored;

    if (f->w->where == SNAPSHOT_IN_PARAMS) {
        locate_snapshot(job, s, f);
        return;
    }
    if (f->w->where == VOLUME_IN_PARAMS) {
        locate_volume(job, s, f);
        return;
    }
    if (f->w->where == SERVICE_IN_PARAMS) {
        if (pe_store_service_get(s, job->did, job->id, &svc, &ignored) < 0)
            return; /* the handler says NotFound */
        sandbox = svc.sandbox_id;
    }
    if (f->w->where == BACKUP_IN_BODY) {
        /* Another user's backup is not found, as by the handler. */
        if (pe_store_backup_get(s, job->did, job->id, &b, &ignored) < 0)
            return;
        sandbox = b.sandbox_id;
    }
    if (pe_store_sandbox_get(s, sandbox, &sb, &ignored) < 0 ||
        strcmp(sb.owner_did, job->did) != 0) {
        pe_store_sandbox_clear(&sb);
        if (pe_store_sandbox_get_by_name(s, job->did, sandbox, &sb, &ignored) < 0)
            goto out;
    }
    if (pe_daemon_is_mine(job->d, &sb) || sb.provider_id == NULL)
        goto out;
    to_node(job, s, f, sb.provider_id);
out:
    pe_store_sandbox_clear(&sb);
    pe_store_service_clear(&svc);
    pe_store_backup_clear(&b);
}

static void respond_json(pe_xrpc_request *req, unsigned status, const char *name,
                         const char *message)
{
    json_t *o = json_pack("{s:s,s:s}", "error", name, "message", message);
    char *text = json_dumps(o, JSON_COMPACT);

    pe_xrpc_respond_relayed(req, status, text, strlen(text));
    free(text);
    json_decref(o);
}

static void respond_down(struct fwd *f)
{
    char msg[512];

    if (f->what)
        snprintf(msg, sizeof(msg),
                 "node %s is down: the %s is there and cannot be reached until it is back",
                 f->node_name, f->what);
    else
        snprintf(msg, sizeof(msg),
                 "node %s is down: the sandbox runs there and cannot be reached until it is back",
                 f->node_name);
    respond_json(f->req, 503, "NodeDown", msg);
}

/* ---- the call there: a long job ---- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    struct fwd *f = ud;
    size_t n = size * nmemb;

    if (f->answer_len + n > FORWARD_MAX_BODY)
        return 0; /* libcurl fails the transfer */
    f->answer = pe_xrealloc(f->answer, f->answer_len + n + 1);
    memcpy(f->answer + f->answer_len, data, n);
    f->answer_len += n;
    f->answer[f->answer_len] = '\0';
    return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *ud)
{
    struct fwd *f = ud;
    size_t n = size * nmemb, hl = strlen(PE_CLUSTER_PROOF_HEADER);

    if (n > hl + 1 && strncasecmp(data, PE_CLUSTER_PROOF_HEADER, hl) == 0 && data[hl] == ':') {
        const char *v = data + hl + 1;
        size_t vl = n - hl - 1;

        while (vl && (*v == ' ' || *v == '\t'))
            v++, vl--;
        while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
            vl--;
        if (vl == 64) {
            memcpy(f->proof, v, 64);
            f->proof[64] = '\0';
        }
    }
    return n;
}

/* A node credential (Authorization's value) for path of f's node. */
static char *cred_for(pe_daemon_job *job, struct fwd *f, const char *path)
{
    char nonce[33];

    return pe_cluster_cred_mint(job->d->cluster, f->node_id, job->did, path, nonce);
}

/* pullDirectory: the /cp object it names, uploaded here, goes along. */
static int send_object(pe_daemon_job *job, struct fwd *f)
{
    json_t *body = f->body ? json_loads(f->body, 0, NULL) : NULL;
    const char *uuid = json_string_value(json_object_get(body, "uuid"));
    char there[PE_DAEMON_COPY_UUID_LEN + 1];
    char *cred;
    int r = 0;

    if (uuid) {
        cred = cred_for(job, f, "/cp");
        r = pe_daemon_copy_send(job->d, job->did, uuid, f->address, cred, there, &job->err);
        free(cred);
    }
    if (r == 1) {
        json_object_set_new(body, "uuid", json_string(there));
        free(f->body);
        f->body = json_dumps(body, JSON_COMPACT);
    }
    json_decref(body);
    return r < 0 ? -1 : 0;
}

/* pushDirectory: the object it made there comes here, where the client
 * downloads it (GET /cp/<uuid> of this node). */
static void fetch_object(pe_daemon_job *job, pe_store *s, struct fwd *f)
{
    json_t *o = json_loads(f->answer, 0, NULL);
    const char *uuid = json_string_value(json_object_get(o, "uuid"));
    cleanup_free char *path = uuid ? pe_xasprintf("/cp/%s", uuid) : NULL;
    char *cred;

    if (uuid) {
        cred = cred_for(job, f, path);
        if (pe_daemon_copy_fetch(job->d, s, job->did, uuid, f->address, cred, &job->err) < 0)
            pe_err_prefix(&job->err, "bring the copy from node %s", f->node_name);
        free(cred);
    }
    json_decref(o);
}

static void forward_work(pe_daemon_job *job, pe_store *s)
{
    struct fwd *f = job->ud;
    struct curl_slist *h = NULL;
    char want[65];
    CURLcode rc;
    CURL *c = curl_easy_init();
    cleanup_free char *auth = pe_xasprintf("Authorization: %s", f->cred);

    if (c == NULL) {
        pe_err_set(&job->err, PE_XRPC_EUPSTREAM, 0, "libcurl: no handle");
        pe_daemon_job_fail(job, &job->err, NULL);
        return;
    }
    if (strcmp(f->w->nsid, "io.pocketenv.sandbox.pullDirectory") == 0 && send_object(job, f) < 0) {
        pe_err_prefix(&job->err, "take the copy to node %s", f->node_name);
        curl_easy_cleanup(c);
        return;
    }
    h = curl_slist_append(h, auth);
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, "Expect:");
    curl_easy_setopt(c, CURLOPT_URL, f->url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    /* The other node bounds the call itself (--exec-timeout and the
     * like); this only ends a call to a node that hangs. */
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)((job->d->exec_timeout + 120) * 1000));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, f);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, f);
    if (f->post) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, f->body ? f->body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)(f->body ? strlen(f->body) : 0));
    }
    rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &f->status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK) {
        pe_err_set(&job->err, PE_XRPC_EUPSTREAM, 0, "node %s (%s) did not answer: %s", f->node_name,
                   f->address, curl_easy_strerror(rc));
        return;
    }
    pe_cluster_proof(job->d->cluster, f->nonce, want);
    f->proof_ok = sodium_memcmp(want, f->proof, 64) == 0;
    if (f->proof_ok && f->status == 200 && f->answer &&
        strcmp(f->w->nsid, "io.pocketenv.sandbox.pushDirectory") == 0)
        fetch_object(job, s, f);
}

static void forward_after(pe_daemon_job *job)
{
    struct fwd *f = job->ud;
    char msg[600];

    if (job->err.code != PE_OK) {
        pe_log_warn("event=forward_failed nsid=%s node=%s reason=\"%s\"", f->w->nsid, f->node_name,
                    job->err.msg);
        snprintf(msg, sizeof(msg), "node %s, which runs the sandbox, did not answer", f->node_name);
        respond_json(f->req, 502, "NodeUnreachable", msg);
    } else if (!f->proof_ok) {
        pe_log_warn("event=forward_unproven nsid=%s node=%s status=%ld", f->w->nsid, f->node_name,
                    f->status);
        snprintf(msg, sizeof(msg),
                 "node %s answered without proof of the cluster key: its answer is not relayed",
                 f->node_name);
        respond_json(f->req, 502, "NodeUnreachable", msg);
    } else {
        /* The other node may have changed the sandbox: its notification
         * can reach this node after the caller's next read, which must
         * not be answered from the read cache (read-cache.h). */
        pe_store_write_gen_bump();
        pe_xrpc_respond_relayed(f->req, (unsigned)f->status, f->answer, f->answer_len);
    }
    fwd_free(f);
}

/* The query string of req's parameters, as the client sent them. */
static char *query_of(json_t *params)
{
    const char *k;
    json_t *v;
    size_t len = 0, cap = 256;
    char *q = pe_xmalloc(cap);

    q[0] = '\0';
    json_object_foreach(params, k, v)
    {
        char num[32];
        const char *text = json_string_value(v);
        char *ek, *ev;
        size_t need;

        if (json_is_integer(v))
            snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(v)), text = num;
        else if (json_is_boolean(v))
            text = json_is_true(v) ? "true" : "false";
        if (text == NULL)
            continue;
        ek = curl_easy_escape(NULL, k, 0);
        ev = curl_easy_escape(NULL, text, 0);
        need = len + strlen(ek) + strlen(ev) + 3;
        if (need > cap) {
            cap = need * 2;
            q = pe_xrealloc(q, cap);
        }
        len += (size_t)sprintf(q + len, "%s%s=%s", len ? "&" : "?", ek, ev);
        curl_free(ek);
        curl_free(ev);
    }
    return q;
}

static void start_forward(pe_daemon *d, struct fwd *f, const char *did)
{
    pe_xrpc_request *req = f->req;
    pe_daemon_job *job;
    cleanup_free char *q = NULL;
    pe_err why;

    if (!pe_cluster_has_key(d->cluster)) {
        char msg[512];

        snprintf(msg, sizeof(msg),
                 "the sandbox runs on node %s and this daemon has no cluster key "
                 "(--cluster-key-file) to reach it: call that node",
                 f->node_name);
        respond_json(req, 503, "NodeUnreachable", msg);
        fwd_free(f);
        return;
    }
    q = query_of(req->params);
    f->url = pe_xasprintf("%s/xrpc/%s%s", f->address, req->nsid, q);
    f->post = req->kind == PE_XRPC_PROCEDURE;
    f->body = req->body ? json_dumps(req->body, JSON_COMPACT) : NULL;
    f->cred = pe_cluster_cred_mint(d->cluster, f->node_id, did, req->nsid, f->nonce);
    job = pe_daemon_job_new(d, NULL, did, forward_work);
    job->ud = f;
    job->after = forward_after;
    job->kind = PE_JOB_LONG;
    pe_err_clear(&why);
    if (pe_daemon_job_submit_why(job, &why) < 0) {
        pe_xrpc_respond_err(req, &why);
        fwd_free(f);
    }
}

static void locate_after(pe_daemon_job *job)
{
    struct fwd *f = job->ud;

    if (job->failed) {
        pe_xrpc_respond_err(f->req, &job->err);
        fwd_free(f);
        return;
    }
    switch (f->verdict) {
    case LOCAL:
        f->w->fn(f->req, f->w->ud);
        fwd_free(f);
        return;
    case DOWN:
        respond_down(f);
        fwd_free(f);
        return;
    case NO_ROOM:
        respond_json(f->req, 503, "NoNodeAvailable", f->why);
        fwd_free(f);
        return;
    case FORWARD:
        start_forward(job->d, f, job->did);
        return;
    }
}

/* ---- placement: createSandbox goes to the node with the most room ---- */

/* *t: node id's address and name, down if its lease lapsed or it never
 * registered (rows of an older node id). 0, or -1 with err. */
static int target_of(pe_store *s, const char *id, pe_cluster_target *t, pe_err *err)
{
    pe_store_node node = {0};

    memset(t, 0, sizeof(*t));
    if (pe_store_node_get(s, id, &node, err) < 0) {
        if (err->code != PE_ENOENT)
            return -1;
        pe_err_clear(err);
        t->node_name = pe_xstrdup(id);
        t->down = true;
        return 0;
    }
    t->node_id = pe_xstrdup(node.id);
    t->node_name = pe_xstrdup(node.name);
    t->address = pe_xstrdup(node.address);
    t->down = !pe_cluster_node_up(&node, pe_store_now_ms());
    pe_store_node_clear(&node);
    return 0;
}

/* A create from a snapshot: on the node that has its layer, whatever its
 * room (it is the only node that can make it). 0 here, 1 on *t (down,
 * maybe), 2 undecided (the snapshot has no recorded node: placed as any
 * create), -1 with err (PE_ESTATE: its node is draining). A snapshot not
 * found (or another user's) is here: the create answers SnapshotNotFound. */
static int place_on_snapshot(pe_daemon *d, pe_store *s, const char *did, const char *base,
                             pe_cluster_target *t, pe_err *err)
{
    pe_store_snapshot v = {0};
    pe_store_node node = {0};
    pe_err ignored;
    int r = 0;

    if (pe_store_snapshot_get(s, did, base + strlen(PE_SNAPSHOT_BASE), &v, &ignored) < 0)
        return 0;
    if (v.node == NULL) {
        r = 2;
    } else if (pe_store_node_get(s, v.node, &node, &ignored) == 0 && node.draining &&
               pe_cluster_node_up(&node, pe_store_now_ms())) {
        r = pe_err_set(err, PE_ESTATE, 0,
                       "snapshot %s is on node %s, which is draining: no new sandboxes there "
                       "until it is undrained",
                       v.name, node.name);
    } else if (strcmp(v.node, d->node) != 0) {
        r = target_of(s, v.node, t, err) < 0 ? -1 : 1;
    }
    pe_store_node_clear(&node);
    pe_store_snapshot_clear(&v);
    return r;
}

int pe_cluster_place(pe_daemon *d, pe_store *s, const char *did, const char *base,
                     pe_cluster_target *t, pe_err *err)
{
    cleanup_free char *id = NULL;
    int r;

    memset(t, 0, sizeof(*t));
    if (!pe_cluster_has_key(d->cluster))
        return 0; /* only this node is reachable */
    if (base && strncmp(base, PE_SNAPSHOT_BASE, strlen(PE_SNAPSHOT_BASE)) == 0 &&
        (r = place_on_snapshot(d, s, did, base, t, err)) != 2)
        return r;
    if (pe_store_node_place(s, pe_cluster_place_label(d->cluster), &id, err) < 0)
        return -1;
    if (strcmp(id, d->node) == 0)
        return 0;
    return target_of(s, id, t, err) < 0 ? -1 : 1;
}

static void place_work(pe_daemon_job *job, pe_store *s)
{
    struct fwd *f = job->ud;
    pe_cluster_target t;
    const char *base = job->id; /* createSandbox's base, copied on the loop */
    int r = pe_cluster_place(job->d, s, job->did, base, &t, &job->err);

    if (r < 0 && job->err.code == PE_ESTATE) {
        f->verdict = NO_ROOM;
        snprintf(f->why, sizeof(f->why), "%s", job->err.msg);
        pe_err_clear(&job->err);
    } else if (r < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
    } else if (r == 1) {
        /* only a snapshot's node can be down: placement takes live ones */
        f->what = t.down ? "snapshot" : NULL;
        f->verdict = t.down ? DOWN : FORWARD;
        f->node_id = pe_steal_ptr(&t.node_id);
        f->node_name = pe_steal_ptr(&t.node_name);
        f->address = pe_steal_ptr(&t.address);
    }
    pe_cluster_target_clear(&t);
}

static struct wrapped create_call = {.nsid = "io.pocketenv.sandbox.createSandbox"};

/* ---- the wrapper ---- */

static bool is_node_call(const pe_xrpc_request *req)
{
    return req->authorization &&
           strncmp(req->authorization, PE_CLUSTER_SCHEME, strlen(PE_CLUSTER_SCHEME)) == 0;
}

static void on_call(pe_xrpc_request *req, void *ud)
{
    struct wrapped *w = ud;
    pe_daemon *d = w->d;
    json_t *from = w->where == IN_BODY || w->where == BACKUP_IN_BODY ? req->body : req->params;
    const char *field = w->field, *ref;
    struct fwd *f;
    pe_daemon_job *job;
    char *did;
    pe_err why;

    if (w == &create_call)
        from = req->body, field = "base"; /* placed by its snapshot, if one */
    else if (w->where == IN_BODY_VOLUME)
        from = json_object_get(req->body, "volume");
    ref = json_string_value(json_object_get(from, field));

    /* Forwarded to us (one hop: ours to run), or nothing to look up.
     * Placement needs the key: without it only this node is reachable. */
    if (is_node_call(req) || (ref == NULL && w != &create_call) ||
        (w == &create_call && !pe_cluster_has_key(d->cluster))) {
        w->fn(req, w->ud);
        return;
    }
    did = pe_daemon_auth(d, req);
    if (did == NULL)
        return;
    f = pe_xcalloc(1, sizeof(*f));
    f->req = req;
    f->w = w;
    job = pe_daemon_job_new(d, NULL, did, w == &create_call ? place_work : locate_work);
    job->id = ref ? pe_xstrdup(ref) : NULL;
    job->ud = f;
    job->after = locate_after;
    free(did);
    pe_err_clear(&why);
    if (pe_daemon_job_submit_why(job, &why) < 0) {
        pe_xrpc_respond_err(req, &why);
        fwd_free(f);
        return;
    }
    pe_http_response_defer(req);
}

static int wrap(pe_daemon *d, struct wrapped *w, pe_err *err)
{
    if (pe_xrpc_handler_get(d->srv, w->nsid, &w->fn, &w->ud) < 0)
        return pe_err_set(err, PE_ENOENT, 0, "cluster: %s has no handler to wrap", w->nsid);
    w->d = d;
    return pe_xrpc_register(d->srv, w->nsid, on_call, w, err);
}

int pe_daemon_cluster_wrap(pe_daemon *d, pe_err *err)
{
    if (wrap(d, &create_call, err) < 0)
        return -1;
    for (size_t i = 0; i < PE_ARRAY_LEN(calls); i++)
        if (wrap(d, &calls[i], err) < 0)
            return -1;
    return 0;
}
