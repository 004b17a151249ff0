/* Upstream's provider names and the backend that serves each
 * (daemon/providers.h).
 *
 * The table is the operator's (serve flags, read at start and never
 * changed after), so the decision is pure and runs on any thread. It is
 * taken once per sandbox, at create, and kept on the row: a name turned
 * off later leaves the sandboxes it already has where they run. */
#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "provider/provider.h"
#include "providers.h"

const char *const pe_provider_names[PE_PROVIDER_COUNT] = {
    "daytona", "vercel",  "cloudflare",         "deno", "sprites", "modal", "e2b", "blaxel",
    "hopx",    "runloop", PE_PROVIDER_OURS_K8S,
};

static const char *const backend_names[] = {
    [PE_PROVIDER_LOCAL] = PE_BACKEND_LOCAL,
    [PE_PROVIDER_OFF] = "off",
    [PE_PROVIDER_REMOTE] = "remote",
};

static int find(const char *name, size_t len)
{
    for (int i = 0; i < PE_PROVIDER_COUNT; i++)
        if (strlen(pe_provider_names[i]) == len && memcmp(pe_provider_names[i], name, len) == 0)
            return i;
    return -1;
}

/* "a, b, c": the names whose backend is `want` (ALL: every name). */
#define ALL (-1)
static void names_of(const pe_daemon_providers *p, int want, char *buf, size_t size)
{
    size_t used = 0;

    buf[0] = '\0';
    for (int i = 0; i < PE_PROVIDER_COUNT && used < size; i++)
        if (want == ALL || p->backend[i] == want)
            used += (size_t)snprintf(buf + used, size - used, "%s%s", used ? ", " : "",
                                     pe_provider_names[i]);
}

void pe_daemon_providers_defaults(pe_daemon_providers *p)
{
    for (int i = 0; i < PE_PROVIDER_COUNT; i++)
        p->backend[i] = PE_PROVIDER_LOCAL;
    /* ours, not upstream's: nothing local stands in for a cluster, so it
     * is served only where the operator configured one */
    p->backend[find(PE_PROVIDER_OURS_K8S, strlen(PE_PROVIDER_OURS_K8S))] = PE_PROVIDER_OFF;
}

int pe_daemon_providers_flag(pe_daemon_providers *p, const char *arg, pe_err *err)
{
    const char *eq = strchr(arg, '=');
    char all[160];
    int i = eq ? find(arg, (size_t)(eq - arg)) : -1;

    names_of(p, ALL, all, sizeof(all));
    if (i < 0)
        return pe_err_set(err, PE_EINVAL, 0,
                          "--provider: NAME=local, NAME=remote or NAME=off, NAME one of %s; not "
                          "'%s'",
                          all, arg);
    for (size_t b = 0; b < PE_ARRAY_LEN(backend_names); b++) {
        if (strcmp(eq + 1, backend_names[b]) == 0) {
            if (b == PE_PROVIDER_REMOTE)
                return pe_daemon_providers_remote(p, pe_provider_names[i], err);
            if (b == PE_PROVIDER_LOCAL && strcmp(pe_provider_names[i], PE_PROVIDER_OURS_K8S) == 0)
                return pe_err_set(err, PE_EINVAL, 0,
                                  "--provider %s: a cluster cannot be served locally; configure "
                                  "it with --provider-config",
                                  pe_provider_names[i]);
            p->backend[i] = (unsigned char)b;
            return 0;
        }
    }
    return pe_err_set(err, PE_EINVAL, 0, "--provider %s: local, remote or off, not '%s'",
                      pe_provider_names[i], eq + 1);
}

int pe_daemon_providers_remote(pe_daemon_providers *p, const char *name, pe_err *err)
{
    int i = find(name, strlen(name));

    if (i < 0 || pe_provider_lookup(name) == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "no adapter for provider '%s' in this build", name);
    p->backend[i] = PE_PROVIDER_REMOTE;
    return 0;
}

void pe_daemon_providers_log(const pe_daemon_providers *p)
{
    char local[160], off[160], remote[160];

    names_of(p, PE_PROVIDER_LOCAL, local, sizeof(local));
    names_of(p, PE_PROVIDER_OFF, off, sizeof(off));
    names_of(p, PE_PROVIDER_REMOTE, remote, sizeof(remote));
    pe_log_info("event=providers local=\"%s\" remote=\"%s\" off=\"%s\"", local, remote, off);
}

int pe_daemon_provider_route(const pe_daemon_providers *p, const char *name, const char **provider,
                             const char **backend, pe_err *err)
{
    char list[160];
    int i;

    if (name == NULL)
        name = PE_PROVIDER_DEFAULT;
    i = find(name, strlen(name));
    if (i < 0) {
        names_of(p, ALL, list, sizeof(list));
        return pe_err_set(err, PE_EINVAL, 0, "unknown provider %s: use one of %s", name, list);
    }
    if (p->backend[i] == PE_PROVIDER_OFF) {
        names_of(p, PE_PROVIDER_LOCAL, list, sizeof(list)); /* remote ones too, below */
        if (list[0] == '\0')
            names_of(p, PE_PROVIDER_REMOTE, list, sizeof(list));
        return pe_err_set(err, PE_EUNSUP, 0,
                          "provider %s is turned off on this daemon by its operator; "
                          "providers served here: %s",
                          name, list[0] ? list : "none");
    }
    *provider = pe_provider_names[i];
    /* a remote sandbox's backend is its adapter: lib/sandbox opens it by name */
    *backend =
        p->backend[i] == PE_PROVIDER_REMOTE ? pe_provider_names[i] : backend_names[p->backend[i]];
    return 0;
}
