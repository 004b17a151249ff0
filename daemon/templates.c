/* The bases a sandbox can be made from (daemon/templates.h).
 *
 * Three kinds: the images this daemon builds itself on first use (busybox,
 * debian); the templates of lib/template (upstream's catalog wherever its
 * tool installs from npm, plus vscode and python), built as layers on
 * first create; and the names of upstream's catalog whose tool installs
 * only from a vendor's download site, refused at once saying so. Any
 * other image of DATA/images (an import) is a base too.
 *
 * A create of a template not built yet builds it in the create's
 * background job (pe_daemon_template_prepare): the row stays INITIALIZING
 * with a statusReason that says what is being built; creates of one
 * template share one build (lib/template). A template's service (openclaw's
 * gateway, python's kernel server) becomes a service of the sandbox, and
 * the sandbox is RUNNING once it accepts connections on its port.
 *
 * Threading: pe_daemon_base_name is pure; the rest run on worker threads. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/log.h"
#include "core/util.h"
#include "image/image.h"
#include "ports.h"
#include "providers.h"
#include "snapshots.h"
#include "supervise.h"
#include "template/template.h"
#include "templates.h"

#define AT_PREFIX "at://"
#define COLLECTION "io.pocketenv.sandbox/"
#define LIST_MAX 1024        /* the list of bases in an error message */
#define REASON_EVERY_MS 2000 /* statusReason updates while a template builds */
/* A template's service to accept connections: openclaw's gateway takes
 * a minute and more on a busy 2-core host (its first start migrates its
 * state database). */
#define SERVICE_READY_S 600
#define VENDOR_ONLY "installs only from a vendor's download site"

static const struct {
    const char *name, *description;
} builtin_images[] = {
    {"busybox", "BusyBox userland: a tiny image for quick, disposable sandboxes"},
    {"debian", "Debian 12 (bookworm), minimal, with apt: built on first use"},
};

/* Upstream's catalog (reference §7.1) in its order, then ours: the names
 * clients may send. alias: a second spelling upstream uses for the same
 * template (its presets say "claude", its workers "claude-code").
 * vendor: where its tool comes from when that is not npm (refused here);
 * NULL: a template of lib/template. */
static const struct {
    const char *name, *alias, *vendor;
} catalog[] = {
    {"openclaw", NULL, NULL},
    {"claude-code", "claude", NULL},
    {"codex", NULL, NULL},
    {"copilot", NULL, NULL},
    {"gemini", NULL, NULL},
    {"amp", NULL, NULL},
    /* npm's @charmland/crush only downloads the binary from GitHub. */
    {"crush", NULL, "its npm package's install script downloads it from GitHub's releases"},
    {"cursor", NULL, "Cursor's install script"},
    {"kilo", NULL, NULL},
    {"kiro", NULL, "Kiro's install script"},
    {"opencode", NULL, NULL},
    {"opencrust", NULL, "a release binary"},
    {"nullclaw", NULL, "a release binary"},
    {"picoclaw", NULL, "a release tarball"},
    {"zeroclaw", NULL, "a release tarball"},
    {"nanoclaw", NULL, "Docker's and Doppler's packages"},
    {"mise", NULL, "mise.run"},
    {"nix", NULL, "the Determinate Systems installer"},
    {"pkgx", NULL, "pkgx.sh"},
    {"wasmer", NULL, "get.wasmer.io"},
    {"docker", NULL, "Docker's packages"},
    {"vscode", NULL, NULL},
    {"python", NULL, NULL},
};

static bool is_builtin(const char *name)
{
    for (size_t i = 0; i < PE_ARRAY_LEN(builtin_images); i++)
        if (strcmp(name, builtin_images[i].name) == 0)
            return true;
    return false;
}

/* Index in catalog, or -1. */
static int catalog_index(const char *name)
{
    for (size_t i = 0; i < PE_ARRAY_LEN(catalog); i++)
        if (strcmp(name, catalog[i].name) == 0)
            return (int)i;
    return -1;
}

/* A template this daemon offers (built or buildable). */
static const pe_template *offered(const char *name)
{
    const pe_template *t = pe_template_find(name);

    return t != NULL && !t->internal ? t : NULL;
}

/* ---- what base says ---- */

/* The record key of at://AUTHORITY/io.pocketenv.sandbox/RKEY, or NULL. */
static const char *template_rkey(const char *uri)
{
    const char *authority = uri + strlen(AT_PREFIX), *slash = strchr(authority, '/');

    if (slash == NULL || slash == authority ||
        strncmp(slash + 1, COLLECTION, strlen(COLLECTION)) != 0)
        return NULL;
    return slash + 1 + strlen(COLLECTION);
}

int pe_daemon_base_name(const char *base, char **name, pe_err *err)
{
    const char *n = base;

    *name = NULL;
    /* A snapshot's name or id: the create resolves it for its caller
     * (sandbox-snapshots.c). */
    if (base && strncmp(base, PE_SNAPSHOT_BASE, strlen(PE_SNAPSHOT_BASE)) == 0 &&
        pe_name_valid(base + strlen(PE_SNAPSHOT_BASE))) {
        *name = pe_xstrdup(base);
        return 0;
    }
    if (base && strncmp(base, AT_PREFIX, strlen(AT_PREFIX)) == 0)
        n = template_rkey(base);
    if (n == NULL || !pe_name_valid(n))
        return pe_err_set(err, PE_EINVAL, 0,
                          "base must be the name of a base (getSandboxes lists them) or "
                          "at://DID/io.pocketenv.sandbox/NAME");
    for (size_t i = 0; i < PE_ARRAY_LEN(catalog); i++)
        if (catalog[i].alias && strcmp(n, catalog[i].alias) == 0)
            n = catalog[i].name;
    *name = pe_xstrdup(n);
    return 0;
}

/* ---- the catalog ---- */

static json_t *template_view(pe_daemon *d, const char *name, const char *description,
                             int64_t created_s)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:I}", "id", name, "name", name, "displayName", name,
                          "installs", (json_int_t)0),
           *policy = pe_template_egress_default(name);
    cleanup_free char *uri =
        pe_xasprintf(AT_PREFIX "%s/" COLLECTION "%s", pe_auth_owner_did(d->auth), name);

    pe_daemon_set_str(o, "description", description);
    pe_daemon_set_str(o, "uri", uri);
    /* Where sandboxes made from it run: our extension (lexicons/README.md). */
    pe_daemon_set_str(o, "backend", PE_BACKEND_LOCAL);
    pe_daemon_set_time(o, "createdAt", created_s * 1000);
    /* Our extension: the egress policy its sandboxes get unless their
     * create names one (absent: the open network). */
    if (policy != NULL)
        json_object_set_new(o, "networkPolicy", policy);
    return o;
}

static int64_t created_of(const pe_image_info *imgs, size_t n, const char *name)
{
    for (size_t k = 0; k < n; k++)
        if (strcmp(imgs[k].name, name) == 0)
            return imgs[k].created;
    return 0; /* not built yet */
}

/* Our extension: whether a create of it works here, and why not. */
static void set_available(json_t *o, const char *vendor)
{
    json_object_set_new(o, "available", json_boolean(vendor == NULL));
    if (vendor != NULL) {
        cleanup_free char *why =
            pe_xasprintf("not available here: it %s (%s)", VENDOR_ONLY, vendor);
        pe_daemon_set_str(o, "unavailableReason", why);
    }
}

static json_t *catalog_entry(pe_daemon *d, size_t i, const pe_image_info *imgs, size_t n)
{
    const pe_template *t = offered(catalog[i].name);
    json_t *o;

    if (t != NULL) {
        o = template_view(d, t->name, t->description, created_of(imgs, n, t->name));
    } else {
        cleanup_free char *desc = pe_xasprintf("%s: not available on this daemon; its tool %s (%s)",
                                               catalog[i].name, VENDOR_ONLY, catalog[i].vendor);
        o = template_view(d, catalog[i].name, desc, 0);
    }
    set_available(o, t != NULL ? NULL : catalog[i].vendor);
    return o;
}

int pe_daemon_catalog(pe_daemon *d, json_t **out, pe_err *err)
{
    pe_image_info *imgs = NULL;
    size_t n = 0;
    json_t *all;

    *out = NULL;
    if (pe_image_list(d->rt.data_dir, &imgs, &n, err) < 0)
        return -1;
    all = json_array();
    for (size_t i = 0; i < PE_ARRAY_LEN(builtin_images); i++) {
        json_t *o = template_view(d, builtin_images[i].name, builtin_images[i].description,
                                  created_of(imgs, n, builtin_images[i].name));
        set_available(o, NULL);
        json_array_append_new(all, o);
    }
    for (size_t i = 0; i < PE_ARRAY_LEN(catalog); i++)
        json_array_append_new(all, catalog_entry(d, i, imgs, n));
    /* Other images (imports); the layers under templates are not bases. */
    for (size_t k = 0; k < n; k++) {
        const pe_template *t = pe_template_find(imgs[k].name);
        json_t *o;
        if (is_builtin(imgs[k].name) || catalog_index(imgs[k].name) >= 0 || t != NULL)
            continue;
        o = template_view(d, imgs[k].name, imgs[k].source, imgs[k].created);
        set_available(o, NULL);
        json_array_append_new(all, o);
    }
    pe_image_info_free(imgs, n);
    *out = all;
    return 0;
}

/* ---- is it here? ---- */

bool pe_daemon_base_plain(const char *name)
{
    for (size_t i = 0; i < PE_ARRAY_LEN(builtin_images); i++)
        if (strcmp(name, builtin_images[i].name) == 0)
            return true;
    return false;
}

int pe_daemon_base_check(pe_daemon *d, const char *name, pe_err *err)
{
    char list[LIST_MAX];
    size_t used = 0, i;
    json_t *all = NULL, *t;
    int at = catalog_index(name);

    if (strncmp(name, PE_SNAPSHOT_BASE, strlen(PE_SNAPSHOT_BASE)) == 0)
        return 0; /* resolved to the caller's own by pe_daemon_snapshot_base */
    if (at >= 0 && catalog[at].vendor != NULL)
        return pe_err_set(err, PE_EUNSUP, 0,
                          "template %s is not available on this daemon: its tool %s (%s)", name,
                          VENDOR_ONLY, catalog[at].vendor);
    /* A built-in image or a catalog template the daemon can build is
     * available whether built yet or not (pe_daemon_catalog says so for
     * each): only another name (an import) needs the images on disk,
     * which every create would otherwise list and describe. */
    if (pe_daemon_base_plain(name) || at >= 0)
        return 0;
    if (pe_daemon_catalog(d, &all, err) < 0)
        return pe_err_prefix(err, "list bases");
    list[0] = '\0';
    json_array_foreach(all, i, t)
    {
        const char *n = json_string_value(json_object_get(t, "name"));
        if (!json_is_true(json_object_get(t, "available")))
            continue;
        if (strcmp(n, name) == 0) {
            json_decref(all);
            return 0;
        }
        if (used < sizeof(list))
            used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s", used ? ", " : "", n);
    }
    json_decref(all);
    return pe_err_set(err, PE_EINVAL, 0, "unknown base %s; bases available here: %s", name, list);
}

/* ---- building on first use ---- */

typedef struct build_note {
    pe_daemon *d;
    const char *id, *name;
    pthread_mutex_t mu;
    int64_t last_ms;
} build_note;

static void human(char *buf, size_t len, int64_t bytes)
{
    if (bytes <= 0)
        buf[0] = '\0';
    else
        snprintf(buf, len, ", %.1f MiB", (double)bytes / 1048576.0);
}

/* From the building thread (or a helper thread of the build): the row's
 * statusReason, through that thread's own store handle. */
static void note_progress(void *ud, const char *step, const char *what, int64_t bytes,
                          int64_t total)
{
    build_note *n = ud;
    char b[48], reason[512];
    int64_t now = pe_monotonic_ms();
    pe_store *s;
    pe_err err;

    pthread_mutex_lock(&n->mu);
    if (now - n->last_ms < REASON_EVERY_MS && n->last_ms != 0) {
        pthread_mutex_unlock(&n->mu);
        return;
    }
    n->last_ms = now;
    pthread_mutex_unlock(&n->mu);
    human(b, sizeof(b), bytes);
    (void)total;
    snprintf(reason, sizeof(reason), "building template %s (first use): step %s: %s%s", n->name,
             step, what, b);
    pe_err_clear(&err);
    s = pe_daemon_store(n->d, &err);
    if (s != NULL)
        pe_store_sandbox_set_status(s, n->id, PE_STORE_INITIALIZING, reason, PE_STORE_INITIALIZING,
                                    &err);
}

/* The template's service as a service of the sandbox, once. */
static int add_service(pe_store *s, const pe_store_sandbox *sb, const pe_template_service *svc,
                       pe_err *err)
{
    pe_store_service *list = NULL;
    cleanup_free char *id = NULL;
    int64_t port = svc->port;
    size_t n = 0;
    bool have = false;

    if (pe_store_service_list(s, sb->id, 1000, 0, &list, &n, NULL, err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        have = have || strcmp(list[i].name, svc->name) == 0;
    pe_store_service_list_free(list, n);
    if (have)
        return 0;
    if (pe_store_service_add(s, sb->id, svc->name, svc->command, svc->description, PE_STORE_RUNNING,
                             &id, err) < 0)
        return -1;
    if (pe_store_service_set_ports(s, sb->id, id, svc->name, &port, 1, err) < 0) {
        pe_store_service_delete(s, id, NULL);
        return -1;
    }
    return 0;
}

int pe_daemon_template_prepare(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb, pe_err *err)
{
    const pe_template *t = offered(sb->base);
    build_note note = {.d = d, .id = sb->id, .name = sb->base};
    pe_template_opts o = {.progress = note_progress, .ud = &note, .log_fd = -1};
    int r = 0;

    if (t == NULL)
        return 0;
    /* An image of that name (built, or imported by the operator) is
     * used as it is, even a broken one; the runtime checks the layers
     * under it. */
    if (!pe_image_listed(d->rt.data_dir, t->name)) { /* what getSandboxes lists */
        pthread_mutex_init(&note.mu, NULL);
        note_progress(&note, t->name, "waiting for its turn to build", 0, -1);
        r = pe_template_build(&d->rt, t->name, &o, err);
        pthread_mutex_destroy(&note.mu);
        if (r < 0)
            return -1;
        pe_store_sandbox_set_status(s, sb->id, PE_STORE_INITIALIZING, "starting",
                                    PE_STORE_INITIALIZING, NULL);
    }
    if (t->service != NULL && add_service(s, sb, t->service, err) < 0)
        return pe_err_prefix(err, "add the template's service %s", t->service->name);
    return 0;
}

/* ---- its service ---- */

static bool accepts(const char *addr, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct pollfd pfd;
    int fd, soerr = 0;
    socklen_t sl = sizeof(soerr);
    bool ok = false;

    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
        return false;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
        ok = true;
    } else if (errno == EINPROGRESS) {
        pfd = (struct pollfd){.fd = fd, .events = POLLOUT};
        ok = poll(&pfd, 1, 500) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 &&
             soerr == 0;
    }
    close(fd);
    return ok;
}

/* The last line a unit's process wrote (not the supervisor's notes), for
 * an error. */
static char *last_line(const char *key)
{
    size_t len = 0;
    bool cut = false;
    unsigned long long written = 0;
    char *logs = pe_daemon_unit_logs(key, &len, &cut, &written), *p, *out = NULL;

    if (logs == NULL)
        return pe_xstrdup("(no output)");
    while (out == NULL && len > 0) {
        while (len > 0 && (logs[len - 1] == '\n' || logs[len - 1] == ' '))
            logs[--len] = '\0';
        p = strrchr(logs, '\n');
        p = p ? p + 1 : logs;
        if (*p != '\0' && strncmp(p, "[pocketenv]", 11) != 0)
            out = pe_xstrdup(p);
        len = (size_t)(p - logs);
        logs[len] = '\0';
    }
    free(logs);
    if (out == NULL)
        out = pe_xstrdup("(no output)");
    for (char *c = out; *c; c++)
        if ((unsigned char)*c < 0x20)
            *c = ' ';
    return out;
}

int pe_daemon_template_ready(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb, pe_err *err)
{
    const pe_template *t = offered(sb->base);
    const pe_template_service *svc = t ? t->service : NULL;
    pe_store_service *list = NULL;
    cleanup_free char *key = NULL;
    cleanup_free char *addr = NULL;
    double deadline = pe_monotonic_s() + SERVICE_READY_S;
    size_t n = 0;

    if (svc == NULL)
        return 0;
    if (pe_store_service_list(s, sb->id, 1000, 0, &list, &n, NULL, err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i].name, svc->name) == 0 && list[i].status == PE_STORE_RUNNING)
            key = pe_xstrdup(list[i].id);
    pe_store_service_list_free(list, n);
    if (key == NULL) /* stopped by its owner: nothing to wait for */
        return 0;
    if (pe_daemon_sandbox_address(d, sb->id, &addr, err) < 0)
        return -1;
    {
        cleanup_free char *reason =
            pe_xasprintf("starting: waiting for the template's service %s to listen on port %d",
                         svc->name, svc->port);
        pe_store_sandbox_set_status(s, sb->id, PE_STORE_INITIALIZING, reason, PE_STORE_INITIALIZING,
                                    NULL);
    }
    while (!accepts(addr, svc->port)) {
        pe_unit_state st;
        if (pe_daemon_unit_state(key, &st) && (st.state == PE_STORE_FAILED || st.restarts >= 2)) {
            cleanup_free char *why = last_line(key);
            return pe_err_set(err, PE_ESYS, 0,
                              "the template's service %s did not start (exit status %d): %s",
                              svc->name, st.exit_code, why);
        }
        if (pe_monotonic_s() > deadline) {
            cleanup_free char *why = last_line(key);
            return pe_err_set(err, PE_ESYS, ETIMEDOUT,
                              "the template's service %s did not listen on port %d within %d "
                              "s: %s",
                              svc->name, svc->port, SERVICE_READY_S, why);
        }
        usleep(250 * 1000);
    }
    return 0;
}
