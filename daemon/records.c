/* Sandboxes as io.pocketenv.sandbox records in their owner's repository
 * (issue 18).
 *
 * For a user signed in with their handle (a sealed PDS session in
 * DATA/atproto, daemon/oauth.c), each sandbox gets a record key when it is
 * created, and its uri at://DID/io.pocketenv.sandbox/RKEY on the row. What
 * the record should say goes into the store's outbox (store-records.h)
 * from the worker that changed the sandbox; this file's writer then writes
 * it with the user's DPoP-bound session:
 *
 *   never written  createRecord with the chosen rkey; if the PDS has that
 *                  rkey already (we wrote it and died before noting it),
 *                  getRecord tells its cid and putRecord replaces it
 *   written        putRecord with swapRecord = the cid we wrote last; a
 *                  swap refused (changed elsewhere) reads the cid again and
 *                  writes ours: the daemon owns the sandbox's record
 *   deleted        deleteRecord (idempotent at the PDS), then the row goes
 *
 * Every write names the record by its rkey, so doing one twice (a crash
 * between the PDS's answer and the store's update) rewrites the same
 * record: nothing is ever created twice. The sandbox itself never waits
 * for its record: a PDS that is down only delays the write, retried with
 * a backoff (1 s doubling to 30 s), also after a daemon restart.
 *
 * The record has upstream's fields (reference §1.4 createSandbox): name,
 * description, vcpus, memory, disk, repo, topics, createdAt, and ports as
 * exposePort writes them (the exposed port numbers). Its base strongRef is
 * only written when the base came as an at:// URI whose cid we know.
 *
 * Threading: the queue is the store's; the writer is one background job
 * at a time (busy/dirty belong to the loop thread), woken by a 0.5 s timer
 * when something is due and at once by a change (pe_ev_post). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "core/log.h"
#include "core/util.h"
#include "oauth.h"
#include "pocketenv/atproto.h"
#include "pocketenv/store-ports.h"
#include "pocketenv/store-records.h"
#include "records.h"
#include "templates.h"

#define PASS_MAX 32          /* rows written per pass, then the next pass */
#define BACKOFF_MAX_MS 30000 /* a failing write is tried again at least this often */
#define RECORD_ERROR_MAX 300 /* of a PDS's error message kept on the row */
#define SWEEP_TICKS 60       /* of the 0.5 s timer: a pass every 30 s whatever happened */

static struct {
    bool busy;  /* a pass is queued or running */
    bool dirty; /* something may be due: the timer starts a pass */
    unsigned ticks;
} w;

void pe_daemon_record_tid(char rkey[14])
{
    static const char b32[] = "234567abcdefghijklmnopqrstuvwxyz";
    struct timespec ts;
    uint16_t clock_id = 0;
    uint64_t v;

    clock_gettime(CLOCK_REALTIME, &ts);
    if (getrandom(&clock_id, sizeof clock_id, 0) != (ssize_t)sizeof clock_id)
        abort(); /* the kernel's CSPRNG does not fail once booted */
    v = ((uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u) << 10 | (clock_id & 0x3ff);
    v &= ~(1ull << 63); /* the spec's top bit is 0 */
    for (int i = 12; i >= 0; i--) {
        rkey[i] = b32[v & 31];
        v >>= 5;
    }
    rkey[13] = '\0';
}

char *pe_daemon_record_new_uri(pe_daemon *d, const char *did)
{
    char rkey[14];

    if (!pe_daemon_oauth_signed_in(d, did))
        return NULL;
    pe_daemon_record_tid(rkey);
    return pe_xasprintf("at://%s/" PE_RECORD_COLLECTION "/%s", did, rkey);
}

/* The rkey of sb's uri when it is a record of its owner's repository. */
static const char *rkey_of(const pe_store_sandbox *sb)
{
    size_t n;

    if (sb->uri == NULL || strncmp(sb->uri, "at://", 5) != 0)
        return NULL;
    n = strlen(sb->owner_did);
    if (strncmp(sb->uri + 5, sb->owner_did, n) != 0 ||
        strncmp(sb->uri + 5 + n, "/" PE_RECORD_COLLECTION "/", sizeof PE_RECORD_COLLECTION + 1) !=
            0)
        return NULL;
    return sb->uri + 5 + n + sizeof PE_RECORD_COLLECTION + 1;
}

/* The record for sb as upstream writes it; no null anywhere (the
 * lexicon allows none). */
static json_t *record_of(pe_store *s, const pe_store_sandbox *sb)
{
    json_t *r = json_object(), *topics = sb->topics ? json_loads(sb->topics, 0, NULL) : NULL;
    pe_store_port *ports = NULL;
    size_t n = 0;
    pe_err err;

    json_object_set_new(r, "$type", json_string(PE_RECORD_COLLECTION));
    pe_daemon_set_str(r, "name", sb->name);
    pe_daemon_set_str(r, "description", sb->description);
    pe_daemon_set_str(r, "repo", sb->repo);
    if (sb->vcpus)
        json_object_set_new(r, "vcpus", json_integer(sb->vcpus));
    if (sb->memory)
        json_object_set_new(r, "memory", json_integer(sb->memory));
    if (sb->disk)
        json_object_set_new(r, "disk", json_integer(sb->disk));
    if (json_is_array(topics) && json_array_size(topics) > 0)
        json_object_set(r, "topics", topics);
    json_decref(topics);
    if (pe_store_port_list(s, sb->id, &ports, &n, &err) == 0 && n > 0) {
        json_t *list = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(list, json_integer(ports[i].port));
        json_object_set_new(r, "ports", list);
    }
    pe_store_port_list_free(ports, n);
    pe_daemon_set_time(r, "createdAt", sb->created_at);
    return r;
}

static void start_pass(pe_daemon *d);

/* Loop thread, posted by the worker that queued a change: a pass now
 * rather than at the next tick, so a record follows its sandbox at once. */
static void kick(void *ud)
{
    w.dirty = true;
    start_pass(ud);
}

/* The base strongRef the record of sandbox id was given at its create. */
static json_t *base_ref_of(pe_store *s, const char *id)
{
    pe_store_record had;
    json_t *v, *ref = NULL;
    pe_err err;

    if (pe_store_record_get(s, id, &had, &err) < 0)
        return NULL;
    if (had.want && (v = json_loads(had.want, 0, NULL)) != NULL) {
        ref = json_incref(json_object_get(v, "base"));
        json_decref(v);
    }
    pe_store_record_clear(&had);
    return ref;
}

void pe_daemon_record_sync(pe_daemon *d, pe_store *s, const char *id)
{
    pe_daemon_record_sync_base(d, s, id, NULL);
}

void pe_daemon_record_sync_base(pe_daemon *d, pe_store *s, const char *id, const json_t *base_ref)
{
    pe_store_sandbox sb;
    cleanup_free char *want = NULL;
    const char *rkey;
    pe_err err;
    json_t *r;

    if (pe_store_sandbox_get(s, id, &sb, &err) < 0)
        return;
    if ((rkey = rkey_of(&sb)) != NULL) {
        r = record_of(s, &sb);
        if (base_ref != NULL)
            json_object_set(r, "base", (json_t *)base_ref);
        else
            json_object_set_new(r, "base", base_ref_of(s, sb.id)); /* NULL: none */
        want = json_dumps(r, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(r);
        if (want == NULL || pe_store_record_want(s, sb.id, sb.owner_did, rkey, want, &err) < 0)
            pe_log_warn("record of sandbox %s: %s", sb.id, want ? err.msg : "out of memory");
        else
            pe_ev_post(d->loop, kick, d);
    }
    pe_store_sandbox_clear(&sb);
}

void pe_daemon_record_forget(pe_daemon *d, pe_store *s, const char *id)
{
    pe_err err;

    if (pe_store_record_want(s, id, NULL, NULL, NULL, &err) < 0)
        pe_log_warn("record of sandbox %s: %s", id, err.msg);
    else
        pe_ev_post(d->loop, kick, d);
}

json_t *pe_daemon_record_view(pe_store *s, const char *id)
{
    pe_store_record r;
    pe_err err;
    json_t *v;

    if (pe_store_record_get(s, id, &r, &err) < 0)
        return NULL;
    v = json_pack("{s:s, s:s+++, s:I}", "state",
                  r.gen == r.done_gen ? "synced"
                  : r.want            ? "pending"
                                      : "deleting",
                  "uri", "at://", r.did, "/" PE_RECORD_COLLECTION "/", r.rkey, "attempts",
                  (json_int_t)r.attempts);
    pe_daemon_set_str(v, "cid", r.cid);
    pe_daemon_set_str(v, "error", r.error);
    pe_store_record_clear(&r);
    return v;
}

/* ---- the writer ---- */

/* "status N: Error: message" of a PDS's answer, for the row. */
static void answer_error(const char *what, long status, const char *body, pe_err *err)
{
    json_t *v = json_loads(body ? body : "", 0, NULL);
    const char *e = json_string_value(json_object_get(v, "error"));
    const char *m = json_string_value(json_object_get(v, "message"));

    pe_err_set(err, status >= 500 ? PE_EREMOTE : PE_EINVAL, 0, "%s: status %ld%s%s%s%.*s", what,
               status, e ? ", " : "", e ? e : "", m ? ": " : "", RECORD_ERROR_MAX, m ? m : "");
    json_decref(v);
}

/* One XRPC call on the row's repository; *out the answer's JSON on 200. */
static int call(pe_daemon *d, const pe_store_record *r, const char *nsid, json_t *in, json_t **out,
                long *status, pe_err *err)
{
    cleanup_free char *body = NULL, *ans = NULL;
    char q[512];
    int rc;

    *out = NULL;
    if (in != NULL) {
        json_object_set_new(in, "repo", json_string(r->did));
        json_object_set_new(in, "collection", json_string(PE_RECORD_COLLECTION));
        json_object_set_new(in, "rkey", json_string(r->rkey));
        body = json_dumps(in, JSON_COMPACT);
        json_decref(in);
        if (body == NULL)
            return pe_err_set(err, PE_ESYS, 0, "%s: out of memory", nsid);
        rc = pe_daemon_oauth_pds_call(d, r->did, nsid, body, status, &ans, err);
    } else {
        snprintf(q, sizeof q, "%s?repo=%s&collection=" PE_RECORD_COLLECTION "&rkey=%s", nsid,
                 r->did, r->rkey); /* a DID and a TID need no escaping */
        rc = pe_daemon_oauth_pds_call(d, r->did, q, NULL, status, &ans, err);
    }
    if (rc < 0)
        return -1;
    if (*status == 200) {
        *out = json_loads(ans, 0, NULL);
        if (!json_is_object(*out)) {
            json_decref(*out);
            *out = NULL;
            return pe_err_set(err, PE_EREMOTE, 0, "%s: the PDS answered garbage", nsid);
        }
        return 0;
    }
    answer_error(nsid, *status, ans, err);
    return -1;
}

/* The cid the repository holds for the row's record now (NULL: none). */
static int current_cid(pe_daemon *d, const pe_store_record *r, char **cid, pe_err *err)
{
    json_t *out = NULL;
    long status = 0;

    *cid = NULL;
    if (call(d, r, "com.atproto.repo.getRecord", NULL, &out, &status, err) < 0)
        return status == 400 || status == 404 ? 0 : -1; /* RecordNotFound */
    if (json_string_value(json_object_get(out, "cid")))
        *cid = pe_xstrdup(json_string_value(json_object_get(out, "cid")));
    json_decref(out);
    return 0;
}

static int put(pe_daemon *d, const pe_store_record *r, const json_t *rec, const char *swap,
               char **cid, long *status, pe_err *err)
{
    json_t *in = json_pack("{s:O}", "record", rec), *out = NULL;

    if (swap)
        json_object_set_new(in, "swapRecord", json_string(swap));
    if (call(d, r, swap ? "com.atproto.repo.putRecord" : "com.atproto.repo.createRecord", in, &out,
             status, err) < 0)
        return -1;
    *cid = json_string_value(json_object_get(out, "cid"))
               ? pe_xstrdup(json_string_value(json_object_get(out, "cid")))
               : NULL;
    json_decref(out);
    return *cid ? 0 : pe_err_set(err, PE_EREMOTE, 0, "the PDS answered a write without a cid");
}

/* Write r's wanted state; *cid what was written (NULL after a delete). */
static int write_one(pe_daemon *d, pe_store *s, const pe_store_record *r, char **cid, pe_err *err)
{
    json_t *rec, *out = NULL;
    long status = 0;
    int rc;

    *cid = NULL;
    if (r->want == NULL) {
        rc = call(d, r, "com.atproto.repo.deleteRecord", json_object(), &out, &status, err);
        json_decref(out);
        return rc;
    }
    if ((rec = json_loads(r->want, 0, NULL)) == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "the queued record is not JSON");
    rc = put(d, r, rec, r->cid, cid, &status, err);
    if (rc < 0 && status >= 400) {
        /* Created already (createRecord: a crash between the PDS's answer
         * and ours; the PDS answers 500 for an rkey it has), or changed
         * since (putRecord: 400 InvalidSwap): what is there now, then ours
         * over it. */
        char *now = NULL;
        pe_err first = *err;
        if (current_cid(d, r, &now, err) == 0 && (now != NULL || r->cid != NULL)) {
            if (now)
                pe_store_record_set_cid(s, r->sandbox, now, NULL);
            rc = put(d, r, rec, now, cid, &status, err);
        } else if (now == NULL) {
            *err = first;
        }
        free(now);
    }
    json_decref(rec);
    return rc;
}

static void pass_work(pe_daemon_job *job, pe_store *s)
{
    pe_store_record *due = NULL;
    size_t n = 0;
    pe_err err;

    if (pe_store_record_due(s, pe_store_now_ms(), PASS_MAX, &due, &n, &err) < 0) {
        pe_log_warn("records: %s", err.msg);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const pe_store_record *r = &due[i];
        cleanup_free char *cid = NULL;
        pe_err e;

        pe_err_clear(&e);
        if (write_one(job->d, s, r, &cid, &e) == 0) {
            pe_log_info("event=record-%s sandbox=%s uri=at://%s/" PE_RECORD_COLLECTION "/%s",
                        r->want ? "written" : "deleted", r->sandbox, r->did, r->rkey);
            if (pe_store_record_written(s, r->sandbox, r->gen, cid, &err) < 0)
                pe_log_warn("records: %s", err.msg);
        } else {
            int64_t backoff = 1000LL << (r->attempts < 5 ? r->attempts : 5);
            if (backoff > BACKOFF_MAX_MS)
                backoff = BACKOFF_MAX_MS;
            pe_log_info("event=record-write-failed sandbox=%s attempts=%lld error=%s", r->sandbox,
                        (long long)r->attempts + 1, e.msg);
            if (pe_store_record_failed(s, r->sandbox, e.msg, pe_store_now_ms() + backoff, &err) < 0)
                pe_log_warn("records: %s", err.msg);
        }
    }
    pe_store_record_list_free(due, n);
    /* Rows left (more than a pass, or failed and waiting): look again. */
    if (pe_store_record_due(s, INT64_MAX, 1, &due, &n, &err) == 0 && n > 0)
        job->in = json_true();
    pe_store_record_list_free(due, n);
}

static void pass_after(pe_daemon_job *job)
{
    w.busy = false;
    if (job->in != NULL)
        w.dirty = true;
}

static void start_pass(pe_daemon *d)
{
    pe_daemon_job *job;

    if (w.busy || !w.dirty || d->draining)
        return;
    w.busy = true;
    w.dirty = false;
    job = pe_daemon_job_new(d, NULL, NULL, pass_work);
    job->after = pass_after;
    job->background = true;
    if (pe_daemon_job_submit(job) < 0) {
        w.busy = false;
        w.dirty = true;
    }
}

static void on_timer(pe_ev_timer *t, void *ud)
{
    (void)t;
    /* Every 30 s a look anyway: rows another daemon on the same store
     * queued, or this one's that a failed pass could not note. */
    if (++w.ticks % SWEEP_TICKS == 0)
        w.dirty = true;
    start_pass(ud);
}

int pe_daemon_records_start(pe_daemon *d, pe_err *err)
{
    uint64_t ns = 1000000000ull;

    w.busy = false;
    w.dirty = true; /* what a previous run left */
    return pe_ev_timer_start(d->loop, ns / 10, ns / 2, on_timer, d, err) == NULL ? -1 : 0;
}

/* ---- templates by at:// URI ---- */

#define TEMPLATE_CACHE_MAX 64
#define TEMPLATE_CACHE_TTL_S 600
#define TEMPLATE_DEPTH_MAX 3 /* base of a base of a base */

typedef struct cached_template {
    char uri[PE_ATPROTO_URL_MAX * 2]; /* as asked; "" when free */
    char ref_uri[PE_ATPROTO_URL_MAX * 2], cid[130];
    char name[128];
    time_t at;
} cached_template;

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static cached_template cache[TEMPLATE_CACHE_MAX];

static bool cache_get(const char *uri, char **name, json_t **ref)
{
    bool hit = false;
    time_t now = time(NULL);

    pthread_mutex_lock(&cache_lock);
    for (size_t i = 0; i < TEMPLATE_CACHE_MAX && !hit; i++) {
        cached_template *c = &cache[i];
        if (c->uri[0] && strcmp(c->uri, uri) == 0 && now - c->at < TEMPLATE_CACHE_TTL_S) {
            *name = pe_xstrdup(c->name);
            *ref = json_pack("{s:s, s:s}", "uri", c->ref_uri, "cid", c->cid);
            hit = true;
        }
    }
    pthread_mutex_unlock(&cache_lock);
    return hit;
}

static void cache_put(const char *uri, const char *name, const pe_atproto_record *rec)
{
    cached_template *slot = &cache[0];

    if (strlen(uri) >= sizeof slot->uri || strlen(name) >= sizeof slot->name)
        return;
    pthread_mutex_lock(&cache_lock);
    for (size_t i = 0; i < TEMPLATE_CACHE_MAX; i++)
        if (cache[i].uri[0] == '\0' || strcmp(cache[i].uri, uri) == 0 || cache[i].at < slot->at)
            slot = &cache[i];
    snprintf(slot->uri, sizeof slot->uri, "%s", uri);
    snprintf(slot->ref_uri, sizeof slot->ref_uri, "%s", rec->uri);
    snprintf(slot->cid, sizeof slot->cid, "%s", rec->cid);
    snprintf(slot->name, sizeof slot->name, "%s", name);
    slot->at = time(NULL);
    pthread_mutex_unlock(&cache_lock);
}

/* The base a record names: its name, or its record key, when this daemon
 * can run a base of that name; NULL otherwise. */
static const char *runnable_name(pe_daemon *d, const pe_atproto_record *rec, const char *rkey)
{
    const char *cands[] = {json_string_value(json_object_get(rec->value, "name")), rkey};

    for (size_t i = 0; i < PE_ARRAY_LEN(cands); i++) {
        cleanup_free char *n = NULL;
        pe_err e;
        if (cands[i] && pe_daemon_base_name(cands[i], &n, &e) == 0 &&
            pe_daemon_base_check(d, n, &e) == 0)
            return cands[i];
    }
    return NULL;
}

static int template_at(pe_daemon *d, const pe_atproto_cfg *net, const char *uri, int depth,
                       char **name, pe_atproto_record *top, pe_err *err)
{
    pe_atproto_record rec;
    pe_atproto_uri u;
    const char *n, *next;
    int rc;

    if (pe_atproto_uri_parse(uri, &u, err) < 0)
        return -1;
    if (strcmp(u.collection, PE_RECORD_COLLECTION) != 0)
        return pe_err_set(err, PE_EINVAL, 0, "%.200s is not a sandbox record (%s)", uri,
                          PE_RECORD_COLLECTION);
    if (pe_atproto_get_record(net, uri, &rec, err) < 0)
        return -1;
    if (depth == 0) { /* the record the user named: the new record's base */
        *top = rec;
        json_incref(top->value);
    }
    if ((n = runnable_name(d, &rec, u.rkey)) != NULL) {
        rc = pe_daemon_base_name(n, name, err);
    } else if ((next = json_string_value(
                    json_object_get(json_object_get(rec.value, "base"), "uri"))) != NULL &&
               depth + 1 < TEMPLATE_DEPTH_MAX) {
        rc = template_at(d, net, next, depth + 1, name, top, err);
    } else {
        const char *rn = json_string_value(json_object_get(rec.value, "name"));
        rc = pe_err_set(err, PE_EINVAL, 0,
                        "%.200s names no template this daemon can build (name %.64s%s)", uri,
                        rn ? rn : "none", next ? ", and its base is too deep" : "");
    }
    json_decref(rec.value);
    return rc;
}

int pe_daemon_record_template(pe_daemon *d, const char *uri, char **name, json_t **ref, pe_err *err)
{
    const pe_atproto_cfg *net = pe_daemon_oauth_net(d);
    pe_atproto_record top = {0};

    *name = NULL;
    *ref = NULL;
    if (net == NULL)
        return pe_err_set(err, PE_EINVAL, 0,
                          "base %.200s: this daemon reads no AT Protocol "
                          "records",
                          uri);
    if (cache_get(uri, name, ref))
        return 0;
    if (template_at(d, net, uri, 0, name, &top, err) < 0) {
        json_decref(top.value);
        if (err->code == PE_ENOENT) /* the record, not a sandbox: a bad base */
            err->code = PE_EINVAL;
        return pe_err_prefix(err, "base");
    }
    cache_put(uri, *name, &top);
    *ref = json_pack("{s:s, s:s}", "uri", top.uri, "cid", top.cid);
    json_decref(top.value);
    return 0;
}
