/* io.pocketenv.variable.*, io.pocketenv.secret.*, io.pocketenv.file.*:
 * add, list, get, update, delete (reference §1.5-§1.7).
 *
 * One implementation for the three kinds, told apart by a kind_desc.
 * Handlers run on the loop thread: authenticate, check names and values
 * (sealed ones are opened once, to refuse what would never open, and the
 * plaintext is wiped at once), copy the input and queue a job. Jobs run on
 * a worker with its own store and check ownership: a row or sandbox of
 * another user answers exactly as a missing one.
 *
 * Decisions (docs/design/resources.md):
 * - every row belongs to a sandbox: sandboxId is required on add;
 * - add never replaces: a taken name (path) is 409 AlreadyExists;
 * - add and update answer the new view ({variable: {...}}), as get does;
 * - secrets and files are stored as sent, sealed; listings never carry a
 *   secret's value or a file's content; the "redacted" input is ignored;
 * - a file added or updated while the sandbox runs is written into it at
 *   once (sandbox-env.c); deleting a file's row leaves the file in the
 *   sandbox. */
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "daemon.h"
#include "sandbox-env.h"
#include "sandbox-find.h"

#define VALUE_MAX (8 * 1024)      /* a variable's or secret's value */
#define CONTENT_MAX (1024 * 1024) /* a file's content, opened */
#define PER_SANDBOX_MAX 64        /* rows of one kind in one sandbox */
#define LIMIT_DEFAULT 20
#define LIMIT_MAX 100
#define SANDBOX_NOT_FOUND "SandboxNotFound"

typedef struct kind_desc {
    int kind;              /* PE_STORE_VARIABLE, ... */
    const char *ns;        /* "variable": the body's object, the view's key */
    const char *plural;    /* "variables": the list's key */
    const char *key;       /* "name" or "path" */
    const char *value;     /* "value" or "content" */
    bool sealed;           /* value arrives sealed and is never shown */
    const char *not_found; /* error name of a missing row */
} kind_desc;

static const kind_desc VARIABLE = {PE_STORE_VARIABLE, "variable", "variables",       "name",
                                   "value",           false,      "VariableNotFound"};
static const kind_desc SECRET = {PE_STORE_SECRET, "secret", "secrets",       "name",
                                 "value",         true,     "SecretNotFound"};
static const kind_desc FILE_ = {PE_STORE_FILE, "file", "files",       "path",
                                "content",     true,   "FileNotFound"};

/* ---- views ---- */

static json_t *view(const kind_desc *k, const pe_store_kv *kv)
{
    json_t *o = json_object();

    json_object_set_new(o, "id", json_string(kv->id));
    json_object_set_new(o, "sandboxId", json_string(kv->sandbox_id));
    json_object_set_new(o, k->key, json_string(kv->key));
    if (!k->sealed)
        json_object_set_new(o, k->value, json_string(kv->value));
    pe_daemon_set_time(o, "createdAt", kv->created_at);
    pe_daemon_set_time(o, "updatedAt", kv->updated_at);
    return o;
}

/* ---- checks on the loop thread ---- */

static int check_key(const kind_desc *k, const char *key, pe_err *err)
{
    if (k->kind == PE_STORE_FILE)
        return pe_daemon_check_sandbox_path("path", key, err);
    return pe_daemon_check_env_name(k->ns, key, err);
}

static int check_value(pe_daemon *d, const kind_desc *k, const char *key, const char *value,
                       pe_err *err)
{
    unsigned char *plain = NULL;
    size_t len = 0;
    int r = 0;

    if (!k->sealed) {
        if (strlen(value) > VALUE_MAX)
            return pe_err_set(err, PE_EINVAL, 0, "%s %s: value longer than %d bytes", k->ns, key,
                              VALUE_MAX);
        return 0;
    }
    if (pe_auth_unseal(d->auth, value, &plain, &len, err) < 0)
        return pe_err_prefix(err, "%s %s: %s must be sealed to this server's public key", k->ns,
                             key, k->value);
    if (k->kind == PE_STORE_SECRET && (len > VALUE_MAX || strlen((char *)plain) != len))
        r = pe_err_set(err, PE_EINVAL, 0,
                       "secret %s: value must be at most %d bytes of text without NUL", key,
                       VALUE_MAX);
    else if (len > CONTENT_MAX)
        r = pe_err_set(err, PE_EINVAL, 0, "file %s: content larger than %d bytes", key,
                       CONTENT_MAX);
    pe_auth_plain_free(plain);
    return r;
}

/* The {key, value} object of an add or update body, checked. */
static const json_t *checked_object(pe_daemon *d, const kind_desc *k, const json_t *body,
                                    pe_err *err)
{
    const json_t *o = json_object_get(body, k->ns);
    const char *key = json_string_value(json_object_get(o, k->key));
    const char *value = json_string_value(json_object_get(o, k->value));

    if (key == NULL || value == NULL) { /* the lexicon requires both */
        pe_err_set(err, PE_EINVAL, 0, "%s.%s and %s.%s are required", k->ns, k->key, k->ns,
                   k->value);
        return NULL;
    }
    if (check_key(k, key, err) < 0 || check_value(d, k, key, value, err) < 0)
        return NULL;
    return o;
}

/* ---- jobs ---- */

static bool lookup_row(const kind_desc *k, pe_daemon_job *job, pe_store *s, pe_store_kv *kv)
{
    if (pe_store_res_get(s, k->kind, job->did, job->id, kv, &job->err) == 0)
        return true;
    pe_daemon_job_fail(job, &job->err, job->err.code == PE_ENOENT ? k->not_found : NULL);
    return false;
}

/* A taken key answers 409 before anything is written into the sandbox
 * (the store would refuse it after, too late for the file). self is the
 * row being updated, NULL on add. */
static int key_free(const kind_desc *k, pe_daemon_job *job, pe_store *s, const char *sandbox_id,
                    const char *key, const char *self)
{
    pe_store_kv other;
    int taken;

    if (pe_store_kv_get(s, k->kind, sandbox_id, key, &other, &job->err) < 0)
        return job->err.code == PE_ENOENT ? 0 : pe_daemon_job_fail(job, &job->err, NULL);
    taken = self == NULL || strcmp(other.id, self) != 0;
    pe_store_kv_clear(&other);
    if (!taken)
        return 0;
    pe_err_set(&job->err, PE_EEXIST, 0, "the sandbox already has a %s %s %s", k->ns,
               k->kind == PE_STORE_FILE ? "at" : "named", key);
    return pe_daemon_job_fail(job, &job->err, NULL);
}

/* A file of a running sandbox goes in at once. A sandbox the runtime does
 * not run (stopped behind the store's back) gets it at its next start. */
static int place_now(const kind_desc *k, pe_daemon_job *job, const pe_store_sandbox *sb,
                     const char *path, const char *sealed)
{
    unsigned char *plain = NULL;
    size_t len = 0;
    int r;

    if (k->kind != PE_STORE_FILE || sb->status != PE_STORE_RUNNING)
        return 0;
    if (pe_auth_unseal(job->d->auth, sealed, &plain, &len, &job->err) < 0)
        return pe_daemon_job_fail(job, &job->err, NULL);
    if (pe_sandbox_is_remote(sb)) { /* through its provider (lib/sandbox) */
        pe_store *s = pe_daemon_store(job->d, &job->err);
        r = s ? pe_sandbox_file_write(&job->d->sx, s, sb, path, plain, len, 0, &job->err) : -1;
    } else {
        r = pe_daemon_sandbox_write_file(job->d, sb->id, path, plain, len, &job->err);
    }
    pe_auth_plain_free(plain);
    if (r < 0 && job->err.code == PE_ESTATE)
        return 0;
    return r < 0 ? pe_daemon_job_fail(job, &job->err, NULL) : 0;
}

static void reply_row(const kind_desc *k, pe_daemon_job *job, pe_store *s, const char *id)
{
    pe_store_kv kv;

    if (pe_store_res_get(s, k->kind, job->did, id, &kv, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, job->err.code == PE_ENOENT ? k->not_found : NULL);
        return;
    }
    job->out = json_pack("{s:o}", k->ns, view(k, &kv));
    pe_store_kv_clear(&kv);
}

static void add_work(const kind_desc *k, pe_daemon_job *job, pe_store *s)
{
    const char *key = json_string_value(json_object_get(job->in, k->key));
    const char *value = json_string_value(json_object_get(job->in, k->value));
    cleanup_free char *id = NULL;
    pe_store_sandbox sb;
    int64_t count = 0;

    if (!pe_daemon_job_sandbox(job, s, job->id, &sb))
        return;
    if (pe_store_res_count(s, k->kind, sb.id, &count, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
    } else if (count >= PER_SANDBOX_MAX) {
        pe_err_set(&job->err, PE_EINVAL, 0, "a sandbox has at most %d %s", PER_SANDBOX_MAX,
                   k->plural);
        pe_daemon_job_fail(job, &job->err, NULL);
    }
    if (job->failed || key_free(k, job, s, sb.id, key, NULL) < 0 ||
        place_now(k, job, &sb, key, value) < 0) {
        pe_store_sandbox_clear(&sb);
        return;
    }
    if (pe_store_res_add(s, k->kind, sb.id, key, value, &id, &job->err) < 0)
        pe_daemon_job_fail(job, &job->err, NULL);
    else
        reply_row(k, job, s, id);
    pe_store_sandbox_clear(&sb);
}

static void list_work(const kind_desc *k, pe_daemon_job *job, pe_store *s)
{
    int64_t limit = json_integer_value(json_object_get(job->in, "limit"));
    int64_t offset = json_integer_value(json_object_get(job->in, "offset"));
    pe_store_sandbox sb = {0};
    pe_store_kv *list = NULL;
    int64_t total = 0;
    size_t n = 0;
    json_t *arr;

    if (job->id && !pe_daemon_job_sandbox(job, s, job->id, &sb))
        return;
    if (pe_store_res_list(s, k->kind, job->did, job->id ? sb.id : NULL,
                          limit > 0 ? (limit > LIMIT_MAX ? LIMIT_MAX : limit) : LIMIT_DEFAULT,
                          offset, &list, &n, &total, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
        pe_store_sandbox_clear(&sb);
        return;
    }
    arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, view(k, &list[i]));
    job->out = json_pack("{s:o, s:I}", k->plural, arr, "total", (json_int_t)total);
    pe_store_kv_list_free(list, n);
    pe_store_sandbox_clear(&sb);
}

static void get_work(const kind_desc *k, pe_daemon_job *job, pe_store *s)
{
    pe_store_kv kv;

    if (!lookup_row(k, job, s, &kv))
        return;
    job->out = json_pack("{s:o}", k->ns, view(k, &kv));
    pe_store_kv_clear(&kv);
}

static void update_work(const kind_desc *k, pe_daemon_job *job, pe_store *s)
{
    const json_t *o = json_object_get(job->in, k->ns);
    const char *key = json_string_value(json_object_get(o, k->key));
    const char *value = json_string_value(json_object_get(o, k->value));
    const char *move = json_string_value(json_object_get(o, "sandboxId"));
    pe_store_sandbox sb;
    pe_store_kv kv;

    if (!lookup_row(k, job, s, &kv))
        return;
    if (!pe_daemon_job_sandbox(job, s, kv.sandbox_id, &sb)) {
        pe_store_kv_clear(&kv);
        return;
    }
    if (move && strcmp(move, sb.id) != 0 && strcmp(move, sb.name) != 0) {
        pe_err_set(&job->err, PE_EINVAL, 0, "a %s cannot move to another sandbox", k->ns);
        pe_daemon_job_fail(job, &job->err, NULL);
    } else if (key_free(k, job, s, sb.id, key, kv.id) == 0 &&
               place_now(k, job, &sb, key, value) == 0) {
        if (pe_store_res_update(s, k->kind, kv.id, key, value, &job->err) < 0)
            pe_daemon_job_fail(job, &job->err, job->err.code == PE_ENOENT ? k->not_found : NULL);
        else
            reply_row(k, job, s, kv.id);
    }
    pe_store_sandbox_clear(&sb);
    pe_store_kv_clear(&kv);
}

static void delete_work(const kind_desc *k, pe_daemon_job *job, pe_store *s)
{
    pe_store_kv kv;

    if (!lookup_row(k, job, s, &kv))
        return;
    if (pe_store_res_delete(s, k->kind, kv.id, &job->err) < 0)
        pe_daemon_job_fail(job, &job->err, job->err.code == PE_ENOENT ? k->not_found : NULL);
    else
        job->out = json_object();
    pe_store_kv_clear(&kv);
}

/* ---- handlers ---- */

/* The body a handler works from: a copy, with a secret's value sealed if
 * upstream's SDK sent it in plain text (its secret.update does). NULL
 * with err set if it cannot be. */
static json_t *input_of(pe_daemon *d, const kind_desc *k, const json_t *body, pe_err *err)
{
    json_t *in = json_deep_copy(body);

    if (k->kind == PE_STORE_SECRET &&
        pe_daemon_seal_if_plain(d, json_object_get(in, k->ns), k->value, VALUE_MAX, err) < 0) {
        json_decref(in);
        return NULL;
    }
    return in;
}

static void add_handler(const kind_desc *k, pe_xrpc_request *req, pe_daemon *d,
                        pe_daemon_work_fn work)
{
    cleanup_free char *did = pe_daemon_auth(d, req);
    json_t *in;
    const json_t *o = NULL;
    const char *sandbox = NULL;
    pe_err err;

    if (did == NULL)
        return;
    pe_err_clear(&err);
    in = input_of(d, k, req->body, &err);
    if (in)
        o = checked_object(d, k, in, &err);
    sandbox = json_string_value(json_object_get(o, "sandboxId"));
    if (o != NULL && (sandbox == NULL || sandbox[0] == '\0'))
        pe_err_set(&err, PE_EINVAL, 0, "%s.sandboxId is required", k->ns);
    if (o == NULL || sandbox == NULL || sandbox[0] == '\0') {
        json_decref(in);
        pe_xrpc_respond_err(req, &err);
        return;
    }
    pe_daemon_submit(d, req, did, work, sandbox, json_deep_copy(o));
    json_decref(in);
}

static void list_handler(const kind_desc *k, pe_xrpc_request *req, pe_daemon *d,
                         pe_daemon_work_fn work)
{
    cleanup_free char *did = pe_daemon_auth(d, req);
    const char *sandbox = json_string_value(json_object_get(req->params, "sandboxId"));

    if (did == NULL)
        return;
    pe_daemon_submit(d, req, did, work, sandbox, json_deep_copy(req->params));
}

/* get and delete: the row id is a parameter. */
static void by_id_handler(const kind_desc *k, pe_xrpc_request *req, pe_daemon *d,
                          pe_daemon_work_fn work)
{
    cleanup_free char *did = pe_daemon_auth(d, req);

    if (did == NULL)
        return;
    pe_daemon_submit(d, req, did, work, json_string_value(json_object_get(req->params, "id")),
                     NULL);
}

static void update_handler(const kind_desc *k, pe_xrpc_request *req, pe_daemon *d,
                           pe_daemon_work_fn work)
{
    cleanup_free char *did = pe_daemon_auth(d, req);
    json_t *in;
    pe_err err;

    if (did == NULL)
        return;
    pe_err_clear(&err);
    in = input_of(d, k, req->body, &err);
    if (in == NULL || checked_object(d, k, in, &err) == NULL) {
        json_decref(in);
        pe_xrpc_respond_err(req, &err);
        return;
    }
    pe_daemon_submit(d, req, did, work, json_string_value(json_object_get(req->body, "id")), in);
}

/* Per kind and operation: a work function and a handler that binds the
 * kind (pe_xrpc_handler and pe_daemon_work_fn carry no kind of their own). */
#define OP(kd, name, op)                                                                           \
    static void name##_##op##_work(pe_daemon_job *job, pe_store *s)                                \
    {                                                                                              \
        op##_work(&kd, job, s);                                                                    \
    }
#define HANDLER(kd, name, op, shape)                                                               \
    static void name##_##op(pe_xrpc_request *req, void *ud)                                        \
    {                                                                                              \
        shape##_handler(&kd, req, ud, name##_##op##_work);                                         \
    }
#define KIND(kd, name)                                                                             \
    OP(kd, name, add)                                                                              \
    OP(kd, name, list)                                                                             \
    OP(kd, name, get)                                                                              \
    OP(kd, name, update)                                                                           \
    OP(kd, name, delete)                                                                           \
    HANDLER(kd, name, add, add)                                                                    \
    HANDLER(kd, name, list, list)                                                                  \
    HANDLER(kd, name, get, by_id)                                                                  \
    HANDLER(kd, name, update, update)                                                              \
    HANDLER(kd, name, delete, by_id)

KIND(VARIABLE, var)
KIND(SECRET, sec)
KIND(FILE_, file)

int pe_daemon_register_resources(pe_daemon *d, pe_err *err)
{
    static const struct {
        const char *nsid;
        pe_xrpc_handler fn;
    } routes[] = {
        {"io.pocketenv.variable.addVariable", var_add},
        {"io.pocketenv.variable.getVariables", var_list},
        {"io.pocketenv.variable.getVariable", var_get},
        {"io.pocketenv.variable.updateVariable", var_update},
        {"io.pocketenv.variable.deleteVariable", var_delete},
        {"io.pocketenv.secret.addSecret", sec_add},
        {"io.pocketenv.secret.getSecrets", sec_list},
        {"io.pocketenv.secret.getSecret", sec_get},
        {"io.pocketenv.secret.updateSecret", sec_update},
        {"io.pocketenv.secret.deleteSecret", sec_delete},
        {"io.pocketenv.file.addFile", file_add},
        {"io.pocketenv.file.getFiles", file_list},
        {"io.pocketenv.file.getFile", file_get},
        {"io.pocketenv.file.updateFile", file_update},
        {"io.pocketenv.file.deleteFile", file_delete},
    };

    for (size_t i = 0; i < PE_ARRAY_LEN(routes); i++)
        if (pe_xrpc_register(d->srv, routes[i].nsid, routes[i].fn, d, err) < 0)
            return -1;
    return 0;
}
