/* io.pocketenv.sandbox.getPreferences / putPreferences / getIntegrations
 * (reference §1.4).
 *
 * putPreferences takes an array of preference objects, each told apart by
 * its "$type" (io.pocketenv.sandbox.defs#<kind>, or "#<kind>"):
 * - sandboxDetailsPref: name, description, topics, repo, readme of the
 *   sandbox row. vcpus, memory and disk are checked and otherwise left
 *   alone: a made sandbox keeps the limits it was made with, and its row
 *   shows those (quotas count them; a row that said less than the
 *   sandbox holds would let a user past their memory quota).
 * - sandboxProviderPref: the credentials of a remote provider. No remote
 *   provider exists here, so storing them (sealed, as sent) and showing
 *   their redacted copy is the whole behaviour; the sandbox stays local.
 *   The redactions are computed here from the opened values (first 11, 24
 *   '*', last 3; a value of 14 characters or fewer becomes only '*'),
 *   never taken from the client. name "cloudflare" deletes the caller's
 *   credentials of the sandbox, as upstream does.
 * - variablePref and secretPref: set (add or replace) a variable or a
 *   secret (sealed), as the variable and secret methods would.
 * - filePref and volumePref: ignored, as upstream ignores them (the file
 *   and volume methods do this properly).
 * Every preference is checked before any is applied: a bad one is a 400
 * and nothing changes.
 *
 * getPreferences answers upstream's bare array: one sandboxProviderPref
 * (redacted fields only) per provider the caller stored, newest first.
 * getIntegrations answers the lexicon's array, always empty here.
 *
 * Threading: handlers on the loop thread, jobs on workers. */
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "daemon.h"
#include "records.h"
#include "sandbox-env.h"
#include "sandbox-find.h"

#define PREFS_MAX 64
#define SECRET_MAX (8 * 1024)
#define CRED_MAX 4096
#define DESCRIPTION_MAX 3000
#define TOPICS_MAX 20
#define PER_SANDBOX_MAX 64
#define TYPE_PREFIX "io.pocketenv.sandbox.defs"

enum kind { K_DETAILS, K_PROVIDER, K_VARIABLE, K_SECRET, K_IGNORED };

static const char *const PROVIDERS[] = {"daytona", "vercel", "cloudflare", "deno", "sprites",
                                        "modal",   "e2b",    "blaxel",     "hopx", "runloop"};

/* Sealed fields of sandboxProviderPref and the redacted field each shows as. */
static const struct {
    const char *field, *redacted;
} SEALED[] = {
    {"apiKey", "redactedApiKey"},
    {"modalTokenId", "redactedModalTokenId"},
    {"modalTokenSecret", "redactedModalTokenSecret"},
    {"e2bApiKey", "redactedE2bApiKey"},
    {"hopxApiKey", "redactedHopxApiKey"},
    {"runloopApiKey", "redactedRunloopApiKey"},
};
static const char *const PUBLIC[] = {"organizationId", "vercelProjectId", "vercelTeamId"};

static int kind_of(const json_t *p)
{
    static const struct {
        const char *name;
        int kind;
    } kinds[] = {{"sandboxDetailsPref", K_DETAILS}, {"sandboxProviderPref", K_PROVIDER},
                 {"variablePref", K_VARIABLE},      {"secretPref", K_SECRET},
                 {"filePref", K_IGNORED},           {"volumePref", K_IGNORED}};
    const char *t = json_string_value(json_object_get(p, "$type"));
    const char *hash;

    if (t == NULL || (hash = strchr(t, '#')) == NULL)
        return -1;
    if (hash != t && (size_t)(hash - t) != strlen(TYPE_PREFIX))
        return -1;
    if (hash != t && strncmp(t, TYPE_PREFIX, strlen(TYPE_PREFIX)) != 0)
        return -1;
    for (size_t i = 0; i < PE_ARRAY_LEN(kinds); i++)
        if (strcmp(hash + 1, kinds[i].name) == 0)
            return kinds[i].kind;
    return -1;
}

/* ---- checks (loop thread) ---- */

static int check_slug(const char *name, pe_err *err)
{
    size_t n = strlen(name);

    if (n == 0 || n > 50)
        return pe_err_set(err, PE_EINVAL, 0, "name must be 1 to 50 characters");
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c == '-' && i > 0)))
            return pe_err_set(err, PE_EINVAL, 0,
                              "name must be lower-case letters, digits and '-', starting with a "
                              "letter or digit");
    }
    return 0;
}

static int check_details(const json_t *p, pe_err *err)
{
    const char *name = json_string_value(json_object_get(p, "name"));
    const char *desc = json_string_value(json_object_get(p, "description"));
    const char *repo = json_string_value(json_object_get(p, "repo"));
    const json_t *topics = json_object_get(p, "topics"), *t;
    static const struct {
        const char *key;
        json_int_t min;
    } nums[] = {{"vcpus", 1}, {"memory", 1}, {"disk", 3}};
    static const struct {
        const char *key;
        bool nullable;
    } strs[] = {{"name", false}, {"description", true}, {"repo", true}, {"readme", false}};
    size_t i;

    /* Unions are "any" to the lexicon table: every type is checked here. */
    for (i = 0; i < PE_ARRAY_LEN(strs); i++) {
        const json_t *v = json_object_get(p, strs[i].key);
        if (v && !json_is_string(v) && !(strs[i].nullable && json_is_null(v)))
            return pe_err_set(err, PE_EINVAL, 0, "%s must be a string%s", strs[i].key,
                              strs[i].nullable ? " or null" : "");
    }
    if (name && check_slug(name, err) < 0)
        return -1;
    if (json_string_value(json_object_get(p, "readme")) &&
        strlen(json_string_value(json_object_get(p, "readme"))) > 2048)
        return pe_err_set(err, PE_EINVAL, 0, "readme longer than 2048 bytes");
    if (desc && strlen(desc) > DESCRIPTION_MAX)
        return pe_err_set(err, PE_EINVAL, 0, "description longer than %d bytes", DESCRIPTION_MAX);
    if (repo && !pe_daemon_repo_check(repo, err))
        return -1;
    if (topics && !json_is_null(topics)) {
        if (!json_is_array(topics) || json_array_size(topics) > TOPICS_MAX)
            return pe_err_set(err, PE_EINVAL, 0, "topics must be at most %d strings", TOPICS_MAX);
        json_array_foreach(
            topics, i,
            t) if (!json_is_string(t) ||
                   json_string_length(t) >
                       50) return pe_err_set(err, PE_EINVAL, 0,
                                             "each topic must be a string of at most 50 bytes");
    }
    for (i = 0; i < PE_ARRAY_LEN(nums); i++) {
        const json_t *v = json_object_get(p, nums[i].key);
        if (v && (!json_is_integer(v) || json_integer_value(v) < nums[i].min ||
                  json_integer_value(v) > 1024))
            return pe_err_set(err, PE_EINVAL, 0, "%s must be an integer in %lld..1024", nums[i].key,
                              (long long)nums[i].min);
    }
    return 0;
}

static int check_opens(pe_daemon *d, const char *what, const char *sealed, size_t max, pe_err *err)
{
    unsigned char *plain = NULL;
    size_t len = 0;
    int r = 0;

    if (pe_auth_unseal(d->auth, sealed, &plain, &len, err) < 0)
        return pe_err_prefix(err, "%s must be sealed to this server's public key", what);
    if (len == 0 || len > max || strlen((char *)plain) != len)
        r = pe_err_set(err, PE_EINVAL, 0, "%s must be 1 to %zu bytes of text", what, max);
    pe_auth_plain_free(plain);
    return r;
}

static int check_provider(pe_daemon *d, const json_t *p, pe_err *err)
{
    const char *name = json_string_value(json_object_get(p, "name"));
    bool known = false;

    for (size_t i = 0; name && i < PE_ARRAY_LEN(PROVIDERS); i++)
        known |= strcmp(name, PROVIDERS[i]) == 0;
    if (!known)
        return pe_err_set(err, PE_EINVAL, 0,
                          "sandboxProviderPref.name must be a provider: daytona, vercel, "
                          "cloudflare, deno, sprites, modal, e2b, blaxel, hopx or runloop");
    for (size_t i = 0; i < PE_ARRAY_LEN(SEALED); i++) {
        const json_t *v = json_object_get(p, SEALED[i].field);
        if (v && (!json_is_string(v) ||
                  check_opens(d, SEALED[i].field, json_string_value(v), CRED_MAX, err) < 0))
            return -1;
    }
    for (size_t i = 0; i < PE_ARRAY_LEN(PUBLIC); i++) {
        const json_t *v = json_object_get(p, PUBLIC[i]);
        if (v && (!json_is_string(v) || json_string_length(v) > 256))
            return pe_err_set(err, PE_EINVAL, 0, "%s must be a string of at most 256 bytes",
                              PUBLIC[i]);
    }
    return 0;
}

static int check_pref(pe_daemon *d, const json_t *p, size_t i, pe_err *err)
{
    const char *name = json_string_value(json_object_get(p, "name"));
    const char *value = json_string_value(json_object_get(p, "value"));
    int r = 0;

    switch (kind_of(p)) {
    case K_DETAILS:
        r = check_details(p, err);
        break;
    case K_PROVIDER:
        r = check_provider(d, p, err);
        break;
    case K_VARIABLE:
    case K_SECRET:
        if (name == NULL || value == NULL)
            r = pe_err_set(err, PE_EINVAL, 0, "name and value are required");
        else if (pe_daemon_check_env_name(kind_of(p) == K_SECRET ? "secret" : "variable", name,
                                          err) < 0)
            r = -1;
        else if (kind_of(p) == K_VARIABLE && strlen(value) > SECRET_MAX)
            r = pe_err_set(err, PE_EINVAL, 0, "value longer than %d bytes", SECRET_MAX);
        else if (kind_of(p) == K_SECRET)
            r = check_opens(d, "value", value, SECRET_MAX, err);
        break;
    case K_IGNORED:
        break;
    default:
        r = pe_err_set(err, PE_EINVAL, 0,
                       "$type must be io.pocketenv.sandbox.defs#sandboxDetailsPref, "
                       "#sandboxProviderPref, #variablePref, #secretPref, #filePref or "
                       "#volumePref");
    }
    return r < 0 ? pe_err_prefix(err, "preferences[%zu]", i) : 0;
}

/* ---- redaction ---- */

static char *redact(const char *plain)
{
    size_t n = strlen(plain);

    if (n <= 14)
        return pe_xstrdup("**************");
    return pe_xasprintf("%.11s************************%s", plain, plain + n - 3);
}

/* ---- jobs ---- */

static int apply_details(pe_daemon_job *job, pe_store *s, const pe_store_sandbox *sb,
                         const json_t *p)
{
    pe_store_sandbox up = *sb;
    cleanup_free char *topics = NULL;
    const json_t *v;

    if ((v = json_object_get(p, "name")))
        up.name = json_string_value(v);
    if ((v = json_object_get(p, "description")))
        up.description = json_string_value(v); /* null clears */
    if ((v = json_object_get(p, "repo")))
        up.repo = json_string_value(v);
    if ((v = json_object_get(p, "readme")))
        up.readme = json_string_value(v);
    if ((v = json_object_get(p, "topics"))) {
        topics = json_is_array(v) ? json_dumps(v, JSON_COMPACT) : NULL;
        up.topics = topics;
    }
    if (pe_store_sandbox_update(s, &up, &job->err) < 0) {
        if (job->err.code == PE_EEXIST)
            pe_err_set(&job->err, PE_EEXIST, 0, "you already have a sandbox named %s", up.name);
        return -1;
    }
    return 0;
}

static int apply_provider(pe_daemon_job *job, pe_store *s, const pe_store_sandbox *sb,
                          const json_t *p)
{
    const char *name = json_string_value(json_object_get(p, "name"));
    json_t *sealed = json_object(), *red = json_pack("{s:s}", "name", name);
    char *sj, *rj;
    int r;

    if (strcmp(name, "cloudflare") == 0) {
        json_decref(sealed);
        json_decref(red);
        return pe_store_cred_delete_all(s, sb->id, job->did, &job->err);
    }
    for (size_t i = 0; i < PE_ARRAY_LEN(SEALED); i++) {
        const char *v = json_string_value(json_object_get(p, SEALED[i].field));
        unsigned char *plain = NULL;
        size_t len = 0;
        if (v == NULL)
            continue;
        if (pe_auth_unseal(job->d->auth, v, &plain, &len, &job->err) < 0) {
            json_decref(sealed);
            json_decref(red);
            return -1;
        }
        char *shown = redact((char *)plain);
        json_object_set_new(sealed, SEALED[i].field, json_string(v));
        json_object_set_new(red, SEALED[i].redacted, json_string(shown));
        free(shown);
        pe_auth_plain_free(plain);
    }
    for (size_t i = 0; i < PE_ARRAY_LEN(PUBLIC); i++) {
        const json_t *v = json_object_get(p, PUBLIC[i]);
        if (v)
            json_object_set(red, PUBLIC[i], (json_t *)v);
    }
    sj = json_dumps(sealed, JSON_COMPACT | JSON_SORT_KEYS);
    rj = json_dumps(red, JSON_COMPACT | JSON_SORT_KEYS);
    r = pe_store_cred_put(s, sb->id, job->did, name, sj, rj, &job->err);
    free(sj);
    free(rj);
    json_decref(sealed);
    json_decref(red);
    return r;
}

static int apply_kv(pe_daemon_job *job, pe_store *s, const pe_store_sandbox *sb, int kind,
                    const json_t *p)
{
    const char *name = json_string_value(json_object_get(p, "name"));
    pe_store_kv kv;
    int64_t count = 0;

    if (pe_store_kv_get(s, kind, sb->id, name, &kv, &job->err) == 0) {
        pe_store_kv_clear(&kv);
    } else if (job->err.code != PE_ENOENT ||
               pe_store_res_count(s, kind, sb->id, &count, &job->err) < 0) {
        return -1;
    } else if (count >= PER_SANDBOX_MAX) {
        return pe_err_set(&job->err, PE_EINVAL, 0, "a sandbox has at most %d of each",
                          PER_SANDBOX_MAX);
    }
    pe_err_clear(&job->err);
    return pe_store_kv_put(s, kind, sb->id, name, json_string_value(json_object_get(p, "value")),
                           &job->err);
}

/* A new name that another of the caller's sandboxes has: refused before
 * anything is applied, so the request changes all or nothing. */
static bool name_taken(pe_daemon_job *job, pe_store *s, const pe_store_sandbox *sb,
                       const json_t *prefs)
{
    const json_t *p;
    size_t i;

    json_array_foreach(prefs, i, p)
    {
        const char *name = json_string_value(json_object_get(p, "name"));
        pe_store_sandbox other;

        if (kind_of(p) != K_DETAILS || name == NULL || strcmp(name, sb->name) == 0)
            continue;
        if (pe_store_sandbox_get_by_name(s, job->did, name, &other, &job->err) == 0) {
            pe_store_sandbox_clear(&other);
            pe_err_set(&job->err, PE_EEXIST, 0, "you already have a sandbox named %s", name);
            return true;
        }
        if (job->err.code != PE_ENOENT)
            return true;
        pe_err_clear(&job->err);
    }
    return false;
}

static void put_work(pe_daemon_job *job, pe_store *s)
{
    const json_t *prefs = json_object_get(job->in, "preferences"), *p;
    pe_store_sandbox sb;
    size_t i;
    int r = 0;

    if (!pe_daemon_job_sandbox(job, s, job->id, &sb))
        return;
    if (name_taken(job, s, &sb, prefs)) {
        pe_daemon_job_fail(job, &job->err, NULL);
        pe_store_sandbox_clear(&sb);
        return;
    }
    json_array_foreach(prefs, i, p)
    {
        switch (kind_of(p)) {
        case K_DETAILS:
            r = apply_details(job, s, &sb, p);
            break;
        case K_PROVIDER:
            r = apply_provider(job, s, &sb, p);
            break;
        case K_VARIABLE:
            r = apply_kv(job, s, &sb, PE_STORE_VARIABLE, p);
            break;
        case K_SECRET:
            r = apply_kv(job, s, &sb, PE_STORE_SECRET, p);
            break;
        default:
            break;
        }
        if (r < 0)
            break;
        /* A rename: later lookups go by id. */
        if (kind_of(p) == K_DETAILS) {
            char *id = pe_xstrdup(sb.id);
            pe_store_sandbox_clear(&sb);
            r = pe_store_sandbox_get(s, id, &sb, &job->err);
            free(id);
            if (r < 0)
                break;
        }
    }
    if (r < 0)
        pe_daemon_job_fail(job, &job->err, NULL);
    else
        job->out = json_object();
    if (r == 0)
        pe_daemon_record_sync(job->d, s, sb.id); /* its record says the new details */
    pe_store_sandbox_clear(&sb);
}

static void get_work(pe_daemon_job *job, pe_store *s)
{
    pe_store_cred *list = NULL;
    pe_store_sandbox sb;
    size_t n = 0;
    json_t *arr;

    if (!pe_daemon_job_sandbox(job, s, job->id, &sb))
        return;
    if (pe_store_cred_list(s, sb.id, job->did, &list, &n, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
        pe_store_sandbox_clear(&sb);
        return;
    }
    arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_loads(list[i].redacted, 0, NULL);
        if (!json_is_object(o)) {
            json_decref(o);
            continue;
        }
        json_object_set_new(o, "$type", json_string(TYPE_PREFIX "#sandboxProviderPref"));
        json_array_append_new(arr, o);
    }
    job->out = arr;
    pe_store_cred_list_free(list, n);
    pe_store_sandbox_clear(&sb);
}

/* getIntegrations: the lexicon's integrationsView, an array. This daemon
 * has no integrations (upstream's are stubs too: createIntegration does
 * nothing), so every sandbox of the caller has none; another user's
 * answers SandboxNotFound as everywhere. */
static void integrations_work(pe_daemon_job *job, pe_store *s)
{
    pe_store_sandbox sb;

    if (!pe_daemon_job_sandbox(job, s, job->id, &sb))
        return;
    job->out = json_array();
    pe_store_sandbox_clear(&sb);
}

/* ---- handlers ---- */

static void put_prefs(pe_xrpc_request *req, void *ud)
{
    pe_daemon *d = ud;
    cleanup_free char *did = pe_daemon_auth(d, req);
    const json_t *prefs = json_object_get(req->body, "preferences"), *p;
    const char *id = json_string_value(json_object_get(req->body, "sandboxId"));
    pe_daemon_job *job;
    pe_err err;
    size_t i;

    if (did == NULL)
        return;
    pe_err_clear(&err);
    if (!json_is_array(prefs) || json_array_size(prefs) > PREFS_MAX)
        pe_err_set(&err, PE_EINVAL, 0, "preferences must be an array of at most %d", PREFS_MAX);
    json_array_foreach(prefs, i, p) if (err.code == 0 && check_pref(d, p, i, &err) < 0) break;
    if (err.code) {
        pe_xrpc_respond_err(req, &err);
        return;
    }
    job = pe_daemon_job_new(d, req, did, put_work);
    job->id = pe_xstrdup(id ? id : "");
    job->in = json_deep_copy(req->body);
    pe_daemon_job_submit(job);
}

static void get_prefs(pe_xrpc_request *req, void *ud)
{
    pe_daemon *d = ud;
    cleanup_free char *did = pe_daemon_auth(d, req);
    const char *id = json_string_value(json_object_get(req->params, "id"));
    pe_daemon_job *job;

    if (did == NULL)
        return;
    job = pe_daemon_job_new(d, req, did, get_work);
    job->id = pe_xstrdup(id ? id : "");
    pe_daemon_job_submit(job);
}

static void get_integrations(pe_xrpc_request *req, void *ud)
{
    pe_daemon *d = ud;
    cleanup_free char *did = pe_daemon_auth(d, req);
    const char *id = json_string_value(json_object_get(req->params, "id"));
    pe_daemon_job *job;

    if (did == NULL)
        return;
    job = pe_daemon_job_new(d, req, did, integrations_work);
    job->id = pe_xstrdup(id ? id : "");
    pe_daemon_job_submit(job);
}

int pe_daemon_register_prefs(pe_daemon *d, pe_err *err)
{
    if (pe_xrpc_register(d->srv, "io.pocketenv.sandbox.getPreferences", get_prefs, d, err) < 0 ||
        pe_xrpc_register(d->srv, "io.pocketenv.sandbox.putPreferences", put_prefs, d, err) < 0 ||
        pe_xrpc_register(d->srv, "io.pocketenv.sandbox.getIntegrations", get_integrations, d, err) <
            0)
        return -1;
    return 0;
}
