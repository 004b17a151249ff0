/* Sandboxes on remote providers (sandbox.h): the operator's settings of
 * each provider, the credential a call uses, and the create.
 *
 * A remote provider is opened per call with the credential of the sandbox
 * it serves (the owner's, sent sealed at create or with putPreferences,
 * else the operator's): the key is unsealed into the adapter's copy, which
 * pe_provider_close wipes, so plaintext lives only as long as the call.
 * The base URL comes from the operator's file only. No log line or error
 * here quotes a key. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "core/fs.h"
#include "core/log.h"
#include "core/util.h"
#include "sandbox/sandbox-internal.h"

#define REMOTES_FILE_MAX (64 * 1024)
#define CRED_MAX 4096
#define PUBLIC_MAX 256

/* ---- the operator's file ---- */

static void remote_clear(pe_sandbox_remote *r)
{
    free(r->name);
    free(r->base_url);
    if (r->key)
        explicit_bzero(r->key, strlen(r->key));
    free(r->key);
    free(r->org);
    free(r->project);
    free(r->kubeconfig);
    free(r->preview_url);
    free(r->preview_ca_file);
    memset(r, 0, sizeof(*r));
}

void pe__sandboxes_remotes_clear(pe_sandboxes *sx)
{
    for (size_t i = 0; i < sx->n_remotes; i++)
        remote_clear(&sx->remotes[i]);
    sx->n_remotes = 0;
}

static int opt_str(const char *path, const char *name, json_t *o, const char *field, char **out,
                   pe_err *err)
{
    json_t *v = json_object_get(o, field);

    if (v == NULL)
        return 0;
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > CRED_MAX)
        return pe_err_set(err, PE_EINVAL, 0, "%s: %s.%s must be a non-empty string", path, name,
                          field);
    *out = pe_xstrdup(json_string_value(v));
    return 0;
}

static int opt_ms(const char *path, const char *name, json_t *o, const char *field, int64_t *out,
                  pe_err *err)
{
    json_t *v = json_object_get(o, field);

    if (v == NULL)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 3600000)
        return pe_err_set(err, PE_EINVAL, 0, "%s: %s.%s must be milliseconds, 1 to 3600000", path,
                          name, field);
    *out = json_integer_value(v);
    return 0;
}

static int opt_ports(const char *path, const char *name, json_t *o, pe_sandbox_remote *r,
                     pe_err *err)
{
    json_t *v = json_object_get(o, "ports"), *x;
    size_t i;

    if (v == NULL)
        return 0;
    if (!json_is_array(v) || json_array_size(v) > PE_SANDBOX_REMOTE_PORTS_MAX)
        return pe_err_set(err, PE_EINVAL, 0, "%s: %s.ports must be an array of at most %d ports",
                          path, name, PE_SANDBOX_REMOTE_PORTS_MAX);
    json_array_foreach(v, i, x)
    {
        if (!json_is_integer(x) || json_integer_value(x) < 1 || json_integer_value(x) > 65535)
            return pe_err_set(err, PE_EINVAL, 0, "%s: %s.ports: a port is 1 to 65535", path, name);
        r->ports[r->n_ports++] = (uint16_t)json_integer_value(x);
    }
    return 0;
}

static int load_one(const char *path, const char *name, json_t *o, pe_sandbox_remote *r,
                    pe_err *err)
{
    static const char *const known[] = {
        "url",        "key",   "org",        "project",      "timeoutMs", "createTimeoutMs",
        "kubeconfig", "ports", "previewUrl", "previewCaFile"};
    const pe_provider_ops *ops = pe_provider_lookup(name);
    const char *k;
    json_t *v;

    if (ops == NULL || strcmp(name, "local") == 0)
        return pe_err_set(err, PE_EINVAL, 0, "%s: '%s' is not a remote provider", path, name);
    if (!json_is_object(o))
        return pe_err_set(err, PE_EINVAL, 0, "%s: %s must be an object", path, name);
    json_object_foreach(o, k, v)
    {
        bool ok = false;
        for (size_t i = 0; i < PE_ARRAY_LEN(known); i++)
            ok |= strcmp(k, known[i]) == 0;
        if (!ok)
            return pe_err_set(err, PE_EINVAL, 0,
                              "%s: %s: unknown field '%.64s' (url, key, org, project, timeoutMs, "
                              "createTimeoutMs, kubeconfig, ports, previewUrl, previewCaFile)",
                              path, name, k);
    }
    r->name = pe_xstrdup(name);
    if (opt_str(path, name, o, "url", &r->base_url, err) < 0 ||
        opt_str(path, name, o, "key", &r->key, err) < 0 ||
        opt_str(path, name, o, "org", &r->org, err) < 0 ||
        opt_str(path, name, o, "project", &r->project, err) < 0 ||
        opt_ms(path, name, o, "timeoutMs", &r->timeout_ms, err) < 0 ||
        opt_ms(path, name, o, "createTimeoutMs", &r->create_timeout_ms, err) < 0 ||
        opt_str(path, name, o, "kubeconfig", &r->kubeconfig, err) < 0 ||
        opt_ports(path, name, o, r, err) < 0 ||
        opt_str(path, name, o, "previewUrl", &r->preview_url, err) < 0 ||
        opt_str(path, name, o, "previewCaFile", &r->preview_ca_file, err) < 0)
        return -1;
    /* the adapters whose preview host is a pattern of the sandbox's */
    if (r->preview_url && strcmp(name, "hopx") != 0 && strcmp(name, "runloop") != 0)
        return pe_err_set(err, PE_EINVAL, 0, "%s: %s.previewUrl: only hopx and runloop take one",
                          path, name);
    if (r->preview_url && strncmp(r->preview_url, "http://", 7) != 0 &&
        strncmp(r->preview_url, "https://", 8) != 0)
        return pe_err_set(err, PE_EINVAL, 0, "%s: %s.previewUrl must be http:// or https://", path,
                          name);
    /* CAs (PEM) the preview proxy trusts, besides the system's, for this
     * provider's https:// preview hosts only (a private or test CA vouches
     * for no other provider's hosts) */
    if (r->preview_ca_file && strcmp(name, "hopx") != 0 && strcmp(name, "runloop") != 0)
        return pe_err_set(err, PE_EINVAL, 0, "%s: %s.previewCaFile: only hopx and runloop take one",
                          path, name);
    if (r->preview_ca_file && r->preview_ca_file[0] != '/')
        return pe_err_set(err, PE_EINVAL, 0, "%s: %s.previewCaFile must be an absolute path", path,
                          name);
    if (r->preview_ca_file && access(r->preview_ca_file, R_OK) < 0)
        return pe_err_set(err, PE_ESYS, errno, "%s: %s.previewCaFile %s", path, name,
                          r->preview_ca_file);
    if (r->kubeconfig && strcmp(name, "kubernetes") != 0)
        return pe_err_set(err, PE_EINVAL, 0, "%s: %s.kubeconfig: only kubernetes takes one", path,
                          name);
    if (r->kubeconfig && r->kubeconfig[0] != '/')
        return pe_err_set(err, PE_EINVAL, 0, "%s: %s.kubeconfig must be an absolute path", path,
                          name);
    if (r->kubeconfig && access(r->kubeconfig, R_OK) < 0)
        return pe_err_set(err, PE_ESYS, errno, "%s: %s.kubeconfig %s", path, name, r->kubeconfig);
    /* a keyless adapter here takes only the operator's credential (see
     * pe__sandbox_remote_open): without one it could not run anything */
    if (ops->keyless && r->key == NULL && r->kubeconfig == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "%s: %s needs a kubeconfig or a key", path, name);
    if (r->base_url && strncmp(r->base_url, "http://", 7) != 0 &&
        strncmp(r->base_url, "https://", 8) != 0)
        return pe_err_set(err, PE_EINVAL, 0, "%s: %s.url must be http:// or https://", path, name);
    return 0;
}

int pe_sandboxes_load_remotes(pe_sandboxes *sx, const char *path, pe_err *err)
{
    cleanup_free char *text = NULL;
    struct stat st;
    json_error_t jerr;
    json_t *root, *o;
    const char *name;
    size_t len = 0;
    int r = 0;

    if (stat(path, &st) < 0)
        return pe_err_set(err, PE_ESYS, errno, "%s", path);
    /* it holds API keys: readable by its owner alone */
    if (st.st_mode & 077)
        return pe_err_set(err, PE_EINVAL, 0,
                          "%s holds credentials: make it readable by its owner only (chmod 600)",
                          path);
    if (pe_fs_read_file(path, REMOTES_FILE_MAX, &text, &len, err) < 0)
        return -1;
    root = json_loadb(text, len, 0, &jerr);
    explicit_bzero(text, len);
    if (!json_is_object(root)) {
        json_decref(root);
        return pe_err_set(err, PE_EINVAL, 0, "%s: not a JSON object (line %d)", path, jerr.line);
    }
    json_object_foreach(root, name, o)
    {
        if (sx->n_remotes == PE_SANDBOX_REMOTES_MAX) {
            r = pe_err_set(err, PE_EINVAL, 0, "%s: at most %d providers", path,
                           PE_SANDBOX_REMOTES_MAX);
            break;
        }
        if (pe_sandboxes_remote(sx, name) != NULL) {
            r = pe_err_set(err, PE_EINVAL, 0, "%s: %s given twice", path, name);
            break;
        }
        r = load_one(path, name, o, &sx->remotes[sx->n_remotes++], err);
        if (r < 0)
            break;
    }
    /* wipe the keys jansson holds before they go back to the allocator */
    json_object_foreach(root, name, o)
    {
        json_t *k = json_object_get(o, "key");
        if (json_is_string(k))
            explicit_bzero((char *)json_string_value(k), json_string_length(k));
    }
    json_decref(root);
    if (r < 0)
        pe__sandboxes_remotes_clear(sx);
    return r;
}

const pe_sandbox_remote *pe_sandboxes_remote(const pe_sandboxes *sx, const char *name)
{
    for (size_t i = 0; i < sx->n_remotes; i++)
        if (strcmp(sx->remotes[i].name, name) == 0)
            return &sx->remotes[i];
    return NULL;
}

/* ---- where a sandbox runs ---- */

bool pe_sandbox_is_remote(const pe_store_sandbox *sb)
{
    return sb->backend && sb->backend[0] && strcmp(sb->backend, "local") != 0;
}

unsigned pe_sandbox_caps(pe_sandboxes *sx, const pe_store_sandbox *sb)
{
    const pe_provider_ops *ops = pe_sandbox_is_remote(sb) ? pe_provider_lookup(sb->backend) : NULL;

    return ops ? ops->caps : pe_provider_caps(sx->local);
}

const char *pe_sandbox_remote_id(const pe_store_sandbox *sb)
{
    return pe_sandbox_is_remote(sb) ? sb->provider_id : sb->id;
}

/* ---- credentials ---- */

/* What upstream's createSandbox sends for each provider (reference §1.4),
 * and the field putPreferences' sandboxProviderPref keeps the key under. */
static const struct {
    const char *provider, *key, *stored, *org, *org_stored, *project;
} FIELDS[] = {
    {"daytona", "daytonaApiKey", "apiKey", "daytonaOrganizationId", "organizationId", NULL},
    {"vercel", "vercelApiToken", "apiKey", "vercelTeamId", "vercelTeamId", "vercelProjectId"},
    {"sprites", "spriteToken", "apiKey", NULL, NULL, NULL},
    {"deno", "denoDeployToken", "apiKey", NULL, NULL, NULL},
    {"e2b", "e2bApiKey", "e2bApiKey", NULL, NULL, NULL},
    {"hopx", "hopxApiKey", "hopxApiKey", NULL, NULL, NULL},
    {"runloop", "runloopApiKey", "runloopApiKey", NULL, NULL, NULL},
};
/* Every field a stored credential may keep its key under. */
static const char *const KEY_FIELDS[] = {"apiKey", "e2bApiKey", "hopxApiKey", "runloopApiKey"};

/* Upstream's redaction (putPreferences shows the same). */
static char *redact(const char *plain, size_t n)
{
    if (n <= 14)
        return pe_xstrdup("**************");
    return pe_xasprintf("%.11s************************%s", plain, plain + n - 3);
}

/* Modal's token is two sealed values, modalTokenId and modalTokenSecret
 * (upstream's fields), kept sealed as they came; the adapter gets them
 * joined as "ID:SECRET" (stored_creds). */
static const char *const MODAL_FIELDS[] = {"modalTokenId", "modalTokenSecret"};

static int modal_creds_from_request(pe_sandboxes *sx, const json_t *in, char **sealed,
                                    char **redacted, pe_err *err)
{
    json_t *sj = json_object(), *rj = json_pack("{s:s}", "name", "modal");

    for (size_t i = 0; i < PE_ARRAY_LEN(MODAL_FIELDS); i++) {
        const char *v = json_string_value(json_object_get(in, MODAL_FIELDS[i]));
        unsigned char *plain = NULL;
        size_t len = 0;
        char *shown, rname[64];
        if (v == NULL || strlen(v) > CRED_MAX ||
            pe_auth_unseal(sx->auth, v, &plain, &len, err) < 0 || len == 0 || len > CRED_MAX ||
            memchr(plain, '\0', len) != NULL || (i == 0 && memchr(plain, ':', len) != NULL)) {
            pe_auth_plain_free(plain);
            json_decref(sj);
            json_decref(rj);
            return pe_err_set(err, PE_EINVAL, 0,
                              "modal needs modalTokenId and modalTokenSecret, each sealed to this "
                              "server's public key (1 to %d bytes of text)",
                              CRED_MAX);
        }
        shown = redact((const char *)plain, len);
        pe_auth_plain_free(plain);
        snprintf(rname, sizeof(rname), "redacted%c%s", 'M', MODAL_FIELDS[i] + 1);
        json_object_set_new(sj, MODAL_FIELDS[i], json_string(v));
        json_object_set_new(rj, rname, json_string(shown));
        free(shown);
    }
    *sealed = json_dumps(sj, JSON_COMPACT | JSON_SORT_KEYS);
    *redacted = json_dumps(rj, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(sj);
    json_decref(rj);
    return 0;
}

/* A stored Modal token, unsealed and joined "ID:SECRET" into *key (NULL
 * when sj holds none). */
static int modal_stored_key(pe_sandboxes *sx, json_t *sj, unsigned char **key, pe_err *err)
{
    unsigned char *part[2] = {NULL, NULL};
    size_t len[2] = {0, 0};
    int r = 0;

    for (size_t i = 0; i < 2 && r == 0; i++) {
        const char *v = json_string_value(json_object_get(sj, MODAL_FIELDS[i]));
        if (v == NULL || pe_auth_unseal(sx->auth, v, &part[i], &len[i], err) < 0)
            r = -1;
    }
    /* sodium_malloc: the caller frees it as any unsealed key (sodium_free) */
    if (r == 0 && (*key = sodium_malloc(len[0] + len[1] + 2)) == NULL)
        r = pe_err_set(err, PE_ESYS, ENOMEM, "modal credential: out of locked memory");
    if (r == 0) {
        memcpy(*key, part[0], len[0]);
        (*key)[len[0]] = ':';
        memcpy(*key + len[0] + 1, part[1], len[1]);
        (*key)[len[0] + len[1] + 1] = '\0';
    }
    pe_auth_plain_free(part[0]);
    pe_auth_plain_free(part[1]);
    return r;
}

int pe_sandbox_creds_from_request(pe_sandboxes *sx, const char *backend, const void *json_in,
                                  char **sealed, char **redacted, pe_err *err)
{
    const json_t *in = json_in;
    const pe_sandbox_remote *op = pe_sandboxes_remote(sx, backend);
    json_t *sj, *rj;
    const char *v;
    unsigned char *plain = NULL;
    size_t len = 0, i;
    char *shown;

    *sealed = *redacted = NULL;
    if (strcmp(backend, "modal") == 0 &&
        (json_object_get(in, "modalTokenId") || json_object_get(in, "modalTokenSecret") ||
         op == NULL || op->key == NULL))
        return modal_creds_from_request(sx, in, sealed, redacted, err);
    for (i = 0; i < PE_ARRAY_LEN(FIELDS); i++)
        if (strcmp(FIELDS[i].provider, backend) == 0)
            break;
    v = i < PE_ARRAY_LEN(FIELDS) ? json_string_value(json_object_get(in, FIELDS[i].key)) : NULL;
    if (v == NULL) {
        if (op && (op->key || op->kubeconfig))
            return 0;
        if (i < PE_ARRAY_LEN(FIELDS))
            return pe_err_set(err, PE_EINVAL, 0,
                              "%s needs an API key: send %s sealed to this server's key, or ask "
                              "the operator to configure one",
                              backend, FIELDS[i].key);
        return pe_err_set(err, PE_EINVAL, 0,
                          "%s needs an API key, and only the operator can configure one for it",
                          backend);
    }
    if (strlen(v) > CRED_MAX || pe_auth_unseal(sx->auth, v, &plain, &len, err) < 0)
        return pe_err_set(err, PE_EINVAL, 0, "%s must be sealed to this server's public key",
                          FIELDS[i].key);
    if (len == 0 || len > CRED_MAX || memchr(plain, '\0', len) != NULL) {
        pe_auth_plain_free(plain);
        return pe_err_set(err, PE_EINVAL, 0, "%s must be 1 to %d bytes of text", FIELDS[i].key,
                          CRED_MAX);
    }
    shown = redact((const char *)plain, len);
    pe_auth_plain_free(plain);
    sj = json_pack("{s:s}", FIELDS[i].stored, v);
    rj = json_pack("{s:s, s:s}", "name", backend,
                   FIELDS[i].stored[0] == 'a'                    ? "redactedApiKey"
                   : strcmp(FIELDS[i].stored, "e2bApiKey") == 0  ? "redactedE2bApiKey"
                   : strcmp(FIELDS[i].stored, "hopxApiKey") == 0 ? "redactedHopxApiKey"
                                                                 : "redactedRunloopApiKey",
                   shown);
    free(shown);
    for (int k = 0; k < 2; k++) {
        const char *from = k == 0 ? FIELDS[i].org : FIELDS[i].project;
        const char *to = k == 0 ? FIELDS[i].org_stored : FIELDS[i].project;
        const char *pub = from ? json_string_value(json_object_get(in, from)) : NULL;
        if (pub == NULL)
            continue;
        if (strlen(pub) > PUBLIC_MAX) {
            json_decref(sj);
            json_decref(rj);
            return pe_err_set(err, PE_EINVAL, 0, "%s must be at most %d bytes", from, PUBLIC_MAX);
        }
        json_object_set_new(rj, to, json_string(pub));
    }
    *sealed = json_dumps(sj, JSON_COMPACT | JSON_SORT_KEYS);
    *redacted = json_dumps(rj, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(sj);
    json_decref(rj);
    return 0;
}

/* One stored credential (sealed and redacted JSON texts, as
 * pe_store_cred keeps them) of backend: key (unsealed: the caller wipes it
 * with pe_auth_plain_free), org and project (malloc'd). label names what
 * holds it, for errors. */
static int creds_from_texts(pe_sandboxes *sx, const char *backend, const char *label,
                            const char *sealed, const char *redacted, unsigned char **key,
                            char **org, char **project, pe_err *err)
{
    json_t *sj = json_loads(sealed ? sealed : "{}", 0, NULL);
    json_t *rj = json_loads(redacted ? redacted : "{}", 0, NULL);
    size_t len = 0;
    int r = 0;

    if (json_object_get(sj, "modalTokenSecret") && modal_stored_key(sx, sj, key, err) < 0)
        r = pe_err_set(err, PE_EINVAL, 0,
                       "the stored %s credential of %s no longer opens: send it again", backend,
                       label);
    for (size_t k = 0; k < PE_ARRAY_LEN(KEY_FIELDS) && *key == NULL && r == 0; k++) {
        const char *v = json_string_value(json_object_get(sj, KEY_FIELDS[k]));
        if (v && pe_auth_unseal(sx->auth, v, key, &len, err) < 0)
            r = pe_err_set(err, PE_EINVAL, 0,
                           "the stored %s credential of %s no longer opens: send it again", backend,
                           label);
    }
    if (*key) {
        const char *o = json_string_value(json_object_get(rj, "organizationId"));
        const char *t = json_string_value(json_object_get(rj, "vercelTeamId"));
        const char *p = json_string_value(json_object_get(rj, "vercelProjectId"));
        *org = o ? pe_xstrdup(o) : t ? pe_xstrdup(t) : NULL;
        *project = p ? pe_xstrdup(p) : NULL;
    }
    json_decref(sj);
    json_decref(rj);
    return r;
}

/* The owner's stored credential for sb's provider (creds_from_texts).
 * All NULL when there is none. */
static int stored_creds(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                        unsigned char **key, char **org, char **project, pe_err *err)
{
    pe_store_cred *list = NULL;
    size_t n = 0;
    int r = 0;

    *key = NULL;
    *org = *project = NULL;
    if (pe_store_cred_list(s, sb->id, sb->owner_did, &list, &n, err) < 0)
        return pe_err_prefix(err, "credentials of %s", sb->name);
    for (size_t i = 0; i < n && *key == NULL && r == 0; i++)
        if (strcmp(list[i].provider, sb->backend) == 0)
            r = creds_from_texts(sx, sb->backend, sb->name, list[i].sealed, list[i].redacted, key,
                                 org, project, err);
    pe_store_cred_list_free(list, n);
    return r;
}

int pe_sandbox_cred_copy(pe_store *s, const pe_store_sandbox *sb, char **sealed, char **redacted,
                         pe_err *err)
{
    pe_store_cred *list = NULL;
    size_t n = 0;

    *sealed = *redacted = NULL;
    if (pe_store_cred_list(s, sb->id, sb->owner_did, &list, &n, err) < 0)
        return pe_err_prefix(err, "credentials of %s", sb->name);
    for (size_t i = 0; i < n && *sealed == NULL; i++) {
        if (strcmp(list[i].provider, sb->backend) != 0)
            continue;
        *sealed = pe_xstrdup(list[i].sealed);
        *redacted = list[i].redacted ? pe_xstrdup(list[i].redacted) : NULL;
    }
    pe_store_cred_list_free(list, n);
    return 0;
}

/* Open adapter backend with key, org and project (each NULL: the
 * operator's). */
static int open_with(pe_sandboxes *sx, const char *backend, const char *label,
                     const unsigned char *key, const char *org, const char *project,
                     pe_provider **out, pe_err *err)
{
    const pe_sandbox_remote *op = pe_sandboxes_remote(sx, backend);
    pe_provider_config cfg = {0};

    cfg.no_ambient = true;
    cfg.kubeconfig = op ? op->kubeconfig : NULL;
    cfg.preview_url = op ? op->preview_url : NULL;
    cfg.creds.base_url = op ? op->base_url : NULL;
    cfg.creds.key = key ? (const char *)key : op ? op->key : NULL;
    cfg.creds.org = org ? org : op ? op->org : NULL;
    cfg.creds.project = project ? project : op ? op->project : NULL;
    cfg.timeout_ms = op ? op->timeout_ms : 0;
    cfg.create_timeout_ms = op ? op->create_timeout_ms : 0;
    if (cfg.creds.key == NULL && cfg.kubeconfig == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "%s has no %s credential: set one with putPreferences",
                          label, backend);
    return pe_provider_open(out, backend, &cfg, err); /* copies, and wipes at close */
}

int pe__sandbox_remote_open(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                            pe_provider **out, pe_err *err)
{
    const pe_sandbox_remote *op = pe_sandboxes_remote(sx, sb->backend);
    unsigned char *key = NULL;
    cleanup_free char *org = NULL;
    cleanup_free char *project = NULL;
    cleanup_free char *label = NULL;
    int r;

    if (pe_provider_lookup(sb->backend) == NULL || strcmp(sb->backend, "local") == 0)
        return pe_err_set(err, PE_EUNSUP, 0,
                          "sandbox %s runs on '%s', which this daemon does not serve", sb->name,
                          sb->backend);
    /* A keyless adapter (kubernetes) takes the operator's credential
     * only: a user's kubeconfig could name another API server, or files
     * of this host; and its ambient ones (KUBECONFIG, ~/.kube, the
     * service account) are never looked at from here. */
    if (pe_provider_lookup(sb->backend)->keyless) {
        if (op == NULL || (op->key == NULL && op->kubeconfig == NULL))
            return pe_err_set(err, PE_EUNSUP, 0,
                              "sandbox %s runs on %s, which this daemon's operator has not "
                              "configured",
                              sb->name, sb->backend);
    } else if (stored_creds(sx, s, sb, &key, &org, &project, err) < 0)
        return -1;
    label = pe_xasprintf("sandbox %s", sb->name);
    r = open_with(sx, sb->backend, label, key, org, project, out, err);
    pe_auth_plain_free(key);
    return r;
}

int pe__sandbox_remote_open_creds(pe_sandboxes *sx, const char *backend, const char *label,
                                  const char *sealed, const char *redacted, pe_provider **out,
                                  pe_err *err)
{
    const pe_provider_ops *ops = pe_provider_lookup(backend);
    unsigned char *key = NULL;
    cleanup_free char *org = NULL;
    cleanup_free char *project = NULL;
    int r;

    if (ops == NULL || strcmp(backend, "local") == 0)
        return pe_err_set(err, PE_EUNSUP, 0, "%s is on '%s', which this daemon does not serve",
                          label, backend);
    if (!ops->keyless && sealed &&
        creds_from_texts(sx, backend, label, sealed, redacted, &key, &org, &project, err) < 0)
        return -1;
    r = open_with(sx, backend, label, ops->keyless ? NULL : key, org, project, out, err);
    pe_auth_plain_free(key);
    return r;
}

/* ---- files ---- */

int pe_sandbox_file_write(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                          const char *path, const void *data, size_t len, unsigned mode,
                          pe_err *err)
{
    pe_provider *p = NULL;
    int r;

    if (pe_sandbox_provider_get(sx, s, sb, &p, err) < 0)
        return -1;
    r = pe_provider_file_write(p, pe_sandbox_remote_id(sb), path, data, len, mode ? mode : 0644,
                               err);
    pe_sandbox_provider_release(sx, p);
    return r;
}

int pe_sandbox_file_read(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                         const char *path, size_t max, char **data, size_t *len, pe_err *err)
{
    pe_provider *p = NULL;
    int r;

    if (pe_sandbox_provider_get(sx, s, sb, &p, err) < 0)
        return -1;
    r = pe_provider_file_read(p, pe_sandbox_remote_id(sb), path, max, data, len, err);
    pe_sandbox_provider_release(sx, p);
    return r;
}

int pe_sandbox_file_list(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                         const char *path, pe_provider_dirent **ents, size_t *n, pe_err *err)
{
    pe_provider *p = NULL;
    int r;

    if (pe_sandbox_provider_get(sx, s, sb, &p, err) < 0)
        return -1;
    r = pe_provider_file_list(p, pe_sandbox_remote_id(sb), path, ents, n, err);
    pe_sandbox_provider_release(sx, p);
    return r;
}

int pe_sandbox_file_remove(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                           const char *path, bool recursive, pe_err *err)
{
    pe_provider *p = NULL;
    int r;

    if (pe_sandbox_provider_get(sx, s, sb, &p, err) < 0)
        return -1;
    r = pe_provider_file_remove(p, pe_sandbox_remote_id(sb), path, recursive, err);
    pe_sandbox_provider_release(sx, p);
    return r;
}

int pe_sandbox_ssh_install(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                           const char *priv, size_t len, const char *pub, pe_err *err)
{
    pe_provider *p = NULL;
    int r;

    if (pe_sandbox_provider_get(sx, s, sb, &p, err) < 0)
        return -1;
    r = pe_sandbox_ssh_write(p, pe_sandbox_remote_id(sb), priv, len, pub, err);
    pe_sandbox_provider_release(sx, p);
    return r;
}

int pe_sandbox_preview(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb, uint16_t port,
                       pe_provider_preview_link *link, pe_err *err)
{
    pe_provider *p = NULL;
    int r;

    if (pe_sandbox_provider_get(sx, s, sb, &p, err) < 0)
        return -1;
    r = pe_provider_preview(p, pe_sandbox_remote_id(sb), port, link, err);
    pe_sandbox_provider_release(sx, p);
    return r;
}

int pe_sandbox_port_open(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb, uint16_t port,
                         int *fd, pe_err *err)
{
    pe_provider *p = NULL;
    int r;

    *fd = -1;
    if (pe_sandbox_provider_get(sx, s, sb, &p, err) < 0)
        return -1;
    r = pe_provider_port_open(p, pe_sandbox_remote_id(sb), port, fd, err);
    pe_sandbox_provider_release(sx, p);
    return r;
}

int pe_sandbox_tar_out(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb, const char *dir,
                       size_t max, char **tar, size_t *len, pe_err *err)
{
    pe_provider *p = NULL;
    int r;

    if (pe_sandbox_provider_get(sx, s, sb, &p, err) < 0)
        return -1;
    r = pe_provider_tar_out(p, pe_sandbox_remote_id(sb), dir, max, tar, len, err);
    pe_sandbox_provider_release(sx, p);
    return r;
}

int pe_sandbox_tar_in(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb, const char *dir,
                      const void *tar, size_t len, pe_err *err)
{
    pe_provider *p = NULL;
    int r;

    if (pe_sandbox_provider_get(sx, s, sb, &p, err) < 0)
        return -1;
    r = pe_provider_tar_in(p, pe_sandbox_remote_id(sb), dir, tar, len, err);
    pe_sandbox_provider_release(sx, p);
    return r;
}

int pe_sandbox_tar_out_fd(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                          const char *dir, size_t max, int fd, pe_err *err)
{
    cleanup_free char *tar = NULL;
    size_t len = 0, off = 0;

    if (pe_sandbox_tar_out(sx, s, sb, dir, max, &tar, &len, err) < 0)
        return -1;
    while (off < len) {
        ssize_t n = write(fd, tar + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return pe_err_sys(err, "write the tar of %s", dir);
        off += (size_t)n;
    }
    return 0;
}

int pe_sandbox_tar_in_fd(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb, const char *dir,
                         int fd, size_t max, pe_err *err)
{
    cleanup_free char *tar = NULL;
    struct stat st;
    size_t off = 0;

    if (fstat(fd, &st) < 0)
        return pe_err_sys(err, "read the tar for %s", dir);
    if (st.st_size < 0 || (uint64_t)st.st_size > max)
        return pe_err_set(err, PE_EINVAL, 0, "the tar for %s is larger than %zu bytes", dir, max);
    tar = pe_xmalloc((size_t)st.st_size + 1);
    while (off < (size_t)st.st_size) {
        ssize_t n = read(fd, tar + off, (size_t)st.st_size - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return pe_err_sys(err, "read the tar for %s", dir);
        off += (size_t)n;
    }
    return pe_sandbox_tar_in(sx, s, sb, dir, tar, off, err);
}

/* The sandbox's file resources (sealed contents), written through p: a
 * remote sandbox gets them as it is made and at every start, as a local
 * one does. One that does not go in fails the call: a sandbox without its
 * files would not behave as asked. */
int pe__sandbox_place_files(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                            pe_provider *p, const char *remote_id, pe_err *err)
{
    pe_store_kv *list = NULL;
    size_t n = 0;
    int r = 0;

    if (pe_store_kv_list(s, PE_STORE_FILE, sb->id, &list, &n, err) < 0)
        return pe_err_prefix(err, "files of %s", sb->name);
    for (size_t i = 0; i < n && r == 0; i++) {
        unsigned char *plain = NULL;
        size_t len = 0;

        if (pe_auth_unseal(sx->auth, list[i].value, &plain, &len, err) < 0)
            r = pe_err_prefix(err, "file %s", list[i].key);
        else if (pe_provider_file_write(p, remote_id, list[i].key, plain, len, 0644, err) < 0)
            r = -1;
        pe_auth_plain_free(plain);
    }
    pe_store_kv_list_free(list, n);
    return r;
}

/* The sandbox's SSH key pair, written where a local sandbox has it
 * (/root/.ssh/id_ed25519, 0600, and its .pub): a remote sandbox gets the
 * pair putSshKeys stored, as it is made and at every start. None stored:
 * nothing to do (a local sandbox's default pair is made at its first
 * start, by the daemon). */
int pe__sandbox_place_ssh(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb, pe_provider *p,
                          const char *remote_id, pe_err *err)
{
    pe_store_key k;
    unsigned char *plain = NULL;
    cleanup_free char *pub = NULL;
    size_t len = 0;
    int r;

    if (pe_store_key_get(s, PE_STORE_SSH_KEY, sb->id, &k, err) < 0) {
        if (err->code != PE_ENOENT)
            return pe_err_prefix(err, "ssh key of %s", sb->name);
        pe_err_clear(err);
        return 0;
    }
    r = pe_auth_unseal(sx->auth, k.sealed, &plain, &len, err);
    if (r == 0)
        r = pe_sandbox_ssh_write(p, remote_id, (const char *)plain, len, k.public_key, err);
    pe_auth_plain_free(plain);
    pe_store_key_clear(&k);
    return r < 0 ? pe_err_prefix(err, "ssh key of %s", sb->name) : 0;
}

void pe_sandbox_ssh_texts_make(pe_sandbox_ssh_texts *t, const char *priv, size_t len,
                               const char *pub)
{
    size_t plen = strlen(pub);

    while (plen > 0 && (pub[plen - 1] == '\n' || pub[plen - 1] == '\r'))
        plen--;
    t->pub = pe_xasprintf("%.*s\n", (int)plen, pub);
    t->owned = NULL;
    t->priv = (const unsigned char *)priv;
    t->priv_len = len;
    if (len > 0 && priv[len - 1] == '\n')
        return;
    /* a guarded copy: one sodium_malloc per key, only when it lacks the newline */
    t->owned = sodium_malloc(len + 1);
    if (t->owned == NULL)
        abort();
    memcpy(t->owned, priv, len);
    t->owned[len] = '\n';
    t->priv = t->owned;
    t->priv_len = len + 1;
}

void pe_sandbox_ssh_texts_free(pe_sandbox_ssh_texts *t)
{
    if (t->owned)
        sodium_free(t->owned);
    free(t->pub);
    memset(t, 0, sizeof(*t));
}

int pe_sandbox_ssh_write(pe_provider *p, const char *remote_id, const char *priv, size_t len,
                         const char *pub, pe_err *err)
{
    pe_sandbox_ssh_texts t;
    int r;

    pe_sandbox_ssh_texts_make(&t, priv, len, pub);
    r = pe_provider_file_write(p, remote_id, PE_SANDBOX_SSH_DIR "/id_ed25519", t.priv, t.priv_len,
                               0600, err);
    if (r == 0)
        r = pe_provider_file_write(p, remote_id, PE_SANDBOX_SSH_DIR "/id_ed25519.pub", t.pub,
                                   strlen(t.pub), 0644, err);
    pe_sandbox_ssh_texts_free(&t);
    return r;
}

/* Append one "what was not applied" part to *note. */
static void note_add(char **note, char *part)
{
    char *joined;

    if (part == NULL)
        return;
    joined = *note ? pe_xasprintf("%s; %s", *note, part) : pe_xstrdup(part);
    free(*note);
    free(part);
    *note = joined;
}

/* Volumes a provider cannot mount. */
static char *volumes_note(pe_store *s, const pe_store_sandbox *sb, const pe_provider_ops *ops)
{
    pe_store_mount *ml = NULL;
    size_t k = 0;
    char *note = NULL;
    pe_err e;

    pe_err_clear(&e);
    if (ops->caps & PE_CAP_VOLUMES)
        return NULL;
    if (pe_store_mount_list_sandbox(s, sb->id, PE_SANDBOX_MOUNTS_MAX, 0, &ml, &k, NULL, &e) < 0)
        return NULL;
    if (k > 0)
        note = pe_xasprintf("%s cannot mount volumes: %zu volume%s not mounted (the first at %s)",
                            sb->backend, k, k == 1 ? "" : "s", ml[0].path);
    pe_store_mount_list_free(ml, k);
    return note;
}

/* ---- the Tailscale key of a remote sandbox ----
 *
 * Applied through exec where the image has tailscale and tailscaled.
 * tailscaled (userspace networking, as in our own sandboxes) runs as a
 * unit of the daemon's supervisor (sx->unit_start: a streaming exec held
 * open, restarted with backoff when it dies, its output kept), named
 * "tailscaled:<id>" as a local sandbox's; its state directory keeps the
 * node logged in across its restarts. Once it answers (`tailscale version
 * --daemon` asks it, tried until TS_WAIT_S), the key goes into a file
 * (0600 in a 0700 directory, written through the provider's file call,
 * which not every adapter gives a mode: chmod after) that `tailscale up
 * --auth-key=file:` reads, never into a command line (a provider may log
 * those) nor an environment; the file is removed after, whatever came of
 * it. Nothing the commands print is kept: a stand-in could echo what it
 * was given. */
#define TS_KEY_DIR "/run/pocketenv"
#define TS_KEY_FILE TS_KEY_DIR "/tailscale-authkey"
#define TS_CHECK_S 30.0
#define TS_UP_S 45.0
#define TS_WAIT_S 20.0 /* for tailscaled to answer */
/* `command -v` where the shell has it, else the usual places; `a || b &&
 * c` is `(a || b) && c` in sh */
#define TS_CHECK                                                                                   \
    "command -v tailscale >/dev/null 2>&1 || test -e /usr/bin/tailscale || test -e "               \
    "/usr/local/bin/tailscale"
#define TSD_CHECK                                                                                  \
    "command -v tailscaled >/dev/null 2>&1 || test -e /usr/sbin/tailscaled || test -e "            \
    "/usr/bin/tailscaled || test -e /usr/local/sbin/tailscaled || test -e "                        \
    "/usr/local/bin/tailscaled"

/* Run script in sb with a deadline; its exit code, -1 with err when the
 * provider failed. */
static int ts_run(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb, const char *script,
                  double timeout, pe_err *err)
{
    char *argv[] = {(char *)"sh", (char *)"-c", (char *)script, NULL};
    pe_provider_exec_opts o = {.argv = argv, .timeout = timeout};
    pe_provider_exec_result res = {0};
    int code;

    if (pe_sandbox_exec(sx, s, sb, &o, 4096, &res, err) < 0)
        return -1;
    code = res.exit_code;
    pe_provider_exec_free(&res);
    return code;
}

/* A host name for tailscale from sb's name: letters, digits, '-'. */
static char *ts_hostname(const char *name)
{
    char *h = pe_xstrdup(name && name[0] ? name : "pocketenv");

    for (char *c = h; *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '-')
            *c = '-';
    return h;
}

/* Is the image ready for Tailscale? NULL, or the note of why not. */
static char *ts_image(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb)
{
    pe_err e;
    int code;

    pe_err_clear(&e);
    code = ts_run(sx, s, sb, TS_CHECK " && mkdir -p " TS_KEY_DIR " && chmod 700 " TS_KEY_DIR,
                  TS_CHECK_S, &e);
    if (code == 0)
        code = ts_run(sx, s, sb, TSD_CHECK, TS_CHECK_S, &e) == 0 ? 0 : -2;
    if (code == 0)
        return NULL;
    pe_log_info("event=tailscale sandbox=%s outcome=\"%s\"", sb->id,
                code == -1   ? "exec failed"
                : code == -2 ? "no tailscaled in the image"
                             : "no tailscale in the image");
    if (code == -1)
        return pe_xasprintf("tailscale key not applied: %s", e.msg);
    return pe_xasprintf("tailscale key not applied: no %s in the image on %s",
                        code == -2 ? "tailscaled" : "tailscale", sb->backend);
}

/* Start tailscaled supervised and wait until it answers: 0, or -1 with
 * err. The tries back off from 0.2 s to 1 s until the deadline. */
static int ts_daemon(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb, pe_err *err)
{
    static char *argv[] = {(char *)"tailscaled", (char *)"--tun=userspace-networking",
                           (char *)"--statedir=/var/lib/tailscale", NULL};
    cleanup_free char *unit = pe_xasprintf("tailscaled:%s", sb->id);
    double deadline = pe_monotonic_s() + TS_WAIT_S, pause = 0.2;
    int code;

    if (sx->unit_start == NULL)
        return pe_err_set(err, PE_EUNSUP, 0, "nothing supervises tailscaled here");
    if (sx->unit_start(sx->unit_ud, unit, sb->id, argv, err) < 0)
        return -1;
    for (;;) {
        code = ts_run(sx, s, sb, "tailscale version --daemon >/dev/null 2>&1", TS_CHECK_S, err);
        if (code <= 0)
            return code;
        if (pe_monotonic_s() + pause > deadline)
            return pe_err_set(err, PE_ETIMEDOUT, 0,
                              "tailscaled did not answer within %.0f s (its log: unit %s)",
                              TS_WAIT_S, unit);
        usleep((useconds_t)(pause * 1e6));
        pause = pause * 2 > 1.0 ? 1.0 : pause * 2;
    }
}

/* Bring Tailscale up in remote sb with its stored key; the record's note
 * (malloc'd) when it is not applied, NULL when it is or there is no key. */
static char *tailscale_apply(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb)
{
    cleanup_free char *host = ts_hostname(sb->name), *up = NULL;
    unsigned char *plain = NULL;
    size_t len = 0;
    pe_store_key k;
    char *note;
    pe_err e;
    int code;

    pe_err_clear(&e);
    if (pe_store_key_get(s, PE_STORE_TAILSCALE_KEY, sb->id, &k, &e) < 0)
        return NULL;
    if ((note = ts_image(sx, s, sb)) != NULL || ts_daemon(sx, s, sb, &e) < 0) {
        pe_store_key_clear(&k);
        if (note == NULL)
            pe_log_info("event=tailscale sandbox=%s outcome=\"%s\"", sb->id, e.msg);
        return note ? note : pe_xasprintf("tailscale key not applied: %s", e.msg);
    }
    if (pe_auth_unseal(sx->auth, k.sealed, &plain, &len, &e) < 0) {
        pe_store_key_clear(&k);
        return pe_xasprintf("tailscale key not applied: %s", e.msg);
    }
    pe_store_key_clear(&k);
    code = pe_sandbox_file_write(sx, s, sb, TS_KEY_FILE, plain, len, 0600, &e);
    pe_auth_plain_free(plain);
    if (code == 0) {
        /* 0600 whether the provider's file call keeps the mode or not (its
         * directory, 0700, kept others out meanwhile) */
        up = pe_xasprintf("chmod 600 " TS_KEY_FILE " && tailscale up --auth-key=file:" TS_KEY_FILE
                          " --hostname=%s --timeout=30s >/dev/null 2>&1",
                          host);
        code = ts_run(sx, s, sb, up, TS_UP_S, &e);
    } else {
        code = -1;
    }
    /* whatever happened, the key does not stay there */
    if (ts_run(sx, s, sb, "rm -f " TS_KEY_FILE, TS_CHECK_S, &(pe_err){0}) != 0)
        pe_log_warn("sandbox %s: the tailscale key file could not be removed", sb->id);
    pe_log_info("event=tailscale sandbox=%s up_exit=%d", sb->id, code);
    if (code == 0)
        return NULL;
    return code < 0 ? pe_xasprintf("tailscale key not applied: %s", e.msg)
                    : pe_xasprintf("tailscale key not applied: tailscale up exited %d", code);
}

char *pe_sandbox_run_note(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb)
{
    const pe_provider_ops *ops = pe_sandbox_is_remote(sb) ? pe_provider_lookup(sb->backend) : NULL;
    char *note = NULL;

    (void)sx;
    if (ops == NULL)
        return NULL;
    note_add(&note, volumes_note(s, sb, ops));
    return note;
}

char *pe_sandbox_started_note(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb)
{
    char *note = pe_sandbox_run_note(sx, s, sb);

    if (pe_sandbox_is_remote(sb))
        note_add(&note, tailscale_apply(sx, s, sb));
    return note;
}

/* ---- create ---- */

bool pe_sandbox_image_valid(const char *image)
{
    size_t n = image ? strlen(image) : 0;

    if (n == 0 || n > 255 || !isalnum((unsigned char)image[0]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)image[i]) && strchr("._/:@+-", image[i]) == NULL)
            return false;
    return true;
}

/* The request's field behind each spec field a provider may refuse. */
static const char *request_field(const char *refused)
{
    return strcmp(refused, "choice of image") == 0 || strcmp(refused, "snapshot-base") == 0 ? "base"
           : strcmp(refused, "cpu size") == 0    ? "vcpus"
           : strcmp(refused, "memory size") == 0 ? "memory"
                                                 : "disk";
}

/* sb's sizes (GB, as the lexicon) and image as a create's spec; PE_ENOTCAP
 * for one its provider cannot take, said in the request's words. */
static int remote_spec(const pe_store_sandbox *sb, const char *image, pe_provider_spec *spec,
                       pe_err *err)
{
    const pe_provider_ops *ops = pe_provider_lookup(sb->backend);
    const char *refused;

    spec->name = sb->id;
    spec->image = image;
    if (__builtin_mul_overflow(sb->vcpus > 0 ? sb->vcpus : 0, (int64_t)1000, &spec->cpu_millis) ||
        __builtin_mul_overflow(sb->memory > 0 ? sb->memory : 0, (int64_t)1 << 30,
                               &spec->memory_bytes) ||
        __builtin_mul_overflow(sb->disk > 0 ? sb->disk : 0, (int64_t)1 << 30, &spec->disk_bytes))
        return pe_err_set(err, PE_EINVAL, 0, "sandbox %s: sizes out of range", sb->name);
    refused = ops ? pe_provider_spec_refused(ops, spec) : NULL;
    if (refused)
        return pe_err_set(err, PE_ENOTCAP, 0, "not supported by %s: %s (the request's %s)",
                          sb->backend, refused, request_field(refused));
    return 0;
}

int pe_sandbox_create_remote(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                             const char *image, char **remote_id, pe_err *err)
{
    return pe_sandbox_create_remote_from(sx, s, sb, image, NULL, remote_id, err);
}

/* spec.made of a create: the row says where its sandbox is while the
 * provider is still making it, so that a daemon killed meanwhile finds it
 * at its next start (the daemon's reconciliation). */
typedef struct made_at {
    pe_store *s;
    const pe_store_sandbox *sb;
    bool recorded;
} made_at;

static void record_made(void *ud, const char *id)
{
    made_at *m = ud;
    pe_err e;

    pe_err_clear(&e);
    if (pe_store_sandbox_set_provider(m->s, m->sb->id, m->sb->provider, id, &e) < 0)
        pe_log_warn("sandbox %s: %s sandbox %s not recorded while it is made: %s", m->sb->id,
                    m->sb->backend, id, e.msg);
    else
        m->recorded = true;
}

int pe_sandbox_create_remote_from(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                                  const char *image, const char *snapshot, char **remote_id,
                                  pe_err *err)
{
    made_at made = {.s = s, .sb = sb};
    const pe_sandbox_remote *op = pe_sandboxes_remote(sx, sb->backend);
    pe_provider *p = NULL;
    pe_provider_spec spec = {0};
    char **env = NULL;
    char *id = NULL;
    pe_err e2;
    int r;

    if (remote_spec(sb, image, &spec, err) < 0 || pe__sandbox_remote_open(sx, s, sb, &p, err) < 0)
        return -1;
    if (op) { /* the operator's ports: routed from the start */
        spec.ports = op->ports;
        spec.n_ports = op->n_ports;
    }
    if (pe_sandbox_env(sx, s, sb->id, &env, err) < 0) {
        pe_provider_close(p);
        return -1;
    }
    spec.env = env;
    spec.snapshot = snapshot;
    spec.made = record_made;
    spec.made_ud = &made;
    r = pe_provider_create(p, &spec, &id, err);
    pe_sandbox_env_free(env);
    if (r == 0 && (pe__sandbox_place_files(sx, s, sb, p, id, err) < 0 ||
                   pe__sandbox_place_ssh(sx, s, sb, p, id, err) < 0 ||
                   pe_store_sandbox_set_provider(s, sb->id, sb->provider, id, err) < 0)) {
        /* half made, or the row cannot say where it is: leave nothing there */
        pe_err_clear(&e2);
        if (pe_provider_remove(p, id, &e2) < 0)
            pe_log_warn("sandbox %s: remove after a failed create: %s", sb->id, e2.msg);
        r = -1;
    }
    if (r < 0 && made.recorded) { /* removed there (the adapter's or ours): nothing is */
        pe_err_clear(&e2);
        pe_store_sandbox_set_provider(s, sb->id, sb->provider, NULL, &e2);
    }
    if (r == 0) {
        pe_log_info("event=remote_create sandbox=%s backend=%s from_snapshot=%s", sb->id,
                    sb->backend, snapshot ? snapshot : "-");
        *remote_id = pe_steal_ptr(&id);
    }
    free(id);
    pe_provider_close(p);
    return r;
}
