/* The kubernetes adapter's credentials (provider-kubernetes-config.c):
 * what a kubeconfig or a pod's service account gives, in memory. Not for
 * callers above lib/provider/. */
#ifndef PE_PROVIDER_KUBERNETES_H
#define PE_PROVIDER_KUBERNETES_H

#include <stdbool.h>
#include <stddef.h>

#include "pocketenv/err.h"

typedef struct pe__k8s_conf {
    char *server; /* https://host:port (no trailing slash) */
    char *ns;     /* the context's namespace, or NULL */
    char *token;  /* bearer token (secret), or NULL */
    char *ca;     /* PEM of the CA bundle, or NULL: the system's */
    char *cert;   /* PEM of the client certificate, or NULL */
    char *key;    /* PEM of its key (secret), or NULL */
    size_t ca_len, cert_len, key_len;
    bool insecure;   /* insecure-skip-tls-verify */
    const char *how; /* "kubeconfig", "in-cluster" (for errors and docs) */
} pe__k8s_conf;

/* Largest kubeconfig, token or certificate file read. */
#define PE_K8S_FILE_MAX (1u << 20)

/* Parse a kubeconfig (YAML, or its JSON form) of len bytes: the current
 * context's cluster and user. origin names it in errors ("kubeconfig
 * /root/.kube/config"); dir resolves the relative file names in it (NULL:
 * it may name no file, as when it came as the key rather than from this
 * host's own files). Errors are PE_EINVAL and never quote a value. */
int pe__k8s_conf_kubeconfig(const char *text, size_t len, const char *origin, const char *dir,
                            pe__k8s_conf *c, pe_err *err);
/* The same from a file. */
int pe__k8s_conf_kubeconfig_file(const char *path, pe__k8s_conf *c, pe_err *err);
/* A pod's service account: dir holds token, ca.crt and namespace
 * (/var/run/secrets/kubernetes.io/serviceaccount); the server is
 * https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT. */
int pe__k8s_conf_incluster(const char *dir, pe__k8s_conf *c, pe_err *err);
/* Wipes the secrets and frees everything. */
void pe__k8s_conf_free(pe__k8s_conf *c);

#endif
