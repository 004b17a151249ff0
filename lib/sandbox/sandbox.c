/* The sandbox layer (sandbox.h): where a sandbox runs, the environment of
 * its processes, and starting them there.
 *
 * Secrets are opened only here, at the point of use; their plaintext goes
 * only into the environment handed to the provider and is wiped after
 * (pe_sandbox_env_free). No log line or error message quotes a value. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "core/log.h"
#include "core/util.h"
#include "pocketenv/egress.h"
#include "sandbox/sandbox-internal.h"

/* adjective-noun-xxxx, as upstream names sandboxes (reference §0.4). */
char *pe_sandbox_slug_name(void)
{
    static const char *const adj[] = {"amber",  "brave",  "calm",  "clever", "crisp", "eager",
                                      "fancy",  "gentle", "happy", "jolly",  "keen",  "lucky",
                                      "mellow", "nimble", "proud", "quiet",  "rapid", "shiny",
                                      "sunny",  "swift",  "tidy",  "vivid",  "witty", "zesty"};
    static const char *const noun[] = {"otter",  "falcon", "maple",  "comet",   "harbor", "meadow",
                                       "pebble", "river",  "summit", "tiger",   "walrus", "willow",
                                       "badger", "cedar",  "dune",   "ember",   "fjord",  "lagoon",
                                       "panda",  "quartz", "raven",  "sparrow", "tulip",  "yak"};
    static const char b36[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    unsigned char r[6];
    char suffix[5];

    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
        abort(); /* the kernel's CSPRNG does not fail once booted */
    for (int i = 0; i < 4; i++)
        suffix[i] = b36[r[2 + i] % 36];
    suffix[4] = '\0';
    return pe_xasprintf("%s-%s-%s", adj[r[0] % PE_ARRAY_LEN(adj)], noun[r[1] % PE_ARRAY_LEN(noun)],
                        suffix);
}

int pe_sandboxes_open(pe_sandboxes *sx, pe_auth *auth, pe_runtime *rt, pe_err *err)
{
    pe_provider_config cfg = {.runtime = rt};

    memset(sx, 0, sizeof(*sx));
    sx->auth = auth;
    sx->data_dir = pe_xstrdup(rt->data_dir);
    sx->rt = rt;
    return pe_provider_open(&sx->local, "local", &cfg, err);
}

void pe_sandboxes_close(pe_sandboxes *sx)
{
    pe_provider_close(sx->local);
    sx->local = NULL;
    pe__sandboxes_remotes_clear(sx);
    free(sx->data_dir);
    sx->data_dir = NULL;
}

int pe_sandbox_provider_get(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                            pe_provider **p, pe_err *err)
{
    /* rows from before backends were recorded are local */
    if (!pe_sandbox_is_remote(sb)) {
        *p = sx->local;
        return 0;
    }
    if (sb->provider_id == NULL)
        return pe_err_set(err, PE_ESTATE, 0, "sandbox %s was never made on %s", sb->name,
                          sb->backend);
    return pe__sandbox_remote_open(sx, s, sb, p, err);
}

void pe_sandbox_provider_release(pe_sandboxes *sx, pe_provider *p)
{
    if (p != sx->local)
        pe_provider_close(p); /* wipes the credential it held */
}

void pe_sandbox_env_free(char **env)
{
    for (char **e = env; e && *e; e++) {
        explicit_bzero(*e, strlen(*e));
        free(*e);
    }
    free(env);
}

void pe_sandbox_secret_placeholder(const char *secret_id, char out[PE_SANDBOX_PLACEHOLDER_MAX])
{
    const char *id = strncmp(secret_id, "secret_", 7) == 0 ? secret_id + 7 : secret_id;

    snprintf(out, PE_SANDBOX_PLACEHOLDER_MAX, "PE_SECRET_%.80s", id);
}

/* The egress policy of a local sandbox (NULL: none); a remote one has
 * none of ours. */
static int egress_policy(pe_sandboxes *sx, const char *sandbox_id, json_t **policy, pe_err *err)
{
    *policy = NULL;
    pe_err e2;

    if (sx->rt == NULL)
        return 0;
    pe_err_clear(&e2);
    if (pe_runtime_egress_get(sx->rt, sandbox_id, policy, &e2) == 0 || e2.code == PE_ENOENT)
        return 0; /* ENOENT: not the runtime's (remote), or not made yet */
    *err = e2;
    return -1;
}

static int append_kind(pe_sandboxes *sx, pe_store *s, int kind, const char *sandbox_id,
                       const json_t *policy, char ***env, size_t *n, pe_err *err)
{
    pe_store_kv *list = NULL;
    size_t k = 0;

    if (pe_store_kv_list(s, kind, sandbox_id, &list, &k, err) < 0)
        return -1;
    *env = pe_xrealloc(*env, (*n + k + 1) * sizeof(char *));
    for (size_t i = 0; i < k; i++) {
        unsigned char *plain = NULL;
        size_t len = 0;
        pe_err e2;

        if (kind == PE_STORE_VARIABLE) {
            (*env)[(*n)++] = pe_xasprintf("%s=%s", list[i].key, list[i].value);
            continue;
        }
        if (policy != NULL && pe_egress_secret_hosts(policy, list[i].key) != NULL) {
            char ph[PE_SANDBOX_PLACEHOLDER_MAX];
            /* egress-only: the value never enters the sandbox */
            pe_sandbox_secret_placeholder(list[i].id, ph);
            (*env)[(*n)++] = pe_xasprintf("%s=%s", list[i].key, ph);
            continue;
        }
        pe_err_clear(&e2);
        if (pe_auth_unseal(sx->auth, list[i].value, &plain, &len, &e2) < 0) {
            pe_log_warn("sandbox %s: secret %s left out: %s", sandbox_id, list[i].key, e2.msg);
            continue;
        }
        (*env)[(*n)++] = pe_xasprintf("%s=%s", list[i].key, (const char *)plain);
        pe_auth_plain_free(plain);
    }
    (*env)[*n] = NULL;
    pe_store_kv_list_free(list, k);
    return 0;
}

int pe_sandbox_env(pe_sandboxes *sx, pe_store *s, const char *sandbox_id, char ***env, pe_err *err)
{
    char **out = NULL;
    json_t *policy = NULL;
    size_t n = 0;

    /* A policy that cannot be read could make a secret egress-only: fail
     * rather than hand its value to the sandbox. */
    if (egress_policy(sx, sandbox_id, &policy, err) < 0)
        return pe_err_prefix(err, "environment of %s", sandbox_id);
    out = pe_xcalloc(1, sizeof(char *));
    /* egress-only secrets: TLS clients trust the sandbox's CA, which the
     * daemon installs there (install_ca); the owner's variables win */
    if (json_array_size(json_object_get(policy, "secrets")) > 0) {
        static const char *const vars[] = {
            "SSL_CERT_FILE=" PE_SANDBOX_CA_BUNDLE, "REQUESTS_CA_BUNDLE=" PE_SANDBOX_CA_BUNDLE,
            "CURL_CA_BUNDLE=" PE_SANDBOX_CA_BUNDLE, "NODE_EXTRA_CA_CERTS=" PE_SANDBOX_CA_FILE};
        out = pe_xrealloc(out, (PE_ARRAY_LEN(vars) + 1) * sizeof(char *));
        for (size_t i = 0; i < PE_ARRAY_LEN(vars); i++)
            out[n++] = pe_xstrdup(vars[i]);
        out[n] = NULL;
    }
    /* Secrets last: the runtime lets a later NAME= replace an earlier one. */
    if (append_kind(sx, s, PE_STORE_VARIABLE, sandbox_id, NULL, &out, &n, err) < 0 ||
        append_kind(sx, s, PE_STORE_SECRET, sandbox_id, policy, &out, &n, err) < 0) {
        json_decref(policy);
        pe_sandbox_env_free(out);
        return pe_err_prefix(err, "environment of %s", sandbox_id);
    }
    json_decref(policy);
    *env = out;
    return 0;
}

int pe_sandbox_egress_secrets(pe_sandboxes *sx, pe_store *s, const char *sandbox_id,
                              const json_t *policy, pe_sandbox_egress_secret **out, size_t *n,
                              pe_err *err)
{
    pe_store_kv *list = NULL;
    pe_sandbox_egress_secret *o = NULL;
    size_t k = 0, m = 0;

    *out = NULL;
    *n = 0;
    if (json_array_size(json_object_get(policy, "secrets")) == 0)
        return 0;
    if (pe_store_kv_list(s, PE_STORE_SECRET, sandbox_id, &list, &k, err) < 0)
        return pe_err_prefix(err, "secrets of %s", sandbox_id);
    o = pe_xcalloc(k + 1, sizeof(*o));
    for (size_t i = 0; i < k; i++) {
        pe_err e2;

        if (pe_egress_secret_hosts(policy, list[i].key) == NULL)
            continue;
        pe_err_clear(&e2);
        if (pe_auth_unseal(sx->auth, list[i].value, &o[m].value, &o[m].len, &e2) < 0) {
            pe_log_warn("sandbox %s: secret %s left out: %s", sandbox_id, list[i].key, e2.msg);
            continue;
        }
        o[m].name = pe_xstrdup(list[i].key);
        pe_sandbox_secret_placeholder(list[i].id, o[m].placeholder);
        m++;
    }
    pe_store_kv_list_free(list, k);
    *out = o;
    *n = m;
    return 0;
}

void pe_sandbox_egress_secrets_free(pe_sandbox_egress_secret *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(list[i].name);
        pe_auth_plain_free(list[i].value);
    }
    free(list);
}

int pe_sandbox_exec_start(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                          const pe_provider_exec_opts *o, pe_provider_proc *proc, pe_err *err)
{
    pe_provider *p = NULL;
    pe_provider_exec_opts eo = *o;
    char **env = NULL;
    int r;

    if (pe_sandbox_provider_get(sx, s, sb, &p, err) < 0)
        return -1;
    if (pe_sandbox_env(sx, s, sb->id, &env, err) < 0) {
        pe_sandbox_provider_release(sx, p);
        return -1;
    }
    /* the caller's own variables after the sandbox's: a later NAME= wins */
    for (size_t n = 0, k = 0; o->env && o->env[k]; k++) {
        while (env[n])
            n++;
        env = pe_xrealloc(env, (n + 2) * sizeof(*env));
        env[n] = pe_xstrdup(o->env[k]);
        env[n + 1] = NULL;
    }
    eo.env = env;
    r = pe_provider_exec_start(p, pe_sandbox_remote_id(sb), &eo, proc, err);
    pe_sandbox_env_free(env);
    if (r < 0)
        pe_sandbox_provider_release(sx, p);
    else if (p != sx->local)
        proc->owner = p; /* closed with the process */
    return r;
}

int pe_sandbox_exec(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                    const pe_provider_exec_opts *o, size_t max_output, pe_provider_exec_result *res,
                    pe_err *err)
{
    pe_provider *p = NULL;
    pe_provider_exec_opts eo = *o;
    char **env = NULL;
    int r;

    memset(res, 0, sizeof(*res));
    if (pe_sandbox_provider_get(sx, s, sb, &p, err) < 0)
        return -1;
    if (pe_sandbox_env(sx, s, sb->id, &env, err) < 0) {
        pe_sandbox_provider_release(sx, p);
        return -1;
    }
    eo.env = env;
    r = pe_provider_exec(p, pe_sandbox_remote_id(sb), &eo, max_output, res, err);
    pe_sandbox_env_free(env);
    pe_sandbox_provider_release(sx, p);
    return r;
}

char *pe_sandbox_volume_dir(const pe_sandboxes *sx, const char *volume_id)
{
    return pe_xasprintf("%s/volumes/%s", sx->data_dir, volume_id);
}

static int volume_mounts(pe_sandboxes *sx, pe_store *s, const char *sandbox_id,
                         pe_provider_start_opts *o, pe_err *err)
{
    pe_store_mount *ml = NULL;
    pe_provider_mount *out;
    size_t k = 0;

    if (pe_store_mount_list_sandbox(s, sandbox_id, PE_SANDBOX_MOUNTS_MAX, 0, &ml, &k, NULL, err) <
        0)
        return pe_err_prefix(err, "volumes of %s", sandbox_id);
    out = pe_xcalloc(k + 1, sizeof(*out));
    for (size_t i = 0; i < k; i++) {
        char *dir = pe_sandbox_volume_dir(sx, ml[i].volume_id);
        out[i].host_dir = dir;
        out[i].path = pe_xstrdup(ml[i].path);
        out[i].ro = ml[i].read_only;
        /* A directory removed behind our back comes back empty. */
        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
            pe_log_warn("volume %s: %s", ml[i].volume_name, strerror(errno));
    }
    pe_store_mount_list_free(ml, k);
    o->mounts = out;
    o->n_mounts = k;
    return 0;
}

int pe_sandbox_start_opts(pe_sandboxes *sx, pe_store *s, const char *sandbox_id,
                          pe_provider_start_opts *o, pe_err *err)
{
    char **env = NULL;

    memset(o, 0, sizeof(*o));
    if (pe_sandbox_env(sx, s, sandbox_id, &env, err) < 0)
        return -1;
    o->env = env;
    if (volume_mounts(sx, s, sandbox_id, o, err) < 0) {
        pe_sandbox_start_opts_free(o);
        return -1;
    }
    return 0;
}

void pe_sandbox_start_opts_free(pe_provider_start_opts *o)
{
    pe_sandbox_env_free((char **)o->env);
    for (size_t i = 0; i < o->n_mounts; i++) {
        free((char *)o->mounts[i].host_dir);
        free((char *)o->mounts[i].path);
    }
    free((void *)o->mounts);
    memset(o, 0, sizeof(*o));
}

int pe_sandbox_start(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb, pe_err *err)
{
    pe_provider *p = NULL;
    pe_provider_start_opts o;
    int r;

    if (pe_sandbox_provider_get(sx, s, sb, &p, err) < 0)
        return -1;
    if (p != sx->local) {
        /* A remote sandbox got its variables and secrets at create, and
         * gets them again with every exec (pe_sandbox_exec_start); its
         * provider keeps them across a stop. */
        r = pe_provider_start(p, pe_sandbox_remote_id(sb), err);
        if (r == 0)
            r = pe__sandbox_place_files(sx, s, sb, p, pe_sandbox_remote_id(sb), err);
        if (r == 0)
            r = pe__sandbox_place_ssh(sx, s, sb, p, pe_sandbox_remote_id(sb), err);
        pe_sandbox_provider_release(sx, p);
        return r;
    }
    if (pe_sandbox_start_opts(sx, s, sb->id, &o, err) < 0)
        return -1;
    r = pe_provider_start_with(p, sb->id, &o, err);
    pe_sandbox_start_opts_free(&o);
    return r;
}

int pe_sandbox_stop(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb, pe_err *err)
{
    pe_provider *p = NULL;
    int r;

    if (pe_sandbox_provider_get(sx, s, sb, &p, err) < 0)
        return -1;
    r = pe_provider_stop(p, pe_sandbox_remote_id(sb), err);
    pe_sandbox_provider_release(sx, p);
    return r;
}

int pe_sandbox_pause(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb, pe_err *err)
{
    pe_provider *p = NULL;
    int r;

    if (pe_sandbox_provider_get(sx, s, sb, &p, err) < 0)
        return -1;
    r = pe_provider_pause(p, pe_sandbox_remote_id(sb), err);
    pe_sandbox_provider_release(sx, p);
    return r;
}

int pe_sandbox_resume(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb, pe_err *err)
{
    pe_provider *p = NULL;
    int r;

    if (pe_sandbox_provider_get(sx, s, sb, &p, err) < 0)
        return -1;
    r = pe_provider_resume(p, pe_sandbox_remote_id(sb), err);
    pe_sandbox_provider_release(sx, p);
    return r;
}

int pe_sandbox_status(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                      pe_provider_status *st, pe_err *err)
{
    pe_provider *p = NULL;
    int r;

    memset(st, 0, sizeof(*st));
    if (pe_sandbox_provider_get(sx, s, sb, &p, err) < 0)
        return -1;
    r = pe_provider_status_get(p, pe_sandbox_remote_id(sb), st, err);
    pe_sandbox_provider_release(sx, p);
    return r;
}

int pe_sandbox_remove(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb, pe_err *err)
{
    pe_provider *p = NULL;
    int r;

    /* a remote row whose create never reached the provider has nothing there */
    if (pe_sandbox_is_remote(sb) && sb->provider_id == NULL)
        return 0;
    if (pe_sandbox_provider_get(sx, s, sb, &p, err) < 0)
        return -1;
    r = pe_provider_remove(p, pe_sandbox_remote_id(sb), err);
    pe_sandbox_provider_release(sx, p);
    return r;
}
