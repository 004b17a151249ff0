/* pocketenv serve | token: exec pocketenv-serve, next to this binary (or in
 * ../libexec), which carries the daemon's libraries (see daemon/main.c). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "core/util.h"

static char *helper_path(void)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    char *slash, *p;

    if (n <= 0)
        return pe_xstrdup("/usr/libexec/pocketenv-serve");
    exe[n] = '\0';
    slash = strrchr(exe, '/');
    *slash = '\0';
    p = pe_xasprintf("%s/pocketenv-serve", exe);
    if (access(p, X_OK) == 0)
        return p;
    free(p);
    return pe_xasprintf("%s/../libexec/pocketenv-serve", exe);
}

/* argv[0] is the command ("serve" or "token"); the process becomes the
 * helper, so signals (SIGTERM to the daemon) reach it directly. */
int pe_cmd_serve(int argc, char **argv)
{
    char **args = pe_xcalloc((size_t)argc + 4, sizeof(char *));
    char *path = helper_path();
    int n = 0;

    args[n++] = (char *)"pocketenv-serve";
    if (pe_cli_data_dir) {
        args[n++] = (char *)"--data";
        args[n++] = (char *)pe_cli_data_dir;
    }
    for (int i = 0; i < argc; i++)
        args[n++] = argv[i];
    args[n] = NULL;
    execv(path, args);
    fprintf(stderr, "pocketenv: run %s: %s\n", path, strerror(errno));
    free(path);
    free(args);
    return PE_EXIT_FAIL;
}
