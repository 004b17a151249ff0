/* The kubernetes adapter: sandboxes as Pods in a cluster, through the API
 * server (docs/providers.md, "Kubernetes").
 *
 * A sandbox is a Pod whose container sleeps, plus a Secret of the same
 * name: the record. The Secret holds the sandbox's environment (the Pod
 * takes it with envFrom, so values never sit in the Pod's spec) and, in an
 * annotation, the Pod's manifest. stop deletes the Pod and keeps the
 * record; start makes the Pod again from it. So the filesystem does not
 * survive a stop (no PE_CAP_STOP): what must last belongs in a volume.
 * Where the cluster serves agent-sandbox (agents.x-k8s.io), create makes a
 * Sandbox instead, whose controller runs the Pod; stop and start are its
 * replicas (below).
 *
 * exec, terminals and files go through the Pod's `exec` subresource over
 * a WebSocket (the v5.channel.k8s.io protocol, or v4 without stdin's
 * end): each message starts with its channel, 0 stdin, 1 stdout,
 * 2 stderr, 3 the status JSON that carries the exit code, 4 a terminal's
 * size; v5 adds 255 to close one channel (stdin's EOF). Files are tar
 * through exec, as kubectl cp does: tar in the image is required. Previews
 * are the API server's Pod proxy, which wants the cluster credential
 * (needs_credential). */
#include <archive.h>
#include <archive_entry.h>
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <wslay/wslay.h>

#include "core/log.h"
#include "core/util.h"
#include "provider-internal.h"
#include "provider-kubernetes.h"

#define NAME "kubernetes"
#define CONTAINER "sandbox"
#define DEFAULT_IMAGE "debian:bookworm-slim"
#define DEFAULT_SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"
#define POD_ANNOTATION "pocketenv.dev/pod"
#define MANAGED_LABEL "app.kubernetes.io/managed-by"
#define AGENTS_GROUP "agents.x-k8s.io"
#define CRD_PREFIX "ps" /* ids of Sandbox-backed sandboxes; Pod-backed ones are pe-... */
#define EXT_GROUP "extensions.agents.x-k8s.io"
#define CLAIM_PREFIX "pc" /* ids of SandboxClaim-backed sandboxes (the claim's name) */
#define IMAGE_ANNOTATION "pocketenv.dev/image"
/* Exit codes our file scripts use for "no such path" and "wrong kind". */
#define EXIT_NOENT 44
#define EXIT_KIND 45
#define STDERR_KEEP 4096

typedef struct k8 {
    pe__k8s_conf c;
    char *ns;
} k8;

static int pod_name(pe_provider *p, const char *id, char **name, pe_err *err);

/* ---- credentials ---- */

/* A key that is a kubeconfig (YAML or JSON) rather than a bare token. */
static bool is_kubeconfig(const char *key)
{
    return strchr(key, '\n') || key[0] == '{' || strncmp(key, "apiVersion", 10) == 0;
}

static int load_creds(pe_provider *p, k8 *k, pe_err *err)
{
    const char *key = p->cfg.creds.key, *kc = getenv("KUBECONFIG"), *home = getenv("HOME");
    const char *sa = getenv("POCKETENV_K8S_SERVICEACCOUNT_DIR");
    char *path = NULL;
    int r;

    if (p->cfg.kubeconfig)
        return pe__k8s_conf_kubeconfig_file(p->cfg.kubeconfig, &k->c, err);
    if (key && *key) {
        if (is_kubeconfig(key))
            return pe__k8s_conf_kubeconfig(key, strlen(key), "the kubeconfig given as key", NULL,
                                           &k->c, err);
        k->c.token = pe_xstrdup(key);
        k->c.how = "token";
        return 0;
    }
    if (p->cfg.no_ambient)
        return pe_err_set(err, PE_EINVAL, 0,
                          NAME ": no credentials configured: give a kubeconfig file or a token "
                               "in the operator's configuration");
    /* as kubectl looks: $KUBECONFIG (its first file), ~/.kube/config, then
     * the pod's own service account */
    if (kc && *kc)
        path = pe_xasprintf("%.*s", (int)strcspn(kc, ":"), kc);
    else if (home && *home)
        path = pe_xasprintf("%s/.kube/config", home);
    if (path && (kc && *kc ? true : access(path, F_OK) == 0)) {
        r = pe__k8s_conf_kubeconfig_file(path, &k->c, err);
        free(path);
        return r;
    }
    free(path);
    path = pe_xasprintf("%s/token", sa && *sa ? sa : DEFAULT_SA_DIR);
    r = access(path, F_OK);
    free(path);
    if (r == 0)
        return pe__k8s_conf_incluster(sa && *sa ? sa : DEFAULT_SA_DIR, &k->c, err);
    return pe_err_set(err, PE_EINVAL, 0,
                      NAME ": no credentials: give a token or a kubeconfig as the key, set "
                           "KUBECONFIG, or run in a pod with a service account");
}

static void k8_close(pe_provider *p)
{
    k8 *k = p->impl;

    if (k == NULL)
        return;
    pe__k8s_conf_free(&k->c);
    free(k->ns);
    free(k);
}

static int k8_open(pe_provider *p, pe_err *err)
{
    k8 *k = pe_xcalloc(1, sizeof(*k));

    p->impl = k;
    if (load_creds(p, k, err) < 0)
        return -1;
    /* base_url (the caller's) wins over the kubeconfig's server */
    if (p->cfg.creds.base_url == NULL || p->cfg.creds.base_url[0] == '\0') {
        if (k->c.server == NULL)
            return pe_err_set(err, PE_EINVAL, 0,
                              NAME ": no API server: give its URL, or credentials that name it "
                                   "(a kubeconfig's cluster, KUBERNETES_SERVICE_HOST)");
        free((char *)p->cfg.creds.base_url);
        p->cfg.creds.base_url = pe_xstrdup(k->c.server);
    }
    k->ns = pe_xstrdup(p->cfg.creds.org && *p->cfg.creds.org ? p->cfg.creds.org
                       : k->c.ns                             ? k->c.ns
                                                             : "default");
    /* the token is what every request carries (NULL: a client certificate) */
    pe__secret_free((char *)p->cfg.creds.key);
    p->cfg.creds.key = k->c.token ? pe_xstrdup(k->c.token) : NULL;
    return 0;
}

/* TLS as the credentials say, on every handle (HTTP and WebSocket). */
static void k8_curl_setup(pe_provider *p, void *curl)
{
    k8 *k = p->impl;

    if (k->c.ca) {
        struct curl_blob b = {.data = k->c.ca, .len = k->c.ca_len, .flags = CURL_BLOB_COPY};
        curl_easy_setopt(curl, CURLOPT_CAINFO_BLOB, &b);
    }
    if (k->c.cert) {
        struct curl_blob c = {.data = k->c.cert, .len = k->c.cert_len, .flags = CURL_BLOB_COPY};
        struct curl_blob key = {.data = k->c.key, .len = k->c.key_len, .flags = CURL_BLOB_COPY};
        curl_easy_setopt(curl, CURLOPT_SSLCERT_BLOB, &c);
        curl_easy_setopt(curl, CURLOPT_SSLCERTTYPE, "PEM");
        curl_easy_setopt(curl, CURLOPT_SSLKEY_BLOB, &key);
        curl_easy_setopt(curl, CURLOPT_SSLKEYTYPE, "PEM");
    }
    if (k->c.insecure) {
        curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
    }
}

/* ---- REST ---- */

/* /api/v1/namespaces/NS/KIND[/NAME] (name NULL: the collection). */
static char *res_url(pe_provider *p, const char *kind, const char *name)
{
    k8 *k = p->impl;
    char *ens = pe__url_escape(k->ns), *en = name ? pe__url_escape(name) : NULL;
    char *url =
        pe__provider_url(p, "/api/v1/namespaces/%s/%s%s%s", ens, kind, en ? "/" : "", en ? en : "");

    free(ens);
    free(en);
    return url;
}

static int k8_call(pe_provider *p, const char *method, const char *kind, const char *name,
                   json_t *body, bool idempotent, json_t **out, const char *what, pe_err *err)
{
    char *url = res_url(p, kind, name);
    json_t *ans = NULL;
    int r = pe__provider_json_call(p, method, url, NULL, body, idempotent, JSON_OBJECT, &ans, what,
                                   err);

    free(url);
    if (r == 0 && out)
        *out = ans;
    else
        json_decref(ans);
    return r;
}

/* s as the start of a DNS-1123 label: lower case, every other run of
 * characters one '-', none at the ends, at most 40 characters. Returns the
 * length written into base (41 bytes). */
static size_t dns_slug(const char *s, char base[41])
{
    size_t n = 0;

    for (const char *c = s; *c && n < 40; c++) {
        char ch = (char)tolower((unsigned char)*c);
        if (isalnum((unsigned char)ch))
            base[n++] = ch;
        else if (n && base[n - 1] != '-')
            base[n++] = '-';
    }
    while (n && base[n - 1] == '-')
        n--;
    base[n] = '\0';
    return n;
}

/* A DNS-1123 name from ours: PREFIX-NAME-xxxxxxxx (unique, so a name in
 * use by another sandbox or a stopped one's record never collides). */
static char *make_id(const char *prefix, const char *name)
{
    char base[41];
    size_t n = dns_slug(name ? name : "", base);
    unsigned char rnd[4];

    randombytes_buf(rnd, sizeof(rnd));
    return pe_xasprintf("%s-%s%s%02x%02x%02x%02x", prefix, base, n ? "-" : "", rnd[0], rnd[1],
                        rnd[2], rnd[3]);
}

static json_t *pod_manifest(const char *id, const pe_provider_spec *spec, bool has_env)
{
    json_t *ctr, *limits = json_object(), *ports = json_array();
    char v[64];

    /* a loop that ends at once on SIGTERM (pid 1 has no default handler) */
    ctr = json_pack("{s:s, s:s, s:[s,s,s], s:s}", "name", CONTAINER, "image",
                    spec->image && *spec->image ? spec->image : DEFAULT_IMAGE, "command", "sh",
                    "-c", "trap 'exit 0' TERM; while :; do sleep 3600 & wait; done",
                    "imagePullPolicy", "IfNotPresent");
    if (spec->memory_bytes > 0) {
        snprintf(v, sizeof(v), "%lld", (long long)spec->memory_bytes);
        json_object_set_new(limits, "memory", json_string(v));
    }
    if (spec->cpu_millis > 0) {
        snprintf(v, sizeof(v), "%lldm", (long long)spec->cpu_millis);
        json_object_set_new(limits, "cpu", json_string(v));
    }
    if (spec->disk_bytes > 0) {
        snprintf(v, sizeof(v), "%lld", (long long)spec->disk_bytes);
        json_object_set_new(limits, "ephemeral-storage", json_string(v));
    }
    if (json_object_size(limits))
        json_object_set_new(ctr, "resources", json_pack("{s:o}", "limits", limits));
    else
        json_decref(limits);
    for (size_t i = 0; i < spec->n_ports; i++)
        json_array_append_new(ports, json_pack("{s:i}", "containerPort", spec->ports[i]));
    if (json_array_size(ports))
        json_object_set_new(ctr, "ports", ports);
    else
        json_decref(ports);
    if (has_env)
        json_object_set_new(ctr, "envFrom", json_pack("[{s:{s:s}}]", "secretRef", "name", id));
    return json_pack("{s:s, s:s, s:{s:s, s:{s:s}}, s:{s:[o], s:s, s:b, s:b, s:i}}", "apiVersion",
                     "v1", "kind", "Pod", "metadata", "name", id, "labels", MANAGED_LABEL,
                     "pocketenv", "spec", "containers", ctr, "restartPolicy", "Always",
                     "automountServiceAccountToken", false, "enableServiceLinks", false,
                     "terminationGracePeriodSeconds", 5);
}

/* Secret keys (and so envFrom's names): [-._a-zA-Z0-9]+ */
static bool env_name_ok(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.')
            return false;
    return true;
}

static int probe_running(pe_provider *p, const char *id, void *ud, pe_err *err)
{
    json_t *pod = NULL, *st, *cs;
    const char *phase;
    char *name = NULL;
    size_t i;
    int r = 0;

    if (pod_name(p, id, &name, err) < 0)
        return -1;
    if (name == NULL) /* the claim is not bound yet */
        return 0;
    r = k8_call(p, "GET", "pods", name, NULL, true, &pod, "look at a sandbox", err);
    free(name);
    if (r < 0)
        return -1;
    st = json_object_get(pod, "status");
    phase = json_string_value(json_object_get(st, "phase"));
    if (phase && (strcmp(phase, "Failed") == 0 || strcmp(phase, "Succeeded") == 0))
        r = pe_err_set(err, PE_EREMOTE, 0, NAME ": sandbox %s ended (%s)", id, phase);
    json_array_foreach(json_object_get(st, "containerStatuses"), i, cs)
    {
        json_t *waiting = json_object_get(json_object_get(cs, "state"), "waiting");
        const char *why = json_string_value(json_object_get(waiting, "reason"));
        /* the reasons a container will not get past by waiting */
        if (r == 0 && why &&
            (strstr(why, "ErrImage") || strstr(why, "BackOff") ||
             strcmp(why, "InvalidImageName") == 0 || strncmp(why, "CreateContainer", 15) == 0))
            r = pe_err_set(err, PE_EREMOTE, 0, NAME ": sandbox %s cannot start: %s", id, why);
        if (r == 0 && phase && strcmp(phase, "Running") == 0 &&
            json_is_true(json_object_get(cs, "ready")))
            r = 1;
    }
    json_decref(pod);
    return r;
}

/* ---- agent-sandbox (agents.x-k8s.io) ---- */

/* Where the cluster serves the agent-sandbox API, a sandbox is a Sandbox
 * whose controller runs its Pod (named as the Sandbox): stop and start
 * are its spec.replicas (0 or 1), which keeps the Sandbox and its volume
 * claims. Its id says which kind it is, so no call has to look. */
static bool is_crd(const char *id)
{
    return strncmp(id, CRD_PREFIX "-", sizeof(CRD_PREFIX)) == 0;
}

/* A sandbox claimed from a SandboxTemplate (below): its Pod is the bound
 * Sandbox's, whose name the controller chose. */
static bool is_claim(const char *id)
{
    return strncmp(id, CLAIM_PREFIX "-", sizeof(CLAIM_PREFIX)) == 0;
}

/* The group/version of agents.x-k8s.io the cluster prefers (malloc'd), or
 * NULL (and no error) when it does not serve the group. */
static int discover_group(pe_provider *p, const char *group, char **gv, pe_err *err)
{
    char *url = pe__provider_url(p, "/apis/%s", group);
    json_t *g = NULL, *v;
    const char *s;
    int r = pe__provider_json_call(p, "GET", url, NULL, NULL, true, JSON_OBJECT, &g,
                                   "discover the agent-sandbox API", err);

    free(url);
    *gv = NULL;
    if (r < 0) {
        if (err->code != PE_ENOENT)
            return -1;
        pe_err_clear(err);
        return 0;
    }
    v = json_object_get(g, "preferredVersion");
    if (v == NULL)
        v = json_array_get(json_object_get(g, "versions"), 0);
    s = json_string_value(json_object_get(v, "groupVersion"));
    if (s && strncmp(s, group, strlen(group)) == 0 && s[strlen(group)] == '/' &&
        s[strlen(group) + 1])
        *gv = pe_xstrdup(s);
    json_decref(g);
    return 0;
}

static int discover(pe_provider *p, char **gv, pe_err *err)
{
    return discover_group(p, AGENTS_GROUP, gv, err);
}

/* One call on a Sandbox (name NULL: the collection); patch: body is a
 * JSON merge patch. */
static int sandbox_call(pe_provider *p, const char *gv, const char *method, const char *name,
                        json_t *body, bool idempotent, bool patch, const char *what, pe_err *err)
{
    k8 *k = p->impl;
    char *ens = pe__url_escape(k->ns), *en = name ? pe__url_escape(name) : NULL;
    char *url = pe__provider_url(p, "/apis/%s/namespaces/%s/sandboxes%s%s", gv, ens, en ? "/" : "",
                                 en ? en : "");
    pe__preq rq = {.method = method,
                   .url = url,
                   .idempotent = idempotent,
                   .content_type = patch ? "application/merge-patch+json" : NULL};
    json_t *ans = NULL;
    int r = pe__provider_json_req(p, &rq, body, JSON_OBJECT, &ans, what, err);

    json_decref(ans);
    free(url);
    free(ens);
    free(en);
    return r;
}

/* The group/version for a Sandbox-backed id (the cluster must still serve it). */
static int crd_version(pe_provider *p, const char *id, char **gv, pe_err *err)
{
    if (discover(p, gv, err) < 0)
        return -1;
    if (*gv == NULL)
        return pe_err_set(err, PE_EREMOTE, 0,
                          NAME ": sandbox %s is an agent-sandbox Sandbox, but the cluster no "
                               "longer serves " AGENTS_GROUP,
                          id);
    return 0;
}

static int set_replicas(pe_provider *p, const char *id, int n, const char *what, pe_err *err)
{
    json_t *patch = json_pack("{s:{s:i}}", "spec", "replicas", n);
    char *gv = NULL;
    int r = crd_version(p, id, &gv, err);

    if (r == 0)
        r = sandbox_call(p, gv, "PATCH", id, patch, true, true, what, err);
    json_decref(patch);
    free(gv);
    return r;
}

static json_t *sandbox_manifest(const char *gv, const char *id, json_t *pod)
{
    json_t *labels = json_object_get(json_object_get(pod, "metadata"), "labels");

    return json_pack("{s:s, s:s, s:{s:s, s:O}, s:{s:{s:{s:O}, s:O}, s:i}}", "apiVersion", gv,
                     "kind", "Sandbox", "metadata", "name", id, "labels", labels, "spec",
                     "podTemplate", "metadata", "labels", labels, "spec",
                     json_object_get(pod, "spec"), "replicas", 1);
}

/* ---- SandboxTemplate, SandboxClaim and warm pools (extensions.agents.x-k8s.io) ----
 *
 * Where the cluster also serves the extensions, a create claims a Sandbox
 * rather than making one: a SandboxClaim named as our id referencing the
 * SandboxTemplate made for the image, which the controller binds to a
 * warm Sandbox of a SandboxWarmPool of that template (or to a fresh one
 * when the pool is empty or there is none). The template is named from
 * the image, pe-<image as a DNS label, up to 40>-<8 hex of its hash>, so
 * an operator can keep a warm pool of it (docs/providers.md); it is made
 * at the first create of the image and never deleted by us. A warm Pod
 * started before the sandbox existed, so the sandbox's environment
 * (its record, as for the other kinds) is given to each exec. */

static int ext_call(pe_provider *p, const char *gv, const char *method, const char *kind,
                    const char *name, json_t *body, bool idempotent, json_t **out, const char *what,
                    pe_err *err)
{
    k8 *k = p->impl;
    char *ens = pe__url_escape(k->ns), *en = name ? pe__url_escape(name) : NULL;
    char *url = pe__provider_url(p, "/apis/%s/namespaces/%s/%s%s%s", gv, ens, kind, en ? "/" : "",
                                 en ? en : "");
    json_t *ans = NULL;
    int r = pe__provider_json_call(p, method, url, NULL, body, idempotent, JSON_OBJECT, &ans, what,
                                   err);

    free(url);
    free(ens);
    free(en);
    if (r == 0 && out)
        *out = ans;
    else
        json_decref(ans);
    return r;
}

/* POST body to the collection; 409 (made already, by us or the operator)
 * is what was asked. */
static int post_unless_there(pe_provider *p, const char *gv, const char *kind, json_t *body,
                             const char *what, pe_err *err)
{
    k8 *k = p->impl;
    char *ens = pe__url_escape(k->ns), *text = json_dumps(body, JSON_COMPACT);
    char *url = pe__provider_url(p, "/apis/%s/namespaces/%s/%s", gv, ens, kind);
    pe__preq rq = {.method = "POST",
                   .url = url,
                   .content_type = "application/json",
                   .body = text,
                   .body_len = strlen(text)};
    pe__presp rs;
    int r = pe__provider_http(p, &rq, &rs, what, err);

    if (r < 0 && rs.status == 409) {
        pe_err_clear(err);
        r = 0;
    }
    pe__presp_free(&rs);
    free(text);
    free(url);
    free(ens);
    return r;
}

static char *template_name(const char *image)
{
    unsigned char h[4];
    char base[41];
    size_t n = dns_slug(image, base);

    crypto_generichash(h, sizeof(h), (const unsigned char *)image, strlen(image), NULL, 0);
    return pe_xasprintf("pe-%s%s%02x%02x%02x%02x", base, n ? "-" : "", h[0], h[1], h[2], h[3]);
}

/* The template for pod's image, made unless it is there (409). */
static int ensure_template(pe_provider *p, const char *gv, const char *tpl, const char *image,
                           json_t *pod, pe_err *err)
{
    json_t *spec = json_deep_copy(json_object_get(pod, "spec")), *labels, *body;
    json_t *ctr = json_array_get(json_object_get(spec, "containers"), 0);
    int r;

    /* one template per image, shared: nothing of one sandbox goes in (the
     * warm Pod has no sandbox yet) */
    json_object_del(ctr, "envFrom");
    json_object_del(ctr, "resources");
    json_object_del(ctr, "ports");
    labels = json_pack("{s:s}", MANAGED_LABEL, "pocketenv");
    body = json_pack("{s:s, s:s, s:{s:s, s:O, s:{s:s}}, s:{s:{s:{s:O}, s:o}}}", "apiVersion", gv,
                     "kind", "SandboxTemplate", "metadata", "name", tpl, "labels", labels,
                     "annotations", IMAGE_ANNOTATION, image, "spec", "podTemplate", "metadata",
                     "labels", labels, "spec", spec);
    json_decref(labels);
    r = post_unless_there(p, gv, "sandboxtemplates", body, "create a sandbox template", err);
    json_decref(body);
    return r;
}

static int claim(pe_provider *p, const char *gv, const char *id, const char *tpl, pe_err *err)
{
    json_t *body = json_pack("{s:s, s:s, s:{s:s, s:{s:s}}, s:{s:{s:s}}}", "apiVersion", gv, "kind",
                             "SandboxClaim", "metadata", "name", id, "labels", MANAGED_LABEL,
                             "pocketenv", "spec", "sandboxTemplateRef", "name", tpl);
    int r =
        ext_call(p, gv, "POST", "sandboxclaims", NULL, body, false, NULL, "claim a sandbox", err);

    json_decref(body);
    return r;
}

/* The Pod (and Sandbox) name of sandbox id into *name (malloc'd): id
 * itself, or the Sandbox a claim is bound to; *name NULL while the claim
 * is not bound yet. PE_ENOENT: no such claim. */
static int pod_name(pe_provider *p, const char *id, char **name, pe_err *err)
{
    json_t *c = NULL, *sb;
    char *gv = NULL;
    const char *s;

    *name = NULL;
    if (!is_claim(id)) {
        *name = pe_xstrdup(id);
        return 0;
    }
    if (discover_group(p, EXT_GROUP, &gv, err) < 0)
        return -1;
    if (gv == NULL)
        return pe_err_set(
            err, PE_EREMOTE, 0,
            NAME ": sandbox %s is a SandboxClaim, but the cluster no longer serves " EXT_GROUP, id);
    if (ext_call(p, gv, "GET", "sandboxclaims", id, NULL, true, &c, "look at a sandbox", err) < 0) {
        free(gv);
        return -1;
    }
    free(gv);
    sb = json_object_get(json_object_get(c, "status"), "sandbox");
    s = json_string_value(json_object_get(sb, "name"));
    if (s == NULL) /* older controllers */
        s = json_string_value(json_object_get(sb, "Name"));
    if (s && *s)
        *name = pe_xstrdup(s);
    json_decref(c);
    return 0;
}

static int k8_create(pe_provider *p, const pe_provider_spec *spec, char **id, pe_err *err)
{
    char *sid, *podtext, *gv = NULL, *xgv = NULL;
    json_t *env = json_object(), *pod, *rec;
    pe_err ignored;
    int r;

    if (discover(p, &gv, err) < 0 || (gv && discover_group(p, EXT_GROUP, &xgv, err) < 0)) {
        json_decref(env);
        free(gv);
        return -1;
    }
    sid = make_id(xgv ? CLAIM_PREFIX : gv ? CRD_PREFIX : "pe", spec->name);

    for (char *const *e = spec->env; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        char *k;
        if (eq == NULL || !env_name_ok(*e, (size_t)(eq - *e))) {
            json_decref(env);
            free(sid);
            free(gv);
            free(xgv);
            return pe_err_set(err, PE_EINVAL, 0,
                              NAME ": create a sandbox: environment names are letters, digits, "
                                   "'-', '_' and '.'");
        }
        k = pe_xasprintf("%.*s", (int)(eq - *e), *e);
        json_object_set_new(env, k, json_string(eq + 1));
        free(k);
    }
    pod = pod_manifest(sid, spec, json_object_size(env) > 0);
    podtext = json_dumps(pod, JSON_COMPACT);
    rec = json_pack("{s:s, s:s, s:{s:s, s:{s:s}, s:{s:s}}, s:s, s:o}", "apiVersion", "v1", "kind",
                    "Secret", "metadata", "name", sid, "labels", MANAGED_LABEL, "pocketenv",
                    "annotations", POD_ANNOTATION, podtext, "type", "Opaque", "stringData", env);
    free(podtext);
    r = k8_call(p, "POST", "secrets", NULL, rec, false, NULL, "create a sandbox's record", err);
    json_decref(rec);
    if (r == 0) {
        if (xgv) {
            const char *image = spec->image && *spec->image ? spec->image : DEFAULT_IMAGE;
            char *tpl = template_name(image);
            r = ensure_template(p, xgv, tpl, image, pod, err);
            if (r == 0)
                r = claim(p, xgv, sid, tpl, err);
            free(tpl);
        } else if (gv) {
            json_t *sbx = sandbox_manifest(gv, sid, pod);
            r = sandbox_call(p, gv, "POST", NULL, sbx, false, false, "create a sandbox", err);
            json_decref(sbx);
        } else
            r = k8_call(p, "POST", "pods", NULL, pod, false, NULL, "create a sandbox", err);
        if (r < 0) /* the record alone is a leak too */
            k8_call(p, "DELETE", "secrets", sid, NULL, true, NULL, "delete a sandbox's record",
                    &ignored);
    }
    json_decref(pod);
    free(gv);
    free(xgv);
    if (r < 0) {
        free(sid);
        return -1;
    }
    *id = sid;
    return pe__provider_create_settle(p, spec, id, "running", probe_running, NULL, err);
}

static int probe_gone(pe_provider *p, const char *id, void *ud, pe_err *err)
{
    char *name = NULL;
    int r = pod_name(p, id, &name, err);

    if (r == 0 && name == NULL)
        return 1;
    if (r == 0)
        r = k8_call(p, "GET", "pods", name, NULL, true, NULL, "look at a sandbox", err);
    free(name);

    if (r < 0 && err->code == PE_ENOENT) {
        pe_err_clear(err);
        return 1;
    }
    return r < 0 ? -1 : 0;
}

static int no_sandbox(pe_provider *p, const char *id, pe_err *err)
{
    k8 *k = p->impl;

    pe_err_clear(err);
    return pe_err_set(err, PE_ENOENT, 0, NAME ": no sandbox %s in namespace %s", id, k->ns);
}

static int k8_stop(pe_provider *p, const char *id, pe_err *err)
{
    int r;

    if (is_crd(id) || is_claim(id)) { /* the Sandbox, ours or the one bound to our claim */
        char *name = NULL;
        if (pod_name(p, id, &name, err) == 0 && name == NULL)
            pe_err_set(err, PE_ESTATE, 0, NAME ": sandbox %s is not bound yet", id);
        r = name ? set_replicas(p, name, 0, "stop a sandbox", err) : -1;
        free(name);
        if (r < 0)
            return err->code == PE_ENOENT ? no_sandbox(p, id, err) : -1;
        return pe__provider_poll(p, id, "stopped", probe_gone, NULL, err);
    }
    r = k8_call(p, "DELETE", "pods", id, NULL, true, NULL, "stop a sandbox", err);

    if (r < 0 && err->code == PE_ENOENT) { /* stopped already, if its record is there */
        pe_err_clear(err);
        if (k8_call(p, "GET", "secrets", id, NULL, true, NULL, "look at a sandbox", err) < 0)
            return err->code == PE_ENOENT ? no_sandbox(p, id, err) : -1;
        return 0;
    }
    if (r < 0)
        return -1;
    /* the Pod terminates for a while: a start before it is gone would clash */
    return pe__provider_poll(p, id, "stopped", probe_gone, NULL, err);
}

/* The Pod of a stopped sandbox, made again; 409 (its Pod is there
 * already: started, or still terminating) is what was asked. */
static int post_again(pe_provider *p, json_t *pod, pe_err *err)
{
    char *url = res_url(p, "pods", NULL), *body = json_dumps(pod, JSON_COMPACT);
    pe__preq rq = {.method = "POST",
                   .url = url,
                   .content_type = "application/json",
                   .body = body,
                   .body_len = strlen(body)};
    pe__presp rs;
    int r = pe__provider_http(p, &rq, &rs, "start a sandbox", err);

    if (r < 0 && rs.status == 409) {
        pe_err_clear(err);
        r = 0;
    }
    pe__presp_free(&rs);
    free(body);
    free(url);
    return r;
}

static int k8_start(pe_provider *p, const char *id, pe_err *err)
{
    json_t *rec = NULL, *pod;
    const char *text;
    int r;

    if (is_crd(id) || is_claim(id)) {
        char *name = NULL;
        if (pod_name(p, id, &name, err) == 0 && name == NULL)
            pe_err_set(err, PE_ESTATE, 0, NAME ": sandbox %s is not bound yet", id);
        r = name ? set_replicas(p, name, 1, "start a sandbox", err) : -1;
        free(name);
        if (r < 0)
            return err->code == PE_ENOENT ? no_sandbox(p, id, err) : -1;
        return pe__provider_poll(p, id, "running", probe_running, NULL, err);
    }
    if (k8_call(p, "GET", "secrets", id, NULL, true, &rec, "start a sandbox", err) < 0)
        return err->code == PE_ENOENT ? no_sandbox(p, id, err) : -1;
    text = json_string_value(json_object_get(
        json_object_get(json_object_get(rec, "metadata"), "annotations"), POD_ANNOTATION));
    pod = text ? json_loads(text, 0, NULL) : NULL;
    json_decref(rec);
    if (!json_is_object(pod)) {
        json_decref(pod);
        return pe_err_set(err, PE_EREMOTE, 0,
                          NAME ": start a sandbox: %s's record has no Pod manifest", id);
    }
    r = post_again(p, pod, err);
    json_decref(pod);
    if (r < 0)
        return -1;
    return pe__provider_poll(p, id, "running", probe_running, NULL, err);
}

static int k8_remove(pe_provider *p, const char *id, pe_err *err)
{
    int pod;

    if (is_crd(id)) { /* the Sandbox first: its controller would make the Pod again */
        char *gv = NULL;
        if (crd_version(p, id, &gv, err) < 0)
            return -1;
        pod = sandbox_call(p, gv, "DELETE", id, NULL, true, false, "remove a sandbox", err);
        free(gv);
    } else if (is_claim(id)) { /* the claim: its controller deletes the Sandbox it bound */
        char *gv = NULL;
        if (discover_group(p, EXT_GROUP, &gv, err) < 0)
            return -1;
        pod = gv ? ext_call(p, gv, "DELETE", "sandboxclaims", id, NULL, true, NULL,
                            "remove a sandbox", err)
                 : pe_err_set(err, PE_EREMOTE, 0,
                              NAME ": sandbox %s is a SandboxClaim, but the cluster no longer "
                                   "serves " EXT_GROUP,
                              id);
        free(gv);
        if (pod < 0 && err->code == PE_EREMOTE)
            return -1;
    } else
        pod = k8_call(p, "DELETE", "pods", id, NULL, true, NULL, "remove a sandbox", err);

    if (pod < 0 && err->code != PE_ENOENT)
        return -1;
    pe_err_clear(err);
    if (k8_call(p, "DELETE", "secrets", id, NULL, true, NULL, "remove a sandbox", err) < 0) {
        if (err->code != PE_ENOENT)
            return -1;
        if (pod < 0)
            return no_sandbox(p, id, err);
        pe_err_clear(err);
    }
    return 0;
}

static int k8_status(pe_provider *p, const char *id, pe_provider_status *st, pe_err *err)
{
    json_t *pod = NULL;
    const char *phase;
    char *name = NULL;
    int r;

    if (pod_name(p, id, &name, err) < 0)
        return err->code == PE_ENOENT ? no_sandbox(p, id, err) : -1;
    if (name == NULL) {
        snprintf(st->raw, sizeof(st->raw), "Unbound");
        st->state = PE_PSTATE_CREATING;
        return 0;
    }
    r = k8_call(p, "GET", "pods", name, NULL, true, &pod, "look at a sandbox", err);
    free(name);
    if (r < 0) {
        if (err->code != PE_ENOENT)
            return -1;
        pe_err_clear(err);
        if (k8_call(p, "GET", "secrets", id, NULL, true, NULL, "look at a sandbox", err) < 0)
            return err->code == PE_ENOENT ? no_sandbox(p, id, err) : -1;
        snprintf(st->raw, sizeof(st->raw), "stopped");
        st->state = PE_PSTATE_STOPPED;
        return 0;
    }
    phase = json_string_value(json_object_get(json_object_get(pod, "status"), "phase"));
    snprintf(st->raw, sizeof(st->raw), "%s", phase ? phase : "");
    if (json_object_get(json_object_get(pod, "metadata"), "deletionTimestamp")) {
        snprintf(st->raw, sizeof(st->raw), "Terminating");
        st->state = PE_PSTATE_STOPPED;
    } else if (phase && strcmp(phase, "Running") == 0)
        st->state = PE_PSTATE_RUNNING;
    else if (phase && strcmp(phase, "Pending") == 0)
        st->state = PE_PSTATE_CREATING;
    else if (phase)
        st->state = PE_PSTATE_ERROR;
    json_decref(pod);
    return 0;
}

/* ---- exec over the exec subresource ---- */

/* The exit code from channel 3's Status: 1 with *code; 0 when the JSON is
 * not whole yet; -1 with msg for a failure that has no exit code. A
 * command the runtime cannot find is 127 with msg (as a shell says it). */
static int parse_status(const char *buf, size_t len, int *code, char *msg, size_t msize)
{
    json_t *v = json_loadb(buf, len, 0, NULL), *c;
    const char *status, *m;
    size_t i;
    int r = -1;

    msg[0] = '\0';
    if (v == NULL)
        return 0;
    status = json_string_value(json_object_get(v, "status"));
    m = json_string_value(json_object_get(v, "message"));
    if (status && strcmp(status, "Success") == 0) {
        *code = 0;
        r = 1;
    }
    json_array_foreach(json_object_get(json_object_get(v, "details"), "causes"), i, c)
    {
        const char *reason = json_string_value(json_object_get(c, "reason"));
        const char *cm = json_string_value(json_object_get(c, "message"));
        if (r < 0 && reason && strcmp(reason, "ExitCode") == 0 && cm) {
            *code = atoi(cm);
            r = 1;
        }
    }
    if (r < 0) {
        snprintf(msg, msize, "%s", m ? m : "the exec failed without a reason");
        if (m && (strstr(m, "not found") || strstr(m, "no such file"))) {
            *code = 127;
            r = 1;
        } else
            *code = -1;
    }
    json_decref(v);
    return r;
}

/* The command as the container runs it: env and workdir through sh and
 * env, since the exec subresource takes neither. NULL-terminated,
 * borrowed strings but the array (free it). */
static char **wrap_argv(const pe_provider_exec_opts *o)
{
    size_t n = 0, m = 0;
    char **out;

    for (char *const *a = o->argv; *a; a++)
        n++;
    for (char *const *e = o->env; e && *e; e++)
        m++;
    out = pe_xcalloc(n + m + 10, sizeof(*out));
    n = 0;
    if (o->workdir) {
        out[n++] = (char *)"sh";
        out[n++] = (char *)"-c";
        out[n++] = (char *)"cd \"$0\" && exec \"$@\"";
        out[n++] = (char *)o->workdir;
    }
    if (m) {
        out[n++] = (char *)"env";
        for (char *const *e = o->env; *e; e++)
            out[n++] = *e;
    }
    /* a terminal's bash where the image may have none (busybox, alpine):
     * the cluster runs images we did not build, so fall back to sh */
    if (o->tty && strcmp(o->argv[0], "bash") == 0) {
        out[n++] = (char *)"sh";
        out[n++] = (char *)"-c";
        out[n++] = (char *)"command -v bash >/dev/null && exec bash \"$@\"; exec sh \"$@\"";
        out[n++] = (char *)"sh";
        for (char *const *a = o->argv + 1; *a; a++)
            out[n++] = *a;
        return out;
    }
    for (char *const *a = o->argv; *a; a++)
        out[n++] = *a;
    return out;
}

static void add_param(char **q, const char *name, const char *value)
{
    char *e = pe__url_escape(value), *j = pe_xasprintf("%s&%s=%s", *q, name, e);

    free(e);
    free(*q);
    *q = j;
}

/* Open the exec WebSocket; *v5 says whether stdin can be closed. */
static int exec_open(pe_provider *p, const char *id, char *const *argv, bool in, bool tty,
                     const char *what, pe__ws **ws, bool *v5, pe_err *err)
{
    static const char *const hdrs[] = {
        "Sec-WebSocket-Protocol: v5.channel.k8s.io, v4.channel.k8s.io", NULL};
    char *q, *base, *url, proto[64], *name = NULL;
    int r;

    if (pod_name(p, id, &name, err) < 0)
        return err->code == PE_ENOENT ? no_sandbox(p, id, err) : -1;
    if (name == NULL)
        return pe_err_set(err, PE_ESTATE, 0, NAME ": sandbox %s is not bound yet", id);
    q = pe_xstrdup("container=" CONTAINER);
    base = res_url(p, "pods", name);
    free(name);

    add_param(&q, "stdout", "true");
    add_param(&q, "stderr", tty ? "false" : "true");
    add_param(&q, "stdin", in || tty ? "true" : "false");
    add_param(&q, "tty", tty ? "true" : "false");
    for (char *const *a = argv; *a; a++)
        add_param(&q, "command", *a);
    url = pe_xasprintf("%s/exec?%s", base, q);
    free(q);
    free(base);
    r = pe__ws_open(p, url, hdrs, what, ws, err);
    free(url);
    if (r < 0)
        return -1;
    if (!pe__ws_header(*ws, "Sec-WebSocket-Protocol", proto, sizeof(proto)) ||
        (strcmp(proto, "v5.channel.k8s.io") != 0 && strcmp(proto, "v4.channel.k8s.io") != 0)) {
        pe__ws_free(*ws);
        *ws = NULL;
        return pe_err_set(err, PE_EREMOTE, 0,
                          NAME ": %s: the API server speaks neither v5 nor v4.channel.k8s.io",
                          what);
    }
    *v5 = proto[1] == '5';
    return 0;
}

static int send_channel(pe__ws *ws, unsigned char ch, const void *data, size_t len)
{
    unsigned char *frame = pe_xmalloc(len + 1);
    int r;

    frame[0] = ch;
    memcpy(frame + 1, data, len);
    r = pe__ws_send(ws, WSLAY_BINARY_FRAME, frame, len + 1);
    free(frame);
    return r;
}

static int send_resize(pe__ws *ws, unsigned short cols, unsigned short rows)
{
    char msg[64];
    int n = snprintf(msg, sizeof(msg), "{\"Width\":%u,\"Height\":%u}", cols, rows);

    return send_channel(ws, 4, msg, (size_t)n);
}

typedef struct k8_exec {
    bool v5;
    char *status;
    size_t status_len;
} k8_exec;

static void k8_exec_free(void *ud)
{
    k8_exec *x = ud;

    free(x->status);
    free(x);
}

static void k8_msg(struct pe_provider_stream *s, int opcode, const unsigned char *data, size_t len)
{
    k8_exec *x = s->ud;
    char msg[512];
    int code = -1, r;

    if ((opcode != WSLAY_BINARY_FRAME && opcode != WSLAY_TEXT_FRAME) || len < 2)
        return; /* the servers' first empty message on each channel */
    if (data[0] == 1 || data[0] == 2) {
        pe__stream_output(s, data[0], data + 1, len - 1);
        return;
    }
    if (data[0] != 3 || x->status_len + len > 65536)
        return;
    x->status = pe_xrealloc(x->status, x->status_len + len);
    memcpy(x->status + x->status_len, data + 1, len - 1);
    x->status_len += len - 1;
    r = parse_status(x->status, x->status_len, &code, msg, sizeof(msg));
    if (r == 0)
        return;
    if (code == 127) {
        size_t n = strlen(msg);
        msg[n < sizeof(msg) - 1 ? n : n - 1] = '\n';
        pe__stream_output(s, 2, msg, n < sizeof(msg) - 1 ? n + 1 : n);
    }
    if (r < 0)
        snprintf(s->error, sizeof(s->error), NAME ": exec: %s", msg);
    else
        pe__stream_exit(s, code);
}

static int k8_input(struct pe_provider_stream *s, const unsigned char *data, size_t len)
{
    k8_exec *x = s->ud;
    static const unsigned char close_stdin[] = {255, 0};

    if (len)
        return send_channel(s->ws, 0, data, len);
    /* EOF: only v5 can say it; on v4 the process reads on until it ends */
    return x->v5 && !s->tty ? pe__ws_send(s->ws, WSLAY_BINARY_FRAME, close_stdin, 2) : 0;
}

static int k8_resize(struct pe_provider_stream *s, unsigned short cols, unsigned short rows)
{
    return send_resize(s->ws, cols, rows);
}

/* The exec protocol has no signal: ending the session is all there is
 * (the API server then ends the process's streams; see docs). */
static void k8_kill(struct pe_provider_stream *s)
{
    pe__ws_close(s->ws, 1000);
}

static const pe__stream_ops k8_ops = {.on_msg = k8_msg,
                                      .on_input = k8_input,
                                      .on_resize = k8_resize,
                                      .on_kill = k8_kill,
                                      .free_ud = k8_exec_free};

/* A claimed sandbox's environment, from its record, before the caller's
 * own (a later NAME= wins): its warm Pod was made without it. NULL-
 * terminated "NAME=value" strings (wiped and freed by env_free). */
static char **record_env(pe_provider *p, const char *id, char *const *more, pe_err *err)
{
    json_t *rec = NULL, *data, *v;
    const char *k;
    size_t n = 0, m = 0;
    char **env;

    if (k8_call(p, "GET", "secrets", id, NULL, true, &rec, "read a sandbox's record", err) < 0)
        return NULL;
    data = json_object_get(rec, "data");
    for (char *const *e = more; e && *e; e++)
        m++;
    env = pe_xcalloc(json_object_size(data) + m + 1, sizeof(*env));
    json_object_foreach(data, k, v)
    {
        const char *b64 = json_string_value(v);
        size_t cap = b64 ? strlen(b64) : 0, len = 0;
        unsigned char *buf = pe_xmalloc(cap + 1);
        if (b64 && sodium_base642bin(buf, cap, b64, cap, NULL, &len, NULL,
                                     sodium_base64_VARIANT_ORIGINAL) == 0)
            env[n++] = pe_xasprintf("%s=%.*s", k, (int)len, (const char *)buf);
        sodium_memzero(buf, cap + 1);
        free(buf);
    }
    for (char *const *e = more; e && *e; e++)
        env[n++] = pe_xstrdup(*e);
    json_decref(rec); /* jansson's copy of the values goes to the allocator as it is */
    return env;
}

static void env_free(char **env)
{
    for (char **e = env; e && *e; e++)
        pe__secret_free(*e);
    free(env);
}

static int k8_exec_start(pe_provider *p, const char *id, const pe_provider_exec_opts *o,
                         pe_provider_proc *proc, pe_err *err)
{
    pe_provider_exec_opts eo = *o;
    char **env = NULL, **argv;
    k8_exec *x;
    pe__ws *ws = NULL;
    int r;

    if (is_claim(id)) {
        env = record_env(p, id, o->env, err);
        if (env == NULL)
            return err->code == PE_ENOENT ? no_sandbox(p, id, err) : -1;
        eo.env = env;
    }
    argv = wrap_argv(&eo);
    x = pe_xcalloc(1, sizeof(*x));
    r = exec_open(p, id, argv, o->stdin_pipe, o->tty, o->tty ? "open a terminal" : "exec", &ws,
                  &x->v5, err);
    free(argv);
    env_free(env);
    if (r < 0) {
        free(x);
        return -1;
    }
    /* the terminal's first size travels as a resize, as kubectl sends it */
    if (o->tty)
        send_resize(ws, o->cols ? o->cols : 80, o->rows ? o->rows : 24);
    return pe__stream_start(p, &k8_ops, x, ws, o->tty, o->stdin_pipe, proc, err);
}

/* ---- one command with its input, run to the end (the file calls) ---- */

typedef struct k8_run {
    char *out;
    size_t out_len, max;
    bool too_big;
    char errs[STDERR_KEEP];
    size_t errs_len;
    char *status;
    size_t status_len;
} k8_run;

static void run_msg(void *ud, int opcode, const unsigned char *data, size_t len)
{
    k8_run *r = ud;

    if ((opcode != WSLAY_BINARY_FRAME && opcode != WSLAY_TEXT_FRAME) || len < 2)
        return;
    data++;
    len--;
    if (data[-1] == 1) {
        if (r->out_len + len > r->max) {
            r->too_big = true;
            return;
        }
        r->out = pe_xrealloc(r->out, r->out_len + len + 1);
        memcpy(r->out + r->out_len, data, len);
        r->out_len += len;
    } else if (data[-1] == 2) {
        size_t n =
            len < sizeof(r->errs) - 1 - r->errs_len ? len : sizeof(r->errs) - 1 - r->errs_len;
        memcpy(r->errs + r->errs_len, data, n);
        r->errs_len += n;
        r->errs[r->errs_len] = '\0';
    } else if (data[-1] == 3 && r->status_len + len <= 65536) {
        r->status = pe_xrealloc(r->status, r->status_len + len);
        memcpy(r->status + r->status_len, data, len);
        r->status_len += len;
    }
}

/* sh -c SCRIPT ARG (the script reads ARG as "$0") with in as stdin; stdout kept up to max. The exit
 * code in *code; stderr's first line in r->errs. */
static int run_script(pe_provider *p, const char *id, const char *script, const char *arg,
                      const void *in, size_t in_len, size_t max, k8_run *run, int *code,
                      const char *what, pe_err *err)
{
    char *argv[] = {(char *)"sh", (char *)"-c", (char *)script, (char *)arg, NULL};
    /* the call's deadline, and a second more for each MiB it carries */
    int64_t deadline =
        pe_monotonic_ms() + p->cfg.timeout_ms + (int64_t)((in_len + max) >> 20) * 1000;
    static const unsigned char close_stdin[] = {255, 0};
    pe__ws *ws = NULL;
    bool v5 = false;
    char msg[512];
    int r, st;

    memset(run, 0, sizeof(*run));
    run->max = max;
    if (exec_open(p, id, argv, in != NULL, false, what, &ws, &v5, err) < 0)
        return -1;
    if (in && !v5) {
        pe__ws_free(ws);
        return pe_err_set(err, PE_ENOTCAP, 0,
                          "not supported by " NAME ": %s without the v5.channel.k8s.io exec "
                          "protocol (Kubernetes 1.30 or later)",
                          what);
    }
    for (size_t off = 0; in && off < in_len; off += 32768)
        send_channel(ws, 0, (const char *)in + off, in_len - off < 32768 ? in_len - off : 32768);
    if (in)
        pe__ws_send(ws, WSLAY_BINARY_FRAME, close_stdin, 2);
    while ((r = pe__ws_step(ws, deadline, run_msg, run)) == 0)
        ;
    pe__ws_free(ws);
    if (r == -2)
        return pe__provider_fail(p, err, PE_ETIMEDOUT, NAME " did not answer %s in time", what);
    if (run->too_big)
        return pe_err_set(err, PE_EINVAL, 0, NAME ": %s: more than %zu bytes", what, max);
    st = parse_status(run->status ? run->status : "", run->status_len, code, msg, sizeof(msg));
    if (st == 0)
        return pe_err_set(err, PE_EREMOTE, 0,
                          NAME ": %s: the stream ended before the exit code arrived", what);
    if (st < 0 || *code == 127)
        return pe_err_set(err, PE_EREMOTE, 0, NAME ": %s: %s", what, msg);
    return 0;
}

static void run_free(k8_run *r)
{
    free(r->out);
    free(r->status);
}

/* An exit code of our scripts as an error about path. */
static int script_error(const k8_run *run, int code, const char *what, const char *path,
                        pe_err *err)
{
    if (code == EXIT_NOENT)
        return pe_err_set(err, PE_ENOENT, 0, NAME ": %s %s: no such file or directory", what, path);
    if (code == EXIT_KIND)
        return pe_err_set(err, PE_EINVAL, 0, NAME ": %s %s: not that kind of file", what, path);
    return pe_err_set(err, PE_EREMOTE, 0, NAME ": %s %s: exit %d: %.*s", what, path, code,
                      (int)strcspn(run->errs, "\n"), run->errs);
}

static struct archive *tar_reader(const void *tar, size_t len)
{
    struct archive *a = archive_read_new();

    archive_read_support_format_tar(a);
    archive_read_support_format_gnutar(a);
    if (archive_read_open_memory(a, tar, len) != ARCHIVE_OK) {
        archive_read_free(a);
        return NULL;
    }
    return a;
}

static struct archive *tar_writer(pe__tar_membuf *m)
{
    struct archive *a = archive_write_new();

    archive_write_set_format_pax_restricted(a);
    archive_write_set_bytes_in_last_block(a, 1);
    archive_write_open2(a, m, NULL, pe__tar_membuf_write, NULL, NULL);
    return a;
}

static const char SCRIPT_READ[] =
    "test -e \"$0\" || exit 44; test -d \"$0\" && exit 45; cd \"$(dirname \"$0\")\" && "
    "exec tar cf - \"./$(basename \"$0\")\"";
static const char SCRIPT_UNTAR[] = "mkdir -p \"$0\" && cd \"$0\" && exec tar xf -";
static const char SCRIPT_TAR[] = "cd \"$0\" 2>/dev/null || exit 44; exec tar cf - .";
static const char SCRIPT_LIST[] =
    "test -e \"$0\" || exit 44; cd \"$0\" 2>/dev/null || exit 45; "
    "for f in * .[!.]* ..?*; do if [ -e \"$f\" ] || [ -L \"$f\" ]; then "
    "stat -c '%f %s %n' \"./$f\"; fi; done";

static int k8_file_read(pe_provider *p, const char *id, const char *path, size_t max, char **data,
                        size_t *len, pe_err *err)
{
    k8_run run;
    struct archive *a;
    struct archive_entry *e;
    int code = 0, r = -1;

    if (run_script(p, id, SCRIPT_READ, path, NULL, 0, max + (64u << 10), &run, &code, "read a file",
                   err) < 0) {
        run_free(&run);
        return -1;
    }
    if (code != 0) {
        r = script_error(&run, code, "read", path, err);
        run_free(&run);
        return r;
    }
    a = tar_reader(run.out ? run.out : "", run.out_len);
    if (a && archive_read_next_header(a, &e) == ARCHIVE_OK &&
        archive_entry_filetype(e) == AE_IFREG) {
        size_t size = (size_t)archive_entry_size(e);
        if (size > max)
            r = pe_err_set(err, PE_EINVAL, 0, NAME ": read %s: larger than %zu bytes", path, max);
        else {
            *data = pe_xmalloc(size + 1);
            *len = 0;
            while (*len < size) {
                la_ssize_t n = archive_read_data(a, *data + *len, size - *len);
                if (n <= 0)
                    break;
                *len += (size_t)n;
            }
            (*data)[*len] = '\0';
            r = 0;
        }
    } else
        r = pe_err_set(err, PE_EREMOTE, 0, NAME ": read %s: tar in the sandbox sent no file", path);
    if (a)
        archive_read_free(a);
    run_free(&run);
    return r;
}

/* The directory part and the last name of an absolute or relative path. */
static void split_path(const char *path, char **dir, const char **base)
{
    const char *slash = strrchr(path, '/');

    *dir = slash == NULL   ? pe_xstrdup(".")
           : slash == path ? pe_xstrdup("/")
                           : pe_xasprintf("%.*s", (int)(slash - path), path);
    *base = slash ? slash + 1 : path;
}

static int untar(pe_provider *p, const char *id, const char *dir, const void *tar, size_t len,
                 const char *what, pe_err *err)
{
    k8_run run;
    int code = 0,
        r = run_script(p, id, SCRIPT_UNTAR, dir, tar, len, 1u << 16, &run, &code, what, err);

    if (r == 0 && code != 0)
        r = script_error(&run, code, what, dir, err);
    run_free(&run);
    return r;
}

static int k8_file_write(pe_provider *p, const char *id, const char *path, const void *data,
                         size_t len, unsigned mode, pe_err *err)
{
    pe__tar_membuf m = {.max = len + (1u << 20)};
    struct archive *a = tar_writer(&m);
    struct archive_entry *e = archive_entry_new();
    const char *base;
    char *dir;
    int r;

    split_path(path, &dir, &base);
    if (*base == '\0' || strcmp(base, ".") == 0 || strcmp(base, "..") == 0) {
        archive_entry_free(e);
        archive_write_free(a);
        free(dir);
        return pe_err_set(err, PE_EINVAL, 0, NAME ": write %s: not a file name", path);
    }
    archive_entry_set_pathname(e, base);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, mode ? mode & 07777 : 0644);
    archive_entry_set_size(e, (la_int64_t)len);
    archive_entry_set_mtime(e, time(NULL), 0);
    if (archive_write_header(a, e) != ARCHIVE_OK ||
        (len && archive_write_data(a, data, len) != (la_ssize_t)len) ||
        archive_write_close(a) != ARCHIVE_OK)
        r = pe_err_set(err, PE_EINVAL, 0, NAME ": write %s: %s", path, archive_error_string(a));
    else
        r = untar(p, id, dir, m.buf, m.len, "write", err);
    archive_entry_free(e);
    archive_write_free(a);
    free(dir);
    free(m.buf);
    return r < 0 ? -1 : 0;
}

static int k8_file_list(pe_provider *p, const char *id, const char *path, pe_provider_dirent **ents,
                        size_t *n, pe_err *err)
{
    k8_run run;
    int code = 0;
    size_t cap = 0;
    char *line, *save = NULL;

    *ents = NULL;
    *n = 0;
    if (run_script(p, id, SCRIPT_LIST, path, NULL, 0, 16u << 20, &run, &code, "list files", err) <
            0 ||
        (code != 0 && script_error(&run, code, "list", path, err) < 0)) {
        run_free(&run);
        return -1;
    }
    for (line = strtok_r(run.out ? run.out : (char *)"", "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        unsigned mode = 0;
        unsigned long long size = 0;
        int used = 0;
        if (sscanf(line, "%x %llu %n", &mode, &size, &used) < 2 || strncmp(line + used, "./", 2))
            continue;
        if (*n == cap)
            *ents = pe_xrealloc(*ents, (cap = cap ? cap * 2 : 16) * sizeof(**ents));
        memset(&(*ents)[*n], 0, sizeof(**ents));
        snprintf((*ents)[*n].name, sizeof((*ents)[*n].name), "%s", line + used + 2);
        (*ents)[*n].is_dir = S_ISDIR(mode);
        (*ents)[*n].size = size;
        (*ents)[*n].mode = mode & 07777;
        (*n)++;
    }
    run_free(&run);
    return 0;
}

static int k8_file_remove(pe_provider *p, const char *id, const char *path, bool recursive,
                          pe_err *err)
{
    return pe__provider_remove_by_exec(p, id, path, recursive, err);
}

static int k8_tar_in(pe_provider *p, const char *id, const char *dir, const void *tar, size_t len,
                     pe_err *err)
{
    struct archive *a = tar_reader(tar, len);
    struct archive_entry *e;
    int rc = ARCHIVE_OK;

    if (a == NULL)
        return pe_err_set(err, PE_EINVAL, 0, NAME ": not a tar archive");
    /* every name is checked before anything is sent */
    while ((rc = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
        const char *name = archive_entry_pathname(e), *link = archive_entry_hardlink(e);
        unsigned type = archive_entry_filetype(e);
        int r = 0;
        if (!pe__tar_name_ok(name) || (link && !pe__tar_name_ok(link)))
            r = pe_err_set(err, PE_EINVAL, 0,
                           NAME ": tar entry '%s': names must be relative, no '..'",
                           name ? name : "");
        else if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK)
            r = pe_err_set(err, PE_EINVAL, 0,
                           NAME ": tar entry '%s': not a file, directory or link", name);
        if (r < 0) { /* the entry's strings live as long as the archive */
            archive_read_free(a);
            return -1;
        }
    }
    archive_read_free(a);
    if (rc != ARCHIVE_EOF)
        return pe_err_set(err, PE_EINVAL, 0, NAME ": not a tar archive");
    return untar(p, id, dir, tar, len, "unpack a tar into", err);
}

/* The sandbox's tar, packed again here: names without "./", and nothing
 * that climbs out (the sandbox wrote it; callers unpack it). */
static int repack(const char *in, size_t in_len, size_t max, const char *dir, char **tar,
                  size_t *len, pe_err *err)
{
    struct archive *a = tar_reader(in, in_len), *w;
    struct archive_entry *e;
    pe__tar_membuf m = {.max = max};
    int rc, r = 0;

    if (a == NULL)
        return pe_err_set(err, PE_EREMOTE, 0, NAME ": pack %s: tar in the sandbox sent no archive",
                          dir);
    w = tar_writer(&m);
    while (r == 0 && (rc = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
        const char *name = archive_entry_pathname(e);
        char buf[65536];
        la_ssize_t n;
        while (name && strncmp(name, "./", 2) == 0)
            name += 2;
        if (name == NULL || *name == '\0' || strcmp(name, ".") == 0)
            continue;
        if (!pe__tar_name_ok(name)) {
            r = pe_err_set(err, PE_EREMOTE, 0, NAME ": pack %s: the sandbox sent entry '%s'", dir,
                           name);
            break;
        }
        name = pe_xstrdup(name);
        archive_entry_set_pathname(e, name);
        free((char *)name);
        if (archive_write_header(w, e) != ARCHIVE_OK)
            break;
        while ((n = archive_read_data(a, buf, sizeof(buf))) > 0)
            if (archive_write_data(w, buf, (size_t)n) != n)
                break;
    }
    if (r == 0 && (archive_write_close(w) != ARCHIVE_OK || m.toobig))
        r = pe_err_set(err, m.toobig ? PE_EINVAL : PE_EREMOTE, 0, NAME ": pack %s: %s", dir,
                       m.toobig ? "larger than the limit" : archive_error_string(w));
    archive_write_free(w);
    archive_read_free(a);
    if (r < 0) {
        free(m.buf);
        return -1;
    }
    *tar = m.buf ? m.buf : pe_xstrdup("");
    *len = m.len;
    return 0;
}

static int k8_tar_out(pe_provider *p, const char *id, const char *dir, size_t max, char **tar,
                      size_t *len, pe_err *err)
{
    k8_run run;
    int code = 0, r;

    if (run_script(p, id, SCRIPT_TAR, dir, NULL, 0, max + (1u << 20), &run, &code,
                   "pack a directory", err) < 0) {
        run_free(&run);
        return -1;
    }
    r = code != 0 ? script_error(&run, code, "pack", dir, err)
                  : repack(run.out ? run.out : "", run.out_len, max, dir, tar, len, err);
    run_free(&run);
    return r;
}

/* ---- ports ---- */

/* The API server's proxy to the Pod's port: it wants the cluster's
 * credential, which no client gets (the preview proxy adds it). */
static int k8_preview(pe_provider *p, const char *id, uint16_t port, pe_provider_preview_link *out,
                      pe_err *err)
{
    k8 *k = p->impl;
    char *ens, *eid, *url;

    char *name = NULL;

    if (pod_name(p, id, &name, err) < 0 || name == NULL ||
        k8_call(p, "GET", "pods", name, NULL, true, NULL, "look at a sandbox", err) < 0) {
        free(name);
        return err->code == PE_ENOENT || err->code == PE_OK ? no_sandbox(p, id, err) : -1;
    }
    ens = pe__url_escape(k->ns);
    eid = pe__url_escape(name);
    free(name);
    url = pe__provider_url(p, "/api/v1/namespaces/%s/pods/%s:%u/proxy/", ens, eid, port);
    memset(out, 0, sizeof(*out));
    snprintf(out->url, sizeof(out->url), "%s", url);
    out->needs_credential = true;
    free(url);
    free(ens);
    free(eid);
    return 0;
}

/* A port of the Pod as a byte stream: the API server's `portforward`
 * subresource over a WebSocket (v4.channel.k8s.io), which works wherever
 * the API server does (a daemon outside the cluster cannot reach Pod IPs;
 * docs/providers.md says why not a Service). One WebSocket is one TCP
 * connection to the port: channel 0 its data, channel 1 the kubelet's
 * error text; the first message of each channel from the server is the
 * port (2 bytes, little-endian), not data. A thread pumps between the
 * WebSocket and one end of a socket pair; the caller gets the other. */

#define FWD_CLOSE_MS 5000

typedef struct k8_fwd {
    pe__ws *ws;
    int sock;
    bool seen[2]; /* the port prefix of channel 0 / 1 came */
    bool ended;   /* the port's connection is over (error, or a write failed) */
} k8_fwd;

static void fwd_msg(void *ud, int opcode, const unsigned char *data, size_t len)
{
    k8_fwd *f = ud;
    unsigned ch;

    if (opcode != WSLAY_BINARY_FRAME || len == 0 || f->ended)
        return;
    ch = data[0];
    data++;
    len--;
    if (ch > 1)
        return;
    if (!f->seen[ch]) { /* the port number, once per channel */
        size_t skip = len < 2 ? len : 2;
        f->seen[ch] = true;
        data += skip;
        len -= skip;
    }
    if (ch == 1) { /* the kubelet could not reach the port: the stream ends */
        if (len)
            pe_log_warn(NAME ": port-forward: %.*s", (int)(len > 300 ? 300 : len),
                        (const char *)data);
        f->ended = len > 0;
        return;
    }
    while (len) { /* blocking: a slow reader holds the WebSocket back */
        ssize_t w = send(f->sock, data, len, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            f->ended = true;
            return;
        }
        data += w;
        len -= (size_t)w;
    }
}

static void *fwd_pump(void *arg)
{
    k8_fwd *f = arg;
    bool sock_eof = false;
    int64_t close_by = 0; /* once we closed: the server's close is awaited until then */
    unsigned char buf[32769];

    while (!f->ended) {
        bool busy = pe__ws_want_write(f->ws);
        struct pollfd pfd[2] = {
            {.fd = pe__ws_fd(f->ws), .events = POLLIN | (busy ? POLLOUT : 0)},
            /* -1 once it ended: poll would say POLLHUP for ever */
            {.fd = sock_eof ? -1 : f->sock, .events = busy ? 0 : POLLIN},
        };
        int wait = pe__ws_buffered(f->ws) ? 0 : sock_eof ? (int)(close_by - pe_monotonic_ms()) : -1;
        if (sock_eof && wait <= 0 && !pe__ws_buffered(f->ws))
            break;
        if (poll(pfd, 2, wait) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (pfd[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = recv(f->sock, buf + 1, sizeof(buf) - 1, 0);
            if (n > 0) {
                buf[0] = 0;
                pe__ws_send(f->ws, WSLAY_BINARY_FRAME, buf, (size_t)n + 1);
            } else if (n == 0 || errno != EINTR) {
                /* the client is done: no half-close in this protocol */
                sock_eof = true;
                close_by = pe_monotonic_ms() + FWD_CLOSE_MS;
                pe__ws_close(f->ws, 1000);
            }
        }
        if (pe__ws_io(f->ws, pfd[0].revents, fwd_msg, f) < 0)
            break;
    }
    close(f->sock);
    pe__ws_free(f->ws);
    free(f);
    return NULL;
}

static int k8_port_open(pe_provider *p, const char *id, uint16_t port, int *fd, pe_err *err)
{
    static const char *const hdrs[] = {"Sec-WebSocket-Protocol: v4.channel.k8s.io", NULL};
    char *name = NULL, *base, *url, proto[64];
    pe__ws *ws = NULL;
    k8_fwd *f;
    pthread_t t;
    int sv[2], r;

    if (pod_name(p, id, &name, err) < 0)
        return err->code == PE_ENOENT ? no_sandbox(p, id, err) : -1;
    if (name == NULL)
        return pe_err_set(err, PE_ESTATE, 0, NAME ": sandbox %s is not bound yet", id);
    base = res_url(p, "pods", name);
    free(name);
    url = pe_xasprintf("%s/portforward?ports=%u", base, port);
    free(base);
    r = pe__ws_open(p, url, hdrs, "forward a port", &ws, err);
    free(url);
    if (r < 0)
        return err->code == PE_ENOENT ? no_sandbox(p, id, err) : -1;
    if (!pe__ws_header(ws, "Sec-WebSocket-Protocol", proto, sizeof(proto)) ||
        strcmp(proto, "v4.channel.k8s.io") != 0) {
        pe__ws_free(ws);
        return pe_err_set(err, PE_EREMOTE, 0,
                          NAME ": forward a port: the API server does not speak "
                               "v4.channel.k8s.io");
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        pe__ws_free(ws);
        return pe_err_set(err, PE_ESYS, errno, NAME ": forward a port: socketpair");
    }
    f = pe_xcalloc(1, sizeof(*f));
    f->ws = ws;
    f->sock = sv[1];
    if (pthread_create(&t, NULL, fwd_pump, f) != 0) {
        close(sv[0]);
        close(sv[1]);
        pe__ws_free(ws);
        free(f);
        return pe_err_set(err, PE_ESYS, 0, NAME ": forward a port: no thread");
    }
    pthread_detach(t);
    *fd = sv[0];
    return 0;
}

const pe_provider_ops pe__provider_kubernetes = {
    .name = NAME,
    .takes = PE_TAKES_IMAGE | PE_TAKES_CPU | PE_TAKES_MEMORY | PE_TAKES_DISK,
    .caps = PE_CAP_PTY | PE_CAP_STDIN | PE_CAP_FILE_LIST | PE_CAP_FILE_REMOVE | PE_CAP_TAR |
            PE_CAP_PREVIEW,
    .keyless = true, /* a kubeconfig or the pod's service account may be the credential */
    .open = k8_open,
    .close = k8_close,
    .curl_setup = k8_curl_setup,
    .create = k8_create,
    .start = k8_start,
    .stop = k8_stop,
    .remove = k8_remove,
    .status = k8_status,
    .exec_start = k8_exec_start,
    .file_read = k8_file_read,
    .file_write = k8_file_write,
    .file_list = k8_file_list,
    .file_remove = k8_file_remove,
    .tar_in = k8_tar_in,
    .tar_out = k8_tar_out,
    .preview = k8_preview,
    .port_open = k8_port_open,
};
