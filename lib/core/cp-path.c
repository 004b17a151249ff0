/* docker cp's path rules: see cp-path.h. */
#include <stdio.h>
#include <string.h>

#include "core/cp-path.h"
#include "core/util.h"

char *pe_cp_trim(const char *dest, bool *slash)
{
    size_t n = strlen(dest);

    *slash = n > 0 && dest[n - 1] == '/';
    while (n > 1 && dest[n - 1] == '/')
        n--;
    return pe_xasprintf("%.*s", (int)n, dest);
}

/* path (trimmed) split into its parent and base name. */
static void split(const char *path, char **parent, char **base)
{
    const char *s = strrchr(path, '/');

    if (s == NULL) {
        *parent = pe_xstrdup(".");
        *base = pe_xstrdup(path);
    } else {
        *parent = s == path ? pe_xstrdup("/") : pe_xasprintf("%.*s", (int)(s - path), path);
        *base = pe_xstrdup(s + 1);
    }
}

int pe_cp_plan_make(const char *src_name, bool src_dir, bool contents, const char *dest,
                    enum pe_cp_dest kind, pe_cp_plan *out, pe_err *err)
{
    bool slash;
    cleanup_free char *d = pe_cp_trim(dest, &slash);

    out->dir = out->name = NULL;
    if (strcmp(src_name, ".") == 0)
        contents = true;
    if (contents && !src_dir)
        return pe_err_set(err, PE_EINVAL, 0, "the source is not a directory");
    if (kind == PE_CP_DEST_DIR) {
        out->dir = pe_steal_ptr(&d);
        out->name = contents ? NULL : pe_xstrdup(src_name);
        return 0;
    }
    if (kind == PE_CP_DEST_OTHER && src_dir)
        return pe_err_set(err, PE_EINVAL, 0, "cannot copy a directory onto a file: %s", dest);
    if (kind == PE_CP_DEST_OTHER && slash)
        return pe_err_set(err, PE_EINVAL, 0, "%s: not a directory", dest);
    if (kind == PE_CP_DEST_MISSING && slash && !src_dir)
        return pe_err_set(err, PE_ENOENT, 0, "the destination directory %s does not exist", dest);
    if (strcmp(d, "/") == 0 || strcmp(d, ".") == 0 || strcmp(d, "..") == 0 ||
        (strlen(d) >= 3 && strcmp(d + strlen(d) - 3, "/..") == 0) ||
        (strlen(d) >= 2 && strcmp(d + strlen(d) - 2, "/.") == 0))
        return pe_err_set(err, PE_EINVAL, 0, "%s: cannot be replaced", dest);
    split(d, &out->dir, &out->name);
    return 0;
}

void pe_cp_plan_free(pe_cp_plan *p)
{
    free(p->dir);
    free(p->name);
    p->dir = p->name = NULL;
}

int pe_cp_rebase(const char *entry, const char *top, const pe_cp_plan *plan, char *out, size_t n)
{
    size_t t = strlen(top);
    const char *rest;
    int w;

    if (strncmp(entry, top, t) != 0 || (entry[t] != '\0' && entry[t] != '/'))
        return -1;
    rest = entry + t;
    while (*rest == '/')
        rest++;
    if (plan->name == NULL)
        w = snprintf(out, n, "%s", rest); /* "" for the top itself: skipped */
    else
        w = snprintf(out, n, "%s%s%s", plan->name, *rest ? "/" : "", rest);
    return w < 0 || (size_t)w >= n ? -1 : 0;
}

int pe_cp_top(const char *entry, char *out, size_t n)
{
    size_t len = strlen(entry);

    while (len > 1 && entry[len - 1] == '/')
        len--;
    if (len == 0 || len >= n || memchr(entry, '/', len) ||
        (len == 2 && entry[0] == '.' && entry[1] == '.'))
        return -1;
    memcpy(out, entry, len);
    out[len] = '\0';
    return 0;
}
