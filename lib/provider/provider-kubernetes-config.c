/* The kubernetes adapter's credentials (provider-kubernetes.h): a
 * kubeconfig's current context, or a pod's service account.
 *
 * libyaml reads the kubeconfig (its JSON form is YAML too) into a jansson
 * tree, so that finding the context, cluster and user is lookups rather
 * than a parser of ours. Every value is a secret until proven otherwise:
 * no error quotes one, only the names of the fields and of the context,
 * and libyaml's own messages (which give a position, not the text). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "core/util.h"
#include "provider-internal.h"
#include "provider-kubernetes.h"

/* Nesting and size bounds of the tree made from the YAML: aliases can
 * make a small document name a huge one. */
#define YAML_DEPTH_MAX 32
#define YAML_NODES_MAX 100000

static void wipe_free(char *s, size_t len)
{
    if (s) {
        sodium_memzero(s, len);
        free(s);
    }
}

void pe__k8s_conf_free(pe__k8s_conf *c)
{
    free(c->server);
    free(c->ns);
    pe__secret_free(c->token);
    free(c->ca);
    free(c->cert);
    wipe_free(c->key, c->key_len);
    memset(c, 0, sizeof(*c));
}

/* The whole of a small file (secrets included: the caller wipes it). */
static char *read_small(const char *path, size_t *len, int *errnum)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    char *buf;
    size_t n = 0;

    if (fd < 0) {
        *errnum = errno;
        return NULL;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size > PE_K8S_FILE_MAX) {
        *errnum = S_ISREG(st.st_mode) ? EFBIG : EINVAL;
        close(fd);
        return NULL;
    }
    buf = pe_xmalloc((size_t)st.st_size + 1);
    while (n < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + n, (size_t)st.st_size - n);
        if (r <= 0) {
            *errnum = r < 0 ? errno : EIO;
            wipe_free(buf, (size_t)st.st_size + 1);
            close(fd);
            return NULL;
        }
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* ---- YAML to a jansson tree ---- */

static json_t *yaml_to_json(yaml_document_t *doc, yaml_node_t *node, int depth, size_t *count)
{
    json_t *out;

    if (node == NULL || depth > YAML_DEPTH_MAX || ++*count > YAML_NODES_MAX)
        return NULL;
    switch (node->type) {
    case YAML_SCALAR_NODE:
        return json_stringn_nocheck((const char *)node->data.scalar.value,
                                    node->data.scalar.length);
    case YAML_SEQUENCE_NODE:
        out = json_array();
        for (yaml_node_item_t *i = node->data.sequence.items.start;
             i < node->data.sequence.items.top; i++) {
            json_t *v = yaml_to_json(doc, yaml_document_get_node(doc, *i), depth + 1, count);
            if (v == NULL) {
                json_decref(out);
                return NULL;
            }
            json_array_append_new(out, v);
        }
        return out;
    case YAML_MAPPING_NODE:
        out = json_object();
        for (yaml_node_pair_t *pr = node->data.mapping.pairs.start;
             pr < node->data.mapping.pairs.top; pr++) {
            yaml_node_t *k = yaml_document_get_node(doc, pr->key);
            json_t *v;
            char *name;
            if (k == NULL || k->type != YAML_SCALAR_NODE) {
                json_decref(out);
                return NULL;
            }
            v = yaml_to_json(doc, yaml_document_get_node(doc, pr->value), depth + 1, count);
            if (v == NULL) {
                json_decref(out);
                return NULL;
            }
            name = pe_xasprintf("%.*s", (int)k->data.scalar.length, k->data.scalar.value);
            json_object_set_new(out, name, v);
            free(name);
        }
        return out;
    default:
        return NULL;
    }
}

static json_t *parse_yaml(const char *text, size_t len, const char *origin, pe_err *err)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    json_t *root = NULL;
    size_t count = 0;

    if (!yaml_parser_initialize(&parser))
        abort();
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        /* libyaml's problem and position, never the text around it */
        pe_err_set(err, PE_EINVAL, 0, "kubernetes: %s is not YAML: %s at line %zu", origin,
                   parser.problem ? parser.problem : "unreadable",
                   (size_t)parser.problem_mark.line + 1);
        yaml_parser_delete(&parser);
        return NULL;
    }
    root = yaml_to_json(&doc, yaml_document_get_root_node(&doc), 0, &count);
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    if (!json_is_object(root)) {
        json_decref(root);
        pe_err_set(err, PE_EINVAL, 0, "kubernetes: %s is not a kubeconfig (no mapping at its top)",
                   origin);
        return NULL;
    }
    return root;
}

/* ---- the kubeconfig's current context ---- */

static const char *str_at(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* The `field` object of the entry named `name` in the list `list`
 * (clusters[].cluster, users[].user, contexts[].context). */
static json_t *named(json_t *root, const char *list, const char *name, const char *field)
{
    size_t i;
    json_t *e;

    json_array_foreach(json_object_get(root, list), i, e)
    {
        const char *n = str_at(e, "name");
        if (n && strcmp(n, name) == 0)
            return json_is_object(json_object_get(e, field)) ? json_object_get(e, field)
                                                             : json_object();
    }
    return NULL;
}

/* A kubeconfig that came as the key (from whoever holds the account, not
 * from this host's operator) names no file of this host. */
static int no_files(const char *origin, const char *field, pe_err *err)
{
    return pe_err_set(err, PE_EINVAL, 0,
                      "kubernetes: %s names a file (%s); a kubeconfig given as the key must "
                      "carry its credentials inline (token, *-data)",
                      origin, field);
}

/* A credential given inline (FIELD-data, base64) or as a file (FIELD),
 * relative names resolved in dir (NULL: no file allowed). */
static int take_blob(json_t *o, const char *field, const char *dir, const char *origin, char **out,
                     size_t *out_len, pe_err *err)
{
    char data_field[64];
    const char *b64, *file;

    snprintf(data_field, sizeof(data_field), "%s-data", field);
    b64 = str_at(o, data_field);
    file = str_at(o, field);
    if (b64 && *b64) {
        size_t n = 0;
        unsigned char *v = pe__b64_decode(b64, strlen(b64), &n);
        if (v == NULL)
            return pe_err_set(err, PE_EINVAL, 0, "kubernetes: %s: %s is not base64", origin,
                              data_field);
        *out = pe_xrealloc(v, n + 1);
        (*out)[n] = '\0';
        *out_len = n;
        return 0;
    }
    if (file && *file) {
        char *path;
        if (dir == NULL)
            return no_files(origin, field, err);
        path = file[0] == '/' ? pe_xstrdup(file) : pe_xasprintf("%s/%s", dir, file);
        int errnum = 0;
        *out = read_small(path, out_len, &errnum);
        if (*out == NULL) {
            pe_err_set(err, PE_EINVAL, errnum, "kubernetes: %s: %s %s", origin, field, path);
            free(path);
            return -1;
        }
        free(path);
    }
    return 0;
}

static int kubeconfig_user(json_t *user, const char *uname, const char *dir, const char *origin,
                           pe__k8s_conf *c, pe_err *err)
{
    const char *token = str_at(user, "token"), *token_file = str_at(user, "tokenFile");

    if (json_object_get(user, "exec") || json_object_get(user, "auth-provider"))
        return pe_err_set(err, PE_EINVAL, 0,
                          "kubernetes: %s: user '%s' gets its credential from a program (exec or "
                          "auth-provider), which this adapter does not run; give a token or a "
                          "client certificate",
                          origin, uname);
    if (token && *token)
        c->token = pe_xstrdup(token);
    else if (token_file && *token_file) {
        char *path;
        if (dir == NULL)
            return no_files(origin, "tokenFile", err);
        path =
            token_file[0] == '/' ? pe_xstrdup(token_file) : pe_xasprintf("%s/%s", dir, token_file);
        size_t n = 0;
        int errnum = 0;
        c->token = read_small(path, &n, &errnum);
        if (c->token == NULL) {
            pe_err_set(err, PE_EINVAL, errnum, "kubernetes: %s: tokenFile %s", origin, path);
            free(path);
            return -1;
        }
        free(path);
        while (n && (c->token[n - 1] == '\n' || c->token[n - 1] == '\r'))
            c->token[--n] = '\0';
    }
    if (take_blob(user, "client-certificate", dir, origin, &c->cert, &c->cert_len, err) < 0 ||
        take_blob(user, "client-key", dir, origin, &c->key, &c->key_len, err) < 0)
        return -1;
    if ((c->cert == NULL) != (c->key == NULL))
        return pe_err_set(err, PE_EINVAL, 0,
                          "kubernetes: %s: user '%s' has a client certificate without its key "
                          "(or a key without its certificate)",
                          origin, uname);
    if (c->token == NULL && c->cert == NULL)
        return pe_err_set(err, PE_EINVAL, 0,
                          "kubernetes: %s: user '%s' has no token and no client certificate",
                          origin, uname);
    return 0;
}

int pe__k8s_conf_kubeconfig(const char *text, size_t len, const char *origin, const char *dir,
                            pe__k8s_conf *c, pe_err *err)
{
    json_t *root = parse_yaml(text, len, origin, err), *ctx, *cluster, *user;
    const char *cur, *cname, *uname, *server, *ns, *insecure;
    int r = -1;

    memset(c, 0, sizeof(*c));
    c->how = "kubeconfig";
    if (root == NULL)
        return -1;
    cur = str_at(root, "current-context");
    if (cur == NULL || *cur == '\0') {
        pe_err_set(err, PE_EINVAL, 0, "kubernetes: %s has no current-context", origin);
        goto out;
    }
    ctx = named(root, "contexts", cur, "context");
    if (ctx == NULL) {
        pe_err_set(err, PE_EINVAL, 0, "kubernetes: %s: no context named '%s' (its current-context)",
                   origin, cur);
        goto out;
    }
    cname = str_at(ctx, "cluster");
    uname = str_at(ctx, "user");
    cluster = cname ? named(root, "clusters", cname, "cluster") : NULL;
    if (cluster == NULL) {
        pe_err_set(err, PE_EINVAL, 0, "kubernetes: %s: context '%s' names no known cluster", origin,
                   cur);
        goto out;
    }
    user = uname ? named(root, "users", uname, "user") : NULL;
    if (user == NULL) {
        pe_err_set(err, PE_EINVAL, 0, "kubernetes: %s: context '%s' names no known user", origin,
                   cur);
        goto out;
    }
    server = str_at(cluster, "server");
    if (server == NULL || (strncmp(server, "https://", 8) != 0 && strncmp(server, "http://", 7))) {
        pe_err_set(err, PE_EINVAL, 0, "kubernetes: %s: cluster '%s' has no http(s) server URL",
                   origin, cname);
        goto out;
    }
    c->server = pe_xstrdup(server);
    while (strlen(c->server) > 8 && c->server[strlen(c->server) - 1] == '/')
        c->server[strlen(c->server) - 1] = '\0';
    ns = str_at(ctx, "namespace");
    c->ns = ns && *ns ? pe_xstrdup(ns) : NULL;
    insecure = str_at(cluster, "insecure-skip-tls-verify");
    c->insecure = insecure && strcmp(insecure, "true") == 0;
    if (take_blob(cluster, "certificate-authority", dir, origin, &c->ca, &c->ca_len, err) < 0)
        goto out;
    r = kubeconfig_user(user, uname, dir, origin, c, err);
out:
    json_decref(root);
    if (r < 0)
        pe__k8s_conf_free(c);
    return r;
}

int pe__k8s_conf_kubeconfig_file(const char *path, pe__k8s_conf *c, pe_err *err)
{
    size_t len = 0;
    int errnum = 0, r;
    char *text = read_small(path, &len, &errnum), *origin, *dir, *slash;

    memset(c, 0, sizeof(*c));
    if (text == NULL)
        return pe_err_set(err, PE_EINVAL, errnum, "kubernetes: kubeconfig %s", path);
    origin = pe_xasprintf("kubeconfig %s", path);
    dir = pe_xstrdup(path);
    slash = strrchr(dir, '/');
    if (slash)
        *(slash == dir ? slash + 1 : slash) = '\0';
    r = pe__k8s_conf_kubeconfig(text, len, origin, slash ? dir : ".", c, err);
    wipe_free(text, len);
    free(origin);
    free(dir);
    return r;
}

int pe__k8s_conf_incluster(const char *dir, pe__k8s_conf *c, pe_err *err)
{
    const char *host = getenv("KUBERNETES_SERVICE_HOST"), *port = getenv("KUBERNETES_SERVICE_PORT");
    char *path;
    size_t n = 0;
    int errnum = 0;

    memset(c, 0, sizeof(*c));
    c->how = "in-cluster";
    path = pe_xasprintf("%s/token", dir);
    c->token = read_small(path, &n, &errnum);
    if (c->token == NULL) {
        pe_err_set(err, PE_EINVAL, errnum, "kubernetes: in-cluster credentials: %s", path);
        free(path);
        return -1;
    }
    free(path);
    while (n && (c->token[n - 1] == '\n' || c->token[n - 1] == '\r'))
        c->token[--n] = '\0';
    path = pe_xasprintf("%s/ca.crt", dir);
    c->ca = read_small(path, &c->ca_len, &errnum); /* none: the system's CAs */
    free(path);
    path = pe_xasprintf("%s/namespace", dir);
    c->ns = read_small(path, &n, &errnum);
    free(path);
    while (c->ns && n && (c->ns[n - 1] == '\n' || c->ns[n - 1] == ' '))
        c->ns[--n] = '\0';
    if (host && *host)
        /* an IPv6 address goes in brackets */
        c->server = pe_xasprintf(strchr(host, ':') ? "https://[%s]:%s" : "https://%s:%s", host,
                                 port && *port ? port : "443");
    return 0;
}
