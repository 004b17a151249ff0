/* The bases a sandbox can be made from (daemon/templates.h).
 *
 * Two tables: the images this daemon builds itself on first use, and
 * upstream's template catalog (reference §7.1), whose names upstream's
 * clients send. A name of the second that is neither built in nor an
 * image of DATA/images is "not available here yet": the templates issue
 * makes those images, and a template becomes available the moment its
 * image exists (an operator may also import one under that name).
 *
 * Threading: pe_daemon_base_name is pure; the rest read DATA/images and
 * run on worker threads. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fs.h"
#include "core/util.h"
#include "image/image.h"
#include "providers.h"
#include "templates.h"

#define AT_PREFIX "at://"
#define COLLECTION "io.pocketenv.sandbox/"
#define LIST_MAX 1024 /* the list of bases in an error message */

static const struct {
    const char *name, *description;
} builtin_images[] = {
    {"busybox", "BusyBox userland: a tiny image for quick, disposable sandboxes"},
    {"debian", "Debian 12 (bookworm), minimal, with apt: built on first use"},
};

/* Upstream's catalog: the names its clients may send. alias: a second
 * spelling upstream uses for the same template (its presets say
 * "claude", its workers "claude-code"). */
static const struct {
    const char *name, *alias;
} upstream_templates[] = {
    {"openclaw", NULL}, {"claude-code", "claude"},
    {"codex", NULL},    {"copilot", NULL},
    {"gemini", NULL},   {"amp", NULL},
    {"crush", NULL},    {"cursor", NULL},
    {"kilo", NULL},     {"kiro", NULL},
    {"opencode", NULL}, {"opencrust", NULL},
    {"nullclaw", NULL}, {"picoclaw", NULL},
    {"zeroclaw", NULL}, {"nanoclaw", NULL},
    {"mise", NULL},     {"nix", NULL},
    {"pkgx", NULL},     {"wasmer", NULL},
    {"docker", NULL},
};

static bool is_builtin(const char *name)
{
    for (size_t i = 0; i < PE_ARRAY_LEN(builtin_images); i++)
        if (strcmp(name, builtin_images[i].name) == 0)
            return true;
    return false;
}

static bool is_upstream_template(const char *name)
{
    for (size_t i = 0; i < PE_ARRAY_LEN(upstream_templates); i++)
        if (strcmp(name, upstream_templates[i].name) == 0)
            return true;
    return false;
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
    if (base && strncmp(base, AT_PREFIX, strlen(AT_PREFIX)) == 0)
        n = template_rkey(base);
    if (n == NULL || !pe_name_valid(n))
        return pe_err_set(err, PE_EINVAL, 0,
                          "base must be the name of a base (getSandboxes lists them) or "
                          "at://DID/io.pocketenv.sandbox/NAME");
    for (size_t i = 0; i < PE_ARRAY_LEN(upstream_templates); i++)
        if (upstream_templates[i].alias && strcmp(n, upstream_templates[i].alias) == 0)
            n = upstream_templates[i].name;
    *name = pe_xstrdup(n);
    return 0;
}

/* ---- the catalog ---- */

static json_t *template_view(const char *name, const char *description, int64_t created_s)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:I}", "id", name, "name", name, "displayName", name,
                          "installs", (json_int_t)0);

    pe_daemon_set_str(o, "description", description);
    /* Where sandboxes made from it run: our extension (lexicons/README.md). */
    pe_daemon_set_str(o, "backend", PE_BACKEND_LOCAL);
    pe_daemon_set_time(o, "createdAt", created_s * 1000);
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
        int64_t created = 0; /* not built yet */
        for (size_t k = 0; k < n; k++)
            if (strcmp(imgs[k].name, builtin_images[i].name) == 0)
                created = imgs[k].created;
        json_array_append_new(
            all, template_view(builtin_images[i].name, builtin_images[i].description, created));
    }
    for (size_t k = 0; k < n; k++)
        if (!is_builtin(imgs[k].name))
            json_array_append_new(all,
                                  template_view(imgs[k].name, imgs[k].source, imgs[k].created));
    pe_image_info_free(imgs, n);
    *out = all;
    return 0;
}

/* ---- is it here? ---- */

int pe_daemon_base_check(pe_daemon *d, const char *name, pe_err *err)
{
    char list[LIST_MAX];
    size_t used = 0, i;
    json_t *all = NULL, *t;

    if (pe_daemon_catalog(d, &all, err) < 0)
        return pe_err_prefix(err, "list bases");
    list[0] = '\0';
    json_array_foreach(all, i, t)
    {
        const char *n = json_string_value(json_object_get(t, "name"));
        if (strcmp(n, name) == 0) {
            json_decref(all);
            return 0;
        }
        if (used < sizeof(list))
            used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s", used ? ", " : "", n);
    }
    json_decref(all);
    if (is_upstream_template(name))
        return pe_err_set(err, PE_EUNSUP, 0,
                          "template %s is not available on this daemon yet; bases available "
                          "here: %s",
                          name, list);
    return pe_err_set(err, PE_EINVAL, 0, "unknown base %s; bases available here: %s", name, list);
}
