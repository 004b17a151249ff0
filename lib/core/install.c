/* Helper programs and data files found from the running program's place
 * (install.h says in which order and why). */
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/install.h"
#include "core/util.h"

/* The directories meson was configured with, each relative to the prefix
 * or absolute (meson.build passes them). */
#if !defined(PE_INSTALL_PREFIX) || !defined(PE_INSTALL_BINDIR) ||                                  \
    !defined(PE_INSTALL_LIBEXECDIR) || !defined(PE_INSTALL_DATADIR)
#error "meson.build defines the PE_INSTALL_* directories"
#endif

#define N_PLACES 3

/* The folder of the running program into buf, or false. */
static bool exe_dir(char *buf, size_t size)
{
    ssize_t n = readlink("/proc/self/exe", buf, size - 1);
    char *slash;

    if (n <= 0 || (size_t)n >= size - 1)
        return false;
    buf[n] = '\0';
    slash = strrchr(buf, '/');
    if (slash == NULL)
        return false;
    *slash = '\0';
    return true;
}

/* The prefix of a program in PREFIX/rel (dir without "/rel"), or NULL
 * when dir is not such a place or rel is absolute (nothing to move). */
static char *prefix_of(const char *dir, const char *rel)
{
    size_t d = strlen(dir), r = strlen(rel);

    if (r == 0 || rel[0] == '/' || d <= r || dir[d - r - 1] != '/' || strcmp(dir + d - r, rel) != 0)
        return NULL;
    return pe_xasprintf("%.*s", (int)(d - r - 1), dir);
}

static char *under(const char *prefix, const char *rel)
{
    return rel[0] == '/' ? pe_xstrdup(rel) : pe_xasprintf("%s/%s", prefix, rel);
}

static char *find(const char *what, const char *name, const char *rel, int mode, pe_err *err)
{
    char exe[PATH_MAX];
    char *places[N_PLACES] = {NULL};
    size_t n = 0;
    char *found = NULL;
    cleanup_free char *looked = pe_xstrdup("");

    if (exe_dir(exe, sizeof(exe))) {
        cleanup_free char *moved = prefix_of(exe, PE_INSTALL_BINDIR);

        if (moved == NULL)
            moved = prefix_of(exe, PE_INSTALL_LIBEXECDIR);
        places[n++] = pe_xstrdup(exe);
        if (moved != NULL)
            places[n++] = under(moved, rel);
    }
    places[n++] = under(PE_INSTALL_PREFIX, rel);
    for (size_t i = 0; i < n && found == NULL; i++) {
        bool seen = false;
        char *path = pe_xasprintf("%s/%s", places[i], name);

        if (access(path, mode) == 0) {
            found = path;
            break;
        }
        free(path);
        for (size_t j = 0; j < i; j++)
            seen = seen || strcmp(places[i], places[j]) == 0;
        if (!seen) {
            char *more = pe_xasprintf("%s%s%s", looked, *looked ? ", " : "", places[i]);
            free(looked);
            looked = more;
        }
    }
    for (size_t i = 0; i < n; i++)
        free(places[i]);
    if (found == NULL)
        pe_err_set(err, PE_ENOENT, 0,
                   "%s %s not found in %s (pocketenv's programs and files go together: "
                   "install them with `meson install -C build`, or run pocketenv from its "
                   "build directory)",
                   what, name, looked);
    return found;
}

char *pe_install_helper(const char *name, pe_err *err)
{
    return find("helper program", name, PE_INSTALL_LIBEXECDIR, X_OK, err);
}

char *pe_install_data(const char *name, pe_err *err)
{
    return find("data file", name, PE_INSTALL_DATADIR, R_OK, err);
}
